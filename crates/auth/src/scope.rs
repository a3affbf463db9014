//! SMART on FHIR scopes (App Launch 2.0, with the 1.0 forms it still accepts): parsing a
//! token's `scope` string, and deciding what a set of scopes allows one FHIR interaction on
//! one resource type.
//!
//! Clinical-data scopes are `context/type.permissions[?query]`:
//! - context `patient` (the token's patient only), `user` (what the user may see) or `system`
//!   (a backend service, everything its registration allows);
//! - type a resource type or `*`;
//! - permissions, SMART v2: any of `c r u d s`, in that order, each at most once; v1: `read`
//!   (`rs`), `write` (`cud`) or `*` (`cruds`);
//! - v2 only: a search-parameter restriction (`patient/Observation.rs?category=laboratory`): the
//!   scope covers only resources matching it.
//!
//! Other scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`, ...) are kept as
//! they are. A string that looks like a clinical scope but is malformed is an error, never
//! silently a narrower or broader grant.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

/// A malformed scope.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ScopeError {
    /// The context is not `patient`, `user` or `system`.
    #[error("scope `{0}`: the context must be patient, user or system")]
    Context(String),
    /// The resource type is neither `*` nor a name of letters starting upper-case.
    #[error("scope `{0}`: `{1}` is not a resource type or *")]
    ResourceType(String, String),
    /// The permissions are neither v2 letters in `cruds` order nor v1 `read`/`write`/`*`.
    #[error("scope `{0}`: permissions must be letters of cruds in that order, or read, write or *")]
    Permissions(String),
    /// A query restriction is malformed or given on a v1 scope.
    #[error("scope `{0}`: bad search restriction: {1}")]
    Restriction(String, String),
    /// The scope string is empty or holds a character scopes never use.
    #[error("scope `{0}`: not a scope")]
    Syntax(String),
}

/// Whose data a clinical scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Context {
    /// The patient in the token's context, and only them.
    Patient,
    /// What the signed-in user may see.
    User,
    /// A backend service: what its registration allows.
    System,
}

impl Context {
    fn parse(s: &str) -> Option<Context> {
        match s {
            "patient" => Some(Context::Patient),
            "user" => Some(Context::User),
            "system" => Some(Context::System),
            _ => None,
        }
    }

    /// The scope prefix (`patient`, `user`, `system`).
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// One FHIR interaction, as SMART permissions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interaction {
    /// `c`: create (also a conditional create).
    Create,
    /// `r`: read, vread, instance history.
    Read,
    /// `u`: update, patch.
    Update,
    /// `d`: delete.
    Delete,
    /// `s`: search, type history, operations that search (`$everything`).
    Search,
}

impl Interaction {
    const ALL: [Interaction; 5] = [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
    ];

    fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }
}

/// A set of [`Interaction`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// Every interaction.
    pub const ALL: Permissions = Permissions(0b11111);

    fn bit(i: Interaction) -> u8 {
        1 << (i as u8)
    }

    /// Whether `i` is in the set.
    pub fn allows(self, i: Interaction) -> bool {
        self.0 & Self::bit(i) != 0
    }

    fn with(self, i: Interaction) -> Self {
        Permissions(self.0 | Self::bit(i))
    }

    /// Parses v2 letters (`rs`, `cruds`) or v1 words (`read`, `write`, `*`).
    fn parse(s: &str) -> Option<(Permissions, bool)> {
        match s {
            "read" => {
                return Some((
                    Permissions::default()
                        .with(Interaction::Read)
                        .with(Interaction::Search),
                    true,
                ));
            }
            "write" => {
                return Some((
                    Permissions::default()
                        .with(Interaction::Create)
                        .with(Interaction::Update)
                        .with(Interaction::Delete),
                    true,
                ));
            }
            "*" => return Some((Permissions::ALL, true)),
            _ => {}
        }
        let mut perms = Permissions::default();
        let mut next = 0usize;
        for c in s.chars() {
            let at = Interaction::ALL[next..]
                .iter()
                .position(|i| i.letter() == c)?;
            perms = perms.with(Interaction::ALL[next + at]);
            next += at + 1;
        }
        (perms.0 != 0).then_some((perms, false))
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for i in Interaction::ALL {
            if self.allows(i) {
                write!(f, "{}", i.letter())?;
            }
        }
        Ok(())
    }
}

