//! Effects of the global MQTT broker: the apps listener (opened, replaced or closed as the plan
//! says) and the apps' retained messages, persisted under `<root>/runtime/` with
//! `atomic_write` (debounced while running, and once more at shutdown) and restored at start.
//!
//! The snapshot holds every retained message outside the control tree (the control plane
//! re-publishes its own at start). Format: `IOHUBRET1\n`, then per message a u32 (big endian)
//! topic length, the topic, the QoS byte, a u32 payload length, the payload. Its size is bounded
//! by the broker's retained store limits.

use std::path::Path;

use broker::{Bus, ListenerConfig, ListenerHandle, ListenerLimits};
use bus_schema::topic::ROOT;
use bus_schema::{BusError, ErrorCode};
use bytes::Bytes;

use super::plan::ListenerPlan;

const MAGIC: &[u8] = b"IOHUBRET1\n";

/// Whether a retained topic belongs to the apps (everything outside the control tree).
pub fn is_app_topic(topic: &str) -> bool {
    let first = topic.split('/').next();
    first != Some(ROOT) && first != Some("$SYS")
}

pub fn encode(entries: &[(String, broker::retained::Retained)]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|(t, r)| 9 + t.len() + r.payload.len())
        .sum();
    let mut out = Vec::with_capacity(MAGIC.len() + size);
    out.extend_from_slice(MAGIC);
    for (topic, r) in entries {
        out.extend_from_slice(&(topic.len() as u32).to_be_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.push(r.qos);
        out.extend_from_slice(&(r.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&r.payload);
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<(String, Bytes, u8)>, String> {
    let mut rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a retained snapshot (bad magic)")?;
    let mut out = Vec::new();
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("truncated retained snapshot".into());
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, String> {
        let b = take(rest, 4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    while !rest.is_empty() {
        let n = len(&mut rest)?;
        let topic = std::str::from_utf8(take(&mut rest, n)?)
            .map_err(|_| "a topic is not UTF-8".to_string())?
            .to_string();
        let qos = take(&mut rest, 1)?[0].min(2);
        let n = len(&mut rest)?;
        let payload = Bytes::copy_from_slice(take(&mut rest, n)?);
        if topic.is_empty() || topic.contains(['+', '#', '\0']) || !is_app_topic(&topic) {
            return Err(format!("bad topic {topic:?} in retained snapshot"));
        }
        out.push((topic, payload, qos));
    }
    Ok(out)
}

/// Write the apps' retained messages if the store changed since `saved`; returns the generation
/// written (or `saved`).
pub async fn save_retained(bus: &Bus, path: &Path, saved: u64) -> Result<u64, BusError> {
    if bus.retained_generation() == saved {
        return Ok(saved);
    }
    let (generation, entries) = bus.retained_snapshot(is_app_topic);
    let bytes = encode(&entries);
    sys::fs::atomic_write_async(path.to_path_buf(), bytes, 0o600)
        .await
        .map_err(|e| BusError::new(ErrorCode::Io, format!("{}: {e}", path.display())))?;
    Ok(generation)
}

/// Re-publish a snapshot's messages as retained, unless the bus already holds app retained
/// messages (a service restart within a running daemon must not roll them back). Returns how
/// many were restored.
pub async fn restore_retained(bus: &Bus, path: &Path) -> Result<usize, BusError> {
    let bytes = match tokio::fs::read(path).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(BusError::new(
                ErrorCode::Io,
                format!("{}: {e}", path.display()),
            ))
        }
    };
    if !bus.retained_snapshot(is_app_topic).1.is_empty() {
        return Ok(0);
    }
    let entries = decode(&bytes)
        .map_err(|e| BusError::new(ErrorCode::BadPayload, format!("{}: {e}", path.display())))?;
    let n = entries.len();
    for (topic, payload, qos) in entries {
        bus.publish_raw_qos(&topic, payload, qos, true)
            .await
            .map_err(|e| BusError::new(ErrorCode::Internal, e.to_string()))?;
    }
    Ok(n)
}

/// Which of the apps listeners (same ACL, login and limits; names as in `iohub/state/broker`).
pub enum AppsListener {
    /// `apps`: on the host, at the plan's address (the `global_mqtt_listen` setting).
    Host,
    /// `apps-docker`: on a socket bound in the placeholder container's namespace.
    Docker(std::net::TcpListener),
    /// `apps-ws`: MQTT over WebSocket at the plan's WebSocket address.
    WebSocket(std::net::SocketAddr),
}

/// Open one of the apps listeners the plan asks for.
/// Each keeps its clients' persistent sessions in `<runtime>/broker/<listener name>/`.
pub async fn open_listener(
    bus: &Bus,
    plan: &ListenerPlan,
    credentials: Option<broker::ControlCredentials>,
    which: AppsListener,
    runtime: &std::path::Path,
) -> Result<ListenerHandle, BusError> {
    let mut config = ListenerConfig::apps(plan.addr, plan.mirror.clone());
    config.auth = broker::Auth {
        credentials,
        anonymous: plan.anonymous,
    };
    config.limits = ListenerLimits {
        max_queued_messages: plan.max_queued_messages,
        max_queued_messages_hard: plan.max_queued_messages.saturating_mul(16),
        ..ListenerLimits::default()
    };
    let unavailable = |what: &str, e: broker::BrokerError| {
        BusError::new(ErrorCode::Unavailable, format!("{what}: {e}"))
    };
    // An absent client's persistent session holds as many messages as a subscription's queue
    // (mosquitto applies `max_queued_messages` to both).
    let sessions = |name: &str| {
        Some(broker::SessionStoreConfig {
            max_queued_messages: plan.max_queued_messages as u64,
            ..broker::SessionStoreConfig::new(runtime.join("broker").join(name))
        })
    };
    config.sessions = sessions(&config.name);
    match which {
        AppsListener::Host => broker::listener::listen(bus, config)
            .await
            .map_err(|e| unavailable("apps listener", e).with_field("global_mqtt_listen")),
        AppsListener::Docker(socket) => {
            config.name = "apps-docker".into();
            config.sessions = sessions(&config.name);
            if let Ok(addr) = socket.local_addr() {
                config.addr = addr;
            }
            broker::listener::listen_on(bus, config, socket)
                .await
                .map_err(|e| unavailable("apps listener in Docker", e))
        }
        AppsListener::WebSocket(addr) => {
            config.name = "apps-ws".into();
            config.sessions = sessions(&config.name);
            config.addr = addr;
            config.websocket = true;
            broker::listener::listen(bus, config).await.map_err(|e| {
                unavailable("apps WebSocket listener", e)
                    .with_field("IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::retained::Retained;

    #[test]
    fn snapshots_round_trip_and_garbage_is_refused() {
        let entries = vec![
            (
                "a/b".to_string(),
                Retained {
                    payload: Bytes::from_static(b"x"),
                    qos: 1,
                },
            ),
            (
                "c".to_string(),
                Retained {
                    payload: Bytes::from(vec![0u8; 300]),
                    qos: 0,
                },
            ),
        ];
        let bytes = encode(&entries);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            (back[0].0.as_str(), &back[0].1[..], back[0].2),
            ("a/b", &b"x"[..], 1)
        );
        assert_eq!(back[1].1.len(), 300);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"nope").is_err());
        let control = encode(&[(
            format!("{ROOT}/state/x"),
            Retained {
                payload: Bytes::from_static(b"{}"),
                qos: 1,
            },
        )]);
        assert!(decode(&control).is_err());
    }
}
