//! The router: topic matching, fan-out into one bounded queue per subscription, and the retained
//! store, all under one lock so that every subscriber sees one global order and a new
//! subscription gets exactly the retained messages published before it and the live ones after.
//!
//! # Bounds and loss (per subscription queue)
//!
//! A delivery into a queue holding `soft` or more messages is queued and reported as
//! *congestion*: the MQTT front end then stops reading the publishing client's socket until the
//! queue has drained to `soft / 2` (backpressure: a fast publisher and a slow subscriber lose
//! nothing, at QoS0 as at QoS1; the publisher is slowed to the subscriber's pace, as TCP would).
//! A publisher waits at most its listener's `max_publish_wait` for one queue; when that expires
//! the queue is marked *stalled* (its subscriber is not reading) and no publisher waits for it
//! again until it has drained to `soft / 2`. A stalled queue drops QoS0 deliveries past `soft`;
//! any queue drops every delivery past `hard`. Every drop is counted (router, subscription and,
//! for MQTT clients, listener counters). The delivery QoS is `min(publish QoS, highest QoS
//! granted among the subscription's matching filters)`. In-process publishers never wait. Retained
//! replays at subscribe time are queued regardless of the bounds (the retained store is bounded
//! itself).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::retained::RetainedStore;
use crate::Acl;
use crate::Message;

mod tree;

use tree::{Grant, Tree};

/// Router-wide counters (see [`RouterStats`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped_qos0: AtomicU64,
    pub(crate) dropped_qos1: AtomicU64,
    pub(crate) retained_refused: AtomicU64,
}

/// A reading of the router's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouterStats {
    /// Messages published (in process and by MQTT clients).
    pub published: u64,
    /// Messages queued to subscriptions.
    pub delivered: u64,
    /// QoS0 deliveries dropped at a full (or stalled) subscription queue.
    pub dropped_qos0: u64,
    /// QoS1 deliveries dropped at a subscription queue's hard bound.
    pub dropped_qos1: u64,
    /// Retained publishes not stored because the retained store was full (still delivered).
    pub retained_refused: u64,
    /// Live subscriptions (in-process links and MQTT clients with at least one filter).
    pub subscriptions: u64,
    /// Filters across all subscriptions.
    pub filters: u64,
    /// Retained topics held.
    pub retained: u64,
    /// Bytes of retained topics and payloads held.
    pub retained_bytes: u64,
    /// Messages waiting in subscription queues.
    pub queued: u64,
}

/// Bounds of one subscription queue (messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueBounds {
    pub(crate) soft: usize,
    pub(crate) hard: usize,
}

struct QueueInner {
    msgs: VecDeque<Message>,
    closed: bool,
}

