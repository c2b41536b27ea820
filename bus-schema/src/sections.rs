//! The typed configuration: the registry of every `IOHUBOS_*` variable (SPEC.md §1.2), one typed
//! struct per [`Section`], and [`Config::from_vars`], which turns the merged variables into a
//! validated config and reports every problem at once (SPEC.md §11.3).
//!
//! Rules of [`Config::from_vars`]:
//! * A variable absent from the input takes its registry default. Defaults that are shell
//!   expressions in the original (`IOHUBOS_GLOBAL_MQTT_IMG`, every `IOHUBOS_WIREGUARD_*` from the
//!   deprecated `IOHUBOS_VPN_*`) are resolved the same way; pre-1.0 names (`IOHUBOS_ENGINE_*`) are
//!   honoured when the current name is absent (SPEC.md §1.3).
//! * Booleans accept `true/false`, `yes/no`, `on/off`, `1/0` in any case; empty is false, as in the
//!   original; anything else is an error instead of a silent false.
//! * A value is checked where it takes effect (static ETH0 addresses in static mode, ETH1 in router
//!   mode, the DHCP range when the server runs, WireGuard values when it is enabled, ...). Values
//!   that have no effect are parsed leniently and left out when they do not parse, because the
//!   original ignores them too and an old `/iohub/envvars` must keep loading.
//! * Unknown `IOHUBOS_*` names are not errors here; the config service warns about them.
//! * Secrets are [`Secret`]s and never appear in error messages.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{BusError, ErrorCode, LineError};
use crate::files::{Forward, Route};
use crate::secret::Secret;
use crate::topic::Section;

// ---------------------------------------------------------------------------------------------
// The variable registry
// ---------------------------------------------------------------------------------------------

/// One `IOHUBOS_*` variable: where it belongs, its default in the original, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VarSpec {
    pub name: &'static str,
    /// The config section the variable feeds.
    pub section: Section,
    /// The original's default. A `${...}` default is a shell expression, resolved against the
    /// other variables (see the module docs).
    pub default: &'static str,
    /// Whether the value is a secret (never published, never echoed in errors).
    pub secret: bool,
    pub doc: &'static str,
}

const fn var(
    name: &'static str,
    section: Section,
    default: &'static str,
    doc: &'static str,
) -> VarSpec {
    VarSpec {
        name,
        section,
        default,
        secret: false,
        doc,
    }
}

const fn secret(name: &'static str, section: Section, doc: &'static str) -> VarSpec {
    VarSpec {
        name,
        section,
        default: "",
        secret: true,
        doc,
    }
}

/// Every `IOHUBOS_*` variable of SPEC.md §1.2, plus the `bridge` section of iohub.
#[rustfmt::skip]
pub const VARIABLES: &[VarSpec] = &[
    // System / identity
    var("IOHUBOS_VERSION", Section::System, "1.1.3",
        "Firmware version, from the read-only version file. envvars.d files of a newer version are ignored."),
    var("IOHUBOS_DEVICE", Section::System, "",
        "Install disk written into sysvars by the installer (e.g. `/dev/sda`). Informational: the original ignores it."),
    var("IOHUBOS_HOSTNAME", Section::Network, "",
        "Host name, one RFC 1123 label. sysvars sets `iohub-<MAC of ETH0 without colons>`; empty leaves the host name alone. Also the registry host in image references `<hostname>:<port>/...`."),
    var("IOHUBOS_ETH0_DEVICE", Section::Network, "",
        "Interface name of the ETH0 uplink, fixed at install time (sysvars)."),
    // Services
    var("IOHUBOS_TIMEZONE", Section::System, "America/Los_Angeles",
        "tz database name (`Area/City`); empty leaves the timezone unchanged."),
    var("IOHUBOS_OPENSSH_ENABLED", Section::Ssh, "true",
        "Run sshd and accept tcp/22; TCP forwards of port 22 are refused."),
    var("IOHUBOS_SSH_PUBLIC_KEY", Section::Ssh, "",
        "authorized_keys line(s) for root, one per line."),
    var("IOHUBOS_UPGRADER_ENABLED", Section::Upgrader, "true",
        "Install firmware dropped into `/iohub/firmware/`."),
    var("IOHUBOS_DEPLOYER_ENABLED", Section::Deployer, "true",
        "Install app zips dropped into `/iohub/deploy/`."),
    var("IOHUBOS_DOCKER_ENABLED", Section::Docker, "true",
        "Master switch for Docker: engine, registry, apps. Was `IOHUBOS_ENGINE_ENABLED` before 1.0.0."),
    // Network
    var("IOHUBOS_NETWORK_CONFIG", Section::Network, "true",
        "Manage ETH0, br1 and WiFi. false: interfaces are left alone (firewall, DHCP server and routes still run)."),
    var("IOHUBOS_NETWORK_MODE", Section::Network, "standalone",
        "`standalone` or `router`. Router mode bridges ETH1 (and the WiFi AP) into br1, runs the optional DHCP server there and masquerades towards it."),
    var("IOHUBOS_ETH0_MODE", Section::Network, "dhcp",
        "`dhcp` or `static`. As in the original, an empty value means static."),
    var("IOHUBOS_ETH0_IP", Section::Network, "",
        "Static ETH0 address (required in static mode)."),
    var("IOHUBOS_ETH0_NETMASK", Section::Network, "",
        "Static ETH0 netmask, dotted (`255.255.255.0`) or a prefix length (required in static mode)."),
    var("IOHUBOS_ETH0_GATEWAY", Section::Network, "",
        "Static default gateway, inside the ETH0 network (optional)."),
    var("IOHUBOS_ETH0_DNS", Section::Network, "",
        "Static DNS servers, separated by spaces or commas."),
    var("IOHUBOS_ETH1_DEVICE", Section::Network, "",
        "Router mode: interface bridged into br1 (required in router mode)."),
    var("IOHUBOS_ETH1_IP", Section::Network, "",
        "Router mode: address of br1, also the router handed out by the DHCP server (required in router mode)."),
    var("IOHUBOS_ETH1_NETMASK", Section::Network, "",
        "Router mode: netmask of br1, dotted or a prefix length (required in router mode)."),
    var("IOHUBOS_WIFI_MODE", Section::Wifi, "",
        "Empty or `off`; `client` (WiFi is the uplink instead of ETH0); `ap` (access point bridged into br1, router mode only)."),
    var("IOHUBOS_WIFI_DEVICE", Section::Wifi, "",
        "WiFi interface name, or `auto` for the first wireless interface. Required when WiFi is used."),
    var("IOHUBOS_WIFI_CLIENT_SSID", Section::Wifi, "",
        "Client mode: SSID (1-32 bytes) of the WPA/WPA2-PSK network."),
    secret("IOHUBOS_WIFI_CLIENT_PASS", Section::Wifi,
        "Client mode: WPA passphrase, 8-63 printable ASCII characters."),
    var("IOHUBOS_WIFI_AP_SSID", Section::Wifi, "",
        "AP mode: SSID (1-32 bytes) of the access point."),
    secret("IOHUBOS_WIFI_AP_PASS", Section::Wifi,
        "AP mode: WPA2 passphrase, 8-63 printable ASCII characters."),
    // DHCP server
    var("IOHUBOS_DHCP_SERVER_ENABLED", Section::Dhcp, "false",
        "DHCP server on br1; takes effect in router mode only."),
    var("IOHUBOS_DHCP_SERVER_FROM", Section::Dhcp, "",
        "First address of the dynamic range, inside the ETH1 network (required when the server runs)."),
    var("IOHUBOS_DHCP_SERVER_TO", Section::Dhcp, "",
        "Last address of the dynamic range, not below FROM (required when the server runs)."),
    var("IOHUBOS_DHCP_SERVER_DNS", Section::Dhcp, "",
        "DNS servers handed to clients, separated by commas or spaces; none when empty."),
    // Firewall
    var("IOHUBOS_FIREWALL_CONFIG", Section::Firewall, "true",
        "Manage the firewall and the routes of `/iohub/routes`. false: neither is touched."),
    var("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET", Section::Firewall, "false",
        "Let devices on br1 reach the uplink, the internet and anything routed."),
    // Docker registry
    var("IOHUBOS_DOCKER_REGISTRY_ENABLED", Section::Registry, "true",
        "Run the local registry and import image archives."),
    var("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0", Section::Registry, "false",
        "Accept the registry port from the uplink."),
    var("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1", Section::Registry, "false",
        "Router mode: accept the registry port from br1."),
    var("IOHUBOS_DOCKER_REGISTRY_RESCAN", Section::Registry, "true",
        "Import `docker save` archives dropped into `/iohub/runtime/iohub-registry/`."),
    var("IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE", Section::Registry, "true",
        "Delete each archive after importing it."),
    var("IOHUBOS_DOCKER_REGISTRY_PORT", Section::Registry, "5000",
        "Host TCP port of the registry (empty means 5000); also in image references `<hostname>:<port>/...`."),
    // Admin API
    var("IOHUBOS_ADMIN_API_ENABLED", Section::AdminApi, "false",
        "Serve the admin HTTP API; TCP forwards of its port are refused."),
    var("IOHUBOS_ADMIN_API_SERVER_PORT", Section::AdminApi, "9999",
        "TCP port of the admin API (empty means 9999)."),
    secret("IOHUBOS_ADMIN_API_AUTH_TOKEN", Section::AdminApi,
        "Expected `X-API-Token` header. Must have at least 32 characters with a lowercase letter, an uppercase letter, a digit and a symbol; with a weak or empty token the API runs but answers 403 to every request."),
    // IOhub compatibility (global MQTT broker)
    var("IOHUBOS_GLOBAL_MQTT", Section::GlobalMqtt, "true",
        "Run the IOhub-compatible global broker for apps."),
    var("IOHUBOS_GLOBAL_MQTT_IMG", Section::GlobalMqtt,
        "${IOHUBOS_HOSTNAME}:${IOHUBOS_DOCKER_REGISTRY_PORT}/iohubos/iohubos-mqtt",
        "Image of the original broker container, kept for compatibility (installs up to 1.1.1 carry a literal `:5000`)."),
    var("IOHUBOS_GLOBAL_MQTT_NAME", Section::GlobalMqtt, "ezvpn-global-mqtt",
        "Host name apps use to reach the broker (`<name>:1883`)."),
    var("IOHUBOS_GLOBAL_MQTT_NET", Section::GlobalMqtt, "ezvpn-global-mqtt-net",
        "Docker network apps join to reach the broker."),
    var("IOHUBOS_GLOBAL_MQTT_ANONYMOUS", Section::GlobalMqtt, "true",
        "Accept apps without a login (the original's `allow_anonymous true`). false: only IOHUBOS_GLOBAL_MQTT_USERNAME/_PASSWORD."),
    var("IOHUBOS_GLOBAL_MQTT_USERNAME", Section::GlobalMqtt, "",
        "The one login apps may use (with IOHUBOS_GLOBAL_MQTT_PASSWORD; both or neither)."),
    secret("IOHUBOS_GLOBAL_MQTT_PASSWORD", Section::GlobalMqtt,
        "Password of IOHUBOS_GLOBAL_MQTT_USERNAME."),
    var("IOHUBOS_GLOBAL_MQTT_MIRROR", Section::GlobalMqtt, "",
        "Comma-separated control-plane filters apps may read (e.g. `iohub/state/#`), under iohub/state, plan, config or event only; commands, replies and secrets never. Empty: apps see nothing of the control plane."),
    var("IOHUBOS_GLOBAL_MQTT_MAX_QUEUED", Section::GlobalMqtt, "1000",
        "Messages queued per app subscription before a publisher is held back, then QoS0 dropped and counted (mosquitto's `max_queued_messages`), 1-1000000."),
    var("IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT", Section::GlobalMqtt, "",
        "MQTT over WebSocket (browsers) on this TCP port of the box, same rules as 1883. Empty: off."),
    // WireGuard
    var("IOHUBOS_WIREGUARD_ENABLED", Section::Wireguard, "${IOHUBOS_VPN_ENABLED:-false}",
        "Run the WireGuard client."),
    var("IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_PUBLIC_KEY:-}",
        "Public key of the server peer (base64, 44 characters)."),
    var("IOHUBOS_WIREGUARD_BOX_NUMBER", Section::Wireguard, "${IOHUBOS_VPN_BOX_NUMBER:-}",
        "Host number of this box in the VPN network, unique, greater than 1 (1 is the server), inside the network."),
    var("IOHUBOS_WIREGUARD_NETWORK", Section::Wireguard, "${IOHUBOS_VPN_NETWORK:-}",
        "VPN network in CIDR notation, e.g. `100.90.56.0/24`."),
    var("IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_IP_ADDRESS:-}",
        "Server endpoint host: IPv4 address or DNS name."),
    var("IOHUBOS_WIREGUARD_SERVER_IP_PORT", Section::Wireguard,
        "${IOHUBOS_VPN_SERVER_IP_PORT:-}",
        "Server endpoint UDP port, e.g. 51820."),
    var("IOHUBOS_WIREGUARD_EXPOSE", Section::Wireguard, "${IOHUBOS_VPN_EXPOSE:-auto}",
        "AllowedIPs of the server peer: `auto` (the VPN network) or comma-separated CIDRs."),
    var("IOHUBOS_WIREGUARD_ACCESS_HOST", Section::Wireguard, "${IOHUBOS_VPN_ACCESS_HOST:-false}",
        "Let VPN peers reach the services of the box itself."),
    var("IOHUBOS_VPN_ENABLED", Section::Wireguard, "false",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_ENABLED."),
    var("IOHUBOS_VPN_SERVER_PUBLIC_KEY", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY."),
    var("IOHUBOS_VPN_BOX_NUMBER", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_BOX_NUMBER."),
    var("IOHUBOS_VPN_NETWORK", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_NETWORK."),
    var("IOHUBOS_VPN_SERVER_IP_ADDRESS", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS."),
    var("IOHUBOS_VPN_SERVER_IP_PORT", Section::Wireguard, "",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_SERVER_IP_PORT."),
    var("IOHUBOS_VPN_EXPOSE", Section::Wireguard, "auto",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_EXPOSE."),
    var("IOHUBOS_VPN_ACCESS_HOST", Section::Wireguard, "false",
        "Deprecated (1.1.0): default of IOHUBOS_WIREGUARD_ACCESS_HOST."),
    // ZeroTier
    var("IOHUBOS_ZEROTIER_ENABLED", Section::Zerotier, "false",
        "Join a ZeroTier network."),
    var("IOHUBOS_ZEROTIER_NETWORK", Section::Zerotier, "",
        "ZeroTier network id, 16 hex digits (required when enabled)."),
    var("IOHUBOS_ZEROTIER_ACCESS_HOST", Section::Zerotier, "false",
        "Let ZeroTier peers reach the services of the box itself."),
    // Bridge (iohub)
    var("IOHUBOS_BRIDGE_ENABLED", Section::Bridge, "false",
        "iohub: forward local topics to a remote MQTT broker, with a disk-backed queue while it is unreachable."),
    var("IOHUBOS_BRIDGE_URL", Section::Bridge, "",
        "iohub: remote broker, `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883); required when enabled."),
    var("IOHUBOS_BRIDGE_USERNAME", Section::Bridge, "",
        "iohub: user name on the remote broker (optional)."),
    secret("IOHUBOS_BRIDGE_PASSWORD", Section::Bridge,
        "iohub: password on the remote broker (optional)."),
    var("IOHUBOS_BRIDGE_TOPICS", Section::Bridge, "iohub/state/#",
        "iohub: comma-separated MQTT topic filters to forward."),
    var("IOHUBOS_BRIDGE_QUEUE_MIB", Section::Bridge, "64",
        "iohub: disk budget of the store-and-forward queue in MiB (empty means 64)."),
];

/// Names the original uses only inside its scripts (SPEC.md §1.2 "Internal"): setting them has
/// no effect, so the config service can say so instead of calling them unknown.
pub const INTERNAL_VARIABLES: &[&str] = &[
    "IOHUBOS_INBOUND_DEVICE",
    "IOHUBOS_ETH1_NETWORK",
    "IOHUBOS_FIREWALL_PORT_FORWARDS_TCP",
    "IOHUBOS_FIREWALL_PORT_FORWARDS_UDP",
    "IOHUBOS_ROUTES",
];

/// The registry entry of a variable.
pub fn spec(name: &str) -> Option<&'static VarSpec> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// The current name of a pre-1.0 variable (`IOHUBOS_ENGINE_ENABLED` -> `IOHUBOS_DOCKER_ENABLED`,
/// `IOHUBOS_ENGINE_REGISTRY_*` -> `IOHUBOS_DOCKER_REGISTRY_*`, SPEC.md §1.3).
pub fn renamed_to(old: &str) -> Option<&'static str> {
    let rest = old.strip_prefix("IOHUBOS_ENGINE_")?;
    spec(&format!("IOHUBOS_DOCKER_{rest}")).map(|s| s.name)
}

/// The pre-1.0 name of a current variable, if it had one.
fn old_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("IOHUBOS_DOCKER_")?;
    (rest == "ENABLED" || rest.starts_with("REGISTRY_")).then(|| format!("IOHUBOS_ENGINE_{rest}"))
}

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// An IPv4 address with a prefix length, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// From an address and a contiguous netmask.
    pub fn from_netmask(addr: Ipv4Addr, netmask: Ipv4Addr) -> Ipv4Cidr {
        Ipv4Cidr {
            addr,
            prefix_len: u32::from(netmask).leading_ones() as u8,
        }
    }

    /// The netmask as a number.
    pub fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0)
    }

    /// The network address (host bits cleared).
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits set).
    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An IPv4 or IPv6 network, as in WireGuard's `AllowedIPs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `IOHUBOS_NETWORK_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// ETH0 (or the WiFi client) is the only managed network.
    Standalone,
    /// ETH1 (and the WiFi AP) are bridged into br1, with NAT towards it.
    Router,
}

/// `IOHUBOS_ETH0_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Eth0Mode {
    Dhcp,
    Static,
}

