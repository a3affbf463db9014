//! The one backend-agnostic story suite: every test runs on SQLite and on PostgreSQL.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use store::{
    AccessPolicy, ErrorKind, HistoryQuery, HistoryScope, KeyedWrite, Method, Outcome, Patients,
    Receipt, ReferenceCheck, RequestContext, Restriction, SearchQuery, SecurityLabel, Selector,
    Store, StoreError, Withheld, Withholding, WriteEntry, WriteOp,
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
            internal: false,
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
            internal: false,
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
            internal: false,
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

/// The named lock is exclusive while held (across stores opened on one database, as two
/// processes would) and free again once released or dropped; its holder can tell whether
/// anyone waits for it.
async fn exclusive_lock_is_shared_by_every_handle(s: Arc<dyn Store>) {
    let first = s.lock_exclusive(&ctx(), "suite-lock").await.unwrap();
    assert!(!first.wanted().await.unwrap(), "nobody waits yet");
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        let second = s2.lock_exclusive(&ctx(), "suite-lock").await.unwrap();
        second.release().await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "a second holder got the lock while it was held"
    );
    // The waiter is seen (it may take a moment to reach the lock).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !first.wanted().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never saw the waiter"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Another name is independent, and nobody waits for it.
    let other = s.lock_exclusive(&ctx(), "suite-other").await.unwrap();
    assert!(!other.wanted().await.unwrap());
    other.release().await;
    // Asking does not take the waiter's turn.
    assert!(first.wanted().await.unwrap());
    first.release().await;
    waiter.await.unwrap();
    // A dropped guard releases too; once the waiter has had its turn nobody waits.
    let again = s.lock_exclusive(&ctx(), "suite-lock").await.unwrap();
    assert!(!again.wanted().await.unwrap());
    drop(again);
    s.lock_exclusive(&ctx(), "suite-lock")
        .await
        .unwrap()
        .release()
        .await;
    assert!(s.lock_exclusive(&ctx(), "../etc").await.is_err());
}

/// The confidentiality code system of `meta.security` labels.
const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// A caller restricted to Patient `p1`'s compartment, with restricted (`R`) records denied
/// unless `break_glass`.
fn restricted_to_p1(break_glass: bool) -> RequestContext {
    ctx().with_access(AccessPolicy::Restricted(Restriction {
        patients: Some(["p1".to_owned()].into()),
        denied_labels: [SecurityLabel::new(CONFIDENTIALITY, "R")].into(),
        withheld: Vec::new(),
        break_glass,
    }))
}

/// Every match of `q` for `c`, page by page (`count` a page, an accurate total asked), as
/// sorted `Type/id`s; checks on the way that the total is the same on every page and equals
/// what the pages show, that a page with a next link is full, that a next link never leads to
/// an empty page, and that nothing comes twice.
async fn walk(s: &dyn Store, c: &RequestContext, mut q: SearchQuery, count: usize) -> Vec<String> {
    q.count = count;
    q.total = store::search::TotalMode::Accurate;
    let mut seen = Vec::new();
    let mut total = None;
    loop {
        let page = s.search(c, &q).await.unwrap();
        let t = page.total.expect("an accurate total");
        assert_eq!(
            *total.get_or_insert(t),
            t,
            "the total changed between pages"
        );
        assert!(
            !page.matches.is_empty() || q.after.is_none(),
            "a next link led to an empty page"
        );
        seen.extend(
            page.matches
                .iter()
                .map(|r| format!("{}/{}", r.resource_type, r.id)),
        );
        match page.next {
            Some(next) => {
                assert_eq!(page.matches.len(), count, "a page with a next link is full");
                q.after = Some(store::search::Cursor::decode(&next).unwrap());
            }
            None => break,
        }
    }
    assert_eq!(
        total,
        Some(seen.len() as u64),
        "the total is what the pages show"
    );
    let listed = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), listed, "a resource came twice");
    seen
}

