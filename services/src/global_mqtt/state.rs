//! What the global MQTT service publishes besides its plan: its own state's facts, the broker's
//! state (`iohub/state/broker`: connections, subscriptions, messages, retained, drops, RSS) and
//! the same figures as Prometheus text.

use std::fmt::Write;

use broker::{Bus, ListenerStatsSnapshot, RouterStats};
use serde::Serialize;

/// The facts of `iohub/state/broker`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokerFacts {
    /// Clients connected, all listeners.
    pub connections: u64,
    /// Subscriptions with at least one filter (in-process and MQTT clients).
    pub subscriptions: u64,
    /// PUBLISH packets from MQTT clients, all listeners.
    pub messages_in: u64,
    /// PUBLISH packets to MQTT clients, all listeners.
    pub messages_out: u64,
    pub retained: u64,
    pub retained_bytes: u64,
    /// Every message lost to a slow or absent subscriber: router queue drops (QoS0 past the
    /// bound, QoS1 past the hard bound), output-buffer drops of MQTT clients, and messages for
    /// absent clients past their persistent session's bounds.
    pub dropped: u64,
    pub rss_bytes: u64,
    pub router: RouterStats,
    pub listeners: std::collections::BTreeMap<String, ListenerStatsSnapshot>,
}

/// Resident set size of this process, from `/proc/self/statm` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub fn broker_facts(bus: &Bus) -> BrokerFacts {
    let router = bus.stats();
    let listeners: std::collections::BTreeMap<_, _> = broker::listener::all_stats(bus)
        .into_iter()
        .map(|(name, s)| (name, s.snapshot()))
        .collect();
    let sum = |f: fn(&ListenerStatsSnapshot) -> u64| listeners.values().map(f).sum::<u64>();
    BrokerFacts {
        connections: sum(|s| s.connections),
        subscriptions: router.subscriptions,
        messages_in: sum(|s| s.messages_in),
        messages_out: sum(|s| s.messages_out),
        retained: router.retained,
        retained_bytes: router.retained_bytes,
        dropped: router.dropped_qos0
            + router.dropped_qos1
            + sum(|s| s.dropped_output)
            + sum(|s| s.session_dropped),
        rss_bytes: rss_bytes(),
        router,
        listeners,
    }
}

/// The read-only `$SYS/broker/...` topics that mosquitto publishes and tools such as MQTT
/// Explorer read, from the same figures as `iohub/state/broker`; published retained at QoS0
/// every [`super::TICK`], each only when its value changed. The values are mosquitto's formats
/// (`N seconds` for the uptime, decimal numbers); `messages/*` count PUBLISH packets only.
pub struct SysTopics {
    started: std::time::Instant,
    last: std::collections::HashMap<&'static str, String>,
}

impl Default for SysTopics {
    fn default() -> SysTopics {
        SysTopics {
            started: std::time::Instant::now(),
            last: std::collections::HashMap::new(),
        }
    }
}

impl SysTopics {
    /// Every topic with its value now.
    pub fn all(&self, f: &BrokerFacts) -> Vec<(&'static str, String)> {
        let sum = |g: fn(&ListenerStatsSnapshot) -> u64| f.listeners.values().map(g).sum::<u64>();
        vec![
            (
                "$SYS/broker/version",
                format!("iohubd {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", self.started.elapsed().as_secs()),
            ),
            ("$SYS/broker/clients/connected", f.connections.to_string()),
            ("$SYS/broker/messages/received", f.messages_in.to_string()),
            ("$SYS/broker/messages/sent", f.messages_out.to_string()),
            (
                "$SYS/broker/publish/messages/dropped",
                f.dropped.to_string(),
            ),
            (
                "$SYS/broker/bytes/received",
                sum(|s| s.bytes_in).to_string(),
            ),
            ("$SYS/broker/bytes/sent", sum(|s| s.bytes_out).to_string()),
            (
                "$SYS/broker/subscriptions/count",
                f.router.filters.to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                f.retained.to_string(),
            ),
            (
                "$SYS/broker/store/messages/count",
                sum(|s| s.session_records).to_string(),
            ),
        ]
    }

    /// The topics whose value changed since the last call.
    pub fn changed(&mut self, f: &BrokerFacts) -> Vec<(&'static str, String)> {
        let mut out = self.all(f);
        out.retain(|(topic, value)| self.last.get(topic) != Some(value));
        for (topic, value) in &out {
            self.last.insert(topic, value.clone());
        }
        out
    }
}

