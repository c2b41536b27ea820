//! [`Link`]: one remote broker, its maps and its queue. Local messages are mapped and put in the
//! queue ([`Link::offer`], durable when it returns); [`Link::run`] keeps a connection to the
//! remote and replays the queue through it, QoS1, a window of `max_inflight` publishes at a
//! time, and removes a record only on the remote's PUBACK. Messages of the in maps come back
//! from the remote to [`Inbound`], acknowledged to the remote once handed over. Latest values
//! ([`Link::mirror`]: the box's state) are not queued: the newest value of each topic is
//! published retained at every connection and whenever it changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge_queue::{Appended, NewRecord, Writer};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, EventLoop, Incoming, Outgoing, QoS};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::map::{Direction, Maps};
use crate::remote::Remote;
use crate::Error;

/// How long a connection may take to be answered by a CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The flight entry of a mirrored value: no queue record to acknowledge.
const MIRRORED: u64 = u64::MAX;

/// The link's view of its remote, published on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    /// When the link last connected or lost its connection (ms since the epoch).
    pub since_ms: u64,
    /// The node connected to (or last tried).
    pub address: Option<String>,
    pub connects: u64,
    pub failures: u64,
    /// Records the remote acknowledged (PUBACK).
    pub published: u64,
    /// Mirrored values the remote acknowledged.
    pub mirrored: u64,
    /// Messages of the in maps handed to the local side.
    pub received: u64,
    pub last_error: Option<String>,
}

/// A message from the remote, mapped to its local topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// One remote broker, its maps and its queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    remote: Remote,
    maps: Maps,
    queue: Writer,
    inbound: Option<mpsc::Sender<Inbound>>,
    state: watch::Sender<LinkState>,
    mirror: Arc<Mirror>,
}

/// The latest value of each mirrored remote topic, and which ones the remote has not got yet.
#[derive(Debug, Default)]
struct Mirror {
    values: Mutex<BTreeMap<String, (Vec<u8>, bool)>>,
    changed: Notify,
}

impl Mirror {
    /// The values not sent yet, marked sent.
    fn take_unsent(&self) -> Vec<(String, Vec<u8>)> {
        let mut values = self.values.lock().expect("mirror lock");
        values
            .iter_mut()
            .filter(|(_, (_, unsent))| *unsent)
            .map(|(topic, (payload, unsent))| {
                *unsent = false;
                (topic.clone(), payload.clone())
            })
            .collect()
    }

    /// At a new connection every value is sent again (the remote may have restarted empty).
    fn mark_all_unsent(&self) {
        for (_, unsent) in self.values.lock().expect("mirror lock").values_mut() {
            *unsent = true;
        }
    }
}

/// How a session with one node ended.
enum End {
    Cancelled,
    /// It never got a CONNACK.
    Refused(String),
    /// It was connected and lost the connection.
    Lost(String),
}

impl Link {
    /// A link to `remote` carrying `maps`, queueing in `queue`; what the in maps bring goes to
    /// `inbound`.
    pub fn new(
        remote: Remote,
        maps: Maps,
        queue: Writer,
        inbound: Option<mpsc::Sender<Inbound>>,
    ) -> Link {
        Link {
            remote,
            maps,
            queue,
            inbound,
            state: watch::Sender::new(LinkState::default()),
            mirror: Arc::default(),
        }
    }

    /// Keep the remote's retained `topic` at `payload` (latest value, not queued): sent at every
    /// connection and whenever it changes.
    pub fn mirror(&self, topic: String, payload: Vec<u8>) {
        let mut values = self.mirror.values.lock().expect("mirror lock");
        if values.get(&topic).is_some_and(|(p, _)| *p == payload) {
            return;
        }
        values.insert(topic, (payload, true));
        drop(values);
        self.mirror.changed.notify_one();
    }

    /// The link's state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// The queue of this link.
    pub fn queue(&self) -> &Writer {
        &self.queue
    }

    /// The local filters the out maps carry (what to subscribe to locally).
    pub fn local_filters(&self) -> Vec<String> {
        self.maps
            .of(Direction::Out)
            .map(|m| m.filter.clone())
            .collect()
    }

