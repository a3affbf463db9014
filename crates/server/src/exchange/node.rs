//! A node's link to its hub and its peers.
//!
//! [`NodeLink`] holds the node's identity (id, name, FHIR base, its client key), the hub's
//! address, and the access tokens it got from the hub, cached per audience, requester and
//! purpose until shortly before they expire. The hub is the network's authorization server:
//! a node asks it for a token for the hub itself or for another node's FHIR base (`resource`,
//! RFC 8707), carrying the requester and purpose of use, and the other node checks that token
//! against the hub's published keys.
//!
//! [`run`] is the node's background task: register with the hub (again after a restart: the
//! hub answers with the registration's status), wait for an operator's approval, then follow
//! the change feed with the durable consumer `exchange-publish` and send each batch to the
//! hub; a batch counts as published only once the hub answered 2xx (at least once). The node
//! serves its own users throughout: a pending registration or an unreachable hub only delays
//! publishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::client_key::ClientKey;
use exchange::locator::Located;
use exchange::privacy::NetworkKey;
use exchange::publish::{PublishBatch, PublishedChange, Sharing};
use exchange::registration::{PublishedNode, RegistrationRequest};
use serde_json::Value;
use store::{RequestContext, Store};

use crate::security::oauth::issuer_of;

/// The client assertion type of SMART Backend Services.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The change-feed consumer that publishes to the hub.
pub const PUBLISH_CONSUMER: &str = "exchange-publish";

/// What went wrong talking to the hub or a peer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0} did not answer: {1}")]
    Unreachable(String, String),
    #[error("{0} answered {1}: {2}")]
    Refused(String, u16, String),
    #[error("{0} answered something unreadable: {1}")]
    Unreadable(String, String),
    #[error("the node's key cannot sign: {0}")]
    Key(String),
}

/// Where this node's registration stands, as far as it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStatus {
    /// Not registered yet (or the hub was not reachable).
    Unregistered,
    /// Registered; an operator has not approved it.
    Pending,
    /// Approved: it publishes and queries.
    Approved,
}

/// The node's settings in the network.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub node: String,
    pub name: String,
    /// This node's FHIR base URL, as peers reach it.
    pub base_url: String,
    /// The hub's FHIR base URL.
    pub hub: String,
    pub imaging_endpoint: Option<String>,
    pub sharing: Sharing,
    /// How long a peer may take to answer a federated query.
    pub query_timeout: Duration,
}

/// A cached token's audience, requester and purpose of use.
type TokenKey = (String, String, String);

/// A node's client of its hub and peers.
pub struct NodeLink {
    pub settings: NodeSettings,
    key: ClientKey,
    network_key: Option<NetworkKey>,
    http: reqwest::Client,
    tokens: Mutex<HashMap<TokenKey, (String, i64)>>,
    status: Mutex<LinkStatus>,
    /// Other nodes' public keys as the hub publishes them, with when they were fetched.
    peer_keys: tokio::sync::Mutex<HashMap<String, (i64, auth::registry::JwkSet)>>,
    /// What the hub publishes of other nodes (their pinned certificates), with when it was
    /// fetched.
    peers: tokio::sync::Mutex<HashMap<String, (i64, PublishedNode)>>,
    /// The fingerprint of the client certificate this node presents, if any.
    client_certificate: Option<String>,
}

/// Seconds a peer's fetched keys (and pinned certificate) are used before they are fetched
/// again.
const PEER_KEYS_SECONDS: i64 = 300;

