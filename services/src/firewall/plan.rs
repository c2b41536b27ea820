//! The ruleset as data (pure, deterministic): [`plan`] turns a [`Desired`] into one nft JSON
//! transaction (`sys::nft::schema::Nftables`, the nftables crate's JSON schema) over the one table iohub owns, `inet iohub`, plus
//! the forwards it refused and a summary.
//!
//! The transaction is `add table; delete table; add table; chains; maps; rules`: the first `add`
//! makes the `delete` valid on the first load (nft 1.0.6 has no `destroy`), and the kernel applies
//! the whole batch or nothing. Nothing else is touched: never `flush ruleset` (Docker's
//! iptables-nft tables live in the same namespace).
//!
//! Layout (SPEC §6 as nftables, with the defects of §11.1 fixed):
//! - `input` (policy drop): loopback, established/related, invalid drop, ICMP echo, ICMPv6 (IPv6
//!   neighbour discovery needs it), DHCP server on the LAN, SSH, admin API, registry per its
//!   exposure flags, global broker from the LAN and container bridges;
//! - `forward` (policy drop): established/related, invalid drop, new connections from the
//!   uplink to a container bridge jump to `uplink_to_containers` (accepted only on a port
//!   exposed explicitly on the uplink: the registry's with `EXPOSE_ETH0`, the forwards' source
//!   ports, matched on `ct original proto-dst`; dropped otherwise: Docker's published ports are
//!   not open to the uplink by default), `ct status dnat accept` (port forwards, and Docker's
//!   published ports from the LAN), container bridges out, and the router-to-internet switch
//!   `iifname LAN oifname WAN accept`;
//! - `prerouting` (dstnat): port forwards from the uplink. Single ports go through two maps per
//!   protocol, `dnat ip to tcp dport map @fwd_tcp_ip : tcp dport map @fwd_tcp_port` (one rule
//!   whatever the number of forwards; two maps because nft 1.0.6 crashes on a JSON map to a
//!   concatenation `ipv4_addr . inet_service`, reference/netns.md §3). A source port *range*
//!   gets a rule of its own, `tcp dport A-B dnat ip to IP:PORT` (many-to-one, like the
//!   original's `--dport A:B -j DNAT`): ranges are rare, and keeping the maps free of interval
//!   flags keeps them on the path proven with nft 1.0.6;
//! - `postrouting` (srcnat): masquerade on the uplink.
//!
//! The WireGuard tunnel is a zone of its own (when enabled): in `input`, after ICMP, everything
//! from it is accepted with `IOHUBOS_WIREGUARD_ACCESS_HOST` and dropped without (so the services
//! open on every interface, SSH first, stay closed to VPN peers); in `forward`, peers reach the
//! `IOHUBOS_WIREGUARD_EXPOSE` networks (nothing else: `auto` exposes only the box), and in
//! `postrouting` what they send through is masqueraded as the box, as the original's container
//! did.
//!
//! A forward whose source port (or range) covers a port the box itself exposes on the uplink is
//! refused with its file, line and reason; the other forwards still apply.

use std::borrow::Cow;

use bus_schema::files::{Forward, PortRange, Proto};
use bus_schema::{ErrorCode, LineError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sys::nft::batch::Batch;
use sys::nft::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, CT,
};
use sys::nft::schema::{Chain, Map, NfListObject, Nftables, Rule, SetType, SetTypeValue, Table};
use sys::nft::stmt::{Match, Operator, Statement, NAT};
use sys::nft::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::config::{Desired, DHCP_SERVER_PORT, GLOBAL_MQTT_PORT, SSH_PORT};

/// The table iohub owns.
pub const TABLE: &str = "iohub";
/// Its family.
pub const FAMILY: NfFamily = NfFamily::INet;
/// Its family as nft spells it.
pub const FAMILY_NAME: &str = "inet";
/// Interface names of container bridges (Docker's default bridge and user networks).
pub const CONTAINER_BRIDGES: &[&str] = &["docker0", "br-*"];
/// The regular chain that decides new connections from the uplink to a container bridge.
pub const UPLINK_TO_CONTAINERS: &str = "uplink_to_containers";

/// A port the box itself listens on from the uplink; a forward may not take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposed {
    pub proto: Proto,
    pub port: u16,
    /// What listens there.
    pub service: &'static str,
}

/// Counts of what the ruleset holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub rules: usize,
    /// Single-port forwards in the maps, per protocol.
    pub tcp_map_elements: usize,
    pub udp_map_elements: usize,
    /// Source-port ranges (one rule each).
    pub range_rules: usize,
    /// Forwards in the ruleset.
    pub forwards_applied: usize,
    /// Forwards refused (collisions).
    pub forwards_refused: usize,
    /// SHA-256 of the transaction's JSON.
    pub sha256: String,
    /// Size of the transaction's JSON.
    pub bytes: usize,
}

