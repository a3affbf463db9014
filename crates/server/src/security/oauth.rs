//! The authorization server's endpoints under `/auth` and its discovery document:
//! - `POST /auth/token`: client credentials with a `private_key_jwt` assertion (SMART Backend
//!   Services); the scopes granted are those asked for that the client's registration allows.
//!   At a hub, a node whose client certificate is pinned authenticates over a connection
//!   presenting it too (`exchange::pinning`).
//!   For apps (public clients): the code of the sign-in page (`login`) with its PKCE verifier,
//!   and refresh tokens (with `offline_access` or `online_access`), each used once and
//!   replaced, kept as digests in the registry's token table so a restart keeps them.
//!   A token request may carry a purpose of use (`purpose_of_use`, a v3 PurposeOfUse code),
//!   and ask to break the glass (`purpose_of_use=ETREAT` with a `break_glass_reason`): such a
//!   token lives at most `SecuritySettings::break_glass_seconds` and says so in its claims;
//! - `GET /auth/jwks`: the public keys of access tokens;
//! - `POST /auth/introspect` (RFC 7662) and `POST /auth/revoke` (RFC 7009), for callers that
//!   authenticate with a bearer token or a client assertion;
//! - `GET /.well-known/smart-configuration` (also under `/fhir/`).
//!
//! Errors are RFC 6749 §5.2 JSON (`{"error": "invalid_client", ...}`), never an
//! OperationOutcome: these endpoints speak OAuth, not FHIR. Secrets are never logged.

use std::collections::HashMap;

use auth::assertion::{self, AssertionError};
use auth::discovery::{self, Endpoints};
use auth::registry::{ClientKind, parse_jwks};
use auth::scope::ScopeSet;
use auth::token::AccessClaims;
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::audit::AuditSubject;
use super::{Security, now};
use crate::AppState;
use crate::error::ApiError;
use crate::tls::ClientCertificate;

/// The `client_assertion_type` of `private_key_jwt`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Purposes of use a token may carry (v3 PurposeOfUse).
pub const PURPOSES: &[&str] = &[
    "TREAT",
    "ETREAT",
    "HPAYMT",
    "HOPERAT",
    "PUBHLTH",
    "HRESCH",
    "PATRQT",
    "FAMRQT",
    "PWATRNY",
    "HSYSADMIN",
    "COVERAGE",
    "CLINTRCH",
    "HLEGAL",
    "HQUALIMP",
    "HDIRECT",
];

/// The issuer of this node's tokens, and the root its `/auth` endpoints hang off: the FHIR
/// base without its final `/fhir`.
pub fn issuer_of(base: &str) -> &str {
    base.strip_suffix("/fhir").unwrap_or(base)
}

/// The endpoints for a request whose FHIR base is `base`.
pub fn endpoints(base: &str) -> Endpoints {
    Endpoints::under(issuer_of(base))
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "authorization server failure");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the authorization server failed; see its log".into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        no_store(self.status, &body)
    }
}

/// A JSON answer that must not be cached (RFC 6749 §5.1).
fn no_store(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// The security state, or 404 when the server is open (no authorization server runs).
fn security(state: &AppState) -> Result<&Security, OAuthError> {
    state.security.as_deref().ok_or_else(|| OAuthError {
        status: StatusCode::NOT_FOUND,
        error: "invalid_request",
        description: "this server runs without authorization (no client or user is \
                      registered), so it has no authorization server"
            .into(),
    })
}

/// The parameters of a form body; a repeated parameter is refused (RFC 6749 §3.2).
pub(crate) fn form_params(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::new("invalid_request", "the body is not UTF-8"))?
        .replace('+', " ");
    let mut out = HashMap::new();
    for (k, v) in store::search::parse_query_string(&text) {
        if out.insert(k.clone(), v).is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                format!("parameter {k} is repeated"),
            ));
        }
    }
    Ok(out)
}

/// What a form-posting endpoint (token, introspection, revocation) starts from: the
/// authorization server, the form's parameters and the request's FHIR base.
fn form_request<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(&'s Security, HashMap<String, String>, String), OAuthError> {
    let security = security(state)?;
    let p = form_params(headers, body)?;
    Ok((security, p, crate::http::fhir_base(state, headers)))
}

