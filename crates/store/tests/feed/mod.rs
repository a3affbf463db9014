//! The change feed's stories, on both backends: consumers see every change once and keep
//! their checkpoint across restarts, a failing handler gets its batch again, a restricted
//! caller is refused, and every change says which Patient compartments it touched (also for
//! changes written before the store recorded them).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use store::feed::ConsumeError;
use store::{
    AccessPolicy, Change, Consumer, ErrorKind, FeedPosition, Method, RequestContext, Store,
    StoreError,
};

use crate::support::TestStore;

fn ctx() -> RequestContext {
    RequestContext::system()
}

/// Polls before giving up on a change that should come (about a minute): on PostgreSQL the
/// feed holds back changes while an older transaction anywhere on the server is open (another
/// test's), so an empty poll does not mean that everything was delivered.
const PATIENCE: usize = 6000;

async fn wait() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Polls `consumer` until it has handled `want` changes; returns them in delivery order.
async fn consume(consumer: &Consumer, want: usize) -> Vec<Change> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut idle = 0;
    while seen.lock().unwrap().len() < want {
        let sink = seen.clone();
        let n = consumer
            .poll_once(|changes| async move {
                sink.lock().unwrap().extend(changes);
                Ok::<_, Infallible>(())
            })
            .await
            .unwrap();
        if n == 0 {
            idle += 1;
            assert!(
                idle < PATIENCE,
                "the feed delivered {} of {want} changes",
                seen.lock().unwrap().len()
            );
            wait().await;
        }
    }
    seen.lock().unwrap().clone()
}

/// One poll that must find nothing new.
async fn nothing_more(consumer: &Consumer) {
    let n = consumer
        .poll_once(|changes| async move {
            Err::<(), _>(std::io::Error::other(format!(
                "unexpected changes: {changes:?}"
            )))
        })
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// `(type, id, version, method)` of each change.
fn keys(changes: &[Change]) -> Vec<(String, String, u64, Method)> {
    changes
        .iter()
        .map(|c| (c.resource_type.clone(), c.id.clone(), c.version, c.method))
        .collect()
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "identifier": [{"system": "urn:feed", "value": id}]})
}

async fn put(s: &dyn Store, r: Value) -> (String, String, u64, Method) {
    let (ty, id) = (
        r["resourceType"].as_str().unwrap().to_owned(),
        r["id"].as_str().unwrap().to_owned(),
    );
    let out = s.update(&ctx(), &ty, &id, r, None).await.unwrap();
    let v = out.resource().expect("a version");
    (ty, id, v.version, v.method)
}

async fn delete(s: &dyn Store, ty: &str, id: &str) -> (String, String, u64, Method) {
    let out = s.delete(&ctx(), ty, id, None).await.unwrap();
    let v = out.resource().expect("a deletion");
    (ty.to_owned(), id.to_owned(), v.version, Method::Delete)
}

async fn a_consumer_sees_every_change_once(s: Arc<dyn Store>) {
    let st: &dyn Store = &*s;
    let mut want = Vec::new();
    for i in 0..5 {
        want.push(put(st, patient(&format!("once-{i}"))).await);
    }
    let mut changed = patient("once-1");
    changed["active"] = json!(true);
    want.push(put(st, changed).await);
    want.push(delete(st, "Patient", "once-2").await);

    // Batches of 3: the checkpoint moves three times, and each change comes once, in order.
    let consumer = Consumer::new(s.clone(), "suite").with_batch_size(3);
    assert_eq!(consumer.position().await.unwrap(), FeedPosition::START);
    let seen = consume(&consumer, want.len()).await;
    assert_eq!(keys(&seen), want);
    nothing_more(&consumer).await;
    let saved = st.checkpoint(&ctx(), "suite").await.unwrap();
    assert_eq!(saved, consumer.position().await.unwrap());
    assert_ne!(saved, FeedPosition::START);

    // Positions are per name: another consumer starts from the beginning.
    let other = Consumer::new(s.clone(), "another");
    assert_eq!(keys(&consume(&other, want.len()).await), want);

    // Later changes, and only they, come next.
    let more = vec![
        put(st, patient("once-5")).await,
        delete(st, "Patient", "once-0").await,
    ];
    assert_eq!(keys(&consume(&consumer, more.len()).await), more);
    nothing_more(&consumer).await;

    // The feed itself, read on from each batch's `next`: the same changes, once each.
    let mut all = want.clone();
    all.extend(more);
    let mut read = Vec::new();
    let mut at = FeedPosition::START;
    let mut idle = 0;
    while read.len() < all.len() {
        let batch = st.feed(&ctx(), &at, 2).await.unwrap();
        assert!(batch.changes.len() <= 2);
        if batch.changes.is_empty() {
            assert_eq!(batch.next, at);
            idle += 1;
            assert!(idle < PATIENCE, "the feed stopped at {at}");
            wait().await;
        }
        assert!(batch.changes.is_empty() || batch.next > at);
        at = batch.next;
        read.extend(batch.changes);
    }
    assert_eq!(keys(&read), all);
    // A position written as text reads back as the same place.
    assert_eq!(at.to_string().parse::<FeedPosition>().unwrap(), at);
    assert!(st.feed(&ctx(), &at, 10).await.unwrap().changes.is_empty());
}

