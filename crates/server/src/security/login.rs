//! Authorization code with PKCE (SMART App Launch 2.0, standalone launch) through the node's
//! own sign-in page, for patient and clinician apps (registered as public clients with their
//! redirect URIs):
//!
//! 1. `GET /auth/authorize` checks the request (client, exact redirect URI, `response_type`
//!    `code`, an S256 `code_challenge`, `state`, `aud` naming this FHIR base, the scopes) and
//!    shows the sign-in page. What is asked is kept here under a random id; the page carries
//!    only that id, so nothing the browser sends back can widen it.
//! 2. `POST /auth/authorize` checks the user's name and password (argon2id), grants the
//!    scopes the client, the user and the request all allow, binds a patient user's token to
//!    their person (the golden record of their Patient), and redirects to the app with a
//!    one-time code that lives 60 seconds. A denial redirects with `access_denied`.
//! 3. The token endpoint (`oauth`) exchanges the code for tokens once, given the PKCE
//!    verifier and the same redirect URI, and later exchanges refresh tokens.
//!
//! Errors before the redirect URI is known to be the client's are shown on the page (never
//! redirected to an unchecked address); after it, they go back to the app as RFC 6749 §4.1.2.1
//! error redirects. The page is never cached or framed.

use std::collections::HashMap;

use auth::scope::{Context, Scope, ScopeSet};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::audit::AuditSubject;
use super::oauth::form_params;
use super::{Security, now};
use crate::AppState;

/// Seconds a sign-in page stays usable.
const PENDING_SECONDS: i64 = 600;
/// Seconds an authorization code lives.
const CODE_SECONDS: i64 = 60;
/// Wrong passwords before a sign-in request is dropped.
const ATTEMPTS: u32 = 5;

/// An authorization request waiting for its user.
#[derive(Debug, Clone)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: String,
    challenge: String,
    created: i64,
    attempts: u32,
}

/// What a code stands for, until exchanged.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub scope: String,
    pub user: String,
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub organization: Option<String>,
    pub expires: i64,
}

/// Sign-in requests and codes in flight (in memory: both live minutes at most).
#[derive(Debug, Default)]
pub struct Logins {
    pending: HashMap<String, Pending>,
    codes: HashMap<String, Grant>,
}

impl Logins {
    fn sweep(&mut self, now: i64) {
        self.pending
            .retain(|_, p| p.created + PENDING_SECONDS > now);
        self.codes.retain(|_, c| c.expires > now);
    }
}

impl Security {
    /// Takes the grant of `code` (once: a second exchange finds nothing).
    pub fn take_code(&self, code: &str) -> Option<Grant> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.sweep(now());
        logins.codes.remove(code)
    }
}

/// HTML-escapes text for the page.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page of the sign-in flow: never cached, never framed, no script.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:28em;margin:3em auto;padding:0 1em}}\
         label,input,button{{display:block;margin:.4em 0}}input{{width:100%}}\
         .error{{color:#a00}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    r
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Sign-in cannot continue",
        &format!("<p class=\"error\">{}</p>", esc(message)),
    )
}

/// A redirect back to the app with `params` added to its redirect URI's query.
fn back_to_app(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", crate::http::encode_query(&pairs));
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn refuse(p: &Pending, error: &str, description: &str) -> Response {
    back_to_app(
        &p.redirect_uri,
        &[
            ("error", error),
            ("error_description", description),
            ("state", &p.state),
        ],
    )
}

/// The sign-in form of pending request `id`.
fn sign_in_page(id: &str, p: &Pending, problem: Option<&str>) -> Response {
    let scopes: String = p
        .scope
        .split_whitespace()
        .map(|s| format!("<li><code>{}</code></li>", esc(s)))
        .collect();
    let problem = problem
        .map(|m| format!("<p class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        if problem.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        },
        "Sign in",
        &format!(
            "<p>The application <strong>{client}</strong> asks to act for you with:</p>\
             <ul>{scopes}</ul>{problem}\
             <form method=\"post\" action=\"authorize\">\
             <input type=\"hidden\" name=\"request\" value=\"{id}\">\
             <label for=\"username\">User name</label>\
             <input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label>\
             <input id=\"password\" name=\"password\" type=\"password\" \
              autocomplete=\"current-password\" required>\
             <button name=\"decision\" value=\"allow\">Sign in and allow</button>\
             <button name=\"decision\" value=\"deny\" formnovalidate>Deny</button>\
             </form>",
            client = esc(&p.client_id),
            id = esc(id),
        ),
    )
}

/// `GET /auth/authorize`.
pub async fn authorize_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(security) = state.security.clone() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "This server runs without authorization, so it has no sign-in.",
        );
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let client = match security.registry().client(get("client_id")).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The application is not registered here.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "reading the client registrations failed");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server failed; try again later.",
            );
        }
    };
    let redirect_uri = get("redirect_uri");
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri is not one the application registered.",
        );
    }
    let pending = Pending {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: get("scope").to_owned(),
        state: get("state").to_owned(),
        challenge: get("code_challenge").to_owned(),
        created: now(),
        attempts: 0,
    };
    // From here on, problems go back to the (registered) app.
    if get("response_type") != "code" {
        return refuse(
            &pending,
            "unsupported_response_type",
            "response_type must be code",
        );
    }
    if pending.state.is_empty() {
        return refuse(&pending, "invalid_request", "state is required");
    }
    if let Err(e) = auth::pkce::check_challenge(&pending.challenge, get("code_challenge_method")) {
        return refuse(&pending, "invalid_request", &e.to_string());
    }
    let base = crate::http::fhir_base(&state, &headers);
    if get("aud").trim_end_matches('/') != base {
        return refuse(
            &pending,
            "invalid_request",
            &format!("aud must be this server's FHIR base, {base}"),
        );
    }
    if let Err(e) = ScopeSet::parse(&pending.scope) {
        return refuse(&pending, "invalid_scope", &e.to_string());
    }
    if client.kind != auth::registry::ClientKind::Public {
        return refuse(
            &pending,
            "unauthorized_client",
            "backend services use client credentials, not the sign-in",
        );
    }
    let id = auth::secret::new_secret();
    {
        let mut logins = security.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.sweep(now());
        logins.pending.insert(id.clone(), pending.clone());
    }
    sign_in_page(&id, &pending, None)
}

