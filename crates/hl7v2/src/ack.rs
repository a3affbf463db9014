//! Acknowledgements (original and enhanced mode, HL7 v2 chapter 2) and the idempotency
//! record that makes a re-sent message return the same ACK.
//!
//! # Modes
//! - **Original** (MSH-15 and MSH-16 empty): one application ACK on the same connection:
//!   `AA` accepted, `AE` error in the content (with ERR segments), `AR` rejected (unsupported
//!   message type, event, processing id or version; unreadable MSH).
//! - **Enhanced** (MSH-15/MSH-16 hold table 0155 conditions `AL`, `NE`, `ER`, `SU`): an
//!   accept ACK `CA`/`CE`/`CR` when the message has been safely stored, sent on the
//!   connection if MSH-15 asks for it; the application ACK (`AA`/`AE`/`AR`) is a separate
//!   message the receiver sends back later if MSH-16 asks for it.
//!
//! # Idempotency
//! [`IdempotencyKey`] is (MSH-3, MSH-4, MSH-10): control ids are unique per sending
//! application and facility, not globally. The receiver keeps a [`StoredAck`] per key: the
//! encoded ACK and a [`fingerprint`] of the message. A message with a known key and the same
//! fingerprint gets the stored ACK back, byte for byte, and is not processed again; a known
//! key with a *different* fingerprint is a sender re-using a control id, answered `AE` with
//! code 205 (duplicate key identifier) and not processed. The stored ACK is written in the
//! same store transaction as the resources the message produced, so "processed" and
//! "acknowledged" cannot disagree after a crash.

use crate::Charset;
use crate::error::{ErrorCode, ErrorDetail, Location, ParseError, Severity};
use crate::message::{Component, Delimiters, Field, Message, Repetition, Segment};

/// MSA-1 acknowledgement codes (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit (accept) accept.
    CA,
    /// Commit error.
    CE,
    /// Commit reject.
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    pub fn parse(code: &str) -> Option<AckCode> {
        Some(match code {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    fn is_success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// When an acknowledgement is wanted (HL7 table 0155, MSH-15 and MSH-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    /// `AL`: always.
    Always,
    /// `NE`: never.
    Never,
    /// `ER`: only on error or reject.
    ErrorOnly,
    /// `SU`: only on success.
    SuccessOnly,
}

impl AckCondition {
    fn parse(value: &str) -> Option<AckCondition> {
        Some(match value {
            "AL" => AckCondition::Always,
            "NE" => AckCondition::Never,
            "ER" => AckCondition::ErrorOnly,
            "SU" => AckCondition::SuccessOnly,
            _ => return None,
        })
    }

    fn wants(self, code: AckCode) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::ErrorOnly => !code.is_success(),
            AckCondition::SuccessOnly => code.is_success(),
        }
    }
}

/// The acknowledgement mode a message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Original,
    Enhanced {
        accept: AckCondition,
        application: AckCondition,
    },
}

impl AckMode {
    /// From MSH-15 and MSH-16: original mode when both are empty. In enhanced mode an empty
    /// or unknown condition means "always" for the accept ACK (the receiver must say it has
    /// the message) and "never" for the application ACK.
    pub fn of(message: &Message) -> AckMode {
        let msh = message.msh();
        let (accept, application) = (msh.get(15), msh.get(16));
        if accept.is_empty() && application.is_empty() {
            return AckMode::Original;
        }
        AckMode::Enhanced {
            accept: AckCondition::parse(accept).unwrap_or(AckCondition::Always),
            application: AckCondition::parse(application).unwrap_or(AckCondition::Never),
        }
    }
}

/// What processing decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored (durably, before this is built).
    Accepted,
    /// Stored, with warnings the sender should hear of: `AA`/`CA` with an `ERR` segment
    /// (severity `W`) each.
    Warned(Vec<ErrorDetail>),
    /// Content errors: nothing was stored.
    Error(Vec<ErrorDetail>),
    /// Rejected outright (unsupported type, event, version, processing id; unreadable MSH).
    Rejected(Vec<ErrorDetail>),
}

