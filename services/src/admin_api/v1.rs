//! The original admin API (`/v1`, SPEC.md §7.6), route for route, status for status, body for
//! body. Reads of the apps folder are served from the data root (read-only); every change is a
//! typed command to the service that owns it:
//!
//! | route | command |
//! |---|---|
//! | `POST /v1/app/{app}/enable`, `/disable` | `iohub/cmd/apps/enable`, `/disable` `{"app"}` |
//! | `POST /v1/app/{app}/deploy` | a deploy zip in `runtime/uploads/`, then `iohub/cmd/deployer/deploy` `{"path"}` |
//! | `POST /v1/app/{app}/undeploy` | `iohub/cmd/apps/undeploy` `{"app"}` (containers stopped and removed, then the folder deleted; 400 when there is no folder) |
//! | `POST /v1/admin/reboot/{seconds}` | `iohub/cmd/iohubd/reboot` `{"delay_secs"}` (a clean shutdown, never SysRq) |

use std::io;
use std::path::PathBuf;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use bus_schema::{ServiceName, Verb};
use serde::Deserialize;
use serde_json::{json, Value};

use super::compose;
use super::http::{detail, Api, COMMAND_TIMEOUT, LONG_COMMAND_TIMEOUT};
use super::uploads;
use crate::shared::apps::{start_sh_enabled, valid_app_name, START_SH};

/// The original's body limit (body-parser's default).
pub const BODY_LIMIT_BYTES: usize = 100 * 1024;

fn apps_dir(api: &Api) -> PathBuf {
    crate::shared::apps::apps_dir(&api.paths.root)
}

fn error(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// The original's error body, plus what the owning service said.
fn refused(message: &str, errors: &[bus_schema::BusError]) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": message, "detail": detail(errors) })),
    )
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn invalid_app() -> Response {
    text(StatusCode::BAD_REQUEST, "Invalid app name".into())
}

/// `GET /v1/app`: every sub-directory of the apps folder (not filtered by the name rule).
pub async fn list(State(api): State<Api>) -> Response {
    let dir = apps_dir(&api);
    let names = tokio::task::spawn_blocking(move || -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    })
    .await;
    match names {
        Ok(Ok(names)) => Json(names).into_response(),
        _ => error("cannot load the applications"),
    }
}

/// Enabled = `start.sh` is a regular file with an execute bit: the runner's rule, one for
/// every service ([`crate::shared::apps::start_sh_enabled`]; SPEC.md §11 item 30).
async fn enabled(api: &Api, app: &str) -> bool {
    let path = apps_dir(api).join(app).join(START_SH);
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|m| start_sh_enabled(&m))
}

async fn compose_text(api: &Api, app: &str) -> Option<String> {
    let path = apps_dir(api).join(app).join("docker-compose.yml");
    tokio::fs::read_to_string(path).await.ok()
}

/// `GET /v1/app/{app}`.
pub async fn show(State(api): State<Api>, Path(app): Path<String>) -> Response {
    if !valid_app_name(&app) {
        return invalid_app();
    }
    match compose_text(&api, &app).await {
        Some(compose) => Json(json!({ "enabled": enabled(&api, &app).await, "compose": compose }))
            .into_response(),
        None => error("cannot load the application"),
    }
}

/// `GET /v1/app/{app}/status`: never fails; an unknown app is disabled.
pub async fn status(State(api): State<Api>, Path(app): Path<String>) -> Response {
    if !valid_app_name(&app) {
        return invalid_app();
    }
    Json(json!({ "enabled": enabled(&api, &app).await })).into_response()
}

/// `GET /v1/app/{app}/compose`: the raw text.
pub async fn compose_file(State(api): State<Api>, Path(app): Path<String>) -> Response {
    if !valid_app_name(&app) {
        return invalid_app();
    }
    match compose_text(&api, &app).await {
        Some(compose) => text(StatusCode::OK, compose),
        None => error("cannot load the application"),
    }
}

/// Send an app command; map its reply to the original's answers.
async fn app_command(
    api: &Api,
    verb: Verb,
    app: &str,
    ok: (StatusCode, &str),
    err: &str,
) -> Response {
    if !valid_app_name(app) {
        return invalid_app();
    }
    let reply = api
        .call(
            ServiceName::Apps,
            verb,
            json!({ "app": app }),
            COMMAND_TIMEOUT,
        )
        .await;
    match reply {
        Ok(r) if r.ok => text(ok.0, ok.1.into()),
        Ok(r) => refused(err, &r.errors),
        Err(unavailable) => unavailable.into_response(),
    }
}

/// `POST /v1/app/{app}/enable`.
pub async fn enable(State(api): State<Api>, Path(app): Path<String>) -> Response {
    let ok = (StatusCode::OK, "Enabled");
    app_command(
        &api,
        Verb::Enable,
        &app,
        ok,
        "cannot enable the application",
    )
    .await
}

