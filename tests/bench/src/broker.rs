//! The broker benchmarks (group `broker`): iohubd's apps listener (the IOhub global broker,
//! anonymous, `max_queued_messages` 1000) against Debian's mosquitto configured alike
//! (`max_queued_messages 1000`, `set_tcp_nodelay true`) and rumqttd (crates.io, its own router,
//! the settings of its example `rumqttd.toml`, in a process of its own: `iohub-bench
//! serve-rumqttd`), same rumqttc generator (TCP_NODELAY, keepalive 300 s: rumqttd refuses 0),
//! same run. The
//! WebSocket round trip is compared with iohubd's own TCP one (Debian's mosquitto 2.0.11 cannot
//! open a WebSocket listener on this machine kind: libwebsockets fails to bind).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iohub_tests::{rss_kib, Iohubd, Roots};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, Transport};
use tokio::io::AsyncWriteExt;

use super::{hist, load, ms, new_client, LIMIT};

struct Peer {
    port: u16,
    pid: u32,
}

/// The three brokers of a table row, in column order: iohubd, mosquitto, rumqttd.
type Peers = [Peer; 3];

/// The rumqttd configuration of `iohub-bench serve-rumqttd`: the router and v4 server settings
/// of rumqttd's example `rumqttd.toml`, on `127.0.0.1:port`, without its console, Prometheus,
/// v5 and WebSocket servers.
fn rumqttd_config(port: u16) -> rumqttd::Config {
    serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 10010,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104857600,
            "max_segment_count": 10,
        },
        "v4": {
            "1": {
                "name": "v4-1",
                "listen": format!("127.0.0.1:{port}"),
                "next_connection_delay_ms": 1,
                "connections": {
                    "connection_timeout_ms": 60000,
                    "max_payload_size": 20480,
                    "max_inflight_count": 100,
                    "dynamic_filters": true,
                },
            },
        },
    }))
    .unwrap()
}

/// `iohub-bench serve-rumqttd --port N`: run rumqttd until killed.
pub(crate) fn serve_rumqttd(port: u16) {
    let mut broker = rumqttd::Broker::new(rumqttd_config(port));
    broker.start().expect("rumqttd");
}

/// rumqttd in a child process (`iohub-bench serve-rumqttd`), so that its RSS is its own.
struct Rumqttd {
    child: std::process::Child,
    port: u16,
}

impl Rumqttd {
    fn start() -> Rumqttd {
        let port = free_port();
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["serve-rumqttd", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(port);
        Rumqttd { child, port }
    }
}

impl Drop for Rumqttd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (at most 5 s) until something accepts on `port`.
fn wait_listening(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn options(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(300))
        .set_inflight(100)
        .set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// A client of iohubd's WebSocket listener on `port` (subprotocol `mqtt`), set up as [`options`].
fn ws_options(port: u16, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, format!("ws://127.0.0.1:{port}/mqtt"), port);
    o.set_transport(Transport::Ws)
        .set_keep_alive(Duration::from_secs(300))
        .set_inflight(100)
        .set_max_packet_size(1 << 20, 1 << 20);
    o
}

pub(crate) fn vm(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) struct Mosquitto {
    pub(crate) child: std::process::Child,
    pub(crate) port: u16,
}

impl Mosquitto {
    pub(crate) fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "mosquitto-apps.conf", "max_queued_messages 1000\n")
    }

    /// mosquitto on a free loopback port, configured as the apps listener plus `extra` lines.
    fn start_with(dir: &Path, name: &str, extra: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join(name);
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_connections -1\n{extra}"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto)");
        wait_listening(port);
        Mosquitto { child, port }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn connected(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    connected_with(options(port, id)).await
}

pub(crate) async fn connected_with(options: MqttOptions) -> (AsyncClient, EventLoop) {
    let id = options.client_id();
    let (c, mut el) = new_client(options, 10_000);
    loop {
        match tokio::time::timeout(LIMIT, el.poll()).await.unwrap() {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return (c, el),
            Ok(_) => {}
            Err(e) => panic!("connect {id}: {e}"),
        }
    }
}

pub(crate) async fn wait_suback(el: &mut EventLoop) {
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) =
            tokio::time::timeout(LIMIT, el.poll()).await.unwrap()
        {
            return;
        }
    }
}

