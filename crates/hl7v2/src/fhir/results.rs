//! ORU^R01 and OUL^R22 (SS-MIX2 lab results) -> DiagnosticReport, Observation, Specimen.
//!
//! One DiagnosticReport per OBR (identifier: filler order number OBR-3, else placer OBR-2),
//! one Observation per OBX (identifier: the report's identifier value + OBX-3 code + OBX-4
//! sub-id, stable when the sender reorders OBX), one Specimen per SPM (SPM-2 or derived).
//! Values: NM -> Quantity (UCUM when OBX-6.3 says so), SN -> Quantity with comparator,
//! Range or Ratio, ST/TX/FT -> string, CE/CWE -> CodeableConcept, DT/TS/DTM -> dateTime.
//! OBX-7 -> referenceRange, OBX-8 -> interpretation (v3 ObservationInterpretation).

use serde_json::{Map, Value, json};

use super::adt;
use super::dt::{self, TimeKind, codeable_concept};
use super::{Cx, MappingError, put, put_str};
use crate::message::Segment;
use crate::structure::{GroupView, Structured};

pub(super) fn results(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let root = s.root();
    if s.structure == "OUL_R22" {
        adt::subject(
            cx,
            root.find("PID"),
            root.group("VISIT").and_then(|v| v.segment("PV1")),
        )?;
        for spec in root.groups("SPECIMEN") {
            let spm = spec.segment("SPM");
            for order in spec.groups("ORDER") {
                let obxs: Vec<Obx<'_>> = order.groups("RESULT").filter_map(with_notes).collect();
                report(cx, order, &obxs, spm)?;
            }
        }
        return Ok(());
    }
    for result in root.groups("PATIENT_RESULT") {
        let patient = result.group("PATIENT");
        adt::subject(
            cx,
            patient.and_then(|p| p.segment("PID")),
            patient
                .and_then(|p| p.group("VISIT"))
                .and_then(|v| v.segment("PV1")),
        )?;
        for order in result.groups("ORDER_OBSERVATION") {
            let obxs: Vec<Obx<'_>> = order.groups("OBSERVATION").filter_map(with_notes).collect();
            let spm = order.group("SPECIMEN").and_then(|g| g.segment("SPM"));
            report(cx, order, &obxs, spm)?;
        }
    }
    Ok(())
}

/// An OBX with the NTE segments that follow it.
type Obx<'a> = (&'a Segment, Vec<&'a Segment>);

fn with_notes<'a>(group: GroupView<'a>) -> Option<Obx<'a>> {
    Some((group.segment("OBX")?, group.segments("NTE").collect()))
}

/// NTE-3 comments to Annotations.
fn notes(ntes: &[&Segment]) -> Option<Value> {
    let notes: Vec<Value> = ntes
        .iter()
        .flat_map(|nte| nte.reps(3))
        .map(|r| r.get(1))
        .filter(|t| !t.trim().is_empty())
        .map(|t| json!({"text": t}))
        .collect();
    (!notes.is_empty()).then_some(Value::Array(notes))
}

fn report_status(code: &str) -> &'static str {
    match code {
        "F" => "final",
        "P" | "S" => "preliminary",
        "C" => "corrected",
        "A" => "partial",
        "X" => "cancelled",
        "R" | "I" | "O" => "registered",
        _ => "final",
    }
}

fn observation_status(code: &str) -> &'static str {
    match code {
        "F" | "U" => "final",
        "P" | "R" | "S" | "I" => "preliminary",
        "C" => "corrected",
        "X" | "N" => "cancelled",
        "D" | "W" => "entered-in-error",
        _ => "final",
    }
}

