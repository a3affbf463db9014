//! The security tables on both backends. The audit log: appends chain and sign, searches find records by patient,
//! agent, resource and time, the tables refuse updates and deletes, and whoever gets past
//! that (dropping the triggers, as a database client can) is found by the check: an edited
//! record, a removed one, the last one removed, the head removed. Registered clients and
//! users: kept, listed, replaced and removed. A write's record commits in the write's own
//! transaction: with it, or not at all.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use auth::chain::{ChainError, HeadSigner, HeadVerifier};
use store::audit::{VerifyError, verify_log};
use store::{
    AuditEntry, AuditLog, AuditQuery, BasicExtractor, Outcome, PostgresConfig, PostgresStore,
    Registry, RequestContext, SqliteStore, Store, StoreError, WriteAudit, WriteAuditor, WriteEntry,
    WriteOp,
};

/// A fresh store of one backend, with raw access for tampering.
enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

struct Fixture {
    store: Arc<dyn Store>,
    log: Arc<dyn AuditLog>,
    registry: Arc<dyn Registry>,
    backend: Backend,
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = std::env::temp_dir().join(format!("renkei-audit-test-{}", uuid::Uuid::new_v4()));
        let store = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).expect("open SQLite");
        Fixture {
            store: Arc::new(store.clone()),
            log: Arc::new(store.clone()),
            registry: Arc::new(store),
            backend: Backend::Sqlite(dir),
        }
    }

    async fn postgres() -> Fixture {
        let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) =
            tokio_postgres::connect(&support::database_url(), tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL reachable (scripts/test-setup.sh starts it)");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("schema");
        let config = PostgresConfig {
            schema: Some(schema.clone()),
            pool_size: 2,
            ..PostgresConfig::new(support::database_url())
        };
        let store = PostgresStore::connect(config, Arc::new(BasicExtractor))
            .await
            .expect("connect");
        Fixture {
            store: Arc::new(store.clone()),
            log: Arc::new(store.clone()),
            registry: Arc::new(store),
            backend: Backend::Postgres(schema),
        }
    }

    /// Runs SQL as a database client would, outside the store.
    async fn tamper(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.join(SqliteStore::FILE_NAME)).expect("open");
                c.execute_batch(sql).expect("tamper");
            }
            Backend::Postgres(schema) => {
                let (client, conn) =
                    tokio_postgres::connect(&support::database_url(), tokio_postgres::NoTls)
                        .await
                        .expect("connect");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("SET search_path = {schema}; {sql}"))
                    .await
                    .expect("tamper");
            }
        }
    }

    /// The same, expecting the database to refuse.
    async fn tamper_refused(&self, sql: &str) -> String {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let c = rusqlite::Connection::open(dir.join(SqliteStore::FILE_NAME)).expect("open");
                c.execute_batch(sql).expect_err("refused").to_string()
            }
            Backend::Postgres(schema) => {
                let (client, conn) =
                    tokio_postgres::connect(&support::database_url(), tokio_postgres::NoTls)
                        .await
                        .expect("connect");
                tokio::spawn(conn);
                let e = client
                    .batch_execute(&format!("SET search_path = {schema}; {sql}"))
                    .await
                    .expect_err("refused");
                format!("{e:?}")
            }
        }
    }

    fn drop_triggers(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => {
                "DROP TRIGGER audit_log_append_only_update; DROP TRIGGER audit_log_append_only_delete;"
            }
            Backend::Postgres(_) => {
                "DROP TRIGGER audit_log_append_only ON audit_log; DROP TRIGGER audit_log_no_truncate ON audit_log;"
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Backend::Postgres(schema) => {
                let (url, schema) = (support::database_url(), schema.clone());
                let _ = std::thread::spawn(move || {
                    let mut c = postgres_sync(&url);
                    if let Some(c) = c.as_mut() {
                        let _ = c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
                    }
                })
                .join();
            }
        }
    }
}

/// A blocking client for clean-up (Drop cannot await).
fn postgres_sync(url: &str) -> Option<SyncClient> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(client)
    })?;
    Some(SyncClient { rt, client })
}

