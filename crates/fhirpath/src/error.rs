//! Error types: syntax errors with a source position, semantic errors from the static check,
//! and evaluation errors naming the function or operator that failed.

use std::fmt;

/// A byte range in the expression source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A syntax error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("syntax error at position {}: {message}", span.start)]
pub struct ParseError {
    /// Where in the source.
    pub span: Span,
    /// What was wrong or expected.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(span: Span, message: impl Into<String>) -> Self {
        ParseError {
            span,
            message: message.into(),
        }
    }
}

/// An expression that parses but cannot be right for the given model and context type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("semantic error at position {}: {message}", span.start)]
pub struct SemanticError {
    /// The offending part of the expression.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

/// A failure while evaluating.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A function or operator got an argument or input of the wrong type or cardinality.
    #[error("{function}: {message}")]
    Type {
        /// The function or operator, e.g. `substring` or `+`.
        function: String,
        /// What was wrong.
        message: String,
    },
    /// A function name that FHIRPath (and this engine) does not know.
    #[error("unknown function '{0}'")]
    UnknownFunction(String),
    /// A function called with the wrong number of arguments.
    #[error("{function}: expected {expected} argument(s), got {got}")]
    Arity {
        /// The function.
        function: String,
        /// What it takes.
        expected: &'static str,
        /// What it got.
        got: usize,
    },
    /// A `%variable` that is not defined.
    #[error("undefined variable %{0}")]
    UndefinedVariable(String),
    /// A feature that needs a service this engine does not have (terminology, for `memberOf`).
    #[error("{0} is not supported: {1}")]
    Unsupported(String, &'static str),
}

impl EvalError {
    pub(crate) fn typ(function: &str, message: impl Into<String>) -> Self {
        EvalError::Type {
            function: function.to_string(),
            message: message.into(),
        }
    }
}

/// Any error from parsing, checking or evaluating an expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The expression does not parse.
    #[error(transparent)]
    Syntax(#[from] ParseError),
    /// The expression cannot be valid for its context.
    #[error(transparent)]
    Semantic(#[from] SemanticError),
    /// Evaluation failed.
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// Writes the source with a caret under the span, for command-line messages.
pub fn render_span(f: &mut impl fmt::Write, src: &str, span: Span) -> fmt::Result {
    writeln!(f, "  {src}")?;
    let start = src[..span.start.min(src.len())].chars().count();
    let len = src
        .get(span.start..span.end.min(src.len()))
        .map(|s| s.chars().count())
        .unwrap_or(0)
        .max(1);
    writeln!(f, "  {}{}", " ".repeat(start), "^".repeat(len))
}
