//! Decisions people make on the index (link, unlink, merge, unmerge), the review queue they
//! settle, and the PIXm identifier cross-reference.
//!
//! Each decision is one transaction on the store underneath the [`super::EmpiStore`] (the one
//! the [`Mpi`] holds), planned and committed with the request's internal context: the
//! golden-record writes, an `AuditEvent` naming who decided what and why, and the review
//! `Task`s about the sources concerned, closed. Links it makes are `manual`: no automatic
//! pass moves them again. Patients are named as `id`, `Patient/id` or a URL ending so
//! ([`patient_arg`]); every refusal says why (does not exist, was deleted, is a golden record
//! and not a source or the other way round, is retired and how, ...).

use empi::EnterpriseId;
use empi::golden::ENTERPRISE_ID_SYSTEM;
use serde_json::{Value, json};
use store::{RequestContext, SearchQuery, StoreError, WriteEntry, WriteOp};

use super::plan::Planner;
use super::resources::{
    LinkMeta, audit_event, enterprise_of_id, is_golden, parse_golden, patient_id_of,
};
use super::{Mpi, review_query};

/// Why a manual decision or a PIXm query was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// Names something that does not exist (a 404).
    #[error("{0}")]
    NotFound(String),
    /// A request that cannot be carried out as asked (a 400 / 422).
    #[error("{0}")]
    Invalid(String),
    /// PIXm: the target system is not one this index knows (a 403, as ITI-83 asks).
    #[error("{0}")]
    UnknownTargetSystem(String),
    /// Linking is off on this node.
    #[error("EMPI linking is disabled on this server")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to a PIXm query: identifiers and Patient references of the same person.
#[derive(Debug, Clone, Default)]
pub struct PixAnswer {
    pub identifiers: Vec<Value>,
    pub patients: Vec<String>,
}

/// Which decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Link,
    Unlink,
    Merge,
    Unmerge,
}

impl Action {
    fn code(self) -> &'static str {
        match self {
            Action::Link => "link",
            Action::Unlink => "unlink",
            Action::Merge => "merge",
            Action::Unmerge => "unmerge",
        }
    }
}

/// A Patient named as `id`, `Patient/id` or a URL ending in `Patient/id` (as the CLI and the
/// operations' parameters accept them), as its id.
pub fn patient_arg(raw: &str) -> Result<String, ManualError> {
    let raw = raw.trim();
    let id = if raw.contains('/') {
        patient_id_of(raw)
    } else {
        Some(raw)
    };
    id.filter(|id| {
        id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    })
    .map(str::to_owned)
    .ok_or_else(|| {
        ManualError::Invalid(format!(
            "'{raw}' is not a Patient reference (give an id or Patient/id)"
        ))
    })
}

/// The golden record a decision names.
fn golden_id(planner: &Planner<'_>, id: &str) -> Result<EnterpriseId, ManualError> {
    if let Some(e) = enterprise_of_id(id) {
        return Ok(e);
    }
    Err(ManualError::Invalid(match planner.enterprise_of(id) {
        Some(e) => format!(
            "Patient/{id} is a source, not a golden record (its golden record is Patient/{e})"
        ),
        None => format!(
            "Patient/{id} is not a golden record (golden record ids are E and 10 digits, \
             like E0000000001)"
        ),
    }))
}

impl Mpi {
    /// Links source Patient `source` to the identity of golden record `golden` (manual).
    pub async fn link(
        &self,
        ctx: &RequestContext,
        source: &str,
        golden: &str,
        reason: &str,
    ) -> Result<Vec<EnterpriseId>, ManualError> {
        let (source, golden) = (patient_arg(source)?, patient_arg(golden)?);
        self.check_source(ctx, &source).await?;
        self.decide(ctx, Action::Link, reason, |planner| {
            let target = golden_id(planner, &golden)?;
            known_source(planner, &source)?;
            active_golden(planner, target)?;
            planner.assign(&source, target, LinkMeta::manual("link", reason))?;
            Ok(vec![source.clone()])
        })
        .await
    }

