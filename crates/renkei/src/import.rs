//! `renkei import`: loads FHIR NDJSON files (bulk-export layout: one resource per line, e.g.
//! `Patient.000.ndjson`) and Bundle JSON files into the store. `--ssmix2 ROOT` imports an
//! SS-MIX2 tree instead (see `import_ssmix2`).
//!
//! A reader thread parses and validates lines while the store writes the previous chunk.
//! Each chunk (`--chunk` resources of one file) is one database transaction in which every
//! resource is written under its own savepoint: a bad resource is reported with `file:line` and
//! skipped, the rest of the chunk commits. Resources keep their ids (update-as-create), so plain
//! `Type/id` references between files stay valid; conditional references
//! (`Practitioner?identifier=...`, as Synthea writes) resolve against what is already stored,
//! which is why files are loaded in an order that puts directory-like types (Organization,
//! Location, Practitioner, ...) and Patient first. Transaction and batch Bundles go through the
//! same code as `POST /fhir`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use server::http::Fhir;
use server::{AppState, R4Validator, ServerConfig, Validator};
use store::{RequestContext, Store, WriteEntry, WriteOp};

use crate::storage::{EmpiArgs, StoreArgs, link_backlog};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// NDJSON files, Bundle JSON files, or directories holding them.
    #[arg(required_unless_present = "ssmix2", value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Import an SS-MIX2 standardized-storage tree (HL7 v2 files) instead.
    #[arg(long, value_name = "ROOT", conflicts_with = "paths")]
    ssmix2: Option<PathBuf>,
    #[command(flatten)]
    ssmix2_options: crate::import_ssmix2::Options,
    #[command(flatten)]
    empi: EmpiArgs,
    /// Resources per database transaction.
    #[arg(long, default_value_t = DEFAULT_CHUNK)]
    chunk: usize,
    /// Print a line on stdout after each committed transaction (for scripts and tests).
    #[arg(long, hide = true)]
    print_commits: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Import settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub chunk: usize,
    pub print_commits: bool,
    pub progress: bool,
}

