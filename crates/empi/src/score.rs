//! Scoring a pair: Fellegi–Sunter weights from the [`Model`], exact-name weights adjusted by
//! term frequency, the guards (twins, birth order), the three-way classification, and the
//! per-field explanation that every stored link and review item carries.

use serde::{Deserialize, Serialize};

use crate::compare::{Cheap, Comparison, Field, compare, compare_address, compare_names, level};
use crate::hashing::{FxHashMap, key_hash};
use crate::identifier::{Agreement, IdentifierKind};
use crate::model::Model;
use crate::record::Record;

/// How often each (normalised) given and family name occurs in the indexed population.
#[derive(Debug, Clone, Default)]
pub struct TermFrequencies {
    given: FxHashMap<u64, u32>,
    family: FxHashMap<u64, u32>,
    total: u64,
}

/// Below this population the counts are too noisy to adjust weights.
const TF_MIN_POPULATION: u64 = 500;

impl TermFrequencies {
    /// Counts a record's first given and primary family name.
    pub fn add(&mut self, r: &Record) {
        self.total += 1;
        if let Some(g) = r.given.first() {
            *self.given.entry(key_hash(g.as_str())).or_default() += 1;
        }
        if let Some(f) = r.family.first().or(r.family_kana.as_ref()) {
            *self.family.entry(key_hash(f.as_str())).or_default() += 1;
        }
    }

    /// Stops counting a record (removed, or about to be re-added with new values).
    pub fn remove(&mut self, r: &Record) {
        self.total = self.total.saturating_sub(1);
        let down = |map: &mut FxHashMap<u64, u32>, value: &str| {
            let k = key_hash(value);
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        };
        if let Some(g) = r.given.first() {
            down(&mut self.given, g.as_str());
        }
        if let Some(f) = r.family.first().or(r.family_kana.as_ref()) {
            down(&mut self.family, f.as_str());
        }
    }

    /// Records counted.
    pub fn population(&self) -> u64 {
        self.total
    }

    fn frequency(&self, map: &FxHashMap<u64, u32>, value: &str) -> Option<f64> {
        if self.total < TF_MIN_POPULATION {
            return None;
        }
        let count = map.get(&key_hash(value)).copied().unwrap_or(0).max(1);
        Some(f64::from(count) / self.total as f64)
    }
}

/// What the scorer noticed beyond the field weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// Given and family names were written the other way round in one record.
    NamesSwapped,
    /// Same family name and birth date, different given name: never linked automatically.
    PossibleTwin,
    /// Both records state different birth orders: never a match.
    DifferentBirthOrder,
    /// Birth dates more than a keying error apart: never linked automatically.
    BirthDatesConflict,
    /// Same family name, different birth dates, other given names (or of the other sex, not
    /// the same given name): two members of one household; never linked automatically.
    HouseholdMember,
    /// One record has no name at all: never linked automatically.
    Nameless,
}

/// A guard an identifier lifted, and why: the identifier says the two records are one person
/// (twins do not share a person number; a parent and a child of one name do not share one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardLift {
    /// The guard lifted ([`Note::PossibleTwin`], [`Note::BirthDatesConflict`],
    /// [`Note::HouseholdMember`] or [`Note::Nameless`]).
    pub guard: Note,
    /// The kind of the identifier system that lifted it.
    pub kind: IdentifierKind,
    /// The system.
    pub system: String,
    /// How the two values compare (exact, or a national number one keying error off with
    /// the other fields alone at least probable; a substituted character lifts only the
    /// birth-date guard, as twins are often issued consecutive numbers).
    pub agreement: Agreement,
    /// The reason in words.
    pub reason: String,
}

/// The three outcomes of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchClass {
    /// Below the review threshold (or vetoed by a guard).
    NoMatch,
    /// Probable but uncertain: a human decides.
    Review,
    /// Same person: link automatically.
    Link,
}

/// The level shown for identifiers when both records have some but share no system: they
/// are not comparable (weight 0, like missing, but not missing).
pub const NOT_COMPARABLE: &str = "not_comparable_different_systems";

/// One field's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldScore {
    /// The field.
    pub field: Field,
    /// Agreement level name (`exact`, `nickname`, `day_month_swapped`, ...; for identifiers
    /// of different systems [`NOT_COMPARABLE`]).
    pub level: String,
    /// Weight in bits (log2 of the likelihood ratio), term-frequency adjusted.
    pub weight: f64,
    /// The value compared on the left record (normalised), if any.
    pub left: Option<String>,
    /// The value compared on the right record (normalised), if any.
    pub right: Option<String>,
}