fn required<'a>(p: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    p.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", format!("{name} is required")))
}

/// `POST /auth/token`.
pub async fn token(
    State(state): State<AppState>,
    presented: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (security, p, base) = form_request(&state, &headers, &body)?;
    match required(&p, "grant_type")? {
        "client_credentials" => client_credentials(security, &base, &p, presented.as_deref()).await,
        "authorization_code" => authorization_code(security, &base, &p).await,
        "refresh_token" => refresh(security, &base, &p).await,
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!(
                "grant_type {other} is not offered; use client_credentials, \
                 authorization_code or refresh_token"
            ),
        )),
    }
}

/// Authenticates the client of a `private_key_jwt` assertion: its registration, its keys,
/// the assertion's signature, audience (`token_endpoint`), lifetime and one-time `jti`.
async fn assertion_client(
    security: &Security,
    token_endpoint: &str,
    p: &HashMap<String, String>,
) -> Result<auth::registry::Client, OAuthError> {
    if required(p, "client_assertion_type")? != JWT_BEARER {
        return Err(OAuthError::new(
            "invalid_client",
            format!("client_assertion_type must be {JWT_BEARER}"),
        ));
    }
    let assertion = required(p, "client_assertion")?;
    let unknown = || OAuthError::new("invalid_client", "the client is not registered here");
    let id = assertion::claimed_client(assertion)
        .map_err(|e| OAuthError::new("invalid_client", e.to_string()))?;
    if let Some(given) = p.get("client_id")
        && *given != id
    {
        return Err(OAuthError::new(
            "invalid_client",
            "client_id differs from the assertion's issuer",
        ));
    }
    let client = security
        .registry()
        .client(&id)
        .await
        .map_err(OAuthError::internal)?
        .ok_or_else(unknown)?;
    if client.disabled {
        return Err(OAuthError::new("invalid_client", "the client is disabled"));
    }
    if client.kind != ClientKind::Backend {
        return Err(OAuthError::new(
            "unauthorized_client",
            "only backend service clients authenticate with an assertion",
        ));
    }
    let check = |keys: &auth::registry::JwkSet| {
        let mut ledger = security.ledger.lock().unwrap_or_else(|e| e.into_inner());
        assertion::verify(
            assertion,
            &client.id,
            keys,
            token_endpoint,
            now(),
            &mut *ledger,
        )
    };
    let checked = match (&client.jwks, &client.jwks_uri) {
        (Some(text), _) => check(&parse_jwks(text).map_err(OAuthError::internal)?),
        (None, Some(uri)) => {
            let unreachable = |e: String| OAuthError::new("invalid_client", e);
            let keys = security
                .remote_keys(uri, false)
                .await
                .map_err(unreachable)?;
            match check(&keys) {
                // The client may have rotated its keys since they were fetched.
                Err(AssertionError::Signature) => {
                    let keys = security.remote_keys(uri, true).await.map_err(unreachable)?;
                    check(&keys)
                }
                other => other,
            }
        }
        (None, None) => {
            return Err(OAuthError::new(
                "invalid_client",
                "the client's registration has no keys",
            ));
        }
    };
    checked.map_err(|e| match e {
        AssertionError::Replay => OAuthError::new("invalid_grant", e.to_string()),
        _ => OAuthError::new("invalid_client", e.to_string()),
    })?;
    Ok(client)
}

