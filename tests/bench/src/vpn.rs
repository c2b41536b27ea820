//! The WireGuard benchmarks (group `vpn`), in namespaces of their own: a wireguard-go "server"
//! in `lan`, the box in `gw`, both the same Debian wireguard-go.
//! - config change -> tunnel passing traffic: `IOHUBOS_WIREGUARD_ENABLED` switched on in
//!   `envvars.d/1.1.1-envvars` until a TCP request from the box to the server's tunnel address
//!   is answered (iohubd: watcher, config, wireguard-go started, UAPI, netlink), against the
//!   manual setup `wg-quick up` amounts to with a userspace WireGuard (`wireguard-go -f`, wait for
//!   its socket, `wg setconf`, `ip addr add`, `ip link set up`) with the same key, timed to the
//!   same answer;
//! - TCP throughput from the box to the server through each tunnel (16 MiB).
//!
//! The firewall is off in this run (the box's own outbound traffic is what is measured).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iohub_tests::netns::{in_netns, GwEth0, Topology, TopologyOptions};
use iohub_tests::{Iohubd, Roots};

use super::{hist, ms};

const UPS: usize = 10;
const MIB: usize = 16;
const WAIT: Duration = Duration::from_secs(20);
/// The longest a throughput stream may stall.
const STALL: Duration = Duration::from_secs(60);
const SERVER: &str = "10.99.0.1";
const BOX: &str = "10.99.1.44";

const ENV: &str = "
IOHUBOS_NETWORK_CONFIG='false'
IOHUBOS_FIREWALL_CONFIG='false'
IOHUBOS_DOCKER_ENABLED='false'
IOHUBOS_OPENSSH_ENABLED='false'
IOHUBOS_GLOBAL_MQTT='false'
IOHUBOS_ADMIN_API_ENABLED='false'
IOHUBOS_DOCKER_REGISTRY_ENABLED='false'
";

fn wg_env(enabled: bool, server_public: &str) -> String {
    format!(
        "IOHUBOS_WIREGUARD_ENABLED='{enabled}'
IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY='{server_public}'
IOHUBOS_WIREGUARD_BOX_NUMBER='300'
IOHUBOS_WIREGUARD_NETWORK='10.99.0.0/16'
IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS='198.18.0.1'
IOHUBOS_WIREGUARD_SERVER_IP_PORT='51820'
"
    )
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("bench-tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn output(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pubkey(private: &str) -> String {
    let mut c = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(private.as_bytes())
        .unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP server in `ns` for connections from the box's tunnel address (others are closed): a
/// one-byte request is answered with one byte; anything longer is
/// counted and the count answered (at most 100,000 connections, 300 s).
fn server_socket(ns: &str, port: u16) {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + Duration::from_secs(300);
            for s in l.incoming().take(100_000) {
                if Instant::now() > end {
                    return;
                }
                let Ok(mut s) = s else { continue };
                // Only the box's tunnel address counts: without its tunnel the box still
                // reaches the server's address over its uplink (default route).
                if s.peer_addr().map(|a| a.ip().to_string()).ok().as_deref() != Some(BOX) {
                    continue;
                }
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(STALL)).unwrap();
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut n = 0usize;
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(1) if n == 0 => {
                                let _ = s.write_all(b"y");
                                return;
                            }
                            Ok(k) => n += k,
                        }
                    }
                    let _ = s.write_all(format!("{n}\n").as_bytes());
                });
            }
        })
    });
    rx.recv_timeout(WAIT).unwrap();
}

/// One request from `ns` through the tunnel: answered or not (300 ms limits).
fn answered(ns: &str) -> bool {
    in_netns(ns, || {
        let to: SocketAddr = format!("{SERVER}:9100").parse().unwrap();
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        s.write_all(b"x").is_ok() && s.read(&mut b).is_ok_and(|n| n == 1)
    })
}

/// `MIB` MiB from `ns` to the server: MiB/s, or why the stream failed (a stall of 60 s).
fn throughput(ns: &str) -> Result<f64, String> {
    in_netns(ns, || {
        let e = |e: std::io::Error| e.to_string();
        let to: SocketAddr = format!("{SERVER}:9100").parse().unwrap();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(e)?;
        s.set_read_timeout(Some(STALL)).map_err(e)?;
        s.set_write_timeout(Some(STALL)).map_err(e)?;
        let chunk = vec![0x5au8; 64 * 1024];
        let t0 = Instant::now();
        for i in 0..MIB * 16 {
            s.write_all(&chunk).map_err(|err| {
                format!("write {i} of {} after {:?}: {err}", MIB * 16, t0.elapsed())
            })?;
        }
        s.shutdown(std::net::Shutdown::Write).map_err(e)?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(e)?;
        if answer.trim().parse::<usize>().ok() != Some(MIB << 20) {
            return Err(format!("the server counted {answer:?}"));
        }
        Ok(MIB as f64 / t0.elapsed().as_secs_f64())
    })
}

fn mib_text(r: &Result<f64, String>) -> String {
    match r {
        Ok(v) => format!("{v:.1} MiB/s"),
        Err(e) => format!("failed: {e}"),
    }
}

fn link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The manual setup: wireguard-go in the foreground, `wg setconf`, address, link up.
fn manual_up(t: &Topology, iface: &str, conf: &Path) -> Child {
    let child = t.spawn(&t.gw, &["wireguard-go", "-f", iface]);
    // Answering, not only bound (`wg` falls back to netlink on a refused connect).
    wait_until("manual socket", || {
        t.try_exec(&t.gw, &["wg", "show", iface]).status.success()
    });
    t.exec(&t.gw, &["wg", "setconf", iface, conf.to_str().unwrap()]);
    t.exec(&t.gw, &["ip", "addr", "add", "10.99.1.44/16", "dev", iface]);
    t.exec(&t.gw, &["ip", "link", "set", iface, "up"]);
    child
}

