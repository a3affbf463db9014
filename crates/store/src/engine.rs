//! The write algorithm shared by both backends: one call applies a list of writes inside one
//! database transaction that the backend opened and will commit (or roll back).
//!
//! Order of work, for a list already in the FHIR processing order (the caller sorts):
//! 1. deletes, as they come;
//! 2. at the first non-delete entry, a planning pass over the rest: conditional creates and
//!    conditional updates are matched, new ids are chosen, and every entry's `fullUrl` is mapped
//!    to the `Type/id` it will have;
//! 3. each write: `fullUrl` references rewritten, conditional references resolved (against the
//!    transaction's own state, so a resource created earlier in the same transaction is found),
//!    local literal references checked when the entry asks (`ReferenceCheck::Refuse`: each must
//!    name a live resource of the transaction's own state, or one the call will write), `id`
//!    and `meta.versionId`/`meta.lastUpdated` set, index rows extracted, then the version, the
//!    current-version pointer, the index rows and the change-feed row with the Patient
//!    compartments the version is in (`compartment`) written.
//!
//! In atomic mode the first failure aborts the whole call (the backend rolls back); in batch mode
//! each entry runs under a savepoint and fails alone.
//!
//! A restricted caller ([`RequestContext::restriction`]) writes through the same steps, but
//! every conditional match (If-None-Exist, conditional update and delete, conditional
//! references) is made with the caller's policy, so a hidden resource is never matched; an
//! update or delete by id of an existing resource the caller may not see, or a checked
//! reference to one, fails exactly as if it did not exist (`NotFound`, `MissingReference`),
//! before any version check could tell its version. What a caller may create is not decided
//! here.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use serde_json::{Map, Value};

use crate::compartment;
use crate::context::{RequestContext, Restriction};
use crate::error::StoreError;
use crate::index::{IndexExtractor, IndexRow};
use crate::model::{Method, Outcome, ReferenceCheck, StoredResource, WriteEntry, WriteOp};
use crate::receipt::{KeyedWrite, Receipt};
use crate::refs;
use crate::search::SearchQuery;

/// The current version of a resource, as the write path needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current {
    pub rid: i64,
    pub version: u64,
    pub deleted: bool,
}

/// A version to write.
#[derive(Debug)]
pub(crate) struct NewVersion<'a> {
    pub rid: Option<i64>,
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version: u64,
    pub last_updated: i64,
    pub method: Method,
    pub body: Option<&'a str>,
    /// The version's index rows, handed over (the SQLite backend keeps them until the
    /// transaction's rows are inserted together).
    pub index: Vec<IndexRow>,
    pub request_id: &'a str,
    /// The Patient compartments the version is in (`compartment`), recorded with its
    /// change-feed row.
    pub compartments: &'a [String],
}

