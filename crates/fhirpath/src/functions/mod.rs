//! The FHIRPath function library: existence, filtering and projection, subsetting,
//! combining, conversion, string, math, tree navigation, utility, aggregate and the FHIR
//! extensions (`extension()`, `hasValue()`, `resolve()`, ...).
//!
//! Functions whose arguments are per-item expressions (`where`, `select`, `all`, `repeat`,
//! `exists`, `aggregate`, `sort`, `iif`, `trace`) evaluate them with `$this` bound to each
//! item; all others evaluate their arguments once, against the outer `$this`.

mod conversion;
mod math;
mod resolve;
mod strings;

use conversion::{to_boolean, to_date, to_datetime, to_decimal, to_integer, to_quantity, to_time};
use math::{boundary, math1, math2, number};
use resolve::resolve;
use strings::{codec, html_is_safe, with_regex};

use std::borrow::Cow;

use serde_json::Value as Json;

use crate::ast::{Expr, ExprKind, UnaryOp};
use crate::error::EvalError;
use crate::eval::{Evaluator, Result, Scope, singleton, to_logic, union};
use crate::temporal::{Precision, TemporalKind};
use crate::value::{self, Collection, Value};

fn arity(name: &str, args: &[Expr], min: usize, max: usize, expected: &'static str) -> Result<()> {
    if args.len() < min || args.len() > max {
        return Err(EvalError::Arity {
            function: name.to_string(),
            expected,
            got: args.len(),
        });
    }
    Ok(())
}

fn boolean<'a>(b: bool) -> Result<Collection<'a>> {
    Ok(vec![Value::Boolean(b)])
}

fn maybe<'a>(v: Option<Value<'a>>) -> Result<Collection<'a>> {
    Ok(v.into_iter().collect())
}

