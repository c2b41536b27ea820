//! Commit-confirm: a `set` with `confirm_secs` is applied at once like any other, but the files
//! it rewrote are snapshotted first; unless `iohub/cmd/config/confirm` arrives with its token
//! before the deadline, the snapshot is written back and every section re-published, so the
//! network, firewall and routes services return to what worked before (the operator who lost
//! the box gets it back).
//!
//! - One confirm at a time: a `set` while one is pending is refused (`conflict`), so a revert
//!   never undoes a change it did not snapshot.
//! - The pending change is persisted (`runtime/config-confirm.json`, atomic) with a wall-clock
//!   deadline: a daemon restart inside the window, or a reboot, still reverts.
//! - A revert restores each file's text from before the `set` (a file the `set` created is
//!   removed), whatever was written to it since: safety first.

use std::path::PathBuf;

use bus_schema::sections::{ConfigRevert, PendingConfirm};
use bus_schema::{BusError, ErrorCode, PAYLOAD_VERSION};
use serde::{Deserialize, Serialize};

use super::disk::io_error;
use crate::ctx::Paths;
use crate::shared::files::remove_if_present;

/// Longest accepted confirm timeout.
pub const MAX_CONFIRM_SECS: u32 = 3600;
/// File of the pending confirm, under `runtime/`.
pub const CONFIRM_FILE: &str = "config-confirm.json";

/// One file as it was before the `set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub rel: String,
    /// Its text; `None` when the `set` created it.
    pub previous: Option<String>,
    /// Its mode.
    pub mode: u32,
}

/// The persisted pending confirm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub confirm: PendingConfirm,
    pub snapshots: Vec<Snapshot>,
}

impl Pending {
    /// The revert record for `reason`.
    pub fn revert(&self, reason: String, at_ms: u64) -> ConfigRevert {
        ConfigRevert {
            version: PAYLOAD_VERSION,
            token: self.confirm.token.clone(),
            vars: self.confirm.vars.clone(),
            files: self.confirm.files.clone(),
            reason,
            at_ms,
        }
    }
}

/// Check a requested timeout.
pub fn check_timeout(secs: u32) -> Result<u32, BusError> {
    if (1..=MAX_CONFIRM_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(BusError::new(
            ErrorCode::InvalidValue,
            format!("confirm_secs {secs}: must be between 1 and {MAX_CONFIRM_SECS}"),
        )
        .with_field("confirm_secs"))
    }
}

/// A fresh token.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn path(paths: &Paths) -> PathBuf {
    paths.runtime().join(CONFIRM_FILE)
}

/// Snapshot the files about to be rewritten.
pub async fn snapshot(paths: &Paths, rels: &[String]) -> Result<Vec<Snapshot>, BusError> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for rel in rels {
        let file = paths.root(rel);
        let (previous, mode) = match tokio::fs::read_to_string(&file).await {
            Ok(text) => {
                let meta = tokio::fs::metadata(&file)
                    .await
                    .map_err(|e| io_error(rel, e))?;
                (Some(text), meta.permissions().mode() & 0o7777)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0o644),
            Err(e) => return Err(io_error(rel, e).with_field(rel.as_str())),
        };
        out.push(Snapshot {
            rel: rel.clone(),
            previous,
            mode,
        });
    }
    Ok(out)
}

/// Persist the pending confirm (before the `set` writes anything).
pub async fn save(paths: &Paths, pending: &Pending) -> Result<(), BusError> {
    let bytes = serde_json::to_vec_pretty(pending).map_err(|e| io_error(CONFIRM_FILE, e))?;
    sys::fs::atomic_write_async(path(paths), bytes, 0o600)
        .await
        .map_err(|e| io_error(CONFIRM_FILE, e))
}

/// The pending confirm left by an earlier run, if any.
pub async fn load(paths: &Paths) -> Result<Option<Pending>, BusError> {
    match tokio::fs::read(path(paths)).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(path(paths).display(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path(paths).display(), e)),
    }
}

/// Forget the pending confirm (confirmed or reverted).
pub async fn clear(paths: &Paths) -> Result<(), BusError> {
    remove_if_present(path(paths)).await.map(|_| ())
}

/// Write every snapshot back; returns the files restored.
pub async fn restore(paths: &Paths, pending: &Pending) -> Result<Vec<String>, BusError> {
    let mut restored = Vec::new();
    for s in &pending.snapshots {
        let file = paths.root(&s.rel);
        match &s.previous {
            Some(text) => sys::fs::atomic_write_async(file, text.as_bytes().to_vec(), s.mode)
                .await
                .map_err(|e| io_error(&s.rel, e).with_field(s.rel.as_str()))?,
            None => {
                remove_if_present(file)
                    .await
                    .map_err(|e| e.with_field(s.rel.as_str()))?;
            }
        }
        restored.push(s.rel.clone());
    }
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_outside_one_second_to_an_hour_are_refused_naming_the_field() {
        assert_eq!(check_timeout(60), Ok(60));
        for bad in [0, MAX_CONFIRM_SECS + 1] {
            let e = check_timeout(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("confirm_secs"));
        }
    }

    #[tokio::test]
    async fn a_snapshot_restores_changed_files_and_removes_created_ones() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path().join("sys"));
        std::fs::create_dir_all(paths.runtime()).unwrap();
        let env = dir.path().join("envvars");
        sys::fs::atomic_write(&env, b"IOHUBOS_A=1\n", 0o640).unwrap();
        let rels = vec!["envvars".to_string(), "envvars.d/new".to_string()];
        let snapshots = snapshot(&paths, &rels).await.unwrap();
        let pending = Pending {
            confirm: PendingConfirm {
                token: token(),
                vars: vec!["IOHUBOS_A".into()],
                files: rels.clone(),
                timeout_secs: 5,
                deadline_ms: 0,
            },
            snapshots,
        };
        save(&paths, &pending).await.unwrap();
        assert_eq!(load(&paths).await.unwrap(), Some(pending.clone()));

        sys::fs::atomic_write(&env, b"IOHUBOS_A=2\n", 0o644).unwrap();
        std::fs::create_dir_all(dir.path().join("envvars.d")).unwrap();
        sys::fs::atomic_write(&dir.path().join("envvars.d/new"), b"x", 0o644).unwrap();
        assert_eq!(restore(&paths, &pending).await.unwrap(), rels);
        assert_eq!(std::fs::read_to_string(&env).unwrap(), "IOHUBOS_A=1\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!dir.path().join("envvars.d/new").exists());
        clear(&paths).await.unwrap();
        assert_eq!(load(&paths).await.unwrap(), None);
    }
}
