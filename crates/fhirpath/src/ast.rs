//! The syntax tree of a FHIRPath expression, and its printer.
//!
//! Every node carries its source [`Span`] for error messages. Equality ignores spans, so a
//! tree printed with [`fmt::Display`] and parsed again compares equal to the original (the
//! printer adds the parentheses precedence needs).

use std::fmt;

use crate::error::Span;

/// A literal as written in the source.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `{}`
    Empty,
    /// `true` / `false`
    Boolean(bool),
    /// `'text'`
    String(String),
    /// `42` (source text kept, so printing is exact)
    Integer(String),
    /// `4.20`
    Decimal(String),
    /// `@2019-02-03` (text after `@`)
    Date(String),
    /// `@2019-02-03T10:00` (text after `@`)
    DateTime(String),
    /// `@T10:00` (text after `@T`)
    Time(String),
    /// `4.5 'mg'` or `3 days`: number text and unit (UCUM code or calendar keyword).
    Quantity(String, String),
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `div`
    IntDiv,
    /// `mod`
    Mod,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `&`
    Concat,
    /// `|`
    Union,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `~`
    Equiv,
    /// `!~`
    NotEquiv,
    /// `in`
    In,
    /// `contains`
    Contains,
    /// `and`
    And,
    /// `or`
    Or,
    /// `xor`
    Xor,
    /// `implies`
    Implies,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Mul => "*",
            Div => "/",
            IntDiv => "div",
            Mod => "mod",
            Add => "+",
            Sub => "-",
            Concat => "&",
            Union => "|",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Eq => "=",
            Ne => "!=",
            Equiv => "~",
            NotEquiv => "!~",
            In => "in",
            Contains => "contains",
            And => "and",
            Or => "or",
            Xor => "xor",
            Implies => "implies",
        }
    }

    /// Binding strength: higher binds tighter (FHIRPath operator precedence).
    pub fn precedence(self) -> u8 {
        use BinaryOp::*;
        match self {
            Mul | Div | IntDiv | Mod => 10,
            Add | Sub | Concat => 9,
            // 8 is `is` / `as`
            Union => 7,
            Lt | Le | Gt | Ge => 6,
            Eq | Ne | Equiv | NotEquiv => 5,
            In | Contains => 4,
            And => 3,
            Or | Xor => 2,
            Implies => 1,
        }
    }
}

/// Precedence of the `is` / `as` type operators.
pub const TYPE_OP_PRECEDENCE: u8 = 8;

/// A unary sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `+x`
    Plus,
    /// `-x`
    Minus,
}

/// `is` or `as`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeOp {
    /// `x is T`
    Is,
    /// `x as T`
    As,
}

/// A (possibly qualified) type name: `Patient`, `FHIR.Patient`, `System.String`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpecifier {
    /// `FHIR` or `System` when given.
    pub namespace: Option<String>,
    /// The type name.
    pub name: String,
}

impl fmt::Display for TypeSpecifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ns) = &self.namespace {
            write_identifier(f, ns)?;
            f.write_str(".")?;
        }
        write_identifier(f, &self.name)
    }
}

/// An expression node.
#[derive(Debug, Clone)]
pub struct Expr {
    /// What the node is.
    pub kind: ExprKind,
    /// Where it is in the source.
    pub span: Span,
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

/// The kinds of expression node.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    /// A literal.
    Literal(Literal),
    /// A name at the start of a path (`name` in `name.given`), navigated from the input.
    Identifier(String),
    /// `target.name`
    Member(Box<Expr>, String),
    /// `target.name(args)` or, without target, `name(args)` on the input.
    Function {
        /// The expression before the dot, if any.
        target: Option<Box<Expr>>,
        /// Function name.
        name: String,
        /// Arguments, unevaluated (functions such as `where` evaluate them per item).
        args: Vec<Expr>,
    },
    /// `target[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `-x`, `+x`
    Unary(UnaryOp, Box<Expr>),
    /// `a op b`
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `x is T`, `x as T`
    Type(TypeOp, Box<Expr>, TypeSpecifier),
    /// `$this`
    This,
    /// `$index`
    IndexVar,
    /// `$total`
    Total,
    /// `%name`
    Variable(String),
}

