//! Images across the network: `POST [node]/fhir/ImagingStudy/$image-access`.
//!
//! A clinician at node A has found a study held at node B (a network search of the patient's
//! `ImagingStudy`s gives its absolute URL at B). A asks B for the study itself, with a token
//! the hub issued for B naming the requester and purpose, so B's consent decides; then asks
//! the hub for a short-lived token for B's DICOMweb (WADO-RS) endpoint, as listed in the
//! hub's directory, scoped to reading imaging studies. B's image server checks that token by
//! introspection at the hub (`/auth/introspect`, authenticating as node B), which answers
//! for the tokens issued for B's endpoints.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::node::LinkError;
use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply};
use exchange::registration::NODE_SYSTEM;

/// The scope of an image token.
pub const IMAGE_SCOPE: &str = "system/ImagingStudy.rs";

/// `POST ImagingStudy/$image-access` with a Parameters `study` (valueUrl: the study's
/// absolute URL at its holder).
pub async fn image_access(
    State(state): State<AppState>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    let link = super::node_link_of(&state).ok_or_else(|| {
        ApiError::not_found("image access goes through a node of a network (--role node)")
    })?;
    let params: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unparsable(format!("the body is not JSON: {e}")))?;
    let study_url = params
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("study"))
        .and_then(|p| {
            ["valueUrl", "valueUri", "valueString"]
                .iter()
                .find_map(|k| p.get(*k).and_then(Value::as_str))
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "$image-access needs a 'study' parameter: the study's URL at its holder",
            )
            .with_expression("Parameters.parameter[study]")
        })?
        .to_owned();
    let holder_base = study_url
        .rsplit_once("/ImagingStudy/")
        .map(|(base, _)| base.to_owned())
        .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "'{study_url}' is not an ImagingStudy's absolute URL"
            ))
            .with_expression("Parameters.parameter[study]")
        })?;
    let (requester, purpose) = super::requester_and_purpose(&fhir);
    let unavailable = |what: &str, e: LinkError| ApiError::unavailable(format!("{what}: {e}"));
    let timeout = link.settings.query_timeout;
    let hub = link.settings.hub.trim_end_matches('/').to_owned();
    let hub_token = link
        .token(&hub, requester.as_deref(), &purpose)
        .await
        .map_err(|e| unavailable("the hub", e))?;
    // The holder, and its DICOMweb endpoint, from the directory.
    let fhir_endpoints = link
        .get_json(
            &format!("{hub}/Endpoint?connection-type=hl7-fhir-rest&status=active&_count=1000"),
            &hub_token,
            timeout,
        )
        .await
        .map_err(|e| unavailable("the hub's directory", e))?;
    let node = resources(&fhir_endpoints)
        .find(|e| {
            e.get("address")
                .and_then(Value::as_str)
                .is_some_and(|a| a.trim_end_matches('/') == holder_base)
        })
        .and_then(node_of)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{holder_base} is not the FHIR endpoint of a node of this network"
            ))
            .with_expression("Parameters.parameter[study]")
        })?;
    let imaging = link
        .get_json(
            &format!(
                "{hub}/Endpoint?identifier={}&connection-type=dicom-wado-rs&status=active",
                crate::http::encode_query(&[("x".into(), format!("{NODE_SYSTEM}|{node}"))])
                    .trim_start_matches("x=")
            ),
            &hub_token,
            timeout,
        )
        .await
        .map_err(|e| unavailable("the hub's directory", e))?;
    let imaging = resources(&imaging)
        .find_map(|e| e.get("address").and_then(Value::as_str))
        .map(|a| a.trim_end_matches('/').to_owned())
        .ok_or_else(|| ApiError::not_found(format!("node {node} lists no DICOMweb endpoint")))?;
    // The study itself, as the holder lets this requester see it.
    let holder_token = link
        .token(&holder_base, requester.as_deref(), &purpose)
        .await
        .map_err(|e| unavailable("the hub", e))?;
    let study = link
        .get_json(&study_url, &holder_token, timeout)
        .await
        .map_err(|e| match e {
            LinkError::Refused(_, 404 | 410 | 403, why) => ApiError::not_found(format!(
                "node {node} does not show this study to you: {why}"
            )),
            other => unavailable(&format!("node {node}"), other),
        })?;
    let uid = study
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| i.get("system").and_then(Value::as_str) == Some("urn:dicom:uid"))
        .and_then(|i| i.get("value").and_then(Value::as_str))
        .map(|v| v.trim_start_matches("urn:oid:").to_owned())
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "{study_url} has no DICOM study instance UID (identifier system urn:dicom:uid)"
            ))
        })?;
    let (token, exp) = link
        .scoped_token(&imaging, requester.as_deref(), &purpose, IMAGE_SCOPE)
        .await
        .map_err(|e| unavailable("the hub", e))?;
    let expires_in = (exp - chrono::Utc::now().timestamp()).max(0);
    let answer = json!({"resourceType": "Parameters", "parameter": [
        {"name": "access_token", "valueString": token},
        {"name": "token_type", "valueString": "Bearer"},
        {"name": "expires_in", "valueInteger": expires_in},
        {"name": "scope", "valueString": IMAGE_SCOPE},
        {"name": "endpoint", "valueUrl": imaging},
        {"name": "studyInstanceUid", "valueString": uid},
        {"name": "wado", "valueUrl": format!("{imaging}/studies/{uid}")}
    ]});
    Ok(Reply::json(StatusCode::OK, answer).into_http(fhir.pretty))
}

fn resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
}

fn node_of(endpoint: &Value) -> Option<String> {
    endpoint
        .get("identifier")?
        .as_array()?
        .iter()
        .find(|i| i.get("system").and_then(Value::as_str) == Some(NODE_SYSTEM))?
        .get("value")?
        .as_str()
        .map(str::to_owned)
}
