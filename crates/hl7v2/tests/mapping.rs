//! Every mapped message type, in JAHIS and US style, gives a transaction Bundle whose every
//! resource is valid FHIR R4, with provenance, conditional writes and the expected content.

use std::sync::Arc;

use chrono::{FixedOffset, LocalResult, NaiveDate, NaiveDateTime};
use hl7v2::Severity;
use hl7v2::fhir::{
    MappingOptions, TimeZone, ZoneRules, apply_merge, retraction, to_transaction_with,
};
use hl7v2::generate::{Generated, Generator, Style};
use serde_json::{Value, json};

fn options() -> MappingOptions {
    MappingOptions::with_utc_offset("+09:00").unwrap()
}

/// Parse, map and validate; returns the bundle.
fn check(generated: &Generated) -> Value {
    let message = hl7v2::parse(&generated.bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", generated.message_type));
    let mapped = to_transaction_with(&message, &options())
        .unwrap_or_else(|e| panic!("{}: {e}\n{message}", generated.message_type));
    assert_eq!(mapped.warnings, [], "{}", generated.message_type);
    let bundle = mapped.bundle;
    if let Err(e) = fhir::validate_resource(&bundle) {
        panic!(
            "{}: invalid bundle: {e:?}\n{bundle:#}",
            generated.message_type
        );
    }
    let entries = bundle["entry"].as_array().expect("entries");
    assert!(entries.len() >= 2, "{}: {bundle:#}", generated.message_type);
    for entry in entries {
        let resource = &entry["resource"];
        if let Err(e) = fhir::validate_resource(resource) {
            panic!(
                "{}: invalid {}: {e:?}\n{resource:#}",
                generated.message_type, resource["resourceType"]
            );
        }
        let source = resource["meta"]["source"].as_str().expect("meta.source");
        assert!(
            source.ends_with(&format!("#{}", generated.control_id)),
            "{source}"
        );
        let method = entry["request"]["method"].as_str().unwrap();
        let url = entry["request"]["url"].as_str().unwrap();
        match resource["resourceType"].as_str().unwrap() {
            "Provenance" => assert_eq!(method, "PUT"),
            _ => assert!(
                (method == "PUT" && url.contains("?identifier="))
                    || (method == "POST" && entry["request"]["ifNoneExist"].is_string()),
                "{entry:#}"
            ),
        }
        assert!(entry["fullUrl"].as_str().unwrap().starts_with("urn:uuid:"));
    }
    // One Provenance targeting every other entry.
    let provenance = &entries.last().unwrap()["resource"];
    assert_eq!(provenance["resourceType"], "Provenance");
    assert_eq!(
        provenance["target"].as_array().unwrap().len(),
        entries.len() - 1
    );
    assert_eq!(
        provenance["entity"][0]["what"]["identifier"]["value"],
        generated.control_id.as_str()
    );
    // The same message maps to the same bundle (idempotent re-processing).
    assert_eq!(
        to_transaction_with(&message, &options()).unwrap().bundle,
        bundle
    );
    bundle
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

#[test]
fn every_adt_event_in_both_styles() {
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(7, style);
        let p = g.person();
        for event in [
            "A01", "A02", "A03", "A04", "A05", "A08", "A11", "A13", "A28", "A31",
        ] {
            let bundle = check(&g.adt(&p, event));
            assert_eq!(resources(&bundle, "Patient").len(), 1, "{event}");
            let encounters = resources(&bundle, "Encounter");
            let expect_encounter =
                !(matches!(event, "A28" | "A31") || (style == Style::Jahis && event == "A08"));
            assert_eq!(encounters.len(), usize::from(expect_encounter), "{event}");
            if let Some(e) = encounters.first() {
                let status = match event {
                    "A03" => "finished",
                    "A04" => "arrived",
                    "A05" => "planned",
                    "A11" => "cancelled",
                    _ => "in-progress",
                };
                assert_eq!(e["status"], status, "{event}");
                assert!(!resources(&bundle, "Location").is_empty(), "{event}");
                assert!(!resources(&bundle, "Practitioner").is_empty(), "{event}");
            }
        }
    }
}

#[test]
fn jahis_names_use_jp_core_representation() {
    let mut g = Generator::new(1, Style::Jahis);
    let p = g.person();
    let bundle = check(&g.adt(&p, "A08"));
    let patient = resources(&bundle, "Patient")[0];
    let names = patient["name"].as_array().unwrap();
    assert_eq!(names.len(), 2);
    let rep = |n: &Value| n["extension"][0]["valueCode"].as_str().unwrap().to_owned();
    assert_eq!(rep(&names[0]), "IDE");
    assert_eq!(rep(&names[1]), "SYL");
    assert_eq!(names[0]["family"], p.name.0.as_str());
    assert_eq!(names[1]["given"][0], p.kana.unwrap().1.as_str());
    assert_eq!(
        patient["identifier"][0]["system"],
        "urn:renkei:id:1310000001:pi"
    );
    assert_eq!(patient["identifier"][0]["value"], p.id.as_str());
    let postal_code = p.address.split('^').nth(4).unwrap();
    assert_eq!(postal_code.len(), 7);
    assert_eq!(patient["address"][0]["postalCode"], postal_code);
    // ADT is authoritative for demographics: conditional update.
    let entry = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(entry["request"]["method"], "PUT");
}

#[test]
fn lab_results_both_styles() {
    let mut g = Generator::new(3, Style::Us);
    let p = g.person();
    let bundle = check(&g.lab_result(&p));
    let obs = resources(&bundle, "Observation");
    assert_eq!(obs.len(), 7);
    let hgb = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "718-7")
        .unwrap();
    assert_eq!(hgb["valueQuantity"]["system"], "http://unitsofmeasure.org");
    assert_eq!(hgb["valueQuantity"]["code"], "g/dL");
    assert_eq!(hgb["referenceRange"][0]["low"]["value"], json!(13.5));
    assert_eq!(hgb["note"][0]["text"], "Repeat testing advised");
    assert!(hgb["interpretation"][0]["coding"][0]["code"].is_string());
    assert_eq!(hgb["effectiveDateTime"].as_str().unwrap().len(), 25);
    let crp = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "1988-5")
        .unwrap();
    assert_eq!(crp["valueQuantity"]["comparator"], "<");
    let color = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "5778-6")
        .unwrap();
    assert_eq!(
        color["valueCodeableConcept"]["coding"][0]["code"],
        "LA16218-8"
    );
    let comment = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "8251-1")
        .unwrap();
    assert_eq!(
        comment["valueString"],
        "Specimen received\nslightly hemolyzed"
    );
    let report = resources(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["result"].as_array().unwrap().len(), 7);
    assert_eq!(report["status"], "final");
    assert_eq!(resources(&bundle, "Specimen").len(), 1);
    // A result only mentions the patient: conditional create.
    let entry = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Patient")
        .unwrap();
    assert_eq!(entry["request"]["method"], "POST");

    let mut g = Generator::new(3, Style::Jahis);
    let p = g.person();
    let bundle = check(&g.lab_result(&p));
    let obs = resources(&bundle, "Observation");
    assert_eq!(obs.len(), 6);
    assert_eq!(
        obs[0]["code"]["coding"][0]["system"],
        "urn:oid:1.2.392.200119.4.504"
    );
    assert_eq!(obs[0]["code"]["coding"][0]["display"], "総蛋白");
    assert_eq!(obs[5]["valueString"], "溶血（＋）");
    assert_eq!(
        resources(&bundle, "Specimen")[0]["type"]["coding"][0]["display"],
        "血清"
    );
}

