//! Tests of the checks of [`Config::from_vars`]: every problem at once, each blamed on the
//! variable that takes effect (router mode, DHCP range, static ETH0, WiFi, ports, WireGuard).

use expect_test::expect;

use super::{check_errors, config, errors, vars, with_sysvars};
use crate::sections::parse::parse_ipv4_cidr;
use crate::sections::{
    original_tunnel_address, spec, token_weakness, tunnel_address, ComposePolicy, Config,
    WifiDevice,
};

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
            ("IOHUBOS_BRIDGE_FLEET_PREFIX", "fleet/+"),
            ("IOHUBOS_BRIDGE_BOX_ID", "all"),
            ("IOHUBOS_BRIDGE_FLEET_COMMANDS", "status,config/explode"),
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
            invalid_value: `a/#/b` is not an MQTT topic filter (`+` and `#` must be whole levels, `#` last) (IOHUBOS_BRIDGE_TOPICS)
            invalid_value: `fleet/+` is not a topic prefix (levels without `+`, `#` or empty levels) (IOHUBOS_BRIDGE_FLEET_PREFIX)
            invalid_value: `all` addresses every box: it cannot be a box's name (IOHUBOS_BRIDGE_BOX_ID)
            invalid_value: `config/explode` is not `<verb>` or `<service>/<verb>` of a known service and verb (IOHUBOS_BRIDGE_FLEET_COMMANDS)"#]],
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
    check_errors(
        &with("10.0.0.90", "10.0.0.20"),
        expect![[
        "conflict: the range ends (10.0.0.20) before it starts (10.0.0.90) (IOHUBOS_DHCP_SERVER_TO)"
    ]],
    );
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
fn the_compose_policy_is_any_unless_restricted_and_nothing_else() {
    assert_eq!(
        config(&with_sysvars(&[])).admin_api.compose_policy,
        ComposePolicy::Any
    );
    for (text, want) in [
        ("any", ComposePolicy::Any),
        ("", ComposePolicy::Any),
        ("restricted", ComposePolicy::Restricted),
        ("RESTRICTED", ComposePolicy::Restricted),
    ] {
        let c = config(&with_sysvars(&[("IOHUBOS_ADMIN_API_COMPOSE_POLICY", text)]));
        assert_eq!(c.admin_api.compose_policy, want, "{text}");
        assert!(Config::validate_one("IOHUBOS_ADMIN_API_COMPOSE_POLICY", text).is_ok());
    }
    check_errors(
        &[("IOHUBOS_ADMIN_API_COMPOSE_POLICY", "strict")],
        expect![[
            "invalid_value: `strict` is not a compose policy (empty or any, restricted) (IOHUBOS_ADMIN_API_COMPOSE_POLICY)"
        ]],
    );
    assert!(Config::validate_one("IOHUBOS_ADMIN_API_COMPOSE_POLICY", "strict").is_err());
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
    // SPEC.md §9.1's examples of the original's results.
    let original = |n, b| original_tunnel_address(net(n), b).addr.to_string();
    assert_eq!(original("100.90.56.0/24", 2), "100.90.56.2");
    assert_eq!(original("10.0.255.0/24", 256), "10.0.0.0");
    assert_eq!(original("10.0.200.0/24", 20000), "10.0.22.32");
    assert_eq!(original("10.0.0.0/16", 300), "10.0.1.44");
    assert_eq!(addr("10.0.0.0/16", 300), Ok("10.0.1.44/16".into()));
    assert_eq!(addr("10.0.255.0/16", 256), Ok("10.0.1.0/16".into()));
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
fn every_problem_of_the_upgrader_source_is_reported_at_once() {
    check_errors(
        &[
            ("IOHUBOS_UPGRADER_URL", "http://fw.example/release.json"),
            ("IOHUBOS_UPGRADER_CA", "../etc/ca.pem"),
            ("IOHUBOS_UPGRADER_CERT", "certs/box.pem"),
            ("IOHUBOS_UPGRADER_POLL_SECS", "5"),
            ("IOHUBOS_UPGRADER_WINDOW", "2:00-25:00"),
            ("IOHUBOS_UPGRADER_REQUIRE_BRIDGE", "true"),
        ],
        expect![[r#"
            invalid_value: `http://fw.example/release.json` does not start with https:// (IOHUBOS_UPGRADER_URL)
            invalid_value: `../etc/ca.pem` contains `..` (IOHUBOS_UPGRADER_CA)
            missing: required when IOHUBOS_UPGRADER_CERT is set (IOHUBOS_UPGRADER_KEY)
            invalid_value: `5` is not a number of seconds from 10 to 604800 (IOHUBOS_UPGRADER_POLL_SECS)
            invalid_value: `2:00-25:00` is not a window HH:MM-HH:MM (e.g. 02:00-04:00) (IOHUBOS_UPGRADER_WINDOW)
            invalid_value: a trial cannot wait for the bridge's remote: IOHUBOS_BRIDGE_ENABLED is false (IOHUBOS_UPGRADER_REQUIRE_BRIDGE)"#]],
    );
}

#[test]
fn the_upgrader_source_reads_back() {
    let c = config(&with_sysvars(&[
        (
            "IOHUBOS_UPGRADER_URL",
            "https://fw.example:8443/fleet/release.json",
        ),
        ("IOHUBOS_UPGRADER_CA", "/etc/iohub/fleet-ca.pem"),
        ("IOHUBOS_UPGRADER_CERT", "certs/box.pem"),
        ("IOHUBOS_UPGRADER_KEY", "certs/box.key"),
        ("IOHUBOS_UPGRADER_WINDOW", "23:30-01:00"),
    ]));
    let u = c.upgrader;
    assert_eq!(
        u.url.as_deref(),
        Some("https://fw.example:8443/fleet/release.json")
    );
    assert_eq!(u.poll_secs, 3600);
    let w = u.window.unwrap();
    assert_eq!(w.to_string(), "23:30-01:00");
    assert!(w.contains(0) && w.contains(23 * 60 + 30) && !w.contains(60));
    assert!(!u.require_bridge);
}
