//! Developer tasks, run as `cargo xtask <task>` (see `.cargo/config.toml`).
//!
//! # Tasks
//!
//! - `gen-fhir [--defs DIR] [--out DIR] [--check]`: read the official FHIR 4.0.1 definitions
//!   (default `../shared/fhir/r4`, relative to the workspace root) and write the compact tables
//!   the `fhir` crate embeds (default `crates/fhir/src/generated/`). The output is committed;
//!   `--check` compares instead of writing and fails when the committed tables are stale.
//!
//! xtask is the only place that reads `../shared`; nothing it writes is needed at build time
//! except the committed tables themselves.

mod gen_fhir;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask gen-fhir [--defs DIR] [--out DIR] [--check]";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("gen-fhir") => {
            let root = workspace_root();
            let mut defs = root.join("../shared/fhir/r4");
            let mut out = root.join("crates/fhir/src/generated");
            let mut check = false;
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--defs" => defs = PathBuf::from(args.next().context("--defs needs a value")?),
                    "--out" => out = PathBuf::from(args.next().context("--out needs a value")?),
                    "--check" => check = true,
                    other => bail!("unknown argument {other:?}\n{USAGE}"),
                }
            }
            gen_fhir::run(&defs, &out, check)
        }
        Some(other) => bail!("unknown task {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
