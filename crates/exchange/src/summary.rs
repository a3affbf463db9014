//! The International Patient Summary (IPS, FHIR R4) the hub serves as `Patient/[id]/$summary`:
//! a document Bundle composed from the copies of the nodes' records the hub holds, so it needs
//! no node to be online. [`compose`] owns the rules of that document:
//!
//! - **Whose records.** The person's Patients are the given Patient, every Patient among the
//!   resources, and the Patients the given one links to (`Patient.link.other`, a golden
//!   record's sources). A resource is left out when its `subject` (`patient` for
//!   AllergyIntolerance and Immunization) is a relative literal reference (`Type/id`,
//!   optionally `/_history/vid`) to anything but one of those Patients. Other forms (absolute
//!   URL, `Type?query`, `urn:uuid:`, identifier only, none) do not clearly name someone else,
//!   and the resource is kept.
//! - **Sections** (LOINC codes of the IPS), newest first by the resource's clinical date:
//!   Problems 11450-4 (Condition neither entered-in-error nor refuted, clinicalStatus active,
//!   recurrence, relapse or absent); Allergies and intolerances 48765-2 (AllergyIntolerance
//!   neither entered-in-error nor refuted); Medication summary 10160-0 (MedicationStatement or
//!   MedicationRequest active, intended or on-hold, or a MedicationStatement completed within
//!   the recent window); Immunizations 11369-6 (Immunization completed); Results 30954-2
//!   (laboratory Observation final, amended or corrected within the recent window, at most
//!   [`MAX_RESULTS`]). The first three are required: when empty they say so with an
//!   `emptyReason`; the other two are left out when empty. A partial date (`2024-03`) stands
//!   for its first moment in UTC.
//! - **Duplicates.** One resource per type and id, and one per clinical fact (type, the set of
//!   its code's `system|code`, clinical date, status): the latest `meta.lastUpdated` wins,
//!   then the smallest id. The winner is copied as it came (its `meta.source` included), and
//!   a reference to a dropped duplicate points at the winner.
//! - **References.** Every entry has a `urn:uuid:` fullUrl named by its type and id (so the
//!   same input gives the same document). Inside the entries, references to included
//!   resources become their fullUrls, and references to any of the person's Patients become
//!   the document Patient's; the Patient itself is copied unchanged. Other references stay.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// At most this many results, the newest, go into the Results section.
pub const MAX_RESULTS: usize = 50;

const LOINC: &str = "http://loinc.org";
const LIST_EMPTY_REASON: &str = "http://terminology.hl7.org/CodeSystem/list-empty-reason";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const XHTML_DIV: &str = r#"<div xmlns="http://www.w3.org/1999/xhtml">"#;
/// Prefixed to `Type/id` to name an entry's fullUrl.
const FULL_URL_NAMESPACE: &str = "renkei:summary:";
/// The author's display when the request names none.
const DEFAULT_AUTHOR: &str = "Renkei";

/// What a summary is composed from.
#[derive(Debug, Clone)]
pub struct SummaryRequest<'a> {
    /// The Patient the document is about (for instance a golden record).
    pub patient: &'a Value,
    /// Everything known for the person: any types, several source Patients, duplicates.
    pub resources: &'a [Value],
    /// The document's time (Bundle.timestamp, Composition.date) and the end of the recent window.
    pub now: DateTime<Utc>,
    /// A Reference to the author; `{"display": "Renkei"}` when `None`.
    pub author: Option<Value>,
    /// A UUID: Bundle.identifier is `urn:uuid:<document_id>`, the Composition's id and fullUrl
    /// are made of it too.
    pub document_id: String,
    /// How many days back recent results (and completed medication statements) go.
    pub recent_results_days: i64,
}

