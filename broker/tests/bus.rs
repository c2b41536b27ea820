//! The in-process bus against the real rumqttd router.

use std::time::Duration;

use broker::{Broker, RouterLimits};
use bus_schema::{ServiceName, Topic};
use bytes::Bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_wildcard_subscriber_gets_every_retained_topic_then_live_traffic() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let bus = broker.bus();
    // Far more than rumqttd's own cap of `max_outgoing_packet_count` (200) retained messages.
    for i in 0..1000 {
        let topic = Topic::State(ServiceName::Apps, Some(format!("app{i:04}")));
        bus.publish(&topic, Bytes::from(format!("{i}")))
            .await
            .unwrap();
    }
    // Plain (not retained) events are not replayed.
    bus.publish(
        &Topic::Event(ServiceName::Watcher, bus_schema::EventKind::DeployDropped),
        Bytes::from_static(b"x"),
    )
    .await
    .unwrap();

    for round in 0..2 {
        // A second, later subscription (a "re-subscribe") gets the whole set again.
        let mut sub = bus.subscribe(&["iohub/#"]).await.unwrap();
        // Round 1 also gets round 0's retained plan.
        let expected = 1000 + round;
        let mut topics = std::collections::BTreeSet::new();
        while topics.len() < expected {
            let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(m.retain, "round {round}: {m:?}");
            assert!(topics.insert(m.topic.clone()), "duplicate {}", m.topic);
        }
        bus.publish(
            &Topic::Plan(ServiceName::Config),
            Bytes::from_static(b"live"),
        )
        .await
        .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.topic, "iohub/plan/config");
        if round == 0 {
            assert!(!m.retain);
        }
    }
    broker.shutdown(Duration::from_secs(1)).await;
}

/// The bound documented on `RouterLimits`: rumqttd keeps at most `segment_count` segments of
/// `segment_bytes` per filter and drops the oldest one whether or not a subscriber has read it.
/// A subscriber that stops reading therefore misses the oldest messages instead of the router
/// keeping all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_misses_old_messages_instead_of_the_router_keeping_them() {
    let limits = RouterLimits {
        segment_bytes: 1024,
        segment_count: 2,
        ..RouterLimits::default()
    };
    let broker = Broker::start(limits.clone()).unwrap();
    let bus = broker.bus();
    let mut lagging = bus.subscribe(&["lag/#"]).await.unwrap();
    // A separate filter (its own commit log) that tells when the router has taken everything.
    let mut probe = bus.subscribe(&["lag/end"]).await.unwrap();

    const N: usize = 20_000;
    let payload = Bytes::from(vec![b'x'; 100]);
    for i in 0..N {
        bus.publish_raw(&format!("lag/{i:06}"), payload.clone(), false)
            .await
            .unwrap();
    }
    bus.publish_raw("lag/end", Bytes::from_static(b"end"), false)
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), probe.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.topic, "lag/end");

    // Only now does the lagging subscriber read.
    let mut received = 0;
    let mut last = None;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), lagging.recv())
            .await
            .unwrap()
            .unwrap();
        if m.topic == "lag/end" {
            break;
        }
        received += 1;
        last = Some(m.topic);
    }
    // What the router had already handed to the link before parking it (its buffer of 200
    // notifications plus one read of `max_outgoing_packet_count`), plus what the commit log can
    // hold (rumqttd counts 4 bytes + topic + payload per message; a segment may overshoot by one
    // message).
    let per_message = 4 + "lag/000000".len() + payload.len();
    let link = 200 + limits.max_outgoing_packet_count as usize;
    let log = limits.segment_count * (limits.segment_bytes / per_message + 1);
    assert!(
        received <= link + log,
        "received {received} of {N}, bound {}",
        link + log
    );
    eprintln!("lagging subscriber received {received} of {N}");
    // The newest messages are the ones kept.
    assert_eq!(last, Some(format!("lag/{:06}", N - 1)));
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn router_segments_below_rumqttd_minimum_are_refused() {
    let limits = RouterLimits {
        segment_bytes: 512,
        ..RouterLimits::default()
    };
    assert!(matches!(
        Broker::start(limits),
        Err(broker::BrokerError::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_qos_they_were_published_with() {
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let bus = broker.bus();
    bus.publish_raw_qos("q/retained", Bytes::from_static(b"r"), 2, true)
        .await
        .unwrap();
    let mut sub = bus.subscribe(&["q/#"]).await.unwrap();
    let m = sub.recv().await.unwrap();
    assert_eq!((m.topic.as_str(), m.retain, m.qos), ("q/retained", true, 2));
    for qos in [0, 1, 2] {
        bus.publish_raw_qos(&format!("q/{qos}"), Bytes::from_static(b"x"), qos, false)
            .await
            .unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.topic, m.retain, m.qos), (format!("q/{qos}"), false, qos));
    }
    // In-process publishes count as QoS1.
    bus.publish_raw("q/service", Bytes::from_static(b"x"), false)
        .await
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.qos, 1);
    broker.shutdown(Duration::from_secs(1)).await;
}
