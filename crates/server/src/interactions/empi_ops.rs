//! EMPI operations on `Patient`:
//!
//! - [IHE PIXm](https://profiles.ihe.net/ITI/PIXm/ITI-83.html) `$ihe-pix` (GET or POST):
//!   `sourceIdentifier` (`system|value`, required), `targetSystem` (repeatable) -> Parameters
//!   of `targetIdentifier` and `targetId` for every source Patient of the same person, and its
//!   golden record. Unknown identifier 404, unknown target system 403, as ITI-83 asks.
//! - Manual decisions, each taking a Parameters resource with a required `reason`:
//!   `$empi-link` (`source`, `golden`), `$empi-unlink` (`source`), `$empi-merge` (`from`,
//!   `into`), `$empi-unmerge` (`golden`). References are `valueReference` or `valueString`
//!   (`Patient/id` or `id`). The answer is a Parameters holding the changed golden records.
//!
//! The review queue is FHIR search:
//! `GET /fhir/Task?code=https://renkei.dev/fhir/CodeSystem/empi|review&status=requested`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use mpi::resources::patient_id_of;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, parse_body};

/// `GET [base]/Patient/$ihe-pix?sourceIdentifier=..&targetSystem=..`
pub async fn pix_get(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    let mut source = None;
    let mut targets = Vec::new();
    for (k, v) in &fhir.params {
        match k.as_str() {
            "sourceIdentifier" => source = Some(v.clone()),
            "targetSystem" => targets.extend(v.split(',').map(str::to_owned)),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown $ihe-pix parameter '{other}' (sourceIdentifier, targetSystem)"
                ))
                .with_expression(other.to_owned()));
            }
        }
    }
    pix(&state, &fhir, source, targets).await
}

/// `POST [base]/Patient/$ihe-pix` with a Parameters resource.
pub async fn pix_post(state: &AppState, fhir: &Fhir, body: &[u8]) -> Result<Response, ApiError> {
    let params = Params::parse(fhir, body, "$ihe-pix")?;
    let source = params.string("sourceIdentifier")?;
    let targets = params.strings("targetSystem");
    pix(state, fhir, source, targets).await
}

async fn pix(
    state: &AppState,
    fhir: &Fhir,
    source: Option<String>,
    targets: Vec<String>,
) -> Result<Response, ApiError> {
    let source = source.ok_or_else(|| {
        ApiError::bad_request("$ihe-pix needs sourceIdentifier=system|value")
            .with_expression("sourceIdentifier")
    })?;
    let (system, value) = source
        .split_once('|')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("sourceIdentifier must be system|value")
                .with_expression("sourceIdentifier")
        })?;
    let answer = state.mpi.pix(&fhir.ctx, system, value, &targets).await?;
    let mut parameter: Vec<Value> = answer
        .identifiers
        .into_iter()
        .map(|i| json!({"name": "targetIdentifier", "valueIdentifier": i}))
        .collect();
    parameter.extend(answer.patients.into_iter().map(|p| {
        json!({"name": "targetId", "valueReference": {"reference": format!("{}/{p}", fhir.base)}})
    }));
    let mut out = json!({"resourceType": "Parameters"});
    if !parameter.is_empty() {
        out["parameter"] = Value::Array(parameter);
    }
    Ok(Reply::json(StatusCode::OK, out).into_http(fhir.pretty))
}

/// The parameters of an operation's Parameters body, by name, with their positions.
struct Params {
    items: Vec<(String, Value, usize)>,
}

impl Params {
    fn parse(fhir: &Fhir, body: &[u8], op: &str) -> Result<Params, ApiError> {
        let parameters = parse_body(&fhir.headers, body)?;
        if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(
                ApiError::bad_request(format!("{op} takes a Parameters resource"))
                    .with_expression("resourceType"),
            );
        }
        let items = parameters["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| (p["name"].as_str().unwrap_or("").to_owned(), p.clone(), i))
            .collect();
        Ok(Params { items })
    }

