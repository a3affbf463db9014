//! The incremental enterprise index: source records, their enterprise identities and the
//! blocking-key hash maps that find a new record's candidates in time independent of the
//! population. `insert` decides (link / new / review) and records the outcome; `restore`,
//! `assign` and `detach` rebuild and apply persisted and manual links without re-deciding them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::blocking;
use crate::error::EmpiError;
use crate::hashing::FxHashMap;
use crate::model::Model;
use crate::record::Record;
use crate::score::{MatchClass, Score, Scorer, TermFrequencies};

/// An enterprise (person) identity. Persisted by the caller; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnterpriseId(pub u64);

impl std::fmt::Display for EnterpriseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "E{:010}", self.0)
    }
}

/// What happened to an inserted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Linked automatically to an existing enterprise identity.
    Linked,
    /// No candidate was probable: a new enterprise identity.
    New,
    /// Probable but uncertain: a new enterprise identity for now, and the candidates go to the
    /// review queue.
    Review,
}

/// A candidate match for a record, with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The existing source record.
    pub record_id: String,
    /// Its enterprise identity.
    pub enterprise_id: EnterpriseId,
    /// Score and per-field explanation (left = the new record).
    pub score: Score,
}

/// The decision for one inserted record: serialisable as-is for storage and audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The inserted record.
    pub record_id: String,
    /// Link, new or review.
    pub outcome: Outcome,
    /// The enterprise identity the record now belongs to.
    pub enterprise_id: EnterpriseId,
    /// Probable candidates, best first (the linked one first when linked).
    pub candidates: Vec<Candidate>,
    /// Identities this record bridged: it matched each of them and `enterprise_id`, nothing
    /// set their members apart, so their members joined `enterprise_id` and they are retired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<Merged>,
}

/// An identity absorbed by another when a new record matched both ([`Decision::merged`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    /// The identity retired.
    pub enterprise_id: EnterpriseId,
    /// Its source records, now members of the surviving identity.
    pub record_ids: Vec<String>,
}

/// Limits that keep matching cost bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexConfig {
    /// Blocks larger than this are not used for candidate lookup (too common to discriminate).
    pub max_block: usize,
    /// Members of blocks up to this size (a phone, an identifier, a rare name) are always
    /// scored; a member of larger blocks only when it shares at least two keys with the
    /// record, or the record has one larger block at most, or the member has a single key
    /// (one common name or birth date alone is not worth a comparison unless it is all
    /// there is).
    #[serde(default = "default_small_block")]
    pub small_block: usize,
    /// At most this many candidates are scored per lookup.
    pub max_candidates: usize,
    /// At most this many members of an enterprise are checked before linking to it.
    pub max_members_checked: usize,
    /// At most this many candidates are returned with explanations.
    pub max_returned: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            max_block: 1000,
            small_block: default_small_block(),
            max_candidates: 200,
            max_members_checked: 64,
            max_returned: 10,
        }
    }
}

fn default_small_block() -> usize {
    8
}

/// The in-memory enterprise index. See the crate documentation for how it is wired.
#[derive(Debug)]
pub struct EnterpriseIndex {
    model: Model,
    config: IndexConfig,
    tf: TermFrequencies,
    records: Vec<Option<Record>>,
    keys: Vec<Vec<u64>>,
    enterprise: Vec<EnterpriseId>,
    slots: FxHashMap<String, u32>,
    members: FxHashMap<EnterpriseId, Vec<u32>>,
    blocks: FxHashMap<u64, Vec<u32>>,
    next_enterprise: u64,
}

impl EnterpriseIndex {
    /// An empty index.
    pub fn new(model: Model, config: IndexConfig) -> Self {
        EnterpriseIndex {
            model,
            config,
            tf: TermFrequencies::default(),
            records: Vec::new(),
            keys: Vec::new(),
            enterprise: Vec::new(),
            slots: FxHashMap::default(),
            members: FxHashMap::default(),
            blocks: FxHashMap::default(),
            next_enterprise: 1,
        }
    }

    /// An empty index with room for `records` source records (and as many identities), so
    /// that rebuilding a known number of records grows no table on the way: each growth
    /// copies the table into memory the process touches for the first time.
    pub fn with_capacity(model: Model, config: IndexConfig, records: usize) -> Self {
        let mut index = EnterpriseIndex::new(model, config);
        index.records.reserve_exact(records);
        index.keys.reserve_exact(records);
        index.enterprise.reserve_exact(records);
        index.slots.reserve(records);
        index.members.reserve(records);
        index
    }

