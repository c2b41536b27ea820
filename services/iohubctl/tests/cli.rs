//! The `iohubctl` binary as a user meets it without a daemon: its help names every command, and
//! a root without a running iohubd is a clear error, not a hang. (Building this test also builds
//! the binary that the workspace's end-to-end tests run.)
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // a test runs the program it tests

use std::process::Command;

fn iohubctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_iohubctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_help_names_every_command_and_the_dry_run() {
    let (ok, out, _) = iohubctl(&["--help"]);
    assert!(ok);
    for command in ["status", "get", "set", "confirm", "plan", "events", "watch"] {
        assert!(out.contains(command), "{command} missing from:\n{out}");
    }
    let (ok, out, _) = iohubctl(&["set", "--help"]);
    assert!(
        ok && out.contains("--dry-run") && out.contains("--confirm"),
        "{out}"
    );
}

#[test]
fn a_root_without_a_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let (ok, _, err) = iohubctl(&["--root", root, "--timeout", "1", "status"]);
    assert!(!ok);
    assert!(
        err.contains("control.json") && err.contains("is iohubd running"),
        "{err}"
    );
}
