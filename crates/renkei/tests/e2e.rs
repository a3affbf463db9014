//! End-to-end tests against the real `renkei` binary, on SQLite and on PostgreSQL: every REST
//! interaction and its error paths, bundles, graceful shutdown, import, and a kill -9 during an
//! import.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use serde_json::{Value, json};
use support::{Backend, Data, Server, renkei, synthea10};

/// method, path, headers, body, expected status.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, u16);

fn code(body: &Value) -> &str {
    body["issue"][0]["code"].as_str().unwrap_or("")
}

async fn crud_and_its_error_paths(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;

    // create: 201, Location, ETag, Last-Modified; the body's id is ignored.
    let (st, h, b) = s
        .send(
            "POST",
            "Patient",
            &[],
            Some(r#"{"resourceType":"Patient","id":"x","name":[{"family":"Ito"}]}"#),
        )
        .await;
    assert_eq!(st, 201);
    let id = b["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "x");
    assert_eq!(h["etag"], "W/\"1\"");
    assert_eq!(
        h["location"].to_str().unwrap(),
        s.url(&format!("Patient/{id}/_history/1"))
    );
    assert!(h.contains_key("last-modified"));

    // read, vread, update, If-Match.
    let (st, _, b) = s.send("GET", &format!("Patient/{id}"), &[], None).await;
    assert_eq!((st, b["name"][0]["family"].as_str()), (200, Some("Ito")));
    let upd =
        json!({"resourceType": "Patient", "id": id, "name": [{"family": "Sato"}]}).to_string();
    let (st, h, _) = s
        .send(
            "PUT",
            &format!("Patient/{id}"),
            &[("if-match", "W/\"1\"")],
            Some(&upd),
        )
        .await;
    assert_eq!((st, h["etag"].to_str().unwrap()), (200, "W/\"2\""));
    let (st, _, b) = s
        .send(
            "PUT",
            &format!("Patient/{id}"),
            &[("if-match", "W/\"1\"")],
            Some(&upd),
        )
        .await;
    assert_eq!((st, code(&b)), (412, "conflict"));
    let (st, _, b) = s
        .send(
            "PUT",
            &format!("Patient/{id}"),
            &[("if-match", "one")],
            Some(&upd),
        )
        .await;
    assert_eq!((st, code(&b)), (400, "invalid"));
    let (st, _, b) = s
        .send("GET", &format!("Patient/{id}/_history/1"), &[], None)
        .await;
    assert_eq!((st, b["name"][0]["family"].as_str()), (200, Some("Ito")));
    assert_eq!(
        s.send("GET", &format!("Patient/{id}/_history/9"), &[], None)
            .await
            .0,
        404
    );
    assert_eq!(s.send("GET", "Patient/unknown", &[], None).await.0, 404);

    // Conditional read: 304 with the ETag and no body when the client's copy is current.
    let (st, h, b) = s
        .send(
            "GET",
            &format!("Patient/{id}"),
            &[("if-none-match", "W/\"2\"")],
            None,
        )
        .await;
    assert_eq!(
        (st, &b, h["etag"].to_str().unwrap()),
        (304, &Value::Null, "W/\"2\"")
    );
    let (st, _, _) = s
        .send(
            "GET",
            &format!("Patient/{id}"),
            &[("if-none-match", "W/\"1\"")],
            None,
        )
        .await;
    assert_eq!(st, 200);
    let last_modified = h["last-modified"].to_str().unwrap().to_owned();
    let (st, _, _) = s
        .send(
            "GET",
            &format!("Patient/{id}"),
            &[("if-modified-since", &last_modified)],
            None,
        )
        .await;
    assert_eq!(st, 304);
    let (st, _, b) = s
        .send(
            "GET",
            &format!("Patient/{id}"),
            &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
            None,
        )
        .await;
    assert_eq!((st, b["id"].as_str()), (200, Some(id.as_str())));
    let (st, _, _) = s
        .send(
            "GET",
            &format!("Patient/{id}/_history/1"),
            &[("if-none-match", "W/\"1\"")],
            None,
        )
        .await;
    assert_eq!(st, 304);

    // update-as-create with a client id.
    let (st, h, _) = s
        .send(
            "PUT",
            "Patient/client-1",
            &[],
            Some(r#"{"resourceType":"Patient","id":"client-1"}"#),
        )
        .await;
    assert_eq!(st, 201);
    assert!(
        h["location"]
            .to_str()
            .unwrap()
            .ends_with("/Patient/client-1/_history/1")
    );

    // bad input: 400/415/406 with an OperationOutcome, nothing changes.
    let bad: &[Case] = &[
        ("POST", "Patient", &[], "{\"resourceType\":", 400),
        (
            "POST",
            "Patient",
            &[],
            r#"{"resourceType":"Observation"}"#,
            400,
        ),
        (
            "PUT",
            "Patient/client-1",
            &[],
            r#"{"resourceType":"Patient","id":"other"}"#,
            400,
        ),
        (
            "PUT",
            "Patient/client-1",
            &[],
            r#"{"resourceType":"Patient"}"#,
            400,
        ),
        (
            "POST",
            "Patient",
            &[("content-type", "application/fhir+xml")],
            "<Patient xmlns=\"http://hl7.org/fhir\"/>",
            415,
        ),
        (
            "POST",
            "NotAType",
            &[],
            r#"{"resourceType":"NotAType"}"#,
            404,
        ),
    ];
    for (m, p, hd, body, want) in bad {
        let (st, _, b) = s.send(m, p, hd, Some(body)).await;
        assert_eq!(st, *want, "{m} {p} {body}");
        assert_eq!(b["resourceType"], "OperationOutcome");
    }
    assert_eq!(
        s.send("GET", "Patient/client-1/_history", &[], None)
            .await
            .2["entry"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.send("GET", &format!("Patient/{id}?_format=xml"), &[], None)
            .await
            .0,
        406
    );
    assert_eq!(
        s.send(
            "GET",
            &format!("Patient/{id}"),
            &[("accept", "application/fhir+xml")],
            None
        )
        .await
        .0,
        406
    );
    let (st, h, _) = s
        .send(
            "GET",
            &format!("Patient/{id}?_format=json&_pretty=true"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (st, h["content-type"].to_str().unwrap()),
        (200, "application/fhir+json; charset=utf-8")
    );

    // Prefer.
    let p = json!({"resourceType": "Patient", "id": "client-1", "active": true}).to_string();
    let (st, _, b) = s
        .send(
            "PUT",
            "Patient/client-1",
            &[("prefer", "return=minimal")],
            Some(&p),
        )
        .await;
    assert_eq!((st, b), (200, Value::Null));
    let (_, _, b) = s
        .send(
            "PUT",
            "Patient/client-1",
            &[("prefer", "return=OperationOutcome")],
            Some(&p),
        )
        .await;
    assert_eq!(b["resourceType"], "OperationOutcome");

    // PATCH.
    let patch = r#"[{"op":"replace","path":"/name/0/family","value":"Kato"}]"#;
    let jp = ("content-type", "application/json-patch+json");
    let (st, h, b) = s
        .send("PATCH", &format!("Patient/{id}"), &[jp], Some(patch))
        .await;
    assert_eq!(
        (
            st,
            b["name"][0]["family"].as_str(),
            h["etag"].to_str().unwrap()
        ),
        (200, Some("Kato"), "W/\"3\"")
    );
    assert_eq!(
        s.send(
            "PATCH",
            &format!("Patient/{id}"),
            &[jp, ("if-match", "W/\"1\"")],
            Some(patch)
        )
        .await
        .0,
        412
    );
    assert_eq!(
        s.send("PATCH", &format!("Patient/{id}"), &[jp], Some("{\"op\":1}"))
            .await
            .0,
        400
    );
    let failing = r#"[{"op":"test","path":"/name/0/family","value":"Nope"}]"#;
    assert_eq!(
        s.send("PATCH", &format!("Patient/{id}"), &[jp], Some(failing))
            .await
            .0,
        422
    );
    let change_id = r#"[{"op":"replace","path":"/id","value":"other"}]"#;
    assert_eq!(
        s.send("PATCH", &format!("Patient/{id}"), &[jp], Some(change_id))
            .await
            .0,
        422
    );
    assert_eq!(
        s.send("PATCH", &format!("Patient/{id}"), &[], Some(patch))
            .await
            .0,
        415
    );

    // delete: logical, 410 afterwards, history kept.
    let (st, h, _) = s.send("DELETE", &format!("Patient/{id}"), &[], None).await;
    assert_eq!((st, h["etag"].to_str().unwrap()), (204, "W/\"4\""));
    let (st, _, b) = s.send("GET", &format!("Patient/{id}"), &[], None).await;
    assert_eq!((st, code(&b)), (410, "deleted"));
    assert_eq!(
        s.send("GET", &format!("Patient/{id}/_history/4"), &[], None)
            .await
            .0,
        410
    );
    assert_eq!(
        s.send("GET", &format!("Patient/{id}/_history/3"), &[], None)
            .await
            .0,
        200
    );
    let (_, _, hist) = s
        .send("GET", &format!("Patient/{id}/_history"), &[], None)
        .await;
    let methods: Vec<&str> = hist["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["DELETE", "PATCH", "PUT", "POST"]);
    assert_eq!(s.send("DELETE", "Patient/never", &[], None).await.0, 404);
    assert_eq!(
        s.send(
            "DELETE",
            &format!("Patient/{id}"),
            &[("if-match", "W/\"1\"")],
            None
        )
        .await
        .0,
        412
    );
}

async fn conditional_interactions(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;
    let pat = r#"{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"42"}]}"#;
    let ine = ("if-none-exist", "identifier=urn:mrn|42");
    let (st, _, first) = s.send("POST", "Patient", &[ine], Some(pat)).await;
    assert_eq!(st, 201);
    let (st, h, again) = s.send("POST", "Patient", &[ine], Some(pat)).await;
    assert_eq!((st, &again["id"]), (200, &first["id"]));
    assert!(h.contains_key("location"));

    // Conditional update: one match updates it; no match creates.
    let changed = r#"{"resourceType":"Patient","active":true,"identifier":[{"system":"urn:mrn","value":"42"}]}"#;
    let (st, _, b) = s
        .send("PUT", "Patient?identifier=urn:mrn|42", &[], Some(changed))
        .await;
    assert_eq!(
        (st, &b["id"], b["meta"]["versionId"].as_str()),
        (200, &first["id"], Some("2"))
    );
    // The same content again is not a new version.
    let (st, _, same) = s
        .send("PUT", "Patient?identifier=urn:mrn|42", &[], Some(changed))
        .await;
    assert_eq!((st, same["meta"]["versionId"].as_str()), (200, Some("2")));
    let other = r#"{"resourceType":"Patient","identifier":[{"system":"urn:mrn","value":"43"}]}"#;
    assert_eq!(
        s.send("PUT", "Patient?identifier=urn:mrn|43", &[], Some(other))
            .await
            .0,
        201
    );
    assert_eq!(s.send("PUT", "Patient", &[], Some(other)).await.0, 400);

    // A second 42: conditional create, update and delete refuse with 412.
    assert_eq!(s.send("POST", "Patient", &[], Some(pat)).await.0, 201);
    let (st, _, b) = s.send("POST", "Patient", &[ine], Some(pat)).await;
    assert_eq!((st, code(&b)), (412, "multiple-matches"));
    assert_eq!(
        s.send("PUT", "Patient?identifier=urn:mrn|42", &[], Some(pat))
            .await
            .0,
        412
    );
    assert_eq!(
        s.send("DELETE", "Patient?identifier=urn:mrn|42", &[], None)
            .await
            .0,
        412
    );
    assert_eq!(
        s.send("DELETE", "Patient?identifier=urn:mrn|43", &[], None)
            .await
            .0,
        204
    );
    assert_eq!(
        s.send("DELETE", "Patient?identifier=urn:mrn|43", &[], None)
            .await
            .0,
        204
    );
    assert_eq!(s.send("DELETE", "Patient?bogus=1", &[], None).await.0, 400);
}

async fn search_and_history_paging(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;
    for i in 0..5 {
        let p = json!({"resourceType": "Patient", "id": format!("p{i}")}).to_string();
        s.send("PUT", &format!("Patient/p{i}"), &[], Some(&p)).await;
    }
    s.send(
        "POST",
        "Observation",
        &[],
        Some(r#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#),
    )
    .await;
    // Follow next links: every patient exactly once.
    let mut url = "Patient?_count=2".to_owned();
    let mut seen = Vec::new();
    loop {
        let (st, _, b) = s.send("GET", &url, &[], None).await;
        assert_eq!(st, 200);
        assert_eq!(b["total"], 5);
        seen.extend(
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned()),
        );
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => {
                url = l["url"]
                    .as_str()
                    .unwrap()
                    .strip_prefix(&format!("{}/", s.base))
                    .unwrap()
                    .to_owned()
            }
            None => break,
        }
    }
    assert_eq!(seen, vec!["p0", "p1", "p2", "p3", "p4"]);
    let (_, _, b) = s.send("GET", "Patient?_id=p1,p3", &[], None).await;
    assert_eq!(b["total"], 2);
    let (_, _, b) = s
        .send("GET", "Patient?_lastUpdated=gt2000-01-01", &[], None)
        .await;
    assert_eq!(b["total"], 5);
    let (st, _, b) = s.send("GET", "Patient?nonsense=x", &[], None).await;
    assert_eq!((st, code(&b)), (400, "invalid"));
    let (st, _, b) = s
        .send(
            "GET",
            "Patient?nonsense=x",
            &[("prefer", "handling=lenient")],
            None,
        )
        .await;
    assert_eq!((st, &b["total"]), (200, &json!(5)));
    assert_eq!(
        s.send("GET", "Patient?_lastUpdated=yesterday", &[], None)
            .await
            .0,
        400
    );
    let (_, _, b) = s.send("GET", "?_count=0", &[], None).await;
    assert_eq!(b["total"], 6);
    let (st, _, b) = s
        .send(
            "POST",
            "Patient/_search",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("_id=p2"),
        )
        .await;
    assert_eq!((st, &b["total"]), (200, &json!(1)));

    // History: system and type level, _count + next, _since.
    let (_, _, h) = s.send("GET", "_history?_count=4", &[], None).await;
    assert_eq!(h["entry"].as_array().unwrap().len(), 4);
    assert_eq!(h["entry"][0]["resource"]["resourceType"], "Observation");
    let next = h["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, _, h2) = s
        .send(
            "GET",
            next.strip_prefix(&format!("{}/", s.base)).unwrap(),
            &[],
            None,
        )
        .await;
    assert_eq!(h2["entry"].as_array().unwrap().len(), 2);
    let (_, _, t) = s.send("GET", "Patient/_history", &[], None).await;
    assert_eq!(t["entry"].as_array().unwrap().len(), 5);
    // `_summary=count`: the number of versions, no entries, at every level.
    for (path, total) in [
        ("_history?_summary=count", 6),
        ("Patient/_history?_summary=count", 5),
        ("Patient/_history?_summary=count&_since=2999-01-01", 0),
        ("Patient/p2/_history?_summary=count", 1),
    ] {
        let (st, _, t) = s.send("GET", path, &[], None).await;
        assert_eq!((st, &t["total"]), (200, &json!(total)), "{path}: {t}");
        assert!(t["entry"].as_array().is_none_or(|e| e.is_empty()), "{path}");
    }
    assert_eq!(
        s.send("GET", "_history?_summary=text", &[], None).await.0,
        400
    );
    let (_, _, t) = s
        .send("GET", "Patient/_history?_since=2999-01-01", &[], None)
        .await;
    assert_eq!(t["entry"].as_array().unwrap().len(), 0);
    assert_eq!(
        s.send("GET", "_history?_since=soon", &[], None).await.0,
        400
    );
}

async fn transaction_and_batch_bundles(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;
    s.send("PUT", "Practitioner/dr", &[], Some(r#"{"resourceType":"Practitioner","id":"dr","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"7"}]}"#)).await;
    s.send(
        "PUT",
        "Patient/old",
        &[],
        Some(r#"{"resourceType":"Patient","id":"old"}"#),
    )
    .await;
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient?_count=0"}},
        {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000001", "resource": {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000002"},
            "participant": [{"individual": {"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|7"}}]},
         "request": {"method": "POST", "url": "Encounter"}},
        {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000002", "resource": {"resourceType": "Patient", "name": [{"family": "New"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/old"}}
    ]});
    let (st, _, b) = s.send("POST", "", &[], Some(&tx.to_string())).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["type"], "transaction-response");
    let e = b["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "200 OK");
    // GET runs after the writes: it sees the new patient and not the deleted one.
    assert_eq!(e[0]["resource"]["total"], 1);
    assert_eq!(e[1]["response"]["status"], "201 Created");
    assert_eq!(e[3]["response"]["status"], "204 No Content");
    let pat_id = e[2]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        e[1]["resource"]["subject"]["reference"],
        format!("Patient/{pat_id}")
    );
    assert_eq!(
        e[1]["resource"]["participant"][0]["individual"]["reference"],
        "Practitioner/dr"
    );

    // All or nothing: entry 2 fails, entry 1's create is rolled back, the entry is named.
    let failing = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Rollback"}], "identifier": [{"system": "urn:t", "value": "rb"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "id": "dr"}, "request": {"method": "PUT", "url": "Patient/dr", "ifMatch": "W/\"5\""}},
    ]});
    let (st, _, b) = s.send("POST", "", &[], Some(&failing.to_string())).await;
    assert_eq!(st, 412, "{b}");
    assert_eq!(b["issue"][0]["expression"], json!(["Bundle.entry[1]"]));
    assert_eq!(
        s.send("GET", "Patient?identifier=urn:t|rb", &[], None)
            .await
            .2["total"],
        0
    );
    let invalid = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation"}, "request": {"method": "POST", "url": "Patient"}},
    ]});
    let (st, _, b) = s.send("POST", "", &[], Some(&invalid.to_string())).await;
    assert_eq!(
        (st, &b["issue"][0]["expression"]),
        (400, &json!(["Bundle.entry[1].resource.resourceType"]))
    );
    assert_eq!(
        s.send(
            "POST",
            "",
            &[],
            Some(r#"{"resourceType":"Bundle","type":"collection"}"#)
        )
        .await
        .0,
        400
    );

    // Batch: entries fail alone.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": "b1"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/nope"}},
        {"request": {"method": "DELETE", "url": "Patient/nope"}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2FjdGl2ZSIsInZhbHVlIjp0cnVlfV0="},
         "request": {"method": "PATCH", "url": "Practitioner/dr"}},
    ]});
    let (st, _, b) = s.send("POST", "", &[], Some(&batch.to_string())).await;
    assert_eq!((st, b["type"].as_str()), (200, Some("batch-response")));
    let statuses: Vec<&str> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["201 Created", "404 Not Found", "404 Not Found", "200 OK"]
    );
    assert_eq!(
        b["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(b["entry"][3]["resource"]["active"], true);
}

async fn sigterm_lets_the_request_in_flight_finish(backend: Backend) {
    use std::io::Read;
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;
    let addr = s
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/fhir")
        .to_owned();
    let body = r#"{"resourceType":"Patient","id":"in-flight"}"#;
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "PUT /fhir/Patient/in-flight HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/fhir+json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    // The server asks for the body only once the handler runs: the request is now in flight.
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    reader.read_line(&mut line).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    conn.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 201"), "{line}");
    let _ = reader.read_to_string(&mut response);
    let status = s.terminate();
    assert!(status.success(), "{status:?}");

    // The write was durable: a new server sees it.
    let s = Server::start_with(&data, &["--no-empi"]).await;
    assert_eq!(s.send("GET", "Patient/in-flight", &[], None).await.0, 200);
}

async fn import_transaction_bundle_files(backend: Backend) {
    let data = Data::new(backend).await;
    let file = data.dir.join("bundle.json");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000003", "resource": {"resourceType": "Condition", "subject": {"reference": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000004"}},
         "request": {"method": "POST", "url": "Condition"}},
        {"fullUrl": "urn:uuid:9d0a1b2c-0000-4000-8000-000000000004", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:b", "value": "1"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:b|1"}}
    ]});
    std::fs::write(&file, bundle.to_string()).unwrap();
    for _ in 0..2 {
        let out = renkei()
            .arg("import")
            .arg("--no-empi")
            .args(data.args())
            .arg("--quiet")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = Server::start_with(&data, &["--no-empi"]).await;
    let (_, _, p) = s.send("GET", "Patient?identifier=urn:b|1", &[], None).await;
    assert_eq!(
        p["total"], 1,
        "If-None-Exist keeps the second import from duplicating the patient"
    );
    let pid = p["entry"][0]["resource"]["id"].as_str().unwrap();
    let (_, _, c) = s.send("GET", "Condition", &[], None).await;
    assert_eq!(c["total"], 2);
    for e in c["entry"].as_array().unwrap() {
        assert_eq!(
            e["resource"]["subject"]["reference"],
            format!("Patient/{pid}")
        );
    }
}

