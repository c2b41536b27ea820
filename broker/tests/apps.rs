//! The apps listener (the IOhub global broker) against real clients: anonymous access, control
//! topics out of reach, the read-only mirror, lossless QoS1 fan-in to a slow subscriber and
//! counted QoS0 loss. Every wait is bounded; nothing asserts on elapsed time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use broker::{Broker, Bus, ListenerConfig, ListenerStatsSnapshot, RouterLimits};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};

const STEP: Duration = Duration::from_secs(20);

struct Fixture {
    broker: Broker,
    bus: Bus,
    addr: SocketAddr,
}

impl Fixture {
    async fn new(mirror: &[&str], edit: impl FnOnce(&mut ListenerConfig)) -> Fixture {
        let broker = Broker::start(RouterLimits::default()).expect("broker");
        let mut config = ListenerConfig::apps(
            "127.0.0.1:0".parse().expect("address"),
            mirror.iter().map(|m| m.to_string()).collect(),
        );
        edit(&mut config);
        let addr = broker.listen(config).await.expect("listen");
        Fixture {
            bus: broker.bus(),
            broker,
            addr,
        }
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.broker
            .listener_stats("apps")
            .expect("apps listener")
            .snapshot()
    }

    /// An anonymous client, connected.
    async fn client(&self, id: &str) -> (AsyncClient, EventLoop) {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.addr.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100);
        let (client, mut events) = AsyncClient::new(options, 1000);
        match next(&mut events).await {
            Packet::ConnAck(ack) => assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        (client, events)
    }