/// A scored pair with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Total match weight in bits: prior log-odds plus the field weights.
    pub weight: f64,
    /// Posterior match probability.
    pub probability: f64,
    /// Outcome under the model's thresholds and guards.
    pub class: MatchClass,
    /// Per-field explanation, in field order.
    pub fields: Vec<FieldScore>,
    /// Guards and observations.
    pub notes: Vec<Note>,
    /// Guards among `notes` that an identifier lifted, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifted: Vec<GuardLift>,
}

/// Scores pairs with a model and (optionally) population term frequencies.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    /// The model.
    pub model: &'a Model,
    /// Name frequencies, when known.
    pub tf: Option<&'a TermFrequencies>,
}

/// A scorer's model, reduced to what bounds a pair's weight from its cheap fields
/// ([`Scorer::quick_if_reviewable`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReviewBound {
    /// The prior plus the best weights the names can add.
    prior_and_best_names: f64,
    /// The best weight the address can add.
    best_address: f64,
    /// The review threshold (a probability).
    review: f64,
}

/// The weight of identifier evidence `e`, by its kind and agreement. One substituted
/// character of a national number weighs as the given names say (`same_given`; `None`: not
/// compared yet, the higher of the two, as [`Scorer::quick_if_reviewable`] bounds it).
fn identifier_weight(
    model: &Model,
    e: Option<(IdentifierKind, Agreement)>,
    same_given: Option<bool>,
) -> f64 {
    let Some((kind, agreement)) = e else {
        return 0.0;
    };
    let agree = model.weight(Field::Identifier, level::EXACT);
    let conflict = model.weight(Field::Identifier, level::IDENTIFIER_CONFLICT);
    match (kind, agreement) {
        (_, Agreement::Exact) => agree,
        // A twin's consecutive number under another given name (Leann / Leanne): no
        // keying error of one number, two numbers.
        (IdentifierKind::National, Agreement::OneSubstituted) => match same_given {
            Some(false) => conflict,
            Some(true) => agree / 2.0,
            None => conflict.max(agree / 2.0),
        },
        // One keying error in a national number: strong, but less than the same value.
        (_, Agreement::NeighboursSwapped | Agreement::OneSubstituted) => agree / 2.0,
        (IdentifierKind::Facility, Agreement::Conflict) => {
            model.identifier_kinds.facility_conflict_weight
        }
        (_, Agreement::Conflict) => conflict,
    }
}

/// Probability from log2 odds.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

impl<'a> Scorer<'a> {
    /// A scorer over `model` and optional term frequencies.
    pub fn new(model: &'a Model, tf: Option<&'a TermFrequencies>) -> Self {
        Scorer { model, tf }
    }

    fn field_weight(&self, field: Field, lvl: u8, value: Option<&str>) -> f64 {
        let base = self.model.weight(field, lvl);
        if lvl != level::EXACT || !self.model.term_frequency {
            return base;
        }
        let (Some(tf), Some(value)) = (self.tf, value) else {
            return base;
        };
        let freq = match field {
            Field::Given => tf.frequency(&tf.given, value),
            Field::Family => tf.frequency(&tf.family, value),
            _ => None,
        };
        let Some(freq) = freq else { return base };
        let params = &self.model.fields[field.index()];
        let adjustment = (params.u[1] / freq).log2();
        let bound = self.model.tf_max_adjustment;
        base + adjustment.clamp(-bound, bound)
    }

    /// The weight of the deciding identifier evidence: by its kind and agreement.
    fn identifier_weight(&self, c: &Comparison) -> f64 {
        identifier_weight(
            self.model,
            c.identifier.as_ref().map(|e| (e.kind, e.agreement)),
            Some(crate::chain::same_given(c)),
        )
    }

    /// Weight of the fields other than the identifier, prior included.
    fn other_fields(&self, a: &Record, c: &Comparison) -> f64 {
        let mut w = self.model.prior_weight();
        for field in Field::ALL {
            if field == Field::Identifier {
                continue;
            }
            let lvl = c.levels[field.index()];
            let value = match field {
                Field::Given => a.given.first().map(String::as_str),
                Field::Family => a
                    .family
                    .first()
                    .or(a.family_kana.as_ref())
                    .map(String::as_str),
                _ => None,
            };
            w += self.field_weight(field, lvl, value);
        }
        w
    }

