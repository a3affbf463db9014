//! The access policy, applied: what a restricted caller ([`Restriction`]) may see, as the SQL
//! condition every query of the store carries for it, and as the same rule over index rows.
//!
//! A resource is visible to a restricted caller when it is in the Patient compartment of one of
//! the allowed patients (it is one of those Patients, or it is of a type in FHIR's Patient
//! CompartmentDefinition and names one of them through one of its type's compartment
//! parameters: the `idx_reference` rows `Filter::Compartment` reads), and, unless the caller
//! broke the glass, carries none of the denied labels in `meta.security` (its `_security`
//! rows in `idx_token`). Types outside the Patient compartment are never visible.
//!
//! Owned here: that condition ([`conditions`], used by `search::build` for every resource
//! alias it writes: the page, the count, conditional matching, chains and `_has`), the query
//! judging one existing resource ([`admits_sql`]; a deleted one has no index rows, so it is
//! judged on its last version with a body, [`admits_deleted`]), and the refusal of what
//! index rows cannot answer ([`refuse_unscoped`]). An unrestricted caller adds nothing to any
//! query. See `docs/storage.md`, "Access".

use std::collections::BTreeSet;

use serde_json::Value;

use crate::context::{
    Patients, RequestContext, Restriction, SecurityLabel, Selector, Withheld, Withholding,
};
use crate::error::StoreError;
use crate::index::{IndexExtractor, IndexRow, IndexValue};
use crate::sql::{Sql, SqlParam};

/// The parameter whose token rows hold `meta.security`.
const SECURITY: &str = "_security";
/// The compartment's owner type.
const PATIENT: &str = "Patient";

/// The aliases a visibility condition needs, unique in the query it joins.
pub(crate) struct Aliases {
    /// Over `idx_reference` (compartment membership).
    pub member: String,
    /// Over `resource` (the Patients themselves, when the condition drives).
    pub owner: String,
    /// Over `idx_token` (denied labels).
    pub label: String,
}

/// The conditions, ANDed by the caller, that a current resource (alias `a`) meets when `r`
/// may see it. `resource_type` (or, without one, `types` when not empty) narrows the
/// compartment parameters looked at. With `drive` and an allowlist of patients, membership is
/// written as an indexed `a.rid IN (...)` list that can drive the query (it then also
/// restricts the type); otherwise as a correlated probe of `a`.
pub(crate) fn conditions(
    sql: &mut Sql,
    r: &Restriction,
    resource_type: Option<&str>,
    types: &[String],
    a: &str,
    aliases: &Aliases,
    drive: bool,
) -> Vec<String> {
    let members = compartment_params(resource_type, types);
    let owner = resource_type.is_none_or(|t| t == PATIENT)
        && (resource_type.is_some() || types.is_empty() || types.iter().any(|t| t == PATIENT));
    let mut membership = Vec::new();
    if let Some(allowed) = &r.patients {
        if allowed.is_empty() || (members.is_empty() && !owner) {
            return vec!["1 = 0".to_owned()];
        }
        // Bound once, named wherever they are needed.
        let patients = sql.bind_list(allowed, SqlParam::Text);
        let patient = sql.bind(SqlParam::Text(PATIENT.to_owned()));
        let z = &aliases.member;
        let pairs = pairs(sql, &members, z);
        if drive {
            let mut rids = Vec::new();
            if let Some(pairs) = &pairs {
                rids.push(format!(
                    "SELECT {z}.rid FROM idx_reference {z} WHERE {z}.target_id IN ({patients}) \
                     AND {z}.target_type = {patient} AND {pairs}"
                ));
            }
            if owner {
                let o = &aliases.owner;
                rids.push(format!(
                    "SELECT {o}.rid FROM resource {o} WHERE {o}.res_type = {patient} \
                     AND {o}.res_id IN ({patients})"
                ));
            }
            membership.push(format!("{a}.rid IN ({})", rids.join(" UNION ")));
        } else {
            let ids = format!("IN ({patients})");
            membership.push(probe(owner, pairs.as_deref(), Some(&ids), &patient, a, z));
        }
    }
    if r.break_glass {
        return membership;
    }
    if !r.denied_labels.is_empty() {
        let labels = labelled(sql, &r.denied_labels, a, &aliases.label);
        membership.push(format!("NOT {labels}"));
    }
    if members.is_empty() && !owner {
        // Consent withholds patient data only.
        return membership;
    }
    for w in &r.withheld {
        if let Some(c) = withheld(sql, w, &members, owner, a, aliases) {
            membership.push(c);
        }
    }
    membership
}

