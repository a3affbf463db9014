//! The SQLite backend's search-index rows: how a version's rows reach the index tables.
//!
//! A transaction's new rows wait in [`PendingRows`] and go in together, in the order of the
//! tables' value indexes ([`PendingRow`]). An update replaces only the rows that changed
//! ([`replace`]): the rows the resource holds are read back (the tables are keyed by
//! `(rid, n)`, so they lie together), the ones the new version no longer has are deleted, and
//! only the new version's other rows are inserted. Most updates change few of a resource's
//! rows (an EMPI golden record gains a source's identifier and link; a status moves on), and
//! each row kept saves a delete and an insert at random places in its value index.

use std::collections::{HashMap, HashSet};

use rusqlite::{Row, Statement, Transaction};

use crate::error::StoreError;
use crate::index::{IndexRow, IndexValue, RowKey};
use crate::sql;
use crate::sqlite::lite;

/// The index rows written in the open transaction and not inserted yet, and the resources
/// they belong to.
#[derive(Debug, Default)]
pub(crate) struct PendingRows {
    rows: Vec<PendingRow>,
    rids: HashSet<i64>,
}

impl PendingRows {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether rows of resource `rid` wait to be inserted.
    pub(crate) fn holds(&self, rid: i64) -> bool {
        self.rids.contains(&rid)
    }

    /// Adds rows of resource `rid`, each with its number.
    pub(crate) fn add(
        &mut self,
        rid: i64,
        resource_type: &str,
        rows: impl IntoIterator<Item = (i64, IndexRow)>,
    ) {
        let before = self.rows.len();
        self.rows
            .extend(rows.into_iter().map(|(n, row)| PendingRow {
                rid,
                n,
                resource_type: resource_type.to_owned(),
                row,
            }));
        if self.rows.len() > before {
            self.rids.insert(rid);
        }
    }

    /// Forgets every pending row (the entry that wrote them was rolled back).
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.rids.clear();
    }

    /// Inserts every pending row, in the order of the value indexes.
    pub(crate) fn insert(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let mut rows = std::mem::take(&mut self.rows);
        self.rids.clear();
        rows.sort_unstable_by(PendingRow::cmp_index_order);
        // Sorted by table: each table's statement is looked up once, not once a row.
        let mut at = 0;
        while at < rows.len() {
            let table = table_of(&rows[at].row.value);
            let mut insert = tx.prepare_cached(INSERTS[table])?;
            while let Some(p) = rows.get(at).filter(|p| table_of(&p.row.value) == table) {
                insert_index_row(&mut insert, p.rid, p.n, &p.resource_type, &p.row)?;
                at += 1;
            }
        }
        Ok(())
    }
}

/// Deletes every index row of resource `rid` (its current version is a deletion).
pub(crate) fn delete_all(tx: &Transaction<'_>, rid: i64) -> Result<(), StoreError> {
    for del in sql::INDEX_TABLES {
        tx.prepare_cached(&lite(del))?.execute([rid])?;
    }
    Ok(())
}

/// Makes the stored rows of resource `rid` those of `new`: deletes the stored rows `new` does
/// not have and returns the rows of `new` not stored yet, each with a number no stored row
/// uses. None of the resource's rows may be pending ([`PendingRows::holds`]).
pub(crate) fn replace(
    tx: &Transaction<'_>,
    rid: i64,
    new: Vec<IndexRow>,
) -> Result<Vec<(i64, IndexRow)>, StoreError> {
    let stored = stored_rows(tx, rid)?;
    // The new rows not paired with a stored one yet, by value (a row may repeat).
    let mut unmatched: HashMap<RowKey<'_>, Vec<usize>> = HashMap::with_capacity(new.len());
    for (i, row) in new.iter().enumerate() {
        unmatched.entry(RowKey(row)).or_default().push(i);
    }
    let mut kept = vec![false; new.len()];
    let mut next_n = 0;
    for (n, row) in &stored {
        next_n = next_n.max(n + 1);
        match unmatched.get_mut(&RowKey(row)).and_then(Vec::pop) {
            Some(i) => kept[i] = true,
            None => {
                tx.prepare_cached(DELETES[table_of(&row.value)])?
                    .execute([rid, *n])?;
            }
        }
    }
    Ok(new
        .into_iter()
        .zip(kept)
        .filter(|(_, kept)| !kept)
        .map(|(row, _)| {
            next_n += 1;
            (next_n - 1, row)
        })
        .collect())
}

