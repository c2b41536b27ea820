//! A long-running program owned by a service (sshd, hostapd, wpa_supplicant): started through
//! [`crate::cmd`] as a child of iohubd, restarted with backoff when it dies, stopped when the
//! service says so. Used by the `ssh`, `wifi`, `network` (DHCP client) and `dhcp` (dnsmasq)
//! services.
//!
//! - The program runs in the foreground (`sshd -D`, `hostapd` and `wpa_supplicant` without
//!   `-B`), in its own process group, through [`crate::cmd::run`] with a long timeout
//!   ([`RUN_LIMIT`]; after it the program is killed and restarted like after a crash).
//! - When it exits, the exit (code, signal, stderr tail with the redacted strings removed) is
//!   recorded and it is started again after [`RESTART_INITIAL`], doubling up to
//!   [`RESTART_MAX`]; a run that stayed up [`HEALTHY_AFTER`] resets the delay.
//! - [`Supervised::stop`] sends SIGTERM to the program (its pid is kept from the spawn), waits [`STOP_GRACE`], then drops the run, which SIGKILLs the
//!   whole process group ([`crate::cmd`]). sshd's session processes call `setsid`, so open SSH
//!   sessions survive a restart of the listener (like `KillMode=process` of Debian's unit).
//! - Before its first start, copies of the program with the exact same command line that an
//!   earlier iohubd left running (killed by SIGKILL or a crash: reparented, they would hold the
//!   port or the interface) are stopped.
//! - Every change of [`ChildStatus`] is signalled on the service's `changed` channel, so that
//!   the service republishes its state.
//!
//! Invariant: no process is spawned here; [`crate::cmd`] does it.

use std::path::Path;
use std::time::Duration;

use bus_schema::{BusError, ErrorCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

use crate::cmd::Cmd;

/// The first delay before restarting a program that exited.
pub const RESTART_INITIAL: Duration = Duration::from_secs(1);
/// The longest delay before a restart.
pub const RESTART_MAX: Duration = Duration::from_secs(30);
/// A run this long was healthy: the next restart waits [`RESTART_INITIAL`] again.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How long [`Supervised::stop`] waits after SIGTERM before killing the process group.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// A run is killed (and restarted) after this long.
pub const RUN_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// How many bytes of the last stderr are kept in the status.
const TAIL_KEPT: usize = 1024;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildExit {
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub ran_ms: u64,
    /// The end of its output (stderr, else stdout), with redacted strings replaced.
    pub output_tail: String,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}")?,
            (None, Some(sig)) => write!(f, "killed by signal {sig}")?,
            (None, None) => write!(f, "ended")?,
        }
        write!(f, " after {} ms", self.ran_ms)?;
        let tail = self.output_tail.trim();
        if !tail.is_empty() {
            write!(f, ": {tail}")?;
        }
        Ok(())
    }
}

/// What the service publishes about its program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    /// The command line.
    pub argv: Vec<String>,
    pub running: bool,
    /// The pid of the current run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Starts so far (the first one included).
    pub starts: u32,
    /// When the current run started (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ChildExit>,
    /// The program could not be started at all (missing binary...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spawn_error: Option<String>,
    /// Set while waiting to restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_in_ms: Option<u64>,
}

impl ChildStatus {
    /// Why the program is not running, if it is not (for a service's `Degraded` state).
    pub fn down(&self) -> Option<BusError> {
        if self.running {
            return None;
        }
        let program = self
            .argv
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p))
            .unwrap_or_default();
        let message = match (&self.spawn_error, &self.last_exit) {
            (Some(e), _) => e.clone(),
            (None, Some(x)) => format!("{program} {x}; restarting"),
            (None, None) => format!("{program} is not running"),
        };
        Some(BusError::new(ErrorCode::Unavailable, message))
    }
}

/// A supervised program.
pub struct Supervised {
    cmd: Cmd,
    status: watch::Receiver<ChildStatus>,
    stopping: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Start `cmd` now and keep it running. `redact` are strings (secrets) that must never
    /// appear in the published output tail; `changed` receives a message at every status change.
    pub fn start(cmd: Cmd, redact: Vec<String>, changed: mpsc::UnboundedSender<()>) -> Supervised {
        let cmd = cmd.timeout(RUN_LIMIT);
        let argv = argv(&cmd);
        let (tx, rx) = watch::channel(ChildStatus {
            argv,
            ..ChildStatus::default()
        });
        let stopping = CancellationToken::new();
        let task = tokio::spawn(keep_running(
            cmd.clone(),
            redact,
            tx,
            changed,
            stopping.clone(),
        ));
        Supervised {
            cmd,
            status: rx,
            stopping,
            task,
        }
    }

