//! The message model (segments, fields, repetitions, components, sub-components), the parser
//! and the encoder.
//!
//! Values are stored **unescaped** (`\F\` is `|` in memory) so mapping code reads plain text;
//! the encoder escapes them again. MSH-1 and MSH-2 are kept as the delimiters themselves and
//! written verbatim. `encode(parse(bytes)) == bytes` for any message without formatting
//! commands (`\H\`, `\.in\`, ...) and with CR segment terminators; `parse(encode(m)) == m`
//! for any message (property-tested).

use std::fmt;

use crate::charset::Charset;
use crate::error::{EncodeError, Location, ParseError};
use crate::escape::{escape, unescape};

/// The separators declared in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
    /// The v2.7+ truncation character (MSH-2 fifth character), if declared.
    pub truncation: Option<char>,
}

impl Default for Delimiters {
    fn default() -> Self {
        Delimiters {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Delimiters {
    /// MSH-2 as written.
    pub fn encoding_characters(&self) -> String {
        let mut s: String = [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .into_iter()
        .collect();
        s.extend(self.truncation);
        s
    }

    pub(crate) fn is_special(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
    }

    fn from_msh(field: char, msh2: &str) -> Result<Delimiters, ParseError> {
        let bad = |reason: String| ParseError::BadDelimiters { reason };
        let chars: Vec<char> = msh2.chars().collect();
        if !(4..=5).contains(&chars.len()) {
            return Err(bad(format!(
                "MSH-2 must hold 4 or 5 encoding characters, found {msh2:?}"
            )));
        }
        let mut all = vec![field];
        all.extend(&chars);
        for (i, c) in all.iter().enumerate() {
            if c.is_alphanumeric() || c.is_whitespace() || c.is_control() {
                return Err(bad(format!("{c:?} cannot be a delimiter")));
            }
            if all[..i].contains(c) {
                return Err(bad(format!("{c:?} is declared twice")));
            }
        }
        Ok(Delimiters {
            field,
            component: chars[0],
            repetition: chars[1],
            escape: chars[2],
            subcomponent: chars[3],
            truncation: chars.get(4).copied(),
        })
    }
}

/// A component: one or more sub-components (unescaped text).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Component(pub Vec<String>);

/// One repetition of a field: its components.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repetition(pub Vec<Component>);

/// A field: its repetitions (none when the field is empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field(pub Vec<Repetition>);

/// A segment: its id and fields. `fields[0]` is field 1 (for MSH, MSH-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: String,
    pub fields: Vec<Field>,
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub delimiters: Delimiters,
    /// The character set of the bytes (from MSH-18); used again by [`Message::encode`].
    pub charset: Charset,
    pub segments: Vec<Segment>,
}

impl Component {
    /// The first sub-component.
    pub fn text(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    /// Sub-component `n` (1-based), or `""`.
    pub fn sub(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.0.get(i))
            .map_or("", String::as_str)
    }
}

impl Repetition {
    /// Component `n` (1-based), first sub-component, or `""`.
    pub fn get(&self, n: usize) -> &str {
        self.component(n).map_or("", Component::text)
    }

    /// Component `n`, sub-component `s` (both 1-based), or `""`.
    pub fn sub(&self, n: usize, s: usize) -> &str {
        self.component(n).map_or("", |c| c.sub(s))
    }

    pub fn component(&self, n: usize) -> Option<&Component> {
        n.checked_sub(1).and_then(|i| self.0.get(i))
    }

    /// True when every component is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|c| c.0.iter().all(String::is_empty))
    }

    /// A repetition from component texts.
    pub fn from_components<S: AsRef<str>>(components: &[S]) -> Self {
        Repetition(
            components
                .iter()
                .map(|c| Component(vec![c.as_ref().to_owned()]))
                .collect(),
        )
    }
}

impl Field {
    /// A field holding one plain text value.
    pub fn text(value: impl Into<String>) -> Self {
        let value = value.into();
        if value.is_empty() {
            return Field::default();
        }
        Field(vec![Repetition(vec![Component(vec![value])])])
    }

    /// A field with one repetition of the given components (trailing empty components are
    /// left out; an all-empty list gives an empty field).
    pub fn components<S: AsRef<str>>(components: &[S]) -> Self {
        let len = components
            .iter()
            .rposition(|c| !c.as_ref().is_empty())
            .map_or(0, |i| i + 1);
        if len == 0 {
            return Field::default();
        }
        Field(vec![Repetition::from_components(&components[..len])])
    }

    /// The first repetition, if any.
    pub fn first(&self) -> Option<&Repetition> {
        self.0.first()
    }

    /// Whether the field holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Repetition::is_empty)
    }
}

impl Segment {
    pub fn new(id: &str) -> Self {
        Segment {
            id: id.to_owned(),
            fields: Vec::new(),
        }
    }

