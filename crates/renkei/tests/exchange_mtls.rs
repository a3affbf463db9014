//! The exchange over mutual TLS: a hub and two nodes, all on HTTPS with server certificates
//! from the operator's CA (which the nodes trust with `--tls-ca`), each node presenting a
//! self-signed client certificate of its own (`--tls-client-cert/--tls-client-key`).
//!
//! Shown: the registrations carry the certificates' fingerprints, which the hub pins (in
//! `renkei nodes list`, in the node's directory `Endpoint`, in `GET /exchange/nodes/{id}`);
//! the nodes publish, are located and answer a network `$everything`, every call presenting
//! its node's certificate; a token request as node A with node B's certificate, or with none,
//! is refused, and so are a hub-issued token of node A used at the hub or at node B without
//! A's certificate.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::network::{
    eventually, first_person, free_port, full_urls, holders, identifier_value, import, sample,
    shared_person, token,
};
use support::{Data, Server, renkei};

/// The operator's CA, which issues the servers' certificates.
struct OperatorCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl OperatorCa {
    fn new() -> OperatorCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Network operator CA");
        let key = rcgen::KeyPair::generate().unwrap();
        OperatorCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.as_ref().pem()
    }

    /// A server certificate for loopback, written into `dir`: (certificate, key) files.
    fn server_certificate(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write_pair(dir, "server", &cert.pem(), &key.serialize_pem())
    }
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

