//! Structural validation: real data validates cleanly (Synthea bulk export, the FHIRPath
//! suite's official examples), and each kind of defect is reported with its exact code and
//! expression.

use std::path::{Path, PathBuf};

use fhir::{IssueCode, ValidationIssue, validate_resource};
use serde_json::{Value, json};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

fn issues(resource: &Value) -> Vec<ValidationIssue> {
    match validate_resource(resource) {
        Ok(()) => Vec::new(),
        Err(err) => err.issues,
    }
}

/// `resource` fails with exactly these (code, expression) issues, in document order.
#[track_caller]
fn check(resource: Value, expected: &[(IssueCode, &str)]) {
    let found: Vec<(IssueCode, String)> = issues(&resource)
        .into_iter()
        .map(|i| (i.code, i.expression))
        .collect();
    let expected: Vec<(IssueCode, String)> = expected
        .iter()
        .map(|(c, e)| (*c, (*e).to_owned()))
        .collect();
    assert_eq!(found, expected, "for {resource}");
}

#[track_caller]
fn valid(resource: Value) {
    check(resource, &[]);
}

fn patient(extra: Value) -> Value {
    let mut p = json!({"resourceType": "Patient", "id": "p1"});
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

fn observation(extra: Value) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "weight"}
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

#[test]
fn synthea_resources_validate_cleanly() {
    let dir = shared().join("data/synthea-10");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson") && !p.ends_with("log.ndjson"))
        .collect();
    files.sort();
    let mut count = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable");
        for (n, line) in text.lines().enumerate() {
            let resource: Value = serde_json::from_str(line).expect("JSON");
            if let Err(err) = validate_resource(&resource) {
                panic!("{}:{}: {:#?}", file.display(), n + 1, err.issues);
            }
            count += 1;
        }
    }
    assert!(count > 7000, "only {count} resources");
}

/// The FHIRPath suite's example resources validate cleanly, except three with genuine
/// defects, each reported exactly:
///
/// - `explanationofbenefit-example.json` is cut down to the elements its tests use, so it
///   lacks every required element of an R4 ExplanationOfBenefit;
/// - `parameters-example-types.json` writes one uuid as `"valueUuid": {"value": "urn:uuid:..."}`
///   (the XML form carried into JSON; in JSON a primitive is a bare string);
/// - `patient-container-example.json` refers to its contained Organization as `"1"`, not `"#1"`.
#[test]
fn official_examples_validate_cleanly() {
    use IssueCode::{Required, Structure, Value as BadValue};
    let known_defects: &[(&str, &[(IssueCode, &str)])] = &[
        (
            "explanationofbenefit-example.json",
            &[
                (Required, "ExplanationOfBenefit.item[0].productOrService"),
                (Required, "ExplanationOfBenefit.item[1].productOrService"),
                (Required, "ExplanationOfBenefit.status"),
                (Required, "ExplanationOfBenefit.type"),
                (Required, "ExplanationOfBenefit.use"),
                (Required, "ExplanationOfBenefit.patient"),
                (Required, "ExplanationOfBenefit.created"),
                (Required, "ExplanationOfBenefit.insurer"),
                (Required, "ExplanationOfBenefit.provider"),
                (Required, "ExplanationOfBenefit.outcome"),
                (Required, "ExplanationOfBenefit.insurance"),
            ],
        ),
        (
            "parameters-example-types.json",
            &[(Structure, "Parameters.parameter[2].valueUuid")],
        ),
        (
            "patient-container-example.json",
            &[(BadValue, "Patient.managingOrganization.reference")],
        ),
    ];
    let dir = shared().join("fhirpath/input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    assert_eq!(files.len(), 11);
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let resource: Value = serde_json::from_str(&text).expect("JSON");
        let expected = known_defects
            .iter()
            .find(|(name, _)| path.ends_with(name))
            .map_or(&[][..], |(_, issues)| issues);
        check(resource, expected);
    }
}