async fn client_credentials(
    security: &Security,
    base: &str,
    p: &HashMap<String, String>,
    presented: Option<&ClientCertificate>,
) -> Result<Response, OAuthError> {
    let e = endpoints(base);
    let client = assertion_client(security, &e.token, p).await?;
    if let Some(nodes) = &security.hub_nodes {
        // A node with a pinned certificate gets tokens over a connection presenting it.
        let registration = crate::exchange::hub::registration(nodes.as_ref(), &client.id)
            .await
            .map_err(OAuthError::internal)?;
        let pinned = registration
            .as_ref()
            .and_then(|r| r.request.tls_certificate_sha256.as_deref());
        crate::exchange::pinning::check(&client.id, pinned, presented)
            .map_err(|r| OAuthError::new("invalid_client", r.to_string()))?;
    }
    let asked = ScopeSet::parse(required(p, "scope")?)
        .map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
    let allowed = ScopeSet::parse(&client.scope).map_err(OAuthError::internal)?;
    let granted = asked.within(&allowed);
    if granted.clinical().next().is_none() {
        return Err(OAuthError::new(
            "invalid_scope",
            format!(
                "none of the scopes asked for is allowed to client {}",
                client.id
            ),
        ));
    }
    if granted
        .clinical()
        .any(|c| c.context == auth::scope::Context::Patient)
    {
        return Err(OAuthError::new(
            "invalid_scope",
            "a backend service has no patient in context: ask for system/ scopes",
        ));
    }
    let (purpose, break_glass) = purpose(p)?;
    let network = network_grant(security, base, &client.id, p).await?;
    let mut lifetime = security.settings.service_token_seconds;
    if break_glass.is_some() {
        lifetime = lifetime.min(security.settings.break_glass_seconds);
    }
    let now = now();
    let organization = match (&network.audience, &client.organization) {
        // Another node reads the organisation as the hub names it, absolutely.
        (Some(_), Some(org)) => Some(format!("{base}/{org}")),
        (_, org) => org.clone(),
    };
    let claims = AccessClaims {
        iss: e.issuer.clone(),
        sub: client.id.clone(),
        aud: network.audience.unwrap_or_else(|| base.to_owned()),
        exp: now + lifetime,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: granted.to_string(),
        client_id: client.id.clone(),
        patient: None,
        fhir_user: network.requester,
        organization,
        purpose_of_use: purpose,
        break_glass,
    };
    let token = security.issue(&claims).map_err(OAuthError::internal)?;
    tracing::info!(client = %client.id, scope = %claims.scope, jti = %claims.jti,
        break_glass = claims.break_glass.is_some(), "access token issued");
    let mut response = no_store(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": claims.scope,
        }),
    );
    // The audit record of the issue names the client, and flags emergency access.
    response.extensions_mut().insert(AuditSubject {
        client_id: Some(client.id.clone()),
        token_event: Some(if claims.break_glass.is_some() {
            "issue-break-glass"
        } else {
            "issue"
        }),
        break_glass: claims.break_glass.is_some(),
        ..AuditSubject::default()
    });
    Ok(response)
}

/// What a hub grants an approved node beyond its own API: a token for another node's FHIR
/// base (`resource`, RFC 8707) and the requester the node acts for (`requester`).
#[derive(Debug, Default)]
struct NetworkGrant {
    audience: Option<String>,
    requester: Option<String>,
}

async fn network_grant(
    security: &Security,
    base: &str,
    client_id: &str,
    p: &HashMap<String, String>,
) -> Result<NetworkGrant, OAuthError> {
    let resource = p
        .get("resource")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty() && *r != base);
    let requester = p
        .get("requester")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if resource.is_none() && requester.is_none() {
        return Ok(NetworkGrant::default());
    }
    let Some(nodes) = &security.hub_nodes else {
        return Err(OAuthError::new(
            "invalid_target",
            "this server issues tokens for its own API only (it is not a hub)",
        ));
    };
    let approved = |text: &str| {
        serde_json::from_str::<exchange::registration::NodeRegistration>(text)
            .ok()
            .filter(|r| r.status == exchange::registration::NodeStatus::Approved)
    };
    let caller = nodes
        .get(store::ExchangeTable::Nodes, client_id)
        .await
        .map_err(OAuthError::internal)?;
    if caller.as_deref().and_then(approved).is_none() {
        return Err(OAuthError::new(
            "invalid_request",
            format!(
                "client {client_id} is not an approved node: it may not name a resource or requester"
            ),
        ));
    }
    let audience = match resource {
        None => None,
        Some(r) => {
            let all = nodes
                .scan(store::ExchangeTable::Nodes, "")
                .await
                .map_err(OAuthError::internal)?;
            let target = all
                .iter()
                .filter_map(|(_, text)| approved(text))
                .find(|n| node_audiences(n).any(|a| a == r));
            match target {
                Some(_) => Some(r.to_owned()),
                None => {
                    return Err(OAuthError::new(
                        "invalid_target",
                        format!("{r} is not the FHIR base of an approved node of this network"),
                    ));
                }
            }
        }
    };
    Ok(NetworkGrant {
        audience,
        requester,
    })
}

