//! [`Store::batches`] with linking: an import's chunks of Patients, each planned while the
//! chunk before it commits.
//!
//! Done one after another (as [`EmpiStore`]'s `batch` does), a chunk's planning and its
//! commit each wait for the other, and the commit alone is about half of an import's time.
//! Here, while chunk k commits (on the store's writer), the planner already decides chunk
//! k+1's sources on top of k's plan, which the cache still holds: exactly what k commits. A
//! source of k+1 is decided early only if its decision cannot involve an identity k's plan
//! changes (`busy`: their golden records and member lists reach the cache only once k is
//! applied): not its own identity, nor any identity the index would compare it with
//! ([`Planner::write_unless_busy`]). The others, and every write that reads the store (a
//! conditional write, a delete, a sender's merge), wait until k is committed and applied;
//! then they are planned in their order, the golden records composed and k+1 committed.
//! So planning only reorders within a chunk: a source decided early does not see a later
//! one of its chunk that waited, which sees it instead.
//!
//! Applying k's commit to the cache keeps k's plan beneath the early part of k+1's (or, if
//! the store gave a planned record another id, undoes it and applies what k committed) and
//! applies k's golden records; none of it touches an identity or source of that early part,
//! which is why it had to avoid `busy`. If k fails, k+1's early plan is undone first, then
//! k's; k is retried entry by entry and k+1 written on its own, as `batch` does. A chunk
//! that holds other resources, or fails to plan, goes through `batch` too. The linking lock
//! is held from one chunk to the next and let go whenever the pipeline waits for input with
//! nothing in flight, or someone waits for it ([`Mpi::lock_wanted`](super::Mpi::lock_wanted):
//! a request of this process, another process on the database): asked once a chunk, so a
//! waiter waits for at most the chunk in flight.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use empi::EnterpriseId;
use store::{BatchResult, Outcome, RequestContext, Store, StoreError, WriteEntry, WriteOp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::cache::Cache;
use super::linker::{EmpiStore, is_patient_write, placeholder, plan_entries_at};
use super::plan::{AheadGolden, Planner, UndoLog, refuse_golden};
use super::resources::replaced_by_reference;
use super::{Locked, refresh_after_commit};

/// A chunk being committed.
struct InFlight {
    commit: JoinHandle<Result<Vec<Outcome>, StoreError>>,
    /// The chunk's plan, still in the cache.
    undo: UndoLog,
    /// Identities the plan changes.
    busy: BTreeSet<EnterpriseId>,
    /// The chunk as it came (Patient writes only), for a retry entry by entry.
    entries: KeptChunk,
}

/// How a commit ended, once the cache follows it.
enum Settled {
    Answered(BatchResult),
    /// The chunk's transaction failed on an entry: to write again entry by entry, as
    /// `batch` does, without the linking lock.
    Retry(KeptChunk),
}

/// The pipeline's state between chunks.
struct Pipeline<'s> {
    store: &'s EmpiStore,
    ctx: &'s RequestContext,
    results: mpsc::Sender<BatchResult>,
    locked: Option<Locked<'s>>,
    in_flight: Option<InFlight>,
}

/// What woke the pipeline up.
enum Event {
    Chunk(Option<Vec<WriteEntry>>),
    Committed(Result<Vec<Outcome>, StoreError>),
}

/// Runs the pipeline until `batches` closes and every chunk is answered, or `results`
/// closes.
pub(crate) async fn run(
    store: &EmpiStore,
    ctx: &RequestContext,
    mut batches: mpsc::Receiver<Vec<WriteEntry>>,
    results: mpsc::Sender<BatchResult>,
) -> Result<(), StoreError> {
    let mut p = Pipeline {
        store,
        ctx,
        results,
        locked: None,
        in_flight: None,
    };
    loop {
        let event = match p.in_flight.as_mut() {
            Some(f) => tokio::select! {
                chunk = batches.recv() => Event::Chunk(chunk),
                done = &mut f.commit => Event::Committed(joined(done)),
            },
            None => {
                // Nothing commits: other writers may link while this waits for input.
                p.locked = None;
                Event::Chunk(batches.recv().await)
            }
        };
        let open = match event {
            // Committed before the next chunk came: answered now.
            Event::Committed(done) => p.settle_in_flight(Some(done)).await?,
            Event::Chunk(Some(chunk)) => p.take(chunk).await?,
            Event::Chunk(None) => {
                p.settle_in_flight(None).await?;
                return Ok(());
            }
        };
        if !open {
            p.settle_in_flight(None).await?;
            return Ok(());
        }
    }
}

