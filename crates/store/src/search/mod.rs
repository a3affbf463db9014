//! FHIR search: the parsed form of a search ([`SearchQuery`]), its parser, the SQL it becomes on
//! both backends, and `_include` / `_revinclude` resolution.
//!
//! # Layout
//! - this file: the query model (filters, sort keys, paging cursor, result parameters) and URL
//!   query-string decoding;
//! - [`parse`](self::parse)-private: parameters -> [`SearchQuery`], following the R4 search grammar
//!   (prefixes, modifiers, chains, `_has`, composites, comma = OR, repetition = AND);
//! - `build`: [`SearchQuery`] -> SQL over the index tables, one text for both backends;
//! - [`include`]: `_include`, `_revinclude` (and `:iterate`) over [`crate::Store::search`].
//!
//! Every filter becomes `rid IN (SELECT rid FROM idx_<type> WHERE res_type = ? AND param = ? AND
//! ...)` (or `NOT IN` for negations), so each condition is answered from the `(res_type, param,
//! value)` indexes; chains and `_has` nest the same shape through `idx_reference`.

mod build;
pub mod include;
mod parse;
mod values;

use std::collections::BTreeMap;

pub(crate) use build::{KeyType, PageSql, count_sql, matches_sql, page_sql};
pub use values::{
    DateCondition, NumberCondition, Prefix, QuantityCondition, StringMode, TokenMatch, UriMode,
};

use crate::error::StoreError;
use crate::index::{IndexExtractor, ParamType};
use crate::model::StoredResource;

/// Default page size when `_count` is absent.
pub const DEFAULT_COUNT: usize = 50;
/// Largest accepted `_count`.
pub const MAX_COUNT: usize = 1000;

/// The `meta.tag` system of the EMPI's golden Patients: a golden record's `link` rows name the
/// sources of one person, which `:mdm` and a person-level `$everything` expand to (see
/// [`ValueMatch::Linked`] and `linked` of [`Filter::Compartment`]).
pub const GOLDEN_TAG_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/empi";
/// The `meta.tag` code of the EMPI's golden Patients.
pub const GOLDEN_TAG_CODE: &str = "golden";

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// `None` for a system-wide search (or `$everything`).
    pub resource_type: Option<String>,
    /// For a system-wide search: only these types (`_type`); empty = all.
    pub types: Vec<String>,
    /// All must match (AND).
    pub filters: Vec<Filter>,
    /// `_sort` keys, most significant first; ties are broken by insertion order.
    pub sort: Vec<SortKey>,
    pub count: usize,
    /// Keyset cursor from a previous page's [`SearchPage::next`].
    pub after: Option<Cursor>,
    pub total: TotalMode,
    pub include: Vec<Include>,
    pub revinclude: Vec<Include>,
    pub summary: Summary,
    /// `_elements`: top-level element names to keep (empty = all).
    pub elements: Vec<String>,
    /// Parameters ignored under lenient handling.
    pub ignored: Vec<String>,
    /// (resource type, parameter) of the derived parameters the query names, with the
    /// parameters whose rows answer them ([`crate::ParamDef::stored_as`]).
    pub stored_as: BTreeMap<(String, String), Vec<String>>,
}

/// One search condition. A [`Filter::Param`]'s values are alternatives (OR).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `_id` (negated by `:not`).
    Id { ids: Vec<String>, negate: bool },
    /// `_lastUpdated`.
    LastUpdated(Vec<DateCondition>),
    /// A value condition on an indexed parameter.
    Param {
        param: String,
        values: Vec<ValueMatch>,
        /// `:not`: the resource has no value matching any of `values`.
        negate: bool,
    },
    /// `:missing=true|false`.
    Missing {
        param: String,
        kind: ParamType,
        missing: bool,
    },
    /// A chained parameter `ref.param=...`: a reference of `param` points at a resource of one
    /// of the target types that matches the inner filters.
    Chain {
        param: String,
        targets: Vec<(String, Vec<Filter>)>,
    },
    /// Reverse chaining `_has:Type:param:...`: some `source_type` resource refers to this one
    /// through `param` and matches `inner`.
    Has {
        source_type: String,
        param: String,
        inner: Vec<Filter>,
    },
    /// Membership of a compartment (`/Patient/123/Condition`, `$everything`): the resource
    /// refers to the owner through one of its type's compartment parameters, or (when
    /// `include_owner`) is the owner itself, or (when `referenced`) is of a type outside the
    /// compartment and referred to by such a member or the owner (the practitioners,
    /// organisations, locations and medications of `$everything`, each once, and paged like
    /// the members).
    Compartment {
        owner_type: String,
        owner_id: String,
        /// `(resource type, its compartment parameters)`.
        params: Vec<(String, Vec<String>)>,
        include_owner: bool,
        referenced: bool,
        /// The owner stands for its person (`_mdm=true`, or a golden record's `$everything`):
        /// the owner, the golden Patients that list it (or it, when golden) and every source
        /// they list, read from the golden records' `link` rows when the query runs.
        linked: bool,
    },
}

