//! Access tokens: signed JWTs (ES256) carrying the grant (scopes, client, the patient and
//! user in context, purpose of use, break-glass), and the key ring that signs them.
//!
//! The ring ([`TokenKeys`]) holds one or more P-256 keys, each with a `kid`; the newest
//! signs, all verify, so rotating ([`TokenKeys::rotate`]) never invalidates a live token, and
//! a key is retired ([`TokenKeys::retire_older_than`]) once every token it signed has expired.
//! The ring serializes to JSON (private keys included) for the node to keep outside the
//! database; [`TokenKeys::jwks`] is its public half for `jwks_uri`.
//!
//! Verification ([`TokenKeys::verify`]) takes the time as an argument and checks the
//! signature, the `kid`, the algorithm (ES256 only: never `none`, never a symmetric one),
//! `iss`, `aud`, `exp` and `iat`. Another node, holding only the issuer's public JWK Set,
//! makes the same checks with [`verify_with_jwks`].

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

/// Seconds a token's `iat` may lie in the future (clock skew between nodes).
pub const LEEWAY: i64 = 60;

/// Why a token was not accepted, or could not be made.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or its header or claims are not what a Renkei token holds.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with another algorithm than ES256.
    #[error("token algorithm must be ES256")]
    Algorithm,
    /// Its `kid` names no key of the ring.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    Signature,
    /// Another issuer or audience.
    #[error("token was issued by {0} for {1}, not for this server")]
    NotOurs(String, String),
    /// Expired, or issued in the future.
    #[error("token expired or not yet valid")]
    Expired,
    /// Revoked (RFC 7009) before it expired.
    #[error("the token was revoked")]
    Revoked,
    /// The key ring is empty or holds a malformed key.
    #[error("token keys: {0}")]
    Keys(String),
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// This server's issuer URL.
    pub iss: String,
    /// The user (`Practitioner/x`, `Patient/y`, a user name) or, for backend services, the
    /// client id.
    pub sub: String,
    /// The FHIR base URL the token is for.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique id (for revocation and the audit log).
    pub jti: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The patient in context: the person's golden Patient id (the token reaches every
    /// source record linked to it, resolved per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// The user as a FHIR reference (`fhirUser`).
    #[serde(default, rename = "fhirUser", skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// The requester's organisation (`Organization/x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// Purpose of use (v3 `PurposeOfUse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_of_use: Option<String>,
    /// Emergency access: the reason given. Present only on break-glass tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

/// A key as saved; no `Debug`, so that it is never logged.
#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// PKCS#8 DER, base64.
    pkcs8: String,
    /// Seconds since the epoch.
    created: i64,
}

struct Key {
    stored: StoredKey,
    encoding: EncodingKey,
    decoding: DecodingKey,
    x: String,
    y: String,
}

impl std::fmt::Debug for Key {
    /// The key id only: never the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.stored.kid)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn from_stored(stored: StoredKey) -> Result<Key, TokenError> {
        let der = STANDARD
            .decode(&stored.pkcs8)
            .map_err(|_| TokenError::Keys(format!("key {}: not base64", stored.kid)))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|_| {
                    TokenError::Keys(format!("key {}: not a P-256 PKCS#8 key", stored.kid))
                })?;
        // Uncompressed point: 0x04 ‖ x ‖ y.
        let public = pair.public_key().as_ref();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&public[1..33]),
            URL_SAFE_NO_PAD.encode(&public[33..65]),
        );
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| TokenError::Keys(format!("key {}: {e}", stored.kid)))?;
        Ok(Key {
            encoding: EncodingKey::from_ec_der(&der),
            decoding,
            x,
            y,
            stored,
        })
    }
}

/// The token-signing key ring: newest first.
#[derive(Debug)]
pub struct TokenKeys {
    keys: Vec<Key>,
}

impl TokenKeys {
    /// A ring with one new key, created at `now`.
    pub fn generate(now: i64) -> Result<TokenKeys, TokenError> {
        let mut ring = TokenKeys { keys: Vec::new() };
        ring.rotate(now)?;
        Ok(ring)
    }