impl<'s> Pipeline<'s> {
    /// Plans `chunk` (early, if a chunk commits) and starts its commit; or writes it through
    /// `batch`. `false`: nobody listens any more.
    async fn take(&mut self, chunk: Vec<WriteEntry>) -> Result<bool, StoreError> {
        let (store, ctx) = (self.store, self.ctx);
        if chunk.is_empty() || !chunk.iter().all(|e| is_patient_write(&e.op)) {
            if !self.settle_in_flight(None).await? {
                return Ok(false);
            }
            return self.send(store.batch(ctx, chunk).await).await;
        }
        if self.locked.is_none() {
            self.locked = Some(store.mpi().locked_for_decision(ctx).await?);
        }
        let inner = store.inner().clone();
        let internal = &ctx.internal();
        let (kept, mut entries) = KeptChunk::keep(chunk);
        let cache = self.locked.as_mut().expect("taken above");
        let mut planner = Planner::new(cache, store.mpi().now());
        let mut waiting: Vec<usize> = (0..entries.len()).collect();
        let mut planned = Ok(());
        // Where the chunk's time goes (the debug line below): planning beside the previous
        // commit, waiting for it, applying it to the cache.
        let (mut early, mut ahead, mut waited, mut settling) = (
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
            Duration::ZERO,
        );
        if let Some(mut previous) = self.in_flight.take() {
            let started = Instant::now();
            waiting.clear();
            for (i, entry) in entries.iter_mut().enumerate() {
                match plan_early(&mut planner, entry, &previous.busy) {
                    Ok(true) => {}
                    Ok(false) => waiting.push(i),
                    Err(e) => {
                        planned = Err(e);
                        break;
                    }
                }
                if i % 256 == 255 {
                    // Lets the commit task run on a single-threaded runtime as well.
                    tokio::task::yield_now().await;
                }
            }
            early = started.elapsed();
            if planned.is_ok() {
                // The previous commit leaves a core idle: the early part's golden records
                // are composed, and its rows extracted, while it runs.
                planned = prepare_ahead(store, internal, &mut planner, &mut entries).await;
            }
            ahead = started.elapsed() - early;
            let done = joined((&mut previous.commit).await);
            waited = started.elapsed() - early - ahead;
            let went_well = done.is_ok() && planned.is_ok();
            if !went_well {
                planner.undo();
            }
            let settled = settle(store, ctx, planner.cache, previous, done).await;
            settling = started.elapsed() - early - ahead - waited;
            match settled {
                Settled::Answered(answer) if went_well => {
                    // The previous chunk is answered while this one is planned further.
                    if self.results.send(answer).await.is_err() {
                        planner.undo();
                        return Ok(false);
                    }
                }
                settled => {
                    // Either failed: the previous chunk as `batch` would answer it, then
                    // this one on its own.
                    drop(planner);
                    self.locked = None;
                    if !self.answer(settled).await? {
                        return Ok(false);
                    }
                    return self.send(store.batch(ctx, kept.restore()?).await).await;
                }
            }
        }
        let then = Instant::now();
        if !waiting.is_empty() {
            // What waited may join identities the previous chunk wrote, whose sources the
            // store stamped later than this chunk's planning began: its sources are stamped
            // after that commit, as they will be stored.
            planner.move_now_to(store.mpi().now());
        }
        let planned = match plan_entries_at(
            &mut planner,
            inner.as_ref(),
            internal,
            &mut entries,
            &waiting,
        )
        .await
        {
            Ok(()) => {
                planner
                    .finish(inner.as_ref(), internal, &store.mpi().survivorship)
                    .await
            }
            Err(e) => Err(e),
        };
        let added = match planned {
            Ok(added) => added,
            Err(_) => {
                // Written on its own, where `batch` says which entry failed and why.
                planner.undo();
                drop(planner);
                self.locked = None;
                return self.send(store.batch(ctx, kept.restore()?).await).await;
            }
        };
        tracing::debug!(
            entries = entries.len(),
            early = entries.len() - waiting.len(),
            early_ms = early.as_millis() as u64,
            ahead_ms = ahead.as_millis() as u64,
            waited_for_commit_ms = waited.as_millis() as u64,
            settled_ms = settling.as_millis() as u64,
            planned_then_ms = then.elapsed().as_millis() as u64,
            "EMPI import chunk planned"
        );
        entries.extend(added.into_iter().map(WriteEntry::as_internal));
        let busy: BTreeSet<EnterpriseId> = planner.touched().collect();
        let undo = planner.into_undo();
        let commit = {
            let (inner, ctx) = (inner.clone(), ctx.clone());
            tokio::spawn(async move { inner.transaction(&ctx, entries).await })
        };
        // A task spawned from a worker waits in that worker's next-task slot, which no other
        // worker takes, until the spawning task yields; the next chunk is usually queued
        // already, and keeping and planning it first held the writer idle for about 0.3 s a
        // chunk. Yielding here starts the commit (its extraction and then the writer) now.
        tokio::task::yield_now().await;
        self.in_flight = Some(InFlight {
            commit,
            undo,
            busy,
            entries: kept,
        });
        let locked = self.locked.as_ref().expect("held while a chunk commits");
        if store.mpi().lock_wanted(locked).await {
            return self.settle_in_flight(None).await;
        }
        Ok(true)
    }

