//! `AuditEvent` when the server audits (authorization on): the resources are the records of the
//! hash-chained audit log itself (`store::AuditLog`), each with its sequence number as id.
//! They can be read and searched, never created, changed or deleted through the API (the
//! gate refuses those with 405; `security::permit`).
//!
//! Search parameters: `patient` (a Patient reference or id; comma = any), `agent` (the user's
//! reference, or the client id), `entity` (`Type/id`), `date` (with `ge`, `gt`, `le`, `lt`,
//! or a date's whole range), `_count` (at most 1,000) and the paging cursor. Newest first.
//! A caller confined to some patients (a patient's token) sees the records that name one of
//! them, and nothing else: a patient lists who accessed their record.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};
use store::{AuditLog, AuditQuery, AuditRow};

use crate::error::ApiError;
use crate::http::{Fhir, Reply, ReplyBody};

/// Records per page unless `_count` says.
const DEFAULT_COUNT: usize = 50;
const MAX_COUNT: usize = 1000;

/// The patients the caller may see records of (`None`: any).
fn reachable(fhir: &Fhir) -> Option<BTreeSet<String>> {
    fhir.ctx
        .restriction()
        .and_then(|r| r.patients.as_ref())
        .map(|patients| patients.iter().map(|p| format!("Patient/{p}")).collect())
}

/// The record as an `AuditEvent` with its id.
fn resource(row: &AuditRow) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&row.record)
        .map_err(|e| ApiError::internal(format!("audit record {} is not JSON: {e}", row.seq)))?;
    v["id"] = json!(row.seq.to_string());
    Ok(v)
}

/// Whether a record names one of `patients`.
fn names_one_of(record: &Value, patients: &BTreeSet<String>) -> bool {
    record["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["reference"].as_str())
        .any(|r| patients.contains(r))
}

/// `GET AuditEvent/[id]`.
pub async fn read(log: &dyn AuditLog, fhir: &Fhir, id: &str) -> Result<Reply, ApiError> {
    let not_found = || ApiError::not_found(format!("AuditEvent/{id} not found"));
    let seq: u64 = id.parse().map_err(|_| not_found())?;
    let row = log.read_audit(seq).await?.ok_or_else(not_found)?;
    let record = resource(&row)?;
    if let Some(patients) = reachable(fhir)
        && !names_one_of(&record, &patients)
    {
        return Err(not_found());
    }
    Ok(Reply::json(StatusCode::OK, record))
}

/// `GET AuditEvent?...`.
pub async fn search(
    log: &dyn AuditLog,
    fhir: &Fhir,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    let mut q = AuditQuery {
        count: DEFAULT_COUNT,
        ..AuditQuery::default()
    };
    let mut asked_patients: Option<BTreeSet<String>> = None;
    for (name, value) in params {
        match name.as_str() {
            "patient" => {
                let set = asked_patients.get_or_insert_with(BTreeSet::new);
                for one in value.split(',') {
                    let id = one.strip_prefix("Patient/").unwrap_or(one);
                    set.insert(format!("Patient/{id}"));
                }
            }
            "agent" => q.agent = Some(value.clone()),
            "entity" => q.entity = Some(value.clone()),
            "date" => {
                let (prefix, when) = match value.get(..2) {
                    Some(p @ ("ge" | "gt" | "le" | "lt" | "eq")) => (p, &value[2..]),
                    _ => ("eq", value.as_str()),
                };
                let (start, end) = store::time::parse_range(when).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "date must be a FHIR date or instant, not '{value}'"
                    ))
                    .with_expression("date")
                })?;
                let (start_ms, end_ms) = (start / 1000, end / 1000);
                match prefix {
                    "ge" => q.since_ms = Some(start_ms),
                    "gt" => q.since_ms = Some(end_ms),
                    "le" => q.until_ms = Some(end_ms),
                    "lt" => q.until_ms = Some(start_ms),
                    _ => {
                        q.since_ms = Some(start_ms);
                        q.until_ms = Some(end_ms);
                    }
                }
            }
            "_count" => {
                let n: usize = value.parse().map_err(|_| {
                    ApiError::bad_request(format!("_count must be a number, not '{value}'"))
                })?;
                q.count = n.min(MAX_COUNT);
            }
            "_cursor" => {
                q.before_seq = Some(value.parse().map_err(|_| {
                    ApiError::bad_request(format!("_cursor '{value}' is not this server's"))
                })?);
            }
            _ if fhir.lenient => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "AuditEvent is searched by patient, agent, entity, date, _count; not '{other}'"
                )));
            }
        }
    }
    // A confined caller: the patients asked for among those it may see (all of them when
    // none was asked for); none in common, nothing found.
    let patients = match (reachable(fhir), asked_patients) {
        (None, asked) => asked.unwrap_or_default(),
        (Some(mine), None) => mine,
        (Some(mine), Some(asked)) => mine.intersection(&asked).cloned().collect(),
    };
    let confined = reachable(fhir).is_some();
    let rows = if confined && patients.is_empty() {
        Vec::new()
    } else {
        q.patients = patients.into_iter().collect();
        let wanted = q.count;
        let mut one_more = q.clone();
        one_more.count = wanted + 1;
        log.search_audit(&one_more).await?
    };
    let more = rows.len() > q.count;
    let mut entries = Vec::new();
    for row in rows.iter().take(q.count) {
        entries.push(json!({
            "fullUrl": format!("{}/AuditEvent/{}", fhir.base, row.seq),
            "resource": resource(row)?,
            "search": {"mode": "match"},
        }));
    }
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_cursor")
        .cloned()
        .collect();
    let link = |cursor: Option<u64>| {
        let mut p = kept.clone();
        if let Some(c) = cursor {
            p.push(("_cursor".into(), c.to_string()));
        }
        let qs = crate::http::encode_query(&p);
        if qs.is_empty() {
            format!("{}/AuditEvent", fhir.base)
        } else {
            format!("{}/AuditEvent?{qs}", fhir.base)
        }
    };
    let mut links = vec![json!({"relation": "self", "url": link(q.before_seq)})];
    if more && let Some(last) = rows.get(q.count.saturating_sub(1)) {
        links.push(json!({"relation": "next", "url": link(Some(last.seq))}));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(Reply {
        body: ReplyBody::Json(bundle),
        ..Reply::json(StatusCode::OK, Value::Null)
    })
}