/// The queue of one subscription; shared between the router (producer) and the
/// [`crate::Subscription`] (the only consumer).
pub(crate) struct Queue {
    inner: Mutex<QueueInner>,
    /// Wakes the consumer.
    ready: Notify,
    /// Wakes producers waiting for the queue to drain to the low watermark.
    drained: Notify,
    bounds: QueueBounds,
    dropped: AtomicU64,
    /// A publisher's wait for this queue expired; cleared when it drains to the low watermark.
    stalled: std::sync::atomic::AtomicBool,
    /// An extra counter of drops (the listener's), if any.
    drop_counter: Option<Arc<AtomicU64>>,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Queued,
    /// Queued, and the queue is at or past its soft bound (QoS1 only).
    Congested,
    Dropped,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, msg: Message, qos: u8, counters: &Counters) -> Pushed {
        let mut q = self.lock();
        if q.closed {
            return Pushed::Dropped;
        }
        let len = q.msgs.len();
        let stalled = self.stalled.load(Ordering::Relaxed);
        let full = len >= self.bounds.hard || (qos == 0 && stalled && len >= self.bounds.soft);
        if full {
            drop(q);
            let counter = if qos == 0 {
                &counters.dropped_qos0
            } else {
                &counters.dropped_qos1
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = &self.drop_counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            return Pushed::Dropped;
        }
        q.msgs.push_back(msg);
        drop(q);
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.ready.notify_one();
        if !stalled && len + 1 >= self.bounds.soft {
            Pushed::Congested
        } else {
            Pushed::Queued
        }
    }

    fn low_watermark(&self) -> usize {
        self.bounds.soft / 2
    }

    /// The next message, or `None` when closed. Cancel-safe.
    pub(crate) async fn pop(&self) -> Option<Message> {
        loop {
            let notified = self.ready.notified();
            match self.try_pop() {
                Ok(m) => return Some(m),
                Err(true) => return None,
                Err(false) => notified.await,
            }
        }
    }

    /// The next message if one is queued; `Err(closed)` otherwise.
    pub(crate) fn try_pop(&self) -> Result<Message, bool> {
        let mut q = self.lock();
        match q.msgs.pop_front() {
            Some(m) => {
                let len = q.msgs.len();
                drop(q);
                if len == self.low_watermark() {
                    self.stalled.store(false, Ordering::Relaxed);
                    self.drained.notify_waiters();
                }
                Ok(m)
            }
            None => Err(q.closed),
        }
    }

    /// Wait until the queue holds at most the low watermark (or is closed). Cancel-safe.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.lock();
                if q.closed || q.msgs.len() <= self.low_watermark() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// A publisher gave up waiting for this queue: see the module docs.
    pub(crate) fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().msgs.len()
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Entry {
    queue: Arc<Queue>,
    /// Its filters (their grants are in the tree).
    filters: Vec<String>,
    acl: Option<Arc<Acl>>,
}

impl Entry {
    /// The highest QoS granted among `grants` (this subscription's grants on the filters that
    /// match `topic`) that may deliver it, if any.
    fn granted(&self, topic: &str, grants: &[Grant]) -> Option<u8> {
        let mut receivable = None;
        let mut granted: Option<u8> = None;
        for g in grants {
            if g.checked {
                let ok = *receivable.get_or_insert_with(|| {
                    self.acl.as_ref().is_none_or(|acl| acl.may_receive(topic))
                });
                if !ok {
                    continue;
                }
            }
            granted = Some(granted.map_or(g.qos, |q| q.max(g.qos)));
        }
        granted
    }
}

struct State {
    retained: RetainedStore,
    /// Bumped by every change of the retained store.
    retained_generation: u64,
    subs: HashMap<u64, Entry>,
    /// Every subscription's filters, indexed for matching.
    tree: Tree,
    /// Scratch space of `publish` (the grants matching one topic), kept to save an allocation.
    hits: Vec<Grant>,
}

/// Limits of the retained store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedLimits {
    pub max_topics: usize,
    pub max_bytes: usize,
}

pub(crate) struct Router {
    state: Mutex<State>,
    pub(crate) counters: Counters,
    next_id: AtomicU64,
    retained_limits: RetainedLimits,
}

