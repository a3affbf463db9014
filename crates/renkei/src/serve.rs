//! `renkei serve`: open the store, bind HTTP (and MLLP with `--mllp`), serve until SIGTERM or
//! Ctrl-C. Both listeners share one shutdown: HTTP requests in flight finish, and every MLLP
//! connection finishes the message it is handling (committed and acknowledged) first.
//!
//! The composition: the store; the patient index over it (`mpi::Mpi`) and the linking store
//! Patient writes go through; the HTTP app (`server`) over that; and, with `--mllp`, the MLLP
//! listener (`mllp::run`) with `ingest`'s HL7 handler committing through a `StoreSink` on the
//! same linking store and validator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ingest::R4Validator;
use ingest::hl7::{Hl7Config, Ingest, Settings, StoreSink};
use server::{AppState, ServerConfig};

use crate::hl7_time::Hl7TimeArgs;
use crate::storage::{EmpiArgs, StoreArgs, link_backlog};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    /// Given twice, the last one counts.
    #[arg(long, default_value = "127.0.0.1:8080", overrides_with = "listen")]
    listen: SocketAddr,
    /// Public FHIR base URL (default: http://<Host header>/fhir).
    #[arg(long)]
    base_url: Option<String>,
    /// Largest request body accepted (bytes, or with KiB / MiB / GiB); past it a request gets
    /// 413 with an OperationOutcome. Bulk loads belong to `renkei import`.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    max_body_size: usize,
    /// Also receive HL7 v2 over MLLP on this address (e.g. 127.0.0.1:2575; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    mllp: Option<SocketAddr>,
    #[command(flatten)]
    hl7_time: Hl7TimeArgs,
    /// Store REST writes whose references name resources not on this server (by default
    /// they are refused with 400, as HAPI FHIR and Blaze do). HL7 v2 is never refused on it.
    #[arg(long)]
    no_reference_check: bool,
    #[command(flatten)]
    empi: EmpiArgs,
    /// The access-token signing keys (default: token-keys.json in --data; created when
    /// missing). Used when clients or users are registered.
    #[arg(long, value_name = "FILE")]
    token_keys: Option<PathBuf>,
    /// The audit log's head-signing key (default: audit-signing.key in --data; created when
    /// missing). With authorization on, every request is recorded in the audit log.
    #[arg(long, value_name = "FILE")]
    audit_key: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A node's client certificate (PEM, leaf first; the operator's own, self-signed or from
    /// the operator's CA): presented on every call to the hub and to other nodes, and
    /// registered with the hub, which pins its SHA-256 fingerprint. Needs --tls-client-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_client_key",
        requires = "hub"
    )]
    tls_client_cert: Option<PathBuf>,
    /// The private key of --tls-client-cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<PathBuf>,
    /// Certificates (PEM, one or more: e.g. the operator's CA) trusted for outbound HTTPS to
    /// the hub and other nodes, beside the system's roots.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Receive MLLP over TLS too, with the same certificate (needs --tls-cert and --mllp).
    #[arg(long, requires = "tls_cert", requires = "mllp")]
    mllp_tls: bool,
    /// Serve a store without registered clients or users (so without authorization) on a
    /// non-loopback address. Without it, such a store is served on loopback only.
    #[arg(long)]
    open: bool,
    /// The network's consent default for a patient without an applicable patient-privacy
    /// Consent: opt-out shares their record, opt-in withholds it (docs/security.md).
    #[arg(long, value_name = "DEFAULT", default_value = "opt-out", value_parser = parse_consent_default)]
    consent_default: auth::consent::NetworkDefault,
    /// Sensitive labels withheld unless a patient's Consent permits them: comma-separated
    /// v3-ActCode codes (PSY,ETH,HIV,SEX) or system|code pairs. Default: none.
    #[arg(long, value_name = "LABELS", value_delimiter = ',')]
    sensitive_labels: Vec<String>,
    /// This server's part in a network: standalone (the default), hub (node registrations,
    /// directory, record locator, summaries) or node (linked to --hub). A hub or node always
    /// requires tokens.
    #[arg(long, value_name = "ROLE", default_value = "standalone", value_parser = ["standalone", "hub", "node"])]
    role: String,
    /// The hub's FHIR base URL (a node's).
    #[arg(long, value_name = "URL", required_if_eq("role", "node"))]
    hub: Option<String>,
    /// This node's id in the network (letters, digits, '-'; at most 32).
    #[arg(long, value_name = "ID", required_if_eq("role", "node"))]
    node_id: Option<String>,
    /// This node's organisation name in the network's directory (default: the node id).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// This node's DICOMweb (WADO-RS) base URL, listed in the directory beside its FHIR one.
    #[arg(long, value_name = "URL")]
    imaging_endpoint: Option<String>,
    /// The node's client-assertion key (default: node-key.json in --data; created when
    /// missing).
    #[arg(long, value_name = "FILE")]
    node_key: Option<PathBuf>,
    /// Privacy mode: the network key (base64url, shared by the nodes, never by the hub);
    /// the hub then gets keyed hashes of Patients' identifiers and demographics only, and no
    /// clinical data. Only a node (with --hub) takes it.
    #[arg(long, value_name = "FILE", requires = "hub")]
    network_key: Option<PathBuf>,
    /// Seconds another node may take to answer a federated query.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    query_timeout: u64,
}