    /// Poll `cond` until it holds, at most `STEP`.
    async fn until(&self, what: &str, cond: impl Fn(&Fixture) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !cond(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn next(events: &mut EventLoop) -> Packet {
    loop {
        let event = tokio::time::timeout(STEP, events.poll())
            .await
            .expect("no packet in time")
            .expect("connection failed");
        if let Event::Incoming(packet) = event {
            return packet;
        }
    }
}

/// The next PUBLISH (PUBACKs are sent by rumqttc itself).
async fn next_publish(events: &mut EventLoop) -> rumqttc::Publish {
    loop {
        match next(events).await {
            Packet::Publish(p) => return p,
            Packet::SubAck(_) | Packet::PingResp | Packet::PubAck(_) | Packet::PubRel(_) => {}
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

async fn suback(
    client: &AsyncClient,
    events: &mut EventLoop,
    filter: &str,
    qos: QoS,
) -> Vec<SubscribeReasonCode> {
    client.subscribe(filter, qos).await.expect("subscribe");
    loop {
        match next(events).await {
            Packet::SubAck(ack) => return ack.return_codes,
            Packet::Publish(_) | Packet::PingResp => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}

/// Drive a publisher's event loop until the broker acknowledged its end marker (a QoS1 publish
/// after its `n` messages), and every message when they are QoS1.
async fn drive_publisher(mut events: EventLoop, n: usize, qos: QoS) -> EventLoop {
    let acks = if qos == QoS::AtLeastOnce { n + 1 } else { 1 };
    let mut done = 0;
    while done < acks {
        let event = tokio::time::timeout(STEP * 3, events.poll())
            .await
            .expect("publisher stalled")
            .expect("publisher connection failed");
        if let Event::Incoming(Packet::PubAck(_)) = event {
            done += 1;
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_app_cannot_reach_control_topics_and_hash_never_delivers_them() {
    let fx = Fixture::new(&[], |_| {}).await;
    fx.bus
        .publish_raw("iohub/state/config", Bytes::from_static(b"{}"), true)
        .await
        .unwrap();
    fx.bus
        .publish_raw("apps/retained", Bytes::from_static(b"r"), true)
        .await
        .unwrap();
    let (app, mut events) = fx.client("app").await;
    assert_eq!(
        suback(&app, &mut events, "iohub/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        suback(&app, &mut events, "iohub/state/+", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        suback(&app, &mut events, "#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // Only the app's retained message, then only app traffic.
    let p = next_publish(&mut events).await;
    assert_eq!((p.topic.as_str(), p.retain), ("apps/retained", true));
    fx.bus
        .publish_raw("iohub/event/watcher/x", Bytes::from_static(b"e"), false)
        .await
        .unwrap();
    // An app's publish on a control topic is acknowledged and dropped.
    let mut watch = fx.bus.subscribe(&["iohub/#"]).await.unwrap();
    let retained = tokio::time::timeout(STEP, watch.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retained.topic, "iohub/state/config");
    app.publish(
        "iohub/cmd/config/set",
        QoS::AtLeastOnce,
        false,
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    app.publish("apps/live", QoS::AtLeastOnce, false, b"l".to_vec())
        .await
        .unwrap();
    let p = next_publish(&mut events).await;
    assert_eq!(p.topic, "apps/live");
    fx.bus
        .publish_raw("apps/end", Bytes::from_static(b"end"), false)
        .await
        .unwrap();
    assert_eq!(next_publish(&mut events).await.topic, "apps/end");
    // Nothing reached the control plane from the app.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), watch.recv())
            .await
            .is_err()
            || fx.stats().publish_denied == 1
    );
    let stats = fx.stats();
    assert_eq!((stats.publish_denied, stats.subscribe_denied), (1, 2));
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_lets_apps_read_what_it_names_and_nothing_else_under_iohub() {
    let fx = Fixture::new(&["iohub/state/#"], |_| {}).await;
    let (app, mut events) = fx.client("dashboard").await;
    assert_eq!(
        suback(&app, &mut events, "iohub/#", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    for topic in ["iohub/config/network", "iohub/state/broker", "iohub/plan/x"] {
        fx.bus
            .publish_raw(topic, Bytes::from_static(b"{}"), false)
            .await
            .unwrap();
    }
    fx.bus
        .publish_raw("iohub/state/end", Bytes::from_static(b"{}"), false)
        .await
        .unwrap();
    assert_eq!(next_publish(&mut events).await.topic, "iohub/state/broker");
    assert_eq!(next_publish(&mut events).await.topic, "iohub/state/end");
    // Read-only: publishing there is refused.
    app.publish("iohub/state/broker", QoS::AtLeastOnce, true, b"x".to_vec())
        .await
        .unwrap();
    while !matches!(next(&mut events).await, Packet::PubAck(_)) {}
    fx.until("the publish is refused", |fx| {
        fx.stats().publish_denied == 1
    })
    .await;
    fx.broker.shutdown(STEP).await;
}

const PUBLISHERS: usize = 4;

/// Four publishers blast `n` messages each at `qos`; the subscriber does not read until the
/// publishers were made to wait (`stalled == false`) or the router's counters show every publish
/// arrived (`stalled == true`). Returns (messages received per publisher in order, stats).
async fn fan_in(
    fx: &Fixture,
    qos: QoS,
    n: usize,
    stalled: bool,
    pad: usize,
) -> (BTreeMap<usize, Vec<usize>>, ListenerStatsSnapshot) {
    let (sub, mut sub_events) = fx.client("slow").await;
    assert_eq!(
        suback(&sub, &mut sub_events, "fan/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (client, events) = fx.client(&format!("pub{p}")).await;
        let driver = tokio::spawn(drive_publisher(events, n, qos));
        let feeder = tokio::spawn(async move {
            for i in 0..n {
                client
                    .publish(
                        format!("fan/{p}"),
                        qos,
                        false,
                        format!("{i:0>pad$}").into_bytes(),
                    )
                    .await
                    .expect("publish");
            }
            client
                .publish(format!("fan/{p}"), QoS::AtLeastOnce, false, b"end".to_vec())
                .await
                .expect("publish");
            client
        });
        publishers.push((driver, feeder));
    }
    if !stalled {
        fx.until("publishers are held back", |fx| {
            fx.stats().backpressure_waits > 0
        })
        .await;
    } else {
        let total = (PUBLISHERS * n) as u64;
        fx.until("every publish reached the router", |fx| {
            fx.bus.stats().published >= total
        })
        .await;
    }
    // Now the subscriber reads, until every publisher's end marker.
    let reader = tokio::spawn(async move {
        let mut got: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut ended = 0;
        loop {
            let p = next_publish(&mut sub_events).await;
            let from: usize = p.topic["fan/".len()..].parse().unwrap();
            if &p.payload[..] == b"end" {
                ended += 1;
                if ended == PUBLISHERS {
                    return got;
                }
                continue;
            }
            let i: usize = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            got.entry(from).or_default().push(i);
        }
    });
    let mut clients = Vec::new();
    for (driver, feeder) in publishers {
        driver.await.unwrap();
        clients.push(feeder.await.unwrap());
    }
    let got = match tokio::time::timeout(STEP * 3, reader).await.unwrap() {
        Ok(got) => got,
        Err(e) => panic!("reader: {e}; {:?} {:?}", fx.stats(), fx.bus.stats()),
    };
    drop(clients);
    (got, fx.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_from_four_publishers_to_a_slow_subscriber_loses_nothing_at_qos0_and_qos1() {
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        let fx = Fixture::new(&[], |c| {
            c.limits.max_queued_messages = 50;
            c.limits.max_queued_bytes = 4096;
            c.limits.max_publish_wait = Duration::from_secs(120);
        })
        .await;
        const N: usize = 3000;
        let (got, stats) = fan_in(&fx, qos, N, false, 1).await;
        for p in 0..PUBLISHERS {
            let seq = got.get(&p).cloned().unwrap_or_default();
            assert_eq!(seq.len(), N, "{qos:?}: publisher {p}");
            assert!(
                seq.iter().enumerate().all(|(i, &v)| i == v),
                "{qos:?}: publisher {p}: out of order"
            );
        }
        assert_eq!(stats.dropped, 0, "{qos:?}: {stats:?}");
        assert!(stats.backpressure_waits > 0);
        let router = fx.bus.stats();
        assert_eq!((router.dropped_qos0, router.dropped_qos1), (0, 0));
        fx.broker.shutdown(STEP).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_loses_qos0_messages_and_the_loss_is_counted() {
    let fx = Fixture::new(&[], |c| {
        c.limits.max_queued_messages = 50;
        c.limits.max_queued_messages_hard = 200;
        c.limits.max_queued_bytes = 4096;
        c.limits.max_publish_wait = Duration::from_millis(200);
    })
    .await;
    const N: usize = 3000;
    let (got, stats) = fan_in(&fx, QoS::AtMostOnce, N, true, 4096).await;
    let received: usize = got.values().map(Vec::len).sum();
    assert!(
        received < PUBLISHERS * N,
        "nothing lost: the test proves nothing"
    );
    // Every message is either received or counted as dropped.
    assert_eq!(
        received as u64 + stats.dropped,
        (PUBLISHERS * N) as u64,
        "{stats:?}"
    );
    // The publishers waited for it, then gave up: its queue counts as stalled.
    assert!(stats.publish_wait_expired > 0);
    assert_eq!(fx.bus.stats().dropped_qos1, 0);
    for seq in got.values() {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "out of order");
    }
    fx.broker.shutdown(STEP).await;
}

/// The conformance subset on the apps listener: CONNACK codes (bad login 4, connection limit 3),
/// delivery at min(publish QoS, granted QoS), UNSUBACK for a filter never subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_listener_answers_connack_codes_downgrades_qos_and_acks_unknown_unsubscribes() {
    let fx = Fixture::new(&[], |c| {
        c.auth.credentials = Some(broker::ControlCredentials {
            username: "app".into(),
            password: "s3cret".into(),
        });
        c.limits.max_connections = 2;
    })
    .await;
    let refusal = |options: MqttOptions| async move {
        let (_c, mut events) = AsyncClient::new(options, 10);
        match tokio::time::timeout(STEP, events.poll())
            .await
            .expect("no CONNACK")
        {
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    let mut wrong = MqttOptions::new("wrong", "127.0.0.1", fx.addr.port());
    wrong.set_credentials("app", "guess");
    assert_eq!(
        refusal(wrong).await,
        rumqttc::ConnectReturnCode::BadUserNamePassword
    );
    // Anonymous clients are still welcome; the right login too.
    let (a, mut ae) = fx.client("anon").await;
    let mut right = MqttOptions::new("login", "127.0.0.1", fx.addr.port());
    right.set_credentials("app", "s3cret");
    let (b, mut be) = AsyncClient::new(right, 100);
    assert!(matches!(next(&mut be).await, Packet::ConnAck(_)));
    let third = MqttOptions::new("third", "127.0.0.1", fx.addr.port());
    assert_eq!(
        refusal(third).await,
        rumqttc::ConnectReturnCode::ServiceUnavailable
    );

    assert_eq!(
        suback(&a, &mut ae, "q/zero", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
    assert_eq!(
        suback(&a, &mut ae, "q/one", QoS::ExactlyOnce).await,
        vec![SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    for (topic, qos) in [
        ("q/zero", QoS::AtLeastOnce),
        ("q/one", QoS::AtMostOnce),
        ("q/one", QoS::ExactlyOnce),
    ] {
        b.publish(topic, qos, false, b"x".to_vec()).await.unwrap();
        // Drive the publisher until its publish is on the wire (and acknowledged).
        loop {
            match tokio::time::timeout(STEP, be.poll())
                .await
                .unwrap()
                .unwrap()
            {
                Event::Outgoing(rumqttc::Outgoing::Publish(_)) if qos == QoS::AtMostOnce => break,
                Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) => break,
                _ => {}
            }
        }
        let p = next_publish(&mut ae).await;
        let expected = match (topic, qos) {
            ("q/zero", _) | (_, QoS::AtMostOnce) => QoS::AtMostOnce,
            _ => QoS::ExactlyOnce,
        };
        assert_eq!((p.topic.as_str(), p.qos), (topic, expected));
    }
    a.unsubscribe("never/subscribed").await.unwrap();
    loop {
        match next(&mut ae).await {
            Packet::UnsubAck(_) => break,
            Packet::PubAck(_) | Packet::PubRel(_) | Packet::PingResp => {}
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }
    fx.broker.shutdown(STEP).await;
}
