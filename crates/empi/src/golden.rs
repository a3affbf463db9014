//! Golden records: one FHIR `Patient` per enterprise identity, composed from its source
//! Patients element by element by survivorship, tagged as golden, linked to its sources, and
//! explaining for each element which source it came from and why.
//!
//! # Survivorship
//!
//! For each element (`name`, `birthDate`, `telecom`, ...) the sources offering a value compete
//! under the element's rules, applied in order until one value is ahead
//! ([`Survivorship::default`]: [`Rule::Agreement`], then [`Rule::Quality`], then
//! [`Rule::Recency`]):
//!
//! 1. **agreement**: the value most sources agree on (values compared case- and
//!    whitespace-insensitively, objects by their content without `id`, `extension`, `use`,
//!    `period` and `rank`, arrays whatever their order);
//! 2. **quality**: a valid, more precise date over a partial or impossible one (`1980-04-07`
//!    over `1980-04` over `1980-02-30`), a known gender over `unknown`, otherwise the more
//!    complete value (more filled-in parts);
//! 3. **recency**: the most recently updated source (`meta.lastUpdated`).
//!
//! [`Rule::Trusted`] (earlier in [`Survivorship::trusted_sources`] wins) is there for
//! policies that rank senders. A tie on every rule goes to the first source in the order
//! given (the caller passes them sorted by id, so the choice is stable).
//!
//! The golden record says why: one [`SURVIVORSHIP_EXTENSION`] per element names the element,
//! the source its value came from, the rule that decided (`unanimous` when every source
//! offering it agrees, `agreement`, `quality`, `recency`, `trusted`, `order`) and a sentence
//! (`2 of 4 sources agree on this value (1 on the next)`).
//!
//! Repeated elements are bounded like the matching view ([`crate::record`]): at most
//! [`MAX_REPEATS`] names, telecoms, addresses (in the same priority order) or other
//! repetitions are copied, so composing is linear in the sources' size.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::index::EnterpriseId;
use crate::record::{address_rank, by_rank, name_rank, telecom_rank};

/// The `meta.tag` marking a golden record.
pub const GOLDEN_TAG_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/empi";
/// Its code.
pub const GOLDEN_TAG_CODE: &str = "golden";
/// The identifier system of enterprise identities (`Patient.identifier` of a golden record).
pub const ENTERPRISE_ID_SYSTEM: &str = "https://renkei.dev/fhir/sid/enterprise-id";
/// Extension on a golden record saying which source its elements came from and why: one
/// per choice (source, rule and detail), naming every element chosen so (in a golden
/// record of one source, all of them). Records composed before this grouping hold one per
/// element, which [`explained`] reads the same way.
pub const SURVIVORSHIP_EXTENSION: &str =
    "https://renkei.dev/fhir/StructureDefinition/empi-survivorship";
/// Repetitions of one element copied into a golden record.
pub const MAX_REPEATS: usize = 8;

/// The reference to a source Patient: `Patient/id`, or as given when it is already a
/// reference or a transaction's `urn:uuid:` placeholder (which the store rewrites).
pub fn source_reference(source: &str) -> String {
    if source.contains(':') || source.contains('/') {
        source.to_owned()
    } else {
        format!("Patient/{source}")
    }
}

/// One way of ranking the values offered for an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The value more sources agree on wins.
    Agreement,
    /// The better value wins: valid and precise dates, known codes, more complete values.
    Quality,
    /// The more recently updated source (`meta.lastUpdated`) wins.
    Recency,
    /// Earlier in [`Survivorship::trusted_sources`] wins; unlisted sources rank last.
    Trusted,
}

/// Why an element's value was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// Every source offering the element offers this value (or only one offers it).
    Unanimous,
    /// More sources agree on it than on any other value.
    Agreement,
    /// As many sources agree on another value, and this one is better.
    Quality,
    /// Tied on agreement and quality; from the most recently updated source.
    Recency,
    /// From the most trusted source.
    Trusted,
    /// Tied on every rule: from the first source.
    Order,
}

impl Why {
    /// The code written into the golden record.
    pub fn code(self) -> &'static str {
        match self {
            Why::Unanimous => "unanimous",
            Why::Agreement => "agreement",
            Why::Quality => "quality",
            Why::Recency => "recency",
            Why::Trusted => "trusted",
            Why::Order => "order",
        }
    }
}

