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

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::error::StoreError;

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
    /// of other parameters, as Observation's `combo-code` is of `code` and `component-code`);
    /// empty: its own rows.
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

/// Drops repeated identical rows (the same code reached through two paths; composite
/// components, whose groups tell them apart, stay), keeping the first of each.
pub(crate) fn dedup(rows: &mut Vec<IndexRow>) {
    let mut seen: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        if rows[i].group.is_none() && seen.iter().any(|&j| rows[j] == rows[i]) {
            rows.remove(i);
        } else {
            seen.push(i);
            i += 1;
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
