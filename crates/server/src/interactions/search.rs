//! [search](https://hl7.org/fhir/R4/http.html#search): `GET [base]/[type]?params`,
//! `POST [base]/[type]/_search` (form body), system search `GET [base]?params` (with `_type`),
//! compartment search `GET [base]/Patient/[id]/[type]?params`, and
//! [`Patient/[id]/$everything`](https://hl7.org/fhir/R4/patient-operation-everything.html).
//!
//! The store parses and runs the query (`store::search`); this module turns a page into a
//! `searchset` Bundle: `_include`/`_revinclude` entries (mode `include`), `total`, `self` and
//! `next` links (keyset cursors, stable under concurrent writes), and the `_summary` /
//! `_elements` views of each resource (marked `SUBSETTED`). Resources go into the Bundle as
//! their stored JSON text, not parsed and serialized again (only a view parses them).
//! Unknown parameters answer 400 unless `Prefer: handling=lenient`. At a node, `_network=true`
//! on a compartment search, `$everything`, or a type search about one patient
//! (`[type]?patient=[id]`) asks the network instead (`crate::exchange::network_query`).

use std::borrow::Cow;

use auth::scope::Interaction;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};
use store::search::{Filter, SearchQuery, Summary, include};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, ReplyBody, check_type, encode_query};
use crate::security::audit::AuditFacts;

/// The tag `_summary` and `_elements` put on the resources they cut.
const SUBSETTED: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

pub async fn type_search(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let mut params = fhir.params.clone();
    if network_requested(&mut params)? {
        let (patient, rest) = network_patient(&ty, params)?;
        let reply =
            crate::exchange::network_query::network(&state, &fhir, &patient, &ty, rest).await?;
        return Ok(reply.into_http(fhir.pretty));
    }
    Ok(search(&state, &fhir, Some(&ty), &params)
        .await?
        .into_http(fhir.pretty))
}

/// Takes `_network` out of `params`: whether it asks for the network (`true`).
fn network_requested(params: &mut Vec<(String, String)>) -> Result<bool, ApiError> {
    let Some(at) = params.iter().position(|(n, _)| n == "_network") else {
        return Ok(false);
    };
    let (_, value) = params.remove(at);
    match value.as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "_network takes true or false, not '{value}'"
        ))),
    }
}

/// The one Patient a type search with `_network=true` is about (`patient=[id]`,
/// `patient=Patient/[id]` or `subject=Patient/[id]`) and the other parameters: the network is
/// asked about one person, as `Patient/[id]/[type]?_network=true` is.
fn network_patient(
    ty: &str,
    params: Vec<(String, String)>,
) -> Result<(String, Vec<(String, String)>), ApiError> {
    let (named, rest): (Vec<_>, Vec<_>) = params
        .into_iter()
        .partition(|(n, _)| matches!(n.as_str(), "patient" | "subject" | "subject:Patient"));
    let id = match named.as_slice() {
        [(name, value)] if !value.contains(',') => match value.strip_prefix("Patient/") {
            Some(id) => Some(id),
            None if name != "subject" => Some(value.as_str()),
            None => None,
        }
        .filter(|id| !id.is_empty() && !id.contains('/')),
        _ => None,
    };
    match id {
        Some(id) => Ok((id.to_owned(), rest)),
        None => Err(ApiError::bad_request(format!(
            "_network=true on a {ty} search needs exactly one patient: patient=[id] or \
             subject=Patient/[id] (the network is asked about one person; \
             Patient/[id]/{ty}?_network=true is the same)"
        ))
        .with_expression("_network")),
    }
}

pub async fn system(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    let params = fhir.params.clone();
    Ok(search(&state, &fhir, None, &params)
        .await?
        .into_http(fhir.pretty))
}

pub async fn post_search(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let ct = fhir
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::unsupported_media(
            "POST _search needs Content-Type application/x-www-form-urlencoded",
        ));
    }
    let form = String::from_utf8_lossy(&body).replace('+', " ");
    let mut params = fhir.params.clone();
    params.extend(store::search::parse_query_string(&form));
    Ok(search(&state, &fhir, Some(&ty), &params)
        .await?
        .into_http(fhir.pretty))
}

