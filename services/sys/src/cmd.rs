//! Running programs: the only place in iohub that spawns a process.
//!
//! Every program runs as its own process (never inside iohubd: a shell script is run by
//! `/bin/sh FILE`, it is never sourced), in a new process group, with a timeout:
//! - on timeout, or when the caller drops the future (shutdown, a cancelled apply), the whole
//!   group gets SIGKILL, so a script's children die with it;
//! - a program that exits normally may leave background children behind (IOhubOS's runner
//!   action forks one on purpose); they keep running, and their output is drained but no longer
//!   recorded once the program has exited and [`OUTPUT_GRACE`] has passed;
//! - only the last [`TAIL_BYTES`] of stdout and of stderr are kept: memory stays bounded even for
//!   a program that prints gigabytes.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// How much of each output stream is kept.
pub const TAIL_BYTES: usize = 4096;

/// The shell that runs scripts (`/bin/sh FILE`).
pub const SH: &str = "/bin/sh";

/// How long output is still collected after the program exited, for children that hold its
/// pipes open (their output after that is drained and dropped).
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// How long to wait for a SIGKILLed program to be reaped (a process stuck in the kernel, e.g.
/// on a dead NFS mount, may never go away; we do not wait for it forever).
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Default timeout of [`Cmd::new`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A program to run. Build with [`Cmd::new`] / [`Cmd::sh`] and the builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Variables added to the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory; the daemon's when `None`.
    pub cwd: Option<PathBuf>,
    /// After this the whole process group is killed and the output says `timed_out`.
    pub timeout: Duration,
    /// Bytes written to the program's stdin (which is `/dev/null` when `None`).
    pub stdin: Option<Vec<u8>>,
}