/// What an import did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: u64,
    pub resources: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = args.store.open().await?;
    let mpi = args.empi.mpi()?;
    // Patients written before (with --no-empi) are linked first, so new ones match them.
    let linked = link_backlog(base.as_ref(), &mpi).await?;
    if linked > 0 {
        eprintln!("linked {linked} earlier Patients to enterprise identities");
    }
    let store = args.empi.wrap(base, &mpi);
    if let Some(root) = &args.ssmix2 {
        return crate::import_ssmix2::run(store, root, &args.ssmix2_options, !args.quiet).await;
    }
    let opts = Options {
        chunk: args.chunk.max(1),
        print_commits: args.print_commits,
        progress: !args.quiet,
    };
    let s = import(store, Arc::new(R4Validator), &args.paths, &opts).await?;
    eprintln!(
        "imported {} resources from {} files in {:.1} s ({:.0} resources/s), {} errors",
        s.resources,
        s.files,
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.errors
    );
    Ok(if s.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the reader thread hands to the writer.
enum Item {
    /// Writes of one file, with the `file:line` of each.
    Chunk {
        entries: Vec<WriteEntry>,
        origins: Vec<String>,
        bytes: u64,
    },
    Bundle {
        origin: String,
        bundle: Value,
        atomic: bool,
        bytes: u64,
    },
    Problem(String),
    FileDone,
}

/// Imports `paths` into `store`.
pub async fn import(
    store: Arc<dyn Store>,
    validator: Arc<dyn Validator>,
    paths: &[PathBuf],
    opts: &Options,
) -> anyhow::Result<Summary> {
    let files = collect_files(paths)?;
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = if opts.progress {
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    // One chunk queued while the store writes another: the reader keeps ahead, and memory
    // holds about three chunks, whatever the input size.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(1);
    let reader = {
        let validator = validator.clone();
        let chunk = opts.chunk;
        let store = store.clone();
        std::thread::spawn(move || {
            let checks = Checks {
                validator: validator.as_ref(),
                extractor: store.extractor(),
            };
            read_files(files, &checks, chunk, &tx)
        })
    };
    // Bundle files go through `POST /fhir`'s code, but an import never refuses a reference to
    // a resource not (yet) here: files arrive in any order. It counts them instead.
    let config = ServerConfig {
        check_references: false,
        ..ServerConfig::default()
    };
    let state = AppState::new(store.clone(), validator, config);
    let mut summary = Summary::default();
    let report = |bar: &ProgressBar, summary: &mut Summary, msg: String| {
        summary.errors += 1;
        if summary.errors <= 1000 {
            bar.suspend(|| eprintln!("{msg}"));
        } else if summary.errors == 1001 {
            bar.suspend(|| eprintln!("(further errors not shown)"));
        }
    };
    while let Some(item) = rx.recv().await {
        match item {
            Item::Problem(msg) => report(&bar, &mut summary, msg),
            Item::FileDone => summary.files += 1,
            Item::Chunk {
                entries,
                origins,
                bytes,
            } => {
                let n = entries.len();
                let ctx = RequestContext::system();
                match store.batch(&ctx, entries).await {
                    Ok(results) => {
                        for (r, origin) in results.into_iter().zip(&origins) {
                            match r {
                                Ok(_) => summary.resources += 1,
                                Err(e) => report(&bar, &mut summary, format!("{origin}: {e}")),
                            }
                        }
                        if opts.print_commits {
                            println!("committed {n} {}..{}", origins[0], origins[n - 1]);
                            let _ = std::io::stdout().flush();
                        }
                    }
                    Err(e) => report(
                        &bar,
                        &mut summary,
                        format!(
                            "{}..{}: transaction failed: {e}",
                            origins[0],
                            origins[n - 1]
                        ),
                    ),
                }
                bar.inc(bytes);
            }
            Item::Bundle {
                origin,
                bundle,
                atomic,
                bytes,
            } => {
                let fhir = Fhir::internal(RequestContext::system(), "");
                match server::interactions::batch::process(&state, &fhir, &bundle, atomic).await {
                    Ok(reply) => {
                        let body = reply.body_json().unwrap_or(Value::Null);
                        let entries = body
                            .get("entry")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        for (i, e) in entries.iter().enumerate() {
                            let status = e
                                .pointer("/response/status")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if status.starts_with('2') {
                                summary.resources += 1;
                            } else {
                                let diag = e
                                    .pointer("/response/outcome/issue/0/diagnostics")
                                    .and_then(Value::as_str)
                                    .unwrap_or(status);
                                report(&bar, &mut summary, format!("{origin}: entry[{i}]: {diag}"));
                            }
                        }
                        if opts.print_commits {
                            println!("committed {} {origin}", entries.len());
                            let _ = std::io::stdout().flush();
                        }
                    }
                    Err(e) => {
                        let diag = e
                            .issues
                            .first()
                            .map(|i| i.diagnostics.clone())
                            .unwrap_or_default();
                        report(&bar, &mut summary, format!("{origin}: {} {diag}", e.status));
                    }
                }
                bar.inc(bytes);
            }
        }
        bar.set_message(format!(
            "{} resources, {} errors",
            summary.resources, summary.errors
        ));
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?
        .context("reading input files")?;
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Types other resources point at by identifier (conditional references) load first.
const FIRST: &[&str] = &[
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "Substance",
    "Patient",
    "RelatedPerson",
    "Group",
    "Device",
    "Encounter",
];

fn rank(path: &Path) -> (usize, String) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_owned();
    let ty = name.split('.').next().unwrap_or("");
    (
        FIRST.iter().position(|t| *t == ty).unwrap_or(FIRST.len()),
        name,
    )
}

fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|e| e.to_str()),
                        Some("ndjson" | "json")
                    )
                })
                .collect();
            files.extend(in_dir);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            anyhow::bail!("{} does not exist", p.display());
        }
    }
    // Dependency order across all inputs (a stable sort: same-rank files keep their order).
    files.sort_by_key(|f| rank(f).0);
    Ok(files)
}

/// What the reader thread does to each resource before the writer sees it: the checks
/// `POST`/`PUT` make, and the store's index extraction (done here, beside the single writer,
/// rather than by it).
struct Checks<'a> {
    validator: &'a dyn Validator,
    extractor: &'a dyn store::index::IndexExtractor,
}

/// Resources per import transaction. Large, because a commit writes every page it touched to
/// the log (and a checkpoint then writes it again): the inserts into the indexes keyed by
/// random ids (resource ids, reference targets, dates) land on a different page each, so at a
/// million resources a 2,000-resource commit wrote about 17 KiB of pages per resource, and a
/// 20,000-resource commit, which shares more of those pages, ingests 1.4 times as fast.
pub const DEFAULT_CHUNK: usize = 20_000;

