//! Tests of bundle verification: every bad bundle of issue 13 is refused with its reason.

use super::*;
use crate::firmware::testkit::{self, Signer};
use proptest::prelude::*;

fn policy(running: &str) -> Policy {
    Policy {
        running: running.parse().unwrap(),
        arch: this_arch().to_string(),
        allow_downgrade: false,
    }
}

struct Keys {
    _dir: tempfile::TempDir,
    trust: Trust,
    a: Signer,
    b: Signer,
}

/// Two trusted keys (a rotation in progress).
fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Signer::generate(), Signer::generate());
    a.install(dir.path(), false);
    b.install(dir.path(), false);
    let (trust, problems) = Trust::load(dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    Keys {
        _dir: dir,
        trust,
        a,
        b,
    }
}

fn check(bytes: &[u8], trust: &Trust, policy: &Policy) -> Result<Verified, BundleError> {
    verify(bytes, trust, policy, Box::new(|_| {}))
}

fn squashfs() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_bundle_signed_by_either_trusted_key_is_accepted() {
    let k = keys();
    for signer in [&k.a, &k.b] {
        let v = check(
            &testkit::bundle(signer, "0.2.0", squashfs()),
            &k.trust,
            &policy("0.1.0"),
        )
        .unwrap();
        assert_eq!(v.version.to_string(), "0.2.0");
        assert_eq!(v.manifest.key.id, signer.id);
        assert_eq!(v.payload_bytes, 200_000 + 5 + 11 + 14);
    }
}

fn refused(entries: &[(String, Vec<u8>)], trust: &Trust) -> BundleError {
    check(&testkit::tgz(entries), trust, &policy("0.1.0")).unwrap_err()
}

#[test]
fn an_unsigned_bundle_is_refused() {
    let k = keys();
    let mut e = testkit::entries(&k.a, "0.2.0", squashfs(), false);
    e.retain(|(n, _)| n != SIGNATURE);
    let err = refused(&e, &k.trust);
    assert_eq!(err, BundleError::Unsigned);
    assert_eq!(err.to_string(), "the bundle is not signed: no manifest.sig");
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused() {
    let k = keys();
    let stranger = Signer::generate();
    let err = refused(
        &testkit::entries(&stranger, "0.2.0", squashfs(), false),
        &k.trust,
    );
    assert_eq!(err, BundleError::UnknownKey(stranger.id.clone()));
    assert_eq!(err.reason(), "unknown-key");
}

#[test]
fn a_bundle_signed_by_a_revoked_key_is_refused_even_though_the_key_file_is_there() {
    let mut k = keys();
    k.trust.revoked.insert(k.a.id.clone());
    let err = refused(
        &testkit::entries(&k.a, "0.2.0", squashfs(), false),
        &k.trust,
    );
    assert_eq!(err, BundleError::RevokedKey(k.a.id.clone()));
    // The other key still works.
    check(
        &testkit::bundle(&k.b, "0.2.0", squashfs()),
        &k.trust,
        &policy("0.1.0"),
    )
    .unwrap();
}

#[test]
fn the_revocation_list_is_read_from_the_keys_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = Signer::generate();
    a.install(dir.path(), true);
    sys::fs::atomic_write(
        &dir.path().join(REVOKED_FILE),
        format!("# leaked 2026-12\n{}  # laptop\n", a.id).as_bytes(),
        0o644,
    )
    .unwrap();
    let (trust, problems) = Trust::load(dir.path());
    assert!(problems.is_empty());
    assert!(trust.keys[0].development);
    assert_eq!(trust.revoked, BTreeSet::from([a.id.clone()]));
}

#[test]
fn a_key_file_named_for_another_id_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Signer::generate();
    sys::fs::atomic_write(
        &dir.path().join("0123456789abcdef.pem"),
        a.public_pem().as_bytes(),
        0o644,
    )
    .unwrap();
    let (trust, problems) = Trust::load(dir.path());
    assert!(trust.keys.is_empty());
    assert!(
        problems[0].contains("not the 0123456789abcdef its name says"),
        "{problems:?}"
    );
}

