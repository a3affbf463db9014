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

/// The documentation of `Patient/[id]/$summary`, served by every server.
const SUMMARY: &str = "The International Patient Summary of the person of Patient [id], as a \
     document Bundle, composed from every Patient the EMPI links to it (at a hub: the nodes' \
     published copies, so it answers while a node is offline); Patient/$summary is the summary \
     of a patient-context token's own patient.";

/// The canonical URL of `Patient/$locate` (Renkei's own operation).
pub const LOCATE_DEFINITION: &str = "https://renkei.dev/fhir/OperationDefinition/Patient-locate";

/// The documentation of `Patient/$locate`, served by a hub.
const LOCATE: &str = "The record locator: which nodes hold records of a person and which kinds \
     of data each holds, with when they last changed. By identifier=system|value, patient (a \
     hub Patient), source (the calling node's own Patient id), or family, given, birthdate and \
     gender through the EMPI. A network in privacy mode asks by the keyed hash of each value.";

/// The documentation of `_network`, at a node.
const NETWORK: &str = "_network=true asks the network through this node's hub: the record \
     locator names the nodes holding the person's records, each is queried with a hub-issued \
     token naming the requester and purpose of use, and the answers are merged (absolute \
     references, one Provenance per node, a warning naming a node that did not answer). On \
     Patient/[id]/$everything, Patient/[id]/[type], and [type]?patient=[id] (or \
     subject=Patient/[id]; exactly one).";

/// The canonical URL of `$send` (Renkei's own operation).
pub const SEND_DEFINITION: &str = "https://renkei.dev/fhir/OperationDefinition/send";
/// The documentation of `$send`, at a node.
const SEND: &str = "Directed exchange: POST a Parameters with 'recipient' (an Organization of \
     the network's directory, or a node id) and 'document' (a document Bundle); it is signed, \
     queued durably (202) and delivered to the recipient node's inbox (a Task) exactly once, \
     with a delivery receipt (a Communication) kept here.";
/// The canonical URL of `ImagingStudy/$image-access` (Renkei's own operation).
pub const IMAGE_ACCESS_DEFINITION: &str =
    "https://renkei.dev/fhir/OperationDefinition/ImagingStudy-image-access";
/// The documentation of `ImagingStudy/$image-access`, at a node.
const IMAGE_ACCESS: &str = "POST a Parameters with 'study' (an ImagingStudy's URL at the node \
     holding it): a short-lived token for that node's DICOMweb (WADO-RS) endpoint, which its \
     image server checks by introspection at the hub.";

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
    let node = state.exchange.as_ref().is_some_and(|e| e.link().is_some());
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
            if ty == "ImagingStudy" && node {
                resource["operation"] = json!([{"name": "image-access",
                    "definition": IMAGE_ACCESS_DEFINITION, "documentation": IMAGE_ACCESS}]);
            }
            if ty == "Patient" {
                resource["operation"] = patient_operations(state);
                if node {
                    resource["searchParam"]
                        .as_array_mut()
                        .into_iter()
                        .for_each(|p| {
                            p.push(json!({"name": "_network", "type": "token", "documentation": NETWORK}))
                        });
                }
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
    if node {
        statement["rest"][0]["operation"] = json!([{"name": "send",
            "definition": SEND_DEFINITION, "documentation": SEND}]);
    }
    if state.security.is_some() {
        // Where SMART clients (Python's fhirclient among them) find the endpoints.
        statement["rest"][0]["security"] =
            auth::discovery::capability_security(&crate::security::oauth::endpoints(base));
    }
    statement
}

