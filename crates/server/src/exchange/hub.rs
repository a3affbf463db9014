//! The hub's side of the exchange.
//!
//! - `POST /exchange/register` (no token: a node asks to join): the registration is kept
//!   pending, the node's keys become a disabled backend-services client, and the node appears
//!   in the directory as an inactive `Organization` with an `off` `Endpoint`. Nothing is
//!   granted until an operator approves it ([`set_status`], `renkei nodes approve`). A node
//!   registering a client certificate's fingerprint registers over a connection presenting
//!   that certificate; the hub pins it (`super::pinning`).
//! - `GET /exchange/nodes/{id}` (no token): what the other nodes need of an approved node
//!   (`exchange::registration::PublishedNode`: its endpoint and pinned certificate).
//! - `POST /exchange/publish` (an approved node's token): a batch of the node's changes
//!   (`exchange::publish`). Copies are written under node-namespaced ids through the linking
//!   store, so the hub's patient index links the Patients of all nodes; directory entries are
//!   de-duplicated by business identifier; the holdings say which kinds of data each node
//!   holds for each of its Patients and when they last changed.
//! - `GET Patient/$locate`: where a person's records are (`exchange::locator`), found by
//!   identifier, by a node's own Patient id (`source`), by a hub Patient (`patient`), or by
//!   demographics through the patient index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use auth::registry::{Client, ClientKind};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use exchange::locator::{Holder, Kind, Located};
use exchange::namespace::{self, copy_id, split_copy_id};
use exchange::publish::{
    DIRECTORY_TYPES, Holding, PublishBatch, Sharing, holding_key, holding_prefix,
};
use exchange::registration::{
    self, NodeRegistration, NodeStatus, PublishedNode, RegistrationRequest,
};
use serde_json::{Value, json};
use store::{
    ExchangeState, ExchangeTable, Registry, RequestContext, SearchQuery, Store, StoreError,
    WriteEntry, WriteOp,
};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply};
use crate::security::Admitted;

/// The scopes an approved node's tokens may carry: it reads the network's records.
pub const NODE_SCOPE: &str = "system/*.rs";

/// The store lock that applies published batches one at a time.
pub const PUBLISH_LOCK: &str = "exchange-publish";

/// What went wrong with an operator's decision on a registration.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no node {0} has registered")]
    UnknownNode(String),
    #[error("node {0}: its stored registration cannot be read: {1}")]
    Unreadable(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now() -> String {
    store::time::format_instant(store::time::now_micros())
}

/// The exchange state of a server that is a hub; 404 for any other.
pub(crate) fn hub(state: &AppState) -> Result<&crate::exchange::Exchange, ApiError> {
    match &state.exchange {
        Some(e) if e.is_hub() => Ok(e),
        _ => Err(ApiError::not_found(
            "this server is not a hub (renkei serve --role hub)",
        )),
    }
}

/// One registration.
pub async fn registration(
    state: &dyn ExchangeState,
    node: &str,
) -> Result<Option<NodeRegistration>, HubError> {
    match state.get(ExchangeTable::Nodes, node).await? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| HubError::Unreadable(node.to_owned(), e.to_string())),
    }
}

/// Every registration, by node id.
pub async fn registrations(state: &dyn ExchangeState) -> Result<Vec<NodeRegistration>, HubError> {
    let mut out = Vec::new();
    for (id, text) in state.scan(ExchangeTable::Nodes, "").await? {
        out.push(serde_json::from_str(&text).map_err(|e| HubError::Unreadable(id, e.to_string()))?);
    }
    Ok(out)
}

async fn put_registration(
    store: &dyn Store,
    registry: &dyn Registry,
    state: &dyn ExchangeState,
    r: &NodeRegistration,
) -> Result<(), HubError> {
    let text = serde_json::to_string(r).map_err(|e| StoreError::Backend(e.to_string()))?;
    registry
        .put_client(&Client {
            id: r.request.node.clone(),
            kind: ClientKind::Backend,
            scope: NODE_SCOPE.into(),
            jwks: Some(r.request.jwks.to_string()),
            jwks_uri: None,
            redirect_uris: Vec::new(),
            organization: Some(format!("Organization/{}", r.organization_id())),
            disabled: r.status != NodeStatus::Approved,
        })
        .await?;
    let mut writes = vec![directory_write(registration::organization(r))];
    writes.extend(registration::endpoints(r).into_iter().map(directory_write));
    store.transaction(&RequestContext::system(), writes).await?;
    state
        .put(ExchangeTable::Nodes, &r.request.node, &text)
        .await?;
    Ok(())
}

