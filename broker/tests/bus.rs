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
        bus.publish(&topic, Bytes::from(format!("{i}"))).await.unwrap();
    }
    // Plain (not retained) events are not replayed.
    bus.publish(&Topic::Event(ServiceName::Watcher, bus_schema::EventKind::DeployDropped), Bytes::from_static(b"x")).await.unwrap();

    for round in 0..2 {
        // A second, later subscription (a "re-subscribe") gets the whole set again.
        let mut sub = bus.subscribe(&["iohub/#"]).await.unwrap();
        // Round 1 also gets round 0's retained plan.
        let expected = 1000 + round;
        let mut topics = std::collections::BTreeSet::new();
        while topics.len() < expected {
            let m = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await.unwrap().unwrap();
            assert!(m.retain, "round {round}: {m:?}");
            assert!(topics.insert(m.topic.clone()), "duplicate {}", m.topic);
        }
        bus.publish(&Topic::Plan(ServiceName::Config), Bytes::from_static(b"live")).await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await.unwrap().unwrap();
        assert_eq!(m.topic, "iohub/plan/config");
        if round == 0 {
            assert!(!m.retain);
        }
    }
    broker.shutdown(Duration::from_secs(1)).await;
}
