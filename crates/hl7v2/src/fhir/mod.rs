//! HL7 v2 -> FHIR R4: pure functions from a parsed [`Message`] to a FHIR **transaction
//! Bundle** (JSON), following the HL7 v2-to-FHIR mapping IG where it covers the case.
//!
//! # Idempotency
//! Every entry is a conditional write keyed by a business identifier, so processing the same
//! message twice converges on the same resources:
//! - resources the message is authoritative for (Patient and Encounter in ADT; results,
//!   orders, prescriptions, allergies, immunizations, problems) are **conditional updates**
//!   `PUT Type?identifier=system|value`;
//! - resources it only mentions (the Patient of a lab result, practitioners, locations) are
//!   **conditional creates** `POST` with `ifNoneExist`, so a sparse PID in an ORU never
//!   overwrites the demographics an ADT feed maintains;
//! - the [Provenance] of the message is `PUT Provenance/<id>` with an id derived from the
//!   message's idempotency key (Provenance has no identifier element).
//!
//! Resources without an identifier in the message get a derived one (system
//! `urn:renkei:v2:<kind>:<sending facility>`, value built from stable fields such as the
//! filler order number and OBX-3/OBX-4), documented per mapping. `fullUrl`s are
//! deterministic `urn:uuid:`s, so the same message always gives the same Bundle.
//!
//! # Provenance
//! Every resource carries `meta.source` = `urn:renkei:v2:<MSH-3>:<MSH-4>#<MSH-10>`, and one
//! Provenance per message targets all of them, with the sending facility (MSH-4) as agent
//! and the message (MSH-10, type) as source entity.
//!
//! # Retractions
//! [`retraction`] turns the mapping of a message whose data the source withdrew (SS-MIX2
//! condition flag `0` on the latest file) into a transaction marking the same records
//! `entered-in-error`.
//!
//! # Times
//! A time written without a UTC offset is placed in [`MappingOptions::time_zone`] with the
//! offset in force at that time ([`zone`]); what cannot be placed for sure is a warning in
//! [`Mapped::warnings`] (an `ERR` with severity `W` in the `AA`) or an error, never a
//! silently shortened value.
//!
//! # Layout
//! - `zone`: where times without an offset happened; `dt`: data types; `adt`: ADT events and A40 merges; `results`: ORU^R01 and OUL^R22;
//!   `orders`: ORM/OML service requests and RDE/RDS/OMP medication; `clinical`: AL1/IAM
//!   allergies, VXU immunizations, PPR problems.

pub mod dt;
pub mod zone;

mod adt;
mod clinical;
mod orders;
mod results;

use std::cell::RefCell;

use serde_json::{Map, Value, json};

use crate::ack::{IdempotencyKey, fnv1a};
use crate::error::{ErrorCode, ErrorDetail, Location, Severity, StructureError};
use crate::message::{Message, Segment};
use crate::structure::structure;

pub use adt::apply_merge;
use dt::{TimeKind, uri_part};
pub use zone::{BadOffset, TimeZone, ZoneRules};

/// Errors of the mapping; each names where in the message the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error(transparent)]
    Structure(Box<StructureError>),
    #[error("{location}: {what} is required")]
    MissingField { location: Location, what: String },
    #[error("{location}: {reason}")]
    InvalidValue { location: Location, reason: String },
    #[error("{message_type} is not mapped to FHIR")]
    Unsupported { message_type: String },
}

impl From<StructureError> for MappingError {
    fn from(e: StructureError) -> Self {
        MappingError::Structure(Box::new(e))
    }
}

