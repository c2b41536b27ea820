//! Self-upgrade from an HTTPS source (iconograph): fetch the release manifest and its signature,
//! verify them before using anything in them, choose the bundle ([`release::choose`]: newer than
//! the running version, inside its rollout share), and download it resumably into
//! `<root>/runtime/firmware/download/` (`<file>.part` grows with `Range` requests across
//! restarts; once it has the manifest's size and SHA-256 it is renamed to `<file>`). The install
//! itself is the drop's path (verify the bundle, write the other slot, arm a trial).
//!
//! TLS ([`sys::http::Fetcher`]): the pinned CA bundle only when one is set (else the system's),
//! and the client certificate when one is set. The same client serves
//! `iohub/cmd/firmware/install {url}`.

use std::path::{Path, PathBuf};

use bus_schema::{BusError, ErrorCode};
use serde::Serialize;
use sys::http::{Fetcher, TlsFiles, Url};

use super::bundle::{Trust, Version};
use super::config::UpgraderConfig;
use super::release::{self, Release, ReleaseBundle};
use super::Layout;
use crate::ctx::Paths;

/// The system's CA bundle, used when no CA is pinned.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The box's identity for the rollout gate.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// `facts.upgrader` of `iohub/state/firmware`: the last poll of the HTTPS source.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PollFacts {
    pub url: String,
    /// When the last poll ended (ms since the epoch).
    pub last_poll_ms: u64,
    /// `up-to-date`, `not-in-rollout`, `already-installed`, `downloaded`, `would-download`
    /// (plan-only), `refused`, `failed`.
    pub result: String,
    /// The newest bundle newer than the running version, and its rollout share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_bp: Option<u16>,
    /// This box's bucket (0-9999) and whether it is inside the share.
    pub bucket: u16,
    pub in_rollout: bool,
    /// The download of the last poll: bytes that were on disk at its start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BusError>,
}

/// The HTTPS client of the configured source, its CA and client certificate read now.
pub fn fetcher(paths: &Paths, config: &UpgraderConfig) -> Result<Fetcher, BusError> {
    let read = |field: &str, p: &str| {
        let path = file_path(paths, p);
        std::fs::read(&path).map_err(|e| {
            BusError::new(ErrorCode::Io, format!("{}: {e}", path.display())).with_field(field)
        })
    };
    let roots_pem = match &config.ca {
        Some(ca) => read("IOHUBOS_UPGRADER_CA", ca)?,
        None => read("IOHUBOS_UPGRADER_CA", SYSTEM_CA)?,
    };
    let client = match (&config.cert, &config.key) {
        (Some(c), Some(k)) => Some((
            read("IOHUBOS_UPGRADER_CERT", c)?,
            read("IOHUBOS_UPGRADER_KEY", k)?,
        )),
        _ => None,
    };
    Fetcher::new(&TlsFiles { roots_pem, client })
        .map_err(|e| BusError::new(ErrorCode::InvalidValue, e.to_string()))
}

/// A configured file: relative to the data root, or absolute under the system root.
pub fn file_path(paths: &Paths, p: &str) -> PathBuf {
    if p.starts_with('/') {
        paths.system(p)
    } else {
        paths.root(p)
    }
}

/// The rollout bucket of this box (`/etc/machine-id`); a box without one is placed last
/// (9,999: only a rollout to every box takes it).
pub fn identity_bucket(paths: &Paths) -> u16 {
    match std::fs::read_to_string(paths.system(MACHINE_ID)) {
        Ok(id) if !id.trim().is_empty() => release::bucket(id.trim().as_bytes()),
        _ => release::ALL_BP - 1,
    }
}

/// What a poll found; `bundle` is the downloaded file to install.
pub struct Polled {
    pub facts: PollFacts,
    pub bundle: Option<(PathBuf, ReleaseBundle)>,
}

