//! The EMPI's in-memory view of the store: an [`EnterpriseIndex`] of every source Patient
//! and the membership of every golden record, kept up to date from the change feed.
//!
//! The store is the truth; this is a cache that can be dropped at any time. A source Patient
//! joins the index under the identity its golden record lists; one that no golden record lists
//! yet is indexed under a provisional identity and remembered in `unlinked` (its golden record
//! may be the next feed row, or it was written before linking was enabled: the backlog).
//!
//! It is a consumer of the change feed ([`Store::feed`]) whose position lives in memory (the
//! cache itself is rebuilt on every start-up, from the start of the feed or from a persisted
//! copy of the cache and the position it was written at: see `snapshot`; a durable
//! checkpoint alone would only skip what a new process has never seen). The feed never
//! skips a change, but on PostgreSQL it waits for the oldest transaction in progress,
//! whatever it writes; a linking decision cannot wait, and must see every Patient another
//! process committed before it took the linking lock. So a decision, once it holds that
//! lock, also applies [`Store::feed_pending`]'s Patient changes beyond the feed's position,
//! without moving it
//! ([`Cache::catch_up_pending`]); reads of the index (`$match`, listings) follow the feed
//! alone. A change is applied once per version (`applied`), so reading one twice costs a
//! comparison.
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasherDefault;

use empi::hashing::{FxHashMap, FxHasher};

use empi::{EnterpriseId, EnterpriseIndex, Record};
use serde_json::Value;
use store::{Change, FeedPosition, RequestContext, Store, StoreError, StoredResource};

use super::plan::Planned;
use super::resources::{GoldenState, enterprise_of_id, is_golden, parse_golden};

/// Change-feed rows read per round trip.
const PAGE: usize = 1000;

/// A set hashed like the index's maps (the keys are Patient ids; see `empi::hashing`).
pub(crate) type FxHashSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;

#[derive(Debug)]
pub(crate) struct Cache {
    pub index: EnterpriseIndex,
    /// Where the cache stands in the change feed: every change before it is applied.
    pub position: FeedPosition,
    /// Version of each Patient (source or golden) applied.
    pub applied: FxHashMap<String, u64>,
    pub goldens: FxHashMap<EnterpriseId, GoldenState>,
    pub member_of: FxHashMap<String, EnterpriseId>,
    /// Sources no golden record lists.
    pub unlinked: FxHashSet<String>,
}

impl Cache {
    pub fn new(index: EnterpriseIndex) -> Self {
        Cache {
            index,
            position: FeedPosition::START,
            applied: FxHashMap::default(),
            goldens: FxHashMap::default(),
            member_of: FxHashMap::default(),
            unlinked: FxHashSet::default(),
        }
    }

    /// Applies the Patient changes the feed delivers since the last refresh, moving the
    /// position.
    pub async fn refresh(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
    ) -> Result<(), StoreError> {
        loop {
            let batch = store.feed(ctx, &self.position, PAGE).await?;
            self.apply_changes(store, ctx, &batch.changes).await?;
            // Only past a batch once it is applied: a failed load is read again next time.
            self.position = batch.next;
            if batch.changes.len() < PAGE {
                return Ok(());
            }
        }
    }

    /// Applies the committed Patient changes the feed still holds back (see the module
    /// documentation), leaving the position where the feed stands: for a decision, under the
    /// linking lock, after [`Cache::refresh`].
    pub async fn catch_up_pending(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
    ) -> Result<(), StoreError> {
        let mut after = self.position;
        loop {
            let pending = store.feed_pending(ctx, &after, "Patient", PAGE).await?;
            self.apply_changes(store, ctx, &pending.changes).await?;
            if pending.changes.len() < PAGE {
                return Ok(());
            }
            // Read on past the page, leaving the cache's position where the feed stands.
            after = pending.next;
        }
    }

    /// Applies the Patient changes among `changes` not applied yet (at their current
    /// version).
    async fn apply_changes(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        changes: &[Change],
    ) -> Result<(), StoreError> {
        for change in changes {
            if change.resource_type == "Patient"
                && self
                    .applied
                    .get(&change.id)
                    .is_none_or(|v| *v < change.version)
            {
                self.apply(store, ctx, &change.id).await?;
            }
        }
        Ok(())
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
        self.apply_current(&current);
        Ok(())
    }

