//! The one backend-agnostic story suite: every test runs on SQLite and on PostgreSQL.

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use store::{
    ErrorKind, HistoryQuery, HistoryScope, KeyedWrite, Method, Outcome, Receipt, ReferenceCheck,
    RequestContext, SearchQuery, Store, StoreError, WriteEntry, WriteOp,
};

fn ctx() -> RequestContext {
    RequestContext::system()
}

fn body(r: &store::StoredResource) -> Value {
    serde_json::from_str(r.body.as_deref().expect("body")).expect("stored JSON")
}

fn written(o: &Outcome) -> &store::StoredResource {
    o.resource().expect("a written resource")
}

fn query(store: &dyn Store, ty: &str, q: &str) -> SearchQuery {
    SearchQuery::parse(
        Some(ty),
        &store::search::parse_query_string(q),
        store.extractor(),
        false,
    )
    .expect("valid query")
}

fn patient(family: &str, identifier: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:test", "value": identifier}],
        "name": [{"family": family}]
    })
}

async fn create_read_update_delete_keeps_every_version(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let created = s.create(&c, patient("Ito", "1")).await.unwrap();
    let Outcome::Created(v1) = &created else {
        panic!("{created:?}")
    };
    assert_eq!(v1.version, 1);
    let id = v1.id.clone();
    let read = s.read(&c, "Patient", &id).await.unwrap();
    assert_eq!(read.body, v1.body);
    let b = body(&read);
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["meta"]["versionId"], "1");
    assert_eq!(
        b["meta"]["lastUpdated"],
        read.last_updated_instant().as_str()
    );

    let mut next = patient("Sato", "1");
    next["id"] = json!(id);
    let updated = s.update(&c, "Patient", &id, next, Some(1)).await.unwrap();
    assert!(matches!(&updated, Outcome::Updated(r) if r.version == 2));

    let deleted = s.delete(&c, "Patient", &id, None).await.unwrap();
    assert!(matches!(&deleted, Outcome::Deleted(r) if r.version == 3));
    let err = s.read(&c, "Patient", &id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Gone);
    assert_eq!(
        s.delete(&c, "Patient", &id, None).await.unwrap(),
        Outcome::NoOp
    );

    assert_eq!(
        body(&s.vread(&c, "Patient", &id, 1).await.unwrap())["name"][0]["family"],
        "Ito"
    );
    assert_eq!(
        body(&s.vread(&c, "Patient", &id, 2).await.unwrap())["name"][0]["family"],
        "Sato"
    );
    assert_eq!(
        s.vread(&c, "Patient", &id, 3).await.unwrap_err().kind(),
        ErrorKind::Gone
    );
    assert_eq!(
        s.vread(&c, "Patient", &id, 4).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.read(&c, "Patient", "nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Update after delete brings the resource back as a new version.
    let mut again = patient("Kato", "1");
    again["id"] = json!(id);
    let back = s.update(&c, "Patient", &id, again, None).await.unwrap();
    assert!(matches!(&back, Outcome::Created(r) if r.version == 4));

    let page = s
        .history(
            &c,
            &HistoryQuery {
                scope: HistoryScope::Instance("Patient".into(), id.clone()),
                since: None,
                count: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    let versions: Vec<(u64, Method)> = page
        .versions
        .iter()
        .map(|v| (v.version, v.method))
        .collect();
    assert_eq!(
        versions,
        vec![
            (4, Method::Put),
            (3, Method::Delete),
            (2, Method::Put),
            (1, Method::Post)
        ]
    );
}

async fn stored_json_is_kept_as_written(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    // Parsed from text: `json!` would turn 70.50 into a float.
    let obs: Value = serde_json::from_str(
        r#"{"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "valueQuantity": {"value": 70.50, "unit": "kg"}, "note": [{"text": "日本語 ✓"}],
            "meta": {"profile": ["http://example.org/p"]}}"#,
    )
    .unwrap();
    let r = s.create(&c, obs).await.unwrap();
    let text = written(&r).body.clone().unwrap();
    let stored = s.read(&c, "Observation", &written(&r).id).await.unwrap();
    assert_eq!(stored.body.as_deref(), Some(text.as_str()));
    assert!(text.contains("\"value\":70.50"), "{text}");
    assert!(text.contains("\"status\":\"final\",\"code\""), "{text}");
    assert!(
        text.starts_with("{\"resourceType\":\"Observation\",\"id\":"),
        "{text}"
    );
    assert!(
        text.contains("\"profile\":[\"http://example.org/p\"],\"versionId\":\"1\""),
        "{text}"
    );
    assert!(text.contains("日本語 ✓"));
}

async fn if_match_rejects_stale_versions(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let mut p = patient("A", "im");
    p["id"] = json!("p-im");
    s.update(&c, "Patient", "p-im", p.clone(), None)
        .await
        .unwrap();
    p["active"] = json!(true);
    s.update(&c, "Patient", "p-im", p.clone(), Some(1))
        .await
        .unwrap();
    p["active"] = json!(false);
    let err = s
        .update(&c, "Patient", "p-im", p.clone(), Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::VersionConflict {
                expected: 1,
                current: Some(2),
                ..
            }
        ),
        "{err:?}"
    );
    let err = s.delete(&c, "Patient", "p-im", Some(7)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VersionConflict);
    let err = s
        .update(
            &c,
            "Patient",
            "absent",
            json!({"resourceType": "Patient", "id": "absent"}),
            Some(1),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::VersionConflict);
    assert_eq!(s.read(&c, "Patient", "p-im").await.unwrap().version, 2);
}

async fn conditional_create_update_delete(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let q = query(s, "Patient", "identifier=urn:test|cc");
    let first = s
        .write(
            &c,
            WriteOp::Create {
                resource: patient("A", "cc"),
                if_none_exist: Some(q.clone()),
            },
        )
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Created(_)));
    let second = s
        .write(
            &c,
            WriteOp::Create {
                resource: patient("B", "cc"),
                if_none_exist: Some(q.clone()),
            },
        )
        .await
        .unwrap();
    let Outcome::Existing(existing) = &second else {
        panic!("{second:?}")
    };
    assert_eq!(existing.id, written(&first).id);

    // Conditional update of the one match.
    let upd = s
        .write(
            &c,
            WriteOp::ConditionalUpdate {
                query: q.clone(),
                resource: patient("C", "cc"),
            },
        )
        .await
        .unwrap();
    assert!(matches!(&upd, Outcome::Updated(r) if r.id == existing.id && r.version == 2));
    // No match: creates, with the body's id.
    let mut fresh = patient("D", "cu-new");
    fresh["id"] = json!("chosen-id");
    let q2 = query(s, "Patient", "identifier=urn:test|cu-new");
    let created = s
        .write(
            &c,
            WriteOp::ConditionalUpdate {
                query: q2,
                resource: fresh,
            },
        )
        .await
        .unwrap();
    assert!(matches!(&created, Outcome::Created(r) if r.id == "chosen-id"));

    // Two matches: conditional create, update and delete all refuse.
    s.create(&c, patient("E", "cc")).await.unwrap();
    let err = s
        .write(
            &c,
            WriteOp::Create {
                resource: patient("F", "cc"),
                if_none_exist: Some(q.clone()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MultipleMatches);
    let err = s
        .write(
            &c,
            WriteOp::ConditionalUpdate {
                query: q.clone(),
                resource: patient("F", "cc"),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MultipleMatches);
    let err = s
        .write(&c, WriteOp::ConditionalDelete { query: q.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MultipleMatches);

    let qd = query(s, "Patient", "identifier=urn:test|cu-new");
    let del = s
        .write(&c, WriteOp::ConditionalDelete { query: qd.clone() })
        .await
        .unwrap();
    assert!(matches!(del, Outcome::Deleted(_)));
    assert_eq!(
        s.write(&c, WriteOp::ConditionalDelete { query: qd })
            .await
            .unwrap(),
        Outcome::NoOp
    );
}

async fn transaction_is_all_or_nothing(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let before = s.changes(&c, 0, 1000).await.unwrap().len();
    let entries = vec![
        WriteEntry::new(WriteOp::Create {
            resource: patient("T1", "tx1"),
            if_none_exist: None,
        }),
        WriteEntry::new(WriteOp::Delete {
            resource_type: "Patient".into(),
            id: "never-existed".into(),
            if_match: None,
        }),
    ];
    let err = s.transaction(&c, entries).await.unwrap_err();
    assert_eq!(err.entry_index(), Some(1));
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let found = s
        .search(&c, &query(s, "Patient", "identifier=urn:test|tx1"))
        .await
        .unwrap();
    assert_eq!(
        found.total,
        Some(0),
        "the first entry must have been rolled back"
    );
    assert_eq!(
        s.changes(&c, 0, 1000).await.unwrap().len(),
        before,
        "no change-feed row either"
    );
}

async fn batch_entries_fail_alone(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let entries = vec![
        WriteEntry::new(WriteOp::Create {
            resource: patient("B1", "b1"),
            if_none_exist: None,
        }),
        WriteEntry::new(WriteOp::Create {
            resource: json!({"resourceType": "Observation", "subject": {"reference": "Patient?identifier=urn:test|missing"}}),
            if_none_exist: None,
        }),
        WriteEntry::new(WriteOp::Create {
            resource: patient("B3", "b3"),
            if_none_exist: None,
        }),
    ];
    let results = s.batch(&c, entries).await.unwrap();
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::Invalid);
    assert!(results[2].is_ok());
    assert_eq!(
        s.search(
            &c,
            &query(s, "Patient", "identifier=urn:test|b1,urn:test|b3")
        )
        .await
        .unwrap()
        .total,
        Some(2)
    );
}

async fn transaction_rewrites_full_urls_and_resolves_conditional_references(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    s.create(&c, json!({"resourceType": "Practitioner", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "99"}]})).await.unwrap();
    let entries = vec![
        WriteEntry {
            full_url: Some("urn:uuid:obs".into()),
            index: None,
            references: ReferenceCheck::Off,
            patch: false,
            op: WriteOp::Create {
                resource: json!({
                    "resourceType": "Observation",
                    "subject": {"reference": "urn:uuid:pat"},
                    "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99"}],
                    "hasMember": [{"reference": "Organization?identifier=urn:test|org-in-tx"}],
                    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:pat\">patient</a></div>"}
                }),
                if_none_exist: None,
            },
        },
        // Created earlier in the same transaction than the Observation above (index order), so
        // the conditional reference to it resolves.
        WriteEntry::new(WriteOp::Create {
            resource: json!({"resourceType": "Organization", "identifier": [{"system": "urn:test", "value": "org-in-tx"}]}),
            if_none_exist: None,
        }),
        WriteEntry {
            full_url: Some("urn:uuid:pat".into()),
            index: None,
            references: ReferenceCheck::Off,
            patch: false,
            op: WriteOp::Create {
                resource: patient("U", "urn"),
                if_none_exist: None,
            },
        },
    ];
    // Put the Organization first so that it exists when the Observation is written.
    let mut entries = entries;
    entries.swap(0, 1);
    let out = s.transaction(&c, entries).await.unwrap();
    let pat_id = &written(&out[2]).id;
    let obs = body(written(&out[1]));
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pat_id}"));
    let prac = s
        .search(
            &c,
            &query(
                s,
                "Practitioner",
                "identifier=http://hl7.org/fhir/sid/us-npi|99",
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        obs["performer"][0]["reference"],
        format!("Practitioner/{}", prac.matches[0].id)
    );
    assert_eq!(
        obs["hasMember"][0]["reference"],
        format!("Organization/{}", written(&out[0]).id)
    );
    assert!(
        obs["text"]["div"]
            .as_str()
            .unwrap()
            .contains(&format!("href=\"Patient/{pat_id}\""))
    );

    // An ambiguous conditional reference fails the transaction, naming the entry.
    s.create(&c, json!({"resourceType": "Practitioner", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "99"}]})).await.unwrap();
    let err = s
        .transaction(&c, vec![WriteEntry::new(WriteOp::Create { resource: json!({"resourceType": "Observation", "performer": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99"}]}), if_none_exist: None })])
        .await
        .unwrap_err();
    assert_eq!(
        (err.entry_index(), err.kind()),
        (Some(0), ErrorKind::MultipleMatches)
    );
}

async fn search_by_id_last_updated_identifier_with_paging(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            written(&s.create(&c, patient("S", &format!("s{i}"))).await.unwrap())
                .id
                .clone(),
        );
    }
    s.create(
        &c,
        json!({"resourceType": "Observation", "status": "final"}),
    )
    .await
    .unwrap();
    s.delete(&c, "Patient", &ids[6], None).await.unwrap();

    let all = s
        .search(&c, &query(s, "Patient", "_count=3"))
        .await
        .unwrap();
    assert_eq!((all.total, all.matches.len()), (Some(6), 3));
    let mut seen: Vec<String> = all.matches.iter().map(|r| r.id.clone()).collect();
    let mut cursor = all.next;
    while let Some(after) = cursor {
        let mut q = query(s, "Patient", "_count=3");
        q.after = Some(store::search::Cursor::decode(&after).unwrap());
        let page = s.search(&c, &q).await.unwrap();
        seen.extend(page.matches.iter().map(|r| r.id.clone()));
        cursor = page.next;
    }
    assert_eq!(seen, ids[..6].to_vec());

    let by_id = s
        .search(
            &c,
            &query(s, "Patient", &format!("_id={},{}", ids[0], ids[6])),
        )
        .await
        .unwrap();
    assert_eq!(
        by_id
            .matches
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        vec![ids[0].as_str()]
    );
    assert_eq!(
        s.search(&c, &query(s, "Patient", "identifier=s3"))
            .await
            .unwrap()
            .total,
        Some(1)
    );
    assert_eq!(
        s.search(&c, &query(s, "Patient", "identifier=urn:test|"))
            .await
            .unwrap()
            .total,
        Some(6)
    );
    assert_eq!(
        s.search(&c, &query(s, "Patient", "identifier=|s3"))
            .await
            .unwrap()
            .total,
        Some(0)
    );

    let first = s
        .read(&c, "Patient", &ids[0])
        .await
        .unwrap()
        .last_updated_instant();
    assert_eq!(
        s.search(&c, &query(s, "Patient", &format!("_lastUpdated=ge{first}")))
            .await
            .unwrap()
            .total,
        Some(6)
    );
    assert_eq!(
        s.search(&c, &query(s, "Patient", &format!("_lastUpdated=lt{first}")))
            .await
            .unwrap()
            .total,
        Some(0)
    );
    assert_eq!(
        s.search(
            &c,
            &query(
                s,
                "Patient",
                "_lastUpdated=gt2000-01-01&_lastUpdated=lt2999"
            )
        )
        .await
        .unwrap()
        .total,
        Some(6)
    );
    let count_only = s
        .search(&c, &query(s, "Patient", "_count=0"))
        .await
        .unwrap();
    assert_eq!((count_only.total, count_only.matches.len()), (Some(6), 0));
    let everything = s.search(&c, &SearchQuery::all(None)).await.unwrap();
    assert_eq!(everything.total, Some(7));
}

async fn history_pages_newest_first_with_since(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let a = written(&s.create(&c, patient("H", "h1")).await.unwrap()).clone();
    let mut p = patient("H2", "h1");
    p["id"] = json!(a.id);
    s.update(&c, "Patient", &a.id, p, None).await.unwrap();
    let o = written(
        &s.create(
            &c,
            json!({"resourceType": "Observation", "status": "final"}),
        )
        .await
        .unwrap(),
    )
    .clone();

    let sys = |before| HistoryQuery {
        scope: HistoryScope::System,
        since: None,
        count: 2,
        before,
    };
    let p1 = s.history(&c, &sys(None)).await.unwrap();
    assert_eq!(
        p1.versions
            .iter()
            .map(|v| (v.id.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![(o.id.as_str(), 1), (a.id.as_str(), 2)]
    );
    let p2 = s.history(&c, &sys(p1.next)).await.unwrap();
    assert_eq!(
        p2.versions
            .iter()
            .map(|v| (v.id.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![(a.id.as_str(), 1)]
    );
    assert_eq!(p2.next, None);

    let ty = s
        .history(
            &c,
            &HistoryQuery {
                scope: HistoryScope::Type("Observation".into()),
                since: None,
                count: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(ty.versions.len(), 1);
    let since = s
        .history(
            &c,
            &HistoryQuery {
                scope: HistoryScope::System,
                since: Some(o.last_updated),
                count: 10,
                before: None,
            },
        )
        .await
        .unwrap();
    assert!(
        since
            .versions
            .iter()
            .all(|v| v.last_updated >= o.last_updated)
    );
    assert!(since.versions.iter().any(|v| v.id == o.id));
    let err = s
        .history(
            &c,
            &HistoryQuery {
                scope: HistoryScope::Instance("Patient".into(), "nope".into()),
                since: None,
                count: 10,
                before: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn change_feed_has_one_row_per_version(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx().with_request_id("req-42");
    let start = s
        .changes(&c, 0, 10_000)
        .await
        .unwrap()
        .last()
        .map(|ch| ch.seq)
        .unwrap_or(0);
    let r = written(&s.create(&c, patient("C", "feed")).await.unwrap()).clone();
    s.delete(&c, "Patient", &r.id, None).await.unwrap();
    let feed = s.changes(&c, start, 100).await.unwrap();
    let rows: Vec<(u64, Method, &str)> = feed
        .iter()
        .map(|ch| (ch.version, ch.method, ch.request_id.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![(1, Method::Post, "req-42"), (2, Method::Delete, "req-42")]
    );
    assert!(feed[0].seq < feed[1].seq);
}

async fn an_update_that_changes_nothing_writes_no_version(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let mut p = patient("Kato", "noop");
    p["id"] = json!("noop-1");
    s.update(&c, "Patient", "noop-1", p.clone(), None)
        .await
        .unwrap();
    let start = s
        .changes(&c, 0, 10_000)
        .await
        .unwrap()
        .last()
        .map(|ch| ch.seq)
        .unwrap_or(0);
    // The same content again (with a stale meta, as a client would send it back).
    let mut again = p.clone();
    again["meta"] = json!({"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"});
    let outcome = s
        .update(&c, "Patient", "noop-1", again, Some(1))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Unchanged(r) if r.version == 1),
        "{outcome:?}"
    );
    assert!(
        s.changes(&c, start, 10).await.unwrap().is_empty(),
        "no change-feed row"
    );
    // A real change is a new version.
    p["active"] = json!(true);
    let outcome = s.update(&c, "Patient", "noop-1", p, None).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Updated(r) if r.version == 2),
        "{outcome:?}"
    );
}

/// Referential integrity (`ReferenceCheck::Refuse`): a write naming a resource that is not on
/// the server is refused with the element and the reference; one written earlier in the same
/// transaction, or planned by a later entry of it, counts; a deleted one does not; unchecked
/// writes (the default) are stored as before.
async fn references_to_absent_resources_are_refused_when_checked(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let base = "https://hie.example/fhir";
    let refuse = || ReferenceCheck::Refuse {
        base: Some(base.to_owned()),
    };
    let observation = |subject: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": subject},
            "performer": [{"reference": "#c"}, {"identifier": {"system": "s", "value": "v"}},
                {"reference": "https://elsewhere.example/fhir/Practitioner/1"}]})
    };
    let create = |resource: Value| {
        WriteEntry::new(WriteOp::Create {
            resource,
            if_none_exist: None,
        })
        .with_references(refuse())
    };
    let mut p = patient("Ref", "ref-1");
    p["id"] = json!("ref-1");
    s.update(&c, "Patient", "ref-1", p, None).await.unwrap();

    // Present, relative or absolute under this server's base (a version given or not).
    for subject in [
        "Patient/ref-1".to_owned(),
        "Patient/ref-1/_history/1".to_owned(),
        format!("{base}/Patient/ref-1"),
    ] {
        s.transaction(&c, vec![create(observation(&subject))])
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
    }
    // Absent: refused, nothing written, the error names the element and the reference.
    let before = s.changes(&c, 0, 10_000).await.unwrap().len();
    for subject in [
        "Patient/absent".to_owned(),
        format!("{base}/Patient/absent"),
    ] {
        let err = s
            .transaction(&c, vec![create(observation(&subject))])
            .await
            .unwrap_err();
        assert_eq!(
            (err.entry_index(), err.kind()),
            (Some(0), ErrorKind::Invalid)
        );
        match err.into_inner() {
            StoreError::MissingReference { element, reference } => {
                assert_eq!(
                    (element.as_str(), reference.as_str()),
                    ("Observation.subject", subject.as_str())
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s.changes(&c, 0, 10_000).await.unwrap().len(), before);
    // Unchecked (imports, feeds): stored.
    s.create(&c, observation("Patient/absent")).await.unwrap();

    // In a transaction: a target created earlier in it, or by a later entry through its
    // fullUrl, is there; the conditional update of an existing one too.
    let mut later = WriteEntry::new(WriteOp::Create {
        resource: patient("Later", "ref-later"),
        if_none_exist: None,
    });
    later.full_url = Some("urn:uuid:later".into());
    let mut put = patient("Put", "ref-put");
    put["id"] = json!("ref-put");
    let out = s
        .transaction(
            &c,
            vec![
                WriteEntry::new(WriteOp::Update {
                    resource_type: "Patient".into(),
                    id: "ref-put".into(),
                    resource: put,
                    if_match: None,
                }),
                create(observation("Patient/ref-put")),
                create(observation("urn:uuid:later")),
                later,
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    // A self-reference on update-as-create.
    let mut linked = patient("Self", "ref-self");
    linked["id"] = json!("ref-self");
    linked["link"] = json!([{"other": {"reference": "Patient/ref-self"}, "type": "seealso"}]);
    s.transaction(
        &c,
        vec![
            WriteEntry::new(WriteOp::Update {
                resource_type: "Patient".into(),
                id: "ref-self".into(),
                resource: linked,
                if_match: None,
            })
            .with_references(refuse()),
        ],
    )
    .await
    .unwrap();
    // Deleted earlier in the same transaction, or before it: absent.
    let err = s
        .transaction(
            &c,
            vec![
                WriteEntry::new(WriteOp::Delete {
                    resource_type: "Patient".into(),
                    id: "ref-put".into(),
                    if_match: None,
                }),
                create(observation("Patient/ref-put")),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.entry_index(), err.kind()),
        (Some(1), ErrorKind::Invalid)
    );
    s.delete(&c, "Patient", "ref-put", None).await.unwrap();
    let err = s
        .transaction(&c, vec![create(observation("Patient/ref-put"))])
        .await
        .unwrap_err();
    assert!(matches!(
        err.into_inner(),
        StoreError::MissingReference { .. }
    ));
    // In a batch, the entry fails alone.
    let results = s
        .batch(
            &c,
            vec![
                create(observation("Patient/absent")),
                create(observation("Patient/ref-1")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap_err().kind(), ErrorKind::Invalid);
    assert!(results[1].is_ok());
    // What imports count instead: which targets are not live resources.
    let targets = [
        "Patient/ref-1",
        "Patient/absent",
        "Patient/ref-put",
        "Group/none",
    ]
    .map(str::to_owned)
    .into_iter()
    .collect();
    let absent = store::absent_resources(s, &c, &targets).await.unwrap();
    assert_eq!(
        absent.into_iter().collect::<Vec<_>>(),
        ["Group/none", "Patient/absent", "Patient/ref-put"]
    );
}

async fn concurrent_updates_never_lose_a_version(s: Arc<dyn Store>) {
    let c = ctx();
    let mut p = patient("Z", "conc");
    p["id"] = json!("conc");
    s.update(&c, "Patient", "conc", p.clone(), None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            // Each writer changes something: an identical update would write no version.
            let (s, mut p, c) = (s.clone(), p.clone(), c.clone());
            p["birthDate"] = json!(format!("19{:02}-01-01", 50 + n));
            tokio::spawn(async move { s.update(&c, "Patient", "conc", p, None).await })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(written(&t.await.unwrap().unwrap()).version);
    }
    versions.sort();
    assert_eq!(versions, (2..=9).collect::<Vec<_>>());
}

fn keyed(key: &str, identifier: &str) -> KeyedWrite {
    KeyedWrite {
        receipt: Receipt {
            key: key.into(),
            fingerprint: -7,
            code: "AA".into(),
            reply: format!("ACK {key}").into_bytes(),
            deferred: None,
        },
        entries: vec![WriteEntry::new(WriteOp::Create {
            resource: patient("K", identifier),
            if_none_exist: None,
        })],
    }
}

async fn keyed_commits_write_receipt_and_resources_together(s: Arc<dyn Store>) {
    let c = ctx();
    let bad = || {
        let mut bad = keyed("k-bad", "bad");
        bad.entries.push(WriteEntry::new(WriteOp::Delete {
            resource_type: "Patient".into(),
            id: "missing".into(),
            if_match: None,
        }));
        bad
    };
    let results = s
        .commit_keyed(&c, vec![keyed("k-1", "one"), bad(), keyed("k-1", "again")])
        .await
        .unwrap();
    // A failing unit rolls its group back: it gets its own error, the others GroupAborted
    // (even the one that would have been a duplicate of a unit that is not committed now).
    assert!(
        matches!(&results[0], Err(StoreError::GroupAborted)),
        "{results:?}"
    );
    assert_eq!(results[1].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    assert!(
        matches!(&results[2], Err(StoreError::GroupAborted)),
        "{results:?}"
    );
    for key in ["k-1", "k-bad"] {
        assert!(s.receipt(&c, key).await.unwrap().is_none(), "{key}");
    }
    for identifier in ["one", "bad", "again"] {
        let q = format!("identifier=urn:test|{identifier}");
        let page = s.search(&c, &query(&*s, "Patient", &q)).await.unwrap();
        assert_eq!(page.total, Some(0), "{identifier}");
    }
    // Committed again, alone, each meets its own fate.
    let one = s.commit_keyed(&c, vec![keyed("k-1", "one")]).await.unwrap();
    assert!(one[0].is_ok(), "{one:?}");
    let bad_alone = s.commit_keyed(&c, vec![bad()]).await.unwrap();
    assert_eq!(
        bad_alone[0].as_ref().unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let r = s.receipt(&c, "k-1").await.unwrap().unwrap();
    assert_eq!((r.fingerprint, r.code.as_str()), (-7, "AA"));
    assert_eq!(r.reply, b"ACK k-1");
    assert!(s.receipt(&c, "k-bad").await.unwrap().is_none());
    let page = s
        .search(&c, &query(&*s, "Patient", "identifier=urn:test|one"))
        .await
        .unwrap();
    assert_eq!(page.total, Some(1));
    // A later commit of a stored key writes nothing, and a group with such a unit commits.
    let again = s
        .commit_keyed(&c, vec![keyed("k-1", "two"), keyed("k-2", "three")])
        .await
        .unwrap();
    assert!(matches!(&again[0], Err(StoreError::DuplicateKey(_))));
    assert!(again[1].is_ok(), "{again:?}");
    let page = s
        .search(&c, &query(&*s, "Patient", "identifier=urn:test|two"))
        .await
        .unwrap();
    assert_eq!(page.total, Some(0));
}

async fn concurrent_keyed_commits_of_one_key_commit_once(s: Arc<dyn Store>) {
    let c = ctx();
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (s, c) = (s.clone(), c.clone());
            tokio::spawn(async move {
                // Conditional writes on two types, in both orders, as HL7 bundles do.
                let mut unit = keyed("race", "race");
                unit.entries = vec![
                    WriteEntry::new(WriteOp::Create {
                        resource: json!({"resourceType": "Practitioner", "identifier": [{"system": "urn:test", "value": format!("pr{}", i % 2)}]}),
                        if_none_exist: Some(query(&*s, "Practitioner", &format!("identifier=urn:test|pr{}", i % 2))),
                    }),
                    WriteEntry::new(WriteOp::Create {
                        resource: patient("R", "race"),
                        if_none_exist: Some(query(&*s, "Patient", "identifier=urn:test|race")),
                    }),
                ];
                s.commit_keyed(&c, vec![unit, keyed(&format!("own-{i}"), &format!("own{i}"))])
                    .await
            })
        })
        .collect();
    let mut committed = 0;
    for t in tasks {
        let results = t.await.unwrap().unwrap();
        assert!(results[1].is_ok());
        match &results[0] {
            Ok(_) => committed += 1,
            Err(StoreError::DuplicateKey(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(committed, 1);
    let page = s
        .search(&c, &query(&*s, "Patient", "identifier=urn:test|race"))
        .await
        .unwrap();
    assert_eq!(page.total, Some(1));
}

async fn patient_ids(s: &dyn Store, q: &str) -> Vec<String> {
    let page = s.search(&ctx(), &query(s, "Patient", q)).await.unwrap();
    page.matches.iter().map(|m| m.id.clone()).collect()
}

/// A transaction creating `target` under `full_url`, then `resource` (which refers to it)
/// with the index rows `given`.
fn with_target(
    full_url: &str,
    target: Value,
    resource: Value,
    given: Vec<store::IndexRow>,
) -> Vec<WriteEntry> {
    vec![
        WriteEntry {
            full_url: Some(full_url.into()),
            op: WriteOp::Create {
                resource: target,
                if_none_exist: None,
            },
            index: None,
            references: ReferenceCheck::Off,
            patch: false,
        },
        WriteEntry::new(WriteOp::Create {
            resource,
            if_none_exist: None,
        })
        .with_index(given),
    ]
}

/// Index rows a caller extracted ahead of the write are stored as given, also when the
/// transaction rewrites a `fullUrl` reference in the resource (the store brings reference
/// rows up to date), and extracted again when it resolves a conditional reference or an entry
/// is also named outside a `reference`. (The rows given here are deliberately not those of
/// the resource, so that the test can tell which were stored.)
async fn prepared_index_rows_are_used_unless_a_conditional_reference_is_resolved(
    s: Arc<dyn Store>,
) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let rows_of = |identifier: &str| {
        s.extractor()
            .extract("Patient", &patient("X", identifier))
            .unwrap()
    };
    let plain = WriteEntry::new(WriteOp::Create {
        resource: patient("Plain", "plain-real"),
        if_none_exist: None,
    })
    .with_index(rows_of("plain-given"));
    let out = s.batch(&c, vec![plain]).await.unwrap();
    let plain_id = out[0].as_ref().map(|o| written(o).id.clone()).unwrap();
    assert_eq!(
        patient_ids(s, "identifier=urn:test|plain-given").await,
        [plain_id]
    );

    let mut linked = patient("Linked", "linked-real");
    linked["link"] = json!([{"other": {"reference": "urn:uuid:other"}, "type": "seealso"}]);
    let entries = with_target(
        "urn:uuid:other",
        patient("Other", "other-real"),
        linked,
        rows_of("linked-given"),
    );
    let out = s.transaction(&c, entries).await.unwrap();
    assert_eq!(
        patient_ids(s, "identifier=urn:test|linked-given").await,
        [written(&out[1]).id.clone()]
    );

    // An entry also named by a string the rewrite leaves alone (here an extension's
    // `valueUri`): the rows given cannot be brought up to date, so the store extracts again.
    let mut named = patient("Named", "named-real");
    named["link"] = json!([{"other": {"reference": "urn:uuid:named"}, "type": "seealso"}]);
    named["extension"] = json!([{"url": "urn:test:source", "valueUri": "urn:uuid:named"}]);
    let entries = with_target(
        "urn:uuid:named",
        patient("Target", "target-real"),
        named,
        rows_of("named-given"),
    );
    let out = s.transaction(&c, entries).await.unwrap();
    assert_eq!(
        patient_ids(s, "identifier=urn:test|named-real").await,
        [written(&out[1]).id.clone()]
    );
    assert!(
        patient_ids(s, "identifier=urn:test|named-given")
            .await
            .is_empty()
    );

    let mut resolved = patient("Resolved", "resolved-real");
    resolved["link"] = json!([{
        "other": {"reference": "Patient?identifier=urn:test|other-real"}, "type": "seealso"
    }]);
    let entry = WriteEntry::new(WriteOp::Create {
        resource: resolved,
        if_none_exist: None,
    })
    .with_index(rows_of("resolved-given"));
    let out = s.transaction(&c, vec![entry]).await.unwrap();
    assert_eq!(
        patient_ids(s, "identifier=urn:test|resolved-real").await,
        [written(&out[0]).id.clone()]
    );
    assert!(
        patient_ids(s, "identifier=urn:test|resolved-given")
            .await
            .is_empty()
    );
}

/// `matching_ids` finds what a conditional write with the same query matches: current
/// resources only (not a deleted one), of the query's type, at most `limit` of them.
async fn matching_ids_are_what_a_conditional_write_matches(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let mut ids = Vec::new();
    for family in ["A", "B", "C"] {
        let o = s.create(&c, patient(family, "shared")).await.unwrap();
        ids.push(written(&o).id.clone());
    }
    s.create(&c, patient("D", "other")).await.unwrap();
    s.delete(&c, "Patient", &ids[2], None).await.unwrap();
    let q = query(s, "Patient", "identifier=urn:test|shared");

    let mut found = s.matching_ids(&c, &q, 10).await.unwrap();
    found.sort();
    let mut live = ids[..2].to_vec();
    live.sort();
    assert_eq!(found, live, "the deleted match is left out");
    assert_eq!(s.matching_ids(&c, &q, 1).await.unwrap().len(), 1);

    // A conditional update with the query refuses the two matches the ids name.
    let err = s
        .write(
            &c,
            WriteOp::ConditionalUpdate {
                query: q.clone(),
                resource: patient("E", "shared"),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MultipleMatches, "{err}");
    let none = query(s, "Patient", "identifier=urn:test|nobody");
    assert!(s.matching_ids(&c, &none, 2).await.unwrap().is_empty());
}

/// Every resource of `Patient/[id]/$everything`, page by page (`count` a page), as `Type/id`.
async fn everything_pages(s: &dyn Store, owner: &str, types: &[&str], count: usize) -> Vec<String> {
    let c = ctx();
    let mut q = SearchQuery::everything(owner);
    q.types = types.iter().map(|t| t.to_string()).collect();
    q.count = count;
    let mut seen = Vec::new();
    loop {
        let page = s.search(&c, &q).await.unwrap();
        assert!(page.matches.len() <= count);
        seen.extend(
            page.matches
                .iter()
                .map(|r| format!("{}/{}", r.resource_type, r.id)),
        );
        match page.next {
            Some(next) => q.after = Some(store::search::Cursor::decode(&next).unwrap()),
            None => return seen,
        }
    }
}

/// `$everything` is one set paged like a search: the patient, its compartment and the
/// resources those refer to, each once however many members refer to it; `_type` narrows
/// all of it; another patient's records stay out.
async fn everything_lists_each_resource_once_across_pages(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let put = |r: Value| async move {
        let (ty, id) = (
            r["resourceType"].as_str().unwrap().to_owned(),
            r["id"].as_str().unwrap().to_owned(),
        );
        s.update(&ctx(), &ty, &id, r, None).await.unwrap();
    };
    put(json!({"resourceType": "Organization", "id": "org"})).await;
    put(json!({"resourceType": "Practitioner", "id": "dr"})).await;
    put(json!({"resourceType": "Practitioner", "id": "other-dr"})).await;
    put(json!({"resourceType": "Patient", "id": "p", "managingOrganization": {"reference": "Organization/org"}})).await;
    put(json!({"resourceType": "Patient", "id": "q"})).await;
    let mut expected = vec![
        "Organization/org".to_owned(),
        "Practitioner/dr".to_owned(),
        "Patient/p".to_owned(),
    ];
    for i in 0..6 {
        put(
            json!({"resourceType": "Encounter", "id": format!("e{i}"), "status": "finished",
            "class": {"code": "AMB"}, "subject": {"reference": "Patient/p"},
            "participant": [{"individual": {"reference": "Practitioner/dr"}}],
            "serviceProvider": {"reference": "Organization/org"}}),
        )
        .await;
        // Each condition names an encounter that is a member too: it must not come twice. One
        // was asserted by another patient, who is not part of this patient's record.
        let mut condition = json!({"resourceType": "Condition", "id": format!("c{i}"),
            "subject": {"reference": "Patient/p"}, "encounter": {"reference": format!("Encounter/e{i}")}});
        if i == 0 {
            condition["asserter"] = json!({"reference": "Patient/q"});
        }
        put(condition).await;
        expected.push(format!("Encounter/e{i}"));
        expected.push(format!("Condition/c{i}"));
    }
    put(json!({"resourceType": "Encounter", "id": "eq", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": "Patient/q"},
        "participant": [{"individual": {"reference": "Practitioner/other-dr"}}]})).await;
    expected.sort();

    for count in [1, 4, 100] {
        let mut got = everything_pages(s, "p", &[], count).await;
        let listed = got.len();
        got.sort();
        got.dedup();
        assert_eq!(listed, got.len(), "a resource came twice at _count={count}");
        assert_eq!(got, expected, "_count={count}");
    }
    let mut narrowed = everything_pages(s, "p", &["Encounter", "Practitioner"], 3).await;
    narrowed.sort();
    let mut want: Vec<String> = expected
        .iter()
        .filter(|r| r.starts_with("Encounter/") || r.starts_with("Practitioner/"))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(narrowed, want);
    // A deleted referenced resource is gone from it too.
    s.delete(&c, "Practitioner", "dr", None).await.unwrap();
    let got = everything_pages(s, "p", &[], 100).await;
    assert!(!got.contains(&"Practitioner/dr".to_owned()));
    assert_eq!(got.len(), expected.len() - 1);
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::support::sqlite();
                    super::$name(t.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::support::postgres().await;
                    super::$name(t.store.clone()).await;
                }
            )*
        }
    };
}

/// Stories that need the index rows of every R4 search parameter (compartments, references).
macro_rules! fhir_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_fhir {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::support::sqlite_with(crate::support::fhir_extractor());
                    super::$name(t.store.clone()).await;
                }
            )*
        }
        mod postgres_fhir {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::support::postgres_with(crate::support::fhir_extractor()).await;
                    super::$name(t.store.clone()).await;
                }
            )*
        }
    };
}

fhir_suite!(everything_lists_each_resource_once_across_pages);

suite!(
    create_read_update_delete_keeps_every_version,
    stored_json_is_kept_as_written,
    if_match_rejects_stale_versions,
    conditional_create_update_delete,
    matching_ids_are_what_a_conditional_write_matches,
    transaction_is_all_or_nothing,
    batch_entries_fail_alone,
    transaction_rewrites_full_urls_and_resolves_conditional_references,
    prepared_index_rows_are_used_unless_a_conditional_reference_is_resolved,
    search_by_id_last_updated_identifier_with_paging,
    history_pages_newest_first_with_since,
    change_feed_has_one_row_per_version,
    an_update_that_changes_nothing_writes_no_version,
    references_to_absent_resources_are_refused_when_checked,
    concurrent_updates_never_lose_a_version,
    keyed_commits_write_receipt_and_resources_together,
    concurrent_keyed_commits_of_one_key_commit_once,
);

/// A PostgreSQL schema migrated by a newer Renkei is refused on connect (with a permanent
/// error, not "unavailable"), and its migrations are left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_schema_newer_than_the_binary() {
    let t = support::postgres().await;
    let schema = t.schema.clone().unwrap();
    let (client, conn) = tokio_postgres::connect(&support::database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let newest: i64 = client
        .query_one(
            &format!("SELECT MAX(version) FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            &format!("INSERT INTO {schema}.schema_migrations VALUES ($1, 0)"),
            &[&(newest + 1)],
        )
        .await
        .unwrap();
    let config = store::PostgresConfig {
        schema: Some(schema.clone()),
        ..store::PostgresConfig::new(support::database_url())
    };
    let err = store::PostgresStore::connect(config, Arc::new(store::BasicExtractor))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");
    assert_eq!(err.kind(), store::ErrorKind::Backend);
    let still: i64 = client
        .query_one(
            &format!("SELECT MAX(version) FROM {schema}.schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, newest + 1);
}

// The change feed's stories (consumers, checkpoints, compartments), after the macros they use.
mod feed;
