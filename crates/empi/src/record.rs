//! The matching view of a FHIR R4 `Patient`: the normalised values the comparators use,
//! extracted once per resource (names incl. JP Core kana forms, birth date, sex, phones, address,
//! identifiers, multiple-birth order, source and last update for survivorship).
//!
//! # Bounded work per record
//!
//! A Patient may repeat its names, telecoms, addresses and identifiers without limit (a faulty
//! feed has sent 45,000 names). Matching needs only a few of each, so a [`Record`] keeps at
//! most [`MAX_NAMES`] names (of [`MAX_GIVEN`] given names each), [`MAX_PHONES`] phone numbers,
//! one address and [`MAX_IDENTIFIERS`] identifiers, chosen in priority order ([`name_rank`],
//! [`telecom_rank`], [`address_rank`], [`identifier_rank`]: current, official and home values
//! first; `old` ones and ones whose `period` has an end last; document order within a rank),
//! de-duplicated with hash sets. Building a record is linear in the size of the Patient and
//! everything after it (blocking keys, comparisons, term frequencies) is bounded by the caps.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EmpiError;
use crate::normalize::{self, Date};

/// The iso21090 EN-representation extension JP Core uses to mark a name's script.
pub const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// The extension holding a birth date as a keyed hash (the record locator's privacy mode,
/// `exchange::privacy`): two equal dates give equal hashes, and nothing else can be told.
pub const HASHED_BIRTH_DATE: &str = "https://renkei.dev/fhir/StructureDefinition/hashed-birth-date";

/// Names (`Patient.name` repetitions) a record looks at.
pub const MAX_NAMES: usize = 8;
/// Given names kept of one name.
pub const MAX_GIVEN: usize = 8;
/// Distinct phone numbers kept.
pub const MAX_PHONES: usize = 8;
/// Distinct identifiers kept: more than of the other repetitions, since an identifier is the
/// strongest evidence there is, and a hub's Patient may carry one per facility.
pub const MAX_IDENTIFIERS: usize = 32;

/// Rank of a repetition whose `period` has an end: no longer current.
fn ended(v: &Value) -> bool {
    v.pointer("/period/end").is_some()
}

fn use_of(v: &Value) -> Option<&str> {
    v.get("use").and_then(Value::as_str)
}

/// Priority of a `HumanName` (lower first): official (or no use), usual, others, then
/// maiden / old names and names whose period has ended.
pub fn name_rank(n: &Value) -> u8 {
    if ended(n) {
        return 3;
    }
    match use_of(n) {
        Some("official") | None => 0,
        Some("usual") => 1,
        Some("maiden") | Some("old") => 3,
        _ => 2,
    }
}

/// Priority of a `ContactPoint`: home, mobile or no use; work; temp; then old or ended ones.
pub fn telecom_rank(t: &Value) -> u8 {
    if ended(t) {
        return 3;
    }
    match use_of(t) {
        Some("home") | Some("mobile") | None => 0,
        Some("work") => 1,
        Some("old") => 3,
        _ => 2,
    }
}

/// Priority of an `Address`: home, no use; work, billing; temp; then old or ended ones.
pub fn address_rank(a: &Value) -> u8 {
    if ended(a) {
        return 3;
    }
    match use_of(a) {
        Some("home") => 0,
        None => 1,
        Some("old") => 3,
        Some("temp") => 2,
        _ => 1,
    }
}

/// Priority of an `Identifier`: usual, official or no use; secondary; temp; then old or ended.
pub fn identifier_rank(i: &Value) -> u8 {
    if ended(i) {
        return 3;
    }
    match use_of(i) {
        Some("usual") | Some("official") | None => 0,
        Some("secondary") => 1,
        Some("old") => 3,
        _ => 2,
    }
}