fn report(
    cx: &mut Cx<'_>,
    order: GroupView<'_>,
    obxs: &[Obx<'_>],
    spm: Option<&Segment>,
) -> Result<(), MappingError> {
    let obr = order
        .segment("OBR")
        .ok_or_else(|| MappingError::MissingField {
            location: crate::error::Location::segment("OBR", 1),
            what: "an OBR segment".to_owned(),
        })?;
    let orc = order.segment("ORC");
    let filler = [
        obr.get(3),
        orc.map_or("", |o| o.get(3)),
        obr.get(2),
        orc.map_or("", |o| o.get(2)),
    ]
    .into_iter()
    .find(|v| !v.is_empty())
    .ok_or_else(|| MappingError::MissingField {
        location: cx.location(obr, 3),
        what: "OBR-3 or OBR-2 (filler or placer order number)".to_owned(),
    })?
    .to_owned();
    let report_id = cx.derived_identifier("report", &[&filler]);
    let patient = json!({"reference": cx.patient.clone().unwrap_or_default()});
    let effective = cx.time(obr.get(7), TimeKind::DateTime, obr, 7)?;

    let specimen = match spm {
        Some(spm) => Some(specimen(cx, spm, &filler)?),
        None => None,
    };

    let mut results = Vec::new();
    for (obx, ntes) in obxs {
        let Some(obs) = observation(cx, obx, &filler, effective.as_deref(), specimen.as_deref())?
        else {
            continue;
        };
        if let Some(n) = notes(ntes)
            && let Some(resource) = cx.resource_mut(&obs)
        {
            resource.insert("note".into(), n);
        }
        results.push(json!({"reference": obs}));
    }

    let code = codeable_concept(obr.rep(4)).ok_or_else(|| MappingError::MissingField {
        location: cx.location(obr, 4),
        what: "OBR-4 (universal service identifier)".to_owned(),
    })?;
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("DiagnosticReport"));
    let mut identifiers = vec![report_id.clone()];
    if !obr.get(2).is_empty() && obr.get(2) != filler {
        identifiers.push(json!({
            "type": dt::concept("http://terminology.hl7.org/CodeSystem/v2-0203", "PLAC", None),
            "system": format!("urn:renkei:v2:placer:{}", dt::uri_part(&cx.facility)),
            "value": obr.get(2),
        }));
    }
    r.insert("identifier".into(), Value::Array(identifiers));
    r.insert("status".into(), json!(report_status(obr.get(25))));
    r.insert(
        "category".into(),
        json!([dt::concept(
            "http://terminology.hl7.org/CodeSystem/v2-0074",
            if obr.get(24).is_empty() {
                "LAB"
            } else {
                obr.get(24)
            },
            None
        )]),
    );
    r.insert("code".into(), code);
    r.insert("subject".into(), patient);
    if let Some(enc) = &cx.encounter {
        r.insert("encounter".into(), json!({"reference": enc}));
    }
    put(&mut r, "effectiveDateTime", effective.map(Value::from));
    put(
        &mut r,
        "issued",
        cx.time(obr.get(22), TimeKind::Instant, obr, 22)?
            .map(Value::from),
    );
    if let Some(sp) = &specimen {
        r.insert("specimen".into(), json!([{"reference": sp}]));
    }
    if !results.is_empty() {
        r.insert("result".into(), Value::Array(results));
    }
    cx.update(Value::Object(r), &report_id);
    Ok(())
}

fn specimen(cx: &mut Cx<'_>, spm: &Segment, filler: &str) -> Result<String, MappingError> {
    let given = spm
        .rep(2)
        .map(|r| {
            if r.sub(2, 1).is_empty() {
                r.get(1)
            } else {
                r.sub(2, 1)
            }
        })
        .unwrap_or("");
    let identifier = if given.is_empty() {
        cx.derived_identifier("specimen", &[filler, spm.get(1)])
    } else {
        cx.derived_identifier("specimen", &[given])
    };
    let mut sp = Map::new();
    sp.insert("resourceType".into(), json!("Specimen"));
    sp.insert("identifier".into(), json!([identifier.clone()]));
    put(&mut sp, "type", codeable_concept(spm.rep(4)));
    sp.insert(
        "subject".into(),
        json!({"reference": cx.patient.clone().unwrap_or_default()}),
    );
    let mut collection = Map::new();
    put(
        &mut collection,
        "collectedDateTime",
        cx.time(spm.comp(17, 1), TimeKind::DateTime, spm, 17)?
            .map(Value::from),
    );
    if !collection.is_empty() {
        sp.insert("collection".into(), Value::Object(collection));
    }
    put(
        &mut sp,
        "receivedTime",
        cx.time(spm.get(18), TimeKind::DateTime, spm, 18)?
            .map(Value::from),
    );
    Ok(cx.update(Value::Object(sp), &identifier))
}

fn observation(
    cx: &mut Cx<'_>,
    obx: &Segment,
    filler: &str,
    effective: Option<&str>,
    specimen: Option<&str>,
) -> Result<Option<String>, MappingError> {
    let Some(code) = codeable_concept(obx.rep(3)) else {
        return Err(MappingError::MissingField {
            location: cx.location(obx, 3),
            what: "OBX-3 (observation identifier)".to_owned(),
        });
    };
    let code_key = if obx.comp(3, 1).is_empty() {
        obx.comp(3, 2)
    } else {
        obx.comp(3, 1)
    };
    let sub_id = obx.get(4);
    let identifier = if obx.get(21).is_empty() {
        cx.derived_identifier(
            "observation",
            &[
                filler,
                code_key,
                if sub_id.is_empty() { "1" } else { sub_id },
            ],
        )
    } else {
        cx.derived_identifier("observation", &[obx.get(21)])
    };
    let mut o = Map::new();
    o.insert("resourceType".into(), json!("Observation"));
    o.insert("identifier".into(), json!([identifier.clone()]));
    o.insert("status".into(), json!(observation_status(obx.get(11))));
    o.insert(
        "category".into(),
        json!([dt::concept(
            "http://terminology.hl7.org/CodeSystem/observation-category",
            "laboratory",
            Some("Laboratory")
        )]),
    );
    o.insert("code".into(), code);
    o.insert(
        "subject".into(),
        json!({"reference": cx.patient.clone().unwrap_or_default()}),
    );
    if let Some(enc) = &cx.encounter {
        o.insert("encounter".into(), json!({"reference": enc}));
    }
    let when = cx.time(obx.get(14), TimeKind::DateTime, obx, 14)?;
    put(
        &mut o,
        "effectiveDateTime",
        when.or(effective.map(str::to_owned)).map(Value::from),
    );
    value(cx, obx, &mut o)?;
    let interpretations: Vec<Value> = obx
        .reps(8)
        .iter()
        .filter(|r| !r.get(1).is_empty())
        .map(|r| {
            let code = r.get(1);
            dt::concept(
                "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                code,
                None,
            )
        })
        .collect();
    if !interpretations.is_empty() {
        o.insert("interpretation".into(), Value::Array(interpretations));
    }
    if let Some(range) = reference_range(obx.get(7), obx.rep(6)) {
        o.insert("referenceRange".into(), json!([range]));
    }
    if let Some(sp) = specimen {
        o.insert("specimen".into(), json!({"reference": sp}));
    }
    if obx.get(11) == "X" && !o.contains_key("valueString") && !o.contains_key("valueQuantity") {
        o.insert(
            "dataAbsentReason".into(),
            dt::concept(
                "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                "not-performed",
                None,
            ),
        );
    }
    Ok(Some(cx.update(Value::Object(o), &identifier)))
}

