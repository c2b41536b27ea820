//! Helpers shared by the broker's integration tests (each test binary uses part of them).
#![allow(dead_code)]

use std::time::Duration;

use broker::ControlCredentials;
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubAck,
    SubscribeFilter,
};

/// The bound of every wait: a bug fails a test instead of hanging it.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// The control listener's login in these tests.
pub(crate) fn credentials() -> ControlCredentials {
    ControlCredentials {
        username: "iohubctl".into(),
        password: "correct horse".into(),
    }
}

/// A real MQTT client (rumqttc) driven packet by packet.
pub(crate) struct Client {
    pub(crate) client: AsyncClient,
    pub(crate) events: EventLoop,
}

impl Client {
    pub(crate) async fn connect(options: MqttOptions) -> Client {
        let (client, events) = AsyncClient::new(options, 100);
        let mut c = Client { client, events };
        match c.next().await {
            Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    /// The next packet from the broker.
    pub(crate) async fn next(&mut self) -> Packet {
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

    pub(crate) async fn publish(&mut self) -> Publish {
        loop {
            match self.next().await {
                Packet::Publish(p) => return p,
                Packet::PingResp | Packet::PubAck(_) | Packet::PubRel(_) => {}
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// Subscribe and return the SUBACK, which must come before any message.
    pub(crate) async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> SubAck {
        let filters = filters
            .iter()
            .map(|(f, q)| SubscribeFilter::new(f.to_string(), *q));
        self.client
            .subscribe_many(filters)
            .await
            .expect("subscribe");
        match self.next().await {
            Packet::SubAck(ack) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub(crate) async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.expect("unsubscribe");
        loop {
            match self.next().await {
                Packet::UnsubAck(_) => return,
                Packet::Publish(_) | Packet::PingResp => {}
                other => panic!("expected UNSUBACK, got {other:?}"),
            }
        }
    }

    /// Publish and wait for the broker's acknowledgement (QoS1: PUBACK, QoS2: PUBCOMP).
    pub(crate) async fn publish_acked(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
    ) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .expect("publish");
        if qos == QoS::AtMostOnce {
            // Drive the event loop until the packet is on the wire.
            loop {
                let event = tokio::time::timeout(STEP, self.events.poll())
                    .await
                    .expect("no event in time")
                    .expect("connection failed");
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Publish(_))) {
                    return;
                }
            }
        }
        loop {
            match self.next().await {
                Packet::PubAck(_) if qos == QoS::AtLeastOnce => return,
                Packet::PubComp(_) if qos == QoS::ExactlyOnce => return,
                Packet::PubRec(_) | Packet::PingResp => {}
                other => panic!("expected an acknowledgement, got {other:?}"),
            }
        }
    }

    /// The connection is closed by the broker.
    pub(crate) async fn closed(&mut self) {
        loop {
            match tokio::time::timeout(STEP, self.events.poll())
                .await
                .expect("still connected")
            {
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }
}
