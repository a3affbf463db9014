//! `renkei bench match`: the patient index at scale, as a new user meets it (issue 19). It
//! generates N people (`empi::synth`, as `renkei empi generate` does), imports them with
//! linking on into a fresh SQLite data directory (`renkei import`, a child process), starts
//! `renkei serve` on it (a child process on a free loopback port) and times start to
//! `/readyz` 200, then runs concurrent clients of `POST /fhir/Patient/$match` with a typo'd
//! copy of a stored person, and the same clients on `/healthz` (the round-trip floor), and
//! prints p50 / p99 of both and their difference.
//!
//! The server logs at `error` level unless `RENKEI_BENCH_SERVER_LOG` says otherwise (say,
//! `info` for the index's load and snapshot lines). The children are `--binary PATH` (default: this executable), so that an older build is
//! measured by the same harness. `--data DIR` keeps the store (and reuses one already there:
//! the import is skipped); otherwise the directory is removed at the end unless
//! `RENKEI_BENCH_KEEP=1`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use empi::synth::{self, GenConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::bench::quantile_ms;

/// Seed Patients of the generator: the Synthea sample beside the repository.
pub const SAMPLE_SEED: &str = "../shared/data/synthea-1000/Patient.000.ndjson";

/// Stored people kept as `$match` queries.
const QUERIES: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// People to generate and import.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Seed Patients (NDJSON) of the generator (default: the Synthea sample beside the
    /// repository, found from the repository root).
    #[arg(long, value_name = "FILE", default_value = SAMPLE_SEED)]
    seed: PathBuf,
    /// Use (and keep) this data directory; a store already there is reused (no import).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The `renkei` executable to import with and serve (default: this one).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Timed requests of each kind ($match, then /healthz), spread over the clients.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Random seed of the generator.
    #[arg(long, default_value_t = 42)]
    random_seed: u64,
}

pub async fn run(a: MatchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.records > 0, "--records must be at least 1");
    let binary = match &a.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let (data, throwaway) = match &a.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("renkei-bench-match-{}", uuid::Uuid::new_v4())),
            true,
        ),
    };
    let existing = data.join(store::SqliteStore::FILE_NAME).is_file();
    let people = data.with_extension("people.ndjson");
    let queries = if existing {
        println!("match: reusing the store in {} (no import)", data.display());
        read_queries(&people)?
    } else {
        crate::bench::check_dataset(
            std::slice::from_ref(&a.seed),
            "renkei bench match --seed Patient.ndjson",
        )?;
        std::fs::create_dir_all(&data)?;
        let queries = generate(&a, &people)?;
        let started = Instant::now();
        let status = Command::new(&binary)
            .args(["import", "--data"])
            .arg(&data)
            .arg(&people)
            .status()
            .with_context(|| format!("running {} import", binary.display()))?;
        let took = started.elapsed();
        anyhow::ensure!(status.success(), "the import failed: {status}");
        println!(
            "match: imported {} people through the EMPI in {:.1} s = {:.0} people/s",
            a.records,
            took.as_secs_f64(),
            a.records as f64 / took.as_secs_f64()
        );
        queries
    };
    anyhow::ensure!(!queries.is_empty(), "no stored people to query");

    let started = Instant::now();
    let server = crate::bench::ChildServer::start(&binary, &data, &[])?;
    let listening = started.elapsed();
    let client = reqwest::Client::new();
    let root = server.base.trim_end_matches("/fhir").to_owned();
    let ready = loop {
        let r = client.get(format!("{root}/readyz")).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the server was not ready after 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "match: server listening after {:.2} s, ready (/readyz 200) after {:.2} s",
        listening.as_secs_f64(),
        ready.as_secs_f64()
    );

    let bodies: Arc<Vec<String>> = Arc::new(
        queries
            .iter()
            .map(|p| {
                json!({"resourceType": "Parameters", "parameter": [
                    {"name": "resource", "resource": typo(p)}]})
                .to_string()
            })
            .collect(),
    );
    let match_url = format!("{}/Patient/$match", server.base);
    // Warm-up, untimed: every query once (the page cache, the connections).
    load(
        &client,
        &match_url,
        &bodies,
        bodies.len(),
        a.clients,
        "warm-up",
    )
    .await?;
    let floor = load(
        &client,
        &format!("{root}/healthz"),
        &Arc::new(Vec::new()),
        a.requests,
        a.clients,
        "/healthz",
    )
    .await?;
    let matched = load(
        &client, &match_url, &bodies, a.requests, a.clients, "$match",
    )
    .await?;
    server.stop()?;

    let (h50, h99) = (quantile_ms(&floor, 0.5), quantile_ms(&floor, 0.99));
    let (m50, m99) = (quantile_ms(&matched, 0.5), quantile_ms(&matched, 0.99));
    println!(
        "match: {} clients, {} requests each kind: $match p50 {m50:.2} ms p99 {m99:.2} ms; \
         /healthz p50 {h50:.2} ms p99 {h99:.2} ms; $match above the floor: p50 {:.2} ms p99 {:.2} ms",
        a.clients,
        a.requests,
        m50 - h50,
        m99 - h99
    );
    let keep = std::env::var_os("RENKEI_BENCH_KEEP").is_some_and(|v| v == "1");
    if throwaway && !keep {
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_file(&people);
    } else {
        eprintln!("kept store directory {}", data.display());
    }
    Ok(())
}

