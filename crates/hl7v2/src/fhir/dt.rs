//! HL7 v2 data types to FHIR R4 data types (CX -> Identifier, XPN -> HumanName, XAD ->
//! Address, XTN -> ContactPoint, CE/CWE -> CodeableConcept, DTM -> dateTime/instant, NM/SN ->
//! Quantity/Range/Ratio), following the v2-to-FHIR IG data type maps where they exist.

use chrono::{FixedOffset, LocalResult, NaiveDate};
use serde_json::{Map, Value, json};

use super::MappingError;
use super::zone::{TimeZone, offset_text};
use crate::error::{ErrorCode, ErrorDetail, Location, Severity};
use crate::message::{Component, Repetition};

/// The FHIR extension JP Core uses for a name's representation (ideographic / phonetic).
pub const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";

/// Percent-encode what may not appear in a URI or a search value (keeps `A-Za-z0-9-._~:/`).
pub fn uri_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A coding system URI for an HL7 v2 coding-system name (table 0396 and JAHIS names).
pub fn code_system(name: &str) -> String {
    match name {
        "LN" | "LOINC" => "http://loinc.org".into(),
        "SCT" | "SNM" => "http://snomed.info/sct".into(),
        "UCUM" | "ANS+" => "http://unitsofmeasure.org".into(),
        "I10" | "I10C" => "http://hl7.org/fhir/sid/icd-10".into(),
        "I10CM" | "ICD10CM" => "http://hl7.org/fhir/sid/icd-10-cm".into(),
        "I9C" => "http://hl7.org/fhir/sid/icd-9-cm".into(),
        "CVX" => "http://hl7.org/fhir/sid/cvx".into(),
        "MVX" => "http://terminology.hl7.org/CodeSystem/MVX".into(),
        "NDC" => "http://hl7.org/fhir/sid/ndc".into(),
        "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm".into(),
        // JAHIS / SS-MIX2 code systems, by their registered OIDs.
        "JC10" => "urn:oid:1.2.392.200119.4.504".into(),
        "HOT" | "HOT9" => "urn:oid:1.2.392.200119.4.403.1".into(),
        "HOT13" => "urn:oid:1.2.392.200119.4.402.1".into(),
        "YJ" => "urn:oid:1.2.392.100495.20.1.73".into(),
        "MDCDX2" => "urn:oid:1.2.392.200119.4.101.6".into(),
        "JAMISDP01" => "urn:oid:1.2.392.200250.2.2.20.20".into(),
        _ if name.starts_with("HL7") && name.len() == 7 => {
            format!("http://terminology.hl7.org/CodeSystem/v2-{}", &name[3..])
        }
        _ => format!("urn:renkei:v2:codesystem:{}", uri_part(name)),
    }
}

/// CE/CWE (code^text^system^alt code^alt text^alt system) to a CodeableConcept; `None` when
/// empty.
pub fn codeable_concept(rep: Option<&Repetition>) -> Option<Value> {
    let rep = rep?;
    let mut codings = Vec::new();
    for (code, display, system) in [(1, 2, 3), (4, 5, 6)] {
        let code_v = rep.get(code);
        if code_v.is_empty() {
            continue;
        }
        let mut coding = Map::new();
        let sys = rep.get(system);
        if !sys.is_empty() {
            coding.insert("system".into(), json!(code_system(sys)));
        }
        coding.insert("code".into(), json!(code_v.trim()));
        if !rep.get(display).is_empty() {
            coding.insert("display".into(), json!(rep.get(display)));
        }
        codings.push(Value::Object(coding));
    }
    let text = rep.get(2);
    let text = if text.is_empty() { rep.get(9) } else { text };
    if codings.is_empty() && text.is_empty() {
        return None;
    }
    let mut cc = Map::new();
    if !codings.is_empty() {
        cc.insert("coding".into(), Value::Array(codings));
    }
    if !text.is_empty() {
        cc.insert("text".into(), json!(text));
    }
    Some(Value::Object(cc))
}

