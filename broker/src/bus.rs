//! The typed, async in-process bus: the only way services reach the broker.
//!
//! # How the QoS of a publish travels
//!
//! The router only ever sees QoS0 publishes from one publisher link, and every subscription is a
//! QoS0 link: rumqttd's own QoS1 machinery (inflight windows, acks per link) buys nothing in
//! process. MQTT clients of the front end ([`crate::listener`]) still need the QoS a message was
//! *published* with, because a message is delivered at `min(publish QoS, granted QoS)`. So:
//! - a live publish carries its QoS as the user property `iohub-qos` of its (MQTT 5)
//!   publish properties, which rumqttd stores in its commit log next to the publish and hands
//!   back unchanged in every `Forward`; QoS0 publishes carry no properties at all;
//! - a retained message keeps its QoS in the [`RetainedStore`].
//!
//! [`Message::qos`] exposes it. Publishes made in process ([`Bus::publish`], [`Bus::publish_raw`])
//! count as QoS1: the in-process path cannot lose them, so MQTT subscribers get them at the QoS
//! they were granted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bus_schema::{BusError, ErrorCode, Reply, Request, ServiceName, Topic, Verb};
use bytes::Bytes;
use rumqttd::local::LinkRx;
use rumqttd::protocol::{
    Filter, Packet, Publish, PublishProperties, QoS, RetainForwardRule, Subscribe, Unsubscribe,
};
use rumqttd::Notification;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::feeder::{Feeder, LinkKey, Op};
use crate::retained::RetainedStore;

/// A message received from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// True when served from the retained store at subscribe time.
    pub retain: bool,
    /// The QoS the message was published with (0, 1 or 2); see the module docs.
    pub qos: u8,
}

impl Message {
    /// The typed control topic, if it is one.
    pub fn control_topic(&self) -> Option<Topic> {
        self.topic.parse().ok()
    }

    /// Decode the JSON payload; the error names the topic.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, BusError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            BusError::new(ErrorCode::BadPayload, format!("{}: {e}", self.topic))
                .with_field(self.topic.clone())
        })
    }
}

/// Errors of bus operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusClientError {
    #[error("the broker is shut down")]
    Closed,
    #[error("router link: {0}")]
    Link(String),
    #[error("payload encoding: {0}")]
    Encode(String),
    #[error("no reply on {0} within {1:?}")]
    Timeout(String, Duration),
    #[error("bad reply: {0}")]
    BadReply(String),
}

struct Inner {
    feeder: Feeder,
    retained: Mutex<RetainedStore>,
    next_key: AtomicU64,
    /// The link all publishes of this process go through (created lazily), so publish order is
    /// preserved across services.
    publisher: tokio::sync::OnceCell<LinkKey>,
    cancel: CancellationToken,
}

