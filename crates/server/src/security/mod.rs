//! Who may do what over HTTP: the built-in authorization server's state ([`Security`]) and the
//! wiring of the `auth` crate's rules into requests.
//!
//! - `classify`: which SMART permission a FHIR request needs, from its method and path.
//! - `gate`: the middleware that checks the bearer token of every request outside the public
//!   paths, authorizes it (`auth::policy`) and turns the grant into the store's access policy
//!   once per request (a patient token reaches every source record of its person, read from
//!   the patient index per request, so an unlink changes it at once).
//! - `oauth`: the token, JWKS, introspection and revocation endpoints and the SMART
//!   configuration document.
//! - [`login`]: the sign-in page of the authorization code flow (PKCE), for apps.
//! - [`consent`]: the patient-privacy Consents, cached, evaluated per request into the data
//!   the store withholds.
//! - [`audit`]: one audit record per request, group-committed to the hash-chained log before
//!   the response leaves.
//!
//! Without a [`Security`] (no client or user registered in the store) the server is open:
//! every request is the node's own, as before authorization existed, and `renkei serve` then
//! listens on loopback only unless told otherwise.

pub mod audit;
mod classify;
pub mod consent;
mod gate;
pub mod login;
pub mod oauth;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use auth::assertion::MemoryLedger;
use auth::registry::JwkSet;
use auth::scope::{Interaction, ScopeSet};
use auth::token::{AccessClaims, TokenError, TokenKeys};
use serde::{Deserialize, Serialize};
use store::{Registry, StoreError};

pub use classify::{Needs, classify, classify_segments};
pub use gate::{Admitted, ScopeFilter, access_of, authorize, check_scope_filter, gate, permit};

/// Lifetimes of what the authorization server issues.
#[derive(Debug, Clone)]
pub struct SecuritySettings {
    /// Seconds a backend service's access token lives (SMART Backend Services: at most 300).
    pub service_token_seconds: i64,
    /// Seconds a break-glass token lives, whatever was asked.
    pub break_glass_seconds: i64,
    /// Seconds an app's access token lives (authorization code and refresh grants).
    pub app_token_seconds: i64,
    /// Seconds a refresh token lives (each use replaces it with a new one).
    pub refresh_seconds: i64,
    /// The network's consent default and sensitive labels (`consent`).
    pub consent: auth::consent::ConsentSettings,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            service_token_seconds: 300,
            break_glass_seconds: 900,
            app_token_seconds: 3600,
            refresh_seconds: 30 * 86_400,
            consent: auth::consent::ConsentSettings::default(),
        }
    }
}

/// A tracked token as kept in the registry's token table until it expires: a revoked access
/// token here, a refresh token in `oauth` (both have these fields).
#[derive(Debug, Serialize, Deserialize)]
struct RevokedToken {
    kind: String,
    client_id: String,
    exp: i64,
}

const REVOKED: &str = "revoked-access-token";

/// The authorization server's state: its signing keys, the registrations, the assertion
/// `jti`s seen and the revoked tokens.
#[derive(Debug)]
pub struct Security {
    keys: RwLock<TokenKeys>,
    registry: Arc<dyn Registry>,
    ledger: Mutex<MemoryLedger>,
    /// Revoked access token ids and their expiry; loaded from the registry at start, written
    /// through on revocation.
    revoked: Mutex<HashMap<String, i64>>,
    pub settings: SecuritySettings,
    /// Sign-in requests and authorization codes in flight.
    logins: Mutex<login::Logins>,
    /// Key sets fetched from backend services' `jwks_uri`, with when they were fetched.
    remote_keys: Mutex<HashMap<String, (i64, JwkSet)>>,
    /// The patient-privacy consents, cached.
    pub consents: consent::Consents,
    /// At a node: the hub whose tokens this node accepts too, and its keys as last fetched.
    trusted_hub: Option<TrustedHub>,
    /// At a hub: the node registrations, for tokens issued for a node (`resource`).
    pub(crate) hub_nodes: Option<Arc<dyn store::ExchangeState>>,
    /// What fetching key sets (the hub's, a client's `jwks_uri`) trusts and presents.
    client_tls: crate::tls::ClientTls,
}

