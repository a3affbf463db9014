//! [`EmpiStore`]: a [`Store`] that links every Patient write to an enterprise identity.
//!
//! It wraps the store its [`Mpi`] holds. Each `transaction`, `batch` and `commit_keyed` that
//! writes a Patient takes the EMPI lock (in this process and across processes:
//! [`Mpi::locked_for_decision`]), brings the cache up to date, plans the link decisions
//! (reading with the request's internal context) and adds the golden-record (and review-task)
//! writes to the same unit of work, committed with the request's own context, so a Patient
//! and its link commit together or not at all. Everything else passes straight through.
//! Client writes of golden records are refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use store::{
    BatchResult, HistoryPage, HistoryQuery, IndexExtractor, KeyedWrite, Outcome, Receipt,
    RequestContext, SearchPage, SearchQuery, Store, StoreError, StoredResource, WriteEntry,
    WriteOp,
};

use super::Mpi;
use super::plan::{Planner, refuse_golden};

/// The store with EMPI linking on every Patient write.
#[derive(Debug, Clone)]
pub struct EmpiStore {
    inner: Arc<dyn Store>,
    mpi: Arc<Mpi>,
}

impl EmpiStore {
    /// Links every Patient write to `mpi`'s index, writing through the store it holds.
    pub fn new(mpi: Arc<Mpi>) -> Self {
        EmpiStore {
            inner: mpi.store().clone(),
            mpi,
        }
    }

    /// The store underneath (writes to it are not linked).
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// The patient index it links through.
    pub(crate) fn mpi(&self) -> &Arc<Mpi> {
        &self.mpi
    }

    async fn linked_transaction(
        &self,
        ctx: &RequestContext,
        mut entries: Vec<WriteEntry>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let original = entries.len();
        let last_patient = entries.iter().rposition(|e| is_patient_write(&e.op));
        let inner = self.inner.as_ref();
        let internal = &ctx.internal();
        let mut cache = self.mpi.locked_for_decision(ctx).await?;
        let mut planner = Planner::new(&mut cache, self.mpi.now());
        let planned = async {
            plan_entries(&mut planner, inner, internal, &mut entries).await?;
            let added = planner
                .finish(inner, internal, &self.mpi.survivorship)
                .await?;
            // Golden records and review tasks are the node's own writes: a caller restricted
            // to some patients still has its Patient linked.
            entries.extend(added.into_iter().map(WriteEntry::as_internal));
            Ok::<_, StoreError>(())
        }
        .await;
        let result = match planned {
            Ok(()) => inner.transaction(ctx, entries).await,
            Err(e) => Err(e),
        };
        let planned = planner.undo();
        drop(planner);
        if let Ok(outcomes) = &result {
            cache.apply_committed(outcomes.iter().filter_map(Outcome::resource), planned);
        }
        super::refresh_after_commit(&mut cache, inner, ctx).await;
        let mut outcomes = result.map_err(|e| owned_error(e, original, last_patient))?;
        outcomes.truncate(original);
        Ok(outcomes)
    }

