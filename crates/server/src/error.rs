//! The one error table: every HTTP status of an error answer and every OperationOutcome
//! `issue.code` the server sends is chosen here, and nowhere else.
//!
//! - [`IssueCode`] is the closed set of issue codes (the FHIR R4 `issue-type` code system), so
//!   a free-string code cannot be written.
//! - [`ApiError`] is an error answer: a status, the OperationOutcome issues, and the headers
//!   the status needs (`WWW-Authenticate` on 401, `Allow` on 405). It is built only by its named
//!   constructors (`not_found`, `unprocessable`, `unauthorized`, ...), each one row of the
//!   table (the private `Failure`); a handler says what happened, never which status and code
//!   that is.
//! - The errors of the other layers become answers here, one `From` impl each: the store's
//!   (by [`ErrorKind`]), validation issues, the EMPI's [`ManualError`] and [`MatchError`], and
//!   JSON Patch's [`json_patch::PatchError`].
//!
//! Which status where: the FHIR REST rules (<https://hl7.org/fhir/R4/http.html>) first, then
//! HTTP's (RFC 9110). A request for an interaction or operation this server does not offer
//! at all answers 501; a parameter or variant it does not take inside one it does implement
//! answers 400 `not-supported` (as an unknown search parameter does), so the client can ask
//! differently. Internal detail (backend messages) is logged, never sent.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{ErrorKind, StoreError};

use ingest::{Severity, ValidationIssue};
use mpi::{ManualError, MatchError};

/// The `Retry-After` of a 503 (RFC 9110 §10.2.3): storage that is busy, or a patient index that
/// is loading, is usually back within seconds; it keeps clients from retrying in a tight loop.
const RETRY_AFTER_SECONDS: &str = "5";

/// An OperationOutcome `issue.code`: the FHIR R4 `issue-type` code system
/// (<https://hl7.org/fhir/R4/codesystem-issue-type.html>), all of it, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IssueCode {
    Invalid,
    Structure,
    Required,
    Value,
    Invariant,
    Security,
    Login,
    Unknown,
    Expired,
    Forbidden,
    Suppressed,
    Processing,
    NotSupported,
    Duplicate,
    MultipleMatches,
    NotFound,
    Deleted,
    TooLong,
    CodeInvalid,
    Extension,
    TooCostly,
    BusinessRule,
    Conflict,
    Transient,
    LockError,
    NoStore,
    Exception,
    Timeout,
    Incomplete,
    Throttled,
    Informational,
}

impl IssueCode {
    /// Every code, in the code system's order.
    pub const ALL: [IssueCode; 31] = [
        IssueCode::Invalid,
        IssueCode::Structure,
        IssueCode::Required,
        IssueCode::Value,
        IssueCode::Invariant,
        IssueCode::Security,
        IssueCode::Login,
        IssueCode::Unknown,
        IssueCode::Expired,
        IssueCode::Forbidden,
        IssueCode::Suppressed,
        IssueCode::Processing,
        IssueCode::NotSupported,
        IssueCode::Duplicate,
        IssueCode::MultipleMatches,
        IssueCode::NotFound,
        IssueCode::Deleted,
        IssueCode::TooLong,
        IssueCode::CodeInvalid,
        IssueCode::Extension,
        IssueCode::TooCostly,
        IssueCode::BusinessRule,
        IssueCode::Conflict,
        IssueCode::Transient,
        IssueCode::LockError,
        IssueCode::NoStore,
        IssueCode::Exception,
        IssueCode::Timeout,
        IssueCode::Incomplete,
        IssueCode::Throttled,
        IssueCode::Informational,
    ];

    /// The code as FHIR spells it (`"not-supported"`).
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Invalid => "invalid",
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invariant => "invariant",
            IssueCode::Security => "security",
            IssueCode::Login => "login",
            IssueCode::Unknown => "unknown",
            IssueCode::Expired => "expired",
            IssueCode::Forbidden => "forbidden",
            IssueCode::Suppressed => "suppressed",
            IssueCode::Processing => "processing",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Duplicate => "duplicate",
            IssueCode::MultipleMatches => "multiple-matches",
            IssueCode::NotFound => "not-found",
            IssueCode::Deleted => "deleted",
            IssueCode::TooLong => "too-long",
            IssueCode::CodeInvalid => "code-invalid",
            IssueCode::Extension => "extension",
            IssueCode::TooCostly => "too-costly",
            IssueCode::BusinessRule => "business-rule",
            IssueCode::Conflict => "conflict",
            IssueCode::Transient => "transient",
            IssueCode::LockError => "lock-error",
            IssueCode::NoStore => "no-store",
            IssueCode::Exception => "exception",
            IssueCode::Timeout => "timeout",
            IssueCode::Incomplete => "incomplete",
            IssueCode::Throttled => "throttled",
            IssueCode::Informational => "informational",
        }
    }
}

