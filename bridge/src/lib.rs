//! The bridge: chosen local topics carried to remote MQTT brokers (and chosen remote topics
//! back), through a disk queue that keeps every message until the remote acknowledged it.
//!
//! - [`map`]: topic maps (filter -> template, wildcard levels carried across, `{box}`), loops
//!   refused when the maps are made.
//! - [`remote`]: how to reach a remote: nodes tried in turn, TLS with a pinned CA and an optional
//!   client certificate, credentials, backoff with jitter.
//! - [`link`]: one remote's connection, maps and queue ([`bridge_queue`]): QoS1 out, a record
//!   removed only on PUBACK, a window of publishes in flight for replay at link speed.
//!
//! MQTT 3.1.1 towards the remote (rumqttc's v4 client).

pub mod link;
pub mod map;
pub mod remote;

pub use bridge_queue as queue;
pub use link::{Inbound, Link, LinkState};
pub use map::{Direction, MapError, MapSpec, Maps};
pub use remote::{Backoff, Remote, Tls};

/// A failure of the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Queue(#[from] bridge_queue::Error),
}
