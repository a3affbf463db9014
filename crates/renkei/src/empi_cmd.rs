//! `renkei empi`: the patient matching engine (`crates/empi`) on files.
//!
//! `generate` writes labelled duplicates, `train` estimates a model (EM, no labels), `cluster`
//! de-duplicates an NDJSON file of Patients into `id,cluster` CSV, `evaluate` scores a
//! clustering against labels, `explain` shows the per-field score of two records, and `bench`
//! measures incremental match latency on a large index; `review` (in `empi_review`) works
//! the review queue of a store.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use empi::cluster::{self, ClusterConfig, ReviewReason};
use empi::synth::{self, GenConfig};
use empi::{EnterpriseIndex, IndexConfig, Model, Outcome, Record, Scorer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

/// `renkei empi` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Generate labelled duplicate Patients from seed Patients (NDJSON).
    Generate(GenerateArgs),
    /// Estimate a matching model from Patients without labels (EM) and write it as JSON.
    Train(TrainArgs),
    /// De-duplicate Patients (NDJSON) into `id,cluster` CSV.
    Cluster(ClusterArgs),
    /// Pairwise precision, recall and F1 of a clustering against labels.
    Evaluate(EvaluateArgs),
    /// Score two Patients and explain every field.
    Explain(ExplainArgs),
    /// Measure incremental match latency on an index of generated Patients.
    Bench(BenchArgs),
    /// The review queue and manual decisions (link, separate, merge, unmerge) on a store.
    Review(crate::empi_review::ReviewArgs),
}

/// Arguments of `renkei empi generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Seed Patients (NDJSON), e.g. a Synthea `Patient.000.ndjson`.
    #[arg(long, value_name = "FILE")]
    seed: PathBuf,
    /// Where to write the generated Patients (NDJSON).
    #[arg(long, value_name = "PATIENTS.ndjson")]
    output: PathBuf,
    /// Where to write the labels (`id,cluster,error` CSV).
    #[arg(long, value_name = "LABELS.csv")]
    labels: PathBuf,
    /// Number of records; without it each seed Patient is one person.
    #[arg(long)]
    count: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    random_seed: u64,
    /// Share of persons with duplicates (0–1).
    #[arg(long, default_value_t = GenConfig::default().duplicate_rate)]
    duplicate_rate: f64,
    /// Share of persons rendered as Japanese (0–1).
    #[arg(long, default_value_t = GenConfig::default().japanese_rate)]
    japanese_rate: f64,
    /// Share of persons with a twin (0–1).
    #[arg(long, default_value_t = GenConfig::default().twin_rate)]
    twin_rate: f64,
    /// Share of duplicates carrying issue 19's data-entry classes instead of the classic
    /// errors: given name, birth date or both names replaced, national number digits swapped,
    /// address words split or joined, kanji conversion errors, long vowels, a second record
    /// number at one facility, household members (0–1; 0 keeps the classic sets unchanged).
    #[arg(long, default_value_t = 0.0)]
    replaced_rate: f64,
}

/// Arguments of `renkei empi train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Patients (NDJSON) to learn from.
    #[arg(long, value_name = "PATIENTS.ndjson")]
    input: PathBuf,
    /// Where to write the model (JSON).
    #[arg(long, value_name = "MODEL.json")]
    output: PathBuf,
    /// Start from this model (its thresholds and policy are kept) instead of the defaults.
    #[arg(long, value_name = "MODEL.json")]
    model: Option<PathBuf>,
    /// Pairs sampled per estimation step.
    #[arg(long, default_value_t = 1_000_000)]
    max_pairs: usize,
}

