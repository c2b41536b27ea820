//! Network-namespace fixtures for tests that need a real kernel: the `lan - gw - dev` topology of
//! `reference/netns.md` §2 (veths created inside the namespaces, never in the root namespace),
//! `in_netns` (run a closure on a thread that `setns()`es first), and `NetnsProxy` (a TCP proxy
//! from the root namespace's loopback into a namespace, so an MQTT client reaches an `iohubd`
//! running inside `gw`), and `tcp_echo`/`tcp_ask` (bounded TCP traffic from and to a namespace).
//! Every namespace is deleted at Drop, also on panic.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// How gw's eth0 starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GwEth0 {
    /// 198.18.0.2/24 and a default route via 198.18.0.1.
    Static,
    /// Up, without an address (the service under test configures it).
    Unconfigured,
}

/// What the fixture configures beyond the links.
#[derive(Debug, Clone, Copy)]
pub struct TopologyOptions {
    pub gw_eth0: GwEth0,
    /// 198.19.0.1/24 on gw's eth1.
    pub gw_eth1_addr: bool,
}

/// Three namespaces `<prefix>-lan`, `<prefix>-gw`, `<prefix>-dev`:
/// `[lan] eth0 --- eth0 [gw] eth1 --- eth0 [dev]`.
pub struct Topology {
    pub lan: String,
    pub gw: String,
    pub dev: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A namespace-name prefix unique to this test and process: the test name (alphanumerics, at
/// most 16 chars), the pid and a per-process counter.
pub fn unique_prefix(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect();
    format!(
        "{clean}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Topology {
    /// Create the namespaces, links and addresses (see the module docs).
    pub fn new(name: &str, opts: TopologyOptions) -> Topology {
        let p = unique_prefix(name);
        let t = Topology {
            lan: format!("{p}-lan"),
            gw: format!("{p}-gw"),
            dev: format!("{p}-dev"),
        };
        // Drop cleans up whatever exists, even if set-up panics half-way.
        for ns in [&t.lan, &t.gw, &t.dev] {
            ip(&["netns", "add", ns]);
        }
        let (lan, gw, dev) = (t.lan.as_str(), t.gw.as_str(), t.dev.as_str());
        ip(&[
            "-n", gw, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", lan,
        ]);
        ip(&[
            "-n", gw, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", dev,
        ]);
        for ns in [lan, gw, dev] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", lan, "link", "set", "eth0", "up"]);
        ip(&["-n", gw, "link", "set", "eth0", "up"]);
        ip(&["-n", gw, "link", "set", "eth1", "up"]);
        ip(&["-n", dev, "link", "set", "eth0", "up"]);
        ip(&["-n", lan, "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
        if opts.gw_eth1_addr {
            ip(&["-n", gw, "addr", "add", "198.19.0.1/24", "dev", "eth1"]);
        }
        if opts.gw_eth0 == GwEth0::Static {
            ip(&["-n", gw, "addr", "add", "198.18.0.2/24", "dev", "eth0"]);
            ip(&["-n", gw, "route", "add", "default", "via", "198.18.0.1"]);
        }
        ip(&["-n", dev, "addr", "add", "198.19.0.10/24", "dev", "eth0"]);
        ip(&["-n", dev, "route", "add", "default", "via", "198.19.0.1"]);
        // A new namespace inherits ip_forward from the root namespace: always set it explicitly.
        t.exec(gw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        t.exec(lan, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        t.exec(dev, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        t
    }

    /// `ip netns exec <ns> args...`, output captured; panics with stderr on failure.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let out = self.try_exec(ns, args);
        assert!(
            out.status.success(),
            "ip netns exec {ns} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `ip netns exec <ns> args...`, returning the Output without panicking.
    pub fn try_exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// Spawn a long-running process in a namespace (killed at Drop; stdout/stderr inherited).
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn in netns")
    }

    /// `ip -j addr show` in `ns`, parsed.
    pub fn addrs(&self, ns: &str) -> serde_json::Value {
        let out = self.exec(ns, &["ip", "-j", "addr", "show"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Does `dev` in `ns` carry `addr` (e.g. "198.18.0.2/24")?
    pub fn has_addr(&self, ns: &str, dev: &str, addr: &str) -> bool {
        let (a, len) = addr.split_once('/').unwrap_or((addr, "32"));
        let len: u64 = len.parse().unwrap();
        self.addrs(ns).as_array().unwrap().iter().any(|l| {
            l["ifname"] == dev
                && l["addr_info"].as_array().is_some_and(|ai| {
                    ai.iter()
                        .any(|i| i["local"] == a && i["prefixlen"].as_u64() == Some(len))
                })
        })
    }

    /// `ip -j -4 route show table all` in `ns`, parsed.
    pub fn routes(&self, ns: &str) -> Vec<serde_json::Value> {
        let out = self.exec(ns, &["ip", "-j", "-4", "route", "show", "table", "all"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Poll `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
    pub fn wait_for(&self, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn teardown(ns: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let pids: Vec<&str> = out.split_whitespace().collect();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in pids {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.dev, &self.gw, &self.lan] {
            Topology::teardown(ns);
        }
    }
}

fn enter(ns: &str) {
    let fd = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open /run/netns/{ns}: {e}"));
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
}

/// Run `f` on a thread that setns()es into `ns` first (sockets created inside belong to ns).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A network namespace with only its loopback up, deleted (with its processes) on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: &str) -> Netns {
        let ns = unique_prefix(name);
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {ns}");
        let ok = Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(ok.success());
        Netns(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

// --- traffic -------------------------------------------------------------------------------

/// A TCP server in `ns` on `port`: answers each line with "<peer ip> <line>". At most 64
/// connections, each idle for at most 20 s; the thread ends after 120 s.
pub fn tcp_echo(ns: &str, port: u16) {
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    std::thread::spawn(move || {
        in_netns(&ns, move || {
            let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
            tx.send(()).unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            for s in l.incoming().take(64) {
                if Instant::now() > end {
                    return;
                }
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let peer = s.peer_addr().unwrap().ip();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut buf = [0u8; 512];
                    for _ in 0..100 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                                if s.write_all(format!("{peer} {msg}").as_bytes()).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("tcp echo bound");
}

/// One TCP request from `ns` to `to`: the reply, or why there was none (2 s limits).
pub fn tcp_ask(ns: &str, to: &str, msg: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    let msg = msg.to_string();
    in_netns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A TCP proxy: listens on 127.0.0.1:0 in the caller's namespace and forwards each connection to
/// `target` inside `ns` (the outgoing socket is created on a thread that entered `ns`).
pub struct NetnsProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl NetnsProxy {
    pub fn new(ns: &str, target: SocketAddr) -> NetnsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.to_string();
        let stop2 = stop.clone();
        // One thread inside the namespace makes the outgoing connections.
        let (req_tx, req_rx) =
            std::sync::mpsc::channel::<std::sync::mpsc::Sender<Option<TcpStream>>>();
        let ns2 = ns.clone();
        std::thread::spawn(move || {
            enter(&ns2);
            for reply in req_rx {
                let s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).ok();
                let _ = reply.send(s);
            }
        });
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let (tx, rx) = std::sync::mpsc::channel();
                if req_tx.send(tx).is_err() {
                    return;
                }
                let Ok(Some(outbound)) = rx.recv() else {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        NetnsProxy { addr, stop }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
        let _ = from.shutdown(Shutdown::Read);
    });
}

impl Drop for NetnsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// The retained state of one service of an `iohubd` running inside a namespace, followed over
/// MQTT through a [`NetnsProxy`]: [`StateFeed::until`] waits (bounded) for a condition.
pub struct StateFeed {
    /// The latest state received (`Null` before the first).
    pub last: serde_json::Value,
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
    client: rumqttc::Client,
    _proxy: NetnsProxy,
}

impl StateFeed {
    /// Subscribe to `iohub/state/<service>` of the iohubd in `ns` whose control listener is
    /// `control` (as `crate::Control::read` finds it).
    pub fn new(
        ns: &str,
        control: &crate::Control,
        service: bus_schema::ServiceName,
        client_id: &str,
    ) -> StateFeed {
        use rumqttc::{Event, Packet, QoS};
        let proxy = NetnsProxy::new(ns, SocketAddr::from(([127, 0, 0, 1], control.port)));
        let mut opts = rumqttc::MqttOptions::new(
            format!("{client_id}-{}", std::process::id()),
            "127.0.0.1",
            proxy.addr.port(),
        );
        opts.set_credentials(control.username.clone(), control.password.clone());
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut conn) = rumqttc::Client::new(opts, 100);
        client
            .subscribe(
                bus_schema::Topic::state(service).to_string(),
                QoS::AtLeastOnce,
            )
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or_default();
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        StateFeed {
            last: serde_json::Value::Null,
            rx,
            client,
            _proxy: proxy,
        }
    }

    /// Wait up to `limit` until the state satisfies `done`; returns it. Panics naming `what`.
    pub fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        while !done(&self.last) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(v) => self.last = v,
                Err(_) => panic!("state never reached {what}; last: {:#}", self.last),
            }
        }
        self.last.clone()
    }
}

impl Drop for StateFeed {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
    }
}
