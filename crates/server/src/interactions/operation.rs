//! Instance-path operations: `POST [base]/[type]/$operation`. Renkei implements
//! [`Patient/$match`](https://hl7.org/fhir/R4/patient-operation-match.html): the `resource`
//! (a Patient, validated like a write), `onlyCertainMatches` and `count` parameters, answered
//! with a searchset Bundle of stored Patients, best first, each with `search.score` (the match
//! probability), the `match-grade` extension, and the per-field explanation of its score.
//! Patient's `$ihe-pix` and `$empi-*` go to [`super::empi_ops`]; any other `$operation` answers
//! 501 (an operation this server does not offer), and a POST to an instance that names no
//! operation answers 405 with the methods an instance takes.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use mpi::MatchError;
use mpi::resources::EXPLANATION_EXTENSION;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_type, parse_body, validate};

const MATCH_GRADE: &str = "http://hl7.org/fhir/StructureDefinition/match-grade";
/// Candidates returned when `count` is absent.
const DEFAULT_COUNT: usize = 10;

pub async fn handler(
    State(state): State<AppState>,
    Path((ty, operation)): Path<(String, String)>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    match (ty.as_str(), operation.as_str()) {
        ("Patient", "$match") => Ok(patient_match(&state, &fhir, &body)
            .await?
            .into_http(fhir.pretty)),
        ("Patient", "$ihe-pix") => super::empi_ops::pix_post(&state, &fhir, &body).await,
        ("Patient", op) if super::empi_ops::is_manual(op) => {
            super::empi_ops::manual(&state, &fhir, op, &body).await
        }
        (_, op) if op.starts_with('$') => Err(unsupported_operation(&format!("POST {ty}/{op}"))),
        // Not an operation: POST is no interaction on an instance.
        _ => Err(ApiError::method_not_allowed(
            &[
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ],
            format!("POST {ty}/{operation}: an instance takes GET, PUT, PATCH and DELETE"),
        )),
    }
}

/// 501 for an operation this server does not offer; `what` names it as asked
/// (`POST Observation/$match`, `$export`).
pub(crate) fn unsupported_operation(what: &str) -> ApiError {
    ApiError::unsupported_interaction(format!(
        "{what} is not supported (operations: POST Patient/$match, \
         GET Patient/[id]/$everything, GET or POST Patient/$ihe-pix, and POST Patient/$empi-link, \
         $empi-unlink, $empi-merge, $empi-unmerge)"
    ))
}

async fn patient_match(state: &AppState, fhir: &Fhir, body: &[u8]) -> Result<Reply, ApiError> {
    let parameters = parse_body(&fhir.headers, body)?;
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request("$match takes a Parameters resource")
            .with_expression("resourceType"));
    }
    let mut resource = None;
    let mut only_certain = false;
    let mut count = DEFAULT_COUNT;
    for (i, p) in parameters["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = |what: &str| format!("Parameters.parameter[{i}].{what}");
        match p["name"].as_str() {
            Some("resource") => resource = Some((p["resource"].clone(), at("resource"))),
            Some("onlyCertainMatches") => {
                only_certain = p["valueBoolean"].as_bool().ok_or_else(|| {
                    ApiError::bad_request("onlyCertainMatches needs valueBoolean")
                        .with_expression(at("valueBoolean"))
                })?;
            }
            Some("count") => {
                count = p["valueInteger"]
                    .as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ApiError::bad_request("count needs a positive valueInteger")
                            .with_expression(at("valueInteger"))
                    })? as usize;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown $match parameter {}",
                    other.unwrap_or("(no name)")
                ))
                .with_expression(at("name")));
            }
        }
    }
    let Some((patient, at)) = resource else {
        return Err(
            ApiError::bad_request("$match needs a 'resource' parameter holding a Patient")
                .with_expression("Parameters.parameter"),
        );
    };
    if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return Err(
            ApiError::bad_request("the 'resource' parameter must be a Patient").with_expression(at),
        );
    }
    validate(state, &patient)?;
    let matches = state
        .mpi
        .find(&fhir.ctx, &patient)
        .await
        .map_err(|e| match e {
            MatchError::Input(_) => ApiError::from(e).with_expression(at.clone()),
            MatchError::Store(_) => e.into(),
        })?;
    let mut entries = Vec::new();
    for m in matches
        .into_iter()
        .filter(|m| !only_certain || m.grade == "certain")
        .take(count)
    {
        let Some(stored) = state.store.load(&fhir.ctx, "Patient", &m.id).await? else {
            continue;
        };
        if stored.deleted {
            continue;
        }
        let resource: Value =
            serde_json::from_str(stored.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
        entries.push(json!({
            "fullUrl": format!("{}/Patient/{}", fhir.base, m.id),
            "resource": resource,
            "search": {
                "mode": "match",
                "score": (m.probability * 1e6).round() / 1e6,
                "extension": [
                    {"url": MATCH_GRADE, "valueCode": m.grade},
                    {"url": EXPLANATION_EXTENSION, "valueString": m.explanation}
                ]
            }
        }));
    }
    Ok(Reply::json(
        StatusCode::OK,
        json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        }),
    ))
}
