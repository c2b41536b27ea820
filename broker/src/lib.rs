//! The embedded broker: rumqttd's router is the bus; this crate is the only one that names
//! rumqttd types.
//!
//! - [`Broker::start`] spawns rumqttd's `Router` (its own thread) and a *feeder* thread that owns
//!   every `LinkTx` (rumqttd's link sends and `LinkBuilder::build` block, so they never run on a
//!   tokio worker). It never calls `rumqttd::Broker::start`, which blocks forever, spawns a runtime
//!   per listener and cannot shut down.
//! - [`Bus`] is the typed async API the rest of iohub uses: publish to a [`Topic`], subscribe to a
//!   filter, request/reply.
//! - Retained messages are kept by [`retained::RetainedStore`], not by rumqttd: rumqttd forwards at
//!   most `max_outgoing_packet_count` retained messages to a wildcard subscriber and none on a
//!   re-subscribe. Every subscription first gets *every* matching retained message from our store,
//!   then live traffic.
//! - TCP clients are terminated by our own MQTT front end ([`listener`]), which maps each client
//!   onto an in-process link (TCP_NODELAY, authentication, topic ACL, handshake timeouts).

pub mod bus;
mod feeder;
pub mod listener;
pub mod retained;

pub use bus::{Bus, BusClientError, Message, Subscription};
pub use listener::{ControlCredentials, ListenerConfig};

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bounds of the router: the in-memory log rumqttd keeps per subscribed filter is at most
/// `segment_bytes * segment_count` (rumqttd's default is 100 MiB x 10).
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
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("broker thread: {0}")]
    Thread(std::io::Error),
    #[error("router link: {0}")]
    Link(String),
}

/// A running broker. Drop or [`Broker::shutdown`] stops the feeder and the listeners.
pub struct Broker {
    bus: Bus,
    cancel: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
}

impl Broker {
    /// Start the router and the feeder thread. Listeners are added with [`Broker::listen`].
    pub fn start(limits: RouterLimits) -> Result<Broker, BrokerError> {
        let config = rumqttd::RouterConfig {
            max_connections: limits.max_connections,
            max_outgoing_packet_count: limits.max_outgoing_packet_count,
            max_segment_size: limits.segment_bytes,
            max_segment_count: limits.segment_count,
            ..Default::default()
        };
        let router_tx = rumqttd::Router::new(0, config).spawn();
        let feeder = feeder::Feeder::start(move |client_id: &str| {
            rumqttd::local::LinkBuilder::new(client_id, router_tx.clone()).build()
        })
        .map_err(BrokerError::Thread)?;
        let cancel = CancellationToken::new();
        Ok(Broker {
            bus: Bus::new(feeder, cancel.clone()),
            cancel,
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    /// The in-process bus.
    pub fn bus(&self) -> Bus {
        self.bus.clone()
    }

    /// Serve MQTT clients on a TCP listener; returns the bound address (bind `:0` in tests).
    pub async fn listen(&self, config: ListenerConfig) -> Result<std::net::SocketAddr, BrokerError> {
        listener::spawn(&self.tasks, self.bus.clone(), config, self.cancel.clone()).await
    }

    /// Stop accepting, close client connections and wait for them, at most `within`.
    pub async fn shutdown(self, within: Duration) {
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(within, self.tasks.wait()).await.is_err() {
            tracing::warn!(?within, "broker connections did not close in time");
        }
    }
}