/// `IOHUBOS_WIFI_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WifiMode {
    /// No WiFi.
    Off,
    /// WiFi is the uplink instead of ETH0.
    Client,
    /// Access point bridged into br1 (router mode).
    Ap,
}

/// `IOHUBOS_WIFI_DEVICE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WifiDevice {
    /// The first wireless interface found.
    Auto,
    /// This interface.
    Name(String),
}

/// `IOHUBOS_WIREGUARD_EXPOSE`: the `AllowedIPs` of the server peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WireguardExpose {
    /// The VPN network itself.
    Auto,
    /// These networks.
    Cidrs(Vec<IpCidr>),
}

/// A remote MQTT broker address, `mqtt://host:port` or `mqtts://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerUrl {
    /// `mqtts://`: TLS.
    pub tls: bool,
    /// Host name, IPv4 or IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

/// `iohub/config/network`: ETH0, ETH1/br1, host name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `IOHUBOS_NETWORK_CONFIG`: false leaves the interfaces alone.
    pub managed: bool,
    /// `IOHUBOS_NETWORK_MODE`.
    pub mode: NetworkMode,
    /// `IOHUBOS_HOSTNAME`; none leaves the host name alone.
    pub hostname: Option<String>,
    pub eth0: Eth0,
    /// Router mode only.
    pub eth1: Option<Eth1>,
}

/// The ETH0 uplink. Its addresses are set in static mode only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Eth0 {
    /// `IOHUBOS_ETH0_DEVICE`; none when sysvars does not name it (nothing to configure).
    pub device: Option<String>,
    /// `IOHUBOS_ETH0_MODE`.
    pub mode: Eth0Mode,
    /// `IOHUBOS_ETH0_IP`.
    pub ip: Option<Ipv4Addr>,
    /// `IOHUBOS_ETH0_NETMASK`.
    pub netmask: Option<Ipv4Addr>,
    /// `IOHUBOS_ETH0_GATEWAY`.
    pub gateway: Option<Ipv4Addr>,
    /// `IOHUBOS_ETH0_DNS`.
    pub dns: Vec<Ipv4Addr>,
}

/// ETH1, bridged into br1 in router mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Eth1 {
    /// `IOHUBOS_ETH1_DEVICE`.
    pub device: String,
    /// `IOHUBOS_ETH1_IP`: address of br1.
    pub ip: Ipv4Addr,
    /// `IOHUBOS_ETH1_NETMASK`.
    pub netmask: Ipv4Addr,
}

impl Eth1 {
    /// Address and prefix of br1.
    pub fn cidr(&self) -> Ipv4Cidr {
        Ipv4Cidr::from_netmask(self.ip, self.netmask)
    }
}

/// `iohub/config/firewall`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// `IOHUBOS_FIREWALL_CONFIG`: false leaves the firewall and the routes alone.
    pub managed: bool,
    /// `IOHUBOS_FIREWALL_ROUTER_TO_INTERNET`.
    pub router_to_internet: bool,
}

/// `iohub/config/forwards`: the valid lines of `forwards-tcp` and `forwards-udp`, and the refused
/// ones. Collisions with service ports are the firewall's to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forwards {
    pub tcp: Vec<Forward>,
    pub udp: Vec<Forward>,
    /// Lines that were refused (they do not apply; the valid lines still do).
    pub rejected: Vec<LineError>,
}

/// `iohub/config/routes`: the valid lines of `routes` and the refused ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub routes: Vec<Route>,
    /// Lines that were refused (they do not apply; the valid lines still do).
    pub rejected: Vec<LineError>,
}

/// `iohub/config/dhcp`: the DHCP server on br1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dhcp {
    /// `IOHUBOS_DHCP_SERVER_ENABLED` in router mode (always false in standalone mode).
    pub enabled: bool,
    /// `IOHUBOS_DHCP_SERVER_FROM`.
    pub range_from: Option<Ipv4Addr>,
    /// `IOHUBOS_DHCP_SERVER_TO`.
    pub range_to: Option<Ipv4Addr>,
    /// `IOHUBOS_DHCP_SERVER_DNS`.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time (the original's `default-lease-time`).
    pub lease_secs: u32,
}

/// `iohub/config/wifi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    /// `IOHUBOS_WIFI_MODE`.
    pub mode: WifiMode,
    /// `IOHUBOS_WIFI_DEVICE`.
    pub device: Option<WifiDevice>,
    /// `IOHUBOS_WIFI_CLIENT_SSID`.
    pub client_ssid: Option<String>,
    /// `IOHUBOS_WIFI_CLIENT_PASS`.
    pub client_pass: Secret,
    /// `IOHUBOS_WIFI_AP_SSID`.
    pub ap_ssid: Option<String>,
    /// `IOHUBOS_WIFI_AP_PASS`.
    pub ap_pass: Secret,
}

/// `iohub/config/ssh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// `IOHUBOS_OPENSSH_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_SSH_PUBLIC_KEY`, one entry per line.
    pub authorized_keys: Vec<String>,
}

/// `iohub/config/system`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// `IOHUBOS_VERSION`.
    pub version: String,
    /// `IOHUBOS_DEVICE` (informational).
    pub device: Option<String>,
    /// `IOHUBOS_TIMEZONE`; none leaves the timezone alone.
    pub timezone: Option<String>,
}

/// `iohub/config/docker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Docker {
    /// `IOHUBOS_DOCKER_ENABLED`.
    pub enabled: bool,
}

/// `iohub/config/registry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// `IOHUBOS_DOCKER_REGISTRY_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_DOCKER_REGISTRY_PORT`.
    pub port: u16,
    /// `IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0`.
    pub expose_eth0: bool,
    /// `IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1`.
    pub expose_eth1: bool,
    /// `IOHUBOS_DOCKER_REGISTRY_RESCAN`.
    pub rescan: bool,
    /// `IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE`.
    pub rescan_delete: bool,
}

/// `iohub/config/deployer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Deployer {
    /// `IOHUBOS_DEPLOYER_ENABLED`.
    pub enabled: bool,
}

/// `iohub/config/upgrader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upgrader {
    /// `IOHUBOS_UPGRADER_ENABLED`.
    pub enabled: bool,
}

/// `iohub/config/admin_api`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminApi {
    /// `IOHUBOS_ADMIN_API_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_ADMIN_API_SERVER_PORT`.
    pub port: u16,
    /// `IOHUBOS_ADMIN_API_AUTH_TOKEN`.
    pub token: Secret,
    /// Whether the token is strong enough (SPEC.md §7.6). A weak token is not a config error: the
    /// API runs and answers 403 to every request, like the original.
    pub token_ok: bool,
    /// Why the token is weak.
    pub token_reason: Option<String>,
}

/// `iohub/config/wireguard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wireguard {
    /// `IOHUBOS_WIREGUARD_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY` (base64).
    pub server_public_key: Option<String>,
    /// `IOHUBOS_WIREGUARD_BOX_NUMBER`.
    pub box_number: Option<u32>,
    /// `IOHUBOS_WIREGUARD_NETWORK`, host bits cleared.
    pub network: Option<Ipv4Cidr>,
    /// The tunnel address: network + box number, with the network's prefix.
    pub address: Option<Ipv4Cidr>,
    /// `IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS`: IPv4 address or DNS name.
    pub server_host: Option<String>,
    /// `IOHUBOS_WIREGUARD_SERVER_IP_PORT`.
    pub server_port: Option<u16>,
    /// `IOHUBOS_WIREGUARD_EXPOSE`.
    pub expose: WireguardExpose,
    /// `IOHUBOS_WIREGUARD_ACCESS_HOST`.
    pub access_host: bool,
}

/// `iohub/config/zerotier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Zerotier {
    /// `IOHUBOS_ZEROTIER_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_ZEROTIER_NETWORK`, 16 lowercase hex digits.
    pub network_id: Option<String>,
    /// `IOHUBOS_ZEROTIER_ACCESS_HOST`.
    pub access_host: bool,
}

/// `iohub/config/global_mqtt`: the IOhub-compatible broker for apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalMqtt {
    /// `IOHUBOS_GLOBAL_MQTT`.
    pub enabled: bool,
    /// `IOHUBOS_GLOBAL_MQTT_IMG`.
    pub image: String,
    /// `IOHUBOS_GLOBAL_MQTT_NAME`.
    pub container_name: String,
    /// `IOHUBOS_GLOBAL_MQTT_NET`.
    pub network_name: String,
    /// `IOHUBOS_GLOBAL_MQTT_ANONYMOUS`.
    pub anonymous: bool,
    /// `IOHUBOS_GLOBAL_MQTT_USERNAME`.
    pub username: Option<String>,
    /// `IOHUBOS_GLOBAL_MQTT_PASSWORD`.
    pub password: Secret,
    /// `IOHUBOS_GLOBAL_MQTT_MIRROR`.
    pub mirror: Vec<String>,
    /// `IOHUBOS_GLOBAL_MQTT_MAX_QUEUED`.
    pub max_queued_messages: u32,
    /// `IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT`.
    pub websocket_port: Option<u16>,
}

/// `iohub/config/bridge`: forwarding to a remote broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// `IOHUBOS_BRIDGE_ENABLED`.
    pub enabled: bool,
    /// `IOHUBOS_BRIDGE_URL`.
    pub url: Option<BrokerUrl>,
    /// `IOHUBOS_BRIDGE_USERNAME`.
    pub username: Option<String>,
    /// `IOHUBOS_BRIDGE_PASSWORD`.
    pub password: Secret,
    /// `IOHUBOS_BRIDGE_TOPICS`.
    pub topics: Vec<String>,
    /// `IOHUBOS_BRIDGE_QUEUE_MIB`.
    pub queue_mib: u32,
}

/// The whole validated desired configuration, one field per [`Section`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub network: Network,
    pub firewall: Firewall,
    pub forwards: Forwards,
    pub routes: Routes,
    pub dhcp: Dhcp,
    pub wifi: Wifi,
    pub ssh: Ssh,
    pub system: System,
    pub docker: Docker,
    pub registry: Registry,
    pub deployer: Deployer,
    pub upgrader: Upgrader,
    pub admin_api: AdminApi,
    pub wireguard: Wireguard,
    pub zerotier: Zerotier,
    pub global_mqtt: GlobalMqtt,
    pub bridge: Bridge,
}

/// The retained payload of `iohub/config/<section>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionPayload {
    /// Payload version ([`crate::PAYLOAD_VERSION`]).
    pub version: u32,
    pub section: Section,
    /// Generation of the config, bumped by the config service on every accepted change.
    pub generation: u64,
    /// The section, as its typed struct (`Network`, `Firewall`, ...) serializes.
    pub config: serde_json::Value,
}

