//! One SS-MIX2 record change as one keyed unit of the store.
//!
//! The receipt key is the standard file name (`ssmix2|<patient>_<date>_<type>_<order>_
//! <timestamp>_<dept>_<flag>`): it names one version of one record and its condition flag,
//! so the receipts ARE the persistent import checkpoint, committed in the same transaction as
//! the resources. A re-import finds them and writes nothing; a newer version of a record,
//! or the same version flagged deleted (`0`), has another name and is imported. A
//! [`Change::Retracted`] record is written as `hl7v2::fhir::retraction` of its mapping
//! (its records marked `entered-in-error`).

use hl7v2::ack::fingerprint;
use hl7v2::fhir::{MappingOptions, retraction, to_transaction_with};
use ssmix2::{Change, StoredFile, read_message};
use store::{Receipt, RequestContext};

use crate::hl7::{SinkError, StoreSink};

/// What importing one change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// The record's resources were written.
    Imported,
    /// The record was withdrawn at the source; its resources are now `entered-in-error`.
    Retracted,
    /// Already imported (its receipt is stored): nothing written.
    Unchanged,
    /// Not imported: why, naming the file. Nothing of it was written.
    Failed(String),
}

/// The receipt key of a stored file.
pub fn receipt_key(file: &StoredFile) -> String {
    format!("ssmix2|{}", file.name)
}

/// Imports one change through `sink`. Times without an offset are placed in
/// `options.time_zone`; what the mapping accepted with a doubt (its warnings) is logged with
/// the file's name.
pub async fn import_change(
    sink: &StoreSink,
    change: &Change,
    options: &MappingOptions,
) -> FileOutcome {
    let file = change.file().clone();
    let key = receipt_key(&file);
    let fail = |what: String| FileOutcome::Failed(format!("{}: {what}", file.path.display()));
    let store = sink.store();
    match store.receipt(&RequestContext::system(), &key).await {
        Ok(Some(_)) => return FileOutcome::Unchanged,
        Ok(None) => {}
        Err(e) => return fail(e.to_string()),
    }
    let read = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || read_message(&file)).await
    };
    let message = match read {
        Ok(Ok((_, message))) => message,
        Ok(Err(e)) => return fail(e.to_string()),
        Err(e) => return fail(format!("reading failed: {e}")),
    };
    let mapped = match to_transaction_with(&message, options) {
        Ok(m) => m,
        Err(e) => return fail(e.to_string()),
    };
    if !mapped.warnings.is_empty() {
        let warnings: Vec<String> = mapped.warnings.iter().map(|w| w.log_text()).collect();
        tracing::warn!(
            file = %file.name,
            warnings = %warnings.join("; "),
            "SS-MIX2 file imported with warnings"
        );
    }
    let retracted = matches!(change, Change::Retracted(_));
    let (bundle, merges) = if retracted {
        (retraction(&mapped), Vec::new())
    } else {
        (mapped.bundle, mapped.merges)
    };
    let receipt = Receipt {
        key,
        fingerprint: fingerprint(&message) as i64,
        code: "AA".into(),
        reply: Vec::new(),
        deferred: None,
    };
    match sink.commit_bundle(receipt, &bundle, &merges).await {
        Ok(()) if retracted => FileOutcome::Retracted,
        Ok(()) => FileOutcome::Imported,
        Err(SinkError::Duplicate) => FileOutcome::Unchanged,
        Err(SinkError::Rejected(detail)) => fail(detail.message),
        Err(SinkError::Unavailable(e)) => fail(format!("storage unavailable: {e}")),
        Err(SinkError::Corrupt(e)) => fail(format!("stored record unreadable: {e}")),
    }
}
