//! End-to-end tests of `renkei empi`: the real binary generates labelled duplicates from the
//! Synthea sample, trains a model, clusters, evaluates and explains.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn renkei(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the renkei binary runs");
    assert!(
        out.status.success(),
        "renkei {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn seed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/synthea-1000/Patient.000.ndjson")
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("renkei-empi-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `pairwise precision P recall R f1 F` from `renkei empi evaluate`.
fn measures(stdout: &[u8]) -> (f64, f64, f64) {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("pairwise precision"))
        .unwrap_or_else(|| panic!("no summary in {text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| words[i].parse::<f64>().unwrap();
    (num(2), num(4), num(6))
}

#[test]
fn generate_train_cluster_evaluate_explain() {
    let dir = TempDir::new("pipeline");
    let (patients, labels) = (dir.path("patients.ndjson"), dir.path("labels.csv"));
    let seed = seed();
    renkei(&[
        "empi",
        "generate",
        "--seed",
        &seed.display().to_string(),
        "--output",
        &patients,
        "--labels",
        &labels,
        "--count",
        "1500",
        "--random-seed",
        "5",
    ]);
    let generated = lines(&patients);
    assert_eq!(generated.len(), 1500);
    assert_eq!(lines(&labels)[0], "id,cluster,error");
    assert_eq!(lines(&labels).len(), 1501);

    // Cluster with a model trained on the fly.
    let clusters = dir.path("clusters.csv");
    let out = renkei(&[
        "empi", "cluster", "--input", &patients, "--output", &clusters,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("clustered 1500 records"));
    let rows = lines(&clusters);
    assert_eq!(rows[0], "id,cluster");
    assert_eq!(rows.len(), 1501, "one row per input resource");
    let out = renkei(&[
        "empi",
        "evaluate",
        "--clusters",
        &clusters,
        "--labels",
        &labels,
    ]);
    let (precision, recall, f1) = measures(&out.stdout);
    assert!(precision >= 0.99, "precision {precision}");
    assert!(recall >= 0.9 && f1 >= 0.95, "recall {recall} f1 {f1}");

    // One record at a time, as an import links them: one identity per row, evaluated alike.
    let incremental = dir.path("incremental.csv");
    let out = renkei(&[
        "empi",
        "cluster",
        "--incremental",
        "--input",
        &patients,
        "--output",
        &incremental,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("matched 1500 records one at a time into"),
        "{said}"
    );
    let rows_one_at_a_time = lines(&incremental);
    assert_eq!(rows_one_at_a_time.len(), 1501);
    assert!(
        rows_one_at_a_time[1..]
            .iter()
            .all(|r| r.split_once(",E").is_some()),
        "the cluster is the enterprise identity: {:?}",
        &rows_one_at_a_time[..3]
    );
    let out = renkei(&[
        "empi",
        "evaluate",
        "--clusters",
        &incremental,
        "--labels",
        &labels,
    ]);
    let (precision, recall, _) = measures(&out.stdout);
    assert!(precision >= 0.99 && recall >= 0.9, "{precision} {recall}");
    let refused = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["empi", "cluster", "--incremental", "--review", &incremental])
        .args(["--input", &patients, "--output", &incremental])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "--review has no meaning one at a time"
    );

    // Train a model file, cluster with it: the same engine, loaded from JSON.
    let model = dir.path("model.json");
    renkei(&["empi", "train", "--input", &patients, "--output", &model]);
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(m["fields"].as_array().unwrap().len(), 7);
    let clusters2 = dir.path("clusters2.csv");
    let review = dir.path("review.csv");
    renkei(&[
        "empi",
        "cluster",
        "--input",
        &patients,
        "--output",
        &clusters2,
        "--model",
        &model,
        "--review",
        &review,
        "--threads",
        "1",
    ]);
    assert_eq!(
        lines(&clusters2),
        rows,
        "trained model file reproduces the clustering"
    );
    let review_rows = lines(&review);
    assert_eq!(review_rows[0], "left,right,probability,reason");
    for row in &review_rows[1..] {
        let cols: Vec<&str> = row.splitn(4, ',').collect();
        assert_eq!(cols.len(), 4, "{row}");
        let probability: f64 = cols[2].parse().unwrap();
        let reason = cols[3];
        assert!(!reason.is_empty(), "every review pair says why: {row}");
        if probability >= 0.999 {
            // Probable enough to link: a guard or the chain check held it back, and says so.
            assert!(!reason.starts_with("uncertain"), "{row}");
        }
    }

    // Explain the first record against itself (as another source) and against another person.
    let first: Value = serde_json::from_str(&generated[0]).unwrap();
    let mut copy = first.clone();
    copy["id"] = "copy".into();
    let (a, b, c) = (dir.path("a.json"), dir.path("b.json"), dir.path("c.json"));
    std::fs::write(&a, first.to_string()).unwrap();
    std::fs::write(&b, copy.to_string()).unwrap();
    std::fs::write(&c, &generated[generated.len() - 1]).unwrap();
    let same: Value =
        serde_json::from_slice(&renkei(&["empi", "explain", &a, &b, "--model", &model]).stdout)
            .unwrap();
    assert_eq!(same["class"], "link");
    assert_eq!(same["fields"].as_array().unwrap().len(), 7);
    assert_eq!(same["fields"][1]["field"], "family");
    let other: Value =
        serde_json::from_slice(&renkei(&["empi", "explain", &a, &c]).stdout).unwrap();
    assert_eq!(other["class"], "no_match");

    // Identifiers of different systems are not comparable, which is not "missing".
    let mut left = first.clone();
    left["identifier"] = serde_json::json!([{"system": "urn:mrn:a", "value": "1"}]);
    let mut right = copy.clone();
    right["identifier"] = serde_json::json!([{"system": "urn:mrn:b", "value": "2"}]);
    std::fs::write(&a, left.to_string()).unwrap();
    std::fs::write(&b, right.to_string()).unwrap();
    let explained: Value =
        serde_json::from_slice(&renkei(&["empi", "explain", &a, &b]).stdout).unwrap();
    let identifier = explained["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["field"] == "identifier")
        .unwrap();
    assert_eq!(
        identifier["level"], "not_comparable_different_systems",
        "{identifier}"
    );
    right.as_object_mut().unwrap().remove("identifier");
    std::fs::write(&b, right.to_string()).unwrap();
    let explained: Value =
        serde_json::from_slice(&renkei(&["empi", "explain", &a, &b]).stdout).unwrap();
    assert_eq!(explained["fields"][6]["level"], "missing");
}

#[test]
fn bad_input_fails_with_a_message() {
    let dir = TempDir::new("bad-input");
    let bad = dir.path("bad.csv");
    std::fs::write(&bad, "not,a,header\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["empi", "evaluate", "--clusters", &bad, "--labels", &bad])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected header"));
    assert!(Path::new(&bad).exists());
}
