//! `renkei bench generate` and `renkei bench search`: scale a Synthea export up by cloning its
//! patients, then measure a fixed mix of typical clinical searches over HTTP with concurrent
//! clients (latency percentiles per query and overall, queries/s), optionally with the
//! database's plan of each query.
//!
//! Cloning keeps directory resources (Organization, Practitioner, Location, ...) once and
//! copies every Patient-compartment resource `scale` times with new ids (`<id>-c<k>`), rewriting
//! the references between copied resources, so that each copy is a disjoint set of patients
//! sharing the same providers, as in a real region.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use server::{AppState, R4Validator, ServerConfig};
use store::{RequestContext, SearchQuery, SqliteStore, Store};

use crate::bench::Fresh;
use crate::import_cmd::{Options, import};
use crate::storage::extractor;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A Synthea NDJSON export (one `Type.000.ndjson` file per type; default: the Synthea
    /// sample beside the repository, `../shared/data/synthea-10`, found from the repository
    /// root).
    #[arg(long, default_value = crate::bench::SAMPLE_DATASET)]
    source: PathBuf,
    /// Copies of every patient (1 = the source as is).
    #[arg(long, default_value_t = 10)]
    scale: usize,
    /// Output directory (created).
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// Load this NDJSON dataset first (e.g. the output of `renkei bench generate`) and report
    /// the ingest rate.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Use (and keep) the SQLite store in this directory instead of a throwaway one, so that a
    /// large load can be measured several times.
    #[arg(long, conflicts_with = "database_url")]
    data: Option<PathBuf>,
    /// Measure on PostgreSQL (a throwaway schema in this database).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Timed requests (spread over the query mix).
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Print the database's plan of each query of the mix.
    #[arg(long)]
    explain: bool,
    /// Serve with authorization and audit on, as on a store with registrations: every query
    /// carries a bearer token and is audited (group-committed) before it is answered.
    #[arg(long)]
    auth: bool,
}

