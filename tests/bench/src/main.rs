//! `iohub-bench`: the benchmarks of docs/benchmarks.md, run by `scripts/bench.sh`.
//!
//! Everything runs against the real release binaries on loopback: `iohubd` on a temporary copy of
//! `examples/router`, and Debian's mosquitto as the peer broker, both driven by the same rumqttc
//! load generator in the same run. Every loop is bounded in count and time.
#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iohub_tests::{Iohubd, Roots};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(60);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A client of the load generator: rumqttc with TCP_NODELAY on its socket. Without it a QoS1
/// exchange stalls on Nagle's algorithm against a broker that does not force immediate ACKs:
/// rumqttc writes the PUBACK of a response and the next request in two writes, and the second
/// waits for the ACK of the first, which mosquitto delays by the kernel's 40 ms (iohubd sets
/// TCP_QUICKACK, which hid this). `IOHUB_BENCH_NAGLE=1` leaves Nagle on, to show the difference.
fn new_client(opts: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (c, mut el) = AsyncClient::new(opts, cap);
    let mut net = el.network_options();
    net.set_tcp_nodelay(std::env::var_os("IOHUB_BENCH_NAGLE").is_none());
    el.set_network_options(net);
    (c, el)
}

/// A client whose publishes arrive on a channel with their arrival time.
async fn client(
    opts: MqttOptions,
) -> (
    AsyncClient,
    mpsc::UnboundedReceiver<(String, bytes::Bytes, Instant)>,
) {
    let (c, mut el) = new_client(opts, 10_000);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.clone();
                    if tx.send((topic, p.payload, Instant::now())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (c, rx)
}

async fn recv_until(
    rx: &mut mpsc::UnboundedReceiver<(String, bytes::Bytes, Instant)>,
    mut pred: impl FnMut(&str, &[u8]) -> bool,
) -> Instant {
    loop {
        let (t, p, at) = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("timed out")
            .expect("closed");
        if pred(&t, &p) {
            return at;
        }
    }
}

/// Subscribe and wait until the subscription is live, by publishing to ourselves.
async fn subscribe_ready(
    c: &AsyncClient,
    rx: &mut mpsc::UnboundedReceiver<(String, bytes::Bytes, Instant)>,
    filter: &str,
    probe: &str,
) {
    c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    c.subscribe(probe, QoS::AtLeastOnce).await.unwrap();
    c.publish(probe, QoS::AtLeastOnce, false, "probe")
        .await
        .unwrap();
    recv_until(rx, |t, _| t == probe).await;
}

fn write_file(path: &Path, bytes: &[u8]) -> Instant {
    std::fs::write(path, bytes).unwrap();
    Instant::now()
}

async fn bench_drop_to_event(d: &Iohubd, root: &Path) -> String {
    let (c, mut rx) = client(d.control.mqtt_options("bench-drop")).await;
    subscribe_ready(
        &c,
        &mut rx,
        "iohub/event/watcher/deploy_dropped",
        "iohub/reply/bench-drop/probe",
    )
    .await;
    let mut h = hist();
    let n = 300;
    for i in 0..n {
        let name = format!("deploy/lat{i:04}.zip");
        let t0 = write_file(&root.join(&name), b"PK\x05\x06 not really a zip");
        let at = recv_until(&mut rx, |_, p| String::from_utf8_lossy(p).contains(&name)).await;
        h.record(at.duration_since(t0).as_micros() as u64).unwrap();
    }
    // Burst: 10,000 files as fast as the disk takes them, then wait for every event.
    let burst = 10_000;
    let t0 = Instant::now();
    for i in 0..burst {
        std::fs::write(root.join(format!("deploy/burst{i:05}.zip")), b"x").unwrap();
    }
    let written = t0.elapsed();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < burst {
        let (_, p, _) = tokio::time::timeout(LIMIT, rx.recv())
            .await
            .expect("burst timed out")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
        if let Some(path) = v["path"].as_str() {
            if path.starts_with("deploy/burst") {
                seen.insert(path.to_string());
            }
        }
    }
    let all = t0.elapsed();
    format!(
        "| file drop -> event (n={n}) | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |\n| 10,000-file burst -> 10,000 events | all {} events in {:.0} ms (files written in {:.0} ms), {:.0} events/s |\n",
        ms(&h, 0.5), ms(&h, 0.99), h.max() as f64 / 1000.0, seen.len(), all.as_secs_f64() * 1e3, written.as_secs_f64() * 1e3,
        burst as f64 / all.as_secs_f64()
    )
}

async fn bench_edit_to_generation(d: &Iohubd, root: &Path) -> String {
    let (c, mut rx) = client(d.control.mqtt_options("bench-edit")).await;
    subscribe_ready(
        &c,
        &mut rx,
        "iohub/config/system",
        "iohub/reply/bench-edit/probe",
    )
    .await;
    let envvars = std::fs::read_to_string(root.join("envvars")).unwrap();
    let mut h = hist();
    let n = 100;
    for i in 0..n {
        let tz = if i % 2 == 0 {
            "Europe/Rome"
        } else {
            "America/Los_Angeles"
        };
        // Edits of one file within the watcher's quiet period (50 ms) coalesce into one event by
        // design; an operator's edits are further apart than that.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let text = envvars.replace(
            "IOHUBOS_TIMEZONE='America/Los_Angeles'",
            &format!("IOHUBOS_TIMEZONE='{tz}'"),
        );
        // An editor save: write a temp file, rename it over.
        let tmp = root.join(".envvars.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, root.join("envvars")).unwrap();
        let t0 = Instant::now();
        let at = recv_until(&mut rx, |_, p| String::from_utf8_lossy(p).contains(tz)).await;
        h.record(at.duration_since(t0).as_micros() as u64).unwrap();
    }
    format!("| envvars edit -> new generation of the section published (n={n}) | p50 {:.2} ms, p99 {:.2} ms |\n", ms(&h, 0.5), ms(&h, 0.99))
}

async fn bench_request_reply(d: &Iohubd) -> String {
    let (c, mut rx) = client(d.control.mqtt_options("bench-rr")).await;
    subscribe_ready(
        &c,
        &mut rx,
        "iohub/reply/bench-rr/+",
        "iohub/reply/bench-rr/probe",
    )
    .await;
    let mut h = hist();
    let n = 2000;
    for i in 0..n {
        let id = format!("r{i}");
        let reply_to = format!("iohub/reply/bench-rr/{id}");
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
        let at = recv_until(&mut rx, |t, _| t == reply_to).await;
        h.record(at.duration_since(t0).as_micros() as u64).unwrap();
    }
    format!("| request -> reply over TCP, QoS1 (`iohub/cmd/config/get`, n={n}) | p50 {:.3} ms, p99 {:.3} ms |\n", ms(&h, 0.5), ms(&h, 0.99))
}

/// Load generator: `pubs` publishers send `per_pub` messages each to `topic`; `subs` subscribers
/// count what they receive. Returns (deliveries/s, loss fraction).
async fn load(
    opts: &dyn Fn(&str) -> MqttOptions,
    topic: &str,
    qos: QoS,
    pubs: usize,
    subs: usize,
    per_pub: usize,
) -> (f64, f64) {
    let received = Arc::new(AtomicU64::new(0));
    let expected = (pubs * per_pub * subs) as u64;
    let mut sub_clients = Vec::new();
    for s in 0..subs {
        let (c, mut el) = new_client(opts(&format!("load-sub-{s}")), 10_000);
        c.subscribe(topic, qos).await.unwrap();
        // wait for the SUBACK
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
                break;
            }
        }
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        sub_clients.push(c);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..pubs {
        let (c, el) = new_client(opts(&format!("load-pub-{p}")), 10_000);
        let topic = topic.to_string();
        tasks.push(tokio::spawn(drive(el)));
        tasks.push(tokio::spawn(async move {
            let payload = vec![0u8; 64];
            for _ in 0..per_pub {
                if c.publish(topic.clone(), qos, false, payload.clone())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            // keep the client alive until its queue is flushed
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(c);
        }));
    }
    let deadline = t0 + Duration::from_secs(30);
    let mut last = 0;
    let mut last_change = Instant::now();
    loop {
        let got = received.load(Ordering::Relaxed);
        if got >= expected || Instant::now() > deadline {
            break;
        }
        if got != last {
            last = got;
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(2) {
            break; // nothing more is coming: the rest was lost
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let got = received.load(Ordering::Relaxed);
    let elapsed = if got >= expected {
        t0.elapsed()
    } else {
        last_change.duration_since(t0)
    };
    for t in tasks {
        t.abort();
    }
    drop(sub_clients);
    (
        got as f64 / elapsed.as_secs_f64(),
        1.0 - got as f64 / expected as f64,
    )
}

async fn drive(mut el: EventLoop) {
    while el.poll().await.is_ok() {}
}

/// Which groups to run: `iohub-bench [GROUP...]`, all when none is named.
fn selected(group: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.is_empty() || args.iter().any(|a| a == group)
}

mod apps;
mod bridge;
mod broker;
mod firewall;
mod firmware;
mod floods;
mod network;
mod registry;
mod vpn;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-rumqttd") {
        // The broker group's third peer, in a process of its own (see broker::Rumqttd).
        let port = args
            .iter()
            .skip_while(|a| *a != "--port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("serve-rumqttd --port N");
        broker::serve_rumqttd(port);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    if selected("spine") {
        spine().await;
    }
    if selected("broker") {
        broker::run().await;
    }
    if std::env::args().any(|a| a == "broker-rtt") {
        broker::rtt_only().await;
    }
    if selected("registry") {
        println!("{}", registry::run().await);
    }
    if selected("firmware") {
        println!("{}", firmware::run().await);
    }
    if selected("firewall") {
        firewall::run().await;
    }
    if selected("network") {
        network::run().await;
    }
    if selected("apps") {
        println!("{}", apps::run().await);
    }
    if selected("floods") {
        floods::run().await;
    }
    if selected("bridge") {
        println!("{}", bridge::run().await);
    }
    if selected("vpn") {
        vpn::run().await;
    }
    if selected("admin_api") {
        println!("{}", iohub_tests::bench_admin_api::run().await);
    }
}

/// The spine's figures: start-up, idle RSS, request/reply, edit and drop latency (broker
/// throughput against mosquitto is the `broker` group).
async fn spine() {
    let roots = Roots::example("router");
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let mut out = String::new();
    out.push_str(&format!(
        "iohubd ready (READY=1) {:.0} ms after exec\n\n",
        d.started_in.as_secs_f64() * 1e3
    ));
    out.push_str("| measurement | result |\n|---|---|\n");
    // Let start-up work settle, then measure the idle footprint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.push_str(&format!(
        "| idle RSS, every service of this build enabled | {:.1} MiB |\n",
        d.rss_kib() as f64 / 1024.0
    ));
    out.push_str(&bench_request_reply(&d).await);
    out.push_str(&bench_edit_to_generation(&d, &roots.root).await);
    out.push_str(&bench_drop_to_event(&d, &roots.root).await);
    out.push_str(&format!(
        "| RSS after the runs above | {:.1} MiB |\n",
        d.rss_kib() as f64 / 1024.0
    ));

    println!("{out}");
    let (status, took) = d.stop();
    println!(
        "iohubd stopped on SIGTERM in {:.0} ms ({status})",
        took.as_secs_f64() * 1e3
    );
}