    /// The model in use.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Number of source records.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no record is indexed.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of enterprise identities.
    pub fn enterprises(&self) -> usize {
        self.members.len()
    }

    /// Matches and inserts a FHIR Patient.
    pub fn insert(&mut self, patient: &Value) -> Result<Decision, EmpiError> {
        self.insert_record(Record::from_patient(patient)?)
    }

    /// Candidates for a record without inserting it (`Patient/$match`, PDQm): probable matches
    /// best first, each with its explanation.
    pub fn find(&self, record: &Record) -> Vec<Candidate> {
        let keys = blocking::keys(record);
        let scorer = Scorer::new(&self.model, Some(&self.tf));
        let mut scored = self.scored_candidates(record, &keys, &scorer);
        scored.truncate(self.config.max_returned);
        scored
            .into_iter()
            .filter_map(|(slot, _, _)| self.candidate(record, slot, &scorer))
            .collect()
    }

    /// Matches a record against the index, then inserts it with the decided enterprise. A
    /// record that matches several identities joins them into one when nothing sets their
    /// members apart (see [`EnterpriseIndex::insert_record_with`]).
    pub fn insert_record(&mut self, record: Record) -> Result<Decision, EmpiError> {
        self.insert_record_with(record, |_| true)
    }

    /// [`EnterpriseIndex::insert_record`], where `may_merge` says which identities an
    /// automatic merge may retire or grow (the caller's rule: say, not one a person decided).
    ///
    /// A record that matches several identities well enough to link is the evidence that
    /// they are one person (records of one person arrive in any order, and two of them can be
    /// too different to link until a third bridges them): the identities are joined when
    /// every one of them may be merged, they are small enough to check every cross pair
    /// (`max_members_checked` members together) and no member of one conflicts with a member
    /// of another unless another record (the new one included) explains the conflict as a
    /// data-entry error, as the batch clusterer's chain guard decides. Otherwise the record
    /// goes to review, with a new identity of its own until a person decides.
    pub fn insert_record_with(
        &mut self,
        record: Record,
        may_merge: impl Fn(EnterpriseId) -> bool,
    ) -> Result<Decision, EmpiError> {
        let decision = self.insert_record_unless(record, may_merge, |_| false)?;
        Ok(decision.expect("nothing is held back"))
    }

    /// [`EnterpriseIndex::insert_record_with`], unless the decision involves an identity
    /// `held` says must not be involved now: one with a candidate close enough to link or to
    /// review (candidates that do not match leave no mark on the decision). Then it returns
    /// `None` and changes nothing. A caller deciding records ahead of another plan's commit
    /// holds back the identities that plan changes.
    pub fn insert_record_unless(
        &mut self,
        record: Record,
        may_merge: impl Fn(EnterpriseId) -> bool,
        held: impl Fn(EnterpriseId) -> bool,
    ) -> Result<Option<Decision>, EmpiError> {
        if self.slots.contains_key(&record.id) {
            return Err(EmpiError::Duplicate(record.id));
        }
        let keys = blocking::keys(&record);
        let scorer = Scorer::new(&self.model, Some(&self.tf));
        // Candidates that do not reach review leave no mark on the decision.
        let scored = self.reviewable_candidates(&record, &keys, &scorer);
        if scored.iter().any(|(slot, _, class)| {
            *class >= MatchClass::Review && held(self.enterprise[*slot as usize])
        }) {
            return Ok(None);
        }

        // Enterprises with an auto-link candidate, best first, that no member vetoes.
        let mut linkable: Vec<EnterpriseId> = Vec::new();
        for (slot, _, class) in &scored {
            let e = self.enterprise[*slot as usize];
            if *class == MatchClass::Link
                && !linkable.contains(&e)
                && self.consistent(&record, e, &scorer)
            {
                linkable.push(e);
            }
        }
        let fresh = EnterpriseId(self.next_enterprise);
        let probable = scored.iter().any(|(_, _, c)| *c >= MatchClass::Review);
        let joins = linkable.len() > 1 && self.joinable(&record, &linkable, &scorer, &may_merge);
        let (outcome, enterprise_id) = match linkable.as_slice() {
            [one] => (Outcome::Linked, *one),
            [first, ..] if joins => (Outcome::Linked, *first),
            // Several distinct identities fit: they may be duplicates of each other; a human decides.
            [_, _, ..] => (Outcome::Review, fresh),
            [] if probable => (Outcome::Review, fresh),
            [] => (Outcome::New, fresh),
        };
        let mut merged = Vec::new();
        if joins {
            for &e in &linkable[1..] {
                let slots = self.members.remove(&e).unwrap_or_default();
                let mut record_ids = Vec::with_capacity(slots.len());
                for &slot in &slots {
                    self.enterprise[slot as usize] = enterprise_id;
                    if let Some(r) = &self.records[slot as usize] {
                        record_ids.push(r.id.clone());
                    }
                }
                self.members.entry(enterprise_id).or_default().extend(slots);
                merged.push(Merged {
                    enterprise_id: e,
                    record_ids,
                });
            }
        }
        let mut returned: Vec<(u32, f64, MatchClass)> = scored
            .into_iter()
            .filter(|(_, _, c)| *c >= MatchClass::Review)
            .collect();
        if outcome == Outcome::Linked {
            // The linked identity's best record first.
            returned.sort_by_key(|(slot, _, _)| self.enterprise[*slot as usize] != enterprise_id);
        }
        returned.truncate(self.config.max_returned);
        let candidates = returned
            .into_iter()
            .filter_map(|(slot, _, _)| self.candidate(&record, slot, &scorer))
            .collect();
        if enterprise_id == fresh {
            self.next_enterprise += 1;
        }
        let decision = Decision {
            record_id: record.id.clone(),
            outcome,
            enterprise_id,
            candidates,
            merged,
        };
        self.add(record, keys, enterprise_id);
        Ok(Some(decision))
    }