/// Why a summary cannot be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    /// The document's subject is not a Patient resource.
    #[error("the summary's subject must be a Patient, found {found}")]
    NotAPatient {
        /// Its resourceType, or "no resourceType".
        found: String,
    },
    /// The Patient has no id to be referred to by.
    #[error("the summary's Patient has no id")]
    PatientWithoutId,
    /// The document id is not a UUID.
    #[error("the document id must be a UUID, found '{document_id}'")]
    DocumentIdNotUuid {
        /// The id given.
        document_id: String,
    },
    /// The author is not a Reference (an object with a reference, identifier or display).
    #[error("the author must be a Reference with a reference, identifier or display")]
    AuthorNotAReference,
    /// The recent window is negative or reaches past the calendar.
    #[error("recent_results_days must be a day count from 0 within the calendar, found {days}")]
    RecentWindowOutOfRange {
        /// The count given.
        days: i64,
    },
}

/// Compose the IPS document Bundle for `request.patient` (see the module docs for the rules).
pub fn compose(request: &SummaryRequest) -> Result<Value, SummaryError> {
    let patient_id = patient_id(request.patient)?;
    let document_id = Uuid::parse_str(&request.document_id)
        .map_err(|_| SummaryError::DocumentIdNotUuid {
            document_id: request.document_id.clone(),
        })?
        .hyphenated()
        .to_string();
    let author = match &request.author {
        None => json!({ "display": DEFAULT_AUTHOR }),
        Some(author) if is_reference(author) => author.clone(),
        Some(_) => return Err(SummaryError::AuthorNotAReference),
    };
    let cutoff = recent_window_start(request.now, request.recent_results_days)?;

    let person = person_patient_ids(request.patient, patient_id, request.resources);
    let held = held_resources(request.resources);

    let (chosen, kept_for) = chosen_sections(&held, &person, cutoff);
    let medications: BTreeMap<_, &Held> = chosen
        .get(&Section::Medications)
        .into_iter()
        .flatten()
        .filter_map(|item| referenced_medication(item, &held))
        .map(|medication| (medication.reference(), medication))
        .collect();
    let included: Vec<&Held> = chosen
        .values()
        .flatten()
        .copied()
        .chain(medications.into_values())
        .collect();
    let patient_url = full_url("Patient", patient_id);
    let targets = reference_targets(&person, &patient_url, &included, kept_for);

    let timestamp = request.now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let sections: Vec<Value> = Section::ALL
        .into_iter()
        .filter_map(|section| {
            let items = chosen.get(&section).map_or(&[][..], Vec::as_slice);
            section_json(section, items, &held)
        })
        .collect();
    let composition = json!({
        "resourceType": "Composition",
        "id": document_id,
        "status": "final",
        "type": { "coding": [{ "system": LOINC, "code": "60591-5", "display": "Patient summary Document" }] },
        "subject": { "reference": patient_url },
        "date": timestamp,
        "author": [author],
        "title": "International Patient Summary",
        "section": sections,
    });

    let mut entries = vec![
        json!({ "fullUrl": format!("urn:uuid:{document_id}"), "resource": composition }),
        json!({ "fullUrl": patient_url, "resource": request.patient }),
    ];
    for item in included {
        let mut resource = item.resource.clone();
        rewrite_references(&mut resource, &targets);
        entries.push(json!({ "fullUrl": item.full_url(), "resource": resource }));
    }
    Ok(json!({
        "resourceType": "Bundle",
        "identifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{document_id}") },
        "type": "document",
        "timestamp": timestamp,
        "entry": entries,
    }))
}

/// Each section's resources: selected by its rule, about the person, one per clinical fact,
/// newest first; with the `Type/id` kept in place of each dropped duplicate's.
fn chosen_sections<'h, 'a>(
    held: &'h BTreeMap<(String, String), Held<'a>>,
    person: &BTreeSet<&str>,
    cutoff: DateTime<Utc>,
) -> (
    BTreeMap<Section, Vec<&'h Held<'a>>>,
    BTreeMap<String, String>,
) {
    let mut chosen: BTreeMap<Section, Vec<&Held>> = BTreeMap::new();
    for item in held.values() {
        if let Some(section) = section_of(item, cutoff)
            && about_person(item, person)
        {
            chosen.entry(section).or_default().push(item);
        }
    }
    let mut kept_for = BTreeMap::new();
    for (section, items) in &mut chosen {
        *items = one_per_fact(std::mem::take(items), &mut kept_for);
        items.sort_by(|a, b| newest_first(a, b));
        if *section == Section::Results {
            items.truncate(MAX_RESULTS);
        }
    }
    (chosen, kept_for)
}