/// The compartment parameters of `members` as a condition on `idx_reference` alias `z`.
fn pairs(sql: &mut Sql, members: &[(&str, &[String])], z: &str) -> Option<String> {
    match members {
        [] => None,
        [(t, ps)] => {
            let t = sql.bind(SqlParam::Name((*t).to_owned()));
            let ps = sql.bind_list(*ps, SqlParam::Name);
            Some(format!("{z}.res_type = {t} AND {z}.param IN ({ps})"))
        }
        many => {
            let values: Vec<String> = many
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, p)))
                .map(|(t, p)| {
                    let t = sql.bind(SqlParam::Name(t.to_owned()));
                    let p = sql.bind(SqlParam::Name(p.clone()));
                    format!("({t}, {p})")
                })
                .collect();
            Some(format!(
                "({z}.res_type, {z}.param) IN (VALUES {})",
                values.join(", ")
            ))
        }
    }
}

/// Whether `a` is in the compartment of a Patient whose id passes `ids` (`IN (...)`, `NOT
/// IN (...)`; `None`: any Patient), as a correlated probe: `a` is such a Patient (`owner`), or
/// one of its compartment parameters (`pairs`) names one. One of `owner` and `pairs` holds.
fn probe(
    owner: bool,
    pairs: Option<&str>,
    ids: Option<&str>,
    patient: &str,
    a: &str,
    z: &str,
) -> String {
    let mut alts = Vec::new();
    if owner {
        alts.push(match ids {
            Some(ids) => format!("({a}.res_type = {patient} AND {a}.res_id {ids})"),
            None => format!("{a}.res_type = {patient}"),
        });
    }
    if let Some(pairs) = pairs {
        let ids = ids
            .map(|ids| format!(" AND {z}.target_id {ids}"))
            .unwrap_or_default();
        alts.push(format!(
            "EXISTS (SELECT 1 FROM idx_reference {z} WHERE {z}.rid = {a}.rid \
             AND {z}.target_type = {patient}{ids} AND {pairs})"
        ));
    }
    format!("({})", alts.join(" OR "))
}

/// `EXISTS` a `_security` row of `a` that is one of `labels` (not empty).
fn labelled(sql: &mut Sql, labels: &BTreeSet<SecurityLabel>, a: &str, w: &str) -> String {
    let param = sql.bind(SqlParam::Name(SECURITY.to_owned()));
    let labels: Vec<String> = labels
        .iter()
        .map(|l| {
            let system = sql.bind(SqlParam::Text(l.system.clone()));
            let code = sql.bind(SqlParam::Text(l.code.clone()));
            format!("({w}.system = {system} AND {w}.code = {code})")
        })
        .collect();
    format!(
        "EXISTS (SELECT 1 FROM idx_token {w} WHERE {w}.rid = {a}.rid \
         AND {w}.param = {param} AND ({}))",
        labels.join(" OR ")
    )
}

/// Whether `s` selects `a`; `None` when it selects nothing.
fn selects(sql: &mut Sql, s: &Selector, a: &str, w: &str) -> Option<String> {
    let mut any = Vec::new();
    if !s.labels.is_empty() {
        any.push(labelled(sql, &s.labels, a, w));
    }
    if !s.types.is_empty() {
        any.push(format!(
            "{a}.res_type IN ({})",
            sql.bind_list(&s.types, SqlParam::Text)
        ));
    }
    for r in &s.resources {
        let Some((t, id)) = r.split_once('/') else {
            continue;
        };
        let t = sql.bind(SqlParam::Text(t.to_owned()));
        let id = sql.bind(SqlParam::Text(id.to_owned()));
        any.push(format!("({a}.res_type = {t} AND {a}.res_id = {id})"));
    }
    (!any.is_empty()).then(|| format!("({})", any.join(" OR ")))
}

