//! NDJSON files (bulk-export layout: one resource per line, e.g. `Patient.000.ndjson`) and
//! Bundle JSON files into the store: the library half of `renkei import` (which keeps the
//! command line, the progress bar and the printing; see [`ImportObserver`]).
//!
//! A reader thread parses and validates lines while the store writes the previous chunk.
//! Each chunk (`chunk` resources of one file) is one database transaction in which every
//! resource is written under its own savepoint: a bad resource is reported with `file:line` and
//! skipped, the rest of the chunk commits. Resources keep their ids (update-as-create), so plain
//! `Type/id` references between files stay valid; conditional references
//! (`Practitioner?identifier=...`, as Synthea writes) resolve against what is already stored,
//! which is why files are loaded in an order that puts directory-like types (Organization,
//! Location, Practitioner, ...) and Patient first ([`collect_files`]). Transaction and batch
//! Bundles are prepared like `POST /fhir`'s entries ([`crate::bundle::Preparer::run`]); their
//! reads are refused, an import only writes.
//!
//! The [`Summary`] says how many resources were created, updated and unchanged (an update that
//! changes nothing writes no version: a re-import says so), from how many files (files that
//! are not FHIR, such as a bulk export's `log.ndjson`, are named at info level and counted as
//! skipped), and how many references name resources not (yet) on this server: an import never
//! refuses them, since files arrive in any order, but counts them once the chunk that holds
//! them has committed.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use store::{
    BatchResult, Outcome, ReferenceCheck, RequestContext, Store, StoreError, WriteEntry, WriteOp,
};

use crate::bundle::Preparer;
use crate::entry::valid_id;
use crate::validation::Validator;

/// Import settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Resources per database transaction ([`DEFAULT_CHUNK`]).
    pub chunk: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk: DEFAULT_CHUNK,
        }
    }
}

/// Why an import stopped (a bad resource, line or file does not stop it: it is reported to
/// the [`ImportObserver`] and counted in [`Summary::errors`]).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An input path is neither a file nor a directory.
    #[error("{0} does not exist")]
    Missing(PathBuf),
    /// A directory given as input cannot be listed.
    #[error("reading directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Counting the references of committed resources failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reader thread stopped early.
    #[error("reading input files: {0}")]
    Reader(String),
    /// The store stopped taking chunks (what stopped it is the [`ImportError::Store`] the
    /// import returns instead).
    #[error("the store stopped before answering every chunk")]
    WriterStopped,
}

/// What an import reports as it goes (the CLI's progress bar, error lines and `--print-commits`).
/// Every method does nothing by default.
pub trait ImportObserver {
    /// A resource, line, entry or file was refused: `message` names it (`file:line: why`).
    /// `summary.errors` counts it already.
    fn problem(&mut self, message: &str, summary: &Summary) {
        let _ = (message, summary);
    }

    /// A transaction committed `resources` resources of `what` (`file:1..file:20000`, or a
    /// Bundle file's name).
    fn committed(&mut self, resources: usize, what: &str) {
        let _ = (resources, what);
    }

    /// `bytes` more of the input were imported (or refused); `summary` so far.
    fn progress(&mut self, bytes: u64, summary: &Summary) {
        let _ = (bytes, summary);
    }
}

/// An [`ImportObserver`] that wants nothing reported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl ImportObserver for Quiet {}

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
    /// Resources a second.
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.elapsed.as_secs_f64().max(1e-9)
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
    ) -> Result<u64, StoreError> {
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

/// A chunk handed to the store, waiting for its answer.
struct Handed {
    origins: Vec<String>,
    /// The local references (`Type/id`) of each entry's resource.
    references: Vec<Vec<String>>,
    bytes: u64,
}

/// Reads the store's answers to handed chunks, in order, into the summary.
struct Answered<'a> {
    store: &'a dyn Store,
    dangling: &'a mut Dangling,
}

