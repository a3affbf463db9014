//! Conversion functions: `toBoolean()`, `toInteger()`, `toDecimal()`, `toDate()`,
//! `toDateTime()`, `toTime()`, `toQuantity()` and the string forms they accept.

use std::str::FromStr;

use rust_decimal::Decimal;

use crate::quantity::{Quantity, is_calendar_keyword};
use crate::temporal::{PartialDateTime, Precision, TemporalKind};
use crate::value::Value;

pub(super) fn to_boolean<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    Some(Value::Boolean(match v {
        Value::Boolean(b) => *b,
        Value::Integer(1) => true,
        Value::Integer(0) => false,
        Value::Decimal(d) if *d == Decimal::ONE => true,
        Value::Decimal(d) if d.is_zero() => false,
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => true,
            "false" | "f" | "no" | "n" | "0" | "0.0" => false,
            _ => return None,
        },
        _ => return None,
    }))
}

pub(super) fn to_integer<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    match v {
        Value::Integer(i) => Some(Value::Integer(*i)),
        Value::Boolean(b) => Some(Value::Integer(*b as i64)),
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i32>().ok().map(|i| Value::Integer(i as i64)))
                .flatten()
        }
        _ => None,
    }
}

pub(super) fn to_decimal<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    match v {
        Value::Integer(i) => Some(Value::Decimal(Decimal::from(*i))),
        Value::Decimal(d) => Some(Value::Decimal(*d)),
        Value::Boolean(b) => Some(Value::Decimal(if *b {
            Decimal::ONE
        } else {
            Decimal::ZERO
        })),
        Value::String(s) => {
            let body = s.strip_prefix(['+', '-']).unwrap_or(s);
            let (whole, fraction) = body.split_once('.').unwrap_or((body, "0"));
            let ok = !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && !fraction.is_empty()
                && fraction.bytes().all(|b| b.is_ascii_digit());
            ok.then(|| Decimal::from_str(s).ok().map(Value::Decimal))
                .flatten()
        }
        _ => None,
    }
}

pub(super) fn to_date<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    match v {
        Value::Date(d) => Some(Value::Date(*d)),
        Value::DateTime(d) => {
            let mut date = d.truncated(Precision::Day);
            date.kind = TemporalKind::Date;
            Some(Value::Date(date))
        }
        Value::String(s) => PartialDateTime::parse_date(s)
            .or_else(|| {
                PartialDateTime::parse_datetime(s).map(|d| {
                    let mut date = d.truncated(Precision::Day);
                    date.kind = TemporalKind::Date;
                    date
                })
            })
            .map(Value::Date),
        _ => None,
    }
}

pub(super) fn to_datetime<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    match v {
        Value::Date(d) | Value::DateTime(d) => {
            let mut dt = *d;
            dt.kind = TemporalKind::DateTime;
            Some(Value::DateTime(dt))
        }
        Value::String(s) => PartialDateTime::parse_datetime(s).map(Value::DateTime),
        _ => None,
    }
}

pub(super) fn to_time<'a>(v: &Value<'a>) -> Option<Value<'a>> {
    match v {
        Value::Time(t) => Some(Value::Time(*t)),
        Value::String(s) => {
            PartialDateTime::parse_time(s.strip_prefix('T').unwrap_or(s)).map(Value::Time)
        }
        _ => None,
    }
}

pub(super) fn to_quantity(item: &Value<'_>) -> Option<Quantity> {
    match item.to_system()? {
        Value::Quantity(q) => Some(q),
        Value::Integer(i) => Some(Quantity::new(Decimal::from(i), "1")),
        Value::Decimal(d) => Some(Quantity::new(d, "1")),
        Value::Boolean(b) => Some(Quantity::new(
            if b { Decimal::ONE } else { Decimal::ZERO },
            "1",
        )),
        Value::String(s) => parse_quantity(&s),
        _ => None,
    }
}

/// `'4 days'`, `"1 'wk'"`, `'10.5'` as a quantity.
pub(super) fn parse_quantity(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, rest) = s.split_at(end);
    if to_decimal(&Value::str(number)).is_none() && to_integer(&Value::str(number)).is_none() {
        return None;
    }
    let value = Decimal::from_str(number).ok()?;
    let rest = rest.trim();
    let unit = if rest.is_empty() {
        "1".to_string()
    } else if let Some(quoted) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        quoted.to_string()
    } else if is_calendar_keyword(rest) {
        rest.to_string()
    } else {
        return None;
    };
    Some(Quantity::new(value, unit))
}
