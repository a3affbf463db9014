//! The audit log in the database: append-only, hash-chained, its head signed (see
//! `auth::chain` for the chain and the check, `docs/storage.md` "Audit log" for the tables).
//!
//! [`AuditLog::append_audit`] appends records in one transaction: it takes the head (a lock
//! that orders appends: the writer connection on SQLite, a transaction-level advisory lock on
//! PostgreSQL), chains each record to the one before, stores it with the patients and
//! resources it names, and replaces the head with a newly signed one. A caller that must not
//! answer before its record is durable (every read, by the rule) waits for this call;
//! callers group many records into one call to share the commit. [`AuditLog::audit_chain`]
//! pages the log in sequence order for `renkei audit verify`, and
//! [`AuditLog::search_audit`] finds records by patient, agent, resource and time, newest
//! first.
//!
//! Nothing here updates or deletes a record; the tables' triggers refuse it too.

use std::sync::Arc;

use async_trait::async_trait;
use auth::chain::{Head, HeadSigner, SignedHead, StoredRecord};
use rusqlite::OptionalExtension;

use crate::error::StoreError;
use crate::model::Outcome;
use crate::postgres::PostgresStore;
use crate::sql::{Sql, SqlParam};
use crate::sqlite::SqliteStore;

/// `audit_ref.kind` of a patient.
const PATIENT: i64 = 1;
/// `audit_ref.kind` of another resource.
const ENTITY: i64 = 2;

/// One record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When the event happened, milliseconds since the epoch.
    pub recorded_ms: i64,
    /// The request's correlation id.
    pub request_id: String,
    /// Who acted (a reference such as `Practitioner/x`, or a client id), for searching.
    pub agent: Option<String>,
    /// The patients the record names (`Patient/x`).
    pub patients: Vec<String>,
    /// The other resources it names (`Type/id`).
    pub entities: Vec<String>,
    /// The record's bytes (an `AuditEvent`'s JSON): what the chain hashes.
    pub record: Vec<u8>,
}

/// Which records [`AuditLog::search_audit`] returns, newest first; every given criterion must
/// hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// Names one of these patients (none: any); the Patient ids of one person, say.
    pub patients: Vec<String>,
    /// By this agent.
    pub agent: Option<String>,
    /// Names this resource.
    pub entity: Option<String>,
    /// Recorded at or after (ms).
    pub since_ms: Option<i64>,
    /// Recorded before (ms).
    pub until_ms: Option<i64>,
    /// Only records before this sequence number (the next page).
    pub before_seq: Option<u64>,
    /// At most this many.
    pub count: usize,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Its sequence number (the `AuditEvent`'s id).
    pub seq: u64,
    /// Its bytes.
    pub record: Vec<u8>,
}

/// The audit record of a request's write, made by the request's auditor once the write's
/// outcomes are known, and appended by the store inside the write's own transaction, so that
/// the write and its record commit together or not at all.
pub trait WriteAuditor: Send + Sync {
    /// The record of a write with these outcomes (one per entry, in order).
    fn record(&self, outcomes: &[Result<Outcome, StoreError>]) -> AuditEntry;
    /// The key that signs the log's head.
    fn signer(&self) -> &HeadSigner;
    /// The record committed with its write (the request needs no record of its own for it).
    fn committed(&self);
}

/// The audit log of a store.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Appends `entries` in order, in one transaction, and signs the new head with `signer`.
    /// Returns the new head. Nothing is appended when it fails.
    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        signer: Arc<HeadSigner>,
    ) -> Result<Head, StoreError>;

    /// The signed head (`None` before the first record).
    async fn audit_head(&self) -> Result<Option<SignedHead>, StoreError>;

    /// Up to `limit` records after sequence number `after`, in sequence order, as stored.
    async fn audit_chain(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError>;

    /// Records matching `q`, newest first.
    async fn search_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError>;

    /// The record `seq`.
    async fn read_audit(&self, seq: u64) -> Result<Option<AuditRow>, StoreError>;
}