impl std::fmt::Display for IssueCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validator's issue kinds are a subset of the code system.
impl From<fhir::IssueCode> for IssueCode {
    fn from(code: fhir::IssueCode) -> Self {
        match code {
            fhir::IssueCode::Invalid => IssueCode::Invalid,
            fhir::IssueCode::Structure => IssueCode::Structure,
            fhir::IssueCode::Required => IssueCode::Required,
            fhir::IssueCode::Value => IssueCode::Value,
            fhir::IssueCode::CodeInvalid => IssueCode::CodeInvalid,
        }
    }
}

/// What went wrong, as the client is told: each variant is one row of the table, and
/// [`Failure::row`] is the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The request is malformed (a bad header, parameter or Bundle entry).
    BadRequest,
    /// The body cannot be parsed (not JSON, not an object, not a JSON Patch).
    Unparsable,
    /// The resource fails validation; its issues carry the validator's codes.
    InvalidResource,
    /// A write refers to a resource that is not on this server.
    MissingReference,
    /// A parameter or variant this server does not take, inside an interaction it implements.
    UnsupportedRequest,
    /// No credentials (RFC 6750 §3.1: the challenge carries no error code).
    NoToken,
    /// A token that is not accepted (`invalid_token`).
    InvalidToken,
    /// A token past its expiry (`invalid_token`).
    ExpiredToken,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The token lacks a scope the request needs (`insufficient_scope`).
    InsufficientScope,
    /// PIXm: a target system the index does not know (IHE ITI-83 asks for 403 `code-invalid`).
    UnknownTargetSystem,
    NotFound,
    /// A resource type this server does not serve (FHIR: 404 for an unsupported type).
    UnsupportedType,
    /// A method the resource does not take.
    MethodNotAllowed,
    /// A representation this server cannot produce (XML).
    NotAcceptable,
    /// The write collides with a concurrent one.
    Conflict,
    /// The resource is deleted.
    Gone,
    /// `If-Match` named a version that is not the current one.
    VersionConflict,
    /// A conditional interaction or reference matched more than one resource.
    MultipleMatches,
    /// The body is larger than the server accepts.
    TooLong,
    /// A content type this server does not read (XML, a patch format other than JSON Patch).
    UnsupportedMedia,
    /// Well-formed, but it cannot be carried out (a JSON Patch that does not apply).
    Unprocessable,
    /// Well-formed, but a business rule refuses it (an EMPI decision that contradicts the links).
    BusinessRule,
    /// A failure of the server itself.
    Internal,
    /// An interaction or operation this server does not offer (HTTP 501).
    UnsupportedInteraction,
    /// Storage is unavailable for now; a retry may work.
    Unavailable,
}

impl Failure {
    /// Every row.
    #[cfg(test)]
    const ALL: [Failure; 26] = [
        Failure::BadRequest,
        Failure::Unparsable,
        Failure::InvalidResource,
        Failure::MissingReference,
        Failure::UnsupportedRequest,
        Failure::NoToken,
        Failure::InvalidToken,
        Failure::ExpiredToken,
        Failure::Forbidden,
        Failure::InsufficientScope,
        Failure::UnknownTargetSystem,
        Failure::NotFound,
        Failure::UnsupportedType,
        Failure::MethodNotAllowed,
        Failure::NotAcceptable,
        Failure::Conflict,
        Failure::Gone,
        Failure::VersionConflict,
        Failure::MultipleMatches,
        Failure::TooLong,
        Failure::UnsupportedMedia,
        Failure::Unprocessable,
        Failure::BusinessRule,
        Failure::Internal,
        Failure::UnsupportedInteraction,
        Failure::Unavailable,
    ];

