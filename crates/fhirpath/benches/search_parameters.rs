//! Benchmark: evaluating the R4 search-parameter expressions over the Synthea resources in
//! `../shared/data/synthea-10` (what the store does on every write to extract its indexes).
//!
//! Reports throughput in expressions evaluated per second. Run with
//! `cargo bench -p fhirpath --bench search_parameters`.

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirpath::{Environment, Expression};
use serde_json::Value as Json;

struct Workload {
    /// Each resource with the compiled expressions of its type's search parameters.
    items: Vec<(Json, Vec<Expression>)>,
    evaluations: u64,
}

fn workload() -> Workload {
    let defs = fhir::r4();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-10");
    let mut compiled: std::collections::HashMap<String, Vec<Expression>> = Default::default();
    let mut items = Vec::new();
    let mut evaluations = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("../shared/data/synthea-10")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files.into_iter().filter(|p| !p.ends_with("log.ndjson")) {
        for line in std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let resource: Json = serde_json::from_str(line).unwrap();
            let rtype = resource["resourceType"].as_str().unwrap().to_string();
            let exprs = compiled
                .entry(rtype.clone())
                .or_insert_with(|| {
                    defs.search_params(&rtype)
                        .filter_map(|p| Expression::parse(p.expression_for(&rtype)?).ok())
                        .collect()
                })
                .clone();
            evaluations += exprs.len() as u64;
            items.push((resource, exprs));
        }
    }
    Workload { items, evaluations }
}

fn search_parameters(c: &mut Criterion) {
    let workload = workload();
    let env = Environment::new(fhir::r4());
    let mut group = c.benchmark_group("search-parameters");
    group.throughput(Throughput::Elements(workload.evaluations));
    group.sample_size(10);
    group.bench_function("synthea-10/all-r4-expressions", |b| {
        b.iter(|| {
            let mut items = 0usize;
            for (resource, exprs) in &workload.items {
                for expr in exprs {
                    items += expr.evaluate(&env, resource).map(|r| r.len()).unwrap_or(0);
                }
            }
            items
        })
    });
    group.finish();
}

criterion_group!(benches, search_parameters);
criterion_main!(benches);