/// The `facts` of the config service's `iohub/state/config` (the same fields as the config
/// service's own struct, so that it can use this one and the schema documents it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFacts {
    /// Running firmware version (`0.0.0` when the version file is missing).
    pub version: String,
    /// Files read, relative to the root, in load order.
    pub files: Vec<String>,
    /// `envvars.d` files left out by the version filter.
    pub skipped_layers: Vec<String>,
    /// Unknown, internal and pre-1.0 variables, ignored includes.
    pub warnings: Vec<BusError>,
    /// `IOHUBOS_*` names no section knows (ignored).
    pub unknown_variables: Vec<String>,
    /// Deprecated or pre-1.0 names assigned by a file (`IOHUBOS_VPN_*`, `IOHUBOS_ENGINE_*`).
    pub deprecated_variables: Vec<String>,
    /// Refused lines of every file (the valid lines still apply).
    pub rejected_lines: Vec<LineError>,
    /// Every problem of the newest input (refused lines included); empty when applied.
    pub errors: Vec<BusError>,
    /// Sections that keep their last good value (or are not published yet) because of `errors`.
    pub withheld: Vec<Section>,
    /// Every section's current generation.
    pub generations: BTreeMap<Section, u64>,
    /// A `set` with a confirm timeout that is still waiting for `iohub/cmd/config/confirm`.
    #[serde(default)]
    pub pending_confirm: Option<PendingConfirm>,
    /// The last automatic revert of an unconfirmed `set`, in this daemon run or an earlier one.
    #[serde(default)]
    pub last_revert: Option<ConfigRevert>,
}

/// A commit-confirm `set` waiting for its confirmation (`iohubctl set --confirm 60s ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingConfirm {
    /// What `iohub/cmd/config/confirm` must carry (`{"token": ...}`).
    pub token: String,
    /// The variables the `set` changed.
    pub vars: Vec<String>,
    /// The files it rewrote (relative to the root); the revert restores them.
    pub files: Vec<String>,
    pub timeout_secs: u32,
    /// Wall clock (ms since the Unix epoch) after which the change is reverted; the deadline
    /// survives a daemon restart.
    pub deadline_ms: u64,
}

/// `iohub/event/config/config_reverted`, also kept in the config facts: an unconfirmed change
/// was undone, the files restored to what they were before it, every section re-published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRevert {
    pub version: u32,
    pub token: String,
    pub vars: Vec<String>,
    pub files: Vec<String>,
    /// Why: no confirmation within the timeout (possibly across a restart).
    pub reason: String,
    pub at_ms: u64,
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("section types have string keys and serialize to JSON")
}

impl Config {
    /// Builds and validates the config from the merged variables (as the envvars loader leaves
    /// them, secrets in clear) and the parsed `forwards-tcp`, `forwards-udp` and `routes` files.
    ///
    /// `rejected_lines` are the refused lines of those files: lines of `forwards-*` go to the
    /// forwards section, lines of `routes` to the routes section; lines of other files are the
    /// config service's to report. Every problem of the variables is returned at once, each with
    /// the variable name as `field`.
    pub fn from_vars(
        vars: &BTreeMap<String, String>,
        forwards_tcp: Vec<Forward>,
        forwards_udp: Vec<Forward>,
        routes: Vec<Route>,
        rejected_lines: Vec<LineError>,
    ) -> Result<Config, Vec<BusError>> {
        let mut r = Reader {
            vars,
            errors: Vec::new(),
        };
        let (forwards_rejected, routes_rejected): (Vec<LineError>, Vec<LineError>) = rejected_lines
            .into_iter()
            .filter(|l| l.file.starts_with("forwards-") || l.file == "routes")
            .partition(|l| l.file.starts_with("forwards-"));

        let firewall = Firewall {
            managed: r.bool("IOHUBOS_FIREWALL_CONFIG"),
            router_to_internet: r.bool("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET"),
        };
        let ssh = Ssh {
            enabled: r.bool("IOHUBOS_OPENSSH_ENABLED"),
            authorized_keys: r
                .value("IOHUBOS_SSH_PUBLIC_KEY", true, parse_ssh_keys)
                .unwrap_or_default(),
        };
        let network_managed = r.bool("IOHUBOS_NETWORK_CONFIG");
        let mode = r
            .value("IOHUBOS_NETWORK_MODE", true, parse_network_mode)
            .unwrap_or(NetworkMode::Standalone);
        let router = mode == NetworkMode::Router;
        let wifi_mode = r
            .value("IOHUBOS_WIFI_MODE", true, parse_wifi_mode)
            .unwrap_or(WifiMode::Off);
        let wifi_uplink = wifi_mode == WifiMode::Client;

        let network = network_section(&mut r, network_managed, mode, wifi_uplink);
        let wifi = wifi_section(&mut r, wifi_mode, router, &network);
        let dhcp = dhcp_section(&mut r, router, network.eth1.as_ref());

        let docker = Docker {
            enabled: r.bool("IOHUBOS_DOCKER_ENABLED"),
        };
        let registry = Registry {
            enabled: r.bool("IOHUBOS_DOCKER_REGISTRY_ENABLED"),
            port: r.port_with_default("IOHUBOS_DOCKER_REGISTRY_PORT"),
            expose_eth0: r.bool("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0"),
            expose_eth1: r.bool("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1"),
            rescan: r.bool("IOHUBOS_DOCKER_REGISTRY_RESCAN"),
            rescan_delete: r.bool("IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE"),
        };
        let system = System {
            version: r
                .value("IOHUBOS_VERSION", true, parse_version)
                .unwrap_or_default(),
            device: r.value("IOHUBOS_DEVICE", false, |s| Ok(s.to_string())),
            timezone: r.value("IOHUBOS_TIMEZONE", true, parse_timezone),
        };
        let deployer = Deployer {
            enabled: r.bool("IOHUBOS_DEPLOYER_ENABLED"),
        };
        let upgrader = Upgrader {
            enabled: r.bool("IOHUBOS_UPGRADER_ENABLED"),
        };

        let token = r.raw("IOHUBOS_ADMIN_API_AUTH_TOKEN");
        let token_reason = token_weakness(&token);
        let admin_api = AdminApi {
            enabled: r.bool("IOHUBOS_ADMIN_API_ENABLED"),
            port: r.port_with_default("IOHUBOS_ADMIN_API_SERVER_PORT"),
            token: Secret::new(token),
            token_ok: token_reason.is_none(),
            token_reason,
        };

        let global_mqtt = global_mqtt_section(&mut r);

        let wireguard = wireguard_section(&mut r);
        let zerotier_enabled = r.bool("IOHUBOS_ZEROTIER_ENABLED");
        let zerotier = Zerotier {
            enabled: zerotier_enabled,
            network_id: r.required(
                "IOHUBOS_ZEROTIER_NETWORK",
                zerotier_enabled,
                "ZeroTier is enabled",
                parse_zerotier_id,
            ),
            access_host: r.bool("IOHUBOS_ZEROTIER_ACCESS_HOST"),
        };
        let bridge = bridge_section(&mut r);

        // TCP ports of services on the box must not collide (forwards are the firewall's).
        let mut ports: Vec<(&str, &str, u16)> = Vec::new();
        if ssh.enabled {
            ports.push(("IOHUBOS_OPENSSH_ENABLED", "SSH", 22));
        }
        if docker.enabled && registry.enabled {
            ports.push((
                "IOHUBOS_DOCKER_REGISTRY_PORT",
                "the registry",
                registry.port,
            ));
        }
        if admin_api.enabled {
            ports.push((
                "IOHUBOS_ADMIN_API_SERVER_PORT",
                "the admin API",
                admin_api.port,
            ));
        }
        if global_mqtt.enabled {
            ports.push(("IOHUBOS_GLOBAL_MQTT", "the global broker", 1883));
            if let Some(port) = global_mqtt.websocket_port {
                ports.push((
                    "IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT",
                    "the global broker's WebSocket listener",
                    port,
                ));
            }
        }
        for (i, (name, what, port)) in ports.iter().enumerate() {
            if let Some((other_name, other, _)) = ports[..i].iter().find(|p| p.2 == *port) {
                r.fail(
                    ErrorCode::Conflict,
                    name,
                    format!("tcp port {port} of {what} is already used by {other} ({other_name})"),
                );
            }
        }

        if !r.errors.is_empty() {
            // In registry order, so that related problems are listed together.
            let rank = |e: &BusError| {
                let field = e.field.as_deref().unwrap_or_default();
                VARIABLES
                    .iter()
                    .position(|v| v.name == field)
                    .unwrap_or(usize::MAX)
            };
            r.errors.sort_by_key(rank);
            return Err(r.errors);
        }
        Ok(Config {
            network,
            firewall,
            forwards: Forwards {
                tcp: forwards_tcp,
                udp: forwards_udp,
                rejected: forwards_rejected,
            },
            routes: Routes {
                routes,
                rejected: routes_rejected,
            },
            dhcp,
            wifi,
            ssh,
            system,
            docker,
            registry,
            deployer,
            upgrader,
            admin_api,
            wireguard,
            zerotier,
            global_mqtt,
            bridge,
        })
    }

    /// One section, serialized as published in [`SectionPayload::config`].
    pub fn section_value(&self, s: Section) -> serde_json::Value {
        match s {
            Section::Network => to_json(&self.network),
            Section::Firewall => to_json(&self.firewall),
            Section::Forwards => to_json(&self.forwards),
            Section::Routes => to_json(&self.routes),
            Section::Dhcp => to_json(&self.dhcp),
            Section::Wifi => to_json(&self.wifi),
            Section::Ssh => to_json(&self.ssh),
            Section::System => to_json(&self.system),
            Section::Docker => to_json(&self.docker),
            Section::Registry => to_json(&self.registry),
            Section::Deployer => to_json(&self.deployer),
            Section::Upgrader => to_json(&self.upgrader),
            Section::AdminApi => to_json(&self.admin_api),
            Section::Wireguard => to_json(&self.wireguard),
            Section::Zerotier => to_json(&self.zerotier),
            Section::GlobalMqtt => to_json(&self.global_mqtt),
            Section::Bridge => to_json(&self.bridge),
        }
    }

    /// The retained payload of `iohub/config/<s>` at this generation.
    pub fn section_payload(&self, s: Section, generation: u64) -> SectionPayload {
        SectionPayload {
            version: crate::PAYLOAD_VERSION,
            section: s,
            generation,
            config: self.section_value(s),
        }
    }

    /// Checks the form of one value, as `iohub/cmd/config/set` receives it. Checks that involve
    /// other variables (router mode needs ETH1, the DHCP range, ...) are [`Config::from_vars`]'s.
    /// An empty value is always accepted here (it means "unset"). A weak admin token is not an
    /// error (see [`AdminApi::token_ok`]).
    pub fn validate_one(name: &str, value: &str) -> Result<(), BusError> {
        let Some(spec) = spec(name) else {
            let message = match renamed_to(name) {
                Some(new) => format!("`{name}` is a pre-1.0 name: set {new} instead"),
                None if INTERNAL_VARIABLES.contains(&name) => {
                    format!("`{name}` is internal to the original scripts and cannot be set")
                }
                None => format!("`{name}` is not a known variable"),
            };
            return Err(BusError::new(ErrorCode::UnknownVariable, message).with_field(name));
        };
        let text = if spec.secret || is_verbatim(name) {
            value
        } else {
            value.trim()
        };
        if text.is_empty() {
            return Ok(());
        }
        check_form(name, text)
            .map_err(|m| BusError::new(ErrorCode::InvalidValue, m).with_field(name))
    }
}

/// Variables whose value is used exactly as written (no trimming).
fn is_verbatim(name: &str) -> bool {
    matches!(
        name,
        "IOHUBOS_WIFI_CLIENT_SSID"
            | "IOHUBOS_WIFI_AP_SSID"
            | "IOHUBOS_BRIDGE_USERNAME"
            | "IOHUBOS_GLOBAL_MQTT_USERNAME"
    )
}

