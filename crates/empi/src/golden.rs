//! Golden records: one FHIR `Patient` per enterprise identity, composed from its source
//! Patients element by element with survivorship rules (most trusted source, most recent,
//! most complete), tagged as golden and linked to its sources.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::index::EnterpriseId;

/// The `meta.tag` marking a golden record.
pub const GOLDEN_TAG_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/empi";
/// Its code.
pub const GOLDEN_TAG_CODE: &str = "golden";
/// The identifier system of enterprise identities (`Patient.identifier` of a golden record).
pub const ENTERPRISE_ID_SYSTEM: &str = "https://renkei.dev/fhir/sid/enterprise-id";

/// One way of ranking the sources offering an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Earlier in [`Survivorship::trusted_sources`] wins; unlisted sources rank last.
    MostTrusted,
    /// Later `meta.lastUpdated` wins.
    MostRecent,
    /// More filled-in values in the element wins.
    MostComplete,
}

/// Survivorship policy: per element, the rules applied in order (later rules break ties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survivorship {
    /// Source systems (`meta.source`), most trusted first.
    pub trusted_sources: Vec<String>,
    /// `(element, rules)`; elements not listed are not copied, except identifiers (all kept).
    pub elements: Vec<(String, Vec<Rule>)>,
}

impl Default for Survivorship {
    fn default() -> Self {
        use Rule::*;
        let e = |name: &str, rules: &[Rule]| (name.to_owned(), rules.to_vec());
        Survivorship {
            trusted_sources: Vec::new(),
            elements: vec![
                e("name", &[MostTrusted, MostComplete, MostRecent]),
                e("gender", &[MostTrusted, MostRecent]),
                e("birthDate", &[MostTrusted, MostRecent]),
                e("telecom", &[MostRecent, MostTrusted]),
                e("address", &[MostRecent, MostTrusted]),
                e("maritalStatus", &[MostRecent]),
                e("multipleBirthInteger", &[MostTrusted]),
                e("multipleBirthBoolean", &[MostTrusted]),
                e("deceasedBoolean", &[MostRecent]),
                e("deceasedDateTime", &[MostRecent]),
                e("communication", &[MostComplete, MostRecent]),
            ],
        }
    }
}

fn leaves(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(leaves).sum(),
        Value::Object(o) => o.values().map(leaves).sum(),
        Value::Null => 0,
        _ => 1,
    }
}

fn source_of(p: &Value) -> Option<&str> {
    p.pointer("/meta/source").and_then(Value::as_str)
}

impl Survivorship {
    fn compare(&self, rules: &[Rule], element: &str, a: &Value, b: &Value) -> Ordering {
        for rule in rules {
            let o = match rule {
                Rule::MostTrusted => {
                    let rank = |p: &Value| {
                        source_of(p)
                            .and_then(|s| self.trusted_sources.iter().position(|t| t == s))
                            .unwrap_or(usize::MAX)
                    };
                    rank(a).cmp(&rank(b))
                }
                Rule::MostRecent => {
                    let t = |p: &Value| {
                        p.pointer("/meta/lastUpdated")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    t(b).cmp(&t(a))
                }
                Rule::MostComplete => {
                    let n = |p: &Value| p.get(element).map_or(0, leaves);
                    n(b).cmp(&n(a))
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// Composes the golden Patient of `enterprise` from its source Patients.
    pub fn compose(&self, enterprise: EnterpriseId, sources: &[Value]) -> Value {
        let mut golden = json!({
            "resourceType": "Patient",
            "id": enterprise.to_string(),
            "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]},
        });
        for (element, rules) in &self.elements {
            let best = sources
                .iter()
                .filter(|p| p.get(element).is_some_and(|v| leaves(v) > 0))
                .min_by(|a, b| self.compare(rules, element, a, b));
            if let Some(p) = best {
                golden[element] = p[element].clone();
            }
        }
        // The enterprise identifier only: copying the sources' identifiers would make every
        // `Patient?identifier=` lookup (conditional writes from HL7 v2, If-None-Exist) find
        // the golden record beside its source. Source identifiers are cross-referenced by
        // PIXm instead.
        golden["identifier"] = json!([{
            "use": "official",
            "system": ENTERPRISE_ID_SYSTEM,
            "value": enterprise.to_string(),
        }]);
        let links: Vec<Value> = sources
            .iter()
            .filter_map(|p| p.get("id").and_then(Value::as_str))
            .map(|id| json!({"other": {"reference": format!("Patient/{id}")}, "type": "seealso"}))
            .collect();
        if !links.is_empty() {
            golden["link"] = Value::Array(links);
        }
        golden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survivorship_prefers_trusted_then_recent_then_complete() {
        let a = json!({"resourceType": "Patient", "id": "a",
            "meta": {"source": "urn:clinic", "lastUpdated": "2024-05-01T00:00:00Z"},
            "name": [{"family": "Smith", "given": ["Bob"]}],
            "birthDate": "1980-07-04",
            "address": [{"line": ["1 New Road"]}],
            "identifier": [{"system": "urn:clinic", "value": "1"}]});
        let b = json!({"resourceType": "Patient", "id": "b",
            "meta": {"source": "urn:hospital", "lastUpdated": "2020-01-01T00:00:00Z"},
            "name": [{"family": "Smith", "given": ["Robert", "James"]}],
            "birthDate": "1980-04-07",
            "address": [{"line": ["9 Old Street"]}],
            "identifier": [{"system": "urn:hospital", "value": "9"}]});
        let policy = Survivorship {
            trusted_sources: vec!["urn:hospital".into()],
            ..Survivorship::default()
        };
        let g = policy.compose(EnterpriseId(7), &[a, b]);
        assert_eq!(g["id"], "E0000000007");
        assert_eq!(g["birthDate"], "1980-04-07");
        assert_eq!(g["name"][0]["given"][0], "Robert");
        assert_eq!(g["address"][0]["line"][0], "1 New Road");
        assert_eq!(g["identifier"][0]["value"], "E0000000007");
        assert_eq!(g["identifier"].as_array().unwrap().len(), 1);
        assert_eq!(g["link"][1]["other"]["reference"], "Patient/b");
        assert_eq!(g["meta"]["tag"][0]["code"], "golden");
    }
}
