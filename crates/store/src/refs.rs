//! Reference rewriting inside a transaction: `urn:uuid:` (and other `fullUrl`) references to
//! entries of the same transaction, and conditional references (`Patient?identifier=...`).
//!
//! Rewritten are every `reference` string, at any depth, and `href="..."` / `src="..."`
//! attributes of the narrative (`text.div`), as the R4 transaction rules ask. Other `uri`
//! elements are left alone: without element types the store cannot tell a `uri` that points at an
//! entry from an `Identifier.value` that happens to hold the same `urn:uuid:` (common in practice).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// Replaces references found in `map` (key: as written, value: `Type/id`); `true` when it
/// changed anything (index rows extracted before are then out of date).
pub(crate) fn rewrite(value: &mut Value, map: &HashMap<String, String>) -> bool {
    if map.is_empty() {
        return false;
    }
    let mut changed = false;
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if k == "reference" => {
                        if let Some(to) = map.get(s.as_str()) {
                            *s = to.clone();
                            changed = true;
                        }
                    }
                    Value::String(s) if k == "div" => {
                        for (from, to) in map {
                            if s.contains(from.as_str()) {
                                *s = s
                                    .replace(&format!("href=\"{from}\""), &format!("href=\"{to}\""))
                                    .replace(&format!("src=\"{from}\""), &format!("src=\"{to}\""));
                                changed = true;
                            }
                        }
                    }
                    other => changed |= rewrite(other, map),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                changed |= rewrite(v, map);
            }
        }
        _ => {}
    }
    changed
}

/// Whether a string other than a `reference` (or the narrative) holds one of `map`'s keys: a
/// `canonical` or `uri` element naming a transaction entry by its `fullUrl`, which
/// [`rewrite`] leaves as written. Index rows extracted before the rewrite cannot then be
/// brought up to date by reference value alone (the same string may be indexed both as a
/// rewritten reference and as an untouched `uri`), so the store extracts them again.
pub(crate) fn names_entry_outside_references(value: &Value, map: &HashMap<String, String>) -> bool {
    // Most strings of a resource (codes, names, dates) are shorter than any `fullUrl`: their
    // length alone tells them apart without hashing.
    let Some(shortest) = map.keys().map(String::len).min() else {
        return false;
    };
    fn walk(value: &Value, map: &HashMap<String, String>, shortest: usize) -> bool {
        match value {
            Value::Object(obj) => obj.iter().any(|(k, v)| match v {
                Value::String(_) if k == "reference" || k == "div" => false,
                other => walk(other, map, shortest),
            }),
            Value::Array(items) => items.iter().any(|v| walk(v, map, shortest)),
            Value::String(s) => s.len() >= shortest && map.contains_key(s.as_str()),
            _ => false,
        }
    }
    walk(value, map, shortest)
}

/// The distinct conditional references (`Type?criteria`) of a resource.
pub(crate) fn conditional_references(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                match v {
                    Value::String(s) if k == "reference" && is_conditional(s) => {
                        out.insert(s.clone());
                    }
                    other => conditional_references(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| conditional_references(v, out)),
        _ => {}
    }
}

fn is_conditional(s: &str) -> bool {
    match s.split_once('?') {
        Some((ty, _)) => {
            !ty.is_empty()
                && ty.starts_with(|c: char| c.is_ascii_uppercase())
                && ty.chars().all(|c| c.is_ascii_alphanumeric())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_references_at_any_depth_and_in_narrative_links() {
        let mut r = json!({
            "resourceType": "Observation",
            "text": {"div": "<div><a href=\"urn:uuid:1\">p</a></div>"},
            "subject": {"reference": "urn:uuid:1"},
            "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}],
            "component": [{"extension": [{"valueReference": {"reference": "urn:uuid:1"}}]}],
            "performer": [{"reference": "urn:uuid:2"}]
        });
        let map = HashMap::from([("urn:uuid:1".to_owned(), "Patient/a".to_owned())]);
        rewrite(&mut r, &map);
        assert_eq!(r["subject"]["reference"], "Patient/a");
        assert_eq!(
            r["component"][0]["extension"][0]["valueReference"]["reference"],
            "Patient/a"
        );
        assert_eq!(r["performer"][0]["reference"], "urn:uuid:2");
        assert_eq!(r["identifier"][0]["value"], "urn:uuid:1");
        assert_eq!(r["text"]["div"], "<div><a href=\"Patient/a\">p</a></div>");
    }

    #[test]
    fn tells_entry_names_outside_references_apart() {
        let map = HashMap::from([("urn:uuid:1".to_owned(), "Patient/a".to_owned())]);
        let only_refs = json!({
            "subject": {"reference": "urn:uuid:1"},
            "text": {"div": "<div><a href=\"urn:uuid:1\">p</a></div>"},
            "basedOn": [{"reference": "urn:uuid:1"}]
        });
        assert!(!names_entry_outside_references(&only_refs, &map));
        let canonical = json!({
            "subject": {"reference": "urn:uuid:1"},
            "instantiatesCanonical": ["urn:uuid:1"]
        });
        assert!(names_entry_outside_references(&canonical, &map));
        assert!(!names_entry_outside_references(&canonical, &HashMap::new()));
    }

    #[test]
    fn finds_conditional_references_only() {
        let r = json!({
            "a": {"reference": "Practitioner?identifier=x|1"},
            "b": [{"reference": "Patient/1"}, {"reference": "http://x/y?z=1"}]
        });
        let mut out = BTreeSet::new();
        conditional_references(&r, &mut out);
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            vec!["Practitioner?identifier=x|1"]
        );
    }
}
