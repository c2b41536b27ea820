//! Effects of the deployer (blocking: callers use `spawn_blocking`): read a zip's central
//! directory, stage its apps, swap them into place, and file refused zips under
//! `deploy/rejected/`.
//!
//! Install of one zip, all apps or none:
//! 1. every app is extracted into `<root>/docker/apps/.staging-<app>-<rand>` (same filesystem as
//!    the target, so the renames below are atomic); every entry's bytes are counted while
//!    reading, and an entry that yields more (or fewer) bytes than it declared, or a total above
//!    the limit, aborts the install (zip bombs that lie about their sizes);
//! 2. `start.sh` gets mode 755, except in an app the user disabled (its current `start.sh` is a
//!    regular file without any execute bit): the new one keeps the old mode;
//! 3. files and directories of the current app dir that the zip does not hold (bind-volume data
//!    under `volumes/`, a user's `.env`) are moved into the staged tree, like `unzip -o` kept
//!    them; moving a directory keeps its inode, so a running container's bind mount follows it;
//! 4. the current app dir is renamed to `.old-<app>-<rand>`, the staged one renamed into place,
//!    the old one removed.
//!
//! A failure before step 4 removes every staging dir and leaves the apps untouched. Leftovers of a
//! crash are repaired by [`recover`] at start: staging dirs are removed, an `.old-` dir whose app
//! dir is missing is renamed back.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::plan::{EntryMeta, Limits, Manifest};
use crate::shared::apps::{app_enabled, APPS_DIR, ENABLED_MODE, START_SH};

/// Where refused zips go, under the root.
pub const REJECTED_DIR: &str = "deploy/rejected";

/// Why a zip cannot be read or installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("not a readable zip: {0}")]
    Zip(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("entry `{entry}` {message}")]
    Entry { entry: String, message: String },
}

/// Read the central directory of a zip. Only a regular file is a zip here: a symlink in
/// `deploy/` (which could point anywhere, `/etc/shadow` say) is refused without being opened.
pub fn read_entries(zip: &Path) -> Result<Vec<EntryMeta>, InstallError> {
    if !fs::symlink_metadata(zip)?.is_file() {
        return Err(InstallError::Zip(
            "not a regular file (a symlink or special file is never opened)".into(),
        ));
    }
    let file = fs::File::open(zip)?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| InstallError::Zip(e.to_string()))?;
    let mut out = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let f = archive
            .by_index_raw(index)
            .map_err(|e| InstallError::Zip(format!("entry {index}: {e}")))?;
        let name = match f.name() {
            Ok(n) => n.into_owned(),
            Err(_) => String::from_utf8_lossy(f.name_raw()).into_owned(),
        };
        out.push(EntryMeta {
            index,
            dir_name: name.ends_with('/'),
            name,
            unix_mode: f.unix_mode(),
            size: f.size(),
            encrypted: f.encrypted(),
        });
    }
    Ok(out)
}

/// The mode `start.sh` of `app` gets: 755, or the current mode when the user disabled the app.
pub fn start_sh_mode(app_dir: &Path) -> u32 {
    match fs::symlink_metadata(app_dir.join(START_SH)) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 == 0 => {
            m.permissions().mode() & 0o777
        }
        _ => ENABLED_MODE,
    }
}

/// One installed app.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Installed {
    pub app: String,
    pub files: usize,
    pub bytes: u64,
    /// `start.sh` kept a non-executable mode: the user disabled the app.
    pub disabled: bool,
    /// Whether an app of that name was replaced.
    pub replaced: bool,
}

