//! The security commands end to end on SQLite and PostgreSQL. `renkei audit verify`: a log
//! written through the store verifies (exit 0); after a record is edited, or the last one
//! removed, with the database's own client (`sqlite3`, `psql`), it does not (exit 1, naming the
//! record). `renkei clients` and `renkei users`: registrations are checked, kept, listed and
//! removed; a password comes from standard input and never shows; `serve` on a store with
//! registrations answers 401 to a request without a token.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use auth::chain::HeadSigner;
use store::{AuditEntry, AuditLog, BasicExtractor, PostgresConfig, PostgresStore, SqliteStore};
use support::{Backend, Data};

async fn open_log(data: &Data) -> Arc<dyn AuditLog> {
    match &data.schema {
        None => Arc::new(SqliteStore::open_dir(&data.dir, Arc::new(BasicExtractor)).expect("open")),
        Some(schema) => {
            let config = PostgresConfig {
                schema: Some(schema.clone()),
                ..PostgresConfig::new(support::database_url())
            };
            Arc::new(
                PostgresStore::connect(config, Arc::new(BasicExtractor))
                    .await
                    .expect("connect"),
            )
        }
    }
}

/// Three records signed with a new key at `key`.
async fn write_log(data: &Data, key: &Path) {
    let pkcs8 = HeadSigner::generate_pkcs8().expect("key");
    std::fs::write(key, &pkcs8).expect("write key");
    let signer = Arc::new(HeadSigner::from_pkcs8(&pkcs8).expect("signer"));
    let log = open_log(data).await;
    for n in 1..=3 {
        log.append_audit(
            vec![AuditEntry {
                recorded_ms: 1_800_000_000_000 + n,
                request_id: format!("r{n}"),
                agent: Some("Practitioner/x".into()),
                patients: vec!["Patient/a".into()],
                entities: vec![],
                record: format!(r#"{{"resourceType":"AuditEvent","n":{n}}}"#).into_bytes(),
            }],
            signer.clone(),
        )
        .await
        .expect("append");
    }
}

/// Runs `renkei audit verify`; (exit code, stdout).
fn verify(data: &Data, key: &Path) -> (i32, String) {
    let out = support::renkei()
        .args(["audit", "verify"])
        .args(data.args())
        .arg("--audit-key")
        .arg(key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("renkei runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs SQL with the database's own command-line client.
fn tamper(data: &Data, sql: &str) {
    let status = match &data.schema {
        None => Command::new("sqlite3")
            .arg(data.dir.join(SqliteStore::FILE_NAME))
            .arg(sql)
            .status()
            .expect("the sqlite3 client (scripts/test-setup.sh installs it)"),
        Some(schema) => Command::new("psql")
            .arg(support::database_url())
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("SET search_path = {schema}; {sql}"))
            .status()
            .expect("the psql client (scripts/test-setup.sh installs it)"),
    };
    assert!(status.success(), "{sql}");
}

fn drop_triggers(data: &Data) -> &'static str {
    match data.schema {
        None => {
            "DROP TRIGGER audit_log_append_only_update; DROP TRIGGER audit_log_append_only_delete;"
        }
        Some(_) => "DROP TRIGGER audit_log_append_only ON audit_log;",
    }
}

async fn scenario(backend: Backend) {
    // An edited record.
    let data = Data::new(backend).await;
    let key: PathBuf = data.dir.join("audit-signing.key");
    write_log(&data, &key).await;
    let (code, out) = verify(&data, &key);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified: 3 records"), "{out}");
    let edit = match backend {
        Backend::Sqlite => {
            "UPDATE audit_log SET agent = 'Practitioner/y', record = CAST('{\"resourceType\":\"AuditEvent\",\"n\":9}' AS BLOB) WHERE seq = 2;"
        }
        Backend::Postgres => {
            "UPDATE audit_log SET agent = 'Practitioner/y', record = convert_to('{\"resourceType\":\"AuditEvent\",\"n\":9}', 'UTF8') WHERE seq = 2;"
        }
    };
    tamper(&data, &format!("{} {edit}", drop_triggers(&data)));
    let (code, out) = verify(&data, &key);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("TAMPERED") && out.contains("record 2 was changed"),
        "{out}"
    );

    // The last record removed.
    let data = Data::new(backend).await;
    let key: PathBuf = data.dir.join("audit-signing.key");
    write_log(&data, &key).await;
    tamper(
        &data,
        &format!(
            "{} DELETE FROM audit_log WHERE seq = 3;",
            drop_triggers(&data)
        ),
    );
    let (code, out) = verify(&data, &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("removed from the end"), "{out}");

    // A record in the middle removed.
    let data = Data::new(backend).await;
    let key: PathBuf = data.dir.join("audit-signing.key");
    write_log(&data, &key).await;
    tamper(
        &data,
        &format!(
            "{} DELETE FROM audit_log WHERE seq = 2;",
            drop_triggers(&data)
        ),
    );
    let (code, out) = verify(&data, &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing or reordered"), "{out}");
}

#[tokio::test]
async fn sqlite_audit_verify_finds_tampering() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_audit_verify_finds_tampering() {
    scenario(Backend::Postgres).await;
}

/// Runs `renkei ARGS... <store args>` with `stdin`; (exit code, stdout + stderr).
fn run(data: &Data, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = support::renkei()
        .args(args)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("renkei runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("renkei ends");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn registrations(backend: Backend) {
    let data = Data::new(backend).await;
    let jwks = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../auth/tests/fixtures/client-rs384.jwks.json");
    let jwks = jwks.display().to_string();
    let (code, out) = run(
        &data,
        &[
            "clients",
            "add",
            "--id",
            "lab",
            "--scope",
            "system/Observation.cru",
            "--jwks",
            &jwks,
            "--organization",
            "Organization/lab",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("client lab registered (backend"), "{out}");
    // A bad registration is refused and names what is wrong.
    let (code, out) = run(
        &data,
        &[
            "clients",
            "add",
            "--id",
            "app",
            "--scope",
            "patient/*.rs",
            "--redirect-uri",
            "http://app.example/cb",
        ],
        "",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("must be https"), "{out}");
    let (code, out) = run(
        &data,
        &[
            "clients",
            "add",
            "--id",
            "app",
            "--scope",
            "patient/*.rs launch/patient",
            "--redirect-uri",
            "https://app.example/cb",
        ],
        "",
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&data, &["clients", "list"], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("lab\tbackend\tsystem/Observation.cru\tOrganization/lab\tjwks inline"),
        "{out}"
    );
    assert!(
        out.contains("app\tpublic") && out.contains("2 clients"),
        "{out}"
    );
    let (code, out) = run(&data, &["clients", "remove", "--id", "app"], "");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&data, &["clients", "remove", "--id", "app"], "");
    assert_eq!(code, 1, "{out}");

    let secret = "correct horse battery staple";
    let (code, out) = run(
        &data,
        &[
            "users",
            "add",
            "--name",
            "dr.sato",
            "--fhir-user",
            "Practitioner/p1",
            "--scope",
            "user/*.rs openid fhirUser",
        ],
        &format!("{secret}\n"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(secret), "{out}");
    let (code, out) = run(
        &data,
        &["users", "add", "--name", "x", "--scope", "user/*.rs"],
        "short\n",
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("at least 12 characters"), "{out}");
    let (code, out) = run(&data, &["users", "disable", "--name", "dr.sato"], "");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&data, &["users", "list"], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dr.sato\tPractitioner/p1\t-\tuser/*.rs openid fhirUser\tdisabled"),
        "{out}"
    );
    assert!(!out.contains("argon2") && !out.contains(secret), "{out}");

    // Served with authorization: no request reaches the data without a token.
    let keys = data.dir.join("token-keys.json");
    let audit_key = data.dir.join("audit-signing.key");
    let server = support::Server::start_with(
        &data,
        &[
            "--token-keys",
            keys.to_str().unwrap(),
            "--audit-key",
            audit_key.to_str().unwrap(),
        ],
    )
    .await;
    let r = server
        .client
        .get(server.url("/Patient"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert!(
        keys.is_file(),
        "the signing keys are created on first start"
    );
    server.terminate();
}

#[tokio::test]
async fn sqlite_clients_and_users_are_administered_from_the_shell() {
    registrations(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_clients_and_users_are_administered_from_the_shell() {
    registrations(Backend::Postgres).await;
}
