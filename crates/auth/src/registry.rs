//! Who may ask for tokens: registered clients (apps and backend services) and the users of
//! the built-in login, with the checks a registration must pass before it is stored.
//!
//! - A **backend service** authenticates with `private_key_jwt`: it registers a JWK Set (inline)
//!   or a `jwks_uri`, whose keys must be RS384 or ES384 signing keys, and the `system/` scopes it
//!   may be granted.
//! - A **public app** (a patient's or clinician's app without a secret) registers its redirect
//!   URIs and uses the authorization-code grant with PKCE.
//! - A **user** has an argon2id password hash ([`crate::password`]), the FHIR resource they are
//!   (`Practitioner/x` or, for a patient, the golden `Patient/y`), their organisation, and the
//!   scopes their logins may be granted.

/// A JSON Web Key Set (RFC 7517), as `jsonwebtoken` reads it.
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::scope::{ScopeError, ScopeSet};

/// A registration that cannot be stored.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    /// An id or user name outside `[A-Za-z0-9._-]{1,64}`.
    #[error("`{0}` is not a valid id: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    Id(String),
    /// The scopes do not parse.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A backend service without keys, or with both kinds of key source.
    #[error("a backend service registers exactly one of a JWK Set and a jwks_uri")]
    KeySource,
    /// The JWK Set does not parse, or holds a key that cannot sign RS384 or ES384.
    #[error("JWK Set: {0}")]
    Jwks(String),
    /// A redirect URI that is not absolute https (or http on the loopback interface).
    #[error("redirect URI `{0}` must be https, or http on 127.0.0.1 or localhost")]
    RedirectUri(String),
    /// A public app without a redirect URI.
    #[error("an app registers at least one redirect URI")]
    NoRedirect,
    /// A reference that is not `Type/id`.
    #[error("`{0}` is not a reference of the form Type/id")]
    Reference(String),
}

/// How a client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientKind {
    /// Client credentials with a `private_key_jwt` assertion.
    Backend,
    /// Authorization code with PKCE, no client secret.
    Public,
}

impl ClientKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Backend => "backend",
            ClientKind::Public => "public",
        }
    }

    /// Reads [`ClientKind::as_str`].
    pub fn parse(s: &str) -> Option<ClientKind> {
        match s {
            "backend" => Some(ClientKind::Backend),
            "public" => Some(ClientKind::Public),
            _ => None,
        }
    }
}

/// A registered client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// `client_id`.
    pub id: String,
    /// How it authenticates.
    pub kind: ClientKind,
    /// The scopes it may be granted (space-separated).
    pub scope: String,
    /// Inline JWK Set (backend services), as JSON text.
    pub jwks: Option<String>,
    /// Where its JWK Set is published (backend services).
    pub jwks_uri: Option<String>,
    /// Redirect URIs (apps).
    pub redirect_uris: Vec<String>,
    /// The organisation it acts for (`Organization/x`): the custodian of what it writes.
    pub organization: Option<String>,
    /// No new tokens are issued to it.
    pub disabled: bool,
}

/// A user of the built-in login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The login name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The FHIR resource the user is (`Practitioner/x`, `Patient/y`).
    pub fhir_user: Option<String>,
    /// Their organisation (`Organization/x`).
    pub organization: Option<String>,
    /// The scopes their logins may be granted.
    pub scope: String,
    /// May not sign in.
    pub disabled: bool,
}

fn check_id(id: &str) -> Result<(), RegistrationError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistrationError::Id(id.to_owned()))
    }
}

fn check_reference(r: &str) -> Result<(), RegistrationError> {
    let ok = r.split_once('/').is_some_and(|(t, id)| {
        t.starts_with(|c: char| c.is_ascii_uppercase())
            && t.chars().all(|c| c.is_ascii_alphanumeric())
            && !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
    });
    if ok {
        Ok(())
    } else {
        Err(RegistrationError::Reference(r.to_owned()))
    }
}

fn check_redirect(uri: &str) -> Result<(), RegistrationError> {
    let bad = || RegistrationError::RedirectUri(uri.to_owned());
    let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_only = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let loopback = matches!(host_only, "127.0.0.1" | "localhost" | "[::1]");
    match scheme {
        "https" if !host_only.is_empty() && !uri.contains('#') => Ok(()),
        "http" if loopback && !uri.contains('#') => Ok(()),
        _ => Err(bad()),
    }
}

