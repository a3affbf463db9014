//! `renkei bench match` end to end at a tiny size: the real binary generates people from the
//! Synthea sample, imports them through the EMPI (a child `renkei import`, which leaves the
//! index's snapshot beside the store), serves them (a child `renkei serve`), and reports the
//! import rate, the time to `/readyz` and `$match` against `/healthz`; run again on the kept
//! store it skips the import and starts from the snapshot. Figures are printed, never checked.

use std::path::PathBuf;
use std::process::Command;

fn run(args: &[&str]) -> String {
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
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("people.ndjson"));
    }
}

#[test]
fn bench_match_imports_serves_and_measures() {
    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/synthea-1000/Patient.000.ndjson");
    let dir =
        TempDir(std::env::temp_dir().join(format!("renkei-bench-match-{}", std::process::id())));
    let data = dir.0.display().to_string();
    let seed = seed.display().to_string();
    let args = [
        "bench",
        "match",
        "--records",
        "300",
        "--requests",
        "40",
        "--clients",
        "2",
        "--seed",
        seed.as_str(),
        "--data",
        data.as_str(),
    ];
    let first = run(&args);
    assert!(first.contains("generated 300 people"), "{first}");
    assert!(
        first.contains("imported 300 people through the EMPI in"),
        "{first}"
    );
    assert!(first.contains("ready (/readyz 200) after"), "{first}");
    assert!(first.contains("$match p50"), "{first}");
    assert!(first.contains("/healthz p50"), "{first}");
    assert!(
        dir.0.join("empi-index.snapshot").is_file(),
        "the import and the server's shutdown leave the index's snapshot"
    );

    let second = run(&args);
    assert!(second.contains("reusing the store"), "{second}");
    assert!(second.contains("$match above the floor"), "{second}");
}