pub(crate) async fn run() {
    let mut out = String::from(
        "\n### vpn (namespaces; iohubd --apply inside gw, wireguard-go on both ends)\n\n",
    );
    out.push_str("| measurement | iohubd | peer | ratio |\n|---|---|---|---|\n");
    let t = Topology::new(
        "benchvpn",
        TopologyOptions {
            gw_eth0: GwEth0::Static,
            gw_eth1_addr: true,
        },
    );
    let scratch = tempfile::tempdir().unwrap();
    let id = std::process::id() % 1_000_000;
    let (server_if, box_if, manual_if) =
        (format!("wbs{id}"), format!("wbc{id}"), format!("wbm{id}"));

    // The server.
    let server_private = output(&["wg", "genkey"]).trim().to_string();
    let server_public = pubkey(&server_private);
    let server_key = scratch.path().join("server.key");
    std::fs::write(&server_key, format!("{server_private}\n")).unwrap();
    let mut server = t.spawn(&t.lan, &["wireguard-go", "-f", &server_if]);
    let sock = PathBuf::from(format!("/var/run/wireguard/{server_if}.sock"));
    wait_until("server socket", || sock.exists());
    t.exec(
        &t.lan,
        &[
            "wg",
            "set",
            &server_if,
            "listen-port",
            "51820",
            "private-key",
            server_key.to_str().unwrap(),
        ],
    );
    t.exec(
        &t.lan,
        &["ip", "addr", "add", "10.99.0.1/16", "dev", &server_if],
    );
    t.exec(&t.lan, &["ip", "link", "set", &server_if, "up"]);
    server_socket(&t.lan, 9100);

    // The box, enabled once to make its key, which the server then knows.
    let roots = Roots::example("standalone");
    let wg_file = roots.root.join("envvars.d/1.1.1-envvars");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(roots.root.join("envvars"))
        .unwrap();
    writeln!(f, "{ENV}").unwrap();
    write(&wg_file, &wg_env(true, &server_public));
    let d = Iohubd::start_in_netns(
        &t.gw,
        &roots,
        &["--apply", "--wireguard-interface", &box_if],
    );
    let key_file = roots.root.join("runtime/wireguard/private.key");
    wait_until("box key", || key_file.exists());
    let box_private = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    t.exec(
        &t.lan,
        &[
            "wg",
            "set",
            &server_if,
            "peer",
            &pubkey(&box_private),
            "allowed-ips",
            "10.99.1.44/32",
        ],
    );
    wait_until("first tunnel", || answered(&t.gw));
    write(&wg_file, &wg_env(false, &server_public));
    wait_until("box tunnel down", || !link_exists(&t.gw, &box_if));

    // The manual setup's config: the same key and peer.
    let conf = scratch.path().join("manual.conf");
    std::fs::write(
        &conf,
        format!("[Interface]\nPrivateKey = {box_private}\n\n[Peer]\nPublicKey = {server_public}\nEndpoint = 198.18.0.1:51820\nAllowedIPs = 10.99.0.0/16\nPersistentKeepalive = 25\n"),
    )
    .unwrap();
    let mut c = manual_up(&t, &manual_if, &conf);
    wait_until("manual tunnel", || answered(&t.gw));
    let peer_mib = throughput(&t.gw);
    let _ = c.kill();
    let _ = c.wait();
    wait_until("manual tunnel down", || !link_exists(&t.gw, &manual_if));
    write(&wg_file, &wg_env(true, &server_public));
    wait_until("box tunnel again", || answered(&t.gw));
    let ours_mib = throughput(&t.gw);
    write(&wg_file, &wg_env(false, &server_public));
    wait_until("box tunnel down again", || !link_exists(&t.gw, &box_if));

    let mut ours = hist();
    let mut peer = hist();
    for _ in 0..UPS {
        let t0 = Instant::now();
        write(&wg_file, &wg_env(true, &server_public));
        wait_until("tunnel up", || answered(&t.gw));
        ours.record(t0.elapsed().as_micros() as u64).unwrap();
        write(&wg_file, &wg_env(false, &server_public));
        wait_until("tunnel down", || !link_exists(&t.gw, &box_if));

        let t0 = Instant::now();
        let mut c = manual_up(&t, &manual_if, &conf);
        wait_until("manual up", || answered(&t.gw));
        peer.record(t0.elapsed().as_micros() as u64).unwrap();
        let _ = c.kill();
        let _ = c.wait();
        wait_until("manual down", || !link_exists(&t.gw, &manual_if));
    }
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        out.push_str(&format!(
            "| `IOHUBOS_WIREGUARD_ENABLED=true` written -> TCP answered through the tunnel, {name} ({UPS} ups) vs manual `wireguard-go -f` + `wg setconf` + `ip` | {:.1} ms | {:.1} ms | {:.2}x |\n",
            ms(&ours, q),
            ms(&peer, q),
            ms(&ours, q) / ms(&peer, q)
        ));
    }
    let ratio = match (&ours_mib, &peer_mib) {
        (Ok(o), Ok(p)) => format!("{:.2}x", o / p),
        _ => "-".to_string(),
    };
    out.push_str(&format!(
        "| TCP through the tunnel, box -> server, {MIB} MiB | {} | {} | {ratio} |\n",
        mib_text(&ours_mib),
        mib_text(&peer_mib)
    ));
    drop(d);
    let _ = server.kill();
    let _ = server.wait();
    println!("{out}");
}
