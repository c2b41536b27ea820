//! Beyond the original (`/v2`): config get/set through the config service, the services'
//! states (from the in-memory cache of the retained states), the event stream as server-sent
//! events, deploy uploads and registry imports. Refusals carry every problem
//! (`{"error", "errors": [{code, message, field}]}`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bus_schema::sections::ComposePolicy;
use bus_schema::topic::filter;
use bus_schema::{BusError, ErrorCode, Section, ServiceName, Topic, Verb};
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{
    body_rejection, payload_too_large, read, status_of, v2_error, Api, BODY_LIMIT_BYTES,
    COMMAND_TIMEOUT, LONG_COMMAND_TIMEOUT,
};
use super::uploads;

/// Largest deploy upload.
pub const UPLOAD_LIMIT_BYTES: usize = 64 << 20;

/// Map a command's reply: the result with 200, or the refusal with its status.
async fn forward(
    api: &Api,
    service: ServiceName,
    verb: Verb,
    body: Value,
    timeout: Duration,
) -> Response {
    match api.call(service, verb, body, timeout).await {
        Ok(r) if r.ok => Json(r.result.unwrap_or(Value::Null)).into_response(),
        Ok(r) => {
            let summary = r
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| format!("{service} refused `{verb}`"));
            v2_error(status_of(&r.errors), summary, &r.errors)
        }
        Err(unavailable) => unavailable.into_response(),
    }
}

/// `GET /v2/config/vars/{var}` -> `iohub/cmd/config/get {"var"}`.
pub async fn get_var(State(api): State<Api>, Path(var): Path<String>) -> Response {
    forward(
        &api,
        ServiceName::Config,
        Verb::Get,
        json!({ "var": var }),
        COMMAND_TIMEOUT,
    )
    .await
}

/// `GET /v2/config/sections/{section}` -> `iohub/cmd/config/get {"section"}`.
pub async fn get_section(State(api): State<Api>, Path(section): Path<String>) -> Response {
    let Ok(section) = section.parse::<Section>() else {
        let e = BusError::new(
            ErrorCode::NotFound,
            format!("no config section `{section}`"),
        )
        .with_field("section");
        return v2_error(StatusCode::NOT_FOUND, e.message.clone(), &[e]);
    };
    let body = json!({ "section": section });
    forward(&api, ServiceName::Config, Verb::Get, body, COMMAND_TIMEOUT).await
}

/// Body of `POST /v2/config/vars`: the config service's `set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVars {
    vars: BTreeMap<String, Option<String>>,
}

/// `POST /v2/config/vars` `{"vars": {"IOHUBOS_X": "value" | null}}` -> `iohub/cmd/config/set`.
pub async fn set_vars(
    State(api): State<Api>,
    body: Result<Json<SetVars>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return payload_too_large(BODY_LIMIT_BYTES);
        }
        Err(rejection) => {
            let e = BusError::new(ErrorCode::BadPayload, rejection.body_text()).with_field("body");
            return v2_error(StatusCode::BAD_REQUEST, e.message.clone(), &[e]);
        }
    };
    let body = json!({ "vars": body.vars });
    forward(&api, ServiceName::Config, Verb::Set, body, COMMAND_TIMEOUT).await
}

/// `GET /v2/states`: every retained service state, by `service` or `service/item`.
pub async fn states(State(api): State<Api>) -> Response {
    let states = read(&api.states).clone();
    Json(states).into_response()
}

fn state_response(api: &Api, service: &str, item: Option<&str>) -> Response {
    let Ok(service) = service.parse::<ServiceName>() else {
        let e = BusError::new(ErrorCode::NotFound, format!("no service `{service}`"));
        return v2_error(StatusCode::NOT_FOUND, e.message.clone(), &[e]);
    };
    let key = Api::state_key(service, item);
    match read(&api.states).get(&key) {
        Some(state) => Json(state.clone()).into_response(),
        None => {
            let e = BusError::new(
                ErrorCode::NotFound,
                format!(
                    "{} has not been published",
                    Topic::State(service, item.map(String::from))
                ),
            );
            v2_error(StatusCode::NOT_FOUND, e.message.clone(), &[e])
        }
    }
}

/// `GET /v2/states/{service}`.
pub async fn state(State(api): State<Api>, Path(service): Path<String>) -> Response {
    state_response(&api, &service, None)
}

/// `GET /v2/states/{service}/{item}`.
pub async fn item_state(
    State(api): State<Api>,
    Path((service, item)): Path<(String, String)>,
) -> Response {
    state_response(&api, &service, Some(&item))
}

