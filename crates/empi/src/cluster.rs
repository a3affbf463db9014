//! Batch de-duplication of a whole population: blocking (sort records' key hashes into blocks),
//! pair scoring in parallel (each pair once, under the first key it shares), and union-find over
//! auto-link pairs, strongest first, with a guard that refuses a merge when any two members of
//! the two clusters are clearly different people. Also samples the comparison vectors that
//! EM training needs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blocking;
use crate::compare::{FIELDS, Field, compare};
use crate::hashing::FxHashMap;
use crate::model::Model;
use crate::record::Record;
use crate::score::{MatchClass, Note, Scorer, TermFrequencies, probability};

/// Limits and parallelism of a batch run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Blocks larger than this are skipped (their pairs are found through other keys).
    pub max_block: usize,
    /// Worker threads for pair scoring.
    pub threads: usize,
    /// A merge whose two clusters would need more cross checks than this is refused.
    pub max_cross_checks: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            max_block: 1000,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_cross_checks: 4096,
        }
    }
}

/// Counters describing a batch run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStats {
    /// Records clustered.
    pub records: usize,
    /// Blocks with at least two records.
    pub blocks: usize,
    /// Blocks skipped as larger than `max_block`.
    pub oversized_blocks: usize,
    /// Pairs scored.
    pub pairs_scored: u64,
    /// Pairs at or above the auto-link threshold.
    pub link_pairs: usize,
    /// Pairs in the review band left in different clusters.
    pub review_pairs: usize,
    /// Merges refused by the chain guard.
    pub refused_merges: usize,
    /// Clusters produced.
    pub clusters: usize,
}

/// Why a pair was left for a person to review instead of being linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// The match probability is in the review band, below the auto-link threshold.
    Uncertain,
    /// Same family name and birth date, given names more than a typo apart: a guard caps the
    /// pair at review whatever its probability.
    PossibleTwin,
    /// Birth dates more than a keying error apart (a parent and child of the same name look
    /// like this): capped at review whatever the probability.
    BirthDatesConflict,
    /// Same family name, different birth dates, other given names (or of the other sex, not
    /// the same given name): two members of one household; capped at review whatever the
    /// probability.
    HouseholdMember,
    /// One record has no name at all: capped at review whatever the probability.
    Nameless,
    /// Linkable, but linking would put these two records (one of each cluster) into one
    /// identity although they are clearly different people (the chain guard).
    TransitiveChain {
        /// A record of the first pair member's cluster.
        left: u32,
        /// A record of the second's, incompatible with `left`.
        right: u32,
    },
    /// Linkable, but the two clusters are too large to check every cross pair
    /// (`ClusterConfig::max_cross_checks`), so the chain guard refused the merge.
    ClustersTooLarge,
}

impl ReviewReason {
    /// A short code (`uncertain`, `possible_twin`, `birth_dates_conflict`,
    /// `household_member`, `nameless`, `transitive_chain`, `clusters_too_large`).
    pub fn code(&self) -> &'static str {
        match self {
            ReviewReason::Uncertain => "uncertain",
            ReviewReason::PossibleTwin => "possible_twin",
            ReviewReason::BirthDatesConflict => "birth_dates_conflict",
            ReviewReason::HouseholdMember => "household_member",
            ReviewReason::Nameless => "nameless",
            ReviewReason::TransitiveChain { .. } => "transitive_chain",
            ReviewReason::ClustersTooLarge => "clusters_too_large",
        }
    }
}

/// A pair for human review: probable, but not linked, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReviewPair {
    /// Index of one record.
    pub left: u32,
    /// Index of the other.
    pub right: u32,
    /// Match weight (log2 odds).
    pub weight: f64,
    /// Why it needs a person (at least one reason).
    pub reasons: Vec<ReviewReason>,
}

