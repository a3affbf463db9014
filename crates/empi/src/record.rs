//! The matching view of a FHIR R4 `Patient`: the normalised values the comparators use,
//! extracted once per resource (names incl. JP Core kana forms, birth date, sex, phones, address,
//! identifiers, multiple-birth order, source and last update for survivorship).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EmpiError;
use crate::normalize::{self, Date};

/// The iso21090 EN-representation extension JP Core uses to mark a name's script.
pub const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// Administrative sex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// `male`
    Male,
    /// `female`
    Female,
    /// `other`
    Other,
}

/// One Patient, normalised for matching. Built with [`Record::from_patient`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Record {
    /// `Patient.id` (the source record's id).
    pub id: String,
    /// `Patient.meta.source`, or the system of the first identifier: who sent the record.
    pub source: Option<String>,
    /// `Patient.meta.lastUpdated` (RFC 3339 text, compared as text).
    pub last_updated: Option<String>,
    /// Family names: the official / ideographic / alphabetic one first, then others (maiden, old).
    pub family: Vec<String>,
    /// Given names of the first name, in order (first name first).
    pub given: Vec<String>,
    /// Family name in kana (JP Core `SYL` representation), normalised to katakana.
    pub family_kana: Option<String>,
    /// First given name in kana.
    pub given_kana: Option<String>,
    /// Birth date.
    pub birth: Option<Date>,
    /// Administrative sex (`unknown` is treated as missing).
    pub gender: Option<Gender>,
    /// Phone numbers as national digits.
    pub phones: Vec<String>,
    /// Postcode of the first (home) address.
    pub postcode: Option<String>,
    /// First address line, normalised.
    pub line: Option<String>,
    /// Identifiers as `(system, value)`; value trimmed and upper-cased.
    pub identifiers: Vec<(String, String)>,
    /// `multipleBirthInteger` (birth order); `Some(0)` for `multipleBirthBoolean: true`.
    pub multiple_birth: Option<u32>,
}

