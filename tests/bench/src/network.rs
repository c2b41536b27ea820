//! The network benchmarks (group `network`), each in namespaces of its own
//! (`iohub_tests::netns::Topology`), iohubd running `--apply` inside `gw`:
//! - routes: an edit of `/iohub/routes` until the route is in gw's kernel (seen by
//!   `ip monitor route`), against the peer `ip route replace` (what the original's script ran),
//!   timed to the same monitor line;
//! - the network service's netlink apply of a router-mode plan (bridge, port, 2 addresses,
//!   default route, ip_forward: `apply_ms` of `iohub/plan/network`), against the same changes made
//!   by 6 `ip`/`sysctl` commands on a fresh topology.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use iohub_tests::netns::{GwEth0, NetnsProxy, Topology, TopologyOptions};
use iohub_tests::{Iohubd, Roots};
use rumqttc::{AsyncClient, Event, Packet, QoS};

use super::{hist, ms};

const EDITS: usize = 40;
const APPLIES: usize = 8;
const WAIT: Duration = Duration::from_secs(20);

const ENV: &str = "
IOHUBOS_FIREWALL_CONFIG='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_TIMEZONE=''
IOHUBOS_ETH0_MODE='static'
IOHUBOS_ETH0_IP='198.18.0.2'
IOHUBOS_ETH0_NETMASK='255.255.255.0'
IOHUBOS_ETH0_GATEWAY='198.18.0.1'
";

const ROUTER: &str = "
IOHUBOS_NETWORK_MODE='router'
IOHUBOS_ETH1_DEVICE='eth1'
IOHUBOS_ETH1_IP='198.19.0.1'
IOHUBOS_ETH1_NETMASK='255.255.255.0'
IOHUBOS_DHCP_SERVER_ENABLED='false'
";

fn start(t: &Topology, extra: &str) -> (Roots, Iohubd) {
    let roots = Roots::example("standalone");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(roots.root.join("envvars"))
        .unwrap();
    writeln!(f, "{ENV}{extra}").unwrap();
    std::fs::write(roots.root.join("routes"), "").unwrap();
    let d = Iohubd::start_in_netns(&t.gw, &roots, &["--apply"]);
    (roots, d)
}

/// `ip monitor route` in `ns`: every line with its arrival time.
fn monitor(ns: &str) -> (std::process::Child, mpsc::Receiver<(String, Instant)>) {
    let mut child = Command::new("ip")
        .args(["-n", ns, "monitor", "route"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &mpsc::Receiver<(String, Instant)>, needle: &str) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (line, at) = rx.recv_timeout(left).expect("route not seen in time");
        if line.contains(needle) && !line.starts_with("Deleted") {
            return at;
        }
    }
}

/// Wait (bounded) for the retained plan of the network service with ops applied.
async fn network_apply_ms(d: &Iohubd, proxy: &NetnsProxy) -> f64 {
    let id = format!("bench-net-{}", std::process::id());
    let mut o2 = rumqttc::MqttOptions::new(id, "127.0.0.1", proxy.addr.port());
    o2.set_credentials(d.control.username.clone(), d.control.password.clone());
    o2.set_max_packet_size(16 << 20, 16 << 20);
    let (c, mut el) = AsyncClient::new(o2, 100);
    c.subscribe(
        bus_schema::Topic::Plan(bus_schema::ServiceName::Network).to_string(),
        QoS::AtLeastOnce,
    )
    .await
    .unwrap();
    let fut = async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                if v["applied_ops"].as_u64().unwrap_or(0) > 0 {
                    return v["apply_ms"].as_f64().unwrap_or(f64::NAN);
                }
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("network plan not applied in time")
}

