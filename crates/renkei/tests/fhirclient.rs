//! A real SMART client against the real server: Python's `fhirclient` (SMART on FHIR's own
//! library, pinned by `scripts/install-fhirclient.sh`) finds the token endpoint in the
//! CapabilityStatement, obtains a token by backend services with a `private_key_jwt`
//! assertion, and reads a Patient and its Observations; without the assertion it gets
//! nothing. Never skipped: a missing Python or a failed install fails the test.

mod support;

use std::path::PathBuf;
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Backend, Data, Server};

const RSA_PEM: &str = include_str!("../../auth/tests/fixtures/client-rs384.pem");
const JWKS: &str = include_str!("../../auth/tests/fixtures/client-rs384.jwks.json");

/// `$PYTHON` (default `python3`) with fhirclient, installed by the project's script if missing.
fn python() -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let has = |p: &str| {
        Command::new(p)
            .args(["-c", "import fhirclient"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has(&python) {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-fhirclient.sh");
        let status = Command::new("bash")
            .arg(&script)
            .env("PYTHON", &python)
            .status();
        eprintln!(
            "fhirclient was missing; ran {}: {status:?}",
            script.display()
        );
    }
    assert!(
        has(&python),
        "fhirclient is not installed for {python} and scripts/install-fhirclient.sh did not \
         install it (pip install fhirclient==4.4.0)"
    );
    python
}

fn assertion(aud: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some("test-rs384".into());
    let claims = json!({"iss": "backend", "sub": "backend", "aud": aud, "exp": now + 240,
                        "jti": uuid::Uuid::new_v4().to_string()});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn run_client(python: &str, base: &str, assertion: &str, patient: &str) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fhirclient/backend.py");
    let out = Command::new(python)
        .arg(script)
        .args([base, assertion, patient])
        .output()
        .expect("python runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn fhirclient_reads_with_a_backend_services_token() {
    let python = python();
    let data = Data::new(Backend::Sqlite).await;
    let open = Server::start(&data).await;
    for r in [
        json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Nakamura", "given": ["Yui"]}],
               "birthDate": "1988-02-29"}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
               "subject": {"reference": "Patient/p1"}}),
    ] {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let (status, _, body) = open.send("PUT", &path, &[], Some(&r.to_string())).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    open.terminate();
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
            "--jwks",
        ])
        .arg(&jwks)
        .args(data.args())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = Server::start(&data).await;
    let token_endpoint = s.base.replace("/fhir", "/auth/token");

    let (ok, out) = run_client(
        &python,
        &format!("{}/", s.base),
        &assertion(&token_endpoint),
        "p1",
    );
    assert!(ok, "{out}");
    let read: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        read,
        json!({"patient": "p1", "family": "Nakamura", "observations": ["o1"]})
    );
    // An assertion for another audience gets no token, so nothing is read.
    let (ok, out) = run_client(
        &python,
        &format!("{}/", s.base),
        &assertion("https://elsewhere/token"),
        "p1",
    );
    assert!(!ok, "{out}");
    assert!(!out.contains("Nakamura"), "{out}");
    s.terminate();
}
