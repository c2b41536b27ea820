//! The MQTT front end against real clients: rumqttc, mosquitto_sub/mosquitto_pub and raw sockets.
//! Every wait is bounded by `STEP` so that a bug fails a test instead of hanging it; nothing
//! asserts on elapsed time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use broker::{
    Acl, Broker, Bus, ControlCredentials, ListenerConfig, ListenerStatsSnapshot, RouterLimits,
    Subscription,
};
use bus_schema::{ServiceName, Topic};
use bytes::{Bytes, BytesMut};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, LastWill, MqttOptions, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::{credentials, Client, STEP};

struct Fixture {
    broker: Broker,
    bus: Bus,
    addr: SocketAddr,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(|_| {}).await
    }

    async fn with(edit: impl FnOnce(&mut ListenerConfig)) -> Fixture {
        Fixture::with_router(RouterLimits::default(), edit).await
    }

    async fn with_router(router: RouterLimits, edit: impl FnOnce(&mut ListenerConfig)) -> Fixture {
        let broker = Broker::start(router).expect("broker");
        let mut config =
            ListenerConfig::control("127.0.0.1:0".parse().expect("address"), credentials());
        edit(&mut config);
        let addr = broker.listen(config).await.expect("listen");
        Fixture {
            bus: broker.bus(),
            broker,
            addr,
        }
    }

    fn options(&self, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.addr.port());
        let c = credentials();
        options
            .set_credentials(c.username, c.password)
            .set_keep_alive(Duration::from_secs(30));
        options
    }

    /// A connected client (CONNACK 0 received).
    async fn client(&self, id: &str) -> Client {
        Client::connect(self.options(id)).await
    }

    /// The CONNACK error a client with these options gets.
    async fn refusal(&self, options: MqttOptions) -> ConnectReturnCode {
        let (_client, mut events) = AsyncClient::new(options, 10);
        match tokio::time::timeout(STEP, events.poll())
            .await
            .expect("no CONNACK in time")
        {
            Err(ConnectionError::ConnectionRefused(code)) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.broker
            .listener_stats("control")
            .expect("stats")
            .snapshot()
    }

    /// Publish `n` retained state topics in process.
    async fn retained_tree(&self, n: usize) -> BTreeSet<String> {
        let mut topics = BTreeSet::new();
        for i in 0..n {
            let topic = Topic::State(ServiceName::Apps, Some(format!("app{i:04}")));
            self.bus
                .publish(&topic, Bytes::from(format!("state {i}")))
                .await
                .expect("publish");
            topics.insert(topic.to_string());
        }
        topics
    }
}

async fn recv(sub: &mut Subscription) -> broker::Message {
    tokio::time::timeout(STEP, sub.recv())
        .await
        .expect("no message in time")
        .expect("bus closed")
}

#[test]
fn the_public_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let broker = Broker::start(RouterLimits::default()).expect("broker");
    let bus = broker.bus();
    let config = ListenerConfig::control("127.0.0.1:0".parse().expect("address"), credentials());
    send(&broker.listen(config));
    send(&bus.publish_raw_qos("a", Bytes::new(), 1, false));
    send(&bus.subscribe(&["a"]));
    send(&broker.shutdown(STEP));
}

