//! Consent end to end, on SQLite and PostgreSQL: with a backend client registered, the
//! served store applies each patient's patient-privacy Consent to user and backend-service
//! tokens. One patient denies an organisation, one denies research (purpose HRESCH), one
//! denies HIV data (a Condition coded B20 arrives unlabelled and is labelled at write time).
//! Withheld data is absent from searches, `_total` and `_summary=count` equal what is shown,
//! reads answer 404; another organisation or purpose still sees it; a break-glass token
//! (purpose ETREAT with a reason) sees everything; writes record their custodian.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Backend, Data, PUBLIC, Server};

const JWKS: &str = include_str!("../../auth/tests/fixtures/client-rs384.jwks.json");
const HIV: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV";

fn patient(id: &str, family: &str, mrn: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": "male", "birthDate": "1970-01-01",
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        "name": [{"family": family, "given": ["Kim"]}]})
}

fn observation(id: &str, subject: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{subject}")}})
}

fn condition(id: &str, subject: &str, system: &str, code: &str) -> Value {
    json!({"resourceType": "Condition", "id": id,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{subject}")}})
}

/// A patient-privacy Consent of `patient` with one provision.
fn consent(id: &str, patient: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": "2026-01-01",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTOUT"}]},
        "provision": provision})
}

/// A token signed with the node's keys, for a backend service of `organization` asking for
/// `purpose` (and breaking the glass when given a reason).
fn token(
    keys: &Path,
    scope: &str,
    organization: &str,
    purpose: &str,
    glass: Option<&str>,
) -> String {
    let mut c = support::claims("backend", scope, 300);
    c.organization = Some(organization.into());
    c.purpose_of_use = Some(purpose.into());
    c.break_glass = glass.map(str::to_owned);
    support::mint(keys, &c)
}

