//! The nftables boundary: load one JSON transaction with `nft -j -f -` (run through
//! [`super::cmd`]: own process group, timeout, bounded stderr tail for the error) and read back
//! one table as JSON.
//!
//! A transaction is atomic in the kernel: when `nft` refuses any part of it (a bad element, a
//! missing interface type, a kernel error) nothing changes and the previous ruleset stays
//! exactly as it was. The read-back goes through the `nftables` crate's helper, which keeps the
//! whole output (a 10,000-forward table is ~1 MB of JSON, far beyond the command runner's
//! output tail); it spawns `nft -j list table FAMILY NAME` itself, so it runs on a blocking
//! thread. Both run `nft` in the daemon's own network namespace.

use std::time::Duration;

/// The nftables crate's JSON schema, for the pure plans that build a ruleset as data.
pub use nftables::{batch, expr, schema, stmt, types};

use super::cmd::{self, Cmd};

/// The `nft` program.
pub const NFT: &str = "nft";

/// A load or a read that did not work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    /// `nft` could not be started.
    #[error("cannot run nft: {0}")]
    Spawn(String),
    /// `nft` refused the transaction (nothing was changed).
    #[error("nft refused the ruleset (nothing changed): {0}")]
    Refused(String),
    /// `nft` did not finish in time (its process group was killed).
    #[error("nft did not finish within {0:?}")]
    Timeout(Duration),
    /// The read-back could not be parsed.
    #[error("reading back the table: {0}")]
    ReadBack(String),
}

/// How long a load may take (10,000 forwards take ~0.1 s; a busy box much more).
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Load a JSON transaction (`{"nftables": [...]}`) in one atomic `nft -j -f -`.
/// Returns how long `nft` took, in ms.
pub async fn load(json: &str) -> Result<u64, NftError> {
    let cmd = Cmd::new(NFT)
        .args(["-j", "-f", "-"])
        .stdin(json.as_bytes().to_vec())
        .timeout(LOAD_TIMEOUT);
    let out = cmd::run(&cmd)
        .await
        .map_err(|e| NftError::Spawn(e.to_string()))?;
    if out.timed_out {
        return Err(NftError::Timeout(LOAD_TIMEOUT));
    }
    if !out.success() {
        let why = out.stderr_tail.trim();
        let why = if why.is_empty() {
            format!("exit {:?}, signal {:?}", out.code, out.signal)
        } else {
            why.to_string()
        };
        return Err(NftError::Refused(why));
    }
    Ok(out.duration_ms)
}

/// The JSON listing of one table (`nft -j list table FAMILY NAME`), `None` when it does not
/// exist.
pub async fn list_table(family: &str, name: &str) -> Result<Option<String>, NftError> {
    let (family, name) = (family.to_string(), name.to_string());
    let res = tokio::task::spawn_blocking(move || {
        nftables::helper::get_current_ruleset_raw(
            Some(NFT),
            ["list", "table", family.as_str(), name.as_str()],
        )
    })
    .await
    .map_err(|e| NftError::ReadBack(e.to_string()))?;
    match res {
        Ok(json) => Ok(Some(json)),
        Err(nftables::helper::NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(nftables::helper::NftablesError::NftExecution { inner, .. }) => {
            Err(NftError::Spawn(inner.to_string()))
        }
        Err(e) => Err(NftError::ReadBack(e.to_string())),
    }
}
