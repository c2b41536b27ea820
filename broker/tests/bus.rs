//! The in-process bus against the real router.

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

/// The bounds documented on `RouterLimits` and in `broker::router`: in-process publishers never
/// wait, so a subscription that stops reading keeps at most `max_queued_messages_hard`
/// deliveries; the rest is dropped, counted on the subscription and in the router's stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_loses_counted_messages_instead_of_the_router_keeping_them() {
    let limits = RouterLimits {
        max_queued_messages: 100,
        max_queued_messages_hard: 1000,
        ..RouterLimits::default()
    };
    let broker = Broker::start(limits).unwrap();
    let bus = broker.bus();
    let mut lagging = bus.subscribe(&["lag/#"]).await.unwrap();
    const N: usize = 20_000;
    let payload = Bytes::from(vec![b'x'; 100]);
    for qos in [0u8, 1] {
        for i in 0..N {
            bus.publish_raw_qos(&format!("lag/{qos}/{i:06}"), payload.clone(), qos, false)
                .await
                .unwrap();
        }
        let kept = 1000;
        let mut received = 0;
        let mut last = None;
        while let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(200), lagging.recv()).await
        {
            received += 1;
            last = Some(m.topic);
        }
        assert_eq!(received, kept, "qos {qos}");
        // The oldest messages are the ones kept (the queue is not rotated).
        assert_eq!(last, Some(format!("lag/{qos}/{:06}", kept - 1)));
    }
    let stats = bus.stats();
    assert_eq!(
        (stats.dropped_qos0, stats.dropped_qos1),
        ((N - 1000) as u64, (N - 1000) as u64)
    );
    assert_eq!(lagging.dropped(), (2 * N - 2000) as u64);
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn queue_bounds_that_cannot_work_are_refused() {
    for (soft, hard) in [(0, 10), (10, 5)] {
        let limits = RouterLimits {
            max_queued_messages: soft,
            max_queued_messages_hard: hard,
            ..RouterLimits::default()
        };
        assert!(matches!(
            Broker::start(limits),
            Err(broker::BrokerError::Config(_))
        ));
    }
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

/// The retained store's bounds (`RouterLimits::retained`): past `max_topics` or `max_bytes` a new
/// retained topic is delivered but not kept, and counted; replacing or deleting a kept topic
/// still works, and deleting frees room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_store_is_bounded_and_its_refusals_are_counted() {
    let limits = RouterLimits {
        retained: broker::RetainedLimits {
            max_topics: 10,
            max_bytes: 1 << 20,
        },
        ..RouterLimits::default()
    };
    let broker = Broker::start(limits).unwrap();
    let bus = broker.bus();
    let mut live = bus.subscribe(&["r/#"]).await.unwrap();
    for i in 0..15 {
        bus.publish_raw(&format!("r/{i:02}"), Bytes::from_static(b"v1"), true)
            .await
            .unwrap();
    }
    // Every publish was delivered live, kept or not.
    for _ in 0..15 {
        tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .unwrap()
            .unwrap();
    }
    let kept = |bus: &broker::Bus| bus.retained_snapshot(|t| t.starts_with("r/")).1;
    let names =
        |bus: &broker::Bus| -> Vec<String> { kept(bus).into_iter().map(|(t, _)| t).collect() };
    assert_eq!(
        names(&bus),
        (0..10).map(|i| format!("r/{i:02}")).collect::<Vec<_>>()
    );
    assert_eq!(bus.stats().retained_refused, 5);
    assert_eq!(bus.stats().retained, 10);

    // Replacing a kept topic works while full; deleting one makes room for a new one.
    bus.publish_raw("r/00", Bytes::from_static(b"v2"), true)
        .await
        .unwrap();
    assert_eq!(&kept(&bus)[0].1.payload[..], b"v2");
    bus.publish_raw("r/01", Bytes::new(), true).await.unwrap();
    bus.publish_raw("r/14", Bytes::from_static(b"v1"), true)
        .await
        .unwrap();
    assert!(names(&bus).contains(&"r/14".to_string()));
    assert!(!names(&bus).contains(&"r/01".to_string()));
    assert_eq!(bus.stats().retained_refused, 5);

    // The byte bound: a payload that would pass it is refused too.
    bus.publish_raw("r/15", Bytes::from(vec![b'x'; 2 << 20]), true)
        .await
        .unwrap();
    assert!(!names(&bus).contains(&"r/15".to_string()));
    assert_eq!(bus.stats().retained_refused, 6);
    broker.shutdown(Duration::from_secs(1)).await;
}
