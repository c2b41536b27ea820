//! The global IOhub broker for apps, end to end: a real `iohubd`, anonymous app clients (rumqttc
//! and mosquitto_sub), the control plane out of their reach, 10,000 retained topics delivered to
//! wildcard subscribers (QoS0, QoS1, re-subscribe, daemon restart), a slow subscriber's loss in
//! `iohub/state/broker`, and the Prometheus endpoint. Every wait is bounded.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use iohub_tests::{Iohubd, Roots};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

const STEP: Duration = Duration::from_secs(30);
const RETAINED: usize = 10_000;

fn start(roots: &Roots, env: &[(&str, &str)]) -> Iohubd {
    // nextest runs every test in its own process: the environment is this test's alone.
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    Iohubd::start(&roots.root, &roots.system, &[])
}

fn append_envvars(roots: &Roots, lines: &str) {
    let path = roots.root.join("envvars");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n{lines}\n")).unwrap();
}

async fn next(events: &mut EventLoop) -> Packet {
    loop {
        let event = tokio::time::timeout(STEP, events.poll())
            .await
            .expect("no packet in time")
            .expect("connection failed");
        if let Event::Incoming(p) = event {
            return p;
        }
    }
}

/// A retained state payload of `topic` (published by iohubd) whose facts satisfy `ok`.
async fn state_where(
    d: &Iohubd,
    topic: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let (client, mut events) = AsyncClient::new(d.control.mqtt_options("watch"), 10);
    client.subscribe(topic, QoS::AtMostOnce).await.unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline, "no {topic} as expected in time");
        if let Packet::Publish(p) = next(&mut events).await {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            if ok(&v["facts"]) {
                return v["facts"].clone();
            }
        }
    }
}

/// The apps listener's address, from the service's state.
async fn apps_port(d: &Iohubd) -> u16 {
    let facts = state_where(d, "iohub/state/global_mqtt", |f| f["listen"].is_string()).await;
    let addr: std::net::SocketAddr = facts["listen"].as_str().unwrap().parse().unwrap();
    addr.port()
}

