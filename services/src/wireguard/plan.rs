//! The wireguard service's plan: pure and deterministic (snapshot-tested), published on
//! `iohub/plan/wireguard` in both backends. It never holds a private key: the key is a file
//! ([`WgLayout::private_key`]) that only `apply` reads.
//!
//! Where things are ([`WgLayout`]):
//! - keys: `<root>/runtime/wireguard/private.key` (0600) and `public.key` (0644), directory
//!   0700, base64 with a newline like `wg genkey`/`wg pubkey` (SPEC Appendix A: the original's
//!   paths), generated once per data partition and kept across restarts and upgrades;
//! - `<root>/vpn`: IOhubOS 1.1.0's key directory, moved to the new place and replaced by a
//!   symlink to it when it is a directory and the new one does not exist (SPEC §1.3).
//!
//! The tunnel: `wireguard-go -f <interface>` (a userspace WireGuard; this kernel has none),
//! configured over its UAPI socket with the box's private key and one peer, the server:
//! `AllowedIPs` = the VPN network plus the `IOHUBOS_WIREGUARD_EXPOSE` networks, `Endpoint` =
//! server address and port, `PersistentKeepalive` = 25; the interface gets the box's address
//! (the network's prefix, so the VPN network is routed through the tunnel) and is set up.

use std::path::PathBuf;

use bus_schema::sections::{Ipv4Cidr, Wireguard, WireguardExpose};
use serde::Serialize;

use crate::ctx::Paths;

/// The userspace WireGuard run for the tunnel.
pub const WIREGUARD_GO: &str = "wireguard-go";
/// `PersistentKeepalive` of the server peer (the original's, SPEC Appendix A).
pub const KEEPALIVE_SECS: u16 = 25;

/// Where the wireguard service's files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WgLayout {
    pub dir: PathBuf,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    /// The 1.1.0 key directory (SPEC §1.3).
    pub legacy_dir: PathBuf,
}

impl WgLayout {
    pub fn new(paths: &Paths) -> WgLayout {
        let dir = paths.runtime().join("wireguard");
        WgLayout {
            private_key: dir.join("private.key"),
            public_key: dir.join("public.key"),
            dir,
            legacy_dir: paths.root("vpn"),
        }
    }
}

/// The server peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerPlan {
    /// `IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY` (base64).
    pub public_key: String,
    /// Address or DNS name (resolved when applied).
    pub host: String,
    pub port: u16,
    pub persistent_keepalive: u16,
    /// The VPN network first, then the EXPOSE networks not already in it.
    pub allowed_ips: Vec<String>,
}

/// The tunnel, when enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunnelPlan {
    pub interface: String,
    /// The box's address, with the VPN network's prefix.
    pub address: Ipv4Cidr,
    /// What IOhubOS 1.1.x gave this box, when the corrected formula differs (SPEC §9.1).
    pub original_address: Option<Ipv4Cidr>,
    pub network: Ipv4Cidr,
    pub peer: PeerPlan,
    /// Networks the VPN peers may reach through the box (the firewall's forward rules).
    pub exposed: Vec<String>,
    /// Peers reach the box's own services (`IOHUBOS_WIREGUARD_ACCESS_HOST`).
    pub access_host: bool,
    /// The command line of the userspace WireGuard.
    pub run: Vec<String>,
}

/// What the wireguard service does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WgPlan {
    pub enabled: bool,
    pub layout: WgLayout,
    pub tunnel: Option<TunnelPlan>,
}

