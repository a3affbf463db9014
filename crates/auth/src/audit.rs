//! Audit records shaped as IHE Basic Audit Log Patterns (BALP) `AuditEvent`s: one builder for
//! every event the node records (RESTful reads, searches and writes, `$match`, exports,
//! logins, token issues, refusals, EMPI decisions), so that every record names the same
//! things the same way: what happened (type, subtype, action), when, with what outcome, who
//! asked (client, user, network address) on whose behalf and why (purpose of use, break-glass),
//! which node answered, and which patients and resources it touched.
//!
//! The record is JSON; the chain ([`crate::chain`]) hashes its exact bytes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const BALP_EXTENSION_BASE: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition";
/// The system of Renkei's own event subtypes (`match`, `export`, `empi-link`, ...).
pub const RENKEI_EVENT: &str = "https://renkei.dev/fhir/CodeSystem/audit-event";

/// What kind of event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A RESTful interaction (`read`, `vread`, `search-type`, `create`, `update`, `patch`,
    /// `delete`, `history-instance`, `operation`, ...).
    Rest(String),
    /// A user signed in (or failed to).
    Login,
    /// A token was issued, refreshed, introspected or revoked (the subtype says which).
    Token(String),
    /// A node operation of Renkei's own: `match`, `export`, `import`, `empi-link`,
    /// `empi-unlink`, `empi-merge`, `empi-unmerge`, `break-glass`.
    Renkei(String),
}

/// The outcome, as `AuditEvent.outcome` codes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success (`0`).
    Success,
    /// Minor failure (`4`): the request was refused or malformed.
    MinorFailure,
    /// Serious failure (`8`): the server failed.
    SeriousFailure,
}

impl Outcome {
    fn code(self) -> &'static str {
        match self {
            Outcome::Success => "0",
            Outcome::MinorFailure => "4",
            Outcome::SeriousFailure => "8",
        }
    }

    /// From an HTTP status.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Success,
            400..=499 => Outcome::MinorFailure,
            _ => Outcome::SeriousFailure,
        }
    }
}

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requester {
    /// The registered client (`client_id`), if any.
    pub client_id: Option<String>,
    /// The user or patient (a reference: `Practitioner/x`, `Patient/y`, or a user name).
    pub user: Option<String>,
    /// The user's organisation (`Organization/x`).
    pub organization: Option<String>,
    /// The peer's network address.
    pub address: Option<String>,
}

/// One audit record to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// What happened.
    pub event: Event,
    /// When.
    pub recorded: DateTime<Utc>,
    /// With what outcome, and why when it failed.
    pub outcome: Outcome,
    /// The failure's description (`outcomeDesc`).
    pub outcome_text: Option<String>,
    /// Who asked.
    pub requester: Requester,
    /// The node that answered (`source.observer` display and `source.site`).
    pub node: String,
    /// Purpose of use (v3 `ActReason` code).
    pub purpose: Option<String>,
    /// Emergency access was in force.
    pub break_glass: bool,
    /// The patients the event concerns (`Patient/x`).
    pub patients: Vec<String>,
    /// Other resources it touched (`Type/id` or `Type/id/_history/v`).
    pub resources: Vec<String>,
    /// The query, as received (search parameters), for searches and `$match`.
    pub query: Option<String>,
    /// The request's correlation id.
    pub request_id: String,
}

impl AuditRecord {
    /// The `AuditEvent` resource.
    pub fn to_resource(&self) -> Value {
        let (type_, subtype, action) = match &self.event {
            Event::Rest(i) => (
                coding(EVENT_TYPE, "rest", "RESTful Operation"),
                coding(RESTFUL, i, i),
                rest_action(i),
            ),
            Event::Login => (
                coding(DCM, "110114", "User Authentication"),
                coding(DCM, "110122", "Login"),
                "E",
            ),
            Event::Token(what) => (
                coding(DCM, "110114", "User Authentication"),
                coding(RENKEI_EVENT, what, what),
                "E",
            ),
            Event::Renkei(what) => (
                coding(EVENT_TYPE, "rest", "RESTful Operation"),
                coding(RENKEI_EVENT, what, what),
                match what.as_str() {
                    "match" | "export" => "E",
                    "import" => "C",
                    _ => "U",
                },
            ),
        };
        let mut agents = Vec::new();
        let r = &self.requester;
        if r.user.is_some() || r.client_id.is_some() {
            let mut a = json!({
                "type": {"coding": [coding(PARTICIPATION, "IRCP", "information recipient")]},
                "requestor": true,
            });
            if let Some(u) = &r.user {
                a["who"] = who(u);
            } else if let Some(c) = &r.client_id {
                a["who"] = json!({"identifier": {"system": "urn:renkei:client", "value": c}});
            }
            if let Some(c) = r.client_id.as_ref().filter(|_| r.user.is_some()) {
                a["altId"] = json!(c);
            }
            if let Some(org) = &r.organization {
                a["location"] = json!({"reference": org});
            }
            if let Some(p) = &self.purpose {
                a["purposeOfUse"] = json!([{"coding": [coding(ACT_REASON, p, p)]}]);
            }
            if let Some(addr) = &r.address {
                a["network"] = json!({"address": addr, "type": network_type(addr)});
            }
            agents.push(a);
        } else if let Some(addr) = &r.address {
            agents.push(json!({
                "type": {"coding": [coding(DCM, "110153", "Source Role ID")]},
                "requestor": true,
                "who": {"display": "anonymous"},
                "network": {"address": addr, "type": network_type(addr)},
            }));
        }
        agents.push(json!({
            "type": {"coding": [coding(DCM, "110152", "Destination Role ID")]},
            "requestor": false,
            "who": {"display": self.node},
        }));
        let mut entities = Vec::new();
        for p in &self.patients {
            entities.push(json!({
                "what": {"reference": p},
                "type": coding(ENTITY_TYPE, "1", "Person"),
                "role": coding(OBJECT_ROLE, "1", "Patient"),
            }));
        }
        for res in &self.resources {
            entities.push(json!({
                "what": {"reference": res},
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
            }));
        }
        if let Some(q) = &self.query {
            entities.push(json!({
                "type": coding(ENTITY_TYPE, "2", "System Object"),
                "role": coding(OBJECT_ROLE, "24", "Query"),
                "query": STANDARD.encode(q.as_bytes()),
            }));
        }
        let mut ev = json!({
            "resourceType": "AuditEvent",
            "type": type_,
            "subtype": [subtype],
            "action": action,
            "recorded": self.recorded.to_rfc3339_opts(SecondsFormat::Millis, true),
            "outcome": self.outcome.code(),
            "agent": agents,
            "source": {"site": self.node, "observer": {"display": self.node},
                       "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")]},
            "extension": [{"url": format!("{BALP_EXTENSION_BASE}/ihe-basicAuditLogPatterns-requestId"), "valueString": self.request_id}],
        });
        if let Some(t) = &self.outcome_text {
            ev["outcomeDesc"] = json!(t);
        }
        if !entities.is_empty() {
            ev["entity"] = json!(entities);
        }
        if let Some(p) = &self.purpose {
            ev["purposeOfEvent"] = json!([{"coding": [coding(ACT_REASON, p, p)]}]);
        }
        if self.break_glass {
            ev["meta"] = json!({"security": [coding(ACT_REASON, "ETREAT", "emergency treatment (break-glass)")]});
        }
        ev
    }
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn who(reference: &str) -> Value {
    if reference.contains('/') {
        json!({"reference": reference})
    } else {
        json!({"display": reference})
    }
}

