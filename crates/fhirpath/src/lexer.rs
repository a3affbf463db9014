//! Tokenizer for FHIRPath source text: turns a string into tokens with byte spans.
//!
//! Comments (`//` to end of line, `/* ... */`) and whitespace are skipped. Literals keep their
//! source text; the parser decides what they mean. Keywords are not distinguished here: an
//! identifier token is a keyword when the parser expects one, so `contains` can be both an
//! operator and a function name, as the grammar allows.

use std::sync::OnceLock;

use crate::error::{ParseError, Span};

/// What kind of token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A plain identifier (also keywords such as `and`, `div`, `true`).
    Identifier(String),
    /// A `` `delimited` `` identifier (never a keyword).
    DelimitedIdentifier(String),
    /// A `'string'` literal, escapes already resolved.
    String(String),
    /// An integer or decimal literal, as written.
    Number(String),
    /// A `@...` date, date-time or time literal, without the `@`.
    DateTime(String),
    /// `$this`, `$index`, `$total`, without the `$`.
    Special(String),
    /// `%name` or `` %`name` `` or `%'name'`, without the `%`.
    External(String),
    /// An operator or punctuation.
    Symbol(&'static str),
    /// End of input.
    Eof,
}

/// A token and where it was in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub kind: TokenKind,
    /// Its byte range in the source.
    pub span: Span,
}

const SYMBOLS: [&str; 22] = [
    "<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", "{", "}", ",", "+", "-", "*", "/", "|", "&",
    "=", "~", "<", ">",
];