/// Handle to the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Bus {
    pub(crate) fn new(feeder: Feeder, cancel: CancellationToken) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                feeder,
                retained: Mutex::new(RetainedStore::default()),
                next_key: AtomicU64::new(1),
                publisher: tokio::sync::OnceCell::new(),
                cancel,
            }),
        }
    }

    /// Cancelled when the broker shuts down.
    pub fn closed(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub(crate) fn retained(&self) -> MutexGuard<'_, RetainedStore> {
        // The store is never left inconsistent by a panic (no user code runs under the lock).
        self.inner
            .retained
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Number of retained topics held.
    pub fn retained_count(&self) -> usize {
        self.retained().len()
    }

    fn next_key(&self) -> LinkKey {
        self.inner.next_key.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) async fn connect(
        &self,
        client_id: &str,
    ) -> Result<(LinkKey, LinkRx), BusClientError> {
        let key = self.next_key();
        let (reply, rx) = oneshot::channel();
        // rumqttd drops the older of two links with one client id (and refuses `+$#/`); make
        // each link's id unique.
        let client_id = format!("{client_id}.{key}");
        self.send(Op::Connect {
            key,
            client_id,
            reply,
        })
        .await?;
        let link_rx = rx
            .await
            .map_err(|_| BusClientError::Closed)?
            .map_err(BusClientError::Link)?;
        Ok((key, link_rx))
    }

    pub(crate) async fn send(&self, op: Op) -> Result<(), BusClientError> {
        self.inner
            .feeder
            .send(op)
            .await
            .map_err(|_| BusClientError::Closed)
    }

    pub(crate) fn drop_link(&self, key: LinkKey) {
        self.inner.feeder.try_send(Op::Drop { key });
    }

    async fn publisher(&self) -> Result<LinkKey, BusClientError> {
        self.inner
            .publisher
            .get_or_try_init(|| async {
                let (key, rx) = self.connect("iohub-publisher").await?;
                // The publisher subscribes to nothing; its receiver only gets acks. Drain it so
                // the router never parks on it.
                tokio::spawn(drain(rx));
                Ok(key)
            })
            .await
            .copied()
    }

    /// Publish raw bytes on any topic, as QoS1 (see the module docs). A retained publish updates
    /// the retained store first (an empty payload deletes the topic); the router only ever sees
    /// plain QoS0 publishes.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), BusClientError> {
        self.publish_raw_qos(topic, payload, 1, retain).await
    }

    /// [`Bus::publish_raw`] with the QoS the message was published with (an MQTT client's
    /// publish; values above 2 count as 2). Subscribers see it as [`Message::qos`]. Returns once
    /// the bus has accepted the message (it is queued, in order, for the router).
    pub async fn publish_raw_qos(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<(), BusClientError> {
        let qos = qos.min(2);
        let key = self.publisher().await?;
        if retain {
            self.retained().apply(topic, payload.clone(), qos);
        }
        // QoS0, not retained (the retained store above holds retained state).
        let publish = Publish::new(Bytes::copy_from_slice(topic.as_bytes()), payload, false);
        self.send(Op::Packet {
            key,
            packet: Packet::Publish(publish, qos_properties(qos)),
        })
        .await
    }

    /// Publish on a control topic; retained when the topic kind is retained.
    pub async fn publish(&self, topic: &Topic, payload: Bytes) -> Result<(), BusClientError> {
        self.publish_raw(&topic.to_string(), payload, topic.is_retained())
            .await
    }

    /// Publish a JSON payload on a control topic.
    pub async fn publish_json<T: Serialize>(
        &self,
        topic: &Topic,
        value: &T,
    ) -> Result<(), BusClientError> {
        let payload =
            serde_json::to_vec(value).map_err(|e| BusClientError::Encode(e.to_string()))?;
        self.publish(topic, payload.into()).await
    }

    /// Subscribe to filters. Every retained message matching them is delivered first (all of
    /// them, whatever their number), then live traffic.
    pub async fn subscribe(&self, filters: &[&str]) -> Result<Subscription, BusClientError> {
        self.subscribe_as("iohub-sub", filters).await
    }

    /// [`Bus::subscribe`] on a link whose router client id starts with `link_name` (which must
    /// not contain `+`, `$`, `#` or `/`).
    pub(crate) async fn subscribe_as(
        &self,
        link_name: &str,
        filters: &[&str],
    ) -> Result<Subscription, BusClientError> {
        let (key, rx) = self.connect(link_name).await?;
        let mut sub = Subscription {
            key,
            rx,
            pending: VecDeque::new(),
            needs_wake: false,
            bus: self.clone(),
        };
        for f in filters {
            sub.add(f).await?;
        }
        Ok(sub)
    }

    /// Send a command and wait for its reply.
    pub async fn request(
        &self,
        service: ServiceName,
        verb: Verb,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<Reply, BusClientError> {
        let id = format!("{:016x}", rand::random::<u64>());
        let reply_topic = Topic::reply("iohubd", &id)
            .ok_or_else(|| BusClientError::Encode("bad reply id".into()))?
            .to_string();
        let mut sub = self.subscribe(&[&reply_topic]).await?;
        let request = Request {
            id: id.clone(),
            reply_to: Some(reply_topic.clone()),
            body,
        };
        self.publish_json(&Topic::Cmd(service, verb), &request)
            .await?;
        let msg = tokio::time::timeout(timeout, sub.recv())
            .await
            .map_err(|_| BusClientError::Timeout(reply_topic, timeout))?
            .ok_or(BusClientError::Closed)?;
        serde_json::from_slice(&msg.payload).map_err(|e| BusClientError::BadReply(e.to_string()))
    }

    /// Answer a request on its `reply_to` topic. A `reply_to` that is not an
    /// `iohub/reply/<client>/<id>` topic is refused (clients cannot make services publish
    /// anywhere else).
    pub async fn reply(&self, request: &Request, reply: &Reply) -> Result<(), BusClientError> {
        let Some(to) = &request.reply_to else {
            return Ok(());
        };
        match to.parse::<Topic>() {
            Ok(topic @ Topic::Reply { .. }) => self.publish_json(&topic, reply).await,
            _ => {
                tracing::warn!(reply_to = %to, "refusing a reply_to outside iohub/reply/");
                Ok(())
            }
        }
    }
}

/// Name of the user property that carries a live publish's QoS through the router.
const QOS_PROPERTY: &str = "iohub-qos";

fn qos_properties(qos: u8) -> Option<PublishProperties> {
    (qos > 0).then(|| PublishProperties {
        user_properties: vec![(QOS_PROPERTY.to_string(), qos.to_string())],
        ..Default::default()
    })
}

fn qos_of(properties: Option<&PublishProperties>) -> u8 {
    properties
        .and_then(|p| p.user_properties.iter().find(|(k, _)| k == QOS_PROPERTY))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

async fn drain(mut rx: LinkRx) {
    loop {
        match rx.next().await {
            Ok(Some(Notification::Unschedule)) => {
                if rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A live subscription (one in-process link). Dropping it disconnects the link.
pub struct Subscription {
    key: LinkKey,
    rx: LinkRx,
    pending: VecDeque<Message>,
    /// The router parked the link (`Unschedule`) and has not been asked to resume it yet. Kept as
    /// a flag, not awaited in place, so that [`Subscription::recv`] stays cancel-safe.
    needs_wake: bool,
    bus: Bus,
}

impl Subscription {
    /// Add a filter: waits for the router's SUBACK, then queues every matching retained
    /// message ahead of any live message.
    ///
    /// Filters starting with `$` are refused: rumqttd disconnects a link that subscribes to one
    /// (and reads `$share/...` as a shared subscription).
    pub async fn add(&mut self, filter: &str) -> Result<(), BusClientError> {
        if filter.starts_with('$') {
            return Err(BusClientError::Link(format!(
                "{filter}: filters starting with `$` are not supported"
            )));
        }
        let subscribe = Subscribe {
            pkid: 1,
            filters: vec![Filter {
                path: filter.to_string(),
                qos: QoS::AtMostOnce,
                nolocal: false,
                preserve_retain: false,
                retain_forward_rule: RetainForwardRule::Never,
            }],
        };
        self.bus
            .send(Op::Packet {
                key: self.key,
                packet: Packet::Subscribe(subscribe, None),
            })
            .await?;
        let mut early = VecDeque::new();
        loop {
            match self.next_notification().await? {
                // rumqttd does not export its `Ack` type; its conversion to a packet tells.
                Some(n @ Notification::DeviceAck(_)) => {
                    if matches!(Option::<Packet>::from(n), Some(Packet::SubAck(..))) {
                        break;
                    }
                }
                Some(n) => {
                    if let Some(m) = self.handle(n)? {
                        early.push_back(m);
                    }
                }
                None => {}
            }
        }
        // Snapshot after the SUBACK: every publish the router will forward from now on was
        // applied to the store before it reached the router, so nothing is missed.
        let retained = self.bus.retained().matching(filter);
        self.pending
            .extend(retained.into_iter().map(|(topic, r)| Message {
                topic,
                payload: r.payload,
                retain: true,
                qos: r.qos,
            }));
        self.pending.extend(early);
        Ok(())
    }

    /// Remove a filter.
    pub async fn remove(&mut self, filter: &str) -> Result<(), BusClientError> {
        let unsubscribe = Unsubscribe {
            pkid: 1,
            filters: vec![filter.to_string()],
        };
        self.bus
            .send(Op::Packet {
                key: self.key,
                packet: Packet::Unsubscribe(unsubscribe, None),
            })
            .await
    }

    /// The next notification of the link, asking the router to resume the link first if it
    /// was parked. Cancel-safe: a cancelled wake is retried by the next call.
    async fn next_notification(&mut self) -> Result<Option<Notification>, BusClientError> {
        if self.needs_wake {
            self.rx.wake().await.map_err(|_| BusClientError::Closed)?;
            self.needs_wake = false;
        }
        self.rx.next().await.map_err(|_| BusClientError::Closed)
    }

    fn handle(&mut self, n: Notification) -> Result<Option<Message>, BusClientError> {
        match n {
            Notification::Forward(f) => Ok(Some(Message {
                topic: String::from_utf8_lossy(&f.publish.topic).into_owned(),
                payload: f.publish.payload,
                retain: false,
                qos: qos_of(f.properties.as_ref()),
            })),
            Notification::Unschedule => {
                // The router parked us because our buffer was full; ask to be rescheduled
                // before the next read.
                self.needs_wake = true;
                Ok(None)
            }
            Notification::Disconnect(..) => Err(BusClientError::Closed),
            _ => Ok(None),
        }
    }

    /// The next message; `None` once the broker is shut down.
    ///
    /// Cancel-safe: dropping the future before it completes loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        loop {
            match self.next_notification().await {
                Ok(Some(n)) => match self.handle(n) {
                    Ok(Some(m)) => return Some(m),
                    Ok(None) => {}
                    Err(_) => return None,
                },
                Ok(None) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.drop_link(self.key);
    }
}
