//! `renkei bench`: figures, never assertions. `ingest` imports a dataset into a fresh store
//! (a temporary SQLite file, and a throwaway PostgreSQL schema when `--database-url` is given)
//! and reports resources/s; `read` serves a fresh store over HTTP on a loopback port and reports
//! point-read latency percentiles; `generate` and `search` (in `bench_search`) measure
//! search at scale; `mllp` and `ssmix2` (in `bench_hl7`) measure HL7 v2 ingestion;
//! `repetitions` (in `bench_repetitions`) what one oversized resource costs the node; `match`
//! (in `bench_match`) the patient index at a million people.
//!
//! `ingest` and `generate` default to [`SAMPLE_DATASET`], a path relative to the working
//! directory that exists only from the repository root of a checkout with its sibling `shared`
//! directory; [`check_dataset`] says so, and how to name another dataset, when it is missing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use server::{AppState, R4Validator, ServerConfig};
use store::{PostgresConfig, PostgresStore, SqliteStore, Store};

use crate::import_cmd::{Options, import};
use crate::storage::extractor;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import a dataset into a fresh store; report resources/s.
    Ingest(IngestArgs),
    /// Point reads over HTTP (one client, keep-alive); report latency percentiles.
    Read(ReadArgs),
    /// Scale a Synthea NDJSON export up by cloning its patients with new ids.
    Generate(crate::bench_search::GenerateArgs),
    /// A mix of typical clinical searches over HTTP with concurrent clients; report latency
    /// percentiles and queries/s (optionally loading a dataset first and reporting ingest).
    Search(crate::bench_search::SearchArgs),
    /// HL7 v2 over MLLP with durable ACKs (ADT+ORU, concurrent connections); report msg/s
    /// and ACK latency percentiles.
    Mllp(crate::bench_hl7::MllpArgs),
    /// Import a generated SS-MIX2 tree; report files/s.
    Ssmix2(crate::bench_hl7::Ssmix2Args),
    /// People through the EMPI at scale: import people/s, restart to /readyz, and `$match`
    /// latency from concurrent clients against the /healthz floor.
    Match(crate::bench_match::MatchArgs),
    /// One Patient with 1,000 … 64,000 repeated identifiers / names / addresses while small
    /// writes go on: time per write, per repetition, and the small writes' longest wait.
    Repetitions(crate::bench_repetitions::RepetitionsArgs),
    /// A hub and two nodes as processes: record-locator updates/s, network query latency
    /// against one node's, directed messages/s with receipts.
    Exchange(crate::bench_exchange::ExchangeArgs),
}

/// The default dataset of `bench ingest` and `bench generate`: the Synthea sample in the
/// `shared` directory beside the repository, relative to the working directory.
pub const SAMPLE_DATASET: &str = "../shared/data/synthea-10";

/// Checks that every dataset path exists before a benchmark opens a store. A missing default
/// ([`SAMPLE_DATASET`]) is explained: where it is looked for, and `how` to give another one.
pub fn check_dataset(paths: &[PathBuf], how: &str) -> anyhow::Result<()> {
    for path in paths {
        if path.exists() {
            continue;
        }
        if path == Path::new(SAMPLE_DATASET) {
            let here = std::env::current_dir()
                .map(|d| format!(" (the working directory is {})", d.display()))
                .unwrap_or_default();
            anyhow::bail!(
                "the default dataset {SAMPLE_DATASET} does not exist here{here}: it is the \
                 Synthea sample in the `shared` directory beside the repository, found when run \
                 from the repository root; run from there, or give a dataset: {how}"
            );
        }
        anyhow::bail!("dataset {} does not exist", path.display());
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Dataset: NDJSON / Bundle files or directories (default: the Synthea sample beside the
    /// repository, `../shared/data/synthea-10`, found from the repository root).
    #[arg(default_value = SAMPLE_DATASET)]
    paths: Vec<PathBuf>,
    /// Also measure PostgreSQL (a throwaway schema in this database).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Resources per transaction.
    #[arg(long, default_value_t = crate::import_cmd::DEFAULT_CHUNK)]
    chunk: usize,
}

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Number of timed reads.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Measure on PostgreSQL (a throwaway schema in this database) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Serve with authorization and audit on, as on a store with registrations: every read
    /// carries a bearer token and is audited before it is answered.
    #[arg(long)]
    auth: bool,
}

/// A child `renkei serve` of a benchmark, and its base URL (from its "listening" line). It
/// logs at `error` unless `RENKEI_BENCH_SERVER_LOG` says otherwise; dropped, it is stopped.
pub struct ChildServer {
    child: std::process::Child,
    pub base: String,
}

impl ChildServer {
    /// Starts `binary serve --listen 127.0.0.1:0 --data DATA` with `extra` arguments (a later
    /// `--listen` wins) and waits for its "listening" line.
    pub fn start(binary: &Path, data: &Path, extra: &[String]) -> anyhow::Result<ChildServer> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RENKEI_BENCH_SERVER_LOG").unwrap_or("error".into()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let base = loop {
            let Some(line) = lines.next() else {
                anyhow::bail!("the server on {} ended before it listened", data.display());
            };
            let line = line?;
            if let Some(rest) = line.strip_prefix("renkei listening on ") {
                break rest
                    .split_whitespace()
                    .next()
                    .context("no address on the listening line")?
                    .to_owned();
            }
        };
        // Keep reading stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(ChildServer { child, base })
    }

    /// SIGTERM (a graceful shutdown), then waits.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()?;
        Ok(())
    }

    fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait()
    }
}