/// What a backend provides inside one open transaction.
pub(crate) trait Backend {
    fn current(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<Current>, StoreError>>;
    /// The current version (body included), deleted or not.
    fn load(
        &mut self,
        resource_type: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredResource>, StoreError>>;
    /// Up to `limit` matches of `query` that `access` may see, as `(type, id)`.
    fn matches(
        &mut self,
        query: &SearchQuery,
        limit: usize,
        access: Option<&Restriction>,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>>;
    /// Whether `access` may see the existing resource `cur` (a deleted one judged on its last
    /// content; see `access`).
    fn admits(
        &mut self,
        extractor: &dyn IndexExtractor,
        access: &Restriction,
        resource_type: &str,
        id: &str,
        cur: Current,
    ) -> impl Future<Output = Result<bool, StoreError>>;
    fn write(&mut self, v: NewVersion<'_>) -> impl Future<Output = Result<(), StoreError>>;
    /// Takes a resource whose version is written, to free: a backend may free a large unit's
    /// resources (an import's chunk holds tens of thousands) after its commit, away from the
    /// writer.
    fn discard(&mut self, resource: Value) {
        drop(resource);
    }
    /// The rule table that labels what is written (`marks`), if the store has one.
    fn labeler(&self) -> Option<&auth::labels::Labeler>;
    /// The reference index rows of resource `rid` that name a Patient, as
    /// `(param, target_id)`: a deletion is in the compartments of the version it deletes.
    fn patient_references(
        &mut self,
        rid: i64,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>>;
    fn savepoint(&mut self) -> impl Future<Output = Result<(), StoreError>>;
    fn release(&mut self) -> impl Future<Output = Result<(), StoreError>>;
    fn rollback_to_savepoint(&mut self) -> impl Future<Output = Result<(), StoreError>>;
    /// Inserts a receipt unless its key is stored; `false` when it was (or a concurrent
    /// transaction committed it while this one waited on the unique key).
    fn insert_receipt(
        &mut self,
        receipt: &Receipt,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>>;
    /// Appends audit records inside this transaction (`audit::WriteAuditor`).
    fn append_audit(
        &mut self,
        entries: Vec<crate::audit::AuditEntry>,
        signer: &auth::chain::HeadSigner,
    ) -> impl Future<Output = Result<(), StoreError>>;
    /// Takes, in the order given, the locks conditional matching on these resource types needs
    /// (PostgreSQL advisory locks; nothing on SQLite, whose writer is exclusive).
    fn lock_types(
        &mut self,
        types: &BTreeSet<String>,
    ) -> impl Future<Output = Result<(), StoreError>>;
}

/// The decision the planning pass took for an entry.
#[derive(Debug)]
enum Plan {
    /// Create (or conditionally update into a create) with this id.
    New(String),
    /// Conditional create matched this resource.
    Existing(StoredResource),
    /// Conditional update matched this id.
    UpdateId(String),
    /// Planning failed; the error is reported when the entry is processed.
    Failed(StoreError),
}

/// What a write brings from the rest of its call: where the transaction's `fullUrl`s and
/// conditional references point, and the entry's index rows if the caller extracted them.
struct Prepared<'a> {
    urls: &'a HashMap<String, String>,
    /// The `Type/id`s `urls` maps to: what this call will write (for the reference check).
    planned: &'a HashSet<String>,
    resolved: &'a mut HashMap<String, String>,
    index: Option<Vec<IndexRow>>,
    references: ReferenceCheck,
    /// The write is a patch's result (recorded as `PATCH`).
    patch: bool,
}

pub(crate) async fn apply<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    now: i64,
    mut entries: Vec<WriteEntry>,
    atomic: bool,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let mut plans: Vec<Option<Plan>> = (0..entries.len()).map(|_| None).collect();
    let mut urls: HashMap<String, String> = HashMap::new();
    let mut targets: HashSet<String> = HashSet::new();
    let mut planned = false;
    let mut results = Vec::with_capacity(entries.len());
    let mut resolved = HashMap::new();
    for i in 0..entries.len() {
        let is_delete = matches!(
            entries[i].op,
            WriteOp::Delete { .. } | WriteOp::ConditionalDelete { .. }
        );
        if !planned && !is_delete {
            plan(b, ctx, &entries[i..], &mut plans[i..], &mut urls).await?;
            planned = true;
            // Built once: a reference check per entry must not scan every entry's target.
            targets = urls.values().cloned().collect();
        }
        let index = entries[i].index.take();
        let references = std::mem::take(&mut entries[i].references);
        let patch = entries[i].patch;
        let entry_ctx = entry_context(ctx, entries[i].internal);
        let op = std::mem::replace(
            &mut entries[i].op,
            WriteOp::ConditionalDelete {
                query: SearchQuery::default(),
            },
        );
        if !atomic {
            b.savepoint().await?;
        }
        let result = write_one(
            b,
            extractor,
            &entry_ctx,
            now,
            op,
            plans[i].take(),
            Prepared {
                urls: &urls,
                planned: &targets,
                resolved: &mut resolved,
                index,
                references,
                patch,
            },
        )
        .await;
        if result.is_err() {
            // A failed entry may have been rolled back to its savepoint: forget what it resolved.
            resolved.clear();
        }
        match result {
            Ok(outcome) => {
                if !atomic {
                    b.release().await?;
                }
                results.push(Ok(outcome));
            }
            Err(e) if atomic => return Err(e.in_entry(i)),
            Err(e) => {
                b.rollback_to_savepoint().await?;
                if matches!(e.kind(), crate::ErrorKind::Backend) {
                    tracing::warn!(entry = i, error = %e, "batch entry failed");
                }
                results.push(Err(e));
            }
        }
    }
    // The request's record of this write commits with it, or neither does.
    if let Some(audit) = &ctx.audit {
        let entry = audit.0.record(&results);
        b.append_audit(vec![entry], audit.0.signer()).await?;
        audit.0.committed();
    }
    Ok(results)
}

/// The context one entry runs under: the caller's, or, for a write the node adds on its own
/// behalf ([`WriteEntry::internal`]), the caller's internal context (unrestricted).
fn entry_context(ctx: &RequestContext, internal: bool) -> Cow<'_, RequestContext> {
    if internal && ctx.restriction().is_some() {
        Cow::Owned(ctx.internal())
    } else {
        Cow::Borrowed(ctx)
    }
}

/// The outcome of each unit of a group commit, in the order given.
pub(crate) type KeyedResults = Vec<Result<Vec<Outcome>, StoreError>>;

/// What the units of a group commit came to inside the open transaction.
pub(crate) enum KeyedRun {
    /// Every unit applied (or was a duplicate): commit.
    Commit(KeyedResults),
    /// A unit failed: roll back. It holds its error, every other unit
    /// [`StoreError::GroupAborted`].
    RollBack(KeyedResults),
}

/// Group commit of keyed units inside one open transaction (see `Store::commit_keyed`).
///
/// Lock order, so that concurrent group commits on PostgreSQL never deadlock: first every
/// unit's receipt, in key order (a transaction racing on the same key waits here, before it
/// holds anything else); then the conditional-match locks of every type any unit needs, in
/// name order; only then the writes (row locks). Units run without savepoints (on SQLite an
/// open savepoint copies every page a unit first touches into a sub-journal): the first
/// failing unit ends the run.
pub(crate) async fn apply_keyed<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    now: i64,
    units: Vec<KeyedWrite>,
) -> Result<KeyedRun, StoreError> {
    let mut order: Vec<usize> = (0..units.len()).collect();
    order.sort_by(|&a, &c| units[a].receipt.key.cmp(&units[c].receipt.key));
    let mut fresh = vec![false; units.len()];
    for &i in &order {
        fresh[i] = b.insert_receipt(&units[i].receipt, now).await?;
    }
    let mut types = BTreeSet::new();
    for (unit, _) in units.iter().zip(&fresh).filter(|(_, f)| **f) {
        conditional_types(&unit.entries, &mut types);
    }
    b.lock_types(&types).await?;
    let count = units.len();
    let mut results = Vec::with_capacity(count);
    for (i, (unit, fresh)) in units.into_iter().zip(fresh).enumerate() {
        let key = unit.receipt.key;
        if !fresh {
            results.push(Err(StoreError::DuplicateKey(key)));
            continue;
        }
        match apply(b, extractor, ctx, now, unit.entries, true).await {
            Ok(outcomes) => results.push(outcomes.into_iter().collect()),
            Err(e) => {
                // The kind only: the error's text may quote identifiers of the patient.
                tracing::debug!(%key, kind = ?e.kind(), units = count, "a unit failed; its group is rolled back");
                let mut failed = Some(e);
                let results = (0..count)
                    .map(|j| match failed.take_if(|_| j == i) {
                        Some(e) => Err(e),
                        None => Err(StoreError::GroupAborted),
                    })
                    .collect();
                return Ok(KeyedRun::RollBack(results));
            }
        }
    }
    Ok(KeyedRun::Commit(results))
}

/// The resource types whose conditional matching `entries` will lock: targets of conditional
/// creates, updates and deletes, and of conditional references in the resources.
fn conditional_types(entries: &[WriteEntry], types: &mut BTreeSet<String>) {
    let add = |types: &mut BTreeSet<String>, q: &SearchQuery| {
        types.insert(q.resource_type.clone().unwrap_or_default());
    };
    for entry in entries {
        let resource = match &entry.op {
            WriteOp::Create {
                resource,
                if_none_exist,
            } => {
                if let Some(q) = if_none_exist {
                    add(types, q);
                }
                resource
            }
            WriteOp::ConditionalUpdate { query, resource } => {
                add(types, query);
                resource
            }
            WriteOp::Update { resource, .. } => resource,
            WriteOp::ConditionalDelete { query } => {
                add(types, query);
                continue;
            }
            WriteOp::Delete { .. } => continue,
        };
        let mut urls = BTreeSet::new();
        refs::conditional_references(resource, &mut urls);
        for url in urls {
            if let Some((ty, _)) = url.split_once('?') {
                types.insert(ty.trim_start_matches('/').to_owned());
            }
        }
    }
}

async fn plan<B: Backend>(
    b: &mut B,
    ctx: &RequestContext,
    entries: &[WriteEntry],
    plans: &mut [Option<Plan>],
    urls: &mut HashMap<String, String>,
) -> Result<(), StoreError> {
    for (entry, slot) in entries.iter().zip(plans.iter_mut()) {
        let ctx = &*entry_context(ctx, entry.internal);
        let (plan, target) = match &entry.op {
            WriteOp::Create {
                resource,
                if_none_exist,
            } => {
                let ty = resource_type_of(resource).unwrap_or_default().to_owned();
                match if_none_exist {
                    None => {
                        let id = new_id();
                        (Plan::New(id.clone()), Some(format!("{ty}/{id}")))
                    }
                    Some(q) => match b.matches(q, 2, ctx.restriction()).await {
                        Ok(m) if m.is_empty() => {
                            let id = new_id();
                            (Plan::New(id.clone()), Some(format!("{ty}/{id}")))
                        }
                        Ok(m) if m.len() == 1 => {
                            let (t, id) = &m[0];
                            match b.load(t, id).await? {
                                Some(r) => (Plan::Existing(r), Some(format!("{t}/{id}"))),
                                None => (Plan::New(new_id()), None),
                            }
                        }
                        Ok(m) => (
                            Plan::Failed(StoreError::MultipleMatches {
                                what: "If-None-Exist".into(),
                                count: m.len(),
                            }),
                            None,
                        ),
                        Err(e) => (Plan::Failed(e), None),
                    },
                }
            }
            WriteOp::ConditionalUpdate { query, resource } => {
                let ty = resource_type_of(resource).unwrap_or_default().to_owned();
                match b.matches(query, 2, ctx.restriction()).await {
                    Ok(m) if m.is_empty() => {
                        let id = resource
                            .get("id")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(new_id);
                        (Plan::New(id.clone()), Some(format!("{ty}/{id}")))
                    }
                    Ok(m) if m.len() == 1 => {
                        let id = m[0].1.clone();
                        (Plan::UpdateId(id.clone()), Some(format!("{ty}/{id}")))
                    }
                    Ok(m) => (
                        Plan::Failed(StoreError::MultipleMatches {
                            what: "conditional update".into(),
                            count: m.len(),
                        }),
                        None,
                    ),
                    Err(e) => (Plan::Failed(e), None),
                }
            }
            WriteOp::Update {
                resource_type, id, ..
            } => {
                if let Some(u) = &entry.full_url {
                    urls.insert(u.clone(), format!("{resource_type}/{id}"));
                }
                continue;
            }
            WriteOp::Delete { .. } | WriteOp::ConditionalDelete { .. } => continue,
        };
        if let (Some(u), Some(t)) = (&entry.full_url, target) {
            urls.insert(u.clone(), t);
        }
        *slot = Some(plan);
    }
    Ok(())
}

/// A server-assigned id: a UUIDv7, time-ordered, so that new resources' rows in the indexes
/// keyed by id land at the right edge of the B-tree rather than on a random page.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn resource_type_of(resource: &Value) -> Result<&str, StoreError> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::Invalid("resource has no resourceType".into()))
}

#[allow(clippy::too_many_arguments)]
async fn write_one<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    now: i64,
    op: WriteOp,
    plan: Option<Plan>,
    prepared: Prepared<'_>,
) -> Result<Outcome, StoreError> {
    let plan = match plan {
        Some(Plan::Failed(e)) => return Err(e),
        p => p,
    };
    match op {
        WriteOp::Create { resource, .. } => match plan {
            Some(Plan::Existing(r)) => Ok(Outcome::Existing(r)),
            Some(Plan::New(id)) => {
                let ty = resource_type_of(&resource)?.to_owned();
                put(
                    b,
                    extractor,
                    ctx,
                    now,
                    &ty,
                    &id,
                    resource,
                    None,
                    prepared,
                    Method::Post,
                )
                .await
            }
            _ => Err(StoreError::Backend("create entry was not planned".into())),
        },
        WriteOp::ConditionalUpdate { resource, .. } => {
            let ty = resource_type_of(&resource)?.to_owned();
            let id = match plan {
                Some(Plan::New(id)) => id,
                Some(Plan::UpdateId(id)) => {
                    if let Some(body_id) = resource.get("id").and_then(Value::as_str)
                        && body_id != id
                    {
                        return Err(StoreError::Invalid(format!(
                            "conditional update matched {ty}/{id} but the resource has id '{body_id}'"
                        )));
                    }
                    id
                }
                _ => {
                    return Err(StoreError::Backend(
                        "conditional update was not planned".into(),
                    ));
                }
            };
            put(
                b,
                extractor,
                ctx,
                now,
                &ty,
                &id,
                resource,
                None,
                prepared,
                Method::Put,
            )
            .await
        }
        WriteOp::Update {
            resource_type,
            id,
            resource,
            if_match,
        } => {
            let ty = resource_type_of(&resource)?;
            if ty != resource_type {
                return Err(StoreError::Invalid(format!(
                    "resourceType '{ty}' does not match '{resource_type}'"
                )));
            }
            let method = if prepared.patch {
                Method::Patch
            } else {
                Method::Put
            };
            put(
                b,
                extractor,
                ctx,
                now,
                &resource_type,
                &id,
                resource,
                if_match,
                prepared,
                method,
            )
            .await
        }
        WriteOp::Delete {
            resource_type,
            id,
            if_match,
        } => delete(b, extractor, ctx, now, &resource_type, &id, if_match).await,
        WriteOp::ConditionalDelete { query } => {
            let m = b.matches(&query, 2, ctx.restriction()).await?;
            match m.as_slice() {
                [] => Ok(Outcome::NoOp),
                [(t, id)] => {
                    let (t, id) = (t.clone(), id.clone());
                    delete(b, extractor, ctx, now, &t, &id, None).await
                }
                _ => Err(StoreError::MultipleMatches {
                    what: "conditional delete".into(),
                    count: m.len(),
                }),
            }
        }
    }
}