    pub(crate) fn total(&self, a: &Record, c: &Comparison) -> f64 {
        self.other_fields(a, c) + self.identifier_weight(c)
    }

    /// The guards the identifier evidence lifts: exact agreement of a national or facility
    /// number, or a national number one keying error off when the other fields alone reach
    /// the review threshold (only neighbours swapped lift the twin guard: twins are often
    /// issued consecutive numbers, one substitution apart). Shared identifiers never lift one.
    pub(crate) fn lifts(&self, a: &Record, c: &Comparison) -> Vec<GuardLift> {
        let Some(e) = &c.identifier else {
            return Vec::new();
        };
        if !(c.possible_twin || c.birth_dates_conflict || c.household_member || c.nameless) {
            return Vec::new();
        }
        let kind = match e.kind {
            IdentifierKind::National => "national person number",
            IdentifierKind::Facility => "facility record number",
            IdentifierKind::Shared => return Vec::new(),
        };
        let others_agree = || probability(self.other_fields(a, c)) >= self.model.thresholds.review;
        // (what the identifier says, whether it may lift the twin guard)
        let (how, twin) = match e.agreement {
            Agreement::Exact => ("agrees", true),
            Agreement::NeighboursSwapped if others_agree() => (
                "agrees but for two neighbouring characters swapped, and the other fields agree",
                true,
            ),
            // Twins are often issued consecutive numbers: a substitution is no proof against
            // them, and with another given name (Amado / Armando) it is a sibling's number.
            Agreement::OneSubstituted if crate::chain::same_given(c) && others_agree() => (
                "agrees but for one character, the given names agree, and the other fields agree",
                false,
            ),
            _ => return Vec::new(),
        };
        let mut lifted = Vec::new();
        let mut lift = |guard: Note, what: &str| {
            lifted.push(GuardLift {
                guard,
                kind: e.kind,
                system: e.system.clone(),
                agreement: e.agreement,
                reason: format!(
                    "{what} guard lifted: the {kind} ({}) {how}; it names one person",
                    e.system
                ),
            })
        };
        if c.possible_twin && twin {
            lift(Note::PossibleTwin, "twin");
        }
        if c.household_member && twin {
            lift(Note::HouseholdMember, "household-member");
        }
        if c.nameless && twin {
            lift(Note::Nameless, "nameless-record");
        }
        if c.birth_dates_conflict {
            lift(Note::BirthDatesConflict, "birth-date");
        }
        lifted
    }

    fn classify(&self, weight: f64, c: &Comparison, lifted: &[GuardLift]) -> MatchClass {
        let p = probability(weight);
        let t = self.model.thresholds;
        let class = if p >= t.auto_link {
            MatchClass::Link
        } else if p >= t.review {
            MatchClass::Review
        } else {
            MatchClass::NoMatch
        };
        let held = |guard: Note| !lifted.iter().any(|l| l.guard == guard);
        if c.different_birth_order {
            MatchClass::NoMatch
        } else if (c.possible_twin && held(Note::PossibleTwin))
            || (c.birth_dates_conflict && held(Note::BirthDatesConflict))
            || (c.household_member && held(Note::HouseholdMember))
            || (c.nameless && held(Note::Nameless))
        {
            class.min(MatchClass::Review)
        } else {
            class
        }
    }

    /// Weight and class only: the hot path for batch clustering and candidate ranking.
    pub fn quick(&self, a: &Record, b: &Record) -> (f64, MatchClass) {
        self.quick_of(a, &compare(a, b, &self.model.identifier_kinds))
    }

    /// [`Scorer::quick`] of a comparison made.
    fn quick_of(&self, a: &Record, c: &Comparison) -> (f64, MatchClass) {
        let w = self.total(a, c);
        (w, self.classify(w, c, &self.lifts(a, c)))
    }

    /// What [`Scorer::quick_if_reviewable`] needs of the model, worked out once for many
    /// pairs.
    pub(crate) fn review_bound(&self) -> ReviewBound {
        let best = |field: Field| {
            let levels = 0..field.levels().len() as u8;
            let base = levels
                .map(|lvl| self.model.weight(field, lvl))
                .fold(0.0, f64::max);
            // Term frequency moves an exact name's weight by at most the bound either way.
            let names = matches!(field, Field::Given | Field::Family);
            if names && self.model.term_frequency && self.tf.is_some() {
                base + self.model.tf_max_adjustment.abs()
            } else {
                base
            }
        };
        let prior_and_best_names =
            self.model.prior_weight() + best(Field::Given) + best(Field::Family);
        ReviewBound {
            prior_and_best_names,
            best_address: best(Field::Address),
            review: self.model.thresholds.review,
        }
    }

