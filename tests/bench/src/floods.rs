//! The flood figures of issue 16 (group `floods`): peak RSS of the release iohubd under each
//! flood the hardening bounds, the same flood against Debian's mosquitto (configured as in the
//! `broker` group) in the same run, and RSS once the flooding clients are gone.
//!
//! - deep filters: one connection subscribes 20,000 distinct filters of 200 levels;
//! - big queued payloads: a QoS1 subscriber that never reads, and a publisher of 3,000 QoS1
//!   messages of 256 KiB;
//! - half-open sockets: 300 sockets that never send CONNECT to the MQTT listener, and 1,100
//!   partial HTTP requests to the admin API (iohubd only); a real client must still get in.
//!
//! Peak RSS is the kernel's VmHWM, reset before each flood through `/proc/<pid>/clear_refs`.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use iohub_tests::{iohubctl, rss_kib, Iohubd, Roots};
use rumqttc::{Event, Packet, QoS, SubscribeFilter, SubscribeReasonCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::broker::{
    apps_listener, configure_websocket_port, connected, mib, options, vm, Mosquitto,
};
use super::LIMIT;

const KIB: usize = 1024;

fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// How long after a flood "after" is read: iohubd returns freed heap every 10 s.
const SETTLE: Duration = Duration::from_secs(12);

/// (RSS before, peak during, RSS [`SETTLE`] after, what the flood saw) of `pid` around `flood`.
async fn measured<F: std::future::Future<Output = String>>(
    pid: u32,
    flood: F,
) -> (u64, u64, u64, String) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    reset_peak(pid);
    let before = rss_kib(pid);
    let note = flood.await;
    let peak = vm(pid, "VmHWM:");
    tokio::time::sleep(SETTLE).await;
    (before, peak, rss_kib(pid), note)
}

/// `conns` connections, each with 20,000 / `conns` filters of 200 levels in SUBSCRIBEs of 100;
/// returns what was granted.
async fn deep_filters(port: u16, conns: usize) -> String {
    let each = 20_000 / conns;
    let mut granted = 0;
    let mut held = Vec::new();
    for c in 0..conns {
        let (g, client) = deep_filters_on(port, c, each).await;
        granted += g;
        held.push(client);
    }
    for (c, mut el) in held {
        c.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
    }
    format!("{granted} of 20000 granted")
}

async fn deep_filters_on(
    port: u16,
    conn: usize,
    filters: usize,
) -> (usize, (rumqttc::AsyncClient, rumqttc::EventLoop)) {
    let mut o = options(port, &format!("flood-deep-{conn}"));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = super::broker::connected_with(o).await;
    let tail = vec!["l"; 198].join("/");
    let per = 100;
    let packets = filters / per;
    let sender = tokio::spawn(async move {
        for p in 0..packets {
            let filters = (0..per).map(|i| {
                SubscribeFilter::new(format!("c{conn}f{p}x{i}/{tail}/x"), QoS::AtMostOnce)
            });
            c.subscribe_many(filters).await.unwrap();
        }
        c
    });
    let (mut acks, mut granted) = (0, 0);
    while acks < packets {
        match tokio::time::timeout(LIMIT, el.poll())
            .await
            .expect("SUBACKs in time")
        {
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                acks += 1;
                granted += a
                    .return_codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Failure))
                    .count();
            }
            Ok(_) => {}
            Err(e) => panic!("connection ended after {acks} SUBACKs: {e}"),
        }
    }
    (granted, (sender.await.unwrap(), el))
}

/// A raw anonymous client subscribed to `filter` at QoS1 that then never reads.
async fn stalled(port: u16, id: &str, filter: &str) -> TcpStream {
    let mut bytes = BytesMut::new();
    Packet::Connect(rumqttc::Connect::new(id))
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut subscribe = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce);
    subscribe.pkid = 1; // 0 is not a valid packet id (mosquitto closes the connection)
    Packet::Subscribe(subscribe)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut acks = [0u8; 9];
    tokio::time::timeout(LIMIT, s.read_exact(&mut acks))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("port {port}: CONNACK and SUBACK: {e}: {acks:?}"));
    s
}

/// 3,000 QoS1 messages of 256 KiB towards a subscriber that never reads.
async fn big_payloads(port: u16) -> String {
    let sub = stalled(port, "flood-stalled", "big/#").await;
    let mut o = options(port, "flood-big-pub");
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut el) = super::broker::connected_with(o).await;
    let n = 3000;
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            c.publish("big/x", QoS::AtLeastOnce, false, vec![7u8; 256 * KIB])
                .await
                .unwrap();
        }
        c
    });
    let mut acked = 0;
    while acked < n {
        match tokio::time::timeout(LIMIT, el.poll())
            .await
            .expect("PUBACKs in time")
        {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => return format!("publisher connection ended after {acked} PUBACKs: {e}"),
        }
    }
    let took = t0.elapsed();
    let c = sender.await.unwrap();
    c.disconnect().await.unwrap();
    drop(sub);
    format!("{n} published in {:.1} s", took.as_secs_f64())
}

/// Sockets from `from` to `port` that send `bytes` and then nothing.
async fn half_open(from: &str, port: u16, n: usize, bytes: &'static [u8]) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        match socket.connect(([127, 0, 0, 1], port).into()).await {
            Ok(mut s) => {
                let _ = s.write_all(bytes).await;
                held.push(s);
            }
            Err(_) => break,
        }
    }
    held
}