    /// Map local messages and queue them; returns once they are durable. Per message: `None`
    /// when no out map takes its topic, else what the queue did with it.
    pub async fn offer(
        &self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Option<Appended>>, Error> {
        let mut records = Vec::new();
        let mut routed = Vec::with_capacity(messages.len());
        for (topic, payload) in messages {
            match self.maps.route(Direction::Out, &topic) {
                Some((map, remote_topic)) => {
                    records.push(NewRecord {
                        topic: remote_topic,
                        payload,
                        priority: map.priority,
                        ttl_ms: map.ttl_ms,
                    });
                    routed.push(true);
                }
                None => routed.push(false),
            }
        }
        let mut appended = if records.is_empty() {
            Vec::new()
        } else {
            self.queue.append_async(records).await?
        }
        .into_iter();
        Ok(routed
            .into_iter()
            .map(|r| if r { appended.next() } else { None })
            .collect())
    }

    /// Keep a connection to one of the remote's nodes (in turn, with backoff and jitter between
    /// attempts) and replay the queue through it, until `cancel`.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut failures = 0u32;
        let mut node = 0usize;
        while !cancel.is_cancelled() {
            let address = self.remote.address(node);
            let (lost, message) = match self.session(node, &cancel).await {
                End::Cancelled => break,
                End::Refused(e) => {
                    failures = failures.saturating_add(1);
                    (false, e)
                }
                End::Lost(e) => {
                    failures = 0;
                    (true, e)
                }
            };
            tracing::warn!(remote = %self.remote.name, %address, error = %message,
                connected_before = lost, "bridge: remote connection failed; trying the next node");
            self.state.send_modify(|s| {
                if s.connected {
                    s.since_ms = bridge_queue::now_ms();
                }
                s.connected = false;
                s.failures += 1;
                s.last_error = Some(message);
            });
            node = node.wrapping_add(1);
            tokio::select! {
                () = tokio::time::sleep(self.remote.backoff.delay(failures)) => {}
                () = cancel.cancelled() => break,
            }
        }
        self.state.send_modify(|s| {
            s.connected = false;
            s.since_ms = bridge_queue::now_ms();
        });
    }

    /// One connection to node `node`: connect, subscribe the in maps, replay until it fails.
    async fn session(&self, node: usize, cancel: &CancellationToken) -> End {
        let window = usize::from(self.remote.max_inflight.max(1));
        let mut opts = self.remote.options(node);
        opts.set_manual_acks(true);
        let (client, eventloop) = AsyncClient::new(opts, window * 2 + 64);
        let (tx, mut events) = mpsc::channel(1024);
        let poller = tokio::spawn(poll(eventloop, tx));
        let _abort = AbortOnDrop(poller);
        self.state
            .send_modify(|s| s.address = Some(self.remote.address(node)));

        let first = tokio::select! {
            first = tokio::time::timeout(CONNECT_TIMEOUT, events.recv()) => first,
            () = cancel.cancelled() => return End::Cancelled,
        };
        match first {
            Ok(Some(Ok(Event::Incoming(Incoming::ConnAck(ack)))))
                if ack.code == ConnectReturnCode::Success => {}
            Ok(Some(Ok(other))) => {
                return End::Refused(format!("expected a CONNACK, got {other:?}"))
            }
            Ok(Some(Err(e))) => return End::Refused(e),
            Ok(None) => return End::Refused("the connection ended".into()),
            Err(_) => return End::Refused("no CONNACK within 10 s".into()),
        }
        self.state.send_modify(|s| {
            s.connected = true;
            s.since_ms = bridge_queue::now_ms();
            s.connects += 1;
            s.last_error = None;
        });
        tracing::info!(remote = %self.remote.name, address = %self.remote.address(node), "bridge: connected");
        for map in self.maps.of(Direction::In) {
            if let Err(e) = client.try_subscribe(&map.filter, QoS::AtLeastOnce) {
                return End::Lost(format!("subscribing to {}: {e}", map.filter));
            }
        }
        self.mirror.mark_all_unsent();
        let mut flight = Flight::default();
        let end = self
            .replay(&client, &mut events, &mut flight, window, cancel)
            .await;
        let back: Vec<u64> = flight
            .unsent
            .drain(..)
            .chain(flight.sent.into_values())
            .filter(|id| *id != MIRRORED)
            .collect();
        if !back.is_empty() && self.queue.nack(back).is_err() {
            return End::Cancelled;
        }
        end
    }

