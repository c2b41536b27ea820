//! Docker fixtures shared by the docker tests and the benchmark: whether dockerd answers, an
//! offline busybox image made with `docker import` (nothing is ever pulled), and clean-up of the
//! containers, networks and images a test created.
//!
//! The image is a tar of `/bin/busybox` (Debian's busybox-static) plus one symlink per applet,
//! imported as `iohub-test/busybox:<tag>` with `CMD ["/bin/sh"]` and `PATH=/bin`. Tests use a
//! tag of their own so that removing it never affects another test running at the same time.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The repository of the images [`busybox_image`] imports.
pub const BUSYBOX_REPO: &str = "iohub-test/busybox";

/// Does dockerd answer? Like [`crate::require_program`]: under `CI=true` a missing `docker`
/// CLI or a daemon that does not answer fails the test; elsewhere the caller skips.
pub fn docker_available() -> bool {
    if !crate::require_program("docker") {
        return false;
    }
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    let ok = matches!(&out, Ok(o) if o.status.success());
    if !ok {
        let why = match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            !crate::ci(),
            "dockerd does not answer under CI=true (scripts/test.sh starts it): {why}"
        );
        eprintln!("skipping: dockerd does not answer: {why}");
    }
    ok
}

/// Import (once per process and tag) an offline busybox image and return its reference,
/// `iohub-test/busybox:<tag>`. Panics when busybox-static or dockerd is missing: call
/// [`docker_available`] first.
pub fn busybox_image(tag: &str) -> String {
    static DONE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = done.get(tag) {
        return r.clone();
    }
    let reference = format!("{BUSYBOX_REPO}:{tag}");
    import_busybox(&reference);
    done.insert(tag.to_string(), reference.clone());
    reference
}

fn import_busybox(reference: &str) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file(),
        "/bin/busybox missing: install busybox-static (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::create_dir_all(rootfs.join("www")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    assert!(list.status.success(), "busybox --list failed");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar of the busybox rootfs failed");
    let out = Command::new("docker")
        .args(["import", "-c", r#"CMD ["/bin/sh"]"#, "-c", "ENV PATH=/bin"])
        .arg(&tar)
        .arg(reference)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker import {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker <args>`, returning (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Remove, forcefully, every container whose compose project label is `project` or whose name
/// starts with `project`, then the networks of that project. Errors are ignored (clean-up).
pub fn remove_project(project: &str) {
    let mut ids = Vec::new();
    for filter in [
        format!("label=com.docker.compose.project={project}"),
        format!("name=^/?{project}"),
    ] {
        let (_, out, _) = docker(&["ps", "-aq", "--filter", &filter]);
        ids.extend(out.lines().map(str::to_string));
    }
    ids.sort();
    ids.dedup();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args);
    }
    let (_, nets, _) = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    for net in nets.lines() {
        docker(&["network", "rm", net]);
    }
}

/// Remove an image reference (errors ignored: clean-up).
pub fn remove_image(reference: &str) {
    docker(&["rmi", "-f", reference]);
}

/// Removes compose projects, then networks, then images when dropped (also on panic).
#[derive(Debug, Default)]
pub struct DockerCleanup {
    pub projects: Vec<String>,
    pub images: Vec<String>,
    pub networks: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for p in &self.projects {
            remove_project(p);
        }
        for n in &self.networks {
            docker(&["network", "rm", n]);
        }
        for i in &self.images {
            remove_image(i);
        }
    }
}
