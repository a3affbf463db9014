//! Accuracy of the engine on labelled duplicates generated from the Synthea sample in
//! `../shared`: the model is trained without labels (EM), then batch clustering and the
//! incremental index are each scored pairwise against the labels, overall and by error type.

use std::path::PathBuf;

use empi::cluster::{self, ClusterConfig};
use empi::eval::{self, Evaluation};
use empi::synth::{self, GenConfig, Generated};
use empi::{EnterpriseIndex, IndexConfig, Model, Record};
use serde_json::Value;

fn seeds() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/synthea-1000/Patient.000.ndjson");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the shared Synthea sample)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn dataset(seed: u64) -> Generated {
    synth::generate(
        &seeds(),
        &GenConfig {
            seed,
            ..GenConfig::default()
        },
    )
}

fn records_of(data: &Generated) -> Vec<Record> {
    data.patients
        .iter()
        .map(|p| Record::from_patient(p).unwrap())
        .collect()
}

/// The batch clusterer's `(record id, cluster)` pairs, with a model trained on the records.
fn batch_clusters(records: &[Record]) -> Vec<(String, String)> {
    let model = trained(records);
    let result = cluster::cluster(records, &model, &ClusterConfig::default(), &|_, _| {});
    records
        .iter()
        .zip(&result.cluster_of)
        .map(|(r, c)| (r.id.clone(), records[*c as usize].id.clone()))
        .collect()
}

fn trained(records: &[Record]) -> Model {
    let mut model = Model::default();
    cluster::train(records, &mut model, &ClusterConfig::default(), 1_000_000, 7);
    model
}

fn check(name: &str, e: &Evaluation) {
    println!("{name}\n{e}");
    assert!(
        e.overall.precision() >= 0.995,
        "{name}: precision {:.4} < 0.995",
        e.overall.precision()
    );
    assert!(
        e.overall.f1() >= 0.98,
        "{name}: F1 {:.4} < 0.98",
        e.overall.f1()
    );
}

#[test]
fn batch_clustering_meets_the_accuracy_targets() {
    for seed in [1, 2] {
        let data = dataset(seed);
        let predicted = batch_clusters(&records_of(&data));
        check(
            &format!("batch, seed {seed}, {} records", predicted.len()),
            &eval::evaluate(&predicted, &data.labels),
        );
    }
}

#[test]
fn incremental_index_meets_the_accuracy_targets() {
    let data = dataset(3);
    let records = records_of(&data);
    let model = trained(&records);
    let mut index = EnterpriseIndex::new(model, IndexConfig::default());
    let mut predicted = Vec::new();
    for r in records {
        let d = index.insert_record(r).unwrap();
        predicted.push((d.record_id, d.enterprise_id.to_string()));
    }
    check(
        &format!("incremental, {} records", predicted.len()),
        &eval::evaluate(&predicted, &data.labels),
    );
}

/// Issue 19's error classes (replaced given name, birth date or both names under one national
/// number, national number digits swapped with the birth date missing, address words split
/// or joined, kanji conversion errors, long vowels, a second record number at one facility)
/// generated with household members and twins.
fn issue_19_set() -> Generated {
    synth::generate(
        &seeds(),
        &GenConfig {
            seed: 4,
            replaced_rate: 0.6,
            ..GenConfig::default()
        },
    )
}

/// The issue-19 classes are linked by error type, and household members and twins kept apart.
fn check_issue_19_classes(name: &str, e: &Evaluation) {
    println!("{name}\n{e}");
    // Precision holds on every class; recall floors sit a little under the issue's 0.99 (met
    // at 300 000 records and more, see docs/benchmarks.md) as a set this size has a dozen
    // pairs of some classes.
    assert!(e.overall.precision() >= 0.999, "{name}: {e}");
    let floors = [
        ("given_replaced", 0.97),
        ("birth_replaced", 0.97),
        ("identifier_swapped", 0.97),
        ("kanji_conversion", 0.95),
        ("long_vowel", 0.9),
        ("second_mrn", 0.93),
        ("names_replaced", 0.97),
        ("address_split", 0.97),
    ];
    for (kind, floor) in floors {
        let (_, counts) = e
            .by_error
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("no {kind} duplicates generated"));
        assert!(counts.precision() >= 0.995, "{name}, {kind}: {e}");
        assert!(
            counts.recall() >= floor,
            "{name}, {kind}: recall below {floor}\n{e}"
        );
    }
    for kind in ["twin", "household"] {
        let counts = e.by_error.iter().find(|(k, _)| *k == kind).map(|(_, c)| c);
        assert_eq!(
            counts.map_or(0, |c| c.false_positives),
            0,
            "{name}, {kind}: {e}"
        );
    }
    assert!(e.by_error.iter().any(|(k, _)| *k == "household"), "{e}");
}

#[test]
fn replaced_values_and_readings_are_linked_by_error_type() {
    let data = issue_19_set();
    let predicted = batch_clusters(&records_of(&data));
    check_issue_19_classes(
        &format!("batch, issue 19 classes, {} records", predicted.len()),
        &eval::evaluate(&predicted, &data.labels),
    );
}

/// The same classes through the incremental index with the built-in model, as an import or a
/// server links them, the records in a shuffled order: a person's records arrive in any
/// order, and two duplicates too different to link on their own are joined when a third
/// record matching both arrives.
#[test]
fn records_in_any_order_are_linked_by_error_type_one_at_a_time() {
    let data = issue_19_set();
    let mut records = records_of(&data);
    let mut rng = empi::rng::Rng::new(19);
    for i in (1..records.len()).rev() {
        records.swap(i, rng.below(i + 1));
    }
    let mut index = EnterpriseIndex::new(Model::default(), IndexConfig::default());
    let mut merges = 0;
    for r in records {
        merges += index.insert_record(r).unwrap().merged.len();
    }
    assert!(merges > 0, "no identities were joined by a bridging record");
    let predicted: Vec<(String, String)> = data
        .patients
        .iter()
        .filter_map(|p| p["id"].as_str())
        .map(|id| (id.to_owned(), index.enterprise_of(id).unwrap().to_string()))
        .collect();
    check_issue_19_classes(
        &format!(
            "incremental, shuffled, issue 19 classes, {} records",
            predicted.len()
        ),
        &eval::evaluate(&predicted, &data.labels),
    );
}
