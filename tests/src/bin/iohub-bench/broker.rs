//! The broker benchmarks (group `broker`): iohubd's apps listener (the IOhub global broker,
//! anonymous, `max_queued_messages` 1000) against Debian's mosquitto configured alike
//! (`max_queued_messages 1000`, `set_tcp_nodelay true`), same rumqttc generator, same run. The
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

use super::{hist, load, ms, LIMIT};

struct Peer {
    port: u16,
    pid: u32,
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join("mosquitto-apps.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 1000\nmax_connections -1\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto)");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
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
    let (c, mut el) = AsyncClient::new(options, 10_000);
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
    let _ = feeder.await;
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
                if let Ok(Event::Incoming(Packet::PubAck(_))) =
                    tokio::time::timeout(LIMIT, el.poll()).await.unwrap()
                {
                    break;
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
        if let Ok(Event::Incoming(Packet::PubAck(_))) =
            tokio::time::timeout(LIMIT, pel.poll()).await.unwrap()
        {
            acked += 1;
        }
    }
    let _p = feeder.await.unwrap();
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

/// The broker benchmark: iohubd's apps listener against mosquitto, one table row per load.
pub(crate) async fn run() {
    let roots = Roots::example("router");
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    let ws_port = configure_websocket_port(&roots);
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let apps = apps_listener(&d).await;
    let mosq = Mosquitto::start(roots.dir.path());
    let peers = [
        Peer {
            port: apps.port(),
            pid: d.pid(),
        },
        Peer {
            port: mosq.port,
            pid: mosq.child.id(),
        },
    ];
    let mut out = String::from(
        "| load (64-byte payloads) | iohubd apps listener | mosquitto | ratio |\n|---|---|---|---|\n",
    );
    fan_in_and_fan_out(&peers, &mut out).await;
    round_trips(&peers, ws_port, &mut out).await;
    retained(&peers, &mut out).await;
    eprint!("{out}");
    memory_per_client(&peers, &mut out).await;
    streams(&peers, &mut out).await;
    println!("## broker (apps listener vs mosquitto)\n\n{out}");
    drop(mosq);
    let _ = d.stop();
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

/// Throughput rows: fan-in and fan-out, QoS 0 and 1.
async fn fan_in_and_fan_out(peers: &[Peer; 2], out: &mut String) {
    let cases: [(&str, QoS, usize, usize, usize); 4] = [
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
        let mut r = Vec::new();
        for p in peers {
            let port = p.port;
            let opts = move |id: &str| options(port, id);
            r.push(load(&opts, "bench/load", qos, pubs, subs, per).await);
        }
        out.push_str(&format!(
            "| {name} | {:.0} msgs/s ({:.1}% lost) | {:.0} msgs/s ({:.1}% lost) | {:.2}x |\n",
            r[0].0,
            r[0].1 * 100.0,
            r[1].0,
            r[1].1 * 100.0,
            r[0].0 / r[1].0
        ));
    }
}

/// Request/response latency rows, QoS 0 and 1: iohubd over TCP, mosquitto over TCP, iohubd
/// over WebSocket (`ws_port`). Prints the table so far after each QoS.
async fn round_trips(peers: &[Peer; 2], ws_port: u16, out: &mut String) {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        eprintln!("broker: round trip {qos:?}");
        let mut r = Vec::new();
        let mut p50s = Vec::new();
        // iohubd over TCP, mosquitto over TCP, iohubd over WebSocket.
        for (port, ws) in [
            (peers[0].port, false),
            (peers[1].port, false),
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
        out.push_str(&format!(
            "| request/response {qos:?} (n=2000) p50 / p99 | {} | {} | {} |\n",
            r[0],
            r[1],
            p50_ratio(p50s[0], p50s[1])
        ));
        out.push_str(&format!(
            "| same over WebSocket (iohubd only; ratio: vs iohubd over TCP) | {} | | {} |\n",
            r[2],
            p50_ratio(p50s[2], p50s[0])
        ));
        eprint!("{out}");
    }
}

/// `a / b` as a p50 ratio cell; empty when it is not a number (a hung exchange).
fn p50_ratio(a: f64, b: f64) -> String {
    let x = a / b;
    if x.is_finite() {
        format!("{x:.2}x (p50)")
    } else {
        String::new()
    }
}

/// The retained row: 10,000 retained topics delivered to a new subscriber.
async fn retained(peers: &[Peer; 2], out: &mut String) {
    eprintln!("broker: retained");
    let a = retained_gets(peers[0].port, 10_000).await;
    let b = retained_gets(peers[1].port, 10_000).await;
    out.push_str(&format!(
        "| 10,000 retained topics -> a new `ret/#` subscriber (QoS1): received, time | {} in {:.0} ms | {} in {:.0} ms | |\n",
        a.1, a.0, b.1, b.0
    ));
}

/// The memory rows: RSS per idle connection, and RSS growth per one-shot publisher.
async fn memory_per_client(peers: &[Peer; 2], out: &mut String) {
    eprintln!("broker: idle connections");
    let a = idle_connections(peers[0].port, peers[0].pid, 1000).await;
    let b = idle_connections(peers[1].port, peers[1].pid, 1000).await;
    out.push_str(&format!(
        "| RSS per idle connection (1,000 connected, silent) | {a:.0} B | {b:.0} B | {:.2}x |\n",
        a / b
    ));
    eprintln!("broker: one-shot publishers");
    let a = one_shot(peers[0].port, peers[0].pid, 2000).await;
    let b = one_shot(peers[1].port, peers[1].pid, 2000).await;
    out.push_str(&format!(
        "| RSS growth per one-shot publisher (connect, QoS1 publish, disconnect; 2,000 after 2,000) | {a:.1} B | {b:.1} B | |\n"
    ));
}

/// The stream rows: a 1 -> 1 QoS0 stream to 500k, then 3M messages in all, with RSS and peak
/// RSS after each.
async fn streams(peers: &[Peer; 2], out: &mut String) {
    for (label, n) in [("500k", 500_000usize), ("3M", 2_500_000)] {
        eprintln!("broker: stream {label}");
        let mut r = Vec::new();
        for p in peers {
            r.push(stream(p.port, n).await);
        }
        out.push_str(&format!(
            "| 1 -> 1 QoS0 stream to {label} messages total: msgs/s, received, RSS, peak RSS | {:.0}, {}, {}, {} | {:.0}, {}, {}, {} | |\n",
            r[0].0,
            r[0].1,
            mib(rss_kib(peers[0].pid)),
            mib(vm(peers[0].pid, "VmHWM:")),
            r[1].0,
            r[1].1,
            mib(rss_kib(peers[1].pid)),
            mib(vm(peers[1].pid, "VmHWM:")),
        ));
    }
}
