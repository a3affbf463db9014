//! [Conditional read](https://hl7.org/fhir/R4/http.html#cread): `If-None-Match` and
//! `If-Modified-Since` on read and vread. When the client's copy is current the answer is
//! `304 Not Modified` with the ETag and Last-Modified, and no body (RFC 9110 §13.1.2–3:
//! `If-None-Match` wins when both are sent; an unreadable date is ignored).

use axum::http::{HeaderMap, StatusCode, header};

use crate::http::{Reply, ReplyBody};

/// `reply` (a stored version with its ETag and Last-Modified) as 304 when the request's
/// preconditions say the client has it already; unchanged otherwise.
pub fn apply(headers: &HeaderMap, reply: Reply) -> Reply {
    if !not_modified(headers, reply.version, reply.last_modified) {
        return reply;
    }
    Reply {
        status: StatusCode::NOT_MODIFIED,
        body: ReplyBody::None,
        ..reply
    }
}

fn not_modified(headers: &HeaderMap, version: Option<u64>, last_modified: Option<i64>) -> bool {
    if let Some(tags) = headers.get(header::IF_NONE_MATCH) {
        let Some(version) = version else {
            return false;
        };
        let Ok(tags) = tags.to_str() else {
            return false;
        };
        return tags.split(',').map(str::trim).any(|tag| {
            tag == "*" || {
                // Weak comparison: `W/"3"` and `"3"` both name version 3.
                let opaque = tag.strip_prefix("W/").unwrap_or(tag);
                opaque.trim_matches('"') == version.to_string()
            }
        });
    }
    if let Some(since) = headers.get(header::IF_MODIFIED_SINCE)
        && let Some(last_modified) = last_modified
        && let Ok(since) = since.to_str()
        && let Ok(since) = chrono::DateTime::parse_from_rfc2822(since)
    {
        // HTTP dates have whole seconds: compare at that precision.
        return last_modified.div_euclid(1_000_000) <= since.timestamp();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    // 2024-01-15T11:00:00.250Z
    const LAST: i64 = 1_705_316_400_250_000;

    #[test]
    fn if_none_match_compares_versions_weakly() {
        let h = |v: &str| with(header::IF_NONE_MATCH, v);
        assert!(not_modified(&h("W/\"3\""), Some(3), Some(LAST)));
        assert!(not_modified(&h("\"3\""), Some(3), Some(LAST)));
        assert!(not_modified(&h("W/\"1\", W/\"3\""), Some(3), Some(LAST)));
        assert!(not_modified(&h("*"), Some(3), Some(LAST)));
        assert!(!not_modified(&h("W/\"2\""), Some(3), Some(LAST)));
        assert!(!not_modified(&HeaderMap::new(), Some(3), Some(LAST)));
    }

    #[test]
    fn if_modified_since_counts_whole_seconds_and_yields_to_if_none_match() {
        let h = |v: &str| with(header::IF_MODIFIED_SINCE, v);
        assert!(not_modified(
            &h("Mon, 15 Jan 2024 11:00:00 GMT"),
            Some(3),
            Some(LAST)
        ));
        assert!(not_modified(
            &h("Tue, 16 Jan 2024 00:00:00 GMT"),
            Some(3),
            Some(LAST)
        ));
        assert!(!not_modified(
            &h("Mon, 15 Jan 2024 10:59:59 GMT"),
            Some(3),
            Some(LAST)
        ));
        assert!(!not_modified(&h("yesterday"), Some(3), Some(LAST)));
        let mut both = h("Tue, 16 Jan 2024 00:00:00 GMT");
        both.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"2\""));
        assert!(!not_modified(&both, Some(3), Some(LAST)));
    }
}
