//! Upkeep of the SQLite backend's write-ahead log: copying it back into the database file and
//! keeping it from growing without bound.
//!
//! A PASSIVE checkpoint on a thread of its own copies committed frames into the database file
//! every [`CHECKPOINT_EVERY`], so that this work is not added to a commit's latency. But SQLite
//! only starts the log over from its beginning when a write transaction begins while every
//! frame has been copied, and a writer that never pauses (a bulk import, a busy HL7 feed)
//! always has frames the last checkpoint did not see. The log then grows for as long as the
//! writes go on (gigabytes in a large import), every page lookup searches a longer log index,
//! and every commit appends to fresh file space. So the checkpoint thread publishes the log's
//! length, and the writer, between two transactions, runs a RESTART checkpoint once the log is
//! past [`RESTART_AT`] frames: it copies the few frames the background pass has not (the writer
//! is idle meanwhile, so it catches up), waits for readers to leave the log, and the next
//! commit writes from the start of the file again (which `journal_size_limit` then truncates).

use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use crate::error::StoreError;

/// How often the background pass copies the log into the database file.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Log length (frames, about 4 KiB each) past which the writer restarts the log: 64 MiB, the
/// `journal_size_limit` the log is truncated back to.
pub(crate) const RESTART_AT: i64 = 16_384;

/// The log's length as the last checkpoint saw it, shared by the checkpoint thread and the
/// writer.
#[derive(Debug)]
pub(crate) struct WalLength {
    frames: AtomicI64,
    restart_at: i64,
}

impl WalLength {
    pub(crate) fn new(restart_at: i64) -> Self {
        WalLength {
            frames: AtomicI64::new(0),
            restart_at,
        }
    }

    /// Called by the writer with its connection, outside any transaction: restarts the log if
    /// it has grown past the threshold ([`RESTART_AT`] in a store). A restart that cannot finish (a reader held the log
    /// for the whole busy timeout) is left for the next transaction.
    pub(crate) fn restart_if_long(&self, writer: &Connection) {
        if self.frames.load(Ordering::Relaxed) < self.restart_at {
            return;
        }
        match writer.wal_checkpoint_v2(None::<&str>, CheckpointMode::RESTART) {
            Ok((frames, _)) => {
                tracing::debug!(frames, "SQLite log restarted");
                self.frames.store(0, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "SQLite log restart postponed"),
        }
    }

    fn record(&self, frames: i64) {
        self.frames.store(frames, Ordering::Relaxed);
    }
}

/// Starts the background checkpoint thread on a connection of its own; it stops once `owner`
/// (the store) is gone.
pub(crate) fn start_checkpointer<T: Send + Sync + 'static>(
    conn: Connection,
    owner: Weak<T>,
    length: std::sync::Arc<WalLength>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while owner.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                    Ok((frames, _copied)) => length.record(i64::from(frames)),
                    // The writer's RESTART checkpoint was running: nothing to do.
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
                        tracing::debug!("SQLite checkpoint skipped: another one was running");
                    }
                    Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed; retried"),
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &std::path::Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             PRAGMA journal_size_limit = 1048576;",
        )
        .unwrap();
        c
    }

    fn wal_bytes(db: &std::path::Path) -> u64 {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(&wal).map_or(0, |m| m.len())
    }

    /// Each write transaction begins before the checkpoint of the previous one has run, as
    /// under a writer that never pauses; `restart` says whether the writer restarts long logs.
    fn busy_writer_log_bytes(restart: bool) -> u64 {
        let dir = std::env::temp_dir().join(format!("renkei-wal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let writer = open(&db);
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
            .unwrap();
        let checkpointer = open(&db);
        let length = WalLength::new(64);
        let blob = vec![7u8; 3000];
        for round in 0..400 {
            if restart {
                length.restart_if_long(&writer);
            }
            writer.execute_batch("BEGIN IMMEDIATE").unwrap();
            let (frames, _) = checkpointer
                .wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE)
                .unwrap();
            length.record(i64::from(frames));
            for i in 0..4 {
                writer
                    .execute(
                        "INSERT INTO t (id, body) VALUES (?1, ?2)",
                        rusqlite::params![round * 4 + i, blob],
                    )
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
        }
        let bytes = wal_bytes(&db);
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1600);
        drop((writer, checkpointer));
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }

    #[test]
    fn a_busy_writer_restarts_the_log_once_it_is_long() {
        let grown = busy_writer_log_bytes(false);
        let bounded = busy_writer_log_bytes(true);
        // Without restarts the log holds every frame of the 400 transactions (over 1,600
        // pages); with them it stays near the threshold (64 frames) plus one transaction.
        assert!(grown > 1600 * 4096, "log without restarts: {grown} bytes");
        assert!(
            bounded < 2 * 1024 * 1024,
            "log with restarts: {bounded} bytes"
        );
    }
}
