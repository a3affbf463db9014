//! Client authentication by `private_key_jwt` (RFC 7523, as SMART Backend Services uses it):
//! the client signs a short-lived JWT with a key whose public half it registered (a JWK Set
//! given inline or at a `jwks_uri`), and sends it as `client_assertion` with the token
//! request.
//!
//! [`verify`] accepts an assertion when it is signed RS384 or ES384 by a key of the client's
//! set (by `kid`, or any key of the set when none is named), `iss` and `sub` are the client's
//! id, `aud` is this server's token endpoint, `exp` lies in the future but at most five
//! minutes ahead, and its `jti` was never used before by that client ([`JtiLedger`]).

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// The longest an assertion may live, seconds.
pub const MAX_LIFETIME: i64 = 300;

/// Why an assertion was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AssertionError {
    /// Not a JWT, or without the claims an assertion needs.
    #[error("client_assertion is malformed: {0}")]
    Malformed(String),
    /// Signed with an algorithm other than RS384 or ES384.
    #[error("client_assertion must be signed RS384 or ES384")]
    Algorithm,
    /// No key of the client's set verifies it.
    #[error("client_assertion signature does not verify with the client's registered keys")]
    Signature,
    /// `iss` or `sub` is not the client.
    #[error("client_assertion iss and sub must both be the client id")]
    Client,
    /// `aud` is not this token endpoint.
    #[error("client_assertion aud must be the token endpoint {0}")]
    Audience(String),
    /// Expired, or expiring more than five minutes ahead.
    #[error("client_assertion exp must be in the future and at most 5 minutes ahead")]
    Lifetime,
    /// The `jti` was used before.
    #[error("client_assertion jti was already used")]
    Replay,
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: i64,
    jti: String,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The issuer of an assertion, read without checking anything: which client's keys to load.
pub fn claimed_client(assertion: &str) -> Result<String, AssertionError> {
    let bytes = crate::token::unverified_payload(assertion)
        .map_err(|why| AssertionError::Malformed(why.into()))?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes)
        .map(|i| i.iss)
        .map_err(|_| AssertionError::Malformed("no iss".into()))
}

/// Remembers the `jti`s seen, per client, until their assertion expires.
pub trait JtiLedger {
    /// Records `jti` of `client`, valid until `exp`; false when it was already recorded.
    fn first_use(&mut self, client: &str, jti: &str, exp: i64, now: i64) -> bool;
}

/// A [`JtiLedger`] in memory (one process; a shared database ledger serves several).
#[derive(Debug, Default)]
pub struct MemoryLedger {
    seen: HashMap<(String, String), i64>,
}

impl JtiLedger for MemoryLedger {
    fn first_use(&mut self, client: &str, jti: &str, exp: i64, now: i64) -> bool {
        self.seen.retain(|_, until| *until > now);
        let key = (client.to_owned(), jti.to_owned());
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, exp);
        true
    }
}