/// One poll (module docs). `other_slot` is the version the other slot holds, valid: a bundle of
/// that version is not downloaded again. `refused` are the SHA-256 of bundles refused before.
#[allow(clippy::too_many_arguments)]
pub async fn poll(
    paths: &Paths,
    layout: &Layout,
    config: &UpgraderConfig,
    running: &str,
    other_slot: Option<String>,
    refused: &[String],
    plan_only: bool,
    progress: impl FnMut(&ReleaseBundle, u64) + Send,
) -> Polled {
    let url = config.url.clone().unwrap_or_default();
    let mut facts = PollFacts {
        url: url.clone(),
        bucket: identity_bucket(paths),
        ..PollFacts::default()
    };
    let result = poll_inner(
        paths, layout, config, running, other_slot, refused, plan_only, &mut facts, progress,
    )
    .await;
    facts.last_poll_ms = crate::ctx::now_ms();
    match result {
        Ok(bundle) => Polled { facts, bundle },
        Err(e) => {
            if facts.result.is_empty() {
                facts.result = "failed".into();
            }
            facts.error = Some(e);
            Polled {
                facts,
                bundle: None,
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn poll_inner(
    paths: &Paths,
    layout: &Layout,
    config: &UpgraderConfig,
    running: &str,
    other_slot: Option<String>,
    refused: &[String],
    plan_only: bool,
    facts: &mut PollFacts,
    mut progress: impl FnMut(&ReleaseBundle, u64) + Send,
) -> Result<Option<(PathBuf, ReleaseBundle)>, BusError> {
    let base = Url::parse(&facts.url).map_err(|e| {
        BusError::new(ErrorCode::InvalidValue, format!("{}: {e}", facts.url))
            .with_field("IOHUBOS_UPGRADER_URL")
    })?;
    let client = fetcher(paths, config)?;
    let http = |e: sys::http::HttpError| BusError::new(ErrorCode::Unavailable, e.to_string());
    let bytes = client
        .get_bytes(&base, release::MAX_BYTES)
        .await
        .map_err(http)?;
    let mut sig_url = base.clone();
    sig_url.set_path(&format!("{}{}", base.path(), release::SIG_SUFFIX));
    let sig = client.get_bytes(&sig_url, 64).await.map_err(http)?;
    let keys = layout.keys.clone();
    let trust = tokio::task::spawn_blocking(move || Trust::load(&keys).0)
        .await
        .unwrap_or_default();
    let verified = Release::verify(&trust, &bytes, &sig);
    let release = verified.map_err(|e| {
        facts.result = "refused".into();
        e.to_bus()
    })?;
    let running: Version = running.parse().unwrap_or(Version([0; 4]));
    let choice = release::choose(&release, running, super::bundle::this_arch(), facts.bucket);
    facts.newest = choice.newest.as_ref().map(|b| b.version.clone());
    facts.rollout_bp = choice.newest.as_ref().map(|b| b.rollout_bp);
    facts.in_rollout = choice
        .newest
        .as_ref()
        .is_some_and(|b| release::in_rollout(facts.bucket, b.rollout_bp));
    let Some(take) = choice.take else {
        facts.result = if choice.newest.is_some() {
            "not-in-rollout"
        } else {
            "up-to-date"
        }
        .into();
        return Ok(None);
    };
    if other_slot.as_deref() == Some(take.version.as_str()) {
        facts.result = "already-installed".into();
        return Ok(None);
    }
    if refused.contains(&take.sha256) {
        facts.result = "refused".into();
        return Err(BusError::new(
            ErrorCode::Unauthorized,
            format!(
                "{} (version {}) was refused before; waiting for another release",
                take.file, take.version
            ),
        ));
    }
    let url = release::resolve(&base, &take.file)
        .map_err(|e| BusError::new(ErrorCode::InvalidValue, format!("{}: {e}", take.file)))?;
    if plan_only {
        // Plan-only writes nothing, not even a download.
        facts.result = "would-download".into();
        return Ok(None);
    }
    let name = take
        .file
        .rsplit('/')
        .next()
        .unwrap_or("bundle.tgz")
        .to_string();
    let dir = paths.root("runtime/firmware/download");
    let done = dir.join(&name);
    if matches_file(&done, take.size, &take.sha256).await {
        facts.result = "downloaded".into();
        return Ok(Some((done, take)));
    }
    let part = dir.join(format!("{name}.part"));
    let d = dir.clone();
    tokio::task::spawn_blocking(move || sys::fs::ensure_dir(&d))
        .await
        .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?
        .map_err(|e| BusError::new(ErrorCode::Io, format!("{}: {e}", dir.display())))?;
    let t = take.clone();
    let got = client
        .download(&url, &part, Some(take.size), |n| progress(&t, n))
        .await
        .map_err(http)?;
    facts.resumed_from = Some(got.resumed_from);
    if !matches_file(&part, take.size, &take.sha256).await {
        let _ = sys::fs::remove_file(&part);
        facts.result = "refused".into();
        return Err(BusError::new(
            ErrorCode::InvalidValue,
            format!(
                "{url}: the downloaded bytes do not have the manifest's SHA-256 {}; removed, fetched again at the next poll",
                take.sha256
            ),
        ));
    }
    sys::fs::rename(&part, &done)
        .map_err(|e| BusError::new(ErrorCode::Io, format!("{}: {e}", done.display())))?;
    facts.result = "downloaded".into();
    Ok(Some((done, take)))
}

/// `path` has `size` bytes whose SHA-256 is `sha256`.
async fn matches_file(path: &Path, size: u64, sha256: &str) -> bool {
    let (path, sha256) = (path.to_path_buf(), sha256.to_ascii_lowercase());
    tokio::task::spawn_blocking(move || {
        super::publish::sha256_file(&path).is_ok_and(|(n, h)| n == size && h == sha256)
    })
    .await
    .unwrap_or(false)
}

/// `iohub/cmd/firmware/install {url}`: download the bundle at `url` (its own signature is what
/// vouches for it) into the download directory, with the source's TLS settings.
pub async fn download_url(
    paths: &Paths,
    config: &UpgraderConfig,
    url: &str,
    progress: impl FnMut(u64) + Send,
) -> Result<PathBuf, BusError> {
    let parsed = Url::parse(url)
        .ok()
        .filter(|u| u.scheme() == "https")
        .ok_or_else(|| {
            BusError::new(
                ErrorCode::InvalidValue,
                format!("{url}: not an https:// URL"),
            )
            .with_field("url")
        })?;
    let name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .filter(|n| release::check_name(n).is_ok())
        .unwrap_or_else(|| "bundle.tgz".into());
    let client = fetcher(paths, config)?;
    let dir = paths.root("runtime/firmware/download");
    let d = dir.clone();
    tokio::task::spawn_blocking(move || sys::fs::ensure_dir(&d))
        .await
        .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?
        .map_err(|e| BusError::new(ErrorCode::Io, format!("{}: {e}", dir.display())))?;
    let part = dir.join(format!("{name}.cmd.part"));
    let _ = sys::fs::remove_file(&part);
    client
        .download(&parsed, &part, None, progress)
        .await
        .map_err(|e| BusError::new(ErrorCode::Unavailable, e.to_string()))?;
    let done = dir.join(&name);
    sys::fs::rename(&part, &done)
        .map_err(|e| BusError::new(ErrorCode::Io, format!("{}: {e}", done.display())))?;
    Ok(done)
}
