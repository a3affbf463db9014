//! The record locator's privacy mode: a node sends the hub a pseudonym of each Patient made of
//! keyed hashes (HMAC-SHA-256 under a key the nodes share and the hub never has) of its
//! identifiers and normalised demographics, never a clear value.
//!
//! What the pseudonym keeps, so that the hub's patient index can still link it:
//! - each identifier's `system` in clear (it names an issuer, not a person: the index needs it
//!   to know a national person number from a shared one) and its value hashed;
//! - each name's family and given names, normalised as the patient index normalises them
//!   (case, width, diacritics, kana), then hashed: equal names stay equal, a misspelt one no
//!   longer resembles its original;
//! - `gender` in clear (one of four codes, which the index's twin guard needs);
//! - the birth date hashed, in an extension (the index then weighs names and identifiers).
//!
//! Everything else (addresses, telecoms, narrative, contacts, photos) is left out. A requester
//! locating a person by demographics hashes its query the same way ([`pseudonymise`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The extension holding the hashed birth date.
pub const HASHED_BIRTH_DATE: &str = "https://renkei.dev/fhir/StructureDefinition/hashed-birth-date";
/// The tag marking a pseudonym.
pub const PSEUDONYM_TAG: &str = "https://renkei.dev/fhir/CodeSystem/pseudonym";

/// A network key that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the network key must be at least 32 bytes (base64url), got {0}")]
    TooShort(usize),
    #[error("the network key is not base64url")]
    NotBase64,
}

/// The nodes' shared key.
#[derive(Clone)]
pub struct NetworkKey(hmac::Key);

impl std::fmt::Debug for NetworkKey {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

impl NetworkKey {
    /// Reads a key written as base64url (at least 32 bytes).
    pub fn from_text(text: &str) -> Result<NetworkKey, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim().trim_end_matches('='))
            .map_err(|_| KeyError::NotBase64)?;
        if bytes.len() < 32 {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(NetworkKey(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// A new random key, as base64url text.
    pub fn generate() -> String {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let mut bytes = a.as_bytes().to_vec();
        bytes.extend_from_slice(b.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The keyed hash of `value` in the domain `kind` (so that equal text in two fields does
    /// not give equal hashes).
    pub fn hash(&self, kind: &str, value: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(kind.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        URL_SAFE_NO_PAD.encode(&ctx.sign().as_ref()[..24])
    }
}

/// The pseudonym of `patient` (module doc); its `id` and `meta.tag` are kept.
pub fn pseudonymise(patient: &Value, key: &NetworkKey) -> Value {
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Patient"));
    if let Some(id) = patient.get("id") {
        out.insert("id".into(), id.clone());
    }
    let mut tags: Vec<Value> = patient
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tags.push(json!({"system": PSEUDONYM_TAG, "code": "hmac-sha256"}));
    out.insert("meta".into(), json!({"tag": tags}));
    let identifiers: Vec<Value> = list(patient, "identifier")
        .filter_map(|i| {
            let value = i.get("value")?.as_str()?.trim();
            let system = i.get("system").and_then(Value::as_str).unwrap_or("");
            let mut hashed = Map::new();
            if !system.is_empty() {
                hashed.insert("system".into(), json!(system));
            }
            if let Some(t) = i.get("type") {
                hashed.insert("type".into(), t.clone());
            }
            hashed.insert(
                "value".into(),
                json!(key.hash(&format!("identifier|{system}"), value)),
            );
            Some(Value::Object(hashed))
        })
        .collect();
    if !identifiers.is_empty() {
        out.insert("identifier".into(), Value::Array(identifiers));
    }
    let names: Vec<Value> = list(patient, "name")
        .filter_map(|n| {
            let mut hashed = Map::new();
            if let Some(f) = n.get("family").and_then(Value::as_str) {
                let f = empi::normalize::name(f);
                if !f.is_empty() {
                    hashed.insert("family".into(), json!(key.hash("family", &f)));
                }
            }
            let given: Vec<Value> = list(n, "given")
                .filter_map(Value::as_str)
                .map(empi::normalize::name)
                .filter(|g| !g.is_empty())
                .map(|g| json!(key.hash("given", &g)))
                .collect();
            if !given.is_empty() {
                hashed.insert("given".into(), Value::Array(given));
            }
            (!hashed.is_empty()).then_some(Value::Object(hashed))
        })
        .collect();
    if !names.is_empty() {
        out.insert("name".into(), Value::Array(names));
    }
    if let Some(g) = patient.get("gender") {
        out.insert("gender".into(), g.clone());
    }
    if let Some(d) = patient.get("birthDate").and_then(Value::as_str) {
        out.insert(
            "extension".into(),
            json!([{"url": HASHED_BIRTH_DATE, "valueString": key.hash("birthDate", d.trim())}]),
        );
    }
    Value::Object(out)
}

/// Whether `patient` is a pseudonym.
pub fn is_pseudonym(patient: &Value) -> bool {
    patient
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.get("system").and_then(Value::as_str) == Some(PSEUDONYM_TAG))
        })
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NetworkKey {
        NetworkKey::from_text(&NetworkKey::generate()).unwrap()
    }

    #[test]
    fn no_clear_value_survives_and_equal_values_stay_equal() {
        let k = key();
        let p = json!({"resourceType": "Patient", "id": "1",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}],
            "name": [{"family": "Tanaka", "given": ["Hana"]}], "gender": "female",
            "birthDate": "1980-02-03", "address": [{"city": "Osaka"}], "telecom": [{"value": "06 1234"}]});
        let q = json!({"resourceType": "Patient", "id": "9",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}],
            "name": [{"family": "TANAKA", "given": ["Hanako"]}], "gender": "female", "birthDate": "1980-02-03"});
        let (a, b) = (pseudonymise(&p, &k), pseudonymise(&q, &k));
        let text = a.to_string();
        for clear in [
            "999-12-3456",
            "Tanaka",
            "tanaka",
            "Hana",
            "1980",
            "Osaka",
            "1234",
        ] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        assert_eq!(a["identifier"], b["identifier"]);
        assert_eq!(a["name"][0]["family"], b["name"][0]["family"]);
        assert_ne!(a["name"][0]["given"], b["name"][0]["given"]);
        assert_eq!(a["extension"], b["extension"]);
        assert!(is_pseudonym(&a) && !is_pseudonym(&p));
        // Another key, other hashes.
        assert_ne!(pseudonymise(&p, &key())["identifier"], a["identifier"]);
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(
            NetworkKey::from_text("abc").unwrap_err(),
            KeyError::TooShort(2)
        );
        assert_eq!(NetworkKey::from_text("*").unwrap_err(), KeyError::NotBase64);
        assert!(format!("{:?}", key()).contains(".."));
    }
}
