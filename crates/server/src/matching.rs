//! Patient matching over the stored Patients, for
//! [`Patient/$match`](https://hl7.org/fhir/R4/patient-operation-match.html).
//!
//! [`PatientMatcher`] holds an [`empi::EnterpriseIndex`] of every current Patient as a cache of
//! the store: it is filled from the change feed on first use and brought up to date from the
//! feed before each match, so a Patient written by REST, a transaction, an import or HL7 v2 is a
//! candidate as soon as its write has committed. The database stays the truth; the cache can be
//! dropped at any time. Because PostgreSQL may make a change-feed row visible after a row with
//! a higher position, every refresh re-reads the last [`RESCAN`] positions and skips versions
//! it has already applied.

use std::collections::HashMap;

use empi::{Candidate, EnterpriseIndex, IndexConfig, MatchClass, Model, Record};
use serde_json::Value;
use store::{Method, RequestContext, Store, StoreError};
use tokio::sync::Mutex;

/// Change-feed positions re-read on every refresh (see the module documentation).
pub const RESCAN: i64 = 1000;
/// Change-feed rows read per round trip.
const PAGE: usize = 1000;

/// Candidates for a Patient among the stored ones.
#[derive(Debug)]
pub struct PatientMatcher {
    model: Model,
    state: Mutex<Option<Cache>>,
}

#[derive(Debug)]
struct Cache {
    index: EnterpriseIndex,
    /// Highest change-feed position read.
    read_to: i64,
    /// Version of each Patient in the index.
    applied: HashMap<String, u64>,
}

/// One scored candidate.
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

impl Default for PatientMatcher {
    fn default() -> Self {
        PatientMatcher::new(Model::default())
    }
}

impl PatientMatcher {
    /// A matcher scoring with `model` (its thresholds decide the grades).
    pub fn new(model: Model) -> Self {
        PatientMatcher {
            model,
            state: Mutex::new(None),
        }
    }

    /// The stored Patients that may be `patient`, best first.
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
        let mut guard = self.state.lock().await;
        let cache = guard.get_or_insert_with(|| Cache {
            index: EnterpriseIndex::new(self.model.clone(), IndexConfig::default()),
            read_to: 0,
            applied: HashMap::new(),
        });
        cache.refresh(store, ctx).await?;
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
}

impl Cache {
    /// Applies the Patient changes committed since the last refresh.
    async fn refresh(&mut self, store: &dyn Store, ctx: &RequestContext) -> Result<(), MatchError> {
        let mut after = (self.read_to - RESCAN).max(0);
        loop {
            let changes = store.changes(ctx, after, PAGE).await?;
            let Some(last) = changes.last() else {
                return Ok(());
            };
            after = last.seq;
            self.read_to = self.read_to.max(after);
            for change in changes.iter().filter(|c| c.resource_type == "Patient") {
                if self
                    .applied
                    .get(&change.id)
                    .is_some_and(|v| *v >= change.version)
                {
                    continue;
                }
                self.apply(store, ctx, &change.id, change.version, change.method)
                    .await?;
            }
            if changes.len() < PAGE {
                return Ok(());
            }
        }
    }

    async fn apply(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        id: &str,
        version: u64,
        method: Method,
    ) -> Result<(), MatchError> {
        if self.applied.contains_key(id) {
            // Gone from the index before the new version goes in (or for good, when deleted).
            let _ = self.index.remove(id);
            self.applied.remove(id);
        }
        if method == Method::Delete {
            self.applied.insert(id.to_owned(), version);
            return Ok(());
        }
        // The current version (a later one than the change, if written since).
        let Some(current) = store.load(ctx, "Patient", id).await? else {
            return Ok(());
        };
        self.applied.insert(id.to_owned(), current.version);
        if current.deleted {
            return Ok(());
        }
        let body: Value = serde_json::from_str(current.body.as_deref().unwrap_or("{}"))
            .map_err(|e| MatchError::Stored(format!("Patient/{id}: {e}")))?;
        // A stored Patient the matcher cannot read (no name, say) is simply not a candidate.
        if let Ok(record) = Record::from_patient(&body) {
            self.index
                .insert_record(record)
                .map_err(|e| MatchError::Stored(format!("Patient/{id}: {e}")))?;
        }
        Ok(())
    }
}

/// Why a match could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    /// The input Patient cannot be matched.
    #[error("{0}")]
    Input(String),
    /// A stored Patient could not be indexed.
    #[error("stored patient unusable for matching: {0}")]
    Stored(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
