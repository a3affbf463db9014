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
/// Tag system of a review `Task`'s candidates: one `meta.tag` per candidate golden record
/// (code = its id), so that the open tasks naming an identity are one indexed search away
/// (`Task.input` has no search parameter) when that identity is retired.
pub const CANDIDATE_TAG_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/empi-candidate";

/// Who decided a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinkMeta {
    pub basis: Basis,
    /// `linked`, `new`, `review`, `merged` (automatic: its identity was joined to this one by a
    /// later source matching both) or the manual action (`link`, `separate`, `merge`).
    pub outcome: String,
    /// Match probability against the identity it joined, when it joined by a score.
    pub score: Option<f64>,
    /// The per-field explanation of that score (JSON text).
    pub explanation: Option<String>,
    /// Why a person decided it, or which identity an automatic merge joined.
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GoldenState {
    pub version: u64,
    /// `false` once retired: merged into another identity, or deleted.
    pub active: bool,
    /// The identity it was merged into (`link` of type `replaced-by`).
    pub replaced_by: Option<EnterpriseId>,
    /// Deleted (its last source left or was deleted).
    pub deleted: bool,
    /// Source Patient id -> link.
    pub links: BTreeMap<String, LinkMeta>,
}

impl GoldenState {
    /// The state of a deleted golden record.
    pub fn deleted(version: u64) -> Self {
        GoldenState {
            version,
            active: false,
            replaced_by: None,
            deleted: true,
            links: BTreeMap::new(),
        }
    }