/// The result of a batch run.
#[derive(Debug, Clone)]
pub struct Clustering {
    /// For each input record, the index of its cluster's representative (its first record).
    pub cluster_of: Vec<u32>,
    /// Pairs for human review: probable, but not linked, each with why.
    pub review: Vec<ReviewPair>,
    /// Counters.
    pub stats: ClusterStats,
}

/// Progress reporting: called with the number of blocks finished so far and the total.
pub trait Progress: Sync {
    /// Some work finished.
    fn advance(&self, done: u64, total: u64);
}

impl<F: Fn(u64, u64) + Sync> Progress for F {
    fn advance(&self, done: u64, total: u64) {
        self(done, total)
    }
}

/// Keys per record, the usable blocks (record indexes sharing a key) and the oversized keys.
struct Blocks {
    keys: Vec<Vec<u64>>,
    groups: Vec<(u64, Vec<u32>)>,
    oversized: HashSet<u64>,
}

fn build_blocks(records: &[Record], max_block: usize) -> Blocks {
    let keys: Vec<Vec<u64>> = records.iter().map(blocking::keys).collect();
    let mut entries: Vec<(u64, u32)> = keys
        .iter()
        .enumerate()
        .flat_map(|(i, ks)| ks.iter().map(move |k| (*k, i as u32)))
        .collect();
    entries.sort_unstable();
    let mut groups = Vec::new();
    let mut oversized = HashSet::new();
    let mut start = 0;
    while start < entries.len() {
        let key = entries[start].0;
        let mut end = start;
        while end < entries.len() && entries[end].0 == key {
            end += 1;
        }
        let n = end - start;
        if n > max_block {
            oversized.insert(key);
        } else if n >= 2 {
            groups.push((key, entries[start..end].iter().map(|e| e.1).collect()));
        }
        start = end;
    }
    Blocks {
        keys,
        groups,
        oversized,
    }
}

/// A probable pair: record indexes, weight, class.
type ScoredPair = (u32, u32, f64, MatchClass);

/// Term frequencies of a population.
pub fn term_frequencies(records: &[Record]) -> TermFrequencies {
    let mut tf = TermFrequencies::default();
    for r in records {
        tf.add(r);
    }
    tf
}

