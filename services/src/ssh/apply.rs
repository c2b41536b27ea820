//! The ssh service's effects, in `Backend::Live` only: directories, files (through
//! [`sys::fs::atomic_write`], only when their content or mode differs, so applying the same
//! config twice changes nothing), the host key (`ssh-keygen` through [`sys::cmd`], once per
//! box), and `sshd -t` before sshd is (re)started. The file helpers are shared with the `wifi`
//! and `system` services.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::{BusError, ErrorCode};
use sha2::{Digest, Sha256};

use super::config::base64_decode;
use super::plan::{PlannedDir, PlannedFile, SSH_KEYGEN};
use crate::sys;
use crate::sys::cmd::Cmd;

/// How long `ssh-keygen` and `sshd -t` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn io_error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, format!("{what}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_error("blocking task", e))?
}

/// Create the directories that are missing and fix the mode of the others.
pub async fn ensure_dirs(dirs: &[PlannedDir]) -> Result<(), BusError> {
    let dirs = dirs.to_vec();
    blocking(move || {
        for d in &dirs {
            let mode = u32::from_str_radix(&d.mode, 8).unwrap_or(0o700);
            match std::fs::metadata(&d.path) {
                Ok(m) if m.is_dir() => {
                    if m.permissions().mode() & 0o7777 != mode {
                        std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| io_error(d.path.display(), e))?;
                    }
                }
                _ => {
                    if let Some(parent) = d.path.parent() {
                        sys::fs::ensure_dir(parent).map_err(|e| io_error("mkdir", e))?;
                    }
                    sys::fs::create_dir(&d.path, mode).map_err(|e| io_error("mkdir", e))?;
                }
            }
        }
        Ok(())
    })
    .await
}

/// Write `content` to `path` with `mode` unless it is already exactly that. Returns whether
/// the file changed.
pub async fn write_if_changed(
    path: PathBuf,
    content: Vec<u8>,
    mode: u32,
) -> Result<bool, BusError> {
    blocking(move || {
        let same = std::fs::read(&path).is_ok_and(|old| old == content)
            && std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode);
        if same {
            return Ok(false);
        }
        sys::fs::atomic_write(&path, &content, mode).map_err(|e| io_error("write", e))?;
        Ok(true)
    })
    .await
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
    blocking(move || match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path.display(), e)),
    })
    .await
}

fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn non_empty(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// Generate the ed25519 host key at `key` unless it (and its `.pub`) exist. The new pair is
/// made under a temporary name next to it and renamed into place, public key first, so a
/// power cut never leaves a half-written private key under the real name. Returns whether a
/// key was generated.
pub async fn ensure_host_key(key: &Path) -> Result<bool, BusError> {
    if non_empty(key) && non_empty(&pub_path(key)) {
        return Ok(false);
    }
    let dir = key.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = key
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.new"));
    remove_if_present(tmp.clone()).await?;
    remove_if_present(pub_path(&tmp)).await?;
    let out = sys::cmd::run(
        &Cmd::new(SSH_KEYGEN)
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "iohub host key",
                "-f",
            ])
            .arg(&tmp)
            .timeout(TOOL_TIMEOUT),
    )
    .await
    .map_err(|e| io_error("ssh-keygen", e))?;
    if !out.success() {
        return Err(io_error(
            "ssh-keygen",
            format!("exit {:?}: {}", out.code, out.stderr_tail.trim()),
        ));
    }
    let key = key.to_path_buf();
    blocking(move || {
        std::fs::rename(pub_path(&tmp), pub_path(&key)).map_err(|e| io_error("rename", e))?;
        std::fs::rename(&tmp, &key).map_err(|e| io_error("rename", e))?;
        Ok(())
    })
    .await?;
    Ok(true)
}

/// `SHA256:<base64>` of a public key file, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &Path) -> Option<String> {
    let text = std::fs::read_to_string(pub_path(key)).ok()?;
    let blob = base64_decode(text.split_whitespace().nth(1)?)?;
    Some(format!("SHA256:{}", base64_encode(&Sha256::digest(&blob))))
}

/// Standard base64 without padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Run a checking tool (`sshd -t -f ...`); its complaint is the error.
pub async fn check(argv: &[String], what: &str) -> Result<(), BusError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let out = sys::cmd::run(&Cmd::new(program).args(args).timeout(TOOL_TIMEOUT))
        .await
        .map_err(|e| io_error(program, e))?;
    if out.success() {
        return Ok(());
    }
    let why = if out.stderr_tail.trim().is_empty() {
        out.stdout_tail.trim().to_string()
    } else {
        out.stderr_tail.trim().to_string()
    };
    Err(BusError::new(
        ErrorCode::Internal,
        format!("{what} was refused by `{}`: {why}", argv.join(" ")),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_host_key_is_generated_once_and_kept() {
        if which(SSH_KEYGEN).is_none() {
            assert!(
                std::env::var("CI").is_err(),
                "ssh-keygen is required under CI"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ssh_host_ed25519_key");
        assert!(ensure_host_key(&key).await.unwrap());
        let first = std::fs::read(&key).unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!ensure_host_key(&key).await.unwrap());
        assert_eq!(std::fs::read(&key).unwrap(), first);
        // Our fingerprint is ssh-keygen's.
        let out = sys::cmd::run(&Cmd::new(SSH_KEYGEN).arg("-l").arg("-f").arg(pub_path(&key)))
            .await
            .unwrap();
        let fp = fingerprint(&key).unwrap();
        assert!(out.stdout_tail.contains(&fp), "{} vs {fp}", out.stdout_tail);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[tokio::test]
    async fn writing_the_same_content_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert!(write_if_changed(p.clone(), b"x".to_vec(), 0o600)
            .await
            .unwrap());
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap());
        assert!(!write_if_changed(p.clone(), b"x".to_vec(), 0o600)
            .await
            .unwrap());
        assert_eq!(
            ino,
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&p).unwrap())
        );
        assert!(write_if_changed(p.clone(), b"x".to_vec(), 0o644)
            .await
            .unwrap());
        assert_eq!(base64_encode(b"foob"), "Zm9vYg");
    }

    fn which(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    }
}