/// The Patient operations: `$match`, `$everything` and `$summary` everywhere; `$locate` at a
/// hub; at a node, `$everything` documents `_network`.
fn patient_operations(state: &AppState) -> Value {
    let hub = state.exchange.as_ref().is_some_and(|e| e.is_hub());
    let node = state.exchange.as_ref().is_some_and(|e| e.link().is_some());
    let everything = if node {
        format!("{EVERYTHING_MDM} {NETWORK}")
    } else {
        EVERYTHING_MDM.to_owned()
    };
    let mut operations = vec![
        json!({"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"}),
        json!({"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
         "documentation": everything}),
        json!({"name": "summary", "definition": "http://hl7.org/fhir/uv/ips/OperationDefinition/summary",
         "documentation": SUMMARY}),
    ];
    if hub {
        operations.push(json!({"name": "locate", "definition": LOCATE_DEFINITION,
            "documentation": LOCATE}));
    }
    Value::Array(operations)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exchange::{Exchange, Role, node};
    use crate::{R4Validator, ServerConfig};

    struct Dir(std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn standalone() -> (AppState, Arc<store::SqliteStore>, Dir) {
        let dir = std::env::temp_dir().join(format!("renkei-caps-{}", uuid::Uuid::new_v4()));
        let store =
            Arc::new(store::SqliteStore::open_dir(&dir, Arc::new(store::BasicExtractor)).unwrap());
        let state = AppState::new(
            store.clone(),
            Arc::new(R4Validator),
            ServerConfig::default(),
        );
        (state, store, Dir(dir))
    }

    fn node_link() -> Arc<node::NodeLink> {
        let settings = node::NodeSettings {
            node: "a".into(),
            name: "Clinic A".into(),
            base_url: "http://a.test/fhir".into(),
            hub: "http://hub.test/fhir".into(),
            imaging_endpoint: None,
            sharing: exchange::publish::Sharing::Summaries,
            query_timeout: std::time::Duration::from_secs(5),
        };
        let key = auth::client_key::ClientKey::generate(0).unwrap();
        Arc::new(
            node::NodeLink::new(settings, key, None, &crate::tls::ClientTls::default()).unwrap(),
        )
    }

    fn patient(statement: &Value) -> Value {
        statement["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "Patient")
            .unwrap()
            .clone()
    }

    fn names(list: &Value) -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every role lists `$summary`; only a hub `$locate`; only a node `_network`. A
    /// standalone server's statement is otherwise what it was.
    #[test]
    fn operations_follow_the_part_the_server_plays() {
        let (state, store, _dir) = standalone();
        let alone = capability_statement(&state, "http://s.test/fhir");
        let p = patient(&alone);
        assert_eq!(names(&p["operation"]), ["match", "everything", "summary"]);
        assert!(!names(&p["searchParam"]).contains(&"_network".to_owned()));
        assert_eq!(p["operation"][1]["documentation"], EVERYTHING_MDM);
        assert!(!alone.to_string().contains("_network"));

        let hub = state.clone().with_exchange(Arc::new(Exchange {
            role: Role::Hub,
            state: store.clone(),
        }));
        let statement = capability_statement(&hub, "http://hub.test/fhir");
        let p = patient(&statement);
        assert_eq!(
            names(&p["operation"]),
            ["match", "everything", "summary", "locate"]
        );
        assert_eq!(p["operation"][3]["definition"], LOCATE_DEFINITION);
        assert!(!statement.to_string().contains("_network"));
        // Nothing but the Patient operations differ from a standalone server's.
        let without_patient = |s: &Value| {
            let mut s = s.clone();
            s["date"] = Value::Null;
            s["implementation"] = Value::Null;
            for r in s["rest"][0]["resource"].as_array_mut().unwrap() {
                if r["type"] == "Patient" {
                    r["operation"] = Value::Null;
                }
            }
            s
        };
        assert_eq!(without_patient(&statement), without_patient(&alone));

        let node = state.with_exchange(Arc::new(Exchange {
            role: Role::Node(node_link()),
            state: store,
        }));
        let statement = capability_statement(&node, "http://a.test/fhir");
        let p = patient(&statement);
        assert_eq!(names(&p["operation"]), ["match", "everything", "summary"]);
        let network = p["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "_network")
            .expect("_network documented at a node");
        assert_eq!(network["type"], "token");
        let doc = network["documentation"].as_str().unwrap();
        assert!(
            doc.contains("patient=[id]") && doc.contains("$everything"),
            "{doc}"
        );
        assert!(
            p["operation"][1]["documentation"]
                .as_str()
                .unwrap()
                .contains("_network=true")
        );
        // A node also sends documents and hands out image tokens.
        assert_eq!(names(&statement["rest"][0]["operation"]), ["send"]);
        let imaging = statement["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == "ImagingStudy")
            .unwrap();
        assert_eq!(names(&imaging["operation"]), ["image-access"]);
    }
}
