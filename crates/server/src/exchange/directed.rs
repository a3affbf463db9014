//! Directed exchange between nodes: a document Bundle (referral letter, discharge summary,
//! 診療情報提供書) sent to a recipient found in the hub's directory.
//!
//! - `POST [node]/fhir/$send` (Parameters: `recipient`, an Organization of the hub's
//!   directory or a node id; `document`, the Bundle): the document is checked (a document
//!   Bundle with an identifier and a Composition first, valid FHIR), its recipient resolved to
//!   a node's FHIR endpoint through the hub's directory, signed (a detached JWS with the node's
//!   key over the exact bytes that will be sent) and queued in the `exchange_dispatch` table
//!   before the answer (202) leaves: a restart never loses it.
//! - [`deliver`]: the sender's background task. Each queued message is posted when due to the
//!   recipient's `/exchange/inbox` with a token the hub issued for the recipient, retried
//!   with back-off (`exchange::directed::RetryPolicy`) until a receipt comes back, which is
//!   then kept in the sender's store as a `Communication`.
//! - `POST [node]/exchange/inbox`: the receiver checks the hub's token, the sender's signature
//!   (its keys as the hub publishes them) and the document, then stores the Bundle and an
//!   inbox `Task` with a receipt in one keyed commit (key: sender and document identifier),
//!   so a second delivery writes nothing and is answered with a duplicate receipt.
//! - `GET [hub]/exchange/nodes/{id}/jwks`: a node's public keys, for checking its signatures.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use exchange::directed::{self, Dispatch, DispatchState, RetryPolicy};
use exchange::registration::NodeStatus;
use serde_json::{Value, json};
use store::{
    ExchangeState, ExchangeTable, KeyedWrite, Receipt, RequestContext, Store, StoreError,
    WriteEntry, WriteOp,
};

use super::node::{LinkError, NodeLink};
use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply};
use crate::security::Admitted;

/// The header carrying the detached JWS over the body.
pub const SIGNATURE_HEADER: &str = "x-renkei-signature";

fn now_instant() -> String {
    store::time::format_instant(store::time::now_micros())
}

fn node_link(state: &AppState) -> Result<Arc<NodeLink>, ApiError> {
    super::node_link_of(state).ok_or_else(|| {
        ApiError::not_found(
            "directed exchange needs a node of a network (renkei serve --role node)",
        )
    })
}

/// `GET [hub]/exchange/nodes/{id}/jwks`.
pub async fn node_keys(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hub = super::hub::hub(&state)?;
    match super::hub::registration(hub.state.as_ref(), &id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Some(r) if r.status == NodeStatus::Approved => {
            Ok(Reply::json(StatusCode::OK, r.request.jwks).into_http(false))
        }
        _ => Err(ApiError::not_found(format!("no approved node {id}"))),
    }
}

/// `POST [node]/fhir/$send`.
pub async fn send(
    State(state): State<AppState>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    let link = node_link(&state)?;
    let exchange_state = state
        .exchange
        .as_ref()
        .map(|e| e.state.clone())
        .ok_or_else(|| ApiError::internal("no exchange state"))?;
    let params: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unparsable(format!("the body is not JSON: {e}")))?;
    if params.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request("$send takes a Parameters resource")
            .with_expression("Parameters"));
    }
    let param = |name: &str| {
        params
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
    };
    let document = param("document")
        .and_then(|p| p.get("resource"))
        .ok_or_else(|| {
            ApiError::bad_request("$send needs a 'document' parameter holding the Bundle")
                .with_expression("Parameters.parameter[document].resource")
        })?;
    let identifier = checked_document(&state, document)?;
    let recipient = param("recipient").ok_or_else(|| {
        ApiError::bad_request(
            "$send needs a 'recipient': an Organization of the network's directory \
             (valueReference) or a node id (valueString)",
        )
        .with_expression("Parameters.parameter[recipient]")
    })?;
    let requester = fhir.admitted.as_ref().map(|a| a.caller.claims.sub.clone());
    let (node, endpoint) = resolve_recipient(&link, recipient, requester.as_deref()).await?;
    let bytes = serde_json::to_vec(document).map_err(|e| ApiError::internal(e.to_string()))?;
    let signature = link
        .sign(&bytes)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| ApiError::internal(e.to_string()))?;
    let key = format!("{node}|{identifier}");
    if let Some(existing) = exchange_state.get(ExchangeTable::Dispatch, &key).await? {
        let d: Dispatch =
            serde_json::from_str(&existing).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(Reply::json(StatusCode::OK, dispatch_status(&d)).into_http(fhir.pretty));
    }
    let dispatch = Dispatch::new(
        identifier,
        node,
        endpoint,
        text,
        signature,
        chrono::Utc::now().timestamp(),
    );
    let row = serde_json::to_string(&dispatch).map_err(|e| ApiError::internal(e.to_string()))?;
    exchange_state
        .put(ExchangeTable::Dispatch, &key, &row)
        .await?;
    Ok(Reply::json(StatusCode::ACCEPTED, dispatch_status(&dispatch)).into_http(fhir.pretty))
}

