//! The firewall service against a real kernel: the real `iohubd --apply` runs inside the `gw`
//! namespace of a `lan - gw - dev` topology, is driven by editing files in its root and by
//! `iohubctl set`, and its MQTT state is read through a `NetnsProxy`. Traffic is real (std
//! sockets on threads that entered a namespace), every loop is bounded in count and time.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bus_schema::ServiceName;
use iohub_tests::netns::{
    in_netns, tcp_ask, tcp_echo, GwEth0, StateFeed, Topology, TopologyOptions,
};
use iohub_tests::{binary, require_program, Iohubd, Roots};

const T: Duration = Duration::from_secs(30);
const LAN: &str = "198.18.0.1";
const GW_WAN: &str = "198.18.0.2";
const DEV: &str = "198.19.0.10";

/// What every test's box runs: router mode on the fixture's eth0/eth1, the network left to
/// the fixture (unmanaged: the firewall falls back to the config's device names), no services
/// that would start programs of their own.
const ENVVARS: &str = "IOHUBOS_NETWORK_CONFIG='false'
IOHUBOS_NETWORK_MODE='router'
IOHUBOS_ETH0_MODE='static'
IOHUBOS_ETH0_IP='198.18.0.2'
IOHUBOS_ETH0_NETMASK='255.255.255.0'
IOHUBOS_ETH0_GATEWAY='198.18.0.1'
IOHUBOS_ETH1_DEVICE='eth1'
IOHUBOS_ETH1_IP='198.19.0.1'
IOHUBOS_ETH1_NETMASK='255.255.255.0'
IOHUBOS_DHCP_SERVER_ENABLED='false'
IOHUBOS_FIREWALL_CONFIG='true'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_UPGRADER_ENABLED='false'
IOHUBOS_DEPLOYER_ENABLED='false'
";

fn prerequisites() -> bool {
    ["nft", "ip", "conntrack", "iptables-nft"]
        .iter()
        .all(|p| require_program(p))
}

/// A box: the topology, iohubd inside gw, and the latest firewall state.
struct Box {
    topo: Topology,
    roots: Roots,
    state: StateFeed,
    _d: Iohubd,
}

impl Box {
    fn start(name: &str, extra_envvars: &str, tcp: &str, udp: &str) -> Box {
        let topo = Topology::new(
            name,
            TopologyOptions {
                gw_eth0: GwEth0::Static,
                gw_eth1_addr: true,
            },
        );
        let roots = Roots::example("router");
        write(
            &roots.root.join("envvars"),
            &format!("{ENVVARS}{extra_envvars}"),
        );
        write(&roots.root.join("forwards-tcp"), tcp);
        write(&roots.root.join("forwards-udp"), udp);
        let d = Iohubd::start_in_netns(&topo.gw, &roots, &["--apply"]);
        let state = StateFeed::new(&topo.gw, &d.control, ServiceName::Firewall, "fwtest");
        let mut b = Box {
            topo,
            roots,
            state,
            _d: d,
        };
        b.until("the first load", loaded);
        b
    }

    /// Wait until the firewall state satisfies `done`; returns it.
    fn until(
        &mut self,
        what: &str,
        done: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.state.until(what, T, done)
    }

    fn gw(&self, args: &[&str]) -> String {
        String::from_utf8(self.topo.exec(&self.topo.gw, args).stdout).unwrap()
    }

    fn table(&self) -> String {
        self.gw(&["nft", "list", "table", "inet", "iohub"])
    }

    fn ctl_set(&self, assignment: &str) {
        let root = self.roots.root.to_str().unwrap().to_string();
        let ctl = binary("iohubctl");
        self.topo.exec(
            &self.topo.gw,
            &[ctl.to_str().unwrap(), "--root", &root, "set", assignment],
        );
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-test");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn facts(s: &serde_json::Value) -> &serde_json::Value {
    &s["facts"]
}

/// The last load succeeded and is what the plan describes.
fn loaded(s: &serde_json::Value) -> bool {
    let f = facts(s);
    f["applied_sha256"].is_string() && f["applied_sha256"] == f["summary"]["sha256"]
}

// --- traffic --------------------------------------------------------------------------------

/// A UDP responder in `ns` on `port`: answers each datagram with "<peer ip> <data>"; at most
/// 200 datagrams, 120 s.
fn udp_echo(ns: &str, port: u16) {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 512];
            for _ in 0..200 {
                if Instant::now() > end {
                    return;
                }
                if let Ok((n, peer)) = s.recv_from(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = s.send_to(format!("{} {msg}", peer.ip()).as_bytes(), peer);
                }
            }
        })
    });
    rx.recv_timeout(T).expect("udp echo bound");
}

