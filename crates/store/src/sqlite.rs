//! The SQLite backend (the embedded default): one database file, WAL journal, one writer
//! connection and a small pool of reader connections.
//!
//! Writes, searches and history run on tokio's blocking pool (`spawn_blocking`) so the async
//! runtime never waits on them; short reads (a key lookup, a bounded range of the change feed)
//! run on the calling thread, where they cost less than the hand-off. Writes are serialized
//! through the single writer connection (SQLite allows one writer at a time anyway), so
//! conditional operations need no further locking; readers see the last committed state (WAL
//! snapshot isolation) and never block the writer. `synchronous = FULL`:
//! a commit is on disk before it is acknowledged, at the cost of one fsync per transaction.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, Transaction};

use crate::PageRow;
use crate::Store;
use crate::access;
use crate::context::{RequestContext, Restriction};
use crate::engine::{self, Backend, Current, NewVersion};
use crate::error::StoreError;
use crate::feed::{self, FeedBatch, FeedPosition};
use crate::index::IndexExtractor;
use crate::model::{
    Change, HistoryPage, HistoryQuery, HistoryScope, Method, Outcome, StoredResource, WriteEntry,
};
use crate::receipt::{KeyedWrite, Receipt};
use crate::search::{KeyValue, PageSql, SearchPage, SearchQuery};
use crate::sql::{self, Sql, SqlParam};
use crate::sqlite_index::{self, PendingRows};
use crate::sqlite_names::{self, WriteNames};
use crate::wal::{self, WalLength};
use auth::labels::Labeler;

/// (version, script, what it does: logged when applied).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        include_str!("../migrations/sqlite/0001_init.sql"),
        "creates the schema",
    ),
    (
        2,
        include_str!("../migrations/sqlite/0002_receipt.sql"),
        "adds idempotency receipts",
    ),
    (
        3,
        include_str!("../migrations/sqlite/0003_index_without_rowid.sql"),
        "rebuilds the search-index tables keyed by resource (minutes on a store of millions of resources)",
    ),
    (
        4,
        include_str!("../migrations/sqlite/0004_derived_params.sql"),
        "removes the rows of Observation's combo-* parameters, now read from their parts",
    ),
    (
        COMPARTMENTS_MIGRATION,
        include_str!("../migrations/sqlite/0005_change_feed_consumers.sql"),
        "adds change-feed consumers and the Patient compartments of each change",
    ),
    (
        6,
        include_str!("../migrations/sqlite/0006_security.sql"),
        "adds the audit log and the registered clients and users",
    ),
    (
        7,
        include_str!("../migrations/sqlite/0007_auth_token.sql"),
        "adds the tokens the authorization server tracks (revocations, refresh tokens)",
    ),
    (
        8,
        include_str!("../migrations/sqlite/0008_exchange.sql"),
        "adds the exchange's node registrations, record-locator holdings, aliases and send queue",
    ),
    (
        9,
        include_str!("../migrations/sqlite/0009_search_names.sql"),
        "numbers the resource types and parameters of the search-index tables (minutes on a store of millions of resources)",
    ),
];

/// The migration that adds `change_compartment`: after its script, the store fills in the
/// compartments of the changes already written (`compartment::backfill_sql`).
const COMPARTMENTS_MIGRATION: i64 = 5;

/// Change-feed rows after a `seq`, with their compartments as a JSON array; SQLite's single
/// writer makes `seq` order commit order, so this is also the skip-free feed.
const CHANGES: &str = "SELECT o.seq, o.res_type, o.res_id, o.version, o.method, o.request_id, \
     (SELECT json_group_array(c.patient) FROM change_compartment c WHERE c.version_seq = o.version_seq) \
     FROM outbox o WHERE o.seq > ?1 ORDER BY o.seq LIMIT ?2";

/// [`sql::PATIENT_REFERENCES`] over numbered parameter names (`sqlite_names`).
const PATIENT_REFERENCES: &str = "SELECT p.name, x.target_id FROM idx_reference x \
     JOIN search_name p ON p.id = x.param \
     WHERE x.rid = ?1 AND x.target_type = 'Patient' AND x.target_id IS NOT NULL";

/// Concurrent reads: a few per core. More only makes SQLite's queries compete for the same
/// cores (measured: 8 concurrent readers on 2 cores served a third fewer searches per second
/// than 2, at several times the latency).
fn max_readers() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(2, 16)
}

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_permits: tokio::sync::Semaphore,
    extractor: Arc<dyn IndexExtractor>,
    wal: Arc<WalLength>,
    /// Labels what is written (`marks`), once set.
    labeler: std::sync::OnceLock<Arc<Labeler>>,
}

impl SqliteStore {
    /// The database file's name inside a data directory.
    pub const FILE_NAME: &'static str = "renkei.db";

    /// Opens (creating if needed) `dir/renkei.db` and applies pending migrations.
    pub fn open_dir(dir: &Path, extractor: Arc<dyn IndexExtractor>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        Self::open(&dir.join(Self::FILE_NAME), extractor)
    }