impl Outcome {
    /// The outcome for these errors: a rejection if any of them rejects, accepted (with
    /// them as warnings) if all are warnings.
    pub fn from_errors(errors: Vec<ErrorDetail>) -> Outcome {
        if errors.is_empty() {
            Outcome::Accepted
        } else if errors.iter().all(|e| e.severity != Severity::Error) {
            Outcome::Warned(errors)
        } else if errors.iter().any(|e| e.code.is_rejection()) {
            Outcome::Rejected(errors)
        } else {
            Outcome::Error(errors)
        }
    }

    /// The ERR segments' details.
    pub fn errors(&self) -> &[ErrorDetail] {
        match self {
            Outcome::Accepted => &[],
            Outcome::Warned(e) | Outcome::Error(e) | Outcome::Rejected(e) => e,
        }
    }

    /// MSA-1 of the application ACK.
    pub fn application_code(&self) -> AckCode {
        match self {
            Outcome::Accepted | Outcome::Warned(_) => AckCode::AA,
            Outcome::Error(_) => AckCode::AE,
            Outcome::Rejected(_) => AckCode::AR,
        }
    }

    fn accept_code(&self) -> AckCode {
        match self {
            Outcome::Accepted | Outcome::Warned(_) => AckCode::CA,
            Outcome::Error(_) => AckCode::CE,
            Outcome::Rejected(_) => AckCode::CR,
        }
    }
}

/// The receiver's side of the ACK header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckHeader {
    /// MSH-3 of the ACK when the message's MSH-5 (receiving application) is empty; otherwise
    /// the ACK answers from the MSH-5 the sender addressed.
    pub application: String,
    /// MSH-4 of the ACK when the message's MSH-6 (receiving facility) is empty.
    pub facility: String,
    /// MSH-10 of the ACK: a control id of the receiver's own.
    pub control_id: String,
    /// MSH-7 of the ACK, an HL7 DTM such as `20260102030405+0900` (the caller owns clocks).
    pub timestamp: String,
}

/// The ACKs to send for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acks {
    /// Sent back on the connection now: the application ACK in original mode, the accept
    /// ACK in enhanced mode (if MSH-15 asks for it).
    pub immediate: Option<Message>,
    /// Enhanced mode only: the application ACK to deliver to the sender later (if MSH-16
    /// asks for it).
    pub deferred: Option<Message>,
}

/// Build the acknowledgements for `original` given the outcome of processing it.
pub fn acknowledge(original: &Message, outcome: &Outcome, header: &AckHeader) -> Acks {
    match AckMode::of(original) {
        AckMode::Original => Acks {
            immediate: Some(build_ack(
                original,
                outcome.application_code(),
                outcome.errors(),
                header,
            )),
            deferred: None,
        },
        AckMode::Enhanced {
            accept,
            application,
        } => {
            let accept_code = outcome.accept_code();
            let app_code = outcome.application_code();
            Acks {
                immediate: accept
                    .wants(accept_code)
                    .then(|| build_ack(original, accept_code, outcome.errors(), header)),
                deferred: application
                    .wants(app_code)
                    .then(|| build_ack(original, app_code, outcome.errors(), header)),
            }
        }
    }
}