    /// Field `n` (1-based), if present.
    pub fn field(&self, n: usize) -> Option<&Field> {
        n.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    /// The repetitions of field `n` (empty when absent).
    pub fn reps(&self, n: usize) -> &[Repetition] {
        self.field(n).map_or(&[], |f| f.0.as_slice())
    }

    /// Field `n`, first repetition, first component, first sub-component, or `""`.
    pub fn get(&self, n: usize) -> &str {
        self.comp(n, 1)
    }

    /// Field `n`, first repetition, component `c`, first sub-component, or `""`.
    pub fn comp(&self, n: usize, c: usize) -> &str {
        self.reps(n).first().map_or("", |r| r.get(c))
    }

    /// The first repetition of field `n`, if present.
    pub fn rep(&self, n: usize) -> Option<&Repetition> {
        self.reps(n).first()
    }

    /// Set field `n` (1-based), growing the segment as needed.
    pub fn set(&mut self, n: usize, field: Field) -> &mut Self {
        if n == 0 {
            return self;
        }
        if self.fields.len() < n {
            self.fields.resize_with(n, Field::default);
        }
        self.fields[n - 1] = field;
        self
    }

    /// Builder form of [`Segment::set`] with a text value.
    #[must_use]
    pub fn with(mut self, n: usize, value: impl Into<String>) -> Self {
        self.set(n, Field::text(value));
        self
    }

    /// Builder form of [`Segment::set`].
    #[must_use]
    pub fn with_field(mut self, n: usize, field: Field) -> Self {
        self.set(n, field);
        self
    }
}

impl Message {
    /// The MSH segment (always the first segment of a parsed message).
    pub fn msh(&self) -> &Segment {
        &self.segments[0]
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// All segments with this id, in order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id == id)
    }

    /// MSH-9.1 (message code), e.g. `ADT`.
    pub fn message_code(&self) -> &str {
        self.msh().comp(9, 1)
    }

    /// MSH-9.2 (trigger event), e.g. `A01`.
    pub fn trigger_event(&self) -> &str {
        self.msh().comp(9, 2)
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> &str {
        self.msh().get(10)
    }

    /// MSH-12.1, the version id.
    pub fn version(&self) -> &str {
        self.msh().comp(12, 1)
    }

    /// The message as text, segments terminated by CR (before character-set encoding).
    pub fn to_text(&self) -> String {
        let d = &self.delimiters;
        let mut out = String::with_capacity(256 * self.segments.len());
        for seg in &self.segments {
            out.push_str(&seg.id);
            let is_msh = seg.id == "MSH";
            for (i, field) in seg.fields.iter().enumerate() {
                if is_msh && i == 0 {
                    out.push(d.field);
                    continue;
                }
                if is_msh && i == 1 {
                    out.push_str(&d.encoding_characters());
                    continue;
                }
                out.push(d.field);
                for (r, rep) in field.0.iter().enumerate() {
                    if r > 0 {
                        out.push(d.repetition);
                    }
                    for (c, comp) in rep.0.iter().enumerate() {
                        if c > 0 {
                            out.push(d.component);
                        }
                        for (s, sub) in comp.0.iter().enumerate() {
                            if s > 0 {
                                out.push(d.subcomponent);
                            }
                            out.push_str(&escape(sub, d));
                        }
                    }
                }
            }
            out.push('\r');
        }
        out
    }

    /// The message as bytes in its character set.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.charset.encode(&self.to_text())
    }
}

impl fmt::Display for Message {
    /// The text form with segments on separate lines (for logs and tests; contains PHI).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text().replace('\r', "\n"))
    }
}

/// Options for [`parse_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// The charset assumed when MSH-18 is empty (HL7 says ASCII; many US feeds send UTF-8
    /// or 8859/1 without saying so).
    pub default_charset: Charset,
}

