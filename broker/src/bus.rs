//! The typed, async in-process bus: the only way services reach the broker.
//!
//! Every publish (in process or from an MQTT client of the front end) goes through the
//! [`crate::router`]: topic matching, one bounded queue per subscription, the retained store.
//! A message keeps the QoS it was published with ([`Message::qos`]), so MQTT clients get
//! `min(publish QoS, granted QoS)`. Publishes made in process ([`Bus::publish`],
//! [`Bus::publish_raw`]) count as QoS1: the in-process path cannot lose them (short of a
//! subscription's hard bound), so MQTT subscribers get them at the QoS they were granted.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::{BusError, ErrorCode, Reply, Request, ServiceName, Topic, Verb};
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::retained::Retained;
use crate::router::{Queue, QueueBounds, Router, RouterStats};
use crate::{Acl, RouterLimits};

/// A message received from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// True when served from the retained store at subscribe time.
    pub retain: bool,
    /// The QoS the message was published with (0, 1 or 2); see the module docs.
    pub qos: u8,
    /// MQTT 5 application properties, when the publisher set any (a pointer, so that a queued
    /// message without them costs 8 bytes more).
    pub properties: Option<Arc<MessageProperties>>,
    /// The router subscription of the MQTT client that published it, if any (MQTT 5
    /// "no local" is decided at delivery with it).
    pub publisher: Option<u64>,
}

/// What an MQTT 5 publisher may attach to a message and the broker forwards unchanged
/// (MQTT 5.0 §3.3.2.3): every field is carried from the publisher to each subscriber that speaks
/// MQTT 5; MQTT 3.1.1 subscribers get the topic and payload only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
    /// When the message expires (MQTT 5 message expiry interval from its arrival): it is not
    /// delivered after that, and a delivery before carries the time left.
    pub expires_at: Option<tokio::time::Instant>,
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

/// A bus operation that failed is the bus being unavailable to the caller: every service reports
/// it the same way (one conversion instead of one per service).
impl From<BusClientError> for BusError {
    fn from(e: BusClientError) -> BusError {
        BusError::new(ErrorCode::Unavailable, format!("bus: {e}"))
    }
}

/// What a front end registers with its name: its counters, of a type only the front end knows.
pub(crate) type FrontEndInfo = Arc<dyn Any + Send + Sync>;

struct Inner {
    router: Router,
    limits: RouterLimits,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The attached front ends, by name.
    front_ends: Mutex<HashMap<String, FrontEndInfo>>,
}

/// Handle to the bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// A front end attached to the bus under a unique name (the MQTT front end attaches one per
/// listener), with its counters (see [`Bus::attach`]). Dropping it cancels its token, which stops
/// whatever the front end runs under it, and detaches the name.
pub(crate) struct FrontEnd {
    name: String,
    cancel: CancellationToken,
    bus: Bus,
}

impl FrontEnd {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Cancelled when this front end is dropped or the broker shuts down.
    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for FrontEnd {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.bus.front_ends().remove(&self.name);
    }
}