#[test]
fn orders_prescriptions_dispenses() {
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(11, style);
        let p = g.person();
        let bundle = check(&g.lab_order(&p));
        let sr = resources(&bundle, "ServiceRequest");
        assert_eq!(sr.len(), 1);
        assert_eq!(sr[0]["status"], "active");
        assert_eq!(sr[0]["intent"], "order");
        assert!(sr[0]["requester"]["reference"].is_string());

        let rx = g.prescription(&p);
        let bundle = check(&rx);
        let mr = resources(&bundle, "MedicationRequest");
        assert!(!mr.is_empty());
        assert_eq!(
            mr[0]["dispenseRequest"]["expectedSupplyDuration"]["code"],
            "d"
        );
        assert_eq!(
            mr[0]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"],
            json!(1)
        );
        assert_eq!(mr[0]["dispenseRequest"]["quantity"]["value"], json!(21));
        if style == Style::Jahis {
            assert_eq!(
                mr[0]["medicationCodeableConcept"]["coding"][0]["system"],
                "urn:oid:1.2.392.200119.4.403.1"
            );
            assert_eq!(
                mr[0]["dosageInstruction"][0]["text"],
                "内服・経口・１日３回朝昼夕食後"
            );
        }
    }
    let mut g = Generator::new(12, Style::Jahis);
    let p = g.person();
    let bundle = check(&g.dispense(&p));
    let md = resources(&bundle, "MedicationDispense");
    assert_eq!(md.len(), 1);
    assert_eq!(md[0]["quantity"]["value"], json!(21));
    assert!(
        md[0]["authorizingPrescription"][0]["reference"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
}

#[test]
fn allergies_immunizations_problems() {
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(5, style);
        let p = g.person();
        let bundle = check(&g.allergies(&p));
        let a = resources(&bundle, "AllergyIntolerance");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["category"][0], "food");
        assert_eq!(a[0]["reaction"][0]["severity"], "moderate");
        assert_eq!(a[0]["onsetDateTime"], "2015-04-01");

        let bundle = check(&g.adt(&p, "A01"));
        assert_eq!(
            resources(&bundle, "AllergyIntolerance")[0]["category"][0],
            "medication"
        );

        let bundle = check(&g.immunization(&p));
        let i = resources(&bundle, "Immunization");
        assert_eq!(i[0]["status"], "completed");
        assert_eq!(
            i[0]["vaccineCode"]["coding"][0]["system"],
            "http://hl7.org/fhir/sid/cvx"
        );
        assert_eq!(i[0]["doseQuantity"]["code"], "mL");
        assert_eq!(i[0]["primarySource"], true);

        let bundle = check(&g.problems(&p));
        let c = resources(&bundle, "Condition");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0]["clinicalStatus"]["coding"][0]["code"], "active");
        assert_eq!(c[0]["onsetDateTime"], "2020-01-01");
    }
}

