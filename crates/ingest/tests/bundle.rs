//! Batch and transaction Bundles without HTTP, over a real SQLite store: entries prepared in
//! the spec's processing order, typed refusals naming the entry, reads handed back (and
//! refused where only writes belong), PATCH entries, and a transaction that is all or
//! nothing.

use std::sync::Arc;

use ingest::bundle::{Prepared, Preparer};
use ingest::{EntryError, R4Validator};
use serde_json::{Value, json};
use store::{
    FhirIndexExtractor, Outcome, ReferenceCheck, RequestContext, SqliteStore, Store, WriteOp,
};

struct Harness {
    store: Arc<dyn Store>,
    ctx: RequestContext,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness() -> Harness {
    let dir = std::env::temp_dir().join(format!("renkei-ingest-bundle-{}", uuid::Uuid::new_v4()));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    Harness {
        store,
        ctx: RequestContext::system(),
        dir,
    }
}

impl Harness {
    fn preparer<'a>(&'a self, references: &'a ReferenceCheck) -> Preparer<'a> {
        Preparer {
            store: self.store.as_ref(),
            validator: &R4Validator,
            ctx: &self.ctx,
            base: "http://example.org/fhir",
            references,
        }
    }
}

fn bundle(kind: &str, entries: Value) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

#[tokio::test]
async fn a_transaction_resolves_its_own_references_and_runs_again_without_duplicates() {
    let h = harness();
    let off = ReferenceCheck::Off;
    let b = bundle(
        "transaction",
        json!([
            {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000003",
             "resource": {"resourceType": "Condition",
                          "subject": {"reference": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000004"}},
             "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000004",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:b", "value": "1"}]},
             "request": {"method": "POST", "url": "http://example.org/fhir/Patient",
                         "ifNoneExist": "identifier=urn:b|1"}}
        ]),
    );
    let first = h.preparer(&off).run(&b, true).await.unwrap();
    assert!(matches!(first[0], Ok(Outcome::Created(_))), "{first:?}");
    let Ok(Outcome::Created(patient)) = &first[1] else {
        panic!("{first:?}")
    };
    let second = h.preparer(&off).run(&b, true).await.unwrap();
    assert!(matches!(second[1], Ok(Outcome::Existing(_))), "{second:?}");
    let Ok(Outcome::Created(condition)) = &second[0] else {
        panic!("{second:?}")
    };
    let body: Value = serde_json::from_str(condition.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body["subject"]["reference"],
        format!("Patient/{}", patient.id)
    );
}

#[tokio::test]
async fn a_batch_refuses_entries_alone_and_a_transaction_as_a_whole() {
    let h = harness();
    let off = ReferenceCheck::Off;
    let entries = json!([
        {"resource": {"resourceType": "Patient", "id": "ok"},
         "request": {"method": "PUT", "url": "Patient/ok"}},
        {"resource": {"resourceType": "Patient", "id": "bad", "birthDate": "1999-02-30"},
         "request": {"method": "PUT", "url": "Patient/bad"}},
        {"request": {"method": "GET", "url": "Patient/ok"}},
        {"resource": {"resourceType": "Patients"},
         "request": {"method": "POST", "url": "Patients"}}
    ]);
    let results = h
        .preparer(&off)
        .run(&bundle("batch", entries.clone()), false)
        .await
        .unwrap();
    assert!(matches!(results[0], Ok(Outcome::Created(_))), "{results:?}");
    let Err(bad) = &results[1] else {
        panic!("{results:?}")
    };
    assert_eq!(bad.entry, Some(1));
    let EntryError::Invalid(issues) = &bad.error else {
        panic!("{bad:?}")
    };
    assert_eq!(issues[0].expression.as_deref(), Some("Patient.birthDate"));
    assert!(bad.to_string().starts_with("Bundle.entry[1]: "), "{bad}");
    let Err(read) = &results[2] else {
        panic!("{results:?}")
    };
    assert!(
        read.to_string().contains("only writes are imported"),
        "{read}"
    );
    let Err(unknown) = &results[3] else {
        panic!("{results:?}")
    };
    assert!(
        matches!(unknown.error, EntryError::UnknownType(_)),
        "{unknown:?}"
    );

    // The same entries as a transaction: the first bad one refuses all, nothing is written.
    let mut entries = entries;
    entries[0]["resource"]["id"] = json!("ok2");
    entries[0]["request"]["url"] = json!("Patient/ok2");
    let refused = h
        .preparer(&off)
        .run(&bundle("transaction", entries), true)
        .await
        .unwrap_err();
    assert_eq!(refused.entry, Some(1));
    assert!(
        h.store
            .load(&h.ctx, "Patient", "ok2")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn prepared_writes_follow_the_processing_order_and_reads_go_back_to_the_caller() {
    let h = harness();
    let off = ReferenceCheck::Off;
    let entries = json!([
        {"resource": {"resourceType": "Patient", "id": "p"},
         "request": {"method": "PUT", "url": "Patient/p"}},
        {"request": {"method": "DELETE", "url": "Observation/o"}},
        {"resource": {"resourceType": "Organization"},
         "request": {"method": "POST", "url": "Organization"}}
    ]);
    let writes = h
        .preparer(&off)
        .transaction(&bundle("transaction", entries.clone()))
        .await
        .unwrap();
    let kinds: Vec<&str> = writes
        .iter()
        .map(|w| match &w.op {
            WriteOp::Delete { .. } => "DELETE",
            WriteOp::Create { .. } => "POST",
            WriteOp::Update { .. } => "PUT",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["DELETE", "POST", "PUT"]);

    let read =
        json!({"request": {"method": "GET", "url": "http://example.org/fhir/Patient?name=x"}});
    let Prepared::Read(url) = h.preparer(&off).entry(&read).await.unwrap() else {
        panic!("a read is the caller's")
    };
    assert_eq!(url, "http://example.org/fhir/Patient?name=x");
    let mut with_read = entries;
    with_read.as_array_mut().unwrap().push(read);
    let refused = h
        .preparer(&off)
        .transaction(&bundle("transaction", with_read))
        .await
        .unwrap_err();
    assert_eq!(refused.entry, Some(3));
    assert!(
        refused
            .to_string()
            .contains("cannot be part of a prepared transaction")
    );

    // Conditional criteria are required, and checked.
    let no_criteria = json!({"resource": {"resourceType": "Patient"},
                             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "Patient?"}});
    let e = h.preparer(&off).entry(&no_criteria).await.unwrap_err();
    assert!(matches!(e, EntryError::IfNoneExist(_)), "{e:?}");
}

#[tokio::test]
async fn a_patch_entry_applies_a_json_patch_to_the_current_version() {
    let h = harness();
    let off = ReferenceCheck::Off;
    let create = json!([{"resource": {"resourceType": "Patient", "id": "p", "gender": "female"},
                         "request": {"method": "PUT", "url": "Patient/p"}}]);
    h.preparer(&off)
        .run(&bundle("transaction", create), true)
        .await
        .unwrap();
    // [{"op":"replace","path":"/gender","value":"male"}]
    let patch = json!([{"resource": {"resourceType": "Binary",
                                     "contentType": "application/json-patch+json",
                                     "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9nZW5kZXIiLCJ2YWx1ZSI6Im1hbGUifV0="},
                        "request": {"method": "PATCH", "url": "Patient/p", "ifMatch": "W/\"1\""}}]);
    let results = h
        .preparer(&off)
        .run(&bundle("transaction", patch.clone()), true)
        .await
        .unwrap();
    let Ok(Outcome::Updated(r)) = &results[0] else {
        panic!("{results:?}")
    };
    assert_eq!(r.version, 2);
    let body: Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["gender"], "male");
    // Based on version 1, which is no longer current: a version conflict, nothing written.
    let stale = h
        .preparer(&off)
        .run(&bundle("transaction", patch), true)
        .await
        .unwrap_err();
    let EntryError::Store(e) = &stale.error else {
        panic!("{stale:?}")
    };
    assert_eq!(e.kind(), store::ErrorKind::VersionConflict);
}
