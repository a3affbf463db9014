//! FHIRPath for Renkei: parse once, evaluate many times over FHIR JSON.
//!
//! FHIRPath is the expression language under the rest of Renkei: search parameters are
//! FHIRPath expressions (the store extracts its indexes with this crate), profile invariants
//! are FHIRPath, and consent and decision-support rules are written in it.
//!
//! # Layout
//! - [`lexer`] and [`parser`] turn source text into an [`ast::Expr`] with source spans;
//!   [`ast`] prints a tree back to source (used by the round-trip property tests).
//! - [`check`] is the static check against a data model: unknown elements, wrong use of choice
//!   elements, string functions on non-strings, ordered functions on unordered collections.
//! - [`eval`] walks the tree over `serde_json::Value` resources; [`functions`] is the function
//!   library; [`value`] the values (system values and FHIR nodes); [`temporal`] dates and times
//!   with partial precision; [`quantity`] quantities and UCUM units.
//! - [`model`] is all this crate knows of FHIR: a trait the `fhir` crate implements from the
//!   R4 definitions. This crate does no I/O and knows no SQL or HTTP.
//!
//! # Design decisions
//! - Evaluation borrows: results point into the resource JSON and the expression, so a
//!   navigation step costs a vector push, not a copy.
//! - Primitives stay FHIR nodes (type `date`, with `_birthDate` extensions) until an operator
//!   needs their system value; output therefore reports FHIR type names where it has them.
//! - `resolve()` looks in contained resources, the enclosing Bundle and an optional
//!   [`ReferenceResolver`]; an unresolvable literal reference still yields a node of the
//!   referenced type, so `where(resolve() is Patient)` in search parameters works on a single
//!   resource.
//!
//! ```
//! use fhirpath::{Environment, Expression, NoModel};
//! let patient = serde_json::json!({"resourceType": "Patient", "name": [{"given": ["Ada"]}]});
//! let expr = Expression::parse("Patient.name.given.first()").unwrap();
//! let result = expr.evaluate(&Environment::new(&NoModel), &patient).unwrap();
//! assert_eq!(result[0].to_json(), "Ada");
//! ```

pub mod ast;
pub mod check;
pub mod error;
pub mod eval;
mod functions;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod quantity;
pub mod temporal;
pub mod value;

use serde_json::Value as Json;

pub use error::{Error, EvalError, ParseError, SemanticError, Span};
pub use eval::{Environment, ReferenceResolver};
pub use model::{ElementInfo, ModelInfo, NoModel};
pub use value::{Collection, Node, Value};

/// A parsed FHIRPath expression, ready to evaluate any number of times (`Send + Sync`).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    source: String,
    ast: ast::Expr,
}

impl Expression {
    /// Parses `source`; a syntax error names the position and what was expected.
    pub fn parse(source: &str) -> Result<Self, ParseError> {
        Ok(Expression {
            source: source.to_string(),
            ast: parser::parse(source)?,
        })
    }

    /// Parses `source` and checks it against `model` for inputs of type `context_type`
    /// (`"Patient"`), so that misspelt elements fail before any data is seen.
    pub fn compile(
        source: &str,
        model: &dyn ModelInfo,
        context_type: &str,
        options: check::Options,
    ) -> Result<Self, Error> {
        let expr = Self::parse(source)?;
        check::check(&expr.ast, model, context_type, options)?;
        Ok(expr)
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The syntax tree.
    pub fn ast(&self) -> &ast::Expr {
        &self.ast
    }

    /// Evaluates over `resource` (which is `%resource`, `%rootResource`, `%context` and the input).
    pub fn evaluate<'a>(
        &'a self,
        env: &Environment<'a>,
        resource: &'a Json,
    ) -> Result<Collection<'a>, EvalError> {
        let root = Value::Node(Node::new(resource, None));
        self.evaluate_on(env, root.clone(), vec![root])
    }

    /// Evaluates with an explicit `%resource` and input collection (`%context`), e.g. an
    /// invariant on an element inside a resource.
    pub fn evaluate_on<'a>(
        &'a self,
        env: &Environment<'a>,
        resource: Value<'a>,
        input: Collection<'a>,
    ) -> Result<Collection<'a>, EvalError> {
        let evaluator = eval::Evaluator::new(env, resource, input.clone());
        let scope = eval::Scope {
            this: &input,
            index: None,
            total: None,
            defined: None,
        };
        evaluator.eval(&self.ast, &input, &scope)
    }
}

impl std::fmt::Display for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Expression>();
    }
}
