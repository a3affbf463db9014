//! Directed messages: a FHIR document Bundle one node sends to another, signed by the sender
//! (a detached JWS over the exact bytes sent), and what each side keeps of it.
//!
//! - **Sender.** Each message is a [`Dispatch`], kept by the caller as a JSON row keyed by the
//!   message id (the Bundle's `identifier.value`). It is queued, tried when due
//!   ([`Dispatch::is_due`]), retried with exponential back-off after a failure
//!   ([`Dispatch::after_failure`], [`RetryPolicy`]) and ends delivered, with the receiver's
//!   receipt, or failed once the policy gives up.
//! - **Receiver.** A document is accepted when it is a document Bundle with an identifier and a
//!   Composition first ([`document_identifier`]); it is stored under an id derived from that
//!   identifier ([`stored_bundle_id`]), so a second delivery of the same document lands on the
//!   same id and is answered as a duplicate; the inbox item is a `Task` ([`inbox_task`]).
//! - **Receipt.** The receiver answers with a `Communication` naming the document
//!   ([`receipt`]); the sender reads it back with [`read_receipt`].

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use thiserror::Error;

/// The code system of the exchange's own codes.
pub const EXCHANGE_CODE_SYSTEM: &str = "https://renkei.dev/fhir/CodeSystem/exchange";
/// The category code of a delivery receipt.
pub const RECEIPT_CODE: &str = "delivery-receipt";
/// The status reason code of a receipt for a document delivered before.
pub const DUPLICATE_CODE: &str = "duplicate";
/// The identifier system of a document identifier that is a URI (`urn:uuid:...`).
pub const URI_IDENTIFIER_SYSTEM: &str = "urn:ietf:rfc:3986";

/// What is wrong with a document or a receipt.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DirectedError {
    /// An element is missing or has the wrong value; `at` is its FHIRPath-like location.
    #[error("{at}: {problem}")]
    Element {
        /// Where, for instance `Bundle.identifier.value`.
        at: String,
        /// What is wrong there.
        problem: String,
    },
}

fn element(at: &str, problem: impl Into<String>) -> DirectedError {
    DirectedError::Element {
        at: at.to_owned(),
        problem: problem.into(),
    }
}

/// When to try a failed delivery again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// The wait after the first failure, seconds; it doubles after each further failure.
    pub first_delay_seconds: i64,
    /// The longest wait between two attempts, seconds.
    pub max_delay_seconds: i64,
    /// The most attempts made: the failure of the last one fails the message.
    pub max_attempts: u32,
    /// A failure this long after the message was queued, seconds, fails it.
    pub give_up_after_seconds: i64,
}

impl Default for RetryPolicy {
    /// 2 s, doubling, at most 5 min apart; up to 300 attempts over at most a day.
    fn default() -> RetryPolicy {
        RetryPolicy {
            first_delay_seconds: 2,
            max_delay_seconds: 300,
            max_attempts: 300,
            give_up_after_seconds: 86_400,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure (1 for the first): `first · 2^(failures-1)`,
    /// at most `max_delay_seconds`.
    pub fn delay_after(&self, failures: u32) -> i64 {
        let doublings = failures.saturating_sub(1).min(62);
        self.first_delay_seconds
            .saturating_mul(1_i64 << doublings)
            .min(self.max_delay_seconds)
    }
}

/// Where a message stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum DispatchState {
    /// To be sent when due.
    Queued,
    /// The receiver took it and answered with `receipt` (a `Communication`) at `at`.
    Delivered {
        receipt: Value,
        /// FHIR instant.
        at: String,
    },
    /// Given up on.
    Failed { reason: String },
}

/// A directed message, on the sender's side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// The message id: the Bundle's `identifier.value`.
    pub id: String,
    /// The receiving node's id.
    pub recipient_node: String,
    /// Where the receiving node takes directed messages.
    pub recipient_endpoint: String,
    /// The exact bytes sent (the signature covers them), as text.
    pub bundle: String,
    /// The detached JWS over `bundle`.
    pub signature: String,
    pub state: DispatchState,
    /// Attempts made so far (failed ones and the delivering one).
    pub attempts: u32,
    /// When the next attempt is due, seconds since the epoch.
    pub next_attempt_at: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When it was queued, seconds since the epoch.
    pub created: i64,
}

impl Dispatch {
    /// A message queued at `now`, due at once.
    pub fn new(
        id: String,
        recipient_node: String,
        recipient_endpoint: String,
        bundle: String,
        signature: String,
        now: i64,
    ) -> Dispatch {
        Dispatch {
            id,
            recipient_node,
            recipient_endpoint,
            bundle,
            signature,
            state: DispatchState::Queued,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            created: now,
        }
    }

