//! `renkei bench repetitions`: what one oversized resource costs the node. For each kind of
//! repeated element (identifiers, names, addresses) and each count (1,000 doubling up to
//! `--max`, 64,000 by default), it PUTs one Patient carrying that many repetitions to a fresh
//! store served over loopback HTTP, while two more clients keep writing small Patients and
//! small Observations; it reports the big write's time, its time per repetition (flat when the cost
//! is linear) and the longest wait of each kind of small write made meanwhile (a Patient also
//! waits for the EMPI, which links one Patient at a time). Figures, never assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use server::{AppState, R4Validator, ServerConfig};

use crate::bench::Fresh;

#[derive(Debug, clap::Args)]
pub struct RepetitionsArgs {
    /// The largest repetition count (counts double from 1,000 up to it).
    #[arg(long, default_value_t = 64_000)]
    max: usize,
    /// Which repeated elements to measure.
    #[arg(long, value_delimiter = ',', default_value = "identifier,name,address")]
    kinds: Vec<Kind>,
    /// Measure on PostgreSQL (a throwaway schema in this database) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Write without EMPI linking.
    #[arg(long)]
    no_empi: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Identifier,
    Name,
    Address,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Identifier => "identifier",
            Kind::Name => "name",
            Kind::Address => "address",
        }
    }

    /// A Patient with `n` repetitions of this element (all distinct, as a real bad feed's
    /// would be), plus the few fields every Patient here has.
    fn patient(self, id: &str, n: usize) -> Value {
        let mut p = json!({
            "resourceType": "Patient", "id": id, "gender": "female", "birthDate": "1960-04-01",
            "name": [{"family": "Okada", "given": ["Hanako"]}],
        });
        let items: Vec<Value> = (0..n)
            .map(|i| match self {
                Kind::Identifier => json!({"system": "urn:oid:1.2.392.100495.20.3.51.11311234567", "value": format!("MRN-{i:07}")}),
                Kind::Name => json!({"family": format!("Okada{i}"), "given": [format!("Hanako{i}")]}),
                Kind::Address => json!({"line": [format!("{i} Chome")], "city": "Bunkyo", "postalCode": format!("{:07}", i)}),
            })
            .collect();
        p[self.label()] = Value::Array(items);
        p
    }
}

pub async fn repetitions(a: RepetitionsArgs) -> anyhow::Result<()> {
    let fresh = Fresh::open(a.database_url.as_deref()).await?;
    let backend = fresh.store.backend();
    let mpi = Arc::new(mpi::Mpi::new(
        fresh.store.clone(),
        empi::Model::default(),
        empi::golden::Survivorship::default(),
        !a.no_empi,
    ));
    // The benchmark must reach its largest bodies: the limit is lifted here, not in `serve`.
    let config = ServerConfig {
        max_body_bytes: 1 << 30,
        ..ServerConfig::default()
    };
    let state = AppState::with_empi(mpi, Arc::new(R4Validator), config);
    let server = crate::bench::InProcess::start(state).await?;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    println!(
        "one Patient with N repetitions, PUT over HTTP ({backend}, EMPI {}), while two clients write small Patients and Observations",
        if a.no_empi { "off" } else { "on" }
    );
    println!(
        "{:<11} {:>7} {:>8} {:>9} {:>13} {:>19} {:>23} {:>7}",
        "element",
        "N",
        "body MB",
        "write s",
        "µs/repetition",
        "small Patient ms",
        "small Observation ms",
        "small n"
    );
    let mut serial = 0usize;
    for kind in &a.kinds {
        let mut n = 1000;
        let mut first_per_rep: Option<f64> = None;
        while n <= a.max.max(1000) {
            serial += 1;
            let body = kind.patient(&format!("big{serial}"), n).to_string();
            let size = body.len();
            let url = format!("{base}/Patient/big{serial}");
            let writing = Arc::new(AtomicBool::new(true));
            let small = tokio::spawn(small_writes(
                client.clone(),
                base.clone(),
                serial,
                writing.clone(),
            ));
            let started = Instant::now();
            let response = client
                .put(&url)
                .header("content-type", "application/fhir+json")
                .body(body)
                .send()
                .await
                .context("the big write")?;
            let status = response.status();
            let _ = response.bytes().await;
            let took = started.elapsed();
            writing.store(false, Ordering::Relaxed);
            let waits = small.await??;
            anyhow::ensure!(
                status.is_success(),
                "PUT of {n} {}s answered {status}",
                kind.label()
            );
            let per_rep = took.as_secs_f64() * 1e6 / n as f64;
            first_per_rep.get_or_insert(per_rep);
            println!(
                "{:<11} {:>7} {:>8.2} {:>9.3} {:>13.1} {:>19.1} {:>23.1} {:>7}",
                kind.label(),
                n,
                size as f64 / 1e6,
                took.as_secs_f64(),
                per_rep,
                waits.patient.as_secs_f64() * 1e3,
                waits.observation.as_secs_f64() * 1e3,
                waits.count
            );
            if n * 2 > a.max {
                if let Some(first) = first_per_rep {
                    println!(
                        "{}: time per repetition at {n} is {:.2}× that at 1,000 (1.00× is linear)",
                        kind.label(),
                        per_rep / first
                    );
                }
                break;
            }
            n *= 2;
        }
    }
    server.stop().await?;
    fresh.cleanup().await;
    Ok(())
}

/// The longest waits of the small writes made meanwhile.
#[derive(Debug, Default)]
struct SmallWaits {
    count: usize,
    /// Small Patients wait for the EMPI's linking of the big one as well as for the writer.
    patient: Duration,
    /// Small Observations wait only for the store's writer.
    observation: Duration,
}

/// Two clients, one writing small Patients and one small Observations, each one write after
/// another while `writing` is set (at least one each).
async fn small_writes(
    client: reqwest::Client,
    base: String,
    serial: usize,
    writing: Arc<AtomicBool>,
) -> anyhow::Result<SmallWaits> {
    let patients = tokio::spawn(small_writer(
        client.clone(),
        base.clone(),
        writing.clone(),
        move |n| {
            let id = format!("small{serial}-{n}");
            let body = json!({
                "resourceType": "Patient", "id": id,
                "name": [{"family": "Sato", "given": [format!("Ichiro{n}")]}],
                "birthDate": "1980-01-01"
            });
            (format!("Patient/{id}"), body)
        },
    ));
    let observations = tokio::spawn(small_writer(client, base, writing, move |n| {
        let id = format!("obs{serial}-{n}");
        let body = json!({
            "resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 60 + n % 40, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        });
        (format!("Observation/{id}"), body)
    }));
    let (patients, patient) = patients.await??;
    let (observations, observation) = observations.await??;
    Ok(SmallWaits {
        count: patients + observations,
        patient,
        observation,
    })
}

/// Writes what `make` gives for 0, 1, 2, ... one after another while `writing` is set (at
/// least once); returns how many and the longest.
async fn small_writer(
    client: reqwest::Client,
    base: String,
    writing: Arc<AtomicBool>,
    make: impl Fn(usize) -> (String, Value),
) -> anyhow::Result<(usize, Duration)> {
    // Let the big request reach the server first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut longest = Duration::ZERO;
    let mut count = 0;
    loop {
        let (path, body) = make(count);
        let started = Instant::now();
        let response = client
            .put(format!("{base}/{path}"))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "small write answered {}",
            response.status()
        );
        let _ = response.bytes().await;
        longest = longest.max(started.elapsed());
        count += 1;
        if !writing.load(Ordering::Relaxed) {
            return Ok((count, longest));
        }
    }
}
