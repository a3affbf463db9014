//! Search-index rows and the pluggable extractor that produces them.
//!
//! The write path asks an [`IndexExtractor`] for the rows of each resource version and stores them
//! in the same transaction as the version (one table per search-parameter type, see
//! `docs/storage.md`). Rows always describe the *current* version: an update replaces them, a
//! delete removes them.
//!
//! This crate ships [`BasicExtractor`], which indexes only `identifier` (enough for conditional
//! operations and conditional references such as `Practitioner?identifier=system|value`). The
//! FHIRPath-driven extractor for every R4 search parameter plugs in here without schema changes.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde_json::{Value, json};

use crate::error::StoreError;
use crate::model::WriteEntry;

/// The type of a search parameter, as in `SearchParameter.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// A search parameter an extractor indexes (the CapabilityStatement lists these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamDef {
    pub name: String,
    pub kind: ParamType,
    pub documentation: String,
    /// The parameters whose index rows answer this one, when it has none of its own (a union
    /// of other parameters, as Observation's `combo-code` is of `code` and `component-code`),
    /// or only some (then the list names it too: `name` is `name,family,given`, its own rows
    /// holding what `family` and `given` do not); empty: its own rows.
    pub stored_as: Vec<String>,
}

/// One index value of one search parameter of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    /// The search parameter code (e.g. `identifier`, `birthdate`).
    pub param: String,
    /// Rows of the components of one composite value share a group number; `None` otherwise.
    pub group: Option<u32>,
    pub value: IndexValue,
}

/// An extracted value, in the shape of its index table.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `normalized`: lower-cased, accents and punctuation folded (default and `:contains` search);
    /// `exact`: as written (`:exact`).
    String {
        normalized: String,
        exact: String,
    },
    /// `system` and `code` (empty string when absent); `display` for `:text`.
    Token {
        system: String,
        code: String,
        display: Option<String>,
    },
    /// A reference: a local `Type/id` target, or just the `url` for absolute / canonical ones.
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: String,
    },
    /// The period an instant or date covers: `[start, end)` in µs since the epoch.
    Date {
        start: i64,
        end: i64,
    },
    /// A number with the `[low, high)` interval its precision implies.
    Number {
        value: f64,
        low: f64,
        high: f64,
    },
    /// A quantity (system, code and unit as written; canonical units are the extractor's job).
    Quantity {
        system: String,
        code: String,
        unit: String,
        value: f64,
        low: f64,
        high: f64,
    },
    Uri {
        uri: String,
    },
}

impl IndexValue {
    /// The row of a reference string: `Type/id` (relative, or absolute with a FHIR base, a
    /// `_history` suffix dropped) gives the target; anything else only the URL. `None` for a
    /// local (`#...`) or empty reference.
    pub fn reference(reference: &str) -> Option<IndexValue> {
        if reference.starts_with('#') || reference.is_empty() {
            return None;
        }
        let path = reference.split(['?', '|']).next().unwrap_or(reference);
        let mut segments: Vec<&str> = path.split('/').collect();
        if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
            segments.truncate(segments.len() - 2);
        }
        let n = segments.len();
        let typed = (n >= 2)
            .then(|| (segments[n - 2], segments[n - 1]))
            .filter(|(t, id)| fhir::r4().is_concrete_resource(t) && !id.is_empty());
        Some(IndexValue::Reference {
            target_type: typed.map(|(t, _)| t.to_string()),
            target_id: typed.map(|(_, id)| id.to_string()),
            url: reference.to_string(),
        })
    }
}

/// The entries of one transaction by `fullUrl`, as far as extracting index rows before the
/// write needs them: their resource types (search parameters such as
/// `subject.where(resolve() is Patient)` depend on the type a reference points to).
#[derive(Debug, Default, Clone)]
pub struct FullUrlTypes {
    /// `fullUrl` -> a stub resource of the entry's type.
    stubs: HashMap<String, Value>,
}

impl FullUrlTypes {
    /// Records that `full_url` names a resource of type `resource_type`.
    pub fn insert(&mut self, full_url: &str, resource_type: &str) {
        self.stubs.insert(
            full_url.to_owned(),
            json!({ "resourceType": resource_type }),
        );
    }

    /// A stub of the resource `full_url` names (only its `resourceType`).
    pub fn stub(&self, full_url: &str) -> Option<&Value> {
        self.stubs.get(full_url)
    }

    pub fn is_empty(&self) -> bool {
        self.stubs.is_empty()
    }
}

