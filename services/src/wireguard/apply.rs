//! Effects of the wireguard plan (live backend): the UAPI requests that configure the running
//! userspace WireGuard, and the interface's address and link state through netlink.
//!
//! A device that is new (its process was just started, or restarted after a crash) gets the
//! whole configuration: private key, `replace_peers`, the server peer. A running device whose
//! peer fields changed (endpoint, allowed IPs) gets only the peer's new fields, so its session
//! stays and traffic continues; a new server key replaces the peer.

use std::net::SocketAddr;
use std::time::Duration;

use bus_schema::sections::Ipv4Cidr;
use bus_schema::{BusError, ErrorCode};
use sys::netlink::{NetOp, Netlink};
use sys::wg::{Device, PeerSet, Set, Uapi};

use super::keys;
use super::plan::PeerPlan;

/// How long a started userspace WireGuard may take to answer on its socket.
pub(super) const READY_WITHIN: Duration = Duration::from_secs(5);

/// What was last sent to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Configured {
    /// The process that holds the device.
    pub(super) pid: u32,
    pub(super) peer: PeerPlan,
    pub(super) endpoint: SocketAddr,
}

fn unavailable(message: String) -> BusError {
    BusError::new(ErrorCode::Unavailable, message)
}

/// The server's address: an IPv4 address as is, a name through the resolver (first IPv4).
pub(super) async fn resolve(host: &str, port: u16) -> Result<SocketAddr, BusError> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    .map_err(|_| unavailable(format!("resolving the WireGuard server {host}: timed out")))?
    .map_err(|e| unavailable(format!("resolving the WireGuard server {host}: {e}")))?
    .collect::<Vec<_>>();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| unavailable(format!("the WireGuard server {host} has no address")))
}

/// Wait until the device answers `get=1` (a stale socket of a killed process does not).
pub(super) async fn wait_ready(uapi: &Uapi) -> Result<Device, BusError> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        match uapi.get().await {
            Ok(d) => return Ok(d),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(unavailable(format!(
                    "the userspace WireGuard did not answer within {READY_WITHIN:?}: {e}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The UAPI request that brings the device from `before` (none: a new device) to `peer` at
/// `endpoint`; none when nothing changed.
pub(super) fn request(
    before: Option<&Configured>,
    pid: u32,
    private: &[u8; 32],
    peer: &PeerPlan,
    endpoint: SocketAddr,
) -> Result<Option<Set>, BusError> {
    let public_key = keys::decode(&peer.public_key).ok_or_else(|| {
        BusError::new(
            ErrorCode::InvalidValue,
            "IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY is not a WireGuard key",
        )
        .with_field("IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY")
    })?;
    let peer_set = PeerSet {
        public_key,
        endpoint: Some(endpoint),
        persistent_keepalive: peer.persistent_keepalive,
        allowed_ips: peer.allowed_ips.clone(),
    };
    let set = match before.filter(|c| c.pid == pid) {
        None => Set {
            private_key: Some(*private),
            listen_port: None,
            replace_peers: true,
            peers: vec![peer_set],
        },
        Some(c) if c.peer == *peer && c.endpoint == endpoint => return Ok(None),
        Some(c) => Set {
            private_key: None,
            listen_port: None,
            // Same server: update its fields in place (the session stays).
            replace_peers: c.peer.public_key != peer.public_key,
            peers: vec![peer_set],
        },
    };
    Ok(Some(set))
}

/// The interface's address (`cidr` only: others are removed) and link up.
pub(super) async fn address(interface: &str, cidr: Ipv4Cidr) -> Result<usize, BusError> {
    let net_err = |e: sys::netlink::NetlinkError| BusError::new(ErrorCode::Io, e.to_string());
    let nl = Netlink::connect().map_err(net_err)?;
    let view = nl.snapshot().await.map_err(net_err)?;
    let Some(link) = view.link(interface) else {
        return Err(unavailable(format!(
            "the tunnel interface {interface} does not exist"
        )));
    };
    let mut ops = Vec::new();
    let have = view.addrs_of(interface);
    for other in have.iter().filter(|a| **a != cidr) {
        ops.push(NetOp::DelAddr {
            link: interface.to_string(),
            cidr: *other,
        });
    }
    if !have.contains(&cidr) {
        ops.push(NetOp::AddAddr {
            link: interface.to_string(),
            cidr,
        });
    }
    if !link.up {
        ops.push(NetOp::LinkUp {
            link: interface.to_string(),
        });
    }
    for op in &ops {
        nl.execute(op).await.map_err(net_err)?;
    }
    Ok(ops.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port_allowed: &[&str]) -> PeerPlan {
        PeerPlan {
            public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
            host: "198.18.0.1".into(),
            port: 51820,
            persistent_keepalive: 25,
            allowed_ips: port_allowed.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_new_device_gets_everything_and_a_running_one_only_what_changed() {
        let ep: SocketAddr = "198.18.0.1:51820".parse().unwrap();
        let p = peer(&["100.90.56.0/24"]);
        let full = request(None, 7, &[9; 32], &p, ep).unwrap().unwrap();
        assert!(full.replace_peers && full.private_key == Some([9; 32]));
        let done = Configured {
            pid: 7,
            peer: p.clone(),
            endpoint: ep,
        };
        assert_eq!(request(Some(&done), 7, &[9; 32], &p, ep).unwrap(), None);
        // A new endpoint port: the peer is updated in place, no key, no replace.
        let ep2: SocketAddr = "198.18.0.1:51999".parse().unwrap();
        let upd = request(Some(&done), 7, &[9; 32], &p, ep2).unwrap().unwrap();
        assert_eq!((upd.private_key, upd.replace_peers), (None, false));
        assert_eq!(upd.peers[0].endpoint, Some(ep2));
        // Another server key replaces the peer; another process is a new device.
        let mut p2 = p.clone();
        p2.public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=".into();
        assert!(
            request(Some(&done), 7, &[9; 32], &p2, ep)
                .unwrap()
                .unwrap()
                .replace_peers
        );
        let again = request(Some(&done), 8, &[9; 32], &p, ep).unwrap().unwrap();
        assert!(again.private_key.is_some());
    }
}