    /// Whether it is queued and its next attempt is due at `now`.
    pub fn is_due(&self, now: i64) -> bool {
        self.state == DispatchState::Queued && self.next_attempt_at <= now
    }

    /// Records a failed attempt at `now`: the next one is due after the policy's back-off, or,
    /// past its attempts or its time, the message fails. A message no longer queued is left
    /// as it is.
    pub fn after_failure(&mut self, error: String, now: i64, policy: &RetryPolicy) {
        if self.state != DispatchState::Queued {
            return;
        }
        self.attempts = self.attempts.saturating_add(1);
        let waited = now.saturating_sub(self.created);
        if self.attempts >= policy.max_attempts || waited >= policy.give_up_after_seconds {
            self.state = DispatchState::Failed {
                reason: format!(
                    "gave up after {} attempts over {waited} s: {error}",
                    self.attempts
                ),
            };
        } else {
            self.next_attempt_at = now.saturating_add(policy.delay_after(self.attempts));
        }
        self.last_error = Some(error);
    }

    /// Records the delivering attempt and the receiver's `receipt`, at `at` (FHIR instant).
    pub fn delivered(&mut self, receipt: Value, at: String) {
        self.attempts = self.attempts.saturating_add(1);
        self.state = DispatchState::Delivered { receipt, at };
    }
}

/// What a receipt says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The delivered Bundle's `identifier.value`.
    pub bundle_identifier: String,
    /// The receiver had it already.
    pub duplicate: bool,
}

/// The receiver's receipt for the document `bundle_identifier`, a `Communication` sent at
/// `now_instant` (FHIR instant) by node `receiver_node`; `duplicate` when it had the document
/// already (then `statusReason` says so with [`DUPLICATE_CODE`]).
pub fn receipt(
    bundle_identifier: &str,
    receiver_node: &str,
    now_instant: &str,
    duplicate: bool,
) -> Value {
    let mut communication = json!({
        "resourceType": "Communication",
        "identifier": [{"system": URI_IDENTIFIER_SYSTEM, "value": bundle_identifier}],
        "status": "completed",
        "category": [{"coding": [{"system": EXCHANGE_CODE_SYSTEM, "code": RECEIPT_CODE,
                                  "display": "Delivery receipt"}]}],
        "sent": now_instant,
        "sender": {"display": format!("Renkei node {receiver_node}")},
        "payload": [{"contentString": if duplicate {
            format!("Document {bundle_identifier} was already delivered to node {receiver_node}")
        } else {
            format!("Document {bundle_identifier} delivered to node {receiver_node}")
        }}],
    });
    if duplicate {
        communication["statusReason"] = json!({
            "coding": [{"system": EXCHANGE_CODE_SYSTEM, "code": DUPLICATE_CODE}],
            "text": "already delivered",
        });
    }
    communication
}

/// Whether the CodeableConcept `concept` has the exchange's `code`.
fn has_exchange_coding(concept: &Value, code: &str) -> bool {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("system").and_then(Value::as_str) == Some(EXCHANGE_CODE_SYSTEM)
                && c.get("code").and_then(Value::as_str) == Some(code)
        })
}

/// Reads a receipt made by [`receipt`].
pub fn read_receipt(communication: &Value) -> Result<Receipt, DirectedError> {
    if communication.get("resourceType").and_then(Value::as_str) != Some("Communication") {
        return Err(element("resourceType", "a receipt is a Communication"));
    }
    if communication.get("status").and_then(Value::as_str) != Some("completed") {
        return Err(element("Communication.status", "must be completed"));
    }
    let category = communication
        .get("category")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|concept| has_exchange_coding(concept, RECEIPT_CODE));
    if !category {
        return Err(element(
            "Communication.category",
            format!("no {EXCHANGE_CODE_SYSTEM}|{RECEIPT_CODE} coding"),
        ));
    }
    let bundle_identifier = communication
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| {
            ids.iter()
                .find(|i| i.get("system").and_then(Value::as_str) == Some(URI_IDENTIFIER_SYSTEM))
        })
        .and_then(|i| i.get("value"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            element(
                "Communication.identifier.value",
                format!("no identifier of system {URI_IDENTIFIER_SYSTEM}"),
            )
        })?;
    Ok(Receipt {
        bundle_identifier: bundle_identifier.to_owned(),
        duplicate: communication
            .get("statusReason")
            .is_some_and(|reason| has_exchange_coding(reason, DUPLICATE_CODE)),
    })
}