#[test]
fn one_byte_changed_in_the_squashfs_is_refused() {
    let k = keys();
    let mut e = testkit::entries(&k.a, "0.2.0", squashfs(), false);
    let sq = e
        .iter_mut()
        .find(|(n, _)| n == "live/filesystem.squashfs")
        .unwrap();
    sq.1[123_456] ^= 1;
    let err = refused(&e, &k.trust);
    assert!(
        matches!(&err, BundleError::Hash { path, .. } if path == "live/filesystem.squashfs"),
        "{err}"
    );
}

#[test]
fn a_changed_manifest_no_longer_verifies() {
    let k = keys();
    let mut e = testkit::entries(&k.a, "0.2.0", squashfs(), false);
    let m = e.iter_mut().find(|(n, _)| n == MANIFEST).unwrap();
    let text = String::from_utf8(m.1.clone()).unwrap();
    m.1 = text
        .replace("\"git_commit\": \"test\"", "\"git_commit\": \"evil\"")
        .into_bytes();
    assert_eq!(
        refused(&e, &k.trust),
        BundleError::BadSignature(k.a.id.clone())
    );
}

#[test]
fn an_older_version_needs_the_downgrade_flag() {
    let k = keys();
    let old = testkit::bundle(&k.a, "0.9.0", squashfs());
    let err = check(&old, &k.trust, &policy("0.10.0")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "version 0.9.0 is older than the running 0.10.0; a downgrade must be asked for explicitly"
    );
    let mut p = policy("0.10.0");
    p.allow_downgrade = true;
    assert_eq!(
        check(&old, &k.trust, &p).unwrap().version.to_string(),
        "0.9.0"
    );
    // The same version again (repairing the other slot) needs no flag.
    check(&old, &k.trust, &policy("0.9.0")).unwrap();
}

#[test]
fn a_bundle_for_another_architecture_is_refused() {
    let k = keys();
    let files = testkit::files("0.2.0", squashfs());
    let m = testkit::manifest("0.2.0", "riscv64", &k.a, false, &files);
    let mut e = files;
    e.push((SIGNATURE.into(), k.a.sign(&m)));
    e.push((MANIFEST.into(), m));
    let err = refused(&e, &k.trust);
    assert!(matches!(err, BundleError::Arch { .. }), "{err}");
}

/// A manifest signed over `files` while the archive holds `archive`.
fn signed_over(
    k: &Keys,
    files: &[(String, Vec<u8>)],
    archive: &[(String, Vec<u8>)],
) -> BundleError {
    let m = testkit::manifest("0.2.0", this_arch(), &k.a, false, files);
    let mut e = archive.to_vec();
    e.push((SIGNATURE.into(), k.a.sign(&m)));
    e.push((MANIFEST.into(), m));
    refused(&e, &k.trust)
}

#[test]
fn a_manifest_naming_files_outside_the_bundle_is_refused() {
    let k = keys();
    let good = testkit::files("0.2.0", squashfs());
    // A path that climbs out of the slot.
    let mut climbing = good.clone();
    climbing.push(("../../etc/shadow".into(), b"x".to_vec()));
    let err = signed_over(&k, &climbing, &good);
    assert!(
        matches!(&err, BundleError::BadEntry { path, .. } if path == "../../etc/shadow"),
        "{err}"
    );
    // An absolute path.
    let mut absolute = good.clone();
    absolute.push(("/etc/shadow".into(), b"x".to_vec()));
    assert!(matches!(
        signed_over(&k, &absolute, &good),
        BundleError::BadEntry { .. }
    ));
    // A listed file the archive does not hold.
    let mut missing = good.clone();
    missing.push(("live/extra.squashfs".into(), b"x".to_vec()));
    assert_eq!(
        signed_over(&k, &missing, &good),
        BundleError::MissingFile("live/extra.squashfs".into())
    );
    // A file in the archive that the manifest does not list.
    let mut extra = good.clone();
    extra.push(("hook.sh".into(), b"rm -rf /".to_vec()));
    assert_eq!(
        signed_over(&k, &good, &extra),
        BundleError::Unlisted("hook.sh".into())
    );
    // The slot's own files must be listed.
    let without_kernel: Vec<_> = good
        .iter()
        .filter(|(n, _)| n != "vmlinuz")
        .cloned()
        .collect();
    assert_eq!(
        signed_over(&k, &without_kernel, &without_kernel),
        BundleError::BadManifest("does not list vmlinuz".into())
    );
}

