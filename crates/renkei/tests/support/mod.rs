//! End-to-end harness: runs the real `renkei` binary on a free loopback port, on a temporary
//! SQLite directory or a fresh PostgreSQL schema (dropped afterwards), and talks HTTP to it.

#![allow(dead_code)]

/// The exchange's helpers: a hub and nodes as processes.
pub mod network;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a test's data lives: a directory, plus a PostgreSQL schema for that backend.
pub struct Data {
    pub dir: PathBuf,
    pub schema: Option<String>,
}

pub fn database_url() -> String {
    std::env::var("RENKEI_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

impl Data {
    pub async fn new(backend: Backend) -> Data {
        let dir = std::env::temp_dir().join(format!("renkei-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let schema = format!("e2e_{}", uuid::Uuid::new_v4().simple());
                let (client, conn) =
                    tokio_postgres::connect(&database_url(), tokio_postgres::NoTls)
                        .await
                        .expect("PostgreSQL must be running (scripts/test-setup.sh)");
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .unwrap();
                Some(schema)
            }
        };
        Data { dir, schema }
    }

    /// `--data DIR` (SQLite) or `--database-url URL` (PostgreSQL, which needs no data
    /// directory).
    pub fn args(&self) -> Vec<String> {
        match &self.schema {
            None => vec!["--data".to_owned(), self.dir.display().to_string()],
            Some(schema) => {
                let url = database_url();
                let sep = if url.contains('?') { '&' } else { '?' };
                vec![
                    "--database-url".into(),
                    format!("{url}{sep}options=-csearch_path%3D{schema}"),
                ]
            }
        }
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(schema) = self.schema.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((client, conn)) =
                        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = client
                            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn renkei() -> Command {
    Command::new(env!("CARGO_BIN_EXE_renkei"))
}

/// A running `renkei serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub client: reqwest::Client,
    /// The MLLP address, when started with `--mllp`.
    pub mllp: Option<std::net::SocketAddr>,
}

impl Server {
    pub async fn start(data: &Data) -> Server {
        Self::start_with(data, &[]).await
    }

    /// `renkei serve` with extra arguments (e.g. `--mllp 127.0.0.1:0`).
    pub async fn start_with(data: &Data, extra: &[&str]) -> Server {
        let mut cmd = renkei();
        cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        Self::spawn(cmd, data, extra).await
    }

    /// `renkei serve` as an operator runs it: the default log filter, its log (stderr) written
    /// to `log`, a file and not a terminal.
    pub async fn start_logging_to(data: &Data, extra: &[&str], log: &std::path::Path) -> Server {
        Self::start_logged(data, extra, &[], log).await
    }

    /// [`Server::start_logging_to`] with more environment variables (`TZ`, say).
    pub async fn start_logged(
        data: &Data,
        extra: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Server {
        let mut cmd = renkei();
        cmd.env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(log).expect("create the log file"));
        Self::spawn(cmd, data, extra).await
    }

    /// `renkei serve` over HTTPS (`extra` names its certificate), talked to with `client`
    /// (which trusts that certificate).
    pub async fn start_https(data: &Data, extra: &[&str], client: reqwest::Client) -> Server {
        let mut cmd = renkei();
        cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
        Self::spawn_with(cmd, data, extra, Some(client)).await
    }

    async fn spawn(cmd: Command, data: &Data, extra: &[&str]) -> Server {
        Self::spawn_with(cmd, data, extra, None).await
    }

    async fn spawn_with(
        mut cmd: Command,
        data: &Data,
        extra: &[&str],
        client: Option<reqwest::Client>,
    ) -> Server {
        let mut child = cmd
            .arg("serve")
            .args(data.args())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start renkei serve");
        let stdout = child.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://") || w.starts_with("https://"))
            .unwrap_or_else(|| panic!("unexpected first line from renkei serve: {line:?}"))
            .to_owned();
        let mllp = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("mllp://"))
            .map(|a| a.parse().expect("an MLLP address"));
        server::tls::install_default_provider();
        let server = Server {
            child,
            base,
            client: client.unwrap_or_default(),
            mllp,
        };
        server.wait_ready().await;
        server
    }

    /// Polls `/readyz` (bounded) until the store answers.
    async fn wait_ready(&self) {
        let url = self.base.replace("/fhir", "/readyz");
        for _ in 0..500 {
            if let Ok(r) = self.client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.starts_with('?') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/{path}", self.base)
        }
    }

    /// Sends a request; returns status, headers and the JSON body (Null when empty).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("non-JSON body: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, json)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Synthea sample shipped beside the repository.
pub fn synthea10() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-10")
}

/// The public base URL (`--base-url`) the authorization tests serve under, whatever port the
/// server gets, so that the tokens they make stay valid across restarts.
pub const PUBLIC: &str = "http://renkei.test/fhir";

/// Claims of an access token for the node at [`PUBLIC`], valid for `life` seconds (negative:
/// expired), granting `scope` to `client`; the caller fills in the rest.
pub fn claims(client: &str, scope: &str, life: i64) -> auth::token::AccessClaims {
    let now = chrono::Utc::now().timestamp();
    auth::token::AccessClaims {
        iss: PUBLIC.trim_end_matches("/fhir").to_owned(),
        sub: client.to_owned(),
        aud: PUBLIC.to_owned(),
        exp: now + life,
        iat: now - 1,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: scope.to_owned(),
        client_id: client.to_owned(),
        patient: None,
        fhir_user: None,
        organization: None,
        purpose_of_use: None,
        break_glass: None,
    }
}

/// A token signed with the node's own key ring (the file at `keys`), as its token endpoint or
/// sign-in would issue it.
pub fn mint(keys: &std::path::Path, claims: &auth::token::AccessClaims) -> String {
    let ring = auth::token::TokenKeys::from_json(&std::fs::read_to_string(keys).unwrap()).unwrap();
    ring.issue(claims).unwrap()
}

impl Server {
    /// `PUT` of `r` at its `Type/id`, with a bearer token when one is given: (status, body).
    pub async fn put_as(
        &self,
        token: Option<&str>,
        r: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let path = format!(
            "{}/{}",
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap()
        );
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let (status, _, body) = self
            .send("PUT", &path, &headers, Some(&r.to_string()))
            .await;
        (status, body)
    }

    /// `GET` with a bearer token: (status, body).
    pub async fn get_as(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {token}");
        let (status, _, body) = self
            .send("GET", path, &[("authorization", &auth)], None)
            .await;
        (status, body)
    }
}

/// Where a node with authorization on keeps its token-signing keys: its data directory.
pub fn token_keys(data: &Data) -> PathBuf {
    data.dir.join("token-keys.json")
}

/// Where it keeps its audit key.
pub fn audit_key(data: &Data) -> PathBuf {
    data.dir.join("audit-signing.key")
}

impl Server {
    /// `renkei serve` on a store with registrations (so with authorization and audit on),
    /// under [`PUBLIC`], its key files in the data directory ([`token_keys`], [`audit_key`];
    /// named explicitly, as PostgreSQL needs).
    pub async fn start_secured(data: &Data) -> Server {
        let keys = token_keys(data);
        let audit = audit_key(data);
        let args = [
            "--token-keys",
            keys.to_str().unwrap(),
            "--audit-key",
            audit.to_str().unwrap(),
            "--base-url",
            PUBLIC,
        ];
        Self::start_with(data, &args).await
    }
}
