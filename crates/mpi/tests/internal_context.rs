//! Which context the EMPI's reads carry. A restricted caller's Patient write or manual
//! decision is planned on reads made with the request's internal context (unrestricted,
//! still the requester's id and actor), so that what the caller may see never changes a
//! linking decision; the caller's own unit of work commits with the caller's context; and
//! what goes back to the caller (the review queue) is read with the caller's context.
//!
//! The store underneath is a real SQLite store behind a wrapper that records the context of
//! every call.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mpi::Mpi;
use serde_json::{Value, json};
use store::{
    AccessPolicy, Actor, FhirIndexExtractor, HistoryPage, HistoryQuery, IndexExtractor, KeyedWrite,
    Outcome, Receipt, RequestContext, SearchPage, SearchQuery, SqliteStore, Store, StoreError,
    StoredResource, WriteEntry, WriteOp,
};

/// The SQLite store, recording each call's name and context.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Store>,
    calls: Mutex<Vec<(&'static str, RequestContext)>>,
    /// Held by a test to keep feed reads waiting (a slow start-up load).
    feed_gate: tokio::sync::Mutex<()>,
}

impl Recording {
    fn note(&self, call: &'static str, ctx: &RequestContext) {
        self.calls.lock().unwrap().push((call, ctx.clone()));
    }

    fn take(&self) -> Vec<(&'static str, RequestContext)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl Store for Recording {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn extractor(&self) -> &dyn IndexExtractor {
        self.inner.extractor()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }

    async fn load(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.note("load", ctx);
        self.inner.load(ctx, resource_type, id).await
    }

    async fn load_version(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.note("load_version", ctx);
        self.inner
            .load_version(ctx, resource_type, id, version)
            .await
    }

    async fn history(
        &self,
        ctx: &RequestContext,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.note("history", ctx);
        self.inner.history(ctx, q).await
    }

    async fn search(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        self.note("search", ctx);
        self.inner.search(ctx, q).await
    }

    async fn matching_ids(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        self.note("matching_ids", ctx);
        self.inner.matching_ids(ctx, q, limit).await
    }

    async fn explain(&self, ctx: &RequestContext, q: &SearchQuery) -> Result<String, StoreError> {
        self.inner.explain(ctx, q).await
    }

    async fn transaction(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.note("transaction", ctx);
        self.inner.transaction(ctx, entries).await
    }

    async fn batch(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        self.note("batch", ctx);
        self.inner.batch(ctx, entries).await
    }

    async fn receipt(
        &self,
        ctx: &RequestContext,
        key: &str,
    ) -> Result<Option<Receipt>, StoreError> {
        self.inner.receipt(ctx, key).await
    }

    async fn commit_keyed(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<Vec<Result<Vec<Outcome>, StoreError>>, StoreError> {
        self.note("commit_keyed", ctx);
        self.inner.commit_keyed(ctx, units).await
    }

    async fn changes(
        &self,
        ctx: &RequestContext,
        after: i64,
        limit: usize,
    ) -> Result<Vec<store::Change>, StoreError> {
        self.note("changes", ctx);
        self.inner.changes(ctx, after, limit).await
    }

    async fn feed(
        &self,
        ctx: &RequestContext,
        after: &store::FeedPosition,
        limit: usize,
    ) -> Result<store::FeedBatch, StoreError> {
        self.note("feed", ctx);
        let _open = self.feed_gate.lock().await;
        self.inner.feed(ctx, after, limit).await
    }

    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
    ) -> Result<store::FeedPosition, StoreError> {
        self.note("checkpoint", ctx);
        self.inner.checkpoint(ctx, consumer).await
    }

    async fn feed_pending(
        &self,
        ctx: &RequestContext,
        after: &store::FeedPosition,
        resource_type: &str,
        limit: usize,
    ) -> Result<store::FeedBatch, StoreError> {
        self.note("feed_pending", ctx);
        self.inner
            .feed_pending(ctx, after, resource_type, limit)
            .await
    }

    async fn save_checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
        position: &store::FeedPosition,
    ) -> Result<(), StoreError> {
        self.note("save_checkpoint", ctx);
        self.inner.save_checkpoint(ctx, consumer, position).await
    }

    async fn lock_exclusive(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<store::ExclusiveLock, StoreError> {
        self.note("lock_exclusive", ctx);
        self.inner.lock_exclusive(ctx, name).await
    }
}

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "name": [{"family": family, "given": ["Hanako"]}],
           "birthDate": "1980-01-02", "gender": "female"})
}

fn put(p: Value) -> Vec<WriteEntry> {
    vec![WriteEntry::new(WriteOp::Update {
        resource_type: "Patient".into(),
        id: p["id"].as_str().unwrap().to_owned(),
        resource: p,
        if_match: None,
    })]
}