    /// Adds a new signing key; the old ones keep verifying.
    pub fn rotate(&mut self, now: i64) -> Result<(), TokenError> {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| TokenError::Keys("could not generate a key".into()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]);
        let key = Key::from_stored(StoredKey {
            kid,
            pkcs8: STANDARD.encode(der.as_ref()),
            created: now,
        })?;
        self.keys.insert(0, key);
        Ok(())
    }

    /// Drops the keys, other than the signing one, created before `cutoff` (when every token
    /// they signed has expired). Returns how many were dropped.
    pub fn retire_older_than(&mut self, cutoff: i64) -> usize {
        let before = self.keys.len();
        let mut first = true;
        self.keys
            .retain(|k| std::mem::take(&mut first) || k.stored.created >= cutoff);
        before - self.keys.len()
    }

    /// The signing key's id.
    pub fn current_kid(&self) -> Option<&str> {
        self.keys.first().map(|k| k.stored.kid.as_str())
    }

    /// The ring as JSON, private keys included: to be kept outside the database, readable by
    /// the node's account only.
    pub fn to_json(&self) -> String {
        let stored: Vec<&StoredKey> = self.keys.iter().map(|k| &k.stored).collect();
        json!({"keys": stored}).to_string()
    }

    /// Reads [`TokenKeys::to_json`].
    pub fn from_json(text: &str) -> Result<TokenKeys, TokenError> {
        #[derive(Deserialize)]
        struct File {
            keys: Vec<StoredKey>,
        }
        let file: File = serde_json::from_str(text).map_err(|e| TokenError::Keys(e.to_string()))?;
        if file.keys.is_empty() {
            return Err(TokenError::Keys("no key".into()));
        }
        let keys = file
            .keys
            .into_iter()
            .map(Key::from_stored)
            .collect::<Result<_, _>>()?;
        Ok(TokenKeys { keys })
    }

    /// The public keys as a JWK Set.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                json!({"kty": "EC", "crv": "P-256", "kid": k.stored.kid, "use": "sig",
                       "alg": "ES256", "x": k.x, "y": k.y})
            })
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` with the newest key.
    pub fn issue(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let key = self
            .keys
            .first()
            .ok_or_else(|| TokenError::Keys("no key".into()))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.stored.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| TokenError::Keys(e.to_string()))
    }

    /// Checks `token` as issued by `issuer` for `audience`, at `now`.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessClaims, TokenError> {
        let kid = es256_kid(token)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.stored.kid == kid)
            .ok_or(TokenError::UnknownKey)?;
        decode_checked(token, &key.decoding, issuer, audience, now)
    }
}

/// Checks `token`, issued by another Renkei node (the hub) as `issuer` for `audience`, against
/// that node's published JWK Set (what its [`TokenKeys::jwks`] gives), at `now`: the same
/// checks and errors as [`TokenKeys::verify`]. A key of the set named by the token's `kid`
/// that is not an EC P-256 key (or says another `alg` than ES256) is [`TokenError::Keys`].
pub fn verify_with_jwks(
    token: &str,
    jwks: &Value,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Result<AccessClaims, TokenError> {
    let kid = es256_kid(token)?;
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| TokenError::Keys("the JWK Set has no keys array".into()))?;
    let jwk = keys
        .iter()
        .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid.as_str()))
        .ok_or(TokenError::UnknownKey)?;
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let not_p256 = || TokenError::Keys(format!("key {kid}: not an ES256 EC P-256 key"));
    if text("kty") != Some("EC")
        || text("crv") != Some("P-256")
        || text("alg").is_some_and(|alg| alg != "ES256")
    {
        return Err(not_p256());
    }
    let (Some(x), Some(y)) = (text("x"), text("y")) else {
        return Err(not_p256());
    };
    let coordinate = |c: &str| URL_SAFE_NO_PAD.decode(c).is_ok_and(|b| b.len() == 32);
    if !coordinate(x) || !coordinate(y) {
        return Err(not_p256());
    }
    let decoding = DecodingKey::from_ec_components(x, y)
        .map_err(|e| TokenError::Keys(format!("key {kid}: {e}")))?;
    decode_checked(token, &decoding, issuer, audience, now)
}

/// The `kid` of an ES256 token's header.
fn es256_kid(token: &str) -> Result<String, TokenError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if header.alg != Algorithm::ES256 {
        return Err(TokenError::Algorithm);
    }
    header.kid.ok_or(TokenError::UnknownKey)
}

/// Checks the signature of `token` with `key`, then its issuer, audience and times.
fn decode_checked(
    token: &str,
    key: &DecodingKey,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Result<AccessClaims, TokenError> {
    let mut v = Validation::new(Algorithm::ES256);
    // Times are checked below against the caller's clock; audience and issuer too, so that
    // each failure has its own error.
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
            _ => TokenError::Malformed(e.to_string()),
        })?;
    let c = data.claims;
    if c.iss != issuer || c.aud != audience {
        return Err(TokenError::NotOurs(c.iss, c.aud));
    }
    if c.exp <= now || c.iat > now + LEEWAY {
        return Err(TokenError::Expired);
    }
    Ok(c)
}

/// The payload of a JWT, decoded without checking anything: only to choose which keys will
/// check it (the issuer of a token, the client of an assertion). The error says what is wrong.
pub fn unverified_payload(jwt: &str) -> Result<Vec<u8>, &'static str> {
    let payload = jwt.split('.').nth(1).ok_or("not a JWT")?;
    URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "payload is not base64url")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://node.example".into(),
            sub: "Patient/g1".into(),
            aud: "https://node.example/fhir".into(),
            exp: now + 300,
            iat: now,
            jti: "t1".into(),
            scope: "patient/*.rs".into(),
            client_id: "app".into(),
            patient: Some("g1".into()),
            fhir_user: Some("Patient/g1".into()),
            organization: None,
            purpose_of_use: Some("TREAT".into()),
            break_glass: None,
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let ring = TokenKeys::generate(NOW).expect("keys");
        let t = ring.issue(&claims(NOW)).expect("issue");
        let c = ring
            .verify(
                &t,
                "https://node.example",
                "https://node.example/fhir",
                NOW + 10,
            )
            .expect("valid");
        assert_eq!(c, claims(NOW));
        assert_eq!(
            ring.verify(
                &t,
                "https://node.example",
                "https://node.example/fhir",
                NOW + 300
            ),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            ring.verify(&t, "https://node.example", "https://other/fhir", NOW),
            Err(TokenError::NotOurs(..))
        ));
    }

    #[test]
    fn rotation_keeps_live_tokens_and_retirement_ends_them() {
        let mut ring = TokenKeys::generate(NOW).expect("keys");
        let old = ring.issue(&claims(NOW)).expect("issue");
        ring.rotate(NOW + 100).expect("rotate");
        let new = ring.issue(&claims(NOW + 100)).expect("issue");
        assert_ne!(
            jsonwebtoken::decode_header(&old).unwrap().kid,
            jsonwebtoken::decode_header(&new).unwrap().kid
        );
        let (iss, aud) = ("https://node.example", "https://node.example/fhir");
        assert!(ring.verify(&old, iss, aud, NOW + 101).is_ok());
        assert_eq!(ring.jwks()["keys"].as_array().map(Vec::len), Some(2));
        // Saved and read back, both still verify.
        let again = TokenKeys::from_json(&ring.to_json()).expect("reload");
        assert!(again.verify(&old, iss, aud, NOW + 101).is_ok());
        assert!(again.verify(&new, iss, aud, NOW + 101).is_ok());
        assert_eq!(ring.retire_older_than(NOW + 50), 1);
        assert_eq!(
            ring.verify(&old, iss, aud, NOW + 101),
            Err(TokenError::UnknownKey)
        );
        assert!(ring.verify(&new, iss, aud, NOW + 101).is_ok());
        // The signing key is never retired.
        assert_eq!(ring.retire_older_than(NOW + 1_000), 0);
    }

    #[test]
    fn tampered_foreign_and_unsigned_tokens_are_refused() {
        let ring = TokenKeys::generate(NOW).expect("keys");
        let other = TokenKeys::generate(NOW).expect("keys");
        let (iss, aud) = ("https://node.example", "https://node.example/fhir");
        let t = ring.issue(&claims(NOW)).expect("issue");
        assert_eq!(other.verify(&t, iss, aud, NOW), Err(TokenError::UnknownKey));
        // Claims swapped for broader ones under the same signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut broader = claims(NOW);
        broader.scope = "system/*.cruds".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&broader).unwrap());
        parts[1] = &body;
        assert_eq!(
            ring.verify(&parts.join("."), iss, aud, NOW),
            Err(TokenError::Signature)
        );
        // alg none.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{header}.{body}.");
        assert!(ring.verify(&unsigned, iss, aud, NOW).is_err());
        assert!(matches!(
            ring.verify("not a token", iss, aud, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn a_node_verifies_the_hubs_tokens_with_its_published_keys() {
        let hub = TokenKeys::generate(NOW).expect("keys");
        // What the node fetched from the hub's jwks_uri.
        let published: Value = serde_json::from_str(&hub.jwks().to_string()).expect("jwks");
        let (iss, aud) = ("https://node.example", "https://node.example/fhir");
        let t = hub.issue(&claims(NOW)).expect("issue");
        assert_eq!(
            verify_with_jwks(&t, &published, iss, aud, NOW + 10),
            Ok(claims(NOW))
        );
        assert!(matches!(
            verify_with_jwks(&t, &published, iss, "https://other/fhir", NOW),
            Err(TokenError::NotOurs(..))
        ));
        assert!(matches!(
            verify_with_jwks(&t, &published, "https://other", aud, NOW),
            Err(TokenError::NotOurs(..))
        ));
        assert_eq!(
            verify_with_jwks(&t, &published, iss, aud, NOW + 300),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify_with_jwks(&t, &published, iss, aud, NOW - LEEWAY - 1),
            Err(TokenError::Expired)
        );
        // Another hub's keys: the kid is unknown.
        let other = TokenKeys::generate(NOW).expect("keys");
        assert_eq!(
            verify_with_jwks(&t, &other.jwks(), iss, aud, NOW),
            Err(TokenError::UnknownKey)
        );
        // Another key published under the token's kid.
        let mut impostor = other.jwks();
        impostor["keys"][0]["kid"] = json!(hub.current_kid());
        assert_eq!(
            verify_with_jwks(&t, &impostor, iss, aud, NOW),
            Err(TokenError::Signature)
        );
        // Tampered claims.
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut broader = claims(NOW);
        broader.scope = "system/*.cruds".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&broader).expect("json"));
        parts[1] = &body;
        assert_eq!(
            verify_with_jwks(&parts.join("."), &published, iss, aud, NOW),
            Err(TokenError::Signature)
        );
        // alg none, another algorithm, garbage.
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert!(verify_with_jwks(&format!("{none}.{body}."), &published, iss, aud, NOW).is_err());
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(NOW),
            &EncodingKey::from_secret(b"k"),
        )
        .expect("sign");
        assert_eq!(
            verify_with_jwks(&hs, &published, iss, aud, NOW),
            Err(TokenError::Algorithm)
        );
        assert!(matches!(
            verify_with_jwks("not a token", &published, iss, aud, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn a_rotated_hubs_set_verifies_old_and_new_tokens_and_odd_sets_are_refused() {
        let mut hub = TokenKeys::generate(NOW).expect("keys");
        let old = hub.issue(&claims(NOW)).expect("issue");
        hub.rotate(NOW + 1).expect("rotate");
        let new = hub.issue(&claims(NOW)).expect("issue");
        let (iss, aud) = ("https://node.example", "https://node.example/fhir");
        assert!(verify_with_jwks(&old, &hub.jwks(), iss, aud, NOW).is_ok());
        assert!(verify_with_jwks(&new, &hub.jwks(), iss, aud, NOW).is_ok());
        assert!(matches!(
            verify_with_jwks(&new, &json!({}), iss, aud, NOW),
            Err(TokenError::Keys(_))
        ));
        for (field, value) in [
            ("crv", json!("P-384")),
            ("kty", json!("RSA")),
            ("alg", json!("ES384")),
            ("x", json!("AAAA")),
            ("y", json!(7)),
        ] {
            let mut odd = hub.jwks();
            odd["keys"][0][field] = value;
            assert!(
                matches!(
                    verify_with_jwks(&new, &odd, iss, aud, NOW),
                    Err(TokenError::Keys(_))
                ),
                "{field}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "[A-Za-z0-9_.=-]{0,200}") {
            let ring = TokenKeys::generate(NOW).expect("keys");
            let _ = ring.verify(&s, "i", "a", NOW);
            let _ = verify_with_jwks(&s, &ring.jwks(), "i", "a", NOW);
        }
    }
}
