//! The hub's copies of a node's resources: their ids (node-namespaced, so two nodes' `Patient/1`
//! never meet), the tag that says which node a copy came from, and the rewriting of the
//! references inside a copy so that they point at the hub's copies too.
//!
//! A copy of node `a`'s `Condition/7` is `Condition/a.7` at the hub. Its literal references
//! (`Patient/1`, `Encounter/9`) become `Patient/a.1` and `Encounter/a.9` unless the caller
//! resolves them elsewhere (a directory resource the hub de-duplicated under another id).
//! A conditional reference (`Practitioner?identifier=s|v`), which the hub could not resolve
//! against the node's data, becomes the logical reference it stands for
//! (`{"type": "Practitioner", "identifier": {"system": "s", "value": "v"}}`); other
//! conditional forms keep only their display. Absolute URLs, `urn:` and `#contained`
//! references are left as they are.

use serde_json::{Map, Value, json};

/// The tag system naming the node a hub copy came from (`meta.tag`, code = node id).
pub const NODE_TAG_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/node";

/// The longest FHIR id.
const MAX_ID: usize = 64;

/// Whether `id` is a usable node id: 1 to 32 characters of letters, digits and `-`, so that
/// a copy id (`node.local`) stays a FHIR id and splits back at its first `.`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The hub's id for node `node`'s resource `local_id`: `node.local_id`, or, when that would
/// pass 64 characters, `node.h` and a digest of the local id.
pub fn copy_id(node: &str, local_id: &str) -> String {
    let id = format!("{node}.{local_id}");
    if id.len() <= MAX_ID {
        return id;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, local_id.as_bytes());
    let hex: String = digest.as_ref()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{node}.h{hex}")
}

/// The node and local id a copy id was made from, when it was made by [`copy_id`] without a
/// digest.
pub fn split_copy_id(copy: &str) -> Option<(&str, &str)> {
    copy.split_once('.')
        .filter(|(node, local)| valid_node_id(node) && !local.is_empty())
}

/// Marks `resource` as node `node`'s copy: its id, and the node's tag in `meta.tag` (kept
/// beside the node's own tags; `meta.source` is left as the node set it).
pub fn mark_copy(resource: &mut Value, node: &str, hub_id: &str) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    obj.insert("id".into(), Value::String(hub_id.to_owned()));
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let meta = meta.as_object_mut().expect("made an object above");
    // The hub keeps its own versions and times.
    meta.remove("versionId");
    meta.remove("lastUpdated");
    let tags = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !tags.is_array() {
        *tags = Value::Array(Vec::new());
    }
    let tags = tags.as_array_mut().expect("made an array above");
    tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(NODE_TAG_SYSTEM));
    tags.push(json!({"system": NODE_TAG_SYSTEM, "code": node}));
}

/// The node a hub copy came from, by its tag.
pub fn node_of(resource: &Value) -> Option<&str> {
    resource
        .pointer("/meta/tag")?
        .as_array()?
        .iter()
        .find(|t| t.get("system").and_then(Value::as_str) == Some(NODE_TAG_SYSTEM))?
        .get("code")?
        .as_str()
}

/// Rewrites the references of a node's resource for the hub: each relative literal reference
/// `Type/id` (and `Type/id/_history/v`) becomes `Type/` + `resolve(Type, id)`; conditional
/// references become logical ones (module doc). Returns how many references changed.
pub fn rewrite_references(
    value: &mut Value,
    resolve: &mut dyn FnMut(&str, &str) -> String,
) -> usize {
    let mut changed = 0;
    rewrite_in(value, resolve, &mut changed);
    changed
}

fn rewrite_in(
    value: &mut Value,
    resolve: &mut dyn FnMut(&str, &str) -> String,
    changed: &mut usize,
) {
    match value {
        Value::Object(obj) => {
            let conditional = obj
                .get("reference")
                .and_then(Value::as_str)
                .filter(|r| is_conditional(r))
                .map(str::to_owned);
            if let Some(reference) = conditional {
                obj.remove("reference");
                if let Some((ty, identifier)) = logical(&reference) {
                    obj.entry("type").or_insert(Value::String(ty));
                    obj.entry("identifier").or_insert(identifier);
                }
                *changed += 1;
            }
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if k == "reference" => {
                        if let Some(to) =
                            relative(s).map(|(ty, id)| format!("{ty}/{}", resolve(ty, id)))
                        {
                            *s = to;
                            *changed += 1;
                        }
                    }
                    other => rewrite_in(other, resolve, changed),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| rewrite_in(v, resolve, changed)),
        _ => {}
    }
}

