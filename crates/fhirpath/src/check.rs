//! Static check of an expression against a data model, before any data is seen.
//!
//! Infers the possible types of every sub-expression from the context type (`Patient`) and
//! reports what cannot be right whatever the data: an element the type does not have
//! (`name.given1`), a choice element addressed by its JSON name (`valueQuantity` instead of
//! `value.ofType(Quantity)`), a string function on a non-string (`identifier.startsWith(..)`),
//! date arithmetic with a plain number, a multi-item `iif` criterion. In strict mode it also
//! rejects a path that starts with another resource type (`Encounter.name` on a Patient),
//! a non-Boolean `iif` criterion, and (when asked) order-dependent functions applied to
//! `children()` / `descendants()`, whose order is undefined.
//!
//! Where the type is unknown (no model, `Resource`, the result of `resolve()`), nothing is
//! reported: the check never rejects an expression that could be valid.

use crate::ast::{BinaryOp, Expr, ExprKind, Literal, TypeOp};
use crate::error::{SemanticError, Span};
use crate::model::ModelInfo;

/// How strict the check is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Reject paths that start with a type other than the context type, and non-Boolean
    /// `iif` criteria.
    pub strict: bool,
    /// Reject order-dependent functions (`first`, `skip`, `[]`, ...) on unordered collections.
    pub check_ordered_functions: bool,
}

/// What the check knows of a sub-expression's value.
#[derive(Debug, Clone)]
struct Ty {
    /// The possible type names; `None` when anything is possible.
    types: Option<Vec<String>>,
    /// Whether it may hold more than one item.
    many: bool,
    /// Whether its order is undefined (`children()`, `descendants()`).
    unordered: bool,
}

impl Ty {
    fn any() -> Self {
        Ty {
            types: None,
            many: true,
            unordered: false,
        }
    }

    fn of(name: &str) -> Self {
        Ty {
            types: Some(vec![name.to_string()]),
            many: false,
            unordered: false,
        }
    }

    fn may_have_items(&self) -> bool {
        self.types.as_ref().is_none_or(|t| !t.is_empty())
    }

    fn merge(mut self, other: Ty) -> Ty {
        self.many = self.many || other.many || (self.may_have_items() && other.may_have_items());
        self.types = match (self.types, other.types) {
            (Some(mut a), Some(b)) => {
                for t in b {
                    if !a.contains(&t) {
                        a.push(t);
                    }
                }
                Some(a)
            }
            _ => None,
        };
        self.unordered |= other.unordered;
        self
    }
}

/// Checks `expr` for inputs of type `context_type`.
pub fn check(
    expr: &Expr,
    model: &dyn ModelInfo,
    context_type: &str,
    options: Options,
) -> Result<(), SemanticError> {
    if !model.is_type(context_type) {
        return Ok(());
    }
    let input = Ty::of(context_type);
    Checker { model, options }
        .walk(expr, &input, &input)
        .map(|_| ())
}

struct Checker<'m> {
    model: &'m dyn ModelInfo,
    options: Options,
}

const STRING_TYPES: [&str; 12] = [
    "string",
    "code",
    "id",
    "uri",
    "url",
    "canonical",
    "markdown",
    "oid",
    "uuid",
    "base64Binary",
    "xhtml",
    "System.String",
];

/// Where a member name starts, given the span of `target.name` (a delimited name is longer).
fn target_end(span: Span, name: &str) -> usize {
    span.end.saturating_sub(name.len()).max(span.start)
}

fn error(span: Span, message: String) -> SemanticError {
    SemanticError { span, message }
}

