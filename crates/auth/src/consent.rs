//! Consent: what a patient's FHIR `Consent` resources (scope `patient-privacy`), over the
//! network's default, allow one access.
//!
//! # The rule
//! The network default ([`NetworkDefault`]) decides for a patient with no applicable
//! consent: opt-out networks share, opt-in networks do not. Sensitive classes
//! ([`ConsentSettings::sensitive`], security labels such as mental health or substance use)
//! are withheld unless a consent permits them. Then each active consent in force now is
//! applied, oldest first (a later consent overrides an earlier one), each provision before
//! its nested provisions (an exception overrides the rule it is nested in). A provision
//! applies to an access when its `period` holds now and, where given, one of its `actor`s is
//! one of the requester's (organisation, practitioner, related person), one of its `purpose`s
//! is the access's purpose of use, and its `action`s include access, use or disclosure. An
//! applicable provision:
//! - without data constraints decides the whole record: `permit` shares it, `deny` withholds
//!   it;
//! - with `securityLabel`s, `class`es (resource types) or `data` references decides only that
//!   data: `deny` withholds it, `permit` releases it (a label the network withholds by
//!   default, or, when the whole record is withheld, just that data).
//!
//! Break-glass (purpose `ETREAT` with emergency access granted) releases everything; the
//! [`Decision`] says whether it overrode a denial, for the audit log and the patient.
//!
//! The decision ([`Decision`]) is what the store's access policy is made of: whether the
//! patient's compartment is visible, and which labels, types and resources inside it are not.
//! Nothing here reads a database.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::Value;
use thiserror::Error;

use crate::labels::Label;

/// The purpose of use that marks emergency (break-glass) access.
pub const EMERGENCY_PURPOSE: &str = "ETREAT";
/// The consent scope this module evaluates.
pub const PRIVACY_SCOPE: &str = "patient-privacy";

/// A `Consent` resource this module cannot use.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConsentError {
    /// Not a Consent.
    #[error("not a Consent resource")]
    NotConsent,
    /// `provision.type` is neither `permit` nor `deny`, at the given FHIRPath-like location.
    #[error("{0}: provision type must be permit or deny")]
    ProvisionType(String),
    /// A date in a `period` is not a FHIR date or dateTime.
    #[error("{0}: `{1}` is not a date or dateTime")]
    Date(String, String),
    /// Provisions nested deeper than any real consent nests them.
    #[error("{0}: provisions nested too deep")]
    TooDeep(String),
}

/// The network's default for a patient without an applicable consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkDefault {
    /// Shared unless the patient says no.
    #[default]
    OptOut,
    /// Withheld unless the patient says yes.
    OptIn,
}

/// The network's consent settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsentSettings {
    /// Default for a patient without an applicable consent.
    pub default: NetworkDefault,
    /// Labels withheld unless a consent permits them.
    pub sensitive: BTreeSet<Label>,
}

/// Who is asking, why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// References to the requester: its organisation and person (`Organization/x`,
    /// `Practitioner/y`).
    pub actors: Vec<String>,
    /// Purpose of use code (v3 `PurposeOfUse`: TREAT, ETREAT, HPAYMT, PUBHLTH, HRESCH, ...).
    pub purpose: Option<String>,
    /// The time of the access.
    pub now: DateTime<Utc>,
    /// Emergency access was granted to this request.
    pub break_glass: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Permit,
    Deny,
}

