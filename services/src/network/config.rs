//! The network service's validated input: the `network` and `wifi` config sections reduced to
//! what the service configures ([`Desired`]). The sections are already validated by the config
//! service; this only decides roles (which device is the uplink, what joins `br1`).

use std::net::Ipv4Addr;

use bus_schema::sections::{Eth0Mode, Ipv4Cidr, Network, NetworkMode, Wifi, WifiDevice, WifiMode};
use serde::Serialize;

/// The name of the LAN bridge in router mode.
pub const BRIDGE: &str = "br1";

/// How the uplink (the ETH0 role) is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkDevice {
    /// This interface (`IOHUBOS_ETH0_DEVICE`, or the named WiFi client interface).
    Named(String),
    /// Detected from the kernel (SPEC §5.1): the device of the default route, else the first
    /// link named `e*` with carrier, else the first link named `e*`.
    AutoWired,
    /// The first wireless interface (`IOHUBOS_WIFI_DEVICE=auto` in client mode).
    AutoWireless,
}

/// How the uplink gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Addressing {
    /// A DHCP client runs on the uplink; the lease is applied by the service.
    Dhcp,
    Static {
        cidr: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

/// The LAN side in router mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lan {
    pub bridge: String,
    /// Wired ports the service enslaves (the ETH1 device).
    pub ports: Vec<String>,
    /// The WiFi AP interface, which hostapd adds to the bridge itself (`bridge=br1`).
    pub ap: Option<String>,
    pub cidr: Ipv4Cidr,
}

/// What the network service should make true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// `IOHUBOS_NETWORK_CONFIG`: false leaves links, addresses, routes and resolv.conf alone
    /// (the host name is still set, as the original's 0210 did).
    pub managed: bool,
    pub mode: NetworkMode,
    pub hostname: Option<String>,
    pub uplink: UplinkDevice,
    /// The uplink is the WiFi client interface.
    pub uplink_wifi: bool,
    pub addressing: Addressing,
    pub lan: Option<Lan>,
}

/// Reduce the sections to [`Desired`]. `wifi` is none until the wifi section is published
/// (treated as WiFi off).
pub fn desired(network: &Network, wifi: Option<&Wifi>) -> Desired {
    let wifi_mode = wifi.map(|w| w.mode).unwrap_or(WifiMode::Off);
    let wifi_dev = wifi.and_then(|w| w.device.clone());
    let client = wifi_mode == WifiMode::Client;
    let uplink = if client {
        match &wifi_dev {
            Some(WifiDevice::Name(n)) => UplinkDevice::Named(n.clone()),
            _ => UplinkDevice::AutoWireless,
        }
    } else {
        match &network.eth0.device {
            Some(d) => UplinkDevice::Named(d.clone()),
            None => UplinkDevice::AutoWired,
        }
    };
    // The WiFi client always uses DHCP (the original ran dhclient on it).
    let addressing = match (
        client,
        network.eth0.mode,
        network.eth0.ip,
        network.eth0.netmask,
    ) {
        (false, Eth0Mode::Static, Some(ip), Some(mask)) => Addressing::Static {
            cidr: Ipv4Cidr::from_netmask(ip, mask),
            gateway: network.eth0.gateway,
            dns: network.eth0.dns.clone(),
        },
        _ => Addressing::Dhcp,
    };
    let lan = match (&network.mode, &network.eth1) {
        (NetworkMode::Router, Some(eth1)) => {
            let ap = match (wifi_mode, &wifi_dev) {
                (WifiMode::Ap, Some(WifiDevice::Name(n))) => Some(n.clone()),
                _ => None,
            };
            Some(Lan {
                bridge: BRIDGE.to_string(),
                ports: vec![eth1.device.clone()],
                ap,
                cidr: eth1.cidr(),
            })
        }
        _ => None,
    };
    Desired {
        managed: network.managed,
        mode: network.mode,
        hostname: network.hostname.clone(),
        uplink,
        uplink_wifi: client,
        addressing,
        lan,
    }
}
