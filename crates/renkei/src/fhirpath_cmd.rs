//! `renkei fhirpath`: evaluates one FHIRPath expression over one resource file.
//!
//! Prints the result collection as a JSON array of `{"type", "value"}` objects, one per item in
//! order; `type` is the FHIR type of elements (`date`, `HumanName`, `code`) and the FHIRPath
//! system type otherwise (`boolean`, `integer`, `decimal`, `string`, `date`, `dateTime`,
//! `time`, `Quantity`), as the official test suite names them. An expression that does not
//! parse, fails the static check against the resource's type, or fails to evaluate is
//! reported on standard error with a non-zero exit status.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use fhirpath::check::{self, Options};
use fhirpath::{Environment, Error, Expression};
use serde_json::{Value as Json, json};

/// Arguments of `renkei fhirpath`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The FHIR resource (JSON) to evaluate over; `-` reads standard input.
    #[arg(long, short = 'r', value_name = "FILE.json")]
    resource: PathBuf,
    /// The FHIRPath expression.
    expression: String,
    /// Strict mode: a path starting with another resource type, a non-Boolean iif()
    /// criterion, or an order-dependent function (first(), skip(), [n], ...) on a collection
    /// without a defined order (children(), descendants()) is an error instead of a result.
    #[arg(long)]
    strict: bool,
    /// A variable for the expression, as NAME=JSON (e.g. --var 'limit=5'); repeatable.
    #[arg(long = "var", value_name = "NAME=JSON")]
    variables: Vec<String>,
    /// Print trace() output on standard error.
    #[arg(long)]
    trace: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = if args.resource.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the resource from standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.resource)
            .with_context(|| format!("reading {}", args.resource.display()))?
    };
    let resource: Json = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.resource.display()))?;
    let variables: Vec<(String, Json)> = args
        .variables
        .iter()
        .map(|v| {
            let (name, value) = v
                .split_once('=')
                .with_context(|| format!("--var {v}: expected NAME=JSON"))?;
            let value = serde_json::from_str(value)
                .with_context(|| format!("--var {name}: the value is not JSON"))?;
            Ok((name.to_string(), value))
        })
        .collect::<anyhow::Result<_>>()?;

    let model = fhir::r4();
    let expression = match compile(&args.expression, model, &resource, args.strict) {
        Ok(expression) => expression,
        Err(error) => return Ok(report(&args.expression, &error)),
    };
    let traces = Mutex::new(Vec::new());
    let mut env = Environment::new(model);
    for (name, value) in &variables {
        let items = match value {
            Json::Array(items) => items
                .iter()
                .map(|v| fhirpath::Value::Node(fhirpath::Node::new(v, None)))
                .collect(),
            other => vec![fhirpath::Value::Node(fhirpath::Node::new(other, None))],
        };
        env = env.with_variable(name.clone(), items);
    }
    if args.trace {
        env = env.with_trace(&traces);
    }
    let result = expression.evaluate(&env, &resource);
    if args.trace {
        for (name, items) in traces.lock().map(|t| t.clone()).unwrap_or_default() {
            eprintln!("trace {name}: {items}");
        }
    }
    let result = match result {
        Ok(result) => result,
        Err(error) => return Ok(report(&args.expression, &Error::Eval(error))),
    };
    let items: Vec<Json> = result
        .iter()
        .map(|item| json!({"type": item.type_name(), "value": item.to_json()}))
        .collect();
    out!("{}", serde_json::to_string_pretty(&Json::Array(items))?);
    Ok(ExitCode::SUCCESS)
}

fn compile(
    source: &str,
    model: &dyn fhirpath::ModelInfo,
    resource: &Json,
    strict: bool,
) -> Result<Expression, Error> {
    let expression = Expression::parse(source)?;
    if let Some(resource_type) = resource.get("resourceType").and_then(Json::as_str) {
        let options = Options {
            strict,
            check_ordered_functions: strict,
        };
        check::check(expression.ast(), model, resource_type, options)?;
    }
    Ok(expression)
}

/// Prints the error, with a caret under the offending part when it has a position.
fn report(source: &str, error: &Error) -> ExitCode {
    let mut message = format!("error: {error}\n");
    let span = match error {
        Error::Syntax(e) => Some(e.span),
        Error::Semantic(e) => Some(e.span),
        Error::Eval(_) => None,
    };
    if let Some(span) = span {
        let _ = fhirpath::error::render_span(&mut message, source, span);
    }
    eprint!("{message}");
    ExitCode::from(2)
}
