//! The evaluator: walks the syntax tree over FHIR JSON, producing result collections.
//!
//! Owns navigation (member access, choice elements, primitive extensions), variables and the
//! operators; the function library is in [`crate::functions`]. Evaluation borrows the
//! expression and the resource for `'a`, so string literals and JSON strings are never copied.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::ast::{BinaryOp, Expr, ExprKind, Literal, TypeOp, UnaryOp};
use crate::error::EvalError;
use crate::model::ModelInfo;
use crate::quantity::{Quantity, calendar_unit, ucum_calendar_unit};
use crate::temporal::{PartialDateTime, TemporalKind};
use crate::value::{self, Collection, Node, Value};

/// Finds resources that `resolve()` cannot find in the resource itself (contained resources,
/// Bundle entries): a store, a cache of fetched resources.
pub trait ReferenceResolver: Send + Sync {
    /// The resource a reference string (`Patient/123`, an absolute URL) points to.
    fn resolve(&self, reference: &str) -> Option<&Json>;
}

/// Everything an evaluation may use besides the expression and the resource.
pub struct Environment<'a> {
    pub(crate) model: &'a dyn ModelInfo,
    pub(crate) variables: HashMap<String, Collection<'a>>,
    pub(crate) resolver: Option<&'a dyn ReferenceResolver>,
    pub(crate) now: Option<PartialDateTime>,
    pub(crate) trace: Option<&'a Mutex<Vec<(String, Json)>>>,
    /// `as` over several items filters them (like `ofType`) instead of failing.
    pub(crate) filtering_as: bool,
}

impl std::fmt::Debug for Environment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("model", &self.model)
            .field("variables", &self.variables.keys().collect::<Vec<_>>())
            .field("resolver", &self.resolver.is_some())
            .finish()
    }
}

impl<'a> Environment<'a> {
    /// An environment for the given data model (`fhir::r4()` for FHIR R4, or [`crate::NoModel`]).
    pub fn new(model: &'a dyn ModelInfo) -> Self {
        Environment {
            model,
            variables: HashMap::new(),
            resolver: None,
            now: None,
            trace: None,
            filtering_as: false,
        }
    }

    /// Makes `x as T` / `x.as(T)` over a collection of several items keep those of type `T`
    /// (like `ofType`) rather than fail. FHIR R4 search-parameter expressions rely on this
    /// reading (`Observation.component.value.as(Quantity)`); strict FHIRPath says it is an
    /// error, which stays the default.
    pub fn with_filtering_as(mut self) -> Self {
        self.filtering_as = true;
        self
    }

    /// Defines `%name` for expressions evaluated in this environment.
    pub fn with_variable(mut self, name: impl Into<String>, value: Collection<'a>) -> Self {
        self.variables.insert(name.into(), value);
        self
    }

    /// Lets `resolve()` find resources outside the one being evaluated.
    pub fn with_resolver(mut self, resolver: &'a dyn ReferenceResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Fixes `now()` / `today()` / `timeOfDay()` (by default the clock when an evaluation
    /// first asks for it).
    pub fn with_now(mut self, now: PartialDateTime) -> Self {
        self.now = Some(now);
        self
    }

    /// Collects `trace(name)` output as `(name, JSON array of the traced items)`.
    pub fn with_trace(mut self, sink: &'a Mutex<Vec<(String, Json)>>) -> Self {
        self.trace = Some(sink);
        self
    }
}

/// The iteration variables visible to an expression.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'s, 'a> {
    /// `$this`: the item being iterated, or the evaluation's input at the top.
    pub this: &'s [Value<'a>],
    /// `$index`
    pub index: Option<i64>,
    /// `$total` (in `aggregate`)
    pub total: Option<&'s [Value<'a>]>,
    /// Variables defined with `defineVariable`.
    pub defined: Option<&'s DefinedVariable<'s, 'a>>,
}

/// One `defineVariable(name, value)` binding, linked to the ones outside it.
pub(crate) struct DefinedVariable<'s, 'a> {
    pub name: &'s str,
    pub value: Collection<'a>,
    pub outer: Option<&'s DefinedVariable<'s, 'a>>,
}

