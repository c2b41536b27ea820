//! The wireguard service against a real userspace WireGuard: a "server" (wireguard-go configured
//! with `wg`) in the `lan` namespace, the real `iohubd --apply` in `gw`, a device behind the
//! box's eth1 in `dev`. Driven by files and `iohubctl set` like a user would; states read over
//! MQTT through a `NetnsProxy`. Every traffic loop is bounded in count and time.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bus_schema::ServiceName;
use iohub_tests::netns::{
    in_netns, tcp_ask, tcp_echo, GwEth0, StateFeed, Topology, TopologyOptions,
};
use iohub_tests::{binary, require_program, Iohubd, Roots};

const T: Duration = Duration::from_secs(30);
const BOX_WAN: &str = "198.18.0.2";
const DEV: &str = "198.19.0.10";
const SERVER_VPN: &str = "10.99.0.1";
/// Box 300 in 10.99.0.0/16: 10.99.1.44 (past 255, the carry the original lost).
const BOX_VPN: &str = "10.99.1.44";

/// Router mode on the fixture's links (the network unmanaged), the firewall managed, SSH on in
/// the config (so the firewall opens tcp/22 on every interface) while iohubd runs without the
/// ssh service: the test's own listener on gw:22 stands in for sshd.
const ENVVARS: &str = "IOHUBOS_NETWORK_CONFIG='false'
IOHUBOS_NETWORK_MODE='router'
IOHUBOS_ETH0_DEVICE='eth0'
IOHUBOS_ETH0_MODE='static'
IOHUBOS_ETH0_IP='198.18.0.2'
IOHUBOS_ETH0_NETMASK='255.255.255.0'
IOHUBOS_ETH0_GATEWAY='198.18.0.1'
IOHUBOS_ETH1_DEVICE='eth1'
IOHUBOS_ETH1_IP='198.19.0.1'
IOHUBOS_ETH1_NETMASK='255.255.255.0'
IOHUBOS_DHCP_SERVER_ENABLED='false'
IOHUBOS_FIREWALL_CONFIG='true'
IOHUBOS_OPENSSH_ENABLED='true'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_UPGRADER_ENABLED='false'
IOHUBOS_DEPLOYER_ENABLED='false'
";

/// `envvars.d/1.1.1-envvars`, where WireGuard is configured (it overrides `envvars`, SPEC §1.1).
const WG_ENVVARS: &str = "IOHUBOS_WIREGUARD_ENABLED='true'
IOHUBOS_WIREGUARD_BOX_NUMBER='300'
IOHUBOS_WIREGUARD_NETWORK='10.99.0.0/16'
IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS='198.18.0.1'
IOHUBOS_WIREGUARD_SERVER_IP_PORT='51820'
";