/// Where references go, by `Type/id`: the person's Patients to the document's Patient, each
/// included resource to its fullUrl, and a dropped duplicate to its kept twin's (if included).
fn reference_targets(
    person: &BTreeSet<&str>,
    patient_url: &str,
    included: &[&Held],
    kept_for: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut targets: BTreeMap<String, String> = person
        .iter()
        .map(|id| (format!("Patient/{id}"), patient_url.to_owned()))
        .collect();
    for item in included {
        targets.insert(item.reference(), item.full_url());
    }
    for (dropped, kept) in kept_for {
        if let Some(url) = targets.get(&kept).cloned() {
            targets.entry(dropped).or_insert(url);
        }
    }
    targets
}

/// The IPS sections, in document order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Problems,
    Allergies,
    Medications,
    Immunizations,
    Results,
}

/// How a section presents itself.
#[derive(Debug)]
struct SectionSpec {
    title: &'static str,
    loinc: &'static str,
    loinc_display: &'static str,
    /// Heading of the narrative's first column.
    item: &'static str,
    /// IPS requires the section, with an emptyReason when there is nothing to list.
    required: bool,
}

impl Section {
    const ALL: [Self; 5] = [
        Self::Problems,
        Self::Allergies,
        Self::Medications,
        Self::Immunizations,
        Self::Results,
    ];

    fn spec(self) -> SectionSpec {
        let (title, loinc, loinc_display, item, required) = match self {
            Self::Problems => (
                "Problems",
                "11450-4",
                "Problem list - Reported",
                "Problem",
                true,
            ),
            Self::Allergies => (
                "Allergies and Intolerances",
                "48765-2",
                "Allergies and adverse reactions Document",
                "Substance",
                true,
            ),
            Self::Medications => (
                "Medication Summary",
                "10160-0",
                "History of Medication use Narrative",
                "Medication",
                true,
            ),
            Self::Immunizations => (
                "Immunizations",
                "11369-6",
                "History of Immunization Narrative",
                "Vaccine",
                false,
            ),
            Self::Results => (
                "Results",
                "30954-2",
                "Relevant diagnostic tests/laboratory data Narrative",
                "Test",
                false,
            ),
        };
        SectionSpec {
            title,
            loinc,
            loinc_display,
            item,
            required,
        }
    }
}

/// A resource of the input, with what the rules compare it on.
#[derive(Debug)]
struct Held<'a> {
    resource: &'a Value,
    resource_type: &'a str,
    /// Its id, or (without one) a UUID named by its content.
    id: String,
    last_updated: Option<DateTime<Utc>>,
}

impl<'a> Held<'a> {
    fn new(resource: &'a Value) -> Option<Self> {
        let resource_type = resource.get("resourceType")?.as_str()?;
        let id = match resource.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => name_uuid(&resource.to_string()).to_string(),
        };
        let last_updated = str_at(resource, "/meta/lastUpdated").and_then(instant);
        Some(Self {
            resource,
            resource_type,
            id,
            last_updated,
        })
    }

    /// `Type/id`.
    fn reference(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }

    fn full_url(&self) -> String {
        full_url(self.resource_type, &self.id)
    }

    /// Which of two copies to keep (the greater): the latest `meta.lastUpdated`, then the
    /// smallest type and id, then (for two versions of one resource) the greater JSON text.
    fn keep_order(&self, other: &Self) -> Ordering {
        self.last_updated
            .cmp(&other.last_updated)
            .then_with(|| other.resource_type.cmp(self.resource_type))
            .then_with(|| other.id.cmp(&self.id))
            .then_with(|| self.resource.to_string().cmp(&other.resource.to_string()))
    }
}

/// One resource per type and id: the one to keep of its copies.
fn held_resources(resources: &[Value]) -> BTreeMap<(String, String), Held<'_>> {
    let mut held: BTreeMap<(String, String), Held> = BTreeMap::new();
    for item in resources.iter().filter_map(Held::new) {
        let key = (item.resource_type.to_owned(), item.id.clone());
        match held.get(&key) {
            Some(present) if present.keep_order(&item).is_ge() => {}
            _ => {
                held.insert(key, item);
            }
        }
    }
    held
}