pub async fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.scale >= 1, "--scale must be at least 1");
    crate::bench::check_dataset(
        std::slice::from_ref(&a.source),
        "renkei bench generate --source DIR",
    )?;
    let started = Instant::now();
    let defs = fhir::r4();
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for entry in
        std::fs::read_dir(&a.source).with_context(|| format!("reading {}", a.source.display()))?
    {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("ndjson") {
            continue;
        }
        for line in BufReader::new(std::fs::File::open(&path)?).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let r: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            let Some(t) = r["resourceType"].as_str() else {
                continue; // Synthea's log.ndjson
            };
            by_type.entry(t.to_owned()).or_default().push(r);
        }
    }
    let cloned = |t: &str| t == "Patient" || !defs.patient_compartment_params(t).is_empty();
    let cloned_ids: HashSet<String> = by_type
        .iter()
        .filter(|(t, _)| cloned(t))
        .flat_map(|(_, rs)| {
            rs.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
        })
        .collect();
    std::fs::create_dir_all(&a.output)?;
    let bar = ProgressBar::new((a.scale * by_type.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut written = 0u64;
    for (t, resources) in &by_type {
        bar.set_message(t.clone());
        let file = a.output.join(format!("{t}.000.ndjson"));
        let mut out = BufWriter::new(std::fs::File::create(&file)?);
        let copies = if cloned(t) { a.scale } else { 1 };
        for k in 0..copies {
            for r in resources {
                let mut copy = r.clone();
                if k > 0 {
                    relabel(&mut copy, &cloned_ids, &format!("-c{k}"), true);
                }
                serde_json::to_writer(&mut out, &copy)?;
                out.write_all(b"\n")?;
                written += 1;
            }
            bar.inc(1);
        }
        bar.inc((a.scale - copies) as u64);
        out.flush()?;
    }
    bar.finish_and_clear();
    println!(
        "generated {written} resources ({}x the patients of {}) in {} in {:.1} s",
        a.scale,
        a.source.display(),
        a.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Gives a copied resource new ids: its own `id`, references to copied resources, and the
/// values of its business identifiers (so conditional references stay unambiguous).
fn relabel(v: &mut Value, cloned: &HashSet<String>, suffix: &str, top: bool) {
    match v {
        Value::Object(map) => {
            if top && let Some(Value::String(id)) = map.get_mut("id") {
                id.push_str(suffix);
            }
            if let Some(Value::String(reference)) = map.get_mut("reference") {
                let id_at = reference.rfind(['/', ':']).map_or(0, |i| i + 1);
                if cloned.contains(&reference[id_at..]) {
                    reference.push_str(suffix);
                }
            }
            if top && let Some(Value::Array(identifiers)) = map.get_mut("identifier") {
                for identifier in identifiers {
                    if let Some(Value::String(value)) = identifier.get_mut("value") {
                        value.push_str(suffix);
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                if key != "identifier" || !top {
                    relabel(child, cloned, suffix, false);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                relabel(item, cloned, suffix, false);
            }
        }
        _ => {}
    }
}

/// Builds a query path from `(patient id, family-name prefix, birth year)`.
type MakeQuery = fn(&str, &str, &str) -> String;

/// One query of the mix.
struct Query {
    kind: &'static str,
    path: String,
}

/// The mix: mostly patient-scoped clinical queries, plus a demographic search and
/// `$everything`, spread over the patients of the store.
fn mix(patients: &[(String, String, String)], n: usize) -> Vec<Query> {
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kinds: [(&str, MakeQuery); 9] = [
        ("active conditions", |id, _, _| {
            format!("Condition?patient={id}&clinical-status=active")
        }),
        ("recent encounters, sorted", |id, _, _| {
            format!("Encounter?patient={id}&date=ge2015-01-01&_sort=-date&_count=20")
        }),
        ("active medications", |id, _, _| {
            format!("MedicationRequest?patient={id}&status=active")
        }),
        ("procedures since 2010", |id, _, _| {
            format!("Procedure?patient={id}&date=ge2010")
        }),
        ("immunizations", |id, _, _| {
            format!("Immunization?patient={id}")
        }),
        ("documents, newest 10", |id, _, _| {
            format!("DocumentReference?patient={id}&_sort=-date&_count=10")
        }),
        ("encounters + providers", |id, _, _| {
            format!("Encounter?patient={id}&_include=Encounter:service-provider&_count=20")
        }),
        ("name + birth year", |_, family, year| {
            format!("Patient?family={family}&birthdate={year}")
        }),
        ("$everything, first page", |id, _, _| {
            format!("Patient/{id}/$everything?_count=50")
        }),
    ];
    (0..n)
        .map(|i| {
            let (kind, make) = kinds[i % kinds.len()];
            let (id, family, year) = &patients[(next() % patients.len() as u64) as usize];
            Query {
                kind,
                path: make(id, family, year),
            }
        })
        .collect()
}

pub async fn search(a: SearchArgs) -> anyhow::Result<()> {
    type Handles = (
        Arc<dyn Store>,
        Arc<dyn store::Registry>,
        Arc<dyn store::AuditLog>,
        Option<Fresh>,
    );
    let (store, registry, audit, fresh): Handles = match &a.data {
        Some(dir) => {
            let lite = SqliteStore::open_dir(dir, extractor())?;
            (
                Arc::new(lite.clone()),
                Arc::new(lite.clone()),
                Arc::new(lite),
                None,
            )
        }
        None => {
            let fresh = Fresh::open(a.database_url.as_deref()).await?;
            (
                fresh.store.clone(),
                fresh.registry.clone(),
                fresh.audit.clone(),
                Some(fresh),
            )
        }
    };
    let backend = store.backend();
    if let Some(dataset) = &a.dataset {
        let opts = Options {
            chunk: crate::import_cmd::DEFAULT_CHUNK,
            print_commits: false,
            progress: true,
        };
        let s = import(
            crate::bench::linked(store.clone()),
            Arc::new(R4Validator),
            std::slice::from_ref(dataset),
            &opts,
        )
        .await?;
        println!(
            "ingest {backend}: {} resources in {:.1} s = {:.0} resources/s ({} errors)",
            s.resources,
            s.elapsed.as_secs_f64(),
            s.rate(),
            s.errors
        );
    }
    let ctx = RequestContext::system();
    let patients = patients(store.as_ref(), &ctx).await?;
    anyhow::ensure!(
        !patients.is_empty(),
        "the store holds no patients: pass --dataset"
    );
    let stored = store
        .search(&ctx, &{
            let mut q = SearchQuery::all(None);
            q.count = 0;
            q.total = store::search::TotalMode::Accurate;
            q
        })
        .await?
        .total
        .unwrap_or_default();
    let queries = mix(&patients, a.requests.max(1));
    if a.explain {
        for q in queries.iter().take(9) {
            let (ty, query) = q.path.split_once('?').unwrap_or((&q.path, ""));
            let parsed = match ty.split('/').collect::<Vec<_>>()[..] {
                ["Patient", id, "$everything"] => SearchQuery::everything(id),
                _ => SearchQuery::parse(
                    Some(ty),
                    &store::search::parse_query_string(query),
                    store.extractor(),
                    false,
                )?,
            };
            println!(
                "-- {} ({}):\n{}",
                q.kind,
                q.path,
                store.explain(&ctx, &parsed).await?
            );
        }
    }

    let mut state = AppState::new(
        store.clone(),
        Arc::new(R4Validator),
        ServerConfig::default(),
    );
    let mut auth = None;
    if a.auth {
        let (secured, keys) = crate::bench::BenchAuth::apply(state, registry, audit).await?;
        state = secured;
        auth = Some(keys);
    }
    let server = crate::bench::InProcess::start(state).await?;
    let base = server.base.clone();
    let token = auth.as_ref().map(|k| k.token(&base)).transpose()?;
    let client = crate::bench::client_with(token.as_deref())?;
    // Warm-up: one pass over the kinds (and the page cache), untimed.
    for q in mix(&patients, 90) {
        client
            .get(format!("{base}/{}", q.path))
            .send()
            .await?
            .bytes()
            .await?;
    }
    let queries = Arc::new(queries);
    let cursor = Arc::new(AtomicUsize::new(0));
    let bar = ProgressBar::new(queries.len() as u64);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.clients.max(1) {
        let (queries, cursor, client, base, bar) = (
            queries.clone(),
            cursor.clone(),
            client.clone(),
            base.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut samples: Vec<(usize, Duration)> = Vec::new();
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                let Some(q) = queries.get(i) else {
                    return Ok::<_, anyhow::Error>(samples);
                };
                let t = Instant::now();
                let r = client.get(format!("{base}/{}", q.path)).send().await?;
                let status = r.status();
                r.bytes().await?;
                anyhow::ensure!(status.is_success(), "{} answered {status}", q.path);
                samples.push((i, t.elapsed()));
                bar.inc(1);
            }
        }));
    }
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await??);
    }
    let wall = started.elapsed();
    bar.finish_and_clear();
    server.stop().await?;

    println!(
        "search {backend}{}: {stored} resources, {} patients, {} clients, {} requests in {:.1} s = {:.0} queries/s",
        if a.auth { " (auth + audit)" } else { "" },
        patients.len(),
        a.clients,
        samples.len(),
        wall.as_secs_f64(),
        samples.len() as f64 / wall.as_secs_f64()
    );
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (i, d) in &samples {
        by_kind.entry(queries[*i].kind).or_default().push(*d);
    }
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9}",
        "query", "n", "p50 ms", "p95 ms", "p99 ms"
    );
    for (kind, mut ds) in by_kind {
        print_row(kind, &mut ds);
    }
    let mut all: Vec<Duration> = samples.iter().map(|(_, d)| *d).collect();
    print_row("all", &mut all);
    if let Some(fresh) = fresh {
        fresh.cleanup().await;
    }
    Ok(())
}

