//! [vread](https://hl7.org/fhir/R4/http.html#vread): `GET [base]/[type]/[id]/_history/[vid]`.
//! A version that is a deletion answers 410 Gone; a current copy on the client, 304
//! (`conditional_read`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, Return, check_type};

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, id, vid)): Path<(String, String, String)>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    let reply = vread(&state, &fhir, &ty, &id, &vid).await?;
    Ok(crate::conditional_read::apply(&fhir.headers, reply).into_http(fhir.pretty))
}

pub async fn vread(
    state: &AppState,
    fhir: &Fhir,
    ty: &str,
    id: &str,
    vid: &str,
) -> Result<Reply, ApiError> {
    check_type(state, ty)?;
    let Ok(version) = vid.parse::<u64>() else {
        return Err(ApiError::not_found(format!(
            "{ty}/{id}/_history/{vid} not found (version ids are integers)"
        )));
    };
    if ty == "AuditEvent"
        && let Some(auditor) = &state.auditor
    {
        // An audit record never changes: its one version is 1.
        if version != 1 {
            return Err(ApiError::not_found(format!(
                "{ty}/{id}/_history/{vid} not found (audit records have one version)"
            )));
        }
        return super::audit_events::read(auditor.log().as_ref(), fhir, id).await;
    }
    crate::security::check_scope_filter(state, fhir, ty, id).await?;
    let r = state.store.vread(&fhir.ctx, ty, id, version).await?;
    Ok(Reply::resource(StatusCode::OK, &r, Return::Representation, "read").audited(fhir, &r))
}