/// Every resource of a search (`Type/id`, sorted), page by page with the token; checks that
/// every page's `total` is the number shown in all.
async fn walk(s: &Server, token: &str, path: &str) -> Vec<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut next = Some(format!("{path}{sep}_count=2&_total=accurate"));
    let mut seen = Vec::new();
    let mut totals = Vec::new();
    while let Some(path) = next.take() {
        let (status, bundle) = s.get_as(token, &path).await;
        assert_eq!(status, 200, "{path}: {bundle}");
        totals.push(bundle["total"].as_u64().expect("a total"));
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            seen.push(format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ));
        }
        next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .map(|l| {
                let url = l["url"].as_str().unwrap();
                let rest = url.strip_prefix(PUBLIC).unwrap_or(url);
                rest.strip_prefix('/').unwrap_or(rest).to_owned()
            });
    }
    for t in &totals {
        assert_eq!(*t, seen.len() as u64, "{path}: total {t}, shown {seen:?}");
    }
    // `_summary=count` agrees.
    let (_, counted) = s.get_as(token, &format!("{path}{sep}_summary=count")).await;
    assert_eq!(counted["total"].as_u64(), Some(seen.len() as u64), "{path}");
    seen.sort();
    seen
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Only the source records of the test (not the EMPI's golden records).
fn sources(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .filter(|r| r.starts_with("Patient/p-") || !r.starts_with("Patient/"))
        .collect()
}

async fn scenario(backend: Backend) {
    let data = Data::new(backend).await;
    let open = Server::start(&data).await;
    let deny_x = json!({"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP"}]},
        "reference": {"reference": "Organization/x"}}]});
    let deny_research = json!({"type": "deny", "purpose": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]});
    let deny_hiv = json!({"type": "deny", "securityLabel": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]});
    for org in ["x", "y", "z"] {
        let o = json!({"resourceType": "Organization", "id": org, "name": format!("Clinic {org}")});
        let (status, body) = open.put_as(None, &o).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    for r in [
        patient("p-org", "Aalto", "M-1"),
        patient("p-research", "Brandt", "M-2"),
        patient("p-hiv", "Castro", "M-3"),
        observation("o-org", "p-org"),
        observation("o-research", "p-research"),
        observation("o-hiv", "p-hiv"),
        condition("c-hiv", "p-hiv", "http://hl7.org/fhir/sid/icd-10-cm", "B20"),
        condition(
            "c-plain",
            "p-hiv",
            "http://hl7.org/fhir/sid/icd-10-cm",
            "J45.909",
        ),
        json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Osei"}]}),
        consent("consent-org", "p-org", deny_x),
        consent("consent-research", "p-research", deny_research),
        consent("consent-hiv", "p-hiv", deny_hiv),
    ] {
        let (status, body) = open.put_as(None, &r).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    open.terminate();

    // Authorization on: a registered backend service.
    let jwks = data.dir.join("backend.jwks.json");
    std::fs::write(&jwks, JWKS).unwrap();
    let out = support::renkei()
        .args([
            "clients",
            "add",
            "--id",
            "backend",
            "--scope",
            "system/*.rs",
        ])
        .arg("--jwks")
        .arg(&jwks)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let keys = support::token_keys(&data);
    let s = Server::start_secured(&data).await;
    let scope = "system/*.rs system/Observation.cu";
    let x = token(&keys, scope, "Organization/x", "TREAT", None);
    let y = token(&keys, scope, "Organization/y", "TREAT", None);
    let research = token(&keys, scope, "Organization/y", "HRESCH", None);
    let glass = token(
        &keys,
        scope,
        "Organization/x",
        "ETREAT",
        Some("unconscious in the emergency department"),
    );

    let everything = sorted(&[
        "Patient/p-org",
        "Patient/p-research",
        "Patient/p-hiv",
        "Observation/o-org",
        "Observation/o-research",
        "Observation/o-hiv",
        "Condition/c-hiv",
        "Condition/c-plain",
        "Practitioner/dr",
    ]);
    let visible = |hidden: &[&str]| -> Vec<String> {
        everything
            .iter()
            .filter(|r| !hidden.contains(&r.as_str()))
            .cloned()
            .collect()
    };
    let types = "_type=Patient,Observation,Condition,Practitioner";

    // The HIV diagnosis was labelled when it was written; the asthma one was not.
    let (status, c) = s.get_as(&glass, "Condition/c-hiv").await;
    assert_eq!(status, 200, "{c}");
    assert!(
        c["meta"]["security"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["code"] == "HIV"),
        "{c}"
    );
    let (_, c) = s.get_as(&glass, "Condition/c-plain").await;
    assert!(c["meta"]["security"].is_null(), "{c}");

    // Organisation x: p-org's record is withheld, and HIV data from everyone.
    let hidden_from_x = ["Patient/p-org", "Observation/o-org", "Condition/c-hiv"];
    assert_eq!(
        sources(walk(&s, &x, &format!("?{types}")).await),
        visible(&hidden_from_x)
    );
    assert_eq!(
        walk(&s, &x, "Observation").await,
        sorted(&["Observation/o-research", "Observation/o-hiv"])
    );
    assert_eq!(
        walk(&s, &x, "Condition?patient=p-hiv").await,
        ["Condition/c-plain"]
    );
    assert!(
        walk(&s, &x, &format!("Condition?_security={HIV}"))
            .await
            .is_empty()
    );
    assert!(
        walk(&s, &x, "Observation?subject:Patient.family=Aalto")
            .await
            .is_empty()
    );
    assert!(
        walk(
            &s,
            &x,
            "Patient?_has:Observation:subject:code=8867-4&family=Aalto"
        )
        .await
        .is_empty()
    );
    for path in ["Patient/p-org", "Observation/o-org", "Condition/c-hiv"] {
        let (status, body) = s.get_as(&x, path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    // $everything of the withheld patient: nothing of the record.
    let (status, bundle) = s.get_as(&x, "Patient/p-org/$everything").await;
    let shown = bundle["entry"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        status == 404 || (status == 200 && shown == 0),
        "{status} {bundle}"
    );
    // Organisation y (treatment): everything but the HIV data.
    assert_eq!(
        sources(walk(&s, &y, &format!("?{types}")).await),
        visible(&["Condition/c-hiv"])
    );
    let (status, _) = s.get_as(&y, "Observation/o-org").await;
    assert_eq!(status, 200);
    // Research: p-research's record is withheld too.
    assert_eq!(
        sources(walk(&s, &research, &format!("?{types}")).await),
        visible(&[
            "Patient/p-research",
            "Observation/o-research",
            "Condition/c-hiv"
        ])
    );
    let (status, _) = s.get_as(&research, "Observation/o-research").await;
    assert_eq!(status, 404);

    // Break-glass: everything, the HIV data included.
    assert_eq!(
        sources(walk(&s, &glass, &format!("?{types}")).await),
        everything
    );
    assert_eq!(
        walk(&s, &glass, &format!("Condition?_security={HIV}")).await,
        ["Condition/c-hiv"]
    );
    let (status, _) = s.get_as(&glass, "Observation/o-org").await;
    assert_eq!(status, 200);

    // A write records its custodian, the writer's organisation.
    let (status, body) = s
        .put_as(Some(&y), &observation("o-new", "p-research"))
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (_, stored) = s.get_as(&y, "Observation/o-new").await;
    assert_eq!(
        stored["meta"]["tag"],
        json!([{"system": "https://renkei.dev/fhir/CodeSystem/custodian",
                "code": "Organization/y"}]),
        "{stored}"
    );
    // A new consent applies from the next request: p-research now denies y as well.
    let deny_y = json!({"type": "deny", "actor": [{
        "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                             "code": "IRCP"}]},
        "reference": {"reference": "Organization/y"}}]});
    let writer = token(
        &keys,
        "system/*.rs system/Consent.cu",
        "Organization/z",
        "TREAT",
        None,
    );
    let (status, body) = s
        .put_as(Some(&writer), &consent("consent-y", "p-research", deny_y))
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, _) = s.get_as(&y, "Observation/o-research").await;
    assert_eq!(status, 404);
    assert!(
        walk(&s, &y, "Observation?subject=Patient/p-research")
            .await
            .is_empty()
    );
    s.terminate();
}

#[tokio::test]
async fn sqlite_consent_withholds_data_inside_the_query() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_consent_withholds_data_inside_the_query() {
    scenario(Backend::Postgres).await;
}
