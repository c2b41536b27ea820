//! The firewall service next to a real Docker engine: a dockerd of the test's own runs inside
//! the `gw` network namespace (`nsenter --net`) of a `lan - gw - dev` topology (own data root, exec root, pid file, socket
//! and containerd; bridge 198.19.200.1/24), with one busybox container publishing a port, and
//! the real `iohubd --apply` loads its firewall in the same namespace. The host's dockerd, its
//! socket and the root namespace's firewall are never touched. Traffic is real (std sockets on
//! threads that entered a namespace); every loop is bounded in count and time. The dockerd is
//! stopped (SIGTERM, bounded wait, SIGKILL of its process group) and its containers removed at
//! Drop, also on panic; the namespaces go with the topology.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bus_schema::ServiceName;
use iohub_tests::netns::{in_netns, GwEth0, StateFeed, Topology, TopologyOptions};
use iohub_tests::{require_program, Iohubd, Roots};

const T: Duration = Duration::from_secs(30);
const LAN: &str = "198.18.0.1";
const GW_WAN: &str = "198.18.0.2";
const GW_LAN: &str = "198.19.0.1";
const GW_WAN_PUBLISHED: u16 = 8081;
/// What the container's httpd serves.
const MARKER: &str = "iohub-docker-ok";

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
IOHUBOS_FIREWALL_ROUTER_TO_INTERNET='true'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_UPGRADER_ENABLED='false'
IOHUBOS_DEPLOYER_ENABLED='false'
";

fn prerequisites() -> bool {
    [
        "nft",
        "ip",
        "conntrack",
        "iptables",
        "iptables-restore",
        "dockerd",
        "containerd",
        "docker",
        "tar",
        "timeout",
        "nsenter",
    ]
    .iter()
    .all(|p| require_program(p))
}

// --- a dockerd of the test's own inside gw ---------------------------------------------------

