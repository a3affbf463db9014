//! The FHIR resources the EMPI writes: golden `Patient`s (with one `link` per source carrying
//! how and why it was linked), review `Task`s and `AuditEvent`s of manual decisions; and the
//! parsing of a stored golden record back into its membership.

use std::collections::BTreeMap;

use empi::EnterpriseId;
use empi::golden::{GOLDEN_TAG_CODE, GOLDEN_TAG_SYSTEM};
use serde_json::{Value, json};
use store::{Actor, RequestContext};

/// Code system of the EMPI's own codes (golden tag, review task, audit subtypes).
pub const EMPI_SYSTEM: &str = GOLDEN_TAG_SYSTEM;
/// Extension on `Patient.link` of a golden record: how the source was linked.
pub const LINK_EXTENSION: &str = "https://renkei.dev/fhir/StructureDefinition/empi-link";
/// Extension on a review `Task.input`: the candidate's match probability.
pub const SCORE_EXTENSION: &str = "https://renkei.dev/fhir/StructureDefinition/match-score";
/// Extension holding a score's per-field explanation (JSON text).
pub const EXPLANATION_EXTENSION: &str =
    "https://renkei.dev/fhir/StructureDefinition/match-explanation";
/// `Task.code` of a review-queue item.
pub const REVIEW_CODE: &str = "review";

/// Who decided a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The matcher, from the scores; re-decided when the source changes while alone.
    Auto,
    /// A person (or a sender's merge message); never undone by an automatic pass.
    Manual,
}

impl Basis {
    fn code(self) -> &'static str {
        match self {
            Basis::Auto => "auto",
            Basis::Manual => "manual",
        }
    }
}

/// One source's link to its golden record.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkMeta {
    pub basis: Basis,
    /// `linked`, `new`, `review` (automatic) or the manual action (`link`, `separate`, `merge`).
    pub outcome: String,
    /// Match probability against the identity it joined, when it joined by a score.
    pub score: Option<f64>,
    /// The per-field explanation of that score (JSON text).
    pub explanation: Option<String>,
    /// Why a person decided it.
    pub reason: Option<String>,
}

impl LinkMeta {
    /// A link the matcher made without a score to show (`new`, `review`).
    pub fn auto(outcome: &str) -> Self {
        LinkMeta {
            basis: Basis::Auto,
            outcome: outcome.into(),
            score: None,
            explanation: None,
            reason: None,
        }
    }

    pub fn manual(outcome: &str, reason: &str) -> Self {
        LinkMeta {
            basis: Basis::Manual,
            outcome: outcome.into(),
            score: None,
            explanation: None,
            reason: Some(reason.into()),
        }
    }
}

/// Membership of one golden record as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenState {
    pub version: u64,
    /// `false` once merged into another identity (`replaced-by`).
    pub active: bool,
    /// Source Patient id -> link.
    pub links: BTreeMap<String, LinkMeta>,
}

/// `E0000000042` -> `EnterpriseId(42)`.
pub fn enterprise_of_id(id: &str) -> Option<EnterpriseId> {
    let digits = id.strip_prefix('E')?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(EnterpriseId)
}

/// True for a Patient carrying the golden tag.
pub fn is_golden(patient: &Value) -> bool {
    patient
        .pointer("/meta/tag")
        .and_then(Value::as_array)
        .is_some_and(|tags| {
            tags.iter()
                .any(|t| t["system"] == GOLDEN_TAG_SYSTEM && t["code"] == GOLDEN_TAG_CODE)
        })
}

/// The reference to a source: `Patient/id`, or a transaction's `urn:uuid:` placeholder.
pub fn source_reference(source: &str) -> String {
    // A placeholder is the entry's fullUrl (`urn:uuid:..`, or an absolute URL), which the
    // store rewrites to the id it assigns; a plain id is a stored Patient.
    if source.contains(':') || source.contains('/') {
        source.to_owned()
    } else {
        format!("Patient/{source}")
    }
}