#[test]
fn minimal_and_rich_resources_are_valid() {
    valid(json!({"resourceType": "Patient"}));
    valid(patient(json!({
        "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05.678+09:00"},
        "name": [{"family": "山田", "given": ["太郎"], "text": "山田\u{3000}太郎"}],
        "birthDate": "1970-01",
        "_birthDate": {"extension": [{"url": "http://example.org/x", "valueBoolean": true}]},
        "deceasedBoolean": false,
        "multipleBirthInteger": 2,
        "contact": [{"name": {"family": "X"}, "telecom": [{"system": "phone", "value": "1"}]}],
        "managingOrganization": {"reference": "Organization/o-1"},
        "generalPractitioner": [
            {"reference": "https://example.org/fhir/Practitioner/9/_history/2"},
            {"reference": "urn:uuid:2b3d4b7a-9c1e-4c35-8d52-1f6a2a3b4c5d"},
            {"reference": "PractitionerRole?identifier=http://x|1"},
            {"display": "no reference at all"}
        ]
    })));
    valid(observation(json!({
        "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "valueQuantity": {"value": 1.50, "unit": "kg"},
        "component": [{"code": {"text": "x"}, "valueSampledData": {
            "origin": {"value": 0}, "period": 1.0e3, "dimensions": 1, "data": "1 2 E"
        }}]
    })));
    // Primitive arrays with extensions: null placeholders paired with the _ array.
    valid(patient(json!({
        "name": [{"given": ["A", null], "_given": [null, {"extension": [{"url": "u", "valueCode": "x"}]}]}]
    })));
    // Content references and nested backbones.
    valid(json!({
        "resourceType": "Questionnaire", "status": "draft",
        "item": [{"linkId": "1", "type": "group", "item": [{"linkId": "1.1", "type": "string",
            "enableWhen": [{"question": "1", "operator": "exists", "answerBoolean": true}]}]}]
    }));
    // A transaction Bundle: nested resources are validated as resources.
    valid(json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"fullUrl": "urn:uuid:2b3d4b7a-9c1e-4c35-8d52-1f6a2a3b4c5d",
            "resource": {"resourceType": "Patient", "active": true},
            "request": {"method": "POST", "url": "Patient"}}]
    }));
}

#[test]
fn required_primitive_given_only_by_its_extension() {
    valid(json!({
        "resourceType": "Observation",
        "_status": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]},
        "code": {"text": "x"}
    }));
}

#[test]
fn resource_type() {
    check(json!({"id": "x"}), &[(IssueCode::Required, "resourceType")]);
    check(
        json!({"resourceType": "Patientt"}),
        &[(IssueCode::Invalid, "resourceType")],
    );
    check(
        json!({"resourceType": "DomainResource"}),
        &[(IssueCode::Invalid, "resourceType")],
    );
    check(
        json!({"resourceType": 1}),
        &[(IssueCode::Structure, "resourceType")],
    );
    check(json!(["Patient"]), &[(IssueCode::Structure, "")]);
}

#[test]
fn unknown_elements() {
    check(
        patient(json!({"foo": 1})),
        &[(IssueCode::Structure, "Patient.foo")],
    );
    check(
        patient(json!({"name": [{"family": "A"}, {"given": ["B"], "middle": "C"}]})),
        &[(IssueCode::Structure, "Patient.name[1].middle")],
    );
    check(
        patient(json!({"contact": [{"nickname": "x"}]})),
        &[(IssueCode::Structure, "Patient.contact[0].nickname")],
    );
    // Choice elements need a valid type suffix, and only the suffix of an allowed type.
    check(
        observation(json!({"value": "x"})),
        &[(IssueCode::Structure, "Observation.value")],
    );
    check(
        observation(json!({"valueAddress": {"city": "x"}})),
        &[(IssueCode::Structure, "Observation.valueAddress")],
    );
    check(
        observation(json!({"valuestring": "x"})),
        &[(IssueCode::Structure, "Observation.valuestring")],
    );
    check(
        observation(json!({"valueQuantity": {"value": 1, "units": "kg"}})),
        &[(IssueCode::Structure, "Observation.valueQuantity.units")],
    );
    check(
        observation(json!({"valueString": "a", "valueBoolean": true})),
        &[(IssueCode::Structure, "Observation.valueBoolean")],
    );
    check(
        observation(json!({"valueString": "a", "valueInteger": 1, "_valueInteger": {"id": "x"}})),
        &[
            (IssueCode::Structure, "Observation.valueInteger"),
            (IssueCode::Structure, "Observation.valueInteger"),
        ],
    );
    valid(observation(
        json!({"_valueString": {"id": "x"}, "valueString": "a"}),
    ));
    // _name only for primitives, and only for known ones.
    check(
        patient(json!({"_name": [{"id": "x"}]})),
        &[(IssueCode::Structure, "Patient._name")],
    );
    check(
        patient(json!({"_nickname": {"id": "x"}})),
        &[(IssueCode::Structure, "Patient._nickname")],
    );
    check(
        patient(json!({"_birthDate": {"extension": [{"url": "u", "valueFoo": 1}]}})),
        &[(
            IssueCode::Structure,
            "Patient.birthDate.extension[0].valueFoo",
        )],
    );
    check(
        patient(json!({"_birthDate": {"value": "1970"}})),
        &[(IssueCode::Structure, "Patient.birthDate.value")],
    );
    // resourceType inside a datatype is not an element.
    check(
        patient(json!({"name": [{"resourceType": "HumanName", "family": "A"}]})),
        &[(IssueCode::Structure, "Patient.name[0].resourceType")],
    );
    // Deep inside a contained resource.
    check(
        observation(
            json!({"contained": [{"resourceType": "Patient", "id": "p", "name": [{"famly": "X"}]}]}),
        ),
        &[(
            IssueCode::Structure,
            "Observation.contained[0].name[0].famly",
        )],
    );
    // A contained resource of an unknown type, and one without a type.
    check(
        observation(json!({"contained": [{"resourceType": "Foo"}, {"id": "x"}]})),
        &[
            (IssueCode::Invalid, "Observation.contained[0].resourceType"),
            (IssueCode::Required, "Observation.contained[1].resourceType"),
        ],
    );
}

