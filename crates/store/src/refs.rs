//! Reference rewriting inside a transaction: `urn:uuid:` (and other `fullUrl`) references to
//! entries of the same transaction, and conditional references (`Patient?identifier=...`).
//!
//! Rewritten are every `reference` string, at any depth, and `href="..."` / `src="..."`
//! attributes of the narrative (`text.div`), as the R4 transaction rules ask. Other `uri`
//! elements are left alone: without element types the store cannot tell a `uri` that points at an
//! entry from an `Identifier.value` that happens to hold the same `urn:uuid:` (common in practice).
//!
//! Also: the local literal references of a resource ([`local_references`]), which referential
//! integrity checks (`ReferenceCheck::Refuse`) and which imports count when they are dangling.

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

/// One local literal reference of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReference {
    /// Where: the path of the `Reference` (`Observation.subject`, `Observation.performer[1]`,
    /// `Observation.contained[0].subject`).
    pub element: String,
    /// The reference as written (`Patient/1`, `https://this.server/fhir/Patient/1`).
    pub reference: String,
    /// The resource it names: `Patient/1` (a version, if given, left out).
    pub target: String,
}

/// Every `reference` of `resource` (at any depth, contained resources included) that names a
/// resource of this server: `Type/id`, `Type/id/_history/vid`, or such a path under `base` (this
/// server's FHIR base URL, without a trailing `/`). Contained (`#id`), conditional
/// (`Type?query`), `urn:` and other absolute references are not local, nor are logical
/// references (`identifier` only) or canonicals.
pub fn local_references(resource: &Value, base: Option<&str>) -> Vec<LocalReference> {
    let mut out = Vec::new();
    let mut path = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_owned();
    let base = base
        .map(|b| b.trim_end_matches('/'))
        .filter(|b| !b.is_empty());
    collect_local(resource, &mut path, base, &mut out);
    out
}

/// Which of `targets` (`Type/id`) are not live resources of `store` (never written, or
/// deleted): for callers that count dangling references rather than refuse them. Asks one
/// `_id` search per type and hundred ids.
pub async fn absent_resources(
    store: &dyn crate::Store,
    ctx: &crate::RequestContext,
    targets: &BTreeSet<String>,
) -> Result<BTreeSet<String>, crate::StoreError> {
    let mut by_type: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for target in targets {
        if let Some((ty, id)) = target.split_once('/') {
            by_type.entry(ty).or_default().push(id);
        }
    }
    let mut absent = BTreeSet::new();
    for (ty, ids) in by_type {
        for batch in ids.chunks(100) {
            let params = [("_id".to_owned(), batch.join(","))];
            let found: BTreeSet<String> =
                match crate::SearchQuery::parse(Some(ty), &params, store.extractor(), false) {
                    Ok(q) => store
                        .matching_ids(ctx, &q, batch.len())
                        .await?
                        .into_iter()
                        .collect(),
                    // Not a type the store searches: nothing of it is there.
                    Err(_) => BTreeSet::new(),
                };
            absent.extend(
                batch
                    .iter()
                    .filter(|id| !found.contains(**id))
                    .map(|id| format!("{ty}/{id}")),
            );
        }
    }
    Ok(absent)
}

fn collect_local(
    value: &Value,
    path: &mut String,
    base: Option<&str>,
    out: &mut Vec<LocalReference>,
) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::String(reference)) = obj.get("reference")
                && let Some(target) = local_target(reference, base)
            {
                out.push(LocalReference {
                    element: path.clone(),
                    reference: reference.clone(),
                    target,
                });
            }
            for (k, v) in obj {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    let mark = path.len();
                    path.push('.');
                    path.push_str(k);
                    collect_local(v, path, base, out);
                    path.truncate(mark);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let mark = path.len();
                path.push_str(&format!("[{i}]"));
                collect_local(v, path, base, out);
                path.truncate(mark);
            }
        }
        _ => {}
    }
}

/// `Type/id` for a local literal reference, else `None`.
fn local_target(reference: &str, base: Option<&str>) -> Option<String> {
    let relative = match base.and_then(|b| reference.strip_prefix(b)) {
        Some(rest) => rest.strip_prefix('/')?,
        None => reference,
    };
    let mut segments = relative.split('/');
    let (ty, id) = (segments.next()?, segments.next()?);
    match (segments.next(), segments.next(), segments.next()) {
        (None, None, None) => {}
        (Some("_history"), Some(v), None) if !v.is_empty() => {}
        _ => return None,
    }
    let type_ok = ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric());
    let id_ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (type_ok && id_ok).then(|| format!("{ty}/{id}"))
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
    fn finds_local_literal_references_with_their_element() {
        let r = json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/1"},
            "performer": [
                {"reference": "Practitioner/a.b-c/_history/2"},
                {"reference": "https://hie.example/fhir/Organization/o1"},
                {"reference": "https://elsewhere.example/fhir/Organization/o2"},
                {"reference": "#contained"},
                {"reference": "urn:uuid:2b8ebd6e-6b35-4d6a-8cf6-50a4e9b5c2a1"},
                {"reference": "Practitioner?identifier=x|1"},
                {"identifier": {"system": "s", "value": "v"}},
                {"reference": "Patient/1/_history"},
                {"reference": "patient/1"}
            ],
            "contained": [{"resourceType": "Specimen", "subject": {"reference": "Patient/2"}}],
            "extension": [{"url": "u", "valueReference": {"reference": "Encounter/e"}}],
            "instantiatesCanonical": ["Questionnaire/q"]
        });
        let found: Vec<(String, String)> = local_references(&r, Some("https://hie.example/fhir/"))
            .into_iter()
            .map(|l| (l.element, l.target))
            .collect();
        let expected = [
            ("Observation.subject", "Patient/1"),
            ("Observation.performer[0]", "Practitioner/a.b-c"),
            ("Observation.performer[1]", "Organization/o1"),
            ("Observation.contained[0].subject", "Patient/2"),
            ("Observation.extension[0].valueReference", "Encounter/e"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(e, t)| ((*e).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(found, expected);
        // Without a base, an absolute URL is never local.
        assert_eq!(local_references(&r, None).len(), 4);
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