/// A node's client certificate, self-signed (no CA), written into `dir`: its files and the
/// SHA-256 fingerprint of its DER.
struct ClientCertificate {
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

fn client_certificate(dir: &Path, node: &str) -> ClientCertificate {
    let made = rcgen::generate_simple_self_signed(vec![format!("node-{node}.example")]).unwrap();
    let (cert, key) = write_pair(
        dir,
        "client",
        &made.cert.pem(),
        &made.signing_key.serialize_pem(),
    );
    let fingerprint = server::tls::CertificateFingerprint::of(made.cert.der())
        .as_str()
        .to_owned();
    ClientCertificate {
        cert,
        key,
        fingerprint,
    }
}

/// An HTTPS client trusting the CA file `ca`, presenting `client` when given.
fn https_client(ca: &Path, client: Option<&ClientCertificate>) -> reqwest::Client {
    let tls = server::tls::ClientTls::load(Some(ca), client.map(|c| (&*c.cert, &*c.key))).unwrap();
    tls.builder().build().unwrap()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `renkei serve` on HTTPS on a chosen port with its key files in its data directory: the
/// server and its base URL.
async fn serve_https(
    data: &Data,
    server_certificate: &(PathBuf, PathBuf),
    ca: &Path,
    extra: &[String],
) -> (Server, String) {
    let port = free_port();
    let base = format!("https://127.0.0.1:{port}/fhir");
    let mut args = vec![
        "--base-url".to_owned(),
        base.clone(),
        "--token-keys".into(),
        path(&data.dir.join("token-keys.json")),
        "--audit-key".into(),
        path(&data.dir.join("audit-signing.key")),
        "--node-key".into(),
        path(&data.dir.join("node-key.json")),
        "--tls-cert".into(),
        path(&server_certificate.0),
        "--tls-key".into(),
        path(&server_certificate.1),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend(extra.iter().cloned());
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_https(data, &all, https_client(ca, None)).await;
    (server, base)
}

/// A token request at the hub as `node` (its assertion key in `key_file`) over `client`:
/// status and body.
async fn token_request(
    client: &reqwest::Client,
    hub_issuer: &str,
    node: &str,
    key_file: &Path,
    resource: Option<&str>,
) -> (u16, Value) {
    let key = auth::client_key::ClientKey::from_json(&std::fs::read_to_string(key_file).unwrap())
        .unwrap();
    let token_url = format!("{hub_issuer}/auth/token");
    let assertion = key
        .assertion(node, &token_url, chrono::Utc::now().timestamp())
        .unwrap();
    let mut form = vec![
        ("grant_type", "client_credentials".to_owned()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion),
        ("scope", "system/*.rs".to_owned()),
        ("purpose_of_use", "TREAT".to_owned()),
    ];
    if let Some(r) = resource {
        form.push(("resource", r.to_owned()));
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = client
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Percent-encodes a form value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `url` with `token` over `client`: status and body.
async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn refused_for_the_pin(body: &Value, node: &str) -> bool {
    let text = body.to_string();
    text.contains(&format!("node {node}")) && text.contains("pinned certificate")
}

#[tokio::test(flavor = "multi_thread")]
async fn hub_and_two_nodes_over_mutual_tls() {
    server::tls::install_default_provider();
    let ca = OperatorCa::new();
    let sample = sample();
    let (first, first_id, shared) = first_person(&sample);
    let first = &first;
    let ssn = identifier_value(first, "http://hl7.org/fhir/sid/us-ssn");

    // The hub, on HTTPS; the CA file beside it.
    let hub_data = Data::new(support::Backend::Sqlite).await;
    let ca_file = hub_data.dir.join("operator-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let hub_certificate = ca.server_certificate(&hub_data.dir);
    let (hub_server, hub_base) = serve_https(
        &hub_data,
        &hub_certificate,
        &ca_file,
        &["--role".into(), "hub".into()],
    )
    .await;
    let hub_issuer = hub_base.trim_end_matches("/fhir").to_owned();
    let operator = token(
        &hub_data.dir.join("token-keys.json"),
        &hub_base,
        "operator",
        None,
    );

    // Two nodes: A holds the person, B holds them too (other identifiers) with problems.
    let mut nodes = Vec::new();
    for (id, records) in [("a", vec![shared.clone()]), ("b", shared_person(&shared))] {
        let data = Data::new(support::Backend::Sqlite).await;
        let file = data.dir.join("records.ndjson");
        let lines: Vec<String> = records.iter().map(Value::to_string).collect();
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
        import(&data, &[file]);
        let client = client_certificate(&data.dir, id);
        let server_certificate = ca.server_certificate(&data.dir);
        let (server, base) = serve_https(
            &data,
            &server_certificate,
            &ca_file,
            &[
                "--role".into(),
                "node".into(),
                "--hub".into(),
                hub_base.clone(),
                "--node-id".into(),
                id.into(),
                "--query-timeout".into(),
                "5".into(),
                "--tls-ca".into(),
                path(&ca_file),
                "--tls-client-cert".into(),
                path(&client.cert),
                "--tls-client-key".into(),
                path(&client.key),
            ],
        )
        .await;
        nodes.push((data, server, base, client));
    }
    let (a_data, a_server, a_base, a_client) = &nodes[0];
    let (_, _, b_base, b_client) = &nodes[1];

    // The registrations carry the fingerprints; the operator sees them before approving.
    let listed = eventually("both registrations", || async {
        let out = renkei()
            .args(["nodes", "list"])
            .args(hub_data.args())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("a\tpending") && text.contains("b\tpending") {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    for (node, client) in [("a", a_client), ("b", b_client)] {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{node}\t")))
            .unwrap();
        assert!(
            line.ends_with(&format!("certificate sha256 {}", client.fingerprint)),
            "{line}"
        );
    }
    let (status, endpoint) = hub_server.get_as(&operator, "Endpoint/node-a").await;
    assert_eq!(status, 200, "{endpoint}");
    assert_eq!(
        endpoint["extension"][0]["url"],
        exchange::registration::TLS_CERTIFICATE_EXTENSION
    );
    assert_eq!(
        endpoint["extension"][0]["valueString"],
        a_client.fingerprint
    );
    let approved = renkei()
        .args(["nodes", "approve", "--all-pending"])
        .args(hub_data.args())
        .output()
        .unwrap();
    assert!(approved.status.success(), "{approved:?}");
    let published: Value = hub_server
        .client
        .get(format!("{hub_issuer}/exchange/nodes/b"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(published["tlsCertificateSha256"], b_client.fingerprint);
    assert_eq!(published["endpoint"], json!(b_base));

    // Both publish (their certificates presented), and the locator finds the person at both.
    let locate = format!("Patient/$locate?identifier=http://hl7.org/fhir/sid/us-ssn|{ssn}");
    eventually("the shared person located at both nodes", || {
        let (hub_server, operator, locate) = (&hub_server, &operator, &locate);
        async move {
            let (status, body) = hub_server.get_as(operator, locate).await;
            if status != 200 {
                return Err(format!("{status} {body}"));
            }
            let found: BTreeSet<String> = holders(&body).into_iter().map(|h| h.0).collect();
            if found == BTreeSet::from(["a".to_owned(), "b".to_owned()]) {
                Ok(())
            } else {
                Err(body.to_string())
            }
        }
    })
    .await;

    // A network $everything at A: A's token from the hub, the locator and B's answer, all
    // over mutual TLS.
    let clinician = token(
        &a_data.dir.join("token-keys.json"),
        a_base,
        "ehr-a",
        Some("Practitioner/dr-a"),
    );
    let (status, bundle) = a_server
        .get_as(
            &clinician,
            &format!("Patient/a{first_id}/$everything?_network=true"),
        )
        .await;
    assert_eq!(status, 200, "{bundle}");
    let urls = full_urls(&bundle);
    assert!(
        urls.contains(&format!("{b_base}/Condition/b-cond-1")),
        "{bundle}"
    );
    assert!(
        !bundle.to_string().contains("did not answer"),
        "a node did not answer: {bundle}"
    );

    // The hub's token endpoint: node A's assertion with B's certificate, or with none, is
    // refused; with A's own it is granted.
    let a_key = a_data.dir.join("node-key.json");
    let with_a = https_client(&ca_file, Some(a_client));
    let with_b = https_client(&ca_file, Some(b_client));
    let without = https_client(&ca_file, None);
    for (client, what) in [(&with_b, "B's certificate"), (&without, "no certificate")] {
        let (status, body) = token_request(client, &hub_issuer, "a", &a_key, None).await;
        assert_eq!(status, 401, "with {what}: {body}");
        assert_eq!(body["error"], "invalid_client", "with {what}: {body}");
        assert!(refused_for_the_pin(&body, "a"), "with {what}: {body}");
    }
    let (status, body) = token_request(&with_a, &hub_issuer, "a", &a_key, None).await;
    assert_eq!(status, 200, "{body}");
    let a_hub_token = body["access_token"].as_str().unwrap().to_owned();

    // A's token at the hub, and a hub-issued token of A's at B, need A's certificate too.
    let locate_url = format!("{hub_base}/{locate}");
    let (status, body) = get(&without, &locate_url, &a_hub_token).await;
    assert_eq!(status, 403, "{body}");
    assert!(refused_for_the_pin(&body, "a"), "{body}");
    let (status, body) = get(&with_a, &locate_url, &a_hub_token).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = token_request(&with_a, &hub_issuer, "a", &a_key, Some(b_base)).await;
    assert_eq!(status, 200, "{body}");
    let for_b = body["access_token"].as_str().unwrap().to_owned();
    let at_b = format!("{b_base}/Condition?patient=b-shared");
    let (status, body) = get(&with_b, &at_b, &for_b).await;
    assert_eq!(status, 403, "{body}");
    assert!(refused_for_the_pin(&body, "a"), "{body}");
    let (status, body) = get(&with_a, &at_b, &for_b).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entry"].as_array().map(Vec::len), Some(2), "{body}");
}
