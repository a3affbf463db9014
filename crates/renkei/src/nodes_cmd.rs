//! `renkei nodes`: the hub operator's decisions on the nodes that asked to join the network
//! (`list`, `approve ID`, `approve --all-pending`, `revoke ID`). An approved node gets tokens,
//! publishes its changes and is queried; a revoked one none of these.

use anyhow::Context;
use exchange::registration::NodeStatus;
use server::exchange::hub;

use crate::storage::StoreArgs;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every node that registered, with its status.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Approve a pending (or revoked) node, or every pending one.
    Approve {
        /// The node's id.
        #[arg(required_unless_present = "all_pending")]
        id: Option<String>,
        /// Approve every node that is waiting.
        #[arg(long, conflicts_with = "id")]
        all_pending: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a node: no more tokens, no more queries to it.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::List { store } => {
            let opened = store.open_security(true).await?;
            let all = hub::registrations(opened.exchange.as_ref()).await?;
            if all.is_empty() {
                println!("no node has registered");
            }
            for r in &all {
                let pinned = r
                    .request
                    .tls_certificate_sha256
                    .as_deref()
                    .map(|pin| format!("\tcertificate sha256 {pin}"))
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\t{}\tregistered {}{pinned}",
                    r.request.node,
                    r.status.as_str(),
                    r.request.name,
                    r.request.endpoint,
                    r.registered
                );
            }
            println!("{} nodes", all.len());
        }
        Command::Approve {
            id,
            all_pending,
            store,
        } => {
            let opened = store.open_security(true).await?;
            let ids: Vec<String> = if all_pending {
                hub::registrations(opened.exchange.as_ref())
                    .await?
                    .into_iter()
                    .filter(|r| r.status == NodeStatus::Pending)
                    .map(|r| r.request.node)
                    .collect()
            } else {
                id.into_iter().collect()
            };
            for id in &ids {
                let r = hub::set_status(
                    opened.store.as_ref(),
                    opened.registry.as_ref(),
                    opened.exchange.as_ref(),
                    id,
                    NodeStatus::Approved,
                )
                .await
                .with_context(|| format!("approving node {id}"))?;
                println!("approved {} ({})", r.request.node, r.request.endpoint);
            }
            println!("{} nodes approved", ids.len());
        }
        Command::Revoke { id, store } => {
            let opened = store.open_security(true).await?;
            let r = hub::set_status(
                opened.store.as_ref(),
                opened.registry.as_ref(),
                opened.exchange.as_ref(),
                &id,
                NodeStatus::Revoked,
            )
            .await
            .with_context(|| format!("revoking node {id}"))?;
            println!("revoked {} ({})", r.request.node, r.request.endpoint);
        }
    }
    Ok(())
}
