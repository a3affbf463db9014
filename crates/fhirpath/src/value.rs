//! The values an expression produces: FHIRPath system values (Boolean, String, Integer,
//! Decimal, Date, DateTime, Time, Quantity) and FHIR nodes, which are borrowed views into the
//! resource JSON together with their FHIR type.
//!
//! A FHIR primitive node (`Patient.birthDate`) stays a node, so it keeps its FHIR type name
//! (`date`) and its extensions (`_birthDate`); operators convert it to the system value
//! ([`Value::to_system`]) when they need one.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::model::ModelInfo;
use crate::quantity::Quantity;
use crate::temporal::{PartialDateTime, TemporalKind};

/// One item of a result collection.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// System.Boolean
    Boolean(bool),
    /// System.Integer
    Integer(i64),
    /// System.Decimal
    Decimal(Decimal),
    /// System.String
    String(Cow<'a, str>),
    /// System.Date
    Date(PartialDateTime),
    /// System.DateTime
    DateTime(PartialDateTime),
    /// System.Time
    Time(PartialDateTime),
    /// System.Quantity
    Quantity(Quantity),
    /// An element or resource of the input.
    Node(Node<'a>),
    /// The result of `type()`: a namespace and a type name.
    TypeInfo {
        /// `System` or `FHIR`.
        namespace: &'static str,
        /// The type's name.
        name: Cow<'a, str>,
    },
}

/// An element of the input JSON with its FHIR type.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    /// The JSON value; `None` for a primitive that has only extensions (`_given: [{...}]`).
    pub json: Option<&'a Json>,
    /// The `_name` companion of a primitive (its `id` and `extension`).
    pub extension: Option<&'a Json>,
    /// The FHIR type name (`"HumanName"`, `"date"`, `"Patient.contact"`), when known.
    pub type_name: Option<&'a str>,
}

/// A result collection.
pub type Collection<'a> = Vec<Value<'a>>;

/// FHIR primitive types whose JSON is a string but whose FHIRPath value is not a String.
fn fhir_primitive_kind(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "boolean" => "Boolean",
        "integer" | "positiveInt" | "unsignedInt" | "integer64" => "Integer",
        "decimal" => "Decimal",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "markdown"
        | "base64Binary" | "xhtml" => "String",
        "System.String" => "String",
        "System.Boolean" => "Boolean",
        "System.Integer" => "Integer",
        "System.Decimal" => "Decimal",
        "System.Date" => "Date",
        "System.DateTime" => "DateTime",
        "System.Time" => "Time",
        _ => return None,
    })
}

impl<'a> Node<'a> {
    /// A node for a JSON value of the given type (resources take their `resourceType`).
    pub fn new(json: &'a Json, type_name: Option<&'a str>) -> Self {
        let type_name = json
            .get("resourceType")
            .and_then(Json::as_str)
            .or(type_name);
        Node {
            json: Some(json),
            extension: None,
            type_name,
        }
    }

    /// Whether the node is a JSON object (a complex element or resource).
    pub fn is_object(&self) -> bool {
        matches!(self.json, Some(Json::Object(_)))
    }
}

impl<'a> Value<'a> {
    /// A string value borrowed from its source.
    pub fn str(s: &'a str) -> Self {
        Value::String(Cow::Borrowed(s))
    }