    /// Keep `window` publishes in flight while the queue has records; ack them on PUBACK.
    async fn replay(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, String>>,
        flight: &mut Flight,
        window: usize,
        cancel: &CancellationToken,
    ) -> End {
        let mut maybe_more = true;
        let mut mirror_due = true;
        loop {
            if mirror_due {
                mirror_due = false;
                for (topic, payload) in self.mirror.take_unsent() {
                    flight.unsent.push_back(MIRRORED);
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                        return End::Lost(format!("publish: {e}"));
                    }
                }
            }
            let room = window.saturating_sub(flight.len());
            if room > 0 && maybe_more {
                let records = match self.queue.pop_async(room).await {
                    Ok(r) => r,
                    Err(e) => return End::Lost(format!("queue: {e}")),
                };
                maybe_more = records.len() == room;
                for r in records {
                    flight.unsent.push_back(r.id);
                    if let Err(e) = client.try_publish(r.topic, QoS::AtLeastOnce, false, r.payload)
                    {
                        return End::Lost(format!("publish: {e}"));
                    }
                }
            }
            let room = window.saturating_sub(flight.len());
            tokio::select! {
                ev = events.recv() => match ev {
                    None => return End::Lost("the connection task ended".into()),
                    Some(Err(e)) => return End::Lost(e),
                    Some(Ok(ev)) => {
                        if let Err(e) = self.handle(client, ev, flight).await {
                            return End::Lost(e);
                        }
                    }
                },
                () = self.queue.appended(), if room > 0 => maybe_more = true,
                () = self.mirror.changed.notified() => mirror_due = true,
                () = cancel.cancelled() => return End::Cancelled,
            }
        }
    }

    async fn handle(
        &self,
        client: &AsyncClient,
        ev: Event,
        flight: &mut Flight,
    ) -> Result<(), String> {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                // rumqttc sends publishes in the order they were requested.
                let id = flight
                    .unsent
                    .pop_front()
                    .ok_or("a publish went out that the link did not request")?;
                flight.sent.insert(pkid, id);
            }
            Event::Incoming(Incoming::PubAck(ack)) => match flight.sent.remove(&ack.pkid) {
                Some(MIRRORED) => self.state.send_modify(|s| s.mirrored += 1),
                Some(id) => {
                    self.queue.ack(vec![id]).map_err(|e| e.to_string())?;
                    self.state.send_modify(|s| s.published += 1);
                }
                None => {}
            },
            Event::Incoming(Incoming::Publish(p)) => {
                let topic = p.topic.clone();
                if let (Some((_, local)), Some(sink)) =
                    (self.maps.route(Direction::In, &topic), &self.inbound)
                {
                    let msg = Inbound {
                        topic: local,
                        payload: p.payload.to_vec(),
                    };
                    sink.send(msg).await.map_err(|_| "the local side is gone")?;
                    self.state.send_modify(|s| s.received += 1);
                }
                // Acknowledged only once handed over: a crash before that gets it again.
                client.try_ack(&p).map_err(|e| e.to_string())?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Records handed to rumqttc: `unsent` await their packet id, `sent` their PUBACK
/// ([`MIRRORED`] for a mirrored value).
#[derive(Default)]
struct Flight {
    unsent: VecDeque<u64>,
    sent: HashMap<u16, u64>,
}

impl Flight {
    fn len(&self) -> usize {
        self.unsent.len() + self.sent.len()
    }
}

/// Drive rumqttc's event loop on its own task (its `poll` is not to be cancelled mid-write) and
/// forward the events; stop at the first error.
async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<Result<Event, String>>) {
    loop {
        let ev = eventloop.poll().await.map_err(|e| e.to_string());
        let stop = ev.is_err();
        if tx.send(ev).await.is_err() || stop {
            return;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