/// Prometheus text exposition (version 0.0.4) of the broker's figures.
pub fn prometheus(f: &BrokerFacts) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per = |g: fn(&ListenerStatsSnapshot) -> u64| -> Vec<(String, u64)> {
        f.listeners
            .iter()
            .map(|(n, s)| (format!("{{listener=\"{n}\"}}"), g(s)))
            .collect()
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "iohub_broker_connections",
        "gauge",
        "Connected MQTT clients.",
        per(|s| s.connections),
    );
    metric(
        "iohub_broker_connections_accepted_total",
        "counter",
        "MQTT clients accepted.",
        per(|s| s.connections_total),
    );
    metric(
        "iohub_broker_messages_in_total",
        "counter",
        "PUBLISH packets received from clients.",
        per(|s| s.messages_in),
    );
    metric(
        "iohub_broker_messages_out_total",
        "counter",
        "PUBLISH packets sent to clients.",
        per(|s| s.messages_out),
    );
    metric(
        "iohub_broker_client_dropped_total",
        "counter",
        "Messages dropped for slow clients.",
        per(|s| s.dropped),
    );
    metric(
        "iohub_broker_backpressure_waits_total",
        "counter",
        "Times a QoS1 publisher was paused for a full subscriber queue.",
        per(|s| s.backpressure_waits),
    );
    metric(
        "iohub_broker_refused_auth_total",
        "counter",
        "CONNECTs refused for credentials or will topic.",
        per(|s| s.refused_auth),
    );
    metric(
        "iohub_broker_refused_limit_total",
        "counter",
        "Connections refused by a limit.",
        per(|s| s.refused_limit),
    );
    metric(
        "iohub_broker_publish_denied_total",
        "counter",
        "Client publishes dropped by the ACL.",
        per(|s| s.publish_denied),
    );
    metric(
        "iohub_broker_subscribe_denied_total",
        "counter",
        "SUBSCRIBE filters refused.",
        per(|s| s.subscribe_denied),
    );
    let r = &f.router;
    metric(
        "iohub_broker_published_total",
        "counter",
        "Messages published on the bus.",
        one(r.published),
    );
    metric(
        "iohub_broker_delivered_total",
        "counter",
        "Messages queued to subscriptions.",
        one(r.delivered),
    );
    metric(
        "iohub_broker_router_dropped_total",
        "counter",
        "Deliveries dropped at a full subscription queue, by delivery QoS.",
        vec![
            ("{qos=\"0\"}".into(), r.dropped_qos0),
            ("{qos=\"1\"}".into(), r.dropped_qos1),
        ],
    );
    metric(
        "iohub_broker_dropped_total",
        "counter",
        "Every message lost to a slow subscriber.",
        one(f.dropped),
    );
    metric(
        "iohub_broker_subscriptions",
        "gauge",
        "Subscriptions with at least one filter.",
        one(r.subscriptions),
    );
    metric(
        "iohub_broker_queued_messages",
        "gauge",
        "Messages waiting in subscription queues.",
        one(r.queued),
    );
    metric(
        "iohub_broker_retained_messages",
        "gauge",
        "Retained topics held.",
        one(r.retained),
    );
    metric(
        "iohub_broker_retained_bytes",
        "gauge",
        "Bytes of retained topics and payloads.",
        one(r.retained_bytes),
    );
    metric(
        "iohub_broker_sessions",
        "gauge",
        "Persistent MQTT sessions kept (connected or not).",
        per(|s| s.sessions),
    );
    metric(
        "iohub_broker_session_dropped_total",
        "counter",
        "Messages for absent clients dropped at their session's bounds.",
        per(|s| s.session_dropped),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of iohubd.",
        one(f.rss_bytes),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_a_type_line_per_metric_and_labels_per_listener() {
        let mut listeners = std::collections::BTreeMap::new();
        listeners.insert(
            "apps".to_string(),
            ListenerStatsSnapshot {
                connections: 2,
                dropped: 5,
                ..Default::default()
            },
        );
        let facts = BrokerFacts {
            connections: 2,
            subscriptions: 1,
            messages_in: 0,
            messages_out: 0,
            retained: 3,
            retained_bytes: 30,
            dropped: 5,
            rss_bytes: 4096,
            router: RouterStats::default(),
            listeners,
        };
        let text = prometheus(&facts);
        assert!(
            text.contains("iohub_broker_connections{listener=\"apps\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("iohub_broker_dropped_total 5\n"));
        assert!(text.contains("# TYPE iohub_broker_retained_messages gauge\n"));
        let names = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(names, helps);
    }
}
