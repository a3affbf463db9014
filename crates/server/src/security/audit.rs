//! The audit trail of the HTTP API: one IHE BALP `AuditEvent` (`auth::audit`) per request,
//! appended to the store's hash-chained `audit_log` before the response leaves.
//!
//! - [`Auditor`] group-commits: each request queues its record and waits; one task appends
//!   whatever is queued in a single transaction (`AuditLog::append_audit`) and wakes every
//!   waiter, so concurrent requests share one commit and one head signature.
//! - [`audit_requests`] is the middleware: it runs the request, then records who asked (the
//!   gate's [`AuditSubject`]), what was done (the interaction, from method and path), to whom
//!   (patients from the path, the query, the token, and the resource answered) and with what
//!   outcome. Refusals (401, 403) are recorded like the rest. When the record cannot be
//!   written, the answer is withheld and the client gets a 500: nothing is served unaudited.
//!
//! A write's record is made by the request's [`RequestAudit`], which the request context hands
//! to the store: the store appends it inside the write's own transaction, so a committed write
//! always has its record. The middleware records everything else (reads, searches, refusals,
//! failed writes, the authorization endpoints).

use std::sync::Arc;

use auth::audit::{AuditRecord, Event, Outcome, Requester};
use auth::chain::HeadSigner;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use store::{AuditEntry, AuditLog, StoredResource, WriteAuditor};
use tokio::sync::{mpsc, oneshot};

use super::Caller;
use crate::AppState;
use crate::error::ApiError;

/// Records queued beyond this wait for room (back-pressure on requests, never a drop).
const QUEUE: usize = 8192;
/// Records appended in one transaction at most.
const BATCH: usize = 1024;

/// Who a request was made by, as the gate (or the token endpoint) found out; put on the
/// response for [`audit_requests`].
#[derive(Debug, Clone, Default)]
pub struct AuditSubject {
    pub caller: Option<Caller>,
    /// A client that authenticated at the token endpoint but holds no token yet.
    pub client_id: Option<String>,
    /// The token endpoint's event (`issue`, `refuse`, `introspect`, `revoke`).
    pub token_event: Option<&'static str>,
    pub break_glass: bool,
    /// The user who signed in (or tried to), at the sign-in page.
    pub login_user: Option<String>,
    /// The sign-in failed (wrong name or password).
    pub login_failed: bool,
}

/// What a single-resource answer names, put on the response by `Reply::into_http`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFacts {
    /// `Type/id/_history/v`.
    pub entity: Option<String>,
    /// `Patient/x` the resource is about.
    pub patients: Vec<String>,
    /// More resources (`Type/id/_history/v`) of a write of several.
    pub extra: Vec<String>,
}

#[derive(Deserialize)]
struct Reference {
    reference: Option<String>,
}

/// The top-level elements naming the patient a resource is about.
#[derive(Deserialize)]
struct Subjects {
    subject: Option<Reference>,
    patient: Option<Reference>,
    beneficiary: Option<Reference>,
}

impl AuditFacts {
    /// The facts of a stored resource answered.
    pub fn of_resource(r: &StoredResource) -> AuditFacts {
        let mut patients = Vec::new();
        if r.resource_type == "Patient" {
            patients.push(format!("Patient/{}", r.id));
        } else if let Some(body) = &r.body
            && let Ok(s) = serde_json::from_str::<Subjects>(body)
        {
            patients.extend(
                [s.subject, s.patient, s.beneficiary]
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.reference)
                    .filter(|r| r.starts_with("Patient/")),
            );
        }
        AuditFacts {
            entity: Some(format!(
                "{}/{}/_history/{}",
                r.resource_type, r.id, r.version
            )),
            patients,
            extra: Vec::new(),
        }
    }
}

struct Pending {
    entry: AuditEntry,
    done: oneshot::Sender<Result<(), String>>,
}

/// The group-committing writer of audit records.
#[derive(Debug)]
pub struct Auditor {
    queue: mpsc::Sender<Pending>,
    /// The head's signing key (also handed to the store for the records of writes).
    signer: Arc<HeadSigner>,
    /// The log the records go to (read back as `AuditEvent`s).
    log: Arc<dyn AuditLog>,
    /// The node's name in the records (`source.site`).
    node: String,
}

/// The record could not be made durable.
#[derive(Debug, thiserror::Error)]
#[error("the audit record could not be written: {0}")]
pub struct AuditFailed(String);