impl std::fmt::Debug for ChildServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildServer")
            .field("base", &self.base)
            .finish()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

/// The `p` quantile of sorted latencies, in milliseconds (0 for none).
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Ingest(a) => ingest(a).await,
        Command::Read(a) => read(a).await,
        Command::Generate(a) => crate::bench_search::generate(a).await,
        Command::Search(a) => crate::bench_search::search(a).await,
        Command::Mllp(a) => crate::bench_hl7::mllp(a).await,
        Command::Ssmix2(a) => crate::bench_hl7::ssmix2(a).await,
        Command::Repetitions(a) => crate::bench_repetitions::repetitions(a).await,
        Command::Match(a) => crate::bench_match::run(a).await,
        Command::Exchange(a) => crate::bench_exchange::run(a).await,
    }
}

/// `store` with EMPI linking (the default model), as the product writes.
pub fn linked(store: Arc<dyn Store>) -> Arc<dyn Store> {
    Arc::new(mpi::Mpi::with_defaults(store)).linked_store()
}

/// `renkei serve`'s HTTP face on a free loopback port of this process, for the benchmarks
/// that measure over HTTP.
pub struct InProcess {
    /// The FHIR base URL (`http://127.0.0.1:PORT/fhir`).
    pub base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl InProcess {
    pub async fn start(state: AppState) -> anyhow::Result<InProcess> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}/fhir", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(state, listener, async {
            let _ = stopped.await;
        }));
        Ok(InProcess { base, stop, task })
    }

    /// Lets requests in flight finish, then returns the server's own error, if any.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await??;
        Ok(())
    }
}

/// A throwaway store, removed on [`Fresh::cleanup`].
pub struct Fresh {
    pub store: Arc<dyn Store>,
    /// Its registrations and audit log (for `--auth`).
    pub registry: Arc<dyn store::Registry>,
    pub audit: Arc<dyn store::AuditLog>,
    dir: Option<PathBuf>,
    pg: Option<PostgresStore>,
}

/// `--auth` of the HTTP benchmarks: the server runs as `renkei serve` does on a store with
/// registrations (every request's bearer token verified and authorized, and audited with a
/// group commit before its response), and the benchmark's requests carry a `system/*.cruds`
/// token of this node's own keys.
pub struct BenchAuth {
    keys: auth::token::TokenKeys,
}

impl BenchAuth {
    /// `state` with authorization and audit on, over a store's registry and audit log.
    pub async fn apply(
        state: AppState,
        registry: Arc<dyn store::Registry>,
        audit: Arc<dyn store::AuditLog>,
    ) -> anyhow::Result<(AppState, BenchAuth)> {
        let ring = auth::token::TokenKeys::generate(chrono::Utc::now().timestamp())?;
        let keys = auth::token::TokenKeys::from_json(&ring.to_json())?;
        let security = server::security::Security::open(
            ring,
            registry,
            server::security::SecuritySettings::default(),
        )
        .await?;
        let signer = Arc::new(auth::chain::HeadSigner::from_pkcs8(
            &auth::chain::HeadSigner::generate_pkcs8()?,
        )?);
        let auditor = server::security::audit::Auditor::start(audit, signer, "bench".into());
        Ok((
            state
                .with_security(Arc::new(security))
                .with_audit(Arc::new(auditor)),
            BenchAuth { keys },
        ))
    }

    /// A token for the server at `base`, good for an hour.
    pub fn token(&self, base: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        Ok(self.keys.issue(&auth::token::AccessClaims {
            iss: server::security::oauth::issuer_of(base).to_owned(),
            sub: "bench".into(),
            aud: base.to_owned(),
            exp: now + 3600,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: "system/*.cruds".into(),
            client_id: "bench".into(),
            patient: None,
            fhir_user: None,
            organization: None,
            purpose_of_use: Some("TREAT".into()),
            break_glass: None,
        })?)
    }
}

/// A client whose every request carries `token` (none: no header).
pub fn client_with(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?,
        );
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

