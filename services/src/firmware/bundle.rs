//! Firmware bundles (`distro/README.md`, "Firmware bundle and signed manifest"): the trusted
//! keys, the signed manifest, and the streaming check of a `iohub-<V>-firmware.tgz`.
//!
//! A bundle is accepted only when, in one pass over the gzip tar and before anything is written:
//! - `manifest.json` parses (format 1) and `manifest.sig` is a raw 64-byte ed25519 signature over
//!   its exact bytes by a key of [`Trust`] (any of several trusted at once, so keys rotate) whose
//!   id is not revoked;
//! - every entry is a regular file (or a directory holding listed files) at a plain relative
//!   path, listed in the manifest with its size and SHA-256, and every listed file is there;
//! - the slot's files (`VERSION`, `vmlinuz`, `initrd`, `live/filesystem.squashfs`) are listed,
//!   `VERSION` says the manifest's version, the build's `arch` is this box's, and the version is
//!   not older than the running one unless a downgrade was asked for ([`Policy`]).
//!
//! [`extract`] then writes the files of a verified bundle into a staging directory, checking
//! each file's size and SHA-256 again while it streams (the file may have changed in between).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;

use bus_schema::{BusError, ErrorCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The files a slot needs to boot (SPEC §4.7).
pub const SLOT_FILES: [&str; 4] = ["VERSION", "vmlinuz", "initrd", "live/filesystem.squashfs"];
/// A manifest is a few hundred kB (the package list); anything much larger is not one.
const MANIFEST_MAX: u64 = 16 << 20;
/// The revocation list in the keys directory: one key id a line, `#` comments.
pub const REVOKED_FILE: &str = "revoked";
/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a bundle was refused. The message names the file or key concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a complete gzip tar (truncated or corrupt): {0}")]
    Archive(String),
    #[error("the bundle has no {MANIFEST}")]
    NoManifest,
    #[error("the bundle is not signed: no {SIGNATURE}")]
    Unsigned,
    #[error("{SIGNATURE} is {0} bytes, not the 64 of an ed25519 signature")]
    SignatureSize(u64),
    #[error("{MANIFEST}: {0}")]
    BadManifest(String),
    #[error("signed by key {0}, which this box does not trust")]
    UnknownKey(String),
    #[error("signed by key {0}, which is revoked")]
    RevokedKey(String),
    #[error("the signature does not verify with key {0}")]
    BadSignature(String),
    #[error("{path}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("{0} is in the bundle but not in the manifest")]
    Unlisted(String),
    #[error("{0} is in the manifest but not in the bundle")]
    MissingFile(String),
    #[error("{path}: {found} bytes, the manifest says {expected}")]
    Size {
        path: String,
        found: u64,
        expected: u64,
    },
    #[error("{path}: SHA-256 {found}, the manifest says {expected}")]
    Hash {
        path: String,
        found: String,
        expected: String,
    },
    #[error("version {bundle} is older than the running {running}; a downgrade must be asked for explicitly")]
    Downgrade { bundle: Version, running: Version },
    #[error("built for {bundle}, this box is {running}")]
    Arch { bundle: String, running: String },
    #[error("VERSION says {file:?}, the manifest {manifest:?}")]
    VersionFile { file: String, manifest: String },
    #[error("{0}")]
    Io(String),
}

impl BundleError {
    /// A short stable name of the reason (the refused bundle's file name suffix, events).
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Archive(_) => "corrupt",
            BundleError::NoManifest | BundleError::BadManifest(_) => "bad-manifest",
            BundleError::Unsigned | BundleError::SignatureSize(_) => "unsigned",
            BundleError::UnknownKey(_) => "unknown-key",
            BundleError::RevokedKey(_) => "revoked-key",
            BundleError::BadSignature(_) => "bad-signature",
            BundleError::BadEntry { .. } | BundleError::Unlisted(_) => "unlisted-file",
            BundleError::MissingFile(_) => "missing-file",
            BundleError::Size { .. } | BundleError::Hash { .. } => "bad-hash",
            BundleError::Downgrade { .. } => "downgrade",
            BundleError::Arch { .. } | BundleError::VersionFile { .. } => "incompatible",
            BundleError::Io(_) => "io",
        }
    }

    /// The error as published on the bus.
    pub fn to_bus(&self) -> BusError {
        let code = match self {
            BundleError::Io(_) => ErrorCode::Io,
            BundleError::Downgrade { .. } | BundleError::Arch { .. } => ErrorCode::Conflict,
            BundleError::UnknownKey(_)
            | BundleError::RevokedKey(_)
            | BundleError::BadSignature(_)
            | BundleError::Unsigned
            | BundleError::SignatureSize(_) => ErrorCode::Unauthorized,
            _ => ErrorCode::InvalidValue,
        };
        BusError::new(code, self.to_string())
    }
}

