//! HTTP plumbing shared by the interactions: the per-request [`Fhir`] extractor (content
//! negotiation, `_format`, `_pretty`, `Prefer`, base URL, request context), body parsing,
//! `If-Match`, and [`Reply`], the protocol-neutral result of an interaction that becomes either an
//! HTTP response or a bundle entry's `response`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{RequestContext, StoredResource};

use crate::AppState;
use crate::error::ApiError;
use crate::security::audit::{AuditFacts, RequestAudit};
use crate::security::{Admitted, ScopeFilter};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// What `Prefer: return=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// Everything about a FHIR request except its path and body.
#[derive(Debug, Clone)]
pub struct Fhir {
    pub ctx: RequestContext,
    /// The FHIR base URL as clients see it, e.g. `http://127.0.0.1:8080/fhir`.
    pub base: String,
    pub pretty: bool,
    pub prefer: Return,
    /// `Prefer: handling=lenient`: unknown search parameters are ignored.
    pub lenient: bool,
    /// Decoded query parameters, without `_format` and `_pretty`.
    pub params: Vec<(String, String)>,
    pub headers: HeaderMap,
    /// What the security gate admitted the request as (`None` on an open server).
    pub admitted: Option<Admitted>,
    /// The request is audited (what it answers is named in its record).
    pub audited: bool,
}

impl Fhir {
    /// Whether the caller may do `interaction` on `resource_type` at all: always on an open
    /// server; otherwise as the token's scopes say.
    pub fn may(&self, interaction: auth::scope::Interaction, resource_type: &str) -> bool {
        self.admitted
            .as_ref()
            .is_none_or(|a| a.caller.allows(interaction, resource_type))
    }

    /// The v2 scope restriction the request is confined to, if any.
    pub fn scope_filter(&self) -> Option<&ScopeFilter> {
        self.admitted.as_ref()?.scope_filter.as_ref()
    }
}

impl FromRequestParts<AppState> for Fhir {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let all = store::search::parse_query_string(parts.uri.query().unwrap_or(""));
        let mut pretty = false;
        let mut params = Vec::with_capacity(all.len());
        for (k, v) in all {
            match k.as_str() {
                "_format" => check_format(&v)?,
                "_pretty" => pretty = v == "true",
                _ => params.push((k, v)),
            }
        }
        if let Some(accept) = parts.headers.get(header::ACCEPT) {
            check_accept(accept)?;
        }
        let (prefer, lenient) = parse_prefer(&parts.headers);
        let base = fhir_base(state, &parts.headers);
        let mut ctx = RequestContext::system();
        if let Some(id) = parts
            .headers
            .get("x-request-id")
            .and_then(|h| h.to_str().ok())
        {
            ctx = ctx.with_request_id(id);
        }
        let admitted = parts.extensions.get::<Admitted>().cloned();
        if let Some(a) = &admitted {
            a.apply(&mut ctx);
        }
        // The record of the request's writes goes into their own transactions.
        let audit = parts.extensions.get::<std::sync::Arc<RequestAudit>>();
        if let Some(writes) = audit {
            if let Some(a) = &admitted {
                writes.set_caller(a.caller.clone(), a.break_glass);
            }
            ctx.audit = Some(store::WriteAudit(writes.clone()));
        }
        Ok(Fhir {
            ctx,
            base,
            pretty,
            prefer,
            lenient,
            params,
            headers: parts.headers.clone(),
            audited: audit.is_some(),
            admitted,
        })
    }
}

/// The FHIR base URL of a request: the configured one, or `http(s)://<Host>/fhir`.
pub fn fhir_base(state: &AppState, headers: &HeaderMap) -> String {
    match &state.config.base_url {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let scheme = if state.config.https { "https" } else { "http" };
            format!("{scheme}://{host}/fhir")
        }
    }
}

fn is_json_media(m: &str) -> bool {
    matches!(
        m,
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
    )
}