/// Request/response: a responder echoes `rt/req` to `rt/resp`; n round trips at `qos`. Returns
/// (p50 ms, p99 ms, round trips that got no answer within 5 s).
async fn round_trip(port: u16, qos: QoS, n: usize, ws: bool) -> (f64, f64, usize) {
    let tag = format!("{qos:?}-{port}");
    let opts = |id: String| {
        if ws {
            ws_options(port, &id)
        } else {
            options(port, &id)
        }
    };
    let (responder, mut rel) = connected_with(opts(format!("rt-responder-{tag}"))).await;
    responder.subscribe("rt/req", qos).await.unwrap();
    wait_suback(&mut rel).await;
    let echo = tokio::spawn(async move {
        loop {
            match rel.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if responder
                        .try_publish("rt/resp", qos, false, p.payload)
                        .is_err()
                    {
                        eprintln!("responder: request queue full");
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("responder: {e}");
                    return;
                }
            }
        }
    });
    let (client, mut el) = connected_with(opts(format!("rt-client-{tag}"))).await;
    client.subscribe("rt/resp", qos).await.unwrap();
    wait_suback(&mut el).await;
    let mut h = hist();
    let mut lost = 0;
    for i in 0..n {
        let t0 = Instant::now();
        let want = format!("{i}");
        client
            .publish("rt/req", qos, false, want.clone())
            .await
            .unwrap();
        let answered = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.payload == want => return,
                    Ok(_) => {}
                    Err(e) => panic!("round trip: {e}"),
                }
            }
        })
        .await;
        if answered.is_err() {
            lost += 1;
            if lost >= 3 {
                eprintln!("round trip {tag}: no answer 3 times, giving up");
                break;
            }
            continue;
        }
        h.record(t0.elapsed().as_micros().max(1) as u64).unwrap();
    }
    echo.abort();
    (ms(&h, 0.5), ms(&h, 0.99), lost)
}

