//! An in-memory [`Sink`]: the reference implementation of the commit contract, used by the
//! tests and the benchmark (and a model for the store's implementation).

use std::collections::HashMap;
use std::sync::Mutex;

use hl7v2::ack::{IdempotencyKey, StoredAck};
use serde_json::Value;

use super::pipeline::{Commit, Sink, SinkError};

/// Everything committed so far.
#[derive(Debug, Default)]
pub struct Committed {
    pub acks: HashMap<IdempotencyKey, StoredAck>,
    /// Bundles in commit order.
    pub bundles: Vec<Value>,
    pub deferred_acks: Vec<Vec<u8>>,
    pub merges: usize,
}

/// A [`Sink`] keeping everything in memory; `fail` makes every commit fail (to test that
/// nothing is acknowledged).
#[derive(Debug, Default)]
pub struct MemorySink {
    pub committed: Mutex<Committed>,
    pub fail: std::sync::atomic::AtomicBool,
}

impl Sink for MemorySink {
    async fn stored_ack(&self, key: &IdempotencyKey) -> Result<Option<StoredAck>, SinkError> {
        let committed = self
            .committed
            .lock()
            .map_err(|_| SinkError::Unavailable("poisoned".into()))?;
        Ok(committed.acks.get(key).cloned())
    }

    async fn commit(&self, commit: Commit) -> Result<(), SinkError> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(SinkError::Unavailable("configured to fail".into()));
        }
        let mut committed = self
            .committed
            .lock()
            .map_err(|_| SinkError::Unavailable("poisoned".into()))?;
        // The unique index on the key: the first commit wins.
        if committed.acks.contains_key(&commit.ack.key) {
            return Err(SinkError::Duplicate);
        }
        committed.acks.insert(commit.ack.key.clone(), commit.ack);
        committed.merges += commit.mapped.merges.len();
        committed.bundles.push(commit.mapped.bundle);
        committed.deferred_acks.extend(commit.deferred_ack);
        Ok(())
    }
}
