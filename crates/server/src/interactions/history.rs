//! [history](https://hl7.org/fhir/R4/http.html#history): instance
//! (`GET [base]/[type]/[id]/_history`), type (`GET [base]/[type]/_history`) and system
//! (`GET [base]/_history`) level, newest first, with `_since`, `_count` and `next` links
//! (keyset paging: a page stays stable while new versions are written); `_summary=count` (or
//! `_count=0`) answers the number of versions as `total`, without entries.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use store::{HistoryQuery, HistoryScope, Method, search::DEFAULT_COUNT, search::MAX_COUNT};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_type, encode_query, status_line};

pub async fn system(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    Ok(history(&state, &fhir, HistoryScope::System)
        .await?
        .into_http(fhir.pretty))
}

pub async fn type_level(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    Ok(history(&state, &fhir, HistoryScope::Type(ty))
        .await?
        .into_http(fhir.pretty))
}

pub async fn instance(
    State(state): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    Ok(history(&state, &fhir, HistoryScope::Instance(ty, id))
        .await?
        .into_http(fhir.pretty))
}

pub async fn history(
    state: &AppState,
    fhir: &Fhir,
    scope: HistoryScope,
) -> Result<Reply, ApiError> {
    let audited_type = match &scope {
        HistoryScope::Instance(ty, _) | HistoryScope::Type(ty) => ty == "AuditEvent",
        HistoryScope::System => false,
    };
    if audited_type && state.auditor.is_some() {
        return Err(ApiError::unsupported_request(
            "AuditEvents are the audit log's records, which never change: they have no history",
        ));
    }
    match &scope {
        HistoryScope::Instance(ty, id) => {
            crate::security::check_scope_filter(state, fhir, ty, id).await?;
        }
        _ if fhir.scope_filter().is_some() => {
            return Err(ApiError::forbidden(
                "the token's scope is restricted by search parameters, which history \
                 cannot apply; read or search instead",
            ));
        }
        _ => {}
    }
    let mut q = HistoryQuery {
        scope: scope.clone(),
        since: None,
        count: DEFAULT_COUNT,
        before: None,
    };
    let mut kept = Vec::new();
    let mut count_only = false;
    for (k, v) in &fhir.params {
        match k.as_str() {
            "_since" => {
                let (start, _) = store::time::parse_range(v)
                    .ok_or_else(|| ApiError::bad_request(format!("malformed _since '{v}'")))?;
                q.since = Some(start);
            }
            "_summary" => match v.as_str() {
                "count" => count_only = true,
                "false" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "_summary={other} is not supported on history (count or false)"
                    )));
                }
            },
            "_count" => {
                q.count = v
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("malformed _count '{v}'")))?
                    .min(MAX_COUNT);
            }
            "_cursor" => {
                q.before = Some(
                    v.parse()
                        .map_err(|_| ApiError::bad_request(format!("malformed cursor '{v}'")))?,
                );
                continue;
            }
            _ if fhir.lenient => continue,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unsupported history parameter '{k}'"
                )));
            }
        }
        kept.push((k.clone(), v.clone()));
    }
    if count_only {
        q.count = 0;
        q.before = None;
    }
    let page = state.store.history(&fhir.ctx, &q).await?;
    let path = match &scope {
        HistoryScope::System => "_history".to_owned(),
        HistoryScope::Type(t) => format!("{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{t}/{id}/_history"),
    };
    let link = |extra: Option<i64>| {
        let mut p = kept.clone();
        if let Some(c) = extra {
            p.push(("_cursor".into(), c.to_string()));
        }
        let qs = encode_query(&p);
        if qs.is_empty() {
            format!("{}/{path}", fhir.base)
        } else {
            format!("{}/{path}?{qs}", fhir.base)
        }
    };
    let mut links = vec![json!({"relation": "self", "url": link(q.before)})];
    if let Some(next) = page.next {
        links.push(json!({"relation": "next", "url": link(Some(next))}));
    }
    let entries: Vec<Value> = page
        .versions
        .iter()
        .map(|v| {
            let mut e = json!({
                "fullUrl": format!("{}/{}/{}", fhir.base, v.resource_type, v.id),
            });
            if let Some(body) = &v.body
                && let Ok(r) = serde_json::from_str::<Value>(body)
            {
                e["resource"] = r;
            }
            let (url, status) = match v.method {
                Method::Post => (v.resource_type.clone(), StatusCode::CREATED),
                Method::Put if v.version == 1 => {
                    (format!("{}/{}", v.resource_type, v.id), StatusCode::CREATED)
                }
                Method::Put | Method::Patch => {
                    (format!("{}/{}", v.resource_type, v.id), StatusCode::OK)
                }
                Method::Delete => (
                    format!("{}/{}", v.resource_type, v.id),
                    StatusCode::NO_CONTENT,
                ),
            };
            e["request"] = json!({"method": v.method.as_str(), "url": url});
            e["response"] = json!({
                "status": status_line(status),
                "etag": format!("W/\"{}\"", v.version),
                "lastModified": v.last_updated_instant(),
            });
            e
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": entries,
    });
    if let Some(total) = page.total {
        bundle["total"] = json!(total);
    }
    Ok(Reply::json(StatusCode::OK, bundle))
}