    /// Adds a record with an already-decided enterprise identity (rebuilding from persisted
    /// links, or loading a manual decision), without matching.
    pub fn restore(
        &mut self,
        record: Record,
        enterprise_id: EnterpriseId,
    ) -> Result<(), EmpiError> {
        if self.slots.contains_key(&record.id) {
            return Err(EmpiError::Duplicate(record.id));
        }
        self.next_enterprise = self.next_enterprise.max(enterprise_id.0 + 1);
        let keys = blocking::keys(&record);
        self.add(record, keys, enterprise_id);
        Ok(())
    }

    /// Moves a record to another enterprise identity (manual link or merge).
    pub fn assign(
        &mut self,
        record_id: &str,
        enterprise_id: EnterpriseId,
    ) -> Result<(), EmpiError> {
        let slot = *self
            .slots
            .get(record_id)
            .ok_or_else(|| EmpiError::UnknownRecord(record_id.to_owned()))?;
        let old = self.enterprise[slot as usize];
        if let Some(m) = self.members.get_mut(&old) {
            m.retain(|s| *s != slot);
            if m.is_empty() {
                self.members.remove(&old);
            }
        }
        self.enterprise[slot as usize] = enterprise_id;
        self.members.entry(enterprise_id).or_default().push(slot);
        self.next_enterprise = self.next_enterprise.max(enterprise_id.0 + 1);
        Ok(())
    }

    /// A new enterprise identity, never handed out before by this index (for a source that
    /// cannot be indexed, or a split that the caller records itself).
    pub fn reserve(&mut self) -> EnterpriseId {
        let e = EnterpriseId(self.next_enterprise);
        self.next_enterprise += 1;
        e
    }

    /// Makes sure identities up to `enterprise_id` are never handed out again (they are
    /// persisted, perhaps without indexed members).
    pub fn note_used(&mut self, enterprise_id: EnterpriseId) {
        self.next_enterprise = self.next_enterprise.max(enterprise_id.0 + 1);
    }

    /// Moves a record to a new enterprise identity of its own (manual unlink); returns it.
    pub fn detach(&mut self, record_id: &str) -> Result<EnterpriseId, EmpiError> {
        let e = EnterpriseId(self.next_enterprise);
        self.assign(record_id, e)?;
        Ok(e)
    }

    /// Removes a record (deleted Patient).
    pub fn remove(&mut self, record_id: &str) -> Result<Record, EmpiError> {
        let slot = self
            .slots
            .remove(record_id)
            .ok_or_else(|| EmpiError::UnknownRecord(record_id.to_owned()))?;
        for k in std::mem::take(&mut self.keys[slot as usize]) {
            if let Some(b) = self.blocks.get_mut(&k) {
                b.retain(|s| *s != slot);
            }
        }
        let e = self.enterprise[slot as usize];
        if let Some(m) = self.members.get_mut(&e) {
            m.retain(|s| *s != slot);
            if m.is_empty() {
                self.members.remove(&e);
            }
        }
        let record = self.records[slot as usize]
            .take()
            .ok_or_else(|| EmpiError::UnknownRecord(record_id.to_owned()))?;
        self.tf.remove(&record);
        Ok(record)
    }

