//! EMPI linking end to end, on SQLite and PostgreSQL, through the real binary: every Patient
//! write (REST create and update, transaction bundles) gets exactly one golden record; a
//! duplicate links automatically with its score; an uncertain one goes to the review queue;
//! manual link / unlink / merge / unmerge stick, are audited and close the review task; PIXm
//! cross-references identifiers; golden records cannot be written by clients; deleting a
//! source retires its golden record; everything survives a restart; Patients written with
//! `--no-empi` are linked later.

mod support;

use serde_json::{Value, json};
use support::{Backend, Data, Server, renkei};

const GOLDEN_TAG: &str = "https://renkei.dev/fhir/CodeSystem/empi|golden";
const REVIEW: &str = "https://renkei.dev/fhir/CodeSystem/empi|review";
const LINK_EXT: &str = "https://renkei.dev/fhir/StructureDefinition/empi-link";

fn goldner(id: &str, given: &str, phone: &str, mrn: (&str, &str)) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "gender": "male", "birthDate": "1943-03-17",
        "identifier": [{"system": mrn.0, "value": mrn.1}],
        "name": [{"family": "Goldner", "given": [given]}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": ["12 Elm St"], "city": "Boston", "postalCode": "02118"}]
    })
}

async fn put(s: &Server, p: &Value) -> Value {
    let path = format!("Patient/{}", p["id"].as_str().unwrap());
    let (status, _, body) = s.send("PUT", &path, &[], Some(&p.to_string())).await;
    assert!(status == 200 || status == 201, "{status} {body}");
    body
}

/// Golden records, by id.
async fn goldens(s: &Server) -> Vec<Value> {
    let (status, _, bundle) = s
        .send(
            "GET",
            &format!("Patient?_tag={GOLDEN_TAG}&_count=100"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    let mut out: Vec<Value> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect();
    out.sort_by_key(|g| g["id"].as_str().unwrap().to_owned());
    out
}

/// The golden record listing `source`, with that link.
async fn golden_of(s: &Server, source: &str) -> (Value, Value) {
    let reference = format!("Patient/{source}");
    for g in goldens(s).await {
        for link in g["link"].as_array().into_iter().flatten() {
            if link["other"]["reference"] == reference.as_str() && link["type"] == "seealso" {
                return (g.clone(), link.clone());
            }
        }
    }
    panic!("no golden record lists {reference}");
}

fn link_part<'a>(link: &'a Value, name: &str) -> &'a Value {
    let ext = link["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == LINK_EXT)
        .expect("empi-link extension");
    let part = ext["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"] == name);
    match part {
        Some(p) => p
            .get("valueCode")
            .or_else(|| p.get("valueDecimal"))
            .or_else(|| p.get("valueString"))
            .unwrap(),
        None => &Value::Null,
    }
}

fn params(pairs: &[(&str, &str)]) -> String {
    let parameter: Vec<Value> = pairs
        .iter()
        .map(|(n, v)| json!({"name": n, "valueString": v}))
        .collect();
    json!({"resourceType": "Parameters", "parameter": parameter}).to_string()
}

async fn op(s: &Server, name: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = s
        .send(
            "POST",
            &format!("Patient/{name}"),
            &[],
            Some(&params(pairs)),
        )
        .await;
    (status, body)
}