/// One alternative value of a parameter, in the shape of its type.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatch {
    String {
        value: String,
        mode: StringMode,
    },
    Token(TokenMatch),
    /// `:text` on a token: the display or text contains the words (case-insensitive).
    TokenText(String),
    Reference {
        target_type: Option<String>,
        id: Option<String>,
        /// An absolute or canonical URL, matched as written (canonical `|version` included).
        url: Option<String>,
    },
    /// `:identifier` on a reference.
    ReferenceIdentifier(TokenMatch),
    /// `:mdm` on a reference (HAPI FHIR's MDM convention): a reference to `Patient/[id]` or to
    /// any Patient of its person, i.e. `id`, the golden Patients whose `link` names it (or
    /// `id` itself when golden) and every source those list, read from the stored links when
    /// the query runs.
    Linked {
        id: String,
    },
    Date(DateCondition),
    Number(NumberCondition),
    Quantity(QuantityCondition),
    Uri {
        value: String,
        mode: UriMode,
    },
    /// One value per component of a composite parameter, matched on one composite item.
    Composite(Vec<ValueMatch>),
}

/// A `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// `_id`, `_lastUpdated` or a parameter code.
    pub param: String,
    pub kind: ParamType,
    pub descending: bool,
}

/// Where the next page starts: the sort-key values and insertion key of the last row shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub keys: Vec<KeyValue>,
    pub rid: i64,
}

/// A sort-key value, as read back from the database.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Cursor {
    /// The opaque text form used in paging links.
    pub fn encode(&self) -> String {
        let mut parts: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| match k {
                KeyValue::Int(i) => serde_json::json!(i),
                KeyValue::Float(f) => serde_json::json!({ "f": f }),
                KeyValue::Text(s) => serde_json::json!(s),
            })
            .collect();
        parts.push(serde_json::json!(self.rid));
        serde_json::Value::Array(parts).to_string()
    }

    /// Parses [`Cursor::encode`]'s output (a bare number is a cursor without sort keys).
    pub fn decode(text: &str) -> Result<Cursor, StoreError> {
        let bad = || StoreError::Invalid(format!("malformed paging cursor '{text}'"));
        if let Ok(rid) = text.parse::<i64>() {
            return Ok(Cursor {
                keys: Vec::new(),
                rid,
            });
        }
        let serde_json::Value::Array(mut parts) = serde_json::from_str(text).map_err(|_| bad())?
        else {
            return Err(bad());
        };
        let rid = parts.pop().and_then(|v| v.as_i64()).ok_or_else(bad)?;
        let keys = parts
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(KeyValue::Text(s)),
                serde_json::Value::Number(n) => n.as_i64().map(KeyValue::Int).ok_or_else(bad),
                serde_json::Value::Object(o) => o
                    .get("f")
                    .and_then(serde_json::Value::as_f64)
                    .map(KeyValue::Float)
                    .ok_or_else(bad),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cursor { keys, rid })
    }
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotalMode {
    /// Exact when cheap (a single page), otherwise counted.
    #[default]
    Default,
    None,
    Estimate,
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Summary {
    #[default]
    False,
    True,
    Text,
    Data,
    Count,
}

/// An `_include` or `_revinclude`: `source_type:param[:target_type]`, `*` for any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// `None` for `*`.
    pub source_type: Option<String>,
    /// `None` for `*` (every reference parameter).
    pub param: Option<String>,
    pub target_type: Option<String>,
    pub iterate: bool,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub matches: Vec<StoredResource>,
    /// Number of matches over all pages, when asked for or cheap.
    pub total: Option<u64>,
    /// Cursor of the next page, if any (see [`Cursor::encode`]).
    pub next: Option<String>,
}