    fn check_known(&self, op: &str, known: &[&str]) -> Result<(), ApiError> {
        for (name, _, i) in &self.items {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown {op} parameter '{name}' (expected: {})",
                    known.join(", ")
                ))
                .with_expression(format!("Parameters.parameter[{i}].name")));
            }
        }
        Ok(())
    }

    fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some((_, p, i)) = self.items.iter().find(|(n, _, _)| n == name) else {
            return Ok(None);
        };
        let v = p["valueString"]
            .as_str()
            .or_else(|| p["valueUri"].as_str())
            .or_else(|| p["valueCode"].as_str())
            .or_else(|| p["valueReference"]["reference"].as_str())
            .map(str::to_owned);
        let v = match v {
            Some(v) => Some(v),
            None => p["valueIdentifier"]["value"].as_str().map(|value| {
                format!(
                    "{}|{value}",
                    p["valueIdentifier"]["system"].as_str().unwrap_or("")
                )
            }),
        };
        v.map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("parameter '{name}' has no usable value"))
                .with_expression(format!("Parameters.parameter[{i}]"))
        })
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.items
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, p, _)| {
                p["valueUri"]
                    .as_str()
                    .or_else(|| p["valueString"].as_str())
                    .map(str::to_owned)
            })
            .collect()
    }

    /// A required Patient id (`Patient/id`, a full URL, or a bare id).
    fn patient(&self, name: &str, op: &str) -> Result<String, ApiError> {
        let raw = self.string(name)?.ok_or_else(|| {
            ApiError::bad_request(format!("{op} needs a '{name}' parameter"))
                .with_expression("Parameters.parameter")
        })?;
        let id = if raw.contains('/') {
            patient_id_of(&raw).map(str::to_owned)
        } else {
            Some(raw.clone())
        };
        id.filter(|id| crate::http::valid_id(id)).ok_or_else(|| {
            ApiError::bad_request(format!("'{raw}' is not a Patient reference"))
                .with_expression(format!("Parameters.parameter.where(name = '{name}')"))
        })
    }

    fn reason(&self, op: &str) -> Result<String, ApiError> {
        self.string("reason")?
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(format!("{op} needs a 'reason' (it is audited)"))
                    .with_expression("Parameters.parameter")
            })
    }
}

/// `POST [base]/Patient/$empi-{link,unlink,merge,unmerge}`.
pub async fn manual(
    state: &AppState,
    fhir: &Fhir,
    op: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let params = Params::parse(fhir, body, op)?;
    let decision = match op {
        "$empi-link" => {
            params.check_known(op, &["source", "golden", "reason"])?;
            Decision::Link(
                params.patient("source", op)?,
                params.patient("golden", op)?,
                params.reason(op)?,
            )
        }
        "$empi-unlink" => {
            params.check_known(op, &["source", "reason"])?;
            Decision::Unlink(params.patient("source", op)?, params.reason(op)?)
        }
        "$empi-merge" => {
            params.check_known(op, &["from", "into", "reason"])?;
            Decision::Merge(
                params.patient("from", op)?,
                params.patient("into", op)?,
                params.reason(op)?,
            )
        }
        "$empi-unmerge" => {
            params.check_known(op, &["golden", "reason"])?;
            Decision::Unmerge(params.patient("golden", op)?, params.reason(op)?)
        }
        _ => {
            return Err(super::operation::unsupported_operation(&format!(
                "POST Patient/{op}"
            )));
        }
    };
    // On a task of its own, so that a client going away cannot stop the decision between
    // planning it on the cache and putting the cache back.
    let (mpi, ctx) = (state.mpi.clone(), fhir.ctx.clone());
    let changed = tokio::spawn(async move {
        match decision {
            Decision::Link(source, golden, reason) => {
                mpi.link(&ctx, &source, &golden, &reason).await
            }
            Decision::Unlink(source, reason) => mpi.unlink(&ctx, &source, &reason).await,
            Decision::Merge(from, into, reason) => mpi.merge(&ctx, &from, &into, &reason).await,
            Decision::Unmerge(golden, reason) => mpi.unmerge(&ctx, &golden, &reason).await,
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("the EMPI decision task failed: {e}")))??;
    let parameter: Vec<Value> = state
        .mpi
        .golden_records(&fhir.ctx, &changed)
        .await?
        .into_iter()
        .map(|golden| json!({"name": "golden", "resource": golden}))
        .collect();
    Ok(Reply::json(
        StatusCode::OK,
        json!({"resourceType": "Parameters", "parameter": parameter}),
    )
    .into_http(fhir.pretty))
}

/// A manual decision, with its arguments (the last one is always the reason).
enum Decision {
    Link(String, String, String),
    Unlink(String, String),
    Merge(String, String, String),
    Unmerge(String, String),
}

/// Whether `op` is one of the manual decisions.
pub fn is_manual(op: &str) -> bool {
    matches!(
        op,
        "$empi-link" | "$empi-unlink" | "$empi-merge" | "$empi-unmerge"
    )
}