/// Checks `assertion` from `client_id` against its registered `keys`, for `token_endpoint`
/// at `now`; records its `jti` in `ledger`.
pub fn verify(
    assertion: &str,
    client_id: &str,
    keys: &JwkSet,
    token_endpoint: &str,
    now: i64,
    ledger: &mut dyn JtiLedger,
) -> Result<(), AssertionError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|e| AssertionError::Malformed(e.to_string()))?;
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(AssertionError::Algorithm);
    }
    let candidates: Vec<_> = match &header.kid {
        Some(kid) => keys.find(kid).into_iter().collect(),
        None => keys.keys.iter().collect(),
    };
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let mut claims = None;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(assertion, &key, &v) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
                | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => continue,
                _ => return Err(AssertionError::Malformed(e.to_string())),
            },
        }
    }
    let c = claims.ok_or(AssertionError::Signature)?;
    if c.iss != client_id || c.sub != client_id {
        return Err(AssertionError::Client);
    }
    if !c.aud.iter().any(|a| a == token_endpoint) {
        return Err(AssertionError::Audience(token_endpoint.to_owned()));
    }
    if c.exp <= now || c.exp > now + MAX_LIFETIME {
        return Err(AssertionError::Lifetime);
    }
    if !ledger.first_use(client_id, &c.jti, c.exp, now) {
        return Err(AssertionError::Replay);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    const RSA_PEM: &str = include_str!("../tests/fixtures/client-rs384.pem");
    const RSA_JWKS: &str = include_str!("../tests/fixtures/client-rs384.jwks.json");
    const ENDPOINT: &str = "https://node.example/auth/token";
    const NOW: i64 = 1_800_000_000;

    fn sign_rs384(claims: &serde_json::Value, kid: Option<&str>) -> String {
        let mut h = Header::new(Algorithm::RS384);
        h.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("pem");
        jsonwebtoken::encode(&h, claims, &key).expect("sign")
    }

    fn claims(jti: &str) -> serde_json::Value {
        json!({"iss": "backend", "sub": "backend", "aud": ENDPOINT, "exp": NOW + 240, "jti": jti})
    }

    fn rsa_keys() -> JwkSet {
        serde_json::from_str(RSA_JWKS).expect("jwks")
    }

    #[test]
    fn an_rs384_assertion_is_accepted_once() {
        let keys = rsa_keys();
        let mut ledger = MemoryLedger::default();
        let a = sign_rs384(&claims("j1"), Some("test-rs384"));
        assert_eq!(claimed_client(&a), Ok("backend".into()));
        assert_eq!(
            verify(&a, "backend", &keys, ENDPOINT, NOW, &mut ledger),
            Ok(())
        );
        assert_eq!(
            verify(&a, "backend", &keys, ENDPOINT, NOW + 1, &mut ledger),
            Err(AssertionError::Replay)
        );
        // Without a kid, the set's keys are tried.
        let b = sign_rs384(&claims("j2"), None);
        assert_eq!(
            verify(&b, "backend", &keys, ENDPOINT, NOW, &mut ledger),
            Ok(())
        );
    }

    #[test]
    fn an_es384_assertion_is_accepted() {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .expect("key");
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            der.as_ref(),
            &SystemRandom::new(),
        )
        .expect("pair");
        let public = pair.public_key().as_ref();
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "EC", "crv": "P-384", "kid": "ec", "alg": "ES384",
            "x": URL_SAFE_NO_PAD.encode(&public[1..49]), "y": URL_SAFE_NO_PAD.encode(&public[49..97])}]}))
        .expect("jwks");
        let mut h = Header::new(Algorithm::ES384);
        h.kid = Some("ec".into());
        let a = jsonwebtoken::encode(&h, &claims("e1"), &EncodingKey::from_ec_der(der.as_ref()))
            .expect("sign");
        assert_eq!(
            verify(
                &a,
                "backend",
                &jwks,
                ENDPOINT,
                NOW,
                &mut MemoryLedger::default()
            ),
            Ok(())
        );
        // The RSA client's keys do not verify it.
        assert_eq!(
            verify(
                &a,
                "backend",
                &rsa_keys(),
                ENDPOINT,
                NOW,
                &mut MemoryLedger::default()
            ),
            Err(AssertionError::Signature)
        );
    }

    #[test]
    fn wrong_claims_are_refused_each_with_its_reason() {
        let keys = rsa_keys();
        let check = |c: serde_json::Value| {
            verify(
                &sign_rs384(&c, None),
                "backend",
                &keys,
                ENDPOINT,
                NOW,
                &mut MemoryLedger::default(),
            )
        };
        let mut c = claims("x");
        c["sub"] = json!("someone-else");
        assert_eq!(check(c), Err(AssertionError::Client));
        let mut c = claims("x");
        c["aud"] = json!("https://node.example/fhir");
        assert_eq!(check(c), Err(AssertionError::Audience(ENDPOINT.into())));
        let mut c = claims("x");
        c["aud"] = json!(["https://elsewhere", ENDPOINT]);
        assert_eq!(check(c), Ok(()));
        let mut c = claims("x");
        c["exp"] = json!(NOW + 301);
        assert_eq!(check(c), Err(AssertionError::Lifetime));
        let mut c = claims("x");
        c["exp"] = json!(NOW);
        assert_eq!(check(c), Err(AssertionError::Lifetime));
        let mut c = claims("x");
        c.as_object_mut().unwrap().remove("jti");
        assert!(matches!(check(c), Err(AssertionError::Malformed(_))));
        // RS256 is not one of the two algorithms.
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("pem");
        let a =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("y"), &key).expect("sign");
        assert_eq!(
            verify(
                &a,
                "backend",
                &keys,
                ENDPOINT,
                NOW,
                &mut MemoryLedger::default()
            ),
            Err(AssertionError::Algorithm)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_assertions_never_panic(s in "[A-Za-z0-9_.=-]{0,300}") {
            let _ = claimed_client(&s);
            let _ = verify(&s, "c", &rsa_keys(), ENDPOINT, NOW, &mut MemoryLedger::default());
        }
    }
}
