//! A node's registration with the hub: what the node sends (`RegistrationRequest`), and what
//! the hub keeps (`NodeRegistration`) until an operator approves or revokes it. The hub also
//! keeps each node as an `Organization` and an `Endpoint` of its provider directory
//! ([`organization`], [`endpoints`]); the ids of those are derived from the node id. A node
//! that presents a client certificate (mutual TLS) registers its SHA-256 fingerprint, which the
//! hub pins: the node's `Endpoint` carries it ([`TLS_CERTIFICATE_EXTENSION`]), the hub
//! publishes it to the other nodes ([`PublishedNode`]), and the node's calls must then come
//! over a connection presenting that certificate.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::publish::Sharing;

/// The identifier system of node ids in the hub's directory.
pub const NODE_SYSTEM: &str = "https://renkei.dev/fhir/NamingSystem/node";

/// The extension of a node's FHIR `Endpoint` holding the SHA-256 fingerprint (lowercase hex
/// of the DER) of the client certificate pinned for the node.
pub const TLS_CERTIFICATE_EXTENSION: &str =
    "https://renkei.dev/fhir/StructureDefinition/tls-certificate-sha256";

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
    /// The SHA-256 fingerprint (lowercase hex of the DER) of the client certificate it
    /// presents on every call, when it has one: the hub pins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_sha256: Option<String>,
}

/// Whether `text` is a SHA-256 fingerprint as registrations carry it: 64 lowercase hex digits.
pub fn valid_certificate_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the hub publishes about an approved node (`GET [hub]/exchange/nodes/{id}`): what the
/// other nodes need to check its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedNode {
    pub node: String,
    pub name: String,
    /// Its FHIR base URL.
    pub endpoint: String,
    pub status: NodeStatus,
    /// The fingerprint of its pinned client certificate; `None`: its calls need none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_sha256: Option<String>,
}

impl PublishedNode {
    /// What the hub publishes of registration `r`.
    pub fn of(r: &NodeRegistration) -> PublishedNode {
        PublishedNode {
            node: r.request.node.clone(),
            name: r.request.name.clone(),
            endpoint: r.request.endpoint.clone(),
            status: r.status,
            tls_certificate_sha256: r.request.tls_certificate_sha256.clone(),
        }
    }
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
/// `suspended` once revoked. The FHIR one carries the pinned client certificate's fingerprint
/// ([`TLS_CERTIFICATE_EXTENSION`]) when the node registered one.
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
    if let Some(pin) = &r.request.tls_certificate_sha256 {
        out[0]["extension"] = json!([{"url": TLS_CERTIFICATE_EXTENSION, "valueString": pin}]);
    }
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
                tls_certificate_sha256: None,
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
        assert!(eps[0].get("extension").is_none());
    }

    #[test]
    fn a_pinned_certificate_is_in_the_endpoint_and_what_the_hub_publishes() {
        let pin = "ab".repeat(32);
        // A row kept before pinning existed still reads, without a pin.
        let old = json!({"request": {"node": "a", "name": "Clinic A",
            "endpoint": "https://a.example/fhir", "jwks": {"keys": []}, "sharing": "summaries"},
            "status": "approved", "registered": "2026-12-06T00:00:00Z",
            "changed": "2026-12-06T00:00:00Z"});
        let mut r: NodeRegistration = serde_json::from_value(old).unwrap();
        assert_eq!(r.request.tls_certificate_sha256, None);
        assert_eq!(PublishedNode::of(&r).tls_certificate_sha256, None);
        r.request.tls_certificate_sha256 = Some(pin.clone());
        let eps = endpoints(&r);
        assert_eq!(eps[0]["extension"][0]["url"], TLS_CERTIFICATE_EXTENSION);
        assert_eq!(eps[0]["extension"][0]["valueString"], pin);
        fhir::validate_resource(&eps[0]).unwrap();
        let published = serde_json::to_value(PublishedNode::of(&r)).unwrap();
        assert_eq!(published["tlsCertificateSha256"], pin);
        assert_eq!(published["status"], "approved");
        let back: PublishedNode = serde_json::from_value(published).unwrap();
        assert_eq!(back.tls_certificate_sha256.as_deref(), Some(pin.as_str()));
    }

    #[test]
    fn fingerprints_are_64_lowercase_hex_digits() {
        assert!(valid_certificate_fingerprint(&"0f".repeat(32)));
        assert!(!valid_certificate_fingerprint(&"0F".repeat(32)));
        assert!(!valid_certificate_fingerprint(&"0f".repeat(31)));
        assert!(!valid_certificate_fingerprint(&"0f:".repeat(32)));
        assert!(!valid_certificate_fingerprint(&"zz".repeat(32)));
    }
}
