//! The routes plan: the valid lines of `/iohub/routes` against the kernel's main table. Only
//! routes marked with our protocol ([`PROTO_ROUTES`]) are ever replaced or removed; a line whose
//! gateway is not on a connected network of an up link is reported unreachable (and retried when
//! the network state changes); a line whose destination already has a route we do not own is
//! reported as a conflict and left alone.

use std::net::Ipv4Addr;

use bus_schema::error::LineError;
use bus_schema::sections::{Ipv4Cidr, Routes};
use serde::Serialize;

use sys::netlink::{KernelView, NetOp, PROTO_ROUTES};

/// One route of the file, as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRoute {
    pub line: usize,
    pub dest: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    /// The link the gateway is reachable through.
    pub dev: Option<String>,
}

/// A line that cannot be applied now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotApplied {
    pub line: usize,
    pub dest: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub reason: String,
}

/// `iohub/plan/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutesPlan {
    /// The routes that are (or will be, after `ops`) in the kernel.
    pub installed: Vec<PlannedRoute>,
    pub ops: Vec<NetOp>,
    /// Lines whose gateway is not reachable now.
    pub unreachable: Vec<NotApplied>,
    /// Lines whose destination has a route we do not own, or repeats an earlier line.
    pub conflicts: Vec<NotApplied>,
    /// Refused lines of the file (from the config service).
    pub rejected: Vec<LineError>,
}

