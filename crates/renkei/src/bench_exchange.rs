//! `renkei bench exchange`: the exchange between separate processes (issue 21). A hub and two
//! nodes run as child `renkei serve` processes on loopback, each on a fresh SQLite data
//! directory; both nodes hold the dataset (default: the Synthea sample) under ids of their
//! own, so every person is at both. Reported:
//!
//! - **record-locator updates per second**: the benchmark registers with the hub as a third
//!   node and publishes synthetic batches (one version per change, each in one Patient's
//!   compartment; one change in ten a Patient body the hub links), timing the hub's durable
//!   application of each batch, as a node's publisher would see it;
//! - **network query latency**: `Patient/[id]/$everything?_network=true` at node A (this node,
//!   the record locator, node B in parallel, merged; up to ten pages of each) against
//!   `Patient/[id]/$everything` at A alone, up to ten pages followed, p50 and p99 over the
//!   dataset's patients;
//! - **directed messages per second with receipts**: documents `$send` from A to B, from the
//!   first request until A holds every receipt.
//!
//! Figures, never assertions. The children are `--binary PATH` (default: this executable).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::bench::quantile_ms;

#[derive(Debug, clap::Args)]
pub struct ExchangeArgs {
    /// The NDJSON dataset each node holds (a bulk-export directory).
    #[arg(long, value_name = "DIR", default_value = crate::bench::SAMPLE_DATASET)]
    dataset: PathBuf,
    /// The `renkei` executable to run as hub and nodes (default: this one).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Changes the benchmark publishes to the hub's record locator.
    #[arg(long, default_value_t = 20_000)]
    locator_changes: usize,
    /// Changes per published batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Timed network queries (and as many local ones).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Directed messages sent from node A to node B.
    #[arg(long, default_value_t = 200)]
    messages: usize,
}

/// A child `renkei serve` and its data directory.
struct Process {
    /// Held for its drop, which stops the process.
    _server: crate::bench::ChildServer,
    base: String,
    dir: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `binary serve` on `dir` with `extra` arguments, under its own base URL.
fn serve(binary: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Process> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}/fhir");
    let mut args = vec![
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--base-url".into(),
        base.clone(),
    ];
    args.extend(extra.iter().cloned());
    Ok(Process {
        _server: crate::bench::ChildServer::start(binary, dir, &args)?,
        base,
        dir: dir.to_owned(),
    })
}

/// Copies the dataset's NDJSON files into `to`, every UUID prefixed with `prefix` (ids,
/// references and the identifiers that repeat them), so that two nodes hold the same people
/// under different ids and the same national numbers.
fn clone_dataset(from: &Path, to: &Path, prefix: &str) -> anyhow::Result<Vec<PathBuf>> {
    let uuid = regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")?;
    std::fs::create_dir_all(to)?;
    let mut out = Vec::new();
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".ndjson") || name.starts_with("log") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let cloned = uuid.replace_all(&text, |c: &regex::Captures<'_>| {
            format!("{prefix}{}", &c[0])
        });
        let target = to.join(&name);
        std::fs::write(&target, cloned.as_bytes())?;
        out.push(target);
    }
    Ok(out)
}

/// An access token for `server`, signed with its own key ring (as its token endpoint would
/// issue one to a clinician's app).
fn token(server: &Process, client: &str) -> anyhow::Result<String> {
    let keys = auth::token::TokenKeys::from_json(&std::fs::read_to_string(
        server.dir.join(crate::keys::TOKEN_KEYS_FILE),
    )?)?;
    let now = chrono::Utc::now().timestamp();
    Ok(keys.issue(&auth::token::AccessClaims {
        iss: server.base.trim_end_matches("/fhir").to_owned(),
        sub: client.to_owned(),
        aud: server.base.clone(),
        exp: now + 3600,
        iat: now - 1,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: "system/*.cruds".into(),
        client_id: client.to_owned(),
        patient: None,
        fhir_user: Some("Practitioner/bench".into()),
        organization: None,
        purpose_of_use: Some("TREAT".into()),
        break_glass: None,
    })?)
}

fn approve_all(binary: &Path, hub: &Process, want: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut approved = 0;
    while approved < want {
        anyhow::ensure!(Instant::now() < deadline, "the nodes never registered");
        let out = Command::new(binary)
            .args(["nodes", "approve", "--all-pending", "--data"])
            .arg(&hub.dir)
            .output()?;
        approved += String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("approved "))
            .count();
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?["url"]
        .as_str()
        .map(str::to_owned)
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let r = client.get(url).bearer_auth(token).send().await?;
    let status = r.status();
    let body: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
    Ok(body)
}

