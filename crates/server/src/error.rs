//! Errors mapped once: the single table from store and validation errors to HTTP status and
//! OperationOutcome `issue.code`. Internal detail is logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{ErrorKind, StoreError};

use ingest::ValidationIssue;

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: &'static str,
    pub code: String,
    pub diagnostics: String,
    pub expression: Option<String>,
}

/// An error response: a status and the OperationOutcome issues explaining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, diagnostics: impl Into<String>) -> Self {
        ApiError {
            status,
            issues: vec![Issue {
                severity: "error",
                code: code.into(),
                diagnostics: diagnostics.into(),
                expression: None,
            }],
        }
    }

    /// 400, `invalid`: the request itself is malformed.
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }

    pub fn with_expression(mut self, expression: impl Into<String>) -> Self {
        if let Some(i) = self.issues.first_mut() {
            i.expression = Some(expression.into());
        }
        self
    }

    /// A rejected resource: 400 with one issue per validation finding.
    pub fn invalid_resource(issues: Vec<ValidationIssue>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            issues: issues
                .into_iter()
                .map(|i| Issue {
                    severity: i.severity.as_str(),
                    code: i.code,
                    diagnostics: i.message,
                    expression: i.expression,
                })
                .collect(),
        }
    }

    /// The error of bundle entry `index`: diagnostics and expressions say which entry.
    pub fn in_entry(mut self, index: usize) -> Self {
        for i in &mut self.issues {
            i.diagnostics = format!("Bundle.entry[{index}]: {}", i.diagnostics);
            i.expression = Some(match &i.expression {
                Some(e) => format!(
                    "Bundle.entry[{index}].resource.{}",
                    e.split_once('.').map(|x| x.1).unwrap_or(e)
                ),
                None => format!("Bundle.entry[{index}]"),
            });
        }
        self
    }

    /// The OperationOutcome resource.
    pub fn outcome(&self) -> Value {
        outcome(&self.issues)
    }
}

/// An OperationOutcome with the given issues.
pub fn outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v =
                json!({"severity": i.severity, "code": i.code, "diagnostics": i.diagnostics});
            if let Some(e) = &i.expression {
                v["expression"] = json!([e]);
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// An informational OperationOutcome (for `Prefer: return=OperationOutcome`).
pub fn information(diagnostics: impl Into<String>) -> Value {
    outcome(&[Issue {
        severity: "information",
        code: "informational".into(),
        diagnostics: diagnostics.into(),
        expression: None,
    }])
}

impl From<StoreError> for ApiError {
    /// The table: store error kind -> HTTP status and issue code.
    fn from(e: StoreError) -> Self {
        let index = e.entry_index();
        let kind = e.kind();
        let (status, code) = match kind {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            ErrorKind::Gone => (StatusCode::GONE, "deleted"),
            ErrorKind::VersionConflict => (StatusCode::PRECONDITION_FAILED, "conflict"),
            ErrorKind::MultipleMatches => (StatusCode::PRECONDITION_FAILED, "multiple-matches"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
            ErrorKind::Backend => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
        };
        let inner = e.into_inner();
        let diagnostics = match kind {
            ErrorKind::Backend | ErrorKind::Unavailable | ErrorKind::Conflict => {
                tracing::error!(error = %inner, "store error");
                match kind {
                    ErrorKind::Conflict => {
                        "the write conflicts with a concurrent write; retry".to_owned()
                    }
                    ErrorKind::Unavailable => {
                        "storage is temporarily unavailable; retry".to_owned()
                    }
                    _ => "internal storage error (logged on the server)".to_owned(),
                }
            }
            _ => inner.to_string(),
        };
        let err = match inner {
            // Referential integrity: what is missing, and where it is named.
            StoreError::MissingReference { element, .. } => {
                ApiError::new(status, "not-found", diagnostics).with_expression(element)
            }
            _ => ApiError::new(status, code, diagnostics),
        };
        match index {
            Some(i) => err.in_entry(i),
            None => err,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.outcome()).unwrap_or_default();
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, crate::http::FHIR_JSON)],
            body,
        )
            .into_response()
    }
}

impl From<ingest::EntryError> for ApiError {
    /// What `ingest`'s checks refuse (a REST write, a batch or transaction entry) -> HTTP
    /// status and issue code.
    fn from(e: ingest::EntryError) -> Self {
        use ingest::EntryError;
        match e {
            EntryError::Malformed {
                message,
                expression,
            } => {
                let err = ApiError::bad_request(message);
                match expression {
                    Some(x) => err.with_expression(x),
                    None => err,
                }
            }
            EntryError::UnknownType(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not-supported", e.to_string())
            }
            EntryError::Invalid(issues) => ApiError::invalid_resource(issues),
            EntryError::UnsupportedPatch(m) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", m)
            }
            EntryError::PatchSyntax(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "structure", e.to_string())
            }
            EntryError::PatchFailed(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", m)
            }
            EntryError::IfNoneExist(inner) => {
                let mut err = ApiError::from(*inner);
                if let Some(i) = err.issues.first_mut() {
                    i.diagnostics = format!("If-None-Exist: {}", i.diagnostics);
                }
                err
            }
            EntryError::Store(e) => e.into(),
        }
    }
}
