//! Renkei's HTTP server: the FHIR R4 RESTful API over a [`store::Store`], plus health endpoints.
//!
//! # What it owns
//! HTTP: routing, content negotiation (`application/fhir+json` only; XML answers 406/415),
//! `_format`/`_pretty`/`Prefer`, ETag/Last-Modified/Location headers, bundles, and the single
//! table from what went wrong (store, validation, EMPI and JSON Patch errors, refused requests)
//! to HTTP error status + OperationOutcome issue code (`error`).
//!
//! # What it must not do
//! Touch SQL (everything goes through the `Store` trait), or validate FHIR structure itself
//! (that is the [`Validator`] seam, in `ingest`, implemented over the `fhir` crate). Hold
//! service logic: the checks and preparation of writes and bundle entries are `ingest`'s, the
//! patient index is `mpi`'s; this crate calls them and turns their typed errors into HTTP. It
//! depends on neither `hl7v2`, `mllp` nor `ssmix2`.
//!
//! # Layout
//! - [`app`] builds the router; [`run`] serves it until the shutdown future resolves, letting
//!   in-flight requests finish.
//! - `interactions/`: one module per FHIR interaction, each linking its spec section.
//! - `http`: per-request metadata and the protocol-neutral `Reply`; `error`: the error table.
//! - [`request_log`]: the request id, one access-log line per request, and the body limit's 413.
//! - [`tls`]: HTTPS (the operator's certificate, rustls on ring) and its listener; the client
//!   certificate a connection presented, and what outbound HTTPS presents and trusts.
//! - [`exchange`]: the hub's endpoints and a node's link to its hub (`exchange` crate's rules).
//! - [`security`]: with clients or users registered, the authorization server (`/auth/*`,
//!   SMART discovery) and the gate that checks every other request's bearer token.

mod conditional_read;
pub mod error;
pub mod exchange;
mod health;
pub mod http;
pub mod interactions;
pub mod request_log;
pub mod security;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use store::Store;

pub use error::{ApiError, IssueCode};
pub use ingest::validation::{R4Validator, Severity, ValidationIssue, Validator};
use mpi::Mpi;

use interactions::{
    batch, capabilities, create, delete, empi_ops, history, operation, patch, read, search, update,
    vread,
};

/// The default request-body limit: 16 MiB holds a document with its attachments, or a
/// transaction bundle of a few thousand resources, yet keeps one request from occupying the
/// writer for long (larger loads go through `renkei import`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The FHIR base URL clients use (`https://fhir.example.org/fhir`); derived from the `Host`
    /// header when `None`.
    pub base_url: Option<String>,
    /// Largest accepted request body; past it a request gets 413 with an OperationOutcome.
    pub max_body_bytes: usize,
    /// Referential integrity of REST writes (create, update, patch, their conditional forms,
    /// batch and transaction entries): a local literal reference (`Patient/1`, or an absolute
    /// URL under the base) to a resource that is not on this server is refused with 400 and
    /// an OperationOutcome naming the element, as HAPI FHIR and Blaze do. On by default;
    /// `renkei serve --no-reference-check` turns it off. HL7 v2 ingestion and `renkei import`
    /// never refuse on it (feeds arrive out of order): they count such references.
    pub check_references: bool,
    /// Served over TLS: a base URL derived from the `Host` header is `https://`.
    pub https: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            https: false,
            base_url: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            check_references: true,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store requests read and write (with EMPI linking, the `mpi` crate's `EmpiStore`).
    pub store: Arc<dyn Store>,
    pub validator: Arc<dyn Validator>,
    pub config: Arc<ServerConfig>,
    /// The patient index: `$match`, golden records, manual decisions, PIXm. It writes its own
    /// decisions through the store it holds.
    pub mpi: Arc<Mpi>,
    /// The authorization server and the token check; `None` serves openly (every request
    /// is the node's own).
    pub security: Option<Arc<security::Security>>,
    /// Where every request's audit record goes; `None` records nothing.
    pub auditor: Option<Arc<security::audit::Auditor>>,
    /// The server's part in a network (hub or node); `None` for a standalone server.
    pub exchange: Option<Arc<exchange::Exchange>>,
}

impl AppState {
    /// A server without EMPI linking (`$match` still works over the stored Patients).
    pub fn new(store: Arc<dyn Store>, validator: Arc<dyn Validator>, config: ServerConfig) -> Self {
        let mpi = Mpi::new(
            store.clone(),
            empi::Model::default(),
            empi::golden::Survivorship::default(),
            false,
        );
        AppState {
            store,
            validator,
            config: Arc::new(config),
            mpi: Arc::new(mpi),
            security: None,
            auditor: None,
            exchange: None,
        }
    }