/// A CodeableConcept with one coding of a known system.
pub fn concept(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut coding = json!({"system": system, "code": code});
    if let Some(d) = display {
        coding["display"] = json!(d);
    }
    json!({"coding": [coding]})
}

/// The identifier system for an assigning authority (HD: namespace^universal id^type):
/// `urn:oid:` for ISO ids, the URI itself for URI ids, otherwise a Renkei URN naming the
/// namespace, or the sending facility when the authority is empty (JAHIS writes `ID^^^^PI`,
/// patient ids local to the hospital).
pub fn identifier_system(authority: Option<&Component>, facility: &str, kind: &str) -> String {
    let (namespace, universal, utype) =
        authority.map_or(("", "", ""), |c| (c.sub(1), c.sub(2), c.sub(3)));
    match utype {
        "ISO" if !universal.is_empty() => return format!("urn:oid:{universal}"),
        "URI" | "URL" if !universal.is_empty() => return universal.to_owned(),
        _ => {}
    }
    if !namespace.is_empty() {
        return format!("urn:renkei:id:{}", uri_part(namespace));
    }
    let kind = if kind.is_empty() { "id" } else { kind };
    format!(
        "urn:renkei:id:{}:{}",
        uri_part(facility),
        uri_part(&kind.to_lowercase())
    )
}

/// CX (id^check^scheme^authority^type^facility) to an Identifier; `None` when the id is empty.
pub fn identifier(rep: &Repetition, facility: &str) -> Option<Value> {
    let value = rep.get(1).trim();
    if value.is_empty() {
        return None;
    }
    let kind = rep.get(5);
    let mut id = json!({
        "system": identifier_system(rep.component(4), facility, kind),
        "value": value,
    });
    if !kind.is_empty() {
        id["type"] = concept("http://terminology.hl7.org/CodeSystem/v2-0203", kind, None);
    }
    Some(id)
}

/// XPN (family^given^middle^suffix^prefix^degree^type^representation) to a HumanName, with
/// the JP Core representation extension (`I` -> IDE, `P` -> SYL, `A` -> ABC).
pub fn human_name(rep: &Repetition) -> Option<Value> {
    let family = rep.get(1);
    let given: Vec<&str> = [rep.get(2), rep.get(3)]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    if family.is_empty() && given.is_empty() {
        return None;
    }
    let mut name = Map::new();
    let representation = match rep.get(8) {
        "I" => Some("IDE"),
        "P" => Some("SYL"),
        "A" => Some("ABC"),
        _ => None,
    };
    if let Some(code) = representation {
        name.insert(
            "extension".into(),
            json!([{"url": EN_REPRESENTATION, "valueCode": code}]),
        );
    }
    let usage = match rep.get(7) {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" => Some("maiden"),
        "N" => Some("nickname"),
        "A" | "S" => Some("anonymous"),
        "T" => Some("temp"),
        _ => None,
    };
    if let Some(u) = usage {
        name.insert("use".into(), json!(u));
    }
    let text: Vec<&str> = std::iter::once(family)
        .chain(given.iter().copied())
        .filter(|p| !p.is_empty())
        .collect();
    name.insert("text".into(), json!(text.join(" ")));
    if !family.is_empty() {
        name.insert("family".into(), json!(family));
    }
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if !rep.get(4).is_empty() {
        name.insert("suffix".into(), json!([rep.get(4)]));
    }
    if !rep.get(5).is_empty() {
        name.insert("prefix".into(), json!([rep.get(5)]));
    }
    Some(Value::Object(name))
}

