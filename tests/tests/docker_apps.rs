//! The apps and deployer services against the real dockerd and docker-compose 1.29 (nothing is
//! pulled: images are imported offline from busybox-static). The daemon runs in process with
//! only the config, watcher, apps and deployer services, in the live backend, so that no other
//! service touches this host. Containers use `network_mode: none` (no host network changes).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::Bus;
use bus_schema::{ServiceName, Verb};
use iohub_tests::docker::{busybox_image, docker_available, DockerCleanup};
use iohub_tests::{require_program, Roots};
use services::daemon::{Daemon, DaemonOptions};
use services::supervisor::ServiceSpec;
use services::{Backend, Paths};

const T: Duration = Duration::from_secs(90);

/// A unique, valid app name for this test.
fn app_name(what: &str) -> String {
    format!("t{}-{what}-{:x}", std::process::id(), rand_u16())
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (t ^ (t >> 16)) as u16
}

struct Fixture {
    roots: Roots,
    daemon: Option<Daemon>,
}

impl Fixture {
    async fn start() -> Fixture {
        let roots = Roots::example("standalone");
        std::fs::create_dir_all(roots.root.join("deploy")).unwrap();
        std::fs::create_dir_all(roots.root.join("docker/apps")).unwrap();
        Fixture {
            roots,
            daemon: None,
        }
    }

    async fn run(&mut self) {
        let specs = vec![
            ServiceSpec::new(ServiceName::Config, services::config::run),
            ServiceSpec::new(ServiceName::Watcher, services::watcher::run),
            services::apps::spec(),
            services::deployer::spec(),
        ];
        let opts = DaemonOptions {
            paths: Paths::new(&self.roots.root, &self.roots.system),
            backend: Backend::Live,
            control_addr: "127.0.0.1:0".parse().unwrap(),
            endpoints: services::settings::Endpoints::ephemeral(),
        };
        self.daemon = Some(Daemon::start(opts, specs).await.unwrap());
    }

    fn bus(&self) -> Bus {
        self.daemon.as_ref().unwrap().bus()
    }

    fn root(&self) -> &Path {
        &self.roots.root
    }

    async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown(Duration::from_secs(15)).await;
        }
    }
}

/// Follow `filter` until `done` holds for one message's JSON payload; returns it.
async fn wait_for(
    bus: &Bus,
    filter: &str,
    mut done: impl FnMut(&str, &serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut sub = bus.subscribe(&[filter]).await.unwrap();
    let fut = async {
        loop {
            let m = sub.recv().await.expect("bus closed");
            let v: serde_json::Value =
                serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
            if done(&m.topic, &v) {
                return v;
            }
        }
    };
    tokio::time::timeout(T, fut)
        .await
        .unwrap_or_else(|_| panic!("no matching message on {filter} within {T:?}"))
}

async fn wait_running(bus: &Bus, app: &str, running: u64, total: u64) -> serde_json::Value {
    wait_for(bus, &format!("iohub/state/apps/{app}"), |_, v| {
        v["facts"]["running"] == running && v["facts"]["total"] == total
    })
    .await
}

async fn request(bus: &Bus, verb: Verb, body: serde_json::Value) -> bus_schema::Reply {
    bus.request(ServiceName::Apps, verb, body, T).await.unwrap()
}

fn compose_two_services(image: &str) -> String {
    format!(
        r#"version: "3.7"
services:
  web:
    image: {image}
    network_mode: none
    command: ["sh", "-c", "trap 'exit 0' TERM; echo hello > /www/index.html; httpd -f -p 8080 -h /www & wait"]
  writer:
    image: {image}
    network_mode: none
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 1 & wait $$!; done"]
"#
    )
}

fn compose_writer(image: &str) -> String {
    format!(
        r#"version: "3.7"
services:
  writer:
    image: {image}
    network_mode: none
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do echo tick; sleep 1 & wait $$!; done"]
"#
    )
}

const START_SH: &str =
    "#!/bin/sh\ncd \"$(dirname \"$0\")\"\nexec docker-compose -f docker-compose.yml up -d\n";

fn write_app(root: &Path, app: &str, compose: &str, mode: u32) {
    let dir = root.join("docker/apps").join(app);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), compose).unwrap();
    std::fs::write(dir.join("start.sh"), START_SH).unwrap();
    std::fs::set_permissions(dir.join("start.sh"), std::fs::Permissions::from_mode(mode)).unwrap();
}

