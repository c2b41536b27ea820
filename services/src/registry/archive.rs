//! The `docker save` archive reader: pure (it only reads the stream it is given; no files, no
//! network), streaming (a layer is never held in memory), and strict (every digest is checked).
//!
//! Formats read (SPEC §4.6): the legacy `docker save` layout (`manifest.json`, `<hex>.json`
//! configs, `<v1-id>/layer.tar`, duplicate layers as symlinks to another `layer.tar`) and the
//! OCI layout written by Docker 25+ (`manifest.json` naming `blobs/sha256/<hex>` files, plus
//! `index.json`, which is not needed when `manifest.json` is there). The archive itself may be
//! gzip-compressed or a plain tar; bzip2/xz/zstd are refused with a clear error.
//!
//! Two passes over the archive, each streaming:
//! 1. [`scan`] hashes every regular file (raw SHA-256, and for a gzip file the SHA-256 of its
//!    decompressed content), keeps small files (JSON) in memory and records symlinks; [`index`]
//!    then reads `manifest.json`, resolves configs and layers, and checks: a config named by a
//!    digest (`<hex>.json`, `blobs/sha256/<hex>`) has that digest; each layer's uncompressed
//!    digest equals the config's `rootfs.diff_ids[i]`; a blob named by a digest has it.
//! 2. [`for_each_file`] hands the caller the content of the wanted layers, in archive order, for
//!    compression and upload (the importer re-checks the digests of what it uploads).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Files up to this size are kept in memory by [`scan`] (configs, manifests).
pub const SMALL_FILE_MAX: u64 = 4 << 20;
/// At most this many bytes of small files are kept in memory per archive.
pub const SMALL_TOTAL_MAX: u64 = 64 << 20;
/// Read buffer.
const CHUNK: usize = 256 << 10;

/// Why an archive cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading the archive: {0}")]
    Read(String),
    #[error("the archive is {0}-compressed; only gzip or a plain tar are supported")]
    UnsupportedCompression(&'static str),
    #[error("not a tar archive (nor a gzip-compressed one)")]
    NotTar,
    #[error("no manifest.json in the archive (not a `docker save` archive?)")]
    NoManifest,
    #[error("{file}: {message}")]
    Bad { file: String, message: String },
    #[error("{file}: missing from the archive")]
    Missing { file: String },
    #[error("{file}: digest mismatch: expected sha256:{expected}, content is sha256:{actual}")]
    DigestMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("too many small files: more than {SMALL_TOTAL_MAX} bytes of them")]
    TooManySmallFiles,
}

impl From<io::Error> for ArchiveError {
    fn from(e: io::Error) -> ArchiveError {
        ArchiveError::Read(e.to_string())
    }
}

/// What [`scan`] learnt about one regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub size: u64,
    /// SHA-256 of the raw content, hex.
    pub sha256: String,
    /// Whether the content is gzip-compressed (an already compressed layer).
    pub gzip: bool,
    /// SHA-256 of the uncompressed content, hex (the raw one when not gzip).
    pub uncompressed_sha256: String,
    /// The content, for files up to [`SMALL_FILE_MAX`].
    pub bytes: Option<Vec<u8>>,
}

/// Every file and symlink of an archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub files: BTreeMap<String, FileInfo>,
    /// Symlink path -> target path (resolved against the link's directory).
    pub links: BTreeMap<String, String>,
}

/// Open an archive stream: gzip is decompressed, a plain tar passes through.
pub fn decompress<'a, R: Read + 'a>(mut reader: R) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let head = &head[..n];
    let chained = io::Cursor::new(head.to_vec()).chain(reader);
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)));
    }
    if head.starts_with(b"BZh") {
        return Err(ArchiveError::UnsupportedCompression("bzip2"));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ArchiveError::UnsupportedCompression("xz"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ArchiveError::UnsupportedCompression("zstd"));
    }
    if n == 512 && &head[257..262] == b"ustar" {
        return Ok(Box::new(chained));
    }
    Err(ArchiveError::NotTar)
}