/// XAD (street^other^city^state^zip^country^type) to an Address.
pub fn address(rep: &Repetition) -> Option<Value> {
    if rep.is_empty() {
        return None;
    }
    let mut a = Map::new();
    let lines: Vec<&str> = [rep.get(1), rep.get(2)]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let usage = match rep.get(7) {
        "H" | "P" => Some("home"),
        "B" | "O" => Some("work"),
        "C" => Some("temp"),
        "BA" | "BDL" => Some("old"),
        _ => None,
    };
    if let Some(u) = usage {
        a.insert("use".into(), json!(u));
    }
    let text: Vec<&str> = [
        rep.get(6),
        rep.get(5),
        rep.get(4),
        rep.get(3),
        rep.get(1),
        rep.get(2),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    if !text.is_empty() {
        a.insert("text".into(), json!(text.join(" ")));
    }
    if !lines.is_empty() {
        a.insert("line".into(), json!(lines));
    }
    for (n, key) in [(3, "city"), (4, "state"), (5, "postalCode"), (6, "country")] {
        if !rep.get(n).is_empty() {
            a.insert(key.into(), json!(rep.get(n)));
        }
    }
    Some(Value::Object(a))
}

/// XTN (number^use^equipment^email^country^area^local^ext) to a ContactPoint.
pub fn contact_point(rep: &Repetition, default_use: &str) -> Option<Value> {
    let equipment = rep.get(3);
    let email = rep.get(4);
    let (system, value) = if !email.is_empty() || equipment == "Internet" || equipment == "X.400" {
        (
            "email",
            if email.is_empty() { rep.get(1) } else { email }.to_owned(),
        )
    } else {
        // XTN-12 (unformatted number, as JAHIS writes it), else area code and local number
        // (XTN-6, XTN-7), else the deprecated XTN-1.
        let composed = if !rep.get(12).is_empty() {
            rep.get(12).to_owned()
        } else if !rep.get(7).is_empty() {
            format!("{}{}", rep.get(6), rep.get(7))
        } else {
            rep.get(1).to_owned()
        };
        let system = match equipment {
            "FX" => "fax",
            "BP" => "pager",
            _ => "phone",
        };
        (system, composed)
    };
    if value.trim().is_empty() {
        return None;
    }
    let usage = match (rep.get(2), equipment) {
        (_, "CP") => "mobile",
        ("WPN", _) => "work",
        ("PRN" | "ORN" | "VHN" | "NET", _) => "home",
        ("EMR", _) => "home",
        _ => default_use,
    };
    Some(json!({"system": system, "value": value.trim(), "use": usage}))
}

/// Precision of a converted HL7 date/time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeKind {
    /// FHIR `date`.
    Date,
    /// FHIR `dateTime`: a date, or a time of day with its UTC offset.
    DateTime,
    /// FHIR `instant`: always to the second with an offset.
    Instant,
}

