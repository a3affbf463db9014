//! The patient summary: documents built from the Synthea sample and from hand-made records,
//! checked for validity, resolvable references, the selection rules of each section,
//! de-duplication, escaping and determinism.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use exchange::summary::{MAX_RESULTS, SummaryError, SummaryRequest, compose};
use serde_json::{Value, json};

const SYNTHEA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/synthea-10"
);
const DOCUMENT_ID: &str = "6f1c2b9e-4d3a-4c7b-9e21-8a5f0d3c1b7e";
const PROBLEMS: &str = "11450-4";
const ALLERGIES: &str = "48765-2";
const MEDICATIONS: &str = "10160-0";
const IMMUNIZATIONS: &str = "11369-6";
const RESULTS: &str = "30954-2";

fn now() -> DateTime<Utc> {
    "2025-01-01T00:00:00Z".parse().expect("a fixed instant")
}

fn request<'a>(patient: &'a Value, resources: &'a [Value]) -> SummaryRequest<'a> {
    SummaryRequest {
        patient,
        resources,
        now: now(),
        author: None,
        document_id: DOCUMENT_ID.to_owned(),
        recent_results_days: 365,
    }
}

fn summary(patient: &Value, resources: &[Value]) -> Value {
    let bundle = compose(&request(patient, resources)).expect("a summary");
    check_document(&bundle);
    bundle
}

/// What every summary must be: valid FHIR, a Composition first, each fullUrl unique, every
/// `urn:uuid:` reference and every section entry resolving in the Bundle, well-formed XHTML.
fn check_document(bundle: &Value) {
    if let Err(errors) = fhir::validate_resource(bundle) {
        panic!("invalid Bundle: {errors}");
    }
    let entries = bundle["entry"].as_array().expect("entries");
    let mut full_urls = BTreeSet::new();
    for entry in entries {
        let full_url = entry["fullUrl"].as_str().expect("a fullUrl");
        assert!(full_url.starts_with("urn:uuid:"), "{full_url}");
        assert!(full_urls.insert(full_url), "fullUrl twice: {full_url}");
        if let Err(errors) = fhir::validate_resource(&entry["resource"]) {
            panic!("invalid {full_url}: {errors}");
        }
    }
    let mut references = Vec::new();
    collect_references(bundle, &mut references);
    for reference in references.iter().filter(|r| r.starts_with("urn:uuid:")) {
        assert!(
            full_urls.contains(reference),
            "{reference} does not resolve"
        );
    }
    let composition = &entries[0]["resource"];
    assert_eq!(composition["resourceType"], "Composition");
    assert_eq!(entries[1]["resource"]["resourceType"], "Patient");
    assert_eq!(composition["subject"]["reference"], entries[1]["fullUrl"]);
    for section in composition["section"].as_array().expect("sections") {
        let div = section["text"]["div"].as_str().expect("a narrative");
        roxmltree::Document::parse(div).expect("well-formed XHTML");
        assert_eq!(section["text"]["status"], "generated");
        for entry in section["entry"].as_array().into_iter().flatten() {
            let reference = entry["reference"].as_str().expect("a reference");
            assert!(
                full_urls.contains(reference),
                "{reference} does not resolve"
            );
        }
    }
}

fn collect_references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get("reference") {
                found.push(reference);
            }
            object.values().for_each(|v| collect_references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, found)),
        _ => {}
    }
}

fn section<'a>(bundle: &'a Value, loinc: &str) -> Option<&'a Value> {
    bundle["entry"][0]["resource"]["section"]
        .as_array()?
        .iter()
        .find(|section| section["code"]["coding"][0]["code"] == loinc)
}

/// The resources a section lists, in its order.
fn listed<'a>(bundle: &'a Value, loinc: &str) -> Vec<&'a Value> {
    let Some(section) = section(bundle, loinc) else {
        return Vec::new();
    };
    let entries = bundle["entry"].as_array().expect("entries");
    section["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let url = &entry["reference"];
            let found = entries.iter().find(|e| &e["fullUrl"] == url);
            &found.expect("a listed entry")["resource"]
        })
        .collect()
}

fn listed_ids(bundle: &Value, loinc: &str) -> Vec<String> {
    listed(bundle, loinc)
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn full_url_of<'a>(bundle: &'a Value, resource_type: &str, id: &str) -> Option<&'a str> {
    bundle["entry"]
        .as_array()?
        .iter()
        .find(|e| e["resource"]["resourceType"] == resource_type && e["resource"]["id"] == id)?
        ["fullUrl"]
        .as_str()
}

