//! The MQTT front end: iohub terminates MQTT 3.1.1 and MQTT 5.0 itself and maps every client onto its own
//! subscription in our router ([`crate::router`], a [`crate::Subscription`] with one bounded
//! queue) and onto the [`Bus`] for what it publishes.
//!
//! History: this front end first replaced rumqttd's TCP server (iohub then still ran rumqttd's
//! router behind it; that router is gone too, see ARCHITECTURE.md). rumqttd's server set no
//! TCP_NODELAY (a QoS1 request/response round trip floored at 30–50 ms), forwarded at most 200
//! retained messages to a wildcard subscriber and none on a re-subscribe, had no per-topic ACL,
//! let one idle TLS/WS client block its accept loop, closed refused CONNECTs without a return
//! code and sent no UNSUBACK for an unknown filter.
//!
//! The front end depends on the broker's core and the core knows nothing of it: a listener is
//! opened with [`listen`] (or [`listen_on`]) on a [`Bus`], or with [`Broker::listen`] for the
//! broker's lifetime, and attaches to the bus under its name with its [`ListenerStats`] (read
//! back with [`stats`] and [`all_stats`]).
//!
//! Shape:
//! - `spawn` binds a [`TcpListener`] and runs the accept loop as a task of the broker's
//!   `TaskTracker`. The loop only accepts, sets TCP_NODELAY and spawns one task per connection
//!   (`session`): the whole handshake (WebSocket upgrade if any, CONNECT, authentication,
//!   limits) runs in that task under `connect_timeout`, so a silent or slow client never holds
//!   up another, and at most `max_handshakes` connections are in it at once, at most
//!   `max_handshakes_per_address` of them from one source address.
//! - Packets are read and written with rumqttc's codecs: MQTT 3.1.1 (`rumqttc::mqttbytes::v4`)
//!   or MQTT 5.0 (`rumqttc::v5::mqttbytes::v5`), chosen per connection by the CONNECT's
//!   protocol level (`codec` module: the session works in MQTT 5 packet types, a 3.1.1 client's
//!   packets are converted both ways).
//! - The session is one implementation, generic over the transport (`session::Conn`): plain TCP
//!   or WebSocket.
//! - Topic permissions are an [`Acl`] (of the core, as is the filter algebra).
//! - Persistent sessions (MQTT 3.1.1 §3.1.2.4) on a listener with a session store
//!   ([`ListenerConfig::sessions`], `store` module; iohubd's apps listeners keep theirs in
//!   `<root>/runtime/broker/<listener>/`): a CONNECT with `clean_session = false` takes over the
//!   client's stored session (CONNACK `session_present = 1` when there was one): its filters stay
//!   subscribed while it is away, its QoS1/QoS2 messages are kept on disk (QoS0 are not, like
//!   mosquitto's default `queue_qos0_messages false`), at most `max_queued_messages` records and
//!   `max_queued_bytes` bytes per session (the newest past them dropped and counted,
//!   `session_dropped`), and on reconnect it gets first its PUBRELs awaiting PUBCOMP, then every
//!   message it has not acknowledged (with DUP if it was sent before; a QoS2 message with its
//!   packet id), then the rest, oldest first. A `clean_session = true` CONNECT discards the stored
//!   session. At most `max_sessions` sessions are kept; one more persistent CONNECT gets CONNACK 3.
//!   A newer connection with the same client id closes the older one and waits for it to let the
//!   session go (within `connect_timeout`). Without a store, every session is served as a clean
//!   one (CONNACK `session_present = 0`) and nothing is kept after a disconnect. Sessions do not
//!   expire (mosquitto's default `persistent_client_expiration` is never, too).
//! - Persistence of sessions (mosquitto's `persistence true`, but incremental): every message
//!   kept for a persistent session, every acknowledgement and every PUBREL state is written to
//!   the session's segment log (the bridge's format, crate `bridge-queue`: CRC32 per record, a
//!   ledger of marks) as soon as the batch of packets that made it is handled, so a kill -9 of
//!   iohubd loses nothing written; the files are fsynced every `sync_interval` (1 s) on a
//!   blocking thread, so a power cut loses at most that second (mosquitto writes its whole
//!   database every `autosave_interval`, 30 minutes by default). A message for an absent client
//!   reaches the disk from its router queue within one batch of the keeper task, not before the
//!   publisher's PUBACK: a kill -9 in between loses it. The filters are rewritten atomically
//!   (`session.json`) before the SUBACK. A session found damaged at start is set aside as
//!   `<dir>.corrupt-<ms>` with an error, counted (`sessions_corrupt`), and the listener starts.
//! - MQTT 3.1 (level 3, "MQIsdp") clients get CONNACK return code 1 (unacceptable protocol
//!   version): rumqttc's codecs read levels 4 and 5 only.
//!
//! MQTT 5.0 (protocol level 5), on every listener (TCP and WebSocket), beside 3.1.1; messages
//! cross versions (a 3.1.1 subscriber gets topic, payload, QoS and retain; an MQTT 5 one also the
//! properties). Supported:
//! - Reason codes: CONNACK (0x81 malformed CONNECT, 0x82 receive maximum or maximum packet size
//!   0, 0x86/0x87 credentials, 0x87 will
//!   topic outside the ACL, 0x90 invalid will topic, 0x8C an authentication method: no enhanced
//!   authentication, 0x97 connection or session limit); PUBACK/PUBREC 0x87 for a publish the
//!   ACL refuses (3.1.1: acknowledged and dropped); SUBACK 0x87 not authorized, 0x8F invalid
//!   filter (also a `$share` name empty or with a wildcard), 0x9E for a valid `$share` filter,
//!   0x97 past a listener bound; UNSUBACK 0x11 for a filter not subscribed; a DISCONNECT from the
//!   broker before it closes (with a reason string): 0x81 malformed packet or properties, 0x82
//!   protocol error (second CONNECT, unknown alias), 0x8D keep alive timeout, 0x8E session taken
//!   over, 0x90 invalid topic, 0x93 receive maximum exceeded, 0x94 topic alias invalid, 0x95
//!   packet too large, 0xA1 a subscription identifier.
//! - CONNACK properties: receive maximum (`max_inflight`: incoming QoS2 awaiting PUBREL),
//!   maximum packet size (`max_packet_bytes`), topic alias maximum (64), assigned client
//!   identifier for an empty one, server keep alive when the client's is 0 or over
//!   `keepalive_max`, session expiry interval 0 when no session can be kept, subscription
//!   identifiers and shared subscriptions not available.
//! - Message properties carried end to end (`crate::MessageProperties` through the router):
//!   payload format indicator, content type, response topic, correlation data, user properties,
//!   message expiry interval (counted from arrival; sent with the time left; a message expired
//!   while queued is not delivered and counted, `expired`).
//! - Flow and size: the client's receive maximum bounds the outgoing window; its maximum packet
//!   size drops (and counts, `too_large`) a message that would not fit; client topic aliases
//!   are resolved per connection (the broker sends none).
//! - Subscription options: no local (persisted with the session's filters), retain handling
//!   0/1/2. Retain as published is not honoured (live messages are sent with RETAIN 0).
//! - Sessions: clean start and session expiry interval > 0 map onto the session store (a session
//!   is kept while the interval is > 0, like 3.1.1's `clean_session = false`); a DISCONNECT with
//!   session expiry 0 ends it. Wills carry their properties.
//!
//! Not supported yet (MQTT 5): sessions do not expire after their interval (they are kept like
//! 3.1.1 ones until `max_sessions`), will delay interval (wills are published at once),
//! subscription identifiers (refused, DISCONNECT 0xA1), shared subscriptions (SUBACK 0x9E),
//! broker-to-client topic aliases, retain as published, properties of retained messages and of
//! messages kept on disk for an absent client (topic and payload only), request/response
//! information, enhanced authentication (AUTH), the control plane's replies to a v5 response
//! topic (DESIGN.md §3).
//!
//! WebSocket ([`ListenerConfig::websocket`], MQTT 3.1.1 §6, for browsers; `ws` module): the
//! HTTP upgrade is served by tokio-tungstenite in the connection's own task, and
//! `connect_timeout` covers the upgrade and the CONNECT together (an idle socket or a half-sent
//! request is closed when it runs out and blocks nothing meanwhile). The client must offer the
//! `mqtt` subprotocol, which the response selects; a request without it gets HTTP 400 and no
//! upgrade. Any request path is accepted. MQTT bytes travel in binary messages as a byte stream:
//! a packet may span messages, one message may hold several packets. A text message closes the
//! connection (close code 1003), as does a frame or message larger than `max_packet_bytes` plus a
//! fixed header (1009); pings are answered; a close frame ends the session like a TCP close (the
//! will is published unless a DISCONNECT came first). Outgoing data goes out in binary messages
//! of at most 64 KiB, each flushed before the next, so the output buffer bound below holds as on
//! TCP. CONNACK refusal codes are sent as on TCP, then a close frame. Plain TCP clients get
//! nothing from a WebSocket listener (no CONNACK), and WebSocket clients nothing from a TCP one.
//!
//! QoS: subscriptions are granted the QoS asked for (0, 1 or 2). A message is delivered at
//! `min(QoS it was published with, highest QoS granted among the client's matching filters)`;
//! how the publish QoS crosses the router is explained in [`crate::bus`]. Outgoing QoS1 and
//! QoS2 messages get packet ids from a window of `max_inflight` unacknowledged messages (a QoS2
//! message holds its id until PUBCOMP); while the window is full the client's subscription queue
//! is not read, so it fills and its bounds apply (backpressure on publishers, then counted drops;
//! see "Slow consumers"). Outgoing QoS2 is the PUBLISH/PUBREC/PUBREL/PUBCOMP exchange (a repeated
//! PUBREC gets its PUBREL again). Incoming QoS2 is acknowledged with the PUBREC/PUBREL/PUBCOMP
//! exchange and published once (duplicates by packet id are not re-sent; a persistent session
//! keeps these ids across reconnects, not across restarts). A client with overlapping filters (`a/#` and `a/+`) gets one copy (its
//! subscription has one queue, whatever its filters). Filters starting with `$` other
//! than `$SYS/...` (read-only figures, published by iohubd's global_mqtt service where the ACL
//! lets a client read them; `$share` is not offered) are refused, as are filters of more than [`crate::MAX_FILTER_LEVELS`] levels. Bounds
//! against a client that subscribes without end: at most `max_filters` filters and
//! `max_filter_levels` levels per connection, `max_filter_bytes` per filter, and the router's bound on the whole subscription tree
//! ([`crate::RouterLimits`]); a filter past one gets the SUBACK failure code and is counted
//! ([`ListenerStatsSnapshot::subscribe_refused_limit`]).
//!
//! Retained messages come from the bus's retained store, all of them, on every SUBSCRIBE
//! (including a re-subscribe), with RETAIN=1, after the SUBACK and before live traffic; live
//! messages always have RETAIN=0 (MQTT 3.1.1 §3.3.1.3).
//!
//! Wills: published through the bus (with their QoS and retain flag) when a connection ends in
//! any way but DISCONNECT or broker shutdown; the socket is closed only after. A will topic the
//! ACL does not let the client publish on is refused at CONNECT (return code 5).
//!
//! Slow consumers (see [`crate::router`] for the queue rules): a client's subscription queue
//! holds `max_queued_messages` messages or `max_subscription_bytes` bytes (like mosquitto's
//! `max_queued_messages` and `max_queued_bytes`) before a delivery into it makes the
//! *publishing* client wait: its socket is not read until the queue
//! drains to half the bound, or for at most `max_publish_wait` (then the queue counts as stalled:
//! QoS0 deliveries past the bound and any past `max_queued_messages_hard` or
//! `max_subscription_bytes_hard`, or past the clients' shared byte budget, are dropped and counted,
//! [`ListenerStatsSnapshot::dropped`]). A client never waits for its own queue.
//! Encoded packets then wait in a per-connection output buffer bounded by `max_queued_bytes`;
//! past it, live QoS0 messages are dropped and counted, retained replays and QoS1 messages are
//! held back (the queue is not read until the buffer drains), and the socket is not read either,
//! so a client that does not read cannot make the broker buffer its acks without bound.

