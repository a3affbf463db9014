//! The EMPI over a real (SQLite) store, without HTTP: a Patient with tens of thousands of
//! repetitions links; survivorship over four manually linked sources follows what most of
//! them say and explains it; review tasks list each candidate identity once and lose a
//! candidate when it is retired (merged away or deleted), closing when none is left; every
//! refusal of a manual decision says why, and sources and golden records may be named as
//! `id` or `Patient/id`.

mod support;

use std::sync::Arc;

use mpi::ManualError;
use mpi::resources::CANDIDATE_TAG_SYSTEM;
use serde_json::{Value, json};
use store::{BasicExtractor, FhirIndexExtractor, SearchQuery, Store, WriteEntry, WriteOp};
use support::{Harness, harness};

impl Harness {
    async fn put(&self, patient: Value) {
        let id = patient["id"].as_str().unwrap().to_owned();
        self.linked
            .transaction(
                &self.ctx,
                vec![WriteEntry::new(WriteOp::Update {
                    resource_type: "Patient".into(),
                    id,
                    resource: patient,
                    if_match: None,
                })],
            )
            .await
            .unwrap();
    }

    async fn delete(&self, id: &str) {
        self.linked
            .transaction(
                &self.ctx,
                vec![WriteEntry::new(WriteOp::Delete {
                    resource_type: "Patient".into(),
                    id: id.into(),
                    if_match: None,
                })],
            )
            .await
            .unwrap();
    }

    /// The golden record id of a source.
    async fn golden_of(&self, source: &str) -> String {
        let (e, _) = self
            .mpi
            .identity_of(&self.ctx, source)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{source} is not linked"));
        e.to_string()
    }

    async fn read(&self, resource_type: &str, id: &str) -> Value {
        let stored = self
            .base
            .load(&self.ctx, resource_type, id)
            .await
            .unwrap()
            .unwrap();
        serde_json::from_str(stored.body.as_deref().unwrap()).unwrap()
    }

    /// Every review task (open or not) focused on `source`.
    async fn reviews_of(&self, source: &str) -> Vec<Value> {
        let params = [
            (
                "code".to_owned(),
                "https://renkei.dev/fhir/CodeSystem/empi|review".to_owned(),
            ),
            ("focus".to_owned(), format!("Patient/{source}")),
        ];
        let q = SearchQuery::parse(Some("Task"), &params, self.base.extractor(), false).unwrap();
        let page = self.base.search(&self.ctx, &q).await.unwrap();
        page.matches
            .iter()
            .map(|r| serde_json::from_str(r.body.as_deref().unwrap()).unwrap())
            .collect()
    }

    async fn link(&self, source: &str, golden: &str) -> Result<(), ManualError> {
        self.mpi
            .link(&self.ctx, source, golden, "checked")
            .await
            .map(|_| ())
    }
}

