//! Orders: ORM^O01 / OML^O21 / OML^O33 -> ServiceRequest; RDE^O11 / OMP^O09 (JAHIS
//! prescription and injection orders) -> MedicationRequest; RDS^O13 -> MedicationDispense
//! (with the MedicationRequest it fulfils when RXE is present).
//!
//! Identifiers: placer order number ORC-2 (else OBR-2), filler ORC-3 (else OBR-3). A JAHIS
//! prescription repeats ORC-2 for every drug of the order, so a MedicationRequest is keyed by
//! ORC-2 plus the give code (RXE-2/RXO-1). Status from the order control code ORC-1 (and
//! ORC-5 order status when given).

use serde_json::{Map, Value, json};

use super::adt;
use super::dt::{self, TimeKind, codeable_concept};
use super::{Cx, MappingError, put};
use crate::message::Segment;
use crate::structure::{GroupView, Structured};

fn patient_group<'a>(s: &'a Structured<'_>) -> (Option<&'a Segment>, Option<&'a Segment>) {
    let root = s.root();
    let patient = root.group("PATIENT");
    (
        patient.and_then(|p| p.segment("PID")),
        patient
            .and_then(|p| p.group("PATIENT_VISIT"))
            .and_then(|v| v.segment("PV1")),
    )
}

/// All ORDER groups, also those nested under OML^O33 SPECIMEN groups.
fn order_groups<'a>(s: &'a Structured<'_>) -> Vec<GroupView<'a>> {
    let root = s.root();
    let mut out: Vec<GroupView<'a>> = root.groups("ORDER").collect();
    for spec in root.groups("SPECIMEN") {
        out.extend(spec.groups("ORDER"));
    }
    out
}

fn request_status(orc: &Segment) -> &'static str {
    match orc.get(5) {
        "CM" => return "completed",
        "CA" | "DC" => return "revoked",
        "HD" => return "on-hold",
        "IP" | "SC" | "A" => return "active",
        _ => {}
    }
    match orc.get(1) {
        "CA" | "OC" | "CR" | "OD" | "DC" | "DR" => "revoked",
        "HD" | "OH" => "on-hold",
        "RL" | "OR" => "active",
        _ => "active",
    }
}

fn medication_status(orc: &Segment) -> &'static str {
    match request_status(orc) {
        "revoked" => "cancelled",
        other => other,
    }
}

/// ORC-2 / ORC-3 / OBR-2 / OBR-3 identifiers, placer first.
fn order_identifiers(cx: &Cx<'_>, orc: &Segment, obr: Option<&Segment>) -> Vec<Value> {
    let placer = [orc.get(2), obr.map_or("", |o| o.get(2))]
        .into_iter()
        .find(|v| !v.is_empty());
    let filler = [orc.get(3), obr.map_or("", |o| o.get(3))]
        .into_iter()
        .find(|v| !v.is_empty());
    let mut ids = Vec::new();
    for (value, kind, code) in [(placer, "placer", "PLAC"), (filler, "filler", "FILL")] {
        if let Some(v) = value {
            ids.push(json!({
                "type": dt::concept("http://terminology.hl7.org/CodeSystem/v2-0203", code, None),
                "system": format!("urn:renkei:v2:{kind}:{}", dt::uri_part(&cx.facility)),
                "value": v,
            }));
        }
    }
    ids
}

fn missing_order_number(cx: &Cx<'_>, orc: &Segment) -> MappingError {
    MappingError::MissingField {
        location: cx.location(orc, 2),
        what: "ORC-2 or ORC-3 (placer or filler order number)".to_owned(),
    }
}

