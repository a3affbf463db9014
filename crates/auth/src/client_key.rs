//! A node's own signing key, as a client of the hub: the ES384 (P-384) key whose public half
//! the hub registers for the node, which signs the node's SMART Backend Services client
//! assertions ([`ClientKey::assertion`]) and its directed messages ([`ClientKey::sign_detached`]).
//!
//! A directed message's signature is a JWS with a detached payload (RFC 7515 Appendix F):
//! `BASE64URL(header) + ".." + BASE64URL(signature)`, the signature made over
//! `BASE64URL(header) + "." + BASE64URL(payload)` as in an ordinary JWS. The receiver checks it
//! with [`verify_detached`] against the sender's published JWK Set, over the exact bytes it
//! received.
//!
//! The key serializes to JSON (private key included) for the node to keep outside the
//! database; [`ClientKey::jwks`] is its public half, what the node registers at the hub.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

use crate::assertion::MAX_LIFETIME;
use crate::registry::JwkSet;
use crate::token::LEEWAY;

/// How long a client assertion is valid, seconds: the hub's limit ([`MAX_LIFETIME`]) less the
/// clock skew allowed between nodes ([`LEEWAY`]), so that a hub whose clock runs behind the
/// node's does not find it too long-lived.
pub const ASSERTION_LIFETIME: i64 = MAX_LIFETIME - LEEWAY;

/// Why a key could not be made, read or used, or a detached signature was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientKeyError {
    /// The key could not be generated, or its saved form is not a P-384 PKCS#8 key.
    #[error("client key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// Not a JWS in compact serialization, or its header is unreadable.
    #[error("malformed JWS: {0}")]
    Malformed(String),
    /// The JWS carries its payload: a detached signature has an empty middle part.
    #[error("the JWS carries a payload; a detached signature is expected")]
    NotDetached,
    /// The header asks for something this check does not do (`crit`, `b64: false`).
    #[error("unsupported JWS header: {0}")]
    Unsupported(String),
    /// Signed with another algorithm than ES384 or RS384.
    #[error("JWS algorithm must be ES384 or RS384, not {0}")]
    Algorithm(String),
    /// No key of the set has the JWS's `kid` (or the JWS names none).
    #[error("JWS signed by an unknown key")]
    UnknownKey,
    /// The key named by `kid` is not one the algorithm verifies with.
    #[error("key {0} cannot verify {1}")]
    KeyType(String, String),
    /// The signature does not verify over the payload.
    #[error("JWS signature does not verify")]
    Signature,
}

/// The key as saved; no `Debug`, so that it is never logged.
#[derive(Clone, Serialize, Deserialize)]
struct StoredClientKey {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    /// Seconds since the epoch.
    created: i64,
}

/// A node's ES384 signing key.
pub struct ClientKey {
    stored: StoredClientKey,
    encoding: EncodingKey,
    x: String,
    y: String,
}

impl std::fmt::Debug for ClientKey {
    /// The key id and creation time only: never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.stored.kid)
            .field("created", &self.stored.created)
            .finish_non_exhaustive()
    }
}

/// The claims of a client assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
}