    /// The table: HTTP status and issue code of each failure.
    fn row(self) -> (StatusCode, IssueCode) {
        use IssueCode as C;
        use StatusCode as S;
        match self {
            Failure::BadRequest => (S::BAD_REQUEST, C::Invalid),
            Failure::Unparsable => (S::BAD_REQUEST, C::Structure),
            Failure::InvalidResource => (S::BAD_REQUEST, C::Invalid),
            Failure::MissingReference => (S::BAD_REQUEST, C::NotFound),
            Failure::UnsupportedRequest => (S::BAD_REQUEST, C::NotSupported),
            Failure::NoToken => (S::UNAUTHORIZED, C::Login),
            Failure::InvalidToken => (S::UNAUTHORIZED, C::Unknown),
            Failure::ExpiredToken => (S::UNAUTHORIZED, C::Expired),
            Failure::Forbidden => (S::FORBIDDEN, C::Forbidden),
            Failure::InsufficientScope => (S::FORBIDDEN, C::Forbidden),
            Failure::UnknownTargetSystem => (S::FORBIDDEN, C::CodeInvalid),
            Failure::NotFound => (S::NOT_FOUND, C::NotFound),
            Failure::UnsupportedType => (S::NOT_FOUND, C::NotSupported),
            Failure::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, C::NotSupported),
            Failure::NotAcceptable => (S::NOT_ACCEPTABLE, C::NotSupported),
            Failure::Conflict => (S::CONFLICT, C::Conflict),
            Failure::Gone => (S::GONE, C::Deleted),
            Failure::VersionConflict => (S::PRECONDITION_FAILED, C::Conflict),
            Failure::MultipleMatches => (S::PRECONDITION_FAILED, C::MultipleMatches),
            Failure::TooLong => (S::PAYLOAD_TOO_LARGE, C::TooLong),
            Failure::UnsupportedMedia => (S::UNSUPPORTED_MEDIA_TYPE, C::NotSupported),
            Failure::Unprocessable => (S::UNPROCESSABLE_ENTITY, C::Processing),
            Failure::BusinessRule => (S::UNPROCESSABLE_ENTITY, C::BusinessRule),
            Failure::Internal => (S::INTERNAL_SERVER_ERROR, C::Exception),
            Failure::UnsupportedInteraction => (S::NOT_IMPLEMENTED, C::NotSupported),
            Failure::Unavailable => (S::SERVICE_UNAVAILABLE, C::Transient),
        }
    }
}

/// One OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    pub diagnostics: String,
    pub expression: Option<String>,
}

/// An error answer: a status, the OperationOutcome issues explaining it, and the headers its
/// status calls for. Built only by the constructors below (a field is private).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a request is not authenticated: what its 401's `WWW-Authenticate: Bearer` challenge
/// (RFC 6750 §3) and issue code say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthenticated {
    /// The request carries no credentials: the challenge names the realm only (`login`).
    NoToken,
    /// The token is malformed, revoked or not for this server, for the reason given
    /// (`invalid_token`; `unknown`).
    InvalidToken(String),
    /// The token has expired (`invalid_token`; `expired`).
    ExpiredToken,
}

impl ApiError {
    /// The one error of a row, before any header.
    fn new(failure: Failure, diagnostics: impl Into<String>) -> Self {
        let (status, code) = failure.row();
        ApiError {
            status,
            issues: vec![Issue {
                severity: Severity::Error,
                code,
                diagnostics: diagnostics.into(),
                expression: None,
            }],
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 400 `invalid`: the request itself is malformed (a header, parameter or entry).
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::BadRequest, diagnostics)
    }