pub(super) fn service_requests(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let (pid, pv1) = patient_group(s);
    adt::subject(cx, pid, pv1)?;
    for order in order_groups(s) {
        let orc = order
            .segment("ORC")
            .ok_or_else(|| MappingError::MissingField {
                location: crate::error::Location::segment("ORC", 1),
                what: "an ORC segment".to_owned(),
            })?;
        let detail = order
            .group("ORDER_DETAIL")
            .or_else(|| order.group("OBSERVATION_REQUEST"));
        let obr = detail.and_then(|d| d.segment("OBR"));
        let ids = order_identifiers(cx, orc, obr);
        let Some(key) = ids.first().cloned() else {
            return Err(missing_order_number(cx, orc));
        };
        let mut r = Map::new();
        r.insert("resourceType".into(), json!("ServiceRequest"));
        r.insert("identifier".into(), Value::Array(ids));
        r.insert("status".into(), json!(request_status(orc)));
        r.insert("intent".into(), json!("order"));
        if let Some(obr) = obr {
            put(&mut r, "code", codeable_concept(obr.rep(4)));
        }
        // Priority: TQ1-9 (v2.5+), else OBR-27.6 (quantity/timing of older versions).
        let tq1_priority = order
            .groups("TIMING")
            .find_map(|g| g.segment("TQ1"))
            .map_or("", |t| t.comp(9, 1));
        let code = if tq1_priority.is_empty() {
            obr.map_or("", |o| o.comp(27, 6))
        } else {
            tq1_priority
        };
        let priority = match code {
            "S" => Some("stat"),
            "A" => Some("asap"),
            "R" => Some("routine"),
            _ => None,
        };
        put(&mut r, "priority", priority.map(Value::from));
        r.insert(
            "subject".into(),
            json!({"reference": cx.patient.clone().unwrap_or_default()}),
        );
        if let Some(enc) = &cx.encounter {
            r.insert("encounter".into(), json!({"reference": enc}));
        }
        put(
            &mut r,
            "authoredOn",
            cx.time(orc.get(9), TimeKind::DateTime, orc, 9)?
                .map(Value::from),
        );
        let requester = orc.rep(12).or_else(|| obr.and_then(|o| o.rep(16))).cloned();
        if let Some(req) = requester.and_then(|x| adt::practitioner(cx, &x)) {
            r.insert("requester".into(), req);
        }
        let mut specimens = Vec::new();
        let spm_groups: Vec<&Segment> = detail
            .map(|d| {
                d.groups("SPECIMEN")
                    .filter_map(|g| g.segment("SPM"))
                    .collect()
            })
            .unwrap_or_default();
        for spm in spm_groups {
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
            if !given.is_empty() {
                let identifier = cx.derived_identifier("specimen", &[given]);
                let mut sp = json!({
                    "resourceType": "Specimen",
                    "identifier": [identifier.clone()],
                    "subject": {"reference": cx.patient.clone().unwrap_or_default()},
                });
                if let Some(t) = codeable_concept(spm.rep(4)) {
                    sp["type"] = t;
                }
                specimens.push(json!({"reference": cx.create_if_none(sp, &identifier)}));
            }
        }
        if !specimens.is_empty() {
            r.insert("specimen".into(), Value::Array(specimens));
        }
        cx.update(Value::Object(r), &key);
    }
    Ok(())
}

pub(super) fn medications(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    let (pid, pv1) = patient_group(s);
    adt::subject(cx, pid, pv1)?;
    for order in order_groups(s) {
        let orc = order
            .segment("ORC")
            .ok_or_else(|| MappingError::MissingField {
                location: crate::error::Location::segment("ORC", 1),
                what: "an ORC segment".to_owned(),
            })?;
        let rxe = order
            .segment("RXE")
            .or_else(|| order.group("ENCODING").and_then(|g| g.segment("RXE")));
        let rxo = order
            .segment("RXO")
            .or_else(|| order.group("ORDER_DETAIL").and_then(|g| g.segment("RXO")));
        let request = match (rxe, rxo) {
            (Some(rxe), _) => Some(medication_request(cx, order, orc, rxe, 2)?),
            (None, Some(rxo)) => Some(medication_request(cx, order, orc, rxo, 1)?),
            (None, None) => None,
        };
        if let Some(rxd) = order.segment("RXD") {
            medication_dispense(cx, orc, rxd, request.as_deref())?;
        }
    }
    Ok(())
}

