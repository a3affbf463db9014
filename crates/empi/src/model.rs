//! The Fellegi–Sunter model: per field and agreement level the probabilities `m` (level given a
//! match) and `u` (level given a non-match), the prior match probability of a random pair,
//! the decision thresholds, and the estimators `cluster::train` combines — `u` from random
//! pairs, `m` and the prior by expectation–maximisation over candidate pairs. Serialised as
//! JSON (`renkei empi train`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{FIELDS, Field};
use crate::error::EmpiError;
use crate::identifier::IdentifierKinds;

/// Smallest probability a level may have, so no single field can veto or force a decision.
const FLOOR: f64 = 1e-5;
/// Smallest `m`: any value can be mistyped, so no level is impossible for a match
/// (a disagreeing sex costs at most ~9 bits, not a veto).
const M_FLOOR: f64 = 1e-3;
/// Pseudo-pairs per class anchoring EM to the previous estimate (a Dirichlet prior).
const PSEUDO: f64 = 10.0;

/// Probabilities of one field's levels (index 0, `missing`, is unused and kept at 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldParams {
    /// The field.
    pub field: Field,
    /// P(level | match), per level.
    pub m: Vec<f64>,
    /// P(level | non-match), per level.
    pub u: Vec<f64>,
}

/// Match probabilities at or above which a pair is linked automatically or sent to review.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// At or above: link automatically.
    pub auto_link: f64,
    /// At or above (and below `auto_link`): a human reviews. Below: no match.
    pub review: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            auto_link: 0.999,
            review: 0.5,
        }
    }
}

/// A complete, serialisable matching model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// P(match) for a random pair of records (log2 odds of it start every score).
    pub prior: f64,
    /// One entry per field, in [`Field::ALL`] order.
    pub fields: Vec<FieldParams>,
    /// Decision thresholds.
    pub thresholds: Thresholds,
    /// Adjust exact-name weights by how common the name is in the population.
    pub term_frequency: bool,
    /// Bound, in bits, on how far term frequency may move an exact-name weight.
    pub tf_max_adjustment: f64,
    /// Which identifier systems are national person numbers, facility record numbers or
    /// shared (model files without it get the defaults).
    #[serde(default)]
    pub identifier_kinds: IdentifierKinds,
}

impl Default for Model {
    /// Hand-set starting values: sensible before any training, and EM's starting point.
    fn default() -> Self {
        let p = |field, m: &[f64], u: &[f64]| FieldParams {
            field,
            m: std::iter::once(1.0).chain(m.iter().copied()).collect(),
            u: std::iter::once(1.0).chain(u.iter().copied()).collect(),
        };
        Model {
            prior: 1e-4,
            fields: vec![
                p(
                    Field::Given,
                    &[0.86, 0.04, 0.06, 0.01, 0.03],
                    &[0.004, 0.0005, 0.01, 0.02, 0.9655],
                ),
                p(
                    Field::Family,
                    &[0.86, 0.06, 0.03, 0.05],
                    &[0.003, 0.01, 0.0005, 0.9865],
                ),
                p(
                    Field::BirthDate,
                    &[0.92, 0.02, 0.04, 0.02],
                    &[0.0001, 0.00002, 0.002, 0.99788],
                ),
                p(Field::Gender, &[0.98, 0.02], &[0.5, 0.5]),
                p(Field::Phone, &[0.7, 0.05, 0.25], &[0.0002, 0.001, 0.9988]),
                p(Field::Address, &[0.6, 0.15, 0.25], &[0.0002, 0.02, 0.9798]),
                p(Field::Identifier, &[0.995, 0.005], &[0.0001, 0.9999]),
            ],
            thresholds: Thresholds::default(),
            term_frequency: true,
            tf_max_adjustment: 3.0,
            identifier_kinds: IdentifierKinds::default(),
        }
    }
}