    pub fn cmd(&self) -> &Cmd {
        &self.cmd
    }

    pub fn status(&self) -> ChildStatus {
        self.status.borrow().clone()
    }

    /// The pid of the running program, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.status.borrow().pid
    }

    /// SIGTERM, [`STOP_GRACE`], then SIGKILL of the process group. Returns once it is gone.
    pub async fn stop(mut self) {
        self.stopping.cancel();
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            // ESRCH: it just exited.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // Dropping the run kills the process group (sys::cmd).
        self.task.abort();
    }
}

fn argv(cmd: &Cmd) -> Vec<String> {
    std::iter::once(cmd.program.as_os_str())
        .chain(cmd.args.iter().map(|a| a.as_os_str()))
        .map(|s| s.to_string_lossy().into_owned())
        .collect()
}

async fn keep_running(
    cmd: Cmd,
    redact: Vec<String>,
    status: watch::Sender<ChildStatus>,
    changed: mpsc::UnboundedSender<()>,
    stopping: CancellationToken,
) {
    let strays = {
        let cmd = cmd.clone();
        tokio::task::spawn_blocking(move || kill_strays(&cmd))
            .await
            .unwrap_or_default()
    };
    if !strays.is_empty() {
        tracing::warn!(program = %cmd.program.display(), ?strays, "stopped copies left by an earlier iohubd");
    }
    let mut delay = RESTART_INITIAL;
    loop {
        let started = Instant::now();
        // The status says "running" with the pid once the program runs: a state published
        // from it names the real process.
        let result = crate::cmd::run_observed(&cmd, |pid| {
            status.send_modify(|s| {
                s.running = true;
                s.pid = Some(pid);
                s.starts = s.starts.saturating_add(1);
                s.since_ms = Some(now_ms());
                s.restart_in_ms = None;
                s.spawn_error = None;
            });
            let _ = changed.send(());
        })
        .await;
        let ran = started.elapsed();
        if stopping.is_cancelled() {
            return;
        }
        if ran >= HEALTHY_AFTER {
            delay = RESTART_INITIAL;
        }
        let program = cmd.program.display().to_string();
        status.send_modify(|s| {
            s.running = false;
            s.pid = None;
            s.since_ms = None;
            s.restart_in_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            match &result {
                Ok(out) => {
                    let tail = if out.stderr_tail.trim().is_empty() {
                        &out.stdout_tail
                    } else {
                        &out.stderr_tail
                    };
                    s.last_exit = Some(ChildExit {
                        code: out.code,
                        signal: out.signal,
                        ran_ms: u64::try_from(ran.as_millis()).unwrap_or(u64::MAX),
                        output_tail: scrub(tail, &redact),
                    });
                }
                Err(e) => s.spawn_error = Some(scrub(&e.to_string(), &redact)),
            }
        });
        tracing::warn!(%program, ?delay, "supervised program exited; restarting");
        let _ = changed.send(());
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopping.cancelled() => return,
        }
        delay = (delay * 2).min(RESTART_MAX);
    }
}

/// The last [`TAIL_KEPT`] bytes of `text` with every redacted string replaced.
pub fn scrub(text: &str, redact: &[String]) -> String {
    let mut out = text.to_string();
    for secret in redact.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), "<redacted>");
    }
    let mut cut = out.len().saturating_sub(TAIL_KEPT);
    while !out.is_char_boundary(cut) {
        cut += 1;
    }
    out[cut..].to_string()
}

/// The exact command line of `cmd` as `/proc/PID/cmdline` spells it.
fn cmdline(cmd: &Cmd) -> Vec<u8> {
    argv(cmd).iter().fold(Vec::new(), |mut v, a| {
        v.extend_from_slice(a.as_bytes());
        v.push(0);
        v
    })
}