/// Convert an HL7 DTM/TS/DT (`YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]`) to FHIR.
///
/// A time without an offset is placed in `zone` with the offset in force at that time (see
/// [`super::zone`]): in an hour the zone repeats it takes the earlier offset and a warning
/// is pushed to `warnings`; in an hour the zone skips it is an error. Without a zone, a
/// `dateTime` keeps only its date and an `instant` is read as UTC, each with a warning: a
/// time of day is never dropped silently. Dates must exist in the calendar (`19990230` is
/// an error).
pub fn date_time(
    raw: &str,
    kind: TimeKind,
    zone: Option<&TimeZone>,
    location: impl Fn() -> Location,
    warnings: &mut Vec<ErrorDetail>,
) -> Result<Option<String>, MappingError> {
    let raw = raw.trim();
    if raw.is_empty() || raw == "\"\"" {
        return Ok(None);
    }
    let invalid = |why: &str| MappingError::InvalidValue {
        location: location(),
        reason: format!("{raw:?} is not an HL7 date/time ({why})"),
    };
    let syntax = "YYYY[MM[DD[HHMM[SS]]]][+ZZZZ] expected";
    let (body, offset) = match raw.find(['+', '-']) {
        Some(i) => (&raw[..i], Some(&raw[i..])),
        None => (raw, None),
    };
    let (digits, fraction) = match body.find('.') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14)
        || fraction.is_some_and(|f| {
            f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) || digits.len() != 14
        })
    {
        return Err(invalid(syntax));
    }
    let offset = match offset {
        Some(o) => match TimeZone::utc_offset(o) {
            Ok(TimeZone::Fixed(fixed)) if o.len() == 5 => Some(fixed),
            _ => return Err(invalid(syntax)),
        },
        None => None,
    };
    let num = |a: usize, b: usize| digits[a..b].parse::<u32>().unwrap_or(0);
    let (y, mo, d) = (&digits[..4], digits.get(4..6), digits.get(6..8));
    if mo.is_some() && !(1..=12).contains(&num(4, 6)) {
        return Err(invalid("no such month"));
    }
    let day = match d {
        Some(_) => Some(
            NaiveDate::from_ymd_opt(num(0, 4) as i32, num(4, 6), num(6, 8))
                .ok_or_else(|| invalid("no such day in the calendar"))?,
        ),
        None => None,
    };
    if digits.len() >= 10 && num(8, 10) > 23
        || digits.len() >= 12 && num(10, 12) > 59
        || digits.len() >= 14 && num(12, 14) > 60
    {
        return Err(invalid("no such time of day"));
    }
    let date = match (mo, d) {
        (Some(m), Some(d)) => format!("{y}-{m}-{d}"),
        (Some(m), None) => format!("{y}-{m}"),
        _ => y.to_owned(),
    };
    let has_time = digits.len() >= 10;
    match kind {
        TimeKind::Date => return Ok(Some(date)),
        // A date (or month, or year) is a dateTime of that precision; it has no offset.
        TimeKind::DateTime if !has_time => return Ok(Some(date)),
        TimeKind::Instant if day.is_none() => return Err(invalid("an instant needs a day")),
        _ => {}
    }
    let day = day.expect("a time of day comes with its day");
    let (hh, mm, ss) = (
        if has_time { num(8, 10) } else { 0 },
        if digits.len() >= 12 { num(10, 12) } else { 0 },
        if digits.len() >= 14 { num(12, 14) } else { 0 },
    );
    let frac = fraction.map(|f| format!(".{f}")).unwrap_or_default();
    let text = |offset: FixedOffset| {
        let zone = offset_text(offset);
        let zone = if zone == "+00:00" {
            "Z".to_owned()
        } else {
            zone
        };
        format!("{date}T{hh:02}:{mm:02}:{ss:02}{frac}{zone}")
    };
    if let Some(offset) = offset {
        return Ok(Some(text(offset)));
    }
    let warn = |message: String| ErrorDetail {
        location: Some(location()),
        code: ErrorCode::DataTypeError,
        severity: Severity::Warning,
        message,
    };
    let Some(zone) = zone else {
        return Ok(Some(match kind {
            TimeKind::Instant => {
                warnings.push(warn(format!(
                    "{raw:?} has no UTC offset and no time zone is configured: read as UTC"
                )));
                text(FixedOffset::east_opt(0).expect("UTC"))
            }
            _ => {
                warnings.push(warn(format!(
                    "{raw:?} has no UTC offset and no time zone is configured: \
                     only its date is kept"
                )));
                date
            }
        }));
    };
    // A leap second is placed as the second before it.
    let wall = day.and_hms_opt(hh, mm, ss.min(59)).expect("checked above");
    match zone.offsets(wall) {
        LocalResult::Single(offset) => Ok(Some(text(offset))),
        LocalResult::Ambiguous(earlier, later) => {
            warnings.push(warn(format!(
                "{raw:?} is in the hour {} repeats when its clocks go back: read as {} \
                 (not {}); send the UTC offset to say which",
                zone.name(),
                offset_text(earlier),
                offset_text(later)
            )));
            Ok(Some(text(earlier)))
        }
        LocalResult::None => Err(MappingError::InvalidValue {
            location: location(),
            reason: format!(
                "{raw:?} is in the hour {} skips when its clocks go forward: no clock there \
                 showed that time; send the UTC offset",
                zone.name()
            ),
        }),
    }
}

