//! Scoring a pair: Fellegi–Sunter weights from the [`Model`], exact-name weights adjusted by
//! term frequency, the guards (twins, birth order), the three-way classification, and the
//! per-field explanation that every stored link and review item carries.

use serde::{Deserialize, Serialize};

use crate::compare::{Comparison, Field, compare, level};
use crate::hashing::{FxHashMap, key_hash};
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
}

/// Scores pairs with a model and (optionally) population term frequencies.
#[derive(Debug, Clone, Copy)]
pub struct Scorer<'a> {
    /// The model.
    pub model: &'a Model,
    /// Name frequencies, when known.
    pub tf: Option<&'a TermFrequencies>,
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

    fn total(&self, a: &Record, c: &Comparison) -> f64 {
        let mut w = self.model.prior_weight();
        for field in Field::ALL {
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

    fn classify(&self, weight: f64, c: &Comparison) -> MatchClass {
        let p = probability(weight);
        let t = self.model.thresholds;
        let class = if p >= t.auto_link {
            MatchClass::Link
        } else if p >= t.review {
            MatchClass::Review
        } else {
            MatchClass::NoMatch
        };
        if c.different_birth_order {
            MatchClass::NoMatch
        } else if c.possible_twin || c.birth_dates_conflict {
            class.min(MatchClass::Review)
        } else {
            class
        }
    }

    /// Weight and class only: the hot path for batch clustering and candidate ranking.
    pub fn quick(&self, a: &Record, b: &Record) -> (f64, MatchClass) {
        let c = compare(a, b);
        let w = self.total(a, &c);
        (w, self.classify(w, &c))
    }

    /// True when two records may belong to one identity: not clearly twins, not of different
    /// birth order, and not below the review threshold. Used to stop transitive chains.
    pub fn compatible(&self, a: &Record, b: &Record) -> bool {
        let c = compare(a, b);
        !c.clear_twin
            && !c.different_birth_order
            && probability(self.total(a, &c)) >= self.model.thresholds.review
    }

    /// The full score with its per-field explanation.
    pub fn score(&self, a: &Record, b: &Record) -> Score {
        let c = compare(a, b);
        let weight = self.total(a, &c);
        let class = self.classify(weight, &c);
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
                let level = if not_comparable {
                    NOT_COMPARABLE.to_owned()
                } else {
                    field.levels()[lvl as usize].to_owned()
                };
                FieldScore {
                    field,
                    level,
                    weight: self.field_weight(field, lvl, value),
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
        Score {
            weight,
            probability: probability(weight),
            class,
            fields,
            notes,
        }
    }
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
            Field::BirthDate => r.birth.map(|d| d.to_string()),
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
