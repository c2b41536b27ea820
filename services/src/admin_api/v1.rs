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
use serde_json::{json, Value};

use super::compose;
use super::compose::policy::{restricted_violations, Allowed};
use super::http::{
    body_rejection, detail, read, text, Api, ErrorBody, BODY_LIMIT_BYTES, COMMAND_TIMEOUT,
    LONG_COMMAND_TIMEOUT,
};
use super::uploads;
use crate::shared::apps::{start_sh_enabled, valid_app_name, GLOBAL_VOLUME_DIR, START_SH};
use bus_schema::sections::ComposePolicy;

/// The error of a deploy refused by `IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted`; `detail`
/// names each offending key.
pub const POLICY_REFUSED: &str = "refused by the compose policy";

fn apps_dir(api: &Api) -> PathBuf {
    crate::shared::apps::apps_dir(&api.paths.root)
}

/// The original's `{"error"}` body, with status 400.
fn error(message: &str) -> Response {
    ErrorBody::new(message).into_response(StatusCode::BAD_REQUEST)
}

/// The original's error body, plus what the owning service said.
fn refused(message: &str, errors: &[bus_schema::BusError]) -> Response {
    ErrorBody::new(message)
        .with_detail(detail(errors))
        .into_response(StatusCode::BAD_REQUEST)
}

fn invalid_app() -> Response {
    text(StatusCode::BAD_REQUEST, "Invalid app name")
}

/// `GET /v1/app`: every sub-directory of the apps folder (not filtered by the name rule); none
/// when there is no apps folder (the original answered 400, undocumented, issue 16).
pub async fn list(State(api): State<Api>) -> Response {
    let dir = apps_dir(&api);
    let names = tokio::task::spawn_blocking(move || -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // No apps folder yet (a fresh root, Docker never enabled): no apps.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e),
        };
        for e in entries {
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
        Ok(r) if r.ok => text(ok.0, ok.1),
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

/// `compose` and `enabled` of a form body, as body-parser (`extended: false`) and the original
/// read them: a repeated field is an array, so `enabled` is its values joined with `,`
/// (`String(array)`) and a repeated `compose` is not YAML text.
fn form_fields(fields: &[(String, String)]) -> (Option<String>, bool) {
    let values = |name: &str| -> Vec<&str> {
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let compose = match values("compose")[..] {
        [one] => Some(one.to_string()),
        _ => None,
    };
    let enabled = values("enabled");
    let enabled = (!enabled.is_empty()).then(|| Value::String(enabled.join(",")));
    (compose, compose::enabled_flag(enabled.as_ref()))
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
            Err(rejection) => {
                return body_rejection(rejection.status(), rejection.body_text(), BODY_LIMIT_BYTES)
            }
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(fields)) => form_fields(&fields),
            Err(rejection) => {
                return body_rejection(rejection.status(), rejection.body_text(), BODY_LIMIT_BYTES)
            }
        }
    } else {
        (None, false)
    };
    let Some(compose_text) = compose_text else {
        return error("not in yaml format");
    };
    let doc = match compose::parse(&compose_text) {
        Ok(doc) => doc,
        Err(e) => {
            return ErrorBody::new("not in yaml format")
                .with_detail(vec![e.to_string()])
                .into_response(StatusCode::BAD_REQUEST)
        }
    };
    if *read(&api.compose_policy) == ComposePolicy::Restricted {
        let allowed = Allowed {
            app_dir: apps_dir(&api).join(&app),
            global_volume: api.paths.root.join(GLOBAL_VOLUME_DIR),
        };
        let violations = restricted_violations(&doc, &allowed);
        if !violations.is_empty() {
            tracing::warn!(
                app,
                ?violations,
                "admin API: compose refused by the restricted policy"
            );
            return ErrorBody::new(POLICY_REFUSED)
                .with_detail(violations)
                .into_response(StatusCode::BAD_REQUEST);
        }
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
        Ok(r) if r.ok => text(StatusCode::CREATED, "Deployed"),
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
    fn repeated_form_fields_read_as_the_original_read_them() {
        let f = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect();
            form_fields(&owned)
        };
        assert_eq!(f(&[("compose", "x")]), (Some("x".into()), false));
        assert_eq!(
            f(&[("compose", "x"), ("enabled", "TRUE")]),
            (Some("x".into()), true)
        );
        // Found by schemathesis: a repeated field was a 400 "duplicate field".
        assert_eq!(
            f(&[("compose", ""), ("enabled", "null"), ("enabled", "null")]),
            (Some(String::new()), false)
        );
        assert_eq!(f(&[("enabled", "no"), ("enabled", "true")]), (None, true));
        assert_eq!(f(&[("compose", "a"), ("compose", "b")]), (None, false));
    }

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
