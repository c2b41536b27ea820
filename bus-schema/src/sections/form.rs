//! The form check of one value ([`Config::validate_one`]), as `iohub/cmd/config/set` receives
//! it: the parser of each variable, without the checks that involve other variables.

use super::parse::{
    check_passphrase, parse_bool, parse_box_id, parse_box_number, parse_broker_url,
    parse_compose_policy, parse_docker_name, parse_eth0_mode, parse_expose, parse_fleet_commands,
    parse_fleet_prefix, parse_host, parse_hostname, parse_iface, parse_image, parse_ipv4,
    parse_ipv4_cidr, parse_ipv4_list, parse_max_queued, parse_mirror, parse_netmask,
    parse_network_mode, parse_port, parse_queue_mib, parse_ssh_keys, parse_ssid, parse_timezone,
    parse_topics, parse_version, parse_wg_key, parse_wifi_device, parse_wifi_mode,
    parse_zerotier_id,
};
use super::registry::{renamed_to, spec, INTERNAL_VARIABLES};
use super::Config;
use crate::error::{BusError, ErrorCode};

impl Config {
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
pub(super) fn check_form(name: &str, v: &str) -> Result<(), String> {
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
        | "IOHUBOS_UPGRADER_REBOOT"
        | "IOHUBOS_UPGRADER_REQUIRE_BRIDGE"
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
        "IOHUBOS_ADMIN_API_COMPOSE_POLICY" => ok(parse_compose_policy(v)),
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
        "IOHUBOS_BRIDGE_FLEET_PREFIX" => ok(parse_fleet_prefix(v)),
        "IOHUBOS_BRIDGE_BOX_ID" => ok(parse_box_id(v)),
        "IOHUBOS_BRIDGE_FLEET_COMMANDS" => ok(parse_fleet_commands(v)),
        "IOHUBOS_UPGRADER_HEALTH_SECS" => ok(super::parse::parse_health_secs(v)),
        "IOHUBOS_UPGRADER_URL" => ok(super::parse::parse_upgrader_url(v)),
        "IOHUBOS_UPGRADER_CA" | "IOHUBOS_UPGRADER_CERT" | "IOHUBOS_UPGRADER_KEY" => {
            ok(super::parse::parse_file_path(v))
        }
        "IOHUBOS_UPGRADER_POLL_SECS" => ok(super::parse::parse_poll_secs(v)),
        "IOHUBOS_UPGRADER_WINDOW" => ok(super::parse::parse_window(v)),
        other => Err(format!("no check is defined for `{other}`")),
    }
}