impl Expr {
    /// Whether this node prints as a term that may be followed by `.x` or `[i]` without parentheses.
    fn is_term(&self) -> bool {
        !matches!(
            self.kind,
            ExprKind::Unary(..) | ExprKind::Binary(..) | ExprKind::Type(..)
        )
    }
}

const KEYWORDS: [&str; 12] = [
    "and", "or", "xor", "implies", "div", "mod", "in", "contains", "is", "as", "true", "false",
];

fn is_plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&s)
}

fn write_escaped(f: &mut fmt::Formatter<'_>, s: &str, quote: char) -> fmt::Result {
    use fmt::Write;
    f.write_char(quote)?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{c}' => f.write_str("\\f")?,
            c if c == quote => {
                f.write_char('\\')?;
                f.write_char(c)?;
            }
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char(quote)
}

fn write_identifier(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    if is_plain_identifier(name) {
        f.write_str(name)
    } else {
        write_escaped(f, name, '`')
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Empty => f.write_str("{}"),
            Literal::Boolean(b) => write!(f, "{b}"),
            Literal::String(s) => write_escaped(f, s, '\''),
            Literal::Integer(n) | Literal::Decimal(n) => f.write_str(n),
            Literal::Date(d) | Literal::DateTime(d) => write!(f, "@{d}"),
            Literal::Time(t) => write!(f, "@T{t}"),
            Literal::Quantity(n, unit) => {
                f.write_str(n)?;
                f.write_str(" ")?;
                if crate::quantity::is_calendar_keyword(unit) {
                    f.write_str(unit)
                } else {
                    write_escaped(f, unit, '\'')
                }
            }
        }
    }
}

/// Prints an operand, parenthesised when its precedence is not above `min`.
fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    let needs_parens = match &e.kind {
        ExprKind::Binary(op, ..) => op.precedence() <= min,
        ExprKind::Type(..) => TYPE_OP_PRECEDENCE <= min,
        ExprKind::Unary(..) => false,
        _ => false,
    };
    if needs_parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

fn write_postfix_target(f: &mut fmt::Formatter<'_>, e: &Expr) -> fmt::Result {
    if e.is_term() {
        write!(f, "{e}")
    } else {
        write!(f, "({e})")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ExprKind::Literal(l) => write!(f, "{l}"),
            ExprKind::Identifier(name) => write_identifier(f, name),
            ExprKind::Member(target, name) => {
                write_postfix_target(f, target)?;
                f.write_str(".")?;
                write_identifier(f, name)
            }
            ExprKind::Function { target, name, args } => {
                if let Some(target) = target {
                    write_postfix_target(f, target)?;
                    f.write_str(".")?;
                }
                write_identifier(f, name)?;
                f.write_str("(")?;
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{arg}")?;
                }
                f.write_str(")")
            }
            ExprKind::Index(target, index) => {
                write_postfix_target(f, target)?;
                write!(f, "[{index}]")
            }
            ExprKind::Unary(op, operand) => {
                f.write_str(if *op == UnaryOp::Minus { "-" } else { "+" })?;
                // The operand of a sign is a postfix expression; anything looser needs parentheses.
                // A nested sign is parenthesised too, so `- -x` never prints as a `--` token.
                if operand.is_term() {
                    write!(f, "{operand}")
                } else {
                    write!(f, "({operand})")
                }
            }
            ExprKind::Binary(op, lhs, rhs) => {
                let p = op.precedence();
                // Left-associative: the left operand may share the precedence, the right may not.
                write_operand(f, lhs, p - 1)?;
                write!(f, " {} ", op.symbol())?;
                write_operand(f, rhs, p)
            }
            ExprKind::Type(op, operand, spec) => {
                write_operand(f, operand, TYPE_OP_PRECEDENCE - 1)?;
                let word = if *op == TypeOp::Is { "is" } else { "as" };
                write!(f, " {word} {spec}")
            }
            ExprKind::This => f.write_str("$this"),
            ExprKind::IndexVar => f.write_str("$index"),
            ExprKind::Total => f.write_str("$total"),
            ExprKind::Variable(name) => {
                f.write_str("%")?;
                write_identifier(f, name)
            }
        }
    }
}
