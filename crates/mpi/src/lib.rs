//! The master patient index as a service over the store: every source Patient belongs to
//! exactly one enterprise identity, persisted as a golden `Patient` (tagged golden, one
//! `Patient.link` per source with how and why it was linked).
//!
//! # What it owns
//! - [`Mpi`] holds the store underneath the linking layer and the matcher (an
//!   [`empi::EnterpriseIndex`] cached from the store's change feed), and runs the operations
//!   on them: `$match` candidates ([`Mpi::find`]), manual link / unlink / merge / unmerge
//!   (sticky, audited with an `AuditEvent` in the same transaction, closing the review `Task`s
//!   they settle), the review queue, the backlog of Patients written before linking was on,
//!   and the PIXm identifier cross-reference ([`Mpi::pix`]). The EMPI writes its own decisions
//!   through the store it holds.
//! - [`EmpiStore`] wraps that store so that every Patient write (REST, transactions, import,
//!   HL7 v2) commits with its link decision and golden-record writes.
//!
//! # What it must not do
//! Speak a protocol: no HTTP status, no OperationOutcome, no HL7 ACK. Its errors are typed
//! ([`ManualError`], [`MatchError`], `store::StoreError`); the web crate maps them to HTTP, the
//! CLI to exit codes. It depends on no web framework and on no HL7 v2 crate. The matching
//! itself (normalisation, scoring, golden-record composition) is the pure `empi` crate's.
//!
//! # Reads it makes for itself
//! The reads behind a decision (planning a link, the cache's refresh from the change feed)
//! use the request's [`RequestContext::internal`] context: unrestricted, still attributed to
//! the requester, so that a restricted caller can never change what a linking decision sees.
//! What goes back to the caller (the review queue, PIXm answers, golden records after a
//! decision) is read with the caller's own context.
//!
//! # Review queue
//! Probable-but-uncertain matches get an identity of their own for now and a `Task`
//! (`code` = `https://renkei.dev/fhir/CodeSystem/empi|review`, `status` = `requested`) listing
//! the candidate identities, each once, with scores and explanations: the review queue. Each
//! candidate is also a `meta.tag` of the task (`resources::CANDIDATE_TAG_SYSTEM`), so that when
//! a unit of work retires an identity (merged away, or left without sources) the open tasks
//! naming it are found by one indexed search and lose it (or get its survivor); a task left
//! without a live candidate is cancelled with the reason.
//!
//! One decision at a time, across processes: a decision takes the cache for writing in its own
//! process, then the store's [`LINKING_LOCK`] (a PostgreSQL advisory lock, so that servers
//! and `renkei empi` commands on one database take turns; on SQLite a file lock beside the
//! database, although one SQLite file has one writing process), then brings the cache up to
//! date from the change feed, including the Patient changes the feed still holds back
//! ([`Store::feed_pending`]), and keeps both
//! locks until its commit is applied to the cache. Several `renkei serve` on one PostgreSQL
//! database therefore decide as one would.

mod cache;
mod linker;
mod manual;
mod pipeline;
mod plan;
pub mod resources;
mod snapshot;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use empi::golden::Survivorship;
use empi::{Candidate, EnterpriseId, EnterpriseIndex, IndexConfig, MatchClass, Model, Record};
use serde_json::Value;
use store::{RequestContext, SearchQuery, Store, StoreError};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use linker::EmpiStore;
pub use manual::{ManualError, PixAnswer};
pub use resources::{EMPI_SYSTEM, REVIEW_CODE};
pub use snapshot::SnapshotError;

use cache::Cache;
use plan::Planner;

/// One scored candidate for `$match`.
#[derive(Debug, Clone)]
pub struct Match {
    /// The stored Patient's id.
    pub id: String,
    /// Posterior match probability (`Bundle.entry.search.score`).
    pub probability: f64,
    /// `certain`, `probable` or `possible` (the match-grade extension).
    pub grade: &'static str,
    /// Score and per-field explanation (JSON text).
    pub explanation: String,
}

/// Why a match could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// The input Patient cannot be matched.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The name of the store lock every process takes to make a linking decision.
pub const LINKING_LOCK: &str = "empi-linking";

/// The cache locked for a decision: in this process (written) and across processes. The
/// shared lock is declared first so that it is released first.
pub(crate) struct Locked<'a> {
    shared: Option<store::ExclusiveLock>,
    cache: RwLockWriteGuard<'a, Cache>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Cache;
    fn deref(&self) -> &Cache {
        &self.cache
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Cache {
        &mut self.cache
    }
}