#[test]
fn links_and_climbing_entries_in_the_archive_are_refused() {
    let k = keys();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "vmlinuz", "/etc/shadow").unwrap();
    let bytes = tar.into_inner().unwrap().finish().unwrap();
    let err = check(&bytes, &k.trust, &policy("0.1.0")).unwrap_err();
    assert!(
        err.to_string().starts_with("vmlinuz: a Symlink entry"),
        "{err}"
    );
}

#[test]
fn a_version_file_that_disagrees_with_the_manifest_is_refused() {
    let k = keys();
    let mut files = testkit::files("0.2.0", squashfs());
    files[0].1 = b"9.9.9".to_vec();
    let err = signed_over(&k, &files, &files);
    assert_eq!(
        err,
        BundleError::VersionFile {
            file: "9.9.9".into(),
            manifest: "0.2.0".into()
        }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A bundle cut anywhere (a copy interrupted, a download cut short) is refused.
    #[test]
    fn a_truncated_bundle_is_refused_wherever_it_is_cut(cut in 0.0f64..1.0) {
        let k = keys();
        let bytes = testkit::bundle(&k.a, "0.2.0", squashfs());
        let at = ((bytes.len() as f64) * cut) as usize;
        let err = check(&bytes[..at], &k.trust, &policy("0.1.0")).unwrap_err();
        prop_assert!(
            matches!(err, BundleError::Archive(_) | BundleError::NoManifest | BundleError::Unsigned),
            "cut at {} of {}: {}", at, bytes.len(), err
        );
    }

    /// One flipped bit anywhere in the compressed bundle is refused, unless it falls on bits
    /// that deflate decoders ignore (padding, a Huffman table entry no symbol uses): then what
    /// the bundle holds is byte for byte what was signed.
    #[test]
    fn a_flipped_bit_anywhere_is_refused(pos in 0.0f64..1.0, bit in 0u8..8) {
        let k = keys();
        let original = testkit::bundle(&k.a, "0.2.0", squashfs());
        let mut bytes = original.clone();
        let at = ((bytes.len() as f64) * pos) as usize % bytes.len();
        bytes[at] ^= 1 << bit;
        // gzip's header has bytes no one checks (mtime, OS, extra flags): skip them.
        prop_assume!(at >= 10);
        if check(&bytes, &k.trust, &policy("0.1.0")).is_ok() {
            let inflate = |b: &[u8]| {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out)
                    .map(|_| out)
            };
            prop_assert_eq!(
                inflate(&bytes).ok(),
                inflate(&original).ok(),
                "flip at {} accepted with other contents",
                at
            );
        }
    }

    #[test]
    fn versions_order_numerically(a in proptest::array::uniform4(0u64..30), b in proptest::array::uniform4(0u64..30)) {
        let text = |v: [u64; 4]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        let (va, vb): (Version, Version) = (text(a).parse().unwrap(), text(b).parse().unwrap());
        prop_assert_eq!(va.cmp(&vb), a.cmp(&b));
        prop_assert_eq!(va.to_string().parse::<Version>().unwrap(), va);
    }
}

#[test]
fn malformed_versions_are_refused() {
    for bad in ["", "1..2", "v1.2", "1.2.3.4.5", "1.2-rc1", " 1.2"] {
        assert!(bad.parse::<Version>().is_err(), "{bad:?}");
    }
    assert_eq!("1.10".parse::<Version>().unwrap().to_string(), "1.10.0");
}

#[test]
fn extract_writes_exactly_the_verified_files() {
    let k = keys();
    let bytes = testkit::bundle(&k.a, "0.2.0", squashfs());
    let v = check(&bytes, &k.trust, &policy("0.1.0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    extract(bytes.as_slice(), &v, dir.path(), Box::new(|_| {})).unwrap();
    assert_eq!(std::fs::read(dir.path().join("VERSION")).unwrap(), b"0.2.0");
    assert_eq!(
        std::fs::read(dir.path().join("live/filesystem.squashfs")).unwrap(),
        squashfs()
    );
    assert_eq!(std::fs::read(dir.path().join(SIGNATURE)).unwrap().len(), 64);
    // A bundle swapped for another one after verification is caught while extracting.
    let other = testkit::bundle(&k.a, "0.2.0", vec![1, 2, 3]);
    let dir2 = tempfile::tempdir().unwrap();
    let err = extract(other.as_slice(), &v, dir2.path(), Box::new(|_| {})).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Size { .. } | BundleError::Hash { .. } | BundleError::BadEntry { .. }
        ),
        "{err}"
    );
}

