//! The release manifest: signature, names, rollout gate, choice; the publisher's output.

use proptest::prelude::*;

use super::*;
use crate::firmware::publish::{self, Shares};
use crate::firmware::testkit::{self, Signer};

fn entry(version: &str, file: &str, bp: u16) -> ReleaseBundle {
    ReleaseBundle {
        version: version.into(),
        arch: crate::firmware::bundle::this_arch().into(),
        file: file.into(),
        size: 10,
        sha256: "ab".repeat(32),
        rollout_bp: bp,
    }
}

fn release(signer: &Signer, bundles: Vec<ReleaseBundle>) -> Release {
    Release {
        format: FORMAT,
        kind: KIND.into(),
        key: KeyRef {
            id: signer.id.clone(),
            development: false,
        },
        published: "2026-12-07T00:00:00Z".into(),
        bundles,
    }
}

fn signed(signer: &Signer, r: &Release) -> (Vec<u8>, Vec<u8>) {
    publish::sign(r, &signer.signing_key())
}

#[test]
fn a_release_signed_by_a_trusted_key_verifies_and_reads_back() {
    let s = Signer::generate();
    let r = release(&s, vec![entry("1.2.0", "iohub-1.2.0-firmware.tgz", 500)]);
    let (bytes, sig) = signed(&s, &r);
    assert_eq!(Release::verify(&s.trust(), &bytes, &sig), Ok(r));
}

#[test]
fn a_changed_byte_or_a_bad_signature_is_refused() {
    let s = Signer::generate();
    let r = release(&s, vec![entry("1.2.0", "a.tgz", 500)]);
    let (bytes, sig) = signed(&s, &r);
    // Widening the rollout by hand without re-signing.
    let edited = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("500", "10000")
        .into_bytes();
    let e = Release::verify(&s.trust(), &edited, &sig).unwrap_err();
    assert!(
        matches!(e, ReleaseError::Signature(BundleError::BadSignature(_))),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "release manifest: the signature does not verify with key {}",
            s.id
        )
    );
    let mut bad = sig.clone();
    bad[0] ^= 1;
    assert!(Release::verify(&s.trust(), &bytes, &bad).is_err());
    assert!(matches!(
        Release::verify(&s.trust(), &bytes, &sig[..63]),
        Err(ReleaseError::Signature(BundleError::SignatureSize(63)))
    ));
}

#[test]
fn an_unknown_or_revoked_key_is_refused() {
    let s = Signer::generate();
    let stranger = Signer::generate();
    let r = release(&stranger, vec![entry("1.2.0", "a.tgz", 500)]);
    let (bytes, sig) = signed(&stranger, &r);
    assert!(matches!(
        Release::verify(&s.trust(), &bytes, &sig),
        Err(ReleaseError::Signature(BundleError::UnknownKey(_)))
    ));
    let mut trust = stranger.trust();
    trust.revoked.insert(stranger.id.clone());
    assert!(matches!(
        Release::verify(&trust, &bytes, &sig),
        Err(ReleaseError::Signature(BundleError::RevokedKey(_)))
    ));
}

#[test]
fn a_bundle_manifest_is_not_a_release_manifest() {
    let s = Signer::generate();
    let files = testkit::files("1.2.0", vec![1; 10]);
    let m = testkit::manifest("1.2.0", "x86_64", &s, false, &files);
    let sig = s.sign(&m);
    assert!(matches!(
        Release::verify(&s.trust(), &m, &sig),
        Err(ReleaseError::Bad(_))
    ));
}