async fn a_failing_handler_gets_its_batch_again(s: Arc<dyn Store>) {
    let st: &dyn Store = &*s;
    for i in 0..3 {
        put(st, patient(&format!("retry-{i}"))).await;
    }
    let consumer = Consumer::new(s.clone(), "flaky").with_batch_size(10);
    let failed = Arc::new(Mutex::new(Vec::new()));
    let mut idle = 0;
    loop {
        let sink = failed.clone();
        let result = consumer
            .poll_once(|changes| async move {
                sink.lock().unwrap().extend(changes);
                Err::<(), _>(std::io::Error::other("the handler's database is down"))
            })
            .await;
        match result {
            Err(ConsumeError::Handler(e)) => {
                assert!(e.to_string().contains("down"));
                break;
            }
            Ok(0) => {
                idle += 1;
                assert!(idle < PATIENCE, "no change came");
                wait().await;
            }
            other => panic!("{other:?}"),
        }
    }
    let failed = failed.lock().unwrap().clone();
    assert!(!failed.is_empty());
    // Nothing was acknowledged: the checkpoint did not move, and the same changes come again.
    assert_eq!(
        st.checkpoint(&ctx(), "flaky").await.unwrap(),
        FeedPosition::START
    );
    assert_eq!(consumer.position().await.unwrap(), FeedPosition::START);
    let again = consume(&consumer, 3).await;
    assert_eq!(keys(&again[..failed.len()]), keys(&failed));
    assert_eq!(again.len(), 3);
    nothing_more(&consumer).await;
}

async fn a_restricted_caller_may_not_read_the_feed(s: Arc<dyn Store>) {
    let st: &dyn Store = &*s;
    put(st, patient("restricted")).await;
    let restricted = ctx().with_access(AccessPolicy::patients(["restricted"]));
    let forbidden = |e: StoreError| {
        assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
        assert!(matches!(e, StoreError::Forbidden(_)));
    };
    forbidden(
        st.feed(&restricted, &FeedPosition::START, 10)
            .await
            .unwrap_err(),
    );
    forbidden(st.changes(&restricted, 0, 10).await.unwrap_err());
    forbidden(st.checkpoint(&restricted, "any").await.unwrap_err());
    forbidden(
        st.save_checkpoint(&restricted, "any", &FeedPosition::START)
            .await
            .unwrap_err(),
    );
    let consumer = Consumer::new(s.clone(), "any").with_context(restricted.clone());
    match consumer
        .poll_once(|_| async { Ok::<_, Infallible>(()) })
        .await
    {
        Err(ConsumeError::Store(e)) => forbidden(e),
        other => panic!("{other:?}"),
    }
    // The node's own work on that caller's behalf is not restricted.
    st.feed(&restricted.internal(), &FeedPosition::START, 10)
        .await
        .unwrap();
    // A consumer name is 1 to 200 bytes.
    let err = st.checkpoint(&ctx(), "").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

/// `(type, id, version, compartments)` of each change.
fn compartments(changes: &[Change]) -> Vec<(String, String, u64, Vec<String>)> {
    changes
        .iter()
        .map(|c| {
            (
                c.resource_type.clone(),
                c.id.clone(),
                c.version,
                c.compartments.clone(),
            )
        })
        .collect()
}

fn row(ty: &str, id: &str, version: u64, patients: &[&str]) -> (String, String, u64, Vec<String>) {
    (
        ty.into(),
        id.into(),
        version,
        patients.iter().map(|p| p.to_string()).collect(),
    )
}

fn observation(id: &str, subject: &str, performers: &[&str]) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"text": "weight"},
           "subject": {"reference": subject},
           "performer": performers.iter().map(|p| json!({"reference": p})).collect::<Vec<_>>()})
}

