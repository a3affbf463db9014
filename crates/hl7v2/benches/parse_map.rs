//! Parse and parse+map throughput over a generated mix (US ADT^A01 and ORU^R01, JAHIS
//! ISO-2022-JP ADT^A08, OUL^R22 and RDE^O11), in messages per second.
//!
//! Run with `cargo bench -p hl7v2 --bench parse_map`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hl7v2::fhir::{MappingOptions, to_transaction_with};
use hl7v2::generate::{Generator, Style};

fn mix() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut us = Generator::new(1, Style::Us);
    let mut jp = Generator::new(2, Style::Jahis);
    for _ in 0..20 {
        let p = us.person();
        out.push(us.adt(&p, "A01").bytes);
        out.push(us.lab_result(&p).bytes);
        let q = jp.person();
        out.push(jp.adt(&q, "A08").bytes);
        out.push(jp.lab_result(&q).bytes);
        out.push(jp.prescription(&q).bytes);
    }
    out
}

fn bench(c: &mut Criterion) {
    let messages = mix();
    let options = MappingOptions::with_utc_offset("+09:00").unwrap();
    let mut group = c.benchmark_group("hl7v2");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(hl7v2::parse(black_box(m)).unwrap());
            }
        })
    });
    group.bench_function("parse+map", |b| {
        b.iter(|| {
            for m in &messages {
                let parsed = hl7v2::parse(black_box(m)).unwrap();
                black_box(to_transaction_with(&parsed, &options).unwrap());
            }
        })
    });
    let parsed: Vec<_> = messages.iter().map(|m| hl7v2::parse(m).unwrap()).collect();
    group.bench_function("structure", |b| {
        b.iter(|| {
            for m in &parsed {
                black_box(hl7v2::structure::structure(m).unwrap());
            }
        })
    });
    group.bench_function("encode", |b| {
        b.iter(|| {
            for m in &parsed {
                black_box(m.encode().unwrap());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