impl ClientKey {
    /// A new key, created at `now`; its `kid` is derived from the key.
    pub fn generate(now: i64) -> Result<ClientKey, ClientKeyError> {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| ClientKeyError::Key("could not generate a key".into()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        ClientKey::from_stored(StoredClientKey {
            kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]),
            pkcs8: STANDARD.encode(der.as_ref()),
            created: now,
        })
    }

    fn from_stored(stored: StoredClientKey) -> Result<ClientKey, ClientKeyError> {
        let der = STANDARD
            .decode(&stored.pkcs8)
            .map_err(|_| ClientKeyError::Key(format!("key {}: not base64", stored.kid)))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|_| {
                    ClientKeyError::Key(format!("key {}: not a P-384 PKCS#8 key", stored.kid))
                })?;
        // Uncompressed point: 0x04 ‖ x ‖ y, 48 bytes each.
        let public = pair.public_key().as_ref();
        let (x, y) = match (public.get(1..49), public.get(49..97)) {
            (Some(x), Some(y)) => (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y)),
            _ => {
                return Err(ClientKeyError::Key(format!(
                    "key {}: unexpected public key length",
                    stored.kid
                )));
            }
        };
        Ok(ClientKey {
            encoding: EncodingKey::from_ec_der(&der),
            x,
            y,
            stored,
        })
    }

    /// The key as JSON (`kid`, base64 PKCS#8, `created`), private key included: to be kept
    /// outside the database, readable by the node's account only.
    pub fn to_json(&self) -> String {
        json!(self.stored).to_string()
    }

    /// Reads [`ClientKey::to_json`].
    pub fn from_json(text: &str) -> Result<ClientKey, ClientKeyError> {
        let stored: StoredClientKey =
            serde_json::from_str(text).map_err(|e| ClientKeyError::Key(e.to_string()))?;
        ClientKey::from_stored(stored)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.stored.kid
    }

    /// When the key was created, seconds since the epoch.
    pub fn created(&self) -> i64 {
        self.stored.created
    }

    /// The public key as a JWK Set, what the node registers at the hub.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "EC", "crv": "P-384", "x": self.x, "y": self.y,
                         "kid": self.stored.kid, "alg": "ES384", "use": "sig"}]})
    }

    /// A SMART Backend Services client assertion (RFC 7523) for `client_id` at
    /// `token_endpoint`: `iss` = `sub` = the client, `aud` the endpoint, `iat` = `now`, valid
    /// [`ASSERTION_LIFETIME`] from `now`, with a random (v4 UUID) `jti`.
    pub fn assertion(
        &self,
        client_id: &str,
        token_endpoint: &str,
        now: i64,
    ) -> Result<String, ClientKeyError> {
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.stored.kid.clone());
        let claims = AssertionClaims {
            iss: client_id,
            sub: client_id,
            aud: token_endpoint,
            exp: now + ASSERTION_LIFETIME,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| ClientKeyError::Sign(e.to_string()))
    }

    /// A detached JWS (ES384) over `payload`: `header..signature`.
    pub fn sign_detached(&self, payload: &[u8]) -> Result<String, ClientKeyError> {
        let header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "ES384", "kid": self.stored.kid})
                .to_string()
                .as_bytes(),
        );
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, Algorithm::ES384)
                .map_err(|e| ClientKeyError::Sign(e.to_string()))?;
        Ok(format!("{header}..{signature}"))
    }
}

/// The header fields a detached JWS is checked by.
#[derive(Deserialize)]
struct DetachedHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
    b64: Option<bool>,
}

