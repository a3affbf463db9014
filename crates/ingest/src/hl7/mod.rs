//! HL7 v2 ingestion into the store: the [`mllp::ingest::Sink`] the MLLP listener and the
//! SS-MIX2 importer commit through.
//!
//! # What it owns
//! - [`sink::StoreSink`]: turns a mapped message (a FHIR transaction Bundle from
//!   `hl7v2::fhir`) into checked store writes (the same checks as `POST /fhir`, through the
//!   [`crate::Validator`] seam), adds the patient-linking writes, and commits them with the
//!   message's stored ACK as one unit: the ACK is built before the commit but sent only after
//!   it, and a re-sent message finds the stored ACK (keyed by MSH-3, MSH-4, MSH-10).
//! - [`group::GroupCommitter`]: group commit. Units from concurrent connections that arrive
//!   while a commit runs are committed together in ONE database transaction (one fsync on
//!   SQLite). A bad unit rolls its group back; it gets its own error, the others are
//!   committed again, each alone (see `Store::commit_keyed`).
//! - [`linking::PatientLinking`]: the seam where the EMPI plugs in. Until it lands,
//!   [`linking::RecordMerges`] writes the retired side of an A40 merge (`Patient.link`
//!   `replaced-by`, `active = false`); the surviving side's `replaces` link comes from the
//!   mapping itself.
//! - [`ssmix2`]: one SS-MIX2 file (or retraction) as one keyed unit, so a re-import finds
//!   the receipts of what it already imported and writes nothing.
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
pub mod linking;
pub mod sink;
pub mod ssmix2;

pub use group::GroupCommitter;
pub use linking::{PatientLinking, RecordMerges};
pub use sink::{Hl7Config, StoreSink};
