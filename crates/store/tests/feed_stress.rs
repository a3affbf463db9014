//! PostgreSQL: a consumer of the change feed never misses a change, although transactions
//! commit out of `seq` order, and keeps its place when it is killed and started again.
//!
//! Each run, on one fresh schema of the real server:
//! - writers go through the `Store` API (single writes and three-entry transactions);
//! - laggards make store writes commit late: a raw transaction inserts the `resource` row the
//!   store's create of a new id will need and keeps it uncommitted, so the store's statement
//!   takes its `seq` (and its transaction id) and then waits on the unique key until the raw
//!   transaction rolls back, while other writers commit larger `seq`s;
//! - holders are raw transactions that insert a change row (taking a `seq`), wait, and then
//!   commit or roll back;
//! - one witnessed late write per run is released only after the naive reader (`changes`,
//!   `seq > after`) has read past a `seq` committed after it, so that reader provably misses
//!   it;
//! - a consumer polls throughout; it is killed (its task aborted, mid-batch or not) once it
//!   has handled some changes, and a new one of the same name resumes from the checkpoint.
//!
//! At the end of each run every committed change row must have reached the consumer, and
//! nothing else (changes of rolled-back transactions never do); duplicates (redeliveries after
//! the kill) are allowed and removed by `seq`. The naive reader must have missed the witnessed
//! change.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use store::{BasicExtractor, Consumer, Outcome, RequestContext, Store, WriteEntry, WriteOp};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

const RUNS: u64 = 20;
const WRITERS: usize = 3;
/// Store writes per writer per run (every third writer writes three-entry transactions).
const WRITES: usize = 12;
const LAGGARDS: usize = 3;
const LATE_WRITES: usize = 3;
const HOLDERS: usize = 2;
const HELD: usize = 3;
/// The consumer's batch size: small, so that a run takes many batches and checkpoints.
const BATCH: usize = 7;
/// How long the test waits for something that must happen before it gives up: generous, as
/// it only bounds a failure (the feed waits for every older transaction on the server, other
/// tests' included).
const PATIENCE: Duration = Duration::from_secs(180);

/// A wait for something that must happen, bounded by [`PATIENCE`].
struct Patience(Instant);

impl Patience {
    fn new() -> Self {
        Patience(Instant::now() + PATIENCE)
    }

    /// Sleeps a little; past the bound, fails with `what` and the transactions open on the
    /// server (what holds the feed back).
    async fn wait(&self, what: impl FnOnce() -> String) {
        if Instant::now() > self.0 {
            panic!(
                "{} (gave up after {PATIENCE:?}); transactions open on the server: {}",
                what(),
                open_transactions().await
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn open_transactions() -> String {
    let (client, conn) = tokio_postgres::connect(&support::database_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT pid, datname::text, backend_xid::text, (now() - xact_start)::text, state, \
             left(query, 80) FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
             ORDER BY xact_start",
            &[],
        )
        .await
        .expect("pg_stat_activity");
    let open: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "[pid {} db {:?} xid {:?} for {:?} {:?}: {:?}]",
                r.get::<_, i32>(0),
                r.get::<_, Option<String>>(1),
                r.get::<_, Option<String>>(2),
                r.get::<_, Option<String>>(3),
                r.get::<_, Option<String>>(4),
                r.get::<_, Option<String>>(5)
            )
        })
        .collect();
    open.join(" ")
}

fn ctx() -> RequestContext {
    RequestContext::system()
}

fn patient(id: &str, active: bool) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": active})
}

/// A small deterministic generator (xorshift64*), one per task, seeded by run and task.
struct Rng(u64);