impl Bus {
    pub(crate) fn new(limits: RouterLimits, cancel: CancellationToken) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                router: Router::new(&limits),
                limits,
                cancel,
                tasks: TaskTracker::new(),
                front_ends: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Cancelled when the broker shuts down.
    pub fn closed(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    fn front_ends(&self) -> std::sync::MutexGuard<'_, HashMap<String, FrontEndInfo>> {
        // No code that can panic runs under this lock.
        self.inner
            .front_ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Attach a front end named `name` with its counters `info`; `None` when an attached front
    /// end already has that name.
    pub(crate) fn attach(&self, name: &str, info: FrontEndInfo) -> Option<FrontEnd> {
        let mut front_ends = self.front_ends();
        if front_ends.contains_key(name) {
            return None;
        }
        front_ends.insert(name.to_string(), info);
        drop(front_ends);
        Some(FrontEnd {
            name: name.to_string(),
            cancel: self.inner.cancel.child_token(),
            bus: self.clone(),
        })
    }

    /// The counters of the attached front end named `name`.
    pub(crate) fn front_end(&self, name: &str) -> Option<FrontEndInfo> {
        self.front_ends().get(name).cloned()
    }

    /// Names and counters of every attached front end, by name.
    pub(crate) fn all_front_ends(&self) -> Vec<(String, FrontEndInfo)> {
        let mut all: Vec<_> = self
            .front_ends()
            .iter()
            .map(|(n, i)| (n.clone(), i.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Counters of the router (messages, drops, subscriptions, retained store).
    pub fn stats(&self) -> RouterStats {
        self.inner.router.stats()
    }

    /// Number of retained topics held.
    pub fn retained_count(&self) -> usize {
        self.inner.router.with_retained(|r, _| r.len())
    }

    /// Changes whenever the retained store changes (for debounced snapshots).
    pub fn retained_generation(&self) -> u64 {
        self.inner.router.with_retained(|_, g| g)
    }

    /// The retained messages whose topic satisfies `keep`, in topic order, with the store's
    /// generation.
    pub fn retained_snapshot(&self, keep: impl Fn(&str) -> bool) -> (u64, Vec<(String, Retained)>) {
        self.inner.router.with_retained(|r, g| {
            let entries = r
                .iter()
                .filter(|(t, _)| keep(t))
                .map(|(t, r)| (t.clone(), r.clone()))
                .collect();
            (g, entries)
        })
    }

    /// Publish raw bytes on any topic, as QoS1 (see the module docs). A retained publish updates
    /// the retained store (an empty payload deletes the topic) and is delivered live with
    /// RETAIN=0.
    pub async fn publish_raw(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
    ) -> Result<(), BusClientError> {
        self.publish_raw_qos(topic, payload, 1, retain).await
    }

    /// [`Bus::publish_raw`] with the QoS the message was published with (values above 2 count
    /// as 2). Subscribers see it as [`Message::qos`]. In-process publishers never wait: a
    /// congested subscription queues up to its hard bound.
    pub async fn publish_raw_qos(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
    ) -> Result<(), BusClientError> {
        if self.inner.cancel.is_cancelled() {
            return Err(BusClientError::Closed);
        }
        self.inner
            .router
            .publish(topic, payload, qos.min(2), retain, None, None);
        Ok(())
    }

    /// A publish from an MQTT client whose own subscription (if any) is `own`: returns the
    /// queues it congested (see [`crate::router`]).
    pub(crate) fn publish_from(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
        own: Option<u64>,
        properties: Option<Arc<MessageProperties>>,
    ) -> Result<Vec<Arc<Queue>>, BusClientError> {
        if self.inner.cancel.is_cancelled() {
            return Err(BusClientError::Closed);
        }
        Ok(self
            .inner
            .router
            .publish(topic, payload, qos.min(2), retain, own, properties))
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
        let limits = &self.inner.limits;
        let bounds = QueueBounds {
            soft: limits.max_queued_messages,
            hard: limits.max_queued_messages_hard,
            soft_bytes: limits.max_queued_bytes,
            hard_bytes: limits.max_queued_bytes_hard,
        };
        let mut sub = self.open(bounds, None, None, false)?;
        for f in filters {
            sub.add(f).await?;
        }
        Ok(sub)
    }

    /// A subscription without filters, with its own bounds, ACL (for filters added as checked)
    /// and an extra drop counter. A `client` subscription (an MQTT client's) shares the clients'
    /// byte budget and its filters are bounded by the tree's (see [`crate::router`]).
    pub(crate) fn open(
        &self,
        bounds: QueueBounds,
        acl: Option<Arc<Acl>>,
        drop_counter: Option<Arc<AtomicU64>>,
        client: bool,
    ) -> Result<Subscription, BusClientError> {
        if self.inner.cancel.is_cancelled() {
            return Err(BusClientError::Closed);
        }
        let router = &self.inner.router;
        let budget = client.then(|| router.client_budget.clone());
        let (id, queue) = router.open(bounds, acl, drop_counter, budget);
        Ok(Subscription {
            id,
            queue,
            client,
            bus: self.clone(),
        })
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

    pub(crate) fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.router.close_all();
    }
}

/// A live subscription: a bounded queue in the router. Dropping it removes it.
pub struct Subscription {
    id: u64,
    queue: Arc<Queue>,
    /// An MQTT client's (see [`Bus::open`]).
    client: bool,
    bus: Bus,
}

impl Subscription {
    /// Add a filter (granted QoS1): every matching retained message is queued ahead of live
    /// messages through it.
    ///
    /// Filters starting with `$` are refused.
    pub async fn add(&mut self, filter: &str) -> Result<(), BusClientError> {
        if filter.starts_with('$') {
            return Err(BusClientError::Link(format!(
                "{filter}: filters starting with `$` are not supported"
            )));
        }
        if !crate::filter::valid_filter(filter) {
            return Err(BusClientError::Link(format!(
                "{filter}: not a valid filter"
            )));
        }
        // In-process subscriptions are never refused by the tree's bounds.
        let _ = self.add_granted(filter, 1, false, true);
        Ok(())
    }

    /// Add a filter with its granted QoS; `checked` deliveries go through the subscription's
    /// ACL (see [`Acl::needs_delivery_check`]). A client subscription's filter is refused when
    /// the subscription tree is full. Without `replay`, no retained message is queued (a
    /// persistent session's filters restored at start).
    pub(crate) fn add_granted(
        &mut self,
        filter: &str,
        qos: u8,
        checked: bool,
        replay: bool,
    ) -> Result<(), crate::router::TreeFull> {
        self.bus
            .router()
            .add(self.id, filter, qos, checked, self.client, replay)
    }

    /// Remove a filter (messages already queued through it are still received).
    pub async fn remove(&mut self, filter: &str) -> Result<(), BusClientError> {
        self.bus.router().remove(self.id, filter);
        Ok(())
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Messages dropped from this subscription's queue.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// The next message; `None` once the broker is shut down.
    ///
    /// Cancel-safe: dropping the future before it completes loses no message.
    pub async fn recv(&mut self) -> Option<Message> {
        self.queue.pop().await
    }

    /// The next message if one is already queued (never waits).
    pub fn try_recv(&mut self) -> Option<Message> {
        self.queue.try_pop().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.router().close(self.id);
    }
}
