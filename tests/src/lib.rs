//! Fixtures shared by the end-to-end tests and the benchmark harness: temporary roots made from
//! the example roots, the real `iohubd` binary started as a process (readiness awaited through
//! systemd's notify protocol, never by sleeping), and MQTT clients of its control listener.
// Test fixtures spawn iohubd and copy trees directly, and panic on a broken fixture.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

pub mod bench_admin_api;
pub mod docker;
pub mod https;
pub mod netns;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Where the workspace is.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built binary of the workspace (`iohubd`, `iohubctl`), next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build -p services -p iohubctl --bins` (a workspace test run builds them)",
        path.display()
    );
    path
}

/// Is this a CI run, where a missing prerequisite is a failure rather than a skip?
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Check for an external program; under CI its absence fails the test, elsewhere it skips.
/// Returns false when the caller should skip.
pub fn require_program(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    if !found {
        assert!(
            !ci(),
            "{name} is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: {name} not installed (scripts/test.sh installs it)");
    }
    found
}

/// The schemathesis version `scripts/test.sh` installs (PyPI), in a venv of its own.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The schemathesis of `scripts/test.sh`: `$IOHUB_SCHEMATHESIS`, else
/// `target/schemathesis-venv/bin/schemathesis`, else one on the PATH. Under CI its absence
/// fails the test, elsewhere it skips (returns `None`).
pub fn schemathesis() -> Option<PathBuf> {
    let venv = workspace().join("target/schemathesis-venv/bin/schemathesis");
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("schemathesis"))
            .find(|f| f.is_file())
    });
    let found = std::env::var_os("IOHUB_SCHEMATHESIS")
        .map(PathBuf::from)
        .into_iter()
        .chain([venv])
        .chain(on_path)
        .find(|f| f.is_file());
    if found.is_none() {
        assert!(
            !ci(),
            "schemathesis {SCHEMATHESIS_VERSION} is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: schemathesis not installed (scripts/test.sh installs it)");
    }
    found
}

/// Copy a directory tree (regular files, dirs, modes; symlinks recreated).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let src = e.path();
        let dst = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&src, &dst);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A temporary data root and system root.
pub struct Roots {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub system: PathBuf,
}

impl Roots {
    /// Copy of `examples/<name>/{root,system}`.
    pub fn example(name: &str) -> Roots {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let system = dir.path().join("system");
        let ex = workspace().join("examples").join(name);
        copy_tree(&ex.join("root"), &root);
        copy_tree(&ex.join("system"), &system);
        Roots { dir, root, system }
    }
}

/// `<root>/runtime/control.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Control {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl Control {
    pub fn read(root: &Path) -> Control {
        let text = std::fs::read_to_string(root.join("runtime/control.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// rumqttc options with the control credentials.
    pub fn mqtt_options(&self, client_id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_credentials(self.username.clone(), self.password.clone());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(16 << 20, 16 << 20);
        o
    }
}

/// A running `iohubd` process.
pub struct Iohubd {
    child: Option<Child>,
    pub control: Control,
    pub root: PathBuf,
    pub started_in: Duration,
}

/// Services that change the network (links, addresses, routes, firewall, processes bound to
/// ports of the box): with `--apply` they may run only inside a network namespace of the test.
pub const NETWORK_SERVICES: &[&str] = &[
    "network", "firewall", "routes", "dhcp", "wifi", "ssh", "system",
];

/// Whether the calling thread is in the host's network namespace (that of PID 1); a thread
/// that `setns`ed into a test namespace, and the processes it spawns, are not.
pub fn in_host_netns() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    ns("/proc/thread-self/ns/net") == ns("/proc/1/ns/net")
}

/// `--apply` in the host's namespace: the test must name its services with `--only`, and none
/// may be one that touches the network. Panics otherwise (a test must never change the host).
fn host_safe_services(extra: &[&str]) {
    let only = extra
        .iter()
        .position(|a| *a == "--only")
        .and_then(|i| extra.get(i + 1))
        .unwrap_or_else(|| {
            panic!("iohubd --apply outside a network namespace needs --only SERVICES: {extra:?}")
        });
    for name in only.split(',') {
        assert!(
            !NETWORK_SERVICES.contains(&name),
            "iohubd --apply outside a network namespace must not run `{name}`: use start_in_netns"
        );
    }
}

impl Iohubd {
    /// Start `iohubd --root R --system-root S --control-addr 127.0.0.1:0 [extra]` (`extra` may
    /// name its own `--control-addr`) and wait for its `READY=1` on a notify socket of our own.
    pub fn start(root: &Path, system: &Path, extra: &[&str]) -> Iohubd {
        Self::start_with(None, root, system, extra, None)
    }

    /// The same, prefixed with `ip netns exec <ns>`; the control address (127.0.0.1 inside `ns`)
    /// is reachable through `netns::NetnsProxy`.
    pub fn start_in_netns(ns: &str, roots: &Roots, extra: &[&str]) -> Iohubd {
        Self::start_with(Some(ns), &roots.root, &roots.system, extra, None)
    }

    /// [`Iohubd::start_in_netns`] with its stdout and stderr appended to `log` at level `info`
    /// (a test that reads what iohubd logs).
    pub fn start_in_netns_logged(ns: &str, roots: &Roots, extra: &[&str], log: &Path) -> Iohubd {
        Self::start_with(Some(ns), &roots.root, &roots.system, extra, Some(log))
    }

    fn start_with(
        netns: Option<&str>,
        root: &Path,
        system: &Path,
        extra: &[&str],
        log: Option<&Path>,
    ) -> Iohubd {
        if netns.is_none() && extra.contains(&"--apply") && in_host_netns() {
            host_safe_services(extra);
        }
        let sock_dir = tempfile::tempdir().unwrap();
        let sock_path = sock_dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let t0 = Instant::now();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary("iohubd"));
                c
            }
            None => Command::new(binary("iohubd")),
        };
        let level = match log {
            Some(path) => {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                cmd.stdout(out.try_clone().unwrap()).stderr(out);
                "info".to_string()
            }
            None => std::env::var("IOHUB_LOG").unwrap_or_else(|_| "warn".into()),
        };
        let mut child = cmd
            .arg("--root")
            .arg(root)
            .arg("--system-root")
            .arg(system)
            .args(
                (!extra.contains(&"--control-addr"))
                    .then_some(["--control-addr", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("IOHUB_LOG", level)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match sock.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break
                }
                Ok(_) => continue,
                Err(e) => {
                    let _ = child.kill();
                    panic!(
                        "iohubd did not report READY=1: {e}; exit: {:?}",
                        child.try_wait()
                    );
                }
            }
        }
        let started_in = t0.elapsed();
        Iohubd {
            child: Some(child),
            control: Control::read(root),
            root: root.to_path_buf(),
            started_in,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// SIGTERM and wait (bounded); returns the exit status and how long the stop took.
    /// Wait (bounded) for iohubd to exit on its own; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stop(mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("running");
        let t0 = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = t0 + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, t0.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("iohubd did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Iohubd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// RSS of a process in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Run `iohubctl --root ROOT args...`, returning (exit status, stdout, stderr).
pub fn iohubctl(root: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(binary("iohubctl"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Follow `iohub/state/<service>` through the control listener of the daemon at `root` until
/// `done` holds for a state; returns that state. Panics after `limit`, showing the last state.
pub async fn until_state(
    root: &Path,
    service: &str,
    limit: Duration,
    mut done: impl FnMut(&bus_schema::ServiceState) -> bool,
) -> bus_schema::ServiceState {
    let mut ctl = iohubctl::Ctl::connect(root, limit).await.unwrap();
    let mut last = None;
    let topic = format!("iohub/state/{service}");
    let fut = ctl.follow(&topic, |m| {
        let st: bus_schema::ServiceState = serde_json::from_slice(&m.payload).unwrap();
        let stop = done(&st);
        last = Some(st);
        !stop
    });
    let r = tokio::time::timeout(limit, fut).await;
    assert!(
        r.is_ok(),
        "{service}: condition not reached; last state: {last:?}"
    );
    last.unwrap()
}

/// Poll `cond` every 20 ms until it holds; panics after `limit`.
pub async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "not reached in time: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