    /// The enterprise identity of a source record.
    pub fn enterprise_of(&self, record_id: &str) -> Option<EnterpriseId> {
        self.slots
            .get(record_id)
            .map(|s| self.enterprise[*s as usize])
    }

    /// Every record with its enterprise identity, in the order they were added: what a
    /// persisted copy of the index holds, rebuilt by [`EnterpriseIndex::restore`] in this
    /// order (which candidates are scored first when a lookup is over its cap depends on it).
    pub fn entries(&self) -> impl Iterator<Item = (&Record, EnterpriseId)> + '_ {
        self.records
            .iter()
            .zip(&self.enterprise)
            .filter_map(|(r, e)| r.as_ref().map(|r| (r, *e)))
    }

    /// The limits it was made with.
    pub fn config(&self) -> IndexConfig {
        self.config
    }

    /// The identity [`EnterpriseIndex::reserve`] would hand out next.
    pub fn next_enterprise(&self) -> EnterpriseId {
        EnterpriseId(self.next_enterprise)
    }

    /// The source records of an enterprise identity.
    pub fn members(&self, enterprise_id: EnterpriseId) -> Vec<&Record> {
        self.members
            .get(&enterprise_id)
            .map(|m| {
                m.iter()
                    .filter_map(|s| self.records[*s as usize].as_ref())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A source record by id.
    pub fn record(&self, record_id: &str) -> Option<&Record> {
        self.slots
            .get(record_id)
            .and_then(|s| self.records[*s as usize].as_ref())
    }

    /// Sets when record `record_id` was last updated (which no comparison reads); `false`
    /// if there is no such record.
    pub fn set_last_updated(&mut self, record_id: &str, last_updated: Option<String>) -> bool {
        match self
            .slots
            .get(record_id)
            .and_then(|s| self.records[*s as usize].as_mut())
        {
            Some(record) => {
                record.last_updated = last_updated;
                true
            }
            None => false,
        }
    }

    fn add(&mut self, record: Record, keys: Vec<u64>, enterprise_id: EnterpriseId) {
        let slot = self.records.len() as u32;
        for k in &keys {
            self.blocks.entry(*k).or_default().push(slot);
        }
        self.tf.add(&record);
        self.slots.insert(record.id.clone(), slot);
        self.records.push(Some(record));
        self.keys.push(keys);
        self.enterprise.push(enterprise_id);
        self.members.entry(enterprise_id).or_default().push(slot);
    }

    /// Candidate slots sharing a usable block, scored, best first.
    fn scored_candidates(
        &self,
        record: &Record,
        keys: &[u64],
        scorer: &Scorer<'_>,
    ) -> Vec<(u32, f64, MatchClass)> {
        self.ranked_candidates(keys, |other| Some(scorer.quick(record, other)))
    }

    /// [`EnterpriseIndex::scored_candidates`] without the candidates below review, most of
    /// them not compared in full ([`Scorer::quick_if_reviewable`]).
    fn reviewable_candidates(
        &self,
        record: &Record,
        keys: &[u64],
        scorer: &Scorer<'_>,
    ) -> Vec<(u32, f64, MatchClass)> {
        let bound = scorer.review_bound();
        self.ranked_candidates(keys, |other| {
            scorer
                .quick_if_reviewable(&bound, record, other)
                .filter(|(_, class)| *class >= MatchClass::Review)
        })
    }

    /// The candidate slots `score` keeps, with their weight and class, best first (ties in
    /// slot order).
    fn ranked_candidates(
        &self,
        keys: &[u64],
        score: impl Fn(&Record) -> Option<(f64, MatchClass)>,
    ) -> Vec<(u32, f64, MatchClass)> {
        let mut scored: Vec<(u32, f64, MatchClass)> = self
            .candidate_slots(keys)
            .into_iter()
            .filter_map(|s| {
                let (w, class) = score(self.records[s as usize].as_ref()?)?;
                Some((s, w, class))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored
    }

    /// The slots worth scoring for a record with these blocking keys: the members of usable
    /// blocks (at most `max_block` members) that are in a small block (`small_block`), share
    /// at least two keys with the record or have a single key; every member when the record
    /// has one larger block at most. Over `max_candidates`, those with the most evidence in
    /// the keys they share, a key counting by its rarity (the log of the population over its
    /// block's size), so that a shared phone or identifier, or several shared keys, outrank
    /// a common name; among equals the newest, the likeliest duplicates.
    fn candidate_slots(&self, keys: &[u64]) -> Vec<u32> {
        let population = self.slots.len() as f32 + 1.0;
        let blocks: Vec<(&[u32], f32, bool)> = keys
            .iter()
            .filter_map(|k| self.blocks.get(k))
            .filter(|b| !b.is_empty() && b.len() <= self.config.max_block)
            .map(|b| {
                let weight = (population / b.len() as f32).ln();
                (b.as_slice(), weight, b.len() <= self.config.small_block)
            })
            .collect();
        let listed: usize = blocks.iter().map(|(b, _, _)| b.len()).sum();
        let large_blocks = blocks.iter().filter(|(_, _, small)| !small).count();
        // Blocks hold their slots in ascending order (slots are handed out in increasing
        // order and removal keeps the order), so one merge pass counts each slot's keys.
        let mut ranked: Vec<(u32, f32)> = Vec::with_capacity(listed.min(4096));
        let mut at = vec![0usize; blocks.len()];
        loop {
            let next = blocks
                .iter()
                .zip(&at)
                .filter_map(|((b, _, _), i)| b.get(*i).copied())
                .min();
            let Some(slot) = next else { break };
            let (mut evidence, mut shared, mut small) = (0.0, 0, false);
            for ((b, weight, is_small), i) in blocks.iter().zip(at.iter_mut()) {
                if b.get(*i) == Some(&slot) {
                    evidence += weight;
                    shared += 1;
                    small |= is_small;
                    *i += 1;
                }
            }
            // A record with one large block at most (its birth date and phone missing, its
            // identifiers no one else's), or a member with a single key, cannot share two
            // large ones: missing data is not a reason to skip a comparison.
            let sparse = large_blocks <= 1 || self.keys[slot as usize].len() <= 1;
            if small || shared >= 2 || sparse {
                ranked.push((slot, evidence));
            }
        }
        let cap = self.config.max_candidates;
        if ranked.len() > cap {
            if cap == 0 {
                return Vec::new();
            }
            ranked.select_nth_unstable_by(cap - 1, |a, b| {
                b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0))
            });
            ranked.truncate(cap);
        }
        ranked.into_iter().map(|(slot, _)| slot).collect()
    }

    /// True when no (checked) member of `e` conflicts with `record` (a clear non-match, a
    /// possible twin, conflicting national numbers), or another member explains the conflict
    /// as a data-entry error ([`crate::chain`]): a transitive chain must not pull different
    /// people into one identity.
    fn consistent(&self, record: &Record, e: EnterpriseId, scorer: &Scorer<'_>) -> bool {
        let Some(members) = self.members.get(&e) else {
            return true;
        };
        let checked: Vec<&Record> = members
            .iter()
            .take(self.config.max_members_checked)
            .filter_map(|s| self.records[*s as usize].as_ref())
            .collect();
        checked.iter().all(|m| {
            scorer
                .chain_conflict(record, m, checked.iter().copied())
                .is_none()
        })
    }

    /// True when `record` may join `identities` into one (see
    /// [`EnterpriseIndex::insert_record_with`]).
    fn joinable(
        &self,
        record: &Record,
        identities: &[EnterpriseId],
        scorer: &Scorer<'_>,
        may_merge: &impl Fn(EnterpriseId) -> bool,
    ) -> bool {
        if !identities.iter().all(|e| may_merge(*e)) {
            return false;
        }
        let groups: Vec<Vec<&Record>> = identities
            .iter()
            .map(|e| {
                self.members
                    .get(e)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| self.records[*s as usize].as_ref())
                    .collect()
            })
            .collect();
        if groups.iter().map(Vec::len).sum::<usize>() > self.config.max_members_checked {
            return false;
        }
        let union: Vec<&Record> = std::iter::once(record)
            .chain(groups.iter().flatten().copied())
            .collect();
        groups.iter().enumerate().all(|(i, a)| {
            groups[i + 1..].iter().flatten().all(|y| {
                a.iter()
                    .all(|x| scorer.chain_conflict(x, y, union.iter().copied()).is_none())
            })
        })
    }

    fn candidate(&self, record: &Record, slot: u32, scorer: &Scorer<'_>) -> Option<Candidate> {
        let other = self.records[slot as usize].as_ref()?;
        Some(Candidate {
            record_id: other.id.clone(),
            enterprise_id: self.enterprise[slot as usize],
            score: scorer.score(record, other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patient(id: &str, given: &str, family: &str, birth: &str, phone: &str) -> Value {
        json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
            "name": [{"family": family, "given": [given]}],
            "telecom": [{"system": "phone", "value": phone}]})
    }

    fn index() -> EnterpriseIndex {
        EnterpriseIndex::new(Model::default(), IndexConfig::default())
    }

    /// Generated records with every error class of issue 19, twins and household members.
    fn generated_records(count: usize) -> Vec<Record> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/synthea-1000/Patient.000.ndjson");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (the shared Synthea sample)", path.display()));
        let seeds: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let config = crate::synth::GenConfig {
            seed: 19,
            count: Some(count),
            japanese_rate: 0.3,
            replaced_rate: 0.5,
            ..Default::default()
        };
        crate::synth::generate(&seeds, &config)
            .patients
            .iter()
            .map(|p| Record::from_patient(p).unwrap())
            .collect()
    }

    /// The candidates an insert decides on, found with the bound that spares most
    /// comparisons, are exactly those a full comparison of every candidate finds at review
    /// or above: same records, weights, classes and order. Checked under the default model
    /// and under one trained on the records, whose term frequencies move name weights.
    #[test]
    fn the_review_bound_leaves_out_only_candidates_below_review() {
        let records = generated_records(4_000);
        let mut trained = Model::default();
        crate::cluster::train(
            &records,
            &mut trained,
            &crate::cluster::ClusterConfig::default(),
            200_000,
            7,
        );
        for model in [Model::default(), trained] {
            let mut ix = EnterpriseIndex::new(model, IndexConfig::default());
            let (mut kept, mut spared) = (0, 0);
            for record in &records {
                let keys = blocking::keys(record);
                let scorer = Scorer::new(&ix.model, Some(&ix.tf));
                let full: Vec<_> = ix
                    .scored_candidates(record, &keys, &scorer)
                    .into_iter()
                    .filter(|(_, _, c)| *c >= MatchClass::Review)
                    .collect();
                let bounded = ix.reviewable_candidates(record, &keys, &scorer);
                assert_eq!(bounded, full, "candidates of {}", record.id);
                kept += full.len();
                let bound = scorer.review_bound();
                spared += ix
                    .candidate_slots(&keys)
                    .into_iter()
                    .filter_map(|s| ix.records[s as usize].as_ref())
                    .filter(|other| scorer.quick_if_reviewable(&bound, record, other).is_none())
                    .count();
                ix.insert_record(record.clone()).unwrap();
            }
            // The set exercises both sides of the bound.
            assert!(kept > 1_000 && spared > 500, "{kept} kept, {spared} spared");
        }
    }

    #[test]
    fn links_duplicates_and_keeps_strangers_apart() {
        let mut ix = index();
        let a = ix
            .insert(&patient(
                "a",
                "Margaret",
                "Koch",
                "1925-06-26",
                "555-162-4456",
            ))
            .unwrap();
        let b = ix
            .insert(&patient("b", "Peggy", "Koch", "1925-26-06", "5551624456"))
            .unwrap();
        let c = ix
            .insert(&patient("c", "John", "Smith", "1971-05-12", "555-999-0000"))
            .unwrap();
        assert_eq!(a.outcome, Outcome::New);
        assert_eq!(b.outcome, Outcome::Linked);
        assert_eq!(b.enterprise_id, a.enterprise_id);
        assert_eq!(b.candidates[0].record_id, "a");
        assert_eq!(c.outcome, Outcome::New);
        assert_ne!(c.enterprise_id, a.enterprise_id);
        assert_eq!(ix.members(a.enterprise_id).len(), 2);
        assert!(matches!(
            ix.insert(&patient("a", "x", "y", "2000-01-01", "1")),
            Err(EmpiError::Duplicate(_))
        ));
    }

    /// A record of one woman at one address and phone, with the given identifiers: a national
    /// number (`ssn`) and a hospital's record number (`mrn`), either may be empty.
    fn person(id: &str, given: &str, birth: &str, ssn: &str, mrn: &str) -> Value {
        let mut identifiers = Vec::new();
        if !ssn.is_empty() {
            identifiers.push(json!({"system": crate::identifier::US_SSN, "value": ssn}));
        }
        if !mrn.is_empty() {
            identifiers.push(json!({"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "http://hospital.example.org/mrn", "value": mrn}));
        }
        json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
            "name": [{"family": "Koch", "given": [given]}], "identifier": identifiers,
            "address": [{"line": ["12 Elm St"], "city": "Springfield", "postalCode": "01103"}],
            "telecom": [{"system": "phone", "value": "555-162-4456"}]})
    }

    /// `a` (given name replaced, national number) and `b` (birth date replaced, record
    /// number) are each one error away from the true record and two from each other.
    fn two_halves() -> EnterpriseIndex {
        let mut ix = index();
        let a = ix
            .insert(&person("a", "Alice", "1990-01-02", "123-45-6789", ""))
            .unwrap();
        let b = ix
            .insert(&person("b", "Mary", "1971-08-30", "", "M-1"))
            .unwrap();
        assert_ne!(b.enterprise_id, a.enterprise_id, "{b:?}");
        ix
    }

    /// A held identity stops a decision only when it has a candidate close enough to link or
    /// review; a held stranger scored below that does not, and a refusal changes nothing.
    #[test]
    fn a_held_identity_holds_back_only_the_records_that_match_it() {
        let mut ix = index();
        let a = patient("a", "Margaret", "Koch", "1925-06-26", "555-162-4456");
        let ea = ix.insert(&a).unwrap().enterprise_id;
        let stranger = patient("s", "John", "Koch", "1971-05-12", "555-999-0000");
        let es = ix.insert(&stranger).unwrap().enterprise_id;
        let next = ix.next_enterprise();

        let duplicate = patient("b", "Peggy", "Koch", "1925-26-06", "5551624456");
        let record = Record::from_patient(&duplicate).unwrap();
        let held = ix
            .insert_record_unless(record, |_| true, |e| e == ea)
            .unwrap();
        assert!(held.is_none(), "{held:?}");
        assert_eq!((ix.len(), ix.next_enterprise()), (2, next));
        assert!(ix.record("b").is_none());

        // Holding the stranger's identity (a Koch too, so compared) does not stop the link.
        let record = Record::from_patient(&duplicate).unwrap();
        let linked = ix
            .insert_record_unless(record, |_| true, |e| e == es)
            .unwrap()
            .expect("the stranger is no candidate to link or review");
        assert_eq!(
            (linked.outcome, linked.enterprise_id),
            (Outcome::Linked, ea)
        );
    }

    #[test]
    fn a_record_matching_two_identities_joins_them() {
        let mut ix = two_halves();
        let (ea, eb) = (
            ix.enterprise_of("a").unwrap(),
            ix.enterprise_of("b").unwrap(),
        );
        // The record as it should be matches both.
        let c = ix
            .insert(&person("c", "Mary", "1990-01-02", "123-45-6789", "M-1"))
            .unwrap();
        assert_eq!(c.outcome, Outcome::Linked, "{c:?}");
        assert_eq!(c.merged.len(), 1, "{c:?}");
        let survivor = c.enterprise_id;
        let retired = c.merged[0].enterprise_id;
        assert!([ea, eb].contains(&survivor) && [ea, eb].contains(&retired));
        assert_ne!(retired, survivor);
        assert_eq!(ix.members(survivor).len(), 3);
        assert!(ix.members(retired).is_empty());
        for id in ["a", "b", "c"] {
            assert_eq!(ix.enterprise_of(id), Some(survivor));
        }
        assert!(c.candidates.iter().all(|c| c.enterprise_id == survivor));
    }

    #[test]
    fn no_join_where_the_caller_forbids_it_or_members_conflict() {
        let c = || Record::from_patient(&person("c", "Mary", "1990-01-02", "123-45-6789", "M-1"));
        // A person decided about one of them (the caller's rule): review, nothing moves.
        let mut ix = two_halves();
        let (ea, eb) = (
            ix.enterprise_of("a").unwrap(),
            ix.enterprise_of("b").unwrap(),
        );
        let d = ix.insert_record_with(c().unwrap(), |e| e != eb).unwrap();
        assert_eq!(d.outcome, Outcome::Review, "{d:?}");
        assert!(d.merged.is_empty());
        assert_eq!(ix.enterprise_of("a"), Some(ea));
        assert_eq!(ix.enterprise_of("b"), Some(eb));
        // Two people of one name, birth date and home told apart by their national numbers
        // are not joined through a record without one that resembles both.
        let mut ix = index();
        let t1 = ix
            .insert(&person("t1", "Mary", "1990-01-02", "123-45-6789", ""))
            .unwrap();
        let t2 = ix
            .insert(&person("t2", "Mary", "1990-01-02", "987-65-4321", ""))
            .unwrap();
        assert_ne!(t1.enterprise_id, t2.enterprise_id, "{t2:?}");
        let d = ix
            .insert(&person("x", "Mary", "1990-01-02", "", ""))
            .unwrap();
        assert!(d.merged.is_empty(), "{d:?}");
        let links = d
            .candidates
            .iter()
            .filter(|c| c.score.class == MatchClass::Link);
        assert_eq!(links.count(), 2, "it fits both: {d:?}");
        assert_eq!(d.outcome, Outcome::Review, "a person decides");
        assert_ne!(ix.enterprise_of("t1"), ix.enterprise_of("t2"));
    }

    #[test]
    fn members_of_large_blocks_are_scored_when_they_share_two_keys() {
        let config = IndexConfig {
            small_block: 2,
            ..IndexConfig::default()
        };
        let mut ix = EnterpriseIndex::new(Model::default(), config);
        let people = [
            ("both", "Mary", "Koch", "1990-01-02"),
            ("name-1", "Mia", "Koch", "1961-03-04"),
            ("name-2", "Meg", "Koch", "1972-05-06"),
            ("date-1", "Ann", "Lund", "1990-01-02"),
            ("date-2", "Bea", "Berg", "1990-01-02"),
        ];
        for (i, (id, given, family, birth)) in people.iter().enumerate() {
            let p = patient(id, given, family, birth, &format!("555-000-000{i}"));
            ix.restore(
                Record::from_patient(&p).unwrap(),
                EnterpriseId(i as u64 + 1),
            )
            .unwrap();
        }
        let probe = Record::from_patient(&patient("q", "Mary", "Koch", "1990-01-02", "1")).unwrap();
        let keys = blocking::keys(&probe);
        let ids = |ix: &EnterpriseIndex| -> Vec<String> {
            let mut ids: Vec<String> = ix
                .candidate_slots(&keys)
                .into_iter()
                .map(|s| ix.records[s as usize].as_ref().unwrap().id.clone())
                .collect();
            ids.sort();
            ids
        };
        // Three share the name key, three the birth date: both blocks are large.
        assert_eq!(ids(&ix), ["both"]);
        // Small blocks are scored whole.
        ix.config.small_block = 3;
        assert_eq!(ids(&ix).len(), 5);
        // A record with one large block (here: no birth date) is compared with its members.
        ix.config.small_block = 2;
        let no_date = Record::from_patient(&json!({"resourceType": "Patient", "id": "n",
            "name": [{"family": "Koch", "given": ["Mary"]}]}))
        .unwrap();
        assert_eq!(ix.candidate_slots(&blocking::keys(&no_date)).len(), 3);
        // Over the cap, the most evidence first: the member sharing both keys.
        ix.config.small_block = 3;
        ix.config.max_candidates = 1;
        assert_eq!(ids(&ix), ["both"]);
    }

    #[test]
    fn twins_go_to_review_not_to_one_identity() {
        let mut ix = index();
        let a = ix
            .insert(&patient("a", "Mary", "Koch", "1990-01-02", "555-162-4456"))
            .unwrap();
        let b = ix
            .insert(&patient("b", "Alice", "Koch", "1990-01-02", "555-162-4456"))
            .unwrap();
        assert_eq!(b.outcome, Outcome::Review);
        assert_ne!(b.enterprise_id, a.enterprise_id);
        assert!(
            b.candidates[0]
                .score
                .notes
                .contains(&crate::score::Note::PossibleTwin)
        );
    }

    #[test]
    fn restore_assign_detach_remove_and_find() {
        let mut ix = index();
        let r = |p: &Value| Record::from_patient(p).unwrap();
        ix.restore(
            r(&patient("a", "Mary", "Koch", "1990-01-02", "1")),
            EnterpriseId(40),
        )
        .unwrap();
        ix.restore(
            r(&patient("b", "John", "Smith", "1971-05-12", "2")),
            EnterpriseId(41),
        )
        .unwrap();
        // Manual merge, then unlink: the index applies what it is told.
        ix.assign("b", EnterpriseId(40)).unwrap();
        assert_eq!(ix.members(EnterpriseId(40)).len(), 2);
        let e = ix.detach("b").unwrap();
        assert!(e.0 > 41, "fresh ids never reuse persisted ones");
        assert_eq!(ix.enterprise_of("b"), Some(e));
        let probe = r(&patient("q", "Mary", "Koch", "1990-01-02", "1"));
        let found = ix.find(&probe);
        assert_eq!(found[0].record_id, "a");
        assert_eq!(ix.len(), 2, "find does not insert");
        ix.remove("a").unwrap();
        assert!(ix.find(&probe).is_empty());
        assert!(matches!(ix.remove("a"), Err(EmpiError::UnknownRecord(_))));
    }
}