/// One evaluation in progress.
pub(crate) struct Evaluator<'e, 'a> {
    pub env: &'e Environment<'a>,
    pub resource: Value<'a>,
    pub root_resource: Value<'a>,
    pub context: Collection<'a>,
    /// `now()`, fixed at its first use (most expressions never ask, and reading the clock and
    /// the local zone for each of them is a measurable share of index extraction).
    now: std::cell::OnceCell<PartialDateTime>,
}

pub(crate) type Result<T> = std::result::Result<T, EvalError>;

impl<'e, 'a> Evaluator<'e, 'a> {
    pub fn new(env: &'e Environment<'a>, resource: Value<'a>, context: Collection<'a>) -> Self {
        Evaluator {
            env,
            root_resource: resource.clone(),
            resource,
            context,
            now: std::cell::OnceCell::new(),
        }
    }

    /// The evaluation's current date-time: the environment's, or the clock's at first use; the
    /// same for every `now()`, `today()` and `timeOfDay()` of one evaluation.
    pub fn now(&self) -> PartialDateTime {
        *self
            .now
            .get_or_init(|| self.env.now.unwrap_or_else(PartialDateTime::now))
    }

    pub fn model(&self) -> &'a dyn ModelInfo {
        self.env.model
    }

    /// Evaluates `expr` with `input` as the focus.
    pub fn eval(
        &self,
        expr: &'a Expr,
        input: &[Value<'a>],
        scope: &Scope<'_, 'a>,
    ) -> Result<Collection<'a>> {
        match &expr.kind {
            ExprKind::Literal(literal) => literal_value(literal).map(|v| v.into_iter().collect()),
            ExprKind::Identifier(name) => {
                let mut out = Vec::new();
                for item in input {
                    if self.identifier_is_type_of(name, item) {
                        out.push(item.clone());
                    } else {
                        self.navigate(item, name, &mut out);
                    }
                }
                Ok(out)
            }
            ExprKind::Member(target, name) => {
                let target = self.eval(target, input, scope)?;
                let mut out = Vec::with_capacity(target.len());
                for item in &target {
                    self.navigate(item, name, &mut out);
                }
                Ok(out)
            }
            ExprKind::Function { target, name, args } => {
                let focus = match target {
                    Some(target) => Cow::Owned(self.eval(target, input, scope)?),
                    None => Cow::Borrowed(input),
                };
                crate::functions::call(self, name, &focus, args, scope)
            }
            ExprKind::Index(target, index) => {
                let target = self.eval(target, input, scope)?;
                let index = self.eval(index, scope.this, scope)?;
                let index = match singleton(&index, "[]")? {
                    None => return Ok(Vec::new()),
                    Some(v) => match v.to_system() {
                        Some(Value::Integer(i)) => i,
                        _ => return Err(EvalError::typ("[]", "the index must be an Integer")),
                    },
                };
                Ok(usize::try_from(index)
                    .ok()
                    .and_then(|i| target.into_iter().nth(i))
                    .into_iter()
                    .collect())
            }
            ExprKind::Unary(op, operand) => {
                let operand = self.eval(operand, input, scope)?;
                let symbol = if *op == UnaryOp::Minus { "-" } else { "+" };
                let Some(value) = singleton(&operand, symbol)? else {
                    return Ok(Vec::new());
                };
                let value = value.to_system().ok_or_else(|| {
                    EvalError::typ(symbol, "a sign applies only to numbers and quantities")
                })?;
                if *op == UnaryOp::Plus {
                    return match value {
                        Value::Integer(_) | Value::Decimal(_) | Value::Quantity(_) => {
                            Ok(vec![value])
                        }
                        _ => Err(EvalError::typ(
                            symbol,
                            "a sign applies only to numbers and quantities",
                        )),
                    };
                }
                Ok(vec![match value {
                    Value::Integer(i) => Value::Integer(-i),
                    Value::Decimal(d) => {
                        let mut negated = -d;
                        // FHIRPath decimals have no negative zero: -(0.0) is 0.0.
                        negated.set_sign_positive(negated.is_sign_positive() || negated.is_zero());
                        Value::Decimal(negated)
                    }
                    Value::Quantity(q) => Value::Quantity(Quantity::new(-q.value, q.unit)),
                    other => {
                        return Err(EvalError::typ(
                            symbol,
                            format!("cannot negate a {}", other.type_name()),
                        ));
                    }
                }])
            }
            ExprKind::Binary(op, lhs, rhs) => self.binary(*op, lhs, rhs, input, scope),
            ExprKind::Type(op, operand, spec) => {
                let operand = self.eval(operand, input, scope)?;
                let name = if *op == TypeOp::Is { "is" } else { "as" };
                if *op == TypeOp::As && self.env.filtering_as && operand.len() > 1 {
                    self.check_type_name(spec.namespace.as_deref(), &spec.name, name)?;
                    return Ok(operand
                        .into_iter()
                        .filter(|v| {
                            value::is_type(
                                v,
                                spec.namespace.as_deref(),
                                &spec.name,
                                self.model(),
                                true,
                            )
                        })
                        .collect());
                }
                let Some(item) = singleton(&operand, name)? else {
                    return Ok(Vec::new());
                };
                self.check_type_name(spec.namespace.as_deref(), &spec.name, name)?;
                let matches = value::is_type(
                    item,
                    spec.namespace.as_deref(),
                    &spec.name,
                    self.model(),
                    *op == TypeOp::As,
                );
                Ok(match op {
                    TypeOp::Is => vec![Value::Boolean(matches)],
                    TypeOp::As => {
                        if matches {
                            vec![item.clone()]
                        } else {
                            Vec::new()
                        }
                    }
                })
            }
            ExprKind::This => Ok(scope.this.to_vec()),
            ExprKind::IndexVar => Ok(scope.index.map(Value::Integer).into_iter().collect()),
            ExprKind::Total => Ok(scope.total.map(<[_]>::to_vec).unwrap_or_default()),
            ExprKind::Variable(name) => self.variable(name, scope),
        }
    }

    /// Rejects type names that are neither System types nor types of the model.
    pub fn check_type_name(
        &self,
        namespace: Option<&str>,
        name: &str,
        function: &str,
    ) -> Result<()> {
        const SYSTEM: [&str; 8] = [
            "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
        ];
        let known = match namespace {
            Some("System") => true,
            Some("FHIR") => self.model().is_type(name) || is_model_free(self.model()),
            Some(_) => false,
            None => {
                SYSTEM.contains(&name) || self.model().is_type(name) || is_model_free(self.model())
            }
        };
        if known {
            Ok(())
        } else {
            Err(EvalError::typ(function, format!("unknown type '{name}'")))
        }
    }

    fn variable(&self, name: &str, scope: &Scope<'_, 'a>) -> Result<Collection<'a>> {
        let mut defined = scope.defined;
        while let Some(var) = defined {
            if var.name == name {
                return Ok(var.value.clone());
            }
            defined = var.outer;
        }
        if let Some(value) = self.env.variables.get(name) {
            return Ok(value.clone());
        }
        Ok(match name {
            "resource" => vec![self.resource.clone()],
            "rootResource" => vec![self.root_resource.clone()],
            "context" => self.context.clone(),
            "ucum" => vec![Value::str("http://unitsofmeasure.org")],
            "sct" => vec![Value::str("http://snomed.info/sct")],
            "loinc" => vec![Value::str("http://loinc.org")],
            _ => {
                if let Some(vs) = name.strip_prefix("vs-") {
                    vec![Value::String(Cow::Owned(format!(
                        "http://hl7.org/fhir/ValueSet/{vs}"
                    )))]
                } else if let Some(ext) = name.strip_prefix("ext-") {
                    vec![Value::String(Cow::Owned(format!(
                        "http://hl7.org/fhir/StructureDefinition/{ext}"
                    )))]
                } else {
                    return Err(EvalError::UndefinedVariable(name.to_string()));
                }
            }
        })
    }

    /// Whether a leading identifier names the type of the item (`Patient` in `Patient.name`).
    fn identifier_is_type_of(&self, name: &str, item: &Value<'a>) -> bool {
        if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
            return false;
        }
        let Value::Node(node) = item else {
            return false;
        };
        let Some(type_name) = node.type_name else {
            return false;
        };
        if type_name == name {
            return true;
        }
        // `Resource.id`, `DomainResource.text` on a Patient.
        let mut current = type_name;
        while let Some(base) = self.model().base_type(current) {
            if base == name {
                return true;
            }
            current = base;
        }
        false
    }

    /// Appends the children named `name` of `item` to `out`.
    pub fn navigate(&self, item: &Value<'a>, name: &str, out: &mut Collection<'a>) {
        let Value::Node(node) = item else {
            if let Value::TypeInfo {
                namespace,
                name: type_name,
            } = item
            {
                match name {
                    "namespace" => out.push(Value::str(namespace)),
                    "name" => out.push(Value::String(type_name.clone())),
                    _ => {}
                }
            }
            return;
        };
        let map = match node.json {
            Some(Json::Object(map)) => map,
            _ => {
                // A primitive's `id` and `extension` live in its `_name` companion.
                if let Some(Json::Object(ext)) = node.extension {
                    let type_name = match name {
                        "extension" => Some("Extension"),
                        "id" => Some("string"),
                        _ => None,
                    };
                    if type_name.is_some() {
                        push_property(ext, name, type_name, out);
                    }
                }
                return;
            }
        };
        let model = self.model();
        if let Some(type_name) = node.type_name {
            if let Some(element) = model.element(type_name, name) {
                if element.choice {
                    for (key, _) in map.iter() {
                        if let Some(suffix) = key.strip_prefix(name)
                            && let Some(t) = choice_type(element.types, suffix)
                        {
                            push_property(map, key, Some(t), out);
                        }
                    }
                    // A choice primitive that has only extensions: `_valueString`.
                    for (key, ext) in map.iter() {
                        if let Some(suffix) =
                            key.strip_prefix('_').and_then(|k| k.strip_prefix(name))
                            && let Some(t) = choice_type(element.types, suffix)
                            && !map.contains_key(&key[1..])
                        {
                            push_extension_only(ext, Some(t), out);
                        }
                    }
                } else {
                    push_property(map, name, element.types.first().map(String::as_str), out);
                }
                return;
            }
            if model.is_type(type_name) {
                // The model knows this type and it has no such element.
                return;
            }
        }
        if map.contains_key(name) || map.contains_key(&format!("_{name}")) {
            push_property(map, name, None, out);
            return;
        }
        // Without a model, `value` still finds `valueQuantity` and friends.
        for (key, _) in map.iter() {
            if let Some(suffix) = key.strip_prefix(name)
                && suffix.starts_with(|c: char| c.is_ascii_uppercase())
            {
                push_property(map, key, Some(primitive_type_name(suffix)), out);
            }
        }
    }

    /// The children of a node, each typed from the model where it can be.
    pub fn children(&self, item: &Value<'a>, out: &mut Collection<'a>) {
        let Value::Node(node) = item else { return };
        let Some(Json::Object(map)) = node.json else {
            if let Some(Json::Object(ext)) = node.extension {
                for key in ["id", "extension"] {
                    push_property(
                        ext,
                        key,
                        Some(if key == "id" { "string" } else { "Extension" }),
                        out,
                    );
                }
            }
            return;
        };
        for (key, _) in map.iter() {
            if key == "resourceType" {
                continue;
            }
            let key = match key.strip_prefix('_') {
                Some(base) if map.contains_key(base) => continue,
                Some(base) => base,
                None => key.as_str(),
            };
            let type_name = node
                .type_name
                .and_then(|t| self.element_type_for_key(t, key));
            let key_in_map = map.get_key_value(key).map(|(k, _)| k.as_str());
            match key_in_map {
                Some(k) => push_property(map, k, type_name, out),
                None => {
                    if let Some(ext) = map.get(&format!("_{key}")) {
                        push_extension_only(ext, type_name, out);
                    }
                }
            }
        }
    }

    fn element_type_for_key(&self, type_name: &'a str, key: &str) -> Option<&'a str> {
        let model = self.model();
        if let Some(element) = model.element(type_name, key)
            && !element.choice
        {
            return element.types.first().map(String::as_str);
        }
        for (i, c) in key.char_indices().skip(1) {
            if c.is_ascii_uppercase()
                && let Some(element) = model.element(type_name, &key[..i])
                && element.choice
            {
                return choice_type(element.types, &key[i..]);
            }
        }
        None
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: &'a Expr,
        rhs: &'a Expr,
        input: &[Value<'a>],
        scope: &Scope<'_, 'a>,
    ) -> Result<Collection<'a>> {
        use BinaryOp::*;
        // Boolean operators short-circuit where the left side decides.
        if matches!(op, And | Or | Implies) {
            let left = self.eval(lhs, input, scope)?;
            let left = to_logic(&left, op.symbol())?;
            match (op, left) {
                (And, Some(false)) => return Ok(vec![Value::Boolean(false)]),
                (Or, Some(true)) => return Ok(vec![Value::Boolean(true)]),
                (Implies, Some(false)) => return Ok(vec![Value::Boolean(true)]),
                _ => {}
            }
            let right = self.eval(rhs, input, scope)?;
            let right = to_logic(&right, op.symbol())?;
            let result = logic(op, left, right);
            return Ok(result.map(Value::Boolean).into_iter().collect());
        }
        let left = self.eval(lhs, input, scope)?;
        let right = self.eval(rhs, input, scope)?;
        binary_values(op, left, right)
    }
}