fn prerequisites() -> bool {
    docker_available() && require_program("docker-compose")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_service_compose_app_starts_at_daemon_start_survives_stop_and_start_and_streams_logs()
{
    if !prerequisites() {
        return;
    }
    let app = app_name("demo");
    let image = busybox_image(&app);
    let _cleanup = DockerCleanup {
        projects: vec![app.clone()],
        images: vec![image.clone()],
        networks: vec![],
    };
    let mut f = Fixture::start().await;
    write_app(f.root(), &app, &compose_two_services(&image), 0o755);
    f.run().await;
    let bus = f.bus();

    // Running, and start.sh's record is in (containers may show up before start.sh exits).
    let st = wait_for(&bus, &format!("iohub/state/apps/{app}"), |_, v| {
        v["facts"]["running"] == 2 && !v["facts"]["last_start"].is_null()
    })
    .await;
    assert_eq!(st["phase"], "applied", "{st}");
    assert_eq!(st["facts"]["last_start"]["exit_code"], 0, "{st}");
    let services: Vec<&str> = st["facts"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["web", "writer"], "{st}");

    let r = request(&bus, Verb::Stop, serde_json::json!({ "app": app })).await;
    assert!(r.ok, "{r:?}");
    wait_running(&bus, &app, 0, 2).await;

    let r = request(&bus, Verb::Start, serde_json::json!({ "app": app })).await;
    assert!(r.ok, "{r:?}");
    wait_running(&bus, &app, 2, 2).await;

    // The tail comes in the reply ...
    let tail = tokio::time::timeout(T, async {
        loop {
            let r = request(
                &bus,
                Verb::Logs,
                serde_json::json!({ "app": app, "tail": 5 }),
            )
            .await;
            assert!(r.ok, "{r:?}");
            let result = r.result.unwrap();
            let lines: Vec<String> = result["tail"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(name, _)| name.contains("writer"))
                .flat_map(|(_, ls)| ls.as_array().unwrap().clone())
                .map(|l| l["line"].as_str().unwrap().to_string())
                .collect();
            if lines.iter().any(|l| l.starts_with("tick")) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no tick in the logs tail");
    assert!(tail.len() <= 5, "{tail:?}");

    // ... and a followed log arrives as events, bounded.
    let mut events = bus.subscribe(&["iohub/event/apps/log"]).await.unwrap();
    let r = request(
        &bus,
        Verb::Logs,
        serde_json::json!({ "app": app, "tail": 0, "follow": true, "max_lines": 2, "max_secs": 30 }),
    )
    .await;
    assert!(r.ok, "{r:?}");
    let m = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(ev["app"], app.as_str(), "{ev}");
    assert!(ev["line"].as_str().unwrap().starts_with("tick"), "{ev}");

    // Unknown app, disabled verbs of the contract are refused with a reason.
    let r = request(
        &bus,
        Verb::Start,
        serde_json::json!({ "app": "no-such-app" }),
    )
    .await;
    assert!(
        !r.ok && r.errors[0].code == bus_schema::ErrorCode::NotFound,
        "{r:?}"
    );
    let r = request(&bus, Verb::Start, serde_json::json!({ "app": "../etc" })).await;
    assert!(
        !r.ok && r.errors[0].code == bus_schema::ErrorCode::InvalidValue,
        "{r:?}"
    );

    // Shutdown stops the app.
    f.stop().await;
    let (_, out, _) = iohub_tests::docker::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={app}"),
    ]);
    assert!(out.trim().is_empty(), "still running after shutdown: {out}");
}

enum Z<'a> {
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Zeros(&'a str, usize),
}

fn make_zip(path: &Path, entries: &[Z]) {
    let opts = zip::write::SimpleFileOptions::default();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for e in entries {
        match e {
            Z::File(name, data, mode) => {
                w.start_file(*name, opts.unix_permissions(*mode)).unwrap();
                w.write_all(data).unwrap();
            }
            Z::Symlink(name, target) => w.add_symlink(*name, *target, opts).unwrap(),
            Z::Zeros(name, n) => {
                w.start_file(*name, opts.unix_permissions(0o644)).unwrap();
                let chunk = vec![0u8; 1 << 20];
                let mut left = *n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    w.write_all(&chunk[..k]).unwrap();
                    left -= k;
                }
            }
        }
    }
    let bytes = w.finish().unwrap().into_inner();
    // Drop it like a user would: write elsewhere, rename into place.
    let tmp = path.with_extension("zip.part");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u64)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, u64)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.strip_prefix(base).unwrap().to_path_buf(),
                (m.permissions().mode(), if m.is_dir() { 0 } else { m.len() }),
            );
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_dropped_in_deploy_installs_the_app_and_its_container_runs() {
    if !prerequisites() {
        return;
    }
    let app = app_name("zip");
    let image = busybox_image(&app);
    let _cleanup = DockerCleanup {
        projects: vec![app.clone()],
        images: vec![image.clone()],
        networks: vec![],
    };
    let mut f = Fixture::start().await;
    f.run().await;
    let bus = f.bus();
    let mut deployed = bus
        .subscribe(&["iohub/event/deployer/deployed"])
        .await
        .unwrap();
    // Wait for the deployer to be up (it has published its state).
    wait_for(&bus, "iohub/state/deployer", |_, v| v["phase"] == "applied").await;

    let compose = compose_writer(&image);
    make_zip(
        &f.root().join("deploy/app.zip"),
        &[
            Z::File(
                &format!("docker/apps/{app}/docker-compose.yml"),
                compose.as_bytes(),
                0o644,
            ),
            Z::File(
                &format!("docker/apps/{app}/start.sh"),
                START_SH.as_bytes(),
                0o644,
            ),
        ],
    );
    let st = wait_running(&bus, &app, 1, 1).await;
    assert_eq!(st["facts"]["enabled"], true, "{st}");
    let m = tokio::time::timeout(T, deployed.recv())
        .await
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(ev["restarts"][0], serde_json::json!([app, "ok"]), "{ev}");
    assert!(!f.root().join("deploy/app.zip").exists());
    let mode = std::fs::metadata(f.root().join(format!("docker/apps/{app}/start.sh")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malicious_zips_are_rejected_with_a_reason_and_nothing_is_written_outside_rejected() {
    let mut f = Fixture::start().await;
    f.run().await;
    let bus = f.bus();
    wait_for(&bus, "iohub/state/deployer", |_, v| v["phase"] == "applied").await;
    // The apps service makes the apps' global-vol when Docker is enabled: not the deployer's.
    let global_vol = f.root().join("docker/global/volumes/global-vol");
    iohub_tests::until("global-vol", T, || global_vol.is_dir()).await;
    let before = tree(f.root());
    let sh = b"#!/bin/sh\ntouch /tmp/pwned\n";
    // (An app without start.sh is valid: it installs disabled, see the deployer's tests.)
    let cases: Vec<(&str, Vec<Z>, &str)> = vec![
        (
            "dotdot.zip",
            vec![
                Z::File("docker/apps/ok/start.sh", sh, 0o755),
                Z::File("docker/apps/ok/../../../envvars", b"IOHUBOS_X=1\n", 0o644),
            ],
            "has a `..` component",
        ),
        (
            "absolute.zip",
            vec![
                Z::File("docker/apps/ok/start.sh", sh, 0o755),
                Z::File("/tmp/iohub-absolute", b"x", 0o644),
            ],
            "is an absolute path",
        ),
        (
            "symlink.zip",
            vec![
                Z::File("docker/apps/ok/start.sh", sh, 0o755),
                Z::Symlink("docker/apps/ok/etc", "/etc"),
            ],
            "is a symbolic link",
        ),
        (
            "bomb.zip",
            vec![
                Z::File("docker/apps/ok/start.sh", sh, 0o755),
                Z::Zeros("docker/apps/ok/zeros", (64 << 20) + 1),
            ],
            "per file",
        ),
        (
            "badname.zip",
            vec![Z::File("docker/apps/Bad.Name/start.sh", sh, 0o755)],
            "is not a valid app name",
        ),
        (
            "outside.zip",
            vec![
                Z::File("docker/apps/ok/start.sh", sh, 0o755),
                Z::File("runtime/iohub-bootstrap/end", sh, 0o755),
            ],
            "is outside docker/apps/<app>/",
        ),
    ];
    let mut rejected = bus
        .subscribe(&["iohub/event/deployer/deploy_rejected"])
        .await
        .unwrap();
    for (name, entries, why) in &cases {
        make_zip(&f.root().join("deploy").join(name), entries);
        let m = tokio::time::timeout(T, rejected.recv())
            .await
            .unwrap()
            .unwrap();
        let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(ev["field"], format!("deploy/{name}"), "{ev}");
        let reason =
            std::fs::read_to_string(f.root().join(format!("deploy/rejected/{name}.reason.txt")))
                .unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(f.root().join(format!("deploy/rejected/{name}")).is_file());
        assert!(!f.root().join(format!("deploy/{name}")).exists());
    }
    f.stop().await;
    let after = tree(f.root());
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, m)| before.get(*p) != Some(m))
        .map(|(p, _)| p)
        .filter(|p| !p.starts_with("deploy/rejected") && !p.starts_with("runtime"))
        .collect();
    assert!(
        changed.is_empty(),
        "written outside deploy/rejected: {changed:?}"
    );
    assert!(!Path::new("/tmp/iohub-absolute").exists());
    assert!(!f.root().join("docker/apps/ok").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_app_stays_disabled_after_a_redeploy() {
    let mut f = Fixture::start().await;
    f.run().await;
    let bus = f.bus();
    wait_for(&bus, "iohub/state/deployer", |_, v| v["phase"] == "applied").await;
    let app = app_name("off");
    let mut deployed = bus
        .subscribe(&["iohub/event/deployer/deployed"])
        .await
        .unwrap();
    let sh = b"#!/bin/sh\necho started\n";
    let start = format!("docker/apps/{app}/start.sh");
    make_zip(
        &f.root().join("deploy/v1.zip"),
        &[Z::File(&start, sh, 0o755)],
    );
    let m = tokio::time::timeout(T, deployed.recv())
        .await
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(ev["installed"][0]["disabled"], false, "{ev}");
    let path = f.root().join(&start);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // The user disables the app (what the admin API does), then a new version arrives.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    make_zip(
        &f.root().join("deploy/v2.zip"),
        &[Z::File(&start, b"#!/bin/sh\necho v2\n", 0o755)],
    );
    let m = tokio::time::timeout(T, deployed.recv())
        .await
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(ev["installed"][0]["disabled"], true, "{ev}");
    assert_eq!(
        ev["restarts"][0],
        serde_json::json!([app, "disabled: not started"]),
        "{ev}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "#!/bin/sh\necho v2\n"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_stops_the_apps_containers_then_deletes_its_folder() {
    if !prerequisites() {
        return;
    }
    let app = app_name("gone");
    let image = busybox_image(&app);
    let _cleanup = DockerCleanup {
        projects: vec![app.clone()],
        images: vec![image.clone()],
        networks: vec![],
    };
    let mut f = Fixture::start().await;
    write_app(f.root(), &app, &compose_writer(&image), 0o755);
    std::fs::create_dir_all(f.root().join("docker/apps").join(&app).join("volumes/data")).unwrap();
    f.run().await;
    let bus = f.bus();
    wait_running(&bus, &app, 1, 1).await;

    let r = request(&bus, Verb::Undeploy, serde_json::json!({ "app": app })).await;
    assert!(r.ok, "{r:?}");
    assert!(!f.root().join("docker/apps").join(&app).exists());
    let (_, out, _) = iohub_tests::docker::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={app}"),
    ]);
    assert!(out.trim().is_empty(), "containers left: {out}");
    // Gone is gone: a second undeploy names the missing app.
    let r = request(&bus, Verb::Undeploy, serde_json::json!({ "app": app })).await;
    assert!(
        !r.ok && r.errors[0].code == bus_schema::ErrorCode::NotFound,
        "{r:?}"
    );
    f.stop().await;
}