mod codec;
mod session;
mod store;
mod ws;

pub use store::SessionStoreConfig;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::FrontEnd;
use crate::{Acl, Broker, BrokerError, Bus};

/// Username/password of the control listener.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for ControlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How a listener authenticates clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The one login accepted. `None`: any login is accepted (mosquitto without a password
    /// file), which only makes sense with `anonymous`.
    pub credentials: Option<ControlCredentials>,
    /// Clients without a login are accepted (the original global broker's
    /// `allow_anonymous true`).
    pub anonymous: bool,
}

impl Auth {
    pub fn login(credentials: ControlCredentials) -> Auth {
        Auth {
            credentials: Some(credentials),
            anonymous: false,
        }
    }

    pub fn anonymous() -> Auth {
        Auth {
            credentials: None,
            anonymous: true,
        }
    }
}

/// Bounds of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connected (authenticated) clients; one more gets CONNACK 3 (server unavailable).
    pub max_connections: usize,
    /// Connections still in their handshake; past it new sockets are closed at once.
    pub max_handshakes: usize,
    /// Connections in their handshake from one source address: one client holding half-open
    /// CONNECTs must not lock every other client out (`max_handshakes` is the listener's).
    pub max_handshakes_per_address: usize,
    /// Time a new connection has to send its CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted from a client (remaining length); a larger one closes the
    /// connection.
    pub max_packet_bytes: usize,
    /// Outgoing QoS1 messages awaiting PUBACK, per connection (1..=65535).
    pub max_inflight: u16,
    /// Longest keepalive honoured: a client asking for more, or for none (0), is treated as if
    /// it had asked for this (MQTT 3.1.1 cannot tell the client). A connection is closed after
    /// 1.5 times its keepalive without a packet.
    pub keepalive_max: Duration,
    /// Encoded packets waiting for the socket, per connection; see the module docs.
    pub max_queued_bytes: usize,
    /// Messages queued per client subscription before publishers wait; see the module docs.
    pub max_queued_messages: usize,
    /// Messages queued per client subscription before every delivery is dropped.
    pub max_queued_messages_hard: usize,
    /// Bytes (topics and payloads) queued per client subscription before publishers wait
    /// (mosquitto's `max_queued_bytes`; ours, above, bounds the encoded output).
    pub max_subscription_bytes: usize,
    /// Bytes queued per client subscription past which every delivery is dropped.
    pub max_subscription_bytes_hard: usize,
    /// Filters one connection may hold; one more is refused (SUBACK failure).
    pub max_filters: usize,
    /// Levels of all of one connection's filters together (what they may add to the subscription
    /// tree): one connection cannot take the whole tree's bound.
    pub max_filter_levels: usize,
    /// Longest filter accepted, in bytes (levels are bounded by [`crate::MAX_FILTER_LEVELS`]).
    pub max_filter_bytes: usize,
    /// Longest a publishing client waits for one congested subscriber before it is read again.
    pub max_publish_wait: Duration,
}

