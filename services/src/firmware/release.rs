//! The signed release manifest of an HTTPS source (iconograph's `manifest.json`, with iohub's
//! keys): `release.json` lists the bundles published beside it, each with its version, size,
//! SHA-256, file name relative to the manifest and rollout share in basis points; `release.json.sig`
//! is the raw ed25519 signature of its bytes by a key the box trusts (the same keys, revocation
//! list and check as a bundle's `manifest.json`: [`Trust::check_signature`]).
//!
//! Pure: parsing, the signature, the names (a bundle's URL stays under the manifest's
//! directory), the rollout gate and the choice of the bundle to take. The poll itself is in
//! `poll`; `iohub-firmware-publish` writes and signs these files.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sys::http::Url;

use super::bundle::{BundleError, KeyRef, Trust, Version};

/// `format` of the manifests this box reads.
pub const FORMAT: u32 = 1;
/// `kind`: what tells a release manifest from a bundle's `manifest.json`.
pub const KIND: &str = "iohub-release";
/// The signature's URL is the manifest's with this suffix.
pub const SIG_SUFFIX: &str = ".sig";
/// A release manifest lists a few bundles; anything larger is not one.
pub const MAX_BYTES: u64 = 1 << 20;
/// 100 % in basis points.
pub const ALL_BP: u16 = 10_000;

/// `release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub format: u32,
    pub kind: String,
    pub key: KeyRef,
    /// When it was published (informational, RFC 3339).
    #[serde(default)]
    pub published: String,
    pub bundles: Vec<ReleaseBundle>,
}

/// One bundle of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBundle {
    pub version: String,
    pub arch: String,
    /// Relative to the manifest's URL, a plain file name or path below it.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// The share of the fleet that takes it, 0-10,000 basis points.
    pub rollout_bp: u16,
}

/// Why a release manifest was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("release manifest: {0}")]
    Signature(BundleError),
    #[error("release manifest: {0}")]
    Bad(String),
    #[error("release manifest: bundle {file:?}: {reason}")]
    Name { file: String, reason: String },
}

impl ReleaseError {
    pub fn to_bus(&self) -> bus_schema::BusError {
        use bus_schema::{BusError, ErrorCode};
        match self {
            ReleaseError::Signature(e) => {
                let mut b = e.to_bus();
                b.message = self.to_string();
                b
            }
            _ => BusError::new(ErrorCode::InvalidValue, self.to_string()),
        }
    }
}

impl Release {
    /// The manifest, once its signature verifies with a trusted, unrevoked key and every entry
    /// is sound (nothing in it is used before that).
    pub fn verify(trust: &Trust, bytes: &[u8], sig: &[u8]) -> Result<Release, ReleaseError> {
        let release: Release =
            serde_json::from_slice(bytes).map_err(|e| ReleaseError::Bad(e.to_string()))?;
        trust
            .check_signature(&release.key, bytes, sig)
            .map_err(ReleaseError::Signature)?;
        if release.format != FORMAT || release.kind != KIND {
            return Err(ReleaseError::Bad(format!(
                "format {} kind {:?}: this box reads format {FORMAT} kind {KIND:?}",
                release.format, release.kind
            )));
        }
        for b in &release.bundles {
            let bad = |reason: String| ReleaseError::Name {
                file: b.file.clone(),
                reason,
            };
            b.version
                .parse::<Version>()
                .map_err(|e| bad(format!("version: {e}")))?;
            if b.rollout_bp > ALL_BP {
                return Err(bad(format!(
                    "rollout_bp {} is more than {ALL_BP}",
                    b.rollout_bp
                )));
            }
            if b.sha256.len() != 64 || !b.sha256.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad("sha256 is not 64 hex digits".into()));
            }
            check_name(&b.file).map_err(bad)?;
        }
        Ok(release)
    }
}

/// A bundle's name: a relative path below the manifest's directory (no scheme, no leading `/`,
/// no `..`, `.`, empty segment, query, fragment, backslash or percent escape).
pub fn check_name(file: &str) -> Result<(), String> {
    if file.is_empty() {
        return Err("empty".into());
    }
    if file.starts_with('/') || file.contains("://") || file.contains(':') {
        return Err("not relative to the manifest".into());
    }
    if file.contains(['?', '#', '\\', '%']) || file.chars().any(|c| c.is_control() || c == ' ') {
        return Err("not a plain path".into());
    }
    if file
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("outside the manifest's directory".into());
    }
    Ok(())
}

/// The URL of `file` next to the manifest at `base`; it must stay under the manifest's directory
/// on the same origin.
pub fn resolve(base: &Url, file: &str) -> Result<Url, String> {
    check_name(file)?;
    let url = base.join(file).map_err(|e| e.to_string())?;
    let dir = base.join("./").map_err(|e| e.to_string())?;
    if url.origin() != base.origin() || !url.as_str().starts_with(dir.as_str()) {
        return Err(format!("{url} is outside {dir}"));
    }
    Ok(url)
}

/// The box's place in the fleet for the rollout gate: the first 8 bytes of SHA-256 of its
/// identity as a number, mod 10,000. Stable (the same identity always lands on the same
/// bucket) and roughly uniform.
pub fn bucket(identity: &[u8]) -> u16 {
    let digest = Sha256::digest(identity);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(ALL_BP)) as u16
}

/// The rollout gate: a box takes part when its bucket is below the share. Monotone: a box in at
/// a share is in at every wider one; 0 keeps every box out, 10,000 lets every box in.
pub fn in_rollout(bucket: u16, rollout_bp: u16) -> bool {
    bucket < rollout_bp
}

/// What a poll decided from a verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The newest bundle for this box's architecture that is newer than the running version.
    pub newest: Option<ReleaseBundle>,
    /// The newest such bundle whose rollout covers this box: the one to take.
    pub take: Option<ReleaseBundle>,
}

/// Pick the bundle to take: newer than `running` (never a downgrade), for `arch`, the box's
/// bucket inside its share; the newest of those.
pub fn choose(release: &Release, running: Version, arch: &str, bucket: u16) -> Choice {
    let mut newer: Vec<(Version, &ReleaseBundle)> = release
        .bundles
        .iter()
        .filter(|b| b.arch == arch)
        .filter_map(|b| b.version.parse::<Version>().ok().map(|v| (v, b)))
        .filter(|(v, _)| *v > running)
        .collect();
    newer.sort_by_key(|b| std::cmp::Reverse(b.0));
    Choice {
        newest: newer.first().map(|(_, b)| (*b).clone()),
        take: newer
            .iter()
            .find(|(_, b)| in_rollout(bucket, b.rollout_bp))
            .map(|(_, b)| (*b).clone()),
    }
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
