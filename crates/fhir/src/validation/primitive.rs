//! Formats of FHIR primitive values in JSON: which JSON type carries each primitive, and the
//! specification's regular expression for its lexical form, compiled once.
//!
//! The regexes are the ones in the R4 StructureDefinitions (the `regex` extension on each
//! primitive's `value`), taken from the generated tables rather than retyped. They are written
//! for XML Schema / Java, where `\s` means ASCII whitespace; the `regex` crate's `\s` is
//! Unicode-aware and would reject, say, the ideographic space (U+3000) in a Japanese name, so
//! `\s` and `\S` are translated to ASCII classes before compiling. Integers are also checked
//! against the 32-bit range the spec gives them.

use std::sync::OnceLock;

use regex::Regex;

use crate::definitions::{Definitions, TypeKind};

/// The JSON type that carries a primitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Bool,
    Number,
    String,
}

/// How to check one primitive type.
#[derive(Debug)]
pub(crate) struct Format {
    pub(crate) json: JsonKind,
    /// The spec's regex, anchored; `None` for `boolean` (the JSON type says it all) and
    /// `xhtml` (which has none).
    pub(crate) regex: Option<Regex>,
    /// Inclusive bounds for the integer types.
    pub(crate) range: Option<(i64, i64)>,
}

/// The formats of all primitive types, indexed like `Definitions::types`.
#[derive(Debug)]
pub(crate) struct Formats {
    by_type: Vec<Option<Format>>,
    /// Type indexes of `id`, `uuid` and `oid`, used to check references and resource ids.
    pub(crate) id: u32,
    pub(crate) uuid: u32,
    pub(crate) oid: u32,
}

impl Formats {
    pub(crate) fn get(&self, type_index: u32) -> Option<&Format> {
        self.by_type.get(type_index as usize)?.as_ref()
    }

    /// Whether `text` matches the regex of the primitive type `type_index`.
    pub(crate) fn matches(&self, type_index: u32, text: &str) -> bool {
        match self.get(type_index).and_then(|f| f.regex.as_ref()) {
            Some(regex) => regex.is_match(text),
            None => true,
        }
    }

    fn build(defs: &Definitions) -> Self {
        let index = |name: &str| {
            defs.types
                .iter()
                .position(|t| t.name == name)
                .map_or(u32::MAX, |i| i as u32)
        };
        let by_type = defs
            .types
            .iter()
            .map(|t| {
                if t.kind != TypeKind::Primitive {
                    return None;
                }
                let json = match t.name.as_str() {
                    "boolean" => JsonKind::Bool,
                    "integer" | "positiveInt" | "unsignedInt" | "decimal" => JsonKind::Number,
                    _ => JsonKind::String,
                };
                let range = match t.name.as_str() {
                    "integer" => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
                    "positiveInt" => Some((1, i64::from(i32::MAX))),
                    "unsignedInt" => Some((0, i64::from(i32::MAX))),
                    _ => None,
                };
                let regex = match (json, &t.regex) {
                    (JsonKind::Bool, _) | (_, None) => None,
                    (_, Some(pattern)) => compile(pattern),
                };
                Some(Format { json, regex, range })
            })
            .collect();
        Formats {
            by_type,
            id: index("id"),
            uuid: index("uuid"),
            oid: index("oid"),
        }
    }
}

/// Why a `date`, `dateTime` or `instant` that matches the spec's regex names no day of the
/// calendar: the regex allows day 31 in every month and 29 February in every year. `None` when
/// the day exists (or the value has no day). Hours, minutes, seconds (60 for a leap second)
/// and offsets are the regex's to check: it already bounds each to the spec's range.
pub(crate) fn impossible_day(text: &str) -> Option<String> {
    let date = text.get(..10)?;
    let mut parts = date.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let (year, month, day): (u32, u32, u32) =
        (year.parse().ok()?, month.parse().ok()?, day.parse().ok()?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (day > days).then(|| {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        let name = MONTHS.get(month as usize - 1).copied().unwrap_or("?");
        format!("{name} {year} has {days} days")
    })
}

/// The formats for [`crate::r4`], compiled on first use.
pub(crate) fn formats() -> &'static Formats {
    static FORMATS: OnceLock<Formats> = OnceLock::new();
    FORMATS.get_or_init(|| Formats::build(crate::r4()))
}

/// Anchor a spec regex and give `\s` / `\S` their ASCII (XML Schema, Java) meaning. `None` if
/// it does not compile (the crate's tests check that every spec regex does).
pub(crate) fn compile(pattern: &str) -> Option<Regex> {
    const SPACE: &str = r"\t\n\x0B\x0C\r ";
    let mut translated = String::with_capacity(pattern.len() + 32);
    let mut in_class = false;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') if in_class => translated.push_str(SPACE),
                Some('s') => translated.push_str(&format!("[{SPACE}]")),
                Some('S') => translated.push_str(&format!("[^{SPACE}]")),
                Some(other) => {
                    translated.push('\\');
                    translated.push(other);
                }
                None => translated.push('\\'),
            },
            '[' => {
                in_class = true;
                translated.push(c);
            }
            ']' => {
                in_class = false;
                translated.push(c);
            }
            _ => translated.push(c),
        }
    }
    Regex::new(&format!("^(?:{translated})$")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_regex_compiles() {
        let defs = crate::r4();
        let formats = formats();
        for (i, t) in defs.types.iter().enumerate() {
            if t.kind == TypeKind::Primitive && !matches!(t.name.as_str(), "boolean" | "xhtml") {
                let format = formats.get(i as u32).expect("primitive has a format");
                assert!(format.regex.is_some(), "{}: {:?}", t.name, t.regex);
            }
        }
    }

    #[test]
    fn days_of_the_calendar() {
        for ok in [
            "1999-02-28",
            "2024-02-29",
            "2000-02-29",
            "2023-12-31",
            "2023-04-30",
            "2023-02",
            "2023",
            "2024-02-29T10:00:00+09:00",
            "2023-01-31T23:59:60Z",
        ] {
            assert_eq!(impossible_day(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("1999-02-30", "February 1999 has 28 days"),
            ("2023-02-29", "February 2023 has 28 days"),
            ("1900-02-29", "February 1900 has 28 days"),
            ("2024-02-30", "February 2024 has 29 days"),
            ("2023-04-31", "April 2023 has 30 days"),
            ("2023-11-31T10:00:00Z", "November 2023 has 30 days"),
        ] {
            assert_eq!(impossible_day(bad).as_deref(), Some(why), "{bad}");
        }
    }

    #[test]
    fn whitespace_is_ascii_whitespace() {
        let string = compile(r"[ \r\n\t\S]+").expect("compiles");
        assert!(string.is_match("山田\u{3000}太郎"));
        assert!(string.is_match("a b\tc\n"));
        assert!(!string.is_match("a\x0Bb"));
        let code = compile(r"[^\s]+(\s[^\s]+)*").expect("compiles");
        assert!(code.is_match("final"));
        assert!(code.is_match("entered in-error"));
        assert!(!code.is_match(" final"));
        assert!(!code.is_match("a  b"));
        let uri = compile(r"\S*").expect("compiles");
        assert!(!uri.is_match("http://x y"));
    }
}