/// Build one ACK message (MSH, MSA, one ERR per error) answering `original`.
pub fn build_ack(
    original: &Message,
    code: AckCode,
    errors: &[ErrorDetail],
    header: &AckHeader,
) -> Message {
    let msh_in = original.msh();
    let version = original.version();
    let version = if version.is_empty() { "2.5" } else { version };
    let event = original.trigger_event();
    // v2.3 has no message structure component; its examples write plain `ACK` (and
    // `ACK^A01` has no structure definition that a strict reader could find).
    let message_type = if version == "2.3" {
        Field::text("ACK")
    } else {
        Field::components(&["ACK", event, "ACK"])
    };
    let d = original.delimiters;
    // The ACK comes from the application and facility the message was sent to (its MSH-5
    // and MSH-6), so the sender sees the names it addressed; the header's own names only
    // stand in when the message left them empty.
    let receiver = |n: usize, own: &str| {
        msh_in
            .field(n)
            .filter(|f| !f.is_empty())
            .cloned()
            .unwrap_or_else(|| Field::text(own))
    };
    let msh = Segment::new("MSH")
        .with(1, d.field.to_string())
        .with(2, d.encoding_characters())
        .with_field(3, receiver(5, &header.application))
        .with_field(4, receiver(6, &header.facility))
        .with_field(5, msh_in.field(3).cloned().unwrap_or_default())
        .with_field(6, msh_in.field(4).cloned().unwrap_or_default())
        .with(7, header.timestamp.clone())
        .with_field(9, message_type)
        .with(10, header.control_id.clone())
        .with_field(
            11,
            msh_in
                .field(11)
                .cloned()
                .unwrap_or_else(|| Field::text("P")),
        )
        .with_field(
            12,
            msh_in
                .field(12)
                .cloned()
                .unwrap_or_else(|| Field::text(version)),
        );
    // Answer in the sender's character set (MSH-18) and code-extension scheme (MSH-20,
    // `ISO 2022-1994` for JAHIS).
    let mut msh = msh;
    for n in [18, 20] {
        if let Some(f) = msh_in.field(n).filter(|f| !f.is_empty()) {
            msh.set(n, f.clone());
        }
    }
    let mut msa = Segment::new("MSA")
        .with(1, code.as_str())
        .with(2, original.control_id());
    let old_err = matches!(version, "2.3" | "2.3.1" | "2.4");
    if old_err && let Some(first) = errors.first() {
        msa.set(3, Field::text(truncate(&first.message, 80)));
    }
    let mut segments = vec![msh, msa];
    for e in errors {
        segments.push(err_segment(e, old_err));
    }
    Message {
        delimiters: d,
        charset: original.charset,
        segments,
    }
}

/// The ACK for bytes that could not be parsed: MSH fields are salvaged when the segment is
/// readable enough, so the sender can match the ACK to its message.
pub fn ack_unparseable(raw: &[u8], error: &ParseError, header: &AckHeader) -> Message {
    let salvaged = salvage_msh(raw);
    let detail = error.detail();
    let code = if error.is_rejection() {
        AckCode::AR
    } else {
        AckCode::AE
    };
    build_ack(&salvaged, code, &[detail], header)
}

impl ParseError {
    /// Whether the whole message is rejected (`AR`) rather than having a content error.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ParseError::Empty
                | ParseError::MissingMsh { .. }
                | ParseError::BadDelimiters { .. }
                | ParseError::UnsupportedCharset { .. }
        )
    }
}

