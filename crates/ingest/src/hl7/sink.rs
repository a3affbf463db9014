//! [`StoreSink`]: the store's implementation of [`Sink`].
//!
//! One message is one unit of [`store::Store::commit_keyed`]: its receipt (the ACK to
//! replay, under the key MSH-3|MSH-4|MSH-10), the writes of its transaction Bundle (checked
//! by [`crate::bundle::Preparer`] like `POST /fhir`'s entries, validation included), and the
//! writes recording the sender's merges ([`super::merges::RecordMerges`]). Errors map as the
//! receive pipeline needs them, straight to HL7 (no HTTP status on the way):
//! - the key is already stored -> [`SinkError::Duplicate`] (the pipeline replays the ACK);
//! - the content cannot be stored (validation, a conditional write matching several
//!   resources, an unresolvable reference) -> [`SinkError::Rejected`] with one ERR segment
//!   (`AE`, nothing stored; see [`rejected`]);
//! - a write conflict (a concurrent update, a PostgreSQL deadlock) is retried;
//! - a group commit rolled back by another message's failure is committed again, alone;
//! - anything else -> [`SinkError::Unavailable`] (no ACK: the sender retries).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hl7v2::ack::{AckCode, IdempotencyKey, StoredAck};
use hl7v2::fhir::MergeInstruction;
use hl7v2::{ErrorCode, ErrorDetail, Severity};
use serde_json::Value;
use store::{
    ErrorKind, KeyedWrite, Receipt, ReferenceCheck, RequestContext, Store, StoreError, WriteEntry,
    WriteOp,
};

use super::GroupCommitter;
use super::merges::RecordMerges;
use super::pipeline::{Commit, Sink, SinkError};
use crate::bundle::{BundleError, Preparer};
use crate::entry::EntryError;
use crate::validation::Validator;

/// How often a unit is retried after a write conflict before the message is refused
/// (without an ACK, so the sender tries again later).
const CONFLICT_RETRIES: usize = 3;

/// Settings of the sink.
#[derive(Debug, Clone)]
pub struct Hl7Config {
    /// Writer tasks committing groups in parallel. One, on either backend: SQLite has one
    /// writer anyway, and on PostgreSQL the EMPI's linking takes the groups one at a time,
    /// so more writers only split the queue into smaller groups. Measured on 2 cores with
    /// PostgreSQL on the same machine (`renkei bench mllp --database-url ...`): 124-144 msg/s
    /// with one writer against 107 with four, EMPI on; 165-173 against 140-158, EMPI off.
    pub writers: usize,
    /// Most messages committed in one transaction.
    pub max_group: usize,
}

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            writers: 1,
            max_group: 64,
        }
    }
}

/// The store behind HL7 v2 ingestion (cheap to clone).
#[derive(Debug, Clone)]
pub struct StoreSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Where messages are written: with the EMPI on, the `mpi` crate's linking store.
    store: Arc<dyn Store>,
    validator: Arc<dyn Validator>,
    committer: GroupCommitter,
    /// References committed that named resources not on the server (see
    /// [`StoreSink::dangling_references`]).
    dangling: AtomicU64,
}

impl StoreSink {
    /// A sink writing to `store`, each write checked by `validator`; starts the group-commit
    /// writer tasks on the current runtime.
    pub fn new(store: Arc<dyn Store>, validator: Arc<dyn Validator>, config: &Hl7Config) -> Self {
        let committer = GroupCommitter::start(store.clone(), config.writers, config.max_group);
        StoreSink {
            inner: Arc::new(Inner {
                store,
                validator,
                committer,
                dangling: AtomicU64::new(0),
            }),
        }
    }

    /// The store messages are written to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// How many local literal references (`Type/id`) of committed messages named a resource
    /// not (yet) on the server when they committed. Feeds arrive out of order, so such a
    /// message is stored, not refused; the SS-MIX2 import's summary shows this count.
    /// (References to the message's own entries and conditional references are never
    /// dangling: the store resolves them, or refuses the message.)
    pub fn dangling_references(&self) -> u64 {
        self.inner.dangling.load(Ordering::Relaxed)
    }