/// An operator applied to two evaluated operands (everything but the short-circuit ones).
pub(crate) fn binary_values<'a>(
    op: BinaryOp,
    left: Collection<'a>,
    right: Collection<'a>,
) -> Result<Collection<'a>> {
    use BinaryOp::*;
    let boolean = |b: Option<bool>| Ok(b.map(Value::Boolean).into_iter().collect());
    match op {
        Union => Ok(union(left, right)),
        Eq | Ne => {
            if left.is_empty() || right.is_empty() {
                return Ok(Vec::new());
            }
            let eq = collections_equal(&left, &right);
            boolean(if op == Eq { eq } else { eq.map(|b| !b) })
        }
        Equiv | NotEquiv => {
            let eq = collections_equivalent(&left, &right);
            boolean(Some(if op == Equiv { eq } else { !eq }))
        }
        Lt | Le | Gt | Ge => {
            let (Some(a), Some(b)) = (
                singleton(&left, op.symbol())?,
                singleton(&right, op.symbol())?,
            ) else {
                return Ok(Vec::new());
            };
            let ordering = value::compare(a, b).map_err(|()| {
                EvalError::typ(
                    op.symbol(),
                    format!("cannot compare {} with {}", a.type_name(), b.type_name()),
                )
            })?;
            boolean(ordering.map(|o| match op {
                Lt => o.is_lt(),
                Le => o.is_le(),
                Gt => o.is_gt(),
                _ => o.is_ge(),
            }))
        }
        In | Contains => {
            let (item, collection) = if op == In {
                (&left, &right)
            } else {
                (&right, &left)
            };
            let Some(item) = singleton(item, op.symbol())? else {
                return Ok(Vec::new());
            };
            boolean(Some(
                collection
                    .iter()
                    .any(|c| value::equals(item, c) == Some(true)),
            ))
        }
        Xor => {
            let (Some(a), Some(b)) = (to_logic(&left, "xor")?, to_logic(&right, "xor")?) else {
                return Ok(Vec::new());
            };
            boolean(Some(a != b))
        }
        Concat => {
            let text = |c: &Collection<'a>| -> Result<String> {
                match singleton(c, "&")? {
                    None => Ok(String::new()),
                    Some(v) => v
                        .to_string_value()
                        .map(Cow::into_owned)
                        .ok_or_else(|| EvalError::typ("&", "operands must be strings")),
                }
            };
            Ok(vec![Value::String(Cow::Owned(
                text(&left)? + &text(&right)?,
            ))])
        }
        Add | Sub | Mul | Div | IntDiv | Mod => {
            let (Some(a), Some(b)) = (
                singleton(&left, op.symbol())?,
                singleton(&right, op.symbol())?,
            ) else {
                return Ok(Vec::new());
            };
            let (a, b) = match (a.to_system(), b.to_system()) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(EvalError::typ(
                        op.symbol(),
                        "operands must be primitive values",
                    ));
                }
            };
            arithmetic(op, a, b)
        }
        And | Or | Implies => boolean(logic(
            op,
            to_logic(&left, op.symbol())?,
            to_logic(&right, op.symbol())?,
        )),
    }
}