    /// Settles the chunk in flight (its commit's result `done`, or waited for) and lets go
    /// of the lock. `false`: nobody listens any more.
    async fn settle_in_flight(
        &mut self,
        done: Option<Result<Vec<Outcome>, StoreError>>,
    ) -> Result<bool, StoreError> {
        let settled = match self.in_flight.take() {
            Some(mut f) => {
                let done = match done {
                    Some(done) => done,
                    None => joined((&mut f.commit).await),
                };
                let cache = self.locked.as_mut().expect("held while a chunk commits");
                Some(settle(self.store, self.ctx, cache, f, done).await)
            }
            None => None,
        };
        self.locked = None;
        match settled {
            Some(settled) => self.answer(settled).await,
            None => Ok(true),
        }
    }

    /// Sends a settled chunk's answer, writing it entry by entry first if it has to be.
    /// Called without the linking lock. `false`: nobody listens any more.
    async fn answer(&mut self, settled: Settled) -> Result<bool, StoreError> {
        let answer = match settled {
            Settled::Answered(answer) => answer,
            Settled::Retry(kept) => {
                let entries = kept.restore()?;
                let mut each = Vec::with_capacity(entries.len());
                for entry in entries {
                    each.push(self.store.write_entry(self.ctx, entry).await);
                }
                Ok(each)
            }
        };
        self.send(answer).await
    }

    async fn send(&self, answer: BatchResult) -> Result<bool, StoreError> {
        Ok(self.results.send(answer).await.is_ok())
    }
}

/// Decides `entry` now if it neither reads the store nor may involve a `busy` identity.
/// `false`: it waits until the chunk in flight is applied.
fn plan_early(
    planner: &mut Planner<'_>,
    entry: &mut WriteEntry,
    busy: &BTreeSet<EnterpriseId>,
) -> Result<bool, StoreError> {
    let (source, resource) = match &entry.op {
        WriteOp::Update { id, resource, .. } => {
            if refuse_golden(Some(id), Some(resource)).is_err() {
                return Ok(false);
            }
            (id.clone(), resource)
        }
        WriteOp::Create {
            resource,
            if_none_exist: None,
        } => {
            if refuse_golden(None, Some(resource)).is_err() {
                return Ok(false);
            }
            (placeholder(&mut entry.full_url), resource)
        }
        _ => return Ok(false),
    };
    // A sender's merge is followed by reading the store: it waits.
    if !resource.is_object() || replaced_by_reference(resource).is_some() {
        return Ok(false);
    }
    planner.write_unless_busy(&source, resource, busy)
}

/// Composes the golden records of the identities `planner` touched so far and extracts
/// their index rows and those of `entries` (the chunk's writes), on the blocking pool.
/// Done while the previous chunk commits; what `finish` cannot reuse is composed again, and
/// what has no rows yet is extracted in the commit, as before.
async fn prepare_ahead(
    store: &EmpiStore,
    ctx: &RequestContext,
    planner: &mut Planner<'_>,
    entries: &mut Vec<WriteEntry>,
) -> Result<(), StoreError> {
    let inner = store.inner().clone();
    planner
        .compose_ahead(inner.as_ref(), ctx, &store.mpi().survivorship)
        .await?;
    let (keys, goldens): (Vec<_>, Vec<WriteEntry>) = planner
        .take_ahead()
        .into_iter()
        .map(|(e, a)| ((e, a.links, a.prior), a.entry))
        .unzip();
    let sources = entries.len();
    let mut all = std::mem::take(entries);
    all.extend(goldens);
    let mut all = tokio::task::spawn_blocking(move || {
        store::extract_ahead(inner.extractor(), &mut all);
        all
    })
    .await
    .map_err(|e| StoreError::Backend(format!("EMPI import extraction task failed: {e}")))?;
    let goldens = all.split_off(sources);
    *entries = all;
    planner.restore_ahead(
        keys.into_iter()
            .zip(goldens)
            .map(|((e, links, prior), entry)| {
                (
                    e,
                    AheadGolden {
                        links,
                        prior,
                        entry,
                    },
                )
            })
            .collect(),
    );
    Ok(())
}

