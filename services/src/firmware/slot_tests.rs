//! Slot writing against disk image files, with the real mkfs.ext4 and e2label.

use super::*;
use crate::firmware::bundle::{Policy, Trust};
use crate::firmware::testkit::{self, Signer};
use sys::cmd::{run, Cmd};

#[test]
fn the_booted_slot_comes_from_the_kernel_command_line() {
    let line = "BOOT_IMAGE=/vmlinuz iohub.media=LABEL=IOHUB_B iohub.slot=B iohub-boot2 quiet";
    assert_eq!(booted(line), Some(Slot::B));
    // The original's markers alone.
    assert_eq!(booted("boot=live iohub-boot1 quiet"), Some(Slot::A));
    assert_eq!(booted("root=/dev/sda1"), None);
}

pub(crate) fn tools() -> bool {
    ["mkfs.ext4", "e2label"]
        .iter()
        .all(|t| crate::shared::testenv::require_tool(t))
}

/// A sparse image file of `mib` MiB.
pub(crate) async fn image(path: &Path, mib: u32) {
    let out = run(&Cmd::new("truncate")
        .arg("-s")
        .arg(format!("{mib}M"))
        .arg(path))
    .await
    .unwrap();
    assert!(out.success(), "{out:?}");
}

async fn sha(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    hex::encode(Sha256::digest(bytes))
}

fn verified(signer: &Signer, keys: &Path, bytes: &[u8]) -> Verified {
    signer.install(keys, false);
    let (trust, _) = Trust::load(keys);
    let policy = Policy {
        running: "0.1.0".parse().unwrap(),
        arch: bundle::this_arch().into(),
        allow_downgrade: false,
    };
    bundle::verify(bytes, &trust, &policy, Box::new(|_| {})).unwrap()
}

#[tokio::test]
async fn a_bundle_is_written_into_the_other_slot_image_and_read_back() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    image(&a, 16).await;
    image(&b, 16).await;
    // Slot A holds a running 0.1.0.
    let signer = Signer::generate();
    let staged = dir.path().join("a-files");
    let old = testkit::bundle(&signer, "0.1.0", vec![7; 4096]);
    let v_old = verified(&signer, &dir.path().join("keys"), &old);
    bundle::extract(old.as_slice(), &v_old, &staged, Box::new(|_| {})).unwrap();
    let out = run(&Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "IOHUB_A", "-d"])
        .arg(&staged)
        .arg(&a))
    .await
    .unwrap();
    assert!(out.success(), "{out:?}");
    let a_before = sha(&a).await;
    assert_eq!(inspect(&a, Slot::A).version.as_deref(), Some("0.1.0"));
    assert!(inspect(&b, Slot::B)
        .problem
        .unwrap()
        .contains("no ext4 file system"));

    let path = dir.path().join("bundle.tgz");
    let bytes = testkit::bundle(
        &signer,
        "0.2.0",
        (0..3_000_000u32).map(|i| (i % 253) as u8).collect(),
    );
    sys::fs::atomic_write(&path, &bytes, 0o644).unwrap();
    let v = verified(&signer, &dir.path().join("keys"), &bytes);
    let target = Target {
        slot: Slot::B,
        device: b.clone(),
        staging: dir.path().join("staging"),
    };
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = steps.clone();
    install(&path, &v, &target, move |step, _| {
        let mut s = seen.lock().unwrap();
        if s.last() != Some(&step) {
            s.push(step);
        }
    })
    .await
    .unwrap();
    assert_eq!(
        *steps.lock().unwrap(),
        [Step::Writing, Step::ReadingBack],
        "extracting reports only every 8 MiB of a small bundle"
    );
    let info = inspect(&b, Slot::B);
    assert!(info.valid, "{info:?}");
    assert_eq!(info.version.as_deref(), Some("0.2.0"));
    assert_eq!(
        info.manifest_sha256.as_deref(),
        Some(v.manifest_sha256.as_str())
    );
    assert!(!target.staging.exists(), "the staging copy is removed");
    assert_eq!(sha(&a).await, a_before, "the booted slot is untouched");
    // The read-back check reads the device: a changed byte in the squashfs is found.
    read_back(&b, &v.manifest, &v.manifest_sha256).unwrap();
}

#[tokio::test]
async fn a_failed_install_leaves_the_slot_invalid() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b.img");
    image(&b, 16).await;
    let signer = Signer::generate();
    let good = testkit::bundle(&signer, "0.2.0", vec![1; 10_000]);
    let v = verified(&signer, &dir.path().join("keys"), &good);
    // First a good install, so the slot was valid before.
    let path = dir.path().join("bundle.tgz");
    sys::fs::atomic_write(&path, &good, 0o644).unwrap();
    let target = Target {
        slot: Slot::B,
        device: b.clone(),
        staging: dir.path().join("staging"),
    };
    install(&path, &v, &target, |_, _| {}).await.unwrap();
    assert!(inspect(&b, Slot::B).valid);
    // The file is replaced after it was verified: the install stops while extracting.
    let swapped = testkit::bundle(&signer, "0.2.0", vec![2; 10_000]);
    sys::fs::atomic_write(&path, &swapped, 0o644).unwrap();
    let err = install(&path, &v, &target, |_, _| {}).await.unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    let info = inspect(&b, Slot::B);
    assert!(!info.valid);
    assert!(info.problem.unwrap().contains("no ext4 file system"));
}