/// `n` messages from one QoS0 publisher to one QoS0 subscriber (lossless at this rate on both
/// brokers); returns (msgs/s received, received).
async fn stream(port: u16, n: usize) -> (f64, u64) {
    let (sub, mut sel) = connected(port, "stream-sub").await;
    sub.subscribe("stream/x", QoS::AtMostOnce).await.unwrap();
    wait_suback(&mut sel).await;
    let (publisher, mut pel) = connected(port, "stream-pub").await;
    let t0 = Instant::now();
    let feeder = tokio::spawn(async move {
        let payload = vec![0u8; 64];
        for _ in 0..n {
            if publisher
                .publish("stream/x", QoS::AtMostOnce, false, payload.clone())
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let driver = tokio::spawn(async move { while pel.poll().await.is_ok() {} });
    let mut got = 0u64;
    let mut last = Instant::now();
    while got < n as u64 {
        match tokio::time::timeout(Duration::from_secs(2), sel.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                got += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    // A broker that stopped reading the publisher would hold the feeder for ever.
    feeder.abort();
    driver.abort();
    (got as f64 / last.duration_since(t0).as_secs_f64(), got)
}

/// RSS per idle connection: `n` raw TCP clients that CONNECT and then stay silent.
async fn idle_connections(port: u16, pid: u32, n: usize) -> f64 {
    let before = rss_kib(pid);
    let mut socks = Vec::with_capacity(n);
    let mut connect = bytes::BytesMut::new();
    for i in 0..n {
        connect.clear();
        let mut c = rumqttc::Connect::new(format!("idle-{i}"));
        c.keep_alive = 600;
        Packet::Connect(c).write(&mut connect, usize::MAX).unwrap();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&connect).await.unwrap();
        let mut ack = [0u8; 4];
        tokio::time::timeout(LIMIT, tokio::io::AsyncReadExt::read_exact(&mut s, &mut ack))
            .await
            .unwrap()
            .unwrap();
        socks.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    drop(socks);
    (after.saturating_sub(before)) as f64 * 1024.0 / n as f64
}

/// RSS growth per message of one-shot publishers (connect, publish QoS1 retained-free,
/// disconnect), each with a new client id; after a warm-up of the same size.
async fn one_shot(port: u16, pid: u32, n: usize) -> f64 {
    async fn run(port: u16, from: usize, n: usize) {
        for i in from..from + n {
            let (c, mut el) = connected(port, &format!("oneshot-{i}")).await;
            c.publish(
                format!("oneshot/{i}"),
                QoS::AtLeastOnce,
                false,
                vec![0u8; 64],
            )
            .await
            .unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                    Ok(Ok(_)) => {}
                    _ => {
                        eprintln!("one-shot {i}: no PUBACK within 10 s");
                        break;
                    }
                }
            }
            c.disconnect().await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
        }
    }
    run(port, 0, n).await;
    let before = rss_kib(pid);
    run(port, n, n).await;
    let after = rss_kib(pid);
    (after as f64 - before as f64) * 1024.0 / n as f64
}

/// Publish `n` retained topics, then time a fresh `ret/#` subscriber's receipt of them; stops
/// when 2 s pass without a message. Returns (ms until the last one, how many arrived).
async fn retained_gets(port: u16, n: usize) -> (f64, usize) {
    let (p, mut pel) = connected(port, "ret-pub").await;
    let feeder = tokio::spawn(async move {
        for i in 0..n {
            p.publish(format!("ret/{i:05}"), QoS::AtLeastOnce, true, vec![1u8; 16])
                .await
                .unwrap();
        }
        p
    });
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(10), pel.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    feeder.abort();
    let (s, mut sel) = connected(port, "ret-sub").await;
    let t0 = Instant::now();
    s.subscribe("ret/#", QoS::AtLeastOnce).await.unwrap();
    let mut got = BTreeSet::new();
    let mut last = t0;
    while got.len() < n && last.elapsed() < Duration::from_secs(2) {
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            tokio::time::timeout(Duration::from_millis(200), sel.poll()).await
        {
            got.insert(p.topic);
            last = Instant::now();
        }
    }
    (last.duration_since(t0).as_secs_f64() * 1e3, got.len())
}

/// The broker benchmark: iohubd's apps listener against mosquitto and rumqttd, one table row
/// per load; then the persistent-session figures, on brokers configured to hold 10,000 messages
/// for an absent client.
pub(crate) async fn run() {
    let roots = Roots::example("router");
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    let ws_port = configure_websocket_port(&roots);
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let apps = apps_listener(&d).await;
    let mosq = Mosquitto::start(roots.dir.path());
    let rumq = Rumqttd::start();
    let peers = [
        Peer {
            port: apps.port(),
            pid: d.pid(),
        },
        Peer {
            port: mosq.port,
            pid: mosq.child.id(),
        },
        Peer {
            port: rumq.port,
            pid: rumq.child.id(),
        },
    ];
    let mut out = String::from(
        "| load (64-byte payloads) | iohubd apps listener | mosquitto | rumqttd | iohubd / mosquitto | iohubd / rumqttd |\n|---|---|---|---|---|---|\n",
    );
    fan_in_and_fan_out(&peers, &mut out).await;
    round_trips(&peers, ws_port, &mut out).await;
    retained(&peers, &mut out).await;
    eprint!("{out}");
    memory_per_client(&peers, &mut out).await;
    streams(&peers, &mut out).await;
    println!("## broker (apps listener vs mosquitto vs rumqttd)\n\n{out}");
    drop(mosq);
    drop(rumq);
    let _ = d.stop();
    println!("{}", persistent_sessions().await);
}

/// `iohub-bench broker-rtt` (named only explicitly; for profiling): the QoS0 and QoS1 round trips
/// alone, iohubd and mosquitto, `IOHUB_BENCH_RTT_ROUNDS` times (1 by default, at most 20).
pub(crate) async fn rtt_only() {
    let roots = Roots::example("router");
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    configure_websocket_port(&roots);
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let apps = apps_listener(&d).await;
    let mosq = Mosquitto::start(roots.dir.path());
    eprintln!("iohubd pid {}, mosquitto pid {}", d.pid(), mosq.child.id());
    let rounds: usize = std::env::var("IOHUB_BENCH_RTT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .min(20);
    for _ in 0..rounds {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for (name, port) in [("iohubd", apps.port()), ("mosquitto", mosq.port)] {
                let run = tokio::time::timeout(
                    Duration::from_secs(60),
                    round_trip(port, qos, 2000, false),
                );
                match run.await {
                    Ok((p50, p99, lost)) => println!(
                        "{qos:?} {name}: p50 {p50:.3} ms, p99 {p99:.3} ms, {lost} unanswered"
                    ),
                    Err(_) => println!("{qos:?} {name}: hung (no answer within 60 s)"),
                }
            }
        }
    }
    drop(mosq);
    let _ = d.stop();
}

/// A table row: the three brokers' `cells`, then the ratios of iohubd's figure `v[0]` to
/// mosquitto's and rumqttd's (empty where one is not a number).
fn row(name: &str, cells: [String; 3], v: [f64; 3]) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        cells[0],
        cells[1],
        cells[2],
        ratio(v[0], v[1]),
        ratio(v[0], v[2])
    )
}

/// `a / b` as a ratio cell; empty when it is not a number (a hung or empty measurement).
fn ratio(a: f64, b: f64) -> String {
    let x = a / b;
    if x.is_finite() && x > 0.0 {
        format!("{x:.2}x")
    } else {
        String::new()
    }
}

/// Give the apps broker a WebSocket listener on a free port (it listens on every interface, as
/// configured on a box; the bench only connects over loopback); returns the port.
pub(crate) fn configure_websocket_port(roots: &Roots) -> u16 {
    let ws_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let envvars = roots.root.join("envvars");
    let mut vars = std::fs::read_to_string(&envvars).unwrap();
    vars.push_str(&format!("\nIOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT={ws_port}\n"));
    std::fs::write(&envvars, vars).unwrap();
    ws_port
}

/// The apps listener's address, from the retained global_mqtt state (once it also lists the
/// WebSocket listener).
pub(crate) async fn apps_listener(d: &Iohubd) -> SocketAddr {
    let (c, mut el) = AsyncClient::new(d.control.mqtt_options("bench-watch"), 10);
    c.subscribe("iohub/state/global_mqtt", QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::Publish(p))) =
            tokio::time::timeout(LIMIT, el.poll()).await.unwrap()
        {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if let (Some(a), Some(_)) = (
                v["facts"]["listen"].as_str(),
                v["facts"]["websocket"].as_str(),
            ) {
                break a.parse().unwrap();
            }
        }
    }
}