/// Why [`verify_log`] failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log was tampered with (or signed by another key).
    #[error("the audit log does not verify: {0}")]
    Chain(#[from] auth::chain::ChainError),
    /// Records but no signed head: the head was removed.
    #[error("the audit log has records but no signed head: the head was removed")]
    Headless,
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the whole log of `log` against its signed head, reading `page` records at a time;
/// calls `progress` with the last sequence number checked and the head's after each page.
/// Returns the number of records.
pub async fn verify_log(
    log: &dyn AuditLog,
    verifier: &auth::chain::HeadVerifier,
    page: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, VerifyError> {
    let signed = match log.audit_head().await? {
        Some(s) => s,
        None => {
            if log.audit_chain(0, 1).await?.is_empty() {
                return Ok(0);
            }
            return Err(VerifyError::Headless);
        }
    };
    let mut check = auth::chain::ChainVerifier::new(&signed, verifier)?;
    loop {
        let rows = log.audit_chain(check.last(), page.max(1)).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            check.push(r)?;
        }
        progress(check.last(), signed.head.seq);
    }
    Ok(check.finish()?)
}

/// The head stored as `signed` text, or the empty head.
fn parse_head(signed: Option<String>) -> Result<Head, StoreError> {
    match signed {
        None => Ok(Head::EMPTY),
        Some(text) => serde_json::from_str::<SignedHead>(&text)
            .map(|s| s.head)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "audit_head is unreadable ({e}): run `renkei audit verify`"
                ))
            }),
    }
}

/// The hash column as 32 bytes.
fn hash_of(bytes: &[u8]) -> Result<auth::chain::Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Backend("audit_log.hash is not 32 bytes".into()))
}

fn signed_text(signer: &HeadSigner, head: Head) -> Result<String, StoreError> {
    serde_json::to_string(&signer.sign(head)).map_err(|e| StoreError::Backend(e.to_string()))
}

