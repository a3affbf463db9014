//! Random HTTP requests against the router over a temporary SQLite store: odd paths under
//! `/fhir` (types, ids with odd bytes, `$operations`), query strings (search parameters with
//! modifiers, prefixes, chains, `_include`, `_sort`, `_count`, broken percent-escapes), headers
//! (`Accept`, `Prefer`, `If-Match`, `If-None-Exist`, `Content-Type`) and bodies (random,
//! truncated and deeply nested JSON, huge numbers, bundles, patches). Whatever arrives, the
//! server does not panic, does not answer 500 (client input is never the server's fault), and
//! every error answer that has a body is a FHIR OperationOutcome.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use server::{AppState, R4Validator, ServerConfig};
use store::{BasicExtractor, SqliteStore};
use tower::ServiceExt;

/// A random request, as sent.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    uri: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------
// Paths

fn resource_type() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "Patient", "Observation", "Encounter", "Condition", "Practitioner", "Organization",
            "Bundle", "Consent", "AuditEvent",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["patient", "Foo", "", "metadata", "_history", "_search"])
            .prop_map(str::to_owned),
    ]
}

/// Bytes as they may appear in a path segment, percent-encoded where a URI needs it.
fn encode_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~$".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["p1", "o1", "e1", "missing", "1", "p1.x", "-"])
            .prop_map(str::to_owned),
        2 => "[A-Za-z0-9.-]{1,70}",
        1 => prop::collection::vec(any::<u8>(), 1..6).prop_map(|b| encode_bytes(&b)),
        1 => prop::sample::select(vec!["%00", "%FF", "%C3%28", "%E2%82", "%2F", "%", "%zz", "%25"])
            .prop_map(str::to_owned),
    ]
}

fn operation() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "$match",
        "$everything",
        "$ihe-pix",
        "$empi-link",
        "$empi-unlink",
        "$empi-merge",
        "$empi-unmerge",
        "$export",
        "$",
        "$validate",
    ])
    .prop_map(str::to_owned)
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => resource_type(),
        3 => id(),
        2 => operation(),
        1 => prop::sample::select(vec!["_history", "_search", "1", "0", "99999999999999999999", "-1"])
            .prop_map(str::to_owned),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        // The shapes the router knows, with random parts.
        3 => (resource_type(), id()).prop_map(|(t, i)| format!("/fhir/{t}/{i}")),
        2 => resource_type().prop_map(|t| format!("/fhir/{t}")),
        1 => resource_type().prop_map(|t| format!("/fhir/{t}/_search")),
        1 => (resource_type(), id(), segment()).prop_map(|(t, i, s)| format!("/fhir/{t}/{i}/{s}")),
        1 => (resource_type(), id(), segment()).prop_map(|(t, i, v)| format!("/fhir/{t}/{i}/_history/{v}")),
        1 => (id(), operation()).prop_map(|(i, o)| format!("/fhir/Patient/{i}/{o}")),
        1 => operation().prop_map(|o| format!("/fhir/Patient/{o}")),
        // Anything of one to five segments.
        2 => prop::collection::vec(segment(), 0..5).prop_map(|s| format!("/fhir/{}", s.join("/"))),
        1 => prop::sample::select(vec!["/fhir", "/fhir/", "/fhir/metadata", "/fhir/_history", "/healthz", "/readyz", "/", "//fhir"])
            .prop_map(str::to_owned),
    ]
}

// ---------------------------------------------------------------------------------------
// Query strings

