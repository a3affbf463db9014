//! The `renkei` binary: parses the command line and calls library entry points.
//!
//! Each subcommand lives in its own module with its clap arguments and a `run` function;
//! this file only dispatches. `anyhow` is used here, at the edge, and nowhere else.

/// `println!` that returns the write's error instead of panicking: a reader that goes away
/// (`renkei empi explain ... | head`) ends the command quietly (see [`main`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                anyhow::Error::new(crate::StdoutClosed)
            } else {
                anyhow::Error::new(e)
            }
        })?
    }};
}

/// Standard output's reader went away while a command was printing.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

mod audit_cmd;
mod bench;
mod bench_exchange;
mod bench_hl7;
mod bench_match;
mod bench_repetitions;
mod bench_search;
mod empi_cmd;
mod empi_review;
mod fhirpath_cmd;
mod hl7_time;
mod import_cmd;
mod import_ssmix2;
mod keys;
mod nodes_cmd;
mod principals_cmd;
mod serve;
mod storage;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: an import or a busy server allocates and frees
/// millions of small JSON values, strings and index rows, and glibc's malloc spent about a
/// fifth of an EMPI import's CPU growing, trimming and consolidating its arenas
/// (docs/benchmarks.md, "the import's allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Renkei: a health information exchange (FHIR R4 server, FHIRPath, ...).
#[derive(Debug, Parser)]
#[command(name = "renkei", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the FHIR server.
    Serve(Box<serve::Args>),
    /// Load FHIR NDJSON files (bulk-export layout) and Bundle JSON files into the store.
    Import(import_cmd::Args),
    /// Measure ingest throughput and read latency.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Evaluate a FHIRPath expression over a FHIR resource (JSON) and print the result.
    Fhirpath(fhirpath_cmd::Args),
    /// Registered clients (backend services, apps) that may ask for tokens.
    #[command(subcommand)]
    Clients(principals_cmd::ClientsCommand),
    /// Users of the built-in login.
    #[command(subcommand)]
    Users(principals_cmd::UsersCommand),
    /// The access-token signing keys: `rotate` adds a new one.
    #[command(subcommand)]
    TokenKeys(keys::TokenKeysCommand),
    /// The audit log: `verify` checks its hash chain and signed head.
    #[command(subcommand)]
    Audit(audit_cmd::Command),
    /// A hub's node registrations: list, approve, revoke.
    #[command(subcommand)]
    Nodes(nodes_cmd::Command),
    /// Patient matching (EMPI) on files: generate, train, cluster, evaluate, explain, bench.
    #[command(subcommand)]
    Empi(empi_cmd::Command),
}

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,tokio_postgres=warn,hyper=warn,reqwest=warn";
/// The same for benchmarks, whose thousands of requests would each log a line.
const BENCH_LOG_FILTER: &str = "info,tokio_postgres=warn,hyper=warn,reqwest=warn,renkei::http=warn";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        // The reader of our standard output went away (`| head`): nothing left to say.
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process. mimalloc asks for them
/// (`MADV_HUGEPAGE`) and then returns freed memory to the kernel in small pieces, so the same
/// 2 MiB were faulted in and zeroed again and again: in an EMPI import, about a seventh of the
/// samples were the kernel clearing huge pages, and 5 s of system time in 45. A server
/// starting on a million people spent three quarters of its samples there: on a virtual
/// machine whose host hands memory back lazily, a fresh huge page can take milliseconds, and
/// reading the patient index took 25–28 s with them against 5.5–7.7 s without
/// (docs/benchmarks.md). `$match` measured about the same either way (p99 above the floor
/// 2.55–3.18 ms without, 2.31–2.64 ms with). A kernel that refuses is only slower.
#[allow(unsafe_code)]
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only sets a flag of the
    // process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// mimalloc's `purge_delay` option: how long freed memory stays mapped before it is given
/// back to the OS, in milliseconds (-1: never). Its place in mimalloc 3's `mi_option_e` (the
/// Rust declarations list only older options); a test checks it holds the documented default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped for `delay_ms` (-1: until the process ends) unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. An EMPI import frees and allocates gigabytes a
/// minute; given back after mimalloc's default second, each chunk faulted that memory in
/// again (four times the pages the import ever held, a tenth of its CPU at a million people:
/// docs/benchmarks.md).
#[allow(unsafe_code)]
fn keep_freed_memory(delay_ms: i64) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets an option mimalloc reads whenever it decides to purge; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms as _) };
}

fn run() -> anyhow::Result<ExitCode> {
    without_transparent_huge_pages();
    let cli = Cli::parse();
    // An import ends when its input does: nothing to give back before. A server gives memory
    // back once it has been idle for a while.
    keep_freed_memory(match cli.command {
        Command::Import(_) => -1,
        _ => 10_000,
    });
    // `RUST_LOG` overrides; by default the product's own lines at info, a driver's only when
    // they warn. Colour only on a terminal: a log file or journal gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(match cli.command {
                    Command::Bench(_) => BENCH_LOG_FILTER,
                    _ => DEFAULT_LOG_FILTER,
                })
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let command = match cli.command {
        // Synchronous commands need no runtime.
        Command::Fhirpath(args) => return fhirpath_cmd::run(args),
        Command::Empi(cmd) => return empi_cmd::run(cmd),
        other => other,
    };
    // Outbound HTTPS (reqwest) takes the process's TLS provider: ring.
    server::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match command {
            Command::Serve(args) => serve::run(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Import(args) => import_cmd::run(args).await,
            Command::Audit(cmd) => audit_cmd::run(cmd).await,
            Command::TokenKeys(cmd) => keys::run(cmd).map(|()| ExitCode::SUCCESS),
            Command::Clients(cmd) => principals_cmd::run_clients(cmd).await,
            Command::Users(cmd) => principals_cmd::run_users(cmd).await,
            Command::Nodes(cmd) => nodes_cmd::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Bench(cmd) => bench::run(cmd).await.map(|()| ExitCode::SUCCESS),
            Command::Fhirpath(args) => fhirpath_cmd::run(args),
            Command::Empi(cmd) => empi_cmd::run(cmd),
        }
    })
}

#[cfg(test)]
mod tests {
    /// `MI_OPTION_PURGE_DELAY` names mimalloc 3's purge delay: the option there holds its
    /// documented default, a second.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }
}
