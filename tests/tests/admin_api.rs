//! The admin API end to end: the real `iohubd` on a temporary root with the API enabled on a free
//! port, driven by a real HTTP client (reqwest). Services this build does not run yet (apps,
//! iohubd's reboot) are played by an MQTT client of the control listener that answers their
//! commands, so the mapping HTTP -> command -> reply -> HTTP is checked exactly; a service that
//! does run answers itself and only the documented statuses are checked.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests edit files and run programs

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_schema::{Phase, Reply, Request, ServiceState};
use iohub_tests::{Control, Iohubd, Roots};
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};
use services::admin_api::compose::START_SH;
use services::admin_api::openapi;
use services::admin_api::routes::{Method, ROUTES};

const T: Duration = Duration::from_secs(20);
const STRONG: &str = "Str0ng!Token-For-The-Admin-API-0123456789";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Set variables in the root's envvars (replacing the example's lines).
fn set_vars(root: &Path, vars: &[(&str, &str)]) {
    let path = root.join("envvars");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, value) in vars {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}=")))
            .map(String::from)
            .collect();
        lines.push(format!("{name}='{value}'"));
        text = lines.join("\n") + "\n";
    }
    // Atomically, like an editor: the watcher sees one complete file.
    let tmp = root.join(".envvars.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

struct Api {
    roots: Roots,
    d: Iohubd,
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn start(token: &str) -> Api {
        Api::start_with(token, &[]).await
    }

    /// iohubd with `extra` arguments (e.g. `--apply --only ...`).
    async fn start_with(token: &str, extra: &[&str]) -> Api {
        let roots = Roots::example("standalone");
        let port = free_port();
        set_vars(
            &roots.root,
            &[
                ("IOHUBOS_ADMIN_API_ENABLED", "true"),
                ("IOHUBOS_ADMIN_API_SERVER_PORT", &port.to_string()),
                ("IOHUBOS_ADMIN_API_AUTH_TOKEN", token),
            ],
        );
        let d = Iohubd::start(&roots.root, &roots.system, extra);
        let api = Api {
            roots,
            d,
            base: format!("http://127.0.0.1:{port}"),
            http: {
                sys::http::install_crypto_provider();
                reqwest::Client::builder().timeout(T).build().unwrap()
            },
        };
        // Ready once the public document answers.
        api.until(|| async {
            api.http
                .get(api.url("/openapi.json"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        })
        .await;
        api
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).header("X-API-Token", STRONG)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).header("x-api-token", STRONG)
    }

    /// Poll `cond` until it holds (bounded by `T`).
    async fn until<F, Fut>(&self, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + T;
        while !cond().await {
            assert!(Instant::now() < deadline, "condition not reached in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Services this daemon runs (`iohub/state/iohubd` facts).
    async fn runs(&self, service: &str) -> bool {
        let r = self.get("/v2/states/iohubd").send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["facts"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == service)
    }
}

async fn answer(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// An MQTT client playing a service: publishes its retained state and answers every command
/// with ok, except for an app named `broken`; records (verb, body).
struct Fake {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(control: &Control, service: &str, api: &Api, publish_state: bool) -> Fake {
        let id = format!("fake-{service}-{}", std::process::id());
        let (client, mut el) = AsyncClient::new(control.mqtt_options(&id), 100);
        client
            .subscribe(format!("iohub/cmd/{service}/+"), QoS::AtLeastOnce)
            .await
            .unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let c2 = client.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let verb = p.topic.rsplit('/').next().unwrap().to_string();
                        let req: Request = serde_json::from_slice(&p.payload).unwrap();
                        seen2.lock().unwrap().push((verb.clone(), req.body.clone()));
                        let reply = if req.body["app"] == "broken" {
                            Reply::err(
                                req.id.clone(),
                                vec![bus_schema::BusError::new(
                                    bus_schema::ErrorCode::NotFound,
                                    "no app broken",
                                )],
                            )
                        } else {
                            Reply::ok(req.id.clone(), json!({ "fake": verb }))
                        };
                        let to = req.reply_to.unwrap();
                        c2.publish(
                            to,
                            QoS::AtLeastOnce,
                            false,
                            serde_json::to_vec(&reply).unwrap(),
                        )
                        .await
                        .unwrap();
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        tokio::time::timeout(T, ready_rx).await.unwrap().unwrap();
        if !publish_state {
            return Fake { seen, _task: task };
        }
        let state = ServiceState::new(Phase::Applied, 1, 0);
        client
            .publish(
                format!("iohub/state/{service}"),
                QoS::AtLeastOnce,
                true,
                serde_json::to_vec(&state).unwrap(),
            )
            .await
            .unwrap();
        let path = format!("/v2/states/{service}");
        api.until(|| async { api.get(&path).send().await.unwrap().status() == StatusCode::OK })
            .await;
        Fake { seen, _task: task }
    }

    fn last(&self) -> (String, Value) {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }

    /// The last command seen, once it matches `pred` (bounded wait): when the real service runs
    /// too, it may answer the HTTP request before this listener has recorded the command.
    async fn seen_eventually(&self, pred: impl Fn(&(String, Value)) -> bool) -> (String, Value) {
        let deadline = Instant::now() + T;
        loop {
            let last = self.seen.lock().unwrap().last().cloned();
            match last {
                Some(l) if pred(&l) => return l,
                other => assert!(Instant::now() < deadline, "not seen; last: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A fake for `service` when this daemon does not run it.
async fn fake_unless_running(api: &Api, service: &str) -> Option<Fake> {
    if api.runs(service).await {
        // The real one: wait until it has published its state (the API answers 503 before).
        let path = format!("/v2/states/{service}");
        api.until(|| async { api.get(&path).send().await.unwrap().status() == StatusCode::OK })
            .await;
        None
    } else {
        Some(Fake::start(&api.d.control, service, api, true).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_read_routes_answer_as_the_original_with_a_strong_token() {
    let api = Api::start(STRONG).await;
    let apps = api.roots.root.join("docker/apps");
    std::fs::create_dir_all(apps.join("demo")).unwrap();
    std::fs::create_dir_all(apps.join("nocompose")).unwrap();
    std::fs::create_dir_all(apps.join("Odd.Name")).unwrap();
    let compose = "version: '3'\nservices:\n  web:\n    image: nginx\n";
    std::fs::write(apps.join("demo/docker-compose.yml"), compose).unwrap();
    std::fs::write(apps.join("demo/start.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        apps.join("demo/start.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let list: Vec<String> = api
        .get("/v1/app")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for name in ["demo", "nocompose", "Odd.Name"] {
        assert!(list.contains(&name.to_string()), "{list:?}");
    }
    let r = api.get("/v1/app/demo").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({ "enabled": true, "compose": compose }));
    let v: Value = api
        .get("/v1/app/demo/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({ "enabled": true }));
    let v: Value = api
        .get("/v1/app/ghost/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({ "enabled": false }));
    assert_eq!(
        answer(api.get("/v1/app/demo/compose").send().await.unwrap()).await,
        (StatusCode::OK, compose.to_string())
    );
    // 0644 start.sh: disabled.
    std::fs::set_permissions(
        apps.join("demo/start.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let v: Value = api
        .get("/v1/app/demo/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({ "enabled": false }));
    assert_eq!(
        answer(api.get("/v1/app/nocompose").send().await.unwrap()).await,
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"cannot load the application"}"#.into()
        )
    );
    assert_eq!(
        answer(api.get("/v1/app/nocompose/compose").send().await.unwrap()).await,
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"cannot load the application"}"#.into()
        )
    );
    for bad in [
        "/v1/app/Odd.Name",
        "/v1/app/1abc/status",
        "/v1/app/a%24(x)/compose",
    ] {
        assert_eq!(
            answer(api.get(bad).send().await.unwrap()).await,
            (StatusCode::BAD_REQUEST, "Invalid app name".into()),
            "{bad}"
        );
    }
    // Path sanity before anything, then the 404s.
    assert_eq!(
        answer(api.get("/v1/app/%").send().await.unwrap()).await,
        (StatusCode::BAD_REQUEST, "Bad Request".into())
    );
    assert_eq!(
        answer(api.get("/v1/nothing").send().await.unwrap()).await,
        (StatusCode::NOT_FOUND, "Not Found".into())
    );
    let (status, body) = answer(api.get("/elsewhere").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "Cannot GET /elsewhere");
    // Issue 16: text answers were sent as text/html; they are text/plain, errors JSON.
    for (path, mime) in [
        ("/v1/app/demo/compose", "text/plain"),
        ("/v1/app/Bad/compose", "text/plain"),
        ("/v1/app/%", "text/plain"),
        ("/v1/nothing", "text/plain"),
        ("/elsewhere", "text/plain"),
        ("/v1/app/nocompose", "application/json"),
    ] {
        let r = api.get(path).send().await.unwrap();
        let got = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(got.starts_with(mime), "{path}: {got}");
    }
    // Issue 16: a missing apps folder answered an undocumented 400; it is an empty list, and
    // an apps folder that does not read the documented 400.
    std::fs::remove_dir_all(&apps).unwrap();
    assert_eq!(
        answer(api.get("/v1/app").send().await.unwrap()).await,
        (StatusCode::OK, "[]".into())
    );
    std::fs::write(&apps, "not a folder").unwrap();
    assert_eq!(
        answer(api.get("/v1/app").send().await.unwrap()).await,
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"cannot load the applications"}"#.into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_change_routes_become_commands_to_their_owning_services() {
    let api = Api::start(STRONG).await;
    let apps = fake_unless_running(&api, "apps").await;
    let iohubd = Fake::start(&api.d.control, "iohubd", &api, true).await;

    let cases = [
        (
            "/v1/app/demo/enable",
            "enable",
            StatusCode::OK,
            "Enabled",
            "cannot enable the application",
        ),
        (
            "/v1/app/demo/disable",
            "disable",
            StatusCode::OK,
            "Disabled",
            "cannot disable the application",
        ),
        (
            "/v1/app/demo/undeploy",
            "undeploy",
            StatusCode::OK,
            "Undeployed",
            "cannot undeploy the application",
        ),
    ];
    for (path, verb, ok, text, refused) in cases {
        let (status, body) = answer(api.post(path).send().await.unwrap()).await;
        match &apps {
            Some(fake) => {
                assert_eq!((status, body.as_str()), (ok, text), "{path}");
                assert_eq!(fake.last(), (verb.to_string(), json!({ "app": "demo" })));
                let broken = path.replace("demo", "broken");
                let (status, body) = answer(api.post(&broken).send().await.unwrap()).await;
                assert_eq!(status, StatusCode::BAD_REQUEST);
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"], refused);
                assert!(
                    v["detail"][0].as_str().unwrap().contains("no app broken"),
                    "{v}"
                );
            }
            None => assert!(
                status == ok || status == StatusCode::BAD_REQUEST,
                "{path}: {status} {body}"
            ),
        }
        let bad = path.replace("demo", "Bad");
        assert_eq!(
            answer(api.post(&bad).send().await.unwrap()).await,
            (StatusCode::BAD_REQUEST, "Invalid app name".into())
        );
    }

    for (seconds, delay) in [("10", 10), ("1", 3), ("soon", 3), ("42abc", 42)] {
        let (status, body) = answer(
            api.post(&format!("/v1/admin/reboot/{seconds}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body, format!("Will reboot in {delay} seconds"));
        // iohubd itself answers the reboot command too (plan-only: nothing happens).
        let want = ("reboot".to_string(), json!({ "delay_secs": delay }));
        iohubd.seen_eventually(|l| *l == want).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_does_not_run_gets_503_with_a_clear_message() {
    let api = Api::start(STRONG).await;
    if api.runs("apps").await {
        return; // every owner runs in this build: nothing to check here
    }
    let (status, body) = answer(api.post("/v1/app/demo/enable").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("the apps service is not running"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_gets_401_and_a_weak_token_403_with_the_reason() {
    let api = Api::start("weak").await;
    let r = api.get("/v1/app").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["error"],
        "Your API token is not strong enough. Set a strong API token and restart the API"
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("shorter than 32 characters"),
        "{v}"
    );
    // The state says why too.
    let st: Value = api
        .get("/v2/states/admin_api")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null);
    assert!(st.is_null() || st["error"].is_string()); // refused like everything else

    // A strong token applies without a restart.
    set_vars(&api.roots.root, &[("IOHUBOS_ADMIN_API_AUTH_TOKEN", STRONG)]);
    api.until(|| async {
        api.get("/v1/app").send().await.unwrap().status() != StatusCode::FORBIDDEN
    })
    .await;
    let st: Value = api
        .get("/v2/states/admin_api")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["phase"], "applied", "{st}");
    assert_eq!(st["facts"]["token_ok"], true);

    let (status, body) = answer(api.http.get(api.url("/v1/app")).send().await.unwrap()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );
    let wrong = api
        .http
        .get(api.url("/v1/app"))
        .header("X-API-Token", format!("{STRONG}x"));
    let (status, body) = answer(wrong.send().await.unwrap()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthorized")
    );
    // Auth comes before the 404s, like the original.
    let (status, _) = answer(api.http.get(api.url("/elsewhere")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_bad_tokens_are_throttled_with_retry_after() {
    let api = Api::start(STRONG).await;
    // Requests without a token are refused but guess nothing: they never lock the address out
    // (schemathesis's missing-header check got 429 after a few of them).
    for _ in 0..12 {
        let r = api.http.get(api.url("/v1/app")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let mut throttled = None;
    for _ in 0..12 {
        let r = api
            .http
            .get(api.url("/v1/app"))
            .header("X-API-Token", "guess")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = throttled.expect("no 429 after repeated failures");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // While locked out, even the right token waits.
    let r = api.get("/v1/app").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_get_and_set_round_trip_through_the_config_service() {
    let api = Api::start(STRONG).await;
    let r = api
        .post("/v2/config/vars")
        .json(&json!({ "vars": { "IOHUBOS_TIMEZONE": "Europe/Rome" } }))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["written"], json!(["envvars"]));
    let text = std::fs::read_to_string(api.roots.root.join("envvars")).unwrap();
    assert!(
        text.contains("IOHUBOS_TIMEZONE='Europe/Rome'")
            || text.contains("IOHUBOS_TIMEZONE=Europe/Rome"),
        "{text}"
    );

    let v: Value = api
        .get("/v2/config/vars/IOHUBOS_TIMEZONE")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], "Europe/Rome");
    assert_eq!(v["source"], "envvars");
    // Secrets only say whether they are set.
    let v: Value = api
        .get("/v2/config/vars/IOHUBOS_ADMIN_API_AUTH_TOKEN")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["value"], json!({ "set": true }));
    assert!(!v.to_string().contains(STRONG));

    let r = api
        .get("/v2/config/vars/IOHUBOS_NOPE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let before = std::fs::read_to_string(api.roots.root.join("envvars")).unwrap();
    let r = api
        .post("/v2/config/vars")
        .json(&json!({ "vars": { "IOHUBOS_ADMIN_API_SERVER_PORT": "not-a-port" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["field"], "IOHUBOS_ADMIN_API_SERVER_PORT",
        "{v}"
    );
    assert_eq!(
        std::fs::read_to_string(api.roots.root.join("envvars")).unwrap(),
        before
    );
    let r = api
        .post("/v2/config/vars")
        .json(&json!({ "nope": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let v: Value = api
        .get("/v2/config/sections/system")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["generation"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        api.get("/v2/config/sections/nope")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let states: Value = api
        .get("/v2/states")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for s in ["config", "watcher", "admin_api", "iohubd"] {
        assert!(states[s]["phase"].is_string(), "{s}: {states}");
    }
    assert_eq!(
        api.get("/v2/states/nope").send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_deliver_an_event_caused_by_a_file_drop() {
    let api = Api::start(STRONG).await;
    let mut r = api.get("/v2/events").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut text = String::new();
    let deadline = Instant::now() + T;
    let mut dropped = false;
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), r.chunk())
            .await
            .expect("no event in time")
            .unwrap()
            .expect("stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if !dropped && text.contains("event: ready") {
            let fw = api.roots.root.join("firmware");
            std::fs::create_dir_all(&fw).unwrap();
            std::fs::write(fw.join(".partial"), b"not really firmware").unwrap();
            std::fs::rename(fw.join(".partial"), fw.join("firmware.tgz")).unwrap();
            dropped = true;
        }
        if text.contains("event: firmware_dropped") {
            break;
        }
    }
    let data = |event: &str| -> Value {
        let line = text
            .lines()
            .skip_while(|l| *l != format!("event: {event}"))
            .find(|l| l.starts_with("data: "))
            .unwrap();
        serde_json::from_str(line.trim_start_matches("data: ")).unwrap()
    };
    let v = data("firmware_dropped");
    assert_eq!(v["source"], "watcher");
    assert!(v["payload"].to_string().contains("firmware.tgz"), "{v}");
    // Issue 16: the `ready` event's data was `{}`, off the documented event schema; every
    // event, `ready` included, follows `Event` of the served document.
    let doc: Value = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &doc["components"]["schemas"]["Event"];
    let ready = data("ready");
    assert_eq!(
        ready,
        json!({ "source": "admin_api", "kind": "ready", "payload": {} })
    );
    for v in [&ready, &v] {
        conforms(v, schema);
    }
}

/// `v` against the subset of JSON Schema the document's object schemas use: `type`,
/// `required`, `properties` (by type) and `additionalProperties: false`.
fn conforms(v: &Value, schema: &Value) {
    assert_eq!(schema["type"], "object", "{schema}");
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for key in schema["required"].as_array().unwrap() {
        assert!(
            obj.contains_key(key.as_str().unwrap()),
            "{key} missing in {v}"
        );
    }
    let props = schema["properties"].as_object().unwrap();
    for (key, value) in obj {
        let Some(prop) = props.get(key) else {
            assert_ne!(
                schema["additionalProperties"], false,
                "{key} not allowed in {v}"
            );
            continue;
        };
        match prop["type"].as_str() {
            Some("string") => assert!(value.is_string(), "{key} of {v}"),
            Some("boolean") => assert!(value.is_boolean(), "{key} of {v}"),
            Some(other) => panic!("unchecked type {other}"),
            None => {}
        }
    }
}

/// Every served operation answers (not the fallback), the document is OpenAPI 3, and the
/// committed copy is current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_validates_and_matches_the_served_routes() {
    let api = Api::start(STRONG).await;
    let served: Value = api
        .http
        .get(api.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, openapi::document());

    // Structure: version, info, every operation with responses, path parameters declared,
    // every $ref resolvable.
    assert!(served["openapi"].as_str().unwrap().starts_with("3."));
    assert!(served["info"]["title"].is_string() && served["info"]["version"].is_string());
    let paths = served["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            documented.push((method.clone(), path.clone()));
            assert!(
                !op["responses"].as_object().unwrap().is_empty(),
                "{method} {path}"
            );
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            assert_eq!(declared, openapi::path_params(path), "{method} {path}");
        }
    }
    check_refs(&served, &served);
    if iohub_tests::require_program("openapi-spec-validator") {
        let file = api.roots.dir.path().join("openapi.json");
        std::fs::write(&file, served.to_string()).unwrap();
        let out = std::process::Command::new("openapi-spec-validator")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Documented <-> served: each documented operation reaches its handler (never the
    // fallback's 404 nor a 405), and the route table has exactly the documented operations.
    let table: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_string(), r.path.to_string()))
        .collect();
    let mut a = table.clone();
    a.sort();
    documented.sort();
    assert_eq!(a, documented);
    for r in ROUTES {
        if r.path == "/v2/events" {
            continue; // a stream; checked by its own test
        }
        let concrete = r
            .path
            .replace("{app}", "zz-probe")
            .replace("{seconds}", "3")
            .replace("{var}", "IOHUBOS_TIMEZONE")
            .replace("{section}", "system")
            .replace("{service}", "config")
            .replace("{item}", "x");
        let req = match r.method {
            Method::Get => api.get(&concrete),
            Method::Post => api.post(&concrete).json(&json!({})),
        };
        let (status, body) = answer(req.send().await.unwrap()).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{concrete}");
        assert!(
            body != "Not Found" && !body.contains("Cannot "),
            "{concrete}: fallback answered"
        );
    }
    let (status, body) = answer(api.get("/v2/undocumented").send().await.unwrap()).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "Not Found")
    );

    // The committed copy.
    let committed = iohub_tests::workspace().join("docs/openapi.json");
    let text = openapi::document_text();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&committed, &text).unwrap();
    }
    assert!(
        std::fs::read_to_string(&committed).unwrap_or_default() == text,
        "docs/openapi.json is stale: UPDATE_DOCS=1 cargo nextest run -p iohub-tests --test admin_api"
    );
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let ptr = r.strip_prefix('#').unwrap();
                assert!(doc.pointer(ptr).is_some(), "dangling $ref {r}");
            }
            m.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_content_never_becomes_shell() {
    let api = Api::start(STRONG).await;
    // Always record the deploy command (the real deployer, when it runs, answers as well; in
    // plan-only mode it leaves the zip in place).
    let runs = api.runs("deployer").await;
    let deployer = Fake::start(&api.d.control, "deployer", &api, !runs).await;
    let marker = api.roots.dir.path().join("injected");
    let m = marker.display();
    let compose = format!(
        "version: '3'\nservices:\n  web:\n    image: nginx\nvolumes:\n  \"x$(touch {m})\": {{}}\n  \"y`touch {m}`\": {{}}\n  \"z; touch {m}\": {{}}\n"
    );
    let r = api
        .post("/v1/app/evil/deploy")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("compose={}&enabled=TRUE", form_encode(&compose)))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(r).await;
    // The compose text as deployed, and the start script.
    assert_eq!((status, body.as_str()), (StatusCode::CREATED, "Deployed"));
    let (verb, req) = deployer.seen_eventually(|_| true).await;
    assert_eq!(verb, "deploy");
    let zip_path = req["path"].as_str().unwrap();
    assert!(zip_path.starts_with(api.roots.root.join("runtime/uploads").to_str().unwrap()));
    let mut zip = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        zip.by_name(name).unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let (deployed, script) = (
        read("docker/apps/evil/docker-compose.yml"),
        read("docker/apps/evil/start.sh"),
    );
    assert_eq!(deployed, compose);
    assert_eq!(script, START_SH);
    // Run the script with a stand-in docker-compose: nothing from the request runs.
    let bin = api.roots.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("docker-compose"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        bin.join("docker-compose"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let app = api.roots.dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("docker-compose.yml"), &deployed).unwrap();
    std::fs::write(app.join("start.sh"), &script).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let st = std::process::Command::new("sh")
        .arg(app.join("start.sh"))
        .env("PATH", path)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!marker.exists(), "the compose text ran as shell");

    // Not YAML / no services: the original's 400.
    for bad in ["a: [", "version: '3'\n", ""] {
        let r = api
            .post("/v1/app/evil/deploy")
            .json(&json!({ "compose": bad }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "not in yaml format");
    }
    let r = api.post("/v1/app/evil/deploy").send().await.unwrap();
    assert_eq!(
        answer(r).await,
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"not in yaml format"}"#.into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_without_enabled_and_undeploy_answer_like_the_original() {
    // Issue 11: a deploy without `enabled=true` was refused (the deployer wanted a start.sh) and
    // undeploy removed only the containers, answering 200 even for an unknown app.
    if !iohub_tests::docker::docker_available() {
        return;
    }
    let only = "config,watcher,apps,deployer,admin_api";
    let api = Api::start_with(STRONG, &["--apply", "--only", only]).await;
    let app = api.roots.root.join("docker/apps/quiet");
    let compose = "version: '3'\nservices:\n  web:\n    image: busybox\n";
    let deploy = |compose: String| {
        api.post("/v1/app/quiet/deploy")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("compose={}", form_encode(&compose)))
            .send()
    };
    let r = deploy(compose.to_string()).await.unwrap();
    assert_eq!(answer(r).await, (StatusCode::CREATED, "Deployed".into()));
    let compose_file = app.join("docker-compose.yml");
    api.until(|| async { compose_file.is_file() }).await;
    assert_eq!(std::fs::read_to_string(&compose_file).unwrap(), compose);
    assert!(
        !app.join("start.sh").exists(),
        "a new app deployed without `enabled` is disabled"
    );

    // A start.sh of the user's is left untouched by a deploy without `enabled`.
    std::fs::write(app.join("start.sh"), "#!/bin/sh\necho mine\n").unwrap();
    std::fs::set_permissions(app.join("start.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let v2 = format!("{compose}# v2\n");
    let r = deploy(v2.clone()).await.unwrap();
    assert_eq!(answer(r).await, (StatusCode::CREATED, "Deployed".into()));
    api.until(|| async { std::fs::read_to_string(&compose_file).is_ok_and(|t| t == v2) })
        .await;
    assert_eq!(
        std::fs::read_to_string(app.join("start.sh")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );
    let mode = std::fs::metadata(app.join("start.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // One enabled rule for the runner and the API: any execute bit.
    let v: Value = api
        .get("/v1/app/quiet/status")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({ "enabled": true }));

    // Undeploy deletes the folder (after stopping its containers: it has none here) ...
    let r = api.post("/v1/app/quiet/undeploy").send().await.unwrap();
    assert_eq!(answer(r).await, (StatusCode::OK, "Undeployed".into()));
    assert!(!app.exists());
    // ... and a missing app is the original's 400.
    let (status, body) = answer(api.post("/v1/app/quiet/undeploy").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "cannot undeploy the application", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_envvars_keeps_the_last_good_token_instead_of_locking_the_admin_out() {
    // Issue 16: with `envvars` unreadable the admin API re-read its token, found none and
    // answered 403 to everything, while the config service rightly kept the last good sections.
    let api = Api::start(STRONG).await;
    let envvars = api.roots.root.join("envvars");
    std::fs::remove_file(&envvars).unwrap();
    std::fs::create_dir(&envvars).unwrap();
    // The admin API re-reads its token on the edit, says it cannot, and keeps answering the
    // last good one; the config service says why too.
    for service in ["admin_api", "config"] {
        api.until(|| async {
            let r = api
                .get(&format!("/v2/states/{service}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "the admin was locked out");
            let v: Value = r.json().await.unwrap();
            v["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("envvars"))
        })
        .await;
    }
    let r = api
        .http
        .get(api.url("/v2/states/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "and only that token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_requests_are_capped_per_address_and_timed_out() {
    // Issue 16: 600 unauthenticated partial requests stayed open 70 s, and 1,100 of them took
    // down the admin API, the control listener and the apps broker under a 1,024-file limit.
    use services::admin_api::apply::{
        BODY_IDLE_TIMEOUT, HEADER_TIMEOUT, MAX_CONNECTIONS_PER_ADDRESS,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = Api::start(STRONG).await;
    let addr: std::net::SocketAddr = api.base.trim_start_matches("http://").parse().unwrap();
    async fn partial(
        from: &str,
        addr: std::net::SocketAddr,
        bytes: &[u8],
    ) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }
    /// Whether the server closes `s` within `within` (it may answer first, e.g. 408 or 400).
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
    let head = b"GET /v1/status HTTP/1.1\r\nHost: box\r\n";
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
        held.push(partial("127.0.0.2", addr, head).await);
    }
    // A body that stops half way.
    let mut body = partial(
        "127.0.0.3",
        addr,
        format!(
            "POST /v2/config/vars HTTP/1.1\r\nHost: box\r\nX-API-Token: {STRONG}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"vars\""
        )
        .as_bytes(),
    )
    .await;
    // One more from the same address is closed at once ...
    let mut over = partial("127.0.0.2", addr, head).await;
    assert!(closed_within(&mut over, Duration::from_secs(5)).await);
    // ... while another address is served.
    let r = api.get("/v2/states").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The half-open ones are closed once their headers are overdue, the stalled body once it
    // has paused too long.
    for s in &mut held {
        assert!(closed_within(s, HEADER_TIMEOUT + Duration::from_secs(10)).await);
    }
    assert!(closed_within(&mut body, BODY_IDLE_TIMEOUT + Duration::from_secs(10)).await);
    // Their places are free again.
    let mut again = Vec::new();
    for _ in 0..MAX_CONNECTIONS_PER_ADDRESS {
        again.push(partial("127.0.0.2", addr, b"").await);
    }
    let mut s = again.pop().unwrap();
    s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = Vec::new();
    tokio::time::timeout(T, s.read_to_end(&mut text))
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&text[..40.min(text.len())])
    );
    drop(api);
}

/// One raw HTTP/1.1 request on loopback (for what reqwest will not send: a declared length with
/// no body, a chunked body); returns the status and the head of the answer.
async fn raw_request(api: &Api, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = api.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("{head}Host: {addr}\r\nX-API-Token: {STRONG}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before the whole body is read: a write error is fine.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// Issue 16: the same oversized body was 400 on one route and 413 on another. Every route
/// answers 413 with the JSON error, whether the body declares its length or arrives chunked,
/// whether the handler reads a body or not; the document says so on every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413_on_every_route_and_documented() {
    let api = Api::start(STRONG).await;
    let big = "x".repeat(200 * 1024);
    let json_body = json!({ "vars": { "IOHUBOS_TIMEZONE": big }, "compose": big }).to_string();
    for r in ROUTES {
        if r.path == "/v2/events" || r.path == "/openapi.json" {
            continue;
        }
        let concrete = r
            .path
            .replace("{app}", "demo")
            .replace("{seconds}", "3")
            .replace("{var}", "IOHUBOS_TIMEZONE")
            .replace("{section}", "system")
            .replace("{service}", "config")
            .replace("{item}", "x");
        let method = r.method.as_str().to_uppercase();
        let limit = r.body_limit();
        // A declared length over the limit: refused before anything is read.
        let head = format!(
            "{method} {concrete} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            limit + 1
        );
        let (status, text) = raw_request(&api, &head, b"").await;
        assert_eq!(status, 413, "{method} {concrete}: {text}");
        assert!(text.contains("application/json"), "{text}");
        assert!(
            text.contains(&format!("larger than {limit} bytes")),
            "{text}"
        );
        let doc = openapi::document();
        assert!(
            doc["paths"][r.path][r.method.as_str()]["responses"]["413"].is_object(),
            "{concrete}: 413 undocumented"
        );
    }
    // Chunked (no declared length), read by the handler's extractor: the same answer.
    for path in ["/v2/config/vars", "/v1/app/demo/deploy"] {
        let mut chunked = Vec::new();
        for piece in json_body.as_bytes().chunks(16 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = format!(
            "POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        );
        let (status, text) = raw_request(&api, &head, &chunked).await;
        assert_eq!(status, 413, "{path}: {text}");
        assert!(text.contains("larger than 102400 bytes"), "{text}");
    }
    // With reqwest, as a client sends it.
    let r = api
        .post("/v2/config/vars")
        .body(json_body.clone())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("larger than"), "{v}");
}

/// A compose with every key the restricted policy refuses, in one service each.
const HOSTILE_SERVICES: &[(&str, &str)] = &[
    ("privileged: true", "services.s0.privileged"),
    ("network_mode: host", "services.s1.network_mode: host"),
    ("pid: host", "services.s2.pid: host"),
    ("ipc: host", "services.s3.ipc: host"),
    ("cap_add: [SYS_ADMIN]", "services.s4.cap_add"),
    ("devices: ['/dev/mem:/dev/mem']", "services.s5.devices"),
    ("volumes: ['/:/host']", "services.s6.volumes[0]: /: binds /"),
    (
        "volumes: ['../other-app/volumes:/steal']",
        "services.s7.volumes[0]: ../other-app/volumes",
    ),
];

/// `IOHUBOS_ADMIN_API_COMPOSE_POLICY=restricted` refuses each host-giving key at deploy time
/// with 400 and one message per key, before anything is written; an IOhub-style compose (its
/// own volumes, the global volume) deploys; zips are refused whole. The default (`any`) deploys
/// the same hostile compose, like the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restricted_compose_policy_refuses_each_host_giving_key() {
    let api = Api::start(STRONG).await;
    let runs = api.runs("deployer").await;
    let deployer = Fake::start(&api.d.control, "deployer", &api, !runs).await;
    let mut hostile = String::from("version: '3'\nservices:\n");
    for (i, (line, _)) in HOSTILE_SERVICES.iter().enumerate() {
        hostile.push_str(&format!("  s{i}:\n    image: busybox\n    {line}\n"));
    }
    let deploy = |app: &'static str, compose: String| {
        api.post(&format!("/v1/app/{app}/deploy"))
            .json(&json!({ "compose": compose, "enabled": true }))
            .send()
    };
    // The default: anything goes (the token is root-equivalent, as documented).
    let r = deploy("hostile", hostile.clone()).await.unwrap();
    assert_eq!(answer(r).await, (StatusCode::CREATED, "Deployed".into()));
    deployer.seen_eventually(|(verb, _)| verb == "deploy").await;
    let before = deployer.seen.lock().unwrap().len();

    set_vars(
        &api.roots.root,
        &[("IOHUBOS_ADMIN_API_COMPOSE_POLICY", "restricted")],
    );
    api.until(|| async {
        let st: Value = api
            .get("/v2/states/admin_api")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        st["facts"]["compose_policy"] == "restricted"
    })
    .await;
    let r = deploy("hostile", hostile.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "refused by the compose policy", "{v}");
    let detail: Vec<&str> = v["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(detail.len(), HOSTILE_SERVICES.len(), "{detail:#?}");
    for ((_, key), got) in HOSTILE_SERVICES.iter().zip(&detail) {
        assert!(got.starts_with(key), "{key}: {got}");
    }
    // One key at a time too: each alone is refused.
    for (line, key) in HOSTILE_SERVICES {
        let one = format!("services:\n  s0:\n    image: busybox\n    {line}\n");
        let r = deploy("hostile", one).await.unwrap();
        let v: Value = r.json().await.unwrap();
        let got = v["detail"][0].as_str().unwrap_or_default();
        let want = format!("services.s0.{}", key.splitn(3, '.').nth(2).unwrap());
        assert!(got.starts_with(&want), "{line}: {v}");
        assert_eq!(v["detail"].as_array().unwrap().len(), 1, "{v}");
    }
    assert_eq!(
        deployer.seen.lock().unwrap().len(),
        before,
        "a refused compose reached the deployer"
    );
    // Allowed: its own folder, the global volume, named volumes.
    let root = api.roots.root.display();
    let allowed = format!(
        "version: '3'\nservices:\n  web:\n    image: busybox\n    volumes:\n      - ./data:/data\n      - {root}/docker/apps/fine/volumes/logs:/logs\n      - global-vol:/global\nvolumes:\n  global-vol:\n    driver_opts: {{type: none, o: bind, device: {root}/docker/global/volumes/global-vol}}\n"
    );
    let r = deploy("fine", allowed).await.unwrap();
    assert_eq!(answer(r).await, (StatusCode::CREATED, "Deployed".into()));
    deployer
        .seen_eventually(|(_, body)| body["path"].as_str().is_some_and(|p| p.contains("fine")))
        .await;
    // A zip carries its own start.sh (root on the host): refused whole.
    let r = api
        .post("/v2/deploy")
        .header("content-type", "application/zip")
        .body(b"PK\x03\x04rest".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["errors"][0]["field"], "IOHUBOS_ADMIN_API_COMPOSE_POLICY",
        "{v}"
    );
}

/// Operations schemathesis does not fuzz, with why: `GET /v2/events` is a stream that never
/// ends (each case would wait for the request timeout); its events are checked against the
/// document's `Event` schema by `server_sent_events_deliver_an_event_caused_by_a_file_drop`.
/// Every other operation is fuzzed, the state-changing ones included: iohubd runs plan-only on
/// a temporary root (deploys, undeploys and `set` change only that root, reboot only answers
/// what it would do, and nothing outside the root is touched).
const NOT_FUZZED: &[&str] = &["/v2/events"];

/// Issue 16: schemathesis (PyPI, the version pinned in `scripts/test.sh`) against the document a
/// real iohubd serves, on loopback, with bounded examples and a fixed seed: every response's
/// status, content type, headers and body must be the documented ones, no 5xx, and data the
/// document forbids must be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_api_as_its_document_says() {
    let Some(st) = iohub_tests::schemathesis() else {
        return;
    };
    let version = std::process::Command::new(&st)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains(iohub_tests::SCHEMATHESIS_VERSION) || !iohub_tests::ci(),
        "{}: {version}",
        st.display()
    );
    let api = Api::start(STRONG).await;
    // Something to read: an app with a compose file and an enabled start.sh.
    let app = api.roots.root.join("docker/apps/demo");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("docker-compose.yml"),
        "services:\n  web:\n    image: busybox\n",
    )
    .unwrap();
    std::fs::write(app.join("start.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(app.join("start.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = api.roots.dir.path().join("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let max_examples = std::env::var("IOHUB_SCHEMATHESIS_MAX_EXAMPLES").unwrap_or("40".into());
    let mut cmd = tokio::process::Command::new(&st);
    cmd.current_dir(&work)
        .arg("run")
        .arg(api.url("/openapi.json"))
        .args(["--header", &format!("X-API-Token: {STRONG}")])
        .args(["--max-examples", &max_examples, "--seed", "16"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--workers", "1", "--request-timeout", "30", "--no-color"])
        .args(["--generation-database", "none"])
        // Schema-valid requests the API refuses on purpose, with the original's documented 400:
        // an app that does not exist (GET, enable, disable, undeploy), compose text that is
        // not a compose file, a body that is not a zip. Every other check runs.
        .args(["--exclude-checks", "positive_data_acceptance"]);
    for path in NOT_FUZZED {
        cmd.args(["--exclude-path", path]);
    }
    cmd.kill_on_drop(true);
    let t0 = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("schemathesis did not finish within 300 s")
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Vec<&str> = report.lines().rev().take(12).collect();
    let summary: Vec<&str> = summary.into_iter().rev().collect();
    eprintln!(
        "schemathesis took {:?}:\n{}",
        t0.elapsed(),
        summary.join("\n")
    );
    assert!(out.status.success(), "schemathesis failed:\n{report}");
    // It ran the operations (not an empty selection).
    assert!(report.contains("passed"), "{report}");
}
