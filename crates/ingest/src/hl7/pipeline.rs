//! The HL7 v2 receive pipeline behind the MLLP listener: parse -> de-duplicate -> map ->
//! commit -> acknowledge. [`Ingest`] is the `mllp::MessageHandler` the binary hands to
//! `mllp::run`. Everything but the commit is pure `hl7v2`; the commit goes through [`Sink`],
//! which [`super::StoreSink`] implements with one transaction.
//!
//! Guarantees:
//! - `AA`/`CA` is built only after [`Sink::commit`] returned `Ok` (durable).
//! - A re-sent message (same MSH-3, MSH-4, MSH-10 and content) gets the stored ACK back byte
//!   for byte and commits nothing; the same key with other content gets `AE` 205.
//! - Content errors (`AE`) and rejections (`AR`) commit nothing; so does a commit the sink
//!   refuses for its content ([`SinkError::Rejected`], answered `AE`).
//! - When the sink fails, no ACK is sent and the connection is closed, so the sender keeps
//!   the message and retries (an `AE` would tell it to give up on a message that is fine).
//! - What the mapping accepted with a doubt (a time in an hour its zone repeats) is
//!   committed and acknowledged `AA` with `ERR` segments of severity `W`.
//!
//! Every `AE`/`AR` (and every `AA` with warnings) is logged at `warn`, with the message's
//! control id (MSH-10), sending application and facility (MSH-3/4), and each ERR's code,
//! location and text with the values it quotes left out ([`ErrorDetail::log_text`]): a log
//! holds no patient data.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use hl7v2::ack::{
    AckCode, AckHeader, IdempotencyKey, Outcome, Replay, StoredAck, ack_unparseable, acknowledge,
    fingerprint, replay,
};
use hl7v2::fhir::{Mapped, MappingOptions, to_transaction_with};
use hl7v2::{ErrorCode, ErrorDetail, Location, Severity};

use mllp::{MessageHandler, Reply};

/// Sink errors.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Another connection committed the same key first (unique index): replay its ACK.
    #[error("a message with this idempotency key was committed concurrently")]
    Duplicate,
    /// Storage failed; the message was not taken.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read (a receipt whose ACK code is not one): no ACK can be
    /// given for it, neither a replay nor a new one, until an operator looks.
    #[error("stored record unreadable: {0}")]
    Corrupt(String),
    /// The sink refused the content (what the mapping produced is not a valid record, or it
    /// contradicts what is stored): answered `AE` with this ERR segment, nothing committed.
    #[error("rejected: {}", .0.message)]
    Rejected(ErrorDetail),
}

/// Everything one accepted message commits, atomically.
#[derive(Debug, Clone)]
pub struct Commit {
    pub mapped: Mapped,
    /// The ACK to replay on a re-send (stored under its key).
    pub ack: StoredAck,
    /// Enhanced mode: the application ACK to deliver later (the outbox).
    pub deferred_ack: Option<Vec<u8>>,
}

/// Where accepted messages go. The store implements it with one transaction per commit.
pub trait Sink: Send + Sync + 'static {
    /// The ACK stored for a key, if the message was processed before.
    fn stored_ack(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<StoredAck>, SinkError>> + Send;

    /// Commit the resources, the stored ACK and the deferred ACK in one transaction.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The receiver's identity in ACKs and mapping options.
#[derive(Debug, Clone)]
pub struct Settings {
    pub application: String,
    pub facility: String,
    pub mapping: MappingOptions,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            application: "RENKEI".into(),
            facility: "RENKEI".into(),
            mapping: MappingOptions::default(),
        }
    }
}

/// The HL7 handler: a [`MessageHandler`] over a [`Sink`].
#[derive(Debug)]
pub struct Ingest<S> {
    pub sink: S,
    settings: Settings,
    counter: AtomicU64,
}

impl<S: Sink> Ingest<S> {
    pub fn new(sink: S, settings: Settings) -> Self {
        Ingest {
            sink,
            settings,
            counter: AtomicU64::new(0),
        }
    }

    fn header(&self) -> AckHeader {
        let now = chrono::Utc::now();
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        AckHeader {
            application: self.settings.application.clone(),
            facility: self.settings.facility.clone(),
            // 20 characters: the MSH-10 limit of v2.5.
            control_id: format!("R{:013}{n:06}", now.timestamp_millis() % 10_000_000_000_000),
            timestamp: now.format("%Y%m%d%H%M%S+0000").to_string(),
        }
    }

    fn encode(message: &hl7v2::Message) -> Vec<u8> {
        // An ACK holds what the original held; if it cannot be encoded in the original's
        // charset (it always can), fall back to UTF-8 text rather than sending nothing.
        message
            .encode()
            .unwrap_or_else(|_| message.to_text().into_bytes())
    }

