//! Admin API benchmark (docs/benchmarks.md, "admin API"): latency and throughput of an
//! authenticated `GET /v2/states/config` (served from the state cache) and of
//! `GET /v2/config/vars/IOHUBOS_TIMEZONE` (HTTP -> bus -> config service -> HTTP), against the
//! peer measured in the same run: the same `config/get` as an MQTT request/reply over the
//! control listener. Every loop is bounded in count and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::mpsc;

use crate::{Iohubd, Roots};

const TOKEN: &str = "Bench!Token-For-The-Admin-API-0123456789";
const LIMIT: Duration = Duration::from_secs(120);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Sequential latency of `n` GETs.
async fn http_latency(http: &reqwest::Client, url: &str, n: usize) -> Histogram<u64> {
    let mut h = hist();
    for _ in 0..n {
        let t0 = Instant::now();
        let r = http
            .get(url)
            .header("X-API-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.unwrap();
        h.record(t0.elapsed().as_micros() as u64).unwrap();
    }
    h
}

/// Requests per second of `n` GETs with `concurrency` in flight.
async fn http_throughput(http: &reqwest::Client, url: &str, n: usize, concurrency: usize) -> f64 {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let http = http.clone();
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let r = http
                .get(&url)
                .header("X-API-Token", TOKEN)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            drop(permit);
        }));
        assert!(t0.elapsed() < LIMIT, "throughput run too long");
    }
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// The peer: sequential MQTT request/reply of `config/get` over the control listener.
async fn mqtt_latency(d: &Iohubd, n: usize) -> Histogram<u64> {
    let (c, mut el) = AsyncClient::new(d.control.mqtt_options("bench-api-peer"), 1000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    c.subscribe("iohub/reply/bench-api-peer/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = tx.send(String::new());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.topic.clone()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    // The SUBACK.
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    let mut h = hist();
    for i in 0..n {
        let id = format!("a{i}");
        let reply_to = format!("iohub/reply/bench-api-peer/{id}");
        let body = serde_json::json!({"id": id, "reply_to": reply_to, "body": {"var": "IOHUBOS_TIMEZONE"}});
        let t0 = Instant::now();
        c.publish(
            "iohub/cmd/config/get",
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&body).unwrap(),
        )
        .await
        .unwrap();
        loop {
            let topic = tokio::time::timeout(LIMIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            if topic == reply_to {
                break;
            }
        }
        h.record(t0.elapsed().as_micros() as u64).unwrap();
    }
    h
}

fn set_api_vars(root: &std::path::Path, port: u16) {
    let path = root.join("envvars");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text = text
        .lines()
        .filter(|l| !l.starts_with("IOHUBOS_ADMIN_API_"))
        .collect::<Vec<_>>()
        .join("\n");
    text.push_str(&format!(
        "\nIOHUBOS_ADMIN_API_ENABLED='true'\nIOHUBOS_ADMIN_API_SERVER_PORT='{port}'\nIOHUBOS_ADMIN_API_AUTH_TOKEN='{TOKEN}'\n"
    ));
    std::fs::write(path, text).unwrap();
}

/// Run the admin API group; returns the markdown rows.
pub async fn run() -> String {
    let roots = Roots::example("router");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    set_api_vars(&roots.root, port);
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    sys::http::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let state_url = format!("http://127.0.0.1:{port}/v2/states/config");
    let var_url = format!("http://127.0.0.1:{port}/v2/config/vars/IOHUBOS_TIMEZONE");
    let deadline = Instant::now() + LIMIT;
    loop {
        let ok = http
            .get(&state_url)
            .header("X-API-Token", TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "admin API did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n = 2000;
    let state = http_latency(&http, &state_url, n).await;
    let var = http_latency(&http, &var_url, n).await;
    let peer = mqtt_latency(&d, n).await;
    let rps_state = http_throughput(&http, &state_url, 20_000, 16).await;
    let rps_var = http_throughput(&http, &var_url, 5_000, 16).await;
    let mut out = String::new();
    out.push_str("| measurement (loopback, keep-alive, token checked) | p50 | p99 | req/s (16 in flight) |\n|---|---|---|---|\n");
    out.push_str(&format!(
        "| `GET /v2/states/config` (state cache), n={n} | {:.3} ms | {:.3} ms | {rps_state:.0} |\n",
        ms(&state, 0.5),
        ms(&state, 0.99)
    ));
    out.push_str(&format!(
        "| `GET /v2/config/vars/IOHUBOS_TIMEZONE` (HTTP -> bus -> config), n={n} | {:.3} ms | {:.3} ms | {rps_var:.0} |\n",
        ms(&var, 0.5),
        ms(&var, 0.99)
    ));
    out.push_str(&format!(
        "| peer: MQTT `iohub/cmd/config/get` request/reply (rumqttc, QoS1), n={n} | {:.3} ms | {:.3} ms | |\n",
        ms(&peer, 0.5),
        ms(&peer, 0.99)
    ));
    out.push_str(&format!(
        "\np50 ratios: state route / MQTT peer = {:.2}; config route / MQTT peer = {:.2}\n",
        ms(&state, 0.5) / ms(&peer, 0.5),
        ms(&var, 0.5) / ms(&peer, 0.5)
    ));
    drop(d);
    out
}