fn refs(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn typed(rs: &[store::StoredResource]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .map(|r| format!("{}/{}", r.resource_type, r.id))
        .collect();
    v.sort();
    v
}

/// A caller restricted to one patient's compartment sees, through every read path, only that
/// patient's resources (and none carrying a denied label unless it breaks the glass); counts,
/// totals and paging agree with what is shown; the feeds that index rows cannot scope are
/// refused; and a conditional write never matches, returns or reveals a hidden resource.
async fn a_restricted_caller_sees_only_its_patients_compartment(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let put = |r: Value| async move {
        let (ty, id) = (
            r["resourceType"].as_str().unwrap().to_owned(),
            r["id"].as_str().unwrap().to_owned(),
        );
        s.update(&ctx(), &ty, &id, r, None).await.unwrap();
    };
    let observation = |id: &str, patient: &str, code: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "identifier": [{"system": "urn:test", "value": id}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "performer": [{"reference": "Practitioner/dr"}]})
    };
    let encounter = |id: &str, patient: &str| {
        json!({"resourceType": "Encounter", "id": id, "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": format!("Patient/{patient}")},
            "participant": [{"individual": {"reference": "Practitioner/dr"}}],
            "serviceProvider": {"reference": "Organization/org"}})
    };
    put(json!({"resourceType": "Organization", "id": "org", "name": "Clinic"})).await;
    put(json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]})).await;
    for (id, family) in [("p1", "Ito"), ("p2", "Ito"), ("p3", "Sato")] {
        let mut p = patient(family, id);
        p["id"] = json!(id);
        p["managingOrganization"] = json!({"reference": "Organization/org"});
        p["generalPractitioner"] = json!([{"reference": "Practitioner/dr"}]);
        put(p).await;
    }
    for i in 0..5 {
        put(observation(&format!("o1-{i}"), "p1", "8480-6")).await;
    }
    put(encounter("e1-0", "p1")).await;
    put(encounter("e1-1", "p1")).await;
    let mut secret = observation("o1-secret", "p1", "99999-9");
    secret["meta"] = json!({"security": [{"system": CONFIDENTIALITY, "code": "R"}]});
    put(secret).await;
    for i in 0..3 {
        put(observation(&format!("o2-{i}"), "p2", "8480-6")).await;
    }
    put(encounter("e2-0", "p2")).await;
    put(observation("o3-0", "p3", "8480-6")).await;
    put(observation("o1-gone", "p1", "8480-6")).await;
    put(observation("o2-gone", "p2", "8480-6")).await;
    s.delete(&c, "Observation", "o1-gone", None).await.unwrap();
    s.delete(&c, "Observation", "o2-gone", None).await.unwrap();

    let r = restricted_to_p1(false);
    let p1_observations = refs(&[
        "Observation/o1-0",
        "Observation/o1-1",
        "Observation/o1-2",
        "Observation/o1-3",
        "Observation/o1-4",
    ]);
    let mut visible = p1_observations.clone();
    visible.extend(refs(&["Patient/p1", "Encounter/e1-0", "Encounter/e1-1"]));
    visible.sort();

    // read and vread: out of scope is NotFound, never Gone; a deleted resource of the
    // compartment is Gone, as for anyone.
    s.read(&r, "Patient", "p1").await.unwrap();
    s.read(&r, "Observation", "o1-0").await.unwrap();
    for (ty, id) in [
        ("Patient", "p2"),
        ("Practitioner", "dr"),
        ("Organization", "org"),
        ("Observation", "o1-secret"),
        ("Observation", "o2-0"),
        ("Encounter", "e2-0"),
        ("Observation", "o2-gone"),
        ("Observation", "absent"),
    ] {
        let err = s.read(&r, ty, id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ty}/{id}: {err}");
        let err = s.vread(&r, ty, id, 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ty}/{id}: {err}");
        assert!(s.load(&r, ty, id).await.unwrap().is_none(), "{ty}/{id}");
    }
    let err = s.read(&r, "Observation", "o1-gone").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Gone);
    assert_eq!(
        s.vread(&r, "Observation", "o1-gone", 1)
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        s.vread(&r, "Observation", "o1-0", 1).await.unwrap().version,
        1
    );

    // Type-level search, with and without a driving filter, sorted or not, walked in small
    // pages; `_summary=count`.
    for params in ["", "code=8480-6", "_sort=_id", "_lastUpdated=gt2000-01-01"] {
        assert_eq!(
            walk(s, &r, query(s, "Observation", params), 2).await,
            p1_observations,
            "Observation?{params}"
        );
    }
    let mut count_only = query(s, "Observation", "_summary=count");
    count_only.count = 0;
    assert_eq!(s.search(&r, &count_only).await.unwrap().total, Some(5));
    assert_eq!(
        walk(s, &r, query(s, "Encounter", ""), 1).await,
        refs(&["Encounter/e1-0", "Encounter/e1-1"])
    );
    assert_eq!(
        walk(s, &r, query(s, "Patient", "family=Ito"), 1).await,
        refs(&["Patient/p1"])
    );
    for ty in ["Practitioner", "Organization"] {
        assert!(walk(s, &r, query(s, ty, ""), 2).await.is_empty(), "{ty}");
    }
    // System level, all types or some.
    let system = |params: &str| {
        SearchQuery::parse(
            None,
            &store::search::parse_query_string(params),
            s.extractor(),
            false,
        )
        .unwrap()
    };
    assert_eq!(walk(s, &r, system(""), 3).await, visible);
    assert_eq!(
        walk(s, &r, system("_type=Encounter,Practitioner,Patient"), 2).await,
        refs(&["Patient/p1", "Encounter/e1-0", "Encounter/e1-1"])
    );
    // Two patients: both compartments.
    let two = ctx().with_access(AccessPolicy::patients(["p1", "p3"]));
    assert_eq!(
        walk(s, &two, query(s, "Observation", "code=8480-6"), 2)
            .await
            .len(),
        6
    );

    // What a conditional write would match, and the plan of the same SQL.
    let by_code = query(s, "Observation", "code=8480-6");
    let mut ids = s.matching_ids(&r, &by_code, 100).await.unwrap();
    ids.sort();
    assert_eq!(ids, ["o1-0", "o1-1", "o1-2", "o1-3", "o1-4"]);
    assert_eq!(s.matching_ids(&c, &by_code, 100).await.unwrap().len(), 9);
    assert!(!s.explain(&r, &by_code).await.unwrap().is_empty());
    // With nothing more selective, the caller's compartments drive: SQLite (whose plans do
    // not depend on statistics) never scans a type or every resource for them.
    if s.backend() == "sqlite" {
        for q in [
            query(s, "Observation", ""),
            system(""),
            query(s, "Patient", "_has:Observation:subject:code=8480-6"),
        ] {
            let plan = s.explain(&r, &q).await.unwrap();
            assert!(!plan.contains("SCAN r"), "{plan}");
            assert!(plan.contains("idx_reference_target"), "{plan}");
        }
    }

    // _include / _revinclude: what they add is filtered too.
    let q = query(
        s,
        "Observation",
        "_include=Observation:performer&_include=Observation:subject",
    );
    let page = s.search(&r, &q).await.unwrap();
    let included = store::search::include::resolve(s, &r, &q, &page.matches)
        .await
        .unwrap();
    assert_eq!(typed(&included), ["Patient/p1"]);
    let open = s.search(&c, &q).await.unwrap();
    let open_included = store::search::include::resolve(s, &c, &q, &open.matches)
        .await
        .unwrap();
    assert!(typed(&open_included).contains(&"Practitioner/dr".to_owned()));
    let q = query(
        s,
        "Patient",
        "_revinclude=Observation:subject&_revinclude=Encounter:subject&_include=Patient:general-practitioner",
    );
    let page = s.search(&r, &q).await.unwrap();
    assert_eq!(typed(&page.matches), ["Patient/p1"]);
    let included = store::search::include::resolve(s, &r, &q, &page.matches)
        .await
        .unwrap();
    let mut want = p1_observations.clone();
    want.extend(refs(&["Encounter/e1-0", "Encounter/e1-1"]));
    want.sort();
    assert_eq!(typed(&included), want);

    // Chains and _has: their inner filters see only what the caller sees.
    let ids_of = |page: &store::SearchPage| typed(&page.matches);
    let chain = query(s, "Observation", "subject:Patient.family=Ito");
    assert_eq!(walk(s, &r, chain.clone(), 2).await, p1_observations);
    assert_eq!(ids_of(&s.search(&c, &chain).await.unwrap()).len(), 9);
    let through_hidden = query(s, "Observation", "performer:Practitioner.family=House");
    assert!(walk(s, &r, through_hidden.clone(), 2).await.is_empty());
    assert_eq!(
        ids_of(&s.search(&c, &through_hidden).await.unwrap()).len(),
        10
    );
    let has = query(s, "Patient", "_has:Observation:subject:code=8480-6");
    assert_eq!(walk(s, &r, has.clone(), 2).await, ["Patient/p1"]);
    assert_eq!(ids_of(&s.search(&c, &has).await.unwrap()).len(), 3);
    let has_secret = query(s, "Patient", "_has:Observation:subject:code=99999-9");
    assert!(walk(s, &r, has_secret.clone(), 2).await.is_empty());
    assert_eq!(
        ids_of(&s.search(&c, &has_secret).await.unwrap()),
        ["Patient/p1"]
    );

    // Compartment search and $everything.
    let compartment = |owner: &str| {
        let mut q = SearchQuery::all(Some("Observation"));
        q.filters
            .push(SearchQuery::patient_compartment(owner, Some("Observation"), false).unwrap());
        q
    };
    assert_eq!(walk(s, &r, compartment("p1"), 2).await, p1_observations);
    assert!(walk(s, &r, compartment("p2"), 2).await.is_empty());
    assert_eq!(walk(s, &r, SearchQuery::everything("p1"), 3).await, visible);
    assert!(
        walk(s, &r, SearchQuery::everything("p2"), 3)
            .await
            .is_empty()
    );
    let open_everything = walk(s, &c, SearchQuery::everything("p1"), 100).await;
    for extra in [
        "Practitioner/dr",
        "Organization/org",
        "Observation/o1-secret",
    ] {
        assert!(open_everything.contains(&extra.to_owned()), "{extra}");
    }

    // History: an instance the caller sees, else NotFound; type and system level, and the
    // change feed, refused as a whole (index rows describe current versions only).
    let instance = |ty: &str, id: &str| HistoryQuery {
        scope: HistoryScope::Instance(ty.into(), id.into()),
        since: None,
        count: 10,
        before: None,
    };
    assert_eq!(
        s.history(&r, &instance("Observation", "o1-0"))
            .await
            .unwrap()
            .versions
            .len(),
        1
    );
    assert_eq!(
        s.history(&r, &instance("Observation", "o1-gone"))
            .await
            .unwrap()
            .versions
            .len(),
        2
    );
    for (ty, id) in [
        ("Observation", "o2-0"),
        ("Observation", "o2-gone"),
        ("Observation", "o1-secret"),
        ("Practitioner", "dr"),
    ] {
        let err = s.history(&r, &instance(ty, id)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ty}/{id}");
    }
    for scope in [
        HistoryScope::Type("Observation".into()),
        HistoryScope::System,
    ] {
        let q = HistoryQuery {
            scope,
            since: None,
            count: 10,
            before: None,
        };
        let err = s.history(&r, &q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        // The node's own work for the same request is not restricted.
        s.history(&r.internal(), &q).await.unwrap();
    }
    let err = s.changes(&r, 0, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert!(!s.changes(&r.internal(), 0, 10).await.unwrap().is_empty());

    // Break-glass: the labelled record shows; the compartment still bounds everything.
    let glass = restricted_to_p1(true);
    s.read(&glass, "Observation", "o1-secret").await.unwrap();
    let mut with_secret = p1_observations.clone();
    with_secret.push("Observation/o1-secret".into());
    with_secret.sort();
    assert_eq!(
        walk(s, &glass, query(s, "Observation", ""), 2).await,
        with_secret
    );
    assert_eq!(walk(s, &glass, has_secret, 2).await, ["Patient/p1"]);
    assert!(s.read(&glass, "Observation", "o2-0").await.is_err());

    // Conditional writes use the caller's policy. A conditional create whose criteria match
    // only a hidden resource creates a new one and does not return the hidden one; one that
    // matches a visible resource returns it, as for anyone.
    let mut mine = observation("ignored", "p1", "2345-7");
    mine.as_object_mut().unwrap().remove("id");
    let created = s
        .write(
            &r,
            WriteOp::Create {
                resource: mine,
                if_none_exist: Some(query(s, "Observation", "identifier=urn:test|o2-0")),
            },
        )
        .await
        .unwrap();
    let Outcome::Created(new) = &created else {
        panic!("{created:?}")
    };
    assert_ne!(new.id, "o2-0");
    assert_eq!(s.read(&c, "Observation", "o2-0").await.unwrap().version, 1);
    // A write that would land outside the caller's patients is refused, and nothing is
    // written: a new Patient, or data of a hidden one.
    let before = s.read(&c, "Patient", "p2").await.unwrap().version;
    for (op, what) in [
        (
            WriteOp::Create {
                resource: patient("Ito", "p9"),
                if_none_exist: None,
            },
            "a new Patient",
        ),
        (
            WriteOp::Create {
                resource: observation("planted", "p2", "2345-7"),
                if_none_exist: None,
            },
            "another patient's Observation",
        ),
    ] {
        let err = s.write(&r, op).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{what}: {err}");
    }
    assert_eq!(s.read(&c, "Patient", "p2").await.unwrap().version, before);
    let existing = s
        .write(
            &r,
            WriteOp::Create {
                resource: observation("ignored", "p1", "8480-6"),
                if_none_exist: Some(query(s, "Observation", "identifier=urn:test|o1-0")),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&existing, Outcome::Existing(e) if e.id == "o1-0"),
        "{existing:?}"
    );
    // A conditional update matching only a hidden resource creates; a conditional delete
    // matching only a hidden one deletes nothing.
    let mut body = observation("x", "p1", "8480-6");
    body.as_object_mut().unwrap().remove("id");
    let updated = s
        .write(
            &r,
            WriteOp::ConditionalUpdate {
                query: query(s, "Observation", "identifier=urn:test|o2-0"),
                resource: body,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&updated, Outcome::Created(n) if n.id != "o2-0"),
        "{updated:?}"
    );
    let deleted = s
        .write(
            &r,
            WriteOp::ConditionalDelete {
                query: query(s, "Observation", "identifier=urn:test|o2-1"),
            },
        )
        .await
        .unwrap();
    assert_eq!(deleted, Outcome::NoOp);
    // By id: a hidden resource is NotFound, whatever version is asked for.
    for if_match in [None, Some(1), Some(7)] {
        let err = s
            .update(
                &r,
                "Observation",
                "o2-0",
                observation("o2-0", "p1", "1-1"),
                if_match,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{if_match:?}: {err}");
        let err = s
            .delete(&r, "Observation", "o2-0", if_match)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{if_match:?}: {err}");
    }
    let err = s
        .delete(&r, "Observation", "o2-gone", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    for id in ["o2-0", "o2-1"] {
        assert_eq!(
            s.read(&c, "Observation", id).await.unwrap().version,
            1,
            "{id}"
        );
    }
    // References: a hidden target is refused exactly like an absent one.
    let refer = |subject: &str| {
        let mut o = observation("x", "p1", "8480-6");
        let fields = o.as_object_mut().unwrap();
        fields.remove("id");
        // A practitioner is outside every compartment: hidden, so refused as well (below).
        fields.remove("performer");
        o["subject"] = json!({"reference": subject});
        o
    };
    let conditional = |identifier: &str| {
        WriteEntry::new(WriteOp::Create {
            resource: refer(&format!("Patient?identifier=urn:test|{identifier}")),
            if_none_exist: None,
        })
    };
    let hidden = s
        .transaction(&r, vec![conditional("p3")])
        .await
        .unwrap_err();
    let absent = s
        .transaction(&r, vec![conditional("nobody")])
        .await
        .unwrap_err();
    assert_eq!(hidden.kind(), ErrorKind::Invalid, "{hidden}");
    assert_eq!(
        hidden.to_string().replace("p3", "?"),
        absent.to_string().replace("nobody", "?")
    );
    s.transaction(&c, vec![conditional("p3")]).await.unwrap();
    let checked = |subject: &str| {
        WriteEntry::new(WriteOp::Create {
            resource: refer(subject),
            if_none_exist: None,
        })
        .with_references(ReferenceCheck::Refuse { base: None })
    };
    let hidden = s
        .transaction(&r, vec![checked("Patient/p3")])
        .await
        .unwrap_err();
    let absent = s
        .transaction(&r, vec![checked("Patient/nobody")])
        .await
        .unwrap_err();
    for err in [&hidden, &absent] {
        assert!(
            matches!(err, StoreError::Entry { source, .. } if matches!(**source, StoreError::MissingReference { .. })),
            "{err:?}"
        );
    }
    s.transaction(&r, vec![checked("Patient/p1")])
        .await
        .unwrap();
    let mut with_performer = checked("Patient/p1");
    if let WriteOp::Create { resource, .. } = &mut with_performer.op {
        resource["performer"] = json!([{"reference": "Practitioner/dr"}]);
    }
    let err = s.transaction(&r, vec![with_performer]).await.unwrap_err();
    assert!(
        matches!(err.into_inner(), StoreError::MissingReference { reference, .. } if reference == "Practitioner/dr")
    );
}

/// The HIV sensitivity label.
fn hiv() -> SecurityLabel {
    SecurityLabel::new("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV")
}

/// A caller of every compartment (a clinician's token) from whom consent withholds `withheld`.
fn consent(withheld: Vec<Withheld>) -> RequestContext {
    ctx().with_access(AccessPolicy::Restricted(Restriction::consent(withheld)))
}

fn of(patients: &[&str]) -> BTreeSet<String> {
    patients.iter().map(|p| p.to_string()).collect()
}

/// Consent restricts a caller that is not confined to some patients: each form of withheld
/// data (a whole record, labelled data, types, single resources, a record but what is
/// released, every record but some) hides exactly what it names, through reads, searches,
/// totals, paging, chains, `_has`, `_include`, `$everything` and conditional matching; types
/// outside the Patient compartment and other patients' data stay visible; break-glass
/// releases everything; the feeds index rows cannot scope are refused.
async fn consent_withholds_data_from_a_caller_of_every_compartment(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let put = |r: Value| async move {
        let (ty, id) = (
            r["resourceType"].as_str().unwrap().to_owned(),
            r["id"].as_str().unwrap().to_owned(),
        );
        s.update(&ctx(), &ty, &id, r, None).await.unwrap();
    };
    let observation = |id: &str, patient: &str, labelled: bool| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "identifier": [{"system": "urn:test", "value": id}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "performer": [{"reference": "Practitioner/dr"}]});
        if labelled {
            let l = hiv();
            o["meta"] = json!({"security": [{"system": l.system, "code": l.code}]});
        }
        o
    };
    put(json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]})).await;
    for (id, family) in [("p1", "Ito"), ("p2", "Ito"), ("p3", "Sato")] {
        let mut p = patient(family, id);
        p["id"] = json!(id);
        p["generalPractitioner"] = json!([{"reference": "Practitioner/dr"}]);
        put(p).await;
    }
    for (id, patient, labelled) in [
        ("o1-0", "p1", false),
        ("o1-1", "p1", false),
        ("o1-hiv", "p1", true),
        ("o2-0", "p2", false),
        ("o2-1", "p2", false),
        ("o3-hiv", "p3", true),
        ("o1-gone", "p1", false),
    ] {
        put(observation(id, patient, labelled)).await;
    }
    put(
        json!({"resourceType": "Encounter", "id": "e2", "status": "finished",
        "class": {"code": "AMB"}, "subject": {"reference": "Patient/p2"}}),
    )
    .await;
    s.delete(&c, "Observation", "o1-gone", None).await.unwrap();
    let all_observations = refs(&[
        "Observation/o1-0",
        "Observation/o1-1",
        "Observation/o1-hiv",
        "Observation/o2-0",
        "Observation/o2-1",
        "Observation/o3-hiv",
    ]);
    let without = |hidden: &[&str]| -> Vec<String> {
        all_observations
            .iter()
            .filter(|o| !hidden.contains(&o.as_str()))
            .cloned()
            .collect()
    };
    let system = |params: &str| {
        SearchQuery::parse(
            None,
            &store::search::parse_query_string(params),
            s.extractor(),
            false,
        )
        .unwrap()
    };
    let everyone = walk(s, &c, system(""), 4).await;
    let label = |labels: &[SecurityLabel]| Selector {
        labels: labels.iter().cloned().collect(),
        ..Selector::default()
    };

    // Nothing withheld: everything, as for the node itself.
    let none = consent(Vec::new());
    assert_eq!(walk(s, &none, system(""), 4).await, everyone);

    // A whole record (consent denying an organisation or a purpose).
    let record = consent(vec![Withheld {
        patients: Patients::Of(of(&["p1"])),
        what: Withholding::RecordExcept(Selector::default()),
    }]);
    let p1_hidden = ["Observation/o1-0", "Observation/o1-1", "Observation/o1-hiv"];
    for params in ["", "code=8480-6", "_sort=_id"] {
        assert_eq!(
            walk(s, &record, query(s, "Observation", params), 2).await,
            without(&p1_hidden),
            "Observation?{params}"
        );
    }
    let mut count_only = query(s, "Observation", "_summary=count");
    count_only.count = 0;
    assert_eq!(s.search(&record, &count_only).await.unwrap().total, Some(3));
    assert_eq!(s.search(&c, &count_only).await.unwrap().total, Some(6));
    for (ty, id) in [("Patient", "p1"), ("Observation", "o1-0")] {
        let err = s.read(&record, ty, id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ty}/{id}");
        let err = s.vread(&record, ty, id, 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{ty}/{id}");
    }
    // A deleted resource of the withheld record is not even known to be gone.
    let err = s.read(&record, "Observation", "o1-gone").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // Outside the compartment, and other records, stay visible.
    s.read(&record, "Practitioner", "dr").await.unwrap();
    s.read(&record, "Patient", "p2").await.unwrap();
    assert_eq!(
        walk(s, &record, query(s, "Patient", "family=Ito"), 1).await,
        ["Patient/p2"]
    );
    let mut seen = everyone.clone();
    seen.retain(|r| !p1_hidden.contains(&r.as_str()) && r != "Patient/p1");
    assert_eq!(walk(s, &record, system(""), 3).await, seen);
    // Chains, _has, _include and $everything.
    assert_eq!(
        walk(
            s,
            &record,
            query(s, "Observation", "subject:Patient.family=Ito"),
            2
        )
        .await,
        refs(&["Observation/o2-0", "Observation/o2-1"])
    );
    assert_eq!(
        walk(
            s,
            &record,
            query(s, "Observation", "performer:Practitioner.family=House"),
            2
        )
        .await,
        without(&p1_hidden)
    );
    assert_eq!(
        walk(
            s,
            &record,
            query(s, "Patient", "_has:Observation:subject:code=8480-6"),
            1
        )
        .await,
        refs(&["Patient/p2", "Patient/p3"])
    );
    let q = query(
        s,
        "Patient",
        "_revinclude=Observation:subject&_include=Patient:general-practitioner",
    );
    let page = s.search(&record, &q).await.unwrap();
    let included = store::search::include::resolve(s, &record, &q, &page.matches)
        .await
        .unwrap();
    let included = typed(&included);
    assert!(
        included.contains(&"Practitioner/dr".to_owned()),
        "{included:?}"
    );
    assert!(
        !included.iter().any(|r| r.starts_with("Observation/o1")),
        "{included:?}"
    );
    assert!(
        walk(s, &record, SearchQuery::everything("p1"), 3)
            .await
            .is_empty()
    );
    let p2_everything = walk(s, &record, SearchQuery::everything("p2"), 3).await;
    assert!(
        p2_everything.contains(&"Practitioner/dr".to_owned()),
        "{p2_everything:?}"
    );
    assert!(
        p2_everything.contains(&"Encounter/e2".to_owned()),
        "{p2_everything:?}"
    );
    // Conditional matching never finds a withheld resource.
    let by_id = query(s, "Observation", "identifier=urn:test|o1-0");
    assert!(s.matching_ids(&record, &by_id, 2).await.unwrap().is_empty());
    assert_eq!(s.matching_ids(&c, &by_id, 2).await.unwrap(), ["o1-0"]);
    // Writes are not confined to some compartments; a withheld resource is not found.
    s.update(
        &record,
        "Observation",
        "o2-0",
        observation("o2-0", "p2", false),
        None,
    )
    .await
    .unwrap();
    let err = s
        .update(
            &record,
            "Observation",
            "o1-0",
            observation("o1-0", "p1", false),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    // What index rows cannot scope is refused.
    let history = HistoryQuery {
        scope: HistoryScope::Type("Observation".into()),
        since: None,
        count: 10,
        before: None,
    };
    assert_eq!(
        s.history(&record, &history).await.unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    // Break-glass releases it.
    let mut glass = Restriction::consent(vec![Withheld {
        patients: Patients::Of(of(&["p1"])),
        what: Withholding::RecordExcept(Selector::default()),
    }]);
    glass.break_glass = true;
    let glass = ctx().with_access(AccessPolicy::Restricted(glass));
    assert_eq!(walk(s, &glass, system(""), 4).await, everyone);
    s.read(&glass, "Observation", "o1-0").await.unwrap();

    // Labelled data of one record (a consent denying a sensitive class).
    let labelled = consent(vec![Withheld {
        patients: Patients::Of(of(&["p1"])),
        what: Withholding::Data(label(&[hiv()])),
    }]);
    assert_eq!(
        walk(s, &labelled, query(s, "Observation", ""), 2).await,
        without(&["Observation/o1-hiv"])
    );
    let err = s
        .read(&labelled, "Observation", "o1-hiv")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    s.read(&labelled, "Patient", "p1").await.unwrap();
    s.read(&labelled, "Observation", "o3-hiv").await.unwrap();
    assert_eq!(
        walk(
            s,
            &labelled,
            query(
                s,
                "Observation",
                "_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV"
            ),
            2
        )
        .await,
        ["Observation/o3-hiv"]
    );

    // A sensitive label withheld from every record but one whose patient released it (a
    // network's sensitive class, and one patient's consent permitting it).
    let sensitive = consent(vec![Withheld {
        patients: Patients::AllBut(of(&["p3"])),
        what: Withholding::Data(label(&[hiv()])),
    }]);
    assert_eq!(
        walk(s, &sensitive, query(s, "Observation", "_sort=-_id"), 4).await,
        without(&["Observation/o1-hiv"])
    );

    // Types and single resources of a record.
    let types = consent(vec![Withheld {
        patients: Patients::Of(of(&["p2"])),
        what: Withholding::Data(Selector {
            types: of(&["Encounter"]),
            resources: of(&["Observation/o2-1"]),
            ..Selector::default()
        }),
    }]);
    assert_eq!(
        walk(s, &types, query(s, "Observation", ""), 2).await,
        without(&["Observation/o2-1"])
    );
    assert!(
        walk(s, &types, query(s, "Encounter", ""), 2)
            .await
            .is_empty()
    );
    s.read(&types, "Patient", "p2").await.unwrap();
    assert!(s.read(&types, "Encounter", "e2").await.is_err());

    // A withheld record but what a consent releases (its Observations, except labelled ones).
    let released = consent(vec![
        Withheld {
            patients: Patients::Of(of(&["p1"])),
            what: Withholding::RecordExcept(Selector {
                types: of(&["Observation"]),
                ..Selector::default()
            }),
        },
        Withheld {
            patients: Patients::Of(of(&["p1"])),
            what: Withholding::Data(label(&[hiv()])),
        },
    ]);
    assert_eq!(
        walk(s, &released, query(s, "Observation", ""), 2).await,
        without(&["Observation/o1-hiv"])
    );
    assert!(s.read(&released, "Patient", "p1").await.is_err());

    // An opt-in network where only p2 said yes: every other record is withheld, the types
    // outside the compartment are not.
    let opt_in = consent(vec![Withheld {
        patients: Patients::AllBut(of(&["p2"])),
        what: Withholding::RecordExcept(Selector::default()),
    }]);
    let mut p2_only = vec![
        "Encounter/e2".to_owned(),
        "Observation/o2-0".to_owned(),
        "Observation/o2-1".to_owned(),
        "Patient/p2".to_owned(),
        "Practitioner/dr".to_owned(),
    ];
    p2_only.sort();
    assert_eq!(walk(s, &opt_in, system(""), 2).await, p2_only);
    assert_eq!(
        walk(s, &opt_in, system("_type=Patient,Practitioner"), 1).await,
        refs(&["Patient/p2", "Practitioner/dr"])
    );
    // Nobody said yes.
    let nobody = consent(vec![Withheld {
        patients: Patients::AllBut(BTreeSet::new()),
        what: Withholding::RecordExcept(Selector::default()),
    }]);
    assert_eq!(walk(s, &nobody, system(""), 2).await, ["Practitioner/dr"]);
}

/// With a rule table, what is written unlabelled carries the labels its codes call for
/// (indexed, so `_security` finds it and the access policy sees it), also when its index rows
/// were extracted ahead; what the client set stays; the caller's organisation is the
/// version's custodian; a resource sent again as it is stored writes nothing.
async fn writes_are_labelled_and_record_their_custodian(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let mut clinic = ctx();
    clinic.organization = Some("Organization/clinic".into());
    let condition = json!({"resourceType": "Condition", "id": "c1",
        "meta": {"security": [{"system": CONFIDENTIALITY, "code": "N"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "B20"}]},
        "subject": {"reference": "Patient/p1"}});
    let stored = s
        .update(&clinic, "Condition", "c1", condition.clone(), None)
        .await
        .unwrap();
    let stored = body(written(&stored));
    assert_eq!(
        stored["meta"]["security"],
        json!([{"system": CONFIDENTIALITY, "code": "N"},
               {"system": auth::labels::ACT_CODE, "code": "HIV"}])
    );
    assert_eq!(
        stored["meta"]["tag"],
        json!([{"system": store::marks::CUSTODIAN_SYSTEM, "code": "Organization/clinic"}])
    );
    // Rows extracted ahead, from the unlabelled resource: extracted again.
    let mut ahead = condition.clone();
    ahead["id"] = json!("c2");
    let rows = s.extractor().extract("Condition", &ahead).unwrap();
    let mut entry = WriteEntry::new(WriteOp::Update {
        resource_type: "Condition".into(),
        id: "c2".into(),
        resource: ahead,
        if_match: None,
    });
    entry.index = Some(rows);
    s.transaction(&ctx(), vec![entry]).await.unwrap();
    let hiv = query(
        s,
        "Condition",
        "_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV",
    );
    assert_eq!(
        walk(s, &c(), hiv, 5).await,
        ["Condition/c1", "Condition/c2"]
    );
    let custodian = query(
        s,
        "Condition",
        "_tag=https://renkei.dev/fhir/CodeSystem/custodian|Organization/clinic",
    );
    assert_eq!(walk(s, &c(), custodian, 5).await, ["Condition/c1"]);
    // The same content again: no new version.
    let again = s
        .update(&clinic, "Condition", "c1", condition, None)
        .await
        .unwrap();
    assert!(matches!(again, Outcome::Unchanged(_)), "{again:?}");
}

fn c() -> RequestContext {
    ctx()
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

mod labelled {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writes_are_labelled_and_record_their_custodian() {
        let t = crate::support::sqlite_labelled(crate::support::fhir_extractor(), true);
        super::writes_are_labelled_and_record_their_custodian(t.store.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_writes_are_labelled_and_record_their_custodian() {
        let t = crate::support::postgres_labelled(crate::support::fhir_extractor(), 4, true).await;
        super::writes_are_labelled_and_record_their_custodian(t.store.clone()).await;
    }
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

/// A write the node adds to a restricted caller's unit of work (the EMPI's golden record) is
/// not held to the caller's policy; the caller's own writes are, in the same transaction.
async fn internal_entries_of_a_restricted_callers_unit_see_everything(s: Arc<dyn Store>) {
    let system = ctx();
    for id in ["p1", "p2"] {
        s.update(
            &system,
            "Patient",
            id,
            json!({"resourceType": "Patient", "id": id}),
            None,
        )
        .await
        .unwrap();
    }
    let restricted = restricted_to_p1(false);
    let p2 = |family: &str| {
        WriteEntry::new(WriteOp::Update {
            resource_type: "Patient".into(),
            id: "p2".into(),
            resource: json!({"resourceType": "Patient", "id": "p2", "name": [{"family": family}]}),
            if_match: Some(1),
        })
    };
    let p1 = WriteEntry::new(WriteOp::Update {
        resource_type: "Patient".into(),
        id: "p1".into(),
        resource: json!({"resourceType": "Patient", "id": "p1", "active": true}),
        if_match: None,
    });
    // The caller's own write of a hidden resource: not found, and nothing commits.
    let err = s
        .transaction(&restricted, vec![p1.clone(), p2("Caller")])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), store::ErrorKind::NotFound, "{err}");
    // The same write added by the node: both commit.
    let done = s
        .transaction(&restricted, vec![p1, p2("Node").as_internal()])
        .await
        .unwrap();
    assert_eq!(done.len(), 2);
    let p2 = s.read(&system, "Patient", "p2").await.unwrap();
    assert_eq!(body(&p2)["name"][0]["family"], "Node");
    // Still hidden from the caller afterwards.
    assert!(s.read(&restricted, "Patient", "p2").await.is_err());
}

/// A golden Patient (tagged as the EMPI tags them) and its `link`s make one person: `:mdm`
/// expands a golden or source reference to every linked Patient and `$everything` of the
/// person covers every source's data, with honest totals and paging; a source's own `link`
/// joins no one; an unlink or a deleted golden record changes the answer at once; a
/// restricted caller still sees only its compartment.
async fn mdm_expands_a_person_across_the_golden_records_links(s: Arc<dyn Store>) {
    let s: &dyn Store = &*s;
    let c = ctx();
    let put = |r: Value| async move {
        let (ty, id) = (
            r["resourceType"].as_str().unwrap().to_owned(),
            r["id"].as_str().unwrap().to_owned(),
        );
        s.update(&ctx(), &ty, &id, r, None).await.unwrap();
    };
    let golden = |sources: &[&str]| {
        json!({"resourceType": "Patient", "id": "g",
            "meta": {"tag": [{"system": store::search::GOLDEN_TAG_SYSTEM,
                "code": store::search::GOLDEN_TAG_CODE}]},
            "link": sources.iter().map(|id| json!({"other": {"reference": format!("Patient/{id}")},
                "type": "seealso"})).collect::<Vec<_>>()})
    };
    put(json!({"resourceType": "Practitioner", "id": "dr"})).await;
    put(json!({"resourceType": "Patient", "id": "s3"})).await;
    // A source's own link (not a golden record's) names no one of its person.
    put(json!({"resourceType": "Patient", "id": "s1",
        "link": [{"other": {"reference": "Patient/s3"}, "type": "seealso"}]}))
    .await;
    put(json!({"resourceType": "Patient", "id": "s2"})).await;
    // Not golden (no tag), though it links s2 and s3.
    put(json!({"resourceType": "Patient", "id": "n",
        "link": [{"other": {"reference": "Patient/s2"}, "type": "seealso"},
                 {"other": {"reference": "Patient/s3"}, "type": "seealso"}]}))
    .await;
    put(golden(&["s1", "s2"])).await;
    for p in ["s1", "s2", "s3"] {
        put(
            json!({"resourceType": "Encounter", "id": format!("e-{p}"), "status": "finished",
            "class": {"code": "AMB"}, "subject": {"reference": format!("Patient/{p}")}}),
        )
        .await;
        let mut o = json!({"resourceType": "Observation", "id": format!("o-{p}"), "status": "final",
            "code": {"text": "x"}, "subject": {"reference": format!("Patient/{p}")},
            "encounter": {"reference": format!("Encounter/e-{p}")}});
        if p == "s2" {
            o["performer"] = json!([{"reference": "Practitioner/dr"}]);
        }
        put(o).await;
    }
    let mdm = |q: &str| query(s, "Observation", q);
    for who in ["Patient/s1", "Patient/s2", "g", "Patient/g"] {
        assert_eq!(
            walk(s, &c, mdm(&format!("subject:mdm={who}")), 1).await,
            refs(&["Observation/o-s1", "Observation/o-s2"]),
            "subject:mdm={who}"
        );
    }
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/s3"), 1).await,
        refs(&["Observation/o-s3"])
    );
    assert_eq!(
        walk(s, &c, mdm("subject=Patient/s1"), 1).await,
        refs(&["Observation/o-s1"]),
        "without :mdm a reference is what it names"
    );
    // ORed with another value, and as a probe beside a driving filter.
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/s1,Patient/s3"), 2)
            .await
            .len(),
        3
    );
    assert_eq!(
        walk(s, &c, mdm("_id=o-s2,o-s3&subject:mdm=Patient/s1"), 2).await,
        refs(&["Observation/o-s2"])
    );
    assert!(
        SearchQuery::parse(
            Some("Observation"),
            &store::search::parse_query_string("subject:mdm=Group/1"),
            s.extractor(),
            false
        )
        .is_err(),
        ":mdm expands Patient references only"
    );

    // `n` links s2, so it is in s2's compartment (Patient.link is a compartment parameter),
    // as it is in s2's own $everything; it adds no one to the person.
    let person = refs(&[
        "Patient/n",
        "Patient/g",
        "Patient/s1",
        "Patient/s2",
        "Encounter/e-s1",
        "Encounter/e-s2",
        "Observation/o-s1",
        "Observation/o-s2",
        "Practitioner/dr",
    ]);
    for owner in ["g", "s1", "s2"] {
        assert_eq!(
            walk(s, &c, SearchQuery::everything_of(owner, true), 3).await,
            person,
            "{owner}"
        );
    }
    // Narrowed by type like any $everything.
    let mut q = SearchQuery::everything_of("g", true);
    q.types = vec!["Observation".into()];
    assert_eq!(
        walk(s, &c, q, 1).await,
        refs(&["Observation/o-s1", "Observation/o-s2"])
    );
    // Without the expansion a source's $everything is its own.
    let own = walk(s, &c, SearchQuery::everything_of("s1", false), 3).await;
    assert!(!own.contains(&"Observation/o-s2".to_owned()), "{own:?}");
    assert!(own.contains(&"Observation/o-s1".to_owned()), "{own:?}");

    // A restricted caller still sees its compartment only.
    let r = ctx().with_access(AccessPolicy::Restricted(Restriction {
        patients: Some(["s1".to_owned()].into()),
        denied_labels: Default::default(),
        withheld: Vec::new(),
        break_glass: false,
    }));
    assert_eq!(
        walk(s, &r, mdm("subject:mdm=Patient/g"), 1).await,
        refs(&["Observation/o-s1"])
    );
    let seen = walk(s, &r, SearchQuery::everything_of("g", true), 2).await;
    assert!(!seen.iter().any(|x| x.ends_with("-s2")), "{seen:?}");

    // Unlinking s2 changes the answer at once.
    put(golden(&["s1"])).await;
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/g"), 1).await,
        refs(&["Observation/o-s1"])
    );
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/s2"), 1).await,
        refs(&["Observation/o-s2"])
    );
    let after = walk(s, &c, SearchQuery::everything_of("g", true), 3).await;
    assert!(!after.iter().any(|x| x.ends_with("-s2")), "{after:?}");
    // A retired golden record (merged away: inactive, replaced-by the survivor) joins no one,
    // and is no one's.
    let mut retired = golden(&["s2"]);
    retired["id"] = json!("r");
    put(retired.clone()).await;
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/r"), 1).await,
        refs(&["Observation/o-s2"])
    );
    retired["active"] = json!(false);
    retired["link"] = json!([{"other": {"reference": "Patient/g"}, "type": "replaced-by"}]);
    put(retired).await;
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/r"), 1).await,
        refs(&[])
    );
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/g"), 1).await,
        refs(&["Observation/o-s1"])
    );
    // (Its link names g, so it is in g's compartment, as without the expansion.)
    assert_eq!(
        walk(s, &c, SearchQuery::everything_of("g", true), 3).await,
        refs(&[
            "Encounter/e-s1",
            "Observation/o-s1",
            "Patient/g",
            "Patient/r",
            "Patient/s1"
        ])
    );
    // A deleted golden record joins no one.
    s.delete(&c, "Patient", "g", None).await.unwrap();
    assert_eq!(
        walk(s, &c, mdm("subject:mdm=Patient/s1"), 1).await,
        refs(&["Observation/o-s1"])
    );
}

