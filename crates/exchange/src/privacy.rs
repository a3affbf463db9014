//! The record locator's privacy mode: a node sends the hub a pseudonym of each Patient made of
//! keyed hashes (HMAC-SHA-256 under a key the nodes share and the hub never has) of its
//! identifiers and normalised demographics, never a clear value.
//!
//! What the pseudonym keeps, so that the hub's patient index can still link it:
//! - each identifier's `system`, `type` and `use` in clear (they name an issuer and a kind of
//!   number, not a person: the index needs them to know a national person number from a
//!   record number or a shared one) and its value hashed;
//! - each name's `use` in clear (which name is current decides which given name the index
//!   compares) and its family and given names, normalised as the patient index normalises
//!   them (case, width, diacritics, kana), then hashed: equal names stay equal, a misspelt one
//!   no longer resembles its original;
//! - `gender` in clear (one of four codes, which the index's twin guard needs);
//! - a complete birth date (`YYYY-MM-DD`) hashed, in the [`HASHED_BIRTH_DATE`] extension,
//!   which the index compares as equal or different. Without it two pseudonyms of one person
//!   that share no national number reach only review: in the Synthea sample, names and
//!   gender alone weigh 3.6 bits where the clear records weigh 12.8, and the twin guard
//!   (same family name and birth date) could not apply. A partial date is left out rather
//!   than hashed: its hash would differ from the full date's and read as a conflict.
//!
//! Everything else (addresses, telecoms, narrative, contacts, photos, extensions) is left out.
//! A requester locating a person hashes its query the same way: [`NetworkKey::hash`] with the
//! kinds `identifier|[system]`, `family`, `given` and `birthDate` ([`hashed_birth_date`]).

use crate::json::list;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The extension holding the hashed birth date (the patient index reads it).
pub const HASHED_BIRTH_DATE: &str = empi::record::HASHED_BIRTH_DATE;
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
        // 32 bytes from the system's random source, base64url: the form of every secret the
        // project hands out.
        auth::secret::new_secret()
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
            for kept in ["type", "use"] {
                if let Some(t) = i.get(kept) {
                    hashed.insert(kept.into(), t.clone());
                }
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
            if hashed.is_empty() {
                return None;
            }
            if let Some(u) = n.get("use") {
                hashed.insert("use".into(), u.clone());
            }
            Some(Value::Object(hashed))
        })
        .collect();
    if !names.is_empty() {
        out.insert("name".into(), Value::Array(names));
    }
    if let Some(g) = patient.get("gender") {
        out.insert("gender".into(), g.clone());
    }
    if let Some(hash) = patient
        .get("birthDate")
        .and_then(Value::as_str)
        .and_then(|d| hashed_birth_date(d, key))
    {
        out.insert(
            "extension".into(),
            json!([{"url": HASHED_BIRTH_DATE, "valueString": hash}]),
        );
    }
    Value::Object(out)
}

/// The keyed hash of a complete birth date (`1980-02-03`, written any way FHIR allows a date
/// or dateTime to start), as the pseudonym carries it; `None` for a partial or unreadable one.
pub fn hashed_birth_date(date: &str, key: &NetworkKey) -> Option<String> {
    let d = empi::normalize::Date::parse(date)?;
    (d.month > 0 && d.day > 0).then(|| key.hash("birthDate", &d.to_string()))
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

    fn person(id: &str, given: &str, mrn: &str, phone: &str) -> Value {
        json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": format!("urn:example:{id}:mrn"), "value": mrn,
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
            "name": [{"use": "official", "family": "Medhurst46", "given": [given]},
                     {"use": "maiden", "family": "Cummerata161", "given": [given]}],
            "gender": "female", "birthDate": "1927-05-21",
            "telecom": [{"system": "phone", "value": phone}],
            "address": [{"line": ["633 Abernathy Landing"], "postalCode": "66801"}]})
    }

    /// One person at two nodes, with other record numbers, phones and no national number:
    /// the hub's index links the two pseudonyms on hashed names, the hashed birth date and
    /// gender, as it links the clear records. Without the birth date it could only ask for a
    /// review; a twin (same family name and birth date, another given name) stays apart.
    #[test]
    fn the_index_links_pseudonyms_of_one_person_and_keeps_twins_apart() {
        use empi::{EnterpriseIndex, IndexConfig, Model, Outcome};
        let k = key();
        let at_a = pseudonymise(&person("a-1", "Sumiko254", "100", "555-810-7203"), &k);
        let at_b = pseudonymise(&person("b-7", "Sumiko254", "B-100", "555-0199"), &k);
        let twin = pseudonymise(&person("b-8", "Larue605", "B-101", "555-0199"), &k);
        let mut index = EnterpriseIndex::new(Model::default(), IndexConfig::default());
        let first = index.insert(&at_a).unwrap();
        let second = index.insert(&at_b).unwrap();
        assert_eq!(second.outcome, Outcome::Linked, "{second:?}");
        assert_eq!(second.enterprise_id, first.enterprise_id);
        let third = index.insert(&twin).unwrap();
        assert_ne!(third.outcome, Outcome::Linked, "{third:?}");
        assert_ne!(third.enterprise_id, first.enterprise_id);

        let model = Model::default();
        let scorer = empi::Scorer::new(&model, None);
        let record = |p: &Value| empi::Record::from_patient(p).unwrap();
        let with = scorer.score(&record(&at_a), &record(&at_b));
        let mut undated = at_b.clone();
        undated.as_object_mut().unwrap().remove("extension");
        let without = scorer.score(&record(&at_a), &record(&undated));
        assert_eq!(with.class, empi::MatchClass::Link, "{with:?}");
        assert_eq!(without.class, empi::MatchClass::Review, "{without:?}");
        assert!(with.weight > without.weight + 5.0);
    }

    #[test]
    fn only_complete_birth_dates_are_hashed_and_name_uses_are_kept() {
        let k = key();
        let p = |birth: &str| {
            pseudonymise(
                &json!({"resourceType": "Patient", "id": "1", "birthDate": birth,
                    "name": [{"use": "maiden", "family": "Koch"}]}),
                &k,
            )
        };
        assert_eq!(p("1980-02-03")["extension"], p(" 1980-02-03 ")["extension"]);
        assert_eq!(
            p("1980-02-03")["extension"][0]["valueString"],
            json!(hashed_birth_date("1980-02-03", &k).unwrap())
        );
        assert!(p("1980-02").get("extension").is_none());
        assert!(p("1980").get("extension").is_none());
        assert!(hashed_birth_date("someday", &k).is_none());
        assert_eq!(p("1980")["name"][0]["use"], "maiden");
        assert_eq!(HASHED_BIRTH_DATE, empi::record::HASHED_BIRTH_DATE);
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