impl Default for ListenerLimits {
    fn default() -> ListenerLimits {
        ListenerLimits {
            max_connections: 1000,
            max_handshakes: 256,
            max_handshakes_per_address: 32,
            connect_timeout: Duration::from_secs(5),
            max_packet_bytes: 1 << 20,
            max_inflight: 64,
            keepalive_max: Duration::from_secs(600),
            max_queued_bytes: 1 << 20,
            max_queued_messages: 1000,
            max_queued_messages_hard: 16_000,
            max_subscription_bytes: 8 << 20,
            max_subscription_bytes_hard: 32 << 20,
            max_filters: 1000,
            max_filter_levels: 10_000,
            max_filter_bytes: 4096,
            max_publish_wait: Duration::from_secs(1),
        }
    }
}

/// One TCP listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Unique among the broker's listeners; names its stats and log lines.
    pub name: String,
    pub addr: SocketAddr,
    pub auth: Auth,
    pub acl: Acl,
    pub limits: ListenerLimits,
    /// Refuse to bind an address that is not a loopback address.
    pub loopback_only: bool,
    /// Speak MQTT over WebSocket (subprotocol `mqtt`, for browsers) instead of plain TCP; see
    /// the module docs. Off in [`ListenerConfig::control`] and [`ListenerConfig::apps`].
    pub websocket: bool,
    /// Keep persistent sessions (`clean_session = false`) there; `None`: every session is
    /// served as a clean one (see the module docs).
    pub sessions: Option<SessionStoreConfig>,
}

