//! Bootstrap hooks (`runtime/iohub-bootstrap/<hook>`) and actions (`/usr/bin/iohub-actions.d/*`):
//! finding them, and running each as its own process through [`sys::cmd`].
//!
//! IOhubOS *sourced* hooks and non-executable actions into the bootstrap shell. iohub never runs
//! anything inside the daemon: an executable file is executed (a file without a valid `#!` line
//! falls back to `/bin/sh FILE`, like bash does), any other regular file is run as
//! `/bin/sh FILE`. Consequences, by design: a hook or action can no longer set variables for
//! later ones, nor `exit` the whole bootstrap; its exit code, duration, timeout and output tail
//! are recorded instead of ignored.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::livesync::Skipped;
use crate::ctx::Paths;
use sys::cmd::{self, Cmd};

/// The bootstrap hooks, in the order IOhubOS ran them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    PostMount,
    PreSetup,
    PostSetup,
    PreLiveSync,
    PostLiveSync,
    PreLiveActions,
    PostLiveActions,
    End,
}

impl Hook {
    /// The file name under `runtime/iohub-bootstrap/`.
    pub const fn file_name(self) -> &'static str {
        match self {
            Hook::PostMount => "postmount",
            Hook::PreSetup => "presetup",
            Hook::PostSetup => "postsetup",
            Hook::PreLiveSync => "prelivesync",
            Hook::PostLiveSync => "postlivesync",
            Hook::PreLiveActions => "preliveactions",
            Hook::PostLiveActions => "postliveactions",
            Hook::End => "end",
        }
    }
}

/// Where the hooks live, under the data root.
pub const HOOKS_DIR: &str = "runtime/iohub-bootstrap";
/// Where the actions live, under the system root.
pub const ACTIONS_DIR: &str = "/usr/bin/iohub-actions.d";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Hook,
    Action,
}

/// How a program file is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Executed (falls back to `/bin/sh FILE` without a valid `#!` line).
    Exec,
    /// Not executable: `/bin/sh FILE`.
    Sh,
}

/// A hook or action to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Program {
    pub kind: Kind,
    pub name: String,
    pub path: PathBuf,
    pub how: How,
}

/// What one program did: the record in the lifecycle state's `facts` and the payload of
/// `iohub/event/lifecycle/action_ran`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ran {
    pub kind: Kind,
    pub name: String,
    pub how: How,
    /// Exit code; `None` when killed by a signal, timed out, or not started.
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Why it could not be started at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The hook file, if it is a regular file (symlinks followed, like `[[ -f ]]`).
pub fn hook(paths: &Paths, hook: Hook) -> Option<Program> {
    let path = paths.root(HOOKS_DIR).join(hook.file_name());
    let meta = fs::metadata(&path).ok()?;
    meta.is_file().then(|| Program {
        kind: Kind::Hook,
        name: hook.file_name().to_string(),
        how: how(meta.permissions().mode()),
        path,
    })
}

/// The actions in `dir`, in byte order of their names (IOhubOS used the bash glob order of the
/// service's locale; with systemd's C locale that is byte order). Hidden names are not matched
/// by the glob; directories and other non-files are reported as skipped.
///
/// `planned`: files a pending live sync would add (`(path, mode)`), so a plan shows them too.
pub fn actions(dir: &Path, planned: &[(PathBuf, u32)]) -> io::Result<(Vec<Program>, Vec<Skipped>)> {
    let mut found: std::collections::BTreeMap<Vec<u8>, (PathBuf, Option<u32>)> = Default::default();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                // Symlinks followed, like `-x`/`-f`; a dangling one is skipped below.
                let mode = fs::metadata(&path)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.permissions().mode());
                found.insert(entry.file_name().into_encoded_bytes(), (path, mode));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for (path, mode) in planned {
        if path.parent() == Some(dir) {
            if let Some(name) = path.file_name() {
                found.insert(
                    name.to_os_string().into_encoded_bytes(),
                    (path.clone(), Some(*mode)),
                );
            }
        }
    }
    let mut programs = Vec::new();
    let mut skipped = Vec::new();
    for (name, (path, mode)) in found {
        if name.starts_with(b".") {
            continue;
        }
        match mode {
            Some(mode) => programs.push(Program {
                kind: Kind::Action,
                name: String::from_utf8_lossy(&name).into_owned(),
                how: how(mode),
                path,
            }),
            None => skipped.push(Skipped {
                path,
                reason: "not a regular file".to_string(),
            }),
        }
    }
    Ok((programs, skipped))
}

fn how(mode: u32) -> How {
    if mode & 0o111 != 0 {
        How::Exec
    } else {
        How::Sh
    }
}

/// Run one program to completion or timeout. It gets `IOHUB_ROOT` and `IOHUB_SYSTEM_ROOT` in
/// its environment and the system root as working directory; stdin is `/dev/null`.
pub async fn run(paths: &Paths, program: &Program, timeout: Duration) -> Ran {
    let command = match program.how {
        How::Exec => Cmd::new(&program.path),
        How::Sh => Cmd::sh(&program.path),
    }
    .env("IOHUB_ROOT", &paths.root)
    .env("IOHUB_SYSTEM_ROOT", &paths.system_root)
    .cwd(&paths.system_root)
    .timeout(timeout);
    let outcome = match program.how {
        How::Exec => cmd::run_file(&command).await,
        How::Sh => cmd::run(&command).await,
    };
    let mut ran = Ran {
        kind: program.kind,
        name: program.name.clone(),
        how: program.how,
        code: None,
        signal: None,
        timed_out: false,
        duration_ms: 0,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        error: None,
    };
    match outcome {
        Ok(out) => {
            ran.code = out.code;
            ran.signal = out.signal;
            ran.timed_out = out.timed_out;
            ran.duration_ms = out.duration_ms;
            ran.stdout_tail = out.stdout_tail;
            ran.stderr_tail = out.stderr_tail;
        }
        Err(e) => ran.error = Some(e.to_string()),
    }
    ran
}