    /// Converts a FHIR primitive node to its system value; other values are returned as they are.
    /// Complex nodes and primitives with only extensions return `None`.
    pub fn to_system(&self) -> Option<Value<'a>> {
        let Value::Node(node) = self else {
            return Some(self.clone());
        };
        let json = node.json?;
        let kind = node.type_name.and_then(fhir_primitive_kind);
        match json {
            Json::Bool(b) => Some(Value::Boolean(*b)),
            Json::Number(n) => {
                let text = n.to_string();
                if kind == Some("Decimal") || (kind.is_none() && text.contains(['.', 'e', 'E'])) {
                    Decimal::from_str(&text)
                        .or_else(|_| Decimal::from_scientific(&text))
                        .ok()
                        .map(Value::Decimal)
                } else {
                    text.parse().ok().map(Value::Integer)
                }
            }
            Json::String(s) => match kind {
                Some("Date") => PartialDateTime::parse_date(s).map(Value::Date),
                Some("DateTime") => PartialDateTime::parse_datetime(s).map(Value::DateTime),
                Some("Time") => PartialDateTime::parse_time(s).map(Value::Time),
                Some("Decimal") => Decimal::from_str(s).ok().map(Value::Decimal),
                Some("Integer") => s.parse().ok().map(Value::Integer),
                _ => Some(Value::str(s)),
            },
            Json::Object(_) => {
                // A FHIR Quantity (or Age, Duration, ...) acts as a System.Quantity in operators.
                if is_quantity_type(node.type_name) {
                    quantity_of(json).map(Value::Quantity)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether this is a primitive (has a system value): not a complex node.
    pub fn is_primitive(&self) -> bool {
        match self {
            Value::Node(node) => !node.is_object() && node.json.is_some(),
            Value::TypeInfo { .. } => false,
            _ => true,
        }
    }

    /// The type name reported in results: the FHIR type for nodes, the System type otherwise
    /// (`"boolean"`, `"integer"`, `"decimal"`, `"string"`, `"date"`, `"dateTime"`, `"time"`, `"Quantity"`).
    pub fn type_name(&self) -> Cow<'a, str> {
        match self {
            Value::Boolean(_) => "boolean".into(),
            Value::Integer(_) => "integer".into(),
            Value::Decimal(_) => "decimal".into(),
            Value::String(_) => "string".into(),
            Value::Date(_) => "date".into(),
            Value::DateTime(_) => "dateTime".into(),
            Value::Time(_) => "time".into(),
            Value::Quantity(_) => "Quantity".into(),
            Value::TypeInfo { .. } => "TypeInfo".into(),
            Value::Node(node) => match node.type_name {
                Some(t) => match t.strip_prefix("System.") {
                    Some(system) => Cow::Owned(system.to_ascii_lowercase()),
                    None => Cow::Borrowed(t),
                },
                None => match node.json {
                    Some(Json::Bool(_)) => "boolean".into(),
                    Some(Json::Number(n)) if n.to_string().contains('.') => "decimal".into(),
                    Some(Json::Number(_)) => "integer".into(),
                    Some(Json::String(_)) => "string".into(),
                    _ => "Element".into(),
                },
            },
        }
    }

    /// The value as JSON for output: nodes as their JSON, system values in their FHIR JSON
    /// form (dates as strings, quantities as `{value, unit}` or `{value, code, system}`).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Boolean(b) => Json::Bool(*b),
            Value::Integer(i) => Json::from(*i),
            Value::Decimal(d) => decimal_json(d),
            Value::String(s) => Json::String(s.to_string()),
            Value::Date(d) | Value::DateTime(d) | Value::Time(d) => Json::String(d.to_string()),
            Value::Quantity(q) => {
                let mut map = serde_json::Map::new();
                map.insert("value".into(), decimal_json(&q.value));
                if crate::quantity::is_calendar_keyword(&q.unit) {
                    map.insert("unit".into(), Json::String(q.unit.clone()));
                } else {
                    map.insert("unit".into(), Json::String(q.unit.clone()));
                    map.insert(
                        "system".into(),
                        Json::String("http://unitsofmeasure.org".into()),
                    );
                    map.insert("code".into(), Json::String(q.unit.clone()));
                }
                Json::Object(map)
            }
            Value::TypeInfo { namespace, name } => serde_json::json!({
                "namespace": namespace,
                "name": name,
            }),
            Value::Node(node) => match node.json {
                Some(json) => json.clone(),
                None => node.extension.cloned().unwrap_or(Json::Null),
            },
        }
    }

    /// The string form used by `toString()` and string comparison of primitives.
    pub fn to_string_value(&self) -> Option<Cow<'a, str>> {
        Some(match self.to_system()? {
            Value::String(s) => s,
            Value::Boolean(b) => Cow::Owned(b.to_string()),
            Value::Integer(i) => Cow::Owned(i.to_string()),
            Value::Decimal(d) => Cow::Owned(d.to_string()),
            Value::Date(d) | Value::DateTime(d) | Value::Time(d) => Cow::Owned(d.to_string()),
            Value::Quantity(q) => Cow::Owned(q.to_string()),
            Value::Node(_) | Value::TypeInfo { .. } => return None,
        })
    }
}

fn decimal_json(d: &Decimal) -> Json {
    // arbitrary_precision keeps the scale ("1.50") as written.
    Json::Number(serde_json::Number::from_str(&d.to_string()).unwrap_or_else(|_| 0.into()))
}

/// Whether a FHIR type is Quantity or one of its profiles (Age, Duration, Distance, Count, ...).
pub(crate) fn is_quantity_type(type_name: Option<&str>) -> bool {
    matches!(
        type_name,
        Some(
            "Quantity"
                | "Age"
                | "Duration"
                | "Distance"
                | "Count"
                | "MoneyQuantity"
                | "SimpleQuantity"
        )
    )
}