fn io_err(e: io::Error) -> BundleError {
    // gzip and tar report a cut-off stream as an I/O error of the reader.
    if matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
    ) || e.to_string().contains("corrupt")
    {
        BundleError::Archive(e.to_string())
    } else {
        BundleError::Io(e.to_string())
    }
}

/// A firmware version: one to four dot-separated numbers, compared numerically (`1.10` > `1.9`),
/// missing components being 0 (as the original's envvars.d filter, SPEC §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub [u64; 4]);

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.is_empty() || parts.len() > 4 {
            return Err(format!("version {s:?} is not 1 to 4 dot-separated numbers"));
        }
        let mut v = [0u64; 4];
        for (slot, part) in v.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("version {s:?} is not 1 to 4 dot-separated numbers"));
            }
            *slot = part
                .parse()
                .map_err(|_| format!("version {s:?}: {part} is too large"))?;
        }
        Ok(Version(v))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        if d == 0 {
            write!(f, "{a}.{b}.{c}")
        } else {
            write!(f, "{a}.{b}.{c}.{d}")
        }
    }
}

/// The Debian architecture name of this build (`build.arch` of a manifest).
pub fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86" => "i386",
        other => other,
    }
}

/// `manifest.json` (distro/README.md). Unknown top-level fields are refused: a later format that
/// adds a constraint must not be accepted by a box that would ignore it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    pub key: KeyRef,
    pub files: BTreeMap<String, FileEntry>,
    pub build: Build,
    #[serde(default)]
    pub packages: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub id: String,
    #[serde(default)]
    pub development: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Build {
    pub arch: String,
    /// Date, commit, suite, kernel...: informational.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// A public key the box trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// First 16 hex digits of SHA-256 of the key's DER (SubjectPublicKeyInfo).
    pub id: String,
    /// The key file's name ends in `.development.pem`.
    pub development: bool,
    pub raw: [u8; 32],
}

/// The keys a box trusts and the ids it refuses (`/usr/lib/iohub/firmware-keys/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub keys: Vec<TrustedKey>,
    pub revoked: BTreeSet<String>,
}

/// The id of a key: first 16 hex digits of SHA-256 of its DER (what `build.sh` names it by).
pub fn key_id(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))[..16].to_string()
}

/// Parse an ed25519 public key in PEM (`openssl pkey -pubout`).
pub fn parse_public_pem(text: &str) -> Result<(String, [u8; 32]), String> {
    use base64::Engine;
    let body: String = text
        .lines()
        .skip_while(|l| l.trim() != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|l| l.trim() != "-----END PUBLIC KEY-----")
        .map(str::trim)
        .collect();
    if body.is_empty() {
        return Err("no PUBLIC KEY block".into());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("bad base64: {e}"))?;
    let raw = der
        .strip_prefix(&ED25519_SPKI_PREFIX)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or("not an ed25519 public key")?;
    Ok((key_id(&der), raw))
}

