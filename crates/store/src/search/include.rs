//! `_include` and `_revinclude` (with `:iterate`): the resources a page of matches refers to,
//! and the resources that refer to them.
//!
//! Forward includes read the references of each match from its own index rows (the extractor
//! evaluates the parameter's expression on the stored body; for `*`, every literal reference
//! in the body), then fetch the targets by id;
//! reverse includes are ordinary reference searches on the source type. Both go through
//! [`Store::search`], so they work on every backend. Iteration stops when nothing new is found,
//! after [`MAX_ROUNDS`] rounds, or at [`MAX_INCLUDED`] resources.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use crate::context::RequestContext;
use crate::error::StoreError;
use crate::index::{IndexValue, ParamType};
use crate::model::StoredResource;
use crate::{Store, search};

use super::{Filter, Include, MAX_COUNT, SearchQuery, ValueMatch};

/// Rounds of `:iterate`.
pub const MAX_ROUNDS: usize = 4;
/// Most resources included in one page.
pub const MAX_INCLUDED: usize = 5000;
/// Ids (or references) per lookup query.
const CHUNK: usize = 200;

/// The resources `q`'s `_include` / `_revinclude` add to a page of `matches` (none of which
/// they repeat), in a stable order.
pub async fn resolve(
    store: &dyn Store,
    ctx: &RequestContext,
    q: &SearchQuery,
    matches: &[StoredResource],
) -> Result<Vec<StoredResource>, StoreError> {
    if q.include.is_empty() && q.revinclude.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|r| (r.resource_type.clone(), r.id.clone()))
        .collect();
    let mut out = Vec::new();
    let mut frontier: Vec<StoredResource> = matches.to_vec();
    for round in 0..MAX_ROUNDS {
        let includes: Vec<&Include> = q
            .include
            .iter()
            .filter(|i| round == 0 || i.iterate)
            .collect();
        let revincludes: Vec<&Include> = q
            .revinclude
            .iter()
            .filter(|i| round == 0 || i.iterate)
            .collect();
        if frontier.is_empty() || (includes.is_empty() && revincludes.is_empty()) {
            break;
        }
        let mut found = Vec::new();
        forward(store, ctx, &includes, &frontier, &mut found).await?;
        reverse(store, ctx, &revincludes, &frontier, &mut found).await?;
        found.retain(|r| seen.insert((r.resource_type.clone(), r.id.clone())));
        out.extend(found.iter().cloned());
        frontier = found;
        if out.len() >= MAX_INCLUDED {
            out.truncate(MAX_INCLUDED);
            break;
        }
    }
    Ok(out)
}

/// The targets of the matching reference parameters of `sources`.
async fn forward(
    store: &dyn Store,
    ctx: &RequestContext,
    includes: &[&Include],
    sources: &[StoredResource],
    found: &mut Vec<StoredResource>,
) -> Result<(), StoreError> {
    if includes.is_empty() {
        return Ok(());
    }
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources {
        let relevant: Vec<&&Include> = includes
            .iter()
            .filter(|i| {
                i.source_type
                    .as_deref()
                    .is_none_or(|t| t == source.resource_type)
            })
            .collect();
        if relevant.is_empty() {
            continue;
        }
        let Some(body) = source
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
        else {
            continue;
        };
        if relevant.iter().all(|i| i.param.is_none()) {
            // `*`: every literal reference of the resource, read straight from its JSON (no
            // need to evaluate each reference parameter's expression to find them).
            let mut refs = Vec::new();
            literal_references(&body, &mut refs);
            for (target_type, target_id) in refs {
                if relevant
                    .iter()
                    .any(|i| i.target_type.as_deref().is_none_or(|t| t == target_type))
                {
                    wanted
                        .entry(target_type.to_owned())
                        .or_default()
                        .insert(target_id.to_owned());
                }
            }
            continue;
        }
        for row in store.extractor().extract(&source.resource_type, &body)? {
            let IndexValue::Reference {
                target_type: Some(target_type),
                target_id: Some(target_id),
                ..
            } = &row.value
            else {
                continue;
            };
            if row.param.contains([':', '$']) {
                continue;
            }
            let wanted_here = relevant.iter().any(|i| {
                i.param.as_deref().is_none_or(|p| p == row.param)
                    && i.target_type.as_deref().is_none_or(|t| t == target_type)
            });
            if wanted_here {
                wanted
                    .entry(target_type.clone())
                    .or_default()
                    .insert(target_id.clone());
            }
        }
    }
    for (resource_type, ids) in wanted {
        let ids: Vec<String> = ids.into_iter().collect();
        for chunk in ids.chunks(CHUNK) {
            let mut lookup = SearchQuery::all(Some(&resource_type));
            lookup.count = MAX_COUNT;
            lookup.total = search::TotalMode::None;
            lookup.filters.push(Filter::Id {
                ids: chunk.to_vec(),
                negate: false,
            });
            every_page(store, ctx, lookup, found).await?;
        }
    }
    Ok(())
}