/// The repetitions in priority order (`rank`, then document order). Linear in their number
/// plus a sort of small integers.
pub fn by_rank(items: &[Value], rank: fn(&Value) -> u8) -> impl Iterator<Item = &Value> {
    let mut order: Vec<(u8, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, v)| (rank(v), i))
        .collect();
    order.sort_unstable();
    order.into_iter().map(move |(_, i)| &items[i])
}

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
    /// Family name in kana (JP Core `SYL` representation), normalised to katakana with long
    /// vowels written one way ([`normalize::long_vowels`]).
    pub family_kana: Option<String>,
    /// First given name in kana, normalised as `family_kana`.
    pub given_kana: Option<String>,
    /// Birth date.
    pub birth: Option<Date>,
    /// The birth date as an opaque keyed hash ([`HASHED_BIRTH_DATE`]): compared when a pair
    /// has no clear birth date on both sides, as equal or different, nothing in between (a
    /// keying error cannot be told from another date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_hash: Option<String>,
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
    /// Systems of the identifiers whose `type` is `MR` (facility record numbers, whatever the
    /// system; see [`crate::identifier::IdentifierKinds`]).
    #[serde(default)]
    pub record_number_systems: Vec<String>,
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

        // Order: official/usual first; JP Core SYL forms go to the kana fields.
        let mut primary_done = false;
        for n in by_rank(array(patient, "name"), name_rank).take(MAX_NAMES) {
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
                .take(MAX_GIVEN)
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
                // Readings compare with their long vowels written one way (ショウヘイ = ショーヘイ).
                if r.family_kana.is_none() {
                    r.family_kana = family.map(|f| normalize::long_vowels(&f));
                }
                if r.given_kana.is_none() {
                    r.given_kana = given.first().map(|g| normalize::long_vowels(g));
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
        r.birth_hash = array(patient, "extension")
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(HASHED_BIRTH_DATE))
            .and_then(|e| e.get("valueString"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        r.gender = match patient.get("gender").and_then(Value::as_str) {
            Some("male") => Some(Gender::Male),
            Some("female") => Some(Gender::Female),
            Some("other") => Some(Gender::Other),
            _ => None,
        };
        let mut seen: HashSet<String> = HashSet::new();
        for t in by_rank(array(patient, "telecom"), telecom_rank) {
            if r.phones.len() == MAX_PHONES {
                break;
            }
            if matches!(
                t.get("system").and_then(Value::as_str),
                Some("phone") | Some("sms") | None
            ) && let Some(p) = t
                .get("value")
                .and_then(Value::as_str)
                .and_then(normalize::phone)
                && seen.insert(p.clone())
            {
                r.phones.push(p);
            }
        }
        // The best-ranked address only (first in document order among equals).
        let home = array(patient, "address")
            .iter()
            .enumerate()
            .min_by_key(|(i, a)| (address_rank(a), *i))
            .map(|(_, a)| a);
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
        let mut seen: HashSet<(String, String)> = HashSet::new();
        for i in by_rank(array(patient, "identifier"), identifier_rank) {
            if r.identifiers.len() == MAX_IDENTIFIERS {
                break;
            }
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
                let pair = (system.to_owned(), value);
                if !pair.1.is_empty() && seen.insert(pair.clone()) {
                    r.identifiers.push(pair);
                    let typed_mr = i
                        .get("type")
                        .map(|t| array(t, "coding"))
                        .unwrap_or(&[])
                        .iter()
                        .any(|c| c.get("code").and_then(Value::as_str) == Some("MR"));
                    if typed_mr && !r.record_number_systems.iter().any(|s| s == system) {
                        r.record_number_systems.push(system.to_owned());
                    }
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
            + usize::from(self.birth.is_some() || self.birth_hash.is_some())
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
        assert_eq!(
            r.given_kana.as_deref(),
            Some("タロー"),
            "long vowels written one way"
        );
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
    fn keeps_a_bounded_number_of_repetitions_in_priority_order() {
        let n = 50_000;
        // Names fold to letters only: spell the numbers out as letters.
        let letters = |i: usize| -> String {
            format!("{i:05}")
                .bytes()
                .map(|d| char::from(b'a' + d - b'0'))
                .collect()
        };
        let names: Vec<Value> = (0..n)
            .map(|i| json!({"use": "old", "family": format!("Old{}", letters(i)), "given": ["X"]}))
            .chain([json!({"use": "official", "family": "Yamada",
                           "given": (0..n).map(|i| format!("G{}", letters(i))).collect::<Vec<_>>()})])
            .collect();
        let telecom: Vec<Value> = (0..n)
            .map(|i| json!({"system": "phone", "value": format!("555-{:07}", i % 20_000)}))
            .collect();
        let address: Vec<Value> = (0..n)
            .map(
                |i| json!({"use": "old", "line": [format!("{i} Old Road")], "postalCode": "11111"}),
            )
            .chain([json!({"use": "home", "line": ["1 Home Street"], "postalCode": "22222"})])
            .collect();
        // Every identifier twice: de-duplicated, and the current ones before the old one.
        let identifier: Vec<Value> = [json!({"use": "old", "system": "urn:old", "value": "0"})]
            .into_iter()
            .chain((0..n).map(|i| json!({"system": "urn:mrn", "value": format!("{}", i / 2)})))
            .collect();
        let p = json!({"resourceType": "Patient", "id": "big", "name": names,
            "telecom": telecom, "address": address, "identifier": identifier});
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.family[0], "yamada", "the official name comes first");
        assert_eq!(r.family.len(), MAX_NAMES);
        assert_eq!(r.given.len(), MAX_GIVEN);
        assert_eq!(r.phones.len(), MAX_PHONES);
        assert_eq!(r.line.as_deref(), Some("1 home st"));
        assert_eq!(r.postcode.as_deref(), Some("22222"));
        assert_eq!(r.identifiers.len(), MAX_IDENTIFIERS);
        let distinct: HashSet<&(String, String)> = r.identifiers.iter().collect();
        assert_eq!(distinct.len(), MAX_IDENTIFIERS, "no identifier kept twice");
        assert!(r.identifiers.iter().all(|(s, _)| s == "urn:mrn"));
        assert!(crate::blocking::keys(&r).len() <= MAX_NAMES + MAX_PHONES + MAX_IDENTIFIERS + 4);
    }

    #[test]
    fn ended_periods_rank_last() {
        let p = json!({"resourceType": "Patient", "id": "p",
            "name": [{"family": "Before", "given": ["Ann"], "period": {"end": "2001"}},
                     {"family": "After", "given": ["Ann"]}],
            "address": [{"use": "home", "line": ["1 Old Rd"], "period": {"end": "2010"}},
                        {"use": "home", "line": ["2 New Rd"]}]});
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.family, ["after", "before"]);
        assert_eq!(r.line.as_deref(), Some("2 new rd"));
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

    #[test]
    fn a_hashed_birth_date_is_read_from_its_extension() {
        let p = json!({"resourceType": "Patient", "id": "p",
            "extension": [{"url": "http://example.org/other", "valueString": "x"},
                          {"url": HASHED_BIRTH_DATE, "valueString": " abc "}]});
        let r = Record::from_patient(&p).unwrap();
        assert_eq!(r.birth_hash.as_deref(), Some("abc"));
        assert_eq!(r.birth, None);
        assert_eq!(r.completeness(), 1);
        // Absent from the record's JSON when there is none (snapshots stay as they were).
        let plain = Record::from_patient(&json!({"resourceType": "Patient", "id": "q"})).unwrap();
        assert!(
            !serde_json::to_string(&plain)
                .unwrap()
                .contains("birth_hash")
        );
    }
}
