//! The record locator's answer: which nodes hold records of a person, under which of their
//! Patient ids, what kinds of data and when each last changed. `Patient/$locate` returns it as
//! a `Parameters` resource ([`Located::to_parameters`]); a requesting node reads it back
//! ([`Located::from_parameters`]) to fan its query out.

use crate::json::list;
use serde_json::{Value, json};
use thiserror::Error;

/// A `$locate` answer a node cannot read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LocateError {
    #[error("the record locator's answer is not a Parameters resource")]
    NotParameters,
    #[error("the record locator's answer has a holder without {0}")]
    MissingPart(&'static str),
}

/// One kind of data a node holds for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub resource_type: String,
    /// When a version of this kind last changed at the node (FHIR instant).
    pub last_changed: String,
}

/// One node holding records of the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The node's id in the network.
    pub node: String,
    /// The node's name (its Organization's).
    pub name: Option<String>,
    /// The node's Organization, at the hub (`Organization/x`).
    pub organization: Option<String>,
    /// The node's FHIR base URL.
    pub endpoint: String,
    /// The node's DICOMweb (WADO-RS) base URL, when it serves images.
    pub imaging_endpoint: Option<String>,
    /// The person's Patient id at the node.
    pub patient: String,
    /// What the node holds for them, by kind.
    pub kinds: Vec<Kind>,
}

/// Where a person's records are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Located {
    /// The person's golden record at the hub (`Patient/x`), when the hub's index has one.
    pub person: Option<String>,
    pub holders: Vec<Holder>,
}

impl Located {
    /// The answer as a `Parameters` resource.
    pub fn to_parameters(&self) -> Value {
        let mut parameter = Vec::new();
        if let Some(p) = &self.person {
            parameter.push(json!({"name": "person", "valueReference": {"reference": p}}));
        }
        for h in &self.holders {
            let mut part = vec![
                json!({"name": "node", "valueString": h.node}),
                json!({"name": "endpoint", "valueUrl": h.endpoint}),
                json!({"name": "patient", "valueString": h.patient}),
            ];
            if let Some(o) = &h.organization {
                let mut r = json!({"reference": o});
                if let Some(n) = &h.name {
                    r["display"] = json!(n);
                }
                part.push(json!({"name": "organization", "valueReference": r}));
            }
            if let Some(i) = &h.imaging_endpoint {
                part.push(json!({"name": "imagingEndpoint", "valueUrl": i}));
            }
            for k in &h.kinds {
                part.push(json!({"name": "kind", "part": [
                    {"name": "type", "valueCode": k.resource_type},
                    {"name": "lastChanged", "valueInstant": k.last_changed}
                ]}));
            }
            parameter.push(json!({"name": "holder", "part": part}));
        }
        json!({"resourceType": "Parameters", "parameter": parameter})
    }

    /// Reads [`Located::to_parameters`].
    pub fn from_parameters(p: &Value) -> Result<Located, LocateError> {
        if p.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(LocateError::NotParameters);
        }
        let mut located = Located::default();
        for param in list(p, "parameter") {
            match param.get("name").and_then(Value::as_str) {
                Some("person") => {
                    located.person = param
                        .pointer("/valueReference/reference")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                }
                Some("holder") => located.holders.push(holder(param)?),
                _ => {}
            }
        }
        Ok(located)
    }
}

fn holder(param: &Value) -> Result<Holder, LocateError> {
    let text = |name: &str, key: &str| {
        list(param, "part")
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|p| p.pointer(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let kinds = list(param, "part")
        .filter(|p| p.get("name").and_then(Value::as_str) == Some("kind"))
        .filter_map(|k| {
            let sub = |name: &str, key: &str| {
                list(k, "part")
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                    .and_then(|p| p.get(key))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            Some(Kind {
                resource_type: sub("type", "valueCode")?,
                last_changed: sub("lastChanged", "valueInstant").unwrap_or_default(),
            })
        })
        .collect();
    Ok(Holder {
        node: text("node", "/valueString").ok_or(LocateError::MissingPart("node"))?,
        endpoint: text("endpoint", "/valueUrl").ok_or(LocateError::MissingPart("endpoint"))?,
        patient: text("patient", "/valueString").ok_or(LocateError::MissingPart("patient"))?,
        organization: text("organization", "/valueReference/reference"),
        name: text("organization", "/valueReference/display"),
        imaging_endpoint: text("imagingEndpoint", "/valueUrl"),
        kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_through_parameters() {
        let located = Located {
            person: Some("Patient/g1".into()),
            holders: vec![Holder {
                node: "a".into(),
                name: Some("Clinic A".into()),
                organization: Some("Organization/node-a".into()),
                endpoint: "https://a.example/fhir".into(),
                imaging_endpoint: Some("https://a.example/dicomweb".into()),
                patient: "17".into(),
                kinds: vec![Kind {
                    resource_type: "Condition".into(),
                    last_changed: "2026-12-01T10:00:00Z".into(),
                }],
            }],
        };
        let p = located.to_parameters();
        assert_eq!(Located::from_parameters(&p).unwrap(), located);
        assert_eq!(
            Located::from_parameters(&json!({"resourceType": "Bundle"})),
            Err(LocateError::NotParameters)
        );
        let bad =
            json!({"resourceType": "Parameters", "parameter": [{"name": "holder", "part": []}]});
        assert_eq!(
            Located::from_parameters(&bad),
            Err(LocateError::MissingPart("node"))
        );
    }
}
