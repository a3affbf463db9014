//! Search queries: parsing FHIR search parameters into a [`SearchQuery`], and turning a query into
//! SQL shared by both backends.
//!
//! This issue supports `_id`, `_lastUpdated` (with the `eq ne gt lt ge le` prefixes and date
//! precision ranges), the token parameters the [`IndexExtractor`] declares (`identifier` with the
//! basic extractor: `system|code`, `|code`, `system|`, `code`), `_count` and keyset paging
//! (`_cursor`). Comma is OR, a repeated parameter is AND. Anything else is an error unless the
//! caller asked for lenient handling, in which case it is ignored (and reported back).

use crate::error::StoreError;
use crate::index::{IndexExtractor, ParamType};
use crate::model::StoredResource;
use crate::sql::{Sql, SqlParam};
use crate::time;

/// Default page size when `_count` is absent.
pub const DEFAULT_COUNT: usize = 50;
/// Largest accepted `_count`.
pub const MAX_COUNT: usize = 1000;

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// `None` for a system-wide search.
    pub resource_type: Option<String>,
    /// All must match (AND).
    pub filters: Vec<Filter>,
    pub count: usize,
    /// Keyset cursor from a previous page's [`SearchPage::next`].
    pub after: Option<i64>,
    /// Parameters ignored under lenient handling.
    pub ignored: Vec<String>,
}

/// One search parameter occurrence; its values are alternatives (OR).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Id(Vec<String>),
    LastUpdated(Vec<DateCondition>),
    Token {
        param: String,
        values: Vec<TokenMatch>,
    },
}

/// A date comparison: `prefix` against the range `[start, end)` the value's precision covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateCondition {
    pub prefix: Prefix,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

/// A token value: `system|code`, `|code` (no system: `Some("")`), `system|`, or `code` (any system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub matches: Vec<StoredResource>,
    /// Number of matches over all pages.
    pub total: u64,
    /// Cursor of the next page, if any.
    pub next: Option<i64>,
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
        let mut q = SearchQuery::all(resource_type);
        let declared = resource_type
            .map(|t| extractor.parameters(t))
            .unwrap_or_default();
        for (name, value) in params {
            let (code, modifier) = match name.split_once(':') {
                Some((c, m)) => (c, Some(m)),
                None => (name.as_str(), None),
            };
            let unsupported = |what: &str| -> Result<(), StoreError> {
                if lenient {
                    Ok(())
                } else {
                    Err(StoreError::Invalid(format!(
                        "{what} search parameter '{name}'{}",
                        resource_type
                            .map(|t| format!(" for {t}"))
                            .unwrap_or_default()
                    )))
                }
            };
            if modifier.is_some() && !code.starts_with('_') {
                unsupported("unsupported modifier in")?;
                q.ignored.push(name.clone());
                continue;
            }
            match (code, modifier) {
                ("_format" | "_pretty", _) => {}
                ("_count", None) => {
                    let n: usize = value.parse().map_err(|_| {
                        StoreError::Invalid(format!(
                            "_count must be a non-negative integer, not '{value}'"
                        ))
                    })?;
                    q.count = n.min(MAX_COUNT);
                }
                ("_cursor", None) => {
                    q.after = Some(value.parse().map_err(|_| {
                        StoreError::Invalid(format!("malformed paging cursor '{value}'"))
                    })?);
                }
                ("_id", None) => {
                    q.filters
                        .push(Filter::Id(value.split(',').map(str::to_owned).collect()));
                }
                ("_lastUpdated", None) => {
                    let conds = value
                        .split(',')
                        .map(parse_date_condition)
                        .collect::<Result<Vec<_>, _>>()?;
                    q.filters.push(Filter::LastUpdated(conds));
                }
                (c, None)
                    if declared
                        .iter()
                        .any(|p| p.name == c && p.kind == ParamType::Token) =>
                {
                    let values = split_unescaped(value, ',')
                        .into_iter()
                        .map(|v| parse_token(&v))
                        .collect();
                    q.filters.push(Filter::Token {
                        param: c.to_owned(),
                        values,
                    });
                }
                _ => {
                    unsupported("unknown or unsupported")?;
                    q.ignored.push(name.clone());
                }
            }
        }
        Ok(q)
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
}

fn parse_date_condition(v: &str) -> Result<DateCondition, StoreError> {
    let (prefix, rest) = match v.get(..2) {
        Some("eq") => (Prefix::Eq, &v[2..]),
        Some("ne") => (Prefix::Ne, &v[2..]),
        Some("gt") => (Prefix::Gt, &v[2..]),
        Some("lt") => (Prefix::Lt, &v[2..]),
        Some("ge") => (Prefix::Ge, &v[2..]),
        Some("le") => (Prefix::Le, &v[2..]),
        _ => (Prefix::Eq, v),
    };
    let (start, end) = time::parse_range(rest)
        .ok_or_else(|| StoreError::Invalid(format!("malformed date '{v}' in _lastUpdated")))?;
    Ok(DateCondition { prefix, start, end })
}