/// A MedicationRequest from RXE (give code in field 2) or RXO (requested give code in 1).
fn medication_request(
    cx: &mut Cx<'_>,
    order: GroupView<'_>,
    orc: &Segment,
    rx: &Segment,
    code_field: usize,
) -> Result<String, MappingError> {
    let medication =
        codeable_concept(rx.rep(code_field)).ok_or_else(|| MappingError::MissingField {
            location: cx.location(rx, code_field),
            what: format!("{}-{code_field} (give code)", rx.id),
        })?;
    let placer = orc.get(2);
    let placer = if placer.is_empty() {
        orc.get(3)
    } else {
        placer
    };
    if placer.is_empty() {
        return Err(missing_order_number(cx, orc));
    }
    let code_key = if rx.comp(code_field, 1).is_empty() {
        rx.comp(code_field, 2)
    } else {
        rx.comp(code_field, 1)
    };
    let key = cx.derived_identifier("medication-request", &[placer, code_key]);
    let mut ids = vec![key.clone()];
    ids.extend(order_identifiers(cx, orc, None));
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("MedicationRequest"));
    m.insert("identifier".into(), Value::Array(ids));
    m.insert("status".into(), json!(medication_status(orc)));
    m.insert("intent".into(), json!("order"));
    m.insert("medicationCodeableConcept".into(), medication);
    m.insert(
        "subject".into(),
        json!({"reference": cx.patient.clone().unwrap_or_default()}),
    );
    if let Some(enc) = &cx.encounter {
        m.insert("encounter".into(), json!({"reference": enc}));
    }
    put(
        &mut m,
        "authoredOn",
        cx.time(orc.get(9), TimeKind::DateTime, orc, 9)?
            .map(Value::from),
    );
    if let Some(req) = orc.rep(12).cloned().and_then(|x| adt::practitioner(cx, &x)) {
        m.insert("requester".into(), req);
    }
    // Dosage: RXE-3 give amount + RXE-5 units (RXO-2 / RXO-4), TQ1 timing, RXR route.
    let (amount_f, unit_f) = if rx.id == "RXE" { (3, 5) } else { (2, 4) };
    let mut dosage = Map::new();
    let tq1 = order
        .groups("TIMING_ENCODED")
        .chain(order.groups("TIMING"))
        .find_map(|g| g.segment("TQ1"));
    let mut text_parts: Vec<String> = Vec::new();
    if let Some(tq1) = tq1 {
        // TQ1-3 is RPT: its first component is a CWE written as sub-components.
        if let Some(rpt) = tq1.rep(3) {
            let cwe = rpt.component(1).map(|c| c.0.clone()).unwrap_or_default();
            let rep = &crate::message::Repetition(
                cwe.into_iter()
                    .map(|s| crate::message::Component(vec![s]))
                    .collect(),
            );
            let t = if rep.get(2).is_empty() {
                rep.get(1)
            } else {
                rep.get(2)
            };
            if !t.is_empty() {
                text_parts.push(t.to_owned());
            }
            if let Some(cc) = codeable_concept(Some(rep)) {
                dosage.insert("timing".into(), json!({"code": cc}));
            }
        }
        if let Some(duration) = dt::decimal(tq1.comp(6, 1)) {
            let unit = tq1.comp(6, 2);
            let ucum = match unit {
                "d" | "D" | "日" | "day" => Some("d"),
                "wk" | "W" => Some("wk"),
                _ => None,
            };
            if let Some(u) = ucum {
                m.insert(
                    "dispenseRequest".into(),
                    json!({"expectedSupplyDuration": {"value": duration, "unit": u, "system": "http://unitsofmeasure.org", "code": u}}),
                );
            }
        }
    }
    if let Some(rxr) = order.segment("RXR") {
        put(&mut dosage, "route", codeable_concept(rxr.rep(1)));
    }
    if let Some(v) = dt::decimal(rx.get(amount_f)) {
        dosage.insert(
            "doseAndRate".into(),
            json!([{"doseQuantity": dt::quantity(v, rx.rep(unit_f))}]),
        );
    }
    if !text_parts.is_empty() {
        dosage.insert("text".into(), json!(text_parts.join(" ")));
    }
    if !dosage.is_empty() {
        m.insert("dosageInstruction".into(), json!([dosage]));
    }
    if rx.id == "RXE"
        && let Some(q) = dt::decimal(rx.get(10))
    {
        let request = m.entry("dispenseRequest").or_insert_with(|| json!({}));
        request["quantity"] = dt::quantity(q, rx.rep(11));
    }
    Ok(cx.update(Value::Object(m), &key))
}

fn medication_dispense(
    cx: &mut Cx<'_>,
    orc: &Segment,
    rxd: &Segment,
    request: Option<&str>,
) -> Result<(), MappingError> {
    let medication = codeable_concept(rxd.rep(2)).ok_or_else(|| MappingError::MissingField {
        location: cx.location(rxd, 2),
        what: "RXD-2 (dispense/give code)".to_owned(),
    })?;
    let number = [rxd.get(7), orc.get(3), orc.get(2)]
        .into_iter()
        .find(|v| !v.is_empty());
    let Some(number) = number else {
        return Err(missing_order_number(cx, orc));
    };
    let code_key = if rxd.comp(2, 1).is_empty() {
        rxd.comp(2, 2)
    } else {
        rxd.comp(2, 1)
    };
    let key = cx.derived_identifier("medication-dispense", &[number, code_key, rxd.get(1)]);
    let mut d = Map::new();
    d.insert("resourceType".into(), json!("MedicationDispense"));
    d.insert("identifier".into(), json!([key.clone()]));
    d.insert(
        "status".into(),
        json!(if orc.get(1) == "CA" {
            "cancelled"
        } else {
            "completed"
        }),
    );
    d.insert("medicationCodeableConcept".into(), medication);
    d.insert(
        "subject".into(),
        json!({"reference": cx.patient.clone().unwrap_or_default()}),
    );
    if let Some(enc) = &cx.encounter {
        d.insert("context".into(), json!({"reference": enc}));
    }
    if let Some(req) = request {
        d.insert(
            "authorizingPrescription".into(),
            json!([{"reference": req}]),
        );
    }
    if let Some(q) = dt::decimal(rxd.get(4)) {
        d.insert("quantity".into(), dt::quantity(q, rxd.rep(5)));
    }
    put(
        &mut d,
        "whenHandedOver",
        cx.time(rxd.get(3), TimeKind::DateTime, rxd, 3)?
            .map(Value::from),
    );
    cx.update(Value::Object(d), &key);
    Ok(())
}
