//! The listener alone over a real 127.0.0.1 socket, with a handler that knows no HL7: framing
//! (garbage, truncated and split frames, oversize), replies in order per connection, a
//! handler that sends nothing or closes, concurrent connections, and graceful shutdown. The
//! HL7 pipeline behind it (ACKs, re-sends, the sink) is tested in `ingest`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mllp::{Client, Config, MessageHandler, Reply};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Echoes each payload back as `ECHO <payload>`; `quiet` gets no reply, `close` closes the
/// connection. Counts what it handled.
#[derive(Default)]
struct Echo {
    handled: AtomicUsize,
}

impl MessageHandler for Echo {
    async fn handle(&self, payload: Vec<u8>) -> Reply {
        self.handled.fetch_add(1, Ordering::Relaxed);
        match payload.as_slice() {
            b"quiet" => Reply::Nothing,
            b"close" => Reply::Close,
            _ => {
                let mut reply = b"ECHO ".to_vec();
                reply.extend_from_slice(&payload);
                Reply::Send(reply)
            }
        }
    }
}

struct Server {
    addr: SocketAddr,
    handler: Arc<Echo>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), mllp::MllpError>>,
}

async fn start(config: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(Echo::default());
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

    fn handled(&self) -> usize {
        self.handler.handled.load(Ordering::Relaxed)
    }
}

#[tokio::test]
async fn garbage_truncated_and_split_frames_and_oversize() {
    let server = start(Config {
        max_frame: 1024,
        ..Config::default()
    })
    .await;
    let mut client = Client::connect(server.addr).await.unwrap();
    // Garbage, then a truncated frame (a new VT arrives), then a good frame.
    let mut wire = b"\r\nnoise".to_vec();
    wire.extend_from_slice(b"\x0bMSH|^~\\&|cut off");
    wire.extend_from_slice(&hl7v2::mllp::frame(b"one"));
    client.send_raw(&wire).await.unwrap();
    assert_eq!(client.reply().await.unwrap().unwrap(), b"ECHO one");
    // A message split across writes still decodes.
    let framed = hl7v2::mllp::frame(b"two");
    let (a, b) = framed.split_at(framed.len() / 2);
    client.send_raw(a).await.unwrap();
    tokio::task::yield_now().await;
    client.send_raw(b).await.unwrap();
    assert_eq!(client.reply().await.unwrap().unwrap(), b"ECHO two");
    assert_eq!(server.handled(), 2);

    // An oversized frame closes the connection without a reply, unhandled.
    let big = vec![b'x'; 2048];
    assert_eq!(client.request(&big).await.unwrap_or(None), None);
    assert_eq!(server.handled(), 2);
    // The server still serves new connections.
    let mut fresh = Client::connect(server.addr).await.unwrap();
    assert_eq!(
        fresh.request(b"three").await.unwrap().unwrap(),
        b"ECHO three"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn replies_keep_the_order_of_messages_and_a_handler_may_stay_silent_or_close() {
    let server = start(Config::default()).await;
    let mut client = Client::connect(server.addr).await.unwrap();
    // Three frames in one write: the replies come in order; `quiet` gets none.
    let mut wire = hl7v2::mllp::frame(b"a");
    wire.extend_from_slice(&hl7v2::mllp::frame(b"quiet"));
    wire.extend_from_slice(&hl7v2::mllp::frame(b"b"));
    client.send_raw(&wire).await.unwrap();
    assert_eq!(client.reply().await.unwrap().unwrap(), b"ECHO a");
    assert_eq!(client.reply().await.unwrap().unwrap(), b"ECHO b");
    // `close`: the connection ends without a reply (the sender keeps the message).
    assert_eq!(client.request(b"close").await.unwrap_or(None), None);
    assert_eq!(server.handled(), 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_each_get_their_own_replies() {
    let server = start(Config {
        max_connections: 4,
        ..Config::default()
    })
    .await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for c in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr).await.unwrap();
            for m in 0..10 {
                let message = format!("c{c}-m{m}");
                let reply = client.request(message.as_bytes()).await.unwrap().unwrap();
                assert_eq!(reply, format!("ECHO {message}").into_bytes());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.handled(), 80);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_connections_and_stops_accepting() {
    let server = start(Config::default()).await;
    let addr = server.addr;
    let mut client = Client::connect(addr).await.unwrap();
    assert_eq!(client.request(b"x").await.unwrap().unwrap(), b"ECHO x");
    server.shutdown().await;
    // The open connection was closed, and nothing listens any more.
    assert_eq!(client.request(b"y").await.unwrap_or(None), None);
    assert!(Client::connect(addr).await.is_err());
}