    /// Opens (creating if needed) the database file `path` and applies pending migrations.
    pub fn open(path: &Path, extractor: Arc<dyn IndexExtractor>) -> Result<Self, StoreError> {
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        // Checkpoints run beside the writer (see `wal`), not inside its commits.
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        writer.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};"))?;
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            reader_permits: tokio::sync::Semaphore::new(max_readers()),
            extractor,
            wal: Arc::new(WalLength::new(wal::RESTART_AT)),
            labeler: std::sync::OnceLock::new(),
        });
        wal::start_checkpointer(
            open_connection(path)?,
            Arc::downgrade(&inner),
            inner.wal.clone(),
        )?;
        Ok(SqliteStore { inner })
    }

    /// Labels every resource written from now on with `labeler`'s rules (`marks`); the
    /// first table given stays.
    pub fn label_writes(&self, labeler: Labeler) {
        let _ = self.inner.labeler.set(Arc::new(labeler));
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) async fn read_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self.reader_permit().await?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || with_reader(&inner, f))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// Runs a short read (one key lookup, a bounded range) on the calling thread instead of a
    /// blocking thread: the hand-off costs more than such a read (about 200 µs of waiting and
    /// waking against 30–60 µs of SQL). WAL readers never wait for the writer, so this does
    /// not stall the runtime; searches, history and exports stay on `read_with`.
    async fn read_inline<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let _permit = self.reader_permit().await?;
        with_reader(&self.inner, f)
    }

    /// One of the reader slots (at most `max_readers` reads at a time).
    async fn reader_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.inner
            .reader_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("store is closing".into()))
    }

    pub(crate) async fn write_with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &dyn IndexExtractor) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().map_err(poisoned)?;
            inner.wal.restart_if_long(&conn);
            f(&mut conn, inner.extractor.as_ref())
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }

    /// A batch first runs as if it were a transaction, without a savepoint per entry (while
    /// one is open SQLite copies every page an entry first changes into a sub-journal); only
    /// if an entry fails is that attempt rolled back and the batch run again with savepoints.
    async fn apply(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
        atomic: bool,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let ctx = ctx.clone();
        // Extraction is pure CPU: done before taking the writer, a large resource's rows are
        // computed while other writes commit.
        let entries = if crate::index::needs_extraction(&entries) {
            let extractor = self.inner.extractor.clone();
            tokio::task::spawn_blocking(move || {
                let mut entries = entries;
                crate::index::extract_ahead(extractor.as_ref(), &mut entries);
                entries
            })
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
        } else {
            entries
        };
        let labeler = self.inner.labeler.get().cloned();
        self.write_with(move |conn, extractor| {
            let labeler = labeler.as_deref();
            if atomic {
                return apply_once(conn, extractor, labeler, &ctx, entries, true);
            }
            match apply_once(conn, extractor, labeler, &ctx, entries.clone(), true) {
                Err(StoreError::Entry { .. }) => {
                    apply_once(conn, extractor, labeler, &ctx, entries, false)
                }
                other => other,
            }
        })
        .await
    }
}

/// One attempt at a list of writes in one transaction on the writer connection.
fn apply_once(
    conn: &mut Connection,
    extractor: &dyn IndexExtractor,
    labeler: Option<&Labeler>,
    ctx: &RequestContext,
    entries: Vec<WriteEntry>,
    atomic: bool,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let (results, large) = {
        let tx = conn.transaction()?;
        let now = crate::time::now_micros();
        let mut b = SqliteTx::new(&tx, labeler);
        let run = engine::run_ready(engine::apply(&mut b, extractor, ctx, now, entries, atomic))
            .and_then(|r| r)
            .and_then(|results| b.flush().map(|()| results));
        let large = b.large;
        let discarded = std::mem::take(&mut b.discarded);
        drop(b);
        // Dropping the transaction unfinished rolls it back.
        let results = run.and_then(|results| Ok(tx.commit().map(|()| results)?));
        free_elsewhere(discarded);
        (results, large)
    };
    SqliteTx::finish(conn, large)?;
    results
}

/// Frees what a unit wrote (its resources, its index rows) on another thread of the blocking
/// pool when there are many (the writer goes on with the next unit), else here.
pub(crate) fn free_elsewhere<T: Send + 'static>(written: Vec<T>) {
    const MANY: usize = 256;
    if written.len() >= MANY {
        crate::free_elsewhere(written);
    }
}

/// A group of keyed units in one transaction on the writer connection
/// (`engine::apply_keyed`), committed, or rolled back if a unit failed.
fn keyed_once(
    conn: &mut Connection,
    extractor: &dyn IndexExtractor,
    labeler: Option<&Labeler>,
    ctx: &RequestContext,
    units: Vec<KeyedWrite>,
) -> Result<engine::KeyedResults, StoreError> {
    let started = std::time::Instant::now();
    let count = units.len();
    let (done, large, applied) = {
        let tx = conn.transaction()?;
        let now = crate::time::now_micros();
        let mut b = SqliteTx::new(&tx, labeler);
        let run = engine::run_ready(engine::apply_keyed(&mut b, extractor, ctx, now, units))
            .and_then(|r| r)
            .and_then(|run| b.flush().map(|()| run));
        let large = b.large;
        drop(b);
        let applied = started.elapsed();
        // Dropping the transaction unfinished rolls it back.
        let done = run.and_then(|run| match run {
            engine::KeyedRun::Commit(results) => Ok(tx.commit().map(|()| (results, true))?),
            engine::KeyedRun::RollBack(results) => Ok((results, false)),
        });
        (done, large, applied)
    };
    SqliteTx::finish(conn, large)?;
    let (results, committed) = done?;
    tracing::debug!(
        units = count,
        committed,
        apply_micros = applied.as_micros() as u64,
        commit_micros = (started.elapsed() - applied).as_micros() as u64,
        "keyed units written"
    );
    Ok(results)
}

