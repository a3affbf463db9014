//! Behaviour the official suite does not cover: resolving references in Bundles and by type,
//! user variables, trace output, unit-aware comparison of FHIR Quantities, and the honest
//! "not supported" answer for terminology functions.

use std::sync::Mutex;

use fhirpath::check::Options;
use fhirpath::{Environment, EvalError, Expression, Value};
use serde_json::{Value as Json, json};

fn eval(expression: &str, resource: &Json) -> Vec<Json> {
    let expr = Expression::parse(expression).unwrap();
    let env = Environment::new(fhir::r4());
    expr.evaluate(&env, resource)
        .unwrap()
        .iter()
        .map(Value::to_json)
        .collect()
}

#[test]
fn resolve_finds_bundle_entries_by_full_url_and_relative_reference() {
    let bundle = json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}},
            {"fullUrl": "http://example.org/fhir/Observation/o1", "resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                "code": {"text": "x"}, "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}}},
            {"resource": {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "y"}, "subject": {"reference": "Patient/p1"}}}
        ]
    });
    assert_eq!(
        eval(
            "Bundle.entry.resource.ofType(Observation).subject.resolve().gender",
            &bundle
        ),
        vec![json!("female"), json!("female")]
    );
}

#[test]
fn unresolvable_references_still_know_their_type() {
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/123"}, "performer": [{"reference": "http://other.example/fhir/Practitioner/9/_history/2"}]});
    assert_eq!(
        eval(
            "subject.where(resolve() is Patient).reference",
            &observation
        ),
        vec![json!("Patient/123")]
    );
    assert_eq!(
        eval(
            "performer.where(resolve() is Practitioner).exists()",
            &observation
        ),
        vec![json!(true)]
    );
    assert_eq!(
        eval("subject.where(resolve() is Group).exists()", &observation),
        vec![json!(false)]
    );
}

#[test]
fn quantities_compare_across_units() {
    let observation = json!({"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}});
    assert_eq!(eval("value > 70000 'g'", &observation), vec![json!(true)]);
    assert_eq!(eval("value = 72500 'g'", &observation), vec![json!(true)]);
    assert_eq!(
        eval("value.ofType(Quantity).value", &observation),
        vec![json!(72.5)]
    );
}

#[test]
fn user_variables_and_trace() {
    let patient = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}]});
    let expr = Expression::parse("name.given.trace('given').where($this = %wanted)").unwrap();
    let traces = Mutex::new(Vec::new());
    let env = Environment::new(fhir::r4())
        .with_variable("wanted", vec![Value::str("B")])
        .with_trace(&traces);
    let result = expr.evaluate(&env, &patient).unwrap();
    assert_eq!(
        result.iter().map(Value::to_json).collect::<Vec<_>>(),
        vec![json!("B")]
    );
    assert_eq!(
        traces.into_inner().unwrap(),
        vec![("given".to_string(), json!(["A", "B"]))]
    );
}

#[test]
fn undefined_variable_is_an_error() {
    let expr = Expression::parse("%nope").unwrap();
    let err = expr
        .evaluate(
            &Environment::new(fhir::r4()),
            &json!({"resourceType": "Patient"}),
        )
        .unwrap_err();
    assert_eq!(err, EvalError::UndefinedVariable("nope".into()));
}

#[test]
fn terminology_functions_say_they_are_not_supported() {
    let expr =
        Expression::parse("gender.memberOf('http://hl7.org/fhir/ValueSet/administrative-gender')")
            .unwrap();
    let err = expr
        .evaluate(
            &Environment::new(fhir::r4()),
            &json!({"resourceType": "Patient", "gender": "male"}),
        )
        .unwrap_err();
    assert!(matches!(err, EvalError::Unsupported(..)), "{err}");
    assert!(err.to_string().contains("terminology"), "{err}");
}

#[test]
fn compile_checks_against_the_context_type() {
    let model = fhir::r4();
    assert!(
        Expression::compile(
            "Observation.value.ofType(Quantity).value",
            model,
            "Observation",
            Options::default()
        )
        .is_ok()
    );
    let err = Expression::compile(
        "Observation.valueQuantity.value",
        model,
        "Observation",
        Options::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("'valueQuantity' is not an element of Observation"),
        "{err}"
    );
    // Another resource type in a multi-type expression is fine unless strict.
    assert!(
        Expression::compile(
            "Patient.name | Practitioner.name",
            model,
            "Patient",
            Options::default()
        )
        .is_ok()
    );
    let strict = Options {
        strict: true,
        ..Options::default()
    };
    assert!(Expression::compile("Practitioner.name", model, "Patient", strict).is_err());
}

#[test]
fn one_compiled_expression_is_shared_across_threads() {
    let expr = std::sync::Arc::new(Expression::parse("name.given.count()").unwrap());
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let expr = expr.clone();
            std::thread::spawn(move || {
                let patient = json!({"resourceType": "Patient", "name": [{"given": vec!["x"; i]}]});
                let env = Environment::new(fhir::r4());
                expr.evaluate(&env, &patient).unwrap()[0].to_json()
            })
        })
        .collect();
    let counts: Vec<Json> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(counts, vec![json!(0), json!(1), json!(2), json!(3)]);
}

/// `now()` is one instant for the whole evaluation, however often it is asked for (the clock
/// is read at the first call); `today()` and `timeOfDay()` agree with it.
#[test]
fn now_is_one_instant_within_an_evaluation() {
    let patient = json!({"resourceType": "Patient", "id": "p"});
    let expression = "(1 | 2 | 3 | 4 | 5).select(now()).distinct().count() = 1 \
                      and now() = now() \
                      and today().toString() = now().toString().substring(0, 10) \
                      and now().toString().contains(timeOfDay().toString())";
    assert_eq!(eval(expression, &patient), vec![json!(true)]);
}
