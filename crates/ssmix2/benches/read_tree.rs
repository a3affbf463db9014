//! SS-MIX2 read throughput in files per second: scan a generated tree (100 JAHIS patients,
//! 700 ISO-2022-JP files), choose current versions, read and parse every file.
//!
//! Run with `cargo bench -p ssmix2 --bench read_tree`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hl7v2::generate::{Generator, Style};
use ssmix2::{Change, FileName, current, read_message, scan, store};

fn bench(c: &mut Criterion) {
    let root = std::env::temp_dir().join(format!("renkei-ssmix2-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut g = Generator::new(1, Style::Jahis);
    let mut files = 0u64;
    for i in 0..100 {
        let p = g.person();
        for (j, m) in g.record(&p).into_iter().enumerate() {
            let ts = format!("20260110{:02}{:02}00{:03}", i % 24, j, i);
            let name = FileName::for_message(
                &m.patient_id,
                m.care_date.as_deref(),
                &m.message_type,
                m.order_number.as_deref(),
                &ts,
            )
            .expect("a data type");
            store(&root, &name, &m.bytes).expect("write");
            files += 1;
        }
    }
    let mut group = c.benchmark_group("ssmix2");
    group.throughput(Throughput::Elements(files));
    group.bench_function("scan", |b| {
        b.iter(|| black_box(current(&scan(&root).unwrap().files)))
    });
    group.bench_function("scan+read+parse", |b| {
        b.iter(|| {
            for change in current(&scan(&root).unwrap().files) {
                if let Change::Current(file) = change {
                    black_box(read_message(&file).unwrap());
                }
            }
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench);
criterion_main!(benches);