fn patient_id(patient: &Value) -> Result<&str, SummaryError> {
    match patient.get("resourceType").and_then(Value::as_str) {
        Some("Patient") => {}
        found => {
            return Err(SummaryError::NotAPatient {
                found: found.unwrap_or("no resourceType").to_owned(),
            });
        }
    }
    patient
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or(SummaryError::PatientWithoutId)
}

fn is_reference(value: &Value) -> bool {
    value.as_object().is_some_and(|reference| {
        ["reference", "identifier", "display"]
            .iter()
            .any(|key| reference.contains_key(*key))
    })
}

fn recent_window_start(now: DateTime<Utc>, days: i64) -> Result<DateTime<Utc>, SummaryError> {
    let out_of_range = || SummaryError::RecentWindowOutOfRange { days };
    if days < 0 {
        return Err(out_of_range());
    }
    TimeDelta::try_days(days)
        .and_then(|window| now.checked_sub_signed(window))
        .ok_or_else(out_of_range)
}

/// The ids of the person's Patients (see the module docs).
fn person_patient_ids<'a>(
    patient: &'a Value,
    patient_id: &'a str,
    resources: &'a [Value],
) -> BTreeSet<&'a str> {
    let mut ids = BTreeSet::from([patient_id]);
    ids.extend(
        resources
            .iter()
            .filter(|resource| str_at(resource, "/resourceType") == Some("Patient"))
            .filter_map(|resource| str_at(resource, "/id")),
    );
    let links = patient.get("link").and_then(Value::as_array);
    ids.extend(
        links
            .into_iter()
            .flatten()
            .filter_map(|link| relative_reference(str_at(link, "/other/reference")?))
            .filter(|(resource_type, _)| *resource_type == "Patient")
            .map(|(_, id)| id),
    );
    ids
}

/// False when the resource's subject clearly is not one of the person's Patients.
fn about_person(item: &Held, person: &BTreeSet<&str>) -> bool {
    let pointer = match item.resource_type {
        "AllergyIntolerance" | "Immunization" => "/patient/reference",
        _ => "/subject/reference",
    };
    match str_at(item.resource, pointer).and_then(relative_reference) {
        Some((resource_type, id)) => resource_type == "Patient" && person.contains(id),
        None => true,
    }
}

/// The section a resource belongs in, if any.
fn section_of(item: &Held, cutoff: DateTime<Utc>) -> Option<Section> {
    let status = status(item);
    let recent = || {
        last_date(item)
            .and_then(instant)
            .is_some_and(|t| t >= cutoff)
    };
    let refuted = || {
        matches!(
            coded(item.resource.get("verificationStatus")),
            Some("entered-in-error" | "refuted")
        )
    };
    let (section, selected) = match item.resource_type {
        "Condition" => (
            Section::Problems,
            !refuted() && matches!(status, None | Some("active" | "recurrence" | "relapse")),
        ),
        "AllergyIntolerance" => (Section::Allergies, !refuted()),
        "MedicationStatement" | "MedicationRequest" => (
            Section::Medications,
            match status {
                Some("active" | "intended" | "on-hold") => true,
                Some("completed") => item.resource_type == "MedicationStatement" && recent(),
                _ => false,
            },
        ),
        "Immunization" => (Section::Immunizations, status == Some("completed")),
        "Observation" => (
            Section::Results,
            is_laboratory(item.resource)
                && matches!(status, Some("final" | "amended" | "corrected"))
                && recent(),
        ),
        _ => return None,
    };
    selected.then_some(section)
}

fn is_laboratory(observation: &Value) -> bool {
    let categories = observation.get("category").and_then(Value::as_array);
    categories
        .into_iter()
        .flatten()
        .flat_map(codings)
        .any(|coding| {
            str_at(coding, "/code") == Some("laboratory")
                && str_at(coding, "/system").is_none_or(|system| system == OBSERVATION_CATEGORY)
        })
}

/// The status the rules read: `status`, or the code of `clinicalStatus`.
fn status<'a>(item: &Held<'a>) -> Option<&'a str> {
    str_at(item.resource, "/status").or_else(|| coded(item.resource.get("clinicalStatus")))
}