    async fn linked_commit_keyed(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<Vec<Result<Vec<Outcome>, StoreError>>, StoreError> {
        let inner = self.inner.as_ref();
        let internal = &ctx.internal();
        let started = std::time::Instant::now();
        let mut cache = self.mpi.locked_for_decision(ctx).await?;
        let locked = started.elapsed();
        let mut results = Vec::with_capacity(units.len());
        let mut pending: std::collections::VecDeque<KeyedWrite> = units.into();
        // Rounds: a unit touching an identity that another unit of the round touches waits for
        // the next round, so that no golden write builds on a unit that may fail alone.
        while !pending.is_empty() {
            let round_started = std::time::Instant::now();
            let mut logs = Vec::new();
            let mut round_touched = BTreeSet::new();
            let mut round_keys: BTreeSet<String> = BTreeSet::new();
            // (unit to commit, or the planning error; the unit's own entry count)
            let mut round: Vec<(Result<KeyedWrite, StoreError>, usize)> = Vec::new();
            while let Some(mut unit) = pending.pop_front() {
                let original = unit.entries.len();
                let mut planner = Planner::new(&mut cache, self.mpi.now());
                let planned = async {
                    plan_entries(&mut planner, inner, internal, &mut unit.entries).await?;
                    planner
                        .finish(inner, internal, &self.mpi.survivorship)
                        .await
                }
                .await;
                let mine: BTreeSet<_> = planner.touched().collect();
                let mut keys = patient_keys(&unit.entries);
                keys.extend(planner.edited_tasks().map(|id| format!("task:{id}")));
                let conflict = mine.iter().any(|e| round_touched.contains(e))
                    || keys.iter().any(|k| round_keys.contains(k))
                    || (keys.contains("*") && !round_keys.is_empty())
                    || round_keys.contains("*");
                if !round.is_empty() && conflict {
                    planner.undo();
                    pending.push_front(unit);
                    break;
                }
                logs.push(planner.into_undo());
                round_touched.extend(mine);
                round_keys.extend(keys);
                round.push((
                    planned.map(|added| {
                        unit.entries
                            .extend(added.into_iter().map(WriteEntry::as_internal));
                        unit
                    }),
                    original,
                ));
            }
            let ok_units: Vec<KeyedWrite> = round
                .iter_mut()
                .filter_map(|(u, _)| match u {
                    Ok(u) => Some(KeyedWrite {
                        receipt: u.receipt.clone(),
                        entries: std::mem::take(&mut u.entries),
                    }),
                    Err(_) => None,
                })
                .collect();
            let planned = round_started.elapsed();
            let units = ok_units.len();
            let committed = if ok_units.is_empty() {
                Ok(Vec::new())
            } else {
                inner.commit_keyed(ctx, ok_units).await
            };
            let stored = round_started.elapsed();
            let mut written = super::plan::Planned::default();
            for log in logs.into_iter().rev() {
                // Units of a round share no Patient (see `patient_keys`).
                written.extend(log.apply(&mut cache));
            }
            if let Ok(results) = &committed {
                let outcomes = results.iter().flatten().flatten();
                cache.apply_committed(outcomes.filter_map(Outcome::resource), written);
            }
            super::refresh_after_commit(&mut cache, inner, ctx).await;
            tracing::debug!(
                units,
                lock_micros = locked.as_micros() as u64,
                plan_micros = planned.as_micros() as u64,
                commit_micros = (stored - planned).as_micros() as u64,
                refresh_micros = (round_started.elapsed() - stored).as_micros() as u64,
                "EMPI-linked round"
            );
            let mut committed = committed?.into_iter();
            for (unit, original) in round {
                results.push(match unit {
                    Err(e) => Err(e.into_inner()),
                    Ok(_) => committed
                        .next()
                        .unwrap_or_else(|| Err(StoreError::Backend("unit not run".into())))
                        .map(|mut o| {
                            o.truncate(original);
                            o
                        }),
                });
            }
        }
        Ok(results)
    }
}

/// Whether a write touches a Patient.
pub(crate) fn is_patient_write(op: &WriteOp) -> bool {
    match op {
        WriteOp::Create { resource, .. } | WriteOp::ConditionalUpdate { resource, .. } => {
            resource.get("resourceType").and_then(Value::as_str) == Some("Patient")
        }
        WriteOp::Update { resource_type, .. } | WriteOp::Delete { resource_type, .. } => {
            resource_type == "Patient"
        }
        WriteOp::ConditionalDelete { query } => query.resource_type.as_deref() == Some("Patient"),
    }
}

/// What a unit's Patient writes may collide on with another unit's: the ids they name and
/// the identifiers in their bodies (HL7 v2 writes Patients conditionally, by identifier);
/// `*` for a conditional delete, which may hit anything. Two units sharing a key are not
/// planned in one round: the store would see the first one's writes, the planner not.
fn patient_keys(entries: &[WriteEntry]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for entry in entries.iter().filter(|e| is_patient_write(&e.op)) {
        let body = match &entry.op {
            WriteOp::Update { id, resource, .. } => {
                keys.insert(format!("id:{id}"));
                Some(resource)
            }
            WriteOp::Delete { id, .. } => {
                keys.insert(format!("id:{id}"));
                None
            }
            WriteOp::Create { resource, .. } | WriteOp::ConditionalUpdate { resource, .. } => {
                Some(resource)
            }
            WriteOp::ConditionalDelete { .. } => {
                keys.insert("*".into());
                None
            }
        };
        for identifier in body
            .and_then(|b| b["identifier"].as_array())
            .into_iter()
            .flatten()
        {
            keys.insert(format!(
                "identifier:{}|{}",
                identifier["system"].as_str().unwrap_or(""),
                identifier["value"].as_str().unwrap_or("")
            ));
        }
        if let Some(id) = body.and_then(|b| b["id"].as_str()) {
            keys.insert(format!("id:{id}"));
        }
    }
    keys
}

/// Plans the EMPI side of `entries` (giving server-id creates a placeholder `fullUrl`).
/// Errors carry the index of the entry they concern.
pub(crate) async fn plan_entries(
    planner: &mut Planner<'_>,
    store: &dyn Store,
    ctx: &RequestContext,
    entries: &mut [WriteEntry],
) -> Result<(), StoreError> {
    let all: Vec<usize> = (0..entries.len()).collect();
    plan_entries_at(planner, store, ctx, entries, &all).await
}

/// [`plan_entries`] of the entries at `indexes` only (in that order).
pub(crate) async fn plan_entries_at(
    planner: &mut Planner<'_>,
    store: &dyn Store,
    ctx: &RequestContext,
    entries: &mut [WriteEntry],
    indexes: &[usize],
) -> Result<(), StoreError> {
    for &index in indexes {
        let Some(entry) = entries.get_mut(index) else {
            continue;
        };
        if !is_patient_write(&entry.op) {
            continue;
        }
        plan_entry(planner, store, ctx, entry)
            .await
            .map_err(|source| StoreError::Entry {
                index,
                source: Box::new(source),
            })?;
    }
    Ok(())
}

async fn plan_entry(
    planner: &mut Planner<'_>,
    store: &dyn Store,
    ctx: &RequestContext,
    entry: &mut WriteEntry,
) -> Result<(), StoreError> {
    match &entry.op {
        WriteOp::Create {
            resource,
            if_none_exist,
        } => {
            refuse_golden(None, Some(resource))?;
            if let Some(q) = if_none_exist
                && !store.matching_ids(ctx, q, 2).await?.is_empty()
            {
                // Matches an existing Patient (nothing is written) or fails.
                return Ok(());
            }
            let placeholder = placeholder(&mut entry.full_url);
            let resource = resource.clone();
            write_source(planner, store, ctx, &placeholder, &resource).await
        }
        WriteOp::Update { id, resource, .. } => {
            refuse_golden(Some(id), Some(resource))?;
            let (id, resource) = (id.clone(), resource.clone());
            write_source(planner, store, ctx, &id, &resource).await
        }
        WriteOp::ConditionalUpdate { query, resource } => {
            refuse_golden(None, Some(resource))?;
            let found = store.matching_ids(ctx, query, 2).await?;
            let id = match found.as_slice() {
                [one] => one.clone(),
                [] => match resource.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_owned(),
                    None => placeholder(&mut entry.full_url),
                },
                // Fails in the store with the number of matches.
                _ => return Ok(()),
            };
            refuse_golden(Some(&id), None)?;
            let resource = resource.clone();
            write_source(planner, store, ctx, &id, &resource).await
        }
        WriteOp::Delete { id, .. } => {
            refuse_golden(Some(id), None)?;
            let id = id.clone();
            planner.delete(&id);
            Ok(())
        }
        WriteOp::ConditionalDelete { query } => {
            for id in store.matching_ids(ctx, query, 2).await? {
                refuse_golden(Some(&id), None)?;
                planner.delete(&id);
            }
            Ok(())
        }
    }
}