fn prerequisites() -> bool {
    ["nft", "ip", "wg", "wireguard-go", "busybox", "conntrack"]
        .iter()
        .all(|p| require_program(p))
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-test");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `wg genkey` / `wg pubkey`.
fn wg_keys() -> (String, String) {
    let private = Command::new("wg").arg("genkey").output().unwrap();
    assert!(private.status.success());
    let private = String::from_utf8(private.stdout)
        .unwrap()
        .trim()
        .to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    let public = child.wait_with_output().unwrap();
    (
        private,
        String::from_utf8(public.stdout).unwrap().trim().to_string(),
    )
}

/// Interface names unique to this process (the UAPI socket directory is shared by every
/// namespace), at most 15 characters.
fn iface(role: &str) -> String {
    format!("{role}{}", std::process::id() % 1_000_000)
}

/// The server: wireguard-go in `lan` (killed with the namespace), its key and address.
struct Server {
    ns: String,
    iface: String,
    public: String,
    child: std::process::Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(topo: &Topology, dir: &Path) -> Server {
        let iface = iface("wgs");
        let (private, public) = wg_keys();
        let key_file = dir.join("server.key");
        std::fs::write(&key_file, format!("{private}\n")).unwrap();
        let child = topo.spawn(&topo.lan, &["wireguard-go", "-f", &iface]);
        let sock = PathBuf::from(format!("/var/run/wireguard/{iface}.sock"));
        assert!(
            topo.wait_for(T, || sock.exists()),
            "server wireguard-go socket"
        );
        topo.exec(
            &topo.lan,
            &[
                "wg",
                "set",
                &iface,
                "listen-port",
                "51820",
                "private-key",
                key_file.to_str().unwrap(),
            ],
        );
        topo.exec(
            &topo.lan,
            &["ip", "addr", "add", "10.99.0.1/16", "dev", &iface],
        );
        topo.exec(&topo.lan, &["ip", "link", "set", &iface, "up"]);
        // The server routes the box's LAN to the box (what a VPN server for boxes does).
        topo.exec(
            &topo.lan,
            &["ip", "route", "add", "198.19.0.0/24", "dev", &iface],
        );
        Server {
            ns: topo.lan.clone(),
            iface,
            public,
            child,
        }
    }

    /// The box as the server's peer.
    fn add_box(&self, topo: &Topology, box_public: &str) {
        topo.exec(
            &self.ns,
            &[
                "wg",
                "set",
                &self.iface,
                "peer",
                box_public,
                "allowed-ips",
                "10.99.1.44/32,198.19.0.0/24",
            ],
        );
    }
}

/// `tcp_ask` until it answers (at most 15 tries within `T`).
fn tcp_ask_soon(ns: &str, to: &str, msg: &str) -> Result<String, String> {
    let end = Instant::now() + T;
    let mut last = Err("never tried".to_string());
    for _ in 0..15 {
        last = tcp_ask(ns, to, msg);
        if last.is_ok() || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    last
}

/// A stream of `mib` MiB from `ns` to a sink at `to` that answers with the byte count.
fn tcp_stream(ns: &str, to: &str, mib: usize) -> usize {
    let to: SocketAddr = to.parse().unwrap();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..mib * 16 {
            s.write_all(&chunk).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.trim().parse().unwrap()
    })
}

/// A sink in `ns` on `addr` that counts the bytes of each connection and answers the count
/// (at most 4 connections, 120 s).
fn tcp_sink(ns: &str, addr: &str) {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    let addr: SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(addr).unwrap();
            tx.send(()).unwrap();
            for s in l.incoming().take(4) {
                let Ok(mut s) = s else { continue };
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut n = 0usize;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
                let _ = s.write_all(format!("{n}\n").as_bytes());
            }
        })
    });
    rx.recv_timeout(T).expect("sink bound");
}

fn ping(topo: &Topology, ns: &str, to: &str) -> bool {
    topo.try_exec(ns, &["busybox", "ping", "-c", "1", "-W", "1", to])
        .status
        .success()
}

fn ctl_set(topo: &Topology, roots: &Roots, assignment: &str) {
    let root = roots.root.to_str().unwrap().to_string();
    let ctl = binary("iohubctl");
    topo.exec(
        &topo.gw,
        &[ctl.to_str().unwrap(), "--root", &root, "set", assignment],
    );
}

fn ctl(topo: &Topology, roots: &Roots, args: &[&str]) -> String {
    let root = roots.root.to_str().unwrap().to_string();
    let ctl = binary("iohubctl");
    let mut argv = vec![ctl.to_str().unwrap(), "--root", root.as_str()];
    argv.extend_from_slice(args);
    String::from_utf8(topo.exec(&topo.gw, &argv).stdout).unwrap()
}

fn facts(s: &serde_json::Value) -> &serde_json::Value {
    &s["facts"]
}

/// Applied with the tunnel configured for `generation` or later.
fn tunnel_up(s: &serde_json::Value) -> bool {
    s["phase"] == "applied" && facts(s)["public_key"].is_string()
}

fn start_box(topo: &Topology, roots: &Roots, iface: &str, log: &Path) -> Iohubd {
    Iohubd::start_in_netns_logged(
        &topo.gw,
        roots,
        &[
            "--apply",
            "--without",
            "ssh",
            "--wireguard-interface",
            iface,
        ],
        log,
    )
}