/// What the resource is about: the concept its duplicates are compared on and its narrative names.
fn code_concept<'a>(item: &Held<'a>) -> Option<&'a Value> {
    let element = match item.resource_type {
        "Immunization" => "vaccineCode",
        "MedicationStatement" | "MedicationRequest" => "medicationCodeableConcept",
        _ => "code",
    };
    item.resource.get(element)
}

/// When the fact happened (or, lacking that, was recorded).
fn clinical_date<'a>(item: &Held<'a>) -> Option<&'a str> {
    let pointers: &[&str] = match item.resource_type {
        "Condition" | "AllergyIntolerance" => {
            &["/onsetDateTime", "/onsetPeriod/start", "/recordedDate"]
        }
        "MedicationStatement" => &["/effectiveDateTime", "/effectivePeriod/start"],
        "MedicationRequest" => &["/authoredOn"],
        "Immunization" => &["/occurrenceDateTime"],
        "Observation" => &[
            "/effectiveDateTime",
            "/effectiveInstant",
            "/effectivePeriod/start",
        ],
        _ => &[],
    };
    pointers
        .iter()
        .find_map(|pointer| str_at(item.resource, pointer))
}

/// The last moment the fact held: the end of its effective period, else its clinical date.
fn last_date<'a>(item: &Held<'a>) -> Option<&'a str> {
    str_at(item.resource, "/effectivePeriod/end").or_else(|| clinical_date(item))
}

/// A FHIR date, dateTime or instant as a moment; a partial date is its first moment in UTC.
fn instant(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(moment) = DateTime::parse_from_rfc3339(value) {
        return Some(moment.with_timezone(&Utc));
    }
    let day = match value.len() {
        4 => format!("{value}-01-01"),
        7 => format!("{value}-01"),
        10 => value.to_owned(),
        _ => return None,
    };
    let midnight = NaiveDate::parse_from_str(&day, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)?;
    Some(midnight.and_utc())
}

/// One clinical fact: resources equal on it are duplicates.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Fact<'a> {
    resource_type: &'a str,
    /// The code's `system|code` pairs, sorted.
    codes: Vec<String>,
    /// The clinical date; a dateTime in UTC, so that one moment written in two offsets is equal.
    date: Option<String>,
    status: Option<&'a str>,
}

/// The fact a resource states, when it is coded.
fn fact_of<'a>(item: &Held<'a>) -> Option<Fact<'a>> {
    let mut codes: Vec<String> = codings(code_concept(item)?)
        .filter_map(|coding| {
            let code = str_at(coding, "/code")?;
            Some(format!(
                "{}|{code}",
                str_at(coding, "/system").unwrap_or("")
            ))
        })
        .collect();
    if codes.is_empty() {
        return None;
    }
    codes.sort();
    codes.dedup();
    let date = clinical_date(item).map(|date| match instant(date) {
        Some(moment) if date.len() > 10 => moment.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        _ => date.to_owned(),
    });
    Some(Fact {
        resource_type: item.resource_type,
        codes,
        date,
        status: status(item),
    })
}

/// The items with one per clinical fact; `kept_for` learns which one replaced each dropped one.
fn one_per_fact<'h, 'a>(
    items: Vec<&'h Held<'a>>,
    kept_for: &mut BTreeMap<String, String>,
) -> Vec<&'h Held<'a>> {
    let mut kept = Vec::with_capacity(items.len());
    let mut by_fact: BTreeMap<Fact, Vec<&Held>> = BTreeMap::new();
    for item in items {
        match fact_of(item) {
            Some(fact) => by_fact.entry(fact).or_default().push(item),
            None => kept.push(item),
        }
    }
    for same in by_fact.into_values() {
        let Some(best) = same.iter().copied().max_by(|a, b| a.keep_order(b)) else {
            continue;
        };
        for other in same.iter().filter(|other| !std::ptr::eq(**other, best)) {
            kept_for.insert(other.reference(), best.reference());
        }
        kept.push(best);
    }
    kept
}

