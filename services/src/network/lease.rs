//! The lease file the udhcpc hook writes (`<root>/runtime/network/lease-<dev>.json`), parsed
//! strictly into a [`DhcpLease`]: every address is checked, a malformed file is no lease.

use std::net::Ipv4Addr;
use std::path::Path;

use bus_schema::facts::DhcpLease;
use bus_schema::sections::Ipv4Cidr;
use serde::Deserialize;

/// The hook's JSON: udhcpc's environment variables, as strings.
#[derive(Debug, Deserialize)]
struct Raw {
    interface: String,
    ip: String,
    subnet: String,
    #[serde(default)]
    router: String,
    #[serde(default)]
    dns: String,
    #[serde(default)]
    serverid: String,
    #[serde(default)]
    lease: String,
}

/// Parse the hook's JSON for `dev`; `obtained_ms` is when the file was written.
pub fn parse(text: &str, dev: &str, obtained_ms: u64) -> Result<DhcpLease, String> {
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("lease file: {e}"))?;
    if raw.interface != dev {
        return Err(format!("lease is for {}, not {dev}", raw.interface));
    }
    let ip: Ipv4Addr = raw
        .ip
        .parse()
        .map_err(|_| format!("bad leased address `{}`", raw.ip))?;
    let mask: Ipv4Addr = raw
        .subnet
        .parse()
        .map_err(|_| format!("bad subnet mask `{}`", raw.subnet))?;
    let m = u32::from(mask);
    if m.leading_ones() + m.trailing_zeros() != 32 {
        return Err(format!("non-contiguous subnet mask {mask}"));
    }
    let list = |s: &str| -> Result<Vec<Ipv4Addr>, String> {
        s.split_whitespace()
            .map(|x| {
                x.parse()
                    .map_err(|_| format!("bad address `{x}` in the lease"))
            })
            .collect()
    };
    Ok(DhcpLease {
        address: Ipv4Cidr::from_netmask(ip, mask),
        gateway: list(&raw.router)?.first().copied(),
        dns: list(&raw.dns)?,
        server: list(&raw.serverid)?.first().copied(),
        lease_secs: raw.lease.trim().parse().ok(),
        obtained_ms,
    })
}

/// Read the lease of `dev`, if the hook wrote one.
pub fn read(path: &Path, dev: &str) -> Option<Result<DhcpLease, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let mtime_ms = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some(parse(&text, dev, mtime_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_lease_becomes_address_gateway_and_dns() {
        let l = parse(
            r#"{"interface":"eth0","ip":"198.18.0.57","subnet":"255.255.255.0","router":"198.18.0.1","dns":"198.18.0.1 9.9.9.9","serverid":"198.18.0.1","lease":"3600"}"#,
            "eth0",
            7,
        )
        .unwrap();
        assert_eq!(l.address.to_string(), "198.18.0.57/24");
        assert_eq!(l.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(l.dns.len(), 2);
        assert_eq!(l.lease_secs, Some(3600));
    }

    #[test]
    fn a_lease_with_a_bad_address_or_another_interface_is_refused() {
        let bad = r#"{"interface":"eth0","ip":"198.18.0.x","subnet":"255.255.255.0"}"#;
        assert!(parse(bad, "eth0", 0).is_err());
        let other = r#"{"interface":"eth9","ip":"198.18.0.5","subnet":"255.255.255.0"}"#;
        assert!(parse(other, "eth0", 0).is_err());
        let mask = r#"{"interface":"eth0","ip":"198.18.0.5","subnet":"255.0.255.0"}"#;
        assert!(parse(mask, "eth0", 0).is_err());
    }
}