fn param_name() -> impl Strategy<Value = String> {
    let base = prop::sample::select(vec![
        "name",
        "family",
        "given",
        "birthdate",
        "gender",
        "identifier",
        "subject",
        "patient",
        "code",
        "date",
        "value-quantity",
        "status",
        "general-practitioner",
        "organization",
        "_id",
        "_lastUpdated",
        "_tag",
        "_security",
        "_profile",
        "_text",
        "_content",
        "_list",
        "_query",
        "_filter",
        "unknown-param",
        "",
    ]);
    let modifier = prop::sample::select(vec![
        "",
        "",
        "",
        ":exact",
        ":contains",
        ":missing",
        ":not",
        ":text",
        ":above",
        ":below",
        ":in",
        ":not-in",
        ":identifier",
        ":of-type",
        ":Patient",
        ":iterate",
        ":",
        "::",
    ]);
    let chain = prop::sample::select(vec![
        "",
        "",
        "",
        ".name",
        ".identifier",
        ".organization.name",
        ".subject.name",
        ".",
        "..",
    ]);
    let special = prop::sample::select(vec![
        "_include",
        "_revinclude",
        "_include:iterate",
        "_revinclude:iterate",
        "_sort",
        "_count",
        "_summary",
        "_elements",
        "_total",
        "_type",
        "_cursor",
        "_format",
        "_pretty",
        "_mdm",
        "_since",
        "_has:Observation:subject:code",
        "_has:Observation:patient:_has:Encounter:subject:status",
        "_has:",
        "_has:Observation",
        "_has:Foo:bar:baz",
        "targetSystem",
        "sourceIdentifier",
    ]);
    prop_oneof![
        3 => (base, modifier, chain).prop_map(|(b, m, c)| format!("{b}{m}{c}")),
        2 => special.prop_map(str::to_owned),
        1 => "[a-z_:.-]{0,10}",
    ]
}

fn param_value() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec![
        "", "", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "p1",
            "Patient/p1",
            "http://test/fhir/Patient/p1",
            "Patient:subject",
            "Observation:subject",
            "Observation:subject:Patient",
            "Patient:general-practitioner",
            "*",
            "Foo:bar",
            "name,-birthdate",
            "-_lastUpdated",
            "_id,,",
            "0",
            "1",
            "-1",
            "1000000",
            "99999999999999999999999",
            "1e999",
            "-0",
            "NaN",
            "true",
            "false",
            "count",
            "data",
            "text",
            "accurate",
            "estimate",
            "2024",
            "2024-02-29",
            "2024-13-45",
            "2024-01-01T00:00:00Z",
            "2024-01-01T25:61:00+99:00",
            "9999-12-31T23:59:59.999999999+14:00",
            "0000",
            "http://loinc.org|1234-5",
            "|",
            "||",
            "|x",
            "a,b,,c",
            "5.4|http://unitsofmeasure.org|mg",
            "5.4||",
            "%",
            "%FF",
            "%C3%28",
            "%zz",
            "%00",
            "\u{e9}",
            "Patient,Observation",
            "Foo",
            "id,name",
            "Tr4Gb2",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
        any::<String>(),
    ];
    (prefix, value).prop_map(|(p, v)| format!("{p}{v}"))
}