/// The firewall plan: the transaction and what it leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The whole transaction (for an unmanaged firewall: remove our table).
    pub ruleset: Nftables<'static>,
    /// The JSON sent to `nft -j -f -`.
    pub json: String,
    pub refused: Vec<LineError>,
    pub exposed: Vec<Exposed>,
    /// Things the ruleset cannot do with the inputs it has (e.g. no uplink known).
    pub notes: Vec<String>,
    pub summary: Summary,
}

/// The ports the box exposes on the uplink, from the desired config.
pub fn exposed(d: &Desired) -> Vec<Exposed> {
    let mut out = Vec::new();
    let tcp = |port, service| Exposed {
        proto: Proto::Tcp,
        port,
        service,
    };
    if d.ssh {
        out.push(tcp(SSH_PORT, "SSH (IOHUBOS_OPENSSH_ENABLED)"));
    }
    if let Some(port) = d.admin_api {
        out.push(tcp(port, "the admin API (IOHUBOS_ADMIN_API_SERVER_PORT)"));
    }
    if let Some(r) = d.registry.filter(|r| r.wan) {
        out.push(tcp(
            r.port,
            "the registry, exposed on the uplink (IOHUBOS_DOCKER_REGISTRY_PORT)",
        ));
    }
    if d.global_mqtt {
        out.push(tcp(
            GLOBAL_MQTT_PORT,
            "the global MQTT broker (IOHUBOS_GLOBAL_MQTT)",
        ));
    }
    if let Some(port) = d.global_mqtt_ws {
        out.push(tcp(
            port,
            "the global broker's WebSocket listener (IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT)",
        ));
    }
    out
}

fn file_of(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "forwards-tcp",
        Proto::Udp => "forwards-udp",
    }
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

fn range_text(r: PortRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}:{}", r.start, r.end)
    }
}

/// Split the forwards into those that apply and those refused for a collision.
pub fn check_collisions(d: &Desired, exposed: &[Exposed]) -> (Vec<Forward>, Vec<LineError>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for f in &d.forwards {
        let hit = exposed
            .iter()
            .find(|e| e.proto == f.proto && (f.src.start..=f.src.end).contains(&e.port));
        match hit {
            Some(e) => refused.push(LineError {
                file: file_of(f.proto).to_string(),
                line: f.line,
                text: format!("{}={}:{}", range_text(f.src), f.dst_ip, f.dst_port),
                reason: format!(
                    "{}/{} is {} on this box; the forward is refused (the other forwards apply)",
                    proto_name(f.proto),
                    e.port,
                    e.service
                ),
                code: ErrorCode::Conflict,
            }),
            None => ok.push(f.clone()),
        }
    }
    (ok, refused)
}

// --- expression helpers --------------------------------------------------------------------

fn s(x: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(x.into()))
}

fn n(x: u16) -> Expression<'static> {
    Expression::Number(u32::from(x))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

/// `ct original proto-dst`: the destination port before any DNAT (Docker's published port,
/// the source port of a forward).
fn ct_original_dport() -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed("proto-dst"),
        family: None,
        dir: Some(sys::nft::expr::CTDir::Original),
    }))
}

fn op(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    op(left, Operator::EQ, right)
}

fn iifname(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Iifname), s(name))
}

fn oifname(name: &str) -> Statement<'static> {
    eq(meta(MetaKey::Oifname), s(name))
}

fn dport(proto: Proto, port: u16) -> Vec<Statement<'static>> {
    vec![
        eq(meta(MetaKey::L4proto), s(proto_name(proto))),
        eq(payload(proto_name(proto), "dport"), n(port)),
    ]
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

fn drop_() -> Statement<'static> {
    Statement::Drop(None)
}

fn map_name(proto: Proto, what: &str) -> String {
    format!("fwd_{}_{what}", proto_name(proto))
}

/// Collects the transaction.
struct Builder {
    batch: Batch<'static>,
    rules: usize,
}

impl Builder {
    fn table() -> Table<'static> {
        Table {
            family: FAMILY,
            name: Cow::Borrowed(TABLE),
            handle: None,
        }
    }

    fn chain(
        &mut self,
        name: &'static str,
        ty: NfChainType,
        hook: NfHook,
        prio: i32,
        policy: NfChainPolicy,
    ) {
        self.batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(name),
            _type: Some(ty),
            hook: Some(hook),
            prio: Some(prio),
            policy: Some(policy),
            ..Chain::default()
        }));
    }

    /// A regular chain (no hook): reached only by a `jump`.
    fn regular_chain(&mut self, name: &'static str) {
        self.batch.add(NfListObject::Chain(Chain {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Borrowed(name),
            ..Chain::default()
        }));
    }

    fn rule(&mut self, chain: &'static str, expr: Vec<Statement<'static>>) {
        self.rules += 1;
        self.batch.add(NfListObject::Rule(Rule {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            chain: Cow::Borrowed(chain),
            expr: Cow::Owned(expr),
            ..Rule::default()
        }));
    }

    fn map(&mut self, name: String, key: SetType, value: SetType, elem: Vec<Expression<'static>>) {
        self.batch.add(NfListObject::Map(Box::new(Map {
            family: FAMILY,
            table: Cow::Borrowed(TABLE),
            name: Cow::Owned(name),
            set_type: SetTypeValue::Single(key),
            map: SetTypeValue::Single(value),
            elem: Some(Cow::Owned(elem)),
            ..Map::default()
        })));
    }
}

