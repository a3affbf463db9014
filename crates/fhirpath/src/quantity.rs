//! Quantities and the UCUM units FHIRPath compares and multiplies.
//!
//! A [`Quantity`] is a decimal value with a unit: a UCUM code (`'mg'`, `'mm[Hg]'`, `'10*3/uL'`)
//! or a calendar duration keyword (`year`, `weeks`). To compare `4 'g'` with `4000 'mg'`, both
//! are brought to a canonical form: a factor to UCUM base units and a dimension vector
//! (length, mass, time, amount, temperature, current, luminosity). This module parses UCUM
//! unit expressions (prefixes, `.`, `/`, exponents, `10*n`, annotations) with a table of the
//! units clinical data uses; a unit it does not know is comparable only to itself.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Calendar duration keywords, singular and plural, as the grammar accepts them.
const CALENDAR_KEYWORDS: [&str; 16] = [
    "year",
    "years",
    "month",
    "months",
    "week",
    "weeks",
    "day",
    "days",
    "hour",
    "hours",
    "minute",
    "minutes",
    "second",
    "seconds",
    "millisecond",
    "milliseconds",
];

/// Whether `word` is a calendar duration keyword (`day`, `weeks`, ...).
pub fn is_calendar_keyword(word: &str) -> bool {
    CALENDAR_KEYWORDS.contains(&word)
}

/// The singular calendar unit of a keyword (`"days"` -> `"day"`).
pub fn calendar_unit(word: &str) -> Option<&'static str> {
    CALENDAR_KEYWORDS
        .iter()
        .position(|k| *k == word)
        .map(|i| CALENDAR_KEYWORDS[i - i % 2])
}

/// The calendar unit a UCUM time code stands for in date arithmetic, where that is exact
/// (`'wk'`, `'d'`, `'h'`, `'min'`, `'s'`, `'ms'`). UCUM `'a'` and `'mo'` are mean lengths,
/// not calendar years and months, so they have none.
pub fn ucum_calendar_unit(code: &str) -> Option<&'static str> {
    Some(match code {
        "wk" => "week",
        "d" => "day",
        "h" => "hour",
        "min" => "minute",
        "s" => "second",
        "ms" => "millisecond",
        _ => return None,
    })
}

/// A value with a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    /// The amount.
    pub value: Decimal,
    /// A UCUM code or a calendar keyword as written (`"mg"`, `"days"`). `"1"` when unitless.
    pub unit: String,
}

/// Exponents of the seven base dimensions: m, g, s, mol, K, A, cd.
type Dimensions = [i8; 7];

/// A unit brought to base units: `value_in_base = value * factor` (+ `offset` for Cel/degF).
#[derive(Debug, Clone, PartialEq)]
struct Canonical {
    factor: Decimal,
    offset: Decimal,
    dims: Dimensions,
    /// Units outside the base system that are only comparable to themselves ([iU], [arb'U]).
    arbitrary: Vec<(String, i8)>,
}

impl Canonical {
    fn unity() -> Self {
        Canonical {
            factor: Decimal::ONE,
            offset: Decimal::ZERO,
            dims: [0; 7],
            arbitrary: Vec::new(),
        }
    }

    fn comparable(&self, other: &Canonical) -> bool {
        self.dims == other.dims && self.arbitrary == other.arbitrary
    }

    fn pow(&self, exp: i8) -> Option<Canonical> {
        let mut out = Canonical::unity();
        for _ in 0..exp.unsigned_abs() {
            out = out.mul(self, false)?;
        }
        if exp < 0 {
            out = Canonical::unity().mul(&out, true)?;
        }
        Some(out)
    }

