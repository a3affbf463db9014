//! One request against one token: which SMART permission the request needs, whether the
//! token's scopes grant it, and within what (the patient in context, search restrictions,
//! break-glass). The server turns an [`Authorized`] into the store's access policy, and a
//! [`Refusal`] into a 403 that names what was missing.
//!
//! Rules beyond the scope letters:
//! - a grant in `patient` context needs the token's patient; what it reaches is that person
//!   (every source record linked to their golden record, resolved by the server per
//!   request);
//! - system-level search and history need a `*` scope (they cross every type), and are
//!   refused to patient-context grants, as are `$match`, PIX, EMPI decisions and bulk export
//!   (they reach other people by design);
//! - EMPI decisions need `Patient` update in `user` or `system` context; bulk export needs
//!   `system` context.

use thiserror::Error;

use crate::scope::{Context, Grant, Interaction, Restriction, ScopeSet};
use crate::token::AccessClaims;

/// What a request does, as far as permission goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `GET [type]/[id]`, a vread, or instance history.
    Read,
    /// Type-level search or history, or a patient's `$everything`.
    Search,
    /// Search or history across every type.
    SystemSearch,
    /// `POST [type]` (also conditional).
    Create,
    /// `PUT` or `PATCH`.
    Update,
    /// `DELETE`.
    Delete,
    /// `$match` (ITI-119).
    Match,
    /// PIX cross-reference (`$ihe-pix`).
    Pix,
    /// `$empi-link`, `$empi-unlink`, `$empi-merge`, `$empi-unmerge`.
    EmpiDecision,
    /// Bulk `$export`.
    Export,
}

/// Why a request is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No scope grants the interaction on the type.
    #[error("no granted scope allows {interaction} on {resource_type}")]
    Scope {
        /// The permission letter needed (`r`, `s`, `c`, `u`, `d`).
        interaction: char,
        /// The type, or `*`.
        resource_type: String,
    },
    /// Allowed only to a user or a backend service, and the token reaches one patient.
    #[error("{0} is not available to a patient-context token")]
    PatientContext(&'static str),
    /// A patient-context grant without a patient in the token.
    #[error("the token has patient scopes but no patient in context")]
    NoPatient,
    /// Bulk export needs a backend service.
    #[error("bulk export needs a system scope")]
    NotSystem,
}

/// What the request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The context of the grant used.
    pub context: Context,
    /// With a patient-context grant: the person (golden Patient id) the request is confined to.
    pub patient: Option<String>,
    /// Search restrictions, any of which admits a resource; empty means none.
    pub restrictions: Vec<Restriction>,
    /// The token is a break-glass one.
    pub break_glass: bool,
}

fn letter(i: Interaction) -> char {
    match i {
        Interaction::Create => 'c',
        Interaction::Read => 'r',
        Interaction::Update => 'u',
        Interaction::Delete => 'd',
        Interaction::Search => 's',
    }
}