/// A FHIR Quantity JSON object as a System.Quantity (UCUM `code` preferred over `unit`).
pub(crate) fn quantity_of(json: &Json) -> Option<Quantity> {
    let value = json.get("value")?;
    let value = Decimal::from_str(&value.to_string())
        .or_else(|_| Decimal::from_scientific(&value.to_string()))
        .ok()?;
    let unit = json
        .get("code")
        .filter(|_| {
            json.get("system").and_then(Json::as_str) == Some("http://unitsofmeasure.org")
                || json.get("system").is_none()
        })
        .or_else(|| json.get("unit"))
        .and_then(Json::as_str)
        .unwrap_or("1");
    Some(Quantity::new(value, unit))
}

/// Equality of two items (`=`): `Some(true/false)`, or `None` when uncertain (dates of
/// different precision, quantities of incomparable units).
pub fn equals(a: &Value<'_>, b: &Value<'_>) -> Option<bool> {
    if let (Value::Node(x), Value::Node(y)) = (a, b)
        && (x.is_object() || y.is_object())
    {
        if is_quantity_type(x.type_name) && is_quantity_type(y.type_name) {
            return equals(&a.to_system()?, &b.to_system()?);
        }
        return Some(x.json == y.json);
    }
    let (a, b) = (a.to_system()?, b.to_system()?);
    match (&a, &b) {
        (Value::Boolean(x), Value::Boolean(y)) => Some(x == y),
        (Value::String(x), Value::String(y)) => Some(x == y),
        (Value::Integer(x), Value::Integer(y)) => Some(x == y),
        (Value::Integer(_) | Value::Decimal(_), Value::Integer(_) | Value::Decimal(_)) => {
            Some(as_decimal(&a)? == as_decimal(&b)?)
        }
        (Value::Quantity(x), Value::Quantity(y)) => {
            let (x, y) = x.common_values(y)?;
            Some(x == y)
        }
        (Value::Date(x) | Value::DateTime(x), Value::Date(y) | Value::DateTime(y))
        | (Value::Time(x), Value::Time(y)) => x.partial_compare(y).map(|o| o == Ordering::Equal),
        (
            Value::TypeInfo {
                namespace: n1,
                name: a,
            },
            Value::TypeInfo {
                namespace: n2,
                name: b,
            },
        ) => Some(n1 == n2 && a == b),
        _ => Some(false),
    }
}

/// Equivalence of two items (`~`): never uncertain.
pub fn equivalent(a: &Value<'_>, b: &Value<'_>) -> bool {
    if let (Value::Node(x), Value::Node(y)) = (a, b)
        && (x.is_object() || y.is_object())
    {
        if is_quantity_type(x.type_name) && is_quantity_type(y.type_name) {
            return match (a.to_system(), b.to_system()) {
                (Some(a), Some(b)) => equivalent(&a, &b),
                _ => false,
            };
        }
        return match (x.json, y.json) {
            (Some(Json::Object(p)), Some(Json::Object(q))) => objects_equivalent(p, q),
            _ => false,
        };
    }
    let (Some(a), Some(b)) = (a.to_system(), b.to_system()) else {
        return false;
    };
    match (&a, &b) {
        (Value::String(x), Value::String(y)) => normalize_ws(x) == normalize_ws(y),
        (Value::Integer(_) | Value::Decimal(_), Value::Integer(_) | Value::Decimal(_)) => {
            match (as_decimal(&a), as_decimal(&b)) {
                (Some(x), Some(y)) => decimals_equivalent(x, y),
                _ => false,
            }
        }
        (Value::Quantity(x), Value::Quantity(y)) => {
            let scale = x.value.scale().min(y.value.scale());
            match x.common_values(y) {
                Some((p, q)) => p.round_dp(scale) == q.round_dp(scale) || decimals_equivalent(p, q),
                None => false,
            }
        }
        (Value::Date(x) | Value::DateTime(x), Value::Date(y) | Value::DateTime(y))
        | (Value::Time(x), Value::Time(y)) => x.partial_compare(y) == Some(Ordering::Equal),
        _ => equals(&a, &b).unwrap_or(false),
    }
}

fn decimals_equivalent(x: Decimal, y: Decimal) -> bool {
    let scale = x.scale().min(y.scale());
    x.round_dp(scale) == y.round_dp(scale)
}

fn objects_equivalent(
    p: &serde_json::Map<String, Json>,
    q: &serde_json::Map<String, Json>,
) -> bool {
    // Equivalence ignores `id` and compares the remaining children (order-insensitive arrays are
    // not required by the spec for complex types; compare JSON values structurally).
    let keys = |m: &serde_json::Map<String, Json>| {
        let mut k: Vec<String> = m.keys().filter(|k| *k != "id").cloned().collect();
        k.sort();
        k
    };
    keys(p) == keys(q)
        && p.iter()
            .filter(|(k, _)| *k != "id")
            .all(|(k, v)| q.get(k).is_some_and(|w| json_equivalent(v, w)))
}