async fn changes_name_the_patient_compartments_they_touch(s: Arc<dyn Store>) {
    let st: &dyn Store = &*s;
    put(st, json!({"resourceType": "Patient", "id": "p"})).await;
    put(st, json!({"resourceType": "Patient", "id": "q"})).await;
    put(st, json!({"resourceType": "Practitioner", "id": "dr"})).await;
    // In p's compartment (the practitioner performer is no Patient).
    put(st, observation("o1", "Patient/p", &["Practitioner/dr"])).await;
    // In p's and q's (performer is a compartment parameter of Observation).
    put(st, observation("o2", "Patient/p", &["Patient/q"])).await;
    // Moved to q: the new version is in q's compartment only.
    put(st, observation("o1", "Patient/q", &["Practitioner/dr"])).await;
    // A deletion is in the compartments of the version it deleted.
    delete(st, "Observation", "o1").await;
    put(
        st,
        json!({"resourceType": "Patient", "id": "p", "active": true}),
    )
    .await;
    // A Patient is in its own compartment and in those of the Patients it links to.
    put(
        st,
        json!({"resourceType": "Patient", "id": "r",
               "link": [{"other": {"reference": "Patient/p"}, "type": "seealso"}]}),
    )
    .await;
    delete(st, "Patient", "p").await;
    // A Group is in its members' compartments; an Organization in none.
    put(
        st,
        json!({"resourceType": "Group", "id": "g", "type": "person", "actual": true,
               "member": [{"entity": {"reference": "Patient/q"}}]}),
    )
    .await;
    put(
        st,
        json!({"resourceType": "Organization", "id": "org", "name": "Clinic",
               "partOf": {"reference": "Organization/parent"}}),
    )
    .await;
    let want = vec![
        row("Patient", "p", 1, &["p"]),
        row("Patient", "q", 1, &["q"]),
        row("Practitioner", "dr", 1, &[]),
        row("Observation", "o1", 1, &["p"]),
        row("Observation", "o2", 1, &["p", "q"]),
        row("Observation", "o1", 2, &["q"]),
        row("Observation", "o1", 3, &["q"]),
        row("Patient", "p", 2, &["p"]),
        row("Patient", "r", 1, &["p", "r"]),
        row("Patient", "p", 3, &["p"]),
        row("Group", "g", 1, &["q"]),
        row("Organization", "org", 1, &[]),
    ];
    // The same on the naive reader and on the feed.
    let listed = st.changes(&ctx(), 0, 100).await.unwrap();
    assert_eq!(compartments(&listed), want);
    let consumer = Consumer::new(s.clone(), "compartments");
    assert_eq!(compartments(&consume(&consumer, want.len()).await), want);
}

/// A store written before compartments and transaction ids were recorded: its changes get the
/// compartments that are cheap to know (every version of a Patient; the current version of
/// every live resource, from its index rows) and sort before every change written since.
async fn an_older_stores_changes_get_compartments_and_come_first(t: &mut TestStore) {
    let st: &dyn Store = &*t.store.clone();
    put(st, json!({"resourceType": "Patient", "id": "p"})).await;
    put(
        st,
        json!({"resourceType": "Patient", "id": "p", "active": true}),
    )
    .await;
    put(st, json!({"resourceType": "Patient", "id": "q"})).await;
    put(st, observation("o", "Patient/p", &[])).await;
    put(st, observation("o", "Patient/q", &[])).await;
    put(st, observation("gone", "Patient/q", &[])).await;
    delete(st, "Observation", "gone").await;
    put(st, json!({"resourceType": "Practitioner", "id": "dr"})).await;
    downgrade(t).await;
    t.reopen().await;
    let st: &dyn Store = &*t.store.clone();
    let want = vec![
        row("Patient", "p", 1, &["p"]),
        row("Patient", "p", 2, &["p"]),
        row("Patient", "q", 1, &["q"]),
        // An older version: which Patients it named is no longer indexed.
        row("Observation", "o", 1, &[]),
        row("Observation", "o", 2, &["q"]),
        // Deleted: no index rows are left to tell.
        row("Observation", "gone", 1, &[]),
        row("Observation", "gone", 2, &[]),
        row("Practitioner", "dr", 1, &[]),
    ];
    let listed = st.changes(&ctx(), 0, 100).await.unwrap();
    assert_eq!(compartments(&listed), want);
    // A new change comes after every old one.
    put(st, observation("new", "Patient/p", &[])).await;
    let mut all = want;
    all.push(row("Observation", "new", 1, &["p"]));
    let consumer = Consumer::new(t.store.clone(), "upgraded");
    assert_eq!(compartments(&consume(&consumer, all.len()).await), all);
    nothing_more(&consumer).await;
}

