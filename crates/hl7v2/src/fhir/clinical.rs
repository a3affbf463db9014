//! Patient-level clinical records: AL1 (any message) and IAM (ADT^A60, SS-MIX2 ADT-61) ->
//! AllergyIntolerance; VXU^V04 RXA -> Immunization; PPR PRB (PC1, and JAHIS ZD1 problems,
//! SS-MIX2 PPR-01) -> Condition.

use serde_json::{Map, Value, json};

use super::adt;
use super::dt::{self, TimeKind, codeable_concept};
use super::{Cx, MappingError, put};
use crate::message::Segment;
use crate::structure::Structured;

fn allergy_category(code: &str) -> Option<&'static str> {
    match code {
        "DA" | "MA" => Some("medication"),
        "FA" => Some("food"),
        "EA" | "AA" | "PA" | "LA" => Some("environment"),
        _ => None,
    }
}

fn criticality(code: &str) -> Option<&'static str> {
    match code {
        "SV" => Some("high"),
        "MO" | "MI" => Some("low"),
        "U" => Some("unable-to-assess"),
        _ => None,
    }
}

fn allergy(
    cx: &mut Cx<'_>,
    seg: &Segment,
    (type_f, code_f, severity_f, reaction_f, onset_f): (usize, usize, usize, usize, usize),
    unique_id: Option<&str>,
    deleted: bool,
) -> Result<(), MappingError> {
    let code = codeable_concept(seg.rep(code_f)).ok_or_else(|| MappingError::MissingField {
        location: cx.location(seg, code_f),
        what: format!("{}-{code_f} (allergen)", seg.id),
    })?;
    let code_key = if seg.comp(code_f, 1).is_empty() {
        seg.comp(code_f, 2)
    } else {
        seg.comp(code_f, 1)
    };
    let key = match unique_id.filter(|u| !u.is_empty()) {
        Some(u) => cx.derived_identifier("allergy", &[u]),
        None => cx.derived_identifier("allergy", &[&cx.patient_key.clone(), code_key]),
    };
    let mut a = Map::new();
    a.insert("resourceType".into(), json!("AllergyIntolerance"));
    a.insert("identifier".into(), json!([key.clone()]));
    let (clinical, verification) = if deleted {
        (None, "entered-in-error")
    } else {
        (Some("active"), "confirmed")
    };
    if let Some(c) = clinical {
        a.insert(
            "clinicalStatus".into(),
            dt::concept(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                c,
                None,
            ),
        );
    }
    a.insert(
        "verificationStatus".into(),
        dt::concept(
            "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            verification,
            None,
        ),
    );
    if let Some(cat) = allergy_category(seg.comp(type_f, 1)) {
        a.insert("category".into(), json!([cat]));
    }
    put(
        &mut a,
        "criticality",
        criticality(seg.comp(severity_f, 1)).map(Value::from),
    );
    a.insert("code".into(), code);
    a.insert(
        "patient".into(),
        json!({"reference": cx.patient.clone().unwrap_or_default()}),
    );
    put(
        &mut a,
        "onsetDateTime",
        cx.time(seg.get(onset_f), TimeKind::DateTime, seg, onset_f)?
            .map(Value::from),
    );
    let manifestations: Vec<Value> = seg
        .reps(reaction_f)
        .iter()
        .filter(|r| !r.get(1).is_empty())
        .map(|r| json!({"text": r.0.iter().map(|c| c.0.join("&")).collect::<Vec<_>>().join("^")}))
        .collect();
    if !manifestations.is_empty() {
        let mut reaction = json!({"manifestation": manifestations});
        let severity = match seg.comp(severity_f, 1) {
            "SV" => Some("severe"),
            "MO" => Some("moderate"),
            "MI" => Some("mild"),
            _ => None,
        };
        if let Some(s) = severity {
            reaction["severity"] = json!(s);
        }
        a.insert("reaction".into(), json!([reaction]));
    }
    cx.update(Value::Object(a), &key);
    Ok(())
}