/// Checks the detached JWS `jws` over exactly `payload` against `keys` (the key named by its
/// `kid`; ES384 with an EC P-384 key, or RS384 with an RSA key). Returns the `kid`.
pub fn verify_detached(jws: &str, payload: &[u8], keys: &JwkSet) -> Result<String, ClientKeyError> {
    let mut parts = jws.split('.');
    let (Some(header_b64), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClientKeyError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    if !body.is_empty() {
        return Err(ClientKeyError::NotDetached);
    }
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| ClientKeyError::Malformed("header is not base64url".into()))?;
    let header: DetachedHeader = serde_json::from_slice(&header_bytes)
        .map_err(|e| ClientKeyError::Malformed(format!("header: {e}")))?;
    if header.crit.is_some() {
        return Err(ClientKeyError::Unsupported("crit".into()));
    }
    if header.b64 == Some(false) {
        return Err(ClientKeyError::Unsupported("b64: false".into()));
    }
    let alg = match header.alg.as_str() {
        "ES384" => Algorithm::ES384,
        "RS384" => Algorithm::RS384,
        other => return Err(ClientKeyError::Algorithm(other.to_owned())),
    };
    let kid = header.kid.ok_or(ClientKeyError::UnknownKey)?;
    let jwk = keys.find(&kid).ok_or(ClientKeyError::UnknownKey)?;
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::RSA(_), Algorithm::RS384) => true,
        _ => false,
    };
    if !fits {
        return Err(ClientKeyError::KeyType(kid, header.alg));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| ClientKeyError::KeyType(kid.clone(), e.to_string()))?;
    let input = format!("{header_b64}.{}", URL_SAFE_NO_PAD.encode(payload));
    match jsonwebtoken::crypto::verify(signature, input.as_bytes(), &key, alg) {
        Ok(true) => Ok(kid),
        Ok(false) => Err(ClientKeyError::Signature),
        Err(e) => match e.kind() {
            jsonwebtoken::errors::ErrorKind::Base64(_) => Err(ClientKeyError::Malformed(
                "signature is not base64url".into(),
            )),
            _ => Err(ClientKeyError::Signature),
        },
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;

    use super::*;
    use crate::assertion::{self, AssertionError, MemoryLedger};
    use crate::registry::parse_jwks;

    const NOW: i64 = 1_800_000_000;
    const ENDPOINT: &str = "https://hub.example/auth/token";
    const RSA_PEM: &str = include_str!("../tests/fixtures/client-rs384.pem");
    const RSA_JWKS: &str = include_str!("../tests/fixtures/client-rs384.jwks.json");

    fn set_of(key: &ClientKey) -> JwkSet {
        parse_jwks(&key.jwks().to_string()).expect("the registry accepts the JWK Set")
    }

    #[test]
    fn the_public_set_is_registrable_and_verifies_the_keys_assertions() {
        let key = ClientKey::generate(NOW).expect("key");
        let jwks = set_of(&key);
        assert_eq!(jwks.keys.len(), 1);
        let a = key.assertion("node-a", ENDPOINT, NOW).expect("assertion");
        let header = jsonwebtoken::decode_header(&a).expect("header");
        assert_eq!(header.alg, Algorithm::ES384);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let mut ledger = MemoryLedger::default();
        assert_eq!(
            assertion::verify(&a, "node-a", &jwks, ENDPOINT, NOW + 1, &mut ledger),
            Ok(())
        );
        // The jti makes each assertion new; the same one is a replay.
        let b = key.assertion("node-a", ENDPOINT, NOW).expect("assertion");
        assert_ne!(a, b);
        assert_eq!(
            assertion::verify(&b, "node-a", &jwks, ENDPOINT, NOW + 1, &mut ledger),
            Ok(())
        );
        assert_eq!(
            assertion::verify(&a, "node-a", &jwks, ENDPOINT, NOW + 2, &mut ledger),
            Err(AssertionError::Replay)
        );
        // Valid four minutes, so that a hub whose clock is a minute behind still accepts it.
        let c = key.assertion("node-a", ENDPOINT, NOW).expect("assertion");
        assert_eq!(
            assertion::verify(&c, "node-a", &jwks, ENDPOINT, NOW - LEEWAY, &mut ledger),
            Ok(())
        );
        let d = key.assertion("node-a", ENDPOINT, NOW).expect("assertion");
        assert_eq!(
            assertion::verify(&d, "node-a", &jwks, ENDPOINT, NOW + 240, &mut ledger),
            Err(AssertionError::Lifetime)
        );
        // Another key's set does not verify it.
        let other = ClientKey::generate(NOW).expect("key");
        assert_eq!(
            assertion::verify(
                &key.assertion("node-a", ENDPOINT, NOW).expect("assertion"),
                "node-a",
                &set_of(&other),
                ENDPOINT,
                NOW,
                &mut MemoryLedger::default()
            ),
            Err(AssertionError::Signature)
        );
    }

    #[test]
    fn the_saved_key_reads_back_and_debug_hides_it() {
        let key = ClientKey::generate(NOW).expect("key");
        let saved = key.to_json();
        let again = ClientKey::from_json(&saved).expect("reload");
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.created(), NOW);
        assert_eq!(again.jwks(), key.jwks());
        // A signature by the reloaded key verifies with the original's set.
        let jws = again.sign_detached(b"{}").expect("sign");
        assert_eq!(
            verify_detached(&jws, b"{}", &set_of(&key)),
            Ok(key.kid().to_owned())
        );
        let pkcs8 = serde_json::from_str::<Value>(&saved).expect("json")["pkcs8"]
            .as_str()
            .expect("pkcs8")
            .to_owned();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.kid()) && !debug.contains(&pkcs8[..20]));
        assert!(matches!(
            ClientKey::from_json(r#"{"kid":"k","pkcs8":"bm90IGEga2V5","created":1}"#),
            Err(ClientKeyError::Key(_))
        ));
        assert!(matches!(
            ClientKey::from_json("[]"),
            Err(ClientKeyError::Key(_))
        ));
    }

    #[test]
    fn a_detached_signature_covers_the_exact_bytes() {
        let key = ClientKey::generate(NOW).expect("key");
        let keys = set_of(&key);
        let payload = br#"{"resourceType":"Bundle","type":"document"}"#;
        let jws = key.sign_detached(payload).expect("sign");
        let parts: Vec<&str> = jws.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(parts[1].is_empty());
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header, json!({"alg": "ES384", "kid": key.kid()}));
        assert_eq!(
            verify_detached(&jws, payload, &keys),
            Ok(key.kid().to_owned())
        );
        // One changed byte.
        let mut changed = payload.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            verify_detached(&jws, &changed, &keys),
            Err(ClientKeyError::Signature)
        );
        // Another key under the same kid.
        let other = ClientKey::generate(NOW).expect("key");
        let mut impostor = other.jwks();
        impostor["keys"][0]["kid"] = json!(key.kid());
        let impostor = parse_jwks(&impostor.to_string()).expect("jwks");
        assert_eq!(
            verify_detached(&jws, payload, &impostor),
            Err(ClientKeyError::Signature)
        );
        // A set without the kid.
        assert_eq!(
            verify_detached(&jws, payload, &set_of(&other)),
            Err(ClientKeyError::UnknownKey)
        );
        // The payload attached.
        let attached = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(payload),
            parts[2]
        );
        assert_eq!(
            verify_detached(&attached, payload, &keys),
            Err(ClientKeyError::NotDetached)
        );
    }

    #[test]
    fn rs384_detached_signatures_verify_with_rsa_keys_only() {
        let keys = parse_jwks(RSA_JWKS).expect("jwks");
        let kid = keys.keys[0].common.key_id.clone().expect("kid");
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS384", "kid": kid}).to_string());
        let payload = b"message";
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
        let rsa = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("pem");
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &rsa, Algorithm::RS384).expect("sign");
        let jws = format!("{header}..{signature}");
        assert_eq!(verify_detached(&jws, payload, &keys), Ok(kid.clone()));
        // An ES384 header naming the RSA key.
        let es_header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES384", "kid": kid}).to_string());
        assert!(matches!(
            verify_detached(&format!("{es_header}..{signature}"), payload, &keys),
            Err(ClientKeyError::KeyType(..))
        ));
    }

    #[test]
    fn headers_outside_the_profile_are_refused() {
        let key = ClientKey::generate(NOW).expect("key");
        let keys = set_of(&key);
        let jws_with = |header: Value| {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let input = format!("{h}.{}", URL_SAFE_NO_PAD.encode(b"p"));
            let s = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding, Algorithm::ES384)
                .expect("sign");
            format!("{h}..{s}")
        };
        assert_eq!(
            verify_detached(&jws_with(json!({"alg": "ES384"})), b"p", &keys),
            Err(ClientKeyError::UnknownKey)
        );
        assert_eq!(
            verify_detached(
                &jws_with(json!({"alg": "ES256", "kid": key.kid()})),
                b"p",
                &keys
            ),
            Err(ClientKeyError::Algorithm("ES256".into()))
        );
        assert_eq!(
            verify_detached(
                &jws_with(json!({"alg": "ES384", "kid": key.kid(), "b64": false, "crit": ["b64"]})),
                b"p",
                &keys
            ),
            Err(ClientKeyError::Unsupported("crit".into()))
        );
        let none = format!(
            "{}..",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": key.kid()}).to_string())
        );
        assert_eq!(
            verify_detached(&none, b"p", &keys),
            Err(ClientKeyError::Algorithm("none".into()))
        );
        for bad in ["", "a", "a..b..c", "!!..sig", "e30..sig"] {
            assert!(
                matches!(
                    verify_detached(bad, b"p", &keys),
                    Err(ClientKeyError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_signatures_never_panic(
            s in "[A-Za-z0-9_.=-]{0,300}",
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let keys = parse_jwks(RSA_JWKS).expect("jwks");
            let _ = verify_detached(&s, &payload, &keys);
        }

        #[test]
        fn a_kept_header_with_an_arbitrary_signature_never_panics(sig in "[A-Za-z0-9_-]{0,200}") {
            let keys = parse_jwks(RSA_JWKS).expect("jwks");
            let kid = keys.keys[0].common.key_id.clone().expect("kid");
            for alg in ["RS384", "ES384"] {
                let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid}).to_string());
                let jws = format!("{h}..{sig}");
                proptest::prop_assert!(verify_detached(&jws, b"p", &keys).is_err());
            }
        }
    }
}