    /// [`Scorer::quick`] for a pair that may reach the review threshold; `None` for one that
    /// cannot, whatever its names and addresses say. Such a pair is no match (guards only
    /// ever lower a class), and deciding so from its birth dates, sexes, phones and
    /// identifiers spares the string comparisons that are most of a comparison's cost: most
    /// of a new record's candidates share a name or a birth date with it and nothing else.
    pub(crate) fn quick_if_reviewable(
        &self,
        bound: &ReviewBound,
        a: &Record,
        b: &Record,
    ) -> Option<(f64, MatchClass)> {
        let mut cheap = Cheap::of(a, b, &self.model.identifier_kinds);
        let at_most = bound.prior_and_best_names
            + self.model.weight(Field::BirthDate, cheap.birth)
            + self.model.weight(Field::Gender, cheap.gender)
            + self.model.weight(Field::Phone, cheap.phone)
            + identifier_weight(
                self.model,
                cheap.evidence.map(|e| (e.kind, e.agreement)),
                None,
            );
        // A margin far above rounding: the bound adds in another order than `total`.
        let below = |w: f64| probability(w + 1e-6) < bound.review;
        // Names and address at their best; then the address as it is (a strong field, and
        // far cheaper than the names).
        if below(at_most + bound.best_address) {
            return None;
        }
        cheap.address = compare_address(a, b);
        if below(at_most + self.model.weight(Field::Address, cheap.address)) {
            return None;
        }
        // What was compared for the bound is not compared again.
        Some(self.quick_of(a, &compare_names(a, b, cheap)))
    }

    /// True when two records may belong to one identity as they stand: no
    /// [`crate::chain::Conflict`] between them (see [`Scorer::conflict`]). Used to stop
    /// transitive chains; a conflict another member explains is the chain module's business.
    pub fn compatible(&self, a: &Record, b: &Record) -> bool {
        self.conflict(a, b).is_none()
    }

    /// The full score with its per-field explanation.
    pub fn score(&self, a: &Record, b: &Record) -> Score {
        let c = compare(a, b, &self.model.identifier_kinds);
        let weight = self.total(a, &c);
        let lifted = self.lifts(a, &c);
        let class = self.classify(weight, &c, &lifted);
        let fields = Field::ALL
            .iter()
            .map(|&field| {
                let lvl = c.levels[field.index()];
                let (left, right) = shown(field, a, b);
                let value = match field {
                    Field::Given => a.given.first().map(String::as_str),
                    Field::Family => a
                        .family
                        .first()
                        .or(a.family_kana.as_ref())
                        .map(String::as_str),
                    _ => None,
                };
                // Identifiers of different systems are not comparable, which is not the
                // same as missing (same weight, 0, but an explanation must not say missing).
                let not_comparable = field == Field::Identifier
                    && lvl == level::MISSING
                    && !a.identifiers.is_empty()
                    && !b.identifiers.is_empty();
                let evidence = c.identifier.as_ref().filter(|_| field == Field::Identifier);
                let level = match evidence {
                    Some(e) => identifier_level(e.kind, e.agreement),
                    None if not_comparable => NOT_COMPARABLE.to_owned(),
                    None => field.levels()[lvl as usize].to_owned(),
                };
                let weight = if field == Field::Identifier {
                    self.identifier_weight(&c)
                } else {
                    self.field_weight(field, lvl, value)
                };
                FieldScore {
                    field,
                    level,
                    weight,
                    left,
                    right,
                }
            })
            .collect();
        let mut notes = Vec::new();
        if c.names_swapped {
            notes.push(Note::NamesSwapped);
        }
        if c.possible_twin {
            notes.push(Note::PossibleTwin);
        }
        if c.different_birth_order {
            notes.push(Note::DifferentBirthOrder);
        }
        if c.birth_dates_conflict {
            notes.push(Note::BirthDatesConflict);
        }
        if c.household_member {
            notes.push(Note::HouseholdMember);
        }
        if c.nameless {
            notes.push(Note::Nameless);
        }
        Score {
            weight,
            probability: probability(weight),
            class,
            fields,
            notes,
            lifted,
        }
    }
}

