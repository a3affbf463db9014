//! Dates, date-times and times with partial precision, as FHIRPath and FHIR use them.
//!
//! `@2014`, `@2014-05`, `@2014-05-06T10:30` and `@T10:30:00.123` keep the precision they were
//! written with: comparing values of different precision can be *uncertain* (an empty result),
//! arithmetic keeps the precision of the value, and `lowBoundary()` / `highBoundary()` widen it.
//! Calendar arithmetic is delegated to `chrono`; this module only tracks precision and time zones.

use std::cmp::Ordering;
use std::fmt;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// How much of a date/time is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `2014`
    Year,
    /// `2014-05`
    Month,
    /// `2014-05-06`
    Day,
    /// `2014-05-06T10`
    Hour,
    /// `2014-05-06T10:30`
    Minute,
    /// `2014-05-06T10:30:15`
    Second,
    /// `2014-05-06T10:30:15.123`
    Millisecond,
}

/// Whether a value is a date, a date-time or a time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    /// A calendar date (precision year to day), no zone.
    Date,
    /// A date with optional time of day and zone.
    DateTime,
    /// A time of day (precision hour to millisecond), no date, no zone.
    Time,
}

/// A date, date-time or time with its precision. Fields beyond the precision are zero
/// (month and day are 1). For a time, the date fields are unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialDateTime {
    /// Date, date-time or time.
    pub kind: TemporalKind,
    /// Calendar year.
    pub year: i32,
    /// 1-12
    pub month: u8,
    /// 1-31
    pub day: u8,
    /// 0-23
    pub hour: u8,
    /// 0-59
    pub minute: u8,
    /// 0-59
    pub second: u8,
    /// 0-999
    pub millis: u16,
    /// The finest component known.
    pub precision: Precision,
    /// Zone offset east of UTC in minutes, when given (date-times only).
    pub offset: Option<i32>,
}