/// Runs `f` on a pooled reader connection (opening one if none is idle) and returns it to
/// the pool.
fn with_reader<T>(
    inner: &Inner,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let conn = inner.readers.lock().map_err(poisoned)?.pop();
    let conn = match conn {
        Some(c) => c,
        None => open_connection(&inner.path)?,
    };
    let result = f(&conn);
    inner.readers.lock().map_err(poisoned)?.push(conn);
    result
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("a store lock was poisoned by a panic".into())
}

/// The writer connection's page cache, in KiB (readers keep 256 MiB each).
///
/// Small on purpose. When a B-tree page split reorders its new pages, SQLite (3.54) swaps
/// them through the page number of the lock-byte page (page 262,145 with 4 KiB pages), which
/// marks the cache as holding a page past the end of the file. Each commit of a database
/// under 1 GiB then scans every page in the writer's cache to drop it: with 256 MiB that was
/// 28,000 pages and 3.5 % of the process's CPU under the MLLP bench, per commit of a few
/// messages. The pages the writer needs again are in the OS's page cache anyway.
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// A connection through the store's VFS (`sqlite_vfs`, which relies on `synchronous = FULL`).
fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    crate::sqlite_vfs::register()?;
    let conn = Connection::open_with_flags_and_vfs(
        path,
        rusqlite::OpenFlags::default(),
        crate::sqlite_vfs::NAME,
    )?;
    // 8 KiB pages for a new database (an existing one keeps its size; SQLite ignores the
    // pragma once the file has pages): at a million people an import chunk's index rows land
    // on most leaf pages of the value indexes whatever their size, and larger pages mean
    // fewer of them to split, look up and log (docs/storage.md, "Page size").
    conn.execute_batch(
        "PRAGMA page_size = 8192;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA foreign_keys = OFF;
         PRAGMA cache_size = -262144;
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    require_durable_wal(&conn)?;
    // Plans never depend on bound values: the value indexes are not `ANALYZE`d and the
    // string prefixes are ranges, not `LIKE`. Without this, SQLite re-prepares a cached
    // statement after every rebinding of a parameter its planner looked at (a `LIMIT ?`,
    // an `x = ?` filter): a tenth of the MLLP path's CPU went to parsing SQL again.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(conn)
}