impl MappingError {
    /// The ERR segment for this error.
    pub fn detail(&self) -> ErrorDetail {
        let (location, code) = match self {
            MappingError::Structure(e) => return e.detail(),
            MappingError::MissingField { location, .. } => {
                (Some(location.clone()), ErrorCode::RequiredFieldMissing)
            }
            MappingError::InvalidValue { location, .. } => {
                (Some(location.clone()), ErrorCode::DataTypeError)
            }
            MappingError::Unsupported { .. } => (
                Some(Location::field("MSH", 1, 9)),
                ErrorCode::UnsupportedEventCode,
            ),
        };
        ErrorDetail {
            location,
            code,
            severity: Severity::Error,
            message: self.to_string(),
        }
    }
}

/// Options of the mapping.
#[derive(Debug, Clone, Default)]
pub struct MappingOptions {
    /// Where date/times written without a UTC offset happened (SS-MIX2/JAHIS feeds are
    /// Japan Standard Time; the binary passes the host's zone unless told an offset).
    /// `None`: such a dateTime keeps only its date and an instant is read as UTC, each with
    /// a warning (see [`dt::date_time`]).
    pub time_zone: Option<TimeZone>,
}

impl MappingOptions {
    /// Options placing times without an offset at `offset` (`+09:00`).
    pub fn with_utc_offset(offset: &str) -> Result<Self, BadOffset> {
        Ok(MappingOptions {
            time_zone: Some(TimeZone::utc_offset(offset)?),
        })
    }
}

/// An instruction for the EMPI: `retired` patients (MRG-1) were merged into `surviving`
/// (PID-3) by the sender (ADT^A40).
#[derive(Debug, Clone, PartialEq)]
pub struct MergeInstruction {
    /// Identifier (JSON `{system, value}`) of the surviving patient.
    pub surviving: Value,
    /// Identifiers of the patients merged into it.
    pub retired: Vec<Value>,
}

/// The result of mapping one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// A FHIR R4 `Bundle` of type `transaction`.
    pub bundle: Value,
    /// Merges the EMPI must carry out (A40), after or with the bundle.
    pub merges: Vec<MergeInstruction>,
    /// What was mapped with a doubt the sender should hear of (severity `W`, with its
    /// location): a time in an hour its zone repeats, a time kept to its date for want of a
    /// zone. The message is accepted; these go into the `AA` as `ERR` segments.
    pub warnings: Vec<ErrorDetail>,
}

/// Map a message with default options.
pub fn to_transaction(message: &Message) -> Result<Mapped, MappingError> {
    to_transaction_with(message, &MappingOptions::default())
}

/// Map a message to a FHIR transaction Bundle (see the module docs).
pub fn to_transaction_with(
    message: &Message,
    options: &MappingOptions,
) -> Result<Mapped, MappingError> {
    let structured = structure(message)?;
    let mut cx = Cx::new(message, options);
    let code = message.message_code();
    let event = message.trigger_event();
    if code == "ADT" && !message.segments.iter().any(|s| s.id == "EVN") {
        // Accepted (MSH-9 names the event, MSH-7 dates it), but the sender hears of it.
        cx.warnings.borrow_mut().push(ErrorDetail {
            location: Some(Location::segment("MSH", 1)),
            code: ErrorCode::SegmentSequenceError,
            severity: Severity::Warning,
            message: format!(
                "EVN is missing: the v{} {} structure requires it; the event is taken from MSH-9",
                message.version(),
                structured.structure
            ),
        });
    }
    match (code, event) {
        ("ADT", "A40" | "A39" | "A41" | "A42") => adt::merge(&mut cx, &structured)?,
        ("ADT", "A60") => clinical::adverse_reactions(&mut cx, &structured)?,
        ("ADT", _) => adt::adt(&mut cx, &structured, event)?,
        ("ORU", _) | ("OUL", _) => results::results(&mut cx, &structured)?,
        ("ORM", _) | ("OML", _) => orders::service_requests(&mut cx, &structured)?,
        ("RDE", _) | ("RDS", _) | ("OMP", _) => orders::medications(&mut cx, &structured)?,
        ("VXU", _) => clinical::immunizations(&mut cx, &structured)?,
        ("PPR", _) => clinical::problems(&mut cx, &structured)?,
        _ => {
            return Err(MappingError::Unsupported {
                message_type: format!("{code}^{event}"),
            });
        }
    }
    Ok(cx.finish())
}

