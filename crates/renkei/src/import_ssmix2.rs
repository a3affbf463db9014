//! `renkei import --ssmix2 ROOT [--watch]`: an SS-MIX2 standardized-storage tree through
//! the HL7 v2 ingest path (`server::hl7`): the same mapping (times without an offset in the
//! host's zone unless `--hl7-utc-offset` says otherwise, as for MLLP), validation, group
//! commit and receipts as MLLP.
//!
//! Each pass scans the tree, keeps the latest version of every record (`ssmix2::current`;
//! a latest file flagged `0` is a retraction) and imports what the in-process checkpoint has
//! not seen, several files in flight so that commits group. The persistent checkpoint is the
//! store's receipts (one per file name, committed with the file's resources), so a re-import
//! writes nothing and an interrupted import resumes where it stopped. `--watch` polls the
//! tree until SIGINT/SIGTERM; a pass is never cut short (a file being imported completes).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7v2::fhir::MappingOptions;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use server::hl7::ssmix2::{FileOutcome, import_change};
use server::hl7::{Hl7Config, RecordMerges, StoreSink};
use server::{AppState, R4Validator, ServerConfig};
use ssmix2::{Checkpoint, Skipped, Watcher};
use store::Store;

use crate::hl7_time::Hl7TimeArgs;

/// SS-MIX2 options of `renkei import`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// With --ssmix2: keep following the tree (poll) until SIGINT/SIGTERM.
    #[arg(long, requires = "ssmix2")]
    pub watch: bool,
    /// With --watch: seconds between scans.
    #[arg(long, default_value_t = 2.0, requires = "watch")]
    pub interval: f64,
    #[command(flatten)]
    pub hl7_time: Hl7TimeArgs,
    /// Files imported concurrently (their commits are grouped).
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
}

/// Counts of one or more passes.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub imported: u64,
    pub retracted: u64,
    pub unchanged: u64,
    pub failed: u64,
    /// Files under the root that are not SS-MIX2 files (not a standard name, or not where
    /// their name says), each named on stderr; not counted in [`Summary::files`].
    pub skipped: u64,
    /// References of the imported records to resources not (yet) on this server.
    pub dangling_references: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn files(&self) -> u64 {
        self.imported + self.retracted + self.unchanged + self.failed
    }

    pub fn line(&self) -> String {
        format!(
            "ssmix2: {} files: {} imported, {} retracted, {} unchanged, {} failed; {} other files skipped; \
             {} references to resources not (yet) on this server; in {:.1} s ({:.0} files/s)",
            self.files(),
            self.imported,
            self.retracted,
            self.unchanged,
            self.failed,
            self.skipped,
            self.dangling_references,
            self.elapsed.as_secs_f64(),
            self.files() as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}

/// The sink an import writes through.
pub fn sink(store: Arc<dyn Store>) -> StoreSink {
    let state = AppState::new(store, Arc::new(R4Validator), ServerConfig::default());
    StoreSink::new(state, Arc::new(RecordMerges), &Hl7Config::default())
}

pub async fn run(
    store: Arc<dyn Store>,
    root: &Path,
    opts: &Options,
    progress: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let mapping = Arc::new(opts.hl7_time.mapping()?);
    let sink = sink(store);
    let mut watcher = Watcher::new(root, Checkpoint::default());
    // Installed before the first summary line, which is what a supervisor waits for.
    let stop = crate::serve::shutdown_signal();
    let mut reported = HashSet::new();
    let mut total =
        import_pass(&sink, &mut watcher, &mut reported, opts, &mapping, progress).await?;
    println!("{}", total.line());
    if opts.watch {
        let interval = Duration::from_secs_f64(opts.interval.max(0.05));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {}
            }
            let pass =
                import_pass(&sink, &mut watcher, &mut reported, opts, &mapping, false).await?;
            if pass.files() > 0 || pass.skipped > 0 {
                println!("{}", pass.line());
            }
            total.imported += pass.imported;
            total.retracted += pass.retracted;
            total.unchanged += pass.unchanged;
            total.failed += pass.failed;
            total.skipped += pass.skipped;
            total.dangling_references += pass.dangling_references;
        }
        eprintln!(
            "ssmix2 watch stopped: {} imported, {} retracted, {} failed",
            total.imported, total.retracted, total.failed
        );
    }
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One scan of the tree, importing every pending change; failures are reported on stderr
/// and come back at the next pass. Files that are not SS-MIX2 files are named on stderr and
/// counted once (`reported` remembers them across the passes of `--watch`).
pub async fn import_pass(
    sink: &StoreSink,
    watcher: &mut Watcher,
    reported: &mut HashSet<PathBuf>,
    opts: &Options,
    mapping: &Arc<MappingOptions>,
    progress: bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let dangling_before = sink.dangling_references();
    let (changes, skipped) = {
        let mut w = std::mem::replace(watcher, Watcher::new(Path::new(""), Checkpoint::default()));
        let (w, polled) = tokio::task::spawn_blocking(move || {
            let polled = w.poll_reporting();
            (w, polled)
        })
        .await?;
        *watcher = w;
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
        if reported.insert(path.clone()) {
            tracing::warn!(file = %path.display(), "skipped: {why}");
            summary.skipped += 1;
        }
    }
    let bar = if progress {
        let bar =
            ProgressBar::with_draw_target(Some(changes.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files {per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = changes.into_iter();
    loop {
        while tasks.len() < opts.in_flight.max(1) {
            let Some(change) = queue.next() else { break };
            let (sink, mapping) = (sink.clone(), mapping.clone());
            tasks.spawn(async move {
                let outcome = import_change(&sink, &change, &mapping).await;
                (change, outcome)
            });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (change, outcome) = done?;
        match outcome {
            FileOutcome::Imported => summary.imported += 1,
            FileOutcome::Retracted => summary.retracted += 1,
            FileOutcome::Unchanged => summary.unchanged += 1,
            FileOutcome::Failed(why) => {
                summary.failed += 1;
                bar.suspend(|| eprintln!("failed: {why}"));
                bar.inc(1);
                continue;
            }
        }
        watcher.checkpoint.mark(&change);
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.dangling_references = sink.dangling_references() - dangling_before;
    summary.elapsed = started.elapsed();
    Ok(summary)
}
