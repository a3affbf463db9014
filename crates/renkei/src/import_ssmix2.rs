//! `renkei import --ssmix2 ROOT [--watch]`: an SS-MIX2 standardized-storage tree through
//! the HL7 v2 ingest path (`ingest::ssmix2`, over `ingest::hl7::StoreSink`): the same mapping
//! (times without an offset in the host's zone unless `--hl7-utc-offset` says otherwise, as
//! for MLLP), validation, group commit and receipts as MLLP. This module keeps the command
//! line, the progress bar and the summary lines.
//!
//! Each pass scans the tree, keeps the latest version of every record (`ssmix2::current`;
//! a latest file flagged `0` is a retraction) and imports what the in-process checkpoint has
//! not seen, several files in flight so that commits group. The persistent checkpoint is the
//! store's receipts (one per file name, committed with the file's resources), so a re-import
//! writes nothing and an interrupted import resumes where it stopped. `--watch` polls the
//! tree until SIGINT/SIGTERM; a pass is never cut short (a file being imported completes).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::R4Validator;
use ingest::hl7::{Hl7Config, StoreSink};
use ingest::ssmix2::{FileOutcome, Importer, PassObserver, Summary};
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

/// The line a pass of `renkei import --ssmix2` prints.
pub fn summary_line(s: &Summary) -> String {
    format!(
        "ssmix2: {} files: {} imported, {} retracted, {} unchanged, {} failed; {} other files skipped; \
         {} references to resources not (yet) on this server; in {:.1} s ({:.0} files/s)",
        s.files(),
        s.imported,
        s.retracted,
        s.unchanged,
        s.failed,
        s.skipped,
        s.dangling_references,
        s.elapsed.as_secs_f64(),
        s.files() as f64 / s.elapsed.as_secs_f64().max(1e-9)
    )
}

/// The sink an import writes through.
pub fn sink(store: Arc<dyn Store>) -> StoreSink {
    StoreSink::new(store, Arc::new(R4Validator), &Hl7Config::default())
}

pub async fn run(
    store: Arc<dyn Store>,
    root: &Path,
    opts: &Options,
    progress: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    let mapping = Arc::new(opts.hl7_time.mapping()?);
    let mut importer = Importer::new(sink(store), root, mapping, opts.in_flight);
    // Installed before the first summary line, which is what a supervisor waits for.
    let stop = crate::serve::shutdown_signal();
    let mut total = importer.pass(&mut Terminal::new(progress)).await?;
    println!("{}", summary_line(&total));
    if opts.watch {
        let interval = Duration::from_secs_f64(opts.interval.max(0.05));
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(interval) => {}
            }
            let pass = importer.pass(&mut Terminal::new(false)).await?;
            if pass.files() > 0 || pass.skipped > 0 {
                println!("{}", summary_line(&pass));
            }
            total.add(&pass);
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

/// What the terminal shows of a pass: a progress bar over the files (when asked for), and
/// each failure on stderr.
pub struct Terminal {
    bar: Option<ProgressBar>,
    progress: bool,
}

impl Terminal {
    pub fn new(progress: bool) -> Self {
        Terminal {
            bar: None,
            progress,
        }
    }
}

impl PassObserver for Terminal {
    fn scanned(&mut self, changes: usize) {
        let bar = if self.progress {
            let bar =
                ProgressBar::with_draw_target(Some(changes as u64), ProgressDrawTarget::stderr());
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
        self.bar = Some(bar);
    }

    fn done(&mut self, outcome: &FileOutcome) {
        let Some(bar) = &self.bar else { return };
        if let FileOutcome::Failed(why) = outcome {
            bar.suspend(|| eprintln!("failed: {why}"));
        }
        bar.inc(1);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
