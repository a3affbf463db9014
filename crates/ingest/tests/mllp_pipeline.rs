//! End-to-end over a real 127.0.0.1 socket: the MLLP listener with the HL7 pipeline and the
//! in-memory sink. ACKs, re-sends, conflicts, bad framing, bad messages, concurrency and
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hl7v2::generate::{Generator, Style};
use ingest::hl7::memory::MemorySink;
use ingest::hl7::{Ingest, Settings};
use mllp::{Client, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    handler: Arc<Ingest<MemorySink>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), mllp::MllpError>>,
}

async fn start(config: Config) -> Server {
    start_mapping(
        config,
        hl7v2::fhir::MappingOptions::with_utc_offset("+09:00").unwrap(),
    )
    .await
}

async fn start_mapping(config: Config, mapping: hl7v2::fhir::MappingOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        mapping,
        ..Settings::default()
    };
    let handler = Arc::new(Ingest::new(MemorySink::default(), settings));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mllp::run(listener, handler.clone(), config, stopped));
    Server {
        addr,
        handler,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    fn bundles(&self) -> usize {
        self.handler.sink.committed.lock().unwrap().bundles.len()
    }
}

fn msa(ack: &[u8]) -> (String, String, String) {
    let m = hl7v2::parse(ack).unwrap();
    let msa = m.segment("MSA").unwrap();
    let err3 = m
        .segment("ERR")
        .map(|e| e.comp(3, 1).to_owned())
        .unwrap_or_default();
    (msa.get(1).to_owned(), msa.get(2).to_owned(), err3)
}