/// Percent-encodes what a URI cannot carry raw, but leaves `%` alone half the time so that
/// broken escapes reach the server.
fn encode_query_part(s: &str, keep_percent: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let raw = b.is_ascii_alphanumeric()
            || b"-._~:,/|*!$'()+;@?".contains(&b)
            || (b == b'%' && keep_percent);
        if raw {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec((param_name(), param_value(), any::<bool>()), 0..5).prop_map(|ps| {
        ps.iter()
            .map(|(k, v, keep)| {
                format!(
                    "{}={}",
                    encode_query_part(k, *keep),
                    encode_query_part(v, *keep)
                )
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

/// Parameters the server takes, with values it understands or nearly so.
fn plausible_query() -> impl Strategy<Value = String> {
    let pair = prop::sample::select(vec![
        "name=Sato",
        "family:exact=Sato",
        "given:contains=ha",
        "birthdate=ge1980",
        "birthdate=1980-02-29",
        "gender=female",
        "identifier=http://x|1",
        "identifier=|1",
        "subject=Patient/p1",
        "subject:Patient=p1",
        "subject.name=Sato",
        "patient=p1",
        "code=http://loinc.org|1234-5",
        "code:text=x",
        "date=lt2025",
        "date=2024-01",
        "status=final",
        "value-quantity=gt5|http://unitsofmeasure.org|mg",
        "value-quantity=5.4",
        "_id=p1,o1",
        "_lastUpdated=gt2000-01-01",
        "_count=0",
        "_count=2",
        "_count=100000",
        "_sort=-_lastUpdated",
        "_sort=birthdate,name",
        "_include=Observation:subject",
        "_include=*",
        "_revinclude=Observation:subject",
        "_include:iterate=Patient:organization",
        "_summary=count",
        "_summary=true",
        "_elements=id,name",
        "_total=accurate",
        "_type=Patient,Observation",
        "_has:Observation:subject:code=1234-5",
        "_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV",
        "_tag:not=x",
        "gender:missing=true",
        "organization.name=Clinic",
    ]);
    (
        prop::collection::vec(pair, 1..4),
        prop::option::weighted(0.3, query()),
    )
        .prop_map(|(pairs, noise)| {
            let mut q = pairs.join("&");
            if let Some(n) = noise {
                q.push('&');
                q.push_str(&n);
            }
            q
        })
}

/// Valid resources of the seeded kinds, sometimes with one member replaced at random.
fn plausible_resource(ty: String) -> impl Strategy<Value = Value> {
    let template = match ty.as_str() {
        "Patient" => json!({"name": [{"family": "Sato", "given": ["Hana"]}], "gender": "female",
            "birthDate": "1980-02-29", "identifier": [{"system": "http://x", "value": "1"}],
            "managingOrganization": {"reference": "Organization/org1"}}),
        "Observation" => json!({"status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-01",
            "valueQuantity": {"value": 5.4, "unit": "mg"}}),
        "Encounter" => json!({"status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"}}),
        _ => json!({"name": "Clinic"}),
    };
    (prop::option::weighted(0.5, (key(), json_value()))).prop_map(move |change| {
        let mut r = template.clone();
        if let Some((k, v)) = change {
            r[k] = v;
        }
        r
    })
}

// ---------------------------------------------------------------------------------------
// Headers

fn header_value(options: Vec<&'static str>) -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        4 => prop::sample::select(options).prop_map(|s| s.as_bytes().to_vec()),
        1 => "[ -~]{0,16}".prop_map(String::into_bytes),
        // Bytes outside ASCII: a valid header value, but not a string.
        1 => prop::collection::vec(0x80u8..=0xff, 1..4),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let accept = header_value(vec![
        "application/fhir+json",
        "application/json",
        "*/*",
        "application/fhir+xml",
        "text/html",
        "",
        "application/fhir+json;q=0.1, application/xml",
        ";;;",
    ]);
    let prefer = header_value(vec![
        "return=minimal",
        "return=representation",
        "return=OperationOutcome",
        "handling=lenient",
        "handling=strict",
        "return=minimal, handling=lenient",
        "respond-async",
    ]);
    let if_match = header_value(vec![
        "W/\"1\"",
        "\"1\"",
        "W/\"2\"",
        "W/\"x\"",
        "W/\"99999999999999999999999\"",
        "W/\"-1\"",
        "*",
        "",
        "W/",
    ]);
    let if_none_exist = header_value(vec![
        "identifier=x",
        "identifier=http://x|1",
        "Patient?identifier=x",
        "Observation?code=1",
        "_id=p1",
        "name=%FF",
        "?",
        "",
        "unknown=1",
        "_count=1",
    ]);
    let content_type = header_value(vec![
        "application/fhir+json",
        "application/fhir+json; charset=utf-8",
        "application/json",
        "application/json-patch+json",
        "application/x-www-form-urlencoded",
        "application/fhir+xml",
        "text/plain",
        "",
    ]);
    let other = header_value(vec![
        "W/\"1\"",
        "Mon, 01 Jan 2024 00:00:00 GMT",
        "yesterday",
        "req-1",
    ]);
    (
        prop::option::weighted(0.15, accept),
        prop::option::weighted(0.3, prefer),
        prop::option::weighted(0.2, if_match),
        prop::option::weighted(0.2, if_none_exist),
        prop::option::weighted(0.15, content_type),
        prop::option::weighted(0.1, other.clone()),
        prop::option::weighted(0.1, other),
    )
        .prop_map(|(a, p, m, n, c, inm, ims)| {
            let mut h = Vec::new();
            for (name, v) in [
                ("accept", a),
                ("prefer", p),
                ("if-match", m),
                ("if-none-exist", n),
                ("content-type", c),
                ("if-none-match", inm.clone()),
                ("if-modified-since", ims),
                ("x-request-id", inm),
            ] {
                if let Some(v) = v {
                    h.push((name, v));
                }
            }
            h
        })
}

// ---------------------------------------------------------------------------------------
// Bodies

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![
            "resourceType", "id", "meta", "versionId", "text", "name", "family", "given",
            "birthDate", "gender", "identifier", "system", "value", "subject", "reference",
            "code", "coding", "status", "valueQuantity", "effectiveDateTime", "type", "entry",
            "request", "method", "url", "resource", "fullUrl", "ifNoneExist", "ifMatch",
            "parameter", "valueBoolean", "valueInteger", "valueString", "valueReference",
            "op", "path", "from", "extension", "contained", "active", "link", "other",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,8}",
    ]
}

fn leaf_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Patient", "Observation", "Bundle", "Parameters", "batch", "transaction",
            "searchset", "GET", "POST", "PUT", "DELETE", "PATCH", "Patient/p1", "Patient/missing",
            "urn:uuid:0b7a1f36-1b4b-4f1e-9e0b-3c1c7a1a0d11", "Patient?identifier=x", "Patient/p1/_history/1",
            "Observation?subject=Patient/p1", "final", "male", "2024-02-30", "2024", "http://x",
            "replace", "add", "remove", "test", "/name", "/id", "/-", "", "resource",
            "onlyCertainMatches", "count", "sourcePatient", "targetPatient", "\u{0}",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        leaf_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A resource of a random type with random members (sometimes a valid-looking one).
fn resource() -> impl Strategy<Value = Value> {
    (resource_type(), prop::option::of(id()), json_value()).prop_map(|(ty, id, rest)| {
        let mut r = match rest {
            Value::Object(m) => Value::Object(m),
            other => json!({"extension": other}),
        };
        r["resourceType"] = json!(ty);
        if let Some(id) = id {
            r["id"] = json!(id);
        }
        r
    })
}

fn bundle() -> impl Strategy<Value = Value> {
    let entry = (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "x"]),
        prop_oneof![
            path(),
            query(),
            (path(), query()).prop_map(|(p, q)| format!("{p}?{q}"))
        ],
        prop::option::of(resource()),
        prop::option::of(leaf_string()),
    )
        .prop_map(|(method, url, resource, full_url)| {
            let url = url.trim_start_matches("/fhir/").to_owned();
            let mut e = json!({"request": {"method": method, "url": url}});
            if let Some(r) = resource {
                e["resource"] = r;
            }
            if let Some(f) = full_url {
                e["fullUrl"] = json!(f);
            }
            e
        });
    (
        prop::sample::select(vec!["batch", "transaction", "searchset", "x"]),
        prop::collection::vec(entry, 0..4),
    )
        .prop_map(|(ty, entries)| json!({"resourceType": "Bundle", "type": ty, "entry": entries}))
}

fn patch() -> impl Strategy<Value = Value> {
    let op = (
        prop::sample::select(vec![
            "add", "remove", "replace", "move", "copy", "test", "x",
        ]),
        prop::sample::select(vec![
            "/id",
            "/resourceType",
            "/name",
            "/name/0",
            "/name/-",
            "/meta",
            "",
            "/",
            "/~2",
            "/gender",
        ]),
        json_value(),
    )
        .prop_map(
            |(op, path, value)| json!({"op": op, "path": path, "from": "/name", "value": value}),
        );
    prop::collection::vec(op, 0..4).prop_map(Value::Array)
}

fn match_parameters() -> impl Strategy<Value = Value> {
    (resource(), json_value(), json_value()).prop_map(|(r, c, o)| {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": r},
            {"name": "count", "valueInteger": c},
            {"name": "onlyCertainMatches", "valueBoolean": o},
        ]})
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let json_body = prop_oneof![
        3 => resource(),
        2 => bundle(),
        1 => patch(),
        1 => match_parameters(),
        1 => json_value(),
    ];
    prop_oneof![
        2 => Just(None),
        6 => json_body.clone().prop_map(|v| Some(v.to_string().into_bytes())),
        // Cut anywhere.
        1 => (json_body, any::<prop::sample::Index>()).prop_map(|(v, at)| {
            let text = v.to_string().into_bytes();
            let cut = at.index(text.len() + 1);
            Some(text[..cut].to_vec())
        }),
        // Nested past any parser's limit.
        1 => (1usize..3000).prop_map(|depth| {
            let mut s = String::from(r#"{"resourceType":"Patient","extension":"#);
            s.push_str(&"[".repeat(depth));
            s.push_str(&"]".repeat(depth));
            s.push('}');
            Some(s.into_bytes())
        }),
        // Numbers past any machine type.
        1 => prop::sample::select(vec![
            r#"{"resourceType":"Patient","multipleBirthInteger":1e400}"#,
            r#"{"resourceType":"Patient","multipleBirthInteger":123456789012345678901234567890}"#,
            r#"{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":-1e308}}"#,
            r#"{"resourceType":"Patient","birthDate":"99999-01-01"}"#,
            r#"{"resourceType":"Parameters","parameter":[{"name":"count","valueInteger":18446744073709551615}]}"#,
        ])
        .prop_map(|s| Some(s.as_bytes().to_vec())),
        1 => query().prop_map(|q| Some(q.into_bytes())),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        3 => Just(Method::POST),
        2 => Just(Method::PUT),
        1 => Just(Method::PATCH),
        1 => Just(Method::DELETE),
        1 => Just(Method::HEAD),
        1 => Just(Method::OPTIONS),
    ]
}

/// Any method, path, query, headers and body.
fn random_request() -> impl Strategy<Value = Req> {
    (
        method(),
        path(),
        prop::option::of(query()),
        headers(),
        body(),
    )
        .prop_map(|(method, path, query, headers, body)| {
            let uri = match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            Req {
                method,
                uri,
                headers,
                body,
            }
        })
}

/// A request of a shape the server serves (a read, a search, a write of the path's type,
/// a patch, a bundle, an operation) with random parts, so that most reach the store.
fn shaped_request() -> impl Strategy<Value = Req> {
    let ty = || {
        prop::sample::select(vec!["Patient", "Observation", "Encounter", "Organization"])
            .prop_map(str::to_owned)
    };
    let fhir_json = || ("content-type", b"application/fhir+json".to_vec());
    let typed = |ty: &str, id: Option<&str>, rest: Value| {
        let mut r = match rest {
            Value::Object(m) => Value::Object(m),
            other => json!({"extension": other}),
        };
        r["resourceType"] = json!(ty);
        if let Some(id) = id {
            r["id"] = json!(id);
        }
        Some(r.to_string().into_bytes())
    };
    let read = (ty(), id(), prop::option::of(segment())).prop_map(|(t, i, v)| {
        let uri = match v {
            Some(v) => format!("/fhir/{t}/{i}/_history/{v}"),
            None => format!("/fhir/{t}/{i}"),
        };
        (Method::GET, uri, vec![], None)
    });
    let search = (
        ty(),
        prop_oneof![plausible_query(), query()],
        prop::sample::select(vec!["type", "system", "compartment", "everything", "post"]),
    )
        .prop_map(move |(t, q, how)| match how {
            "type" => (Method::GET, format!("/fhir/{t}?{q}"), vec![], None),
            "system" => (Method::GET, format!("/fhir?{q}"), vec![], None),
            "compartment" => (
                Method::GET,
                format!("/fhir/Patient/p1/{t}?{q}"),
                vec![],
                None,
            ),
            "everything" => (
                Method::GET,
                format!("/fhir/Patient/p1/$everything?{q}"),
                vec![],
                None,
            ),
            _ => (
                Method::POST,
                format!("/fhir/{t}/_search"),
                vec![(
                    "content-type",
                    b"application/x-www-form-urlencoded".to_vec(),
                )],
                Some(q.into_bytes()),
            ),
        });
    let write = (
        ty().prop_flat_map(|t| {
            let rest = prop_oneof![3 => plausible_resource(t.clone()), 1 => json_value()];
            (Just(t), rest)
        }),
        id(),
        prop::sample::select(vec!["create", "update", "conditional", "delete"]),
        query(),
    )
        .prop_map(move |((t, rest), i, how, q)| match how {
            "create" => (
                Method::POST,
                format!("/fhir/{t}"),
                vec![fhir_json()],
                typed(&t, None, rest),
            ),
            "update" => (
                Method::PUT,
                format!("/fhir/{t}/{i}"),
                vec![fhir_json()],
                typed(&t, Some(&i), rest),
            ),
            "conditional" => (
                Method::PUT,
                format!("/fhir/{t}?{q}"),
                vec![fhir_json()],
                typed(&t, None, rest),
            ),
            _ => (Method::DELETE, format!("/fhir/{t}?{q}"), vec![], None),
        });
    let patch = (ty(), id(), patch()).prop_map(|(t, i, p)| {
        (
            Method::PATCH,
            format!("/fhir/{t}/{i}"),
            vec![("content-type", b"application/json-patch+json".to_vec())],
            Some(p.to_string().into_bytes()),
        )
    });
    let bundle = bundle().prop_map(move |b| {
        (
            Method::POST,
            "/fhir".to_owned(),
            vec![fhir_json()],
            Some(b.to_string().into_bytes()),
        )
    });
    let operation = (operation(), match_parameters(), query()).prop_map(move |(op, p, q)| {
        (
            Method::POST,
            format!("/fhir/Patient/{op}?{q}"),
            vec![fhir_json()],
            Some(p.to_string().into_bytes()),
        )
    });
    (
        prop_oneof![
            3 => read,
            5 => search,
            4 => write,
            1 => patch,
            2 => bundle,
            1 => operation,
        ],
        headers(),
    )
        .prop_map(|((method, uri, mut headers, body), extra)| {
            // The shape's own headers first; a random one of the same name comes after it.
            headers.extend(extra);
            Req {
                method,
                uri,
                headers,
                body,
            }
        })
}

fn request() -> impl Strategy<Value = Req> {
    prop_oneof![3 => shaped_request(), 2 => random_request()]
}

// ---------------------------------------------------------------------------------------
// The run

struct Harness {
    state: AppState,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness() -> Harness {
    let dir = std::env::temp_dir().join(format!("renkei-fuzz-{}", uuid::Uuid::new_v4()));
    let store = SqliteStore::open_dir(&dir, Arc::new(BasicExtractor)).expect("store");
    let config = ServerConfig {
        base_url: Some("http://test/fhir".into()),
        ..ServerConfig::default()
    };
    Harness {
        state: AppState::new(Arc::new(store), Arc::new(R4Validator), config),
        dir,
    }
}

/// Status and body of one request; `None` when the request cannot even be built (a URI the
/// `http` crate refuses never reaches a server).
async fn send(h: &Harness, r: &Req) -> Option<(StatusCode, Vec<u8>)> {
    let mut b = Request::builder().method(r.method.clone()).uri(&r.uri);
    for (k, v) in &r.headers {
        b = b.header(*k, v.as_slice());
    }
    let req = b
        .body(Body::from(r.body.clone().unwrap_or_default()))
        .ok()?;
    let res = server::app(h.state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Some((status, bytes.to_vec()))
}

/// A few resources for reads, searches, includes and `$everything` to find.
async fn seed(h: &Harness) {
    let seeds = [
        (
            "/fhir/Organization/org1",
            json!({"resourceType": "Organization", "id": "org1", "name": "Clinic"}),
        ),
        (
            "/fhir/Patient/p1",
            json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Sato", "given": ["Hana"]}],
                   "gender": "female", "birthDate": "1980-02-29",
                   "identifier": [{"system": "http://x", "value": "1"}],
                   "managingOrganization": {"reference": "Organization/org1"}}),
        ),
        (
            "/fhir/Observation/o1",
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                   "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
                   "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-01",
                   "valueQuantity": {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}),
        ),
        (
            "/fhir/Encounter/e1",
            json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "subject": {"reference": "Patient/p1"}}),
        ),
    ];
    for (uri, body) in seeds {
        let r = Req {
            method: Method::PUT,
            uri: uri.into(),
            headers: vec![("content-type", b"application/fhir+json".to_vec())],
            body: Some(body.to_string().into_bytes()),
        };
        let (status, bytes) = send(h, &r).await.expect("seed request");
        assert!(
            status.is_success(),
            "seeding {uri}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// The property for one request: no 500, and an error's body is an OperationOutcome.
fn check(r: &Req, status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    let shown = || {
        format!(
            "{} {} {:?} body {:?}\n-> {status} {}",
            r.method,
            r.uri,
            r.headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>(),
            r.body.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(body)
        )
    };
    prop_assert!(
        status != StatusCode::INTERNAL_SERVER_ERROR,
        "a 500 for client input: {}",
        shown()
    );
    if (status.is_client_error() || status.is_server_error()) && !body.is_empty() {
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| TestCaseError::fail(format!("error body is not JSON: {}", shown())))?;
        prop_assert_eq!(
            v["resourceType"].as_str(),
            Some("OperationOutcome"),
            "{}",
            shown()
        );
    }
    Ok(())
}

#[test]
fn random_requests_never_panic_or_fail_the_server() {
    // The request strategy is deeply nested (bundles of entries of paths, queries and
    // recursive JSON); building its values in a debug build needs more than a test thread's
    // 2 MiB of stack.
    std::thread::Builder::new()
        .stack_size(64 * 1024 * 1024)
        .spawn(run)
        .expect("thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn run() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let h = harness();
    rt.block_on(seed(&h));
    let mut runner = TestRunner::new(Config {
        // `FUZZ_CASES=100000` for a longer hunt.
        cases: std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(6000),
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&request(), |r| {
        // `FUZZ_TRACE=1 cargo test -p server --test fuzz_http -- --nocapture` shows each
        // request before it is sent (the last one shown is the culprit of a crash).
        if std::env::var_os("FUZZ_TRACE").is_some() {
            eprintln!(
                "{} {} {:?} {:?}",
                r.method,
                r.uri,
                r.headers,
                r.body.as_deref().map(String::from_utf8_lossy)
            );
        }
        match rt.block_on(send(&h, &r)) {
            Some((status, body)) => {
                *statuses.borrow_mut().entry(status.as_u16()).or_default() += 1;
                if std::env::var_os("FUZZ_TRACE").is_some() {
                    eprintln!(
                        "-> {status} {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    );
                }
                check(&r, status, &body)
            }
            None => Ok(()),
        }
    });
    // What the requests got, for judging the generators (`-- --nocapture` shows it).
    eprintln!("statuses: {:?}", statuses.borrow());
    if let Err(e) = result {
        panic!("{e}");
    }
}