/// The audiences a hub issues tokens for at an approved node: its FHIR base and, when it
/// serves images, its DICOMweb base.
fn node_audiences(n: &exchange::registration::NodeRegistration) -> impl Iterator<Item = &str> {
    std::iter::once(n.request.endpoint.as_str())
        .chain(n.request.imaging_endpoint.as_deref())
        .map(|a| a.trim_end_matches('/'))
}

/// At a hub: the audience of `token` when it is one of `caller`'s own endpoints (a node's
/// image server introspecting a token issued for it); `None` otherwise.
async fn introspected_audience(security: &Security, caller: &str, token: &str) -> Option<String> {
    let nodes = security.hub_nodes.as_ref()?;
    let aud = unverified_claim(token, "aud")?;
    let text = nodes
        .get(store::ExchangeTable::Nodes, caller)
        .await
        .ok()??;
    let r: exchange::registration::NodeRegistration = serde_json::from_str(&text).ok()?;
    (r.status == exchange::registration::NodeStatus::Approved
        && node_audiences(&r).any(|a| a == aud))
    .then_some(aud)
}

/// A claim of a JWT, read without checking anything (only to choose how to check it).
pub(crate) fn unverified_claim(token: &str, name: &str) -> Option<String> {
    let bytes = auth::token::unverified_payload(token).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get(name)?.as_str().map(str::to_owned)
}

/// What a refresh token stands for, kept in the registry's token table under the token's
/// digest (the token itself is never stored).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RefreshGrant {
    kind: String,
    client_id: String,
    user: String,
    fhir_user: Option<String>,
    patient: Option<String>,
    organization: Option<String>,
    scope: String,
    exp: i64,
}

const REFRESH: &str = "refresh-token";

/// The registered, enabled public app `client_id`.
async fn public_client(
    security: &Security,
    client_id: &str,
) -> Result<auth::registry::Client, OAuthError> {
    match security.registry().client(client_id).await {
        Ok(Some(c)) if !c.disabled && c.kind == ClientKind::Public => Ok(c),
        Ok(_) => Err(OAuthError::new(
            "invalid_client",
            "the client is not a registered, enabled app",
        )),
        Err(e) => Err(OAuthError::internal(e)),
    }
}

/// `grant_type=authorization_code`: a code from the sign-in page, once, with its PKCE
/// verifier and redirect URI.
async fn authorization_code(
    security: &Security,
    base: &str,
    p: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let code = required(p, "code")?;
    let client_id = required(p, "client_id")?;
    let grant = security.take_code(code).ok_or_else(|| {
        OAuthError::new(
            "invalid_grant",
            "the code is unknown, expired or already used",
        )
    })?;
    if grant.client_id != client_id {
        return Err(OAuthError::new(
            "invalid_grant",
            "the code was issued to another client",
        ));
    }
    if required(p, "redirect_uri")? != grant.redirect_uri {
        return Err(OAuthError::new(
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        ));
    }
    auth::pkce::verify(required(p, "code_verifier")?, &grant.challenge)
        .map_err(|e| OAuthError::new("invalid_grant", e.to_string()))?;
    public_client(security, client_id).await?;
    app_tokens(
        security,
        base,
        RefreshGrant {
            kind: REFRESH.into(),
            client_id: grant.client_id,
            user: grant.user,
            fhir_user: grant.fhir_user,
            patient: grant.patient,
            organization: grant.organization,
            scope: grant.scope,
            exp: 0,
        },
        "issue",
    )
    .await
}

