//! The PostgreSQL backend: a deadpool connection pool over tokio-postgres, one database
//! transaction per store write call (READ COMMITTED), row locks for version checks.
//!
//! Concurrency: updates and deletes lock the resource row (`SELECT ... FOR UPDATE`), so If-Match
//! checks and version numbers are race-free; two creates of the same new id collide on the
//! unique key and the loser gets `Conflict`. Conditional matching (If-None-Exist, conditional
//! update/delete, conditional references) first takes a transaction-scoped advisory lock on the
//! resource type, which serializes conditional writes of one type against each other.

use std::collections::{BTreeSet, HashSet};
use std::fmt;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Transaction,
};
use tokio_postgres::{NoTls, Row};

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
use crate::search::{KeyType, KeyValue, PageSql, SearchPage, SearchQuery};
use crate::sql::{self, Sql, SqlParam};
use auth::labels::Labeler;
use std::sync::Arc;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_receipt.sql")),
    (
        3,
        include_str!("../migrations/postgres/0003_derived_params.sql"),
    ),
    (
        COMPARTMENTS_MIGRATION,
        include_str!("../migrations/postgres/0004_change_feed_consumers.sql"),
    ),
    (5, include_str!("../migrations/postgres/0005_security.sql")),
    (
        6,
        include_str!("../migrations/postgres/0006_auth_token.sql"),
    ),
    (7, include_str!("../migrations/postgres/0007_exchange.sql")),
];

