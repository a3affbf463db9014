//! One module per FHIR RESTful interaction. Each exposes an axum handler and, where bundles
//! reuse it, a protocol-neutral function returning a [`crate::http::Reply`].

pub mod audit_events;
pub mod batch;
pub mod capabilities;
pub mod create;
pub mod delete;
pub mod empi_ops;
pub mod history;
pub mod operation;
pub mod patch;
pub mod read;
pub mod search;
pub mod update;
pub mod vread;

use axum::http::StatusCode;
use store::{Outcome, ReferenceCheck, SearchQuery, StoreError, WriteEntry, WriteOp};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply, Return};

/// The reply to a write, per the spec's status codes and `Prefer`.
pub(crate) fn outcome_reply(fhir: &Fhir, outcome: &Outcome) -> Reply {
    match outcome {
        Outcome::Created(r) => Reply::resource(StatusCode::CREATED, r, fhir.prefer, "created")
            .with_location(&fhir.base, r),
        Outcome::Updated(r) | Outcome::Unchanged(r) => {
            Reply::resource(StatusCode::OK, r, fhir.prefer, "updated")
        }
        Outcome::Existing(r) => Reply::resource(StatusCode::OK, r, fhir.prefer, "matched existing")
            .with_location(&fhir.base, r),
        Outcome::Deleted(r) => {
            let mut reply = Reply::resource(StatusCode::NO_CONTENT, r, Return::Minimal, "deleted");
            if fhir.prefer == Return::OperationOutcome {
                reply.status = StatusCode::OK;
                reply.body = crate::http::ReplyBody::Json(crate::error::information(format!(
                    "deleted {}/{} (version {})",
                    r.resource_type, r.id, r.version
                )));
            }
            reply
        }
        Outcome::NoOp => {
            let mut reply = Reply::json(StatusCode::NO_CONTENT, serde_json::Value::Null);
            reply.body = crate::http::ReplyBody::None;
            if fhir.prefer == Return::OperationOutcome {
                reply.status = StatusCode::OK;
                reply.body =
                    crate::http::ReplyBody::Json(crate::error::information("nothing to delete"));
            }
            reply
        }
    }
}

/// Whether a REST write checks its references (`ServerConfig::check_references`), against this
/// request's base for absolute ones.
pub(crate) fn reference_check(state: &AppState, fhir: &Fhir) -> ReferenceCheck {
    if state.config.check_references {
        ReferenceCheck::Refuse {
            base: Some(fhir.base.clone()),
        }
    } else {
        ReferenceCheck::Off
    }
}

/// One REST write (create, update, patch and their conditional forms), its references checked
/// as the server is configured to.
pub(crate) async fn write(
    state: &AppState,
    fhir: &Fhir,
    op: WriteOp,
) -> Result<Outcome, StoreError> {
    write_entry(state, fhir, WriteEntry::new(op)).await
}

/// [`write`] of a prepared entry (a patch's result, say), its references checked as the
/// server's settings say.
pub(crate) async fn write_entry(
    state: &AppState,
    fhir: &Fhir,
    entry: WriteEntry,
) -> Result<Outcome, StoreError> {
    let entry = entry.with_references(reference_check(state, fhir));
    state.store.write_entry(&fhir.ctx, entry).await
}

/// The search criteria of a conditional interaction (`[type]?criteria`); at least one is needed.
pub(crate) fn conditional_query(
    state: &AppState,
    ty: &str,
    params: &[(String, String)],
) -> Result<SearchQuery, ApiError> {
    Ok(ingest::entry::conditional_query(
        state.store.extractor(),
        ty,
        params,
    )?)
}

/// The query of an `If-None-Exist` header (`identifier=...`, optionally prefixed by `Type?`).
pub(crate) fn if_none_exist(
    state: &AppState,
    ty: &str,
    value: &str,
) -> Result<SearchQuery, ApiError> {
    Ok(ingest::entry::if_none_exist(
        state.store.extractor(),
        ty,
        value,
    )?)
}
