//! ADT events -> Patient, Encounter, Location, Practitioner; A40 merges -> `Patient.link`
//! and a [`MergeInstruction`] for the EMPI. Also the PID/PV1 helpers every other mapping
//! uses for its subject and encounter.

use serde_json::{Map, Value, json};

use super::dt::{self, TimeKind, codeable_concept};
use super::{Cx, MappingError, MergeInstruction, put, put_str};
use crate::message::{Repetition, Segment};
use crate::structure::Structured;

/// ADT A01 A02 A03 A04 A05 A08 A11 A13 A28 A31 (and the other ADT_A01/A05/A09 events).
pub(super) fn adt(cx: &mut Cx<'_>, s: &Structured<'_>, event: &str) -> Result<(), MappingError> {
    let root = s.root();
    let pid = root.find("PID").ok_or_else(|| missing_pid(cx))?;
    patient(cx, pid, true)?;
    // A28/A31 are person-level (no visit); A08 updates whatever visit it names.
    let visit_events = !matches!(event, "A28" | "A31");
    // PV1-2 `N` (not applicable): JAHIS ADT^A08 carries a placeholder PV1.
    if visit_events
        && let Some(pv1) = root.find("PV1")
        && pv1.get(2) != "N"
    {
        encounter(cx, pv1, Some(event))?;
    }
    for al1 in root.segments("AL1") {
        super::clinical::allergy_al1(cx, al1)?;
    }
    Ok(())
}

fn missing_pid(cx: &Cx<'_>) -> MappingError {
    MappingError::MissingField {
        location: crate::error::Location::segment("PID", 1),
        what: format!("a PID segment in {}", cx.msg.message_code()),
    }
}

/// The identifiers of PID-3 (and PID-2, PID-4 of older versions).
fn patient_identifiers(cx: &Cx<'_>, pid: &Segment) -> Vec<Value> {
    [3, 2, 4]
        .into_iter()
        .flat_map(|f| pid.reps(f).iter())
        .filter_map(|r| dt::identifier(r, &cx.facility))
        .collect()
}

/// Map a PID to a Patient and make it the context's current patient. `authoritative`: ADT
/// (conditional update with the full demographics) or a mention (conditional create).
pub(super) fn patient(
    cx: &mut Cx<'_>,
    pid: &Segment,
    authoritative: bool,
) -> Result<String, MappingError> {
    let identifiers = patient_identifiers(cx, pid);
    let Some(key) = identifiers.first().cloned() else {
        return Err(MappingError::MissingField {
            location: cx.location(pid, 3),
            what: "PID-3 (patient identifier list)".to_owned(),
        });
    };
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Patient"));
    p.insert("identifier".into(), Value::Array(identifiers));
    p.insert("active".into(), json!(true));
    let names: Vec<Value> = pid.reps(5).iter().filter_map(dt::human_name).collect();
    if !names.is_empty() {
        p.insert("name".into(), Value::Array(names));
    }
    let telecom: Vec<Value> = pid
        .reps(13)
        .iter()
        .filter_map(|r| dt::contact_point(r, "home"))
        .chain(
            pid.reps(14)
                .iter()
                .filter_map(|r| dt::contact_point(r, "work")),
        )
        .collect();
    if !telecom.is_empty() {
        p.insert("telecom".into(), Value::Array(telecom));
    }
    let gender = match pid.get(8) {
        "M" => Some("male"),
        "F" => Some("female"),
        "O" | "A" => Some("other"),
        "U" | "N" => Some("unknown"),
        _ => None,
    };
    put(&mut p, "gender", gender.map(|g| json!(g)));
    put(
        &mut p,
        "birthDate",
        cx.time(pid.get(7), TimeKind::Date, pid, 7)?
            .map(Value::from),
    );
    if pid.get(30) == "Y" {
        match cx.time(pid.get(29), TimeKind::DateTime, pid, 29)? {
            Some(when) => p.insert("deceasedDateTime".into(), json!(when)),
            None => p.insert("deceasedBoolean".into(), json!(true)),
        };
    } else if pid.get(30) == "N" {
        p.insert("deceasedBoolean".into(), json!(false));
    }
    let addresses: Vec<Value> = pid.reps(11).iter().filter_map(dt::address).collect();
    if !addresses.is_empty() {
        p.insert("address".into(), Value::Array(addresses));
    }
    put(
        &mut p,
        "maritalStatus",
        codeable_concept(pid.rep(16)).map(|mut cc| {
            if let Some(c) = cc["coding"].get_mut(0)
                && c.get("system").is_none()
            {
                c["system"] = json!("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus");
            }
            cc
        }),
    );
    let resource = Value::Object(p);
    let reference = if authoritative {
        cx.update(resource, &key)
    } else {
        cx.create_if_none(resource, &key)
    };
    cx.patient = Some(reference.clone());
    cx.patient_key = key["value"].as_str().unwrap_or("").to_owned();
    Ok(reference)
}