/// The form check of one non-empty value, by variable.
fn check_form(name: &str, v: &str) -> Result<(), String> {
    fn ok<T>(r: Result<T, String>) -> Result<(), String> {
        r.map(drop)
    }
    let name = match name.strip_prefix("IOHUBOS_VPN_") {
        Some(rest) => format!("IOHUBOS_WIREGUARD_{rest}"),
        None => name.to_string(),
    };
    match name.as_str() {
        "IOHUBOS_OPENSSH_ENABLED"
        | "IOHUBOS_UPGRADER_ENABLED"
        | "IOHUBOS_DEPLOYER_ENABLED"
        | "IOHUBOS_DOCKER_ENABLED"
        | "IOHUBOS_NETWORK_CONFIG"
        | "IOHUBOS_DHCP_SERVER_ENABLED"
        | "IOHUBOS_FIREWALL_CONFIG"
        | "IOHUBOS_FIREWALL_ROUTER_TO_INTERNET"
        | "IOHUBOS_DOCKER_REGISTRY_ENABLED"
        | "IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0"
        | "IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1"
        | "IOHUBOS_DOCKER_REGISTRY_RESCAN"
        | "IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE"
        | "IOHUBOS_ADMIN_API_ENABLED"
        | "IOHUBOS_GLOBAL_MQTT"
        | "IOHUBOS_GLOBAL_MQTT_ANONYMOUS"
        | "IOHUBOS_WIREGUARD_ENABLED"
        | "IOHUBOS_WIREGUARD_ACCESS_HOST"
        | "IOHUBOS_ZEROTIER_ENABLED"
        | "IOHUBOS_ZEROTIER_ACCESS_HOST"
        | "IOHUBOS_BRIDGE_ENABLED" => ok(parse_bool(v)),
        "IOHUBOS_VERSION" => ok(parse_version(v)),
        "IOHUBOS_DEVICE"
        | "IOHUBOS_ADMIN_API_AUTH_TOKEN"
        | "IOHUBOS_BRIDGE_USERNAME"
        | "IOHUBOS_BRIDGE_PASSWORD"
        | "IOHUBOS_GLOBAL_MQTT_USERNAME"
        | "IOHUBOS_GLOBAL_MQTT_PASSWORD" => Ok(()),
        "IOHUBOS_HOSTNAME" => ok(parse_hostname(v)),
        "IOHUBOS_ETH0_DEVICE" | "IOHUBOS_ETH1_DEVICE" => ok(parse_iface(v)),
        "IOHUBOS_TIMEZONE" => ok(parse_timezone(v)),
        "IOHUBOS_SSH_PUBLIC_KEY" => ok(parse_ssh_keys(v)),
        "IOHUBOS_NETWORK_MODE" => ok(parse_network_mode(v)),
        "IOHUBOS_ETH0_MODE" => ok(parse_eth0_mode(v)),
        "IOHUBOS_ETH0_IP"
        | "IOHUBOS_ETH0_GATEWAY"
        | "IOHUBOS_ETH1_IP"
        | "IOHUBOS_DHCP_SERVER_FROM"
        | "IOHUBOS_DHCP_SERVER_TO" => ok(parse_ipv4(v)),
        "IOHUBOS_ETH0_NETMASK" | "IOHUBOS_ETH1_NETMASK" => ok(parse_netmask(v)),
        "IOHUBOS_ETH0_DNS" | "IOHUBOS_DHCP_SERVER_DNS" => ok(parse_ipv4_list(v)),
        "IOHUBOS_WIFI_MODE" => ok(parse_wifi_mode(v)),
        "IOHUBOS_WIFI_DEVICE" => ok(parse_wifi_device(v)),
        "IOHUBOS_WIFI_CLIENT_SSID" | "IOHUBOS_WIFI_AP_SSID" => ok(parse_ssid(v)),
        "IOHUBOS_WIFI_CLIENT_PASS" | "IOHUBOS_WIFI_AP_PASS" => check_passphrase(v),
        "IOHUBOS_DOCKER_REGISTRY_PORT"
        | "IOHUBOS_ADMIN_API_SERVER_PORT"
        | "IOHUBOS_WIREGUARD_SERVER_IP_PORT"
        | "IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT" => ok(parse_port(v)),
        "IOHUBOS_GLOBAL_MQTT_MIRROR" => ok(parse_mirror(v)),
        "IOHUBOS_GLOBAL_MQTT_MAX_QUEUED" => ok(parse_max_queued(v)),
        "IOHUBOS_GLOBAL_MQTT_IMG" => ok(parse_image(v)),
        "IOHUBOS_GLOBAL_MQTT_NAME" | "IOHUBOS_GLOBAL_MQTT_NET" => ok(parse_docker_name(v)),
        "IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY" => ok(parse_wg_key(v)),
        "IOHUBOS_WIREGUARD_BOX_NUMBER" => ok(parse_box_number(v)),
        "IOHUBOS_WIREGUARD_NETWORK" => ok(parse_ipv4_cidr(v)),
        "IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS" => ok(parse_host(v)),
        "IOHUBOS_WIREGUARD_EXPOSE" => ok(parse_expose(v)),
        "IOHUBOS_ZEROTIER_NETWORK" => ok(parse_zerotier_id(v)),
        "IOHUBOS_BRIDGE_URL" => ok(parse_broker_url(v)),
        "IOHUBOS_BRIDGE_TOPICS" => ok(parse_topics(v)),
        "IOHUBOS_BRIDGE_QUEUE_MIB" => ok(parse_queue_mib(v)),
        other => Err(format!("no check is defined for `{other}`")),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the variables
// ---------------------------------------------------------------------------------------------

/// Looks variables up with defaults, and collects every error.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    errors: Vec<BusError>,
}

impl Reader<'_> {
    fn fail(&mut self, code: ErrorCode, name: &str, message: impl Into<String>) {
        self.errors
            .push(BusError::new(code, message).with_field(name));
    }

    /// The value as set, or as set under its pre-1.0 name.
    fn lookup(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.vars.get(name) {
            return Some(v);
        }
        old_name(name)
            .and_then(|old| self.vars.get(&old))
            .map(String::as_str)
    }

    /// The effective text of a registry variable: as set, else its default with `${...}`
    /// references resolved. An empty registry port is 5000 (the original's `setDefaults`).
    fn resolve(&self, name: &str, depth: u8) -> String {
        debug_assert!(spec(name).is_some(), "{name} is not in VARIABLES");
        let value = match self.lookup(name) {
            Some(v) => v.to_string(),
            None => spec(name)
                .map(|s| self.expand(s.default, depth))
                .unwrap_or_default(),
        };
        if name == "IOHUBOS_DOCKER_REGISTRY_PORT" && value.trim().is_empty() {
            return "5000".to_string();
        }
        value
    }

    /// Expands `${NAME}` and `${NAME:-fallback}` in a registry default.
    fn expand(&self, text: &str, depth: u8) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let inner = &after[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let value = if depth == 0 || spec(name).is_none() {
                self.lookup(name).unwrap_or_default().to_string()
            } else {
                self.resolve(name, depth - 1)
            };
            match fallback {
                Some(fb) if value.is_empty() => out.push_str(fb),
                _ => out.push_str(&value),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn raw(&self, name: &str) -> String {
        self.resolve(name, 4)
    }

    fn bool(&mut self, name: &str) -> bool {
        match parse_bool(&self.raw(name)) {
            Ok(b) => b,
            Err(m) => {
                self.fail(ErrorCode::InvalidValue, name, m);
                false
            }
        }
    }

    /// A trimmed value; `None` when empty. Parse errors are reported only when `checked` (the
    /// value takes effect); otherwise an unparsable value is left out.
    fn value<T>(
        &mut self,
        name: &str,
        checked: bool,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.raw(name);
        let text = raw.trim();
        if text.is_empty() {
            return None;
        }
        match parse(text) {
            Ok(v) => Some(v),
            Err(m) => {
                if checked {
                    self.fail(ErrorCode::InvalidValue, name, m);
                }
                None
            }
        }
    }

    /// Like [`Reader::value`], and a missing value is an error when `checked`.
    fn required<T>(
        &mut self,
        name: &str,
        checked: bool,
        when: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if checked && self.raw(name).trim().is_empty() {
            self.fail(ErrorCode::Missing, name, format!("required when {when}"));
            return None;
        }
        self.value(name, checked, parse)
    }

    /// A port whose empty value means its default.
    fn port_with_default(&mut self, name: &str) -> u16 {
        let fallback = spec(name).and_then(|s| s.default.parse().ok()).unwrap_or(0);
        self.value(name, true, parse_port).unwrap_or(fallback)
    }
}

fn global_mqtt_section(r: &mut Reader<'_>) -> GlobalMqtt {
    let enabled = r.bool("IOHUBOS_GLOBAL_MQTT");
    let why = "the global broker is enabled";
    let image = r
        .value("IOHUBOS_GLOBAL_MQTT_IMG", enabled, parse_image)
        .unwrap_or_default();
    let container_name = r
        .required("IOHUBOS_GLOBAL_MQTT_NAME", enabled, why, parse_docker_name)
        .unwrap_or_default();
    let network_name = r
        .required("IOHUBOS_GLOBAL_MQTT_NET", enabled, why, parse_docker_name)
        .unwrap_or_default();
    let anonymous = r.bool("IOHUBOS_GLOBAL_MQTT_ANONYMOUS");
    let username = Some(r.raw("IOHUBOS_GLOBAL_MQTT_USERNAME")).filter(|u| !u.is_empty());
    let password = Secret::new(r.raw("IOHUBOS_GLOBAL_MQTT_PASSWORD"));
    if enabled && username.is_some() != password.is_set() {
        r.fail(
            ErrorCode::Missing,
            "IOHUBOS_GLOBAL_MQTT_USERNAME",
            "IOHUBOS_GLOBAL_MQTT_USERNAME and IOHUBOS_GLOBAL_MQTT_PASSWORD go together",
        );
    } else if enabled && !anonymous && username.is_none() {
        r.fail(
            ErrorCode::Missing,
            "IOHUBOS_GLOBAL_MQTT_ANONYMOUS",
            "anonymous access is off but no login is set (IOHUBOS_GLOBAL_MQTT_USERNAME/_PASSWORD): no app could connect",
        );
    }
    let mirror = r
        .value("IOHUBOS_GLOBAL_MQTT_MIRROR", enabled, parse_mirror)
        .unwrap_or_default();
    let max_queued_messages = r
        .value("IOHUBOS_GLOBAL_MQTT_MAX_QUEUED", enabled, parse_max_queued)
        .unwrap_or(1000);
    let websocket_port = r.value("IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT", enabled, parse_port);
    GlobalMqtt {
        enabled,
        image,
        container_name,
        network_name,
        anonymous,
        username,
        password,
        mirror,
        max_queued_messages,
        websocket_port,
    }
}

/// Subtrees of the control plane that may be mirrored to apps (read-only): never commands,
/// replies or anything else.
pub const MIRRORABLE: [&str; 4] = ["state", "plan", "config", "event"];

/// Comma-separated mirror filters, each inside one mirrorable subtree
/// (`iohub/<state|plan|config|event>/...`).
fn parse_mirror(s: &str) -> Result<Vec<String>, String> {
    let filters = parse_topics(s)?;
    for filter in &filters {
        let levels: Vec<&str> = filter.split('/').collect();
        let ok = levels.first() == Some(&crate::topic::ROOT)
            && levels.get(1).is_some_and(|l| MIRRORABLE.contains(l));
        if !ok {
            return Err(format!(
                "mirror filter `{filter}` must be a filter under {}/{{{}}}/",
                crate::topic::ROOT,
                MIRRORABLE.join(",")
            ));
        }
    }
    Ok(filters)
}

fn parse_max_queued(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => Err(format!("`{s}` is not a queue length (1-1000000)")),
    }
}

fn network_section(
    r: &mut Reader<'_>,
    managed: bool,
    mode: NetworkMode,
    wifi_uplink: bool,
) -> Network {
    let hostname = r.value("IOHUBOS_HOSTNAME", true, parse_hostname);
    // Not required: the defaults of every section must be valid on their own (the config
    // service falls back to them for a section whose input is refused), and the default is
    // empty. The network and firewall services report a missing uplink in their state.
    let device = r.value("IOHUBOS_ETH0_DEVICE", !wifi_uplink, parse_iface);
    // Any value but `dhcp` is static in the original; an empty value stays static here too.
    let empty_mode = r.raw("IOHUBOS_ETH0_MODE").trim().is_empty();
    let eth0_mode = if empty_mode {
        Eth0Mode::Static
    } else {
        r.value("IOHUBOS_ETH0_MODE", true, parse_eth0_mode)
            .unwrap_or(Eth0Mode::Dhcp)
    };
    let is_static = managed && !wifi_uplink && eth0_mode == Eth0Mode::Static;
    let why = if empty_mode {
        "IOHUBOS_ETH0_MODE is static (an empty mode means static)"
    } else {
        "IOHUBOS_ETH0_MODE is static"
    };
    let (ip, netmask, gateway, dns) = if eth0_mode == Eth0Mode::Static {
        let ip = r.required("IOHUBOS_ETH0_IP", is_static, why, parse_ipv4);
        let netmask = r.required("IOHUBOS_ETH0_NETMASK", is_static, why, parse_netmask);
        let gateway = r.value("IOHUBOS_ETH0_GATEWAY", is_static, parse_ipv4);
        let dns = r
            .value("IOHUBOS_ETH0_DNS", is_static, parse_ipv4_list)
            .unwrap_or_default();
        if let (Some(ip), Some(netmask)) = (ip, netmask) {
            let cidr = Ipv4Cidr::from_netmask(ip, netmask);
            if let Some(problem) = host_problem(ip, cidr).filter(|_| is_static) {
                r.fail(ErrorCode::Conflict, "IOHUBOS_ETH0_IP", problem);
            }
            if let Some(gw) = gateway.filter(|gw| is_static && (!cidr.contains(*gw) || *gw == ip)) {
                let message = if gw == ip {
                    format!("gateway {gw} is the address of ETH0 itself")
                } else {
                    format!(
                        "gateway {gw} is outside the ETH0 network {}/{}",
                        cidr.network(),
                        cidr.prefix_len
                    )
                };
                r.fail(ErrorCode::Conflict, "IOHUBOS_ETH0_GATEWAY", message);
            }
        }
        (ip, netmask, gateway, dns)
    } else {
        (None, None, None, Vec::new())
    };
    let eth0 = Eth0 {
        device,
        mode: eth0_mode,
        ip,
        netmask,
        gateway,
        dns,
    };

    let router = mode == NetworkMode::Router;
    let eth1 = if router {
        let why = "IOHUBOS_NETWORK_MODE is router";
        let device = r.required("IOHUBOS_ETH1_DEVICE", true, why, parse_iface);
        let ip = r.required("IOHUBOS_ETH1_IP", true, why, parse_ipv4);
        let netmask = r.required("IOHUBOS_ETH1_NETMASK", true, why, parse_netmask);
        if let (Some(d1), Some(d0)) = (&device, &eth0.device) {
            if d1 == d0 && !wifi_uplink {
                r.fail(
                    ErrorCode::Conflict,
                    "IOHUBOS_ETH1_DEVICE",
                    format!("`{d1}` is also the ETH0 uplink (IOHUBOS_ETH0_DEVICE)"),
                );
            }
        }
        match (device, ip, netmask) {
            (Some(device), Some(ip), Some(netmask)) => {
                let eth1 = Eth1 {
                    device,
                    ip,
                    netmask,
                };
                if let Some(problem) = host_problem(ip, eth1.cidr()) {
                    r.fail(ErrorCode::Conflict, "IOHUBOS_ETH1_IP", problem);
                }
                if let (Some(ip0), Some(mask0)) = (eth0.ip, eth0.netmask) {
                    let net0 = Ipv4Cidr::from_netmask(ip0, mask0);
                    let net1 = eth1.cidr();
                    if is_static && (net0.contains(net1.network()) || net1.contains(net0.network()))
                    {
                        r.fail(
                            ErrorCode::Conflict,
                            "IOHUBOS_ETH1_IP",
                            format!(
                                "the ETH1 network {}/{} overlaps the ETH0 network {}/{}",
                                net1.network(),
                                net1.prefix_len,
                                net0.network(),
                                net0.prefix_len
                            ),
                        );
                    }
                }
                Some(eth1)
            }
            _ => None,
        }
    } else {
        None
    };
    Network {
        managed,
        mode,
        hostname,
        eth0,
        eth1,
    }
}

fn wifi_section(r: &mut Reader<'_>, mode: WifiMode, router: bool, network: &Network) -> Wifi {
    let used = mode != WifiMode::Off;
    let device = r.required(
        "IOHUBOS_WIFI_DEVICE",
        used,
        "IOHUBOS_WIFI_MODE is client or ap",
        parse_wifi_device,
    );
    if let Some(WifiDevice::Name(name)) = &device {
        let eth0 = network
            .eth0
            .device
            .as_ref()
            .filter(|_| mode != WifiMode::Client);
        let eth1 = network.eth1.as_ref().map(|e| &e.device);
        if used && (eth0 == Some(name) || eth1 == Some(name)) {
            r.fail(
                ErrorCode::Conflict,
                "IOHUBOS_WIFI_DEVICE",
                format!("`{name}` is also a wired interface (IOHUBOS_ETH0_DEVICE or IOHUBOS_ETH1_DEVICE)"),
            );
        }
    }
    if mode == WifiMode::Ap && !router {
        r.fail(
            ErrorCode::Conflict,
            "IOHUBOS_WIFI_MODE",
            "ap bridges the WiFi into br1, which exists only when IOHUBOS_NETWORK_MODE is router",
        );
    }
    let client = mode == WifiMode::Client;
    let ap = mode == WifiMode::Ap;
    let client_ssid = ssid(
        r,
        "IOHUBOS_WIFI_CLIENT_SSID",
        client,
        "IOHUBOS_WIFI_MODE is client",
    );
    let client_pass = passphrase(
        r,
        "IOHUBOS_WIFI_CLIENT_PASS",
        client,
        "IOHUBOS_WIFI_MODE is client",
    );
    let ap_ssid = ssid(r, "IOHUBOS_WIFI_AP_SSID", ap, "IOHUBOS_WIFI_MODE is ap");
    let ap_pass = passphrase(r, "IOHUBOS_WIFI_AP_PASS", ap, "IOHUBOS_WIFI_MODE is ap");
    Wifi {
        mode,
        device,
        client_ssid,
        client_pass,
        ap_ssid,
        ap_pass,
    }
}

/// An SSID, used as written (no trimming).
fn ssid(r: &mut Reader<'_>, name: &str, used: bool, when: &str) -> Option<String> {
    let raw = r.raw(name);
    if raw.is_empty() {
        if used {
            r.fail(ErrorCode::Missing, name, format!("required when {when}"));
        }
        return None;
    }
    match parse_ssid(&raw) {
        Ok(s) => Some(s),
        Err(m) => {
            if used {
                r.fail(ErrorCode::InvalidValue, name, m);
            }
            None
        }
    }
}

/// A WPA passphrase, used as written; errors never show it.
fn passphrase(r: &mut Reader<'_>, name: &str, used: bool, when: &str) -> Secret {
    let raw = r.raw(name);
    if used {
        if raw.is_empty() {
            r.fail(ErrorCode::Missing, name, format!("required when {when}"));
        } else if let Err(m) = check_passphrase(&raw) {
            r.fail(ErrorCode::InvalidValue, name, m);
        }
    }
    Secret::new(raw)
}

/// `eth1` is `None` outside router mode, or when ETH1 itself is invalid (already reported).
fn dhcp_section(r: &mut Reader<'_>, router: bool, eth1: Option<&Eth1>) -> Dhcp {
    let active = r.bool("IOHUBOS_DHCP_SERVER_ENABLED") && router;
    let why = "the DHCP server runs (IOHUBOS_DHCP_SERVER_ENABLED in router mode)";
    let from = r.required("IOHUBOS_DHCP_SERVER_FROM", active, why, parse_ipv4);
    let to = r.required("IOHUBOS_DHCP_SERVER_TO", active, why, parse_ipv4);
    let dns = r
        .value("IOHUBOS_DHCP_SERVER_DNS", active, parse_ipv4_list)
        .unwrap_or_default();
    if let (true, Some(eth1)) = (active, eth1) {
        let net = eth1.cidr();
        let mut inside = true;
        for (name, ip) in [
            ("IOHUBOS_DHCP_SERVER_FROM", from),
            ("IOHUBOS_DHCP_SERVER_TO", to),
        ] {
            let Some(ip) = ip else { continue };
            let problem = if !net.contains(ip) {
                Some(format!(
                    "{ip} is outside the ETH1 network {}/{}",
                    net.network(),
                    net.prefix_len
                ))
            } else {
                host_problem(ip, net)
            };
            if let Some(problem) = problem {
                inside = false;
                r.fail(ErrorCode::Conflict, name, problem);
            }
        }
        if let (true, Some(from), Some(to)) = (inside, from, to) {
            if from > to {
                r.fail(
                    ErrorCode::Conflict,
                    "IOHUBOS_DHCP_SERVER_TO",
                    format!("the range ends ({to}) before it starts ({from})"),
                );
            } else if (from..=to).contains(&eth1.ip) {
                r.fail(
                    ErrorCode::Conflict,
                    "IOHUBOS_DHCP_SERVER_FROM",
                    format!(
                        "the range {from}-{to} includes the box's own address {} (IOHUBOS_ETH1_IP)",
                        eth1.ip
                    ),
                );
            }
        }
    }
    Dhcp {
        enabled: active,
        range_from: from,
        range_to: to,
        dns,
        lease_secs: 600,
    }
}

fn wireguard_section(r: &mut Reader<'_>) -> Wireguard {
    let enabled = r.bool("IOHUBOS_WIREGUARD_ENABLED");
    let why = "IOHUBOS_WIREGUARD_ENABLED is true";
    let server_public_key = r.required(
        "IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY",
        enabled,
        why,
        parse_wg_key,
    );
    let box_number = r.required(
        "IOHUBOS_WIREGUARD_BOX_NUMBER",
        enabled,
        why,
        parse_box_number,
    );
    let network = r.required("IOHUBOS_WIREGUARD_NETWORK", enabled, why, parse_ipv4_cidr);
    let server_host = r.required(
        "IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS",
        enabled,
        why,
        parse_host,
    );
    let server_port = r.required("IOHUBOS_WIREGUARD_SERVER_IP_PORT", enabled, why, parse_port);
    let expose = r
        .value("IOHUBOS_WIREGUARD_EXPOSE", enabled, parse_expose)
        .unwrap_or(WireguardExpose::Auto);
    let access_host = r.bool("IOHUBOS_WIREGUARD_ACCESS_HOST");
    let address = match (network, box_number) {
        (Some(net), Some(n)) => match tunnel_address(net, n) {
            Ok(a) => Some(a),
            Err(m) => {
                if enabled {
                    r.fail(ErrorCode::Conflict, "IOHUBOS_WIREGUARD_BOX_NUMBER", m);
                }
                None
            }
        },
        _ => None,
    };
    Wireguard {
        enabled,
        server_public_key,
        box_number,
        network,
        address,
        server_host,
        server_port,
        expose,
        access_host,
    }
}

/// Network + box number, with the proper arithmetic the original lacks (SPEC.md §9.1, §11.3 #23):
/// neither the network address, the server (host 1) nor the broadcast address.
pub fn tunnel_address(network: Ipv4Cidr, box_number: u32) -> Result<Ipv4Cidr, String> {
    let host_bits = 32 - u32::from(network.prefix_len.min(32));
    let hosts: u64 = 1u64 << host_bits;
    if box_number < 2 || u64::from(box_number) >= hosts.saturating_sub(1) {
        let last = hosts.saturating_sub(2);
        return Err(if last < 2 {
            format!("the network {network} has no room for boxes (host 1 is the server)")
        } else {
            format!(
                "box number {box_number} does not fit {network}: use 2..={last} (1 is the server)"
            )
        });
    }
    let addr = Ipv4Addr::from(u32::from(network.network()) + box_number);
    Ok(Ipv4Cidr {
        addr,
        prefix_len: network.prefix_len,
    })
}

fn bridge_section(r: &mut Reader<'_>) -> Bridge {
    let enabled = r.bool("IOHUBOS_BRIDGE_ENABLED");
    let why = "IOHUBOS_BRIDGE_ENABLED is true";
    let url = r.required("IOHUBOS_BRIDGE_URL", enabled, why, parse_broker_url);
    let username = Some(r.raw("IOHUBOS_BRIDGE_USERNAME")).filter(|u| !u.is_empty());
    let password = Secret::new(r.raw("IOHUBOS_BRIDGE_PASSWORD"));
    let topics = r
        .required("IOHUBOS_BRIDGE_TOPICS", enabled, why, parse_topics)
        .unwrap_or_default();
    let queue_mib = r
        .value("IOHUBOS_BRIDGE_QUEUE_MIB", enabled, parse_queue_mib)
        .unwrap_or(64);
    Bridge {
        enabled,
        url,
        username,
        password,
        topics,
        queue_mib,
    }
}

// ---------------------------------------------------------------------------------------------
// Value parsers. Error messages never contain secret values.
// ---------------------------------------------------------------------------------------------

/// `true/yes/on/1` or `false/no/off/0`, any case; empty is false (SPEC.md §11.3 #24).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" | "" => Ok(false),
        _ => Err(format!(
            "`{}` is not a boolean (true/false, yes/no, on/off, 1/0)",
            s.trim()
        )),
    }
}