/// `GET [base]/Patient/[id]/[type]` (compartment search) and `GET [base]/Patient/[id]/$everything`.
pub async fn compartment(
    State(state): State<AppState>,
    Path((owner_type, owner_id, what)): Path<(String, String, String)>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &owner_type)?;
    if owner_type != "Patient" {
        return Err(not_patient(&owner_type, &what));
    }
    if what != "$everything" {
        check_type(&state, &what)?;
    }
    let mut params = fhir.params.clone();
    if let Some(at) = params.iter().position(|(n, _)| n == "_network") {
        let (_, value) = params.remove(at);
        if value == "true" {
            let reply =
                crate::exchange::network_query::network(&state, &fhir, &owner_id, &what, params)
                    .await?;
            return Ok(reply.into_http(fhir.pretty));
        } else if value != "false" {
            return Err(ApiError::bad_request(format!(
                "_network takes true or false, not '{value}'"
            )));
        }
    }
    Ok(
        compartment_reply(&state, &fhir, &owner_type, &owner_id, &what, params)
            .await?
            .into_http(fhir.pretty),
    )
}

/// A compartment search or `$everything` on this server alone.
pub(crate) async fn compartment_reply(
    state: &AppState,
    fhir: &Fhir,
    owner_type: &str,
    owner_id: &str,
    what: &str,
    mut params: Vec<(String, String)>,
) -> Result<Reply, ApiError> {
    let (state, owner_id, what) = (state, owner_id.to_owned(), what.to_owned());
    // The owner must exist (and not be deleted): 404 / 410 otherwise.
    let owner = state.store.read(&fhir.ctx, owner_type, &owner_id).await?;
    if what == "AuditEvent"
        && let Some(auditor) = &state.auditor
    {
        // Who accessed this patient's record: the audit log, by patient.
        params.push(("patient".into(), format!("Patient/{owner_id}")));
        return super::audit_events::search(auditor.log().as_ref(), fhir, &params).await;
    }
    let reply = if what == "$everything" {
        everything(state, fhir, &owner_id, is_golden(&owner), &params).await?
    } else {
        let mut q =
            SearchQuery::parse(Some(&what), &params, state.store.extractor(), fhir.lenient)?;
        let Some(filter) = SearchQuery::patient_compartment(&owner_id, Some(&what), false) else {
            return Err(ApiError::unsupported_request(format!(
                "{what} is not in the Patient compartment"
            )));
        };
        q.filters.push(filter);
        let path = format!("/Patient/{owner_id}/{what}");
        respond(state, fhir, &path, q, &params).await?
    };
    Ok(reply)
}

/// A compartment search or instance operation on a type other than Patient: 501 for what
/// FHIR defines and this server does not offer (an operation, or one of the other
/// compartments of the R4 `compartment-type` code system), 404 for a path that names nothing.
fn not_patient(owner_type: &str, what: &str) -> ApiError {
    if what.starts_with('$') {
        super::operation::unsupported_operation(&format!("GET {owner_type}/[id]/{what}"))
    } else if matches!(
        owner_type,
        "Encounter" | "RelatedPerson" | "Practitioner" | "Device"
    ) {
        ApiError::unsupported_interaction(format!(
            "search in the {owner_type} compartment is not supported; \
             only in the Patient compartment"
        ))
    } else {
        ApiError::not_found(format!(
            "{owner_type} is not a compartment (compartments are Patient, Encounter, \
             RelatedPerson, Practitioner and Device)"
        ))
    }
}

/// Whether a stored Patient is one of the EMPI's golden records (its `meta.tag`).
fn is_golden(owner: &store::StoredResource) -> bool {
    owner
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .is_some_and(|patient| mpi::resources::is_golden(&patient))
}

/// `$everything`: the patient, everything in its compartment (`_type`, `_since`, `_count`
/// honoured, paged), and the resources those refer to (practitioners, organisations, ...).
/// Of a golden record, or with `_mdm=true` (HAPI FHIR's MDM convention), it is the person's:
/// the golden record, every source it links and all of their compartments.
async fn everything(
    state: &AppState,
    fhir: &Fhir,
    owner_id: &str,
    golden: bool,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    let mut linked = golden;
    for (name, value) in params.iter().filter(|(n, _)| n == "_mdm") {
        linked = match value.as_str() {
            "true" => true,
            "false" => false,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{name} takes true or false, not '{value}'"
                )));
            }
        };
    }
    let mut q = SearchQuery::everything_of(owner_id, linked);
    // Counting a whole compartment costs as much as reading its first page; `$everything` is
    // read page by page, so its Bundle carries a total only when `_total` asks for one.
    q.total = store::search::TotalMode::None;
    for (name, value) in params {
        match name.as_str() {
            "_since" => {
                let (start, _) = store::time::parse_range(value).ok_or_else(|| {
                    ApiError::bad_request(format!("_since must be an instant, not '{value}'"))
                })?;
                q.filters
                    .push(Filter::LastUpdated(vec![store::search::DateCondition {
                        prefix: store::search::Prefix::Ge,
                        start,
                        end: start + 1,
                    }]));
            }
            "_type" | "_count" | "_cursor" | "_elements" | "_summary" | "_total" => {
                let sub = SearchQuery::parse(
                    None,
                    &[(name.clone(), value.clone())],
                    state.store.extractor(),
                    false,
                )?;
                merge(&mut q, sub, name);
            }
            "_mdm" => {}
            "start" | "end" => {
                return Err(ApiError::unsupported_request(format!(
                    "$everything parameter '{name}' (care date range) is not supported"
                )));
            }
            _ if fhir.lenient => q.ignored.push(name.clone()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown $everything parameter '{name}'"
                )));
            }
        }
    }
    narrow_to_granted_types(fhir, &mut q);
    let path = format!("/Patient/{owner_id}/$everything");
    respond(state, fhir, &path, q, params).await
}

