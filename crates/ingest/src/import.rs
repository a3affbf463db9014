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
//!
//! The summary line says how many resources were created, updated and unchanged (an update
//! that changes nothing writes no version: a re-import says so), from how many files (files
//! that are not FHIR, such as a bulk export's `log.ndjson`, are named at info level and counted
//! as skipped), and how many references name resources not (yet) on this server: an import
//! never refuses them, since files arrive in any order, but counts them once the chunk that
//! holds them has committed.

use std::collections::{BTreeSet, HashSet};
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
use store::{Outcome, RequestContext, Store, WriteEntry, WriteOp};

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
    /// Files read.
    pub files: u64,
    /// Files not read: not FHIR (a bulk export's `log.ndjson`).
    pub skipped_files: u64,
    /// Resources stored or found already stored: `created + updated + unchanged`.
    pub resources: u64,
    pub created: u64,
    pub updated: u64,
    /// Already stored with the same content: no version written.
    pub unchanged: u64,
    /// References (`Type/id`) to resources not on this server when their chunk committed.
    pub dangling_references: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The line `renkei import` ends with.
    pub fn line(&self) -> String {
        let mut line = format!(
            "imported {} resources ({} created, {} updated, {} unchanged) from {} files",
            self.resources, self.created, self.updated, self.unchanged, self.files
        );
        if self.skipped_files > 0 {
            line.push_str(&format!(" ({} skipped: not FHIR)", self.skipped_files));
        }
        line.push_str(&format!(
            " in {:.1} s ({:.0} resources/s), {} errors; {} references to resources not (yet) on this server",
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.errors,
            self.dangling_references
        ));
        line
    }

    fn count(&mut self, outcome: &Outcome) {
        self.resources += 1;
        match outcome {
            Outcome::Created(_) => self.created += 1,
            Outcome::Updated(_) | Outcome::Deleted(_) => self.updated += 1,
            Outcome::Unchanged(_) | Outcome::Existing(_) | Outcome::NoOp => self.unchanged += 1,
        }
    }
}

/// Counts the references of committed resources that name resources not on the server,
/// remembering (up to a bound) the targets found, so that a chunk of Observations of the same
/// patients asks about each patient once.
struct Dangling {
    present: HashSet<String>,
}

impl Dangling {
    const REMEMBERED: usize = 200_000;

    fn new() -> Self {
        Dangling {
            present: HashSet::new(),
        }
    }

