//! Identifier kinds: which identifier systems name one person for life (national person
//! numbers), which name one registration at one facility (record numbers, MRNs), and which
//! may be shared by several people (an insurance card number of a household). The kind decides
//! what agreement and disagreement of two values mean, and whether agreement may lift the
//! twin and birth-date guards (see `score`). The [`IdentifierKinds`] are part of the model file.

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// What an identifier system names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// May be shared by several people (a family's insurance card, a household phone), or not
    /// known: agreement counts as evidence but never lifts a guard.
    Shared,
    /// One registration at one facility (an MRN): agreement lifts the guards, disagreement is
    /// weak evidence (one person registered twice at one hospital is what an EMPI finds).
    Facility,
    /// One per person for life (a social security number, a national person number, a
    /// passport): agreement lifts the guards, disagreement is strong evidence against.
    National,
}

/// Identifier systems by kind, as system URIs or URI prefixes (an entry ending in `*` matches
/// every system that starts with the rest, e.g. JP Core's record numbers, whose system is a
/// fixed OID followed by the facility code). Identifiers whose `type` is `MR` are facility
/// record numbers whatever their system. Any other system is [`IdentifierKind::Shared`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifierKinds {
    /// National person numbers.
    pub national: Vec<String>,
    /// Facility record numbers.
    pub facility: Vec<String>,
    /// Systems known to be shared (listed for documentation; unknown systems are shared too).
    pub shared: Vec<String>,
    /// Weight in bits of two different values in one facility system (weak evidence against).
    pub facility_conflict_weight: f64,
}

/// US Social Security Number. (JP Core defines no identifier system for the individual
/// number, マイナンバー, whose use as a medical record key the law restricts; a deployment that
/// holds one lists its own system under `national`.)
pub const US_SSN: &str = "http://hl7.org/fhir/sid/us-ssn";
/// JP Core patient record number: this OID followed by the 10-digit facility code.
pub const JP_CORE_MRN_PREFIX: &str = "urn:oid:1.2.392.100495.20.3.51.1";

impl Default for IdentifierKinds {
    fn default() -> Self {
        IdentifierKinds {
            national: vec![US_SSN.to_owned()],
            facility: vec![format!("{JP_CORE_MRN_PREFIX}*")],
            shared: Vec::new(),
            facility_conflict_weight: -1.0,
        }
    }
}

fn listed(list: &[String], system: &str) -> bool {
    list.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => system.starts_with(prefix),
        None => entry == system,
    })
}

impl IdentifierKinds {
    /// The kind of `system`; `typed_mr` when the identifier's `type` is `MR`.
    pub fn kind(&self, system: &str, typed_mr: bool) -> IdentifierKind {
        if listed(&self.national, system) {
            IdentifierKind::National
        } else if listed(&self.shared, system) {
            IdentifierKind::Shared
        } else if typed_mr || listed(&self.facility, system) {
            IdentifierKind::Facility
        } else {
            IdentifierKind::Shared
        }
    }
}

/// How two values of one system compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agreement {
    /// The same value.
    Exact,
    /// One keying error apart: two neighbouring characters swapped.
    NeighboursSwapped,
    /// One keying error apart: one character substituted. Twins are often issued consecutive
    /// numbers, which look like this, so it never lifts the twin guard.
    OneSubstituted,
    /// Different values.
    Conflict,
}

/// The deciding identifier evidence of a pair: the strongest kind the two records share a
/// system of (national before facility before shared), and how its values compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierEvidence {
    /// The kind of the deciding system.
    pub kind: IdentifierKind,
    /// The deciding system.
    pub system: String,
    /// How the values compare (the best over the values the two records hold in it).
    pub agreement: Agreement,
}

/// The keying error that turns one value into the other, if they are one apart: one
/// substitution or two neighbouring characters swapped (same length either way).
pub fn keying_error(a: &str, b: &str) -> Option<Agreement> {
    // Compared for most candidate pairs that share a national system: no allocation.
    let mut differing: [(usize, char, char); 2] = [(0, ' ', ' '); 2];
    let mut count = 0;
    let (mut xs, mut ys) = (a.chars(), b.chars());
    let mut i = 0;
    loop {
        match (xs.next(), ys.next()) {
            (Some(x), Some(y)) => {
                if x != y {
                    if count == differing.len() {
                        return None;
                    }
                    differing[count] = (i, x, y);
                    count += 1;
                }
            }
            (None, None) => break,
            // Of different lengths.
            _ => return None,
        }
        i += 1;
    }
    match &differing[..count] {
        [_] => Some(Agreement::OneSubstituted),
        [(i, xi, yi), (j, xj, yj)] if *j == i + 1 && xi == yj && xj == yi => {
            Some(Agreement::NeighboursSwapped)
        }
        _ => None,
    }
}

