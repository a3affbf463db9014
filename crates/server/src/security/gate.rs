//! The gate every request passes when the server requires authorization: the bearer token is
//! verified (signature, issuer, audience, lifetime, revocation), the request is classified
//! (`classify`) and authorized against the token's scopes (`auth::policy::authorize`), and the
//! grant becomes what the handlers read from the request ([`Admitted`]): the caller, the
//! store's access policy and the search restriction of a v2 scope. In a network, a token
//! issued to a node whose client certificate is pinned is honoured only over a connection
//! presenting that certificate (`exchange::pinning`).
//!
//! A user or backend service grant reaches every compartment less what the patients'
//! consents withhold from the token's organisation, user and purpose of use (`consent`;
//! break-glass releases it). A patient-context grant reaches the token's person: the golden
//! record and every source Patient it links, read from the patient index on each request
//! ([`mpi::Mpi::person_records`]), so a link or unlink changes what the token reaches at once. The store applies that policy
//! inside its SQL; nothing is filtered here afterwards.

use std::collections::BTreeSet;

use auth::policy::{Authorized, Refusal, RequestKind};
use auth::scope::{Context, ScopeSet};
use auth::token::TokenError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use store::{AccessPolicy, RequestContext, Restriction};

use super::audit::AuditSubject;
use super::{Caller, Needs, Security, classify};
use crate::AppState;
use crate::error::{ApiError, Unauthenticated};

/// The search restriction of the v2 scope a request was granted under
/// (`patient/Observation.rs?category=laboratory`): the request sees only resources of
/// `resource_type` that also match `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeFilter {
    pub resource_type: String,
    pub params: Vec<(String, String)>,
}

/// What the gate let through, put on the request for the handlers.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub caller: Caller,
    /// The store's access policy for the request.
    pub access: AccessPolicy,
    pub scope_filter: Option<ScopeFilter>,
    /// The grant was a break-glass one.
    pub break_glass: bool,
}

impl Admitted {
    /// The request context the store is called with.
    pub fn apply(&self, ctx: &mut RequestContext) {
        let c = &self.caller.claims;
        ctx.actor = if c.sub == c.client_id {
            store::Actor::Client(c.client_id.clone())
        } else {
            store::Actor::User(c.fhir_user.clone().unwrap_or_else(|| c.sub.clone()))
        };
        ctx.on_behalf_of = c.patient.as_ref().map(|p| format!("Patient/{p}"));
        ctx.purpose_of_use = c.purpose_of_use.clone();
        ctx.organization = c.organization.clone();
        ctx.access = self.access.clone();
    }
}

/// The middleware: requests outside the public paths need a valid token, and one granting
/// what they do.
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(security) = state.security.clone() else {
        return next.run(req).await;
    };
    let needs = classify(req.method(), req.uri().path());
    if needs == Needs::Public {
        return next.run(req).await;
    }
    let base = crate::http::fhir_base(&state, req.headers());
    let caller = authenticate(&security, req.headers(), &base).await;
    let caller_for_audit = caller.as_ref().ok().cloned();
    let presented = req
        .extensions()
        .get::<crate::tls::ClientCertificate>()
        .cloned();
    let admitted = async {
        let caller = caller?;
        // A node's token is honoured over a connection presenting its pinned certificate.
        crate::exchange::pinning::enforce(&state, &caller.claims, presented.as_ref()).await?;
        match needs {
            Needs::Request(kind, ty) => permit(&state, &caller, &base, kind, ty.as_deref()).await,
            // Authorized part by part by the handler; on its own, it reaches nothing.
            Needs::Bundle | Needs::Token | Needs::Public => Ok(Admitted {
                caller,
                access: AccessPolicy::Restricted(Restriction::default()),
                scope_filter: None,
                break_glass: false,
            }),
        }
    }
    .await;
    let mut subject = AuditSubject {
        caller: caller_for_audit,
        ..AuditSubject::default()
    };
    let mut response = match admitted {
        Ok(a) => {
            subject.break_glass = a.break_glass;
            req.extensions_mut().insert(a);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(subject);
    response
}

/// The token's caller, or the 401 that says why not.
async fn authenticate(
    security: &Security,
    headers: &HeaderMap,
    base: &str,
) -> Result<Caller, ApiError> {
    let realm = base;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(realm, Unauthenticated::NoToken));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized(
                realm,
                Unauthenticated::InvalidToken(
                    "the Authorization header must be 'Bearer <access token>'".into(),
                ),
            )
        })?;
    let claims = security
        .verify_request_token(token, base)
        .await
        .map_err(|e| {
            let why = match e {
                TokenError::Expired => Unauthenticated::ExpiredToken,
                other => Unauthenticated::InvalidToken(other.to_string()),
            };
            ApiError::unauthorized(realm, why)
        })?;
    let scopes = ScopeSet::parse(&claims.scope)
        .map_err(|e| ApiError::unauthorized(realm, Unauthenticated::InvalidToken(e.to_string())))?;
    Ok(Caller {
        claims: claims.into(),
        scopes: scopes.into(),
    })
}

/// Authorizes `kind` on `resource_type` for `caller`, and computes what the request then
/// reaches. Used by the gate; a batch authorizes its entries with [`authorize`] and
/// [`access_of`] separately, so that what they reach is computed once per distinct grant.
pub async fn permit(
    state: &AppState,
    caller: &Caller,
    base: &str,
    kind: RequestKind,
    resource_type: Option<&str>,
) -> Result<Admitted, ApiError> {
    let (authorized, scope_filter) = authorize(state, caller, base, kind, resource_type)?;
    let access = access_of(state, caller, &authorized).await?;
    Ok(Admitted {
        caller: caller.clone(),
        access,
        scope_filter,
        break_glass: authorized.break_glass,
    })
}