/// The transaction to write when the source withdrew the data of a message (an SS-MIX2
/// record whose latest file is flagged invalid, `ssmix2::Change::Retracted`):
/// the records the message carried are marked `entered-in-error` (status, or
/// verificationStatus for Condition and AllergyIntolerance); resources other data refer to
/// (Patient, Practitioner, Location) become conditional creates, so a withdrawn admission
/// never rewrites a patient's demographics; the Provenance gets its own id and the
/// `NULLIFY` activity.
pub fn retraction(mapped: &Mapped) -> Value {
    let mut bundle = mapped.bundle.clone();
    let Some(entries) = bundle["entry"].as_array_mut() else {
        return bundle;
    };
    for entry in entries {
        let rtype = entry["resource"]["resourceType"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let Some(resource) = entry["resource"].as_object_mut() else {
            continue;
        };
        match rtype.as_str() {
            "Observation" | "DiagnosticReport" | "ServiceRequest" | "MedicationRequest"
            | "MedicationDispense" | "Immunization" | "Encounter" | "Specimen" => {
                resource.insert("status".into(), json!("entered-in-error"));
            }
            "Condition" | "AllergyIntolerance" => {
                let system = if rtype == "Condition" {
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status"
                } else {
                    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
                };
                resource.remove("clinicalStatus");
                resource.insert(
                    "verificationStatus".into(),
                    dt::concept(system, "entered-in-error", None),
                );
            }
            "Provenance" => {
                let id = format!("{}-r", resource["id"].as_str().unwrap_or("v2"));
                resource.insert("id".into(), json!(id));
                resource.insert(
                    "activity".into(),
                    dt::concept(
                        "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                        "NULLIFY",
                        None,
                    ),
                );
                entry["fullUrl"] = json!(uuid_urn(&format!("Provenance/{id}")));
                entry["request"] = json!({"method": "PUT", "url": format!("Provenance/{id}")});
            }
            _ => {
                if entry["request"]["method"] == "PUT"
                    && let Some((_, query)) = entry["request"]["url"]
                        .as_str()
                        .and_then(|u| u.split_once('?'))
                {
                    entry["request"] =
                        json!({"method": "POST", "url": rtype, "ifNoneExist": query});
                }
            }
        }
    }
    bundle
}

/// How an entry is written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    /// Conditional update on an identifier.
    Update,
    /// Conditional create on an identifier.
    CreateIfNone,
}

struct Entry {
    full_url: String,
    resource: Value,
    request: Value,
}

/// The mapping context: message facts, options and the bundle being built.
pub(crate) struct Cx<'m> {
    pub msg: &'m Message,
    pub opts: &'m MappingOptions,
    /// MSH-4.1 (or MSH-3.1): the sending facility, scope of local identifiers.
    pub facility: String,
    pub source: String,
    entries: Vec<Entry>,
    keys: Vec<(String, usize)>,
    pub merges: Vec<MergeInstruction>,
    /// Reference to the Patient of the current PID.
    pub patient: Option<String>,
    /// Identifier of the current patient (to derive identifiers of patient-scoped records).
    pub patient_key: String,
    pub encounter: Option<String>,
    /// Warnings so far (behind a `RefCell`: times are read through `&Cx`).
    warnings: RefCell<Vec<ErrorDetail>>,
}

