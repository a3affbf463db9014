//! Recursive-descent (precedence-climbing) parser from tokens to the [`Expr`] tree.
//!
//! Follows the FHIRPath N1 grammar: postfix invocation and indexing bind tightest, then the
//! unary signs (so `-1.convertsToInteger()` is `-(1.convertsToInteger())`), then the binary
//! operators by [`BinaryOp::precedence`], all left-associative.

use crate::ast::{
    BinaryOp, Expr, ExprKind, Literal, TYPE_OP_PRECEDENCE, TypeOp, TypeSpecifier, UnaryOp,
};
use crate::error::{ParseError, Span};
use crate::lexer::{Token, TokenKind, tokenize};
use crate::quantity::is_calendar_keyword;
use crate::temporal;

/// Parses a whole expression; trailing tokens are an error.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser { tokens, pos: 0 };
    let expr = parser.expression(0)?;
    let token = parser.peek();
    if token.kind != TokenKind::Eof {
        return Err(ParseError::new(
            token.span,
            format!(
                "expected an operator or the end of the expression, found {}",
                describe(&token.kind)
            ),
        ));
    }
    Ok(expr)
}

fn describe(kind: &TokenKind) -> String {
    match kind {
        TokenKind::Identifier(s) => format!("'{s}'"),
        TokenKind::DelimitedIdentifier(s) => format!("`{s}`"),
        TokenKind::String(s) => format!("string '{s}'"),
        TokenKind::Number(n) => format!("number {n}"),
        TokenKind::DateTime(d) => format!("@{d}"),
        TokenKind::Special(s) => format!("${s}"),
        TokenKind::External(s) => format!("%{s}"),
        TokenKind::Symbol(s) => format!("'{s}'"),
        TokenKind::Eof => "the end of the expression".to_string(),
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Token {
        self.tokens[self.pos].clone()
    }

    fn peek_kind(&self) -> &TokenKind {
        &self.tokens[self.pos].kind
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self.peek_kind(), TokenKind::Symbol(s) if *s == symbol)
    }

    fn expect_symbol(&mut self, symbol: &'static str, context: &str) -> Result<Span, ParseError> {
        if self.is_symbol(symbol) {
            Ok(self.advance().span)
        } else {
            let token = self.peek();
            Err(ParseError::new(
                token.span,
                format!(
                    "expected '{symbol}' {context}, found {}",
                    describe(&token.kind)
                ),
            ))
        }
    }

    /// The binary or type operator at the current position, if any.
    fn peek_operator(&self) -> Option<Operator> {
        use BinaryOp::*;
        let op = match self.peek_kind() {
            TokenKind::Symbol(s) => match *s {
                "*" => Mul,
                "/" => Div,
                "+" => Add,
                "-" => Sub,
                "&" => Concat,
                "|" => Union,
                "<" => Lt,
                "<=" => Le,
                ">" => Gt,
                ">=" => Ge,
                "=" => Eq,
                "!=" => Ne,
                "~" => Equiv,
                "!~" => NotEquiv,
                _ => return None,
            },
            TokenKind::Identifier(word) => match word.as_str() {
                "div" => IntDiv,
                "mod" => Mod,
                "in" => In,
                "contains" => Contains,
                "and" => And,
                "or" => Or,
                "xor" => Xor,
                "implies" => Implies,
                "is" => return Some(Operator::Type(TypeOp::Is)),
                "as" => return Some(Operator::Type(TypeOp::As)),
                _ => return None,
            },
            _ => return None,
        };
        Some(Operator::Binary(op))
    }

    /// Parses operators binding tighter than `min_precedence`.
    fn expression(&mut self, min_precedence: u8) -> Result<Expr, ParseError> {
        let mut lhs = self.prefix()?;
        while let Some(op) = self.peek_operator() {
            let precedence = match op {
                Operator::Binary(op) => op.precedence(),
                Operator::Type(_) => TYPE_OP_PRECEDENCE,
            };
            if precedence <= min_precedence {
                break;
            }
            self.advance();
            lhs = match op {
                Operator::Binary(op) => {
                    let rhs = self.expression(precedence)?;
                    let span = lhs.span.to(rhs.span);
                    Expr {
                        kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                        span,
                    }
                }
                Operator::Type(op) => {
                    let (spec, spec_span) = self.type_specifier()?;
                    let span = lhs.span.to(spec_span);
                    Expr {
                        kind: ExprKind::Type(op, Box::new(lhs), spec),
                        span,
                    }
                }
            };
        }
        Ok(lhs)
    }

    fn type_specifier(&mut self) -> Result<(TypeSpecifier, Span), ParseError> {
        let (first, mut span) = self.identifier("as a type name")?;
        if self.is_symbol(".") {
            self.advance();
            let (name, end) = self.identifier("as a type name after '.'")?;
            span = span.to(end);
            return Ok((
                TypeSpecifier {
                    namespace: Some(first),
                    name,
                },
                span,
            ));
        }
        Ok((
            TypeSpecifier {
                namespace: None,
                name: first,
            },
            span,
        ))
    }

    fn identifier(&mut self, context: &str) -> Result<(String, Span), ParseError> {
        let token = self.peek();
        match token.kind {
            TokenKind::Identifier(name) | TokenKind::DelimitedIdentifier(name) => {
                self.advance();
                Ok((name, token.span))
            }
            other => Err(ParseError::new(
                token.span,
                format!(
                    "expected an identifier {context}, found {}",
                    describe(&other)
                ),
            )),
        }
    }

    fn prefix(&mut self) -> Result<Expr, ParseError> {
        let op = if self.is_symbol("-") {
            UnaryOp::Minus
        } else if self.is_symbol("+") {
            UnaryOp::Plus
        } else {
            return self.postfix();
        };
        let start = self.advance().span;
        let operand = self.prefix()?;
        let span = start.to(operand.span);
        Ok(Expr {
            kind: ExprKind::Unary(op, Box::new(operand)),
            span,
        })
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.term()?;
        loop {
            if self.is_symbol(".") {
                self.advance();
                let (name, name_span) = self.identifier("after '.'")?;
                if self.is_symbol("(") {
                    let (args, end) = self.arguments()?;
                    let span = expr.span.to(end);
                    expr = Expr {
                        kind: ExprKind::Function {
                            target: Some(Box::new(expr)),
                            name,
                            args,
                        },
                        span,
                    };
                } else {
                    let span = expr.span.to(name_span);
                    expr = Expr {
                        kind: ExprKind::Member(Box::new(expr), name),
                        span,
                    };
                }
            } else if self.is_symbol("[") {
                self.advance();
                let index = self.expression(0)?;
                let end = self.expect_symbol("]", "to close the indexer")?;
                let span = expr.span.to(end);
                expr = Expr {
                    kind: ExprKind::Index(Box::new(expr), Box::new(index)),
                    span,
                };
            } else {
                return Ok(expr);
            }
        }
    }

    fn arguments(&mut self) -> Result<(Vec<Expr>, Span), ParseError> {
        self.expect_symbol("(", "to start the arguments")?;
        let mut args = Vec::new();
        if self.is_symbol(")") {
            return Ok((args, self.advance().span));
        }
        loop {
            args.push(self.expression(0)?);
            if self.is_symbol(",") {
                self.advance();
                continue;
            }
            let end = self.expect_symbol(")", "to close the arguments")?;
            return Ok((args, end));
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let token = self.advance();
        let span = token.span;
        let literal = |literal| {
            Ok(Expr {
                kind: ExprKind::Literal(literal),
                span,
            })
        };
        match token.kind {
            TokenKind::Number(text) => self.number_or_quantity(text, span),
            TokenKind::String(s) => literal(Literal::String(s)),
            TokenKind::DateTime(text) => literal(datetime_literal(&text, span)?),
            TokenKind::Special(name) => {
                let kind = match name.as_str() {
                    "this" => ExprKind::This,
                    "index" => ExprKind::IndexVar,
                    _ => ExprKind::Total,
                };
                Ok(Expr { kind, span })
            }
            TokenKind::External(name) => Ok(Expr {
                kind: ExprKind::Variable(name),
                span,
            }),
            TokenKind::Symbol("(") => {
                let inner = self.expression(0)?;
                let end = self.expect_symbol(")", "to close the parenthesis")?;
                Ok(Expr {
                    kind: inner.kind,
                    span: span.to(end),
                })
            }
            TokenKind::Symbol("{") => {
                let end = self.expect_symbol("}", "for the empty collection '{}'")?;
                Ok(Expr {
                    kind: ExprKind::Literal(Literal::Empty),
                    span: span.to(end),
                })
            }
            TokenKind::Identifier(name) if name == "true" || name == "false" => {
                literal(Literal::Boolean(name == "true"))
            }
            TokenKind::Identifier(name) if is_reserved(&name) => Err(ParseError::new(
                span,
                format!("expected an expression, found the operator '{name}'"),
            )),
            TokenKind::Identifier(name) | TokenKind::DelimitedIdentifier(name) => {
                if self.is_symbol("(") {
                    let (args, end) = self.arguments()?;
                    Ok(Expr {
                        kind: ExprKind::Function {
                            target: None,
                            name,
                            args,
                        },
                        span: span.to(end),
                    })
                } else {
                    Ok(Expr {
                        kind: ExprKind::Identifier(name),
                        span,
                    })
                }
            }
            other => Err(ParseError::new(
                span,
                format!("expected an expression, found {}", describe(&other)),
            )),
        }
    }

    fn number_or_quantity(&mut self, text: String, span: Span) -> Result<Expr, ParseError> {
        let unit = match self.peek_kind() {
            TokenKind::String(unit) => Some(unit.clone()),
            TokenKind::Identifier(word) if is_calendar_keyword(word) => Some(word.clone()),
            _ => None,
        };
        if let Some(unit) = unit {
            let end = self.advance().span;
            return Ok(Expr {
                kind: ExprKind::Literal(Literal::Quantity(text, unit)),
                span: span.to(end),
            });
        }
        let literal = if text.contains('.') {
            Literal::Decimal(text)
        } else {
            Literal::Integer(text)
        };
        Ok(Expr {
            kind: ExprKind::Literal(literal),
            span,
        })
    }
}

enum Operator {
    Binary(BinaryOp),
    Type(TypeOp),
}

/// Words that are operators and so cannot start a term.
fn is_reserved(word: &str) -> bool {
    matches!(word, "and" | "or" | "xor" | "implies" | "div" | "mod")
}

fn datetime_literal(text: &str, span: Span) -> Result<Literal, ParseError> {
    let invalid = |what: &str| ParseError::new(span, format!("invalid {what} literal @{text}"));
    if let Some(time) = text.strip_prefix('T') {
        temporal::PartialDateTime::parse_time(time).ok_or_else(|| invalid("time"))?;
        Ok(Literal::Time(time.to_string()))
    } else if text.contains('T') {
        temporal::PartialDateTime::parse_datetime(text).ok_or_else(|| invalid("date-time"))?;
        Ok(Literal::DateTime(text.to_string()))
    } else {
        temporal::PartialDateTime::parse_date(text).ok_or_else(|| invalid("date"))?;
        Ok(Literal::Date(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(src: &str) -> String {
        parse(src).unwrap().to_string()
    }

    #[test]
    fn precedence_of_sign_and_invocation() {
        assert_eq!(
            roundtrip("-1.convertsToInteger()"),
            "-1.convertsToInteger()"
        );
        assert_eq!(
            roundtrip("(-1).convertsToInteger()"),
            "(-1).convertsToInteger()"
        );
        assert_eq!(roundtrip("1+2*3+4"), "1 + 2 * 3 + 4");
        assert_eq!(roundtrip("(1+2)*3"), "(1 + 2) * 3");
        assert_eq!(roundtrip("1 - (2 - 3)"), "1 - (2 - 3)");
        assert_eq!(roundtrip("1 > 2 is Boolean"), "1 > 2 is Boolean");
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let err = parse("2 + 2 /").unwrap_err();
        assert_eq!(err.span.start, 7);
        assert!(err.message.contains("expected an expression"), "{err}");
        let err = parse("name.where(use = 'official'").unwrap_err();
        assert!(err.message.contains("expected ')'"), "{err}");
    }

    #[test]
    fn quantities_and_dates() {
        assert_eq!(roundtrip("@1974-12-25 + 7 days"), "@1974-12-25 + 7 days");
        assert_eq!(roundtrip("4.5 'mg'"), "4.5 'mg'");
        assert!(parse("@T14:34:28Z").is_err());
    }
}
