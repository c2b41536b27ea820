//! How to reach one remote broker: its addresses (tried in turn, for a cluster), TLS with a
//! pinned CA and an optional client certificate, credentials, and the reconnection backoff.

use std::time::Duration;

use rand::Rng;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// One remote broker (or cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Names the remote in state and logs.
    pub name: String,
    /// `(host, port)` of each node; a failed connection moves on to the next one.
    pub addresses: Vec<(String, u16)>,
    pub tls: Option<Tls>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_id: String,
    pub keep_alive_secs: u16,
    /// Publishes awaiting their PUBACK at once (the replay window).
    pub max_inflight: u16,
    pub backoff: Backoff,
}

/// TLS towards the remote.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA certificates trusted (PEM), and no others: pin a CA, or pass the system's bundle.
    pub ca_pem: Vec<u8>,
    /// Client certificate chain and private key, PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// Exponential backoff with full jitter between connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            min_ms: 250,
            max_ms: 30_000,
        }
    }
}

impl Backoff {
    /// The wait before attempt `failures + 1`: uniform in `[min, min(max, min * 2^failures)]`,
    /// so a fleet that lost its broker at once does not come back at once.
    pub fn delay(&self, failures: u32) -> Duration {
        let cap = self
            .min_ms
            .saturating_mul(1u64 << failures.min(20))
            .min(self.max_ms)
            .max(self.min_ms);
        Duration::from_millis(rand::thread_rng().gen_range(self.min_ms..=cap))
    }
}

impl Remote {
    /// The rumqttc options for node `index` (modulo the number of nodes).
    pub(crate) fn options(&self, index: usize) -> MqttOptions {
        let (host, port) = &self.addresses[index % self.addresses.len()];
        let mut o = MqttOptions::new(&self.client_id, host, *port);
        // The queue keeps what is not acked and sends it again on the next connection, so the
        // session itself need not survive (and a clean one never replays a stale window).
        o.set_clean_session(true);
        o.set_keep_alive(Duration::from_secs(u64::from(self.keep_alive_secs.max(1))));
        o.set_inflight(self.max_inflight.max(1));
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &self.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
                ca: tls.ca_pem.clone(),
                alpn: None,
                client_auth: tls.client.clone(),
            }));
        }
        o
    }

    /// `host:port` of node `index`.
    pub fn address(&self, index: usize) -> String {
        let (host, port) = &self.addresses[index % self.addresses.len()];
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_its_bounds() {
        let b = Backoff {
            min_ms: 100,
            max_ms: 1_000,
        };
        for failures in 0..40 {
            for _ in 0..20 {
                let d = b.delay(failures).as_millis() as u64;
                let cap = (100u64 << failures.min(20)).min(1_000);
                assert!((100..=cap).contains(&d), "{failures}: {d}");
            }
        }
    }
}