/// An HL7 NM as a JSON number (FHIR decimals keep their written precision).
pub fn decimal(raw: &str) -> Option<Value> {
    let t = raw.trim();
    let t = t.strip_prefix('+').unwrap_or(t);
    let valid = !t.is_empty()
        && t.bytes().filter(|b| *b == b'.').count() <= 1
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
        && t.trim_start_matches('-')
            .bytes()
            .any(|b| b.is_ascii_digit());
    if !valid {
        return None;
    }
    let t = if t.starts_with('.') {
        format!("0{t}")
    } else if t.starts_with("-.") {
        format!("-0{}", &t[1..])
    } else {
        t.to_owned()
    };
    let t = t.strip_suffix('.').map(str::to_owned).unwrap_or(t);
    serde_json::from_str::<Value>(&t).ok()
}

/// A Quantity from a value and a CE/CWE unit (UCUM system and code when OBX-6.3 says UCUM).
pub fn quantity(value: Value, unit: Option<&Repetition>) -> Value {
    let mut q = Map::new();
    q.insert("value".into(), value);
    if let Some(u) = unit.filter(|u| !u.is_empty()) {
        let code = u.get(1);
        let text = if u.get(2).is_empty() { code } else { u.get(2) };
        if !text.is_empty() {
            q.insert("unit".into(), json!(text));
        }
        let sys = u.get(3);
        if matches!(sys, "UCUM" | "ANS+" | "ISO+") && !code.is_empty() {
            q.insert("system".into(), json!("http://unitsofmeasure.org"));
            q.insert("code".into(), json!(code));
        }
    }
    Value::Object(q)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Datelike, Duration, NaiveDateTime, Weekday};

    use super::*;
    use crate::fhir::zone::ZoneRules;

    /// US Eastern time as the rules have been since 2007: daylight saving time from the
    /// second Sunday in March, 02:00, to the first Sunday in November, 02:00.
    #[derive(Debug)]
    struct Eastern;

    impl ZoneRules for Eastern {
        fn name(&self) -> &str {
            "America/New_York"
        }

        fn offsets(&self, local: NaiveDateTime) -> LocalResult<FixedOffset> {
            let sunday = |month: u32, nth: u8| {
                NaiveDate::from_weekday_of_month_opt(local.year(), month, Weekday::Sun, nth)
                    .unwrap()
                    .and_hms_opt(2, 0, 0)
                    .unwrap()
            };
            let (start, end) = (sunday(3, 2), sunday(11, 1));
            let (edt, est) = (
                FixedOffset::west_opt(4 * 3600).unwrap(),
                FixedOffset::west_opt(5 * 3600).unwrap(),
            );
            let hour = Duration::hours(1);
            if local >= start && local < start + hour {
                LocalResult::None
            } else if local >= end - hour && local < end {
                LocalResult::Ambiguous(edt, est)
            } else if local >= start + hour && local < end - hour {
                LocalResult::Single(edt)
            } else {
                LocalResult::Single(est)
            }
        }
    }

    fn dt(raw: &str, kind: TimeKind, zone: Option<&TimeZone>) -> Option<String> {
        let mut warnings = Vec::new();
        let out = date_time(raw, kind, zone, Location::default, &mut warnings).unwrap();
        assert_eq!(warnings, [], "{raw}");
        out
    }

    fn fixed(text: &str) -> TimeZone {
        TimeZone::utc_offset(text).unwrap()
    }

    #[test]
    fn dates() {
        let tokyo = fixed("+09:00");
        assert_eq!(dt("19700101", TimeKind::Date, None).unwrap(), "1970-01-01");
        assert_eq!(
            dt("202601021304", TimeKind::DateTime, Some(&tokyo)).unwrap(),
            "2026-01-02T13:04:00+09:00"
        );
        assert_eq!(
            dt("2026010213", TimeKind::DateTime, Some(&tokyo)).unwrap(),
            "2026-01-02T13:00:00+09:00"
        );
        assert_eq!(
            dt("20260102130405.123-0500", TimeKind::Instant, None).unwrap(),
            "2026-01-02T13:04:05.123-05:00"
        );
        // The value's own offset wins over the zone.
        assert_eq!(
            dt("20260102130405+0000", TimeKind::DateTime, Some(&tokyo)).unwrap(),
            "2026-01-02T13:04:05Z"
        );
        assert_eq!(
            dt("20260102", TimeKind::Instant, Some(&tokyo)).unwrap(),
            "2026-01-02T00:00:00+09:00"
        );
        // A date is a dateTime of that precision: nothing to place.
        assert_eq!(
            dt("20260102", TimeKind::DateTime, None).unwrap(),
            "2026-01-02"
        );
        assert_eq!(dt("202601", TimeKind::DateTime, None).unwrap(), "2026-01");
        let err = |raw: &str| {
            date_time(
                raw,
                TimeKind::Date,
                None,
                Location::default,
                &mut Vec::new(),
            )
            .is_err()
        };
        assert!(err("2026-01-02"));
        assert!(err("20261302"));
        assert!(err("20260102+09"));
        // Calendar validity, not just ranges.
        assert!(err("19990230"));
        assert!(err("20230229"));
        assert!(!err("20240229"));
    }

    #[test]
    fn without_a_zone_the_time_is_not_dropped_silently() {
        let mut warnings = Vec::new();
        let location = || Location::field("OBX", 1, 14);
        let out = date_time(
            "20240115110000",
            TimeKind::DateTime,
            None,
            location,
            &mut warnings,
        );
        assert_eq!(out.unwrap().unwrap(), "2024-01-15");
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].severity, Severity::Warning);
        assert_eq!(warnings[0].location, Some(location()));
        assert!(
            warnings[0].message.contains("only its date"),
            "{warnings:?}"
        );
        let out = date_time("20240115", TimeKind::Instant, None, location, &mut warnings);
        assert_eq!(out.unwrap().unwrap(), "2024-01-15T00:00:00Z");
        assert!(warnings[1].message.contains("read as UTC"), "{warnings:?}");
    }

    #[test]
    fn a_zone_places_each_time_with_the_offset_of_its_date() {
        let ny = TimeZone::Rules(Arc::new(Eastern));
        // Winter and summer: the offset in force at that time, not today's.
        assert_eq!(
            dt("20240115110000", TimeKind::DateTime, Some(&ny)).unwrap(),
            "2024-01-15T11:00:00-05:00"
        );
        assert_eq!(
            dt("20240715110000", TimeKind::DateTime, Some(&ny)).unwrap(),
            "2024-07-15T11:00:00-04:00"
        );
        // Either side of the spring change.
        assert_eq!(
            dt("202403100159", TimeKind::DateTime, Some(&ny)).unwrap(),
            "2024-03-10T01:59:00-05:00"
        );
        assert_eq!(
            dt("202403100300", TimeKind::DateTime, Some(&ny)).unwrap(),
            "2024-03-10T03:00:00-04:00"
        );
        // 02:30 on that day never happened in New York: an error naming the field.
        let location = || Location::field("OBX", 2, 14);
        let err = date_time(
            "202403100230",
            TimeKind::DateTime,
            Some(&ny),
            location,
            &mut Vec::new(),
        )
        .unwrap_err();
        assert_eq!(err.detail().location, Some(location()));
        assert_eq!(err.detail().severity, Severity::Error);
        assert!(err.to_string().contains("skips"), "{err}");
        // 01:30 on the autumn day happened twice: the earlier, with a warning.
        let mut warnings = Vec::new();
        let out = date_time(
            "202411030130",
            TimeKind::DateTime,
            Some(&ny),
            location,
            &mut warnings,
        );
        assert_eq!(out.unwrap().unwrap(), "2024-11-03T01:30:00-04:00");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].severity, Severity::Warning);
        assert!(warnings[0].message.contains("-05:00"), "{warnings:?}");
    }

    #[test]
    fn numbers() {
        assert_eq!(decimal("13.50").unwrap().to_string(), "13.50");
        assert_eq!(decimal(".5").unwrap().to_string(), "0.5");
        assert_eq!(decimal("abc"), None);
        assert_eq!(decimal("1.2.3"), None);
    }
}