/// Arguments of `renkei empi cluster`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Patients to de-duplicate (NDJSON).
    #[arg(long, value_name = "PATIENTS.ndjson")]
    input: PathBuf,
    /// Where to write `id,cluster` CSV (one row per input Patient).
    #[arg(long, value_name = "CLUSTERS.csv")]
    output: PathBuf,
    /// Model to use; without it one is trained on the input first.
    #[arg(long, value_name = "MODEL.json")]
    model: Option<PathBuf>,
    /// Also write the review pairs (`left,right,probability,reason` CSV; reason: `uncertain`,
    /// `possible_twin`, `birth_dates_conflict`, `household_member`, `nameless`,
    /// `transitive_chain: would join X and Y`,
    /// `clusters_too_large`, several separated by `; `).
    #[arg(long, value_name = "REVIEW.csv")]
    review: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Decide one record at a time, in file order, as an import or a stream of registrations
    /// does (the incremental index: its blocking, its candidate cap, its chain guard) instead
    /// of scoring every block at once. Without `--model` this uses the built-in model, as
    /// `renkei import` and `renkei serve` do.
    #[arg(long, conflicts_with = "review")]
    incremental: bool,
    /// With `--incremental`: candidates scored per record at most (default: the index's).
    #[arg(long, requires = "incremental")]
    max_candidates: Option<usize>,
    /// With `--incremental`: members of blocks up to this size are always scored, of larger
    /// ones only when they share two keys with the record (default: the index's).
    #[arg(long, requires = "incremental")]
    small_block: Option<usize>,
}

/// Arguments of `renkei empi evaluate`.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// `id,cluster` CSV to evaluate.
    #[arg(long, value_name = "CLUSTERS.csv")]
    clusters: PathBuf,
    /// `id,cluster[,error]` CSV with the truth.
    #[arg(long, value_name = "LABELS.csv")]
    labels: PathBuf,
}

/// Arguments of `renkei empi explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The first Patient (JSON file).
    left: PathBuf,
    /// The second Patient (JSON file).
    right: PathBuf,
    /// Model to use (default: built-in defaults).
    #[arg(long, value_name = "MODEL.json")]
    model: Option<PathBuf>,
}

/// Arguments of `renkei empi bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seed Patients (NDJSON) the population is generated from.
    #[arg(long, value_name = "FILE")]
    seed: PathBuf,
    /// Records in the index before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Records inserted (and timed) after the index is filled.
    #[arg(long, default_value_t = 20_000)]
    queries: usize,
    /// Model to use; without it one is trained on the first 200 000 records.
    #[arg(long, value_name = "MODEL.json")]
    model: Option<PathBuf>,
    /// Candidates scored per record at most (default: the index's).
    #[arg(long)]
    max_candidates: Option<usize>,
    /// Members of blocks up to this size are always scored, of larger ones only when they
    /// share two keys with the record (default: the index's).
    #[arg(long)]
    small_block: Option<usize>,
}

/// Runs a `renkei empi` subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    if let Command::Review(a) = command {
        return crate::empi_review::run(a);
    }
    match command {
        Command::Generate(a) => generate(a),
        Command::Train(a) => train(a),
        Command::Cluster(a) => cluster_cmd(a),
        Command::Evaluate(a) => evaluate(a),
        Command::Explain(a) => explain(a),
        Command::Bench(a) => bench(a),
        Command::Review(_) => Ok(()),
    }
    .map(|()| ExitCode::SUCCESS)
}

fn read_ndjson(path: &Path) -> anyhow::Result<Vec<Value>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: invalid JSON", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

fn load_model(path: Option<&Path>) -> anyhow::Result<Model> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Model::from_json(&text).with_context(|| format!("model {}", p.display()))
        }
        None => Ok(Model::default()),
    }
}

/// The index's limits, with another candidate cap or small-block size if asked.
fn index_config(max_candidates: Option<usize>, small_block: Option<usize>) -> IndexConfig {
    let default = IndexConfig::default();
    IndexConfig {
        max_candidates: max_candidates.unwrap_or(default.max_candidates),
        small_block: small_block.unwrap_or(default.small_block),
        ..default
    }
}

