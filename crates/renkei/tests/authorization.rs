//! Authorization end to end, on SQLite and PostgreSQL: a store with a registered client is
//! served with the gate on. Every route but discovery and health answers 401 without a token;
//! a backend service gets a token with a `private_key_jwt` assertion (RS384) and reads; bad
//! assertions (replayed, wrong audience, too long-lived) are refused; a patient token (signed
//! here with the node's own key file, as the login flow would) reaches its person's records
//! only, through read, vread, history, search, chains, `_has`, `_include`, `_revinclude`,
//! `$everything`, paging links, `_total`, batch GET entries and conditional create, and loses a
//! source at once when it is unlinked; scope restrictions, revocation, introspection, expiry
//! and break-glass requests behave as SMART and the RFCs say.

mod support;

use std::path::Path;

use auth::token::TokenKeys;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Backend, Data, PUBLIC, Server};

const RSA_PEM: &str = include_str!("../../auth/tests/fixtures/client-rs384.pem");
const JWKS: &str = include_str!("../../auth/tests/fixtures/client-rs384.jwks.json");
const GOLDEN_TAG: &str = "https://renkei.dev/fhir/CodeSystem/empi|golden";
/// The node's public base URL (`--base-url`): what tokens are issued for, the same across
/// restarts whatever port the test server gets.
const TOKEN_ENDPOINT: &str = "http://renkei.test/auth/token";
const APP_REDIRECT: &str = "http://127.0.0.1:9/callback";
const PASSWORD: &str = "correct horse battery staple";

fn patient(id: &str, family: &str, given: &str, mrn: &str, ssn: &str) -> Value {
    json!({
        "resourceType": "Patient", "id": id, "gender": "female", "birthDate": "1961-07-04",
        "identifier": [
            {"system": format!("urn:mrn:{id}"), "value": mrn},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn}],
        "name": [{"family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": "555-201-7788"}],
        "address": [{"line": ["4 Harbour Rd"], "city": "Salem", "postalCode": "01970"}]
    })
}

fn observation(id: &str, subject: &str, category: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "identifier": [{"system": "urn:obs", "value": id}],
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{subject}")}
    })
}

/// `Type/id` of every entry of a Bundle, sorted.
fn ids(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = &e["resource"];
            Some(format!(
                "{}/{}",
                r["resourceType"].as_str()?,
                r["id"].as_str()?
            ))
        })
        .collect();
    v.sort();
    v
}

/// Every resource of a search, following next links with the token.
async fn walk(s: &Server, token: &str, path: &str) -> Vec<String> {
    let base = format!("{PUBLIC}/");
    let mut next = Some(path.to_owned());
    let mut seen = Vec::new();
    while let Some(path) = next.take() {
        let (status, bundle) = s.get_as(token, &path).await;
        assert_eq!(status, 200, "{path}: {bundle}");
        seen.extend(ids(&bundle));
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
    seen.sort();
    seen
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A `private_key_jwt` assertion of client `backend` for `aud`, living `life` seconds.
fn assertion(aud: &str, jti: &str, life: i64) -> String {
    assertion_of("backend", aud, jti, life)
}

/// The same for client `client`.
fn assertion_of(client: &str, aud: &str, jti: &str, life: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some("test-rs384".into());
    let claims = json!({"iss": client, "sub": client, "aud": aud, "exp": now + life,
                        "jti": jti});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// `POST /auth/token` with a form body: (status, JSON).
async fn token_request(s: &Server, form: &[(&str, &str)]) -> (u16, Value) {
    let url = s.base.replace("/fhir", "/auth/token");
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let r = s
        .client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The form of a client-credentials token request with `assertion`, asking for `scope`.
fn credentials<'a>(assertion: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", scope),
    ]
}

/// A backend-services token for `scope`.
async fn service_token(s: &Server, scope: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let jti = uuid::Uuid::new_v4().to_string();
    let a = assertion(TOKEN_ENDPOINT, &jti, 120);
    let mut form = credentials(&a, scope);
    form.extend_from_slice(extra);
    token_request(s, &form).await
}

/// A token signed with the node's own keys, as its login would issue it.
fn minted(keys: &Path, scope: &str, patient: Option<&str>, life: i64) -> String {
    let mut c = support::claims("portal", scope, life);
    c.sub = "alice".into();
    c.patient = patient.map(str::to_owned);
    c.fhir_user = patient.map(|p| format!("Patient/{p}"));
    support::mint(keys, &c)
}

/// A loopback HTTP server publishing the client's key set: its URL and a count of fetches.
async fn serve_jwks() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = fetches.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 2048];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{JWKS}",
                JWKS.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (url, fetches)
}

