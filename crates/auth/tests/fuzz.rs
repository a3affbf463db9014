//! Property tests over everything in `auth` that reads untrusted input: scope strings,
//! access tokens, client assertions and JWK Sets, Consent resources, label tables, PKCE
//! parameters and stored password hashes. Arbitrary and structured-but-mutated inputs must
//! give an error, never a panic, and a tampered token or assertion never verifies.

use std::sync::OnceLock;

use auth::assertion::{self, MemoryLedger};
use auth::consent::{self, AccessRequest, Consent, ConsentSettings, NetworkDefault};
use auth::labels::{Label, Labeler};
use auth::scope::{Interaction, Scope, ScopeSet};
use auth::token::{AccessClaims, TokenKeys};
use auth::{password, pkce, registry};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeZone, Utc};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://node.example";
const AUD: &str = "https://node.example/fhir";
const ENDPOINT: &str = "https://node.example/auth/token";
const RSA_PEM: &str = include_str!("fixtures/client-rs384.pem");
const RSA_JWKS: &str = include_str!("fixtures/client-rs384.jwks.json");

fn config(cases: u32) -> Config {
    Config {
        cases,
        // A failure is reported with its input; no regression files in the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies

/// Text that is mostly what scopes, JSON and JWTs are made of, sometimes anything.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9/*.?=&_:%+ -]{0,24}",
        1 => any::<String>(),
        1 => "\\PC{0,12}",
    ]
}

fn scope_text() -> impl Strategy<Value = String> {
    let context = prop_oneof![
        6 => prop::sample::select(vec!["patient", "user", "system"]),
        1 => prop::sample::select(vec!["launch", "Patient", "", "x"]),
    ];
    let ty = prop_oneof![
        6 => prop::sample::select(vec!["*", "Observation", "Patient", "Condition"]).prop_map(str::to_owned),
        1 => prop::sample::select(vec!["observation", ""]).prop_map(str::to_owned),
        1 => "[A-Za-z0-9*é.-]{0,8}",
    ];
    let perms = prop_oneof![
        6 => "c?r?u?d?s?",
        3 => prop::sample::select(vec!["read", "write", "*"]).prop_map(str::to_owned),
        1 => "[cruds]{0,6}",
        1 => "[a-z*.]{0,5}",
    ];
    let query = prop_oneof![
        6 => Just(String::new()),
        3 => prop::sample::select(vec!["?category=laboratory", "?category=vital-signs", "?code=http://loinc.org|1234-5&status=final"])
            .prop_map(str::to_owned),
        1 => "\\?[a-z_:.-]{0,8}=[a-z0-9|=?é-]{0,8}",
        1 => "\\?[a-z]{1,6}=[a-z]{1,6}&[a-z]{0,6}=?[a-z]{0,6}",
        1 => "\\?[&=?]{0,4}",
    ];
    prop_oneof![
        8 => (context, ty, perms, query).prop_map(|(c, t, p, q)| format!("{c}/{t}.{p}{q}")),
        1 => prop_oneof![
            Just("openid".to_owned()),
            Just("fhirUser".to_owned()),
            Just("offline_access".to_owned()),
            Just("launch/patient".to_owned()),
        ],
        1 => text(),
    ]
}

fn scope_set_text() -> impl Strategy<Value = String> {
    prop::collection::vec(scope_text(), 0..6).prop_map(|v| v.join(" "))
}

/// A scope set that parses (invalid members dropped).
fn scope_set() -> impl Strategy<Value = ScopeSet> {
    prop::collection::vec(scope_text(), 0..6).prop_map(|v| {
        let valid: Vec<String> = v
            .into_iter()
            .filter(|s| !s.contains(' ') && Scope::parse(s).is_ok())
            .collect();
        ScopeSet::parse(&valid.join(" ")).expect("valid scopes parse together")
    })
}

fn interaction() -> impl Strategy<Value = Interaction> {
    prop_oneof![
        Just(Interaction::Create),
        Just(Interaction::Read),
        Just(Interaction::Update),
        Just(Interaction::Delete),
        Just(Interaction::Search),
    ]
}

fn resource_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Observation".to_owned()),
        Just("Patient".to_owned()),
        Just("Condition".to_owned()),
        "[A-Za-z]{0,6}",
    ]
}

