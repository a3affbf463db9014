//! The change feed's reading side: positions in the feed, batches, the durable checkpoints of
//! named consumers, and [`Consumer`], the driver that hands every change at least once to an
//! idempotent handler.
//!
//! The store writes one change row per version, in the version's own transaction. [`Store::feed`]
//! reads them in an order in which nothing can appear behind a position already read: on SQLite
//! the single writer makes `seq` order commit order; on PostgreSQL, where a row with a smaller
//! `seq` may become visible after a larger one, rows are read in `(transaction id, seq)` order
//! and only those of transactions older than the oldest one still in progress (the argument is
//! in `docs/storage.md`, "Change feed"). A consumer therefore never skips a change; after a
//! crash between its handler and its checkpoint it sees a batch again, so handlers must be
//! idempotent (a version is identified by `resource_type`, `id` and `version`).
//!
//! The feed is not filtered by the request's [`crate::AccessPolicy`]: a restricted caller is
//! refused ([`StoreError::Forbidden`]); the node's own consumers read it unrestricted.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::Store;
use crate::context::RequestContext;
use crate::error::StoreError;
use crate::model::Change;

/// A position in the change feed: the place after some change, where reading resumes.
///
/// Opaque: compare positions of one store only, and persist one as its text (`to_string()`,
/// read back with [`str::parse`]). [`FeedPosition::START`] (the default) is before every
/// change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FeedPosition {
    /// The writing transaction's id on PostgreSQL (0 on SQLite, and for rows written before
    /// the store recorded it).
    xid: u64,
    /// The change row's `seq`.
    seq: i64,
}

impl FeedPosition {
    /// Before every change.
    pub const START: FeedPosition = FeedPosition { xid: 0, seq: 0 };

    pub(crate) fn new(xid: u64, seq: i64) -> Self {
        FeedPosition { xid, seq }
    }

    pub(crate) fn xid(&self) -> u64 {
        self.xid
    }

    pub(crate) fn seq(&self) -> i64 {
        self.seq
    }

    /// The `seq` of the change just before this position (0 at [`FeedPosition::START`]): the
    /// change [`Store::changes`](crate::Store::changes) lists after `last_seq() - 1`. For a
    /// consumer that remembers where it stood and must recognise the store later.
    pub fn last_seq(&self) -> i64 {
        self.seq
    }
}

/// `xid:seq`, e.g. `0:1520` or `48213:1519`.
impl fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.xid, self.seq)
    }
}

impl FromStr for FeedPosition {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StoreError::Invalid(format!("'{s}' is not a change-feed position"));
        let (xid, seq) = s.split_once(':').ok_or_else(bad)?;
        let xid = xid.parse::<u64>().map_err(|_| bad())?;
        let seq = seq.parse::<i64>().map_err(|_| bad())?;
        if seq < 0 {
            return Err(bad());
        }
        Ok(FeedPosition { xid, seq })
    }
}

/// Changes read from the feed, oldest first, and the position after the last of them (`after`
/// itself when there were none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedBatch {
    pub changes: Vec<Change>,
    pub next: FeedPosition,
}

/// Longest consumer name, in bytes.
const MAX_NAME: usize = 200;

/// A consumer name is non-empty text of at most 200 bytes.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(StoreError::Invalid(format!(
            "a change-feed consumer name has 1 to {MAX_NAME} bytes, not {}",
            name.len()
        )));
    }
    Ok(())
}

/// Why [`Consumer::poll_once`] delivered nothing durable.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError<E> {
    /// Reading the feed or saving the checkpoint failed (the batch, if handled, will come again).
    #[error("change feed: {0}")]
    Store(#[from] StoreError),
    /// The handler failed: the checkpoint was not moved, the batch will come again.
    #[error("change-feed handler failed: {0}")]
    Handler(#[source] E),
}

/// Changes read per poll unless [`Consumer::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH: usize = 500;

/// A named consumer of the change feed with a durable checkpoint in the store.
///
/// [`Consumer::poll_once`] reads the changes after the checkpoint, hands them to a handler and
/// saves the new checkpoint only once the handler succeeded: a crash or a failure in between
/// delivers the same changes again (at least once), never loses one. Two consumers of one name
/// (two processes) are safe the same way: each change reaches the handler at least once.
pub struct Consumer {
    store: Arc<dyn Store>,
    name: String,
    ctx: RequestContext,
    batch: usize,
    /// The checkpoint as last read or saved by this consumer (read from the store at the first
    /// poll).
    position: Mutex<Option<FeedPosition>>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The consumer `name` of `store`, reading as the node itself
    /// ([`RequestContext::system`]), [`DEFAULT_BATCH`] changes per poll.
    pub fn new(store: Arc<dyn Store>, name: impl Into<String>) -> Self {
        Consumer {
            store,
            name: name.into(),
            ctx: RequestContext::system(),
            batch: DEFAULT_BATCH,
            position: Mutex::new(None),
        }
    }

    /// At most `n` (at least 1) changes per poll.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Reads with `ctx` (for its request id in logs; it must be unrestricted).
    pub fn with_context(mut self, ctx: RequestContext) -> Self {
        self.ctx = ctx;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The position after the last change this consumer handled durably.
    pub async fn position(&self) -> Result<FeedPosition, StoreError> {
        if let Some(p) = *self.position.lock().map_err(poisoned)? {
            return Ok(p);
        }
        let p = self.store.checkpoint(&self.ctx, &self.name).await?;
        *self.position.lock().map_err(poisoned)? = Some(p);
        Ok(p)
    }

    /// Reads the changes after the checkpoint (up to the batch size), hands them to `handler`
    /// and, once it succeeded, saves the position after them. Returns how many changes were
    /// handled: 0 when there was nothing new (the handler is then not called).
    pub async fn poll_once<F, Fut, E>(&self, handler: F) -> Result<usize, ConsumeError<E>>
    where
        F: FnOnce(Vec<Change>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let after = self.position().await?;
        let batch = self.store.feed(&self.ctx, &after, self.batch).await?;
        if batch.changes.is_empty() {
            return Ok(0);
        }
        let count = batch.changes.len();
        handler(batch.changes)
            .await
            .map_err(ConsumeError::Handler)?;
        self.store
            .save_checkpoint(&self.ctx, &self.name, &batch.next)
            .await?;
        *self.position.lock().map_err(poisoned)? = Some(batch.next);
        Ok(count)
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("a change-feed consumer's lock was poisoned by a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_text_and_order_by_transaction_then_seq() {
        let p = FeedPosition::new(48213, 1519);
        assert_eq!(p.to_string(), "48213:1519");
        assert_eq!("48213:1519".parse::<FeedPosition>().unwrap(), p);
        assert_eq!(
            FeedPosition::START
                .to_string()
                .parse::<FeedPosition>()
                .unwrap(),
            FeedPosition::START
        );
        assert!(FeedPosition::new(1, 9) < FeedPosition::new(2, 3));
        assert!(FeedPosition::new(2, 3) < FeedPosition::new(2, 4));
        for bad in ["", "12", "a:1", "1:b", "1:-1", "-1:2", "1:2:3"] {
            let err = bad.parse::<FeedPosition>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Invalid, "{bad}");
        }
    }

    #[test]
    fn consumer_names_are_bounded() {
        assert!(check_name("empi-cache").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(201)).is_err());
    }
}
