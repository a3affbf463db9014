//! [create](https://hl7.org/fhir/R4/http.html#create): `POST [base]/[type]`, with
//! [conditional create](https://hl7.org/fhir/R4/http.html#ccreate) through `If-None-Exist`.
//! The server assigns the id (any id in the body is ignored).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::Value;
use store::{SearchQuery, WriteOp};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_resource_type, check_type, parse_body, validate};

pub async fn handler(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let resource = parse_body(&fhir.headers, &body)?;
    let cond = match fhir.headers.get("if-none-exist") {
        Some(v) => Some(super::if_none_exist(
            &state,
            &ty,
            v.to_str()
                .map_err(|_| ApiError::bad_request("malformed If-None-Exist header"))?,
        )?),
        None => None,
    };
    Ok(create(&state, &fhir, &ty, resource, cond)
        .await?
        .into_http(fhir.pretty))
}

pub async fn create(
    state: &AppState,
    fhir: &Fhir,
    ty: &str,
    resource: Value,
    if_none_exist: Option<SearchQuery>,
) -> Result<Reply, ApiError> {
    check_resource_type(&resource, ty)?;
    validate(state, &resource)?;
    let op = WriteOp::Create {
        resource,
        if_none_exist,
    };
    let outcome = super::write(state, fhir, op).await?;
    Ok(super::outcome_reply(fhir, &outcome))
}