impl ListenerConfig {
    /// The control listener: named `control`, loopback only, [`Acl::control`], default limits.
    pub fn control(addr: SocketAddr, credentials: ControlCredentials) -> ListenerConfig {
        ListenerConfig {
            name: "control".into(),
            addr,
            auth: Auth::login(credentials),
            acl: Acl::control(),
            limits: ListenerLimits::default(),
            loopback_only: true,
            websocket: false,
            sessions: None,
        }
    }

    /// An apps listener (the IOhub global broker): named `apps`, [`Acl::apps`] with `mirror`
    /// readable, anonymous clients accepted, any address.
    pub fn apps(addr: SocketAddr, mirror: Vec<String>) -> ListenerConfig {
        ListenerConfig {
            name: "apps".into(),
            addr,
            auth: Auth::anonymous(),
            acl: Acl::apps(mirror),
            limits: ListenerLimits::default(),
            loopback_only: false,
            websocket: false,
            sessions: None,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    connections_total: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    dropped: AtomicU64,
    /// Drops from the client subscription queues (shared with the router).
    queue_dropped: Arc<AtomicU64>,
    backpressure_waits: AtomicU64,
    publish_wait_expired: AtomicU64,
    refused_auth: AtomicU64,
    refused_limit: AtomicU64,
    publish_denied: AtomicU64,
    subscribe_denied: AtomicU64,
    subscribe_refused_limit: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    sessions: AtomicU64,
    session_records: AtomicU64,
    session_dropped: AtomicU64,
    sessions_corrupt: AtomicU64,
    session_store_errors: AtomicU64,
    expired: AtomicU64,
    too_large: AtomicU64,
}

/// Live counters of one listener (cheap to clone; see [`crate::Broker::listener_stats`]).
#[derive(Debug, Clone, Default)]
pub struct ListenerStats {
    counters: Arc<Counters>,
}

/// A reading of [`ListenerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ListenerStatsSnapshot {
    /// Clients connected now.
    pub connections: u64,
    /// Clients accepted (CONNACK 0) since start.
    pub connections_total: u64,
    /// PUBLISH packets received from clients.
    pub messages_in: u64,
    /// PUBLISH packets queued to clients.
    pub messages_out: u64,
    /// Messages dropped for slow clients of this listener: QoS0 deliveries past a subscription
    /// queue's bound or a full output buffer, QoS1 deliveries past the hard bound.
    pub dropped: u64,
    /// Of `dropped`: QoS0 messages dropped because a client's output buffer was full (the rest
    /// is also counted by the router, [`crate::RouterStats`]).
    pub dropped_output: u64,
    /// Times a publishing client was paused because a subscriber's queue was full.
    pub backpressure_waits: u64,
    /// Pauses that hit `max_publish_wait`.
    pub publish_wait_expired: u64,
    /// CONNECTs refused for bad or missing credentials, or a forbidden will topic.
    pub refused_auth: u64,
    /// Connections refused by `max_connections` or `max_handshakes`.
    pub refused_limit: u64,
    /// Client publishes dropped by the ACL (a QoS1/2 publish is still acknowledged).
    pub publish_denied: u64,
    /// SUBSCRIBE filters refused (ACL, invalid or `$` filters).
    pub subscribe_denied: u64,
    /// SUBSCRIBE filters refused by a bound: too long, too many for the connection, or the
    /// subscription tree full.
    pub subscribe_refused_limit: u64,
    /// Bytes read from clients' sockets after their CONNECT.
    pub bytes_in: u64,
    /// Bytes written to clients' sockets after their CONNACK.
    pub bytes_out: u64,
    /// Persistent sessions kept (connected or not).
    pub sessions: u64,
    /// Records in the persistent sessions' disk queues: messages kept for absent clients or
    /// awaiting acknowledgement, and QoS2 PUBRELs awaiting PUBCOMP.
    pub session_records: u64,
    /// Messages for absent clients dropped at their session's bounds (`max_queued_messages`,
    /// `max_queued_bytes` of [`SessionStoreConfig`]).
    pub session_dropped: u64,
    /// Damaged persistent sessions set aside at start.
    pub sessions_corrupt: u64,
    /// Failed reads and writes of the session store.
    pub session_store_errors: u64,
    /// MQTT 5 messages not delivered because their message expiry interval had passed.
    pub expired: u64,
    /// Messages not sent because they were larger than the client's MQTT 5 maximum packet size.
    pub too_large: u64,
}

impl ListenerStats {
    pub fn snapshot(&self) -> ListenerStatsSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerStatsSnapshot {
            connections: get(&c.connections),
            connections_total: get(&c.connections_total),
            messages_in: get(&c.messages_in),
            messages_out: get(&c.messages_out),
            dropped: get(&c.dropped) + get(&c.queue_dropped) + get(&c.session_dropped),
            dropped_output: get(&c.dropped),
            backpressure_waits: get(&c.backpressure_waits),
            publish_wait_expired: get(&c.publish_wait_expired),
            refused_auth: get(&c.refused_auth),
            refused_limit: get(&c.refused_limit),
            publish_denied: get(&c.publish_denied),
            subscribe_denied: get(&c.subscribe_denied),
            subscribe_refused_limit: get(&c.subscribe_refused_limit),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            sessions: get(&c.sessions),
            session_records: get(&c.session_records),
            session_dropped: get(&c.session_dropped),
            sessions_corrupt: get(&c.sessions_corrupt),
            session_store_errors: get(&c.session_store_errors),
            expired: get(&c.expired),
            too_large: get(&c.too_large),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by the accept loop and the connections of one listener.
struct Shared {
    bus: Bus,
    config: ListenerConfig,
    acl: Arc<Acl>,
    stats: ListenerStats,
    /// Connected clients by client id, for session takeover.
    clients: std::sync::Mutex<std::collections::HashMap<String, (u64, CancellationToken)>>,
    /// Connected (authenticated) clients.
    active: AtomicUsize,
    /// Connections in their handshake.
    handshaking: AtomicUsize,
    /// Connections in their handshake, by source address (no entry at zero).
    handshaking_from: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// Refused handshakes are warned about at most once a minute (a flood would log each).
    refused_log: RateLimit,
    next_id: AtomicU64,
    cancel: CancellationToken,
    /// Refused publishes are warned about once a minute (a one-shot client would log each).
    denied_log: RateLimit,
    /// Filters refused by a bound are warned about once a minute.
    bound_log: RateLimit,
    /// Persistent sessions, if the listener keeps them.
    store: Option<store::Store>,
}

impl Shared {
    /// Count a new connection into its handshake, or say which bound refuses it.
    fn begin_handshake(&self, ip: IpAddr) -> Result<(), &'static str> {
        let limits = &self.config.limits;
        if self.handshaking.fetch_add(1, Ordering::AcqRel) >= limits.max_handshakes {
            self.handshaking.fetch_sub(1, Ordering::AcqRel);
            return Err("too many connections in their handshake");
        }
        let mut from = self
            .handshaking_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = from.entry(ip).or_default();
        if *count >= limits.max_handshakes_per_address {
            drop(from);
            self.handshaking.fetch_sub(1, Ordering::AcqRel);
            return Err("too many connections in their handshake from one address");
        }
        *count += 1;
        Ok(())
    }

    /// A handshake from `ip` ended, however it ended.
    fn end_handshake(&self, ip: IpAddr) {
        self.handshaking.fetch_sub(1, Ordering::AcqRel);
        let mut from = self
            .handshaking_from
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = from.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                from.remove(&ip);
            }
        }
    }
}