impl Checker<'_> {
    /// Whether the model fully describes `t` (so a missing element is certainly an error).
    fn describes(&self, t: &str) -> bool {
        self.model.is_type(t)
            && !matches!(
                t,
                "Resource" | "DomainResource" | "Element" | "BackboneElement"
            )
            || t.contains('.') && !t.starts_with("System.")
    }

    fn is_subtype(&self, t: &str, of: &str) -> bool {
        let mut current = t.to_string();
        loop {
            if current == of {
                return true;
            }
            match self.model.base_type(&current) {
                Some(base) => current = base.to_string(),
                None => return false,
            }
        }
    }

    fn navigate(
        &self,
        input: &Ty,
        name: &str,
        span: Span,
        leading: bool,
    ) -> Result<Ty, SemanticError> {
        let Some(types) = &input.types else {
            return Ok(Ty::any());
        };
        if leading && name.starts_with(|c: char| c.is_ascii_uppercase()) {
            let matching: Vec<String> = types
                .iter()
                .filter(|t| self.is_subtype(t, name))
                .cloned()
                .collect();
            if !matching.is_empty() {
                return Ok(Ty {
                    types: Some(matching),
                    ..input.clone()
                });
            }
            if self.model.is_type(name) {
                if self.options.strict && !types.is_empty() {
                    return Err(error(
                        span,
                        format!(
                            "the expression starts with '{name}' but applies to {}",
                            types.join(" | ")
                        ),
                    ));
                }
                return Ok(Ty {
                    types: Some(Vec::new()),
                    many: false,
                    unordered: false,
                });
            }
        }
        let mut found: Vec<String> = Vec::new();
        let mut many = input.many;
        let mut all_described = true;
        for t in types {
            if t.starts_with("System.") {
                continue;
            }
            match self.model.element(t, name) {
                Some(element) => {
                    many |= element.many;
                    for et in element.types {
                        if !found.contains(et) {
                            found.push(et.clone());
                        }
                    }
                }
                None => all_described &= self.describes(t),
            }
        }
        if found.is_empty()
            && all_described
            && !types.is_empty()
            && types.iter().any(|t| !t.starts_with("System."))
        {
            return Err(error(
                span,
                format!("'{name}' is not an element of {}", types.join(" | ")),
            ));
        }
        if !all_described && found.is_empty() {
            return Ok(Ty::any());
        }
        Ok(Ty {
            types: if all_described { Some(found) } else { None },
            many,
            unordered: input.unordered,
        })
    }

    fn require_string(&self, input: &Ty, function: &str, span: Span) -> Result<(), SemanticError> {
        if let Some(types) = &input.types {
            let certain = !types.is_empty()
                && types
                    .iter()
                    .all(|t| self.describes(t) || t.starts_with("System."));
            if certain
                && !types
                    .iter()
                    .any(|t| STRING_TYPES.contains(&t.as_str()) || self.is_subtype(t, "string"))
            {
                return Err(error(
                    span,
                    format!(
                        "{function}() applies to strings, not to {}",
                        types.join(" | ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn walk(&self, expr: &Expr, input: &Ty, this: &Ty) -> Result<Ty, SemanticError> {
        Ok(match &expr.kind {
            ExprKind::Literal(literal) => match literal {
                Literal::Empty => Ty {
                    types: Some(Vec::new()),
                    many: false,
                    unordered: false,
                },
                Literal::Boolean(_) => Ty::of("System.Boolean"),
                Literal::String(_) => Ty::of("System.String"),
                Literal::Integer(_) => Ty::of("System.Integer"),
                Literal::Decimal(_) => Ty::of("System.Decimal"),
                Literal::Date(_) => Ty::of("System.Date"),
                Literal::DateTime(_) => Ty::of("System.DateTime"),
                Literal::Time(_) => Ty::of("System.Time"),
                Literal::Quantity(..) => Ty::of("System.Quantity"),
            },
            ExprKind::Identifier(name) => self.navigate(input, name, expr.span, true)?,
            ExprKind::Member(target, name) => {
                let target = self.walk(target, input, this)?;
                // Point at the name itself, not the whole path before it.
                let name_span = Span::new(target_end(expr.span, name), expr.span.end);
                self.navigate(&target, name, name_span, false)?
            }
            ExprKind::Function { target, name, args } => {
                let focus = match target {
                    Some(target) => self.walk(target, input, this)?,
                    None => input.clone(),
                };
                self.function(name, &focus, args, this, expr.span)?
            }
            ExprKind::Index(target, index) => {
                let target = self.walk(target, input, this)?;
                self.walk(index, this, this)?;
                self.ordered(&target, "[]", expr.span)?;
                Ty {
                    many: false,
                    ..target
                }
            }
            ExprKind::Unary(_, operand) => self.walk(operand, input, this)?,
            ExprKind::Binary(op, lhs, rhs) => {
                let left = self.walk(lhs, input, this)?;
                let right = self.walk(rhs, input, this)?;
                self.binary(*op, left, right, expr.span)?
            }
            ExprKind::Type(op, operand, spec) => {
                self.walk(operand, input, this)?;
                match op {
                    TypeOp::Is => Ty::of("System.Boolean"),
                    TypeOp::As => self.named_type(spec.namespace.as_deref(), &spec.name),
                }
            }
            ExprKind::This => this.clone(),
            ExprKind::IndexVar => Ty::of("System.Integer"),
            ExprKind::Total | ExprKind::Variable(_) => Ty::any(),
        })
    }

    fn named_type(&self, namespace: Option<&str>, name: &str) -> Ty {
        const SYSTEM: [&str; 8] = [
            "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
        ];
        match namespace {
            Some("System") => Ty::of(&format!("System.{name}")),
            None if SYSTEM.contains(&name) && !self.model.is_type(name) => {
                Ty::of(&format!("System.{name}"))
            }
            _ if self.model.is_type(name) => Ty {
                many: true,
                ..Ty::of(name)
            },
            _ => Ty::any(),
        }
    }

    fn ordered(&self, input: &Ty, function: &str, span: Span) -> Result<(), SemanticError> {
        if self.options.check_ordered_functions && input.unordered {
            return Err(error(
                span,
                format!(
                    "{function} depends on order, but the order of children()/descendants() is undefined"
                ),
            ));
        }
        Ok(())
    }

    fn binary(&self, op: BinaryOp, left: Ty, right: Ty, span: Span) -> Result<Ty, SemanticError> {
        use BinaryOp::*;
        Ok(match op {
            Union => left.merge(right),
            Add | Sub | Mul | Div | IntDiv | Mod => {
                let temporal = |t: &Ty| {
                    t.types.as_ref().is_some_and(|ts| {
                        !ts.is_empty()
                            && ts.iter().all(|t| {
                                matches!(
                                    t.as_str(),
                                    "System.Date"
                                        | "System.DateTime"
                                        | "System.Time"
                                        | "date"
                                        | "dateTime"
                                        | "instant"
                                        | "time"
                                )
                            })
                    })
                };
                let numeric = |t: &Ty| {
                    t.types.as_ref().is_some_and(|ts| {
                        !ts.is_empty()
                            && ts.iter().all(|t| {
                                matches!(
                                    t.as_str(),
                                    "System.Integer" | "System.Decimal" | "integer" | "decimal"
                                )
                            })
                    })
                };
                if temporal(&left) && numeric(&right) {
                    return Err(error(
                        span,
                        format!(
                            "'{}' of a date/time and a number: a duration needs a unit (e.g. 7 days)",
                            op.symbol()
                        ),
                    ));
                }
                Ty {
                    many: false,
                    ..left
                }
            }
            Concat => Ty::of("System.String"),
            _ => Ty::of("System.Boolean"),
        })
    }

    fn function(
        &self,
        name: &str,
        focus: &Ty,
        args: &[Expr],
        this: &Ty,
        span: Span,
    ) -> Result<Ty, SemanticError> {
        let item = Ty {
            many: false,
            ..focus.clone()
        };
        // Per-item arguments see `$this` = one item of the focus; the others see the outer `$this`.
        let per_item = matches!(
            name,
            "where" | "select" | "all" | "exists" | "repeat" | "sort" | "aggregate" | "trace"
        );
        let mut arg_types = Vec::with_capacity(args.len());
        for arg in args {
            if matches!(name, "ofType" | "is" | "as") {
                arg_types.push(Ty::any());
            } else if per_item {
                arg_types.push(self.walk(arg, &item, &item)?);
            } else if name == "iif" {
                arg_types.push(self.walk(arg, focus, focus)?);
            } else {
                arg_types.push(self.walk(arg, this, this)?);
            }
        }
        let boolean = Ty::of("System.Boolean");
        let integer = Ty::of("System.Integer");
        let string = Ty::of("System.String");
        Ok(match name {
            "where" | "distinct" | "trace" | "intersect" | "exclude" | "sort" => focus.clone(),
            "first" | "last" | "single" => {
                self.ordered(focus, &format!("{name}()"), span)?;
                item
            }
            "tail" | "skip" | "take" => {
                self.ordered(focus, &format!("{name}()"), span)?;
                focus.clone()
            }
            "select" | "repeat" => match arg_types.into_iter().next() {
                Some(t) => Ty { many: true, ..t },
                None => Ty::any(),
            },
            "ofType" | "as" => match args.first().map(|a| &a.kind) {
                Some(ExprKind::Identifier(t)) => Ty {
                    many: focus.many,
                    ..self.named_type(None, t)
                },
                Some(ExprKind::Member(ns, t)) => match &ns.kind {
                    ExprKind::Identifier(ns) => self.named_type(Some(ns), t),
                    _ => Ty::any(),
                },
                _ => Ty::any(),
            },
            "union" | "combine" => match arg_types.into_iter().next() {
                Some(other) => focus.clone().merge(other),
                None => Ty::any(),
            },
            "iif" => {
                if let Some(criterion) = arg_types.first() {
                    if criterion.many {
                        return Err(error(
                            span,
                            "iif() criterion must be a single Boolean, not a collection".into(),
                        ));
                    }
                    let non_boolean = criterion.types.as_ref().is_some_and(|t| {
                        !t.is_empty() && t.iter().all(|t| t != "System.Boolean" && t != "boolean")
                    });
                    if self.options.strict && non_boolean {
                        return Err(error(span, "iif() criterion must be a Boolean".into()));
                    }
                }
                let mut branches = arg_types.into_iter().skip(1);
                match (branches.next(), branches.next()) {
                    (Some(a), Some(b)) => a.merge(b),
                    (Some(a), None) => a,
                    _ => Ty::any(),
                }
            }
            "children" | "descendants" => Ty {
                unordered: true,
                ..Ty::any()
            },
            "extension" => Ty {
                many: true,
                ..Ty::of("Extension")
            },
            "startsWith" | "endsWith" | "contains" | "matches" | "matchesFull" => {
                self.require_string(focus, name, span)?;
                boolean
            }
            "substring" | "upper" | "lower" | "replace" | "replaceMatches" | "trim" | "encode"
            | "decode" | "escape" | "unescape" => {
                self.require_string(focus, name, span)?;
                string
            }
            "length" | "indexOf" => {
                self.require_string(focus, name, span)?;
                integer
            }
            "split" | "toChars" => {
                self.require_string(focus, name, span)?;
                Ty {
                    many: true,
                    ..string
                }
            }
            "empty" | "exists" | "all" | "allTrue" | "anyTrue" | "allFalse" | "anyFalse"
            | "subsetOf" | "supersetOf" | "isDistinct" | "not" | "is" | "hasValue"
            | "comparable" | "conformsTo" | "memberOf" | "htmlChecks" => boolean,
            "count" | "precision" => integer,
            "toString" | "join" => string,
            "convertsToBoolean" | "convertsToInteger" | "convertsToDecimal"
            | "convertsToString" | "convertsToDate" | "convertsToDateTime" | "convertsToTime"
            | "convertsToQuantity" => boolean,
            "toBoolean" => boolean,
            "toInteger" => integer,
            "toDecimal" => Ty::of("System.Decimal"),
            "toDate" | "today" => Ty::of("System.Date"),
            "toDateTime" | "now" => Ty::of("System.DateTime"),
            "toTime" | "timeOfDay" => Ty::of("System.Time"),
            "toQuantity" => Ty::of("System.Quantity"),
            _ => Ty::any(),
        })
    }
}