/// The plan for the section; `Err` lists every value the tunnel lacks (the config service
/// withholds an invalid section, so this only happens with a payload from elsewhere).
pub fn plan(s: &Wireguard, layout: &WgLayout, interface: &str) -> Result<WgPlan, Vec<String>> {
    if !s.enabled {
        return Ok(WgPlan {
            enabled: false,
            layout: layout.clone(),
            tunnel: None,
        });
    }
    let mut missing = Vec::new();
    let mut need = |ok: bool, var: &str| {
        if !ok {
            missing.push(format!(
                "{var} is required when IOHUBOS_WIREGUARD_ENABLED is true"
            ));
        }
    };
    need(
        s.server_public_key.is_some(),
        "IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY",
    );
    need(s.network.is_some(), "IOHUBOS_WIREGUARD_NETWORK");
    need(s.address.is_some(), "IOHUBOS_WIREGUARD_BOX_NUMBER");
    need(
        s.server_host.is_some(),
        "IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS",
    );
    need(s.server_port.is_some(), "IOHUBOS_WIREGUARD_SERVER_IP_PORT");
    let (Some(key), Some(network), Some(address), Some(host), Some(port)) = (
        &s.server_public_key,
        s.network,
        s.address,
        &s.server_host,
        s.server_port,
    ) else {
        return Err(missing);
    };
    let network = Ipv4Cidr {
        addr: network.network(),
        prefix_len: network.prefix_len,
    };
    let exposed: Vec<String> = match &s.expose {
        WireguardExpose::Auto => Vec::new(),
        WireguardExpose::Cidrs(c) => c
            .iter()
            .map(ToString::to_string)
            .filter(|c| *c != network.to_string())
            .collect(),
    };
    let mut allowed_ips = vec![network.to_string()];
    for c in &exposed {
        if !allowed_ips.contains(c) {
            allowed_ips.push(c.clone());
        }
    }
    Ok(WgPlan {
        enabled: true,
        layout: layout.clone(),
        tunnel: Some(TunnelPlan {
            interface: interface.to_string(),
            address,
            original_address: s.original_address,
            network,
            peer: PeerPlan {
                public_key: key.clone(),
                host: host.clone(),
                port,
                persistent_keepalive: KEEPALIVE_SECS,
                allowed_ips,
            },
            exposed,
            access_host: s.access_host,
            run: vec![
                WIREGUARD_GO.to_string(),
                "-f".to_string(),
                interface.to_string(),
            ],
        }),
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use crate::shared::testenv::section_from_envvars;

    fn plan_of(envvars: &str) -> Result<WgPlan, Vec<String>> {
        let s = section_from_envvars(envvars, |c| c.wireguard.clone());
        let layout = WgLayout::new(&Paths::new("/iohub", "/"));
        plan(&s, &layout, "wg0")
    }

    const BASE: &str = "IOHUBOS_WIREGUARD_ENABLED='true'
IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY='xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
IOHUBOS_WIREGUARD_NETWORK='10.0.0.0/16'
IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS='vpn.example.com'
IOHUBOS_WIREGUARD_SERVER_IP_PORT='51820'
";

    #[test]
    fn a_box_past_255_gets_the_carried_address_and_the_original_one_is_named() {
        let p = plan_of(&format!("{BASE}IOHUBOS_WIREGUARD_BOX_NUMBER='300'\n")).unwrap();
        expect![[r#"
            {
              "enabled": true,
              "layout": {
                "dir": "/iohub/runtime/wireguard",
                "private_key": "/iohub/runtime/wireguard/private.key",
                "public_key": "/iohub/runtime/wireguard/public.key",
                "legacy_dir": "/iohub/vpn"
              },
              "tunnel": {
                "interface": "wg0",
                "address": {
                  "addr": "10.0.1.44",
                  "prefix_len": 16
                },
                "original_address": null,
                "network": {
                  "addr": "10.0.0.0",
                  "prefix_len": 16
                },
                "peer": {
                  "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
                  "host": "vpn.example.com",
                  "port": 51820,
                  "persistent_keepalive": 25,
                  "allowed_ips": [
                    "10.0.0.0/16"
                  ]
                },
                "exposed": [],
                "access_host": false,
                "run": [
                  "wireguard-go",
                  "-f",
                  "wg0"
                ]
              }
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&p).unwrap());
    }

    #[test]
    fn the_original_address_is_named_only_where_the_fix_moves_the_box() {
        // As written (10.0.255.0), the original wraps the third octet and loses the carry.
        let p = plan_of(&format!(
            "{BASE}IOHUBOS_WIREGUARD_NETWORK='10.0.255.0/16'\nIOHUBOS_WIREGUARD_BOX_NUMBER='256'\n\
             IOHUBOS_WIREGUARD_EXPOSE='198.19.0.0/24,10.0.0.0/16'\nIOHUBOS_WIREGUARD_ACCESS_HOST='true'\n"
        ))
        .unwrap();
        let t = p.tunnel.unwrap();
        assert_eq!(t.address.to_string(), "10.0.1.0/16");
        assert_eq!(t.original_address.unwrap().to_string(), "10.0.0.0/16");
        assert_eq!(t.peer.allowed_ips, ["10.0.0.0/16", "198.19.0.0/24"]);
        assert_eq!(t.exposed, ["198.19.0.0/24"]);
        assert!(t.access_host);
        // A /25 at .128: the original drops the network's last octet.
        let p = plan_of(&format!(
            "{BASE}IOHUBOS_WIREGUARD_NETWORK='100.90.56.128/25'\nIOHUBOS_WIREGUARD_BOX_NUMBER='2'\n"
        ))
        .unwrap();
        let t = p.tunnel.unwrap();
        assert_eq!(t.address.to_string(), "100.90.56.130/25");
        assert_eq!(t.original_address.unwrap().to_string(), "100.90.56.2/25");
    }

    #[test]
    fn disabled_is_no_tunnel_and_a_section_without_values_names_each_one() {
        let p = plan_of("IOHUBOS_WIREGUARD_ENABLED='false'\n").unwrap();
        assert_eq!((p.enabled, p.tunnel), (false, None));
        let s = Wireguard {
            enabled: true,
            server_public_key: None,
            box_number: None,
            network: None,
            address: None,
            original_address: None,
            server_host: None,
            server_port: None,
            expose: WireguardExpose::Auto,
            access_host: false,
        };
        let layout = WgLayout::new(&Paths::new("/iohub", "/"));
        assert_eq!(plan(&s, &layout, "wg0").unwrap_err().len(), 5);
    }
}
