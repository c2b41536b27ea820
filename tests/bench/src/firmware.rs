//! The firmware benchmark (group `firmware`): a signed bundle with a 96 MiB squashfs stand-in
//! (incompressible bytes, as a zstd squashfs is):
//! - verification (`bundle::verify`: gunzip, SHA-256 of every file, the signature) against
//!   `gzip -dc | sha256sum` of the same file in the same run (the same work by the standard tools);
//! - install into a slot image file (`slot::install`: zero the slot, extract and re-check, `mkfs.ext4
//!   -d`, fsync, read every file back, label) against `dd conv=fsync` of the same payload bytes
//!   onto the same image file (the physical limit of the write).
//!
//! - download from an HTTPS source on 127.0.0.1 (the test server of `iohub_tests::https`, TLS
//!   1.3 with a client certificate): the firmware's client (`sys::http::Fetcher::download`:
//!   rustls, fsync every 4 MiB, then the SHA-256 of the file against the manifest's) against
//!   `curl --cacert --cert --key -o` then `sha256sum` of the same file from the same server.
//!
//! Three rounds each, medians; figures per 100 MB (10^8 bytes) of payload.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use services::firmware::bundle::{self, Policy, Trust};
use services::firmware::grubenv::Slot;
use services::firmware::slot;
use services::firmware::testkit::{self, Signer};

const ROUNDS: usize = 3;
const PAYLOAD_MIB: usize = 96;

fn sh(script: &str) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn payload() -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..PAYLOAD_MIB << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn per_100mb(d: Duration, bytes: u64) -> f64 {
    d.as_secs_f64() * 1e8 / bytes as f64
}