fn directory_write(resource: Value) -> WriteEntry {
    let ty = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = resource["id"].as_str().unwrap_or_default().to_owned();
    WriteEntry::new(WriteOp::Update {
        resource_type: ty,
        id,
        resource,
        if_match: None,
    })
    .as_internal()
}

/// An operator's decision: approve or revoke node `node` (its client, its directory entries
/// and its registration change together).
pub async fn set_status(
    store: &dyn Store,
    registry: &dyn Registry,
    state: &dyn ExchangeState,
    node: &str,
    status: NodeStatus,
) -> Result<NodeRegistration, HubError> {
    let mut r = registration(state, node)
        .await?
        .ok_or_else(|| HubError::UnknownNode(node.to_owned()))?;
    if r.status != status {
        r.status = status;
        r.changed = now();
    }
    put_registration(store, registry, state, &r).await?;
    Ok(r)
}

/// `POST /exchange/register`.
pub async fn register(
    State(state): State<AppState>,
    presented: Option<Extension<crate::tls::ClientCertificate>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    let security = state.security.as_ref().ok_or_else(|| {
        ApiError::internal("a hub needs its authorization server, and it has none")
    })?;
    let request: RegistrationRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a node registration: {e}")))?;
    if !namespace::valid_node_id(&request.node) {
        return Err(ApiError::bad_request(format!(
            "node id '{}' must be 1 to 32 letters, digits or '-'",
            request.node
        ))
        .with_expression("node"));
    }
    if !(request.endpoint.starts_with("https://") || request.endpoint.starts_with("http://")) {
        return Err(
            ApiError::bad_request("endpoint must be the node's FHIR base URL")
                .with_expression("endpoint"),
        );
    }
    auth::registry::parse_jwks(&request.jwks.to_string())
        .map_err(|e| ApiError::bad_request(format!("jwks: {e}")).with_expression("jwks"))?;
    if let Some(pin) = &request.tls_certificate_sha256 {
        if !registration::valid_certificate_fingerprint(pin) {
            return Err(ApiError::bad_request(
                "tls_certificate_sha256 must be the SHA-256 of the certificate's DER as 64 \
                 lowercase hex digits",
            )
            .with_expression("tls_certificate_sha256"));
        }
        // The node shows it holds the certificate it asks to have pinned.
        super::pinning::check(&request.node, Some(pin), presented.as_deref())
            .map_err(|r| ApiError::forbidden(format!("registering a pinned certificate: {r}")))?;
    }
    let registry = security.registry();
    let existing = registration(hub.state.as_ref(), &request.node)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let answer = |r: &NodeRegistration, status: StatusCode| {
        Reply::json(
            status,
            json!({"node": r.request.node, "status": r.status.as_str()}),
        )
        .into_http(false)
    };
    match existing {
        Some(r) if r.request == request => Ok(answer(&r, StatusCode::OK)),
        Some(r) if r.status != NodeStatus::Pending => Err(ApiError::conflict(format!(
            "node {} is registered ({}) with other details; an operator must revoke and \
             remove it before it registers again",
            request.node,
            r.status.as_str()
        ))),
        existing => {
            if existing.is_none() && registry.client(&request.node).await?.is_some() {
                return Err(ApiError::conflict(format!(
                    "'{}' is already a client of this hub",
                    request.node
                )));
            }
            let now = now();
            let r = NodeRegistration {
                request,
                status: NodeStatus::Pending,
                registered: existing.map_or_else(|| now.clone(), |e| e.registered),
                changed: now,
            };
            put_registration(
                state.store.as_ref(),
                registry.as_ref(),
                hub.state.as_ref(),
                &r,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
            tracing::info!(node = %r.request.node, endpoint = %r.request.endpoint, "node registration pending");
            Ok(answer(&r, StatusCode::ACCEPTED))
        }
    }
}

/// `GET /exchange/nodes/{id}`: an approved node as the hub publishes it.
pub async fn published_node(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    match registration(hub.state.as_ref(), &id)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
    {
        Some(r) if r.status == NodeStatus::Approved => {
            let published = serde_json::to_value(PublishedNode::of(&r))
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(Reply::json(StatusCode::OK, published).into_http(false))
        }
        _ => Err(ApiError::not_found(format!("no approved node {id}"))),
    }
}

/// The approved node a request's token was issued to.
async fn calling_node(
    hub: &crate::exchange::Exchange,
    admitted: Option<&Admitted>,
) -> Result<NodeRegistration, ApiError> {
    let admitted = admitted.ok_or_else(|| {
        ApiError::forbidden("only an approved node may do this, with its access token")
    })?;
    let client = &admitted.caller.claims.client_id;
    match registration(hub.state.as_ref(), client).await {
        Ok(Some(r)) if r.status == NodeStatus::Approved => Ok(r),
        Ok(_) => Err(ApiError::forbidden(format!(
            "client {client} is not an approved node of this hub"
        ))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

/// `POST /exchange/publish`.
pub async fn publish(
    State(state): State<AppState>,
    admitted: Option<Extension<Admitted>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    let node = calling_node(hub, admitted.as_deref()).await?;
    let batch: PublishBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("not a publish batch: {e}")))?;
    if batch.sharing != node.request.sharing {
        return Err(ApiError::unprocessable(format!(
            "node {} registered to share {:?} but published {:?}",
            node.request.node, node.request.sharing, batch.sharing
        )));
    }
    let base = crate::http::fhir_base(&state, &headers);
    let applied = apply(&state, hub, &node.request.node, &base, batch).await?;
    Ok(Reply::json(StatusCode::OK, json!({"applied": applied})).into_http(false))
}

/// Applies a batch of node `node`'s changes: copies, deletions, holdings. Returns how many
/// changes it took.
async fn apply(
    state: &AppState,
    hub: &crate::exchange::Exchange,
    node: &str,
    base: &str,
    batch: PublishBatch,
) -> Result<usize, ApiError> {
    let ctx = RequestContext::system();
    // One batch at a time, whichever node and hub process it comes from: de-duplication reads
    // the directory before it writes, and two nodes publishing one entry at once must not
    // both find it missing.
    let _serial = state.store.lock_exclusive(&ctx, PUBLISH_LOCK).await?;
    let sharing = batch.sharing;
    // The node's aliases (directory entries the hub keeps under another node's id).
    let alias_prefix = format!("{node}|");
    let mut aliases: HashMap<String, String> = hub
        .state
        .scan(ExchangeTable::Aliases, &alias_prefix)
        .await?
        .into_iter()
        .map(|(k, v)| (k[alias_prefix.len()..].to_owned(), v))
        .collect();
    let mut holdings: BTreeMap<String, String> = BTreeMap::new();
    // The last version of each resource in the batch wins.
    let mut latest: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (i, c) in batch.changes.iter().enumerate() {
        if c.resource.as_ref().is_some_and(mpi::resources::is_golden) {
            // The node's own golden records: the hub links the sources itself.
            continue;
        }
        for p in &c.compartments {
            let key = holding_key(node, p, &c.resource_type);
            let at = holdings.entry(key).or_default();
            if c.last_updated > *at {
                *at = c.last_updated.clone();
            }
        }
        if sharing.sends_body(&c.resource_type) {
            latest.insert((c.resource_type.clone(), c.id.clone()), i);
        }
    }
    let count = batch.changes.len();
    let mut changes: Vec<Option<exchange::publish::PublishedChange>> =
        batch.changes.into_iter().map(Some).collect();
    let mut writes = Vec::new();
    for ((ty, id), i) in latest {
        let Some(c) = changes[i].take() else { continue };
        let own_id = copy_id(node, &id);
        let mut hub_id = aliases
            .get(&format!("{ty}|{id}"))
            .cloned()
            .unwrap_or_else(|| own_id.clone());
        if c.deleted {
            // A directory entry kept under another node's id stays; this node's alias goes.
            if hub_id == own_id {
                writes.push(
                    WriteEntry::new(WriteOp::Delete {
                        resource_type: ty.clone(),
                        id: own_id,
                        if_match: None,
                    })
                    .as_internal(),
                );
            } else {
                hub.state
                    .remove(ExchangeTable::Aliases, &format!("{node}|{ty}|{id}"))
                    .await?;
            }
            continue;
        }
        let Some(mut resource) = c.resource else {
            continue;
        };
        if resource.get("resourceType").and_then(Value::as_str) != Some(ty.as_str()) {
            return Err(ApiError::bad_request(format!(
                "change {ty}/{id}: its resource is not a {ty}"
            )));
        }
        if ty == "Patient" {
            if sharing == Sharing::Private && !exchange::privacy::is_pseudonym(&resource) {
                return Err(ApiError::unprocessable(format!(
                    "node {node} shares privately, but Patient/{id} is not a pseudonym; \
                     the hub keeps no clear Patient of a private node"
                )));
            }
            // The node's links are its own index's; the hub's index links the copies.
            if let Some(obj) = resource.as_object_mut() {
                obj.remove("link");
            }
        }
        if DIRECTORY_TYPES.contains(&ty.as_str())
            && hub_id == own_id
            && let Some(existing) = same_entry(state, &ctx, &ty, &resource, &own_id).await?
        {
            hub.state
                .put(
                    ExchangeTable::Aliases,
                    &format!("{node}|{ty}|{id}"),
                    &existing,
                )
                .await?;
            aliases.insert(format!("{ty}|{id}"), existing.clone());
            hub_id = existing;
        }
        namespace::rewrite_references(&mut resource, &mut |rty, rid| {
            aliases
                .get(&format!("{rty}|{rid}"))
                .cloned()
                .unwrap_or_else(|| copy_id(node, rid))
        });
        // What the node names by the hub's own URL (a Consent's actor, the network's
        // Organization of a node) is the hub's resource.
        namespace::make_local(&mut resource, base);
        namespace::mark_copy(&mut resource, node, &hub_id);
        writes.push(
            WriteEntry::new(WriteOp::Update {
                resource_type: ty.clone(),
                id: hub_id,
                resource,
                if_match: None,
            })
            .as_internal(),
        );
    }
    if !writes.is_empty() {
        state.store.transaction(&ctx, writes).await?;
    }
    for (key, at) in holdings {
        let mut holding = match hub.state.get(ExchangeTable::Holdings, &key).await? {
            Some(text) => serde_json::from_str::<Holding>(&text).unwrap_or(Holding {
                last_changed: String::new(),
            }),
            None => Holding {
                last_changed: String::new(),
            },
        };
        holding.record(&at);
        let text =
            serde_json::to_string(&holding).map_err(|e| ApiError::internal(e.to_string()))?;
        hub.state.put(ExchangeTable::Holdings, &key, &text).await?;
    }
    Ok(count)
}

/// The hub's directory entry of type `ty` (other than `own_id`) that shares a business
/// identifier with `resource`, if any.
async fn same_entry(
    state: &AppState,
    ctx: &RequestContext,
    ty: &str,
    resource: &Value,
    own_id: &str,
) -> Result<Option<String>, ApiError> {
    let identifiers = resource
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for i in identifiers {
        let (Some(system), Some(value)) = (
            i.get("system").and_then(Value::as_str),
            i.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        if system == registration::NODE_SYSTEM {
            continue;
        }
        let q = SearchQuery::parse(
            Some(ty),
            &[(
                "identifier".into(),
                format!("{}|{}", escape(system), escape(value)),
            )],
            state.store.extractor(),
            false,
        )?;
        let ids = state.store.matching_ids(&ctx.internal(), &q, 2).await?;
        if let Some(found) = ids.into_iter().find(|f| f != own_id) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// A search value with FHIR's special characters escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(',', "\\,")
        .replace('$', "\\$")
}

/// `GET Patient/$locate`.
pub async fn locate(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    let hub = hub(&state)?;
    if fhir
        .admitted
        .as_ref()
        .is_some_and(|a| a.caller.claims.patient.is_some())
    {
        return Err(ApiError::forbidden(
            "the record locator answers users and nodes; a patient's app reads \
             Patient/$summary and its own records instead",
        ));
    }
    let caller_node = match &fhir.admitted {
        Some(a) => registration(hub.state.as_ref(), &a.caller.claims.client_id)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .filter(|r| r.status == NodeStatus::Approved),
        None => None,
    };
    let mut seeds: BTreeSet<String> = BTreeSet::new();
    let mut demographics = serde_json::Map::new();
    for (name, value) in &fhir.params {
        match name.as_str() {
            "identifier" => {
                let q = SearchQuery::parse(
                    Some("Patient"),
                    &[("identifier".into(), value.clone())],
                    state.store.extractor(),
                    false,
                )?;
                seeds.extend(state.store.matching_ids(&fhir.ctx, &q, 50).await?);
            }
            "patient" => {
                seeds.insert(value.trim_start_matches("Patient/").to_owned());
            }
            "source" => {
                let node = caller_node.as_ref().ok_or_else(|| {
                    ApiError::bad_request(
                        "source names a node's own Patient: only a node may ask by it",
                    )
                })?;
                seeds.insert(copy_id(
                    &node.request.node,
                    value.trim_start_matches("Patient/"),
                ));
            }
            "family" => {
                demographics.insert("name".into(), json!([{"family": value}]));
            }
            "given" => {
                let name = demographics.entry("name").or_insert_with(|| json!([{}]));
                name[0]["given"] = json!([value]);
            }
            "birthdate" if empi::normalize::Date::parse(value).is_none() => {
                // Privacy mode: the keyed hash of the date, as the pseudonyms carry it.
                demographics.insert(
                    "extension".into(),
                    json!([{"url": exchange::privacy::HASHED_BIRTH_DATE, "valueString": value}]),
                );
            }
            "birthdate" => {
                demographics.insert("birthDate".into(), json!(value));
            }
            "gender" => {
                demographics.insert("gender".into(), json!(value));
            }
            other if fhir.lenient => {
                let _ = other;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown $locate parameter '{other}' (identifier, patient, source, family, \
                     given, birthdate, gender)"
                )));
            }
        }
    }
    if !demographics.is_empty() {
        demographics.insert("resourceType".into(), json!("Patient"));
        let found = state
            .mpi
            .find(&fhir.ctx, &Value::Object(demographics))
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        seeds.extend(
            found
                .into_iter()
                .filter(|m| m.grade == "certain")
                .map(|m| m.id),
        );
    }
    if seeds.is_empty() && !fhir.params.iter().any(|(n, _)| n != "_format") {
        return Err(ApiError::bad_request(
            "$locate needs identifier, patient, source or demographics",
        ));
    }
    let located = locate_persons(&state, hub, &seeds).await?;
    Ok(Reply::json(StatusCode::OK, located.to_parameters()).into_http(fhir.pretty))
}

/// Where the persons of `seeds` (hub Patient ids) have records.
async fn locate_persons(
    state: &AppState,
    hub: &crate::exchange::Exchange,
    seeds: &BTreeSet<String>,
) -> Result<Located, ApiError> {
    let ctx = RequestContext::system();
    let mut persons = BTreeSet::new();
    let mut members = BTreeSet::new();
    for seed in seeds {
        match state.mpi.identity_of(&ctx, seed).await? {
            Some((person, ids)) => {
                persons.insert(person.to_string());
                members.extend(ids);
            }
            None => {
                // A golden record itself, or a copy not linked (yet).
                let ids = state.mpi.person_records(&ctx, seed).await?;
                members.extend(ids);
            }
        }
    }
    let mut registrations: HashMap<String, Option<NodeRegistration>> = HashMap::new();
    let mut holders = Vec::new();
    for member in &members {
        let Some((node, local)) = split_copy_id(member) else {
            continue;
        };
        if !registrations.contains_key(node) {
            let r = registration(hub.state.as_ref(), node)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            registrations.insert(node.to_owned(), r);
        }
        let Some(Some(r)) = registrations.get(node) else {
            continue;
        };
        if r.status != NodeStatus::Approved {
            continue;
        }
        let prefix = holding_prefix(node, local);
        let kinds = hub
            .state
            .scan(ExchangeTable::Holdings, &prefix)
            .await?
            .into_iter()
            .map(|(key, text)| Kind {
                resource_type: key[prefix.len()..].to_owned(),
                last_changed: serde_json::from_str::<Holding>(&text)
                    .map(|h| h.last_changed)
                    .unwrap_or_default(),
            })
            .collect();
        holders.push(Holder {
            node: node.to_owned(),
            name: Some(r.request.name.clone()),
            organization: Some(format!("Organization/{}", r.organization_id())),
            endpoint: r.request.endpoint.clone(),
            imaging_endpoint: r.request.imaging_endpoint.clone(),
            patient: local.to_owned(),
            kinds,
        });
    }
    Ok(Located {
        person: (persons.len() == 1)
            .then(|| persons.into_iter().next().map(|p| format!("Patient/{p}")))
            .flatten(),
        holders,
    })
}