/// The subject Patient and Encounter of a clinical message: PID as a mention, PV1 if any.
pub(super) fn subject(
    cx: &mut Cx<'_>,
    pid: Option<&Segment>,
    pv1: Option<&Segment>,
) -> Result<(), MappingError> {
    let Some(pid) = pid else {
        return Err(MappingError::MissingField {
            location: crate::error::Location::segment("PID", 1),
            what: "a PID segment (the subject)".to_owned(),
        });
    };
    patient(cx, pid, false)?;
    cx.encounter = None;
    if let Some(pv1) = pv1 {
        encounter(cx, pv1, None)?;
    }
    Ok(())
}

/// Map PV1 to an Encounter (with its Location and Practitioners). `event` is the ADT trigger
/// (authoritative update) or `None` (a mention from a clinical message: conditional create,
/// and only when PV1-19 names the visit).
pub(super) fn encounter(
    cx: &mut Cx<'_>,
    pv1: &Segment,
    event: Option<&str>,
) -> Result<Option<String>, MappingError> {
    let patient = cx.patient.clone().unwrap_or_default();
    let identifier = match pv1.rep(19).and_then(|r| dt::identifier(r, &cx.facility)) {
        Some(id) => id,
        None if event.is_some() => {
            // No visit number: one encounter per patient, class and admission time.
            let start = pv1.get(44);
            let start = if start.is_empty() {
                cx.msg.msh().get(7)
            } else {
                start
            };
            let day: String = start.chars().take(12).collect();
            cx.derived_identifier("visit", &[&cx.patient_key.clone(), pv1.get(2), &day])
        }
        None => return Ok(None),
    };
    let mut e = Map::new();
    e.insert("resourceType".into(), json!("Encounter"));
    e.insert("identifier".into(), json!([identifier.clone()]));
    let end = cx.time(pv1.get(45), TimeKind::DateTime, pv1, 45)?;
    let status = match event {
        Some("A05" | "A14") => "planned",
        Some("A04") => "arrived",
        Some("A03") => "finished",
        Some("A11") => "cancelled",
        Some("A13") => "in-progress",
        _ if end.is_some() => "finished",
        _ => "in-progress",
    };
    e.insert("status".into(), json!(status));
    let (class, display) = match pv1.get(2) {
        "I" => ("IMP", "inpatient encounter"),
        "O" => ("AMB", "ambulatory"),
        "E" => ("EMER", "emergency"),
        "P" => ("PRENC", "pre-admission"),
        "R" | "B" => ("AMB", "ambulatory"),
        _ => ("AMB", "ambulatory"),
    };
    e.insert(
        "class".into(),
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": class, "display": display}),
    );
    e.insert("subject".into(), json!({"reference": patient}));
    let mut period = Map::new();
    put(
        &mut period,
        "start",
        cx.time(pv1.get(44), TimeKind::DateTime, pv1, 44)?
            .map(Value::from),
    );
    if event != Some("A13") {
        put(&mut period, "end", end.map(Value::from));
    }
    if !period.is_empty() {
        e.insert("period".into(), Value::Object(period));
    }
    let mut participants = Vec::new();
    for (field, code, display) in [
        (7, "ATND", "attender"),
        (8, "REF", "referrer"),
        (9, "CON", "consultant"),
        (17, "ADM", "admitter"),
    ] {
        for rep in pv1.reps(field) {
            if let Some(individual) = practitioner(cx, rep) {
                participants.push(json!({
                    "type": [dt::concept("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", code, Some(display))],
                    "individual": individual,
                }));
            }
        }
    }
    if !participants.is_empty() {
        e.insert("participant".into(), Value::Array(participants));
    }
    let mut locations = Vec::new();
    if let Some(loc) = pv1.rep(3).and_then(|r| location(cx, r)) {
        let status = if status == "finished" {
            "completed"
        } else {
            "active"
        };
        locations.push(json!({"location": {"reference": loc}, "status": status}));
    }
    if event == Some("A02")
        && let Some(loc) = pv1.rep(6).and_then(|r| location(cx, r))
    {
        locations.push(json!({"location": {"reference": loc}, "status": "completed"}));
    }
    if !locations.is_empty() {
        e.insert("location".into(), Value::Array(locations));
    }
    let mut hospitalization = Map::new();
    put(
        &mut hospitalization,
        "admitSource",
        codeable_concept(pv1.rep(14)),
    );
    put(
        &mut hospitalization,
        "dischargeDisposition",
        codeable_concept(pv1.rep(36)),
    );
    if !hospitalization.is_empty() {
        e.insert("hospitalization".into(), Value::Object(hospitalization));
    }
    let resource = Value::Object(e);
    let reference = if event.is_some() {
        cx.update(resource, &identifier)
    } else {
        cx.create_if_none(resource, &identifier)
    };
    cx.encounter = Some(reference.clone());
    Ok(Some(reference))
}

