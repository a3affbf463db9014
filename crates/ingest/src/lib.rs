//! Ingestion into the store, without HTTP: HL7 v2 messages (the receive pipeline behind the
//! MLLP listener and its store sink), SS-MIX2 storage trees, NDJSON and Bundle files, and the
//! prepare-and-validate half of batch and transaction processing that the web crate's
//! `POST [base]` re-uses.
//!
//! # What it owns
//! - [`validation`]: the [`Validator`] seam every write passes ([`R4Validator`] over
//!   `fhir::validate_resource`).
//! - [`entry`]: the checks every write makes (resource type, id, conditional criteria,
//!   validation) and [`EntryError`], what they refuse, typed.
//! - [`bundle`]: the entries of a batch or transaction checked and turned into store writes
//!   ([`bundle::Preparer`]), in the spec's processing order; [`patch`]: JSON Patch of a stored
//!   resource.
//! - [`hl7`]: parse -> de-duplicate -> map -> commit -> acknowledge ([`hl7::Ingest`], the
//!   handler the binary gives `mllp::run`), the store sink ([`hl7::StoreSink`]: one keyed
//!   unit per message, receipts for replay, group commit), a sender's merges, and the mapping
//!   of refused content straight to ERR segments.
//! - [`ssmix2`]: an SS-MIX2 tree, file by file, through the HL7 v2 sink.
//! - [`import`]: NDJSON and Bundle files, a reader thread ahead of the store's writer.
//!
//! # What it must not do
//! Speak HTTP: no status code, no OperationOutcome, no web framework; its errors are typed
//! and the web crate maps them (`server::error`). No SQL (only the `Store` trait). No command
//! line, progress bar or printing: callers observe an import through [`import::ImportObserver`]
//! and [`ssmix2::PassObserver`]. No patient matching: with the EMPI on, the store it is given
//! is the `mpi` crate's linking store.

pub mod bundle;
pub mod entry;
pub mod hl7;
pub mod import;
pub mod patch;
pub mod ssmix2;
pub mod validation;

pub use bundle::{BundleError, Prepared, Preparer};
pub use entry::EntryError;
pub use validation::{R4Validator, Severity, ValidationIssue, Validator};