/// AL1: set id, type (2), code (3), severity (4), reaction (5), identification date (6).
pub(super) fn allergy_al1(cx: &mut Cx<'_>, al1: &Segment) -> Result<(), MappingError> {
    allergy(cx, al1, (2, 3, 4, 5, 6), None, false)
}

/// ADT^A60: IAM type (2), code (3), severity (4), reaction (5), action (6, `D` = delete),
/// unique id (7), onset date (11).
pub(super) fn adverse_reactions(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let root = s.root();
    let pid = root.segment("PID");
    adt::subject(cx, pid, root.group("VISIT").and_then(|v| v.segment("PV1")))?;
    for group in root.groups("ADVERSE_REACTION") {
        if let Some(iam) = group.segment("IAM") {
            let unique = iam.get(7);
            allergy(cx, iam, (2, 3, 4, 5, 11), Some(unique), iam.get(6) == "D")?;
        }
    }
    for al1 in root.segments("AL1") {
        allergy_al1(cx, al1)?;
    }
    Ok(())
}

/// VXU^V04: each RXA -> Immunization.
pub(super) fn immunizations(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let root = s.root();
    adt::subject(
        cx,
        root.segment("PID"),
        root.group("PATIENT_VISIT").and_then(|v| v.segment("PV1")),
    )?;
    for order in root.groups("ORDER") {
        let Some(rxa) = order.segment("RXA") else {
            continue;
        };
        let orc = order.segment("ORC");
        let vaccine = codeable_concept(rxa.rep(5)).ok_or_else(|| MappingError::MissingField {
            location: cx.location(rxa, 5),
            what: "RXA-5 (administered code)".to_owned(),
        })?;
        let occurrence = cx
            .time(rxa.get(3), TimeKind::DateTime, rxa, 3)?
            .ok_or_else(|| MappingError::MissingField {
                location: cx.location(rxa, 3),
                what: "RXA-3 (date/time start of administration)".to_owned(),
            })?;
        let filler = orc.map_or("", |o| o.get(3));
        let key = if filler.is_empty() {
            cx.derived_identifier(
                "immunization",
                &[&cx.patient_key.clone(), rxa.get(3), rxa.comp(5, 1)],
            )
        } else {
            cx.derived_identifier("immunization", &[filler])
        };
        let status = match (rxa.get(20), rxa.get(21)) {
            (_, "D") => "entered-in-error",
            ("RE" | "NA", _) => "not-done",
            _ => "completed",
        };
        let mut i = Map::new();
        i.insert("resourceType".into(), json!("Immunization"));
        i.insert("identifier".into(), json!([key.clone()]));
        i.insert("status".into(), json!(status));
        i.insert("vaccineCode".into(), vaccine);
        i.insert(
            "patient".into(),
            json!({"reference": cx.patient.clone().unwrap_or_default()}),
        );
        if let Some(enc) = &cx.encounter {
            i.insert("encounter".into(), json!({"reference": enc}));
        }
        i.insert("occurrenceDateTime".into(), json!(occurrence));
        // RXA-9 NIP001 "00" = new immunization record (administered here, primary source).
        let primary = rxa.reps(9).iter().any(|r| r.get(1) == "00");
        i.insert(
            "primarySource".into(),
            json!(primary || rxa.get(9).is_empty()),
        );
        put(
            &mut i,
            "lotNumber",
            Some(rxa.get(15)).filter(|l| !l.is_empty()).map(Value::from),
        );
        put(
            &mut i,
            "expirationDate",
            cx.time(rxa.get(16), TimeKind::Date, rxa, 16)?
                .map(Value::from),
        );
        if !rxa.comp(17, 2).is_empty() || !rxa.comp(17, 1).is_empty() {
            let name = if rxa.comp(17, 2).is_empty() {
                rxa.comp(17, 1)
            } else {
                rxa.comp(17, 2)
            };
            i.insert("manufacturer".into(), json!({"display": name}));
        }
        if let Some(v) = dt::decimal(rxa.get(6)).filter(|_| rxa.get(6) != "999") {
            i.insert("doseQuantity".into(), dt::quantity(v, rxa.rep(7)));
        }
        if let Some(rxr) = order.segment("RXR") {
            put(&mut i, "route", codeable_concept(rxr.rep(1)));
            put(&mut i, "site", codeable_concept(rxr.rep(2)));
        }
        if let Some(performer) = rxa.rep(10).cloned().and_then(|x| adt::practitioner(cx, &x)) {
            i.insert(
                "performer".into(),
                json!([{
                    "function": dt::concept("http://terminology.hl7.org/CodeSystem/v2-0443", "AP", Some("Administering Provider")),
                    "actor": performer,
                }]),
            );
        }
        cx.update(Value::Object(i), &key);
    }
    Ok(())
}