/// `phonetic` has `name`'s expression, so it has no rows of its own: a search on it reads the
/// rows of `name` (and `:missing` and `_sort` with it).
async fn phonetic_reads_the_rows_of_name(s: Arc<dyn Store>) {
    let c = ctx();
    let mut ids = Vec::new();
    for p in [
        json!({"resourceType": "Patient", "name": [{"family": "Yamada", "given": ["Hanako"]}]}),
        json!({"resourceType": "Patient", "name": [{"family": "Kato"}]}),
        json!({"resourceType": "Patient"}),
    ] {
        ids.push(written(&s.create(&c, p).await.unwrap()).id.clone());
    }
    let (y, k, none) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(patient_ids(&*s, "phonetic=yama").await, [y.as_str()]);
    assert_eq!(patient_ids(&*s, "phonetic=hana").await, [y.as_str()]);
    assert_eq!(patient_ids(&*s, "name=yama").await, [y.as_str()]);
    assert_eq!(
        patient_ids(&*s, "phonetic:missing=true").await,
        [none.as_str()]
    );
    assert_eq!(patient_ids(&*s, "phonetic:exact=Kato").await, [k.as_str()]);
}

/// A Patient with two names, three identifiers and an address, as `version` varies them.
fn varied_patient(id: &str, version: u32) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "id": id,
        "identifier": [
            {"system": "urn:mrn", "value": "kept"},
            {"system": "urn:mrn", "value": format!("gone-{version}")},
            {"system": "urn:ssn", "value": "kept-too"}
        ],
        "name": [
            {"family": "Tanaka", "given": ["Ken", "Ken"]},
            {"family": format!("Family{version}")}
        ],
        "gender": "male",
        "birthDate": format!("19{:02}-01-01", 50 + version),
        "address": [{"line": ["1 Main St"], "city": "Kobe", "postalCode": format!("65{version}")}]
    });
    if version.is_multiple_of(2) {
        p["telecom"] = json!([{"system": "phone", "value": "555-0100"}]);
    }
    p
}