/// Three-valued `and`, `or` and `implies` (`None` is unknown).
fn logic(op: BinaryOp, left: Option<bool>, right: Option<bool>) -> Option<bool> {
    match op {
        BinaryOp::And => match (left, right) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        BinaryOp::Or => match (left, right) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        _ => match (left, right) {
            (Some(false), _) | (_, Some(true)) => Some(true),
            (Some(true), Some(false)) => Some(false),
            _ => None,
        },
    }
}

fn arithmetic<'a>(op: BinaryOp, a: Value<'a>, b: Value<'a>) -> Result<Collection<'a>> {
    use BinaryOp::*;
    let symbol = op.symbol();
    let mismatch = |a: &Value<'_>, b: &Value<'_>| {
        EvalError::typ(
            symbol,
            format!("cannot apply to {} and {}", a.type_name(), b.type_name()),
        )
    };
    let one = |v: Option<Value<'a>>| Ok(v.into_iter().collect());
    match (&a, &b) {
        (Value::Integer(x), Value::Integer(y)) => one(match op {
            Add => x.checked_add(*y).map(Value::Integer),
            Sub => x.checked_sub(*y).map(Value::Integer),
            Mul => x.checked_mul(*y).map(Value::Integer),
            Div => Decimal::from(*x)
                .checked_div(Decimal::from(*y))
                .map(|d| Value::Decimal(d.normalize())),
            IntDiv => x.checked_div(*y).map(Value::Integer),
            _ => x.checked_rem(*y).map(Value::Integer),
        }),
        (Value::Integer(_) | Value::Decimal(_), Value::Integer(_) | Value::Decimal(_)) => {
            let (Some(x), Some(y)) = (value::as_decimal(&a), value::as_decimal(&b)) else {
                return Err(mismatch(&a, &b));
            };
            one(match op {
                Add => x.checked_add(y).map(Value::Decimal),
                Sub => x.checked_sub(y).map(Value::Decimal),
                Mul => x.checked_mul(y).map(Value::Decimal),
                Div => x.checked_div(y).map(Value::Decimal),
                IntDiv => x
                    .checked_div(y)
                    .map(|d| Value::Integer(d.trunc().try_into().unwrap_or(0))),
                _ => x.checked_rem(y).map(Value::Decimal),
            })
        }
        (Value::String(x), Value::String(y)) if op == Add => {
            Ok(vec![Value::String(Cow::Owned(format!("{x}{y}")))])
        }
        (Value::Quantity(x), Value::Quantity(y)) => match op {
            Add | Sub => {
                let converted = y.convert(&x.unit).or_else(|| {
                    // Calendar keywords and their UCUM twins (`week` and `'wk'`) add up too.
                    x.common_values(y).map(|(p, q)| {
                        let factor = if p.is_zero() {
                            Decimal::ONE
                        } else {
                            x.value / p
                        };
                        Quantity::new(q * factor, x.unit.clone())
                    })
                });
                let Some(y) = converted else {
                    return Err(mismatch(&a, &b));
                };
                let value = if op == Add {
                    x.value + y.value
                } else {
                    x.value - y.value
                };
                Ok(vec![Value::Quantity(Quantity::new(value, x.unit.clone()))])
            }
            Mul | Div => one(x.multiply(y, op == Div).map(Value::Quantity)),
            _ => Err(mismatch(&a, &b)),
        },
        (Value::Quantity(x), Value::Integer(_) | Value::Decimal(_)) if matches!(op, Mul | Div) => {
            let y = value::as_decimal(&b).unwrap_or_default();
            let value = if op == Mul {
                x.value.checked_mul(y)
            } else {
                x.value.checked_div(y)
            };
            one(value.map(|v| Value::Quantity(Quantity::new(v, x.unit.clone()))))
        }
        (Value::Integer(_) | Value::Decimal(_), Value::Quantity(y)) if op == Mul => {
            let x = value::as_decimal(&a).unwrap_or_default();
            one(x
                .checked_mul(y.value)
                .map(|v| Value::Quantity(Quantity::new(v, y.unit.clone()))))
        }
        (Value::Date(d) | Value::DateTime(d) | Value::Time(d), Value::Quantity(q))
            if matches!(op, Add | Sub) =>
        {
            let unit = calendar_unit(&q.unit)
                .or_else(|| ucum_calendar_unit(&q.unit))
                .ok_or_else(|| {
                    EvalError::typ(symbol, format!("'{}' is not a calendar duration", q.unit))
                })?;
            if d.kind == TemporalKind::Time && matches!(unit, "year" | "month" | "week" | "day") {
                return Err(EvalError::typ(
                    symbol,
                    "a time cannot take a duration of days or more",
                ));
            }
            let amount = if op == Add { q.value } else { -q.value };
            let result = d
                .add(amount, unit)
                .ok_or_else(|| EvalError::typ(symbol, "date/time arithmetic out of range"))?;
            Ok(vec![match a {
                Value::Date(_) => Value::Date(result),
                Value::DateTime(_) => Value::DateTime(result),
                _ => Value::Time(result),
            }])
        }
        _ => Err(mismatch(&a, &b)),
    }
}