/// Object keys: those the parsers look for, and others.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec![
            "resourceType", "id", "status", "scope", "coding", "code", "system", "dateTime",
            "patient", "reference", "provision", "type", "period", "start", "end", "actor",
            "purpose", "action", "securityLabel", "class", "data", "meta", "security",
            "valueCodeableConcept", "category", "reasonCode", "contained", "keys", "kty",
            "kid", "alg", "n", "e", "x", "y", "crv", "use", "prefix", "label", "label_system",
            "iss", "sub", "aud", "exp", "jti",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z/_]{0,8}",
    ]
}

/// String values: codes, dates, references the parsers understand, and noise.
fn leaf_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Consent", "active", "inactive", "patient-privacy", "permit", "deny", "access",
            "disclose", "TREAT", "ETREAT", "HIV", "PSY", "ETH", "Organization/o1",
            "Patient/p1", "Observation", "2024", "2024-02", "2024-13", "2024-00", "9999-12",
            "-999", "+999", "2024-02-30", "2024-02-29", "2024-01-01T00:00:00Z",
            "2024-01-01T25:00:00+14:00", "0000-01-01", "é",
            "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "http://hl7.org/fhir/sid/icd-10-cm", "F10.2", "B20", "RSA", "EC", "P-384", "P-256",
            "oct", "OKP", "AQAB", "RS384", "ES384", "sig",
        ])
        .prop_map(str::to_owned),
        1 => text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        leaf_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A random Consent-shaped resource: the right resourceType and scope, the rest random.
fn consent_value() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), leaf_string(), any::<bool>()).prop_map(
        |(provision, extra, date, privacy)| {
            let mut c = json!({
                "resourceType": "Consent",
                "id": "c1",
                "status": "active",
                "patient": {"reference": "Patient/p1"},
                "provision": provision,
                "extra": extra,
            });
            if privacy {
                c["scope"] = json!({"coding": [{"code": "patient-privacy"}]});
            }
            if date.len() % 2 == 0 {
                c["dateTime"] = json!(date);
            }
            c
        },
    )
}

/// A Consent with a real provision tree whose leaves are drawn from the values above.
fn provision_tree() -> impl Strategy<Value = Value> {
    let date = prop_oneof![
        4 => prop::sample::select(vec!["2020", "2023-06", "2024-02-29", "2030-01-01T00:00:00+09:00"])
            .prop_map(|d| Some(d.to_owned())),
        4 => Just(None),
        1 => leaf_string().prop_map(Some),
    ];
    let leaf = (
        prop::sample::select(vec!["permit", "deny", "permit", "deny", "maybe"]),
        prop::collection::vec(leaf_string(), 0..3),
        date.clone(),
        date,
    )
        .prop_map(|(ty, codes, start, end)| {
            json!({
                "type": ty,
                "period": {"start": start, "end": end},
                "actor": codes.iter().map(|c| json!({"reference": {"reference": c}})).collect::<Vec<_>>(),
                "purpose": codes.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "securityLabel": codes.iter().map(|c| json!({"system": auth::labels::ACT_CODE, "code": c})).collect::<Vec<_>>(),
                "class": codes.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "action": [{"coding": [{"code": "access"}]}],
            })
        });
    leaf.prop_recursive(10, 40, 3, |inner| {
        (inner.clone(), prop::collection::vec(inner, 0..3)).prop_map(|(mut p, nested)| {
            p["provision"] = Value::Array(nested);
            p
        })
    })
}

// ---------------------------------------------------------------------------------------
// Tokens and assertions

fn ring() -> &'static TokenKeys {
    static RING: OnceLock<TokenKeys> = OnceLock::new();
    RING.get_or_init(|| TokenKeys::generate(NOW).expect("keys"))
}

fn access_claims() -> AccessClaims {
    AccessClaims {
        iss: ISS.into(),
        sub: "Patient/g1".into(),
        aud: AUD.into(),
        exp: NOW + 300,
        iat: NOW,
        jti: "t1".into(),
        scope: "patient/*.rs".into(),
        client_id: "app".into(),
        patient: Some("g1".into()),
        fhir_user: None,
        organization: None,
        purpose_of_use: None,
        break_glass: None,
    }
}