/// Whether the existing resource `cur` is hidden from the caller of `ctx`.
async fn hidden<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    ty: &str,
    id: &str,
    cur: Current,
) -> Result<bool, StoreError> {
    match ctx.restriction() {
        None => Ok(false),
        Some(r) => Ok(!b.admits(extractor, r, ty, id, cur).await?),
    }
}

fn not_found(ty: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        resource_type: ty.into(),
        id: id.into(),
        version: None,
    }
}

async fn delete<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    now: i64,
    ty: &str,
    id: &str,
    if_match: Option<u64>,
) -> Result<Outcome, StoreError> {
    let Some(cur) = b.current(ty, id).await? else {
        return Err(not_found(ty, id));
    };
    if hidden(b, extractor, ctx, ty, id, cur).await? {
        return Err(not_found(ty, id));
    }
    if let Some(expected) = if_match
        && expected != cur.version
    {
        return Err(StoreError::VersionConflict {
            resource_type: ty.into(),
            id: id.into(),
            expected,
            current: Some(cur.version),
        });
    }
    if cur.deleted {
        return Ok(Outcome::NoOp);
    }
    let references = b.patient_references(cur.rid).await?;
    let compartments = compartment::of_references(
        ty,
        id,
        references.iter().map(|(p, t)| (p.as_str(), t.as_str())),
    );
    let v = NewVersion {
        rid: Some(cur.rid),
        resource_type: ty,
        id,
        version: cur.version + 1,
        last_updated: now,
        method: Method::Delete,
        body: None,
        index: Vec::new(),
        request_id: &ctx.request_id,
        compartments: &compartments,
    };
    b.write(v).await?;
    Ok(Outcome::Deleted(StoredResource {
        resource_type: ty.into(),
        id: id.into(),
        version: cur.version + 1,
        last_updated: now,
        deleted: true,
        method: Method::Delete,
        body: None,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn put<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    now: i64,
    ty: &str,
    id: &str,
    mut resource: Value,
    if_match: Option<u64>,
    prepared: Prepared<'_>,
    method: Method,
) -> Result<Outcome, StoreError> {
    let Prepared {
        urls,
        planned,
        resolved,
        index,
        references,
        patch: _,
    } = prepared;
    if !resource.is_object() {
        return Err(StoreError::Invalid(
            "a resource must be a JSON object".into(),
        ));
    }
    let cur = b.current(ty, id).await?;
    // Before the version check: a 409/412 would tell a hidden resource's version.
    if let Some(c) = cur
        && hidden(b, extractor, ctx, ty, id, c).await?
    {
        return Err(not_found(ty, id));
    }
    if let Some(expected) = if_match {
        match cur {
            Some(c) if c.version == expected && !c.deleted => {}
            c => {
                return Err(StoreError::VersionConflict {
                    resource_type: ty.into(),
                    id: id.into(),
                    expected,
                    current: c.map(|c| c.version),
                });
            }
        }
    }
    let rewritten = refs::rewrite(&mut resource, urls);
    let resolved_any =
        resolve_conditional_references(b, extractor, ctx, &mut resource, resolved).await?;
    if let ReferenceCheck::Refuse { base } = &references {
        check_references(
            b,
            extractor,
            ctx,
            (ty, id),
            &resource,
            base.as_deref(),
            planned,
        )
        .await?;
    }
    // Labels and custodian before the comparison, so that a resource sent again as it was
    // is still unchanged.
    let marked = crate::marks::mark(&mut resource, b.labeler(), ctx.organization.as_deref());
    // An update that changes nothing (meta.versionId / lastUpdated aside) writes no new
    // version: the current one is the answer. Feeds that repeat the same directory resources
    // in every message (HL7 v2, bulk re-imports) then cost a read, not a write.
    if let Some(c) = cur.filter(|c| !c.deleted)
        && let Some(current) = b.load(ty, id).await?
        && let Some(body) = current.body.as_deref()
        && let Ok(stored) = serde_json::from_str::<Value>(body)
        && same_content(
            &stored,
            &with_meta(resource.clone(), id, c.version, current.last_updated),
        )
    {
        return Ok(Outcome::Unchanged(current));
    }
    let version = cur.map(|c| c.version + 1).unwrap_or(1);
    let resource = with_meta(resource, id, version, now);
    // Rows extracted from the resource as given still hold (`id` and `meta.versionId` /
    // `lastUpdated`, which `with_meta` sets, are not indexed) once the reference rows of
    // rewritten `fullUrl`s follow them, unless an entry is also named where the rewrite does
    // not reach (a `canonical` or `uri`: the rewritten `reference`s are skipped, so what the
    // check finds is such a string); a resolved conditional reference means extracting again
    // (its target's type and id were unknown to the caller).
    let index = match index {
        Some(rows) if !resolved_any && !rewritten && !marked => rows,
        Some(mut rows)
            if !resolved_any
                && !marked
                && !refs::names_entry_outside_references(&resource, urls) =>
        {
            crate::index::rewrite_reference_rows(&mut rows, urls);
            rows
        }
        _ => extractor.extract(ty, &resource)?,
    };
    let body = serde_json::to_string(&resource)
        .map_err(|e| StoreError::Invalid(format!("resource cannot be serialized: {e}")))?;
    let compartments = compartment::of_rows(ty, id, &index);
    // A caller restricted to some patients writes inside their records only: a new resource, or an
    // update, that would land in none of their compartments is refused, so a write can
    // neither plant data in another person's record nor move data out of the caller's view.
    if let Some(allowed) = ctx.restriction().and_then(|r| r.patients.as_ref())
        && !compartments.iter().any(|p| allowed.contains(p))
    {
        return Err(StoreError::Forbidden(format!(
            "{ty}/{id} would be outside the records of the patients this request may reach"
        )));
    }
    b.write(NewVersion {
        rid: cur.map(|c| c.rid),
        resource_type: ty,
        id,
        version,
        last_updated: now,
        method,
        body: Some(&body),
        index,
        request_id: &ctx.request_id,
        compartments: &compartments,
    })
    .await?;
    b.discard(resource);
    let stored = StoredResource {
        resource_type: ty.into(),
        id: id.into(),
        version,
        last_updated: now,
        deleted: false,
        method,
        body: Some(body),
    };
    Ok(match cur {
        Some(c) if !c.deleted => Outcome::Updated(stored),
        _ => Outcome::Created(stored),
    })
}

async fn resolve_conditional_references<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    resource: &mut Value,
    resolved: &mut HashMap<String, String>,
) -> Result<bool, StoreError> {
    let mut found = BTreeSet::new();
    refs::conditional_references(resource, &mut found);
    if found.is_empty() {
        return Ok(false);
    }
    let mut map = HashMap::new();
    for url in found {
        // Resolutions are remembered for the rest of the call: a transaction (or import chunk)
        // referring many times to the same practitioner asks the database once.
        if let Some(target) = resolved.get(&url) {
            map.insert(url, target.clone());
            continue;
        }
        let q = SearchQuery::parse_url(&url, extractor)?;
        let m = b.matches(&q, 2, ctx.restriction()).await?;
        match m.as_slice() {
            [(t, id)] => {
                resolved.insert(url.clone(), format!("{t}/{id}"));
                map.insert(url, format!("{t}/{id}"));
            }
            [] => {
                return Err(StoreError::Invalid(format!(
                    "conditional reference '{url}' matches no resource"
                )));
            }
            _ => {
                return Err(StoreError::MultipleMatches {
                    what: format!("conditional reference '{url}'"),
                    count: m.len(),
                });
            }
        }
    }
    Ok(refs::rewrite(resource, &map))
}

/// Referential integrity: every local literal reference of `resource` (being written as
/// `ty/id`) names the resource itself, a resource this call will write (the targets of its
/// `fullUrl`s), or a live resource as this transaction sees it and the caller may see.
async fn check_references<B: Backend>(
    b: &mut B,
    extractor: &dyn IndexExtractor,
    ctx: &RequestContext,
    (ty, id): (&str, &str),
    resource: &Value,
    base: Option<&str>,
    planned: &HashSet<String>,
) -> Result<(), StoreError> {
    let references = refs::local_references(resource, base);
    if references.is_empty() {
        return Ok(());
    }
    let own = format!("{ty}/{id}");
    let mut present: BTreeSet<&str> = BTreeSet::new();
    for r in &references {
        let target = r.target.as_str();
        if target == own || present.contains(target) || planned.contains(target) {
            continue;
        }
        let (t, i) = target.split_once('/').unwrap_or((target, ""));
        let live = match b.current(t, i).await? {
            Some(c) if !c.deleted => !hidden(b, extractor, ctx, t, i, c).await?,
            _ => false,
        };
        if !live {
            return Err(StoreError::MissingReference {
                element: r.element.clone(),
                reference: r.reference.clone(),
            });
        }
        present.insert(target);
    }
    Ok(())
}

/// Equal as FHIR content: the same JSON, `meta.versionId` and `meta.lastUpdated` aside (the
/// candidate carries the stored ones, so this is plain equality).
fn same_content(stored: &Value, candidate: &Value) -> bool {
    stored == candidate
}

/// The resource with `id` and `meta.versionId` / `meta.lastUpdated` set, `resourceType`, `id`
/// and `meta` first, every other member in its original order.
fn with_meta(resource: Value, id: &str, version: u64, now: i64) -> Value {
    let Value::Object(mut obj) = resource else {
        return resource;
    };
    let mut meta = match obj.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".into(),
        Value::String(crate::time::format_instant(now)),
    );
    let mut out = Map::with_capacity(obj.len() + 2);
    if let Some(t) = obj.shift_remove("resourceType") {
        out.insert("resourceType".into(), t);
    }
    obj.shift_remove("id");
    out.insert("id".into(), Value::String(id.into()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(obj);
    Value::Object(out)
}

/// Drives a future that never waits (the SQLite backend's, whose calls are synchronous) to
/// completion on the current thread.
pub(crate) fn run_ready<F: Future>(fut: F) -> Result<F::Output, StoreError> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Ok(v),
        std::task::Poll::Pending => Err(StoreError::Backend(
            "a synchronous store operation unexpectedly waited".into(),
        )),
    }
}
