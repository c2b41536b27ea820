//! The firmware service in a real `iohubd --apply` against disk image files: the slots are
//! ext4 images at `<system>/dev/disk/by-partlabel/iohubboot{1,2}`, grubenv is made and read by
//! the real `grub-editenv`, `/proc/cmdline` is a file of the test. A dropped bundle is verified,
//! written into slot B, read back, armed for one trial boot, and iohubd stops for the reboot; the
//! "rebooted" daemon (command line `iohub.slot=B`) commits once its services are applied. A bad
//! bundle is moved aside with its reason and both slots stay as they were; `kill -9` in the
//! middle of an install leaves slot B invalid, slot A untouched and the drop there to retry.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests edit files and run programs

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iohub_tests::{require_program, until, until_state, Iohubd, Roots};
use services::firmware::testkit::{self, Signer};

const T: Duration = Duration::from_secs(120);
const ONLY: &[&str] = &["--apply", "--only", "config,watcher,firmware"];

struct Box_ {
    roots: Roots,
    signer: Signer,
}

impl Box_ {
    fn slot(&self, n: u8) -> PathBuf {
        self.roots
            .system
            .join(format!("dev/disk/by-partlabel/iohubboot{n}"))
    }
    fn grubenv(&self) -> PathBuf {
        self.roots.system.join("boot/efi/boot/grub/grubenv")
    }
    fn boot_from(&self, slot: &str) {
        std::fs::write(
            self.roots.system.join("proc/cmdline"),
            format!("BOOT_IMAGE=/vmlinuz iohub.media=LABEL=IOHUB_{slot} iohub.slot={slot} quiet\n"),
        )
        .unwrap();
    }
    fn set_version(&self, v: &str) {
        std::fs::write(
            self.roots.system.join("usr/lib/iohub/version"),
            format!("IOHUBOS_VERSION={v}"),
        )
        .unwrap();
    }
    /// Drop a bundle the way a copy tool does (a hidden partial name, then a rename).
    fn drop_bundle(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let dir = self.roots.root.join("firmware");
        std::fs::create_dir_all(&dir).unwrap();
        let part = dir.join(format!(".{name}.part"));
        std::fs::write(&part, bytes).unwrap();
        let path = dir.join(name);
        std::fs::rename(&part, &path).unwrap();
        path
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn editenv(b: &Box_, args: &[&str]) -> String {
    run(Command::new("grub-editenv").arg(b.grubenv()).args(args))
}

fn sha(path: &Path) -> Vec<u8> {
    // The whole image: any write to it shows.
    run(Command::new("sha256sum").arg(path)).into_bytes()
}

/// A box on slot A running 1.1.3: slot A an ext4 image with that bundle's files, slot B empty,
/// grubenv as the installer writes it, the signer's key trusted.
fn setup() -> Option<Box_> {
    for p in [
        "grub-editenv",
        "mkfs.ext4",
        "e2label",
        "truncate",
        "sha256sum",
    ] {
        if !require_program(p) {
            return None;
        }
    }
    let roots = Roots::example("standalone");
    let signer = Signer::generate();
    let b = Box_ { roots, signer };
    let sys = &b.roots.system;
    for d in ["proc", "dev/disk/by-partlabel", "boot/efi/boot/grub"] {
        std::fs::create_dir_all(sys.join(d)).unwrap();
    }
    b.set_version("1.1.3");
    b.signer
        .install(&sys.join("usr/lib/iohub/firmware-keys"), false);
    b.boot_from("A");
    editenv(&b, &["create"]);
    editenv(&b, &["set", "iohub_default=A"]);
    for n in [1, 2] {
        run(Command::new("truncate").args(["-s", "48M"]).arg(b.slot(n)));
    }
    let files = b.roots.dir.path().join("slot-a");
    for (name, content) in testkit::files("1.1.3", vec![3; 4096]) {
        let p = files.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    std::fs::write(files.join("manifest.json"), b"{}").unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "IOHUB_A", "-d"])
        .arg(&files)
        .arg(b.slot(1)));
    Some(b)
}