/// Clusters records: each cluster is one person according to the model.
pub fn cluster(
    records: &[Record],
    model: &Model,
    config: &ClusterConfig,
    progress: &dyn Progress,
) -> Clustering {
    let tf = term_frequencies(records);
    let scorer = Scorer::new(model, Some(&tf));
    let blocks = build_blocks(records, config.max_block);
    let mut stats = ClusterStats {
        records: records.len(),
        blocks: blocks.groups.len(),
        oversized_blocks: blocks.oversized.len(),
        ..ClusterStats::default()
    };

    // Score every pair once, in parallel over interleaved blocks.
    let threads = config.threads.max(1);
    let done = AtomicU64::new(0);
    let total = blocks.groups.len() as u64;
    let results: Vec<(Vec<ScoredPair>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (blocks, scorer, done) = (&blocks, &scorer, &done);
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut scored = 0u64;
                    // Only pairs at review or above are kept: a pair the bound rules out is
                    // not compared in full (few are, under a trained model).
                    let bound = scorer.review_bound();
                    for (n, (key, members)) in
                        blocks.groups.iter().enumerate().skip(t).step_by(threads)
                    {
                        for (i, &a) in members.iter().enumerate() {
                            for &b in &members[i + 1..] {
                                let first = blocking::first_shared(
                                    &blocks.keys[a as usize],
                                    &blocks.keys[b as usize],
                                    |k| blocks.oversized.contains(&k),
                                );
                                if first != Some(*key) {
                                    continue;
                                }
                                scored += 1;
                                let (ra, rb) = (&records[a as usize], &records[b as usize]);
                                if let Some((w, class)) = scorer.quick_if_reviewable(&bound, ra, rb)
                                    && class >= MatchClass::Review
                                {
                                    out.push((a, b, w, class));
                                }
                            }
                        }
                        if n % 1024 == t {
                            let d = done.fetch_add(1024, Ordering::Relaxed) + 1024;
                            progress.advance(d.min(total), total);
                        }
                    }
                    (out, scored)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    progress.advance(total, total);
    let mut pairs: Vec<ScoredPair> = Vec::new();
    for (p, n) in results {
        stats.pairs_scored += n;
        pairs.extend(p);
    }
    // Strongest evidence first; ties broken by index for determinism.
    pairs.sort_by(|x, y| y.2.total_cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));

    let mut uf = UnionFind::new(records.len());
    let mut review = Vec::new();
    for &(a, b, w, class) in &pairs {
        if class != MatchClass::Link {
            continue;
        }
        stats.link_pairs += 1;
        let (ra, rb) = (uf.find(a), uf.find(b));
        if ra == rb {
            continue;
        }
        let refusal = {
            let (ma, mb) = (uf.members(ra), uf.members(rb));
            if ma.len() * mb.len() > config.max_cross_checks {
                Some(ReviewReason::ClustersTooLarge)
            } else {
                // Every cross pair may be one person, or another member explains why not.
                let union: Vec<&Record> = ma
                    .iter()
                    .chain(mb.iter())
                    .map(|&i| &records[i as usize])
                    .collect();
                ma.iter()
                    .flat_map(|&x| mb.iter().map(move |&y| (x, y)))
                    .find(|&(x, y)| {
                        scorer
                            .chain_conflict(
                                &records[x as usize],
                                &records[y as usize],
                                union.iter().copied(),
                            )
                            .is_some()
                    })
                    .map(|(left, right)| ReviewReason::TransitiveChain { left, right })
            }
        };
        match refusal {
            None => uf.union(ra, rb),
            Some(reason) => {
                stats.refused_merges += 1;
                review.push(ReviewPair {
                    left: a,
                    right: b,
                    weight: w,
                    reasons: vec![reason],
                });
            }
        }
    }
    for &(a, b, w, class) in &pairs {
        if class == MatchClass::Review && uf.find(a) != uf.find(b) {
            // The guards that held (an identifier may have lifted one).
            let score = scorer.score(&records[a as usize], &records[b as usize]);
            let held = |note: Note| {
                score.notes.contains(&note) && !score.lifted.iter().any(|l| l.guard == note)
            };
            let mut reasons = Vec::new();
            if probability(w) < model.thresholds.auto_link {
                reasons.push(ReviewReason::Uncertain);
            }
            if held(Note::PossibleTwin) {
                reasons.push(ReviewReason::PossibleTwin);
            }
            if held(Note::BirthDatesConflict) {
                reasons.push(ReviewReason::BirthDatesConflict);
            }
            if held(Note::HouseholdMember) {
                reasons.push(ReviewReason::HouseholdMember);
            }
            if held(Note::Nameless) {
                reasons.push(ReviewReason::Nameless);
            }
            if reasons.is_empty() {
                // The class says review: some guard capped it; say at least that it is unsure.
                reasons.push(ReviewReason::Uncertain);
            }
            review.push(ReviewPair {
                left: a,
                right: b,
                weight: w,
                reasons,
            });
        }
    }
    stats.review_pairs = review.len();
    let cluster_of: Vec<u32> = (0..records.len() as u32)
        .map(|i| {
            let root = uf.find(i);
            uf.members(root)[0]
        })
        .collect();
    stats.clusters = (0..records.len() as u32)
        .filter(|&i| cluster_of[i as usize] == i)
        .count();
    Clustering {
        cluster_of,
        review,
        stats,
    }
}

/// What training did, for reports.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TrainingReport {
    /// Random pairs used for `u`.
    pub random_pairs: usize,
    /// Per blocking-key kind: (implied field, candidate pairs used, EM iterations, match share).
    pub runs: Vec<(crate::compare::Field, usize, usize, f64)>,
    /// Candidate pairs used to estimate the prior.
    pub prior_pairs: usize,
    /// The resulting prior (random pair).
    pub prior: f64,
}

