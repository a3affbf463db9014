//! [batch and transaction](https://hl7.org/fhir/R4/http.html#transaction): `POST [base]` with a
//! Bundle of type `batch` or `transaction`.
//!
//! Entries are checked first (method, URL, resource type, validation); then the writes run in
//! the spec's processing order (DELETE, POST, PUT/PATCH) in one store call, GETs after. A
//! transaction is all-or-nothing: any failure answers with the failing entry's status and an
//! OperationOutcome naming `Bundle.entry[i]` (original index), and nothing is written. A batch
//! runs each entry on its own. `urn:uuid:` fullUrls and conditional references
//! (`Patient?identifier=...`) are resolved by the store inside the transaction, which also
//! refuses an entry whose local literal reference names a resource that is neither on the
//! server nor written by the bundle (`ServerConfig::check_references`). PATCH entries
//! carry a JSON Patch as a Binary resource (`contentType` `application/json-patch+json`).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use store::{HistoryScope, ReferenceCheck, WriteEntry, WriteOp};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{
    Fhir, Reply, Return, check_resource_type, check_type, parse_body, parse_etag, valid_id,
    validate,
};

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

/// A checked entry.
enum Prepared {
    /// Boxed: a write carries its conditional search query, far larger than a URL.
    Write(Box<WriteEntry>),
    Get(String),
}

