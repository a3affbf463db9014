//! Small readers of FHIR JSON shared by the modules.

use serde_json::Value;

/// The items of the array at `key` of `v` (none when it is missing or not an array).
pub(crate) fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}