/// A squashfs stand-in of `mib` MiB that gzip cannot shrink much.
fn payload(mib: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn facts(st: &bus_schema::ServiceState) -> &serde_json::Value {
    &st.facts
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_bundle_is_installed_into_slot_b_tried_and_committed_after_a_healthy_boot() {
    let Some(b) = setup() else { return };
    let a_before = sha(&b.slot(1));
    let mut d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    until_state(&b.roots.root, "firmware", T, |s| facts(s)["booted"] == "A").await;
    let drop = b.drop_bundle(
        "iohub-1.2.0-firmware.tgz",
        &testkit::bundle(&b.signer, "1.2.0", payload(2)),
    );

    // IOHUBOS_UPGRADER_REBOOT defaults to true: once armed, iohubd stops for the reboot.
    let status = d
        .wait_exit(T)
        .expect("iohubd stops for the reboot into the trial");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=A\niohub_trial=B\niohub_trial_left=3\n"
    );
    assert!(!drop.exists(), "an installed drop is removed");
    assert_eq!(sha(&b.slot(1)), a_before, "the booted slot is untouched");
    let console = std::fs::read_to_string(b.roots.system.join("dev/console")).unwrap();
    assert!(
        console.contains("iohub-firmware installed slot=B version=1.2.0"),
        "{console}"
    );
    assert!(
        console.contains("iohub-firmware trial slot=B version=1.2.0"),
        "{console}"
    );

    // GRUB boots B and counts the try; the slot's firmware says 1.2.0.
    editenv(&b, &["set", "iohub_trial_left=2"]);
    b.boot_from("B");
    b.set_version("1.2.0");
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "committed"
    })
    .await;
    assert_eq!(facts(&st)["slots"]["B"]["version"], "1.2.0");
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=B\niohub_trial=\niohub_trial_left=0\n"
    );
    let console = std::fs::read_to_string(b.roots.system.join("dev/console")).unwrap();
    assert!(
        console.contains("iohub-firmware committed slot=B version=1.2.0"),
        "{console}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_bundle_is_moved_aside_with_its_reason_and_both_slots_stay_as_they_were() {
    let Some(b) = setup() else { return };
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    until_state(&b.roots.root, "firmware", T, |s| facts(s)["booted"] == "A").await;
    let (a, bb) = (sha(&b.slot(1)), sha(&b.slot(2)));
    let env = editenv(&b, &["list"]);
    // Signed by a key the box does not trust.
    let stranger = Signer::generate();
    b.drop_bundle(
        "firmware.tgz",
        &testkit::bundle(&stranger, "1.2.0", payload(1)),
    );
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "refused"
    })
    .await;
    let err = st.last_error.unwrap();
    assert!(
        err.message.contains("which this box does not trust"),
        "{err:?}"
    );
    let refused = b.roots.root.join("firmware/refused");
    until("moved aside", T, || refused.join("firmware.tgz").exists()).await;
    let reason = std::fs::read_to_string(refused.join("firmware.tgz.reason")).unwrap();
    assert!(reason.starts_with("unknown-key: signed by key"), "{reason}");
    assert!(!b.roots.root.join("firmware/firmware.tgz").exists());
    assert_eq!((sha(&b.slot(1)), sha(&b.slot(2))), (a, bb));
    assert_eq!(editenv(&b, &["list"]), env);
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_an_install_leaves_slot_b_invalid_and_the_drop_to_retry() {
    let Some(b) = setup() else { return };
    let a_before = sha(&b.slot(1));
    let env = editenv(&b, &["list"]);
    // No reboot after the install: the retry is observed on the same daemon.
    std::fs::write(
        b.roots.root.join("envvars"),
        format!(
            "{}\nIOHUBOS_UPGRADER_REBOOT=false\n",
            std::fs::read_to_string(b.roots.root.join("envvars")).unwrap()
        ),
    )
    .unwrap();
    let mut d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    until_state(&b.roots.root, "firmware", T, |s| facts(s)["booted"] == "A").await;
    let drop = b.drop_bundle(
        "firmware.tgz",
        &testkit::bundle(&b.signer, "1.2.0", payload(24)),
    );
    // Killed once the slot is being written (the staging directory exists after the slot was
    // invalidated).
    let staging = b.roots.root.join("runtime/firmware/staging");
    until("the install has started", T, || {
        staging.join("VERSION").exists()
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_exit(T).unwrap();
    assert!(drop.exists(), "the drop is still there");
    assert_eq!(sha(&b.slot(1)), a_before, "the booted slot is untouched");
    assert_eq!(editenv(&b, &["list"]), env, "nothing armed");
    let label = Command::new("e2label").arg(b.slot(2)).output().unwrap();
    assert_ne!(
        String::from_utf8_lossy(&label.stdout).trim(),
        "IOHUB_B",
        "slot B is not valid"
    );

    // The next start retries the drop and completes it.
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "trial"
    })
    .await;
    assert_eq!(facts(&st)["slots"]["B"]["valid"], true);
    assert_eq!(facts(&st)["slots"]["B"]["version"], "1.2.0");
    assert_eq!(facts(&st)["slots"]["A"]["version"], "1.1.3");
    until("the drop is removed", T, || !drop.exists()).await;
    assert_eq!(sha(&b.slot(1)), a_before);
}