    fn mul(&self, other: &Canonical, divide: bool) -> Option<Canonical> {
        let sign = if divide { -1 } else { 1 };
        let mut dims = self.dims;
        for (d, o) in dims.iter_mut().zip(other.dims) {
            *d = d.checked_add(sign * o)?;
        }
        let mut arbitrary = self.arbitrary.clone();
        for (name, exp) in &other.arbitrary {
            match arbitrary.iter_mut().find(|(n, _)| n == name) {
                Some((_, e)) => *e += sign * exp,
                None => arbitrary.push((name.clone(), sign * exp)),
            }
        }
        arbitrary.retain(|(_, e)| *e != 0);
        arbitrary.sort();
        let factor = if divide {
            self.factor.checked_div(other.factor)?
        } else {
            self.factor.checked_mul(other.factor)?
        };
        Some(Canonical {
            factor,
            offset: Decimal::ZERO,
            dims,
            arbitrary,
        })
    }

    /// The canonical unit as a UCUM string (`"g.m-1"`, `"m2"`, `"1"`).
    fn unit_string(&self) -> String {
        const NAMES: [&str; 7] = ["m", "g", "s", "mol", "K", "A", "cd"];
        let mut parts: Vec<String> = NAMES
            .iter()
            .zip(self.dims)
            .filter(|(_, e)| *e != 0)
            .map(|(n, e)| {
                if e == 1 {
                    n.to_string()
                } else {
                    format!("{n}{e}")
                }
            })
            .collect();
        parts.extend(self.arbitrary.iter().map(|(n, e)| {
            if *e == 1 {
                n.clone()
            } else {
                format!("{n}{e}")
            }
        }));
        if parts.is_empty() {
            "1".to_string()
        } else {
            parts.join(".")
        }
    }
}

struct Atom {
    code: &'static str,
    factor: &'static str,
    dims: Dimensions,
    metric: bool,
}

const fn atom(code: &'static str, factor: &'static str, dims: Dimensions, metric: bool) -> Atom {
    Atom {
        code,
        factor,
        dims,
        metric,
    }
}

const LENGTH: Dimensions = [1, 0, 0, 0, 0, 0, 0];
const MASS: Dimensions = [0, 1, 0, 0, 0, 0, 0];
const TIME: Dimensions = [0, 0, 1, 0, 0, 0, 0];
const AMOUNT: Dimensions = [0, 0, 0, 1, 0, 0, 0];
const TEMPERATURE: Dimensions = [0, 0, 0, 0, 1, 0, 0];
const CURRENT: Dimensions = [0, 0, 0, 0, 0, 1, 0];
const LUMINOSITY: Dimensions = [0, 0, 0, 0, 0, 0, 1];
const NONE: Dimensions = [0; 7];
const VOLUME: Dimensions = [3, 0, 0, 0, 0, 0, 0];
const FREQUENCY: Dimensions = [0, 0, -1, 0, 0, 0, 0];
const PRESSURE: Dimensions = [-1, 1, -2, 0, 0, 0, 0];
const ENERGY: Dimensions = [2, 1, -2, 0, 0, 0, 0];
const POWER: Dimensions = [2, 1, -3, 0, 0, 0, 0];
const FORCE: Dimensions = [1, 1, -2, 0, 0, 0, 0];
const CATALYTIC: Dimensions = [0, 0, -1, 1, 0, 0, 0];

