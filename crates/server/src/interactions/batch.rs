//! [batch and transaction](https://hl7.org/fhir/R4/http.html#transaction): `POST [base]` with a
//! Bundle of type `batch` or `transaction`.
//!
//! Entries are checked first (method, URL, resource type, validation: `ingest::bundle`, whose
//! typed errors become HTTP through `error.rs`); then the writes run in the spec's processing
//! order (DELETE, POST, PUT/PATCH) in one store call, GETs after (answered here). A
//! transaction is all-or-nothing: any failure answers with the failing entry's status and an
//! OperationOutcome naming `Bundle.entry[i]` (original index), and nothing is written. A batch
//! runs each entry on its own. `urn:uuid:` fullUrls and conditional references
//! (`Patient?identifier=...`) are resolved by the store inside the transaction, which also
//! refuses an entry whose local literal reference names a resource that is neither on the
//! server nor written by the bundle (`ServerConfig::check_references`). PATCH entries
//! carry a JSON Patch as a Binary resource (`contentType` `application/json-patch+json`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use ingest::bundle::{Prepared, Preparer, entries, method, processing_order, split_url};
use serde_json::{Value, json};
use store::HistoryScope;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, Return, check_type, parse_body};
use crate::security::{Admitted, Needs, access_of, authorize, classify_segments};

pub async fn handler(
    State(state): State<AppState>,
    fhir: Fhir,
    body: Bytes,
) -> Result<Response, ApiError> {
    let bundle = parse_body(&fhir.headers, &body)?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request(
            "POST [base] needs a Bundle of type batch or transaction",
        ));
    }
    let atomic = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "Bundle.type must be batch or transaction, not {}",
                other.unwrap_or("(missing)")
            ))
            .with_expression("Bundle.type"));
        }
    };
    Ok(process(&state, &fhir, &bundle, atomic)
        .await?
        .into_http(fhir.pretty))
}

/// Processes a batch or transaction bundle.
pub async fn process(
    state: &AppState,
    fhir: &Fhir,
    bundle: &Value,
    atomic: bool,
) -> Result<Reply, ApiError> {
    let entries = entries(bundle);
    let references = super::reference_check(state, fhir);
    // With authorization on, each entry is authorized as the request it stands for; the
    // writes then run under the narrowest access any of them was granted.
    let permits = permit_entries(state, fhir, entries).await;
    let mut writer = fhir.clone();
    if let Some(restricted) = permits
        .iter()
        .flatten()
        .flatten()
        .find(|a| a.access.restriction().is_some())
    {
        restricted.apply(&mut writer.ctx);
        writer.admitted = Some(restricted.clone());
    } else if let Some(Ok(Some(first))) = permits.first() {
        first.apply(&mut writer.ctx);
        writer.admitted = Some(first.clone());
    }
    let fhir = &writer;
    let preparer = Preparer {
        store: state.store.as_ref(),
        validator: state.validator.as_ref(),
        ctx: &fhir.ctx,
        base: &fhir.base,
        references: &references,
    };
    let mut prepared: Vec<(usize, u8, Result<Prepared, ApiError>)> =
        Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let p = match &permits[i] {
            Err(e) => Err(e.clone()),
            Ok(_) => preparer.entry(entry).await.map_err(ApiError::from),
        };
        if atomic && let Err(e) = p {
            return Err(e.in_entry(i));
        }
        prepared.push((i, processing_order(method(entry)), p));
    }
    prepared.sort_by_key(|(i, o, _)| (*o, *i));

    let mut replies: Vec<Option<Result<Reply, ApiError>>> =
        (0..entries.len()).map(|_| None).collect();
    let mut writes = Vec::new();
    let mut write_index = Vec::new();
    let mut gets = Vec::new();
    for (i, _, p) in prepared {
        match p {
            Ok(Prepared::Write(w)) => {
                writes.push(*w);
                write_index.push(i);
            }
            Ok(Prepared::Read(url)) => gets.push((i, url)),
            Err(e) => replies[i] = Some(Err(e)),
        }
    }
    if atomic {
        let outcomes = state
            .store
            .transaction(&fhir.ctx, writes)
            .await
            .map_err(|e| {
                let at = e.entry_index().and_then(|k| write_index.get(k).copied());
                let err = ApiError::from(e.into_inner());
                match at {
                    Some(i) => err.in_entry(i),
                    None => err,
                }
            })?;
        for (k, o) in outcomes.iter().enumerate() {
            replies[write_index[k]] = Some(Ok(super::outcome_reply(fhir, o)));
        }
    } else {
        let results = state.store.batch(&fhir.ctx, writes).await?;
        for (k, r) in results.into_iter().enumerate() {
            replies[write_index[k]] = Some(match r {
                Ok(o) => Ok(super::outcome_reply(fhir, &o)),
                Err(e) => Err(ApiError::from(e)),
            });
        }
    }
    for (i, url) in gets {
        let mut reader = fhir.clone();
        if let Ok(Some(a)) = &permits[i] {
            a.apply(&mut reader.ctx);
            reader.admitted = Some(a.clone());
        }
        replies[i] = Some(get(state, &reader, &preparer, &url).await);
    }

    let response_entries: Vec<Value> = replies
        .into_iter()
        .map(|r| match r {
            Some(Ok(reply)) => {
                let mut e = json!({});
                if let Some(body) = reply.body_json() {
                    e["resource"] = body;
                }
                e["response"] = reply.entry_response();
                e
            }
            Some(Err(err)) => json!({"response": {
                "status": crate::http::status_line(err.status),
                "outcome": err.outcome(),
            }}),
            None => json!({"response": {"status": "500 Internal Server Error"}}),
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": if atomic { "transaction-response" } else { "batch-response" },
        "entry": response_entries,
    });
    Ok(Reply::json(StatusCode::OK, bundle))
}

