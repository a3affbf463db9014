//! Test harness: a fresh store of each backend (a temporary SQLite file; a fresh PostgreSQL
//! schema on `RENKEI_TEST_DATABASE_URL`, dropped at the end).

// Each test binary (the suite, the PostgreSQL feed stress test) uses a part of it.
#![allow(dead_code)]

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
    extractor: Arc<dyn IndexExtractor>,
    pool_size: usize,
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
    sqlite_labelled(extractor, false)
}

/// A SQLite store that labels what is written with the default rule table when `labels`.
pub fn sqlite_labelled(extractor: Arc<dyn IndexExtractor>, labels: bool) -> TestStore {
    let dir = std::env::temp_dir().join(format!("renkei-store-test-{}", uuid::Uuid::new_v4()));
    let store = SqliteStore::open_dir(&dir, extractor.clone()).expect("open SQLite store");
    if labels {
        store.label_writes(auth::labels::Labeler::default());
    }
    TestStore {
        store: Arc::new(store),
        dir: Some(dir),
        schema: None,
        extractor,
        pool_size: 0,
    }
}

pub async fn postgres_with(extractor: Arc<dyn IndexExtractor>) -> TestStore {
    postgres_sized(extractor, 4).await
}

/// A PostgreSQL store with a pool of `pool_size` connections.
pub async fn postgres_sized(extractor: Arc<dyn IndexExtractor>, pool_size: usize) -> TestStore {
    postgres_labelled(extractor, pool_size, false).await
}

/// A PostgreSQL store that labels what is written with the default rule table when `labels`.
pub async fn postgres_labelled(
    extractor: Arc<dyn IndexExtractor>,
    pool_size: usize,
    labels: bool,
) -> TestStore {
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
    let store = connect(&schema, extractor.clone(), pool_size).await;
    if labels {
        store.label_writes(auth::labels::Labeler::default());
    }
    TestStore {
        store: Arc::new(store),
        dir: None,
        schema: Some(schema),
        extractor,
        pool_size,
    }
}

async fn connect(
    schema: &str,
    extractor: Arc<dyn IndexExtractor>,
    pool_size: usize,
) -> PostgresStore {
    let config = PostgresConfig {
        schema: Some(schema.to_owned()),
        pool_size,
        ..PostgresConfig::new(database_url())
    };
    PostgresStore::connect(config, extractor)
        .await
        .expect("connect PostgreSQL store")
}

impl TestStore {
    /// Opens the same database again (applying pending migrations), as a restarted process
    /// would; the previous handle is dropped.
    pub async fn reopen(&mut self) {
        self.store = match (&self.dir, &self.schema) {
            (Some(dir), _) => Arc::new(
                SqliteStore::open_dir(dir, self.extractor.clone()).expect("reopen SQLite store"),
            ),
            (None, Some(schema)) => {
                Arc::new(connect(schema, self.extractor.clone(), self.pool_size).await)
            }
            (None, None) => unreachable!("a test store is a directory or a schema"),
        };
    }

    /// The SQLite database file, for a test that edits it underneath the store.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(SqliteStore::FILE_NAME))
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
