//! The slots: which one is booted, what each holds (read without mounting, with ext4-view), and
//! writing a verified bundle into the other one.
//!
//! A slot is written in this order, so that a power cut (or `kill -9` of iohubd) at any moment
//! leaves it unbootable and visibly invalid, and the booted slot untouched:
//! 1. its first 64 KiB are zeroed and fsynced: no ext4 superblock, no label, nothing GRUB's
//!    `search --label` or the initramfs would find;
//! 2. the verified bundle is extracted into a staging directory on the data partition
//!    (`runtime/firmware/staging`), each file checked again against the signed manifest;
//! 3. `mkfs.ext4 -L IOHUB_WRITING -d <staging> <device>` makes the file system with the bundle's
//!    files in one go (no mount, no loop device; the slot's device is a partition on the box and
//!    an image file in tests), then the device is fsynced;
//! 4. every file is read back from the device (ext4-view: the file system as written, not the
//!    staging copy) and its size and SHA-256 compared with the manifest;
//! 5. only then is the label set to `IOHUB_<S>` (`e2label`, one superblock write) and fsynced.
//!
//! A slot is valid when its label is `IOHUB_<S>` and it holds a `manifest.json`; the label is the
//! commit point of an install, and a slot labelled `IOHUB_WRITING` (or with no file system) is an
//! install that did not finish.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ext4_view::Ext4;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::bundle::{self, BundleError, Manifest, Verified, MANIFEST, SIGNATURE};
use super::grubenv::Slot;

/// The label of a slot being written.
pub const WRITING_LABEL: &str = "IOHUB_WRITING";
/// How much of a slot is zeroed before it is written.
const INVALIDATE_BYTES: usize = 64 << 10;
/// Bound of `mkfs.ext4` on a slow disk.
const MKFS_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The slot `/proc/cmdline` names: `iohub.slot=A|B`, else the original's `iohub-boot1|2`.
pub fn booted(cmdline: &str) -> Option<Slot> {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    words
        .iter()
        .find_map(|w| w.strip_prefix("iohub.slot=").and_then(Slot::parse))
        .or_else(|| {
            words.iter().find_map(|w| match *w {
                "iohub-boot1" => Some(Slot::A),
                "iohub-boot2" => Some(Slot::B),
                _ => None,
            })
        })
}

/// What a slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SlotInfo {
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// SHA-256 of the slot's `manifest.json` (the bundle's identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Why the slot is not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

fn open(device: &Path) -> Result<Ext4, String> {
    let file = std::fs::File::open(device).map_err(|e| format!("{}: {e}", device.display()))?;
    Ext4::load(Box::new(file))
        .map_err(|e| format!("{}: no ext4 file system ({e})", device.display()))
}

/// Read what `slot` holds on `device`, without mounting it.
pub fn inspect(device: &Path, slot: Slot) -> SlotInfo {
    let fs = match open(device) {
        Ok(fs) => fs,
        Err(problem) => {
            return SlotInfo {
                problem: Some(problem),
                ..SlotInfo::default()
            }
        }
    };
    let label = fs.label().to_str().ok().map(str::to_string);
    let version = fs
        .read("/VERSION")
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned());
    let manifest = fs.read(format!("/{MANIFEST}").as_str()).ok();
    let problem = if label.as_deref() != Some(slot.label().as_str()) {
        Some(format!(
            "labelled {:?}, not {} (an install that did not finish)",
            label.as_deref().unwrap_or(""),
            slot.label()
        ))
    } else if manifest.is_none() {
        Some(format!(
            "no {MANIFEST} (not written by the firmware service)"
        ))
    } else {
        None
    };
    SlotInfo {
        valid: problem.is_none(),
        version,
        label,
        manifest_sha256: manifest.map(|m| hex::encode(Sha256::digest(m))),
        problem,
    }
}

/// Check every file of `manifest` (and the manifest itself) on `device`, reading it back.
pub fn read_back(device: &Path, manifest: &Manifest, manifest_sha256: &str) -> Result<(), String> {
    let fs = open(device)?;
    let check = |name: &str, size: Option<u64>, sha: &str| -> Result<(), String> {
        let mut file = fs
            .open(format!("/{name}").as_str())
            .map_err(|e| format!("{name} not readable from the slot: {e}"))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("{name}: reading it back: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        let found = hex::encode(hasher.finalize());
        if size.is_some_and(|s| s != total) || !found.eq_ignore_ascii_case(sha) {
            return Err(format!(
                "{name} read back from the slot differs from the manifest ({total} bytes, SHA-256 {found})"
            ));
        }
        Ok(())
    };
    for (name, entry) in &manifest.files {
        check(name, Some(entry.size), &entry.sha256)?;
    }
    check(MANIFEST, None, manifest_sha256)?;
    fs.read(format!("/{SIGNATURE}").as_str())
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| format!("{SIGNATURE} not readable from the slot"))?;
    Ok(())
}