#[test]
fn json_types() {
    check(
        patient(json!({"active": "true"})),
        &[(IssueCode::Structure, "Patient.active")],
    );
    check(
        patient(json!({"birthDate": 1970})),
        &[(IssueCode::Structure, "Patient.birthDate")],
    );
    check(
        patient(json!({"multipleBirthInteger": "2"})),
        &[(IssueCode::Structure, "Patient.multipleBirthInteger")],
    );
    check(
        observation(json!({"valueQuantity": {"value": "1.5"}})),
        &[(IssueCode::Structure, "Observation.valueQuantity.value")],
    );
    check(
        patient(json!({"maritalStatus": "M"})),
        &[(IssueCode::Structure, "Patient.maritalStatus")],
    );
    check(
        patient(json!({"contact": [{"name": "X"}]})),
        &[(IssueCode::Structure, "Patient.contact[0].name")],
    );
    check(
        observation(json!({"contained": ["x"]})),
        &[(IssueCode::Structure, "Observation.contained[0]")],
    );
    check(
        patient(json!({"_birthDate": "x"})),
        &[(IssueCode::Structure, "Patient.birthDate")],
    );
}

#[test]
fn arrays_and_single_values() {
    check(
        patient(json!({"name": {"family": "A"}})),
        &[(IssueCode::Structure, "Patient.name")],
    );
    check(
        patient(json!({"name": [{"given": "A"}]})),
        &[(IssueCode::Structure, "Patient.name[0].given")],
    );
    check(
        patient(json!({"gender": ["male"]})),
        &[(IssueCode::Structure, "Patient.gender")],
    );
    check(
        patient(json!({"maritalStatus": [{"text": "M"}]})),
        &[(IssueCode::Structure, "Patient.maritalStatus")],
    );
    check(
        patient(json!({"_given": {"id": "x"}, "name": []})),
        &[
            (IssueCode::Structure, "Patient._given"),
            (IssueCode::Structure, "Patient.name"),
        ],
    );
    check(
        patient(json!({"name": [{"given": ["A"], "_given": {"id": "x"}}]})),
        &[(IssueCode::Structure, "Patient.name[0].given")],
    );
    // _given lines up with given; missing trailing entries count as null, but every index
    // needs a value or an extension.
    valid(patient(
        json!({"name": [{"given": ["A", "B"], "_given": [{"id": "a"}]}]}),
    ));
    check(
        patient(json!({"name": [{"given": ["A"], "_given": [null, null]}]})),
        &[(IssueCode::Structure, "Patient.name[0].given[1]")],
    );
}