struct SyncClient {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl SyncClient {
    fn batch_execute(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }
}

fn entry(n: u32, patient: &str, agent: &str) -> AuditEntry {
    AuditEntry {
        recorded_ms: 1_800_000_000_000 + i64::from(n) * 1_000,
        request_id: format!("req-{n}"),
        agent: Some(agent.to_owned()),
        patients: vec![patient.to_owned()],
        entities: vec![format!("Observation/o{n}")],
        record: format!(r#"{{"resourceType":"AuditEvent","n":{n}}}"#).into_bytes(),
    }
}

fn signer() -> Arc<HeadSigner> {
    Arc::new(HeadSigner::from_pkcs8(&HeadSigner::generate_pkcs8().expect("key")).expect("signer"))
}

/// Five records in three appends; returns the verifier.
async fn filled(f: &Fixture) -> HeadVerifier {
    let s = signer();
    let log = f.log.as_ref();
    log.append_audit(vec![entry(1, "Patient/a", "Practitioner/x")], s.clone())
        .await
        .expect("append");
    log.append_audit(
        vec![
            entry(2, "Patient/b", "Practitioner/x"),
            entry(3, "Patient/a", "Practitioner/y"),
        ],
        s.clone(),
    )
    .await
    .expect("append");
    let head = log
        .append_audit(
            vec![
                entry(4, "Patient/a", "Practitioner/x"),
                entry(5, "Patient/b", "Practitioner/y"),
            ],
            s.clone(),
        )
        .await
        .expect("append");
    assert_eq!(head.seq, 5);
    s.verifier()
}

async fn verify(f: &Fixture, v: &HeadVerifier) -> Result<u64, VerifyError> {
    // Pages of two, so that the check crosses pages.
    verify_log(f.log.as_ref(), v, 2, |_, _| {}).await
}

async fn appends_chain_and_searches_find(f: Fixture) {
    assert_eq!(
        verify(&f, &signer().verifier()).await.expect("empty log"),
        0
    );
    let v = filled(&f).await;
    assert_eq!(verify(&f, &v).await.expect("verifies"), 5);
    // Another key's verifier refuses the head.
    assert!(matches!(
        verify(&f, &signer().verifier()).await,
        Err(VerifyError::Chain(ChainError::BadSignature))
    ));
    let log = f.log.as_ref();
    let seqs = |rows: Vec<store::AuditRow>| rows.iter().map(|r| r.seq).collect::<Vec<_>>();
    let q = |patient: Option<&str>, agent: Option<&str>| AuditQuery {
        patients: patient.map(str::to_owned).into_iter().collect(),
        agent: agent.map(str::to_owned),
        count: 10,
        ..AuditQuery::default()
    };
    assert_eq!(
        seqs(log.search_audit(&q(Some("Patient/a"), None)).await.unwrap()),
        vec![4, 3, 1]
    );
    assert_eq!(
        seqs(
            log.search_audit(&q(Some("Patient/a"), Some("Practitioner/x")))
                .await
                .unwrap()
        ),
        vec![4, 1]
    );
    let by_entity = AuditQuery {
        entity: Some("Observation/o2".into()),
        count: 10,
        ..AuditQuery::default()
    };
    assert_eq!(seqs(log.search_audit(&by_entity).await.unwrap()), vec![2]);
    let window = AuditQuery {
        since_ms: Some(1_800_000_002_000),
        until_ms: Some(1_800_000_004_000),
        count: 10,
        ..AuditQuery::default()
    };
    assert_eq!(seqs(log.search_audit(&window).await.unwrap()), vec![3, 2]);
    let page = AuditQuery {
        before_seq: Some(4),
        count: 2,
        ..AuditQuery::default()
    };
    assert_eq!(seqs(log.search_audit(&page).await.unwrap()), vec![3, 2]);
    let one = log.read_audit(3).await.unwrap().expect("record 3");
    assert_eq!(one.record, entry(3, "", "").record);
    assert!(log.read_audit(6).await.unwrap().is_none());
}

async fn the_tables_refuse_changes(f: Fixture) {
    let _ = filled(&f).await;
    let e = f
        .tamper_refused("UPDATE audit_log SET agent = 'z' WHERE seq = 1")
        .await;
    assert!(e.contains("append-only"), "{e}");
    let e = f
        .tamper_refused("DELETE FROM audit_log WHERE seq = 5")
        .await;
    assert!(e.contains("append-only"), "{e}");
}

async fn an_edited_record_is_found(f: Fixture) {
    let v = filled(&f).await;
    let sql = match f.backend {
        Backend::Sqlite(_) => {
            "UPDATE audit_log SET record = CAST('{\"resourceType\":\"AuditEvent\",\"n\":99}' AS BLOB) WHERE seq = 2"
        }
        Backend::Postgres(_) => {
            "UPDATE audit_log SET record = convert_to('{\"resourceType\":\"AuditEvent\",\"n\":99}', 'UTF8') WHERE seq = 2"
        }
    };
    f.tamper(&format!("{} {sql}", f.drop_triggers())).await;
    assert!(matches!(
        verify(&f, &v).await,
        Err(VerifyError::Chain(ChainError::Edited { seq: 2 }))
    ));
}

async fn a_removed_record_is_found(f: Fixture) {
    let v = filled(&f).await;
    f.tamper(&format!(
        "{} DELETE FROM audit_log WHERE seq = 3",
        f.drop_triggers()
    ))
    .await;
    assert!(matches!(
        verify(&f, &v).await,
        Err(VerifyError::Chain(ChainError::Gap {
            previous: 2,
            found: 4
        }))
    ));
}

async fn removing_the_last_record_is_found(f: Fixture) {
    let v = filled(&f).await;
    f.tamper(&format!(
        "{} DELETE FROM audit_log WHERE seq = 5",
        f.drop_triggers()
    ))
    .await;
    assert!(matches!(
        verify(&f, &v).await,
        Err(VerifyError::Chain(ChainError::Truncated {
            last: 4,
            signed: 5
        }))
    ));
}

async fn removing_the_head_is_found_and_stops_appends(f: Fixture) {
    let v = filled(&f).await;
    f.tamper("DELETE FROM audit_head").await;
    assert!(matches!(verify(&f, &v).await, Err(VerifyError::Headless)));
    let e = f
        .log
        .append_audit(vec![entry(6, "Patient/a", "Practitioner/x")], signer())
        .await
        .expect_err("no second chain over the first");
    assert!(e.to_string().contains("tampered"), "{e}");
}

#[tokio::test]
async fn sqlite_appends_chain_and_searches_find() {
    appends_chain_and_searches_find(Fixture::sqlite()).await;
}

#[tokio::test]
async fn postgres_appends_chain_and_searches_find() {
    appends_chain_and_searches_find(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_tables_refuse_changes() {
    the_tables_refuse_changes(Fixture::sqlite()).await;
}

#[tokio::test]
async fn postgres_tables_refuse_changes() {
    the_tables_refuse_changes(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_tampering_is_found() {
    an_edited_record_is_found(Fixture::sqlite()).await;
    a_removed_record_is_found(Fixture::sqlite()).await;
    removing_the_last_record_is_found(Fixture::sqlite()).await;
    removing_the_head_is_found_and_stops_appends(Fixture::sqlite()).await;
}

#[tokio::test]
async fn postgres_tampering_is_found() {
    an_edited_record_is_found(Fixture::postgres().await).await;
    a_removed_record_is_found(Fixture::postgres().await).await;
    removing_the_last_record_is_found(Fixture::postgres().await).await;
    removing_the_head_is_found_and_stops_appends(Fixture::postgres().await).await;
}

#[tokio::test]
async fn concurrent_appends_on_postgres_keep_one_chain() {
    let f = Fixture::postgres().await;
    let s = signer();
    let mut tasks = Vec::new();
    for t in 0..4u32 {
        let log = f.log.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..10u32 {
                log.append_audit(
                    vec![entry(t * 100 + n, "Patient/a", "Practitioner/x")],
                    s.clone(),
                )
                .await
                .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(verify(&f, &s.verifier()).await.expect("one chain"), 40);
}

async fn registrations_are_kept(f: Fixture) {
    use auth::registry::{Client, ClientKind, User};
    let r = f.registry.as_ref();
    assert!(!r.has_registrations().await.unwrap());
    let mut c = Client {
        id: "lab".into(),
        kind: ClientKind::Backend,
        scope: "system/Observation.cru".into(),
        jwks: None,
        jwks_uri: Some("https://lab.example/jwks".into()),
        redirect_uris: vec![],
        organization: Some("Organization/lab".into()),
        disabled: false,
    };
    r.put_client(&c).await.unwrap();
    assert!(r.has_registrations().await.unwrap());
    c.scope = "system/Observation.rs".into();
    r.put_client(&c).await.unwrap();
    assert_eq!(r.client("lab").await.unwrap(), Some(c.clone()));
    assert_eq!(r.clients().await.unwrap(), vec![c]);
    let u = User {
        name: "dr.sato".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        fhir_user: Some("Practitioner/p1".into()),
        organization: None,
        scope: "user/*.rs".into(),
        disabled: false,
    };
    r.put_user(&u).await.unwrap();
    assert_eq!(r.user("dr.sato").await.unwrap(), Some(u.clone()));
    assert_eq!(r.users().await.unwrap(), vec![u]);
    assert!(r.remove_client("lab").await.unwrap());
    assert!(!r.remove_client("lab").await.unwrap());
    assert_eq!(r.client("lab").await.unwrap(), None);
    assert!(r.has_registrations().await.unwrap());
}

/// A request's auditor of writes, counting what committed.
struct Recorder {
    signer: Arc<HeadSigner>,
    committed: std::sync::atomic::AtomicUsize,
}

impl WriteAuditor for Recorder {
    fn record(&self, outcomes: &[Result<Outcome, StoreError>]) -> AuditEntry {
        let written: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(Outcome::Updated(r) | Outcome::Created(r)) => {
                    Some(format!("{}/{}", r.resource_type, r.id))
                }
                _ => None,
            })
            .collect();
        AuditEntry {
            recorded_ms: 1_800_000_000_000,
            request_id: "write-1".into(),
            agent: Some("Practitioner/x".into()),
            patients: written.clone(),
            entities: Vec::new(),
            record: serde_json::json!({"resourceType": "AuditEvent", "wrote": written})
                .to_string()
                .into_bytes(),
        }
    }

    fn signer(&self) -> &HeadSigner {
        &self.signer
    }

    fn committed(&self) {
        self.committed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn a_writes_record_commits_with_it(f: Fixture) {
    let recorder = Arc::new(Recorder {
        signer: signer(),
        committed: Default::default(),
    });
    let mut ctx = RequestContext::system();
    ctx.audit = Some(WriteAudit(recorder.clone()));
    let put = |if_match| {
        vec![WriteEntry::new(WriteOp::Update {
            resource_type: "Patient".into(),
            id: "p1".into(),
            resource: serde_json::json!({"resourceType": "Patient", "id": "p1"}),
            if_match,
        })]
    };
    f.store.transaction(&ctx, put(None)).await.expect("write");
    let verifier = recorder.signer.verifier();
    assert_eq!(verify(&f, &verifier).await.expect("verifies"), 1);
    let found = f
        .log
        .search_audit(&AuditQuery {
            patients: vec!["Patient/p1".into()],
            count: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(found.len(), 1);
    // A write that fails (another version expected) leaves neither itself nor a record.
    let err = f.store.transaction(&ctx, put(Some(9))).await.unwrap_err();
    assert!(format!("{err}").contains("version"), "{err}");
    assert_eq!(verify(&f, &verifier).await.expect("verifies"), 1);
    assert_eq!(
        recorder.committed.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // The next write chains on.
    f.store
        .transaction(&ctx, put(Some(1)))
        .await
        .expect("write");
    assert_eq!(verify(&f, &verifier).await.expect("verifies"), 2);
}

#[tokio::test]
async fn sqlite_a_writes_record_commits_with_it() {
    a_writes_record_commits_with_it(Fixture::sqlite()).await;
}

#[tokio::test]
async fn postgres_a_writes_record_commits_with_it() {
    a_writes_record_commits_with_it(Fixture::postgres().await).await;
}

#[tokio::test]
async fn sqlite_registrations_are_kept() {
    registrations_are_kept(Fixture::sqlite()).await;
}

#[tokio::test]
async fn postgres_registrations_are_kept() {
    registrations_are_kept(Fixture::postgres().await).await;
}