/// The value an element of a golden record got, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The element (`birthDate`).
    pub element: String,
    /// The value (bounded to [`MAX_REPEATS`] repetitions).
    pub value: Value,
    /// Id of the source Patient it came from.
    pub source: String,
    /// The rule that decided.
    pub why: Why,
    /// The decision in words.
    pub detail: String,
}

/// Survivorship policy: per element, the rules applied in order (later rules break ties).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survivorship {
    /// Source systems (`meta.source`), most trusted first (used by [`Rule::Trusted`]).
    pub trusted_sources: Vec<String>,
    /// `(element, rules)`; elements not listed are not copied. Identifiers are never copied
    /// (the golden record carries the enterprise identifier only).
    pub elements: Vec<(String, Vec<Rule>)>,
}

impl Default for Survivorship {
    fn default() -> Self {
        use Rule::*;
        let rules = [Agreement, Quality, Recency];
        let elements = [
            "name",
            "gender",
            "birthDate",
            "telecom",
            "address",
            "maritalStatus",
            "multipleBirthInteger",
            "multipleBirthBoolean",
            "deceasedBoolean",
            "deceasedDateTime",
            "communication",
        ];
        Survivorship {
            trusted_sources: Vec::new(),
            elements: elements
                .iter()
                .map(|e| ((*e).to_owned(), rules.to_vec()))
                .collect(),
        }
    }
}

fn leaves(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(leaves).sum(),
        Value::Object(o) => o.values().map(leaves).sum(),
        Value::Null => 0,
        _ => 1,
    }
}

/// An element's value with its repetitions bounded (in priority order for names, telecoms
/// and addresses, document order otherwise).
fn bounded(element: &str, v: &Value) -> Value {
    let Value::Array(items) = v else {
        return v.clone();
    };
    let rank: fn(&Value) -> u8 = match element {
        "name" => name_rank,
        "telecom" => telecom_rank,
        "address" => address_rank,
        _ => |_| 0,
    };
    Value::Array(by_rank(items, rank).take(MAX_REPEATS).cloned().collect())
}

/// Object members that do not change what a value says.
const NOT_CONTENT: &[&str] = &[
    "id",
    "extension",
    "modifierExtension",
    "use",
    "period",
    "rank",
];

/// The text two values agree on when they say the same thing.
fn agreement_key(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.trim().to_lowercase()),
        Value::Array(items) => {
            let mut keys: Vec<String> = items.iter().map(agreement_key).collect();
            keys.sort_unstable();
            format!("[{}]", keys.join(","))
        }
        Value::Object(o) => {
            let mut keys: Vec<String> = o
                .iter()
                .filter(|(k, _)| !NOT_CONTENT.contains(&k.as_str()))
                .map(|(k, v)| format!("{k:?}:{}", agreement_key(v)))
                .collect();
            keys.sort_unstable();
            format!("{{{}}}", keys.join(","))
        }
        other => other.to_string(),
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// A FHIR date or dateTime's quality: 0 when it is not a calendar date, else its precision
/// (1 year, 2 month, 3 day, 4 with a time).
pub fn date_quality(s: &str) -> u32 {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let number = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    let valid = match parts.as_slice() {
        [y] => number(y, 4).is_some(),
        [y, m] => number(y, 4).is_some() && number(m, 2).is_some_and(|m| (1..=12).contains(&m)),
        [y, m, d] => match (number(y, 4), number(m, 2), number(d, 2)) {
            (Some(y), Some(m), Some(d)) => {
                (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
            }
            _ => false,
        },
        _ => false,
    };
    match (valid, time) {
        (false, _) => 0,
        (true, Some(t)) if parts.len() == 3 && !t.is_empty() => 4,
        (true, _) => parts.len() as u32,
    }
}

/// How good a value of `element` is (higher is better); see the module documentation.
fn quality(element: &str, v: &Value) -> u32 {
    match (element, v) {
        ("birthDate" | "deceasedDateTime", Value::String(s)) => date_quality(s),
        ("gender", Value::String(s)) if s == "unknown" => 1,
        ("gender", Value::String(_)) => 2,
        _ => leaves(v) as u32,
    }
}

/// One source's value for an element.
#[derive(Debug)]
struct Offer<'a> {
    source: &'a Value,
    value: Value,
    key: String,
    agreeing: usize,
    quality: u32,
}