/// A path inside the archive, normalised (`./a//b` -> `a/b`).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Resolve a symlink target against the directory of the link.
fn resolve_link(link: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return normalize(abs);
    }
    match link.rsplit_once('/') {
        Some((dir, _)) => normalize(&format!("{dir}/{target}")),
        None => normalize(target),
    }
}

/// Pass 1: hash every file of the (decompressed) tar stream.
pub fn scan<R: Read>(tar_stream: R) -> Result<Scan, ArchiveError> {
    let mut archive = tar::Archive::new(tar_stream);
    let mut out = Scan::default();
    let mut small_total = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name_bytes() else {
                continue;
            };
            let target = String::from_utf8_lossy(&target).into_owned();
            let resolved = if kind.is_hard_link() {
                normalize(&target)
            } else {
                resolve_link(&path, &target)
            };
            out.links.insert(path, resolved);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        let keep = size <= SMALL_FILE_MAX;
        if keep {
            small_total += size;
            if small_total > SMALL_TOTAL_MAX {
                return Err(ArchiveError::TooManySmallFiles);
            }
        }
        let mut hasher = LayerHasher::default();
        let mut bytes = keep.then(Vec::new);
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.write_all(&buf[..n])?;
            if let Some(b) = &mut bytes {
                b.extend_from_slice(&buf[..n]);
            }
        }
        let (sha256, gzip, uncompressed_sha256) = hasher.finish()?;
        out.files.insert(
            path,
            FileInfo {
                size,
                sha256,
                gzip,
                uncompressed_sha256,
                bytes,
            },
        );
    }
    Ok(out)
}

/// Hashes a file's raw bytes and, when they turn out to be gzip, its decompressed bytes.
#[derive(Default)]
struct LayerHasher {
    raw: Sha256,
    head: Vec<u8>,
    gunzip: Option<flate2::write::GzDecoder<HashWriter>>,
    decided: bool,
}

impl LayerHasher {
    fn decide(&mut self) -> io::Result<()> {
        self.decided = true;
        if self.head.starts_with(&[0x1f, 0x8b]) {
            let mut d = flate2::write::GzDecoder::new(HashWriter::default());
            d.write_all(&self.head)?;
            self.gunzip = Some(d);
        }
        self.head = Vec::new();
        Ok(())
    }

    fn finish(mut self) -> io::Result<(String, bool, String)> {
        if !self.decided {
            self.decide()?;
        }
        let raw = hex::encode(self.raw.finalize());
        match self.gunzip {
            Some(d) => {
                let inner = d.finish()?;
                Ok((raw, true, hex::encode(inner.0.finalize())))
            }
            None => Ok((raw.clone(), false, raw)),
        }
    }
}

impl Write for LayerHasher {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.raw.update(data);
        if !self.decided {
            self.head.extend_from_slice(data);
            if self.head.len() >= 2 {
                self.decide()?;
            }
        } else if let Some(d) = &mut self.gunzip {
            d.write_all(data)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that only hashes.
#[derive(Default)]
pub struct HashWriter(pub Sha256);

impl Write for HashWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.update(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `name:tag` as it will be stored in the registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// A config or layer blob to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `sha256:<hex>`
    pub digest: String,
    pub bytes: Vec<u8>,
}

/// A layer as found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Path of the regular file holding it (symlinks resolved).
    pub path: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's diff id).
    pub diff_id: String,
    /// Size of the file in the archive.
    pub size: u64,
    /// `sha256:<hex>` of the file when it is already gzip-compressed (pushed as it is).
    pub gzip_digest: Option<String>,
}

/// One image of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub tags: Vec<ImageRef>,
    pub config: Config,
    /// Indexes into [`Index::layers`], bottom first.
    pub layers: Vec<usize>,
}

