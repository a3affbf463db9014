//! `Patient/$match` end to end: the real binary on SQLite and PostgreSQL, Patients written over
//! REST (and one updated, one deleted, after the first match), then matched with scores, match
//! grades and explanations; bad Parameters answer 400 naming the element.

mod support;

use serde_json::{Value, json};
use support::{Backend, Data, Server};

fn patient(id: &str, family: &str, given: &str, birth: &str, phone: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "gender": "male", "birthDate": birth,
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": ["12 Elm St"], "city": "Boston", "postalCode": "02118"}]
    })
}

fn parameters(resource: Value, extra: &[Value]) -> String {
    let mut parameter = vec![json!({"name": "resource", "resource": resource})];
    parameter.extend(extra.iter().cloned());
    json!({"resourceType": "Parameters", "parameter": parameter}).to_string()
}

fn ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect()
}

async fn put(s: &Server, p: &Value) {
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    let (status, _, body) = s.send("PUT", &path, &[], Some(&p.to_string())).await;
    assert!(status == 200 || status == 201, "{body}");
}

async fn patient_match(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start(&data).await;
    put(
        &s,
        &patient("goldner", "Goldner", "Robert", "1943-03-17", "555-806-9773"),
    )
    .await;
    put(
        &s,
        &patient("smith", "Smith", "Alice", "1980-01-02", "555-111-2222"),
    )
    .await;
    put(
        &s,
        &patient("other", "Okuneva", "Jon", "1990-07-07", "555-999-0000"),
    )
    .await;

    // Bob GOLDNER with the phone written differently is Robert Goldner.
    let query = json!({
        "resourceType": "Patient", "gender": "male", "birthDate": "1943-03-17",
        "name": [{"family": "GOLDNER", "given": ["Bob"]}],
        "telecom": [{"system": "phone", "value": "(555) 806 9773"}]
    });
    let (status, _, b) = s
        .send(
            "POST",
            "Patient/$match",
            &[],
            Some(&parameters(query.clone(), &[])),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["type"], "searchset");
    assert_eq!(ids(&b).first().map(String::as_str), Some("goldner"), "{b}");
    let best = &b["entry"][0]["search"];
    assert!(best["score"].as_f64().unwrap() > 0.9, "{best}");
    let grade = best["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == "http://hl7.org/fhir/StructureDefinition/match-grade")
        .unwrap();
    assert_eq!(grade["valueCode"], "certain");
    let explanation = best["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("match-explanation"))
        .unwrap();
    assert!(
        explanation["valueString"]
            .as_str()
            .unwrap()
            .contains("birth")
    );
    assert!(!ids(&b).contains(&"smith".to_string()));

    // Writes after the first match are seen by the next one: a new near-twin record, and the
    // deletion of the original.
    put(
        &s,
        &patient(
            "goldner2",
            "Goldner",
            "Robert",
            "1943-03-17",
            "555-806-9773",
        ),
    )
    .await;
    let (status, _, _) = s.send("DELETE", "Patient/goldner", &[], None).await;
    assert!(status == 200 || status == 204);
    let (_, _, b) = s
        .send(
            "POST",
            "Patient/$match",
            &[],
            Some(&parameters(query.clone(), &[])),
        )
        .await;
    assert_eq!(ids(&b), vec!["goldner2".to_string()], "{b}");

    // onlyCertainMatches and count.
    let (_, _, b) = s
        .send(
            "POST",
            "Patient/$match",
            &[],
            Some(&parameters(
                json!({"resourceType": "Patient", "name": [{"family": "Smith"}]}),
                &[json!({"name": "onlyCertainMatches", "valueBoolean": true})],
            )),
        )
        .await;
    assert_eq!(b["total"], 0, "a surname alone is never certain: {b}");
    let (_, _, b) = s
        .send(
            "POST",
            "Patient/$match",
            &[],
            Some(&parameters(
                query,
                &[json!({"name": "count", "valueInteger": 1})],
            )),
        )
        .await;
    assert!(ids(&b).len() <= 1);

    // Bad input: 400 with the offending element; nothing written.
    for (body, expression) in [
        (
            json!({"resourceType": "Patient"}).to_string(),
            "resourceType",
        ),
        (
            json!({"resourceType": "Parameters", "parameter": []}).to_string(),
            "Parameters.parameter",
        ),
        (
            parameters(
                json!({"resourceType": "Observation", "status": "final"}),
                &[],
            ),
            "Parameters.parameter[0].resource",
        ),
        (
            parameters(
                json!({"resourceType": "Patient"}),
                &[json!({"name": "count", "valueInteger": -3})],
            ),
            "Parameters.parameter[1].valueInteger",
        ),
    ] {
        let (status, _, b) = s.send("POST", "Patient/$match", &[], Some(&body)).await;
        assert_eq!(status, 400, "{body}: {b}");
        assert_eq!(b["resourceType"], "OperationOutcome");
        assert_eq!(b["issue"][0]["expression"][0], expression, "{b}");
    }
    let (status, _, b) = s
        .send(
            "POST",
            "Patient/$match",
            &[],
            Some(&parameters(
                json!({"resourceType": "Patient", "birthDate": "17 March 1943"}),
                &[],
            )),
        )
        .await;
    assert_eq!(status, 400, "an invalid Patient is rejected: {b}");
    // $match is defined on Patient only: an operation this server does not implement.
    let (status, _, b) = s.send("POST", "Observation/$match", &[], Some("{}")).await;
    assert_eq!(
        (status, b["issue"][0]["code"].as_str()),
        (501, Some("not-supported"))
    );
    let (_, _, b) = s
        .send(
            "GET",
            "Patient?_summary=count&_tag:not=https://renkei.dev/fhir/CodeSystem/empi|golden",
            &[],
            None,
        )
        .await;
    assert_eq!(b["total"], 3, "$match writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_match_on_sqlite() {
    patient_match(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_match_on_postgres() {
    patient_match(Backend::Postgres).await;
}
