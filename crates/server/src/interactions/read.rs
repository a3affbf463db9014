//! [read](https://hl7.org/fhir/R4/http.html#read): `GET [base]/[type]/[id]`. A deleted resource
//! answers 410 Gone, an unknown one 404; a current copy on the client, 304
//! (`conditional_read`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, Return, check_type};

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    let reply = read(&state, &fhir, &ty, &id).await?;
    Ok(crate::conditional_read::apply(&fhir.headers, reply).into_http(fhir.pretty))
}

pub async fn read(state: &AppState, fhir: &Fhir, ty: &str, id: &str) -> Result<Reply, ApiError> {
    check_type(state, ty)?;
    if id.starts_with('$') {
        // Not an id (ids have no `$`): a type-level operation, such as Patient/$everything.
        return Err(super::operation::unsupported_operation(&format!(
            "GET {ty}/{id}"
        )));
    }
    if ty == "AuditEvent"
        && let Some(auditor) = &state.auditor
    {
        return super::audit_events::read(auditor.log().as_ref(), fhir, id).await;
    }
    crate::security::check_scope_filter(state, fhir, ty, id).await?;
    let r = state.store.read(&fhir.ctx, ty, id).await?;
    Ok(Reply::resource(StatusCode::OK, &r, Return::Representation, "read").audited(fhir, &r))
}
