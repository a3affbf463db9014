//! HTTPS (and the TLS of MLLP, which takes the same configuration): the operator's certificate
//! chain and private key (PEM files) as a rustls server configuration on the `ring` provider,
//! TLS 1.2 and 1.3 only; and [`TlsListener`], the axum listener that hands the server only
//! connections whose handshake completed. Each handshake runs in its own task, bounded by
//! [`HANDSHAKE_TIMEOUT`], so a client that stalls its handshake holds up nobody else. And the
//! process-wide provider outbound HTTPS uses ([`install_default_provider`]).
//!
//! Mutual TLS without a certificate authority of Renkei's: the server asks every client for a
//! certificate and lets one without through ([`PresentedCertificateVerifier`]); a presented
//! certificate needs no chain (what it is worth is decided by the pin a node registered,
//! `exchange::pinning`), but the client must prove it holds its key: the handshake signature is
//! verified with the provider's algorithms. The leaf's SHA-256 fingerprint reaches the handlers
//! as a [`ClientCertificate`] request extension ([`TlsConnection`], [`tag_client_certificate`]).
//! Outbound, [`ClientTls`] is what this process presents (`--tls-client-cert/--tls-client-key`)
//! and trusts beyond the system's roots (`--tls-ca`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the certificate chain {0}: {1}")]
    Certificates(String, String),
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("reading the private key {0}: {1}")]
    Key(String, String),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the client certificate {0} and its key do not make an HTTPS client identity: {1}")]
    ClientIdentity(String, String),
    #[error("the trusted certificates {0}: {1}")]
    TrustedCertificates(String, String),
}

/// The ring provider.
fn ring() -> rustls::crypto::CryptoProvider {
    // ring, not aws-lc-rs: the build machines have no cmake (see the workspace Cargo.toml).
    // rustls 0.23.48 deprecates the ring provider for lacking post-quantum key exchange; the
    // classical suites it offers are the same TLS 1.2/1.3 set as before.
    #[expect(
        deprecated,
        reason = "ring is the provider this project builds with; no post-quantum key exchange"
    )]
    rustls::crypto::ring::default_provider()
}

/// Makes ring the process's default TLS provider, which outbound HTTPS (reqwest, built
/// without a provider of its own) takes; does nothing when one is installed already. Every
/// process that builds a `reqwest::Client` calls it first.
pub fn install_default_provider() {
    let _ = ring().install_default();
}

/// The server configuration of `cert` (PEM chain, leaf first) and `key` (PEM, PKCS#8, SEC1 or
/// PKCS#1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificates(cert.display().to_string(), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key(key.display().to_string(), e.to_string()))?;
    let provider = Arc::new(ring());
    let verifier = Arc::new(PresentedCertificateVerifier::new(&provider));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 fingerprint of a certificate (of its DER encoding), as 64 lowercase hex digits:
/// what a node's pinned client certificate is known by (`openssl x509 -noout -fingerprint
/// -sha256` prints the same digits, upper case and colon-separated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertificateFingerprint(String);

impl CertificateFingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> CertificateFingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
        }
        CertificateFingerprint(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CertificateFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client certificate the connection of a request presented: a request extension, absent
/// when the connection presented none (or is not TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The fingerprint of the leaf certificate.
    pub fingerprint: CertificateFingerprint,
}