/// The statement deleting one row of each index table (in the order of [`table_of`]).
const DELETES: [&str; 7] = [
    "DELETE FROM idx_string WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_token WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_reference WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_date WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_number WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_quantity WHERE rid = ?1 AND n = ?2",
    "DELETE FROM idx_uri WHERE rid = ?1 AND n = ?2",
];

/// The rows resource `rid` holds in every index table, with their numbers.
fn stored_rows(tx: &Transaction<'_>, rid: i64) -> Result<Vec<(i64, IndexRow)>, StoreError> {
    type Value = fn(&Row<'_>) -> rusqlite::Result<IndexValue>;
    const TABLES: [(&str, Value); 7] = [
        (
            "SELECT n, param, grp, value_norm, value_exact FROM idx_string WHERE rid = ?1",
            |r| {
                Ok(IndexValue::String {
                    normalized: r.get(3)?,
                    exact: r.get(4)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, system, code, display FROM idx_token WHERE rid = ?1",
            |r| {
                Ok(IndexValue::Token {
                    system: r.get(3)?,
                    code: r.get(4)?,
                    display: r.get(5)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, target_type, target_id, url FROM idx_reference WHERE rid = ?1",
            |r| {
                Ok(IndexValue::Reference {
                    target_type: r.get(3)?,
                    target_id: r.get(4)?,
                    url: r.get(5)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, lo, hi FROM idx_date WHERE rid = ?1",
            |r| {
                Ok(IndexValue::Date {
                    start: r.get(3)?,
                    end: r.get(4)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, value, lo, hi FROM idx_number WHERE rid = ?1",
            |r| {
                Ok(IndexValue::Number {
                    value: r.get(3)?,
                    low: r.get(4)?,
                    high: r.get(5)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, system, code, unit, value, lo, hi FROM idx_quantity WHERE rid = ?1",
            |r| {
                Ok(IndexValue::Quantity {
                    system: r.get(3)?,
                    code: r.get(4)?,
                    unit: r.get(5)?,
                    value: r.get(6)?,
                    low: r.get(7)?,
                    high: r.get(8)?,
                })
            },
        ),
        (
            "SELECT n, param, grp, uri FROM idx_uri WHERE rid = ?1",
            |r| Ok(IndexValue::Uri { uri: r.get(3)? }),
        ),
    ];
    let mut out = Vec::new();
    for (select, value) in TABLES {
        let mut stmt = tx.prepare_cached(select)?;
        let rows = stmt.query_map([rid], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                IndexRow {
                    param: r.get(1)?,
                    group: r.get(2)?,
                    value: value(r)?,
                },
            ))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    Ok(out)
}

/// The insert statement of each index table (in the order of [`table_of`]).
const INSERTS: [&str; 7] = [
    "INSERT INTO idx_string (rid, n, res_type, param, grp, value_norm, value_exact) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "INSERT INTO idx_token (rid, n, res_type, param, grp, system, code, display) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "INSERT INTO idx_reference (rid, n, res_type, param, grp, target_type, target_id, url) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "INSERT INTO idx_date (rid, n, res_type, param, grp, lo, hi) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    "INSERT INTO idx_number (rid, n, res_type, param, grp, value, lo, hi) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    "INSERT INTO idx_quantity (rid, n, res_type, param, grp, system, code, unit, value, lo, hi) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    "INSERT INTO idx_uri (rid, n, res_type, param, grp, uri) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
];

/// The index table a value goes to, as a position in [`INSERTS`].
fn table_of(value: &IndexValue) -> usize {
    match value {
        IndexValue::String { .. } => 0,
        IndexValue::Token { .. } => 1,
        IndexValue::Reference { .. } => 2,
        IndexValue::Date { .. } => 3,
        IndexValue::Number { .. } => 4,
        IndexValue::Quantity { .. } => 5,
        IndexValue::Uri { .. } => 6,
    }
}

/// Inserts one index row of resource `rid` with `insert`, the statement of its table; `n`
/// numbers the rows of a resource (the tables are keyed by `(rid, n)`, migration 3). Values
/// are bound borrowed.
fn insert_index_row(
    insert: &mut Statement<'_>,
    rid: i64,
    n: i64,
    resource_type: &str,
    row: &IndexRow,
) -> Result<(), StoreError> {
    let grp = row.group.map(i64::from);
    let param = row.param.as_str();
    match &row.value {
        IndexValue::String { normalized, exact } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            normalized,
            exact
        ]),
        IndexValue::Token {
            system,
            code,
            display,
        } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            system,
            code,
            display
        ]),
        IndexValue::Reference {
            target_type,
            target_id,
            url,
        } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            target_type,
            target_id,
            url
        ]),
        IndexValue::Date { start, end } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            start,
            end
        ]),
        IndexValue::Number { value, low, high } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            value,
            low,
            high
        ]),
        IndexValue::Quantity {
            system,
            code,
            unit,
            value,
            low,
            high,
        } => insert.execute(rusqlite::params![
            rid,
            n,
            resource_type,
            param,
            grp,
            system,
            code,
            unit,
            value,
            low,
            high
        ]),
        IndexValue::Uri { uri } => {
            insert.execute(rusqlite::params![rid, n, resource_type, param, grp, uri])
        }
    }?;
    Ok(())
}

/// An index row of a version written in the open transaction, inserted later, with the rows
/// of the transaction's other writes, in the order of the tables' value indexes
/// ([`SqliteTx::flush`]). Inserted as each version is written, a large unit (an import's
/// chunk: tens of thousands of resources, hundreds of thousands of rows) lands on leaf pages
/// all over each value index in random order, and once the writer's page cache is full every
/// insert reads a page back from the log or the file and spills another; in index order each
/// leaf page is read, changed and written once. Flushed before anything that reads the index
/// tables in the transaction (a conditional match, an access check, a version's references,
/// the rows of a resource written earlier in the same transaction, before they are replaced),
/// at a savepoint, and before the commit.
#[derive(Debug)]
struct PendingRow {
    rid: i64,
    n: i64,
    resource_type: String,
    row: IndexRow,
}

impl PendingRow {
    /// Which table the row goes to, then the leading columns of that table's value index.
    fn cmp_index_order(&self, other: &Self) -> std::cmp::Ordering {
        use IndexValue as V;
        fn owner(p: &PendingRow) -> (&str, &str) {
            (p.resource_type.as_str(), p.row.param.as_str())
        }
        let by_value = match (&self.row.value, &other.row.value) {
            (V::String { normalized: a, .. }, V::String { normalized: b, .. }) => {
                owner(self).cmp(&owner(other)).then_with(|| a.cmp(b))
            }
            (
                V::Token {
                    system: sa,
                    code: ca,
                    ..
                },
                V::Token {
                    system: sb,
                    code: cb,
                    ..
                },
            ) => owner(self)
                .cmp(&owner(other))
                .then_with(|| (ca, sa).cmp(&(cb, sb))),
            (
                V::Reference {
                    target_type: ta,
                    target_id: ia,
                    ..
                },
                V::Reference {
                    target_type: tb,
                    target_id: ib,
                    ..
                },
            ) => (ia, ta).cmp(&(ib, tb)),
            (V::Date { start: a, .. }, V::Date { start: b, .. }) => {
                owner(self).cmp(&owner(other)).then_with(|| a.cmp(b))
            }
            (V::Number { value: a, .. }, V::Number { value: b, .. }) => {
                owner(self).cmp(&owner(other)).then_with(|| a.total_cmp(b))
            }
            (
                V::Quantity {
                    code: ca,
                    value: va,
                    ..
                },
                V::Quantity {
                    code: cb,
                    value: vb,
                    ..
                },
            ) => owner(self)
                .cmp(&owner(other))
                .then_with(|| ca.cmp(cb))
                .then_with(|| va.total_cmp(vb)),
            (V::Uri { uri: a }, V::Uri { uri: b }) => {
                owner(self).cmp(&owner(other)).then_with(|| a.cmp(b))
            }
            (a, b) => table_of(a).cmp(&table_of(b)),
        };
        table_of(&self.row.value)
            .cmp(&table_of(&other.row.value))
            .then(by_value)
    }
}
