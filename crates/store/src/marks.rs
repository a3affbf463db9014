//! What the store adds to every resource a caller writes, in the one write path every
//! ingestion route shares (`engine::put`: REST, batches and transactions, HL7 v2, imports):
//! the sensitivity labels a rule table gives its codes (`auth::labels::Labeler`, added to
//! `meta.security` beside those the client set, never removing one), and the custodian
//! organisation of the version, the caller's organisation ([`crate::RequestContext::organization`])
//! as a `meta.tag` of [`CUSTODIAN_SYSTEM`]. Both are then indexed like any `meta` element, so
//! `_security` and `_tag` searches and the access policy's label conditions see them.

use auth::labels::Labeler;
use serde_json::{Map, Value, json};

/// The `meta.tag` system whose code is the organisation (`Organization/x`) that wrote the
/// version: its custodian.
pub const CUSTODIAN_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/custodian";

/// Marks `resource`; whether it changed.
pub(crate) fn mark(
    resource: &mut Value,
    labeler: Option<&Labeler>,
    custodian: Option<&str>,
) -> bool {
    let mut changed = false;
    if let Some(labeler) = labeler {
        changed |= !labeler.apply(resource).is_empty();
    }
    if let Some(org) = custodian {
        changed |= set_custodian(resource, org);
    }
    changed
}

/// Makes `org` the one custodian tag of `resource`; whether it changed.
fn set_custodian(resource: &mut Value, org: &str) -> bool {
    let Some(obj) = resource.as_object_mut() else {
        return false;
    };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return false;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    let Some(tags) = tags.as_array_mut() else {
        return false;
    };
    let is_custodian =
        |t: &Value| t.get("system").and_then(Value::as_str) == Some(CUSTODIAN_SYSTEM);
    let already = tags.iter().filter(|t| is_custodian(t)).count() == 1
        && tags
            .iter()
            .any(|t| is_custodian(t) && t.get("code").and_then(Value::as_str) == Some(org));
    if already {
        return false;
    }
    tags.retain(|t| !is_custodian(t));
    tags.push(json!({"system": CUSTODIAN_SYSTEM, "code": org}));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_added_and_the_custodian_is_the_writer() {
        let mut c = json!({"resourceType": "Condition",
            "meta": {"security": [{"system": "urn:conf", "code": "N"}],
                     "tag": [{"system": CUSTODIAN_SYSTEM, "code": "Organization/spoof"}]},
            "code": {"coding": [{"system": auth::labels::ICD10_CM, "code": "B20"}]}});
        assert!(mark(
            &mut c,
            Some(&Labeler::default()),
            Some("Organization/a")
        ));
        assert_eq!(c["meta"]["security"][0]["code"], "N");
        assert_eq!(c["meta"]["security"][1]["code"], "HIV");
        assert_eq!(
            c["meta"]["tag"],
            json!([{"system": CUSTODIAN_SYSTEM, "code": "Organization/a"}])
        );
        // Marked already: unchanged.
        assert!(!mark(
            &mut c,
            Some(&Labeler::default()),
            Some("Organization/a")
        ));
        // Neither a table nor an organisation: nothing.
        let mut p = json!({"resourceType": "Patient"});
        assert!(!mark(&mut p, None, None));
        assert_eq!(p, json!({"resourceType": "Patient"}));
    }
}