#[test]
fn names_outside_the_manifest_directory_are_refused() {
    let s = Signer::generate();
    for bad in [
        "../other.tgz",
        "/firmware/a.tgz",
        "https://evil.example/a.tgz",
        "//evil.example/a.tgz",
        "a/../../b.tgz",
        "./a.tgz",
        "a.tgz?x=1",
        "%2e%2e/a.tgz",
        "a\\b.tgz",
        "",
    ] {
        let r = release(&s, vec![entry("1.2.0", bad, 500)]);
        let (bytes, sig) = signed(&s, &r);
        assert!(
            matches!(
                Release::verify(&s.trust(), &bytes, &sig),
                Err(ReleaseError::Name { .. })
            ),
            "{bad:?} accepted"
        );
    }
    let base = Url::parse("https://fw.example:8443/fleet/release.json").unwrap();
    assert_eq!(
        resolve(&base, "b/iohub-1.2.0-firmware.tgz")
            .unwrap()
            .as_str(),
        "https://fw.example:8443/fleet/b/iohub-1.2.0-firmware.tgz"
    );
    assert!(resolve(&base, "../x.tgz").is_err());
}

#[test]
fn a_share_over_10000_or_a_bad_hash_is_refused() {
    let s = Signer::generate();
    let r = release(&s, vec![entry("1.2.0", "a.tgz", 10_001)]);
    let (bytes, sig) = signed(&s, &r);
    assert!(Release::verify(&s.trust(), &bytes, &sig).is_err());
    let mut e = entry("1.2.0", "a.tgz", 1);
    e.sha256 = "xyz".into();
    let (bytes, sig) = signed(&s, &release(&s, vec![e]));
    assert!(Release::verify(&s.trust(), &bytes, &sig).is_err());
}

#[test]
fn the_newest_newer_bundle_inside_the_share_is_chosen_never_a_downgrade() {
    let s = Signer::generate();
    let r = release(
        &s,
        vec![
            entry("1.1.0", "old.tgz", 10_000),
            entry("1.3.0", "new.tgz", 100),
            entry("1.2.0", "mid.tgz", 10_000),
        ],
    );
    let running: Version = "1.1.3".parse().unwrap();
    let arch = crate::firmware::bundle::this_arch();
    // Inside 1.3.0's share.
    let c = choose(&r, running, arch, 50);
    assert_eq!(c.take.unwrap().version, "1.3.0");
    // Outside it: the widest newer one.
    let c = choose(&r, running, arch, 5000);
    assert_eq!(c.newest.unwrap().version, "1.3.0");
    assert_eq!(c.take.unwrap().version, "1.2.0");
    // Running the newest already: nothing, and 1.1.0 (older) never.
    let c = choose(&r, "1.3.0".parse().unwrap(), arch, 0);
    assert_eq!((c.newest, c.take), (None, None));
    // Another architecture's bundles are not candidates.
    let c = choose(&r, running, "riscv64", 0);
    assert_eq!(c.take, None);
}

#[test]
fn rollout_0_keeps_every_box_out_and_10000_lets_every_box_in() {
    for i in 0..10_000u32 {
        let b = bucket(format!("machine-{i}").as_bytes());
        assert!(b < ALL_BP);
        assert!(!in_rollout(b, 0));
        assert!(in_rollout(b, ALL_BP));
    }
}

#[test]
fn buckets_are_roughly_uniform_over_10000_ids() {
    // 10 deciles of 1,000 expected each; a fair hash stays well within 850..1150 (over 4.7
    // standard deviations), a biased mapping does not.
    let mut deciles = [0u32; 10];
    for i in 0..10_000u32 {
        let id = format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        deciles[usize::from(bucket(id.as_bytes()) / 1000)] += 1;
    }
    for (d, n) in deciles.iter().enumerate() {
        assert!((850..1150).contains(n), "decile {d}: {n} ids ({deciles:?})");
    }
}

proptest! {
    #[test]
    fn a_box_in_at_a_share_stays_in_at_every_wider_share(id in proptest::collection::vec(any::<u8>(), 1..40), s in 0u16..=10_000, wider in 0u16..=10_000) {
        let b = bucket(&id);
        prop_assert_eq!(b, bucket(&id), "stable");
        let w = s.max(wider);
        if in_rollout(b, s) {
            prop_assert!(in_rollout(b, w));
        }
    }

    #[test]
    fn any_name_that_verifies_resolves_under_the_manifest_directory(name in "[a-z0-9./_-]{1,30}") {
        let base = Url::parse("https://fw.example/fleet/a/release.json").unwrap();
        if check_name(&name).is_ok() {
            let u = resolve(&base, &name).unwrap();
            prop_assert!(u.as_str().starts_with("https://fw.example/fleet/a/"), "{}", u);
        }
    }
}

