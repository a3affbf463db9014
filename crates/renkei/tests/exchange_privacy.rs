//! The exchange in privacy mode, end to end: a hub and two nodes, each a separate `renkei
//! serve` process, the nodes started with one `--network-key` file the hub never gets.
//!
//! One person is at both nodes with the same SSN and other facility identifiers, address and
//! phone (`support::network::shared_person`). Shown: the hub's patient index links the two
//! pseudonyms, so `$locate` by the *hashed* SSN names both nodes and a node's network query
//! (`$locate?source=`) reaches the other node's records, also as a type search
//! (`Condition?patient=[id]&_network=true`); the hub refuses a clear Patient from a private
//! node (422); and once the hub has stopped, no file in its data directory holds the person's
//! names or identifiers, nor other patients' family names. A node refuses a network key
//! without `--hub`, and a hub refuses one outright.

mod support;

use std::path::Path;

use exchange::privacy::NetworkKey;
use serde_json::{Value, json};
use support::network::{
    approve_all, eventually, first_person, full_urls, holders, identifier_value, registered,
    sample, serve, shared_person, start_node, token,
};
use support::{Backend, Data, renkei};

const SSN_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";

/// The value of the first identifier of `patient` in `system`.
/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `renkei serve` with `args`, expected to refuse to start: its stderr.
fn refused(data: &Data, args: &[&str]) -> String {
    let out = renkei()
        .arg("serve")
        .args(data.args())
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn privacy_mode_locates_without_clear_values_at_the_hub() {
    let sample = sample();
    let patients = &sample.iter().find(|(t, _)| t == "Patient").unwrap().1;
    let (first, first_id, shared) = first_person(&sample);
    let first = &first;
    let ssn = identifier_value(first, SSN_SYSTEM);
    let licence = identifier_value(first, "urn:oid:2.16.840.1.113883.4.3.25");
    let family = first["name"][0]["family"].as_str().unwrap().to_owned();
    let given = first["name"][0]["given"][0].as_str().unwrap().to_owned();

    // The nodes' key, in one file both nodes read.
    let keys = Data::new(Backend::Sqlite).await;
    let key_text = NetworkKey::generate();
    let key_file = keys.dir.join("network.key");
    std::fs::write(&key_file, &key_text).unwrap();
    let key = NetworkKey::from_text(&key_text).unwrap();
    let key_arg = key_file.display().to_string();

    // A network key needs --hub; a hub never takes one.
    let nowhere = Data::new(Backend::Sqlite).await;
    let why = refused(
        &nowhere,
        &[
            "--role",
            "node",
            "--node-id",
            "x",
            "--base-url",
            "http://127.0.0.1:9/fhir",
            "--network-key",
            &key_arg,
        ],
    );
    assert!(why.contains("--hub"), "{why}");
    let why = refused(&nowhere, &["--network-key", &key_arg]);
    assert!(why.contains("--hub"), "{why}");
    let why = refused(
        &nowhere,
        &[
            "--role",
            "hub",
            "--hub",
            "http://127.0.0.1:9/fhir",
            "--network-key",
            &key_arg,
        ],
    );
    assert!(why.contains("--network-key is a node's"), "{why}");

    // The hub, without the key.
    let hub_data = Data::new(Backend::Sqlite).await;
    let (hub_server, hub_base, _) = serve(&hub_data, &["--role".into(), "hub".into()]).await;
    let hub_keys = hub_data.dir.join("token-keys.json");
    let hub_token = token(&hub_keys, &hub_base, "operator", None);

    // Two nodes in privacy mode.
    let mut nodes = Vec::new();
    for (id, range) in [("a", 0..6), ("b", 6..10)] {
        let extra = if id == "b" {
            shared_person(&shared)
        } else {
            Vec::new()
        };
        let args = ["--network-key".to_owned(), key_arg.clone()];
        nodes.push(start_node(id, range, &extra, &hub_base, &args).await);
    }
    registered(&hub_data, &["a", "b"]).await;
    approve_all(&hub_data);

    // The requester hashes the SSN as the nodes do; the hub finds both nodes' pseudonyms.
    let hashed_ssn = key.hash(&format!("identifier|{SSN_SYSTEM}"), &ssn);
    let locate = format!("Patient/$locate?identifier={SSN_SYSTEM}|{hashed_ssn}");
    let located = eventually("the shared person located at both nodes", || {
        let (hub_server, hub_token, locate) = (&hub_server, &hub_token, &locate);
        async move {
            let (status, body) = hub_server.get_as(hub_token, locate).await;
            if status != 200 {
                return Err(format!("{status} {body}"));
            }
            let h = holders(&body);
            let b_has_conditions = h
                .iter()
                .any(|(n, _, k)| n == "b" && k.contains(&"Condition".to_owned()));
            if h.iter().any(|(n, _, _)| n == "a") && b_has_conditions {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        }
    })
    .await;
    let h = holders(&located);
    assert!(
        h.iter()
            .any(|(n, p, _)| n == "a" && *p == format!("a{first_id}"))
    );
    assert!(h.iter().any(|(n, p, _)| n == "b" && p == "b-shared"));
    assert!(
        located["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "person"),
        "the hub's index linked the two pseudonyms: {located}"
    );
    // By demographics, hashed as the pseudonyms are: the index finds the person for certain.
    let birth = first["birthDate"].as_str().unwrap();
    let by_demographics = format!(
        "Patient/$locate?family={}&given={}&birthdate={}&gender={}",
        key.hash("family", &empi::normalize::name(&family)),
        key.hash("given", &empi::normalize::name(&given)),
        exchange::privacy::hashed_birth_date(birth, &key).unwrap(),
        first["gender"].as_str().unwrap(),
    );
    let (status, found) = hub_server.get_as(&hub_token, &by_demographics).await;
    assert_eq!(status, 200, "{found}");
    let mut nodes_found: Vec<String> = holders(&found).into_iter().map(|(n, _, _)| n).collect();
    nodes_found.sort();
    assert_eq!(nodes_found, ["a", "b"], "{found}");

    // The hub keeps pseudonyms only.
    let (status, copies) = hub_server.get_as(&hub_token, "Patient?_count=200").await;
    assert_eq!(status, 200, "{copies}");
    let copies: Vec<&Value> = copies["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|p| !mpi::resources::is_golden(p))
        .collect();
    assert_eq!(copies.len(), 11, "{copies:?}");
    assert!(copies.iter().all(|p| exchange::privacy::is_pseudonym(p)));

    // The network query at A: the locator by source, then B's records.
    let server_a = nodes[0].server.as_ref().unwrap();
    let a_base = &nodes[0].base;
    let b_base = nodes[1].base.clone();
    let a_keys = nodes[0].keys();
    let clinician = token(&a_keys, a_base, "ehr-a", Some("Practitioner/dr-a"));
    let (status, bundle) = server_a
        .get_as(
            &clinician,
            &format!("Patient/a{first_id}/$everything?_network=true"),
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    let urls = full_urls(&bundle);
    assert!(
        urls.contains(&format!("{b_base}/Condition/b-cond-1")),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("{a_base}/Patient/a{first_id}")),
        "{urls:?}"
    );

    // A type search by patient or subject asks the network as the compartment search does.
    let (status, compartment) = server_a
        .get_as(
            &clinician,
            &format!("Patient/a{first_id}/Condition?_network=true"),
        )
        .await;
    assert_eq!(status, 200, "{compartment}");
    let expected = full_urls(&compartment);
    assert!(expected.contains(&format!("{b_base}/Condition/b-cond-2")));
    assert!(
        expected
            .iter()
            .any(|u| u.starts_with(&format!("{a_base}/Condition/"))),
        "{expected:?}"
    );
    for query in [
        format!("Condition?patient=a{first_id}&_network=true"),
        format!("Condition?_network=true&subject=Patient/a{first_id}"),
        format!("Condition?patient=Patient/a{first_id}&_network=true"),
    ] {
        let (status, bundle) = server_a.get_as(&clinician, &query).await;
        assert_eq!(status, 200, "{query}: {bundle}");
        assert_eq!(full_urls(&bundle), expected, "{query}");
        let provenances = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Provenance")
            .count();
        assert_eq!(provenances, 2, "{query}: {bundle}");
    }
    for query in [
        "Condition?_network=true".to_owned(),
        format!("Condition?patient=a{first_id},b&_network=true"),
        format!("Condition?patient=a{first_id}&subject=Patient/x&_network=true"),
        "Condition?subject=Group/g&_network=true".to_owned(),
    ] {
        let (status, outcome) = server_a.get_as(&clinician, &query).await;
        assert_eq!(status, 400, "{query}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let why = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(why.contains("exactly one patient"), "{why}");
    }

    // A private node's clear Patient is refused, and nothing of it is kept.
    let node_token = token(&hub_keys, &hub_base, "a", None);
    let batch = json!({"sharing": "private", "changes": [{
        "resource_type": "Patient", "id": "clear-1", "version": 1,
        "last_updated": "2026-01-01T00:00:00Z",
        "resource": {"resourceType": "Patient", "id": "clear-1",
            "identifier": [{"system": SSN_SYSTEM, "value": ssn}],
            "name": [{"family": family, "given": [given]}]}}]});
    let response = hub_server
        .client
        .post(format!(
            "{}/exchange/publish",
            hub_base.trim_end_matches("/fhir")
        ))
        .bearer_auth(&node_token)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let outcome: Value = response.json().await.unwrap();
    assert!(outcome.to_string().contains("not a pseudonym"), "{outcome}");

    // Stopped with SIGTERM (SQLite checkpoints), the hub's files hold no clear value.
    let status = hub_server.terminate();
    assert!(status.success(), "{status:?}");
    let files = files_under(&hub_data.dir);
    let mut stored: Vec<(String, Vec<u8>)> = Vec::new();
    for path in &files {
        stored.push((path.display().to_string(), std::fs::read(path).unwrap()));
    }
    assert!(
        stored
            .iter()
            .any(|(name, _)| name.ends_with(".db") || name.contains("sqlite")),
        "{files:?}"
    );
    // The scan sees stored text: the hashed SSN, and the directory's clear names.
    let practitioner =
        sample.iter().find(|(t, _)| t == "Practitioner").unwrap().1[0]["name"][0]["family"]
            .as_str()
            .unwrap()
            .to_owned();
    for known in [hashed_ssn.as_str(), practitioner.as_str()] {
        assert!(
            stored.iter().any(|(_, b)| contains(b, known.as_bytes())),
            "the scan does not see {known}"
        );
    }
    let normalised = |s: &str| empi::normalize::name(s);
    let mut secrets = vec![
        family.clone(),
        given.clone(),
        ssn.clone(),
        ssn.replace('-', ""),
        licence.clone(),
    ];
    // As the index normalises them (long enough not to occur in base64 text by chance).
    secrets.extend(
        [normalised(&family), normalised(&given)]
            .into_iter()
            .filter(|n| n.len() >= 5),
    );
    // The directory travels in clear: a value it holds (a practitioner of a patient's name)
    // proves nothing either way, so such values are not looked for.
    let directory: String = support::network::national_directory()
        .iter()
        .flat_map(|(_, rs)| rs.iter().map(Value::to_string))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    secrets.retain(|secret| !directory.contains(&secret.to_lowercase()));
    assert!(
        secrets.contains(&ssn) && secrets.contains(&given),
        "{secrets:?}"
    );
    // Other patients' family and given names, as sent (Synthea's carry digits: no chance match).
    let others: Vec<String> = patients[1..10]
        .iter()
        .flat_map(|p| {
            [
                p["name"][0]["family"].as_str().unwrap().to_owned(),
                p["name"][0]["given"][0].as_str().unwrap().to_owned(),
            ]
        })
        .filter(|f| !directory.contains(&f.to_lowercase()))
        .collect();
    assert!(others.len() >= 5, "{others:?}");
    secrets.extend(others);
    for secret in &secrets {
        let lower = secret.to_lowercase();
        for (name, bytes) in &stored {
            let text = bytes.to_ascii_lowercase();
            assert!(
                !contains(&text, lower.as_bytes()),
                "{name} holds '{secret}'"
            );
        }
    }
    drop(nodes);
}