    /// Process one message and return the reply.
    pub async fn process(&self, payload: &[u8]) -> Reply {
        let message = match hl7v2::parse(payload) {
            Ok(m) => m,
            Err(error) => {
                let ack = ack_unparseable(payload, &error, &self.header());
                // What could be salvaged of the sender's MSH is in the ACK: MSA-2 and the
                // ACK's MSH-5/6.
                let msh = ack.msh();
                let code = ack.segment("MSA").map_or("", |msa| msa.get(1));
                log_errors(
                    code,
                    ack.segment("MSA").map_or("", |msa| msa.get(2)),
                    msh.get(5),
                    msh.get(6),
                    &[error.detail()],
                );
                return Reply::Send(Self::encode(&ack));
            }
        };
        let reply = |outcome: &Outcome| {
            let msh = message.msh();
            log_errors(
                outcome.application_code().as_str(),
                message.control_id(),
                msh.get(3),
                msh.get(4),
                outcome.errors(),
            );
            let acks = acknowledge(&message, outcome, &self.header());
            match acks.immediate {
                Some(m) => Reply::Send(Self::encode(&m)),
                None => Reply::Nothing,
            }
        };
        let Some(key) = IdempotencyKey::of(&message) else {
            return reply(&Outcome::Error(vec![ErrorDetail {
                location: Some(Location::field("MSH", 1, 10)),
                code: ErrorCode::RequiredFieldMissing,
                severity: Severity::Error,
                message: "MSH-10 (message control id) is required".into(),
            }]));
        };
        for attempt in 0..2 {
            let stored = match self.sink.stored_ack(&key).await {
                Ok(s) => s,
                Err(error @ SinkError::Corrupt(_)) => {
                    tracing::error!(%error, control_id = message.control_id(), "idempotency lookup failed");
                    return Reply::Close;
                }
                Err(error) => {
                    tracing::warn!(%error, "idempotency lookup failed");
                    return Reply::Close;
                }
            };
            match replay(&message, stored.as_ref()) {
                // An empty stored ACK: the sender asked for none (MSH-15 NE).
                Replay::Resend([]) => return Reply::Nothing,
                Replay::Resend(bytes) => return Reply::Send(bytes.to_vec()),
                Replay::Conflict(detail) => return reply(&Outcome::Error(vec![detail])),
                Replay::New => {}
            }
            let mapped = match to_transaction_with(&message, &self.settings.mapping) {
                Ok(m) => m,
                Err(error) => return reply(&Outcome::from_errors(vec![error.detail()])),
            };
            let outcome = Outcome::from_errors(mapped.warnings.clone());
            let acks = acknowledge(&message, &outcome, &self.header());
            let immediate = acks.immediate.as_ref().map(Self::encode);
            let code = acks
                .immediate
                .as_ref()
                .and_then(|m| m.segment("MSA"))
                .and_then(|msa| AckCode::parse(msa.get(1)))
                .unwrap_or(AckCode::AA);
            let commit = Commit {
                mapped,
                ack: StoredAck {
                    key: key.clone(),
                    fingerprint: fingerprint(&message),
                    code,
                    ack: immediate.clone().unwrap_or_default(),
                },
                deferred_ack: acks.deferred.as_ref().map(Self::encode),
            };
            match self.sink.commit(commit).await {
                Ok(()) => {
                    let msh = message.msh();
                    log_errors(
                        code.as_str(),
                        message.control_id(),
                        msh.get(3),
                        msh.get(4),
                        outcome.errors(),
                    );
                    return immediate.map_or(Reply::Nothing, Reply::Send);
                }
                Err(SinkError::Duplicate) if attempt == 0 => continue,
                Err(SinkError::Rejected(detail)) => return reply(&Outcome::Error(vec![detail])),
                Err(error) => {
                    tracing::warn!(%error, "commit failed; the message was not taken");
                    return Reply::Close;
                }
            }
        }
        Reply::Close
    }
}

/// The `warn` line for a message answered with errors or warnings (nothing when `errors` is
/// empty). Identifies the message by control id and sender; the ERR texts go through
/// [`ErrorDetail::log_text`], which leaves out the values they quote.
fn log_errors(
    ack: &str,
    control_id: &str,
    sending_application: &str,
    sending_facility: &str,
    errors: &[ErrorDetail],
) {
    if errors.is_empty() {
        return;
    }
    let errors = errors
        .iter()
        .map(ErrorDetail::log_text)
        .collect::<Vec<_>>()
        .join("; ");
    let what = if matches!(ack, "AA" | "CA") {
        "HL7 message accepted with warnings"
    } else {
        "HL7 message refused"
    };
    tracing::warn!(
        ack,
        control_id,
        sending_application,
        sending_facility,
        errors,
        "{what}"
    );
}

impl<S: Sink> MessageHandler for Ingest<S> {
    async fn handle(&self, payload: Vec<u8>) -> Reply {
        self.process(&payload).await
    }
}
