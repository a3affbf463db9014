//! `renkei audit`: the audit log from the shell. `verify` checks the whole hash chain
//! against its signed head and says which record was edited or removed, if any; the exit code
//! is 0 only for a log that verifies.
//!
//! The head is signed with the node's audit key, an Ed25519 PKCS#8 file kept outside the
//! database (`--audit-key`; by default `audit-signing.key` in the data directory, beside the
//! database file, which is not inside it; a network that fears its database administrators
//! keeps it elsewhere).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use auth::chain::HeadSigner;
use indicatif::{ProgressBar, ProgressStyle};

use crate::storage::StoreArgs;

/// The key file's name in a data directory.
pub const DEFAULT_KEY_FILE: &str = "audit-signing.key";

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the audit log's hash chain and signed head: exits 1 and names the first bad
    /// record if anything was edited, removed, reordered or truncated.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The audit signing key (default: audit-signing.key in --data; required with
    /// --database-url).
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
}

/// Where the audit key lives for these store arguments.
pub fn key_path(store: &StoreArgs, explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    crate::keys::key_path(store, explicit, DEFAULT_KEY_FILE, "--audit-key")
}

fn load_key(path: &Path) -> anyhow::Result<HeadSigner> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the audit key {}", path.display()))?;
    HeadSigner::from_pkcs8(&bytes)
        .with_context(|| format!("{} is not an audit key", path.display()))
}

pub async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Verify(args) => verify(args).await,
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = key_path(&args.store, args.audit_key.as_deref())?;
    anyhow::ensure!(
        path.is_file(),
        "no audit key at {} (check --audit-key)",
        path.display()
    );
    let verifier = load_key(&path)?.verifier();
    let log = args.store.open_security(true).await?.audit;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} records {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let result = store::audit::verify_log(log.as_ref(), &verifier, 10_000, |done, total| {
        bar.set_length(total.max(done));
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(n) => {
            out!("audit log verified: {n} records, chain and signed head intact ({seconds:.1} s)");
            Ok(ExitCode::SUCCESS)
        }
        Err(store::audit::VerifyError::Store(e)) => Err(e.into()),
        Err(e) => {
            out!("AUDIT LOG TAMPERED: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