#[test]
fn nulls_and_empty_values() {
    check(
        patient(json!({"gender": null})),
        &[(IssueCode::Structure, "Patient.gender")],
    );
    check(
        patient(json!({"name": [null]})),
        &[(IssueCode::Structure, "Patient.name[0]")],
    );
    check(
        patient(json!({"name": [{"given": ["A", null]}]})),
        &[(IssueCode::Structure, "Patient.name[0].given[1]")],
    );
    check(
        patient(json!({"name": [{"given": ["A", null], "_given": [null, null]}]})),
        &[(IssueCode::Structure, "Patient.name[0].given[1]")],
    );
    check(
        patient(json!({"name": []})),
        &[(IssueCode::Structure, "Patient.name")],
    );
    check(
        patient(json!({"name": [{}]})),
        &[(IssueCode::Structure, "Patient.name[0]")],
    );
    check(
        patient(json!({"maritalStatus": {}})),
        &[(IssueCode::Structure, "Patient.maritalStatus")],
    );
    check(
        patient(json!({"gender": ""})),
        &[(IssueCode::Value, "Patient.gender")],
    );
    check(
        patient(json!({"name": [{"given": ["A", ""]}]})),
        &[(IssueCode::Value, "Patient.name[0].given[1]")],
    );
    check(
        patient(json!({"implicitRules": ""})),
        &[(IssueCode::Value, "Patient.implicitRules")],
    );
}

#[test]
fn cardinality_and_required_elements() {
    check(
        json!({"resourceType": "Observation", "code": {"text": "x"}}),
        &[(IssueCode::Required, "Observation.status")],
    );
    check(
        json!({"resourceType": "Observation", "status": "final"}),
        &[(IssueCode::Required, "Observation.code")],
    );
    check(
        patient(json!({"link": [{"type": "seealso"}]})),
        &[(IssueCode::Required, "Patient.link[0].other")],
    );
    check(
        patient(json!({"extension": [{"valueString": "x"}]})),
        &[(IssueCode::Required, "Patient.extension[0].url")],
    );
    // A required choice element is named with [x].
    check(
        json!({"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "group",
            "enableWhen": [{"question": "q", "operator": "exists"}]}]}),
        &[(
            IssueCode::Required,
            "Questionnaire.item[0].enableWhen[0].answer[x]",
        )],
    );
    // Through a content reference.
    check(
        json!({"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "group",
            "item": [{"type": "string"}]}]}),
        &[(IssueCode::Required, "Questionnaire.item[0].item[0].linkId")],
    );
    // max 0: the extension of xhtml is prohibited.
    check(
        json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>",
            "_div": {"extension": [{"url": "u", "valueString": "x"}]}}}),
        &[(IssueCode::Structure, "Patient.text.div.extension")],
    );
}

