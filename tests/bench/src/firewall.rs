//! Firewall benchmark (docs/benchmarks.md, "firewall"), in a network namespace of its own (the
//! `gw` of a fresh `lan - gw - dev` topology; nothing in the root namespace changes):
//!
//! 1. ruleset apply time for 1, 100, 1,000, 10,000 forwards: the real `iohubd --apply` loading
//!    its one nft transaction (`nft` time as the firewall reports it, and file edit -> state
//!    published), against the original's approach, one `iptables` (iptables-nft) call per rule
//!    (a DNAT and a FORWARD accept per forward, SPEC §6 rules 11-12), run in the topology's `dev` namespace
//!    (same kernel, same run; iohubd's namespace stays untouched). The iptables run stops at 1,000 forwards; 10,000 is extrapolated
//!    linearly and labelled so (a lower bound: iptables-nft gets slower as the table grows).
//! 2. config change -> ruleset live in the kernel (the state is published after the load
//!    returned): a `forwards-tcp` edit (100 forwards) and `iohubctl set
//!    IOHUBOS_FIREWALL_ROUTER_TO_INTERNET=...`, p50/p99 over bounded rounds.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bus_schema::ServiceName;
use iohub_tests::netns::{in_netns, GwEth0, StateFeed, Topology, TopologyOptions};
use iohub_tests::{binary, Iohubd, Roots};

const LIMIT: Duration = Duration::from_secs(60);
const ENVVARS: &str = "IOHUBOS_NETWORK_CONFIG='false'
IOHUBOS_NETWORK_MODE='router'
IOHUBOS_ETH0_MODE='static'
IOHUBOS_ETH0_IP='198.18.0.2'
IOHUBOS_ETH0_NETMASK='255.255.255.0'
IOHUBOS_ETH1_DEVICE='eth1'
IOHUBOS_ETH1_IP='198.19.0.1'
IOHUBOS_ETH1_NETMASK='255.255.255.0'
IOHUBOS_DHCP_SERVER_ENABLED='false'
IOHUBOS_FIREWALL_ROUTER_TO_INTERNET='true'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_UPGRADER_ENABLED='false'
IOHUBOS_DEPLOYER_ENABLED='false'
";

fn forwards(n: u32, dst_port: u16) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{}=198.19.{}.{}:{dst_port}\n",
                20_000 + i,
                1 + i / 250,
                1 + i % 250
            )
        })
        .collect()
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-bench");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn loaded(s: &serde_json::Value) -> bool {
    let f = &s["facts"];
    f["applied_sha256"].is_string() && f["applied_sha256"] == f["summary"]["sha256"]
}

/// One `iptables-nft` call per rule for `n` forwards (the original's 0250 approach, after its
/// flush), from a thread inside `ns`. Returns the wall time.
fn iptables_run(ns: &str, n: u32) -> Duration {
    let ns = ns.to_string();
    in_netns(&ns, move || {
        let ipt = |args: &[&str]| {
            let ok = Command::new("iptables-nft")
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "iptables-nft {args:?}");
        };
        let t0 = Instant::now();
        for table in ["filter", "nat"] {
            ipt(&["-t", table, "-F"]);
            ipt(&["-t", table, "-X"]);
        }
        ipt(&["-P", "INPUT", "DROP"]);
        ipt(&["-P", "FORWARD", "DROP"]);
        ipt(&["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"]);
        ipt(&[
            "-A",
            "INPUT",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&[
            "-A",
            "FORWARD",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&["-A", "FORWARD", "-i", "eth1", "-j", "ACCEPT"]);
        for i in 0..n {
            let src = (20_000 + i).to_string();
            let ip = format!("198.19.{}.{}", 1 + i / 250, 1 + i % 250);
            ipt(&[
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-i",
                "eth0",
                "-p",
                "tcp",
                "--dport",
                &src,
                "-j",
                "DNAT",
                "--to",
                &format!("{ip}:80"),
            ]);
            ipt(&[
                "-A",
                "FORWARD",
                "-i",
                "eth0",
                "-o",
                "eth1",
                "-p",
                "tcp",
                "-d",
                &ip,
                "--dport",
                "80",
                "--syn",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "ACCEPT",
            ]);
        }
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "eth0",
            "-j",
            "MASQUERADE",
        ]);
        let took = t0.elapsed();
        // Leave the namespace's iptables tables empty for the next round.
        for table in ["filter", "nat"] {
            ipt(&["-t", table, "-F"]);
        }
        ipt(&["-P", "INPUT", "ACCEPT"]);
        ipt(&["-P", "FORWARD", "ACCEPT"]);
        took
    })
}

