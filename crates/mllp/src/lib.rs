//! The MLLP listener: HL7 v2 messages over TCP, framed `<VT>...<FS><CR>`, one reply per
//! message, in order, per connection.
//!
//! # What this crate owns
//! - [`run`]: a tokio accept loop in the shape of mini-redis's server: a semaphore caps the
//!   connections, a broadcast channel tells every connection to finish its current message
//!   and stop, and `run` returns once they all have.
//! - [`MessageHandler`]: what to do with one framed message; the listener knows nothing of
//!   HL7 beyond framing. The handler every deployment uses (parse, de-duplicate, map to FHIR,
//!   commit, acknowledge) is `ingest::hl7::Ingest`, which the binary hands to [`run`].
//! - [`Client`]: a small client for tests, benchmarks and tools.
//! - MLLP over TLS ([`Config::tls`]): each connection's handshake runs in its own task, bounded
//!   by [`HANDSHAKE_TIMEOUT`], before its first frame is read.
//!
//! # What it must not do
//! No SQL, no HTTP, no FHIR, no store, no ingestion: it depends on neither `store` nor
//! `ingest`. Framing is `hl7v2::mllp` (pure); this crate only moves bytes.
//!
//! # Why a crate and not a feature of `hl7v2`
//! `hl7v2` stays free of any runtime or socket unconditionally, so its invariant needs no
//! "unless feature X" footnote, and Cargo feature unification cannot quietly pull tokio into
//! every crate that only wants the codec. The binary calls [`run`] beside the HTTP listener,
//! with the same shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hl7v2::mllp::{self, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::timeout;

/// What to send back for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Frame and send these bytes (an encoded ACK).
    Send(Vec<u8>),
    /// Send nothing (enhanced mode with MSH-15 `NE` or `ER` on success).
    Nothing,
    /// Close the connection without replying: the message was not taken (storage is
    /// unavailable), so the sender must resend it later.
    Close,
}

/// Handles one framed message.
pub trait MessageHandler: Send + Sync + 'static {
    /// Handle the bytes of one message (the MLLP payload).
    fn handle(&self, payload: Vec<u8>) -> impl Future<Output = Reply> + Send;
}

/// Listener settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections served at once; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Largest accepted message; a larger frame closes the connection.
    pub max_frame: usize,
    /// With a server configuration: every connection is TLS (the certificate and key the
    /// operator gave), and a client that does not complete the handshake is closed.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A connection idle for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 256,
            max_frame: 4 * 1024 * 1024,
            tls: None,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// How long a TLS client has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the listener.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    #[error("accepting a connection failed: {0}")]
    Accept(#[source] std::io::Error),
}

/// Serve MLLP on `listener` until `shutdown` completes, then wait for open connections to
/// finish the message they are handling.
pub async fn run<H: MessageHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: Config,
    shutdown: impl Future,
) -> Result<(), MllpError> {
    let (notify, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let result = tokio::select! {
        r = accept_loop(&listener, &handler, &config, &limit, &notify, &done_tx) => r,
        _ = shutdown => Ok(()),
    };
    drop(notify);
    drop(done_tx);
    // Every connection holds a sender clone; recv returns None once all are gone.
    let _ = done_rx.recv().await;
    result
}

async fn accept_loop<H: MessageHandler>(
    listener: &TcpListener,
    handler: &Arc<H>,
    config: &Config,
    limit: &Arc<Semaphore>,
    notify: &broadcast::Sender<()>,
    done: &mpsc::Sender<()>,
) -> Result<(), MllpError> {
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (socket, peer) = accept(listener).await?;
        let _ = socket.set_nodelay(true);
        let handler = handler.clone();
        let config = config.clone();
        let mut shutdown = notify.subscribe();
        let done = done.clone();
        tokio::spawn(async move {
            tracing::debug!(%peer, "MLLP connection");
            let outcome = match &config.tls {
                None => connection(socket, &*handler, &config, &mut shutdown).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone());
                    match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            connection(stream, &*handler, &config, &mut shutdown).await
                        }
                        Ok(Err(e)) => Err(ConnectionError::Handshake(e.to_string())),
                        Err(_) => Err(ConnectionError::Handshake(format!(
                            "not completed within {HANDSHAKE_TIMEOUT:?}"
                        ))),
                    }
                }
            };
            if let Err(error) = outcome {
                tracing::info!(%peer, %error, "MLLP connection closed");
            }
            drop(permit);
            drop(done);
        });
    }
}

/// Accept with back-off on transient errors (too many open files), as mini-redis does.
async fn accept(listener: &TcpListener) -> Result<(TcpStream, std::net::SocketAddr), MllpError> {
    let mut backoff = 1;
    loop {
        match listener.accept().await {
            Ok(pair) => return Ok(pair),
            Err(e) if backoff > 64 => return Err(MllpError::Accept(e)),
            Err(e) => tracing::warn!(error = %e, "accept failed; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(backoff * 10)).await;
        backoff *= 2;
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("the handler closed the connection (message not taken)")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

/// Serve one connection. Shutdown is only observed while waiting for bytes, so a message
/// being handled is always finished (committed and acknowledged) first.
async fn connection<H: MessageHandler, S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    handler: &H,
    config: &Config,
    shutdown: &mut broadcast::Receiver<()>,
) -> Result<(), ConnectionError> {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Decode every complete frame in the buffer.
        loop {
            match mllp::parse_frame(&buf, config.max_frame) {
                Ok(Some(frame)) => {
                    if frame.skipped > 0 {
                        tracing::debug!(
                            bytes = frame.skipped,
                            "skipped bytes before a start block"
                        );
                    }
                    let payload = frame.payload.to_vec();
                    let consumed = frame.consumed;
                    buf.drain(..consumed);
                    match handler.handle(payload).await {
                        Reply::Send(bytes) => socket.write_all(&mllp::frame(&bytes)).await?,
                        Reply::Nothing => {}
                        Reply::Close => return Err(ConnectionError::Closed),
                    }
                }
                Ok(None) => break,
                Err(error @ FrameError::Oversized { .. }) => return Err(error.into()),
                Err(error) => {
                    tracing::info!(%error, "dropping a malformed frame");
                    buf.drain(..error.consumed());
                }
            }
        }
        // Never hold garbage that cannot start a frame.
        let garbage = mllp::garbage_len(&buf);
        if garbage > 0 {
            buf.drain(..garbage);
        }
        let n = tokio::select! {
            read = timeout(config.idle_timeout, socket.read(&mut chunk)) => match read {
                Ok(read) => read?,
                Err(_) => return Err(ConnectionError::Idle(config.idle_timeout)),
            },
            _ = shutdown.recv() => return Ok(()),
        };
        if n == 0 {
            return match mllp::finish(&buf) {
                Some(error) => Err(error.into()),
                None => Ok(()),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A tiny client for tests, benchmarks and tools: send one message, wait for the reply.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Send raw bytes as they are (no framing), for tests of bad input.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Frame and send a message, and read one framed reply (`None` if the server closed the
    /// connection).
    pub async fn request(&mut self, message: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.stream.write_all(&mllp::frame(message)).await?;
        self.reply().await
    }

    /// Read one framed reply.
    pub async fn reply(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Ok(Some(frame)) = mllp::parse_frame(&self.buf, usize::MAX / 2) {
                let payload = frame.payload.to_vec();
                let consumed = frame.consumed;
                self.buf.drain(..consumed);
                return Ok(Some(payload));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