fn bar(total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Reads Patients (NDJSON) into matching records, parsing on all cores in bounded chunks so
/// only the compact records, never the whole JSON, are held in memory. Lines that are not
/// Patients are reported and skipped.
fn read_records(path: &Path, threads: usize) -> anyhow::Result<Vec<Record>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = bar(
        total,
        "reading  [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
    );
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut records = Vec::new();
    let mut line_no = 0usize;
    let mut skipped = 0usize;
    loop {
        let mut chunk: Vec<(usize, String)> = Vec::with_capacity(20_000);
        let mut bytes = 0u64;
        while chunk.len() < 20_000 {
            let mut line = String::new();
            let n = reader
                .read_line(&mut line)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            line_no += 1;
            if !line.trim().is_empty() {
                chunk.push((line_no, line));
            }
        }
        if chunk.is_empty() {
            break;
        }
        let parts = chunk.len().div_ceil(threads.max(1));
        let parsed: Vec<Vec<Result<Record, String>>> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .chunks(parts.max(1))
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|(n, line)| {
                                serde_json::from_str::<Value>(line)
                                    .map_err(|e| e.to_string())
                                    .and_then(|v| {
                                        Record::from_patient(&v).map_err(|e| e.to_string())
                                    })
                                    .map_err(|e| format!("{}:{n}: {e}", path.display()))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for r in parsed.into_iter().flatten() {
            match r {
                Ok(r) => records.push(r),
                Err(e) => {
                    skipped += 1;
                    if skipped <= 100 {
                        progress.suspend(|| eprintln!("skipped {e}"));
                    }
                }
            }
        }
        progress.inc(bytes);
    }
    progress.finish_and_clear();
    if skipped > 0 {
        eprintln!("{skipped} line(s) skipped");
    }
    Ok(records)
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let seeds = read_ndjson(&a.seed)?;
    let config = GenConfig {
        seed: a.random_seed,
        count: a.count,
        duplicate_rate: a.duplicate_rate,
        japanese_rate: a.japanese_rate,
        twin_rate: a.twin_rate,
        replaced_rate: a.replaced_rate,
    };
    for (name, rate) in [
        ("--duplicate-rate", config.duplicate_rate),
        ("--japanese-rate", config.japanese_rate),
        ("--twin-rate", config.twin_rate),
        ("--replaced-rate", config.replaced_rate),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&rate),
            "{name} must be between 0 and 1"
        );
    }
    let mut out = BufWriter::new(
        File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?,
    );
    let mut labels = BufWriter::new(
        File::create(&a.labels).with_context(|| format!("creating {}", a.labels.display()))?,
    );
    labels.write_all(b"id,cluster,error\n")?;
    let progress = bar(
        a.count.unwrap_or(seeds.len()) as u64,
        "generate [{elapsed_precise}] {wide_bar} {pos}/{len}",
    );
    let mut failure: Option<std::io::Error> = None;
    let n = synth::generate_each(&seeds, &config, |patient, label| {
        if failure.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut out, &patient)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| {
                writeln!(
                    labels,
                    "{},{},{}",
                    label.id,
                    label.cluster,
                    label.error.as_str()
                )
            });
        if let Err(e) = written {
            failure = Some(e);
        }
        progress.inc(1);
    });
    progress.finish_and_clear();
    if let Some(e) = failure {
        return Err(e).context("writing output");
    }
    out.flush()?;
    labels.flush()?;
    out!(
        "generated {n} Patients from {} seeds into {} (labels in {})",
        seeds.len(),
        a.output.display(),
        a.labels.display()
    );
    Ok(())
}

fn train_on(records: &[Record], model: &mut Model, max_pairs: usize) -> cluster::TrainingReport {
    cluster::train(records, model, &ClusterConfig::default(), max_pairs, 7)
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let mut model = load_model(a.model.as_deref())?;
    let records = read_records(&a.input, ClusterConfig::default().threads)?;
    let started = Instant::now();
    let report = train_on(&records, &mut model, a.max_pairs);
    std::fs::write(&a.output, model.to_json())
        .with_context(|| format!("writing {}", a.output.display()))?;
    for (field, pairs, iterations, share) in &report.runs {
        out!(
            "EM blocked on {field:?}: {pairs} pairs, {iterations} iterations, match share {share:.3}"
        );
    }
    out!(
        "trained on {} records ({} random pairs, prior {:.3e}) in {:.1}s; model in {}",
        records.len(),
        report.random_pairs,
        report.prior,
        started.elapsed().as_secs_f64(),
        a.output.display()
    );
    Ok(())
}

