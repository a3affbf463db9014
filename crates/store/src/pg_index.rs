//! PostgreSQL index-row inserts, one statement per index table per written version: the
//! rows' columns go as arrays and `UNNEST` turns them back into rows. A resource has tens of
//! index rows; sending them as one statement per table instead of one per row divides the
//! statements the server parses and executes on ingest by about five.

use tokio_postgres::types::ToSql;

use crate::index::{IndexRow, IndexValue};

/// One statement: its text and its parameters (`$1` = rid, `$2` = resource type, then the
/// column arrays).
pub(crate) struct Insert {
    pub text: &'static str,
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

#[derive(Default)]
struct Common {
    param: Vec<String>,
    grp: Vec<Option<i64>>,
}

impl Common {
    fn push(&mut self, row: &IndexRow) {
        self.param.push(row.param.clone());
        self.grp.push(row.group.map(i64::from));
    }
}

/// The inserts for `rows` of resource `rid` (none for a table without rows).
pub(crate) fn inserts(rid: i64, resource_type: &str, rows: &[IndexRow]) -> Vec<Insert> {
    let mut string = (Common::default(), Vec::new(), Vec::new());
    let mut token = (
        Common::default(),
        Vec::new(),
        Vec::new(),
        Vec::<Option<String>>::new(),
    );
    let mut reference = (
        Common::default(),
        Vec::<Option<String>>::new(),
        Vec::<Option<String>>::new(),
        Vec::new(),
    );
    let mut date = (Common::default(), Vec::new(), Vec::new());
    let mut number = (Common::default(), Vec::new(), Vec::new(), Vec::new());
    let mut quantity = (
        Common::default(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut uri = (Common::default(), Vec::new());
    for row in rows {
        match &row.value {
            IndexValue::String { normalized, exact } => {
                string.0.push(row);
                string.1.push(normalized.clone());
                string.2.push(exact.clone());
            }
            IndexValue::Token {
                system,
                code,
                display,
            } => {
                token.0.push(row);
                token.1.push(system.clone());
                token.2.push(code.clone());
                token.3.push(display.clone());
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => {
                reference.0.push(row);
                reference.1.push(target_type.clone());
                reference.2.push(target_id.clone());
                reference.3.push(url.clone());
            }
            IndexValue::Date { start, end } => {
                date.0.push(row);
                date.1.push(*start);
                date.2.push(*end);
            }
            IndexValue::Number { value, low, high } => {
                number.0.push(row);
                number.1.push(*value);
                number.2.push(*low);
                number.3.push(*high);
            }
            IndexValue::Quantity {
                system,
                code,
                unit,
                value,
                low,
                high,
            } => {
                quantity.0.push(row);
                quantity.1.push(system.clone());
                quantity.2.push(code.clone());
                quantity.3.push(unit.clone());
                quantity.4.push(*value);
                quantity.5.push(*low);
                quantity.6.push(*high);
            }
            IndexValue::Uri { uri: u } => {
                uri.0.push(row);
                uri.1.push(u.clone());
            }
        }
    }
    let mut out = Vec::new();
    let head = |c: Common| -> Vec<Box<dyn ToSql + Sync + Send>> {
        vec![
            Box::new(rid),
            Box::new(resource_type.to_owned()),
            Box::new(c.param),
            Box::new(c.grp),
        ]
    };
    if !string.1.is_empty() {
        let mut params = head(string.0);
        params.push(Box::new(string.1));
        params.push(Box::new(string.2));
        out.push(Insert {
            text: "INSERT INTO idx_string (rid, res_type, param, grp, value_norm, value_exact) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[]) AS u",
            params,
        });
    }
    if !token.1.is_empty() {
        let mut params = head(token.0);
        params.push(Box::new(token.1));
        params.push(Box::new(token.2));
        params.push(Box::new(token.3));
        out.push(Insert {
            text: "INSERT INTO idx_token (rid, res_type, param, grp, system, code, display) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[], $7::text[]) AS u",
            params,
        });
    }
    if !reference.3.is_empty() {
        let mut params = head(reference.0);
        params.push(Box::new(reference.1));
        params.push(Box::new(reference.2));
        params.push(Box::new(reference.3));
        out.push(Insert {
            text: "INSERT INTO idx_reference (rid, res_type, param, grp, target_type, target_id, url) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[], $7::text[]) AS u",
            params,
        });
    }
    if !date.1.is_empty() {
        let mut params = head(date.0);
        params.push(Box::new(date.1));
        params.push(Box::new(date.2));
        out.push(Insert {
            text: "INSERT INTO idx_date (rid, res_type, param, grp, lo, hi) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::int8[], $6::int8[]) AS u",
            params,
        });
    }
    if !number.1.is_empty() {
        let mut params = head(number.0);
        params.push(Box::new(number.1));
        params.push(Box::new(number.2));
        params.push(Box::new(number.3));
        out.push(Insert {
            text: "INSERT INTO idx_number (rid, res_type, param, grp, value, lo, hi) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::float8[], $6::float8[], $7::float8[]) AS u",
            params,
        });
    }
    if !quantity.1.is_empty() {
        let mut params = head(quantity.0);
        params.push(Box::new(quantity.1));
        params.push(Box::new(quantity.2));
        params.push(Box::new(quantity.3));
        params.push(Box::new(quantity.4));
        params.push(Box::new(quantity.5));
        params.push(Box::new(quantity.6));
        out.push(Insert {
            text: "INSERT INTO idx_quantity (rid, res_type, param, grp, system, code, unit, value, lo, hi) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::text[], $7::text[], \
                   $8::float8[], $9::float8[], $10::float8[]) AS u",
            params,
        });
    }
    if !uri.1.is_empty() {
        let mut params = head(uri.0);
        params.push(Box::new(uri.1));
        out.push(Insert {
            text: "INSERT INTO idx_uri (rid, res_type, param, grp, uri) \
                   SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::int8[], $5::text[]) AS u",
            params,
        });
    }
    out
}
