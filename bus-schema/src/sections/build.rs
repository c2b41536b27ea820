//! [`Config::from_vars`]: builds every section from the merged variables through a [`Reader`],
//! with one builder per section whose values are checked against each other.

use std::collections::BTreeMap;

use super::parse::{
    check_passphrase, host_problem, original_tunnel_address, parse_box_id, parse_box_number,
    parse_broker_url, parse_compose_policy, parse_docker_name, parse_eth0_mode, parse_expose,
    parse_fleet_commands, parse_fleet_prefix, parse_host, parse_hostname, parse_iface, parse_image,
    parse_ipv4, parse_ipv4_cidr, parse_ipv4_list, parse_max_queued, parse_mirror, parse_netmask,
    parse_network_mode, parse_port, parse_queue_mib, parse_ssh_keys, parse_ssid, parse_timezone,
    parse_topics, parse_version, parse_wg_key, parse_wifi_device, parse_wifi_mode,
    parse_zerotier_id, token_weakness, tunnel_address,
};
use super::parse::{
    parse_file_path, parse_health_secs, parse_poll_secs, parse_upgrader_url, parse_window,
};
use super::reader::Reader;
use super::registry::VARIABLES;
use super::values::{Eth0Mode, Ipv4Cidr, NetworkMode, WifiDevice, WifiMode, WireguardExpose};
use super::{
    AdminApi, Bridge, Config, Deployer, Dhcp, Docker, Eth0, Eth1, Firewall, Forwards, GlobalMqtt,
    Network, Registry, Routes, Ssh, System, Upgrader, Wifi, Wireguard, Zerotier,
};
use crate::error::{BusError, ErrorCode, LineError};
use crate::files::{Forward, Route};
use crate::secret::Secret;

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
        let registry = registry_section(&mut r);
        let system = system_section(&mut r);
        let deployer = Deployer {
            enabled: r.bool("IOHUBOS_DEPLOYER_ENABLED"),
        };
        let upgrader = upgrader_section(&mut r);
        let admin_api = admin_api_section(&mut r);
        let global_mqtt = global_mqtt_section(&mut r);
        let wireguard = wireguard_section(&mut r);
        let zerotier = zerotier_section(&mut r);
        let bridge = bridge_section(&mut r);
        if upgrader.require_bridge && !bridge.enabled {
            r.fail(
                ErrorCode::InvalidValue,
                "IOHUBOS_UPGRADER_REQUIRE_BRIDGE",
                "a trial cannot wait for the bridge's remote: IOHUBOS_BRIDGE_ENABLED is false",
            );
        }

        let ports = service_ports(&ssh, &docker, &registry, &admin_api, &global_mqtt);
        report_port_collisions(&mut r, &ports);

        if !r.errors.is_empty() {
            sort_in_registry_order(&mut r.errors);
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
}

fn registry_section(r: &mut Reader<'_>) -> Registry {
    Registry {
        enabled: r.bool("IOHUBOS_DOCKER_REGISTRY_ENABLED"),
        port: r.port_with_default("IOHUBOS_DOCKER_REGISTRY_PORT"),
        expose_eth0: r.bool("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0"),
        expose_eth1: r.bool("IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH1"),
        rescan: r.bool("IOHUBOS_DOCKER_REGISTRY_RESCAN"),
        rescan_delete: r.bool("IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE"),
    }
}

fn system_section(r: &mut Reader<'_>) -> System {
    System {
        version: r
            .value("IOHUBOS_VERSION", true, parse_version)
            .unwrap_or_default(),
        device: r.value("IOHUBOS_DEVICE", false, |s| Ok(s.to_string())),
        timezone: r.value("IOHUBOS_TIMEZONE", true, parse_timezone),
    }
}

/// A weak token is not an error: the section says why it is weak (see [`AdminApi::token_ok`]).
fn admin_api_section(r: &mut Reader<'_>) -> AdminApi {
    let token = r.raw("IOHUBOS_ADMIN_API_AUTH_TOKEN");
    let token_reason = token_weakness(&token);
    AdminApi {
        enabled: r.bool("IOHUBOS_ADMIN_API_ENABLED"),
        port: r.port_with_default("IOHUBOS_ADMIN_API_SERVER_PORT"),
        token: Secret::new(token),
        token_ok: token_reason.is_none(),
        token_reason,
        compose_policy: r
            .value(
                "IOHUBOS_ADMIN_API_COMPOSE_POLICY",
                true,
                parse_compose_policy,
            )
            .unwrap_or_default(),
    }
}