/// The migration that adds `change_compartment` and `outbox.xid`: after its script, the store
/// fills in the compartments of the changes already written (`compartment::backfill_sql`).
const COMPARTMENTS_MIGRATION: i64 = 4;

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` (key=value strings work too).
    pub url: String,
    /// Schema to use instead of the server's default `search_path` (tests use a fresh one).
    pub schema: Option<String>,
    pub pool_size: usize,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: None,
            pool_size: 16,
        }
    }
}

impl fmt::Debug for PostgresConfig {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    if url.contains("password") {
        return "(connection string with password)".into();
    }
    url.to_owned()
}

/// A store in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    config: PostgresConfig,
    extractor: Arc<dyn IndexExtractor>,
    /// Labels what is written (`marks`), once set; shared by clones.
    labeler: Arc<std::sync::OnceLock<Arc<Labeler>>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("config", &self.config)
            .finish()
    }
}

impl PostgresStore {
    /// Labels every resource written from now on with `labeler`'s rules (`marks`), in this
    /// handle and its clones; the first table given stays.
    pub fn label_writes(&self, labeler: Labeler) {
        let _ = self.labeler.set(Arc::new(labeler));
    }

    /// Connects, and applies pending migrations.
    pub async fn connect(
        config: PostgresConfig,
        extractor: Arc<dyn IndexExtractor>,
    ) -> Result<Self, StoreError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(|e| {
            StoreError::Invalid(format!("bad database URL {}: {e}", redact(&config.url)))
        })?;
        // Notices (`... already exists, skipping`) are not the operator's business: the driver
        // would log each one at info level.
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        options.push_str(" -c client_min_messages=warning");
        if let Some(schema) = &config.schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        pg.options(options.trim_start());
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(config.pool_size.max(1))
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = PostgresStore {
            pool,
            config,
            extractor,
            labeler: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if let Some(schema) = &self.config.schema {
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                quote_ident(schema)
            ))
            .await?;
        }
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7218281);
             CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let applied: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        let latest = MIGRATIONS[MIGRATIONS.len() - 1].0;
        crate::error::refuse_newer_schema(applied, latest)?;
        crate::announce_migrations("PostgreSQL", applied, latest);
        for (version, script) in MIGRATIONS {
            if *version > applied {
                tracing::debug!(version, "applying PostgreSQL migration");
                tx.batch_execute(script).await?;
                if *version == COMPARTMENTS_MIGRATION {
                    tx.batch_execute(&crate::compartment::backfill_sql())
                        .await?;
                }
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    &[version, &crate::time::now_micros()],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A pooled connection (its `search_path` set to the configured schema).
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The configured schema, if any.
    pub fn schema(&self) -> Option<&str> {
        self.config.schema.as_deref()
    }

    /// Drops the configured schema and everything in it (tests and benchmarks use a throwaway
    /// schema). Does nothing without a configured schema.
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        if let Some(schema) = &self.config.schema {
            let client = self.pool.get().await?;
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(schema)
                ))
                .await?;
        }
        Ok(())
    }

    /// A batch first runs without savepoints (each costs two round trips); only if an entry
    /// fails is it rolled back and run again with a savepoint per entry.
    async fn apply(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
        atomic: bool,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        if atomic {
            return self.apply_once(ctx, entries, true).await;
        }
        match self.apply_once(ctx, entries.clone(), true).await {
            Err(StoreError::Entry { .. }) => self.apply_once(ctx, entries, false).await,
            other => other,
        }
    }

    async fn apply_once(
        &self,
        ctx: &RequestContext,
        entries: Vec<WriteEntry>,
        atomic: bool,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = crate::time::now_micros();
        let results = {
            let labeler = self.labeler.get().cloned();
            let mut b = PgTx {
                tx: &tx,
                labeler: labeler.as_deref(),
                locked: HashSet::new(),
            };
            engine::apply(&mut b, self.extractor.as_ref(), ctx, now, entries, atomic).await?
        };
        tx.commit().await?;
        Ok(results)
    }

    /// A group of keyed units in one transaction (`engine::apply_keyed`), committed, or
    /// rolled back if a unit failed.
    async fn keyed_once(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<engine::KeyedResults, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let now = crate::time::now_micros();
        let run = {
            let labeler = self.labeler.get().cloned();
            let mut b = PgTx {
                tx: &tx,
                labeler: labeler.as_deref(),
                locked: HashSet::new(),
            };
            engine::apply_keyed(&mut b, self.extractor.as_ref(), ctx, now, units).await?
        };
        match run {
            engine::KeyedRun::Commit(results) => {
                tx.commit().await?;
                Ok(results)
            }
            engine::KeyedRun::RollBack(results) => {
                tx.rollback().await?;
                Ok(results)
            }
        }
    }

    /// A search page: `rid`, the resource, then the sort-key columns `page.keys` describes.
    async fn query_page(&self, page: &PageSql) -> Result<Vec<PageRow>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&page.sql.text).await?;
        let rows = client.query(&stmt, &params(&page.sql.params)).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let keys = page
                    .keys
                    .iter()
                    .enumerate()
                    .map(|(i, ty)| match ty {
                        KeyType::Int => KeyValue::Int(r.get(7 + i)),
                        KeyType::Float => KeyValue::Float(r.get(7 + i)),
                        KeyType::Text => KeyValue::Text(r.get(7 + i)),
                    })
                    .collect();
                (r.get(0), row_to_resource(r, 1), keys)
            })
            .collect())
    }

    async fn query_resources(&self, sql: &Sql) -> Result<Vec<(i64, StoredResource)>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&sql.text).await?;
        let rows = client.query(&stmt, &params(&sql.params)).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), row_to_resource(r, 1)))
            .collect())
    }
}

/// A new resource: its row, its first version, its change-feed row (whose `xid` the column's
/// default fills in: `pg_current_xact_id()`) and the change's compartments, in one statement.
const PG_WRITE_NEW: &str = "WITH ids AS (SELECT nextval(pg_get_serial_sequence('resource', 'rid')) AS rid, \
            nextval(pg_get_serial_sequence('resource_version', 'seq')) AS seq), \
     r AS (INSERT INTO resource (rid, res_type, res_id, version, seq, last_updated, deleted) OVERRIDING SYSTEM VALUE \
            SELECT rid, $1, $2, $3, seq, $4, $5 FROM ids), \
     v AS (INSERT INTO resource_version (seq, rid, res_type, res_id, version, last_updated, method, body) OVERRIDING SYSTEM VALUE \
            SELECT seq, rid, $1, $2, $3, $4, $6, $7 FROM ids), \
     o AS (INSERT INTO outbox (version_seq, res_type, res_id, version, method, request_id) \
            SELECT seq, $1, $2, $3, $6, $8 FROM ids), \
     c AS (INSERT INTO change_compartment (version_seq, patient) \
            SELECT seq, p FROM ids, UNNEST($9::text[]) AS p) \
     SELECT rid FROM ids";

/// A new version of an existing resource, its pointer update, its change-feed row and the
/// change's compartments.
const PG_WRITE_EXISTING: &str = "WITH ids AS (SELECT nextval(pg_get_serial_sequence('resource_version', 'seq')) AS seq), \
     u AS (UPDATE resource SET version = $4, seq = (SELECT seq FROM ids), last_updated = $5, deleted = $6 WHERE rid = $1), \
     v AS (INSERT INTO resource_version (seq, rid, res_type, res_id, version, last_updated, method, body) OVERRIDING SYSTEM VALUE \
            SELECT seq, $1, $2, $3, $4, $5, $7, $8 FROM ids), \
     o AS (INSERT INTO outbox (version_seq, res_type, res_id, version, method, request_id) \
            SELECT seq, $2, $3, $4, $7, $9 FROM ids), \
     c AS (INSERT INTO change_compartment (version_seq, patient) \
            SELECT seq, p FROM ids, UNNEST($10::text[]) AS p) \
     SELECT seq FROM ids";

/// Change-feed columns, as `change_row` reads them (`o` is the outbox).
const CHANGE_COLUMNS: &str = "o.seq, o.res_type, o.res_id, o.version, o.method, o.request_id, \
     ARRAY(SELECT c.patient FROM change_compartment c WHERE c.version_seq = o.version_seq ORDER BY c.patient)";

/// The rows after a position, in `(xid, seq)` order, of transactions older than the oldest
/// one in progress: `pg_current_snapshot()` is the statement's own snapshot, in which every
/// transaction below its `xmin` has ended, so no row below that bound can appear later (see
/// `docs/storage.md`, "Change feed"). Answered from the `(xid, seq)` index.
fn feed_sql() -> String {
    format!(
        "SELECT {CHANGE_COLUMNS}, o.xid::text FROM outbox o \
         WHERE (o.xid, o.seq) > ($1::text::xid8, $2) \
         AND o.xid < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY o.xid, o.seq LIMIT $3"
    )
}

/// The committed rows of one type after a feed position, at or above the oldest transaction
/// in progress too: what `Store::feed_pending` reads (a range of the `(xid, seq)` index).
fn feed_pending_sql() -> String {
    format!(
        "SELECT {CHANGE_COLUMNS}, o.xid::text FROM outbox o \
         WHERE (o.xid, o.seq) > ($1::text::xid8, $2) AND o.res_type = $3 \
         ORDER BY o.xid, o.seq LIMIT $4"
    )
}

/// The rows after a `seq`, in `seq` order: what `Store::changes` reads (it may skip a row that
/// becomes visible late).
fn changes_sql() -> String {
    format!("SELECT {CHANGE_COLUMNS} FROM outbox o WHERE o.seq > $1 ORDER BY o.seq LIMIT $2")
}

/// Feed rows (with their transaction id, column 7) as a batch and the position after it.
fn feed_batch(after: &FeedPosition, rows: &[Row]) -> Result<FeedBatch, StoreError> {
    let mut next = *after;
    let mut changes = Vec::with_capacity(rows.len());
    for r in rows {
        let xid: String = r.get(7);
        let xid = xid
            .parse::<u64>()
            .map_err(|e| StoreError::Backend(format!("unreadable transaction id '{xid}': {e}")))?;
        let change = change_row(r);
        next = FeedPosition::new(xid, change.seq);
        changes.push(change);
    }
    Ok(FeedBatch { changes, next })
}

fn change_row(r: &Row) -> Change {
    Change {
        seq: r.get(0),
        resource_type: r.get(1),
        id: r.get(2),
        version: r.get::<_, i64>(3) as u64,
        method: Method::parse(r.get(4)),
        request_id: r.get(5),
        compartments: r.get(6),
    }
}

/// The index rows of a resource, every table in one statement.
const PG_DELETE_INDEX: &str = "WITH a AS (DELETE FROM idx_string WHERE rid = $1), b AS (DELETE FROM idx_token WHERE rid = $1), \
     c AS (DELETE FROM idx_reference WHERE rid = $1), d AS (DELETE FROM idx_date WHERE rid = $1), \
     e AS (DELETE FROM idx_number WHERE rid = $1), f AS (DELETE FROM idx_quantity WHERE rid = $1) \
     DELETE FROM idx_uri WHERE rid = $1";

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn params(p: &[SqlParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    p.iter().map(SqlParam::as_pg).collect()
}

fn row_to_resource(row: &Row, at: usize) -> StoredResource {
    let method = Method::parse(row.get(at + 4));
    StoredResource {
        resource_type: row.get(at),
        id: row.get(at + 1),
        version: row.get::<_, i64>(at + 2) as u64,
        last_updated: row.get(at + 3),
        deleted: method == Method::Delete,
        method,
        body: row.get(at + 5),
    }
}

/// `(type, id)` of up to `limit` resources a conditional operation with `q` matches (those
/// `access` may see), in a transaction (the write path) or on a pooled connection
/// (`Store::matching_ids`).
async fn matches(
    client: &impl GenericClient,
    q: &SearchQuery,
    limit: usize,
    access: Option<&Restriction>,
) -> Result<Vec<(String, String)>, StoreError> {
    let sql = crate::search::matches_sql(q, limit, access);
    let stmt = client.prepare_cached(&sql.text).await?;
    let rows = client.query(&stmt, &params(&sql.params)).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The current version of a resource (without a row lock).
async fn current(
    client: &impl GenericClient,
    ty: &str,
    id: &str,
) -> Result<Option<Current>, StoreError> {
    let stmt = client.prepare_cached(sql::CURRENT).await?;
    let row = client.query_opt(&stmt, &[&ty, &id]).await?;
    Ok(row.map(|r| Current {
        rid: r.get(0),
        version: r.get::<_, i64>(1) as u64,
        deleted: r.get(2),
    }))
}

/// Whether `r` may see the existing resource `cur` (see `access`).
async fn admits(
    client: &impl GenericClient,
    extractor: &dyn IndexExtractor,
    r: &Restriction,
    ty: &str,
    id: &str,
    cur: Current,
) -> Result<bool, StoreError> {
    if !cur.deleted {
        let sql = access::admits_sql(r, ty, cur.rid);
        let stmt = client.prepare_cached(&sql.text).await?;
        return Ok(client
            .query_opt(&stmt, &params(&sql.params))
            .await?
            .is_some());
    }
    let stmt = client.prepare_cached(access::LAST_BODY).await?;
    let body: Option<String> = client
        .query_opt(&stmt, &[&cur.rid])
        .await?
        .and_then(|row| row.get(0));
    access::admits_deleted(extractor, r, ty, id, body.as_deref())
}

/// The current version of `ty/id`, unless it does not exist or `access` may not see it.
async fn visible_current(
    client: &impl GenericClient,
    extractor: &dyn IndexExtractor,
    access: Option<&Restriction>,
    ty: &str,
    id: &str,
) -> Result<Option<Current>, StoreError> {
    match (current(client, ty, id).await?, access) {
        (Some(c), Some(r)) if !admits(client, extractor, r, ty, id, c).await? => Ok(None),
        (c, _) => Ok(c),
    }
}

/// The write-path primitives over an open PostgreSQL transaction.
struct PgTx<'a> {
    tx: &'a Transaction<'a>,
    labeler: Option<&'a Labeler>,
    /// Resource types whose conditional-match advisory lock this transaction holds.
    locked: HashSet<String>,
}

impl Backend for PgTx<'_> {
    async fn append_audit(
        &mut self,
        entries: Vec<crate::audit::AuditEntry>,
        signer: &auth::chain::HeadSigner,
    ) -> Result<(), StoreError> {
        crate::audit::append_pg(self.tx, entries, signer)
            .await
            .map(|_| ())
    }

    async fn current(&mut self, ty: &str, id: &str) -> Result<Option<Current>, StoreError> {
        let stmt = self
            .tx
            .prepare_cached(&format!("{} FOR UPDATE", sql::CURRENT))
            .await?;
        let row = self.tx.query_opt(&stmt, &[&ty, &id]).await?;
        Ok(row.map(|r| Current {
            rid: r.get(0),
            version: r.get::<_, i64>(1) as u64,
            deleted: r.get(2),
        }))
    }

    async fn load(&mut self, ty: &str, id: &str) -> Result<Option<StoredResource>, StoreError> {
        let stmt = self.tx.prepare_cached(sql::LOAD_CURRENT).await?;
        let row = self.tx.query_opt(&stmt, &[&ty, &id]).await?;
        Ok(row.map(|r| row_to_resource(&r, 0)))
    }

    async fn matches(
        &mut self,
        q: &SearchQuery,
        limit: usize,
        access: Option<&Restriction>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.lock_type(q.resource_type.as_deref().unwrap_or_default())
            .await?;
        matches(self.tx, q, limit, access).await
    }

    async fn admits(
        &mut self,
        extractor: &dyn IndexExtractor,
        r: &Restriction,
        ty: &str,
        id: &str,
        cur: Current,
    ) -> Result<bool, StoreError> {
        admits(self.tx, extractor, r, ty, id, cur).await
    }

    /// One round trip for the version, the current pointer and the change-feed row (ids are
    /// drawn from the identity sequences up front), one for the old index rows of an update, and
    /// one pipelined batch for the new index rows.
    fn labeler(&self) -> Option<&Labeler> {
        self.labeler
    }

    async fn write(&mut self, v: NewVersion<'_>) -> Result<(), StoreError> {
        let tx = self.tx;
        let version = v.version as i64;
        let deleted = v.method == Method::Delete;
        let method = v.method.as_str();
        let rid: i64 = match v.rid {
            Some(rid) => {
                let stmt = tx.prepare_cached(PG_DELETE_INDEX).await?;
                tx.execute(&stmt, &[&rid]).await?;
                let stmt = tx.prepare_cached(PG_WRITE_EXISTING).await?;
                tx.execute(
                    &stmt,
                    &[
                        &rid,
                        &v.resource_type,
                        &v.id,
                        &version,
                        &v.last_updated,
                        &deleted,
                        &method,
                        &v.body,
                        &v.request_id,
                        &v.compartments,
                    ],
                )
                .await?;
                rid
            }
            None => {
                let stmt = tx.prepare_cached(PG_WRITE_NEW).await?;
                tx.query_one(
                    &stmt,
                    &[
                        &v.resource_type,
                        &v.id,
                        &version,
                        &v.last_updated,
                        &deleted,
                        &method,
                        &v.body,
                        &v.request_id,
                        &v.compartments,
                    ],
                )
                .await?
                .get(0)
            }
        };
        let inserts = crate::pg_index::inserts(rid, v.resource_type, &v.index);
        let mut stmts = Vec::with_capacity(inserts.len());
        for insert in &inserts {
            stmts.push(tx.prepare_cached(insert.text).await?);
        }
        let inserts = inserts.iter().zip(&stmts).map(|(insert, stmt)| async move {
            let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = insert
                .params
                .iter()
                .map(|b| b.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            tx.execute(stmt, &p).await
        });
        futures_util::future::try_join_all(inserts).await?;
        Ok(())
    }

    async fn patient_references(&mut self, rid: i64) -> Result<Vec<(String, String)>, StoreError> {
        let stmt = self.tx.prepare_cached(sql::PATIENT_REFERENCES).await?;
        let rows = self.tx.query(&stmt, &[&rid]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self.tx.batch_execute("SAVEPOINT entry").await?)
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        Ok(self.tx.batch_execute("RELEASE SAVEPOINT entry").await?)
    }

    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        Ok(self
            .tx
            .batch_execute("ROLLBACK TO SAVEPOINT entry; RELEASE SAVEPOINT entry")
            .await?)
    }

    /// `ON CONFLICT DO NOTHING` waits for a concurrent transaction holding the same key and
    /// then reports the row as present if that one committed.
    async fn insert_receipt(&mut self, r: &Receipt, now: i64) -> Result<bool, StoreError> {
        let stmt = self.tx.prepare_cached(sql::INSERT_RECEIPT).await?;
        let n = self
            .tx
            .execute(
                &stmt,
                &[&r.key, &r.fingerprint, &r.code, &r.reply, &r.deferred, &now],
            )
            .await?;
        Ok(n == 1)
    }

    async fn lock_types(&mut self, types: &BTreeSet<String>) -> Result<(), StoreError> {
        for ty in types {
            self.lock_type(ty).await?;
        }
        Ok(())
    }
}

impl PgTx<'_> {
    /// The transaction-scoped advisory lock that serializes conditional matching on a type.
    async fn lock_type(&mut self, ty: &str) -> Result<(), StoreError> {
        if !self.locked.contains(ty) {
            self.tx
                .execute(
                    "SELECT pg_advisory_xact_lock(hashtext('renkei:' || $1))",
                    &[&ty],
                )
                .await?;
            self.locked.insert(ty.to_owned());
        }
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    fn extractor(&self) -> &dyn IndexExtractor {
        self.extractor.as_ref()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn load(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<StoredResource>, StoreError> {
        let client = self.pool.get().await?;
        if let Some(r) = ctx.restriction()
            && visible_current(&client, self.extractor.as_ref(), Some(r), resource_type, id)
                .await?
                .is_none()
        {
            return Ok(None);
        }
        let stmt = client.prepare_cached(sql::LOAD_CURRENT).await?;
        let row = client.query_opt(&stmt, &[&resource_type, &id]).await?;
        Ok(row.map(|r| row_to_resource(&r, 0)))
    }

    async fn load_version(
        &self,
        ctx: &RequestContext,
        resource_type: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>, StoreError> {
        let client = self.pool.get().await?;
        if let Some(r) = ctx.restriction()
            && visible_current(&client, self.extractor.as_ref(), Some(r), resource_type, id)
                .await?
                .is_none()
        {
            return Ok(None);
        }
        let stmt = client.prepare_cached(sql::VREAD).await?;
        let row = client
            .query_opt(&stmt, &[&resource_type, &id, &(version as i64)])
            .await?;
        Ok(row.map(|r| row_to_resource(&r, 0)))
    }

    async fn history(
        &self,
        ctx: &RequestContext,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StoreError> {
        if !matches!(q.scope, HistoryScope::Instance(..)) {
            access::refuse_unscoped(ctx, "type- and system-level history")?;
        }
        let (ty, rid) = match &q.scope {
            HistoryScope::System => (None, None),
            HistoryScope::Type(t) => (Some(t.as_str()), None),
            HistoryScope::Instance(t, id) => {
                let client = self.pool.get().await?;
                let extractor = self.extractor.as_ref();
                match visible_current(&client, extractor, ctx.restriction(), t, id).await? {
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
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&count.text).await?;
            let total: i64 = client
                .query_one(&stmt, &params(&count.params))
                .await?
                .get(0);
            return Ok(HistoryPage {
                versions: Vec::new(),
                next: None,
                total: Some(total as u64),
            });
        }
        let sql = sql::history(ty, rid, q.since, q.before, q.count + 1);
        let rows = self.query_resources(&sql).await?;
        Ok(crate::history_page(rows, q.count))
    }

    async fn matching_ids(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let found = matches(&client, q, limit, ctx.restriction()).await?;
        Ok(found.into_iter().map(|(_, id)| id).collect())
    }

    async fn search(
        &self,
        ctx: &RequestContext,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let access = ctx.restriction();
        let rows = if q.count == 0 {
            Vec::new()
        } else {
            self.query_page(&crate::search::page_sql(q, q.count + 1, access))
                .await?
        };
        let total = if crate::needs_count(q, rows.len()) {
            let count = crate::search::count_sql(q, access);
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(&count.text).await?;
            Some(
                client
                    .query_one(&stmt, &params(&count.params))
                    .await?
                    .get(0),
            )
        } else {
            None
        };
        Ok(crate::search_page(q, rows, total))
    }

    async fn explain(&self, ctx: &RequestContext, q: &SearchQuery) -> Result<String, StoreError> {
        let page = crate::search::page_sql(q, q.count + 1, ctx.restriction());
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("EXPLAIN {}", page.sql.text),
                &params(&page.sql.params),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
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
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::RECEIPT).await?;
        let row = client.query_opt(&stmt, &[&key]).await?;
        Ok(row.map(|r| Receipt {
            key: r.get(0),
            fingerprint: r.get(1),
            code: r.get(2),
            reply: r.get(3),
            deferred: r.get(4),
        }))
    }

    async fn commit_keyed(
        &self,
        ctx: &RequestContext,
        units: Vec<KeyedWrite>,
    ) -> Result<Vec<Result<Vec<Outcome>, StoreError>>, StoreError> {
        self.keyed_once(ctx, units).await
    }

    async fn lock_exclusive(
        &self,
        _ctx: &RequestContext,
        name: &str,
    ) -> Result<crate::ExclusiveLock, StoreError> {
        if !crate::exclusive::valid_name(name) {
            return Err(StoreError::Invalid(format!("invalid lock name {name:?}")));
        }
        // Advisory locks are per database: the schema is part of the key, so stores in
        // different schemas of one database (tests, tenants) do not wait for each other.
        let scoped = format!(
            "{}.{name}",
            self.config.schema.as_deref().unwrap_or("public")
        );
        let key = crate::exclusive::advisory_key(&scoped);
        let client = self.pool.get().await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await?;
        Ok(crate::ExclusiveLock {
            held: crate::exclusive::Held::Postgres {
                client: Some(Box::new(client)),
                key,
            },
        })
    }

    async fn changes(
        &self,
        ctx: &RequestContext,
        after: i64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&changes_sql()).await?;
        let rows = client.query(&stmt, &[&after, &(limit as i64)]).await?;
        Ok(rows.iter().map(change_row).collect())
    }

    async fn feed(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        limit: usize,
    ) -> Result<FeedBatch, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&feed_sql()).await?;
        let rows = client
            .query(
                &stmt,
                &[&after.xid().to_string(), &after.seq(), &(limit as i64)],
            )
            .await?;
        feed_batch(after, &rows)
    }

    async fn checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
    ) -> Result<FeedPosition, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        feed::check_name(consumer)?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::CHECKPOINT).await?;
        match client.query_opt(&stmt, &[&consumer]).await? {
            Some(row) => row.get::<_, String>(0).parse(),
            None => Ok(FeedPosition::START),
        }
    }

    async fn feed_pending(
        &self,
        ctx: &RequestContext,
        after: &FeedPosition,
        resource_type: &str,
        limit: usize,
    ) -> Result<FeedBatch, StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(&feed_pending_sql()).await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &after.xid().to_string(),
                    &after.seq(),
                    &resource_type,
                    &(limit as i64),
                ],
            )
            .await?;
        feed_batch(after, &rows)
    }

    async fn save_checkpoint(
        &self,
        ctx: &RequestContext,
        consumer: &str,
        position: &FeedPosition,
    ) -> Result<(), StoreError> {
        access::refuse_unscoped(ctx, "the change feed")?;
        feed::check_name(consumer)?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::SAVE_CHECKPOINT).await?;
        client
            .execute(
                &stmt,
                &[&consumer, &position.to_string(), &crate::time::now_micros()],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = PostgresConfig::new("postgres://renkei:s3cret@db:5432/renkei");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("renkei:***@db:5432/renkei"), "{shown}");
        assert_eq!(
            redact("host=db password=s3cret"),
            "(connection string with password)"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
    }
}