/// A half-open interval `[start, end)`; either side may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Period {
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Period {
    fn holds(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t < e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Provision {
    kind: Option<Kind>,
    period: Period,
    actors: BTreeSet<String>,
    purposes: BTreeSet<String>,
    actions: BTreeSet<String>,
    labels: BTreeSet<Label>,
    classes: BTreeSet<String>,
    data: BTreeSet<String>,
    nested: Vec<Provision>,
}

/// One patient-privacy consent, read from its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    /// `Consent.id`.
    pub id: String,
    /// `Consent.patient.reference`.
    pub patient: Option<String>,
    active: bool,
    privacy: bool,
    date: Option<DateTime<Utc>>,
    provision: Option<Provision>,
}

const MAX_DEPTH: usize = 8;

impl Consent {
    /// Reads a `Consent` resource.
    pub fn from_resource(r: &Value) -> Result<Consent, ConsentError> {
        if r.get("resourceType").and_then(Value::as_str) != Some("Consent") {
            return Err(ConsentError::NotConsent);
        }
        let s = |p: &str| r.pointer(p).and_then(Value::as_str);
        let privacy = codes(r.get("scope")).iter().any(|c| c == PRIVACY_SCOPE);
        let date = match s("/dateTime") {
            Some(d) => Some(
                parse_time(d, false)
                    .ok_or_else(|| ConsentError::Date("Consent.dateTime".into(), d.into()))?,
            ),
            None => None,
        };
        let provision = match r.get("provision") {
            Some(p) => Some(provision(p, "Consent.provision", 0)?),
            None => None,
        };
        Ok(Consent {
            id: s("/id").unwrap_or_default().to_owned(),
            patient: s("/patient/reference").map(str::to_owned),
            active: s("/status") == Some("active"),
            privacy,
            date,
            provision,
        })
    }

    /// Whether this consent takes part in access decisions: active and about privacy.
    pub fn applies(&self) -> bool {
        self.active && self.privacy && self.provision.is_some()
    }
}

fn codes(v: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |cc: &Value| {
        for c in cc
            .get("coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(code) = c.get("code").and_then(Value::as_str) {
                out.push(code.to_owned());
            }
        }
    };
    match v {
        Some(Value::Array(items)) => items.iter().for_each(&mut push),
        Some(cc) => push(cc),
        None => {}
    }
    out
}

fn provision(p: &Value, at: &str, depth: usize) -> Result<Provision, ConsentError> {
    if depth >= MAX_DEPTH {
        return Err(ConsentError::TooDeep(at.to_owned()));
    }
    let kind = match p.get("type").and_then(Value::as_str) {
        None => None,
        Some("permit") => Some(Kind::Permit),
        Some("deny") => Some(Kind::Deny),
        Some(_) => return Err(ConsentError::ProvisionType(format!("{at}.type"))),
    };
    let mut period = Period::default();
    for (key, end) in [("start", false), ("end", true)] {
        if let Some(v) = p.pointer(&format!("/period/{key}")).and_then(Value::as_str) {
            let t = parse_time(v, end)
                .ok_or_else(|| ConsentError::Date(format!("{at}.period.{key}"), v.into()))?;
            if end {
                period.end = Some(t);
            } else {
                period.start = Some(t);
            }
        }
    }
    let list = |key: &str| p.get(key).and_then(Value::as_array).into_iter().flatten();
    let actors = list("actor")
        .filter_map(|a| a.pointer("/reference/reference")?.as_str())
        .map(str::to_owned)
        .collect();
    let purposes = list("purpose")
        .filter_map(|c| c.get("code")?.as_str())
        .map(str::to_owned)
        .collect();
    let actions = codes(p.get("action")).into_iter().collect();
    let labels = list("securityLabel")
        .filter_map(|c| {
            Some(Label {
                system: c.get("system")?.as_str()?.to_owned(),
                code: c.get("code")?.as_str()?.to_owned(),
            })
        })
        .collect();
    let classes = list("class")
        .filter_map(|c| c.get("code")?.as_str())
        .map(str::to_owned)
        .collect();
    let data = list("data")
        .filter_map(|d| d.pointer("/reference/reference")?.as_str())
        .map(str::to_owned)
        .collect();
    let nested = list("provision")
        .enumerate()
        .map(|(n, child)| provision(child, &format!("{at}.provision[{n}]"), depth + 1))
        .collect::<Result<_, _>>()?;
    Ok(Provision {
        kind,
        period,
        actors,
        purposes,
        actions,
        labels,
        classes,
        data,
        nested,
    })
}

