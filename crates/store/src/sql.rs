//! SQL shared by both backends: statement texts with `$n` placeholders (the SQLite backend
//! rewrites them to `?n`), and parameter values that bind on either driver.

/// A parameter value for either backend.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlParam {
    Text(String),
    Int(i64),
    Float(f64),
    /// A resource type or parameter name as an index table's `res_type` or `param` holds it:
    /// text on PostgreSQL, its number on SQLite (`sqlite_names`).
    Name(String),
}

impl SqlParam {
    pub(crate) fn as_pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            SqlParam::Text(v) | SqlParam::Name(v) => v,
            SqlParam::Int(v) => v,
            SqlParam::Float(v) => v,
        }
    }
}

/// SQL text with `$n` placeholders and its parameters.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub text: String,
    pub params: Vec<SqlParam>,
}

impl Sql {
    /// Adds a parameter and returns its placeholder.
    pub(crate) fn bind(&mut self, p: SqlParam) -> String {
        self.params.push(p);
        format!("${}", self.params.len())
    }

    /// Binds each of `values` as `kind` (`SqlParam::Text`, `SqlParam::Name`) and returns their
    /// placeholders, comma-separated, for an `IN (...)` list.
    pub(crate) fn bind_list<'v>(
        &mut self,
        values: impl IntoIterator<Item = &'v String>,
        kind: fn(String) -> SqlParam,
    ) -> String {
        values
            .into_iter()
            .map(|v| self.bind(kind(v.clone())))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) const CURRENT: &str =
    "SELECT rid, version, deleted FROM resource WHERE res_type = $1 AND res_id = $2";

/// Columns of a stored version, in the order `row_to_resource` reads them.
pub(crate) const VERSION_COLUMNS: &str =
    "v.res_type, v.res_id, v.version, v.last_updated, v.method, v.body";

pub(crate) const LOAD_CURRENT: &str = "SELECT v.res_type, v.res_id, v.version, v.last_updated, v.method, v.body \
     FROM resource r JOIN resource_version v ON v.seq = r.seq WHERE r.res_type = $1 AND r.res_id = $2";

pub(crate) const VREAD: &str = "SELECT v.res_type, v.res_id, v.version, v.last_updated, v.method, v.body \
     FROM resource r JOIN resource_version v ON v.rid = r.rid \
     WHERE r.res_type = $1 AND r.res_id = $2 AND v.version = $3";

/// SQLite's: `rid` is the row id (`last_insert_rowid`); a `RETURNING` clause would have
/// SQLite gather the returned row in a table of its own first.
pub(crate) const INSERT_RESOURCE: &str = "INSERT INTO resource (res_type, res_id, version, seq, last_updated, deleted) \
     VALUES ($1, $2, $3, 0, $4, $5)";

/// SQLite's: `seq` is the row id, as with [`INSERT_RESOURCE`].
pub(crate) const INSERT_VERSION: &str = "INSERT INTO resource_version (rid, res_type, res_id, version, last_updated, method, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(crate) const UPDATE_RESOURCE: &str =
    "UPDATE resource SET version = $2, seq = $3, last_updated = $4, deleted = $5 WHERE rid = $1";

/// A resource inserted in the same transaction already holds its version, time and
/// deletion flag: only its version's `seq` is set, which no index covers.
pub(crate) const SET_RESOURCE_SEQ: &str = "UPDATE resource SET seq = $2 WHERE rid = $1";

pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO outbox (version_seq, res_type, res_id, version, method, request_id) \
     VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const INSERT_RECEIPT: &str = "INSERT INTO receipt (key, fingerprint, code, reply, deferred, created) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING";

pub(crate) const RECEIPT: &str =
    "SELECT key, fingerprint, code, reply, deferred FROM receipt WHERE key = $1";

/// The reference index rows of resource `rid` that name a Patient: `(param, target_id)`, from
/// which a deletion's compartments are taken (those of the version it deletes). PostgreSQL's;
/// SQLite numbers its parameter names (`sqlite::PATIENT_REFERENCES`).
pub(crate) const PATIENT_REFERENCES: &str = "SELECT param, target_id FROM idx_reference \
     WHERE rid = $1 AND target_type = 'Patient' AND target_id IS NOT NULL";

pub(crate) const INSERT_CHANGE_COMPARTMENT: &str =
    "INSERT INTO change_compartment (version_seq, patient) VALUES ($1, $2)";

/// A consumer's saved position.
pub(crate) const CHECKPOINT: &str = "SELECT position FROM feed_consumer WHERE name = $1";

pub(crate) const SAVE_CHECKPOINT: &str = "INSERT INTO feed_consumer (name, position, updated) \
     VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
     updated = excluded.updated";

/// Every index table (deleted from, by `rid`, when a resource gets a new version).
pub(crate) const INDEX_TABLES: [&str; 7] = [
    "DELETE FROM idx_string WHERE rid = $1",
    "DELETE FROM idx_token WHERE rid = $1",
    "DELETE FROM idx_reference WHERE rid = $1",
    "DELETE FROM idx_date WHERE rid = $1",
    "DELETE FROM idx_number WHERE rid = $1",
    "DELETE FROM idx_quantity WHERE rid = $1",
    "DELETE FROM idx_uri WHERE rid = $1",
];

/// The number of versions a history query covers (`_summary=count`).
pub(crate) fn history_count(
    resource_type: Option<&str>,
    rid: Option<i64>,
    since: Option<i64>,
) -> Sql {
    let mut sql = Sql::default();
    let filter = history_filter(&mut sql, resource_type, rid, since, None);
    sql.text = format!("SELECT COUNT(*) FROM resource_version v {filter}");
    sql
}

/// The history query of a scope (`rid` for an instance), newest first, `limit` rows.
pub(crate) fn history(
    resource_type: Option<&str>,
    rid: Option<i64>,
    since: Option<i64>,
    before: Option<i64>,
    limit: usize,
) -> Sql {
    let mut sql = Sql::default();
    let filter = history_filter(&mut sql, resource_type, rid, since, before);
    let limit = sql.bind(SqlParam::Int(limit as i64));
    sql.text = format!(
        "SELECT v.seq, {VERSION_COLUMNS} FROM resource_version v {filter} ORDER BY v.seq DESC LIMIT {limit}"
    );
    sql
}

/// The `WHERE` clause (empty for the whole system's history) of a history scope, `_since`
/// and the paging cursor (versions before `before`).
fn history_filter(
    sql: &mut Sql,
    resource_type: Option<&str>,
    rid: Option<i64>,
    since: Option<i64>,
    before: Option<i64>,
) -> String {
    let mut conds = Vec::new();
    if let Some(rid) = rid {
        conds.push(format!("v.rid = {}", sql.bind(SqlParam::Int(rid))));
    } else if let Some(t) = resource_type {
        conds.push(format!(
            "v.res_type = {}",
            sql.bind(SqlParam::Text(t.into()))
        ));
    }
    if let Some(s) = since {
        conds.push(format!("v.last_updated >= {}", sql.bind(SqlParam::Int(s))));
    }
    if let Some(b) = before {
        conds.push(format!("v.seq < {}", sql.bind(SqlParam::Int(b))));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    }
}
