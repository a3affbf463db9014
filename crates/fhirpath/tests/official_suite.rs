//! Runs HL7's official FHIRPath test suite for R4 (`../shared/fhirpath/tests-fhir-r4.xml`,
//! inputs in `../shared/fhirpath/input/`) and prints `N passed, N failed`.
//!
//! Every test must pass except those listed, with the reason, in `official-skip.txt`.
//! A test marked `invalid` passes when parsing, checking or evaluating fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fhirpath::check::Options;
use fhirpath::{Environment, Expression, ModelInfo, Value, check};
use serde_json::Value as Json;

struct Case {
    name: String,
    input: Option<String>,
    expression: String,
    invalid: bool,
    strict: bool,
    check_ordered: bool,
    predicate: bool,
    outputs: Vec<(Option<String>, String)>,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fhirpath")
}

fn load_cases(xml: &str) -> Vec<Case> {
    let doc = roxmltree::Document::parse(xml).expect("the suite is well-formed XML");
    let mut cases = Vec::new();
    for (i, test) in doc
        .descendants()
        .filter(|n| n.has_tag_name("test"))
        .enumerate()
    {
        let Some(expression) = test.children().find(|n| n.has_tag_name("expression")) else {
            continue;
        };
        let outputs = test
            .children()
            .filter(|n| n.has_tag_name("output"))
            .map(|o| {
                (
                    o.attribute("type").map(str::to_string),
                    o.text().unwrap_or_default().to_string(),
                )
            })
            .collect();
        cases.push(Case {
            name: test
                .attribute("name")
                .map_or_else(|| format!("unnamed-{i}"), str::to_string),
            input: test
                .attribute("inputfile")
                .map(|f| f.replace(".xml", ".json")),
            expression: expression.text().unwrap_or_default().to_string(),
            invalid: expression.attribute("invalid").is_some(),
            strict: test.attribute("mode") == Some("strict")
                || expression.attribute("mode") == Some("strict"),
            check_ordered: test.attribute("checkOrderedFunctions") == Some("true"),
            predicate: test.attribute("predicate") == Some("true"),
            outputs,
        });
    }
    cases
}

/// The string form of a result item, comparable with the suite's `<output>` text.
fn render(value: &Value<'_>) -> String {
    match value {
        Value::Quantity(q) => q.to_string(),
        Value::Node(_) if value.to_system().is_none() => value.to_json().to_string(),
        other => other
            .to_string_value()
            .map(|s| s.into_owned())
            .unwrap_or_else(|| other.to_json().to_string()),
    }
}

fn same_type(expected: &str, value: &Value<'_>) -> bool {
    let actual = value.type_name();
    actual == expected
        || matches!(value, Value::Time(_)) && expected == "time"
        || (expected == "Quantity" && matches!(value.to_system(), Some(Value::Quantity(_))))
}

fn run_case(
    case: &Case,
    model: &dyn ModelInfo,
    inputs: &HashMap<String, Json>,
) -> Result<(), String> {
    let resource = case.input.as_ref().map(|f| &inputs[f]);
    let context_type = resource
        .and_then(|r| r.get("resourceType"))
        .and_then(Json::as_str)
        .unwrap_or("");
    let outcome = (|| -> Result<Vec<(String, bool)>, String> {
        let expr = Expression::parse(&case.expression).map_err(|e| e.to_string())?;
        let options = Options {
            strict: case.strict,
            check_ordered_functions: case.check_ordered,
        };
        check::check(expr.ast(), model, context_type, options).map_err(|e| e.to_string())?;
        let env = Environment::new(model);
        let result = match resource {
            Some(r) => expr.evaluate(&env, r),
            None => expr.evaluate_on(&env, Value::Boolean(false), Vec::new()),
        }
        .map_err(|e| e.to_string())?;
        if case.predicate {
            return Ok(vec![(
                Value::Boolean(!result.is_empty())
                    .to_string_value()
                    .unwrap()
                    .into_owned(),
                true,
            )]);
        }
        Ok(result
            .iter()
            .zip(
                case.outputs
                    .iter()
                    .map(|(t, _)| t.clone())
                    .chain(std::iter::repeat(None)),
            )
            .map(|(v, t)| (render(v), t.is_none_or(|t| same_type(&t, v))))
            .collect())
    })();
    match (outcome, case.invalid) {
        (Err(_), true) => Ok(()),
        (Err(e), false) => Err(format!("unexpected error: {e}")),
        (Ok(got), true) => Err(format!("expected an error, got {got:?}")),
        (Ok(got), false) => {
            let expected: Vec<String> = case
                .outputs
                .iter()
                .map(|(_, text)| {
                    text.trim_start_matches('@')
                        .trim_start_matches('T')
                        .to_string()
                })
                .collect();
            let rendered: Vec<String> = got
                .iter()
                .map(|(s, _)| s.trim_start_matches('T').to_string())
                .collect();
            if rendered != expected {
                return Err(format!("expected {expected:?}, got {rendered:?}"));
            }
            if let Some(i) = got.iter().position(|(_, type_ok)| !type_ok) {
                return Err(format!(
                    "item {i}: type differs from {:?}",
                    case.outputs[i].0
                ));
            }
            Ok(())
        }
    }
}

fn skip_list() -> HashMap<String, String> {
    let text = include_str!("official-skip.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(name, reason)| (name.trim().to_string(), reason.trim().to_string()))
        .collect()
}

#[test]
fn official_fhirpath_suite_r4() {
    let dir = suite_dir();
    let xml = std::fs::read_to_string(dir.join("tests-fhir-r4.xml"))
        .expect("../shared/fhirpath is present");
    let cases = load_cases(&xml);
    let mut inputs = HashMap::new();
    for entry in std::fs::read_dir(dir.join("input")).unwrap() {
        let path = entry.unwrap().path();
        let json: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        inputs.insert(
            path.file_name().unwrap().to_string_lossy().into_owned(),
            json,
        );
    }
    let model = fhir::r4();
    let skips = skip_list();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        if skips.contains_key(&case.name) {
            skipped += 1;
            continue;
        }
        match run_case(case, model, &inputs) {
            Ok(()) => passed += 1,
            Err(why) => {
                failed += 1;
                failures.push(format!(
                    "{}: {}\n    {}",
                    case.name,
                    case.expression.trim(),
                    why
                ));
            }
        }
    }
    for f in &failures {
        eprintln!("FAIL {f}");
    }
    println!(
        "{passed} passed, {failed} failed, {skipped} skipped (of {} tests)",
        cases.len()
    );
    assert!(
        skips.len() * 50 < cases.len(),
        "the skip-list must stay under 2% of the suite"
    );
    assert_eq!(failed, 0, "{failed} official FHIRPath tests failed");
}