fn assert_empty_required(bundle: &Value, loinc: &str) {
    let section = section(bundle, loinc).expect("a required section");
    assert_eq!(section["emptyReason"]["coding"][0]["code"], "unavailable");
    assert!(section.get("entry").is_none());
    let div = section["text"]["div"].as_str().unwrap_or_default();
    assert!(div.contains("No information is available"), "{div}");
}

fn patient(id: &str) -> Value {
    json!({ "resourceType": "Patient", "id": id, "name": [{ "family": "Tanaka", "given": ["Hanako"] }] })
}

fn concept(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}

fn condition(id: &str, code: &str, clinical: Option<&str>, verification: &str) -> Value {
    let mut condition = json!({
        "resourceType": "Condition", "id": id,
        "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification, verification),
        "code": concept("http://snomed.info/sct", code, "A problem"),
        "subject": { "reference": "Patient/p1" },
        "onsetDateTime": "2020-05-01",
    });
    if let Some(clinical) = clinical {
        condition["clinicalStatus"] = concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical",
            clinical,
            clinical,
        );
    }
    condition
}

fn allergy(id: &str, clinical: &str, verification: &str) -> Value {
    json!({
        "resourceType": "AllergyIntolerance", "id": id,
        "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", clinical, clinical),
        "verificationStatus": concept("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", verification, verification),
        "code": concept("http://snomed.info/sct", id, "Peanut"),
        "patient": { "reference": "Patient/p1" },
    })
}

fn medication_statement(id: &str, status: &str, effective: &str) -> Value {
    json!({
        "resourceType": "MedicationStatement", "id": id, "status": status,
        "medicationCodeableConcept": concept("http://www.nlm.nih.gov/research/umls/rxnorm", id, "A drug"),
        "subject": { "reference": "Patient/p1" },
        "effectivePeriod": { "start": "2020-01-01", "end": effective },
    })
}

fn medication_request(id: &str, status: &str) -> Value {
    json!({
        "resourceType": "MedicationRequest", "id": id, "status": status, "intent": "order",
        "medicationCodeableConcept": concept("http://www.nlm.nih.gov/research/umls/rxnorm", id, "A drug"),
        "subject": { "reference": "Patient/p1" },
        "authoredOn": "2024-06-01",
    })
}

fn immunization(id: &str, status: &str) -> Value {
    json!({
        "resourceType": "Immunization", "id": id, "status": status,
        "vaccineCode": concept("http://hl7.org/fhir/sid/cvx", "140", "Influenza"),
        "patient": { "reference": "Patient/p1" },
        "occurrenceDateTime": "2024-10-01",
    })
}

fn observation(id: &str, category: &str, status: &str, effective: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": status,
        "category": [concept("http://terminology.hl7.org/CodeSystem/observation-category", category, category)],
        "code": concept("http://loinc.org", "2345-7", "Glucose"),
        "subject": { "reference": "Patient/p1" },
        "effectiveDateTime": effective,
        "valueQuantity": { "value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL" },
    })
}

fn with_meta(mut resource: Value, last_updated: &str, source: &str) -> Value {
    resource["meta"] = json!({ "lastUpdated": last_updated, "source": source });
    resource
}

fn read_synthea() -> Option<Vec<Value>> {
    let directory = Path::new(SYNTHEA);
    if !directory.is_dir() {
        println!("skipped: no Synthea sample at {SYNTHEA}");
        return None;
    }
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .expect("the Synthea directory")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "ndjson"))
        .filter(|path| !path.ends_with("log.ndjson"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("an ndjson file");
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            resources.push(serde_json::from_str(line).expect("a JSON resource"));
        }
    }
    Some(resources)
}

/// The sample's Patients, and everything else in it (every Patient's records).
fn split_patients(resources: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    resources
        .into_iter()
        .partition(|r| r["resourceType"] == "Patient")
}

