//! Instants as the store keeps them: microseconds since the Unix epoch, UTC; and the FHIR date
//! and instant formats parsed into ranges of that unit.

use chrono::{DateTime, NaiveDate, Utc};

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// `2024-01-02T03:04:05.678901Z`.
pub fn format_instant(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "1970-01-01T00:00:00Z".into(),
    }
}

/// The HTTP-date of an instant (`Last-Modified`), to the second.
pub fn format_http_date(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        None => "Thu, 01 Jan 1970 00:00:00 GMT".into(),
    }
}

/// A FHIR `date`, `dateTime` or `instant` as the half-open range `[start, end)` in µs that its
/// precision covers: `2024` is the whole year, `2024-03-01T10:00:00Z` one second.
pub fn parse_range(s: &str) -> Option<(i64, i64)> {
    let s = s.trim();
    let (date_part, time_part) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let parts: Vec<&str> = date_part.split('-').collect();
    let year: i32 = parts
        .first()?
        .parse()
        .ok()
        .filter(|_| parts[0].len() == 4)?;
    let month: Option<u32> = match parts.get(1) {
        Some(m) if m.len() == 2 => Some(m.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    let day: Option<u32> = match parts.get(2) {
        Some(d) if d.len() == 2 => Some(d.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    if parts.len() > 3 {
        return None;
    }
    let Some(time) = time_part else {
        let start = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
        let end = match (month, day) {
            (None, _) => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            (Some(m), None) => {
                if m == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(year, m + 1, 1)?
                }
            }
            (Some(_), Some(_)) => start.succ_opt()?,
        };
        let micros = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_micros())
        };
        return Some((micros(start)?, micros(end)?));
    };
    // A time needs a full date and a zone.
    day?;
    let full = format!("{date_part}T{time}");
    let (t, precision_us) = if let Ok(t) = DateTime::parse_from_rfc3339(&full) {
        let frac_digits = time
            .split_once('.')
            .map(|(_, f)| f.chars().take_while(|c| c.is_ascii_digit()).count())
            .unwrap_or(0);
        let p = 10_i64.pow(6u32.saturating_sub(frac_digits.min(6) as u32));
        (t.with_timezone(&Utc), p)
    } else {
        // hh:mm with zone, no seconds
        let (hm, zone) = split_zone(time)?;
        let t = DateTime::parse_from_rfc3339(&format!("{date_part}T{hm}:00{zone}")).ok()?;
        (t.with_timezone(&Utc), 60_000_000)
    };
    let start = t.timestamp_micros();
    Some((start, start + precision_us))
}

fn split_zone(time: &str) -> Option<(&str, &str)> {
    if let Some(hm) = time.strip_suffix('Z') {
        return Some((hm, "Z"));
    }
    let i = time.rfind(['+', '-'])?;
    Some((&time[..i], &time[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
            .single()
            .map(|t| t.timestamp_micros())
            .unwrap_or_default()
    }

    fn check(input: &str, expected: Option<(i64, i64)>) {
        assert_eq!(parse_range(input), expected, "{input}");
    }

    #[test]
    fn ranges_follow_precision() {
        check("2024", Some((utc(2024, 1, 1), utc(2025, 1, 1))));
        check("2024-12", Some((utc(2024, 12, 1), utc(2025, 1, 1))));
        check("2024-02-28", Some((utc(2024, 2, 28), utc(2024, 2, 29))));
        let t = utc(2024, 2, 28) + 3_600_000_000;
        check("2024-02-28T01:00:00Z", Some((t, t + 1_000_000)));
        check("2024-02-28T02:00:00+01:00", Some((t, t + 1_000_000)));
        check("2024-02-28T01:00:00.5Z", Some((t + 500_000, t + 600_000)));
        check("2024-02-28T01:00Z", Some((t, t + 60_000_000)));
        check("24", None);
        check("2024-2", None);
        check("2024-02-28T01:00:00", None);
        check("yesterday", None);
    }

    #[test]
    fn instants_round_trip_through_the_range_parser() {
        let t = utc(2024, 5, 6) + 123_456;
        let s = format_instant(t);
        assert_eq!(s, "2024-05-06T00:00:00.123456Z");
        assert_eq!(parse_range(&s), Some((t, t + 1)));
    }
}