/// A FHIR date or dateTime as an instant: a partial date is its first moment, or, for the
/// end of a period, the first moment after it.
fn parse_time(s: &str, end: bool) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    if !s.is_ascii() {
        return None;
    }
    let (date, next) = match s.len() {
        4 => {
            let y: i32 = s.parse().ok()?;
            (
                NaiveDate::from_ymd_opt(y, 1, 1)?,
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?,
            )
        }
        7 if &s[4..5] == "-" => {
            let y: i32 = s[..4].parse().ok()?;
            let m: u32 = s[5..].parse().ok()?;
            let next = if m == 12 {
                NaiveDate::from_ymd_opt(y + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(y, m + 1, 1)?
            };
            (NaiveDate::from_ymd_opt(y, m, 1)?, next)
        }
        10 => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            (d, d.succ_opt()?)
        }
        _ => return None,
    };
    let day = if end { next } else { date };
    Some(Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?))
}

/// What the consents allow one access to one patient's record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The record is visible at all.
    pub permitted: bool,
    /// When the whole record is withheld but some data is released: only resources of these
    /// types, these resources (`Type/id`) and data carrying these labels are visible.
    pub only: Option<Release>,
    /// Labels withheld inside a visible record.
    pub denied_labels: BTreeSet<Label>,
    /// Resource types withheld inside a visible record.
    pub denied_types: BTreeSet<String>,
    /// Resources (`Type/id`) withheld inside a visible record.
    pub denied_resources: BTreeSet<String>,
    /// Consents that decided something, in the order applied.
    pub by: Vec<String>,
    /// Break-glass released something the consents withheld.
    pub break_glass_used: bool,
}

/// Data released out of a withheld record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Release {
    /// Resource types released.
    pub types: BTreeSet<String>,
    /// Resources (`Type/id`) released.
    pub resources: BTreeSet<String>,
    /// Labels whose data is released.
    pub labels: BTreeSet<Label>,
}

impl Decision {
    /// Whether nothing is withheld.
    pub fn is_unrestricted(&self) -> bool {
        self.permitted
            && self.only.is_none()
            && self.denied_labels.is_empty()
            && self.denied_types.is_empty()
            && self.denied_resources.is_empty()
    }
}

/// Decides one access to one patient's record from that patient's consents (others are
/// ignored, as are consents that are not active patient-privacy consents).
pub fn evaluate(settings: &ConsentSettings, consents: &[Consent], req: &AccessRequest) -> Decision {
    let mut d = Decision {
        permitted: settings.default == NetworkDefault::OptOut,
        denied_labels: settings.sensitive.clone(),
        ..Decision::default()
    };
    let mut applicable: Vec<&Consent> = consents.iter().filter(|c| c.applies()).collect();
    // Oldest first, so that the newest decides; undated ones first of all.
    applicable.sort_by_key(|c| c.date);
    for c in applicable {
        if let Some(p) = &c.provision
            && apply(p, req, &mut d)
        {
            d.by.push(c.id.clone());
        }
    }
    if req.break_glass && req.purpose.as_deref() == Some(EMERGENCY_PURPOSE) && !d.is_unrestricted()
    {
        return Decision {
            permitted: true,
            by: d.by,
            break_glass_used: true,
            ..Decision::default()
        };
    }
    d
}

fn matches(p: &Provision, req: &AccessRequest) -> bool {
    const ACCESS_ACTIONS: [&str; 3] = ["access", "use", "disclose"];
    p.period.holds(req.now)
        && (p.actors.is_empty() || req.actors.iter().any(|a| p.actors.contains(a)))
        && (p.purposes.is_empty()
            || req
                .purpose
                .as_ref()
                .is_some_and(|pu| p.purposes.contains(pu)))
        && (p.actions.is_empty() || ACCESS_ACTIONS.iter().any(|a| p.actions.contains(*a)))
}