/// The client-certificate verifier of [`server_config`]: a certificate is asked for and not
/// required; a presented one must parse as an X.509 end-entity certificate, and the handshake
/// signature made with its key must verify (the provider's algorithms, through rustls's own
/// helpers). No chain to a root is asked for: pinning decides whom a certificate stands for.
#[derive(Debug)]
pub struct PresentedCertificateVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PresentedCertificateVerifier {
    /// The verifier with `provider`'s signature algorithms.
    pub fn new(provider: &rustls::crypto::CryptoProvider) -> Self {
        PresentedCertificateVerifier {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for PresentedCertificateVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Browsers and apps without a certificate still connect; pinned nodes' calls are
        // refused above TLS when their certificate is missing.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        ParsedCertificate::try_from(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What the server knows of a TLS connection: the peer's address and the client certificate
/// it presented (axum's `ConnectInfo` of a [`TlsListener`]).
#[derive(Debug, Clone)]
pub struct TlsConnection {
    pub remote: SocketAddr,
    pub client_certificate: Option<ClientCertificate>,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsConnection
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, connection) = stream.io().get_ref();
        TlsConnection {
            remote: *stream.remote_addr(),
            client_certificate: presented(connection.peer_certificates()),
        }
    }
}

/// The client certificate of a handshake's peer certificates (leaf first).
fn presented(certificates: Option<&[CertificateDer<'_>]>) -> Option<ClientCertificate> {
    certificates
        .and_then(<[CertificateDer<'_>]>::first)
        .map(|leaf| ClientCertificate {
            fingerprint: CertificateFingerprint::of(leaf),
        })
}

/// The middleware that puts the connection's [`ClientCertificate`] on each request (nothing
/// without TLS or without a presented certificate).
pub async fn tag_client_certificate(mut req: Request, next: Next) -> Response {
    let presented = req
        .extensions()
        .get::<ConnectInfo<TlsConnection>>()
        .and_then(|c| c.0.client_certificate.clone());
    if let Some(certificate) = presented {
        req.extensions_mut().insert(certificate);
    }
    next.run(req).await
}

/// Outbound HTTPS of this process: the client certificate it presents (`--tls-client-cert`,
/// `--tls-client-key`) and the certificates it trusts beyond the system's roots (`--tls-ca`,
/// e.g. the operator's CA of the network's servers).
#[derive(Clone, Default)]
pub struct ClientTls {
    identity: Option<reqwest::Identity>,
    fingerprint: Option<CertificateFingerprint>,
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("fingerprint", &self.fingerprint)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the trusted certificates `ca` (PEM, one or more) and the client certificate `cert`
    /// (PEM, leaf first) with its key `key` (PEM: PKCS#8, SEC1 or PKCS#1).
    pub fn load(ca: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<ClientTls, TlsError> {
        let mut tls = ClientTls::default();
        if let Some(ca) = ca {
            let name = ca.display().to_string();
            let pem = std::fs::read(ca)
                .map_err(|e| TlsError::TrustedCertificates(name.clone(), e.to_string()))?;
            tls.roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| TlsError::TrustedCertificates(name.clone(), e.to_string()))?;
            if tls.roots.is_empty() {
                return Err(TlsError::NoCertificate(name));
            }
        }
        if let Some((cert, key)) = client {
            let name = cert.display().to_string();
            let leaf = CertificateDer::pem_file_iter(cert)
                .map_err(|e| TlsError::Certificates(name.clone(), e.to_string()))?
                .next()
                .ok_or_else(|| TlsError::NoCertificate(name.clone()))?
                .map_err(|e| TlsError::Certificates(name.clone(), e.to_string()))?;
            let mut pem = std::fs::read(cert)
                .map_err(|e| TlsError::Certificates(name.clone(), e.to_string()))?;
            // The key is checked here, so that one that does not load stops the start.
            PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError::Key(key.display().to_string(), e.to_string()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| TlsError::Key(key.display().to_string(), e.to_string()))?,
            );
            tls.identity = Some(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| TlsError::ClientIdentity(name.clone(), e.to_string()))?,
            );
            tls.fingerprint = Some(CertificateFingerprint::of(&leaf));
        }
        Ok(tls)
    }

    /// The fingerprint of the client certificate presented, if any.
    pub fn fingerprint(&self) -> Option<&CertificateFingerprint> {
        self.fingerprint.as_ref()
    }

    /// A client builder presenting the client certificate and trusting the extra roots (the
    /// process's default provider: [`install_default_provider`]).
    pub fn builder(&self) -> reqwest::ClientBuilder {
        install_default_provider();
        let mut builder = reqwest::Client::builder().tls_certs_merge(self.roots.iter().cloned());
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
    }
}

/// A listener whose connections are TLS streams past their handshake.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking each connection with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (socket, peer) = match tcp.accept().await {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Too many open files and the like: wait, then go on.
                        tracing::warn!(error = %e, "accepting a TLS connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = socket.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accepting task ended (the runtime is shutting down): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::ResolvesClientCert;
    use rustls::pki_types::ServerName;
    use rustls::sign::CertifiedKey;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A directory of PEM files, removed when dropped.
    struct Files(std::path::PathBuf);

    impl Files {
        fn new() -> Files {
            let dir = std::env::temp_dir().join(format!("renkei-tls-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A self-signed certificate and its key.
    fn certificate(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![name.to_owned(), "127.0.0.1".to_owned()]).unwrap()
    }

    /// The server configuration of a fresh `localhost` certificate, and that certificate.
    fn server(files: &Files) -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
        let made = certificate("localhost");
        let cert = files.write("server.pem", &made.cert.pem());
        let key = files.write("server.key", &made.signing_key.serialize_pem());
        (server_config(&cert, &key).unwrap(), made.cert.der().clone())
    }

    /// Presents `cert` whatever is asked, signing with `key` (which need not be its key).
    #[derive(Debug)]
    struct Presents(Arc<CertifiedKey>);

    impl ResolvesClientCert for Presents {
        fn resolve(
            &self,
            _root_hint_subjects: &[&[u8]],
            _sigschemes: &[SignatureScheme],
        ) -> Option<Arc<CertifiedKey>> {
            Some(self.0.clone())
        }

        fn has_certs(&self) -> bool {
            true
        }
    }

    /// A client trusting `root`, presenting `cert` signed for with `key` (when given).
    fn client(
        root: CertificateDer<'static>,
        presents: Option<(CertificateDer<'static>, &rcgen::KeyPair)>,
    ) -> TlsConnector {
        let provider = Arc::new(ring());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match presents {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
                let signer = provider.key_provider.load_private_key(key).unwrap();
                let certified = CertifiedKey::new(vec![cert], signer);
                builder.with_client_cert_resolver(Arc::new(Presents(Arc::new(certified))))
            }
        };
        TlsConnector::from(Arc::new(config))
    }

    /// One handshake over an in-memory pipe: the client certificate the server saw, or the
    /// server's handshake error.
    async fn handshake(
        config: Arc<rustls::ServerConfig>,
        connector: TlsConnector,
    ) -> Result<Option<ClientCertificate>, String> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let accept = tokio::spawn(async move {
            let stream = TlsAcceptor::from(config)
                .accept(far)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(presented(stream.get_ref().1.peer_certificates()))
        });
        let name = ServerName::try_from("localhost").unwrap();
        // The client's side may fail too, once the server refuses; the server's answer counts.
        let _client = connector.connect(name, near).await;
        accept.await.unwrap()
    }

    #[test]
    fn a_fingerprint_is_the_sha256_of_the_der_in_lowercase_hex() {
        assert_eq!(
            CertificateFingerprint::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let made = certificate("node-a");
        let fingerprint = CertificateFingerprint::of(made.cert.der());
        assert!(exchange::registration::valid_certificate_fingerprint(
            fingerprint.as_str()
        ));
    }

    #[tokio::test]
    async fn a_client_certificate_is_asked_for_and_not_required() {
        let files = Files::new();
        let (config, server_der) = server(&files);
        let verifier = PresentedCertificateVerifier::new(&ring());
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
        assert!(!verifier.supported_verify_schemes().is_empty());
        // Without one: connected, nothing presented.
        let seen = handshake(config.clone(), client(server_der.clone(), None)).await;
        assert_eq!(seen, Ok(None));
        // A self-signed one (no chain to anything): connected, its fingerprint seen.
        let node = certificate("node-a");
        let seen = handshake(
            config.clone(),
            client(
                server_der.clone(),
                Some((node.cert.der().clone(), &node.signing_key)),
            ),
        )
        .await;
        assert_eq!(
            seen,
            Ok(Some(ClientCertificate {
                fingerprint: CertificateFingerprint::of(node.cert.der()),
            }))
        );
    }

    #[tokio::test]
    async fn a_certificate_without_its_key_is_refused() {
        let files = Files::new();
        let (config, server_der) = server(&files);
        let victim = certificate("node-a");
        let thief = rcgen::KeyPair::generate().unwrap();
        let seen = handshake(
            config,
            client(server_der, Some((victim.cert.der().clone(), &thief))),
        )
        .await;
        let why = seen.unwrap_err();
        assert!(why.to_lowercase().contains("signature"), "{why}");
    }

    #[tokio::test]
    async fn handlers_see_the_certificate_an_https_client_presents() {
        install_default_provider();
        let files = Files::new();
        let made = certificate("localhost");
        let server_cert = files.write("server.pem", &made.cert.pem());
        let server_key = files.write("server.key", &made.signing_key.serialize_pem());
        let config = server_config(&server_cert, &server_key).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, config).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = axum::Router::new()
            .route(
                "/who",
                axum::routing::get(|c: Option<axum::Extension<ClientCertificate>>| async move {
                    c.map(|c| c.0.fingerprint.to_string()).unwrap_or_default()
                }),
            )
            .layer(axum::middleware::from_fn(tag_client_certificate));
        let served = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<TlsConnection>(),
            )
            .await
        });
        let node = certificate("node-a");
        let node_cert = files.write("node.pem", &node.cert.pem());
        let node_key = files.write("node.key", &node.signing_key.serialize_pem());
        let url = format!("https://localhost:{}/who", addr.port());
        let with = ClientTls::load(Some(&server_cert), Some((&node_cert, &node_key))).unwrap();
        let fingerprint = CertificateFingerprint::of(node.cert.der());
        assert_eq!(with.fingerprint(), Some(&fingerprint));
        // What the server saw of the client's certificate.
        let seen = |tls: ClientTls| {
            let url = url.clone();
            async move {
                tls.builder()
                    .resolve("localhost", addr)
                    .build()
                    .unwrap()
                    .get(&url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(seen(with).await, fingerprint.as_str());
        let without = ClientTls::load(Some(&server_cert), None).unwrap();
        assert_eq!(without.fingerprint(), None);
        assert_eq!(seen(without).await, "");
        // A client certificate file without a certificate stops the start.
        let empty = files.write("empty.pem", "");
        assert!(ClientTls::load(None, Some((&empty, &node_key))).is_err());
        served.abort();
    }
}