fn granted(qos: QoS) -> SubscribeReasonCode {
    SubscribeReasonCode::Success(qos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_client_gets_every_retained_topic_at_qos0_and_qos1_and_again_after_resubscribe()
{
    let fx = Fixture::new().await;
    // Five times rumqttd's own cap of 200 retained messages per subscription.
    let expected = fx.retained_tree(1000).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let mut c = fx.client(&format!("wild-{qos:?}")).await;
        for round in 0..2 {
            let ack = c.subscribe(&[("iohub/#", qos)]).await;
            assert_eq!(ack.return_codes, vec![granted(qos)]);
            let mut seen = BTreeSet::new();
            while seen.len() < expected.len() {
                let p = c.publish().await;
                assert!(
                    p.retain,
                    "{qos:?} round {round}: replayed without RETAIN: {p:?}"
                );
                // In-process publishes are QoS1: delivered at the granted QoS.
                assert_eq!(p.qos, qos);
                assert!(seen.insert(p.topic.clone()), "duplicate {}", p.topic);
            }
            assert_eq!(seen, expected);
            c.unsubscribe("iohub/#").await;
        }
    }
    assert!(fx.stats().messages_out >= 4000);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_qos1_publish_round_trips_and_an_empty_retained_payload_deletes() {
    let fx = Fixture::new().await;
    let mut subscriber = fx.client("subscriber").await;
    let mut publisher = fx.client("publisher").await;
    subscriber
        .subscribe(&[("iohub/event/#", QoS::AtLeastOnce)])
        .await;

    publisher
        .publish_acked("iohub/event/test/ping", QoS::AtLeastOnce, false, b"hello")
        .await;
    let p = subscriber.publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.qos, p.retain),
        (
            "iohub/event/test/ping",
            &b"hello"[..],
            QoS::AtLeastOnce,
            false
        )
    );

    // A retained publish from a client lands in the store; live subscribers get RETAIN=0.
    let before = fx.bus.retained_count();
    publisher
        .publish_acked("iohub/event/test/kept", QoS::AtLeastOnce, true, b"v1")
        .await;
    assert_eq!(fx.bus.retained_count(), before + 1);
    let p = subscriber.publish().await;
    assert!(!p.retain && p.topic == "iohub/event/test/kept");
    let mut late = fx.client("late").await;
    late.subscribe(&[("iohub/event/test/+", QoS::AtLeastOnce)])
        .await;
    let p = late.publish().await;
    assert!(p.retain && &p.payload[..] == b"v1", "{p:?}");

    // An empty retained payload deletes it (and is delivered to live subscribers as is).
    publisher
        .publish_acked("iohub/event/test/kept", QoS::AtLeastOnce, true, b"")
        .await;
    assert_eq!(fx.bus.retained_count(), before);
    let p = subscriber.publish().await;
    assert!(p.topic == "iohub/event/test/kept" && p.payload.is_empty());
    let mut later = fx.client("later").await;
    later
        .subscribe(&[("iohub/event/test/+", QoS::AtLeastOnce)])
        .await;
    publisher
        .publish_acked("iohub/event/test/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    assert_eq!(
        later.publish().await.topic,
        "iohub/event/test/marker",
        "deleted message replayed"
    );
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused_with_their_connack_code() {
    let fx = Fixture::new().await;
    let mut wrong = fx.options("wrong");
    wrong.set_credentials("iohubctl", "battery staple");
    assert_eq!(
        fx.refusal(wrong).await,
        ConnectReturnCode::BadUserNamePassword
    );
    let mut wrong_user = fx.options("wrong-user");
    wrong_user.set_credentials("root", "correct horse");
    assert_eq!(
        fx.refusal(wrong_user).await,
        ConnectReturnCode::BadUserNamePassword
    );
    let anonymous = MqttOptions::new("anonymous", "127.0.0.1", fx.addr.port());
    assert_eq!(
        fx.refusal(anonymous).await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(fx.stats().refused_auth, 3);
    assert_eq!(fx.stats().connections_total, 0);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_outside_the_acl_is_refused() {
    let fx = Fixture::new().await;
    let mut options = fx.options("will");
    options.set_last_will(LastWill::new("apps/x", "gone", QoS::AtMostOnce, false));
    assert_eq!(fx.refusal(options).await, ConnectReturnCode::NotAuthorized);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_clients_get_unacceptable_protocol_version_and_mqtt5_ones_mqtt5_codes() {
    let fx = Fixture::new().await;
    // MQTT 3.1 CONNECT: "MQIsdp", level 3 (rumqttc's codec reads 3.1.1 and 5 only).
    let v31 = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 60, 0, 1, b'x',
    ];
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    s.write_all(&v31).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 1]);
    // Then the broker closes.
    let n = tokio::time::timeout(STEP, s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    // MQTT 5 CONNECT: name, level 5, clean start, keepalive 60, no properties, client id "x",
    // no credentials where the fixture wants them: read as MQTT 5, refused with the MQTT 5
    // reason code 0x87 not authorized (MQTT 5.0 §3.2.2.2), then closed [MQTT-3.2.2-7].
    let v5 = [
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'x',
    ];
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    s.write_all(&v5).await.unwrap();
    let mut head = [0u8; 5];
    tokio::time::timeout(STEP, s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    // Session present 0, reason code 0x87, no properties.
    assert_eq!(head, [0x20, 3, 0, 0x87, 0]);
    let n = tokio::time::timeout(STEP, s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_neither_blocks_others_nor_outlives_the_connect_timeout() {
    let fx = Fixture::with(|c| c.limits.connect_timeout = Duration::from_secs(1)).await;
    let mut idle = TcpStream::connect(fx.addr).await.unwrap();
    // Another client connects and works while the idle one says nothing.
    let mut worker = fx.client("worker").await;
    worker
        .subscribe(&[("iohub/event/#", QoS::AtLeastOnce)])
        .await;
    let topic = Topic::Event(ServiceName::Watcher, bus_schema::EventKind::DeployDropped);
    fx.bus
        .publish(&topic, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(worker.publish().await.topic, topic.to_string());
    // The idle connection is closed once its connect timeout is over.
    let n = tokio::time::timeout(STEP, idle.read(&mut [0u8; 8]))
        .await
        .expect("the idle connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_qos_is_the_minimum_of_publish_and_subscription_qos() {
    let fx = Fixture::new().await;
    let mut subscribers = Vec::new();
    for (name, requested, expected_grant) in [
        ("sub0", QoS::AtMostOnce, QoS::AtMostOnce),
        ("sub1", QoS::AtLeastOnce, QoS::AtLeastOnce),
        ("sub2", QoS::ExactlyOnce, QoS::ExactlyOnce),
    ] {
        let mut c = fx.client(name).await;
        let ack = c.subscribe(&[("iohub/event/q/+", requested)]).await;
        assert_eq!(ack.return_codes, vec![granted(expected_grant)]);
        subscribers.push((c, expected_grant));
    }
    let mut publisher = fx.client("publisher").await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish_acked(&format!("iohub/event/q/{}", qos as u8), qos, false, b"x")
            .await;
    }
    for (c, grant) in &mut subscribers {
        let mut got = BTreeMap::new();
        for _ in 0..3 {
            let p = c.publish().await;
            got.insert(p.topic, p.qos);
        }
        let expected: BTreeMap<String, QoS> = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .map(|pub_qos| {
                let delivered = if (pub_qos as u8) < (*grant as u8) {
                    pub_qos
                } else {
                    *grant
                };
                (format!("iohub/event/q/{}", pub_qos as u8), delivered)
            })
            .collect();
        assert_eq!(got, expected, "granted {grant:?}");
    }
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos2_publish_completes_its_handshake_and_is_published_once() {
    let fx = Fixture::new().await;
    let mut sub = fx.bus.subscribe(&["iohub/event/#"]).await.unwrap();
    let mut c = fx.client("qos2").await;
    c.publish_acked("iohub/event/test/exactly", QoS::ExactlyOnce, false, b"once")
        .await;
    c.publish_acked("iohub/event/test/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let m = recv(&mut sub).await;
    assert_eq!((m.topic.as_str(), m.qos), ("iohub/event/test/exactly", 2));
    assert_eq!(recv(&mut sub).await.topic, "iohub/event/test/marker");
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_an_unknown_filter_is_acknowledged() {
    let fx = Fixture::new().await;
    let mut c = fx.client("unsub").await;
    // Before any subscription, and after one for another filter.
    c.unsubscribe("iohub/never/subscribed").await;
    c.subscribe(&[("iohub/state/#", QoS::AtLeastOnce)]).await;
    c.unsubscribe("iohub/plan/#").await;
    fx.broker.shutdown(STEP).await;
}

fn apps_acl() -> Acl {
    Acl::apps(Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_publishes_the_acl_refuses_get_suback_failure_and_are_dropped() {
    let fx = Fixture::with(|c| c.acl = apps_acl()).await;
    let mut c = fx.client("app").await;
    // The subscription tree holds at most MAX_FILTER_LEVELS levels per filter.
    let deepest = vec!["+"; broker::MAX_FILTER_LEVELS].join("/");
    let too_deep = format!("{deepest}/x");
    let ack = c
        .subscribe(&[
            ("iohub/#", QoS::AtLeastOnce),
            ("sensors/#", QoS::AtLeastOnce),
            ("iohub/state/+", QoS::AtMostOnce),
            ("#", QoS::AtMostOnce),
            // `$SYS/...` is readable (the broker's figures), `$share` is not offered.
            ("$SYS/#", QoS::AtMostOnce),
            ("$share/g/sensors/#", QoS::AtMostOnce),
            (&too_deep, QoS::AtMostOnce),
            (&deepest, QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReasonCode::Failure,
            granted(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            granted(QoS::AtMostOnce),
            granted(QoS::AtMostOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            granted(QoS::AtMostOnce),
        ]
    );
    // `#` was granted, but control topics are never delivered through it.
    fx.bus
        .publish_raw("iohub/state/config", Bytes::from_static(b"{}"), true)
        .await
        .unwrap();
    fx.bus
        .publish_raw("sensors/t1", Bytes::from_static(b"21.5"), false)
        .await
        .unwrap();
    let p = c.publish().await;
    assert_eq!((p.topic.as_str(), p.qos), ("sensors/t1", QoS::AtLeastOnce));
    // Two matching filters (`sensors/#`, `#`): one copy, at the highest granted QoS.

    // A refused QoS1 publish is acknowledged (3.1.1 has no negative PUBACK) and dropped.
    let mut watch = fx.bus.subscribe(&["iohub/#", "sensors/#"]).await.unwrap();
    assert_eq!(recv(&mut watch).await.topic, "iohub/state/config"); // the retained one
    c.publish_acked("iohub/cmd/config/set", QoS::AtLeastOnce, false, b"{}")
        .await;
    c.publish_acked("sensors/t2", QoS::AtLeastOnce, false, b"19")
        .await;
    assert_eq!(recv(&mut watch).await.topic, "sensors/t2");
    let stats = fx.stats();
    assert_eq!((stats.publish_denied, stats.subscribe_denied), (1, 4));
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connects_from_one_address_never_lock_out_another() {
    // Issue 16: one app holding 300 half-open CONNECTs locked every other client out of a
    // listener (its cap of 256 handshakes was for everyone).
    let fx = Fixture::with(|c| {
        // Without a bound per address, 16 of the flood's sockets would fill the listener.
        c.limits.max_handshakes = 16;
        c.limits.max_handshakes_per_address = 8;
        c.limits.connect_timeout = Duration::from_secs(30);
    })
    .await;
    // 127.0.0.2 is loopback too: the flood comes from another source address.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(socket.connect(fx.addr).await.unwrap());
    }
    // Past the first 8, the flood's sockets are closed at once.
    let mut closed = 0;
    for s in &mut flood[8..] {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(STEP, s.read(&mut byte)).await.unwrap();
        closed += usize::from(matches!(n, Ok(0) | Err(_)));
    }
    assert_eq!(closed, 12);
    assert_eq!(fx.stats().refused_limit, 12);
    // Another address still gets in while the 8 are held open.
    let mut c = fx.client("other").await;
    c.subscribe(&[("a/b", QoS::AtMostOnce)]).await;
    drop(flood);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_answers_server_unavailable() {
    let fx = Fixture::with(|c| c.limits.max_connections = 1).await;
    let mut first = fx.client("first").await;
    assert_eq!(
        fx.refusal(fx.options("second")).await,
        ConnectReturnCode::ServiceUnavailable
    );
    assert_eq!(fx.stats().refused_limit, 1);
    assert_eq!(fx.stats().connections, 1);
    // The same client reconnecting (its old connection maybe half-open) is let in and takes
    // the old connection over.
    let mut again = fx.client("first").await;
    first.closed().await;
    again.subscribe(&[("iohub/#", QoS::AtMostOnce)]).await;
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_close_publishes_the_will_and_a_disconnect_discards_it() {
    let fx = Fixture::new().await;
    let mut sub = fx.bus.subscribe(&["iohub/event/test/#"]).await.unwrap();

    let mut options = fx.options("will-abrupt");
    options.set_last_will(LastWill::new(
        "iohub/event/test/will",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let c = Client::connect(options).await;
    drop(c); // the socket closes without DISCONNECT
    let m = recv(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("iohub/event/test/will", &b"gone"[..], 1)
    );

    // CONNECT with a will, then DISCONNECT, on a raw socket: once the broker closes the
    // socket, a will would already be on the bus.
    let mut connect = rumqttc::Connect::new("will-clean");
    let c = credentials();
    connect.set_login(c.username, c.password);
    connect.last_will = Some(LastWill::new(
        "iohub/event/test/will",
        "wrong",
        QoS::AtMostOnce,
        false,
    ));
    let mut bytes = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    s.write_all(&[0xe0, 0]).await.unwrap(); // DISCONNECT
    let n = tokio::time::timeout(STEP, s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    fx.bus
        .publish_raw("iohub/event/test/marker", Bytes::new(), false)
        .await
        .unwrap();
    assert_eq!(recv(&mut sub).await.topic, "iohub/event/test/marker");
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let fx = Fixture::new().await;
    let mut first = fx.client("same").await;
    let mut second = fx.client("same").await;
    first.closed().await;
    second
        .subscribe(&[("iohub/event/#", QoS::AtMostOnce)])
        .await;
    fx.bus
        .publish_raw("iohub/event/test/x", Bytes::new(), false)
        .await
        .unwrap();
    assert_eq!(second.publish().await.topic, "iohub/event/test/x");
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_client_connections() {
    let fx = Fixture::new().await;
    let mut c = fx.client("bye").await;
    c.subscribe(&[("iohub/#", QoS::AtLeastOnce)]).await;
    let mut idle = TcpStream::connect(fx.addr).await.unwrap();
    fx.broker.shutdown(STEP).await;
    c.closed().await;
    let n = tokio::time::timeout(STEP, idle.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

/// A raw client that subscribes to `filter` at `qos` and then never reads nor acknowledges.
async fn stalled_subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> TcpStream {
    let mut connect = rumqttc::Connect::new(id);
    let c = credentials();
    connect.set_login(c.username, c.password);
    let mut bytes = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .expect("encode");
    Packet::Subscribe(rumqttc::Subscribe::new(filter, qos))
        .write(&mut bytes, usize::MAX)
        .expect("encode");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&bytes).await.expect("send");
    let mut acks = [0u8; 4 + 5];
    tokio::time::timeout(STEP, s.read_exact(&mut acks))
        .await
        .expect("no CONNACK and SUBACK in time")
        .expect("read");
    assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 0, qos as u8]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_loses_live_qos0_messages_not_the_broker_memory() {
    let fx = Fixture::with(|c| c.limits.max_queued_bytes = 4096).await;
    let _s = stalled_subscriber(fx.addr, "stalled", "iohub/event/#", QoS::AtMostOnce).await;
    // Far more than the socket buffers and the output buffer hold.
    let payload = Bytes::from(vec![b'x'; 16 * 1024]);
    let mut i = 0;
    while fx.stats().dropped == 0 {
        assert!(i < 100_000, "nothing dropped after {i} messages");
        fx.bus
            .publish_raw_qos("iohub/event/test/flood", payload.clone(), 0, false)
            .await
            .unwrap();
        i += 1;
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    fx.broker.shutdown(STEP).await;
}

const KIB: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_qos1_subscriber_pins_at_most_its_byte_bound_after_backpressure() {
    // Issue 16: a stalled QoS1 subscriber pinned 3,000 x 256 KiB; the message bound alone
    // allowed 16,000 x 1 MiB. Bytes are now bounded per subscription too: the publisher is
    // paused first (soft bound), then deliveries past the hard bound are dropped and counted.
    let fx = Fixture::with(|c| {
        c.acl = apps_acl();
        c.limits.max_inflight = 2;
        c.limits.max_subscription_bytes = 64 * KIB;
        c.limits.max_subscription_bytes_hard = 256 * KIB;
        c.limits.max_publish_wait = Duration::from_millis(200);
    })
    .await;
    let stalled = stalled_subscriber(fx.addr, "stalled", "data/#", QoS::AtLeastOnce).await;
    let mut options = fx.options("publisher");
    options.set_max_packet_size(64 * KIB, 64 * KIB);
    let mut publisher = Client::connect(options).await;
    let payload = vec![b'x'; 16 * KIB];
    let sent = 200u64;
    for _ in 0..sent {
        publisher
            .publish_acked("data/big", QoS::AtLeastOnce, false, &payload)
            .await;
    }
    let (router, stats) = (fx.bus.stats(), fx.stats());
    // Far below the message bound (1,000), the byte bound made the publisher wait ...
    assert!(stats.backpressure_waits >= 1, "{stats:?}");
    assert!(stats.publish_wait_expired >= 1, "{stats:?}");
    // ... then held the queue under its hard bound: 15 messages of 16 KiB and a topic fit in
    // 256 KiB, and 2 are in flight to the client (never acknowledged).
    assert!(router.queued_bytes <= (256 * KIB) as u64, "{router:?}");
    assert!(router.queued <= 15, "{router:?}");
    assert!(router.dropped_qos1 >= sent - 15 - 2, "{router:?}");
    assert_eq!(router.dropped_qos1, stats.dropped, "{router:?} {stats:?}");
    assert_eq!(router.client_queued_bytes, router.queued_bytes);
    // Gone with the client: nothing stays pinned.
    drop(stalled);
    for _ in 0..100 {
        if fx.bus.stats().client_queued_bytes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fx.bus.stats().client_queued_bytes, 0);
    assert_eq!(fx.bus.stats().queued_bytes, 0);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_together_stay_within_the_clients_byte_budget() {
    // A thousand stalled clients must not pin a thousand times the per-subscription bound.
    let router = RouterLimits {
        max_client_queued_bytes: 100 * KIB,
        ..RouterLimits::default()
    };
    let fx = Fixture::with_router(router, |c| {
        c.acl = apps_acl();
        c.limits.max_inflight = 1;
    })
    .await;
    let mut stalled = Vec::new();
    for i in 0..4 {
        stalled
            .push(stalled_subscriber(fx.addr, &format!("s{i}"), "data/#", QoS::AtLeastOnce).await);
    }
    // An in-process subscriber is outside the clients' budget and loses nothing.
    let mut own = fx.bus.subscribe(&["data/#"]).await.unwrap();
    let payload = Bytes::from(vec![b'x'; 16 * KIB]);
    for _ in 0..40 {
        fx.bus
            .publish_raw_qos("data/big", payload.clone(), 1, false)
            .await
            .unwrap();
    }
    for _ in 0..40 {
        recv(&mut own).await;
    }
    let stats = fx.bus.stats();
    assert!(stats.client_queued_bytes <= (100 * KIB) as u64, "{stats:?}");
    // 4 x 40 deliveries; at most 1 in flight per client and 6 in the budget.
    assert!(stats.dropped_qos1 >= 160 - 4 - 6, "{stats:?}");
    drop(stalled);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_past_the_connection_filter_and_tree_bounds_get_suback_failure() {
    // Issue 16: one connection subscribing 20,000 filters of 200 levels took 2.18 GB.
    let router = RouterLimits {
        max_client_filter_nodes: 40,
        ..RouterLimits::default()
    };
    let fx = Fixture::with_router(router, |c| {
        c.acl = apps_acl();
        c.limits.max_filters = 4;
        c.limits.max_filter_bytes = 64;
    })
    .await;
    let mut c = fx.client("many").await;
    let ok = granted(QoS::AtMostOnce);
    let fail = SubscribeReasonCode::Failure;
    let long = format!("a/{}", "x".repeat(63));
    let ack = c
        .subscribe(&[
            ("a/1", QoS::AtMostOnce),
            ("a/2", QoS::AtMostOnce),
            ("a/3", QoS::AtMostOnce),
            (&long, QoS::AtMostOnce),
            ("a/4", QoS::AtMostOnce),
            ("a/5", QoS::AtMostOnce),
            // A re-grant of a held filter is not one more.
            ("a/1", QoS::AtLeastOnce),
        ])
        .await;
    assert_eq!(
        ack.return_codes,
        vec![ok, ok, ok, fail, ok, fail, granted(QoS::AtLeastOnce)]
    );
    // 5 nodes so far (`a` and four below it); 30 levels fit, 30 more do not.
    let deep = |root: &str| format!("{root}/{}", vec!["l"; 29].join("/"));
    let mut other = fx.client("deep").await;
    let ack = other
        .subscribe(&[(&deep("x"), QoS::AtMostOnce), (&deep("y"), QoS::AtMostOnce)])
        .await;
    assert_eq!(ack.return_codes, vec![ok, fail]);
    assert_eq!(fx.bus.stats().filter_nodes, 35);
    // iohub's own subscriptions are never refused, and are counted.
    let _own = fx.bus.subscribe(&[&deep("z")]).await.unwrap();
    assert_eq!(fx.bus.stats().filter_nodes, 65);
    let (router, stats) = (fx.bus.stats(), fx.stats());
    assert_eq!(stats.subscribe_refused_limit, 3, "{stats:?}");
    assert_eq!(router.filters_refused, 1, "{router:?}");
    // The clients' filters leave the tree with them.
    drop((c, other));
    for _ in 0..100 {
        if fx.bus.stats().filter_nodes == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fx.bus.stats().filter_nodes, 30);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_take_the_whole_tree() {
    let fx = Fixture::with(|c| {
        c.acl = apps_acl();
        c.limits.max_filter_levels = 45;
    })
    .await;
    let deep = |root: &str| format!("{root}/{}", vec!["l"; 29].join("/"));
    let mut c = fx.client("levels").await;
    let ok = granted(QoS::AtMostOnce);
    let ack = c
        .subscribe(&[
            (&deep("x"), QoS::AtMostOnce),
            (&deep("y"), QoS::AtMostOnce),
            ("a/b/c", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(ack.return_codes, vec![ok, SubscribeReasonCode::Failure, ok]);
    // Its levels come back with an unsubscribe.
    c.unsubscribe(&deep("x")).await;
    let ack = c.subscribe(&[(&deep("y"), QoS::AtMostOnce)]).await;
    assert_eq!(ack.return_codes, vec![ok]);
    // Another connection has its own allowance.
    let mut other = fx.client("other").await;
    let ack = other.subscribe(&[(&deep("z"), QoS::AtMostOnce)]).await;
    assert_eq!(ack.return_codes, vec![ok]);
    assert_eq!(fx.stats().subscribe_refused_limit, 1);
    fx.broker.shutdown(STEP).await;
}

/// A mosquitto client program, or `None` (and a printed reason) when it is not installed.
/// Under `CI=true` a missing program fails the test.
#[allow(clippy::disallowed_methods)] // test-only: runs the mosquitto command-line clients
fn mosquitto(program: &str) -> Option<tokio::process::Command> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()) {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{program} is required under CI=true (apt-get install mosquitto-clients)"
        );
        eprintln!("skipped: {program} is not installed (apt-get install mosquitto-clients)");
        return None;
    }
    let mut command = tokio::process::Command::new(program);
    command.kill_on_drop(true);
    Some(command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_prints_the_whole_retained_tree() {
    let Some(mut sub) = mosquitto("mosquitto_sub") else {
        return;
    };
    let fx = Fixture::new().await;
    let expected = fx.retained_tree(1000).await;
    let c = credentials();
    let port = fx.addr.port().to_string();
    let count = expected.len().to_string();
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-u",
        &c.username,
        "-P",
        &c.password,
    ])
    .args([
        "-i",
        "mosquitto-sub",
        "-q",
        "1",
        "-t",
        "iohub/#",
        "-v",
        "-C",
        &count,
        "-W",
        "10",
    ]);
    let output = tokio::time::timeout(STEP * 2, sub.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let topics: BTreeSet<String> = stdout
        .lines()
        .map(|line| {
            line.split_once(' ')
                .map_or(line, |(topic, _)| topic)
                .to_string()
        })
        .collect();
    assert_eq!(topics, expected);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_qos1_reaches_an_in_process_subscriber() {
    let Some(mut publish) = mosquitto("mosquitto_pub") else {
        return;
    };
    let fx = Fixture::new().await;
    let mut sub = fx.bus.subscribe(&["iohub/cmd/#"]).await.unwrap();
    let c = credentials();
    let port = fx.addr.port().to_string();
    publish
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            &c.username,
            "-P",
            &c.password,
        ])
        .args([
            "-i",
            "mosquitto-pub",
            "-q",
            "1",
            "-t",
            "iohub/cmd/config/get",
            "-m",
            "{}",
        ]);
    let output = tokio::time::timeout(STEP, publish.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let m = recv(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("iohub/cmd/config/get", &b"{}"[..], 1)
    );
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_configs_that_cannot_work_are_refused() {
    let broker = Broker::start(RouterLimits::default()).expect("broker");
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let empty = ControlCredentials {
        username: "iohubctl".into(),
        password: String::new(),
    };
    let mut public = ListenerConfig::control("0.0.0.0:0".parse().expect("address"), credentials());
    let bad_acl = ListenerConfig {
        acl: Acl {
            publish_allow: vec!["a/#/b".into()],
            ..Acl::control()
        },
        ..ListenerConfig::control(addr, credentials())
    };
    for config in [
        ListenerConfig::control(addr, empty),
        public.clone(),
        bad_acl,
    ] {
        let name = format!("{config:?}");
        assert!(
            matches!(
                broker.listen(config).await,
                Err(broker::BrokerError::Config(_))
            ),
            "{name}"
        );
    }
    // The password never shows in logs.
    assert!(!format!("{public:?}").contains("correct horse"));
    // A second listener needs its own name.
    broker
        .listen(ListenerConfig::control(addr, credentials()))
        .await
        .expect("listen");
    public.addr = addr;
    assert!(matches!(
        broker.listen(public).await,
        Err(broker::BrokerError::Config(_))
    ));
    broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_one_and_a_half_keepalives_and_its_will_published() {
    let fx = Fixture::new().await;
    let mut sub = fx.bus.subscribe(&["iohub/event/test/#"]).await.unwrap();
    let mut connect = rumqttc::Connect::new("silent");
    let c = credentials();
    connect.set_login(c.username, c.password);
    connect.keep_alive = 1;
    connect.last_will = Some(LastWill::new(
        "iohub/event/test/will",
        "silent",
        QoS::AtLeastOnce,
        false,
    ));
    let mut bytes = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut s = TcpStream::connect(fx.addr).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut connack))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // One PINGREQ is answered; then silence.
    s.write_all(&[0xc0, 0]).await.unwrap();
    let mut pingresp = [0u8; 2];
    tokio::time::timeout(STEP, s.read_exact(&mut pingresp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pingresp, [0xd0, 0]);
    let n = tokio::time::timeout(STEP, s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "not closed");
    let m = recv(&mut sub).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("iohub/event/test/will", &b"silent"[..])
    );
    fx.broker.shutdown(STEP).await;
}
