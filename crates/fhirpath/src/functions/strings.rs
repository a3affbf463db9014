//! String helpers: cached regular expressions, `encode`/`decode`/`escape`/`unescape` formats,
//! and the narrative check behind `htmlChecks()`.

use crate::error::EvalError;
use crate::eval::Result;
use std::cell::RefCell;
use std::collections::HashMap;

use base64::Engine as _;

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<(String, bool), regex::Regex>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the compiled regex (cached per thread; FHIRPath regexes are single-line mode).
pub(super) fn with_regex<T>(
    pattern: &str,
    full: bool,
    function: &str,
    f: impl FnOnce(&regex::Regex) -> T,
) -> Result<T> {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (pattern.to_string(), full);
        if !cache.contains_key(&key) {
            let source = if full {
                format!("(?s)^(?:{pattern})$")
            } else {
                format!("(?s){pattern}")
            };
            let re = regex::Regex::new(&source).map_err(|e| {
                EvalError::typ(function, format!("invalid regular expression: {e}"))
            })?;
            if cache.len() > 256 {
                cache.clear();
            }
            cache.insert(key.clone(), re);
        }
        Ok(f(&cache[&key]))
    })
}

pub(super) fn codec(function: &str, format: &str, s: &str) -> Result<Option<String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE;
    Ok(match (function, format) {
        ("encode", "base64") => Some(b64.encode(s)),
        ("encode", "urlbase64") => Some(b64url.encode(s)),
        ("encode", "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
        ("decode", "base64") => b64.decode(s).ok().and_then(|b| String::from_utf8(b).ok()),
        ("decode", "urlbase64") => b64url
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        ("decode", "hex") => {
            let bytes: Option<Vec<u8>> = (0..s.len())
                .step_by(2)
                .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            bytes.and_then(|b| String::from_utf8(b).ok())
        }
        ("escape", "html") => Some(
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        ("unescape", "html") => Some(
            s.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        ("escape", "json") => {
            let quoted = serde_json::to_string(s).unwrap_or_default();
            Some(quoted[1..quoted.len() - 1].to_string())
        }
        ("unescape", "json") => Some(unescape_json(s)),
        _ => {
            return Err(EvalError::typ(
                function,
                format!("unknown format '{format}'"),
            ));
        }
    })
}

/// Resolves JSON string escapes (`\"`, `\n`, `\u00e9`, ...); other text is kept as it is.
pub(super) fn unescape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The narrative rules of FHIR R4 (txt-1, txt-2): no active content in XHTML.
pub(super) fn html_is_safe(xhtml: &str) -> bool {
    let lower = xhtml.to_ascii_lowercase();
    ![
        "<script",
        "<object",
        "<applet",
        "<iframe",
        "<embed",
        "<form",
        "javascript:",
        " onclick=",
        " onload=",
    ]
    .iter()
    .any(|bad| lower.contains(bad))
}