/// The single item of a collection, `None` when empty; an error when there are several.
pub(crate) fn singleton<'c, 'a>(
    c: &'c [Value<'a>],
    function: &str,
) -> Result<Option<&'c Value<'a>>> {
    match c {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(EvalError::typ(
            function,
            format!("expected a single item, got a collection of {}", c.len()),
        )),
    }
}

/// A collection as a boolean for the logical operators and criteria: empty is unknown, a
/// single Boolean is itself, any other single item is `true`; several items are an error.
pub(crate) fn to_logic(c: &[Value<'_>], function: &str) -> Result<Option<bool>> {
    match singleton(c, function)? {
        None => Ok(None),
        Some(v) => match v.to_system() {
            Some(Value::Boolean(b)) => Ok(Some(b)),
            _ => Ok(Some(true)),
        },
    }
}

fn collections_equal(a: &[Value<'_>], b: &[Value<'_>]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut uncertain = false;
    for (x, y) in a.iter().zip(b) {
        match value::equals(x, y) {
            Some(false) => return Some(false),
            None => uncertain = true,
            Some(true) => {}
        }
    }
    (!uncertain).then_some(true)
}

fn collections_equivalent(a: &[Value<'_>], b: &[Value<'_>]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| b.iter().any(|y| value::equivalent(x, y)))
        && b.iter().all(|y| a.iter().any(|x| value::equivalent(x, y)))
}