/// Copies of `cmd` that an earlier iohubd left running when it was killed (SIGKILL, a crash):
/// the exact same command line, whose parent is not this process (they were reparented). They
/// would hold the port or the interface the new copy needs ("address in use"). Each gets
/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; returns their pids. Command lines name files
/// under the data or system root, so a copy belonging to another root is never matched.
fn kill_strays(cmd: &Cmd) -> Vec<u32> {
    let me = std::process::id();
    let want = cmdline(cmd);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let strays: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            parent(&dir).is_some_and(|p| p != me)
                && std::fs::read(dir.join("cmdline")).is_ok_and(|c| c == want)
        })
        .collect();
    let signal = |sig| {
        for pid in &strays {
            if let Ok(pid) = i32::try_from(*pid) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    };
    signal(Signal::SIGTERM);
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while strays.iter().any(|p| alive(*p)) {
        if std::time::Instant::now() > deadline {
            signal(Signal::SIGKILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    strays
}

/// Whether `pid` runs (exists and is not a zombie waiting for its new parent to reap it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// The parent pid from `/proc/PID/stat` (the field after the `)` of the command name).
fn parent(dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_program_that_is_down_says_why_with_its_name() {
        let mut s = ChildStatus {
            argv: vec!["/usr/sbin/sshd".into(), "-D".into()],
            running: true,
            pid: Some(7),
            starts: 2,
            since_ms: None,
            last_exit: Some(ChildExit {
                code: Some(255),
                signal: None,
                ran_ms: 12,
                output_tail: "no host key\n".into(),
            }),
            spawn_error: None,
            restart_in_ms: None,
        };
        assert_eq!(s.down(), None);
        s.running = false;
        let e = s.down().unwrap();
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert_eq!(
            e.message,
            "sshd exited with code 255 after 12 ms: no host key; restarting"
        );
        s.spawn_error = Some("/usr/sbin/sshd: not found".into());
        assert_eq!(s.down().unwrap().message, "/usr/sbin/sshd: not found");
        s.spawn_error = None;
        s.last_exit = None;
        assert_eq!(s.down().unwrap().message, "sshd is not running");
    }

    #[tokio::test]
    async fn a_copy_left_by_a_killed_iohubd_is_stopped_before_the_first_start() {
        // A `sleep` whose parent exits at once: reparented, like a program of a killed iohubd.
        let marker = format!("{}", 900_000_000 + std::process::id());
        let orphan = Cmd::new("sh")
            .arg("-c")
            .arg(format!("setsid sleep {marker} >/dev/null 2>&1 &"))
            .timeout(Duration::from_secs(5));
        assert!(crate::cmd::run(&orphan).await.unwrap().success());
        let cmd = Cmd::new("sleep").arg(&marker);
        let deadline = Instant::now() + Duration::from_secs(5);
        let stray = loop {
            let me = std::process::id();
            let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let dir = e.path();
                (parent(&dir) != Some(me)
                    && std::fs::read(dir.join("cmdline")).ok()? == cmdline(&cmd))
                .then_some(pid)
            });
            if let Some(pid) = found {
                break pid;
            }
            assert!(Instant::now() < deadline, "the orphan did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(alive(stray));
        let killed = tokio::task::spawn_blocking(move || kill_strays(&cmd))
            .await
            .unwrap();
        assert_eq!(killed, vec![stray]);
        assert!(!alive(stray));
    }

    async fn wait_for(
        rx: &mut mpsc::UnboundedReceiver<()>,
        s: &Supervised,
        f: impl Fn(&ChildStatus) -> bool,
    ) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !f(&s.status()) {
                rx.recv().await.unwrap();
            }
        })
        .await
        .expect("status not reached");
    }

    #[tokio::test]
    async fn a_program_that_dies_is_restarted_and_stop_ends_it_for_good() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = Supervised::start(
            Cmd::new("/bin/sh")
                .arg("-c")
                .arg("echo oops-hunter2 >&2; exit 3"),
            vec!["hunter2".into()],
            tx,
        );
        wait_for(&mut rx, &c, |s| s.starts >= 2).await;
        let exit = c.status().last_exit.unwrap();
        assert_eq!(exit.code, Some(3));
        assert_eq!(exit.output_tail, "oops-<redacted>\n");
        c.stop().await;

        let (tx, mut rx) = mpsc::unbounded_channel();
        // A command line no other test runs: starting it stops reparented copies of it, and a
        // test running beside this one (`sleep 1000` in sys::cmd's tests) is none of ours.
        let c = Supervised::start(Cmd::new("sleep").arg("987654"), vec![], tx);
        wait_for(&mut rx, &c, |s| s.running).await;
        let pid = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(p) = c.pid() {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        c.stop().await;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "still running: {stat}"
        );
    }
}
