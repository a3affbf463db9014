//! The one seam where resource validation plugs into every write: REST interactions and
//! bundles (the web crate re-uses it), HL7 v2 messages, SS-MIX2 files and imported files.
//!
//! [`Validator`] is what every write path calls before a write reaches the store.
//! [`R4Validator`] calls `fhir::validate_resource` (structure, JSON types, cardinality, required
//! elements, primitive formats, calendar dates, required code bindings, against the R4
//! StructureDefinitions) and maps its issues to [`ValidationIssue`]s. No FHIR structure
//! validator of its own lives here.
//!
//! It lives in `ingest` rather than in `fhir`: it is a policy of the write path (which
//! validator a deployment plugs in, and what the resource types it accepts are), while `fhir`
//! stays the definitions and the validation function, with no seam to plug into.

use serde_json::Value;

/// Severity of a validation issue (OperationOutcome `issue.severity`): the `fhir` crate's.
pub use fhir::Severity;

/// One problem found in a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    pub severity: Severity,
    /// What kind of problem (`structure`, `required`, `value`, `invalid`, ...).
    pub code: fhir::IssueCode,
    /// Where, as a FHIRPath-like path (`Patient.name[0].given`).
    pub expression: Option<String>,
    pub message: String,
}

/// Validates resources before they are written.
pub trait Validator: Send + Sync + std::fmt::Debug {
    /// Is `name` a resource type of FHIR R4?
    fn is_resource_type(&self, name: &str) -> bool;

    /// Every resource type a write may have (the server lists them in its CapabilityStatement).
    fn resource_types(&self) -> Vec<&'static str>;

    /// Checks a resource; issues of severity `error` or `fatal` reject the write.
    fn validate(&self, resource: &Value) -> Result<(), Vec<ValidationIssue>>;
}

/// Validation against the FHIR R4 definitions (`fhir::validate_resource`).
#[derive(Debug, Default, Clone, Copy)]
pub struct R4Validator;

impl Validator for R4Validator {
    fn is_resource_type(&self, name: &str) -> bool {
        fhir::r4().is_concrete_resource(name)
    }

    fn resource_types(&self) -> Vec<&'static str> {
        let defs = fhir::r4();
        let mut types: Vec<&'static str> = defs
            .resource_types()
            .filter(|t| defs.is_concrete_resource(t))
            .collect();
        types.sort_unstable();
        types
    }

    fn validate(&self, resource: &Value) -> Result<(), Vec<ValidationIssue>> {
        fhir::validate_resource(resource).map_err(|errors| {
            errors
                .issues
                .into_iter()
                .map(|issue| ValidationIssue {
                    severity: issue.severity,
                    code: issue.code,
                    expression: (!issue.expression.is_empty()).then_some(issue.expression),
                    message: issue.message,
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn knows_the_r4_resource_types() {
        assert!(R4Validator.is_resource_type("Patient"));
        assert!(!R4Validator.is_resource_type("Patients"));
        assert!(!R4Validator.is_resource_type("DomainResource"));
        assert_eq!(R4Validator.resource_types().len(), 146);
    }

    #[test]
    fn reports_the_offending_element() {
        let issues = R4Validator
            .validate(&json!({"resourceType": "Patient", "birthDate": "1970-13-01"}))
            .unwrap_err();
        assert_eq!(issues[0].expression.as_deref(), Some("Patient.birthDate"));
        assert_eq!(issues[0].severity, Severity::Error);
    }
}