/// A search-parameter restriction of a v2 scope: the scope covers resources that match every
/// `(name, value)` pair, as the same pairs would in a search.
pub type Restriction = Vec<(String, String)>;

/// One clinical-data scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClinicalScope {
    /// Whose data.
    pub context: Context,
    /// The resource type, or `None` for `*`.
    pub resource_type: Option<String>,
    /// What may be done.
    pub permissions: Permissions,
    /// The search restriction (v2 `?...`); empty when none.
    pub restriction: Restriction,
    /// Written in the SMART 1.0 form (`read`, `write`, `*`).
    pub v1: bool,
}

impl ClinicalScope {
    fn covers(&self, resource_type: &str) -> bool {
        self.resource_type
            .as_deref()
            .is_none_or(|t| t == resource_type)
    }
}

impl fmt::Display for ClinicalScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = self.resource_type.as_deref().unwrap_or("*");
        write!(f, "{}/{ty}.", self.context.as_str())?;
        if self.v1 {
            let p = self.permissions;
            let read = p.allows(Interaction::Read);
            let write = p.allows(Interaction::Create);
            match (read, write) {
                (true, true) => f.write_str("*")?,
                (true, false) => f.write_str("read")?,
                _ => f.write_str("write")?,
            }
        } else {
            write!(f, "{}", self.permissions)?;
        }
        for (n, (name, value)) in self.restriction.iter().enumerate() {
            let sep = if n == 0 { '?' } else { '&' };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}

/// One scope of a token: clinical, or any other (kept verbatim).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `context/type.permissions[?query]`.
    Clinical(ClinicalScope),
    /// `openid`, `fhirUser`, `launch/patient`, `offline_access`, ...
    Other(String),
}

impl Scope {
    /// Parses one scope.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ScopeError::Syntax(s.to_owned()));
        }
        let Some((context, rest)) = s.split_once('/') else {
            return Ok(Scope::Other(s.to_owned()));
        };
        // `launch/patient`, `launch/encounter`: launch-context requests, not data scopes.
        if context == "launch" {
            return Ok(Scope::Other(s.to_owned()));
        }
        let context = Context::parse(context).ok_or_else(|| ScopeError::Context(s.to_owned()))?;
        let (body, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (ty, perms) = body
            .split_once('.')
            .ok_or_else(|| ScopeError::Permissions(s.to_owned()))?;
        let resource_type = match ty {
            "*" => None,
            t if t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Some(t.to_owned())
            }
            t => return Err(ScopeError::ResourceType(s.to_owned(), t.to_owned())),
        };
        let (permissions, v1) =
            Permissions::parse(perms).ok_or_else(|| ScopeError::Permissions(s.to_owned()))?;
        let restriction = match query {
            None => Vec::new(),
            Some(_) if v1 => {
                return Err(ScopeError::Restriction(
                    s.to_owned(),
                    "SMART 1.0 scopes take no restriction".into(),
                ));
            }
            Some(q) => {
                parse_restriction(q).map_err(|why| ScopeError::Restriction(s.to_owned(), why))?
            }
        };
        Ok(Scope::Clinical(ClinicalScope {
            context,
            resource_type,
            permissions,
            restriction,
            v1,
        }))
    }
}

fn parse_restriction(q: &str) -> Result<Restriction, String> {
    let mut out = Vec::new();
    for pair in q.split('&') {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not name=value"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
        {
            return Err(format!("`{name}` is not a search parameter name"));
        }
        if value.is_empty() {
            return Err(format!("`{name}` has no value"));
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    Ok(out)
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Clinical(c) => c.fmt(f),
            Scope::Other(s) => f.write_str(s),
        }
    }
}

/// What a set of scopes allows one interaction on one type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// No scope covers it.
    Denied,
    /// Allowed within `context` (the broadest context of the scopes that cover it: a
    /// `patient` grant reaches the token's patient only). With `restrictions`, only
    /// resources matching at least one of them; empty when some covering scope of that
    /// context has none.
    Allowed {
        /// The broadest context among the covering scopes.
        context: Context,
        /// Alternatives, any of which admits a resource; empty means unrestricted.
        restrictions: Vec<Restriction>,
    },
}

impl Grant {
    /// Whether anything is allowed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Grant::Allowed { .. })
    }
}

/// A token's scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet {
    scopes: Vec<Scope>,
}