/// Parse a message with the default options.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    parse_with(bytes, &ParseOptions::default())
}

/// Parse a message: find the delimiters and charset in the MSH segment, decode the bytes,
/// split segments (CR, LF or CRLF), fields, repetitions, components and sub-components, and
/// unescape every value.
pub fn parse_with(bytes: &[u8], options: &ParseOptions) -> Result<Message, ParseError> {
    let bytes = trim_leading(bytes);
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    if bytes.len() < 8 || &bytes[..3] != b"MSH" {
        let found = String::from_utf8_lossy(&bytes[..bytes.len().min(3)]).into_owned();
        return Err(ParseError::MissingMsh { found });
    }
    let charset = sniff_charset(bytes, options.default_charset)?;
    let text = charset.decode(bytes)?;
    parse_text(&text, charset)
}

fn trim_leading(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Read MSH-18 from the raw MSH segment (ASCII up to MSH-18 in every charset we support).
fn sniff_charset(bytes: &[u8], default: Charset) -> Result<Charset, ParseError> {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let msh = &bytes[..end];
    // Too short to name a charset: the delimiter check reports it.
    let Some(&field_sep) = msh.get(3) else {
        return Ok(default);
    };
    let repetition = msh.get(5).copied().unwrap_or(b'~');
    let Some(msh18) = msh.split(|&b| b == field_sep).nth(17) else {
        return Ok(default);
    };
    if msh18.is_empty() {
        return Ok(default);
    }
    let names: Vec<String> = msh18
        .split(|&b| b == repetition)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let charset = Charset::from_msh18(names.iter().map(String::as_str))?;
    if names.iter().all(|n| n.trim().is_empty()) {
        return Ok(default);
    }
    Ok(charset)
}

/// Parse already-decoded text.
fn parse_text(text: &str, charset: Charset) -> Result<Message, ParseError> {
    let mut chars = text.chars().skip(3);
    let field = chars.next().ok_or_else(|| ParseError::BadDelimiters {
        reason: "MSH-1 is missing".into(),
    })?;
    let rest = &text[3 + field.len_utf8()..];
    let msh2_end = rest.find([field, '\r', '\n']).unwrap_or(rest.len());
    let d = Delimiters::from_msh(field, &rest[..msh2_end])?;

    let mut segments = Vec::new();
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (index, line) in text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .enumerate()
    {
        let id_end = line.find(d.field).unwrap_or(line.len());
        let id = &line[..id_end];
        let valid_id = id.len() == 3
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if !valid_id || (index > 0 && id == "MSH") || (index == 0 && id != "MSH") {
            return Err(ParseError::BadSegmentId {
                index: index + 1,
                id: id.chars().take(16).collect(),
            });
        }
        let sequence = {
            let n = counts.entry(id).or_default();
            *n += 1;
            *n
        };
        let mut fields = Vec::new();
        let body = line.get(id_end + field.len_utf8()..).unwrap_or("");
        let mut raw_fields: Vec<&str> = if id_end < line.len() {
            body.split(d.field).collect()
        } else {
            Vec::new()
        };
        let mut first_field_no = 1;
        if id == "MSH" {
            fields.push(Field::text(d.field.to_string()));
            fields.push(Field::text(d.encoding_characters()));
            raw_fields.remove(0);
            first_field_no = 3;
        }
        for (i, raw) in raw_fields.into_iter().enumerate() {
            let field_no = first_field_no + i;
            fields.push(parse_field(raw, &d, charset, id, sequence, field_no)?);
        }
        segments.push(Segment {
            id: id.to_owned(),
            fields,
        });
    }
    Ok(Message {
        delimiters: d,
        charset,
        segments,
    })
}

fn parse_field(
    raw: &str,
    d: &Delimiters,
    charset: Charset,
    segment: &str,
    sequence: usize,
    field: usize,
) -> Result<Field, ParseError> {
    if raw.is_empty() {
        return Ok(Field::default());
    }
    let mut reps = Vec::new();
    for (r, raw_rep) in raw.split(d.repetition).enumerate() {
        let mut comps = Vec::new();
        for (c, raw_comp) in raw_rep.split(d.component).enumerate() {
            let mut subs = Vec::new();
            for (s, raw_sub) in raw_comp.split(d.subcomponent).enumerate() {
                subs.push(unescape(raw_sub, d, charset, || Location {
                    segment: segment.to_owned(),
                    sequence,
                    field: Some(field),
                    repetition: Some(r + 1),
                    component: Some(c + 1),
                    subcomponent: Some(s + 1),
                })?);
            }
            comps.push(Component(subs));
        }
        reps.push(Repetition(comps));
    }
    Ok(Field(reps))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &str = "MSH|^~\\&|HIS|GENHOSP|RENKEI|HIE|20260102030405+0900||ADT^A01^ADT_A01|MSG0001|P|2.5\r\
EVN|A01|20260102030405\r\
PID|1||12345^^^GENHOSP^MR~987^^^SSA^SS||Doe^John^Q||19700101|M\r\
PV1|1|I|W1^101^A^GENHOSP||||1234^Welby^Marcus\r";

    #[test]
    fn parses_fields_repetitions_components() {
        let m = parse(ADT.as_bytes()).unwrap();
        assert_eq!(m.segments.len(), 4);
        assert_eq!(m.msh().get(1), "|");
        assert_eq!(m.msh().get(2), "^~\\&");
        assert_eq!(m.message_code(), "ADT");
        assert_eq!(m.trigger_event(), "A01");
        assert_eq!(m.control_id(), "MSG0001");
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.reps(3).len(), 2);
        assert_eq!(pid.reps(3)[1].get(4), "SSA");
        assert_eq!(pid.comp(5, 2), "John");
        assert_eq!(m.to_text(), ADT);
    }

    #[test]
    fn accepts_lf_terminators_and_missing_final_cr() {
        let m = parse(ADT.replace('\r', "\n").trim_end().as_bytes()).unwrap();
        assert_eq!(m.to_text(), ADT);
    }

    #[test]
    fn custom_delimiters() {
        let m = parse(b"MSH#!@$%#A#B\rPID#1##x!y@z%w").unwrap();
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.reps(3)[0].get(2), "y");
        assert_eq!(pid.reps(3)[1].sub(1, 2), "w");
        assert_eq!(m.to_text(), "MSH#!@$%#A#B\rPID#1##x!y@z%w\r");
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert!(matches!(
            parse(b"PID|1||x"),
            Err(ParseError::MissingMsh { .. })
        ));
        assert!(matches!(
            parse(b"MSH|^~|x"),
            Err(ParseError::BadDelimiters { .. })
        ));
        assert!(matches!(
            parse(b"MSH|^^\\&|x"),
            Err(ParseError::BadDelimiters { .. })
        ));
        assert!(matches!(
            parse(b"MSH|^~\\&|x\rpid|1"),
            Err(ParseError::BadSegmentId { index: 2, .. })
        ));
    }
}
