//! Where an HL7 v2 time written without a UTC offset happened: a fixed offset
//! (`--hl7-utc-offset +09:00`), or a time zone's rules with their daylight saving time (the
//! host's zone, which the binary supplies as a [`ZoneRules`]: this crate reads no clock and
//! no zone files).
//!
//! A wall-clock time is placed with the offset in force *at that time* in the zone, not
//! today's: `20240715110000` in New York is `-04:00`, `20240115110000` is `-05:00`. Two
//! wall-clock times have no single answer: one in the hour repeated when the clocks go back
//! (placed at the earlier of its two offsets, with a warning) and one in the hour skipped
//! when they go forward (an error: no such time was ever read off a clock there).

use std::fmt;
use std::sync::Arc;

use chrono::{FixedOffset, LocalResult, NaiveDateTime};

/// A time zone's rules: the UTC offset(s) in force at a wall-clock time.
pub trait ZoneRules: Send + Sync + fmt::Debug {
    /// The zone's name, for messages and logs (`America/New_York`).
    fn name(&self) -> &str;

    /// The offsets of a wall-clock time in this zone: `Single` normally, `Ambiguous(earlier,
    /// later)` in an hour the clocks repeat, `None` in an hour they skip.
    fn offsets(&self, local: NaiveDateTime) -> LocalResult<FixedOffset>;
}

/// How times without an offset are placed.
#[derive(Debug, Clone)]
pub enum TimeZone {
    /// Always this offset.
    Fixed(FixedOffset),
    /// The offset a zone's rules give for the time.
    Rules(Arc<dyn ZoneRules>),
}

/// A text that is not a UTC offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a UTC offset (+hh:mm or -hh:mm, at most 14 hours, or Z)")]
pub struct BadOffset(pub String);

impl TimeZone {
    /// A fixed offset from `+09:00`, `+0900`, `-05:00`, `Z`.
    pub fn utc_offset(text: &str) -> Result<TimeZone, BadOffset> {
        parse_offset(text)
            .map(TimeZone::Fixed)
            .ok_or_else(|| BadOffset(text.to_owned()))
    }

    /// `UTC+09:00` for a fixed offset, the zone's name for rules.
    pub fn name(&self) -> String {
        match self {
            TimeZone::Fixed(o) => format!("UTC{}", offset_text(*o)),
            TimeZone::Rules(r) => r.name().to_owned(),
        }
    }

    /// The offsets of a wall-clock time (see [`ZoneRules::offsets`]).
    pub fn offsets(&self, local: NaiveDateTime) -> LocalResult<FixedOffset> {
        match self {
            TimeZone::Fixed(o) => LocalResult::Single(*o),
            TimeZone::Rules(r) => r.offsets(local),
        }
    }
}

/// `+hh:mm` (ISO 8601 / FHIR form; `+00:00` for UTC).
pub fn offset_text(offset: FixedOffset) -> String {
    let secs = offset.local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let minutes = secs.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = match rest.len() {
        5 if rest.as_bytes()[2] == b':' => format!("{}{}", &rest[..2], &rest[3..]),
        4 => rest.to_owned(),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    if minutes >= 60 || hours * 60 + minutes > 14 * 60 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_and_print() {
        for (text, printed) in [
            ("+09:00", "UTC+09:00"),
            ("+0900", "UTC+09:00"),
            ("-05:30", "UTC-05:30"),
            ("Z", "UTC+00:00"),
            ("+14:00", "UTC+14:00"),
        ] {
            assert_eq!(
                TimeZone::utc_offset(text).unwrap().name(),
                printed,
                "{text}"
            );
        }
        for bad in [
            "",
            "09:00",
            "+9",
            "+09:60",
            "+15:00",
            "+0a:00",
            "JST",
            "+09:00:00",
        ] {
            assert!(TimeZone::utc_offset(bad).is_err(), "{bad:?}");
        }
    }
}
