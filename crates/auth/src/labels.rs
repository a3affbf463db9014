//! Sensitivity labels assigned at write time: a rule table maps clinical codes (ICD-10,
//! SNOMED CT, LOINC, RxNorm, ...) to confidentiality labels of HL7's
//! `v3-ActCode` sensitivity policies (mental health, HIV, reproductive health, substance
//! use, ...), so that consent and `_security` searches work on data that arrives unlabelled,
//! as HL7 v2 feeds and Synthea exports do.
//!
//! [`Labeler::labels_for`] reads the codes of a resource's coded elements (its `code`,
//! `valueCodeableConcept`, `reasonCode`, `medicationCodeableConcept`, `category`, ...) and
//! returns the labels its rules give, beside those already in `meta.security`.
//! [`Labeler::apply`] adds the missing ones to the resource. A rule names a code system and
//! either one code or a code prefix (`F1` matches `F10`..`F19.9`); the table is JSON, so a
//! network can ship its own ([`Labeler::from_json`]); [`Labeler::default`] holds a small
//! table of well-known codes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

/// The code system of the sensitivity labels.
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// ICD-10-CM.
pub const ICD10_CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
/// ICD-10 (WHO).
pub const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
/// SNOMED CT.
pub const SNOMED: &str = "http://snomed.info/sct";
/// LOINC.
pub const LOINC: &str = "http://loinc.org";

/// A security label (`meta.security` coding).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Label {
    /// The label's code system.
    pub system: String,
    /// The label's code.
    pub code: String,
}

impl Label {
    /// A `v3-ActCode` label.
    pub fn act(code: &str) -> Label {
        Label {
            system: ACT_CODE.to_owned(),
            code: code.to_owned(),
        }
    }
}

/// One rule: codes of `system` equal to `code`, or starting with `prefix`, get `label`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The code system the rule reads.
    pub system: String,
    /// One code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A code prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The label's code (system `v3-ActCode` unless `label_system` says otherwise).
    pub label: String,
    /// The label's system, when not `v3-ActCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_system: Option<String>,
    /// What the codes are, for the reader of the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A rule table that cannot be used.
#[derive(Debug, Error)]
pub enum LabelError {
    /// Not JSON of the table's shape.
    #[error("label rules: {0}")]
    Json(#[from] serde_json::Error),
    /// A rule with neither or both of `code` and `prefix`.
    #[error("label rule {0}: give exactly one of `code` and `prefix`")]
    Rule(usize),
}

/// The rule table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeler {
    rules: Vec<Rule>,
}

/// The elements whose codes the rules read, by their JSON names, at any depth of the
/// resource (a Condition's `code`, an Observation's `valueCodeableConcept` or a component's,
/// a MedicationRequest's `medicationCodeableConcept`, a procedure's `reasonCode`).
const CODED: &[&str] = &[
    "code",
    "valueCodeableConcept",
    "reasonCode",
    "medicationCodeableConcept",
    "category",
    "type",
    "vaccineCode",
];

/// The default rule table, `crates/auth/labels/default.json` (documented in
/// `docs/security.md`, "Sensitivity labels").
pub const DEFAULT_RULES: &str = include_str!("../labels/default.json");

impl Default for Labeler {
    /// Well-known codes ([`DEFAULT_RULES`]): ICD-10 mental and behavioural disorders (F,
    /// substance use F10–F19 as ETH), HIV disease (B20–B24, Z21), pregnancy-termination and
    /// contraception codes (O00–O08, Z30) and a few SNOMED CT and LOINC codes for the same
    /// classes.
    fn default() -> Self {
        Labeler::from_json(DEFAULT_RULES).expect("the default label table is valid")
    }
}

impl Labeler {
    /// A table from its rules.
    pub fn new(rules: Vec<Rule>) -> Result<Labeler, LabelError> {
        for (n, rule) in rules.iter().enumerate() {
            if rule.code.is_some() == rule.prefix.is_some() {
                return Err(LabelError::Rule(n));
            }
        }
        Ok(Labeler { rules })
    }