/// Why an admin API token is too weak (SPEC.md §7.6), or `None` when it is strong: at least 32
/// characters (UTF-16 units, as the original counts) with a lowercase letter, an uppercase
/// letter, a digit and a symbol.
pub fn token_weakness(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("no token is set".to_string());
    }
    let mut problems = Vec::new();
    if token.encode_utf16().count() < 32 {
        problems.push("shorter than 32 characters");
    }
    // The library's symbols are the ASCII punctuation characters.
    let lacks = |class: fn(&char) -> bool| !token.chars().any(|c| class(&c));
    for (problem, missing) in [
        ("no lowercase letter", lacks(char::is_ascii_lowercase)),
        ("no uppercase letter", lacks(char::is_ascii_uppercase)),
        ("no digit", lacks(char::is_ascii_digit)),
        ("no symbol", lacks(char::is_ascii_punctuation)),
    ] {
        if missing {
            problems.push(problem);
        }
    }
    (!problems.is_empty()).then(|| format!("the token is too weak: {}", problems.join(", ")))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 && !s.starts_with('+') => Ok(p),
        _ => Err(format!("`{s}` is not a port (1-65535)")),
    }
}

fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}

/// A contiguous netmask, dotted or as a prefix length (1-32).
fn parse_netmask(s: &str) -> Result<Ipv4Addr, String> {
    let mask = if !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        let len: u32 = s.parse().map_err(|_| format!("`{s}` is not a netmask"))?;
        if !(1..=32).contains(&len) {
            return Err(format!("prefix length `{s}` is not in 1-32"));
        }
        u32::MAX << (32 - len)
    } else {
        let ip: Ipv4Addr = s
            .parse()
            .map_err(|_| format!("`{s}` is not a netmask (e.g. 255.255.255.0)"))?;
        u32::from(ip)
    };
    if mask == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(format!("`{s}` is not a contiguous netmask"));
    }
    Ok(Ipv4Addr::from(mask))
}

/// IPv4 addresses separated by spaces and/or commas.
fn parse_ipv4_list(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
    {
        match item.parse() {
            Ok(ip) => good.push(ip),
            Err(_) => bad.push(format!("`{item}`")),
        }
    }
    if bad.is_empty() {
        Ok(good)
    } else {
        Err(format!("not IPv4 addresses: {}", bad.join(", ")))
    }
}

/// Why an address cannot be a host of `net`: the network or the broadcast address.
fn host_problem(ip: Ipv4Addr, net: Ipv4Cidr) -> Option<String> {
    if net.prefix_len > 30 {
        return None;
    }
    let (network, broadcast) = (net.network(), net.broadcast());
    if ip == network {
        Some(format!(
            "{ip} is the network address of {network}/{}",
            net.prefix_len
        ))
    } else if ip == broadcast {
        Some(format!(
            "{ip} is the broadcast address of {network}/{}",
            net.prefix_len
        ))
    } else {
        None
    }
}

fn parse_network_mode(s: &str) -> Result<NetworkMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "standalone" => Ok(NetworkMode::Standalone),
        "router" => Ok(NetworkMode::Router),
        _ => Err(format!(
            "`{s}` is not a network mode (standalone or router)"
        )),
    }
}

fn parse_eth0_mode(s: &str) -> Result<Eth0Mode, String> {
    match s.to_ascii_lowercase().as_str() {
        "dhcp" => Ok(Eth0Mode::Dhcp),
        "static" => Ok(Eth0Mode::Static),
        _ => Err(format!("`{s}` is not an ETH0 mode (dhcp or static)")),
    }
}

fn parse_wifi_mode(s: &str) -> Result<WifiMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "off" => Ok(WifiMode::Off),
        "client" => Ok(WifiMode::Client),
        "ap" => Ok(WifiMode::Ap),
        _ => Err(format!(
            "`{s}` is not a WiFi mode (empty or off, client, ap)"
        )),
    }
}

fn parse_wifi_device(s: &str) -> Result<WifiDevice, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(WifiDevice::Auto);
    }
    parse_iface(s).map(WifiDevice::Name)
}

/// A Linux interface name (the kernel's `dev_valid_name`, printable ASCII only).
fn parse_iface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not an interface name (1-15 printable characters, no `/`, `:` or spaces)"
        ))
    }
}

/// One RFC 1123 label: 1-63 letters, digits and `-`, not starting or ending with `-`.
fn parse_hostname(s: &str) -> Result<String, String> {
    if is_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a host name (1-63 letters, digits and `-`, not starting or ending with `-`)"
        ))
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// An IPv4 address or a DNS name.
fn parse_host(s: &str) -> Result<String, String> {
    let dns = s.len() <= 253 && s.split('.').all(is_label);
    if s.parse::<Ipv4Addr>().is_ok() || dns {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is neither an IPv4 address nor a DNS name"))
    }
}

/// The shape of a tz database name (`Area/City`, `UTC`, `Etc/GMT+3`); the config service checks
/// that it exists on disk.
fn parse_timezone(s: &str) -> Result<String, String> {
    let ok = s.len() <= 128
        && s.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a timezone name (like `Europe/Rome` or `UTC`)"
        ))
    }
}

/// authorized_keys lines: `[options] <type> <base64> [comment]`, one per line.
fn parse_ssh_keys(s: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (i, line) in s.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_type = |f: &str| {
            ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        let is_b64 = |f: &str| {
            f.len() >= 16
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        };
        let ok = fields.windows(2).any(|w| is_type(w[0]) && is_b64(w[1]))
            && !line.chars().any(|c| c.is_control() && c != '\t');
        if !ok {
            return Err(format!(
                "line {} is not an authorized_keys entry (`<type> <base64 key> [comment]`)",
                i + 1
            ));
        }
        keys.push(line.to_string());
    }
    Ok(keys)
}

/// `x.y.z`, optionally with a `-suffix`.
fn parse_version(s: &str) -> Result<String, String> {
    let (numbers, suffix) = match s.split_once(['-', '+']) {
        Some((n, sfx)) => (n, Some(sfx)),
        None => (s, None),
    };
    let ok = numbers
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && suffix.is_none_or(|x| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a version (x.y.z)"))
    }
}

/// 1-32 bytes, no control characters.
fn parse_ssid(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 32 {
        Err(format!("an SSID has 1-32 bytes, `{s}` has {}", s.len()))
    } else if s.chars().any(char::is_control) {
        Err("an SSID cannot contain control characters".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// A WPA passphrase: 8-63 printable ASCII characters. The message never shows the value.
fn check_passphrase(s: &str) -> Result<(), String> {
    if s.len() < 8 || s.len() > 63 {
        Err("a WPA passphrase has 8-63 characters".to_string())
    } else if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Err("a WPA passphrase has only printable ASCII characters".to_string())
    } else {
        Ok(())
    }
}

/// A WireGuard key: 32 bytes in base64 (44 characters ending in `=`).
fn parse_wg_key(s: &str) -> Result<String, String> {
    let ok = s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a WireGuard key (44 base64 characters ending in `=`)"
        ))
    }
}