/// After updates (one at a time, two of one resource in one batch, a deletion and a
/// re-creation), a resource is found by exactly its current version's values, once each.
async fn an_update_indexes_exactly_the_new_version(s: Arc<dyn Store>) {
    let c = ctx();
    s.update(&c, "Patient", "u1", varied_patient("u1", 1), None)
        .await
        .unwrap();
    s.update(&c, "Patient", "u1", varied_patient("u1", 2), None)
        .await
        .unwrap();
    let u1 = ["u1"];
    let none: [&str; 0] = [];
    assert_eq!(patient_ids(&*s, "identifier=urn:mrn|kept").await, u1);
    assert_eq!(patient_ids(&*s, "identifier=gone-1").await, none);
    assert_eq!(patient_ids(&*s, "identifier=gone-2").await, u1);
    assert_eq!(patient_ids(&*s, "given=ken").await, u1);
    assert_eq!(patient_ids(&*s, "family=family1").await, none);
    assert_eq!(patient_ids(&*s, "family=family2").await, u1);
    assert_eq!(patient_ids(&*s, "birthdate=1952").await, u1);
    assert_eq!(patient_ids(&*s, "birthdate=1951").await, none);
    assert_eq!(patient_ids(&*s, "phone=555-0100").await, u1);
    assert_eq!(patient_ids(&*s, "address-postalcode=652").await, u1);

    // Two versions of one resource in one unit: the second replaces the first's rows.
    let update = |version| {
        WriteEntry::new(WriteOp::Update {
            resource_type: "Patient".into(),
            id: "u1".into(),
            resource: varied_patient("u1", version),
            if_match: None,
        })
    };
    let results = s.batch(&c, vec![update(3), update(4)]).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for gone in ["identifier=gone-2", "identifier=gone-3", "family=family3"] {
        assert_eq!(patient_ids(&*s, gone).await, none, "{gone}");
    }
    for found in [
        "identifier=gone-4",
        "identifier=urn:ssn|kept-too",
        "family=family4",
        "family=tanaka",
        "birthdate=1954",
        "phone=555-0100",
        "gender=male",
    ] {
        assert_eq!(patient_ids(&*s, found).await, u1, "{found}");
    }
    assert_eq!(
        s.search(&c, &query(&*s, "Patient", "given=ken&_total=accurate"))
            .await
            .unwrap()
            .total,
        Some(1)
    );

    s.delete(&c, "Patient", "u1", None).await.unwrap();
    assert_eq!(patient_ids(&*s, "identifier=urn:mrn|kept").await, none);
    assert_eq!(patient_ids(&*s, "gender=male").await, none);
    s.update(&c, "Patient", "u1", varied_patient("u1", 5), None)
        .await
        .unwrap();
    assert_eq!(patient_ids(&*s, "identifier=urn:mrn|kept").await, u1);
    assert_eq!(patient_ids(&*s, "identifier=gone-5").await, u1);
    assert_eq!(patient_ids(&*s, "identifier=gone-4").await, none);
    assert_eq!(patient_ids(&*s, "phone=555-0100").await, none);
}