fn digits<const N: usize>(s: &str) -> Option<u32> {
    (s.len() == N && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

impl PartialDateTime {
    fn empty(kind: TemporalKind, precision: Precision) -> Self {
        PartialDateTime {
            kind,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            millis: 0,
            precision,
            offset: None,
        }
    }

    /// Parses `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
    pub fn parse_date(s: &str) -> Option<Self> {
        let mut value = Self::empty(TemporalKind::Date, Precision::Year);
        value.set_date(s)?;
        Some(value)
    }

    fn set_date(&mut self, s: &str) -> Option<()> {
        let mut parts = s.split('-');
        self.year = digits::<4>(parts.next()?)? as i32;
        self.precision = Precision::Year;
        if let Some(month) = parts.next() {
            self.month = digits::<2>(month).filter(|m| (1..=12).contains(m))? as u8;
            self.precision = Precision::Month;
            if let Some(day) = parts.next() {
                let day = digits::<2>(day)?;
                NaiveDate::from_ymd_opt(self.year, self.month as u32, day)?;
                self.day = day as u8;
                self.precision = Precision::Day;
            }
        }
        parts.next().is_none().then_some(())
    }

    /// Parses a time of day `hh[:mm[:ss[.fff]]]` (no zone).
    pub fn parse_time(s: &str) -> Option<Self> {
        let mut value = Self::empty(TemporalKind::Time, Precision::Hour);
        value.set_time(s)?;
        Some(value)
    }

    fn set_time(&mut self, s: &str) -> Option<()> {
        let mut parts = s.split(':');
        self.hour = digits::<2>(parts.next()?).filter(|h| *h < 24)? as u8;
        self.precision = Precision::Hour;
        if let Some(minute) = parts.next() {
            self.minute = digits::<2>(minute).filter(|m| *m < 60)? as u8;
            self.precision = Precision::Minute;
            if let Some(second) = parts.next() {
                let (whole, fraction) = match second.split_once('.') {
                    Some((w, f)) => (w, Some(f)),
                    None => (second, None),
                };
                self.second = digits::<2>(whole).filter(|s| *s < 60)? as u8;
                self.precision = Precision::Second;
                if let Some(fraction) = fraction {
                    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    let ms: String = fraction.chars().chain("00".chars()).take(3).collect();
                    self.millis = ms.parse().ok()?;
                    self.precision = Precision::Millisecond;
                }
            }
        }
        parts.next().is_none().then_some(())
    }

    /// Parses a date-time `YYYY[-MM[-DD]]T[hh[:mm[:ss[.fff]]]][Z|+hh:mm|-hh:mm]`, also the
    /// FHIR form without `T` for date-only values (`2014-05-06`).
    pub fn parse_datetime(s: &str) -> Option<Self> {
        let mut value = Self::empty(TemporalKind::DateTime, Precision::Year);
        let Some((date, time)) = s.split_once('T') else {
            value.set_date(s)?;
            return Some(value);
        };
        value.set_date(date)?;
        if time.is_empty() {
            return Some(value);
        }
        let (clock, zone) = if let Some(clock) = time.strip_suffix('Z') {
            (clock, Some(0))
        } else if let Some(i) = time.rfind(['+', '-']) {
            let (clock, zone) = time.split_at(i);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            let h = digits::<2>(h).filter(|h| *h <= 14)? as i32;
            let m = digits::<2>(m).filter(|m| *m < 60)? as i32;
            (clock, Some(sign * (h * 60 + m)))
        } else {
            (time, None)
        };
        if value.precision != Precision::Day {
            return None;
        }
        value.set_time(clock)?;
        value.offset = zone;
        Some(value)
    }

    /// The number of digits of the value's precision, as `precision()` reports it
    /// (4 for a year, 17 for a date-time to the millisecond, 9 for a time to the millisecond).
    pub fn precision_digits(&self) -> i64 {
        let full = match self.precision {
            Precision::Year => 4,
            Precision::Month => 6,
            Precision::Day => 8,
            Precision::Hour => 10,
            Precision::Minute => 12,
            Precision::Second => 14,
            Precision::Millisecond => 17,
        };
        if self.kind == TemporalKind::Time {
            full - 8
        } else {
            full
        }
    }

    fn precision_from_digits(kind: TemporalKind, digits: i64) -> Option<Precision> {
        let digits = if kind == TemporalKind::Time {
            digits + 8
        } else {
            digits
        };
        Some(match digits {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            17 => Precision::Millisecond,
            _ => return None,
        })
    }

    fn naive(&self) -> Option<NaiveDateTime> {
        let date = if self.kind == TemporalKind::Time {
            NaiveDate::from_ymd_opt(2000, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(self.year, self.month as u32, self.day as u32)?
        };
        let time = NaiveTime::from_hms_milli_opt(
            self.hour as u32,
            self.minute as u32,
            self.second as u32,
            self.millis as u32,
        )?;
        Some(date.and_time(time))
    }

    fn with_naive(&self, dt: NaiveDateTime) -> Self {
        let mut out = *self;
        out.year = dt.year();
        out.month = dt.month() as u8;
        out.day = dt.day() as u8;
        out.hour = dt.hour() as u8;
        out.minute = dt.minute() as u8;
        out.second = dt.second() as u8;
        out.millis = (dt.nanosecond() / 1_000_000).min(999) as u16;
        out.clear_below_precision();
        out
    }

    fn clear_below_precision(&mut self) {
        let p = self.precision;
        if p < Precision::Month && self.kind != TemporalKind::Time {
            self.month = 1;
        }
        if p < Precision::Day && self.kind != TemporalKind::Time {
            self.day = 1;
        }
        if p < Precision::Hour {
            self.hour = 0;
            self.offset = None;
        }
        if p < Precision::Minute {
            self.minute = 0;
        }
        if p < Precision::Second {
            self.second = 0;
        }
        if p < Precision::Millisecond {
            self.millis = 0;
        }
    }

    /// The value moved to UTC when it has a zone and a time of day.
    fn to_utc(self) -> Self {
        match (self.offset, self.precision >= Precision::Hour) {
            (Some(offset), true) if offset != 0 => match self.naive() {
                Some(naive) => {
                    let mut utc = self.with_naive(naive - Duration::minutes(offset as i64));
                    utc.offset = Some(0);
                    utc
                }
                None => self,
            },
            _ => self,
        }
    }

    /// Compares two values; `None` when the answer depends on components one of them lacks.
    /// Seconds and milliseconds count as one precision, as FHIRPath requires.
    pub fn partial_compare(&self, other: &Self) -> Option<Ordering> {
        let timed = |d: &Self| d.precision >= Precision::Hour && d.kind == TemporalKind::DateTime;
        if timed(self) && timed(other) && self.offset.is_some() != other.offset.is_some() {
            // One side has no zone: it could be in any zone from -12:00 to +14:00, and the
            // answer is certain only if it is the same for both extremes.
            let (zoned, local, flip) = if self.offset.is_some() {
                (self, other, false)
            } else {
                (other, self, true)
            };
            let early = Self {
                offset: Some(14 * 60),
                ..*local
            };
            let late = Self {
                offset: Some(-12 * 60),
                ..*local
            };
            let a = zoned.compare_same_zone_rule(&early)?;
            let b = zoned.compare_same_zone_rule(&late)?;
            return (a == b).then(|| if flip { a.reverse() } else { a });
        }
        self.compare_same_zone_rule(other)
    }

    fn compare_same_zone_rule(&self, other: &Self) -> Option<Ordering> {
        let (a, b) = if self.offset.is_some() && other.offset.is_some() {
            (self.to_utc(), other.to_utc())
        } else {
            (*self, *other)
        };
        let seconds = |p: Precision| {
            if p == Precision::Millisecond {
                Precision::Second
            } else {
                p
            }
        };
        let (pa, pb) = (seconds(a.precision), seconds(b.precision));
        let shared = pa.min(pb);
        let date_fields = self.kind != TemporalKind::Time && other.kind != TemporalKind::Time;
        let steps: [(Precision, i64, i64); 6] = [
            (Precision::Year, a.year as i64, b.year as i64),
            (Precision::Month, a.month as i64, b.month as i64),
            (Precision::Day, a.day as i64, b.day as i64),
            (Precision::Hour, a.hour as i64, b.hour as i64),
            (Precision::Minute, a.minute as i64, b.minute as i64),
            (
                Precision::Second,
                a.second as i64 * 1000 + a.millis as i64,
                b.second as i64 * 1000 + b.millis as i64,
            ),
        ];
        for (precision, x, y) in steps {
            if !date_fields && precision <= Precision::Day {
                continue;
            }
            if precision > shared {
                break;
            }
            match x.cmp(&y) {
                Ordering::Equal => {}
                unequal => return Some(unequal),
            }
        }
        (pa == pb).then_some(Ordering::Equal)
    }

    /// Adds a calendar duration. `amount` is in `unit` (`year`, `month`, `week`, `day`, `hour`,
    /// `minute`, `second`, `millisecond`); the result keeps this value's precision, and an
    /// amount finer than the precision is converted to it (25 hours on a date is 1 day).
    pub fn add(&self, amount: rust_decimal::Decimal, unit: &str) -> Option<Self> {
        use rust_decimal::prelude::ToPrimitive;
        let whole = amount.trunc().to_i64()?;
        let naive = self.naive()?;
        let result = match unit {
            "year" => add_months(naive, whole.checked_mul(12)?)?,
            "month" => {
                if self.precision == Precision::Year {
                    add_months(naive, whole / 12 * 12)?
                } else {
                    add_months(naive, whole)?
                }
            }
            _ => {
                let millis = match unit {
                    "week" => whole.checked_mul(7 * 86_400_000)?,
                    "day" => whole.checked_mul(86_400_000)?,
                    "hour" => whole.checked_mul(3_600_000)?,
                    "minute" => whole.checked_mul(60_000)?,
                    // Calendar semantics above the millisecond: a fraction of a second is ignored.
                    "second" => whole.checked_mul(1000)?,
                    "millisecond" => whole,
                    _ => return None,
                };
                // Truncate the duration to the value's precision.
                let unit_ms: i64 = match self.precision {
                    Precision::Year => {
                        return Some(
                            self.with_naive(add_months(naive, millis / (365 * 86_400_000) * 12)?),
                        );
                    }
                    Precision::Month => {
                        return Some(
                            self.with_naive(add_months(naive, millis / (30 * 86_400_000))?),
                        );
                    }
                    Precision::Day => 86_400_000,
                    Precision::Hour => 3_600_000,
                    Precision::Minute => 60_000,
                    Precision::Second => 1000,
                    Precision::Millisecond => 1,
                };
                naive.checked_add_signed(Duration::milliseconds(millis / unit_ms * unit_ms))?
            }
        };
        if self.kind == TemporalKind::Time {
            let mut out = self.with_naive(result);
            out.year = 0;
            return Some(out);
        }
        (1..=9999)
            .contains(&result.year())
            .then(|| self.with_naive(result))
    }

    /// The earliest (`high == false`) or latest value this one could stand for, at the
    /// precision given in digits (default: the finest). Missing zones become +14:00 / -12:00.
    pub fn boundary(&self, digits: Option<i64>, high: bool) -> Option<Self> {
        let precision = match digits {
            Some(d) => Self::precision_from_digits(self.kind, d)?,
            None => match self.kind {
                TemporalKind::Date => Precision::Day,
                _ => Precision::Millisecond,
            },
        };
        if self.kind == TemporalKind::Date && precision > Precision::Day {
            return None;
        }
        let mut out = *self;
        if precision > self.precision {
            if self.precision < Precision::Month && self.kind != TemporalKind::Time {
                out.month = if high { 12 } else { 1 };
            }
            if self.precision < Precision::Day && self.kind != TemporalKind::Time {
                out.day = if high {
                    days_in_month(out.year, out.month)
                } else {
                    1
                };
            }
            if self.precision < Precision::Hour {
                out.hour = if high { 23 } else { 0 };
            }
            if self.precision < Precision::Minute {
                out.minute = if high { 59 } else { 0 };
            }
            if self.precision < Precision::Second {
                out.second = if high { 59 } else { 0 };
            }
            if self.precision < Precision::Millisecond {
                out.millis = if high { 999 } else { 0 };
            }
        }
        out.precision = precision;
        if out.kind == TemporalKind::DateTime
            && precision >= Precision::Hour
            && out.offset.is_none()
        {
            out.offset = Some(if high { -12 * 60 } else { 14 * 60 });
        }
        out.clear_below_precision();
        Some(out)
    }

    /// This value with the precision cut to `precision` (no rounding).
    pub fn truncated(&self, precision: Precision) -> Self {
        let mut out = *self;
        out.precision = out.precision.min(precision);
        out.clear_below_precision();
        out
    }

    /// The current date-time to the millisecond, in the local zone.
    pub fn now() -> Self {
        let now = chrono::Local::now();
        let mut out = Self::empty(TemporalKind::DateTime, Precision::Millisecond);
        out = out.with_naive(now.naive_local());
        out.offset = Some(now.offset().local_minus_utc() / 60);
        out
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month as u32 + 1)
    };
    NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day() as u8)
        .unwrap_or(28)
}

fn add_months(dt: NaiveDateTime, months: i64) -> Option<NaiveDateTime> {
    let total = dt.year() as i64 * 12 + (dt.month0() as i64) + months;
    let year = i32::try_from(total.div_euclid(12)).ok()?;
    let month = (total.rem_euclid(12) + 1) as u8;
    let day = (dt.day() as u8).min(days_in_month(year, month));
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).map(|d| d.and_time(dt.time()))
}

