//! What the node tells clients about its authorization server: the SMART configuration
//! document (`/.well-known/smart-configuration`, App Launch 2.0) and the CapabilityStatement's
//! `rest.security` (the SMART service coding and the `oauth-uris` extension, where clients
//! such as Python's `fhirclient` read the endpoints).

use serde_json::{Value, json};

/// The endpoints, all absolute URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The issuer (`iss` of tokens): the node's base URL.
    pub issuer: String,
    /// The login page and code grant.
    pub authorize: String,
    /// The token endpoint.
    pub token: String,
    /// The public keys of tokens.
    pub jwks: String,
    /// RFC 7662 introspection.
    pub introspect: String,
    /// RFC 7009 revocation.
    pub revoke: String,
}

impl Endpoints {
    /// The endpoints under `base` (no trailing slash): `base/auth/authorize`, ...
    pub fn under(base: &str) -> Endpoints {
        let base = base.trim_end_matches('/');
        Endpoints {
            issuer: base.to_owned(),
            authorize: format!("{base}/auth/authorize"),
            token: format!("{base}/auth/token"),
            jwks: format!("{base}/auth/jwks"),
            introspect: format!("{base}/auth/introspect"),
            revoke: format!("{base}/auth/revoke"),
        }
    }
}

/// Scopes advertised (any resource type may replace `*`).
pub const SCOPES_SUPPORTED: &[&str] = &[
    "launch/patient",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "system/*.cruds",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
];

/// The SMART configuration document.
pub fn smart_configuration(e: &Endpoints) -> Value {
    json!({
        "issuer": e.issuer,
        "jwks_uri": e.jwks,
        "authorization_endpoint": e.authorize,
        "token_endpoint": e.token,
        "introspection_endpoint": e.introspect,
        "revocation_endpoint": e.revoke,
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2"
        ],
    })
}

/// `CapabilityStatement.rest[0].security`.
pub fn capability_security(e: &Endpoints) -> Value {
    json!({
        "cors": true,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)"}],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "token", "valueUri": e.token},
                {"url": "authorize", "valueUri": e.authorize},
                {"url": "introspect", "valueUri": e.introspect},
                {"url": "revoke", "valueUri": e.revoke},
            ]
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_name_every_endpoint_smart_requires() {
        let e = Endpoints::under("https://node.example/");
        let c = smart_configuration(&e);
        for key in [
            "issuer",
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "introspection_endpoint",
            "revocation_endpoint",
            "scopes_supported",
            "grant_types_supported",
            "code_challenge_methods_supported",
            "token_endpoint_auth_methods_supported",
            "capabilities",
        ] {
            assert!(c.get(key).is_some(), "{key}");
        }
        assert_eq!(c["token_endpoint"], "https://node.example/auth/token");
        assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
        let caps: Vec<&str> = c["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for cap in [
            "launch-standalone",
            "client-public",
            "client-confidential-asymmetric",
            "context-standalone-patient",
            "permission-patient",
            "permission-user",
            "permission-v2",
            "permission-v1",
        ] {
            assert!(caps.contains(&cap), "{cap}");
        }
        let s = capability_security(&e);
        assert_eq!(s["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
        assert_eq!(
            s["extension"][0]["extension"][0]["valueUri"],
            "https://node.example/auth/token"
        );
    }
}