impl std::fmt::Debug for NodeLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLink")
            .field("settings", &self.settings)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl NodeLink {
    /// A link with `key` (the node's assertion key), in privacy mode the network key, and
    /// `tls`: the client certificate it presents to the hub and its peers (registered with
    /// the hub, which pins it) and the certificates it trusts beyond the system's.
    pub fn new(
        settings: NodeSettings,
        key: ClientKey,
        network_key: Option<NetworkKey>,
        tls: &crate::tls::ClientTls,
    ) -> Result<NodeLink, LinkError> {
        let http = tls
            .builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LinkError::Unreachable(settings.hub.clone(), e.to_string()))?;
        Ok(NodeLink {
            settings,
            key,
            network_key,
            http,
            tokens: Mutex::new(HashMap::new()),
            status: Mutex::new(LinkStatus::Unregistered),
            peer_keys: tokio::sync::Mutex::new(HashMap::new()),
            peers: tokio::sync::Mutex::new(HashMap::new()),
            client_certificate: tls.fingerprint().map(|f| f.as_str().to_owned()),
        })
    }

    pub fn status(&self) -> LinkStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_status(&self, s: LinkStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// The network key of privacy mode.
    pub fn network_key(&self) -> Option<&NetworkKey> {
        self.network_key.as_ref()
    }

    /// The hub's issuer (its FHIR base without `/fhir`).
    pub fn hub_issuer(&self) -> &str {
        issuer_of(self.settings.hub.trim_end_matches('/'))
    }

    fn hub_url(&self, path: &str) -> String {
        format!("{}{path}", self.hub_issuer())
    }

    /// Asks the hub to register this node; its answer's status.
    pub async fn register(&self) -> Result<LinkStatus, LinkError> {
        let request = RegistrationRequest {
            node: self.settings.node.clone(),
            name: self.settings.name.clone(),
            endpoint: self.settings.base_url.clone(),
            imaging_endpoint: self.settings.imaging_endpoint.clone(),
            jwks: self.key.jwks(),
            sharing: self.settings.sharing,
            tls_certificate_sha256: self.client_certificate.clone(),
        };
        let url = self.hub_url("/exchange/register");
        let response = self
            .http
            .post(&url)
            .json(&request)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(url.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        let body: Value = read_json(&url, response).await?;
        if !(200..300).contains(&status) {
            return Err(LinkError::Refused(url, status, body.to_string()));
        }
        let s = match body["status"].as_str() {
            Some("approved") => LinkStatus::Approved,
            Some("pending") => LinkStatus::Pending,
            _ => LinkStatus::Unregistered,
        };
        if s != LinkStatus::Approved || self.status() != LinkStatus::Approved {
            self.set_status(s);
        }
        Ok(s)
    }

    /// An access token from the hub for `audience` (the hub's or a peer's FHIR base), on
    /// behalf of `requester` for `purpose`; cached until a minute before it expires.
    pub async fn token(
        &self,
        audience: &str,
        requester: Option<&str>,
        purpose: &str,
    ) -> Result<String, LinkError> {
        self.scoped_token(
            audience,
            requester,
            purpose,
            crate::exchange::hub::NODE_SCOPE,
        )
        .await
        .map(|(token, _)| token)
    }

    /// [`NodeLink::token`] with `scope`; the token and when it expires (seconds since the
    /// epoch).
    pub async fn scoped_token(
        &self,
        audience: &str,
        requester: Option<&str>,
        purpose: &str,
        scope: &str,
    ) -> Result<(String, i64), LinkError> {
        let audience = audience.trim_end_matches('/').to_owned();
        let cache_key = (
            audience.clone(),
            format!("{}|{scope}", requester.unwrap_or_default()),
            purpose.to_owned(),
        );
        let now = chrono::Utc::now().timestamp();
        if let Some((token, exp)) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
            && *exp > now + 60
        {
            return Ok((token.clone(), *exp));
        }
        let token_url = self.hub_url("/auth/token");
        let assertion = self
            .key
            .assertion(&self.settings.node, &token_url, now)
            .map_err(|e| LinkError::Key(e.to_string()))?;
        let mut form: Vec<(String, String)> = vec![
            ("grant_type".into(), "client_credentials".into()),
            ("client_assertion_type".into(), JWT_BEARER.into()),
            ("client_assertion".into(), assertion),
            ("scope".into(), scope.into()),
            ("purpose_of_use".into(), purpose.to_owned()),
        ];
        if audience != self.settings.hub.trim_end_matches('/') {
            form.push(("resource".into(), audience.clone()));
        }
        if let Some(r) = requester {
            form.push(("requester".into(), r.to_owned()));
        }
        let response = self
            .http
            .post(&token_url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(crate::http::encode_query(&form))
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(token_url.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        let body: Value = read_json(&token_url, response).await?;
        if status != 200 {
            if body["error"] == "invalid_client" {
                // Not approved (yet), or revoked.
                self.set_status(LinkStatus::Pending);
            }
            return Err(LinkError::Refused(token_url, status, body.to_string()));
        }
        self.set_status(LinkStatus::Approved);
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| LinkError::Unreadable(token_url.clone(), "no access_token".into()))?
            .to_owned();
        let exp = now + body["expires_in"].as_i64().unwrap_or(60);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cache_key, (token.clone(), exp));
        Ok((token, exp))
    }

    /// GETs `url` with `token`, as JSON, within `timeout`.
    pub async fn get_json(
        &self,
        url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Value, LinkError> {
        fetch_ok(
            url,
            self.http
                .get(url)
                .bearer_auth(token)
                .header("Accept", "application/fhir+json")
                .timeout(timeout),
        )
        .await
    }

    /// Asks the hub's record locator with `params` (on behalf of `requester`).
    pub async fn locate(
        &self,
        params: &[(&str, String)],
        requester: Option<&str>,
        purpose: &str,
    ) -> Result<Located, LinkError> {
        let hub = self.settings.hub.trim_end_matches('/');
        let token = self.token(hub, requester, purpose).await?;
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let url = format!(
            "{hub}/Patient/$locate?{}",
            crate::http::encode_query(&owned)
        );
        let body = self
            .get_json(&url, &token, self.settings.query_timeout)
            .await?;
        Located::from_parameters(&body).map_err(|e| LinkError::Unreadable(url, e.to_string()))
    }

    /// A detached JWS over `payload` with the node's key.
    pub fn sign(&self, payload: &[u8]) -> Result<String, LinkError> {
        self.key
            .sign_detached(payload)
            .map_err(|e| LinkError::Key(e.to_string()))
    }

    /// Node `node`'s public keys, as the hub publishes them (cached for five minutes).
    pub async fn peer_keys(&self, node: &str) -> Result<auth::registry::JwkSet, LinkError> {
        let now = chrono::Utc::now().timestamp();
        let mut cache = self.peer_keys.lock().await;
        if let Some((at, keys)) = cache.get(node)
            && now - at < PEER_KEYS_SECONDS
        {
            return Ok(keys.clone());
        }
        let url = self.hub_url(&format!("/exchange/nodes/{node}/jwks"));
        let body = fetch_ok(&url, self.http.get(&url)).await?;
        let keys = auth::registry::parse_jwks(&body.to_string())
            .map_err(|e| LinkError::Unreadable(url, e.to_string()))?;
        cache.insert(node.to_owned(), (now, keys.clone()));
        Ok(keys)
    }

    /// The fingerprint of node `node`'s pinned client certificate, as the hub publishes it
    /// (`None`: nothing pinned); cached for five minutes, and the last answer kept while the
    /// hub cannot be reached. A node the hub does not publish (not approved) is
    /// `LinkError::Refused` with 404.
    pub async fn peer_pin(&self, node: &str) -> Result<Option<String>, LinkError> {
        let now = chrono::Utc::now().timestamp();
        let mut cache = self.peers.lock().await;
        if let Some((at, peer)) = cache.get(node)
            && now - at < PEER_KEYS_SECONDS
        {
            return Ok(peer.tls_certificate_sha256.clone());
        }
        if !exchange::namespace::valid_node_id(node) {
            return Err(LinkError::Refused(
                self.hub_url("/exchange/nodes"),
                404,
                format!("'{node}' is not a node id"),
            ));
        }
        let url = self.hub_url(&format!("/exchange/nodes/{node}"));
        let fetched = async {
            let body = fetch_ok(&url, self.http.get(&url)).await?;
            serde_json::from_value::<PublishedNode>(body)
                .map_err(|e| LinkError::Unreadable(url.clone(), e.to_string()))
        }
        .await;
        match fetched {
            Ok(peer) => {
                let pin = peer.tls_certificate_sha256.clone();
                cache.insert(node.to_owned(), (now, peer));
                Ok(pin)
            }
            Err(LinkError::Refused(url, status, why)) => {
                cache.remove(node);
                Err(LinkError::Refused(url, status, why))
            }
            Err(e) => match cache.get(node) {
                Some((_, peer)) => {
                    tracing::warn!(error = %e, node, "the hub could not be asked for a node's pinned certificate; using the last answer");
                    Ok(peer.tls_certificate_sha256.clone())
                }
                None => Err(e),
            },
        }
    }

    /// POSTs `body` (FHIR JSON) signed with `signature` to `url` with `token`; the JSON answer
    /// of a 200.
    pub async fn post_signed(
        &self,
        url: &str,
        token: &str,
        body: &[u8],
        signature: &str,
    ) -> Result<Value, LinkError> {
        fetch_ok(
            url,
            self.http
                .post(url)
                .bearer_auth(token)
                .header("Content-Type", "application/fhir+json")
                .header(crate::exchange::directed::SIGNATURE_HEADER, signature)
                .body(body.to_vec())
                .timeout(self.settings.query_timeout),
        )
        .await
    }

    /// Sends a batch of changes to the hub.
    pub async fn publish(&self, batch: &PublishBatch) -> Result<(), LinkError> {
        let hub = self.settings.hub.trim_end_matches('/');
        let token = self.token(hub, None, "HOPERAT").await?;
        let url = self.hub_url("/exchange/publish");
        let response = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(batch)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(url.clone(), e.to_string()))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = read_json(&url, response).await.unwrap_or(Value::Null);
            return Err(LinkError::Refused(url, status, diagnostics(&body)));
        }
        Ok(())
    }
}