fn valid_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| ring().issue(&access_claims()).expect("issue"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn alg_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "ES256", "none", "None", "NONE", "HS256", "HS384", "RS256", "RS384", "ES384", "PS256",
            "EdDSA", "es256", "",
        ])
        .prop_map(str::to_owned),
        text(),
    ]
}

/// A JWT-shaped string: random header and claims JSON, random signature bytes.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let header = (
        alg_name(),
        prop::option::of(text()),
        any::<bool>(),
        json_value(),
    )
        .prop_map(|(alg, kid, current, extra)| {
            let mut h = json!({"alg": alg, "typ": "at+jwt", "x": extra});
            if current {
                h["kid"] = json!(ring().current_kid());
            } else if let Some(k) = kid {
                h["kid"] = json!(k);
            }
            h
        });
    let claims = prop_oneof![
        json_value(),
        Just(serde_json::to_value(access_claims()).expect("claims")),
    ];
    (
        header,
        claims,
        prop::collection::vec(any::<u8>(), 0..80),
        0usize..4,
    )
        .prop_map(|(h, c, sig, dots)| {
            let mut t = format!(
                "{}.{}.{}",
                b64(h.to_string().as_bytes()),
                b64(c.to_string().as_bytes()),
                b64(&sig)
            );
            t.push_str(&".".repeat(dots.saturating_sub(2)));
            t
        })
}

/// Replaces the byte at `at` (modulo the length) with `with`, keeping the string valid.
fn flip(s: &str, at: usize, with: char) -> Option<String> {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return None;
    }
    let i = at % chars.len();
    if chars[i] == with {
        return None;
    }
    chars[i] = with;
    Some(chars.into_iter().collect())
}

fn replacement() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect::<Vec<_>>()
        ),
        1 => prop::sample::select(vec!['.', '=', '+', '/', ' ', '\0', 'é']),
    ]
}

fn rsa_keys() -> &'static JwkSet {
    static KEYS: OnceLock<JwkSet> = OnceLock::new();
    KEYS.get_or_init(|| serde_json::from_str(RSA_JWKS).expect("jwks"))
}

fn rsa_key() -> &'static EncodingKey {
    static KEY: OnceLock<EncodingKey> = OnceLock::new();
    KEY.get_or_init(|| EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("pem"))
}

fn sign_rs384(claims: &Value, kid: Option<&str>) -> String {
    let mut h = Header::new(Algorithm::RS384);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, rsa_key()).expect("sign")
}

fn assertion_claims() -> Value {
    json!({"iss": "backend", "sub": "backend", "aud": ENDPOINT, "exp": NOW + 240, "jti": "j"})
}

/// Claims that are sometimes right and often subtly wrong.
fn mutated_claims() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        12 => Just(json!("backend")),
        1 => Just(json!("Backend")),
        1 => Just(json!(["backend"])),
        1 => Just(Value::Null),
        1 => json_value(),
    ];
    let aud = prop_oneof![
        4 => Just(json!(ENDPOINT)),
        2 => Just(json!([ENDPOINT])),
        2 => Just(json!(["https://elsewhere", ENDPOINT])),
        1 => Just(json!(format!("{ENDPOINT}/"))),
        1 => Just(json!([])),
        1 => json_value(),
    ];
    let exp = prop_oneof![
        12 => (-10i64..400).prop_map(|d| json!(NOW + d)),
        1 => Just(json!(i64::MAX)),
        1 => Just(json!(i64::MIN)),
        1 => Just(json!(u64::MAX)),
        1 => Just(json!(1.8e9)),
        1 => Just(json!("1800000100")),
        1 => json_value(),
    ];
    let jti = prop_oneof![6 => Just(json!("j")), 1 => json_value()];
    (id.clone(), id, aud, exp, jti, any::<u8>()).prop_map(|(iss, sub, aud, exp, jti, drop)| {
        let mut c = json!({"iss": iss, "sub": sub, "aud": aud, "exp": exp, "jti": jti});
        // Sometimes a claim is missing altogether.
        if let Some(o) = c.as_object_mut()
            && drop < 20
        {
            let k = ["iss", "sub", "aud", "exp", "jti"][usize::from(drop) % 5];
            o.remove(k);
        }
        c
    })
}