/// Throughput rows: fan-in and fan-out, QoS 0 and 1, and fan-in at QoS 2.
async fn fan_in_and_fan_out(peers: &Peers, out: &mut String) {
    let cases: [(&str, QoS, usize, usize, usize); 5] = [
        (
            "fan-in QoS0: 4 publishers x 50,000 -> 1 subscriber",
            QoS::AtMostOnce,
            4,
            1,
            50_000,
        ),
        (
            "fan-in QoS1: 4 publishers x 20,000 -> 1 subscriber",
            QoS::AtLeastOnce,
            4,
            1,
            20_000,
        ),
        (
            "fan-in QoS2: 4 publishers x 5,000 -> 1 subscriber (QoS2)",
            QoS::ExactlyOnce,
            4,
            1,
            5_000,
        ),
        (
            "fan-out QoS0: 1 publisher x 20,000 -> 10 subscribers",
            QoS::AtMostOnce,
            1,
            10,
            20_000,
        ),
        (
            "fan-out QoS1: 1 publisher x 10,000 -> 10 subscribers",
            QoS::AtLeastOnce,
            1,
            10,
            10_000,
        ),
    ];
    for (name, qos, pubs, subs, per) in cases {
        eprintln!("broker: {name}");
        let mut cells = Vec::new();
        let mut v = [0.0; 3];
        for (i, p) in peers.iter().enumerate() {
            let port = p.port;
            let opts = move |id: &str| options(port, id);
            let (rate, lost) = load(&opts, "bench/load", qos, pubs, subs, per).await;
            cells.push(format!("{rate:.0} msgs/s ({:.1}% lost)", lost * 100.0));
            v[i] = rate;
        }
        out.push_str(&row(name, cells.try_into().unwrap(), v));
    }
}