/// Calls function `name` on `input`.
pub(crate) fn call<'a>(
    ev: &Evaluator<'_, 'a>,
    name: &str,
    input: &[Value<'a>],
    args: &'a [Expr],
    scope: &Scope<'_, 'a>,
) -> Result<Collection<'a>> {
    let arg = |i: usize| ev.eval(&args[i], scope.this, scope);
    let n = args.len();
    macro_rules! args {
        ($count:expr) => {
            arity(name, args, $count, $count, stringify!($count))?
        };
        ($min:expr, $max:expr) => {
            arity(
                name,
                args,
                $min,
                $max,
                concat!(stringify!($min), " to ", stringify!($max)),
            )?
        };
    }
    match name {
        // --- existence
        "empty" => {
            args!(0);
            boolean(input.is_empty())
        }
        "exists" => {
            args!(0, 1);
            if n == 0 {
                return boolean(!input.is_empty());
            }
            for (i, item) in input.iter().enumerate() {
                if criterion(ev, &args[0], item, i, scope, name)? == Some(true) {
                    return boolean(true);
                }
            }
            boolean(false)
        }
        "all" => {
            args!(1);
            for (i, item) in input.iter().enumerate() {
                if criterion(ev, &args[0], item, i, scope, name)? != Some(true) {
                    return boolean(false);
                }
            }
            boolean(true)
        }
        "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
            args!(0);
            let mut bools = Vec::with_capacity(input.len());
            for item in input {
                match item.to_system() {
                    Some(Value::Boolean(b)) => bools.push(b),
                    _ => return Err(EvalError::typ(name, "every item must be a Boolean")),
                }
            }
            boolean(match name {
                "allTrue" => bools.iter().all(|b| *b),
                "anyTrue" => bools.iter().any(|b| *b),
                "allFalse" => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            })
        }
        "subsetOf" | "supersetOf" => {
            args!(1);
            let other = arg(0)?;
            let (small, big) = if name == "subsetOf" {
                (input, &other[..])
            } else {
                (&other[..], input)
            };
            boolean(
                small
                    .iter()
                    .all(|x| big.iter().any(|y| value::equals(x, y) == Some(true))),
            )
        }
        "count" => {
            args!(0);
            Ok(vec![Value::Integer(input.len() as i64)])
        }
        "distinct" => {
            args!(0);
            Ok(union(input.to_vec(), Vec::new()))
        }
        "isDistinct" => {
            args!(0);
            boolean(union(input.to_vec(), Vec::new()).len() == input.len())
        }
        // --- filtering and projection
        "where" => {
            args!(1);
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                if criterion(ev, &args[0], item, i, scope, name)? == Some(true) {
                    out.push(item.clone());
                }
            }
            Ok(out)
        }
        "select" => {
            args!(1);
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(per_item(ev, &args[0], item, i, scope)?);
            }
            Ok(out)
        }
        "repeat" => {
            args!(1);
            let mut out: Collection<'a> = Vec::new();
            let mut queue: Collection<'a> = input.to_vec();
            while !queue.is_empty() {
                let mut next = Vec::new();
                for (i, item) in queue.iter().enumerate() {
                    for found in per_item(ev, &args[0], item, i, scope)? {
                        if !out.iter().any(|o| value::equals(o, &found) == Some(true)) {
                            out.push(found.clone());
                            next.push(found);
                        }
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        "ofType" => {
            args!(1);
            let (namespace, type_name) = type_argument(&args[0], name)?;
            ev.check_type_name(namespace, type_name, name)?;
            Ok(input
                .iter()
                .filter(|v| value::is_type(v, namespace, type_name, ev.model(), true))
                .cloned()
                .collect())
        }
        "as" if ev.env.filtering_as && input.len() > 1 => {
            args!(1);
            let (namespace, type_name) = type_argument(&args[0], name)?;
            ev.check_type_name(namespace, type_name, name)?;
            Ok(input
                .iter()
                .filter(|v| value::is_type(v, namespace, type_name, ev.model(), true))
                .cloned()
                .collect())
        }
        "is" | "as" => {
            args!(1);
            let (namespace, type_name) = type_argument(&args[0], name)?;
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            ev.check_type_name(namespace, type_name, name)?;
            let matches = value::is_type(item, namespace, type_name, ev.model(), name == "as");
            if name == "is" {
                boolean(matches)
            } else {
                Ok(if matches {
                    vec![item.clone()]
                } else {
                    Vec::new()
                })
            }
        }
        // --- subsetting
        "single" => {
            args!(0);
            Ok(singleton(input, name)?.cloned().into_iter().collect())
        }
        "first" => {
            args!(0);
            Ok(input.first().cloned().into_iter().collect())
        }
        "last" => {
            args!(0);
            Ok(input.last().cloned().into_iter().collect())
        }
        "tail" => {
            args!(0);
            Ok(input.iter().skip(1).cloned().collect())
        }
        "skip" | "take" => {
            args!(1);
            let count = integer_arg(&arg(0)?, name)?.unwrap_or(0);
            let count = usize::try_from(count.max(0)).unwrap_or(usize::MAX);
            Ok(if name == "skip" {
                input.iter().skip(count).cloned().collect()
            } else {
                input.iter().take(count).cloned().collect()
            })
        }
        "intersect" => {
            args!(1);
            let other = arg(0)?;
            let common = input
                .iter()
                .filter(|x| other.iter().any(|y| value::equals(x, y) == Some(true)))
                .cloned()
                .collect();
            Ok(union(common, Vec::new()))
        }
        "exclude" => {
            args!(1);
            let other = arg(0)?;
            Ok(input
                .iter()
                .filter(|x| !other.iter().any(|y| value::equals(x, y) == Some(true)))
                .cloned()
                .collect())
        }
        // --- combining
        "union" => {
            args!(1);
            Ok(union(input.to_vec(), arg(0)?))
        }
        "combine" => {
            args!(1);
            let mut out = input.to_vec();
            out.extend(arg(0)?);
            Ok(out)
        }
        // --- conversion
        "iif" => {
            args!(2, 3);
            if input.len() > 1 {
                return Err(EvalError::typ(
                    name,
                    "iif() applies to a single item or none",
                ));
            }
            let this_scope = Scope {
                this: input,
                ..*scope
            };
            let condition = ev.eval(&args[0], input, &this_scope)?;
            let condition = match singleton(&condition, name)? {
                None => false,
                Some(v) => match v.to_system() {
                    Some(Value::Boolean(b)) => b,
                    _ => return Err(EvalError::typ(name, "the criterion must be a Boolean")),
                },
            };
            if condition {
                ev.eval(&args[1], input, &this_scope)
            } else if n == 3 {
                ev.eval(&args[2], input, &this_scope)
            } else {
                Ok(Vec::new())
            }
        }
        "toBoolean" | "convertsToBoolean" => convert(name, input, args, to_boolean),
        "toInteger" | "convertsToInteger" => convert(name, input, args, to_integer),
        "toDecimal" | "convertsToDecimal" => convert(name, input, args, to_decimal),
        "toString" | "convertsToString" => convert(name, input, args, |v| match v {
            Value::Node(n) if n.is_object() => None,
            _ => v.to_string_value().map(Value::String),
        }),
        "toDate" | "convertsToDate" => convert(name, input, args, to_date),
        "toDateTime" | "convertsToDateTime" => convert(name, input, args, to_datetime),
        "toTime" | "convertsToTime" => convert(name, input, args, to_time),
        "toQuantity" | "convertsToQuantity" => {
            args!(0, 1);
            let unit = if n == 1 {
                string_arg(&arg(0)?, name)?
            } else {
                None
            };
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            let quantity = to_quantity(item).and_then(|q| match &unit {
                Some(unit) => q.convert(unit),
                None => Some(q),
            });
            if name == "toQuantity" {
                maybe(quantity.map(Value::Quantity))
            } else {
                boolean(quantity.is_some())
            }
        }
        // --- strings
        "indexOf" => string_fn(name, input, |s| {
            args!(1);
            let Some(sub) = string_arg(&arg(0)?, name)? else {
                return Ok(None);
            };
            Ok(Some(Value::Integer(match s.find(sub.as_ref()) {
                Some(byte) => s[..byte].chars().count() as i64,
                None => -1,
            })))
        }),
        "substring" => string_fn(name, input, |s| {
            args!(1, 2);
            let Some(start) = integer_arg(&arg(0)?, name)? else {
                return Ok(None);
            };
            let length = if n == 2 {
                integer_arg(&arg(1)?, name)?
            } else {
                None
            };
            let chars: Vec<char> = s.chars().collect();
            if start < 0 || start as usize >= chars.len() {
                return Ok(None);
            }
            let end = match length {
                Some(l) => (start.saturating_add(l.max(0)) as usize).min(chars.len()),
                None => chars.len(),
            };
            Ok(Some(Value::String(Cow::Owned(
                chars[start as usize..end].iter().collect(),
            ))))
        }),
        "startsWith" | "endsWith" | "contains" => string_fn(name, input, |s| {
            args!(1);
            let Some(sub) = string_arg(&arg(0)?, name)? else {
                return Ok(None);
            };
            Ok(Some(Value::Boolean(match name {
                "startsWith" => s.starts_with(sub.as_ref()),
                "endsWith" => s.ends_with(sub.as_ref()),
                _ => s.contains(sub.as_ref()),
            })))
        }),
        "upper" | "lower" | "trim" | "length" | "toChars" => {
            args!(0);
            let Some(s) = string_input(input, name)? else {
                return Ok(Vec::new());
            };
            Ok(match name {
                "upper" => vec![Value::String(Cow::Owned(s.to_uppercase()))],
                "lower" => vec![Value::String(Cow::Owned(s.to_lowercase()))],
                "trim" => vec![Value::String(Cow::Owned(s.trim().to_string()))],
                "length" => vec![Value::Integer(s.chars().count() as i64)],
                _ => s
                    .chars()
                    .map(|c| Value::String(Cow::Owned(c.to_string())))
                    .collect(),
            })
        }
        "replace" => string_fn(name, input, |s| {
            args!(2);
            let (Some(pattern), Some(with)) =
                (string_arg(&arg(0)?, name)?, string_arg(&arg(1)?, name)?)
            else {
                return Ok(None);
            };
            Ok(Some(Value::String(Cow::Owned(
                s.replace(pattern.as_ref(), &with),
            ))))
        }),
        "matches" | "matchesFull" => string_fn(name, input, |s| {
            args!(1);
            let Some(pattern) = string_arg(&arg(0)?, name)? else {
                return Ok(None);
            };
            let full = name == "matchesFull";
            let matched = with_regex(&pattern, full, name, |re| re.is_match(&s))?;
            Ok(Some(Value::Boolean(matched)))
        }),
        "replaceMatches" => string_fn(name, input, |s| {
            args!(2);
            let (Some(pattern), Some(with)) =
                (string_arg(&arg(0)?, name)?, string_arg(&arg(1)?, name)?)
            else {
                return Ok(None);
            };
            if pattern.is_empty() {
                return Ok(Some(Value::String(s)));
            }
            let replaced = with_regex(&pattern, false, name, |re| {
                re.replace_all(&s, with.as_ref()).into_owned()
            })?;
            Ok(Some(Value::String(Cow::Owned(replaced))))
        }),
        "split" => {
            args!(1);
            let Some(s) = string_input(input, name)? else {
                return Ok(Vec::new());
            };
            let Some(sep) = string_arg(&arg(0)?, name)? else {
                return Ok(Vec::new());
            };
            Ok(s.split(sep.as_ref())
                .map(|part| Value::String(Cow::Owned(part.to_string())))
                .collect())
        }
        "join" => {
            args!(0, 1);
            let sep = if n == 1 {
                string_arg(&arg(0)?, name)?.unwrap_or_default()
            } else {
                Cow::Borrowed("")
            };
            let mut parts = Vec::with_capacity(input.len());
            for item in input {
                match item.to_system() {
                    Some(Value::String(s)) => parts.push(s),
                    _ => return Err(EvalError::typ(name, "every item must be a String")),
                }
            }
            Ok(vec![Value::String(Cow::Owned(parts.join(sep.as_ref())))])
        }
        "encode" | "decode" | "escape" | "unescape" => string_fn(name, input, |s| {
            args!(1);
            let Some(format) = string_arg(&arg(0)?, name)? else {
                return Ok(None);
            };
            Ok(codec(name, &format, &s)?.map(|s| Value::String(Cow::Owned(s))))
        }),
        // --- math
        "abs" | "ceiling" | "exp" | "floor" | "ln" | "sqrt" | "truncate" => {
            args!(0);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            maybe(math1(name, item)?)
        }
        "log" | "power" => {
            args!(1);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            let other = arg(0)?;
            let Some(other) = singleton(&other, name)? else {
                return Ok(Vec::new());
            };
            maybe(math2(name, item, other)?)
        }
        "round" => {
            args!(0, 1);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            let digits = if n == 1 {
                integer_arg(&arg(0)?, name)?.unwrap_or(0)
            } else {
                0
            };
            if digits < 0 {
                return Err(EvalError::typ(name, "precision must not be negative"));
            }
            let d = number(item, name)?;
            maybe(Some(Value::Decimal(d.round_dp_with_strategy(
                digits as u32,
                rust_decimal::RoundingStrategy::MidpointAwayFromZero,
            ))))
        }
        // --- tree navigation
        "children" => {
            args!(0);
            let mut out = Vec::new();
            for item in input {
                ev.children(item, &mut out);
            }
            Ok(out)
        }
        "descendants" => {
            args!(0);
            let mut out = Vec::new();
            let mut frontier = input.to_vec();
            while !frontier.is_empty() {
                let mut next = Vec::new();
                for item in &frontier {
                    ev.children(item, &mut next);
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            Ok(out)
        }
        // --- utility
        "trace" => {
            args!(1, 2);
            let label = string_arg(&arg(0)?, name)?.unwrap_or_default();
            if let Some(sink) = ev.env.trace {
                let traced = if n == 2 {
                    let mut projected = Vec::new();
                    for (i, item) in input.iter().enumerate() {
                        projected.extend(per_item(ev, &args[1], item, i, scope)?);
                    }
                    projected
                } else {
                    input.to_vec()
                };
                let json = Json::Array(traced.iter().map(Value::to_json).collect());
                if let Ok(mut sink) = sink.lock() {
                    sink.push((label.into_owned(), json));
                }
            }
            Ok(input.to_vec())
        }
        "now" => {
            args!(0);
            Ok(vec![Value::DateTime(ev.now())])
        }
        "today" => {
            args!(0);
            let mut today = ev.now().truncated(Precision::Day);
            today.kind = TemporalKind::Date;
            Ok(vec![Value::Date(today)])
        }
        "timeOfDay" => {
            args!(0);
            let mut time = ev.now();
            time.kind = TemporalKind::Time;
            time.offset = None;
            Ok(vec![Value::Time(time)])
        }
        "lowBoundary" | "highBoundary" => {
            args!(0, 1);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            let digits = if n == 1 {
                integer_arg(&arg(0)?, name)?
            } else {
                None
            };
            maybe(boundary(item, digits, name == "highBoundary", name)?)
        }
        "precision" => {
            args!(0);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            maybe(match item.to_system() {
                Some(Value::Decimal(d)) => Some(Value::Integer(d.scale() as i64)),
                Some(Value::Integer(_)) => Some(Value::Integer(0)),
                Some(Value::Date(d) | Value::DateTime(d) | Value::Time(d)) => {
                    Some(Value::Integer(d.precision_digits()))
                }
                _ => return Err(EvalError::typ(name, "applies to decimals, dates and times")),
            })
        }
        "comparable" => {
            args!(1);
            let Some(item) = singleton(input, name)? else {
                return Ok(Vec::new());
            };
            let other = arg(0)?;
            let Some(other) = singleton(&other, name)? else {
                return Ok(Vec::new());
            };
            match (item.to_system(), other.to_system()) {
                (Some(Value::Quantity(a)), Some(Value::Quantity(b))) => boolean(a.comparable(&b)),
                _ => Err(EvalError::typ(name, "applies to quantities")),
            }
        }
        "sort" => sort(ev, input, args, scope),
        "type" => {
            args!(0);
            Ok(input.iter().map(value::type_info).collect())
        }
        "aggregate" => {
            args!(1, 2);
            let mut total = if n == 2 { arg(1)? } else { Vec::new() };
            for (i, item) in input.iter().enumerate() {
                let one = std::slice::from_ref(item);
                let inner = Scope {
                    this: one,
                    index: Some(i as i64),
                    total: Some(&total),
                    defined: scope.defined,
                };
                total = ev.eval(&args[0], one, &inner)?;
            }
            Ok(total)
        }
        "not" => {
            args!(0);
            // Singleton evaluation: a single non-Boolean item counts as true.
            Ok(to_logic(input, name)?
                .map(|b| Value::Boolean(!b))
                .into_iter()
                .collect())
        }
        // --- FHIR
        "extension" => {
            args!(1);
            let Some(url) = string_arg(&arg(0)?, name)? else {
                return Ok(Vec::new());
            };
            let mut extensions = Vec::new();
            for item in input {
                ev.navigate(item, "extension", &mut extensions);
            }
            Ok(extensions
                .into_iter()
                .filter(|e| match e {
                    Value::Node(node) => {
                        node.json.and_then(|j| j.get("url")).and_then(Json::as_str)
                            == Some(url.as_ref())
                    }
                    _ => false,
                })
                .collect())
        }
        "hasValue" => {
            args!(0);
            boolean(matches!(input, [item] if item.is_primitive() && item.to_system().is_some()))
        }
        "getValue" => {
            args!(0);
            match input {
                [item] if item.is_primitive() => maybe(item.to_system()),
                _ => Ok(Vec::new()),
            }
        }
        "resolve" => {
            args!(0);
            let mut out = Vec::new();
            for item in input {
                if let Some(resolved) = resolve(ev, item) {
                    out.push(resolved);
                }
            }
            Ok(out)
        }
        "conformsTo" => {
            args!(1);
            let Some(url) = string_arg(&arg(0)?, name)? else {
                return Ok(Vec::new());
            };
            let Some(type_name) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
            else {
                return Err(EvalError::Unsupported(
                    format!("conformsTo('{url}')"),
                    "only the base FHIR StructureDefinitions are known; profiles need a validator",
                ));
            };
            if !ev.model().is_type(type_name) {
                return Err(EvalError::typ(name, format!("unknown profile '{url}'")));
            }
            Ok(input
                .iter()
                .map(|v| {
                    Value::Boolean(value::is_type(
                        v,
                        Some("FHIR"),
                        type_name,
                        ev.model(),
                        false,
                    ))
                })
                .collect())
        }
        "memberOf" | "subsumes" | "subsumedBy" => Err(EvalError::Unsupported(
            format!("{name}()"),
            "terminology services are not available",
        )),
        "htmlChecks" => {
            args!(0);
            boolean(
                input
                    .iter()
                    .all(|v| v.to_string_value().is_some_and(|s| html_is_safe(&s))),
            )
        }
        _ => Err(EvalError::UnknownFunction(name.to_string())),
    }
}

/// Evaluates a per-item expression with `$this` = `item`.
fn per_item<'a>(
    ev: &Evaluator<'_, 'a>,
    expr: &'a Expr,
    item: &Value<'a>,
    index: usize,
    scope: &Scope<'_, 'a>,
) -> Result<Collection<'a>> {
    let one = std::slice::from_ref(item);
    let inner = Scope {
        this: one,
        index: Some(index as i64),
        total: scope.total,
        defined: scope.defined,
    };
    ev.eval(expr, one, &inner)
}

fn criterion<'a>(
    ev: &Evaluator<'_, 'a>,
    expr: &'a Expr,
    item: &Value<'a>,
    index: usize,
    scope: &Scope<'_, 'a>,
    function: &str,
) -> Result<Option<bool>> {
    let result = per_item(ev, expr, item, index, scope)?;
    to_logic(&result, function)
}

/// The type named by an `is(T)` / `as(T)` / `ofType(T)` argument.
fn type_argument<'e>(expr: &'e Expr, function: &str) -> Result<(Option<&'e str>, &'e str)> {
    match &expr.kind {
        ExprKind::Identifier(name) => Ok((None, name)),
        ExprKind::Member(target, name) => match &target.kind {
            ExprKind::Identifier(namespace) => Ok((Some(namespace), name)),
            _ => Err(EvalError::typ(function, "expected a type name")),
        },
        _ => Err(EvalError::typ(function, "expected a type name")),
    }
}