impl SearchQuery {
    /// A query matching every current resource of a type (or of all types).
    pub fn all(resource_type: Option<&str>) -> Self {
        SearchQuery {
            resource_type: resource_type.map(str::to_owned),
            count: DEFAULT_COUNT,
            ..Default::default()
        }
    }

    /// Parses decoded `name=value` pairs. `_format` and `_pretty` are ignored (the server handles
    /// them); unknown or unsupported parameters fail unless `lenient`.
    pub fn parse(
        resource_type: Option<&str>,
        params: &[(String, String)],
        extractor: &dyn IndexExtractor,
        lenient: bool,
    ) -> Result<SearchQuery, StoreError> {
        parse::parse(resource_type, params, extractor, lenient)
    }

    /// Parses `Type?name=value&...` (as in a conditional reference or `If-None-Exist`).
    pub fn parse_url(url: &str, extractor: &dyn IndexExtractor) -> Result<SearchQuery, StoreError> {
        let (ty, query) = url.split_once('?').ok_or_else(|| {
            StoreError::Invalid(format!("'{url}' is not a search URL (Type?params)"))
        })?;
        let ty = ty.trim_start_matches('/');
        if ty.is_empty() || !ty.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(StoreError::Invalid(format!(
                "'{url}' does not start with a resource type"
            )));
        }
        let q = SearchQuery::parse(Some(ty), &parse_query_string(query), extractor, false)?;
        if q.filters.is_empty() {
            return Err(StoreError::Invalid(format!(
                "'{url}' has no search criteria"
            )));
        }
        Ok(q)
    }

    /// `Patient/[owner_id]/$everything`'s page query: the patient, every resource of its
    /// compartment and every resource these refer to, as one set paged like any search, so
    /// that each resource comes once across all pages and `_type` narrows all of it.
    pub fn everything(owner_id: &str) -> SearchQuery {
        SearchQuery::everything_of(owner_id, false)
    }

    /// `$everything` of the owner's person when `linked` (a golden record, or `_mdm=true`):
    /// every Patient of its person as an owner, each one's compartment and what those refer
    /// to (see `linked` of [`Filter::Compartment`]); otherwise [`SearchQuery::everything`].
    pub fn everything_of(owner_id: &str, linked: bool) -> SearchQuery {
        let mut q = SearchQuery::all(None);
        if let Some(Filter::Compartment {
            owner_type,
            owner_id,
            params,
            include_owner,
            ..
        }) = SearchQuery::patient_compartment(owner_id, None, true)
        {
            q.filters.push(Filter::Compartment {
                owner_type,
                owner_id,
                params,
                include_owner,
                referenced: true,
                linked,
            });
        }
        q
    }

    /// The Patient-compartment filter of `owner_id` for `resource_type` (or for every type
    /// with compartment parameters when `None`), as used by compartment search and
    /// `$everything`. `None` when the type is not in the compartment.
    pub fn patient_compartment(
        owner_id: &str,
        resource_type: Option<&str>,
        include_owner: bool,
    ) -> Option<Filter> {
        let defs = fhir::r4();
        let params: Vec<(String, Vec<String>)> = defs
            .patient_compartment()
            .filter(|(t, p)| !p.is_empty() && resource_type.is_none_or(|rt| rt == *t))
            .map(|(t, p)| (t.to_owned(), p.to_vec()))
            .collect();
        (!params.is_empty() || include_owner).then(|| Filter::Compartment {
            owner_type: "Patient".into(),
            owner_id: owner_id.to_owned(),
            params,
            include_owner,
            referenced: false,
            linked: false,
        })
    }
}

/// Splits a URL query string into percent-decoded pairs. `+` is kept as a plus sign (FHIR
/// timezones such as `+01:00` are often sent unencoded).
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes (invalid escapes are kept as written).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%7Cb+c%zz%4"), "a|b+c%zz%4");
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            keys: vec![
                KeyValue::Int(0),
                KeyValue::Text("smith".into()),
                KeyValue::Float(1.5),
            ],
            rid: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert_eq!(Cursor::decode("7").unwrap().rid, 7);
        assert!(Cursor::decode("[\"x\"]").is_err());
        assert!(Cursor::decode("nonsense").is_err());
    }
}