#[test]
fn a40_merge_links_and_instruction() {
    for style in [Style::Jahis, Style::Us] {
        let mut g = Generator::new(9, style);
        let p = g.person();
        let generated = g.merge(&p, "OLD0001");
        let bundle = check(&generated);
        let message = hl7v2::parse(&generated.bytes).unwrap();
        let mapped = to_transaction_with(&message, &options()).unwrap();
        assert_eq!(mapped.merges.len(), 1);
        assert_eq!(mapped.merges[0].retired[0]["value"], "OLD0001");
        assert_eq!(mapped.merges[0].surviving["value"], p.id.as_str());
        let patient = resources(&bundle, "Patient")[0];
        assert_eq!(patient["link"][0]["type"], "replaces");
        assert_eq!(
            patient["link"][0]["other"]["identifier"]["value"],
            "OLD0001"
        );

        let old = json!({"resourceType": "Patient", "id": "old", "identifier": [mapped.merges[0].retired[0]]});
        let surviving = json!({"reference": "Patient/new"});
        let retired = apply_merge(&old, &surviving);
        assert_eq!(apply_merge(&retired, &surviving), retired, "idempotent");
        assert_eq!(retired["active"], false);
        assert_eq!(retired["link"][0]["type"], "replaced-by");
        fhir::validate_resource(&retired).unwrap();
    }
}

#[test]
fn mapping_errors_name_the_field() {
    let check_err = |text: &str, expected: &str| {
        let m = hl7v2::parse(text.as_bytes()).unwrap();
        let err = hl7v2::fhir::to_transaction(&m).unwrap_err();
        let loc = err
            .detail()
            .location
            .map(|l| l.to_string())
            .unwrap_or_default();
        assert_eq!(
            format!("{} @ {loc}", err.detail().code.code()),
            expected,
            "{err}"
        );
    };
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||\rPV1|1|I\r",
        "101 @ PID[1]-3[1]",
    );
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||9^^^^PI||||19701301\r",
        "102 @ PID[1]-7[1]",
    );
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ORU^R01|1|P|2.5\rPID|1||9^^^^PI\rOBR|1||F1|X^Y^LN\rOBX|1|NM|A^B^LN||high\r",
        "102 @ OBX[1]-5[1]",
    );
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ADT^A01|1|P|2.5\rEVN|A01\rPID|1||9\rOBX|1\rPV1|1\r",
        "100 @ PV1[1]",
    );
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ADT^A99|1|P|2.5\rEVN|A01\r",
        "200 @ MSH[1]-9[1]",
    );
    check_err(
        "MSH|^~\\&|A|F|R|H|20260101||ADT^A01|1|P|2.2\rEVN|A01\r",
        "203 @ MSH[1]-12[1]",
    );
}

/// A zone whose offset changes on 2024-03-10 at 02:00 (US Eastern's spring change), with the
/// skipped hour.
#[derive(Debug)]
struct SpringForward;

impl ZoneRules for SpringForward {
    fn name(&self) -> &str {
        "Test/Spring"
    }

    fn offsets(&self, local: NaiveDateTime) -> LocalResult<FixedOffset> {
        let change = NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(2, 0, 0)
            .unwrap();
        if local < change {
            LocalResult::Single(FixedOffset::west_opt(5 * 3600).unwrap())
        } else if local < change + chrono::Duration::hours(1) {
            LocalResult::None
        } else {
            LocalResult::Single(FixedOffset::west_opt(4 * 3600).unwrap())
        }
    }
}