/// A chunk as it came, kept while its plan commits: for a write entry by entry if the
/// transaction fails, or through `batch` if planning does. Index rows the reader extracted
/// are not kept (the store extracts them again on that path). Each resource is kept as JSON text
/// (one allocation, where a copy of the tree was a few dozen, each freed again on another
/// thread once the chunk was answered: together about a twentieth of an import's CPU) and
/// parsed again only when it is needed.
struct KeptChunk(Vec<(WriteEntry, Option<Vec<u8>>)>);

impl KeptChunk {
    /// The copy of `chunk` to keep, and `chunk` to plan and write.
    fn keep(mut chunk: Vec<WriteEntry>) -> (KeptChunk, Vec<WriteEntry>) {
        let kept = chunk
            .iter_mut()
            .map(|entry| {
                // Without its index rows (a write extracts them again) and its resource, the
                // entry is cheap to copy.
                let index = entry.index.take();
                let resource = entry.op.resource_mut().map(std::mem::take);
                let mut copy = entry.clone();
                entry.index = index;
                let Some(resource) = resource else {
                    return (copy, None);
                };
                let text = serde_json::to_vec(&resource).ok();
                if text.is_none()
                    && let Some(kept) = copy.op.resource_mut()
                {
                    // Not expressible as text (a JSON value always is): kept as a tree.
                    *kept = resource.clone();
                }
                if let Some(planned) = entry.op.resource_mut() {
                    *planned = resource;
                }
                (copy, text)
            })
            .collect();
        (KeptChunk(kept), chunk)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The chunk as it came.
    fn restore(self) -> Result<Vec<WriteEntry>, StoreError> {
        self.0
            .into_iter()
            .map(|(mut entry, text)| {
                if let Some(text) = text
                    && let Some(resource) = entry.op.resource_mut()
                {
                    *resource = serde_json::from_slice(&text).map_err(|e| {
                        StoreError::Backend(format!("EMPI import: a kept entry: {e}"))
                    })?;
                }
                Ok(entry)
            })
            .collect()
    }
}

/// The commit task's result.
fn joined(
    done: Result<Result<Vec<Outcome>, StoreError>, tokio::task::JoinError>,
) -> Result<Vec<Outcome>, StoreError> {
    done.map_err(|e| StoreError::Backend(format!("EMPI import commit task failed: {e}")))?
}

/// Brings the cache to what `f`'s commit did: its plan kept where the commit stored it
/// ([`UndoLog::confirm`](super::plan::UndoLog::confirm)), else undone and what it committed
/// applied (nothing, if it failed). Any plan on top of `f`'s must avoid `f.busy`, or be
/// undone first.
async fn settle(
    store: &EmpiStore,
    ctx: &RequestContext,
    cache: &mut Cache,
    f: InFlight,
    done: Result<Vec<Outcome>, StoreError>,
) -> Settled {
    match &done {
        Ok(outcomes) => {
            let planned = f.undo.confirm(cache, outcomes);
            cache.apply_committed(outcomes.iter().filter_map(Outcome::resource), planned);
        }
        Err(_) => {
            f.undo.apply(cache);
        }
    }
    refresh_after_commit(cache, store.inner().as_ref(), ctx).await;
    match done {
        Ok(mut outcomes) => {
            outcomes.truncate(f.entries.len());
            // The chunk as it came, kept for a retry, is freed beside the next commit.
            store::free_elsewhere(f.entries);
            Settled::Answered(Ok(outcomes.into_iter().map(Ok).collect()))
        }
        Err(StoreError::Entry { .. }) => Settled::Retry(f.entries),
        Err(other) => Settled::Answered(Err(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The kept copy gives back the chunk as it came, whatever planning did to the chunk.
    #[test]
    fn a_kept_chunk_is_the_chunk_as_it_came() {
        let mut chunk = vec![
            WriteEntry::new(WriteOp::Create {
                resource: json!({"resourceType": "Patient", "name": [{"family": "Kato"}],
                    "birthDate": "1970-01-02", "multipleBirthInteger": 2}),
                if_none_exist: None,
            }),
            WriteEntry::new(WriteOp::Update {
                resource_type: "Patient".into(),
                id: "p1".into(),
                resource: json!({"resourceType": "Patient", "id": "p1", "active": true}),
                if_match: Some(3),
            }),
        ];
        let before = format!("{chunk:?}");
        chunk[1].index = Some(Vec::new());
        let with_rows = format!("{chunk:?}");
        let (kept, mut planned) = KeptChunk::keep(chunk);
        // The chunk to plan keeps its rows; the kept copy does not.
        assert_eq!(format!("{planned:?}"), with_rows);
        assert_eq!(kept.len(), 2);
        if let Some(resource) = planned[0].op.resource_mut() {
            resource["id"] = json!("changed by planning");
        }
        let restored = kept.restore().expect("kept as text");
        assert_eq!(format!("{restored:?}"), before);
    }
}