fn parse_consent_default(s: &str) -> Result<auth::consent::NetworkDefault, String> {
    match s {
        "opt-out" => Ok(auth::consent::NetworkDefault::OptOut),
        "opt-in" => Ok(auth::consent::NetworkDefault::OptIn),
        other => Err(format!("'{other}': expected opt-in or opt-out")),
    }
}

/// A sensitive label: `system|code`, or a v3-ActCode code.
fn sensitive_label(s: &str) -> auth::labels::Label {
    match s.trim().split_once('|') {
        Some((system, code)) => auth::labels::Label {
            system: system.to_owned(),
            code: code.to_owned(),
        },
        None => auth::labels::Label::act(s.trim()),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Checked before the store is opened: the hub must never hold the nodes' key.
    anyhow::ensure!(
        args.network_key.is_none() || args.role == "node",
        "--network-key is a node's (--role node --hub URL): the nodes share it, and a hub \
         holding it could hash guessed names and numbers and so undo the pseudonyms it keeps"
    );
    // Settled (and announced) before anything is opened: a host zone that cannot be read
    // stops the start, not the first message.
    let mapping = match args.mllp {
        Some(_) => Some(args.hl7_time.mapping()?),
        None => None,
    };
    // Read before anything is opened: a certificate that does not load stops the start.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls::server_config(cert, key)?),
        _ => None,
    };
    let client_tls = server::tls::ClientTls::load(
        args.tls_ca.as_deref(),
        args.tls_client_cert
            .as_deref()
            .zip(args.tls_client_key.as_deref()),
    )?;
    if let Some(fingerprint) = client_tls.fingerprint() {
        anyhow::ensure!(
            args.role == "node",
            "--tls-client-cert is a node's: the certificate it presents to its hub and peers"
        );
        let hub = args.hub.as_deref().unwrap_or_default();
        anyhow::ensure!(
            hub.starts_with("https://"),
            "--tls-client-cert is presented over TLS only, and the hub {hub} is not https://"
        );
        tracing::info!(sha256 = %fingerprint, "client certificate for the network");
    }
    let security = args.store.open_security(false).await?;
    let store = security.store.clone();
    // Registrations mean every request needs a token; without any, the server is open, and
    // then only on loopback unless the operator says otherwise.
    let in_network = args.role != "standalone";
    if args.role == "node" {
        anyhow::ensure!(
            args.base_url.is_some(),
            "a node needs --base-url: its FHIR base URL as the hub and the other nodes reach it"
        );
        let id = args.node_id.as_deref().unwrap_or_default();
        anyhow::ensure!(
            exchange::namespace::valid_node_id(id),
            "--node-id '{id}' must be 1 to 32 letters, digits or '-'"
        );
    }
    let authorization = security.registry.has_registrations().await? || in_network;
    anyhow::ensure!(
        authorization || args.open || args.listen.ip().is_loopback(),
        "no client or user is registered in this store, so it would be served without \
         authorization to anyone who reaches {}; register one (renkei clients add, renkei \
         users add), listen on a loopback address, or pass --open to serve it openly",
        args.listen
    );
    let authorization = if authorization {
        let path = crate::keys::key_path(
            &args.store,
            args.token_keys.as_deref(),
            crate::keys::TOKEN_KEYS_FILE,
            "--token-keys",
        )?;
        let keys = crate::keys::token_keys(&path)?;
        let server_security = server::security::Security::open(
            keys,
            security.registry.clone(),
            server::security::SecuritySettings {
                consent: auth::consent::ConsentSettings {
                    default: args.consent_default,
                    sensitive: args
                        .sensitive_labels
                        .iter()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| sensitive_label(l))
                        .collect(),
                },
                ..server::security::SecuritySettings::default()
            },
        )
        .await?;
        let server_security = server_security.with_client_tls(client_tls.clone());
        let server_security = match (args.role.as_str(), &args.hub) {
            ("hub", _) => server_security.with_hub_nodes(security.exchange.clone()),
            ("node", Some(hub)) => server_security.trusting_hub(hub),
            _ => server_security,
        };
        let audit_path = crate::keys::key_path(
            &args.store,
            args.audit_key.as_deref(),
            crate::audit_cmd::DEFAULT_KEY_FILE,
            "--audit-key",
        )?;
        let signer = Arc::new(crate::keys::audit_key(&audit_path)?);
        Some((Arc::new(server_security), signer))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = ServerConfig {
        base_url: args.base_url.clone(),
        max_body_bytes: args.max_body_size,
        check_references: !args.no_reference_check,
        https: tls.is_some(),
    };
    let mpi = args.empi.mpi(store.clone(), args.store.empi_snapshot())?;
    let mut state = AppState::with_empi(mpi.clone(), Arc::new(R4Validator), config);
    let access = match authorization {
        Some((server_security, signer)) => {
            let node = args
                .base_url
                .clone()
                .unwrap_or_else(|| format!("renkei@{addr}"));
            let auditor =
                server::security::audit::Auditor::start(security.audit.clone(), signer, node);
            state = state
                .with_security(server_security)
                .with_audit(Arc::new(auditor));
            "authorization required, requests audited"
        }
        None => "open: no authorization",
    };
    let node_link = match args.role.as_str() {
        "hub" => {
            state = state.with_exchange(Arc::new(server::exchange::Exchange {
                role: server::exchange::Role::Hub,
                state: security.exchange.clone(),
            }));
            None
        }
        "node" => {
            let key_path = crate::keys::key_path(
                &args.store,
                args.node_key.as_deref(),
                crate::keys::NODE_KEY_FILE,
                "--node-key",
            )?;
            let key = crate::keys::node_key(&key_path)?;
            let network_key = match &args.network_key {
                Some(p) => Some(crate::keys::network_key(p)?),
                None => None,
            };
            let node = args.node_id.clone().unwrap_or_default();
            let settings = server::exchange::node::NodeSettings {
                name: args.node_name.clone().unwrap_or_else(|| node.clone()),
                node,
                base_url: args.base_url.clone().unwrap_or_default(),
                hub: args.hub.clone().unwrap_or_default(),
                imaging_endpoint: args.imaging_endpoint.clone(),
                sharing: if network_key.is_some() {
                    exchange::publish::Sharing::Private
                } else {
                    exchange::publish::Sharing::Summaries
                },
                query_timeout: std::time::Duration::from_secs(args.query_timeout.max(1)),
            };
            let link = Arc::new(server::exchange::node::NodeLink::new(
                settings,
                key,
                network_key,
                &client_tls,
            )?);
            state = state.with_exchange(Arc::new(server::exchange::Exchange {
                role: server::exchange::Role::Node(link.clone()),
                state: security.exchange.clone(),
            }));
            Some(link)
        }
        _ => None,
    };
    // The index loads in the background; until it has, what needs it answers 503 (and
    // `/readyz` says so) rather than waiting.
    let loading = mpi.start_loading();
    {
        let mpi = mpi.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match loading.await {
                Ok(Ok(n)) => tracing::info!(
                    patients = n,
                    seconds = started.elapsed().as_secs_f64(),
                    "patient index loaded"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "loading the patient index failed; it loads on first use")
                }
                Err(e) => tracing::warn!(error = %e, "the patient index's loading task failed"),
            }
            if !mpi.linking() {
                return;
            }
            // Patients stored before linking was on get their identities in the background.
            match link_backlog(&mpi).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    linked = n,
                    "linked earlier Patients to enterprise identities"
                ),
                Err(e) => tracing::warn!(error = %e, "linking earlier Patients failed"),
            }
        });
    }
    let mllp = match args.mllp {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding MLLP on {at}"))?;
            Some(listener)
        }
        None => None,
    };
    let mllp_addr = match &mllp {
        Some(l) if args.mllp_tls => format!(" and mllps://{}", l.local_addr()?),
        Some(l) => format!(" and mllp://{}", l.local_addr()?),
        None => String::new(),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shutdown = shutdown_signal();
    // The one line scripts and tests wait for.
    println!(
        "renkei listening on {scheme}://{addr}/fhir{mllp_addr} ({} store, {access})",
        store.backend()
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop_signal = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if let Some(link) = node_link {
        tokio::spawn(server::exchange::node::run(
            link.clone(),
            state.store.clone(),
            stopped.clone(),
        ));
        tokio::spawn(server::exchange::directed::deliver(
            link,
            security.exchange.clone(),
            state.store.clone(),
            stopped.clone(),
        ));
    }
    let mllp_task = mllp.zip(mapping).map(|(listener, mapping)| {
        let sink = StoreSink::new(
            state.store.clone(),
            state.validator.clone(),
            &Hl7Config::default(),
        );
        let settings = Settings {
            mapping,
            ..Settings::default()
        };
        let handler = Arc::new(Ingest::new(sink, settings));
        let config = mllp::Config {
            tls: tls.clone().filter(|_| args.mllp_tls),
            ..mllp::Config::default()
        };
        tokio::spawn(mllp::run(
            listener,
            handler,
            config,
            stop_signal(stopped.clone()),
        ))
    });
    let http = match tls {
        Some(config) => {
            let listener = server::tls::TlsListener::new(listener, config)?;
            tokio::spawn(server::run_tls(state, listener, stop_signal(stopped)))
        }
        None => tokio::spawn(server::run(state, listener, stop_signal(stopped))),
    };
    shutdown.await;
    let _ = stop.send(true);
    http.await??;
    if let Some(task) = mllp_task {
        task.await??;
    }
    // The next start reads the index from here and follows the change feed from its position.
    crate::storage::save_empi_snapshot(&mpi).await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called, not
/// when the future is first polled, so a signal sent right after (say, once the "listening" line
/// is out) is never lost to the default action.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (term, int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested; finishing requests in flight");
    }
}

/// A size: a number of bytes, optionally followed by `KiB`, `MiB` or `GiB` (`K`, `M`, `G`,
/// `KB`, `MB`, `GB` are read as the same binary units).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 16MiB, 524288)"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(factor)
        .filter(|&bytes| bytes > 0)
        .ok_or_else(|| format!("'{text}' is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("524288"), Ok(524_288));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