fn is_xml_media(m: &str) -> bool {
    matches!(
        m,
        "xml" | "text/xml" | "application/xml" | "application/fhir+xml" | "application/xml+fhir"
    )
}

fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn check_format(v: &str) -> Result<(), ApiError> {
    let m = media_type(v);
    if is_json_media(&m) {
        Ok(())
    } else if is_xml_media(&m) {
        Err(ApiError::not_acceptable(
            "XML is not supported; this server speaks application/fhir+json only",
        ))
    } else {
        Err(ApiError::not_acceptable(format!(
            "_format '{v}' is not supported; use json"
        )))
    }
}

fn check_accept(accept: &HeaderValue) -> Result<(), ApiError> {
    let Ok(s) = accept.to_str() else {
        return Err(ApiError::bad_request("malformed Accept header"));
    };
    let ok = s
        .split(',')
        .map(media_type)
        .any(|m| m.is_empty() || m == "*/*" || m == "application/*" || is_json_media(&m));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(format!(
            "cannot produce '{s}'; this server speaks application/fhir+json only"
        )))
    }
}

fn parse_prefer(headers: &HeaderMap) -> (Return, bool) {
    let mut ret = Return::default();
    let mut lenient = false;
    for value in headers.get_all("prefer") {
        let Ok(s) = value.to_str() else { continue };
        for part in s.split([',', ';']).map(str::trim) {
            match part {
                "return=minimal" => ret = Return::Minimal,
                "return=representation" => ret = Return::Representation,
                "return=OperationOutcome" => ret = Return::OperationOutcome,
                "handling=lenient" => lenient = true,
                "handling=strict" => lenient = false,
                _ => {}
            }
        }
    }
    (ret, lenient)
}

/// Parses a request body holding one resource (JSON object). XML bodies get 415.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let m = media_type(ct.to_str().unwrap_or(""));
        if !is_json_media(&m) {
            return Err(ApiError::unsupported_media(format!(
                "Content-Type '{m}' is not supported; send application/fhir+json"
            )));
        }
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("the request has no body"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::unparsable(format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::unparsable(
            "the body must be a JSON object (a FHIR resource)",
        ));
    }
    Ok(v)
}

/// Checks that a body's `resourceType` is the one the URL names (`ingest`'s check).
pub fn check_resource_type(resource: &Value, expected: &str) -> Result<(), ApiError> {
    Ok(ingest::entry::check_resource_type(resource, expected)?)
}

/// Runs the validator over a resource about to be written.
pub fn validate(state: &AppState, resource: &Value) -> Result<(), ApiError> {
    Ok(ingest::entry::validate(state.validator.as_ref(), resource)?)
}

/// A path's resource type must be one the server knows. A `$name` in its place is a
/// system-level operation (`[base]/$export`), or an instance-level one in a compartment's
/// place (`Patient/1/$summary`), none of which this server implements.
pub fn check_type(state: &AppState, ty: &str) -> Result<(), ApiError> {
    match ingest::entry::check_type(state.validator.as_ref(), ty) {
        Ok(()) => Ok(()),
        Err(_) if ty.starts_with('$') => {
            Err(crate::interactions::operation::unsupported_operation(ty))
        }
        Err(e) => Err(e.into()),
    }
}

pub use ingest::entry::{parse_etag, valid_id};

/// Parses an `If-Match` header (`W/"3"` or `"3"`); `None` when absent.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    parse_etag(v.to_str().unwrap_or(""))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("malformed If-Match header: expected W/\"<versionId>\"")
        })
}

/// The body of a [`Reply`].
#[derive(Debug, Clone)]
pub enum ReplyBody {
    None,
    /// Stored resource JSON, sent as is unless pretty-printing is asked for.
    Raw(String),
    Json(Value),
}

