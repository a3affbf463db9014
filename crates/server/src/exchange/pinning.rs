//! Pinned client certificates (mutual TLS without a certificate authority of Renkei's): a node
//! that registered its client certificate's fingerprint (`RegistrationRequest::
//! tls_certificate_sha256`) makes every call as that node over a connection presenting that
//! certificate. Without a registered fingerprint nothing is asked for.
//!
//! Where it is checked:
//! - at the hub, the token endpoint for the node's client id (`security::oauth`), and every
//!   request carrying a token the hub issued to the node itself (publishing, `$locate`, the
//!   directory): [`enforce`], called by the gate;
//! - at a node, every request with a token the hub issued to node X (network queries,
//!   `/exchange/inbox`): X's pin as the hub publishes it (`GET [hub]/exchange/nodes/{id}`,
//!   cached by [`super::node::NodeLink::peer_pin`]).

use auth::token::AccessClaims;

use super::node::LinkError;
use crate::AppState;
use crate::error::ApiError;
use crate::tls::ClientCertificate;

/// Why a call as a pinned node is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinRefusal {
    #[error(
        "node {node} has a pinned certificate (SHA-256 {pinned}); its calls must present it, \
         and this connection presented no client certificate"
    )]
    Missing { node: String, pinned: String },
    #[error(
        "node {node} has a pinned certificate (SHA-256 {pinned}); this connection presented \
         another one (SHA-256 {presented})"
    )]
    Other {
        node: String,
        pinned: String,
        presented: String,
    },
}

/// Whether a connection that presented `presented` may call as `node`, whose pinned
/// certificate is `pinned` (`None`: nothing is pinned, anything goes).
pub fn check(
    node: &str,
    pinned: Option<&str>,
    presented: Option<&ClientCertificate>,
) -> Result<(), PinRefusal> {
    let Some(pinned) = pinned else {
        return Ok(());
    };
    match presented {
        Some(c) if c.fingerprint.as_str() == pinned => Ok(()),
        Some(c) => Err(PinRefusal::Other {
            node: node.to_owned(),
            pinned: pinned.to_owned(),
            presented: c.fingerprint.as_str().to_owned(),
        }),
        None => Err(PinRefusal::Missing {
            node: node.to_owned(),
            pinned: pinned.to_owned(),
        }),
    }
}

/// The gate's check of a request whose token says `claims`, over a connection that presented
/// `presented`: a token the hub issued to a node binds that node's pinned certificate (403
/// naming the node otherwise; 503 when a node cannot learn the pin from its hub).
pub(crate) async fn enforce(
    state: &AppState,
    claims: &AccessClaims,
    presented: Option<&ClientCertificate>,
) -> Result<(), ApiError> {
    let Some(exchange) = &state.exchange else {
        return Ok(());
    };
    let node = claims.client_id.as_str();
    match exchange.link() {
        None => {
            // The hub: a node's own token names the node as its subject (a user's token names
            // the user).
            if claims.sub != claims.client_id {
                return Ok(());
            }
            let registration = super::hub::registration(exchange.state.as_ref(), node)
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let pinned = registration
                .as_ref()
                .and_then(|r| r.request.tls_certificate_sha256.as_deref());
            check(node, pinned, presented).map_err(|r| ApiError::forbidden(r.to_string()))
        }
        Some(link) => {
            if claims.iss != link.hub_issuer() {
                return Ok(());
            }
            let pinned = link.peer_pin(node).await.map_err(|e| match e {
                LinkError::Refused(_, 404, _) => ApiError::forbidden(format!(
                    "node {node} is not an approved node of the network, so its pinned \
                     certificate cannot be checked"
                )),
                other => ApiError::unavailable(format!(
                    "node {node}'s pinned certificate could not be learnt from the hub: {other}"
                )),
            })?;
            check(node, pinned.as_deref(), presented)
                .map_err(|r| ApiError::forbidden(r.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::CertificateFingerprint;

    fn presented(der: &[u8]) -> ClientCertificate {
        ClientCertificate {
            fingerprint: CertificateFingerprint::of(der),
        }
    }

    #[test]
    fn nothing_pinned_lets_anything_through() {
        assert_eq!(check("a", None, None), Ok(()));
        assert_eq!(check("a", None, Some(&presented(b"any"))), Ok(()));
    }

    #[test]
    fn a_pin_needs_that_certificate() {
        let mine = presented(b"node a's certificate");
        let pin = mine.fingerprint.as_str().to_owned();
        assert_eq!(check("a", Some(&pin), Some(&mine)), Ok(()));
        let missing = check("a", Some(&pin), None).unwrap_err();
        assert!(matches!(missing, PinRefusal::Missing { .. }));
        let why = missing.to_string();
        assert!(
            why.contains("node a") && why.contains("pinned certificate"),
            "{why}"
        );
        let other = presented(b"node b's certificate");
        let refused = check("a", Some(&pin), Some(&other)).unwrap_err();
        let why = refused.to_string();
        assert!(
            why.contains("node a") && why.contains("pinned certificate"),
            "{why}"
        );
        assert!(why.contains(other.fingerprint.as_str()), "{why}");
    }
}