fn integer_arg(c: &[Value<'_>], function: &str) -> Result<Option<i64>> {
    match singleton(c, function)? {
        None => Ok(None),
        Some(v) => match v.to_system() {
            Some(Value::Integer(i)) => Ok(Some(i)),
            _ => Err(EvalError::typ(function, "expected an Integer argument")),
        },
    }
}

fn string_arg<'a>(c: &[Value<'a>], function: &str) -> Result<Option<Cow<'a, str>>> {
    match singleton(c, function)? {
        None => Ok(None),
        Some(v) => match v.to_system() {
            Some(Value::String(s)) => Ok(Some(s)),
            _ => Err(EvalError::typ(function, "expected a String argument")),
        },
    }
}

fn string_input<'a>(input: &[Value<'a>], function: &str) -> Result<Option<Cow<'a, str>>> {
    match singleton(input, function)? {
        None => Ok(None),
        Some(v) => match v.to_system() {
            Some(Value::String(s)) => Ok(Some(s)),
            _ => Err(EvalError::typ(
                function,
                format!("applies to a String, not to {}", v.type_name()),
            )),
        },
    }
}

fn string_fn<'a>(
    function: &str,
    input: &[Value<'a>],
    f: impl FnOnce(Cow<'a, str>) -> Result<Option<Value<'a>>>,
) -> Result<Collection<'a>> {
    match string_input(input, function)? {
        None => Ok(Vec::new()),
        Some(s) => maybe(f(s)?),
    }
}