/// PPR: each PRB -> Condition (problem-list item).
pub(super) fn problems(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let root = s.root();
    adt::subject(
        cx,
        root.segment("PID"),
        root.group("PATIENT_VISIT").and_then(|v| v.segment("PV1")),
    )?;
    for problem in root.groups("PROBLEM") {
        let Some(prb) = problem.segment("PRB") else {
            continue;
        };
        let code = codeable_concept(prb.rep(3)).ok_or_else(|| MappingError::MissingField {
            location: cx.location(prb, 3),
            what: "PRB-3 (problem id)".to_owned(),
        })?;
        let instance = prb.get(4);
        let key = if instance.is_empty() {
            cx.derived_identifier("condition", &[&cx.patient_key.clone(), prb.comp(3, 1)])
        } else {
            cx.derived_identifier("condition", &[instance])
        };
        let deleted = prb.get(1) == "DE";
        let abatement = cx.time(prb.get(9), TimeKind::DateTime, prb, 9)?;
        let clinical = match prb.comp(14, 1) {
            _ if deleted => None,
            "resolved" | "R" | "2" => Some("resolved"),
            "inactive" | "I" => Some("inactive"),
            _ if abatement.is_some() => Some("resolved"),
            _ => Some("active"),
        };
        let verification = if deleted {
            "entered-in-error"
        } else {
            match prb.comp(13, 1) {
                "P" | "provisional" | "S" => "provisional",
                "R" | "refuted" => "refuted",
                _ => "confirmed",
            }
        };
        let mut c = Map::new();
        c.insert("resourceType".into(), json!("Condition"));
        c.insert("identifier".into(), json!([key.clone()]));
        if let Some(cs) = clinical {
            c.insert(
                "clinicalStatus".into(),
                dt::concept(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    cs,
                    None,
                ),
            );
        }
        c.insert(
            "verificationStatus".into(),
            dt::concept(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                verification,
                None,
            ),
        );
        c.insert(
            "category".into(),
            json!([dt::concept(
                "http://terminology.hl7.org/CodeSystem/condition-category",
                "problem-list-item",
                Some("Problem List Item")
            )]),
        );
        c.insert("code".into(), code);
        c.insert(
            "subject".into(),
            json!({"reference": cx.patient.clone().unwrap_or_default()}),
        );
        if let Some(enc) = &cx.encounter {
            c.insert("encounter".into(), json!({"reference": enc}));
        }
        put(
            &mut c,
            "onsetDateTime",
            cx.time(prb.get(16), TimeKind::DateTime, prb, 16)?
                .map(Value::from),
        );
        if clinical.is_some() {
            put(&mut c, "abatementDateTime", abatement.map(Value::from));
        }
        put(
            &mut c,
            "recordedDate",
            cx.time(prb.get(7), TimeKind::DateTime, prb, 7)?
                .map(Value::from),
        );
        cx.update(Value::Object(c), &key);
    }
    Ok(())
}