fn parse_token(v: &str) -> TokenMatch {
    match find_unescaped(v, '|') {
        Some(i) => {
            let (s, c) = (&v[..i], &v[i + 1..]);
            TokenMatch {
                system: Some(unescape(s)),
                code: (!c.is_empty()).then(|| unescape(c)),
            }
        }
        None => TokenMatch {
            system: None,
            code: Some(unescape(v)),
        },
    }
}

fn find_unescaped(s: &str, sep: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == sep && !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = find_unescaped(rest, sep) {
        out.push(rest[..i].to_owned());
        rest = &rest[i + 1..];
    }
    out.push(rest.to_owned());
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if c == '\\' && !escaped {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
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

/// The `WHERE` conditions (over `resource r`) of a query, without paging.
pub(crate) fn where_clause(q: &SearchQuery, sql: &mut Sql) -> String {
    let mut conds = vec!["r.deleted = FALSE".to_owned()];
    if let Some(t) = &q.resource_type {
        conds.push(format!(
            "r.res_type = {}",
            sql.bind(SqlParam::Text(t.clone()))
        ));
    }
    for f in &q.filters {
        let alts: Vec<String> = match f {
            Filter::Id(ids) => ids
                .iter()
                .map(|id| format!("r.res_id = {}", sql.bind(SqlParam::Text(id.clone()))))
                .collect(),
            Filter::LastUpdated(conds) => conds
                .iter()
                .map(|c| {
                    let mut at = |v: i64| sql.bind(SqlParam::Int(v));
                    match c.prefix {
                        Prefix::Eq => format!(
                            "(r.last_updated >= {} AND r.last_updated < {})",
                            at(c.start),
                            at(c.end)
                        ),
                        Prefix::Ne => format!(
                            "(r.last_updated < {} OR r.last_updated >= {})",
                            at(c.start),
                            at(c.end)
                        ),
                        Prefix::Gt => format!("r.last_updated >= {}", at(c.end)),
                        Prefix::Lt => format!("r.last_updated < {}", at(c.start)),
                        Prefix::Ge => format!("r.last_updated >= {}", at(c.start)),
                        Prefix::Le => format!("r.last_updated < {}", at(c.end)),
                    }
                })
                .collect(),
            Filter::Token { param, values } => {
                let p = sql.bind(SqlParam::Text(param.clone()));
                let alts: Vec<String> = values
                    .iter()
                    .map(|v| {
                        let mut c = Vec::new();
                        if let Some(s) = &v.system {
                            c.push(format!(
                                "t.system = {}",
                                sql.bind(SqlParam::Text(s.clone()))
                            ));
                        }
                        if let Some(code) = &v.code {
                            c.push(format!(
                                "t.code = {}",
                                sql.bind(SqlParam::Text(code.clone()))
                            ));
                        }
                        if c.is_empty() {
                            "TRUE".to_owned()
                        } else {
                            format!("({})", c.join(" AND "))
                        }
                    })
                    .collect();
                vec![format!(
                    "EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = r.rid AND t.param = {p} AND ({}))",
                    alts.join(" OR ")
                )]
            }
        };
        conds.push(format!("({})", alts.join(" OR ")));
    }
    conds.join(" AND ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BasicExtractor;

    fn pairs(q: &str) -> Vec<(String, String)> {
        parse_query_string(q)
    }

    #[test]
    fn tokens_follow_the_system_code_grammar() {
        let q = SearchQuery::parse(
            Some("Patient"),
            &pairs("identifier=http://x%7C1,%7C2,sys%7C,plain&_count=5"),
            &BasicExtractor,
            false,
        )
        .unwrap();
        assert_eq!(q.count, 5);
        let Filter::Token { values, .. } = &q.filters[0] else {
            panic!("token filter expected")
        };
        let t = |s: Option<&str>, c: Option<&str>| TokenMatch {
            system: s.map(Into::into),
            code: c.map(Into::into),
        };
        assert_eq!(
            values,
            &vec![
                t(Some("http://x"), Some("1")),
                t(Some(""), Some("2")),
                t(Some("sys"), None),
                t(None, Some("plain"))
            ]
        );
    }

    #[test]
    fn unknown_parameters_fail_unless_lenient() {
        let p = pairs("name=smith&_id=1");
        assert!(SearchQuery::parse(Some("Patient"), &p, &BasicExtractor, false).is_err());
        let q = SearchQuery::parse(Some("Patient"), &p, &BasicExtractor, true).unwrap();
        assert_eq!(q.ignored, vec!["name".to_owned()]);
        assert_eq!(q.filters, vec![Filter::Id(vec!["1".into()])]);
    }

    #[test]
    fn conditional_urls_need_a_type_and_criteria() {
        assert!(SearchQuery::parse_url("Patient?identifier=a|b", &BasicExtractor).is_ok());
        assert!(SearchQuery::parse_url("Patient?", &BasicExtractor).is_err());
        assert!(SearchQuery::parse_url("?identifier=a", &BasicExtractor).is_err());
        assert!(SearchQuery::parse_url("Patient/1", &BasicExtractor).is_err());
    }

    #[test]
    fn percent_decoding_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%7Cb+c%zz%4"), "a|b+c%zz%4");
    }
}