    /// 400 `structure`: the body cannot be parsed as what it must be.
    pub fn unparsable(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::Unparsable, diagnostics)
    }

    /// 400 `not-supported`: a parameter or variant this server does not take, inside an
    /// interaction it implements (for a whole interaction, see [`ApiError::unsupported_interaction`]).
    pub fn unsupported_request(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::UnsupportedRequest, diagnostics)
    }

    /// A rejected resource: 400 with one issue per validation finding, each with the
    /// validator's code (`structure`, `required`, `value`, `code-invalid`, `invalid`).
    pub fn invalid_resource(issues: Vec<ValidationIssue>) -> Self {
        let (status, _) = Failure::InvalidResource.row();
        ApiError {
            status,
            issues: issues
                .into_iter()
                .map(|i| Issue {
                    severity: i.severity,
                    code: i.code.into(),
                    diagnostics: i.message,
                    expression: i.expression,
                })
                .collect(),
            headers: Vec::new(),
        }
    }

    /// 401: the request is not authenticated. Carries the `WWW-Authenticate: Bearer`
    /// challenge of RFC 6750 §3 for `realm`; the issue code is `login` without a token,
    /// `unknown` for a token not accepted, `expired` for an expired one.
    pub fn unauthorized(realm: &str, why: Unauthenticated) -> Self {
        let (failure, error, diagnostics) = match why {
            Unauthenticated::NoToken => (
                Failure::NoToken,
                None,
                "this server needs a bearer token (Authorization: Bearer ...)".to_owned(),
            ),
            Unauthenticated::InvalidToken(reason) => {
                (Failure::InvalidToken, Some("invalid_token"), reason)
            }
            Unauthenticated::ExpiredToken => (
                Failure::ExpiredToken,
                Some("invalid_token"),
                "the bearer token has expired".to_owned(),
            ),
        };
        let challenge = bearer_challenge(realm, error.map(|e| (e, diagnostics.as_str())), None);
        Self::new(failure, diagnostics).with_header(header::WWW_AUTHENTICATE, challenge)
    }

    /// 403 `forbidden`: the caller is known, and not allowed to do this.
    pub fn forbidden(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::Forbidden, diagnostics)
    }

    /// 403 `forbidden` for a token without the scope the request needs: the
    /// `WWW-Authenticate: Bearer` challenge says `insufficient_scope` and names `scope`
    /// (RFC 6750 §3.1).
    pub fn insufficient_scope(realm: &str, scope: &str, diagnostics: impl Into<String>) -> Self {
        let diagnostics = diagnostics.into();
        let challenge = bearer_challenge(
            realm,
            Some(("insufficient_scope", diagnostics.as_str())),
            Some(scope),
        );
        Self::new(Failure::InsufficientScope, diagnostics)
            .with_header(header::WWW_AUTHENTICATE, challenge)
    }

    /// 404 `not-found`: no such resource, version or endpoint.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::NotFound, diagnostics)
    }

    /// 404 `not-supported`: `ty` is not a resource type this server serves (FHIR REST:
    /// "404 Not Found - resource type not supported").
    pub fn unsupported_type(ty: &str) -> Self {
        Self::new(
            Failure::UnsupportedType,
            format!("'{ty}' is not a FHIR R4 resource type"),
        )
    }

    /// 405 `not-supported`, with the `Allow` header listing `allowed` (RFC 9110 §15.5.6). An
    /// empty list leaves the header to the router, which knows the route's methods.
    pub fn method_not_allowed(allowed: &[Method], diagnostics: impl Into<String>) -> Self {
        let err = Self::new(Failure::MethodNotAllowed, diagnostics);
        if allowed.is_empty() {
            return err;
        }
        let list = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        match HeaderValue::from_str(&list) {
            Ok(v) => err.with_header(header::ALLOW, v),
            Err(_) => err,
        }
    }

    /// 406 `not-supported`: the client accepts no representation this server produces.
    pub fn not_acceptable(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::NotAcceptable, diagnostics)
    }

    /// 409 `conflict`: the write collides with a concurrent one; a retry may work.
    pub fn conflict(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::Conflict, diagnostics)
    }

    /// 413 `too-long`: the body is larger than this server accepts.
    pub fn too_long(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::TooLong, diagnostics)
    }

    /// 415 `not-supported`: a body of a content type this server does not read.
    pub fn unsupported_media(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::UnsupportedMedia, diagnostics)
    }

    /// 422 `processing`: well-formed, but it cannot be carried out as asked.
    pub fn unprocessable(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::Unprocessable, diagnostics)
    }

    /// 422 `business-rule`: well-formed, but a rule of this server refuses it.
    pub fn business_rule(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::BusinessRule, diagnostics)
    }

    /// 500 `exception`: the server failed. Say what failed, not the internals (log those).
    pub fn internal(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::Internal, diagnostics)
    }

    /// 501 `not-supported`: an interaction or operation this server does not offer.
    pub fn unsupported_interaction(diagnostics: impl Into<String>) -> Self {
        Self::new(Failure::UnsupportedInteraction, diagnostics)
    }

    /// 503 `transient`: a dependency (the store) is unavailable for now; a retry may work.
    pub fn unavailable(diagnostics: impl Into<String>) -> Self {
        // RFC 9110 §10.2.3: when to try again, so that clients do not retry in a tight loop.
        Self::new(Failure::Unavailable, diagnostics).with_header(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        )
    }

    pub fn with_expression(mut self, expression: impl Into<String>) -> Self {
        if let Some(i) = self.issues.first_mut() {
            i.expression = Some(expression.into());
        }
        self
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

    /// The value of header `name` this answer carries (`WWW-Authenticate`, `Allow`).
    pub fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The OperationOutcome resource.
    pub fn outcome(&self) -> Value {
        outcome(&self.issues)
    }
}