/// A hub whose access tokens a node accepts (the network's authorization server).
#[derive(Debug)]
struct TrustedHub {
    /// The hub's FHIR base URL.
    base: String,
    /// Its issuer (the base without `/fhir`).
    issuer: String,
    /// Its JWK Set and when it was fetched.
    keys: tokio::sync::Mutex<Option<(i64, serde_json::Value)>>,
}

/// Seconds a fetched key set is used before it is fetched again.
const REMOTE_KEYS_SECONDS: i64 = 300;
/// The largest key set accepted from a `jwks_uri`.
const MAX_JWKS_BYTES: usize = 256 * 1024;

impl Security {
    /// The authorization server over `registry`, signing with `keys`; reads the revocations
    /// still in force.
    pub async fn open(
        keys: TokenKeys,
        registry: Arc<dyn Registry>,
        settings: SecuritySettings,
    ) -> Result<Security, StoreError> {
        let now = now();
        let mut revoked = HashMap::new();
        for (id, body) in registry.tokens().await? {
            let Ok(r) = serde_json::from_str::<RevokedToken>(&body) else {
                continue;
            };
            // Expired entries of every kind (revocations, refresh tokens) are dropped.
            if r.exp <= now {
                registry.remove_token(&id).await?;
            } else if r.kind == REVOKED {
                revoked.insert(id, r.exp);
            }
        }
        Ok(Security {
            keys: RwLock::new(keys),
            registry,
            ledger: Mutex::new(MemoryLedger::default()),
            revoked: Mutex::new(revoked),
            settings,
            logins: Mutex::new(login::Logins::default()),
            remote_keys: Mutex::new(HashMap::new()),
            consents: consent::Consents::default(),
            trusted_hub: None,
            hub_nodes: None,
            client_tls: crate::tls::ClientTls::default(),
        })
    }

