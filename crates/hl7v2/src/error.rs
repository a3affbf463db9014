//! Typed errors of the codec, the structure matcher and the mapping, with what an ACK needs:
//! an HL7 table 0357 code, a severity, and an ERR-2 location (segment, repetition, field,
//! component, sub-component).

use std::fmt;

/// Where in a message something went wrong (HL7 data type ERL, used in ERR-2).
///
/// All positions are 1-based, as in HL7. `sequence` is the occurrence number of this segment
/// id in the message (the second OBX has sequence 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub segment: String,
    pub sequence: usize,
    pub field: Option<usize>,
    pub repetition: Option<usize>,
    pub component: Option<usize>,
    pub subcomponent: Option<usize>,
}

impl Location {
    /// A whole segment.
    pub fn segment(segment: &str, sequence: usize) -> Self {
        Location {
            segment: segment.to_owned(),
            sequence,
            ..Location::default()
        }
    }

    /// A field (first repetition) of a segment.
    pub fn field(segment: &str, sequence: usize, field: usize) -> Self {
        Location {
            field: Some(field),
            repetition: Some(1),
            ..Location::segment(segment, sequence)
        }
    }

    /// The same location narrowed to a component.
    #[must_use]
    pub fn with_component(mut self, component: usize) -> Self {
        self.component = Some(component);
        self
    }
}

impl fmt::Display for Location {
    /// `PID[1]-5[2].1.1`: segment[sequence]-field[repetition].component.subcomponent.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.segment, self.sequence)?;
        if let Some(field) = self.field {
            write!(f, "-{field}")?;
            if let Some(rep) = self.repetition {
                write!(f, "[{rep}]")?;
            }
            if let Some(c) = self.component {
                write!(f, ".{c}")?;
                if let Some(s) = self.subcomponent {
                    write!(f, ".{s}")?;
                }
            }
        }
        Ok(())
    }
}

/// HL7 table 0357 (message error condition codes), as sent in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MessageAccepted,
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    ValueTooLong,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    UnknownKeyIdentifier,
    DuplicateKeyIdentifier,
    ApplicationRecordLocked,
    ApplicationInternalError,
}

impl ErrorCode {
    /// The numeric code of table 0357.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "0",
            ErrorCode::SegmentSequenceError => "100",
            ErrorCode::RequiredFieldMissing => "101",
            ErrorCode::DataTypeError => "102",
            ErrorCode::TableValueNotFound => "103",
            ErrorCode::ValueTooLong => "104",
            ErrorCode::UnsupportedMessageType => "200",
            ErrorCode::UnsupportedEventCode => "201",
            ErrorCode::UnsupportedProcessingId => "202",
            ErrorCode::UnsupportedVersionId => "203",
            ErrorCode::UnknownKeyIdentifier => "204",
            ErrorCode::DuplicateKeyIdentifier => "205",
            ErrorCode::ApplicationRecordLocked => "206",
            ErrorCode::ApplicationInternalError => "207",
        }
    }

    /// The display text of table 0357.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::ValueTooLong => "Value too long",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }

    /// Whether this condition rejects the message outright (`AR`/`CR`) rather than reporting
    /// an error in its content (`AE`/`CE`).
    pub fn is_rejection(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedMessageType
                | ErrorCode::UnsupportedEventCode
                | ErrorCode::UnsupportedProcessingId
                | ErrorCode::UnsupportedVersionId
        )
    }
}

/// ERR-4 severity (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
    Information,
}

impl Severity {
    pub fn code(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Information => "I",
        }
    }
}

/// One ERR segment's worth of information; every error type of this crate converts to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    pub location: Option<Location>,
    pub code: ErrorCode,
    pub severity: Severity,
    /// Human-readable diagnostic (ERR-8 user message). It is for the sender, who owns the
    /// data: values from the message are quoted (`"19990230"`, `'M'`), so that
    /// [`ErrorDetail::log_text`] can leave them out.
    pub message: String,
}

impl ErrorDetail {
    /// The detail for a log line: table 0357 code and text, location, and the message with
    /// every quoted value replaced by `…` (a log holds no patient data).
    pub fn log_text(&self) -> String {
        let mut text = format!("{} {}", self.code.code(), self.code.text());
        let mut message = self.message.as_str();
        if let Some(location) = &self.location {
            let location = location.to_string();
            message = message
                .strip_prefix(location.as_str())
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(message);
            text.push_str(&format!(" at {location}"));
        }
        if self.severity != Severity::Error {
            text.push_str(&format!(" ({})", self.severity.code()));
        }
        format!("{text}: {}", without_quoted(message))
    }
}

/// `text` with the inside of every quotation (`"..."`, as `{:?}` writes values, and `'...'`,
/// as the FHIR validator does) replaced by `…`. An apostrophe inside a word opens nothing;
/// an unclosed quotation hides the rest.
fn without_quoted(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let word = |i: usize| chars.get(i).is_some_and(|c| c.is_alphanumeric());
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = c == '"' || (c == '\'' && (i == 0 || !word(i - 1)));
        if !opens {
            out.push(c);
            i += 1;
            continue;
        }
        let mut escaped = false;
        let close = (i + 1..chars.len()).find(|&j| {
            let here = chars[j];
            let found = !escaped && here == c && (c == '"' || !word(j + 1));
            escaped = !escaped && here == '\\';
            found
        });
        out.push(c);
        out.push('…');
        match close {
            Some(j) => {
                out.push(c);
                i = j + 1;
            }
            None => break,
        }
    }
    out
}