#[test]
fn every_synthea_patient_gets_a_valid_document_about_them_only() {
    let Some(resources) = read_synthea() else {
        return;
    };
    let (patients, records) = split_patients(resources);
    let mut empty_required_seen = false;
    for patient in &patients {
        let id = patient["id"].as_str().expect("an id");
        let bundle = summary(patient, &records);
        let patient_url = bundle["entry"][1]["fullUrl"].clone();
        for loinc in [PROBLEMS, ALLERGIES, MEDICATIONS, IMMUNIZATIONS, RESULTS] {
            for resource in listed(&bundle, loinc) {
                let subject = resource
                    .get("subject")
                    .or_else(|| resource.get("patient"))
                    .expect("a subject");
                assert_eq!(subject["reference"], patient_url, "{id}: {resource}");
            }
            match section(&bundle, loinc) {
                Some(s) if s.get("entry").is_none() => {
                    assert_empty_required(&bundle, loinc);
                    empty_required_seen = true;
                }
                Some(_) => {}
                None => assert!(loinc == IMMUNIZATIONS || loinc == RESULTS),
            }
        }
        let active_conditions = records
            .iter()
            .filter(|r| r["resourceType"] == "Condition")
            .filter(|r| r["subject"]["reference"] == format!("Patient/{id}"))
            .filter(|r| r["clinicalStatus"]["coding"][0]["code"] == "active")
            .count();
        let problems = listed(&bundle, PROBLEMS).len();
        assert!(problems <= active_conditions && (problems > 0) == (active_conditions > 0));
    }
    assert!(
        empty_required_seen,
        "the sample has a patient with an empty required section"
    );
}

#[test]
fn synthea_duplicates_are_removed_and_the_latest_copy_kept() {
    let Some(resources) = read_synthea() else {
        return;
    };
    let (patients, records) = split_patients(resources);
    let patient = patients
        .iter()
        .find(|p| {
            let reference = format!("Patient/{}", p["id"].as_str().unwrap_or_default());
            records.iter().any(|r| {
                r["resourceType"] == "AllergyIntolerance" && r["patient"]["reference"] == reference
            })
        })
        .expect("a patient with allergies");
    let baseline = summary(patient, &records);
    let condition = listed(&baseline, PROBLEMS)[0].clone();
    let immunization = listed(&baseline, IMMUNIZATIONS)[0].clone();

    let mut with_copies = records.clone();
    // The same resource again, updated later by a second node.
    with_copies.push(with_meta(
        condition.clone(),
        "2024-12-01T00:00:00Z",
        "http://node-b/fhir",
    ));
    // The same vaccination held by another node as another resource, updated later (the
    // sample's resources carry no lastUpdated, so any is later).
    let mut other_node = with_meta(
        immunization.clone(),
        "2024-12-01T00:00:00Z",
        "http://node-c/fhir",
    );
    other_node["id"] = json!("node-c-immunization");
    with_copies.push(other_node);
    let bundle = summary(patient, &with_copies);

    assert_eq!(
        bundle["entry"].as_array().map(Vec::len),
        baseline["entry"].as_array().map(Vec::len)
    );
    let kept = listed(&bundle, PROBLEMS)
        .into_iter()
        .find(|r| r["id"] == condition["id"])
        .expect("the condition");
    assert_eq!(kept["meta"]["source"], "http://node-b/fhir");
    let immunizations = listed_ids(&bundle, IMMUNIZATIONS);
    assert!(!immunizations.contains(&immunization["id"].as_str().unwrap_or_default().to_owned()));
    assert!(immunizations.contains(&"node-c-immunization".to_owned()));
}

#[test]
fn the_same_input_gives_the_same_document_whatever_its_order() {
    let Some(resources) = read_synthea() else {
        return;
    };
    let (patients, mut records) = split_patients(resources);
    let first = summary(&patients[0], &records);
    assert_eq!(first, summary(&patients[0], &records));
    records.reverse();
    assert_eq!(first, summary(&patients[0], &records));
}

#[test]
fn problems_are_the_current_conditions_not_entered_in_error_or_refuted() {
    let resources = [
        condition("active", "1", Some("active"), "confirmed"),
        condition("recurrence", "2", Some("recurrence"), "confirmed"),
        condition("relapse", "3", Some("relapse"), "confirmed"),
        condition("no-status", "4", None, "provisional"),
        condition("resolved", "5", Some("resolved"), "confirmed"),
        condition("inactive", "6", Some("inactive"), "confirmed"),
        condition("error", "7", None, "entered-in-error"),
        condition("refuted", "8", Some("active"), "refuted"),
    ];
    let bundle = summary(&patient("p1"), &resources);
    let mut ids = listed_ids(&bundle, PROBLEMS);
    ids.sort();
    assert_eq!(ids, ["active", "no-status", "recurrence", "relapse"]);
    assert_empty_required(&bundle, ALLERGIES);
    assert_empty_required(&bundle, MEDICATIONS);
    assert!(section(&bundle, IMMUNIZATIONS).is_none());
    assert!(section(&bundle, RESULTS).is_none());
}