/// The DER of a raw ed25519 public key (to name it).
pub fn spki_der(raw: &[u8; 32]) -> Vec<u8> {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

impl Trust {
    /// Read `dir`: every `*.pem` is a trusted key (`<id>.development.pem` a development one),
    /// `revoked` lists refused ids. Returns the trust and one message per file it could not use
    /// (a key file named for another key's id is refused: the name is what operators read).
    pub fn load(dir: &Path) -> (Trust, Vec<String>) {
        let mut trust = Trust::default();
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            problems.push(format!("{}: cannot read the trusted keys", dir.display()));
            return (trust, problems);
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if name == REVOKED_FILE {
                match std::fs::read_to_string(&path) {
                    Ok(text) => trust.revoked.extend(
                        text.lines()
                            .map(|l| l.split('#').next().unwrap_or("").trim())
                            .filter(|l| !l.is_empty())
                            .map(str::to_string),
                    ),
                    Err(e) => problems.push(format!("{}: {e}", path.display())),
                }
                continue;
            }
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            let (named, development) = match stem.strip_suffix(".development") {
                Some(id) => (id, true),
                None => (stem, false),
            };
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_public_pem(&t));
            match parsed {
                Ok((id, raw)) if id == named => trust.keys.push(TrustedKey {
                    id,
                    development,
                    raw,
                }),
                Ok((id, _)) => problems.push(format!(
                    "{}: the key's id is {id}, not the {named} its name says; not trusted",
                    path.display()
                )),
                Err(e) => problems.push(format!("{}: {e}; not trusted", path.display())),
            }
        }
        (trust, problems)
    }

    /// The manifest, parsed, once its signature verifies with a trusted, unrevoked key.
    pub fn verify_manifest(&self, bytes: &[u8], sig: &[u8]) -> Result<Manifest, BundleError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| BundleError::BadManifest(e.to_string()))?;
        self.check_signature(&manifest.key, bytes, sig)?;
        Ok(manifest)
    }

    /// `sig` is the ed25519 signature of `bytes` by the trusted, unrevoked key `key` names, and
    /// the key's development flag is the one `key` says (bundle and release manifests alike).
    pub fn check_signature(
        &self,
        key: &KeyRef,
        bytes: &[u8],
        sig: &[u8],
    ) -> Result<(), BundleError> {
        if sig.len() != 64 {
            return Err(BundleError::SignatureSize(sig.len() as u64));
        }
        let id = &key.id;
        let declared = key.development;
        if self.revoked.contains(id) {
            return Err(BundleError::RevokedKey(id.clone()));
        }
        let key = self
            .keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| BundleError::UnknownKey(id.clone()))?;
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &key.raw)
            .verify(bytes, sig)
            .map_err(|_| BundleError::BadSignature(id.clone()))?;
        if key.development != declared {
            return Err(BundleError::BadManifest(format!(
                "key {id}: the manifest says development={declared}, the trusted key file says {}",
                key.development
            )));
        }
        Ok(())
    }
}

/// What the running box accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub running: Version,
    pub arch: String,
    /// Install an older version (asked for explicitly, as the original allows downgrades).
    pub allow_downgrade: bool,
}

impl Policy {
    /// The checks of a signed manifest that need no file content.
    pub fn check(&self, m: &Manifest) -> Result<Version, BundleError> {
        if m.format != 1 {
            return Err(BundleError::BadManifest(format!(
                "format {} (this box reads format 1)",
                m.format
            )));
        }
        let version: Version = m.version.parse().map_err(BundleError::BadManifest)?;
        for name in m.files.keys() {
            check_path(name)?;
            if name == MANIFEST || name == SIGNATURE {
                return Err(BundleError::BadManifest(format!("lists {name}")));
            }
        }
        for f in SLOT_FILES {
            if !m.files.contains_key(f) {
                return Err(BundleError::BadManifest(format!("does not list {f}")));
            }
        }
        if m.build.arch != self.arch {
            return Err(BundleError::Arch {
                bundle: m.build.arch.clone(),
                running: self.arch.clone(),
            });
        }
        if version < self.running && !self.allow_downgrade {
            return Err(BundleError::Downgrade {
                bundle: version,
                running: self.running,
            });
        }
        Ok(version)
    }
}

/// A bundle that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub manifest: Manifest,
    pub version: Version,
    /// SHA-256 of `manifest.json`: the bundle's identity.
    pub manifest_sha256: String,
    /// Bytes of the listed files.
    pub payload_bytes: u64,
}

/// A plain relative path: no `/` at either end, no empty, `.` or `..` component, no NUL.
fn check_path(name: &str) -> Result<(), BundleError> {
    let ok = !name.is_empty()
        && !name.starts_with('/')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(BundleError::BadEntry {
            path: name.to_string(),
            reason: "not a plain relative path".into(),
        })
    }
}

