//! The config service's file I/O: reads off the async workers, writes only through
//! [`crate::sys::fs`].

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bus_schema::{BusError, ErrorCode};

use super::generations::{Ledger, LEDGER_FILE, LEDGER_VERSION};
use super::load::{self, Loaded, LAYER_DIR};
use crate::ctx::Paths;
use crate::sys;

/// Mode of a variable file created by `set` (the original's files are 0644).
const NEW_FILE_MODE: u32 = 0o644;

pub fn io_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, format!("{what}: {e}"))
}

/// Load the root as it is on disk, with `overrides` (path relative to the root -> text) standing
/// in for files (a dry run of an edit).
pub async fn load(paths: &Paths, overrides: BTreeMap<String, String>) -> Result<Loaded, BusError> {
    let root = paths.root.clone();
    let version_file = paths.firmware_lib().join("version");
    tokio::task::spawn_blocking(move || load_blocking(&root, &version_file, &overrides))
        .await
        .map_err(|e| io_error("config load task", e))
}

fn load_blocking(root: &Path, version_file: &Path, overrides: &BTreeMap<String, String>) -> Loaded {
    let mut errors = Vec::new();
    let version_text = match read_text(version_file) {
        Ok(text) => text,
        Err(e) => {
            errors.push(io_error(load::VERSION_FILE, e).with_field(load::VERSION_FILE));
            None
        }
    };
    let layer_names = list_layers(&root.join(LAYER_DIR));
    let canonical_root = root.canonicalize().ok();
    let mut read = |rel: &str| -> Option<String> {
        if let Some(text) = overrides.get(rel) {
            return Some(text.clone());
        }
        match read_under(root, canonical_root.as_deref(), rel) {
            Ok(text) => text,
            Err(e) => {
                errors.push(io_error(rel, e).with_field(rel));
                None
            }
        }
    };
    let mut loaded = load::load(version_text.as_deref(), layer_names.as_deref(), &mut read);
    loaded.errors.extend(errors);
    loaded
}

/// Entries of `envvars.d` (plain files and links to them); `None` when it is not a directory.
fn list_layers(dir: &Path) -> Option<Vec<String>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Some(names)
}

/// A file's text; `Ok(None)` when it does not exist.
fn read_text(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Read `rel` under the root, refusing anything that resolves (through links) outside it.
fn read_under(root: &Path, canonical_root: Option<&Path>, rel: &str) -> io::Result<Option<String>> {
    let path = root.join(rel);
    if let (Some(croot), Ok(real)) = (canonical_root, path.canonicalize()) {
        if !real.starts_with(croot) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "resolves outside the root; not read",
            ));
        }
    }
    read_text(&path)
}

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