/// The patient index of one node, over the store underneath the linking layer.
#[derive(Debug)]
pub struct Mpi {
    /// The store the EMPI reads and writes its own decisions through (not linked again).
    store: Arc<dyn Store>,
    survivorship: Survivorship,
    linking: bool,
    /// Read by any number of lookups at once (`$match`, listings); written by one decision
    /// at a time, and by a refresh from the change feed.
    cache: RwLock<Cache>,
    /// The index is being loaded at start-up ([`Mpi::start_loading`]): what needs it answers
    /// [`StoreError::Unavailable`] at once instead of waiting behind the load.
    loading: AtomicBool,
    /// Where the index's persisted copy lives ([`Mpi::with_snapshot`]).
    snapshot: Option<PathBuf>,
    /// The copy was tried (it is read once, by the first load).
    snapshot_tried: AtomicBool,
    /// Callers of this process waiting for `cache` now: a holder that keeps it across many
    /// decisions (an import's pipeline) lets go when there are any ([`Mpi::lock_wanted`]).
    waiting: AtomicUsize,
}

/// Counts a caller in [`Mpi::waiting`] for as long as it lives (a cancelled wait included).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Mpi {
    /// An index over `store` scoring with `model`. With `linking` off Patient writes are not
    /// linked ([`Mpi::linked_store`] is `store` itself): `$match` still works, golden records
    /// and manual operations do not exist.
    pub fn new(
        store: Arc<dyn Store>,
        model: Model,
        survivorship: Survivorship,
        linking: bool,
    ) -> Self {
        Mpi {
            store,
            survivorship,
            linking,
            cache: RwLock::new(Cache::new(EnterpriseIndex::new(
                model,
                IndexConfig::default(),
            ))),
            loading: AtomicBool::new(false),
            snapshot: None,
            snapshot_tried: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Keeps a persisted copy of the index at `path` (the embedded store's data directory):
    /// the first load reads it and follows the change feed from where it stands, instead of
    /// reading every Patient from the feed; [`Mpi::save_snapshot`] writes it. A copy that is
    /// missing, stale, unreadable or of another store only costs the full load (the store is
    /// the truth; see the `snapshot` module).
    pub fn with_snapshot(mut self, path: PathBuf) -> Self {
        self.snapshot = Some(path);
        self
    }

    /// The cache for reading, counted in [`Mpi::waiting`] while it waits.
    async fn read_cache(&self) -> RwLockReadGuard<'_, Cache> {
        let _waiting = Waiting::new(&self.waiting);
        self.cache.read().await
    }

    /// The cache for writing, counted in [`Mpi::waiting`] while it waits.
    async fn write_cache(&self) -> RwLockWriteGuard<'_, Cache> {
        let _waiting = Waiting::new(&self.waiting);
        self.cache.write().await
    }

    /// Whether anyone waits for the decision lock `locked` holds: a caller of this process
    /// for the cache, or another process (or connection) for the store's [`LINKING_LOCK`].
    /// An error asking the store counts as wanted, so that the holder lets go.
    pub(crate) async fn lock_wanted(&self, locked: &Locked<'_>) -> bool {
        if self.waiting.load(Ordering::Acquire) > 0 {
            return true;
        }
        match &locked.shared {
            Some(shared) => shared.wanted().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not ask whether the linking lock is wanted");
                true
            }),
            None => false,
        }
    }

    /// Brings the cache up to date from the change feed; the first time, from the persisted
    /// copy when there is a usable one.
    async fn refresh(&self, cache: &mut Cache, ctx: &RequestContext) -> Result<(), StoreError> {
        if let Some(path) = &self.snapshot
            && !self.snapshot_tried.swap(true, Ordering::AcqRel)
            && cache.position == store::FeedPosition::START
        {
            let started = std::time::Instant::now();
            match snapshot::load(cache, self.store.as_ref(), ctx, path).await {
                Ok(n) => tracing::info!(
                    records = n,
                    seconds = started.elapsed().as_secs_f64(),
                    path = %path.display(),
                    "patient index read from its snapshot; following the change feed from there"
                ),
                Err(SnapshotError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "patient index snapshot not used; loading from the change feed"
                ),
            }
        }
        cache.refresh(self.store.as_ref(), ctx).await
    }

    /// Writes the index's persisted copy (see [`Mpi::with_snapshot`]), brought up to date
    /// with the store first; returns its size in bytes, or `None` without a snapshot path.
    /// Holds the index while it writes (a second or two at a million people): for the end of
    /// an import and a server's shutdown.
    pub async fn save_snapshot(&self) -> Result<Option<u64>, SnapshotError> {
        let Some(path) = &self.snapshot else {
            return Ok(None);
        };
        self.check_loaded()?;
        let ctx = RequestContext::system();
        let mut cache = self.write_cache().await;
        self.refresh(&mut cache, &ctx).await?;
        let size = snapshot::save(&cache, self.store.as_ref(), &ctx, path).await?;
        Ok(Some(size))
    }

    /// Whether the index can answer now (it is not being loaded at start-up).
    pub fn is_ready(&self) -> bool {
        !self.loading.load(Ordering::Acquire)
    }

    /// Loads the index from the store on a task of its own, and until it is loaded has every
    /// call that needs it (a Patient write with linking on, `$match`, a manual decision, PIXm)
    /// fail at once with [`StoreError::Unavailable`], which the server answers 503 with
    /// `Retry-After` and the MLLP listener with no ACK (the sender retries), instead of
    /// leaving callers waiting behind the load. Marked as loading before this returns, so a
    /// server started after it never hangs a request. The task ends with the number of
    /// Patients indexed; on an error the index is left to load on first use.
    pub fn start_loading(self: &Arc<Self>) -> tokio::task::JoinHandle<Result<usize, StoreError>> {
        self.loading.store(true, Ordering::Release);
        let mpi = self.clone();
        tokio::spawn(async move {
            let result = async {
                let mut cache = mpi.write_cache().await;
                mpi.refresh(&mut cache, &RequestContext::system()).await?;
                Ok(cache.member_of.len() + cache.unlinked.len())
            }
            .await;
            mpi.loading.store(false, Ordering::Release);
            result
        })
    }

    /// Refuses a call that needs the index while it loads.
    fn check_loaded(&self) -> Result<(), StoreError> {
        if self.is_ready() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the patient index is loading; retry shortly".into(),
            ))
        }
    }

    /// Linking on, with the built-in model and survivorship rules.
    pub fn with_defaults(store: Arc<dyn Store>) -> Self {
        Mpi::new(store, Model::default(), Survivorship::default(), true)
    }

    /// Whether Patient writes are linked (and golden records kept).
    pub fn linking(&self) -> bool {
        self.linking
    }

    /// The store underneath the linking layer (writes to it are not linked).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store requests write through: an [`EmpiStore`] linking every Patient write when
    /// linking is on, else the store underneath.
    pub fn linked_store(self: &Arc<Self>) -> Arc<dyn Store> {
        if self.linking {
            Arc::new(EmpiStore::new(self.clone()))
        } else {
            self.store.clone()
        }
    }

    /// The cache for reading the index (`$match`, listings), brought up to date with the store
    /// (read with `ctx.internal()`): shared with other readers. Only when the change feed
    /// holds something it has not applied does it take the cache for writing to apply it.
    pub(crate) async fn locked(
        &self,
        ctx: &RequestContext,
    ) -> Result<RwLockReadGuard<'_, Cache>, StoreError> {
        self.check_loaded()?;
        let ctx = &ctx.internal();
        {
            let cache = self.read_cache().await;
            let ahead = self.store.feed(ctx, &cache.position, 1).await?;
            if ahead.changes.is_empty() {
                return Ok(cache);
            }
        }
        let mut cache = self.write_cache().await;
        self.refresh(&mut cache, ctx).await?;
        Ok(cache.downgrade())
    }

    /// The cache for a decision (a link, a merge, a golden-record write): locked in this
    /// process, then across every process on the store's database ([`LINKING_LOCK`]), then
    /// brought up to date, so that the decision sees every one committed before it, whoever
    /// made it. Held until the decision's commit is applied to the cache.
    pub(crate) async fn locked_for_decision(
        &self,
        ctx: &RequestContext,
    ) -> Result<Locked<'_>, StoreError> {
        self.check_loaded()?;
        let mut cache = self.write_cache().await;
        let ctx = &ctx.internal();
        let shared = self.store.lock_exclusive(ctx, LINKING_LOCK).await?;
        self.refresh(&mut cache, ctx).await?;
        cache.catch_up_pending(self.store.as_ref(), ctx).await?;
        Ok(Locked {
            shared: Some(shared),
            cache,
        })
    }

    fn now(&self) -> String {
        store::time::format_instant(store::time::now_micros())
    }

    /// The stored source Patients that may be `patient`, best first. The candidates come from
    /// the whole index: the caller reads each with its own context.
    pub async fn find(
        &self,
        ctx: &RequestContext,
        patient: &Value,
    ) -> Result<Vec<Match>, MatchError> {
        let mut query = patient.clone();
        if query.get("id").and_then(Value::as_str).is_none() {
            query["id"] = Value::String("$match-input".into());
        }
        let record = Record::from_patient(&query).map_err(|e| MatchError::Input(e.to_string()))?;
        let cache = self.locked(ctx).await?;
        let candidates: Vec<Candidate> = cache.index.find(&record);
        Ok(candidates
            .into_iter()
            .filter(|c| c.record_id != record.id)
            .map(|c| Match {
                grade: match c.score.class {
                    MatchClass::Link => "certain",
                    MatchClass::Review => "probable",
                    MatchClass::NoMatch => "possible",
                },
                probability: c.score.probability,
                explanation: serde_json::to_string(&c.score).unwrap_or_default(),
                id: c.record_id,
            })
            .collect())
    }

    /// The identity of a source Patient, and the sources of that identity.
    pub async fn identity_of(
        &self,
        ctx: &RequestContext,
        source: &str,
    ) -> Result<Option<(EnterpriseId, Vec<String>)>, StoreError> {
        let cache = self.locked(ctx).await?;
        Ok(cache.member_of.get(source).map(|e| {
            let members = cache
                .goldens
                .get(e)
                .map(|g| g.links.keys().cloned().collect())
                .unwrap_or_default();
            (*e, members)
        }))
    }

    /// The Patient ids that are one person, as a patient-context token reaches them: for a
    /// golden record, itself and every source it links (a merged-away golden record stands
    /// for the identity that survived it); for a linked source, its identity's golden record
    /// and sources; any other id stands for itself alone. Read from the index at the time of
    /// the call, so a link, unlink or merge changes the answer at once.
    pub async fn person_records(
        &self,
        ctx: &RequestContext,
        id: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let cache = self.locked(ctx).await?;
        let mut identity = resources::enterprise_of_id(id)
            .filter(|e| cache.goldens.contains_key(e))
            .or_else(|| cache.member_of.get(id).copied());
        // Follow merges to the surviving identity (bounded: a merge chain never loops, but
        // a damaged store must not hang a request).
        for _ in 0..16 {
            match identity.and_then(|e| cache.goldens.get(&e)) {
                Some(g) if !g.active => match g.replaced_by {
                    Some(survivor) => identity = Some(survivor),
                    None => break,
                },
                _ => break,
            }
        }
        let mut ids = BTreeSet::from([id.to_owned()]);
        if let Some(e) = identity
            && let Some(g) = cache.goldens.get(&e)
            && g.active
        {
            ids.insert(e.to_string());
            ids.extend(g.links.keys().cloned());
        }
        Ok(ids)
    }

    /// Links up to `limit` source Patients that no golden record lists (written before
    /// linking was on, or by another process); returns how many were linked and how many
    /// still wait.
    pub async fn link_backlog(
        &self,
        ctx: &RequestContext,
        limit: usize,
    ) -> Result<(usize, usize), StoreError> {
        let store = self.store.as_ref();
        let ctx = &ctx.internal();
        let mut cache = self.locked_for_decision(ctx).await?;
        let ids = cache.backlog(limit);
        if ids.is_empty() {
            return Ok((0, 0));
        }
        let mut planner = Planner::new(&mut cache, self.now());
        let planned = async {
            let mut n = 0;
            for id in &ids {
                let stored = store.load(ctx, "Patient", id).await?;
                let Some(body) = stored.as_ref().and_then(|s| s.body.as_deref()) else {
                    // Deleted since: nothing to link.
                    planner.cache.unlinked.remove(id);
                    continue;
                };
                let body: Value = serde_json::from_str(body)
                    .map_err(|e| StoreError::Backend(format!("stored Patient/{id}: {e}")))?;
                planner.write(id, &body)?;
                n += 1;
            }
            let writes = planner.finish(store, ctx, &self.survivorship).await?;
            Ok::<_, StoreError>((n, writes))
        }
        .await;
        let result = match planned {
            Ok((n, writes)) => store.transaction(ctx, writes).await.map(|_| n),
            Err(e) => Err(e),
        };
        planner.undo();
        drop(planner);
        refresh_after_commit(&mut cache, store, ctx).await;
        if result.is_err() {
            // Not retried in a loop: the same sources would fail again.
            cache.unlinked.retain(|id| !ids.contains(id));
        }
        result.map(|n| (n, cache.unlinked.len()))
    }

    /// Ids of the golden records, for listing.
    pub async fn goldens(
        &self,
        ctx: &RequestContext,
    ) -> Result<BTreeSet<EnterpriseId>, StoreError> {
        let cache = self.locked(ctx).await?;
        Ok(cache
            .goldens
            .iter()
            .filter(|(_, g)| g.active)
            .map(|(e, _)| *e)
            .collect())
    }

    /// The current golden records of `identities` (say, those a decision changed), read with
    /// the caller's context; one that is not there (deleted) is left out.
    pub async fn golden_records(
        &self,
        ctx: &RequestContext,
        identities: &[EnterpriseId],
    ) -> Result<Vec<Value>, StoreError> {
        let mut records = Vec::with_capacity(identities.len());
        for e in identities {
            if let Some(r) = self.store.load(ctx, "Patient", &e.to_string()).await?
                && let Some(text) = r.body.as_deref()
            {
                records.push(serde_json::from_str(text).unwrap_or(Value::Null));
            }
        }
        Ok(records)
    }
}