/// [`IdentifierEvidence`] with its system borrowed from the records: what a scorer bounding a
/// pair needs, without copying the system for the many pairs it leaves out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deciding<'a> {
    pub kind: IdentifierKind,
    pub system: &'a str,
    pub agreement: Agreement,
}

impl Deciding<'_> {
    pub(crate) fn owned(self) -> IdentifierEvidence {
        IdentifierEvidence {
            kind: self.kind,
            system: self.system.to_owned(),
            agreement: self.agreement,
        }
    }
}

/// The deciding identifier evidence of two records, if they share a system (its system
/// borrowed from `a`).
pub(crate) fn deciding<'a>(
    a: &'a Record,
    b: &Record,
    kinds: &IdentifierKinds,
) -> Option<Deciding<'a>> {
    let rank = |kind: IdentifierKind, agreement: Agreement| {
        let agreement = match agreement {
            Agreement::Exact => 3,
            Agreement::NeighboursSwapped => 2,
            Agreement::OneSubstituted => 1,
            Agreement::Conflict => 0,
        };
        (kind, agreement)
    };
    let mut best: Option<Deciding<'a>> = None;
    for (sa, va) in &a.identifiers {
        for (sb, vb) in &b.identifiers {
            if sa != sb {
                continue;
            }
            let typed_mr =
                a.record_number_systems.contains(sa) || b.record_number_systems.contains(sb);
            let kind = kinds.kind(sa, typed_mr);
            let agreement = if va == vb {
                Agreement::Exact
            } else if kind == IdentifierKind::National {
                keying_error(va, vb).unwrap_or(Agreement::Conflict)
            } else {
                Agreement::Conflict
            };
            if best.is_none_or(|d| rank(kind, agreement) > rank(d.kind, d.agreement)) {
                best = Some(Deciding {
                    kind,
                    system: sa,
                    agreement,
                });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_system_prefix_and_type() {
        let k = IdentifierKinds::default();
        assert_eq!(k.kind(US_SSN, false), IdentifierKind::National);
        assert_eq!(
            k.kind("urn:oid:1.2.392.100495.20.3.51.11311234567", false),
            IdentifierKind::Facility
        );
        assert_eq!(k.kind("urn:example:mrn", true), IdentifierKind::Facility);
        assert_eq!(k.kind("urn:example:card", false), IdentifierKind::Shared);
    }

    #[test]
    fn keying_errors_are_one_substitution_or_one_neighbour_swap() {
        let k = keying_error;
        assert_eq!(k("123456789", "123456780"), Some(Agreement::OneSubstituted));
        assert_eq!(
            k("123456789", "123465789"),
            Some(Agreement::NeighboursSwapped)
        );
        assert_eq!(k("123456789", "123456789"), None);
        assert_eq!(k("123456789", "923456781"), None);
        assert_eq!(k("123456789", "12345678"), None);
        assert_eq!(k("123456789", "124356798"), None);
    }

    #[test]
    fn national_evidence_decides_before_facility() {
        let k = IdentifierKinds::default();
        let mut a = Record::default();
        let mut b = Record::default();
        a.identifiers = vec![
            ("urn:mrn".into(), "1".into()),
            (US_SSN.into(), "999-53-8547".into()),
        ];
        a.record_number_systems = vec!["urn:mrn".into()];
        b.identifiers = vec![
            ("urn:mrn".into(), "1".into()),
            (US_SSN.into(), "999-53-8574".into()),
        ];
        let e = deciding(&a, &b, &k).unwrap();
        assert_eq!(e.kind, IdentifierKind::National);
        assert_eq!(e.agreement, Agreement::NeighboursSwapped);
        b.identifiers.truncate(1);
        let e = deciding(&a, &b, &k).unwrap();
        assert_eq!(
            (e.kind, e.agreement),
            (IdentifierKind::Facility, Agreement::Exact)
        );
    }
}