/// `grant_type=refresh_token`: a new access token (and a new refresh token; the one used is
/// spent), optionally with fewer scopes.
async fn refresh(
    security: &Security,
    base: &str,
    p: &HashMap<String, String>,
) -> Result<Response, OAuthError> {
    let token = required(p, "refresh_token")?;
    let client_id = required(p, "client_id")?;
    let id = auth::secret::stored_id(token);
    let unknown = || OAuthError::new("invalid_grant", "the refresh token is unknown or expired");
    let body = security
        .registry()
        .token(&id)
        .await
        .map_err(OAuthError::internal)?
        .ok_or_else(unknown)?;
    let mut grant: RefreshGrant = serde_json::from_str(&body).map_err(|_| unknown())?;
    if grant.kind != REFRESH || grant.exp <= now() {
        return Err(unknown());
    }
    if grant.client_id != client_id {
        return Err(OAuthError::new(
            "invalid_grant",
            "the refresh token was issued to another client",
        ));
    }
    public_client(security, client_id).await?;
    // Spent: a refresh token is used once.
    security
        .registry()
        .remove_token(&id)
        .await
        .map_err(OAuthError::internal)?;
    if let Some(asked) = p.get("scope").filter(|s| !s.is_empty()) {
        let asked =
            ScopeSet::parse(asked).map_err(|e| OAuthError::new("invalid_scope", e.to_string()))?;
        let had = ScopeSet::parse(&grant.scope).map_err(OAuthError::internal)?;
        grant.scope = asked.within(&had).to_string();
    }
    app_tokens(security, base, grant, "refresh").await
}

/// An app's access token for `grant`, and a refresh token when it was granted
/// `offline_access` or `online_access`.
async fn app_tokens(
    security: &Security,
    base: &str,
    mut grant: RefreshGrant,
    event: &'static str,
) -> Result<Response, OAuthError> {
    let e = endpoints(base);
    let now = now();
    let lifetime = security.settings.app_token_seconds;
    let claims = AccessClaims {
        iss: e.issuer.clone(),
        sub: grant.user.clone(),
        aud: base.to_owned(),
        exp: now + lifetime,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: grant.scope.clone(),
        client_id: grant.client_id.clone(),
        patient: grant.patient.clone(),
        fhir_user: grant.fhir_user.clone(),
        organization: grant.organization.clone(),
        purpose_of_use: None,
        break_glass: None,
    };
    let token = security.issue(&claims).map_err(OAuthError::internal)?;
    let mut answer = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": claims.scope,
    });
    if let Some(p) = &claims.patient {
        answer["patient"] = json!(p);
    }
    let scopes = ScopeSet::parse(&grant.scope).map_err(OAuthError::internal)?;
    if scopes.has("offline_access") || scopes.has("online_access") {
        let refresh = auth::secret::new_secret();
        grant.exp = now + security.settings.refresh_seconds;
        let body = serde_json::to_string(&grant).map_err(OAuthError::internal)?;
        security
            .registry()
            .put_token(&auth::secret::stored_id(&refresh), &body)
            .await
            .map_err(OAuthError::internal)?;
        answer["refresh_token"] = json!(refresh);
    }
    tracing::info!(client = %grant.client_id, user = %grant.user, scope = %claims.scope,
        jti = %claims.jti, "access token issued to an app");
    let mut response = no_store(StatusCode::OK, &answer);
    response.extensions_mut().insert(AuditSubject {
        client_id: Some(grant.client_id.clone()),
        login_user: Some(grant.fhir_user.clone().unwrap_or(grant.user.clone())),
        token_event: Some(event),
        ..AuditSubject::default()
    });
    Ok(response)
}

/// The purpose of use of a token request, and the break-glass reason when it asks for
/// emergency access.
fn purpose(p: &HashMap<String, String>) -> Result<(Option<String>, Option<String>), OAuthError> {
    let purpose = p.get("purpose_of_use").filter(|v| !v.is_empty()).cloned();
    if let Some(code) = &purpose
        && !PURPOSES.contains(&code.as_str())
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!("purpose_of_use {code} is not a known PurposeOfUse code"),
        ));
    }
    let reason = p
        .get("break_glass_reason")
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let emergency = purpose.as_deref() == Some(auth::consent::EMERGENCY_PURPOSE);
    match (emergency, reason) {
        (true, Some(r)) => Ok((purpose, Some(r))),
        (true, None) => Err(OAuthError::new(
            "invalid_request",
            "emergency access (purpose_of_use ETREAT) needs a break_glass_reason",
        )),
        (false, Some(_)) => Err(OAuthError::new(
            "invalid_request",
            "break_glass_reason goes with purpose_of_use ETREAT only",
        )),
        (false, None) => Ok((purpose, None)),
    }
}

/// `GET /auth/jwks`.
pub async fn jwks(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let security = security(&state)?;
    Ok(no_store(StatusCode::OK, &security.jwks()))
}