impl Model {
    /// Checks shape and ranges (after loading a file).
    pub fn validate(&self) -> Result<(), EmpiError> {
        if self.fields.len() != FIELDS {
            return Err(EmpiError::InvalidModel(format!(
                "{} fields, expected {FIELDS}",
                self.fields.len()
            )));
        }
        for (params, field) in self.fields.iter().zip(Field::ALL) {
            let n = field.levels().len();
            if params.field != field || params.m.len() != n || params.u.len() != n {
                return Err(EmpiError::InvalidModel(format!(
                    "field {field:?}: expected {n} levels in field order"
                )));
            }
            if params
                .m
                .iter()
                .chain(&params.u)
                .any(|p| !(*p > 0.0 && *p <= 1.0))
            {
                return Err(EmpiError::InvalidModel(format!(
                    "field {field:?}: probabilities must be in (0, 1]"
                )));
            }
        }
        let facility = self.identifier_kinds.facility_conflict_weight;
        if !(facility.is_finite() && facility <= 0.0) {
            return Err(EmpiError::InvalidModel(
                "identifier_kinds.facility_conflict_weight must be a finite weight <= 0".into(),
            ));
        }
        let t = self.thresholds;
        let prior_ok = self.prior > 0.0 && self.prior < 1.0;
        let thresholds_ok = t.review > 0.0 && t.review <= t.auto_link && t.auto_link < 1.0;
        if !(prior_ok && thresholds_ok) {
            return Err(EmpiError::InvalidModel(
                "prior and thresholds must satisfy 0 < review <= auto_link < 1".into(),
            ));
        }
        Ok(())
    }

    /// Parses and validates a model from JSON.
    pub fn from_json(text: &str) -> Result<Model, EmpiError> {
        let model: Model =
            serde_json::from_str(text).map_err(|e| EmpiError::InvalidModel(e.to_string()))?;
        model.validate()?;
        Ok(model)
    }

    /// The model as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// log2(m / u) of a field level; 0 for `missing`.
    pub fn weight(&self, field: Field, level: u8) -> f64 {
        if level == 0 {
            return 0.0;
        }
        let p = &self.fields[field.index()];
        (p.m[level as usize] / p.u[level as usize]).log2()
    }

    /// log2 prior odds.
    pub fn prior_weight(&self) -> f64 {
        (self.prior / (1.0 - self.prior)).log2()
    }

    /// Estimates `u` from the comparison vectors of random record pairs (nearly all of them
    /// non-matches), with add-half smoothing so an unseen level is rare, not impossible.
    pub fn estimate_u(&mut self, random: &[[u8; FIELDS]]) {
        for field in Field::ALL {
            let n = field.levels().len();
            let mut counts = vec![0f64; n];
            for v in random {
                counts[v[field.index()] as usize] += 1.0;
            }
            let present: f64 = counts[1..].iter().sum();
            if present > 0.0 {
                let params = &mut self.fields[field.index()];
                for (u, count) in params.u.iter_mut().zip(&counts).skip(1) {
                    *u = ((count + 0.5) / (present + 0.5 * n as f64)).max(FLOOR);
                }
            }
        }
    }

    /// Estimates `m` by expectation–maximisation over candidate-pair vectors with `u` held
    /// fixed; returns the estimated share of matches among them and the iterations run.
    /// Fields that agree merely because of how the pairs were chosen (the blocking key) must
    /// be set to `missing` (0) by the caller; their `m` is then left unchanged.
    pub fn estimate_m(&mut self, candidates: &[[u8; FIELDS]]) -> (f64, usize) {
        self.em(candidates, true)
    }

    /// Estimates the prior (P(match) for a random pair) from unmasked candidate-pair vectors
    /// with `m` and `u` fixed: EM gives the share of matches among candidates, scaled by
    /// `candidate_share`, the fraction of all pairs that are candidates.
    pub fn estimate_prior(&mut self, candidates: &[[u8; FIELDS]], candidate_share: f64) -> usize {
        let (lambda, iterations) = self.em(candidates, false);
        self.prior = (lambda * candidate_share).clamp(1e-12, 0.5);
        iterations
    }

