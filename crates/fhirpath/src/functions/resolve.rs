//! `resolve()`: references to contained resources, Bundle entries, an external resolver, or
//! (when nothing holds the target) a node that knows only the referenced type.

use serde_json::Value as Json;

use crate::eval::Evaluator;
use crate::value::{Node, Value};

/// Resolves a Reference (or a reference string) within the resource, its Bundle, or the resolver.
pub(super) fn resolve<'a>(ev: &Evaluator<'_, 'a>, item: &Value<'a>) -> Option<Value<'a>> {
    let reference: &'a str = match item {
        Value::Node(Node {
            json: Some(Json::String(s)),
            ..
        }) => s,
        Value::Node(Node {
            json: Some(json), ..
        }) => json.get("reference")?.as_str()?,
        _ => return None,
    };
    let root = match &ev.root_resource {
        Value::Node(Node {
            json: Some(json), ..
        }) => Some(*json),
        _ => None,
    };
    if let Some(id) = reference.strip_prefix('#') {
        let containing = match &ev.resource {
            Value::Node(Node {
                json: Some(json), ..
            }) => Some(*json),
            _ => root,
        }?;
        return containing
            .get("contained")?
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Json::as_str) == Some(id))
            .map(|c| Value::Node(Node::new(c, None)));
    }
    if let Some(bundle) =
        root.filter(|r| r.get("resourceType").and_then(Json::as_str) == Some("Bundle"))
    {
        let entries = bundle.get("entry").and_then(Json::as_array);
        for entry in entries.into_iter().flatten() {
            let full_url = entry.get("fullUrl").and_then(Json::as_str);
            let resource = entry.get("resource");
            let matches_relative = resource.is_some_and(|r| {
                let t = r
                    .get("resourceType")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                let id = r.get("id").and_then(Json::as_str).unwrap_or_default();
                !id.is_empty()
                    && (reference == format!("{t}/{id}")
                        || reference.ends_with(&format!("/{t}/{id}")))
            });
            if (full_url == Some(reference) || matches_relative)
                && let Some(resource) = resource
            {
                return Some(Value::Node(Node::new(resource, None)));
            }
        }
    }
    if let Some(resolver) = ev.env.resolver
        && let Some(found) = resolver.resolve(reference)
    {
        return Some(Value::Node(Node::new(found, None)));
    }
    // Unresolvable, but the reference names the type: a resource known only by its type, so
    // `resolve() is Patient` still answers (search-parameter expressions rely on it).
    reference_type(ev, reference).map(|type_name| {
        Value::Node(Node {
            json: None,
            extension: None,
            type_name: Some(type_name),
        })
    })
}

/// The resource type in a literal reference (`Patient/1`, `http://x/fhir/Patient/1/_history/2`).
pub(super) fn reference_type<'a>(ev: &Evaluator<'_, 'a>, reference: &'a str) -> Option<&'a str> {
    let path = reference.split(['?', '#']).next()?;
    let mut segments: Vec<&'a str> = path.split('/').collect();
    if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
        segments.truncate(segments.len() - 2);
    }
    let n = segments.len();
    if n < 2 || segments[n - 1].is_empty() {
        return None;
    }
    let candidate = segments[n - 2];
    let known = if ev.model().is_type("Resource") {
        ev.model().is_resource(candidate)
    } else {
        candidate.starts_with(|c: char| c.is_ascii_uppercase())
    };
    known.then_some(candidate)
}
