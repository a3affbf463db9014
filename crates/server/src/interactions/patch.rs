//! [patch](https://hl7.org/fhir/R4/http.html#patch): `PATCH [base]/[type]/[id]` with a
//! [JSON Patch](https://datatracker.ietf.org/doc/html/rfc6902) document
//! (`Content-Type: application/json-patch+json`). FHIRPath Patch is not supported.
//!
//! The patch is applied to the current version and the result is validated
//! (`ingest::patch::patched`) and written with an implicit version check, so a concurrent
//! update is never overwritten: without `If-Match` the patch is re-applied (up to three
//! times); with `If-Match` a mismatch answers 412.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use store::{ErrorKind, WriteEntry, WriteOp};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_type, if_match};

const RETRIES: usize = 3;

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let version = if_match(&fhir.headers)?;
    let patch = parse_patch(&fhir.headers, &body)?;
    Ok(patch_resource(&state, &fhir, &ty, &id, &patch, version)
        .await?
        .into_http(fhir.pretty))
}

/// Parses a JSON Patch body (415 for any other content type, 400 for a malformed document).
pub fn parse_patch(headers: &HeaderMap, body: &[u8]) -> Result<json_patch::Patch, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if ct.as_deref() != Some("application/json-patch+json") {
        return Err(ApiError::unsupported_media(
            "PATCH needs Content-Type application/json-patch+json (FHIRPath Patch is not supported)",
        ));
    }
    Ok(ingest::patch::parse_patch_document(body)?)
}

pub async fn patch_resource(
    state: &AppState,
    fhir: &Fhir,
    ty: &str,
    id: &str,
    patch: &json_patch::Patch,
    if_match: Option<u64>,
) -> Result<Reply, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (doc, base) = ingest::patch::patched(
            state.store.as_ref(),
            state.validator.as_ref(),
            &fhir.ctx,
            ty,
            id,
            patch,
            if_match,
        )
        .await?;
        let op = WriteOp::Update {
            resource_type: ty.into(),
            id: id.into(),
            resource: doc,
            if_match: Some(base),
        };
        match super::write_entry(state, fhir, WriteEntry::new(op).as_patch()).await {
            Ok(outcome) => return Ok(super::outcome_reply(fhir, &outcome)),
            Err(e)
                if e.kind() == ErrorKind::VersionConflict
                    && if_match.is_none()
                    && attempt < RETRIES =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