#[test]
fn allergies_leave_out_entered_in_error_and_refuted() {
    let resources = [
        allergy("active", "active", "confirmed"),
        allergy("inactive", "inactive", "unconfirmed"),
        allergy("error", "active", "entered-in-error"),
        allergy("refuted", "active", "refuted"),
    ];
    let bundle = summary(&patient("p1"), &resources);
    let mut ids = listed_ids(&bundle, ALLERGIES);
    ids.sort();
    assert_eq!(ids, ["active", "inactive"]);
    assert_empty_required(&bundle, PROBLEMS);
}

#[test]
fn medications_are_current_or_recently_completed_with_their_medication() {
    let mut by_reference = medication_request("by-reference", "on-hold");
    by_reference
        .as_object_mut()
        .map(|r| r.remove("medicationCodeableConcept"));
    by_reference["medicationReference"] = json!({ "reference": "Medication/m1" });
    let mut unheld = medication_request("unheld-medication", "active");
    unheld
        .as_object_mut()
        .map(|r| r.remove("medicationCodeableConcept"));
    unheld["medicationReference"] =
        json!({ "reference": "Medication/elsewhere", "display": "Held elsewhere" });
    let resources = [
        medication_statement("ms-active", "active", "2025-06-01"),
        medication_statement("ms-intended", "intended", "2025-06-01"),
        medication_statement("ms-on-hold", "on-hold", "2025-06-01"),
        medication_statement("ms-recent", "completed", "2024-11-30"),
        medication_statement("ms-old", "completed", "2023-11-30"),
        medication_statement("ms-stopped", "stopped", "2024-11-30"),
        medication_request("mr-active", "active"),
        medication_request("mr-completed", "completed"),
        by_reference,
        unheld,
        json!({ "resourceType": "Medication", "id": "m1", "code": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "197361", "Amlodipine 5 MG") }),
        json!({ "resourceType": "Medication", "id": "unused", "code": concept("http://www.nlm.nih.gov/research/umls/rxnorm", "1", "Unused") }),
    ];
    let bundle = summary(&patient("p1"), &resources);
    let mut ids = listed_ids(&bundle, MEDICATIONS);
    ids.sort();
    assert_eq!(
        ids,
        [
            "by-reference",
            "mr-active",
            "ms-active",
            "ms-intended",
            "ms-on-hold",
            "ms-recent",
            "unheld-medication"
        ]
    );
    let medication_url = full_url_of(&bundle, "Medication", "m1").expect("the Medication entry");
    assert!(full_url_of(&bundle, "Medication", "unused").is_none());
    let listed = listed(&bundle, MEDICATIONS);
    let request = listed
        .iter()
        .find(|r| r["id"] == "by-reference")
        .expect("the request");
    assert_eq!(request["medicationReference"]["reference"], medication_url);
    let request = listed
        .iter()
        .find(|r| r["id"] == "unheld-medication")
        .expect("the request");
    assert_eq!(
        request["medicationReference"]["reference"],
        "Medication/elsewhere"
    );
    let div = section(&bundle, MEDICATIONS).expect("the section")["text"]["div"]
        .as_str()
        .unwrap_or_default();
    assert!(
        div.contains("Amlodipine 5 MG") && div.contains("Held elsewhere"),
        "{div}"
    );
    assert_eq!(
        bundle["entry"]
            .as_array()
            .and_then(|e| e.last())
            .map(|e| &e["resource"]["resourceType"]),
        Some(&json!("Medication"))
    );
}

#[test]
fn immunizations_are_the_completed_ones_and_absent_when_none() {
    let bundle = summary(
        &patient("p1"),
        &[
            immunization("done", "completed"),
            immunization("not", "not-done"),
        ],
    );
    assert_eq!(listed_ids(&bundle, IMMUNIZATIONS), ["done"]);
    let bundle = summary(&patient("p1"), &[immunization("not", "not-done")]);
    assert!(section(&bundle, IMMUNIZATIONS).is_none());
}

