//! Planning the EMPI writes of one unit of work: for each Patient write, the link decision
//! and the golden-record, review-task and audit writes that commit with it.
//!
//! The planner works on the live [`Cache`] so that the Patients of one transaction see each
//! other, and keeps an undo log: after the commit (whatever its result) the caller undoes the
//! plan, applies the Patient versions the commit returned (`Cache::apply_committed`) and
//! refreshes the cache from the change feed, which then holds exactly what was committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use empi::golden::Survivorship;
use empi::hashing::FxHashMap;
use empi::{EnterpriseId, Outcome as MatchOutcome, Record};
use serde_json::{Value, json};
use store::{RequestContext, SearchQuery, Store, StoreError, WriteEntry, WriteOp};

use super::cache::Cache;
use super::resources::{
    Basis, CANDIDATE_TAG_SYSTEM, LinkMeta, ReviewCandidate, closed_task, enterprise_of_id,
    is_golden, patient_id_of, retire_candidates, retired_golden, review_task, stored_links,
    with_links,
};
use super::review_query;

/// How to put back what planning did to the index.
#[derive(Debug)]
enum Undo {
    Inserted(String),
    Removed(Box<Record>, EnterpriseId),
    Moved(String, EnterpriseId),
}

/// The EMPI side of one unit of work.
#[derive(Debug)]
pub(crate) struct Planner<'a> {
    pub cache: &'a mut Cache,
    undo: Vec<Undo>,
    /// Membership after this unit, for every identity it touches.
    touched: BTreeMap<EnterpriseId, BTreeMap<String, LinkMeta>>,
    /// Identities this unit retires by a merge: (retired, survivor).
    retired: BTreeMap<EnterpriseId, EnterpriseId>,
    /// Source -> identity, as planned (overrides the cache).
    moved: HashMap<String, Option<EnterpriseId>>,
    /// Planned source bodies (by id or placeholder).
    bodies: HashMap<String, Value>,
    /// Review items to open: (source, candidates), written by `finish` without the
    /// candidates this unit retires.
    reviews: Vec<(String, Vec<ReviewCandidate>)>,
    /// Stored review tasks this unit changes: id -> (version read, new body).
    tasks: BTreeMap<String, (u64, Value)>,
    /// Ids of the stored tasks `finish` wrote updates for.
    edited_tasks: Vec<String>,
    /// Extra writes (audit events).
    pub extra: Vec<WriteEntry>,
    /// The membership of each golden record `finish` composed, as its links say it
    /// ([`Planned::goldens`]).
    composed: FxHashMap<EnterpriseId, BTreeMap<String, LinkMeta>>,
    /// Golden records composed before `finish` ([`Planner::compose_ahead`]).
    ahead: FxHashMap<EnterpriseId, AheadGolden>,
    /// Sources written again since [`Planner::compose_ahead`] (their bodies changed under
    /// a golden record composed from them).
    written_after_ahead: BTreeSet<String>,
    now: String,
}

/// A golden record composed ahead of [`Planner::finish`] (while the chunk before commits),
/// with what it was composed from: `finish` takes it if the identity's members and stored
/// version are still those, and none of its sources was written again.
#[derive(Debug)]
pub(crate) struct AheadGolden {
    pub links: BTreeMap<String, LinkMeta>,
    pub prior: Option<u64>,
    /// The golden record's write; its index rows may be extracted before `finish`.
    pub entry: WriteEntry,
}

impl<'a> Planner<'a> {
    pub fn new(cache: &'a mut Cache, now: String) -> Self {
        Planner {
            cache,
            undo: Vec::new(),
            touched: BTreeMap::new(),
            retired: BTreeMap::new(),
            moved: HashMap::new(),
            bodies: HashMap::new(),
            reviews: Vec::new(),
            tasks: BTreeMap::new(),
            edited_tasks: Vec::new(),
            extra: Vec::new(),
            composed: FxHashMap::default(),
            ahead: FxHashMap::default(),
            written_after_ahead: BTreeSet::new(),
            now,
        }
    }

