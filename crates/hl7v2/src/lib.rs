//! HL7 v2 for Renkei: the codec (parse and encode v2.3 to v2.8), character sets, MLLP
//! framing, message structures, acknowledgements, and the mapping to FHIR R4.
//!
//! # What this crate owns
//! - [`parse`] / [`Message::encode`]: delimiters from MSH-1/MSH-2, escape sequences
//!   (`escape`), repetitions, components and sub-components; character sets from MSH-18
//!   ([`Charset`]: ASCII, 8859/1, UTF-8 and ISO-2022-JP for SS-MIX2/JAHIS).
//! - [`structure`]: segment groups of the message structures Renkei maps.
//! - [`mllp`]: the pure streaming frame decoder (`parse_frame -> Result<Option<Frame>>`).
//! - [`ack`]: ACK/NAK building in original and enhanced mode, the idempotency key and the
//!   stored-ACK record.
//! - [`fhir`]: v2 -> FHIR R4 transaction Bundles (`fhir::to_transaction`).
//! - `generate` (cargo feature `generate`, off by default): a deterministic generator of
//!   JAHIS- and US-style messages for tests and benchmarks.
//!
//! # What it must not do
//! No sockets, no files, no SQL, no clock, no async runtime: bytes in, values out. The TCP
//! listener is the `mllp` crate, SS-MIX2 files are the `ssmix2` crate, persistence is the
//! store. That keeps every function here testable with plain values and fuzzable.
//!
//! # Errors
//! Every error is typed and converts to an [`ErrorDetail`]: an HL7 table 0357 code, a
//! severity and an ERR-2 [`Location`] (segment, sequence, field, repetition, component,
//! sub-component), which is exactly what an ACK's ERR segment needs. Nothing panics on
//! input (the parser, the mapping and the MLLP decoder are property-tested on arbitrary
//! bytes).
//!
//! # Design decisions
//! - **Decode, then split.** The whole message is decoded to UTF-8 using MSH-18 before it
//!   is split on delimiters, since JIS X 0208 byte pairs may contain `|` or `^`.
//! - **Unescaped values in memory.** Mapping code reads plain text; the encoder escapes.
//!   Formatting commands (`\H\`, `\.in\`) are the only thing a round trip loses.
//! - **Lenient structures, strict values.** Optional segments senders often omit are
//!   optional; but an unknown non-Z segment, an invalid date or a non-numeric NM value is an
//!   error with its location, because silently dropping clinical data is worse than an AE.
//!
//! ```
//! let bytes = b"MSH|^~\\&|HIS|GENHOSP|RENKEI|HIE|20260102030405+0900||ADT^A04^ADT_A01|1|P|2.5\r\
//! EVN|A04\rPID|1||12345^^^GENHOSP^MR||Doe^Jane||19700101|F\rPV1|1|O\r";
//! let message = hl7v2::parse(bytes).unwrap();
//! assert_eq!(message.segment("PID").unwrap().comp(5, 2), "Jane");
//! let mapped = hl7v2::fhir::to_transaction(&message).unwrap();
//! assert_eq!(mapped.bundle["type"], "transaction");
//! ```

pub mod ack;
pub mod charset;
pub mod error;
pub mod escape;
pub mod fhir;
#[cfg(feature = "generate")]
pub mod generate;
pub mod message;
pub mod mllp;
pub mod structure;

pub use charset::Charset;
pub use error::{
    EncodeError, ErrorCode, ErrorDetail, Location, ParseError, Severity, StructureError,
};
pub use message::{
    Component, Delimiters, Field, Message, ParseOptions, Repetition, Segment, parse, parse_with,
};