/// OBX-5 by OBX-2.
fn value(cx: &Cx<'_>, obx: &Segment, o: &mut Map<String, Value>) -> Result<(), MappingError> {
    let reps = obx.reps(5);
    let Some(first) = reps.first() else {
        return Ok(());
    };
    let invalid = |reason: String| MappingError::InvalidValue {
        location: cx.location(obx, 5),
        reason,
    };
    match obx.get(2) {
        "NM" => {
            let raw = first.get(1);
            let v = dt::decimal(raw)
                .ok_or_else(|| invalid(format!("{raw:?} is not a number (OBX-2 is NM)")))?;
            o.insert("valueQuantity".into(), dt::quantity(v, obx.rep(6)));
        }
        "SN" => {
            let (cmp, n1, sep, n2) = (first.get(1), first.get(2), first.get(3), first.get(4));
            let num = |raw: &str| {
                dt::decimal(raw)
                    .ok_or_else(|| invalid(format!("{raw:?} is not a number (OBX-2 is SN)")))
            };
            match sep {
                "" | "+" => {
                    let mut q = dt::quantity(num(n1)?, obx.rep(6));
                    let cmp = match cmp {
                        "" | "=" => None,
                        "<" | "<=" | ">" | ">=" => Some(cmp),
                        "<>" => None,
                        other => return Err(invalid(format!("{other:?} is not an SN comparator"))),
                    };
                    if let Some(c) = cmp {
                        q["comparator"] = json!(c);
                    }
                    o.insert("valueQuantity".into(), q);
                }
                "-" => {
                    o.insert(
                        "valueRange".into(),
                        json!({"low": dt::quantity(num(n1)?, obx.rep(6)), "high": dt::quantity(num(n2)?, obx.rep(6))}),
                    );
                }
                ":" | "/" => {
                    o.insert(
                        "valueRatio".into(),
                        json!({"numerator": {"value": num(n1)?}, "denominator": {"value": num(n2)?}}),
                    );
                }
                other => return Err(invalid(format!("{other:?} is not an SN separator"))),
            }
        }
        "CE" | "CWE" | "CNE" | "CF" => {
            if let Some(cc) = codeable_concept(Some(first)) {
                o.insert("valueCodeableConcept".into(), cc);
            }
        }
        "DT" | "TS" | "DTM" => {
            if let Some(t) = cx.time(first.get(1), TimeKind::DateTime, obx, 5)? {
                o.insert("valueDateTime".into(), json!(t));
            }
        }
        "TM" => put_str(o, "valueTime", first.get(1)),
        _ => {
            // ST, TX, FT and anything textual: repetitions are lines.
            let text: Vec<String> = reps
                .iter()
                .map(|r| {
                    r.0.iter()
                        .map(|c| c.0.join("&"))
                        .collect::<Vec<_>>()
                        .join("^")
                })
                .collect();
            let text = text.join("\n");
            put_str(o, "valueString", &text);
        }
    }
    Ok(())
}

/// OBX-7: `low-high`, `>low`, `<high`, or free text.
fn reference_range(raw: &str, unit: Option<&crate::message::Repetition>) -> Option<Value> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let q = |v: &str| dt::decimal(v).map(|d| dt::quantity(d, unit));
    let mut range = Map::new();
    if let Some((lo, hi)) = raw.split_once('-').filter(|(lo, _)| !lo.is_empty())
        && let (Some(lo), Some(hi)) = (q(lo), q(hi))
    {
        range.insert("low".into(), lo);
        range.insert("high".into(), hi);
    } else if let Some(v) = raw
        .strip_prefix(">=")
        .or_else(|| raw.strip_prefix('>'))
        .and_then(q)
    {
        range.insert("low".into(), v);
    } else if let Some(v) = raw
        .strip_prefix("<=")
        .or_else(|| raw.strip_prefix('<'))
        .and_then(q)
    {
        range.insert("high".into(), v);
    }
    range.insert("text".into(), json!(raw));
    Some(Value::Object(range))
}