/// Splits `src` into tokens, ending with [`TokenKind::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let done = token.kind == TokenKind::Eof;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    fn rest(&self) -> &'s str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn error(&self, start: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(Span::new(start, self.pos.max(start + 1)), message)
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next().filter(|c| c.is_whitespace()) {
                self.pos += c.len_utf8();
            } else if rest.starts_with("//") {
                self.pos += rest.find('\n').unwrap_or(rest.len());
            } else if let Some(body) = rest.strip_prefix("/*") {
                let start = self.pos;
                match body.find("*/") {
                    Some(end) => self.pos += end + 4,
                    None => {
                        self.pos = self.src.len();
                        return Err(self.error(start, "unterminated comment: expected '*/'"));
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        self.skip_trivia()?;
        let start = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token {
                kind: TokenKind::Eof,
                span: Span::new(start, start),
            });
        };
        let kind = if c.is_ascii_alphabetic() || c == '_' {
            TokenKind::Identifier(self.identifier())
        } else if c.is_ascii_digit() {
            TokenKind::Number(self.number())
        } else {
            match c {
                '`' => TokenKind::DelimitedIdentifier(self.quoted('`')?),
                '\'' => TokenKind::String(self.quoted('\'')?),
                '@' => {
                    self.pos += 1;
                    TokenKind::DateTime(self.datetime(start)?)
                }
                '$' => {
                    self.pos += 1;
                    if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                        return Err(self.error(start, "expected $this, $index or $total"));
                    }
                    let name = self.identifier();
                    if !matches!(name.as_str(), "this" | "index" | "total") {
                        return Err(self.error(
                            start,
                            format!(
                                "unknown special variable ${name}: expected $this, $index or $total"
                            ),
                        ));
                    }
                    TokenKind::Special(name)
                }
                '%' => {
                    self.pos += 1;
                    let name = match self.peek() {
                        Some('`') => self.quoted('`')?,
                        Some('\'') => self.quoted('\'')?,
                        Some(c) if c.is_ascii_alphabetic() || c == '_' => self.identifier(),
                        _ => return Err(self.error(start, "expected a variable name after '%'")),
                    };
                    TokenKind::External(name)
                }
                _ => {
                    let rest = self.rest();
                    let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)).copied()
                    else {
                        self.pos += c.len_utf8();
                        return Err(self.error(start, format!("unexpected character '{c}'")));
                    };
                    self.pos += symbol.len();
                    TokenKind::Symbol(symbol)
                }
            }
        };
        Ok(Token {
            kind,
            span: Span::new(start, self.pos),
        })
    }

    fn identifier(&mut self) -> String {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        self.pos += len;
        rest[..len].to_string()
    }

    fn number(&mut self) -> String {
        let start = self.pos;
        self.take_digits();
        // A '.' belongs to the number only when a digit follows (`1.5`), not in `1.toString()`.
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.take_digits();
        }
        self.src[start..self.pos].to_string()
    }

    fn take_digits(&mut self) {
        let rest = self.rest();
        self.pos += rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
    }

    /// A quoted string or delimited identifier with FHIRPath escapes.
    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(
                    start,
                    format!("unterminated literal: expected closing {quote}"),
                ));
            };
            self.pos += c.len_utf8();
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.error(start, "unterminated escape sequence"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        '\'' | '"' | '`' | '\\' | '/' => out.push(e),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => {
                            let hex = self.rest().get(..4).unwrap_or("");
                            let code = (hex.len() == 4)
                                .then(|| u32::from_str_radix(hex, 16).ok())
                                .flatten()
                                .and_then(char::from_u32);
                            match code {
                                Some(ch) => {
                                    out.push(ch);
                                    self.pos += 4;
                                }
                                None => {
                                    return Err(self.error(
                                        self.pos - 2,
                                        "invalid \\u escape: expected 4 hex digits",
                                    ));
                                }
                            }
                        }
                        other => {
                            return Err(self.error(
                                self.pos - 2,
                                format!("invalid escape sequence \\{other}"),
                            ));
                        }
                    }
                }
                _ => out.push(c),
            }
        }
    }

    /// The text of a date/time literal after `@`, by the grammar's DATE, DATETIME and TIME
    /// rules: `YYYY[-MM[-DD]][T[hh[:mm[:ss[.f+]]]][Z|(+|-)hh:mm]]` or `Thh[:mm[:ss[.f+]]]`.
    /// Scanning stops where the grammar does, so `@2014.T` is the date `2014` and a member `T`.
    fn datetime(&mut self, start: usize) -> Result<String, ParseError> {
        static LITERAL: OnceLock<regex::Regex> = OnceLock::new();
        let re = LITERAL.get_or_init(|| {
            let time = r"\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?";
            let date = r"\d{4}(?:-\d{2}(?:-\d{2})?)?";
            let zone = r"(?:Z|[+-]\d{2}:\d{2})";
            regex::Regex::new(&format!("^(?:T{time}|{date}(?:T(?:{time})?{zone}?)?)"))
                .expect("the date/time literal pattern is valid")
        });
        match re.find(self.rest()) {
            Some(m) if !m.as_str().is_empty() => {
                self.pos += m.end();
                Ok(m.as_str().to_string())
            }
            _ => Err(self.error(start, "expected a date, date-time or time after '@'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_stop_before_member_access() {
        assert_eq!(
            kinds("1.toString()"),
            vec![
                TokenKind::Number("1".into()),
                TokenKind::Symbol("."),
                TokenKind::Identifier("toString".into()),
                TokenKind::Symbol("("),
                TokenKind::Symbol(")"),
                TokenKind::Eof
            ]
        );
        assert_eq!(kinds("1.5")[0], TokenKind::Number("1.5".into()));
    }

    #[test]
    fn datetime_literal_stops_before_function() {
        assert_eq!(
            kinds("@2014.lowBoundary()")[0],
            TokenKind::DateTime("2014".into())
        );
        assert_eq!(
            kinds("@2014-01-01T08:05+08:00.x")[0],
            TokenKind::DateTime("2014-01-01T08:05+08:00".into())
        );
        assert_eq!(kinds("@2014.T")[0], TokenKind::DateTime("2014".into()));
        assert_eq!(
            kinds("@T14:34:28Z")[0],
            TokenKind::DateTime("T14:34:28".into())
        );
    }

    #[test]
    fn unterminated_comment_is_an_error() {
        let err = tokenize("2 + 2 /* not finished").unwrap_err();
        assert!(err.message.contains("unterminated comment"), "{err}");
    }

    #[test]
    fn string_escapes() {
        assert_eq!(kinds(r"'a\'b\u0041'")[0], TokenKind::String("a'bA".into()));
    }
}