/// Drop a bundle and let the daemon stop for the reboot into the trial of slot B.
async fn armed(b: &Box_) {
    let mut d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    until_state(&b.roots.root, "firmware", T, |s| facts(s)["booted"] == "A").await;
    b.drop_bundle(
        "firmware.tgz",
        &testkit::bundle(&b.signer, "1.2.0", payload(1)),
    );
    assert!(d.wait_exit(T).expect("stops for the reboot").success());
    assert_eq!(
        editenv(b, &["list"]),
        "iohub_default=A\niohub_trial=B\niohub_trial_left=3\n"
    );
}

fn append_envvars(b: &Box_, line: &str) {
    let path = b.roots.root.join("envvars");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\n{line}\n")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trial_that_never_gets_healthy_goes_back_to_slot_a_by_itself_and_says_why() {
    let Some(b) = setup() else { return };
    armed(&b).await;
    // The trial boot: the config service stays degraded (a value it refuses).
    editenv(&b, &["set", "iohub_trial_left=2"]);
    b.boot_from("B");
    b.set_version("1.2.0");
    append_envvars(
        &b,
        "IOHUBOS_UPGRADER_HEALTH_SECS=30\nIOHUBOS_ETH0_MODE=bogus",
    );
    let mut d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["trial"]["waiting_for"] == serde_json::json!(["config"])
    })
    .await;
    assert_eq!(st.phase, bus_schema::Phase::Applying);
    // Slot A is the last good one during the trial: a drop waits, a command is refused.
    let a_before = sha(&b.slot(1));
    let waiting = b.drop_bundle(
        "later.tgz",
        &testkit::bundle(&b.signer, "1.3.0", payload(1)),
    );
    let (status, _, err) = iohub_tests::iohubctl(
        &b.roots.root,
        &["firmware", "install", &waiting.display().to_string()],
    );
    assert!(!status.success());
    assert!(err.contains("this boot is a trial of slot B"), "{err}");
    // No wall clock asserted: the deadline passes, the default is set back, iohubd stops for
    // the reboot.
    assert!(d
        .wait_exit(T)
        .expect("stops for the reboot into slot A")
        .success());
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=A\niohub_trial=\niohub_trial_left=0\n"
    );
    let console = std::fs::read_to_string(b.roots.system.join("dev/console")).unwrap();
    assert!(
        console.contains("iohub-firmware rolled-back slot=A version=1.2.0 reason=\"slot B: not healthy within 30 s: config; rebooting into slot A\""),
        "{console}"
    );
    assert!(waiting.exists(), "the drop waits for the next boot");
    assert_eq!(sha(&b.slot(1)), a_before, "the last good slot is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trial_slot_that_never_boots_is_reported_rolled_back_once_grub_has_used_its_tries() {
    let Some(b) = setup() else { return };
    armed(&b).await;
    // GRUB tried B three times (a kernel that never came up), then cleared the trial and
    // booted A.
    editenv(&b, &["set", "iohub_trial=", "iohub_trial_left=0"]);
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "rolled-back"
    })
    .await;
    let why = &facts(&st)["last"]["error"]["message"];
    assert_eq!(
        why,
        "slot B (version 1.2.0) did not come up within GRUB's 3 tries; back on slot A"
    );
    // The previous image is still in slot B: a rollback command arms it again.
    let (status, out, err) = iohub_tests::iohubctl(&b.roots.root, &["firmware", "rollback"]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=A\niohub_trial=B\niohub_trial_left=3\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_only_verifies_a_drop_and_publishes_what_it_would_do_without_writing_anything() {
    let Some(b) = setup() else { return };
    let (a, bb, env) = (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"]));
    let _d = Iohubd::start(
        &b.roots.root,
        &b.roots.system,
        &["--only", "config,watcher,firmware"],
    );
    until_state(&b.roots.root, "firmware", T, |s| facts(s)["booted"] == "A").await;
    let drop = b.drop_bundle(
        "firmware.tgz",
        &testkit::bundle(&b.signer, "1.2.0", payload(1)),
    );
    let mut ctl = iohubctl::Ctl::connect(&b.roots.root, T).await.unwrap();
    let mut plan = serde_json::Value::Null;
    tokio::time::timeout(
        T,
        ctl.follow("iohub/plan/firmware", |m| {
            plan = serde_json::from_slice(&m.payload).unwrap();
            plan["would_install"] != "firmware/firmware.tgz"
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(plan["slot"], "B");
    assert_eq!(plan["version"], "1.2.0");
    assert!(drop.exists(), "plan-only leaves the drop");
    assert_eq!(
        (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"])),
        (a, bb, env)
    );
}

/// `distro/deb/iohub-trial-guard`, the guard that does not depend on iohubd, run on files: it
/// reboots an uncommitted trial boot, and leaves a committed one or a normal boot alone.
#[test]
fn the_trial_guard_reboots_an_uncommitted_trial_and_nothing_else() {
    for p in ["grub-editenv", "sh", "sed"] {
        if !require_program(p) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (env, cmdline, rebooted, console) = (
        dir.path().join("grubenv"),
        dir.path().join("cmdline"),
        dir.path().join("rebooted"),
        dir.path().join("console"),
    );
    let guard = |boot: &str, grub: &[&str]| -> bool {
        let _ = std::fs::remove_file(&rebooted);
        run(Command::new("grub-editenv").arg(&env).arg("create"));
        run(Command::new("grub-editenv").arg(&env).arg("set").args(grub));
        std::fs::write(&cmdline, format!("quiet iohub.slot={boot} iohub-boot2\n")).unwrap();
        let script = iohub_tests::workspace().join("distro/deb/iohub-trial-guard");
        run(Command::new("sh")
            .arg(script)
            .env("IOHUB_GRUBENV", &env)
            .env("IOHUB_CMDLINE", &cmdline)
            .env("IOHUB_CONSOLE", &console)
            .env("IOHUB_TRIAL_GUARD_SECS", "0")
            .env("IOHUB_REBOOT", format!("touch {}", rebooted.display())));
        rebooted.exists()
    };
    assert!(guard(
        "B",
        &["iohub_default=A", "iohub_trial=B", "iohub_trial_left=2"]
    ));
    let line = std::fs::read_to_string(&console).unwrap();
    assert!(
        line.contains(
            "iohub-firmware guard-reboot slot=B reason=\"trial not committed within 0 s\""
        ),
        "{line}"
    );
    // Committed (trial cleared), or a normal boot of the default slot: no reboot.
    assert!(!guard(
        "B",
        &["iohub_default=B", "iohub_trial=", "iohub_trial_left=0"]
    ));
    assert!(!guard(
        "A",
        &["iohub_default=A", "iohub_trial=B", "iohub_trial_left=0"]
    ));
}

// ---- Self-upgrade from an HTTPS source (a real TLS server on 127.0.0.1, a test CA, client
// certificates, the release manifest written by `iohub-firmware-publish`).

use iohub_tests::https::{Pki, Server};

const BUNDLE: &str = "iohub-1.2.0-firmware.tgz";

/// A box whose upgrader polls `server` every 10 s, with `pki`'s CA pinned and its client
/// certificate (`client`); the release of one bundle 1.2.0 published at `rollout_bp`.
struct Source {
    server: Server,
    dir: PathBuf,
}

fn publish(b: &Box_, dir: &Path, rollout_bp: u16) {
    let key = dir.join("../signing.pem");
    std::fs::write(&key, b.signer.private_pem()).unwrap();
    run(Command::new(iohub_tests::binary("iohub-firmware-publish"))
        .args(["--key"])
        .arg(&key)
        .args(["--rollout-bp", &rollout_bp.to_string()])
        .arg(dir));
}

async fn source(b: &Box_, pki: &Pki, require_client: bool, mib: usize, rollout_bp: u16) -> Source {
    let dir = b.roots.dir.path().join("www/fleet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(BUNDLE),
        testkit::bundle(&b.signer, "1.2.0", payload(mib)),
    )
    .unwrap();
    publish(b, &dir, rollout_bp);
    let server = Server::start(dir.clone(), pki, require_client).await;
    Source { server, dir }
}

/// Point the box at the source: `ca` and the client certificate under `<root>/certs/`.
fn configure(b: &Box_, s: &Source, box_pki: &Pki, client: bool) {
    box_pki.write_client_files(&b.roots.root.join("certs"));
    std::fs::create_dir_all(b.roots.system.join("etc")).unwrap();
    std::fs::write(
        b.roots.system.join("etc/machine-id"),
        "4f1c0de5a0b24f7e9d3c6b8a1e2f3a4b\n",
    )
    .unwrap();
    let mut vars = format!(
        "IOHUBOS_UPGRADER_REBOOT=false\nIOHUBOS_UPGRADER_POLL_SECS=10\nIOHUBOS_UPGRADER_URL={}\nIOHUBOS_UPGRADER_CA=certs/ca.pem",
        s.server.url("release.json")
    );
    if client {
        vars.push_str(
            "\nIOHUBOS_UPGRADER_CERT=certs/client.pem\nIOHUBOS_UPGRADER_KEY=certs/client.key",
        );
    }
    append_envvars(b, &vars);
}

fn bundle_requests(s: &Source) -> Vec<iohub_tests::https::Logged> {
    s.server
        .log()
        .into_iter()
        .filter(|l| l.path == BUNDLE)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_of_0_keeps_the_box_out_and_10000_downloads_installs_and_arms_the_trial() {
    let Some(b) = setup() else { return };
    let pki = Pki::generate("fleet");
    let s = source(&b, &pki, true, 2, 0).await;
    configure(&b, &s, &pki, true);
    let (a, bb, env) = (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"]));
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["upgrader"]["result"] == "not-in-rollout"
    })
    .await;
    let up = &facts(&st)["upgrader"];
    assert_eq!(up["newest"], "1.2.0");
    assert_eq!(up["rollout_bp"], 0);
    assert_eq!(up["in_rollout"], false);
    assert!(bundle_requests(&s).is_empty(), "nothing downloaded");
    assert_eq!(
        (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"])),
        (a.clone(), bb, env)
    );

    // The operator widens the rollout to every box: the next poll takes it.
    publish(&b, &s.dir, 10_000);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "trial"
    })
    .await;
    assert_eq!(facts(&st)["slots"]["B"]["version"], "1.2.0");
    assert_eq!(facts(&st)["upgrader"]["in_rollout"], true);
    assert_eq!(facts(&st)["upgrader"]["result"], "downloaded");
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=A\niohub_trial=B\niohub_trial_left=3\n"
    );
    assert_eq!(sha(&b.slot(1)), a, "the booted slot is untouched");
    let got = bundle_requests(&s);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].range.clone(), got[0].status), (None, 200));
    // The downloaded bundle is removed once installed.
    let dl = b.roots.root.join("runtime/firmware/download");
    until("the download is removed", T, || {
        std::fs::read_dir(&dl).unwrap().next().is_none()
    })
    .await;
    let console = std::fs::read_to_string(b.roots.system.join("dev/console")).unwrap();
    assert!(
        console.contains("iohub-firmware trial slot=B version=1.2.0"),
        "{console}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_client_certificate_or_with_another_ca_pinned_the_source_is_refused() {
    let Some(b) = setup() else { return };
    let pki = Pki::generate("fleet");
    let s = source(&b, &pki, true, 1, 10_000).await;
    // No client certificate.
    configure(&b, &s, &pki, false);
    let (a, bb, env) = (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"]));
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["upgrader"]["result"] == "failed"
    })
    .await;
    let msg = facts(&st)["upgrader"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("CertificateRequired"), "{msg}");
    assert_eq!(st.last_error.unwrap().message, msg, "the state's error too");
    assert!(
        s.server.log().is_empty(),
        "no request got past the handshake"
    );

    // The client certificate, but the CA of another PKI pinned: the server is not trusted.
    let other = Pki::generate("other");
    std::fs::write(b.roots.root.join("certs/ca.pem"), &other.ca).unwrap();
    std::fs::write(b.roots.root.join("certs/client.pem"), &pki.client_cert).unwrap();
    append_envvars(
        &b,
        "IOHUBOS_UPGRADER_CERT=certs/client.pem\nIOHUBOS_UPGRADER_KEY=certs/client.key",
    );
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["upgrader"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("UnknownIssuer"))
    })
    .await;
    assert_eq!(facts(&st)["upgrader"]["result"], "failed");
    assert!(s.server.log().is_empty(), "{:?}", s.server.log());
    assert_eq!(
        (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"])),
        (a, bb, env)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_manifest_with_a_bad_signature_is_refused_and_nothing_is_downloaded() {
    let Some(b) = setup() else { return };
    let pki = Pki::generate("fleet");
    let s = source(&b, &pki, true, 1, 0).await;
    // Widened by hand, not re-signed.
    let path = s.dir.join("release.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"rollout_bp\": 0"), "{text}");
    std::fs::write(
        &path,
        text.replace("\"rollout_bp\": 0", "\"rollout_bp\": 10000"),
    )
    .unwrap();
    configure(&b, &s, &pki, true);
    let (a, bb, env) = (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"]));
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["upgrader"]["result"] == "refused"
    })
    .await;
    let msg = facts(&st)["upgrader"]["error"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "release manifest: the signature does not verify with key {}",
            b.signer.id
        )
    );
    assert_eq!(st.phase, bus_schema::Phase::Degraded);
    assert!(bundle_requests(&s).is_empty(), "nothing downloaded");
    assert!(
        facts(&st)["upgrader"].get("newest").is_none(),
        "nothing in it used"
    );
    assert_eq!(
        (sha(&b.slot(1)), sha(&b.slot(2)), editenv(&b, &["list"])),
        (a, bb, env)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_in_the_middle_of_a_download_resumes_it_with_a_range_request_after_restart() {
    let Some(b) = setup() else { return };
    let pki = Pki::generate("fleet");
    let s = source(&b, &pki, true, 12, 10_000).await;
    let size = std::fs::metadata(s.dir.join(BUNDLE)).unwrap().len();
    s.server.set_throttle(2 << 20);
    configure(&b, &s, &pki, true);
    let mut d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let part = b
        .roots
        .root
        .join(format!("runtime/firmware/download/{BUNDLE}.part"));
    until("a part of the bundle is on disk", T, || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 3 << 20)
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_exit(T).unwrap();
    let had = std::fs::metadata(&part).unwrap().len();
    assert!(had > 0 && had < size, "{had} of {size}");

    s.server.set_throttle(0);
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "trial"
    })
    .await;
    assert_eq!(facts(&st)["slots"]["B"]["version"], "1.2.0");
    let resumed = facts(&st)["upgrader"]["resumed_from"].as_u64().unwrap();
    assert!(resumed >= had, "resumed from {resumed}, {had} were on disk");
    let got = bundle_requests(&s);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].range, None);
    assert_eq!(got[1].range, Some(format!("bytes={resumed}-")));
    assert_eq!(got[1].status, 206);
}

