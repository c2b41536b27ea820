//! `iohub-firmware-publish`: the release manifest of a directory of bundles, built and signed
//! (so no one edits signed JSON by hand). Each `*.tgz` bundle's own `manifest.json` gives its
//! version and architecture; the file's size and SHA-256 are computed. The rollout share of a
//! bundle comes from `--rollout-bp` (the newest bundle) or `--rollout VERSION=BP`, else from the
//! `release.json` already in the directory (widening a rollout re-signs it), else 0 for a new
//! bundle: nothing reaches a box until a share is given.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use super::bundle::{key_id, spki_der, KeyRef, Manifest, Version, MANIFEST};
use super::release::{Release, ReleaseBundle, FORMAT, KIND, SIG_SUFFIX};

/// The manifest's file name in the directory.
pub const RELEASE_FILE: &str = "release.json";

/// An ed25519 signing key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pub id: String,
    pub development: bool,
}

impl SigningKey {
    pub fn from_pem(text: &str, development: bool) -> Result<SigningKey, String> {
        use base64::Engine;
        let body: String = text
            .lines()
            .skip_while(|l| l.trim() != "-----BEGIN PRIVATE KEY-----")
            .skip(1)
            .take_while(|l| l.trim() != "-----END PRIVATE KEY-----")
            .map(str::trim)
            .collect();
        if body.is_empty() {
            return Err("no PRIVATE KEY block (an ed25519 key in PKCS#8 PEM)".into());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("bad base64: {e}"))?;
        SigningKey::from_pkcs8(&der, development)
    }

    pub fn from_pkcs8(der: &[u8], development: bool) -> Result<SigningKey, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| format!("not an ed25519 private key: {e}"))?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| "not an ed25519 key")?;
        Ok(SigningKey {
            id: key_id(&spki_der(&raw)),
            pair,
            development,
        })
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.pair.sign(bytes).as_ref().to_vec()
    }

    pub fn key_ref(&self) -> KeyRef {
        KeyRef {
            id: self.id.clone(),
            development: self.development,
        }
    }
}

/// The manifest's bytes and their signature.
pub fn sign(release: &Release, key: &SigningKey) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = serde_json::to_vec_pretty(release).unwrap_or_default();
    bytes.push(b'\n');
    let sig = key.sign(&bytes);
    (bytes, sig)
}

/// How the shares are set.
#[derive(Debug, Clone, Default)]
pub struct Shares {
    /// `--rollout-bp`: the newest bundle's share.
    pub newest: Option<u16>,
    /// `--rollout VERSION=BP`.
    pub by_version: BTreeMap<String, u16>,
}

/// The version and architecture a bundle's `manifest.json` names (read, not verified: the box
/// verifies the bundle itself).
pub fn bundle_manifest(path: &Path) -> Result<Manifest, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar
        .entries()
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        let mut entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.trim_start_matches("./") == MANIFEST {
            let mut text = Vec::new();
            entry
                .by_ref()
                .take(16 << 20)
                .read_to_end(&mut text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            return serde_json::from_slice(&text)
                .map_err(|e| format!("{}: {MANIFEST}: {e}", path.display()));
        }
    }
    Err(format!("{}: no {MANIFEST}", path.display()))
}

/// The size and SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// The release of the bundles in `dir` (`*.tgz`, `*.tar.gz`), newest first.
pub fn build(
    dir: &Path,
    key: &SigningKey,
    shares: &Shares,
    published: &str,
) -> Result<Release, String> {
    let previous: BTreeMap<String, u16> = std::fs::read(dir.join(RELEASE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Release>(&b).ok())
        .map(|r| {
            r.bundles
                .into_iter()
                .map(|b| (b.file, b.rollout_bp))
                .collect()
        })
        .unwrap_or_default();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && (n.ends_with(".tgz") || n.ends_with(".tar.gz")))
        .collect();
    names.sort();
    let mut bundles = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let m = bundle_manifest(&path)?;
        let version: Version = m.version.parse().map_err(|e| format!("{name}: {e}"))?;
        let (size, sha256) = sha256_file(&path)?;
        bundles.push((
            version,
            ReleaseBundle {
                version: m.version.clone(),
                arch: m.build.arch.clone(),
                file: name.clone(),
                size,
                sha256,
                rollout_bp: previous.get(&name).copied().unwrap_or(0),
            },
        ));
    }
    if bundles.is_empty() {
        return Err(format!("{}: no bundle (*.tgz) to publish", dir.display()));
    }
    bundles.sort_by_key(|b| std::cmp::Reverse(b.0));
    for (i, (_, b)) in bundles.iter_mut().enumerate() {
        if let Some(bp) = shares.by_version.get(&b.version) {
            b.rollout_bp = *bp;
        } else if i == 0 {
            if let Some(bp) = shares.newest {
                b.rollout_bp = bp;
            }
        }
    }
    for (v, bp) in &shares.by_version {
        if *bp > super::release::ALL_BP {
            return Err(format!("--rollout {v}={bp}: more than 10000"));
        }
        if !bundles.iter().any(|(_, b)| &b.version == v) {
            return Err(format!("--rollout {v}={bp}: no bundle of version {v}"));
        }
    }
    if shares.newest.is_some_and(|bp| bp > super::release::ALL_BP) {
        return Err("--rollout-bp: more than 10000".into());
    }
    Ok(Release {
        format: FORMAT,
        kind: KIND.into(),
        key: key.key_ref(),
        published: published.to_string(),
        bundles: bundles.into_iter().map(|(_, b)| b).collect(),
    })
}

/// Build, sign and write `release.json` and `release.json.sig` into `dir` (atomically).
pub fn publish(
    dir: &Path,
    key: &SigningKey,
    shares: &Shares,
    published: &str,
) -> Result<Release, String> {
    let release = build(dir, key, shares, published)?;
    let (bytes, sig) = sign(&release, key);
    let sig_name = format!("{RELEASE_FILE}{SIG_SUFFIX}");
    // The signature first: a reader between the two renames sees the old manifest with the new
    // signature and refuses it (then the next poll takes the new pair), never a wrong one used.
    sys::fs::atomic_write(&dir.join(sig_name), &sig, 0o644).map_err(|e| e.to_string())?;
    sys::fs::atomic_write(&dir.join(RELEASE_FILE), &bytes, 0o644).map_err(|e| e.to_string())?;
    Ok(release)
}