fn candidates(task: &Value) -> Vec<String> {
    task["input"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            i["valueReference"]["reference"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn candidate_tags(task: &Value) -> Vec<String> {
    task["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["system"] == CANDIDATE_TAG_SYSTEM)
        .map(|t| format!("Patient/{}", t["code"].as_str().unwrap()))
        .collect()
}

fn yui(id: &str, birth: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
           "name": [{"family": "Nakamura", "given": ["Yui"]}]})
}

fn refusal(r: Result<(), ManualError>) -> String {
    match r {
        Err(ManualError::Store(e)) => panic!("a store error, not a refusal: {e}"),
        Err(e) => e.to_string(),
        Ok(()) => panic!("accepted"),
    }
}

/// A Patient repeating its names, telecoms and addresses 50,000 times is linked, its
/// duplicate links to it, and its golden record carries a bounded number of each.
#[tokio::test]
async fn a_patient_with_fifty_thousand_repetitions_links() {
    let h = harness(Arc::new(BasicExtractor));
    let n = 50_000;
    let mut names: Vec<Value> = (0..n)
        .map(|i| json!({"use": "old", "family": format!("Old{i}"), "given": ["Someone"]}))
        .collect();
    names.push(json!({"use": "official", "family": "Goldner", "given": ["Robert"]}));
    let telecom: Vec<Value> = (0..n)
        .map(|i| json!({"system": "phone", "use": "old", "value": format!("555-{:07}", i)}))
        .chain([json!({"system": "phone", "value": "555-806-9773"})])
        .collect();
    let address: Vec<Value> = (0..n)
        .map(|i| json!({"use": "old", "line": [format!("{i} Old Road")]}))
        .chain([json!({"use": "home", "line": ["12 Elm St"], "postalCode": "02118"})])
        .collect();
    h.put(
        json!({"resourceType": "Patient", "id": "big", "gender": "male",
        "birthDate": "1943-03-17", "name": names, "telecom": telecom, "address": address}),
    )
    .await;
    h.put(
        json!({"resourceType": "Patient", "id": "small", "gender": "male",
        "birthDate": "1943-03-17", "name": [{"family": "Goldner", "given": ["Bob"]}],
        "telecom": [{"system": "phone", "value": "(555) 806 9773"}],
        "address": [{"line": ["12 Elm Street"], "postalCode": "02118"}]}),
    )
    .await;
    let e = h.golden_of("big").await;
    assert_eq!(h.golden_of("small").await, e, "the duplicate links to it");
    let golden = h.read("Patient", &e).await;
    for element in ["name", "telecom", "address"] {
        let n = golden[element].as_array().unwrap().len();
        assert!(n <= empi::golden::MAX_REPEATS, "{element}: {n}");
    }
    assert_eq!(golden["name"][0]["family"], "Goldner");
}

/// Four sources of one person, linked by hand, the last one with its own birth date: the
/// golden record takes the birth date two of them agree on, and says so.
#[tokio::test]
async fn survivorship_follows_the_majority_and_explains_it() {
    let h = harness(Arc::new(FhirIndexExtractor::new()));
    let source = |id: &str, given: &str, birth: &str, mrn: &str| {
        json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
               "identifier": [{"system": format!("urn:mrn:{id}"), "value": mrn}],
               "name": [{"family": "Tanaka", "given": [given]}]})
    };
    h.put(source("r1", "Hanako", "1970-05-01", "1")).await;
    h.put(source("r2", "Hanako", "1970-05-01", "2")).await;
    h.put(source("r3", "Hana", "1970-05", "3")).await;
    h.put(source("r4", "Hanako", "1982-11-30", "4")).await;
    let e = h.golden_of("r1").await;
    for (s, g) in [
        ("r2", e.clone()),
        ("Patient/r3", format!("Patient/{e}")),
        ("r4", e.clone()),
    ] {
        h.link(s, &g).await.unwrap();
    }
    let golden = h.read("Patient", &e).await;
    assert_eq!(golden["link"].as_array().unwrap().len(), 4, "{golden}");
    assert_eq!(golden["birthDate"], "1970-05-01", "{golden}");
    let explained = empi::golden::explained(&golden);
    let (_, from, rule, detail) = explained
        .iter()
        .find(|(element, ..)| element == "birthDate")
        .expect("the birth date's choice is explained");
    assert!(from == "Patient/r1" || from == "Patient/r2", "{from}");
    assert_eq!(rule, "agreement");
    assert!(detail.starts_with("2 of 4 sources agree"), "{detail}");
    let (_, _, rule, _) = explained.iter().find(|(el, ..)| el == "name").unwrap();
    assert_eq!(rule, "agreement");
}

/// The review queue: one input per candidate identity; a candidate merged away is replaced
/// by (or folded into) its survivor, a deleted one dropped, and a task without a live
/// candidate cancelled. Refusals say why.
#[tokio::test]
async fn review_candidates_are_distinct_and_live() {
    let h = harness(Arc::new(FhirIndexExtractor::new()));
    h.put(yui("y1", "1990-07-07")).await;
    h.put(yui("y1b", "1990-07-07")).await;
    let e1 = h.golden_of("y1").await;
    assert_eq!(h.golden_of("y1b").await, e1);

    // y3 is probably y1 (or y1b): one task, one candidate, however many records matched.
    h.put(yui("y3", "1990-07-09")).await;
    let e3 = h.golden_of("y3").await;
    assert_ne!(e3, e1);
    let t3 = h.reviews_of("y3").await;
    assert_eq!(t3.len(), 1);
    assert_eq!(candidates(&t3[0]), [format!("Patient/{e1}")], "{}", t3[0]);
    assert_eq!(candidate_tags(&t3[0]), candidates(&t3[0]));

    // m may be either identity.
    h.put(yui("m", "1990-07-08")).await;
    let em = h.golden_of("m").await;
    let tm = h.reviews_of("m").await;
    assert_eq!(tm.len(), 1);
    let mut listed = candidates(&tm[0]);
    listed.sort();
    let mut expected = vec![format!("Patient/{e1}"), format!("Patient/{e3}")];
    expected.sort();
    assert_eq!(listed, expected, "{}", tm[0]);

    // Merge e3 into e1: m's task keeps e1 once; y3's task is settled.
    h.mpi
        .merge(&h.ctx, &format!("Patient/{e3}"), &e1, "same person")
        .await
        .unwrap();
    let tm = h.reviews_of("m").await;
    assert_eq!(tm[0]["status"], "requested", "{}", tm[0]);
    assert_eq!(candidates(&tm[0]), [format!("Patient/{e1}")], "{}", tm[0]);
    assert_eq!(candidate_tags(&tm[0]), candidates(&tm[0]));
    assert_eq!(h.reviews_of("y3").await[0]["status"], "completed");

    // Refusals name the reason.
    let why = refusal(h.link("Patient/m", &format!("Patient/{e3}")).await);
    assert!(
        why.contains(&format!(
            "Patient/{e3} is retired (merged into Patient/{e1})"
        )),
        "{why}"
    );
    let why = refusal(h.link(&e1, &em).await);
    assert!(why.contains("is a golden record, not a source"), "{why}");
    let why = refusal(h.link("m", "y1").await);
    assert!(
        why.contains(&format!(
            "Patient/y1 is a source, not a golden record (its golden record is Patient/{e1})"
        )),
        "{why}"
    );
    let why = refusal(h.link("nobody", &e1).await);
    assert!(why.contains("Patient/nobody does not exist"), "{why}");
    let why = refusal(h.link("Observation/1", &e1).await);
    assert!(why.contains("is not a Patient reference"), "{why}");
    let why = refusal(h.link("m", "E0000009999").await);
    assert!(why.contains("does not exist"), "{why}");
    let why = refusal(h.mpi.unmerge(&h.ctx, &e1, "x").await.map(|_| ()));
    assert!(why.contains("is active"), "{why}");

    // Every source of e1 deleted: e1 is retired, m's task has no live candidate left.
    for s in ["y1", "y1b", "y3"] {
        h.delete(s).await;
    }
    let tm = h.reviews_of("m").await;
    assert_eq!(tm[0]["status"], "cancelled", "{}", tm[0]);
    assert!(
        tm[0]["statusReason"]["text"]
            .as_str()
            .unwrap()
            .contains(&format!("Patient/{e1} was deleted")),
        "{}",
        tm[0]
    );
    assert!(candidate_tags(&tm[0]).is_empty());
    let queue = h.mpi.review_queue(&h.ctx, 50).await.unwrap();
    assert!(queue.is_empty(), "{queue:?}");
    let why = refusal(h.link("m", &e1).await);
    assert!(
        why.contains(&format!(
            "Patient/{e1} is retired (deleted: none of its sources is left)"
        )),
        "{why}"
    );
    let why = refusal(h.link("y1", &em).await);
    assert!(why.contains("Patient/y1 was deleted"), "{why}");
}