/// Keeps a `$everything` to the types the caller's token may search: the compartment's types
/// (or those `_type` asked for) that its scopes grant. An open server, or a `*` grant, keeps
/// every type.
fn narrow_to_granted_types(fhir: &Fhir, q: &mut SearchQuery) {
    if fhir.may(Interaction::Search, "*") {
        return;
    }
    let candidates: Vec<String> = if q.types.is_empty() {
        std::iter::once("Patient")
            .chain(fhir::r4().patient_compartment().map(|(t, _)| t))
            .map(str::to_owned)
            .collect()
    } else {
        std::mem::take(&mut q.types)
    };
    q.types = candidates
        .into_iter()
        .filter(|t| fhir.may(Interaction::Search, t))
        .collect();
    q.types.dedup();
}

/// Copies the result parameter `name` parsed into `from` onto `into`.
fn merge(into: &mut SearchQuery, from: SearchQuery, name: &str) {
    match name {
        "_type" => into.types = from.types,
        "_count" => into.count = from.count,
        "_cursor" => into.after = from.after,
        "_elements" => into.elements = from.elements,
        "_summary" => into.summary = from.summary,
        "_total" => into.total = from.total,
        _ => {}
    }
}

pub async fn search(
    state: &AppState,
    fhir: &Fhir,
    ty: Option<&str>,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    if ty == Some("AuditEvent")
        && let Some(auditor) = &state.auditor
    {
        return super::audit_events::search(auditor.log().as_ref(), fhir, params).await;
    }
    let q = SearchQuery::parse(ty, params, state.store.extractor(), fhir.lenient)?;
    let path = ty.map(|t| format!("/{t}")).unwrap_or_default();
    respond(state, fhir, &path, q, params).await
}

/// Runs `q` and builds the searchset Bundle; `path` (after the base) and `params` make the links.
async fn respond(
    state: &AppState,
    fhir: &Fhir,
    path: &str,
    mut q: SearchQuery,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    if q.summary == Summary::Count {
        q.count = 0;
        q.total = store::search::TotalMode::Accurate;
    }
    if let Some(f) = fhir.scope_filter() {
        // The token's v2 scope restriction joins the query's own filters, so the page, its
        // total and its links count only what the scope covers.
        if q.resource_type.as_deref() != Some(f.resource_type.as_str()) {
            return Err(ApiError::forbidden(format!(
                "the token's scope on {} is restricted by search parameters; this search \
                 reaches beyond that type",
                f.resource_type
            )));
        }
        let scoped = SearchQuery::parse(
            Some(&f.resource_type),
            &f.params,
            state.store.extractor(),
            false,
        )?;
        q.filters.extend(scoped.filters);
    }
    let page = state.store.search(&fhir.ctx, &q).await?;
    let mut included = include::resolve(state.store.as_ref(), &fhir.ctx, &q, &page.matches).await?;
    // Included resources are reads of their own types: only those the token may read.
    included.retain(|r| fhir.may(Interaction::Read, &r.resource_type));
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_cursor" && !q.ignored.contains(k))
        .cloned()
        .collect();
    let link = |cursor: Option<&str>| {
        let mut p = kept.clone();
        if let Some(c) = cursor {
            p.push(("_cursor".into(), c.to_owned()));
        }
        let qs = encode_query(&p);
        if qs.is_empty() {
            format!("{}{path}", fhir.base)
        } else {
            format!("{}{path}?{qs}", fhir.base)
        }
    };
    let this_cursor = params
        .iter()
        .find(|(k, _)| k == "_cursor")
        .map(|(_, v)| v.as_str());
    let mut links = vec![json!({"relation": "self", "url": link(this_cursor)})];
    if let Some(next) = &page.next {
        links.push(json!({"relation": "next", "url": link(Some(next))}));
    }
    let mut head = json!({
        "resourceType": "Bundle",
        "type": "searchset",
    });
    if let Some(total) = page.total {
        head["total"] = json!(total);
    }
    head["link"] = Value::Array(links);
    if !q.ignored.is_empty() {
        head["meta"] = json!({"tag": [{
            "system": "http://renkei.dev/fhir/CodeSystem/search",
            "code": "ignored-parameters",
            "display": format!("ignored (Prefer: handling=lenient): {}", q.ignored.join(", "))
        }]});
    }
    let entries = page
        .matches
        .iter()
        .map(|r| (r, "match"))
        .chain(included.iter().map(|r| (r, "include")));
    let whole = q.summary == Summary::False && q.elements.is_empty();
    // The audit record names the patients whose data the page holds (when there is one).
    let mut patients: Vec<String> = Vec::new();
    if state.auditor.is_some() {
        patients = page
            .matches
            .iter()
            .chain(included.iter())
            .flat_map(|r| AuditFacts::of_resource(r).patients)
            .collect();
        patients.sort();
        patients.dedup();
    }
    Ok(Reply {
        body: ReplyBody::Raw(searchset_text(head, entries, fhir, |body| {
            // The stored text is the resource as served, unless a view cuts it down.
            if whole {
                return Cow::Borrowed(body);
            }
            let view = serde_json::from_str::<Value>(body)
                .map(|v| view(v, q.summary, &q.elements))
                .unwrap_or(Value::Null);
            Cow::Owned(serde_json::to_string(&view).unwrap_or_else(|_| "null".into()))
        })),
        status: StatusCode::OK,
        version: None,
        last_modified: None,
        location: None,
        audit: Some(AuditFacts {
            patients,
            ..AuditFacts::default()
        }),
    })
}

