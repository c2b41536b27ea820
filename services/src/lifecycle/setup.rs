//! First-start setup of the data root and the per-start seeding (SPEC §2.2 step 4, §3.2).
//!
//! Runs in both backends: it only touches the data root, and iohubd itself needs the tree.
//! Blocking: call it from `spawn_blocking`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bus_schema::envvars::{layer_version, parse_version};
use serde::Serialize;

use crate::ctx::Paths;

/// Directories made on the first start (when `setup.done` is missing).
pub const FIRST_START_DIRS: [&str; 5] = [
    "deploy",
    "firmware",
    "live",
    "runtime/iohub-bootstrap",
    "runtime/iohub-registry",
];

/// The marker of a completed first start.
pub const SETUP_DONE: &str = "setup.done";

/// Default files created when missing, mode 0644, with IOhubOS 1.1.3's exact content.
pub const DEFAULT_FILES: [(&str, &str); 3] = [
    ("forwards-tcp", "# SRC_PORT=DST_IP:DST_PORT\n"),
    ("forwards-udp", "# SRC_PORT=DST_IP:DST_PORT\n"),
    (
        "routes",
        "# DESTINATION/NETMASK:GATEWAY\n# e.g. 192.168.152.0/24:10.11.12.100\n",
    ),
];

/// New files get the source's permission bits masked like `cp`/rsync do under the umask of a
/// system service (022). A constant, not the process umask: reading that one means setting it.
pub const UMASK: u32 = 0o022;

/// What setup found and did. Paths are relative to the data root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SetupReport {
    /// `setup.done` was missing: the first-start steps ran.
    pub first_start: bool,
    /// The running firmware version (`/usr/lib/iohub/version`), if readable.
    pub version: Option<String>,
    /// Directories and files created, in order.
    pub created: Vec<String>,
    /// `envvars.d` layers copied from the firmware.
    pub seeded: Vec<String>,
    /// Firmware layers not copied because they are newer than the running version.
    pub newer_skipped: Vec<String>,
    pub warnings: Vec<String>,
}

/// Run first-start setup (if `setup.done` is missing), then the seeding that happens on every
/// start: `envvars.d` from the firmware's layers up to the running version, and the default
/// `forwards-tcp`, `forwards-udp`, `routes`. Existing files are never overwritten.
pub fn run(paths: &Paths) -> io::Result<SetupReport> {
    let mut report = SetupReport::default();
    sys::fs::ensure_dir(&paths.root)?;
    let lib = paths.firmware_lib();

    report.first_start = missing(&paths.root(SETUP_DONE));
    if report.first_start {
        for dir in FIRST_START_DIRS {
            let path = paths.root(dir);
            if missing(&path) {
                sys::fs::ensure_dir(&path)?;
                report.created.push(dir.to_string());
            }
        }
        let defaults = lib.join("envvars");
        if defaults.is_file() && missing(&paths.root("envvars")) {
            sys::fs::atomic_copy(&defaults, &paths.root("envvars"), new_mode(&defaults)?)?;
            report.created.push("envvars".to_string());
        }
        sys::fs::touch_marker(&paths.root(SETUP_DONE))?;
        report.created.push(SETUP_DONE.to_string());
    }

    let layers_dir = paths.root("envvars.d");
    if missing(&layers_dir) {
        sys::fs::ensure_dir(&layers_dir)?;
        report.created.push("envvars.d".to_string());
    }
    report.version = match fs::read_to_string(lib.join("version")) {
        Ok(text) => running_version(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    match report.version.as_deref().and_then(parse_version) {
        Some(running) => seed_layers(&lib.join("envvars.d"), &layers_dir, running, &mut report)?,
        None => report.warnings.push(format!(
            "{}: no usable IOHUBOS_VERSION; no envvars.d layer seeded",
            lib.join("version").display()
        )),
    }

    for (name, content) in DEFAULT_FILES {
        let path = paths.root(name);
        if missing(&path) {
            sys::fs::atomic_write(&path, content.as_bytes(), 0o644)?;
            report.created.push(name.to_string());
        }
    }
    Ok(report)
}

/// Copy each `*.*.*-envvars` of the firmware whose version is <= `running` and whose name does
/// not exist in `to` yet.
fn seed_layers(
    from: &Path,
    to: &Path,
    running: [u64; 4],
    report: &mut SetupReport,
) -> io::Result<()> {
    let entries = match fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut layers = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(version) = layer_version(&name) {
            // `[[ -f ]]`: a regular file, symlinks followed.
            if entry.path().is_file() {
                layers.push((version, name));
            }
        }
    }
    layers.sort();
    for (version, name) in layers {
        if version > running {
            report.newer_skipped.push(name);
            continue;
        }
        let target = to.join(&name);
        if missing(&target) {
            let source = from.join(&name);
            sys::fs::atomic_copy(&source, &target, new_mode(&source)?)?;
            report.seeded.push(name);
        }
    }
    Ok(())
}

/// The mode `cp` gives a new copy of `source`.
fn new_mode(source: &Path) -> io::Result<u32> {
    Ok(fs::metadata(source)?.permissions().mode() & 0o777 & !UMASK)
}

/// Nothing (not even a dangling symlink) is at `path`.
fn missing(path: &Path) -> bool {
    fs::symlink_metadata(path).is_err()
}

/// `IOHUBOS_VERSION=x.y.z` (quoted or not, no trailing newline needed) -> `x.y.z`.
fn running_version(text: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let value = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let value = value.strip_prefix("IOHUBOS_VERSION=")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_version_is_read_from_the_firmware_version_file() {
        assert_eq!(
            running_version("IOHUBOS_VERSION=1.1.3"),
            Some("1.1.3".into())
        );
        assert_eq!(
            running_version("# c\nIOHUBOS_VERSION=\"1.2.0\"\n"),
            Some("1.2.0".into())
        );
        assert_eq!(running_version("IOHUBOS_VERSION="), None);
        assert_eq!(running_version("OTHER=1"), None);
    }
}