fn read_files(
    files: Vec<PathBuf>,
    checks: &Checks<'_>,
    chunk: usize,
    tx: &tokio::sync::mpsc::Sender<Item>,
) -> anyhow::Result<()> {
    let send = |item: Item| {
        tx.blocking_send(item)
            .map_err(|_| anyhow::anyhow!("the writer stopped"))
    };
    for file in files {
        let name = file.display().to_string();
        let is_ndjson = file.extension().and_then(|e| e.to_str()) == Some("ndjson");
        let result = if is_ndjson {
            read_ndjson(&file, &name, checks, chunk, &send)
        } else {
            read_json(&file, &name, checks, &send)
        };
        if let Err(e) = result {
            send(Item::Problem(format!("{name}: {e:#}")))?;
        }
        send(Item::FileDone)?;
    }
    Ok(())
}

/// A write for one resource read from a file, after the checks `POST`/`PUT` would make, with
/// its index rows.
fn entry_for(resource: Value, checks: &Checks<'_>) -> Result<WriteEntry, String> {
    let validator = checks.validator;
    let Some(ty) = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return Err("no resourceType".into());
    };
    if !validator.is_resource_type(&ty) {
        return Err(format!("'{ty}' is not a FHIR R4 resource type"));
    }
    validator.validate(&resource).map_err(|issues| {
        issues
            .iter()
            .map(|i| format!("{} ({})", i.message, i.expression.as_deref().unwrap_or(&ty)))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    // An extraction error is left for the store to report as it writes the entry.
    let index = checks.extractor.extract(&ty, &resource).ok();
    let op = match resource.get("id") {
        Some(Value::String(id)) if server::http::valid_id(id) => WriteOp::Update {
            resource_type: ty,
            id: id.clone(),
            resource,
            if_match: None,
        },
        Some(id) => return Err(format!("{id} is not a valid resource id")),
        None => WriteOp::Create {
            resource,
            if_none_exist: None,
        },
    };
    let mut entry = WriteEntry::new(op);
    entry.index = index;
    Ok(entry)
}

fn read_ndjson(
    file: &Path,
    name: &str,
    checks: &Checks<'_>,
    chunk: usize,
    send: &dyn Fn(Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut entries = Vec::with_capacity(chunk);
    let mut origins = Vec::with_capacity(chunk);
    let mut bytes = 0u64;
    let mut first = true;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{name}:{}", n + 1))?;
        bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("{name}:{}", n + 1);
        let parsed: Result<Value, _> = serde_json::from_str(&line);
        if first {
            first = false;
            // Bulk-export folders hold a non-FHIR log.ndjson; skip files that are not FHIR.
            if let Ok(v) = &parsed
                && v.get("resourceType").is_none()
            {
                tracing::info!(
                    file = name,
                    "no resourceType on line 1: not FHIR NDJSON, skipped"
                );
                return Ok(());
            }
        }
        match parsed
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|v| entry_for(v, checks))
        {
            Ok(e) => {
                entries.push(e);
                origins.push(origin);
            }
            Err(msg) => send(Item::Problem(format!("{origin}: {msg}")))?,
        }
        if entries.len() >= chunk {
            send(Item::Chunk {
                entries: std::mem::replace(&mut entries, Vec::with_capacity(chunk)),
                origins: std::mem::take(&mut origins),
                bytes: std::mem::take(&mut bytes),
            })?;
        }
    }
    if !entries.is_empty() {
        send(Item::Chunk {
            entries,
            origins,
            bytes,
        })?;
    }
    Ok(())
}

fn read_json(
    file: &Path,
    name: &str,
    checks: &Checks<'_>,
    send: &dyn Fn(Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let text = std::fs::read(file)?;
    let bytes = text.len() as u64;
    let v: Value =
        serde_json::from_slice(&text).map_err(|e| anyhow::anyhow!("invalid JSON: {e}"))?;
    let is_bundle = v.get("resourceType").and_then(Value::as_str) == Some("Bundle");
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    if is_bundle && (kind == "transaction" || kind == "batch") {
        return send(Item::Bundle {
            origin: name.to_owned(),
            atomic: kind == "transaction",
            bundle: v,
            bytes,
        });
    }
    let resources: Vec<(String, Value)> = if is_bundle {
        v.get("entry")
            .and_then(Value::as_array)
            .map(|es| {
                es.iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        e.get("resource")
                            .map(|r| (format!("{name}#entry[{i}]"), r.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![(name.to_owned(), v)]
    };
    let mut entries = Vec::new();
    let mut origins = Vec::new();
    for (origin, r) in resources {
        match entry_for(r, checks) {
            Ok(e) => {
                entries.push(e);
                origins.push(origin);
            }
            Err(msg) => send(Item::Problem(format!("{origin}: {msg}")))?,
        }
    }
    if entries.is_empty() {
        return Ok(());
    }
    send(Item::Chunk {
        entries,
        origins,
        bytes,
    })
}