/// The whole plan for `d`.
pub fn plan(d: &Desired) -> Plan {
    let exposed = exposed(d);
    let mut b = Builder {
        batch: Batch::new(),
        rules: 0,
    };
    let mut notes = Vec::new();
    let mut summary = Summary::default();
    // Replace idiom: add (so the delete is valid on the first load), delete, add.
    b.batch.add(NfListObject::Table(Builder::table()));
    b.batch.delete(NfListObject::Table(Builder::table()));
    let refused = if d.managed {
        b.batch.add(NfListObject::Table(Builder::table()));
        let (forwards, refused) = check_collisions(d, &exposed);
        build(&mut b, d, &forwards, &mut summary, &mut notes);
        refused
    } else {
        notes.push(
            "IOHUBOS_FIREWALL_CONFIG is not true: iohub owns no rules (its table is removed)"
                .to_string(),
        );
        Vec::new()
    };
    let ruleset = b.batch.to_nftables();
    let json = serde_json::to_string(&ruleset).unwrap_or_default();
    summary.rules = b.rules;
    summary.forwards_refused = refused.len();
    summary.sha256 = hex::encode(Sha256::digest(json.as_bytes()));
    summary.bytes = json.len();
    Plan {
        ruleset,
        json,
        refused,
        exposed,
        notes,
        summary,
    }
}

/// The ruleset of a managed firewall, chain by chain (the order of the rules is the order of
/// the calls).
fn build(
    b: &mut Builder,
    d: &Desired,
    forwards: &[Forward],
    summary: &mut Summary,
    notes: &mut Vec<String>,
) {
    let wan = d.wan.as_deref();
    base_chains(b, wan.is_some());
    input_rules(b, d, notes);
    forward_rules(b, d, notes);
    vpn_forward_rules(b, d);
    match wan {
        Some(wan) => {
            for proto in [Proto::Tcp, Proto::Udp] {
                single_port_forwards(b, wan, proto, forwards, summary);
                port_range_forwards(b, wan, proto, forwards, summary);
            }
            summary.forwards_applied = forwards.len();
            b.rule("postrouting", vec![oifname(wan), Statement::Masquerade(None)]);
            uplink_to_containers(b, d, forwards);
        }
        None => notes.push(
            "no uplink interface is known (IOHUBOS_ETH0_DEVICE unset and no network facts): no port forwards, no masquerade".into(),
        ),
    }
}

/// The four base chains (`input` and `forward` drop by default, the NAT hooks accept), and
/// [`UPLINK_TO_CONTAINERS`] when there is an uplink.
fn base_chains(b: &mut Builder, has_uplink: bool) {
    b.chain(
        "input",
        NfChainType::Filter,
        NfHook::Input,
        0,
        NfChainPolicy::Drop,
    );
    b.chain(
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
        NfChainPolicy::Drop,
    );
    b.chain(
        "prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        -100,
        NfChainPolicy::Accept,
    );
    b.chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
        NfChainPolicy::Accept,
    );
    if has_uplink {
        b.regular_chain(UPLINK_TO_CONTAINERS);
    }
}

/// `ct state { established, related }`.
fn ct_established() -> Statement<'static> {
    op(
        ct("state"),
        Operator::IN,
        Expression::List(vec![s("established"), s("related")]),
    )
}

/// `ct state invalid`.
fn ct_invalid() -> Statement<'static> {
    op(ct("state"), Operator::IN, s("invalid"))
}

/// The `input` chain: loopback, established/related, invalid drop, ICMP, then the services
/// the box itself offers (DHCP server, SSH, admin API, registry, global broker).
fn input_rules(b: &mut Builder, d: &Desired, notes: &mut Vec<String>) {
    b.rule("input", vec![iifname("lo"), accept()]);
    b.rule("input", vec![ct_established(), accept()]);
    b.rule("input", vec![ct_invalid(), drop_()]);
    b.rule(
        "input",
        vec![eq(payload("icmp", "type"), s("echo-request")), accept()],
    );
    b.rule(
        "input",
        vec![eq(meta(MetaKey::L4proto), s("ipv6-icmp")), accept()],
    );
    if let Some(vpn) = &d.vpn {
        let verdict = if vpn.access_host { accept() } else { drop_() };
        b.rule("input", vec![iifname(&vpn.interface), verdict]);
    }
    input_service_rules(b, d, notes);
}