/// The document's identifier, once `bundle` is checked to be a document: a Bundle of `type`
/// `document`, with an `identifier.value`, whose first entry is a Composition.
pub fn document_identifier(bundle: &Value) -> Result<String, DirectedError> {
    let found = |v: Option<&Value>| v.map_or_else(|| "nothing".to_owned(), Value::to_string);
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(element(
            "resourceType",
            format!(
                "expected Bundle, found {}",
                found(bundle.get("resourceType"))
            ),
        ));
    }
    if bundle.get("type").and_then(Value::as_str) != Some("document") {
        return Err(element(
            "Bundle.type",
            format!("expected document, found {}", found(bundle.get("type"))),
        ));
    }
    let identifier = bundle
        .pointer("/identifier/value")
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| element("Bundle.identifier.value", "a document has an identifier"))?;
    let first = bundle.pointer("/entry/0/resource/resourceType");
    if first.and_then(Value::as_str) != Some("Composition") {
        return Err(element(
            "Bundle.entry[0].resource",
            format!("expected a Composition, found {}", found(first)),
        ));
    }
    Ok(identifier.to_owned())
}

/// The id a received document is stored under, the same for the same identifier: the UUID of
/// a `urn:uuid:` identifier in canonical (lowercase, hyphenated) form, otherwise `d` and 40 hex
/// digits of the identifier's SHA-256. Always a FHIR id (at most 64 of `[A-Za-z0-9.-]`), and
/// the two forms never meet (a UUID has hyphens, a digest none).
pub fn stored_bundle_id(identifier: &str) -> String {
    if let Some(text) = identifier.strip_prefix("urn:uuid:")
        && let Ok(uuid) = uuid::Uuid::try_parse(text)
        && uuid.hyphenated().to_string() == text
    {
        return text.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, identifier.as_bytes());
    let hex: String = digest.as_ref()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("d{hex}")
}

