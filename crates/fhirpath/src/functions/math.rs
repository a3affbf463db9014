//! Math functions (`abs()` ... `truncate()`, `log()`, `power()`) and the precision functions
//! `lowBoundary()` / `highBoundary()`.

use rust_decimal::Decimal;
use rust_decimal::prelude::{MathematicalOps, ToPrimitive};

use crate::error::EvalError;
use crate::eval::Result;
use crate::quantity::Quantity;
use crate::temporal::{Precision, TemporalKind};
use crate::value::Value;

pub(super) fn number(item: &Value<'_>, function: &str) -> Result<Decimal> {
    match item.to_system() {
        Some(Value::Integer(i)) => Ok(Decimal::from(i)),
        Some(Value::Decimal(d)) => Ok(d),
        _ => Err(EvalError::typ(function, "applies to numbers")),
    }
}

pub(super) fn math1<'a>(name: &str, item: &Value<'a>) -> Result<Option<Value<'a>>> {
    if let Some(Value::Quantity(q)) = item.to_system()
        && name == "abs"
    {
        return Ok(Some(Value::Quantity(Quantity::new(q.value.abs(), q.unit))));
    }
    let integer = matches!(item.to_system(), Some(Value::Integer(_)));
    let d = number(item, name)?;
    let to_int = |d: Decimal| d.to_i64().map(Value::Integer);
    Ok(match name {
        "abs" if integer => to_int(d.abs()),
        "abs" => Some(Value::Decimal(d.abs())),
        "ceiling" => to_int(d.ceil()),
        "floor" => to_int(d.floor()),
        "truncate" => to_int(d.trunc()),
        "exp" => d.checked_exp().map(Value::Decimal),
        "ln" => (d > Decimal::ZERO)
            .then(|| d.checked_ln())
            .flatten()
            .map(Value::Decimal),
        _ => (d >= Decimal::ZERO)
            .then(|| d.sqrt())
            .flatten()
            .map(Value::Decimal),
    })
}

pub(super) fn math2<'a>(
    name: &str,
    item: &Value<'a>,
    other: &Value<'a>,
) -> Result<Option<Value<'a>>> {
    let integers = matches!(
        (item.to_system(), other.to_system()),
        (Some(Value::Integer(_)), Some(Value::Integer(_)))
    );
    let (x, y) = (number(item, name)?, number(other, name)?);
    Ok(match name {
        "log" => {
            if x <= Decimal::ZERO || y <= Decimal::ZERO || y == Decimal::ONE {
                None
            } else {
                match (x.checked_ln(), y.checked_ln()) {
                    // Both logarithms carry rounding error in the last digits; 16 places is far
                    // beyond FHIRPath's required precision and makes 16.log(2) exactly 4.
                    (Some(a), Some(b)) => a
                        .checked_div(b)
                        .map(|r| Value::Decimal(r.round_dp(16).normalize())),
                    _ => None,
                }
            }
        }
        _ => {
            if integers && y >= Decimal::ZERO {
                let (base, exp) = (x.to_i64().unwrap_or(0), y.to_u32().unwrap_or(0));
                base.checked_pow(exp).map(Value::Integer)
            } else if x < Decimal::ZERO && y.fract() != Decimal::ZERO {
                None
            } else {
                x.checked_powd(y).map(Value::Decimal)
            }
        }
    })
}

pub(super) fn boundary<'a>(
    item: &Value<'a>,
    digits: Option<i64>,
    high: bool,
    name: &str,
) -> Result<Option<Value<'a>>> {
    match item.to_system() {
        Some(Value::Integer(i)) => {
            Ok(decimal_boundary(Decimal::from(i), 0, digits, high).map(Value::Decimal))
        }
        Some(Value::Decimal(d)) => {
            Ok(decimal_boundary(d, d.scale(), digits, high).map(Value::Decimal))
        }
        Some(Value::Quantity(q)) => Ok(decimal_boundary(q.value, q.value.scale(), digits, high)
            .map(|v| Value::Quantity(Quantity::new(v, q.unit)))),
        Some(Value::Date(d)) | Some(Value::DateTime(d)) | Some(Value::Time(d)) => {
            let mut d = d;
            // A date-time to the hour is not valid FHIR: it stands for the minute.
            if d.kind == TemporalKind::DateTime && d.precision == Precision::Hour {
                d.precision = Precision::Minute;
            }
            Ok(d.boundary(digits, high).map(|b| match b.kind {
                TemporalKind::Date if b.precision > Precision::Day => Value::DateTime(b),
                TemporalKind::Date => Value::Date(b),
                TemporalKind::DateTime => Value::DateTime(b),
                TemporalKind::Time => Value::Time(b),
            }))
        }
        _ => Err(EvalError::typ(
            name,
            "applies to numbers, quantities, dates and times",
        )),
    }
}

/// The lowest / highest decimal `d` (written with `scale` digits) could stand for, at `digits`
/// precision (default 8). The end away from zero is rounded half-up, the end toward zero is
/// truncated, and negative values mirror positive ones, as the FHIRPath suite expects
/// (`1.587.lowBoundary(2)` is `1.58`, `(-1.587).lowBoundary(2)` is `-1.59`).
pub(super) fn decimal_boundary(
    d: Decimal,
    scale: u32,
    digits: Option<i64>,
    high: bool,
) -> Option<Decimal> {
    use rust_decimal::RoundingStrategy::{MidpointAwayFromZero, ToZero};
    let digits = u32::try_from(digits.unwrap_or(8))
        .ok()
        .filter(|d| *d <= 28)?;
    let negative = d.is_sign_negative() && !d.is_zero();
    let half = Decimal::new(5, scale.min(27) + 1);
    let mut out = if high != negative {
        (d.abs() + half).round_dp_with_strategy(digits, MidpointAwayFromZero)
    } else {
        (d.abs() - half).round_dp_with_strategy(digits, ToZero)
    };
    out.rescale(digits);
    out.set_sign_negative(negative);
    Some(out)
}
