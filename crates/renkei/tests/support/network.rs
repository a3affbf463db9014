//! Helpers of the exchange's end-to-end tests (`exchange.rs`, `exchange_privacy.rs`): nodes'
//! import files cut from the Synthea sample, `renkei serve` on a chosen port with its key files
//! in its data directory, tokens signed with a server's own keys, polling.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Data, Server, renkei};

/// A free loopback port (bound then released: the server binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn read_ndjson(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Synthea sample's resources, by file.
pub fn sample() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(super::synthea10())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "ndjson")
                && !p.file_name().unwrap().to_string_lossy().starts_with("log")
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let ty = p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .split('.')
                .next()
                .unwrap()
                .to_owned();
            (ty, read_ndjson(p))
        })
        .collect()
}

/// The study instance UID of the shared person's CT at node B.
pub const STUDY_UID: &str = "1.2.840.99999.1.1";

pub const DIRECTORY: [&str; 4] = [
    "Organization",
    "Location",
    "Practitioner",
    "PractitionerRole",
];

/// The directory of the larger Synthea sample (835 organisations, 836 locations, 835
/// practitioners and their roles), which holds the small sample's by business identifier.
pub fn national_directory() -> Vec<(String, Vec<Value>)> {
    let dir = support_dir().join("synthea-1000");
    DIRECTORY
        .iter()
        .map(|ty| {
            (
                (*ty).to_owned(),
                read_ndjson(&dir.join(format!("{ty}.000.ndjson"))),
            )
        })
        .collect()
}

fn support_dir() -> PathBuf {
    crate::support::synthea10()
        .parent()
        .expect("the samples' directory")
        .to_owned()
}

/// Writes a node's import files into `dir`: the national directory ([`national_directory`],
/// under its own ids, as every node would load it), the Patients `patients` (indices into the
/// small sample's Patients) with everything that names them, every id of theirs prefixed with
/// `prefix` (references and identifiers that repeat an id follow), and `extra` resources as
/// they are.
pub fn node_files(dir: &Path, prefix: &str, patients: &[usize], extra: &[Value]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let sample = sample();
    let all_patients = &sample.iter().find(|(t, _)| t == "Patient").unwrap().1;
    let chosen: Vec<String> = patients
        .iter()
        .map(|&i| all_patients[i]["id"].as_str().unwrap().to_owned())
        .collect();
    let mut ids: std::collections::HashSet<String> = Default::default();
    let mut kept: Vec<(String, Value)> = Vec::new();
    for (ty, resources) in &sample {
        if DIRECTORY.contains(&ty.as_str()) {
            continue;
        }
        for r in resources {
            let text = r.to_string();
            let keep = chosen
                .iter()
                .any(|p| text.contains(&format!("Patient/{p}")) || r["id"] == *p);
            if keep {
                ids.insert(r["id"].as_str().unwrap().to_owned());
                kept.push((ty.clone(), r.clone()));
            }
        }
    }
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (ty, r) in kept {
        let text = r.to_string();
        let text = uuid.replace_all(&text, |c: &regex::Captures<'_>| {
            if ids.contains(&c[0]) {
                format!("{prefix}{}", &c[0])
            } else {
                c[0].to_owned()
            }
        });
        by_type.entry(ty).or_default().push(text.into_owned());
    }
    for (ty, resources) in national_directory() {
        by_type
            .entry(ty)
            .or_default()
            .extend(resources.iter().map(Value::to_string));
    }
    for r in extra {
        by_type
            .entry(r["resourceType"].as_str().unwrap().to_owned())
            .or_default()
            .push(r.to_string());
    }
    by_type
        .into_iter()
        .map(|(ty, lines)| {
            let path = dir.join(format!("{ty}.ndjson"));
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            path
        })
        .collect()
}

pub fn import(data: &Data, files: &[PathBuf]) {
    let status = renkei()
        .arg("import")
        .args(data.args())
        .arg("--quiet")
        .args(files)
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success(), "import failed");
}

/// An access token for the server at `base`, signed with its own keys (as its token endpoint
/// would issue one to a clinician's app or the operator's tool).
pub fn token(keys: &Path, base: &str, client: &str, fhir_user: Option<&str>) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = auth::token::AccessClaims {
        iss: base.trim_end_matches("/fhir").to_owned(),
        sub: client.to_owned(),
        aud: base.to_owned(),
        exp: now + 600,
        iat: now - 1,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: "system/*.cruds".into(),
        client_id: client.to_owned(),
        patient: None,
        fhir_user: fhir_user.map(str::to_owned),
        organization: None,
        purpose_of_use: Some("TREAT".into()),
        break_glass: None,
    };
    super::mint(keys, &claims)
}

pub struct Node {
    pub data: Data,
    pub server: Option<Server>,
    pub base: String,
    pub args: Vec<String>,
}

impl Node {
    pub fn keys(&self) -> PathBuf {
        self.data.dir.join("token-keys.json")
    }
}

/// Starts `renkei serve` for `data` on a chosen port, with `extra` arguments.
pub async fn serve(data: &Data, extra: &[String]) -> (Server, String, Vec<String>) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let keys = data.dir.join("token-keys.json");
    let audit = data.dir.join("audit-signing.key");
    let mut args = vec![
        "--base-url".to_owned(),
        base.clone(),
        "--token-keys".into(),
        keys.display().to_string(),
        "--audit-key".into(),
        audit.display().to_string(),
        "--node-key".into(),
        data.dir.join("node-key.json").display().to_string(),
    ];
    args.extend(extra.iter().cloned());
    let server = start_on(data, port, &args).await;
    (server, base, args)
}

