//! The firewall's validated inputs: what it needs from eight config sections and the network
//! service's facts, gathered into one [`Desired`] value (pure; no I/O).
//!
//! Interface names follow `iohub/state/network` facts (`wan`, `lan`, `lan_cidr`): the network
//! service knows the real names (the WiFi client uplink, `br1`). Until it has published them, or
//! for a field it leaves empty (an unmanaged network), the config's device names are used:
//! `IOHUBOS_ETH0_DEVICE` for the uplink and, in router mode, `IOHUBOS_ETH1_DEVICE` with
//! `IOHUBOS_ETH1_IP/NETMASK` for the LAN.

use bus_schema::facts::NetworkFacts;
use bus_schema::files::Forward;
use bus_schema::sections::{
    AdminApi, Dhcp, Firewall, Forwards, GlobalMqtt, IpCidr, Ipv4Cidr, Network, NetworkMode,
    Registry, Ssh, Wireguard, WireguardExpose,
};
use bus_schema::{BusError, ErrorCode, LineError, Section, ServiceName};
use serde::Serialize;

use crate::reconcile::Latest;

/// The port of the global (IOhub-compatible) MQTT broker apps use.
pub const GLOBAL_MQTT_PORT: u16 = 1883;
/// The SSH port.
pub const SSH_PORT: u16 = 22;
/// The DHCP server port.
pub const DHCP_SERVER_PORT: u16 = 67;

/// The config sections the firewall follows.
/// The sections the firewall plans from (one list, in bus-schema).
pub const SECTIONS: &[Section] = ServiceName::Firewall.sections();

/// Where the interface names came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamesFrom {
    /// `iohub/state/network` facts.
    Network,
    /// The config's device names (no network facts yet).
    Config,
}

/// The registry's exposure (the registry listens on the box itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegistryExposure {
    pub port: u16,
    /// `IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0`: reachable from the uplink.
    pub wan: bool,
    /// `IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1`: reachable from the LAN.
    pub lan: bool,
}

/// The WireGuard tunnel as a zone (SPEC §9.1 "Traffic model", issue 15).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VpnZone {
    /// The tunnel interface (the daemon's `wireguard_interface`).
    pub interface: String,
    /// `IOHUBOS_WIREGUARD_ACCESS_HOST`: peers reach the box's own services (all of them, like
    /// the original's `-i docker0 -j ACCEPT`); otherwise nothing of the box but ICMP echo.
    pub access_host: bool,
    /// The `IOHUBOS_WIREGUARD_EXPOSE` networks besides the VPN network: peers may reach them
    /// through the box, masqueraded as the box (the original's container masqueraded too).
    pub exposed: Vec<IpCidr>,
}

impl VpnZone {
    /// The zone of an enabled tunnel.
    pub fn of(wg: &Wireguard, interface: &str) -> Option<VpnZone> {
        if !wg.enabled {
            return None;
        }
        let exposed = match &wg.expose {
            WireguardExpose::Auto => Vec::new(),
            WireguardExpose::Cidrs(c) => c
                .iter()
                .copied()
                .filter(|c| {
                    wg.network.is_none_or(|n| {
                        c.addr != std::net::IpAddr::V4(n.network()) || c.prefix_len != n.prefix_len
                    })
                })
                .collect(),
        };
        Some(VpnZone {
            interface: interface.to_string(),
            access_host: wg.access_host,
            exposed,
        })
    }
}

/// Everything the ruleset depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    /// `IOHUBOS_FIREWALL_CONFIG`: false = iohub owns no rules.
    pub managed: bool,
    pub mode: NetworkMode,
    /// The uplink interface; none = no uplink known (no masquerade, no forwards).
    pub wan: Option<String>,
    /// The LAN interface (router mode).
    pub lan: Option<String>,
    /// The LAN network (router mode), host bits cleared.
    pub lan_cidr: Option<Ipv4Cidr>,
    pub names_from: NamesFrom,
    /// `IOHUBOS_FIREWALL_ROUTER_TO_INTERNET`: LAN devices may reach the uplink.
    pub router_to_internet: bool,
    /// SSH enabled: tcp/22 open.
    pub ssh: bool,
    /// DHCP server enabled (router mode): udp/67 open on the LAN.
    pub dhcp_server: bool,
    /// Admin API port, when enabled.
    pub admin_api: Option<u16>,
    /// Registry exposure, when the registry is enabled.
    pub registry: Option<RegistryExposure>,
    /// The global broker enabled: tcp/1883 open from the LAN and container bridges.
    pub global_mqtt: bool,
    /// The global broker's WebSocket port (browsers), when set: open like the admin API.
    pub global_mqtt_ws: Option<u16>,
    /// The valid lines of `forwards-tcp` then `forwards-udp`.
    pub forwards: Vec<Forward>,
    /// Lines the config service already refused (parse errors), carried into the state.
    pub rejected_lines: Vec<LineError>,
    /// The WireGuard tunnel, when enabled.
    pub vpn: Option<VpnZone>,
}

