//! The SQLite backend's numbers for the resource types and parameter names of its index
//! tables (`search_name`, migration 9).
//!
//! An index row names its resource type and parameter by number, so that each value-index
//! entry leads with two one-byte numbers instead of two strings. A name gets its number the
//! first time a row under it is written, in that write's transaction, and keeps it: names are
//! never renumbered or removed. Readers look a name up in their own snapshot; a name nothing
//! was ever written under has no number and matches no row ([`UNKNOWN`]).
//!
//! The search SQL is shared with PostgreSQL, whose index tables keep the names as text: a
//! query binds such a name as [`SqlParam::Name`](crate::sql::SqlParam::Name), which the
//! PostgreSQL backend binds as text and this one as its number ([`bound`]).

use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension};

use crate::error::StoreError;
use crate::sql::SqlParam;

/// The number a name without one is bound as: no row has it (numbers start at 1).
pub(crate) const UNKNOWN: i64 = 0;

const SELECT: &str = "SELECT id FROM search_name WHERE name = ?1";

/// The number of `name` as `conn`'s snapshot has it, or [`UNKNOWN`].
pub(crate) fn number(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(SELECT)?
        .query_row([name], |r| r.get(0))
        .optional()?
        .unwrap_or(UNKNOWN))
}

/// `params` as SQLite binds them: text borrowed, names as their numbers (each name looked up
/// once, however often the query repeats it).
pub(crate) fn bound<'p>(
    conn: &Connection,
    params: &'p [SqlParam],
) -> Result<Vec<ToSqlOutput<'p>>, StoreError> {
    let mut numbers: Vec<(&str, i64)> = Vec::new();
    params
        .iter()
        .map(|p| {
            Ok(match p {
                SqlParam::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
                SqlParam::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
                SqlParam::Float(v) => ToSqlOutput::Owned(Value::Real(*v)),
                SqlParam::Name(v) => {
                    let n = match numbers.iter().find(|(name, _)| name == v) {
                        Some(&(_, n)) => n,
                        None => {
                            let n = number(conn, v)?;
                            numbers.push((v, n));
                            n
                        }
                    };
                    ToSqlOutput::Owned(Value::Integer(n))
                }
            })
        })
        .collect()
}

/// The names a write transaction has looked up or numbered, so that each is asked of the
/// database once per transaction. Forgotten when a savepoint is rolled back (a name numbered
/// inside it is gone again) and with the transaction.
#[derive(Debug, Default)]
pub(crate) struct WriteNames(HashMap<String, i64>);

impl WriteNames {
    /// The number of `name`, numbering it in `tx` if it has none yet.
    pub(crate) fn number(&mut self, tx: &Connection, name: &str) -> Result<i64, StoreError> {
        if let Some(&id) = self.0.get(name) {
            return Ok(id);
        }
        let id = match number(tx, name)? {
            UNKNOWN => {
                tx.prepare_cached("INSERT INTO search_name (name) VALUES (?1)")?
                    .execute([name])?;
                tx.last_insert_rowid()
            }
            id => id,
        };
        self.0.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Forgets every name (the savepoint that may have numbered some was rolled back).
    pub(crate) fn forget(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE search_name (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        )
        .unwrap();
        c
    }

    #[test]
    fn a_name_is_numbered_once_and_keeps_its_number() {
        let c = database();
        let mut names = WriteNames::default();
        let patient = names.number(&c, "Patient").unwrap();
        let family = names.number(&c, "family").unwrap();
        assert_ne!(patient, family);
        assert!(patient > UNKNOWN && family > UNKNOWN);
        // Another transaction finds the same numbers in the table.
        let mut later = WriteNames::default();
        assert_eq!(later.number(&c, "family").unwrap(), family);
        assert_eq!(number(&c, "Patient").unwrap(), patient);
    }

    #[test]
    fn a_name_never_written_binds_as_a_number_no_row_has() {
        let c = database();
        WriteNames::default().number(&c, "Patient").unwrap();
        let params = [
            SqlParam::Name("Patient".into()),
            SqlParam::Name("nothing-under-this".into()),
            SqlParam::Text("Patient".into()),
        ];
        let bound = bound(&c, &params).unwrap();
        assert_eq!(
            bound,
            [
                ToSqlOutput::Owned(Value::Integer(1)),
                ToSqlOutput::Owned(Value::Integer(UNKNOWN)),
                ToSqlOutput::Borrowed(ValueRef::Text(b"Patient")),
            ]
        );
    }

    #[test]
    fn a_name_numbered_in_a_rolled_back_savepoint_is_numbered_again() {
        let mut c = database();
        let tx = c.transaction().unwrap();
        let mut names = WriteNames::default();
        names.number(&tx, "Patient").unwrap();
        tx.execute_batch("SAVEPOINT entry").unwrap();
        let given = names.number(&tx, "given").unwrap();
        tx.execute_batch("ROLLBACK TO entry; RELEASE entry")
            .unwrap();
        names.forget();
        assert_eq!(number(&tx, "given").unwrap(), UNKNOWN);
        let again = names.number(&tx, "given").unwrap();
        assert_eq!(number(&tx, "given").unwrap(), again);
        assert_eq!(again, given);
        tx.commit().unwrap();
    }
}