fn peer_ip_commands(t: &Topology) -> f64 {
    let gw = t.gw.as_str();
    let t0 = Instant::now();
    for args in [
        vec!["-n", gw, "link", "add", "br1", "type", "bridge"],
        vec!["-n", gw, "link", "set", "eth1", "master", "br1"],
        vec!["-n", gw, "link", "set", "br1", "up"],
        vec!["-n", gw, "addr", "add", "198.19.0.1/24", "dev", "br1"],
        vec!["-n", gw, "addr", "add", "198.18.0.2/24", "dev", "eth0"],
        vec!["-n", gw, "route", "replace", "default", "via", "198.18.0.1"],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    t.exec(gw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    t0.elapsed().as_secs_f64() * 1e3
}

pub(crate) async fn run() {
    let mut out = String::from("\n### network, routes (namespaces; iohubd --apply inside gw)\n\n");
    out.push_str("| measurement | iohubd | peer | ratio |\n|---|---|---|---|\n");

    // Routes: file edit -> route in the kernel.
    let t = Topology::new(
        "benchroutes",
        TopologyOptions {
            gw_eth0: GwEth0::Static,
            gw_eth1_addr: true,
        },
    );
    let (roots, d) = start(&t, "");
    let (mut mon, rx) = monitor(&t.gw);
    let mut ours = hist();
    let mut peer = hist();
    for i in 0..EDITS {
        // Edits of one file within the watcher's 50 ms quiet period coalesce by design (one
        // event per burst); space them like an operator's edits.
        std::thread::sleep(std::time::Duration::from_millis(60));
        let dest = format!("10.{}.0.0/16", 10 + i);
        let t0 = Instant::now();
        // An editor save: a temp file renamed over `routes`.
        let tmp = roots.root.join(".routes.tmp");
        std::fs::write(&tmp, format!("{dest}:198.18.0.1\n")).unwrap();
        std::fs::rename(&tmp, roots.root.join("routes")).unwrap();
        let at = wait_line(&rx, &dest);
        ours.record(at.duration_since(t0).as_micros() as u64)
            .unwrap();
        // The peer: one `ip route replace`, as the shell script did, to the same monitor line.
        let pdest = format!("10.{}.0.0/16", 100 + i);
        let t0 = Instant::now();
        assert!(Command::new("ip")
            .args(["-n", &t.gw, "route", "replace", &pdest, "via", "198.18.0.1"])
            .status()
            .unwrap()
            .success());
        let at = wait_line(&rx, &pdest);
        peer.record(at.duration_since(t0).as_micros() as u64)
            .unwrap();
    }
    let _ = mon.kill();
    let _ = mon.wait();
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        out.push_str(&format!(
            "| routes file edit -> route in kernel, {name} ({EDITS} edits) vs `ip route replace` | {:.1} ms | {:.1} ms | {:.1}x |\n",
            ms(&ours, q),
            ms(&peer, q),
            ms(&ours, q) / ms(&peer, q)
        ));
    }
    drop(d);
    drop(t);

    // Network plan apply, router mode, on fresh topologies.
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for _ in 0..APPLIES {
        let t = Topology::new(
            "benchapply",
            TopologyOptions {
                gw_eth0: GwEth0::Unconfigured,
                gw_eth1_addr: false,
            },
        );
        let (_roots, d) = start(&t, ROUTER);
        let target = format!("{}:{}", d.control.host, d.control.port)
            .parse()
            .unwrap();
        let proxy = NetnsProxy::new(&t.gw, target);
        ours.push(network_apply_ms(&d, &proxy).await);
        drop(d);
        drop(t);
        let t = Topology::new(
            "benchpeer",
            TopologyOptions {
                gw_eth0: GwEth0::Unconfigured,
                gw_eth1_addr: false,
            },
        );
        peer.push(peer_ip_commands(&t));
    }
    ours.sort_by(f64::total_cmp);
    peer.sort_by(f64::total_cmp);
    let (o, p) = (ours[ours.len() / 2], peer[peer.len() / 2]);
    out.push_str(&format!(
        "| router-mode network plan apply (bridge, port, 2 addrs, default route, ip_forward), median of {APPLIES} | {o:.1} ms | {p:.1} ms (6 `ip` + `sysctl`) | {:.2}x |\n",
        o / p
    ));
    println!("{out}");
}