fn zerotier_section(r: &mut Reader<'_>) -> Zerotier {
    let enabled = r.bool("IOHUBOS_ZEROTIER_ENABLED");
    Zerotier {
        enabled,
        network_id: r.required(
            "IOHUBOS_ZEROTIER_NETWORK",
            enabled,
            "ZeroTier is enabled",
            parse_zerotier_id,
        ),
        access_host: r.bool("IOHUBOS_ZEROTIER_ACCESS_HOST"),
    }
}

/// `(variable, service, port)` of every TCP port held by an enabled service on the box
/// (forwards are the firewall's to check).
fn service_ports(
    ssh: &Ssh,
    docker: &Docker,
    registry: &Registry,
    admin_api: &AdminApi,
    global_mqtt: &GlobalMqtt,
) -> Vec<(&'static str, &'static str, u16)> {
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
    ports
}

/// TCP ports of services on the box must not collide: each port already held by an earlier
/// service is a conflict of the later one.
fn report_port_collisions(r: &mut Reader<'_>, ports: &[(&str, &str, u16)]) {
    for (i, (name, what, port)) in ports.iter().enumerate() {
        if let Some((other_name, other, _)) = ports[..i].iter().find(|p| p.2 == *port) {
            r.fail(
                ErrorCode::Conflict,
                name,
                format!("tcp port {port} of {what} is already used by {other} ({other_name})"),
            );
        }
    }
}

/// Sorts errors in registry order, so that related problems are listed together (a stable
/// sort: the errors of one variable keep their order).
fn sort_in_registry_order(errors: &mut [BusError]) {
    let rank = |e: &BusError| {
        let field = e.field.as_deref().unwrap_or_default();
        VARIABLES
            .iter()
            .position(|v| v.name == field)
            .unwrap_or(usize::MAX)
    };
    errors.sort_by_key(rank);
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
    // The original computes from the address as written (host bits kept), SPEC.md §9.1.
    let written = r.raw("IOHUBOS_WIREGUARD_NETWORK");
    let original_address = written
        .split_once('/')
        .and_then(|(a, _)| a.parse::<std::net::Ipv4Addr>().ok())
        .zip(network)
        .zip(box_number)
        .map(|((addr, net), n)| {
            original_tunnel_address(
                Ipv4Cidr {
                    addr,
                    prefix_len: net.prefix_len,
                },
                n,
            )
        })
        .filter(|o| address.is_some_and(|a| a != *o));
    Wireguard {
        enabled,
        server_public_key,
        box_number,
        network,
        address,
        original_address,
        server_host,
        server_port,
        expose,
        access_host,
    }
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
    let fleet_prefix = r.value("IOHUBOS_BRIDGE_FLEET_PREFIX", enabled, parse_fleet_prefix);
    let box_id = r.value("IOHUBOS_BRIDGE_BOX_ID", enabled, parse_box_id);
    let fleet_commands = r
        .value(
            "IOHUBOS_BRIDGE_FLEET_COMMANDS",
            enabled,
            parse_fleet_commands,
        )
        .unwrap_or_default();
    Bridge {
        enabled,
        url,
        username,
        password,
        topics,
        queue_mib,
        fleet_prefix,
        box_id,
        fleet_commands,
    }
}

fn upgrader_section(r: &mut Reader<'_>) -> Upgrader {
    let url = r.value("IOHUBOS_UPGRADER_URL", true, parse_upgrader_url);
    let ca = r.value("IOHUBOS_UPGRADER_CA", true, parse_file_path);
    let cert = r.value("IOHUBOS_UPGRADER_CERT", true, parse_file_path);
    let key = r.value("IOHUBOS_UPGRADER_KEY", true, parse_file_path);
    match (&cert, &key) {
        (Some(_), None) => r.fail(
            ErrorCode::Missing,
            "IOHUBOS_UPGRADER_KEY",
            "required when IOHUBOS_UPGRADER_CERT is set",
        ),
        (None, Some(_)) => r.fail(
            ErrorCode::Missing,
            "IOHUBOS_UPGRADER_CERT",
            "required when IOHUBOS_UPGRADER_KEY is set",
        ),
        _ => {}
    }
    Upgrader {
        enabled: r.bool("IOHUBOS_UPGRADER_ENABLED"),
        reboot: r.bool("IOHUBOS_UPGRADER_REBOOT"),
        health_secs: r
            .value("IOHUBOS_UPGRADER_HEALTH_SECS", true, parse_health_secs)
            .unwrap_or(300),
        url,
        ca,
        cert,
        key,
        poll_secs: r
            .value("IOHUBOS_UPGRADER_POLL_SECS", true, parse_poll_secs)
            .unwrap_or(3600),
        window: r.value("IOHUBOS_UPGRADER_WINDOW", true, parse_window),
        require_bridge: r.bool("IOHUBOS_UPGRADER_REQUIRE_BRIDGE"),
    }
}
