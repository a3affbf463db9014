//! The exchange end to end: a hub and two nodes, each a separate `renkei serve` process with
//! its own data directory, on loopback.
//!
//! Each node holds part of the Synthea sample under ids of its own (and the whole directory),
//! and one person is at both nodes with other identifiers, address and phone. Shown: the
//! nodes register and are approved with `renkei nodes`; they publish through their change
//! feeds; the hub's directory has each directory entry once; `$locate` names both nodes and
//! what each holds; a network `$everything` at node A returns both nodes' records with a
//! Provenance per node; a Consent at node B denying node A's organisation removes B's data;
//! with B killed the answer is partial with a warning naming B, while the hub's `$summary`
//! still answers with B's problems. The hub runs on SQLite and on PostgreSQL. (Privacy mode
//! is `exchange_privacy.rs`'s; the helpers are `support::network`'s.)

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::network::{
    STUDY_UID, approve_all, eventually, first_person, full_urls, holders, identifier_value,
    outcome_text, registered, sample, serve, shared_person, start_node, start_on, token,
};
use support::{Backend, Data};

/// Node B's DICOMweb endpoint (listed in the directory; no image server runs in the test).
const B_DICOMWEB: &str = "https://images.b.example/dicomweb";

async fn hub_and_two_nodes(hub_backend: Backend) {
    let sample = sample();
    let (first, first_id, shared) = first_person(&sample);
    let first = &first;
    let ssn = identifier_value(first, "http://hl7.org/fhir/sid/us-ssn");

    // The hub.
    let hub_data = Data::new(hub_backend).await;
    let (hub_server, hub_base, _) = serve(&hub_data, &["--role".into(), "hub".into()]).await;
    let hub_token = token(
        &hub_data.dir.join("token-keys.json"),
        &hub_base,
        "operator",
        None,
    );

    // Two nodes with their own data; both ask to join, and nothing is granted before an
    // operator approves.
    let mut nodes = Vec::new();
    for (id, range) in [("a", 0..6), ("b", 6..10)] {
        let extra = if id == "b" {
            shared_person(&shared)
        } else {
            Vec::new()
        };
        let args = [
            "--node-name".to_owned(),
            format!("Clinic {}", id.to_uppercase()),
            "--imaging-endpoint".into(),
            format!("https://images.{id}.example/dicomweb"),
        ];
        nodes.push(start_node(id, range, &extra, &hub_base, &args).await);
    }
    registered(&hub_data, &["a", "b"]).await;
    // Pending, a node serves its own users as before.
    {
        let a = &nodes[0];
        let own = token(&a.keys(), &a.base, "ehr-a", None);
        let (status, body) = a
            .server
            .as_ref()
            .unwrap()
            .get_as(&own, &format!("Patient/a{first_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, _) = hub_server
        .send(
            "GET",
            "Organization/node-a",
            &[("authorization", &format!("Bearer {hub_token}"))],
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(approve_all(&hub_data).contains("2 nodes approved"));

    // The locator learns of the shared person at both nodes.
    let locate = format!("Patient/$locate?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}");
    let located = eventually("the shared person located at both nodes", || {
        let (hub_server, hub_token, locate) = (&hub_server, &hub_token, &locate);
        async move {
            let (status, body) = hub_server.get_as(hub_token, locate).await;
            if status != 200 {
                return Err(format!("{status} {body}"));
            }
            let h = holders(&body);
            let nodes: BTreeSet<&str> = h.iter().map(|(n, _, _)| n.as_str()).collect();
            let b_kinds = h
                .iter()
                .find(|(n, _, _)| n == "b")
                .map(|(_, _, k)| k.clone());
            // B publishes its Conditions before its ImagingStudy (the feed follows the
            // import, type by type): wait for both.
            if nodes == BTreeSet::from(["a", "b"])
                && b_kinds.is_some_and(|k| {
                    ["Condition", "ImagingStudy"]
                        .iter()
                        .all(|t| k.iter().any(|have| have == t))
                })
            {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        }
    })
    .await;
    let h = holders(&located);
    assert!(h.contains(&(
        "a".into(),
        format!("a{first_id}"),
        h.iter().find(|(n, _, _)| n == "a").unwrap().2.clone()
    )));
    assert!(h.iter().any(|(n, p, _)| n == "b" && p == "b-shared"));
    let person = located["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "person")
        .and_then(|p| p["valueReference"]["reference"].as_str())
        .expect("the hub's index linked the two records")
        .to_owned();

    // The directory: each entry once, however many nodes published it (by business
    // identifier); the nodes' own Organizations beside the national directory's.
    let directory = support::network::national_directory();
    let count = |ty: &str| directory.iter().find(|(t, _)| t == ty).unwrap().1.len();
    let want = [
        ("Practitioner", count("Practitioner")),
        ("Location", count("Location")),
        ("Organization", count("Organization") + 2),
    ];
    eventually("the directory de-duplicated", || async {
        for (ty, n) in want {
            let (status, body) = hub_server
                .get_as(&hub_token, &format!("{ty}?_summary=count"))
                .await;
            if status != 200 || body["total"] != json!(n) {
                return Err(format!("{ty}: {body} (want {n})"));
            }
        }
        Ok(())
    })
    .await;
    // A network query at node A returns both nodes' records, with provenance.
    let a = &nodes[0];
    let b_base = nodes[1].base.clone();
    let clinician = token(&a.keys(), &a.base, "ehr-a", Some("Practitioner/dr-a"));
    let everything = format!("Patient/a{first_id}/$everything?_network=true");
    let server_a = a.server.as_ref().unwrap();
    let (status, bundle) = server_a.get_as(&clinician, &everything).await;
    assert_eq!(status, 200, "{bundle}");
    let urls = full_urls(&bundle);
    assert!(
        urls.contains(&format!("{b_base}/Condition/b-cond-1")),
        "{urls:?}"
    );
    assert!(
        urls.contains(&format!("{}/Patient/a{first_id}", a.base)),
        "{urls:?}"
    );
    let provenances: Vec<&Value> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Provenance")
        .collect();
    assert_eq!(provenances.len(), 2, "{bundle}");
    let b_condition = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["fullUrl"] == format!("{b_base}/Condition/b-cond-1"))
        .unwrap();
    assert_eq!(
        b_condition["resource"]["subject"]["reference"],
        format!("{b_base}/Patient/b-shared")
    );

    // Pages: the merged answer reads at most ten pages of each holder, and says so when a
    // holder had more.
    let (status, cut) = server_a
        .get_as(&clinician, &format!("{everything}&_count=2"))
        .await;
    assert_eq!(status, 200, "{cut}");
    let text = outcome_text(&cut);
    assert!(
        text.contains("in part") && text.contains("node a"),
        "{text}"
    );
    assert_eq!(
        full_urls(&cut)
            .iter()
            .filter(|u| u.starts_with(&a.base))
            .count(),
        20
    );

    // Images: A finds B's study through the network and gets a short-lived token for B's
    // DICOMweb endpoint, which B's image server checks by introspection at the hub.
    let b_holder = exchange::locator::Located::from_parameters(&located)
        .unwrap()
        .holders
        .into_iter()
        .find(|h| h.node == "b")
        .unwrap();
    assert_eq!(b_holder.imaging_endpoint.as_deref(), Some(B_DICOMWEB));
    assert!(
        b_holder
            .kinds
            .iter()
            .any(|k| k.resource_type == "ImagingStudy")
    );
    let (status, studies) = server_a
        .get_as(
            &clinician,
            &format!("Patient/a{first_id}/ImagingStudy?_network=true"),
        )
        .await;
    assert_eq!(status, 200, "{studies}");
    let study_url = format!("{b_base}/ImagingStudy/b-study-1");
    assert!(full_urls(&studies).contains(&study_url), "{studies}");
    let ask = json!({"resourceType": "Parameters", "parameter": [{"name": "study", "valueUrl": study_url}]});
    let (status, _, access) = server_a
        .send(
            "POST",
            "ImagingStudy/$image-access",
            &[("authorization", &format!("Bearer {clinician}"))],
            Some(&ask.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    let part = |name: &str| {
        access["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(part("endpoint")["valueUrl"], B_DICOMWEB);
    assert_eq!(part("studyInstanceUid")["valueString"], STUDY_UID);
    assert!(part("expires_in")["valueInteger"].as_i64().unwrap() <= 300);
    let image_token = part("access_token")["valueString"]
        .as_str()
        .unwrap()
        .to_owned();
    let hub_issuer = hub_base.trim_end_matches("/fhir").to_owned();
    let introspect = |node: &str| {
        let key = auth::client_key::ClientKey::from_json(
            &std::fs::read_to_string(
                nodes
                    .iter()
                    .find(|n| n.args.contains(&node.to_owned()))
                    .unwrap()
                    .data
                    .dir
                    .join("node-key.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let assertion = key
            .assertion(
                node,
                &format!("{hub_issuer}/auth/token"),
                chrono::Utc::now().timestamp(),
            )
            .unwrap();
        let form = format!(
            "token={image_token}&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
        );
        let url = format!("{hub_issuer}/auth/introspect");
        let client = hub_server.client.clone();
        async move {
            let r = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    };
    let by_b = introspect("b").await;
    assert_eq!(by_b["active"], true, "{by_b}");
    assert_eq!(by_b["aud"], B_DICOMWEB);
    assert_eq!(by_b["scope"], "system/ImagingStudy.rs");
    assert_eq!(by_b["client_id"], "a");
    let by_a = introspect("a").await;
    assert_eq!(by_a["active"], false, "{by_a}");

    // A consent at B denying node A's organisation removes B's data from A's answer.
    let b = &nodes[1];
    let b_admin = token(&b.keys(), &b.base, "admin-b", None);
    let consent = json!({"resourceType": "Consent", "id": "deny-a", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/b-shared"}, "dateTime": "2026-01-01",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": format!("{hub_base}/Organization/node-a")}}]}});
    let (status, body) = b
        .server
        .as_ref()
        .unwrap()
        .put_as(Some(&b_admin), &consent)
        .await;
    assert!(status == 201 || status == 200, "{body}");
    let (status, bundle) = server_a.get_as(&clinician, &everything).await;
    assert_eq!(status, 200, "{bundle}");
    let urls = full_urls(&bundle);
    assert!(
        !urls.iter().any(|u| u.starts_with(&b_base)),
        "B's records despite its consent: {urls:?}"
    );
    assert!(urls.contains(&format!("{}/Patient/a{first_id}", a.base)));
    // The consent travels with B's copies: at the hub too, node A's organisation no longer
    // sees what B holds of the person (nor the golden record made from it), while the hub's
    // operator still does.
    let as_node_a = {
        let now = chrono::Utc::now().timestamp();
        support::mint(
            &hub_data.dir.join("token-keys.json"),
            &auth::token::AccessClaims {
                iss: hub_base.trim_end_matches("/fhir").to_owned(),
                sub: "a".into(),
                aud: hub_base.clone(),
                exp: now + 600,
                iat: now - 1,
                jti: uuid::Uuid::new_v4().to_string(),
                scope: "system/*.rs".into(),
                client_id: "a".into(),
                patient: None,
                fhir_user: None,
                organization: Some("Organization/node-a".into()),
                purpose_of_use: Some("TREAT".into()),
                break_glass: None,
            },
        )
    };
    let person_everything = format!("{person}/$everything?_count=1000");
    let copies_of_b = |bundle: &Value| {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["resource"]["id"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("b."))
            })
            .count()
    };
    let full_urls_or_ids = |bundle: &Value| bundle["entry"].as_array().map_or(0, Vec::len);
    eventually("B's consent applied at the hub", || async {
        let (status, bundle) = hub_server.get_as(&as_node_a, &person_everything).await;
        match copies_of_b(&bundle) {
            // The golden record is made of B's record too: withheld with it (404), or
            // shown without B's copies.
            _ if status == 404 => Ok(()),
            0 if status == 200 && full_urls_or_ids(&bundle) > 0 => Ok(()),
            n => Err(format!(
                "{n} of B's copies shown to node A ({status}): {}",
                bundle.to_string().chars().take(400).collect::<String>()
            )),
        }
    })
    .await;
    let (_, bundle) = hub_server.get_as(&hub_token, &person_everything).await;
    assert!(copies_of_b(&bundle) > 0);
    // (Withdrawn again for what follows.)
    let (status, _, _) = b
        .server
        .as_ref()
        .unwrap()
        .send(
            "DELETE",
            "Consent/deny-a",
            &[("authorization", &format!("Bearer {b_admin}"))],
            None,
        )
        .await;
    assert!(status == 200 || status == 204);
    eventually("B's consent withdrawn at the hub", || async {
        let (_, bundle) = hub_server.get_as(&as_node_a, &person_everything).await;
        if copies_of_b(&bundle) > 0 {
            Ok(())
        } else {
            Err("B's copies still withheld from node A".to_owned())
        }
    })
    .await;

    // B goes down: A's answer is partial and says so; the hub's summary still answers.
    let mut nodes = nodes;
    let b_server = nodes[1].server.take().unwrap();
    drop(b_server);
    let (status, bundle) = nodes[0]
        .server
        .as_ref()
        .unwrap()
        .get_as(&clinician, &everything)
        .await;
    assert_eq!(status, 200, "{bundle}");
    let why = outcome_text(&bundle);
    assert!(
        why.contains("node b") && why.contains("did not answer"),
        "{why}"
    );
    assert!(full_urls(&bundle).contains(&format!("{}/Patient/a{first_id}", nodes[0].base)));
    let (status, summary) = hub_server
        .get_as(&hub_token, &format!("{person}/$summary"))
        .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["type"], "document");
    let text = summary.to_string();
    assert!(text.contains("Diabetes mellitus type 2"), "{text}");

    // Consumer-mediated: the person's own app, signed in at the hub, gathers the record of
    // every node there (their summary and everything the hub holds), but not the locator.
    let golden = person.trim_start_matches("Patient/");
    let now = chrono::Utc::now().timestamp();
    let patient_token = support::mint(
        &hub_data.dir.join("token-keys.json"),
        &auth::token::AccessClaims {
            iss: hub_base.trim_end_matches("/fhir").to_owned(),
            sub: format!("Patient/{golden}"),
            aud: hub_base.clone(),
            exp: now + 600,
            iat: now - 1,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: "patient/*.rs launch/patient".into(),
            client_id: "patient-app".into(),
            patient: Some(golden.to_owned()),
            fhir_user: Some(format!("Patient/{golden}")),
            organization: None,
            purpose_of_use: None,
            break_glass: None,
        },
    );
    let (status, own) = hub_server.get_as(&patient_token, "Patient/$summary").await;
    assert_eq!(status, 200, "{own}");
    assert!(own.to_string().contains("Diabetes mellitus type 2"));
    let (status, person_record) = hub_server
        .get_as(&patient_token, &format!("{person}/$everything?_count=500"))
        .await;
    assert_eq!(status, 200, "{person_record}");
    let ids: BTreeSet<String> = person_record["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.contains("b.b-cond-1"), "{ids:?}");
    assert!(ids.iter().any(|i| i.starts_with("a.")), "{ids:?}");
    let (status, _) = hub_server.get_as(&patient_token, &locate).await;
    assert_eq!(status, 403);

    // A referral sent while B is down, and A killed before it could deliver it: after both
    // restart it is delivered exactly once, and A keeps B's receipt.
    let document_id = format!("urn:uuid:{}", uuid::Uuid::new_v4());
    let (patient_entry, composition_entry) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let document = json!({"resourceType": "Bundle", "type": "document",
    "identifier": {"system": "urn:ietf:rfc:3986", "value": document_id},
    "timestamp": "2026-12-06T10:00:00Z",
    "entry": [
        {"fullUrl": format!("urn:uuid:{composition_entry}"), "resource": {"resourceType": "Composition",
            "status": "final", "type": {"coding": [{"system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}]},
            "subject": {"reference": format!("urn:uuid:{patient_entry}")}, "date": "2026-12-06",
            "author": [{"display": "Dr A"}], "title": "診療情報提供書 (referral letter)"}},
        {"fullUrl": format!("urn:uuid:{patient_entry}"), "resource": {"resourceType": "Patient",
            "name": [{"family": "Shared", "given": ["Person"]}]}}
    ]});
    let send = json!({"resourceType": "Parameters", "parameter": [
        {"name": "recipient", "valueReference": {"reference": "Organization/node-b"}},
        {"name": "document", "resource": document}]});
    let auth_a = format!("Bearer {clinician}");
    let a_server = nodes[0].server.as_ref().unwrap();
    let (status, _, answer) = a_server
        .send(
            "POST",
            "$send",
            &[("authorization", &auth_a)],
            Some(&send.to_string()),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let mut bad = send.clone();
    bad["parameter"][1]["resource"]["type"] = json!("collection");
    let (status, _, outcome) = a_server
        .send(
            "POST",
            "$send",
            &[("authorization", &auth_a)],
            Some(&bad.to_string()),
        )
        .await;
    assert_eq!(status, 400, "{outcome}");
    assert_eq!(outcome["issue"][0]["expression"][0], "Bundle.type");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = &mut nodes[0];
    drop(a.server.take());
    let port: u16 = a
        .base
        .trim_end_matches("/fhir")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let args = a.args.clone();
    a.server = Some(start_on(&a.data, port, &args).await);

    // Restarted, B publishes again from its checkpoint and answers again.
    let b = &mut nodes[1];
    let port: u16 = b
        .base
        .trim_end_matches("/fhir")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let args = b.args.clone();
    b.server = Some(start_on(&b.data, port, &args).await);
    let (status, bundle) = nodes[0]
        .server
        .as_ref()
        .unwrap()
        .get_as(&clinician, &everything)
        .await;
    assert_eq!(status, 200);
    assert!(full_urls(&bundle).contains(&format!("{b_base}/Condition/b-cond-1")));

    let b_server = nodes[1].server.as_ref().unwrap();
    let a_server = nodes[0].server.as_ref().unwrap();
    let b_admin = token(&nodes[1].keys(), &nodes[1].base, "admin-b", None);
    eventually("the referral delivered", || async {
        let (_, tasks) = b_server.get_as(&b_admin, "Task?_summary=count").await;
        let (_, receipts) = a_server
            .get_as(&clinician, "Communication?category=https://renkei.dev/fhir/CodeSystem/exchange|delivery-receipt")
            .await;
        if tasks["total"] == 1 && receipts["total"] == 1 {
            Ok(())
        } else {
            Err(format!("tasks {tasks} receipts {receipts}"))
        }
    })
    .await;
    let (_, inbox) = b_server.get_as(&b_admin, "Task?status=requested").await;
    let task = &inbox["entry"][0]["resource"];
    let focus = task["focus"]["reference"].as_str().unwrap();
    let (status, stored) = b_server.get_as(&b_admin, focus).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["identifier"]["value"], json!(document_id));
    // Sent again: the queue knows it was delivered; B still has it once.
    let (status, _, answer) = a_server
        .send(
            "POST",
            "$send",
            &[("authorization", &format!("Bearer {clinician}"))],
            Some(&send.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["parameter"][2]["valueCode"], "delivered");
    let (_, tasks) = b_server.get_as(&b_admin, "Task?_summary=count").await;
    assert_eq!(tasks["total"], 1);

    // The hub down: A still serves its own records, and its network query says the locator
    // could not be asked.
    drop(hub_server);
    let (status, body) = a_server
        .get_as(&clinician, &format!("Patient/a{first_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, bundle) = a_server.get_as(&clinician, &everything).await;
    assert_eq!(status, 200, "{bundle}");
    assert!(outcome_text(&bundle).contains("record locator"), "{bundle}");
    assert!(full_urls(&bundle).contains(&format!("{}/Patient/a{first_id}", nodes[0].base)));
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_and_two_nodes_on_sqlite() {
    hub_and_two_nodes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_and_two_nodes_with_postgres_behind_the_hub() {
    hub_and_two_nodes(Backend::Postgres).await;
}
