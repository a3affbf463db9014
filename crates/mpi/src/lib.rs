//! The enterprise master patient index wired into the store: every source Patient belongs to
//! exactly one enterprise identity, persisted as a golden `Patient` (tagged golden, one
//! `Patient.link` per source with how and why it was linked).
//!
//! - [`EmpiStore`] wraps the store so that every Patient write (REST, transactions, import,
//!   HL7 v2) commits with its link decision and golden-record writes.
//! - [`Mpi`] owns the matcher (an [`empi::EnterpriseIndex`] cached from the store), and the
//!   operations on it: `$match` candidates, manual link / unlink / merge / unmerge (sticky,
//!   audited with an `AuditEvent` in the same transaction, closing the review `Task`s they
//!   settle), the review queue, the backlog of Patients written before linking was on, and
//!   the PIXm identifier cross-reference.
//!
//! Probable-but-uncertain matches get an identity of their own for now and a `Task`
//! (`code` = `https://renkei.dev/fhir/CodeSystem/empi|review`, `status` = `requested`) listing
//! the candidate identities, each once, with scores and explanations: the review queue. Each
//! candidate is also a `meta.tag` of the task (`resources::CANDIDATE_TAG_SYSTEM`), so that when
//! a unit of work retires an identity (merged away, or left without sources) the open tasks
//! naming it are found by one indexed search and lose it (or get its survivor); a task left
//! without a live candidate is cancelled with the reason.
//!
//! One process writes Patients at a time (the EMPI lock): several servers on one database
//! would each need to see the others' writes before deciding, which this does not do.

mod cache;
mod linker;
mod manual;
mod plan;
pub mod resources;

use std::collections::BTreeSet;

use empi::golden::Survivorship;
use empi::{Candidate, EnterpriseId, EnterpriseIndex, IndexConfig, MatchClass, Model, Record};
use serde_json::Value;
use store::{RequestContext, SearchQuery, Store, StoreError};
use tokio::sync::{Mutex, MutexGuard};

pub use linker::EmpiStore;
pub use manual::{ManualError, PixAnswer};
pub use resources::{EMPI_SYSTEM, REVIEW_CODE};

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
    /// Score and per-field explanation.
    pub explanation: Value,
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

/// The patient index of one node.
#[derive(Debug)]
pub struct Mpi {
    survivorship: Survivorship,
    linking: bool,
    cache: Mutex<Cache>,
}

impl Default for Mpi {
    fn default() -> Self {
        Mpi::new(Model::default(), Survivorship::default(), true)
    }
}

impl Mpi {
    /// An index scoring with `model`. With `linking` off the store is not wrapped: `$match`
    /// still works, golden records and manual operations do not exist.
    pub fn new(model: Model, survivorship: Survivorship, linking: bool) -> Self {
        Mpi {
            survivorship,
            linking,
            cache: Mutex::new(Cache::new(EnterpriseIndex::new(
                model,
                IndexConfig::default(),
            ))),
        }
    }

    /// Whether Patient writes are linked (and golden records kept).
    pub fn linking(&self) -> bool {
        self.linking
    }

    /// The cache, locked and brought up to date with the store.
    pub(crate) async fn locked(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
    ) -> Result<MutexGuard<'_, Cache>, StoreError> {
        let mut cache = self.cache.lock().await;
        cache.refresh(store, ctx).await?;
        Ok(cache)
    }

    fn now(&self) -> String {
        store::time::format_instant(store::time::now_micros())
    }

    /// The stored source Patients that may be `patient`, best first.
    pub async fn find(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
        patient: &Value,
    ) -> Result<Vec<Match>, MatchError> {
        let mut query = patient.clone();
        if query.get("id").and_then(Value::as_str).is_none() {
            query["id"] = Value::String("$match-input".into());
        }
        let record = Record::from_patient(&query).map_err(|e| MatchError::Input(e.to_string()))?;
        let cache = self.locked(store, ctx).await?;
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
                explanation: serde_json::to_value(&c.score).unwrap_or(Value::Null),
                id: c.record_id,
            })
            .collect())
    }

    /// The identity of a source Patient, and the sources of that identity.
    pub async fn identity_of(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
        source: &str,
    ) -> Result<Option<(EnterpriseId, Vec<String>)>, StoreError> {
        let cache = self.locked(store, ctx).await?;
        Ok(cache.member_of.get(source).map(|e| {
            let members = cache
                .goldens
                .get(e)
                .map(|g| g.links.keys().cloned().collect())
                .unwrap_or_default();
            (*e, members)
        }))
    }

    /// Links up to `limit` source Patients that no golden record lists (written before
    /// linking was on, or by another process); returns how many were linked and how many
    /// still wait. `store` is the store underneath the [`EmpiStore`].
    pub async fn link_backlog(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
        limit: usize,
    ) -> Result<(usize, usize), StoreError> {
        let mut cache = self.locked(store, ctx).await?;
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
        store: &dyn Store,
        ctx: &RequestContext,
    ) -> Result<BTreeSet<EnterpriseId>, StoreError> {
        let cache = self.locked(store, ctx).await?;
        Ok(cache
            .goldens
            .iter()
            .filter(|(_, g)| g.active)
            .map(|(e, _)| *e)
            .collect())
    }
}

/// After a commit the cache follows the store; a failure here only delays that to the next
/// refresh (the write itself is committed, so its caller must not see an error).
async fn refresh_after_commit(cache: &mut Cache, store: &dyn Store, ctx: &RequestContext) {
    if let Err(e) = cache.refresh(store, ctx).await {
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