    /// A table from JSON: `[{"system": ..., "code"|"prefix": ..., "label": ...}, ...]`.
    pub fn from_json(text: &str) -> Result<Labeler, LabelError> {
        Labeler::new(serde_json::from_str(text)?)
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn label_of(&self, system: &str, code: &str, out: &mut BTreeSet<Label>) {
        for r in &self.rules {
            let hit = r.system == system
                && (r.code.as_deref() == Some(code)
                    || r.prefix.as_deref().is_some_and(|p| code.starts_with(p)));
            if hit {
                out.insert(Label {
                    system: r
                        .label_system
                        .clone()
                        .unwrap_or_else(|| ACT_CODE.to_owned()),
                    code: r.label.clone(),
                });
            }
        }
    }

    /// The labels the rules give `resource` (not those it already carries).
    pub fn labels_for(&self, resource: &Value) -> BTreeSet<Label> {
        let mut out = BTreeSet::new();
        self.walk(resource, &mut out, 0);
        out
    }

    fn walk(&self, v: &Value, out: &mut BTreeSet<Label>, depth: usize) {
        // Resources are shallow; a hostile one is not walked to the bottom.
        if depth > 16 {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if k == "meta" || k == "contained" {
                        continue;
                    }
                    if CODED.contains(&k.as_str()) {
                        self.codings(child, out);
                    }
                    self.walk(child, out, depth + 1);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, out, depth + 1);
                }
            }
            _ => {}
        }
    }

    /// The codings of a CodeableConcept (or an array of them).
    fn codings(&self, v: &Value, out: &mut BTreeSet<Label>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.codings(i, out)),
            Value::Object(cc) => {
                for coding in cc
                    .get("coding")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let (Some(system), Some(code)) = (
                        coding.get("system").and_then(Value::as_str),
                        coding.get("code").and_then(Value::as_str),
                    ) {
                        self.label_of(system, code, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// Adds to `meta.security` the labels the rules give and the resource lacks; returns
    /// those added.
    pub fn apply(&self, resource: &mut Value) -> BTreeSet<Label> {
        let mut labels = self.labels_for(resource);
        if labels.is_empty() || !resource.is_object() {
            return BTreeSet::new();
        }
        let present: BTreeSet<Label> = security_labels(resource);
        labels.retain(|l| !present.contains(l));
        if labels.is_empty() {
            return labels;
        }
        let meta = resource
            .as_object_mut()
            .map(|o| o.entry("meta").or_insert_with(|| json!({})))
            .filter(|m| m.is_object());
        let Some(meta) = meta else {
            return BTreeSet::new();
        };
        let security = meta
            .as_object_mut()
            .map(|m| m.entry("security").or_insert_with(|| json!([])));
        match security.and_then(Value::as_array_mut) {
            Some(array) => {
                for l in &labels {
                    array.push(json!({"system": l.system, "code": l.code}));
                }
                labels
            }
            None => BTreeSet::new(),
        }
    }
}

/// The labels in a resource's `meta.security`.
pub fn security_labels(resource: &Value) -> BTreeSet<Label> {
    resource
        .pointer("/meta/security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Label {
                system: c.get("system")?.as_str()?.to_owned(),
                code: c.get("code")?.as_str()?.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_coded_in_icd10_gets_its_class() {
        let mut c = json!({"resourceType": "Condition", "code": {"coding": [
            {"system": ICD10_CM, "code": "F11.20"}]}});
        let added = Labeler::default().apply(&mut c);
        assert_eq!(added, BTreeSet::from([Label::act("ETH")]));
        assert_eq!(c["meta"]["security"][0]["code"], "ETH");
        // Applying again adds nothing.
        assert!(Labeler::default().apply(&mut c).is_empty());
        assert_eq!(c["meta"]["security"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn values_and_components_are_read_and_others_are_not_labelled() {
        let lab = json!({"resourceType": "Observation",
            "code": {"coding": [{"system": LOINC, "code": "75622-1"}]},
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "260385009"}]}});
        assert_eq!(
            Labeler::default().labels_for(&lab),
            BTreeSet::from([Label::act("HIV")])
        );
        let plain = json!({"resourceType": "Observation",
            "code": {"coding": [{"system": LOINC, "code": "29463-7"}]}});
        assert!(Labeler::default().labels_for(&plain).is_empty());
        // A code of another system with the same digits is not the rule's.
        let other = json!({"resourceType": "Condition", "code": {"coding": [
            {"system": "urn:other", "code": "F32"}]}});
        assert!(Labeler::default().labels_for(&other).is_empty());
    }

    #[test]
    fn a_table_from_json_is_checked() {
        let t = Labeler::from_json(r#"[{"system": "urn:x", "prefix": "9", "label": "R", "label_system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"}]"#)
            .expect("table");
        let r = json!({"resourceType": "Procedure", "reasonCode": [{"coding": [{"system": "urn:x", "code": "912"}]}]});
        let l = t.labels_for(&r);
        assert_eq!(l.iter().next().map(|l| l.code.as_str()), Some("R"));
        assert!(matches!(
            Labeler::from_json(r#"[{"system": "urn:x", "label": "R"}]"#),
            Err(LabelError::Rule(0))
        ));
    }
}
