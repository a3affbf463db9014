//! Query-based exchange at a node: `Patient/[id]/$everything?_network=true` and
//! `Patient/[id]/[type]?_network=true` (which `[type]?patient=[id]&_network=true` and
//! `[type]?subject=Patient/[id]&_network=true` are too).
//!
//! The node asks the hub's record locator where the person of its Patient `id` has records,
//! then queries every holder in parallel (its own store directly, the others over HTTP with a
//! token the hub issued for that holder, naming the requester and the purpose of use, so each
//! holder applies its own consent), each within the node's query timeout, following at most
//! [`MAX_PAGES`] pages. The answers are merged by `exchange::federate` (absolute references,
//! duplicates removed, one Provenance per holder, a warning naming each holder that did not
//! answer). Without a reachable locator the answer is this node's records and a warning.

use std::time::Duration;

use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, ReplyBody};
use exchange::federate::{NodeAnswer, merge};

/// Pages read from one holder at most.
const MAX_PAGES: usize = 10;

/// The merged answer of the network.
pub(crate) async fn network(
    state: &AppState,
    fhir: &Fhir,
    owner_id: &str,
    what: &str,
    params: Vec<(String, String)>,
) -> Result<Reply, ApiError> {
    let link = super::node_link_of(state).ok_or_else(|| {
        ApiError::bad_request(
            "_network=true asks the network through this node's hub; this server is not a \
             node of a network (renkei serve --role node --hub URL)",
        )
    })?;
    let (requester, purpose) = super::requester_and_purpose(fhir);
    let own = &link.settings.node;
    // This node's records (the owner must be visible to the caller here), while the locator
    // and the other holders are asked.
    let local = local_pages(state, fhir, owner_id, what, params.clone());
    let remote = elsewhere(
        state,
        fhir,
        &link,
        owner_id,
        what,
        &params,
        requester.as_deref(),
        &purpose,
    );
    let (local, remote) = tokio::join!(local, remote);
    let (resources, incomplete) = local?;
    let mut answers = vec![NodeAnswer {
        node: own.clone(),
        endpoint: fhir.base.clone(),
        organization: None,
        result: Ok(resources),
        incomplete,
    }];
    answers.extend(remote);
    let now = store::time::format_instant(store::time::now_micros());
    Ok(Reply::json(
        axum::http::StatusCode::OK,
        merge(&answers, &now),
    ))
}

/// Every page (up to [`MAX_PAGES`]) of this node's own answer, as the other holders' are read:
/// the merged answer has no paging of its own.
async fn local_pages(
    state: &AppState,
    fhir: &Fhir,
    owner_id: &str,
    what: &str,
    mut params: Vec<(String, String)>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let mut resources = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = super::super::interactions::search::compartment_reply(
            state,
            fhir,
            "Patient",
            owner_id,
            what,
            params.clone(),
        )
        .await?;
        let bundle = bundle_of(&reply);
        resources.extend(entries(&bundle));
        let Some((_, query)) = next_link(&bundle)
            .and_then(|n| n.split_once('?').map(|(a, b)| (a.to_owned(), b.to_owned())))
        else {
            return Ok((resources, None));
        };
        params = store::search::parse_query_string(&query);
        params.retain(|(n, _)| n != "_network");
    }
    Ok((resources, Some(cut_short())))
}

/// Why an answer of [`MAX_PAGES`] pages with more to come is incomplete.
fn cut_short() -> String {
    format!("more than {MAX_PAGES} pages; narrow the query with _type or _since")
}

/// A local reply's body as JSON.
fn bundle_of(reply: &Reply) -> Value {
    match &reply.body {
        ReplyBody::Json(v) => v.clone(),
        ReplyBody::Raw(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        ReplyBody::None => Value::Null,
    }
}

/// The matched and included resources of a searchset Bundle (not its OperationOutcomes).
fn entries(bundle: &Value) -> Vec<Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.pointer("/search/mode").and_then(Value::as_str) != Some("outcome"))
        .filter_map(|e| e.get("resource").cloned())
        .collect()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .map(str::to_owned)
}