/// One UDP request from `ns` to `to`, up to 3 tries of 1 s.
fn udp_ask(ns: &str, to: &str, msg: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    let msg = msg.to_string();
    in_netns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 512];
        let mut last = String::new();
        for _ in 0..3 {
            s.send_to(msg.as_bytes(), to).map_err(|e| e.to_string())?;
            match s.recv_from(&mut buf) {
                Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    })
}

/// A TCP connection held open from a thread inside `ns`; `ask` sends a line and waits 2 s for
/// the reply.
struct HeldConn {
    tx: mpsc::Sender<String>,
    rx: mpsc::Receiver<Result<String, String>>,
}

impl HeldConn {
    fn open(ns: &str, to: &str) -> HeldConn {
        let to: SocketAddr = to.parse().unwrap();
        let (tx, cmd_rx) = mpsc::channel::<String>();
        let (res_tx, rx) = mpsc::channel();
        let ns = ns.to_string();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let mut s = match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = res_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                for msg in cmd_rx.iter().take(20) {
                    let r = s
                        .write_all(msg.as_bytes())
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            let mut buf = [0u8; 512];
                            match s.read(&mut buf) {
                                Ok(0) => Err("closed".to_string()),
                                Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
                                Err(e) => Err(e.to_string()),
                            }
                        });
                    if res_tx.send(r).is_err() {
                        return;
                    }
                }
            })
        });
        HeldConn { tx, rx }
    }

    fn ask(&self, msg: &str) -> Result<String, String> {
        self.tx.send(msg.to_string()).map_err(|e| e.to_string())?;
        self.rx.recv_timeout(T).map_err(|e| e.to_string())?
    }
}

fn forwards(n: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{}={}.{}.{}:80\n",
                20_000 + i,
                "198.19",
                1 + i / 250,
                1 + i % 250
            )
        })
        .collect()
}

// --- tests ----------------------------------------------------------------------------------

#[test]
fn router_mode_masquerades_devices_and_forwards_tcp_and_udp_to_them() {
    if !prerequisites() {
        return;
    }
    let b = Box::start(
        "fwnat",
        "IOHUBOS_FIREWALL_ROUTER_TO_INTERNET='true'\n",
        "8080=198.19.0.10:80\n",
        "5000=198.19.0.10:7\n",
    );
    tcp_echo(&b.topo.lan, 9000);
    tcp_echo(&b.topo.dev, 80);
    udp_echo(&b.topo.dev, 7);
    // A device reaches the upstream network, seen as the box (masquerade on the uplink).
    assert_eq!(
        tcp_ask(&b.topo.dev, &format!("{LAN}:9000"), "hi").unwrap(),
        format!("{GW_WAN} hi")
    );
    // Port forwards from the uplink reach the device, which sees the real client.
    assert_eq!(
        tcp_ask(&b.topo.lan, &format!("{GW_WAN}:8080"), "tcp").unwrap(),
        format!("{LAN} tcp")
    );
    assert_eq!(
        udp_ask(&b.topo.lan, &format!("{GW_WAN}:5000"), "udp").unwrap(),
        format!("{LAN} udp")
    );
    // UDP really is UDP: nothing answers TCP on the UDP forward's port.
    assert!(tcp_ask(&b.topo.lan, &format!("{GW_WAN}:5000"), "x").is_err());
    // Input policy drop: nothing else on the box is reachable from the uplink.
    tcp_echo(&b.topo.gw, 7777);
    assert!(tcp_ask(&b.topo.lan, &format!("{GW_WAN}:7777"), "x").is_err());
    let _ = DEV;
}

