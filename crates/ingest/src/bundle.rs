//! The prepare-and-validate half of [batch and
//! transaction](https://hl7.org/fhir/R4/http.html#transaction) processing, without HTTP: each
//! entry's method, URL, resource type, conditional criteria and validation are checked and
//! turned into a store write ([`Preparer::entry`]); reads are handed back to the caller, which
//! alone knows how to answer them (the web crate's `POST [base]`).
//!
//! Writes run in the spec's processing order ([`processing_order`]: DELETE, POST, PUT/PATCH,
//! GET/HEAD). [`Preparer::transaction`] prepares a whole Bundle of writes for callers that
//! commit them with more in one store call (HL7 v2 ingestion commits them with the message's
//! receipt); [`Preparer::run`] prepares and runs a batch or transaction of writes (`renkei
//! import` of Bundle files). Errors are typed ([`EntryError`], with the entry's index in
//! [`BundleError`]). PATCH entries carry a JSON Patch as a Binary resource (`contentType`
//! `application/json-patch+json`).

use serde_json::Value;
use store::{Outcome, ReferenceCheck, RequestContext, Store, StoreError, WriteEntry, WriteOp};

use crate::entry::{
    EntryError, check_resource_type, check_type, conditional_query, if_none_exist, parse_etag,
    valid_id, validate,
};
use crate::patch::{binary_patch, patched};
use crate::validation::Validator;

/// An entry's error, with the entry's index in the Bundle as it was sent (`None`: the store
/// call failed as a whole, no entry to blame).
#[derive(Debug)]
pub struct BundleError {
    pub entry: Option<usize>,
    pub error: EntryError,
}

impl BundleError {
    /// The error of entry `index`.
    pub fn at(index: usize, error: EntryError) -> Self {
        BundleError {
            entry: Some(index),
            error,
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some(i) => write!(f, "Bundle.entry[{i}]: {}", self.error),
            None => self.error.fmt(f),
        }
    }
}

/// A checked entry.
#[derive(Debug)]
pub enum Prepared {
    /// Boxed: a write carries its conditional search query, far larger than a URL.
    Write(Box<WriteEntry>),
    /// A `GET` or `HEAD` entry, by its URL: for the caller to answer.
    Read(String),
}

/// Processing order of the spec: DELETE, POST, PUT/PATCH, GET/HEAD.
pub fn processing_order(method: &str) -> u8 {
    match method {
        "DELETE" => 0,
        "POST" => 1,
        "PUT" | "PATCH" => 2,
        _ => 3,
    }
}

/// An entry's `request.method` (empty when absent).
pub fn method(entry: &Value) -> &str {
    entry
        .pointer("/request/method")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// An entry URL relative to `base` (absolute URLs under it are accepted), split into path
/// segments and query.
pub fn split_url<'u>(base: &str, url: &'u str) -> (Vec<&'u str>, Option<&'u str>) {
    let rel = url
        .strip_prefix(base)
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    (path.split('/').filter(|s| !s.is_empty()).collect(), query)
}

/// A Bundle's entries (none when it has no `entry`).
pub fn entries(bundle: &Value) -> &[Value] {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// What entries are checked against, and how their writes treat references.
#[derive(Debug, Clone, Copy)]
pub struct Preparer<'a> {
    /// Reads a PATCH entry's current version; parses conditional criteria with its extractor.
    pub store: &'a dyn Store,
    pub validator: &'a dyn Validator,
    pub ctx: &'a RequestContext,
    /// The FHIR base URL, which absolute entry URLs may start with (empty: none does).
    pub base: &'a str,
    /// Whether a write refuses a local reference to a resource not on the server.
    pub references: &'a ReferenceCheck,
}