#[test]
fn results_are_recent_final_laboratory_observations_newest_first_at_most_fifty() {
    let mut resources = vec![
        observation("vital", "vital-signs", "final", "2024-12-01"),
        observation("preliminary", "laboratory", "preliminary", "2024-12-01"),
        observation("old", "laboratory", "final", "2023-12-01"),
        observation("amended", "laboratory", "amended", "2024-02-01"),
        observation(
            "corrected",
            "laboratory",
            "corrected",
            "2024-03-01T10:00:00+09:00",
        ),
    ];
    let bundle = summary(&patient("p1"), &resources);
    assert_eq!(listed_ids(&bundle, RESULTS), ["corrected", "amended"]);
    let div = section(&bundle, RESULTS).expect("results")["text"]["div"]
        .as_str()
        .unwrap_or_default();
    assert!(div.contains("95 mg/dL"), "{div}");

    for day in 1..=60 {
        let effective = format!("2024-10-{:02}", day % 30 + 1);
        let mut result = observation(&format!("lab-{day}"), "laboratory", "final", &effective);
        result["code"] = concept("http://loinc.org", &format!("{day}-0"), "Test");
        resources.push(result);
    }
    let bundle = summary(&patient("p1"), &resources);
    let listed = listed(&bundle, RESULTS);
    assert_eq!(listed.len(), MAX_RESULTS);
    let dates: Vec<&str> = listed
        .iter()
        .filter_map(|r| r["effectiveDateTime"].as_str())
        .collect();
    assert!(dates.windows(2).all(|pair| pair[0] >= pair[1]), "{dates:?}");
    assert_eq!(dates[0], "2024-10-30");
}

#[test]
fn only_records_of_the_persons_patients_are_used() {
    let mut golden = patient("golden");
    golden["link"] = json!([{ "other": { "reference": "Patient/linked" }, "type": "seealso" }]);
    let about = |id: &str, subject: &str| {
        let mut c = condition(id, id, Some("active"), "confirmed");
        c["subject"] = json!({ "reference": subject });
        c
    };
    let resources = [
        patient("source-a"),
        about("mine", "Patient/golden"),
        about("source", "Patient/source-a/_history/3"),
        about("linked", "Patient/linked"),
        about("absolute", "https://node-a/fhir/Patient/7"),
        about("conditional", "Patient?identifier=urn:oid:1.2|42"),
        about("someone-else", "Patient/stranger"),
        about("a-group", "Group/g1"),
    ];
    let bundle = summary(&golden, &resources);
    let mut ids = listed_ids(&bundle, PROBLEMS);
    ids.sort();
    assert_eq!(ids, ["absolute", "conditional", "linked", "mine", "source"]);
    let patient_url = &bundle["entry"][1]["fullUrl"];
    for resource in listed(&bundle, PROBLEMS) {
        match resource["id"].as_str() {
            Some("absolute" | "conditional") => {
                assert_ne!(&resource["subject"]["reference"], patient_url)
            }
            _ => assert_eq!(&resource["subject"]["reference"], patient_url),
        }
    }
    // The Patient is copied as it came: its link still names the source.
    assert_eq!(bundle["entry"][1]["resource"], golden);
}

#[test]
fn one_clinical_fact_from_two_nodes_is_listed_once() {
    let node_a = with_meta(
        condition("node-a-1", "44054006", Some("active"), "confirmed"),
        "2024-01-01T00:00:00Z",
        "http://node-a/fhir",
    );
    let mut node_b = with_meta(
        condition("node-b-9", "44054006", Some("active"), "confirmed"),
        "2024-06-01T00:00:00+09:00",
        "http://node-b/fhir",
    );
    node_b["onsetDateTime"] = json!("2020-05-01");
    let mut request = medication_request("mr", "active");
    request["reasonReference"] = json!([{ "reference": "Condition/node-a-1" }]);
    let stale_copy = with_meta(node_a.clone(), "2023-01-01T00:00:00Z", "http://node-z/fhir");
    let resources = [node_a, request, node_b, stale_copy];
    let bundle = summary(&patient("p1"), &resources);

    assert_eq!(listed_ids(&bundle, PROBLEMS), ["node-b-9"]);
    let kept = listed(&bundle, PROBLEMS)[0];
    assert_eq!(kept["meta"]["source"], "http://node-b/fhir");
    let reason = &listed(&bundle, MEDICATIONS)[0]["reasonReference"][0]["reference"];
    assert_eq!(
        reason.as_str(),
        full_url_of(&bundle, "Condition", "node-b-9")
    );
}

