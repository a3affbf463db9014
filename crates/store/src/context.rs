//! The request context every store call carries: who asks, for whom, why, a request id, and the
//! access policy computed once for the request.
//!
//! The store enforces [`AccessPolicy`] inside the SQL it builds (see `docs/storage.md`,
//! "Access"), so a hidden resource never shows in a result, a count, a paging link or a
//! conditional match. Filling the policy (from tokens, scopes and Consent) is the security
//! layer's job; the store only applies it. See DESIGN.md, "Security is not optional".

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::audit::WriteAuditor;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The node itself (start-up, import, benchmarks, and every HTTP request until the
    /// authorization layer exists).
    System,
    /// A person, by their identifier (e.g. a `Practitioner/..` reference or a login).
    User(String),
    /// An OAuth2 client application, by client id.
    Client(String),
    /// Another node of the exchange network, by node id.
    Node(String),
}

/// A security label (`meta.security`) by system and code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecurityLabel {
    pub system: String,
    pub code: String,
}

impl SecurityLabel {
    pub fn new(system: impl Into<String>, code: impl Into<String>) -> Self {
        SecurityLabel {
            system: system.into(),
            code: code.into(),
        }
    }
}

/// What one request may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessPolicy {
    /// Everything (the node itself, an administrator, a system client with `system/*.*`).
    #[default]
    Unrestricted,
    /// Only what [`Restriction`] allows.
    Restricted(Restriction),
}

/// A restricted caller's view: all patient data or some patients' compartments, minus
/// resources carrying a denied security label and the data consent withholds ([`Withheld`]),
/// unless the caller broke the glass.
///
/// [`Restriction::default`] reaches nothing (no compartment at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// `Some`: ids of the Patients whose compartments (FHIR's Patient CompartmentDefinition:
    /// the Patient itself and every resource that names it through a compartment parameter)
    /// the caller may see; resources in no allowed compartment, including those of types
    /// outside the Patient compartment (Practitioner, Organization, ...), are hidden (a patient
    /// token). `None`: every compartment, and every type outside the Patient compartment (a
    /// user or a backend service that consent restricts).
    pub patients: Option<BTreeSet<String>>,
    /// Resources carrying any of these labels in `meta.security` are hidden, unless
    /// `break_glass`.
    pub denied_labels: BTreeSet<SecurityLabel>,
    /// Patient data withheld by consent, unless `break_glass`. Only resources in a Patient
    /// compartment are ever withheld by these.
    pub withheld: Vec<Withheld>,
    /// The caller declared an emergency ("break the glass"): denied labels and withheld data
    /// no longer hide anything; compartments still do. The audit layer flags every such
    /// access.
    pub break_glass: bool,
}

impl Default for Restriction {
    /// Reaches nothing.
    fn default() -> Self {
        Restriction {
            patients: Some(BTreeSet::new()),
            denied_labels: BTreeSet::new(),
            withheld: Vec::new(),
            break_glass: false,
        }
    }
}

impl Restriction {
    /// Every compartment, minus what `withheld` withholds.
    pub fn consent(withheld: Vec<Withheld>) -> Self {
        Restriction {
            patients: None,
            withheld,
            ..Restriction::default()
        }
    }
}

/// Some data of some patients' records that a caller may not see: a resource is withheld when
/// it is in the Patient compartment of one of [`Withheld::patients`] and is what
/// [`Withheld::what`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    /// Whose records.
    pub patients: Patients,
    /// What of them.
    pub what: Withholding,
}

/// A set of patients, by the ids of their Patient resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patients {
    /// These patients.
    Of(BTreeSet<String>),
    /// Every patient but these (a network default for patients without their own decision).
    AllBut(BTreeSet<String>),
}

/// Which data of a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Withholding {
    /// The resources [`Selector`] selects.
    Data(Selector),
    /// The whole record except the resources [`Selector`] selects (what a consent releases
    /// out of a withheld record).
    RecordExcept(Selector),
}

/// Resources selected by label, type or identity; any one selects.
#[derive(Debug, Clone, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Selector {
    /// Carrying one of these labels in `meta.security`.
    pub labels: BTreeSet<SecurityLabel>,
    /// Of one of these types.
    pub types: BTreeSet<String>,
    /// These resources, as `Type/id`.
    pub resources: BTreeSet<String>,
}

impl Selector {
    /// Whether it selects nothing.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.types.is_empty() && self.resources.is_empty()
    }
}

impl AccessPolicy {
    /// A caller restricted to the compartments of `patients`, with no denied labels.
    pub fn patients<I, S>(patients: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AccessPolicy::Restricted(Restriction {
            patients: Some(patients.into_iter().map(Into::into).collect()),
            ..Restriction::default()
        })
    }

    /// The restriction, if any.
    pub fn restriction(&self) -> Option<&Restriction> {
        match self {
            AccessPolicy::Unrestricted => None,
            AccessPolicy::Restricted(r) => Some(r),
        }
    }
}

/// The context of one request, passed to every [`crate::Store`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Who is asking.
    pub actor: Actor,
    /// The patient on whose behalf the request is made (e.g. `Patient/123`), if any.
    pub on_behalf_of: Option<String>,
    /// The requester's organisation (`Organization/x`), if known: the custodian the store
    /// records on what the request writes (`marks`).
    pub organization: Option<String>,
    /// Purpose of use (a code from v3 PurposeOfUse, e.g. `TREAT`), if declared.
    pub purpose_of_use: Option<String>,
    /// Correlates logs, audit records and change-feed rows of one request.
    pub request_id: String,
    /// What this request may see, applied by the store inside its SQL.
    pub access: AccessPolicy,
    /// Work the node does for this request on its own behalf (EMPI planning, caches): not
    /// restricted, but still attributed to the requester. See [`RequestContext::internal`].
    pub internal: bool,
    /// The audit record of the request's writes, appended inside each write transaction it
    /// commits (so a committed write always has its record); `None` records nothing here.
    pub audit: Option<WriteAudit>,
}

/// A request's [`WriteAuditor`], carried by its context (equal when it is the same one).
#[derive(Clone)]
pub struct WriteAudit(pub Arc<dyn WriteAuditor>);

impl PartialEq for WriteAudit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WriteAudit {}

impl std::fmt::Debug for WriteAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteAudit")
    }
}

impl RequestContext {
    /// The context of work the node does on its own behalf.
    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            on_behalf_of: None,
            organization: None,
            purpose_of_use: None,
            request_id: uuid::Uuid::new_v4().to_string(),
            access: AccessPolicy::Unrestricted,
            internal: false,
            audit: None,
        }
    }

    /// The same context with the given request id.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = request_id.into();
        self
    }

    /// The same context with the given access policy.
    pub fn with_access(mut self, access: AccessPolicy) -> Self {
        self.access = access;
        self
    }

    /// The restriction the store applies to this request: none for unrestricted callers and
    /// for internal work ([`RequestContext::internal`]), whatever its `access` says.
    pub fn restriction(&self) -> Option<&Restriction> {
        if self.internal {
            None
        } else {
            self.access.restriction()
        }
    }

    /// The context for the node's own reads and writes made while serving this request (the
    /// EMPI deciding a link, a cache refresh): unrestricted, so that a restricted caller can
    /// never change what such a decision sees, yet keeping the requester and request id for
    /// audit. Never hand its results to the caller.
    pub fn internal(&self) -> Self {
        Self {
            access: AccessPolicy::Unrestricted,
            internal: true,
            ..self.clone()
        }
    }
}