/// The keys and signatures of distro/build.sh (openssl) verify here, and ours verify there.
#[tokio::test]
async fn openssl_keys_and_signatures_interoperate() {
    if !crate::shared::testenv::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let keys = dir.path().join("keys");
    sys::fs::ensure_dir(&keys).unwrap();
    let run = |args: Vec<String>| async move {
        let out = sys::cmd::run(&sys::cmd::Cmd::new("openssl").args(args))
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
        out
    };
    let p = |path: &Path| path.display().to_string();
    run(vec![
        "genpkey".into(),
        "-algorithm".into(),
        "ed25519".into(),
        "-out".into(),
        p(&key),
    ])
    .await;
    let pubpem = dir.path().join("pub.pem");
    run(vec![
        "pkey".into(),
        "-in".into(),
        p(&key),
        "-pubout".into(),
        "-out".into(),
        p(&pubpem),
    ])
    .await;
    let (id, _) = parse_public_pem(&std::fs::read_to_string(&pubpem).unwrap()).unwrap();
    // The id as build.sh computes it.
    let der = dir.path().join("pub.der");
    run(vec![
        "pkey".into(),
        "-in".into(),
        p(&key),
        "-pubout".into(),
        "-outform".into(),
        "DER".into(),
        "-out".into(),
        p(&der),
    ])
    .await;
    assert_eq!(id, key_id(&std::fs::read(&der).unwrap()));
    sys::fs::atomic_copy(&pubpem, &keys.join(format!("{id}.development.pem")), 0o644).unwrap();

    let files = testkit::files("0.2.0", squashfs());
    let listed: BTreeMap<&str, serde_json::Value> = files
        .iter()
        .map(|(n, c)| {
            (
                n.as_str(),
                serde_json::json!({"sha256": hex::encode(Sha256::digest(c)), "size": c.len()}),
            )
        })
        .collect();
    let m = serde_json::json!({"format": 1, "version": "0.2.0", "key": {"id": id, "development": true},
        "files": listed, "build": {"arch": this_arch()}, "packages": []});
    let m = serde_json::to_vec(&m).unwrap();
    let mpath = dir.path().join(MANIFEST);
    sys::fs::atomic_write(&mpath, &m, 0o644).unwrap();
    let spath = dir.path().join(SIGNATURE);
    run(vec![
        "pkeyutl".into(),
        "-sign".into(),
        "-inkey".into(),
        p(&key),
        "-rawin".into(),
        "-in".into(),
        p(&mpath),
        "-out".into(),
        p(&spath),
    ])
    .await;
    let mut e = files;
    e.push((MANIFEST.into(), m));
    e.push((SIGNATURE.into(), std::fs::read(&spath).unwrap()));
    let (trust, problems) = Trust::load(&keys);
    assert!(problems.is_empty(), "{problems:?}");
    let v = check(&testkit::tgz(&e), &trust, &policy("0.1.0")).unwrap();
    assert!(v.manifest.key.development);

    // Ours, checked by openssl the way distro/README.md says.
    let ours = Signer::generate();
    let opub = dir.path().join("ours.pem");
    sys::fs::atomic_write(&opub, ours.public_pem().as_bytes(), 0o644).unwrap();
    sys::fs::atomic_write(&spath, &ours.sign(&std::fs::read(&mpath).unwrap()), 0o644).unwrap();
    run(vec![
        "pkeyutl".into(),
        "-verify".into(),
        "-pubin".into(),
        "-inkey".into(),
        p(&opub),
        "-rawin".into(),
        "-in".into(),
        p(&mpath),
        "-sigfile".into(),
        p(&spath),
    ])
    .await;
}
