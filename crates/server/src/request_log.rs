//! What every HTTP request passes through before and after its handler: a request id (the
//! client's `X-Request-Id` when it sends a usable one, a new UUID otherwise, echoed on the
//! response and carried into the request context), one access-log line per request, and
//! axum's own plain-text refusals as FHIR OperationOutcomes: the body-size limit's 413, and
//! the 400 of a path segment that is not UTF-8 once percent-decoded (`/fhir/Patient/%80`).
//!
//! The log line names the method, the path without its query string (search parameters can
//! carry names, birth dates and identifiers), the status, the duration and the request id;
//! nothing from headers or bodies.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The request-id header, read from clients and written on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// The limit [`log_and_tag`] names in a 413's OperationOutcome.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The middleware: see the module documentation.
pub async fn log_and_tag(
    State(limit): State<BodyLimit>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = match request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable_request_id(v))
    {
        Some(id) => id.to_owned(),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert(REQUEST_ID, value);
            }
            id
        }
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if is_plain_refusal(&response) {
        response = as_outcome(response, limit.0).await;
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if response.status().is_server_error() {
        tracing::warn!(target: "renkei::http", %method, path, status, ms, request_id = %id, "request");
    } else {
        tracing::info!(target: "renkei::http", %method, path, status, ms, request_id = %id, "request");
    }
    response
}

/// A client's request id is kept when it is short, printable ASCII without spaces (so it cannot
/// forge log lines or headers).
fn usable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// axum's own refusals are plain text (or have no body type); handlers answer FHIR JSON, and
/// the authorization endpoints OAuth JSON or HTML, which are left as they are.
fn is_plain_refusal(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("text/plain"))
}

/// The largest plain-text refusal read to carry its reason into an OperationOutcome.
const MAX_REFUSAL_BYTES: usize = 4096;

/// An error answer made by axum rather than by a handler (its extractors' rejections, the
/// body limit), as the OperationOutcome every other error answer is; anything else as it is.
async fn as_outcome(response: Response, limit: usize) -> Response {
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limit).into_response(),
        StatusCode::BAD_REQUEST => {
            let body = axum::body::to_bytes(response.into_body(), MAX_REFUSAL_BYTES)
                .await
                .unwrap_or_default();
            let reason = String::from_utf8_lossy(&body);
            let reason = if reason.trim().is_empty() {
                "malformed request"
            } else {
                reason.trim()
            };
            ApiError::bad_request(reason).into_response()
        }
        _ => response,
    }
}

/// 413 with an OperationOutcome naming the limit (`too-long`: denial-of-service protection).
pub fn too_large(limit: usize) -> ApiError {
    ApiError::too_long(format!(
        "the request body is larger than this server accepts ({limit} bytes; \
         the operator sets it with --max-body-size)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_could_forge_lines_are_replaced() {
        assert!(usable_request_id("3f2c-41aa"));
        assert!(!usable_request_id(""));
        assert!(!usable_request_id("a b"));
        assert!(!usable_request_id("a\nrequest"));
        assert!(!usable_request_id(&"x".repeat(129)));
    }
}
