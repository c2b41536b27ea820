//! The wifi, ssh and system services: the generated WiFi configs against the real
//! `wpa_supplicant`, `hostapd` and `wpa_passphrase` (this kernel has no WiFi radio, so that is as
//! far as they can be proven here), and the real `iohubd --apply` inside a network namespace of
//! the test's own (sshd listens on port 22 there, never on the host) showing files, live edits,
//! host keys kept across a restart, state phases, and no secret on the bus.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // tests edit files and run programs

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::{Phase, ServiceState};
use iohub_tests::netns::{in_netns, Netns};
use iohub_tests::{require_program, until, until_state, Iohubd, Roots};
use iohubctl::Ctl;
use services::wifi::plan::{hostapd_conf, wpa_psk, wpa_supplicant_conf};

const T: Duration = Duration::from_secs(30);

/// Run a program bounded by `timeout(1)` inside a fresh, private network namespace.
fn isolated(secs: u32, args: &[&str]) -> String {
    let out: Output = Command::new("timeout")
        .arg(secs.to_string())
        .args(["unshare", "-n"])
        .args(args)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `f4 2c 6f ...`, as wpa_supplicant's hexdumps print bytes.
fn spaced_hex(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn generated_wifi_configs_pass_the_real_wpa_supplicant_and_hostapd_parsers() {
    for p in [
        "wpa_supplicant",
        "hostapd",
        "wpa_passphrase",
        "unshare",
        "timeout",
    ] {
        if !require_program(p) {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // Quotes, `#`, spaces and non-ASCII: every quoting trap of both formats.
    let ssid = "Caf\u{e9} \"Wi-Fi\" #1";
    let pass = "pa\"ss #word ";
    let psk = wpa_psk(ssid, pass);

    // Our PSK is wpa_passphrase's.
    let out = Command::new("wpa_passphrase")
        .args([ssid, pass])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("\tpsk={psk}\n")), "{text}");

    // wpa_supplicant parses the file and reads exactly our SSID bytes and PSK. Driver `none`
    // on `lo` of a private namespace: it parses the config, then idles until `timeout` ends it.
    let conf = dir.path().join("wpa_supplicant.conf");
    std::fs::write(&conf, wpa_supplicant_conf(ssid, &psk)).unwrap();
    let log = isolated(
        3,
        &[
            "wpa_supplicant",
            "-D",
            "none",
            "-i",
            "lo",
            "-c",
            conf.to_str().unwrap(),
            "-dd",
            "-K",
        ],
    );
    assert!(!log.contains("Failed to read or parse"), "{log}");
    assert!(
        log.contains(&format!("ssid - hexdump_ascii(len={}):", ssid.len())),
        "{log}"
    );
    assert!(
        log.contains(&format!("PSK - hexdump(len=32): {}", spaced_hex(&psk))),
        "{log}"
    );

    // hostapd reads the whole file and runs its consistency checks before it needs a radio:
    // a good file gets as far as the nl80211 driver, which this kernel lacks; a bad one stops
    // at the parser (the negative control shows the check is real).
    let ap = dir.path().join("hostapd.conf");
    std::fs::write(&ap, hostapd_conf("wlan0", ssid, &psk)).unwrap();
    let log = isolated(5, &["hostapd", "-dd", ap.to_str().unwrap()]);
    assert!(!log.contains("errors found in configuration file"), "{log}");
    assert!(
        log.contains("Failed to initialize driver 'nl80211'"),
        "{log}"
    );
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        hostapd_conf("wlan0", ssid, &psk).replace("wpa_psk=", "wpa_psk=00"),
    )
    .unwrap();
    let log = isolated(5, &["hostapd", "-dd", bad.to_str().unwrap()]);
    assert!(log.contains("errors found in configuration file"), "{log}");
}

type Spy = (
    tokio::task::JoinHandle<()>,
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<usize>>,
);

/// Watch `iohub/#` and record every topic whose payload contains one of `secrets`.
fn spy(root: PathBuf, secrets: Vec<String>) -> Spy {
    let leaks = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let (l, s) = (leaks.clone(), seen.clone());
    let task = tokio::spawn(async move {
        let mut ctl = Ctl::connect(&root, T).await.unwrap();
        let _ = ctl
            .follow("iohub/#", |m| {
                *s.lock().unwrap() += 1;
                let text = String::from_utf8_lossy(&m.payload);
                if secrets.iter().any(|x| text.contains(x.as_str())) {
                    l.lock().unwrap().push(m.topic.clone());
                }
                true
            })
            .await;
    });
    (task, leaks, seen)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn keyscan_sees(host_pub: &Path) -> bool {
    let blob = std::fs::read_to_string(host_pub).unwrap();
    let blob = blob.split_whitespace().nth(1).unwrap().to_string();
    let out = Command::new("ssh-keyscan")
        .args(["-T", "3", "-t", "ed25519", "-p", "22", "127.0.0.1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&blob)
}

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOGCHXHv/0rJ21FeJDCXSqYsRxkT5afhOyI+03K6ewDs admin@laptop";
const PASS1: &str = "first-Secret-passphrase-9c1e";
const PASS2: &str = "second-Secret-passphrase-77b0";

fn envvars(base: &str, key: &str, pass: &str, tz: &str) -> String {
    format!(
        "{base}\nIOHUBOS_DOCKER_ENABLED='false'\nIOHUBOS_OPENSSH_ENABLED='true'\n\
         IOHUBOS_SSH_PUBLIC_KEY='{key}'\nIOHUBOS_TIMEZONE='{tz}'\n\
         IOHUBOS_WIFI_MODE='ap'\nIOHUBOS_WIFI_DEVICE='wlan0'\nIOHUBOS_WIFI_AP_SSID='plant floor'\n\
         IOHUBOS_WIFI_AP_PASS='{pass}'\n"
    )
}

fn phase_and_facts(st: &ServiceState) -> (Phase, &serde_json::Value) {
    (st.phase, &st.facts)
}

#[test]
fn ssh_wifi_and_system_apply_live_follow_edits_keep_host_keys_and_never_publish_secrets() {
    for p in ["sshd", "ssh-keygen", "ssh-keyscan", "hostapd", "ip"] {
        if !require_program(p) {
            return;
        }
    }
    // sshd checks its compiled-in privilege separation directory (Debian's unit creates it).
    std::fs::create_dir_all("/run/sshd").unwrap();
    let ns = Netns::new("wss");
    let name = ns.0.clone();
    in_netns(&name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(scenario());
    });
    drop(ns);
}

/// The whole scenario against one daemon in the namespace; each step leaves the state the next
/// one starts from, so the steps are helpers of one test, not tests of their own.
async fn scenario() {
    let roots = Roots::example("router");
    let scene = Scene::new(&roots);
    scene.write_envvars(KEY1, PASS1, "Europe/Rome");
    let secrets = vec![
        PASS1.to_string(),
        PASS2.to_string(),
        wpa_psk("plant floor", PASS1),
        wpa_psk("plant floor", PASS2),
    ];

    // This thread is inside the namespace: so are iohubd, its sshd, and our clients.
    let d = Iohubd::start(&scene.root, &scene.sys, &["--apply"]);
    let (spy1, leaks, seen) = spy(scene.root.clone(), secrets.clone());
    let (fingerprint, sshd_pid) = ssh_serves_the_configured_key(&scene).await;
    wifi_writes_a_private_hostapd_conf(&scene).await;
    system_links_the_timezone(&scene).await;
    an_edit_reaches_all_three_live(&scene, sshd_pid).await;
    a_bad_key_is_refused_and_the_last_good_keys_stay(&scene).await;
    spy1.abort();
    assert_no_leaks(&leaks);
    assert!(*seen.lock().unwrap() > 20, "the spy saw too little");

    // Restart: sshd goes with the daemon, the host key stays.
    let key_bytes = std::fs::read(&scene.host_key).unwrap();
    d.stop();
    until("the old sshd is gone", T, || gone_or_zombie(sshd_pid)).await;
    let d = Iohubd::start(&scene.root, &scene.sys, &["--apply"]);
    let (spy2, leaks, _) = spy(scene.root.clone(), secrets);
    a_restart_keeps_the_host_key(&scene, &fingerprint, &key_bytes).await;
    the_retained_tree_holds_no_secret(&scene.root).await;
    spy2.abort();
    assert_no_leaks(&leaks);
    d.stop();
}

/// The daemon's roots and the files the scenario looks at.
struct Scene {
    root: PathBuf,
    sys: PathBuf,
    /// The example's envvars, before the scenario's settings are appended.
    base: String,
    host_key: PathBuf,
    host_pub: PathBuf,
    authorized_keys: PathBuf,
    hostapd_conf: PathBuf,
}

impl Scene {
    fn new(roots: &Roots) -> Scene {
        let (root, sys) = (roots.root.clone(), roots.system.clone());
        Scene {
            base: std::fs::read_to_string(root.join("envvars")).unwrap(),
            host_key: root.join("runtime/ssh/ssh_host_ed25519_key"),
            host_pub: root.join("runtime/ssh/ssh_host_ed25519_key.pub"),
            authorized_keys: sys.join("etc/iohub/ssh/authorized_keys"),
            hostapd_conf: sys.join("etc/iohub/hostapd.conf"),
            root,
            sys,
        }
    }

    /// Rewrite envvars: the example's, then the given SSH key, AP passphrase and time zone.
    fn write_envvars(&self, key: &str, pass: &str, tz: &str) {
        std::fs::write(
            self.root.join("envvars"),
            envvars(&self.base, key, pass, tz),
        )
        .unwrap();
    }
}

/// ssh: config, keys, host key, a real sshd on port 22 of the namespace. Gives the host key's
/// fingerprint and sshd's pid.
async fn ssh_serves_the_configured_key(scene: &Scene) -> (String, u64) {
    let st = until_state(&scene.root, "ssh", T, |s| {
        s.phase == Phase::Applied && s.facts["sshd"]["running"] == true && s.facts["pid"].is_u64()
    })
    .await;
    let fingerprint = st.facts["host_key_fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(st.facts["host_key_generated"], true);
    assert_eq!(mode(&scene.host_key), 0o600);
    let keys = &scene.authorized_keys;
    assert_eq!(mode(keys), 0o600);
    assert!(std::fs::read_to_string(keys).unwrap().contains(KEY1));
    assert!(scene.sys.join("etc/iohub/sshd_config").is_file());
    until("ssh-keyscan sees the box's host key", T, || {
        keyscan_sees(&scene.host_pub)
    })
    .await;
    let sshd_pid = st.facts["pid"].as_u64().unwrap();
    (fingerprint, sshd_pid)
}

/// wifi: the 0600 hostapd.conf; hostapd cannot find nl80211 here, so it is restarted with
/// backoff and the state says degraded, with its exit.
async fn wifi_writes_a_private_hostapd_conf(scene: &Scene) {
    let conf = &scene.hostapd_conf;
    let st = until_state(&scene.root, "wifi", T, |s| {
        s.phase == Phase::Degraded && s.facts["process"]["starts"].as_u64() >= Some(2)
    })
    .await;
    let (_, facts) = phase_and_facts(&st);
    assert_eq!(facts["role"], "ap");
    assert_eq!(mode(conf), 0o600);
    let text = std::fs::read_to_string(conf).unwrap();
    assert!(
        text.contains(&format!("wpa_psk={}\n", wpa_psk("plant floor", PASS1))),
        "{text}"
    );
    assert!(!text.contains(PASS1));
}

/// system: the localtime link and /etc/timezone.
async fn system_links_the_timezone(scene: &Scene) {
    until_state(&scene.root, "system", T, |s| {
        s.phase == Phase::Applied && s.facts["timezone"] == "Europe/Rome"
    })
    .await;
    assert_eq!(
        std::fs::read_link(scene.sys.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Rome")
    );
    assert_eq!(
        std::fs::read_to_string(scene.sys.join("etc/timezone")).unwrap(),
        "Europe/Rome\n"
    );
}

/// An edit of envvars reaches all three live (watcher -> config -> services); sshd (pid
/// `sshd_pid`) is not restarted for new keys.
async fn an_edit_reaches_all_three_live(scene: &Scene, sshd_pid: u64) {
    let key2 = format!("{KEY1}\nno-pty {KEY1} second");
    scene.write_envvars(&key2, PASS2, "UTC");
    until("authorized_keys has the second key", T, || {
        std::fs::read_to_string(&scene.authorized_keys)
            .unwrap_or_default()
            .contains("second")
    })
    .await;
    until("hostapd.conf has the new PSK", T, || {
        std::fs::read_to_string(&scene.hostapd_conf)
            .unwrap_or_default()
            .contains(&wpa_psk("plant floor", PASS2))
    })
    .await;
    until("localtime points at UTC", T, || {
        std::fs::read_link(scene.sys.join("etc/localtime"))
            .is_ok_and(|l| l == Path::new("/usr/share/zoneinfo/UTC"))
    })
    .await;
    // authorized_keys is read at each login: sshd was not restarted for it.
    let st = until_state(&scene.root, "ssh", T, |s| s.facts["authorized_keys"] == 2).await;
    assert_eq!(st.facts["pid"].as_u64(), Some(sshd_pid));
}

/// A bad key is refused with the variable named; the last good keys stay.
async fn a_bad_key_is_refused_and_the_last_good_keys_stay(scene: &Scene) {
    scene.write_envvars("ssh-ed25519 AAAA-not-base64 x", PASS2, "UTC");
    let st = until_state(&scene.root, "config", T, |s| {
        !s.facts["errors"].as_array().is_none_or(Vec::is_empty)
    })
    .await;
    assert!(
        st.facts["errors"]
            .to_string()
            .contains("IOHUBOS_SSH_PUBLIC_KEY"),
        "{st:?}"
    );
    assert!(std::fs::read_to_string(&scene.authorized_keys)
        .unwrap()
        .contains("second"));
}

/// The spy recorded no topic with a secret.
fn assert_no_leaks(leaks: &Mutex<Vec<String>>) {
    assert!(
        leaks.lock().unwrap().is_empty(),
        "secrets on the bus: {:?}",
        leaks.lock().unwrap()
    );
}

/// Whether process `pid` is gone or a zombie.
fn gone_or_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// After a restart, sshd serves the same host key (`fingerprint`, `key_bytes`), not a new one,
/// and hostapd is started again.
async fn a_restart_keeps_the_host_key(scene: &Scene, fingerprint: &str, key_bytes: &[u8]) {
    let st = until_state(&scene.root, "ssh", T, |s| {
        s.phase == Phase::Applied && s.facts["sshd"]["running"] == true
    })
    .await;
    assert_eq!(st.facts["host_key_generated"], false);
    assert_eq!(st.facts["host_key_fingerprint"].as_str(), Some(fingerprint));
    assert_eq!(std::fs::read(&scene.host_key).unwrap(), key_bytes);
    until("ssh-keyscan sees the same host key", T, || {
        keyscan_sees(&scene.host_pub)
    })
    .await;
    until_state(&scene.root, "wifi", T, |s| {
        s.facts["process"]["starts"].as_u64() >= Some(1)
    })
    .await;
}

/// The retained tree holds no secret either.
async fn the_retained_tree_holds_no_secret(root: &Path) {
    let mut ctl = Ctl::connect(root, T).await.unwrap();
    let tree = ctl.snapshot("iohub/#", T).await.unwrap();
    for (topic, payload) in &tree {
        let text = String::from_utf8_lossy(payload);
        assert!(
            !text.contains(PASS1) && !text.contains(PASS2),
            "{topic}: {text}"
        );
    }
}