    /// Why a retired golden record is retired, in words (`None` while active).
    pub fn retirement(&self) -> Option<String> {
        if self.active {
            return None;
        }
        Some(match (self.replaced_by, self.deleted) {
            (Some(survivor), _) => format!("merged into Patient/{survivor}"),
            (None, true) => "deleted: none of its sources is left".to_owned(),
            (None, false) => "inactive".to_owned(),
        })
    }
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

/// The reference to a source: `Patient/id`, or a transaction's `urn:uuid:` placeholder (the
/// entry's fullUrl, which the store rewrites to the id it assigns).
pub fn source_reference(source: &str) -> String {
    empi::golden::source_reference(source)
}

/// `Patient/abc` (or a relative URL ending so) -> `abc`.
pub fn patient_id_of(reference: &str) -> Option<&str> {
    let rest = reference.rsplit_once("Patient/")?.1;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The reference of the Patient this one was merged into (`link` of type `replaced-by`), as
/// written: a retired golden record's survivor, or the Patient a sender merged a source into.
pub fn replaced_by_reference(body: &Value) -> Option<&str> {
    body["link"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["type"] == "replaced-by")
        .find_map(|l| l["other"]["reference"].as_str())
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
    let replaced_by = replaced_by_reference(body)
        .and_then(patient_id_of)
        .and_then(enterprise_of_id);
    GoldenState {
        version,
        active: body["active"].as_bool() != Some(false),
        replaced_by,
        deleted: false,
        links,
    }
}

fn decimal(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.to_string().parse().ok())
}

/// A golden record's links as reading them back from its stored JSON gives them
/// ([`parse_golden`] of what [`with_links`] wrote): scores as the decimals written.
pub fn stored_links(links: &BTreeMap<String, LinkMeta>) -> BTreeMap<String, LinkMeta> {
    links
        .iter()
        .map(|(source, meta)| {
            let mut meta = meta.clone();
            meta.score = meta.score.and_then(|p| decimal(&probability_decimal(p)));
            (source.clone(), meta)
        })
        .collect()
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

/// The candidates of a review item: one per identity (its best-scored record's), best first.
pub fn distinct_candidates(candidates: Vec<ReviewCandidate>) -> Vec<ReviewCandidate> {
    let mut best: Vec<ReviewCandidate> = Vec::with_capacity(candidates.len());
    for c in candidates {
        match best.iter_mut().find(|b| b.enterprise == c.enterprise) {
            Some(b) if b.probability < c.probability => *b = c,
            Some(_) => {}
            None => best.push(c),
        }
    }
    best.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    best
}

fn candidate_input(c: &ReviewCandidate) -> Value {
    json!({
        "extension": [
            {"url": SCORE_EXTENSION, "valueDecimal": probability_decimal(c.probability)},
            {"url": EXPLANATION_EXTENSION, "valueString": c.explanation},
        ],
        "type": {"coding": [{"system": EMPI_SYSTEM, "code": "candidate"}]},
        "valueReference": {"reference": format!("Patient/{}", c.enterprise)},
    })
}

/// The golden record a review task's input names.
fn input_candidate(input: &Value) -> Option<EnterpriseId> {
    input["valueReference"]["reference"]
        .as_str()
        .and_then(patient_id_of)
        .and_then(enterprise_of_id)
}

/// The candidate identities of a review task, in its order.
pub fn task_candidates(task: &Value) -> Vec<EnterpriseId> {
    task["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(input_candidate)
        .collect()
}

/// Sets a review task's candidate tags from its inputs (one tag per distinct candidate).
fn tag_candidates(task: &mut Value) {
    let mut candidates = task_candidates(task);
    candidates.sort();
    candidates.dedup();
    let mut tags: Vec<Value> = task["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["system"] != CANDIDATE_TAG_SYSTEM)
        .cloned()
        .collect();
    tags.extend(
        candidates
            .iter()
            .map(|e| json!({"system": CANDIDATE_TAG_SYSTEM, "code": e.to_string()})),
    );
    if !task["meta"].is_object() {
        task["meta"] = json!({});
    }
    task["meta"]["tag"] = Value::Array(tags);
}

/// A review-queue item: a `Task` asking a person whether `source` is one of the candidates
/// (one input per candidate identity, however many of its records matched).
pub fn review_task(source: &str, candidates: &[ReviewCandidate], now: &str) -> Value {
    let inputs: Vec<Value> = distinct_candidates(candidates.to_vec())
        .iter()
        .map(candidate_input)
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
    tag_candidates(&mut task);
    task
}

/// An open review task after some identities were retired: `gone` maps each retired identity
/// to the one it was merged into (`None`: deleted). A retired candidate is replaced by its
/// survivor (unless the task already lists it, or it is the task's own identity `own`, whose
/// question the merge answered), or dropped. A task left without a live candidate is
/// cancelled, saying why. Returns `None` when nothing changes.
pub fn retire_candidates(
    task: &Value,
    gone: &BTreeMap<EnterpriseId, Option<EnterpriseId>>,
    own: Option<EnterpriseId>,
    now: &str,
) -> Option<Value> {
    let listed = task_candidates(task);
    if !listed.iter().any(|e| gone.contains_key(e)) {
        return None;
    }
    // Follow merges to the identity that is live now (a chain of merges in one plan).
    let live = |mut e: EnterpriseId| {
        for _ in 0..gone.len() + 1 {
            match gone.get(&e) {
                Some(Some(next)) => e = *next,
                Some(None) => return None,
                None => return Some(e),
            }
        }
        None
    };
    let mut kept: Vec<EnterpriseId> = Vec::new();
    let mut inputs = Vec::new();
    let mut notes = Vec::new();
    for input in task["input"].as_array().into_iter().flatten() {
        let Some(e) = input_candidate(input) else {
            inputs.push(input.clone());
            continue;
        };
        match live(e) {
            Some(now_e) if Some(now_e) == own => {
                notes.push(format!(
                    "Patient/{e} was merged into this patient's own identity"
                ));
            }
            Some(now_e) if kept.contains(&now_e) => {
                notes.push(format!(
                    "Patient/{e} was merged into Patient/{now_e}, already listed"
                ));
            }
            Some(now_e) => {
                kept.push(now_e);
                let mut input = input.clone();
                if now_e != e {
                    input["valueReference"]["reference"] = json!(format!("Patient/{now_e}"));
                    notes.push(format!("Patient/{e} was merged into Patient/{now_e}"));
                }
                inputs.push(input);
            }
            None => notes.push(format!("Patient/{e} was deleted")),
        }
    }
    let mut task = task.clone();
    task["lastModified"] = json!(now);
    if inputs.is_empty() {
        task.as_object_mut().map(|o| o.remove("input"));
    } else {
        task["input"] = Value::Array(inputs);
    }
    let note = json!({"time": now, "text": format!("Candidates retired: {}.", notes.join("; "))});
    match task["note"].as_array_mut() {
        Some(n) => n.push(note),
        None => task["note"] = json!([note]),
    }
    if kept.is_empty() {
        task["status"] = json!("cancelled");
        task["statusReason"] = json!({"text": format!(
            "no live candidate is left: {}", notes.join("; "))});
    }
    tag_candidates(&mut task);
    Some(task)
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

    /// The store expands `:mdm` and a person's `$everything` from the golden records it
    /// recognises by this tag: the one the EMPI writes.
    #[test]
    fn the_store_knows_golden_records_by_the_tag_written_here() {
        assert_eq!(store::search::GOLDEN_TAG_SYSTEM, GOLDEN_TAG_SYSTEM);
        assert_eq!(store::search::GOLDEN_TAG_CODE, GOLDEN_TAG_CODE);
    }

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