/// A `Bearer` challenge (RFC 6750 §3): the realm, and an error code with its description and
/// the scope needed when there is one. The description and scope keep only the characters
/// RFC 6750 allows in them (printable ASCII without `"` and `\`); the realm is a quoted-string.
fn bearer_challenge(realm: &str, error: Option<(&str, &str)>, scope: Option<&str>) -> HeaderValue {
    let allowed = |c: &char| matches!(*c, ' '..='~') && *c != '"' && *c != '\\';
    let realm: String = realm
        .chars()
        .filter(|c| matches!(*c, ' '..='~'))
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let mut value = format!("Bearer realm=\"{realm}\"");
    if let Some((code, description)) = error {
        let description: String = description.chars().filter(allowed).collect();
        value.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    if let Some(scope) = scope {
        let scope = scope
            .split(' ')
            .map(|s| s.chars().filter(allowed).collect::<String>())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        value.push_str(&format!(", scope=\"{scope}\""));
    }
    // Only printable ASCII is left, which a header value always takes.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// An OperationOutcome with the given issues.
pub fn outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity.as_str(),
                "code": i.code.as_str(),
                "diagnostics": i.diagnostics,
            });
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
        severity: Severity::Information,
        code: IssueCode::Informational,
        diagnostics: diagnostics.into(),
        expression: None,
    }])
}

impl From<StoreError> for ApiError {
    /// The store's errors, by kind; a transaction entry's error names the entry.
    fn from(e: StoreError) -> Self {
        let index = e.entry_index();
        let kind = e.kind();
        let inner = e.into_inner();
        let err = match kind {
            ErrorKind::NotFound => ApiError::not_found(inner.to_string()),
            ErrorKind::Gone => ApiError::new(Failure::Gone, inner.to_string()),
            ErrorKind::VersionConflict => {
                ApiError::new(Failure::VersionConflict, inner.to_string())
            }
            ErrorKind::MultipleMatches => {
                ApiError::new(Failure::MultipleMatches, inner.to_string())
            }
            ErrorKind::Invalid => match inner {
                // Referential integrity: what is missing, and where it is named.
                StoreError::MissingReference { ref element, .. } => {
                    let element = element.clone();
                    ApiError::new(Failure::MissingReference, inner.to_string())
                        .with_expression(element)
                }
                _ => ApiError::bad_request(inner.to_string()),
            },
            ErrorKind::Conflict => {
                tracing::error!(error = %inner, "store error");
                ApiError::conflict("the write conflicts with a concurrent write; retry")
            }
            ErrorKind::Forbidden => ApiError::forbidden(inner.to_string()),
            ErrorKind::Unavailable => {
                tracing::error!(error = %inner, "store error");
                ApiError::unavailable("storage is temporarily unavailable; retry")
            }
            ErrorKind::Backend => {
                tracing::error!(error = %inner, "store error");
                ApiError::internal("internal storage error (logged on the server)")
            }
        };
        match index {
            Some(i) => err.in_entry(i),
            None => err,
        }
    }
}

impl From<ManualError> for ApiError {
    /// EMPI manual decisions and PIXm.
    fn from(e: ManualError) -> Self {
        match e {
            ManualError::NotFound(m) => ApiError::not_found(m),
            ManualError::Invalid(m) => ApiError::business_rule(m),
            ManualError::UnknownTargetSystem(m) => ApiError::new(Failure::UnknownTargetSystem, m)
                .with_expression("Parameters.parameter.where(name = 'targetSystem')"),
            ManualError::Disabled => ApiError::unsupported_interaction(
                "EMPI linking is disabled on this server (started with --no-empi)",
            ),
            ManualError::Store(e) => e.into(),
        }
    }
}

impl From<MatchError> for ApiError {
    /// `$match`: an input Patient that cannot be matched is the request's fault.
    fn from(e: MatchError) -> Self {
        match e {
            MatchError::Input(m) => ApiError::bad_request(m),
            MatchError::Store(e) => e.into(),
        }
    }
}

