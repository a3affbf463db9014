//! [update](https://hl7.org/fhir/R4/http.html#update): `PUT [base]/[type]/[id]` (creates the
//! resource with that id when absent, "update as create"), version-aware with `If-Match`
//! ([concurrency](https://hl7.org/fhir/R4/http.html#concurrency)); and
//! [conditional update](https://hl7.org/fhir/R4/http.html#cond-update): `PUT [base]/[type]?criteria`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value;
use store::WriteOp;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{
    Fhir, Reply, check_resource_type, check_type, if_match, parse_body, valid_id, validate,
};

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let version = if_match(&fhir.headers)?;
    let resource = parse_body(&fhir.headers, &body)?;
    Ok(update(&state, &fhir, &ty, &id, resource, version)
        .await?
        .into_http(fhir.pretty))
}

pub async fn update(
    state: &AppState,
    fhir: &Fhir,
    ty: &str,
    id: &str,
    resource: Value,
    if_match: Option<u64>,
) -> Result<Reply, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::bad_request(format!(
            "'{id}' is not a valid resource id"
        )));
    }
    check_resource_type(&resource, ty)?;
    match resource.get("id") {
        Some(Value::String(body_id)) if body_id == id => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the resource id {other} does not match the URL id '{id}'"
            ))
            .with_expression(format!("{ty}.id")));
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "the resource has no id; an update must carry the URL id '{id}'"
            ))
            .with_expression(format!("{ty}.id")));
        }
    }
    validate(state, &resource)?;
    let op = WriteOp::Update {
        resource_type: ty.into(),
        id: id.into(),
        resource,
        if_match,
    };
    let outcome = super::write(state, fhir, op).await?;
    Ok(super::outcome_reply(fhir, &outcome))
}

pub async fn conditional_handler(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let query = super::conditional_query(&state, &ty, &fhir.params)?;
    let resource = parse_body(&fhir.headers, &body)?;
    check_resource_type(&resource, &ty)?;
    if let Some(id) = resource.get("id")
        && !id.as_str().is_some_and(valid_id)
    {
        return Err(ApiError::bad_request(format!(
            "{id} is not a valid resource id"
        )));
    }
    validate(&state, &resource)?;
    let outcome = super::write(
        &state,
        &fhir,
        WriteOp::ConditionalUpdate { query, resource },
    )
    .await?;
    Ok(super::outcome_reply(&fhir, &outcome).into_http(fhir.pretty))
}