/// The receiver's inbox item for a document received from `sender_node` at
/// `received_instant` (FHIR instant): a `Task` to review it, whose `focus` is the stored Bundle
/// ([`stored_bundle_id`]), `for` the Composition's subject (when it is a reference), and
/// `requester` the Composition's first author at the sending node.
pub fn inbox_task(
    bundle: &Value,
    sender_node: &str,
    received_instant: &str,
) -> Result<Value, DirectedError> {
    let identifier = document_identifier(bundle)?;
    let composition = bundle
        .pointer("/entry/0/resource")
        .ok_or_else(|| element("Bundle.entry[0].resource", "missing"))?;
    let title = composition.get("title").and_then(Value::as_str);
    let author = composition
        .pointer("/author/0")
        .and_then(|a| {
            a.get("display")
                .or_else(|| a.get("reference"))
                .and_then(Value::as_str)
        })
        .map(|name| format!("{name} (node {sender_node})"))
        .unwrap_or_else(|| format!("Renkei node {sender_node}"));
    let mut focus = json!({
        "reference": format!("Bundle/{}", stored_bundle_id(&identifier)),
        "type": "Bundle",
    });
    if let Some(title) = title {
        focus["display"] = json!(title);
    }
    let mut task = json!({
        "resourceType": "Task",
        "identifier": [{"system": URI_IDENTIFIER_SYSTEM, "value": identifier}],
        "status": "requested",
        "intent": "order",
        "code": {"text": "Review received document"},
        "description": match title {
            Some(title) => format!("Review \"{title}\" received from node {sender_node}"),
            None => format!("Review the document received from node {sender_node}"),
        },
        "focus": focus,
        "authoredOn": received_instant,
        "lastModified": received_instant,
        "requester": {"display": author},
    });
    if let Some(subject) = composition
        .get("subject")
        .filter(|s| s.get("reference").and_then(Value::as_str).is_some())
    {
        task["for"] = subject.clone();
    }
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const IDENTIFIER: &str = "urn:uuid:0b6a8f5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b";

    fn dispatch() -> Dispatch {
        Dispatch::new(
            IDENTIFIER.into(),
            "clinic-b".into(),
            "https://clinic-b.example/exchange/directed".into(),
            r#"{"resourceType":"Bundle"}"#.into(),
            "eyJhbGciOiJFUzM4NCJ9..c2ln".into(),
            NOW,
        )
    }

    fn document() -> Value {
        json!({
            "resourceType": "Bundle",
            "identifier": {"system": URI_IDENTIFIER_SYSTEM, "value": IDENTIFIER},
            "type": "document",
            "timestamp": "2027-01-15T08:00:00Z",
            "entry": [
                {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                 "resource": {
                    "resourceType": "Composition", "status": "final",
                    "type": {"coding": [{"system": "http://loinc.org", "code": "57133-1"}]},
                    "subject": {"reference": "urn:uuid:22222222-2222-4222-8222-222222222222",
                                "display": "Yamada Taro"},
                    "date": "2027-01-15T08:00:00Z",
                    "author": [{"reference": "Practitioner/p1", "display": "Dr. Sato"}],
                    "title": "Referral letter"}},
                {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                 "resource": {"resourceType": "Patient", "name": [{"family": "Yamada"}]}}
            ]
        })
    }

    #[test]
    fn back_off_doubles_from_two_seconds_up_to_five_minutes() {
        let policy = RetryPolicy::default();
        let delays: Vec<i64> = (1..=10).map(|n| policy.delay_after(n)).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(policy.delay_after(u32::MAX), 300);
        let mut d = dispatch();
        assert!(d.is_due(NOW));
        d.after_failure("connection refused".into(), NOW, &policy);
        assert_eq!((d.attempts, d.next_attempt_at), (1, NOW + 2));
        assert!(!d.is_due(NOW + 1) && d.is_due(NOW + 2));
        d.after_failure("timeout".into(), NOW + 2, &policy);
        assert_eq!((d.attempts, d.next_attempt_at), (2, NOW + 6));
        assert_eq!(d.last_error.as_deref(), Some("timeout"));
        assert_eq!(d.state, DispatchState::Queued);
    }

    #[test]
    fn it_fails_past_the_attempts_or_the_time() {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let mut d = dispatch();
        for n in 0..3 {
            d.after_failure(format!("error {n}"), NOW + n, &policy);
        }
        assert_eq!(d.attempts, 3);
        assert!(matches!(&d.state, DispatchState::Failed { reason } if reason.contains("error 2")));
        assert!(!d.is_due(i64::MAX));
        // A failed message stays failed.
        d.after_failure("late".into(), NOW + 10, &policy);
        assert_eq!(d.attempts, 3);
        let mut d = dispatch();
        d.after_failure("first".into(), NOW, &policy);
        d.after_failure("a day later".into(), NOW + 86_400, &RetryPolicy::default());
        assert!(matches!(d.state, DispatchState::Failed { .. }));
    }

    #[test]
    fn a_delivery_keeps_the_receipt_and_the_row_round_trips() {
        let mut d = dispatch();
        d.after_failure("timeout".into(), NOW, &RetryPolicy::default());
        let r = receipt(IDENTIFIER, "clinic-b", "2027-01-15T08:00:05Z", false);
        d.delivered(r.clone(), "2027-01-15T08:00:05Z".into());
        assert_eq!(d.attempts, 2);
        assert!(!d.is_due(i64::MAX));
        // A late failure report does not undo the delivery.
        d.after_failure("late".into(), NOW + 5, &RetryPolicy::default());
        assert!(matches!(d.state, DispatchState::Delivered { .. }));
        let row = serde_json::to_string(&d).expect("json");
        assert_eq!(serde_json::from_str::<Dispatch>(&row).expect("read"), d);
        let value: Value = serde_json::from_str(&row).expect("json");
        assert_eq!(value["state"]["status"], "delivered");
        for state in [
            DispatchState::Queued,
            DispatchState::Failed {
                reason: "gave up".into(),
            },
        ] {
            let row = serde_json::to_string(&state).expect("json");
            assert_eq!(
                serde_json::from_str::<DispatchState>(&row).expect("read"),
                state
            );
        }
    }

    #[test]
    fn receipts_are_valid_communications_and_read_back() {
        for duplicate in [false, true] {
            let r = receipt(
                IDENTIFIER,
                "clinic-b",
                "2027-01-15T08:00:05+09:00",
                duplicate,
            );
            assert_eq!(fhir::validate_resource(&r), Ok(()));
            assert_eq!(
                read_receipt(&r),
                Ok(Receipt {
                    bundle_identifier: IDENTIFIER.into(),
                    duplicate
                })
            );
            let text = r["payload"][0]["contentString"].as_str().expect("text");
            assert_eq!(text.contains("already delivered"), duplicate);
        }
        let mut r = receipt(IDENTIFIER, "clinic-b", "2027-01-15T08:00:05Z", false);
        r["category"][0]["coding"][0]["code"] = json!("other");
        assert!(
            matches!(read_receipt(&r), Err(DirectedError::Element { at, .. }) if at == "Communication.category")
        );
        let mut r = receipt(IDENTIFIER, "clinic-b", "2027-01-15T08:00:05Z", false);
        r["identifier"] = json!([]);
        assert!(
            matches!(read_receipt(&r), Err(DirectedError::Element { at, .. }) if at == "Communication.identifier.value")
        );
        assert!(read_receipt(&json!({"resourceType": "Task"})).is_err());
        assert!(read_receipt(&json!("text")).is_err());
    }

    #[test]
    fn a_document_is_a_document_bundle_with_an_identifier_and_a_composition_first() {
        assert_eq!(document_identifier(&document()), Ok(IDENTIFIER.into()));
        let at = |b: &Value| match document_identifier(b) {
            Err(DirectedError::Element { at, .. }) => at,
            Ok(id) => panic!("accepted {id}"),
        };
        assert_eq!(at(&json!({"resourceType": "Patient"})), "resourceType");
        assert_eq!(at(&json!([])), "resourceType");
        let mut b = document();
        b["type"] = json!("collection");
        assert_eq!(at(&b), "Bundle.type");
        let mut b = document();
        b["identifier"] = json!({"system": URI_IDENTIFIER_SYSTEM});
        assert_eq!(at(&b), "Bundle.identifier.value");
        let mut b = document();
        b["identifier"]["value"] = json!(7);
        assert_eq!(at(&b), "Bundle.identifier.value");
        let mut b = document();
        if let Some(entries) = b["entry"].as_array_mut() {
            entries.reverse();
        }
        assert_eq!(at(&b), "Bundle.entry[0].resource");
        let mut b = document();
        b["entry"] = json!([]);
        assert_eq!(at(&b), "Bundle.entry[0].resource");
    }

    #[test]
    fn stored_ids_are_fhir_ids_and_the_same_for_the_same_identifier() {
        assert_eq!(
            stored_bundle_id(IDENTIFIER),
            "0b6a8f5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
        );
        let long = "https://clinic-a.example/documents/".to_owned() + &"x".repeat(200);
        for identifier in [
            IDENTIFIER,
            "urn:uuid:0B6A8F5E-1C2D-4E3F-8A9B-0C1D2E3F4A5B",
            "urn:oid:1.2.392.100495.20.3.51",
            "doc 1/ü",
            "",
            long.as_str(),
        ] {
            let id = stored_bundle_id(identifier);
            assert_eq!(id, stored_bundle_id(identifier));
            assert!(
                (1..=64).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')),
                "{identifier} -> {id}"
            );
        }
        // Upper-case UUIDs are other identifiers, and get their own id.
        assert_ne!(
            stored_bundle_id("urn:uuid:0B6A8F5E-1C2D-4E3F-8A9B-0C1D2E3F4A5B"),
            stored_bundle_id(IDENTIFIER)
        );
        assert_ne!(stored_bundle_id("a"), stored_bundle_id("b"));
    }

    #[test]
    fn the_inbox_task_points_at_the_stored_document() {
        let task = inbox_task(&document(), "clinic-a", "2027-01-15T08:00:05Z").expect("task");
        assert_eq!(fhir::validate_resource(&task), Ok(()));
        assert_eq!(task["status"], "requested");
        assert_eq!(task["intent"], "order");
        assert_eq!(task["code"]["text"], "Review received document");
        assert_eq!(
            task["focus"]["reference"],
            "Bundle/0b6a8f5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b"
        );
        assert_eq!(
            task["for"]["reference"],
            "urn:uuid:22222222-2222-4222-8222-222222222222"
        );
        assert_eq!(task["requester"]["display"], "Dr. Sato (node clinic-a)");
        assert_eq!(task["authoredOn"], "2027-01-15T08:00:05Z");
        // A subject without a reference, no author.
        let mut b = document();
        b["entry"][0]["resource"]["subject"] = json!({"display": "someone"});
        b["entry"][0]["resource"]
            .as_object_mut()
            .map(|c| c.remove("author"));
        let task = inbox_task(&b, "clinic-a", "2027-01-15T08:00:05Z").expect("task");
        assert_eq!(fhir::validate_resource(&task), Ok(()));
        assert!(task.get("for").is_none());
        assert_eq!(task["requester"]["display"], "Renkei node clinic-a");
        let mut b = document();
        b["type"] = json!("message");
        assert!(inbox_task(&b, "clinic-a", "2027-01-15T08:00:05Z").is_err());
    }
}