fn as_seq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn as_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// ----- SQLite -----

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        signer: Arc<HeadSigner>,
    ) -> Result<Head, StoreError> {
        self.write_with(move |conn, _| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let head = append_sqlite(&tx, &entries, &signer)?;
            tx.commit()?;
            Ok(head)
        })
        .await
    }

    async fn audit_head(&self) -> Result<Option<SignedHead>, StoreError> {
        let text: Option<String> = self
            .read_with(|c| {
                Ok(
                    c.query_row("SELECT signed FROM audit_head WHERE one = 1", [], |r| {
                        r.get(0)
                    })
                    .optional()?,
                )
            })
            .await?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Backend(format!("audit_head is unreadable: {e}")))
        })
        .transpose()
    }

    async fn audit_chain(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        self.read_with(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, record, hash FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(rusqlite::params![as_sql(after), limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, record, hash) = row?;
                out.push(StoredRecord {
                    seq: as_seq(seq),
                    record,
                    hash: hash_of(&hash)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn search_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let sql = search_sql(q);
        self.read_with(move |c| {
            let mut st = c.prepare(&crate::sqlite::lite(&sql.text))?;
            let rows = st.query_map(crate::sqlite::params(c, &sql.params)?, |r| {
                Ok(AuditRow {
                    seq: as_seq(r.get(0)?),
                    record: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn read_audit(&self, seq: u64) -> Result<Option<AuditRow>, StoreError> {
        self.read_with(move |c| {
            Ok(c.query_row(
                "SELECT seq, record FROM audit_log WHERE seq = ?1",
                [as_sql(seq)],
                |r| {
                    Ok(AuditRow {
                        seq: as_seq(r.get(0)?),
                        record: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }
}

/// Appends `entries` inside the open SQLite transaction `tx` (the writer's): chained to the
/// head, with their references, and the head replaced by a newly signed one.
pub(crate) fn append_sqlite(
    tx: &rusqlite::Connection,
    entries: &[AuditEntry],
    signer: &HeadSigner,
) -> Result<Head, StoreError> {
    let signed: Option<String> = {
        tx.query_row("SELECT signed FROM audit_head WHERE one = 1", [], |r| {
            r.get(0)
        })
        .optional()?
    };
    let mut head = parse_head(signed)?;
    if head == Head::EMPTY {
        refuse_headless_sqlite(tx)?;
    }
    {
        let mut log = tx.prepare_cached(
            "INSERT INTO audit_log (seq, recorded, request_id, agent, record, hash) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut refs = tx.prepare_cached(
            "INSERT OR IGNORE INTO audit_ref (kind, target, seq) VALUES (?1, ?2, ?3)",
        )?;
        for e in entries {
            head = head.append(&e.record);
            let seq = as_sql(head.seq);
            log.execute(rusqlite::params![
                seq,
                e.recorded_ms,
                e.request_id,
                e.agent,
                e.record,
                &head.hash[..]
            ])?;
            for p in &e.patients {
                refs.execute(rusqlite::params![PATIENT, p, seq])?;
            }
            for r in &e.entities {
                refs.execute(rusqlite::params![ENTITY, r, seq])?;
            }
        }
    }
    tx.execute(
        "INSERT INTO audit_head (one, seq, signed) VALUES (1, ?1, ?2) \
                 ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, signed = excluded.signed",
        rusqlite::params![as_sql(head.seq), signed_text(signer, head)?],
    )?;
    Ok(head)
}

/// Records without a head: someone removed it. Appending would start a second chain over the
/// first, so refuse.
fn refuse_headless_sqlite(tx: &rusqlite::Connection) -> Result<(), StoreError> {
    let any: i64 = tx.query_row(
        "SELECT COUNT(*) FROM (SELECT 1 FROM audit_log LIMIT 1)",
        [],
        |r| r.get(0),
    )?;
    if any > 0 {
        return Err(headless());
    }
    Ok(())
}

fn headless() -> StoreError {
    StoreError::Backend(
        "audit_log has records but audit_head is missing: the log was tampered with; run `renkei audit verify`"
            .into(),
    )
}

/// The search's SQL (`$n` placeholders, as `sql` writes them for both backends).
fn search_sql(q: &AuditQuery) -> Sql {
    let mut sql = Sql::default();
    let mut conditions = Vec::new();
    let entity: Vec<String> = q.entity.iter().cloned().collect();
    for (kind, targets) in [(PATIENT, &q.patients), (ENTITY, &entity)] {
        if targets.is_empty() {
            continue;
        }
        let kind = sql.bind(SqlParam::Int(kind));
        let ts: Vec<String> = targets
            .iter()
            .map(|t| sql.bind(SqlParam::Text(t.clone())))
            .collect();
        conditions.push(format!(
            "l.seq IN (SELECT seq FROM audit_ref WHERE kind = {kind} AND target IN ({}))",
            ts.join(", ")
        ));
    }
    if let Some(a) = &q.agent {
        let t = sql.bind(SqlParam::Text(a.clone()));
        conditions.push(format!("l.agent = {t}"));
    }
    if let Some(s) = q.since_ms {
        let t = sql.bind(SqlParam::Int(s));
        conditions.push(format!("l.recorded >= {t}"));
    }
    if let Some(u) = q.until_ms {
        let t = sql.bind(SqlParam::Int(u));
        conditions.push(format!("l.recorded < {t}"));
    }
    if let Some(b) = q.before_seq {
        let t = sql.bind(SqlParam::Int(as_sql(b)));
        conditions.push(format!("l.seq < {t}"));
    }
    let limit = sql.bind(SqlParam::Int(q.count.min(10_000) as i64));
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    sql.text = format!(
        "SELECT l.seq, l.record FROM audit_log l{filter} ORDER BY l.seq DESC LIMIT {limit}"
    );
    sql
}

// ----- PostgreSQL -----

/// Advisory-lock key of the audit head: one per schema, taken per transaction.
const PG_LOCK: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '.renkei-audit-head', 0))";

/// Appends `entries` inside the open PostgreSQL transaction `tx`: takes the head's advisory
/// lock (held to the end of `tx`), chains the records, stores them with their references and
/// replaces the head with a newly signed one. On an error the caller rolls `tx` back.
pub(crate) async fn append_pg(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: Vec<AuditEntry>,
    signer: &HeadSigner,
) -> Result<Head, StoreError> {
    // Statements prepared once per connection: each append is a handful of round trips,
    // and a read's response waits for it. The head is read by a statement after the lock's,
    // so that its snapshot sees the last append that held the lock.
    let lock = tx.prepare_cached(PG_LOCK).await?;
    tx.execute(&lock, &[]).await?;
    let read_head = tx
        .prepare_cached("SELECT signed FROM audit_head WHERE one = 1")
        .await?;
    let signed: Option<String> = tx.query_opt(&read_head, &[]).await?.map(|r| r.get(0));
    let mut head = parse_head(signed)?;
    if head == Head::EMPTY
        && tx
            .query_opt("SELECT 1 FROM audit_log LIMIT 1", &[])
            .await?
            .is_some()
    {
        return Err(headless());
    }
    let mut seqs = Vec::with_capacity(entries.len());
    let mut recorded = Vec::with_capacity(entries.len());
    let mut request_ids = Vec::with_capacity(entries.len());
    let mut agents: Vec<Option<String>> = Vec::with_capacity(entries.len());
    let mut records = Vec::with_capacity(entries.len());
    let mut hashes = Vec::with_capacity(entries.len());
    let (mut ref_kinds, mut ref_targets, mut ref_seqs) = (Vec::new(), Vec::new(), Vec::new());
    for e in entries {
        head = head.append(&e.record);
        let seq = as_sql(head.seq);
        for p in e.patients {
            ref_kinds.push(PATIENT);
            ref_targets.push(p);
            ref_seqs.push(seq);
        }
        for r in e.entities {
            ref_kinds.push(ENTITY);
            ref_targets.push(r);
            ref_seqs.push(seq);
        }
        seqs.push(seq);
        recorded.push(e.recorded_ms);
        request_ids.push(e.request_id);
        agents.push(e.agent);
        records.push(e.record);
        hashes.push(head.hash.to_vec());
    }
    let insert = tx
        .prepare_cached(
            "INSERT INTO audit_log (seq, recorded, request_id, agent, record, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::bytea[])",
        )
        .await?;
    tx.execute(
        &insert,
        &[&seqs, &recorded, &request_ids, &agents, &records, &hashes],
    )
    .await?;
    if !ref_seqs.is_empty() {
        let refs = tx
            .prepare_cached(
                "INSERT INTO audit_ref (kind, target, seq) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
            )
            .await?;
        tx.execute(&refs, &[&ref_kinds, &ref_targets, &ref_seqs])
            .await?;
    }
    let write_head = tx
        .prepare_cached(
            "INSERT INTO audit_head (one, seq, signed) VALUES (1, $1, $2) \
             ON CONFLICT (one) DO UPDATE SET seq = excluded.seq, signed = excluded.signed",
        )
        .await?;
    tx.execute(
        &write_head,
        &[&as_sql(head.seq), &signed_text(signer, head)?],
    )
    .await?;
    Ok(head)
}

#[async_trait]
impl AuditLog for PostgresStore {
    async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        signer: Arc<HeadSigner>,
    ) -> Result<Head, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        match append_pg(&tx, entries, &signer).await {
            Ok(head) => {
                tx.commit().await?;
                Ok(head)
            }
            Err(e) => {
                // Ended here, not when dropped: a dropped transaction's rollback waits for
                // the connection's task, and its locks with it.
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn audit_head(&self) -> Result<Option<SignedHead>, StoreError> {
        let client = self.client().await?;
        let text: Option<String> = client
            .query_opt("SELECT signed FROM audit_head WHERE one = 1", &[])
            .await?
            .map(|r| r.get(0));
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| StoreError::Backend(format!("audit_head is unreadable: {e}")))
        })
        .transpose()
    }

    async fn audit_chain(&self, after: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, record, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&as_sql(after), &(limit as i64)],
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                let hash: Vec<u8> = r.get(2);
                Ok(StoredRecord {
                    seq: as_seq(r.get(0)),
                    record: r.get(1),
                    hash: hash_of(&hash)?,
                })
            })
            .collect()
    }

    async fn search_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let sql = search_sql(q);
        let client = self.client().await?;
        let bound: Vec<_> = sql.params.iter().map(SqlParam::as_pg).collect();
        let rows = client.query(&sql.text, &bound).await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRow {
                seq: as_seq(r.get(0)),
                record: r.get(1),
            })
            .collect())
    }

    async fn read_audit(&self, seq: u64) -> Result<Option<AuditRow>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT seq, record FROM audit_log WHERE seq = $1",
                &[&as_sql(seq)],
            )
            .await?
            .map(|r| AuditRow {
                seq: as_seq(r.get(0)),
                record: r.get(1),
            }))
    }
}