/// Every relative literal reference (`Type/id`, `Type/id/_history/n`) in `value` to a
/// resource type of R4.
fn literal_references<'a>(value: &'a Value, out: &mut Vec<(&'a str, &'a str)>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                match v {
                    Value::String(s) if k == "reference" => {
                        let mut parts = s.split('/');
                        if let (Some(t), Some(id)) = (parts.next(), parts.next())
                            && matches!(parts.next(), None | Some("_history"))
                            && !id.is_empty()
                            && fhir::r4().is_concrete_resource(t)
                        {
                            out.push((t, id));
                        }
                    }
                    other => literal_references(other, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| literal_references(v, out)),
        _ => {}
    }
}

/// The resources of each `_revinclude` source type that refer to one of `targets`.
async fn reverse(
    store: &dyn Store,
    ctx: &RequestContext,
    revincludes: &[&Include],
    targets: &[StoredResource],
    found: &mut Vec<StoredResource>,
) -> Result<(), StoreError> {
    for include in revincludes {
        // `_revinclude=*` has no source type to search; the parser only lets it through for
        // symmetry with `_include=*`, and it adds nothing.
        let Some(source_type) = include.source_type.as_deref() else {
            continue;
        };
        let params: Vec<String> = match &include.param {
            Some(p) => vec![p.clone()],
            None => store
                .extractor()
                .parameters(source_type)
                .into_iter()
                .filter(|p| p.kind == ParamType::Reference)
                .map(|p| p.name)
                .collect(),
        };
        let references: Vec<ValueMatch> = targets
            .iter()
            .filter(|t| {
                include
                    .target_type
                    .as_deref()
                    .is_none_or(|tt| tt == t.resource_type)
            })
            .map(|t| ValueMatch::Reference {
                target_type: Some(t.resource_type.clone()),
                id: Some(t.id.clone()),
                url: None,
            })
            .collect();
        for param in &params {
            for chunk in references.chunks(CHUNK) {
                let mut lookup = SearchQuery::all(Some(source_type));
                lookup.count = MAX_COUNT;
                lookup.total = search::TotalMode::None;
                lookup.filters.push(Filter::Param {
                    param: param.clone(),
                    values: chunk.to_vec(),
                    negate: false,
                });
                every_page(store, ctx, lookup, found).await?;
            }
        }
    }
    Ok(())
}

/// Appends every match of `lookup`, following the paging cursor, up to [`MAX_INCLUDED`].
async fn every_page(
    store: &dyn Store,
    ctx: &RequestContext,
    mut lookup: SearchQuery,
    found: &mut Vec<StoredResource>,
) -> Result<(), StoreError> {
    loop {
        let page = store.search(ctx, &lookup).await?;
        found.extend(page.matches);
        match page.next {
            Some(next) if found.len() < MAX_INCLUDED => {
                lookup.after = Some(super::Cursor::decode(&next)?)
            }
            _ => return Ok(()),
        }
    }
}