/// `name`, `address` and `telecom` search every part of a name, address or contact point,
/// though their rows hold only what `family`, `given`, `address-city`, `phone`, `email`... do
/// not: modifiers, `:missing`, sorting, `phonetic` and a chained search see them all.
async fn name_and_address_search_every_part(s: Arc<dyn Store>) {
    let c = ctx();
    let people = [
        json!({"resourceType": "Patient", "id": "np-a",
            "name": [{"text": "Dr. Ken Tanaka", "family": "Tanaka", "given": ["Ken"], "prefix": ["Dr."]}],
            "address": [{"line": ["1 Main St"], "city": "Kobe", "country": "JP"}],
            "telecom": [{"system": "phone", "value": "078-1"}, {"system": "fax", "value": "078-2"}]}),
        json!({"resourceType": "Patient", "id": "np-b",
            "name": [{"family": "Suzuki", "given": ["Hanako"]}],
            "address": [{"city": "Osaka", "postalCode": "530"}],
            "telecom": [{"system": "email", "value": "hanako@example.org"}]}),
        json!({"resourceType": "Patient", "id": "np-c", "gender": "other"}),
    ];
    for p in people {
        let id = p["id"].as_str().unwrap().to_owned();
        s.update(&c, "Patient", &id, p, None).await.unwrap();
    }
    s.create(
        &c,
        json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/np-a"}}),
    )
    .await
    .unwrap();
    let (a, b, none) = (["np-a"], ["np-b"], [] as [&str; 0]);
    for (q, expected) in [
        ("name=tanaka", &a[..]),
        ("name=ken", &a),
        ("name=dr", &a),
        ("name=hana", &b),
        ("name:exact=Tanaka", &a),
        ("name:exact=tanaka", &none),
        ("name:contains=naka", &a),
        ("phonetic=suzu", &b),
        ("phonetic=ken", &a),
        ("name:missing=true", &["np-c"]),
        ("address=kobe", &a),
        ("address:contains=main", &a),
        ("address=530", &b),
        ("address:exact=JP", &a),
        ("address-city=osaka", &b),
        ("address:missing=true", &["np-c"]),
        ("telecom=078-1", &a),
        ("telecom=phone|078-1", &a),
        ("telecom=078-2", &a),
        ("telecom=hanako@example.org", &b),
        ("phone=078-1", &a),
        ("phone=078-2", &none),
        ("email=hanako@example.org", &b),
        ("telecom:missing=true", &["np-c"]),
    ] {
        let mut found = patient_ids(&*s, q).await;
        found.sort();
        assert_eq!(found, expected, "{q}");
    }
    // Sorted by the least (greatest) of each person's name values: A's include "dr", B's
    // least is "hanako"; A's greatest is "tanaka", B's "suzuki".
    assert_eq!(
        patient_ids(&*s, "name:missing=false&_sort=name").await,
        ["np-a", "np-b"]
    );
    assert_eq!(
        patient_ids(&*s, "name:missing=false&_sort=-name").await,
        ["np-a", "np-b"]
    );
    let chained = s
        .search(&c, &query(&*s, "Observation", "subject:Patient.name=ken"))
        .await
        .unwrap();
    assert_eq!(chained.matches.len(), 1);
}