/// Why no [`Desired`] can be built yet.
#[derive(Debug, Clone, PartialEq)]
pub enum NotReady {
    /// Some sections were never published.
    Waiting(Vec<Section>),
    /// A section or state payload did not decode.
    Bad(Vec<BusError>),
}

fn section<T: serde::de::DeserializeOwned>(
    latest: &Latest,
    s: Section,
    errors: &mut Vec<BusError>,
) -> Option<T> {
    match latest.section::<T>(s)? {
        Ok((_, v)) => Some(v),
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

impl Desired {
    /// Build from the latest sections and the network state; `wg_interface` is the daemon's
    /// WireGuard interface name.
    pub fn from_latest(latest: &Latest, wg_interface: &str) -> Result<Desired, NotReady> {
        let missing: Vec<Section> = SECTIONS
            .iter()
            .copied()
            .filter(|s| latest.payload(*s).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(NotReady::Waiting(missing));
        }
        let mut errors = Vec::new();
        let firewall = section::<Firewall>(latest, Section::Firewall, &mut errors);
        let forwards = section::<Forwards>(latest, Section::Forwards, &mut errors);
        let ssh = section::<Ssh>(latest, Section::Ssh, &mut errors);
        let admin = section::<AdminApi>(latest, Section::AdminApi, &mut errors);
        let registry = section::<Registry>(latest, Section::Registry, &mut errors);
        let global = section::<GlobalMqtt>(latest, Section::GlobalMqtt, &mut errors);
        let dhcp = section::<Dhcp>(latest, Section::Dhcp, &mut errors);
        let network = section::<Network>(latest, Section::Network, &mut errors);
        let wireguard = section::<Wireguard>(latest, Section::Wireguard, &mut errors);
        let facts = match latest.state(ServiceName::Network) {
            Some(s) if !s.facts.is_null() => {
                match serde_json::from_value::<NetworkFacts>(s.facts.clone()) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        errors.push(
                            BusError::new(
                                ErrorCode::BadPayload,
                                format!("network state facts: {e}"),
                            )
                            .with_field("network"),
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let (
            Some(firewall),
            Some(forwards),
            Some(ssh),
            Some(admin),
            Some(registry),
            Some(global),
            Some(dhcp),
            Some(network),
            Some(wireguard),
        ) = (
            firewall, forwards, ssh, admin, registry, global, dhcp, network, wireguard,
        )
        else {
            return Err(NotReady::Bad(errors));
        };
        if !errors.is_empty() {
            return Err(NotReady::Bad(errors));
        }
        let mut desired = Desired::build(
            &firewall,
            &forwards,
            &ssh,
            &admin,
            &registry,
            &global,
            &dhcp,
            &network,
            facts.as_ref(),
        );
        desired.vpn = VpnZone::of(&wireguard, wg_interface);
        Ok(desired)
    }

    /// The pure combination of the inputs.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        firewall: &Firewall,
        forwards: &Forwards,
        ssh: &Ssh,
        admin: &AdminApi,
        registry: &Registry,
        global: &GlobalMqtt,
        dhcp: &Dhcp,
        network: &Network,
        facts: Option<&NetworkFacts>,
    ) -> Desired {
        let router = network.mode == NetworkMode::Router;
        let cfg_lan = network.eth1.as_ref().filter(|_| router);
        let wan = facts
            .and_then(|f| f.wan.clone())
            .or_else(|| network.eth0.device.clone());
        let lan = facts
            .and_then(|f| f.lan.clone())
            .or_else(|| cfg_lan.map(|e| e.device.clone()));
        let lan_cidr = facts
            .and_then(|f| f.lan_cidr)
            .or_else(|| cfg_lan.map(|e| e.cidr()))
            .map(|c| Ipv4Cidr {
                addr: c.network(),
                prefix_len: c.prefix_len,
            });
        let names_from = if facts.is_some_and(|f| f.wan.is_some() || f.lan.is_some()) {
            NamesFrom::Network
        } else {
            NamesFrom::Config
        };
        let mode = facts.map_or(network.mode, |f| f.mode);
        let mut fwds = forwards.tcp.clone();
        fwds.extend(forwards.udp.iter().cloned());
        Desired {
            managed: firewall.managed,
            mode,
            wan,
            lan: lan.filter(|_| mode == NetworkMode::Router),
            lan_cidr: lan_cidr.filter(|_| mode == NetworkMode::Router),
            names_from,
            router_to_internet: firewall.router_to_internet,
            ssh: ssh.enabled,
            dhcp_server: dhcp.enabled && mode == NetworkMode::Router,
            admin_api: admin.enabled.then_some(admin.port),
            registry: registry.enabled.then_some(RegistryExposure {
                port: registry.port,
                wan: registry.expose_eth0,
                lan: registry.expose_eth1,
            }),
            global_mqtt: global.enabled,
            global_mqtt_ws: global.websocket_port.filter(|_| global.enabled),
            forwards: fwds,
            rejected_lines: forwards.rejected.clone(),
            vpn: None,
        }
    }
}
