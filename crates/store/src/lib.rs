//! Renkei's resource store: the [`Store`] trait and its two backends, [`SqliteStore`] (the
//! embedded default, one file) and [`PostgresStore`] (production).
//!
//! # What it owns
//! Every version of every resource (history), the current-version pointer, the search-index
//! rows of the current versions, the change feed (outbox, with the Patient compartments of each
//! change) and the checkpoints of its named consumers. A write, its index rows and its
//! change-feed row commit in one database transaction, and a list of writes (a FHIR transaction
//! bundle, an import chunk) can commit as one. Resource JSON is stored exactly as written, plus
//! `id` and `meta.versionId` / `meta.lastUpdated`.
//!
//! It also enforces the access policy each call's [`RequestContext`] carries: a restricted
//! caller's reads, searches (counts and paging included) and conditional matches see only the
//! resources of its patients' compartments, minus those with a denied security label, because
//! the condition is part of the SQL the store builds (`access`; `docs/storage.md`, "Access").
//!
//! # What it must not do
//! Know HTTP, validate resources against the FHIR definitions (the caller does, before writing),
//! or decide what a caller may see or write (the authorization layer computes the policy once
//! per request; the store only applies it).
//!
//! # Layout
//! - [`engine`]-private: the write algorithm shared by both backends (planning, `urn:uuid`
//!   rewriting, conditional references, version checks), over a small backend trait.
//! - `sqlite`, `postgres`: the backends; `sql`: statements shared by both; migrations live in
//!   `migrations/{sqlite,postgres}` and are applied on open.
//! - [`index`]: index rows and the pluggable [`IndexExtractor`].
//! - [`search`]: parsing of search parameters into a [`SearchQuery`].
//! - `access`-private: the access policy as SQL conditions (and over index rows), and the
//!   refusal of what it cannot scope.
//! - [`audit`]: the append-only, hash-chained audit log and its signed head ([`AuditLog`]).
//! - [`registry`]: the registered clients and users ([`Registry`]).
//! - [`exchange_state`]: the exchange's node registrations, holdings, aliases and send queue.
//! - [`feed`]: reading the change feed without skipping ([`FeedPosition`], [`FeedBatch`]) and
//!   [`feed::Consumer`], a named consumer with a durable checkpoint; `compartment`: which
//!   Patient compartments a written version is in.
//!
//! See `docs/storage.md` for tables, index layout and the concurrency trade-offs.

mod access;
pub mod audit;
mod compartment;
mod context;
mod engine;
mod error;
pub mod exchange_state;
mod exclusive;
pub mod extract;
pub mod feed;
pub mod index;
pub mod marks;
mod model;
mod pg_index;
mod postgres;
mod receipt;
mod refs;
pub mod registry;
pub mod search;
mod sql;
mod sqlite;
mod sqlite_index;
mod sqlite_names;
mod sqlite_vfs;
pub mod time;
mod wal;

use async_trait::async_trait;
use serde_json::Value;

pub use audit::{AuditEntry, AuditLog, AuditQuery, AuditRow, WriteAuditor};
pub use context::{
    AccessPolicy, Actor, Patients, RequestContext, Restriction, SecurityLabel, Selector, Withheld,
    Withholding, WriteAudit,
};
pub use error::{ErrorKind, StoreError};
pub use exchange_state::{ExchangeState, ExchangeTable};
pub use exclusive::ExclusiveLock;
pub use extract::FhirIndexExtractor;
pub use feed::{Consumer, FeedBatch, FeedPosition};
pub use index::{
    BasicExtractor, FullUrlTypes, IndexExtractor, IndexRow, IndexValue, ParamDef, ParamType,
    extract_ahead,
};
pub use model::{
    Change, HistoryPage, HistoryQuery, HistoryScope, Method, Outcome, ReferenceCheck,
    StoredResource, WriteEntry, WriteOp,
};
pub use postgres::{PostgresConfig, PostgresStore, redact as postgres_redact};
pub use receipt::{KeyedWrite, Receipt};
pub use refs::{LocalReference, absent_resources, local_references};
pub use registry::Registry;
pub use search::{SearchPage, SearchQuery};
pub use sqlite::SqliteStore;