/// `1` a machine name, `2` an IP address.
fn network_type(addr: &str) -> &'static str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        "2"
    } else {
        "1"
    }
}

fn rest_action(interaction: &str) -> &'static str {
    match interaction {
        "create" => "C",
        "update" | "patch" => "U",
        "delete" => "D",
        "operation" | "batch" | "transaction" => "E",
        _ => "R",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: Event) -> AuditRecord {
        AuditRecord {
            event,
            recorded: DateTime::parse_from_rfc3339("2026-12-06T01:02:03.456Z")
                .expect("time")
                .with_timezone(&Utc),
            outcome: Outcome::Success,
            outcome_text: None,
            requester: Requester {
                client_id: Some("clinic-app".into()),
                user: Some("Practitioner/dr1".into()),
                organization: Some("Organization/clinic".into()),
                address: Some("127.0.0.1:5555".into()),
            },
            node: "renkei-test".into(),
            purpose: Some("TREAT".into()),
            break_glass: false,
            patients: vec!["Patient/p1".into()],
            resources: vec!["Observation/o1/_history/2".into()],
            query: None,
            request_id: "req-1".into(),
        }
    }

    #[test]
    fn a_read_names_who_what_and_whose() {
        let ev = record(Event::Rest("read".into())).to_resource();
        assert_eq!(ev["action"], "R");
        assert_eq!(ev["subtype"][0]["code"], "read");
        assert_eq!(ev["outcome"], "0");
        assert_eq!(ev["recorded"], "2026-12-06T01:02:03.456Z");
        assert_eq!(ev["agent"][0]["who"]["reference"], "Practitioner/dr1");
        assert_eq!(ev["agent"][0]["altId"], "clinic-app");
        assert_eq!(ev["agent"][0]["network"]["type"], "2");
        assert_eq!(ev["agent"][1]["requestor"], false);
        assert_eq!(ev["entity"][0]["what"]["reference"], "Patient/p1");
        assert_eq!(ev["entity"][0]["role"]["code"], "1");
        assert_eq!(ev["entity"][1]["role"]["code"], "4");
        assert_eq!(ev["purposeOfEvent"][0]["coding"][0]["code"], "TREAT");
        assert!(ev.get("meta").is_none());
    }

    #[test]
    fn a_search_keeps_its_query_and_break_glass_is_flagged() {
        let mut r = record(Event::Rest("search-type".into()));
        r.query = Some("Observation?patient=p1".into());
        r.break_glass = true;
        r.purpose = Some("ETREAT".into());
        let ev = r.to_resource();
        let q = ev["entity"][2]["query"].as_str().expect("query");
        assert_eq!(
            STANDARD.decode(q).expect("base64"),
            b"Observation?patient=p1"
        );
        assert_eq!(ev["meta"]["security"][0]["code"], "ETREAT");
    }

    #[test]
    fn a_refused_anonymous_request_is_recorded_from_its_address() {
        let mut r = record(Event::Rest("read".into()));
        r.requester = Requester {
            address: Some("[::1]:4000".into()),
            ..Requester::default()
        };
        r.outcome = Outcome::of_status(401);
        r.outcome_text = Some("no access token".into());
        let ev = r.to_resource();
        assert_eq!(ev["outcome"], "4");
        assert_eq!(ev["agent"][0]["who"]["display"], "anonymous");
        assert_eq!(ev["agent"][0]["network"]["type"], "2");
        assert_eq!(Event::Login, Event::Login);
        assert_eq!(record(Event::Login).to_resource()["type"]["code"], "110114");
        assert_eq!(
            record(Event::Renkei("empi-merge".into())).to_resource()["action"],
            "U"
        );
    }
}
