//! `Patient/[id]/$summary` (IPS): the person's summary document, composed by
//! `exchange::summary` from what this server holds of every Patient linked to `id` (at the
//! hub: the nodes' published copies, so the summary answers while a holding node is offline).
//! `Patient/$summary` is the same for the patient of a patient-context token. Both read with
//! the caller's access policy, so consent and scopes apply as to any search.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use exchange::publish::SUMMARY_TYPES;
use serde_json::Value;
use store::search::{Cursor, SearchQuery};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply};

/// The most resources a summary reads.
const MAX_RESOURCES: usize = 20_000;

/// `GET Patient/[id]/$summary`.
pub async fn instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    summarise(&state, &fhir, &id).await
}

/// `GET Patient/$summary`: the token's own patient.
pub async fn own(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    let patient = fhir
        .admitted
        .as_ref()
        .and_then(|a| a.caller.claims.patient.clone())
        .ok_or_else(|| {
            ApiError::bad_request(
                "Patient/$summary without an id is the summary of a patient-context token's \
                 patient; ask Patient/[id]/$summary otherwise",
            )
        })?;
    summarise(&state, &fhir, &patient).await
}

async fn summarise(state: &AppState, fhir: &Fhir, id: &str) -> Result<Response, ApiError> {
    for (name, _) in &fhir.params {
        if !fhir.lenient && name != "_format" {
            return Err(ApiError::bad_request(format!(
                "unknown $summary parameter '{name}'"
            )));
        }
    }
    let owner = state.store.read(&fhir.ctx, "Patient", id).await?;
    let patient: Value = owner
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
        .ok_or_else(|| ApiError::internal(format!("Patient/{id} cannot be read")))?;
    let mut q = SearchQuery::everything_of(id, true);
    q.types = std::iter::once("Patient")
        .chain(SUMMARY_TYPES)
        .map(str::to_owned)
        .collect();
    q.total = store::search::TotalMode::None;
    q.count = 1000;
    let mut resources = Vec::new();
    loop {
        let page = state.store.search(&fhir.ctx, &q).await?;
        resources.extend(
            page.matches
                .iter()
                .filter_map(|m| m.body.as_deref())
                .filter_map(|b| serde_json::from_str::<Value>(b).ok()),
        );
        match page.next {
            Some(next) if resources.len() < MAX_RESOURCES => q.after = Some(Cursor::decode(&next)?),
            _ => break,
        }
    }
    let document = exchange::summary::compose(&exchange::summary::SummaryRequest {
        patient: &patient,
        resources: &resources,
        now: chrono::Utc::now(),
        author: Some(serde_json::json!({"display": format!("Renkei at {}", fhir.base)})),
        document_id: uuid::Uuid::new_v4().to_string(),
        recent_results_days: 365,
    })
    .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(Reply::json(StatusCode::OK, document).into_http(fhir.pretty))
}