/// Processing order of the spec: DELETE, POST, PUT/PATCH, GET/HEAD.
fn order(method: &str) -> u8 {
    match method {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

/// Processes a batch or transaction bundle (also used by `renkei import` for Bundle files).
pub async fn process(
    state: &AppState,
    fhir: &Fhir,
    bundle: &Value,
    atomic: bool,
) -> Result<Reply, ApiError> {
    let entries: &[Value] = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut prepared: Vec<(usize, u8, Result<Prepared, ApiError>)> =
        Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let method = entry
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let p = prepare(state, fhir, entry, &method).await;
        if atomic && let Err(e) = p {
            return Err(e.in_entry(i));
        }
        prepared.push((i, order(&method), p));
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
            Ok(Prepared::Get(url)) => gets.push((i, url)),
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
        replies[i] = Some(get(state, fhir, &url).await);
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

/// The checked writes of a transaction Bundle in processing order, without running them:
/// for callers that commit them with more in one store call (HL7 v2 ingestion commits them
/// with the message's receipt). Every entry is validated; the first bad one is the error,
/// naming `Bundle.entry[i]`. GET entries are refused (a message carries only writes).
pub async fn prepare_transaction(
    state: &AppState,
    fhir: &Fhir,
    bundle: &Value,
) -> Result<Vec<WriteEntry>, ApiError> {
    let entries: &[Value] = bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut writes = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let method = entry
            .pointer("/request/method")
            .and_then(Value::as_str)
            .unwrap_or("");
        match prepare(state, fhir, entry, method)
            .await
            .map_err(|e| e.in_entry(i))?
        {
            Prepared::Write(mut w) => {
                // Feeds arrive out of order: their references are counted, not refused.
                w.references = ReferenceCheck::Off;
                writes.push((order(method), i, w));
            }
            Prepared::Get(url) => {
                return Err(ApiError::bad_request(format!(
                    "a read ({url}) cannot be part of a prepared transaction"
                ))
                .in_entry(i));
            }
        }
    }
    writes.sort_by_key(|(o, i, _)| (*o, *i));
    Ok(writes.into_iter().map(|(_, _, w)| *w).collect())
}

/// The entry URL relative to the base, split into path segments and query.
fn split_url<'u>(fhir: &Fhir, url: &'u str) -> (Vec<&'u str>, Option<&'u str>) {
    let rel = url
        .strip_prefix(fhir.base.as_str())
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    (path.split('/').filter(|s| !s.is_empty()).collect(), query)
}

async fn prepare(
    state: &AppState,
    fhir: &Fhir,
    entry: &Value,
    method: &str,
) -> Result<Prepared, ApiError> {
    let url = entry
        .pointer("/request/url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("entry has no request.url"))?;
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (path, query) = split_url(fhir, url);
    let if_match = match entry.pointer("/request/ifMatch").and_then(Value::as_str) {
        Some(s) => Some(
            parse_etag(s)
                .ok_or_else(|| ApiError::bad_request(format!("malformed ifMatch '{s}'")))?,
        ),
        None => None,
    };
    let resource = || -> Result<Value, ApiError> {
        match entry.get("resource") {
            Some(r @ Value::Object(_)) => Ok(r.clone()),
            _ => Err(ApiError::bad_request(format!(
                "{method} entry has no resource"
            ))),
        }
    };
    let op = match (method, path.as_slice(), query) {
        ("GET" | "HEAD", _, _) => return Ok(Prepared::Get(url.to_owned())),
        ("POST", [ty], None) => {
            check_type(state, ty)?;
            let r = resource()?;
            check_resource_type(&r, ty)?;
            validate(state, &r)?;
            let if_none_exist = match entry
                .pointer("/request/ifNoneExist")
                .and_then(Value::as_str)
            {
                Some(v) => Some(super::if_none_exist(state, ty, v)?),
                None => None,
            };
            WriteOp::Create {
                resource: r,
                if_none_exist,
            }
        }
        ("PUT", [ty], Some(q)) => {
            check_type(state, ty)?;
            let query = super::conditional_query(state, ty, &store::search::parse_query_string(q))?;
            let r = resource()?;
            check_resource_type(&r, ty)?;
            validate(state, &r)?;
            WriteOp::ConditionalUpdate { query, resource: r }
        }
        ("PUT", [ty, id], None) => {
            check_type(state, ty)?;
            let r = resource()?;
            check_resource_type(&r, ty)?;
            if !valid_id(id) || r.get("id").and_then(Value::as_str) != Some(id) {
                return Err(ApiError::bad_request(format!(
                    "the resource id must equal the request.url id '{id}'"
                )));
            }
            validate(state, &r)?;
            WriteOp::Update {
                resource_type: (*ty).into(),
                id: (*id).into(),
                resource: r,
                if_match,
            }
        }
        ("PATCH", [ty, id], None) => {
            check_type(state, ty)?;
            let patch = binary_patch(&resource()?)?;
            let (doc, base) = super::patch::patched(state, fhir, ty, id, &patch, if_match).await?;
            WriteOp::Update {
                resource_type: (*ty).into(),
                id: (*id).into(),
                resource: doc,
                if_match: Some(base),
            }
        }
        ("DELETE", [ty, id], None) => {
            check_type(state, ty)?;
            WriteOp::Delete {
                resource_type: (*ty).into(),
                id: (*id).into(),
                if_match,
            }
        }
        ("DELETE", [ty], Some(q)) => {
            check_type(state, ty)?;
            let query = super::conditional_query(state, ty, &store::search::parse_query_string(q))?;
            WriteOp::ConditionalDelete { query }
        }
        ("", _, _) => return Err(ApiError::bad_request("entry has no request.method")),
        _ => {
            return Err(ApiError::bad_request(format!(
                "unsupported entry request: {method} {url}"
            )));
        }
    };
    let mut write = WriteEntry::new(op).with_references(super::reference_check(state, fhir));
    write.full_url = full_url;
    write.patch = method == "PATCH";
    Ok(Prepared::Write(Box::new(write)))
}

/// A JSON Patch carried by a Binary resource.
fn binary_patch(r: &Value) -> Result<json_patch::Patch, ApiError> {
    let ok = r.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && r.get("contentType").and_then(Value::as_str) == Some("application/json-patch+json");
    if !ok {
        return Err(ApiError::unsupported_media(
            "a PATCH entry needs a Binary resource with contentType application/json-patch+json",
        ));
    }
    let data = r.get("data").and_then(Value::as_str).unwrap_or("");
    let bytes = base64_decode(data)
        .ok_or_else(|| ApiError::bad_request("Binary.data is not valid base64"))?;
    super::patch::parse_patch_document(&bytes)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A GET entry, dispatched to the read/search/history interactions.
async fn get(state: &AppState, fhir: &Fhir, url: &str) -> Result<Reply, ApiError> {
    let (path, query) = split_url(fhir, url);
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

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(
            base64_decode("W3sib3AiOiJ0ZXN0In1d").unwrap(),
            b"[{\"op\":\"test\"}]"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert!(base64_decode("!!").is_none());
    }
}