/// What each entry is authorized as: `Ok(None)` on an open server (or for what needs no
/// grant, such as `metadata`), the entry's 401/403 otherwise. What an entry reaches depends
/// on its grant's patient and break-glass only, so it is computed once per distinct one (a
/// consent decision or a person's records, not one per entry).
async fn permit_entries(
    state: &AppState,
    fhir: &Fhir,
    entries: &[Value],
) -> Vec<Result<Option<Admitted>, ApiError>> {
    let mut out = Vec::with_capacity(entries.len());
    let Some(admitted) = &fhir.admitted else {
        out.resize_with(entries.len(), || Ok(None));
        return out;
    };
    let caller = &admitted.caller;
    let mut reach: HashMap<(Option<String>, bool), store::AccessPolicy> = HashMap::new();
    for entry in entries {
        let m = Method::from_bytes(method(entry).as_bytes()).unwrap_or(Method::GET);
        let url = entry
            .pointer("/request/url")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (segments, _) = split_url(&fhir.base, url);
        let permitted = match classify_segments(&m, &segments) {
            Needs::Public | Needs::Token => Ok(None),
            Needs::Bundle => Err(ApiError::bad_request(
                "a bundle entry cannot itself be a batch or transaction",
            )),
            Needs::Request(kind, ty) => {
                match authorize(state, caller, &fhir.base, kind, ty.as_deref()) {
                    Err(e) => Err(e),
                    Ok((authorized, scope_filter)) => {
                        let key = (authorized.patient.clone(), authorized.break_glass);
                        let access = match reach.get(&key) {
                            Some(a) => Ok(a.clone()),
                            None => access_of(state, caller, &authorized).await.inspect(|a| {
                                reach.insert(key, a.clone());
                            }),
                        };
                        access.map(|access| {
                            Some(Admitted {
                                caller: caller.clone(),
                                access,
                                scope_filter,
                                break_glass: authorized.break_glass,
                            })
                        })
                    }
                }
            }
        };
        out.push(permitted);
    }
    out
}

/// A GET entry, dispatched to the read/search/history interactions.
async fn get(
    state: &AppState,
    fhir: &Fhir,
    preparer: &Preparer<'_>,
    url: &str,
) -> Result<Reply, ApiError> {
    let (path, query) = preparer.split_url(url);
    let mut sub = fhir.clone();
    sub.params = store::search::parse_query_string(query.unwrap_or(""));
    sub.prefer = Return::Representation;
    match path.as_slice() {
        [] => super::search::search(state, &sub, None, &sub.params.clone()).await,
        ["metadata"] => Ok(Reply::json(
            StatusCode::OK,
            super::capabilities::capability_statement(state, &fhir.base),
        )),
        ["_history"] => super::history::history(state, &sub, HistoryScope::System).await,
        [ty] => {
            check_type(state, ty)?;
            super::search::search(state, &sub, Some(ty), &sub.params.clone()).await
        }
        [ty, "_history"] => {
            check_type(state, ty)?;
            super::history::history(state, &sub, HistoryScope::Type((*ty).into())).await
        }
        [ty, id] => super::read::read(state, &sub, ty, id).await,
        [ty, id, "_history"] => {
            check_type(state, ty)?;
            super::history::history(
                state,
                &sub,
                HistoryScope::Instance((*ty).into(), (*id).into()),
            )
            .await
        }
        [ty, id, "_history", vid] => super::vread::vread(state, &sub, ty, id, vid).await,
        _ => Err(ApiError::bad_request(format!(
            "unsupported GET entry URL '{url}'"
        ))),
    }
}