fn cluster_cmd(a: ClusterArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut config = ClusterConfig::default();
    if let Some(t) = a.threads {
        config.threads = t.max(1);
    }
    let records = read_records(&a.input, config.threads)?;
    let read_time = started.elapsed();
    if a.incremental {
        return cluster_incremental(records, &a, read_time);
    }
    let model = match &a.model {
        Some(p) => load_model(Some(p))?,
        None => {
            let mut m = Model::default();
            let spinner = ProgressBar::new_spinner();
            spinner.set_message("training model (EM)");
            spinner.enable_steady_tick(Duration::from_millis(200));
            train_on(&records, &mut m, 1_000_000);
            spinner.finish_and_clear();
            m
        }
    };
    let train_time = started.elapsed() - read_time;
    let progress = bar(
        0,
        "scoring  [{elapsed_precise}] {wide_bar} {pos}/{len} blocks",
    );
    let result = cluster::cluster(&records, &model, &config, &|done: u64, total: u64| {
        progress.set_length(total);
        progress.set_position(done);
    });
    progress.finish_and_clear();
    let mut out = BufWriter::new(
        File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?,
    );
    out.write_all(b"id,cluster\n")?;
    for (r, c) in records.iter().zip(&result.cluster_of) {
        writeln!(out, "{},{}", r.id, records[*c as usize].id)?;
    }
    out.flush()?;
    if let Some(path) = &a.review {
        let mut w = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        w.write_all(b"left,right,probability,reason\n")?;
        for pair in &result.review {
            let id = |i: u32| records[i as usize].id.as_str();
            let reasons: Vec<String> = pair
                .reasons
                .iter()
                .map(|r| match r {
                    ReviewReason::TransitiveChain { left, right } => format!(
                        "transitive_chain: would join {} and {}",
                        id(*left),
                        id(*right)
                    ),
                    other => other.code().to_owned(),
                })
                .collect();
            writeln!(
                w,
                "{},{},{:.6},{}",
                id(pair.left),
                id(pair.right),
                empi::score::probability(pair.weight),
                reasons.join("; ")
            )?;
        }
        w.flush()?;
    }
    let s = &result.stats;
    out!(
        "clustered {} records into {} clusters: {} pairs scored in {} blocks ({} oversized skipped), \
         {} auto-link pairs, {} for review, {} merges refused by the chain guard; \
         read {:.1}s, train {:.1}s, total {:.1}s",
        s.records,
        s.clusters,
        s.pairs_scored,
        s.blocks,
        s.oversized_blocks,
        s.link_pairs,
        s.review_pairs,
        s.refused_merges,
        read_time.as_secs_f64(),
        train_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `empi cluster --incremental`: every record through [`EnterpriseIndex::insert_record`] in
/// file order; the cluster of a record is its enterprise identity at the end.
fn cluster_incremental(
    records: Vec<Record>,
    a: &ClusterArgs,
    read_time: Duration,
) -> anyhow::Result<()> {
    let model = load_model(a.model.as_deref())?;
    let mut index = EnterpriseIndex::new(model, index_config(a.max_candidates, a.small_block));
    let progress = bar(
        records.len() as u64,
        "matching [{elapsed_precise}] {wide_bar} {pos}/{len}",
    );
    let started = Instant::now();
    let mut outcomes = [0usize; 3];
    let mut merged = 0usize;
    let mut ids = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        ids.push(r.id.clone());
        let d = index.insert_record(r)?;
        merged += d.merged.len();
        outcomes[match d.outcome {
            Outcome::Linked => 0,
            Outcome::New => 1,
            Outcome::Review => 2,
        }] += 1;
        if i % 10_000 == 0 {
            progress.set_position(i as u64);
        }
    }
    progress.finish_and_clear();
    let took = started.elapsed();
    let mut out = BufWriter::new(
        File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?,
    );
    out.write_all(b"id,cluster\n")?;
    for id in &ids {
        let e = index
            .enterprise_of(id)
            .with_context(|| format!("record {id} left the index"))?;
        writeln!(out, "{id},{e}")?;
    }
    out.flush()?;
    out!(
        "matched {} records one at a time into {} identities ({} linked, {} new, {} for review; \
         {} identities joined into another by a record matching both) in {:.1}s \
         ({:.0} records/s); read {:.1}s",
        ids.len(),
        index.enterprises(),
        outcomes[0],
        outcomes[1],
        outcomes[2],
        merged,
        took.as_secs_f64(),
        ids.len() as f64 / took.as_secs_f64().max(1e-9),
        read_time.as_secs_f64()
    );
    Ok(())
}

fn evaluate(a: EvaluateArgs) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let clusters = empi::eval::parse_clusters(&read(&a.clusters)?)
        .with_context(|| format!("{}", a.clusters.display()))?;
    let labels = empi::eval::parse_labels(&read(&a.labels)?)
        .with_context(|| format!("{}", a.labels.display()))?;
    let e = empi::eval::evaluate(&clusters, &labels);
    print!("{e}");
    out!(
        "pairwise precision {:.4} recall {:.4} f1 {:.4}",
        e.overall.precision(),
        e.overall.recall(),
        e.overall.f1()
    );
    Ok(())
}