/// Re-estimates `model` from a population without labels, the way Splink does: `u` from random
/// pairs; then, for each kind of blocking key, `m` by EM over the pairs sharing such a key with
/// the field that key forces to agree masked out, the estimates of each field averaged over the
/// runs where it was not masked; finally the prior by EM over all candidate pairs.
/// Samples at most `max_pairs` pairs per step; deterministic for a given `seed`.
pub fn train(
    records: &[Record],
    model: &mut Model,
    config: &ClusterConfig,
    max_pairs: usize,
    seed: u64,
) -> TrainingReport {
    let mut report = TrainingReport::default();
    let mut rng = crate::rng::Rng::new(seed);
    let kinds = model.identifier_kinds.clone();
    if records.len() < 2 {
        return report;
    }
    let mut random = Vec::new();
    for _ in 0..max_pairs.min(records.len() * 50) {
        let a = rng.below(records.len());
        let b = rng.below(records.len());
        if a != b {
            random.push(compare(&records[a], &records[b], &kinds).levels);
        }
    }
    report.random_pairs = random.len();
    model.estimate_u(&random);

    let blocks = build_blocks(records, config.max_block);
    let pair_count = |g: &(u64, Vec<u32>)| g.1.len() * (g.1.len() - 1) / 2;
    let base = model.clone();
    let mut m_sum: Vec<Vec<f64>> = Field::ALL
        .iter()
        .map(|f| vec![0.0; f.levels().len()])
        .collect();
    let mut m_runs = [0usize; FIELDS];
    for kind in 0..8u64 {
        let Some(implied) = blocking::implied_field(kind) else {
            continue;
        };
        let groups: Vec<&(u64, Vec<u32>)> =
            blocks.groups.iter().filter(|g| g.0 & 7 == kind).collect();
        let total: usize = groups.iter().map(|g| pair_count(g)).sum();
        let keep = (max_pairs as f64 / total.max(1) as f64).min(1.0);
        let mut vectors = Vec::new();
        for (_, members) in groups {
            for (i, &a) in members.iter().enumerate() {
                for &b in &members[i + 1..] {
                    if keep < 1.0 && rng.unit() >= keep {
                        continue;
                    }
                    let mut levels =
                        compare(&records[a as usize], &records[b as usize], &kinds).levels;
                    levels[implied.index()] = 0;
                    vectors.push(levels);
                }
            }
        }
        if vectors.len() < 100 {
            continue;
        }
        let mut run = base.clone();
        let (share, iterations) = run.estimate_m(&vectors);
        report
            .runs
            .push((implied, vectors.len(), iterations, share));
        if !(0.02..=0.98).contains(&share) {
            // EM put (nearly) every pair in one class: it separated nothing, so its m is noise.
            continue;
        }
        for field in Field::ALL {
            if field != implied {
                m_runs[field.index()] += 1;
                for (acc, m) in m_sum[field.index()]
                    .iter_mut()
                    .zip(&run.fields[field.index()].m)
                {
                    *acc += m;
                }
            }
        }
    }
    for field in Field::ALL {
        let runs = m_runs[field.index()];
        // Identifier m stays as configured: sources rarely share an identifier system, so
        // candidates say little about it, and a conflict must stay strong evidence by policy.
        if runs > 0 && field != Field::Identifier {
            let m = &mut model.fields[field.index()].m;
            for l in 1..m.len() {
                m[l] = m_sum[field.index()][l] / runs as f64;
            }
        }
    }

    // The prior: EM for the match share over all candidate pairs (each once), m and u fixed.
    let total: usize = blocks.groups.iter().map(pair_count).sum();
    let keep = (max_pairs as f64 / total.max(1) as f64).min(1.0);
    let mut candidates = Vec::new();
    for (key, members) in &blocks.groups {
        for (i, &a) in members.iter().enumerate() {
            for &b in &members[i + 1..] {
                if keep < 1.0 && rng.unit() >= keep {
                    continue;
                }
                let first = blocking::first_shared(
                    &blocks.keys[a as usize],
                    &blocks.keys[b as usize],
                    |k| blocks.oversized.contains(&k),
                );
                if first == Some(*key) {
                    candidates
                        .push(compare(&records[a as usize], &records[b as usize], &kinds).levels);
                }
            }
        }
    }
    // Distinct candidate pairs among all pairs (pairs sharing several keys were counted once
    // per key in `total`; the sampled vectors are de-duplicated by `first_shared`).
    let sampled_share = if keep > 0.0 {
        candidates.len() as f64 / keep
    } else {
        0.0
    };
    let n = records.len() as f64;
    let share = (sampled_share / (n * (n - 1.0) / 2.0)).min(1.0);
    report.prior_pairs = candidates.len();
    model.estimate_prior(&candidates, share);
    report.prior = model.prior;
    report
}