#[tokio::test]
async fn ack_after_commit_and_resend_returns_the_same_ack() {
    let server = start(Config::default()).await;
    let mut g = Generator::new(1, Style::Jahis);
    let p = g.person();
    let adt = g.adt(&p, "A01");
    let mut client = Client::connect(server.addr).await.unwrap();
    let ack = client.request(&adt.bytes).await.unwrap().unwrap();
    assert_eq!(
        msa(&ack),
        ("AA".into(), adt.control_id.clone(), String::new())
    );
    // A JAHIS message is answered in its own charset.
    assert!(ack.windows(8).any(|w| w == b"ISO IR87"));
    assert_eq!(server.bundles(), 1);

    let again = client.request(&adt.bytes).await.unwrap().unwrap();
    assert_eq!(again, ack, "byte-identical ACK for a re-send");
    assert_eq!(server.bundles(), 1, "nothing committed twice");

    // Same control id, different content: AE 205, nothing committed.
    let other = String::from_utf8(adt.bytes.clone())
        .unwrap()
        .replace("|A01|", "|A01|X");
    let conflict = client.request(other.as_bytes()).await.unwrap().unwrap();
    assert_eq!(msa(&conflict).0, "AE");
    assert_eq!(msa(&conflict).2, "205");
    assert_eq!(server.bundles(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn warnings_are_committed_with_an_aa_that_names_them() {
    // No time zone configured: an OBX-14 without offset keeps its date only, and the AA
    // says so for OBX-14 (and for MSH-7, read as UTC).
    let server = start_mapping(Config::default(), Default::default()).await;
    let mut client = Client::connect(server.addr).await.unwrap();
    let message = b"MSH|^~\\&|LAB|GENHOSP|RENKEI|HIE|20240115113000||ORU^R01|W1|P|2.5.1\r\
PID|1||9^^^GENHOSP^MR\rOBR|1||F1|X^Y^LN\rOBX|1|NM|718-7^Hb^LN||13.5|||||||||20240115110000\r";
    let ack = client.request(message).await.unwrap().unwrap();
    let parsed = hl7v2::parse(&ack).unwrap();
    assert_eq!(parsed.segment("MSA").unwrap().get(1), "AA");
    let errs: Vec<(String, String)> = parsed
        .segments
        .iter()
        .filter(|s| s.id == "ERR")
        .map(|s| {
            (
                s.comp(2, 1).to_owned() + "-" + s.comp(2, 3),
                s.get(4).to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errs,
        [
            ("OBX-14".to_owned(), "W".to_owned()),
            ("MSH-7".to_owned(), "W".to_owned())
        ]
    );
    assert_eq!(server.bundles(), 1, "accepted: committed");
    // The stored ACK, warnings and all, answers a re-send.
    assert_eq!(client.request(message).await.unwrap().unwrap(), ack);
    assert_eq!(server.bundles(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_messages_get_ae_or_ar_and_commit_nothing() {
    let server = start(Config::default()).await;
    let mut client = Client::connect(server.addr).await.unwrap();
    let cases: &[(&[u8], &str, &str)] = &[
        (b"PID|1||x", "AR", "100"),
        (b"MSH|^~|A|B|C|D|2026||ADT^A01|C1|P|2.5\r", "AR", "102"),
        (b"MSH|^~\\&|A|B|C|D|2026||QRY^Q01|C2|P|2.5\r", "AR", "200"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C3|P|2.1\r", "AR", "203"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C4|P|2.5\rEVN|A01\rPID|1||\r", "AE", "101"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C5|P|2.5\rEVN|A01\rPID|1||1^^^^PI\rXXX|1\r", "AE", "100"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|C6|P|2.5||||||~ISO IR87\rEVN|A01\rPID|1||1^^^^PI||\x1b$B\x7f\x7f\x1b(B\r", "AE", "102"),
        (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01||P|2.5\rEVN|A01\rPID|1||1^^^^PI\r", "AE", "101"),
    ];
    for (bytes, code, err) in cases {
        let ack = client.request(bytes).await.unwrap().expect("an ACK");
        let (got, _, got_err) = msa(&ack);
        assert_eq!(
            (got.as_str(), got_err.as_str()),
            (*code, *err),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(server.bundles(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn framing_garbage_truncation_and_oversize() {
    let server = start(Config {
        max_frame: 64 * 1024,
        ..Config::default()
    })
    .await;
    let mut g = Generator::new(2, Style::Us);
    let p = g.person();
    let m1 = g.adt(&p, "A04");
    let m2 = g.lab_result(&p);
    let mut client = Client::connect(server.addr).await.unwrap();
    // Garbage, then a truncated frame (a new VT arrives), then a good frame.
    let mut wire = b"\r\nnoise".to_vec();
    wire.extend_from_slice(b"\x0bMSH|^~\\&|cut off");
    wire.extend_from_slice(&hl7v2::mllp::frame(&m1.bytes));
    client.send_raw(&wire).await.unwrap();
    let ack = client.reply().await.unwrap().unwrap();
    assert_eq!(msa(&ack).0, "AA");
    // Messages split across writes still decode.
    let framed = hl7v2::mllp::frame(&m2.bytes);
    let (a, b) = framed.split_at(framed.len() / 2);
    client.send_raw(a).await.unwrap();
    tokio::task::yield_now().await;
    client.send_raw(b).await.unwrap();
    assert_eq!(msa(&client.reply().await.unwrap().unwrap()).0, "AA");
    assert_eq!(server.bundles(), 2);

    // An oversized frame closes the connection, with no ACK.
    let mut big = b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|BIG|P|2.5\rNTE|1||".to_vec();
    big.extend(std::iter::repeat_n(b'x', 70 * 1024));
    assert_eq!(client.request(&big).await.unwrap_or(None), None);
    // The server still serves new connections.
    let mut fresh = Client::connect(server.addr).await.unwrap();
    let m3 = g.immunization(&p);
    assert_eq!(
        msa(&fresh.request(&m3.bytes).await.unwrap().unwrap()).0,
        "AA"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn storage_failure_closes_without_ack_so_the_sender_retries() {
    let server = start(Config::default()).await;
    let mut g = Generator::new(3, Style::Us);
    let p = g.person();
    let m = g.adt(&p, "A08");
    server.handler.sink.fail.store(true, Ordering::Relaxed);
    let mut client = Client::connect(server.addr).await.unwrap();
    assert_eq!(client.request(&m.bytes).await.unwrap_or(None), None);
    server.handler.sink.fail.store(false, Ordering::Relaxed);
    let mut client = Client::connect(server.addr).await.unwrap();
    assert_eq!(
        msa(&client.request(&m.bytes).await.unwrap().unwrap()).0,
        "AA"
    );
    assert_eq!(server.bundles(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn enhanced_mode_sends_commit_ack_and_defers_the_application_ack() {
    let server = start(Config::default()).await;
    let mut g = Generator::new(4, Style::Us);
    let p = g.person();
    let text = String::from_utf8(g.adt(&p, "A01").bytes).unwrap().replacen(
        "|P|2.5.1",
        "|P|2.5.1|||AL|AL",
        1,
    );
    let mut client = Client::connect(server.addr).await.unwrap();
    let ack = client.request(text.as_bytes()).await.unwrap().unwrap();
    assert_eq!(msa(&ack).0, "CA");
    let deferred = server
        .handler
        .sink
        .committed
        .lock()
        .unwrap()
        .deferred_acks
        .clone();
    assert_eq!(deferred.len(), 1);
    assert_eq!(msa(&deferred[0]).0, "AA");
    // NE: nothing is sent back; the next message on the connection is still answered.
    let silent = String::from_utf8(g.adt(&p, "A08").bytes).unwrap().replacen(
        "|P|2.5.1",
        "|P|2.5.1|||NE|NE",
        1,
    );
    client
        .send_raw(&hl7v2::mllp::frame(silent.as_bytes()))
        .await
        .unwrap();
    // Re-sending the NE message is still silent (its stored ACK is empty).
    client
        .send_raw(&hl7v2::mllp::frame(silent.as_bytes()))
        .await
        .unwrap();
    let next = g.adt(&p, "A04");
    assert_eq!(
        msa(&client.request(&next.bytes).await.unwrap().unwrap()).1,
        next.control_id
    );
    assert_eq!(server.bundles(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_connections_and_same_message_races() {
    let server = start(Config {
        max_connections: 4,
        ..Config::default()
    })
    .await;
    let mut tasks = Vec::new();
    for c in 0..8u64 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut g = Generator::new(100 + c, Style::Us);
            let mut client = Client::connect(addr).await.unwrap();
            for _ in 0..10 {
                let p = g.person();
                let m = if c % 2 == 0 {
                    g.adt(&p, "A01")
                } else {
                    g.lab_result(&p)
                };
                let ack = client.request(&m.bytes).await.unwrap().unwrap();
                assert_eq!(msa(&ack).0, "AA");
            }
        }));
    }
    // The same message from several connections at once is committed once.
    let mut g = Generator::new(7, Style::Us);
    let p = g.person();
    let shared = g.adt(&p, "A01").bytes;
    for _ in 0..4 {
        let addr = server.addr;
        let bytes = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.unwrap();
            assert_eq!(msa(&client.request(&bytes).await.unwrap().unwrap()).0, "AA");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.bundles(), 81);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_connections_and_stops_accepting() {
    let server = start(Config::default()).await;
    let addr = server.addr;
    let mut client = Client::connect(addr).await.unwrap();
    let mut g = Generator::new(5, Style::Us);
    let p = g.person();
    assert_eq!(
        msa(&client
            .request(&g.adt(&p, "A01").bytes)
            .await
            .unwrap()
            .unwrap())
        .0,
        "AA"
    );
    server.shutdown().await;
    // The open connection was closed, and nothing listens any more.
    assert_eq!(
        client
            .request(&g.adt(&p, "A08").bytes)
            .await
            .unwrap_or(None),
        None
    );
    assert!(Client::connect(addr).await.is_err());
}