/// `Patient/abc` (or a relative URL ending so) -> `abc`.
pub fn patient_id_of(reference: &str) -> Option<&str> {
    let rest = reference.rsplit_once("Patient/")?.1;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// Reads a stored golden Patient's membership.
pub fn parse_golden(version: u64, body: &Value) -> GoldenState {
    let mut links = BTreeMap::new();
    for link in body["link"].as_array().into_iter().flatten() {
        if link["type"] != "seealso" {
            continue;
        }
        let Some(id) = link["other"]["reference"].as_str().and_then(patient_id_of) else {
            continue;
        };
        let ext = link["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["url"] == LINK_EXTENSION);
        let part = |name: &str| {
            ext.and_then(|e| e["extension"].as_array())
                .into_iter()
                .flatten()
                .find(|p| p["url"] == name)
        };
        let meta = LinkMeta {
            basis: match part("basis").and_then(|p| p["valueCode"].as_str()) {
                Some("manual") => Basis::Manual,
                _ => Basis::Auto,
            },
            outcome: part("outcome")
                .and_then(|p| p["valueCode"].as_str())
                .unwrap_or("linked")
                .to_owned(),
            score: part("score").and_then(|p| decimal(&p["valueDecimal"])),
            explanation: part("explanation")
                .and_then(|p| p["valueString"].as_str())
                .map(str::to_owned),
            reason: part("reason")
                .and_then(|p| p["valueString"].as_str())
                .map(str::to_owned),
        };
        links.insert(id.to_owned(), meta);
    }
    GoldenState {
        version,
        active: body["active"].as_bool() != Some(false),
        links,
    }
}

fn decimal(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.to_string().parse().ok())
}

/// A probability as a FHIR decimal (6 places).
pub fn probability_decimal(p: f64) -> Value {
    let rounded = (p * 1e6).round() / 1e6;
    serde_json::from_str(&format!("{rounded}")).unwrap_or(Value::Null)
}

fn link_json(source: &str, meta: &LinkMeta) -> Value {
    let mut parts = vec![
        json!({"url": "basis", "valueCode": meta.basis.code()}),
        json!({"url": "outcome", "valueCode": meta.outcome}),
    ];
    if let Some(score) = meta.score {
        parts.push(json!({"url": "score", "valueDecimal": probability_decimal(score)}));
    }
    if let Some(explanation) = &meta.explanation {
        parts.push(json!({"url": "explanation", "valueString": explanation}));
    }
    if let Some(reason) = &meta.reason {
        parts.push(json!({"url": "reason", "valueString": reason}));
    }
    json!({
        "extension": [{"url": LINK_EXTENSION, "extension": parts}],
        "other": {"reference": source_reference(source)},
        "type": "seealso",
    })
}

/// Sets a composed golden record's links from its membership (the composer's own links name
/// sources by their body ids, which a transaction placeholder does not have yet).
pub fn with_links(mut golden: Value, links: &BTreeMap<String, LinkMeta>) -> Value {
    golden["active"] = json!(true);
    golden["link"] = Value::Array(links.iter().map(|(s, m)| link_json(s, m)).collect());
    golden
}

/// A golden record retired by a merge: inactive, `replaced-by` the survivor, no sources.
pub fn retired_golden(enterprise: EnterpriseId, survivor: EnterpriseId) -> Value {
    json!({
        "resourceType": "Patient",
        "id": enterprise.to_string(),
        "meta": {"tag": [{"system": GOLDEN_TAG_SYSTEM, "code": GOLDEN_TAG_CODE}]},
        "identifier": [{"use": "old", "system": empi::golden::ENTERPRISE_ID_SYSTEM,
                        "value": enterprise.to_string()}],
        "active": false,
        "link": [{"other": {"reference": format!("Patient/{survivor}")}, "type": "replaced-by"}],
    })
}

/// One probable candidate of a review item.
#[derive(Debug, Clone)]
pub struct ReviewCandidate {
    pub enterprise: EnterpriseId,
    pub probability: f64,
    pub explanation: String,
}

/// A review-queue item: a `Task` asking a person whether `source` is one of the candidates.
pub fn review_task(source: &str, candidates: &[ReviewCandidate], now: &str) -> Value {
    let inputs: Vec<Value> = candidates
        .iter()
        .map(|c| {
            json!({
                "extension": [
                    {"url": SCORE_EXTENSION, "valueDecimal": probability_decimal(c.probability)},
                    {"url": EXPLANATION_EXTENSION, "valueString": c.explanation},
                ],
                "type": {"coding": [{"system": EMPI_SYSTEM, "code": "candidate"}]},
                "valueReference": {"reference": format!("Patient/{}", c.enterprise)},
            })
        })
        .collect();
    let mut task = json!({
        "resourceType": "Task",
        "status": "requested",
        "intent": "proposal",
        "priority": "routine",
        "code": {"coding": [{"system": EMPI_SYSTEM, "code": REVIEW_CODE,
                             "display": "Review a possible patient match"}]},
        "description": "The matcher found probable but uncertain matches for this patient: \
                        link it to one of the candidate identities, or keep it separate.",
        "focus": {"reference": source_reference(source)},
        "for": {"reference": source_reference(source)},
        "authoredOn": now,
        "lastModified": now,
    });
    if !inputs.is_empty() {
        task["input"] = Value::Array(inputs);
    }
    task
}

/// A review item closed by a decision.
pub fn closed_task(mut task: Value, decision: &str, golden: EnterpriseId, now: &str) -> Value {
    task["status"] = json!("completed");
    task["lastModified"] = json!(now);
    task["businessStatus"] = json!({"text": decision});
    task["output"] = json!([{
        "type": {"coding": [{"system": EMPI_SYSTEM, "code": decision}]},
        "valueReference": {"reference": format!("Patient/{golden}")},
    }]);
    task
}

fn actor_display(ctx: &RequestContext) -> String {
    match &ctx.actor {
        Actor::System => "system".into(),
        Actor::User(u) => format!("user {u}"),
        Actor::Client(c) => format!("client {c}"),
        Actor::Node(n) => format!("node {n}"),
    }
}

/// The audit record of a manual EMPI decision, written in the decision's transaction.
pub fn audit_event(
    ctx: &RequestContext,
    action: &str,
    reason: &str,
    entities: &[String],
    now: &str,
) -> Value {
    let (role, display) = match &ctx.actor {
        Actor::User(_) => ("humanuser", "human user"),
        Actor::Node(_) => ("datacollector", "data collector"),
        Actor::System | Actor::Client(_) => ("dataprocessor", "data processor"),
    };
    let mut agent = json!({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": role, "display": display}]},
        "who": {"display": actor_display(ctx)},
        "requestor": true});
    if let Some(pou) = &ctx.purpose_of_use {
        agent["purposeOfUse"] = json!([{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": pou}]}]);
    }
    json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": EMPI_SYSTEM, "code": action}],
        "action": "U",
        "recorded": now,
        "outcome": "0",
        "outcomeDesc": reason,
        "agent": [agent],
        "source": {"observer": {"display": "renkei empi"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                             "code": "4", "display": "Application Server"}]},
        "entity": entities.iter().map(|r| json!({
            "what": {"reference": r},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "1", "display": "Person"},
        })).collect::<Vec<_>>(),
        "extension": [{"url": "https://renkei.dev/fhir/StructureDefinition/request-id",
                       "valueString": ctx.request_id}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_links_round_trip() {
        let mut links = BTreeMap::new();
        links.insert(
            "a".to_owned(),
            LinkMeta {
                basis: Basis::Auto,
                outcome: "linked".into(),
                score: Some(0.999_87),
                explanation: Some("{}".into()),
                reason: None,
            },
        );
        links.insert("b".to_owned(), LinkMeta::manual("link", "same person"));
        let g = with_links(
            json!({"resourceType": "Patient", "id": "E0000000001"}),
            &links,
        );
        let parsed = parse_golden(3, &g);
        assert_eq!(parsed.links, links);
        assert!(parsed.active);
        assert_eq!(enterprise_of_id("E0000000001"), Some(EnterpriseId(1)));
        assert_eq!(enterprise_of_id("E1"), None);
        assert_eq!(patient_id_of("http://x/fhir/Patient/abc"), Some("abc"));
    }
}