/// The tunnel's exposed networks in `forward`, and their masquerade.
fn vpn_forward_rules(b: &mut Builder, d: &Desired) {
    let Some(vpn) = &d.vpn else { return };
    for net in &vpn.exposed {
        let family = if net.addr.is_ipv4() { "ip" } else { "ip6" };
        let prefix = Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(net.addr.to_string())),
            len: u32::from(net.prefix_len),
        }));
        b.rule(
            "forward",
            vec![
                iifname(&vpn.interface),
                eq(payload(family, "daddr"), prefix),
                accept(),
            ],
        );
    }
    if !vpn.exposed.is_empty() {
        b.rule(
            "postrouting",
            vec![
                iifname(&vpn.interface),
                op(
                    meta(MetaKey::Oifname),
                    Operator::NEQ,
                    s(vpn.interface.clone()),
                ),
                Statement::Masquerade(None),
            ],
        );
    }
}

/// The `input` rules of the services the box offers, each per its settings and interfaces.
fn input_service_rules(b: &mut Builder, d: &Desired, notes: &mut Vec<String>) {
    let wan = d.wan.as_deref();
    let lan = d.lan.as_deref();
    if d.dhcp_server {
        match lan {
            Some(lan) => {
                let mut r = vec![iifname(lan)];
                r.extend(dport(Proto::Udp, DHCP_SERVER_PORT));
                r.push(accept());
                b.rule("input", r);
            }
            None => notes.push(
                "DHCP server enabled but no LAN interface is known: udp/67 stays closed".into(),
            ),
        }
    }
    if d.ssh {
        let mut r = dport(Proto::Tcp, SSH_PORT);
        r.push(accept());
        b.rule("input", r);
    }
    for port in d.admin_api.into_iter().chain(d.global_mqtt_ws) {
        let mut r = dport(Proto::Tcp, port);
        r.push(accept());
        b.rule("input", r);
    }
    if let Some(reg) = d.registry {
        for (on, iface) in [(reg.wan, wan), (reg.lan, lan)] {
            if let (true, Some(iface)) = (on, iface) {
                let mut r = vec![iifname(iface)];
                r.extend(dport(Proto::Tcp, reg.port));
                r.push(accept());
                b.rule("input", r);
            }
        }
    }
    if d.global_mqtt {
        for iface in lan.into_iter().chain(CONTAINER_BRIDGES.iter().copied()) {
            let mut r = vec![iifname(iface)];
            r.extend(dport(Proto::Tcp, GLOBAL_MQTT_PORT));
            r.push(accept());
            b.rule("input", r);
        }
    }
}

/// The `forward` chain: established/related, invalid drop, the jump of new connections from
/// the uplink to a container bridge, DNAT-ed connections, container bridges out, and the
/// router-to-internet switch.
fn forward_rules(b: &mut Builder, d: &Desired, notes: &mut Vec<String>) {
    let wan = d.wan.as_deref();
    let lan = d.lan.as_deref();
    b.rule("forward", vec![ct_established(), accept()]);
    b.rule("forward", vec![ct_invalid(), drop_()]);
    // New connections from the uplink to a container (Docker's published ports DNAT there)
    // are decided by `uplink_to_containers` before the general `ct status dnat accept`.
    if let Some(wan) = wan {
        for bridge in CONTAINER_BRIDGES {
            b.rule(
                "forward",
                vec![
                    iifname(wan),
                    oifname(bridge),
                    Statement::Jump(sys::nft::stmt::JumpTarget {
                        target: Cow::Borrowed(UPLINK_TO_CONTAINERS),
                    }),
                ],
            );
        }
    }
    b.rule(
        "forward",
        vec![op(ct("status"), Operator::IN, s("dnat")), accept()],
    );
    for bridge in CONTAINER_BRIDGES {
        b.rule("forward", vec![iifname(bridge), accept()]);
    }
    if d.router_to_internet {
        match (lan, wan) {
            (Some(lan), Some(wan)) => b.rule("forward", vec![iifname(lan), oifname(wan), accept()]),
            _ => notes.push(
                "router-to-internet is on but the LAN or the uplink interface is unknown: nothing to allow".into(),
            ),
        }
    }
}

