//! Pairwise evaluation of a clustering against labels (precision, recall, F1, overall and by
//! the generator's error type), and the CSV forms of labels (`id,cluster,error`) and clusters
//! (`id,cluster`).

use std::collections::HashMap;

use crate::error::EmpiError;
use crate::label::{ErrorKind, Label};

/// Pair counts and the measures derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PairCounts {
    /// Pairs linked that are the same person.
    pub true_positives: u64,
    /// Pairs linked that are different people.
    pub false_positives: u64,
    /// Pairs of the same person left apart.
    pub false_negatives: u64,
}

impl PairCounts {
    /// TP / (TP + FP); 1 when nothing was linked.
    pub fn precision(&self) -> f64 {
        let d = self.true_positives + self.false_positives;
        if d == 0 {
            1.0
        } else {
            self.true_positives as f64 / d as f64
        }
    }
    /// TP / (TP + FN); 1 when there was nothing to find.
    pub fn recall(&self) -> f64 {
        let d = self.true_positives + self.false_negatives;
        if d == 0 {
            1.0
        } else {
            self.true_positives as f64 / d as f64
        }
    }
    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// Overall and per-error-type pairwise results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// Over all pairs.
    pub overall: PairCounts,
    /// Over the pairs involving at least one record of each error type.
    pub by_error: Vec<(&'static str, PairCounts)>,
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7}",
            "error", "precision", "recall", "f1", "tp", "fp", "fn"
        )?;
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, c: &PairCounts| {
            writeln!(
                f,
                "{:<10} {:>9.4} {:>9.4} {:>9.4} {:>7} {:>7} {:>7}",
                name,
                c.precision(),
                c.recall(),
                c.f1(),
                c.true_positives,
                c.false_positives,
                c.false_negatives
            )
        };
        for (name, c) in &self.by_error {
            row(f, name, c)?;
        }
        row(f, "overall", &self.overall)
    }
}