fn print_row(kind: &str, ds: &mut [Duration]) {
    ds.sort();
    let pct = |p: f64| crate::bench::quantile_ms(ds, p);
    println!(
        "{kind:<28} {:>6} {:>9.2} {:>9.2} {:>9.2}",
        ds.len(),
        pct(0.5),
        pct(0.95),
        pct(0.99)
    );
}

/// `(id, family-name prefix, birth year)` of every stored patient.
async fn patients(
    store: &dyn Store,
    ctx: &RequestContext,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    let mut q = SearchQuery::all(Some("Patient"));
    q.count = 1000;
    q.total = store::search::TotalMode::None;
    loop {
        let page = store.search(ctx, &q).await?;
        for r in &page.matches {
            let body: Value = serde_json::from_str(r.body.as_deref().unwrap_or("{}"))?;
            let family: String = body["name"][0]["family"]
                .as_str()
                .unwrap_or("a")
                .chars()
                .take(3)
                .collect();
            let year = body["birthDate"]
                .as_str()
                .unwrap_or("1970")
                .get(..4)
                .unwrap_or("1970");
            out.push((r.id.clone(), family, year.to_owned()));
        }
        match page.next {
            Some(next) => q.after = Some(store::search::Cursor::decode(&next)?),
            None => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn relabelled(v: &serde_json::Value, cloned: &[&str], suffix: &str) -> serde_json::Value {
        let cloned = cloned.iter().map(|s| (*s).to_owned()).collect();
        let mut v = v.clone();
        super::relabel(&mut v, &cloned, suffix, true);
        v
    }

    #[test]
    fn copies_get_new_ids_and_references_between_copies() {
        let encounter = json!({
            "resourceType": "Encounter", "id": "e1",
            "identifier": [{"system": "urn:x", "value": "42"}],
            "subject": {"reference": "urn:uuid:p1"},
            "serviceProvider": {"reference": "Organization/o1"},
            "participant": [{"individual": {"reference": "Practitioner?identifier=urn:npi|9"}}]
        });
        let copy = relabelled(&encounter, &["e1", "p1"], "-c3");
        assert_eq!(copy["id"], "e1-c3");
        assert_eq!(copy["identifier"][0]["value"], "42-c3");
        assert_eq!(copy["subject"]["reference"], "urn:uuid:p1-c3");
        assert_eq!(copy["serviceProvider"]["reference"], "Organization/o1");
        assert_eq!(
            copy["participant"][0]["individual"]["reference"],
            "Practitioner?identifier=urn:npi|9"
        );
    }
}