/// The UCUM atoms clinical data uses. Factors are to base units m, g, s, mol, K, A, cd.
const ATOMS: &[Atom] = &[
    atom("m", "1", LENGTH, true),
    atom("g", "1", MASS, true),
    atom("s", "1", TIME, true),
    atom("mol", "1", AMOUNT, true),
    atom("K", "1", TEMPERATURE, true),
    atom("A", "1", CURRENT, true),
    atom("cd", "1", LUMINOSITY, true),
    atom("eq", "1", AMOUNT, true),
    atom("osm", "1", AMOUNT, true),
    atom("L", "0.001", VOLUME, true),
    atom("l", "0.001", VOLUME, true),
    atom("min", "60", TIME, false),
    atom("h", "3600", TIME, false),
    atom("d", "86400", TIME, false),
    atom("wk", "604800", TIME, false),
    atom("mo", "2629800", TIME, false),
    atom("a", "31557600", TIME, false),
    atom("Hz", "1", FREQUENCY, true),
    atom("Pa", "1000", PRESSURE, true),
    atom("bar", "100000000", PRESSURE, true),
    atom("m[Hg]", "133322000", PRESSURE, true),
    atom("m[H2O]", "9806650", PRESSURE, true),
    atom("[psi]", "6894757.29", PRESSURE, false),
    atom("atm", "101325000", PRESSURE, false),
    atom("J", "1000", ENERGY, true),
    atom("cal", "4184", ENERGY, true),
    atom("[Cal]", "4184000", ENERGY, false),
    atom("W", "1000", POWER, true),
    atom("N", "1000", FORCE, true),
    atom("kat", "1", CATALYTIC, true),
    atom("U", "0.000000016666666666666666667", CATALYTIC, true),
    atom("[in_i]", "0.0254", LENGTH, false),
    atom("[ft_i]", "0.3048", LENGTH, false),
    atom("[yd_i]", "0.9144", LENGTH, false),
    atom("[mi_i]", "1609.344", LENGTH, false),
    atom("[lb_av]", "453.59237", MASS, false),
    atom("[oz_av]", "28.349523125", MASS, false),
    atom("[gr]", "0.06479891", MASS, false),
    atom("[stone_av]", "6350.29318", MASS, false),
    atom("t", "1000000", MASS, true),
    atom("u", "0.0000000000000000000000016605402", MASS, false),
    atom("[fl_oz_us]", "0.0000295735295625", VOLUME, false),
    atom("[pt_us]", "0.000473176473", VOLUME, false),
    atom("[gal_us]", "0.003785411784", VOLUME, false),
    atom("[tsp_us]", "0.00000492892159375", VOLUME, false),
    atom("[tbs_us]", "0.0000147867647812", VOLUME, false),
    atom("[cup_us]", "0.0002365882365", VOLUME, false),
    atom("%", "0.01", NONE, false),
    atom("[ppm]", "0.000001", NONE, false),
    atom("[ppb]", "0.000000001", NONE, false),
    atom("[pi]", "3.1415926535897932384626433833", NONE, false),
    atom("rad", "1", NONE, true),
    atom("deg", "0.0174532925199432957692369077", NONE, false),
    atom("[drp]", "0.00000005", VOLUME, false),
];

/// Units that exist only relative to themselves (international units and similar).
const ARBITRARY: [&str; 6] = ["[iU]", "[IU]", "[arb'U]", "[USP'U]", "[CFU]", "[HPF]"];

const PREFIXES: [(&str, &str); 20] = [
    ("Y", "1000000000000000000000000"),
    ("Z", "1000000000000000000000"),
    ("E", "1000000000000000000"),
    ("P", "1000000000000000"),
    ("T", "1000000000000"),
    ("G", "1000000000"),
    ("M", "1000000"),
    ("k", "1000"),
    ("h", "100"),
    ("da", "10"),
    ("d", "0.1"),
    ("c", "0.01"),
    ("m", "0.001"),
    ("u", "0.000001"),
    ("n", "0.000000001"),
    ("p", "0.000000000001"),
    ("f", "0.000000000000001"),
    ("a", "0.000000000000000001"),
    ("z", "0.000000000000000000001"),
    ("y", "0.000000000000000000000001"),
];

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .unwrap_or(Decimal::ZERO)
}

