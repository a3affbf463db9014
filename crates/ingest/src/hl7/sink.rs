//! [`StoreSink`]: the store's implementation of [`mllp::ingest::Sink`].
//!
//! One message is one unit of [`store::Store::commit_keyed`]: its receipt (the ACK to
//! replay, under the key MSH-3|MSH-4|MSH-10), the writes of its transaction Bundle (checked
//! like `POST /fhir`, validation included), and the patient-linking writes. Errors map as
//! the receive pipeline needs them:
//! - the key is already stored -> [`SinkError::Duplicate`] (the pipeline replays the ACK);
//! - the content cannot be stored (validation, a conditional write matching several
//!   resources, an unresolvable reference) -> [`SinkError::Rejected`] (`AE`, nothing stored);
//! - a write conflict (a concurrent update, a PostgreSQL deadlock) is retried;
//! - a group commit rolled back by another message's failure is committed again, alone;
//! - anything else -> [`SinkError::Unavailable`] (no ACK: the sender retries).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hl7v2::ack::{AckCode, IdempotencyKey, StoredAck};
use hl7v2::fhir::MergeInstruction;
use hl7v2::{ErrorCode, ErrorDetail, Severity};
use mllp::ingest::{Commit, Sink, SinkError};
use serde_json::Value;
use store::{ErrorKind, KeyedWrite, Receipt, RequestContext, StoreError, WriteEntry, WriteOp};

use crate::AppState;
use crate::error::ApiError;
use crate::hl7::{GroupCommitter, PatientLinking};
use crate::http::Fhir;
use crate::interactions::batch::prepare_transaction;

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
    state: AppState,
    committer: GroupCommitter,
    linking: Arc<dyn PatientLinking>,
    /// References committed that named resources not on the server (see
    /// [`StoreSink::dangling_references`]).
    dangling: AtomicU64,
}

impl StoreSink {
    /// A sink over the server's state (store and validator); starts the group-commit writer
    /// tasks on the current runtime.
    pub fn new(state: AppState, linking: Arc<dyn PatientLinking>, config: &Hl7Config) -> Self {
        let committer =
            GroupCommitter::start(state.store.clone(), config.writers, config.max_group);
        StoreSink {
            inner: Arc::new(Inner {
                state,
                committer,
                linking,
                dangling: AtomicU64::new(0),
            }),
        }
    }

    pub fn state(&self) -> &AppState {
        &self.inner.state
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
        match store::absent_resources(self.inner.state.store.as_ref(), ctx, &targets).await {
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

    /// Commits a transaction Bundle with its receipt and the linking writes for `merges`.
    pub async fn commit_bundle(
        &self,
        receipt: Receipt,
        bundle: &Value,
        merges: &[MergeInstruction],
    ) -> Result<(), SinkError> {
        let ctx = RequestContext::system();
        let fhir = Fhir::internal(ctx.clone(), "");
        let state = &self.inner.state;
        // Checked and extracted once; a retry (rare) checks the bundle again rather than every
        // message keeping a copy of its writes for it.
        let prepare = || async {
            let mut prepared = prepare_transaction(state, &fhir, bundle)
                .await
                .map_err(rejected)?;
            // On the message's own task, not on the store's single writer.
            store::extract_ahead(state.store.extractor(), &mut prepared);
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
            let linked = self
                .inner
                .linking
                .link(state.store.as_ref(), &ctx, merges, &mut entries)
                .await;
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
                    | ErrorKind::Gone => return Err(rejected(ApiError::from(e))),
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

/// A content error of the commit as one ERR segment (no v2 location: the problem is in what
/// the message maps to; the text names the FHIR element).
fn rejected(e: ApiError) -> SinkError {
    let message = e
        .issues
        .iter()
        .map(|i| match &i.expression {
            Some(x) => format!("{x}: {}", i.diagnostics),
            None => i.diagnostics.clone(),
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
            .state
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
