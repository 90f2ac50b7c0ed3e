//! The `OpenAPI` 3.1 description of the read-only API, served at
//! `/api/v1/openapi.json`.
//!
//! Built from the same closed vocabularies the API serves (reasons,
//! condition types, environment types), so the document cannot fall behind
//! them. Every response body is described with `additionalProperties:
//! false` (or `unevaluatedProperties`): a field the handlers add without
//! describing it here fails the tests that check every endpoint's real
//! responses against this document, and the schemathesis run.
//! Pure: a function from nothing to JSON.

use serde_json::{Value, json};

use crate::claim::EnvironmentType;
use crate::condition::{ConditionType, Reason};
use crate::view::list::{DEFAULT_LIMIT, MAX_LIMIT};

/// Object schemas with every property required (nullable ones say so) and
/// no others allowed.
fn object(properties: &Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn nullable(schema: &Value) -> Value {
    json!({ "oneOf": [schema, { "type": "null" }] })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn list_of(name: &str) -> Value {
    object(&json!({ "items": { "type": "array", "items": reference(name) } }))
}

fn json_response(description: &str, schema: &Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } },
    })
}

fn error_response(description: &str) -> Value {
    json_response(description, &reference("Error"))
}

/// A `GET` operation; `extra` are its error responses besides 401 (which
/// only an API with a token answers, `/health` and `/ready` never).
fn get(id: &str, summary: &str, ok: Value, extra: &[(&str, &str)], open: bool) -> Value {
    let mut responses = serde_json::Map::new();
    responses.insert("200".to_owned(), ok);
    if !open {
        responses.insert(
            "401".to_owned(),
            error_response(
                "A bearer token is configured (`api.token_file`) and none, or another, was sent.",
            ),
        );
    }
    for (code, description) in extra {
        responses.insert((*code).to_owned(), error_response(description));
    }
    let mut operation = json!({
        "operationId": id,
        "summary": summary,
        "responses": responses,
    });
    if open {
        operation["security"] = json!([]);
    }
    operation
}

fn with_parameters(mut operation: Value, parameters: &[Value]) -> Value {
    operation["parameters"] = Value::Array(parameters.to_vec());
    operation
}

fn string_param(name: &str, place: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": place,
        "required": place == "path",
        "description": description,
        "schema": { "type": "string" },
    })
}

fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}

/// The plan's schemas (`/api/v1/plan`, and each environment's last plan).
fn plan_schemas(object_ref: &dyn Fn(&Value) -> Value) -> Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    let string = json!({ "type": "string" });
    json!({
        "EnvironmentPlan": {
            "allOf": [object(&json!({
                "name": string,
                "change": { "type": "string", "enum": ["create", "update", "delete"] },
                "reason": reference("Reason"),
                "source": string,
                "versions": { "type": "array", "items": object(&json!({
                    "service": string,
                    "from": nullable(&string),
                    "to": nullable(&string),
                    "constraint": nullable(&string),
                })) },
                "manifests": { "type": "array", "items": object(&json!({
                    "service": string,
                    "from": nullable(&reference("ManifestsRecord")),
                    "to": nullable(&reference("ManifestsRecord")),
                })) },
                "creates": count,
                "updates": count,
                "deletes": count,
            }))],
        },
        "ManifestsRecord": {
            "type": "object",
            "properties": {
                "reference": { "type": "string", "description": "The resolved version, or the claim's ansible_artifact (a tag or @sha256:<hex>)." },
                "digest": { "type": "string", "description": "sha256: of the OCI layer or the git tree." },
                "source": { "type": "string", "description": "The OCI repository or git URL." },
                "revision": { "type": "string", "description": "The artifact's revision annotation, or the git ref." },
            },
            "required": ["reference", "digest"],
            "additionalProperties": false,
        },
        "Step": object_ref(&json!({
            "environment": string,
            "action": { "type": "string", "enum": ["create", "update", "delete"] },
        })),
        "Diagnostic": {
            "allOf": [object(&json!({
                "file": string,
                "pointer": { "type": "string", "description": "A JSON pointer; empty for the whole document." },
                "rule": string,
                "message": string,
                "environment": string,
            }))],
        },
        "Plan": object(&json!({
            "environments": { "type": "array", "items": reference("EnvironmentPlan") },
            "steps": { "type": "array", "items": reference("Step") },
            "untouched": { "type": "object", "additionalProperties": reference("Reason") },
            "unchanged": count,
            "live": count,
            "hold": nullable(&object(&json!({
                "deletions": count,
                "live": count,
                "max_delete_fraction": { "type": "number" },
                "message": string,
            }))),
            "diagnostics": { "type": "array", "items": reference("Diagnostic") },
            "fields": { "type": "array", "items": object_ref(&json!({
                "environment": string,
                "changes": { "type": "array", "items": object(&json!({
                    "path": string, "from": nullable(&string), "to": nullable(&string),
                })) },
            })) },
            "steps_omitted": count,
            "drift": { "type": "array", "items": object(&json!({
                "environment": string,
                "object": { "type": "string", "description": "Kind/name" },
                "how": string,
                "corrected": { "type": "boolean" },
            })) },
        })),
    })
}

