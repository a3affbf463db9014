//! Test harness: a fresh store of each backend (a temporary SQLite file; a fresh PostgreSQL
//! schema on `RENKEI_TEST_DATABASE_URL`, dropped at the end).

use std::path::PathBuf;
use std::sync::Arc;

use store::{BasicExtractor, IndexExtractor, PostgresConfig, PostgresStore, SqliteStore, Store};

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn database_url() -> String {
    std::env::var("RENKEI_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// A store under test and what to clean up after it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    dir: Option<PathBuf>,
    pub schema: Option<String>,
}

/// A SQLite store indexing only `identifier` ([`BasicExtractor`]).
pub fn sqlite() -> TestStore {
    sqlite_with(Arc::new(BasicExtractor))
}

/// A PostgreSQL store indexing only `identifier` ([`BasicExtractor`]).
pub async fn postgres() -> TestStore {
    postgres_with(Arc::new(BasicExtractor)).await
}

/// The extractor of every R4 search parameter, built once (it compiles ~3,000 expressions).
pub fn fhir_extractor() -> Arc<dyn IndexExtractor> {
    static EXTRACTOR: std::sync::OnceLock<Arc<store::FhirIndexExtractor>> =
        std::sync::OnceLock::new();
    EXTRACTOR
        .get_or_init(|| Arc::new(store::FhirIndexExtractor::new()))
        .clone()
}

pub fn sqlite_with(extractor: Arc<dyn IndexExtractor>) -> TestStore {
    let dir = std::env::temp_dir().join(format!("renkei-store-test-{}", uuid::Uuid::new_v4()));
    let store = SqliteStore::open_dir(&dir, extractor).expect("open SQLite store");
    TestStore {
        store: Arc::new(store),
        dir: Some(dir),
        schema: None,
    }
}

pub async fn postgres_with(extractor: Arc<dyn IndexExtractor>) -> TestStore {
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let url = database_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {url} is not reachable ({e}); start it with scripts/test-setup.sh"
            )
        });
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create test schema");
    let config = PostgresConfig {
        schema: Some(schema.clone()),
        pool_size: 4,
        ..PostgresConfig::new(url)
    };
    let store = PostgresStore::connect(config, extractor)
        .await
        .expect("connect PostgreSQL store");
    TestStore {
        store: Arc::new(store),
        dir: None,
        schema: Some(schema),
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(schema) = self.schema.take() {
            // Drop runs inside the test's runtime: use a thread with its own runtime.
            let url = database_url();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok((client, conn)) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(conn);
                            let _ = client
                                .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}