/// An entry's path as a plain relative path (`./x` and a directory's trailing `/` accepted).
fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, BundleError> {
    let raw = entry.path_bytes();
    let text = String::from_utf8(raw.to_vec()).map_err(|_| BundleError::BadEntry {
        path: String::from_utf8_lossy(&raw).into_owned(),
        reason: "not UTF-8".into(),
    })?;
    let name = text
        .strip_prefix("./")
        .unwrap_or(&text)
        .trim_end_matches('/');
    check_path(name)?;
    Ok(name.to_string())
}

/// Counts the bytes read (progress over the compressed file).
struct Counted<R> {
    inner: R,
    done: u64,
    every: u64,
    next: u64,
    progress: Box<dyn FnMut(u64) + Send>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.next {
            (self.progress)(self.done);
            self.next = self.done + self.every;
        }
        Ok(n)
    }
}

/// How often progress is called, in bytes of the compressed bundle.
const PROGRESS_BYTES: u64 = 8 << 20;

fn archive<R: Read>(
    reader: R,
    progress: Box<dyn FnMut(u64) + Send>,
) -> tar::Archive<flate2::read::GzDecoder<Counted<R>>> {
    let counted = Counted {
        inner: reader,
        done: 0,
        every: PROGRESS_BYTES,
        next: PROGRESS_BYTES,
        progress,
    };
    tar::Archive::new(flate2::read::GzDecoder::new(counted))
}

/// Copy `from` into `to` (when given) while hashing; at most `limit` bytes are accepted.
fn hash_copy(
    mut from: impl Read,
    mut to: Option<&mut dyn Write>,
    limit: u64,
) -> io::Result<(String, u64, bool)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), total, false));
        }
        total += n as u64;
        if total > limit {
            return Ok((String::new(), total, true));
        }
        hasher.update(&buf[..n]);
        if let Some(w) = to.as_deref_mut() {
            w.write_all(&buf[..n])?;
        }
    }
}

fn small<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, BundleError> {
    if entry.header().size().unwrap_or(u64::MAX) > max {
        return Err(BundleError::BadEntry {
            path: name.into(),
            reason: format!("larger than {max} bytes"),
        });
    }
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(io_err)?;
    Ok(bytes)
}

/// Check a bundle in one pass (nothing is written). `progress` gets the compressed bytes read.
pub fn verify(
    reader: impl Read,
    trust: &Trust,
    policy: &Policy,
    progress: Box<dyn FnMut(u64) + Send>,
) -> Result<Verified, BundleError> {
    let mut ar = archive(reader, progress);
    let mut manifest_bytes = None;
    let mut sig = None;
    let mut version_text = None;
    let mut found: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    for entry in ar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let name = entry_name(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            dirs.insert(name);
            continue;
        }
        if !kind.is_file() {
            return Err(BundleError::BadEntry {
                path: name,
                reason: format!("a {kind:?} entry; a bundle holds regular files only"),
            });
        }
        if found.contains_key(&name)
            || (name == MANIFEST && manifest_bytes.is_some())
            || (name == SIGNATURE && sig.is_some())
        {
            return Err(BundleError::BadEntry {
                path: name,
                reason: "twice in the bundle".into(),
            });
        }
        match name.as_str() {
            MANIFEST => manifest_bytes = Some(small(&mut entry, &name, MANIFEST_MAX)?),
            SIGNATURE => sig = Some(small(&mut entry, &name, 64)?),
            "VERSION" => {
                let bytes = small(&mut entry, &name, 256)?;
                let sha = hex::encode(Sha256::digest(&bytes));
                found.insert(name, (sha, bytes.len() as u64));
                version_text = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {
                let (sha, size, _) = hash_copy(&mut entry, None, u64::MAX).map_err(io_err)?;
                found.insert(name, (sha, size));
            }
        }
    }
    // The gzip trailer (CRC, length) is checked once the stream is read to its end.
    io::copy(ar.into_inner().by_ref(), &mut io::sink()).map_err(io_err)?;

    let manifest_bytes = manifest_bytes.ok_or(BundleError::NoManifest)?;
    let sig = sig.ok_or(BundleError::Unsigned)?;
    let manifest = trust.verify_manifest(&manifest_bytes, &sig)?;
    let version = policy.check(&manifest)?;
    compare(&manifest, &found, &dirs)?;
    let file = version_text.unwrap_or_default();
    if file != manifest.version {
        return Err(BundleError::VersionFile {
            file,
            manifest: manifest.version.clone(),
        });
    }
    Ok(Verified {
        payload_bytes: manifest.files.values().map(|f| f.size).sum(),
        manifest_sha256: hex::encode(Sha256::digest(&manifest_bytes)),
        manifest,
        version,
    })
}