/// The `proto` forwards of a single source port, sorted by port: the two maps
/// `fwd_<proto>_ip` and `fwd_<proto>_port` and the one `prerouting` rule that DNATs through
/// them (nothing when there are none).
fn single_port_forwards(
    b: &mut Builder,
    wan: &str,
    proto: Proto,
    forwards: &[Forward],
    summary: &mut Summary,
) {
    let mut singles: Vec<&Forward> = forwards
        .iter()
        .filter(|f| f.proto == proto && f.src.start == f.src.end)
        .collect();
    singles.sort_by_key(|f| f.src.start);
    if singles.is_empty() {
        return;
    }
    let ips = singles
        .iter()
        .map(|f| Expression::List(vec![n(f.src.start), s(f.dst_ip.to_string())]))
        .collect();
    let ports = singles
        .iter()
        .map(|f| Expression::List(vec![n(f.src.start), n(f.dst_port)]))
        .collect();
    b.map(
        map_name(proto, "ip"),
        SetType::InetService,
        SetType::Ipv4Addr,
        ips,
    );
    b.map(
        map_name(proto, "port"),
        SetType::InetService,
        SetType::InetService,
        ports,
    );
    let lookup = |what: &str| {
        Expression::Named(NamedExpression::Map(Box::new(sys::nft::expr::Map {
            key: payload(proto_name(proto), "dport"),
            data: s(format!("@{}", map_name(proto, what))),
        })))
    };
    b.rule(
        "prerouting",
        vec![
            iifname(wan),
            eq(meta(MetaKey::Nfproto), s("ipv4")),
            eq(meta(MetaKey::L4proto), s(proto_name(proto))),
            Statement::DNAT(Some(NAT {
                addr: Some(lookup("ip")),
                family: Some(sys::nft::stmt::NATFamily::IP),
                port: Some(lookup("port")),
                flags: None,
            })),
        ],
    );
    match proto {
        Proto::Tcp => summary.tcp_map_elements = singles.len(),
        Proto::Udp => summary.udp_map_elements = singles.len(),
    }
}

/// The `proto` forwards of a source port range, sorted by their first port: one `prerouting`
/// rule each, `dport A-B dnat ip to IP:PORT`.
fn port_range_forwards(
    b: &mut Builder,
    wan: &str,
    proto: Proto,
    forwards: &[Forward],
    summary: &mut Summary,
) {
    let mut ranges: Vec<&Forward> = forwards
        .iter()
        .filter(|f| f.proto == proto && f.src.start != f.src.end)
        .collect();
    ranges.sort_by_key(|f| f.src.start);
    for f in ranges {
        b.rule(
            "prerouting",
            vec![
                iifname(wan),
                eq(meta(MetaKey::Nfproto), s("ipv4")),
                eq(meta(MetaKey::L4proto), s(proto_name(proto))),
                eq(
                    payload(proto_name(proto), "dport"),
                    Expression::Range(Box::new(sys::nft::expr::Range {
                        range: [n(f.src.start), n(f.src.end)],
                    })),
                ),
                Statement::DNAT(Some(NAT {
                    addr: Some(s(f.dst_ip.to_string())),
                    family: Some(sys::nft::stmt::NATFamily::IP),
                    port: Some(n(f.dst_port)),
                    flags: None,
                })),
            ],
        );
        summary.range_rules += 1;
    }
}

/// The rules of [`UPLINK_TO_CONTAINERS`] (after the maps exist): a new connection from the
/// uplink reaches a container only on a port exposed explicitly on the uplink, matched on the
/// port the client asked for (`ct original proto-dst`, before Docker's or our DNAT): the
/// registry's port when `IOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0` is true, and the source ports of
/// the port forwards. Everything else from the uplink to a container bridge is dropped (a
/// drop is final whatever Docker's `filter FORWARD` accepts).
fn uplink_to_containers(b: &mut Builder, d: &Desired, forwards: &[Forward]) {
    let chain = UPLINK_TO_CONTAINERS;
    if let Some(reg) = d.registry.filter(|r| r.wan) {
        b.rule(
            chain,
            vec![
                eq(meta(MetaKey::L4proto), s("tcp")),
                eq(ct_original_dport(), n(reg.port)),
                accept(),
            ],
        );
    }
    for proto in [Proto::Tcp, Proto::Udp] {
        let of_proto = || forwards.iter().filter(move |f| f.proto == proto);
        if of_proto().any(|f| f.src.start == f.src.end) {
            b.rule(
                chain,
                vec![
                    eq(meta(MetaKey::L4proto), s(proto_name(proto))),
                    eq(
                        ct_original_dport(),
                        s(format!("@{}", map_name(proto, "port"))),
                    ),
                    accept(),
                ],
            );
        }
        let mut ranges: Vec<&Forward> = of_proto().filter(|f| f.src.start != f.src.end).collect();
        ranges.sort_by_key(|f| f.src.start);
        for f in ranges {
            b.rule(
                chain,
                vec![
                    eq(meta(MetaKey::L4proto), s(proto_name(proto))),
                    eq(
                        ct_original_dport(),
                        Expression::Range(Box::new(sys::nft::expr::Range {
                            range: [n(f.src.start), n(f.src.end)],
                        })),
                    ),
                    accept(),
                ],
            );
        }
    }
    b.rule(chain, vec![drop_()]);
}

