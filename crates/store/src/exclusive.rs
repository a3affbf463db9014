//! Named locks held across every process that shares the store's database: what lets several
//! `renkei serve` on one database take turns at a decision that must see every earlier one
//! (the EMPI linking a Patient).
//!
//! - PostgreSQL: a session-level advisory lock (`pg_advisory_lock`) on a connection taken from
//!   the pool for as long as the lock is held. Releasing unlocks and returns the connection;
//!   a guard dropped without [`ExclusiveLock::release`] (a panic, a cancelled task) unlocks on
//!   a spawned task, or, with no runtime left, closes the connection, which ends the session
//!   and so the lock.
//! - SQLite: an exclusive OS file lock (`flock`) on a file beside the database
//!   (`<db>.<name>.lock`), taken on the blocking pool; the OS releases it when the file is
//!   closed or the process dies.
//!
//! A holder that keeps the lock across many decisions (an import's pipeline) asks
//! [`ExclusiveLock::wanted`] whether another process waits for it, and lets go if so. On
//! PostgreSQL a waiter is an ungranted advisory lock in `pg_locks`. On SQLite a waiter holds a
//! shared `flock` on a second file (`<db>.<name>.knock`) for as long as it waits; the holder
//! tries an exclusive lock on that file, which fails exactly while someone knocks.
//!
//! Not re-entrant: a process that needs the lock from several tasks serializes them itself
//! first (the EMPI does, with its cache mutex), so that one connection, not many, waits here.

use std::fmt;

/// A held exclusive lock; released on [`ExclusiveLock::release`] or drop.
pub struct ExclusiveLock {
    pub(crate) held: Held,
}

pub(crate) enum Held {
    Postgres {
        client: Option<Box<deadpool_postgres::Object>>,
        key: i64,
    },
    File {
        /// Holds the lock while open.
        #[allow(dead_code)]
        lock: std::fs::File,
        /// The knock file, opened to ask whether anyone waits.
        knock: std::fs::File,
    },
}

impl fmt::Debug for ExclusiveLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.held {
            Held::Postgres { key, .. } => write!(f, "ExclusiveLock(pg_advisory_lock {key})"),
            Held::File { .. } => f.write_str("ExclusiveLock(file)"),
        }
    }
}

impl ExclusiveLock {
    /// Releases the lock now (and, on PostgreSQL, returns its connection to the pool).
    pub async fn release(mut self) {
        if let Held::Postgres { client, key } = &mut self.held
            && let Some(client) = client.take()
        {
            unlock(*client, *key).await;
        }
    }
}

impl ExclusiveLock {
    /// Whether another process (or another connection of this one) waits for this lock now.
    /// Cheap: one non-blocking `flock`, or one query on the lock's own connection.
    pub async fn wanted(&self) -> Result<bool, crate::StoreError> {
        match &self.held {
            Held::Postgres {
                client: Some(client),
                key,
            } => {
                // A bigint advisory key shows as its high half in `classid`, its low half in
                // `objid`, with `objsubid` 1.
                let bits = *key as u64;
                let (high, low) = ((bits >> 32) as i64, (bits & 0xffff_ffff) as i64);
                let row = client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                         AND NOT granted AND objsubid = 1 \
                         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         AND classid::bigint = $1 AND objid::bigint = $2)",
                        &[&high, &low],
                    )
                    .await?;
                Ok(row.get(0))
            }
            Held::Postgres { client: None, .. } => Ok(false),
            Held::File { knock, .. } => match knock.try_lock() {
                Ok(()) => {
                    knock
                        .unlock()
                        .map_err(|e| crate::StoreError::Backend(format!("knock file: {e}")))?;
                    Ok(false)
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(true),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(crate::StoreError::Backend(format!("knock file: {e}")))
                }
            },
        }
    }
}

impl Drop for ExclusiveLock {
    fn drop(&mut self) {
        if let Held::Postgres { client, key } = &mut self.held
            && let Some(client) = client.take()
        {
            let key = *key;
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(unlock(*client, key));
                }
                // Closing the connection ends the session, which releases its locks.
                Err(_) => drop(deadpool_postgres::Object::take(*client)),
            }
        }
    }
}

async fn unlock(client: deadpool_postgres::Object, key: i64) {
    if let Err(e) = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
    {
        // The session may hold the lock still: close it rather than pool it.
        tracing::warn!(error = %e, key, "could not release an advisory lock; closing its connection");
        drop(deadpool_postgres::Object::take(client));
    }
}

/// The advisory-lock key of a lock name: FNV-1a, stable across processes and releases.
pub(crate) fn advisory_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Whether a lock name can name a file beside the database.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(advisory_key("empi"), advisory_key("empi"));
        assert_ne!(advisory_key("empi"), advisory_key("empi2"));
        assert!(valid_name("empi-linking"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
    }
}
