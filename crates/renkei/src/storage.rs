//! `--data DIR` / `--database-url URL`: which store a subcommand opens.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use mpi::Mpi;
use store::{
    AuditLog, FhirIndexExtractor, IndexExtractor, PostgresConfig, PostgresStore, Registry,
    SqliteStore, Store,
};

/// The patient index's persisted copy in a data directory (see `mpi::Mpi::with_snapshot`).
pub const EMPI_SNAPSHOT: &str = "empi-index.snapshot";

#[derive(Clone, clap::Args)]
pub struct StoreArgs {
    /// Data directory (the embedded SQLite database lives here as renkei.db); not needed with
    /// `--database-url`.
    #[arg(long, value_name = "DIR", required_unless_present = "database_url")]
    pub data: Option<PathBuf>,
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
    /// Opens the store, creating it (and its data directory) when it does not exist yet.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(self.open_security(false).await?.store)
    }

    /// Opens a store that must already exist: what a command that only reads or decides on
    /// existing data uses, so that a mistyped `--data` is an error, not a new empty store.
    pub async fn open_existing(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(self.open_security(true).await?.store)
    }

    /// Opens the store with its security tables: the audit log and registrations (one
    /// handle on the database). With `existing`, a store that does not exist yet is an error.
    pub async fn open_security(&self, existing: bool) -> anyhow::Result<Security> {
        if existing && self.database_url.is_none() {
            let data = self.data_dir()?;
            let file = data.join(SqliteStore::FILE_NAME);
            anyhow::ensure!(
                file.is_file(),
                "no store in {}: {} does not exist (check --data)",
                data.display(),
                file.display()
            );
        }
        match &self.database_url {
            Some(url) => {
                let store = PostgresStore::connect(PostgresConfig::new(url.clone()), extractor())
                    .await
                    .with_context(|| {
                        format!("opening PostgreSQL at {}", store::postgres_redact(url))
                    })?;
                store.label_writes(auth::labels::Labeler::default());
                Ok(Security {
                    store: Arc::new(store.clone()),
                    audit: Arc::new(store.clone()),
                    registry: Arc::new(store.clone()),
                    exchange: Arc::new(store),
                })
            }
            None => {
                let data = self.data_dir()?;
                let store = SqliteStore::open_dir(data, extractor())
                    .with_context(|| format!("opening the store in {}", data.display()))?;
                store.label_writes(auth::labels::Labeler::default());
                Ok(Security {
                    store: Arc::new(store.clone()),
                    audit: Arc::new(store.clone()),
                    registry: Arc::new(store.clone()),
                    exchange: Arc::new(store),
                })
            }
        }
    }

    /// Where the patient index keeps its persisted copy: beside the embedded store's file
    /// (none on PostgreSQL, where the index loads from the change feed).
    pub fn empi_snapshot(&self) -> Option<PathBuf> {
        match (&self.database_url, &self.data) {
            (None, Some(data)) => Some(data.join(EMPI_SNAPSHOT)),
            _ => None,
        }
    }

    fn data_dir(&self) -> anyhow::Result<&std::path::Path> {
        self.data
            .as_deref()
            .context("--data DIR (or --database-url URL) is required")
    }
}

/// A store's security tables.
#[derive(Debug)]
pub struct Security {
    /// The resources.
    pub store: Arc<dyn Store>,
    /// The audit log.
    pub audit: Arc<dyn AuditLog>,
    /// Registered clients and users.
    pub registry: Arc<dyn Registry>,
    /// The exchange's registrations, holdings and queues.
    pub exchange: Arc<dyn store::ExchangeState>,
}

/// `--no-empi` / `--empi-model`: whether and how Patient writes are linked.
#[derive(Debug, Clone, clap::Args)]
pub struct EmpiArgs {
    /// Do not link Patients to enterprise identities (no golden records, no review queue,
    /// no manual EMPI operations, no PIXm; `$match` still works).
    #[arg(long)]
    pub no_empi: bool,
    /// Matching model (JSON, from `renkei empi train`); default: the built-in model.
    #[arg(long, value_name = "MODEL.json")]
    pub empi_model: Option<PathBuf>,
}

impl EmpiArgs {
    /// The patient index over `store` (the store underneath the linking layer), keeping its
    /// persisted copy at `snapshot` if given; its [`Mpi::linked_store`] is what Patient writes
    /// go through: linked unless `--no-empi`.
    pub fn mpi(
        &self,
        store: Arc<dyn Store>,
        snapshot: Option<PathBuf>,
    ) -> anyhow::Result<Arc<Mpi>> {
        let model = match &self.empi_model {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                empi::Model::from_json(&text)
                    .with_context(|| format!("EMPI model {}", path.display()))?
            }
            None => empi::Model::default(),
        };
        let mpi = Mpi::new(
            store,
            model,
            empi::golden::Survivorship::default(),
            !self.no_empi,
        );
        Ok(Arc::new(match snapshot {
            Some(path) => mpi.with_snapshot(path),
            None => mpi,
        }))
    }
}

/// Writes the patient index's persisted copy, saying so on failure (the store is the truth:
/// without the copy the next start loads from the change feed).
pub async fn save_empi_snapshot(mpi: &Mpi) {
    if !mpi.is_ready() {
        // Stopped while it loaded: the copy it started from (if any) is still there.
        tracing::info!("the patient index is still loading: its snapshot is left as it was");
        return;
    }
    let started = std::time::Instant::now();
    match mpi.save_snapshot().await {
        Ok(Some(bytes)) => tracing::info!(
            bytes,
            seconds = started.elapsed().as_secs_f64(),
            "patient index snapshot written"
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "writing the patient index snapshot failed"),
    }
}

/// Links the Patients no golden record lists yet (written with `--no-empi`, or before the
/// EMPI existed), in transactions of 500; returns how many.
pub async fn link_backlog(mpi: &Mpi) -> anyhow::Result<usize> {
    if !mpi.linking() {
        return Ok(0);
    }
    let ctx = store::RequestContext::system();
    let mut total = 0;
    let mut waiting = usize::MAX;
    loop {
        let (linked, remaining) = mpi
            .link_backlog(&ctx, 500)
            .await
            .context("linking Patients to enterprise identities")?;
        total += linked;
        // Stops when done, or when a round made no progress.
        if remaining == 0 || (linked == 0 && remaining >= waiting) {
            return Ok(total);
        }
        waiting = remaining;
    }
}
