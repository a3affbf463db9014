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
    for (prefix, keep) in [
        ("gt", (|b: &str, b0: &str| b > b0) as fn(&str, &str) -> bool),
        ("sa", |b, b0| b > b0),
        ("le", |b, b0| b <= b0),
        ("eb", |b, b0| b < b0),
    ] {
        add(
            format!("Patient?birthdate={prefix}{b0}"),
            d.ids("Patient", |p| {
                p["birthDate"].as_str().is_some_and(|b| keep(b, &b0))
            }),
        );
    }
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

    add(
        "Patient?_profile:above=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient/v9"
            .into(),
        d.ids("Patient", |p| {
            strings(p, &["meta", "profile"])
                .contains(&"http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient")
        }),
    );
    // Two links: Condition -> Encounter -> Organization.
    add(
        format!(
            "Condition?encounter.service-provider.name={}",
            org_name.to_lowercase()
        ),
        d.ids("Condition", |c| {
            c["encounter"]["reference"]
                .as_str()
                .and_then(|r| d.resolve(r))
                .and_then(|e| e["serviceProvider"]["reference"].as_str())
                .and_then(|r| d.resolve(r))
                .is_some_and(|o| {
                    o["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().starts_with(&org_name.to_lowercase()))
                })
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
    for (i, probability) in [0.25, 0.5, 0.75].iter().enumerate() {
        out.push(json!({
            "resourceType": "RiskAssessment", "id": format!("risk{i}"), "status": "final",
            "subject": {"identifier": {"system": "urn:test:mrn", "value": format!("mrn{i}")}},
            "performer": {"identifier": {"system": "urn:test:npi", "value": format!("npi{}", i % 2)}},
            "prediction": [{"probabilityDecimal": probability}]
        }));
    }
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
        // number: precision ranges and every prefix (0.25, 0.5, 0.75)
        Case { query: "RiskAssessment?probability=0.5".into(), expected: set(&["risk1"]) },
        Case { query: "RiskAssessment?probability=gt0.3".into(), expected: set(&["risk1", "risk2"]) },
        Case { query: "RiskAssessment?probability=le0.5".into(), expected: set(&["risk0", "risk1"]) },
        Case { query: "RiskAssessment?probability=ne0.5".into(), expected: set(&["risk0", "risk2"]) },
        Case { query: "RiskAssessment?probability=lt0.5".into(), expected: set(&["risk0"]) },
        Case { query: "RiskAssessment?probability=ge0.75".into(), expected: set(&["risk2"]) },
        Case { query: "RiskAssessment?probability=sa0.5".into(), expected: set(&["risk2"]) },
        Case { query: "RiskAssessment?probability=eb0.5".into(), expected: set(&["risk0"]) },
        Case { query: "RiskAssessment?probability=ap0.26".into(), expected: set(&["risk0"]) },
        Case { query: "RiskAssessment?probability:missing=false".into(), expected: set(&["risk0", "risk1", "risk2"]) },
        // reference :identifier
        Case { query: "RiskAssessment?performer:identifier=urn:test:npi|npi1".into(), expected: set(&["risk1"]) },
        Case { query: "RiskAssessment?subject:identifier=mrn2".into(), expected: set(&["risk2"]) },
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
        .arg("--no-empi")
        .args(data.args())
        .arg(synthea_dir())
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start_with(&data, &["--no-empi"]).await;
    for observation in observations() {
        let url = server.url(&format!(
            "{}/{}",
            observation["resourceType"].as_str().unwrap(),
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
    result_parameters(&server, &dataset).await;
    derived_parameters(&server).await;
    errors_and_lenient_handling(&server).await;
    paging_survives_concurrent_writes(&server, &dataset).await;
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let r = server.client.get(server.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Entries of a Bundle with the given search mode, as `Type/id`.
fn entries(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every resource a search returns in order, following `next` links.
async fn all_pages(server: &Server, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = server.url(path);
    loop {
        let bundle: Value = server
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(bundle["resourceType"], "Bundle", "{path}: {bundle}");
        for e in bundle["entry"].as_array().into_iter().flatten() {
            if e["search"]["mode"] == "match" {
                out.push(e["resource"].clone());
            }
        }
        match bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => return out,
        }
    }
}

/// `Type/id` of a resource.
fn type_and_id(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    )
}

fn typed(rtype: &str, ids: BTreeSet<String>) -> BTreeSet<String> {
    ids.into_iter().map(|id| format!("{rtype}/{id}")).collect()
}

/// `_include`, `_revinclude` (`:iterate`), `_sort`, `_total`, `_summary`, `_elements`,
/// `POST _search`, system search, compartment search and `$everything`.
async fn result_parameters(server: &Server, d: &Dataset) {
    let p0 = &d.all("Patient")[0];
    let p0_id = p0["id"].as_str().unwrap();
    let encounters_of_p0 = d.ids("Encounter", |e| d.refers_to(&e["subject"], p0));
    let e0 = encounters_of_p0.iter().next().unwrap().clone();

    // _include: the encounter's subject comes back as an include.
    let (_, b) = get_json(
        server,
        &format!("Encounter?_id={e0}&_include=Encounter:subject"),
    )
    .await;
    assert_eq!(
        entries(&b, "match"),
        typed("Encounter", [e0.clone()].into())
    );
    assert_eq!(
        entries(&b, "include"),
        typed("Patient", [p0_id.to_string()].into())
    );

    // _revinclude, then :iterate from the included encounters to their organisations.
    let (_, b) = get_json(
        server,
        &format!("Patient?_id={p0_id}&_revinclude=Encounter:subject&_include:iterate=Encounter:service-provider&_count=1"),
    )
    .await;
    let orgs: BTreeSet<String> = d
        .all("Encounter")
        .iter()
        .filter(|e| encounters_of_p0.contains(e["id"].as_str().unwrap()))
        .filter_map(|e| {
            e["serviceProvider"]["reference"]
                .as_str()
                .and_then(|r| d.resolve(r))
        })
        .map(|o| format!("Organization/{}", o["id"].as_str().unwrap()))
        .collect();
    let mut expected = typed("Encounter", encounters_of_p0.clone());
    expected.extend(orgs);
    assert_eq!(entries(&b, "include"), expected);

    // _sort over several pages: birth dates ascending, then descending.
    let mut births: Vec<String> = d
        .all("Patient")
        .iter()
        .map(|p| p["birthDate"].as_str().unwrap().to_string())
        .collect();
    births.sort();
    let got: Vec<String> = all_pages(server, "Patient?_sort=birthdate&_count=3")
        .await
        .iter()
        .map(|p| p["birthDate"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, births);
    births.reverse();
    let got: Vec<String> = all_pages(server, "Patient?_sort=-birthdate,_id&_count=4")
        .await
        .iter()
        .map(|p| p["birthDate"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, births);
    // Encounters by period end, newest first, across pages: non-increasing, none lost.
    let sorted = all_pages(
        server,
        &format!("Encounter?patient={p0_id}&_sort=-date&_count=9"),
    )
    .await;
    let ends: Vec<i64> = sorted
        .iter()
        .map(|e| micros(e["period"]["end"].as_str().unwrap()))
        .collect();
    assert!(ends.windows(2).all(|w| w[0] >= w[1]), "not sorted by -date");
    let ids: BTreeSet<String> = sorted
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, encounters_of_p0);

    // _total and _summary=count
    let n_patients = d.all("Patient").len() as u64;
    let (_, b) = get_json(server, "Patient?_count=2&_total=accurate").await;
    assert_eq!(b["total"], n_patients);
    let (_, b) = get_json(server, "Patient?_count=2&_total=none").await;
    assert!(b.get("total").is_none());
    let (_, b) = get_json(server, "Patient?_summary=count").await;
    assert_eq!(b["total"], n_patients);
    assert!(b.get("entry").is_none());

    // _summary=true drops non-summary elements and marks the resource SUBSETTED.
    let (_, b) = get_json(server, &format!("Patient?_id={p0_id}&_summary=true")).await;
    let r = &b["entry"][0]["resource"];
    assert!(
        r.get("communication").is_none() && r.get("maritalStatus").is_none(),
        "{r}"
    );
    assert!(r.get("birthDate").is_some() && r.get("name").is_some());
    assert!(
        r["meta"]["tag"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["code"] == "SUBSETTED")
    );
    // _elements keeps only what was asked (and the mandatory id/meta).
    let (_, b) = get_json(
        server,
        &format!("Patient?_id={p0_id}&_elements=gender,birthDate"),
    )
    .await;
    let keys: BTreeSet<&str> = b["entry"][0]["resource"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["birthDate", "gender", "id", "meta", "resourceType"].into()
    );

    // POST _search equals GET.
    let r = server
        .client
        .post(server.url("Patient/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("gender=female&_count=100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        entries(&b, "match"),
        typed("Patient", d.ids("Patient", |p| p["gender"] == "female"))
    );

    // System-wide search with _type.
    let (status, b) = get_json(
        server,
        "?_type=Patient,Organization&_total=accurate&_count=1",
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        b["total"],
        (d.all("Patient").len() + d.all("Organization").len()) as u64
    );
    let (_, b) = get_json(server, &format!("?_id={p0_id}")).await;
    assert_eq!(
        entries(&b, "match"),
        typed("Patient", [p0_id.to_string()].into())
    );

    // Compartment search.
    let conditions_of_p0 = d.ids("Condition", |c| d.refers_to(&c["subject"], p0));
    let got: BTreeSet<String> = all_pages(server, &format!("Patient/{p0_id}/Condition?_count=5"))
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, conditions_of_p0);
    let got: BTreeSet<String> = all_pages(server, &format!("Patient/{p0_id}/Encounter?class=AMB"))
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got,
        d.ids("Encounter", |e| d.refers_to(&e["subject"], p0)
            && e["class"]["code"] == "AMB")
    );

    // $everything: the patient, its compartment and what those refer to, paged like a
    // search: each resource once across all pages, whatever its role.
    let everything = all_pages(server, &format!("Patient/{p0_id}/$everything?_count=100")).await;
    let listed: Vec<String> = everything.iter().map(type_and_id).collect();
    let got: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        got.len(),
        "$everything repeats resources across its pages"
    );
    assert!(got.contains(&format!("Patient/{p0_id}")));
    for c in typed("Condition", conditions_of_p0.clone())
        .iter()
        .chain(typed("Encounter", encounters_of_p0.clone()).iter())
    {
        assert!(got.contains(c), "$everything misses {c}");
    }
    // Every organisation an encounter of p0 names as its service provider comes (once).
    for e in &encounters_of_p0 {
        let encounter = d.get("Encounter", e).unwrap();
        if let Some(org) = encounter["serviceProvider"]["reference"]
            .as_str()
            .and_then(|r| d.resolve(r))
        {
            let org = format!("Organization/{}", org["id"].as_str().unwrap());
            assert!(got.contains(&org), "$everything misses {org}");
        }
    }
    let (_, first) = get_json(server, &format!("Patient/{p0_id}/$everything?_count=100")).await;
    assert!(entries(&first, "include").is_empty());
    // `_type` narrows everything returned, the referenced resources too.
    let only: Vec<Value> = all_pages(
        server,
        &format!("Patient/{p0_id}/$everything?_type=Condition,Encounter&_count=50"),
    )
    .await;
    let only_ids: BTreeSet<String> = only.iter().map(type_and_id).collect();
    assert_eq!(only.len(), only_ids.len());
    let expected: BTreeSet<String> = typed("Condition", conditions_of_p0.clone())
        .into_iter()
        .chain(typed("Encounter", encounters_of_p0.clone()))
        .collect();
    assert_eq!(only_ids, expected);
    let orgs: Vec<Value> = all_pages(
        server,
        &format!("Patient/{p0_id}/$everything?_type=Organization"),
    )
    .await;
    assert!(!orgs.is_empty() && orgs.iter().all(|r| r["resourceType"] == "Organization"));
    let (status, _) = get_json(server, "Patient/no-such-patient/$everything").await;
    assert_eq!(status, 404);
}

/// Bad searches are 400 with an OperationOutcome; unknown parameters are ignored only when
/// the client asks for lenient handling.
/// Observation's `combo-*` parameters have no rows of their own: a search on one reads the
/// rows of the parameters its expression is the union of. It finds what they find together,
/// a composite's components stay paired within one code (the panel's own code is never paired
/// with a component's value), and the modifiers and `_sort` work on them.
async fn derived_parameters(server: &Server) {
    let union = |parts: Vec<BTreeSet<String>>| parts.into_iter().flatten().collect::<BTreeSet<_>>();
    let equivalences = [
        (
            "combo-code=http://loinc.org|8480-6",
            vec![
                "code=http://loinc.org|8480-6",
                "component-code=http://loinc.org|8480-6",
            ],
        ),
        (
            "combo-code=http://loinc.org|29463-7",
            vec![
                "code=http://loinc.org|29463-7",
                "component-code=http://loinc.org|29463-7",
            ],
        ),
        ("combo-code:not=http://loinc.org|8480-6", vec![]),
        (
            "combo-value-quantity=gt130",
            vec!["value-quantity=gt130", "component-value-quantity=gt130"],
        ),
        (
            "combo-value-quantity=gt69|http://unitsofmeasure.org|kg",
            vec![
                "value-quantity=gt69|http://unitsofmeasure.org|kg",
                "component-value-quantity=gt69|http://unitsofmeasure.org|kg",
            ],
        ),
        (
            "combo-code-value-quantity=http://loinc.org|8480-6$gt130",
            vec![
                "code-value-quantity=http://loinc.org|8480-6$gt130",
                "component-code-value-quantity=http://loinc.org|8480-6$gt130",
            ],
        ),
        (
            "combo-code-value-quantity=http://loinc.org|29463-7$gt80|http://unitsofmeasure.org|kg",
            vec![
                "code-value-quantity=http://loinc.org|29463-7$gt80|http://unitsofmeasure.org|kg",
                "component-code-value-quantity=http://loinc.org|29463-7$gt80|http://unitsofmeasure.org|kg",
            ],
        ),
    ];
    let all = search_ids(server, "Observation").await;
    for (combo, parts) in equivalences {
        let got = search_ids(server, &format!("Observation?{combo}")).await;
        let expected = if parts.is_empty() {
            // `:not`: every Observation without the code in either place.
            let with = search_ids(server, "Observation?combo-code=http://loinc.org|8480-6").await;
            all.difference(&with).cloned().collect()
        } else {
            let mut found = Vec::new();
            for part in parts {
                found.push(search_ids(server, &format!("Observation?{part}")).await);
            }
            union(found)
        };
        assert!(!got.is_empty(), "{combo} finds nothing");
        assert_eq!(got, expected, "{combo}");
    }
    // The fixtures hold their quantity either as the value (w0-w4) or in components (bp).
    let present = search_ids(server, "Observation?combo-value-quantity:missing=false").await;
    let with_value = search_ids(server, "Observation?value-quantity:missing=false").await;
    let with_component_value =
        search_ids(server, "Observation?component-value-quantity:missing=false").await;
    assert!(
        present.contains("bp") && present.contains("w0"),
        "{present:?}"
    );
    assert_eq!(present, union(vec![with_value, with_component_value]));
    let absent = search_ids(server, "Observation?combo-value-quantity:missing=true").await;
    assert_eq!(absent, all.difference(&present).cloned().collect());
    // The panel's code with a component's value is no pair.
    let bp_systolic = search_ids(
        server,
        "Observation?combo-code-value-quantity=http://loinc.org|8480-6$gt130",
    )
    .await;
    assert!(bp_systolic.contains("bp"));
    let crossed = search_ids(
        server,
        "Observation?combo-code-value-quantity=http://loinc.org|85354-9$gt130",
    )
    .await;
    assert!(
        !crossed.contains("bp"),
        "the panel code was paired with a component's value"
    );
    let diastolic_high = search_ids(
        server,
        "Observation?combo-code-value-quantity=http://loinc.org|8462-4$gt130",
    )
    .await;
    assert!(
        !diastolic_high.contains("bp"),
        "the systolic value was paired with the diastolic code"
    );
    let sorted = search_ids(
        server,
        "Observation?combo-code=http://loinc.org|29463-7&_sort=combo-code",
    )
    .await;
    assert_eq!(
        sorted,
        search_ids(server, "Observation?code=http://loinc.org|29463-7").await
    );
}

async fn errors_and_lenient_handling(server: &Server) {
    for bad in [
        "Patient?birthdate=notadate",
        "Patient?gender:exact=female",
        "Patient?foo=bar",
        "Encounter?subject.foo=1",
        "Patient?_sort=foo",
        "Observation?value-quantity=5|kg",
        "Observation?code-value-quantity=http://loinc.org|29463-7",
        "Patient?_include=Patient:gender",
        "Patient?_count=many",
        "Patient?_has:Condition:code:code=1",
    ] {
        let (status, body) = get_json(server, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{bad}");
        assert!(
            !body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{bad}"
        );
    }
    let r = server
        .client
        .get(server.url("Patient?foo=bar&gender=female"))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    let self_link = b["link"][0]["url"].as_str().unwrap();
    assert!(
        !self_link.contains("foo"),
        "ignored parameters are left out of the links: {self_link}"
    );
}

/// A page's `next` link still yields every remaining match, once, after a write that sorts
/// before the cursor.
async fn paging_survives_concurrent_writes(server: &Server, d: &Dataset) {
    let (_, first) = get_json(server, "Patient?_sort=birthdate&_count=3").await;
    let mut seen: Vec<String> = entries(&first, "match").into_iter().collect();
    let newcomer =
        json!({"resourceType": "Patient", "id": "early-bird", "birthDate": "1900-01-01"});
    let r = server
        .client
        .put(server.url("Patient/early-bird"))
        .json(&newcomer)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap();
    let mut url = next["url"].as_str().unwrap().to_string();
    loop {
        let b: Value = server
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen.extend(entries(&b, "match"));
        match b["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
        {
            Some(n) => url = n["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a resource was returned twice");
    assert_eq!(unique, typed("Patient", d.ids("Patient", |_| true)));
    let r = server
        .client
        .delete(server.url("Patient/early-bird"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_oracle_on_sqlite() {
    search_battery(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_the_oracle_on_postgres() {
    search_battery(Backend::Postgres).await;
}
