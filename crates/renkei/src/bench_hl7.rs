//! `renkei bench mllp` and `renkei bench ssmix2`: HL7 v2 ingestion figures against the real
//! store (a fresh SQLite file, or a throwaway PostgreSQL schema with `--database-url`).
//!
//! `mllp` serves MLLP on a loopback port with the store sink (durable ACK: `AA` is sent after
//! the commit) and drives it from concurrent connections, each sending one message and
//! waiting for its ACK; it reports messages/s and the ACK latency percentiles. `ssmix2`
//! imports a generated tree and reports files/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hl7v2::generate::{Generator, Style};
use ingest::hl7::{Ingest, Settings};
use ingest::ssmix2::Importer;

use crate::bench::Fresh;
use crate::import_ssmix2::{Terminal, sink, summary_line};

#[derive(Debug, clap::Args)]
pub struct MllpArgs {
    /// Messages to send (half ADT^A01/A08, half ORU^R01).
    #[arg(long, default_value_t = 4000)]
    messages: usize,
    /// Concurrent MLLP connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measure on PostgreSQL (a throwaway schema in this database) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Write Patients without EMPI linking (as `serve --no-empi`), to tell the linking's share
    /// of the time from the store's.
    #[arg(long)]
    no_empi: bool,
    /// Runs, each on a fresh store; with more than one, a last line gives the median and the
    /// range (this machine's msg/s moves by a third between runs of one binary).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

/// What one run measured.
struct Round {
    messages_per_second: f64,
    /// Process CPU (server and senders) per message, in ms; `None` off Linux.
    cpu_ms_per_message: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct Ssmix2Args {
    /// Generated patients (seven files each).
    #[arg(long, default_value_t = 300)]
    patients: usize,
    /// Measure on PostgreSQL (a throwaway schema in this database) instead of SQLite.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// ADT and ORU messages for distinct patients, US style (ASCII, v2.5.1).
fn messages(n: usize) -> Vec<Vec<u8>> {
    let mut g = Generator::new(42, Style::Us);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = g.person();
        let event = if out.len() % 4 == 0 { "A01" } else { "A08" };
        out.push(g.adt(&p, event).bytes);
        out.push(g.lab_result(&p).bytes);
    }
    out.truncate(n);
    out
}

pub async fn mllp(a: MllpArgs) -> anyhow::Result<()> {
    let mut rounds = Vec::with_capacity(a.rounds as usize);
    for _ in 0..a.rounds {
        rounds.push(mllp_round(&a).await?);
    }
    if rounds.len() > 1 {
        println!("{}", rounds_summary(&rounds));
    }
    Ok(())
}

/// `N rounds: median X (lo–hi) msg/s; CPU median Y (lo–hi) ms a message`.
fn rounds_summary(rounds: &[Round]) -> String {
    let spread = |mut v: Vec<f64>, digits: usize| {
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        format!(
            "{median:.digits$} ({:.digits$}–{:.digits$})",
            v[0],
            v[v.len() - 1]
        )
    };
    let rates = spread(rounds.iter().map(|r| r.messages_per_second).collect(), 0);
    let cpu: Option<Vec<f64>> = rounds.iter().map(|r| r.cpu_ms_per_message).collect();
    let cpu = cpu.map_or(String::new(), |c| {
        format!("; CPU median {} ms a message", spread(c, 2))
    });
    format!("{} rounds: median {rates} msg/s{cpu}", rounds.len())
}

async fn mllp_round(a: &MllpArgs) -> anyhow::Result<Round> {
    let fresh = Fresh::open(a.database_url.as_deref()).await?;
    let backend = fresh.store.backend();
    let store = if a.no_empi {
        fresh.store.clone()
    } else {
        fresh.linked()
    };
    // The generated US messages carry their offsets; MSH-7 aside, nothing is placed.
    let settings = Settings {
        mapping: hl7v2::fhir::MappingOptions::with_utc_offset("-05:00")?,
        ..Settings::default()
    };
    let handler = Arc::new(Ingest::new(sink(store), settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mllp::run(
        listener,
        handler,
        mllp::Config::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let all = messages(a.messages);
    let connections = a.connections.max(1);
    let per = all.len().div_ceil(connections);
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for chunk in all.chunks(per.max(1)) {
        let chunk = chunk.to_vec();
        clients.spawn(async move {
            let mut client = mllp::Client::connect(addr).await?;
            let mut latencies = Vec::with_capacity(chunk.len());
            let mut not_aa = 0usize;
            for m in chunk {
                let t = Instant::now();
                let reply = client.request(&m).await?;
                latencies.push(t.elapsed());
                let ack = reply.ok_or_else(|| anyhow::anyhow!("connection closed without ACK"))?;
                if !String::from_utf8_lossy(&ack).contains("MSA|AA") {
                    not_aa += 1;
                }
            }
            anyhow::Ok((latencies, not_aa))
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(all.len());
    let mut not_aa = 0;
    while let Some(done) = clients.join_next().await {
        let (l, n) = done??;
        latencies.extend(l);
        not_aa += n;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| crate::bench::quantile_ms(&latencies, p);
    // Steadier than msg/s on a shared machine: what the work cost, whatever else ran.
    let cpu_ms_per_message = match (cpu_before, process_cpu_seconds()) {
        (Some(before), Some(after)) => Some((after - before) * 1e3 / latencies.len().max(1) as f64),
        _ => None,
    };
    let cpu = cpu_ms_per_message.map_or(String::new(), |c| {
        format!("; CPU {c:.2} ms a message (server and senders, one process)")
    });
    let messages_per_second = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "mllp {backend}{}: {} messages (ADT+ORU) over {connections} connections in {:.2} s = {:.0} msg/s; ACK latency p50 {:.2} ms, p99 {:.2} ms; {not_aa} not AA{cpu}",
        if a.no_empi { " (no EMPI)" } else { "" },
        latencies.len(),
        elapsed.as_secs_f64(),
        messages_per_second,
        pct(0.5),
        pct(0.99),
    );
    let _ = stop.send(());
    server.await??;
    fresh.cleanup().await;
    Ok(Round {
        messages_per_second,
        cpu_ms_per_message,
    })
}

/// User and system CPU time of this process so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Its `utime` and `stime` fields count `USER_HZ` ticks, 100 a second on every
/// Linux the kernel's ABI supports.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // Fields 14 (utime) and 15 (stime); `fields[0]` is field 3.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

pub async fn ssmix2(a: Ssmix2Args) -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("renkei-ssmix2-{}", uuid::Uuid::new_v4()));
    let patients = a.patients;
    let tree = root.clone();
    let written =
        tokio::task::spawn_blocking(move || ssmix2::write_sample_tree(&tree, patients, 7))
            .await??;
    let fresh = Fresh::open(a.database_url.as_deref()).await?;
    let backend = fresh.store.backend();
    // The generated tree is Japan Standard Time, whatever the host's zone.
    let mapping = Arc::new(hl7v2::fhir::MappingOptions::with_utc_offset("+09:00")?);
    // As many files in flight as `renkei import --ssmix2` takes by default.
    let mut importer = Importer::new(sink(fresh.linked()), &root, mapping, 16);
    let s = importer.pass(&mut Terminal::new(false)).await?;
    println!(
        "ssmix2 {backend}: {} files written, import {}",
        written.len(),
        summary_line(&s)
    );
    fresh.cleanup().await;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Round, rounds_summary};

    fn round(rate: f64, cpu: Option<f64>) -> Round {
        Round {
            messages_per_second: rate,
            cpu_ms_per_message: cpu,
        }
    }

    #[test]
    fn summary_gives_the_median_and_the_range() {
        let odd = [
            round(500.0, Some(2.5)),
            round(300.0, Some(3.0)),
            round(410.0, Some(2.0)),
        ];
        assert_eq!(
            rounds_summary(&odd),
            "3 rounds: median 410 (300–500) msg/s; CPU median 2.50 (2.00–3.00) ms a message"
        );
        let even = [round(400.0, None), round(300.0, Some(2.0))];
        assert_eq!(
            rounds_summary(&even),
            "2 rounds: median 350 (300–400) msg/s"
        );
    }
}
