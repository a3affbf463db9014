//! FHIR search over synthea-10, checked against an independent oracle.
//!
//! The real `renkei` binary imports `../shared/data/synthea-10` (on SQLite and on PostgreSQL);
//! every case then searches over HTTP, follows all `next` links, and compares the id set with
//! what a predicate over the raw NDJSON says it must be. The predicates never use the server's
//! code: they read the JSON directly, resolving Synthea's conditional references
//! (`Practitioner?identifier=...`) themselves.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate};
use serde_json::{Value, json};
use support::{Backend, Data, Server, renkei};

/// The raw data, by resource type.
struct Dataset {
    by_type: HashMap<String, Vec<Value>>,
}

fn synthea_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-10")
}

impl Dataset {
    fn load() -> Dataset {
        let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
        for entry in std::fs::read_dir(synthea_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.ends_with("log.ndjson") {
                continue;
            }
            for line in std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let r: Value = serde_json::from_str(line).unwrap();
                by_type
                    .entry(r["resourceType"].as_str().unwrap().to_string())
                    .or_default()
                    .push(r);
            }
        }
        Dataset { by_type }
    }

    fn all(&self, rtype: &str) -> &[Value] {
        self.by_type.get(rtype).map(Vec::as_slice).unwrap_or(&[])
    }

    fn ids(&self, rtype: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        self.all(rtype)
            .iter()
            .filter(|r| pred(r))
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    }

    fn get(&self, rtype: &str, id: &str) -> Option<&Value> {
        self.all(rtype).iter().find(|r| r["id"] == id)
    }

    /// `Type/id` or `Type?identifier=system|value` to the resource it names.
    fn resolve(&self, reference: &str) -> Option<&Value> {
        if let Some((rtype, query)) = reference.split_once('?') {
            let (system, value) = query.strip_prefix("identifier=")?.split_once('|')?;
            return self.all(rtype).iter().find(|r| {
                r["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["system"] == system && i["value"] == value)
            });
        }
        let (rtype, id) = reference.split_once('/')?;
        self.get(rtype, id)
    }

    fn refers_to(&self, reference: &Value, target: &Value) -> bool {
        reference["reference"]
            .as_str()
            .and_then(|r| self.resolve(r))
            .is_some_and(|r| r["id"] == target["id"] && r["resourceType"] == target["resourceType"])
    }
}

/// Every string under a path of property names (arrays flattened).
fn strings<'v>(v: &'v Value, path: &[&str]) -> Vec<&'v str> {
    let mut current = vec![v];
    for key in path {
        current = current
            .into_iter()
            .flat_map(|c| match &c[*key] {
                Value::Array(items) => items.iter().collect::<Vec<_>>(),
                Value::Null => Vec::new(),
                other => vec![other],
            })
            .collect();
    }
    current.into_iter().filter_map(Value::as_str).collect()
}

/// Whether a CodeableConcept (or array of them) at `path` has a coding with `code` (and `system`).
fn has_coding(v: &Value, path: &[&str], system: Option<&str>, code: &str) -> bool {
    let mut coding_path = path.to_vec();
    coding_path.push("coding");
    let mut found = false;
    let mut nodes = vec![v];
    for key in &coding_path {
        nodes = nodes
            .into_iter()
            .flat_map(|c| match &c[*key] {
                Value::Array(items) => items.iter().collect::<Vec<_>>(),
                Value::Null => Vec::new(),
                other => vec![other],
            })
            .collect();
    }
    for coding in nodes {
        found |= coding["code"] == code && system.is_none_or(|s| coding["system"] == s);
    }
    found
}

/// An instant in µs, from a FHIR dateTime with zone or a date (taken as UTC midnight).
fn micros(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .or_else(|_| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_micros())
        })
        .unwrap_or_else(|e| panic!("bad date {s}: {e}"))
}

fn day(s: &str) -> i64 {
    micros(s)
}

fn lower_ascii_fold(s: &str) -> String {
    s.to_lowercase()
}

struct Case {
    query: String,
    expected: BTreeSet<String>,
}