/// The Patient a sender says this one was merged into (`link` of type `replaced-by`, as an
/// ADT^A40 writes it): a literal `Patient/id`, or a conditional reference that matches exactly
/// one stored Patient.
async fn replaced_by(
    store: &dyn Store,
    ctx: &RequestContext,
    body: &Value,
) -> Result<Option<String>, StoreError> {
    let Some(reference) = super::resources::replaced_by_reference(body) else {
        return Ok(None);
    };
    if let Some(criteria) = reference.strip_prefix("Patient?") {
        let params = store::search::parse_query_string(criteria);
        let Ok(query) = SearchQuery::parse(Some("Patient"), &params, store.extractor(), false)
        else {
            return Ok(None);
        };
        let found = store.matching_ids(ctx, &query, 2).await?;
        return Ok(match found.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        });
    }
    Ok(super::resources::patient_id_of(reference).map(str::to_owned))
}

/// The transaction placeholder (`urn:uuid:`) of a write whose id the store assigns: its
/// `fullUrl`, given one now if it has none.
pub(crate) fn placeholder(full_url: &mut Option<String>) -> String {
    full_url
        .get_or_insert_with(|| format!("urn:uuid:{}", uuid::Uuid::new_v4()))
        .clone()
}

/// Writes a source and, when its sender merged it into another Patient, follows the sender.
async fn write_source(
    planner: &mut Planner<'_>,
    store: &dyn Store,
    ctx: &RequestContext,
    source: &str,
    body: &Value,
) -> Result<(), StoreError> {
    planner.write(source, body)?;
    if let Some(survivor) = replaced_by(store, ctx, body).await?
        && survivor != source
        && let Some(e) = planner.enterprise_of(&survivor)
        && planner.enterprise_of(source) != Some(e)
    {
        let meta = super::resources::LinkMeta::manual(
            "merge",
            &format!("merged into Patient/{survivor} by its sender"),
        );
        planner.assign(source, e, meta)?;
    }
    Ok(())
}