/// `a | b`: both, without duplicates.
pub(crate) fn union<'a>(a: Collection<'a>, b: Collection<'a>) -> Collection<'a> {
    let mut out: Collection<'a> = Vec::with_capacity(a.len() + b.len());
    for item in a.into_iter().chain(b) {
        if !out.iter().any(|o| value::equals(o, &item) == Some(true)) {
            out.push(item);
        }
    }
    out
}

/// The capitalised type suffix of a choice property (`Quantity` in `valueQuantity`) matched to
/// the element's types (`Quantity`, `dateTime`).
fn choice_type<'m>(types: &'m [String], suffix: &str) -> Option<&'m str> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    let rest = chars.as_str();
    types.iter().map(String::as_str).find(|t| {
        let mut tc = t.chars();
        tc.next().is_some_and(|c| c.eq_ignore_ascii_case(&first)) && tc.as_str() == rest
    })
}

/// Without a model: a choice suffix names its type (`valueString` -> `string`).
fn primitive_type_name(suffix: &str) -> &str {
    const PRIMITIVES: [&str; 20] = [
        "boolean",
        "integer",
        "decimal",
        "string",
        "date",
        "dateTime",
        "time",
        "instant",
        "code",
        "uri",
        "url",
        "canonical",
        "id",
        "oid",
        "uuid",
        "markdown",
        "base64Binary",
        "positiveInt",
        "unsignedInt",
        "integer64",
    ];
    PRIMITIVES
        .iter()
        .find(|p| {
            let mut pc = p.chars();
            let mut sc = suffix.chars();
            pc.next()
                .zip(sc.next())
                .is_some_and(|(a, b)| a.eq_ignore_ascii_case(&b))
                && pc.as_str() == sc.as_str()
        })
        .copied()
        .unwrap_or(suffix)
}

