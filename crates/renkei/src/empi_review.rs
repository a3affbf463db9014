//! `renkei empi review`: the review queue and manual EMPI decisions on a store, without a
//! running server (the same code as `Patient/$empi-*`: sticky links, an `AuditEvent` per
//! decision, review tasks closed).
//!
//! ```text
//! renkei empi review --data DIR                       # list open review items
//! renkei empi review --data DIR link SOURCE GOLDEN --reason "..."
//! renkei empi review --data DIR separate SOURCE --reason "..."
//! renkei empi review --data DIR merge FROM INTO --reason "..."
//! renkei empi review --data DIR unmerge GOLDEN --reason "..."
//! ```

use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use server::empi::resources::SCORE_EXTENSION;
use server::empi::{ManualError, Mpi};
use store::{Actor, RequestContext};

use crate::storage::{EmpiArgs, StoreArgs};

/// Arguments of `renkei empi review`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    empi: EmpiArgs,
    /// Who decides (recorded in the AuditEvent); default: $USER.
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
    let mpi: std::sync::Arc<Mpi> = args.empi.mpi()?;
    let user = args
        .user
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into());
    let mut ctx = RequestContext::system();
    ctx.actor = Actor::User(format!("cli:{user}"));
    let store = store.as_ref();
    let decided = match args.action.unwrap_or(Action::List { limit: 50 }) {
        Action::List { limit } => {
            let queue = mpi
                .review_queue(store, &ctx, limit)
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
        } => mpi.link(store, &ctx, &source, &golden, &reason).await,
        Action::Separate { source, reason } => mpi.unlink(store, &ctx, &source, &reason).await,
        Action::Merge { from, into, reason } => mpi.merge(store, &ctx, &from, &into, &reason).await,
        Action::Unmerge { golden, reason } => mpi.unmerge(store, &ctx, &golden, &reason).await,
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

/// `Task/<id>  Patient/<source>  candidates: Patient/E.. (0.9876), ...`
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
            format!(
                "{} ({score})",
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