#[test]
fn the_box_joins_its_vpn_exposes_only_what_it_says_and_reconfigures_live() {
    if !prerequisites() {
        return;
    }
    let topo = Topology::new(
        "wg",
        TopologyOptions {
            gw_eth0: GwEth0::Static,
            gw_eth1_addr: true,
        },
    );
    let scratch = tempfile::tempdir().unwrap();
    let server = Server::start(&topo, scratch.path());
    let roots = Roots::example("router");
    let wg_file = roots.root.join("envvars.d/1.1.1-envvars");
    write(&roots.root.join("envvars"), ENVVARS);
    write(
        &wg_file,
        &format!(
            "{WG_ENVVARS}IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY='{}'\n",
            server.public
        ),
    );
    let box_if = iface("wgc");
    let log = scratch.path().join("iohubd.log");
    let mut d = start_box(&topo, &roots, &box_if, &log);
    let mut wg = StateFeed::new(&topo.gw, &d.control, ServiceName::Wireguard, "wgtest");
    let s = wg.until("the tunnel configured", T, tunnel_up);
    let box_public = facts(&s)["public_key"].as_str().unwrap().to_string();
    assert_eq!(facts(&s)["address"]["addr"], BOX_VPN);
    assert!(topo.has_addr(&topo.gw, &box_if, "10.99.1.44/16"));
    assert_eq!(facts(&s)["private_key_mode"], 0o600);
    server.add_box(&topo, &box_public);

    // Ping and a TCP stream cross the tunnel; the handshake is in the state.
    tcp_echo(&topo.lan, 9000);
    tcp_sink(&topo.lan, "0.0.0.0:9001");
    assert!(
        (0..20).any(|_| ping(&topo, &topo.lan, BOX_VPN)),
        "the server pings the box through the tunnel"
    );
    assert_eq!(
        tcp_ask_soon(&topo.gw, &format!("{SERVER_VPN}:9000"), "hi").unwrap(),
        format!("{BOX_VPN} hi")
    );
    assert_eq!(
        tcp_stream(&topo.gw, &format!("{SERVER_VPN}:9001"), 4),
        4 << 20
    );
    wg.until("a handshake in the state", T, |s| {
        facts(s)["peer"]["last_handshake_ms"].is_u64()
    });

    // ACCESS_HOST=false: the box's SSH port is open on the uplink, closed to VPN peers; the
    // device behind eth1 is not reachable with EXPOSE=auto.
    tcp_echo(&topo.gw, 22);
    tcp_echo(&topo.dev, 80);
    assert!(tcp_ask_soon(&topo.lan, &format!("{BOX_WAN}:22"), "ssh").is_ok());
    assert!(tcp_ask(&topo.lan, &format!("{BOX_VPN}:22"), "ssh").is_err());
    assert!(tcp_ask(&topo.lan, &format!("{DEV}:80"), "plc").is_err());

    // EXPOSE lists the device's subnet: the server reaches it, masqueraded as the box.
    ctl_set(
        &topo,
        &roots,
        "IOHUBOS_WIREGUARD_EXPOSE=10.99.0.0/16,198.19.0.0/24",
    );
    assert_eq!(
        tcp_ask_soon(&topo.lan, &format!("{DEV}:80"), "plc").unwrap(),
        "198.19.0.1 plc"
    );
    // ACCESS_HOST=true opens the box to its peers.
    ctl_set(&topo, &roots, "IOHUBOS_WIREGUARD_ACCESS_HOST=true");
    assert_eq!(
        tcp_ask_soon(&topo.lan, &format!("{BOX_VPN}:22"), "ssh").unwrap(),
        format!("{SERVER_VPN} ssh")
    );

    // A new server port: the same wireguard-go process, the peer's endpoint updated live.
    let pid = facts(&wg.last)["wireguard_go"]["pid"].clone();
    assert!(pid.is_u64());
    topo.exec(
        &server.ns,
        &["wg", "set", &server.iface, "listen-port", "51821"],
    );
    ctl_set(&topo, &roots, "IOHUBOS_WIREGUARD_SERVER_IP_PORT=51821");
    wg.until("the new endpoint", T, |s| {
        facts(s)["server"] == "198.18.0.1:51821"
    });
    assert_eq!(facts(&wg.last)["wireguard_go"]["pid"], pid, "not restarted");
    assert_eq!(
        tcp_ask_soon(&topo.gw, &format!("{SERVER_VPN}:9000"), "again").unwrap(),
        format!("{BOX_VPN} again")
    );

    unconfirmed_change_is_undone(&topo, &roots, &mut wg);
    bad_input_keeps_the_tunnel(&topo, &d, &wg_file);

    // The private key: 0600, and its text (base64 and the UAPI's hex) in no state, plan or log.
    let key_path = roots.root.join("runtime/wireguard/private.key");
    let private = std::fs::read_to_string(&key_path)
        .unwrap()
        .trim()
        .to_string();
    key_never_shown(&topo, &roots, &[&wg.last], &log, &box_public, &private);

    // kill -9 and restart: the same key and address, the tunnel back.
    Command::new("kill")
        .args(["-KILL", &d.pid().to_string()])
        .status()
        .unwrap();
    assert!(d.wait_exit(T).is_some());
    drop(wg);
    let d2 = start_box(&topo, &roots, &box_if, &log);
    let mut wg = StateFeed::new(&topo.gw, &d2.control, ServiceName::Wireguard, "wgtest2");
    let s = wg.until("the tunnel again", T, tunnel_up);
    assert_eq!(facts(&s)["public_key"], box_public.as_str());
    assert_eq!(facts(&s)["address"]["addr"], BOX_VPN);
    assert_eq!(facts(&s)["key_generated"], false);
    assert_eq!(std::fs::read_to_string(&key_path).unwrap().trim(), private);
    assert_eq!(
        tcp_ask_soon(&topo.gw, &format!("{SERVER_VPN}:9000"), "back").unwrap(),
        format!("{BOX_VPN} back")
    );
}