/// At most one `due()` per period, across threads.
struct RateLimit {
    start: std::time::Instant,
    period: Duration,
    /// Milliseconds since `start` before which `due()` is false.
    next_ms: AtomicU64,
}

impl RateLimit {
    fn new(period: Duration) -> RateLimit {
        RateLimit {
            start: std::time::Instant::now(),
            period,
            next_ms: AtomicU64::new(0),
        }
    }

    fn due(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.period.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// A listener started with [`listen`] or [`listen_on`]: closing it (or dropping it) stops
/// accepting and closes its connections.
pub struct ListenerHandle {
    pub addr: SocketAddr,
    pub stats: ListenerStats,
    /// Its name on the bus; dropping it cancels the listener's token.
    front_end: FrontEnd,
}

impl ListenerHandle {
    pub fn name(&self) -> &str {
        self.front_end.name()
    }

    /// Stop the listener and close its connections (they end as on broker shutdown).
    pub fn close(self) {}
}

/// Serve MQTT clients of `bus` on a TCP listener (bind `:0` in tests). Listener names must be
/// unique among the bus's open listeners.
pub async fn listen(bus: &Bus, config: ListenerConfig) -> Result<ListenerHandle, BrokerError> {
    listen_with(bus, config, None).await
}

/// The same on a socket bound by the caller (`config.addr` is then only a label): how the
/// apps listener is bound inside a container's network namespace.
pub async fn listen_on(
    bus: &Bus,
    config: ListenerConfig,
    bound: std::net::TcpListener,
) -> Result<ListenerHandle, BrokerError> {
    listen_with(bus, config, Some(bound)).await
}

async fn listen_with(
    bus: &Bus,
    config: ListenerConfig,
    bound: Option<std::net::TcpListener>,
) -> Result<ListenerHandle, BrokerError> {
    let stats = ListenerStats::default();
    // The name is taken until the handle is dropped (at once if the listener does not start).
    let front_end = bus
        .attach(&config.name, Arc::new(stats.clone()))
        .ok_or_else(|| {
            BrokerError::Config(format!("a listener named {:?} already exists", config.name))
        })?;
    let addr = spawn(
        bus.clone(),
        config,
        bound,
        stats.clone(),
        front_end.cancel_token(),
    )
    .await?;
    Ok(ListenerHandle {
        addr,
        stats,
        front_end,
    })
}

/// Counters of the open listener of `bus` named `name`.
pub fn stats(bus: &Bus, name: &str) -> Option<ListenerStats> {
    bus.front_end(name)?
        .downcast_ref::<ListenerStats>()
        .cloned()
}

/// Names and counters of every open listener of `bus`, by name.
pub fn all_stats(bus: &Bus) -> Vec<(String, ListenerStats)> {
    bus.all_front_ends()
        .into_iter()
        .filter_map(|(name, info)| Some((name, info.downcast_ref::<ListenerStats>()?.clone())))
        .collect()
}

impl Broker {
    /// Serve MQTT clients on a TCP listener for the broker's lifetime; returns the bound
    /// address (bind `:0` in tests).
    pub async fn listen(&self, config: ListenerConfig) -> Result<SocketAddr, BrokerError> {
        let handle = listen(&self.bus(), config).await?;
        let addr = handle.addr;
        self.keep(handle.front_end);
        Ok(addr)
    }

    /// Counters of the open listener named `name`.
    pub fn listener_stats(&self, name: &str) -> Option<ListenerStats> {
        stats(&self.bus(), name)
    }
}

/// Validate `config` and run its accept loop on `bound` (a socket bound elsewhere, e.g. inside
/// another network namespace) or, when `None`, on a new socket bound to `config.addr`; returns
/// the bound address.
async fn spawn(
    bus: Bus,
    config: ListenerConfig,
    bound: Option<std::net::TcpListener>,
    stats: ListenerStats,
    cancel: CancellationToken,
) -> Result<SocketAddr, BrokerError> {
    let name = &config.name;
    config
        .acl
        .validate()
        .map_err(|e| BrokerError::Config(format!("listener {name}: {e}")))?;
    match &config.auth.credentials {
        Some(c) if c.username.is_empty() || c.password.is_empty() => {
            // MQTT cannot tell an empty login from none: no client could ever authenticate.
            return Err(BrokerError::Config(format!(
                "listener {name}: empty username or password"
            )));
        }
        None if !config.auth.anonymous => {
            return Err(BrokerError::Config(format!(
                "listener {name}: neither credentials nor anonymous access"
            )));
        }
        _ => {}
    }
    let l = &config.limits;
    if l.max_queued_messages == 0 || l.max_queued_messages_hard < l.max_queued_messages {
        return Err(BrokerError::Config(format!(
            "listener {name}: need 0 < max_queued_messages <= max_queued_messages_hard"
        )));
    }
    if config.loopback_only && !config.addr.ip().is_loopback() {
        return Err(BrokerError::Config(format!(
            "listener {name} is loopback only, but {} is not a loopback address",
            config.addr
        )));
    }
    if let Some(s) = &config.sessions {
        if s.max_queued_messages == 0 || s.max_queued_bytes == 0 || s.sync_interval.is_zero() {
            return Err(BrokerError::Config(format!(
                "listener {name}: sessions need max_queued_messages, max_queued_bytes and \
                 sync_interval above zero"
            )));
        }
    }
    if config.limits.max_inflight == 0 || config.limits.keepalive_max.is_zero() {
        return Err(BrokerError::Config(format!(
            "listener {name}: max_inflight and keepalive_max must not be zero"
        )));
    }
    let addr = config.addr;
    let listener = match bound {
        None => TcpListener::bind(addr).await,
        Some(l) => l
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(l)),
    }
    .map_err(|source| BrokerError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })?;
    tracing::info!(listener = %config.name, addr = %local, "MQTT listener up");
    let tasks = bus.tasks().clone();
    let store = match config.sessions.clone() {
        Some(s) => store::Store::open(s).await,
        None => None,
    };
    let shared = Arc::new(Shared {
        bus,
        acl: Arc::new(config.acl.clone()),
        config,
        stats,
        clients: Default::default(),
        active: AtomicUsize::new(0),
        handshaking: AtomicUsize::new(0),
        handshaking_from: Default::default(),
        refused_log: RateLimit::new(Duration::from_secs(60)),
        next_id: AtomicU64::new(1),
        cancel,
        denied_log: RateLimit::new(Duration::from_secs(60)),
        bound_log: RateLimit::new(Duration::from_secs(60)),
        store,
    });
    if let Some(store) = &shared.store {
        store.restore(&shared).await;
        tasks.spawn(store::Store::sync_loop(shared.clone()));
    }
    tasks.spawn(accept_loop(listener, shared, tasks.clone()));
    Ok(local)
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tasks: tokio_util::task::TaskTracker,
) {
    let name = shared.config.name.clone();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tokio::select! {
                    _ = shared.cancel.cancelled() => break,
                    _ = backoff.failed(&name, &e) => continue,
                }
            }
        };
        backoff.succeeded();
        if let Err(why) = shared.begin_handshake(peer.ip()) {
            ListenerStats::bump(&shared.stats.counters.refused_limit);
            if shared.refused_log.due() {
                tracing::warn!(listener = %name, %peer, "{why}; new sockets are closed");
            }
            drop(stream);
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(listener = %name, %peer, error = %e, "TCP_NODELAY");
        }
        tasks.spawn(session::run(shared.clone(), stream, peer));
    }
    tracing::debug!(listener = %name, "accept loop stopped");
}