    /// After a commit: count the references `named` (see [`named_outside`]) to resources that
    /// are not on the server.
    async fn count_dangling(&self, ctx: &RequestContext, named: &[String]) {
        if named.is_empty() {
            return;
        }
        let targets: BTreeSet<String> = named.iter().cloned().collect();
        match store::absent_resources(self.inner.store.as_ref(), ctx, &targets).await {
            Ok(absent) if !absent.is_empty() => {
                let n = named.iter().filter(|t| absent.contains(*t)).count() as u64;
                self.inner.dangling.fetch_add(n, Ordering::Relaxed);
                tracing::info!(
                    references = n,
                    "a message refers to resources not (yet) on this server"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not check a message's references"),
        }
    }

    /// Commits a transaction Bundle with its receipt and the writes recording `merges`.
    pub async fn commit_bundle(
        &self,
        receipt: Receipt,
        bundle: &Value,
        merges: &[MergeInstruction],
    ) -> Result<(), SinkError> {
        let ctx = RequestContext::system();
        let store = self.inner.store.as_ref();
        // Feeds arrive out of order: their references are counted, not refused.
        let preparer = Preparer {
            store,
            validator: self.inner.validator.as_ref(),
            ctx: &ctx,
            base: "",
            references: &ReferenceCheck::Off,
        };
        // Checked and extracted once; a retry (rare) checks the bundle again rather than every
        // message keeping a copy of its writes for it.
        let prepare = || async {
            let mut prepared = preparer
                .transaction(bundle)
                .await
                .map_err(|BundleError { entry, error }| rejected(entry, &error))?;
            // On the message's own task, not on the store's single writer.
            store::extract_ahead(store.extractor(), &mut prepared);
            Ok::<_, SinkError>(prepared)
        };
        let mut first = Some(prepare().await?);
        let mut attempt = 0;
        let mut alone = false;
        loop {
            let mut entries = match first.take() {
                Some(prepared) => prepared,
                None => prepare().await?,
            };
            let linked = RecordMerges.record(store, &ctx, merges, &mut entries).await;
            let result = match linked {
                Ok(()) => {
                    // Counted once committed (usually none: see `named_outside`).
                    let named = named_outside(&entries);
                    let unit = KeyedWrite {
                        receipt: receipt.clone(),
                        entries,
                    };
                    self.inner
                        .committer
                        .commit(unit, alone)
                        .await
                        .map(|_| named)
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(named) => {
                    self.count_dangling(&ctx, &named).await;
                    return Ok(());
                }
                Err(StoreError::DuplicateKey(_)) => return Err(SinkError::Duplicate),
                // Another message of the group failed; alone, this one meets only its own fate.
                Err(StoreError::GroupAborted) if !alone => alone = true,
                Err(e) => match e.kind() {
                    ErrorKind::Conflict | ErrorKind::VersionConflict
                        if attempt < CONFLICT_RETRIES =>
                    {
                        attempt += 1;
                        tracing::debug!(error = %e, attempt, "write conflict; retrying");
                    }
                    ErrorKind::Invalid
                    | ErrorKind::MultipleMatches
                    | ErrorKind::NotFound
                    | ErrorKind::Gone => {
                        let entry = e.entry_index();
                        return Err(rejected(entry, &EntryError::Store(e.into_inner())));
                    }
                    _ => return Err(SinkError::Unavailable(e.to_string())),
                },
            }
        }
    }
}

/// The local literal references (`Type/id`) of a unit's writes to resources other than those
/// it writes by id: the ones that may name a resource not on the server. References to the
/// message's own entries (`urn:uuid:`) and conditional ones are not literal here, and the store
/// resolves them or refuses the message.
fn named_outside(entries: &[WriteEntry]) -> Vec<String> {
    let mut own = BTreeSet::new();
    let mut named = Vec::new();
    for entry in entries {
        if let WriteOp::Update {
            resource_type, id, ..
        } = &entry.op
        {
            own.insert(format!("{resource_type}/{id}"));
        }
        let Some(resource) = entry.op.resource() else {
            continue;
        };
        named.extend(
            store::local_references(resource, None)
                .into_iter()
                .map(|r| r.target),
        );
    }
    named.retain(|t| !own.contains(t));
    named
}

/// The receipt key of an HL7 message.
pub fn receipt_key(key: &IdempotencyKey) -> String {
    format!("hl7v2|{}", key.to_key_string())
}

/// A content error of the commit as one ERR segment: table 0357 code 102 (data type error:
/// what the message maps to is refused), no v2 location (the problem is in the mapped
/// Bundle), and a text naming each finding's FHIR element, `Bundle.entry[i]` (the write's
/// place in the unit) and, when known, the element in its resource.
pub fn rejected(entry: Option<usize>, error: &EntryError) -> SinkError {
    let findings: Vec<(Option<&str>, String)> = match error {
        EntryError::Invalid(issues) => issues
            .iter()
            .map(|i| (i.expression.as_deref(), i.message.clone()))
            .collect(),
        EntryError::Malformed {
            message,
            expression,
        } => vec![(expression.as_deref(), message.clone())],
        EntryError::Store(StoreError::MissingReference { element, .. }) => {
            vec![(Some(element.as_str()), error.to_string())]
        }
        other => vec![(None, other.to_string())],
    };
    let message = findings
        .into_iter()
        .map(|(expression, text)| {
            let at = match (entry, expression) {
                // `Patient.birthDate` of entry 2: `Bundle.entry[2].resource.birthDate`.
                (Some(i), Some(e)) => format!(
                    "Bundle.entry[{i}].resource.{}",
                    e.split_once('.').map_or(e, |x| x.1)
                ),
                (Some(i), None) => format!("Bundle.entry[{i}]"),
                (None, Some(e)) => e.to_owned(),
                (None, None) => return text,
            };
            format!("{at}: {text}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    SinkError::Rejected(ErrorDetail {
        location: None,
        code: ErrorCode::DataTypeError,
        severity: Severity::Error,
        message,
    })
}

impl Sink for StoreSink {
    async fn stored_ack(&self, key: &IdempotencyKey) -> Result<Option<StoredAck>, SinkError> {
        let ctx = RequestContext::system();
        let receipt = self
            .inner
            .store
            .receipt(&ctx, &receipt_key(key))
            .await
            .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        let Some(r) = receipt else {
            return Ok(None);
        };
        // A code that is not an ACK code is never replayed as an `AA`.
        let code = AckCode::parse(&r.code).ok_or_else(|| {
            SinkError::Corrupt(format!(
                "the receipt of {} holds '{}', not an acknowledgment code",
                r.key, r.code
            ))
        })?;
        Ok(Some(StoredAck {
            key: key.clone(),
            fingerprint: r.fingerprint as u64,
            code,
            ack: r.reply,
        }))
    }

    async fn commit(&self, commit: Commit) -> Result<(), SinkError> {
        let receipt = Receipt {
            key: receipt_key(&commit.ack.key),
            // Stored as the same 64 bits, signed (SQL integers are).
            fingerprint: commit.ack.fingerprint as i64,
            code: commit.ack.code.as_str().to_owned(),
            reply: commit.ack.ack,
            deferred: commit.deferred_ack,
        };
        self.commit_bundle(receipt, &commit.mapped.bundle, &commit.mapped.merges)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{Severity as IssueSeverity, ValidationIssue};

    fn detail(error: SinkError) -> ErrorDetail {
        match error {
            SinkError::Rejected(detail) => detail,
            other => panic!("{other:?}"),
        }
    }

    /// Refused content is one ERR of code 102 with no v2 location, naming the entry and, when
    /// known, the element of its resource.
    #[test]
    fn refused_content_names_the_entry_and_the_element() {
        let issue = |expression: &str, message: &str| ValidationIssue {
            severity: IssueSeverity::Error,
            code: fhir::IssueCode::Value,
            expression: Some(expression.into()),
            message: message.into(),
        };
        let invalid = EntryError::Invalid(vec![
            issue("Patient.birthDate", "'1999-02-30' is not a valid date"),
            issue("Patient.gender", "'M' is not in the required value set"),
        ]);
        let d = detail(rejected(Some(2), &invalid));
        assert_eq!(d.code, ErrorCode::DataTypeError);
        assert_eq!(d.severity, Severity::Error);
        assert!(d.location.is_none());
        assert_eq!(
            d.message,
            "Bundle.entry[2].resource.birthDate: '1999-02-30' is not a valid date; \
             Bundle.entry[2].resource.gender: 'M' is not in the required value set"
        );
        let twice = EntryError::Store(StoreError::MultipleMatches {
            what: "the conditional update".into(),
            count: 2,
        });
        let d = detail(rejected(Some(0), &twice));
        assert!(d.message.starts_with("Bundle.entry[0]: "), "{}", d.message);
        assert!(d.message.contains("matched 2"), "{}", d.message);
        // No entry to blame: the text alone.
        let d = detail(rejected(None, &EntryError::malformed("no entries")));
        assert_eq!(d.message, "no entries");
    }
}