    /// A server over `mpi`'s store, whose every Patient write is linked by `mpi` (when its
    /// linking is on).
    pub fn with_empi(mpi: Arc<Mpi>, validator: Arc<dyn Validator>, config: ServerConfig) -> Self {
        AppState {
            store: mpi.linked_store(),
            validator,
            config: Arc::new(config),
            mpi,
            security: None,
            auditor: None,
            exchange: None,
        }
    }

    /// The same state, requiring the tokens `security` issues on every non-public request.
    pub fn with_security(mut self, security: Arc<security::Security>) -> Self {
        self.security = Some(security);
        self
    }

    /// The same state, playing `exchange`'s part in a network.
    pub fn with_exchange(mut self, exchange: Arc<exchange::Exchange>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// The same state, recording every request in the audit log through `auditor`.
    pub fn with_audit(mut self, auditor: Arc<security::audit::Auditor>) -> Self {
        self.auditor = Some(auditor);
        self
    }
}

/// The router: FHIR under `/fhir`, `/healthz`, `/readyz`, and the authorization server under
/// `/auth` with its discovery document.
pub fn app(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/fhir", post(batch::handler).get(search::system))
        .route("/fhir/", post(batch::handler).get(search::system))
        .route("/fhir/metadata", get(capabilities::handler))
        .route(
            "/.well-known/smart-configuration",
            get(security::oauth::smart_configuration),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            get(security::oauth::smart_configuration),
        )
        .route(
            "/auth/authorize",
            get(security::login::authorize_page).post(security::login::authorize_submit),
        )
        .route("/auth/token", post(security::oauth::token))
        .route("/auth/jwks", get(security::oauth::jwks))
        .route("/auth/introspect", post(security::oauth::introspect))
        .route("/auth/revoke", post(security::oauth::revoke))
        .route("/fhir/_history", get(history::system))
        .route(
            "/fhir/{type}",
            get(search::type_search)
                .post(create::handler)
                .put(update::conditional_handler)
                .delete(delete::conditional_handler),
        )
        .route("/fhir/Patient/$ihe-pix", get(empi_ops::pix_get))
        .route("/fhir/Patient/$locate", get(exchange::hub::locate))
        .route("/fhir/Patient/$summary", get(exchange::summary::own))
        .route(
            "/fhir/Patient/{id}/$summary",
            get(exchange::summary::instance),
        )
        .route("/exchange/register", post(exchange::hub::register))
        .route("/exchange/publish", post(exchange::hub::publish))
        .route("/exchange/inbox", post(exchange::directed::inbox))
        .route(
            "/exchange/nodes/{id}/jwks",
            get(exchange::directed::node_keys),
        )
        .route("/exchange/nodes/{id}", get(exchange::hub::published_node))
        .route("/fhir/$send", post(exchange::directed::send))
        .route(
            "/fhir/ImagingStudy/$image-access",
            post(exchange::images::image_access),
        )
        .route("/fhir/{type}/_search", post(search::post_search))
        .route("/fhir/{type}/_history", get(history::type_level))
        .route(
            "/fhir/{type}/{id}",
            get(read::handler)
                .put(update::handler)
                .delete(delete::handler)
                .patch(patch::handler)
                .post(operation::handler),
        )
        .route("/fhir/{type}/{id}/_history", get(history::instance))
        .route("/fhir/{type}/{id}/{compartment}", get(search::compartment))
        .route("/fhir/{type}/{id}/_history/{vid}", get(vread::handler))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // The router adds the route's `Allow` header.
        .method_not_allowed_fallback(|| async {
            ApiError::method_not_allowed(&[], "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::gate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::audit::audit_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            request_log::BodyLimit(limit),
            request_log::log_and_tag,
        ))
        .layer(axum::middleware::from_fn(tls::tag_client_certificate))
        .with_state(state)
}

/// Serves [`app`] on `listener` (a `TcpListener`; HTTPS goes through [`run_tls`]) until
/// `shutdown` resolves; requests in flight then finish before this returns.
pub async fn run<L>(
    state: AppState,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// [`run`] over HTTPS: each request knows the client certificate its connection presented
/// ([`tls::ClientCertificate`]).
pub async fn run_tls(
    state: AppState,
    listener: tls::TlsListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<tls::TlsConnection>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
