//! The ssh service's effects, in `Backend::Live` only: directories, files (through
//! [`sys::fs::atomic_write`], only when their content or mode differs, so applying the same
//! config twice changes nothing), the host key (`ssh-keygen` through [`sys::cmd`], once per
//! box), and `sshd -t` before sshd is (re)started. Files and directories go through
//! [`crate::shared::files`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::{BusError, ErrorCode};
use sha2::{Digest, Sha256};

use super::config::base64_decode;
use super::plan::SSH_KEYGEN;
use crate::shared::files::{blocking, io_error, remove_if_present};

use sys::cmd::Cmd;

/// How long `ssh-keygen` and `sshd -t` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

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
        sys::fs::rename(&pub_path(&tmp), &pub_path(&key))?;
        sys::fs::rename(&tmp, &key)
    })
    .await?
    .map_err(|e| io_error("rename", e))?;
    Ok(true)
}

/// `SHA256:<base64>` of a public key file, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &Path) -> Option<String> {
    let text = std::fs::read_to_string(pub_path(key)).ok()?;
    let blob = base64_decode(text.split_whitespace().nth(1)?)?;
    use base64::Engine;
    let digest = Sha256::digest(&blob);
    Some(format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
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
    use std::os::unix::fs::PermissionsExt;

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

    fn which(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    }
}