/// Newest clinical date first, undated last, then by type and id.
fn newest_first(a: &Held, b: &Held) -> Ordering {
    let when = |item: &Held| clinical_date(item).and_then(instant);
    when(b)
        .cmp(&when(a))
        .then_with(|| a.resource_type.cmp(b.resource_type))
        .then_with(|| a.id.cmp(&b.id))
}

/// The Medication a MedicationStatement or MedicationRequest refers to, when it is held.
fn referenced_medication<'h, 'a>(
    item: &Held,
    held: &'h BTreeMap<(String, String), Held<'a>>,
) -> Option<&'h Held<'a>> {
    let reference = str_at(item.resource, "/medicationReference/reference")?;
    match relative_reference(reference)? {
        ("Medication", id) => held.get(&("Medication".to_owned(), id.to_owned())),
        _ => None,
    }
}

/// `Type/id` or `Type/id/_history/vid` as (Type, id); `None` for any other form of reference.
fn relative_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.split('/');
    let (resource_type, id) = (parts.next()?, parts.next()?);
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => {}
        (Some("_history"), Some(version), None) if !version.is_empty() => {}
        _ => return None,
    }
    let type_ok = resource_type.starts_with(|c: char| c.is_ascii_uppercase())
        && resource_type.chars().all(|c| c.is_ascii_alphanumeric());
    let id_ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (type_ok && id_ok).then_some((resource_type, id))
}

/// Point every relative reference found in `targets` (by `Type/id`) at its fullUrl.
fn rewrite_references(value: &mut Value, targets: &BTreeMap<String, String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("reference")
                && let Some((resource_type, id)) = relative_reference(reference)
                && let Some(url) = targets.get(&format!("{resource_type}/{id}"))
            {
                *reference = url.clone();
            }
            object
                .values_mut()
                .for_each(|value| rewrite_references(value, targets));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|value| rewrite_references(value, targets)),
        _ => {}
    }
}

/// A Composition section listing `items`, or `None` for an empty optional section.
fn section_json(
    section: Section,
    items: &[&Held],
    held: &BTreeMap<(String, String), Held>,
) -> Option<Value> {
    let spec = section.spec();
    let code = json!({ "coding": [{ "system": LOINC, "code": spec.loinc, "display": spec.loinc_display }] });
    if items.is_empty() {
        return spec.required.then(|| {
            json!({
                "title": spec.title,
                "code": code,
                "text": {
                    "status": "generated",
                    "div": format!("{XHTML_DIV}<p>No information is available.</p></div>"),
                },
                "emptyReason": { "coding": [{ "system": LIST_EMPTY_REASON, "code": "unavailable", "display": "Unavailable" }] },
            })
        });
    }
    let mut headings = vec![spec.item, "Date", "Status"];
    if section == Section::Results {
        headings.push("Value");
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            let mut cells = vec![
                item_name(item, held),
                clinical_date(item).unwrap_or_default().to_owned(),
                status(item).unwrap_or_default().to_owned(),
            ];
            if section == Section::Results {
                cells.push(observation_value(item.resource));
            }
            cells
        })
        .collect();
    let entries: Vec<Value> = items
        .iter()
        .map(|item| json!({ "reference": item.full_url() }))
        .collect();
    Some(json!({
        "title": spec.title,
        "code": code,
        "text": { "status": "generated", "div": narrative_table(&headings, &rows) },
        "entry": entries,
    }))
}

/// An XHTML div holding a table of `rows`, every value escaped.
fn narrative_table(headings: &[&str], rows: &[Vec<String>]) -> String {
    let mut div = format!("{XHTML_DIV}<table><thead><tr>");
    for heading in headings {
        div.push_str(&format!("<th>{}</th>", escape_xml(heading)));
    }
    div.push_str("</tr></thead><tbody>");
    for row in rows {
        div.push_str("<tr>");
        for cell in row {
            div.push_str(&format!("<td>{}</td>", escape_xml(cell)));
        }
        div.push_str("</tr>");
    }
    div.push_str("</tbody></table></div>");
    div
}