/// Why an install failed (the booted slot is untouched either way).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{0}")]
    Slot(String),
}

/// Where an install writes.
#[derive(Debug, Clone)]
pub struct Target {
    pub slot: Slot,
    pub device: PathBuf,
    /// A directory on the data partition, emptied before and after.
    pub staging: PathBuf,
}

/// The steps of an install, for progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Extracting,
    Writing,
    ReadingBack,
}

/// Write the verified bundle at `bundle_path` into `target` (module docs). `progress` gets the
/// step and the compressed bytes read while extracting.
pub async fn install(
    bundle_path: &Path,
    verified: &Verified,
    target: &Target,
    progress: impl Fn(Step, u64) + Send + Sync + Clone + 'static,
) -> Result<(), InstallError> {
    let slot_err = |what: &str, e: &dyn std::fmt::Display| {
        InstallError::Slot(format!("{what} {}: {e}", target.device.display()))
    };
    {
        let (device, staging) = (target.device.clone(), target.staging.clone());
        let (bundle_path, verified) = (bundle_path.to_path_buf(), verified.clone());
        let progress = progress.clone();
        blocking(move || {
            sys::fs::overwrite_in_place(&device, 0, &[0u8; INVALIDATE_BYTES])
                .map_err(|e| InstallError::Slot(format!("invalidating the slot: {e}")))?;
            sys::fs::remove_dir_all(&staging)
                .and_then(|_| sys::fs::ensure_dir(&staging))
                .map_err(|e| InstallError::Slot(format!("staging directory: {e}")))?;
            let file = std::fs::File::open(&bundle_path)
                .map_err(|e| BundleError::Io(format!("{}: {e}", bundle_path.display())))?;
            bundle::extract(
                std::io::BufReader::with_capacity(1 << 20, file),
                &verified,
                &staging,
                Box::new(move |n| progress(Step::Extracting, n)),
            )?;
            Ok(())
        })
        .await?;
    }
    progress(Step::Writing, 0);
    let mkfs = sys::cmd::Cmd::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-L",
            WRITING_LABEL,
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(&target.staging)
        .arg(&target.device)
        .timeout(MKFS_TIMEOUT);
    run_ok(&mkfs)
        .await
        .map_err(|e| slot_err("mkfs.ext4 on", &e))?;
    progress(Step::ReadingBack, 0);
    {
        let device = target.device.clone();
        let (manifest, sha) = (verified.manifest.clone(), verified.manifest_sha256.clone());
        blocking(move || {
            sync(&device)?;
            read_back(&device, &manifest, &sha).map_err(InstallError::Slot)
        })
        .await?;
    }
    let label = sys::cmd::Cmd::new("e2label")
        .arg(&target.device)
        .arg(target.slot.label());
    run_ok(&label).await.map_err(|e| slot_err("e2label", &e))?;
    let (device, staging) = (target.device.clone(), target.staging.clone());
    blocking(move || {
        sync(&device)?;
        sys::fs::remove_dir_all(&staging)
            .map_err(|e| InstallError::Slot(format!("staging directory: {e}")))?;
        Ok(())
    })
    .await
}

fn sync(device: &Path) -> Result<(), InstallError> {
    std::fs::File::open(device)
        .and_then(|f| f.sync_all())
        .map_err(|e| InstallError::Slot(format!("fsync {}: {e}", device.display())))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InstallError> + Send + 'static,
) -> Result<T, InstallError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InstallError::Slot(format!("install task: {e}")))?
}

async fn run_ok(cmd: &sys::cmd::Cmd) -> Result<(), String> {
    let out = sys::cmd::run(cmd).await.map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "exit {:?}{}: {}",
            out.code,
            if out.timed_out { " (timed out)" } else { "" },
            out.stderr_tail.trim()
        ))
    }
}

#[cfg(test)]
#[path = "slot_tests.rs"]
mod tests;
