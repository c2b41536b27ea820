//! Whole-config snapshots: a fresh install and a router with every feature on, and what never
//! leaks out of them.

use std::net::Ipv4Addr;

use expect_test::expect;

use super::{config, errors, vars, with_sysvars, ROUTER, SYSVARS};
use crate::error::{ErrorCode, LineError};
use crate::files::{Forward, PortRange, Proto};
use crate::sections::{spec, Config};
use crate::topic::Section;

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
            "enabled": true,
            "reboot": true,
            "health_secs": 300,
            "url": null,
            "ca": null,
            "cert": null,
            "key": null,
            "poll_secs": 3600,
            "window": null,
            "require_bridge": false
          },
          "admin_api": {
            "enabled": false,
            "port": 9999,
            "token": {
              "set": false
            },
            "token_ok": false,
            "token_reason": "no token is set",
            "compose_policy": "any"
          },
          "wireguard": {
            "enabled": false,
            "server_public_key": null,
            "box_number": null,
            "network": null,
            "address": null,
            "original_address": null,
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
            "queue_mib": 64,
            "fleet_prefix": null,
            "box_id": null,
            "fleet_commands": [
              "status",
              "get"
            ]
          }
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&c).unwrap());
}

/// The router of [`ROUTER`], with one TCP forward and refused lines of `forwards-udp` (kept in
/// the forwards section) and of `envvars` (left out: the config service reports them).
fn router_config() -> Config {
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
    Config::from_vars(&with_sysvars(ROUTER), tcp, Vec::new(), Vec::new(), rejected).unwrap()
}

/// One section as the whole config serializes it.
fn pretty<T: serde::Serialize>(section: &T) -> String {
    serde_json::to_string_pretty(section).unwrap()
}

#[test]
fn a_router_config_bridges_eth1_and_the_wifi_ap_and_serves_dhcp() {
    let c = router_config();
    expect![[r#"
        {
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
        }"#]]
    .assert_eq(&pretty(&c.network));
    expect![[r#"
        {
          "managed": true,
          "router_to_internet": true
        }"#]]
    .assert_eq(&pretty(&c.firewall));
    expect![[r#"
        {
          "enabled": true,
          "range_from": "192.168.190.100",
          "range_to": "192.168.190.199",
          "dns": [
            "192.168.190.1",
            "8.8.8.8"
          ],
          "lease_secs": 600
        }"#]]
    .assert_eq(&pretty(&c.dhcp));
    expect![[r#"
        {
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
        }"#]]
    .assert_eq(&pretty(&c.wifi));
}

#[test]
fn a_router_config_keeps_the_forwards_and_the_refused_lines_of_their_files() {
    let c = router_config();
    expect![[r#"
        {
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
        }"#]]
    .assert_eq(&pretty(&c.forwards));
    expect![[r#"
        {
          "routes": [],
          "rejected": []
        }"#]]
    .assert_eq(&pretty(&c.routes));
}

#[test]
fn a_router_config_runs_every_service_on_the_box() {
    let c = router_config();
    expect![[r#"
        {
          "enabled": true,
          "authorized_keys": [
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxyz0123456789 admin@laptop"
          ]
        }"#]]
    .assert_eq(&pretty(&c.ssh));
    expect![[r#"
        {
          "version": "1.1.3",
          "device": "/dev/sda",
          "timezone": "Europe/Rome"
        }"#]]
    .assert_eq(&pretty(&c.system));
    expect![[r#"
        {
          "enabled": true
        }"#]]
    .assert_eq(&pretty(&c.docker));
    expect![[r#"
        {
          "enabled": true,
          "port": 5000,
          "expose_eth0": false,
          "expose_eth1": false,
          "rescan": true,
          "rescan_delete": true
        }"#]]
    .assert_eq(&pretty(&c.registry));
    expect![[r#"
        {
          "enabled": true
        }"#]]
    .assert_eq(&pretty(&c.deployer));
    expect![[r#"
        {
          "enabled": true,
          "reboot": true,
          "health_secs": 300,
          "url": null,
          "ca": null,
          "cert": null,
          "key": null,
          "poll_secs": 3600,
          "window": null,
          "require_bridge": false
        }"#]]
    .assert_eq(&pretty(&c.upgrader));
    expect![[r#"
        {
          "enabled": true,
          "port": 9999,
          "token": {
            "set": true
          },
          "token_ok": true,
          "token_reason": null,
          "compose_policy": "any"
        }"#]]
    .assert_eq(&pretty(&c.admin_api));
    expect![[r#"
        {
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
        }"#]]
    .assert_eq(&pretty(&c.global_mqtt));
}

#[test]
fn a_router_config_reaches_out_through_wireguard_zerotier_and_the_bridge() {
    let c = router_config();
    expect![[r#"
        {
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
          "original_address": null,
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
        }"#]]
    .assert_eq(&pretty(&c.wireguard));
    expect![[r#"
        {
          "enabled": true,
          "network_id": "8056c2e21c000001",
          "access_host": false
        }"#]]
    .assert_eq(&pretty(&c.zerotier));
    expect![[r#"
        {
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
          "queue_mib": 64,
          "fleet_prefix": null,
          "box_id": null,
          "fleet_commands": [
            "status",
            "get"
          ]
        }"#]]
    .assert_eq(&pretty(&c.bridge));
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
