//! The config service's own file I/O: the variable files it rewrites and its generations
//! ledger, written only through [`sys::fs`]. Reading the variable files is [`crate::vars`].

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bus_schema::BusError;

use super::generations::{Ledger, LEDGER_FILE, LEDGER_VERSION};
use crate::ctx::Paths;

/// Mode of a variable file created by `set` (the original's files are 0644).
const NEW_FILE_MODE: u32 = 0o644;

pub use crate::shared::files::io_error;

/// Rewrite one variable file atomically, keeping its mode; a file that receives a secret loses
/// its group/other permissions.
pub async fn write_var_file(
    root: &Path,
    rel: &str,
    text: &str,
    secret: bool,
) -> Result<(), BusError> {
    let path = root.join(rel);
    let mode = match tokio::fs::metadata(&path).await {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => NEW_FILE_MODE,
        Err(e) => return Err(io_error(rel, e).with_field(rel)),
    };
    let mode = if secret { mode & !0o077 } else { mode };
    sys::fs::atomic_write_async(path, text.as_bytes().to_vec(), mode)
        .await
        .map_err(|e| io_error(rel, e).with_field(rel))
}

fn ledger_path(paths: &Paths) -> PathBuf {
    paths.runtime().join(LEDGER_FILE)
}

/// The persisted generations; a missing file is an empty ledger, an unreadable one is an error
/// (the caller starts from an empty ledger and reports it).
pub async fn read_ledger(paths: &Paths) -> Result<Ledger, BusError> {
    let path = ledger_path(paths);
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(io_error(path.display(), e)),
    };
    let ledger: Ledger = serde_json::from_str(&text).map_err(|e| io_error(path.display(), e))?;
    if ledger.version != LEDGER_VERSION {
        return Err(io_error(
            path.display(),
            format!("unknown ledger version {}", ledger.version),
        ));
    }
    Ok(ledger)
}

/// Persist the generations atomically.
pub async fn write_ledger(paths: &Paths, ledger: &Ledger) -> Result<(), BusError> {
    let path = ledger_path(paths);
    let bytes = serde_json::to_vec_pretty(ledger).map_err(|e| io_error(path.display(), e))?;
    let dir = paths.runtime();
    tokio::task::spawn_blocking(move || sys::fs::ensure_dir(&dir))
        .await
        .map_err(|e| io_error("runtime dir task", e))?
        .map_err(|e| io_error(paths.runtime().display(), e))?;
    sys::fs::atomic_write_async(path.clone(), bytes, 0o644)
        .await
        .map_err(|e| io_error(path.display(), e))
}