/// Commit-confirm covers a VPN change: a server port set with `--confirm` and never confirmed
/// is applied, then undone, and the tunnel works again on the old port.
fn unconfirmed_change_is_undone(topo: &Topology, roots: &Roots, wg: &mut StateFeed) {
    ctl(
        topo,
        roots,
        &[
            "set",
            "--confirm",
            "3s",
            "IOHUBOS_WIREGUARD_SERVER_IP_PORT=51999",
        ],
    );
    wg.until("the unconfirmed port applied", T, |s| {
        facts(s)["server"] == "198.18.0.1:51999"
    });
    wg.until("the change undone", T, |s| {
        facts(s)["server"] == "198.18.0.1:51821"
    });
    assert_eq!(
        tcp_ask_soon(&topo.gw, &format!("{SERVER_VPN}:9000"), "undone").unwrap(),
        format!("{BOX_VPN} undone")
    );
}

/// Values refused all at once (key, network without prefix, box number 0, port out of range):
/// every one reported by the config service, the tunnel of the last good config still up.
fn bad_input_keeps_the_tunnel(topo: &Topology, d: &Iohubd, wg_file: &Path) {
    let envvars = std::fs::read_to_string(wg_file).unwrap();
    let mut cfg = StateFeed::new(&topo.gw, &d.control, ServiceName::Config, "wgcfg");
    write(
        wg_file,
        &format!(
            "{envvars}IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY='short'\nIOHUBOS_WIREGUARD_NETWORK='10.99.0.0'\nIOHUBOS_WIREGUARD_BOX_NUMBER='0'\nIOHUBOS_WIREGUARD_SERVER_IP_PORT='70000'\n"
        ),
    );
    let bad = cfg.until("the bad values refused", T, |s| {
        facts(s)["errors"]
            .to_string()
            .contains("IOHUBOS_WIREGUARD_SERVER_IP_PORT")
    });
    assert!(facts(&bad)["withheld"]
        .as_array()
        .unwrap()
        .contains(&"wireguard".into()));
    let text = facts(&bad)["errors"].to_string();
    for var in [
        "SERVER_PUBLIC_KEY",
        "NETWORK",
        "BOX_NUMBER",
        "SERVER_IP_PORT",
    ] {
        assert!(
            text.contains(&format!("IOHUBOS_WIREGUARD_{var}")),
            "{var} not reported: {text}"
        );
    }
    assert_eq!(
        tcp_ask_soon(&topo.gw, &format!("{SERVER_VPN}:9000"), "kept").unwrap(),
        format!("{BOX_VPN} kept")
    );
    write(wg_file, &envvars);
}

/// The private key file is 0600 and its text (base64, and the UAPI's hex) is in no state, plan
/// or log line; the public key is published.
fn key_never_shown(
    topo: &Topology,
    roots: &Roots,
    states: &[&serde_json::Value],
    log: &Path,
    public: &str,
    private: &str,
) {
    use std::os::unix::fs::PermissionsExt;
    let key_path = roots.root.join("runtime/wireguard/private.key");
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let hex: String = base64_decode(private)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex.len(), 64);
    let mut seen = ctl(topo, roots, &["status", "--json"]);
    seen.push_str(&ctl(topo, roots, &["plan", "--json"]));
    seen.push_str(&ctl(topo, roots, &["get", "wireguard", "--json"]));
    for s in states {
        seen.push_str(&s.to_string());
    }
    seen.push_str(&std::fs::read_to_string(log).unwrap());
    assert!(seen.contains(public), "the public key is published");
    assert!(!seen.contains(private) && !seen.contains(&hex));
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}
