//! TLS end to end: `renkei serve --tls-cert --tls-key --mllp ADDR --mllp-tls` with a
//! self-signed certificate. A client that trusts the certificate reads over HTTPS and gets an
//! ACK over MLLP; plain HTTP on the TLS port gets no HTTP answer; a client that trusts another
//! certificate cannot complete the handshake.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

/// A client trusting `root` only.
fn connector(root: CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    #[expect(deprecated, reason = "ring is the provider this project builds with")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One HTTP/1.1 request over TLS; the response's status code and text.
async fn https_get(
    tls: &TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tls.connect(name, tcp).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                addr.port()
            )
            .as_bytes(),
        )
        .await?;
    let mut text = Vec::new();
    // A peer closing without close_notify is fine here: the answer is read by then.
    let _ = stream.read_to_end(&mut text).await;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

struct Served {
    child: Child,
    https: SocketAddr,
    mllps: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn address(line: &str, scheme: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(scheme))
        .map(|rest| rest.trim_end_matches("/fhir").parse().unwrap())
        .unwrap_or_else(|| panic!("no {scheme} address in {line:?}"))
}

#[tokio::test]
async fn https_and_mllp_over_tls() {
    let data = support::Data::new(support::Backend::Sqlite).await;
    let (cert_pem, key_pem, der) = certificate();
    let cert = data.dir.join("cert.pem");
    let key = data.dir.join("key.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let mut child = support::renkei()
        .arg("serve")
        .args(data.args())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--mllp",
            "127.0.0.1:0",
            "--mllp-tls",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let served = Served {
        child,
        https: address(&line, "https://"),
        mllps: address(&line, "mllps://"),
    };
    let tls = connector(der);

    // HTTPS: ready, then the CapabilityStatement, whose base says https.
    let mut ready = false;
    for _ in 0..500 {
        if let Ok((200, _)) = https_get(&tls, served.https, "/readyz").await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "never ready over HTTPS");
    let (status, text) = https_get(&tls, served.https, "/fhir/metadata")
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("CapabilityStatement"), "{text}");
    assert!(
        text.contains(&format!("https://localhost:{}/fhir", served.https.port())),
        "{text}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(served.https).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut got)).await;
    assert!(
        !got.starts_with(b"HTTP/1.1"),
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A client trusting another certificate cannot connect.
    let (_, _, other) = certificate();
    assert!(
        https_get(&connector(other), served.https, "/healthz")
            .await
            .is_err()
    );

    // MLLP over TLS: a message in, its ACK back.
    let tcp = TcpStream::connect(served.mllps).await.unwrap();
    let mut stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let message =
        b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20260101||ADT^A01|T1|P|2.5\rEVN|A01\rPID|1||42^^^GENHOSP^MR||Sato^Hana\r";
    let mut frame = vec![0x0b];
    frame.extend_from_slice(message);
    frame.extend_from_slice(&[0x1c, 0x0d]);
    stream.write_all(&frame).await.unwrap();
    let mut ack = Vec::new();
    let mut chunk = [0u8; 4096];
    while !ack.ends_with(&[0x1c, 0x0d]) {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .expect("an ACK in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before the ACK: {}",
            String::from_utf8_lossy(&ack)
        );
        ack.extend_from_slice(&chunk[..n]);
    }
    let ack = String::from_utf8_lossy(&ack);
    assert!(ack.contains("MSA|AA|T1"), "{ack}");
    drop(served);
}