fn cases(d: &Dataset) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |query: String, expected: BTreeSet<String>| cases.push(Case { query, expected });
    let patients = d.all("Patient");
    let p0 = &patients[0];
    let p0_id = p0["id"].as_str().unwrap().to_string();
    let family0 = strings(p0, &["name", "family"])[0].to_string();
    let prefix0: String = family0.chars().take(3).collect();
    let given0 = strings(p0, &["name", "given"])[0].to_string();

    // --- string: default is case-insensitive starts-with; :exact; :contains
    add(
        format!("Patient?family={}", prefix0.to_uppercase()),
        d.ids("Patient", |p| {
            strings(p, &["name", "family"])
                .iter()
                .any(|f| lower_ascii_fold(f).starts_with(&prefix0.to_lowercase()))
        }),
    );
    add(
        format!("Patient?family:exact={family0}"),
        d.ids("Patient", |p| {
            strings(p, &["name", "family"]).contains(&family0.as_str())
        }),
    );
    add(
        format!("Patient?family:exact={}", family0.to_lowercase()),
        d.ids("Patient", |p| {
            strings(p, &["name", "family"]).contains(&family0.to_lowercase().as_str())
        }),
    );
    let middle: String = given0.chars().skip(1).take(3).collect();
    add(
        format!("Patient?name:contains={middle}"),
        d.ids("Patient", |p| {
            ["family", "given", "prefix", "suffix", "text"]
                .iter()
                .any(|k| {
                    strings(p, &["name", k])
                        .iter()
                        .any(|s| s.to_lowercase().contains(&middle.to_lowercase()))
                })
        }),
    );
    add(
        "Patient?address-state=massachusetts".into(),
        d.ids("Patient", |p| {
            strings(p, &["address", "state"])
                .iter()
                .any(|s| s.to_lowercase().starts_with("massachusetts"))
        }),
    );

    // --- token
    add(
        "Patient?gender=female".into(),
        d.ids("Patient", |p| p["gender"] == "female"),
    );
    add(
        "Patient?gender=female,male".into(),
        d.ids("Patient", |p| {
            p["gender"] == "female" || p["gender"] == "male"
        }),
    );
    add(
        "Patient?gender:not=female".into(),
        d.ids("Patient", |p| p["gender"] != "female"),
    );
    add(
        "Condition?clinical-status=active".into(),
        d.ids("Condition", |c| {
            has_coding(c, &["clinicalStatus"], None, "active")
        }),
    );
    let condition_code = d.all("Condition")[0]["code"]["coding"][0]["code"]
        .as_str()
        .unwrap()
        .to_string();
    add(
        format!("Condition?code=http://snomed.info/sct|{condition_code}"),
        d.ids("Condition", |c| {
            has_coding(
                c,
                &["code"],
                Some("http://snomed.info/sct"),
                &condition_code,
            )
        }),
    );
    add(
        format!("Condition?code={condition_code}"),
        d.ids("Condition", |c| {
            has_coding(c, &["code"], None, &condition_code)
        }),
    );
    add(
        format!("Condition?code=http://loinc.org|{condition_code}"),
        BTreeSet::new(),
    );
    add(
        "Condition?code:text=diabetes".into(),
        d.ids("Condition", |c| {
            strings(c, &["code", "text"])
                .iter()
                .chain(strings(c, &["code", "coding", "display"]).iter())
                .any(|t| t.to_lowercase().contains("diabetes"))
        }),
    );
    add(
        "Encounter?class=AMB,EMER".into(),
        d.ids("Encounter", |e| {
            e["class"]["code"] == "AMB" || e["class"]["code"] == "EMER"
        }),
    );
    add(
        "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|".into(),
        d.ids("Encounter", |e| {
            e["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
        }),
    );
    let npi = d.all("Practitioner")[0]["identifier"][0].clone();
    add(
        format!(
            "Practitioner?identifier={}|{}",
            npi["system"].as_str().unwrap(),
            npi["value"].as_str().unwrap()
        ),
        d.ids("Practitioner", |p| {
            p["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i == &npi)
        }),
    );
    add(
        "MedicationRequest?status=active&intent=order".into(),
        d.ids("MedicationRequest", |m| {
            m["status"] == "active" && m["intent"] == "order"
        }),
    );

    // --- date: prefixes and precision
    add(
        "Patient?birthdate=ge1970".into(),
        d.ids("Patient", |p| {
            p["birthDate"].as_str().is_some_and(|b| b >= "1970")
        }),
    );
    add(
        "Patient?birthdate=lt1960-06".into(),
        d.ids("Patient", |p| {
            p["birthDate"].as_str().is_some_and(|b| b < "1960-06")
        }),
    );
    let b0 = p0["birthDate"].as_str().unwrap().to_string();
    add(
        format!("Patient?birthdate={b0}"),
        d.ids("Patient", |p| p["birthDate"] == b0.as_str()),
    );
    add(
        format!("Patient?birthdate=ne{b0}"),
        d.ids("Patient", |p| {
            p["birthDate"].as_str().is_some_and(|b| b != b0)
        }),
    );
    add(
        format!("Patient?birthdate={}", &b0[..4]),
        d.ids("Patient", |p| {
            p["birthDate"]
                .as_str()
                .is_some_and(|b| b.starts_with(&b0[..4]))
        }),
    );
    // Encounter.period: `ge2015` means the period ends at or after 2015-01-01.
    let y2015 = day("2015-01-01");
    add(
        "Encounter?date=ge2015-01-01".into(),
        d.ids("Encounter", |e| {
            e["period"]["end"]
                .as_str()
                .is_none_or(|end| micros(end) >= y2015)
        }),
    );
    let (lo, hi) = (day("2010-01-01"), day("2012-01-01"));
    add(
        "Encounter?date=ge2010-01-01&date=lt2012-01-01".into(),
        d.ids("Encounter", |e| {
            let start = e["period"]["start"].as_str().map_or(i64::MIN, micros);
            let end = e["period"]["end"].as_str().map_or(i64::MAX, micros);
            end >= lo && start < hi
        }),
    );
    add(
        "Condition?onset-date=lt1980-01-01".into(),
        d.ids("Condition", |c| {
            c["onsetDateTime"]
                .as_str()
                .is_some_and(|o| micros(o) < day("1980-01-01"))
        }),
    );
    add(
        "Condition?abatement-date:missing=true".into(),
        d.ids("Condition", |c| {
            c["abatementDateTime"].is_null()
                && c["abatementPeriod"].is_null()
                && c["abatementAge"].is_null()
                && c["abatementRange"].is_null()
                && c["abatementString"].is_null()
        }),
    );
    add(
        "Condition?abatement-date:missing=false".into(),
        d.ids("Condition", |c| c["abatementDateTime"].is_string()),
    );

    // --- reference: relative id, Type/id, :Type, chains, reverse chains
    add(
        format!("Condition?subject=Patient/{p0_id}"),
        d.ids("Condition", |c| d.refers_to(&c["subject"], p0)),
    );
    add(
        format!("Condition?patient={p0_id}"),
        d.ids("Condition", |c| d.refers_to(&c["subject"], p0)),
    );
    add(
        format!("Condition?subject:Patient={p0_id}"),
        d.ids("Condition", |c| d.refers_to(&c["subject"], p0)),
    );
    add(format!("Condition?subject:Group={p0_id}"), BTreeSet::new());
    add(
        "Encounter?subject.gender=male".into(),
        d.ids("Encounter", |e| {
            e["subject"]["reference"]
                .as_str()
                .and_then(|r| d.resolve(r))
                .is_some_and(|p| p["gender"] == "male")
        }),
    );
    add(
        "Encounter?patient.birthdate=lt1950".into(),
        d.ids("Encounter", |e| {
            e["subject"]["reference"]
                .as_str()
                .and_then(|r| d.resolve(r))
                .is_some_and(|p| p["birthDate"].as_str().is_some_and(|b| b < "1950"))
        }),
    );
    let org = &d.all("Organization")[0];
    let org_name = org["name"].as_str().unwrap().to_string();
    add(
        format!(
            "Encounter?service-provider.name={}",
            org_name.to_lowercase()
        ),
        d.ids("Encounter", |e| {
            e["serviceProvider"]["reference"]
                .as_str()
                .and_then(|r| d.resolve(r))
                .is_some_and(|o| {
                    o["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().starts_with(&org_name.to_lowercase()))
                })
        }),
    );
    add(
        format!(
            "Encounter?participant.identifier={}|{}",
            npi["system"].as_str().unwrap(),
            npi["value"].as_str().unwrap()
        ),
        d.ids("Encounter", |e| {
            e["participant"].as_array().into_iter().flatten().any(|p| {
                p["individual"]["reference"]
                    .as_str()
                    .and_then(|r| d.resolve(r))
                    .is_some_and(|pr| {
                        pr["identifier"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|i| i == &npi)
                    })
            })
        }),
    );
    add(
        format!("Patient?_has:Condition:patient:code={condition_code}"),
        d.ids("Patient", |p| {
            d.all("Condition").iter().any(|c| {
                d.refers_to(&c["subject"], p) && has_coding(c, &["code"], None, &condition_code)
            })
        }),
    );
    add(
        "Patient?_has:Encounter:patient:class=EMER".into(),
        d.ids("Patient", |p| {
            d.all("Encounter")
                .iter()
                .any(|e| d.refers_to(&e["subject"], p) && e["class"]["code"] == "EMER")
        }),
    );

    // --- uri
    add(
        "Patient?_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient".into(),
        d.ids("Patient", |p| {
            strings(p, &["meta", "profile"])
                .contains(&"http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")
        }),
    );
    add(
        "Condition?_profile:below=http://hl7.org/fhir/us/core/".into(),
        d.ids("Condition", |c| {
            strings(c, &["meta", "profile"])
                .iter()
                .any(|u| u.starts_with("http://hl7.org/fhir/us/core/"))
        }),
    );

    // --- _id and combinations
    let two: Vec<String> = patients
        .iter()
        .take(2)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    add(
        format!("Patient?_id={}", two.join(",")),
        two.iter().cloned().collect(),
    );
    add(
        format!("Patient?_id={}&gender=female", two.join(",")),
        d.ids("Patient", |p| {
            two.contains(&p["id"].as_str().unwrap().to_string()) && p["gender"] == "female"
        }),
    );
    cases
}

/// Observations with quantities, composites and numbers, written by the test (synthea-10 has none).
fn observations() -> Vec<Value> {
    let mut out = Vec::new();
    let weights = [
        ("kg", 70.0),
        ("kg", 82.5),
        ("g", 64000.0),
        ("[lb_av]", 150.0),
        ("kg", 100.0),
    ];
    for (i, (unit, value)) in weights.iter().enumerate() {
        out.push(json!({
            "resourceType": "Observation", "id": format!("w{i}"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        }));
    }
    out.push(json!({
        "resourceType": "Observation", "id": "bp", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 140, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 90, "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    }));
    out
}

fn quantity_cases() -> Vec<Case> {
    let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    vec![
        // 70 kg, 82.5 kg, 64 kg, 68.04 kg, 100 kg
        Case { query: "Observation?value-quantity=gt69|http://unitsofmeasure.org|kg".into(), expected: set(&["w0", "w1", "w4"]) },
        Case { query: "Observation?value-quantity=lt70000|http://unitsofmeasure.org|g".into(), expected: set(&["w2", "w3"]) },
        Case { query: "Observation?value-quantity=64|http://unitsofmeasure.org|kg".into(), expected: set(&["w2"]) },
        Case { query: "Observation?value-quantity=100||kg".into(), expected: set(&["w4"]) },
        // Without a unit, the numbers are compared as written: 64000 (g) and 150 ([lb_av]) match.
        Case { query: "Observation?value-quantity=ge82.5".into(), expected: set(&["w1", "w2", "w3", "w4"]) },
        Case { query: "Observation?code-value-quantity=http://loinc.org|29463-7$gt80|http://unitsofmeasure.org|kg".into(), expected: set(&["w1", "w4"]) },
        Case { query: "Observation?component-code-value-quantity=http://loinc.org|8480-6$gt130".into(), expected: set(&["bp"]) },
        Case { query: "Observation?component-code-value-quantity=http://loinc.org|8462-4$gt130".into(), expected: BTreeSet::new() },
    ]
}

/// Every id a search returns, following `next` links; panics on duplicates across pages.
async fn search_ids(server: &Server, query: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut url = server.url(&format!(
        "{query}{}_count=7",
        if query.contains('?') { "&" } else { "?" }
    ));
    for _ in 0..1000 {
        let response = server.client.get(&url).send().await.unwrap();
        let status = response.status();
        let bundle: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{query}: {bundle}");
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            if entry["search"]["mode"] != "match" {
                continue;
            }
            let id = entry["resource"]["id"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "{query}: {id} returned twice");
        }
        match bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => return ids,
        }
    }
    panic!("{query}: more than 1000 pages");
}

async fn search_battery(backend: Backend) {
    let data = Data::new(backend).await;
    let status = renkei()
        .arg("import")
        .args(data.args())
        .arg(synthea_dir())
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start(&data).await;
    for observation in observations() {
        let url = server.url(&format!(
            "Observation/{}",
            observation["id"].as_str().unwrap()
        ));
        let r = server
            .client
            .put(url)
            .json(&observation)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    }
    let dataset = Dataset::load();
    let mut failures = Vec::new();
    let all = cases(&dataset).into_iter().chain(quantity_cases());
    let mut checked = 0;
    for case in all {
        let got = search_ids(&server, &case.query).await;
        checked += 1;
        if got != case.expected {
            let missing: Vec<_> = case.expected.difference(&got).take(3).collect();
            let extra: Vec<_> = got.difference(&case.expected).take(3).collect();
            failures.push(format!(
                "{}: expected {} got {} (missing {missing:?}, extra {extra:?})",
                case.query,
                case.expected.len(),
                got.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} searches differ from the oracle:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_oracle_on_sqlite() {
    search_battery(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_oracle_on_postgres() {
    search_battery(Backend::Postgres).await;
}