impl<'m> Cx<'m> {
    fn new(msg: &'m Message, opts: &'m MappingOptions) -> Self {
        let msh = msg.msh();
        let facility = if msh.comp(4, 1).is_empty() {
            msh.comp(3, 1)
        } else {
            msh.comp(4, 1)
        };
        let facility = if facility.is_empty() {
            "unknown"
        } else {
            facility
        }
        .to_owned();
        let source = format!(
            "urn:renkei:v2:{}:{}#{}",
            uri_part(msh.comp(3, 1)),
            uri_part(msh.comp(4, 1)),
            uri_part(msg.control_id())
        );
        Cx {
            msg,
            opts,
            facility,
            source,
            entries: Vec::new(),
            keys: Vec::new(),
            merges: Vec::new(),
            patient: None,
            patient_key: String::new(),
            encounter: None,
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// Convert a date/time field value.
    pub fn time(
        &self,
        raw: &str,
        kind: TimeKind,
        seg: &Segment,
        field: usize,
    ) -> Result<Option<String>, MappingError> {
        let seq = self.sequence(seg);
        dt::date_time(
            raw,
            kind,
            self.opts.time_zone.as_ref(),
            || Location::field(&seg.id, seq, field),
            &mut self.warnings.borrow_mut(),
        )
    }

    /// The occurrence number of a segment in the message (for locations).
    pub fn sequence(&self, seg: &Segment) -> usize {
        let mut n = 0;
        for s in &self.msg.segments {
            if s.id == seg.id {
                n += 1;
            }
            if std::ptr::eq(s, seg) {
                return n;
            }
        }
        1
    }

    pub fn location(&self, seg: &Segment, field: usize) -> Location {
        Location::field(&seg.id, self.sequence(seg), field)
    }

    /// A derived identifier for records the message gives no identifier for.
    pub fn derived_identifier(&self, kind: &str, parts: &[&str]) -> Value {
        json!({
            "system": format!("urn:renkei:v2:{kind}:{}", uri_part(&self.facility)),
            "value": parts.join("-"),
        })
    }

    /// Add a resource written with a conditional update on `identifier`; returns its
    /// `urn:uuid:` reference (the same one if the same resource was added before).
    pub fn update(&mut self, resource: Value, identifier: &Value) -> String {
        self.add(resource, identifier, Write::Update)
    }

    /// Add a resource written with a conditional create on `identifier`.
    pub fn create_if_none(&mut self, resource: Value, identifier: &Value) -> String {
        self.add(resource, identifier, Write::CreateIfNone)
    }

    fn add(&mut self, mut resource: Value, identifier: &Value, write: Write) -> String {
        let rtype = resource["resourceType"]
            .as_str()
            .unwrap_or("Resource")
            .to_owned();
        let query = format!(
            "identifier={}|{}",
            uri_part(identifier["system"].as_str().unwrap_or("")),
            uri_part(identifier["value"].as_str().unwrap_or(""))
        );
        let key = format!("{rtype}?{query}");
        if let Some((_, i)) = self.keys.iter().find(|(k, _)| *k == key) {
            return self.entries[*i].full_url.clone();
        }
        let full_url = uuid_urn(&key);
        if let Some(obj) = resource.as_object_mut() {
            obj.insert("meta".into(), json!({"source": self.source}));
        }
        let request = match write {
            Write::Update => json!({"method": "PUT", "url": key}),
            Write::CreateIfNone => json!({"method": "POST", "url": rtype, "ifNoneExist": query}),
        };
        self.keys.push((key, self.entries.len()));
        self.entries.push(Entry {
            full_url: full_url.clone(),
            resource,
            request,
        });
        full_url
    }

    /// The resource of an entry already added, by its `urn:uuid:` reference.
    pub fn resource_mut(&mut self, full_url: &str) -> Option<&mut Map<String, Value>> {
        self.entries
            .iter_mut()
            .find(|e| e.full_url == full_url)
            .and_then(|e| e.resource.as_object_mut())
    }

    fn finish(self) -> Mapped {
        let msh = self.msg.msh();
        let key = IdempotencyKey::of(self.msg);
        let key_string = key.map(|k| k.to_key_string()).unwrap_or_default();
        let provenance_id = format!("v2-{:016x}", fnv1a(key_string.as_bytes()));
        let mut warnings = self.warnings.into_inner();
        let msh7 = || Location::field("MSH", 1, 7);
        let recorded = match dt::date_time(
            msh.get(7),
            TimeKind::Instant,
            self.opts.time_zone.as_ref(),
            msh7,
            &mut warnings,
        ) {
            Ok(Some(t)) => t,
            // MSH-7 only dates the Provenance: a message is not refused over it, but the
            // sender hears that its time was not used.
            Ok(None) => {
                warnings.push(ErrorDetail {
                    location: Some(msh7()),
                    code: ErrorCode::RequiredFieldMissing,
                    severity: Severity::Warning,
                    message: "MSH-7 (date/time of message) is empty: Provenance.recorded \
                              is the Unix epoch"
                        .to_owned(),
                });
                EPOCH.to_owned()
            }
            Err(e) => {
                let mut detail = e.detail();
                detail.severity = Severity::Warning;
                detail.message = format!("{}; Provenance.recorded is the Unix epoch", e);
                warnings.push(detail);
                EPOCH.to_owned()
            }
        };
        let targets: Vec<Value> = self
            .entries
            .iter()
            .map(|e| json!({"reference": e.full_url}))
            .collect();
        let message_type = [msh.comp(9, 1), msh.comp(9, 2)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("^");
        // Built by moving values in: `json!` would deep-copy every resource through serde.
        let entry = |full_url: String, resource: Value, request: Value| {
            let mut e = Map::new();
            e.insert("fullUrl".into(), Value::String(full_url));
            e.insert("resource".into(), resource);
            e.insert("request".into(), request);
            Value::Object(e)
        };
        let mut entries: Vec<Value> = self
            .entries
            .into_iter()
            .map(|e| entry(e.full_url, e.resource, e.request))
            .collect();
        if !targets.is_empty() {
            let provenance = json!({
                "resourceType": "Provenance",
                "id": provenance_id,
                "meta": {"source": self.source},
                "target": targets,
                "recorded": recorded,
                "activity": dt::concept(
                    "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "UPDATE", None),
                "agent": [{
                    "type": dt::concept(
                        "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                        "author", None),
                    "who": {
                        "identifier": {"system": "urn:renkei:v2:facility", "value": self.facility},
                        "display": self.facility,
                    },
                }],
                "entity": [{
                    "role": "source",
                    "what": {
                        "identifier": {
                            "system": format!("urn:renkei:v2:message:{}:{}",
                                uri_part(msh.comp(3, 1)), uri_part(msh.comp(4, 1))),
                            "value": self.msg.control_id(),
                        },
                        "display": format!("HL7 v2 {message_type}"),
                    },
                }],
            });
            entries.push(entry(
                uuid_urn(&format!("Provenance/{provenance_id}")),
                provenance,
                json!({"method": "PUT", "url": format!("Provenance/{provenance_id}")}),
            ));
        }
        let mut bundle = Map::new();
        bundle.insert("resourceType".into(), json!("Bundle"));
        bundle.insert("type".into(), json!("transaction"));
        bundle.insert("entry".into(), Value::Array(entries));
        Mapped {
            bundle: Value::Object(bundle),
            merges: self.merges,
            warnings,
        }
    }
}

/// `Provenance.recorded` when MSH-7 gives no usable time.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// A deterministic `urn:uuid:` for a key (two FNV-1a hashes; version nibble 8, "custom").
fn uuid_urn(key: &str) -> String {
    let a = fnv1a(key.as_bytes());
    let b = fnv1a(format!("renkei:{key}").as_bytes());
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "urn:uuid:{}-{}-8{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Insert `key: value` when value is `Some`.
pub(crate) fn put(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        obj.insert(key.to_owned(), v);
    }
}

/// Insert a string when non-empty.
pub(crate) fn put_str(obj: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.trim().is_empty() {
        obj.insert(key.to_owned(), json!(value.trim()));
    }
}