fn compare(
    manifest: &Manifest,
    found: &BTreeMap<String, (String, u64)>,
    dirs: &BTreeSet<String>,
) -> Result<(), BundleError> {
    for (name, (sha, size)) in found {
        let listed = manifest
            .files
            .get(name)
            .ok_or_else(|| BundleError::Unlisted(name.clone()))?;
        check_file(name, listed, sha, *size)?;
    }
    if let Some(name) = manifest.files.keys().find(|n| !found.contains_key(*n)) {
        return Err(BundleError::MissingFile(name.clone()));
    }
    let parents: BTreeSet<&str> = manifest
        .files
        .keys()
        .flat_map(|n| n.match_indices('/').map(move |(i, _)| &n[..i]))
        .collect();
    if let Some(d) = dirs.iter().find(|d| !parents.contains(d.as_str())) {
        return Err(BundleError::Unlisted(format!("{d}/")));
    }
    Ok(())
}

fn check_file(name: &str, listed: &FileEntry, sha: &str, size: u64) -> Result<(), BundleError> {
    if size != listed.size {
        return Err(BundleError::Size {
            path: name.into(),
            found: size,
            expected: listed.size,
        });
    }
    if !sha.eq_ignore_ascii_case(&listed.sha256) {
        return Err(BundleError::Hash {
            path: name.into(),
            found: sha.into(),
            expected: listed.sha256.clone(),
        });
    }
    Ok(())
}

/// Write the files of a verified bundle under `dest` (an empty staging directory), each checked
/// again against the manifest while it streams; `manifest.json` must be the verified one.
pub fn extract(
    reader: impl Read,
    verified: &Verified,
    dest: &Path,
    progress: Box<dyn FnMut(u64) + Send>,
) -> Result<(), BundleError> {
    let m = &verified.manifest;
    let mut ar = archive(reader, progress);
    let mut written = BTreeSet::new();
    for entry in ar.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let name = entry_name(&entry)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        let expected = match name.as_str() {
            MANIFEST => FileEntry {
                sha256: verified.manifest_sha256.clone(),
                size: MANIFEST_MAX,
            },
            SIGNATURE => FileEntry {
                sha256: String::new(),
                size: 64,
            },
            _ => m
                .files
                .get(&name)
                .cloned()
                .ok_or_else(|| BundleError::Unlisted(name.clone()))?,
        };
        if !kind.is_file() || !written.insert(name.clone()) {
            return Err(BundleError::BadEntry {
                path: name,
                reason: "changed since it was verified".into(),
            });
        }
        let path = dest.join(&name);
        if let Some(parent) = path.parent() {
            sys::fs::ensure_dir(parent).map_err(|e| BundleError::Io(e.to_string()))?;
        }
        let mut result = Ok((String::new(), 0, false));
        sys::fs::write_new(&path, 0o644, |file| {
            result = hash_copy(&mut entry, Some(file), expected.size);
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::new(e.kind(), e.to_string()))
        })
        .map_err(|e| BundleError::Io(format!("{}: {e}", path.display())))?;
        let (sha, size, over) = result.map_err(io_err)?;
        if over {
            return Err(BundleError::Size {
                path: name,
                found: size,
                expected: expected.size,
            });
        }
        match name.as_str() {
            MANIFEST if sha != verified.manifest_sha256 => {
                return Err(BundleError::BadEntry {
                    path: name,
                    reason: "changed since it was verified".into(),
                })
            }
            MANIFEST | SIGNATURE => {}
            _ => check_file(&name, &expected, &sha, size)?,
        }
    }
    io::copy(ar.into_inner().by_ref(), &mut io::sink()).map_err(io_err)?;
    for name in m
        .files
        .keys()
        .map(String::as_str)
        .chain([MANIFEST, SIGNATURE])
    {
        if !written.contains(name) {
            return Err(BundleError::MissingFile(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