/// Index rows extracted before a transaction rewrote the resource's references (`map`:
/// reference as written -> `Type/id`, as `refs::rewrite` applies it), brought up to date: a
/// reference row whose URL was rewritten becomes the row of its new value. Valid for rows from
/// [`IndexExtractor::extract_in_transaction`] given the transaction's `fullUrl` types, and only
/// when every string naming an entry is a `reference` (the store checks this first with
/// `refs::names_entry_outside_references`: a `canonical` holding a `fullUrl` is indexed as a
/// reference row too, yet is not rewritten); other rows do not depend on reference strings.
pub(crate) fn rewrite_reference_rows(rows: &mut Vec<IndexRow>, map: &HashMap<String, String>) {
    let mut changed = false;
    for row in rows.iter_mut() {
        if let IndexValue::Reference { url, .. } = &row.value
            && let Some(to) = map.get(url.as_str())
            && let Some(value) = IndexValue::reference(to)
        {
            row.value = value;
            changed = true;
        }
    }
    // `urn:uuid:x` and the `Patient/1` it becomes may both be written in one resource.
    if changed {
        dedup(rows);
    }
}

/// Extracts the index rows of every write that has none yet, before the write reaches the
/// store's single writer, so that one large resource's extraction runs beside other writes
/// rather than ahead of them. The writes' `fullUrl`s are given to the extractor with their
/// types, as [`WriteEntry::index`] requires; the store rewrites the reference rows once it
/// knows the ids, and extracts again where a conditional reference is resolved. A resource
/// that fails extraction is left without rows: the write reports the error.
pub fn extract_ahead(extractor: &dyn IndexExtractor, entries: &mut [WriteEntry]) {
    fn type_of(resource: &Value) -> Option<&str> {
        resource.get("resourceType").and_then(Value::as_str)
    }
    let mut types = FullUrlTypes::default();
    for entry in entries.iter() {
        if let (Some(url), Some(ty)) = (&entry.full_url, entry.op.resource().and_then(type_of)) {
            types.insert(url, ty);
        }
    }
    for entry in entries.iter_mut().filter(|e| e.index.is_none()) {
        let Some(resource) = entry.op.resource() else {
            continue;
        };
        let Some(ty) = type_of(resource) else {
            continue;
        };
        if let Ok(rows) = extractor.extract_in_transaction(ty, resource, &types) {
            entry.index = Some(rows);
        }
    }
}

/// Whether [`extract_ahead`] has work to do on `entries`.
pub(crate) fn needs_extraction(entries: &[WriteEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.index.is_none() && e.op.resource().is_some())
}

/// Drops repeated identical rows (the same code reached through two paths; composite
/// components, whose groups tell them apart, stay), keeping the first of each. Linear in the
/// number of rows: a resource with 64,000 identifiers must not cost 64,000² comparisons.
pub(crate) fn dedup(rows: &mut Vec<IndexRow>) {
    let mut seen: HashSet<RowKey<'_>> = HashSet::with_capacity(rows.len());
    let keep: Vec<bool> = rows
        .iter()
        .map(|row| row.group.is_some() || seen.insert(RowKey(row)))
        .collect();
    drop(seen);
    let mut keep = keep.into_iter();
    rows.retain(|_| keep.next().unwrap_or(true));
}

/// An ungrouped row as a hash-set key: equal exactly when the rows are `==` (so a `NaN` number
/// never equals anything, as with `PartialEq`), with a hash that agrees (`-0.0` hashes as `0.0`).
pub(crate) struct RowKey<'a>(pub(crate) &'a IndexRow);

impl PartialEq for RowKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for RowKey<'_> {}

impl Hash for RowKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        fn float<H: Hasher>(x: f64, state: &mut H) {
            // `0.0 == -0.0`, so both must hash alike.
            let x = if x == 0.0 { 0.0 } else { x };
            x.to_bits().hash(state);
        }
        let row = self.0;
        row.param.hash(state);
        std::mem::discriminant(&row.value).hash(state);
        match &row.value {
            IndexValue::String { normalized, exact } => {
                normalized.hash(state);
                exact.hash(state);
            }
            IndexValue::Token {
                system,
                code,
                display,
            } => {
                system.hash(state);
                code.hash(state);
                display.hash(state);
            }
            IndexValue::Reference {
                target_type,
                target_id,
                url,
            } => {
                target_type.hash(state);
                target_id.hash(state);
                url.hash(state);
            }
            IndexValue::Date { start, end } => {
                start.hash(state);
                end.hash(state);
            }
            IndexValue::Number { value, low, high } => {
                float(*value, state);
                float(*low, state);
                float(*high, state);
            }
            IndexValue::Quantity {
                system,
                code,
                unit,
                value,
                low,
                high,
            } => {
                system.hash(state);
                code.hash(state);
                unit.hash(state);
                float(*value, state);
                float(*low, state);
                float(*high, state);
            }
            IndexValue::Uri { uri } => uri.hash(state),
        }
    }
}