/// Union-find with member lists (clusters are small, so lists stay cheap).
struct UnionFind {
    parent: Vec<u32>,
    members: FxHashMap<u32, Vec<u32>>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            members: FxHashMap::default(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    /// The sorted members of the cluster rooted at `root`.
    fn members(&self, root: u32) -> std::borrow::Cow<'_, [u32]> {
        match self.members.get(&root) {
            Some(m) => std::borrow::Cow::Borrowed(m.as_slice()),
            None => std::borrow::Cow::Owned(vec![root]),
        }
    }

    fn union(&mut self, a: u32, b: u32) {
        let ma = self.members.remove(&a).unwrap_or_else(|| vec![a]);
        let mb = self.members.remove(&b).unwrap_or_else(|| vec![b]);
        let (root, child, mut big, small) = if ma.len() >= mb.len() {
            (a, b, ma, mb)
        } else {
            (b, a, mb, ma)
        };
        big.extend(small);
        big.sort_unstable();
        self.parent[child as usize] = root;
        self.members.insert(root, big);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::Date;
    use crate::record::Gender;

    fn rec(id: &str, given: Option<&str>) -> Record {
        Record {
            id: id.into(),
            given: given.map(|g| vec![g.to_owned()]).unwrap_or_default(),
            family: vec!["koch".into()],
            birth: Date::parse("1990-01-02"),
            gender: Some(Gender::Female),
            phones: vec!["5551624456".into()],
            ..Record::default()
        }
    }

    /// Mary and Alice (twins) each link to a record without a given name: the chain guard
    /// refuses the second merge and names the two records it would have joined; the twins'
    /// own pair is in review as possible twins, however probable.
    #[test]
    fn every_review_pair_says_why() {
        let records = [
            rec("mary", Some("mary")),
            rec("anon", None),
            rec("alice", Some("alice")),
        ];
        let model = Model::default();
        let config = ClusterConfig {
            threads: 1,
            ..ClusterConfig::default()
        };
        let result = cluster(&records, &model, &config, &|_: u64, _: u64| {});
        assert_eq!(result.stats.refused_merges, 1, "{:?}", result.review);
        assert!(result.review.iter().all(|p| !p.reasons.is_empty()));
        let chain = result
            .review
            .iter()
            .find_map(|p| match p.reasons[0] {
                ReviewReason::TransitiveChain { left, right } => Some((left, right)),
                _ => None,
            })
            .expect("a refused merge says which records would have been joined");
        let mut joined = [
            records[chain.0 as usize].id.as_str(),
            records[chain.1 as usize].id.as_str(),
        ];
        joined.sort_unstable();
        assert_eq!(joined, ["alice", "mary"]);
        let twins = result
            .review
            .iter()
            .find(|p| p.reasons.contains(&ReviewReason::PossibleTwin))
            .expect("the twins' pair is in review");
        assert_eq!(
            (twins.left.min(twins.right), twins.left.max(twins.right)),
            (0, 2)
        );
        assert_eq!(ReviewReason::PossibleTwin.code(), "possible_twin");
    }
}