#[tokio::test(flavor = "multi_thread")]
async fn iohubctl_firmware_install_of_an_https_url_uses_the_source_tls_and_arms_the_trial() {
    let Some(b) = setup() else { return };
    let pki = Pki::generate("fleet");
    // Rollout 0: the poll takes nothing; the command does.
    let s = source(&b, &pki, true, 1, 0).await;
    configure(&b, &s, &pki, true);
    let _d = Iohubd::start(&b.roots.root, &b.roots.system, ONLY);
    until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["upgrader"]["result"] == "not-in-rollout"
    })
    .await;
    let (status, out, err) = iohub_tests::iohubctl(
        &b.roots.root,
        &["firmware", "install", &s.server.url(BUNDLE)],
    );
    assert!(status.success(), "{out}{err}");
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "trial"
    })
    .await;
    assert_eq!(facts(&st)["slots"]["B"]["version"], "1.2.0");
    assert_eq!(bundle_requests(&s).len(), 1);
    // A URL the server does not have: a clear error, nothing written.
    let (a, bb) = (sha(&b.slot(1)), sha(&b.slot(2)));
    let (status, out, err) = iohub_tests::iohubctl(
        &b.roots.root,
        &["firmware", "install", &s.server.url("missing.tgz")],
    );
    assert!(status.success(), "accepted, then fetched: {out}{err}");
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "failed"
    })
    .await;
    let msg = st.last_error.unwrap().message;
    assert!(msg.contains("missing.tgz") && msg.contains("404"), "{msg}");
    assert_eq!((sha(&b.slot(1)), sha(&b.slot(2))), (a, bb));
}