/// Where claims come from (`/api/v1/sources`, provenance) and what
/// happened (`/api/v1/events`).
fn source_schemas() -> Value {
    let count = json!({ "type": "integer", "minimum": 0 });
    let string = json!({ "type": "string" });
    let time = json!({ "type": "string", "format": "date-time" });
    let person = object(&json!({ "name": string, "email": string }));
    json!({
        "Provenance": { "oneOf": [
            object(&json!({
                "kind": { "const": "git" },
                "repository": string,
                "branch": string,
                "commit": string,
                "author": person,
                "committer": person,
                "time": { "type": "integer", "description": "Commit time, unix seconds." },
                "trailers": { "type": "object", "additionalProperties": { "type": "array", "items": string } },
                "signature": object(&json!({
                    "kind": { "type": "string", "enum": ["none", "ssh", "gpg"] },
                    "verified": { "type": "boolean" },
                    "signer": nullable(&string),
                    "problem": nullable(&string),
                })),
            })),
            object(&json!({
                "kind": { "const": "s3" },
                "bucket": string,
                "key": string,
                "etag": string,
                "last_modified": nullable(&time),
                "metadata": { "type": "object", "additionalProperties": string },
            })),
        ]},
        "Source": object(&json!({
            "name": string,
            "kind": { "type": "string", "enum": ["dir", "git", "s3"] },
            "revision": nullable(&string),
            "files": count,
            "ready": { "type": "boolean", "description": "Read at least once since start, and the last read succeeded." },
            "last_success": nullable(&time),
            "errors": count,
            "last_error": nullable(&object(&json!({ "reason": string, "message": string }))),
            "next_poll_in_ms": count,
            "refused_files": {
                "type": "array",
                "description": "Files refused before they named a valid environment (unparsable, or an invalid environment_name), the first 100 by path, each with the problem of its environment_name (else its first) and how many problems it has.",
                "items": object(&json!({ "path": string, "pointer": string, "rule": string, "message": string, "problems": count })),
            },
            "refused_files_total": count,
            "pull_requests": nullable(&object(&json!({
                "polls": count,
                "open": count,
                "planned": count,
                "errors": count,
                "last_error": nullable(&object(&json!({ "reason": string, "message": string }))),
            }))),
        })),
        "Sources": list_of("Source"),
        "Event": object(&json!({
            "id": count,
            "time": time,
            "pass": count,
            "type": { "type": "string", "enum": ["Normal", "Warning"] },
            "reason": string,
            "environment": string,
            "message": string,
        })),
        "Events": list_of("Event"),
    })
}