fn explain(a: ExplainArgs) -> anyhow::Result<()> {
    let model = load_model(a.model.as_deref())?;
    let record = |p: &Path| -> anyhow::Result<Record> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", p.display()))?;
        Record::from_patient(&v).with_context(|| format!("{}", p.display()))
    };
    let (left, right) = (record(&a.left)?, record(&a.right)?);
    let score = Scorer::new(&model, None).score(&left, &right);
    out!("{}", serde_json::to_string_pretty(&score)?);
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let seeds = read_ndjson(&a.seed)?;
    let total = a.records + a.queries;
    let started = Instant::now();
    let mut records = Vec::with_capacity(total);
    let config = GenConfig {
        count: Some(total),
        ..GenConfig::default()
    };
    let progress = bar(
        total as u64,
        "generate [{elapsed_precise}] {wide_bar} {pos}/{len}",
    );
    let mut bad = 0usize;
    synth::generate_each(&seeds, &config, |p, _| {
        match Record::from_patient(&p) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
        progress.inc(1);
    });
    progress.finish_and_clear();
    if bad > 0 || records.len() < total {
        bail!("generated {} usable records, wanted {total}", records.len());
    }
    out!(
        "generated {total} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let model = match &a.model {
        Some(p) => load_model(Some(p))?,
        None => {
            let t = Instant::now();
            let mut m = Model::default();
            train_on(&records[..records.len().min(200_000)], &mut m, 1_000_000);
            out!("trained model in {:.1}s", t.elapsed().as_secs_f64());
            m
        }
    };
    let queries = records.split_off(a.records);
    let mut index = EnterpriseIndex::new(model, index_config(a.max_candidates, a.small_block));
    let fill = Instant::now();
    let progress = bar(
        a.records as u64,
        "index    [{elapsed_precise}] {wide_bar} {pos}/{len}",
    );
    for (i, r) in records.into_iter().enumerate() {
        index.insert_record(r)?;
        if i % 10_000 == 0 {
            progress.set_position(i as u64);
        }
    }
    progress.finish_and_clear();
    let fill_time = fill.elapsed();
    out!(
        "filled index: {} records, {} enterprises, in {:.1}s ({:.0} inserts/s incl. matching)",
        index.len(),
        index.enterprises(),
        fill_time.as_secs_f64(),
        index.len() as f64 / fill_time.as_secs_f64()
    );
    let mut latencies = Vec::with_capacity(queries.len());
    let mut outcomes = [0usize; 3];
    for r in queries {
        let t = Instant::now();
        let d = index.insert_record(r)?;
        latencies.push(t.elapsed());
        outcomes[match d.outcome {
            Outcome::Linked => 0,
            Outcome::New => 1,
            Outcome::Review => 2,
        }] += 1;
    }
    latencies.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    out!(
        "incremental match+insert at {} records: n={} p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs \
         (linked {}, new {}, review {})",
        a.records,
        latencies.len(),
        us(percentile(&latencies, 0.5)),
        us(percentile(&latencies, 0.99)),
        us(percentile(&latencies, 1.0)),
        outcomes[0],
        outcomes[1],
        outcomes[2]
    );
    Ok(())
}