/// Produces the index rows of a resource: once per written version, inside the write
/// transaction, unless the caller extracted them ahead (`extract_in_transaction`, on the
/// caller's task). It must be pure and fast.
pub trait IndexExtractor: Send + Sync + std::fmt::Debug {
    /// The rows of `resource` (a JSON object of type `resource_type`). An error rejects the write.
    fn extract(&self, resource_type: &str, resource: &Value) -> Result<Vec<IndexRow>, StoreError>;

    /// The rows of a resource of a transaction whose references may still name other entries
    /// by `fullUrl` (`urn:uuid:...`), for a caller that extracts before the write
    /// ([`crate::WriteEntry::with_index`]): `full_urls` gives those entries' types, and the
    /// store rewrites the rows' reference values when it assigns the ids. An extractor whose
    /// rows never depend on what a reference points to need not override this.
    fn extract_in_transaction(
        &self,
        resource_type: &str,
        resource: &Value,
        full_urls: &FullUrlTypes,
    ) -> Result<Vec<IndexRow>, StoreError> {
        let _ = full_urls;
        self.extract(resource_type, resource)
    }

    /// The search parameters this extractor indexes for `resource_type`.
    fn parameters(&self, resource_type: &str) -> Vec<ParamDef>;

    /// One of [`Self::parameters`], by code (what parsing a search asks for each parameter it
    /// meets; implementations with many parameters answer it without listing them all).
    fn parameter(&self, resource_type: &str, code: &str) -> Option<ParamDef> {
        self.parameters(resource_type)
            .into_iter()
            .find(|p| p.name == code)
    }
}

/// Indexes the `identifier` token (top-level `identifier`, single or repeated) of every resource.
#[derive(Debug, Default, Clone, Copy)]
pub struct BasicExtractor;

impl IndexExtractor for BasicExtractor {
    fn extract(&self, _resource_type: &str, resource: &Value) -> Result<Vec<IndexRow>, StoreError> {
        let mut rows = Vec::new();
        let identifiers = match resource.get("identifier") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => Vec::new(),
        };
        for ident in identifiers {
            let system = ident.get("system").and_then(Value::as_str).unwrap_or("");
            let Some(code) = ident.get("value").and_then(Value::as_str) else {
                continue;
            };
            rows.push(IndexRow {
                param: "identifier".into(),
                group: None,
                value: IndexValue::Token {
                    system: system.into(),
                    code: code.into(),
                    display: None,
                },
            });
        }
        Ok(rows)
    }

    fn parameters(&self, _resource_type: &str) -> Vec<ParamDef> {
        vec![ParamDef {
            name: "identifier".into(),
            kind: ParamType::Token,
            documentation: "The resource's top-level business identifier (system|value)".into(),
            stored_as: Vec::new(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(param: &str, code: &str, group: Option<u32>) -> IndexRow {
        IndexRow {
            param: param.into(),
            group,
            value: IndexValue::Token {
                system: "urn:s".into(),
                code: code.into(),
                display: None,
            },
        }
    }

    fn number(value: f64) -> IndexRow {
        IndexRow {
            param: "n".into(),
            group: None,
            value: IndexValue::Number {
                value,
                low: value,
                high: value,
            },
        }
    }

    #[test]
    fn dedup_keeps_the_first_of_each_and_every_grouped_row() {
        let mut rows = vec![
            token("identifier", "1", None),
            token("identifier", "2", None),
            token("identifier", "1", None),
            token("code", "1", None),
            token("component", "1", Some(0)),
            token("component", "1", Some(0)),
            token("identifier", "2", None),
        ];
        dedup(&mut rows);
        assert_eq!(
            rows,
            vec![
                token("identifier", "1", None),
                token("identifier", "2", None),
                token("code", "1", None),
                token("component", "1", Some(0)),
                token("component", "1", Some(0)),
            ]
        );
    }

    #[test]
    fn dedup_treats_numbers_as_partial_eq_does() {
        let mut rows = vec![
            number(0.0),
            number(-0.0),
            number(f64::NAN),
            number(f64::NAN),
        ];
        dedup(&mut rows);
        // 0.0 == -0.0; NaN equals nothing, so both NaN rows stay.
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn dedup_of_many_repetitions_keeps_the_distinct_ones() {
        let mut rows: Vec<IndexRow> = (0..100_000)
            .map(|i| token("identifier", &(i % 50_000).to_string(), None))
            .collect();
        dedup(&mut rows);
        assert_eq!(rows.len(), 50_000);
        assert_eq!(rows[49_999], token("identifier", "49999", None));
    }
}