/// The result of an interaction, before it becomes an HTTP response or a bundle entry.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: ReplyBody,
    pub version: Option<u64>,
    pub last_modified: Option<i64>,
    pub location: Option<String>,
    /// What the audit record of the request names (a single resource answered).
    pub audit: Option<AuditFacts>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Reply {
            status,
            body: ReplyBody::Json(body),
            version: None,
            last_modified: None,
            location: None,
            audit: None,
        }
    }

    /// A stored version with its ETag and Last-Modified, body chosen by `Prefer`.
    pub fn resource(status: StatusCode, r: &StoredResource, prefer: Return, what: &str) -> Self {
        let body = match (prefer, &r.body) {
            (Return::Minimal, _) | (_, None) => ReplyBody::None,
            (Return::OperationOutcome, _) => ReplyBody::Json(crate::error::information(format!(
                "{what} {}/{}/_history/{}",
                r.resource_type, r.id, r.version
            ))),
            (Return::Representation, Some(b)) => ReplyBody::Raw(b.clone()),
        };
        Reply {
            status,
            body,
            version: Some(r.version),
            last_modified: Some(r.last_updated),
            location: None,
            audit: None,
        }
    }

    /// The same reply, naming `r` in the request's audit record when the request is audited.
    pub fn audited(mut self, fhir: &Fhir, r: &StoredResource) -> Self {
        if fhir.audited {
            self.audit = Some(AuditFacts::of_resource(r));
        }
        self
    }

    pub fn with_location(mut self, base: &str, r: &StoredResource) -> Self {
        self.location = Some(format!(
            "{base}/{}/{}/_history/{}",
            r.resource_type, r.id, r.version
        ));
        self
    }

    /// The body as a JSON value (for bundle entries).
    pub fn body_json(&self) -> Option<Value> {
        match &self.body {
            ReplyBody::None => None,
            ReplyBody::Raw(s) => serde_json::from_str(s).ok(),
            ReplyBody::Json(v) => Some(v.clone()),
        }
    }

    /// The `Bundle.entry.response` of this reply.
    pub fn entry_response(&self) -> Value {
        let mut r = json!({"status": status_line(self.status)});
        if let Some(l) = &self.location {
            r["location"] = json!(l);
        }
        if let Some(v) = self.version {
            r["etag"] = json!(format!("W/\"{v}\""));
        }
        if let Some(t) = self.last_modified {
            r["lastModified"] = json!(store::time::format_instant(t));
        }
        r
    }

    pub fn into_http(self, pretty: bool) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(v) = self.version
            && let Ok(h) = HeaderValue::from_str(&format!("W/\"{v}\""))
        {
            headers.insert(header::ETAG, h);
        }
        if let Some(t) = self.last_modified
            && let Ok(h) = HeaderValue::from_str(&store::time::format_http_date(t))
        {
            headers.insert(header::LAST_MODIFIED, h);
        }
        if let Some(l) = &self.location
            && let Ok(h) = HeaderValue::from_str(l)
        {
            headers.insert(header::LOCATION, h.clone());
            if self.status == StatusCode::CREATED {
                headers.insert(header::CONTENT_LOCATION, h);
            }
        }
        let facts = self.audit;
        let with_facts = |mut r: Response| {
            if let Some(f) = facts {
                r.extensions_mut().insert(f);
            }
            r
        };
        let body = match self.body {
            ReplyBody::None => return with_facts((self.status, headers).into_response()),
            ReplyBody::Raw(s) if !pretty => s,
            ReplyBody::Raw(s) => match serde_json::from_str::<Value>(&s) {
                Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(s),
                Err(_) => s,
            },
            ReplyBody::Json(v) if pretty => serde_json::to_string_pretty(&v).unwrap_or_default(),
            ReplyBody::Json(v) => serde_json::to_string(&v).unwrap_or_default(),
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        with_facts((self.status, headers, body).into_response())
    }
}

/// `201 Created`.
pub fn status_line(s: StatusCode) -> String {
    format!("{} {}", s.as_u16(), s.canonical_reason().unwrap_or(""))
}

/// Percent-encodes a query component (keeps unreserved characters and `: , /`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:,/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs.
pub fn encode_query(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}