/// What an archive holds, checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    pub images: Vec<Image>,
    /// Distinct layers, in first-use order.
    pub layers: Vec<Layer>,
    /// Images with no usable tag, and tags that are never pushed (`registry:2`), as text.
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl Scan {
    /// Follow symlinks (bounded) to a regular file.
    fn resolve(&self, path: &str) -> Option<(String, &FileInfo)> {
        let mut p = normalize(path);
        for _ in 0..16 {
            if let Some(f) = self.files.get(&p) {
                return Some((p, f));
            }
            p = self.links.get(&p)?.clone();
        }
        None
    }
}

/// The digest a file's name claims: `<hex>.json` or `blobs/sha256/<hex>`.
fn claimed_digest(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let hex = if let Some(h) = path.strip_prefix("blobs/sha256/") {
        h
    } else {
        name.strip_suffix(".json")?
    };
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// Parse a `RepoTags` entry into the reference stored in the registry. Docker Hub's implicit
/// prefixes are dropped (`docker.io/library/busybox:1` is stored as `busybox:1`, as the
/// original's `docker load` printed it).
pub fn parse_repo_tag(text: &str) -> Result<ImageRef, String> {
    let (name, tag) = match text.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (text, "latest"),
    };
    let name = name.strip_prefix("docker.io/").unwrap_or(name);
    let name = name.strip_prefix("library/").unwrap_or(name);
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if !tag_ok {
        return Err(format!("`{text}`: invalid tag `{tag}`"));
    }
    let parts = name.split('/').count();
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').enumerate().all(|(i, part)| {
            // The first of several components may be a registry host with a port.
            if i == 0 && parts > 1 && part.contains([':', '.']) {
                return part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
            }
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric()
        });
    if !name_ok {
        return Err(format!("`{text}`: invalid repository name `{name}`"));
    }
    Ok(ImageRef {
        repository: name.to_string(),
        tag: tag.to_string(),
    })
}