/// Fails unless `conn` is in WAL mode with `synchronous = FULL`. The VFS holds log frames
/// until SQLite syncs the log, and only under `FULL` does SQLite publish a commit's frames
/// to other connections after that sync (see `sqlite_vfs`); in another journal mode a commit
/// would not be in the log at all. A journal mode can silently stay as it was (on a read-only
/// or in-memory file), so the settings are read back rather than trusted.
fn require_durable_wal(conn: &Connection) -> Result<(), StoreError> {
    let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    // 2 is FULL, 3 is EXTRA (which also syncs the directory after unlinking a journal).
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if !journal_mode.eq_ignore_ascii_case("wal") || synchronous < 2 {
        return Err(StoreError::Backend(format!(
            "SQLite store connection has journal_mode={journal_mode}, synchronous={synchronous}; \
             the store needs WAL with synchronous FULL for acknowledged writes to be durable"
        )));
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let applied: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let latest = MIGRATIONS[MIGRATIONS.len() - 1].0;
    crate::error::refuse_newer_schema(applied, latest)?;
    crate::announce_migrations("SQLite", applied, latest);
    for (version, script, what) in MIGRATIONS {
        if *version > applied {
            tracing::debug!(version, "applying SQLite migration: {what}");
            tx.execute_batch(script)?;
            if *version == COMPARTMENTS_MIGRATION {
                tx.execute_batch(&crate::compartment::backfill_sql())?;
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                rusqlite::params![version, crate::time::now_micros()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// `$n` placeholders become SQLite's `?n`.
pub(crate) fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// `p` bound for `conn` (names as their numbers there, `sqlite_names`).
pub(crate) fn params<'p>(
    conn: &Connection,
    p: &'p [SqlParam],
) -> Result<rusqlite::ParamsFromIter<Vec<ToSqlOutput<'p>>>, StoreError> {
    Ok(rusqlite::params_from_iter(sqlite_names::bound(conn, p)?))
}

/// Reads the columns of [`sql::VERSION_COLUMNS`] starting at `at`.
fn row_to_resource(row: &Row<'_>, at: usize) -> rusqlite::Result<StoredResource> {
    let method: String = row.get(at + 4)?;
    let method = Method::parse(&method);
    Ok(StoredResource {
        resource_type: row.get(at)?,
        id: row.get(at + 1)?,
        version: row.get::<_, i64>(at + 2)? as u64,
        last_updated: row.get(at + 3)?,
        deleted: method == Method::Delete,
        method,
        body: row.get(at + 5)?,
    })
}

fn query_resources(conn: &Connection, sql: &Sql) -> Result<Vec<(i64, StoredResource)>, StoreError> {
    let mut stmt = conn.prepare_cached(&lite(&sql.text))?;
    let rows = stmt.query_map(params(conn, &sql.params)?, |row| {
        Ok((row.get::<_, i64>(0)?, row_to_resource(row, 1)?))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A search page: `rid`, the resource, then the sort-key columns `page.keys` describes.
fn query_page(conn: &Connection, page: &PageSql) -> Result<Vec<PageRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&lite(&page.sql.text))?;
    let rows = stmt.query_map(params(conn, &page.sql.params)?, |row| {
        let mut keys = Vec::with_capacity(page.keys.len());
        for i in 0..page.keys.len() {
            keys.push(match row.get_ref(7 + i)? {
                ValueRef::Integer(v) => KeyValue::Int(v),
                ValueRef::Real(v) => KeyValue::Float(v),
                ValueRef::Text(t) => KeyValue::Text(String::from_utf8_lossy(t).into_owned()),
                _ => KeyValue::Int(0),
            });
        }
        Ok((row.get::<_, i64>(0)?, row_to_resource(row, 1)?, keys))
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// `(type, id)` of up to `limit` resources a conditional operation with `q` matches (those
/// `access` may see).
fn matches(
    conn: &Connection,
    q: &SearchQuery,
    limit: usize,
    access: Option<&Restriction>,
) -> Result<Vec<(String, String)>, StoreError> {
    let sql = crate::search::matches_sql(q, limit, access);
    let mut stmt = conn.prepare_cached(&lite(&sql.text))?;
    let rows = stmt.query_map(params(conn, &sql.params)?, |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

fn load(conn: &Connection, ty: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
    let mut stmt = conn.prepare_cached(&lite(sql::LOAD_CURRENT))?;
    Ok(stmt
        .query_row([ty, id], |row| row_to_resource(row, 0))
        .optional()?)
}

fn current(conn: &Connection, ty: &str, id: &str) -> Result<Option<Current>, StoreError> {
    let mut stmt = conn.prepare_cached(&lite(sql::CURRENT))?;
    Ok(stmt
        .query_row([ty, id], |row| {
            Ok(Current {
                rid: row.get(0)?,
                version: row.get::<_, i64>(1)? as u64,
                deleted: row.get(2)?,
            })
        })
        .optional()?)
}

/// Whether `r` may see the existing resource `cur` (see `access`).
fn admits(
    conn: &Connection,
    extractor: &dyn IndexExtractor,
    r: &Restriction,
    ty: &str,
    id: &str,
    cur: Current,
) -> Result<bool, StoreError> {
    if !cur.deleted {
        let sql = access::admits_sql(r, ty, cur.rid);
        let mut stmt = conn.prepare_cached(&lite(&sql.text))?;
        return Ok(stmt.exists(params(conn, &sql.params)?)?);
    }
    let body: Option<String> = conn
        .prepare_cached(&lite(access::LAST_BODY))?
        .query_row([cur.rid], |r| r.get(0))
        .optional()?;
    access::admits_deleted(extractor, r, ty, id, body.as_deref())
}

/// The current version of `ty/id`, unless it does not exist or `access` may not see it.
fn visible_current(
    conn: &Connection,
    extractor: &dyn IndexExtractor,
    access: Option<&Restriction>,
    ty: &str,
    id: &str,
) -> Result<Option<Current>, StoreError> {
    match (current(conn, ty, id)?, access) {
        (Some(c), Some(r)) if !admits(conn, extractor, r, ty, id, c)? => Ok(None),
        (c, _) => Ok(c),
    }
}

/// The write-path primitives over an open SQLite transaction.
struct SqliteTx<'c> {
    tx: &'c Transaction<'c>,
    labeler: Option<&'c Labeler>,
    /// Index rows written but not inserted yet.
    pending: PendingRows,
    /// The numbers of the names the rows are written under.
    names: WriteNames,
    /// A large flush raised the page cache ([`LARGE_UNIT_CACHE_KIB`]); [`SqliteTx::finish`]
    /// puts it back.
    large: bool,
    /// Resources written in the unit, freed after it ([`free_elsewhere`]).
    discarded: Vec<serde_json::Value>,
}

/// Pending index rows from which a flush raises the writer's page cache for the unit.
const LARGE_FLUSH: usize = 20_000;

/// The writer's page cache while it writes a large unit, in KiB (see [`WRITER_CACHE_KIB`]
/// for why it is small otherwise).
const LARGE_UNIT_CACHE_KIB: u32 = 256 * 1024;

impl<'c> SqliteTx<'c> {
    fn new(tx: &'c Transaction<'c>, labeler: Option<&'c Labeler>) -> Self {
        SqliteTx {
            tx,
            labeler,
            pending: PendingRows::default(),
            names: WriteNames::default(),
            large: false,
            discarded: Vec::new(),
        }
    }

    /// After the unit (committed or not): the writer's usual page cache.
    fn finish(conn: &Connection, large: bool) -> Result<(), StoreError> {
        if large {
            conn.execute_batch(&format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};"))?;
        }
        Ok(())
    }

    /// Inserts the pending index rows, in the order of the value indexes.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.pending.len() >= LARGE_FLUSH && !self.large {
            // The rows go to the tables (keyed by resource) in value order: the tables' new
            // pages of the unit stay in the cache while the value indexes are swept.
            self.large = true;
            self.tx
                .execute_batch(&format!("PRAGMA cache_size = -{LARGE_UNIT_CACHE_KIB};"))?;
        }
        self.pending.insert(self.tx, &mut self.names)
    }
}

impl Backend for SqliteTx<'_> {
    async fn append_audit(
        &mut self,
        entries: Vec<crate::audit::AuditEntry>,
        signer: &auth::chain::HeadSigner,
    ) -> Result<(), StoreError> {
        crate::audit::append_sqlite(self.tx, &entries, signer).map(|_| ())
    }

    async fn current(&mut self, ty: &str, id: &str) -> Result<Option<Current>, StoreError> {
        current(self.tx, ty, id)
    }

    async fn load(&mut self, ty: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        load(self.tx, ty, id)
    }

    async fn matches(
        &mut self,
        q: &SearchQuery,
        limit: usize,
        access: Option<&Restriction>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.flush()?;
        matches(self.tx, q, limit, access)
    }

    async fn admits(
        &mut self,
        extractor: &dyn IndexExtractor,
        r: &Restriction,
        ty: &str,
        id: &str,
        cur: Current,
    ) -> Result<bool, StoreError> {
        self.flush()?;
        admits(self.tx, extractor, r, ty, id, cur)
    }

    fn labeler(&self) -> Option<&Labeler> {
        self.labeler
    }

    async fn write(&mut self, v: NewVersion<'_>) -> Result<(), StoreError> {
        let tx = self.tx;
        let version = v.version as i64;
        let deleted = v.method == Method::Delete;
        let inserted = v.rid.is_none();
        let (rid, added) = match v.rid {
            Some(rid) => {
                // Rows of a version written earlier in this transaction are replaced too.
                if self.pending.holds(rid) {
                    self.flush()?;
                }
                if deleted {
                    sqlite_index::delete_all(tx, rid)?;
                    (rid, Vec::new())
                } else {
                    (rid, sqlite_index::replace(tx, rid, v.index)?)
                }
            }
            None => {
                tx.prepare_cached(&lite(sql::INSERT_RESOURCE))?
                    .execute(rusqlite::params![
                        v.resource_type,
                        v.id,
                        version,
                        v.last_updated,
                        deleted
                    ])?;
                let rid = tx.last_insert_rowid();
                (rid, (0..).zip(v.index).collect())
            }
        };
        tx.prepare_cached(&lite(sql::INSERT_VERSION))?
            .execute(rusqlite::params![
                rid,
                v.resource_type,
                v.id,
                version,
                v.last_updated,
                v.method.as_str(),
                v.body
            ])?;
        let seq = tx.last_insert_rowid();
        if inserted {
            tx.prepare_cached(&lite(sql::SET_RESOURCE_SEQ))?
                .execute(rusqlite::params![rid, seq])?;
        } else {
            tx.prepare_cached(&lite(sql::UPDATE_RESOURCE))?
                .execute(rusqlite::params![
                    rid,
                    version,
                    seq,
                    v.last_updated,
                    deleted
                ])?;
        }
        self.pending.add(rid, v.resource_type, added);
        tx.prepare_cached(&lite(sql::INSERT_OUTBOX))?
            .execute(rusqlite::params![
                seq,
                v.resource_type,
                v.id,
                version,
                v.method.as_str(),
                v.request_id
            ])?;
        for patient in v.compartments {
            tx.prepare_cached(&lite(sql::INSERT_CHANGE_COMPARTMENT))?
                .execute(rusqlite::params![seq, patient])?;
        }
        Ok(())
    }

    fn discard(&mut self, resource: serde_json::Value) {
        self.discarded.push(resource);
    }

    async fn patient_references(&mut self, rid: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.flush()?;
        let mut stmt = self.tx.prepare_cached(PATIENT_REFERENCES)?;
        let rows = stmt.query_map([rid], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    // Savepoint statements are prepared once, like the others (a unit of a group commit
    // opens and releases one each).
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        self.tx.prepare_cached("SAVEPOINT entry")?.execute([])?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        self.tx.prepare_cached("RELEASE entry")?.execute([])?;
        Ok(())
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        // The rows of the entry rolled back are never inserted, and the names it numbered
        // are numbered again.
        self.pending.clear();
        self.names.forget();
        self.tx.prepare_cached("ROLLBACK TO entry")?.execute([])?;
        self.tx.prepare_cached("RELEASE entry")?.execute([])?;
        Ok(())
    }

    async fn insert_receipt(&mut self, r: &Receipt, now: i64) -> Result<bool, StoreError> {
        let n = self
            .tx
            .prepare_cached(&lite(sql::INSERT_RECEIPT))?
            .execute(rusqlite::params![
                r.key,
                r.fingerprint,
                r.code,
                r.reply,
                r.deferred,
                now
            ])?;
        Ok(n == 1)
    }

    /// The single writer connection already excludes every other writer.
    async fn lock_types(&mut self, _types: &BTreeSet<String>) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn extractor(&self) -> &dyn IndexExtractor {
        self.inner.extractor.as_ref()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.read_with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn load(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let Some(r) = ctx.restriction() else {
            return self.read_inline(|c| load(c, resource_type, id)).await;
        };
        let extractor = self.inner.extractor.as_ref();
        self.read_inline(
            |c| match visible_current(c, extractor, Some(r), resource_type, id)? {
                Some(_) => load(c, resource_type, id),
                None => Ok(None),
            },
        )
        .await
    }

    async fn load_version(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        let (ty, id) = (resource_type.to_owned(), id.to_owned());
        let access = ctx.restriction().cloned();
        let extractor = self.inner.extractor.clone();
        self.read_with(move |c| {
            if let Some(r) = &access
                && visible_current(c, extractor.as_ref(), Some(r), &ty, &id)?.is_none()
            {
                return Ok(None);
            }
            let mut stmt = c.prepare_cached(&lite(sql::VREAD))?;
            Ok(stmt
                .query_row(rusqlite::params![ty, id, version as i64], |row| {
                    row_to_resource(row, 0)
                })
                .optional()?)
        })
        .await
    }

    async fn history(
        &self,
        ctx: &RequestContext,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        if !matches!(q.scope, HistoryScope::Instance(..)) {
            access::refuse_unscoped(ctx, "type- and system-level history")?;
        }
        let q = q.clone();
        let access = ctx.restriction().cloned();
        let extractor = self.inner.extractor.clone();
        self.read_with(move |c| {
            let (ty, rid) = match &q.scope {
                HistoryScope::System => (None, None),
                HistoryScope::Type(t) => (Some(t.as_str()), None),
                HistoryScope::Instance(t, id) => {
                    match visible_current(c, extractor.as_ref(), access.as_ref(), t, id)? {
                        Some(cur) => (Some(t.as_str()), Some(cur.rid)),
                        None => {
                            return Err(StoreError::NotFound {
                                resource_type: t.clone(),
                                id: id.clone(),
                                version: None,
                            });
                        }
                    }
                }
            };
            if q.count == 0 {
                let count = sql::history_count(ty, rid, q.since);
                let total: i64 = c
                    .prepare_cached(&lite(&count.text))?
                    .query_row(params(c, &count.params)?, |r| r.get(0))?;
                return Ok(HistoryPage {
                    versions: Vec::new(),
                    next: None,
                    total: Some(total as u64),
                });
            }
            let sql = sql::history(ty, rid, q.since, q.before, q.count + 1);
            let rows = query_resources(c, &sql)?;
            Ok(crate::history_page(rows, q.count))
        })
        .await
    }

    async fn matching_ids(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let found = self
            .read_inline(|c| matches(c, q, limit, ctx.restriction()))
            .await?;
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    async fn search(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let q = q.clone();
        let access = ctx.restriction().cloned();
        self.read_with(move |c| {
            let access = access.as_ref();
            let rows = if q.count == 0 {
                Vec::new()
            } else {
                query_page(c, &crate::search::page_sql(&q, q.count + 1, access))?
            };
            let total = if crate::needs_count(&q, rows.len()) {
                let count = crate::search::count_sql(&q, access);
                Some(
                    c.prepare_cached(&lite(&count.text))?
                        .query_row(params(c, &count.params)?, |r| r.get(0))?,
                )
            } else {
                None
            };
            Ok(crate::search_page(&q, rows, total))
        })
        .await
    }

    async fn explain(&self, ctx: &RequestContext, q: &SearchQuery) -> Result<String, StoreError> {
        let q = q.clone();
        let access = ctx.restriction().cloned();
        self.read_with(move |c| {
            let page = crate::search::page_sql(&q, q.count + 1, access.as_ref());
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", lite(&page.sql.text)))?;
            let rows = stmt.query_map(params(c, &page.sql.params)?, |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(3)?,
                ))
            })?;
            // Indent each step under its parent, as the sqlite3 shell does.
            let mut depth: Vec<(i64, usize)> = Vec::new();
            let mut out = Vec::new();
            for row in rows {
                let (id, parent, detail) = row?;
                let level = depth
                    .iter()
                    .find(|(i, _)| *i == parent)
                    .map_or(0, |(_, l)| l + 1);
                depth.push((id, level));
                out.push(format!("{}{detail}", "  ".repeat(level)));
            }
            Ok(out.join("\n"))
        })
        .await
    }

    async fn transaction(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Outcome>, StoreError> {
        let results = self.apply(ctx, entries, true).await?;
        results.into_iter().collect()
    }

    async fn batch(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        self.apply(ctx, entries, false).await
    }

    async fn receipt(
        &self,
        _ctx: &RequestContext,
        key: &str,
    ) -> Result<Option<Receipt>, StoreError> {
        self.read_inline(|c| {
            Ok(c.prepare_cached(&lite(sql::RECEIPT))?
                .query_row([key], |r| {
                    Ok(Receipt {
                        key: r.get(0)?,
                        fingerprint: r.get(1)?,
                        code: r.get(2)?,
                        reply: r.get(3)?,
                        deferred: r.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn commit_keyed(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<Vec<Result<Vec<Outcome>, StoreError>>, StoreError> {
        let ctx = ctx.clone();
        let labeler = self.inner.labeler.get().cloned();
        self.write_with(move |conn, extractor| {
            keyed_once(conn, extractor, labeler.as_deref(), &ctx, units)
        })
        .await
    }

    async fn lock_exclusive(
        &self,
        _ctx: &RequestContext,
        name: &str,
    ) -> Result<crate::ExclusiveLock, StoreError> {
        if !crate::exclusive::valid_name(name) {
            return Err(StoreError::Invalid(format!("invalid lock name {name:?}")));
        }
        let (mut path, mut knock_path) = (
            self.inner.path.clone().into_os_string(),
            self.inner.path.clone().into_os_string(),
        );
        path.push(format!(".{name}.lock"));
        knock_path.push(format!(".{name}.knock"));
        tokio::task::spawn_blocking(move || {
            let failed = |path: &std::ffi::OsStr, e: std::io::Error| {
                StoreError::Backend(format!("lock file {path:?}: {e}"))
            };
            let open = |path: &std::ffi::OsStr| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| failed(path, e))
            };
            // Knocks while it waits, so that a holder that asks knows (`ExclusiveLock::wanted`).
            let knock = open(&knock_path)?;
            knock.lock_shared().map_err(|e| failed(&knock_path, e))?;
            let file = open(&path)?;
            file.lock().map_err(|e| failed(&path, e))?;
            knock.unlock().map_err(|e| failed(&knock_path, e))?;
            Ok(crate::ExclusiveLock {
                held: crate::exclusive::Held::File { lock: file, knock },
            })
        })
        .await
        .map_err(|e| StoreError::Backend(format!("lock task failed: {e}")))?
    }

    async fn changes(
        &self,
        ctx: &RequestContext,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        self.read_inline(|c| changes(c, after, limit)).await
    }

    /// The single writer commits in `seq` order: a position is a `seq`.
    async fn feed(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        limit: usize,
    ) -> Result<FeedBatch, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        let changes = self.read_inline(|c| changes(c, after.seq(), limit)).await?;
        let next = changes
            .last()
            .map_or(*after, |last| FeedPosition::new(0, last.seq));
        Ok(FeedBatch { changes, next })
    }

    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
    ) -> Result<FeedPosition, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        feed::check_name(consumer)?;
        let saved: Option<String> = self
            .read_inline(|c| {
                Ok(c.prepare_cached(&lite(sql::CHECKPOINT))?
                    .query_row([consumer], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        saved.map_or(Ok(FeedPosition::START), |p| p.parse())
    }

    /// The single writer publishes in `seq` order: `feed` is never behind.
    async fn feed_pending(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        _resource_type: &str,
        _limit: usize,
    ) -> Result<FeedBatch, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        Ok(FeedBatch {
            changes: Vec::new(),
            next: *after,
        })
    }

    async fn save_checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
        position: &FeedPosition,
    ) -> Result<(), StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        feed::check_name(consumer)?;
        let (name, position) = (consumer.to_owned(), position.to_string());
        self.write_with(move |conn, _| {
            conn.prepare_cached(&lite(sql::SAVE_CHECKPOINT))?
                .execute(rusqlite::params![name, position, crate::time::now_micros()])?;
            Ok(())
        })
        .await
    }
}

/// Up to `limit` change-feed rows after `after`, oldest first, with their compartments.
fn changes(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Change>, StoreError> {
    let mut stmt = conn.prepare_cached(CHANGES)?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        let method: String = r.get(4)?;
        let compartments: String = r.get(6)?;
        Ok((
            Change {
                seq: r.get(0)?,
                resource_type: r.get(1)?,
                id: r.get(2)?,
                version: r.get::<_, i64>(3)? as u64,
                method: Method::parse(&method),
                request_id: r.get(5)?,
                compartments: Vec::new(),
            },
            compartments,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut change, compartments) = row?;
        let mut patients: Vec<String> = serde_json::from_str(&compartments).map_err(|e| {
            StoreError::Backend(format!(
                "change {} has unreadable compartments: {e}",
                change.seq
            ))
        })?;
        patients.sort();
        change.compartments = patients;
        out.push(change);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BasicExtractor;
    use crate::model::WriteOp;
    use crate::search::{SearchQuery, parse_query_string};

    /// Store connections come up in WAL mode with `synchronous = FULL`, and a connection
    /// that is not is refused (the VFS's held log frames depend on it).
    #[test]
    fn connections_are_refused_without_a_synced_wal() {
        let dir = std::env::temp_dir().join(format!("renkei-sync-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let conn = open_connection(&dir.join("store.db")).unwrap();
        let synchronous: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(synchronous, 2);
        conn.execute_batch("PRAGMA synchronous = NORMAL").unwrap();
        let err = require_durable_wal(&conn).unwrap_err().to_string();
        assert!(err.contains("synchronous=1"), "{err}");
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA journal_mode = DELETE")
            .unwrap();
        let err = require_durable_wal(&conn).unwrap_err().to_string();
        assert!(err.contains("journal_mode=delete"), "{err}");
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ids(store: &SqliteStore, q: &str) -> Vec<String> {
        ids_of_type(store, "Patient", q)
    }

    fn ids_of_type(store: &SqliteStore, resource_type: &str, q: &str) -> Vec<String> {
        let q = SearchQuery::parse(
            Some(resource_type),
            &parse_query_string(q),
            store.extractor(),
            false,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let page = rt
            .block_on(store.search(&RequestContext::system(), &q))
            .unwrap();
        let mut ids: Vec<String> = page.matches.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        ids
    }

    /// Rows extracted ahead of a transaction (as HL7 v2 ingestion does) for a resource that
    /// names an entry's `fullUrl` both in a `reference` and in a `canonical`: the reference is
    /// rewritten to the entry's id, the canonical stays as written, and both are searchable as
    /// stored (the rows are extracted again, not patched by reference value).
    #[test]
    fn rows_extracted_ahead_follow_a_canonical_the_rewrite_leaves_alone() {
        use crate::extract::FhirIndexExtractor;
        use crate::index::{FullUrlTypes, IndexExtractor};
        let dir = std::env::temp_dir().join(format!("renkei-canon-{}", uuid::Uuid::new_v4()));
        let extractor = Arc::new(FhirIndexExtractor::new());
        let store = SqliteStore::open_dir(&dir, extractor.clone()).unwrap();
        let plan = "urn:uuid:6f1c2a4e-0000-4000-8000-000000000001";
        let care_plan = serde_json::json!({
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": plan},
            "instantiatesCanonical": [plan]
        });
        let mut types = FullUrlTypes::default();
        types.insert(plan, "Patient");
        let rows = extractor
            .extract_in_transaction("CarePlan", &care_plan, &types)
            .unwrap();
        let entries = vec![
            WriteEntry {
                full_url: Some(plan.into()),
                op: WriteOp::Create {
                    resource: serde_json::json!({"resourceType": "Patient"}),
                    if_none_exist: None,
                },
                index: None,
                references: crate::ReferenceCheck::Off,
                patch: false,
                internal: false,
            },
            WriteEntry::new(WriteOp::Create {
                resource: care_plan,
                if_none_exist: None,
            })
            .with_index(rows),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt
            .block_on(store.transaction(&RequestContext::system(), entries))
            .unwrap();
        let id_of = |o: &Outcome| match o {
            Outcome::Created(r) => r.id.clone(),
            other => panic!("{other:?}"),
        };
        let (patient, care_plan) = (id_of(&out[0]), id_of(&out[1]));
        assert_eq!(
            ids_of_type(
                &store,
                "CarePlan",
                &format!("instantiates-canonical={plan}")
            ),
            std::slice::from_ref(&care_plan)
        );
        assert!(
            ids_of_type(
                &store,
                "CarePlan",
                &format!("instantiates-canonical=Patient/{patient}")
            )
            .is_empty()
        );
        assert_eq!(
            ids_of_type(&store, "CarePlan", &format!("patient=Patient/{patient}")),
            [care_plan]
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A database migrated by a newer Renkei is refused, not written through an older schema,
    /// and left as it was.
    #[test]
    fn a_database_of_a_newer_schema_is_refused() {
        let dir = std::env::temp_dir().join(format!("renkei-new-{}", uuid::Uuid::new_v4()));
        let store = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).unwrap();
        drop(store);
        let db = dir.join("renkei.db");
        let known = MIGRATIONS[MIGRATIONS.len() - 1].0;
        Connection::open(&db)
            .unwrap()
            .execute("INSERT INTO schema_migrations VALUES (?1, 0)", [known + 1])
            .unwrap();
        let err = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).unwrap_err();
        assert!(err.to_string().contains("newer than this build"), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Backend);
        let max: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(max, known + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A database written before migration 3 (rowid index tables, two rows of one resource)
    /// keeps its index rows, numbered per resource, and stays searchable and updatable.
    #[test]
    fn migrations_keep_the_index_rows_of_an_older_database_but_not_derived_ones() {
        let dir = std::env::temp_dir().join(format!("renkei-mig-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("renkei.db");
        {
            let c = Connection::open(&db).unwrap();
            c.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0);",
            )
            .unwrap();
            c.execute_batch(MIGRATIONS[0].1).unwrap();
            c.execute_batch(MIGRATIONS[1].1).unwrap();
            c.execute_batch(
                r#"INSERT INTO resource VALUES (7, 'Patient', 'p1', 1, 1, 10, 0);
                   INSERT INTO resource_version VALUES (1, 7, 'Patient', 'p1', 1, 10, 'POST',
                     '{"resourceType":"Patient","id":"p1","meta":{"versionId":"1","lastUpdated":"1970-01-01T00:00:00.00001Z"},"identifier":[{"system":"urn:a","value":"one"},{"system":"urn:a","value":"two"}]}');
                   INSERT INTO idx_token (rid, res_type, param, grp, system, code, display)
                     VALUES (7, 'Patient', 'identifier', NULL, 'urn:a', 'one', NULL),
                            (7, 'Patient', 'identifier', NULL, 'urn:a', 'two', NULL),
                            (8, 'Observation', 'code', NULL, 'http://loinc.org', '8480-6', NULL),
                            (8, 'Observation', 'combo-code', NULL, 'http://loinc.org', '8480-6', NULL);
                   INSERT INTO idx_quantity (rid, res_type, param, grp, system, code, unit, value, lo, hi)
                     VALUES (8, 'Observation', 'combo-value-quantity', NULL, 'http://unitsofmeasure.org',
                             'mm[Hg]', 'mm[Hg]', 140, 139.5, 140.5);"#,
            )
            .unwrap();
        }
        let store = SqliteStore::open(&db, Arc::new(BasicExtractor)).unwrap();
        let numbered: Vec<(i64, String)> = {
            let w = store.inner.writer.lock().unwrap();
            let mut stmt = w
                .prepare("SELECT n, code FROM idx_token WHERE rid = 7 ORDER BY n")
                .unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(numbered, [(1, "one".to_owned()), (2, "two".to_owned())]);
        // The rows of the derived combo-* parameters are gone; the others stay.
        let observation_rows: Vec<String> = {
            let w = store.inner.writer.lock().unwrap();
            let mut stmt = w
                .prepare(
                    "SELECT p.name FROM idx_token x JOIN search_name p ON p.id = x.param \
                     WHERE x.rid = 8 UNION ALL SELECT p.name FROM idx_quantity x \
                     JOIN search_name p ON p.id = x.param WHERE x.rid = 8",
                )
                .unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(observation_rows, ["code"]);
        assert_eq!(ids(&store, "identifier=urn:a|two"), ["p1"]);

        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let update = WriteEntry::new(WriteOp::Update {
            resource_type: "Patient".into(),
            id: "p1".into(),
            resource: serde_json::json!({
                "resourceType": "Patient", "id": "p1",
                "identifier": [{"system": "urn:a", "value": "three"}]
            }),
            if_match: None,
        });
        rt.block_on(store.transaction(&RequestContext::system(), vec![update]))
            .unwrap();
        assert!(ids(&store, "identifier=urn:a|two").is_empty());
        assert_eq!(ids(&store, "identifier=urn:a|three"), ["p1"]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
