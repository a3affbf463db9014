//! The values the store reads and writes: stored versions, write operations and their outcomes,
//! history pages and change-feed rows.

use serde_json::Value;

use crate::index::IndexRow;
use crate::search::SearchQuery;

/// One stored version of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    /// The version id: 1 for the first version, +1 for each update or delete.
    pub version: u64,
    /// When the version was written, in microseconds since the Unix epoch (UTC).
    pub last_updated: i64,
    /// The version is a deletion (it has no body).
    pub deleted: bool,
    /// The interaction that produced the version.
    pub method: Method,
    /// The resource JSON exactly as stored (with `meta.versionId` and `meta.lastUpdated` set);
    /// `None` for a deletion.
    pub body: Option<String>,
}

impl StoredResource {
    /// `meta.lastUpdated` as a FHIR instant (`2024-01-02T03:04:05.678901Z`).
    pub fn last_updated_instant(&self) -> String {
        crate::time::format_instant(self.last_updated)
    }
}

/// The interaction that produced a version (history bundles show it as `request.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    /// An update made by applying a patch (`PATCH [type]/[id]`).
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    pub(crate) fn parse(s: &str) -> Method {
        match s {
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            _ => Method::Put,
        }
    }
}

/// One write of a transaction or batch.
#[derive(Debug, Clone)]
pub struct WriteEntry {
    /// The entry's `fullUrl` (e.g. `urn:uuid:...`): references to it elsewhere in the same
    /// transaction are rewritten to the id this entry ends up with.
    pub full_url: Option<String>,
    pub op: WriteOp,
    /// The resource's index rows, extracted by the caller ahead of the write (e.g. by an
    /// import's reader thread, beside the single writer) with the store's own extractor:
    /// [`crate::IndexExtractor::extract_in_transaction`] when the resource refers to entries
    /// of the call by `fullUrl`, given the type of EVERY entry with a `fullUrl` (rows of
    /// parameters such as `subject.where(resolve() is Patient)` depend on them, and the store
    /// cannot tell that one was left out). The store uses the rows, the reference rows of
    /// rewritten `fullUrl`s brought up to date, unless the write resolves a conditional
    /// reference or names an entry's `fullUrl` outside a `reference` (a `canonical` or
    /// `uri`, which the rewrite leaves alone); then it extracts again.
    pub index: Option<Vec<IndexRow>>,
    /// Whether the write is refused when the resource refers to a resource that is not on
    /// this server (see [`ReferenceCheck`]); off unless the caller asks.
    pub references: ReferenceCheck,
    /// An [`WriteOp::Update`] that is the result of a patch: its version is recorded as made
    /// by `PATCH` (history shows it so).
    pub patch: bool,
    /// A write the node adds on its own behalf to a caller's unit of work (the EMPI's golden
    /// records and review tasks, an audit record): the caller's access policy does not apply
    /// to it (its by-id and conditional matching see every resource, as the planning that
    /// chose it did), yet it commits in the caller's transaction and carries the caller's
    /// request id. Never set on what a caller sent.
    pub internal: bool,
}

/// Referential integrity of one write: whether its local literal references must name
/// resources that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReferenceCheck {
    /// Not checked (imports and HL7 v2 feeds, which arrive out of order, count such
    /// references instead; writes the server makes itself).
    #[default]
    Off,
    /// Refused with [`crate::StoreError::MissingReference`] when a local literal reference
    /// (`Type/id`, `Type/id/_history/n`, or an absolute URL under `base`, this server's FHIR
    /// base) names a resource that does not exist or is deleted, as seen inside the write's
    /// own transaction: a resource written earlier in it counts, and so does one that a later
    /// entry of it will write (a `fullUrl` or the planned id of a create). Contained
    /// (`#id`), foreign absolute, `urn:` and logical (identifier) references are not checked;
    /// canonicals are not references.
    Refuse { base: Option<String> },
}

impl WriteEntry {
    pub fn new(op: WriteOp) -> Self {
        Self {
            full_url: None,
            op,
            index: None,
            references: ReferenceCheck::Off,
            patch: false,
            internal: false,
        }
    }

    /// The entry as the node's own write (see [`WriteEntry::internal`]).
    pub fn as_internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// The entry as the result of a patch (see [`WriteEntry::patch`]).
    pub fn as_patch(mut self) -> Self {
        self.patch = true;
        self
    }

    /// The entry with its references checked (see [`ReferenceCheck`]).
    pub fn with_references(mut self, check: ReferenceCheck) -> Self {
        self.references = check;
        self
    }

