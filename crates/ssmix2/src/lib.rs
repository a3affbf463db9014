//! SS-MIX2 standardized storage: reading a storage tree into an ordered stream of HL7 v2
//! messages with their file metadata.
//!
//! # What this crate owns
//! - [`FileName`]: the standard file name (patient id, care date, data type, order number,
//!   timestamp, department, condition flag) and the path it implies
//!   (`ROOT/<id 1-3>/<id 4-6>/<id>/<date|->/<type>/<name>`).
//! - [`scan`] walks a tree; [`current`] keeps the latest version of every
//!   (patient, date, type, order) record (condition flag `0` on the latest version means the
//!   record was deleted: [`Change::Retracted`]) and orders them for import.
//! - [`read_message`] reads and parses a file (ISO-2022-JP via `hl7v2`; invalid bytes are an
//!   error).
//! - [`Checkpoint`] and [`Watcher`]: what was imported, so a re-import does nothing twice and
//!   `--watch` picks up only what changed.
//! - [`store`] / [`invalidate`]: writing a tree (tests, generators, exports);
//!   `write_sample_tree` (cargo feature `sample`, off by default): a generated JAHIS-style
//!   tree for tests and benchmarks.
//!
//! # What it must not do
//! Reading and writing files is this crate's only I/O: no SQL, no HTTP, no FHIR. It does not
//! decide what a message means (that is `hl7v2::fhir`) nor where the checkpoint is persisted
//! (the store, in the import transaction).
//!
//! # Design decisions
//! - **Skip, don't fail, on odd files.** Real trees hold stray files; a bad name or a file in
//!   the wrong directory is reported in [`Scan::skipped`] and the scan goes on. An unreadable
//!   directory is an error.
//! - **Polling over inotify** for `--watch` (see `checkpoint`).

mod checkpoint;
mod name;
#[cfg(feature = "sample")]
mod sample;
mod tree;

use std::path::{Path, PathBuf};

pub use checkpoint::{Checkpoint, Imported, Watcher};
pub use name::{Condition, FileName, NO_ORDER, RecordKey, data_type_for, type_rank};
#[cfg(feature = "sample")]
pub use sample::write_sample_tree;
pub use tree::{Change, Scan, Skipped, StoredFile, current, invalidate, read_message, scan, store};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Ssmix2Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name:?} is not an SS-MIX2 standard file name: {reason}")]
    Name { name: String, reason: String },
    #[error("{path}: {source}")]
    Message {
        path: PathBuf,
        #[source]
        source: hl7v2::ParseError,
    },
    #[error("checkpoint line {line} is malformed")]
    Checkpoint { line: usize },
}

impl Ssmix2Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Ssmix2Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