async fn app(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30)).set_inflight(100);
    let (c, mut e) = AsyncClient::new(o, 100);
    match next(&mut e).await {
        Packet::ConnAck(a) => assert_eq!(a.code, rumqttc::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    (c, e)
}

async fn suback(
    c: &AsyncClient,
    e: &mut EventLoop,
    filter: &str,
    qos: QoS,
) -> Vec<SubscribeReasonCode> {
    c.subscribe(filter, qos).await.unwrap();
    loop {
        match next(e).await {
            Packet::SubAck(a) => return a.return_codes,
            Packet::Publish(_) | Packet::PingResp => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Subscribe `#` at `qos` on an existing connection and collect the retained messages that
/// follow; every one must be an app topic, delivered at `qos`.
async fn retained_tree(c: &AsyncClient, e: &mut EventLoop, qos: QoS) -> BTreeSet<String> {
    assert_eq!(
        suback(c, e, "#", qos).await,
        vec![SubscribeReasonCode::Success(qos)]
    );
    let mut got = BTreeSet::new();
    while got.len() < RETAINED {
        if let Packet::Publish(p) = next(e).await {
            assert!(
                !p.topic.starts_with("iohub/"),
                "control topic leaked: {}",
                p.topic
            );
            assert!(p.retain, "{}", p.topic);
            assert_eq!(p.qos, qos);
            got.insert(p.topic);
        }
    }
    got
}

fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_get_every_retained_topic_never_the_control_plane_and_keep_them_across_a_restart() {
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;

    // An app publishes 10,000 retained topics at QoS1.
    let (publisher, mut pe) = app(port, "sensor").await;
    let feeder = tokio::spawn(async move {
        for i in 0..RETAINED {
            publisher
                .publish(
                    format!("apps/t/{i:05}"),
                    QoS::AtLeastOnce,
                    true,
                    b"21.5".to_vec(),
                )
                .await
                .unwrap();
        }
        publisher
    });
    let mut acked = 0;
    while acked < RETAINED {
        if let Packet::PubAck(_) = next(&mut pe).await {
            acked += 1;
        }
    }
    let publisher = feeder.await.unwrap();

    // Control topics are out of reach: subscribe refused, publish dropped.
    let (c, mut e) = app(port, "dashboard").await;
    assert_eq!(
        suback(&c, &mut e, "iohub/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        suback(&c, &mut e, "iohub/state/+", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    // `#` at QoS1, a re-subscribe, then QoS0: all 10,000 every time, no control topic.
    for qos in [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
        assert_eq!(retained_tree(&c, &mut e, qos).await.len(), RETAINED);
    }
    publisher
        .publish(
            "iohub/cmd/config/set",
            QoS::AtLeastOnce,
            false,
            br#"{"id":"x","body":{}}"#.to_vec(),
        )
        .await
        .unwrap();
    while !matches!(next(&mut pe).await, Packet::PubAck(_)) {}

    // A foreign client sees the same: app topics only.
    if iohub_tests::require_program("mosquitto_sub") {
        let out = tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "#", "-v"])
            .args(["-C", "5", "-W", "20"])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| l.starts_with("apps/t/")), "{text}");
    }

    // The broker state and the metrics count them.
    let broker = state_where(&d, "iohub/state/broker", |f| {
        f["retained"].as_u64().unwrap_or(0) >= RETAINED as u64
            && f["listeners"]["apps"]["publish_denied"] == 1
    })
    .await;
    assert!(broker["rss_bytes"].as_u64().unwrap() > 0);
    assert!(broker["connections"].as_u64().unwrap() >= 2);
    let gm = state_where(&d, "iohub/state/global_mqtt", |f| f["metrics"].is_string()).await;
    let metrics_port: std::net::SocketAddr = gm["metrics"].as_str().unwrap().parse().unwrap();
    let text = metrics(metrics_port.port());
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("iohub_broker_retained_messages ")
                && l.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= RETAINED as u64),
        "{text}"
    );
    assert!(
        text.contains("iohub_broker_publish_denied_total{listener=\"apps\"} 1"),
        "{text}"
    );
    drop((c, e, publisher, pe));

    // Restart: the apps' retained messages come back.
    let (status, _) = d.stop();
    assert!(status.success());
    assert!(roots
        .root
        .join("runtime/global-mqtt-retained.bin")
        .is_file());
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;
    let (c, mut e) = app(port, "after-restart").await;
    assert_eq!(
        retained_tree(&c, &mut e, QoS::AtLeastOnce).await.len(),
        RETAINED
    );
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscribers_loss_is_counted_in_the_broker_state() {
    let roots = Roots::example("router");
    append_envvars(&roots, "IOHUBOS_GLOBAL_MQTT_MAX_QUEUED='20'");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;
    // A raw subscriber: CONNECT + SUBSCRIBE flood/# at QoS0, then it never reads again.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut bytes = bytes::BytesMut::new();
        Packet::Connect(rumqttc::Connect::new("stalled"))
            .write(&mut bytes, usize::MAX)
            .unwrap();
        Packet::Subscribe(rumqttc::Subscribe::new("flood/#", QoS::AtMostOnce))
            .write(&mut bytes, usize::MAX)
            .unwrap();
        raw.write_all(&bytes).await.unwrap();
        let mut acks = [0u8; 4 + 5];
        tokio::time::timeout(STEP, raw.read_exact(&mut acks))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 0, 0]);
    }
    let (publisher, mut pe) = app(port, "flood").await;
    let feeder = tokio::spawn(async move {
        for i in 0..20_000u32 {
            publisher
                .publish(
                    format!("flood/{i}"),
                    QoS::AtMostOnce,
                    false,
                    vec![b'x'; 1024],
                )
                .await
                .unwrap();
        }
        publisher
    });
    let mut sent = 0;
    while sent < 20_000 {
        let event = tokio::time::timeout(STEP, pe.poll())
            .await
            .unwrap()
            .unwrap();
        if let Event::Outgoing(rumqttc::Outgoing::Publish(_)) = event {
            sent += 1;
        }
    }
    let _publisher = feeder.await.unwrap();
    let facts = state_where(&d, "iohub/state/broker", |f| {
        f["dropped"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(facts["listeners"]["apps"]["dropped"].as_u64().unwrap() > 0);
    drop(raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_and_a_read_only_mirror_come_from_envvars() {
    let roots = Roots::example("router");
    // A free port for the WebSocket listener (plan-only: bound on loopback).
    let ws_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    append_envvars(
        &roots,
        &format!(
            "IOHUBOS_GLOBAL_MQTT_ANONYMOUS='false'\nIOHUBOS_GLOBAL_MQTT_USERNAME='app'\n\
         IOHUBOS_GLOBAL_MQTT_PASSWORD='s3cret-Pass'\nIOHUBOS_GLOBAL_MQTT_MIRROR='iohub/state/#'\n\
         IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT='{ws_port}'"
        ),
    );
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;

    // No login gets CONNACK 5 (not authorized), a wrong one 4; the right one gets in.
    use rumqttc::ConnectReturnCode::{BadUserNamePassword, NotAuthorized};
    for (login, code) in [
        (None, NotAuthorized),
        (Some(("app", "wrong")), BadUserNamePassword),
    ] {
        let mut o = MqttOptions::new("anon", "127.0.0.1", port);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (_c, mut e) = AsyncClient::new(o, 10);
        let r = tokio::time::timeout(STEP, e.poll())
            .await
            .expect("no answer");
        assert!(
            matches!(
                &r,
                Err(rumqttc::ConnectionError::ConnectionRefused(c)) if *c == code),
            "{login:?}: {r:?}"
        );
    }
    let mut o = MqttOptions::new("reader", "127.0.0.1", port);
    o.set_credentials("app", "s3cret-Pass");
    let (c, mut e) = AsyncClient::new(o, 10);
    match next(&mut e).await {
        Packet::ConnAck(a) => assert_eq!(a.code, rumqttc::ConnectReturnCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }

    // The mirror: state is readable, config is not, and the password is not in the section.
    let codes = suback(&c, &mut e, "iohub/state/global_mqtt", QoS::AtMostOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    match next(&mut e).await {
        Packet::Publish(p) => assert_eq!(p.topic, "iohub/state/global_mqtt"),
        other => panic!("expected the mirrored state, got {other:?}"),
    }
    let codes = suback(&c, &mut e, "iohub/config/global_mqtt", QoS::AtMostOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);
    // The same rules over WebSocket (a browser's transport).
    let facts = state_where(&d, "iohub/state/global_mqtt", |f| {
        f["websocket"].is_string()
    })
    .await;
    assert_eq!(facts["websocket"], format!("127.0.0.1:{ws_port}"));
    let url = format!("ws://127.0.0.1:{ws_port}/mqtt");
    let mut o = MqttOptions::new("browser", url.clone(), ws_port);
    o.set_transport(rumqttc::Transport::Ws);
    let (_c, mut e) = AsyncClient::new(o.clone(), 10);
    let r = tokio::time::timeout(STEP, e.poll())
        .await
        .expect("no answer");
    assert!(
        matches!(
            &r,
            Err(rumqttc::ConnectionError::ConnectionRefused(NotAuthorized))
        ),
        "anonymous over WebSocket: {r:?}"
    );
    o.set_credentials("app", "s3cret-Pass");
    let (wc, mut we) = AsyncClient::new(o, 10);
    match next(&mut we).await {
        Packet::ConnAck(a) => assert_eq!(a.code, rumqttc::ConnectReturnCode::Success),
        other => panic!("expected CONNACK over WebSocket, got {other:?}"),
    }
    let codes = suback(&wc, &mut we, "iohub/cmd/#", QoS::AtMostOnce).await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);

    let (ctl, mut ce) = AsyncClient::new(d.control.mqtt_options("cfg"), 10);
    ctl.subscribe("iohub/config/global_mqtt", QoS::AtMostOnce)
        .await
        .unwrap();
    loop {
        if let Packet::Publish(p) = next(&mut ce).await {
            let text = String::from_utf8_lossy(&p.payload).into_owned();
            assert!(
                !text.contains("s3cret"),
                "the password is on the bus: {text}"
            );
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["config"]["password"]["set"], true, "{text}");
            assert_eq!(v["config"]["mirror"][0], "iohub/state/#", "{text}");
            break;
        }
    }
    drop(d);
}

/// Issue 17: an app's persistent session (`clean_session = false`) holding queued QoS1 messages
/// survives a kill -9 of iohubd: after the restart the app gets every one, in order, without
/// subscribing again, and the CONNACK says the session was present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_sessions_queued_qos1_messages_survive_a_kill_9() {
    const N: usize = 200;
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;
    let persistent = |port: u16| {
        let mut o = MqttOptions::new("absent-app", "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false);
        o
    };
    let (c, mut e) = AsyncClient::new(persistent(port), 10);
    assert!(matches!(next(&mut e).await, Packet::ConnAck(a) if !a.session_present));
    assert_eq!(
        suback(&c, &mut e, "app/data/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    c.disconnect().await.unwrap();
    while !matches!(
        tokio::time::timeout(STEP, e.poll()).await.unwrap(),
        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_)
    ) {}

    let (publisher, mut pe) = app(port, "producer").await;
    for i in 0..N {
        publisher
            .publish(
                format!("app/data/{i}"),
                QoS::AtLeastOnce,
                false,
                i.to_string(),
            )
            .await
            .unwrap();
        loop {
            if let Packet::PubAck(_) = next(&mut pe).await {
                break;
            }
        }
    }
    // The keeper has written them to the session's disk queue.
    state_where(&d, "iohub/state/broker", |f| {
        f["listeners"]["apps"]["session_records"] == N
    })
    .await;
    // SIGKILL (Iohubd's drop): no shutdown code runs.
    drop(d);

    let d = start(&roots, &[]);
    let port = apps_port(&d).await;
    let (_c, mut e) = AsyncClient::new(persistent(port), 10);
    assert!(matches!(next(&mut e).await, Packet::ConnAck(a) if a.session_present));
    let mut got = Vec::new();
    while got.len() < N {
        if let Packet::Publish(p) = next(&mut e).await {
            assert_eq!(p.qos, QoS::AtLeastOnce);
            got.push(String::from_utf8(p.payload.to_vec()).unwrap());
        }
    }
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(got, expected);
    let facts = state_where(&d, "iohub/state/broker", |f| {
        f["listeners"]["apps"]["sessions"] == 1
    })
    .await;
    assert_eq!(facts["listeners"]["apps"]["session_dropped"], 0);
    d.stop();
}

/// Issue 17: the read-only `$SYS/broker/...` topics tools read, from the figures of
/// `iohub/state/broker`; `#` never carries them (MQTT 3.1.1 §4.7.2) and an app cannot publish
/// under `$SYS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_topics_give_the_brokers_figures_read_only() {
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await;
    let (c, mut e) = app(port, "explorer").await;
    // `#` first: `suback` skips what comes before the SUBACK, and the retained figures follow
    // the second one.
    assert_eq!(
        suback(&c, &mut e, "#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    assert_eq!(
        suback(&c, &mut e, "$SYS/broker/#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    // A forged figure is dropped by the ACL; a marker after it proves the order.
    c.publish("$SYS/broker/version", QoS::AtLeastOnce, true, "forged")
        .await
        .unwrap();
    c.publish("app/marker", QoS::AtLeastOnce, false, "m")
        .await
        .unwrap();
    let mut figures = std::collections::BTreeMap::new();
    let deadline = Instant::now() + STEP;
    let mut marker = false;
    while !(marker
        && figures.contains_key("$SYS/broker/version")
        && figures
            .get("$SYS/broker/clients/connected")
            .is_some_and(|v: &String| v.parse::<u64>().unwrap() >= 1)
        && figures
            .get("$SYS/broker/messages/received")
            .is_some_and(|v| v.parse::<u64>().unwrap() >= 2))
    {
        assert!(Instant::now() < deadline, "figures so far: {figures:?}");
        if let Packet::Publish(p) = next(&mut e).await {
            let value = String::from_utf8(p.payload.to_vec()).unwrap();
            assert_ne!(value, "forged");
            if p.topic == "app/marker" {
                marker = true;
            } else {
                assert!(p.topic.starts_with("$SYS/broker/"), "{}", p.topic);
                figures.insert(p.topic, value);
            }
        }
    }
    assert!(figures["$SYS/broker/version"].starts_with("iohubd "));
    assert!(figures["$SYS/broker/uptime"].ends_with(" seconds"));
    for counter in [
        "$SYS/broker/bytes/received",
        "$SYS/broker/bytes/sent",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/store/messages/count",
    ] {
        figures[counter].parse::<u64>().unwrap();
    }
    d.stop();
}

/// Issue 17 with foreign clients (mosquitto_sub, mosquitto_pub): a persistent session (MQTT
/// 3.1.1 §3.1.2.4, `mosquitto_sub -c`) gets the QoS1 and QoS2 messages it missed, in order, each
/// once; a QoS2 subscription gets QoS2 (§4.3.3, `-q 2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_get_what_a_persistent_session_missed_at_qos1_and_qos2() {
    if !iohub_tests::require_program("mosquitto_sub")
        || !iohub_tests::require_program("mosquitto_pub")
    {
        return;
    }
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await.to_string();
    let sub = |extra: &[&str]| {
        let mut c = tokio::process::Command::new("mosquitto_sub");
        c.args(["-h", "127.0.0.1", "-p", &port, "-c", "-i", "ms-keeper"])
            .args(["-q", "2", "-t", "app/ms/#", "-v"])
            .args(extra);
        c
    };
    let subscribed = sub(&["-E"]).output().await.unwrap();
    assert!(subscribed.status.success(), "{subscribed:?}");
    for qos in ["1", "2"] {
        let mut publisher = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", qos])
            .args(["-t", &format!("app/ms/q{qos}"), "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = publisher.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, b"0\n1\n2\n3\n4\n")
            .await
            .unwrap();
        drop(stdin);
        let status = tokio::time::timeout(STEP, publisher.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    }
    state_where(&d, "iohub/state/broker", |f| {
        f["listeners"]["apps"]["session_records"] == 10
    })
    .await;
    let out = sub(&["-C", "10", "-W", "20"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let expected: Vec<String> = ["1", "2"]
        .iter()
        .flat_map(|q| (0..5).map(move |i| format!("app/ms/q{q} {i}")))
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{out:?}");
    // Every one acknowledged (PUBACK, PUBCOMP): nothing left on disk.
    state_where(&d, "iohub/state/broker", |f| {
        f["listeners"]["apps"]["session_records"] == 0
    })
    .await;
    d.stop();
}

/// Issue 17 with Eclipse Paho (Debian's python3-paho-mqtt, MQTT 3.1.1; `tests/paho/sessions.py`):
/// CONNACK session present (§3.2.2.2), the QoS1/QoS2 messages a persistent session missed (not
/// QoS0), QoS2 granted and delivered as QoS2, and a clean session discarding the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_sees_session_present_the_missed_messages_and_a_clean_session_discard() {
    let python = "/usr/bin/python3";
    let has_paho = std::process::Command::new(python)
        .args(["-c", "import paho.mqtt"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_paho {
        assert!(
            !iohub_tests::ci(),
            "python3-paho-mqtt is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: python3-paho-mqtt not installed");
        return;
    }
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await.to_string();
    let script = iohub_tests::workspace().join("tests/paho/sessions.py");
    let out = tokio::time::timeout(
        STEP * 2,
        tokio::process::Command::new(python)
            .arg(script)
            .arg(&port)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first"], serde_json::json!([0, 0]), "{v}");
    assert_eq!(v["granted"], serde_json::json!([2]), "{v}");
    assert_eq!(v["second"], serde_json::json!([1, 0]), "{v}");
    let expected: Vec<serde_json::Value> = [1, 2]
        .iter()
        .flat_map(|q| {
            (0..5).map(move |i| {
                serde_json::json!([format!("app/paho/q{q}"), i.to_string(), q, false])
            })
        })
        .collect();
    assert_eq!(v["messages"], serde_json::Value::Array(expected), "{v}");
    assert_eq!(v["clean"], serde_json::json!([0, 0]), "{v}");
    assert_eq!(v["after_clean"], serde_json::json!([0, 0]), "{v}");
    d.stop();
}

/// Issue 17, MQTT 5.0 with Eclipse Paho (`protocol=MQTTv5`, `tests/paho/mqtt5.py`) on a real
/// iohubd's apps listener: request/response with the response topic and correlation data
/// forwarded unaltered ([MQTT-3.3.2-15], [MQTT-3.3.2-16]), user properties in order
/// ([MQTT-3.3.2-17], [MQTT-3.3.2-18]), content type ([MQTT-3.3.2-20]) and payload format
/// indicator ([MQTT-3.3.2-4]); SUBACK 0x9E for a shared subscription (not offered); a topic
/// alias over the maximum answered with DISCONNECT 0x94 ([MQTT-3.3.2-9]) while another client
/// keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqtt5_request_response_properties_and_bad_topic_alias() {
    let python = "/usr/bin/python3";
    let has_paho = std::process::Command::new(python)
        .args(["-c", "import paho.mqtt.client as m; m.MQTTv5"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_paho {
        assert!(
            !iohub_tests::ci(),
            "python3-paho-mqtt is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: python3-paho-mqtt with MQTT 5 not installed");
        return;
    }
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await.to_string();
    let script = iohub_tests::workspace().join("tests/paho/mqtt5.py");
    let out = tokio::time::timeout(
        STEP * 2,
        tokio::process::Command::new(python)
            .arg(script)
            .arg(&port)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requester_connack"], 0, "{v}");
    assert_eq!(
        v["request"],
        serde_json::json!({
            "payload": "ping",
            "response_topic": "app/paho5/reply/requester",
            "correlation": "01636f7272",
            "user": [["a", "1"], ["b", "2"]],
            "content_type": "text/plain",
            "format": 1,
        }),
        "{v}"
    );
    assert_eq!(
        v["reply"],
        serde_json::json!({"payload": "pong", "correlation": "01636f7272"}),
        "{v}"
    );
    assert_eq!(v["shared_suback"], serde_json::json!([0x9E, 1]), "{v}");
    assert_eq!(v["alias_disconnect"], 0x94, "{v}");
    assert_eq!(v["still"], "still", "{v}");
    d.stop();
}

/// Issue 17, MQTT 5.0 with mosquitto's clients (`-V 5`) on a real iohubd's apps listener:
/// messages cross protocol versions ([MQTT-3.1.2-2]: the version is per connection): a v5
/// publisher with a user property reaches a v5 and a 3.1.1 subscriber, a 3.1.1 publisher a v5
/// subscriber, at QoS1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_v5_and_v311_clients_exchange_messages() {
    if !iohub_tests::require_program("mosquitto_sub")
        || !iohub_tests::require_program("mosquitto_pub")
    {
        return;
    }
    let roots = Roots::example("router");
    let d = start(&roots, &[]);
    let port = apps_port(&d).await.to_string();
    let sub = |version: &str, id: &str| {
        tokio::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-i", id])
            .args(["-q", "1", "-t", "app/ms5/#", "-v", "-C", "2", "-W", "20"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let v5 = sub("5", "ms5-sub");
    let v311 = sub("311", "ms311-sub");
    // Both subscribed: the broker counts their filters.
    state_where(&d, "iohub/state/broker", |f| {
        f["listeners"]["apps"]["connections"].as_u64() >= Some(2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let publish = |version: &str, topic: &str, extra: &[&str]| {
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", "1"])
            .args(["-t", topic, "-m", version])
            .args(extra)
            .status()
            .unwrap()
    };
    let user = ["-D", "publish", "user-property", "k", "v"];
    assert!(publish("5", "app/ms5/from5", &user).success());
    assert!(publish("311", "app/ms5/from311", &[]).success());
    for child in [v5, v311] {
        let out = tokio::time::timeout(STEP, child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["app/ms5/from5 5", "app/ms5/from311 311"],
            "{out:?}"
        );
    }
    d.stop();
}
