//! Which SMART permission a request needs, from its method and its path under `/fhir` (the
//! routes of [`crate::app`]), and which paths need no token at all. Batch and transaction
//! bundles are authorized entry by entry (`interactions::batch`), with the same function
//! applied to each entry's method and URL.

use auth::policy::RequestKind;
use axum::http::Method;

/// What a request needs before it may reach its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: discovery, the CapabilityStatement, health, the authorization endpoints.
    Public,
    /// A valid token; the handler authorizes each part (a batch or transaction bundle).
    Bundle,
    /// A valid token, and nothing it must be authorized for: a path no route serves (the
    /// handler answers 404 or 405).
    Token,
    /// A valid token whose scopes grant `kind` on the type (`None`: every type).
    Request(RequestKind, Option<String>),
}

/// Classifies `method` on the absolute `path` (`/fhir/Patient/1`, `/healthz`).
pub fn classify(method: &Method, path: &str) -> Needs {
    match path {
        "/healthz" | "/readyz" | "/.well-known/smart-configuration" => return Needs::Public,
        p if p.starts_with("/auth/") => return Needs::Public,
        // A node asks to join; nothing is granted until an operator approves it.
        "/exchange/register" => return Needs::Public,
        // What the hub publishes of a node: its public keys, for checking its signatures, and
        // its endpoint and pinned certificate.
        p if p.starts_with("/exchange/nodes/") => return Needs::Public,
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/fhir") else {
        return Needs::Token;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Needs::Token;
    }
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    classify_segments(method, &segments)
}

/// Classifies `method` on the path segments after the FHIR base (`["Patient", "1"]`).
pub fn classify_segments(method: &Method, segments: &[&str]) -> Needs {
    use RequestKind as K;
    let m = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let kind = |k: RequestKind, ty: &str| Needs::Request(k, Some(ty.to_owned()));
    match segments {
        [] => match *m {
            Method::GET => Needs::Request(K::SystemSearch, None),
            Method::POST => Needs::Bundle,
            _ => Needs::Token,
        },
        ["metadata"] | [".well-known", "smart-configuration"] => Needs::Public,
        // Sending a document is writing a communication.
        ["$send"] => kind(K::Create, "Communication"),
        ["_history"] => Needs::Request(K::SystemSearch, None),
        [ty] => match *m {
            Method::GET => kind(K::Search, ty),
            Method::POST => kind(K::Create, ty),
            Method::PUT | Method::PATCH => kind(K::Update, ty),
            Method::DELETE => kind(K::Delete, ty),
            _ => Needs::Token,
        },
        ["Patient", "$ihe-pix"] => kind(K::Pix, "Patient"),
        // Where a person's records are: a search of Patients across the network.
        ["Patient", "$locate"] => kind(K::Search, "Patient"),
        // A token to see another node's images is a read of its study.
        ["ImagingStudy", "$image-access"] => kind(K::Read, "ImagingStudy"),
        // A summary reads the compartment like `$everything` (the handler reads with the
        // request's access policy).
        ["Patient", "$summary"] => kind(K::Search, "Patient"),
        [ty, _id, "$summary"] => kind(K::Search, ty),
        [ty, "$match"] => kind(K::Match, ty),
        [ty, op] if is_empi_decision(op) => kind(K::EmpiDecision, ty),
        [ty, "_search"] | [ty, "_history"] => kind(K::Search, ty),
        [ty, _id] => match *m {
            Method::GET => kind(K::Read, ty),
            Method::PUT | Method::PATCH => kind(K::Update, ty),
            Method::DELETE => kind(K::Delete, ty),
            // POST [type]/[id] is no interaction, and an operation this server does not
            // offer: the handler says so, to a caller who may create the type.
            _ => kind(K::Create, ty),
        },
        [ty, _id, "_history"] | [ty, _id, "_history", _] => kind(K::Read, ty),
        // `$everything` reaches every type of the compartment; the handler narrows it to
        // the types the token may search.
        [ty, _id, "$everything"] => kind(K::Search, ty),
        [_, _id, compartment_type] => kind(K::Search, compartment_type),
        _ => Needs::Token,
    }
}

/// The EMPI's manual decisions (`$empi-link`, ...).
fn is_empi_decision(op: &str) -> bool {
    matches!(
        op,
        "$empi-link" | "$empi-unlink" | "$empi-merge" | "$empi-unmerge"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(method: Method, path: &str) -> Needs {
        classify(&method, path)
    }

    fn req(k: RequestKind, ty: Option<&str>) -> Needs {
        Needs::Request(k, ty.map(str::to_owned))
    }

    #[test]
    fn every_route_needs_what_its_interaction_does() {
        use RequestKind as K;
        for (m, path, want) in [
            (Method::GET, "/fhir/metadata", Needs::Public),
            (Method::GET, "/healthz", Needs::Public),
            (Method::POST, "/auth/token", Needs::Public),
            (
                Method::GET,
                "/fhir/.well-known/smart-configuration",
                Needs::Public,
            ),
            (Method::POST, "/fhir", Needs::Bundle),
            (Method::GET, "/fhir", req(K::SystemSearch, None)),
            (Method::GET, "/fhir/_history", req(K::SystemSearch, None)),
            (
                Method::GET,
                "/fhir/Observation",
                req(K::Search, Some("Observation")),
            ),
            (
                Method::POST,
                "/fhir/Observation",
                req(K::Create, Some("Observation")),
            ),
            (
                Method::PUT,
                "/fhir/Observation",
                req(K::Update, Some("Observation")),
            ),
            (
                Method::DELETE,
                "/fhir/Observation",
                req(K::Delete, Some("Observation")),
            ),
            (
                Method::POST,
                "/fhir/Observation/_search",
                req(K::Search, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Observation/_history",
                req(K::Search, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Observation/1",
                req(K::Read, Some("Observation")),
            ),
            (
                Method::HEAD,
                "/fhir/Observation/1",
                req(K::Read, Some("Observation")),
            ),
            (
                Method::PUT,
                "/fhir/Observation/1",
                req(K::Update, Some("Observation")),
            ),
            (
                Method::PATCH,
                "/fhir/Observation/1",
                req(K::Update, Some("Observation")),
            ),
            (
                Method::DELETE,
                "/fhir/Observation/1",
                req(K::Delete, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Observation/1/_history",
                req(K::Read, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Observation/1/_history/2",
                req(K::Read, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Patient/1/Observation",
                req(K::Search, Some("Observation")),
            ),
            (
                Method::GET,
                "/fhir/Patient/1/$everything",
                req(K::Search, Some("Patient")),
            ),
            (
                Method::POST,
                "/fhir/Patient/$match",
                req(K::Match, Some("Patient")),
            ),
            (
                Method::GET,
                "/fhir/Patient/$ihe-pix",
                req(K::Pix, Some("Patient")),
            ),
            (
                Method::POST,
                "/fhir/Patient/$ihe-pix",
                req(K::Pix, Some("Patient")),
            ),
            (
                Method::POST,
                "/fhir/Patient/$empi-merge",
                req(K::EmpiDecision, Some("Patient")),
            ),
            (Method::GET, "/elsewhere", Needs::Token),
            (Method::GET, "/fhirx", Needs::Token),
            (Method::GET, "/fhir/a/b/c/d/e", Needs::Token),
        ] {
            assert_eq!(needs(m.clone(), path), want, "{m} {path}");
        }
    }
}
