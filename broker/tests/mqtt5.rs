//! MQTT 5.0 on the apps listener, one test per normative area of the OASIS MQTT 5.0
//! specification (statement ids cited), with real clients: rumqttc's v5 client where it can say
//! what is tested, raw packets encoded by rumqttc's v5 codec for bad input (a well-behaved client
//! cannot send it). Every bad input is answered with the reason code the specification names and
//! another client keeps receiving meanwhile. Every wait is bounded; nothing asserts on elapsed
//! time.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use broker::{Broker, ListenerConfig, ListenerStatsSnapshot, RouterLimits, SessionStoreConfig};
use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectProperties, ConnectReturnCode, DisconnectReasonCode, Filter, Packet,
    PubAckReason, Publish, PublishProperties, RetainForwardRule, Subscribe, SubscribeReasonCode,
    UnsubAckReason, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(10);

struct Fixture {
    broker: Broker,
    addr: SocketAddr,
}

impl Fixture {
    async fn new(edit: impl FnOnce(&mut ListenerConfig)) -> Fixture {
        let broker = Broker::start(RouterLimits::default()).expect("broker");
        let mut config = ListenerConfig::apps("127.0.0.1:0".parse().unwrap(), vec![]);
        edit(&mut config);
        let addr = broker.listen(config).await.expect("listen");
        Fixture { broker, addr }
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.broker.listener_stats("apps").unwrap().snapshot()
    }