impl Preparer<'_> {
    /// The entry URL relative to the base, split into path segments and query.
    pub fn split_url<'u>(&self, url: &'u str) -> (Vec<&'u str>, Option<&'u str>) {
        split_url(self.base, url)
    }

    /// Checks one entry: a write ready for the store, or a read for the caller.
    pub async fn entry(&self, entry: &Value) -> Result<Prepared, EntryError> {
        let method = method(entry);
        let url = entry
            .pointer("/request/url")
            .and_then(Value::as_str)
            .ok_or_else(|| EntryError::malformed("entry has no request.url"))?;
        let full_url = entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (path, query) = self.split_url(url);
        let if_match = match entry.pointer("/request/ifMatch").and_then(Value::as_str) {
            Some(s) => Some(
                parse_etag(s)
                    .ok_or_else(|| EntryError::malformed(format!("malformed ifMatch '{s}'")))?,
            ),
            None => None,
        };
        let resource = || -> Result<Value, EntryError> {
            match entry.get("resource") {
                Some(r @ Value::Object(_)) => Ok(r.clone()),
                _ => Err(EntryError::malformed(format!(
                    "{method} entry has no resource"
                ))),
            }
        };
        let extractor = self.store.extractor();
        let op = match (method, path.as_slice(), query) {
            ("GET" | "HEAD", _, _) => return Ok(Prepared::Read(url.to_owned())),
            ("POST", [ty], None) => {
                check_type(self.validator, ty)?;
                let r = resource()?;
                check_resource_type(&r, ty)?;
                validate(self.validator, &r)?;
                let if_none_exist = match entry
                    .pointer("/request/ifNoneExist")
                    .and_then(Value::as_str)
                {
                    Some(v) => Some(if_none_exist(extractor, ty, v)?),
                    None => None,
                };
                WriteOp::Create {
                    resource: r,
                    if_none_exist,
                }
            }
            ("PUT", [ty], Some(q)) => {
                check_type(self.validator, ty)?;
                let query =
                    conditional_query(extractor, ty, &store::search::parse_query_string(q))?;
                let r = resource()?;
                check_resource_type(&r, ty)?;
                validate(self.validator, &r)?;
                WriteOp::ConditionalUpdate { query, resource: r }
            }
            ("PUT", [ty, id], None) => {
                check_type(self.validator, ty)?;
                let r = resource()?;
                check_resource_type(&r, ty)?;
                if !valid_id(id) || r.get("id").and_then(Value::as_str) != Some(id) {
                    return Err(EntryError::malformed(format!(
                        "the resource id must equal the request.url id '{id}'"
                    )));
                }
                validate(self.validator, &r)?;
                WriteOp::Update {
                    resource_type: (*ty).into(),
                    id: (*id).into(),
                    resource: r,
                    if_match,
                }
            }
            ("PATCH", [ty, id], None) => {
                check_type(self.validator, ty)?;
                let patch = binary_patch(&resource()?)?;
                let (doc, base) = patched(
                    self.store,
                    self.validator,
                    self.ctx,
                    ty,
                    id,
                    &patch,
                    if_match,
                )
                .await?;
                WriteOp::Update {
                    resource_type: (*ty).into(),
                    id: (*id).into(),
                    resource: doc,
                    if_match: Some(base),
                }
            }
            ("DELETE", [ty, id], None) => {
                check_type(self.validator, ty)?;
                WriteOp::Delete {
                    resource_type: (*ty).into(),
                    id: (*id).into(),
                    if_match,
                }
            }
            ("DELETE", [ty], Some(q)) => {
                check_type(self.validator, ty)?;
                let query =
                    conditional_query(extractor, ty, &store::search::parse_query_string(q))?;
                WriteOp::ConditionalDelete { query }
            }
            ("", _, _) => return Err(EntryError::malformed("entry has no request.method")),
            _ => {
                return Err(EntryError::malformed(format!(
                    "unsupported entry request: {method} {url}"
                )));
            }
        };
        let mut write = WriteEntry::new(op).with_references(self.references.clone());
        write.full_url = full_url;
        write.patch = method == "PATCH";
        Ok(Prepared::Write(Box::new(write)))
    }

    /// The checked writes of a transaction Bundle in processing order, without running them:
    /// for callers that commit them with more in one store call (HL7 v2 ingestion commits them
    /// with the message's receipt). Every entry is validated; the first bad one is the error.
    /// Reads are refused (a message carries only writes).
    pub async fn transaction(&self, bundle: &Value) -> Result<Vec<WriteEntry>, BundleError> {
        let entries = entries(bundle);
        let mut writes = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let at = |error| BundleError::at(i, error);
            match self.entry(entry).await.map_err(at)? {
                Prepared::Write(w) => writes.push((processing_order(method(entry)), i, w)),
                Prepared::Read(url) => {
                    return Err(at(EntryError::malformed(format!(
                        "a read ({url}) cannot be part of a prepared transaction"
                    ))));
                }
            }
        }
        writes.sort_by_key(|(o, i, _)| (*o, *i));
        Ok(writes.into_iter().map(|(_, _, w)| *w).collect())
    }

    /// Prepares and runs a batch (`atomic` false: each entry on its own) or a transaction (all
    /// or nothing) of writes, in processing order; returns each entry's result in the order
    /// the Bundle lists them. A transaction's first failure, or a failure of the whole batch
    /// call, is the error. Reads are refused: this runs only writes (`renkei import`).
    pub async fn run(
        &self,
        bundle: &Value,
        atomic: bool,
    ) -> Result<Vec<Result<Outcome, BundleError>>, BundleError> {
        let entries = entries(bundle);
        let mut results: Vec<Option<Result<Outcome, BundleError>>> =
            (0..entries.len()).map(|_| None).collect();
        let mut prepared = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let p = match self.entry(entry).await {
                Ok(Prepared::Write(w)) => Ok(w),
                Ok(Prepared::Read(url)) => Err(EntryError::malformed(format!(
                    "a read ({url}) is not a write: only writes are imported"
                ))),
                Err(e) => Err(e),
            };
            match p {
                Ok(w) => prepared.push((processing_order(method(entry)), i, w)),
                Err(error) if atomic => return Err(BundleError::at(i, error)),
                Err(error) => results[i] = Some(Err(BundleError::at(i, error))),
            }
        }
        prepared.sort_by_key(|(o, i, _)| (*o, *i));
        let (index, writes): (Vec<usize>, Vec<WriteEntry>) =
            prepared.into_iter().map(|(_, i, w)| (i, *w)).unzip();
        // A store error names the write by its position in the call; the caller knows the
        // entry by its place in the Bundle.
        let at = |e: StoreError| BundleError {
            entry: e.entry_index().and_then(|k| index.get(k).copied()),
            error: EntryError::Store(e.into_inner()),
        };
        if atomic {
            let outcomes = self.store.transaction(self.ctx, writes).await.map_err(at)?;
            for (i, o) in index.iter().zip(outcomes) {
                results[*i] = Some(Ok(o));
            }
        } else {
            let outcomes = self.store.batch(self.ctx, writes).await.map_err(at)?;
            for (i, o) in index.iter().zip(outcomes) {
                results[*i] = Some(o.map_err(|e| BundleError::at(*i, EntryError::Store(e))));
            }
        }
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    Err(BundleError::at(
                        i,
                        StoreError::Backend("entry not run".into()).into(),
                    ))
                })
            })
            .collect())
    }
}
