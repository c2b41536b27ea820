//! The router: topic matching, fan-out into one bounded queue per subscription, and the retained
//! store, all under one lock so that every subscriber sees one global order and a new
//! subscription gets exactly the retained messages published before it and the live ones after.
//!
//! # Bounds and loss (per subscription queue)
//!
//! A queue is bounded twice, in messages and in bytes (a message's topic plus payload; a payload
//! shared by several queues is counted in each): it is *full past soft* when it holds `soft`
//! messages or `soft_bytes` bytes, *full past hard* at `hard` messages or when a delivery would
//! take it past `hard_bytes`.
//!
//! A delivery into a queue full past soft is queued and reported as *congestion*: the MQTT front
//! end then stops reading the publishing client's socket until the queue has drained to half of
//! both soft bounds (backpressure: a fast publisher and a slow subscriber lose nothing, at QoS0
//! as at QoS1; the publisher is slowed to the subscriber's pace, as TCP would). A publisher waits
//! at most its listener's `max_publish_wait` for one queue; when that expires the queue is marked
//! *stalled* (its subscriber is not reading) and no publisher waits for it again until it has
//! drained. A stalled queue drops QoS0 deliveries past soft; any queue drops every delivery past
//! hard. MQTT clients' queues also share one byte budget ([`crate::RouterLimits`]'s
//! `max_client_queued_bytes`): a delivery that would take it past its limit is dropped, so a
//! thousand stalled clients cannot pin a thousand times the per-queue bound. Every drop is counted
//! (router, subscription and, for MQTT clients, listener counters). The delivery QoS is
//! `min(publish QoS, highest QoS granted among the subscription's matching filters)`. In-process
//! publishers never wait. Retained replays at subscribe time are queued past the soft bounds (the
//! retained store is bounded itself) but not past the hard ones: the rest of a replay into a
//! queue full past hard is dropped and counted.
//!
//! # Bounds of the subscription tree
//!
//! Filters of MQTT clients are refused (the front end answers with the SUBACK failure code) when
//! they would take the tree past `max_client_filter_nodes` nodes or `max_client_filter_bytes`
//! bytes of level names; in-process subscriptions (iohub's own services) are never refused, and
//! counted in the same totals.

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
    pub(crate) filters_refused: AtomicU64,
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
    /// Bytes (topics and payloads) waiting in subscription queues.
    pub queued_bytes: u64,
    /// Of `queued_bytes`: in MQTT clients' queues, against `max_client_queued_bytes`.
    pub client_queued_bytes: u64,
    /// Nodes of the subscription tree, against `max_client_filter_nodes`.
    pub filter_nodes: u64,
    /// Bytes of the subscription tree's level names, against `max_client_filter_bytes`.
    pub filter_bytes: u64,
    /// Client filters refused because the tree was full.
    pub filters_refused: u64,
}

/// Bounds of one subscription queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueBounds {
    pub(crate) soft: usize,
    pub(crate) hard: usize,
    pub(crate) soft_bytes: usize,
    pub(crate) hard_bytes: usize,
}

/// Bytes shared by a set of queues (MQTT clients' queues), with their limit.
#[derive(Debug)]
pub(crate) struct Budget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// Take `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u + n <= self.limit).then_some(u + n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What a message costs in a queue's byte bounds.
fn cost(msg: &Message) -> usize {
    msg.topic.len() + msg.payload.len()
}

struct QueueInner {
    msgs: VecDeque<Message>,
    /// Sum of [`cost`] over `msgs`.
    bytes: usize,
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
    /// The byte budget this queue shares with others, if any.
    budget: Option<Arc<Budget>>,
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

    fn past_soft(&self, len: usize, bytes: usize) -> bool {
        len >= self.bounds.soft || bytes >= self.bounds.soft_bytes
    }

    fn past_hard(&self, len: usize, bytes: usize, cost: usize) -> bool {
        len >= self.bounds.hard || bytes + cost > self.bounds.hard_bytes
    }

    /// At or below half of both soft bounds: waiting publishers may go on.
    fn drained_at(&self, len: usize, bytes: usize) -> bool {
        len <= self.bounds.soft / 2 && bytes <= self.bounds.soft_bytes / 2
    }

    /// Queue `msg` unless the hard bounds or the budget refuse it (`false`). Under the lock.
    fn admit(&self, q: &mut QueueInner, msg: Message) -> bool {
        let cost = cost(&msg);
        if self.past_hard(q.msgs.len(), q.bytes, cost)
            || self.budget.as_ref().is_some_and(|b| !b.take(cost))
        {
            return false;
        }
        q.bytes += cost;
        q.msgs.push_back(msg);
        true
    }

    fn count_drop(&self, qos: u8, counters: &Counters) {
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
    }