fn schemas() -> Value {
    let env_types: Vec<&str> = std::iter::once("")
        .chain(EnvironmentType::ALL.iter().map(|t| t.as_str()))
        .collect();
    let reasons = names(Reason::ALL, Reason::as_str);
    let condition_types = names(ConditionType::ALL, ConditionType::as_str);
    let count = json!({ "type": "integer", "minimum": 0 });
    let string = json!({ "type": "string" });
    let time = json!({ "type": "string", "format": "date-time" });
    let digest = json!({ "type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$" });
    let object_ref = |extra: &Value| {
        let mut properties = json!({
            "apiVersion": string,
            "kind": string,
            "namespace": string,
            "name": string,
        });
        if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        let mut schema = object(&properties);
        if let Some(required) = schema["required"].as_array_mut() {
            required.retain(|r| r != "namespace");
        }
        schema
    };
    let item = json!({
        "name": string,
        "type": { "type": "string", "enum": env_types,
                  "description": "Empty for an environment only a rejected claim names." },
        "pool": string,
        "owner": string,
        "source": nullable(&json!({ "type": "string", "description": "`source:path` of the claim." })),
        "revision": nullable(&string),
        "ready": { "type": "boolean" },
        "status": { "type": "string", "enum": ["Ready", "Pending", "Held", "Failed", "Invalid", "Expired"] },
        "expires_at": nullable(&time),
        "conditions": { "type": "array", "items": reference("Condition") },
    });
    let mut detail = item.clone();
    if let Some(d) = detail.as_object_mut() {
        d.extend(
            json!({
                "claim": nullable(&json!({ "type": "object", "description": "The claim as applied; secret values redacted." })),
                "provenance": nullable(&reference("Provenance")),
                "versions": { "type": "object", "additionalProperties": reference("Resolved") },
                "manifests": { "type": "object", "description": "Per service with manifests of its own: the artifact it runs.", "additionalProperties": reference("ManifestsRecord") },
                "last_plan": nullable(&reference("EnvironmentPlan")),
                "inventory": { "type": "array", "items": object_ref(&json!({ "digest": digest })) },
                "history": { "type": "array", "items": reference("HistoryEntry") },
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
    }
    let mut schemas = json!({
        "Error": object(&json!({
            "error": { "type": "string", "description": "What is wrong, in words." },
            "status": { "type": "integer", "description": "The HTTP status again." },
        })),
        "Status": {
            "type": "object",
            "properties": {
                "status": { "type": "string", "enum": ["ok", "ready"] },
                "reason": { "type": "string", "description": "What stops a ready installation from applying claims (no users or pools declared)." },
            },
            "required": ["status"],
            "additionalProperties": false,
        },
        "Condition": object(&json!({
            "type": { "type": "string", "enum": condition_types },
            "status": { "type": "string", "enum": ["True", "False"] },
            "reason": reference("Reason"),
            "message": string,
        })),
        "Reason": { "type": "string", "enum": reasons },
        "Item": object(&item),
        "Items": {
            "type": "object",
            "properties": {
                "shard": object(&json!({ "identity": string, "members": { "type": "array", "items": string } })),
                "items": { "type": "array", "items": reference("Item") },
                "continue": { "type": "string", "description": "Present when more environments match: pass it as `continue` for the next page." },
            },
            "required": ["items"],
            "additionalProperties": false,
        },
        "Detail": object(&detail),
        "Resolved": object(&json!({ "tag": string, "constraint": string })),
        "HistoryEntry": object(&json!({
            "pass": count, "time": time, "status": string, "reason": reference("Reason"),
        })),
    });
    for more in [plan_schemas(&object_ref), source_schemas()] {
        if let (Some(all), Value::Object(more)) = (schemas.as_object_mut(), more) {
            all.extend(more);
        }
    }
    schemas
}

/// Fields serialized only when present: not required.
const OPTIONAL: &[(&str, &str)] = &[
    ("EnvironmentPlan", "source"),
    ("EnvironmentPlan", "manifests"),
    ("Detail", "manifests"),
    ("Diagnostic", "environment"),
    ("Plan", "fields"),
    ("Plan", "steps_omitted"),
    ("Plan", "drift"),
    ("Event", "environment"),
];

/// The query parameters of `/api/v1/environments`: filters and paging.
fn list_parameters() -> Vec<Value> {
    vec![
        string_param(
            "type",
            "query",
            "Environment type (`dev`, `stage` or `staging`, `prod`, `sue`), case-insensitive; empty is no filter.",
        ),
        string_param(
            "pool",
            "query",
            "Environment pool, case-insensitive; empty is no filter.",
        ),
        string_param(
            "status",
            "query",
            "Status word (`Ready`, `Pending`, `Held`, `Failed`, `Invalid`, `Expired`), case-insensitive; empty is no filter.",
        ),
        string_param(
            "owner",
            "query",
            "The claim's user, case-insensitive; empty is no filter.",
        ),
        string_param(
            "service",
            "query",
            "A service the environment runs (claimed or as a dependency); empty is no filter.",
        ),
        string_param(
            "version",
            "query",
            "A resolved tag: of `service` when given, else of any service; empty is no filter.",
        ),
        json!({
            "name": "expiring_before",
            "in": "query",
            "required": false,
            "description": "Environments that expire before this RFC 3339 time (those without expiry never match); empty is no filter.",
            "schema": { "anyOf": [
                { "type": "string", "format": "date-time" },
                { "type": "string", "maxLength": 0 },
            ] },
        }),
        string_param(
            "q",
            "query",
            "Case-insensitive substring of the name, owner, pool or source; empty is no filter.",
        ),
        json!({
            "name": "limit",
            "in": "query",
            "required": false,
            "description": format!(
                "Environments on a page: {DEFAULT_LIMIT} when not given; a larger number than {MAX_LIMIT} is served as {MAX_LIMIT}."
            ),
            "schema": { "type": "integer", "minimum": 1 },
        }),
        json!({
            "name": "continue",
            "in": "query",
            "required": false,
            "description": "The `continue` token of the page before (opaque): the next page starts after the last environment it served, in the list as it is then (valid across passes); empty is the first page.",
            "schema": { "type": "string", "pattern": "^(n([0-9a-f]{2})+)?$" },
        }),
    ]
}

/// The document.
#[must_use]
pub fn document() -> Value {
    let mut schemas = schemas();
    for (schema, field) in OPTIONAL {
        let s = &mut schemas[*schema];
        let s = if s.get("allOf").is_some() {
            &mut s["allOf"][0]
        } else {
            s
        };
        if let Some(required) = s["required"].as_array_mut() {
            required.retain(|r| r != field);
        }
    }
    let text = |description: &str, media: &str| json!({ "description": description, "content": { media: { "schema": { "type": "string" } } } });
    let filters = list_parameters();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "converge",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The read-only API of the converge daemon: GET and HEAD only \
                (any other method is 405 with `Allow: GET, HEAD`). With `api.token_file` set, \
                every endpoint but /health and /ready needs `Authorization: Bearer <token>`. \
                Errors are JSON objects with `error` and `status`.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "/" }],
        "security": [{}, { "bearer": [] }],
        "paths": {
            "/health": { "get": get("health", "The process is up.",
                json_response("Always, while the process serves.", &reference("Status")), &[], true) },
            "/ready": { "get": get("ready", "Every source was read and the first pass is done (and this replica leads).",
                json_response("Ready.", &reference("Status")),
                &[("503", "Not ready yet.")], true) },
            "/metrics": { "get": get("metrics", "Prometheus metrics (OpenMetrics text).",
                text("OpenMetrics text.", "application/openmetrics-text"), &[], false) },
            "/": { "get": with_parameters(
                get("page", "The status page: environments with their reasons (at most 200 a page), sources, recent events.",
                    text("A server-rendered HTML page.", "text/html"),
                    &[("400", "A malformed query (a parameter given twice, bad percent-encoding).")], false),
                &[
                    string_param("q", "query", "Case-insensitive substring of the name, type, pool, owner, source, status, a condition's reason or a problem condition's type (`Drifted`, `Stalled`); the first 100 characters count; empty is no search."),
                    string_param("status", "query", "Only environments of this status word, case-insensitive; empty is no filter."),
                    string_param("type", "query", "Only environments of this type, case-insensitive; empty is no filter."),
                    string_param("page", "query", "The page of matching environments, from 1; anything else is the first."),
                ]) },
            "/environments/{name}": { "get": with_parameters(
                get("environmentPage", "One environment's page: conditions, drift, versions, last plan, history, events.",
                    text("A server-rendered HTML page.", "text/html"),
                    &[("400", "The name is not UTF-8 (percent-decoded)."), ("404", "No such environment.")], false),
                &[string_param("name", "path", "The environment's name.")]) },
            "/api/v1/environments": { "get": with_parameters(
                get("environments", "Environments sorted by name, a page at a time; filters combine.",
                    json_response("A page of the environments that pass every filter, and `continue` when more do.", &reference("Items")),
                    &[("400", "A malformed query (a parameter given twice, bad percent-encoding, a `limit` below 1, a `continue` token this API did not give, an `expiring_before` that is not a time).")], false),
                &filters) },
            "/api/v1/environments/{name}": { "get": with_parameters(
                get("environment", "One environment: its status, claim (redacted), provenance, versions, last plan, inventory and history.",
                    json_response("The environment.", &reference("Detail")),
                    &[("400", "The name is not UTF-8 (percent-decoded)."), ("404", "No such environment.")], false),
                &[string_param("name", "path", "The environment's name.")]) },
            "/api/v1/sources": { "get": get("sources", "Every source: revision, files, freshness, errors.",
                json_response("The sources, in config order.", &reference("Sources")), &[], false) },
            "/api/v1/plan": { "get": get("plan", "The last pass's plan (at most 1,000 object steps), or null before the first pass.",
                json_response("The plan.", &nullable(&reference("Plan"))), &[], false) },
            "/api/v1/events": { "get": get("events", "The last 1,000 events, newest first.",
                json_response("The events.", &reference("Events")), &[], false) },
            "/api/v1/openapi.json": { "get": get("openapi", "This document.",
                json_response("OpenAPI 3.1.", &json!({ "type": "object" })), &[], false) },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer",
                "description": "The token in `api.token_file`; the scheme name is case-insensitive." } },
        },
    })
}
