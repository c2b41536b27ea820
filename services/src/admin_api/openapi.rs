//! The OpenAPI 3 document of the admin API, built from the route table ([`super::routes::ROUTES`]).
//! `docs/openapi.json` is a committed copy; `tests/tests/admin_api.rs` fails when it drifts
//! (`UPDATE_DOCS=1` rewrites it).

use serde_json::{json, Map, Value};

use super::routes::{BodyDoc, Content, ROUTES};
use crate::shared::apps::APP_NAME_PATTERN;
use bus_schema::{Section, ServiceName};

/// The `{name}` parameters of a path.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn param_doc(name: &str) -> Value {
    if name == "app" {
        return json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": "App name (else 400 `Invalid app name`)",
            "schema": { "type": "string", "pattern": APP_NAME_PATTERN },
        });
    }
    // The closed sets as `enum`s (a name outside them is 404).
    let names: Option<Vec<String>> = match name {
        "section" => Some(Section::ALL.iter().map(ToString::to_string).collect()),
        "service" => Some(ServiceName::ALL.iter().map(ToString::to_string).collect()),
        _ => None,
    };
    let mut schema = json!({ "type": "string" });
    if let Some(names) = names {
        schema["enum"] = json!(names);
    }
    if name == "var" {
        schema["example"] = json!("IOHUBOS_TIMEZONE");
    }
    let description = match name {
        "seconds" => "Delay; `max(3, parseInt(seconds))`, 3 when not a number",
        "var" => "Variable name, e.g. `IOHUBOS_TIMEZONE`",
        "section" => "Config section, e.g. `network`",
        "service" => "Service name, e.g. `config`",
        "item" => "Item of the service, e.g. an app name",
        _ => "",
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": schema,
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

const TEXT: &str = "text/plain";
const JSON: &str = "application/json";

fn content(c: Content) -> Option<Value> {
    let string = json!({ "type": "string" });
    Some(match c {
        Content::None => return None,
        Content::Text => json!({ TEXT: { "schema": string } }),
        Content::EventStream => json!({ "text/event-stream": { "schema": string } }),
        Content::Json => json!({ JSON: { "schema": {} } }),
        Content::Schema(name) => json!({ JSON: { "schema": schema_ref(name) } }),
        Content::TextOrError => json!({
            TEXT: { "schema": string },
            JSON: { "schema": schema_ref("Error") },
        }),
    })
}

fn request_body(body: BodyDoc) -> Option<Value> {
    match body {
        BodyDoc::None => None,
        BodyDoc::Deploy => {
            let schema = json!({ "$ref": "#/components/schemas/DeployCompose" });
            Some(json!({
                "required": true,
                "content": {
                    "application/x-www-form-urlencoded": { "schema": schema },
                    "application/json": { "schema": schema },
                },
            }))
        }
        BodyDoc::SetVars => Some(json!({
            "required": true,
            "content": {
                "application/json": { "schema": { "$ref": "#/components/schemas/SetVars" } },
            },
        })),
        BodyDoc::Zip => Some(json!({
            "required": true,
            "content": {
                "application/zip": { "schema": { "type": "string", "format": "binary" } },
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } },
            },
        })),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let mut responses = Map::new();
        for resp in r.responses {
            let mut doc = json!({ "description": resp.description });
            if let Some(c) = content(resp.content) {
                doc["content"] = c;
            }
            responses.insert(resp.status.to_string(), doc);
        }
        // Every route answers a path that does not percent-decode with `Bad Request` (text),
        // and a body over its limit with 413.
        let bad = responses.entry("400").or_insert(json!({
            "description": "`Bad Request`: the path does not percent-decode",
            "content": {},
        }));
        bad["content"][TEXT] = json!({ "schema": { "type": "string" } });
        responses.insert(
            "413".into(),
            json!({
                "description": format!(
                    "The request body is larger than {} bytes (declared or read)",
                    r.body_limit()
                ),
                "content": { JSON: { "schema": schema_ref("Error") } },
            }),
        );
        if !r.public {
            responses.insert(
                "401".into(),
                json!({ "$ref": "#/components/responses/Unauthorized" }),
            );
            responses.insert(
                "403".into(),
                json!({ "$ref": "#/components/responses/WeakToken" }),
            );
            responses.insert(
                "429".into(),
                json!({ "$ref": "#/components/responses/Throttled" }),
            );
        }
        let mut op = json!({
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": [r.tag],
            "responses": responses,
        });
        let params: Vec<Value> = path_params(r.path).into_iter().map(param_doc).collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = request_body(r.body) {
            op["requestBody"] = body;
        }
        if r.public {
            op["security"] = json!([]);
        }
        let item = paths
            .entry(r.path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[r.method.as_str()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "iohub admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Compatible with the IOhubOS admin API (`/v1`), plus config, state, \
                            events, uploads (`/v2`). Every request but `/openapi.json` needs the \
                            `X-API-Token` header; a weak configured token refuses everything \
                            with 403; repeated bad tokens from one address get 429. The token \
                            is root-equivalent: a deployed compose may run privileged \
                            containers, join the host's namespaces and mount any host path, \
                            unless IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted refuses them. \
                            Errors are JSON (`Error`) or, for the original's text answers, \
                            text/plain; a body over a route's limit is 413 on every route.",
        },
        "tags": [
            { "name": "v1", "description": "The original IOhubOS admin API" },
            { "name": "v2", "description": "iohub additions" },
            { "name": "meta", "description": "This document" },
        ],
        "security": [ { "apiToken": [] } ],
        "paths": paths,
        "components": components(),
    })
}