/// A woman at one address and phone with a national number (`ssn`) and a hospital record
/// number (`mrn`), either may be empty.
fn mary(id: &str, given: &str, birth: &str, ssn: &str, mrn: &str) -> Value {
    let mut identifiers = Vec::new();
    if !ssn.is_empty() {
        identifiers.push(json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn}));
    }
    if !mrn.is_empty() {
        identifiers.push(json!({"type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "http://hospital.example.org/mrn", "value": mrn}));
    }
    json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
        "name": [{"family": "Koch", "given": [given]}], "identifier": identifiers,
        "address": [{"line": ["12 Elm St"], "city": "Springfield", "postalCode": "01103"}],
        "telecom": [{"system": "phone", "value": "555-162-4456"}]})
}

/// Two registrations of one person, each one error away from the truth and two from each
/// other, get two identities; the record that matches both joins them: one golden record
/// lists all three (the moved ones as `merged`, saying so), the other is retired into it. A
/// person's decision about one of them stops such a merge: the bridging record goes to review.
#[tokio::test]
async fn a_bridging_record_merges_two_identities_unless_a_person_decided() {
    for decided in [false, true] {
        let h = harness(Arc::new(FhirIndexExtractor::new()));
        h.put(mary("a", "Alice", "1990-01-02", "123-45-6789", ""))
            .await;
        h.put(mary("b", "Mary", "1971-08-30", "", "M-1")).await;
        let (ga, gb) = (h.golden_of("a").await, h.golden_of("b").await);
        assert_ne!(ga, gb);
        if decided {
            h.mpi
                .unlink(&h.ctx, "b", "not the same person")
                .await
                .unwrap();
        }
        h.put(mary("c", "Mary", "1990-01-02", "123-45-6789", "M-1"))
            .await;
        let gc = h.golden_of("c").await;
        if decided {
            assert_eq!(h.golden_of("b").await, gb, "a person's decision stands");
            assert_eq!(h.golden_of("a").await, ga);
            assert!(gc == ga || gc != gb, "c did not join b's identity");
            let reviews = h.reviews_of("c").await;
            assert_eq!(reviews.len(), 1, "{reviews:?}");
            continue;
        }
        for id in ["a", "b"] {
            assert_eq!(h.golden_of(id).await, gc, "{id} joined the survivor");
        }
        let survivor = h.read("Patient", &gc).await;
        let links: Vec<(&str, &str)> = survivor["link"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["type"] == "seealso")
            .map(|l| {
                let outcome = l["extension"][0]["extension"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["url"] == "outcome")
                    .and_then(|p| p["valueCode"].as_str())
                    .unwrap();
                (l["other"]["reference"].as_str().unwrap(), outcome)
            })
            .collect();
        assert_eq!(links.len(), 3, "{survivor}");
        assert!(links.contains(&("Patient/c", "linked")), "{links:?}");
        assert_eq!(
            links.iter().filter(|(_, o)| *o == "merged").count(),
            1,
            "{links:?}"
        );
        assert!(survivor.to_string().contains("merged automatically"));
        let retired_id = if gc == ga { &gb } else { &ga };
        let retired = h.read("Patient", retired_id).await;
        assert_eq!(retired["active"], false, "{retired}");
        assert!(
            retired["link"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["type"] == "replaced-by"
                    && l["other"]["reference"] == format!("Patient/{gc}")),
            "{retired}"
        );
        assert!(h.reviews_of("c").await.is_empty());
    }
}