impl<'a> Offer<'a> {
    fn recency(&self) -> &'a str {
        self.source
            .pointer("/meta/lastUpdated")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn id(&self) -> &'a str {
        self.source.get("id").and_then(Value::as_str).unwrap_or("")
    }
}

impl Survivorship {
    fn trust(&self, source: &Value) -> usize {
        source
            .pointer("/meta/source")
            .and_then(Value::as_str)
            .and_then(|s| self.trusted_sources.iter().position(|t| t == s))
            .unwrap_or(usize::MAX)
    }

    /// `Less` when `a` is preferred to `b` under `rule`.
    fn by_rule(&self, rule: Rule, a: &Offer<'_>, b: &Offer<'_>) -> Ordering {
        match rule {
            Rule::Agreement => b.agreeing.cmp(&a.agreeing),
            Rule::Quality => b.quality.cmp(&a.quality),
            Rule::Recency => b.recency().cmp(a.recency()),
            Rule::Trusted => self.trust(a.source).cmp(&self.trust(b.source)),
        }
    }

    fn by_rules(&self, rules: &[Rule], a: &Offer<'_>, b: &Offer<'_>) -> Ordering {
        rules
            .iter()
            .map(|r| self.by_rule(*r, a, b))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }

    /// The value of `element` among `sources`, and why; `None` when no source has one.
    pub fn choose<S: Borrow<Value>>(
        &self,
        element: &str,
        rules: &[Rule],
        sources: &[S],
    ) -> Option<Choice> {
        let mut offers: Vec<Offer<'_>> = sources
            .iter()
            .map(Borrow::borrow)
            .filter_map(|p: &Value| {
                let v = p.get(element).filter(|v| leaves(v) > 0)?;
                let value = bounded(element, v);
                Some(Offer {
                    source: p,
                    key: agreement_key(&value),
                    quality: quality(element, &value),
                    value,
                    agreeing: 0,
                })
            })
            .collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for o in &offers {
            *counts.entry(o.key.as_str()).or_default() += 1;
        }
        let counts: Vec<usize> = offers.iter().map(|o| counts[o.key.as_str()]).collect();
        for (o, n) in offers.iter_mut().zip(counts) {
            o.agreeing = n;
        }
        // `min_by` keeps the first of equals: sources in the order given break full ties.
        let best = offers
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| self.by_rules(rules, a, b))?
            .0;
        let winner = &offers[best];
        let runner_up = offers
            .iter()
            .filter(|o| o.key != winner.key)
            .min_by(|a, b| self.by_rules(rules, a, b));
        let total = offers.len();
        let (why, detail) = match runner_up {
            None if total == 1 => (Why::Unanimous, "the only source offering it".to_owned()),
            None => (
                Why::Unanimous,
                format!("all {total} sources offering it agree"),
            ),
            Some(other) => {
                let rule = rules
                    .iter()
                    .copied()
                    .find(|r| self.by_rule(*r, winner, other).is_ne());
                self.reason(element, rule, winner, other, total)
            }
        };
        Some(Choice {
            element: element.to_owned(),
            value: winner.value.clone(),
            source: winner.id().to_owned(),
            why,
            detail,
        })
    }

    fn reason(
        &self,
        element: &str,
        rule: Option<Rule>,
        winner: &Offer<'_>,
        other: &Offer<'_>,
        total: usize,
    ) -> (Why, String) {
        match rule {
            Some(Rule::Agreement) => (
                Why::Agreement,
                format!(
                    "{} of {total} sources agree on this value ({} on the next)",
                    winner.agreeing, other.agreeing
                ),
            ),
            Some(Rule::Quality) => {
                let what = match element {
                    "birthDate" | "deceasedDateTime" => "a valid date, more precise",
                    "gender" => "a known value",
                    _ => "more complete",
                };
                (
                    Why::Quality,
                    format!(
                        "{} of {total} sources agree on it as on another value; it is {what} \
                         (quality {} over {})",
                        winner.agreeing, winner.quality, other.quality
                    ),
                )
            }
            Some(Rule::Recency) => (
                Why::Recency,
                format!(
                    "tied on agreement and quality; the most recently updated source ({} over {})",
                    winner.recency(),
                    other.recency()
                ),
            ),
            Some(Rule::Trusted) => (
                Why::Trusted,
                format!(
                    "the most trusted source ({})",
                    winner
                        .source
                        .pointer("/meta/source")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            ),
            None => (
                Why::Order,
                "tied on every rule; the first source by id".to_owned(),
            ),
        }
    }

    /// Every element's value, with why.
    pub fn choices<S: Borrow<Value>>(&self, sources: &[S]) -> Vec<Choice> {
        self.elements
            .iter()
            .filter_map(|(element, rules)| self.choose(element, rules, sources))
            .collect()
    }

    /// Composes the golden Patient of `enterprise` from its source Patients (each with its
    /// `id`: a stored id or a transaction placeholder), in a stable order (by id). The
    /// sources are borrowed (`&[&Value]` or `&[Value]`): a planner composes from bodies it keeps.
    pub fn compose<S: Borrow<Value>>(&self, enterprise: EnterpriseId, sources: &[S]) -> Value {
        let mut golden = json!({
            "resourceType": "Patient",
            "id": enterprise.to_string(),
            "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]},
        });
        let choices = self.choices(sources);
        if !choices.is_empty() {
            golden["extension"] = Value::Array(explanations(&choices));
        }
        for c in choices {
            golden[c.element.as_str()] = c.value;
        }
        // The enterprise identifier only: copying the sources' identifiers would make every
        // `Patient?identifier=` lookup (conditional writes from HL7 v2, If-None-Exist) find
        // the golden record beside its source. Source identifiers are cross-referenced by
        // PIXm instead.
        golden["identifier"] = json!([{
            "use": "official",
            "system": ENTERPRISE_ID_SYSTEM,
            "value": enterprise.to_string(),
        }]);
        let links: Vec<Value> = sources
            .iter()
            .filter_map(|p| p.borrow().get("id").and_then(Value::as_str))
            .map(|id| json!({"other": {"reference": source_reference(id)}, "type": "seealso"}))
            .collect();
        if !links.is_empty() {
            golden["link"] = Value::Array(links);
        }
        golden
    }
}

