//! Search values of each parameter type and their text grammar: prefixes, date precision
//! ranges, number precision intervals, `system|code` tokens and `number|system|code`
//! quantities, with `\` escapes for `,`, `|` and `$`.

use crate::error::StoreError;
use crate::extract::{UCUM, canonical_quantity, decimal_interval};
use crate::index::IndexValue;
use crate::time;

/// A comparison prefix (`eq` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Splits a leading prefix off `v` when what follows looks like a value of the type.
    pub(crate) fn split(v: &str) -> (Prefix, &str) {
        let prefix = match v.get(..2) {
            Some("eq") => Prefix::Eq,
            Some("ne") => Prefix::Ne,
            Some("gt") => Prefix::Gt,
            Some("lt") => Prefix::Lt,
            Some("ge") => Prefix::Ge,
            Some("le") => Prefix::Le,
            Some("sa") => Prefix::Sa,
            Some("eb") => Prefix::Eb,
            Some("ap") => Prefix::Ap,
            _ => return (Prefix::Eq, v),
        };
        let rest = &v[2..];
        if rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
        {
            (prefix, rest)
        } else {
            (Prefix::Eq, v)
        }
    }
}

/// A date comparison: `prefix` against the range `[start, end)` the value's precision covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateCondition {
    pub prefix: Prefix,
    pub start: i64,
    pub end: i64,
}

/// A number comparison: `value` with the `[low, high)` interval its precision implies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberCondition {
    pub prefix: Prefix,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// A quantity comparison. With a UCUM unit the comparison is made in canonical units against
/// the `:canonical` index rows; otherwise the number is compared as written and `system` /
/// `code` (matched against the code or the unit) restrict the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityCondition {
    pub number: NumberCondition,
    pub system: Option<String>,
    pub code: Option<String>,
    pub canonical: bool,
}

/// A token value: `system|code`, `|code` (no system: `Some("")`), `system|`, or `code` (any system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    pub system: Option<String>,
    pub code: Option<String>,
}

/// How a string value matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMode {
    /// Case- and accent-insensitive starts-with (the default).
    StartsWith,
    /// `:exact`: equal, as written.
    Exact,
    /// `:contains`: case- and accent-insensitive substring.
    Contains,
}

/// How a URI matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Exact,
    /// `:below`: the stored URI starts with the value.
    Below,
    /// `:above`: the value starts with the stored URI.
    Above,
}

pub(crate) fn invalid(msg: String) -> StoreError {
    StoreError::Invalid(msg)
}

pub(crate) fn parse_date(param: &str, v: &str) -> Result<DateCondition, StoreError> {
    let (prefix, rest) = Prefix::split(v);
    let (start, end) = time::parse_range(rest).ok_or_else(|| {
        invalid(format!(
            "malformed date '{v}' for search parameter '{param}' (expected e.g. ge2020-01-15)"
        ))
    })?;
    Ok(DateCondition { prefix, start, end })
}

pub(crate) fn parse_number(param: &str, v: &str) -> Result<NumberCondition, StoreError> {
    let (prefix, rest) = Prefix::split(v);
    let (value, low, high) = decimal_interval(rest).ok_or_else(|| {
        invalid(format!(
            "malformed number '{v}' for search parameter '{param}'"
        ))
    })?;
    Ok(NumberCondition {
        prefix,
        value,
        low,
        high,
    })
}

pub(crate) fn parse_quantity(param: &str, v: &str) -> Result<QuantityCondition, StoreError> {
    let parts = split_unescaped(v, '|');
    if parts.len() != 1 && parts.len() != 3 {
        return Err(invalid(format!(
            "malformed quantity '{v}' for search parameter '{param}' (expected [prefix]number[|system|code])"
        )));
    }
    let number = parse_number(param, &parts[0])?;
    let nonempty = |s: &String| (!s.is_empty()).then(|| unescape(s));
    let system = parts.get(1).and_then(nonempty);
    let code = parts.get(2).and_then(nonempty);
    if let Some(code) = &code
        && system.as_deref().is_none_or(|s| s == UCUM)
    {
        let stored = IndexValue::Quantity {
            system: UCUM.into(),
            code: code.clone(),
            unit: code.clone(),
            value: number.value,
            low: number.low,
            high: number.high,
        };
        if let Some(IndexValue::Quantity {
            code,
            value,
            low,
            high,
            ..
        }) = canonical_quantity(&stored)
        {
            return Ok(QuantityCondition {
                number: NumberCondition {
                    prefix: number.prefix,
                    value,
                    low,
                    high,
                },
                system: Some(UCUM.into()),
                code: Some(code),
                canonical: true,
            });
        }
    }
    Ok(QuantityCondition {
        number,
        system,
        code,
        canonical: false,
    })
}

pub(crate) fn parse_token(v: &str) -> TokenMatch {
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

pub(crate) fn find_unescaped(s: &str, sep: char) -> Option<usize> {
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

/// Splits at unescaped `sep`, keeping escapes (they are removed by [`unescape`] later).
pub(crate) fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = find_unescaped(rest, sep) {
        out.push(rest[..i].to_owned());
        rest = &rest[i + sep.len_utf8()..];
    }
    out.push(rest.to_owned());
    out
}

pub(crate) fn unescape(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_only_before_values() {
        assert_eq!(Prefix::split("ge2020"), (Prefix::Ge, "2020"));
        assert_eq!(Prefix::split("2020"), (Prefix::Eq, "2020"));
        assert_eq!(Prefix::split("gender"), (Prefix::Eq, "gender"));
        assert_eq!(Prefix::split("ap-1.5"), (Prefix::Ap, "-1.5"));
    }

    #[test]
    fn tokens_follow_the_system_code_grammar() {
        let t = |s: Option<&str>, c: Option<&str>| TokenMatch {
            system: s.map(Into::into),
            code: c.map(Into::into),
        };
        assert_eq!(parse_token("http://x|1"), t(Some("http://x"), Some("1")));
        assert_eq!(parse_token("|2"), t(Some(""), Some("2")));
        assert_eq!(parse_token("sys|"), t(Some("sys"), None));
        assert_eq!(parse_token("a\\|b"), t(None, Some("a|b")));
    }

    #[test]
    fn quantities_with_ucum_units_are_canonical() {
        let q = parse_quantity("value-quantity", "gt5.4|http://unitsofmeasure.org|mg").unwrap();
        assert!(q.canonical);
        assert_eq!(q.number.prefix, Prefix::Gt);
        assert_eq!(q.code.as_deref(), Some("g"));
        assert!((q.number.value - 0.0054).abs() < 1e-12);
        let raw = parse_quantity("value-quantity", "5.4||{tablets}x").unwrap();
        assert!(!raw.canonical);
        let bare = parse_quantity("value-quantity", "5.4").unwrap();
        assert_eq!((bare.system, bare.code), (None, None));
        assert!(parse_quantity("value-quantity", "5|kg").is_err());
        assert!(parse_quantity("value-quantity", "five").is_err());
    }

    #[test]
    fn dates_take_precision_ranges() {
        let d = parse_date("birthdate", "lt1960-06").unwrap();
        assert_eq!(d.prefix, Prefix::Lt);
        assert!(d.end > d.start);
        assert!(parse_date("birthdate", "1960-6").is_err());
    }
}