/// The identifier of `document` once it is checked as a directed message's document (a
/// document Bundle with an identifier and a Composition first) and as FHIR; the 400 naming
/// the element otherwise.
fn checked_document(state: &AppState, document: &Value) -> Result<String, ApiError> {
    let identifier = directed::document_identifier(document).map_err(|e| {
        let directed::DirectedError::Element { at, .. } = &e;
        let at = at.clone();
        ApiError::bad_request(e.to_string()).with_expression(at)
    })?;
    state
        .validator
        .validate(document)
        .map_err(ApiError::invalid_resource)?;
    Ok(identifier)
}

/// Where a message stands, as Parameters.
fn dispatch_status(d: &Dispatch) -> Value {
    let status = match &d.state {
        DispatchState::Queued => "queued",
        DispatchState::Delivered { .. } => "delivered",
        DispatchState::Failed { .. } => "failed",
    };
    json!({"resourceType": "Parameters", "parameter": [
        {"name": "message", "valueString": d.id},
        {"name": "recipient", "valueString": d.recipient_node},
        {"name": "status", "valueCode": status},
        {"name": "attempts", "valueInteger": d.attempts}
    ]})
}

/// The node and FHIR endpoint of a `$send` recipient, through the hub's directory.
async fn resolve_recipient(
    link: &NodeLink,
    recipient: &Value,
    requester: Option<&str>,
) -> Result<(String, String), ApiError> {
    let hub = link.settings.hub.trim_end_matches('/').to_owned();
    let unreachable = |e: LinkError| ApiError::unavailable(format!("the hub's directory: {e}"));
    let token = link
        .token(&hub, requester, "TREAT")
        .await
        .map_err(unreachable)?;
    let organization = match (
        recipient
            .pointer("/valueReference/reference")
            .and_then(Value::as_str),
        recipient.get("valueString").and_then(Value::as_str),
    ) {
        (Some(r), _) => r.trim_start_matches(&format!("{hub}/")).to_owned(),
        (None, Some(node)) => format!(
            "Organization/{}",
            exchange::registration::organization_id(node)
        ),
        _ => {
            return Err(ApiError::bad_request(
                "recipient is a valueReference to an Organization or a valueString node id",
            )
            .with_expression("Parameters.parameter[recipient]"));
        }
    };
    if !organization.starts_with("Organization/") {
        return Err(ApiError::bad_request(format!(
            "recipient {organization} is not an Organization"
        ))
        .with_expression("Parameters.parameter[recipient].valueReference"));
    }
    let timeout = link.settings.query_timeout;
    let org = link
        .get_json(&format!("{hub}/{organization}"), &token, timeout)
        .await
        .map_err(|e| match e {
            LinkError::Refused(_, 404 | 410, _) => ApiError::bad_request(format!(
                "recipient {organization} is not in the network's directory"
            ))
            .with_expression("Parameters.parameter[recipient]"),
            other => unreachable(other),
        })?;
    let endpoints: Vec<String> = org
        .get("endpoint")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("reference").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    for reference in endpoints {
        let Ok(endpoint) = link
            .get_json(&format!("{hub}/{reference}"), &token, timeout)
            .await
        else {
            continue;
        };
        let fhir_rest = endpoint
            .pointer("/connectionType/code")
            .and_then(Value::as_str)
            == Some("hl7-fhir-rest");
        let active = endpoint.get("status").and_then(Value::as_str) == Some("active");
        let node = endpoint
            .get("identifier")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| {
                i.get("system").and_then(Value::as_str) == Some(exchange::registration::NODE_SYSTEM)
            })
            .and_then(|i| i.get("value").and_then(Value::as_str));
        if let (true, true, Some(node), Some(address)) = (
            fhir_rest,
            active,
            node,
            endpoint.get("address").and_then(Value::as_str),
        ) {
            return Ok((node.to_owned(), address.trim_end_matches('/').to_owned()));
        }
    }
    Err(ApiError::bad_request(format!(
        "{organization} has no active FHIR endpoint of a node of this network"
    ))
    .with_expression("Parameters.parameter[recipient]"))
}