/// A minimal message holding what could be read of an unparseable message's MSH.
fn salvage_msh(raw: &[u8]) -> Message {
    let line_end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    let line = &raw[..line_end];
    let mut msh = Segment::new("MSH").with(1, "|").with(2, "^~\\&");
    if line.len() > 8 && line.starts_with(b"MSH") {
        let sep = line[3];
        for (i, raw_field) in line.split(|&b| b == sep).enumerate().skip(2) {
            let n = i + 1;
            if matches!(n, 3..=6 | 10..=12) && raw_field.iter().all(|b| b.is_ascii_graphic()) {
                let text: String = raw_field.iter().map(|&b| b as char).collect();
                // Only the first component, without any delimiter we could not confirm.
                let value: String = text
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
                    .collect();
                msh.set(n, Field::text(value));
            }
            if n == 9 {
                let text: String = raw_field.iter().map(|&b| b as char).collect();
                let event: String = text.chars().skip(4).take(3).collect();
                if event.chars().all(|c| c.is_ascii_alphanumeric()) {
                    msh.set(9, Field::components(&["", event.as_str()]));
                }
            }
        }
    }
    Message {
        delimiters: Delimiters::default(),
        charset: Charset::Ascii,
        segments: vec![msh],
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn num(n: Option<usize>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

fn err_segment(e: &ErrorDetail, old_style: bool) -> Segment {
    let loc = e.location.clone().unwrap_or_default();
    if old_style {
        // v2.3/2.4 ERR-1 (ELD): segment^sequence^field^code&text&HL70357.
        let code = Component(vec![
            e.code.code().to_owned(),
            e.code.text().to_owned(),
            "HL70357".to_owned(),
        ]);
        let rep = Repetition(vec![
            Component(vec![loc.segment.clone()]),
            Component(vec![if loc.segment.is_empty() {
                String::new()
            } else {
                loc.sequence.to_string()
            }]),
            Component(vec![num(loc.field)]),
            code,
        ]);
        return Segment::new("ERR").with_field(1, Field(vec![rep]));
    }
    let location = if loc.segment.is_empty() {
        Field::default()
    } else {
        Field::components(&[
            loc.segment.clone(),
            loc.sequence.to_string(),
            num(loc.field),
            num(loc.repetition),
            num(loc.component),
            num(loc.subcomponent),
        ])
    };
    Segment::new("ERR")
        .with_field(2, location)
        .with_field(
            3,
            Field::components(&[e.code.code(), e.code.text(), "HL70357"]),
        )
        .with(4, e.severity.code())
        .with(8, truncate(&e.message, 250))
}

/// The idempotency key of a message: (MSH-3, MSH-4, MSH-10).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey {
    pub sending_application: String,
    pub sending_facility: String,
    pub control_id: String,
}

impl IdempotencyKey {
    /// The key of a message; `None` when MSH-10 is empty (such a message cannot be
    /// de-duplicated, and is answered `AE` 101 at MSH-10).
    pub fn of(message: &Message) -> Option<IdempotencyKey> {
        let msh = message.msh();
        let control_id = msh.get(10);
        if control_id.is_empty() {
            return None;
        }
        let hd = |n: usize| {
            msh.rep(n)
                .map(|r| {
                    r.0.iter()
                        .map(Component::text)
                        .collect::<Vec<_>>()
                        .join("^")
                        .trim_end_matches('^')
                        .to_owned()
                })
                .unwrap_or_default()
        };
        Some(IdempotencyKey {
            sending_application: hd(3),
            sending_facility: hd(4),
            control_id: control_id.to_owned(),
        })
    }

    /// One string form for a unique index: the three parts joined by `|`, each part's own
    /// `|` and `\` escaped, so distinct keys never collide.
    pub fn to_key_string(&self) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('|', "\\|");
        format!(
            "{}|{}|{}",
            esc(&self.sending_application),
            esc(&self.sending_facility),
            esc(&self.control_id)
        )
    }
}

/// The ACK kept for a processed message (persisted by the store with the resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAck {
    pub key: IdempotencyKey,
    /// [`fingerprint`] of the message this ACK answered.
    pub fingerprint: u64,
    /// MSA-1 of the ACK.
    pub code: AckCode,
    /// The encoded ACK, returned unchanged on a re-send.
    pub ack: Vec<u8>,
}

/// What to do with a message given the stored ACK for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<'a> {
    /// Never seen: process it.
    New,
    /// A re-send of a processed message: answer with these bytes, process nothing.
    Resend(&'a [u8]),
    /// The control id was used before for a different message: answer `AE` 205.
    Conflict(ErrorDetail),
}

/// Decide how to treat `message` given what is stored for its key.
pub fn replay<'a>(message: &Message, stored: Option<&'a StoredAck>) -> Replay<'a> {
    match stored {
        None => Replay::New,
        Some(s) if s.fingerprint == fingerprint(message) => Replay::Resend(&s.ack),
        Some(_) => Replay::Conflict(ErrorDetail {
            location: Some(Location::field("MSH", 1, 10)),
            code: ErrorCode::DuplicateKeyIdentifier,
            severity: Severity::Error,
            message: "message control id already used by this sender for a different message"
                .to_owned(),
        }),
    }
}

