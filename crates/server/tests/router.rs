//! Fast router tests: the axum app driven with `oneshot` over a temporary SQLite store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use server::{AppState, R4Validator, ServerConfig, ValidationIssue, Validator};
use store::{BasicExtractor, SqliteStore};
use tower::ServiceExt;

struct Harness {
    state: AppState,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness_with(validator: Arc<dyn Validator>) -> Harness {
    let dir = std::env::temp_dir().join(format!("renkei-router-{}", uuid::Uuid::new_v4()));
    let store = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).unwrap();
    let config = ServerConfig {
        base_url: Some("http://test/fhir".into()),
        ..ServerConfig::default()
    };
    Harness {
        state: AppState::new(Arc::new(store), validator, config),
        dir,
    }
}

fn harness() -> Harness {
    harness_with(Arc::new(R4Validator))
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

async fn send(
    h: &Harness,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(uri);
    let has_ct = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if body.is_some() && !has_ct {
        req = req.header("content-type", "application/fhir+json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    let res = server::app(h.state.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// method, uri, headers, body, expected status.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a str,
    StatusCode,
);

fn issue_code(r: &Resp) -> &str {
    r.body["issue"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn create_read_update_with_headers() {
    let h = harness();
    let r = send(
        &h,
        "POST",
        "/fhir/Patient",
        &[],
        Some(r#"{"resourceType":"Patient","id":"ignored"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "ignored");
    assert_eq!(r.headers["etag"], "W/\"1\"");
    assert_eq!(
        r.headers["location"],
        format!("http://test/fhir/Patient/{id}/_history/1").as_str()
    );
    assert!(r.headers.contains_key("last-modified"));

    let r = send(&h, "GET", &format!("/fhir/Patient/{id}"), &[], None).await;
    assert_eq!(
        (r.status, r.body["meta"]["versionId"].as_str()),
        (StatusCode::OK, Some("1"))
    );
    let body = format!(r#"{{"resourceType":"Patient","id":"{id}","active":true}}"#);
    let r = send(
        &h,
        "PUT",
        &format!("/fhir/Patient/{id}"),
        &[("prefer", "return=minimal")],
        Some(&body),
    )
    .await;
    assert_eq!((r.status, &r.body), (StatusCode::OK, &Value::Null));
    assert_eq!(r.headers["etag"], "W/\"2\"");
    let r = send(
        &h,
        "PUT",
        &format!("/fhir/Patient/{id}"),
        &[("if-match", "W/\"1\"")],
        Some(&body),
    )
    .await;
    assert_eq!(
        (r.status, issue_code(&r)),
        (StatusCode::PRECONDITION_FAILED, "conflict")
    );
    let r = send(
        &h,
        "PUT",
        &format!("/fhir/Patient/{id}"),
        &[("prefer", "return=OperationOutcome")],
        Some(&body),
    )
    .await;
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

#[tokio::test]
async fn bad_input_is_400_and_changes_nothing() {
    let h = harness();
    let cases: &[Case] = &[
        (
            "POST",
            "/fhir/Patient",
            &[],
            "{not json",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/fhir/Patient",
            &[],
            r#"{"resourceType":"Observation"}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("POST", "/fhir/Patient", &[], "[1]", StatusCode::BAD_REQUEST),
        (
            "PUT",
            "/fhir/Patient/a",
            &[],
            r#"{"resourceType":"Patient","id":"b"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/fhir/Patient/a",
            &[],
            r#"{"resourceType":"Patient"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/fhir/Patient/a",
            &[("if-match", "3")],
            r#"{"resourceType":"Patient","id":"a"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/fhir/Patient/a_b",
            &[],
            r#"{"resourceType":"Patient","id":"a_b"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/fhir/Patient",
            &[("content-type", "application/fhir+xml")],
            "<Patient/>",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "POST",
            "/fhir/Patient",
            &[("if-none-exist", "name=x")],
            r#"{"resourceType":"Patient"}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/fhir/Patients",
            &[],
            r#"{"resourceType":"Patients"}"#,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, uri, headers, body, expected) in cases {
        let r = send(&h, method, uri, headers, Some(body)).await;
        assert_eq!(r.status, *expected, "{method} {uri} {body}: {:?}", r.body);
        assert_eq!(r.body["resourceType"], "OperationOutcome", "{method} {uri}");
    }
    let all = send(&h, "GET", "/fhir/_history", &[], None).await;
    assert_eq!(all.body["entry"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn formats_json_only() {
    let h = harness();
    assert_eq!(
        send(&h, "GET", "/fhir/metadata?_format=xml", &[], None)
            .await
            .status,
        StatusCode::NOT_ACCEPTABLE
    );
    assert_eq!(
        send(
            &h,
            "GET",
            "/fhir/metadata",
            &[("accept", "application/fhir+xml")],
            None
        )
        .await
        .status,
        StatusCode::NOT_ACCEPTABLE
    );
    let r = send(
        &h,
        "GET",
        "/fhir/metadata?_format=json",
        &[("accept", "application/fhir+json, */*;q=0.1")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );
    assert_eq!(r.body["fhirVersion"], "4.0.1");
    let patient = r.body["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap()
        .clone();
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, vec!["_id", "_lastUpdated", "identifier"]);
    // $everything declares its person-level form (`_mdm`).
    let everything = patient["operation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "everything")
        .unwrap();
    assert!(
        everything["documentation"]
            .as_str()
            .unwrap()
            .contains("_mdm=true"),
        "{everything}"
    );
}

/// What FHIR defines and this server does not implement answers 501; a path that names
/// nothing, 404.
#[tokio::test]
async fn unimplemented_operations_and_compartments_answer_501() {
    let h = harness();
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        (
            "POST",
            "/fhir/Observation/$match",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "POST",
            "/fhir/Patient/$validate",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "GET",
            "/fhir/$export",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "POST",
            "/fhir/$process-message",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "GET",
            "/fhir/Patient/$everything",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        // `$summary` is served by every server: of a Patient that is not there, 404.
        (
            "GET",
            "/fhir/Patient/1/$summary",
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "GET",
            "/fhir/Encounter/1/$everything",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "GET",
            "/fhir/Encounter/1/Observation",
            StatusCode::NOT_IMPLEMENTED,
            "not-supported",
        ),
        (
            "GET",
            "/fhir/Observation/1/Condition",
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            "GET",
            "/fhir/Patients",
            StatusCode::NOT_FOUND,
            "not-supported",
        ),
    ];
    for (method, uri, status, code) in cases {
        let body = (*method == "POST").then_some("{}");
        let r = send(&h, method, uri, &[], body).await;
        assert_eq!(
            (r.status, issue_code(&r)),
            (*status, *code),
            "{method} {uri}: {}",
            r.body
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_with_operation_outcomes() {
    let h = harness();
    let r = send(&h, "GET", "/nowhere", &[], None).await;
    assert_eq!(
        (r.status, issue_code(&r)),
        (StatusCode::NOT_FOUND, "not-found")
    );
    // POST is no interaction on an instance: 405, naming what the instance takes.
    let r = send(&h, "POST", "/fhir/Patient/1", &[], Some("{}")).await;
    assert_eq!(
        (r.status, issue_code(&r)),
        (StatusCode::METHOD_NOT_ALLOWED, "not-supported")
    );
    assert_eq!(r.headers["allow"], "GET, HEAD, PUT, PATCH, DELETE");
    // A method no route takes: the router names the route's methods.
    let r = send(&h, "DELETE", "/fhir/metadata", &[], None).await;
    assert_eq!(
        (r.status, issue_code(&r)),
        (StatusCode::METHOD_NOT_ALLOWED, "not-supported")
    );
    assert!(
        r.headers["allow"].to_str().unwrap().contains("GET"),
        "{:?}",
        r.headers
    );
    assert_eq!(r.body["resourceType"], "OperationOutcome");
    assert_eq!(
        send(&h, "GET", "/healthz", &[], None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&h, "GET", "/readyz", &[], None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_path_that_is_not_utf8_answers_400_with_an_operation_outcome() {
    // Found by tests/fuzz_http.rs: axum's own rejection was plain text.
    let h = harness();
    for uri in [
        "/fhir/Patient/%80",
        "/fhir/%FF",
        "/fhir/Patient/p1/_history/%C3%28",
        "/fhir/Patient/%E2%82/Observation",
    ] {
        let r = send(&h, "GET", uri, &[], None).await;
        assert_eq!(
            (r.status, issue_code(&r)),
            (StatusCode::BAD_REQUEST, "invalid"),
            "{uri}: {:?}",
            r.body
        );
        assert!(
            r.body["issue"][0]["diagnostics"]
                .as_str()
                .is_some_and(|d| d.contains("UTF-8")),
            "{uri}: {:?}",
            r.body
        );
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/fhir+json")
        );
    }
}

#[tokio::test]
async fn a_patch_that_fails_after_moving_the_root_is_refused_not_a_panic() {
    // Found by tests/fuzz_http.rs: json_patch's rollback of the first operation panicked.
    let h = harness();
    let body = r#"{"resourceType":"Patient","id":"p1","name":[{"family":"Sato"}]}"#;
    let r = send(&h, "PUT", "/fhir/Patient/p1", &[], Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let patch = r#"[{"op":"move","from":"/name","path":""},{"op":"add","path":"/id","value":"x"}]"#;
    let r = send(
        &h,
        "PATCH",
        "/fhir/Patient/p1",
        &[("content-type", "application/json-patch+json")],
        Some(patch),
    )
    .await;
    assert_eq!(
        (r.status, r.body["resourceType"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("OperationOutcome")),
        "{:?}",
        r.body
    );
    let r = send(&h, "GET", "/fhir/Patient/p1", &[], None).await;
    assert_eq!(
        (
            r.body["meta"]["versionId"].as_str(),
            &r.body["name"][0]["family"]
        ),
        (Some("1"), &json!("Sato"))
    );
}

/// A validator that rejects every Patient without a name, to exercise the seam.
#[derive(Debug)]
struct NeedsName;

impl Validator for NeedsName {
    fn is_resource_type(&self, name: &str) -> bool {
        R4Validator.is_resource_type(name)
    }
    fn resource_types(&self) -> Vec<&'static str> {
        R4Validator.resource_types()
    }
    fn validate(&self, resource: &Value) -> Result<(), Vec<ValidationIssue>> {
        if resource.get("name").is_some() {
            return Ok(());
        }
        Err(vec![ValidationIssue {
            severity: server::Severity::Error,
            code: fhir::IssueCode::Required,
            expression: Some("Patient.name".into()),
            message: "name is required here".into(),
        }])
    }
}

#[tokio::test]
async fn validation_issues_reach_the_operation_outcome() {
    let h = harness_with(Arc::new(NeedsName));
    let r = send(
        &h,
        "POST",
        "/fhir/Patient",
        &[],
        Some(r#"{"resourceType":"Patient"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["issue"][0]["code"], "required");
    assert_eq!(r.body["issue"][0]["expression"], json!(["Patient.name"]));
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "name": [{"family": "A"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = send(&h, "POST", "/fhir", &[], Some(&bundle.to_string())).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body["issue"][0]["expression"],
        json!(["Bundle.entry[1].resource.name"])
    );
    let all = send(&h, "GET", "/fhir/Patient", &[], None).await;
    assert_eq!(all.body["total"], 0);
}

/// Impossible values and dangling references are refused on every REST write with 400 and an
/// OperationOutcome naming the element, and nothing is stored; with the check off
/// (`serve --no-reference-check`), a dangling reference is stored.
#[tokio::test]
async fn impossible_values_and_dangling_references_are_refused() {
    let h = harness();
    let history_len = |h: &Harness| {
        let h = h.state.clone();
        async move {
            let store = h.store.clone();
            store
                .changes(&store::RequestContext::system(), 0, 1000)
                .await
                .unwrap()
                .len()
        }
    };
    let before = history_len(&h).await;
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "POST",
            "/fhir/Patient",
            r#"{"resourceType":"Patient","birthDate":"1999-02-30"}"#,
            "Patient.birthDate",
            "value",
        ),
        (
            "PUT",
            "/fhir/Patient/p1",
            r#"{"resourceType":"Patient","id":"p1","birthDate":"2023-02-29"}"#,
            "Patient.birthDate",
            "value",
        ),
        (
            "POST",
            "/fhir/Patient",
            r#"{"resourceType":"Patient","gender":"M"}"#,
            "Patient.gender",
            "code-invalid",
        ),
        (
            "POST",
            "/fhir/Observation",
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/absent"}}"#,
            "Observation.subject",
            "not-found",
        ),
        (
            "PUT",
            "/fhir/Observation?identifier=urn:x|1",
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"performer":[{"reference":"http://test/fhir/Practitioner/absent"}]}"#,
            "Observation.performer[0]",
            "not-found",
        ),
    ];
    for (method, uri, body, expression, code) in cases {
        let r = send(&h, method, uri, &[], Some(body)).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {uri}: {}",
            r.body
        );
        assert_eq!(issue_code(&r), *code, "{}", r.body);
        assert_eq!(
            r.body["issue"][0]["expression"][0], *expression,
            "{}",
            r.body
        );
    }
    // A transaction: an entry may name another entry (fullUrl) but not an absent resource.
    let tx = |subject: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:7f7b2d0c-8f0e-4a49-9a44-6f6fb2d1c0a1",
             "resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": subject}}, "request": {"method": "POST", "url": "Observation"}}
        ]})
        .to_string()
    };
    let r = send(&h, "POST", "/fhir", &[], Some(&tx("Patient/absent"))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(
        r.body["issue"][0]["expression"][0],
        "Bundle.entry[1].resource.subject"
    );
    assert_eq!(history_len(&h).await, before, "nothing was stored");
    let r = send(
        &h,
        "POST",
        "/fhir",
        &[],
        Some(&tx("urn:uuid:7f7b2d0c-8f0e-4a49-9a44-6f6fb2d1c0a1")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    // PATCH that introduces a dangling reference.
    let obs = r.body["entry"][1]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patch = r#"[{"op":"replace","path":"/subject/reference","value":"Patient/absent"}]"#;
    let r = send(
        &h,
        "PATCH",
        &format!("/fhir/Observation/{obs}"),
        &[("content-type", "application/json-patch+json")],
        Some(patch),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["issue"][0]["expression"][0], "Observation.subject");

    // The setting off: stored.
    let dir = std::env::temp_dir().join(format!("renkei-router-{}", uuid::Uuid::new_v4()));
    let store = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).unwrap();
    let config = ServerConfig {
        check_references: false,
        ..ServerConfig::default()
    };
    let off = Harness {
        state: AppState::new(Arc::new(store), Arc::new(R4Validator), config),
        dir,
    };
    let r = send(&off, "POST", "/fhir/Observation", &[], Some(cases[3].2)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}
