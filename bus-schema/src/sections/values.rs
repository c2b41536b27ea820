//! The value types of the sections: networks ([`Ipv4Cidr`], [`IpCidr`]), the modes
//! ([`NetworkMode`], [`Eth0Mode`], [`WifiMode`]), [`WifiDevice`], [`WireguardExpose`],
//! [`ComposePolicy`] and [`BrokerUrl`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// `IOHUBOS_ADMIN_API_COMPOSE_POLICY`: what a compose deployed through the admin API may ask of
/// the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComposePolicy {
    /// Anything, like the original: the API token is root-equivalent.
    #[default]
    Any,
    /// No privileged containers, host namespaces, added capabilities, devices, nor bind mounts
    /// outside the app's own folder and the global volume.
    Restricted,
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

/// A daily maintenance window `HH:MM-HH:MM` in the box's time zone (minutes after midnight); one
/// whose end is before its start spans midnight (`23:00-01:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl MaintenanceWindow {
    /// Whether `minute` (0..1440 after midnight) falls inside the window (start included, end
    /// excluded).
    pub fn contains(self, minute: u16) -> bool {
        let (s, e) = (self.start_minute, self.end_minute);
        if s <= e {
            (s..e).contains(&minute)
        } else {
            minute >= s || minute < e
        }
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, e) = (self.start_minute, self.end_minute);
        write!(f, "{:02}:{:02}-{:02}:{:02}", s / 60, s % 60, e / 60, e % 60)
    }
}
