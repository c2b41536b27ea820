//! The network, routes and dhcp services against a real kernel: `iohubd --apply` runs inside the
//! `gw` namespace of `iohub_tests::netns::Topology` (reached through a `NetnsProxy`), dnsmasq and
//! udhcpc run in `lan` and `dev`. Nothing touches the root namespace.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::{Phase, ServiceName, ServiceState, Verb};
use iohub_tests::netns::{GwEth0, NetnsProxy, Topology, TopologyOptions};
use iohub_tests::{require_program, Control, Iohubd, Roots};
use iohubctl::Ctl;

const T: Duration = Duration::from_secs(30);

/// Services that must stay off in a test namespace (they would reach the host's dockerd or sshd).
const QUIET: &str = "
IOHUBOS_FIREWALL_CONFIG='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_TIMEZONE=''
";

fn prerequisites() -> bool {
    ["ip", "dnsmasq", "busybox"]
        .iter()
        .all(|p| require_program(p))
}

/// A running gateway: the topology, iohubd inside gw, and a client root whose control.json
/// points at the proxy.
struct Gw {
    d: Option<Iohubd>,
    _proxy: NetnsProxy,
    client_root: tempfile::TempDir,
    roots: Roots,
    t: Topology,
}

impl Gw {
    fn start(name: &str, opts: TopologyOptions, envvars: &str, routes: &str) -> Gw {
        let t = Topology::new(name, opts);
        let roots = Roots::example("standalone");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(roots.root.join("envvars"))
            .unwrap();
        writeln!(f, "{QUIET}\n{envvars}").unwrap();
        std::fs::write(roots.root.join("routes"), routes).unwrap();
        let d = Iohubd::start_in_netns(&t.gw, &roots, &["--apply"]);
        let target = format!("{}:{}", d.control.host, d.control.port)
            .parse()
            .unwrap();
        let proxy = NetnsProxy::new(&t.gw, target);
        let client_root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(client_root.path().join("runtime")).unwrap();
        let c = Control {
            host: "127.0.0.1".into(),
            port: proxy.addr.port(),
            ..d.control.clone()
        };
        std::fs::write(
            client_root.path().join("runtime/control.json"),
            serde_json::json!({"host": c.host, "port": c.port, "username": c.username, "password": c.password}).to_string(),
        )
        .unwrap();
        Gw {
            d: Some(d),
            _proxy: proxy,
            client_root,
            roots,
            t,
        }
    }

    fn client(&self) -> &Path {
        self.client_root.path()
    }

    /// Follow `filter` until `done` holds for the latest payload per topic.
    async fn until(
        &self,
        filter: &str,
        mut done: impl FnMut(&BTreeMap<String, serde_json::Value>) -> bool,
    ) -> BTreeMap<String, serde_json::Value> {
        let mut ctl = Ctl::connect(self.client(), T).await.unwrap();
        let mut seen = BTreeMap::new();
        let fut = ctl.follow(filter, |m| {
            let v = serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
            seen.insert(m.topic.clone(), v);
            !done(&seen)
        });
        if tokio::time::timeout(T, fut).await.is_err() {
            panic!("condition not reached in time; last seen: {seen:#?}");
        }
        seen
    }

    /// The state of `svc` once `pred` holds for it.
    async fn state_until(
        &self,
        svc: ServiceName,
        mut pred: impl FnMut(&ServiceState) -> bool,
    ) -> ServiceState {
        let topic = format!("iohub/state/{svc}");
        let seen = self
            .until(&topic, |s| {
                s.get(&topic)
                    .and_then(|v| serde_json::from_value::<ServiceState>(v.clone()).ok())
                    .is_some_and(|s| pred(&s))
            })
            .await;
        serde_json::from_value(seen[&topic].clone()).unwrap()
    }

    async fn reload(&self, svc: ServiceName) -> serde_json::Value {
        let mut ctl = Ctl::connect(self.client(), T).await.unwrap();
        let reply = ctl
            .request(svc, Verb::Reload, serde_json::Value::Null, T)
            .await
            .unwrap();
        serde_json::to_value(&reply).unwrap()
    }

    fn routes_file(&self) -> PathBuf {
        self.roots.root.join("routes")
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        drop(self.d.take());
    }
}

fn kernel_state(t: &Topology) -> (serde_json::Value, Vec<serde_json::Value>) {
    let mut addrs = t.addrs(&t.gw);
    // Counters and timers change on their own; compare the configuration only.
    for l in addrs.as_array_mut().unwrap() {
        for a in l["addr_info"].as_array_mut().into_iter().flatten() {
            a.as_object_mut().unwrap().remove("valid_life_time");
            a.as_object_mut().unwrap().remove("preferred_life_time");
        }
    }
    (addrs, t.routes(&t.gw))
}

fn has_route(t: &Topology, dst: &str, gw: &str) -> bool {
    t.routes(&t.gw)
        .iter()
        .any(|r| r["dst"] == dst && r["gateway"] == gw)
}