/// `POST /auth/authorize`: the sign-in form's answer.
pub async fn authorize_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(security) = state.security.clone() else {
        return error_page(StatusCode::NOT_FOUND, "This server has no sign-in.");
    };
    let Ok(p) = form_params(&headers, &body) else {
        return error_page(StatusCode::BAD_REQUEST, "The form could not be read.");
    };
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or("");
    let id = get("request").to_owned();
    let pending = {
        let mut logins = security.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.sweep(now());
        logins.pending.remove(&id)
    };
    let Some(mut pending) = pending else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired or was already used; start again from the application.",
        );
    };
    if get("decision") == "deny" {
        return refuse(&pending, "access_denied", "the user denied the request");
    }
    let name = get("username").to_owned();
    let password = get("password").to_owned();
    let user = match security.registry().user(&name).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "reading the users failed");
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server failed; try again later.",
            );
        }
    };
    // The hash is checked even for an unknown or disabled user, so that the answer's timing
    // does not tell which names exist.
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => decoy_hash(),
    };
    let matches = tokio::task::spawn_blocking(move || auth::password::verify(&password, &hash))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
    let user = match user {
        Some(u) if matches && !u.disabled => u,
        _ => {
            pending.attempts += 1;
            let mut r = if pending.attempts >= ATTEMPTS {
                refuse(
                    &pending,
                    "access_denied",
                    "too many failed sign-in attempts",
                )
            } else {
                let page = sign_in_page(&id, &pending, Some("Wrong user name or password."));
                let mut logins = security.logins.lock().unwrap_or_else(|e| e.into_inner());
                logins.pending.insert(id.clone(), pending.clone());
                page
            };
            r.extensions_mut().insert(AuditSubject {
                client_id: Some(pending.client_id.clone()),
                login_user: Some(name),
                login_failed: true,
                ..AuditSubject::default()
            });
            return r;
        }
    };
    let granted = match grant(&state, &security, &pending, &user).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    let code = auth::secret::new_secret();
    {
        let mut logins = security.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.codes.insert(code.clone(), granted);
    }
    let mut r = back_to_app(
        &pending.redirect_uri,
        &[("code", &code), ("state", &pending.state)],
    );
    r.extensions_mut().insert(AuditSubject {
        client_id: Some(pending.client_id.clone()),
        login_user: Some(user.fhir_user.clone().unwrap_or(user.name.clone())),
        ..AuditSubject::default()
    });
    r
}

/// An argon2id hash of a random password, made once: what an unknown user's password is
/// checked against.
fn decoy_hash() -> String {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY
        .get_or_init(|| auth::password::hash(&auth::secret::new_secret()).unwrap_or_default())
        .clone()
}

/// `scopes` without those of patient context (and `launch/patient`, which asks for one).
fn without_patient_scopes(scopes: &ScopeSet) -> ScopeSet {
    let kept: Vec<String> = scopes
        .scopes()
        .iter()
        .filter(|s| match s {
            Scope::Clinical(c) => c.context != Context::Patient,
            Scope::Other(o) => o != "launch/patient",
        })
        .map(ToString::to_string)
        .collect();
    ScopeSet::parse(&kept.join(" ")).unwrap_or_default()
}

/// What the user's sign-in grants: the scopes asked for that the client and the user may
/// have; a patient user's person in context (their patient scopes reach it); no patient
/// scopes for a user who is no patient (this sign-in has no patient picker).
async fn grant(
    state: &AppState,
    security: &Security,
    p: &Pending,
    user: &auth::registry::User,
) -> Result<Grant, Response> {
    let client = match security.registry().client(&p.client_id).await {
        Ok(Some(c)) if !c.disabled => c,
        _ => {
            return Err(refuse(
                p,
                "unauthorized_client",
                "the application is no longer registered",
            ));
        }
    };
    let asked = ScopeSet::parse(&p.scope).unwrap_or_default();
    let by_client = ScopeSet::parse(&client.scope).unwrap_or_default();
    let by_user = ScopeSet::parse(&user.scope).unwrap_or_default();
    let mut granted = asked.within(&by_client).within(&by_user);
    let patient = match user
        .fhir_user
        .as_deref()
        .and_then(|r| r.strip_prefix("Patient/"))
    {
        Some(source) => {
            let person = state
                .mpi
                .identity_of(&store::RequestContext::system(), source)
                .await
                .ok()
                .flatten()
                .map(|(e, _)| e.to_string());
            Some(person.unwrap_or_else(|| source.to_owned()))
        }
        None => None,
    };
    if patient.is_none() {
        granted = without_patient_scopes(&granted);
    }
    if granted.clinical().next().is_none() {
        return Err(refuse(
            p,
            "invalid_scope",
            "none of the scopes asked for is allowed to this application and user",
        ));
    }
    Ok(Grant {
        client_id: p.client_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        challenge: p.challenge.clone(),
        scope: granted.to_string(),
        user: user.name.clone(),
        fhir_user: user.fhir_user.clone(),
        patient,
        organization: user.organization.clone(),
        expires: now() + CODE_SECONDS,
    })
}
