//! The embedded broker: rumqttd's router is the bus; this crate is the only one that names
//! rumqttd types.
//!
//! - [`Broker::start`] spawns rumqttd's `Router` (its own thread) and a *feeder* thread that owns
//!   every `LinkTx` (rumqttd's link sends and `LinkBuilder::build` block, so they never run on a
//!   tokio worker). It never calls `rumqttd::Broker::start`, which blocks forever, spawns a runtime
//!   per listener and cannot shut down.
//! - [`Bus`] is the typed async API the rest of iohub uses: publish to a [`bus_schema::Topic`], subscribe to a
//!   filter, request/reply.
//! - Retained messages are kept by [`retained::RetainedStore`], not by rumqttd: rumqttd forwards at
//!   most `max_outgoing_packet_count` retained messages to a wildcard subscriber and none on a
//!   re-subscribe. Every subscription first gets *every* matching retained message from our store,
//!   then live traffic.
//! - TCP clients are terminated by our own MQTT front end ([`listener`]), which maps each client
//!   onto an in-process link (TCP_NODELAY, authentication, topic ACL, handshake timeouts).
//! - The router only carries QoS0; the QoS a message was published with rides along as a publish
//!   property ([`bus`] explains), so MQTT clients get `min(publish QoS, granted QoS)`.

pub mod bus;
mod feeder;
pub mod listener;
pub mod retained;

pub use bus::{Bus, BusClientError, Message, Subscription};
pub use listener::{
    Acl, ControlCredentials, ListenerConfig, ListenerLimits, ListenerStats, ListenerStatsSnapshot,
};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bounds of the router.
///
/// Memory per subscribed filter: rumqttd keeps one in-memory commit log per distinct filter, of
/// at most `segment_count` segments of `segment_bytes` each (a segment may overshoot by its last
/// message; topic and payload bytes are counted, not the small per-message overhead). When the
/// log is full the oldest segment is dropped, whether or not every subscriber has read it: a
/// subscriber that lags by more than `segment_bytes * segment_count` misses the oldest messages
/// (rumqttd logs a "cursor jumped" warning) instead of the broker growing. On top of that each
/// link buffers at most about `200 + max_outgoing_packet_count` messages the router already
/// handed to it. rumqttd's defaults are 100 MiB x 10; ours are 1 MiB x 4. `segment_bytes` must
/// be at least 1024 (rumqttd's minimum).
#[derive(Debug, Clone)]
pub struct RouterLimits {
    pub max_connections: usize,
    pub segment_bytes: usize,
    pub segment_count: usize,
    pub max_outgoing_packet_count: u64,
}

impl Default for RouterLimits {
    fn default() -> RouterLimits {
        RouterLimits {
            max_connections: 10_000,
            segment_bytes: 1 << 20,
            segment_count: 4,
            max_outgoing_packet_count: 200,
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
    #[error("broker thread: {0}")]
    Thread(std::io::Error),
    #[error("router link: {0}")]
    Link(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// A running broker. Drop or [`Broker::shutdown`] stops the listeners and closes the bus.
pub struct Broker {
    bus: Bus,
    cancel: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
    listeners: Mutex<HashMap<String, ListenerStats>>,
}

impl Broker {
    /// Start the router and the feeder thread. Listeners are added with [`Broker::listen`].
    pub fn start(limits: RouterLimits) -> Result<Broker, BrokerError> {
        // rumqttd panics (in the router thread) on a smaller segment.
        if limits.segment_bytes < 1024 || limits.segment_count == 0 {
            return Err(BrokerError::Config(format!(
                "router segments must be at least 1024 bytes x 1, got {} x {}",
                limits.segment_bytes, limits.segment_count
            )));
        }
        let config = rumqttd::RouterConfig {
            max_connections: limits.max_connections,
            max_outgoing_packet_count: limits.max_outgoing_packet_count,
            max_segment_size: limits.segment_bytes,
            max_segment_count: limits.segment_count,
            ..Default::default()
        };
        let router_tx = rumqttd::Router::new(0, config).spawn();
        let feeder = feeder::Feeder::start(move |client_id: &str| {
            rumqttd::local::LinkBuilder::new(client_id, router_tx.clone())
                .build()
                .map_err(|e| e.to_string())
        })
        .map_err(BrokerError::Thread)?;
        let cancel = CancellationToken::new();
        Ok(Broker {
            bus: Bus::new(feeder, cancel.clone()),
            cancel,
            tasks: tokio_util::task::TaskTracker::new(),
            listeners: Mutex::new(HashMap::new()),
        })
    }

    /// The in-process bus.
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// Serve MQTT clients on a TCP listener; returns the bound address (bind `:0` in tests).
    /// Listener names must be unique; [`Broker::listener_stats`] finds a listener's counters.
    pub async fn listen(
        &self,
        config: ListenerConfig,
    ) -> Result<std::net::SocketAddr, BrokerError> {
        let name = config.name.clone();
        if self.listeners().contains_key(&name) {
            return Err(BrokerError::Config(format!(
                "a listener named {name:?} already exists"
            )));
        }
        let (addr, stats) =
            listener::spawn(&self.tasks, self.bus.clone(), config, self.cancel.clone()).await?;
        self.listeners().insert(name, stats);
        Ok(addr)
    }

    /// Counters of the listener named `name`.
    pub fn listener_stats(&self, name: &str) -> Option<ListenerStats> {
        self.listeners().get(name).cloned()
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, ListenerStats>> {
        // No code that can panic runs under this lock.
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop accepting, close client connections and wait for them, at most `within`.
    pub async fn shutdown(self, within: Duration) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?within, "broker connections did not close in time");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
