//! `renkei import`: loads FHIR NDJSON files (bulk-export layout: one resource per line, e.g.
//! `Patient.000.ndjson`) and Bundle JSON files into the store, through `ingest::import` (the
//! reader thread, chunks, dependency order, reference counting are there; this module keeps
//! the command line, the progress bar and what is printed). `--ssmix2 ROOT` imports an
//! SS-MIX2 tree instead (see `import_ssmix2`).
//!
//! The summary line says how many resources were created, updated and unchanged, from how
//! many files (and how many were skipped: not FHIR), the errors (each printed with its
//! `file:line`, the first thousand of them), and how many references name resources not (yet)
//! on this server.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ingest::import::{ImportObserver, Summary, collect_files};
use ingest::{R4Validator, Validator};
use store::Store;

use crate::storage::{EmpiArgs, StoreArgs, link_backlog};

pub use ingest::import::DEFAULT_CHUNK;

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

/// Import settings of the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub chunk: usize,
    pub print_commits: bool,
    pub progress: bool,
}

/// The line `renkei import` ends with.
pub fn summary_line(s: &Summary) -> String {
    let mut line = format!(
        "imported {} resources ({} created, {} updated, {} unchanged) from {} files",
        s.resources, s.created, s.updated, s.unchanged, s.files
    );
    if s.skipped_files > 0 {
        line.push_str(&format!(" ({} skipped: not FHIR)", s.skipped_files));
    }
    line.push_str(&format!(
        " in {:.1} s ({:.0} resources/s), {} errors; {} references to resources not (yet) on this server",
        s.elapsed.as_secs_f64(),
        s.rate(),
        s.errors,
        s.dangling_references
    ));
    line
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let base = args.store.open().await?;
    let mpi = args.empi.mpi(base, args.store.empi_snapshot())?;
    // Patients written before (with --no-empi) are linked first, so new ones match them.
    let linked = link_backlog(&mpi).await?;
    if linked > 0 {
        eprintln!("linked {linked} earlier Patients to enterprise identities");
    }
    let store = mpi.linked_store();
    if let Some(root) = &args.ssmix2 {
        let code = crate::import_ssmix2::run(store, root, &args.ssmix2_options, !args.quiet).await;
        if mpi.linking() {
            crate::storage::save_empi_snapshot(&mpi).await;
        }
        return code;
    }
    let opts = Options {
        chunk: args.chunk.max(1),
        print_commits: args.print_commits,
        progress: !args.quiet,
    };
    let s = import(store, Arc::new(R4Validator), &args.paths, &opts).await?;
    // The next start (a server, another import) reads the index from here. Without linking
    // the index was never loaded: the next start loads it from the feed.
    if mpi.linking() {
        crate::storage::save_empi_snapshot(&mpi).await;
    }
    eprintln!("{}", summary_line(&s));
    Ok(if s.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Errors shown on stderr before the rest are only counted.
const SHOWN_ERRORS: u64 = 1000;

/// What the terminal shows of an import: the progress bar, the errors, and with
/// `--print-commits` a line per committed transaction.
struct Terminal {
    bar: ProgressBar,
    print_commits: bool,
}

impl ImportObserver for Terminal {
    fn problem(&mut self, message: &str, summary: &Summary) {
        if summary.errors <= SHOWN_ERRORS {
            self.bar.suspend(|| eprintln!("{message}"));
        } else if summary.errors == SHOWN_ERRORS + 1 {
            self.bar.suspend(|| eprintln!("(further errors not shown)"));
        }
    }

    fn committed(&mut self, resources: usize, what: &str) {
        if self.print_commits {
            println!("committed {resources} {what}");
            let _ = std::io::stdout().flush();
        }
    }

    fn progress(&mut self, bytes: u64, summary: &Summary) {
        self.bar.inc(bytes);
        self.bar.set_message(format!(
            "{} resources, {} errors",
            summary.resources, summary.errors
        ));
    }
}

/// Imports `paths` (files or directories) into `store`.
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
    let mut terminal = Terminal {
        bar,
        print_commits: opts.print_commits,
    };
    let options = ingest::import::Options { chunk: opts.chunk };
    let summary = ingest::import::import(store, validator, files, &options, &mut terminal).await?;
    terminal.bar.finish_and_clear();
    Ok(summary)
}