fn parse_box_number(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 2 && !s.starts_with('+') => Ok(n),
        Ok(_) => Err(format!(
            "box number `{s}` must be greater than 1 (1 is the server)"
        )),
        Err(_) => Err(format!("`{s}` is not a box number")),
    }
}

/// `a.b.c.d/len`; the host bits are cleared.
fn parse_ipv4_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!("`{s}` has no prefix length (e.g. 100.90.56.0/24)"));
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 network"))?;
    let prefix_len = match len.parse::<u8>() {
        Ok(l) if l <= 32 && !len.starts_with('+') => l,
        _ => return Err(format!("`{s}` has an invalid prefix length")),
    };
    let cidr = Ipv4Cidr { addr, prefix_len };
    Ok(Ipv4Cidr {
        addr: cidr.network(),
        prefix_len,
    })
}

/// `auto`, or comma-separated IPv4/IPv6 networks (a bare address is a host route).
fn parse_expose(s: &str) -> Result<WireguardExpose, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(WireguardExpose::Auto);
    }
    let mut cidrs = Vec::new();
    let mut bad = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (addr, len) = match item.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (item, None),
        };
        let parsed = addr.parse::<IpAddr>().ok().and_then(|addr| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix_len = match len {
                None => max,
                Some(l) if !l.starts_with('+') => l.parse::<u8>().ok().filter(|l| *l <= max)?,
                Some(_) => return None,
            };
            Some(IpCidr { addr, prefix_len })
        });
        match parsed {
            Some(c) => cidrs.push(c),
            None => bad.push(format!("`{item}`")),
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "not networks (like 10.0.0.0/24): {}",
            bad.join(", ")
        ));
    }
    if cidrs.is_empty() {
        return Err("expected `auto` or comma-separated networks".to_string());
    }
    Ok(WireguardExpose::Cidrs(cidrs))
}

