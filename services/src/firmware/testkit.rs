//! Signed firmware bundles made in memory, in the layout of `distro/build.sh`: for the tests and
//! the bench (keys are made with ring; `bundle_tests` cross-checks them with openssl).

use std::collections::BTreeMap;
use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

use super::bundle::{key_id, spki_der, SLOT_FILES};

/// A signing key and its id.
pub struct Signer {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    pub id: String,
}

impl Signer {
    pub fn generate() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("rng");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a fresh key parses");
        let id = key_id(&spki_der(&raw(&pair)));
        Signer {
            pair,
            pkcs8: pkcs8.as_ref().to_vec(),
            id,
        }
    }

    /// The private key, PKCS#8 PEM (what `iohub-firmware-publish --key` reads).
    pub fn private_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n")
    }

    /// The same key as a publisher's signing key.
    pub fn signing_key(&self) -> super::publish::SigningKey {
        super::publish::SigningKey::from_pkcs8(&self.pkcs8, false).expect("a fresh key")
    }

    /// A trust of this key alone.
    pub fn trust(&self) -> super::bundle::Trust {
        super::bundle::Trust {
            keys: vec![super::bundle::TrustedKey {
                id: self.id.clone(),
                development: false,
                raw: raw(&self.pair),
            }],
            revoked: Default::default(),
        }
    }

    /// The public key, PEM (as `openssl pkey -pubout` writes it).
    pub fn public_pem(&self) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der(&raw(&self.pair)));
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    /// Trust this key: `<dir>/<id>[.development].pem`.
    pub fn install(&self, dir: &Path, development: bool) {
        sys::fs::ensure_dir(dir).expect("keys dir");
        let name = if development {
            format!("{}.development.pem", self.id)
        } else {
            format!("{}.pem", self.id)
        };
        sys::fs::atomic_write(&dir.join(name), self.public_pem().as_bytes(), 0o644).expect("key");
    }

    pub fn sign(&self, bytes: &[u8]) -> Vec<u8> {
        self.pair.sign(bytes).as_ref().to_vec()
    }
}

fn raw(pair: &Ed25519KeyPair) -> [u8; 32] {
    pair.public_key()
        .as_ref()
        .try_into()
        .expect("ed25519 keys are 32 bytes")
}

/// The files of a bundle of `version` whose squashfs is `squashfs`.
pub fn files(version: &str, squashfs: Vec<u8>) -> Vec<(String, Vec<u8>)> {
    let content: [Vec<u8>; 4] = [
        version.as_bytes().to_vec(),
        b"fake kernel".to_vec(),
        b"fake initramfs".to_vec(),
        squashfs,
    ];
    SLOT_FILES
        .iter()
        .zip(content)
        .map(|(n, c)| ((*n).to_string(), c))
        .collect()
}

/// `manifest.json` listing `files` (format of distro/manifest.sh).
pub fn manifest(
    version: &str,
    arch: &str,
    signer: &Signer,
    development: bool,
    files: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let listed: BTreeMap<&str, serde_json::Value> = files
        .iter()
        .map(|(n, c)| {
            let sha = hex::encode(Sha256::digest(c));
            (
                n.as_str(),
                serde_json::json!({"sha256": sha, "size": c.len()}),
            )
        })
        .collect();
    let m = serde_json::json!({
        "format": 1,
        "version": version,
        "key": {"id": signer.id, "development": development},
        "files": listed,
        "build": {"date": "2026-12-07T00:00:00Z", "git_commit": "test", "git_dirty": false, "arch": arch},
        "packages": [["iohub", version, arch]],
    });
    serde_json::to_vec_pretty(&m).expect("json")
}

/// A gzip tar of `entries` in order; a name ending in `/` is a directory.
pub fn tgz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, content) in entries {
        let mut h = tar::Header::new_gnu();
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
        }
        h.set_mtime(0);
        tar.append_data(&mut h, name, content.as_slice())
            .expect("tar entry");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

/// The entries of a good bundle (build.sh's order: the files, `live/`, then the manifest and
/// its signature).
pub fn entries(
    signer: &Signer,
    version: &str,
    squashfs: Vec<u8>,
    development: bool,
) -> Vec<(String, Vec<u8>)> {
    let files = files(version, squashfs);
    let m = manifest(
        version,
        super::bundle::this_arch(),
        signer,
        development,
        &files,
    );
    let sig = signer.sign(&m);
    let mut entries = vec![("live/".to_string(), Vec::new())];
    entries.extend(files);
    entries.push((super::bundle::MANIFEST.into(), m));
    entries.push((super::bundle::SIGNATURE.into(), sig));
    entries
}

/// A good bundle, gzip tar bytes.
pub fn bundle(signer: &Signer, version: &str, squashfs: Vec<u8>) -> Vec<u8> {
    tgz(&entries(signer, version, squashfs, false))
}