impl From<json_patch::PatchError> for ApiError {
    /// A JSON Patch that does not apply to the current version (a failed `test`, a missing
    /// path): the document was well-formed, so 422.
    fn from(e: json_patch::PatchError) -> Self {
        ApiError::unprocessable(format!("the patch cannot be applied: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.outcome()).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, crate::http::FHIR_JSON)],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<ingest::EntryError> for ApiError {
    /// What `ingest`'s checks refuse (a REST write, a batch or transaction entry).
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
            EntryError::UnknownType(ty) => ApiError::unsupported_type(&ty),
            EntryError::Invalid(issues) => ApiError::invalid_resource(issues),
            EntryError::UnsupportedPatch(m) => ApiError::unsupported_media(m),
            EntryError::PatchSyntax(_) => ApiError::unparsable(e.to_string()),
            EntryError::PatchFailed(m) => ApiError::unprocessable(m),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(e: &ApiError) -> (u16, &'static str) {
        (e.status.as_u16(), e.issues[0].code.as_str())
    }

    /// Guards [`Failure::ALL`]: a new row that is not listed there does not compile here.
    fn listed(f: Failure) -> bool {
        match f {
            Failure::BadRequest
            | Failure::Unparsable
            | Failure::InvalidResource
            | Failure::MissingReference
            | Failure::UnsupportedRequest
            | Failure::NoToken
            | Failure::InvalidToken
            | Failure::ExpiredToken
            | Failure::Forbidden
            | Failure::InsufficientScope
            | Failure::UnknownTargetSystem
            | Failure::NotFound
            | Failure::UnsupportedType
            | Failure::MethodNotAllowed
            | Failure::NotAcceptable
            | Failure::Conflict
            | Failure::Gone
            | Failure::VersionConflict
            | Failure::MultipleMatches
            | Failure::TooLong
            | Failure::UnsupportedMedia
            | Failure::Unprocessable
            | Failure::BusinessRule
            | Failure::Internal
            | Failure::UnsupportedInteraction
            | Failure::Unavailable => Failure::ALL.contains(&f),
        }
    }

    #[test]
    fn issue_codes_are_the_fhir_issue_type_code_system() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/fhir/r4/valuesets.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (the shared R4 definitions)", path.display()));
        let bundle: Value = serde_json::from_str(&text).unwrap();
        let system = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|r| {
                r["resourceType"] == "CodeSystem" && r["url"] == "http://hl7.org/fhir/issue-type"
            })
            .expect("the issue-type code system");
        fn codes(concepts: &Value, out: &mut Vec<String>) {
            for c in concepts.as_array().into_iter().flatten() {
                out.push(c["code"].as_str().unwrap().to_owned());
                codes(&c["concept"], out);
            }
        }
        let mut spec = Vec::new();
        codes(&system["concept"], &mut spec);
        let ours: Vec<String> = IssueCode::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(ours, spec);
    }

    #[test]
    fn every_row_is_an_error_status_with_a_code_of_the_closed_set() {
        assert!(Failure::ALL.iter().all(|f| listed(*f)));
        for f in Failure::ALL {
            let (status, code) = f.row();
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{f:?}: {status}"
            );
            assert!(IssueCode::ALL.contains(&code), "{f:?}");
            assert_ne!(code, IssueCode::Informational, "{f:?}");
        }
    }

    /// The table as the constructors give it, every row once.
    #[test]
    fn the_constructors_are_the_table() {
        let realm = "renkei";
        let mut seen = Vec::new();
        let mut row = |e: ApiError, f: Failure, want: (u16, &str)| {
            assert_eq!(pair(&e), want, "{f:?}");
            assert_eq!(
                (e.status, e.issues[0].code),
                f.row(),
                "{f:?} is built from its row"
            );
            seen.push(f);
        };
        row(
            ApiError::bad_request("x"),
            Failure::BadRequest,
            (400, "invalid"),
        );
        row(
            ApiError::unparsable("x"),
            Failure::Unparsable,
            (400, "structure"),
        );
        row(
            ApiError::invalid_resource(vec![ValidationIssue {
                severity: Severity::Error,
                code: fhir::IssueCode::Invalid,
                expression: None,
                message: "x".into(),
            }]),
            Failure::InvalidResource,
            (400, "invalid"),
        );
        row(
            StoreError::MissingReference {
                element: "Observation.subject".into(),
                reference: "Patient/absent".into(),
            }
            .into(),
            Failure::MissingReference,
            (400, "not-found"),
        );
        row(
            ApiError::unsupported_request("x"),
            Failure::UnsupportedRequest,
            (400, "not-supported"),
        );
        row(
            ApiError::unauthorized(realm, Unauthenticated::NoToken),
            Failure::NoToken,
            (401, "login"),
        );
        row(
            ApiError::unauthorized(realm, Unauthenticated::InvalidToken("x".into())),
            Failure::InvalidToken,
            (401, "unknown"),
        );
        row(
            ApiError::unauthorized(realm, Unauthenticated::ExpiredToken),
            Failure::ExpiredToken,
            (401, "expired"),
        );
        row(
            ApiError::forbidden("x"),
            Failure::Forbidden,
            (403, "forbidden"),
        );
        row(
            ApiError::insufficient_scope(realm, "patient/*.read", "x"),
            Failure::InsufficientScope,
            (403, "forbidden"),
        );
        row(
            ManualError::UnknownTargetSystem("x".into()).into(),
            Failure::UnknownTargetSystem,
            (403, "code-invalid"),
        );
        row(
            ApiError::not_found("x"),
            Failure::NotFound,
            (404, "not-found"),
        );
        row(
            ApiError::unsupported_type("Patients"),
            Failure::UnsupportedType,
            (404, "not-supported"),
        );
        row(
            ApiError::method_not_allowed(&[Method::GET], "x"),
            Failure::MethodNotAllowed,
            (405, "not-supported"),
        );
        row(
            ApiError::not_acceptable("x"),
            Failure::NotAcceptable,
            (406, "not-supported"),
        );
        row(
            ApiError::conflict("x"),
            Failure::Conflict,
            (409, "conflict"),
        );
        row(
            StoreError::Gone {
                resource_type: "Patient".into(),
                id: "1".into(),
                version: 2,
            }
            .into(),
            Failure::Gone,
            (410, "deleted"),
        );
        row(
            StoreError::VersionConflict {
                resource_type: "Patient".into(),
                id: "1".into(),
                expected: 1,
                current: Some(2),
            }
            .into(),
            Failure::VersionConflict,
            (412, "conflict"),
        );
        row(
            StoreError::MultipleMatches {
                what: "x".into(),
                count: 2,
            }
            .into(),
            Failure::MultipleMatches,
            (412, "multiple-matches"),
        );
        row(ApiError::too_long("x"), Failure::TooLong, (413, "too-long"));
        row(
            ApiError::unsupported_media("x"),
            Failure::UnsupportedMedia,
            (415, "not-supported"),
        );
        row(
            ApiError::unprocessable("x"),
            Failure::Unprocessable,
            (422, "processing"),
        );
        row(
            ApiError::business_rule("x"),
            Failure::BusinessRule,
            (422, "business-rule"),
        );
        row(
            ApiError::internal("x"),
            Failure::Internal,
            (500, "exception"),
        );
        row(
            ApiError::unsupported_interaction("x"),
            Failure::UnsupportedInteraction,
            (501, "not-supported"),
        );
        row(
            ApiError::unavailable("x"),
            Failure::Unavailable,
            (503, "transient"),
        );
        assert_eq!(seen, Failure::ALL, "every row once, in the table's order");
    }