    /// Takes `source` out of its identity into one of its own (manual): "not the same person".
    /// A source already alone stays where it is, its link made manual.
    pub async fn unlink(
        &self,
        ctx: &RequestContext,
        source: &str,
        reason: &str,
    ) -> Result<Vec<EnterpriseId>, ManualError> {
        let source = patient_arg(source)?;
        self.check_source(ctx, &source).await?;
        self.decide(ctx, Action::Unlink, reason, |planner| {
            let current = known_source(planner, &source)?;
            let alone = planner.members(current).len() <= 1;
            let target = if alone {
                current
            } else {
                planner.cache.index.reserve()
            };
            planner.assign(&source, target, LinkMeta::manual("separate", reason))?;
            Ok(vec![source.clone()])
        })
        .await
    }

    /// Merges identity `from` into `into`: every source of `from` joins `into` (manual), and
    /// `from`'s golden record is retired (`active: false`, `replaced-by` `into`).
    pub async fn merge(
        &self,
        ctx: &RequestContext,
        from: &str,
        into: &str,
        reason: &str,
    ) -> Result<Vec<EnterpriseId>, ManualError> {
        let (from, into) = (patient_arg(from)?, patient_arg(into)?);
        self.decide(ctx, Action::Merge, reason, |planner| {
            let (from, into) = (golden_id(planner, &from)?, golden_id(planner, &into)?);
            if from == into {
                return Err(ManualError::Invalid(format!(
                    "Patient/{from} cannot be merged into itself"
                )));
            }
            active_golden(planner, from)?;
            active_golden(planner, into)?;
            let sources: Vec<String> = planner.members(from).keys().cloned().collect();
            for s in &sources {
                planner.assign(s, into, LinkMeta::manual("merge", reason))?;
            }
            planner.retire(from, into);
            Ok(sources)
        })
        .await
    }

    /// Undoes the merge that retired golden record `retired`: the sources it had before the
    /// merge that are still in the survivor come back to it (manual).
    pub async fn unmerge(
        &self,
        ctx: &RequestContext,
        retired: &str,
        reason: &str,
    ) -> Result<Vec<EnterpriseId>, ManualError> {
        let retired = patient_arg(retired)?;
        let retired = retired.as_str();
        let e = enterprise_of_id(retired).ok_or_else(|| {
            ManualError::Invalid(format!(
                "Patient/{retired} is not a golden record (golden record ids are E and 10 \
                 digits); only a golden record merged into another can be unmerged"
            ))
        })?;
        let (store, internal) = (self.store.as_ref(), &ctx.internal());
        let current = store
            .load(internal, "Patient", retired)
            .await?
            .ok_or_else(|| {
                ManualError::NotFound(format!("golden record Patient/{retired} does not exist"))
            })?;
        if current.deleted {
            return Err(ManualError::Invalid(format!(
                "Patient/{retired} is retired (deleted: none of its sources is left), not \
                 merged; only a golden record merged into another can be unmerged"
            )));
        }
        let body: Value = serde_json::from_str(current.body.as_deref().unwrap_or("{}"))
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let survivor = super::resources::replaced_by_reference(&body)
            .and_then(super::resources::patient_id_of)
            .and_then(enterprise_of_id)
            .ok_or_else(|| {
                ManualError::Invalid(format!(
                    "Patient/{retired} is active: it was not merged into another identity"
                ))
            })?;
        // Its membership just before it was retired.
        let mut before = None;
        for version in (1..current.version).rev() {
            if let Some(v) = store
                .load_version(internal, "Patient", retired, version)
                .await?
                && let Some(text) = v.body.as_deref()
            {
                let old: Value =
                    serde_json::from_str(text).map_err(|e| StoreError::Backend(e.to_string()))?;
                let state = parse_golden(version, &old);
                if state.active {
                    before = Some(state);
                    break;
                }
            }
        }
        let before = before.ok_or_else(|| {
            ManualError::Invalid(format!(
                "no earlier membership of Patient/{retired} to restore"
            ))
        })?;
        self.decide(ctx, Action::Unmerge, reason, |planner| {
            let mut moved = Vec::new();
            for source in before.links.keys() {
                if planner.enterprise_of(source) == Some(survivor) {
                    planner.assign(source, e, LinkMeta::manual("unmerge", reason))?;
                    moved.push(source.clone());
                }
            }
            if moved.is_empty() {
                return Err(ManualError::Invalid(format!(
                    "none of Patient/{retired}'s former sources is still in Patient/{survivor}"
                )));
            }
            Ok(moved)
        })
        .await
    }