    fn push(&self, msg: Message, qos: u8, counters: &Counters) -> Pushed {
        let mut q = self.lock();
        if q.closed {
            return Pushed::Dropped;
        }
        let stalled = self.stalled.load(Ordering::Relaxed);
        let admitted = !(qos == 0 && stalled && self.past_soft(q.msgs.len(), q.bytes))
            && self.admit(&mut q, msg);
        let congested = !stalled && self.past_soft(q.msgs.len(), q.bytes);
        drop(q);
        if !admitted {
            self.count_drop(qos, counters);
            return Pushed::Dropped;
        }
        counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.ready.notify_one();
        if congested {
            Pushed::Congested
        } else {
            Pushed::Queued
        }
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
                let cost = cost(&m);
                let was_drained = self.drained_at(q.msgs.len() + 1, q.bytes);
                q.bytes -= cost;
                let drained = self.drained_at(q.msgs.len(), q.bytes);
                drop(q);
                if let Some(b) = &self.budget {
                    b.give(cost);
                }
                if drained && !was_drained {
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
                if q.closed || self.drained_at(q.msgs.len(), q.bytes) {
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

    /// Close the queue; with `free`, also drop what it holds (its consumer is gone), else the
    /// consumer still receives it (broker shutdown).
    fn close(&self, free: bool) {
        let mut q = self.lock();
        q.closed = true;
        if free {
            q.msgs = VecDeque::new();
            let bytes = std::mem::take(&mut q.bytes);
            if let Some(b) = &self.budget {
                b.give(bytes);
            }
        }
        drop(q);
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    /// Messages and bytes queued.
    pub(crate) fn len(&self) -> (usize, usize) {
        let q = self.lock();
        (q.msgs.len(), q.bytes)
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

/// Why a client's filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeFull;

pub(crate) struct Router {
    state: Mutex<State>,
    pub(crate) counters: Counters,
    next_id: AtomicU64,
    retained_limits: RetainedLimits,
    /// Bounds of the tree for client filters.
    max_tree: tree::Size,
    /// The byte budget of MQTT clients' queues.
    pub(crate) client_budget: Arc<Budget>,
}

impl Router {
    pub(crate) fn new(limits: &crate::RouterLimits) -> Router {
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
            retained_limits: limits.retained,
            max_tree: tree::Size {
                nodes: limits.max_client_filter_nodes,
                bytes: limits.max_client_filter_bytes,
            },
            client_budget: Arc::new(Budget::new(limits.max_client_queued_bytes)),
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
        properties: Option<Arc<crate::bus::MessageProperties>>,
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
                properties: properties.clone(),
                publisher: own,
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
        budget: Option<Arc<Budget>>,
    ) -> (u64, Arc<Queue>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue {
            inner: Mutex::new(QueueInner {
                msgs: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            bounds,
            dropped: AtomicU64::new(0),
            stalled: std::sync::atomic::AtomicBool::new(false),
            drop_counter,
            budget,
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
    /// already queued (up to the queue's hard bounds); live messages through the filter follow
    /// them (unless `replay` is false). With `bounded` (a client's filter), a filter that would
    /// take the tree past its bounds is refused.
    pub(crate) fn add(
        &self,
        id: u64,
        filter: &str,
        qos: u8,
        checked: bool,
        bounded: bool,
        replay: bool,
    ) -> Result<(), TreeFull> {
        let mut st = self.lock();
        let State {
            retained,
            subs,
            tree,
            ..
        } = &mut *st;
        let Some(entry) = subs.get_mut(&id) else {
            return Ok(());
        };
        if bounded {
            let (now, more) = (tree.size(), tree.growth(filter));
            if now.nodes + more.nodes > self.max_tree.nodes
                || now.bytes + more.bytes > self.max_tree.bytes
            {
                self.counters
                    .filters_refused
                    .fetch_add(1, Ordering::Relaxed);
                return Err(TreeFull);
            }
        }
        if !entry.filters.iter().any(|f| f == filter) {
            entry.filters.push(filter.to_string());
        }
        tree.insert(filter, Grant { id, qos, checked });
        if !replay {
            return Ok(());
        }
        let acl = entry.acl.clone();
        let queue = &entry.queue;
        let mut q = queue.lock();
        for (topic, r) in retained.matching(filter) {
            if checked && acl.as_ref().is_some_and(|acl| !acl.may_receive(&topic)) {
                continue;
            }
            let msg = Message {
                topic,
                payload: r.payload,
                retain: true,
                qos: r.qos,
                properties: None,
                publisher: None,
            };
            if !queue.admit(&mut q, msg) {
                queue.count_drop(r.qos, &self.counters);
            }
        }
        drop(q);
        queue.ready.notify_one();
        Ok(())
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
            entry.queue.close(true);
        }
    }

    /// Close every subscription (broker shutdown).
    pub(crate) fn close_all(&self) {
        let mut st = self.lock();
        st.tree = Tree::default();
        let subs: Vec<Entry> = st.subs.drain().map(|(_, e)| e).collect();
        drop(st);
        for e in subs {
            e.queue.close(false);
        }
    }

    pub(crate) fn stats(&self) -> RouterStats {
        let st = self.lock();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        let (queued, queued_bytes) = st.subs.values().fold((0, 0), |(n, b), e| {
            let (len, bytes) = e.queue.len();
            (n + len as u64, b + bytes as u64)
        });
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
            queued,
            queued_bytes,
            client_queued_bytes: self.client_budget.used() as u64,
            filter_nodes: st.tree.size().nodes as u64,
            filter_bytes: st.tree.size().bytes as u64,
            filters_refused: get(&c.filters_refused),
        }
    }

    pub(crate) fn with_retained<R>(&self, f: impl FnOnce(&RetainedStore, u64) -> R) -> R {
        let st = self.lock();
        f(&st.retained, st.retained_generation)
    }
}
