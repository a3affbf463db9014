//! SS-MIX2 storage trees into the store, through the HL7 v2 sink: the same mapping,
//! validation, group commit and receipts as MLLP.
//!
//! [`import_change`] imports one record change as one keyed unit of the store (`change`);
//! [`Importer::pass`] scans the tree, keeps the latest version of every record
//! (`ssmix2::current`; a latest file flagged `0` is a retraction) and imports what its
//! in-process checkpoint has not seen, several files in flight so that commits group. What a
//! pass does is reported to a [`PassObserver`] (the CLI's progress bar and messages) and
//! summed up in a [`Summary`].

mod change;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7v2::fhir::MappingOptions;
use ssmix2::{Checkpoint, Skipped, Watcher};

use crate::hl7::StoreSink;

pub use change::{FileOutcome, import_change, receipt_key};

/// Counts of one or more passes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub imported: u64,
    pub retracted: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Files under the root that are not SS-MIX2 files (not a standard name, or not where
    /// their name says), each reported once; not counted in [`Summary::files`].
    pub skipped: u64,
    /// References of the imported records to resources not (yet) on this server.
    pub dangling_references: u64,
    pub elapsed: Duration,
}

impl Summary {
    /// Files imported, retracted, unchanged or failed.
    pub fn files(&self) -> u64 {
        self.imported + self.retracted + self.unchanged + self.failed
    }

    /// Adds the counts of a later pass (the elapsed time is the caller's to keep).
    pub fn add(&mut self, pass: &Summary) {
        self.imported += pass.imported;
        self.retracted += pass.retracted;
        self.unchanged += pass.unchanged;
        self.failed += pass.failed;
        self.skipped += pass.skipped;
        self.dangling_references += pass.dangling_references;
    }
}

/// What a pass reports as it goes. Every method does nothing by default.
pub trait PassObserver {
    /// The scan found `changes` record changes to import.
    fn scanned(&mut self, changes: usize) {
        let _ = changes;
    }

    /// A file that is not an SS-MIX2 file, seen for the first time by this importer.
    fn skipped(&mut self, path: &Path, why: &str) {
        let _ = (path, why);
    }

    /// One change was imported, or failed (then it comes back at the next pass).
    fn done(&mut self, outcome: &FileOutcome) {
        let _ = outcome;
    }
}

/// A [`PassObserver`] that wants nothing reported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl PassObserver for Quiet {}

/// Why a pass stopped (a file that fails does not stop it: see [`FileOutcome::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The tree cannot be scanned (an unreadable directory).
    #[error(transparent)]
    Scan(#[from] ssmix2::Ssmix2Error),
    /// A task of the pass panicked or was cancelled.
    #[error("an import task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Imports a tree, pass after pass (`renkei import --ssmix2`, with `--watch` again and again).
#[derive(Debug)]
pub struct Importer {
    sink: StoreSink,
    watcher: Watcher,
    /// Files reported as skipped, so that `--watch`'s passes report each once.
    reported: HashSet<PathBuf>,
    mapping: Arc<MappingOptions>,
    in_flight: usize,
}

impl Importer {
    /// An importer of the tree at `root` through `sink`, mapping with `mapping`, `in_flight`
    /// files at a time (their commits are grouped).
    pub fn new(
        sink: StoreSink,
        root: &Path,
        mapping: Arc<MappingOptions>,
        in_flight: usize,
    ) -> Self {
        Importer {
            sink,
            watcher: Watcher::new(root, Checkpoint::default()),
            reported: HashSet::new(),
            mapping,
            in_flight: in_flight.max(1),
        }
    }

    /// One scan of the tree, importing every pending change; a failure is reported to
    /// `observer` and comes back at the next pass. Files that are not SS-MIX2 files are
    /// logged and counted once.
    pub async fn pass(&mut self, observer: &mut dyn PassObserver) -> Result<Summary, PassError> {
        let started = Instant::now();
        let dangling_before = self.sink.dangling_references();
        let (changes, skipped) = {
            let mut w = std::mem::replace(
                &mut self.watcher,
                Watcher::new(Path::new(""), Checkpoint::default()),
            );
            let (w, polled) = tokio::task::spawn_blocking(move || {
                let polled = w.poll_reporting();
                (w, polled)
            })
            .await?;
            self.watcher = w;
            polled?
        };
        let mut summary = Summary::default();
        for skip in skipped {
            let (path, why) = match skip {
                Skipped::BadName { path, reason } => {
                    (path, format!("not an SS-MIX2 file name: {reason}"))
                }
                Skipped::Misplaced { path, expected } => (
                    path,
                    format!("misplaced: its name belongs at {}", expected.display()),
                ),
            };
            if self.reported.insert(path.clone()) {
                tracing::warn!(file = %path.display(), "skipped: {why}");
                observer.skipped(&path, &why);
                summary.skipped += 1;
            }
        }
        observer.scanned(changes.len());
        let mut tasks = tokio::task::JoinSet::new();
        let mut queue = changes.into_iter();
        loop {
            while tasks.len() < self.in_flight {
                let Some(change) = queue.next() else { break };
                let (sink, mapping) = (self.sink.clone(), self.mapping.clone());
                tasks.spawn(async move {
                    let outcome = import_change(&sink, &change, &mapping).await;
                    (change, outcome)
                });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (change, outcome) = done?;
            match &outcome {
                FileOutcome::Imported => summary.imported += 1,
                FileOutcome::Retracted => summary.retracted += 1,
                FileOutcome::Unchanged => summary.unchanged += 1,
                FileOutcome::Failed(_) => summary.failed += 1,
            }
            if !matches!(outcome, FileOutcome::Failed(_)) {
                self.watcher.checkpoint.mark(&change);
            }
            observer.done(&outcome);
        }
        summary.dangling_references = self.sink.dangling_references() - dangling_before;
        summary.elapsed = started.elapsed();
        Ok(summary)
    }
}