#[test]
fn the_publisher_signs_what_the_box_verifies_and_keeps_shares_across_runs() {
    let s = Signer::generate();
    let dir = tempfile::tempdir().unwrap();
    for v in ["1.2.0", "1.3.0"] {
        sys::fs::atomic_write(
            &dir.path().join(format!("iohub-{v}-firmware.tgz")),
            &testkit::bundle(&s, v, vec![7; 100]),
            0o644,
        )
        .unwrap();
    }
    let key = s.signing_key();
    let shares = Shares {
        newest: Some(250),
        ..Shares::default()
    };
    publish::publish(dir.path(), &key, &shares, "now").unwrap();
    let read = |n: &str| std::fs::read(dir.path().join(n)).unwrap();
    let r = Release::verify(&s.trust(), &read("release.json"), &read("release.json.sig")).unwrap();
    let got: Vec<(&str, u16)> = r
        .bundles
        .iter()
        .map(|b| (b.version.as_str(), b.rollout_bp))
        .collect();
    assert_eq!(got, [("1.3.0", 250), ("1.2.0", 0)]);
    let b = &r.bundles[0];
    let bytes = read("iohub-1.3.0-firmware.tgz");
    assert_eq!(b.size, bytes.len() as u64);
    assert_eq!(
        b.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    // Widening one version keeps the other's share.
    let mut shares = Shares::default();
    shares.by_version.insert("1.2.0".into(), 10_000);
    publish::publish(dir.path(), &key, &shares, "later").unwrap();
    let r = Release::verify(&s.trust(), &read("release.json"), &read("release.json.sig")).unwrap();
    let got: Vec<(&str, u16)> = r
        .bundles
        .iter()
        .map(|b| (b.version.as_str(), b.rollout_bp))
        .collect();
    assert_eq!(got, [("1.3.0", 250), ("1.2.0", 10_000)]);
    // A share for a version that is not there is an error, not a silent no-op.
    let mut shares = Shares::default();
    shares.by_version.insert("9.9.9".into(), 1);
    assert!(publish::publish(dir.path(), &key, &shares, "x").is_err());
}

/// A key made by `openssl genpkey` (distro/build.sh's) signs releases the box verifies.
#[tokio::test]
async fn the_key_of_openssl_genpkey_signs_releases() {
    if !crate::shared::testenv::require_tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("k.pem");
    let run = |args: Vec<String>| async move {
        let out = sys::cmd::run(&sys::cmd::Cmd::new("openssl").args(args))
            .await
            .unwrap();
        assert!(out.success(), "{out:?}");
        out
    };
    let p = pem.display().to_string();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    run(args(&["genpkey", "-algorithm", "ed25519", "-out", &p])).await;
    let key =
        publish::SigningKey::from_pem(&std::fs::read_to_string(&pem).unwrap(), false).unwrap();
    let out = run(args(&["pkey", "-pubout", "-in", &p])).await;
    let (id, raw) = crate::firmware::bundle::parse_public_pem(&out.stdout_tail).unwrap();
    assert_eq!(id, key.id);
    let trust = crate::firmware::bundle::Trust {
        keys: vec![crate::firmware::bundle::TrustedKey {
            id,
            development: false,
            raw,
        }],
        revoked: Default::default(),
    };
    let r = Release {
        format: FORMAT,
        kind: KIND.into(),
        key: key.key_ref(),
        published: String::new(),
        bundles: vec![entry("1.2.0", "a.tgz", 1)],
    };
    let (bytes, sig) = publish::sign(&r, &key);
    assert_eq!(Release::verify(&trust, &bytes, &sig), Ok(r));
}