    /// Refuses a source that does not exist, was deleted, or is a golden record, saying which.
    async fn check_source(&self, ctx: &RequestContext, source: &str) -> Result<(), ManualError> {
        if enterprise_of_id(source).is_some() {
            return Err(ManualError::Invalid(format!(
                "Patient/{source} is a golden record, not a source"
            )));
        }
        let Some(stored) = self.store.load(&ctx.internal(), "Patient", source).await? else {
            return Err(ManualError::NotFound(format!(
                "source Patient/{source} does not exist"
            )));
        };
        if stored.deleted {
            return Err(ManualError::NotFound(format!(
                "source Patient/{source} was deleted"
            )));
        }
        let body: Value = serde_json::from_str(stored.body.as_deref().unwrap_or("{}"))
            .map_err(|e| StoreError::Backend(format!("stored Patient/{source}: {e}")))?;
        if is_golden(&body) {
            return Err(ManualError::Invalid(format!(
                "Patient/{source} is a golden record, not a source"
            )));
        }
        Ok(())
    }

    /// Runs one manual decision: plan it, add the audit event and the closed review tasks,
    /// commit, refresh. Returns the identities it changed.
    async fn decide<F>(
        &self,
        ctx: &RequestContext,
        action: Action,
        reason: &str,
        plan: F,
    ) -> Result<Vec<EnterpriseId>, ManualError>
    where
        F: FnOnce(&mut Planner<'_>) -> Result<Vec<String>, ManualError>,
    {
        if !self.linking {
            return Err(ManualError::Disabled);
        }
        if reason.trim().is_empty() {
            return Err(ManualError::Invalid(
                "a manual EMPI decision needs a reason".into(),
            ));
        }
        let (store, ctx) = (self.store.as_ref(), &ctx.internal());
        let mut cache = self.locked_for_decision(ctx).await?;
        let mut planner = Planner::new(&mut cache, self.now());
        let planned = async {
            let sources = plan(&mut planner)?;
            let touched: Vec<EnterpriseId> = planner.touched().collect();
            planner
                .close_reviews(store, ctx, &sources, action.code())
                .await?;
            let mut writes = planner.finish(store, ctx, &self.survivorship).await?;
            let now = planner.now().to_owned();
            let mut entities: Vec<String> =
                sources.iter().map(|s| format!("Patient/{s}")).collect();
            entities.extend(touched.iter().map(|e| format!("Patient/{e}")));
            writes.push(WriteEntry::new(WriteOp::Create {
                resource: audit_event(ctx, action.code(), reason, &entities, &now),
                if_none_exist: None,
            }));
            Ok::<_, ManualError>((touched, writes))
        }
        .await;
        let result = match planned {
            Ok((touched, writes)) => store
                .transaction(ctx, writes)
                .await
                .map(|_| touched)
                .map_err(|e| ManualError::Store(e.into_inner())),
            Err(e) => Err(e),
        };
        planner.undo();
        drop(planner);
        super::refresh_after_commit(&mut cache, store, ctx).await;
        result
    }

    /// The open review queue: `Task`s, oldest first, at most `limit`.
    pub async fn review_queue(
        &self,
        ctx: &RequestContext,
        limit: usize,
    ) -> Result<Vec<Value>, ManualError> {
        let store = self.store.as_ref();
        let mut q = review_query(store, None)?;
        q.count = limit;
        Ok(store
            .search(ctx, &q)
            .await?
            .matches
            .into_iter()
            .filter_map(|r| r.body.and_then(|b| serde_json::from_str(&b).ok()))
            .collect())
    }

    /// PIXm (ITI-83): the identifiers and Patients of the person `system|value` identifies,
    /// restricted to `targets` (identifier systems) when given.
    pub async fn pix(
        &self,
        ctx: &RequestContext,
        system: &str,
        value: &str,
        targets: &[String],
    ) -> Result<PixAnswer, ManualError> {
        if !self.linking {
            return Err(ManualError::Disabled);
        }
        let store = self.store.as_ref();
        let patients = |criteria: String| {
            SearchQuery::parse(
                Some("Patient"),
                &[("identifier".to_owned(), criteria)],
                store.extractor(),
                false,
            )
        };
        for target in targets {
            if target == ENTERPRISE_ID_SYSTEM {
                continue;
            }
            let mut q = patients(format!("{}|", escape(target)))?;
            q.count = 1;
            if store.search(ctx, &q).await?.matches.is_empty() {
                return Err(ManualError::UnknownTargetSystem(format!(
                    "targetSystem '{target}' is not an assigning authority of this index"
                )));
            }
        }
        let mut q = patients(format!("{}|{}", escape(system), escape(value)))?;
        q.count = 50;
        let found = store.search(ctx, &q).await?;
        let sources: Vec<String> = found
            .matches
            .iter()
            .filter(|r| enterprise_of_id(&r.id).is_none())
            .map(|r| r.id.clone())
            .collect();
        if sources.is_empty() {
            return Err(ManualError::NotFound(format!(
                "no patient has identifier {system}|{value}"
            )));
        }
        let mut answer = PixAnswer::default();
        let wanted = |sys: &str| targets.is_empty() || targets.iter().any(|t| t == sys);
        let mut members: Vec<String> = Vec::new();
        let mut identities = Vec::new();
        for s in &sources {
            match self.identity_of(ctx, s).await? {
                Some((e, m)) => {
                    identities.push(e);
                    members.extend(m);
                }
                None => members.push(s.clone()),
            }
        }
        members.sort();
        members.dedup();
        let mut seen: std::collections::HashSet<(String, String)> = Default::default();
        for m in &members {
            let Some(stored) = store.load(ctx, "Patient", m).await? else {
                continue;
            };
            let Some(text) = stored.body.as_deref() else {
                continue;
            };
            let body: Value =
                serde_json::from_str(text).map_err(|e| StoreError::Backend(e.to_string()))?;
            answer.patients.push(format!("Patient/{m}"));
            for id in body["identifier"].as_array().into_iter().flatten() {
                let sys = id["system"].as_str().unwrap_or("");
                let val = id["value"].as_str().unwrap_or("");
                let same = sys == system && val == value;
                if !same && wanted(sys) && seen.insert((sys.to_owned(), val.to_owned())) {
                    answer.identifiers.push(id.clone());
                }
            }
        }
        identities.sort();
        identities.dedup();
        for e in identities {
            if wanted(ENTERPRISE_ID_SYSTEM) {
                answer.identifiers.push(json!({
                    "use": "official",
                    "system": ENTERPRISE_ID_SYSTEM,
                    "value": e.to_string(),
                }));
            }
            answer.patients.push(format!("Patient/{e}"));
        }
        Ok(answer)
    }
}

/// A token search value with `\`, `|`, `,` and `$` escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn known_source(planner: &Planner<'_>, source: &str) -> Result<EnterpriseId, ManualError> {
    if enterprise_of_id(source).is_some() {
        return Err(ManualError::Invalid(format!(
            "Patient/{source} is a golden record, not a source"
        )));
    }
    planner.enterprise_of(source).ok_or_else(|| {
        ManualError::Invalid(format!(
            "Patient/{source} is not linked to a golden record yet (it was written with \
             linking off; `renkei serve` or `renkei import` links it)"
        ))
    })
}

fn active_golden(planner: &Planner<'_>, e: EnterpriseId) -> Result<(), ManualError> {
    match planner.cache.goldens.get(&e) {
        Some(g) => match g.retirement() {
            None => Ok(()),
            Some(why) => Err(ManualError::Invalid(format!(
                "golden record Patient/{e} is retired ({why})"
            ))),
        },
        None => Err(ManualError::NotFound(format!(
            "golden record Patient/{e} does not exist"
        ))),
    }
}