/// The explanation level of identifier evidence: kind and agreement (`national_agree`,
/// `national_neighbours_swapped`, `facility_conflict`, `shared_agree`, ...).
fn identifier_level(kind: IdentifierKind, agreement: Agreement) -> String {
    let kind = match kind {
        IdentifierKind::National => "national",
        IdentifierKind::Facility => "facility",
        IdentifierKind::Shared => "shared",
    };
    let agreement = match agreement {
        Agreement::Exact => "agree",
        Agreement::NeighboursSwapped => "neighbours_swapped",
        Agreement::OneSubstituted => "one_substituted",
        Agreement::Conflict => "conflict",
    };
    format!("{kind}_{agreement}")
}

fn shown(field: Field, a: &Record, b: &Record) -> (Option<String>, Option<String>) {
    let f = |r: &Record| -> Option<String> {
        match field {
            Field::Given => {
                let mut parts: Vec<&str> = r.given.iter().map(String::as_str).collect();
                parts.extend(r.given_kana.as_deref());
                (!parts.is_empty()).then(|| parts.join(" "))
            }
            Field::Family => {
                let mut parts: Vec<&str> = r.family.iter().map(String::as_str).collect();
                parts.extend(r.family_kana.as_deref());
                (!parts.is_empty()).then(|| parts.join(" "))
            }
            Field::BirthDate => r
                .birth
                .map(|d| d.to_string())
                .or_else(|| r.birth_hash.as_ref().map(|h| format!("hashed {h}"))),
            Field::Gender => r.gender.map(|g| format!("{g:?}").to_lowercase()),
            Field::Phone => (!r.phones.is_empty()).then(|| r.phones.join(" ")),
            Field::Address => {
                let parts: Vec<&str> = r
                    .line
                    .iter()
                    .chain(&r.postcode)
                    .map(String::as_str)
                    .collect();
                (!parts.is_empty()).then(|| parts.join(", "))
            }
            Field::Identifier => (!r.identifiers.is_empty()).then(|| {
                r.identifiers
                    .iter()
                    .map(|(s, v)| format!("{s}|{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        }
    };
    (f(a), f(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Date;
    use crate::record::Gender;

    fn rec(given: &str, family: &str, birth: &str, phone: &str) -> Record {
        Record {
            id: format!("{given}-{family}-{phone}"),
            given: vec![given.into()],
            family: vec![family.into()],
            birth: Date::parse(birth),
            gender: Some(Gender::Female),
            phones: vec![phone.into()],
            ..Record::default()
        }
    }

    #[test]
    fn same_person_links_and_explains_every_field() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let score = s.score(
            &rec("margaret", "koch", "1925-06-26", "5551624456"),
            &rec("peggy", "koch", "1925-06-26", "5551624456"),
        );
        assert_eq!(score.class, MatchClass::Link);
        assert_eq!(score.fields.len(), 7);
        assert_eq!(score.fields[0].level, "nickname");
        assert_eq!(score.fields[0].left.as_deref(), Some("margaret"));
        let sum: f64 = score.fields.iter().map(|f| f.weight).sum::<f64>() + model.prior_weight();
        assert!((sum - score.weight).abs() < 1e-9);
        let json = serde_json::to_value(&score).unwrap();
        assert_eq!(json["fields"][0]["field"], "given");
    }

    #[test]
    fn twins_are_never_linked_automatically() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let score = s.score(
            &rec("mary", "koch", "1990-01-02", "5551624456"),
            &rec("alice", "koch", "1990-01-02", "5551624456"),
        );
        assert!(score.notes.contains(&Note::PossibleTwin));
        assert!(score.class <= MatchClass::Review);
    }

    #[test]
    fn namesakes_of_one_household_born_decades_apart_are_only_reviewed() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mut senior = rec("patricia", "smith", "1939-09-22", "2175551234");
        senior.postcode = Some("62701".into());
        senior.line = Some("123 main st".into());
        let mut junior = senior.clone();
        junior.birth = Date::parse("1974-01-01");
        let score = s.score(&senior, &junior);
        assert!(score.notes.contains(&Note::BirthDatesConflict));
        assert_eq!(score.class, MatchClass::Review, "{score:?}");
        // A one-digit slip in the year still links.
        junior.birth = Date::parse("1938-09-22");
        assert_eq!(s.score(&senior, &junior).class, MatchClass::Link);
    }

    #[test]
    fn identifiers_of_different_systems_are_not_comparable_not_missing() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mut a = rec("mary", "koch", "1990-01-02", "5551624456");
        let mut b = a.clone();
        a.identifiers = vec![("urn:mrn:a".into(), "1".into())];
        b.identifiers = vec![("urn:mrn:b".into(), "9".into())];
        let field =
            |a: &Record, b: &Record| s.score(a, b).fields[Field::Identifier.index()].clone();
        let f = field(&a, &b);
        assert_eq!(f.level, NOT_COMPARABLE);
        assert_eq!(f.weight, 0.0);
        assert_eq!(f.left.as_deref(), Some("urn:mrn:a|1"));
        b.identifiers.clear();
        assert_eq!(field(&a, &b).level, "missing");
    }

    const SSN: &str = crate::identifier::US_SSN;

    fn with_id(mut r: Record, system: &str, value: &str) -> Record {
        r.identifiers.push((system.into(), value.into()));
        r
    }

    #[test]
    fn twins_with_different_person_numbers_stay_apart() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mary = with_id(
            rec("mary", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999538547",
        );
        let alice = with_id(
            rec("alice", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999612203",
        );
        let score = s.score(&mary, &alice);
        assert!(score.notes.contains(&Note::PossibleTwin));
        assert!(score.lifted.is_empty());
        assert!(score.class < MatchClass::Link, "{score:?}");
        assert_eq!(
            score.fields[Field::Identifier.index()].level,
            "national_conflict"
        );
        assert!(score.fields[Field::Identifier.index()].weight < -5.0);
        assert!(
            !s.compatible(&mary, &alice),
            "never chained into one identity"
        );
    }

    #[test]
    fn a_replaced_given_name_under_one_person_number_links_and_says_why() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let a = with_id(
            rec("mary", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999538547",
        );
        let b = with_id(
            rec("alice", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999538547",
        );
        let score = s.score(&a, &b);
        assert!(score.notes.contains(&Note::PossibleTwin));
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        assert_eq!(score.lifted.len(), 1);
        let lift = &score.lifted[0];
        assert_eq!(lift.guard, Note::PossibleTwin);
        assert_eq!(lift.kind, IdentifierKind::National);
        assert!(lift.reason.contains("twin guard lifted"), "{}", lift.reason);
        assert!(lift.reason.contains(SSN));
        assert_eq!(
            score.fields[Field::Identifier.index()].level,
            "national_agree"
        );
        assert!(s.compatible(&a, &b));
        let json = serde_json::to_value(&score).unwrap();
        assert_eq!(json["lifted"][0]["guard"], "possible_twin");
        // A replaced birth date under the same number: the birth-date guard is lifted too.
        let mut c = b.clone();
        c.given = a.given.clone();
        c.birth = Date::parse("1971-05-12");
        let score = s.score(&a, &c);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        assert_eq!(score.lifted[0].guard, Note::BirthDatesConflict);
    }

    #[test]
    fn a_national_number_one_keying_error_off_lifts_only_with_other_evidence() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let a = with_id(
            rec("mary", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999538547",
        );
        // Neighbouring digits swapped and the birth date missing: still the same person.
        let mut b = with_id(rec("mary", "koch", "", "5551624456"), SSN, "999538574");
        let score = s.score(&a, &b);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        assert_eq!(
            score.fields[Field::Identifier.index()].level,
            "national_neighbours_swapped"
        );
        // With a replaced given name it lifts the twin guard, the other fields agreeing.
        b.given = vec!["alice".into()];
        b.birth = a.birth;
        let score = s.score(&a, &b);
        assert_eq!(score.lifted[0].agreement, Agreement::NeighboursSwapped);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        // A twin issued the next number (one substitution) stays apart.
        let twin = with_id(
            rec("alice", "koch", "1990-01-02", "5551624456"),
            SSN,
            "999538548",
        );
        let score = s.score(&a, &twin);
        assert_eq!(
            score.fields[Field::Identifier.index()].level,
            "national_one_substituted"
        );
        assert!(score.lifted.is_empty(), "{score:?}");
        assert!(score.class < MatchClass::Link);
        // But a substitution lifts the birth-date guard when the rest agrees.
        let mut c = with_id(
            rec("mary", "koch", "1971-05-12", "5551624456"),
            SSN,
            "999538548",
        );
        c.line = Some("1 main st".into());
        let mut a2 = a.clone();
        a2.line = c.line.clone();
        let score = s.score(&a2, &c);
        assert_eq!(score.lifted[0].guard, Note::BirthDatesConflict, "{score:?}");
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        // With nothing else agreeing, a near number lifts nothing.
        let stranger = with_id(rec("john", "koch", "1971-05-12", ""), SSN, "999538574");
        let mut lonely = with_id(rec("mary", "koch", "1990-01-02", ""), SSN, "999538547");
        lonely.phones.clear();
        let score = s.score(&lonely, &stranger);
        assert!(score.notes.contains(&Note::BirthDatesConflict));
        assert!(score.lifted.is_empty(), "{score:?}");
        assert!(score.class < MatchClass::Link);
    }

    #[test]
    fn a_shared_insurance_card_number_never_lifts_a_guard() {
        let mut model = Model::default();
        let card = "urn:oid:1.2.392.100495.20.3.61.1";
        let a = with_id(
            rec("mary", "koch", "1990-01-02", "5551624456"),
            card,
            "12345678",
        );
        let b = with_id(
            rec("alice", "koch", "1990-01-02", "5551624456"),
            card,
            "12345678",
        );
        // Unknown systems are shared, and so are the listed ones.
        for listed in [false, true] {
            if listed {
                model.identifier_kinds.shared.push(card.into());
            }
            let s = Scorer::new(&model, None);
            let score = s.score(&a, &b);
            assert!(score.notes.contains(&Note::PossibleTwin));
            assert!(score.lifted.is_empty());
            assert!(score.class <= MatchClass::Review, "{score:?}");
            assert_eq!(
                score.fields[Field::Identifier.index()].level,
                "shared_agree"
            );
            assert!(!s.compatible(&a, &b));
        }
    }

    #[test]
    fn a_second_record_number_at_one_facility_is_weak_evidence_and_agreement_lifts() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mrn = "urn:oid:1.2.392.100495.20.3.51.11311234567";
        let a = with_id(rec("mary", "koch", "1990-01-02", "5551624456"), mrn, "100");
        let b = with_id(rec("mary", "koch", "1990-01-02", "5551624456"), mrn, "200");
        let score = s.score(&a, &b);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        assert_eq!(
            score.fields[Field::Identifier.index()].level,
            "facility_conflict"
        );
        assert_eq!(
            score.fields[Field::Identifier.index()].weight,
            model.identifier_kinds.facility_conflict_weight
        );
        // Any system typed MR is a facility record number; agreement lifts the guards.
        let mut c = with_id(
            rec("mary", "koch", "1961-07-30", "5551624456"),
            "urn:h:mrn",
            "7",
        );
        c.record_number_systems = vec!["urn:h:mrn".into()];
        let d = with_id(
            rec("mary", "koch", "1990-01-02", "5551624456"),
            "urn:h:mrn",
            "7",
        );
        let score = s.score(&c, &d);
        assert_eq!(score.lifted[0].guard, Note::BirthDatesConflict);
        assert_eq!(score.lifted[0].kind, IdentifierKind::Facility);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
    }

    #[test]
    fn japanese_readings_outweigh_kanji_and_long_vowel_spellings() {
        use serde_json::json;
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let ext =
            |code: &str| json!([{"url": crate::record::EN_REPRESENTATION, "valueCode": code}]);
        let patient = |id: &str, kanji: &str, kana: &str| {
            json!({"resourceType": "Patient", "id": id, "gender": "male",
                "birthDate": "1994-07-05",
                "telecom": [{"system": "phone", "value": "03-1234-5678"}],
                "name": [{"extension": ext("IDE"), "family": "大谷", "given": [kanji]},
                         {"extension": ext("SYL"), "family": "オオタニ", "given": [kana]}]})
        };
        let a = Record::from_patient(&patient("a", "翔平", "ショーヘイ")).unwrap();
        // The same reading spelt with ウ, in hiragana: equal readings, equal names.
        let b = Record::from_patient(&patient("b", "翔平", "しょうへい")).unwrap();
        assert_eq!(a.given_kana, b.given_kana);
        assert_eq!(s.score(&a, &b).class, MatchClass::Link);
        // Other kanji under the same reading: a conversion error, linked, not a possible twin.
        let c = Record::from_patient(&patient("c", "将平", "ショウヘイ")).unwrap();
        let score = s.score(&a, &c);
        assert!(!score.notes.contains(&Note::PossibleTwin), "{score:?}");
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
    }

    /// Two members of one household (same address and landline, other sex, other given
    /// name, born five days apart) and a nameless record sharing address, landline and
    /// birth date: reviewed, never linked; the same national number lifts both guards.
    #[test]
    fn household_members_and_nameless_records_are_only_reviewed() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let mut wife = rec("mary", "koch", "1990-01-12", "5551624456");
        wife.line = Some("1 main st".into());
        wife.postcode = Some("66780".into());
        let mut husband = wife.clone();
        husband.given = vec!["john".into()];
        husband.gender = Some(Gender::Male);
        husband.birth = Date::parse("1990-01-17");
        let score = s.score(&wife, &husband);
        assert!(score.notes.contains(&Note::HouseholdMember), "{score:?}");
        assert_eq!(score.class, MatchClass::Review, "{score:?}");
        assert!(!s.compatible(&wife, &husband));
        // Connie and Vonnie: names a typo apart, but the other sex and another birthday.
        let mut connie = wife.clone();
        connie.given = vec!["connie".into()];
        connie.gender = Some(Gender::Male);
        let mut vonnie = husband.clone();
        vonnie.given = vec!["vonnie".into()];
        vonnie.gender = Some(Gender::Female);
        let score = s.score(&connie, &vonnie);
        assert!(score.notes.contains(&Note::HouseholdMember), "{score:?}");
        assert_eq!(score.class, MatchClass::Review, "{score:?}");
        let mut nameless = wife.clone();
        nameless.given.clear();
        nameless.family.clear();
        let score = s.score(&wife, &nameless);
        assert!(score.notes.contains(&Note::Nameless));
        assert_eq!(score.class, MatchClass::Review, "{score:?}");
        // One person after all: the same national number says so, and the explanation names it.
        let (wife, nameless) = (
            with_id(wife, SSN, "999538547"),
            with_id(nameless, SSN, "999538547"),
        );
        let score = s.score(&wife, &nameless);
        assert_eq!(score.class, MatchClass::Link, "{score:?}");
        assert_eq!(score.lifted[0].guard, Note::Nameless);
        assert!(
            score.lifted[0]
                .reason
                .contains("nameless-record guard lifted")
        );
    }

    /// A one-digit-off national number (a twin's consecutive number) under another given name
    /// lifts nothing, whatever else agrees.
    #[test]
    fn a_substituted_digit_under_another_given_name_lifts_nothing() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let a = with_id(
            rec("amado", "hickle", "2003-05-06", "5555758018"),
            SSN,
            "714622216",
        );
        let b = with_id(
            rec("armando", "hickle", "1999-02-20", "5555758018"),
            SSN,
            "114622216",
        );
        let score = s.score(&a, &b);
        assert!(score.lifted.is_empty(), "{score:?}");
        assert!(score.class < MatchClass::Link, "{score:?}");
        // Leann and her twin Leanne, born the same day, numbers one digit apart: two numbers,
        // weighed as a conflict.
        let leann = with_id(
            rec("leann", "hagenes", "1929-10-23", "5557893324"),
            SSN,
            "306757522",
        );
        let leanne = with_id(
            rec("leanne", "hagenes", "1929-10-23", "5557893324"),
            SSN,
            "386757522",
        );
        let score = s.score(&leann, &leanne);
        assert!(
            score.fields[Field::Identifier.index()].weight < -5.0,
            "{score:?}"
        );
        // Everything else agrees, so the pair alone may still score high; the chain guard
        // never puts the two numbers into one identity.
        assert!(!s.compatible(&leann, &leanne));
    }

    #[test]
    fn different_people_do_not_match() {
        let model = Model::default();
        let s = Scorer::new(&model, None);
        let (_, class) = s.quick(
            &rec("mary", "koch", "1990-01-02", "5551624456"),
            &rec("john", "smith", "1971-05-12", "5559990000"),
        );
        assert_eq!(class, MatchClass::NoMatch);
    }

    #[test]
    fn common_names_weigh_less_than_rare_ones() {
        let model = Model::default();
        let mut tf = TermFrequencies::default();
        for i in 0..1000 {
            let family = if i % 10 == 0 {
                "smith".to_owned()
            } else {
                format!("rare{i}")
            };
            tf.add(&rec("x", &family, "2000-01-01", "1"));
        }
        let s = Scorer::new(&model, Some(&tf));
        let common = s.score(&rec("a", "smith", "", ""), &rec("a", "smith", "", ""));
        let rare = s.score(&rec("a", "rare7", "", ""), &rec("a", "rare7", "", ""));
        assert!(common.fields[1].weight < rare.fields[1].weight);
    }
}
