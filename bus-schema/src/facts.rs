//! `facts` payloads that one service publishes in its state and other services consume. They
//! are the data dependencies between services (DESIGN.md §4): the firewall, routes and dhcp
//! services follow [`NetworkFacts`] rather than a start order.

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sections::{Ipv4Cidr, NetworkMode};

/// The `facts` of `iohub/state/network`: the real interfaces behind each role, as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkFacts {
    pub mode: NetworkMode,
    /// The uplink interface (the ETH0 role: eth0, or the WiFi client interface); none when the
    /// network is not managed or no device was found.
    pub wan: Option<String>,
    /// The uplink's address, static or leased.
    pub wan_address: Option<Ipv4Cidr>,
    /// The default gateway, static or leased.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers in use (static, or from the lease).
    pub dns: Vec<Ipv4Addr>,
    /// The DHCP lease of the uplink, in DHCP mode once bound.
    pub lease: Option<DhcpLease>,
    /// The LAN interface in router mode (`br1`), none in standalone mode.
    pub lan: Option<String>,
    /// The LAN interface's address and prefix (ETH1 IP and netmask) in router mode.
    pub lan_cidr: Option<Ipv4Cidr>,
    /// The member ports of the LAN bridge (the ETH1 device, the WiFi AP interface).
    pub lan_ports: Vec<String>,
    /// Whether IPv4 forwarding is on.
    pub ip_forward: bool,
}

/// A DHCP lease held by the box's own client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DhcpLease {
    pub address: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    /// When the lease was obtained (ms since the Unix epoch).
    pub obtained_ms: u64,
}

/// Where the global broker's Docker side is (`facts.docker` of `iohub/state/global_mqtt`): the
/// apps service waits for `ready` before it starts apps that join the broker's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DockerSide {
    /// Plan-only backend, or the broker is off.
    #[default]
    None,
    /// `IOHUBOS_DOCKER_ENABLED=false`.
    Disabled,
    /// Not reachable or not set up yet; retried (the state's `last_error` says why).
    Failed,
    /// The network and the placeholder exist and the apps listener is bound in its namespace.
    Ready,
}

/// The `facts` of `iohub/state/global_mqtt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalMqttFacts {
    /// The apps listener on the host.
    pub listen: Option<String>,
    /// Its MQTT-over-WebSocket listener.
    pub websocket: Option<String>,
    /// The Prometheus endpoint.
    pub metrics: Option<String>,
    pub anonymous: bool,
    /// The read-only mirror of `iohub/` topics for apps.
    pub mirror: Vec<String>,
    pub container_name: String,
    pub network_name: String,
    /// Apps' retained messages restored at start.
    pub restored_retained: usize,
    pub docker: DockerSide,
    /// The placeholder container's PID, whose network namespace the listener is bound in.
    pub container_pid: Option<u32>,
}
