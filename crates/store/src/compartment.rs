//! Which Patient compartments a written version is in: the ids recorded beside its change-feed
//! row (`change_compartment`), so that the feed and history can later be filtered by patient.
//!
//! The answer comes from the same place a compartment search looks (`Filter::Compartment`):
//! the version's reference index rows whose parameter is one of its type's Patient-compartment
//! parameters (FHIR's CompartmentDefinition, `fhir::r4().patient_compartment_params`) and whose
//! target is a `Patient`; and a Patient is in its own compartment. A deletion is in the
//! compartments of the version it deleted. What an extractor does not index (a store opened
//! with `BasicExtractor` has no reference rows) is in no compartment here either, exactly as a
//! compartment search would not find it.

use std::collections::BTreeSet;

use crate::index::{IndexRow, IndexValue};

/// The Patient ids whose compartments a `resource_type/id` version with these index rows is
/// in, sorted and without repeats.
pub(crate) fn of_rows(resource_type: &str, id: &str, rows: &[IndexRow]) -> Vec<String> {
    of_references(
        resource_type,
        id,
        rows.iter().filter_map(|row| match &row.value {
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(target),
                ..
            } if t == "Patient" => Some((row.param.as_str(), target.as_str())),
            _ => None,
        }),
    )
}

/// The same from `(parameter, Patient id)` pairs: the reference rows with a `Patient` target
/// (as read back from `idx_reference` for a deletion).
pub(crate) fn of_references<'a>(
    resource_type: &str,
    id: &str,
    patient_references: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<String> {
    let params = fhir::r4().patient_compartment_params(resource_type);
    let mut out: BTreeSet<&str> = patient_references
        .into_iter()
        .filter(|(param, _)| params.iter().any(|p| p == param))
        .map(|(_, target)| target)
        .collect();
    if resource_type == "Patient" {
        out.insert(id);
    }
    out.into_iter().map(str::to_owned).collect()
}

/// The statement that gives the change rows written before compartments were recorded
/// theirs, where that is cheap (run once, by the migration that adds the table; the same text
/// on both backends):
/// - every version of a Patient is in the Patient's own compartment;
/// - the current version of every live resource is in the compartments its reference index
///   rows name (index rows describe current versions only).
///
/// Older versions of other resources, and deletions of them, keep none: which Patients they
/// named would mean evaluating the search parameters on every stored version.
pub(crate) fn backfill_sql() -> String {
    let pairs: Vec<String> = fhir::r4()
        .patient_compartment()
        .flat_map(|(t, params)| params.iter().map(move |p| format!("('{t}', '{p}')")))
        .collect();
    format!(
        "INSERT INTO change_compartment (version_seq, patient) \
         SELECT v.seq, v.res_id FROM resource_version v WHERE v.res_type = 'Patient' \
         UNION \
         SELECT r.seq, x.target_id FROM idx_reference x JOIN resource r ON r.rid = x.rid \
         WHERE x.target_type = 'Patient' AND x.target_id IS NOT NULL \
         AND (x.res_type, x.param) IN (VALUES {})",
        pairs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(param: &str, target: &str) -> IndexRow {
        IndexRow {
            param: param.into(),
            group: None,
            value: IndexValue::reference(target).expect("a reference"),
        }
    }

    #[test]
    fn compartments_come_from_compartment_parameters_naming_patients() {
        let rows = [
            reference("subject", "Patient/p1"),
            reference("patient", "Patient/p1"),
            reference("performer", "Patient/p2"),
            reference("performer", "Practitioner/dr"),
            // `encounter` is not an Observation's compartment parameter.
            reference("encounter", "Patient/p3"),
        ];
        assert_eq!(of_rows("Observation", "o1", &rows), ["p1", "p2"]);
        assert!(of_rows("Practitioner", "dr", &[]).is_empty());
        assert_eq!(
            of_rows("Patient", "p9", &[reference("link", "Patient/p4")]),
            ["p4", "p9"]
        );
    }

    #[test]
    fn the_backfill_lists_every_compartment_parameter() {
        let sql = backfill_sql();
        assert!(sql.contains("('Observation', 'subject')"), "{sql}");
        assert!(sql.contains("('Patient', 'link')"), "{sql}");
        assert!(!sql.contains("'Practitioner'"), "{sql}");
    }
}