/// Whether an assertion with these claims, correctly signed, is one `verify` must accept.
fn acceptable(c: &Value) -> bool {
    let aud_ok = match &c["aud"] {
        Value::String(s) => s == ENDPOINT,
        Value::Array(a) => {
            a.iter().all(Value::is_string) && a.iter().any(|v| v.as_str() == Some(ENDPOINT))
        }
        _ => false,
    };
    let exp_ok = c["exp"]
        .as_i64()
        .is_some_and(|e| e > NOW && e <= NOW + assertion::MAX_LIFETIME);
    c["iss"] == json!("backend")
        && c["sub"] == json!("backend")
        && c["jti"].is_string()
        && aud_ok
        && exp_ok
}

/// A JWK Set like the registered one with one member changed.
fn mutated_jwks() -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_str(RSA_JWKS).expect("jwks");
    (key(), json_value(), any::<bool>()).prop_map(move |(k, v, ec)| {
        let mut set = base.clone();
        if ec {
            set["keys"][0] = json!({"kty": "EC", "crv": "P-384", "kid": "test-rs384",
                "x": b64(&[4; 48]), "y": b64(&[7; 48])});
        }
        set["keys"][0][k] = v;
        set
    })
}

// ---------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(5000))]

    #[test]
    fn a_scope_parses_or_errs_and_prints_back_to_itself(s in scope_text()) {
        if let Ok(scope) = Scope::parse(&s) {
            let printed = scope.to_string();
            prop_assert_eq!(Scope::parse(&printed), Ok(scope));
        }
    }

    #[test]
    fn a_scope_set_prints_back_to_itself(s in scope_set_text()) {
        if let Ok(set) = ScopeSet::parse(&s) {
            prop_assert_eq!(ScopeSet::parse(&set.to_string()), Ok(set));
        }
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn narrowing_to_a_registration_never_grants_more(
        asked in scope_set(),
        allowed in scope_set(),
        i in interaction(),
        ty in resource_type(),
    ) {
        let _ = asked.contexts();
        let _ = asked.patient_only();
        let got = asked.within(&allowed);
        if got.grant(i, &ty).is_allowed() {
            prop_assert!(asked.grant(i, &ty).is_allowed(), "{got} grants more than asked {asked}");
            prop_assert!(allowed.grant(i, &ty).is_allowed(), "{got} grants more than allowed {allowed}");
        }
        // Narrowing again changes nothing, and a set within itself is itself.
        prop_assert_eq!(got.within(&allowed), got.clone());
        prop_assert_eq!(asked.within(&asked), asked.clone());
        // What was granted prints as scopes that parse back to it.
        prop_assert_eq!(ScopeSet::parse(&got.to_string()), Ok(got));
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn a_jwt_shaped_string_never_verifies(t in jwt_shaped()) {
        prop_assert!(ring().verify(&t, ISS, AUD, NOW).is_err());
    }

    #[test]
    fn arbitrary_text_is_never_a_token(t in text()) {
        prop_assert!(ring().verify(&t, ISS, AUD, NOW).is_err());
        let _ = assertion::claimed_client(&t);
    }

    #[test]
    fn a_token_with_one_byte_changed_never_verifies(at in any::<usize>(), with in replacement()) {
        let t = valid_token();
        prop_assert!(ring().verify(t, ISS, AUD, NOW).is_ok());
        if let Some(bad) = flip(t, at, with) {
            prop_assert!(ring().verify(&bad, ISS, AUD, NOW).is_err(), "{bad} verified");
        }
    }

    #[test]
    fn a_token_with_other_claims_under_the_same_signature_never_verifies(
        scope in scope_set_text(),
        sub in text(),
        exp in any::<i64>(),
        extra in json_value(),
    ) {
        let t = valid_token();
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = serde_json::to_value(access_claims()).expect("claims");
        c["scope"] = json!(scope);
        c["sub"] = json!(sub);
        c["exp"] = json!(exp);
        c["extra"] = extra;
        let forged = format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]);
        prop_assert!(ring().verify(&forged, ISS, AUD, NOW).is_err());
    }

    #[test]
    fn a_token_with_its_algorithm_or_key_swapped_never_verifies(
        alg in alg_name(),
        kid in prop::option::of(text()),
        sig in prop::collection::vec(any::<u8>(), 0..72),
    ) {
        let t = valid_token();
        let parts: Vec<&str> = t.split('.').collect();
        let mut h = json!({"alg": alg, "typ": "at+jwt"});
        if let Some(k) = &kid {
            h["kid"] = json!(k);
        } else {
            h["kid"] = json!(ring().current_kid());
        }
        let head = b64(h.to_string().as_bytes());
        // With the original signature, a random one, none, and an HMAC keyed with the public key.
        let public = ring().jwks().to_string();
        let hmac = jsonwebtoken::crypto::sign(
            format!("{head}.{}", parts[1]).as_bytes(),
            &EncodingKey::from_secret(public.as_bytes()),
            Algorithm::HS256,
        )
        .expect("hmac");
        for s in [parts[2].to_owned(), b64(&sig), String::new(), hmac] {
            let forged = format!("{head}.{}.{s}", parts[1]);
            // Only the untouched token verifies.
            let original = head == parts[0] && s == parts[2];
            prop_assert_eq!(ring().verify(&forged, ISS, AUD, NOW).is_ok(), original, "{}", forged);
        }
    }
}