/// `toX()` and `convertsToX()` from one conversion.
fn convert<'a>(
    name: &str,
    input: &[Value<'a>],
    args: &[Expr],
    f: impl Fn(&Value<'a>) -> Option<Value<'a>>,
) -> Result<Collection<'a>> {
    arity(name, args, 0, 0, "0")?;
    let Some(item) = singleton(input, name)? else {
        return Ok(Vec::new());
    };
    let converted = match item {
        Value::Node(node) if node.is_object() && !value::is_quantity_type(node.type_name) => None,
        _ => item.to_system().as_ref().and_then(&f),
    };
    if name.starts_with("convertsTo") {
        boolean(converted.is_some())
    } else {
        maybe(converted)
    }
}

fn sort<'a>(
    ev: &Evaluator<'_, 'a>,
    input: &[Value<'a>],
    args: &'a [Expr],
    scope: &Scope<'_, 'a>,
) -> Result<Collection<'a>> {
    // Each key is an expression per item; a leading '-' sorts that key descending.
    let keys: Vec<(&'a Expr, bool)> = args
        .iter()
        .map(|a| match &a.kind {
            ExprKind::Unary(UnaryOp::Minus, inner) => (&**inner, true),
            _ => (a, false),
        })
        .collect();
    let mut rows: Vec<(Vec<Collection<'a>>, Value<'a>)> = Vec::with_capacity(input.len());
    for (i, item) in input.iter().enumerate() {
        let mut row = Vec::with_capacity(keys.len().max(1));
        if keys.is_empty() {
            row.push(vec![item.clone()]);
        }
        for (expr, _) in &keys {
            row.push(per_item(ev, expr, item, i, scope)?);
        }
        rows.push((row, item.clone()));
    }
    let mut failure = None;
    rows.sort_by(|(a, _), (b, _)| {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            let descending = keys.get(k).is_some_and(|(_, d)| *d);
            let ordering = match (x.first(), y.first()) {
                (None, None) => std::cmp::Ordering::Equal,
                // An empty key sorts after every value (before them when descending).
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => match value::compare(x, y) {
                    Ok(o) => o.unwrap_or(std::cmp::Ordering::Equal),
                    Err(()) => {
                        failure = Some(EvalError::typ("sort", "items are not comparable"));
                        std::cmp::Ordering::Equal
                    }
                },
            };
            let ordering = if descending {
                ordering.reverse()
            } else {
                ordering
            };
            if ordering.is_ne() {
                return ordering;
            }
        }
        std::cmp::Ordering::Equal
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(rows.into_iter().map(|(_, v)| v).collect()),
    }
}