    fn options(&self, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", self.addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// A connected rumqttc v5 client and its CONNACK.
    async fn v5(&self, options: MqttOptions) -> (V5, ConnAck) {
        let (client, events) = AsyncClient::new(options, 100);
        let mut c = V5 { client, events };
        match c.next().await {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                (c, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A v5 client subscribed to `filter` at QoS1 (a witness that must keep receiving).
    async fn witness(&self, id: &str, filter: &str) -> V5 {
        let (mut w, _) = self.v5(self.options(id)).await;
        w.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        w.suback().await;
        w
    }

    /// A raw connection that sent an MQTT 5 CONNECT and got its CONNACK.
    async fn raw(&self, id: &str) -> Raw {
        let mut raw = Raw::open(self.addr).await;
        raw.send(&connect(id, None)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }
}

struct V5 {
    client: AsyncClient,
    events: EventLoop,
}

impl V5 {
    async fn next(&mut self) -> Packet {
        loop {
            let event = tokio::time::timeout(STEP, self.events.poll())
                .await
                .expect("no packet in time")
                .expect("connection failed");
            if let Event::Incoming(packet) = event {
                return packet;
            }
        }
    }

    async fn publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Packet::Publish(p) => return p,
                Packet::PingResp(_)
                | Packet::PubAck(_)
                | Packet::PubComp(_)
                | Packet::PubRec(_) => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        loop {
            match self.next().await {
                Packet::SubAck(a) => return a.return_codes,
                Packet::Publish(_) | Packet::PingResp(_) | Packet::PubAck(_) => {}
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// Publish at QoS1 and wait for the PUBACK.
    async fn publish_acked(&mut self, topic: &str, payload: &[u8], props: PublishProperties) {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.to_vec(), props)
            .await
            .unwrap();
        loop {
            match self.next().await {
                Packet::PubAck(a) => {
                    assert_eq!(a.reason, PubAckReason::Success);
                    return;
                }
                Packet::Publish(_) | Packet::PingResp(_) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// No PUBLISH within `wait` (the negative half of a flow-control test).
    async fn no_publish(&mut self, wait: Duration) {
        let quiet = tokio::time::timeout(wait, async {
            loop {
                match self.events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => return p,
                    Ok(_) => {}
                    Err(e) => panic!("connection failed: {e}"),
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "unexpected PUBLISH {quiet:?}");
    }
}

/// Another client is undisturbed: it still gets a message published now.
async fn still_receives(fx: &Fixture, witness: &mut V5, topic: &str) {
    let (mut p, _) = fx.v5(fx.options("still-pub")).await;
    p.publish_acked(topic, b"alive", PublishProperties::default())
        .await;
    let got = witness.publish().await;
    assert_eq!(&got.payload[..], b"alive");
}

/// A raw MQTT 5 connection: packets encoded and decoded by rumqttc's v5 codec.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, None).unwrap();
        self.send_bytes(&out).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` once the broker closed.
    async fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, None) {
                Ok(p) => return Some(p),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("undecodable packet from the broker: {e}"),
            }
            let n = tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .expect("nothing from the broker in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
        }
    }

    /// The broker's DISCONNECT reason code, then the close.
    async fn disconnected(&mut self) -> DisconnectReasonCode {
        loop {
            match self.recv().await {
                Some(Packet::Disconnect(d)) => {
                    assert!(self.recv().await.is_none(), "closed after DISCONNECT");
                    return d.reason_code;
                }
                Some(Packet::PingResp(_) | Packet::PubAck(_)) => {}
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        }
    }
}

fn connect(id: &str, properties: Option<ConnectProperties>) -> Packet {
    Packet::Connect(
        Connect {
            keep_alive: 30,
            client_id: id.into(),
            clean_start: true,
            properties,
        },
        None,
        None,
    )
}

fn publish(topic: &str, payload: &[u8], properties: Option<PublishProperties>) -> Packet {
    let mut p = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec(), properties);
    p.pkid = 1;
    Packet::Publish(p)
}

fn v311_options(fx: &Fixture, id: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", fx.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

async fn v311_next(events: &mut rumqttc::EventLoop) -> rumqttc::Packet {
    loop {
        let event = tokio::time::timeout(STEP, events.poll())
            .await
            .expect("no packet in time")
            .expect("connection failed");
        if let rumqttc::Event::Incoming(packet) = event {
            return packet;
        }
    }
}

/// [MQTT-3.1.2-2] the protocol version is per connection: a v5 publisher reaches a 3.1.1
/// subscriber and a 3.1.1 publisher a v5 subscriber, QoS1 both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_protocol_versions_both_ways() {
    let fx = Fixture::new(|_| {}).await;
    let (old, mut old_events) = rumqttc::AsyncClient::new(v311_options(&fx, "old"), 10);
    assert!(matches!(
        v311_next(&mut old_events).await,
        rumqttc::Packet::ConnAck(_)
    ));
    old.subscribe("to/old", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(matches!(
        v311_next(&mut old_events).await,
        rumqttc::Packet::SubAck(_)
    ));
    let mut new = fx.witness("new", "to/new").await;
    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    new.publish_acked("to/old", b"from v5", props).await;
    loop {
        if let rumqttc::Packet::Publish(p) = v311_next(&mut old_events).await {
            assert_eq!(
                (p.topic.as_str(), &p.payload[..]),
                ("to/old", &b"from v5"[..])
            );
            assert_eq!(p.qos, rumqttc::QoS::AtLeastOnce);
            break;
        }
    }
    old.publish("to/new", rumqttc::QoS::AtLeastOnce, false, "from 3.1.1")
        .await
        .unwrap();
    while !matches!(v311_next(&mut old_events).await, rumqttc::Packet::PubAck(_)) {}
    let p = new.publish().await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"to/new"[..], &b"from 3.1.1"[..])
    );
    assert_eq!(p.qos, QoS::AtLeastOnce);
    fx.broker.shutdown(STEP).await;
}

/// Request/response and application properties are forwarded unaltered to v5 subscribers:
/// payload format indicator [MQTT-3.3.2-4], response topic [MQTT-3.3.2-15], correlation data
/// [MQTT-3.3.2-16], user properties in order [MQTT-3.3.2-17], [MQTT-3.3.2-18], content type
/// [MQTT-3.3.2-20]; the message expiry interval is the time left [MQTT-3.3.2-6].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_reach_a_v5_subscriber_unaltered() {
    let fx = Fixture::new(|_| {}).await;
    let mut sub = fx.witness("responder", "req/+").await;
    let (mut req, _) = fx.v5(fx.options("requester")).await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: None,
        response_topic: Some("reply/requester".into()),
        correlation_data: Some(Bytes::from_static(b"\x00corr\xff")),
        user_properties: vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        subscription_identifiers: vec![],
        content_type: Some("application/json".into()),
    };
    req.publish_acked("req/x", b"{}", sent.clone()).await;
    let got = sub.publish().await.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.response_topic.as_deref(), Some("reply/requester"));
    assert_eq!(got.correlation_data, sent.correlation_data);
    assert_eq!(got.user_properties, sent.user_properties);
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    let left = got.message_expiry_interval.expect("expiry interval");
    assert!((1..=60).contains(&left), "{left}");
    // The responder answers on the response topic with the correlation data.
    let mut back = fx.witness("requester-in", "reply/requester").await;
    let reply = PublishProperties {
        correlation_data: got.correlation_data.clone(),
        ..Default::default()
    };
    sub.publish_acked("reply/requester", b"ok", reply).await;
    let answer = back.publish().await;
    assert_eq!(
        answer.properties.and_then(|p| p.correlation_data),
        sent.correlation_data
    );
    fx.broker.shutdown(STEP).await;
}

/// Receive maximum [MQTT-3.3.4-9]: the broker never has more unacknowledged QoS>0 messages
/// for a client than its receive maximum; and a message whose expiry interval passed while it
/// waited is not delivered [MQTT-3.3.2-5], and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_maximum_holds_messages_back_and_expired_ones_are_dropped() {
    let fx = Fixture::new(|_| {}).await;
    let mut o = fx.options("slow");
    o.set_receive_maximum(Some(1)).set_manual_acks(true);
    let (mut slow, _) = fx.v5(o).await;
    slow.client
        .subscribe("flow/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    slow.suback().await;
    let (mut p, _) = fx.v5(fx.options("pub")).await;
    p.publish_acked("flow/1", b"first", PublishProperties::default())
        .await;
    let expiring = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    p.publish_acked("flow/2", b"expires", expiring).await;
    p.publish_acked("flow/3", b"third", PublishProperties::default())
        .await;
    let first = slow.publish().await;
    assert_eq!(&first.payload[..], b"first");
    // Window of one: nothing more until the PUBACK, long enough for the second to expire.
    slow.no_publish(Duration::from_millis(2_100)).await;
    slow.client.ack(&first).await.unwrap();
    let next = slow.publish().await;
    assert_eq!(
        &next.payload[..],
        b"third",
        "the expired message was delivered"
    );
    assert_eq!(fx.stats().expired, 1);
    fx.broker.shutdown(STEP).await;
}

/// Maximum packet size, both directions: a PUBLISH over the broker's maximum is answered with
/// DISCONNECT 0x95 [MQTT-3.2.2-15] (MQTT 5.0 §4.13); a message larger than the client's maximum
/// is not sent to it [MQTT-3.1.2-25] and counted; others are undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maximum_packet_size_both_ways() {
    let fx = Fixture::new(|c| c.limits.max_packet_bytes = 1024).await;
    let (_, ack) = fx.v5(fx.options("probe")).await;
    assert_eq!(ack.properties.unwrap().max_packet_size, Some(1024));
    let mut witness = fx.witness("witness", "size/#").await;
    let mut small = fx.options("small");
    small.set_max_packet_size(Some(100));
    let (mut small, _) = fx.v5(small).await;
    small
        .client
        .subscribe("size/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    small.suback().await;
    let (mut p, _) = fx.v5(fx.options("pub")).await;
    p.publish_acked("size/big", &[7u8; 500], PublishProperties::default())
        .await;
    p.publish_acked("size/small", b"s", PublishProperties::default())
        .await;
    assert_eq!(&small.publish().await.topic[..], b"size/small");
    assert_eq!(witness.publish().await.payload.len(), 500);
    assert_eq!(witness.publish().await.payload.len(), 1);
    assert_eq!(fx.stats().too_large, 1);

    let mut raw = fx.raw("too-large").await;
    raw.send(&publish("size/huge", &[1u8; 2000], None)).await;
    assert_eq!(
        raw.disconnected().await,
        DisconnectReasonCode::PacketTooLarge
    );
    still_receives(&fx, &mut witness, "size/after").await;
    fx.broker.shutdown(STEP).await;
}

/// Topic aliases from the client (MQTT 5.0 §3.3.2.3.4): the broker advertises its maximum
/// [MQTT-3.2.2-?], resolves an alias set earlier, and answers an alias of 0 or over the maximum
/// with DISCONNECT 0x94 [MQTT-3.3.2-8], [MQTT-3.3.2-9]; others are undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_from_the_client() {
    let fx = Fixture::new(|_| {}).await;
    let mut witness = fx.witness("witness", "alias/#").await;
    let mut raw = Raw::open(fx.addr).await;
    raw.send(&connect("aliaser", None)).await;
    let max = match raw.recv().await {
        Some(Packet::ConnAck(a)) => a.properties.unwrap().topic_alias_max.unwrap(),
        other => panic!("expected CONNACK, got {other:?}"),
    };
    assert!(max > 0);
    let with_alias = |alias| {
        Some(PublishProperties {
            topic_alias: Some(alias),
            ..Default::default()
        })
    };
    raw.send(&publish("alias/long/topic", b"1", with_alias(1)))
        .await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
    raw.send(&publish("", b"2", with_alias(1))).await;
    assert!(matches!(raw.recv().await, Some(Packet::PubAck(_))));
    for expected in [b"1", b"2"] {
        let p = witness.publish().await;
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            (&b"alias/long/topic"[..], &expected[..])
        );
    }
    raw.send(&publish("alias/x", b"3", with_alias(max + 1)))
        .await;
    assert_eq!(
        raw.disconnected().await,
        DisconnectReasonCode::TopicAliasInvalid
    );
    let mut zero = fx.raw("zero").await;
    zero.send(&publish("alias/x", b"4", with_alias(0))).await;
    assert_eq!(
        zero.disconnected().await,
        DisconnectReasonCode::TopicAliasInvalid
    );
    still_receives(&fx, &mut witness, "alias/after").await;
    fx.broker.shutdown(STEP).await;
}

/// Malformed properties: in a PUBLISH, DISCONNECT 0x81 [MQTT-4.13.1-1]; in a CONNECT, CONNACK
/// 0x81 and the close (MQTT 5.0 §3.2.2.2); others are undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_properties_are_refused_with_0x81() {
    let fx = Fixture::new(|_| {}).await;
    let mut witness = fx.witness("witness", "bad/#").await;
    let mut raw = fx.raw("bad").await;
    // PUBLISH QoS0 "bad/x": topic, properties length 2, property id 0xFF (none such), payload.
    raw.send_bytes(&[0x30, 10, 0, 5, b'b', b'a', b'd', b'/', b'x', 2, 0xFF, 0])
        .await;
    assert_eq!(
        raw.disconnected().await,
        DisconnectReasonCode::MalformedPacket
    );
    // CONNECT with a properties length running past the packet.
    let mut raw = Raw::open(fx.addr).await;
    raw.send_bytes(&[
        0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 30, 9, 0x11, 0, 1, b'x',
    ])
    .await;
    match raw.recv().await {
        Some(Packet::ConnAck(a)) => assert_eq!(a.code, ConnectReturnCode::MalformedPacket),
        other => panic!("expected CONNACK 0x81, got {other:?}"),
    }
    assert!(raw.recv().await.is_none());
    still_receives(&fx, &mut witness, "bad/after").await;
    fx.broker.shutdown(STEP).await;
}

/// SUBACK and UNSUBACK reason codes (MQTT 5.0 §3.9.3, §3.11.3): granted QoS, 0x8F topic filter
/// invalid, 0x87 not authorized, 0x9E shared subscriptions not supported (the CONNACK says so)
/// and 0x8F for a share name with a wildcard [MQTT-4.8.2-2], 0x97 quota exceeded past the listener's bounds; UNSUBACK 0x11 for a filter
/// not subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_and_unsuback_reason_codes() {
    let fx = Fixture::new(|c| c.limits.max_filters = 2).await;
    let (_, ack) = fx.v5(fx.options("probe")).await;
    assert_eq!(
        ack.properties.unwrap().shared_subscription_available,
        Some(0)
    );
    // Raw: rumqttc's client refuses to send an invalid filter.
    let mut raw = fx.raw("subs").await;
    let filters = [
        ("ok/+", QoS::ExactlyOnce),
        ("bad/#/x", QoS::AtLeastOnce),
        ("$private/x", QoS::AtLeastOnce),
        ("$share/g/a", QoS::AtLeastOnce),
        ("$share/g+/a", QoS::AtLeastOnce),
        ("ok/2", QoS::AtMostOnce),
        ("ok/3", QoS::AtMostOnce),
    ];
    let mut subscribe = Subscribe::new_many(filters.iter().map(|(f, q)| Filter::new(*f, *q)), None);
    subscribe.pkid = 1;
    raw.send(&Packet::Subscribe(subscribe)).await;
    let Some(Packet::SubAck(suback)) = raw.recv().await else {
        panic!("expected SUBACK");
    };
    assert_eq!(
        suback.return_codes,
        vec![
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
            SubscribeReasonCode::TopicFilterInvalid,
            SubscribeReasonCode::NotAuthorized,
            SubscribeReasonCode::SharedSubscriptionsNotSupported,
            SubscribeReasonCode::TopicFilterInvalid,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::QuotaExceeded,
        ]
    );
    let mut unsubscribe = Unsubscribe::new("never/subscribed", None);
    unsubscribe.pkid = 2;
    raw.send(&Packet::Unsubscribe(unsubscribe)).await;
    match raw.recv().await {
        Some(Packet::UnsubAck(a)) => {
            assert_eq!(a.reasons, vec![UnsubAckReason::NoSubscriptionExisted]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    fx.broker.shutdown(STEP).await;
}

/// Subscription options (MQTT 5.0 §3.8.3.1): no local [MQTT-3.8.3-3]; retain handling 0, 1
/// [MQTT-3.3.1-10] and 2 [MQTT-3.3.1-11].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_and_retain_handling() {
    let fx = Fixture::new(|_| {}).await;
    let (mut c, _) = fx.v5(fx.options("opts")).await;
    c.client
        .publish("kept/t", QoS::AtLeastOnce, true, "retained")
        .await
        .unwrap();
    let mut f = Filter::new("kept/#", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    c.client.subscribe_many([f]).await.unwrap();
    c.suback().await;
    c.no_publish(Duration::from_millis(300)).await;
    let mut f = Filter::new("kept/+", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    c.client.subscribe_many([f.clone()]).await.unwrap();
    c.suback().await;
    let p = c.publish().await;
    assert!(p.retain && &p.payload[..] == b"retained");
    // The same filter again: not new, no replay.
    c.client.subscribe_many([f]).await.unwrap();
    c.suback().await;
    c.no_publish(Duration::from_millis(300)).await;
    // No local: own messages are not delivered through the filter, others' are.
    let mut own = Filter::new("local/#", QoS::AtLeastOnce);
    own.nolocal = true;
    c.client.subscribe_many([own]).await.unwrap();
    c.suback().await;
    c.client
        .publish("local/x", QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    let (mut other, _) = fx.v5(fx.options("other")).await;
    other
        .publish_acked("local/x", b"theirs", PublishProperties::default())
        .await;
    assert_eq!(&c.publish().await.payload[..], b"theirs");
    fx.broker.shutdown(STEP).await;
}

/// CONNECT and CONNACK (MQTT 5.0 §3.1, §3.2): an empty client id gets one assigned and sent
/// back [MQTT-3.1.3-6], [MQTT-3.2.2-16]; a keep alive over the broker's is replaced by the
/// server keep alive [MQTT-3.2.2-21]; the broker's receive maximum and topic alias maximum are
/// advertised.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_client_identifier_and_server_keep_alive() {
    let fx = Fixture::new(|c| c.limits.keepalive_max = Duration::from_secs(120)).await;
    let mut o = fx.options("");
    o.set_keep_alive(Duration::from_secs(1000));
    let (_c, ack) = fx.v5(o).await;
    let p = ack.properties.unwrap();
    assert!(p
        .assigned_client_identifier
        .is_some_and(|id| !id.is_empty()));
    assert_eq!(p.server_keep_alive, Some(120));
    assert!(p.receive_max.is_some_and(|m| m > 0));
    assert!(p.topic_alias_max.is_some_and(|m| m > 0));
    fx.broker.shutdown(STEP).await;
}

/// Session takeover (MQTT 5.0 §3.1.4, [MQTT-3.1.4-3]): the same client id connecting 1,000
/// times in a burst; every connection taken over gets DISCONNECT 0x8E, one stays, and another
/// client keeps receiving throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_storm_is_bounded_and_disturbs_nobody() {
    let fx = Fixture::new(|_| {}).await;
    let mut witness = fx.witness("witness", "storm/#").await;
    let mut previous: Option<Raw> = None;
    let mut taken_over = 0;
    for _ in 0..1_000 {
        let raw = fx.raw("same-id").await;
        if let Some(mut old) = previous.replace(raw) {
            assert_eq!(
                old.disconnected().await,
                DisconnectReasonCode::SessionTakenOver
            );
            taken_over += 1;
        }
    }
    assert_eq!(taken_over, 999);
    still_receives(&fx, &mut witness, "storm/after").await;
    // The witness, the last of the storm and the publisher of `still_receives` at most.
    assert!(fx.stats().connections <= 3, "{:?}", fx.stats());
    fx.broker.shutdown(STEP).await;
}

/// Session expiry and clean start (MQTT 5.0 §3.1.2.4, §3.1.2.11.2): a session with an expiry
/// interval > 0 is kept and its QoS1 messages queued while the client is away
/// ([MQTT-3.1.2-23]), CONNACK session present 1 on return [MQTT-3.2.2-3]; clean start discards
/// it [MQTT-3.1.2-4]; an expiry of 0 ends it with the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_keeps_a_session_and_clean_start_discards_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_path_buf();
    let fx = Fixture::new(|c| c.sessions = Some(SessionStoreConfig::new(store))).await;
    let persistent = |clean: bool| {
        let mut o = fx.options("kept");
        o.set_clean_start(clean)
            .set_session_expiry_interval(Some(3600));
        o
    };
    let (mut c, ack) = fx.v5(persistent(true)).await;
    assert!(!ack.session_present);
    c.client
        .subscribe("queue/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    c.suback().await;
    c.client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(STEP, async { while c.events.poll().await.is_ok() {} }).await;
    drop(c);
    let (mut p, _) = fx.v5(fx.options("pub")).await;
    p.publish_acked("queue/1", b"while away", PublishProperties::default())
        .await;
    let (mut c, ack) = fx.v5(persistent(false)).await;
    assert!(ack.session_present);
    assert_eq!(&c.publish().await.payload[..], b"while away");
    c.client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(STEP, async { while c.events.poll().await.is_ok() {} }).await;
    drop(c);
    // Resumed by clean start 0 without an interval (0): the session is there, and ends with
    // this connection (MQTT 5.0 §3.1.2.11.2).
    p.publish_acked("queue/2", b"again", PublishProperties::default())
        .await;
    let mut resume = fx.options("kept");
    resume.set_clean_start(false);
    let (mut c, ack) = fx.v5(resume.clone()).await;
    assert!(ack.session_present);
    assert_eq!(&c.publish().await.payload[..], b"again");
    c.client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(STEP, async { while c.events.poll().await.is_ok() {} }).await;
    drop(c);
    let (_c, ack) = fx.v5(resume).await;
    assert!(
        !ack.session_present,
        "the session ended with the connection"
    );
    drop(_c);
    let (_c, ack) = fx.v5(persistent(true)).await;
    assert!(!ack.session_present);
    drop(_c);
    let (mut c, _) = fx.v5(persistent(false)).await;
    c.client
        .subscribe("queue/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    c.suback().await;
    drop(c);
    let (_c, ack) = fx.v5(persistent(true)).await;
    assert!(!ack.session_present, "clean start discards the session");
    // Expiry 0 (the default): nothing kept.
    let mut o = fx.options("fleeting");
    o.set_clean_start(false);
    let (_f, ack) = fx.v5(o.clone()).await;
    assert!(!ack.session_present);
    drop(_f);
    let (_f, ack) = fx.v5(o).await;
    assert!(!ack.session_present);
    fx.broker.shutdown(STEP).await;
}