/// What an error of this node's own query says.
fn describe(e: &ApiError) -> String {
    let why: Vec<&str> = e.issues.iter().map(|i| i.diagnostics.as_str()).collect();
    format!("{}: {}", e.status, why.join("; "))
}

/// What the other holders of the person answer (and this node's other Patients of the same
/// person), as the hub's locator names them; a warning answer when the locator cannot be asked.
#[allow(clippy::too_many_arguments)]
async fn elsewhere(
    state: &AppState,
    fhir: &Fhir,
    link: &std::sync::Arc<super::node::NodeLink>,
    owner_id: &str,
    what: &str,
    params: &[(String, String)],
    requester: Option<&str>,
    purpose: &str,
) -> Vec<NodeAnswer> {
    let own = &link.settings.node;
    let mut answers = Vec::new();
    let located = link
        .locate(
            &[("source", format!("Patient/{owner_id}"))],
            requester,
            purpose,
        )
        .await;
    let located = match located {
        Ok(l) => l,
        Err(e) => {
            answers.push(NodeAnswer {
                node: "hub".into(),
                endpoint: link.settings.hub.clone(),
                organization: None,
                result: Err(format!("the record locator could not be asked: {e}")),
                incomplete: None,
            });
            return answers;
        }
    };
    let mut tasks = Vec::new();
    for holder in located.holders {
        if holder.node == *own {
            if holder.patient != owner_id {
                // Another of this node's Patients is the same person.
                let reply = local_pages(state, fhir, &holder.patient, what, params.to_vec()).await;
                let (result, incomplete) = match reply {
                    Ok((resources, incomplete)) => (Ok(resources), incomplete),
                    Err(e) => (Err(describe(&e)), None),
                };
                answers.push(NodeAnswer {
                    node: own.clone(),
                    endpoint: fhir.base.clone(),
                    organization: holder.organization.clone(),
                    result,
                    incomplete,
                });
            }
            continue;
        }
        let link = link.clone();
        let requester = requester.map(str::to_owned);
        let purpose = purpose.to_owned();
        let query = crate::http::encode_query(params);
        let what = what.to_owned();
        tasks.push(tokio::spawn(async move {
            let timeout = link.settings.query_timeout;
            let endpoint = holder.endpoint.trim_end_matches('/').to_owned();
            let organization = holder
                .organization
                .as_ref()
                .map(|o| format!("{}/{o}", link.settings.hub.trim_end_matches('/')));
            let fetch = async {
                let token = link
                    .token(&endpoint, requester.as_deref(), &purpose)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut url = format!("{endpoint}/Patient/{}/{what}", holder.patient);
                if !query.is_empty() {
                    url = format!("{url}?{query}");
                }
                let mut resources = Vec::new();
                for _ in 0..MAX_PAGES {
                    let page = link
                        .get_json(&url, &token, timeout)
                        .await
                        .map_err(|e| e.to_string())?;
                    resources.extend(entries(&page));
                    match next_link(&page) {
                        Some(next) => url = next,
                        None => return Ok((resources, None)),
                    }
                }
                Ok::<_, String>((resources, Some(cut_short())))
            };
            let (result, incomplete) =
                match tokio::time::timeout(timeout + Duration::from_secs(1), fetch).await {
                    Ok(Ok((resources, incomplete))) => (Ok(resources), incomplete),
                    Ok(Err(e)) => (Err(e), None),
                    Err(_) => (
                        Err(format!("no answer within {} s", timeout.as_secs())),
                        None,
                    ),
                };
            NodeAnswer {
                node: holder.node,
                endpoint,
                organization,
                result,
                incomplete,
            }
        }));
    }
    for task in tasks {
        match task.await {
            Ok(answer) => answers.push(answer),
            Err(e) => tracing::warn!(error = %e, "a federated query task failed"),
        }
    }
    answers
}