/// The choices as [`SURVIVORSHIP_EXTENSION`]s: one per source, rule and detail, listing its
/// elements in the order they were chosen. Most golden records have one source, which
/// offers every element: one extension instead of one per element keeps a million of them
/// about a gigabyte smaller, and that much less to build, write and log.
fn explanations(choices: &[Choice]) -> Vec<Value> {
    let mut groups: Vec<(&Choice, Vec<Value>)> = Vec::new();
    for c in choices {
        let element = json!({"url": "element", "valueString": c.element});
        let same = |(first, _): &&mut (&Choice, Vec<Value>)| {
            first.source == c.source && first.why == c.why && first.detail == c.detail
        };
        match groups.iter_mut().find(same) {
            Some((_, elements)) => elements.push(element),
            None => groups.push((c, vec![element])),
        }
    }
    groups
        .into_iter()
        .map(|(c, mut parts)| {
            parts.extend([
                json!({"url": "source", "valueReference": {"reference": source_reference(&c.source)}}),
                json!({"url": "rule", "valueCode": c.why.code()}),
                json!({"url": "detail", "valueString": c.detail}),
            ]);
            let mut extension = Map::new();
            extension.insert("url".into(), json!(SURVIVORSHIP_EXTENSION));
            extension.insert("extension".into(), Value::Array(parts));
            Value::Object(extension)
        })
        .collect()
}