/// mosquitto on 127.0.0.1:`port`, killed when dropped.
struct Mosquitto(std::process::Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_require_bridge_a_trial_commits_only_once_the_bridge_remote_is_connected() {
    let Some(b) = setup() else { return };
    if !require_program("mosquitto") {
        return;
    }
    armed(&b).await;
    // A free port on loopback for the remote, not listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    editenv(&b, &["set", "iohub_trial_left=2"]);
    b.boot_from("B");
    b.set_version("1.2.0");
    append_envvars(
        &b,
        &format!(
            "IOHUBOS_UPGRADER_REQUIRE_BRIDGE=true\nIOHUBOS_BRIDGE_ENABLED=true\n\
             IOHUBOS_BRIDGE_URL=mqtt://127.0.0.1:{port}\nIOHUBOS_BRIDGE_TOPICS=plant/#"
        ),
    );
    let _d = Iohubd::start(
        &b.roots.root,
        &b.roots.system,
        &["--apply", "--only", "config,watcher,firmware,bridge"],
    );
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["trial"]["waiting_for"]
            .as_array()
            .is_some_and(|w| {
                w.iter()
                    .any(|x| x == "bridge (its remote is not connected)")
            })
    })
    .await;
    assert_eq!(st.phase, bus_schema::Phase::Applying);
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=A\niohub_trial=B\niohub_trial_left=2\n",
        "not committed while the remote is unreachable"
    );
    // The remote comes up: the bridge connects, the trial commits.
    let conf = b.roots.dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"),
    )
    .unwrap();
    let _remote = Mosquitto(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let st = until_state(&b.roots.root, "firmware", T, |s| {
        facts(s)["last"]["event"] == "committed"
    })
    .await;
    assert_eq!(facts(&st)["booted"], "B");
    assert_eq!(
        editenv(&b, &["list"]),
        "iohub_default=B\niohub_trial=\niohub_trial_left=0\n"
    );
}