/// Whether `caller`'s scopes allow `kind` on `resource_type`, and the v2 scope restriction
/// the request is then confined to; the refusal's 403 (or 405 for a write to the audit log)
/// otherwise.
pub fn authorize(
    state: &AppState,
    caller: &Caller,
    base: &str,
    kind: RequestKind,
    resource_type: Option<&str>,
) -> Result<(Authorized, Option<ScopeFilter>), ApiError> {
    if state.auditor.is_some()
        && resource_type == Some("AuditEvent")
        && matches!(
            kind,
            RequestKind::Create | RequestKind::Update | RequestKind::Delete
        )
    {
        return Err(ApiError::method_not_allowed(
            &[axum::http::Method::GET],
            "AuditEvents are written by the server only, into its append-only audit log",
        ));
    }
    let authorized = auth::policy::authorize(&caller.claims, &caller.scopes, kind, resource_type)
        .map_err(|r| refusal(caller, base, r))?;
    let scope_filter = scope_filter(&authorized, kind, resource_type)?;
    Ok((authorized, scope_filter))
}

/// What a request `authorized` for `caller` reaches: it depends on the grant's patient (and
/// break-glass) and the caller's claims only, not on the interaction or type.
pub async fn access_of(
    state: &AppState,
    caller: &Caller,
    authorized: &Authorized,
) -> Result<AccessPolicy, ApiError> {
    Ok(match (&authorized.patient, &state.security) {
        // A user or a backend service sees every compartment, less what consent withholds.
        (None, Some(security)) => {
            let consent = security
                .consents
                .decide(
                    state.store.as_ref(),
                    &security.settings.consent,
                    &caller.claims,
                )
                .await?;
            if consent.withheld.is_empty() {
                AccessPolicy::Unrestricted
            } else {
                AccessPolicy::Restricted(Restriction::consent(consent.withheld))
            }
        }
        (None, None) => AccessPolicy::Unrestricted,
        // The patient themselves: their own records, which their consents (about others'
        // access) do not restrict.
        (Some(person), _) => {
            let patients: BTreeSet<String> = state
                .mpi
                .person_records(&RequestContext::system(), person)
                .await?;
            AccessPolicy::Restricted(Restriction {
                patients: Some(patients),
                break_glass: authorized.break_glass,
                ..Restriction::default()
            })
        }
    })
}

/// The v2 scope restriction the request is confined to, if any. One restriction is applied
/// to reads and type searches of its type; other interactions, and several alternative
/// restrictions on one type, are refused rather than widened.
fn scope_filter(
    a: &Authorized,
    kind: RequestKind,
    resource_type: Option<&str>,
) -> Result<Option<ScopeFilter>, ApiError> {
    match (a.restrictions.as_slice(), resource_type) {
        ([], _) => Ok(None),
        ([one], Some(ty)) if matches!(kind, RequestKind::Read | RequestKind::Search) => {
            Ok(Some(ScopeFilter {
                resource_type: ty.to_owned(),
                params: one.clone(),
            }))
        }
        ([_], _) => Err(ApiError::forbidden(format!(
            "the scope granting this on {} is restricted by search parameters, which allow \
             reading and searching that type only",
            resource_type.unwrap_or("*")
        ))),
        (_, _) => Err(ApiError::forbidden(format!(
            "several scopes restricted by different search parameters cover {}; a token \
             with one of them, or an unrestricted one, is needed",
            resource_type.unwrap_or("*")
        ))),
    }
}

/// A refusal as its 403.
fn refusal(caller: &Caller, realm: &str, r: Refusal) -> ApiError {
    match &r {
        Refusal::Scope {
            interaction,
            resource_type,
        } => {
            // Name the scope that would do, in the context the token has.
            let context = caller
                .scopes
                .contexts()
                .into_iter()
                .max()
                .unwrap_or(Context::System);
            let needed = format!("{}/{resource_type}.{interaction}", context.as_str());
            ApiError::insufficient_scope(realm, &needed, r.to_string())
        }
        _ => ApiError::forbidden(r.to_string()),
    }
}

/// For a read, vread or instance history under a v2 scope restriction: whether `ty/id`
/// matches it (as a search `_id=id&<restriction>` would); a resource outside it answers
/// 404, exactly as one the caller may not see at all.
pub async fn check_scope_filter(
    state: &AppState,
    fhir: &crate::http::Fhir,
    ty: &str,
    id: &str,
) -> Result<(), ApiError> {
    let Some(f) = fhir.scope_filter() else {
        return Ok(());
    };
    if f.resource_type != ty {
        return Err(ApiError::forbidden(format!(
            "the token's scope on {} is restricted by search parameters; {ty} is outside it",
            f.resource_type
        )));
    }
    let mut params = vec![("_id".to_owned(), id.to_owned())];
    params.extend(f.params.iter().cloned());
    let q = store::SearchQuery::parse(Some(ty), &params, state.store.extractor(), false)?;
    if state.store.matching_ids(&fhir.ctx, &q, 1).await?.is_empty() {
        return Err(ApiError::not_found(format!("{ty}/{id} is not known")));
    }
    Ok(())
}
