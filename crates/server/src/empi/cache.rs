//! The EMPI's in-memory view of the store: an [`EnterpriseIndex`] of every source Patient
//! and the membership of every golden record, kept up to date from the change feed.
//!
//! The store is the truth; this is a cache that can be dropped at any time. A source Patient
//! joins the index under the identity its golden record lists; one that no golden record lists
//! yet is indexed under a provisional identity and remembered in `unlinked` (its golden record
//! may be the next feed row, or it was written before linking was enabled: the backlog). Because PostgreSQL may make a change-feed row
//! visible after a row with a higher position, every refresh there re-reads the last
//! [`RESCAN`] positions and skips versions it has already applied (SQLite's single writer
//! publishes rows in order).

use std::collections::{BTreeSet, HashMap, HashSet};

use empi::{EnterpriseId, EnterpriseIndex, Record};
use serde_json::Value;
use store::{RequestContext, Store, StoreError};

use super::resources::{GoldenState, enterprise_of_id, is_golden, parse_golden};

/// Change-feed positions re-read on every refresh (see the module documentation).
pub const RESCAN: i64 = 1000;
/// Change-feed rows read per round trip.
const PAGE: usize = 1000;

#[derive(Debug)]
pub(crate) struct Cache {
    pub index: EnterpriseIndex,
    /// Highest change-feed position read.
    read_to: i64,
    /// Version of each Patient (source or golden) applied.
    applied: HashMap<String, u64>,
    pub goldens: HashMap<EnterpriseId, GoldenState>,
    pub member_of: HashMap<String, EnterpriseId>,
    /// Sources no golden record lists.
    pub unlinked: HashSet<String>,
}

impl Cache {
    pub fn new(index: EnterpriseIndex) -> Self {
        Cache {
            index,
            read_to: 0,
            applied: HashMap::new(),
            goldens: HashMap::new(),
            member_of: HashMap::new(),
            unlinked: HashSet::new(),
        }
    }

    /// Applies the Patient changes committed since the last refresh.
    pub async fn refresh(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
    ) -> Result<(), StoreError> {
        // SQLite commits one writer's transactions in order: nothing to re-read there.
        let rescan = if store.backend() == "sqlite" {
            0
        } else {
            RESCAN
        };
        let mut after = (self.read_to - rescan).max(0);
        loop {
            let changes = store.changes(ctx, after, PAGE).await?;
            let Some(last) = changes.last() else {
                return Ok(());
            };
            after = last.seq;
            for change in &changes {
                if change.resource_type == "Patient"
                    && self
                        .applied
                        .get(&change.id)
                        .is_none_or(|v| *v < change.version)
                {
                    self.apply(store, ctx, &change.id).await?;
                }
                // Only past a row once it is applied: a failed load is read again next time.
                self.read_to = self.read_to.max(change.seq);
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
    ) -> Result<(), StoreError> {
        // The current version (a later one than the change, if written since).
        let Some(current) = store.load(ctx, "Patient", id).await? else {
            return Ok(());
        };
        let version = current.version;
        if let Some(e) = enterprise_of_id(id) {
            // Never handed out again, even if this golden record is deleted.
            self.index.note_used(e);
        }
        let body = if current.deleted {
            None
        } else {
            current
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
        };
        self.applied.insert(id.to_owned(), version);
        let golden_id = enterprise_of_id(id)
            .filter(|e| self.goldens.contains_key(e) || body.as_ref().is_some_and(is_golden));
        match (golden_id, body) {
            (Some(e), Some(body)) => self.apply_golden(e, parse_golden(version, &body)),
            (Some(e), None) => self.apply_golden(
                e,
                GoldenState {
                    version,
                    active: false,
                    links: Default::default(),
                },
            ),
            (None, Some(body)) => self.apply_source(id, &body),
            (None, None) => self.remove_source(id),
        }
        Ok(())
    }

    /// A golden record's (new) membership.
    pub fn apply_golden(&mut self, e: EnterpriseId, state: GoldenState) {
        self.index.note_used(e);
        let old: BTreeSet<String> = self
            .goldens
            .get(&e)
            .map(|g| g.links.keys().cloned().collect())
            .unwrap_or_default();
        for gone in old.iter().filter(|s| !state.links.contains_key(*s)) {
            if self.member_of.get(gone) == Some(&e) {
                self.member_of.remove(gone);
                // Still indexed = still stored (a deleted source left the index first).
                if self.index.record(gone).is_some() {
                    self.unlinked.insert(gone.clone());
                    let _ = self.index.detach(gone);
                }
            }
        }
        for source in state.links.keys() {
            self.member_of.insert(source.clone(), e);
            self.unlinked.remove(source);
            if self.index.enterprise_of(source).is_some_and(|cur| cur != e) {
                let _ = self.index.assign(source, e);
            }
        }
        self.goldens.insert(e, state);
    }

    /// A source Patient's (new) version. A source no golden record lists yet is indexed under
    /// an identity of its own, so it is a candidate for matching all the same.
    pub fn apply_source(&mut self, id: &str, body: &Value) {
        let _ = self.index.remove(id);
        let e = match self.member_of.get(id) {
            Some(e) => *e,
            None => {
                self.unlinked.insert(id.to_owned());
                self.index.reserve()
            }
        };
        if let Ok(record) = Record::from_patient(body) {
            let _ = self.index.restore(record, e);
        }
    }

    pub fn remove_source(&mut self, id: &str) {
        let _ = self.index.remove(id);
        self.unlinked.remove(id);
    }

    /// Sources that no golden record lists (written before linking was on), at most `limit`.
    pub fn backlog(&self, limit: usize) -> Vec<String> {
        let mut ids: Vec<String> = self.unlinked.iter().cloned().collect();
        ids.sort();
        ids.truncate(limit);
        ids
    }
}
