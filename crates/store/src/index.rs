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

use serde_json::Value;

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

/// Produces the index rows of a resource. Called once per written version, inside the write
/// transaction; it must be pure and fast.
pub trait IndexExtractor: Send + Sync + std::fmt::Debug {
    /// The rows of `resource` (a JSON object of type `resource_type`). An error rejects the write.
    fn extract(&self, resource_type: &str, resource: &Value) -> Result<Vec<IndexRow>, StoreError>;

    /// The search parameters this extractor indexes for `resource_type`.
    fn parameters(&self, resource_type: &str) -> Vec<ParamDef>;
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
        }]
    }
}