pub async fn run(a: ExchangeArgs) -> anyhow::Result<()> {
    crate::bench::check_dataset(
        std::slice::from_ref(&a.dataset),
        "renkei bench exchange --dataset DIR",
    )?;
    anyhow::ensure!(
        a.batch > 0 && a.queries > 0,
        "--batch and --queries must be at least 1"
    );
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let root = std::env::temp_dir().join(format!("renkei-bench-exchange-{}", uuid::Uuid::new_v4()));
    let result = measure(&a, &binary, &root).await;
    if std::env::var("RENKEI_BENCH_KEEP").as_deref() != Ok("1") {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

async fn measure(a: &ExchangeArgs, binary: &Path, root: &Path) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    // The nodes' data, imported before they start.
    let mut patient_ids = Vec::new();
    for prefix in ["a", "b"] {
        let dir = root.join(prefix);
        let files = clone_dataset(&a.dataset, &root.join(format!("{prefix}-import")), prefix)?;
        if prefix == "a" {
            for f in files.iter().filter(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("Patient"))
            }) {
                for line in std::fs::read_to_string(f)?
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                {
                    let p: Value = serde_json::from_str(line)?;
                    patient_ids.push(p["id"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        let status = Command::new(binary)
            .args(["import", "--quiet", "--data"])
            .arg(&dir)
            .args(&files)
            .env("RUST_LOG", "error")
            .status()?;
        anyhow::ensure!(status.success(), "importing node {prefix}'s data failed");
    }
    anyhow::ensure!(!patient_ids.is_empty(), "the dataset has no Patient");
    let hub = serve(binary, &root.join("hub"), &["--role".into(), "hub".into()])?;
    let node = |id: &str| {
        serve(
            binary,
            &root.join(id),
            &[
                "--role".into(),
                "node".into(),
                "--hub".into(),
                hub.base.clone(),
                "--node-id".into(),
                id.into(),
            ],
        )
    };
    let node_a = node("a")?;
    let node_b = node("b")?;
    approve_all(binary, &hub, 2)?;

    // Record-locator updates: this process publishes as a third node.
    let key = auth::client_key::ClientKey::generate(chrono::Utc::now().timestamp())?;
    let issuer = hub.base.trim_end_matches("/fhir").to_owned();
    let registered = client
        .post(format!("{issuer}/exchange/register"))
        .header("content-type", "application/json")
        .body(
            json!({"node": "bench", "name": "Benchmark", "endpoint": "http://127.0.0.1:9/fhir",
                   "jwks": key.jwks(), "sharing": "summaries"})
            .to_string(),
        )
        .send()
        .await?;
    anyhow::ensure!(
        registered.status().is_success(),
        "registering the benchmark node"
    );
    approve_all(binary, &hub, 1)?;
    let assertion = key.assertion(
        "bench",
        &format!("{issuer}/auth/token"),
        chrono::Utc::now().timestamp(),
    )?;
    let form = format!(
        "grant_type=client_credentials&scope=system%2F*.rs&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    );
    let answer: Value = client
        .post(format!("{issuer}/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?
        .json()
        .await?;
    let bench_token = answer["access_token"]
        .as_str()
        .context("the hub gave the benchmark node no token")?
        .to_owned();
    let started = Instant::now();
    let mut sent = 0;
    let mut batch_times = Vec::new();
    while sent < a.locator_changes {
        let n = a.batch.min(a.locator_changes - sent);
        let changes: Vec<Value> = (sent..sent + n)
            .map(|i| {
                let patient = format!("p{}", i / 20);
                if i % 10 == 0 {
                    json!({"resource_type": "Patient", "id": patient, "version": 1,
                        "compartments": [patient], "last_updated": "2026-12-06T00:00:00Z",
                        "resource": {"resourceType": "Patient", "id": patient, "gender": "female",
                            "name": [{"family": format!("Bench{}", i / 20), "given": ["Load"]}],
                            "birthDate": "1980-01-01"}})
                } else {
                    json!({"resource_type": "Encounter", "id": format!("e{i}"), "version": 1,
                        "compartments": [patient], "last_updated": "2026-12-06T00:00:00Z"})
                }
            })
            .collect();
        let t = Instant::now();
        let r = client
            .post(format!("{issuer}/exchange/publish"))
            .bearer_auth(&bench_token)
            .header("content-type", "application/json")
            .body(json!({"sharing": "summaries", "changes": changes}).to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "publishing: {}", r.text().await?);
        batch_times.push(t.elapsed());
        sent += n;
    }
    let locator_seconds = started.elapsed().as_secs_f64();
    batch_times.sort();

    // Wait for the nodes' own publishing: the last patient located at both.
    let hub_token = token(&hub, "bench-operator")?;
    let last = patient_ids.last().cloned().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes never finished publishing"
        );
        let located = get(
            &client,
            &format!("{}/Patient/$locate?patient=a.{last}", hub.base),
            &hub_token,
        )
        .await
        .ok();
        let holders = located
            .as_ref()
            .and_then(|l| exchange::locator::Located::from_parameters(l).ok())
            .map_or(0, |l| l.holders.len());
        if holders >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Network query latency against the same query on one node.
    let a_token = token(&node_a, "bench-clinician")?;
    let mut local = Vec::new();
    let mut network = Vec::new();
    for i in 0..a.queries {
        let id = &patient_ids[i % patient_ids.len()];
        let url = format!("{}/Patient/{id}/$everything?_count=100", node_a.base);
        // Every page up to ten, as the network answer holds of every holder.
        let t = Instant::now();
        let mut page = get(&client, &url, &a_token).await?;
        for _ in 1..10 {
            let Some(next) = next_link(&page) else { break };
            page = get(&client, &next, &a_token).await?;
        }
        local.push(t.elapsed());
        let t = Instant::now();
        let merged = get(&client, &format!("{url}&_network=true"), &a_token).await?;
        network.push(t.elapsed());
        if i == 0 {
            let b_entries = merged["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["fullUrl"]
                        .as_str()
                        .is_some_and(|u| u.starts_with(&node_b.base))
                })
                .count();
            anyhow::ensure!(b_entries > 0, "the network query found nothing at node B");
        }
    }
    local.sort();
    network.sort();

    // Directed messages with receipts.
    let started = Instant::now();
    for _ in 0..a.messages {
        let document = json!({"resourceType": "Bundle", "type": "document",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::new_v4())},
            "timestamp": "2026-12-06T10:00:00Z",
            "entry": [{"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": {"resourceType": "Composition",
                "status": "final", "type": {"coding": [{"system": "http://loinc.org", "code": "57133-1"}]},
                "date": "2026-12-06", "author": [{"display": "Benchmark"}], "title": "Referral"}}]});
        let send = json!({"resourceType": "Parameters", "parameter": [
            {"name": "recipient", "valueString": "b"}, {"name": "document", "resource": document}]});
        let r = client
            .post(format!("{}/$send", node_a.base))
            .bearer_auth(&a_token)
            .header("content-type", "application/fhir+json")
            .body(send.to_string())
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "$send: {}", r.text().await?);
    }
    let receipts = format!(
        "{}/Communication?category={}|{}&_summary=count",
        node_a.base,
        exchange::directed::EXCHANGE_CODE_SYSTEM,
        exchange::directed::RECEIPT_CODE
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the receipts never all came back"
        );
        let count = get(&client, &receipts, &a_token).await?["total"]
            .as_u64()
            .unwrap_or(0);
        if count as usize >= a.messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let directed_seconds = started.elapsed().as_secs_f64();

    println!(
        "record locator: {} changes in batches of {} in {:.2} s: {:.0} updates/s (batch p50 {:.1} ms, p99 {:.1} ms)",
        a.locator_changes,
        a.batch,
        locator_seconds,
        a.locator_changes as f64 / locator_seconds,
        quantile_ms(&batch_times, 0.5),
        quantile_ms(&batch_times, 0.99)
    );
    println!(
        "network query ($everything, {} patients, 2 nodes): p50 {:.1} ms, p99 {:.1} ms; one node alone: p50 {:.1} ms, p99 {:.1} ms",
        patient_ids.len(),
        quantile_ms(&network, 0.5),
        quantile_ms(&network, 0.99),
        quantile_ms(&local, 0.5),
        quantile_ms(&local, 0.99)
    );
    println!(
        "directed messages: {} sent and receipted in {:.2} s: {:.1} messages/s",
        a.messages,
        directed_seconds,
        a.messages as f64 / directed_seconds
    );
    drop((node_a, node_b, hub));
    Ok(())
}