impl Router {
    pub(crate) fn new(retained_limits: RetainedLimits) -> Router {
        Router {
            state: Mutex::new(State {
                retained: RetainedStore::default(),
                retained_generation: 0,
                subs: HashMap::new(),
                tree: Tree::default(),
                hits: Vec::new(),
            }),
            counters: Counters::default(),
            next_id: AtomicU64::new(1),
            retained_limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Route one publish. Returns the queues that are congested by it (QoS1 deliveries at or
    /// past their soft bound), except `own` (a client is never made to wait for itself).
    pub(crate) fn publish(
        &self,
        topic: &str,
        payload: Bytes,
        qos: u8,
        retain: bool,
        own: Option<u64>,
    ) -> Vec<Arc<Queue>> {
        let mut congested = Vec::new();
        let mut st = self.lock();
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        if retain {
            let limits = self.retained_limits;
            let fits = payload.is_empty()
                || st.retained.get(topic).is_some()
                    && st.retained.bytes() + payload.len() <= limits.max_bytes
                || st.retained.len() < limits.max_topics
                    && st.retained.bytes() + topic.len() + payload.len() <= limits.max_bytes;
            if fits {
                st.retained.apply(topic, payload.clone(), qos);
                st.retained_generation += 1;
            } else {
                let before = self
                    .counters
                    .retained_refused
                    .fetch_add(1, Ordering::Relaxed);
                // One warning per 1,000 refusals: a publisher looping on new topics must not
                // flood the log (the count is in the broker state).
                if before.is_multiple_of(1000) {
                    tracing::warn!(%topic, refused_total = before + 1, "retained store full: message delivered but not retained");
                }
            }
        }
        let State {
            subs, tree, hits, ..
        } = &mut *st;
        hits.clear();
        tree.matching(topic, hits);
        // One delivery per subscription, whatever the number of its filters that match.
        hits.sort_unstable_by_key(|g| g.id);
        for grants in hits.chunk_by(|a, b| a.id == b.id) {
            let id = grants[0].id;
            let Some(entry) = subs.get(&id) else {
                continue;
            };
            let Some(granted) = entry.granted(topic, grants) else {
                continue;
            };
            let msg = Message {
                topic: topic.to_string(),
                payload: payload.clone(),
                retain: false,
                qos,
            };
            let pushed = entry.queue.push(msg, qos.min(granted), &self.counters);
            if pushed == Pushed::Congested && own != Some(id) {
                congested.push(entry.queue.clone());
            }
        }
        congested
    }

    /// A new subscription without filters.
    pub(crate) fn open(
        &self,
        bounds: QueueBounds,
        acl: Option<Arc<Acl>>,
        drop_counter: Option<Arc<AtomicU64>>,
    ) -> (u64, Arc<Queue>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                msgs: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            bounds,
            dropped: AtomicU64::new(0),
            stalled: std::sync::atomic::AtomicBool::new(false),
            drop_counter,
        });
        self.lock().subs.insert(
            id,
            Entry {
                queue: queue.clone(),
                filters: Vec::new(),
                acl,
            },
        );
        (id, queue)
    }

    /// Add (or re-grant) a filter and queue every matching retained message behind what is
    /// already queued; live messages through the filter follow them.
    pub(crate) fn add(&self, id: u64, filter: &str, qos: u8, checked: bool) {
        let mut st = self.lock();
        let State {
            retained,
            subs,
            tree,
            ..
        } = &mut *st;
        let Some(entry) = subs.get_mut(&id) else {
            return;
        };
        if !entry.filters.iter().any(|f| f == filter) {
            entry.filters.push(filter.to_string());
        }
        tree.insert(filter, Grant { id, qos, checked });
        let acl = entry.acl.clone();
        let mut q = entry.queue.lock();
        for (topic, r) in retained.matching(filter) {
            if checked && acl.as_ref().is_some_and(|acl| !acl.may_receive(&topic)) {
                continue;
            }
            q.msgs.push_back(Message {
                topic,
                payload: r.payload,
                retain: true,
                qos: r.qos,
            });
        }
        drop(q);
        entry.queue.ready.notify_one();
    }

    pub(crate) fn remove(&self, id: u64, filter: &str) {
        let mut st = self.lock();
        if let Some(entry) = st.subs.get_mut(&id) {
            entry.filters.retain(|f| f != filter);
            st.tree.remove(filter, id);
        }
    }

    pub(crate) fn close(&self, id: u64) {
        let mut st = self.lock();
        let entry = st.subs.remove(&id);
        if let Some(entry) = &entry {
            for f in &entry.filters {
                st.tree.remove(f, id);
            }
        }
        drop(st);
        if let Some(entry) = entry {
            entry.queue.close();
        }
    }

    /// Close every subscription (broker shutdown).
    pub(crate) fn close_all(&self) {
        let mut st = self.lock();
        st.tree = Tree::default();
        let subs: Vec<Entry> = st.subs.drain().map(|(_, e)| e).collect();
        drop(st);
        for e in subs {
            e.queue.close();
        }
    }

    pub(crate) fn stats(&self) -> RouterStats {
        let st = self.lock();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        RouterStats {
            published: get(&c.published),
            delivered: get(&c.delivered),
            dropped_qos0: get(&c.dropped_qos0),
            dropped_qos1: get(&c.dropped_qos1),
            retained_refused: get(&c.retained_refused),
            subscriptions: st.subs.values().filter(|e| !e.filters.is_empty()).count() as u64,
            filters: st.subs.values().map(|e| e.filters.len() as u64).sum(),
            retained: st.retained.len() as u64,
            retained_bytes: st.retained.bytes() as u64,
            queued: st.subs.values().map(|e| e.queue.len() as u64).sum(),
        }
    }

    pub(crate) fn with_retained<R>(&self, f: impl FnOnce(&RetainedStore, u64) -> R) -> R {
        let st = self.lock();
        f(&st.retained, st.retained_generation)
    }
}