/// Parses a JWK Set and checks that every key can verify RS384 or ES384 signatures.
pub fn parse_jwks(text: &str) -> Result<JwkSet, RegistrationError> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| RegistrationError::Jwks(e.to_string()))?;
    if set.keys.is_empty() {
        return Err(RegistrationError::Jwks("no keys".into()));
    }
    for (n, k) in set.keys.iter().enumerate() {
        let ok = match &k.algorithm {
            AlgorithmParameters::RSA(_) => true,
            AlgorithmParameters::EllipticCurve(ec) => ec.curve == EllipticCurve::P384,
            _ => false,
        };
        if !ok {
            return Err(RegistrationError::Jwks(format!(
                "key {n} is neither RSA nor EC P-384"
            )));
        }
    }
    Ok(set)
}

impl Client {
    /// Checks a registration.
    pub fn validate(&self) -> Result<(), RegistrationError> {
        check_id(&self.id)?;
        ScopeSet::parse(&self.scope)?;
        if let Some(org) = &self.organization {
            check_reference(org)?;
        }
        match self.kind {
            ClientKind::Backend => match (&self.jwks, &self.jwks_uri) {
                (Some(jwks), None) => {
                    parse_jwks(jwks)?;
                }
                (None, Some(uri)) => check_redirect(uri).map_err(|_| {
                    RegistrationError::Jwks(format!("jwks_uri `{uri}` must be https"))
                })?,
                _ => return Err(RegistrationError::KeySource),
            },
            ClientKind::Public => {
                if self.redirect_uris.is_empty() {
                    return Err(RegistrationError::NoRedirect);
                }
            }
        }
        for uri in &self.redirect_uris {
            check_redirect(uri)?;
        }
        Ok(())
    }
}

impl User {
    /// Checks a user (the hash is made by [`crate::password::hash`]).
    pub fn validate(&self) -> Result<(), RegistrationError> {
        check_id(&self.name)?;
        ScopeSet::parse(&self.scope)?;
        for r in self.fhir_user.iter().chain(self.organization.iter()) {
            check_reference(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWKS: &str = include_str!("../tests/fixtures/client-rs384.jwks.json");

    fn backend() -> Client {
        Client {
            id: "lab-system".into(),
            kind: ClientKind::Backend,
            scope: "system/Observation.cru system/Patient.rs".into(),
            jwks: Some(JWKS.into()),
            jwks_uri: None,
            redirect_uris: vec![],
            organization: Some("Organization/lab".into()),
            disabled: false,
        }
    }

    #[test]
    fn a_backend_service_registers_keys_of_the_two_algorithms() {
        assert_eq!(backend().validate(), Ok(()));
        let mut c = backend();
        c.jwks_uri = Some("https://lab.example/jwks".into());
        assert_eq!(c.validate(), Err(RegistrationError::KeySource));
        c.jwks = None;
        assert_eq!(c.validate(), Ok(()));
        c.jwks_uri = Some("http://lab.example/jwks".into());
        assert!(matches!(c.validate(), Err(RegistrationError::Jwks(_))));
        let mut c = backend();
        c.jwks = Some(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#.into());
        assert!(matches!(c.validate(), Err(RegistrationError::Jwks(_))));
        let mut c = backend();
        c.scope = "system/Observation.xyz".into();
        assert!(matches!(c.validate(), Err(RegistrationError::Scope(_))));
        let mut c = backend();
        c.id = "lab system".into();
        assert!(matches!(c.validate(), Err(RegistrationError::Id(_))));
    }

    #[test]
    fn an_app_registers_safe_redirects() {
        let mut app = Client {
            id: "patient-app".into(),
            kind: ClientKind::Public,
            scope: "patient/*.rs launch/patient openid fhirUser offline_access".into(),
            jwks: None,
            jwks_uri: None,
            redirect_uris: vec![],
            organization: None,
            disabled: false,
        };
        assert_eq!(app.validate(), Err(RegistrationError::NoRedirect));
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:8765/cb",
            "http://localhost/cb",
        ] {
            app.redirect_uris = vec![ok.into()];
            assert_eq!(app.validate(), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "app.example/cb",
            "https://app.example/cb#x",
            "javascript://x",
        ] {
            app.redirect_uris = vec![bad.into()];
            assert!(
                matches!(app.validate(), Err(RegistrationError::RedirectUri(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_user_names_what_they_are() {
        let mut u = User {
            name: "dr.sato".into(),
            password_hash: String::new(),
            fhir_user: Some("Practitioner/p1".into()),
            organization: Some("Organization/clinic".into()),
            scope: "user/*.rs openid fhirUser".into(),
            disabled: false,
        };
        assert_eq!(u.validate(), Ok(()));
        u.fhir_user = Some("practitioner p1".into());
        assert!(matches!(u.validate(), Err(RegistrationError::Reference(_))));
    }
}