/// Pushes the value(s) of `key` (with `_key` companions) as nodes of `type_name`.
fn push_property<'a>(
    map: &'a serde_json::Map<String, Json>,
    key: &str,
    type_name: Option<&'a str>,
    out: &mut Collection<'a>,
) {
    let value = map.get(key);
    let extension = if value.is_none_or(|v| !v.is_object() && !is_object_array(v)) {
        map.get(&format!("_{key}"))
    } else {
        None
    };
    match (value, extension) {
        (Some(Json::Array(items)), ext) => {
            let exts = match ext {
                Some(Json::Array(e)) => Some(e),
                _ => None,
            };
            for (i, item) in items.iter().enumerate() {
                let ext = exts.and_then(|e| e.get(i)).filter(|e| !e.is_null());
                if item.is_null() && ext.is_none() {
                    continue;
                }
                out.push(Value::Node(Node {
                    json: (!item.is_null()).then_some(item),
                    extension: ext,
                    ..Node::new(item, type_name)
                }));
            }
            // Extensions beyond the values (never valid FHIR, but do not lose them).
            if let Some(exts) = exts {
                for ext in exts.iter().skip(items.len()).filter(|e| !e.is_null()) {
                    push_extension_only(ext, type_name, out);
                }
            }
        }
        (Some(Json::Null), _) | (None, None) => {}
        (Some(item), ext) => out.push(Value::Node(Node {
            extension: ext,
            ..Node::new(item, type_name)
        })),
        (None, Some(Json::Array(exts))) => {
            for ext in exts.iter().filter(|e| !e.is_null()) {
                push_extension_only(ext, type_name, out);
            }
        }
        (None, Some(ext)) => push_extension_only(ext, type_name, out),
    }
}