const STATIC: &str = "
IOHUBOS_ETH0_MODE='static'
IOHUBOS_ETH0_IP='198.18.0.2'
IOHUBOS_ETH0_NETMASK='255.255.255.0'
IOHUBOS_ETH0_GATEWAY='198.18.0.1'
IOHUBOS_ETH0_DNS='198.18.0.1'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_static_mode_configures_eth0_and_a_second_apply_changes_nothing() {
    if !prerequisites() {
        return;
    }
    let gw = Gw::start(
        "static",
        TopologyOptions {
            gw_eth0: GwEth0::Unconfigured,
            gw_eth1_addr: false,
        },
        STATIC,
        "",
    );
    let st = gw
        .state_until(ServiceName::Network, |s| {
            s.phase == Phase::Applied && s.facts["wan_address"].is_object()
        })
        .await;
    assert_eq!(st.facts["wan"], "eth0");
    assert!(gw.t.has_addr(&gw.t.gw, "eth0", "198.18.0.2/24"));
    assert!(has_route(&gw.t, "default", "198.18.0.1"));
    // The system root got resolv.conf, hostname and hosts; the host's /etc did not.
    let resolv = std::fs::read_to_string(gw.roots.system.join("etc/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 198.18.0.1"), "{resolv}");
    let hosts = std::fs::read_to_string(gw.roots.system.join("etc/hosts")).unwrap();
    assert!(hosts.contains("127.0.1.1\tiohub-"), "{hosts}");
    // gw reaches lan through the configured address.
    gw.t.exec(&gw.t.gw, &["busybox", "ping", "-c1", "-W2", "198.18.0.1"]);

    let before = kernel_state(&gw.t);
    let reply = gw.reload(ServiceName::Network).await;
    assert_eq!(reply["result"]["applied_ops"], 0, "{reply}");
    assert_eq!(reply["result"]["written_files"], 0, "{reply}");
    assert_eq!(kernel_state(&gw.t), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_dhcp_mode_gets_a_lease_from_the_lan_and_publishes_it() {
    if !prerequisites() {
        return;
    }
    let t_opts = TopologyOptions {
        gw_eth0: GwEth0::Unconfigured,
        gw_eth1_addr: false,
    };
    // The LAN's DHCP server has to exist before the gateway asks; the topology is built by Gw,
    // so the server starts right after and udhcpc retries (-A 3) if its first try was early.
    let gw = Gw::start("dhcpc", t_opts, "IOHUBOS_ETH0_MODE='dhcp'", "");
    let run = tempfile::tempdir().unwrap();
    // Killed with every process of the namespaces when the topology drops.
    #[allow(clippy::zombie_processes)]
    let _server = gw.t.spawn(
        &gw.t.lan,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--no-ping",
            "--interface=eth0",
            "--bind-interfaces",
            "--except-interface=lo",
            "--dhcp-range=198.18.0.50,198.18.0.60,255.255.255.0,1h",
            "--dhcp-option=option:router,198.18.0.1",
            "--dhcp-option=option:dns-server,198.18.0.1",
            "--dhcp-authoritative",
            &format!(
                "--dhcp-leasefile={}",
                run.path().join("lan.leases").display()
            ),
            &format!("--pid-file={}", run.path().join("lan.pid").display()),
            "--user=root",
            "--log-facility=-",
        ],
    );
    let st = gw
        .state_until(ServiceName::Network, |s| s.facts["lease"].is_object())
        .await;
    let lease = &st.facts["lease"];
    let addr = lease["address"]["addr"].as_str().unwrap().to_string();
    let last: u8 = addr.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        addr.starts_with("198.18.0.") && (50..=60).contains(&last),
        "{lease}"
    );
    assert_eq!(lease["gateway"], "198.18.0.1");
    assert_eq!(st.facts["dns"], serde_json::json!(["198.18.0.1"]));
    // The service applied the lease through netlink.
    let t = &gw.t;
    assert!(
        t.wait_for(T, || t.has_addr(&t.gw, "eth0", &format!("{addr}/24"))
            && has_route(t, "default", "198.18.0.1"))
    );
    let resolv = std::fs::read_to_string(gw.roots.system.join("etc/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 198.18.0.1"), "{resolv}");
}