/// The pause of an accept loop after a failed `accept` (typically EMFILE or ENFILE, which
/// persist until connections close): 50 ms doubling to 2 s, reset by the next success, and one
/// warning a minute with the count of failures since the last one, instead of one per failure.
#[derive(Debug)]
pub struct AcceptBackoff {
    delay: Duration,
    failures: u64,
    next_warning: Option<tokio::time::Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> AcceptBackoff {
        AcceptBackoff {
            delay: AcceptBackoff::FIRST,
            failures: 0,
            next_warning: None,
        }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(2);
    const WARN_EVERY: Duration = Duration::from_secs(60);

    /// Count a failure of `listener`'s accept, warn if due, and sleep the current delay.
    pub async fn failed(&mut self, listener: &str, error: &std::io::Error) {
        self.failures += 1;
        let now = tokio::time::Instant::now();
        if self.next_warning.is_none_or(|at| now >= at) {
            tracing::warn!(
                listener,
                %error,
                failures = self.failures,
                pause_ms = self.delay.as_millis() as u64,
                "accept failed; backing off (warned once a minute)"
            );
            self.failures = 0;
            self.next_warning = Some(now + AcceptBackoff::WARN_EVERY);
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(AcceptBackoff::MAX);
        tokio::time::sleep(delay).await;
    }

    /// An accept succeeded: the next failure pauses the shortest time again.
    pub fn succeeded(&mut self) {
        self.delay = AcceptBackoff::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_backs_off_doubling_to_the_cap_and_a_success_resets_it() {
        // Issue 16: EMFILE made the accept loops log 248 "accept failed" lines in 5 s.
        let e = std::io::Error::from_raw_os_error(24); // EMFILE
        let mut b = AcceptBackoff::default();
        let mut pauses = Vec::new();
        for _ in 0..8 {
            let t0 = tokio::time::Instant::now();
            b.failed("test", &e).await;
            pauses.push(t0.elapsed().as_millis());
        }
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        // One warning for the first failure; the next is due a minute later.
        assert_eq!(b.failures, 7);
        b.succeeded();
        let t0 = tokio::time::Instant::now();
        b.failed("test", &e).await;
        assert_eq!(t0.elapsed().as_millis(), 50);
    }
}