/// A form POST to an `/auth/...` endpoint, not following redirects: (status, Location,
/// body text).
async fn post_form(s: &Server, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let r = client
        .post(s.base.replace("/fhir", path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, r.text().await.unwrap())
}

/// The value of `name` in a URL's query.
fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    store::search::parse_query_string(query)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// The SMART standalone launch of a patient app: the sign-in page, a wrong then a right
/// password, the code exchanged once with its PKCE verifier, a token bound to the person,
/// a refresh token used once, and revoked.
async fn sign_in_flow(s: &Server, golden: &str) {
    let verifier = "a-verifier-of-the-app-that-is-long-enough-0123456789";
    let challenge = auth::pkce::challenge_of(verifier);
    let authorize = |redirect: &str| {
        let params = [
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", redirect),
            ("scope", "launch/patient patient/*.rs offline_access"),
            ("state", "s-1"),
            ("aud", PUBLIC),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let q: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        format!(
            "{}?{}",
            s.base.replace("/fhir", "/auth/authorize"),
            q.join("&")
        )
    };
    // An unregistered redirect is shown an error, never sent anywhere.
    let r = s
        .client
        .get(authorize("https://evil.example/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s.client.get(authorize(APP_REDIRECT)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    let request = page
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{page}"))
        .to_owned();
    let (status, _, page) = post_form(
        s,
        "/auth/authorize",
        &[
            ("request", &request),
            ("username", "adaeze"),
            ("password", "wrong password!"),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_eq!(status, 401, "{page}");
    let (status, location, _) = post_form(
        s,
        "/auth/authorize",
        &[
            ("request", &request),
            ("username", "adaeze"),
            ("password", PASSWORD),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    assert!(location.starts_with(APP_REDIRECT), "{location}");
    assert_eq!(query_value(&location, "state").as_deref(), Some("s-1"));
    let code = query_value(&location, "code").unwrap();

    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", "app"),
        ("redirect_uri", APP_REDIRECT),
        ("code_verifier", verifier),
    ];
    let (status, tokens) = token_request(s, &exchange).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["patient"], golden, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(s.get_as(access, "Patient/alice-b").await.0, 200);
    assert_eq!(s.get_as(access, "Patient/bob").await.0, 404);
    // A code works once.
    let (status, again) = token_request(s, &exchange).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let use_refresh = |r: String| async move {
        token_request(
            s,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &r),
                ("client_id", "app"),
            ],
        )
        .await
    };
    let (status, renewed) = use_refresh(refresh.clone()).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(
        s.get_as(renewed["access_token"].as_str().unwrap(), "Patient/alice-a")
            .await
            .0,
        200
    );
    let (status, spent) = use_refresh(refresh).await;
    assert_eq!(
        (status, spent["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let newer = renewed["refresh_token"].as_str().unwrap().to_owned();
    let (status, _, _) = post_form(
        s,
        "/auth/revoke",
        &[("token", &newer), ("client_id", "app")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, revoked) = use_refresh(newer).await;
    assert_eq!(
        (status, revoked["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // Guessing: ten wrong passwords for one name lock it, even against the right one.
    let fresh_request = || async {
        let page = s
            .client
            .get(authorize(APP_REDIRECT))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.split("name=\"request\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned()
    };
    let mut request = String::new();
    for attempt in 0..10 {
        if attempt % 4 == 0 {
            request = fresh_request().await;
        }
        let (status, _, _) = post_form(
            s,
            "/auth/authorize",
            &[
                ("request", &request),
                ("username", "adaeze"),
                ("password", "not the password"),
                ("decision", "allow"),
            ],
        )
        .await;
        assert!(
            status == 401 || status == 302,
            "attempt {attempt}: {status}"
        );
    }
    let request = fresh_request().await;
    let (status, _, page) = post_form(
        s,
        "/auth/authorize",
        &[
            ("request", &request),
            ("username", "adaeze"),
            ("password", PASSWORD),
            ("decision", "allow"),
        ],
    )
    .await;
    assert_eq!(status, 429, "{page}");
}

/// The `Patient/x` references of an AuditEvent's entities.
fn audited_patients(event: &Value) -> Vec<String> {
    event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["what"]["reference"].as_str())
        .filter(|r| r.starts_with("Patient/"))
        .map(str::to_owned)
        .collect()
}

/// The audit log through the API: searchable by patient and paged for a system token; a
/// patient sees the records about their person only; nobody writes it.
async fn audit_trail(s: &Server, system: &str, patient_token: &str, golden: &str) {
    let (status, about_bob) = s.get_as(system, "AuditEvent?patient=Patient/bob").await;
    assert_eq!(status, 200, "{about_bob}");
    let entries = about_bob["entry"].as_array().unwrap();
    assert!(!entries.is_empty(), "{about_bob}");
    for e in entries {
        assert!(
            audited_patients(&e["resource"]).contains(&"Patient/bob".to_owned()),
            "{e}"
        );
    }
    let (_, page) = s.get_as(system, "AuditEvent?_count=2").await;
    assert_eq!(page["entry"].as_array().unwrap().len(), 2);
    assert!(
        page["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next"),
        "{page}"
    );
    let id = page["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        s.get_as(system, &format!("AuditEvent/{id}/_history/1"))
            .await
            .0,
        200
    );

    // A patient lists who accessed their record: only records naming their person.
    let mine = [
        format!("Patient/{golden}"),
        "Patient/alice-a".to_owned(),
        "Patient/alice-b".to_owned(),
    ];
    let (status, own) = s.get_as(patient_token, "AuditEvent?_count=1000").await;
    assert_eq!(status, 200, "{own}");
    let own = own["entry"].as_array().unwrap().clone();
    assert!(!own.is_empty());
    for e in &own {
        let named = audited_patients(&e["resource"]);
        assert!(named.iter().any(|p| mine.contains(p)), "{e}");
    }
    // Reads by the system token of Alice's data are among them.
    assert!(
        own.iter()
            .any(|e| e["resource"]["agent"][0]["who"]["identifier"]["value"] == "backend"),
        "the backend's accesses are listed"
    );
    let (_, bobs) = s
        .get_as(patient_token, "AuditEvent?patient=Patient/bob")
        .await;
    for e in bobs["entry"].as_array().into_iter().flatten() {
        let named = audited_patients(&e["resource"]);
        assert!(named.iter().any(|p| mine.contains(p)), "{e}");
    }

    // Nobody writes the log through the API.
    let auth = format!("Bearer {system}");
    let (status, _, out) = s
        .send(
            "POST",
            "AuditEvent",
            &[("authorization", &auth)],
            Some(r#"{"resourceType":"AuditEvent"}"#),
        )
        .await;
    assert_eq!(status, 405, "{out}");
}

async fn scenario(backend: Backend) {
    let data = Data::new(backend).await;
    // The data, loaded while the store is open (on loopback, before any registration).
    let open = Server::start(&data).await;
    for p in [
        patient("alice-a", "Okafor", "Adaeze", "A-1", "123-45-6789"),
        patient("alice-b", "Okafor", "Adaeze", "B-7", "123-45-6789"),
        patient("bob", "Lindqvist", "Bror", "C-3", "987-65-4321"),
    ] {
        let (status, body) = open.put_as(None, &p).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    for o in [
        observation("lab-a", "alice-a", "laboratory", "2345-7"),
        observation("vital-a", "alice-a", "vital-signs", "8867-4"),
        observation("lab-b", "alice-b", "laboratory", "718-7"),
        observation("lab-bob", "bob", "laboratory", "4548-4"),
    ] {
        let (status, body) = open.put_as(None, &o).await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    let (_, _, goldens) = open
        .send(
            "GET",
            &format!("Patient?_tag={GOLDEN_TAG}&link=Patient/alice-a"),
            &[],
            None,
        )
        .await;
    let golden = goldens["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("alice's golden record: {goldens}"))
        .to_owned();
    let linked: Vec<&str> = goldens["entry"][0]["resource"]["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["other"]["reference"].as_str().unwrap())
        .collect();
    assert!(linked.contains(&"Patient/alice-b"), "{goldens}");
    open.terminate();

    // A backend service is registered: from now on the store needs tokens.
    let jwks = data.dir.join("backend.jwks.json");
    std::fs::write(&jwks, JWKS).unwrap();
    let out = support::renkei()
        .args(["clients", "add", "--id", "backend", "--scope"])
        .arg("system/*.rs system/Patient.u system/Observation.c")
        .arg("--jwks")
        .arg(&jwks)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // An app (public client, authorization code with PKCE) and a patient who signs in.
    let out = support::renkei()
        .args([
            "clients",
            "add",
            "--id",
            "app",
            "--redirect-uri",
            APP_REDIRECT,
            "--scope",
        ])
        .arg("patient/*.rs launch/patient offline_access")
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut add_user = support::renkei()
        .args([
            "users",
            "add",
            "--name",
            "adaeze",
            "--fhir-user",
            "Patient/alice-a",
        ])
        .args(["--scope", "patient/*.rs launch/patient offline_access"])
        .args(data.args())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = add_user.stdin.take().unwrap();
        writeln!(stdin, "{PASSWORD}").unwrap();
    }
    assert!(add_user.wait().unwrap().success());
    let keys = support::token_keys(&data);
    let audit_key = support::audit_key(&data);
    let s = Server::start_secured(&data).await;

    // Without a token: 401 everywhere but discovery and health.
    for (method, path) in [
        ("GET", "Patient"),
        ("GET", "Patient/bob"),
        ("GET", "Patient/bob/_history/1"),
        ("GET", ""),
        ("GET", "_history"),
        ("POST", ""),
        ("POST", "Patient/$match"),
        ("GET", "Patient/alice-a/$everything"),
        ("GET", "no/such/route/at/all"),
    ] {
        let (status, headers, body) = s.send(method, path, &[], Some("{}")).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{method} {path}"
        );
        assert_eq!(body["issue"][0]["code"], "login", "{body}");
    }
    let (status, _, cs) = s.send("GET", "metadata", &[], None).await;
    assert_eq!(status, 200);
    let oauth = &cs["rest"][0]["security"]["extension"][0];
    assert_eq!(
        oauth["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let token_url = TOKEN_ENDPOINT.to_owned();
    assert!(
        oauth["extension"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["url"] == "token" && e["valueUri"] == token_url.as_str()),
        "{oauth}"
    );
    for path in [
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
    ] {
        let url = s.base.replace("/fhir", path);
        let doc: Value = s
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["token_endpoint"], token_url.as_str(), "{doc}");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert!(
            doc["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("private_key_jwt"))
        );
    }

    // Backend services: an assertion gets a token, narrowed to what the client may have.
    let (status, t) = service_token(&s, "system/*.cruds system/Patient.u", &[]).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["expires_in"].as_i64().unwrap() <= 300);
    let system = t["access_token"].as_str().unwrap().to_owned();
    assert!(!t["scope"].as_str().unwrap().contains("cruds"), "{t}");
    let (status, all) = s.get_as(&system, "Observation?_total=accurate").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 4, "{all}");
    // ... and what its scopes do not grant is refused, naming the scope.
    let auth = format!("Bearer {system}");
    let (status, headers, body) = s
        .send(
            "DELETE",
            "Observation/lab-a",
            &[("authorization", &auth)],
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );

    // Bad assertions.
    let aud = token_url.clone();
    let replayed = assertion(&aud, "same-jti", 120);
    let send = |a: String| {
        let s = &s;
        async move { token_request(s, &credentials(&a, "system/*.rs")).await }
    };
    assert_eq!(send(replayed.clone()).await.0, 200);
    let (status, body) = send(replayed).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, body) = send(assertion("https://elsewhere/token", "j2", 120)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = send(assertion(&aud, "j3", 3600)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = send("not.a.jwt".to_owned()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // A backend service whose keys are published at a jwks_uri (fetched, then cached).
    let (jwks_url, fetches) = serve_jwks().await;
    let out = support::renkei()
        .args(["clients", "add", "--id", "remote", "--scope", "system/*.rs"])
        .args(["--jwks-uri", &jwks_url])
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for n in 0..2 {
        let a = assertion_of("remote", TOKEN_ENDPOINT, &format!("remote-{n}"), 120);
        let (status, body) = token_request(&s, &credentials(&a, "system/Patient.rs")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the key set is fetched once, then cached"
    );

    // Break-glass is asked for with a reason, and is short-lived and marked.
    let (status, body) = service_token(&s, "system/*.rs", &[("purpose_of_use", "ETREAT")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, glass) = service_token(
        &s,
        "system/*.rs",
        &[
            ("purpose_of_use", "ETREAT"),
            ("break_glass_reason", "unconscious in the ED"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{glass}");
    let introspect = |token: String, caller: String| {
        let s = &s;
        async move {
            let url = s.base.replace("/fhir", "/auth/introspect");
            let r = s
                .client
                .post(url)
                .bearer_auth(caller)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, info) = introspect(
        glass["access_token"].as_str().unwrap().to_owned(),
        system.clone(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["break_glass"], "unconscious in the ED");
    assert_eq!(info["purpose_of_use"], "ETREAT");

    // A patient token reaches the person: both sources and the golden record, nobody else.
    let pt = minted(&keys, "patient/*.rs", Some(&golden), 300);
    for id in ["alice-a", "alice-b", golden.as_str()] {
        assert_eq!(s.get_as(&pt, &format!("Patient/{id}")).await.0, 200, "{id}");
    }
    for path in [
        "Patient/bob",
        "Patient/bob/_history/1",
        "Patient/bob/_history",
        "Observation/lab-bob",
        "Patient/bob/$everything",
        "Patient/bob/Observation",
    ] {
        assert_eq!(s.get_as(&pt, path).await.0, 404, "{path}");
    }
    let alice_obs = sorted(&[
        "Observation/lab-a",
        "Observation/vital-a",
        "Observation/lab-b",
    ]);
    assert_eq!(walk(&s, &pt, "Observation?_count=1").await, alice_obs);
    let (_, counted) = s.get_as(&pt, "Observation?_total=accurate&_count=1").await;
    assert_eq!(counted["total"], 3, "{counted}");
    let (_, counted) = s.get_as(&pt, "Observation?_summary=count").await;
    assert_eq!(counted["total"], 3, "{counted}");
    for path in [
        "Observation?subject=Patient/bob",
        "Observation?code=4548-4",
        "Observation?subject.name=Lindqvist",
        "Patient?_has:Observation:subject:code=4548-4",
        "Patient?identifier=987-65-4321",
    ] {
        let (status, bundle) = s.get_as(&pt, path).await;
        assert_eq!(status, 200, "{path}: {bundle}");
        assert_eq!(ids(&bundle), Vec::<String>::new(), "{path}");
    }
    let (_, included) = s
        .get_as(&pt, "Observation?_include=Observation:subject")
        .await;
    assert!(
        !ids(&included).iter().any(|i| i.contains("bob")),
        "{included}"
    );
    let (_, revincluded) = s
        .get_as(&pt, "Patient?_revinclude=Observation:subject")
        .await;
    let rev = ids(&revincluded);
    assert!(rev.contains(&"Observation/lab-b".to_owned()), "{rev:?}");
    assert!(!rev.iter().any(|i| i.contains("bob")), "{rev:?}");
    let everything = walk(&s, &pt, &format!("Patient/{golden}/$everything?_count=2")).await;
    assert!(everything.contains(&"Observation/lab-b".to_owned()));
    assert!(
        !everything.iter().any(|i| i.contains("bob")),
        "{everything:?}"
    );
    // What reaches other people by design is refused to a patient token.
    for (method, path, body) in [
        (
            "POST",
            "Patient/$match",
            Some(r#"{"resourceType":"Parameters"}"#),
        ),
        ("GET", "?_type=Patient", None),
        ("GET", "_history", None),
        ("GET", "Observation/_history", None),
    ] {
        let auth = format!("Bearer {pt}");
        let (status, _, out) = s
            .send(method, path, &[("authorization", &auth)], body)
            .await;
        assert_eq!(status, 403, "{method} {path}: {out}");
    }
    // A batch's GET entries are held to the same rule.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/bob"}},
        {"request": {"method": "GET", "url": "Observation?code=4548-4"}},
        {"request": {"method": "GET", "url": "Patient/alice-b"}}]});
    let auth = format!("Bearer {pt}");
    let (status, _, out) = s
        .send(
            "POST",
            "",
            &[("authorization", &auth)],
            Some(&batch.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(
        out["entry"][0]["response"]["status"], "404 Not Found",
        "{out}"
    );
    assert_eq!(out["entry"][1]["resource"]["total"], 0, "{out}");
    assert_eq!(out["entry"][2]["response"]["status"], "200 OK", "{out}");

    // Writes by a patient with write scopes: inside the person's record only; a conditional
    // create never matches another person's data.
    let writer = minted(&keys, "patient/Observation.cruds", Some(&golden), 300);
    let (status, body) = s
        .put_as(
            Some(&writer),
            &observation("planted", "bob", "laboratory", "1"),
        )
        .await;
    // (Refused as a reference to a record the token cannot see, or as a write outside
    // the person's records: either way nothing is written.)
    assert!(status == 400 || status == 403, "{status} {body}");
    assert_eq!(s.get_as(&system, "Observation/planted").await.0, 404);
    let auth = format!("Bearer {writer}");
    let mine = observation("ignored", "alice-a", "survey", "72166-2");
    let mut mine = mine.as_object().unwrap().clone();
    mine.remove("id");
    let (status, _, created) = s
        .send(
            "POST",
            "Observation",
            &[
                ("authorization", &auth),
                ("if-none-exist", "identifier=urn:obs|lab-bob"),
            ],
            Some(&Value::Object(mine).to_string()),
        )
        .await;
    assert_eq!(status, 201, "a new one, not Bob's: {created}");
    assert_ne!(created["id"], "lab-bob");

    // A scope restricted by category sees that category only.
    let labs = minted(
        &keys,
        "patient/Observation.rs?category=laboratory",
        Some(&golden),
        300,
    );
    assert_eq!(
        walk(&s, &labs, "Observation").await,
        sorted(&["Observation/lab-a", "Observation/lab-b"])
    );
    assert_eq!(s.get_as(&labs, "Observation/lab-a").await.0, 200);
    assert_eq!(s.get_as(&labs, "Observation/vital-a").await.0, 404);
    assert_eq!(s.get_as(&labs, "Patient/alice-a").await.0, 403);

    sign_in_flow(&s, &golden).await;
    audit_trail(&s, &system, &pt, &golden).await;
    // The conditional create above has one record, written with it.
    let created_id = created["id"].as_str().unwrap();
    let (_, rec) = s
        .get_as(
            &system,
            &format!("AuditEvent?entity=Observation/{created_id}"),
        )
        .await;
    let rec = rec["entry"].as_array().unwrap();
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(rec[0]["resource"]["subtype"][0]["code"], "create");
    assert_eq!(rec[0]["resource"]["outcome"], "0");

    // Unlinking a source takes it out of the token's reach at once.
    let unlink = json!({"resourceType": "Parameters", "parameter": [
        {"name": "source", "valueString": "alice-b"},
        {"name": "reason", "valueString": "registered under the wrong person"}]});
    let auth = format!("Bearer {system}");
    let (status, _, out) = s
        .send(
            "POST",
            "Patient/$empi-unlink",
            &[("authorization", &auth)],
            Some(&unlink.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(s.get_as(&pt, "Patient/alice-b").await.0, 404);
    assert_eq!(s.get_as(&pt, "Observation/lab-b").await.0, 404);
    assert_eq!(s.get_as(&pt, "Observation/lab-a").await.0, 200);

    // Tokens: expired, foreign, revoked.
    let expired = minted(&keys, "patient/*.rs", Some(&golden), -120);
    let auth = format!("Bearer {expired}");
    let (status, _, body) = s
        .send("GET", "Patient/alice-a", &[("authorization", &auth)], None)
        .await;
    assert_eq!(
        (status, body["issue"][0]["code"].as_str()),
        (401, Some("expired"))
    );
    let foreign_keys = data.dir.join("other-keys.json");
    std::fs::write(&foreign_keys, TokenKeys::generate(0).unwrap().to_json()).unwrap();
    let foreign = minted(&foreign_keys, "patient/*.rs", Some(&golden), 300);
    assert_eq!(s.get_as(&foreign, "Patient/alice-a").await.0, 401);
    let revoke_url = s.base.replace("/fhir", "/auth/revoke");
    let r = s
        .client
        .post(&revoke_url)
        .bearer_auth(&system)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={system}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.get_as(&system, "Observation").await.0, 401);
    let glass_token = glass["access_token"].as_str().unwrap().to_owned();
    let (_, info) = introspect(system.clone(), glass_token.clone()).await;
    assert_eq!(info["active"], false, "{info}");

    // A revocation outlives a restart.
    s.terminate();
    let s = Server::start_secured(&data).await;
    assert_eq!(s.get_as(&system, "Observation").await.0, 401);
    assert_eq!(s.get_as(&glass_token, "Observation").await.0, 200);
    s.terminate();

    // Rotating the signing keys keeps the tokens the old key signed valid.
    let out = support::renkei()
        .args(["token-keys", "rotate", "--token-keys"])
        .arg(&keys)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let s = Server::start_secured(&data).await;
    let jwks: Value = s
        .client
        .get(s.base.replace("/fhir", "/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    assert_eq!(s.get_as(&glass_token, "Observation").await.0, 200);
    let (status, fresh) = service_token(&s, "system/*.rs", &[]).await;
    assert_eq!(status, 200, "{fresh}");
    let fresh = fresh["access_token"].as_str().unwrap();
    assert_eq!(s.get_as(fresh, "Observation").await.0, 200);
    s.terminate();

    // Every request above, refusals included, is in the audit log, and the log verifies.
    let out = support::renkei()
        .args(["audit", "verify", "--audit-key"])
        .arg(&audit_key)
        .args(data.args())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: usize = text
        .split("verified: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(records > 60, "{text}");
}

#[tokio::test]
async fn sqlite_tokens_scopes_and_patient_reach() {
    scenario(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_tokens_scopes_and_patient_reach() {
    scenario(Backend::Postgres).await;
}
