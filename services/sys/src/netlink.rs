//! The rtnetlink boundary: the only place iohub reads or changes links, IPv4 addresses and routes
//! of the kernel, plus `net.ipv4.ip_forward` (read from `/proc/sys`, set with `sysctl -w`, in the daemon's own
//! network namespace).
//!
//! Services describe changes as [`NetOp`]s (plain, serializable data, so plans stay pure and can
//! be snapshot-tested) computed against a [`KernelView`] (what [`Netlink::snapshot`] read), and
//! hand them to [`Netlink::execute`]. Links are named in ops and resolved to indexes at execute
//! time, so an op list can create a bridge and then enslave a port to it.
//!
//! Routes carry a `protocol` value (`ip route ... proto N`): the routes service marks its routes
//! with [`PROTO_ROUTES`] and the network service its default route with [`PROTO_NETWORK`], so each
//! removes only routes it installed (rtnetlink 0.24 would otherwise default to `static`).

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};
use serde::{Deserialize, Serialize};

use bus_schema::sections::Ipv4Cidr;

/// `proto` of the routes the routes service installs (`/iohub/routes`).
pub const PROTO_ROUTES: u8 = 201;
/// `proto` of the default route the network service installs.
pub const PROTO_NETWORK: u8 = 202;
/// The main routing table.
pub const TABLE_MAIN: u32 = 254;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFF_UP` (administratively up).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// `bridge`, `veth`, ...; none for plain devices.
    pub kind: Option<String>,
    /// The index of the bridge this link is a port of.
    pub master: Option<u32>,
}

/// One IPv4 address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub index: u32,
    pub cidr: Ipv4Cidr,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dest: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub priority: u32,
}

/// What the kernel has, as far as iohub cares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    pub ip_forward: bool,
}

impl KernelView {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// IPv4 addresses of the link called `name`.
    pub fn addrs_of(&self, name: &str) -> Vec<Ipv4Cidr> {
        let Some(link) = self.link(name) else {
            return Vec::new();
        };
        self.addrs
            .iter()
            .filter(|a| a.index == link.index)
            .map(|a| a.cidr)
            .collect()
    }

    /// Whether `gw` is on a directly connected network of a link that is up (so a route via it
    /// can be installed).
    pub fn reachable(&self, gw: Ipv4Addr) -> Option<&Link> {
        self.addrs.iter().find_map(|a| {
            let link = self.link_by_index(a.index)?;
            (link.up && a.cidr.prefix_len < 32 && a.cidr.contains(gw) && a.cidr.addr != gw)
                .then_some(link)
        })
    }
}

/// One change to the kernel. Links are named; they are resolved at execute time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NetOp {
    /// `ip link add NAME type bridge`.
    CreateBridge { name: String },
    /// `ip link del NAME`.
    DeleteLink { name: String },
    /// `ip link set LINK master MASTER`.
    SetMaster { link: String, master: String },
    /// `ip link set LINK up`.
    LinkUp { link: String },
    /// `ip addr add CIDR dev LINK`.
    AddAddr { link: String, cidr: Ipv4Cidr },
    /// `ip addr del CIDR dev LINK`.
    DelAddr { link: String, cidr: Ipv4Cidr },
    /// `ip route replace DEST via GATEWAY [dev LINK] proto PROTOCOL`.
    ReplaceRoute {
        dest: Ipv4Cidr,
        gateway: Ipv4Addr,
        link: Option<String>,
        protocol: u8,
    },
    /// `ip route del DEST [via GATEWAY] proto PROTOCOL`.
    DelRoute {
        dest: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
        protocol: u8,
    },
    /// `sysctl net.ipv4.ip_forward=0|1`.
    SetIpForward { on: bool },
}

/// A failed netlink request.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[from] io::Error),
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("{what}: no such link")]
    NoLink { what: String },
    #[error("ip_forward: {0}")]
    Sysctl(String),
}

impl NetlinkError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(e),
                ..
            } => e.code.map(|c| -c.get()),
            _ => None,
        }
    }

    /// The gateway is not on a connected network (`ENETUNREACH`).
    pub fn is_unreachable(&self) -> bool {
        self.errno() == Some(nix::libc::ENETUNREACH)
    }
}

fn req(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// A netlink connection in the daemon's network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Open a connection (its reader runs as a task on the current runtime).
    pub fn connect() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Links, IPv4 addresses, main-table IPv4 routes and ip_forward.
    pub async fn snapshot(&self) -> Result<KernelView, NetlinkError> {
        let links = self
            .handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_of(&m))
            .try_collect::<Vec<_>>()
            .await
            .map_err(req("list links"))?;
        let addrs = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(req("list addresses"))?
            .iter()
            .filter_map(addr_of)
            .collect();
        let routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(req("list routes"))?
            .iter()
            .filter_map(route_of)
            .collect();
        Ok(KernelView {
            links,
            addrs,
            routes,
            ip_forward: read_ip_forward().unwrap_or(false),
        })
    }

    async fn index(&self, name: &str) -> Result<u32, NetlinkError> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(m.header.index),
            Ok(None) => Err(NetlinkError::NoLink {
                what: name.to_string(),
            }),
            Err(e) if matches!(&e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| -c.get()) == Some(nix::libc::ENODEV)) => {
                Err(NetlinkError::NoLink {
                    what: name.to_string(),
                })
            }
            Err(e) => Err(req(format!("find link {name}"))(e)),
        }
    }

    /// Carry out one op.
    pub async fn execute(&self, op: &NetOp) -> Result<(), NetlinkError> {
        let h = &self.handle;
        match op {
            NetOp::CreateBridge { name } => h
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(req(format!("create bridge {name}"))),
            NetOp::DeleteLink { name } => {
                let index = self.index(name).await?;
                h.link()
                    .del(index)
                    .execute()
                    .await
                    .map_err(req(format!("delete link {name}")))
            }
            NetOp::SetMaster { link, master } => {
                let index = self.index(link).await?;
                let master_index = self.index(master).await?;
                h.link()
                    .set(
                        LinkUnspec::new_with_index(index)
                            .controller(master_index)
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(req(format!("set {link} master {master}")))
            }
            NetOp::LinkUp { link } => {
                let index = self.index(link).await?;
                h.link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .map_err(req(format!("set {link} up")))
            }
            NetOp::AddAddr { link, cidr } => {
                let index = self.index(link).await?;
                h.address()
                    .add(index, IpAddr::V4(cidr.addr), cidr.prefix_len)
                    .replace()
                    .execute()
                    .await
                    .map_err(req(format!("add {cidr} to {link}")))
            }
            NetOp::DelAddr { link, cidr } => {
                let index = self.index(link).await?;
                let mut m = AddressMessage::default();
                m.header.family = AddressFamily::Inet;
                m.header.prefix_len = cidr.prefix_len;
                m.header.index = index;
                m.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(cidr.addr)));
                m.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(cidr.addr)));
                h.address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(req(format!("delete {cidr} from {link}")))
            }
            NetOp::ReplaceRoute {
                dest,
                gateway,
                link,
                protocol,
            } => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dest.network(), dest.prefix_len)
                    .gateway(*gateway)
                    .protocol(RouteProtocol::from(*protocol));
                if let Some(link) = link {
                    b = b.output_interface(self.index(link).await?);
                }
                h.route()
                    .add(b.build())
                    .replace()
                    .execute()
                    .await
                    .map_err(req(format!("route {dest} via {gateway}")))
            }
            NetOp::DelRoute {
                dest,
                gateway,
                protocol,
            } => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dest.network(), dest.prefix_len)
                    .protocol(RouteProtocol::from(*protocol));
                if let Some(gw) = gateway {
                    b = b.gateway(*gw);
                }
                let mut m = b.build();
                // Match any scope when deleting.
                m.header.scope = RouteScope::NoWhere;
                h.route()
                    .del(m)
                    .execute()
                    .await
                    .map_err(req(format!("delete route {dest}")))
            }
            NetOp::SetIpForward { on } => write_ip_forward(*on).await,
        }
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        up: m.header.flags.contains(LinkFlags::Up),
        carrier: m.header.flags.contains(LinkFlags::LowerUp),
        kind: None,
        master: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(i) => link.master = Some(*i),
            LinkAttribute::OperState(State::Up) => link.carrier = true,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(match k {
                            InfoKind::Bridge => "bridge".to_string(),
                            other => other.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn addr_of(m: &AddressMessage) -> Option<Addr> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    let ip = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })?;
    Some(Addr {
        index: m.header.index,
        cidr: Ipv4Cidr {
            addr: ip,
            prefix_len: m.header.prefix_len,
        },
    })
}

fn route_of(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dest = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    let mut priority = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dest = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => priority = *p,
            _ => {}
        }
    }
    if table != TABLE_MAIN {
        return None;
    }
    Some(Route {
        dest: Ipv4Cidr {
            addr: dest,
            prefix_len: m.header.destination_prefix_length,
        },
        gateway,
        oif,
        protocol: u8::from(m.header.protocol),
        priority,
    })
}

/// `net.ipv4.ip_forward` of this namespace.
pub fn read_ip_forward() -> io::Result<bool> {
    Ok(std::fs::read_to_string(IP_FORWARD)?.trim() == "1")
}

/// `/proc/sys` entries cannot be replaced by rename (so [`crate::fs::atomic_write`] does not
/// apply) and iohub opens files for writing only in `sys::fs`: the knob is set with `sysctl -w`,
/// through [`crate::cmd`], in the daemon's own namespace. It runs only when the value differs.
async fn write_ip_forward(on: bool) -> Result<(), NetlinkError> {
    let value = if on {
        "net.ipv4.ip_forward=1"
    } else {
        "net.ipv4.ip_forward=0"
    };
    let cmd = crate::cmd::Cmd::new("sysctl")
        .args(["-qw", value])
        .timeout(std::time::Duration::from_secs(10));
    let out = crate::cmd::run(&cmd)
        .await
        .map_err(|e| NetlinkError::Sysctl(e.to_string()))?;
    if out.success() {
        Ok(())
    } else {
        Err(NetlinkError::Sysctl(format!(
            "sysctl -w {value}: {}",
            out.stderr_tail.trim()
        )))
    }
}