/// The searchset Bundle's JSON text: `head` (every member but `entry`) with the entries
/// appended, each resource spliced in as its stored JSON text (through `resource_text`)
/// rather than parsed and serialized again.
fn searchset_text<'a>(
    head: Value,
    entries: impl Iterator<Item = (&'a store::StoredResource, &'static str)>,
    fhir: &Fhir,
    resource_text: impl Fn(&'a str) -> Cow<'a, str>,
) -> String {
    let mut text = serde_json::to_string(&head).unwrap_or_else(|_| "{}".into());
    let mut entries = entries.peekable();
    if entries.peek().is_none() {
        return text;
    }
    text.pop(); // the closing brace of `head`
    text.push_str(",\"entry\":[");
    for (i, (r, mode)) in entries.enumerate() {
        if i > 0 {
            text.push(',');
        }
        let full_url = Value::String(format!("{}/{}/{}", fhir.base, r.resource_type, r.id));
        text.push_str("{\"fullUrl\":");
        text.push_str(&full_url.to_string());
        text.push_str(",\"resource\":");
        match r.body.as_deref() {
            Some(body) => text.push_str(&resource_text(body)),
            None => text.push_str("null"),
        }
        text.push_str(",\"search\":{\"mode\":\"");
        text.push_str(mode);
        text.push_str("\"}}");
    }
    text.push_str("]}");
    text
}

/// The `_summary` / `_elements` view of a resource (top-level elements), tagged `SUBSETTED`
/// when anything was cut.
pub fn view(resource: Value, summary: Summary, elements: &[String]) -> Value {
    let Value::Object(map) = resource else {
        return resource;
    };
    let ty = map
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let defs = fhir::r4();
    let always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    let element = |k: &str| defs.property(&ty, k).map(|p| p.element);
    let keep = |k: &str| -> bool {
        if always(k) {
            return true;
        }
        let summary_keep = match summary {
            Summary::False | Summary::Count => true,
            Summary::Data => k != "text",
            Summary::True => element(k).is_some_and(|e| e.is_summary),
            Summary::Text => k == "text" || element(k).is_some_and(|e| e.min > 0),
        };
        let elements_keep = elements.is_empty()
            || element(k).is_some_and(|e| elements.contains(&e.name))
            || elements.iter().any(|n| n == k);
        summary_keep && elements_keep
    };
    let before = map.len();
    let mut kept: Map<String, Value> = map.into_iter().filter(|(k, _)| keep(k)).collect();
    if kept.len() < before {
        let meta = kept
            .entry("meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            let tags = meta
                .entry("tag")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(json!({"system": SUBSETTED, "code": "SUBSETTED"}));
            }
        }
    }
    Value::Object(kept)
}