impl Answered<'_> {
    /// The answer to the oldest handed chunk.
    async fn next(
        &mut self,
        answers: &mut tokio::sync::mpsc::Receiver<BatchResult>,
        handed: &mut VecDeque<Handed>,
        observer: &mut dyn ImportObserver,
        summary: &mut Summary,
    ) -> Result<(), ImportError> {
        let Some(chunk) = handed.pop_front() else {
            return Ok(());
        };
        // The writer answers every chunk before it ends; without an answer it failed, and
        // says why when it is joined.
        let Some(answer) = answers.recv().await else {
            return Err(ImportError::WriterStopped);
        };
        let origins = &chunk.origins;
        let n = origins.len();
        let first_last = || format!("{}..{}", origins[0], origins[n - 1]);
        match answer {
            Ok(results) => {
                let mut named = Vec::new();
                let mut written = Vec::new();
                for ((r, origin), refs) in results.into_iter().zip(origins).zip(chunk.references) {
                    match r {
                        Ok(outcome) => {
                            summary.count(&outcome);
                            if let Some(r) = outcome.resource() {
                                written.push(format!("{}/{}", r.resource_type, r.id));
                            }
                            named.extend(refs);
                        }
                        Err(e) => {
                            summary.errors += 1;
                            observer.problem(&format!("{origin}: {e}"), summary);
                        }
                    }
                }
                summary.dangling_references += self
                    .dangling
                    .count(self.store, &named, written.into_iter())
                    .await?;
                observer.committed(n, &first_last());
            }
            Err(e) => {
                summary.errors += 1;
                observer.problem(
                    &format!("{}: transaction failed: {e}", first_last()),
                    summary,
                );
            }
        }
        observer.progress(chunk.bytes, summary);
        Ok(())
    }
}

/// Imports `files` (see [`collect_files`]) into `store`, each resource checked by
/// `validator`, reporting to `observer` as it goes.
pub async fn import(
    store: Arc<dyn Store>,
    validator: Arc<dyn Validator>,
    files: Vec<PathBuf>,
    opts: &Options,
    observer: &mut dyn ImportObserver,
) -> Result<Summary, ImportError> {
    let started = Instant::now();
    // One chunk queued while the store writes another: the reader keeps ahead, and memory
    // holds about three chunks, whatever the input size.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Item>(1);
    let reader = {
        let validator = validator.clone();
        let chunk = opts.chunk.max(1);
        let store = store.clone();
        std::thread::spawn(move || {
            let checks = Checks {
                validator: validator.as_ref(),
                extractor: store.extractor(),
            };
            read_files(files, &checks, chunk, &tx)
        })
    };
    let ctx = RequestContext::system();
    // Bundle files are prepared like `POST /fhir`'s entries, but an import never refuses a
    // reference to a resource not (yet) here: files arrive in any order. It counts them.
    let preparer = Preparer {
        store: store.as_ref(),
        validator: validator.as_ref(),
        ctx: &ctx,
        base: "",
        references: &ReferenceCheck::Off,
    };
    let mut summary = Summary::default();
    let mut dangling = Dangling::new();
    let report = |observer: &mut dyn ImportObserver, summary: &mut Summary, msg: String| {
        summary.errors += 1;
        observer.problem(&msg, summary);
    };
    // Chunks go to the store as a stream (`Store::batches`): with linking on, the next
    // chunk's links are planned while one commits. Two chunks are handed over at most before
    // the first one's answer is read.
    let (chunks, chunks_in) = tokio::sync::mpsc::channel::<Vec<WriteEntry>>(1);
    let (answers_out, mut answers) = tokio::sync::mpsc::channel::<BatchResult>(2);
    let writer = {
        let (store, ctx) = (store.clone(), ctx.clone());
        tokio::spawn(async move { store.batches(&ctx, chunks_in, answers_out).await })
    };
    let fed = async {
        let mut handed: VecDeque<Handed> = VecDeque::new();
        let mut answered = Answered {
            store: store.as_ref(),
            dangling: &mut dangling,
        };
        while let Some(item) = rx.recv().await {
            let mut bytes_done = 0;
            match item {
                Item::Problem(msg) => report(observer, &mut summary, msg),
                Item::FileDone => summary.files += 1,
                Item::FileSkipped => summary.skipped_files += 1,
                Item::Chunk {
                    entries,
                    origins,
                    references,
                    bytes,
                } => {
                    if chunks.send(entries).await.is_err() {
                        // The writer stopped: its error is below.
                        break;
                    }
                    handed.push_back(Handed {
                        origins,
                        references,
                        bytes,
                    });
                    while handed.len() > 1 {
                        answered
                            .next(&mut answers, &mut handed, observer, &mut summary)
                            .await?;
                    }
                }
                Item::Bundle {
                    origin,
                    bundle,
                    atomic,
                    bytes,
                } => {
                    // In file order: the chunks before it first.
                    while !handed.is_empty() {
                        answered
                            .next(&mut answers, &mut handed, observer, &mut summary)
                            .await?;
                    }
                    match preparer.run(&bundle, atomic).await {
                        Ok(results) => {
                            let mut named = Vec::new();
                            let mut written = Vec::new();
                            let n = results.len();
                            for result in results {
                                match result {
                                    Ok(outcome) => {
                                        summary.count(&outcome);
                                        // What a written (not deleted) resource names.
                                        let resource = outcome.resource().and_then(|r| {
                                            let body = r.body.as_deref()?;
                                            let json = serde_json::from_str::<Value>(body).ok()?;
                                            Some((format!("{}/{}", r.resource_type, r.id), json))
                                        });
                                        if let Some((at, json)) = resource {
                                            written.push(at);
                                            named.extend(
                                                store::local_references(&json, None)
                                                    .into_iter()
                                                    .map(|r| r.target),
                                            );
                                        }
                                    }
                                    Err(e) => {
                                        report(observer, &mut summary, format!("{origin}: {e}"))
                                    }
                                }
                            }
                            summary.dangling_references += answered
                                .dangling
                                .count(store.as_ref(), &named, written.into_iter())
                                .await?;
                            observer.committed(n, &origin);
                        }
                        Err(e) => report(observer, &mut summary, format!("{origin}: {e}")),
                    }
                    bytes_done = bytes;
                }
            }
            observer.progress(bytes_done, &summary);
        }
        drop(chunks);
        while !handed.is_empty() {
            answered
                .next(&mut answers, &mut handed, observer, &mut summary)
                .await?;
        }
        Ok::<(), ImportError>(())
    }
    .await;
    // A writer still answering (the import stopped early) finds nobody listening and ends.
    drop(answers);
    let stopped = writer
        .await
        .map_err(|e| ImportError::Reader(format!("the writer task failed: {e}")))?;
    match (fed, stopped) {
        (Err(ImportError::WriterStopped), Err(e)) => return Err(e.into()),
        (Err(e), _) => return Err(e),
        (Ok(()), stopped) => stopped?,
    }
    reader
        .join()
        .map_err(|_| ImportError::Reader("the reader thread panicked".into()))?
        .map_err(|e| ImportError::Reader(e.to_string()))?;
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

/// The files an import of `paths` (files, or directories holding `.ndjson` and `.json` files)
/// reads, in dependency order: types that others point at by identifier first.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ImportError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let in_dir: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| ImportError::Directory {
                    path: p.clone(),
                    source,
                })?
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
            return Err(ImportError::Missing(p.clone()));
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