/// Applies `p` and its nested provisions; whether anything applied.
fn apply(p: &Provision, req: &AccessRequest, d: &mut Decision) -> bool {
    if !matches(p, req) {
        return false;
    }
    let mut applied = false;
    if let Some(kind) = p.kind {
        applied = true;
        let about_data = !p.labels.is_empty() || !p.classes.is_empty() || !p.data.is_empty();
        match (kind, about_data) {
            (Kind::Permit, false) => {
                d.permitted = true;
                d.only = None;
            }
            (Kind::Deny, false) => {
                d.permitted = false;
                d.only = None;
            }
            (Kind::Deny, true) => {
                d.denied_labels.extend(p.labels.iter().cloned());
                d.denied_types.extend(p.classes.iter().cloned());
                d.denied_resources.extend(p.data.iter().cloned());
                if let Some(only) = &mut d.only {
                    only.labels.retain(|l| !p.labels.contains(l));
                    only.types.retain(|t| !p.classes.contains(t));
                    only.resources.retain(|r| !p.data.contains(r));
                }
            }
            (Kind::Permit, true) => {
                d.denied_labels.retain(|l| !p.labels.contains(l));
                d.denied_types.retain(|t| !p.classes.contains(t));
                d.denied_resources.retain(|r| !p.data.contains(r));
                if !d.permitted {
                    let only = d.only.get_or_insert_with(Release::default);
                    only.labels.extend(p.labels.iter().cloned());
                    only.types.extend(p.classes.iter().cloned());
                    only.resources.extend(p.data.iter().cloned());
                }
            }
        }
    }
    for child in &p.nested {
        applied |= apply(child, req, d);
    }
    applied
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s, false).expect("time")
    }

    fn req(actors: &[&str], purpose: &str) -> AccessRequest {
        AccessRequest {
            actors: actors.iter().map(|a| (*a).to_owned()).collect(),
            purpose: Some(purpose.to_owned()),
            now: at("2026-06-01T12:00:00Z"),
            break_glass: false,
        }
    }

    fn consent(id: &str, date: &str, provision: Value) -> Consent {
        Consent::from_resource(&json!({
            "resourceType": "Consent", "id": id, "status": "active", "dateTime": date,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "patient": {"reference": "Patient/p1"},
            "provision": provision,
        }))
        .expect("consent")
    }

    fn actor(r: &str) -> Value {
        json!({"reference": {"reference": r}})
    }

    #[test]
    fn the_network_default_decides_without_a_consent() {
        let out = ConsentSettings::default();
        assert!(evaluate(&out, &[], &req(&["Organization/a"], "TREAT")).permitted);
        let opt_in = ConsentSettings {
            default: NetworkDefault::OptIn,
            ..Default::default()
        };
        assert!(!evaluate(&opt_in, &[], &req(&["Organization/a"], "TREAT")).permitted);
    }

    #[test]
    fn a_deny_with_an_exception_for_one_organisation() {
        let c = consent(
            "c1",
            "2026-01-01",
            json!({"type": "deny", "provision": [
            {"type": "permit", "actor": [actor("Organization/hospital")]}]}),
        );
        let s = ConsentSettings::default();
        let d = evaluate(
            &s,
            std::slice::from_ref(&c),
            &req(&["Organization/hospital"], "TREAT"),
        );
        assert!(d.permitted);
        assert_eq!(d.by, vec!["c1"]);
        assert!(!evaluate(&s, &[c], &req(&["Organization/payer"], "TREAT")).permitted);
    }

    #[test]
    fn purpose_of_use_and_period_limit_a_provision() {
        let c = consent(
            "c2",
            "2026-01-01",
            json!({"type": "permit", "provision": [
            {"type": "deny", "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]},
            {"type": "deny", "actor": [actor("Organization/payer")], "period": {"start": "2026-07-01"}}]}),
        );
        let s = ConsentSettings::default();
        assert!(
            !evaluate(
                &s,
                std::slice::from_ref(&c),
                &req(&["Organization/uni"], "HRESCH")
            )
            .permitted
        );
        assert!(
            evaluate(
                &s,
                std::slice::from_ref(&c),
                &req(&["Organization/uni"], "TREAT")
            )
            .permitted
        );
        // The payer's denial starts in July.
        assert!(
            evaluate(
                &s,
                std::slice::from_ref(&c),
                &req(&["Organization/payer"], "HPAYMT")
            )
            .permitted
        );
        let mut later = req(&["Organization/payer"], "HPAYMT");
        later.now = at("2026-07-01T00:00:00Z");
        assert!(!evaluate(&s, &[c], &later).permitted);
    }

    #[test]
    fn sensitive_labels_are_withheld_until_permitted_and_can_be_denied() {
        let psy = Label::act("PSY");
        let eth = Label::act("ETH");
        let s = ConsentSettings {
            default: NetworkDefault::OptOut,
            sensitive: BTreeSet::from([eth.clone()]),
        };
        let r = req(&["Organization/clinic"], "TREAT");
        assert_eq!(
            evaluate(&s, &[], &r).denied_labels,
            BTreeSet::from([eth.clone()])
        );
        let c = consent(
            "c3",
            "2026-02-01",
            json!({"type": "permit", "provision": [
            {"type": "deny", "securityLabel": [{"system": crate::labels::ACT_CODE, "code": "PSY"}]},
            {"type": "permit", "securityLabel": [{"system": crate::labels::ACT_CODE, "code": "ETH"}], "actor": [actor("Organization/clinic")]}]}),
        );
        let d = evaluate(&s, &[c], &r);
        assert!(d.permitted);
        assert_eq!(d.denied_labels, BTreeSet::from([psy]));
    }

    #[test]
    fn a_withheld_record_can_release_one_class() {
        let s = ConsentSettings {
            default: NetworkDefault::OptIn,
            ..Default::default()
        };
        let c = consent(
            "c4",
            "2026-03-01",
            json!({"type": "deny", "provision": [
            {"type": "permit", "purpose": [{"code": "PUBHLTH"}], "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Immunization"}]}]}),
        );
        let d = evaluate(
            &s,
            std::slice::from_ref(&c),
            &req(&["Organization/ph"], "PUBHLTH"),
        );
        assert!(!d.permitted);
        assert_eq!(
            d.only.map(|o| o.types),
            Some(BTreeSet::from(["Immunization".to_owned()]))
        );
        assert_eq!(
            evaluate(&s, &[c], &req(&["Organization/ph"], "TREAT")).only,
            None
        );
    }

    #[test]
    fn the_newest_consent_wins_and_inactive_ones_do_not_count() {
        let s = ConsentSettings::default();
        let old = consent("old", "2025-01-01", json!({"type": "deny"}));
        let new = consent("new", "2026-01-01", json!({"type": "permit"}));
        let r = req(&["Organization/a"], "TREAT");
        assert!(evaluate(&s, &[new.clone(), old.clone()], &r).permitted);
        let mut revoked = new;
        revoked.active = false;
        assert!(!evaluate(&s, &[revoked, old], &r).permitted);
    }

    #[test]
    fn break_glass_releases_everything_and_says_so() {
        let s = ConsentSettings::default();
        let c = consent("c5", "2026-01-01", json!({"type": "deny"}));
        let mut r = req(&["Organization/er"], EMERGENCY_PURPOSE);
        assert!(!evaluate(&s, std::slice::from_ref(&c), &r).permitted);
        r.break_glass = true;
        let d = evaluate(&s, std::slice::from_ref(&c), &r);
        assert!(d.permitted && d.break_glass_used && d.is_unrestricted());
        // Nothing withheld: nothing overridden.
        assert!(!evaluate(&s, &[], &r).break_glass_used);
    }

    #[test]
    fn malformed_consents_name_the_element() {
        let bad = json!({"resourceType": "Consent", "status": "active",
            "provision": {"type": "deny", "provision": [{"type": "maybe"}]}});
        assert_eq!(
            Consent::from_resource(&bad),
            Err(ConsentError::ProvisionType(
                "Consent.provision.provision[0].type".into()
            ))
        );
        let bad = json!({"resourceType": "Consent", "provision": {"period": {"start": "soon"}}});
        assert!(matches!(
            Consent::from_resource(&bad),
            Err(ConsentError::Date(..))
        ));
        // A month and a year as the end of a period reach their last moment.
        assert_eq!(
            parse_time("2026-12", true),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            parse_time("2026-02", true),
            Some(at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(parse_time("2026", true), Some(at("2027-01-01T00:00:00Z")));
    }
}
