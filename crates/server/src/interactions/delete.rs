//! [delete](https://hl7.org/fhir/R4/http.html#delete): `DELETE [base]/[type]/[id]` (logical:
//! a deletion version is written, history is kept), version-aware with `If-Match`; and
//! [conditional delete](https://hl7.org/fhir/R4/http.html#3.1.0.7.1): `DELETE [base]/[type]?criteria`
//! (single match only; several matches answer 412).

use axum::extract::{Path, State};
use axum::response::Response;
use store::WriteOp;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_type, if_match};

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    let version = if_match(&fhir.headers)?;
    Ok(delete(&state, &fhir, &ty, &id, version)
        .await?
        .into_http(fhir.pretty))
}

pub async fn delete(
    state: &AppState,
    fhir: &Fhir,
    ty: &str,
    id: &str,
    if_match: Option<u64>,
) -> Result<Reply, ApiError> {
    check_type(state, ty)?;
    let op = WriteOp::Delete {
        resource_type: ty.into(),
        id: id.into(),
        if_match,
    };
    let outcome = state.store.write(&fhir.ctx, op).await?;
    Ok(super::outcome_reply(fhir, &outcome))
}

pub async fn conditional_handler(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let query = super::conditional_query(&state, &ty, &fhir.params)?;
    let outcome = state
        .store
        .write(&fhir.ctx, WriteOp::ConditionalDelete { query })
        .await?;
    Ok(super::outcome_reply(&fhir, &outcome).into_http(fhir.pretty))
}
