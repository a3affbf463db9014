//! [JSON Patch](https://datatracker.ietf.org/doc/html/rfc6902) of a stored resource, as REST
//! `PATCH` and the PATCH entries of batches and transactions apply it: read the current
//! version, apply, check that the type and id did not change, validate. The caller writes the
//! result with the version it was based on as `If-Match`, so a concurrent update is never
//! overwritten.

use json_patch::Patch;
use serde_json::Value;
use store::{RequestContext, Store, StoreError};

use crate::entry::{EntryError, validate};
use crate::validation::Validator;

/// Parses a JSON Patch document.
pub fn parse_patch_document(body: &[u8]) -> Result<Patch, EntryError> {
    serde_json::from_slice(body).map_err(|e| EntryError::PatchSyntax(e.to_string()))
}

/// The JSON Patch a batch or transaction PATCH entry carries, as a Binary resource of content
/// type `application/json-patch+json` with the document base64-encoded in `data`.
pub fn binary_patch(resource: &Value) -> Result<Patch, EntryError> {
    let ok = resource.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && resource.get("contentType").and_then(Value::as_str)
            == Some("application/json-patch+json");
    if !ok {
        return Err(EntryError::UnsupportedPatch(
            "a PATCH entry needs a Binary resource with contentType application/json-patch+json"
                .into(),
        ));
    }
    let data = resource.get("data").and_then(Value::as_str).unwrap_or("");
    let bytes = base64_decode(data)
        .ok_or_else(|| EntryError::malformed("Binary.data is not valid base64"))?;
    parse_patch_document(&bytes)
}

/// Reads the current version of `ty/id`, applies `patch` and validates the result; returns
/// the new resource and the version it was based on. `if_match` (the caller's expected
/// version) must be the current one.
pub async fn patched(
    store: &dyn Store,
    validator: &dyn Validator,
    ctx: &RequestContext,
    ty: &str,
    id: &str,
    patch: &Patch,
    if_match: Option<u64>,
) -> Result<(Value, u64), EntryError> {
    let current = store.read(ctx, ty, id).await?;
    if let Some(expected) = if_match
        && expected != current.version
    {
        return Err(StoreError::VersionConflict {
            resource_type: ty.into(),
            id: id.into(),
            expected,
            current: Some(current.version),
        }
        .into());
    }
    let mut doc: Value = serde_json::from_str(current.body.as_deref().unwrap_or("{}"))
        .map_err(|e| StoreError::Backend(format!("stored JSON unreadable: {e}")))?;
    // `doc` is this call's own copy, dropped on failure: nothing to roll back. (json_patch's
    // `patch` rolls back, and panics where the rollback itself fails, as it does for a
    // `move` to the root followed by a failing operation.)
    json_patch::patch_unsafe(&mut doc, patch)
        .map_err(|e| EntryError::PatchFailed(format!("the patch cannot be applied: {e}")))?;
    if doc.get("resourceType").and_then(Value::as_str) != Some(ty)
        || doc.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(EntryError::PatchFailed(
            "a patch must not change resourceType or id".into(),
        ));
    }
    validate(validator, &doc)?;
    Ok((doc, current.version))
}

/// Standard or URL-safe base64, padded or not, whitespace ignored.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_decodes_padded_and_unpadded() {
        assert_eq!(
            base64_decode("W3sib3AiOiJ0ZXN0In1d").unwrap(),
            b"[{\"op\":\"test\"}]"
        );
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn a_patch_entry_needs_a_json_patch_binary() {
        let binary = |content_type: &str, data: &str| json!({"resourceType": "Binary", "contentType": content_type, "data": data});
        // [{"op":"test"}] is not a valid operation: a syntax error, not a media type one.
        assert!(matches!(
            binary_patch(&binary(
                "application/json-patch+json",
                "W3sib3AiOiJ0ZXN0In1d"
            )),
            Err(EntryError::PatchSyntax(_))
        ));
        assert!(matches!(
            binary_patch(&binary("application/json", "W10=")),
            Err(EntryError::UnsupportedPatch(_))
        ));
        assert!(matches!(
            binary_patch(&binary("application/json-patch+json", "!!")),
            Err(EntryError::Malformed { .. })
        ));
        // `[]`: an empty patch.
        assert!(binary_patch(&binary("application/json-patch+json", "W10=")).is_ok());
    }
}