async fn import_resolves_references_and_reports_bad_lines(backend: Backend) {
    let data = Data::new(backend).await;
    let bad = data.dir.join("extra.ndjson");
    let mut f = std::fs::File::create(&bad).unwrap();
    writeln!(f, r#"{{"resourceType":"Patient","id":"good-1"}}"#).unwrap();
    writeln!(f, r#"{{"resourceType":"Patient","id":"#).unwrap();
    writeln!(f, r#"{{"resourceType":"Patient","id":"good-2"}}"#).unwrap();
    // Impossible values are refused, naming the line and the element.
    writeln!(
        f,
        r#"{{"resourceType":"Patient","id":"bad-1","birthDate":"1999-02-30"}}"#
    )
    .unwrap();
    writeln!(
        f,
        r#"{{"resourceType":"Patient","id":"bad-2","gender":"M"}}"#
    )
    .unwrap();
    // A reference to a resource not on the server is stored (feeds arrive out of order) and
    // counted; one to a resource of the import is not counted.
    writeln!(f, r#"{{"resourceType":"Observation","id":"o-1","status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/nobody"}}}}"#).unwrap();
    writeln!(f, r#"{{"resourceType":"Observation","id":"o-2","status":"final","code":{{"text":"x"}},"subject":{{"reference":"Patient/good-1"}}}}"#).unwrap();
    drop(f);
    let import = |paths: &[&std::path::Path]| {
        let out = renkei()
            .arg("import")
            .arg("--no-empi")
            .args(data.args())
            .arg("--quiet")
            .args(paths)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stderr) = import(&[&synthea10(), &bad]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("extra.ndjson:2: invalid JSON"), "{stderr}");
    assert!(
        stderr.contains("extra.ndjson:4: '1999-02-30' is not a valid date: February 1999 has 28 days (Patient.birthDate)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("extra.ndjson:5: 'M' is not in the required value set")
            && stderr.contains("(Patient.gender)"),
        "{stderr}"
    );
    // The bulk export's log.ndjson is not a file read.
    assert!(
        stderr.contains(
            "imported 7164 resources (7164 created, 0 updated, 0 unchanged) from 14 files (1 skipped: not FHIR)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("3 errors; 1 references to resources not (yet) on this server"),
        "{stderr}"
    );
    // Again: nothing changes, and the summary says so.
    let (status, stderr) = import(&[&bad]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("imported 4 resources (0 created, 0 updated, 4 unchanged) from 1 files"),
        "{stderr}"
    );

    let s = Server::start_with(&data, &["--no-empi"]).await;
    assert_eq!(
        s.send("GET", "Patient?_count=0", &[], None).await.2["total"],
        15
    );
    assert_eq!(s.send("GET", "Patient/bad-1", &[], None).await.0, 404);
    assert_eq!(
        s.send("GET", "Encounter?_count=0", &[], None).await.2["total"],
        1215
    );
    let (_, _, enc) = s.send("GET", "Encounter?_count=1", &[], None).await;
    let prac = enc["entry"][0]["resource"]["participant"][0]["individual"]["reference"]
        .as_str()
        .unwrap();
    assert!(prac.starts_with("Practitioner/"), "{prac}");
    assert_eq!(s.send("GET", prac, &[], None).await.0, 200);
}

/// Over HTTP: an impossible date, a code outside a required value set and a reference to a
/// resource not on the server are refused with 400 and an OperationOutcome naming the element,
/// and nothing is stored; `--no-reference-check` stores the reference.
async fn impossible_values_and_dangling_references_are_refused(backend: Backend) {
    let data = Data::new(backend).await;
    let s = Server::start_with(&data, &["--no-empi"]).await;
    let cases = [
        (
            r#"{"resourceType":"Patient","birthDate":"1999-02-30"}"#,
            "Patient",
            "Patient.birthDate",
        ),
        (
            r#"{"resourceType":"Patient","birthDate":"2023-02-29"}"#,
            "Patient",
            "Patient.birthDate",
        ),
        (
            r#"{"resourceType":"Patient","gender":"M"}"#,
            "Patient",
            "Patient.gender",
        ),
        (
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/absent"}}"#,
            "Observation",
            "Observation.subject",
        ),
    ];
    for (body, ty, expression) in cases {
        let (st, _, b) = s.send("POST", ty, &[], Some(body)).await;
        assert_eq!(st, 400, "{body}: {b}");
        assert_eq!(b["resourceType"], "OperationOutcome");
        assert_eq!(b["issue"][0]["expression"][0], expression, "{b}");
    }
    let (_, _, all) = s.send("GET", "_history", &[], None).await;
    assert_eq!(all["entry"].as_array().map_or(0, Vec::len), 0, "{all}");
    // A present target, relative or under the server's base, is fine.
    let (st, _, p) = s
        .send(
            "POST",
            "Patient",
            &[],
            Some(r#"{"resourceType":"Patient","birthDate":"2024-02-29"}"#),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let pid = p["id"].as_str().unwrap();
    for reference in [format!("Patient/{pid}"), s.url(&format!("Patient/{pid}"))] {
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": reference}});
        let (st, _, b) = s
            .send("POST", "Observation", &[], Some(&obs.to_string()))
            .await;
        assert_eq!(st, 201, "{reference}: {b}");
    }
    drop(s);
    let s = Server::start_with(&data, &["--no-empi", "--no-reference-check"]).await;
    let (st, _, b) = s.send("POST", "Observation", &[], Some(cases[3].0)).await;
    assert_eq!(st, 201, "{b}");
}

async fn kill_9_during_import_loses_nothing_acknowledged(backend: Backend) {
    let data = Data::new(backend).await;
    // Procedures point at Locations by identifier: the Locations (44, one chunk) load first.
    let file = synthea10().join("Procedure.000.ndjson");
    let mut child = renkei()
        .arg("import")
        .arg("--no-empi")
        .args(data.args())
        .args(["--quiet", "--print-commits", "--chunk", "100"])
        .arg(&file)
        .arg(synthea10().join("Location.000.ndjson"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = 0;
    while acknowledged < 300 {
        let line = lines.next().expect("import ended early").unwrap();
        if line.contains("Procedure") {
            acknowledged += line
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let s = Server::start_with(&data, &["--no-empi"]).await;
    let total = s.send("GET", "Procedure?_count=0", &[], None).await.2["total"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        total >= acknowledged,
        "{total} < {acknowledged} acknowledged"
    );
    assert!(
        total.is_multiple_of(100) || total == 2056,
        "partial transaction visible: {total}"
    );
    // Every acknowledged resource is there.
    let ids: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .take(acknowledged)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for chunk in ids.chunks(50) {
        let (_, _, b) = s
            .send(
                "GET",
                &format!("Procedure?_count=100&_id={}", chunk.join(",")),
                &[],
                None,
            )
            .await;
        assert_eq!(b["total"], chunk.len());
    }
}

/// What an operator reads: one line per request (method, path without its query, status,
/// duration, request id, nothing from the query or body), the client's `X-Request-Id` kept
/// and echoed (a new one otherwise), no colour codes in a file, no migration steps or
/// PostgreSQL notices for a new store; and a body past `--max-body-size` refused with a 413
/// OperationOutcome that names the limit, storing nothing.
async fn request_log_and_body_limit(backend: Backend) {
    let data = Data::new(backend).await;
    let log = data.dir.join("serve.log");
    let s = Server::start_logging_to(&data, &["--no-empi", "--max-body-size", "64KiB"], &log).await;

    let (st, h, _) = s
        .send(
            "GET",
            "Patient?name=Zenigata&birthdate=1961-03-04",
            &[("x-request-id", "req-e2e-1")],
            None,
        )
        .await;
    assert_eq!(
        (st, h["x-request-id"].to_str().unwrap()),
        (200, "req-e2e-1")
    );
    let (_, h, _) = s.send("GET", "metadata", &[], None).await;
    let generated = h["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36, "{generated}");
    // A client id that could forge a log line is replaced.
    let (_, h, _) = s
        .send("GET", "metadata", &[("x-request-id", "a b")], None)
        .await;
    assert_ne!(h["x-request-id"].to_str().unwrap(), "a b");

    let names: Vec<Value> = (0..3000)
        .map(|i| json!({"family": format!("Zenigata{i}"), "given": ["Koichi"]}))
        .collect();
    let big = json!({"resourceType": "Patient", "name": names}).to_string();
    assert!(big.len() > 64 * 1024);
    let (st, _, b) = s.send("POST", "Patient", &[], Some(&big)).await;
    assert_eq!((st, code(&b)), (413, "too-long"), "{b}");
    let diagnostics = b["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("65536 bytes"), "{diagnostics}");
    let (_, _, found) = s.send("GET", "Patient?_summary=count", &[], None).await;
    assert_eq!(found["total"], 0);

    assert!(s.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("request_id=req-e2e-1"))
        .unwrap_or_else(|| panic!("no line for the request in:\n{text}"));
    for part in ["method=GET", "path=\"/fhir/Patient\"", "status=200", "ms="] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(text.lines().any(|l| l.contains("status=413")), "{text}");
    assert!(text.contains(&format!("request_id={generated}")), "{text}");
    for secret in ["Zenigata", "1961-03-04", "Koichi"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
    assert!(!text.contains("migration"), "{text}");
    assert!(!text.contains("NOTICE"), "{text}");
}

macro_rules! e2e {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

e2e!(
    crud_and_its_error_paths,
    conditional_interactions,
    search_and_history_paging,
    transaction_and_batch_bundles,
    sigterm_lets_the_request_in_flight_finish,
    import_transaction_bundle_files,
    import_resolves_references_and_reports_bad_lines,
    impossible_values_and_dangling_references_are_refused,
    kill_9_during_import_loses_nothing_acknowledged,
    request_log_and_body_limit,
);
