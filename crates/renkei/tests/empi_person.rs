//! One person, one record, end to end on SQLite and PostgreSQL through the real binary: two
//! hospitals' records of one person, linked by the EMPI, each with an encounter and an
//! observation; the golden record's `$everything`, a source's `$everything?_mdm=true` and an
//! `Observation?subject:mdm=` search return both hospitals' data, paged; after `$empi-unlink`
//! only the remaining source's; a merge joins them again and an unmerge parts them. The
//! CapabilityStatement says so.

mod support;

use serde_json::{Value, json};
use support::{Backend, Data, Server};

const GOLDEN_TAG: &str = "https://renkei.dev/fhir/CodeSystem/empi|golden";

fn patient(id: &str, mrn: (&str, &str)) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "gender": "male", "birthDate": "1943-03-17",
        "identifier": [{"system": mrn.0, "value": mrn.1}],
        "name": [{"family": "Goldner", "given": ["Robert"]}],
        "telecom": [{"system": "phone", "value": "555-806-9773"}],
        "address": [{"line": ["12 Elm St"], "city": "Boston", "postalCode": "02118"}]
    })
}

async fn put(s: &Server, r: &Value) {
    let path = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    let (status, _, body) = s.send("PUT", &path, &[], Some(&r.to_string())).await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// The golden record listing `Patient/source`.
async fn golden_of(s: &Server, source: &str) -> String {
    let (status, _, bundle) = s
        .send(
            "GET",
            &format!("Patient?_tag={GOLDEN_TAG}&link=Patient/{source}"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(bundle["total"], 1, "{bundle}");
    bundle["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every resource of a search or `$everything`, following the next links, as sorted
/// `Type/id`s (each at most once).
async fn walk(s: &Server, path: &str) -> Vec<String> {
    let base = s.url("");
    let mut next = Some(path.to_owned());
    let mut seen = Vec::new();
    while let Some(path) = next.take() {
        let (status, _, bundle) = s.send("GET", &path, &[], None).await;
        assert_eq!(status, 200, "{path}: {bundle}");
        seen.extend(bundle["entry"].as_array().into_iter().flatten().map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        }));
        next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .map(|l| {
                let url = l["url"].as_str().unwrap();
                url.strip_prefix(&base).unwrap_or(url).to_owned()
            });
    }
    let listed = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(listed, seen.len(), "{path}: a resource came twice");
    seen
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

async fn person(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start(&data).await;
    put(&s, &patient("a", ("urn:mrn:hosp-a", "123"))).await;
    put(&s, &patient("b", ("urn:mrn:clinic-b", "B-9"))).await;
    for p in ["a", "b"] {
        put(
            &s,
            &json!({"resourceType": "Encounter", "id": format!("e-{p}"), "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": format!("Patient/{p}")}}),
        )
        .await;
        put(
            &s,
            &json!({"resourceType": "Observation", "id": format!("o-{p}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": format!("Patient/{p}")},
                "encounter": {"reference": format!("Encounter/e-{p}")}}),
        )
        .await;
    }
    let g = golden_of(&s, "a").await;
    assert_eq!(
        golden_of(&s, "b").await,
        g,
        "one person, linked automatically"
    );

    // The golden record's $everything: itself, both sources, both hospitals' data.
    let everything = sorted(&[
        &format!("Patient/{g}"),
        "Patient/a",
        "Patient/b",
        "Encounter/e-a",
        "Encounter/e-b",
        "Observation/o-a",
        "Observation/o-b",
    ]);
    assert_eq!(
        walk(&s, &format!("Patient/{g}/$everything?_count=2")).await,
        everything
    );
    // A source's: its own, unless _mdm=true.
    let own = walk(&s, "Patient/a/$everything").await;
    assert!(own.contains(&"Observation/o-a".to_owned()), "{own:?}");
    assert!(!own.contains(&"Observation/o-b".to_owned()), "{own:?}");
    assert_eq!(
        walk(&s, "Patient/a/$everything?_mdm=true&_count=3").await,
        everything
    );
    assert_eq!(
        walk(
            &s,
            "Patient/b/$everything?_mdm=true&_type=Observation&_count=1"
        )
        .await,
        sorted(&["Observation/o-a", "Observation/o-b"])
    );
    let (status, _, _) = s
        .send("GET", "Patient/a/$everything?_mdm=maybe", &[], None)
        .await;
    assert_eq!(status, 400);

    // :mdm expands a source or golden reference to the person.
    let both = sorted(&["Observation/o-a", "Observation/o-b"]);
    for who in ["Patient/a", "Patient/b", &format!("Patient/{g}")] {
        assert_eq!(
            walk(&s, &format!("Observation?subject:mdm={who}&_count=1")).await,
            both,
            "{who}"
        );
    }
    let (_, _, counted) = s
        .send(
            "GET",
            "Observation?subject:mdm=Patient/a&_total=accurate&_count=1",
            &[],
            None,
        )
        .await;
    assert_eq!(counted["total"], 2, "{counted}");
    assert_eq!(
        walk(&s, "Observation?subject=Patient/a").await,
        sorted(&["Observation/o-a"])
    );

    // Unlinking b changes every answer at once.
    let unlink = json!({"resourceType": "Parameters", "parameter": [
        {"name": "source", "valueString": "b"}, {"name": "reason", "valueString": "not him"}]});
    let (status, _, out) = s
        .send(
            "POST",
            "Patient/$empi-unlink",
            &[],
            Some(&unlink.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(golden_of(&s, "a").await, g);
    // (The unlink's AuditEvent names the person's records: it is part of the record too.)
    let after: Vec<String> = walk(&s, &format!("Patient/{g}/$everything?_count=2"))
        .await
        .into_iter()
        .filter(|r| !r.starts_with("AuditEvent/"))
        .collect();
    assert_eq!(
        after,
        sorted(&[
            &format!("Patient/{g}"),
            "Patient/a",
            "Encounter/e-a",
            "Observation/o-a",
        ])
    );
    assert_eq!(
        walk(&s, "Observation?subject:mdm=Patient/a").await,
        sorted(&["Observation/o-a"])
    );
    assert_eq!(
        walk(&s, &format!("Observation?subject:mdm=Patient/{g}")).await,
        sorted(&["Observation/o-a"])
    );
    assert_eq!(
        walk(&s, "Observation?subject:mdm=Patient/b").await,
        sorted(&["Observation/o-b"])
    );

    // Merging b's identity into a's joins them again; unmerging parts them again.
    let gb = golden_of(&s, "b").await;
    assert_ne!(gb, g);
    let op = |name: &str, pairs: &[(&str, &str)]| {
        let body = json!({"resourceType": "Parameters", "parameter": pairs.iter()
            .map(|(n, v)| json!({"name": n, "valueString": v})).collect::<Vec<_>>()});
        let path = format!("Patient/{name}");
        let s = &s;
        async move {
            let (status, _, out) = s.send("POST", &path, &[], Some(&body.to_string())).await;
            assert_eq!(status, 200, "{path}: {out}");
        }
    };
    op(
        "$empi-merge",
        &[("from", &gb), ("into", &g), ("reason", "same after all")],
    )
    .await;
    assert_eq!(walk(&s, "Observation?subject:mdm=Patient/a").await, both);
    assert_eq!(
        walk(&s, &format!("Patient/{g}/$everything?_type=Observation")).await,
        both
    );
    op(
        "$empi-unmerge",
        &[("golden", &gb), ("reason", "not after all")],
    )
    .await;
    assert_eq!(
        walk(&s, "Observation?subject:mdm=Patient/a").await,
        sorted(&["Observation/o-a"])
    );
    assert_eq!(
        walk(&s, "Observation?subject:mdm=Patient/b").await,
        sorted(&["Observation/o-b"])
    );

    // The CapabilityStatement declares both.
    let (status, _, cs) = s.send("GET", "metadata", &[], None).await;
    assert_eq!(status, 200);
    let resource = |ty: &str| {
        cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == ty)
            .unwrap()
            .clone()
    };
    let subject = resource("Observation")["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "subject")
        .unwrap()
        .clone();
    assert!(
        subject["documentation"].as_str().unwrap().contains(":mdm"),
        "{subject}"
    );
    let everything_op = resource("Patient")["operation"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "everything")
        .unwrap()
        .clone();
    assert!(
        everything_op["documentation"]
            .as_str()
            .unwrap()
            .contains("_mdm"),
        "{everything_op}"
    );
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_person() {
    person(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_person() {
    person(Backend::Postgres).await;
}