/// XCN (id^family^given^...^authority(9)^...^type(13)) to a Practitioner (conditional create
/// on the id); returns the Reference JSON, display-only when there is no id.
pub(super) fn practitioner(cx: &mut Cx<'_>, xcn: &Repetition) -> Option<Value> {
    let id = xcn.get(1).trim();
    let family = xcn.get(2);
    let given = xcn.get(3);
    if id.is_empty() && family.is_empty() && given.is_empty() {
        return None;
    }
    let display = [family, given]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if id.is_empty() {
        return Some(json!({"display": display}));
    }
    let identifier = json!({
        "system": dt::identifier_system(xcn.component(9), &cx.facility, "practitioner"),
        "value": id,
    });
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Practitioner"));
    p.insert("identifier".into(), json!([identifier]));
    let mut name = Map::new();
    put_str(&mut name, "family", family);
    if !given.is_empty() {
        name.insert("given".into(), json!([given]));
    }
    if !display.is_empty() {
        name.insert("text".into(), json!(display));
        p.insert("name".into(), json!([name]));
    }
    let reference = cx.create_if_none(Value::Object(p), &identifier);
    let mut r = json!({"reference": reference});
    if !display.is_empty() {
        r["display"] = json!(display);
    }
    Some(r)
}

/// PL (point of care^room^bed^facility^status^type^building^floor^description) to a
/// Location (conditional create on facility + care unit + room + bed).
fn location(cx: &mut Cx<'_>, pl: &Repetition) -> Option<String> {
    let parts: Vec<&str> = [pl.get(1), pl.get(2), pl.get(3)].to_vec();
    if parts.iter().all(|p| p.is_empty()) {
        return None;
    }
    let facility = if pl.get(4).is_empty() {
        cx.facility.clone()
    } else {
        pl.get(4).to_owned()
    };
    let identifier = json!({
        "system": format!("urn:renkei:v2:location:{}", dt::uri_part(&facility)),
        "value": parts.join("^").trim_end_matches('^'),
    });
    let name = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let (code, display) = if !pl.get(3).is_empty() {
        ("bd", "Bed")
    } else if !pl.get(2).is_empty() {
        ("ro", "Room")
    } else {
        ("wa", "Ward")
    };
    let mut l = json!({
        "resourceType": "Location",
        "identifier": [identifier.clone()],
        "status": "active",
        "name": name,
        "mode": "instance",
        "physicalType": dt::concept("http://terminology.hl7.org/CodeSystem/location-physical-type", code, Some(display)),
    });
    if !pl.get(9).is_empty() {
        l["description"] = json!(pl.get(9));
    }
    Some(cx.create_if_none(l, &identifier))
}

/// ADT^A40 (and A39/A41/A42): for each PATIENT group, the surviving Patient (PID) gets a
/// `replaces` link to each merged patient (MRG-1), and a [`MergeInstruction`] tells the EMPI
/// to retire them. The retired Patient is not rewritten here (a conditional PUT would wipe
/// its demographics): the EMPI applies [`apply_merge`] to it in the same transaction.
pub(super) fn merge(cx: &mut Cx<'_>, s: &Structured<'_>) -> Result<(), MappingError> {
    for group in s.root().groups("PATIENT") {
        let pid = group.segment("PID").ok_or_else(|| missing_pid(cx))?;
        let mrg = group
            .segment("MRG")
            .ok_or_else(|| MappingError::MissingField {
                location: crate::error::Location::segment("MRG", 1),
                what: "an MRG segment".to_owned(),
            })?;
        let retired: Vec<Value> = mrg
            .reps(1)
            .iter()
            .filter_map(|r| dt::identifier(r, &cx.facility))
            .map(|mut id| {
                id.as_object_mut().map(|o| o.remove("type"));
                id
            })
            .collect();
        if retired.is_empty() {
            return Err(MappingError::MissingField {
                location: cx.location(mrg, 1),
                what: "MRG-1 (prior patient identifier list)".to_owned(),
            });
        }
        let reference = patient(cx, pid, true)?;
        let surviving = patient_identifiers(cx, pid)[0].clone();
        let links: Vec<Value> = retired
            .iter()
            .map(|id| {
                let mut id = id.clone();
                id.as_object_mut().map(|o| o.remove("type"));
                json!({"other": {"identifier": id}, "type": "replaces"})
            })
            .collect();
        if let Some(entry) = cx.resource_mut(&reference) {
            entry.insert("link".into(), Value::Array(links));
        }
        let mut surviving = surviving;
        surviving.as_object_mut().map(|o| o.remove("type"));
        cx.merges.push(MergeInstruction { surviving, retired });
    }
    Ok(())
}

/// The retired side of a merge: the old Patient marked inactive with a `replaced-by` link to
/// the survivor (idempotent: an existing identical link is not duplicated). Pure; the EMPI
/// calls it on the stored resource and writes the result in the merge transaction.
pub fn apply_merge(retired: &Value, surviving: &Value) -> Value {
    let mut out = retired.clone();
    let link = json!({"other": surviving, "type": "replaced-by"});
    if let Some(obj) = out.as_object_mut() {
        obj.insert("active".into(), json!(false));
        let links = obj.entry("link").or_insert_with(|| json!([]));
        if let Some(arr) = links.as_array_mut()
            && !arr.contains(&link)
        {
            arr.push(link);
        }
    }
    out
}