#[test]
fn primitive_formats() {
    let cases: &[(&str, Value, &str)] = &[
        ("birthDate", json!("1970-13-01"), "Patient.birthDate"),
        (
            "birthDate",
            json!("1970-01-01T00:00:00Z"),
            "Patient.birthDate",
        ),
        ("birthDate", json!("70-01-01"), "Patient.birthDate"),
        // The regex allows day 31 of every month and 29 February of every year.
        ("birthDate", json!("1999-02-30"), "Patient.birthDate"),
        ("birthDate", json!("2023-02-29"), "Patient.birthDate"),
        ("birthDate", json!("1900-02-29"), "Patient.birthDate"),
        (
            "deceasedDateTime",
            json!("2023-04-31T10:00:00+09:00"),
            "Patient.deceasedDateTime",
        ),
        (
            "deceasedDateTime",
            json!("2023-01-01T24:00:00Z"),
            "Patient.deceasedDateTime",
        ),
        (
            "deceasedDateTime",
            json!("2023-01-01T10:00:00+15:00"),
            "Patient.deceasedDateTime",
        ),
        (
            "deceasedDateTime",
            json!("2020-01-01T10:00:00"),
            "Patient.deceasedDateTime",
        ),
        (
            "deceasedDateTime",
            json!("2020-01-01 10:00:00Z"),
            "Patient.deceasedDateTime",
        ),
        ("gender", json!(" male"), "Patient.gender"),
        ("gender", json!("ma  le"), "Patient.gender"),
        (
            "implicitRules",
            json!("http://a b"),
            "Patient.implicitRules",
        ),
        (
            "multipleBirthInteger",
            json!(1.5),
            "Patient.multipleBirthInteger",
        ),
        (
            "multipleBirthInteger",
            json!(2147483648i64),
            "Patient.multipleBirthInteger",
        ),
        (
            "multipleBirthInteger",
            json!(1e3),
            "Patient.multipleBirthInteger",
        ),
        ("id", json!("a_b"), "Patient.id"),
        ("id", json!("x".repeat(65)), "Patient.id"),
    ];
    for (key, value, expression) in cases {
        let mut p = patient(json!({}));
        p[*key] = value.clone();
        check(p, &[(IssueCode::Value, expression)]);
    }
    check(
        patient(json!({"meta": {"lastUpdated": "2024-01-01T10:00Z"}})),
        &[(IssueCode::Value, "Patient.meta.lastUpdated")],
    );
    check(
        patient(json!({"meta": {"lastUpdated": "2024-01-01"}})),
        &[(IssueCode::Value, "Patient.meta.lastUpdated")],
    );
    check(
        patient(json!({"meta": {"lastUpdated": "2023-02-29T10:00:00Z"}})),
        &[(IssueCode::Value, "Patient.meta.lastUpdated")],
    );
    // Leap years, and the day each message names.
    valid(patient(
        json!({"birthDate": "2024-02-29", "deceasedDateTime": "2000-02-29T23:59:59.999+14:00"}),
    ));
    let message = &issues(&patient(json!({"birthDate": "1999-02-30"})))[0].message;
    assert_eq!(
        message,
        "'1999-02-30' is not a valid date: February 1999 has 28 days"
    );
    check(
        patient(json!({"photo": [{"data": "not base64!"}]})),
        &[(IssueCode::Value, "Patient.photo[0].data")],
    );
    check(
        patient(json!({"photo": [{"size": -1}]})),
        &[(IssueCode::Value, "Patient.photo[0].size")],
    );
    check(
        patient(json!({"identifier": [{"system": "urn:oid:1.2.03"}]})),
        &[],
    );
    check(
        observation(
            json!({"valueQuantity": {"value": 1, "comparator": "<"}, "component": [{"code": {"text": "x"}, "valueTime": "25:00:00"}]}),
        ),
        &[(IssueCode::Value, "Observation.component[0].valueTime")],
    );
    valid(
        json!({"resourceType": "Questionnaire", "status": "draft", "item": [{"linkId": "1", "type": "string",
        "maxLength": -0, "enableWhen": [{"question": "q", "operator": "=", "answerDecimal": -0.5e-3}]}]}),
    );
    check(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueSampledData": {
            "origin": {"value": 0}, "period": 1, "dimensions": 0, "data": "1"}}),
        &[(IssueCode::Value, "Observation.valueSampledData.dimensions")],
    );
    check(
        json!({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:not-a-uuid"}]}),
        &[],
    );
    check(
        json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<p>x</p>"}}),
        &[(IssueCode::Value, "Patient.text.div")],
    );
    // The resource id is an id; ids elsewhere (Element.id) are plain strings.
    valid(patient(json!({"name": [{"id": "any string_with spaces"}]})));
}

#[test]
fn required_bindings() {
    use IssueCode::CodeInvalid;
    check(
        patient(json!({"gender": "M"})),
        &[(CodeInvalid, "Patient.gender")],
    );
    let message = &issues(&patient(json!({"gender": "M"})))[0].message;
    assert_eq!(
        message,
        "'M' is not in the required value set http://hl7.org/fhir/ValueSet/administrative-gender \
         (male, female, other, unknown)"
    );
    valid(patient(json!({"gender": "unknown"})));
    // Codes are case-sensitive.
    check(
        observation(json!({"status": "Final"})),
        &[(CodeInvalid, "Observation.status")],
    );
    // Inside datatypes and backbone elements, at any depth, in repeating elements.
    check(
        patient(
            json!({"telecom": [{"system": "phone"}, {"system": "mobile"}],
            "contact": [{"gender": "f"}]}),
        ),
        &[
            (CodeInvalid, "Patient.telecom[1].system"),
            (CodeInvalid, "Patient.contact[0].gender"),
        ],
    );
    check(
        observation(json!({"valueQuantity": {"value": 1, "comparator": "=="}})),
        &[(CodeInvalid, "Observation.valueQuantity.comparator")],
    );
    // A malformed code is reported once, as malformed.
    check(
        patient(json!({"gender": " male"})),
        &[(IssueCode::Value, "Patient.gender")],
    );
    // CodeableConcept: at least one coding from the value set (system and code).
    let condition = |status: Value| {
        json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
            "clinicalStatus": status})
    };
    let clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    valid(condition(
        json!({"coding": [{"system": clinical, "code": "active"}]}),
    ));
    valid(condition(json!({"coding": [
        {"system": "http://snomed.info/sct", "code": "55561003"},
        {"system": clinical, "code": "remission"}
    ]})));
    for bad in [
        json!({"coding": [{"system": clinical, "code": "cured"}]}),
        json!({"coding": [{"system": "http://example.org/status", "code": "active"}]}),
        json!({"coding": [{"code": "active"}]}),
        json!({"text": "active"}),
    ] {
        check(condition(bad), &[(CodeInvalid, "Condition.clinicalStatus")]);
    }
    let message = &issues(&condition(
        json!({"coding": [{"system": clinical, "code": "cured"}]}),
    ))[0]
        .message;
    assert!(message.contains(&format!("{clinical}|cured")), "{message}");
    assert!(message.contains("condition-clinical"), "{message}");
    // Value sets outside the definitions (BCP-13 MIME types, UCUM, ISO 4217) are not checked.
    valid(patient(
        json!({"photo": [{"contentType": "image/x-anything"}]}),
    ));
    // Extensible bindings are not checked.
    valid(patient(
        json!({"maritalStatus": {"coding": [{"system": "http://example.org", "code": "x"}]}}),
    ));
}