fn run_blocking() -> String {
    let topo = Topology::new(
        "fwbench",
        TopologyOptions {
            gw_eth0: GwEth0::Static,
            gw_eth1_addr: true,
        },
    );
    let roots = Roots::example("router");
    write(&roots.root.join("envvars"), ENVVARS);
    write(&roots.root.join("forwards-tcp"), &forwards(1, 80));
    write(&roots.root.join("forwards-udp"), "");
    let d = Iohubd::start_in_netns(&topo.gw, &roots, &["--apply"]);
    let mut st = StateFeed::new(&topo.gw, &d.control, ServiceName::Firewall, "fwbench");
    st.until("the first load", LIMIT, loaded);
    let fwd = roots.root.join("forwards-tcp");

    let mut out = String::from(
        "| forwards | iohubd: nft load (median of 5) | iohubd: file edit -> state (median) | iptables-nft, one call per rule | ratio (iptables / nft load) |\n|---|---|---|---|---|\n",
    );
    let mut ipt_per_fwd = 0.0;
    let mut ipt_100 = 0.0;
    for n in [1u32, 100, 1_000, 10_000] {
        let mut load_ms = Vec::new();
        let mut edit_ms = Vec::new();
        for round in 0..5u16 {
            let loads = st.last["facts"]["loads"].as_u64().unwrap_or(0);
            // Edits of one file within the watcher's 50 ms quiet period coalesce by design (one
            // event per burst); space them like an operator's edits.
            std::thread::sleep(std::time::Duration::from_millis(60));
            // A new destination port every round: every round is a real change.
            write(&fwd, &forwards(n, 90 + round));
            let t0 = Instant::now();
            let s = st.until("the change", LIMIT, |s| {
                loaded(s)
                    && s["facts"]["summary"]["tcp_map_elements"] == n
                    && s["facts"]["loads"].as_u64() > Some(loads)
            });
            edit_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            load_ms.push(s["facts"]["last_load_ms"].as_f64().unwrap_or(f64::NAN));
        }
        let nft = pct(&mut load_ms, 0.5);
        let edit = pct(&mut edit_ms, 0.5);
        let (ipt, label) = if n <= 1_000 {
            let t = iptables_run(&topo.dev, n).as_secs_f64() * 1e3;
            ipt_per_fwd = t / f64::from(n.max(1));
            if n == 100 {
                ipt_100 = t;
            }
            (t, format!("{t:.0} ms"))
        } else {
            let t = ipt_per_fwd * f64::from(n);
            (
                t,
                format!("~{:.0} s (extrapolated from 1,000, lower bound)", t / 1e3),
            )
        };
        out.push_str(&format!(
            "| {n} | {nft:.0} ms | {edit:.0} ms | {label} | {:.0}x |\n",
            ipt / nft.max(1.0)
        ));
    }

    // Config change -> ruleset live.
    write(&fwd, &forwards(100, 80));
    st.until("the change", LIMIT, |s| {
        loaded(s) && s["facts"]["summary"]["tcp_map_elements"] == 100
    });
    let mut edits = Vec::new();
    for round in 0..40u16 {
        // Edits of one file within the watcher's 50 ms quiet period coalesce by design (one
        // event per burst); space them like an operator's edits.
        std::thread::sleep(std::time::Duration::from_millis(60));
        let loads = st.last["facts"]["loads"].as_u64().unwrap_or(0);
        let t0 = Instant::now();
        write(&fwd, &forwards(100, 81 + round % 2));
        st.until("the change", LIMIT, |s| {
            loaded(s) && s["facts"]["loads"].as_u64() > Some(loads)
        });
        edits.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let ctl = binary("iohubctl");
    let root = roots.root.to_str().unwrap().to_string();
    let mut sets = Vec::new();
    for round in 0..30u32 {
        let on = round % 2 == 1;
        let loads = st.last["facts"]["loads"].as_u64().unwrap_or(0);
        let (ctl, root, ns) = (ctl.clone(), root.clone(), topo.gw.clone());
        let t0 = Instant::now();
        in_netns(&ns, move || {
            let ok = Command::new(&ctl)
                .args(["--root", &root, "set"])
                .arg(format!("IOHUBOS_FIREWALL_ROUTER_TO_INTERNET={on}"))
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "iohubctl set");
        });
        st.until("the change", LIMIT, |s| {
            loaded(s)
                && s["facts"]["router_to_internet"] == on
                && s["facts"]["loads"].as_u64() > Some(loads)
        });
        sets.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    out.push_str(&format!(
        "\n| config change -> ruleset live (100 forwards) | p50 | p99 | peer: original re-applies with iptables, 100 forwards |\n|---|---|---|---|\n\
         | `forwards-tcp` edit ({} rounds) | {:.1} ms | {:.1} ms | {ipt_100:.0} ms |\n\
         | `iohubctl set IOHUBOS_FIREWALL_ROUTER_TO_INTERNET=...` ({} rounds, includes the iohubctl process) | {:.1} ms | {:.1} ms | {ipt_100:.0} ms |\n",
        edits.len(),
        pct(&mut edits, 0.5),
        pct(&mut edits, 0.99),
        sets.len(),
        pct(&mut sets, 0.5),
        pct(&mut sets, 0.99),
    ));
    drop(st);
    drop(d);
    out
}

/// Run the firewall benchmark and print its tables.
pub(crate) async fn run() {
    let out = tokio::task::spawn_blocking(run_blocking).await.unwrap();
    println!("## firewall\n\n{out}");
}