    /// `references`: the `Type/id` each committed resource names; `written`: the resources
    /// just committed (there for sure). Returns how many references name absent resources.
    async fn count(
        &mut self,
        store: &dyn Store,
        references: &[String],
        written: impl Iterator<Item = String>,
    ) -> anyhow::Result<u64> {
        if references.is_empty() {
            return Ok(0);
        }
        if self.present.len() > Self::REMEMBERED {
            self.present.clear();
        }
        self.present.extend(written);
        let unknown: BTreeSet<String> = references
            .iter()
            .filter(|t| !self.present.contains(*t))
            .cloned()
            .collect();
        let absent = store::absent_resources(store, &RequestContext::system(), &unknown).await?;
        self.present
            .extend(unknown.into_iter().filter(|t| !absent.contains(t)));
        Ok(references.iter().filter(|t| absent.contains(*t)).count() as u64)
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
    eprintln!("{}", s.line());
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
        /// The local references (`Type/id`) of each entry's resource.
        references: Vec<Vec<String>>,
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
    /// A file that is not FHIR, not read.
    FileSkipped,
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
    let mut dangling = Dangling::new();
    let started_micros = store::time::now_micros();
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
            Item::FileSkipped => summary.skipped_files += 1,
            Item::Chunk {
                entries,
                origins,
                references,
                bytes,
            } => {
                let n = entries.len();
                let ctx = RequestContext::system();
                match store.batch(&ctx, entries).await {
                    Ok(results) => {
                        let mut named = Vec::new();
                        let mut written = Vec::new();
                        for ((r, origin), refs) in results.into_iter().zip(&origins).zip(references)
                        {
                            match r {
                                Ok(outcome) => {
                                    summary.count(&outcome);
                                    if let Some(r) = outcome.resource() {
                                        written.push(format!("{}/{}", r.resource_type, r.id));
                                    }
                                    named.extend(refs);
                                }
                                Err(e) => report(&bar, &mut summary, format!("{origin}: {e}")),
                            }
                        }
                        summary.dangling_references += dangling
                            .count(store.as_ref(), &named, written.into_iter())
                            .await?;
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
                        let mut named = Vec::new();
                        let mut written = Vec::new();
                        for (i, e) in entries.iter().enumerate() {
                            let status = e
                                .pointer("/response/status")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if status.starts_with('2') {
                                summary.resources += 1;
                                let resource = e.get("resource").unwrap_or(&Value::Null);
                                // A version written by this import is not older than it; an
                                // unchanged update or a matched conditional create answers
                                // with the version that was there.
                                let last_updated = resource
                                    .pointer("/meta/lastUpdated")
                                    .and_then(Value::as_str)
                                    .and_then(store::time::parse_range)
                                    .map(|(start, _)| start);
                                if status.starts_with("201") {
                                    summary.created += 1;
                                } else if last_updated.is_some_and(|t| t < started_micros) {
                                    summary.unchanged += 1;
                                } else {
                                    summary.updated += 1;
                                }
                                if let (Some(ty), Some(id)) = (
                                    resource.get("resourceType").and_then(Value::as_str),
                                    resource.get("id").and_then(Value::as_str),
                                ) {
                                    written.push(format!("{ty}/{id}"));
                                }
                                named.extend(
                                    store::local_references(resource, None)
                                        .into_iter()
                                        .map(|r| r.target),
                                );
                            } else {
                                let diag = e
                                    .pointer("/response/outcome/issue/0/diagnostics")
                                    .and_then(Value::as_str)
                                    .unwrap_or(status);
                                report(&bar, &mut summary, format!("{origin}: entry[{i}]: {diag}"));
                            }
                        }
                        summary.dangling_references += dangling
                            .count(store.as_ref(), &named, written.into_iter())
                            .await?;
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
            read_json(&file, &name, checks, &send).map(|()| true)
        };
        match result {
            Ok(true) => send(Item::FileDone)?,
            Ok(false) => send(Item::FileSkipped)?,
            Err(e) => {
                send(Item::Problem(format!("{name}: {e:#}")))?;
                send(Item::FileDone)?;
            }
        }
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

/// The local references (`Type/id`) of a write's resource, counted once committed.
fn references_of(entry: &WriteEntry) -> Vec<String> {
    entry
        .op
        .resource()
        .into_iter()
        .flat_map(|resource| store::local_references(resource, None))
        .map(|r| r.target)
        .collect()
}

/// Reads one NDJSON file; `false` when it is not FHIR and was skipped.
fn read_ndjson(
    file: &Path,
    name: &str,
    checks: &Checks<'_>,
    chunk: usize,
    send: &dyn Fn(Item) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut entries = Vec::with_capacity(chunk);
    let mut origins = Vec::with_capacity(chunk);
    let mut references = Vec::with_capacity(chunk);
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
                return Ok(false);
            }
        }
        match parsed
            .map_err(|e| format!("invalid JSON: {e}"))
            .and_then(|v| entry_for(v, checks))
        {
            Ok(e) => {
                references.push(references_of(&e));
                entries.push(e);
                origins.push(origin);
            }
            Err(msg) => send(Item::Problem(format!("{origin}: {msg}")))?,
        }
        if entries.len() >= chunk {
            send(Item::Chunk {
                entries: std::mem::replace(&mut entries, Vec::with_capacity(chunk)),
                origins: std::mem::take(&mut origins),
                references: std::mem::take(&mut references),
                bytes: std::mem::take(&mut bytes),
            })?;
        }
    }
    if !entries.is_empty() {
        send(Item::Chunk {
            entries,
            origins,
            references,
            bytes,
        })?;
    }
    Ok(true)
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
    let mut references = Vec::new();
    for (origin, r) in resources {
        match entry_for(r, checks) {
            Ok(e) => {
                references.push(references_of(&e));
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
        references,
        bytes,
    })
}