/// dockerd inside a namespace; stopped, with its containers, at Drop.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Dockerd {
    fn start(ns: &str) -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let p = |x: &str| dir.path().join(x).to_str().unwrap().to_string();
        std::fs::write(p("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(p("dockerd.log")).unwrap();
        let host = format!("unix://{}", p("docker.sock"));
        // nsenter, not `ip netns exec`: the latter also unshares the mount namespace and mounts
        // a fresh /sys, which hides the cgroup mounts dockerd needs ("Devices cgroup isn't
        // mounted"). Only the network namespace changes.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "dockerd"])
            .args(["--config-file", &p("daemon.json")])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args(["--pidfile", &p("docker.pid"), "-H", &host])
            .args(["--bip", "198.19.200.1/24", "--storage-driver", "vfs"])
            .args(["--shutdown-timeout", "2", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group (containerd is its child): killed as a group at Drop.
            .process_group(0)
            .spawn()
            .expect("spawn dockerd");
        let mut d = Dockerd { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("dockerd exited ({st}): {}", d.log());
            }
            if d.cli(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready in 60 s: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        let text = std::fs::read(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// `docker -H <own socket> args...`, bounded to 60 s.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["60", "docker", "-H", &self.host])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Import an offline busybox image whose `/www/index.html` says [`MARKER`].
    fn import_busybox(&self, reference: &str) {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "/bin/busybox missing: install busybox-static"
        );
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::write(rootfs.join("www/index.html"), MARKER).unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "httpd"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let tar = tmp.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar of the busybox rootfs failed");
        self.ok(&[
            "import",
            "-c",
            r#"CMD ["/bin/sh"]"#,
            "-c",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            reference,
        ]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (their processes live outside gw's pid list), then the daemon.
        let ids = self.cli(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            let _ = self.cli(&args);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

// --- iohubd inside gw ---------------------------------------------------------------------------

/// iohubd inside gw and its firewall state (MQTT through a proxy into gw).
struct Daemon {
    state: StateFeed,
    _d: Iohubd,
    /// Last: the roots outlive the daemon using them.
    roots: Roots,
}

impl Daemon {
    fn start(gw: &str) -> Daemon {
        let roots = Roots::example("router");
        write(&roots.root.join("envvars"), ENVVARS);
        write(&roots.root.join("forwards-tcp"), "");
        write(&roots.root.join("forwards-udp"), "");
        let d = Iohubd::start_in_netns(gw, &roots, &["--apply"]);
        let state = StateFeed::new(gw, &d.control, ServiceName::Firewall, "fwdocker");
        Daemon {
            state,
            _d: d,
            roots,
        }
    }

    fn until(
        &mut self,
        what: &str,
        done: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.state.until(what, T, done)
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

/// The last load succeeded, is what the plan describes, and the DOCKER-USER hook is in place.
fn loaded_and_hooked(s: &serde_json::Value) -> bool {
    let f = facts(s);
    f["applied_sha256"].is_string()
        && f["applied_sha256"] == f["summary"]["sha256"]
        && f["docker_user"]
            .as_str()
            .is_some_and(|h| h.starts_with("hooked"))
}

// --- traffic ------------------------------------------------------------------------------------

/// A TCP server in `ns` answering each line with "<peer ip> <line>"; at most 16 connections,
/// 120 s.
fn tcp_echo(ns: &str, port: u16) {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            for s in l.incoming().take(16) {
                if Instant::now() > end {
                    return;
                }
                let Ok(mut s) = s else { continue };
                let peer = s.peer_addr().unwrap().ip();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 512];
                if let Ok(n) = s.read(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let _ = s.write_all(format!("{peer} {msg}").as_bytes());
                }
            }
        })
    });
    rx.recv_timeout(T).expect("tcp echo bound");
}

/// Send `msg` over a new TCP connection from `ns` to `to`; the reply up to EOF (2 s limits).
fn tcp_ask(ns: &str, to: &str, msg: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    let msg = msg.to_string();
    in_netns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if out.is_empty() => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
}

/// GET / from the container's httpd through `to`: whether the page came back.
fn reaches_container(ns: &str, to: &str) -> bool {
    tcp_ask(ns, to, "GET /index.html HTTP/1.0\r\n\r\n").is_ok_and(|r| r.contains(MARKER))
}

/// Docker's iptables rules in `ns` (filter and nat, no counters), without iohub's own chain.
fn docker_rules(topo: &Topology, ns: &str) -> String {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let o = topo.exec(ns, &["iptables", "-w", "-t", table, "-S"]);
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if !line.contains("IOHUB-FORWARD") {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

// --- the test -----------------------------------------------------------------------------------

#[test]
fn with_dockerd_in_the_gateway_docker_tables_survive_reloads_and_published_ports_obey_our_policy() {
    if !prerequisites() {
        return;
    }
    let topo = Topology::new(
        "fwdocker",
        TopologyOptions {
            gw_eth0: GwEth0::Static,
            gw_eth1_addr: true,
        },
    );
    let gw = topo.gw.clone();
    let gw_str = |args: &[&str]| String::from_utf8(topo.exec(&gw, args).stdout).unwrap();
    // As on a box booting with forwarding off: dockerd switches it on and, doing so, sets
    // `iptables -P FORWARD DROP` (reference/netns.md §3).
    topo.exec(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let t0 = Instant::now();
    let dockerd = Dockerd::start(&gw);
    let ready_ms = t0.elapsed().as_millis();
    assert!(
        gw_str(&["iptables", "-w", "-S", "FORWARD"]).contains("-P FORWARD DROP"),
        "dockerd did not set FORWARD DROP: {}",
        dockerd.log()
    );
    let image = "iohub-test/busybox:fwdocker";
    dockerd.import_busybox(image);
    let published = format!("{GW_WAN_PUBLISHED}:8080");
    dockerd.ok(&[
        "run", "-d", "--name", "web", "-p", &published, image, "httpd", "-f", "-p", "8080", "-h",
        "/www",
    ]);
    let cip = dockerd.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    assert!(cip.starts_with("198.19.200."), "container address {cip}");
    assert!(
        topo.wait_for(T, || reaches_container(&gw, &format!("{cip}:8080"))),
        "the container's httpd never answered inside gw"
    );
    let docker_before = docker_rules(&topo, &gw);
    assert!(docker_before.contains("-N DOCKER-USER"), "{docker_before}");
    assert!(
        docker_before.contains(&format!("--dport {GW_WAN_PUBLISHED} -j DNAT")),
        "{docker_before}"
    );
    eprintln!(
        "dockerd ready in {ready_ms} ms; container up after {} ms",
        t0.elapsed().as_millis()
    );

    // iohubd's firewall loads next to it and hooks DOCKER-USER.
    let mut d = Daemon::start(&gw);
    d.until("the first load, hooked", loaded_and_hooked);
    let jump_count = || {
        gw_str(&["iptables", "-w", "-S", "DOCKER-USER"])
            .lines()
            .filter(|l| l.trim() == "-A DOCKER-USER -j IOHUB-FORWARD")
            .count()
    };
    assert_eq!(jump_count(), 1);

    // (c) Docker's FORWARD DROP does not kill router-to-internet: dev reaches lan (masqueraded).
    tcp_echo(&topo.lan, 9000);
    let to_lan = format!("{LAN}:9000");
    assert_eq!(
        tcp_ask(&topo.dev, &to_lan, "out").unwrap(),
        format!("{GW_WAN} out")
    );
    // Without the hook Docker's policy drops it, which is why the hook is there.
    topo.exec(
        &gw,
        &["iptables", "-w", "-D", "DOCKER-USER", "-j", "IOHUB-FORWARD"],
    );
    assert!(tcp_ask(&topo.dev, &to_lan, "unhooked").is_err());

    // (b) The uplink cannot reach the published port; the LAN side and the box itself can.
    let via_wan = format!("{GW_WAN}:{GW_WAN_PUBLISHED}");
    assert!(!reaches_container(&topo.lan, &via_wan));
    assert!(reaches_container(
        &topo.dev,
        &format!("{GW_LAN}:{GW_WAN_PUBLISHED}")
    ));
    assert!(reaches_container(
        &gw,
        &format!("127.0.0.1:{GW_WAN_PUBLISHED}")
    ));

    // A reload (a forward on the published port: the explicit exposure on the uplink) puts the
    // hook back once, and opens the published port to the uplink.
    let loads = facts(&d.state.last)["loads"].as_u64().unwrap();
    write(
        &d.roots.root.join("forwards-tcp"),
        &format!("{GW_WAN_PUBLISHED}={cip}:8080\n"),
    );
    d.until("reloaded with the forward", |s| {
        loaded_and_hooked(s)
            && facts(s)["loads"].as_u64() > Some(loads)
            && facts(s)["summary"]["tcp_map_elements"] == 1
    });
    assert_eq!(jump_count(), 1);
    assert_eq!(
        tcp_ask(&topo.dev, &to_lan, "hooked again").unwrap(),
        format!("{GW_WAN} hooked again")
    );
    assert!(
        topo.wait_for(Duration::from_secs(5), || reaches_container(
            &topo.lan, &via_wan
        )),
        "the uplink does not reach the published port its forward exposes"
    );
    assert!(reaches_container(
        &topo.dev,
        &format!("{GW_LAN}:{GW_WAN_PUBLISHED}")
    ));

    // Taking the forward away closes the uplink again (new connections).
    let loads = facts(&d.state.last)["loads"].as_u64().unwrap();
    write(&d.roots.root.join("forwards-tcp"), "");
    d.until("reloaded without the forward", |s| {
        loaded_and_hooked(s) && facts(s)["loads"].as_u64() > Some(loads)
    });
    assert!(!reaches_container(&topo.lan, &via_wan));
    assert_eq!(jump_count(), 1);

    // (a) After every reload Docker's own rules are exactly as dockerd left them.
    assert_eq!(docker_rules(&topo, &gw), docker_before);
    let tables = gw_str(&["nft", "list", "tables"]);
    for t in ["table ip nat", "table ip filter", "table inet iohub"] {
        assert!(tables.contains(t), "{t} missing: {tables}");
    }
    eprintln!("whole test {} ms", t0.elapsed().as_millis());
    drop(d);
    drop(dockerd);
    drop(topo);
}