impl Record {
    /// Extracts the matching view of a FHIR `Patient` resource.
    pub fn from_patient(patient: &Value) -> Result<Record, EmpiError> {
        if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
            return Err(EmpiError::NotAPatient);
        }
        let id = patient
            .get("id")
            .and_then(Value::as_str)
            .ok_or(EmpiError::MissingId)?
            .to_owned();
        let mut r = Record {
            id,
            ..Record::default()
        };
        let meta = patient.get("meta");
        r.last_updated = meta
            .and_then(|m| m.get("lastUpdated"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        r.source = meta
            .and_then(|m| m.get("source"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let names = array(patient, "name");
        // Order: official/usual first; JP Core SYL forms go to the kana fields.
        let mut primary_done = false;
        let mut ranked: Vec<&Value> = names.iter().collect();
        ranked.sort_by_key(|n| match n.get("use").and_then(Value::as_str) {
            Some("official") | None => 0,
            Some("usual") => 1,
            Some("maiden") | Some("old") => 3,
            _ => 2,
        });
        for n in ranked {
            let representation = array(n, "extension")
                .iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(EN_REPRESENTATION))
                .and_then(|e| e.get("valueCode"))
                .and_then(Value::as_str);
            let family = n
                .get("family")
                .and_then(Value::as_str)
                .map(normalize::name)
                .filter(|f| !f.is_empty());
            let given: Vec<String> = array(n, "given")
                .iter()
                .filter_map(Value::as_str)
                .map(normalize::name)
                .filter(|g| !g.is_empty())
                .collect();
            // A name without parts may still carry `text` ("山田 太郎", "John Smith").
            let (family, given) = match (family, given.is_empty()) {
                (None, true) => match n.get("text").and_then(Value::as_str) {
                    Some(text) => split_text(text, representation.is_some()),
                    None => (None, given),
                },
                (f, _) => (f, given),
            };
            let is_kana = representation == Some("SYL")
                || family.as_deref().is_some_and(is_all_kana) && representation.is_none();
            if is_kana {
                if r.family_kana.is_none() {
                    r.family_kana = family;
                }
                if r.given_kana.is_none() {
                    r.given_kana = given.into_iter().next();
                }
                continue;
            }
            if let Some(f) = family
                && !r.family.contains(&f)
            {
                r.family.push(f);
            }
            if !primary_done && !given.is_empty() {
                r.given = given;
                primary_done = true;
            }
        }

        r.birth = patient
            .get("birthDate")
            .and_then(Value::as_str)
            .and_then(Date::parse);
        r.gender = match patient.get("gender").and_then(Value::as_str) {
            Some("male") => Some(Gender::Male),
            Some("female") => Some(Gender::Female),
            Some("other") => Some(Gender::Other),
            _ => None,
        };
        for t in array(patient, "telecom") {
            if matches!(
                t.get("system").and_then(Value::as_str),
                Some("phone") | Some("sms") | None
            ) && let Some(p) = t
                .get("value")
                .and_then(Value::as_str)
                .and_then(normalize::phone)
                && !r.phones.contains(&p)
            {
                r.phones.push(p);
            }
        }
        let addresses = array(patient, "address");
        let home = addresses
            .iter()
            .find(|a| a.get("use").and_then(Value::as_str) == Some("home"))
            .or(addresses.first());
        if let Some(a) = home {
            r.postcode = a
                .get("postalCode")
                .and_then(Value::as_str)
                .and_then(normalize::postcode);
            r.line = array(a, "line")
                .first()
                .and_then(Value::as_str)
                .or_else(|| a.get("text").and_then(Value::as_str))
                .map(normalize::text)
                .filter(|l| !l.is_empty());
        }
        for i in array(patient, "identifier") {
            if let (Some(system), Some(value)) = (
                i.get("system").and_then(Value::as_str),
                i.get("value").and_then(Value::as_str),
            ) {
                let value: String = value
                    .trim()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .map(|c| c.to_ascii_uppercase())
                    .collect();
                if !value.is_empty() {
                    r.identifiers.push((system.to_owned(), value));
                }
            }
        }
        if r.source.is_none() {
            r.source = r.identifiers.first().map(|(s, _)| s.clone());
        }
        r.multiple_birth = match (
            patient.get("multipleBirthInteger").and_then(Value::as_u64),
            patient.get("multipleBirthBoolean").and_then(Value::as_bool),
        ) {
            (Some(n), _) => Some(n as u32),
            (None, Some(true)) => Some(0),
            _ => None,
        };
        Ok(r)
    }

    /// The first given name, nickname-canonicalised (`bob` -> `robert`).
    pub fn first_given(&self) -> Option<&str> {
        self.given.first().map(|g| normalize::canonical_given(g))
    }

    /// How many of the compared fields are present (used for "most complete" survivorship).
    pub fn completeness(&self) -> usize {
        usize::from(!self.family.is_empty())
            + usize::from(!self.given.is_empty())
            + usize::from(self.family_kana.is_some())
            + usize::from(self.birth.is_some())
            + usize::from(self.gender.is_some())
            + usize::from(!self.phones.is_empty())
            + usize::from(self.postcode.is_some())
            + usize::from(self.line.is_some())
            + self.identifiers.len()
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn is_all_kana(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| ('\u{30A0}'..='\u{30FF}').contains(&c))
}

/// Splits `Name.text`: Japanese order is family first, Western order is family last.
fn split_text(text: &str, family_first: bool) -> (Option<String>, Vec<String>) {
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c == '\u{3000}' || c == ',')
        .map(normalize::name)
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return (None, Vec::new());
    }
    let japanese = normalize::is_japanese(&words[0]);
    if family_first || japanese || text.contains(',') {
        (Some(words[0].clone()), words[1..].to_vec())
    } else {
        let last = words.len() - 1;
        (Some(words[last].clone()), words[..last].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_synthea_patient() {
        let p = json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-53-8547"}],
            "name": [{"use": "official", "family": "Goldner995", "given": ["Andrew29"]},
                     {"use": "maiden", "family": "Smith"}],
            "telecom": [{"system": "phone", "value": "555-806-9773"}],
            "gender": "male", "birthDate": "1943-03-17",
            "address": [{"line": ["847 Tremblay Crossroad"], "postalCode": "67880"}]
        });
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.family, ["goldner", "smith"]);
        assert_eq!(r.given, ["andrew"]);
        assert_eq!(r.phones, ["5558069773"]);
        assert_eq!(r.postcode.as_deref(), Some("67880"));
        assert_eq!(r.identifiers[0].1, "999-53-8547");
        assert_eq!(r.gender, Some(Gender::Male));
        assert_eq!(r.source.as_deref(), Some("http://hl7.org/fhir/sid/us-ssn"));
    }

    #[test]
    fn extracts_jp_core_kanji_and_kana_names() {
        let ext = |code: &str| json!([{"url": EN_REPRESENTATION, "valueCode": code}]);
        let p = json!({
            "resourceType": "Patient", "id": "jp",
            "name": [
                {"extension": ext("IDE"), "use": "official", "family": "髙橋", "given": ["太郎"]},
                {"extension": ext("SYL"), "use": "official", "family": "ﾀｶﾊｼ", "given": ["たろう"]}
            ]
        });
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.family, ["高橋"]);
        assert_eq!(r.given, ["太郎"]);
        assert_eq!(r.family_kana.as_deref(), Some("タカハシ"));
        assert_eq!(r.given_kana.as_deref(), Some("タロウ"));
    }

    #[test]
    fn name_text_is_split_by_script() {
        let p = json!({"resourceType": "Patient", "id": "t",
            "name": [{"text": "山田 花子"}]});
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.family, ["山田"]);
        assert_eq!(r.given, ["花子"]);
    }

    #[test]
    fn rejects_other_resources() {
        assert!(matches!(
            Record::from_patient(&json!({"resourceType": "Observation", "id": "o"})),
            Err(EmpiError::NotAPatient)
        ));
        assert!(matches!(
            Record::from_patient(&json!({"resourceType": "Patient"})),
            Err(EmpiError::MissingId)
        ));
    }
}