    /// Moves the unit's time on (`now` is later): for what it plans after a commit that
    /// ended after the unit began, so that its sources still rank as the most recent.
    pub fn move_now_to(&mut self, now: String) {
        self.now = now;
    }

    pub fn now(&self) -> &str {
        &self.now
    }

    /// Identities this plan changes (a retired one included: `retire` empties its members).
    pub fn touched(&self) -> impl Iterator<Item = EnterpriseId> + '_ {
        self.touched.keys().copied()
    }

    /// The identity `source` belongs to, as planned so far.
    pub fn enterprise_of(&self, source: &str) -> Option<EnterpriseId> {
        match self.moved.get(source) {
            Some(e) => *e,
            None => self.cache.member_of.get(source).copied(),
        }
    }

    /// Members of `e` as planned so far.
    pub fn members(&mut self, e: EnterpriseId) -> &mut BTreeMap<String, LinkMeta> {
        let cache = &*self.cache;
        self.touched
            .entry(e)
            .or_insert_with(|| match cache.goldens.get(&e) {
                Some(g) => g.links.clone(),
                // A provisional identity of sources no golden record lists yet: they get one now.
                None => cache
                    .index
                    .members(e)
                    .into_iter()
                    .filter(|r| cache.unlinked.contains(&r.id))
                    .map(|r| (r.id.clone(), LinkMeta::auto("new")))
                    .collect(),
            })
    }

    fn set_member(&mut self, source: &str, e: Option<EnterpriseId>, meta: Option<LinkMeta>) {
        if let Some(old) = self.enterprise_of(source)
            && Some(old) != e
        {
            self.members(old).remove(source);
        }
        if let (Some(e), Some(meta)) = (e, meta) {
            self.members(e).insert(source.to_owned(), meta);
        }
        self.moved.insert(source.to_owned(), e);
    }

    fn link_of(&self, source: &str) -> Option<LinkMeta> {
        let e = self.enterprise_of(source)?;
        match self.touched.get(&e) {
            Some(m) => m.get(source).cloned(),
            None => self.cache.goldens.get(&e)?.links.get(source).cloned(),
        }
    }

    fn index_remove(&mut self, source: &str) {
        if let Some(e) = self.cache.index.enterprise_of(source)
            && let Ok(record) = self.cache.index.remove(source)
        {
            self.undo.push(Undo::Removed(Box::new(record), e));
        }
    }

    fn index_move(&mut self, source: &str, e: EnterpriseId) -> Result<(), StoreError> {
        if let Some(old) = self.cache.index.enterprise_of(source)
            && old != e
        {
            self.cache.index.assign(source, e).map_err(backend)?;
            self.undo.push(Undo::Moved(source.to_owned(), old));
        }
        Ok(())
    }

    /// The source as the plan keeps it (its id, this unit's `lastUpdated`) and its record.
    fn view(&self, source: &str, body: &Value) -> Result<(Value, Option<Record>), StoreError> {
        let mut view = match body {
            Value::Object(_) => body.clone(),
            _ => {
                return Err(StoreError::Invalid(
                    "a Patient must be a JSON object".into(),
                ));
            }
        };
        view["id"] = json!(source);
        // Ranks as the most recent source when the golden record is composed.
        if !view["meta"].is_object() {
            view["meta"] = json!({});
        }
        view["meta"]["lastUpdated"] = json!(self.now);
        let record = Record::from_patient(&view).ok();
        Ok((view, record))
    }

    /// A source Patient is written (created, or a new version). `source` is its id, or the
    /// transaction placeholder (`urn:uuid:`) of a create whose id the store assigns.
    pub fn write(&mut self, source: &str, body: &Value) -> Result<(), StoreError> {
        let (view, record) = self.view(source, body)?;
        self.write_view(source, view, record, None).map(|_| ())
    }

    /// [`Planner::write`] of a new source (not in the index, not written earlier in this
    /// unit, with something to match on), unless its decision would involve an identity in
    /// `busy` (one that a plan still being committed changes: its golden record and members
    /// reach the cache only once that commit is applied): one with a candidate close enough
    /// to link or to review. Then nothing changes and it returns `false`, as it does for any
    /// other source; the caller plans it once that commit is applied.
    pub fn write_unless_busy(
        &mut self,
        source: &str,
        body: &Value,
        busy: &BTreeSet<EnterpriseId>,
    ) -> Result<bool, StoreError> {
        let known = self.enterprise_of(source).is_some()
            || self.cache.index.enterprise_of(source).is_some()
            || self.bodies.contains_key(source);
        if known {
            return Ok(false);
        }
        let (view, record) = self.view(source, body)?;
        if record.is_none() {
            return Ok(false);
        }
        self.write_view(source, view, record, Some(busy))
    }

    /// [`Planner::write`] of `view` (and its record), unless the decision would involve an
    /// identity in `held` (`false`: nothing changed; see [`Planner::write_unless_busy`],
    /// whose sources are new and have a record).
    fn write_view(
        &mut self,
        source: &str,
        view: Value,
        record: Option<Record>,
        held: Option<&BTreeSet<EnterpriseId>>,
    ) -> Result<bool, StoreError> {
        if !self.ahead.is_empty() {
            self.written_after_ahead.insert(source.to_owned());
        }
        self.bodies.insert(source.to_owned(), view);
        let prior = self.enterprise_of(source);
        let prior_link = self.link_of(source);
        self.index_remove(source);
        // Manual decisions stick; a member of a larger identity is not split by an edit.
        if let (Some(e), Some(link)) = (prior, &prior_link)
            && (link.basis == Basis::Manual || self.members(e).len() > 1)
        {
            if let Some(record) = record {
                self.cache.index.restore(record, e).map_err(backend)?;
                self.undo.push(Undo::Inserted(source.to_owned()));
            }
            self.set_member(source, Some(e), Some(link.clone()));
            return Ok(true);
        }
        let Some(record) = record else {
            // Nothing to match on (no name, no birth date...): an identity of its own.
            let e = prior.unwrap_or_else(|| self.cache.index.reserve());
            self.set_member(source, Some(e), Some(LinkMeta::auto("new")));
            return Ok(true);
        };
        let decision = {
            // An automatic merge never retires or grows an identity a person decided about.
            let Planner { cache, touched, .. } = &mut *self;
            let Cache { index, goldens, .. } = &mut **cache;
            let touched = &*touched;
            let goldens = &*goldens;
            let may_merge = |e| {
                let links = match touched.get(&e) {
                    Some(links) => links,
                    None => match goldens.get(&e) {
                        Some(g) if !g.active => return false,
                        Some(g) => &g.links,
                        None => return true,
                    },
                };
                links.values().all(|l| l.basis == Basis::Auto)
            };
            let held = |e| held.is_some_and(|h| h.contains(&e));
            index.insert_record_unless(record, may_merge, held)
        }
        .map_err(backend)?;
        let Some(decision) = decision else {
            // Held back (a new source: nothing else was changed).
            self.bodies.remove(source);
            return Ok(false);
        };
        self.undo.push(Undo::Inserted(source.to_owned()));
        let best = decision.candidates.first();
        let (e, meta) = match decision.outcome {
            MatchOutcome::Linked => {
                let meta = LinkMeta {
                    basis: Basis::Auto,
                    outcome: "linked".into(),
                    score: best.map(|c| c.score.probability),
                    explanation: best.and_then(|c| serde_json::to_string(&c.score).ok()),
                    reason: None,
                };
                let survivor = decision.enterprise_id;
                for merged in &decision.merged {
                    let retired = merged.enterprise_id;
                    for member in &merged.record_ids {
                        self.undo.push(Undo::Moved(member.clone(), retired));
                        let meta = LinkMeta {
                            reason: Some(format!(
                                "identity {retired} merged automatically into {survivor}: \
                                 a later source matched both"
                            )),
                            ..LinkMeta::auto("merged")
                        };
                        self.set_member(member, Some(survivor), Some(meta));
                    }
                    // An identity with a golden record keeps it, retired (`replaced-by`); one
                    // planned in this unit or not yet given one simply ends.
                    if self.cache.goldens.contains_key(&retired) {
                        self.retire(retired, survivor);
                    }
                }
                (survivor, meta)
            }
            outcome => {
                // A source alone keeps its identity when re-matched without a link.
                let e = match prior {
                    Some(e) => {
                        self.index_move(source, e)?;
                        e
                    }
                    None => decision.enterprise_id,
                };
                let review = outcome == MatchOutcome::Review;
                let meta = LinkMeta::auto(if review { "review" } else { "new" });
                let already_in_review = prior_link.as_ref().is_some_and(|l| l.outcome == "review");
                if review && !already_in_review {
                    let candidates: Vec<ReviewCandidate> = decision
                        .candidates
                        .iter()
                        .filter(|c| c.enterprise_id != e)
                        .map(|c| ReviewCandidate {
                            enterprise: c.enterprise_id,
                            probability: c.score.probability,
                            explanation: serde_json::to_string(&c.score).unwrap_or_default(),
                        })
                        .collect();
                    self.reviews.push((source.to_owned(), candidates));
                }
                (e, meta)
            }
        };
        self.set_member(source, Some(e), Some(meta));
        Ok(true)
    }

    /// A source Patient is deleted.
    pub fn delete(&mut self, source: &str) {
        self.index_remove(source);
        self.set_member(source, None, None);
    }

    /// Moves `source` into `e` by a person's decision.
    pub fn assign(
        &mut self,
        source: &str,
        e: EnterpriseId,
        meta: LinkMeta,
    ) -> Result<(), StoreError> {
        if self.cache.index.record(source).is_some() {
            self.index_move(source, e)?;
        }
        self.set_member(source, Some(e), Some(meta));
        Ok(())
    }

    /// Marks `retired` as merged into `survivor` (its golden record becomes `replaced-by`).
    pub fn retire(&mut self, retired: EnterpriseId, survivor: EnterpriseId) {
        self.members(retired).clear();
        self.retired.insert(retired, survivor);
    }

    /// Closes the open review tasks about `sources` as settled by `decision` (a person's
    /// link, unlink, merge or unmerge), naming the identity each source is in now.
    pub async fn close_reviews(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        sources: &[String],
        decision: &str,
    ) -> Result<(), StoreError> {
        for source in sources {
            let golden = self.enterprise_of(source).unwrap_or(EnterpriseId(0));
            let open = store
                .search(ctx, &review_query(store, Some(source))?)
                .await?;
            for task in open.matches {
                let (version, body) = self.task_body(task)?;
                let closed = closed_task(body, decision, golden, &self.now);
                self.tasks.insert(
                    closed["id"].as_str().unwrap_or_default().to_owned(),
                    (version, closed),
                );
            }
        }
        Ok(())
    }

    /// A stored task's body, or the one this unit already made of it.
    fn task_body(&self, task: store::StoredResource) -> Result<(u64, Value), StoreError> {
        if let Some((version, body)) = self.tasks.get(&task.id) {
            return Ok((*version, body.clone()));
        }
        let body: Value = serde_json::from_str(task.body.as_deref().unwrap_or("{}"))
            .map_err(|e| StoreError::Backend(format!("stored Task/{}: {e}", task.id)))?;
        Ok((task.version, body))
    }

    /// Open review tasks naming a retired identity lose it as a candidate (or get its
    /// survivor instead); see [`retire_candidates`].
    async fn retire_in_reviews(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        gone: &BTreeMap<EnterpriseId, Option<EnterpriseId>>,
    ) -> Result<(), StoreError> {
        for e in gone.keys() {
            let params = [
                ("_tag".to_owned(), format!("{CANDIDATE_TAG_SYSTEM}|{e}")),
                ("status".to_owned(), "requested".to_owned()),
            ];
            let mut query = SearchQuery::parse(Some("Task"), &params, store.extractor(), false)?;
            query.count = store::search::MAX_COUNT;
            loop {
                let page = store.search(ctx, &query).await?;
                for task in page.matches {
                    let (version, body) = self.task_body(task)?;
                    if body["status"] != "requested" {
                        continue;
                    }
                    let own = body["focus"]["reference"]
                        .as_str()
                        .and_then(patient_id_of)
                        .and_then(|s| self.enterprise_of(s));
                    if let Some(changed) = retire_candidates(&body, gone, own, &self.now) {
                        let id = changed["id"].as_str().unwrap_or_default().to_owned();
                        self.tasks.insert(id, (version, changed));
                    }
                }
                match page.next {
                    Some(next) => query.after = Some(store::search::Cursor::decode(&next)?),
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Composes now the golden record of every identity touched so far that keeps sources
    /// and is not retired, for [`Planner::finish`] to take unless the identity changes again
    /// first. Meant for the time the chunk before this one commits: none of these
    /// identities is one it changes (see `pipeline`).
    pub async fn compose_ahead(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        survivorship: &Survivorship,
    ) -> Result<(), StoreError> {
        let todo: Vec<(EnterpriseId, BTreeMap<String, LinkMeta>)> = self
            .touched
            .iter()
            .filter(|(e, links)| !links.is_empty() && !self.retired.contains_key(e))
            .map(|(e, links)| (*e, links.clone()))
            .collect();
        for (e, links) in todo {
            let prior = self.cache.goldens.get(&e).map(|g| g.version);
            let entry = self
                .golden_write(store, ctx, survivorship, e, &links, prior)
                .await?;
            self.ahead.insert(
                e,
                AheadGolden {
                    links,
                    prior,
                    entry,
                },
            );
        }
        Ok(())
    }

    /// The golden records composed ahead, taken out (to extract their index rows
    /// elsewhere); give them back with [`Planner::restore_ahead`].
    pub fn take_ahead(&mut self) -> FxHashMap<EnterpriseId, AheadGolden> {
        std::mem::take(&mut self.ahead)
    }

    pub fn restore_ahead(&mut self, ahead: FxHashMap<EnterpriseId, AheadGolden>) {
        self.ahead = ahead;
    }

    /// The write of identity `e`'s golden record, composed from its sources `links` (planned
    /// bodies, else stored ones), over stored version `prior`.
    async fn golden_write(
        &self,
        store: &dyn Store,
        ctx: &RequestContext,
        survivorship: &Survivorship,
        e: EnterpriseId,
        links: &BTreeMap<String, LinkMeta>,
        prior: Option<u64>,
    ) -> Result<WriteEntry, StoreError> {
        // Planned bodies are borrowed; stored ones are read first, then borrowed in order.
        let mut stored = Vec::new();
        for source in links.keys() {
            if !self.bodies.contains_key(source)
                && let Some(version) = store.load(ctx, "Patient", source).await?
                && let Some(body) = version.body.as_deref()
            {
                let body: Value = serde_json::from_str(body)
                    .map_err(|e| StoreError::Backend(format!("stored Patient/{source}: {e}")))?;
                stored.push((source.as_str(), body));
            }
        }
        let sources: Vec<&Value> = links
            .keys()
            .filter_map(|source| {
                self.bodies.get(source).or_else(|| {
                    stored
                        .iter()
                        .find(|(id, _)| *id == source.as_str())
                        .map(|(_, body)| body)
                })
            })
            .collect();
        Ok(WriteEntry::new(WriteOp::Update {
            resource_type: "Patient".into(),
            id: e.to_string(),
            resource: with_links(survivorship.compose(e, &sources), links),
            if_match: prior,
        }))
    }

    /// The golden-record writes for every touched identity, the review tasks opened and
    /// changed, and the extra writes.
    pub async fn finish(
        &mut self,
        store: &dyn Store,
        ctx: &RequestContext,
        survivorship: &Survivorship,
    ) -> Result<Vec<WriteEntry>, StoreError> {
        let mut writes = Vec::new();
        let touched: Vec<(EnterpriseId, BTreeMap<String, LinkMeta>)> =
            self.touched.iter().map(|(e, m)| (*e, m.clone())).collect();
        // Identities this unit retires: merged (-> survivor) or left without sources.
        let mut gone: BTreeMap<EnterpriseId, Option<EnterpriseId>> = BTreeMap::new();
        for (e, links) in &touched {
            if let Some(survivor) = self.retired.get(e) {
                gone.insert(*e, Some(*survivor));
            } else if links.is_empty() {
                gone.insert(*e, None);
            }
        }
        for (e, links) in touched {
            let prior = self.cache.goldens.get(&e).map(|g| g.version);
            if let Some(survivor) = self.retired.get(&e) {
                writes.push(WriteEntry::new(WriteOp::Update {
                    resource_type: "Patient".into(),
                    id: e.to_string(),
                    resource: retired_golden(e, *survivor),
                    if_match: prior,
                }));
                continue;
            }
            if links.is_empty() {
                if let Some(version) = prior {
                    writes.push(WriteEntry::new(WriteOp::Delete {
                        resource_type: "Patient".into(),
                        id: e.to_string(),
                        if_match: Some(version),
                    }));
                }
                continue;
            }
            let reusable = self.ahead.remove(&e).filter(|a| {
                a.links == links
                    && a.prior == prior
                    && !links.keys().any(|s| self.written_after_ahead.contains(s))
            });
            let entry = match reusable {
                Some(ahead) => ahead.entry,
                None => {
                    self.golden_write(store, ctx, survivorship, e, &links, prior)
                        .await?
                }
            };
            // A placeholder source's reference becomes its id only in the commit.
            if links.keys().all(|s| !s.contains([':', '/'])) {
                self.composed.insert(e, stored_links(&links));
            }
            writes.push(entry);
        }
        // New review items: never a candidate this unit retired, nor the source's own identity.
        for (source, candidates) in std::mem::take(&mut self.reviews) {
            let own = self.enterprise_of(&source);
            let live: Vec<ReviewCandidate> = candidates
                .into_iter()
                .filter_map(|mut c| {
                    let mut e = Some(c.enterprise);
                    for _ in 0..=gone.len() {
                        match e.and_then(|x| gone.get(&x)) {
                            Some(next) => e = *next,
                            None => break,
                        }
                    }
                    c.enterprise = e?;
                    (Some(c.enterprise) != own).then_some(c)
                })
                .collect();
            if !live.is_empty() {
                writes.push(WriteEntry::new(WriteOp::Create {
                    resource: review_task(&source, &live, &self.now),
                    if_none_exist: None,
                }));
            }
        }
        if !gone.is_empty() {
            self.retire_in_reviews(store, ctx, &gone).await?;
        }
        for (id, (version, body)) in std::mem::take(&mut self.tasks) {
            self.edited_tasks.push(id.clone());
            writes.push(WriteEntry::new(WriteOp::Update {
                resource_type: "Task".into(),
                id,
                resource: body,
                if_match: Some(version),
            }));
        }
        writes.append(&mut self.extra);
        Ok(writes)
    }

    /// The stored review tasks the finished plan updates (two units updating one task must
    /// not commit in one round: the second would find a newer version).
    pub fn edited_tasks(&self) -> impl Iterator<Item = &str> + '_ {
        self.edited_tasks.iter().map(String::as_str)
    }

    /// Puts the index back as it was before planning; returns the records the plan had
    /// inserted, for [`Cache::apply_committed`] to reuse.
    pub fn undo(&mut self) -> Planned {
        UndoLog {
            steps: std::mem::take(&mut self.undo),
            composed: std::mem::take(&mut self.composed),
        }
        .apply(self.cache)
    }

    /// The undo log, to apply later (after other units were planned on top). The planned
    /// bodies (a chunk's worth of JSON) are freed on the blocking pool: the pipeline's
    /// planner is what every chunk waits for.
    pub fn into_undo(self) -> UndoLog {
        store::free_elsewhere(self.bodies);
        UndoLog {
            steps: self.undo,
            composed: self.composed,
        }
    }
}

/// What a plan did to the index, to be undone newest first, and the golden records it
/// composed.
#[derive(Debug)]
pub(crate) struct UndoLog {
    steps: Vec<Undo>,
    composed: FxHashMap<EnterpriseId, BTreeMap<String, LinkMeta>>,
}

/// What a plan wrote, so that applying its commit to the cache need not parse and normalise
/// each Patient again ([`Cache::apply_committed`]).
#[derive(Debug, Default)]
pub(crate) struct Planned {
    /// The normalised records the plan inserted, by source id (the last one planned for each).
    pub records: FxHashMap<String, Record>,
    /// The membership of each golden record the plan composed, as reading its stored links
    /// back gives it (`resources::parse_golden`).
    pub goldens: FxHashMap<EnterpriseId, BTreeMap<String, LinkMeta>>,
}

impl Planned {
    /// Adds what another unit planned (units of one round share no Patient).
    pub fn extend(&mut self, other: Planned) {
        self.records.extend(other.records);
        self.goldens.extend(other.goldens);
    }
}

impl UndoLog {
    /// Keeps the plan in the index, since its commit `written` stored what it planned (a
    /// chunk is one transaction), instead of undoing it and indexing the commit again: the
    /// records it inserted stay (with the commit's `lastUpdated`, marked applied at their
    /// stored versions), and its removals and moves stand. Returns what
    /// [`Cache::apply_committed`] still needs: the golden records' membership. Only when a
    /// record it inserted is not stored under the id it was planned under (a placeholder the
    /// store replaced with an id) is the plan undone and the commit applied
    /// ([`UndoLog::apply`]). Undoing and indexing again cost a chunk of an import about half
    /// a second while the store's writer waited.
    pub fn confirm(self, cache: &mut Cache, written: &[store::Outcome]) -> Planned {
        let stored: FxHashMap<&str, &store::StoredResource> = written
            .iter()
            .filter_map(store::Outcome::resource)
            .filter(|r| r.resource_type == "Patient" && !r.deleted)
            .map(|r| (r.id.as_str(), r))
            .collect();
        let mut confirmed: FxHashMap<&str, &store::StoredResource> = FxHashMap::default();
        for step in &self.steps {
            // A removal or a move (an automatic merge) is what the commit stored too.
            let Undo::Inserted(id) = step else {
                continue;
            };
            match stored.get(id.as_str()) {
                Some(r) => {
                    confirmed.insert(id.as_str(), r);
                }
                None => return self.apply(cache),
            }
        }
        if confirmed.keys().any(|id| cache.index.record(id).is_none()) {
            return self.apply(cache);
        }
        for (id, r) in confirmed {
            let when = Some(store::time::format_instant(r.last_updated));
            cache.index.set_last_updated(id, when);
            cache.applied.insert(id.to_owned(), r.version);
        }
        Planned {
            records: FxHashMap::default(),
            goldens: self.composed,
        }
    }

    /// Undoes the plan; returns what it had written.
    pub fn apply(mut self, cache: &mut Cache) -> Planned {
        let mut planned = Planned {
            records: FxHashMap::default(),
            goldens: self.composed,
        };
        while let Some(u) = self.steps.pop() {
            match u {
                Undo::Inserted(id) => {
                    if let Ok(record) = cache.index.remove(&id) {
                        // Newest first: an earlier write of the same source in the unit is
                        // not what the commit holds.
                        planned.records.entry(id).or_insert(record);
                    }
                }
                Undo::Removed(record, e) => {
                    let _ = cache.index.restore(*record, e);
                }
                Undo::Moved(id, e) => {
                    let _ = cache.index.assign(&id, e);
                }
            }
        }
        planned
    }
}

fn backend(e: empi::EmpiError) -> StoreError {
    StoreError::Backend(format!("patient index: {e}"))
}

/// Refuses client writes of golden records: the EMPI maintains them.
pub(crate) fn refuse_golden(id: Option<&str>, body: Option<&Value>) -> Result<(), StoreError> {
    // Ids of the form E0000000042 are the EMPI's, whether or not that identity exists yet.
    let by_id = id.and_then(enterprise_of_id).is_some();
    if by_id || body.is_some_and(is_golden) {
        return Err(StoreError::Invalid(format!(
            "Patient/{} is a golden record maintained by the EMPI (ids E + 10 digits are \
             reserved for them); change its sources, or use $empi-link, $empi-unlink, \
             $empi-merge or $empi-unmerge",
            id.unwrap_or("(new)")
        )));
    }
    Ok(())
}