/// The name of the first event of a stream, sent once its bus subscription is live.
pub const READY_EVENT: &str = "ready";

/// One server-sent event: named after its kind, with `{"source", "kind", "payload"}` as data
/// (`#/components/schemas/Event` of the document), the `ready` event included.
fn sse_event(source: &str, kind: &str, payload: Value) -> Event {
    let data = json!({ "source": source, "kind": kind, "payload": payload });
    Event::default().event(kind).data(data.to_string())
}

/// `GET /v2/events`: `iohub/event/#` as server-sent events. The first event (`ready`, from
/// `admin_api`, payload `{}`) is sent once the bus subscription is live, so anything caused
/// after it is delivered. Each message is an event named after its kind ([`sse_event`]).
pub async fn events(State(api): State<Api>) -> Response {
    let Ok(permit) = api.event_streams.clone().try_acquire_owned() else {
        let e = BusError::new(ErrorCode::Unavailable, "too many event streams are open");
        return v2_error(StatusCode::SERVICE_UNAVAILABLE, e.message.clone(), &[e]);
    };
    let sub = match api.bus.subscribe(&[filter::EVENT]).await {
        Ok(sub) => sub,
        Err(e) => {
            let e = BusError::from(e);
            return v2_error(StatusCode::SERVICE_UNAVAILABLE, e.message.clone(), &[e]);
        }
    };
    let ready = sse_event(&ServiceName::AdminApi.to_string(), READY_EVENT, json!({}));
    let closing = api.closing.clone();
    let stream = futures::stream::unfold(
        (Some(ready), sub, permit, closing),
        |(first, mut sub, permit, closing)| async move {
            if let Some(ready) = first {
                return Some((Ok::<_, Infallible>(ready), (None, sub, permit, closing)));
            }
            let msg = tokio::select! {
                () = closing.cancelled() => return None,
                msg = sub.recv() => msg?,
            };
            let (source, kind) = match msg.control_topic() {
                Some(Topic::Event(source, kind)) => (source.to_string(), kind.to_string()),
                _ => (String::new(), "unknown".to_string()),
            };
            let payload: Value = serde_json::from_slice(&msg.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&msg.payload).into_owned())
            });
            Some((
                Ok(sse_event(&source, &kind, payload)),
                (None, sub, permit, closing),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `POST /v2/deploy`: the raw body is a deploy zip (SPEC.md §4.4); it is stored under
/// `runtime/uploads/` and handed to the deployer (`iohub/cmd/deployer/deploy {"path"}`).
/// Refused under `IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted`: a zip carries its own
/// `start.sh`, which the runner runs as root.
pub async fn deploy(
    State(api): State<Api>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if *read(&api.compose_policy) == ComposePolicy::Restricted {
        let e = BusError::new(
            ErrorCode::Forbidden,
            "IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted: a deploy zip's start.sh runs as root \
             on the host, so zips are refused; deploy compose text with \
             POST /v1/app/{app}/deploy",
        )
        .with_field("IOHUBOS_ADMIN_API_COMPOSE_POLICY");
        return v2_error(StatusCode::BAD_REQUEST, e.message.clone(), &[e]);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return body_rejection(
                rejection.status(),
                rejection.body_text(),
                UPLOAD_LIMIT_BYTES,
            )
        }
    };
    if !body.starts_with(b"PK\x03\x04") {
        let e = BusError::new(ErrorCode::BadPayload, "the body is not a zip archive")
            .with_field("body");
        return v2_error(StatusCode::BAD_REQUEST, e.message.clone(), &[e]);
    }
    let path = match uploads::store(&api.paths, "upload", body.to_vec()).await {
        Ok(path) => path,
        Err(e) => {
            let e = BusError::new(ErrorCode::Io, format!("cannot store the upload: {e}"));
            return v2_error(StatusCode::INTERNAL_SERVER_ERROR, e.message.clone(), &[e]);
        }
    };
    let body = json!({ "path": path });
    forward(
        &api,
        ServiceName::Deployer,
        Verb::Deploy,
        body,
        LONG_COMMAND_TIMEOUT,
    )
    .await
}

/// `POST /v2/registry/import`: import the archives of `runtime/iohub-registry/` now
/// (`iohub/cmd/registry/reload`).
pub async fn registry_import(State(api): State<Api>) -> Response {
    forward(
        &api,
        ServiceName::Registry,
        Verb::Reload,
        json!({}),
        LONG_COMMAND_TIMEOUT,
    )
    .await
}