/// Maps an error on an added entry back to the Patient entry it came from (the last one).
fn owned_error(e: StoreError, original: usize, patient_entry: Option<usize>) -> StoreError {
    match e {
        StoreError::Entry { index, source } if index >= original => StoreError::Entry {
            index: patient_entry.unwrap_or(0),
            source,
        },
        other => other,
    }
}

#[async_trait]
impl Store for EmpiStore {
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
        self.inner.load(ctx, resource_type, id).await
    }

    async fn load_version(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        self.inner
            .load_version(ctx, resource_type, id, version)
            .await
    }

    async fn history(
        &self,
        ctx: &RequestContext,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        self.inner.history(ctx, q).await
    }

    async fn search(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        self.inner.search(ctx, q).await
    }

    async fn matching_ids(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
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
        if !entries.iter().any(|e| is_patient_write(&e.op)) {
            return self.inner.transaction(ctx, entries).await;
        }
        let this = self.clone();
        let ctx = ctx.clone();
        // On a task of its own: a caller that goes away (a client disconnecting) cannot stop
        // it between planning and undoing, which would leave the plan in the cache.
        tokio::spawn(async move { this.linked_transaction(&ctx, entries).await })
            .await
            .map_err(|e| StoreError::Backend(format!("EMPI linking task failed: {e}")))?
    }

    async fn batch(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        if !entries.iter().any(|e| is_patient_write(&e.op)) {
            return self.inner.batch(ctx, entries).await;
        }
        // The Patient entries with their links as one transaction (each on its own if that
        // fails, so that an entry still fails alone); the rest as one batch.
        let mut results: Vec<Option<Result<Outcome, StoreError>>> =
            (0..entries.len()).map(|_| None).collect();
        let (mut patients, mut patient_at) = (Vec::new(), Vec::new());
        let (mut others, mut other_at) = (Vec::new(), Vec::new());
        for (i, entry) in entries.into_iter().enumerate() {
            if is_patient_write(&entry.op) {
                patient_at.push(i);
                patients.push(entry);
            } else {
                other_at.push(i);
                others.push(entry);
            }
        }
        match self.transaction(ctx, patients.clone()).await {
            Ok(outcomes) => {
                for (i, o) in patient_at.iter().zip(outcomes) {
                    results[*i] = Some(Ok(o));
                }
            }
            Err(StoreError::Entry { .. }) => {
                for (i, entry) in patient_at.iter().zip(patients) {
                    results[*i] = Some(self.write(ctx, entry.op).await);
                }
            }
            Err(other) => return Err(other),
        }
        if !others.is_empty() {
            for (i, r) in other_at
                .into_iter()
                .zip(self.inner.batch(ctx, others).await?)
            {
                results[i] = Some(r);
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("entry not run".into()))))
            .collect())
    }

    /// Chunks of Patients are linked in a pipeline: each one's links are planned while the
    /// chunk before it commits (see `pipeline`).
    async fn batches(
        &self,
        ctx: &RequestContext,
        batches: tokio::sync::mpsc::Receiver<Vec<WriteEntry>>,
        results: tokio::sync::mpsc::Sender<BatchResult>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        let ctx = ctx.clone();
        // On a task of its own, as `transaction`: a plan is never left in the cache.
        tokio::spawn(async move { super::pipeline::run(&this, &ctx, batches, results).await })
            .await
            .map_err(|e| StoreError::Backend(format!("EMPI linking task failed: {e}")))?
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
        if !units
            .iter()
            .any(|u| u.entries.iter().any(|e| is_patient_write(&e.op)))
        {
            return self.inner.commit_keyed(ctx, units).await;
        }
        let this = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { this.linked_commit_keyed(&ctx, units).await })
            .await
            .map_err(|e| StoreError::Backend(format!("EMPI linking task failed: {e}")))?
    }

    async fn changes(
        &self,
        ctx: &RequestContext,
        after: i64,
        limit: usize,
    ) -> Result<Vec<store::Change>, StoreError> {
        self.inner.changes(ctx, after, limit).await
    }

    async fn lock_exclusive(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<store::ExclusiveLock, StoreError> {
        self.inner.lock_exclusive(ctx, name).await
    }

    async fn feed(
        &self,
        ctx: &RequestContext,
        after: &store::FeedPosition,
        limit: usize,
    ) -> Result<store::FeedBatch, StoreError> {
        self.inner.feed(ctx, after, limit).await
    }

    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
    ) -> Result<store::FeedPosition, StoreError> {
        self.inner.checkpoint(ctx, consumer).await
    }

    async fn feed_pending(
        &self,
        ctx: &RequestContext,
        after: &store::FeedPosition,
        resource_type: &str,
        limit: usize,
    ) -> Result<store::FeedBatch, StoreError> {
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
        self.inner.save_checkpoint(ctx, consumer, position).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_writing_the_same_patient_share_a_key() {
        let by_identifier = |op: fn(Value) -> WriteOp| {
            let p = json!({"resourceType": "Patient",
                           "identifier": [{"system": "urn:mrn", "value": "1"}]});
            patient_keys(&[WriteEntry::new(op(p))])
        };
        let adt = by_identifier(|resource| WriteOp::Create {
            resource,
            if_none_exist: None,
        });
        let oru = by_identifier(|resource| WriteOp::Update {
            resource_type: "Patient".into(),
            id: "p1".into(),
            resource,
            if_match: None,
        });
        assert!(adt.contains("identifier:urn:mrn|1"));
        assert!(adt.intersection(&oru).next().is_some());
        assert!(oru.contains("id:p1"));
        let other = patient_keys(&[WriteEntry::new(WriteOp::Create {
            resource: json!({"resourceType": "Observation", "status": "final"}),
            if_none_exist: None,
        })]);
        assert!(other.is_empty());
    }
}