/// After a commit the cache follows the store; a failure here only delays that to the next
/// refresh (the write itself is committed, so its caller must not see an error).
///
/// The decision's own writes are applied even when the change feed is held back by an older
/// transaction elsewhere on the server (PostgreSQL): they are committed, and the index read
/// next (PIX, `$match`, a patient token's reach) must show them.
async fn refresh_after_commit(cache: &mut Cache, store: &dyn Store, ctx: &RequestContext) {
    let ctx = &ctx.internal();
    let refreshed = match cache.refresh(store, ctx).await {
        Ok(()) => cache.catch_up_pending(store, ctx).await,
        Err(e) => Err(e),
    };
    if let Err(e) = refreshed {
        tracing::warn!(error = %e, "EMPI cache refresh after commit failed; retried on next use");
    }
}

/// `Task?code=...|review&status=requested&focus=Patient/{source}` (or the whole queue).
pub(crate) fn review_query(
    store: &dyn Store,
    focus: Option<&str>,
) -> Result<SearchQuery, StoreError> {
    let mut params = vec![
        ("code".to_owned(), format!("{EMPI_SYSTEM}|{REVIEW_CODE}")),
        ("status".to_owned(), "requested".to_owned()),
    ];
    if let Some(source) = focus {
        params.push(("focus".to_owned(), format!("Patient/{source}")));
    }
    SearchQuery::parse(Some("Task"), &params, store.extractor(), false)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;
    use store::{FhirIndexExtractor, SqliteStore};

    use super::*;

    /// Polls `wanted` until it says yes; fails after a generous deadline instead of hanging.
    async fn until_wanted(mpi: &Mpi, locked: &Locked<'_>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mpi.lock_wanted(locked).await {
            assert!(Instant::now() < deadline, "the waiter was never seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_decision_lock_knows_who_waits_for_it() {
        let dir = std::env::temp_dir().join(format!("renkei-mpi-lock-{}", uuid::Uuid::new_v4()));
        let open = || -> Arc<dyn Store> {
            Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap())
        };
        let mpi = Arc::new(Mpi::with_defaults(open()));
        let ctx = RequestContext::system();

        // A `$match` of this process waits for the cache.
        let locked = mpi.locked_for_decision(&ctx).await.unwrap();
        assert!(!mpi.lock_wanted(&locked).await, "nobody waits yet");
        let reader = {
            let mpi = mpi.clone();
            tokio::spawn(async move {
                let query = json!({"resourceType": "Patient", "name": [{"family": "Sato"}]});
                mpi.find(&RequestContext::system(), &query)
                    .await
                    .map(|m| m.len())
            })
        };
        until_wanted(&mpi, &locked).await;
        drop(locked);
        assert_eq!(reader.await.unwrap().unwrap(), 0);

        // Another process on the same database (its own store and index) waits for the
        // linking lock.
        let other = Arc::new(Mpi::with_defaults(open()));
        let locked = mpi.locked_for_decision(&ctx).await.unwrap();
        assert!(!mpi.lock_wanted(&locked).await, "the reader is gone");
        let decider = tokio::spawn(async move {
            let held = other.locked_for_decision(&RequestContext::system()).await?;
            drop(held);
            Ok::<_, StoreError>(())
        });
        until_wanted(&mpi, &locked).await;
        drop(locked);
        decider.await.unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