impl fmt::Display for PartialDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != TemporalKind::Time {
            write!(f, "{:04}", self.year)?;
            if self.precision >= Precision::Month {
                write!(f, "-{:02}", self.month)?;
            }
            if self.precision >= Precision::Day {
                write!(f, "-{:02}", self.day)?;
            }
            if self.kind == TemporalKind::Date || self.precision < Precision::Hour {
                return Ok(());
            }
            f.write_str("T")?;
        }
        write!(f, "{:02}", self.hour)?;
        if self.precision >= Precision::Minute {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= Precision::Millisecond {
            write!(f, ".{:03}", self.millis)?;
        }
        match self.offset {
            Some(0) => f.write_str("Z"),
            Some(offset) => {
                let sign = if offset < 0 { '-' } else { '+' };
                write!(f, "{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60)
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(s: &str) -> PartialDateTime {
        PartialDateTime::parse_datetime(s).unwrap()
    }

    #[test]
    fn parses_and_prints_every_precision() {
        for s in [
            "2014",
            "2014-05",
            "2014-05-06",
            "2014-05-06T10",
            "2014-05-06T10:30",
            "2014-05-06T10:30:15",
            "2014-05-06T10:30:15.123+02:00",
            "2014-05-06T10:30:15Z",
        ] {
            assert_eq!(dt(s).to_string(), s);
        }
        assert!(PartialDateTime::parse_date("2014-13").is_none());
        assert!(PartialDateTime::parse_date("2014-02-30").is_none());
        assert!(PartialDateTime::parse_time("24:00").is_none());
    }

    #[test]
    fn comparison_is_uncertain_across_precisions() {
        assert_eq!(
            dt("2012-04-15").partial_compare(&dt("2012-04-15T10:00")),
            None
        );
        assert_eq!(
            dt("2012-04-15").partial_compare(&dt("2012-04-16T10:00")),
            Some(Ordering::Less)
        );
        assert_eq!(
            dt("2012-04-15T15:30:31").partial_compare(&dt("2012-04-15T15:30:31.0")),
            Some(Ordering::Equal)
        );
        assert_eq!(
            dt("2017-11-05T01:30:00.0-04:00").partial_compare(&dt("2017-11-05T01:15:00.0-05:00")),
            Some(Ordering::Less)
        );
    }

    #[test]
    fn calendar_arithmetic_clamps_to_month_end() {
        let d = PartialDateTime::parse_date("2016-01-31").unwrap();
        assert_eq!(d.add(1.into(), "month").unwrap().to_string(), "2016-02-29");
        assert_eq!(d.add(25.into(), "hour").unwrap().to_string(), "2016-02-01");
    }
}