impl Cmd {
    /// Run `program` (a path, or a name looked up in `PATH`) with [`DEFAULT_TIMEOUT`].
    pub fn new(program: impl Into<PathBuf>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
            stdin: None,
        }
    }

    /// Run a script file with `/bin/sh FILE` (its mode and shebang do not matter).
    pub fn sh(script: impl Into<PathBuf>) -> Cmd {
        Cmd::new(SH).arg(script.into())
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Cmd {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cmd {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    fn display(&self) -> String {
        self.program.display().to_string()
    }
}

/// What a finished (or killed) program did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmdOutput {
    /// The exit code; `None` when the program was killed by a signal.
    pub code: Option<i32>,
    /// The signal that killed the program, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The last [`TAIL_BYTES`] of stdout (lossy UTF-8).
    pub stdout_tail: String,
    /// The last [`TAIL_BYTES`] of stderr (lossy UTF-8).
    pub stderr_tail: String,
    /// The timeout fired and the process group was killed.
    pub timed_out: bool,
    pub duration_ms: u64,
}

impl CmdOutput {
    /// Exited by itself with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// A program could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

impl CmdError {
    /// The kernel refused to execute the file as a program (`ENOEXEC`: no `#!` line, e.g. a
    /// script that starts with an empty line).
    pub fn is_exec_format(&self) -> bool {
        matches!(self, CmdError::Spawn { source, .. } if source.raw_os_error() == Some(Errno::ENOEXEC as i32))
    }
}

/// Run `cmd` to completion or timeout. Errors only when the program could not be started.
pub async fn run(cmd: &Cmd) -> Result<CmdOutput, CmdError> {
    run_observed(cmd, |_| {}).await
}

/// [`run`], calling `spawned` with the program's pid once it runs (after its `exec`).
pub async fn run_observed(cmd: &Cmd, spawned: impl FnOnce(u32)) -> Result<CmdOutput, CmdError> {
    let started = tokio::time::Instant::now();
    let mut child = spawn(cmd).await?;
    if let Some(pid) = child.id() {
        spawned(pid);
    }
    let program = cmd.display();
    let mut group = GroupKill(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw),
    );

    if let (Some(bytes), Some(mut pipe)) = (cmd.stdin.clone(), child.stdin.take()) {
        // A program that does not read its stdin gets EPIPE'd writes: not our error.
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let mut stdout = Tail::spawn(child.stdout.take());
    let mut stderr = Tail::spawn(child.stderr.take());

    let (status, timed_out) = match tokio::time::timeout(cmd.timeout, child.wait()).await {
        Ok(status) => (
            Some(status.map_err(|source| CmdError::Wait { program, source })?),
            false,
        ),
        Err(_) => {
            tracing::warn!(program = %cmd.display(), timeout = ?cmd.timeout, "timed out; killing its process group");
            group.kill();
            let status = tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .ok()
                .and_then(Result::ok);
            (status, true)
        }
    };
    // The program is gone: its background children (if it exited by itself) may live on.
    group.disarm();
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        stdout.closed().await;
        stderr.closed().await;
    })
    .await;

    Ok(CmdOutput {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        stdout_tail: stdout.text(),
        stderr_tail: stderr.text(),
        timed_out,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Run an executable file. Like `execvp(3)` and bash, a file the kernel refuses to execute
/// (ENOEXEC: no `#!` line) is run again as `/bin/sh FILE ARGS...`.
pub async fn run_file(cmd: &Cmd) -> Result<CmdOutput, CmdError> {
    match run(cmd).await {
        Err(e) if e.is_exec_format() => {
            tracing::debug!(program = %cmd.display(), "no valid #! line; running it with {SH}");
            let mut sh = cmd.clone();
            sh.program = PathBuf::from(SH);
            sh.args.insert(0, cmd.program.clone().into_os_string());
            run(&sh).await
        }
        other => other,
    }
}

/// Run a script file as `/bin/sh PATH` in its own process.
pub async fn run_script(path: &Path, timeout: Duration) -> Result<CmdOutput, CmdError> {
    run(&Cmd::sh(path).timeout(timeout)).await
}

async fn spawn(cmd: &Cmd) -> Result<tokio::process::Child, CmdError> {
    // ETXTBSY: another thread of this process forked while holding a file open for writing
    // (golang/go#22315); it goes away once that child has exec'd. Retry a few times.
    let mut attempts = 0;
    loop {
        match command(cmd).spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10 << attempts)).await;
            }
            Err(source) => {
                return Err(CmdError::Spawn {
                    program: cmd.display(),
                    source,
                })
            }
        }
    }
}

#[allow(clippy::disallowed_methods)] // sys::cmd is the one place a process is spawned.
fn command(cmd: &Cmd) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout kills the program and everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &cmd.cwd {
        c.current_dir(dir);
    }
    c
}