/// The choices a composed golden record explains, one per element:
/// `(element, source reference, rule, detail)`.
pub fn explained(golden: &Value) -> Vec<(String, String, String, String)> {
    let text = |p: &Value| {
        p.get("valueString")
            .or_else(|| p.get("valueCode"))
            .or_else(|| p.pointer("/valueReference/reference"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    golden["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == SURVIVORSHIP_EXTENSION)
        .flat_map(|e| {
            let parts = e["extension"].as_array().map_or(&[][..], Vec::as_slice);
            let part = |name: &str| {
                parts
                    .iter()
                    .find(|p| p["url"] == name)
                    .map(text)
                    .unwrap_or_default()
            };
            let (source, rule, detail) = (part("source"), part("rule"), part("detail"));
            parts
                .iter()
                .filter(|p| p["url"] == "element")
                .map(move |p| (text(p), source.clone(), rule.clone(), detail.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, updated: &str, birth: &str) -> Value {
        json!({"resourceType": "Patient", "id": id,
            "meta": {"lastUpdated": updated}, "birthDate": birth})
    }

    fn why(g: &Value, element: &str) -> (String, String, String) {
        explained(g)
            .into_iter()
            .find(|(e, ..)| e == element)
            .map(|(_, s, r, d)| (s, r, d))
            .unwrap()
    }

    /// A golden record of one source says once where all its elements came from; of several
    /// sources, once per source, rule and detail. Both read back one choice per element.
    #[test]
    fn elements_chosen_alike_share_one_explanation() {
        let one = json!({"resourceType": "Patient", "id": "a", "gender": "female",
            "birthDate": "1980-04-07", "name": [{"family": "Koch", "given": ["Anna"]}]});
        let g = Survivorship::default().compose(EnterpriseId(3), &[one]);
        let extensions = g["extension"].as_array().unwrap();
        assert_eq!(extensions.len(), 1, "{g}");
        let explained = explained(&g);
        let elements: Vec<&str> = explained.iter().map(|(e, ..)| e.as_str()).collect();
        assert_eq!(elements, ["name", "gender", "birthDate"]);
        for (_, source, rule, detail) in &explained {
            assert_eq!(
                (source.as_str(), rule.as_str(), detail.as_str()),
                ("Patient/a", "unanimous", "the only source offering it")
            );
        }

        let mut sources = vec![
            source("a", "2024-01-01T00:00:00Z", "1980-04-07"),
            source("b", "2024-02-01T00:00:00Z", "1980-04-07"),
            source("c", "2024-03-01T00:00:00Z", "1980-07-04"),
        ];
        sources[2]["gender"] = json!("male");
        let g = Survivorship::default().compose(EnterpriseId(4), &sources);
        assert_eq!(g["extension"].as_array().unwrap().len(), 2, "{g}");
        assert_eq!(why(&g, "birthDate").1, "agreement");
        assert_eq!(why(&g, "gender").0, "Patient/c");
    }

    /// Golden records composed before the grouping (one extension per element) read the same.
    #[test]
    fn an_explanation_per_element_still_reads() {
        let part = |url: &str, key: &str, value: Value| json!({"url": url, key: value});
        let g = json!({"extension": [
            {"url": SURVIVORSHIP_EXTENSION, "extension": [
                part("element", "valueString", json!("birthDate")),
                part("source", "valueReference", json!({"reference": "Patient/b"})),
                part("rule", "valueCode", json!("agreement")),
                part("detail", "valueString", json!("2 of 3 sources agree")),
            ]},
            {"url": SURVIVORSHIP_EXTENSION, "extension": [
                part("element", "valueString", json!("gender")),
                part("source", "valueReference", json!({"reference": "Patient/c"})),
                part("rule", "valueCode", json!("unanimous")),
                part("detail", "valueString", json!("the only source offering it")),
            ]},
        ]});
        assert_eq!(
            why(&g, "birthDate"),
            (
                "Patient/b".into(),
                "agreement".into(),
                "2 of 3 sources agree".into()
            )
        );
        assert_eq!(why(&g, "gender").0, "Patient/c");
    }

    #[test]
    fn agreement_beats_recency() {
        // Two of four sources agree; the most recent one says something else.
        let sources = [
            source("a", "2024-01-01T00:00:00Z", "1980-04-07"),
            source("b", "2024-02-01T00:00:00Z", "1980-04-07"),
            source("c", "2024-03-01T00:00:00Z", "1980-07-04"),
            source("d", "2024-04-01T00:00:00Z", "1981-01-01"),
        ];
        let g = Survivorship::default().compose(EnterpriseId(7), &sources);
        assert_eq!(g["birthDate"], "1980-04-07");
        let (src, rule, detail) = why(&g, "birthDate");
        assert_eq!((src.as_str(), rule.as_str()), ("Patient/b", "agreement"));
        assert!(detail.starts_with("2 of 4 sources agree"), "{detail}");
    }

    #[test]
    fn quality_beats_recency_when_agreement_ties() {
        let sources = [
            source("a", "2024-01-01T00:00:00Z", "1980-04-07"),
            source("b", "2024-05-01T00:00:00Z", "1980-04"),
            source("c", "2024-06-01T00:00:00Z", "1980-02-30"),
        ];
        let g = Survivorship::default().compose(EnterpriseId(1), &sources);
        assert_eq!(g["birthDate"], "1980-04-07");
        assert_eq!(why(&g, "birthDate").1, "quality");
        assert_eq!(date_quality("1980-02-30"), 0);
        assert_eq!(date_quality("2000-02-29"), 3);
        assert_eq!(date_quality("1900-02-29"), 0);
        assert_eq!(date_quality("1980-04"), 2);
        assert_eq!(date_quality("1980-04-07T10:00:00Z"), 4);
    }

    #[test]
    fn recency_breaks_the_remaining_ties_and_order_the_last() {
        let sources = [
            source("a", "2024-01-01T00:00:00Z", "1980-04-07"),
            source("b", "2024-05-01T00:00:00Z", "1980-07-04"),
        ];
        let g = Survivorship::default().compose(EnterpriseId(1), &sources);
        assert_eq!(g["birthDate"], "1980-07-04");
        assert_eq!(why(&g, "birthDate").1, "recency");
        let same_time = [
            source("a", "2024-01-01T00:00:00Z", "1980-04-07"),
            source("b", "2024-01-01T00:00:00Z", "1980-07-04"),
        ];
        let g = Survivorship::default().compose(EnterpriseId(1), &same_time);
        assert_eq!(g["birthDate"], "1980-04-07");
        assert_eq!(why(&g, "birthDate").1, "order");
    }

    #[test]
    fn names_agree_whatever_their_case_use_and_order() {
        let mut a = source("a", "2024-01-01T00:00:00Z", "1980-04-07");
        a["name"] = json!([{"use": "official", "family": "Smith", "given": ["Robert"]},
                           {"use": "maiden", "family": "Jones"}]);
        let mut b = source("b", "2024-02-01T00:00:00Z", "1980-04-07");
        b["name"] = json!([{"family": "Jones"}, {"family": "SMITH ", "given": ["robert"]}]);
        let mut c = source("c", "2024-03-01T00:00:00Z", "1980-04-07");
        c["name"] = json!([{"family": "Smith", "given": ["Robert", "James"]}]);
        let g = Survivorship::default().compose(EnterpriseId(1), &[a, b, c]);
        let (src, rule, _) = why(&g, "name");
        assert_eq!((src.as_str(), rule.as_str()), ("Patient/a", "agreement"));
        assert_eq!(g["name"][0]["given"][0], "Robert");
        assert_eq!(why(&g, "birthDate").1, "unanimous");
    }

    #[test]
    fn trusted_sources_when_the_policy_asks() {
        let mut a = source("a", "2024-05-01T00:00:00Z", "1980-07-04");
        a["meta"]["source"] = json!("urn:clinic");
        let mut b = source("b", "2020-01-01T00:00:00Z", "1980-04-07");
        b["meta"]["source"] = json!("urn:hospital");
        let policy = Survivorship {
            trusted_sources: vec!["urn:hospital".into()],
            elements: vec![("birthDate".into(), vec![Rule::Trusted, Rule::Recency])],
        };
        let g = policy.compose(EnterpriseId(7), &[a, b]);
        assert_eq!(g["id"], "E0000000007");
        assert_eq!(g["birthDate"], "1980-04-07");
        assert_eq!(why(&g, "birthDate").1, "trusted");
        assert_eq!(g["identifier"][0]["value"], "E0000000007");
        assert_eq!(g["identifier"].as_array().unwrap().len(), 1);
        assert_eq!(g["link"][1]["other"]["reference"], "Patient/b");
        assert_eq!(g["meta"]["tag"][0]["code"], "golden");
    }

    #[test]
    fn repetitions_are_bounded() {
        let mut a = source("a", "2024-01-01T00:00:00Z", "1980-04-07");
        let names: Vec<Value> = (0..10_000)
            .map(|i| json!({"use": "old", "family": format!("N{i}")}))
            .chain([json!({"use": "official", "family": "Current"})])
            .collect();
        a["name"] = Value::Array(names);
        let g = Survivorship::default().compose(EnterpriseId(1), &[a]);
        assert_eq!(g["name"].as_array().unwrap().len(), MAX_REPEATS);
        assert_eq!(g["name"][0]["family"], "Current");
    }
}