async fn open_reviews(s: &Server) -> Vec<Value> {
    let (status, _, bundle) = s
        .send(
            "GET",
            &format!("Task?code={REVIEW}&status=requested"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .collect()
}

async fn linking(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start(&data).await;

    // A first Patient: a golden record of its own.
    put(
        &s,
        &goldner("a", "Robert", "555-806-9773", ("urn:mrn:hosp-a", "123")),
    )
    .await;
    let (ga, link) = golden_of(&s, "a").await;
    assert_eq!(link_part(&link, "basis"), "auto");
    assert_eq!(link_part(&link, "outcome"), "new");
    assert_eq!(
        ga["identifier"][0]["system"],
        "https://renkei.dev/fhir/sid/enterprise-id"
    );
    assert_eq!(ga["name"][0]["family"], "Goldner");
    let e1 = ga["id"].as_str().unwrap().to_owned();

    // The same person from another facility links automatically, with score and explanation.
    put(
        &s,
        &goldner("b", "Bob", "(555) 806 9773", ("urn:mrn:clinic-b", "B-9")),
    )
    .await;
    let (gb, link) = golden_of(&s, "b").await;
    assert_eq!(gb["id"], e1.as_str());
    assert_eq!(link_part(&link, "outcome"), "linked");
    assert!(link_part(&link, "score").as_f64().unwrap() > 0.99, "{link}");
    assert!(
        link_part(&link, "explanation")
            .as_str()
            .unwrap()
            .contains("nickname"),
        "{link}"
    );
    // The golden record does not carry the sources' identifiers (conditional writes on
    // identifiers keep finding exactly one Patient).
    let (status, _, found) = s
        .send("GET", "Patient?identifier=urn:mrn:hosp-a|123", &[], None)
        .await;
    assert_eq!((status, found["total"].as_u64()), (200, Some(1)), "{found}");

    // A transaction: the new Patient is known by its urn:uuid only; its golden record links
    // to the id the store gave it.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "resource": {"resourceType": "Patient", "gender": "female", "birthDate": "1990-07-07",
                      "name": [{"family": "Nakamura", "given": ["Yui"]}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                      "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}},
         "request": {"method": "POST", "url": "Encounter"}}
    ]});
    let (status, _, reply) = s.send("POST", "", &[], Some(&bundle.to_string())).await;
    assert_eq!(status, 200, "{reply}");
    let loc = reply["entry"][0]["response"]["location"].as_str().unwrap();
    let c = loc
        .split("Patient/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let (gc, _) = golden_of(&s, &c).await;
    assert_ne!(gc["id"], e1.as_str());
    assert_eq!(
        reply["entry"].as_array().unwrap().len(),
        2,
        "only the bundle's own entries"
    );

    // Probable but uncertain: an identity of its own for now, and a review task.
    let maybe = json!({"resourceType": "Patient", "id": "m", "gender": "female",
        "birthDate": "1990-07-08", "name": [{"family": "Nakamura", "given": ["Yui"]}]});
    put(&s, &maybe).await;
    let (gm, link) = golden_of(&s, "m").await;
    assert_eq!(link_part(&link, "outcome"), "review", "{gm}");
    let reviews = open_reviews(&s).await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0]["focus"]["reference"], "Patient/m");
    assert_eq!(
        reviews[0]["input"][0]["valueReference"]["reference"],
        format!("Patient/{}", gc["id"].as_str().unwrap())
    );

    // Bad requests change nothing.
    let (status, oo) = op(
        &s,
        "$empi-link",
        &[("source", "m"), ("golden", gc["id"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, 400, "{oo}");
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("reason")
    );
    let (status, oo) = op(
        &s,
        "$empi-link",
        &[("source", "m"), ("golden", "E0000009999"), ("reason", "x")],
    )
    .await;
    assert_eq!(status, 404, "{oo}");
    let (status, oo) = op(
        &s,
        "$empi-link",
        &[("source", "m"), ("colour", "blue"), ("reason", "x")],
    )
    .await;
    assert_eq!(status, 400, "{oo}");
    assert_eq!(
        oo["issue"][0]["expression"][0],
        "Parameters.parameter[1].name"
    );
    assert_eq!(open_reviews(&s).await.len(), 1);

    // A person decides: m is c. The task closes, an AuditEvent records it.
    let gc_id = gc["id"].as_str().unwrap().to_owned();
    let (status, out) = op(
        &s,
        "$empi-link",
        &[
            ("source", "Patient/m"),
            ("golden", &format!("Patient/{gc_id}")),
            ("reason", "same person, checked by phone"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (g, link) = golden_of(&s, "m").await;
    assert_eq!(g["id"], gc_id.as_str());
    assert_eq!(link_part(&link, "basis"), "manual");
    assert!(open_reviews(&s).await.is_empty());
    let (_, _, audits) = s.send("GET", "AuditEvent?_count=50", &[], None).await;
    assert_eq!(audits["total"], 1, "{audits}");
    assert_eq!(
        audits["entry"][0]["resource"]["outcomeDesc"],
        "same person, checked by phone"
    );
    // m's provisional golden record is gone.
    let (status, _, _) = s
        .send(
            "GET",
            &format!("Patient/{}", gm["id"].as_str().unwrap()),
            &[],
            None,
        )
        .await;
    assert_eq!(status, 410);

    // Manual decisions stick: editing m keeps it with c.
    let mut edited = maybe.clone();
    edited["telecom"] = json!([{"system": "phone", "value": "03-1234-5678"}]);
    put(&s, &edited).await;
    assert_eq!(golden_of(&s, "m").await.0["id"], gc_id.as_str());

    // Unlink b from a: b gets an identity of its own, and keeps it when edited.
    let (status, out) = op(
        &s,
        "$empi-unlink",
        &[("source", "b"), ("reason", "different father's name")],
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (g_b, link) = golden_of(&s, "b").await;
    let e3 = g_b["id"].as_str().unwrap().to_owned();
    assert_ne!(e3, e1);
    assert_eq!(link_part(&link, "outcome"), "separate");
    let mut b2 = goldner("b", "Bob", "(555) 806 9773", ("urn:mrn:clinic-b", "B-9"));
    b2["maritalStatus"] = json!({"text": "married"});
    put(&s, &b2).await;
    assert_eq!(golden_of(&s, "b").await.0["id"], e3.as_str());

    // PIXm while a and b are apart: only a's own identifiers (and the enterprise id).
    let pix = |q: String| {
        let s = &s;
        async move {
            s.send("GET", &format!("Patient/$ihe-pix?{q}"), &[], None)
                .await
        }
    };
    let (status, _, p) = pix("sourceIdentifier=urn:mrn:hosp-a|123".into()).await;
    assert_eq!(status, 200, "{p}");
    assert!(!p.to_string().contains("B-9"), "{p}");

    // Merge b's identity into a's, then undo it.
    let (status, out) = op(
        &s,
        "$empi-merge",
        &[
            ("from", &e3),
            ("into", &e1),
            ("reason", "duplicate identity"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(golden_of(&s, "b").await.0["id"], e1.as_str());
    let (_, _, retired) = s.send("GET", &format!("Patient/{e3}"), &[], None).await;
    assert_eq!(retired["active"], false, "{retired}");
    assert_eq!(retired["link"][0]["type"], "replaced-by");

    let (status, _, p) =
        pix("sourceIdentifier=urn:mrn:hosp-a|123&targetSystem=urn:mrn:clinic-b".into()).await;
    assert_eq!(status, 200, "{p}");
    let ids: Vec<&Value> = p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "targetIdentifier")
        .collect();
    assert_eq!(ids.len(), 1, "{p}");
    assert_eq!(ids[0]["valueIdentifier"]["value"], "B-9");
    assert!(p.to_string().contains("/Patient/b\""), "{p}");
    let (status, _, oo) =
        pix("sourceIdentifier=urn:mrn:hosp-a|123&targetSystem=urn:nowhere".into()).await;
    assert_eq!(status, 403, "{oo}");
    let (status, _, oo) = pix("sourceIdentifier=urn:mrn:hosp-a|999".into()).await;
    assert_eq!(status, 404, "{oo}");
    let (status, _, oo) = pix("targetSystem=urn:mrn:clinic-b".into()).await;
    assert_eq!(status, 400, "{oo}");

    let (status, out) = op(
        &s,
        "$empi-unmerge",
        &[("golden", &e3), ("reason", "merged by mistake")],
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(golden_of(&s, "b").await.0["id"], e3.as_str());
    let (_, _, audits) = s.send("GET", "AuditEvent?_count=50", &[], None).await;
    assert_eq!(audits["total"], 4, "link, unlink, merge, unmerge");

    // Clients cannot write golden records.
    let mut forged = golden_of(&s, "a").await.0;
    forged["birthDate"] = json!("1950-01-01");
    let (status, _, oo) = s
        .send(
            "PUT",
            &format!("Patient/{e1}"),
            &[],
            Some(&forged.to_string()),
        )
        .await;
    assert_eq!(status, 400, "{oo}");
    let (status, _, _) = s.send("DELETE", &format!("Patient/{e1}"), &[], None).await;
    assert_eq!(status, 400);
    // The id space of golden records is reserved, even for identities not made yet.
    let squatter = json!({"resourceType": "Patient", "id": "E0000000099",
                          "name": [{"family": "Squatter"}]});
    let (status, _, oo) = s
        .send(
            "PUT",
            "Patient/E0000000099",
            &[],
            Some(&squatter.to_string()),
        )
        .await;
    assert_eq!(status, 400, "{oo}");

    // A transaction entry named by an absolute fullUrl links under the id it gets.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "http://example.org/fhir/Patient/tmp-1",
         "resource": {"resourceType": "Patient", "gender": "female", "birthDate": "1971-02-03",
                      "name": [{"family": "Abe", "given": ["Kumiko"]}]},
         "request": {"method": "POST", "url": "Patient"}}
    ]});
    let (status, _, reply) = s.send("POST", "", &[], Some(&bundle.to_string())).await;
    assert_eq!(status, 200, "{reply}");
    let loc = reply["entry"][0]["response"]["location"].as_str().unwrap();
    let abe = loc
        .split("Patient/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (g_abe, _) = golden_of(&s, abe).await;
    assert_eq!(g_abe["link"].as_array().unwrap().len(), 1, "{g_abe}");

    // Deleting a source that is alone retires its golden record.
    let (status, _, _) = s.send("DELETE", "Patient/b", &[], None).await;
    assert_eq!(status, 204);
    let (status, _, _) = s.send("GET", &format!("Patient/{e3}"), &[], None).await;
    assert_eq!(status, 410);

    // After a restart the index is rebuilt from the store: a new duplicate of a links to a's
    // identity, and the manual links are as they were.
    s.terminate();
    let s = Server::start(&data).await;
    put(
        &s,
        &goldner("a2", "Rob", "555 806 9773", ("urn:mrn:hosp-c", "77")),
    )
    .await;
    assert_eq!(golden_of(&s, "a2").await.0["id"], e1.as_str());
    let (g, link) = golden_of(&s, "m").await;
    assert_eq!(
        (g["id"].as_str(), link_part(&link, "basis").as_str()),
        (Some(gc_id.as_str()), Some("manual"))
    );
    s.terminate();
}

/// Patients imported with `--no-empi` get their identities from the next import (or serve).
async fn backlog(backend: Backend) {
    let data = Data::new(backend).await;
    let dir = data.dir.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let lines: Vec<String> = [
        goldner("p1", "Robert", "555-806-9773", ("urn:mrn:a", "1")),
        goldner("p2", "Bob", "555-806-9773", ("urn:mrn:b", "2")),
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    std::fs::write(dir.join("Patient.ndjson"), lines.join("\n")).unwrap();
    let status = renkei()
        .arg("import")
        .args(data.args())
        .args(["--no-empi", "--quiet"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let s = Server::start_with(&data, &["--no-empi"]).await;
    assert!(goldens(&s).await.is_empty());
    let (status, _) = op(&s, "$empi-unlink", &[("source", "p1"), ("reason", "x")]).await;
    assert_eq!(status, 501);
    s.terminate();

    let other = dir.join("more");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("Patient.ndjson"),
        goldner("p3", "Robert", "555-806-9773", ("urn:mrn:c", "3")).to_string(),
    )
    .unwrap();
    let out = renkei()
        .arg("import")
        .args(data.args())
        .arg("--quiet")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("linked 2 earlier Patients"));
    let s = Server::start(&data).await;
    let g = goldens(&s).await;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["link"].as_array().unwrap().len(), 3, "{g:?}");
    s.terminate();
}

/// Duplicates written at the same moment still end up in one identity.
async fn concurrent_duplicates(backend: Backend) {
    let data = Data::new(backend).await;
    let s = std::sync::Arc::new(Server::start(&data).await);
    let writes: Vec<_> = (0..6)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let p = goldner(
                    &format!("c{i}"),
                    "Robert",
                    "555-806-9773",
                    ("urn:mrn:x", &format!("{i}")),
                );
                put(&s, &p).await;
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    let g = goldens(&s).await;
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["link"].as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_duplicates() {
    concurrent_duplicates(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_duplicates() {
    concurrent_duplicates(Backend::Postgres).await;
}

/// The review queue worked from the command line.
async fn review_cli(backend: Backend) {
    let data = Data::new(backend).await;
    let dir = data.dir.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let yui = |id: &str, birth: &str| {
        json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": birth,
               "name": [{"family": "Nakamura", "given": ["Yui"]}]})
        .to_string()
    };
    std::fs::write(
        dir.join("Patient.ndjson"),
        [yui("y1", "1990-07-07"), yui("y2", "1990-07-08")].join("\n"),
    )
    .unwrap();
    // `renkei import|empi review` + the store arguments + the rest.
    let run = |args: &[&str]| {
        let head = if args[0] == "empi" { 2 } else { 1 };
        // Without $USER: the audit names the operating-system account all the same.
        let out = renkei()
            .args(&args[..head])
            .args(data.args())
            .args(&args[head..])
            .env_remove("USER")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dir_arg = dir.display().to_string();
    let (code, _, err) = run(&["import", "--quiet", &dir_arg]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = run(&["empi", "review"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("Patient/y2") && out.contains("candidates: Patient/E"),
        "{out}"
    );
    assert!(err.contains("1 open review item"), "{err}");
    let y1_golden = out
        .split("candidates: Patient/")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    // Linking is what the review queue is about: there is no --no-empi to turn it off.
    let (code, _, err) = run(&["empi", "review", "--no-empi"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--no-empi"), "{err}");
    let (code, _, err) = run(&["empi", "review", "separate", "y2"]);
    assert_ne!(code, Some(0), "a decision needs --reason: {err}");
    let (code, out, err) = run(&[
        "empi",
        "review",
        "--user",
        "dr-sato",
        "separate",
        "y2",
        "--reason",
        "twin sister",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("changed Patient/E"), "{out}");
    let (_, _, err) = run(&["empi", "review"]);
    assert!(err.contains("0 open review item"), "{err}");
    let (code, _, err) = run(&[
        "empi",
        "review",
        "link",
        "nobody",
        "E0000000001",
        "--reason",
        "x",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("refused: source Patient/nobody does not exist"),
        "{err}"
    );
    // A golden record given as the source: refused, saying so.
    let (code, _, err) = run(&[
        "empi", "review", "link", &y1_golden, &y1_golden, "--reason", "x",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is a golden record, not a source"), "{err}");
    // Both `id` and `Patient/id` name a Patient: y2 is y1 after all.
    let (code, out, err) = run(&[
        "empi",
        "review",
        "link",
        "Patient/y2",
        &format!("Patient/{y1_golden}"),
        "--reason",
        "same person after all",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("Patient/{y1_golden}")), "{out}");
    let s = Server::start(&data).await;
    let (_, _, audits) = s.send("GET", "AuditEvent?_count=10", &[], None).await;
    assert_eq!(audits["total"], 2, "{audits}");
    let who: Vec<&str> = audits["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["resource"]["agent"][0]["who"]["display"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(who.contains(&"user cli:dr-sato"), "{who:?}");
    let os_user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let os_user = String::from_utf8_lossy(&os_user.stdout).trim().to_owned();
    assert!(!os_user.is_empty());
    assert!(
        who.contains(&format!("user cli:{os_user}").as_str()),
        "{who:?}"
    );
    let (g, link) = golden_of(&s, "y2").await;
    assert_eq!(g["id"], y1_golden.as_str());
    assert_eq!(link_part(&link, "basis"), "manual");
    s.terminate();

    // A command that only reads or decides on a store refuses one that does not exist.
    if backend == Backend::Sqlite {
        let typo = data.dir.join("typo");
        let out = renkei()
            .args(["empi", "review", "--data"])
            .arg(&typo)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("no store in"), "{err}");
        assert!(!typo.exists(), "nothing is created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_review_cli() {
    review_cli(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_review_cli() {
    review_cli(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_linking() {
    linking(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_linking() {
    linking(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backlog() {
    backlog(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backlog() {
    backlog(Backend::Postgres).await;
}