/// Check a scanned archive and list its images and layers. Reports every problem found.
pub fn index(scan: &Scan) -> Result<Index, Vec<ArchiveError>> {
    let Some((_, manifest)) = scan.resolve("manifest.json") else {
        return Err(vec![ArchiveError::NoManifest]);
    };
    let bad = |file: &str, message: String| ArchiveError::Bad {
        file: file.to_string(),
        message,
    };
    let Some(bytes) = &manifest.bytes else {
        return Err(vec![bad("manifest.json", "too large".into())]);
    };
    let entries: Vec<ManifestEntry> = match serde_json::from_slice(bytes) {
        Ok(e) => e,
        Err(e) => return Err(vec![bad("manifest.json", e.to_string())]),
    };
    let mut errors = Vec::new();
    let mut out = Index::default();
    let mut layer_ids: BTreeMap<String, usize> = BTreeMap::new();
    for entry in entries {
        let Some((config_path, config_file)) = scan.resolve(&entry.config) else {
            errors.push(ArchiveError::Missing { file: entry.config });
            continue;
        };
        if let Some(hex) = claimed_digest(&config_path) {
            if hex != config_file.sha256 {
                errors.push(ArchiveError::DigestMismatch {
                    file: config_path.clone(),
                    expected: hex.to_string(),
                    actual: config_file.sha256.clone(),
                });
                continue;
            }
        }
        let Some(config_bytes) = &config_file.bytes else {
            errors.push(bad(&config_path, "image config too large".into()));
            continue;
        };
        let config: ImageConfig = match serde_json::from_slice(config_bytes) {
            Ok(c) => c,
            Err(e) => {
                errors.push(bad(&config_path, format!("not an image config: {e}")));
                continue;
            }
        };
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            errors.push(bad(
                &config_path,
                format!(
                    "{} diff_ids for {} layers in manifest.json",
                    config.rootfs.diff_ids.len(),
                    entry.layers.len()
                ),
            ));
            continue;
        }
        let mut layers = Vec::new();
        let mut ok = true;
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let Some((real, file)) = scan.resolve(path) else {
                errors.push(ArchiveError::Missing { file: path.clone() });
                ok = false;
                continue;
            };
            if let Some(hex) = claimed_digest(&real) {
                if hex != file.sha256 {
                    errors.push(ArchiveError::DigestMismatch {
                        file: real.clone(),
                        expected: hex.to_string(),
                        actual: file.sha256.clone(),
                    });
                    ok = false;
                    continue;
                }
            }
            let expected = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
            if expected != file.uncompressed_sha256 {
                errors.push(ArchiveError::DigestMismatch {
                    file: real.clone(),
                    expected: expected.to_string(),
                    actual: file.uncompressed_sha256.clone(),
                });
                ok = false;
                continue;
            }
            let next = out.layers.len();
            let i = *layer_ids.entry(real.clone()).or_insert(next);
            if i == next {
                out.layers.push(Layer {
                    path: real,
                    diff_id: format!("sha256:{expected}"),
                    size: file.size,
                    gzip_digest: file.gzip.then(|| format!("sha256:{}", file.sha256)),
                });
            }
            layers.push(i);
        }
        if !ok {
            continue;
        }
        let mut tags = Vec::new();
        for text in entry.repo_tags.unwrap_or_default() {
            match parse_repo_tag(&text) {
                Ok(r) if r.repository == "registry" && r.tag == "2" => {
                    out.skipped.push(format!("{text} (the registry itself)"));
                }
                Ok(r) => tags.push(r),
                Err(e) => errors.push(bad("manifest.json", e)),
            }
        }
        if tags.is_empty() {
            out.skipped
                .push(format!("{config_path} (no tag: not pushed)"));
            continue;
        }
        out.images.push(Image {
            tags,
            config: Config {
                digest: format!("sha256:{}", config_file.sha256),
                bytes: config_bytes.clone(),
            },
            layers,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Pass 2: call `f(path, content)` for every regular file in `wanted`, in archive order.
/// Stops at the first error `f` returns.
pub fn for_each_file<R: Read, E: From<ArchiveError>>(
    tar_stream: R,
    wanted: &BTreeSet<String>,
    mut f: impl FnMut(&str, &mut dyn Read) -> Result<(), E>,
) -> Result<(), E> {
    let mut archive = tar::Archive::new(tar_stream);
    let entries = archive.entries().map_err(ArchiveError::from)?;
    let mut seen = BTreeSet::new();
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::from)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
        if wanted.contains(&path) && seen.insert(path.clone()) {
            f(&path, &mut entry)?;
        }
    }
    if let Some(missing) = wanted.iter().find(|p| !seen.contains(*p)) {
        return Err(ArchiveError::Missing {
            file: missing.clone(),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// A tar of `(path, content)` files and `(path, target)` symlinks.
    fn tar(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *content).unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A legacy `docker save` archive of one image with two layers, the second a symlink to
    /// the first (identical content).
    fn legacy(layer: &[u8], diff_id: &str, tags: &str) -> Vec<u8> {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}","sha256:{diff_id}"]}}}}"#
        );
        let config_name = format!("{}.json", sha(config.as_bytes()));
        let manifest = format!(
            r#"[{{"Config":"{config_name}","RepoTags":{tags},"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#
        );
        tar(
            &[
                ("aaa/layer.tar", layer),
                (&config_name, config.as_bytes()),
                ("manifest.json", manifest.as_bytes()),
            ],
            &[("bbb/layer.tar", "../aaa/layer.tar")],
        )
    }

    fn read(archive: &[u8]) -> Result<Index, Vec<ArchiveError>> {
        let stream = decompress(Cursor::new(archive.to_vec())).map_err(|e| vec![e])?;
        index(&scan(stream).map_err(|e| vec![e])?)
    }

    fn layer() -> Vec<u8> {
        tar(&[("hello.txt", b"hello")], &[])
    }

    #[test]
    fn a_legacy_gzip_archive_is_indexed_with_shared_layers_once() {
        let layer = layer();
        let archive = gzip(&legacy(
            &layer,
            &sha(&layer),
            r#"["iohubtest/bb:1","docker.io/library/busybox:latest"]"#,
        ));
        let index = read(&archive).unwrap();
        assert_eq!(index.layers.len(), 1);
        assert_eq!(index.layers[0].path, "aaa/layer.tar");
        assert_eq!(index.layers[0].diff_id, format!("sha256:{}", sha(&layer)));
        assert_eq!(index.layers[0].gzip_digest, None);
        assert_eq!(index.images[0].layers, vec![0, 0]);
        let tags: Vec<String> = index.images[0]
            .tags
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(tags, vec!["iohubtest/bb:1", "busybox:latest"]);
    }

    #[test]
    fn a_layer_that_does_not_match_its_diff_id_is_refused() {
        let layer = layer();
        let errors = read(&legacy(&layer, &sha(b"other"), r#"["a:1"]"#)).unwrap_err();
        assert!(
            matches!(&errors[0], ArchiveError::DigestMismatch { file, .. } if file == "aaa/layer.tar"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_config_whose_content_does_not_match_its_name_is_refused() {
        let config = br#"{"rootfs":{"diff_ids":[]}}"#;
        let manifest = format!(
            r#"[{{"Config":"{}.json","RepoTags":["a:1"],"Layers":[]}}]"#,
            "0".repeat(64)
        );
        let name = format!("{}.json", "0".repeat(64));
        let archive = tar(
            &[(&name, config), ("manifest.json", manifest.as_bytes())],
            &[],
        );
        let errors = read(&archive).unwrap_err();
        assert!(
            matches!(&errors[0], ArchiveError::DigestMismatch { .. }),
            "{errors:?}"
        );
    }

    #[test]
    fn truncated_and_foreign_archives_are_refused_clearly() {
        let layer = layer();
        let archive = gzip(&legacy(&layer, &sha(&layer), r#"["a:1"]"#));
        let errors = read(&archive[..archive.len() / 2]).unwrap_err();
        assert!(matches!(&errors[0], ArchiveError::Read(_)), "{errors:?}");
        assert_eq!(
            read(b"BZh91AY&SY").unwrap_err(),
            vec![ArchiveError::UnsupportedCompression("bzip2")]
        );
        assert_eq!(read(b"hello").unwrap_err(), vec![ArchiveError::NotTar]);
        assert_eq!(
            read(&tar(&[("x", b"y")], &[])).unwrap_err(),
            vec![ArchiveError::NoManifest]
        );
    }

    #[test]
    fn an_already_compressed_oci_blob_layer_keeps_its_digest_and_untagged_images_are_skipped() {
        let layer = layer();
        let gz = gzip(&layer);
        let config = format!(r#"{{"rootfs":{{"diff_ids":["sha256:{}"]}}}}"#, sha(&layer));
        let cpath = format!("blobs/sha256/{}", sha(config.as_bytes()));
        let lpath = format!("blobs/sha256/{}", sha(&gz));
        let manifest = format!(
            r#"[{{"Config":"{cpath}","RepoTags":["registry:2","x/y:2"],"Layers":["{lpath}"]}},{{"Config":"{cpath}","RepoTags":null,"Layers":["{lpath}"]}}]"#
        );
        let archive = tar(
            &[
                (&lpath, &gz),
                (&cpath, config.as_bytes()),
                ("manifest.json", manifest.as_bytes()),
            ],
            &[],
        );
        let index = read(&archive).unwrap();
        assert_eq!(index.images.len(), 1);
        assert_eq!(
            index.layers[0].gzip_digest,
            Some(format!("sha256:{}", sha(&gz)))
        );
        assert_eq!(index.skipped.len(), 2, "{:?}", index.skipped);
    }

    #[test]
    fn repo_tags_are_parsed_like_docker_references() {
        let ok = |t: &str| parse_repo_tag(t).map(|r| r.to_string());
        assert_eq!(ok("mysql:5.7.36").unwrap(), "mysql:5.7.36");
        assert_eq!(
            ok("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            ok("us-central1-docker.pkg.dev/ez-shared/iohub/iohub-grafana:latest").unwrap(),
            "us-central1-docker.pkg.dev/ez-shared/iohub/iohub-grafana:latest"
        );
        assert!(ok("Upper/case:1").is_err());
        assert!(ok("a:bad tag").is_err());
    }
}