#[test]
fn times_without_offset_keep_their_time_of_day() {
    let oru = |obx14: &str| {
        hl7v2::parse(
            format!(
                "MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20240115113000||ORU^R01|T1|P|2.5.1\r\
                 PID|1||9^^^GENHOSP^MR\rOBR|1||F1|X^Y^LN\r\
                 OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||F|||{obx14}\r"
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let effective = |mapped: &hl7v2::fhir::Mapped| {
        let bundle = &mapped.bundle;
        let obs = resources(bundle, "Observation");
        let recorded = resources(bundle, "Provenance")[0]["recorded"].clone();
        (obs[0]["effectiveDateTime"].clone(), recorded)
    };
    // A fixed offset.
    let mapped = to_transaction_with(&oru("20240115110000"), &options()).unwrap();
    assert_eq!(
        effective(&mapped),
        (
            json!("2024-01-15T11:00:00+09:00"),
            json!("2024-01-15T11:30:00+09:00")
        )
    );
    assert_eq!(mapped.warnings, []);
    // A zone's rules: the offset in force on that date.
    let zone = MappingOptions {
        time_zone: Some(TimeZone::Rules(Arc::new(SpringForward))),
    };
    let mapped = to_transaction_with(&oru("20240115110000"), &zone).unwrap();
    assert_eq!(effective(&mapped).0, json!("2024-01-15T11:00:00-05:00"));
    let mapped = to_transaction_with(&oru("20240715110000"), &zone).unwrap();
    assert_eq!(effective(&mapped).0, json!("2024-07-15T11:00:00-04:00"));
    assert_eq!(mapped.warnings, []);
    // A time the zone skipped is an error naming OBX-14.
    let err = to_transaction_with(&oru("20240310023000"), &zone).unwrap_err();
    let detail = err.detail();
    assert_eq!(
        (detail.code.code(), detail.location.unwrap().to_string()),
        ("102", "OBX[1]-14[1]".to_owned()),
        "{err}"
    );
    // No zone at all (a library caller that set none): the date, and warnings saying so.
    let mapped = to_transaction_with(&oru("20240115110000"), &MappingOptions::default()).unwrap();
    assert_eq!(
        effective(&mapped),
        (json!("2024-01-15"), json!("2024-01-15T11:30:00Z"))
    );
    let warned: Vec<String> = mapped
        .warnings
        .iter()
        .map(|w| w.location.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(warned, ["OBX[1]-14[1]", "MSH[1]-7[1]"]);
    assert!(
        mapped
            .warnings
            .iter()
            .all(|w| w.severity == Severity::Warning)
    );
}

#[test]
fn retraction_marks_records_entered_in_error_and_leaves_patients_alone() {
    let mut g = Generator::new(21, Style::Jahis);
    let p = g.person();
    for generated in [
        g.adt(&p, "A01"),
        g.lab_result(&p),
        g.prescription(&p),
        g.allergies(&p),
        g.problems(&p),
    ] {
        let message = hl7v2::parse(&generated.bytes).unwrap();
        let mapped = to_transaction_with(&message, &options()).unwrap();
        let bundle = retraction(&mapped);
        fhir::validate_resource(&bundle).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            let r = &entry["resource"];
            fhir::validate_resource(r).unwrap();
            match r["resourceType"].as_str().unwrap() {
                "Patient" | "Practitioner" | "Location" => {
                    assert_eq!(entry["request"]["method"], "POST", "{entry:#}");
                }
                "Condition" | "AllergyIntolerance" => {
                    assert_eq!(
                        r["verificationStatus"]["coding"][0]["code"],
                        "entered-in-error"
                    );
                    assert!(r.get("clinicalStatus").is_none());
                }
                "Provenance" => {
                    assert!(r["id"].as_str().unwrap().ends_with("-r"));
                    assert_eq!(r["activity"]["coding"][0]["code"], "NULLIFY");
                }
                _ => assert_eq!(r["status"], "entered-in-error", "{r:#}"),
            }
        }
    }
}

/// Hand-written messages for structures the generator does not produce.
fn check_text(text: &str) -> Value {
    let control_id = text.split('|').nth(9).unwrap().to_owned();
    check(&Generated {
        bytes: text.as_bytes().to_vec(),
        message_type: text.split('|').nth(8).unwrap().to_owned(),
        patient_id: String::new(),
        care_date: None,
        order_number: None,
        control_id,
    })
}

#[test]
fn omp_o09_pharmacy_order() {
    let bundle = check_text(
        "MSH|^~\\&|CPOE|GENHOSP|RENKEI|HIE|20260301101500-0500||OMP^O09^OMP_O09|OMP1|P|2.5.1\r\
PID|1||MRN1^^^GENHOSP^MR||Doe^Jane||19800101|F\r\
ORC|NW|RX778|||||||20260301101500-0500|||1234^Welby^Marcus\r\
TQ1|||BID^twice a day^HL70335\r\
RXO|197361^Amlodipine 5 MG Oral Tablet^RXNORM|5||mg^mg^UCUM\r\
RXR|PO^Oral^HL70162\r",
    );
    let mr = resources(&bundle, "MedicationRequest");
    assert_eq!(mr.len(), 1);
    assert_eq!(
        mr[0]["medicationCodeableConcept"]["coding"][0]["system"],
        "http://www.nlm.nih.gov/research/umls/rxnorm"
    );
    assert_eq!(
        mr[0]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["code"],
        "mg"
    );
    assert_eq!(
        mr[0]["dosageInstruction"][0]["route"]["coding"][0]["code"],
        "PO"
    );
    assert_eq!(mr[0]["authoredOn"], "2026-03-01T10:15:00-05:00");
    assert!(mr[0]["requester"]["reference"].is_string());
}

#[test]
fn oml_o21_lab_order_with_specimen() {
    let bundle = check_text(
        "MSH|^~\\&|CPOE|GENHOSP|LAB|GENHOSP|20260301101500-0500||OML^O21^OML_O21|OML1|P|2.5.1\r\
PID|1||MRN2^^^GENHOSP^MR||Roe^Richard||19700101|M\r\
PV1|1|O|CLINIC^^^GENHOSP||||||||||||||||V77^^^GENHOSP^VN\r\
ORC|NW|PL55|FL55||||||20260301101500-0500\r\
OBR|1|PL55|FL55|2345-7^Glucose^LN|||20260301101500-0500||||||||||||||||||||^^^^^S\r\
SPM|1|SP55^SP55F||119297000^Blood specimen^SCT\r",
    );
    let sr = resources(&bundle, "ServiceRequest");
    assert_eq!(sr.len(), 1);
    assert_eq!(
        sr[0]["identifier"].as_array().unwrap().len(),
        2,
        "placer and filler"
    );
    assert_eq!(sr[0]["priority"], "stat");
    assert!(sr[0]["encounter"]["reference"].is_string());
    assert_eq!(
        resources(&bundle, "Specimen")[0]["identifier"][0]["value"],
        "SP55F"
    );
}

#[test]
fn version_2_3_messages() {
    // v2.3: MSH-9 without structure, PID-2 external id, ORM^O01.
    let bundle = check_text(
        "MSH|^~\\&|OLD|CLINIC|RENKEI|HIE|199912011230||ORM^O01|X23|P|2.3\r\
PID|1|EXT9^^^CLINIC|LOC9^^^CLINIC^MR||Old^Timer||19300101|M\r\
ORC|NW|ORD9\r\
OBR|1|ORD9||71020^Chest X-ray^C4\r",
    );
    let patient = resources(&bundle, "Patient")[0];
    assert_eq!(patient["identifier"].as_array().unwrap().len(), 2);
    assert_eq!(
        resources(&bundle, "ServiceRequest")[0]["code"]["coding"][0]["code"],
        "71020"
    );
}

#[test]
fn generated_people_have_homes_of_their_own() {
    for style in [Style::Us, Style::Jahis] {
        let mut g = Generator::new(7, style);
        let people: Vec<_> = (0..500).map(|_| g.person()).collect();
        let addresses: std::collections::BTreeSet<_> = people.iter().map(|p| &p.address).collect();
        let phones: std::collections::BTreeSet<_> = people.iter().map(|p| &p.phone).collect();
        // A patient index treats a shared name, address and phone as one person.
        assert!(
            addresses.len() > 490,
            "{style:?}: {} addresses",
            addresses.len()
        );
        assert!(phones.len() > 490, "{style:?}: {} phones", phones.len());
        let p = &people[0];
        let bundle = check(&g.adt(p, "A08"));
        let patient = resources(&bundle, "Patient")[0];
        assert!(
            patient["address"][0]["postalCode"].is_string(),
            "{style:?}: {patient}"
        );
        let phone = patient["telecom"][0]["value"].as_str().unwrap();
        assert!(
            phone.chars().filter(char::is_ascii_digit).count() >= 9,
            "{style:?}: {phone}"
        );
    }
}