    /// The entry with index rows extracted ahead of the write (see [`WriteEntry::index`]).
    pub fn with_index(mut self, rows: Vec<IndexRow>) -> Self {
        self.index = Some(rows);
        self
    }
}

/// A write operation. Resources are JSON objects with a `resourceType`.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create with a server-assigned id. With `if_none_exist`, nothing is created when exactly
    /// one resource matches (the outcome is [`Outcome::Existing`]); more than one match fails.
    Create {
        resource: Value,
        if_none_exist: Option<SearchQuery>,
    },
    /// Update (or create, if absent) `resource_type/id`. With `if_match`, the current version
    /// must be that one.
    Update {
        resource_type: String,
        id: String,
        resource: Value,
        if_match: Option<u64>,
    },
    /// Update the one resource matching `query`; create when none matches (with the body's id
    /// if it has one); fail when several match.
    ConditionalUpdate { query: SearchQuery, resource: Value },
    /// Delete `resource_type/id` (a new version marked deleted; history is kept).
    Delete {
        resource_type: String,
        id: String,
        if_match: Option<u64>,
    },
    /// Delete the one resource matching `query` (nothing when none does).
    ConditionalDelete { query: SearchQuery },
}

impl WriteOp {
    /// The resource the operation writes; `None` for a deletion.
    pub fn resource(&self) -> Option<&Value> {
        match self {
            WriteOp::Create { resource, .. }
            | WriteOp::Update { resource, .. }
            | WriteOp::ConditionalUpdate { resource, .. } => Some(resource),
            WriteOp::Delete { .. } | WriteOp::ConditionalDelete { .. } => None,
        }
    }

    /// The resource the operation writes, to change or take; `None` for a deletion.
    pub fn resource_mut(&mut self) -> Option<&mut Value> {
        match self {
            WriteOp::Create { resource, .. }
            | WriteOp::Update { resource, .. }
            | WriteOp::ConditionalUpdate { resource, .. } => Some(resource),
            WriteOp::Delete { .. } | WriteOp::ConditionalDelete { .. } => None,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new resource (version 1, or a new life after a deletion).
    Created(StoredResource),
    /// A new version of an existing resource.
    Updated(StoredResource),
    /// An update whose content equals the current version's (`meta.versionId` and
    /// `lastUpdated` aside): no version was written; this is the current one.
    Unchanged(StoredResource),
    /// A deletion version was written.
    Deleted(StoredResource),
    /// Conditional create matched this existing resource; nothing was written.
    Existing(StoredResource),
    /// Nothing to do: the resource was already deleted, or a conditional delete matched none.
    NoOp,
}

impl Outcome {
    /// The version written or matched, if any.
    pub fn resource(&self) -> Option<&StoredResource> {
        match self {
            Outcome::Created(r)
            | Outcome::Updated(r)
            | Outcome::Unchanged(r)
            | Outcome::Deleted(r)
            | Outcome::Existing(r) => Some(r),
            Outcome::NoOp => None,
        }
    }
}

/// Which history to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

/// A history request: newest first, `count` per page, keyset paging on `before`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// Only versions written at or after this instant (µs since epoch).
    pub since: Option<i64>,
    /// Versions a page; 0 asks only for [`HistoryPage::total`].
    pub count: usize,
    /// Cursor from a previous page's [`HistoryPage::next`].
    pub before: Option<i64>,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub versions: Vec<StoredResource>,
    /// The cursor of the next (older) page, if there is one.
    pub next: Option<i64>,
    /// The number of versions the query covers, counted only when it asked for none
    /// (`count` 0, as `_summary=count` does).
    pub total: Option<u64>,
}

/// One row of the change feed (outbox), written in the same transaction as the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The row's number: unique, increasing in the order rows were allocated. On SQLite that
    /// is commit order; on PostgreSQL a row may become visible after one with a larger `seq`
    /// (read with [`crate::Store::feed`], which accounts for it).
    pub seq: i64,
    pub resource_type: String,
    pub id: String,
    pub version: u64,
    pub method: Method,
    pub request_id: String,
    /// The ids of the Patients whose compartments the version is in (sorted): the Patient
    /// itself; for another type, the Patients its compartment parameters name (as indexed);
    /// for a deletion, those of the version it deleted. Empty for a resource in no Patient's
    /// compartment, and for versions other than the then current one of non-Patient
    /// resources written before the store recorded compartments (see `docs/storage.md`).
    pub compartments: Vec<String>,
}
