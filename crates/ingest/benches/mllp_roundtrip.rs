//! MLLP round trips per second: 8 concurrent connections over 127.0.0.1, each sending its
//! share of an ADT^A01 + ORU^R01 mix and waiting for each ACK, against the in-memory sink
//! (parse, de-duplicate, map to FHIR, commit, ACK). The durable figure comes with the store.
//!
//! Run with `cargo bench -p ingest --bench mllp_roundtrip`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hl7v2::generate::{Generator, Style};
use ingest::hl7::memory::MemorySink;
use ingest::hl7::{Ingest, Settings};
use mllp::{Client, Config};
use tokio::net::TcpListener;

const CONNECTIONS: usize = 8;
const PER_CONNECTION: usize = 50;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(Ingest::new(MemorySink::default(), Settings::default()));
        tokio::spawn(mllp::run(
            listener,
            handler,
            Config::default(),
            std::future::pending::<()>(),
        ));
        addr
    });
    let mut group = c.benchmark_group("mllp");
    group.throughput(Throughput::Elements((CONNECTIONS * PER_CONNECTION) as u64));
    group.sample_size(20);
    let mut seed = 0u64;
    group.bench_function("8 connections, ADT+ORU, in-memory sink", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Fresh messages every iteration: re-sends would only measure the replay path.
                let batches: Vec<Vec<Vec<u8>>> = (0..CONNECTIONS)
                    .map(|_| {
                        seed += 1;
                        let mut g = Generator::new(seed, Style::Us);
                        (0..PER_CONNECTION)
                            .map(|i| {
                                let p = g.person();
                                if i % 2 == 0 {
                                    g.adt(&p, "A01").bytes
                                } else {
                                    g.lab_result(&p).bytes
                                }
                            })
                            .collect()
                    })
                    .collect();
                total += rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = batches
                        .into_iter()
                        .map(|batch| {
                            tokio::spawn(async move {
                                let mut client = Client::connect(addr).await.unwrap();
                                for m in batch {
                                    client.request(&m).await.unwrap().expect("an ACK");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed()
                });
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
