//! Group commit of keyed units: a small pool of writer tasks takes every unit queued while
//! the previous commit ran and commits them in one `Store::commit_keyed` call. Nothing waits
//! for a group to fill: an idle system commits a lone unit at once, a busy one amortizes the
//! transaction (and, on SQLite, its fsync) over everything that queued meanwhile. A unit sent
//! `alone` (one whose group was rolled back by another unit's failure) is committed in a group
//! of its own, so that it cannot be rolled back for somebody else twice.

use std::sync::Arc;

use store::{ErrorKind, KeyedWrite, Outcome, RequestContext, Store, StoreError};
use tokio::sync::{Mutex, mpsc, oneshot};

type Done = oneshot::Sender<Result<Vec<Outcome>, StoreError>>;

/// A queued unit: the writes, whether they go in a group of their own, and who waits.
struct Job {
    unit: KeyedWrite,
    alone: bool,
    done: Done,
}

/// Hands units to the writer tasks and waits for their commit.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
}

impl GroupCommitter {
    /// Starts `writers` writer tasks (at least one) on the current tokio runtime, each
    /// committing up to `max_group` units per transaction. They stop when every clone of the
    /// committer is dropped and the queue is drained.
    pub fn start(store: Arc<dyn Store>, writers: usize, max_group: usize) -> Self {
        let (queue, rx) = mpsc::channel(4096);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..writers.max(1) {
            tokio::spawn(writer(store.clone(), rx.clone(), max_group.max(1)));
        }
        GroupCommitter { queue }
    }

    /// Commits one unit (with whatever else is queued, unless `alone`) and returns its result.
    pub async fn commit(&self, unit: KeyedWrite, alone: bool) -> Result<Vec<Outcome>, StoreError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Job { unit, alone, done })
            .await
            .map_err(|_| StoreError::Unavailable("the commit queue is closed".into()))?;
        wait.await
            .map_err(|_| StoreError::Unavailable("the commit task stopped".into()))?
    }
}

async fn writer(store: Arc<dyn Store>, rx: Arc<Mutex<mpsc::Receiver<Job>>>, max_group: usize) {
    // A unit to be committed alone, met while a group was gathered: it starts the next one.
    let mut next: Option<Job> = None;
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let first = match next.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut group = vec![first];
            while !group[0].alone && group.len() < max_group {
                match rx.try_recv() {
                    Ok(job) if job.alone => {
                        next = Some(job);
                        break;
                    }
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        let (units, dones): (Vec<_>, Vec<_>) = group.into_iter().map(|j| (j.unit, j.done)).unzip();
        let ctx = RequestContext::system();
        let started = std::time::Instant::now();
        let committed = store.commit_keyed(&ctx, units).await;
        tracing::debug!(
            units = dones.len(),
            micros = started.elapsed().as_micros() as u64,
            "group commit"
        );
        match committed {
            Ok(results) => {
                for (done, result) in dones.into_iter().zip(results) {
                    let _ = done.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, units = dones.len(), "group commit failed");
                for done in dones {
                    let _ = done.send(Err(same_kind(&error)));
                }
            }
        }
    }
}

/// A copy of a group's error for each of its units (errors are not `Clone`: they may hold
/// driver errors; the kind and the text are what callers use).
fn same_kind(e: &StoreError) -> StoreError {
    let text = e.to_string();
    match e.kind() {
        ErrorKind::Conflict => StoreError::Conflict(text),
        ErrorKind::Unavailable => StoreError::Unavailable(text),
        _ => StoreError::Backend(text),
    }
}