/// Sends `request` to `url`; its JSON answer, when the status is 200.
async fn fetch_ok(url: &str, request: reqwest::RequestBuilder) -> Result<Value, LinkError> {
    let response = request
        .send()
        .await
        .map_err(|e| LinkError::Unreachable(url.to_owned(), e.to_string()))?;
    let status = response.status().as_u16();
    let body = read_json(url, response).await?;
    if status != 200 {
        return Err(LinkError::Refused(
            url.to_owned(),
            status,
            diagnostics(&body),
        ));
    }
    Ok(body)
}

async fn read_json(url: &str, response: reqwest::Response) -> Result<Value, LinkError> {
    let bytes = response
        .bytes()
        .await
        .map_err(|e| LinkError::Unreachable(url.to_owned(), e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| LinkError::Unreadable(url.to_owned(), e.to_string()))
}

/// An OperationOutcome's diagnostics, or the body itself.
fn diagnostics(body: &Value) -> String {
    body.pointer("/issue/0/diagnostics")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string())
}

/// The node's background task (module doc): until `stop` resolves.
pub async fn run(
    link: Arc<NodeLink>,
    store: Arc<dyn Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let consumer = store::feed::Consumer::new(store.clone(), PUBLISH_CONSUMER).with_batch_size(200);
    let first = Duration::from_millis(250);
    let mut delay = first;
    loop {
        let wait = match step(&link, store.as_ref(), &consumer).await {
            Ok(more) => {
                delay = first;
                if more {
                    Duration::ZERO
                } else {
                    Duration::from_millis(300)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, node = %link.settings.node, "exchange: publishing to the hub failed; retrying");
                delay = (delay * 2).min(Duration::from_secs(10));
                delay
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: register if needed, then publish one batch. `Ok(true)` when there may be more
/// to publish at once.
async fn step(
    link: &NodeLink,
    store: &dyn Store,
    consumer: &store::feed::Consumer,
) -> Result<bool, LinkError> {
    if link.status() == LinkStatus::Unregistered {
        let s = link.register().await?;
        tracing::info!(node = %link.settings.node, hub = %link.settings.hub, status = ?s, "exchange: registered with the hub");
    }
    if link.status() != LinkStatus::Approved {
        // Approval shows as the hub issuing a token.
        let hub = link.settings.hub.trim_end_matches('/').to_owned();
        match link.token(&hub, None, "HOPERAT").await {
            Ok(_) => tracing::info!(node = %link.settings.node, "exchange: approved by the hub"),
            Err(LinkError::Refused(..)) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let sharing = link.settings.sharing;
    let network_key = link.network_key.clone();
    let handled = consumer
        .poll_once(|changes| async move {
            let batch = batch_of(store, changes, sharing, network_key.as_ref()).await?;
            if batch.changes.is_empty() {
                return Ok(());
            }
            link.publish(&batch).await
        })
        .await;
    match handled {
        Ok(n) => Ok(n > 0),
        Err(store::feed::ConsumeError::Handler(e)) => Err(e),
        Err(store::feed::ConsumeError::Store(e)) => {
            Err(LinkError::Unreachable("the store".into(), e.to_string()))
        }
    }
}

/// The publish batch of some changes: bodies read for the kinds the hub keeps (their current
/// version: the feed may be behind, and the hub wants the latest), pseudonyms in privacy mode.
async fn batch_of(
    store: &dyn Store,
    changes: Vec<store::Change>,
    sharing: Sharing,
    network_key: Option<&NetworkKey>,
) -> Result<PublishBatch, LinkError> {
    let ctx = RequestContext::system();
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let mut resource = None;
        let mut deleted = matches!(c.method, store::Method::Delete);
        let mut last_updated = String::new();
        if sharing.sends_body(&c.resource_type) || !c.compartments.is_empty() {
            let stored = store
                .load(&ctx, &c.resource_type, &c.id)
                .await
                .map_err(|e| LinkError::Unreachable("the store".into(), e.to_string()))?;
            match stored.as_ref().and_then(|s| s.body.as_deref()) {
                Some(text) => {
                    let body: Value = serde_json::from_str(text)
                        .map_err(|e| LinkError::Unreadable("the store".into(), e.to_string()))?;
                    last_updated = body
                        .pointer("/meta/lastUpdated")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    if sharing.sends_body(&c.resource_type) {
                        resource = Some(match (&*c.resource_type, network_key) {
                            ("Patient", Some(key)) => exchange::privacy::pseudonymise(&body, key),
                            _ => body,
                        });
                    }
                    deleted = false;
                }
                None => deleted = true,
            }
        }
        if last_updated.is_empty() {
            last_updated = store::time::format_instant(store::time::now_micros());
        }
        out.push(PublishedChange {
            resource_type: c.resource_type,
            id: c.id,
            version: c.version,
            deleted,
            compartments: c.compartments,
            last_updated,
            resource,
        });
    }
    Ok(PublishBatch {
        sharing,
        changes: out,
    })
}