impl ScopeSet {
    /// Parses a space-separated `scope` string (as in a token request or a token). Repeated
    /// scopes are kept once.
    pub fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        let mut seen = BTreeSet::new();
        let mut scopes = Vec::new();
        for part in s.split(' ').filter(|p| !p.is_empty()) {
            if seen.insert(part) {
                scopes.push(Scope::parse(part)?);
            }
        }
        Ok(ScopeSet { scopes })
    }

    /// The scopes, in the order given.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The clinical scopes.
    pub fn clinical(&self) -> impl Iterator<Item = &ClinicalScope> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::Clinical(c) => Some(c),
            Scope::Other(_) => None,
        })
    }

    /// Whether the non-clinical scope `name` (e.g. `offline_access`) is present.
    pub fn has(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| matches!(s, Scope::Other(o) if o == name))
    }

    /// The contexts the clinical scopes name.
    pub fn contexts(&self) -> BTreeSet<Context> {
        self.clinical().map(|c| c.context).collect()
    }

    /// Whether every clinical scope is a `patient` one (the token reaches one person only):
    /// such a token may not use `$match`, PIX, system-level search or history.
    pub fn patient_only(&self) -> bool {
        self.clinical().all(|c| c.context == Context::Patient)
    }

    /// What the scopes allow `interaction` on `resource_type`.
    pub fn grant(&self, interaction: Interaction, resource_type: &str) -> Grant {
        let covering: Vec<&ClinicalScope> = self
            .clinical()
            .filter(|c| c.permissions.allows(interaction) && c.covers(resource_type))
            .collect();
        let Some(context) = covering.iter().map(|c| c.context).max() else {
            return Grant::Denied;
        };
        let broadest = covering.iter().filter(|c| c.context == context);
        let mut restrictions = Vec::new();
        for c in broadest {
            if c.restriction.is_empty() {
                restrictions.clear();
                return Grant::Allowed {
                    context,
                    restrictions,
                };
            }
            if !restrictions.contains(&c.restriction) {
                restrictions.push(c.restriction.clone());
            }
        }
        Grant::Allowed {
            context,
            restrictions,
        }
    }

    /// The scopes of `self` that `allowed` also grants: what a client asking for `self` gets
    /// when registered for `allowed`. A requested scope is kept when some allowed scope of the
    /// same context covers its type and permissions (and has no restriction, or the same);
    /// it is narrowed to the permissions allowed otherwise, or dropped. Non-clinical scopes
    /// are kept when `allowed` holds them too. Two requested scopes narrowed to the same one
    /// give it once, as [`ScopeSet::parse`] keeps a repeated scope once.
    pub fn within(&self, allowed: &ScopeSet) -> ScopeSet {
        let mut out: Vec<Scope> = Vec::new();
        for s in &self.scopes {
            match s {
                Scope::Other(name) => {
                    if allowed.has(name) {
                        out.push(s.clone());
                    }
                }
                Scope::Clinical(want) => {
                    let mut perms = Permissions::default();
                    for have in allowed.clinical() {
                        let same_context = have.context == want.context;
                        let covers_type = have.resource_type.is_none()
                            || have.resource_type == want.resource_type;
                        let restriction_ok =
                            have.restriction.is_empty() || have.restriction == want.restriction;
                        if same_context && covers_type && restriction_ok {
                            perms =
                                Permissions(perms.0 | (have.permissions.0 & want.permissions.0));
                        }
                    }
                    if perms.0 != 0 {
                        let mut kept = want.clone();
                        // A narrowed v1 scope cannot be said in v1 words unless it is whole.
                        if perms != want.permissions {
                            kept.v1 = false;
                        }
                        kept.permissions = perms;
                        let kept = Scope::Clinical(kept);
                        if !out.contains(&kept) {
                            out.push(kept);
                        }
                    }
                }
            }
        }
        ScopeSet { scopes: out }
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, s) in self.scopes.iter().enumerate() {
            if n > 0 {
                f.write_str(" ")?;
            }
            s.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        ScopeSet::parse(s).expect("scopes parse")
    }

    #[test]
    fn v2_letters_and_v1_words_mean_the_same_permissions() {
        let v2 = set("patient/Observation.rs");
        let v1 = set("patient/Observation.read");
        for i in Interaction::ALL {
            assert_eq!(
                v2.grant(i, "Observation").is_allowed(),
                v1.grant(i, "Observation").is_allowed(),
                "{i:?}"
            );
        }
        assert!(
            set("user/*.write")
                .grant(Interaction::Delete, "Patient")
                .is_allowed()
        );
        assert!(
            !set("user/*.write")
                .grant(Interaction::Read, "Patient")
                .is_allowed()
        );
        assert!(
            set("system/*.*")
                .grant(Interaction::Search, "Encounter")
                .is_allowed()
        );
    }

    #[test]
    fn permissions_out_of_order_or_repeated_are_refused() {
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Observation.x",
            "patient/Observation.",
        ] {
            assert!(
                matches!(Scope::parse(bad), Err(ScopeError::Permissions(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Scope::parse("doctor/Observation.r"),
            Err(ScopeError::Context(_))
        ));
        assert!(matches!(
            Scope::parse("patient/observation.r"),
            Err(ScopeError::ResourceType(..))
        ));
        assert!(matches!(
            Scope::parse("patient/Observation.read?category=x"),
            Err(ScopeError::Restriction(..))
        ));
        assert!(matches!(
            Scope::parse("patient/Observation.rs?category"),
            Err(ScopeError::Restriction(..))
        ));
    }

    #[test]
    fn other_scopes_are_kept_verbatim() {
        let s = set("openid fhirUser launch/patient offline_access patient/*.rs");
        assert!(s.has("launch/patient"));
        assert!(s.has("offline_access"));
        assert_eq!(
            s.to_string(),
            "openid fhirUser launch/patient offline_access patient/*.rs"
        );
    }

    #[test]
    fn a_restricted_scope_grants_with_its_restriction() {
        let s = set(
            "patient/Observation.rs?category=laboratory patient/Observation.rs?category=vital-signs",
        );
        let Grant::Allowed {
            context,
            restrictions,
        } = s.grant(Interaction::Search, "Observation")
        else {
            panic!("allowed")
        };
        assert_eq!(context, Context::Patient);
        assert_eq!(restrictions.len(), 2);
        // An unrestricted scope of the same context wins.
        let s = set("patient/Observation.rs?category=laboratory patient/Observation.r");
        assert_eq!(
            s.grant(Interaction::Read, "Observation"),
            Grant::Allowed {
                context: Context::Patient,
                restrictions: vec![]
            }
        );
        assert!(!s.grant(Interaction::Create, "Observation").is_allowed());
        assert!(!s.grant(Interaction::Read, "Condition").is_allowed());
    }

    #[test]
    fn the_broadest_context_decides() {
        let s = set("patient/Observation.rs user/Observation.r");
        assert_eq!(
            s.grant(Interaction::Read, "Observation"),
            Grant::Allowed {
                context: Context::User,
                restrictions: vec![]
            }
        );
        assert_eq!(
            s.grant(Interaction::Search, "Observation"),
            Grant::Allowed {
                context: Context::Patient,
                restrictions: vec![]
            }
        );
        assert!(!s.patient_only());
        assert!(set("patient/*.rs launch/patient openid").patient_only());
    }

    #[test]
    fn a_request_is_narrowed_to_the_registration() {
        let allowed = set("system/Patient.rs system/Observation.r offline_access");
        let asked = set(
            "system/Patient.cruds system/Observation.rs system/Condition.r openid offline_access",
        );
        assert_eq!(
            asked.within(&allowed).to_string(),
            "system/Patient.rs system/Observation.r offline_access"
        );
        let allowed = set("system/Observation.rs?category=laboratory");
        assert_eq!(
            set("system/Observation.rs").within(&allowed).to_string(),
            ""
        );
        assert_eq!(
            set("system/Observation.rs?category=laboratory")
                .within(&allowed)
                .to_string(),
            "system/Observation.rs?category=laboratory"
        );
    }

    #[test]
    fn scopes_narrowed_to_the_same_one_are_granted_once() {
        // Found by tests/fuzz.rs: both asked scopes narrow to `user/*.s`.
        let asked = set("user/*.rus user/*.*");
        let got = asked.within(&set("user/*.s"));
        assert_eq!(got.to_string(), "user/*.s");
        assert_eq!(ScopeSet::parse(&got.to_string()), Ok(got));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "[a-zA-Z/*.?=&_:-]{0,40}") {
            if let Ok(scope) = Scope::parse(&s) {
                let again = Scope::parse(&scope.to_string()).expect("a printed scope parses");
                proptest::prop_assert_eq!(again, scope);
            }
        }
    }
}
