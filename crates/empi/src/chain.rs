//! The chain guard: whether two records may end up in one identity when a link elsewhere
//! (A≈B, B≈C) would put them there. Each pair of an identity is checked for a [`Conflict`];
//! a conflict stops the chain unless another member of the identity, a *witness*, shows it
//! to be a data-entry error rather than two people:
//!
//! - **different birth orders** are never explained;
//! - **conflicting national person numbers** (or one digit apart under different given
//!   names: a twin's consecutive number) are explained only by a witness whose number
//!   agrees with both of them, exactly or but for two neighbouring digits swapped (two
//!   copies of one number each with its own keying error; twins' numbers are not that);
//! - **relatives** (the twin pattern, a household member, a record without any name) are
//!   explained only by a witness compatible with both that a national or facility number
//!   ties to one of them and whose given name agrees with the other's: it carries one's name
//!   and the other's number, so the given name that differs is a replaced value, not a
//!   sibling's (twins do not share a person number; a record of one twin without a birth
//!   date, tied to that twin, explains nothing about the other), or by a witness compatible
//!   with both whose given name agrees with each of theirs (呉実 / クミ against 呉実 with a
//!   mistyped reading and 公望 / クミ: two errors of one name);
//! - an **unlikely** pair (below the review threshold, nothing else wrong) is explained by
//!   any witness compatible with both (a moved record and one with a replaced birth date
//!   disagree on much, yet each is clearly the third).

use serde::Serialize;

use crate::compare::{Comparison, Field, compare, level};
use crate::identifier::{Agreement, IdentifierKind};
use crate::record::Record;
use crate::score::{Note, Scorer, probability};

/// Why two records cannot be one person as they stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    /// Both state a birth order and they differ.
    DifferentBirthOrder,
    /// Their national person numbers differ by more than a keying error.
    NationalNumbers,
    /// The twin, household-member or nameless pattern, with no identifier lifting it.
    Relatives,
    /// Nothing else, but the pair alone is below the review threshold.
    Unlikely,
}

impl Conflict {
    /// A short code (`different_birth_order`, `national_numbers`, `relatives`, `unlikely`).
    pub fn code(self) -> &'static str {
        match self {
            Conflict::DifferentBirthOrder => "different_birth_order",
            Conflict::NationalNumbers => "national_numbers",
            Conflict::Relatives => "relatives",
            Conflict::Unlikely => "unlikely",
        }
    }
}

/// The guards that say "relatives, not one person" until an identifier lifts them.
const RELATIVE_GUARDS: [Note; 3] = [Note::PossibleTwin, Note::HouseholdMember, Note::Nameless];

fn national(c: &Comparison) -> Option<Agreement> {
    c.identifier
        .as_ref()
        .filter(|e| e.kind == IdentifierKind::National)
        .map(|e| e.agreement)
}

/// A national or facility number ties the two records: the same value, or a national number
/// with two neighbouring digits swapped.
fn tied(c: &Comparison) -> bool {
    c.identifier.as_ref().is_some_and(|e| {
        e.kind != IdentifierKind::Shared
            && (e.agreement == Agreement::Exact
                || (e.kind == IdentifierKind::National
                    && e.agreement == Agreement::NeighboursSwapped))
    })
}

/// The same given name, or a nickname of it.
pub(crate) fn same_given(c: &Comparison) -> bool {
    matches!(
        c.levels[Field::Given.index()],
        level::EXACT | level::GIVEN_NICKNAME
    )
}

/// The given names agree: the same, a nickname, or a close spelling or one reading (an
/// initial is not enough: "M" agrees with Mary and with her twin Maude).
fn given_agrees(c: &Comparison) -> bool {
    matches!(
        c.levels[Field::Given.index()],
        level::EXACT | level::GIVEN_NICKNAME | level::GIVEN_CLOSE
    )
}