/// The firmware figures, as a report line.
pub(crate) async fn run() -> String {
    for p in ["mkfs.ext4", "e2label", "dd", "gzip", "sha256sum"] {
        if !iohub_tests::require_program(p) {
            return "firmware: skipped".into();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::generate();
    let keys = dir.path().join("keys");
    signer.install(&keys, false);
    let (trust, _) = Trust::load(&keys);
    let policy = Policy {
        running: "0.1.0".parse().unwrap(),
        arch: bundle::this_arch().into(),
        allow_downgrade: false,
    };
    let squashfs = payload();
    let bytes = testkit::bundle(&signer, "0.2.0", squashfs.clone());
    let path = dir.path().join("bundle.tgz");
    std::fs::write(&path, &bytes).unwrap();
    let raw = dir.path().join("squashfs");
    std::fs::write(&raw, &squashfs).unwrap();
    let size = squashfs.len() as u64;
    drop((bytes, squashfs));
    let image = dir.path().join("slot.img");
    sh(&format!("truncate -s 160M {}", image.display()));

    let (mut ours_v, mut peer_v, mut ours_i, mut peer_i) = (vec![], vec![], vec![], vec![]);
    let mut verified = None;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
        verified = Some(bundle::verify(file, &trust, &policy, Box::new(|_| {})).unwrap());
        ours_v.push(t.elapsed());
        let t = Instant::now();
        sh(&format!(
            "gzip -dc {} | sha256sum >/dev/null",
            path.display()
        ));
        peer_v.push(t.elapsed());
    }
    let verified = verified.unwrap();
    let target = slot::Target {
        slot: Slot::B,
        device: image.clone(),
        staging: dir.path().join("staging"),
    };
    let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for _ in 0..ROUNDS {
        drop_caches_of(&image);
        let t = Instant::now();
        let seen = steps.clone();
        seen.lock().unwrap().clear();
        slot::install(&path, &verified, &target, move |step, _| {
            let mut s = seen.lock().unwrap();
            if s.last().map(|(st, _)| *st) != Some(step) {
                s.push((step, t.elapsed()));
            }
        })
        .await
        .unwrap();
        ours_i.push(t.elapsed());
        let t = Instant::now();
        sh(&format!(
            "dd if={} of={} bs=1M conv=fsync,notrunc status=none",
            raw.display(),
            image.display()
        ));
        peer_i.push(t.elapsed());
    }
    // The split of the last round: extract (and re-check), mkfs.ext4 -d + fsync, read-back + label.
    let split = {
        let s = steps.lock().unwrap();
        let at = |step| s.iter().find(|(st, _)| *st == step).map(|(_, d)| *d);
        match (
            at(slot::Step::Writing),
            at(slot::Step::ReadingBack),
            ours_i.last(),
        ) {
            (Some(w), Some(r), Some(end)) => format!(
                "extract {:.2} s, mkfs.ext4 -d {:.2} s, read-back and label {:.2} s",
                w.as_secs_f64(),
                (r - w).as_secs_f64(),
                (*end - r).as_secs_f64()
            ),
            _ => String::new(),
        }
    };
    let download = download_figures(&path, dir.path()).await;
    let (ov, pv, oi, pi) = (
        median(ours_v),
        median(peer_v),
        median(ours_i),
        median(peer_i),
    );
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    format!(
        "firmware: {PAYLOAD_MIB} MiB payload, medians of {ROUNDS}\n\
         verify: {:.2} s per 100 MB (gzip -dc | sha256sum of the same bundle: {:.2} s; ratio {:.2})\n\
         install into a slot image: {:.1} MB/s, {:.2} s per 100 MB (dd conv=fsync of the same bytes: {:.1} MB/s; ratio {:.2}); last round: {split}\n\
         {download}",
        per_100mb(ov, size),
        per_100mb(pv, size),
        ov.as_secs_f64() / pv.as_secs_f64(),
        mbps(oi),
        per_100mb(oi, size),
        mbps(pi),
        oi.as_secs_f64() / pi.as_secs_f64(),
    )
}

/// Flush the image's dirty pages so that one round's writeback does not land in the next.
fn drop_caches_of(image: &Path) {
    sh(&format!("sync {}", image.display()));
}

/// Download + SHA-256 of the bundle from a local HTTPS server requiring a client certificate:
/// the firmware's client against curl + sha256sum, same server, same file, same run.
async fn download_figures(bundle: &Path, dir: &Path) -> String {
    use services::firmware::{config::UpgraderConfig, poll, publish};
    if !iohub_tests::require_program("curl") {
        return "download: skipped (no curl)".into();
    }
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(bundle, www.join("bundle.tgz")).unwrap();
    let (size, sha) = publish::sha256_file(bundle).unwrap();
    let pki = iohub_tests::https::Pki::generate("bench");
    let certs = dir.join("certs");
    pki.write_client_files(&certs);
    let server = iohub_tests::https::Server::start(www, &pki, true).await;
    let url = server.url("bundle.tgz");
    // Absolute paths name files under the system root: `/` here, the certificates are in `dir`.
    let paths = services::ctx::Paths::new(dir.join("root"), "/");
    let c = |n: &str| certs.join(n).display().to_string();
    let config = UpgraderConfig {
        ca: Some(c("ca.pem")),
        cert: Some(c("client.pem")),
        key: Some(c("client.key")),
        ..UpgraderConfig::default()
    };
    let client = poll::fetcher(&paths, &config).unwrap();
    let parsed = reqwest::Url::parse(&url).unwrap();
    let (mut ours, mut peer) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let part = dir.join(format!("ours-{round}.part"));
        let t = Instant::now();
        client
            .download(&parsed, &part, Some(size), |_| {})
            .await
            .unwrap();
        let (n, got) = publish::sha256_file(&part).unwrap();
        assert_eq!((n, &got), (size, &sha));
        ours.push(t.elapsed());
        std::fs::remove_file(&part).unwrap();
        let out = dir.join(format!("curl-{round}"));
        let t = Instant::now();
        let status = tokio::process::Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(c("ca.pem"))
            .arg("--cert")
            .arg(c("client.pem"))
            .arg("--key")
            .arg(c("client.key"))
            .arg("-o")
            .arg(&out)
            .arg(&url)
            .status()
            .await
            .unwrap();
        assert!(status.success());
        sh(&format!("sha256sum {} >/dev/null", out.display()));
        peer.push(t.elapsed());
        std::fs::remove_file(&out).unwrap();
    }
    let (o, p) = (median(ours), median(peer));
    let mbps = |d: Duration| size as f64 / 1e6 / d.as_secs_f64();
    format!(
        "download + SHA-256 of the {:.1} MB bundle over HTTPS (127.0.0.1, TLS 1.3, client certificate): {:.1} MB/s (curl --cacert --cert -o + sha256sum, same server: {:.1} MB/s; ratio {:.2})",
        size as f64 / 1e6,
        mbps(o),
        mbps(p),
        o.as_secs_f64() / p.as_secs_f64(),
    )
}