/// The reads of `calls` (everything but the writes).
fn reads(calls: &[(&'static str, RequestContext)]) -> Vec<(&'static str, RequestContext)> {
    calls
        .iter()
        .filter(|(name, _)| !matches!(*name, "transaction" | "batch" | "commit_keyed"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn linking_reads_with_the_internal_context_and_answers_with_the_callers() {
    let dir = std::env::temp_dir().join(format!("renkei-mpi-ctx-{}", uuid::Uuid::new_v4()));
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    let recording = Arc::new(Recording {
        inner: sqlite,
        calls: Mutex::new(Vec::new()),
        feed_gate: tokio::sync::Mutex::new(()),
    });
    let mpi = Arc::new(Mpi::with_defaults(recording.clone()));
    let linked = mpi.linked_store();
    let system = RequestContext::system();
    linked
        .transaction(&system, put(patient("a", "Yamada")))
        .await
        .unwrap();
    recording.take();

    // A caller who may not see Patient a (the EMPI's candidate); it writes Patient b, inside
    // its own records (a restricted write must land there).
    let mut restricted = RequestContext::system()
        .with_request_id("req-restricted")
        .with_access(AccessPolicy::patients(["someone-else", "b"]));
    restricted.actor = Actor::User("nurse".into());
    let is_internal_of_caller = |ctx: &RequestContext| {
        ctx.internal
            && ctx.access == AccessPolicy::Unrestricted
            && ctx.request_id == "req-restricted"
            && ctx.actor == Actor::User("nurse".into())
    };

    // A Patient write: planned on internal reads, committed with the caller's context.
    linked
        .transaction(&restricted, put(patient("b", "Yamada")))
        .await
        .unwrap();
    let calls = recording.take();
    assert!(!reads(&calls).is_empty(), "{calls:?}");
    for (name, ctx) in reads(&calls) {
        assert!(is_internal_of_caller(&ctx), "{name}: {ctx:?}");
    }
    let commits: Vec<_> = calls.iter().filter(|(n, _)| *n == "transaction").collect();
    assert_eq!(commits.len(), 1, "{calls:?}");
    assert_eq!(commits[0].1, restricted);
    // Linked, whatever the caller may see.
    assert!(mpi.identity_of(&restricted, "b").await.unwrap().is_some());
    recording.take();

    // A manual decision: planned and committed by the EMPI itself, for the caller.
    mpi.unlink(&restricted, "b", "not the same person")
        .await
        .unwrap();
    let calls = recording.take();
    assert!(calls.iter().any(|(n, _)| *n == "transaction"), "{calls:?}");
    for (name, ctx) in &calls {
        assert!(is_internal_of_caller(ctx), "{name}: {ctx:?}");
    }

    // What goes back to the caller is read with the caller's context.
    mpi.review_queue(&restricted, 10).await.unwrap();
    let calls = recording.take();
    let searches: Vec<_> = calls.iter().filter(|(n, _)| *n == "search").collect();
    assert_eq!(searches.len(), 1, "{calls:?}");
    assert_eq!(searches[0].1, restricted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the index loads at start-up, what needs it fails at once with `Unavailable` (the
/// server's 503 with `Retry-After`), never waits behind the load; once loaded, it answers.
#[tokio::test]
async fn calls_that_need_the_index_fail_fast_while_it_loads() {
    let dir = std::env::temp_dir().join(format!("renkei-mpi-load-{}", uuid::Uuid::new_v4()));
    let inner: Arc<dyn Store> =
        Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
    let recording = Arc::new(Recording {
        inner,
        calls: Mutex::new(Vec::new()),
        feed_gate: tokio::sync::Mutex::new(()),
    });
    let system = RequestContext::system();
    Arc::new(Mpi::with_defaults(recording.clone()))
        .linked_store()
        .transaction(&system, put(patient("a", "Yamada")))
        .await
        .unwrap();

    // A new process on the same store: its load waits on the (held) feed.
    let mpi = Arc::new(Mpi::with_defaults(recording.clone()));
    let held = recording.feed_gate.lock().await;
    let loading = mpi.start_loading();
    assert!(!mpi.is_ready());
    let err = mpi
        .find(&system, &patient("x", "Yamada"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, mpi::MatchError::Store(StoreError::Unavailable(_))),
        "{err:?}"
    );
    let err = mpi
        .linked_store()
        .transaction(&system, put(patient("b", "Yamada")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), store::ErrorKind::Unavailable, "{err}");

    drop(held);
    assert_eq!(loading.await.unwrap().unwrap(), 1);
    assert!(mpi.is_ready());
    let found = mpi.find(&system, &patient("x", "Yamada")).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
