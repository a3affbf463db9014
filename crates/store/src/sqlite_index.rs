//! The SQLite backend's search-index rows: how a version's rows reach the index tables.
//!
//! A transaction's new rows wait in [`PendingRows`] and go in together, in about the order
//! of the tables' value indexes. An update replaces only the rows that changed
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
use crate::sqlite_names::WriteNames;

/// The index rows written in the open transaction and not inserted yet, and the resources
/// they belong to: each write's rows as it handed them over, inserted together, grouped by
/// table, type and parameter in the order of their values ([`PendingRows::insert`]).
/// Inserted as each version is written, a large unit (an import's chunk: tens of thousands
/// of resources, hundreds of thousands of rows) lands on leaf pages all over each value index
/// in random order, and once the writer's page cache is full every insert reads a page back
/// from the log or the file and spills another; in index order each leaf page is read,
/// changed and written about once. Flushed before anything that reads the index tables in the
/// transaction (a conditional match, an access check, a version's references, the rows of a
/// resource written earlier in the same transaction, before they are replaced), at a
/// savepoint, and before the commit.
#[derive(Debug, Default)]
pub(crate) struct PendingRows {
    writes: Vec<PendingWrite>,
    /// The resource types of `writes` (a transaction holds few).
    types: Vec<String>,
    rows: usize,
    rids: HashSet<i64>,
}

/// One write's rows.
#[derive(Debug)]
struct PendingWrite {
    rid: i64,
    /// The resource type, as a position in [`PendingRows::types`].
    ty: u16,
    /// The rows with their numbers.
    rows: Vec<(i64, IndexRow)>,
}

impl PendingRows {
    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Whether rows of resource `rid` wait to be inserted.
    pub(crate) fn holds(&self, rid: i64) -> bool {
        self.rids.contains(&rid)
    }

    /// Adds rows of resource `rid`, each with its number.
    pub(crate) fn add(&mut self, rid: i64, resource_type: &str, rows: Vec<(i64, IndexRow)>) {
        if rows.is_empty() {
            return;
        }
        let ty = match self.types.iter().position(|t| t == resource_type) {
            Some(at) => at,
            None => {
                self.types.push(resource_type.to_owned());
                self.types.len() - 1
            }
        };
        self.rows += rows.len();
        self.rids.insert(rid);
        self.writes.push(PendingWrite {
            rid,
            ty: ty as u16,
            rows,
        });
    }

    /// Forgets every pending row (the entry that wrote them was rolled back).
    pub(crate) fn clear(&mut self) {
        self.writes.clear();
        self.rows = 0;
        self.rids.clear();
    }

    /// Inserts every pending row, in the order of the value indexes.
    pub(crate) fn insert(
        &mut self,
        tx: &Transaction<'_>,
        names: &mut WriteNames,
    ) -> Result<(), StoreError> {
        let writes = std::mem::take(&mut self.writes);
        self.rows = 0;
        self.rids.clear();
        let types = &self.types;
        let mut order = sort_keys(&writes);
        order.sort_unstable_by_key(|p| p.key);
        let type_numbers = types
            .iter()
            .map(|t| names.number(tx, t))
            .collect::<Result<Vec<_>, _>>()?;
        // The rows come grouped by parameter (nearly: by its first eight bytes).
        let mut last_param: Option<(&str, i64)> = None;
        // Sorted by table: each table's statement is looked up once, not once a row.
        let mut at = 0;
        while at < order.len() {
            let table = order[at].key.0;
            let mut insert = tx.prepare_cached(INSERTS[table as usize])?;
            while let Some(p) = order.get(at).filter(|p| p.key.0 == table) {
                let write = &writes[p.write as usize];
                let (n, index_row) = &write.rows[p.row as usize];
                let ty = type_numbers[write.ty as usize];
                let param = match last_param {
                    Some((name, number)) if name == index_row.param => number,
                    _ => {
                        let number = names.number(tx, &index_row.param)?;
                        last_param = Some((&index_row.param, number));
                        number
                    }
                };
                insert_index_row(&mut insert, write.rid, *n, ty, param, index_row)?;
                at += 1;
            }
        }
        // A chunk's rows (hundreds of thousands of strings) are freed beside the commit.
        crate::sqlite::free_elsewhere(writes);
        Ok(())
    }
}

/// A pending row's place in [`PendingRows::writes`], with the key it is inserted in the
/// order of: its table, resource type and parameter (its first eight bytes), and its value's
/// first eight bytes. That is nearly the order of the table's value index (which leads with
/// type, parameter and value), so each leaf page of the index is visited about once; rows
/// whose keys tie land within a few pages of each other, so their order is left as it comes.
/// Integer keys sort several times faster than comparing the strings.
struct Position {
    key: (u8, u16, u64, u64),
    write: u32,
    row: u32,
}

fn sort_keys(writes: &[PendingWrite]) -> Vec<Position> {
    let mut out = Vec::with_capacity(writes.iter().map(|w| w.rows.len()).sum());
    for (write, w) in writes.iter().enumerate() {
        for (at, (_, row)) in w.rows.iter().enumerate() {
            // References are ordered by target alone (their index leads with it).
            let (ty, param) = match row.value {
                IndexValue::Reference { .. } => (0, 0),
                _ => (w.ty, text_prefix(&row.param)),
            };
            out.push(Position {
                key: (
                    table_of(&row.value) as u8,
                    ty,
                    param,
                    value_prefix(&row.value),
                ),
                write: write as u32,
                row: at as u32,
            });
        }
    }
    out
}