/// Why a file could not be read to its end (reported with the file's name; the import goes
/// on with the next file), or why the reader stopped altogether.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line that cannot be read (not UTF-8, say).
    #[error("{at}: {source}")]
    Line { at: String, source: std::io::Error },
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The writer is gone: nothing more can be handed over.
    #[error("the writer stopped")]
    WriterStopped,
}

fn read_files(
    files: Vec<PathBuf>,
    checks: &Checks<'_>,
    chunk: usize,
    tx: &tokio::sync::mpsc::Sender<Item>,
) -> Result<(), FileError> {
    let send = |item: Item| tx.blocking_send(item).map_err(|_| FileError::WriterStopped);
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
            Err(FileError::WriterStopped) => return Err(FileError::WriterStopped),
            Err(e) => {
                send(Item::Problem(format!("{name}: {e}")))?;
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
        Some(Value::String(id)) if valid_id(id) => WriteOp::Update {
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
    send: &dyn Fn(Item) -> Result<(), FileError>,
) -> Result<bool, FileError> {
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(file)?);
    let mut entries = Vec::with_capacity(chunk);
    let mut origins = Vec::with_capacity(chunk);
    let mut references = Vec::with_capacity(chunk);
    let mut bytes = 0u64;
    let mut first = true;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| FileError::Line {
            at: format!("{name}:{}", n + 1),
            source,
        })?;
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
    send: &dyn Fn(Item) -> Result<(), FileError>,
) -> Result<(), FileError> {
    let text = std::fs::read(file)?;
    let bytes = text.len() as u64;
    let v: Value = serde_json::from_slice(&text)?;
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
