//! The embedded broker: iohub's bus, in process, with an MQTT 3.1.1 and 5.0 front end.
//!
//! The core, which knows nothing of MQTT clients:
//! - [`router`] matches topics, fans every publish out into one bounded queue per subscription
//!   and keeps the retained store, under one lock (one global order; a new subscription gets
//!   every retained message published before it, then every live one after it). Loss is bounded
//!   and counted: QoS0 deliveries into a full queue are dropped and counted; QoS1 deliveries make
//!   the publishing MQTT client wait (its socket is not read) until the queue drains.
//! - [`Bus`] is the typed async API the rest of iohub uses: publish to a
//!   [`bus_schema::Topic`], subscribe to a filter, request/reply.
//! - `filter` is the MQTT topic/filter algebra (validity, matching, filter against filter) and
//!   [`Acl`] the topic access control built on it; the router applies an ACL at delivery.
//!
//! The front end depends on the core, never the reverse: TCP clients are terminated by our own
//! MQTT front end ([`listener`]: authentication or anonymous access, ACL, limits,
//! TCP_NODELAY/QUICKACK, handshake timeouts), opened with [`listener::listen`] on a [`Bus`] or
//! [`Broker::listen`] for the broker's lifetime.
//!
//! rumqttd's router was the bus until its per-filter commit log proved lossy under fan-in (a
//! lagging reader's cursor jumps when the log rolls, silently, even at QoS1) and heavy (4 MiB per
//! filter, 95 MiB after 300k messages): see ARCHITECTURE.md.

mod acl;
pub mod bus;
mod filter;
pub mod listener;
pub mod retained;
pub mod router;

pub use acl::Acl;
pub use bus::{Bus, BusClientError, Message, MessageProperties, Subscription};
pub use filter::MAX_FILTER_LEVELS;
pub use listener::{
    AcceptBackoff, Auth, ControlCredentials, ListenerConfig, ListenerHandle, ListenerLimits,
    ListenerStats, ListenerStatsSnapshot, SessionStoreConfig,
};
pub use router::{RetainedLimits, RouterStats};

use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bus::FrontEnd;

/// Bounds of the router for in-process subscriptions and of the retained store (MQTT clients'
/// queues are bounded by their listener's [`ListenerLimits`]).
#[derive(Debug, Clone)]
pub struct RouterLimits {
    /// Messages queued per in-process subscription before MQTT publishers into it wait (see
    /// [`router`]).
    pub max_queued_messages: usize,
    /// Messages queued per in-process subscription before any delivery is dropped (in-process
    /// publishers never wait).
    pub max_queued_messages_hard: usize,
    /// Bytes (topics and payloads) queued per in-process subscription before MQTT publishers
    /// into it wait.
    pub max_queued_bytes: usize,
    /// Bytes queued per in-process subscription past which deliveries are dropped.
    pub max_queued_bytes_hard: usize,
    /// Bytes queued in all MQTT clients' subscription queues together; a delivery past it is
    /// dropped and counted (see [`router`]).
    pub max_client_queued_bytes: usize,
    /// Nodes of the subscription tree past which MQTT clients' filters are refused (SUBACK
    /// failure); a node is a filter level not shared with another filter.
    pub max_client_filter_nodes: usize,
    /// Bytes of the tree's level names past which MQTT clients' filters are refused.
    pub max_client_filter_bytes: usize,
    pub retained: RetainedLimits,
}

impl Default for RouterLimits {
    fn default() -> RouterLimits {
        RouterLimits {
            max_queued_messages: 10_000,
            max_queued_messages_hard: 200_000,
            max_queued_bytes: 64 << 20,
            max_queued_bytes_hard: 256 << 20,
            max_client_queued_bytes: 256 << 20,
            max_client_filter_nodes: 100_000,
            max_client_filter_bytes: 16 << 20,
            retained: RetainedLimits {
                max_topics: 100_000,
                max_bytes: 32 << 20,
            },
        }
    }
}

/// Errors starting or running the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("listener {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
}

/// A running broker. Drop or [`Broker::shutdown`] stops the listeners and closes the bus.
pub struct Broker {
    bus: Bus,
    /// Front ends kept for the broker's lifetime (the listeners opened with [`Broker::listen`]).
    kept: Mutex<Vec<FrontEnd>>,
}

impl Broker {
    /// Start the router. Listeners are added with [`Broker::listen`] or [`listener::listen`].
    pub fn start(limits: RouterLimits) -> Result<Broker, BrokerError> {
        if limits.max_queued_messages == 0
            || limits.max_queued_messages_hard < limits.max_queued_messages
            || limits.max_queued_bytes == 0
            || limits.max_queued_bytes_hard < limits.max_queued_bytes
        {
            return Err(BrokerError::Config(format!(
                "router queues: need 0 < max_queued_messages ({}) <= max_queued_messages_hard ({}) \
                 and 0 < max_queued_bytes ({}) <= max_queued_bytes_hard ({})",
                limits.max_queued_messages,
                limits.max_queued_messages_hard,
                limits.max_queued_bytes,
                limits.max_queued_bytes_hard
            )));
        }
        Ok(Broker {
            bus: Bus::new(limits, CancellationToken::new()),
            kept: Mutex::new(Vec::new()),
        })
    }

    /// The in-process bus.
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// Keep `front_end` attached until the broker stops.
    pub(crate) fn keep(&self, front_end: FrontEnd) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(front_end);
    }

    /// Stop accepting, close client connections and wait for them, at most `within`.
    pub async fn shutdown(self, within: Duration) {
        self.bus.shutdown();
        let tasks = self.bus.tasks().clone();
        tasks.close();
        if tokio::time::timeout(within, tasks.wait()).await.is_err() {
            tracing::warn!(?within, "broker connections did not close in time");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.bus.shutdown();
    }
}