#[test]
fn reference_formats_and_targets() {
    let with_subject = |reference: &str| observation(json!({"subject": {"reference": reference}}));
    for ok in [
        "Patient/123",
        "Patient/123/_history/2",
        "Group/g.1",
        "http://example.org/fhir/Patient/123",
        "https://example.org/anything",
        "urn:uuid:2b3d4b7a-9c1e-4c35-8d52-1f6a2a3b4c5d",
        "urn:oid:1.2.3",
        "#p1",
        "#",
        "Patient?identifier=http://x|1",
    ] {
        valid(with_subject(ok));
    }
    for bad in [
        "Patient",
        "Patient/",
        "Patient/1/2",
        "Patient/a b",
        "Patient/a_b",
        "patient/123",
        "Foo/123",
        "urn:uuid:123",
        "urn:oid:1.02",
        "#a b",
        "Patient?",
    ] {
        check(
            with_subject(bad),
            &[(IssueCode::Value, "Observation.subject.reference")],
        );
    }
    // Typed targets: Observation.subject is Reference(Patient | Group | Device | Location).
    check(
        with_subject("Practitioner/1"),
        &[(IssueCode::Structure, "Observation.subject.reference")],
    );
    check(
        with_subject("http://example.org/fhir/Practitioner/1"),
        &[(IssueCode::Structure, "Observation.subject.reference")],
    );
    check(
        with_subject("Organization?identifier=x"),
        &[(IssueCode::Structure, "Observation.subject.reference")],
    );
    // Reference(Any) accepts every type.
    valid(observation(
        json!({"focus": [{"reference": "Practitioner/1"}]}),
    ));
    // References inside nested datatypes and extensions are checked too.
    check(
        patient(json!({"extension": [{"url": "u", "valueReference": {"reference": "bad ref"}}]})),
        &[(
            IssueCode::Value,
            "Patient.extension[0].valueReference.reference",
        )],
    );
}

#[test]
fn issues_are_reported_together_in_document_order() {
    let err = validate_resource(&json!({
        "resourceType": "Observation",
        "foo": 1,
        "code": {"coding": [{"system": "http://loinc.org", "code": ""}]},
        "valueQuantity": {"value": "x"}
    }))
    .expect_err("invalid");
    let found: Vec<(&str, &str)> = err
        .issues
        .iter()
        .map(|i| (i.code.as_str(), i.expression.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("structure", "Observation.foo"),
            ("value", "Observation.code.coding[0].code"),
            ("structure", "Observation.valueQuantity.value"),
            ("required", "Observation.status"),
        ]
    );
    assert!(err.issues.iter().all(|i| i.severity.as_str() == "error"));
    let text = err.to_string();
    assert!(
        text.starts_with("invalid resource: Observation.foo: unknown element 'foo'"),
        "{text}"
    );
    assert!(text.ends_with("(and 3 more)"), "{text}");
}
