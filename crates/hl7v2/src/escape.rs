//! HL7 escape sequences: `\F\ \S\ \T\ \R\ \E\ \P\`, `\Xhh..\` (bytes in the message's
//! character set), the formatting commands (`\.br\` and `\.sp\` become a line break, the
//! others and `\H\ \N\ \Zxx\` are dropped) and the ISO 2022 character-set escapes
//! `\Cxxyy\` / `\Mxxyyzz\` (JIS X 0208 text between `\C2442\` and `\C2842\`).
//!
//! Unescaping is lossy only for formatting commands; [`escape`] is the exact inverse of
//! [`unescape`] for any text (a line break is written `\.br\`, a carriage return `\X0D\`).

use encoding_rs::ISO_2022_JP;

use crate::charset::Charset;
use crate::error::{Location, ParseError};
use crate::message::Delimiters;

/// Escape `text` so it can be written as one sub-component.
pub fn escape(text: &str, d: &Delimiters) -> String {
    if !text
        .chars()
        .any(|c| d.is_special(c) || c == '\n' || c == '\r')
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let e = d.escape;
    for c in text.chars() {
        let code = if c == d.field {
            "F"
        } else if c == d.component {
            "S"
        } else if c == d.subcomponent {
            "T"
        } else if c == d.repetition {
            "R"
        } else if c == d.escape {
            "E"
        } else if Some(c) == d.truncation {
            "P"
        } else if c == '\n' {
            ".br"
        } else if c == '\r' {
            "X0D"
        } else {
            out.push(c);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    out
}

/// Unescape one sub-component; `location` names it in errors.
pub fn unescape(
    raw: &str,
    d: &Delimiters,
    charset: Charset,
    location: impl Fn() -> Location,
) -> Result<String, ParseError> {
    let e = d.escape;
    if !raw.contains(e) {
        return Ok(raw.to_owned());
    }
    let invalid = |sequence: &str| ParseError::InvalidEscape {
        location: Box::new(location()),
        sequence: format!("{e}{sequence}{e}"),
    };
    let mut out = String::with_capacity(raw.len());
    // Bytes collected while a \C2442\ (JIS X 0208) designation is in force.
    let mut jis: Option<Vec<u8>> = None;
    let mut rest = raw;
    while let Some(start) = rest.find(e) {
        push_text(&mut out, &mut jis, &rest[..start]);
        let after = &rest[start + e.len_utf8()..];
        let Some(end) = after.find(e) else {
            return Err(invalid(after));
        };
        let seq = &after[..end];
        rest = &after[end + e.len_utf8()..];
        match seq {
            "F" => push_char(&mut out, &mut jis, d.field),
            "S" => push_char(&mut out, &mut jis, d.component),
            "T" => push_char(&mut out, &mut jis, d.subcomponent),
            "R" => push_char(&mut out, &mut jis, d.repetition),
            "E" => push_char(&mut out, &mut jis, d.escape),
            "P" if d.truncation.is_some() => {
                push_char(&mut out, &mut jis, d.truncation.unwrap_or('#'))
            }
            "H" | "N" => {}
            ".br" => push_char(&mut out, &mut jis, '\n'),
            _ if seq.starts_with(".sp") => push_char(&mut out, &mut jis, '\n'),
            _ if seq.starts_with('.') && seq.len() >= 3 => {}
            _ if seq.starts_with('Z') => {}
            _ if seq.starts_with('X') => {
                let bytes = hex(&seq[1..]).ok_or_else(|| invalid(seq))?;
                let text = charset.decode(&bytes).map_err(|_| invalid(seq))?;
                push_text(&mut out, &mut jis, &text);
            }
            _ if seq.starts_with('C') || seq.starts_with('M') => {
                let bytes = hex(&seq[1..]).ok_or_else(|| invalid(seq))?;
                match bytes.as_slice() {
                    // ESC $ B, ESC $ @, ESC $ ( B: JIS X 0208.
                    [0x24, 0x42] | [0x24, 0x40] | [0x24, 0x28, 0x42] => {
                        flush_jis(&mut out, &mut jis).map_err(|()| invalid(seq))?;
                        jis = Some(Vec::new());
                    }
                    // ESC ( B, ESC ( J: back to ASCII / JIS-Roman.
                    [0x28, 0x42] | [0x28, 0x4A] => {
                        flush_jis(&mut out, &mut jis).map_err(|()| invalid(seq))?;
                    }
                    _ => return Err(invalid(seq)),
                }
            }
            _ => return Err(invalid(seq)),
        }
    }
    push_text(&mut out, &mut jis, rest);
    flush_jis(&mut out, &mut jis).map_err(|()| invalid("C2442"))?;
    Ok(out)
}

fn push_char(out: &mut String, jis: &mut Option<Vec<u8>>, c: char) {
    match jis {
        Some(bytes) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        None => out.push(c),
    }
}

fn push_text(out: &mut String, jis: &mut Option<Vec<u8>>, text: &str) {
    match jis {
        Some(bytes) => bytes.extend_from_slice(text.as_bytes()),
        None => out.push_str(text),
    }
}

/// Decode the JIS X 0208 bytes collected since `\C2442\`.
fn flush_jis(out: &mut String, jis: &mut Option<Vec<u8>>) -> Result<(), ()> {
    if let Some(bytes) = jis.take() {
        let mut framed = Vec::with_capacity(bytes.len() + 6);
        framed.extend_from_slice(b"\x1b$B");
        framed.extend_from_slice(&bytes);
        framed.extend_from_slice(b"\x1b(B");
        let text = ISO_2022_JP
            .decode_without_bom_handling_and_without_replacement(&framed)
            .ok_or(())?;
        out.push_str(&text);
    }
    Ok(())
}

fn hex(digits: &str) -> Option<Vec<u8>> {
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(raw: &str) -> Result<String, ParseError> {
        unescape(raw, &Delimiters::default(), Charset::Utf8, || {
            Location::field("OBX", 1, 5)
        })
    }

    #[test]
    fn standard_escapes() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f").unwrap(), r"a|b^c&d~e\f");
        assert_eq!(un(r"line1\.br\line2").unwrap(), "line1\nline2");
        assert_eq!(un(r"\H\bold\N\").unwrap(), "bold");
        assert_eq!(un(r"\XE38182\").unwrap(), "あ");
        assert_eq!(un(r"\Zcustom\x").unwrap(), "x");
    }

    #[test]
    fn jis_designation_escapes() {
        // "\C2442\" then the JIS X 0208 bytes of 山田 (0x3B33 0x4544) as ASCII, then back.
        assert_eq!(un(r"\C2442\;3ED\C2842\ taro").unwrap(), "山田 taro");
    }

    #[test]
    fn errors_name_the_location() {
        let err = un(r"abc\Q\").unwrap_err();
        assert_eq!(err.to_string(), r"OBX[1]-5[1]: invalid escape sequence \Q\");
        assert!(un(r"abc\F").is_err());
        assert!(un(r"\XZZ\").is_err());
        assert!(un(r"\C2443\").is_err());
    }

    #[test]
    fn escape_inverts_unescape() {
        let d = Delimiters::default();
        for text in ["plain", "a|b^c&d~e\\f", "two\nlines\rcr", ""] {
            assert_eq!(un(&escape(text, &d)).unwrap(), text);
        }
    }
}
