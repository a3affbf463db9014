//! Every search-parameter expression of FHIR R4 parses, passes the static check for each of
//! its base types, and evaluates without error over the Synthea resources in
//! `../shared/data/synthea-10` (the store extracts its search indexes this way).

use std::path::Path;

use fhirpath::check::Options;
use fhirpath::{Environment, Expression, check};
use serde_json::Value as Json;

fn synthea_resources() -> Vec<Json> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-10");
    let mut resources = Vec::new();
    for entry in std::fs::read_dir(dir).expect("../shared/data/synthea-10 is present") {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "log.ndjson") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        resources.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Json>(l).unwrap()),
        );
    }
    resources
}

#[test]
fn every_search_parameter_expression_parses_and_checks() {
    let defs = fhir::r4();
    let mut checked = 0;
    let mut failures = Vec::new();
    for param in defs.all_search_params() {
        for base in &param.base {
            let Some(source) = param.expression_for(base) else {
                continue;
            };
            match Expression::parse(source) {
                Err(e) => failures.push(format!("{base}.{}: {e}\n  {source}", param.code)),
                Ok(expr) => {
                    if let Err(e) = check::check(expr.ast(), defs, base, Options::default()) {
                        failures.push(format!("{base}.{}: {e}\n  {source}", param.code));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1300, "only {checked} expressions found");
    assert!(
        failures.is_empty(),
        "{} of {checked} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn search_parameters_evaluate_over_synthea() {
    let defs = fhir::r4();
    let resources = synthea_resources();
    let env = Environment::new(defs);
    let mut evaluated = 0;
    let mut non_empty = 0;
    let mut failures = Vec::new();
    let mut compiled: std::collections::HashMap<String, Vec<(String, Expression)>> =
        Default::default();
    for resource in &resources {
        let rtype = resource["resourceType"].as_str().unwrap().to_string();
        let exprs = compiled.entry(rtype.clone()).or_insert_with(|| {
            defs.search_params(&rtype)
                .filter_map(|p| {
                    Some((
                        p.code.clone(),
                        Expression::parse(p.expression_for(&rtype)?).ok()?,
                    ))
                })
                .collect()
        });
        for (code, expr) in exprs.iter() {
            match expr.evaluate(&env, resource) {
                Ok(result) => {
                    evaluated += 1;
                    non_empty += usize::from(!result.is_empty());
                }
                Err(e) => failures.push(format!("{rtype}.{code} on {}: {e}", resource["id"])),
            }
        }
    }
    failures.dedup();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
    assert!(
        non_empty * 4 > evaluated / 10,
        "suspiciously few results: {non_empty} of {evaluated}"
    );
    println!("{evaluated} evaluations, {non_empty} non-empty");
}
