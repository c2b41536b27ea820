//! The apps/deployer benchmark (group `apps`): a zip dropped in `deploy/` -> the app's container
//! running (`iohub/state/apps/<app>` says 1 of 1), with the in-process daemon (config, watcher,
//! apps, deployer; live backend), against the original's path in the same run: `unzip -o`, the
//! recursive `chmod 755` of every start.sh, then `start.sh` (docker-compose v1 `up -d`). Each
//! round uses a new app name and removes its containers; ROUNDS rounds each, medians; every wait
//! is bounded. The image is imported offline from busybox-static.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use bus_schema::ServiceName;
use services::daemon::{Daemon, DaemonOptions};
use services::supervisor::ServiceSpec;
use services::{Backend, Paths};

use iohub_tests::docker::{busybox_image, docker_available, remove_image, remove_project};
use iohub_tests::{require_program, Roots};

const ROUNDS: usize = 5;
const LIMIT: Duration = Duration::from_secs(120);

fn make_zip(dir: &std::path::Path, app: &str, image: &str, out: &std::path::Path) {
    let app_dir = dir.join("docker/apps").join(app);
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("docker-compose.yml"),
        format!(
            "version: \"3.7\"\nservices:\n  writer:\n    image: {image}\n    network_mode: none\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1 & wait $$!; done\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        app_dir.join("start.sh"),
        "#!/bin/sh\ncd \"$(dirname \"$0\")\"\nexec docker-compose -f docker-compose.yml up -d\n",
    )
    .unwrap();
    let st = Command::new("zip")
        .current_dir(dir)
        .arg("-qr")
        .arg(out)
        .arg("docker")
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(dir.join("docker")).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn running(app: &str) -> bool {
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter"])
        .arg(format!("label=com.docker.compose.project={app}"))
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Run the group; returns the Markdown rows.
pub(crate) async fn run() -> String {
    if !docker_available() || !require_program("docker-compose") || !require_program("zip") {
        return "apps: skipped (docker, docker-compose or zip missing)".into();
    }
    let tag = format!("bench-apps-{}", std::process::id());
    let image = busybox_image(&tag);
    let scratch = tempfile::tempdir().unwrap();

    // iohubd.
    let roots = Roots::example("standalone");
    std::fs::create_dir_all(roots.root.join("deploy")).unwrap();
    let specs = vec![
        ServiceSpec::new(ServiceName::Config, services::config::run),
        ServiceSpec::new(ServiceName::Watcher, services::watcher::run),
        services::apps::spec(),
        services::deployer::spec(),
    ];
    let opts = DaemonOptions {
        paths: Paths::new(&roots.root, &roots.system),
        backend: Backend::Live,
        control_addr: "127.0.0.1:0".parse().unwrap(),
        endpoints: services::settings::Endpoints::ephemeral(),
    };
    let daemon = Daemon::start(opts, specs).await.unwrap();
    let bus = daemon.bus();
    let mut ours = Vec::new();
    let mut apps = Vec::new();
    for i in 0..ROUNDS {
        let app = format!("bench{}-i{i}", std::process::id());
        apps.push(app.clone());
        let zip = scratch.path().join(format!("{app}.zip"));
        make_zip(scratch.path(), &app, &image, &zip);
        let topic = format!("iohub/state/apps/{app}");
        let mut sub = bus.subscribe(&[&topic]).await.unwrap();
        let t0 = Instant::now();
        std::fs::rename(&zip, roots.root.join("deploy").join(format!("{app}.zip"))).unwrap();
        tokio::time::timeout(LIMIT, async {
            loop {
                let m = sub.recv().await.unwrap();
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                if v["facts"]["running"] == 1 {
                    return;
                }
            }
        })
        .await
        .expect("app not running in time");
        ours.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    daemon.shutdown(Duration::from_secs(15)).await;

    // The original's shell path.
    let legacy_root = scratch.path().join("legacy");
    std::fs::create_dir_all(legacy_root.join("docker/apps")).unwrap();
    let mut theirs = Vec::new();
    for i in 0..ROUNDS {
        let app = format!("bench{}-l{i}", std::process::id());
        apps.push(app.clone());
        let zip = scratch.path().join(format!("{app}.zip"));
        make_zip(scratch.path(), &app, &image, &zip);
        let t0 = Instant::now();
        let script = format!(
            "unzip -o -q {zip} -d {root} && find {root}/docker/apps -name start.sh -exec chmod 755 {{}} \\; && rm -f {zip} && {root}/docker/apps/{app}/start.sh >/dev/null 2>&1",
            zip = zip.display(),
            root = legacy_root.display(),
        );
        let st = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
        let deadline = Instant::now() + LIMIT;
        while !running(&app) {
            assert!(Instant::now() < deadline, "legacy app not running in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        theirs.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    for app in &apps {
        remove_project(app);
    }
    remove_image(&image);
    let (o, t) = (median(ours), median(theirs));
    format!(
        "| zip drop in deploy/ -> app container running (n={ROUNDS}, p50) | iohubd {o:.0} ms | unzip + chmod + start.sh {t:.0} ms | ratio {:.2} |",
        o / t
    )
}
