//! The bridge service's retained state payload: the `facts` of `iohub/state/bridge`.

use serde::Serialize;

use crate::ctx::Backend;

/// `facts` of `iohub/state/bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeFacts {
    pub backend: Backend,
    pub enabled: bool,
    pub remotes: Vec<RemoteFacts>,
}

/// One remote: its link and its queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoteFacts {
    pub name: String,
    pub connected: bool,
    /// When it last connected or lost its connection (ms since the epoch).
    pub since_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub connects: u64,
    pub connect_failures: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub queued_messages: u64,
    pub queued_bytes: u64,
    pub budget_bytes: u64,
    /// Age of the oldest queued message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_ms: Option<u64>,
    pub in_flight: u64,
    /// Messages the remote acknowledged (PUBACK).
    pub sent: u64,
    /// Messages sent again after a reconnection or a restart (possible duplicates).
    pub redelivered: u64,
    /// Acknowledged messages per second over the last interval (the replay rate of a backlog).
    pub sent_per_sec: u64,
    pub dropped: DroppedFacts,
    pub disk_bytes: u64,
}

/// Messages dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DroppedFacts {
    pub ttl: u64,
    pub budget: u64,
    pub corrupt: u64,
    /// Lost before the queue: the local subscription overflowed, or the queue refused a write.
    pub local: u64,
}
