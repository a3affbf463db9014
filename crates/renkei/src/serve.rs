//! `renkei serve`: open the store, bind, serve until SIGTERM or Ctrl-C (requests in flight
//! finish first).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use server::{AppState, R4Validator, ServerConfig};

use crate::storage::StoreArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Public FHIR base URL (default: http://<Host header>/fhir).
    #[arg(long)]
    base_url: Option<String>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = ServerConfig {
        base_url: args.base_url,
        ..ServerConfig::default()
    };
    let state = AppState::new(store.clone(), Arc::new(R4Validator), config);
    // The one line scripts and tests wait for.
    println!(
        "renkei listening on http://{addr}/fhir ({} store)",
        store.backend()
    );
    server::run(state, listener, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