/// SIGKILLs the process group when dropped while armed (the caller's future was dropped
/// mid-run) or when asked. Disarmed once the group leader was reaped: its pid, and so the
/// group id, may then be reused.
struct GroupKill(Option<Pid>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is already gone.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bounded tail of one output stream, filled by a task that drains the pipe to its end.
struct Tail {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl Tail {
    fn spawn<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Tail {
        let buf = Arc::new(Mutex::new(Vec::with_capacity(TAIL_BYTES)));
        let task = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                loop {
                    match pipe.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                            b.extend_from_slice(&chunk[..n]);
                            if b.len() > 2 * TAIL_BYTES {
                                let cut = b.len() - TAIL_BYTES;
                                b.drain(..cut);
                            }
                        }
                    }
                }
            })
        });
        Tail { buf, task }
    }

    /// Wait for the end of the stream (the task keeps draining if this is abandoned).
    async fn closed(&mut self) {
        if let Some(task) = &mut self.task {
            let _ = task.await;
            self.task = None;
        }
    }

    fn text(&self) -> String {
        let b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let mut tail = &b[b.len().saturating_sub(TAIL_BYTES)..];
        // Do not start in the middle of a UTF-8 sequence.
        if b.len() > TAIL_BYTES {
            while let [first, rest @ ..] = tail {
                if first & 0b1100_0000 != 0b1000_0000 {
                    break;
                }
                tail = rest;
            }
        }
        String::from_utf8_lossy(tail).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sh(script: &str) -> Cmd {
        Cmd::new(SH).arg("-c").arg(script)
    }

    #[tokio::test]
    async fn exit_code_output_env_cwd_and_stdin_are_passed_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let out = run(&sh("cat; echo \"$GREETING\"; pwd; echo err >&2; exit 3")
            .env("GREETING", "hello")
            .cwd(dir.path())
            .stdin(b"from stdin\n".to_vec()))
        .await
        .unwrap();
        assert_eq!(out.code, Some(3));
        assert!(!out.timed_out && !out.success());
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            out.stdout_tail,
            format!("from stdin\nhello\n{}\n", cwd.display())
        );
        assert_eq!(out.stderr_tail, "err\n");
    }

    #[tokio::test]
    async fn a_program_that_prints_a_lot_keeps_only_the_last_bytes() {
        let out = run(&sh(
            "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo THE-END",
        ))
        .await
        .unwrap();
        assert!(out.success(), "{out:?}");
        assert!(out.stdout_tail.len() <= TAIL_BYTES);
        assert!(
            out.stdout_tail.ends_with("xxx\nTHE-END\n"),
            "{}",
            &out.stdout_tail[4000..]
        );
    }

    /// Whether `pid` stops running within a few seconds (SIGKILL is delivered asynchronously).
    async fn dies(pid: u32) -> bool {
        for _ in 0..250 {
            // Gone, or a zombie waiting for a reaper: either way it no longer runs.
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) => {
                    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                    if state.starts_with('Z') || state.starts_with('X') {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let out = run(&sh("sleep 1000 & echo $!; sleep 1000").timeout(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.code, None);
        assert_eq!(out.signal, Some(Signal::SIGKILL as i32));
        let background: u32 = out.stdout_tail.trim().parse().unwrap();
        assert!(
            dies(background).await,
            "the background child of a timed-out script survived"
        );
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 1000 & echo $! > {}; sleep 1000", pidfile.display());
        let run = tokio::spawn(async move { run(&sh(&script)).await });
        while std::fs::read_to_string(&pidfile)
            .map(|s| !s.ends_with('\n'))
            .unwrap_or(true)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        run.abort();
        assert!(run.await.unwrap_err().is_cancelled());
        let background: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            dies(background).await,
            "the background child survived its abandoned run"
        );
    }

    #[tokio::test]
    async fn a_script_without_shebang_runs_with_sh_and_scripts_run_in_their_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let exec = dir.path().join("no-shebang");
        // IOhubOS's 1510/1710 start with an empty line before `#!/bin/bash`.
        crate::fs::atomic_write(&exec, b"\n#!/bin/bash\necho \"ran $1 as $$\"\n", 0o755).unwrap();
        let out = run_file(&Cmd::new(&exec).arg("arg")).await.unwrap();
        assert!(out.success(), "{out:?}");
        assert!(out.stdout_tail.starts_with("ran arg as "));
        assert_ne!(
            out.stdout_tail.trim().rsplit(' ').next(),
            Some(std::process::id().to_string().as_str())
        );

        let plain = dir.path().join("plain");
        crate::fs::atomic_write(&plain, b"echo plain; exit 7\n", 0o644).unwrap();
        assert_eq!(
            std::fs::metadata(&plain).unwrap().permissions().mode() & 0o111,
            0
        );
        let out = run_script(&plain, Duration::from_secs(10)).await.unwrap();
        assert_eq!((out.code, out.stdout_tail.as_str()), (Some(7), "plain\n"));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = run(&Cmd::new("/nonexistent/program")).await.unwrap_err();
        assert!(
            matches!(err, CmdError::Spawn { .. }) && !err.is_exec_format(),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/program"));
    }
}