/// Request/response latency rows, QoS 0 and 1: each broker over TCP, then iohubd over WebSocket
/// (`ws_port`). Prints the table so far after each QoS.
async fn round_trips(peers: &Peers, ws_port: u16, out: &mut String) {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        eprintln!("broker: round trip {qos:?}");
        let mut r = Vec::new();
        let mut p50s = Vec::new();
        for (port, ws) in [
            (peers[0].port, false),
            (peers[1].port, false),
            (peers[2].port, false),
            (ws_port, true),
        ] {
            // Bounded as a whole: a hung exchange is reported, not waited for.
            let run =
                tokio::time::timeout(Duration::from_secs(60), round_trip(port, qos, 2000, ws));
            r.push(match run.await {
                Ok((p50, p99, lost)) => {
                    p50s.push(p50);
                    format!("{p50:.3} / {p99:.3} ms ({lost} unanswered)")
                }
                Err(_) => {
                    p50s.push(f64::NAN);
                    "hung (no answer within 60 s)".to_string()
                }
            });
        }
        out.push_str(&row(
            &format!("request/response {qos:?} (n=2000) p50 / p99; ratios of p50"),
            [r[0].clone(), r[1].clone(), r[2].clone()],
            [p50s[0], p50s[1], p50s[2]],
        ));
        out.push_str(&format!(
            "| same over WebSocket (iohubd only; ratio: vs iohubd over TCP) | {} | | | {} | |\n",
            r[3],
            ratio(p50s[3], p50s[0])
        ));
        eprint!("{out}");
    }
}

/// The retained row: 10,000 retained topics delivered to a new subscriber.
async fn retained(peers: &Peers, out: &mut String) {
    eprintln!("broker: retained");
    let mut cells = Vec::new();
    for p in peers {
        let (t, got) = retained_gets(p.port, 10_000).await;
        cells.push(format!("{got} in {t:.0} ms"));
    }
    out.push_str(&format!(
        "| 10,000 retained topics -> a new `ret/#` subscriber (QoS1): received, time | {} | {} | {} | | |\n",
        cells[0], cells[1], cells[2]
    ));
}

/// The memory rows: RSS per idle connection, and RSS growth per one-shot publisher.
async fn memory_per_client(peers: &Peers, out: &mut String) {
    eprintln!("broker: idle connections");
    let mut v = [0.0; 3];
    for (i, p) in peers.iter().enumerate() {
        v[i] = idle_connections(p.port, p.pid, 1000).await;
    }
    out.push_str(&row(
        "RSS per idle connection (1,000 connected, silent)",
        v.map(|b| format!("{b:.0} B")),
        v,
    ));
    eprintln!("broker: one-shot publishers");
    let mut v = [0.0; 3];
    for (i, p) in peers.iter().enumerate() {
        v[i] = one_shot(p.port, p.pid, 2000).await;
    }
    out.push_str(&format!(
        "| RSS growth per one-shot publisher (connect, QoS1 publish, disconnect; 2,000 after 2,000) | {:.1} B | {:.1} B | {:.1} B | | |\n",
        v[0], v[1], v[2]
    ));
}

/// The stream rows: a 1 -> 1 QoS0 stream to 500k, then 3M messages in all, with RSS and peak
/// RSS after each.
async fn streams(peers: &Peers, out: &mut String) {
    for (label, n) in [("500k", 500_000usize), ("3M", 2_500_000)] {
        eprintln!("broker: stream {label}");
        let mut cells = Vec::new();
        let mut v = [0.0; 3];
        for (i, p) in peers.iter().enumerate() {
            let (rate, got) = stream(p.port, n).await;
            v[i] = rate;
            cells.push(format!(
                "{rate:.0}, {got}, {}, {}",
                mib(rss_kib(p.pid)),
                mib(vm(p.pid, "VmHWM:"))
            ));
        }
        out.push_str(&row(
            &format!(
                "1 -> 1 QoS0 stream to {label} messages total: msgs/s, received, RSS, peak RSS; ratios of msgs/s"
            ),
            cells.try_into().unwrap(),
            v,
        ));
    }
}