/// Makes the references of `value` that are absolute URLs under `base` (the hub's FHIR base)
/// relative (`https://hub/fhir/Organization/node-a` becomes `Organization/node-a`). Run after
/// [`rewrite_references`], whose rule is for the node's own relative references.
pub fn make_local(value: &mut Value, base: &str) {
    let prefix = format!("{}/", base.trim_end_matches('/'));
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if k == "reference" => {
                        if let Some(rest) = s.strip_prefix(&prefix)
                            && relative(rest).is_some()
                        {
                            *s = rest.to_owned();
                        }
                    }
                    other => make_local(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| make_local(v, base)),
        _ => {}
    }
}

fn is_conditional(r: &str) -> bool {
    r.split_once('?').is_some_and(|(ty, _)| is_type(ty))
}

fn is_type(ty: &str) -> bool {
    ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphanumeric())
}

/// `Type/id` or `Type/id/_history/v` as (type, id).
pub fn relative(r: &str) -> Option<(&str, &str)> {
    let mut parts = r.split('/');
    let ty = parts.next()?;
    let id = parts.next()?;
    let ok = is_type(ty)
        && !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => true,
            (Some("_history"), Some(v), None) => !v.is_empty(),
            _ => false,
        };
    ok.then_some((ty, id))
}

/// `Type?identifier=system|value` as its type and Identifier.
fn logical(r: &str) -> Option<(String, Value)> {
    let (ty, query) = r.split_once('?')?;
    let value = query.strip_prefix("identifier=")?;
    if value.contains('&') {
        return None;
    }
    let value = percent_decode(value);
    let identifier = match value.split_once('|') {
        Some((system, v)) if !system.is_empty() => json!({"system": system, "value": v}),
        Some((_, v)) => json!({"value": v}),
        None => json!({"value": value}),
    };
    Some((ty.to_owned(), identifier))
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ids_are_namespaced_and_bounded() {
        assert_eq!(copy_id("a", "7"), "a.7");
        assert_eq!(split_copy_id("a.7"), Some(("a", "7")));
        assert_eq!(split_copy_id("a.b.7"), Some(("a", "b.7")));
        let long = "x".repeat(64);
        let id = copy_id("node-a", &long);
        assert!(id.len() <= 64 && id.starts_with("node-a.h"), "{id}");
        assert!(valid_node_id("node-a") && !valid_node_id("a.b") && !valid_node_id(""));
    }

    #[test]
    fn references_point_at_copies_and_conditional_ones_become_logical() {
        let mut c = json!({
            "resourceType": "Encounter",
            "subject": {"reference": "Patient/1"},
            "participant": [{"individual": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|99", "display": "Dr X"}}],
            "serviceProvider": {"reference": "Organization?name=x", "display": "Clinic"},
            "partOf": {"reference": "Encounter/9/_history/2"},
            "basedOn": [{"reference": "https://elsewhere/fhir/ServiceRequest/3"}, {"reference": "#c1"}]
        });
        let n = rewrite_references(&mut c, &mut |_, id| format!("a.{id}"));
        assert_eq!(n, 4);
        assert_eq!(c["subject"]["reference"], "Patient/a.1");
        assert_eq!(c["partOf"]["reference"], "Encounter/a.9");
        assert_eq!(
            c["participant"][0]["individual"],
            json!({"type": "Practitioner", "identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "99"}, "display": "Dr X"})
        );
        assert_eq!(c["serviceProvider"], json!({"display": "Clinic"}));
        assert_eq!(
            c["basedOn"][0]["reference"],
            "https://elsewhere/fhir/ServiceRequest/3"
        );
        assert_eq!(c["basedOn"][1]["reference"], "#c1");
    }

    #[test]
    fn the_hubs_own_urls_become_local_references() {
        let mut c = json!({"resourceType": "Consent", "patient": {"reference": "Patient/1"},
            "provision": {"actor": [{"reference": {"reference": "https://hub.example/fhir/Organization/node-a"}},
                                    {"reference": {"reference": "https://other.example/fhir/Organization/x"}}]}});
        rewrite_references(&mut c, &mut |_, id| format!("b.{id}"));
        make_local(&mut c, "https://hub.example/fhir/");
        assert_eq!(c["patient"]["reference"], "Patient/b.1");
        assert_eq!(
            c["provision"]["actor"][0]["reference"]["reference"],
            "Organization/node-a"
        );
        assert_eq!(
            c["provision"]["actor"][1]["reference"]["reference"],
            "https://other.example/fhir/Organization/x"
        );
    }

    #[test]
    fn a_copy_carries_its_node_tag_once() {
        let mut p = json!({"resourceType": "Patient", "id": "1", "meta": {"versionId": "3", "source": "ehr-1", "tag": [{"system": "x", "code": "y"}]}});
        mark_copy(&mut p, "a", "a.1");
        mark_copy(&mut p, "a", "a.1");
        assert_eq!(p["id"], "a.1");
        assert_eq!(p["meta"]["source"], "ehr-1");
        assert!(p["meta"].get("versionId").is_none());
        assert_eq!(p["meta"]["tag"].as_array().unwrap().len(), 2);
        assert_eq!(node_of(&p), Some("a"));
    }
}