pub async fn start_on(data: &Data, port: u16, args: &[String]) -> Server {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    let listen = format!("127.0.0.1:{port}");
    all.extend(["--listen", &listen]);
    Server::start_with(data, &all).await
}

/// Polls `check` every 200 ms for at most 60 s; its first success.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for _ in 0..300 {
        match check().await {
            Ok(t) => return t,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} never happened: {last}");
}

pub fn holders(parameters: &Value) -> Vec<(String, String, Vec<String>)> {
    let located = exchange::locator::Located::from_parameters(parameters).unwrap();
    located
        .holders
        .into_iter()
        .map(|h| {
            (
                h.node,
                h.patient,
                h.kinds.into_iter().map(|k| k.resource_type).collect(),
            )
        })
        .collect()
}

pub fn full_urls(bundle: &Value) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .filter_map(|e| e["fullUrl"].as_str().map(str::to_owned))
        .collect()
}

/// The small sample's first Patient (the person both nodes hold), its id, and its record at
/// node A (the same with the id `a` + id, as `node_files` prefixes it).
pub fn first_person(sample: &[(String, Vec<Value>)]) -> (Value, String, Value) {
    let patients = &sample.iter().find(|(t, _)| t == "Patient").unwrap().1;
    let first = patients[0].clone();
    let id = first["id"].as_str().unwrap().to_owned();
    let mut at_a = first.clone();
    at_a["id"] = json!(format!("a{id}"));
    (first, id, at_a)
}

/// The value of `patient`'s identifier of `system`.
pub fn identifier_value(patient: &Value, system: &str) -> String {
    patient["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == system)
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The shared person's record at node B: node A's first Patient with B's own identifiers
/// (the SSN kept), another address and phone, and two problems of its own.
pub fn shared_person(first: &Value) -> Vec<Value> {
    let mut p = first.clone();
    p["id"] = json!("b-shared");
    for i in p["identifier"].as_array_mut().unwrap() {
        if i["system"] != "http://hl7.org/fhir/sid/us-ssn" {
            i["value"] = json!(format!("B-{}", i["value"].as_str().unwrap()));
        }
    }
    p["address"] = json!([{"line": ["12 Harbour Road"], "city": "Salem", "state": "MA", "postalCode": "01970"}]);
    p["telecom"] = json!([{"system": "phone", "value": "555-0199", "use": "home"}]);
    let condition = |id: &str, code: &str, text: &str| {
        json!({"resourceType": "Condition", "id": id,
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": text}], "text": text},
            "subject": {"reference": "Patient/b-shared"}, "onsetDateTime": "2024-05-01"})
    };
    let study = json!({"resourceType": "ImagingStudy", "id": "b-study-1", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": format!("urn:oid:{STUDY_UID}")}],
        "subject": {"reference": "Patient/b-shared"}, "started": "2026-11-01T09:00:00Z",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}]});
    vec![
        p,
        study,
        condition("b-cond-1", "38341003", "Hypertension"),
        condition("b-cond-2", "44054006", "Diabetes mellitus type 2"),
    ]
}

/// Starts node `id` of the network whose hub is at `hub_base`: a fresh SQLite store loaded
/// with the small sample's Patients `patients` (ids prefixed with `id`) and `extra`, served with
/// `--role node` and `args`.
pub async fn start_node(
    id: &str,
    patients: std::ops::Range<usize>,
    extra: &[Value],
    hub_base: &str,
    args: &[String],
) -> Node {
    let data = Data::new(crate::support::Backend::Sqlite).await;
    let files = node_files(
        &data.dir.join("import"),
        id,
        &patients.collect::<Vec<_>>(),
        extra,
    );
    import(&data, &files);
    let mut all: Vec<String> = [
        "--role",
        "node",
        "--hub",
        hub_base,
        "--node-id",
        id,
        // Generous: two tests share two cores, and a node that was just restarted is slow.
        "--query-timeout",
        "10",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    all.extend(args.iter().cloned());
    let (server, base, args) = serve(&data, &all).await;
    Node {
        data,
        server: Some(server),
        base,
        args,
    }
}

/// Waits until nodes `ids` have asked the hub of `hub` to join (`renkei nodes list`).
pub async fn registered(hub: &Data, ids: &[&str]) {
    eventually("the registrations", || async {
        let out = renkei()
            .args(["nodes", "list"])
            .args(hub.args())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if ids
            .iter()
            .all(|id| text.contains(&format!("{id}\tpending")))
        {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
}

/// `renkei nodes approve --all-pending` on the hub's store; its standard output.
pub fn approve_all(hub: &Data) -> String {
    let approved = renkei()
        .args(["nodes", "approve", "--all-pending"])
        .args(hub.args())
        .output()
        .unwrap();
    assert!(approved.status.success(), "{approved:?}");
    String::from_utf8_lossy(&approved.stdout).into_owned()
}

/// The diagnostics of a searchset's `OperationOutcome` entry, as text (empty without one).
pub fn outcome_text(bundle: &Value) -> String {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "outcome")
        .map(|e| e["resource"]["issue"].to_string())
        .collect()
}