/// Who calls introspection or revocation: a client with a valid bearer token, or with a
/// client assertion in the form.
async fn endpoint_caller(
    security: &Security,
    base: &str,
    headers: &HeaderMap,
    p: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| OAuthError::new("invalid_client", "Authorization must be Bearer"))?;
        let claims = security
            .verify(token.trim(), issuer_of(base), base)
            .map_err(|e| OAuthError::new("invalid_client", e.to_string()))?;
        return Ok(claims.client_id);
    }
    if p.contains_key("client_assertion") {
        let e = endpoints(base);
        // The assertion's audience is the token endpoint, as for every assertion here.
        return Ok(assertion_client(security, &e.token, p).await?.id);
    }
    // A public app has no credentials: it names itself (RFC 7009 §2.1).
    if let Some(id) = p.get("client_id") {
        return Ok(public_client(security, id).await?.id);
    }
    Err(OAuthError::new(
        "invalid_client",
        "authenticate with a bearer token or a client assertion",
    ))
}

/// `POST /auth/introspect` (RFC 7662): whether a token is active, and its claims.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (security, p, base) = form_request(&state, &headers, &body)?;
    let caller = endpoint_caller(security, &base, &headers, &p).await?;
    let token = required(&p, "token")?;
    // A hub also answers a node for the tokens it issued for that node's endpoints.
    let audience = introspected_audience(security, &caller, token)
        .await
        .unwrap_or_else(|| base.clone());
    let answer = match security.verify(token, issuer_of(&base), &audience) {
        Ok(c) => {
            let mut a = json!({
                "active": true,
                "scope": c.scope,
                "client_id": c.client_id,
                "sub": c.sub,
                "exp": c.exp,
                "iat": c.iat,
                "iss": c.iss,
                "aud": c.aud,
                "jti": c.jti,
                "token_type": "Bearer",
            });
            for (name, value) in [
                ("patient", &c.patient),
                ("fhirUser", &c.fhir_user),
                ("organization", &c.organization),
                ("purpose_of_use", &c.purpose_of_use),
                ("break_glass", &c.break_glass),
            ] {
                if let Some(v) = value {
                    a[name] = json!(v);
                }
            }
            a
        }
        Err(_) => json!({"active": false}),
    };
    Ok(no_store(StatusCode::OK, &answer))
}

/// `POST /auth/revoke` (RFC 7009): the caller revokes one of its own tokens. An unknown or
/// already invalid token is no error.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let (security, p, base) = form_request(&state, &headers, &body)?;
    let caller = endpoint_caller(security, &base, &headers, &p).await?;
    let token = required(&p, "token")?;
    // A refresh token: forgotten, when it is the caller's.
    let refresh_id = auth::secret::stored_id(token);
    if let Some(body) = security
        .registry()
        .token(&refresh_id)
        .await
        .map_err(OAuthError::internal)?
        && let Ok(grant) = serde_json::from_str::<RefreshGrant>(&body)
        && grant.kind == REFRESH
    {
        if grant.client_id != caller {
            return Err(OAuthError::new(
                "unauthorized_client",
                "a client may revoke its own tokens only",
            ));
        }
        security
            .registry()
            .remove_token(&refresh_id)
            .await
            .map_err(OAuthError::internal)?;
        tracing::info!(client = %caller, "refresh token revoked");
        return Ok(no_store(StatusCode::OK, &json!({})));
    }
    if let Ok(claims) = security.verify(token, issuer_of(&base), &base) {
        if claims.client_id != caller {
            return Err(OAuthError::new(
                "unauthorized_client",
                "a client may revoke its own tokens only",
            ));
        }
        security
            .revoke(&claims)
            .await
            .map_err(OAuthError::internal)?;
        tracing::info!(client = %caller, jti = %claims.jti, "access token revoked");
    }
    Ok(no_store(StatusCode::OK, &json!({})))
}

/// `GET /.well-known/smart-configuration`, and the same under `/fhir/`.
pub async fn smart_configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.security.is_none() {
        return Err(ApiError::not_found(
            "this server runs without authorization (no client or user is registered)",
        ));
    }
    let base = crate::http::fhir_base(&state, &headers);
    let doc = discovery::smart_configuration(&endpoints(&base));
    let mut r = (StatusCode::OK, doc.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