#[test]
fn one_moment_written_in_two_offsets_is_one_fact() {
    let mut tokyo = immunization("tokyo", "completed");
    tokyo["occurrenceDateTime"] = json!("2024-10-02T09:00:00+09:00");
    let mut utc = immunization("utc", "completed");
    utc["occurrenceDateTime"] = json!("2024-10-02T00:00:00Z");
    let bundle = summary(&patient("p1"), &[tokyo, utc]);
    assert_eq!(listed_ids(&bundle, IMMUNIZATIONS).len(), 1);
}

#[test]
fn narrative_values_are_xml_escaped() {
    let mut problem = condition("c1", "1", Some("active"), "confirmed");
    problem["code"]["text"] = json!("Fear of <script> & \"quotes\" >");
    let bundle = summary(&patient("p1"), &[problem]);
    let div = section(&bundle, PROBLEMS).expect("problems")["text"]["div"]
        .as_str()
        .unwrap_or_default();
    assert!(
        div.contains("Fear of &lt;script&gt; &amp; &quot;quotes&quot; &gt;"),
        "{div}"
    );
    let xhtml = roxmltree::Document::parse(div).expect("well-formed XHTML");
    let cells: Vec<_> = xhtml
        .descendants()
        .filter(|n| n.has_tag_name("td"))
        .collect();
    assert_eq!(cells[0].text(), Some("Fear of <script> & \"quotes\" >"));
}

#[test]
fn the_document_names_itself_its_time_and_its_author() {
    let bundle = summary(&patient("p1"), &[]);
    assert_eq!(bundle["type"], "document");
    assert_eq!(bundle["timestamp"], "2025-01-01T00:00:00Z");
    assert_eq!(bundle["identifier"]["system"], "urn:ietf:rfc:3986");
    assert_eq!(
        bundle["identifier"]["value"],
        format!("urn:uuid:{DOCUMENT_ID}")
    );
    let composition = &bundle["entry"][0]["resource"];
    assert_eq!(composition["id"], DOCUMENT_ID);
    assert_eq!(composition["status"], "final");
    assert_eq!(composition["type"]["coding"][0]["code"], "60591-5");
    assert_eq!(composition["date"], "2025-01-01T00:00:00Z");
    assert_eq!(composition["title"], "International Patient Summary");
    assert_eq!(composition["author"], json!([{ "display": "Renkei" }]));
    for loinc in [PROBLEMS, ALLERGIES, MEDICATIONS] {
        assert_empty_required(&bundle, loinc);
    }

    let patient = patient("p1");
    let mut with_author = request(&patient, &[]);
    let hub = json!({ "reference": "Organization/hub", "display": "Renkei hub" });
    with_author.author = Some(hub.clone());
    let bundle = compose(&with_author).expect("a summary");
    assert_eq!(bundle["entry"][0]["resource"]["author"], json!([hub]));
}

#[test]
fn requests_that_cannot_make_a_summary_are_refused() {
    let patient = patient("p1");
    let not_a_patient = json!({ "resourceType": "Group", "id": "g" });
    assert_eq!(
        compose(&request(&not_a_patient, &[])),
        Err(SummaryError::NotAPatient {
            found: "Group".to_owned()
        })
    );
    let no_id = json!({ "resourceType": "Patient" });
    assert_eq!(
        compose(&request(&no_id, &[])),
        Err(SummaryError::PatientWithoutId)
    );
    let mut bad = request(&patient, &[]);
    bad.document_id = "doc-1".to_owned();
    assert!(matches!(
        compose(&bad),
        Err(SummaryError::DocumentIdNotUuid { .. })
    ));
    let mut bad = request(&patient, &[]);
    bad.author = Some(json!("Renkei"));
    assert_eq!(compose(&bad), Err(SummaryError::AuthorNotAReference));
    for days in [-1, i64::MAX] {
        let mut bad = request(&patient, &[]);
        bad.recent_results_days = days;
        assert_eq!(
            compose(&bad),
            Err(SummaryError::RecentWindowOutOfRange { days })
        );
    }
}