/// The shared responses and schemas of the document.
fn components() -> Value {
    json!({
        "securitySchemes": {
            "apiToken": { "type": "apiKey", "in": "header", "name": "X-API-Token" },
        },
        "responses": {
            "Unauthorized": {
                "description": "`Unauthorized`: missing or wrong X-API-Token",
                "content": { "text/plain": { "schema": { "type": "string" } } },
            },
            "WeakToken": {
                "description": "The configured token is too weak; every request is refused",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/WeakToken" } } },
            },
            "Throttled": {
                "description": "Too many failed attempts from this address; see Retry-After",
                "headers": { "Retry-After": { "schema": { "type": "integer" } } },
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": { "type": "string" },
                    "detail": { "type": "array", "items": { "type": "string" } },
                    "errors": { "type": "array", "items": { "$ref": "#/components/schemas/BusError" } },
                },
            },
            "AppNames": { "type": "array", "items": { "type": "string" } },
            "App": {
                "type": "object",
                "required": ["enabled", "compose"],
                "properties": {
                    "enabled": { "type": "boolean" },
                    "compose": { "type": "string" },
                },
            },
            "AppStatus": {
                "type": "object",
                "required": ["enabled"],
                "properties": { "enabled": { "type": "boolean" } },
            },
            "Event": {
                "type": "object",
                "description": "The data of each server-sent event of /v2/events; the \
                                first event is `ready` from `admin_api` with payload `{}`",
                "required": ["source", "kind", "payload"],
                "additionalProperties": false,
                "properties": {
                    "source": { "type": "string", "description": "The service that sent it" },
                    "kind": { "type": "string", "description": "Also the event's name" },
                    "payload": { "description": "The event's JSON (a string when not JSON)" },
                },
            },
            "BusError": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": { "type": "string" },
                    "message": { "type": "string" },
                    "field": { "type": "string", "nullable": true },
                },
            },
            "WeakToken": {
                "type": "object",
                "required": ["error", "reason"],
                "properties": {
                    "error": { "type": "string" },
                    "reason": { "type": "string" },
                    "hint": { "type": "string" },
                },
            },
            "DeployCompose": {
                "type": "object",
                "required": ["compose"],
                "properties": {
                    "compose": { "type": "string", "description": "docker-compose YAML with a non-empty `services` map" },
                    "enabled": { "description": "Enabled when its text contains `true` (any case)" },
                },
            },
            "SetVars": {
                "type": "object",
                "required": ["vars"],
                "additionalProperties": false,
                "properties": {
                    "vars": {
                        "type": "object",
                        "minProperties": 1,
                        "description": "Variable name -> value; null removes the assignment",
                        "additionalProperties": { "type": "string", "nullable": true },
                    },
                },
            },
        },
    })
}

/// Pretty text of the document, as committed in `docs/openapi.json`.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_is_unique_and_documents_its_path_parameters() {
        let doc = document();
        let mut ids = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(ids.insert(r.operation_id), "duplicate {}", r.operation_id);
            let op = &doc["paths"][r.path][r.method.as_str()];
            assert!(op.is_object(), "{} {}", r.method.as_str(), r.path);
            let params = path_params(r.path);
            assert_eq!(
                op["parameters"].as_array().map_or(0, Vec::len),
                params.len(),
                "{}",
                r.path
            );
        }
        assert_eq!(
            path_params("/v2/states/{service}/{item}"),
            ["service", "item"]
        );
    }
}