/// Install every app of a validated zip (see the module docs).
pub fn install(
    root: &Path,
    zip: &Path,
    manifest: &Manifest,
    limits: &Limits,
) -> Result<Vec<Installed>, InstallError> {
    let apps_dir = root.join(APPS_DIR);
    sys::fs::ensure_dir(&apps_dir)?;
    let file = fs::File::open(zip)?;
    let mut archive = zip::ZipArchive::new(io::BufReader::new(file))
        .map_err(|e| InstallError::Zip(e.to_string()))?;

    let mut staged: Vec<(String, PathBuf, Installed)> = Vec::new();
    let mut total: u64 = 0;
    let result = (|| -> Result<(), InstallError> {
        for (app, files) in &manifest.apps {
            let target = apps_dir.join(app);
            let staging = apps_dir.join(format!(".staging-{app}-{:016x}", rand::random::<u64>()));
            sys::fs::create_dir(&staging, 0o755)?;
            staged.push((
                app.clone(),
                staging.clone(),
                Installed {
                    app: app.clone(),
                    files: files.files.len(),
                    bytes: 0,
                    disabled: false,
                    replaced: target.exists(),
                },
            ));
            for d in &files.dirs {
                sys::fs::ensure_dir(&staging.join(d))?;
            }
            let start_mode = start_sh_mode(&target);
            let mut bytes_app = 0;
            for f in &files.files {
                let entry_name = format!("docker/apps/{app}/{}", f.rel);
                let mut entry = archive.by_index(f.index).map_err(|e| InstallError::Entry {
                    entry: entry_name.clone(),
                    message: format!("cannot be read: {e}"),
                })?;
                let mut buf = Vec::with_capacity(usize::try_from(f.size.min(1 << 20)).unwrap_or(0));
                (&mut entry)
                    .take(f.size.saturating_add(1))
                    .read_to_end(&mut buf)
                    .map_err(|e| InstallError::Entry {
                        entry: entry_name.clone(),
                        message: format!("cannot be read: {e}"),
                    })?;
                let got = buf.len() as u64;
                if got != f.size {
                    return Err(InstallError::Entry {
                        entry: entry_name,
                        message: format!(
                            "holds {} bytes but declares {} (a zip bomb?)",
                            if got > f.size {
                                format!("more than {}", f.size)
                            } else {
                                got.to_string()
                            },
                            f.size
                        ),
                    });
                }
                total += got;
                if total > limits.max_total_bytes {
                    return Err(InstallError::Entry {
                        entry: entry_name,
                        message: format!("brings the total past {} bytes", limits.max_total_bytes),
                    });
                }
                bytes_app += got;
                let mode = if f.rel == START_SH {
                    start_mode
                } else {
                    f.mode
                };
                let dst = staging.join(&f.rel);
                if let Some(parent) = dst.parent() {
                    sys::fs::ensure_dir(parent)?;
                }
                sys::fs::atomic_write(&dst, &buf, mode)?;
            }
            if let Some(last) = staged.last_mut() {
                last.2.bytes = bytes_app;
                // Without a start.sh in the zip the app keeps the one it has, or has none.
                last.2.disabled = if files.files.iter().any(|f| f.rel == START_SH) {
                    start_mode & 0o111 == 0
                } else {
                    !app_enabled(&target)
                };
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (_, staging, _) in &staged {
            let _ = sys::fs::remove_dir_all(staging);
        }
        return Err(e);
    }

    let mut installed = Vec::new();
    for (app, staging, info) in staged {
        let target = apps_dir.join(&app);
        if target.is_dir() {
            carry_over(&target, &staging)?;
        }
        // An existing app dir goes to `.old-<app>-<rand>` (what `recover` looks for), a file or
        // a symlink where the app dir goes is replaced.
        if let Some(old) = sys::fs::swap_dir(&staging, &target)? {
            tracing::warn!(path = %old.display(), "old app dir not removed");
        }
        installed.push(info);
    }
    Ok(installed)
}

/// Move what `old` has and `new` lacks into `new` (recursively into directories both have).
fn carry_over(old: &Path, new: &Path) -> io::Result<()> {
    for e in fs::read_dir(old)? {
        let e = e?;
        let from = e.path();
        let to = new.join(e.file_name());
        match fs::symlink_metadata(&to) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => sys::fs::rename(&from, &to)?,
            Ok(m) if m.is_dir() && e.file_type()?.is_dir() => carry_over(&from, &to)?,
            _ => {} // the zip's version wins
        }
    }
    Ok(())
}

/// Repair leftovers of an interrupted install (see the module docs). Returns what was done.
pub fn recover(root: &Path) -> Vec<String> {
    let apps_dir = root.join(APPS_DIR);
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(&apps_dir) else {
        return done;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(".staging-") {
            if sys::fs::remove_dir_all(&path).is_ok() {
                done.push(format!("removed {name}"));
            }
        } else if let Some(rest) = name.strip_prefix(".old-") {
            // `.old-<app>-<16 hex>`
            let Some((app, _)) = rest.rsplit_once('-') else {
                continue;
            };
            let target = apps_dir.join(app);
            if target.exists() {
                if sys::fs::remove_dir_all(&path).is_ok() {
                    done.push(format!("removed {name}"));
                }
            } else if sys::fs::rename(&path, &target).is_ok() {
                done.push(format!("restored {app} from {name}"));
            }
        }
    }
    done
}

/// Move a refused zip to `deploy/rejected/<name>` with `<name>.reason.txt` next to it. Returns
/// the new path (relative to the root).
pub fn reject(root: &Path, zip: &Path, reason: &str) -> io::Result<String> {
    let dir = root.join(REJECTED_DIR);
    sys::fs::ensure_dir(&dir)?;
    let name = zip
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload.zip".into());
    let reason_path = dir.join(format!("{name}.reason.txt"));
    sys::fs::atomic_write(&reason_path, reason.as_bytes(), 0o644)?;
    let dst = dir.join(&name);
    sys::fs::rename(zip, &dst)?;
    Ok(format!("{REJECTED_DIR}/{name}"))
}

/// Remove an installed zip.
pub fn remove_zip(zip: &Path) -> io::Result<()> {
    sys::fs::remove_file(zip).map(|_| ())
}