#[test]
fn switching_router_to_internet_off_cuts_open_device_flows_while_forwards_keep_working() {
    if !prerequisites() {
        return;
    }
    let mut b = Box::start(
        "fwswitch",
        "IOHUBOS_FIREWALL_ROUTER_TO_INTERNET='true'\n",
        "8080=198.19.0.10:80\n",
        "",
    );
    tcp_echo(&b.topo.lan, 9000);
    tcp_echo(&b.topo.dev, 80);
    let held = HeldConn::open(&b.topo.dev, &format!("{LAN}:9000"));
    assert_eq!(held.ask("before").unwrap(), format!("{GW_WAN} before"));
    let loads = facts(&b.state.last)["loads"].as_u64().unwrap();

    b.ctl_set("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET=false");
    let s = b.until("router_to_internet off, loaded", |s| {
        loaded(s)
            && facts(s)["router_to_internet"] == false
            && facts(s)["loads"].as_u64() > Some(loads)
    });
    assert!(
        facts(&s)["conntrack_cut"]["source"] == "198.19.0.0/24",
        "{:#}",
        facts(&s)
    );
    // The flow opened before the switch is cut, and a new one cannot start.
    assert!(
        held.ask("after").is_err(),
        "a flow opened before the switch survived it"
    );
    assert!(tcp_ask(&b.topo.dev, &format!("{LAN}:9000"), "new").is_err());
    // Port forwards still work (their replies are established flows).
    assert_eq!(
        tcp_ask(&b.topo.lan, &format!("{GW_WAN}:8080"), "fwd").unwrap(),
        format!("{LAN} fwd")
    );
    // And switching back on lets devices out again.
    b.ctl_set("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET=true");
    b.until("router_to_internet on", |s| {
        loaded(s) && facts(s)["router_to_internet"] == true
    });
    assert_eq!(
        tcp_ask(&b.topo.dev, &format!("{LAN}:9000"), "again").unwrap(),
        format!("{GW_WAN} again")
    );
}

#[test]
fn a_forward_colliding_with_a_port_the_box_exposes_is_refused_and_reported() {
    if !prerequisites() {
        return;
    }
    let mut b = Box::start(
        "fwcollide",
        "IOHUBOS_ADMIN_API_ENABLED='true'\nIOHUBOS_ADMIN_API_SERVER_PORT='9999'\n",
        "# forwards\n9999=198.19.0.10:80\n8080=198.19.0.10:80\n",
        "9999=198.19.0.10:7\n",
    );
    let s = b.until("one refusal", |s| facts(s)["refused_count"] == 1);
    assert_eq!(s["phase"], "degraded");
    let r = &facts(&s)["refused"][0];
    assert_eq!(
        (r["file"].as_str(), r["line"].as_u64()),
        (Some("forwards-tcp"), Some(2))
    );
    assert!(r["reason"].as_str().unwrap().contains("admin API"), "{r}");
    assert_eq!(s["last_error"]["field"], "forwards-tcp:2");
    // The other forwards apply: the TCP one on 8080, and UDP 9999 (the API is TCP only).
    tcp_echo(&b.topo.dev, 80);
    udp_echo(&b.topo.dev, 7);
    assert_eq!(
        tcp_ask(&b.topo.lan, &format!("{GW_WAN}:8080"), "ok").unwrap(),
        format!("{LAN} ok")
    );
    assert_eq!(
        udp_ask(&b.topo.lan, &format!("{GW_WAN}:9999"), "u").unwrap(),
        format!("{LAN} u")
    );
    let tcp_map = b.gw(&["nft", "list", "map", "inet", "iohub", "fwd_tcp_ip"]);
    assert!(
        tcp_map.contains("8080 : 198.19.0.10") && !tcp_map.contains("9999"),
        "{tcp_map}"
    );
}

