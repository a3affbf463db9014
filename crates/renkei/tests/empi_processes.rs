//! Two `renkei serve` processes on one database link Patients as one would: writes of the same
//! people arriving at both at once end with exactly one golden record per person, and no
//! review task that a single process would not have made (linking is serialized across the
//! processes by the store's shared lock, and each process's EMPI cache follows the other's
//! writes through the change feed).

mod support;

use std::sync::Arc;

use serde_json::{Value, json};
use support::{Backend, Data, Server};

const GOLDEN_TAG: &str = "https://renkei.dev/fhir/CodeSystem/empi|golden";
const REVIEW: &str = "https://renkei.dev/fhir/CodeSystem/empi|review";

/// People who match nobody else, each written as `SOURCES` records from different senders.
const PEOPLE: [(&str, &str, &str, &str); 6] = [
    ("Goldner", "Robert", "1943-03-17", "555-806-9773"),
    ("Okafor", "Chiamaka", "1987-11-02", "555-214-3390"),
    ("Tanaka", "Haruto", "1975-06-30", "555-771-0042"),
    ("Lindqvist", "Astrid", "1960-01-21", "555-330-8127"),
    ("Moreau", "Camille", "1999-09-09", "555-612-4455"),
    ("Haddad", "Yusuf", "1952-04-14", "555-908-1276"),
];
const SOURCES: usize = 4;

fn record(person: usize, source: usize) -> Value {
    let (family, given, birth, phone) = PEOPLE[person];
    json!({
        "resourceType": "Patient",
        "id": format!("p{person}-s{source}"),
        "birthDate": birth,
        "identifier": [{"system": format!("urn:mrn:sender{source}"), "value": format!("{person}")}],
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": [format!("{} Elm St", 10 + person)], "city": "Boston", "postalCode": "02118"}]
    })
}

async fn searchset(s: &Server, query: &str) -> Vec<Value> {
    let (status, _, bundle) = s.send("GET", query, &[], None).await;
    assert_eq!(status, 200, "{bundle}");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect()
}

async fn two_processes_keep_one_golden_record_per_person(backend: Backend) {
    let data = Data::new(backend).await;
    let a = Arc::new(Server::start(&data).await);
    let b = Arc::new(Server::start(&data).await);
    // Every person's records go to both servers at the same moment.
    let writes: Vec<_> = (0..PEOPLE.len())
        .flat_map(|person| (0..SOURCES).map(move |source| (person, source)))
        .map(|(person, source)| {
            let server = if (person + source) % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            tokio::spawn(async move {
                let p = record(person, source);
                let path = format!("Patient/{}", p["id"].as_str().unwrap());
                let (status, _, body) = server.send("PUT", &path, &[], Some(&p.to_string())).await;
                assert!(status == 200 || status == 201, "{status} {body}");
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    for server in [&a, &b] {
        let goldens = searchset(server, &format!("Patient?_tag={GOLDEN_TAG}&_count=100")).await;
        assert_eq!(goldens.len(), PEOPLE.len(), "{goldens:#?}");
        for golden in &goldens {
            let links: Vec<&str> = golden["link"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["other"]["reference"].as_str().unwrap())
                .collect();
            assert_eq!(links.len(), SOURCES, "{golden:#}");
            let person = &links[0]["Patient/p".len()..]
                .split('-')
                .next()
                .unwrap()
                .to_owned();
            assert!(
                links
                    .iter()
                    .all(|l| l.starts_with(&format!("Patient/p{person}-"))),
                "one golden record mixes people: {links:?}"
            );
        }
        let reviews = searchset(server, &format!("Task?code={REVIEW}&status=requested")).await;
        assert!(reviews.is_empty(), "{reviews:#?}");
    }
    // A later write to either process is linked with what the other wrote.
    let late = record(0, SOURCES);
    let path = format!("Patient/{}", late["id"].as_str().unwrap());
    let (status, _, body) = b.send("PUT", &path, &[], Some(&late.to_string())).await;
    assert!(status == 201, "{status} {body}");
    let goldens = searchset(&a, &format!("Patient?_tag={GOLDEN_TAG}&_count=100")).await;
    assert_eq!(goldens.len(), PEOPLE.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_keep_one_golden_record_per_person() {
    two_processes_keep_one_golden_record_per_person(Backend::Postgres).await;
}
