//! HL7 v2 ingestion into the store: the receive pipeline behind the MLLP listener, and the
//! store sink it and the SS-MIX2 importer commit through.
//!
//! # What it owns
//! - [`pipeline::Ingest`]: the `mllp::MessageHandler` every deployment uses: parse,
//!   de-duplicate (MSH-3/4/10), map to FHIR, commit through a [`Sink`], acknowledge.
//!   [`memory::MemorySink`] is the reference sink for tests and benchmarks.
//! - [`sink::StoreSink`]: turns a mapped message (a FHIR transaction Bundle from
//!   `hl7v2::fhir`) into checked store writes (the same checks as `POST /fhir`'s entries,
//!   through the [`crate::Validator`] seam), adds the writes recording the sender's merges,
//!   and commits them with the message's stored ACK as one unit: the ACK is built before the
//!   commit but sent only after it, and a re-sent message finds the stored ACK (keyed by
//!   MSH-3, MSH-4, MSH-10). What the store refuses becomes an ERR segment here, without
//!   passing through any HTTP type; a stored ACK that cannot be read is an error
//!   ([`SinkError::Corrupt`]), never a replayed `AA`.
//! - [`group::GroupCommitter`]: group commit. Units from concurrent connections that arrive
//!   while a commit runs are committed together in ONE database transaction (one fsync on
//!   SQLite). A bad unit rolls its group back; it gets its own error, the others are
//!   committed again, each alone (see `Store::commit_keyed`).
//! - [`merges::RecordMerges`]: the retired side of an A40 merge (`Patient.link`
//!   `replaced-by`, `active = false`); the surviving side's `replaces` link comes from the
//!   mapping itself. Patient matching is not done here: the store the sink writes through
//!   is the `mpi` crate's `EmpiStore` when the EMPI is on, which links every Patient write.
//!
//! # Where the idempotency record lives
//! In the store's `receipt` table (migration 0002, both backends), written by
//! `Store::commit_keyed` in the same transaction as the resources. A dedicated table rather
//! than a `Basic` resource: the ACK is not clinical data, must not show in searches, history
//! or the change feed, and needs a unique key the database enforces (two connections racing
//! with one message: one commits, the other gets `DuplicateKey` and replays the stored ACK).
//!
//! # Provenance
//! Every mapped resource carries `meta.source` `urn:renkei:v2:<MSH-3>:<MSH-4>#<MSH-10>` and one
//! Provenance per message names the sending facility (done by `hl7v2::fhir`; this module
//! writes them as mapped).

pub mod group;
pub mod memory;
pub mod merges;
pub mod pipeline;
pub mod sink;

pub use group::GroupCommitter;
pub use merges::RecordMerges;
pub use pipeline::{Commit, Ingest, Settings, Sink, SinkError};
pub use sink::{Hl7Config, StoreSink};