impl Auditor {
    /// Starts the committing task over `log`, signing heads with `signer`.
    pub fn start(log: Arc<dyn AuditLog>, signer: Arc<HeadSigner>, node: String) -> Auditor {
        let (queue, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let writer = log.clone();
        let head_signer = signer.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let (entries, waiters): (Vec<AuditEntry>, Vec<_>) =
                    batch.into_iter().map(|p| (p.entry, p.done)).unzip();
                let result = writer
                    .append_audit(entries, head_signer.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::error!(error = %e, "appending to the audit log failed");
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        Auditor {
            queue,
            signer,
            log,
            node,
        }
    }

    /// Appends `record` (group-committed with whatever else is waiting); returns once it is
    /// durable.
    pub async fn record(
        &self,
        record: &AuditRecord,
        agent: Option<String>,
    ) -> Result<(), AuditFailed> {
        let entry = entry_of(record, agent)?;
        let (done, wait) = oneshot::channel();
        self.queue
            .send(Pending { entry, done })
            .await
            .map_err(|_| AuditFailed("the audit writer has stopped".into()))?;
        wait.await
            .map_err(|_| AuditFailed("the audit writer has stopped".into()))?
            .map_err(AuditFailed)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The audit log.
    pub fn log(&self) -> &Arc<dyn AuditLog> {
        &self.log
    }
}

/// What the audit record of a request says about the request itself.
#[derive(Debug, Clone)]
struct RequestFacts {
    method: Method,
    path: String,
    query: Option<String>,
    request_id: String,
}

/// Who asked, as far as the record goes.
#[derive(Debug, Clone, Default)]
struct Asker {
    caller: Option<Caller>,
    client_id: Option<String>,
    login_user: Option<String>,
    break_glass: bool,
}

/// The record of `req` by `asker`, about `facts`, with `outcome`; and its agent for search.
fn compose(
    node: &str,
    req: &RequestFacts,
    event: Event,
    asker: &Asker,
    facts: AuditFacts,
    outcome: (Outcome, Option<String>),
) -> (AuditRecord, Option<String>) {
    let claims = asker.caller.as_ref().map(|c| c.claims.clone());
    let mut patients = facts.patients;
    patients.extend(patients_named(&req.path, req.query.as_deref()));
    if let Some(p) = claims.as_ref().and_then(|c| c.patient.as_ref()) {
        patients.push(format!("Patient/{p}"));
    }
    patients.sort();
    patients.dedup();
    let mut resources: Vec<String> = facts.entity.into_iter().collect();
    resources.extend(facts.extra);
    if resources.is_empty()
        && let Some(r) = instance_of(&req.path)
    {
        resources.push(r);
    }
    resources.sort();
    resources.dedup();
    let requester = match &claims {
        Some(c) => Requester {
            client_id: Some(c.client_id.clone()),
            user: c
                .fhir_user
                .clone()
                .or_else(|| (c.sub != c.client_id).then(|| c.sub.clone())),
            organization: c.organization.clone(),
            address: None,
        },
        None => Requester {
            client_id: asker.client_id.clone(),
            user: asker.login_user.clone(),
            ..Requester::default()
        },
    };
    let agent = requester.user.clone().or(requester.client_id.clone());
    let record = AuditRecord {
        event,
        recorded: chrono::Utc::now(),
        outcome: outcome.0,
        outcome_text: outcome.1,
        requester,
        node: node.to_owned(),
        purpose: claims.as_ref().and_then(|c| c.purpose_of_use.clone()),
        break_glass: asker.break_glass || claims.as_ref().is_some_and(|c| c.break_glass.is_some()),
        patients,
        resources,
        query: req
            .query
            .clone()
            .filter(|_| req.method == Method::GET || req.method == Method::POST),
        request_id: req.request_id.clone(),
    };
    (record, agent)
}

/// The stored form of a record.
fn entry_of(record: &AuditRecord, agent: Option<String>) -> Result<AuditEntry, AuditFailed> {
    Ok(AuditEntry {
        recorded_ms: record.recorded.timestamp_millis(),
        request_id: record.request_id.clone(),
        agent,
        patients: record.patients.clone(),
        entities: record
            .resources
            .iter()
            .map(|r| r.split("/_history/").next().unwrap_or(r).to_owned())
            .collect(),
        record: serde_json::to_vec(&record.to_resource())
            .map_err(|e| AuditFailed(e.to_string()))?,
    })
}

/// A request's auditor of its writes, handed to the store through the request context
/// (`store::WriteAudit`): the store appends the record it makes inside the write's own
/// transaction, and the middleware then has nothing left to record for it.
pub struct RequestAudit {
    node: String,
    request: RequestFacts,
    signer: Arc<HeadSigner>,
    /// The gate's caller, set when the request's context is built.
    asker: std::sync::Mutex<Asker>,
    appended: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RequestAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestAudit")
            .field("request_id", &self.request.request_id)
            .finish_non_exhaustive()
    }
}

impl RequestAudit {
    /// Names the caller (from the gate) on the request's records.
    pub fn set_caller(&self, caller: Caller, break_glass: bool) {
        let mut asker = self.asker.lock().unwrap_or_else(|e| e.into_inner());
        asker.caller = Some(caller);
        asker.break_glass = break_glass;
    }

    fn appended(&self) -> bool {
        self.appended.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl WriteAuditor for RequestAudit {
    fn record(&self, outcomes: &[Result<store::Outcome, store::StoreError>]) -> AuditEntry {
        let mut facts = AuditFacts::default();
        let mut failed = 0;
        for o in outcomes {
            let stored = match o {
                Ok(
                    store::Outcome::Created(r)
                    | store::Outcome::Updated(r)
                    | store::Outcome::Unchanged(r)
                    | store::Outcome::Existing(r)
                    | store::Outcome::Deleted(r),
                ) => r,
                Ok(store::Outcome::NoOp) => continue,
                Err(_) => {
                    failed += 1;
                    continue;
                }
            };
            let f = AuditFacts::of_resource(stored);
            facts.patients.extend(f.patients);
            facts.extra.extend(f.entity);
        }
        let outcome = if failed == 0 {
            (Outcome::Success, None)
        } else {
            (
                Outcome::MinorFailure,
                Some(format!("{failed} of {} entries failed", outcomes.len())),
            )
        };
        let asker = self.asker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let event = event_of(&self.request.method, &self.request.path)
            .unwrap_or_else(|| Event::Rest("operation".into()));
        let (record, agent) = compose(&self.node, &self.request, event, &asker, facts, outcome);
        match entry_of(&record, agent) {
            Ok(entry) => entry,
            // JSON of values this process made always encodes; should it not, the record
            // still says what happened, in words.
            Err(e) => AuditEntry {
                recorded_ms: record.recorded.timestamp_millis(),
                request_id: record.request_id.clone(),
                agent: None,
                patients: record.patients.clone(),
                entities: Vec::new(),
                record: e.to_string().into_bytes(),
            },
        }
    }

    fn signer(&self) -> &HeadSigner {
        &self.signer
    }

    fn committed(&self) {
        self.appended
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The middleware: see the module documentation.
pub async fn audit_requests(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(auditor) = state.auditor.clone() else {
        return next.run(req).await;
    };
    let request = RequestFacts {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        request_id: req
            .headers()
            .get(crate::request_log::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let Some(event) = event_of(&request.method, &request.path) else {
        return next.run(req).await;
    };
    let writes = Arc::new(RequestAudit {
        node: auditor.node().to_owned(),
        request: request.clone(),
        signer: auditor.signer.clone(),
        asker: std::sync::Mutex::new(Asker::default()),
        appended: std::sync::atomic::AtomicBool::new(false),
    });
    req.extensions_mut().insert(writes.clone());
    let mut response = next.run(req).await;
    let subject = response
        .extensions_mut()
        .remove::<AuditSubject>()
        .unwrap_or_default();
    let facts = response
        .extensions_mut()
        .remove::<AuditFacts>()
        .unwrap_or_default();
    // A write whose record committed with it, answered as it committed: recorded already.
    if writes.appended() && response.status().is_success() {
        return response;
    }
    let event = match subject.token_event {
        Some(what) => Event::Token(what.to_owned()),
        None => event,
    };
    let mut status = response.status();
    if subject.login_failed {
        // The page answers a failed sign-in with itself; the record says it failed.
        status = axum::http::StatusCode::UNAUTHORIZED;
    }
    let asker = Asker {
        caller: subject.caller.clone(),
        client_id: subject.client_id.clone(),
        login_user: subject.login_user.clone(),
        break_glass: subject.break_glass,
    };
    let outcome = (
        Outcome::of_status(status.as_u16()),
        (!status.is_success()).then(|| status.canonical_reason().unwrap_or("").to_owned()),
    );
    let (record, agent) = compose(auditor.node(), &request, event, &asker, facts, outcome);
    match auditor.record(&record, agent).await {
        Ok(()) => response,
        Err(e) => {
            tracing::error!(error = %e, "withholding an answer whose audit record failed");
            ApiError::internal(
                "the audit record of this request could not be written, so its answer is withheld",
            )
            .into_response()
        }
    }
}

/// The event a request is, or `None` for what is not audited (health, discovery, the
/// CapabilityStatement, the public keys).
fn event_of(method: &Method, path: &str) -> Option<Event> {
    let rest = |i: &str| Some(Event::Rest(i.to_owned()));
    match path {
        "/healthz" | "/readyz" | "/fhir/metadata" | "/auth/jwks" => return None,
        p if p.ends_with("/.well-known/smart-configuration") => return None,
        "/auth/token" => return Some(Event::Token("issue".into())),
        // The page itself is no event; its answer (a sign-in, or a failed one) is.
        "/auth/authorize" if method == Method::POST => return Some(Event::Login),
        "/auth/authorize" => return None,
        "/auth/introspect" => return Some(Event::Token("introspect".into())),
        "/auth/revoke" => return Some(Event::Token("revoke".into())),
        _ => {}
    }
    let segments: Vec<&str> = path
        .strip_prefix("/fhir")
        .unwrap_or(path)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let m = method.as_str();
    match (m, segments.as_slice()) {
        ("POST", []) => rest("batch"),
        ("GET", []) => rest("search-system"),
        ("GET", ["_history"]) => rest("history-system"),
        (_, [_, "$match"]) => Some(Event::Renkei("match".into())),
        (_, [_, op]) if op.starts_with("$empi-") => {
            Some(Event::Renkei(op.trim_start_matches('$').to_owned()))
        }
        (_, [_, op] | [_, _, op]) if op.starts_with('$') => rest("operation"),
        ("GET", [_]) | ("POST", [_, "_search"]) => rest("search-type"),
        ("POST", [_]) => rest("create"),
        ("PUT", [_]) | ("PUT", [_, _]) => rest("update"),
        ("PATCH", _) => rest("patch"),
        ("DELETE", _) => rest("delete"),
        ("GET", [_, "_history"]) => rest("history-type"),
        ("GET", [_, _]) => rest("read"),
        ("GET", [_, _, "_history"]) => rest("history-instance"),
        ("GET", [_, _, "_history", _]) => rest("vread"),
        ("GET", [_, _, _]) => rest("search-type"),
        _ => rest("operation"),
    }
}

/// `Type/id` of an instance-level path.
fn instance_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path
        .strip_prefix("/fhir/")?
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        [ty, id, ..] if !id.starts_with('$') && !id.starts_with('_') => Some(format!("{ty}/{id}")),
        _ => None,
    }
}

/// Patients a request names in its path (`Patient/x/...`) or its query (`patient=`,
/// `subject=Patient/x`).
fn patients_named(path: &str, query: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rest) = path.strip_prefix("/fhir/Patient/")
        && let Some(id) = rest.split('/').next()
        && !id.is_empty()
        && !id.starts_with('$')
        && !id.starts_with('_')
    {
        out.push(format!("Patient/{id}"));
    }
    for (k, v) in store::search::parse_query_string(query.unwrap_or("")) {
        let name = k.split(':').next().unwrap_or("");
        if !matches!(name, "patient" | "subject") {
            continue;
        }
        for one in v.split(',') {
            let id = one.strip_prefix("Patient/").unwrap_or(one);
            if name == "patient" || one.starts_with("Patient/") {
                out.push(format!("Patient/{id}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_as_balp_interactions() {
        for (m, path, want) in [
            (Method::GET, "/fhir/Patient/1", Some("read")),
            (Method::GET, "/fhir/Patient/1/_history/2", Some("vread")),
            (Method::GET, "/fhir/Observation", Some("search-type")),
            (Method::POST, "/fhir/Observation", Some("create")),
            (Method::PUT, "/fhir/Observation/1", Some("update")),
            (Method::DELETE, "/fhir/Observation/1", Some("delete")),
            (Method::POST, "/fhir", Some("batch")),
            (
                Method::GET,
                "/fhir/Patient/1/$everything",
                Some("operation"),
            ),
            (Method::GET, "/fhir/metadata", None),
            (Method::GET, "/healthz", None),
        ] {
            let got = event_of(&m, path);
            match (got, want) {
                (None, None) => {}
                (Some(Event::Rest(i)), Some(w)) => assert_eq!(i, w, "{m} {path}"),
                (other, w) => panic!("{m} {path}: {other:?}, wanted {w:?}"),
            }
        }
        assert!(matches!(
            event_of(&Method::POST, "/fhir/Patient/$match"),
            Some(Event::Renkei(m)) if m == "match"
        ));
    }

    #[test]
    fn the_patients_a_request_names() {
        assert_eq!(
            patients_named(
                "/fhir/Patient/7/$everything",
                Some("subject=Patient/8&patient=9,10&subject=Group/1")
            ),
            vec!["Patient/7", "Patient/8", "Patient/9", "Patient/10"]
        );
        assert_eq!(
            instance_of("/fhir/Observation/3/_history/1").as_deref(),
            Some("Observation/3")
        );
        assert_eq!(instance_of("/fhir/Patient/$match"), None);
    }
}