fn atom_canonical(code: &str) -> Option<Canonical> {
    if let Some(atom) = ATOMS.iter().find(|a| a.code == code) {
        return Some(Canonical {
            factor: dec(atom.factor),
            offset: Decimal::ZERO,
            dims: atom.dims,
            arbitrary: Vec::new(),
        });
    }
    if ARBITRARY.contains(&code) {
        let mut unit = Canonical::unity();
        unit.arbitrary.push((code.replace("IU", "iU"), 1));
        return Some(unit);
    }
    for (prefix, factor) in PREFIXES {
        if let Some(rest) = code.strip_prefix(prefix) {
            if let Some(atom) = ATOMS.iter().find(|a| a.code == rest && a.metric) {
                return Some(Canonical {
                    factor: dec(factor) * dec(atom.factor),
                    offset: Decimal::ZERO,
                    dims: atom.dims,
                    arbitrary: Vec::new(),
                });
            }
            if rest == "[iU]" || rest == "[IU]" {
                let mut unit = Canonical::unity();
                unit.factor = dec(factor);
                unit.arbitrary.push(("[iU]".to_string(), 1));
                return Some(unit);
            }
        }
    }
    None
}

/// Parses a UCUM unit expression to its canonical form. `None` for units outside the table.
fn canonical(unit: &str) -> Option<Canonical> {
    match unit {
        // Temperatures on offset scales, only as whole units.
        "Cel" => {
            return Some(Canonical {
                offset: dec("273.15"),
                ..atom_canonical("K")?
            });
        }
        "[degF]" => {
            return Some(Canonical {
                factor: dec("0.55555555555555555555555555556"),
                offset: dec("255.37222222222222222222222222"),
                dims: TEMPERATURE,
                arbitrary: Vec::new(),
            });
        }
        _ => {}
    }
    let mut parser = UnitParser { s: unit, pos: 0 };
    let result = parser.term()?;
    (parser.pos == unit.len()).then_some(result)
}

struct UnitParser<'s> {
    s: &'s str,
    pos: usize,
}