#[cfg(test)]
mod committed_tests {
    use std::path::PathBuf;

    use empi::Record;
    use serde_json::json;
    use store::{FhirIndexExtractor, SqliteStore};

    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The cache indexes a committed source with the record its plan normalised, which must
    /// be the record of the stored version (`lastUpdated` included), exactly as a load from
    /// the change feed would index it.
    #[tokio::test]
    async fn committed_sources_are_indexed_as_stored() {
        let dir = std::env::temp_dir().join(format!("renkei-linker-{}", uuid::Uuid::new_v4()));
        let _dir = Dir(dir.clone());
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_dir(&dir, Arc::new(FhirIndexExtractor::new())).unwrap());
        let mpi = Arc::new(Mpi::with_defaults(store.clone()));
        let person = |id: &str, given: &str| {
            json!({"resourceType": "Patient", "id": id, "gender": "female",
                   "birthDate": "1980-01-02", "meta": {"source": "urn:hospital"},
                   "name": [{"family": "Yamada", "given": [given]}],
                   "telecom": [{"system": "phone", "value": "555-0100"}]})
        };
        let put = |p: Value| {
            WriteEntry::new(WriteOp::Update {
                resource_type: "Patient".into(),
                id: p["id"].as_str().unwrap().to_owned(),
                resource: p,
                if_match: None,
            })
        };
        let ctx = RequestContext::system();
        // Two writes of one source in one unit: the second is what is stored.
        let entries = vec![
            put(person("a", "Hanako")),
            put(person("b", "Hanako")),
            put(person("b", "Hana")),
        ];
        mpi.linked_store().transaction(&ctx, entries).await.unwrap();
        let cache = mpi.locked(&ctx).await.unwrap();
        for id in ["a", "b"] {
            let stored = store.load(&ctx, "Patient", id).await.unwrap().unwrap();
            let body: Value = serde_json::from_str(stored.body.as_deref().unwrap()).unwrap();
            let expected = Record::from_patient(&body).unwrap();
            assert_eq!(cache.index.record(id), Some(&expected), "{id}");
            assert_eq!(cache.applied.get(id), Some(&stored.version));
        }
        assert_eq!(cache.member_of.get("a"), cache.member_of.get("b"));
    }
}