#[test]
fn one_hundred_and_ten_thousand_forwards_each_load_atomically_and_all_are_in_the_kernel() {
    if !prerequisites() {
        return;
    }
    let mut b = Box::start("fwscale", "", &forwards(1), "");
    for n in [1u32, 100, 10_000] {
        write(&b.roots.root.join("forwards-tcp"), &forwards(n));
        b.until(&format!("{n} forwards loaded"), |s| {
            loaded(s) && facts(s)["summary"]["tcp_map_elements"] == n
        });
        for map in ["fwd_tcp_ip", "fwd_tcp_port"] {
            let out = b.gw(&["nft", "-j", "list", "map", "inet", "iohub", map]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let elems = v["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|o| o["map"]["elem"].as_array().map(Vec::len))
                .unwrap_or(0);
            assert_eq!(elems, n as usize, "{map} holds {elems} of {n}");
        }
    }
    // The published plan for 10,000 forwards is a summary and a hash, not the ruleset.
    let s = b.state.last.clone();
    assert!(facts(&s)["summary"]["sha256"].as_str().unwrap().len() == 64);
}

#[test]
fn a_refused_load_leaves_the_previous_ruleset_byte_identical_and_says_why() {
    if !prerequisites() {
        return;
    }
    // Debug builds of iohubd make a forward on this port carry an element nft refuses.
    std::env::set_var("IOHUB_FIREWALL_TEST_REFUSE_PORT", "4242");
    let mut b = Box::start("fwfail", "", "8080=198.19.0.10:80\n", "");
    let before = b.table();
    let good = facts(&b.state.last)["applied_sha256"].clone();
    write(
        &b.roots.root.join("forwards-tcp"),
        "8080=198.19.0.10:80\n4242=198.19.0.10:80\n",
    );
    let s = b.until("a refused load", |s| {
        s["phase"] == "degraded" && s["last_error"].is_object()
    });
    let msg = s["last_error"]["message"].as_str().unwrap();
    assert!(msg.contains("nft refused"), "{msg}");
    assert_eq!(facts(&s)["applied_sha256"], good);
    assert_eq!(
        b.table(),
        before,
        "the ruleset changed after a refused load"
    );
    // A good config afterwards loads again.
    write(&b.roots.root.join("forwards-tcp"), "8081=198.19.0.10:80\n");
    b.until("recovered", |s| loaded(s) && s["phase"] == "applied");
    assert!(b.table().contains("8081 : 198.19.0.10"));
}

#[test]
fn the_same_ruleset_twice_is_not_loaded_again_and_docker_tables_survive_reloads() {
    if !prerequisites() {
        return;
    }
    let mut b = Box::start("fwidem", "", "8080=198.19.0.10:80\n", "");
    // What dockerd does in the same namespace (iptables-nft: table ip filter).
    b.gw(&["iptables-nft", "-N", "DOCKER-USER"]);
    b.gw(&["iptables-nft", "-A", "DOCKER-USER", "-j", "RETURN"]);
    b.gw(&["iptables-nft", "-P", "FORWARD", "ACCEPT"]);
    let docker_before = b.gw(&["nft", "list", "table", "ip", "filter"]);
    let table = b.table();
    let loads = facts(&b.state.last)["loads"].as_u64().unwrap();
    let generation = b.state.last["generation"].as_u64().unwrap();
    // A comment on top shifts every line number: the forwards section changes, the ruleset
    // does not.
    write(
        &b.roots.root.join("forwards-tcp"),
        "# a comment\n8080=198.19.0.10:80\n",
    );
    let s = b.until("the new generation seen", |s| {
        s["generation"].as_u64() > Some(generation)
    });
    assert_eq!(
        facts(&s)["loads"].as_u64(),
        Some(loads),
        "an identical ruleset was loaded again"
    );
    assert_eq!(b.table(), table);
    // A real change reloads our table and leaves Docker's alone.
    write(
        &b.roots.root.join("forwards-tcp"),
        "8080=198.19.0.10:80\n8081=198.19.0.10:81\n",
    );
    b.until("reloaded", |s| {
        loaded(s) && facts(s)["loads"].as_u64() > Some(loads)
    });
    assert_eq!(
        b.gw(&["nft", "list", "table", "ip", "filter"]),
        docker_before
    );
    assert!(b
        .gw(&["iptables-nft", "-S", "DOCKER-USER"])
        .contains("-A DOCKER-USER -j RETURN"));
}