    fn em(&mut self, candidates: &[[u8; FIELDS]], update_m: bool) -> (f64, usize) {
        if candidates.is_empty() {
            return (0.0, 0);
        }
        let mut patterns: HashMap<[u8; FIELDS], f64> = HashMap::new();
        for v in candidates {
            *patterns.entry(*v).or_default() += 1.0;
        }
        let patterns: Vec<([u8; FIELDS], f64)> = patterns.into_iter().collect();
        let total: f64 = patterns.iter().map(|(_, c)| c).sum();
        let mut lambda: f64 = 0.1;
        let mut iterations = 0;
        for _ in 0..200 {
            iterations += 1;
            let mut m_acc: Vec<Vec<f64>> = Field::ALL
                .iter()
                .map(|f| vec![0.0; f.levels().len()])
                .collect();
            let mut matched = 0.0;
            for (v, count) in &patterns {
                let mut log_m = 0.0;
                let mut log_u = 0.0;
                for field in Field::ALL {
                    let l = v[field.index()] as usize;
                    if l > 0 {
                        let p = &self.fields[field.index()];
                        log_m += p.m[l].ln();
                        log_u += p.u[l].ln();
                    }
                }
                let a = lambda.ln() + log_m;
                let b = (1.0 - lambda).ln() + log_u;
                let top = a.max(b);
                let posterior = (a - top).exp() / ((a - top).exp() + (b - top).exp());
                matched += posterior * count;
                for field in Field::ALL {
                    m_acc[field.index()][v[field.index()] as usize] += posterior * count;
                }
            }
            let new_lambda = (matched / total).clamp(1e-9, 1.0 - 1e-9);
            let mut change = (new_lambda - lambda).abs();
            lambda = new_lambda;
            if update_m {
                for field in Field::ALL {
                    let acc = &m_acc[field.index()];
                    let probs = &mut self.fields[field.index()].m;
                    let present: f64 = acc[1..].iter().sum();
                    if present <= 0.0 {
                        continue;
                    }
                    // A few pseudo-pairs spread like the current estimate keep rare levels alive.
                    for l in 1..acc.len() {
                        let p = ((acc[l] + PSEUDO * probs[l]) / (present + PSEUDO)).max(M_FLOOR);
                        change = change.max((p - probs[l]).abs());
                        probs[l] = p;
                    }
                }
            }
            if change < 1e-7 {
                break;
            }
        }
        (lambda, iterations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_valid_and_round_trips() {
        let m = Model::default();
        m.validate().unwrap();
        assert_eq!(Model::from_json(&m.to_json()).unwrap(), m);
        assert!(m.weight(Field::BirthDate, 1) > 10.0);
        assert!(m.weight(Field::Identifier, 2) < -5.0);
        assert_eq!(m.weight(Field::Phone, 0), 0.0);
    }

    #[test]
    fn model_files_without_identifier_kinds_get_the_defaults() {
        let mut json: serde_json::Value =
            serde_json::from_str(&Model::default().to_json()).unwrap();
        json.as_object_mut().unwrap().remove("identifier_kinds");
        let m = Model::from_json(&json.to_string()).unwrap();
        assert_eq!(m.identifier_kinds, IdentifierKinds::default());
        json["identifier_kinds"] = serde_json::json!({"national": ["urn:jp:mynumber"]});
        let m = Model::from_json(&json.to_string()).unwrap();
        assert_eq!(m.identifier_kinds.national, ["urn:jp:mynumber"]);
        assert_eq!(
            m.identifier_kinds.facility,
            IdentifierKinds::default().facility,
            "fields left out keep their defaults"
        );
    }

    #[test]
    fn rejects_malformed_models() {
        let mut m = Model::default();
        m.fields.pop();
        assert!(m.validate().is_err());
        let mut m = Model::default();
        m.thresholds.review = 0.9999;
        assert!(m.validate().is_err());
        assert!(Model::from_json("{").is_err());
    }

    #[test]
    fn em_recovers_a_planted_split() {
        // 200 matches agreeing on everything, 800 non-matches disagreeing on names and birth date.
        let mut candidates = vec![[1, 1, 1, 1, 1, 1, 0]; 200];
        candidates.extend(vec![[5, 4, 4, 1, 3, 3, 0]; 400]);
        candidates.extend(vec![[5, 1, 4, 2, 3, 2, 0]; 400]);
        let mut random = vec![[5, 4, 4, 1, 3, 3, 0]; 500];
        random.extend(vec![[5, 1, 4, 2, 3, 2, 0]; 500]);
        let mut m = Model::default();
        m.estimate_u(&random);
        let (lambda, _) = m.estimate_m(&candidates);
        assert!((lambda - 0.2).abs() < 0.01, "share {lambda}");
        m.estimate_prior(&candidates, 0.5);
        assert!((m.prior - 0.1).abs() < 0.01, "prior {}", m.prior);
        assert!(m.fields[0].m[1] > 0.95);
    }
}