/// The condition that `a` is not withheld by `w`; `None` when `w` withholds nothing `a` could
/// be.
fn withheld(
    sql: &mut Sql,
    w: &Withheld,
    members: &[(&str, &[String])],
    owner: bool,
    a: &str,
    aliases: &Aliases,
) -> Option<String> {
    let (ids, negate) = match &w.patients {
        Patients::Of(ids) if ids.is_empty() => return None,
        Patients::Of(ids) => (ids, false),
        Patients::AllBut(ids) => (ids, true),
    };
    let what = match &w.what {
        Withholding::Data(s) => Some(selects(sql, s, a, &aliases.label)?),
        Withholding::RecordExcept(s) => {
            selects(sql, s, a, &aliases.label).map(|c| format!("NOT {c}"))
        }
    };
    let ids = (!ids.is_empty()).then(|| {
        let list = sql.bind_list(ids, SqlParam::Text);
        if negate {
            format!("NOT IN ({list})")
        } else {
            format!("IN ({list})")
        }
    });
    let patient = sql.bind(SqlParam::Text(PATIENT.to_owned()));
    let pairs = pairs(sql, members, &aliases.member);
    let member = probe(
        owner,
        pairs.as_deref(),
        ids.as_deref(),
        &patient,
        a,
        &aliases.member,
    );
    Some(match what {
        Some(what) => format!("NOT ({member} AND {what})"),
        None => format!("NOT {member}"),
    })
}

/// `SELECT 1` when the current version of the live resource `rid` (of `resource_type`) is
/// visible to `r`; no row otherwise.
pub(crate) fn admits_sql(r: &Restriction, resource_type: &str, rid: i64) -> Sql {
    let mut sql = Sql::default();
    let rid = sql.bind(SqlParam::Int(rid));
    let aliases = Aliases {
        member: "z".into(),
        owner: "o".into(),
        label: "w".into(),
    };
    let mut conds = vec![format!("r.rid = {rid}")];
    conds.extend(conditions(
        &mut sql,
        r,
        Some(resource_type),
        &[],
        "r",
        &aliases,
        false,
    ));
    sql.text = format!("SELECT 1 FROM resource r WHERE {}", conds.join(" AND "));
    sql
}

/// The body of a resource's last version that has one (a deleted resource's last content).
pub(crate) const LAST_BODY: &str = "SELECT body FROM resource_version \
     WHERE rid = $1 AND body IS NOT NULL ORDER BY version DESC LIMIT 1";

/// Whether `r` may see the deleted resource `resource_type/id`, judged like a live one on the
/// index rows of `last_body`, its last content (a deletion removes the index rows).
pub(crate) fn admits_deleted(
    extractor: &dyn IndexExtractor,
    r: &Restriction,
    resource_type: &str,
    id: &str,
    last_body: Option<&str>,
) -> Result<bool, StoreError> {
    let rows = match last_body.map(serde_json::from_str::<Value>) {
        Some(Ok(body)) => extractor.extract(resource_type, &body)?,
        Some(Err(e)) => {
            return Err(StoreError::Backend(format!(
                "stored {resource_type}/{id} is not JSON: {e}"
            )));
        }
        None => Vec::new(),
    };
    Ok(admits_rows(r, resource_type, id, &rows))
}

/// The visibility rule of [`conditions`] over one resource's index rows.
pub(crate) fn admits_rows(
    r: &Restriction,
    resource_type: &str,
    id: &str,
    rows: &[IndexRow],
) -> bool {
    let params = fhir::r4().patient_compartment_params(resource_type);
    let in_compartment = |of: &dyn Fn(&str) -> bool| {
        (resource_type == PATIENT && of(id))
            || rows.iter().any(|row| {
                params.contains(&row.param)
                    && matches!(&row.value, IndexValue::Reference {
                        target_type: Some(t),
                        target_id: Some(target),
                        ..
                    } if t == PATIENT && of(target))
            })
    };
    let member = match &r.patients {
        Some(allowed) => in_compartment(&|p| allowed.contains(p)),
        None => true,
    };
    if !member {
        return false;
    }
    if r.break_glass {
        return true;
    }
    let labelled = |labels: &BTreeSet<SecurityLabel>| {
        rows.iter().any(|row| {
            row.param == SECURITY
                && matches!(&row.value, IndexValue::Token { system, code, .. }
                    if labels.iter().any(|l| l.system == *system && l.code == *code))
        })
    };
    if labelled(&r.denied_labels) {
        return false;
    }
    let selected = |s: &Selector| {
        labelled(&s.labels)
            || s.types.contains(resource_type)
            || s.resources.contains(&format!("{resource_type}/{id}"))
    };
    !r.withheld.iter().any(|w| {
        let member = match &w.patients {
            Patients::Of(ids) => in_compartment(&|p| ids.contains(p)),
            Patients::AllBut(ids) => in_compartment(&|p| !ids.contains(p)),
        };
        member
            && match &w.what {
                Withholding::Data(s) => selected(s),
                Withholding::RecordExcept(s) => !selected(s),
            }
    })
}