/// A stable 64-bit FNV-1a fingerprint of a message's content, ignoring MSH-7 (senders often
/// re-stamp the time when they re-send). Stable across builds and platforms, since it is
/// persisted; not a security hash.
pub fn fingerprint(message: &Message) -> u64 {
    let text = message.to_text();
    let sep = message.delimiters.field;
    let msh_end = text.find('\r').unwrap_or(text.len());
    let mut hash = Fnv::default();
    // MSH with field 7 emptied: "MSH" is piece 0 and MSH-1 the separator, so MSH-7 is piece 6.
    for (i, piece) in text[..msh_end].split(sep).enumerate() {
        if i > 0 {
            hash.write(sep.encode_utf8(&mut [0; 4]).as_bytes());
        }
        if i != 6 {
            hash.write(piece.as_bytes());
        }
    }
    hash.write(&text.as_bytes()[msh_end..]);
    hash.0
}

/// Incremental FNV-1a (64 bits).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv::default();
    hash.write(bytes);
    hash.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    fn header() -> AckHeader {
        AckHeader {
            application: "SELF".into(),
            facility: "HERE".into(),
            control_id: "ACK0001".into(),
            timestamp: "20260102030405+0900".into(),
        }
    }

    const MSG: &str = "MSH|^~\\&|HIS|GENHOSP|RENKEI|HIE|20260102030405||ADT^A01^ADT_A01|MSG1|P|2.5\rEVN|A01\rPID|1||1^^^H^MR\r";

    #[test]
    fn original_mode_aa_and_ae_with_err() {
        let m = parse(MSG.as_bytes()).unwrap();
        let acks = acknowledge(&m, &Outcome::Accepted, &header());
        assert_eq!(acks.deferred, None);
        assert_eq!(
            acks.immediate.unwrap().to_text(),
            "MSH|^~\\&|RENKEI|HIE|HIS|GENHOSP|20260102030405+0900||ACK^A01^ACK|ACK0001|P|2.5\rMSA|AA|MSG1\r"
        );
        let err = ErrorDetail {
            location: Some(Location::field("PID", 1, 7)),
            code: ErrorCode::DataTypeError,
            severity: Severity::Error,
            message: "PID-7 is not a date".into(),
        };
        let ack = acknowledge(&m, &Outcome::Error(vec![err]), &header())
            .immediate
            .unwrap();
        assert_eq!(
            ack.to_text().split('\r').nth(2).unwrap(),
            "ERR||PID^1^7^1|102^Data type error^HL70357|E||||PID-7 is not a date"
        );
    }

    #[test]
    fn the_ack_comes_from_whom_the_message_addressed() {
        // MSH-3/4 of the ACK are the message's MSH-5/6, components and all; MSH-5/6 its
        // MSH-3/4.
        let m = parse(
            MSG.replace("|RENKEI|HIE|", "|RENKEI^1.2.3^ISO|HIE|")
                .as_bytes(),
        )
        .unwrap();
        let ack = acknowledge(&m, &Outcome::Accepted, &header())
            .immediate
            .unwrap();
        assert!(
            ack.to_text()
                .starts_with("MSH|^~\\&|RENKEI^1.2.3^ISO|HIE|HIS|GENHOSP|"),
            "{}",
            ack.to_text()
        );
        // Nothing addressed: the receiver's own names.
        let m = parse(MSG.replace("|RENKEI|HIE|", "|||").as_bytes()).unwrap();
        let ack = acknowledge(&m, &Outcome::Accepted, &header())
            .immediate
            .unwrap();
        assert!(
            ack.to_text()
                .starts_with("MSH|^~\\&|SELF|HERE|HIS|GENHOSP|"),
            "{}",
            ack.to_text()
        );
        // An unparseable message's MSH-5/6 are salvaged too.
        let raw = b"MSH|^~|HIS|GENHOSP|RENKEI|HIE|2026||ADT^A01|C42|P|2.5\r";
        let ack = ack_unparseable(raw, &parse(raw).unwrap_err(), &header());
        assert!(
            ack.to_text()
                .starts_with("MSH|^~\\&|RENKEI|HIE|HIS|GENHOSP|"),
            "{}",
            ack.to_text()
        );
    }

    #[test]
    fn warnings_ride_on_an_aa() {
        let m = parse(MSG.as_bytes()).unwrap();
        let warning = ErrorDetail {
            location: Some(Location::field("OBX", 1, 14)),
            code: ErrorCode::DataTypeError,
            severity: Severity::Warning,
            message: "read as the earlier offset".into(),
        };
        let outcome = Outcome::from_errors(vec![warning]);
        assert!(matches!(outcome, Outcome::Warned(_)));
        let ack = acknowledge(&m, &outcome, &header()).immediate.unwrap();
        let text = ack.to_text();
        assert!(
            text.contains("\rMSA|AA|MSG1\rERR||OBX^1^14^1|102^Data type error^HL70357|W|"),
            "{text}"
        );
    }

    #[test]
    fn enhanced_mode() {
        let m = parse(MSG.replace("|P|2.5", "|P|2.5|||AL|ER").as_bytes()).unwrap();
        let acks = acknowledge(&m, &Outcome::Accepted, &header());
        assert_eq!(acks.immediate.unwrap().segment("MSA").unwrap().get(1), "CA");
        assert_eq!(acks.deferred, None);
        let acks = acknowledge(&m, &Outcome::Rejected(vec![]), &header());
        assert_eq!(acks.immediate.unwrap().segment("MSA").unwrap().get(1), "CR");
        assert_eq!(acks.deferred.unwrap().segment("MSA").unwrap().get(1), "AR");
    }

    #[test]
    fn old_versions_use_err_1() {
        let m = parse(MSG.replace("|P|2.5", "|P|2.3").as_bytes()).unwrap();
        let err = ErrorDetail {
            location: Some(Location::field("PID", 1, 3)),
            code: ErrorCode::RequiredFieldMissing,
            severity: Severity::Error,
            message: "PID-3 is required".into(),
        };
        let ack = build_ack(&m, AckCode::AE, &[err], &header());
        let text = ack.to_text();
        assert!(text.contains("||ACK|ACK0001|P|2.3\r"), "{text}");
        assert!(
            text.contains(
                "MSA|AE|MSG1|PID-3 is required\rERR|PID^1^3^101&Required field missing&HL70357\r"
            ),
            "{text}"
        );
    }

    #[test]
    fn unparseable_messages_get_an_ar_with_salvaged_header() {
        let raw = b"MSH|^~|HIS|GENHOSP|R|H|2026||ADT^A01|C42|P|2.5\r";
        let err = parse(raw).unwrap_err();
        let ack = ack_unparseable(raw, &err, &header());
        let text = ack.to_text();
        assert!(text.contains("|HIS|GENHOSP|"), "{text}");
        assert!(text.contains("\rMSA|AR|C42\rERR||MSH^1^2^1|102^"), "{text}");
    }

    #[test]
    fn idempotency_key_and_replay() {
        let m = parse(MSG.as_bytes()).unwrap();
        let key = IdempotencyKey::of(&m).unwrap();
        assert_eq!(key.to_key_string(), "HIS|GENHOSP|MSG1");
        let stored = StoredAck {
            key,
            fingerprint: fingerprint(&m),
            code: AckCode::AA,
            ack: b"ACK".to_vec(),
        };
        // Re-stamped MSH-7 is still the same message.
        let resent = parse(MSG.replace("20260102030405", "20260102039999").as_bytes()).unwrap();
        assert_eq!(replay(&resent, Some(&stored)), Replay::Resend(b"ACK"));
        let other = parse(MSG.replace("PID|1", "PID|2").as_bytes()).unwrap();
        assert!(matches!(replay(&other, Some(&stored)), Replay::Conflict(_)));
        assert_eq!(replay(&m, None), Replay::New);
    }
}