/// Writes `a.records` generated people to `out`; returns up to [`QUERIES`] of them, spread
/// over the whole set.
fn generate(a: &MatchArgs, out: &Path) -> anyhow::Result<Vec<Value>> {
    let seeds = read_ndjson(&a.seed)?;
    let config = GenConfig {
        seed: a.random_seed,
        count: Some(a.records),
        ..GenConfig::default()
    };
    let mut file = BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let bar = ProgressBar::new(a.records as u64);
    bar.set_style(
        ProgressStyle::with_template("generate [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let every = (a.records / QUERIES).max(1);
    let mut kept = Vec::new();
    let mut n = 0usize;
    let mut failure = None;
    synth::generate_each(&seeds, &config, |patient, _label| {
        if failure.is_some() {
            return;
        }
        if n.is_multiple_of(every) && kept.len() < QUERIES {
            kept.push(patient.clone());
        }
        n += 1;
        if let Err(e) = serde_json::to_writer(&mut file, &patient)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"))
        {
            failure = Some(e);
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    file.flush()?;
    println!("match: generated {n} people into {}", out.display());
    Ok(kept)
}

/// Every `len / QUERIES`-th person of a kept people file (a reused store), parsing only those.
fn read_queries(people: &Path) -> anyhow::Result<Vec<Value>> {
    let context = || {
        format!(
            "reading the people imported into the kept store ({}), the $match queries",
            people.display()
        )
    };
    let lines = || -> anyhow::Result<_> {
        let file = std::fs::File::open(people).with_context(context)?;
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty()))
    };
    let every = (lines()?.count() / QUERIES).max(1);
    lines()?
        .step_by(every)
        .take(QUERIES)
        .map(|l| serde_json::from_str(&l).with_context(context))
        .collect()
}

fn read_ndjson(path: &Path) -> anyhow::Result<Vec<Value>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// A copy of a stored person without its id, with two neighbouring letters of the family name
/// swapped (or of the given name, when the family name is too short): a keying error.
pub fn typo(patient: &Value) -> Value {
    let mut p = patient.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("id");
        o.remove("meta");
    }
    let swap = |s: &str| -> Option<String> {
        let mut chars: Vec<char> = s.chars().collect();
        let at = chars.len() / 2;
        (chars.len() >= 3 && chars[at - 1] != chars[at]).then(|| {
            chars.swap(at - 1, at);
            chars.into_iter().collect()
        })
    };
    let name = &mut p["name"][0];
    if let Some(changed) = name["family"].as_str().and_then(swap) {
        name["family"] = json!(changed);
    } else if let Some(changed) = name["given"][0].as_str().and_then(swap) {
        name["given"][0] = json!(changed);
    }
    p
}

/// `n` requests from `clients` concurrent clients: a POST of `bodies` in turn, or a GET when
/// there are none; each must answer 2xx. Returns the latencies.
async fn load(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<String>>,
    n: usize,
    clients: usize,
    what: &str,
) -> anyhow::Result<Vec<Duration>> {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let cursor = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients.max(1) {
        let (client, url, bodies, cursor, bar) = (
            client.clone(),
            url.to_owned(),
            bodies.clone(),
            cursor.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(samples);
                }
                let t = Instant::now();
                let request = match bodies.get(i % bodies.len().max(1)) {
                    Some(body) => client
                        .post(&url)
                        .header("content-type", "application/fhir+json")
                        .body(body.clone()),
                    None => client.get(&url),
                };
                let r = request.send().await?;
                let status = r.status();
                r.bytes().await?;
                anyhow::ensure!(status.is_success(), "{url} answered {status}");
                samples.push(t.elapsed());
                bar.inc(1);
            }
        }));
    }
    let mut samples = Vec::with_capacity(n);
    for w in workers {
        samples.extend(w.await??);
    }
    bar.finish_and_clear();
    samples.sort();
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_swaps_two_letters_and_drops_the_id() {
        let p = json!({"resourceType": "Patient", "id": "x", "meta": {"versionId": "1"},
                       "name": [{"family": "Yamada", "given": ["Taro"]}]});
        let t = typo(&p);
        assert_eq!(t["name"][0]["family"], "Yaamda");
        assert!(t.get("id").is_none() && t.get("meta").is_none());
        let short =
            json!({"resourceType": "Patient", "name": [{"family": "Li", "given": ["Ming"]}]});
        assert_eq!(typo(&short)["name"][0]["given"][0], "Mnig");
    }
}
