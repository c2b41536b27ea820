//! Tests of the typed config, by idea, and the helpers they share: variables as the installer
//! writes them ([`SYSVARS`]) and a router with every feature on ([`ROUTER`]).

mod checks;
mod defaults;
mod form;
mod payloads;
mod registry;
mod snapshots;

use std::collections::BTreeMap;

use expect_test::Expect;

use super::Config;
use crate::error::BusError;

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
