//! [search](https://hl7.org/fhir/R4/http.html#search): `GET [base]/[type]?params`,
//! `POST [base]/[type]/_search` (form body), and system search `GET [base]?params`.
//!
//! This issue supports `_id`, `_lastUpdated`, the token parameters the store's index extractor
//! declares (`identifier`), `_count` and keyset paging; unknown parameters answer 400 unless
//! `Prefer: handling=lenient`. The full search engine is the next issue.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use store::SearchQuery;

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, check_type, encode_query};

pub async fn type_search(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    fhir: Fhir,
) -> Result<Response, ApiError> {
    check_type(&state, &ty)?;
    let params = fhir.params.clone();
    Ok(search(&state, &fhir, Some(&ty), &params)
        .await?
        .into_http(fhir.pretty))
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
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
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

pub async fn search(
    state: &AppState,
    fhir: &Fhir,
    ty: Option<&str>,
    params: &[(String, String)],
) -> Result<Reply, ApiError> {
    let q = SearchQuery::parse(ty, params, state.store.extractor(), fhir.lenient)?;
    let page = state.store.search(&fhir.ctx, &q).await?;
    let kept: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_cursor" && !q.ignored.contains(k))
        .cloned()
        .collect();
    let path = ty.map(|t| format!("/{t}")).unwrap_or_default();
    let link = |cursor: Option<i64>| {
        let mut p = kept.clone();
        if let Some(c) = cursor {
            p.push(("_cursor".into(), c.to_string()));
        }
        let qs = encode_query(&p);
        if qs.is_empty() {
            format!("{}{path}", fhir.base)
        } else {
            format!("{}{path}?{qs}", fhir.base)
        }
    };
    let mut links = vec![json!({"relation": "self", "url": link(q.after)})];
    if let Some(next) = page.next {
        links.push(json!({"relation": "next", "url": link(Some(next))}));
    }
    let entries: Vec<Value> = page
        .matches
        .iter()
        .map(|r| {
            let resource = r
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .unwrap_or(Value::Null);
            json!({
                "fullUrl": format!("{}/{}/{}", fhir.base, r.resource_type, r.id),
                "resource": resource,
                "search": {"mode": "match"},
            })
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": entries,
    });
    Ok(Reply::json(StatusCode::OK, bundle))
}