    /// The same, fetching key sets with `tls` (the operator's trusted certificates, and the
    /// node's client certificate).
    pub fn with_client_tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.client_tls = tls;
        self
    }

    /// The same, at a node of the hub at `hub_base` (its FHIR base): the hub's tokens for
    /// this node are accepted too, checked against the keys the hub publishes.
    pub fn trusting_hub(mut self, hub_base: &str) -> Self {
        let base = hub_base.trim_end_matches('/').to_owned();
        self.trusted_hub = Some(TrustedHub {
            issuer: oauth::issuer_of(&base).to_owned(),
            base,
            keys: tokio::sync::Mutex::new(None),
        });
        self
    }

    /// The same, at a hub whose node registrations are in `nodes`: an approved node may ask
    /// for tokens for another node's FHIR base.
    pub fn with_hub_nodes(mut self, nodes: Arc<dyn store::ExchangeState>) -> Self {
        self.hub_nodes = Some(nodes);
        self
    }

    /// Checks a request's access token for `base`: one this server issued, or, at a node, one
    /// its hub issued for this node (its organisation then named by the hub's absolute URL,
    /// as the node's consents name other members of the network).
    pub async fn verify_request_token(
        &self,
        token: &str,
        base: &str,
    ) -> Result<AccessClaims, TokenError> {
        let own = oauth::issuer_of(base);
        let Some(hub) = &self.trusted_hub else {
            return self.verify(token, own, base);
        };
        if oauth::unverified_claim(token, "iss").as_deref() != Some(hub.issuer.as_str()) {
            return self.verify(token, own, base);
        }
        let now = now();
        let mut cached = hub.keys.lock().await;
        for refetch in [false, true] {
            let fresh = cached
                .as_ref()
                .is_some_and(|(at, _)| now - at < REMOTE_KEYS_SECONDS);
            if refetch || !fresh {
                let url = format!("{}/auth/jwks", hub.issuer);
                match self.fetch_json(&url).await {
                    Ok(keys) => *cached = Some((now, keys)),
                    Err(e) => {
                        tracing::warn!(error = %e, "the hub's token keys could not be fetched");
                        if cached.is_none() {
                            return Err(TokenError::UnknownKey);
                        }
                    }
                }
            }
            let Some((_, keys)) = cached.as_ref() else {
                return Err(TokenError::UnknownKey);
            };
            match auth::token::verify_with_jwks(token, keys, &hub.issuer, base, now) {
                Err(TokenError::UnknownKey) if !refetch => continue,
                Ok(mut claims) => {
                    if let Some(org) = &claims.organization
                        && !org.contains("://")
                    {
                        claims.organization = Some(format!("{}/{org}", hub.base));
                    }
                    return Ok(claims);
                }
                Err(e) => return Err(e),
            }
        }
        Err(TokenError::UnknownKey)
    }

    async fn fetch_json(&self, url: &str) -> Result<serde_json::Value, String> {
        let text = self.fetch_key_set(url).await?;
        serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))
    }

    /// The text of the key set at `uri`: fetched within 10 s, without following redirects,
    /// 256 KiB at most, UTF-8.
    async fn fetch_key_set(&self, uri: &str) -> Result<String, String> {
        let client = self
            .client_tls
            .builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("no HTTP client: {e}"))?;
        let response = client
            .get(uri)
            .send()
            .await
            .map_err(|e| format!("fetching the keys at {uri}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("fetching the keys at {uri}: {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(format!("the key set at {uri} is too large"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the keys at {uri}: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("the key set at {uri} is too large"));
        }
        String::from_utf8(body.to_vec()).map_err(|_| format!("the key set at {uri} is not UTF-8"))
    }

    /// The key set a backend service publishes at `uri`: from the cache while it is fresh
    /// (unless `refetch`, when an assertion did not verify with the cached keys: the client
    /// may have rotated them), else fetched (10 s at most, 256 KiB at most) and checked like
    /// an inline set (RS384 or ES384 signing keys only).
    pub async fn remote_keys(&self, uri: &str, refetch: bool) -> Result<JwkSet, String> {
        let now = now();
        if !refetch {
            let cache = self.remote_keys.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, keys)) = cache.get(uri)
                && now - at < REMOTE_KEYS_SECONDS
            {
                return Ok(keys.clone());
            }
        }
        let text = self.fetch_key_set(uri).await?;
        let keys = auth::registry::parse_jwks(&text).map_err(|e| format!("{uri}: {e}"))?;
        let mut cache = self.remote_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(uri.to_owned(), (now, keys.clone()));
        Ok(keys)
    }

    /// The registrations.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// The public keys of access tokens.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).jwks()
    }

    /// Signs an access token.
    pub fn issue(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issue(claims)
    }

    /// Checks an access token issued by `issuer` for `audience` (signature, key, lifetime)
    /// and that it was not revoked.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<AccessClaims, TokenError> {
        let claims = self.keys.read().unwrap_or_else(|e| e.into_inner()).verify(
            token,
            issuer,
            audience,
            now(),
        )?;
        if self.is_revoked(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        Ok(claims)
    }

    fn is_revoked(&self, jti: &str) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.contains_key(jti)
    }

    /// Revokes the access token `claims` describes, durably, until it would have expired.
    pub async fn revoke(&self, claims: &AccessClaims) -> Result<(), StoreError> {
        let body = serde_json::to_string(&RevokedToken {
            kind: REVOKED.into(),
            client_id: claims.client_id.clone(),
            exp: claims.exp,
        })
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.registry.put_token(&claims.jti, &body).await?;
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(claims.jti.clone(), claims.exp);
        Ok(())
    }
}

/// The caller of a request, as its verified token says.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Arc<AccessClaims>,
    pub scopes: Arc<ScopeSet>,
}

impl Caller {
    /// Whether the token's scopes allow `interaction` on `resource_type` at all.
    pub fn allows(&self, interaction: Interaction, resource_type: &str) -> bool {
        self.scopes.grant(interaction, resource_type).is_allowed()
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
