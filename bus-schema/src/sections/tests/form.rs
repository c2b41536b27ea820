//! Tests of the form check of one value ([`Config::validate_one`]) and of the boolean spellings.

use expect_test::expect;

use super::{config, with_sysvars};
use crate::sections::{parse_bool, Config, VARIABLES};

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
