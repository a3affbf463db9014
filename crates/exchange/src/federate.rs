//! A federated query's answers from several nodes as one searchset `Bundle`.
//!
//! - Every resource keeps its holder's identity: its `fullUrl` is its URL at the holder, and
//!   its relative references are made absolute against the holder's base, so a reader can
//!   follow them to the node that has them. `meta.source` stays as the sender set it.
//! - Duplicates go: the same resource (same URL) reached twice, and, across nodes, the same
//!   resource forwarded by one node from another (equal `meta.source` with equal type and id).
//! - Each node's resources are named as its in one `Provenance` (target: the resources;
//!   agent: the node's organisation; entity: the node's endpoint).
//! - A node that did not answer (timeout, refusal, error) leaves a warning in an
//!   `OperationOutcome` entry (search mode `outcome`) naming it, and the rest is returned; so
//!   does a node whose answer was cut short (`NodeAnswer::incomplete`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// What one node answered.
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// The node's id in the network.
    pub node: String,
    /// Its FHIR base URL.
    pub endpoint: String,
    /// Its organisation (`Organization/x` at the hub, or an absolute URL).
    pub organization: Option<String>,
    /// The resources it returned, or why it returned none.
    pub result: Result<Vec<Value>, String>,
    /// Why what it returned is not all it holds (a page limit), if it is not.
    pub incomplete: Option<String>,
}

/// The merged result: a searchset `Bundle` (`now`: FHIR instant of the merge).
pub fn merge(answers: &[NodeAnswer], now: &str) -> Value {
    let mut entries = Vec::new();
    let mut seen_urls = BTreeSet::new();
    let mut seen_sources = BTreeSet::new();
    let mut provenances = Vec::new();
    let mut issues = Vec::new();
    for answer in answers {
        let base = answer.endpoint.trim_end_matches('/');
        match &answer.result {
            Err(why) => issues.push(json!({
                "severity": "warning",
                "code": "incomplete",
                "diagnostics": format!("node {} ({}) did not answer: {why}", answer.node, base),
            })),
            Ok(resources) => {
                if let Some(why) = &answer.incomplete {
                    issues.push(json!({
                        "severity": "warning",
                        "code": "incomplete",
                        "diagnostics": format!("node {} ({}) answered in part: {why}", answer.node, base),
                    }));
                }
                let mut targets = Vec::new();
                for r in resources {
                    let (Some(ty), Some(id)) = (
                        r.get("resourceType").and_then(Value::as_str),
                        r.get("id").and_then(Value::as_str),
                    ) else {
                        continue;
                    };
                    if ty == "OperationOutcome" || ty == "Provenance" && is_ours(r) {
                        continue;
                    }
                    let url = format!("{base}/{ty}/{id}");
                    if !seen_urls.insert(url.clone()) {
                        continue;
                    }
                    if let Some(source) = r.pointer("/meta/source").and_then(Value::as_str)
                        && !seen_sources.insert(format!("{source}|{ty}|{id}"))
                    {
                        continue;
                    }
                    let mut r = r.clone();
                    absolutise(&mut r, base);
                    targets.push(json!({"reference": url}));
                    entries
                        .push(json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}}));
                }
                if !targets.is_empty() {
                    let mut agent = json!({
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "custodian"}]},
                        "who": {"display": format!("node {}", answer.node)}
                    });
                    if let Some(o) = &answer.organization {
                        agent["who"]["reference"] = json!(o);
                    }
                    provenances.push(json!({
                        "resourceType": "Provenance",
                        "meta": {"tag": [{"system": OURS, "code": "federated-query"}]},
                        "target": targets,
                        "recorded": now,
                        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "PULL"}]},
                        "agent": [agent],
                        "entity": [{"role": "source", "what": {"reference": base, "display": format!("FHIR endpoint of node {}", answer.node)}}]
                    }));
                }
            }
        }
    }
    for p in provenances {
        entries.push(json!({"resource": p, "search": {"mode": "include"}}));
    }
    if !issues.is_empty() {
        entries.push(json!({
            "resource": {"resourceType": "OperationOutcome", "issue": issues},
            "search": {"mode": "outcome"}
        }));
    }
    let total = entries
        .iter()
        .filter(|e| e.pointer("/search/mode").and_then(Value::as_str) == Some("match"))
        .count();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now,
        "total": total,
        "entry": entries
    })
}

const OURS: &str = "https://renkei.dev/fhir/CodeSystem/exchange";

fn is_ours(r: &Value) -> bool {
    r.pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.get("system").and_then(Value::as_str) == Some(OURS))
        })
}

/// Makes the relative literal references of `r` absolute against `base`.
pub fn absolutise(r: &mut Value, base: &str) {
    match r {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if k == "reference" => {
                        if crate::namespace::relative(s).is_some() {
                            *s = format!("{base}/{s}");
                        }
                    }
                    other => absolutise(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| absolutise(v, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_merge_with_provenance_and_a_warning_for_the_silent_node() {
        let a = NodeAnswer {
            node: "a".into(),
            endpoint: "http://a/fhir/".into(),
            organization: Some("http://hub/fhir/Organization/node-a".into()),
            incomplete: None,
            result: Ok(vec![
                json!({"resourceType": "Condition", "id": "1", "subject": {"reference": "Patient/p"}, "meta": {"source": "ehr-a"}}),
                json!({"resourceType": "Condition", "id": "1", "subject": {"reference": "Patient/p"}}),
            ]),
        };
        let b = NodeAnswer {
            node: "b".into(),
            endpoint: "http://b/fhir".into(),
            organization: None,
            result: Err("timed out after 5 s".into()),
            incomplete: None,
        };
        let c = NodeAnswer {
            node: "c".into(),
            endpoint: "http://c/fhir".into(),
            organization: None,
            incomplete: Some("more than 1 page".into()),
            // Forwarded copy of a's resource: same source, type and id.
            result: Ok(vec![
                json!({"resourceType": "Condition", "id": "1", "meta": {"source": "ehr-a"}}),
                json!({"resourceType": "Observation", "id": "5"}),
            ]),
        };
        let out = merge(&[a, b, c], "2026-12-06T00:00:00Z");
        let entries = out["entry"].as_array().unwrap();
        assert_eq!(out["total"], 2);
        assert_eq!(entries[0]["fullUrl"], "http://a/fhir/Condition/1");
        assert_eq!(
            entries[0]["resource"]["subject"]["reference"],
            "http://a/fhir/Patient/p"
        );
        assert_eq!(entries[0]["resource"]["meta"]["source"], "ehr-a");
        assert_eq!(entries[1]["fullUrl"], "http://c/fhir/Observation/5");
        let provenances: Vec<&Value> = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Provenance")
            .collect();
        assert_eq!(provenances.len(), 2);
        assert_eq!(
            provenances[0]["resource"]["agent"][0]["who"]["reference"],
            "http://hub/fhir/Organization/node-a"
        );
        let outcome = entries.last().unwrap();
        assert_eq!(outcome["search"]["mode"], "outcome");
        let why = outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap();
        assert!(why.contains("node b") && why.contains("timed out"), "{why}");
    }
}