fn pairs(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// Pairs within a group that involve at least one record of each kind.
fn pairs_by_kind(kinds: &[ErrorKind]) -> HashMap<ErrorKind, u64> {
    let n = kinds.len() as u64;
    let mut counts: HashMap<ErrorKind, u64> = HashMap::new();
    for k in kinds {
        *counts.entry(*k).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(k, c)| (k, pairs(n) - pairs(n - c)))
        .collect()
}

/// Compares predicted clusters (`id -> cluster`) with labels. Records missing from the
/// prediction count as singletons.
pub fn evaluate(predicted: &[(String, String)], labels: &[Label]) -> Evaluation {
    let pred: HashMap<&str, &str> = predicted
        .iter()
        .map(|(id, c)| (id.as_str(), c.as_str()))
        .collect();
    let mut by_true: HashMap<&str, Vec<ErrorKind>> = HashMap::new();
    let mut by_pred: HashMap<&str, Vec<ErrorKind>> = HashMap::new();
    let mut by_both: HashMap<(&str, &str), Vec<ErrorKind>> = HashMap::new();
    for l in labels {
        let p = pred.get(l.id.as_str()).copied().unwrap_or(l.id.as_str());
        by_true.entry(l.cluster.as_str()).or_default().push(l.error);
        by_pred.entry(p).or_default().push(l.error);
        by_both
            .entry((l.cluster.as_str(), p))
            .or_default()
            .push(l.error);
    }
    let sum = |groups: Vec<&Vec<ErrorKind>>| -> (u64, HashMap<ErrorKind, u64>) {
        let mut total = 0;
        let mut kinds: HashMap<ErrorKind, u64> = HashMap::new();
        for g in groups {
            total += pairs(g.len() as u64);
            for (k, c) in pairs_by_kind(g) {
                *kinds.entry(k).or_default() += c;
            }
        }
        (total, kinds)
    };
    let (true_pairs, true_k) = sum(by_true.values().collect());
    let (pred_pairs, pred_k) = sum(by_pred.values().collect());
    let (tp, tp_k) = sum(by_both.values().collect());
    let counts = |tp: u64, t: u64, p: u64| PairCounts {
        true_positives: tp,
        false_positives: p - tp,
        false_negatives: t - tp,
    };
    let by_error = ErrorKind::ALL
        .iter()
        .filter(|k| labels.iter().any(|l| l.error == **k))
        .map(|k| {
            let g = |m: &HashMap<ErrorKind, u64>| m.get(k).copied().unwrap_or(0);
            (k.as_str(), counts(g(&tp_k), g(&true_k), g(&pred_k)))
        })
        .collect();
    Evaluation {
        overall: counts(tp, true_pairs, pred_pairs),
        by_error,
    }
}

/// Writes labels as CSV with header `id,cluster,error`.
pub fn labels_csv(labels: &[Label]) -> String {
    let mut s = String::from("id,cluster,error\n");
    for l in labels {
        s.push_str(&format!("{},{},{}\n", l.id, l.cluster, l.error.as_str()));
    }
    s
}

/// Reads `id,cluster,error` CSV (header required; `error` optional, default `original`).
pub fn parse_labels(text: &str) -> Result<Vec<Label>, EmpiError> {
    parse_rows(text, "id,cluster")?
        .into_iter()
        .map(|(line, cols)| {
            let error = match cols.get(2) {
                Some(e) => ErrorKind::parse(e).ok_or_else(|| EmpiError::BadLine {
                    line,
                    message: format!("unknown error type {e:?}"),
                })?,
                None => ErrorKind::Original,
            };
            Ok(Label {
                id: cols[0].clone(),
                cluster: cols[1].clone(),
                error,
            })
        })
        .collect()
}

/// Reads `id,cluster` CSV (header required).
pub fn parse_clusters(text: &str) -> Result<Vec<(String, String)>, EmpiError> {
    Ok(parse_rows(text, "id,cluster")?
        .into_iter()
        .map(|(_, mut cols)| {
            let cluster = cols.swap_remove(1);
            (cols.swap_remove(0), cluster)
        })
        .collect())
}

fn parse_rows(text: &str, header: &str) -> Result<Vec<(usize, Vec<String>)>, EmpiError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim().starts_with(header) => {}
        _ => {
            return Err(EmpiError::BadLine {
                line: 1,
                message: format!("expected header {header:?}"),
            });
        }
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let cols: Vec<String> = l.trim().split(',').map(str::to_owned).collect();
            if cols.len() < 2 || cols[0].is_empty() || cols[1].is_empty() {
                return Err(EmpiError::BadLine {
                    line: i + 1,
                    message: "expected at least two non-empty columns".into(),
                });
            }
            Ok((i + 1, cols))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(id: &str, cluster: &str, error: ErrorKind) -> Label {
        Label {
            id: id.into(),
            cluster: cluster.into(),
            error,
        }
    }

    #[test]
    fn pairwise_counts() {
        let labels = vec![
            label("a", "1", ErrorKind::Original),
            label("b", "1", ErrorKind::Typo),
            label("c", "1", ErrorKind::Moved),
            label("d", "2", ErrorKind::Original),
        ];
        // Predicted: {a, b, d}, {c}.
        let pred: Vec<(String, String)> = [("a", "x"), ("b", "x"), ("c", "y"), ("d", "x")]
            .iter()
            .map(|(i, c)| (i.to_string(), c.to_string()))
            .collect();
        let e = evaluate(&pred, &labels);
        assert_eq!(e.overall.true_positives, 1);
        assert_eq!(e.overall.false_positives, 2);
        assert_eq!(e.overall.false_negatives, 2);
        let moved = e.by_error.iter().find(|(k, _)| *k == "moved").unwrap().1;
        assert_eq!(moved.recall(), 0.0);
        let typo = e.by_error.iter().find(|(k, _)| *k == "typo").unwrap().1;
        assert_eq!(
            (
                typo.true_positives,
                typo.false_positives,
                typo.false_negatives
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn csv_round_trip_and_errors() {
        let labels = vec![label("a", "1", ErrorKind::Nickname)];
        assert_eq!(parse_labels(&labels_csv(&labels)).unwrap(), labels);
        assert_eq!(
            parse_clusters("id,cluster\na,1\n").unwrap(),
            vec![("a".to_owned(), "1".to_owned())]
        );
        assert!(matches!(
            parse_clusters("a,1\n"),
            Err(EmpiError::BadLine { line: 1, .. })
        ));
        assert!(matches!(
            parse_labels("id,cluster,error\na,1,bogus\n"),
            Err(EmpiError::BadLine { line: 2, .. })
        ));
    }
}