impl UnitParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn term(&mut self) -> Option<Canonical> {
        let mut result = if self.peek() == Some(b'/') {
            Canonical::unity()
        } else {
            self.component()?
        };
        while let Some(op) = self.peek().filter(|c| *c == b'.' || *c == b'/') {
            self.pos += 1;
            let rhs = self.component()?;
            result = result.mul(&rhs, op == b'/')?;
        }
        Some(result)
    }

    fn component(&mut self) -> Option<Canonical> {
        if self.peek() == Some(b'(') {
            self.pos += 1;
            let inner = self.term()?;
            (self.peek() == Some(b')')).then_some(())?;
            self.pos += 1;
            let exp = self.exponent().unwrap_or(1);
            return inner.pow(exp);
        }
        if self.peek() == Some(b'{') {
            self.annotation()?;
            return Some(Canonical::unity());
        }
        let start = self.pos;
        // A number: `10*3`, `10^-2` or a plain factor such as `1` or `100`.
        if self.peek().is_some_and(|c| c.is_ascii_digit()) {
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            let number = dec(&self.s[start..self.pos]);
            let mut unit = Canonical::unity();
            if matches!(self.peek(), Some(b'*' | b'^')) {
                self.pos += 1;
                let exp = self.exponent()?;
                unit.factor = power_of(number, exp)?;
            } else {
                unit.factor = number;
            }
            if self.peek() == Some(b'{') {
                self.annotation()?;
            }
            return Some(unit);
        }
        // A symbol: letters, brackets and the characters UCUM allows, up to an exponent or operator.
        let mut depth = 0;
        while let Some(c) = self.peek() {
            match c {
                b'[' => depth += 1,
                b']' => depth -= 1,
                b'.' | b'/' | b'(' | b')' | b'{' if depth == 0 => break,
                b'0'..=b'9' | b'+' | b'-' if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        let mut symbol = &self.s[start..self.pos];
        // `mm[Hg]` has a bracket suffix after letters; and atoms such as `m[H2O]` hold digits.
        if self.s[self.pos..].starts_with("[") {
            let end = self.s[self.pos..].find(']')? + self.pos + 1;
            symbol = &self.s[start..end];
            self.pos = end;
        }
        if symbol.is_empty() {
            return None;
        }
        let unit = atom_canonical(symbol)?;
        let exp = self.exponent().unwrap_or(1);
        if self.peek() == Some(b'{') {
            self.annotation()?;
        }
        unit.pow(exp)
    }

    fn exponent(&mut self) -> Option<i8> {
        let start = self.pos;
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let text = &self.s[start..self.pos];
        if text.is_empty() || text == "+" || text == "-" {
            self.pos = start;
            return None;
        }
        text.parse().ok()
    }

    fn annotation(&mut self) -> Option<()> {
        let end = self.s[self.pos..].find('}')?;
        self.pos += end + 1;
        Some(())
    }
}

fn power_of(base: Decimal, exp: i8) -> Option<Decimal> {
    let mut out = Decimal::ONE;
    for _ in 0..exp.unsigned_abs() {
        out = out.checked_mul(base)?;
    }
    if exp < 0 {
        out = Decimal::ONE.checked_div(out)?;
    }
    Some(out)
}

/// How a unit takes part in comparison: as a calendar year/month (only comparable among
/// themselves), or as a UCUM unit (calendar weeks and below are their UCUM equivalents).
enum UnitClass {
    CalendarMonths(Decimal),
    Ucum(Canonical),
    Unknown,
}

fn classify(unit: &str) -> UnitClass {
    match calendar_unit(unit) {
        Some("year") => UnitClass::CalendarMonths(Decimal::from(12)),
        Some("month") => UnitClass::CalendarMonths(Decimal::ONE),
        Some(cal) => {
            let code = match cal {
                "week" => "wk",
                "day" => "d",
                "hour" => "h",
                "minute" => "min",
                "second" => "s",
                _ => "ms",
            };
            canonical(code).map_or(UnitClass::Unknown, UnitClass::Ucum)
        }
        None => canonical(unit).map_or(UnitClass::Unknown, UnitClass::Ucum),
    }
}

impl Quantity {
    /// A quantity; `unit` as written.
    pub fn new(value: Decimal, unit: impl Into<String>) -> Self {
        Quantity {
            value,
            unit: unit.into(),
        }
    }

    /// Both values in one common unit, when the units are comparable.
    pub fn common_values(&self, other: &Quantity) -> Option<(Decimal, Decimal)> {
        if self.unit == other.unit {
            return Some((self.value, other.value));
        }
        match (classify(&self.unit), classify(&other.unit)) {
            (UnitClass::CalendarMonths(a), UnitClass::CalendarMonths(b)) => {
                Some((self.value * a, other.value * b))
            }
            (UnitClass::Ucum(a), UnitClass::Ucum(b)) if a.comparable(&b) => Some((
                self.value.checked_mul(a.factor)? + a.offset,
                other.value.checked_mul(b.factor)? + b.offset,
            )),
            _ => None,
        }
    }

    /// Whether the two units can be compared (`comparable()`).
    pub fn comparable(&self, other: &Quantity) -> bool {
        self.common_values(other).is_some()
    }

    /// `self * other` or `self / other`, in canonical units; `None` when a unit is unknown.
    pub fn multiply(&self, other: &Quantity, divide: bool) -> Option<Quantity> {
        let a = match classify(&self.unit) {
            UnitClass::Ucum(a) if a.offset.is_zero() => a,
            _ => return None,
        };
        let b = match classify(&other.unit) {
            UnitClass::Ucum(b) if b.offset.is_zero() => b,
            _ => return None,
        };
        let unit = a.mul(&b, divide)?;
        let (x, y) = (
            self.value.checked_mul(a.factor)?,
            other.value.checked_mul(b.factor)?,
        );
        let value = if divide {
            x.checked_div(y)?
        } else {
            x.checked_mul(y)?
        };
        Some(Quantity::new(value.normalize(), unit.unit_string()))
    }

    /// This quantity in UCUM base units (`4 'mg'` -> `0.004 'g'`, `1 '[lb_av]'` ->
    /// `453.59237 'g'`), so that values written in different units compare in an index.
    /// Calendar years and months become months (`mo`); `None` for units outside the table.
    pub fn canonical(&self) -> Option<Quantity> {
        match classify(&self.unit) {
            UnitClass::Ucum(unit) => {
                let value = self.value.checked_mul(unit.factor)? + unit.offset;
                Some(Quantity::new(value.normalize(), unit.unit_string()))
            }
            UnitClass::CalendarMonths(months) => {
                Some(Quantity::new((self.value * months).normalize(), "mo"))
            }
            UnitClass::Unknown => None,
        }
    }

    /// This quantity in `unit`, when convertible (`toQuantity(unit)`).
    pub fn convert(&self, unit: &str) -> Option<Quantity> {
        let target = Quantity::new(Decimal::ONE, unit);
        if self.unit == unit {
            return Some(self.clone());
        }
        match (classify(&self.unit), classify(unit)) {
            (UnitClass::Ucum(a), UnitClass::Ucum(b)) if a.comparable(&b) => {
                let base = self.value.checked_mul(a.factor)? + a.offset;
                let value = (base - b.offset).checked_div(b.factor)?;
                Some(Quantity::new(value.normalize(), unit))
            }
            (UnitClass::CalendarMonths(a), UnitClass::CalendarMonths(b)) => {
                Some(Quantity::new((self.value * a / b).normalize(), target.unit))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_calendar_keyword(&self.unit) {
            write!(f, "{} {}", self.value, self.unit)
        } else {
            write!(f, "{} '{}'", self.value, self.unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &str, unit: &str) -> Quantity {
        Quantity::new(dec(v), unit)
    }

    #[test]
    fn converts_common_clinical_units() {
        let (a, b) = q("4", "g").common_values(&q("4000", "mg")).unwrap();
        assert_eq!(a, b);
        let (a, b) = q("1", "[lb_av]")
            .common_values(&q("453.59237", "g"))
            .unwrap();
        assert_eq!(a, b);
        let kpa = q("120", "mm[Hg]").convert("kPa").unwrap();
        assert!(
            (kpa.value - dec("15.99864")).abs() < dec("0.00001"),
            "{}",
            kpa.value
        );
        let (a, b) = q("5.5", "mmol/L")
            .common_values(&q("0.0055", "mol/L"))
            .unwrap();
        assert_eq!(a, b);
        assert!(q("1", "cm").comparable(&q("1", "[in_i]")));
        assert!(!q("1", "cm").comparable(&q("1", "s")));
        assert!(q("10", "10*3/uL").comparable(&q("1", "10*9/L")));
        assert!(q("70", "kg/m2").comparable(&q("1", "g.m-2")));
        assert!(q("3", "mg{total}").comparable(&q("1", "g")));
    }

    #[test]
    fn calendar_years_compare_only_with_calendar_units() {
        assert!(q("1", "year").comparable(&q("12", "months")));
        assert!(!q("1", "year").comparable(&q("1", "a")));
        let (a, b) = q("7", "days").common_values(&q("1", "wk")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn multiplies_to_canonical_units() {
        let area = q("2.0", "cm").multiply(&q("2.0", "m"), false).unwrap();
        assert_eq!(area.unit, "m2");
        assert_eq!(area.value, dec("0.04"));
        let ratio = q("1.0", "m").multiply(&q("1.0", "m"), true).unwrap();
        assert_eq!(ratio.unit, "1");
    }

    #[test]
    fn canonical_forms_agree_across_units() {
        assert_eq!(q("4000", "mg").canonical(), q("4", "g").canonical());
        assert_eq!(q("5.5", "mmol/L").canonical().unwrap().unit, "m-3.mol");
        assert_eq!(q("1", "xyz").canonical(), None);
    }

    #[test]
    fn temperatures_convert_with_offsets() {
        let f = q("98.6", "[degF]").convert("Cel").unwrap();
        assert!((f.value - dec("37")).abs() < dec("0.001"), "{}", f.value);
    }
}