fhir_suite!(
    everything_lists_each_resource_once_across_pages,
    phonetic_reads_the_rows_of_name,
    mdm_expands_a_person_across_the_golden_records_links,
    a_restricted_caller_sees_only_its_patients_compartment,
    consent_withholds_data_from_a_caller_of_every_compartment,
    internal_entries_of_a_restricted_callers_unit_see_everything,
    an_update_indexes_exactly_the_new_version,
    name_and_address_search_every_part,
);

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
    exclusive_lock_is_shared_by_every_handle,
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

/// Every index row SQLite holds for `Patient/id`, as text, sorted (row numbers left out).
fn sqlite_rows(db: &std::path::Path, id: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database file");
    let tables = [
        "idx_string",
        "idx_token",
        "idx_reference",
        "idx_date",
        "idx_number",
        "idx_quantity",
        "idx_uri",
    ];
    let mut rows = Vec::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT * FROM {table} WHERE rid = \
                 (SELECT rid FROM resource WHERE res_type = 'Patient' AND res_id = ?1)"
            ))
            .unwrap();
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let found = stmt
            .query_map([id], |r| {
                let mut text = table.to_owned();
                for (i, column) in columns.iter().enumerate() {
                    if column != "rid" && column != "n" {
                        let v: rusqlite::types::Value = r.get(i)?;
                        text.push_str(&format!(" {column}={v:?}"));
                    }
                }
                Ok(text)
            })
            .unwrap();
        rows.extend(found.map(Result::unwrap));
    }
    rows.sort();
    rows
}

/// On SQLite an update deletes only the rows that changed and inserts only the new ones; what
/// it leaves is exactly what writing the same version afresh stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_update_leaves_the_rows_of_a_fresh_write() {
    let t = support::sqlite_with(support::fhir_extractor());
    let c = ctx();
    for version in 1..=4 {
        t.store
            .update(&c, "Patient", "old", varied_patient("old", version), None)
            .await
            .unwrap();
    }
    t.store
        .update(&c, "Patient", "fresh", varied_patient("fresh", 4), None)
        .await
        .unwrap();
    let db = t.sqlite_file().expect("a SQLite store");
    let (old, fresh) = (sqlite_rows(&db, "old"), sqlite_rows(&db, "fresh"));
    assert!(old.len() > 10, "{old:#?}");
    assert_eq!(old, fresh);
}
