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
//!
//! This file holds the section structs and [`Config`]; the rest is split by idea:
//! * `registry`: the variables, their sections, defaults and docs ([`VARIABLES`], [`spec`]);
//! * `values`: the value types the sections use ([`Ipv4Cidr`], [`NetworkMode`], ...);
//! * `parse`: one parser per kind of value, with the error message of a bad one;
//! * `reader`: looking variables up with defaults and collecting every error;
//! * `build`: [`Config::from_vars`] and the builders of the sections with cross-checks;
//! * `form`: [`Config::validate_one`], the form check of one value;
//! * `payloads`: what the config service publishes ([`SectionPayload`], [`ConfigFacts`], ...).

mod build;
mod form;
mod parse;
mod payloads;
mod reader;
mod registry;
#[cfg(test)]
mod tests;
mod values;

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::LineError;
use crate::files::{Forward, Route};
use crate::secret::Secret;

pub use parse::{
    original_tunnel_address, parse_bool, parse_timezone, token_weakness, tunnel_address, MIRRORABLE,
};
pub use payloads::{CheckRequest, ConfigFacts, ConfigRevert, PendingConfirm, SectionPayload};
pub use registry::{renamed_to, spec, VarSpec, INTERNAL_VARIABLES, VARIABLES};
pub use values::{
    BrokerUrl, ComposePolicy, Eth0Mode, IpCidr, Ipv4Cidr, MaintenanceWindow, NetworkMode,
    WifiDevice, WifiMode, WireguardExpose,
};

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
    /// `IOHUBOS_UPGRADER_REBOOT`: reboot into the trial slot once a dropped bundle is installed.
    pub reboot: bool,
    /// `IOHUBOS_UPGRADER_HEALTH_SECS`: how long a trial boot has to get every service applied.
    pub health_secs: u32,
    /// `IOHUBOS_UPGRADER_URL`: the `https://` URL of the signed release manifest polled.
    pub url: Option<String>,
    /// `IOHUBOS_UPGRADER_CA`: the pinned CA bundle (PEM) of the HTTPS source; none: the
    /// system's CA bundle.
    pub ca: Option<String>,
    /// `IOHUBOS_UPGRADER_CERT` and `IOHUBOS_UPGRADER_KEY`: the client certificate and its key
    /// (PEM), both or neither.
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `IOHUBOS_UPGRADER_POLL_SECS`: seconds between polls of the manifest.
    pub poll_secs: u32,
    /// `IOHUBOS_UPGRADER_WINDOW`: when an armed trial may reboot, in the box's time zone.
    pub window: Option<MaintenanceWindow>,
    /// `IOHUBOS_UPGRADER_REQUIRE_BRIDGE`: a trial commits only once the bridge's remote is
    /// connected (the bridge enabled).
    pub require_bridge: bool,
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
    /// `IOHUBOS_ADMIN_API_COMPOSE_POLICY`.
    pub compose_policy: ComposePolicy,
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
    /// The address IOhubOS 1.1.x gives this box (SPEC.md §9.1: from the network as written, with
    /// its lost carries), only when it differs from `address`: the box moves with the fix.
    pub original_address: Option<Ipv4Cidr>,
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
    /// `IOHUBOS_BRIDGE_FLEET_PREFIX` (`None`: no fleet topics).
    pub fleet_prefix: Option<String>,
    /// `IOHUBOS_BRIDGE_BOX_ID` (`None`: the host name).
    pub box_id: Option<String>,
    /// `IOHUBOS_BRIDGE_FLEET_COMMANDS`: `<verb>` or `<service>/<verb>` entries.
    pub fleet_commands: Vec<String>,
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