proptest! {
    #![proptest_config(config(600))]

    #[test]
    fn an_assertion_is_accepted_only_when_its_claims_are_right(c in mutated_claims(), kid in any::<bool>()) {
        let a = sign_rs384(&c, kid.then_some("test-rs384"));
        let _ = assertion::claimed_client(&a);
        let got = assertion::verify(&a, "backend", rsa_keys(), ENDPOINT, NOW, &mut MemoryLedger::default());
        prop_assert_eq!(got.is_ok(), acceptable(&c), "{:?} for {}", got, c);
    }

    #[test]
    fn an_assertion_with_one_byte_changed_never_verifies(at in any::<usize>(), with in replacement()) {
        let a = sign_rs384(&assertion_claims(), Some("test-rs384"));
        if let Some(bad) = flip(&a, at, with) {
            let _ = assertion::claimed_client(&bad);
            let got = assertion::verify(&bad, "backend", rsa_keys(), ENDPOINT, NOW, &mut MemoryLedger::default());
            prop_assert!(got.is_err(), "{bad} verified");
        }
    }

    #[test]
    fn an_assertion_under_another_algorithm_or_a_mutated_key_set_never_verifies(
        alg in alg_name(),
        jwks in mutated_jwks(),
        t in jwt_shaped(),
    ) {
        let a = sign_rs384(&assertion_claims(), Some("test-rs384"));
        let parts: Vec<&str> = a.split('.').collect();
        let head = b64(json!({"alg": alg, "kid": "test-rs384"}).to_string().as_bytes());
        let swapped = format!("{head}.{}.{}", parts[1], parts[2]);
        let keys = rsa_keys();
        let swapped_result = assertion::verify(&swapped, "backend", keys, ENDPOINT, NOW, &mut MemoryLedger::default());
        // The signature covers the header: any other header fails, whatever its algorithm.
        prop_assert_eq!(swapped_result.is_ok(), head == parts[0]);
        let _ = assertion::verify(&t, "backend", keys, ENDPOINT, NOW, &mut MemoryLedger::default());
        // A JWK Set changed in one member: never a panic, whether it registers or not.
        let text = jwks.to_string();
        let _ = registry::parse_jwks(&text);
        if let Ok(set) = serde_json::from_value::<JwkSet>(jwks) {
            let _ = assertion::verify(&a, "backend", &set, ENDPOINT, NOW, &mut MemoryLedger::default());
            let _ = assertion::verify(&t, "backend", &set, ENDPOINT, NOW, &mut MemoryLedger::default());
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn a_jwks_text_parses_or_errs(t in text(), v in json_value()) {
        let _ = registry::parse_jwks(&t);
        let _ = registry::parse_jwks(&v.to_string());
        let _ = registry::parse_jwks(&json!({"keys": [v]}).to_string());
    }

    #[test]
    fn any_json_is_a_consent_or_an_error(v in json_value(), c in consent_value(), at in any::<i64>()) {
        let settings = ConsentSettings {
            default: NetworkDefault::OptIn,
            sensitive: [Label::act("PSY")].into_iter().collect(),
        };
        let now = Utc.timestamp_opt(at % 400_000_000_000, 0).single().unwrap_or_else(Utc::now);
        let mut consents = Vec::new();
        for value in [v, c] {
            if let Ok(consent) = Consent::from_resource(&value) {
                let _ = consent.applies();
                consents.push(consent);
            }
        }
        let req = AccessRequest {
            actors: vec!["Organization/o1".into()],
            purpose: Some(consent::EMERGENCY_PURPOSE.into()),
            now,
            break_glass: at % 2 == 0,
        };
        let d = consent::evaluate(&settings, &consents, &req);
        let _ = d.is_unrestricted();
    }

    #[test]
    fn a_provision_tree_is_read_or_refused(p in provision_tree(), purpose in leaf_string()) {
        let c = json!({
            "resourceType": "Consent", "id": "c", "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "dateTime": "2024-01-01", "provision": p,
        });
        if let Ok(consent) = Consent::from_resource(&c) {
            let req = AccessRequest {
                actors: vec!["Organization/o1".into(), "Patient/p1".into()],
                purpose: Some(purpose),
                now: Utc.timestamp_opt(NOW, 0).single().expect("time"),
                break_glass: false,
            };
            let _ = consent::evaluate(&ConsentSettings::default(), &[consent], &req);
        }
    }

    #[test]
    fn any_label_table_text_loads_or_errs(t in text(), v in json_value(), mut r in json_value()) {
        let _ = Labeler::from_json(&t);
        if let Ok(l) = Labeler::from_json(&v.to_string()) {
            let _ = l.labels_for(&r);
        }
        let l = Labeler::default();
        let _ = l.labels_for(&r);
        let _ = auth::labels::security_labels(&r);
        l.apply(&mut r);
        // Applied once, the labels are all there.
        prop_assert!(l.apply(&mut r).is_empty());
    }

    #[test]
    fn pkce_parameters_are_checked_without_panic(v in text(), c in text(), m in text()) {
        let _ = pkce::check_challenge(&c, &m);
        let _ = pkce::check_challenge(&c, pkce::S256);
        if pkce::verify(&v, &c).is_ok() {
            prop_assert_eq!(pkce::challenge_of(&v), c);
        }
    }

    #[test]
    fn a_well_formed_verifier_matches_its_own_challenge_only(v in "[A-Za-z0-9._~-]{43,128}", at in any::<usize>(), with in replacement()) {
        let c = pkce::challenge_of(&v);
        prop_assert_eq!(pkce::check_challenge(&c, pkce::S256), Ok(()));
        prop_assert_eq!(pkce::verify(&v, &c), Ok(()));
        if let Some(other) = flip(&c, at, with) {
            prop_assert!(pkce::verify(&v, &other).is_err());
        }
    }
}

/// PHC strings: random text, and argon2 strings with mutated fields (small costs, so that a
/// parse that succeeds verifies quickly).
fn phc() -> impl Strategy<Value = String> {
    let alg = prop::sample::select(vec![
        "argon2id", "argon2id", "argon2i", "argon2d", "argon2", "scrypt", "",
    ]);
    let version = prop::sample::select(vec!["v=19", "v=19", "v=16", "v=0", "v=x", ""]);
    let params = prop_oneof![
        6 => (16u32..64, 1u32..3, 1u32..3).prop_map(|(m, t, p)| format!("m={m},t={t},p={p}")),
        1 => Just("m=0,t=0,p=0".to_owned()),
        1 => Just("m=1,t=1,p=9".to_owned()),
        1 => "[mtp=0-9,]{0,12}",
    ];
    let b64 = |n| {
        prop::collection::vec(any::<u8>(), n)
            .prop_map(|b| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b))
    };
    let salt = prop_oneof![4 => b64(8..24), 1 => "[A-Za-z0-9+/]{0,24}", 1 => text()];
    let hash = prop_oneof![4 => b64(16..40), 1 => "[A-Za-z0-9+/]{0,48}", 1 => text()];
    prop_oneof![
        4 => (alg, version, params, salt, hash)
            .prop_map(|(a, v, p, s, h)| format!("${a}${v}${p}${s}${h}")),
        1 => text(),
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn a_stored_hash_is_read_or_refused(pw in text(), h in phc()) {
        let _ = password::verify(&pw, &h);
    }
}
