//! The checks every write makes before it reaches the store, whoever sends it (a REST
//! interaction, a batch or transaction entry, an HL7 v2 message's Bundle, an imported file),
//! and [`EntryError`], what they refuse, typed: the web crate turns it into a status and an
//! OperationOutcome, HL7 v2 ingestion into an ERR segment, the import into a line on stderr.

use serde_json::Value;
use store::{IndexExtractor, SearchQuery, StoreError};

use crate::validation::{ValidationIssue, Validator};

/// Why one write was refused before (or while) it reached the store.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The request itself is malformed (no `request.url`, an unknown method, a bad `ifMatch`,
    /// an id that is not the URL's, no search criteria for a conditional write, ...);
    /// `expression` names the element when one is to blame.
    #[error("{message}")]
    Malformed {
        message: String,
        expression: Option<String>,
    },
    /// Not a resource type of FHIR R4.
    #[error("'{0}' is not a FHIR R4 resource type")]
    UnknownType(String),
    /// The resource fails validation: one issue per finding.
    #[error("{}", describe(.0))]
    Invalid(Vec<ValidationIssue>),
    /// A PATCH entry that does not carry a JSON Patch (a Binary of content type
    /// `application/json-patch+json`).
    #[error("{0}")]
    UnsupportedPatch(String),
    /// A JSON Patch document that is not one.
    #[error("invalid JSON Patch document: {0}")]
    PatchSyntax(String),
    /// A JSON Patch that cannot be applied to the current version, or whose result changes the
    /// resource's type or id.
    #[error("{0}")]
    PatchFailed(String),
    /// The criteria of an `If-None-Exist` (`ifNoneExist`) are refused.
    #[error("If-None-Exist: {0}")]
    IfNoneExist(Box<EntryError>),
    /// The store refused (or could not run) the write or a read it needed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EntryError {
    /// A malformed request, no element named.
    pub fn malformed(message: impl Into<String>) -> Self {
        EntryError::Malformed {
            message: message.into(),
            expression: None,
        }
    }

    /// A malformed request naming the element to blame.
    pub fn malformed_at(message: impl Into<String>, expression: impl Into<String>) -> Self {
        EntryError::Malformed {
            message: message.into(),
            expression: Some(expression.into()),
        }
    }
}

/// Validation findings as one line: `message (expression)`, `; `-separated.
fn describe(issues: &[ValidationIssue]) -> String {
    issues
        .iter()
        .map(|i| match &i.expression {
            Some(e) => format!("{} ({e})", i.message),
            None => i.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A FHIR `id`: 1–64 of `A-Z a-z 0-9 - .`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A resource type named by a URL (or a file) must be one the validator knows.
pub fn check_type(validator: &dyn Validator, ty: &str) -> Result<(), EntryError> {
    if validator.is_resource_type(ty) {
        Ok(())
    } else {
        Err(EntryError::UnknownType(ty.to_owned()))
    }
}

/// A body's `resourceType` must be the one the URL names.
pub fn check_resource_type(resource: &Value, expected: &str) -> Result<(), EntryError> {
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == expected => Ok(()),
        Some(t) => Err(EntryError::malformed_at(
            format!("resourceType '{t}' does not match the URL's '{expected}'"),
            format!("{t}.resourceType"),
        )),
        None => Err(EntryError::malformed("the resource has no resourceType")),
    }
}

/// Runs the validator over a resource about to be written.
pub fn validate(validator: &dyn Validator, resource: &Value) -> Result<(), EntryError> {
    validator.validate(resource).map_err(EntryError::Invalid)
}

/// The search criteria of a conditional write (`[type]?criteria`); at least one is needed.
pub fn conditional_query(
    extractor: &dyn IndexExtractor,
    ty: &str,
    params: &[(String, String)],
) -> Result<SearchQuery, EntryError> {
    let q = SearchQuery::parse(Some(ty), params, extractor, false)?;
    if q.filters.is_empty() {
        return Err(EntryError::malformed(
            "a conditional interaction needs search criteria (e.g. ?identifier=system|value)",
        ));
    }
    Ok(q)
}

/// The query of an `If-None-Exist` header or `ifNoneExist` element (`identifier=...`,
/// optionally prefixed by `Type?`).
pub fn if_none_exist(
    extractor: &dyn IndexExtractor,
    ty: &str,
    value: &str,
) -> Result<SearchQuery, EntryError> {
    let criteria = value.split_once('?').map(|(_, q)| q).unwrap_or(value);
    let q = store::search::parse_query_string(criteria);
    conditional_query(extractor, ty, &q).map_err(|e| EntryError::IfNoneExist(Box::new(e)))
}

/// Parses an entity tag, `W/"3"` or `"3"`, as a version id.
pub fn parse_etag(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::R4Validator;
    use serde_json::json;

    #[test]
    fn ids_follow_the_fhir_id_rule() {
        assert!(valid_id("a-b.C9"));
        assert!(!valid_id(""));
        assert!(!valid_id("a_b"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn etags_parse_weak_and_strong() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("3"), None);
        assert_eq!(parse_etag("W/\"x\""), None);
    }

    #[test]
    fn refusals_say_what_and_where() {
        let e = check_type(&R4Validator, "Patients").unwrap_err();
        assert_eq!(e.to_string(), "'Patients' is not a FHIR R4 resource type");
        let e =
            check_resource_type(&json!({"resourceType": "Observation"}), "Patient").unwrap_err();
        let EntryError::Malformed { expression, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(expression.as_deref(), Some("Observation.resourceType"));
        let e = validate(
            &R4Validator,
            &json!({"resourceType": "Patient", "birthDate": "1970-13-01"}),
        )
        .unwrap_err();
        assert!(e.to_string().ends_with("(Patient.birthDate)"), "{e}");
        let extractor = store::BasicExtractor;
        let e = if_none_exist(&extractor, "Patient", "Patient?").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("If-None-Exist: a conditional interaction needs search criteria"),
            "{e}"
        );
    }
}