/// Decides `kind` on `resource_type` (`None` for system-level requests) for a token with
/// `claims` and its parsed `scopes`.
pub fn authorize(
    claims: &AccessClaims,
    scopes: &ScopeSet,
    kind: RequestKind,
    resource_type: Option<&str>,
) -> Result<Authorized, Refusal> {
    let (interaction, ty, people) = match kind {
        RequestKind::Read => (Interaction::Read, resource_type, None),
        RequestKind::Search => (Interaction::Search, resource_type, None),
        RequestKind::SystemSearch => (
            Interaction::Search,
            None,
            Some("system-level search and history"),
        ),
        RequestKind::Create => (Interaction::Create, resource_type, None),
        RequestKind::Update => (Interaction::Update, resource_type, None),
        RequestKind::Delete => (Interaction::Delete, resource_type, None),
        RequestKind::Match => (Interaction::Search, Some("Patient"), Some("$match")),
        RequestKind::Pix => (Interaction::Search, Some("Patient"), Some("$ihe-pix")),
        RequestKind::EmpiDecision => (Interaction::Update, Some("Patient"), Some("EMPI decisions")),
        RequestKind::Export => (Interaction::Search, None, Some("bulk export")),
    };
    let grant = match ty {
        Some(t) => scopes.grant(interaction, t),
        // Every type: only a `*` scope grants it.
        None => {
            let star = ScopeSet::parse(
                &scopes
                    .clinical()
                    .filter(|c| c.resource_type.is_none())
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .unwrap_or_default();
            star.grant(interaction, "*")
        }
    };
    let Grant::Allowed {
        context,
        restrictions,
    } = grant
    else {
        return Err(Refusal::Scope {
            interaction: letter(interaction),
            resource_type: ty.unwrap_or("*").to_owned(),
        });
    };
    if let Some(what) = people
        && context == Context::Patient
    {
        return Err(Refusal::PatientContext(what));
    }
    if kind == RequestKind::Export && context != Context::System {
        return Err(Refusal::NotSystem);
    }
    let patient = match context {
        Context::Patient => Some(claims.patient.clone().ok_or(Refusal::NoPatient)?),
        _ => None,
    };
    Ok(Authorized {
        context,
        patient,
        restrictions,
        break_glass: claims.break_glass.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scope: &str, patient: Option<&str>) -> (AccessClaims, ScopeSet) {
        let c = AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            exp: 2,
            iat: 1,
            jti: "j".into(),
            scope: scope.into(),
            client_id: "c".into(),
            patient: patient.map(str::to_owned),
            fhir_user: None,
            organization: None,
            purpose_of_use: None,
            break_glass: None,
        };
        let s = ScopeSet::parse(scope).expect("scopes");
        (c, s)
    }

    #[test]
    fn a_patient_token_is_confined_to_its_person() {
        let (c, s) = claims("patient/*.rs launch/patient", Some("g1"));
        let a = authorize(&c, &s, RequestKind::Search, Some("Observation")).expect("allowed");
        assert_eq!(a.patient.as_deref(), Some("g1"));
        assert_eq!(a.context, Context::Patient);
        for (kind, ty) in [
            (RequestKind::Match, None),
            (RequestKind::Pix, None),
            (RequestKind::SystemSearch, None),
            (RequestKind::Export, None),
        ] {
            assert!(
                matches!(authorize(&c, &s, kind, ty), Err(Refusal::PatientContext(_))),
                "{kind:?}"
            );
        }
        assert_eq!(
            authorize(&c, &s, RequestKind::Create, Some("Observation")),
            Err(Refusal::Scope {
                interaction: 'c',
                resource_type: "Observation".into()
            })
        );
        let (c, s) = claims("patient/*.rs", None);
        assert_eq!(
            authorize(&c, &s, RequestKind::Read, Some("Patient")),
            Err(Refusal::NoPatient)
        );
    }

    #[test]
    fn system_level_requests_need_a_star_scope() {
        let (c, s) = claims("system/Patient.rs system/Observation.rs", None);
        assert!(matches!(
            authorize(&c, &s, RequestKind::SystemSearch, None),
            Err(Refusal::Scope { .. })
        ));
        let (c, s) = claims("system/*.rs", None);
        assert!(authorize(&c, &s, RequestKind::SystemSearch, None).is_ok());
        assert!(authorize(&c, &s, RequestKind::Export, None).is_ok());
        assert!(authorize(&c, &s, RequestKind::Match, None).is_ok());
        let (c, s) = claims("user/*.rs", None);
        assert_eq!(
            authorize(&c, &s, RequestKind::Export, None),
            Err(Refusal::NotSystem)
        );
    }

    #[test]
    fn empi_decisions_need_patient_update_by_a_user_or_service() {
        let (c, s) = claims("user/Patient.rs", None);
        assert!(authorize(&c, &s, RequestKind::EmpiDecision, None).is_err());
        let (c, s) = claims("user/Patient.rus", None);
        assert!(authorize(&c, &s, RequestKind::EmpiDecision, None).is_ok());
        let (mut c, s) = claims("user/Patient.cruds", None);
        c.break_glass = Some("unconscious patient in the ED".into());
        assert!(
            authorize(&c, &s, RequestKind::Read, Some("Patient"))
                .expect("ok")
                .break_glass
        );
    }
}