/// 16 hex digits, returned in lowercase.
fn parse_zerotier_id(s: &str) -> Result<String, String> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{s}` is not a ZeroTier network id (16 hex digits)"
        ))
    }
}

/// A Docker container or network name.
fn parse_docker_name(s: &str) -> Result<String, String> {
    let ok = s.len() >= 2
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a container or network name (letters, digits, `_.-`, at least 2)"
        ))
    }
}

/// An image reference: no whitespace or control characters.
fn parse_image(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("`{s}` is not an image reference"))
    } else {
        Ok(s.to_string())
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`; credentials belong in their own variables.
fn parse_broker_url(s: &str) -> Result<BrokerUrl, String> {
    let lower = s.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("mqtt://") {
        (false, &s[7..])
    } else if lower.starts_with("mqtts://") {
        (true, &s[8..])
    } else {
        return Err(format!("`{s}` does not start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(
            "put the credentials in IOHUBOS_BRIDGE_USERNAME and IOHUBOS_BRIDGE_PASSWORD, not in the URL"
                .to_string(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("`{s}` has a path; expected mqtt://host[:port]"));
    }
    let bad = || format!("`{s}` is not mqtt://host[:port]");
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if !host.contains(':') {
        parse_host(host).map_err(|_| bad())?;
    }
    let port = match port {
        Some(p) => parse_port(p)?,
        None if tls => 8883,
        None => 1883,
    };
    Ok(BrokerUrl {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Comma-separated MQTT topic filters.
fn parse_topics(s: &str) -> Result<Vec<String>, String> {
    let mut topics = Vec::new();
    for filter in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let levels: Vec<&str> = filter.split('/').collect();
        let ok = !filter.contains('\0')
            && levels.iter().enumerate().all(|(i, l)| {
                (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
                    && (!l.contains('+') || *l == "+")
            });
        if !ok {
            return Err(format!(
                "`{filter}` is not an MQTT topic filter (`+` and `#` must be whole levels, `#` last)"
            ));
        }
        topics.push(filter.to_string());
    }
    if topics.is_empty() {
        return Err("expected at least one topic filter".to_string());
    }
    Ok(topics)
}

fn parse_queue_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65_536).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => Err(format!("`{s}` is not a queue size in MiB (1-65536)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{PortRange, Proto};
    use expect_test::{expect, Expect};

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// What the installer writes into sysvars.
    const SYSVARS: &[(&str, &str)] = &[
        ("IOHUBOS_DEVICE", "/dev/sda"),
        ("IOHUBOS_ETH0_DEVICE", "enp1s0"),
        ("IOHUBOS_HOSTNAME", "iohub-525400aabbcc"),
    ];

    fn with_sysvars(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v = vars(SYSVARS);
        v.extend(vars(extra));
        v
    }

    fn config(v: &BTreeMap<String, String>) -> Config {
        match Config::from_vars(v, Vec::new(), Vec::new(), Vec::new(), Vec::new()) {
            Ok(c) => c,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    fn errors(v: &BTreeMap<String, String>) -> Vec<BusError> {
        match Config::from_vars(v, Vec::new(), Vec::new(), Vec::new(), Vec::new()) {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(errors) => errors,
        }
    }

    fn check_errors(v: &[(&str, &str)], expect: Expect) {
        let text: Vec<String> = errors(&with_sysvars(v))
            .iter()
            .map(ToString::to_string)
            .collect();
        expect.assert_eq(&text.join("\n"));
    }

    #[test]
    fn every_variable_is_named_once_and_has_a_form_check() {
        let mut names: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate names in VARIABLES");
        for v in VARIABLES {
            assert!(v.name.starts_with("IOHUBOS_"), "{}", v.name);
            assert!(!v.doc.is_empty(), "{}", v.name);
            let unchecked = matches!(check_form(v.name, "x"), Err(m) if m.starts_with("no check"));
            assert!(!unchecked, "{} has no form check", v.name);
            assert_eq!(spec(v.name), Some(v));
        }
    }

    #[test]
    fn every_section_has_at_least_one_variable_or_file() {
        for s in Section::ALL {
            let has_var = VARIABLES.iter().any(|v| v.section == *s);
            assert!(
                has_var || matches!(s, Section::Forwards | Section::Routes),
                "{s}"
            );
        }
    }

    #[test]
    fn the_default_config_of_a_fresh_install() {
        let c = config(&vars(SYSVARS));
        expect![[r#"
            {
              "network": {
                "managed": true,
                "mode": "standalone",
                "hostname": "iohub-525400aabbcc",
                "eth0": {
                  "device": "enp1s0",
                  "mode": "dhcp",
                  "ip": null,
                  "netmask": null,
                  "gateway": null,
                  "dns": []
                },
                "eth1": null
              },
              "firewall": {
                "managed": true,
                "router_to_internet": false
              },
              "forwards": {
                "tcp": [],
                "udp": [],
                "rejected": []
              },
              "routes": {
                "routes": [],
                "rejected": []
              },
              "dhcp": {
                "enabled": false,
                "range_from": null,
                "range_to": null,
                "dns": [],
                "lease_secs": 600
              },
              "wifi": {
                "mode": "off",
                "device": null,
                "client_ssid": null,
                "client_pass": {
                  "set": false
                },
                "ap_ssid": null,
                "ap_pass": {
                  "set": false
                }
              },
              "ssh": {
                "enabled": true,
                "authorized_keys": []
              },
              "system": {
                "version": "1.1.3",
                "device": "/dev/sda",
                "timezone": "America/Los_Angeles"
              },
              "docker": {
                "enabled": true
              },
              "registry": {
                "enabled": true,
                "port": 5000,
                "expose_eth0": false,
                "expose_eth1": false,
                "rescan": true,
                "rescan_delete": true
              },
              "deployer": {
                "enabled": true
              },
              "upgrader": {
                "enabled": true
              },
              "admin_api": {
                "enabled": false,
                "port": 9999,
                "token": {
                  "set": false
                },
                "token_ok": false,
                "token_reason": "no token is set"
              },
              "wireguard": {
                "enabled": false,
                "server_public_key": null,
                "box_number": null,
                "network": null,
                "address": null,
                "server_host": null,
                "server_port": null,
                "expose": "auto",
                "access_host": false
              },
              "zerotier": {
                "enabled": false,
                "network_id": null,
                "access_host": false
              },
              "global_mqtt": {
                "enabled": true,
                "image": "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt",
                "container_name": "ezvpn-global-mqtt",
                "network_name": "ezvpn-global-mqtt-net",
                "anonymous": true,
                "username": null,
                "password": {
                  "set": false
                },
                "mirror": [],
                "max_queued_messages": 1000,
                "websocket_port": null
              },
              "bridge": {
                "enabled": false,
                "url": null,
                "username": null,
                "password": {
                  "set": false
                },
                "topics": [
                  "iohub/state/#"
                ],
                "queue_mib": 64
              }
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&c).unwrap());
    }

    const ROUTER: &[(&str, &str)] = &[
        ("IOHUBOS_NETWORK_MODE", "router"),
        ("IOHUBOS_ETH0_MODE", "static"),
        ("IOHUBOS_ETH0_IP", "192.168.1.50"),
        ("IOHUBOS_ETH0_NETMASK", "255.255.255.0"),
        ("IOHUBOS_ETH0_GATEWAY", "192.168.1.1"),
        ("IOHUBOS_ETH0_DNS", "1.1.1.1, 8.8.8.8 9.9.9.9"),
        ("IOHUBOS_ETH1_DEVICE", "enp2s0"),
        ("IOHUBOS_ETH1_IP", "192.168.190.1"),
        ("IOHUBOS_ETH1_NETMASK", "24"),
        ("IOHUBOS_WIFI_MODE", "AP"),
        ("IOHUBOS_WIFI_DEVICE", "auto"),
        ("IOHUBOS_WIFI_AP_SSID", "plant floor"),
        ("IOHUBOS_WIFI_AP_PASS", "correct horse battery"),
        ("IOHUBOS_DHCP_SERVER_ENABLED", "yes"),
        ("IOHUBOS_DHCP_SERVER_FROM", "192.168.190.100"),
        ("IOHUBOS_DHCP_SERVER_TO", "192.168.190.199"),
        ("IOHUBOS_DHCP_SERVER_DNS", "192.168.190.1,8.8.8.8"),
        ("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET", "On"),
        ("IOHUBOS_ADMIN_API_ENABLED", "TRUE"),
        (
            "IOHUBOS_ADMIN_API_AUTH_TOKEN",
            "Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!",
        ),
        ("IOHUBOS_TIMEZONE", "Europe/Rome"),
        (
            "IOHUBOS_SSH_PUBLIC_KEY",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxyz0123456789 admin@laptop",
        ),
        ("IOHUBOS_VPN_ENABLED", "true"),
        (
            "IOHUBOS_VPN_SERVER_PUBLIC_KEY",
            "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
        ),
        ("IOHUBOS_VPN_BOX_NUMBER", "300"),
        ("IOHUBOS_VPN_NETWORK", "100.90.56.0/22"),
        ("IOHUBOS_VPN_SERVER_IP_ADDRESS", "vpn.example.com"),
        ("IOHUBOS_VPN_SERVER_IP_PORT", "51820"),
        (
            "IOHUBOS_WIREGUARD_EXPOSE",
            "100.90.56.0/22, 192.168.152.0/24",
        ),
        ("IOHUBOS_ZEROTIER_ENABLED", "1"),
        ("IOHUBOS_ZEROTIER_NETWORK", "8056C2E21C000001"),
        ("IOHUBOS_BRIDGE_ENABLED", "true"),
        ("IOHUBOS_BRIDGE_URL", "mqtts://cloud.example.com"),
        ("IOHUBOS_BRIDGE_USERNAME", "box-17"),
        ("IOHUBOS_BRIDGE_PASSWORD", "bridge-secret-value"),
        (
            "IOHUBOS_BRIDGE_TOPICS",
            "iohub/state/#, iohub/event/+/progress",
        ),
    ];

    #[test]
    fn a_router_config_with_every_feature_on() {
        let tcp = vec![Forward {
            proto: Proto::Tcp,
            line: 2,
            src: PortRange {
                start: 8080,
                end: 8080,
            },
            dst_ip: Ipv4Addr::new(192, 168, 190, 10),
            dst_port: 80,
        }];
        let rejected = vec![
            LineError {
                file: "forwards-udp".into(),
                line: 3,
                text: "53=fe80::1:53".into(),
                reason: "IPv6 destinations are not supported".into(),
                code: ErrorCode::Syntax,
            },
            LineError {
                file: "envvars".into(),
                line: 9,
                text: "echo hi".into(),
                reason: "not an assignment".into(),
                code: ErrorCode::Forbidden,
            },
        ];
        let c = Config::from_vars(&with_sysvars(ROUTER), tcp, Vec::new(), Vec::new(), rejected)
            .unwrap();
        let json = serde_json::to_string_pretty(&c).unwrap();
        expect![[r#"
            {
              "network": {
                "managed": true,
                "mode": "router",
                "hostname": "iohub-525400aabbcc",
                "eth0": {
                  "device": "enp1s0",
                  "mode": "static",
                  "ip": "192.168.1.50",
                  "netmask": "255.255.255.0",
                  "gateway": "192.168.1.1",
                  "dns": [
                    "1.1.1.1",
                    "8.8.8.8",
                    "9.9.9.9"
                  ]
                },
                "eth1": {
                  "device": "enp2s0",
                  "ip": "192.168.190.1",
                  "netmask": "255.255.255.0"
                }
              },
              "firewall": {
                "managed": true,
                "router_to_internet": true
              },
              "forwards": {
                "tcp": [
                  {
                    "proto": "tcp",
                    "line": 2,
                    "src": {
                      "start": 8080,
                      "end": 8080
                    },
                    "dst_ip": "192.168.190.10",
                    "dst_port": 80
                  }
                ],
                "udp": [],
                "rejected": [
                  {
                    "file": "forwards-udp",
                    "line": 3,
                    "text": "53=fe80::1:53",
                    "reason": "IPv6 destinations are not supported",
                    "code": "syntax"
                  }
                ]
              },
              "routes": {
                "routes": [],
                "rejected": []
              },
              "dhcp": {
                "enabled": true,
                "range_from": "192.168.190.100",
                "range_to": "192.168.190.199",
                "dns": [
                  "192.168.190.1",
                  "8.8.8.8"
                ],
                "lease_secs": 600
              },
              "wifi": {
                "mode": "ap",
                "device": "auto",
                "client_ssid": null,
                "client_pass": {
                  "set": false
                },
                "ap_ssid": "plant floor",
                "ap_pass": {
                  "set": true
                }
              },
              "ssh": {
                "enabled": true,
                "authorized_keys": [
                  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxyz0123456789 admin@laptop"
                ]
              },
              "system": {
                "version": "1.1.3",
                "device": "/dev/sda",
                "timezone": "Europe/Rome"
              },
              "docker": {
                "enabled": true
              },
              "registry": {
                "enabled": true,
                "port": 5000,
                "expose_eth0": false,
                "expose_eth1": false,
                "rescan": true,
                "rescan_delete": true
              },
              "deployer": {
                "enabled": true
              },
              "upgrader": {
                "enabled": true
              },
              "admin_api": {
                "enabled": true,
                "port": 9999,
                "token": {
                  "set": true
                },
                "token_ok": true,
                "token_reason": null
              },
              "wireguard": {
                "enabled": true,
                "server_public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
                "box_number": 300,
                "network": {
                  "addr": "100.90.56.0",
                  "prefix_len": 22
                },
                "address": {
                  "addr": "100.90.57.44",
                  "prefix_len": 22
                },
                "server_host": "vpn.example.com",
                "server_port": 51820,
                "expose": {
                  "cidrs": [
                    {
                      "addr": "100.90.56.0",
                      "prefix_len": 22
                    },
                    {
                      "addr": "192.168.152.0",
                      "prefix_len": 24
                    }
                  ]
                },
                "access_host": false
              },
              "zerotier": {
                "enabled": true,
                "network_id": "8056c2e21c000001",
                "access_host": false
              },
              "global_mqtt": {
                "enabled": true,
                "image": "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt",
                "container_name": "ezvpn-global-mqtt",
                "network_name": "ezvpn-global-mqtt-net",
                "anonymous": true,
                "username": null,
                "password": {
                  "set": false
                },
                "mirror": [],
                "max_queued_messages": 1000,
                "websocket_port": null
              },
              "bridge": {
                "enabled": true,
                "url": {
                  "tls": true,
                  "host": "cloud.example.com",
                  "port": 8883
                },
                "username": "box-17",
                "password": {
                  "set": true
                },
                "topics": [
                  "iohub/state/#",
                  "iohub/event/+/progress"
                ],
                "queue_mib": 64
              }
            }"#]]
        .assert_eq(&json);
    }

    #[test]
    fn secrets_are_never_serialized_nor_echoed_in_errors() {
        let c = config(&with_sysvars(ROUTER));
        let json = serde_json::to_string(&c).unwrap();
        let debug = format!("{c:?}");
        for (name, value) in ROUTER {
            if spec(name).is_some_and(|s| s.secret) {
                assert!(!json.contains(value), "{name} leaked into JSON");
                assert!(!debug.contains(value), "{name} leaked into Debug");
                for s in Section::ALL {
                    assert!(
                        !c.section_value(*s).to_string().contains(value),
                        "{name} in {s}"
                    );
                }
            }
        }
        assert_eq!(c.wifi.ap_pass.expose(), "correct horse battery");
        assert_eq!(c.bridge.password.expose(), "bridge-secret-value");

        let bad = with_sysvars(&[
            ("IOHUBOS_WIFI_MODE", "client"),
            ("IOHUBOS_WIFI_DEVICE", "wlan0"),
            ("IOHUBOS_WIFI_CLIENT_SSID", "shop"),
            ("IOHUBOS_WIFI_CLIENT_PASS", "short\u{7}"),
        ]);
        for e in errors(&bad) {
            assert!(!e.to_string().contains("short"), "{e}");
        }
        let e = Config::validate_one("IOHUBOS_WIFI_AP_PASS", "tiny").unwrap_err();
        assert!(!e.to_string().contains("tiny"), "{e}");
    }

    #[test]
    fn every_error_is_reported_at_once() {
        check_errors(
            &[
                ("IOHUBOS_HOSTNAME", "-bad_host"),
                ("IOHUBOS_DEPLOYER_ENABLED", "maybe"),
                ("IOHUBOS_NETWORK_MODE", "router"),
                ("IOHUBOS_ETH0_MODE", "static"),
                ("IOHUBOS_ETH0_IP", "192.168.1.300"),
                ("IOHUBOS_ETH0_NETMASK", "255.0.255.0"),
                ("IOHUBOS_ETH0_DNS", "1.1.1.1 dns.google"),
                ("IOHUBOS_ETH1_DEVICE", "enp1s0"),
                ("IOHUBOS_ETH1_IP", "10.0.0.1"),
                ("IOHUBOS_ETH1_NETMASK", "255.255.255.0"),
                ("IOHUBOS_WIFI_MODE", "mesh"),
                ("IOHUBOS_DHCP_SERVER_ENABLED", "true"),
                ("IOHUBOS_DHCP_SERVER_FROM", "10.0.0.200"),
                ("IOHUBOS_DHCP_SERVER_TO", "10.0.1.10"),
                ("IOHUBOS_DOCKER_REGISTRY_PORT", "22"),
                ("IOHUBOS_ADMIN_API_ENABLED", "true"),
                ("IOHUBOS_ADMIN_API_SERVER_PORT", "70000"),
                ("IOHUBOS_TIMEZONE", "../../etc/passwd"),
                ("IOHUBOS_WIREGUARD_ENABLED", "true"),
                ("IOHUBOS_WIREGUARD_BOX_NUMBER", "1"),
                ("IOHUBOS_WIREGUARD_NETWORK", "100.90.56.0"),
                ("IOHUBOS_WIREGUARD_SERVER_IP_PORT", "51820"),
                ("IOHUBOS_ZEROTIER_ENABLED", "true"),
                ("IOHUBOS_ZEROTIER_NETWORK", "xyz"),
                ("IOHUBOS_BRIDGE_ENABLED", "true"),
                ("IOHUBOS_BRIDGE_URL", "http://cloud"),
                ("IOHUBOS_BRIDGE_TOPICS", "a/#/b"),
            ],
            expect![[r#"
                invalid_value: `-bad_host` is not a host name (1-63 letters, digits and `-`, not starting or ending with `-`) (IOHUBOS_HOSTNAME)
                invalid_value: `../../etc/passwd` is not a timezone name (like `Europe/Rome` or `UTC`) (IOHUBOS_TIMEZONE)
                invalid_value: `maybe` is not a boolean (true/false, yes/no, on/off, 1/0) (IOHUBOS_DEPLOYER_ENABLED)
                invalid_value: `192.168.1.300` is not an IPv4 address (IOHUBOS_ETH0_IP)
                invalid_value: `255.0.255.0` is not a contiguous netmask (IOHUBOS_ETH0_NETMASK)
                invalid_value: not IPv4 addresses: `dns.google` (IOHUBOS_ETH0_DNS)
                conflict: `enp1s0` is also the ETH0 uplink (IOHUBOS_ETH0_DEVICE) (IOHUBOS_ETH1_DEVICE)
                invalid_value: `mesh` is not a WiFi mode (empty or off, client, ap) (IOHUBOS_WIFI_MODE)
                conflict: 10.0.1.10 is outside the ETH1 network 10.0.0.0/24 (IOHUBOS_DHCP_SERVER_TO)
                conflict: tcp port 22 of the registry is already used by SSH (IOHUBOS_OPENSSH_ENABLED) (IOHUBOS_DOCKER_REGISTRY_PORT)
                invalid_value: `70000` is not a port (1-65535) (IOHUBOS_ADMIN_API_SERVER_PORT)
                missing: required when IOHUBOS_WIREGUARD_ENABLED is true (IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY)
                invalid_value: box number `1` must be greater than 1 (1 is the server) (IOHUBOS_WIREGUARD_BOX_NUMBER)
                invalid_value: `100.90.56.0` has no prefix length (e.g. 100.90.56.0/24) (IOHUBOS_WIREGUARD_NETWORK)
                missing: required when IOHUBOS_WIREGUARD_ENABLED is true (IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS)
                invalid_value: `xyz` is not a ZeroTier network id (16 hex digits) (IOHUBOS_ZEROTIER_NETWORK)
                invalid_value: `http://cloud` does not start with mqtt:// or mqtts:// (IOHUBOS_BRIDGE_URL)
                invalid_value: `a/#/b` is not an MQTT topic filter (`+` and `#` must be whole levels, `#` last) (IOHUBOS_BRIDGE_TOPICS)"#]],
        );
    }

    #[test]
    fn every_error_carries_a_known_variable_as_field() {
        let all = errors(&with_sysvars(&[
            ("IOHUBOS_NETWORK_MODE", "router"),
            ("IOHUBOS_WIFI_MODE", "client"),
            ("IOHUBOS_DHCP_SERVER_ENABLED", "true"),
            ("IOHUBOS_WIREGUARD_ENABLED", "true"),
            ("IOHUBOS_ZEROTIER_ENABLED", "true"),
            ("IOHUBOS_BRIDGE_ENABLED", "true"),
            ("IOHUBOS_BRIDGE_TOPICS", ""),
        ]));
        assert!(all.len() >= 10, "{all:#?}");
        for e in &all {
            let field = e.field.as_deref().unwrap_or_default();
            assert!(spec(field).is_some(), "{e}");
        }
    }

    #[test]
    fn router_mode_needs_eth1_and_the_dhcp_range_when_the_server_runs() {
        check_errors(
            &[
                ("IOHUBOS_NETWORK_MODE", "router"),
                ("IOHUBOS_DHCP_SERVER_ENABLED", "true"),
            ],
            expect![[r#"
                missing: required when IOHUBOS_NETWORK_MODE is router (IOHUBOS_ETH1_DEVICE)
                missing: required when IOHUBOS_NETWORK_MODE is router (IOHUBOS_ETH1_IP)
                missing: required when IOHUBOS_NETWORK_MODE is router (IOHUBOS_ETH1_NETMASK)
                missing: required when the DHCP server runs (IOHUBOS_DHCP_SERVER_ENABLED in router mode) (IOHUBOS_DHCP_SERVER_FROM)
                missing: required when the DHCP server runs (IOHUBOS_DHCP_SERVER_ENABLED in router mode) (IOHUBOS_DHCP_SERVER_TO)"#]],
        );
    }

    #[test]
    fn a_dhcp_range_must_be_ordered_and_leave_out_the_box() {
        let router = [
            ("IOHUBOS_NETWORK_MODE", "router"),
            ("IOHUBOS_ETH1_DEVICE", "enp2s0"),
            ("IOHUBOS_ETH1_IP", "10.0.0.1"),
            ("IOHUBOS_ETH1_NETMASK", "255.255.255.0"),
            ("IOHUBOS_DHCP_SERVER_ENABLED", "true"),
        ];
        let with = |from, to| {
            let mut v: Vec<(&str, &str)> = router.to_vec();
            v.push(("IOHUBOS_DHCP_SERVER_FROM", from));
            v.push(("IOHUBOS_DHCP_SERVER_TO", to));
            v
        };
        check_errors(&with("10.0.0.90", "10.0.0.20"), expect![[
            "conflict: the range ends (10.0.0.20) before it starts (10.0.0.90) (IOHUBOS_DHCP_SERVER_TO)"
        ]]);
        check_errors(
            &with("10.0.0.0", "10.0.0.255"),
            expect![[r#"
            conflict: 10.0.0.0 is the network address of 10.0.0.0/24 (IOHUBOS_DHCP_SERVER_FROM)
            conflict: 10.0.0.255 is the broadcast address of 10.0.0.0/24 (IOHUBOS_DHCP_SERVER_TO)"#]],
        );
        check_errors(&with("10.0.0.1", "10.0.0.9"), expect![[
            "conflict: the range 10.0.0.1-10.0.0.9 includes the box's own address 10.0.0.1 (IOHUBOS_ETH1_IP) (IOHUBOS_DHCP_SERVER_FROM)"
        ]]);
        // In standalone mode the server does not run and its variables are not checked.
        let standalone = with_sysvars(&[
            ("IOHUBOS_DHCP_SERVER_ENABLED", "true"),
            ("IOHUBOS_DHCP_SERVER_FROM", "nonsense"),
        ]);
        assert!(!config(&standalone).dhcp.enabled);
    }

    #[test]
    fn static_eth0_needs_an_address_and_a_reachable_gateway() {
        check_errors(
            &[("IOHUBOS_ETH0_MODE", "")],
            expect![[r#"
            missing: required when IOHUBOS_ETH0_MODE is static (an empty mode means static) (IOHUBOS_ETH0_IP)
            missing: required when IOHUBOS_ETH0_MODE is static (an empty mode means static) (IOHUBOS_ETH0_NETMASK)"#]],
        );
        check_errors(
            &[
                ("IOHUBOS_ETH0_MODE", "Static"),
                ("IOHUBOS_ETH0_IP", "192.168.1.50"),
                ("IOHUBOS_ETH0_NETMASK", "255.255.255.0"),
                ("IOHUBOS_ETH0_GATEWAY", "192.168.2.1"),
            ],
            expect![[
                "conflict: gateway 192.168.2.1 is outside the ETH0 network 192.168.1.0/24 (IOHUBOS_ETH0_GATEWAY)"
            ]],
        );
        // DHCP mode ignores the static values, as the original does.
        let c = config(&with_sysvars(&[("IOHUBOS_ETH0_IP", "garbage")]));
        assert_eq!(c.network.eth0.ip, None);
        // A WiFi uplink replaces ETH0, whose device is then not needed.
        let wifi = vars(&[
            ("IOHUBOS_WIFI_MODE", "client"),
            ("IOHUBOS_WIFI_DEVICE", "wlan0"),
            ("IOHUBOS_WIFI_CLIENT_SSID", "shop floor"),
            ("IOHUBOS_WIFI_CLIENT_PASS", "12345678"),
        ]);
        assert_eq!(
            config(&wifi).wifi.device,
            Some(WifiDevice::Name("wlan0".into()))
        );
        check_errors(
            &[("IOHUBOS_ETH0_DEVICE", "eth0:1")],
            expect![["invalid_value: `eth0:1` is not an interface name (1-15 printable characters, no `/`, `:` or spaces) (IOHUBOS_ETH0_DEVICE)"]],
        );
    }

    /// The config service falls back to the defaults of a section whose input is refused: they
    /// must be valid whatever the sysvars say.
    #[test]
    fn an_empty_input_is_a_valid_config() {
        let c = config(&BTreeMap::new());
        assert_eq!(c.network.eth0.device, None);
        assert_eq!(c.network.hostname, None);
        assert_eq!(c.global_mqtt.image, ":5000/iohubos/iohubos-mqtt");
    }

    /// The config service puts the variables of a refused section back to their defaults and
    /// builds again: a section at its defaults is never to blame, whatever the others hold.
    #[test]
    fn a_section_at_its_defaults_is_never_blamed() {
        let full = with_sysvars(ROUTER);
        for s in Section::ALL {
            let mut v = full.clone();
            v.retain(|name, _| spec(name).is_none_or(|spec| spec.section != *s));
            if let Err(errors) =
                Config::from_vars(&v, Vec::new(), Vec::new(), Vec::new(), Vec::new())
            {
                for e in errors {
                    let field = e.field.as_deref().unwrap_or_default();
                    assert_ne!(spec(field).map(|f| f.section), Some(*s), "{e}");
                }
            }
        }
    }

    #[test]
    fn wifi_needs_a_device_credentials_and_router_mode_for_an_ap() {
        check_errors(
            &[
                ("IOHUBOS_WIFI_MODE", "ap"),
                ("IOHUBOS_WIFI_AP_PASS", "x".repeat(64).as_str()),
            ],
            expect![[r#"
                conflict: ap bridges the WiFi into br1, which exists only when IOHUBOS_NETWORK_MODE is router (IOHUBOS_WIFI_MODE)
                missing: required when IOHUBOS_WIFI_MODE is client or ap (IOHUBOS_WIFI_DEVICE)
                missing: required when IOHUBOS_WIFI_MODE is ap (IOHUBOS_WIFI_AP_SSID)
                invalid_value: a WPA passphrase has 8-63 characters (IOHUBOS_WIFI_AP_PASS)"#]],
        );
    }

    #[test]
    fn booleans_accept_common_spellings_and_refuse_the_rest() {
        for (text, want) in [
            ("true", true),
            ("TRUE", true),
            ("Yes", true),
            ("on", true),
            ("1", true),
            ("false", false),
            ("No", false),
            ("OFF", false),
            ("0", false),
            ("", false),
            (" true ", true),
        ] {
            assert_eq!(parse_bool(text), Ok(want), "{text:?}");
        }
        for text in ["True!", "y", "enabled", "2", "truee"] {
            assert!(parse_bool(text).is_err(), "{text:?}");
        }
        let c = config(&with_sysvars(&[("IOHUBOS_OPENSSH_ENABLED", "Off")]));
        assert!(!c.ssh.enabled);
    }

    #[test]
    fn deprecated_and_pre_1_0_names_feed_their_successors() {
        let c = config(&with_sysvars(&[
            ("IOHUBOS_VPN_ACCESS_HOST", "true"),
            ("IOHUBOS_ENGINE_ENABLED", "false"),
            ("IOHUBOS_ENGINE_REGISTRY_RESCAN", "false"),
        ]));
        assert!(c.wireguard.access_host);
        assert!(!c.docker.enabled);
        assert!(!c.registry.rescan);
        // The new name wins when both are present.
        let c = config(&with_sysvars(&[
            ("IOHUBOS_VPN_ACCESS_HOST", "true"),
            ("IOHUBOS_WIREGUARD_ACCESS_HOST", "false"),
            ("IOHUBOS_ENGINE_ENABLED", "false"),
            ("IOHUBOS_DOCKER_ENABLED", "true"),
        ]));
        assert!(!c.wireguard.access_host);
        assert!(c.docker.enabled);
        assert_eq!(
            renamed_to("IOHUBOS_ENGINE_REGISTRY_EXPOSE_ETH0"),
            Some("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0")
        );
        assert_eq!(renamed_to("IOHUBOS_ENGINE_NOPE"), None);
    }

    #[test]
    fn the_global_broker_image_follows_the_hostname_and_registry_port() {
        let c = config(&with_sysvars(&[("IOHUBOS_DOCKER_REGISTRY_PORT", "5050")]));
        assert_eq!(
            c.global_mqtt.image,
            "iohub-525400aabbcc:5050/iohubos/iohubos-mqtt"
        );
        // An empty port is 5000 (setDefaults), also inside the image reference.
        let c = config(&with_sysvars(&[("IOHUBOS_DOCKER_REGISTRY_PORT", "")]));
        assert_eq!(c.registry.port, 5000);
        assert_eq!(
            c.global_mqtt.image,
            "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt"
        );
        // An explicit image is kept as written.
        let c = config(&with_sysvars(&[(
            "IOHUBOS_GLOBAL_MQTT_IMG",
            "iohub-x:5000/ezvpn/iohubos-mqtt",
        )]));
        assert_eq!(c.global_mqtt.image, "iohub-x:5000/ezvpn/iohubos-mqtt");
    }

    #[test]
    fn unknown_variables_are_not_errors_here() {
        let c = config(&with_sysvars(&[
            ("IOHUBOS_SOMETHING_NEW", "1"),
            ("OTHER", "x"),
        ]));
        assert!(c.docker.enabled);
    }

    #[test]
    fn a_weak_admin_token_is_reported_in_the_section_not_as_an_error() {
        let c = config(&with_sysvars(&[
            ("IOHUBOS_ADMIN_API_ENABLED", "true"),
            ("IOHUBOS_ADMIN_API_AUTH_TOKEN", "password"),
        ]));
        assert!(c.admin_api.enabled);
        assert!(!c.admin_api.token_ok);
        expect![["the token is too weak: shorter than 32 characters, no uppercase letter, no digit, no symbol"]]
            .assert_eq(c.admin_api.token_reason.as_deref().unwrap());
        assert_eq!(token_weakness("Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!"), None);
        assert!(token_weakness("Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1!Aa1").is_some());
        assert!(Config::validate_one("IOHUBOS_ADMIN_API_AUTH_TOKEN", "weak").is_ok());
    }

    #[test]
    fn ports_of_services_on_the_box_must_differ() {
        check_errors(
            &[
                ("IOHUBOS_ADMIN_API_ENABLED", "true"),
                ("IOHUBOS_ADMIN_API_SERVER_PORT", "5000"),
            ],
            expect![[
                "conflict: tcp port 5000 of the admin API is already used by the registry (IOHUBOS_DOCKER_REGISTRY_PORT) (IOHUBOS_ADMIN_API_SERVER_PORT)"
            ]],
        );
        // A disabled service holds no port.
        let c = config(&with_sysvars(&[("IOHUBOS_ADMIN_API_SERVER_PORT", "22")]));
        assert_eq!(c.admin_api.port, 22);
    }

    #[test]
    fn wireguard_addresses_use_proper_arithmetic() {
        let net = |s| parse_ipv4_cidr(s).unwrap();
        let addr = |n, b| tunnel_address(net(n), b).map(|a| a.to_string());
        assert_eq!(addr("100.90.56.0/24", 2), Ok("100.90.56.2/24".into()));
        assert_eq!(addr("100.90.56.128/24", 2), Ok("100.90.56.2/24".into()));
        assert_eq!(addr("10.0.0.0/16", 256), Ok("10.0.1.0/16".into()));
        assert_eq!(addr("10.0.200.0/8", 20000), Ok("10.0.78.32/8".into()));
        assert_eq!(addr("10.0.200.0/16", 20000), Ok("10.0.78.32/16".into()));
        assert!(addr("100.90.56.0/24", 255).is_err(), "broadcast");
        assert_eq!(addr("100.90.56.0/24", 254), Ok("100.90.56.254/24".into()));
        assert!(addr("100.90.56.0/31", 2).is_err());
        assert!(addr("100.90.56.0/32", 2).is_err());
        check_errors(
            &[
                ("IOHUBOS_WIREGUARD_ENABLED", "true"),
                ("IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="),
                ("IOHUBOS_WIREGUARD_BOX_NUMBER", "300"),
                ("IOHUBOS_WIREGUARD_NETWORK", "100.90.56.0/24"),
                ("IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS", "203.0.113.7"),
                ("IOHUBOS_WIREGUARD_SERVER_IP_PORT", "51820"),
            ],
            expect![[
                "conflict: box number 300 does not fit 100.90.56.0/24: use 2..=254 (1 is the server) (IOHUBOS_WIREGUARD_BOX_NUMBER)"
            ]],
        );
    }

    #[test]
    fn validate_one_checks_the_form_of_one_value() {
        let check = |name: &str, value: &str| match Config::validate_one(name, value) {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        let cases = [
            ("IOHUBOS_ETH0_IP", "10.0.0.1"),
            ("IOHUBOS_ETH0_IP", "10.0.0.01"),
            ("IOHUBOS_ETH0_NETMASK", "255.255.254.0"),
            ("IOHUBOS_ETH0_NETMASK", "0.0.0.0"),
            ("IOHUBOS_ETH0_DNS", ""),
            ("IOHUBOS_VPN_BOX_NUMBER", "abc"),
            ("IOHUBOS_DOCKER_REGISTRY_PORT", "0"),
            ("IOHUBOS_WIFI_DEVICE", "wlan0/x"),
            ("IOHUBOS_WIFI_CLIENT_SSID", &"s".repeat(33)),
            ("IOHUBOS_TIMEZONE", "UTC"),
            ("IOHUBOS_TIMEZONE", "America/Argentina/Buenos_Aires"),
            ("IOHUBOS_BRIDGE_URL", "mqtt://[::1]:1884"),
            ("IOHUBOS_BRIDGE_URL", "mqtt://user:pw@host"),
            ("IOHUBOS_BRIDGE_QUEUE_MIB", "0"),
            ("IOHUBOS_WIREGUARD_EXPOSE", "0.0.0.0/0, ::/0"),
            ("IOHUBOS_WIREGUARD_EXPOSE", "10.0.0.0/33"),
            ("IOHUBOS_SSH_PUBLIC_KEY", "not a key"),
            ("IOHUBOS_ENGINE_ENABLED", "true"),
            ("IOHUBOS_ROUTES", "x"),
            ("IOHUBOS_NOPE", "x"),
        ];
        let text: Vec<String> = cases
            .iter()
            .map(|(n, v)| format!("{n}={v:?}: {}", check(n, v)))
            .collect();
        expect![[r#"
            IOHUBOS_ETH0_IP="10.0.0.1": ok
            IOHUBOS_ETH0_IP="10.0.0.01": invalid_value: `10.0.0.01` is not an IPv4 address (IOHUBOS_ETH0_IP)
            IOHUBOS_ETH0_NETMASK="255.255.254.0": ok
            IOHUBOS_ETH0_NETMASK="0.0.0.0": invalid_value: `0.0.0.0` is not a contiguous netmask (IOHUBOS_ETH0_NETMASK)
            IOHUBOS_ETH0_DNS="": ok
            IOHUBOS_VPN_BOX_NUMBER="abc": invalid_value: `abc` is not a box number (IOHUBOS_VPN_BOX_NUMBER)
            IOHUBOS_DOCKER_REGISTRY_PORT="0": invalid_value: `0` is not a port (1-65535) (IOHUBOS_DOCKER_REGISTRY_PORT)
            IOHUBOS_WIFI_DEVICE="wlan0/x": invalid_value: `wlan0/x` is not an interface name (1-15 printable characters, no `/`, `:` or spaces) (IOHUBOS_WIFI_DEVICE)
            IOHUBOS_WIFI_CLIENT_SSID="sssssssssssssssssssssssssssssssss": invalid_value: an SSID has 1-32 bytes, `sssssssssssssssssssssssssssssssss` has 33 (IOHUBOS_WIFI_CLIENT_SSID)
            IOHUBOS_TIMEZONE="UTC": ok
            IOHUBOS_TIMEZONE="America/Argentina/Buenos_Aires": ok
            IOHUBOS_BRIDGE_URL="mqtt://[::1]:1884": ok
            IOHUBOS_BRIDGE_URL="mqtt://user:pw@host": invalid_value: put the credentials in IOHUBOS_BRIDGE_USERNAME and IOHUBOS_BRIDGE_PASSWORD, not in the URL (IOHUBOS_BRIDGE_URL)
            IOHUBOS_BRIDGE_QUEUE_MIB="0": invalid_value: `0` is not a queue size in MiB (1-65536) (IOHUBOS_BRIDGE_QUEUE_MIB)
            IOHUBOS_WIREGUARD_EXPOSE="0.0.0.0/0, ::/0": ok
            IOHUBOS_WIREGUARD_EXPOSE="10.0.0.0/33": invalid_value: not networks (like 10.0.0.0/24): `10.0.0.0/33` (IOHUBOS_WIREGUARD_EXPOSE)
            IOHUBOS_SSH_PUBLIC_KEY="not a key": invalid_value: line 1 is not an authorized_keys entry (`<type> <base64 key> [comment]`) (IOHUBOS_SSH_PUBLIC_KEY)
            IOHUBOS_ENGINE_ENABLED="true": unknown_variable: `IOHUBOS_ENGINE_ENABLED` is a pre-1.0 name: set IOHUBOS_DOCKER_ENABLED instead (IOHUBOS_ENGINE_ENABLED)
            IOHUBOS_ROUTES="x": unknown_variable: `IOHUBOS_ROUTES` is internal to the original scripts and cannot be set (IOHUBOS_ROUTES)
            IOHUBOS_NOPE="x": unknown_variable: `IOHUBOS_NOPE` is not a known variable (IOHUBOS_NOPE)"#]]
        .assert_eq(&text.join("\n"));
    }

    #[test]
    fn the_default_value_of_every_variable_passes_its_own_check() {
        for v in VARIABLES.iter().filter(|v| !v.default.contains("${")) {
            assert_eq!(
                Config::validate_one(v.name, v.default),
                Ok(()),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn a_section_payload_carries_its_section_and_generation() {
        let c = config(&vars(SYSVARS));
        let p = c.section_payload(Section::Docker, 7);
        expect![[r#"{"version":1,"section":"docker","generation":7,"config":{"enabled":true}}"#]]
            .assert_eq(&serde_json::to_string(&p).unwrap());
        let back: SectionPayload =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let docker: Docker = serde_json::from_value(back.config).unwrap();
        assert_eq!(docker, c.docker);
    }

    #[test]
    fn every_section_value_deserializes_back_into_its_type() {
        let c = config(&with_sysvars(ROUTER));
        let json = serde_json::to_value(&c).unwrap();
        let mut rebuilt = serde_json::Map::new();
        for s in Section::ALL {
            rebuilt.insert(s.as_str().to_string(), c.section_value(*s));
        }
        assert_eq!(serde_json::Value::Object(rebuilt), json);
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back.network, c.network);
        assert_eq!(back.wireguard, c.wireguard);
        assert!(serde_json::from_str::<Docker>(r#"{"enabled":true,"extra":1}"#).is_err());
    }
}