    /// One store error of each kind.
    fn of_kind(kind: ErrorKind) -> StoreError {
        match kind {
            ErrorKind::NotFound => StoreError::NotFound {
                resource_type: "Patient".into(),
                id: "1".into(),
                version: None,
            },
            ErrorKind::Gone => StoreError::Gone {
                resource_type: "Patient".into(),
                id: "1".into(),
                version: 2,
            },
            ErrorKind::VersionConflict => StoreError::VersionConflict {
                resource_type: "Patient".into(),
                id: "1".into(),
                expected: 1,
                current: Some(2),
            },
            ErrorKind::MultipleMatches => StoreError::MultipleMatches {
                what: "Patient?identifier=x".into(),
                count: 2,
            },
            ErrorKind::Conflict => StoreError::Conflict("unique violation".into()),
            ErrorKind::Invalid => StoreError::Invalid("unknown parameter".into()),
            ErrorKind::Forbidden => StoreError::Forbidden("history of every patient".into()),
            ErrorKind::Unavailable => StoreError::Unavailable("pool timeout".into()),
            ErrorKind::Backend => StoreError::Backend("secret detail".into()),
        }
    }

    #[test]
    fn every_store_error_kind_maps_to_a_status_and_a_code() {
        let kinds = [
            (ErrorKind::NotFound, (404, "not-found")),
            (ErrorKind::Gone, (410, "deleted")),
            (ErrorKind::VersionConflict, (412, "conflict")),
            (ErrorKind::MultipleMatches, (412, "multiple-matches")),
            (ErrorKind::Conflict, (409, "conflict")),
            (ErrorKind::Invalid, (400, "invalid")),
            (ErrorKind::Forbidden, (403, "forbidden")),
            (ErrorKind::Unavailable, (503, "transient")),
            (ErrorKind::Backend, (500, "exception")),
        ];
        for (kind, want) in kinds {
            let e = of_kind(kind);
            assert_eq!(e.kind(), kind);
            let err = ApiError::from(e);
            assert_eq!(pair(&err), want, "{kind:?}");
            // Internal detail stays in the log.
            assert!(!err.issues[0].diagnostics.contains("secret"), "{kind:?}");
            // In a transaction: the same row, naming the entry.
            let err = ApiError::from(StoreError::Entry {
                index: 3,
                source: Box::new(of_kind(kind)),
            });
            assert_eq!(pair(&err), want, "{kind:?} in an entry");
            assert_eq!(err.issues[0].expression.as_deref(), Some("Bundle.entry[3]"));
        }
        // The grouped-commit errors are conflicts.
        for e in [
            StoreError::DuplicateKey("k".into()),
            StoreError::GroupAborted,
        ] {
            assert_eq!(pair(&ApiError::from(e)), (409, "conflict"));
        }
        let missing = ApiError::from(StoreError::MissingReference {
            element: "Observation.subject".into(),
            reference: "Patient/absent".into(),
        });
        assert_eq!(
            missing.issues[0].expression.as_deref(),
            Some("Observation.subject")
        );
    }