/// Errors of [`crate::parse`]: bytes that are not an HL7 v2 message we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is empty")]
    Empty,
    #[error("the message does not start with an MSH segment (it starts with {found:?})")]
    MissingMsh { found: String },
    #[error("MSH-1/MSH-2 do not define valid delimiters: {reason}")]
    BadDelimiters { reason: String },
    #[error(
        "segment {index} has an invalid segment id {id:?} (three upper-case letters or digits expected)"
    )]
    BadSegmentId { index: usize, id: String },
    #[error("{location}: invalid escape sequence {sequence}")]
    InvalidEscape {
        location: Box<Location>,
        sequence: String,
    },
    #[error("unsupported character set {name:?} in MSH-18")]
    UnsupportedCharset { name: String },
    #[error("the bytes are not valid {charset} (first invalid byte near offset {offset})")]
    InvalidBytes {
        charset: &'static str,
        offset: usize,
    },
}

impl ParseError {
    /// The ERR segment for this error.
    pub fn detail(&self) -> ErrorDetail {
        let (location, code) = match self {
            ParseError::Empty | ParseError::MissingMsh { .. } => {
                (None, ErrorCode::SegmentSequenceError)
            }
            ParseError::BadDelimiters { .. } => {
                (Some(Location::field("MSH", 1, 2)), ErrorCode::DataTypeError)
            }
            ParseError::BadSegmentId { .. } => (None, ErrorCode::SegmentSequenceError),
            ParseError::InvalidEscape { location, .. } => {
                (Some((**location).clone()), ErrorCode::DataTypeError)
            }
            ParseError::UnsupportedCharset { .. } | ParseError::InvalidBytes { .. } => (
                Some(Location::field("MSH", 1, 18)),
                ErrorCode::DataTypeError,
            ),
        };
        ErrorDetail {
            location,
            code,
            severity: Severity::Error,
            message: self.to_string(),
        }
    }
}

/// Errors of [`crate::Message::encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{character:?} cannot be represented in {charset}")]
    Unrepresentable {
        character: char,
        charset: &'static str,
    },
}

/// Errors of [`crate::structure`]: segments that do not fit the message structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("unsupported message type {message_type} (structure {structure:?})")]
    UnsupportedMessageType {
        message_type: String,
        structure: String,
    },
    #[error("unsupported processing id {processing_id:?} in MSH-11 (P, D or T expected)")]
    UnsupportedProcessingId { processing_id: String },
    #[error("unsupported HL7 version {version:?} (2.3 to 2.8 are supported)")]
    UnsupportedVersion { version: String },
    #[error("{location}: {}", unexpected(.found, .structure, .version, .expected, .required))]
    UnexpectedSegment {
        location: Box<Location>,
        found: String,
        structure: String,
        /// MSH-12: the version whose structure this is.
        version: &'static str,
        expected: Vec<String>,
        /// Those of `expected` that the structure requires at that point.
        required: Vec<String>,
    },
    #[error("{structure}: the message ends where {} is required", missing(.expected, .required))]
    MissingSegment {
        structure: String,
        version: &'static str,
        expected: Vec<String>,
        required: Vec<String>,
    },
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!("; expected {}", expected.join(" or "))
    }
}

/// `segment PID is not expected here in ADT_A01; EVN is required before it by the v2.5
/// ADT_A01 structure (expected EVN or SFT or UAC)`.
fn unexpected(
    found: &str,
    structure: &str,
    version: &str,
    expected: &[String],
    required: &[String],
) -> String {
    if required.is_empty() {
        return format!(
            "segment {found} is not expected here in {structure}{}",
            expected_list(expected)
        );
    }
    format!(
        "segment {found} is not expected here in {structure}; {} is required before it by \
         the v{version} {structure} structure (expected {})",
        required.join(" or "),
        expected.join(" or ")
    )
}

/// What the message should have gone on with: the required segments, else any expected.
fn missing(expected: &[String], required: &[String]) -> String {
    if required.is_empty() {
        expected.join(" or ")
    } else {
        required.join(" or ")
    }
}

impl StructureError {
    pub fn detail(&self) -> ErrorDetail {
        let (location, code) = match self {
            StructureError::UnsupportedMessageType { .. } => (
                Some(Location::field("MSH", 1, 9)),
                ErrorCode::UnsupportedMessageType,
            ),
            StructureError::UnsupportedProcessingId { .. } => (
                Some(Location::field("MSH", 1, 11)),
                ErrorCode::UnsupportedProcessingId,
            ),
            StructureError::UnsupportedVersion { .. } => (
                Some(Location::field("MSH", 1, 12)),
                ErrorCode::UnsupportedVersionId,
            ),
            StructureError::UnexpectedSegment { location, .. } => {
                (Some((**location).clone()), ErrorCode::SegmentSequenceError)
            }
            StructureError::MissingSegment { .. } => (None, ErrorCode::SegmentSequenceError),
        };
        ErrorDetail {
            location,
            code,
            severity: Severity::Error,
            message: self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_leaves_values_out() {
        let detail = ErrorDetail {
            location: Some(Location::field("PID", 1, 7)),
            code: ErrorCode::DataTypeError,
            severity: Severity::Error,
            message: "PID[1]-7[1]: \"19990230\" is not an HL7 date/time (no such day)".into(),
        };
        assert_eq!(
            detail.log_text(),
            "102 Data type error at PID[1]-7[1]: \"…\" is not an HL7 date/time (no such day)"
        );
        for (text, logged) in [
            ("gender: 'M' is not valid", "gender: '…' is not valid"),
            ("the sender's id 'X\\'s' twice", "the sender's id '…' twice"),
            ("\"a \\\" b\" and \"c\"", "\"…\" and \"…\""),
            ("unclosed \"Doe^Jane", "unclosed \"…"),
            ("nothing quoted", "nothing quoted"),
        ] {
            assert_eq!(without_quoted(text), logged, "{text}");
        }
    }
}
