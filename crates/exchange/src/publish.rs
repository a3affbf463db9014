//! What a node publishes to the hub, read from its change feed: the body of each version of
//! the kinds the hub keeps (the directory, Patients, the summary's clinical kinds) and, for
//! every version in a Patient's compartment, that the node holds that kind of data for that
//! Patient and when it last changed (the record locator's "what and when").
//!
//! A batch is idempotent: the hub applies versions it has already seen again without harm,
//! so the node's feed consumer may deliver a batch twice after a crash (at least once).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The provider directory's kinds (IHE mCSD).
pub const DIRECTORY_TYPES: [&str; 6] = [
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "Endpoint",
];

/// The clinical kinds the hub keeps for its patient summaries (the hybrid model).
pub const SUMMARY_TYPES: [&str; 7] = [
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "Immunization",
    "Observation",
];

/// How much of its records a node shares with the hub. A node sharing summaries also sends
/// its patients' `Consent`s, so that the hub applies them to the copies it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    /// Directory, Patients and the summary's clinical kinds in clear.
    Summaries,
    /// Directory; Patients only as keyed hashes (`privacy`); no clinical bodies.
    Private,
}

impl Sharing {
    /// Whether a version of `resource_type` travels with its body.
    pub fn sends_body(self, resource_type: &str) -> bool {
        DIRECTORY_TYPES.contains(&resource_type)
            || resource_type == "Patient"
            || (self == Sharing::Summaries
                && (SUMMARY_TYPES.contains(&resource_type) || resource_type == "Consent"))
    }
}

/// One version, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishedChange {
    pub resource_type: String,
    /// The node's id of the resource.
    pub id: String,
    pub version: u64,
    /// A deletion.
    #[serde(default)]
    pub deleted: bool,
    /// The node's Patient ids whose compartments the version is in.
    #[serde(default)]
    pub compartments: Vec<String>,
    /// When the node committed the version (FHIR instant).
    pub last_updated: String,
    /// The version's body, for the kinds the hub keeps (`Sharing::sends_body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Value>,
}

/// A batch of versions from one node, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishBatch {
    /// How the node shares (so that the hub never keeps a clear Patient from a private node).
    pub sharing: Sharing,
    pub changes: Vec<PublishedChange>,
}

/// What the hub keeps per node, Patient and kind of data: the record locator's holding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The newest `last_updated` of a version of this kind in the Patient's compartment.
    pub last_changed: String,
}

impl Holding {
    /// Folds in a version committed at `at` (instants of one format compare as text).
    pub fn record(&mut self, at: &str) {
        if at > self.last_changed.as_str() {
            self.last_changed = at.to_owned();
        }
    }
}

/// The key of a holding: node, the node's Patient id, kind.
pub fn holding_key(node: &str, patient: &str, resource_type: &str) -> String {
    format!("{node}|{patient}|{resource_type}")
}

/// The key prefix of every holding of one node's Patient.
pub fn holding_prefix(node: &str, patient: &str) -> String {
    format!("{node}|{patient}|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_nodes_send_no_clinical_bodies() {
        assert!(Sharing::Summaries.sends_body("Condition"));
        assert!(!Sharing::Private.sends_body("Condition"));
        assert!(Sharing::Private.sends_body("Patient"));
        assert!(Sharing::Private.sends_body("PractitionerRole"));
        assert!(!Sharing::Summaries.sends_body("Encounter"));
        assert!(Sharing::Summaries.sends_body("Consent"));
        assert!(!Sharing::Private.sends_body("Consent"));
    }

    #[test]
    fn holdings_keep_the_latest_time() {
        let mut h = Holding {
            last_changed: "2026-01-02T00:00:00Z".into(),
        };
        h.record("2025-12-31T00:00:00Z");
        h.record("2026-03-01T00:00:00Z");
        assert_eq!(h.last_changed, "2026-03-01T00:00:00Z");
        assert!(holding_key("a", "1", "Condition").starts_with(&holding_prefix("a", "1")));
    }
}