/// The transaction, one command per line (compact JSON): what the snapshots show.
pub fn lines(ruleset: &Nftables) -> String {
    ruleset
        .objects
        .iter()
        .map(|o| serde_json::to_string(o).unwrap_or_default() + "\n")
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bus_schema::files::parse_forwards;
    use bus_schema::sections::Config;
    use expect_test::{expect, Expect};

    use super::*;

    /// The desired firewall from envvars text (`NAME='value'` lines) and the two forwards files.
    fn desired(envvars: &str, tcp: &str, udp: &str) -> Desired {
        let mut vars = BTreeMap::new();
        vars.insert("IOHUBOS_ETH0_DEVICE".to_string(), "eth0".to_string());
        for line in envvars.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').expect("NAME=value");
            vars.insert(k.to_string(), v.trim_matches('\'').to_string());
        }
        let (t, mut rejected) = parse_forwards("forwards-tcp", Proto::Tcp, tcp);
        let (u, r2) = parse_forwards("forwards-udp", Proto::Udp, udp);
        rejected.extend(r2);
        let c = Config::from_vars(&vars, t, u, Vec::new(), rejected).expect("valid config");
        let mut d = Desired::build(
            &c.firewall,
            &c.forwards,
            &c.ssh,
            &c.admin_api,
            &c.registry,
            &c.global_mqtt,
            &c.dhcp,
            &c.network,
            None,
        );
        d.vpn = super::super::config::VpnZone::of(&c.wireguard, "wg0");
        d
    }

    fn check(envvars: &str, tcp: &str, udp: &str, expect: Expect) {
        let p = plan(&desired(envvars, tcp, udp));
        let mut out = String::new();
        for r in &p.refused {
            out.push_str(&format!(
                "refused {}:{} `{}`: {}\n",
                r.file, r.line, r.text, r.reason
            ));
        }
        for n in &p.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out.push_str(&format!(
            "rules {} tcp_map {} udp_map {} ranges {} applied {}\n",
            p.summary.rules,
            p.summary.tcp_map_elements,
            p.summary.udp_map_elements,
            p.summary.range_rules,
            p.summary.forwards_applied
        ));
        out.push_str(&lines(&p.ruleset));
        expect.assert_eq(&out);
    }

    const ROUTER: &str = "IOHUBOS_NETWORK_MODE='router'
        IOHUBOS_ETH1_DEVICE='eth1'
        IOHUBOS_ETH1_IP='198.19.0.1'
        IOHUBOS_ETH1_NETMASK='255.255.255.0'
        IOHUBOS_DHCP_SERVER_ENABLED='true'
        IOHUBOS_DHCP_SERVER_FROM='198.19.0.100'
        IOHUBOS_DHCP_SERVER_TO='198.19.0.199'
        IOHUBOS_GLOBAL_MQTT='false'";

    #[test]
    fn standalone_defaults_open_ssh_and_the_global_broker_and_masquerade_the_uplink() {
        check(
            "IOHUBOS_NETWORK_MODE='standalone'",
            "",
            "",
            expect![[r#"
                rules 17 tcp_map 0 udp_map 0 ranges 0 applied 0
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"delete":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"prerouting","type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"postrouting","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"uplink_to_containers"}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"lo","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"ipv6-icmp","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":1883,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":1883,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"docker0","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"br-*","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"status"}},"right":"dnat","op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"postrouting","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"right":"eth0","op":"=="}},{"masquerade":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"drop":null}]}}}
            "#]],
        );
    }

    #[test]
    fn router_with_internet_allowed_forwards_lan_to_wan_and_serves_dhcp() {
        check(
            &format!("{ROUTER}\nIOHUBOS_FIREWALL_ROUTER_TO_INTERNET='true'"),
            "",
            "",
            expect![[r#"
                rules 17 tcp_map 0 udp_map 0 ranges 0 applied 0
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"delete":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"prerouting","type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"postrouting","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"uplink_to_containers"}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"lo","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"ipv6-icmp","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth1","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"udp","op":"=="}},{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":67,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"docker0","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"br-*","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"status"}},"right":"dnat","op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth1","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"eth0","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"postrouting","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"right":"eth0","op":"=="}},{"masquerade":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"drop":null}]}}}
            "#]],
        );
    }

    #[test]
    fn router_with_internet_denied_has_no_lan_to_wan_rule() {
        check(
            &format!("{ROUTER}\nIOHUBOS_FIREWALL_ROUTER_TO_INTERNET='false'"),
            "",
            "",
            expect![[r#"
                rules 16 tcp_map 0 udp_map 0 ranges 0 applied 0
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"delete":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"prerouting","type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"postrouting","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"uplink_to_containers"}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"lo","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"ipv6-icmp","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth1","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"udp","op":"=="}},{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":67,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"docker0","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"br-*","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"status"}},"right":"dnat","op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"postrouting","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"right":"eth0","op":"=="}},{"masquerade":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"drop":null}]}}}
            "#]],
        );
    }

    #[test]
    fn forwards_colliding_with_exposed_ports_are_refused_and_the_others_apply() {
        check(
            &format!(
                "{ROUTER}\nIOHUBOS_GLOBAL_MQTT='true'\nIOHUBOS_ADMIN_API_ENABLED='true'\n\
                 IOHUBOS_ADMIN_API_SERVER_PORT='9999'\nIOHUBOS_DOCKER_REGISTRY_EXPOSE_ETH0='true'"
            ),
            "22=198.19.0.10:22\n8080=198.19.0.10:80\n9990:10000=198.19.0.10:9999\n\
             1883=198.19.0.11:1883\n5000=198.19.0.12:5000\n2000:2010=198.19.0.13:2000\n",
            "22=198.19.0.10:22\n5000=198.19.0.10:7\n",
            expect![[r#"
                refused forwards-tcp:1 `22=198.19.0.10:22`: tcp/22 is SSH (IOHUBOS_OPENSSH_ENABLED) on this box; the forward is refused (the other forwards apply)
                refused forwards-tcp:3 `9990:10000=198.19.0.10:9999`: tcp/9999 is the admin API (IOHUBOS_ADMIN_API_SERVER_PORT) on this box; the forward is refused (the other forwards apply)
                refused forwards-tcp:4 `1883=198.19.0.11:1883`: tcp/1883 is the global MQTT broker (IOHUBOS_GLOBAL_MQTT) on this box; the forward is refused (the other forwards apply)
                refused forwards-tcp:5 `5000=198.19.0.12:5000`: tcp/5000 is the registry, exposed on the uplink (IOHUBOS_DOCKER_REGISTRY_PORT) on this box; the forward is refused (the other forwards apply)
                rules 28 tcp_map 1 udp_map 2 ranges 1 applied 4
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"delete":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"table":{"family":"inet","name":"iohub"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"input","type":"filter","hook":"input","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"forward","type":"filter","hook":"forward","prio":0,"policy":"drop"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"prerouting","type":"nat","hook":"prerouting","prio":-100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"postrouting","type":"nat","hook":"postrouting","prio":100,"policy":"accept"}}}
                {"add":{"chain":{"family":"inet","table":"iohub","name":"uplink_to_containers"}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"lo","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"payload":{"protocol":"icmp","field":"type"}},"right":"echo-request","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"ipv6-icmp","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth1","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"udp","op":"=="}},{"match":{"left":{"payload":{"protocol":"udp","field":"dport"}},"right":67,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":9999,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":5000,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth1","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":1883,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":1883,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":1883,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":["established","related"],"op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"state"}},"right":"invalid","op":"in"}},{"drop":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"docker0","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"br-*","op":"=="}},{"jump":{"target":"uplink_to_containers"}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"ct":{"key":"status"}},"right":"dnat","op":"in"}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"docker0","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"br-*","op":"=="}},{"accept":null}]}}}
                {"add":{"map":{"family":"inet","table":"iohub","name":"fwd_tcp_ip","type":"inet_service","map":"ipv4_addr","elem":[[8080,"198.19.0.10"]]}}}
                {"add":{"map":{"family":"inet","table":"iohub","name":"fwd_tcp_port","type":"inet_service","map":"inet_service","elem":[[8080,80]]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"prerouting","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"nfproto"}},"right":"ipv4","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"dnat":{"addr":{"map":{"key":{"payload":{"protocol":"tcp","field":"dport"}},"data":"@fwd_tcp_ip"}},"family":"ip","port":{"map":{"key":{"payload":{"protocol":"tcp","field":"dport"}},"data":"@fwd_tcp_port"}}}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"prerouting","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"nfproto"}},"right":"ipv4","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"range":[2000,2010]},"op":"=="}},{"dnat":{"addr":"198.19.0.13","family":"ip","port":2000}}]}}}
                {"add":{"map":{"family":"inet","table":"iohub","name":"fwd_udp_ip","type":"inet_service","map":"ipv4_addr","elem":[[22,"198.19.0.10"],[5000,"198.19.0.10"]]}}}
                {"add":{"map":{"family":"inet","table":"iohub","name":"fwd_udp_port","type":"inet_service","map":"inet_service","elem":[[22,22],[5000,7]]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"prerouting","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"eth0","op":"=="}},{"match":{"left":{"meta":{"key":"nfproto"}},"right":"ipv4","op":"=="}},{"match":{"left":{"meta":{"key":"l4proto"}},"right":"udp","op":"=="}},{"dnat":{"addr":{"map":{"key":{"payload":{"protocol":"udp","field":"dport"}},"data":"@fwd_udp_ip"}},"family":"ip","port":{"map":{"key":{"payload":{"protocol":"udp","field":"dport"}},"data":"@fwd_udp_port"}}}}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"postrouting","expr":[{"match":{"left":{"meta":{"key":"oifname"}},"right":"eth0","op":"=="}},{"masquerade":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"ct":{"key":"proto-dst","dir":"original"}},"right":5000,"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"ct":{"key":"proto-dst","dir":"original"}},"right":"@fwd_tcp_port","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"tcp","op":"=="}},{"match":{"left":{"ct":{"key":"proto-dst","dir":"original"}},"right":{"range":[2000,2010]},"op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"match":{"left":{"meta":{"key":"l4proto"}},"right":"udp","op":"=="}},{"match":{"left":{"ct":{"key":"proto-dst","dir":"original"}},"right":"@fwd_udp_port","op":"=="}},{"accept":null}]}}}
                {"add":{"rule":{"family":"inet","table":"iohub","chain":"uplink_to_containers","expr":[{"drop":null}]}}}
            "#]],
        );
    }

    const VPN: &str = "IOHUBOS_WIREGUARD_ENABLED='true'
        IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY='xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
        IOHUBOS_WIREGUARD_BOX_NUMBER='300'
        IOHUBOS_WIREGUARD_NETWORK='10.99.0.0/16'
        IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS='198.18.0.1'
        IOHUBOS_WIREGUARD_SERVER_IP_PORT='51820'";

    /// The rules that name the tunnel, in transaction order.
    fn vpn_lines(envvars: &str) -> String {
        lines(&plan(&desired(envvars, "", "")).ruleset)
            .lines()
            .filter(|l| l.contains("wg0"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn the_tunnel_is_closed_to_the_box_without_access_host_and_reaches_only_exposed_networks() {
        expect![[r#"
            {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"drop":null}]}}}
        "#]]
        .assert_eq(&vpn_lines(&format!("{ROUTER}\n{VPN}")));
        expect![[r#"
            {"add":{"rule":{"family":"inet","table":"iohub","chain":"input","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"accept":null}]}}}
            {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"match":{"left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"198.19.0.0","len":24}},"op":"=="}},{"accept":null}]}}}
            {"add":{"rule":{"family":"inet","table":"iohub","chain":"forward","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"match":{"left":{"payload":{"protocol":"ip6","field":"daddr"}},"right":{"prefix":{"addr":"fd00::","len":64}},"op":"=="}},{"accept":null}]}}}
            {"add":{"rule":{"family":"inet","table":"iohub","chain":"postrouting","expr":[{"match":{"left":{"meta":{"key":"iifname"}},"right":"wg0","op":"=="}},{"match":{"left":{"meta":{"key":"oifname"}},"right":"wg0","op":"!="}},{"masquerade":null}]}}}
        "#]]
        .assert_eq(&vpn_lines(&format!(
            "{ROUTER}\n{VPN}\nIOHUBOS_WIREGUARD_ACCESS_HOST='true'\nIOHUBOS_WIREGUARD_EXPOSE='10.99.0.0/16,198.19.0.0/24,fd00::/64'"
        )));
        assert_eq!(vpn_lines(ROUTER), "", "no tunnel, no zone");
    }

    #[test]
    fn an_unmanaged_firewall_only_removes_the_iohub_table() {
        check(
            "IOHUBOS_FIREWALL_CONFIG='false'",
            "8080=198.19.0.10:80\n",
            "",
            expect![[r#"
            note: IOHUBOS_FIREWALL_CONFIG is not true: iohub owns no rules (its table is removed)
            rules 0 tcp_map 0 udp_map 0 ranges 0 applied 0
            {"add":{"table":{"family":"inet","name":"iohub"}}}
            {"delete":{"table":{"family":"inet","name":"iohub"}}}
        "#]],
        );
    }

    #[test]
    fn ten_thousand_forwards_are_two_maps_and_one_rule_per_protocol() {
        let tcp: String = (0..10_000u32)
            .map(|i| format!("{}=198.19.{}.{}:80\n", 20_000 + i, i / 250, 1 + i % 250))
            .collect();
        let p = plan(&desired("", &tcp, ""));
        assert_eq!(p.summary.tcp_map_elements, 10_000);
        assert_eq!(p.summary.forwards_applied, 10_000);
        // input 7 (lo, est, invalid, icmp, icmpv6, ssh) + 3 mqtt bridges..., forward 5, nat 2
        assert!(p.summary.rules < 25, "{}", p.summary.rules);
        // Deterministic: the same input gives the same bytes.
        assert_eq!(
            plan(&desired("", &tcp, "")).summary.sha256,
            p.summary.sha256
        );
    }
}