/// `POST /v1/app/{app}/disable`.
pub async fn disable(State(api): State<Api>, Path(app): Path<String>) -> Response {
    let ok = (StatusCode::OK, "Disabled");
    app_command(
        &api,
        Verb::Disable,
        &app,
        ok,
        "cannot disable the application",
    )
    .await
}

/// `POST /v1/app/{app}/undeploy`.
pub async fn undeploy(State(api): State<Api>, Path(app): Path<String>) -> Response {
    let ok = (StatusCode::OK, "Undeployed");
    app_command(
        &api,
        Verb::Undeploy,
        &app,
        ok,
        "cannot undeploy the application",
    )
    .await
}

/// Body of `deploy`, as form fields or JSON.
#[derive(Debug, Deserialize)]
pub struct DeployForm {
    compose: Option<String>,
    enabled: Option<String>,
}

/// `POST /v1/app/{app}/deploy`: `compose` (YAML) and `enabled`, form-urlencoded or JSON.
pub async fn deploy(State(api): State<Api>, Path(app): Path<String>, req: Request) -> Response {
    if !valid_app_name(&app) {
        return invalid_app();
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    // Like body-parser: JSON or urlencoded; any other body is no body at all.
    let (compose_text, enabled) = if content_type.starts_with("application/json") {
        match Json::<Value>::from_request(req, &()).await {
            Ok(Json(body)) => (
                body.get("compose")
                    .and_then(Value::as_str)
                    .map(String::from),
                compose::enabled_flag(body.get("enabled")),
            ),
            Err(rejection) => return rejection.into_response(),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        match Form::<DeployForm>::from_request(req, &()).await {
            Ok(Form(f)) => (
                f.compose,
                compose::enabled_flag(f.enabled.map(Value::String).as_ref()),
            ),
            Err(rejection) => return rejection.into_response(),
        }
    } else {
        (None, false)
    };
    let Some(compose_text) = compose_text else {
        return error("not in yaml format");
    };
    if let Err(e) = compose::check(&compose_text) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "not in yaml format", "detail": [e.to_string()] })),
        )
            .into_response();
    }
    let zip = match compose::deploy_zip(&app, &compose_text, enabled) {
        Ok(zip) => zip,
        Err(e) => {
            tracing::warn!(app, error = %e, "admin API: cannot build the deploy zip");
            return refused("cannot save the application", &[]);
        }
    };
    let path = match uploads::store(&api.paths, &format!("app-{app}"), zip).await {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!(app, error = %e, "admin API: cannot write the deploy zip");
            return refused("cannot save the application", &[]);
        }
    };
    let reply = api
        .call(
            ServiceName::Deployer,
            Verb::Deploy,
            json!({ "path": path }),
            LONG_COMMAND_TIMEOUT,
        )
        .await;
    match reply {
        Ok(r) if r.ok => text(StatusCode::CREATED, "Deployed".into()),
        Ok(r) => refused("cannot save the application", &r.errors),
        Err(unavailable) => unavailable.into_response(),
    }
}

/// `parseInt(s, 10)`: optional whitespace and sign, then the leading digits.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    // Longer than i64: clamp (the delay is clamped below anyway).
    let n = digits.parse::<i64>().unwrap_or(i64::MAX);
    Some(if neg { -n } else { n })
}

/// The original's delay: `max(3, parseInt(seconds))`, 3 when not a number.
pub fn reboot_delay(seconds: &str) -> i64 {
    parse_int(seconds).map_or(3, |n| n.max(3))
}

/// `POST /v1/admin/reboot/{seconds}`: a clean shutdown request to iohubd (never SysRq).
pub async fn reboot(State(api): State<Api>, Path(seconds): Path<String>) -> Response {
    let delay = reboot_delay(&seconds);
    let reply = api
        .call(
            ServiceName::Iohubd,
            Verb::Reboot,
            json!({ "delay_secs": delay }),
            COMMAND_TIMEOUT,
        )
        .await;
    match reply {
        Ok(r) if r.ok => text(
            StatusCode::ACCEPTED,
            format!("Will reboot in {delay} seconds"),
        ),
        Ok(r) => refused("cannot reboot", &r.errors),
        Err(unavailable) => unavailable.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reboot_delay_is_parse_int_with_a_floor_of_three() {
        for (input, want) in [
            ("10", 10),
            ("10abc", 10),
            (" 42", 42),
            ("-5", 3),
            ("0", 3),
            ("abc", 3),
            ("", 3),
            ("99999999999999999999999", i64::MAX),
        ] {
            assert_eq!(reboot_delay(input), want, "{input}");
        }
    }
}