fn is_object_array(v: &Json) -> bool {
    matches!(v, Json::Array(items) if items.iter().any(Json::is_object))
}

fn push_extension_only<'a>(ext: &'a Json, type_name: Option<&'a str>, out: &mut Collection<'a>) {
    out.push(Value::Node(Node {
        json: None,
        extension: Some(ext),
        type_name,
    }));
}

fn is_model_free(model: &dyn ModelInfo) -> bool {
    !model.is_type("Resource")
}

/// The value of a literal.
pub(crate) fn literal_value(literal: &Literal) -> Result<Option<Value<'_>>> {
    let bad = |what: &str| EvalError::typ("literal", format!("invalid {what} literal"));
    Ok(Some(match literal {
        Literal::Empty => return Ok(None),
        Literal::Boolean(b) => Value::Boolean(*b),
        Literal::String(s) => Value::str(s),
        Literal::Integer(n) => Value::Integer(n.parse().map_err(|_| bad("integer"))?),
        Literal::Decimal(n) => Value::Decimal(Decimal::from_str(n).map_err(|_| bad("decimal"))?),
        Literal::Date(d) => {
            Value::Date(value::temporal_literal(TemporalKind::Date, d).ok_or_else(|| bad("date"))?)
        }
        Literal::DateTime(d) => Value::DateTime(
            value::temporal_literal(TemporalKind::DateTime, d).ok_or_else(|| bad("date-time"))?,
        ),
        Literal::Time(t) => {
            Value::Time(value::temporal_literal(TemporalKind::Time, t).ok_or_else(|| bad("time"))?)
        }
        Literal::Quantity(n, unit) => Value::Quantity(Quantity::new(
            Decimal::from_str(n).map_err(|_| bad("quantity"))?,
            unit.clone(),
        )),
    }))
}