impl Scorer<'_> {
    /// The conflict between two records, the most serious first, or `None` when they may be
    /// one person.
    pub fn conflict(&self, a: &Record, b: &Record) -> Option<Conflict> {
        let c = compare(a, b, &self.model.identifier_kinds);
        if c.different_birth_order {
            return Some(Conflict::DifferentBirthOrder);
        }
        match national(&c) {
            Some(Agreement::Conflict) => return Some(Conflict::NationalNumbers),
            // One digit off under another given name: a twin's consecutive number.
            Some(Agreement::OneSubstituted) if !same_given(&c) => {
                return Some(Conflict::NationalNumbers);
            }
            _ => {}
        }
        let relatives = c.clear_twin || c.household_member || c.nameless;
        if relatives {
            let lifted = self.lifts(a, &c);
            let held = RELATIVE_GUARDS.iter().any(|g| {
                let applies = match g {
                    Note::PossibleTwin => c.clear_twin,
                    Note::HouseholdMember => c.household_member,
                    _ => c.nameless,
                };
                applies && !lifted.iter().any(|l| l.guard == *g)
            });
            if held {
                return Some(Conflict::Relatives);
            }
        }
        if probability(self.total(a, &c)) < self.model.thresholds.review {
            return Some(Conflict::Unlikely);
        }
        None
    }

    /// Whether `witness`, a third member of the identity, shows `conflict` between `a` and
    /// `b` to be a data-entry error (the rules are the module's).
    pub fn explains(&self, witness: &Record, a: &Record, b: &Record, conflict: Conflict) -> bool {
        let kinds = &self.model.identifier_kinds;
        match conflict {
            Conflict::DifferentBirthOrder => false,
            Conflict::NationalNumbers => {
                let close = |x: &Record| {
                    matches!(
                        national(&compare(witness, x, kinds)),
                        Some(Agreement::Exact | Agreement::NeighboursSwapped)
                    )
                };
                close(a) && close(b)
            }
            Conflict::Relatives => {
                let (ca, cb) = (compare(witness, a, kinds), compare(witness, b, kinds));
                ((tied(&ca) && given_agrees(&cb))
                    || (tied(&cb) && given_agrees(&ca))
                    || (given_agrees(&ca) && given_agrees(&cb)))
                    && self.compatible(witness, a)
                    && self.compatible(witness, b)
            }
            Conflict::Unlikely => self.compatible(witness, a) && self.compatible(witness, b),
        }
    }

    /// Whether `a` and `b` may be in one identity whose other members are `witnesses`: no
    /// conflict, or one that a witness explains. Returns the unexplained conflict.
    pub fn chain_conflict<'r>(
        &self,
        a: &Record,
        b: &Record,
        witnesses: impl IntoIterator<Item = &'r Record>,
    ) -> Option<Conflict> {
        let conflict = self.conflict(a, b)?;
        let explained = witnesses
            .into_iter()
            .filter(|w| !std::ptr::eq(*w, a) && !std::ptr::eq(*w, b))
            .any(|w| self.explains(w, a, b, conflict));
        (!explained).then_some(conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterConfig, cluster};
    use crate::identifier::US_SSN;
    use crate::model::Model;
    use crate::normalize::Date;
    use crate::record::Gender;

    fn rec(id: &str, given: &str, birth: &str, ssn: Option<&str>) -> Record {
        Record {
            id: id.into(),
            given: vec![given.into()],
            family: vec!["koch".into()],
            birth: Date::parse(birth),
            gender: Some(Gender::Female),
            phones: vec!["5551624456".into()],
            line: Some("1 main st".into()),
            postcode: Some("66780".into()),
            identifiers: ssn
                .map(|s| vec![(US_SSN.to_owned(), s.to_owned())])
                .unwrap_or_default(),
            ..Record::default()
        }
    }

    fn one_cluster(records: &[Record]) -> bool {
        let model = Model::default();
        let config = ClusterConfig {
            threads: 1,
            ..ClusterConfig::default()
        };
        let result = cluster(records, &model, &config, &|_: u64, _: u64| {});
        result.cluster_of.iter().all(|c| *c == result.cluster_of[0])
    }

    /// Mary's record, a copy with a typo and no SSN, and a copy whose given name was replaced
    /// by Alice under Mary's SSN: the typo and Alice look like twins, but Mary carries the
    /// typo's name and Alice's number, so the merge goes ahead.
    #[test]
    fn one_persons_replaced_given_name_does_not_block_a_merge() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mary = rec("mary", "mary", "1990-01-02", Some("999538547"));
        let typo = rec("typo", "marry", "1990-01-02", None);
        let alice = rec("alice", "alice", "1990-01-02", Some("999538547"));
        assert_eq!(s.conflict(&typo, &alice), Some(Conflict::Relatives));
        assert!(s.explains(&mary, &typo, &alice, Conflict::Relatives));
        assert_eq!(s.chain_conflict(&typo, &alice, [&mary]), None);
        assert!(one_cluster(&[mary, typo, alice]));
    }

    /// A twin without an SSN, and a copy of her sister's record without a birth date (so it
    /// does not look like a twin of her): the copy explains nothing, the twins stay apart. A
    /// twin's consecutive number under her own name is a conflict of numbers.
    #[test]
    fn a_twins_copy_without_birth_date_does_not_chain_the_twins() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mary = rec("mary", "mary", "1990-01-02", Some("999538547"));
        let mut copy = rec("copy", "mary", "", Some("999538547"));
        copy.birth = None;
        let twin = rec("twin", "alice", "1990-01-02", None);
        assert_eq!(s.conflict(&mary, &twin), Some(Conflict::Relatives));
        assert!(
            s.compatible(&copy, &twin),
            "the copy alone does not tell them apart"
        );
        assert!(s.chain_conflict(&mary, &twin, [&copy]).is_some());
        assert!(!one_cluster(&[mary.clone(), copy.clone(), twin]));
        let numbered = rec("twin", "alice", "1990-01-02", Some("999538548"));
        assert_eq!(
            s.conflict(&copy, &numbered),
            Some(Conflict::NationalNumbers)
        );
        assert!(!one_cluster(&[mary, copy, numbered]));
    }

    /// Two copies of one SSN, each with its own neighbouring digits swapped, conflict with
    /// each other; the original number explains it, a neighbouring number does not.
    #[test]
    fn keying_errors_of_one_number_are_explained_by_the_number() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let original = rec("o", "mary", "1990-01-02", Some("999538547"));
        let left = rec("l", "mary", "1990-01-02", Some("999538574"));
        let right = rec("r", "mary", "1990-01-02", Some("995938547"));
        assert_eq!(s.conflict(&left, &right), Some(Conflict::NationalNumbers));
        assert_eq!(s.chain_conflict(&left, &right, [&original]), None);
        let neighbour = rec("n", "mary", "1990-01-02", Some("999538548"));
        assert_eq!(
            s.chain_conflict(&left, &right, [&neighbour]),
            Some(Conflict::NationalNumbers)
        );
        assert!(one_cluster(&[original, left, right]));
    }

    /// Different stated birth orders are never explained; a moved record and one with a
    /// replaced birth date disagree on much, yet the original vouches for both.
    #[test]
    fn birth_order_is_final_and_unlikely_pairs_need_a_witness() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mut first = rec("a", "mary", "1990-01-02", None);
        let mut second = first.clone();
        first.multiple_birth = Some(1);
        second.multiple_birth = Some(2);
        let witness = rec("w", "mary", "1990-01-02", None);
        assert_eq!(
            s.chain_conflict(&first, &second, [&witness]),
            Some(Conflict::DifferentBirthOrder)
        );
        let original = rec("o", "mary", "1990-01-02", Some("999538547"));
        let mut moved = rec("m", "mary", "1990-01-02", None);
        moved.phones = vec!["5559990000".into()];
        moved.line = Some("9 elm st".into());
        moved.postcode = Some("11111".into());
        let replaced = rec("b", "mary", "1971-05-12", Some("999538547"));
        assert_eq!(s.conflict(&moved, &replaced), Some(Conflict::Unlikely));
        assert_eq!(s.chain_conflict(&moved, &replaced, [&original]), None);
        assert_eq!(Conflict::Unlikely.code(), "unlikely");
    }
}