/// The first eight bytes of `s`, big-endian: ordered as the strings' bytes are, where they
/// differ in those bytes.
fn text_prefix(s: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let head = &s.as_bytes()[..s.len().min(8)];
    bytes[..head.len()].copy_from_slice(head);
    u64::from_be_bytes(bytes)
}

/// The leading index column's value as a number ordered as the column's values are: the
/// first eight bytes of text (big-endian), or a number's bits in their total order.
fn value_prefix(value: &IndexValue) -> u64 {
    let text = text_prefix;
    fn float(x: f64) -> u64 {
        // `f64::total_cmp`'s order as an unsigned integer.
        let bits = x.to_bits() as i64;
        (bits ^ ((((bits >> 63) as u64) >> 1) as i64)) as u64 ^ (1 << 63)
    }
    match value {
        IndexValue::String { normalized, .. } => text(normalized),
        IndexValue::Token { code, .. } => text(code),
        IndexValue::Reference { target_id, .. } => target_id.as_deref().map_or(0, text),
        IndexValue::Date { start, .. } => (*start as u64) ^ (1 << 63),
        IndexValue::Number { value, .. } => float(*value),
        IndexValue::Quantity { code, .. } => text(code),
        IndexValue::Uri { uri } => text(uri),
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
            "SELECT x.n, p.name, x.grp, x.value_norm, x.value_exact FROM idx_string x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
            |r| {
                Ok(IndexValue::String {
                    normalized: r.get(3)?,
                    exact: r.get(4)?,
                })
            },
        ),
        (
            "SELECT x.n, p.name, x.grp, x.system, x.code, x.display FROM idx_token x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
            |r| {
                Ok(IndexValue::Token {
                    system: r.get(3)?,
                    code: r.get(4)?,
                    display: r.get(5)?,
                })
            },
        ),
        (
            "SELECT x.n, p.name, x.grp, x.target_type, x.target_id, x.url FROM idx_reference x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
            |r| {
                Ok(IndexValue::Reference {
                    target_type: r.get(3)?,
                    target_id: r.get(4)?,
                    url: r.get(5)?,
                })
            },
        ),
        (
            "SELECT x.n, p.name, x.grp, x.lo, x.hi FROM idx_date x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
            |r| {
                Ok(IndexValue::Date {
                    start: r.get(3)?,
                    end: r.get(4)?,
                })
            },
        ),
        (
            "SELECT x.n, p.name, x.grp, x.value, x.lo, x.hi FROM idx_number x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
            |r| {
                Ok(IndexValue::Number {
                    value: r.get(3)?,
                    low: r.get(4)?,
                    high: r.get(5)?,
                })
            },
        ),
        (
            "SELECT x.n, p.name, x.grp, x.system, x.code, x.unit, x.value, x.lo, x.hi FROM idx_quantity x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
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
            "SELECT x.n, p.name, x.grp, x.uri FROM idx_uri x \
             JOIN search_name p ON p.id = x.param WHERE x.rid = ?1",
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
/// numbers the rows of a resource (the tables are keyed by `(rid, n)`, migration 3);
/// `resource_type` and `param` are the numbers of the type's and the row's parameter's names
/// (`sqlite_names`). Values are bound borrowed.
fn insert_index_row(
    insert: &mut Statement<'_>,
    rid: i64,
    n: i64,
    resource_type: i64,
    param: i64,
    row: &IndexRow,
) -> Result<(), StoreError> {
    let grp = row.group.map(i64::from);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Wherever two values' prefixes differ, they order the values as their index column
    /// does (text by its bytes, numbers in total order, dates by start).
    #[test]
    fn value_prefixes_never_contradict_the_value_order() {
        let string = |s: &str| IndexValue::String {
            normalized: s.into(),
            exact: s.into(),
        };
        let number = |x: f64| IndexValue::Number {
            value: x,
            low: x,
            high: x,
        };
        let date = |start: i64| IndexValue::Date { start, end: start };
        let values = [
            string(""),
            string("a"),
            string("ab"),
            string("abcdefgh"),
            string("abcdefghij"),
            string("abcdefgi"),
            string("b"),
            string("é"),
            number(f64::NEG_INFINITY),
            number(-2.5),
            number(-0.0),
            number(0.0),
            number(1e-300),
            number(3.0),
            number(f64::INFINITY),
            date(i64::MIN),
            date(-1),
            date(0),
            date(1_700_000_000_000_000),
        ];
        let natural = |x: &IndexValue, y: &IndexValue| match (x, y) {
            (
                IndexValue::String { normalized: a, .. },
                IndexValue::String { normalized: b, .. },
            ) => Some(a.as_bytes().cmp(b.as_bytes())),
            (IndexValue::Number { value: a, .. }, IndexValue::Number { value: b, .. }) => {
                Some(a.total_cmp(b))
            }
            (IndexValue::Date { start: a, .. }, IndexValue::Date { start: b, .. }) => {
                Some(a.cmp(b))
            }
            _ => None,
        };
        for x in &values {
            for y in &values {
                let Some(order) = natural(x, y) else { continue };
                let (a, b) = (value_prefix(x), value_prefix(y));
                if a != b {
                    assert_eq!(a.cmp(&b), order, "{x:?} against {y:?}");
                }
            }
        }
        // Parameters sharing their first eight bytes share a key part; others differ.
        assert_eq!(text_prefix("address-city"), text_prefix("address-state"));
        assert!(text_prefix("family") < text_prefix("given"));
    }
}