/// Frees `value` on tokio's blocking pool (in the background) when there is a runtime, else
/// here: for a chunk's worth of JSON on a path every chunk waits for (an EMPI import's
/// planner, the SQLite writer).
pub fn free_elsewhere<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// What [`Store::batch`] answers: each entry's outcome, or why none was written.
pub type BatchResult = Result<Vec<Result<Outcome, StoreError>>, StoreError>;

/// The resource store. Both backends implement it and pass the same test suite
/// (`tests/store_suite.rs`).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `"sqlite"` or `"postgresql"`.
    fn backend(&self) -> &'static str;

    /// The extractor that produces index rows (and declares the searchable parameters).
    fn extractor(&self) -> &dyn IndexExtractor;

    /// Succeeds when the store can serve requests.
    async fn ready(&self) -> Result<(), StoreError>;

    /// The current version of a resource, deleted or not; `None` if it never existed or the
    /// caller may not see it (a deleted resource is judged on its last content).
    async fn load(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// One version of a resource; `None` if that version never existed or the caller may not
    /// see the resource (judged on its current version, as for [`Store::load`]).
    async fn load_version(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>, StoreError>;

    /// A page of history, newest first. Instance history of an unknown resource, or of one the
    /// caller may not see, is `NotFound`; type- and system-level history is
    /// [`StoreError::Forbidden`] to a restricted caller.
    async fn history(
        &self,
        ctx: &RequestContext,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError>;

    /// A page of current, non-deleted resources matching `q` that the caller may see, in a
    /// stable order (its total and next cursor count only those).
    async fn search(&self, ctx: &RequestContext, q: &SearchQuery)
    -> Result<SearchPage, StoreError>;

    /// Ids of up to `limit` current resources matching `q` that the caller may see, without
    /// loading them: exactly what a conditional write with this query matches (the same SQL),
    /// for a caller that must know it before the write (the EMPI plans a conditional Patient
    /// update's links).
    async fn matching_ids(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// The database's plan for the page query of `q` (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL), one step per line: to check that a search is index-driven.
    async fn explain(&self, ctx: &RequestContext, q: &SearchQuery) -> Result<String, StoreError>;

    /// Applies all writes atomically, in the given order (the caller sorts them in FHIR
    /// processing order). The first failure rolls everything back and is returned as
    /// [`StoreError::Entry`] with its index. Conditional matching and reference checks use
    /// the caller's access policy: a resource it may not see is never matched, and a write by
    /// id to one is `NotFound` (see `engine`).
    async fn transaction(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Outcome>, StoreError>;

    /// Applies each write on its own (a failing entry changes nothing and does not stop the
    /// others), committing all successful ones together.
    async fn batch(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError>;

    /// A stream of batches (an import's chunks), each applied as [`Store::batch`] applies it
    /// and answered on `results` in the order they came. A store may prepare a batch while
    /// the one before it commits: the EMPI plans the next chunk's links meanwhile (see
    /// `mpi::EmpiStore`). Returns when `batches` closes (after answering every batch) or
    /// `results` does; an error here means the batch being answered could not be.
    async fn batches(
        &self,
        ctx: &RequestContext,
        mut batches: tokio::sync::mpsc::Receiver<Vec<WriteEntry>>,
        results: tokio::sync::mpsc::Sender<BatchResult>,
    ) -> Result<(), StoreError> {
        while let Some(entries) = batches.recv().await {
            if results.send(self.batch(ctx, entries).await).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The receipt stored under `key`, if a message with that key was committed.
    async fn receipt(&self, ctx: &RequestContext, key: &str)
    -> Result<Option<Receipt>, StoreError>;

    /// Group commit of keyed writes: ONE database transaction holding every unit (its receipt
    /// and its writes, each unit atomic). A unit whose key is already stored (or committed
    /// concurrently) writes nothing and yields [`StoreError::DuplicateKey`]. If a unit fails,
    /// the whole transaction is rolled back: that unit yields its error and every other one
    /// [`StoreError::GroupAborted`] (nothing of it was written; the caller commits it again,
    /// best alone). Keeping no copy of the units for a second, isolated attempt, and no
    /// savepoint per unit, is what makes the common case cheap. The outer error means nothing
    /// was committed.
    async fn commit_keyed(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<Vec<Result<Vec<Outcome>, StoreError>>, StoreError>;

    /// Up to `limit` change-feed rows with a `seq` above `after`, in `seq` order. On
    /// PostgreSQL a row may become visible after rows with a larger `seq`, so a reader that
    /// moves `after` past what it read can miss it: use [`Store::feed`] to follow the feed.
    /// A restricted caller is refused ([`StoreError::Forbidden`]).
    async fn changes(
        &self,
        ctx: &RequestContext,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    /// Takes the lock `name` (letters, digits, `-`, `_`, `.`) shared by every process using this
    /// store's database, waiting until it is free; it is held until the guard is released or
    /// dropped. See [`ExclusiveLock`].
    async fn lock_exclusive(
        &self,
        ctx: &RequestContext,
        name: &str,
    ) -> Result<ExclusiveLock, StoreError>;

    /// Up to `limit` change-feed rows after `after`, oldest first, and the position after the
    /// last of them. Reading on from each batch's `next` delivers every committed change
    /// exactly once, in an order in which no change can appear behind a position already
    /// returned (on PostgreSQL, changes of transactions that were still in progress, or that
    /// began after the oldest one in progress, wait for the next call: see
    /// `docs/storage.md`, "Change feed"). A restricted caller is refused
    /// ([`StoreError::Forbidden`]).
    async fn feed(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        limit: usize,
    ) -> Result<FeedBatch, StoreError>;

    /// The position the named consumer saved last ([`FeedPosition::START`] if it never
    /// saved one).
    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
    ) -> Result<FeedPosition, StoreError>;

    /// The committed changes of `resource_type` after `after` that [`Store::feed`] may not
    /// deliver yet, oldest first: on PostgreSQL, those of transactions at or above the oldest
    /// one still in progress (an unrelated long transaction holds the feed back, not these);
    /// on SQLite none, the feed being never behind. For a reader that must act on every
    /// committed change now, such as the EMPI deciding under its lock: it applies these
    /// idempotently and keeps its position where `feed` left it, since they may have gaps
    /// (the batch's `next` is for reading the next page, not a place to stand). A restricted
    /// caller is refused ([`StoreError::Forbidden`]).
    async fn feed_pending(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        resource_type: &str,
        limit: usize,
    ) -> Result<FeedBatch, StoreError>;

    /// Saves the named consumer's position (durably, in its own transaction).
    async fn save_checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
        position: &FeedPosition,
    ) -> Result<(), StoreError>;

    /// The current version; `NotFound` if it never existed, `Gone` if it is deleted.
    async fn read(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> Result<StoredResource, StoreError> {
        match self.load(ctx, resource_type, id).await? {
            None => Err(StoreError::NotFound {
                resource_type: resource_type.into(),
                id: id.into(),
                version: None,
            }),
            Some(r) if r.deleted => Err(StoreError::Gone {
                resource_type: r.resource_type,
                id: r.id,
                version: r.version,
            }),
            Some(r) => Ok(r),
        }
    }

    /// One version; `NotFound` if it never existed, `Gone` if that version is a deletion.
    async fn vread(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<StoredResource, StoreError> {
        match self.load_version(ctx, resource_type, id, version).await? {
            None => Err(StoreError::NotFound {
                resource_type: resource_type.into(),
                id: id.into(),
                version: Some(version),
            }),
            Some(r) if r.deleted => Err(StoreError::Gone {
                resource_type: r.resource_type,
                id: r.id,
                version: r.version,
            }),
            Some(r) => Ok(r),
        }
    }

    /// Creates a resource with a server-assigned id.
    async fn create(&self, ctx: &RequestContext, resource: Value) -> Result<Outcome, StoreError> {
        one(self
            .transaction(
                ctx,
                vec![WriteEntry::new(WriteOp::Create {
                    resource,
                    if_none_exist: None,
                })],
            )
            .await)
    }

    /// Updates (or creates) `resource_type/id`, optionally only if `if_match` is current.
    async fn update(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        resource: Value,
        if_match: Option<u64>,
    ) -> Result<Outcome, StoreError> {
        let op = WriteOp::Update {
            resource_type: resource_type.into(),
            id: id.into(),
            resource,
            if_match,
        };
        one(self.transaction(ctx, vec![WriteEntry::new(op)]).await)
    }

    /// Deletes `resource_type/id` (logically; history is kept).
    async fn delete(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<Outcome, StoreError> {
        let op = WriteOp::Delete {
            resource_type: resource_type.into(),
            id: id.into(),
            if_match,
        };
        one(self.transaction(ctx, vec![WriteEntry::new(op)]).await)
    }

    /// Applies one write (any [`WriteOp`]) on its own.
    async fn write(&self, ctx: &RequestContext, op: WriteOp) -> Result<Outcome, StoreError> {
        self.write_entry(ctx, WriteEntry::new(op)).await
    }

    /// Applies one prepared write (with its reference check, or as a patch's result) on its
    /// own.
    async fn write_entry(
        &self,
        ctx: &RequestContext,
        entry: WriteEntry,
    ) -> Result<Outcome, StoreError> {
        one(self.transaction(ctx, vec![entry]).await)
    }
}

fn one(r: Result<Vec<Outcome>, StoreError>) -> Result<Outcome, StoreError> {
    r.map_err(StoreError::into_inner)?
        .pop()
        .ok_or_else(|| StoreError::Backend("a one-entry transaction returned nothing".into()))
}

/// Says what opening a store at migration `applied` does to reach `latest`: an upgrade of an
/// existing store is worth one info line; creating a new one (every test and benchmark store)
/// only a debug line.
fn announce_migrations(backend: &str, applied: i64, latest: i64) {
    if applied == 0 {
        tracing::debug!(version = latest, "creating a new {backend} store");
    } else if applied < latest {
        tracing::info!(
            from = applied,
            to = latest,
            "upgrading the {backend} store's schema"
        );
    }
}

/// Splits `limit + 1` rows (keyed by their paging key) into a page and its next cursor.
fn history_page(mut rows: Vec<(i64, StoredResource)>, count: usize) -> HistoryPage {
    let next = if rows.len() > count {
        rows.truncate(count);
        rows.last().map(|(k, _)| *k)
    } else {
        None
    };
    HistoryPage {
        versions: rows.into_iter().map(|(_, r)| r).collect(),
        next,
        total: None,
    }
}

/// Whether a page needs a `COUNT(*)` for its total: asked for, or not evident from the page
/// (a first page with fewer rows than asked holds every match).
/// One row of a search page: `rid`, the resource, its sort-key values.
type PageRow = (i64, StoredResource, Vec<search::KeyValue>);

fn needs_count(q: &SearchQuery, rows: usize) -> bool {
    use search::TotalMode;
    match q.total {
        TotalMode::None => false,
        TotalMode::Accurate | TotalMode::Estimate => true,
        TotalMode::Default => q.after.is_some() || rows > q.count || q.count == 0,
    }
}

/// Splits `limit + 1` rows (with their sort-key values) into a page and its next cursor.
fn search_page(q: &SearchQuery, mut rows: Vec<PageRow>, counted: Option<i64>) -> SearchPage {
    let total = counted.map(|t| t.max(0) as u64).or_else(|| {
        (q.total != search::TotalMode::None && q.after.is_none() && rows.len() <= q.count)
            .then_some(rows.len() as u64)
    });
    let next = if rows.len() > q.count {
        rows.truncate(q.count);
        rows.last().map(|(rid, _, keys)| {
            search::Cursor {
                keys: keys.clone(),
                rid: *rid,
            }
            .encode()
        })
    } else {
        None
    };
    SearchPage {
        matches: rows.into_iter().map(|(_, r, _)| r).collect(),
        total,
        next,
    }
}