/// Puts the store's schema back to what it was before the change-feed migration, keeping its
/// rows (the outbox without transaction ids, no compartments, no consumers), and without the
/// later security and exchange tables.
async fn downgrade(t: &TestStore) {
    if let Some(file) = t.sqlite_file() {
        let conn = rusqlite::Connection::open(file).unwrap();
        conn.execute_batch(
            "DROP TABLE change_compartment; DROP TABLE feed_consumer;
             DROP TABLE audit_log; DROP TABLE audit_ref; DROP TABLE audit_head;
             DROP TABLE auth_client; DROP TABLE auth_user; DROP TABLE auth_token;
             DROP TABLE exchange_node; DROP TABLE exchange_holding;
             DROP TABLE exchange_alias; DROP TABLE exchange_dispatch;
             DELETE FROM schema_migrations WHERE version >= 5;",
        )
        .unwrap();
        // Migration 9's numbered names back to text (its script numbers them again).
        for (table, columns) in [
            ("idx_string", "value_norm, value_exact"),
            ("idx_token", "system, code, display"),
            ("idx_reference", "target_type, target_id, url"),
            ("idx_date", "lo, hi"),
            ("idx_number", "value, lo, hi"),
            ("idx_quantity", "system, code, unit, value, lo, hi"),
            ("idx_uri", "uri"),
        ] {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} RENAME TO numbered;
                 CREATE TABLE {table} AS SELECT x.rid, x.n, t.name AS res_type, p.name AS param,
                     x.grp, {columns} FROM numbered x
                     JOIN search_name t ON t.id = x.res_type JOIN search_name p ON p.id = x.param;
                 DROP TABLE numbered;"
            ))
            .unwrap();
        }
        conn.execute_batch("DROP TABLE search_name").unwrap();
        let left: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(left, 4);
    } else {
        let schema = t.schema.as_deref().unwrap();
        let (client, conn) =
            tokio_postgres::connect(&crate::support::database_url(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "SET search_path = {schema};
                 DROP TABLE change_compartment; DROP TABLE feed_consumer;
                 ALTER TABLE outbox DROP COLUMN xid;
                 DROP TABLE audit_log; DROP TABLE audit_ref; DROP TABLE audit_head;
                 DROP FUNCTION audit_log_append_only();
                 DROP TABLE auth_client; DROP TABLE auth_user; DROP TABLE auth_token;
                 DROP TABLE exchange_node; DROP TABLE exchange_holding;
                 DROP TABLE exchange_alias; DROP TABLE exchange_dispatch;
                 DELETE FROM schema_migrations WHERE version >= 4;"
            ))
            .await
            .unwrap();
    }
}

async fn a_checkpoint_survives_reopening_the_store(t: &mut TestStore) {
    let st: &dyn Store = &*t.store.clone();
    let mut first = Vec::new();
    for i in 0..3 {
        first.push(put(st, patient(&format!("durable-{i}"))).await);
    }
    let consumer = Consumer::new(t.store.clone(), "durable").with_batch_size(2);
    assert_eq!(keys(&consume(&consumer, first.len()).await), first);
    let position = consumer.position().await.unwrap();
    drop(consumer);
    t.reopen().await;
    let st: &dyn Store = &*t.store.clone();
    assert_eq!(st.checkpoint(&ctx(), "durable").await.unwrap(), position);
    let more = vec![
        put(st, patient("durable-3")).await,
        delete(st, "Patient", "durable-0").await,
    ];
    let consumer = Consumer::new(t.store.clone(), "durable");
    assert_eq!(keys(&consume(&consumer, more.len()).await), more);
    nothing_more(&consumer).await;
}

suite!(
    a_consumer_sees_every_change_once,
    a_failing_handler_gets_its_batch_again,
    a_restricted_caller_may_not_read_the_feed,
);

fhir_suite!(changes_name_the_patient_compartments_they_touch);

/// Stories that open their store again (as a restarted process would).
macro_rules! reopening_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_reopened {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut t = crate::support::sqlite_with(crate::support::fhir_extractor());
                    super::$name(&mut t).await;
                }
            )*
        }
        mod postgres_reopened {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let mut t =
                        crate::support::postgres_with(crate::support::fhir_extractor()).await;
                    super::$name(&mut t).await;
                }
            )*
        }
    };
}

reopening_suite!(
    a_checkpoint_survives_reopening_the_store,
    an_older_stores_changes_get_compartments_and_come_first,
);
