//! The dependency rule of ARCHITECTURE.md, checked over `cargo metadata`: every workspace crate
//! has a layer, and its (normal and build) dependencies on other workspace crates point to
//! lower layers only; only `server` and `renkei` depend on an HTTP server crate; `server`
//! depends on no HL7 v2, MLLP or SS-MIX2 crate (ingestion reaches it through `ingest`).

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Layers, lowest first: a crate may depend on crates of lower layers only.
const LAYERS: &[(&str, u8)] = &[
    // pure libraries: no I/O of their own, no store
    ("fhirpath", 0),
    ("empi", 0),
    ("hl7v2", 0),
    ("auth", 0),
    ("fhir", 1),
    ("ssmix2", 1),
    ("exchange", 1),
    ("mllp", 1),
    // the store, then the services over it
    ("store", 2),
    ("mpi", 3),
    ("ingest", 4),
    // the HTTP face, then the binary that composes everything
    ("server", 5),
    ("renkei", 6),
    // the generator of `fhir`'s tables: a tool, outside the product
    ("xtask", 7),
];

const HTTP_CRATES: &[&str] = &["axum", "axum-core", "hyper", "hyper-util", "tower-http"];
const MAY_SPEAK_HTTP: &[&str] = &["server", "renkei"];
const NOT_IN_SERVER: &[&str] = &["hl7v2", "mllp", "ssmix2"];

/// Each workspace package with its normal and build dependencies (by name).
fn workspace() -> BTreeMap<String, Vec<String>> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn layer(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

#[test]
fn workspace_dependencies_point_down_the_layers() {
    let packages = workspace();
    let mut broken = Vec::new();
    for (name, deps) in &packages {
        let Some(own) = layer(name) else {
            broken.push(format!(
                "{name} has no layer in this test's LAYERS: place it"
            ));
            continue;
        };
        for dep in deps.iter().filter(|d| packages.contains_key(*d)) {
            let theirs = layer(dep).unwrap_or(u8::MAX);
            if theirs >= own {
                broken.push(format!(
                    "{name} (layer {own}) depends on {dep} (layer {theirs})"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependency rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn only_the_web_crate_and_the_binary_speak_http() {
    let mut broken = Vec::new();
    for (name, deps) in workspace() {
        for dep in deps.iter().filter(|d| HTTP_CRATES.contains(&d.as_str())) {
            if !MAY_SPEAK_HTTP.contains(&name.as_str()) {
                broken.push(format!("{name} depends on {dep}"));
            }
        }
        if name == "server" {
            for dep in deps.iter().filter(|d| NOT_IN_SERVER.contains(&d.as_str())) {
                broken.push(format!(
                    "server depends on {dep}: ingestion goes through `ingest`"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "HTTP rule broken:\n{}",
        broken.join("\n")
    );
}