/// What the narrative calls a resource: its code's text or display, else (for a medication
/// given by reference) the held Medication's, else the reference's display.
fn item_name(item: &Held, held: &BTreeMap<(String, String), Held>) -> String {
    let named = code_concept(item).and_then(concept_text).or_else(|| {
        referenced_medication(item, held)
            .and_then(|medication| medication.resource.get("code"))
            .and_then(concept_text)
            .or_else(|| str_at(item.resource, "/medicationReference/display"))
    });
    named.unwrap_or("(not coded)").to_owned()
}

/// An Observation's value as text: a quantity with its unit, a concept or a string.
fn observation_value(observation: &Value) -> String {
    if let Some(quantity) = observation.get("valueQuantity") {
        let number = match quantity.get("value") {
            Some(Value::Number(number)) => number.to_string(),
            _ => String::new(),
        };
        let unit = str_at(quantity, "/unit").or_else(|| str_at(quantity, "/code"));
        return [Some(number.as_str()), unit]
            .into_iter()
            .flatten()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
    }
    observation
        .get("valueCodeableConcept")
        .and_then(concept_text)
        .or_else(|| str_at(observation, "/valueString"))
        .unwrap_or_default()
        .to_owned()
}

fn concept_text(concept: &Value) -> Option<&str> {
    str_at(concept, "/text")
        .or_else(|| codings(concept).find_map(|coding| str_at(coding, "/display")))
        .or_else(|| codings(concept).find_map(|coding| str_at(coding, "/code")))
}

/// The first code of a CodeableConcept (a status such as `clinicalStatus`).
fn coded(concept: Option<&Value>) -> Option<&str> {
    codings(concept?).find_map(|coding| str_at(coding, "/code"))
}

fn codings(concept: &Value) -> impl Iterator<Item = &Value> {
    concept
        .get("coding")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer)?.as_str()
}

fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// `urn:uuid:` of the UUID named by `Type/id`.
fn full_url(resource_type: &str, id: &str) -> String {
    format!(
        "urn:uuid:{}",
        name_uuid(&format!("{FULL_URL_NAMESPACE}{resource_type}/{id}"))
    )
}

/// The UUID named by `name`: version 8 made of the first 16 bytes of its SHA-256 (the
/// name-based construction of RFC 9562 appendix B.2), so one name always gives one UUID.
fn name_uuid(name: &str) -> Uuid {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_references_are_type_slash_id_with_an_optional_version() {
        assert_eq!(relative_reference("Patient/a-1"), Some(("Patient", "a-1")));
        assert_eq!(
            relative_reference("Patient/a/_history/2"),
            Some(("Patient", "a"))
        );
        for other in [
            "https://node/fhir/Patient/a",
            "Patient?identifier=x|1",
            "urn:uuid:0b6a8f5e-0000-4000-8000-000000000000",
            "#contained",
            "Patient/",
            "Patient/a/b",
            "patient/a",
        ] {
            assert_eq!(relative_reference(other), None, "{other}");
        }
    }

    #[test]
    fn partial_dates_are_their_first_moment_and_offsets_are_honoured() {
        let moment = |text: &str| instant(text).map(|t| t.to_rfc3339());
        assert_eq!(moment("2024").as_deref(), Some("2024-01-01T00:00:00+00:00"));
        assert_eq!(
            moment("2024-03").as_deref(),
            Some("2024-03-01T00:00:00+00:00")
        );
        assert_eq!(
            moment("2024-03-05T10:00:00-05:00").as_deref(),
            Some("2024-03-05T15:00:00+00:00")
        );
        assert_eq!(moment("2023-02-29"), None);
        assert_eq!(moment("soon"), None);
    }

    #[test]
    fn names_give_the_same_version_8_uuid_every_time() {
        let uuid = name_uuid("renkei:summary:Condition/1");
        assert_eq!(uuid, name_uuid("renkei:summary:Condition/1"));
        assert_ne!(uuid, name_uuid("renkei:summary:Condition/2"));
        assert_eq!(uuid.get_version_num(), 8);
    }

    #[test]
    fn xml_special_characters_are_escaped() {
        assert_eq!(
            escape_xml(r#"a<b & "c">'d'"#),
            "a&lt;b &amp; &quot;c&quot;&gt;&apos;d&apos;"
        );
    }
}
