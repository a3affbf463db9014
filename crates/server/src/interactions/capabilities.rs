//! [capabilities](https://hl7.org/fhir/R4/http.html#capabilities): `GET [base]/metadata`, a
//! CapabilityStatement generated from what this server implements: the interactions routed in
//! `crate::app`, the resource types the validator knows, and the search parameters the store's
//! index extractor declares.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::http::{Fhir, Reply};

/// Type-level and instance-level interactions, each routed in [`crate::app`].
pub const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// System-level interactions, each routed in [`crate::app`].
pub const SYSTEM_INTERACTIONS: &[&str] =
    &["transaction", "batch", "search-system", "history-system"];

/// Appended to every reference parameter's documentation: the `:mdm` modifier.
const MDM_MODIFIER: &str = " (modifier :mdm, HAPI FHIR's MDM convention: a Patient reference \
     stands for every Patient of its person, the EMPI's golden record and each source it links)";

/// The documentation of `Patient/[id]/$everything`: its `_mdm` parameter.
const EVERYTHING_MDM: &str = "_since, _type, _count and paging as in R4. Of a golden record \
     (the EMPI's), and of a source with _mdm=true, it is the person's: the golden record, every \
     source it links and all of their compartments, read from the links when asked (an unlink \
     shows at once); _mdm=false keeps it to the Patient named.";

pub async fn handler(State(state): State<AppState>, fhir: Fhir) -> Result<Response, ApiError> {
    Ok(
        Reply::json(StatusCode::OK, capability_statement(&state, &fhir.base))
            .into_http(fhir.pretty),
    )
}

pub fn capability_statement(state: &AppState, base: &str) -> Value {
    let common = [
        json!({"name": "_id", "type": "token", "documentation": "Logical id (comma = OR)"}),
        json!({"name": "_lastUpdated", "type": "date", "documentation": "meta.lastUpdated, with eq ne gt lt ge le"}),
    ];
    let resources: Vec<Value> = state
        .validator
        .resource_types()
        .into_iter()
        .map(|ty| {
            let mut params: Vec<Value> = common.to_vec();
            params.extend(state.store.extractor().parameters(ty).into_iter().map(|p| {
                let mut documentation = p.documentation;
                if p.kind == store::ParamType::Reference {
                    documentation.push_str(MDM_MODIFIER);
                }
                json!({"name": p.name, "type": p.kind.as_str(), "documentation": documentation})
            }));
            let mut resource = json!({
                "type": ty,
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
                "searchInclude": ["*"],
                "searchRevInclude": ["*"],
            });
            if ty == "Patient" {
                resource["operation"] = json!([
                    {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"},
                    {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                     "documentation": EVERYTHING_MDM},
                ]);
            }
            resource
        })
        .collect();
    let mut statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": store::time::format_instant(store::time::now_micros()),
        "kind": "instance",
        "software": {"name": "Renkei", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {
            "description": format!("Renkei FHIR R4 server ({} store)", state.store.backend()),
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": SYSTEM_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
            "searchParam": common.to_vec(),
        }],
    });
    if state.security.is_some() {
        // Where SMART clients (Python's fhirclient among them) find the endpoints.
        statement["rest"][0]["security"] =
            auth::discovery::capability_security(&crate::security::oauth::endpoints(base));
    }
    statement
}