const ROUTER: &str = "
IOHUBOS_NETWORK_MODE='router'
IOHUBOS_ETH1_DEVICE='eth1'
IOHUBOS_ETH1_IP='198.19.0.1'
IOHUBOS_ETH1_NETMASK='255.255.255.0'
IOHUBOS_DHCP_SERVER_ENABLED='true'
IOHUBOS_DHCP_SERVER_FROM='198.19.0.100'
IOHUBOS_DHCP_SERVER_TO='198.19.0.199'
IOHUBOS_DHCP_SERVER_DNS='198.19.0.1'
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_mode_bridges_eth1_into_br1_and_our_dnsmasq_leases_an_address_to_the_device() {
    if !prerequisites() {
        return;
    }
    let gw = Gw::start(
        "router",
        TopologyOptions {
            gw_eth0: GwEth0::Unconfigured,
            gw_eth1_addr: false,
        },
        &format!("{STATIC}{ROUTER}"),
        "",
    );
    let st = gw
        .state_until(ServiceName::Network, |s| {
            s.phase == Phase::Applied && s.facts["lan"] == "br1"
        })
        .await;
    assert_eq!(st.facts["lan_cidr"]["addr"], "198.19.0.1");
    assert_eq!(st.facts["ip_forward"], true);
    let t = &gw.t;
    assert!(t.has_addr(&t.gw, "br1", "198.19.0.1/24"));
    let ports = t.exec(&t.gw, &["ip", "-j", "link", "show", "master", "br1"]);
    let ports: serde_json::Value = serde_json::from_slice(&ports.stdout).unwrap();
    assert_eq!(ports[0]["ifname"], "eth1", "{ports}");
    let fwd = t.exec(&t.gw, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");

    gw.state_until(ServiceName::Dhcp, |s| {
        s.phase == Phase::Applied && s.facts["server"]["running"] == true
    })
    .await;
    // The device asks with udhcpc; its hook writes the leased address to a file of the test.
    let run = tempfile::tempdir().unwrap();
    let hook = run.path().join("hook.sh");
    let out = run.path().join("ip");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > '{}'\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["755", hook.to_str().unwrap()])
        .status()
        .unwrap();
    // dnsmasq is listening once the state says running; a first DISCOVER may still beat its
    // socket, so udhcpc retries (bounded: -t 5 -T 1).
    t.exec(
        &t.dev,
        &[
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            hook.to_str().unwrap(),
        ],
    );
    let ip = std::fs::read_to_string(&out).unwrap().trim().to_string();
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with("198.19.0.") && (100..=199).contains(&last),
        "{ip}"
    );
    let st = gw
        .state_until(ServiceName::Dhcp, |s| {
            s.facts["leases"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["ip"] == ip.as_str()))
        })
        .await;
    assert_eq!(st.facts["interface"], "br1");
    // The dnsmasq files are under the data root.
    assert!(gw.roots.root.join("runtime/dhcp/dnsmasq.leases").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_routes_file_and_a_bad_line_is_refused_while_the_others_apply() {
    if !prerequisites() {
        return;
    }
    let gw = Gw::start(
        "routes",
        TopologyOptions {
            gw_eth0: GwEth0::Unconfigured,
            gw_eth1_addr: false,
        },
        &format!("{STATIC}{ROUTER}\nIOHUBOS_DHCP_SERVER_ENABLED='false'"),
        "198.51.100.0/24:198.19.0.10\n",
    );
    let t = &gw.t;
    gw.state_until(ServiceName::Routes, |s| {
        s.phase == Phase::Applied
            && s.facts["installed"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
    })
    .await;
    assert!(has_route(t, "198.51.100.0/24", "198.19.0.10"));
    let r = t
        .routes(&t.gw)
        .into_iter()
        .find(|r| r["dst"] == "198.51.100.0/24")
        .unwrap();
    assert_eq!(r["protocol"], "201", "{r}");
    // A route the kernel has that is not ours stays.
    t.exec(
        &t.gw,
        &["ip", "route", "add", "192.0.2.0/24", "via", "198.18.0.1"],
    );

    // Edit the file: one route replaces the other, a bad line, an unreachable gateway.
    std::fs::write(
        gw.routes_file(),
        "203.0.113.0/24:198.19.0.10\nthis is not a route\n10.77.0.0/16:10.99.0.1\n",
    )
    .unwrap();
    let st = gw
        .state_until(ServiceName::Routes, |s| {
            s.facts["rejected"].as_array().is_some_and(|a| a.len() == 1)
                && s.facts["installed"][0]["dest"]["addr"] == "203.0.113.0"
        })
        .await;
    assert_eq!(st.phase, Phase::Degraded);
    let rejected = &st.facts["rejected"][0];
    assert_eq!(rejected["file"], "routes");
    assert_eq!(rejected["line"], 2);
    assert!(!rejected["reason"].as_str().unwrap().is_empty());
    assert_eq!(st.facts["unreachable"][0]["line"], 3, "{}", st.facts);
    assert!(
        t.wait_for(T, || has_route(t, "203.0.113.0/24", "198.19.0.10")
            && !has_route(t, "198.51.100.0/24", "198.19.0.10"))
    );
    assert!(has_route(t, "192.0.2.0/24", "198.18.0.1"));

    // Applying the same routes again changes nothing.
    let before = kernel_state(t);
    let reply = gw.reload(ServiceName::Routes).await;
    assert!(reply["result"]["installed"].is_array(), "{reply}");
    assert_eq!(kernel_state(t), before);
}
