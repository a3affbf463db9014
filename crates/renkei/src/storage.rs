//! `--data DIR` / `--database-url URL`: which store a subcommand opens.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use store::{
    FhirIndexExtractor, IndexExtractor, PostgresConfig, PostgresStore, SqliteStore, Store,
};

#[derive(Clone, clap::Args)]
pub struct StoreArgs {
    /// Data directory (the embedded SQLite database lives here as renkei.db).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite file (postgres://user@host:port/db).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl std::fmt::Debug for StoreArgs {
    /// Never prints a database password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreArgs")
            .field("data", &self.data)
            .field(
                "database_url",
                &self.database_url.as_deref().map(store::postgres_redact),
            )
            .finish()
    }
}

/// The index extractor: every R4 search parameter, extracted with FHIRPath. Built once per
/// process (it compiles about 3,000 expressions).
pub fn extractor() -> Arc<dyn IndexExtractor> {
    static EXTRACTOR: std::sync::OnceLock<Arc<FhirIndexExtractor>> = std::sync::OnceLock::new();
    EXTRACTOR
        .get_or_init(|| Arc::new(FhirIndexExtractor::new()))
        .clone()
}

impl StoreArgs {
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        match &self.database_url {
            Some(url) => {
                let store = PostgresStore::connect(PostgresConfig::new(url.clone()), extractor())
                    .await
                    .with_context(|| {
                        format!("opening PostgreSQL at {}", store::postgres_redact(url))
                    })?;
                Ok(Arc::new(store))
            }
            None => {
                let store = SqliteStore::open_dir(&self.data, extractor())
                    .with_context(|| format!("opening the store in {}", self.data.display()))?;
                Ok(Arc::new(store))
            }
        }
    }
}