impl Rng {
    fn new(run: u64, task: u64) -> Self {
        Rng((run + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    async fn pause(&mut self, max_ms: u64) {
        tokio::time::sleep(Duration::from_millis(self.below(max_ms + 1))).await;
    }
}

/// A connection of its own on the test schema, outside the store's pool.
async fn raw(schema: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(&support::database_url(), NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .unwrap();
    client
}

/// The `seq` of every committed change row.
async fn committed(client: &Client) -> BTreeSet<i64> {
    client
        .query("SELECT seq FROM outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A store write of `Patient/id` (a new id) that takes its `seq` now and commits only after
/// `release` resolves: `raw` holds the unique key the write needs in an open transaction,
/// waits until the store's statement is blocked on it, awaits `release`, and rolls back.
async fn late_write<F: Future<Output = ()>>(
    store: Arc<dyn Store>,
    raw: &Client,
    id: &str,
    release: impl FnOnce() -> F,
) {
    raw.batch_execute("BEGIN").await.unwrap();
    raw.execute(
        "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted) \
         VALUES ('Patient', $1, 0, 0, 0, false)",
        &[&id],
    )
    .await
    .unwrap();
    let xid: String = raw
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .unwrap()
        .get(0);
    let write = {
        let id = id.to_owned();
        tokio::spawn(async move {
            store
                .update(&ctx(), "Patient", &id, patient(&id, true), None)
                .await
        })
    };
    let patience = Patience::new();
    loop {
        let waiting: bool = raw
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' \
                 AND transactionid::text = $1 AND NOT granted)",
                &[&xid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        assert!(
            !write.is_finished(),
            "the store's write of {id} ended without waiting: {:?}",
            write.await
        );
        patience
            .wait(|| format!("the store's write never waited on {id}"))
            .await;
    }
    release().await;
    raw.batch_execute("ROLLBACK").await.unwrap();
    let outcome = write.await.unwrap().unwrap();
    assert!(matches!(outcome, Outcome::Created(_)), "{outcome:?}");
}

/// A consumer named `stress` polling until aborted; every `seq` it handles goes to `handled`.
fn spawn_consumer(store: Arc<dyn Store>, handled: Arc<Mutex<Vec<i64>>>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let consumer = Consumer::new(store, "stress").with_batch_size(BATCH);
        loop {
            let sink = handled.clone();
            let n = consumer
                .poll_once(|changes| async move {
                    // A point where the kill can land between handling and the checkpoint.
                    tokio::task::yield_now().await;
                    sink.lock().unwrap().extend(changes.iter().map(|c| c.seq));
                    Ok::<_, Infallible>(())
                })
                .await
                .expect("poll");
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}

/// The naive reader: `changes` after the largest `seq` it has read, until aborted. `after`
/// shows how far it got; every `seq` it read goes to `read`.
fn spawn_naive(
    store: Arc<dyn Store>,
    after: Arc<AtomicI64>,
    read: Arc<Mutex<BTreeSet<i64>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let from = after.load(Ordering::SeqCst);
            let changes = store.changes(&ctx(), from, 50).await.expect("changes");
            match changes.last() {
                Some(last) => {
                    read.lock().unwrap().extend(changes.iter().map(|c| c.seq));
                    after.store(last.seq, Ordering::SeqCst);
                }
                None => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
}

async fn writer(store: Arc<dyn Store>, run: u64, w: usize) {
    let mut rng = Rng::new(run, w as u64);
    let mut live: Vec<String> = Vec::new();
    for j in 0..WRITES {
        let id = format!("w{w}-{run}-{j}");
        if w % 3 == 2 {
            // Three versions in one transaction: one transaction id, three `seq`s.
            let entries = (0..3)
                .map(|k| {
                    let id = format!("{id}-{k}");
                    WriteEntry::new(WriteOp::Update {
                        resource_type: "Patient".into(),
                        id: id.clone(),
                        resource: patient(&id, false),
                        if_match: None,
                    })
                })
                .collect();
            store.transaction(&ctx(), entries).await.unwrap();
        } else if j % 4 == 3 && !live.is_empty() {
            let victim = live.remove(rng.below(live.len() as u64) as usize);
            store
                .delete(&ctx(), "Patient", &victim, None)
                .await
                .unwrap();
        } else if j % 4 == 2 && !live.is_empty() {
            let again = live[rng.below(live.len() as u64) as usize].clone();
            store
                .update(&ctx(), "Patient", &again, patient(&again, j % 2 == 0), None)
                .await
                .unwrap();
        } else {
            store
                .update(&ctx(), "Patient", &id, patient(&id, false), None)
                .await
                .unwrap();
            live.push(id);
        }
        rng.pause(2).await;
    }
}

async fn laggard(store: Arc<dyn Store>, raw: Client, run: u64, l: usize) {
    let mut rng = Rng::new(run, 100 + l as u64);
    for k in 0..LATE_WRITES {
        let hold = rng.below(15) + 1;
        late_write(store.clone(), &raw, &format!("late{l}-{run}-{k}"), || {
            tokio::time::sleep(Duration::from_millis(hold))
        })
        .await;
        rng.pause(3).await;
    }
}

/// Raw transactions that take a change row's `seq`, wait, then commit (or, one in four, roll
/// back: such a row must never reach a consumer).
async fn holder(raw: Client, run: u64, h: usize) {
    let mut rng = Rng::new(run, 200 + h as u64);
    for k in 0..HELD {
        raw.batch_execute("BEGIN").await.unwrap();
        raw.execute(
            "INSERT INTO outbox (version_seq, res_type, res_id, version, method, request_id) \
             VALUES (0, 'Basic', $1, 1, 'POST', 'held')",
            &[&format!("held{h}-{run}-{k}")],
        )
        .await
        .unwrap();
        rng.pause(15).await;
        let end = if rng.below(4) == 0 {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        raw.batch_execute(end).await.unwrap();
        rng.pause(3).await;
    }
}

/// The witnessed late write: released only once a later write has committed and the naive
/// reader has read past it.
async fn witnessed(store: Arc<dyn Store>, raw: Client, run: u64, naive_after: Arc<AtomicI64>) {
    let id = format!("witness-{run}");
    let store2 = store.clone();
    let raw2 = &raw;
    late_write(store, &raw, &id, || async move {
        let later = format!("after-witness-{run}");
        store2
            .update(&ctx(), "Patient", &later, patient(&later, false), None)
            .await
            .unwrap();
        // `raw` is inside its transaction; that does not hide a committed row.
        let later_seq: i64 = raw2
            .query_one(
                "SELECT seq FROM outbox WHERE res_type = 'Patient' AND res_id = $1",
                &[&later],
            )
            .await
            .unwrap()
            .get(0);
        let patience = Patience::new();
        while naive_after.load(Ordering::SeqCst) < later_seq {
            patience
                .wait(|| format!("the naive reader never got past {later_seq}"))
                .await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_never_skips_a_change_that_commits_late() {
    let t = support::postgres_sized(Arc::new(BasicExtractor), 16).await;
    let schema = t.schema.clone().unwrap();
    let check = raw(&schema).await;
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (mut redelivered, mut naive_missed) = (0, 0);
    for run in 0..RUNS {
        let mut rng = Rng::new(run, 999);
        let mut consumer = spawn_consumer(t.store.clone(), handled.clone());
        let naive_after = Arc::new(AtomicI64::new(
            committed(&check).await.last().copied().unwrap_or(0),
        ));
        let naive_read: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
        let naive = spawn_naive(t.store.clone(), naive_after.clone(), naive_read.clone());
        let naive_from = naive_after.load(Ordering::SeqCst);

        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        for w in 0..WRITERS {
            tasks.push(tokio::spawn(writer(t.store.clone(), run, w)));
        }
        for l in 0..LAGGARDS {
            let raw = raw(&schema).await;
            tasks.push(tokio::spawn(laggard(t.store.clone(), raw, run, l)));
        }
        for h in 0..HOLDERS {
            let raw = raw(&schema).await;
            tasks.push(tokio::spawn(holder(raw, run, h)));
        }
        let raw_w = raw(&schema).await;
        tasks.push(tokio::spawn(witnessed(
            t.store.clone(),
            raw_w,
            run,
            naive_after.clone(),
        )));

        // Kill the consumer once it has handled a few of this run's changes, and start
        // another from its checkpoint.
        let start = handled.lock().unwrap().len();
        let threshold = 1 + rng.below(20) as usize;
        let patience = Patience::new();
        while handled.lock().unwrap().len() < start + threshold {
            patience
                .wait(|| format!("run {run}: the consumer handled nothing"))
                .await;
        }
        consumer.abort();
        assert!(consumer.await.unwrap_err().is_cancelled());
        consumer = spawn_consumer(t.store.clone(), handled.clone());

        for task in tasks {
            task.await.unwrap();
        }
        let want = committed(&check).await;
        let patience = Patience::new();
        loop {
            let seen: BTreeSet<i64> = handled.lock().unwrap().iter().copied().collect();
            if want.is_subset(&seen) {
                assert_eq!(seen, want, "run {run}: changes that were never committed");
                break;
            }
            patience
                .wait(|| {
                    format!(
                        "run {run}: the consumer misses {:?}",
                        want.difference(&seen).collect::<Vec<_>>()
                    )
                })
                .await;
        }
        consumer.abort();
        let _ = consumer.await;

        // Everything is committed now: let the naive reader catch up, then count what it
        // skipped.
        let last = *want.last().unwrap();
        let patience = Patience::new();
        while naive_after.load(Ordering::SeqCst) < last {
            patience
                .wait(|| format!("run {run}: the naive reader stopped"))
                .await;
        }
        naive.abort();
        let _ = naive.await;
        let naive_read = naive_read.lock().unwrap().clone();
        let missed: Vec<i64> = want
            .range(naive_from + 1..)
            .filter(|seq| !naive_read.contains(seq))
            .copied()
            .collect();
        assert!(
            !missed.is_empty(),
            "run {run}: the naive reader missed nothing, so the run forced no late commit"
        );
        naive_missed += missed.len();
        let handled = handled.lock().unwrap();
        redelivered = handled.len() - handled.iter().collect::<BTreeSet<_>>().len();
    }
    let total = committed(&check).await.len();
    eprintln!(
        "{RUNS} runs: {total} changes, all delivered; {redelivered} redelivered after kills; \
         the naive reader missed {naive_missed}"
    );
}

/// An open transaction anywhere on the server holds the feed back, even for changes committed
/// after it began; `feed_pending` hands those over at once (of one type, without moving the
/// reader's position), which is what a decision under the EMPI's lock needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_changes_are_read_past_an_open_transaction() {
    let t = support::postgres_sized(Arc::new(BasicExtractor), 4).await;
    let schema = t.schema.clone().unwrap();
    let s = t.store.clone();
    s.update(&ctx(), "Patient", "before", patient("before", true), None)
        .await
        .unwrap();
    // Other tests' transactions on the server hold the feed back for a while too.
    let start = feed_at_least(s.as_ref(), &store::FeedPosition::START, 1).await;
    assert_eq!(start.changes.len(), 1);
    // A transaction with an id, left open: the feed's horizon stops below it.
    let holder = raw(&schema).await;
    holder
        .batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    s.update(&ctx(), "Patient", "before", patient("before", false), None)
        .await
        .unwrap();
    s.create(
        &ctx(),
        json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "x"}}),
    )
    .await
    .unwrap();
    let held = s.feed(&ctx(), &start.next, 100).await.unwrap();
    assert!(held.changes.is_empty(), "{:?}", held.changes);
    assert_eq!(held.next, start.next);
    let pending = s
        .feed_pending(&ctx(), &start.next, "Patient", 100)
        .await
        .unwrap();
    let got: Vec<(String, u64)> = pending
        .changes
        .iter()
        .map(|c| (c.resource_type.clone(), c.version))
        .collect();
    assert_eq!(got, vec![("Patient".to_owned(), 2)]);
    // Paging on from the pending batch's own position ends.
    let more = s
        .feed_pending(&ctx(), &pending.next, "Patient", 100)
        .await
        .unwrap();
    assert!(more.changes.is_empty());
    // Once the holder ends, the feed delivers both, in order.
    holder.batch_execute("ROLLBACK").await.unwrap();
    let after = feed_at_least(s.as_ref(), &start.next, 2).await;
    let types: Vec<&str> = after
        .changes
        .iter()
        .map(|c| c.resource_type.as_str())
        .collect();
    assert_eq!(types, ["Patient", "Observation"]);
    // A restricted caller is refused.
    let restricted = ctx().with_access(store::AccessPolicy::patients(["before"]));
    assert!(
        s.feed_pending(&restricted, &start.next, "Patient", 1)
            .await
            .is_err()
    );
}

/// The feed after `after` once it delivers at least `n` changes (other tests' transactions
/// may hold it back for a while), bounded by [`PATIENCE`].
async fn feed_at_least(s: &dyn Store, after: &store::FeedPosition, n: usize) -> store::FeedBatch {
    let patience = Patience::new();
    loop {
        let batch = s.feed(&ctx(), after, 100).await.unwrap();
        if batch.changes.len() >= n {
            return batch;
        }
        patience
            .wait(|| "the feed to deliver what was committed".to_owned())
            .await;
    }
}
