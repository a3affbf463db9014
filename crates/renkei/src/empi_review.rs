//! `renkei empi review`: the review queue and manual EMPI decisions on a store, without a
//! running server (the same code as `Patient/$empi-*`: sticky links, an `AuditEvent` per
//! decision, review tasks closed).
//!
//! ```text
//! renkei empi review --data DIR                       # list open review items
//! renkei empi review --data DIR link SOURCE GOLDEN --reason "..."   # id or Patient/id
//! renkei empi review --data DIR separate SOURCE --reason "..."
//! renkei empi review --data DIR merge FROM INTO --reason "..."
//! renkei empi review --data DIR unmerge GOLDEN --reason "..."
//! ```

use std::process::ExitCode;

use anyhow::Context;
use mpi::resources::{EXPLANATION_EXTENSION, SCORE_EXTENSION};
use mpi::{ManualError, Mpi};
use serde_json::Value;
use store::{Actor, RequestContext};

use crate::storage::StoreArgs;

/// Arguments of `renkei empi review`. No `--no-empi` / `--empi-model`: the queue and the
/// decisions exist only with linking on, and a decision scores nothing.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Who decides (recorded in the AuditEvent as `cli:USER`); default: the operating-system
    /// account running the command (`uid:N` when it has no name).
    #[arg(long, global = true)]
    user: Option<String>,
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List the open review items (the default).
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// SOURCE (a Patient id) is the person of golden record GOLDEN.
    Link {
        source: String,
        golden: String,
        #[arg(long)]
        reason: String,
    },
    /// SOURCE is nobody else: an identity of its own.
    Separate {
        source: String,
        #[arg(long)]
        reason: String,
    },
    /// Golden record FROM is the same person as INTO.
    Merge {
        from: String,
        into: String,
        #[arg(long)]
        reason: String,
    },
    /// Undo the merge that retired golden record GOLDEN.
    Unmerge {
        golden: String,
        #[arg(long)]
        reason: String,
    },
}

pub fn run(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(review(args))
}

async fn review(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_existing().await?;
    let mpi = Mpi::with_defaults(store);
    let user = args.user.unwrap_or_else(os_user);
    let mut ctx = RequestContext::system();
    ctx.actor = Actor::User(format!("cli:{user}"));
    let decided = match args.action.unwrap_or(Action::List { limit: 50 }) {
        Action::List { limit } => {
            let queue = mpi
                .review_queue(&ctx, limit)
                .await
                .context("reading the review queue")?;
            for task in &queue {
                println!("{}", describe(task));
            }
            eprintln!("{} open review item(s)", queue.len());
            return Ok(ExitCode::SUCCESS);
        }
        Action::Link {
            source,
            golden,
            reason,
        } => mpi.link(&ctx, &source, &golden, &reason).await,
        Action::Separate { source, reason } => mpi.unlink(&ctx, &source, &reason).await,
        Action::Merge { from, into, reason } => mpi.merge(&ctx, &from, &into, &reason).await,
        Action::Unmerge { golden, reason } => mpi.unmerge(&ctx, &golden, &reason).await,
    };
    match decided {
        Ok(changed) => {
            let ids: Vec<String> = changed.iter().map(|e| format!("Patient/{e}")).collect();
            println!("changed {}", ids.join(" "));
            Ok(ExitCode::SUCCESS)
        }
        Err(ManualError::Store(e)) => Err(e).context("the decision was not stored"),
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The operating-system account running this process: its name from the user database
/// (not `$USER`, which the caller sets as it likes), or `uid:N` when it has none.
fn os_user() -> String {
    match whoami::username() {
        Ok(name) if !name.is_empty() => name,
        _ => uid().map_or_else(|| "uid:unknown".to_owned(), |n| format!("uid:{n}")),
    }
}

/// The effective uid, as the owner of `/proc/self` (Linux), without `unsafe`.
fn uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `Task/<id>  Patient/<source>  candidates: Patient/E.. (0.9876, possible_twin), ...`
/// (a candidate's guards, from its score's notes, say why it is not linked automatically; a
/// guard an identifier lifted is left out).
fn describe(task: &Value) -> String {
    let candidates: Vec<String> = task["input"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let score = i["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["url"] == SCORE_EXTENSION)
                .map(|e| e["valueDecimal"].to_string())
                .unwrap_or_default();
            let explanation: Value = i["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["url"] == EXPLANATION_EXTENSION)
                .and_then(|e| e["valueString"].as_str())
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null);
            // A guard an identifier lifted is not why the pair waits for review.
            let lifted: Vec<&Value> = explanation["lifted"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| &l["guard"])
                .collect();
            let notes: Vec<String> = explanation["notes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| !lifted.contains(n))
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect();
            let why = if notes.is_empty() {
                String::new()
            } else {
                format!(", {}", notes.join(", "))
            };
            format!(
                "{} ({score}{why})",
                i["valueReference"]["reference"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!(
        "Task/{}\t{}\tcandidates: {}",
        task["id"].as_str().unwrap_or("?"),
        task["focus"]["reference"].as_str().unwrap_or("?"),
        candidates.join(", ")
    )
}
