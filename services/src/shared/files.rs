//! Planned files and directories (what a plan shows: path, octal mode, content with secret
//! placeholders) and their effects, run off the async workers through [`sys::fs`]: only what
//! differs is written, so applying the same plan twice changes nothing.

use std::path::{Path, PathBuf};

use bus_schema::{BusError, ErrorCode};
use serde::Serialize;
use tokio::sync::mpsc;

/// A directory the apply makes sure of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDir {
    pub path: PathBuf,
    /// Octal, e.g. `0700`.
    pub mode: String,
}

impl PlannedDir {
    pub fn new(path: &Path, mode: u32) -> PlannedDir {
        PlannedDir {
            path: path.to_path_buf(),
            mode: format!("{mode:04o}"),
        }
    }

    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o700)
    }
}

/// A file the apply writes (atomically, only when its content or mode differs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFile {
    pub path: PathBuf,
    /// Octal, e.g. `0600`.
    pub mode: String,
    /// The content; secrets appear as `<VARIABLE>` placeholders (the apply fills them in).
    pub content: String,
}

impl PlannedFile {
    pub fn new(path: PathBuf, mode: u32, content: String) -> PlannedFile {
        PlannedFile {
            path,
            mode: format!("{mode:04o}"),
            content,
        }
    }

    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o600)
    }
}

/// An I/O failure as a bus error: `<what>: <error>`.
pub fn io_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, format!("{what}: {e}"))
}

/// Run blocking work (file I/O, fsync) off the async workers. A panic in it propagates, so the
/// supervisor reports it like a panic of the service itself.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BusError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => Ok(t),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io_error("blocking task", e)),
    }
}

/// Create the directories that are missing and fix the mode of the others.
pub async fn ensure_dirs(dirs: &[PlannedDir]) -> Result<(), BusError> {
    let dirs = dirs.to_vec();
    blocking(move || {
        for d in &dirs {
            let mode = d.mode_bits();
            if d.path.is_dir() {
                sys::fs::set_mode(&d.path, mode).map_err(|e| io_error("chmod", e))?;
            } else {
                if let Some(parent) = d.path.parent() {
                    sys::fs::ensure_dir(parent).map_err(|e| io_error("mkdir", e))?;
                }
                sys::fs::create_dir(&d.path, mode).map_err(|e| io_error("mkdir", e))?;
            }
        }
        Ok(())
    })
    .await?
}

/// Write `content` to `path` with `mode` unless it is already exactly that. Returns whether
/// the file changed.
pub async fn write_if_changed(
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
) -> Result<bool, BusError> {
    blocking(move || {
        sys::fs::write_if_changed(&path, &content, mode).map_err(|e| io_error("write", e))
    })
    .await?
}

/// Write a planned file whose content has no placeholders.
pub async fn write_planned(file: &PlannedFile) -> Result<bool, BusError> {
    write_if_changed(
        file.path.clone(),
        file.content.clone().into_bytes(),
        file.mode_bits(),
    )
    .await
}

/// Remove a file if it exists. Returns whether it existed.
pub async fn remove_if_present(path: PathBuf) -> Result<bool, BusError> {
    blocking(move || sys::fs::remove_file(&path).map_err(|e| io_error("remove", e))).await?
}

/// Point the symlink `link` at `target` unless it already does (never missing meanwhile).
/// Returns whether it changed.
pub async fn replace_symlink(link: PathBuf, target: PathBuf) -> Result<bool, BusError> {
    blocking(move || sys::fs::replace_symlink(&link, &target).map_err(|e| io_error("symlink", e)))
        .await?
}

/// Watch one directory (created if missing): the receiver gets a message (coalesced, at most 8
/// queued) whenever an entry in it changes. Keep the watcher alive as long as the receiver.
pub fn watch_dir(dir: &Path) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), BusError> {
    use notify::Watcher;
    sys::fs::ensure_dir(dir).map_err(|e| io_error("mkdir", e))?;
    let (tx, rx) = mpsc::channel(8);
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| io_error("inotify", e))?;
    w.watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| io_error(format!("watch {}", dir.display()), e))?;
    Ok((w, rx))
}
