//! The exchange over HTTP: the hub's endpoints (node registration, publishing, the record
//! locator, the patient summary) and a node's link to its hub (registration, tokens, the
//! publisher that follows the change feed, federated queries). The rules themselves are the
//! `exchange` crate's; this module carries them between processes.
//!
//! - [`hub`]: `POST /exchange/register`, `POST /exchange/publish`, `Patient/$locate`, and the
//!   operator's decisions on registrations (`approve`, `revoke`, used by `renkei nodes`).
//! - [`node`]: [`node::NodeLink`], a node's client of the hub and of its peers, and the
//!   background task that registers the node and publishes its changes.
//! - `network_query`: `Patient/[id]/$everything?_network=true` and compartment searches with
//!   `_network=true` at a node: locate, fan out, merge.
//! - [`directed`]: `$send` of a signed document to a node found in the directory, the
//!   sender's queue and its delivery task, the receiver's inbox and receipts.
//! - [`images`]: `ImagingStudy/$image-access`, a short-lived token for another node's
//!   DICOMweb endpoint, checked there by introspection at the hub.
//! - `summary`: `Patient/[id]/$summary` (and `Patient/$summary` for a patient's own token).
//! - [`pinning`]: a node's pinned client certificate (mutual TLS), checked on its calls.

pub mod directed;
pub mod hub;
pub mod images;
pub(crate) mod network_query;
pub mod node;
pub mod pinning;
pub(crate) mod summary;

use std::sync::Arc;

use store::ExchangeState;

/// What part a server plays in the network.
#[derive(Debug, Clone)]
pub enum Role {
    /// The hub: node registrations, directory, record locator, summaries.
    Hub,
    /// A node linked to a hub.
    Node(Arc<node::NodeLink>),
}

/// The exchange's state of a server.
#[derive(Debug)]
pub struct Exchange {
    pub role: Role,
    pub state: Arc<dyn ExchangeState>,
}

impl Exchange {
    /// The node's link to its hub, when this server is a node.
    pub fn link(&self) -> Option<&Arc<node::NodeLink>> {
        match &self.role {
            Role::Node(link) => Some(link),
            Role::Hub => None,
        }
    }

    pub fn is_hub(&self) -> bool {
        matches!(self.role, Role::Hub)
    }
}

/// The link to its hub of a server that is a node.
pub(crate) fn node_link_of(state: &crate::AppState) -> Option<Arc<node::NodeLink>> {
    state.exchange.as_ref().and_then(|e| e.link()).cloned()
}

/// Who a request asks for when it reaches across the network, and why: the caller's
/// `fhirUser` (or subject), made absolute against this server's base so that other nodes can
/// tell whose it is, and its purpose of use (`TREAT` when the token names none).
pub(crate) fn requester_and_purpose(fhir: &crate::http::Fhir) -> (Option<String>, String) {
    let claims = fhir.admitted.as_ref().map(|a| &a.caller.claims);
    let requester = claims.map(|c| {
        let who = c.fhir_user.clone().unwrap_or_else(|| c.sub.clone());
        if who.contains("://") {
            who
        } else {
            format!("{}/{who}", fhir.base)
        }
    });
    let purpose = claims
        .and_then(|c| c.purpose_of_use.clone())
        .unwrap_or_else(|| "TREAT".to_owned());
    (requester, purpose)
}