    /// Applies Patients a commit just wrote, as its outcomes return them, so that the refresh
    /// after it finds their versions applied and does not read them back one by one. Any
    /// other resource, or a version older than one applied, is skipped. A source whose record
    /// the plan of the commit normalised (`planned`, from `Planner::undo`) is indexed with that
    /// record and the commit's `lastUpdated`, and a golden record the plan composed takes the
    /// membership the plan gave it, without parsing either body again.
    pub fn apply_committed<'r>(
        &mut self,
        written: impl IntoIterator<Item = &'r StoredResource>,
        mut planned: Planned,
    ) {
        for stored in written {
            if stored.resource_type != "Patient"
                || self
                    .applied
                    .get(&stored.id)
                    .is_some_and(|v| *v >= stored.version)
            {
                continue;
            }
            if stored.deleted {
                self.apply_current(stored);
            } else if let Some(e) = enterprise_of_id(&stored.id) {
                match planned.goldens.remove(&e) {
                    Some(links) => {
                        self.applied.insert(stored.id.clone(), stored.version);
                        self.apply_golden(
                            e,
                            GoldenState {
                                version: stored.version,
                                active: true,
                                replaced_by: None,
                                deleted: false,
                                links,
                            },
                        );
                    }
                    None => self.apply_current(stored),
                }
            } else {
                match planned.records.remove(&stored.id) {
                    Some(mut record) => {
                        record.last_updated =
                            Some(store::time::format_instant(stored.last_updated));
                        self.applied.insert(stored.id.clone(), stored.version);
                        self.index_source(&stored.id, Some(record));
                    }
                    None => self.apply_current(stored),
                }
            }
        }
    }

    /// Applies `current`, the newest stored version of a Patient.
    fn apply_current(&mut self, current: &StoredResource) {
        let id = current.id.as_str();
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
            (Some(e), None) => self.apply_golden(e, GoldenState::deleted(version)),
            (None, Some(body)) => self.apply_source(id, &body),
            (None, None) => self.remove_source(id),
        }
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
        self.index_source(id, Record::from_patient(body).ok());
    }

    /// Indexes `record`, the normalised current version of source `id` (`None`: nothing to
    /// match on), under the identity its golden record lists or a provisional one.
    fn index_source(&mut self, id: &str, record: Option<Record>) {
        let _ = self.index.remove(id);
        let e = match self.member_of.get(id) {
            Some(e) => *e,
            None => {
                self.unlinked.insert(id.to_owned());
                self.index.reserve()
            }
        };
        if let Some(record) = record {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use empi::golden::{GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM};
    use empi::{IndexConfig, Model};
    use serde_json::json;
    use store::Method;

    use super::*;
    use crate::resources::{LinkMeta, with_links};

    fn stored(id: &str, version: u64, body: Option<Value>) -> StoredResource {
        let ty = body
            .as_ref()
            .map_or("Patient", |b| b["resourceType"].as_str().unwrap());
        StoredResource {
            resource_type: ty.to_owned(),
            id: id.to_owned(),
            version,
            last_updated: 0,
            deleted: body.is_none(),
            method: Method::Put,
            body: body.map(|b| b.to_string()),
        }
    }

    fn source(id: &str, family: &str) -> Value {
        json!({"resourceType": "Patient", "id": id,
               "name": [{"family": family, "given": ["Hanako"]}],
               "birthDate": "1980-01-02", "gender": "female"})
    }

    fn golden(id: &str, members: &[&str]) -> Value {
        let links: BTreeMap<String, LinkMeta> = members
            .iter()
            .map(|m| ((*m).to_owned(), LinkMeta::manual("link", "test")))
            .collect();
        let body = json!({"resourceType": "Patient", "id": id, "meta": {"tag": [{
            "system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]}});
        with_links(body, &links)
    }

    /// What a commit returns lands in the cache as the change feed would put it there, and
    /// the feed's rows for the same versions are then skipped (`applied`); an older version
    /// or another resource type changes nothing.
    #[test]
    fn committed_patients_apply_like_their_change_feed_rows() {
        let mut cache = Cache::new(EnterpriseIndex::new(
            Model::default(),
            IndexConfig::default(),
        ));
        let e = EnterpriseId(7);
        let g = golden("E0000000007", &["s1"]);
        assert!(
            is_golden(&g),
            "the test's golden record carries the golden tag"
        );
        cache.apply_committed(
            &[
                stored("s1", 2, Some(source("s1", "Yamada"))),
                stored("E0000000007", 1, Some(g)),
                stored("o1", 1, Some(json!({"resourceType": "Observation"}))),
            ],
            Planned::default(),
        );
        assert_eq!(cache.member_of.get("s1"), Some(&e));
        assert_eq!(cache.index.enterprise_of("s1"), Some(e));
        assert!(cache.unlinked.is_empty());
        assert_eq!(cache.applied.get("s1"), Some(&2));
        assert_eq!(cache.applied.get("E0000000007"), Some(&1));
        assert!(!cache.applied.contains_key("o1"));

        // An older version of s1 (say, read late from the feed) is not applied over v2.
        cache.apply_committed(&[stored("s1", 1, None)], Planned::default());
        assert!(cache.index.record("s1").is_some());

        // A deletion that is newer is.
        cache.apply_committed(&[stored("s1", 3, None)], Planned::default());
        assert!(cache.index.record("s1").is_none());
        assert_eq!(cache.applied.get("s1"), Some(&3));
    }

    /// A golden record the plan composed takes the membership the plan gave it, exactly as
    /// parsing its stored body gives it (scores as the decimals written), without the parse.
    #[test]
    fn a_planned_golden_record_applies_as_its_stored_body_would() {
        let e = EnterpriseId(9);
        let mut links = BTreeMap::new();
        links.insert(
            "s1".to_owned(),
            LinkMeta {
                basis: crate::resources::Basis::Auto,
                outcome: "linked".into(),
                score: Some(0.123_456_789),
                explanation: Some("{\"family\": 3.2}".into()),
                reason: None,
            },
        );
        links.insert("s2".to_owned(), LinkMeta::manual("link", "same person"));
        let body = with_links(
            json!({"resourceType": "Patient", "id": "E0000000009", "meta": {"tag": [{
                "system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]}}),
            &links,
        );
        let committed = [stored("E0000000009", 3, Some(body))];
        let new_cache = || {
            Cache::new(EnterpriseIndex::new(
                Model::default(),
                IndexConfig::default(),
            ))
        };

        let mut parsed = new_cache();
        parsed.apply_committed(&committed, Planned::default());
        let mut planned = new_cache();
        let mut plan = Planned::default();
        plan.goldens
            .insert(e, crate::resources::stored_links(&links));
        planned.apply_committed(&committed, plan);

        assert_eq!(parsed.goldens.get(&e), planned.goldens.get(&e));
        assert_eq!(
            planned.goldens[&e].links["s1"].score,
            Some(0.123457),
            "the score as written"
        );
        assert_eq!(planned.applied.get("E0000000009"), Some(&3));
    }
}