    #[test]
    fn a_401_carries_a_bearer_challenge() {
        let www = |e: &ApiError| {
            e.header(&header::WWW_AUTHENTICATE)
                .expect("WWW-Authenticate")
                .to_str()
                .unwrap()
                .to_owned()
        };
        let none = ApiError::unauthorized("renkei", Unauthenticated::NoToken);
        assert_eq!(www(&none), r#"Bearer realm="renkei""#);
        let bad = ApiError::unauthorized(
            "a \"quoted\" realm",
            Unauthenticated::InvalidToken("signature \"x\" is not valid\n".into()),
        );
        assert_eq!(
            www(&bad),
            r#"Bearer realm="a \"quoted\" realm", error="invalid_token", error_description="signature x is not valid""#
        );
        assert_eq!(bad.issues[0].diagnostics, "signature \"x\" is not valid\n");
        let expired = ApiError::unauthorized("renkei", Unauthenticated::ExpiredToken);
        assert!(www(&expired).contains(r#"error="invalid_token""#));
        let scope = ApiError::insufficient_scope("renkei", "patient/Observation.read", "no");
        assert_eq!(
            www(&scope),
            r#"Bearer realm="renkei", error="insufficient_scope", error_description="no", scope="patient/Observation.read""#
        );
        // The header reaches the HTTP response; other errors carry none.
        let response = none.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = ApiError::forbidden("consent").into_response();
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn a_405_names_the_allowed_methods() {
        let e = ApiError::method_not_allowed(&[Method::GET, Method::PUT], "no");
        assert_eq!(e.header(&header::ALLOW).unwrap(), "GET, PUT");
        let response = e.into_response();
        assert_eq!(response.headers()[header::ALLOW], "GET, PUT");
        assert!(
            ApiError::method_not_allowed(&[], "no")
                .header(&header::ALLOW)
                .is_none()
        );
    }

    #[test]
    fn a_503_says_when_to_retry() {
        let response = ApiError::unavailable("the patient index is loading").into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        let from_store = ApiError::from(StoreError::Unavailable("loading".into()));
        assert_eq!(
            from_store.header(&header::RETRY_AFTER).unwrap(),
            RETRY_AFTER_SECONDS
        );
    }

    #[test]
    fn other_layers_errors_map_through_the_table() {
        assert_eq!(
            pair(&ManualError::NotFound("x".into()).into()),
            (404, "not-found")
        );
        assert_eq!(
            pair(&ManualError::Invalid("x".into()).into()),
            (422, "business-rule")
        );
        assert_eq!(pair(&ManualError::Disabled.into()), (501, "not-supported"));
        assert_eq!(
            pair(&ManualError::Store(StoreError::Unavailable("x".into())).into()),
            (503, "transient")
        );
        assert_eq!(
            pair(&MatchError::Input("x".into()).into()),
            (400, "invalid")
        );
        assert_eq!(
            pair(&MatchError::Store(of_kind(ErrorKind::NotFound)).into()),
            (404, "not-found")
        );
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "test", "path": "/a", "value": 1}])).unwrap();
        let failed = json_patch::patch(&mut json!({"a": 2}), &patch).unwrap_err();
        assert_eq!(pair(&failed.into()), (422, "processing"));
    }

    #[test]
    fn validation_codes_keep_their_meaning() {
        let pairs = [
            (fhir::IssueCode::Invalid, "invalid"),
            (fhir::IssueCode::Structure, "structure"),
            (fhir::IssueCode::Required, "required"),
            (fhir::IssueCode::Value, "value"),
            (fhir::IssueCode::CodeInvalid, "code-invalid"),
        ];
        for (theirs, ours) in pairs {
            assert_eq!(IssueCode::from(theirs).as_str(), theirs.as_str());
            assert_eq!(IssueCode::from(theirs).as_str(), ours);
        }
        let e = ApiError::invalid_resource(vec![ValidationIssue {
            severity: Severity::Error,
            code: fhir::IssueCode::Required,
            expression: Some("Patient.name".into()),
            message: "name is required".into(),
        }]);
        assert_eq!(e.outcome()["issue"][0]["code"], "required");
        assert_eq!(e.outcome()["issue"][0]["expression"][0], "Patient.name");
    }
}