/// Diff the file's routes against the kernel.
pub fn plan(routes: &Routes, k: &KernelView) -> RoutesPlan {
    let mut p = RoutesPlan {
        installed: Vec::new(),
        ops: Vec::new(),
        unreachable: Vec::new(),
        conflicts: Vec::new(),
        rejected: routes.rejected.clone(),
    };
    let ours: Vec<_> = k
        .routes
        .iter()
        .filter(|r| r.protocol == PROTO_ROUTES)
        .collect();
    let mut wanted: Vec<Ipv4Cidr> = Vec::new();
    for r in &routes.routes {
        let dest = Ipv4Cidr {
            addr: r.dest,
            prefix_len: r.prefix_len,
        };
        let dest = Ipv4Cidr {
            addr: dest.network(),
            prefix_len: dest.prefix_len,
        };
        let not = |reason: String| NotApplied {
            line: r.line,
            dest,
            gateway: r.gateway,
            reason,
        };
        if wanted.contains(&dest) {
            p.conflicts
                .push(not(format!("{dest} is already routed by an earlier line")));
            continue;
        }
        let foreign = k
            .routes
            .iter()
            .find(|kr| kr.dest == dest && kr.priority == 0 && kr.protocol != PROTO_ROUTES);
        if let Some(f) = foreign {
            p.conflicts.push(not(format!(
                "the kernel already has a route to {dest} that iohub does not own (proto {})",
                f.protocol
            )));
            continue;
        }
        let Some(link) = k.reachable(r.gateway) else {
            p.unreachable.push(not(format!(
                "gateway {} is not on a connected network of an up interface",
                r.gateway
            )));
            continue;
        };
        wanted.push(dest);
        let present = ours
            .iter()
            .any(|o| o.dest == dest && o.gateway == Some(r.gateway) && o.oif == Some(link.index));
        if !present {
            p.ops.push(NetOp::ReplaceRoute {
                dest,
                gateway: r.gateway,
                link: Some(link.name.clone()),
                protocol: PROTO_ROUTES,
            });
        }
        p.installed.push(PlannedRoute {
            line: r.line,
            dest,
            gateway: r.gateway,
            dev: Some(link.name.clone()),
        });
    }
    for o in ours {
        if !wanted.contains(&o.dest) {
            p.ops.push(NetOp::DelRoute {
                dest: o.dest,
                gateway: o.gateway,
                protocol: PROTO_ROUTES,
            });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_schema::files::parse_routes;
    use expect_test::{expect, Expect};
    use sys::netlink::{Addr, Link, Route as KRoute};

    fn kernel() -> KernelView {
        let link = |index, name: &str| Link {
            index,
            name: name.into(),
            up: true,
            carrier: true,
            kind: None,
            master: None,
        };
        let cidr = |s: &str| {
            let (a, l) = s.split_once('/').unwrap();
            Ipv4Cidr {
                addr: a.parse().unwrap(),
                prefix_len: l.parse().unwrap(),
            }
        };
        KernelView {
            links: vec![link(1, "lo"), link(2, "eth0"), link(3, "br1")],
            addrs: vec![
                Addr {
                    index: 2,
                    cidr: cidr("198.18.0.2/24"),
                },
                Addr {
                    index: 3,
                    cidr: cidr("198.19.0.1/24"),
                },
            ],
            routes: vec![
                KRoute {
                    dest: cidr("198.19.0.0/24"),
                    gateway: None,
                    oif: Some(3),
                    protocol: 2,
                    priority: 0,
                },
                KRoute {
                    dest: cidr("203.0.113.0/24"),
                    gateway: Some("198.19.0.10".parse().unwrap()),
                    oif: Some(3),
                    protocol: PROTO_ROUTES,
                    priority: 0,
                },
                KRoute {
                    dest: cidr("192.0.2.0/24"),
                    gateway: Some("198.19.0.11".parse().unwrap()),
                    oif: Some(3),
                    protocol: PROTO_ROUTES,
                    priority: 0,
                },
            ],
            ip_forward: true,
        }
    }

    fn check(file: &str, expect: Expect) {
        let (routes, rejected) = parse_routes("routes", file);
        let p = plan(&Routes { routes, rejected }, &kernel());
        expect.assert_eq(&serde_json::to_string_pretty(&p).unwrap());
    }

    #[test]
    fn routes_are_added_kept_removed_or_reported_per_line() {
        check(
            "198.51.100.0/24:198.19.0.10\n203.0.113.0/24:198.19.0.10\n10.9.0.0/16:10.1.1.1\n198.19.0.0/24:198.18.0.1\nbad line\n",
            expect![[r#"
                {
                  "installed": [
                    {
                      "line": 1,
                      "dest": {
                        "addr": "198.51.100.0",
                        "prefix_len": 24
                      },
                      "gateway": "198.19.0.10",
                      "dev": "br1"
                    },
                    {
                      "line": 2,
                      "dest": {
                        "addr": "203.0.113.0",
                        "prefix_len": 24
                      },
                      "gateway": "198.19.0.10",
                      "dev": "br1"
                    }
                  ],
                  "ops": [
                    {
                      "op": "replace_route",
                      "dest": {
                        "addr": "198.51.100.0",
                        "prefix_len": 24
                      },
                      "gateway": "198.19.0.10",
                      "link": "br1",
                      "protocol": 201
                    },
                    {
                      "op": "del_route",
                      "dest": {
                        "addr": "192.0.2.0",
                        "prefix_len": 24
                      },
                      "gateway": "198.19.0.11",
                      "protocol": 201
                    }
                  ],
                  "unreachable": [
                    {
                      "line": 3,
                      "dest": {
                        "addr": "10.9.0.0",
                        "prefix_len": 16
                      },
                      "gateway": "10.1.1.1",
                      "reason": "gateway 10.1.1.1 is not on a connected network of an up interface"
                    }
                  ],
                  "conflicts": [
                    {
                      "line": 4,
                      "dest": {
                        "addr": "198.19.0.0",
                        "prefix_len": 24
                      },
                      "gateway": "198.18.0.1",
                      "reason": "the kernel already has a route to 198.19.0.0/24 that iohub does not own (proto 2)"
                    }
                  ],
                  "rejected": [
                    {
                      "file": "routes",
                      "line": 5,
                      "text": "bad line",
                      "reason": "missing `:GATEWAY`; expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100)",
                      "code": "syntax"
                    }
                  ]
                }"#]],
        );
    }
}
