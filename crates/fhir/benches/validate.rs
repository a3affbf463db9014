//! How long structural validation takes: on every Synthea-10 resource (throughput per
//! resource) and on one typical resource of a few types; prints the one-off cost of first use. Reads `../shared/data/synthea-10`.
//!
//! Run with `cargo bench -p fhir --bench validate`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

fn synthea(kind: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/synthea-10")
        .join(format!("{kind}.000.ndjson"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect()
}

fn validate(c: &mut Criterion) {
    let kinds = [
        "AllergyIntolerance",
        "Condition",
        "Device",
        "DocumentReference",
        "Encounter",
        "Immunization",
        "Location",
        "MedicationRequest",
        "Organization",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
    ];
    let all: Vec<Value> = kinds.iter().flat_map(|k| synthea(k)).collect();
    // First use parses the embedded tables and compiles the regexes: once per process.
    let start = std::time::Instant::now();
    fhir::validate_resource(&all[0]).expect("valid");
    println!(
        "first use (parse tables, compile regexes): {:?}",
        start.elapsed()
    );

    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Elements(all.len() as u64));
    group.bench_function("synthea-10 all resources", |b| {
        b.iter(|| {
            for resource in &all {
                black_box(fhir::validate_resource(black_box(resource)).is_ok());
            }
        })
    });
    group.finish();

    for kind in [
        "Patient",
        "Encounter",
        "MedicationRequest",
        "DocumentReference",
    ] {
        let resource = synthea(kind).swap_remove(0);
        c.bench_function(&format!("validate {kind}"), |b| {
            b.iter(|| fhir::validate_resource(black_box(&resource)).is_ok())
        });
    }
}

criterion_group!(benches, validate);
criterion_main!(benches);
