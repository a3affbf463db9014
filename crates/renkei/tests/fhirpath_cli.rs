//! End-to-end tests of `renkei fhirpath`: the real binary, a resource file, stdout and exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::{Value, json};

fn resource_file(name: &str, resource: &Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("renkei-fhirpath-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, resource.to_string()).unwrap();
    path
}

fn renkei_fhirpath(resource: &PathBuf, expression: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["fhirpath", "--resource"])
        .arg(resource)
        .arg(expression)
        .output()
        .expect("the renkei binary runs")
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "gender": "female",
        "name": [{"use": "official", "family": "山田", "given": ["花子"]}, {"use": "usual", "given": ["Hana"]}],
        "contained": [{"resourceType": "Organization", "id": "org", "name": "Clinic"}],
        "managingOrganization": {"reference": "#org"}
    })
}

#[test]
fn prints_typed_items_in_order() {
    let file = resource_file("patient.json", &patient());
    let out = renkei_fhirpath(
        &file,
        "Patient.name.given | Patient.birthDate | Patient.gender | 1 + 1 | 2.5 'mg'",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result,
        json!([
            {"type": "string", "value": "花子"},
            {"type": "string", "value": "Hana"},
            {"type": "date", "value": "1974-12-25"},
            {"type": "code", "value": "female"},
            {"type": "integer", "value": 2},
            {"type": "Quantity", "value": {"value": 2.5, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}
        ])
    );
}

#[test]
fn navigates_extensions_and_contained_references() {
    let file = resource_file("patient-ext.json", &patient());
    let out = renkei_fhirpath(
        &file,
        "birthDate.extension(%`ext-patient-birthTime`).value | managingOrganization.resolve().name",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result,
        json!([
            {"type": "dateTime", "value": "1974-12-25T14:35:45-05:00"},
            {"type": "string", "value": "Clinic"}
        ])
    );
}

#[test]
fn empty_result_is_an_empty_array() {
    let file = resource_file("patient-empty.json", &patient());
    let out = renkei_fhirpath(&file, "Patient.deceased");
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
}

#[test]
fn syntax_error_exits_non_zero_with_the_position() {
    let file = resource_file("patient-syntax.json", &patient());
    let out = renkei_fhirpath(&file, "name.where(use = 'official'");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("syntax error at position 27"), "{stderr}");
    assert!(stderr.contains("expected ')'"), "{stderr}");
}

#[test]
fn unknown_element_is_a_semantic_error() {
    let file = resource_file("patient-semantic.json", &patient());
    let out = renkei_fhirpath(&file, "name.given1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'given1' is not an element of HumanName"),
        "{stderr}"
    );
}

#[test]
fn evaluation_error_names_the_function() {
    let file = resource_file("patient-eval.json", &patient());
    let out = renkei_fhirpath(&file, "name.given.single()");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("single: expected a single item"),
        "{stderr}"
    );
}

#[test]
fn unreadable_resource_is_reported() {
    let out = renkei_fhirpath(&PathBuf::from("/nonexistent/patient.json"), "name");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/patient.json"));
}

/// `--strict` refuses an order-dependent function on a collection without a defined order (the
/// official suite's `testDollarOrderNotAllowed`); on an ordered one it answers.
#[test]
fn strict_mode_refuses_ordered_functions_on_unordered_collections() {
    let file = resource_file("patient-strict.json", &patient());
    let run = |expression: &str, strict: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_renkei"));
        cmd.args(["fhirpath", "--resource"])
            .arg(&file)
            .arg(expression);
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().expect("the renkei binary runs")
    };
    let refused = run("Patient.children().skip(1)", true);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("skip"), "{stderr}");
    assert!(run("Patient.children().skip(1)", false).status.success());
    let ordered = run("Patient.name.skip(1).given", true);
    assert!(ordered.status.success(), "{ordered:?}");
    let items: Value = serde_json::from_slice(&ordered.stdout).unwrap();
    assert_eq!(items[0]["value"], "Hana");
}

/// A reader that goes away (`renkei fhirpath ... | head -0`) ends the command quietly: no
/// panic, no error.
#[test]
fn a_closed_standard_output_is_not_a_panic() {
    let file = resource_file("patient-pipe.json", &patient());
    let mut child = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["fhirpath", "--resource"])
        .arg(&file)
        .arg("Patient.name.given")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the renkei binary runs");
    // Close the only reader before the command has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
