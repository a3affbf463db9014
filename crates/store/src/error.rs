//! The store's typed errors: a closed set of kinds that the server maps to HTTP once.

/// What went wrong, as a closed set the server maps to HTTP status and OperationOutcome codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such resource (or version) ever existed.
    NotFound,
    /// The resource exists but its current version is a deletion.
    Gone,
    /// `If-Match` named a version that is not the current one.
    VersionConflict,
    /// A conditional operation or reference matched more than one resource.
    MultipleMatches,
    /// The write collides with another one (e.g. two concurrent creates of the same id).
    Conflict,
    /// The request itself is wrong (bad search parameter, unresolvable reference, ...).
    Invalid,
    /// The caller's access policy does not allow the operation at all.
    Forbidden,
    /// The backend is overloaded or unreachable for now; retrying may work.
    Unavailable,
    /// Any other backend failure (a bug or a broken database).
    Backend,
}

/// An error from a [`crate::Store`] call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource_type}/{id}{} not found", version.map(|v| format!("/_history/{v}")).unwrap_or_default())]
    NotFound {
        resource_type: String,
        id: String,
        version: Option<u64>,
    },
    #[error("{resource_type}/{id} is deleted (version {version})")]
    Gone {
        resource_type: String,
        id: String,
        version: u64,
    },
    #[error("version conflict on {resource_type}/{id}: If-Match asked for version {expected}, current is {}", current.map(|c| c.to_string()).unwrap_or_else(|| "none".into()))]
    VersionConflict {
        resource_type: String,
        id: String,
        expected: u64,
        current: Option<u64>,
    },
    #[error("{what} matched {count} resources; at most one is allowed")]
    MultipleMatches { what: String, count: usize },
    #[error("conflict: {0}")]
    Conflict(String),
    /// [`crate::Store::commit_keyed`]: a receipt with this key is already stored.
    #[error("a message with key '{0}' was already committed")]
    DuplicateKey(String),
    /// [`crate::Store::commit_keyed`]: another unit of the group failed, so the group's
    /// transaction was rolled back and nothing of this unit was written; commit it again.
    #[error("not committed: another message of its group commit failed")]
    GroupAborted,
    #[error("{0}")]
    Invalid(String),
    /// A write checked with [`crate::ReferenceCheck::Refuse`] refers to a resource that is
    /// not on this server (never existed, or deleted).
    #[error("{element} refers to {reference}, which is not on this server")]
    MissingReference {
        /// Where, as a FHIRPath-like path (`Observation.subject`, `Observation.performer[1]`).
        element: String,
        /// The reference as written.
        reference: String,
    },
    /// The caller's access policy does not allow the operation at all (e.g. a caller
    /// restricted to some patients reading the change feed).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The error of one entry of a transaction or batch (0-based index in the caller's order).
    #[error("entry {index}: {source}")]
    Entry {
        index: usize,
        #[source]
        source: Box<StoreError>,
    },
}

impl StoreError {
    /// The kind of the error (of the inner error for [`StoreError::Entry`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound { .. } => ErrorKind::NotFound,
            StoreError::Gone { .. } => ErrorKind::Gone,
            StoreError::VersionConflict { .. } => ErrorKind::VersionConflict,
            StoreError::MultipleMatches { .. } => ErrorKind::MultipleMatches,
            StoreError::Conflict(_) | StoreError::DuplicateKey(_) | StoreError::GroupAborted => {
                ErrorKind::Conflict
            }
            StoreError::Invalid(_) | StoreError::MissingReference { .. } => ErrorKind::Invalid,
            StoreError::Forbidden(_) => ErrorKind::Forbidden,
            StoreError::Unavailable(_) => ErrorKind::Unavailable,
            StoreError::Backend(_) => ErrorKind::Backend,
            StoreError::Entry { source, .. } => source.kind(),
        }
    }

    /// The index of the failing entry, for errors of a transaction or batch.
    pub fn entry_index(&self) -> Option<usize> {
        match self {
            StoreError::Entry { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The error without its entry wrapper.
    pub fn into_inner(self) -> StoreError {
        match self {
            StoreError::Entry { source, .. } => source.into_inner(),
            other => other,
        }
    }

    pub(crate) fn in_entry(self, index: usize) -> StoreError {
        match self {
            e @ StoreError::Entry { .. } => e,
            e => StoreError::Entry {
                index,
                source: Box::new(e),
            },
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict(e.to_string()),
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                StoreError::Conflict(e.to_string())
            }
            _ if e.is_closed() => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(format!("{e:?}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Refuses a database whose schema was migrated by a newer Renkei (`applied` migrations, of
/// which this binary knows `known`): writing through an older schema's statements could
/// corrupt what the newer version relies on.
pub(crate) fn refuse_newer_schema(applied: i64, known: i64) -> Result<(), StoreError> {
    if applied > known {
        // Not `Unavailable` (which says a retry may work): this lasts until the binary changes.
        return Err(StoreError::Backend(format!(
            "the database schema is at migration {applied}, newer than this build of Renkei \
             knows (migration {known}); run the Renkei version that migrated it, or a newer one"
        )));
    }
    Ok(())
}
