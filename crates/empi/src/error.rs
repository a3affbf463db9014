//! The crate's error type: a closed set of kinds the caller can map (to HTTP 400/422, to a
//! command-line message) without inspecting text.

use thiserror::Error;

/// What can go wrong in the EMPI library. Matching itself never fails; only input and model
/// files do.
#[derive(Debug, Error)]
pub enum EmpiError {
    /// The resource is not a FHIR `Patient`.
    #[error("resource is not a Patient")]
    NotAPatient,
    /// The Patient has no `id`; links are kept by id.
    #[error("Patient has no id")]
    MissingId,
    /// A record with this id is already in the index.
    #[error("Patient/{0} is already in the index")]
    Duplicate(String),
    /// No record with this id is in the index.
    #[error("Patient/{0} is not in the index")]
    UnknownRecord(String),
    /// A model file is malformed or inconsistent (wrong number of levels, probabilities out of range).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// A labels or clusters file line could not be read.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}
