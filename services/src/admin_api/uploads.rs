//! Uploaded archives: written atomically (temp, fsync, rename) under `<root>/runtime/uploads/`,
//! mode 0600, with a fresh name, before the owning service is asked to take them. The owner
//! (the deployer) consumes and removes them.

use std::path::PathBuf;

use crate::ctx::{now_ms, Paths};

/// `<root>/runtime/uploads`.
pub fn dir(paths: &Paths) -> PathBuf {
    paths.runtime().join("uploads")
}

/// Store `bytes` as `<prefix>-<ms>-<random>.zip`; returns the absolute path.
pub async fn store(paths: &Paths, prefix: &str, bytes: Vec<u8>) -> std::io::Result<PathBuf> {
    let dir = dir(paths);
    let mkdir = dir.clone();
    tokio::task::spawn_blocking(move || sys::fs::ensure_dir(&mkdir))
        .await
        .map_err(std::io::Error::other)??;
    let name = format!("{prefix}-{}-{:08x}.zip", now_ms(), rand::random::<u32>());
    let path = dir.join(name);
    sys::fs::atomic_write_async(path.clone(), bytes, 0o600).await?;
    Ok(path)
}