/// Bytes of the files under `dir` (apparent sizes), 0 when it does not exist.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Offline queue of one persistent session: a clean_session=false client subscribes at QoS1 to
/// `offline/q` and leaves; `n` QoS1 messages are published (every PUBACK awaited); it comes back
/// and receives them. `store` is where the broker keeps sessions on disk (after `settle`, its
/// write-behind delay). Returns (fill s, RSS growth, bytes on disk, drain s, received).
async fn offline_queue(
    p: &Peer,
    n: usize,
    store: Option<&Path>,
    settle: Duration,
) -> (f64, u64, u64, f64, usize) {
    let session = |port| {
        let mut o = options(port, "offline-sub");
        o.set_clean_session(false);
        o
    };
    let (c, mut el) = connected_with(session(p.port)).await;
    c.subscribe("offline/q", QoS::AtLeastOnce).await.unwrap();
    wait_suback(&mut el).await;
    c.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while el.poll().await.is_ok() {}
    })
    .await;
    drop(el);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib(p.pid);
    let t0 = Instant::now();
    let (publisher, mut pel) = connected(p.port, "offline-pub").await;
    let feeder = tokio::spawn(async move {
        for i in 0..n {
            let payload = format!("{i:064}");
            if publisher
                .publish("offline/q", QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(Duration::from_secs(10), pel.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    let fill = t0.elapsed().as_secs_f64();
    feeder.abort();
    tokio::time::sleep(settle).await;
    let grown = rss_kib(p.pid).saturating_sub(before);
    let disk = store.map(dir_bytes).unwrap_or(0);
    let t1 = Instant::now();
    let (_c, mut el) = connected_with(session(p.port)).await;
    let mut got = BTreeSet::new();
    let mut last = t1;
    while got.len() < n && last.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(Duration::from_secs(1), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(m)))) => {
                got.insert(m.payload);
                last = Instant::now();
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => break,
        }
    }
    (
        fill,
        grown,
        disk,
        last.duration_since(t1).as_secs_f64(),
        got.len(),
    )
}

/// The persistent-session table: iohubd and mosquitto configured to hold 20,000 messages per
/// absent client (`IOHUBOS_GLOBAL_MQTT_MAX_QUEUED`, `max_queued_messages`; mosquitto with
/// `persistence true`, saved every second), rumqttd as configured above (its commit log).
async fn persistent_sessions() -> String {
    let n = 10_000;
    let roots = Roots::example("router");
    configure_websocket_port(&roots);
    let envvars = roots.root.join("envvars");
    let mut vars = std::fs::read_to_string(&envvars).unwrap();
    vars.push_str("IOHUBOS_GLOBAL_MQTT_MAX_QUEUED=20000\n");
    std::fs::write(&envvars, vars).unwrap();
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let apps = apps_listener(&d).await;
    let db = roots.dir.path().join("mosquitto-db");
    std::fs::create_dir_all(&db).unwrap();
    let mosq = Mosquitto::start_with(
        roots.dir.path(),
        "mosquitto-persistent.conf",
        &format!(
            "max_queued_messages 20000\npersistence true\npersistence_location {}/\nautosave_interval 1\n",
            db.display()
        ),
    );
    let rumq = Rumqttd::start();
    let store = roots.root.join("runtime/broker/apps");
    let settle = Duration::from_millis(1500);
    let runs = [
        (
            Peer {
                port: apps.port(),
                pid: d.pid(),
            },
            Some(store.as_path()),
        ),
        (
            Peer {
                port: mosq.port,
                pid: mosq.child.id(),
            },
            Some(db.as_path()),
        ),
        (
            Peer {
                port: rumq.port,
                pid: rumq.child.id(),
            },
            None,
        ),
    ];
    let mut r = Vec::new();
    for (p, dir) in &runs {
        eprintln!("broker: offline queue on port {}", p.port);
        r.push(offline_queue(p, n, *dir, settle).await);
    }
    drop(mosq);
    drop(rumq);
    let _ = d.stop();
    let mut out = String::from(
        "| persistent session, 10,000 QoS1 messages (64 bytes) for an absent client | iohubd apps listener | mosquitto (persistence true) | rumqttd (in memory) | iohubd / mosquitto | iohubd / rumqttd |\n|---|---|---|---|---|---|\n",
    );
    out.push_str(&row(
        "fill: publish all 10,000 (each PUBACK awaited)",
        [0, 1, 2].map(|i| format!("{:.0} ms", r[i].0 * 1e3)),
        [r[0].0, r[1].0, r[2].0],
    ));
    out.push_str(&row(
        "broker RSS growth after the fill",
        [0, 1, 2].map(|i| mib(r[i].1)),
        [r[0].1 as f64, r[1].1 as f64, r[2].1 as f64],
    ));
    out.push_str(&row(
        "bytes on disk of the session store after the fill (+1.5 s)",
        [0, 1, 2].map(|i| format!("{:.0} KiB", r[i].2 as f64 / 1024.0)),
        [r[0].2 as f64, r[1].2 as f64, r[2].2 as f64],
    ));
    out.push_str(&row(
        "drain: reconnect -> last message received; received",
        [0, 1, 2].map(|i| format!("{:.0} ms, {} of {n}", r[i].3 * 1e3, r[i].4)),
        [r[0].3, r[1].3, r[2].3],
    ));
    out
}