/// Refuses `what` to a restricted caller: what index rows cannot scope, because they
/// describe current versions only while type- and system-level history and the change feed
/// list every version (a version may have belonged to another compartment, or carried
/// another label, than the current one). The one place this refusal is decided; per-version
/// compartments on the change rows may later lift it.
pub(crate) fn refuse_unscoped(ctx: &RequestContext, what: &str) -> Result<(), StoreError> {
    match ctx.restriction() {
        None => Ok(()),
        Some(_) => Err(StoreError::Forbidden(format!(
            "{what} is not available to a caller whose access is restricted (to some patients' \
             records, or by consent)"
        ))),
    }
}

/// `(type, its compartment parameters)` of the Patient compartment: for `resource_type`, or
/// for each of `types`, or for every type.
fn compartment_params(
    resource_type: Option<&str>,
    types: &[String],
) -> Vec<(&'static str, &'static [String])> {
    let wanted: BTreeSet<&str> = match resource_type {
        Some(t) => BTreeSet::from([t]),
        None => types.iter().map(String::as_str).collect(),
    };
    fhir::r4()
        .patient_compartment()
        .filter(|(t, ps)| !ps.is_empty() && (wanted.is_empty() || wanted.contains(t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::AccessPolicy;

    fn restriction(patients: &[&str], denied: &[(&str, &str)], break_glass: bool) -> Restriction {
        Restriction {
            patients: Some(patients.iter().map(|p| p.to_string()).collect()),
            denied_labels: denied
                .iter()
                .map(|(s, c)| SecurityLabel::new(*s, *c))
                .collect(),
            break_glass,
            withheld: Vec::new(),
        }
    }

    fn aliases() -> Aliases {
        Aliases {
            member: "z1".into(),
            owner: "o1".into(),
            label: "w1".into(),
        }
    }

    fn texts(sql: &Sql) -> Vec<String> {
        sql.params
            .iter()
            .map(|p| match p {
                SqlParam::Text(t) | SqlParam::Name(t) => t.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_member_type_is_probed_through_its_compartment_parameters() {
        let mut sql = Sql::default();
        let r = restriction(&["p1"], &[], false);
        let conds = conditions(
            &mut sql,
            &r,
            Some("Observation"),
            &[],
            "r",
            &aliases(),
            false,
        );
        assert_eq!(
            conds,
            [
                "(EXISTS (SELECT 1 FROM idx_reference z1 WHERE z1.rid = r.rid \
              AND z1.target_type = $2 AND z1.target_id IN ($1) AND z1.res_type = $3 \
              AND z1.param IN ($4, $5)))"
            ]
        );
        assert_eq!(
            texts(&sql),
            ["p1", "Patient", "Observation", "subject", "performer"]
        );
    }

    #[test]
    fn patients_are_visible_by_id_or_link_and_a_driving_list_unites_both() {
        let mut sql = Sql::default();
        let r = restriction(&["p1", "p2"], &[], false);
        let conds = conditions(&mut sql, &r, Some("Patient"), &[], "r", &aliases(), true);
        assert_eq!(
            conds,
            [
                "r.rid IN (SELECT z1.rid FROM idx_reference z1 WHERE z1.target_id IN ($1, $2) \
              AND z1.target_type = $3 AND z1.res_type = $4 AND z1.param IN ($5) \
              UNION SELECT o1.rid FROM resource o1 WHERE o1.res_type = $3 AND o1.res_id IN ($1, $2))"
            ]
        );
        assert_eq!(texts(&sql), ["p1", "p2", "Patient", "Patient", "link"]);
    }

    #[test]
    fn types_outside_the_compartment_and_empty_restrictions_see_nothing() {
        for (r, ty) in [
            (restriction(&["p1"], &[], false), Some("Practitioner")),
            (restriction(&[], &[], false), Some("Observation")),
            (restriction(&[], &[], false), None),
        ] {
            let mut sql = Sql::default();
            let conds = conditions(&mut sql, &r, ty, &[], "r", &aliases(), false);
            assert_eq!(conds, ["1 = 0"], "{ty:?}");
            assert!(sql.params.is_empty());
        }
        // `_type` of types outside the compartment only.
        let mut sql = Sql::default();
        let r = restriction(&["p1"], &[], false);
        let types = ["Organization".to_owned(), "Medication".to_owned()];
        let conds = conditions(&mut sql, &r, None, &types, "r", &aliases(), true);
        assert_eq!(conds, ["1 = 0"]);
    }

    #[test]
    fn every_type_is_one_lookup_of_type_and_parameter_pairs() {
        let mut sql = Sql::default();
        let r = restriction(&["p1"], &[], false);
        let conds = conditions(&mut sql, &r, None, &[], "r", &aliases(), false);
        assert_eq!(conds.len(), 1);
        assert!(
            conds[0].starts_with(
                "((r.res_type = $2 AND r.res_id IN ($1)) OR EXISTS (SELECT 1 FROM \
                 idx_reference z1 WHERE z1.rid = r.rid AND z1.target_type = $2 AND \
                 z1.target_id IN ($1) AND (z1.res_type, z1.param) IN (VALUES ($3, $4), "
            ),
            "{}",
            conds[0]
        );
        let pairs = fhir::r4()
            .patient_compartment()
            .map(|(_, ps)| ps.len())
            .sum::<usize>();
        assert_eq!(sql.params.len(), 2 + 2 * pairs);
    }

    #[test]
    fn denied_labels_are_a_probe_unless_the_glass_is_broken() {
        let denied = [(
            "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "R",
        )];
        let mut sql = Sql::default();
        let r = restriction(&["p1"], &denied, false);
        let conds = conditions(&mut sql, &r, Some("Patient"), &[], "r", &aliases(), false);
        assert_eq!(conds.len(), 2);
        assert_eq!(
            conds[1],
            "NOT EXISTS (SELECT 1 FROM idx_token w1 WHERE w1.rid = r.rid AND w1.param = $5 \
             AND ((w1.system = $6 AND w1.code = $7)))"
        );
        let mut sql = Sql::default();
        let r = restriction(&["p1"], &denied, true);
        let conds = conditions(&mut sql, &r, Some("Patient"), &[], "r", &aliases(), false);
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn the_rule_over_index_rows_matches_the_sql() {
        let reference = |param: &str, target: &str| IndexRow {
            param: param.into(),
            group: None,
            value: IndexValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some(target.into()),
                url: format!("Patient/{target}"),
            },
        };
        let label = IndexRow {
            param: "_security".into(),
            group: None,
            value: IndexValue::Token {
                system: "urn:conf".into(),
                code: "R".into(),
                display: None,
            },
        };
        let r = restriction(&["p1"], &[("urn:conf", "R")], false);
        assert!(admits_rows(&r, "Patient", "p1", &[]));
        assert!(!admits_rows(&r, "Patient", "p2", &[]));
        assert!(admits_rows(&r, "Patient", "p2", &[reference("link", "p1")]));
        assert!(admits_rows(
            &r,
            "Observation",
            "o",
            &[reference("subject", "p1")]
        ));
        // Not a compartment parameter of Observation.
        assert!(!admits_rows(
            &r,
            "Observation",
            "o",
            &[reference("focus", "p1")]
        ));
        assert!(!admits_rows(
            &r,
            "Observation",
            "o",
            &[reference("subject", "p2")]
        ));
        assert!(!admits_rows(
            &r,
            "Observation",
            "o",
            &[reference("subject", "p1"), label.clone()]
        ));
        let glass = restriction(&["p1"], &[("urn:conf", "R")], true);
        assert!(admits_rows(
            &glass,
            "Observation",
            "o",
            &[reference("subject", "p1"), label]
        ));
        assert!(!admits_rows(&r, "Practitioner", "dr", &[]));
    }

    fn withheld(patients: Patients, what: Withholding) -> Restriction {
        Restriction::consent(vec![Withheld { patients, what }])
    }

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn consent_adds_one_probe_per_withholding_and_nothing_outside_the_compartment() {
        let record = withheld(
            Patients::Of(ids(&["p1"])),
            Withholding::RecordExcept(Selector::default()),
        );
        let mut sql = Sql::default();
        let conds = conditions(
            &mut sql,
            &record,
            Some("Encounter"),
            &[],
            "r",
            &aliases(),
            true,
        );
        assert_eq!(conds.len(), 1);
        assert!(
            conds[0].starts_with(
                "NOT (EXISTS (SELECT 1 FROM idx_reference z1 WHERE z1.rid = r.rid \
                 AND z1.target_type = $2 AND z1.target_id IN ($1) AND z1.res_type = $3"
            ),
            "{}",
            conds[0]
        );
        // A type outside the compartment, a nobody, and nothing withheld: nothing added.
        let mut sql = Sql::default();
        assert!(
            conditions(
                &mut sql,
                &record,
                Some("Practitioner"),
                &[],
                "r",
                &aliases(),
                true
            )
            .is_empty()
        );
        let nobody = withheld(
            Patients::Of(BTreeSet::new()),
            Withholding::RecordExcept(Selector::default()),
        );
        assert!(
            conditions(
                &mut sql,
                &nobody,
                Some("Observation"),
                &[],
                "r",
                &aliases(),
                true
            )
            .is_empty()
        );
        let nothing = withheld(
            Patients::AllBut(BTreeSet::new()),
            Withholding::Data(Selector::default()),
        );
        assert!(conditions(&mut sql, &nothing, None, &[], "r", &aliases(), true).is_empty());
        assert!(sql.params.is_empty());
        // Labels of everyone but some: a NOT IN probe and a label probe.
        let labels = withheld(
            Patients::AllBut(ids(&["p3"])),
            Withholding::Data(Selector {
                labels: [SecurityLabel::new("urn:act", "HIV")].into(),
                ..Selector::default()
            }),
        );
        let mut sql = Sql::default();
        let conds = conditions(
            &mut sql,
            &labels,
            Some("Patient"),
            &[],
            "r",
            &aliases(),
            false,
        );
        assert_eq!(
            conds,
            [
                "NOT (((r.res_type = $5 AND r.res_id NOT IN ($4)) OR EXISTS (SELECT 1 FROM \
              idx_reference z1 WHERE z1.rid = r.rid AND z1.target_type = $5 AND z1.target_id \
              NOT IN ($4) AND z1.res_type = $6 AND z1.param IN ($7))) AND (EXISTS (SELECT 1 \
              FROM idx_token w1 WHERE w1.rid = r.rid AND w1.param = $1 AND ((w1.system = $2 \
              AND w1.code = $3)))))"
            ]
        );
        // Break-glass: nothing withheld.
        let mut glass = labels.clone();
        glass.break_glass = true;
        assert!(
            conditions(
                &mut Sql::default(),
                &glass,
                None,
                &[],
                "r",
                &aliases(),
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn consent_over_index_rows_matches_the_sql() {
        let subject = |target: &str| IndexRow {
            param: "subject".into(),
            group: None,
            value: IndexValue::Reference {
                target_type: Some("Patient".into()),
                target_id: Some(target.into()),
                url: format!("Patient/{target}"),
            },
        };
        let hiv = IndexRow {
            param: "_security".into(),
            group: None,
            value: IndexValue::Token {
                system: "urn:act".into(),
                code: "HIV".into(),
                display: None,
            },
        };
        let record = withheld(
            Patients::Of(ids(&["p1"])),
            Withholding::RecordExcept(Selector {
                types: ids(&["Immunization"]),
                ..Selector::default()
            }),
        );
        assert!(!admits_rows(&record, "Patient", "p1", &[]));
        assert!(!admits_rows(&record, "Observation", "o", &[subject("p1")]));
        assert!(admits_rows(&record, "Immunization", "i", &[subject("p1")]));
        assert!(admits_rows(&record, "Observation", "o", &[subject("p2")]));
        assert!(admits_rows(&record, "Practitioner", "dr", &[]));
        let labels = withheld(
            Patients::AllBut(ids(&["p3"])),
            Withholding::Data(Selector {
                labels: [SecurityLabel::new("urn:act", "HIV")].into(),
                resources: ids(&["Observation/x"]),
                ..Selector::default()
            }),
        );
        assert!(!admits_rows(
            &labels,
            "Observation",
            "o",
            &[subject("p1"), hiv.clone()]
        ));
        assert!(admits_rows(
            &labels,
            "Observation",
            "o",
            &[subject("p3"), hiv.clone()]
        ));
        assert!(admits_rows(&labels, "Observation", "o", &[subject("p1")]));
        assert!(!admits_rows(&labels, "Observation", "x", &[subject("p1")]));
        let mut glass = labels.clone();
        glass.break_glass = true;
        assert!(admits_rows(
            &glass,
            "Observation",
            "o",
            &[subject("p1"), hiv]
        ));
    }

    #[test]
    fn only_a_restricted_caller_is_refused_the_feeds() {
        let open = RequestContext::system();
        assert!(refuse_unscoped(&open, "history").is_ok());
        let restricted = open.clone().with_access(AccessPolicy::patients(["p1"]));
        let err = refuse_unscoped(&restricted, "history").unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Forbidden);
        assert!(refuse_unscoped(&restricted.internal(), "history").is_ok());
    }
}
