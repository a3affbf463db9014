//! A node's registration with the hub: what the node sends (`RegistrationRequest`), and what
//! the hub keeps (`NodeRegistration`) until an operator approves or revokes it. The hub also
//! keeps each node as an `Organization` and an `Endpoint` of its provider directory
//! ([`organization`], [`endpoint`]); the ids of those are derived from the node id.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::publish::Sharing;

/// The identifier system of node ids in the hub's directory.
pub const NODE_SYSTEM: &str = "https://renkei.dev/fhir/NamingSystem/node";

/// What a node asks the hub to register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRequest {
    /// The node's id in the network (`namespace::valid_node_id`).
    pub node: String,
    /// Its organisation's name.
    pub name: String,
    /// Its FHIR base URL.
    pub endpoint: String,
    /// Its DICOMweb (WADO-RS) base URL, when it serves images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imaging_endpoint: Option<String>,
    /// The public keys of its client assertions (a JWK Set).
    pub jwks: Value,
    /// How it shares records with the hub.
    pub sharing: Sharing,
}

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    /// Waiting for an operator.
    Pending,
    /// Approved: the node gets tokens, publishes and is queried.
    Approved,
    /// Revoked by an operator: no tokens, not queried.
    Revoked,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Pending => "pending",
            NodeStatus::Approved => "approved",
            NodeStatus::Revoked => "revoked",
        }
    }
}

/// What the hub keeps of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub request: RegistrationRequest,
    pub status: NodeStatus,
    /// When it was first asked for (FHIR instant).
    pub registered: String,
    /// When the status last changed (FHIR instant).
    pub changed: String,
}

impl NodeRegistration {
    /// The node's `Organization` id at the hub.
    pub fn organization_id(&self) -> String {
        organization_id(&self.request.node)
    }
}

/// The `Organization` id of node `node` at the hub.
pub fn organization_id(node: &str) -> String {
    format!("node-{node}")
}

/// The node's `Organization` in the hub's directory (active once approved).
pub fn organization(r: &NodeRegistration) -> Value {
    json!({
        "resourceType": "Organization",
        "id": r.organization_id(),
        "identifier": [{"system": NODE_SYSTEM, "value": r.request.node}],
        "active": r.status == NodeStatus::Approved,
        "name": r.request.name,
        "endpoint": [{"reference": format!("Endpoint/{}", r.organization_id())}],
    })
}

/// The node's FHIR `Endpoint` (and, when it serves images, its DICOMweb one, id suffixed
/// `-dicomweb`) in the hub's directory: `active` once approved, `off` while pending,
/// `suspended` once revoked.
pub fn endpoints(r: &NodeRegistration) -> Vec<Value> {
    let status = match r.status {
        NodeStatus::Pending => "off",
        NodeStatus::Approved => "active",
        NodeStatus::Revoked => "suspended",
    };
    let id = r.organization_id();
    let mut out = vec![json!({
        "resourceType": "Endpoint",
        "id": id,
        "identifier": [{"system": NODE_SYSTEM, "value": r.request.node}],
        "status": status,
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"},
        "name": format!("{} FHIR API", r.request.name),
        "managingOrganization": {"reference": format!("Organization/{id}")},
        "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "any"}]}],
        "payloadMimeType": ["application/fhir+json"],
        "address": r.request.endpoint,
    })];
    if let Some(dicom) = &r.request.imaging_endpoint {
        out.push(json!({
            "resourceType": "Endpoint",
            "id": format!("{id}-dicomweb"),
            "identifier": [{"system": NODE_SYSTEM, "value": r.request.node}],
            "status": status,
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "dicom-wado-rs"},
            "name": format!("{} DICOMweb", r.request.name),
            "managingOrganization": {"reference": format!("Organization/{id}")},
            "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "DICOM"}]}],
            "payloadMimeType": ["application/dicom"],
            "address": dicom,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_becomes_directory_entries() {
        let r = NodeRegistration {
            request: RegistrationRequest {
                node: "a".into(),
                name: "Clinic A".into(),
                endpoint: "https://a.example/fhir".into(),
                imaging_endpoint: Some("https://a.example/dicomweb".into()),
                jwks: json!({"keys": []}),
                sharing: Sharing::Summaries,
            },
            status: NodeStatus::Pending,
            registered: "2026-12-06T00:00:00Z".into(),
            changed: "2026-12-06T00:00:00Z".into(),
        };
        let org = organization(&r);
        assert_eq!(org["id"], "node-a");
        assert_eq!(org["active"], false);
        let eps = endpoints(&r);
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0]["status"], "off");
        assert_eq!(eps[1]["connectionType"]["code"], "dicom-wado-rs");
        for v in std::iter::once(&org).chain(&eps) {
            fhir::validate_resource(v).unwrap();
        }
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<NodeRegistration>(&text).unwrap(), r);
    }
}