/// `POST [node]/exchange/inbox`.
pub async fn inbox(
    State(state): State<AppState>,
    admitted: Option<Extension<Admitted>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let link = node_link(&state)?;
    let claims = admitted
        .as_ref()
        .map(|a| a.caller.claims.clone())
        .ok_or_else(|| ApiError::forbidden("a directed message needs the hub's token"))?;
    if claims.iss != link.hub_issuer() {
        return Err(ApiError::forbidden(
            "a directed message comes from a node of the network, with a token its hub issued",
        ));
    }
    let sender = claims.client_id.clone();
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "a directed message is signed: the {SIGNATURE_HEADER} header is missing"
            ))
        })?;
    let keys = link
        .peer_keys(&sender)
        .await
        .map_err(|e| ApiError::unavailable(format!("the sender's keys: {e}")))?;
    auth::client_key::verify_detached(signature, &body, &keys).map_err(|e| {
        ApiError::bad_request(format!(
            "the signature of node {sender} does not verify: {e}"
        ))
    })?;
    let bundle: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::unparsable(format!("the document is not JSON: {e}")))?;
    let identifier = checked_document(&state, &bundle)?;
    let received = now_instant();
    let task = directed::inbox_task(&bundle, &sender, &received)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stored = directed::stored_bundle_id(&identifier);
    let own = link.settings.node.clone();
    let reply = directed::receipt(&identifier, &own, &received, false);
    let key = format!("directed|{sender}|{identifier}");
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    let unit = KeyedWrite {
        receipt: Receipt {
            key: key.clone(),
            fingerprint: i64::from_be_bytes(first),
            code: "delivered".into(),
            reply: reply.to_string().into_bytes(),
            deferred: None,
        },
        entries: vec![
            WriteEntry::new(WriteOp::Update {
                resource_type: "Bundle".into(),
                id: stored.clone(),
                resource: with_id(bundle, &stored),
                if_match: None,
            })
            .as_internal(),
            WriteEntry::new(WriteOp::Update {
                resource_type: "Task".into(),
                id: exchange::namespace::copy_id(&sender, &stored),
                resource: task,
                if_match: None,
            })
            .as_internal(),
        ],
    };
    let ctx = RequestContext::system();
    let outcome = state.store.commit_keyed(&ctx, vec![unit]).await?;
    let answer = match outcome.into_iter().next() {
        Some(Ok(_)) => {
            tracing::info!(sender = %sender, document = %identifier, "directed message received");
            reply
        }
        Some(Err(StoreError::DuplicateKey(_))) => {
            directed::receipt(&identifier, &own, &received, true)
        }
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal("the store answered nothing")),
    };
    Ok(Reply::json(StatusCode::OK, answer).into_http(false))
}

fn with_id(mut bundle: Value, id: &str) -> Value {
    bundle["id"] = json!(id);
    bundle
}

/// The sender's background task: delivers due messages until `stop`.
pub async fn deliver(
    link: Arc<NodeLink>,
    state: Arc<dyn ExchangeState>,
    store: Arc<dyn Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let policy = RetryPolicy::default();
    loop {
        if let Err(e) = deliver_due(&link, state.as_ref(), store.as_ref(), &policy).await {
            tracing::warn!(error = %e, "directed messages: the queue could not be read");
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One pass over the queue: every message due now is tried once.
async fn deliver_due(
    link: &NodeLink,
    state: &dyn ExchangeState,
    store: &dyn Store,
    policy: &RetryPolicy,
) -> Result<(), StoreError> {
    let now = chrono::Utc::now().timestamp();
    for (key, text) in state.scan(ExchangeTable::Dispatch, "").await? {
        let Ok(mut d) = serde_json::from_str::<Dispatch>(&text) else {
            tracing::warn!(message = %key, "directed messages: an unreadable queue row is skipped");
            continue;
        };
        if !d.is_due(now) {
            continue;
        }
        match post(link, &d).await {
            Ok(receipt) => {
                keep_receipt(store, &d, &receipt).await?;
                d.delivered(receipt, now_instant());
                tracing::info!(message = %d.id, recipient = %d.recipient_node, "directed message delivered");
            }
            Err(e) => {
                d.after_failure(e.to_string(), now, policy);
                tracing::warn!(message = %d.id, recipient = %d.recipient_node, attempts = d.attempts, error = %e, "directed message not delivered yet");
            }
        }
        let row = serde_json::to_string(&d).map_err(|e| StoreError::Backend(e.to_string()))?;
        state.put(ExchangeTable::Dispatch, &key, &row).await?;
    }
    Ok(())
}

/// Posts one message; the receipt it got back.
async fn post(link: &NodeLink, d: &Dispatch) -> Result<Value, LinkError> {
    let token = link.token(&d.recipient_endpoint, None, "TREAT").await?;
    let issuer = crate::security::oauth::issuer_of(&d.recipient_endpoint);
    let url = format!("{issuer}/exchange/inbox");
    let receipt = link
        .post_signed(&url, &token, d.bundle.as_bytes(), &d.signature)
        .await?;
    directed::read_receipt(&receipt).map_err(|e| LinkError::Unreadable(url, e.to_string()))?;
    Ok(receipt)
}

/// Keeps the receiver's receipt in the sender's store.
async fn keep_receipt(store: &dyn Store, d: &Dispatch, receipt: &Value) -> Result<(), StoreError> {
    let id = exchange::namespace::copy_id(&d.recipient_node, &directed::stored_bundle_id(&d.id));
    let mut receipt = receipt.clone();
    receipt["id"] = json!(id);
    store
        .transaction(
            &RequestContext::system(),
            vec![
                WriteEntry::new(WriteOp::Update {
                    resource_type: "Communication".into(),
                    id,
                    resource: receipt,
                    if_match: None,
                })
                .as_internal(),
            ],
        )
        .await?;
    Ok(())
}