impl Fresh {
    pub async fn open(database_url: Option<&str>) -> anyhow::Result<Fresh> {
        match database_url {
            Some(url) => {
                let config = PostgresConfig {
                    schema: Some(format!("bench_{}", uuid::Uuid::new_v4().simple())),
                    ..PostgresConfig::new(url)
                };
                let pg = PostgresStore::connect(config, extractor()).await?;
                Ok(Fresh {
                    store: Arc::new(pg.clone()),
                    registry: Arc::new(pg.clone()),
                    audit: Arc::new(pg.clone()),
                    dir: None,
                    pg: Some(pg),
                })
            }
            None => {
                let dir =
                    std::env::temp_dir().join(format!("renkei-bench-{}", uuid::Uuid::new_v4()));
                let store = SqliteStore::open_dir(&dir, extractor())?;
                Ok(Fresh {
                    store: Arc::new(store.clone()),
                    registry: Arc::new(store.clone()),
                    audit: Arc::new(store),
                    dir: Some(dir),
                    pg: None,
                })
            }
        }
    }

    /// The store as `serve` and `import` write to it: every Patient write linked by the EMPI.
    pub fn linked(&self) -> Arc<dyn Store> {
        linked(self.store.clone())
    }

    /// Drops the throwaway schema or directory; with `RENKEI_BENCH_KEEP=1` in the environment,
    /// keeps it (and says where) so that what a benchmark wrote can be inspected.
    pub async fn cleanup(self) {
        let keep = std::env::var_os("RENKEI_BENCH_KEEP").is_some_and(|v| v == "1");
        drop(self.store);
        if keep {
            match (&self.pg, &self.dir) {
                (Some(pg), _) => {
                    eprintln!("kept PostgreSQL schema {}", pg.schema().unwrap_or("public"))
                }
                (None, Some(dir)) => eprintln!("kept store directory {}", dir.display()),
                (None, None) => {}
            }
            return;
        }
        if let Some(pg) = &self.pg {
            let _ = pg.drop_schema().await;
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn ingest(a: IngestArgs) -> anyhow::Result<()> {
    check_dataset(&a.paths, "renkei bench ingest PATH...")?;
    let mut targets: Vec<Option<&str>> = vec![None];
    if let Some(url) = a.database_url.as_deref() {
        targets.push(Some(url));
    }
    let opts = Options {
        chunk: a.chunk.max(1),
        print_commits: false,
        progress: false,
    };
    for target in targets {
        let fresh = Fresh::open(target).await?;
        let backend = fresh.store.backend();
        let s = import(fresh.linked(), Arc::new(R4Validator), &a.paths, &opts).await?;
        println!(
            "ingest {backend}: {} resources in {:.2} s = {:.0} resources/s ({} errors, chunk {})",
            s.resources,
            s.elapsed.as_secs_f64(),
            s.rate(),
            s.errors,
            a.chunk
        );
        fresh.cleanup().await;
    }
    Ok(())
}

async fn read(a: ReadArgs) -> anyhow::Result<()> {
    let fresh = Fresh::open(a.database_url.as_deref()).await?;
    let backend = fresh.store.backend();
    let mut state = AppState::new(
        fresh.store.clone(),
        Arc::new(R4Validator),
        ServerConfig::default(),
    );
    let mut auth = None;
    if a.auth {
        let (secured, keys) =
            BenchAuth::apply(state, fresh.registry.clone(), fresh.audit.clone()).await?;
        state = secured;
        auth = Some(keys);
    }
    let server = InProcess::start(state).await?;
    let base = server.base.clone();
    let token = auth.as_ref().map(|k| k.token(&base)).transpose()?;
    let client = client_with(token.as_deref())?;
    let patient = serde_json::json!({
        "resourceType": "Patient", "id": "bench",
        "name": [{"family": "Yamada", "given": ["Taro"]}], "gender": "male", "birthDate": "1970-01-01"
    });
    let put = client
        .put(format!("{base}/Patient/bench"))
        .header("content-type", "application/fhir+json")
        .body(patient.to_string())
        .send()
        .await
        .context("creating the benchmark patient")?;
    anyhow::ensure!(put.status().is_success(), "PUT failed: {}", put.status());
    let url = format!("{base}/Patient/bench");
    let mut samples = Vec::with_capacity(a.requests);
    for i in 0..(a.requests + 200) {
        let t = Instant::now();
        let r = client.get(&url).send().await?;
        let ok = r.status().is_success();
        let _ = r.bytes().await?;
        let dt = t.elapsed();
        anyhow::ensure!(ok, "read failed");
        if i >= 200 {
            samples.push(dt);
        }
    }
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "point read over HTTP ({backend}{}, {} requests, 1 client): median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, {:.0} reads/s",
        if a.auth { ", auth + audit" } else { "" },
        samples.len(),
        quantile_ms(&samples, 0.5),
        quantile_ms(&samples, 0.9),
        quantile_ms(&samples, 0.99),
        samples.len() as f64 / total.as_secs_f64()
    );
    server.stop().await?;
    fresh.cleanup().await;
    Ok(())
}