/// How many of `held` the server has closed.
async fn closed(held: &mut [TcpStream]) -> usize {
    let mut n = 0;
    for s in held {
        let mut b = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
        {
            n += 1;
        }
    }
    n
}

/// 300 sockets that never send CONNECT; then a real client connects.
async fn half_open_mqtt(port: u16) -> String {
    let mut held = half_open("127.0.0.2", port, 300, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let (c, _el) = connected(port, "flood-legit").await;
    let legit = t0.elapsed();
    drop(c);
    let shut = closed(&mut held).await;
    format!(
        "{} sockets opened, {shut} closed by the server within 0.5 s; a real client's CONNACK in {:.1} ms",
        held.len(),
        legit.as_secs_f64() * 1e3
    )
}

/// 1,100 partial requests from 4 addresses; then the admin API and iohubctl must still answer.
async fn half_open_http(port: u16, root: &Path) -> String {
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        held.extend(half_open(from, port, 275, b"GET /v2/states HTTP/1.1\r\nHost: box\r\n").await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shut = closed(&mut held).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let api = tokio::time::timeout(LIMIT, s.read_to_end(&mut answer))
        .await
        .is_ok()
        && answer.starts_with(b"HTTP/1.1 200");
    let root = root.to_path_buf();
    let ctl = tokio::task::spawn_blocking(move || {
        iohubctl(&root, &["get", "IOHUBOS_HOSTNAME"]).0.success()
    })
    .await
    .unwrap();
    format!(
        "{} sockets opened, {shut} closed at once; the API answered another client: {api}; iohubctl get: {ctl}",
        held.len()
    )
}

fn row(
    out: &mut String,
    what: &str,
    bound: &str,
    i: (u64, u64, u64, String),
    m: Option<(u64, u64, u64, String)>,
) {
    let cell = |(b, p, a, note): (u64, u64, u64, String)| {
        format!("{} / **{}** / {}; {note}", mib(b), mib(p), mib(a))
    };
    out.push_str(&format!(
        "| {what} | {bound} | {} | {} |\n",
        cell(i),
        m.map_or("not run (iohubd only)".into(), cell)
    ));
}

/// A fresh iohubd (apps listener and admin API on free loopback ports) and a fresh mosquitto.
struct Boxes {
    // Dropped in this order: iohubd stops before its root is removed.
    d: Iohubd,
    roots: Roots,
    apps: u16,
    api: u16,
    mosq: Mosquitto,
}

async fn fresh() -> Boxes {
    let roots = Roots::example("router");
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    configure_websocket_port(&roots);
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let envvars = roots.root.join("envvars");
    let mut vars = std::fs::read_to_string(&envvars).unwrap();
    vars.push_str(&format!(
        "\nIOHUBOS_ADMIN_API_ENABLED=true\nIOHUBOS_ADMIN_API_SERVER_PORT={api}\n\
         IOHUBOS_ADMIN_API_AUTH_TOKEN='Str0ng!Token-For-The-Admin-API-0123456789'\n"
    ));
    std::fs::write(&envvars, vars).unwrap();
    let d = Iohubd::start(&roots.root, &roots.system, &[]);
    let apps = apps_listener(&d).await.port();
    let mosq = Mosquitto::start(roots.dir.path());
    Boxes {
        roots,
        d,
        apps,
        api,
        mosq,
    }
}

pub(crate) async fn run() {
    let mut out = String::from(
        "| flood | iohubd bound | iohubd: RSS before / **peak** / 12 s after | mosquitto: RSS before / **peak** / 12 s after |\n|---|---|---|---|\n",
    );
    let b = fresh().await;
    row(
        &mut out,
        "20,000 filters of 200 levels, one connection",
        "1,000 filters and 10,000 levels per connection, 100,000 tree nodes",
        measured(b.d.pid(), deep_filters(b.apps, 1)).await,
        Some(measured(b.mosq.child.id(), deep_filters(b.mosq.port, 1)).await),
    );
    drop(b);
    let b = fresh().await;
    row(
        &mut out,
        "the same 20,000 filters from 20 connections",
        "the same",
        measured(b.d.pid(), deep_filters(b.apps, 20)).await,
        Some(measured(b.mosq.child.id(), deep_filters(b.mosq.port, 20)).await),
    );
    drop(b);
    let b = fresh().await;
    row(
        &mut out,
        "3,000 x 256 KiB QoS1 to a subscriber that never reads",
        "32 MiB per subscription, 256 MiB for all clients",
        measured(b.d.pid(), big_payloads(b.apps)).await,
        Some(measured(b.mosq.child.id(), big_payloads(b.mosq.port)).await),
    );
    drop(b);
    let b = fresh().await;
    row(
        &mut out,
        "300 sockets that never send CONNECT",
        "32 handshakes per address, 5 s to CONNECT",
        measured(b.d.pid(), half_open_mqtt(b.apps)).await,
        Some(measured(b.mosq.child.id(), half_open_mqtt(b.mosq.port)).await),
    );
    row(
        &mut out,
        "1,100 partial HTTP requests to the admin API",
        "256 connections, 32 per address, 10 s for headers",
        measured(b.d.pid(), half_open_http(b.api, &b.roots.root)).await,
        None,
    );
    println!("{out}");
}
