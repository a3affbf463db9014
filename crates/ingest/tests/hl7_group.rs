//! HL7 v2 group commit: messages committed together, one of which the store refuses. The
//! refused one rolls its group back and gets its own error; the others are committed again,
//! alone, and nothing of the refused one is stored.

use std::sync::Arc;

use ingest::R4Validator;
use ingest::hl7::{Hl7Config, SinkError, StoreSink};
use serde_json::{Value, json};
use store::{FhirIndexExtractor, Receipt, RequestContext, SearchQuery, SqliteStore, Store};

fn receipt(key: &str) -> Receipt {
    Receipt {
        key: key.into(),
        fingerprint: 1,
        code: "AA".into(),
        reply: format!("ACK {key}").into_bytes(),
        deferred: None,
    }
}

/// A transaction Bundle writing one Patient conditionally on its identifier, as the HL7
/// mapping does.
fn bundle(identifier: &str) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{
            "fullUrl": "urn:uuid:7b0b1f0e-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:test:mrn", "value": identifier}],
                "name": [{"family": "Group", "given": [identifier]}]
            },
            "request": {"method": "PUT", "url": format!("Patient?identifier=urn:test:mrn|{identifier}")}
        }]
    })
}

async fn count(store: &dyn Store, identifier: &str) -> Option<u64> {
    let q = SearchQuery::parse(
        Some("Patient"),
        &store::search::parse_query_string(&format!("identifier=urn:test:mrn|{identifier}")),
        store.extractor(),
        false,
    )
    .unwrap();
    store
        .search(&RequestContext::system(), &q)
        .await
        .unwrap()
        .total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_store_refuses_fails_alone_in_a_group_commit() {
    let dir = std::env::temp_dir().join(format!("renkei-hl7-group-{}", uuid::Uuid::new_v4()));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    // Two Patients share one identifier: a conditional update on it matches both.
    let c = RequestContext::system();
    for given in ["a", "b"] {
        let twin = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:test:mrn", "value": "twice"}],
            "name": [{"given": [given]}]
        });
        store.create(&c, twin).await.unwrap();
    }
    let config = Hl7Config {
        writers: 1,
        max_group: 64,
    };
    let sink = StoreSink::new(store.clone(), Arc::new(R4Validator), &config);
    // Each round sends the refused message among good ones at once: whatever queued while the
    // previous commit ran is committed as one group.
    for round in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..12 {
            let sink = sink.clone();
            let (key, identifier) = if i == 5 {
                (format!("bad-{round}"), "twice".to_owned())
            } else {
                (format!("good-{round}-{i}"), format!("mrn-{round}-{i}"))
            };
            tasks.spawn(async move {
                let result = sink
                    .commit_bundle(receipt(&key), &bundle(&identifier), &[])
                    .await;
                (key, identifier, result)
            });
        }
        while let Some(done) = tasks.join_next().await {
            let (key, identifier, result) = done.unwrap();
            if key.starts_with("bad") {
                let Err(SinkError::Rejected(detail)) = &result else {
                    panic!("{key}: {result:?}")
                };
                assert!(detail.message.contains("matched 2"), "{}", detail.message);
                assert!(store.receipt(&c, &key).await.unwrap().is_none(), "{key}");
            } else {
                assert!(result.is_ok(), "{key}: {result:?}");
                assert!(store.receipt(&c, &key).await.unwrap().is_some(), "{key}");
                assert_eq!(count(&*store, &identifier).await, Some(1), "{identifier}");
            }
        }
    }
    assert_eq!(count(&*store, "twice").await, Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A stored receipt whose ACK code cannot be read is an error, never replayed as an `AA`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_stored_ack_code_is_an_error_not_an_aa() {
    use ingest::hl7::Sink;
    let dir = std::env::temp_dir().join(format!("renkei-hl7-receipt-{}", uuid::Uuid::new_v4()));
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    let sink = StoreSink::new(store.clone(), Arc::new(R4Validator), &Hl7Config::default());
    let message = hl7v2::parse(
        b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A01|C1|P|2.5\rEVN||20260101\rPID|1||9^^^GENHOSP^MR\r",
    )
    .unwrap();
    let key = hl7v2::ack::IdempotencyKey::of(&message).unwrap();
    let mut garbled = receipt(&ingest::hl7::sink::receipt_key(&key));
    garbled.code = "ZZ".into();
    sink.commit_bundle(garbled, &bundle("c1"), &[])
        .await
        .unwrap();
    let looked_up = sink.stored_ack(&key).await;
    let Err(SinkError::Corrupt(why)) = &looked_up else {
        panic!("{looked_up:?}")
    };
    assert!(why.contains("'ZZ'"), "{why}");
    let _ = std::fs::remove_dir_all(&dir);
}