fn json_equivalent(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::String(x), Json::String(y)) => normalize_ws(x) == normalize_ws(y),
        (Json::Object(p), Json::Object(q)) => objects_equivalent(p, q),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equivalent(a, b))
        }
        _ => a == b,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Integer or Decimal as a Decimal.
pub fn as_decimal(v: &Value<'_>) -> Option<Decimal> {
    match v {
        Value::Integer(i) => Some(Decimal::from(*i)),
        Value::Decimal(d) => Some(*d),
        _ => None,
    }
}

/// Ordering for `<`, `>`, `<=`, `>=` and `sort()`. `Ok(None)` is an uncertain comparison
/// (dates of different precision); `Err(())` means the two cannot be compared at all.
#[allow(clippy::result_unit_err)]
pub fn compare(a: &Value<'_>, b: &Value<'_>) -> Result<Option<Ordering>, ()> {
    let (a, b) = match (a.to_system(), b.to_system()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(()),
    };
    match (&a, &b) {
        (Value::String(x), Value::String(y)) => Ok(Some(x.cmp(y))),
        (Value::Integer(x), Value::Integer(y)) => Ok(Some(x.cmp(y))),
        (Value::Integer(_) | Value::Decimal(_), Value::Integer(_) | Value::Decimal(_)) => {
            Ok(as_decimal(&a).zip(as_decimal(&b)).map(|(x, y)| x.cmp(&y)))
        }
        (Value::Quantity(x), Value::Quantity(y)) => match x.common_values(y) {
            Some((x, y)) => Ok(Some(x.cmp(&y))),
            None => Err(()),
        },
        (Value::Date(x) | Value::DateTime(x), Value::Date(y) | Value::DateTime(y))
        | (Value::Time(x), Value::Time(y)) => Ok(x.partial_compare(y)),
        _ => Err(()),
    }
}

/// Whether the value's type is `name` in `namespace` (`None` = either), following FHIR base
/// types. With `exact_primitives` (`as`, `ofType`), a primitive matches only its own type:
/// a `code` is a `string` for `is`, but `as(string)` does not take it.
pub fn is_type(
    value: &Value<'_>,
    namespace: Option<&str>,
    name: &str,
    model: &dyn ModelInfo,
    exact_primitives: bool,
) -> bool {
    let system = match value {
        Value::Boolean(_) => Some("Boolean"),
        Value::Integer(_) => Some("Integer"),
        Value::Decimal(_) => Some("Decimal"),
        Value::String(_) => Some("String"),
        Value::Date(_) => Some("Date"),
        Value::DateTime(_) => Some("DateTime"),
        Value::Time(_) => Some("Time"),
        Value::Quantity(_) => Some("Quantity"),
        Value::TypeInfo { .. } => None,
        Value::Node(_) => None,
    };
    if let Some(system) = system {
        return namespace.is_none_or(|ns| ns == "System") && system == name;
    }
    let Value::Node(node) = value else {
        return false;
    };
    if namespace.is_some_and(|ns| ns != "FHIR") {
        return false;
    }
    let Some(mut current) = node.type_name else {
        return false;
    };
    if exact_primitives && model.is_primitive(current) {
        return current == name;
    }
    loop {
        if current == name {
            return true;
        }
        match model.base_type(current) {
            Some(base) => current = base,
            None => return false,
        }
    }
}

/// The `type()` of a value.
pub fn type_info<'a>(value: &Value<'a>) -> Value<'a> {
    match value {
        Value::Node(node) => Value::TypeInfo {
            namespace: if node.type_name.is_some_and(|t| t.starts_with("System.")) {
                "System"
            } else {
                "FHIR"
            },
            name: match node.type_name {
                Some(t) => Cow::Borrowed(t.strip_prefix("System.").unwrap_or(t)),
                None => Cow::Borrowed("Element"),
            },
        },
        other => Value::TypeInfo {
            namespace: "System",
            name: Cow::Borrowed(match other {
                Value::Boolean(_) => "Boolean",
                Value::Integer(_) => "Integer",
                Value::Decimal(_) => "Decimal",
                Value::String(_) => "String",
                Value::Date(_) => "Date",
                Value::DateTime(_) => "DateTime",
                Value::Time(_) => "Time",
                Value::Quantity(_) => "Quantity",
                _ => "TypeInfo",
            }),
        },
    }
}

/// Parses a date/time literal's text to the value of its kind.
pub(crate) fn temporal_literal(kind: TemporalKind, text: &str) -> Option<PartialDateTime> {
    match kind {
        TemporalKind::Date => PartialDateTime::parse_date(text),
        TemporalKind::DateTime => PartialDateTime::parse_datetime(text).map(|mut d| {
            d.kind = TemporalKind::DateTime;
            d
        }),
        TemporalKind::Time => PartialDateTime::parse_time(text),
    }
}
