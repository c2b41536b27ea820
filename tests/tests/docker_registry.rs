//! The registry service against real components: Debian's `docker-registry` supervised by an
//! in-process daemon (config, watcher and registry services, live backend, temporary root), and
//! the host's dockerd, which saves the archives and pulls what was imported. Nothing is pulled
//! from the internet: images are made offline with `docker import`.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bus_schema::{EventKind, ServiceName, ServiceState, Topic, Verb};
use iohub_tests::docker::{busybox_image, docker, docker_available, DockerCleanup};
use iohub_tests::{require_program, Roots};
use services::daemon::{Daemon, DaemonOptions};
use services::supervisor::ServiceSpec;
use services::{Backend, Paths};
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(60);

fn prerequisites() -> bool {
    docker_available() && require_program("docker-registry") && require_program("gzip")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

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

/// A daemon with the registry on a free port, on a temporary copy of the standalone example.
struct Fixture {
    roots: Roots,
    daemon: Option<Daemon>,
    port: u16,
}

impl Fixture {
    async fn start(delete: bool) -> Fixture {
        let roots = Roots::example("standalone");
        let port = free_port();
        let envvars = roots.root.join("envvars");
        let text = std::fs::read_to_string(&envvars).unwrap();
        let text = text
            .replace(
                "IOHUBOS_DOCKER_REGISTRY_PORT='5000'",
                &format!("IOHUBOS_DOCKER_REGISTRY_PORT='{port}'"),
            )
            .replace(
                "IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE='true'",
                &format!("IOHUBOS_DOCKER_REGISTRY_RESCAN_DELETE='{delete}'"),
            );
        std::fs::write(&envvars, text).unwrap();
        std::fs::create_dir_all(roots.root.join("runtime/iohub-registry")).unwrap();
        let specs = vec![
            ServiceSpec::new(ServiceName::Config, services::config::run),
            ServiceSpec::new(ServiceName::Watcher, services::watcher::run),
            services::registry::spec(),
        ];
        let daemon = Daemon::start(
            DaemonOptions {
                paths: Paths::new(&roots.root, &roots.system),
                backend: Backend::Live,
                control_addr: "127.0.0.1:0".parse().unwrap(),
                endpoints: services::settings::Endpoints::ephemeral(),
            },
            specs,
        )
        .await
        .unwrap();
        let f = Fixture {
            roots,
            daemon: Some(daemon),
            port,
        };
        f.wait_state(|s| s.facts["process"]["ready"] == true).await;
        f
    }

    fn bus(&self) -> broker::Bus {
        self.daemon.as_ref().unwrap().bus()
    }

    async fn state(&self) -> ServiceState {
        let mut sub = self
            .bus()
            .subscribe(&[&Topic::state(ServiceName::Registry).to_string()])
            .await
            .unwrap();
        sub.recv().await.unwrap().json().unwrap()
    }

    async fn wait_state(&self, ok: impl Fn(&ServiceState) -> bool) -> ServiceState {
        let mut sub = self
            .bus()
            .subscribe(&[&Topic::state(ServiceName::Registry).to_string()])
            .await
            .unwrap();
        let until = Instant::now() + DEADLINE;
        loop {
            let msg = tokio::time::timeout_at(until, sub.recv())
                .await
                .expect("registry state not reached in time")
                .unwrap();
            let state: ServiceState = msg.json().unwrap();
            if ok(&state) {
                return state;
            }
        }
    }

    async fn progress(&self) -> broker::Subscription {
        self.bus()
            .subscribe(&[&Topic::Event(ServiceName::Registry, EventKind::Progress).to_string()])
            .await
            .unwrap()
    }

    fn archive(&self, name: &str) -> PathBuf {
        self.roots.root.join("runtime/iohub-registry").join(name)
    }

    fn done_file(&self) -> String {
        std::fs::read_to_string(self.roots.root.join("runtime/registry-imports.json"))
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown(Duration::from_secs(10)).await;
        }
    }
}

/// The terminal progress event of `archive` (`imported`, `already_imported`, `failed`).
async fn outcome(sub: &mut broker::Subscription, archive: &str) -> serde_json::Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let msg = tokio::time::timeout_at(until, sub.recv())
            .await
            .expect("no import outcome in time")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        let phase = v["phase"].as_str().unwrap_or_default();
        if v["archive"] == format!("runtime/iohub-registry/{archive}")
            && !matches!(phase, "verifying" | "pushing")
        {
            return v;
        }
    }
}

/// `docker save IMAGE | gzip > dest`, written elsewhere and renamed in (a complete drop).
fn save_archive(image: &str, dest: &Path) {
    let tmp = dest.with_extension("part");
    sh(&format!(
        "docker save {image} | gzip -1 > '{}' && mv '{}' '{}'",
        tmp.display(),
        tmp.display(),
        dest.display()
    ));
}

fn registry_pids(root: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.starts_with("docker-registry serve")
            && cmdline.contains(&root.display().to_string())
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_docker_save_archive_is_imported_and_dockerd_pulls_and_runs_it() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::start(true).await;
    let source = busybox_image("registry-import");
    let pulled = format!("127.0.0.1:{}/{source}", f.port);
    let _cleanup = DockerCleanup {
        projects: vec![],
        images: vec![source.clone(), pulled.clone()],
        networks: vec![],
    };
    let mut events = f.progress().await;
    save_archive(&source, &f.archive("bb.tar.gz"));
    let v = outcome(&mut events, "bb.tar.gz").await;
    assert_eq!(v["phase"], "imported", "{v}");
    assert_eq!(v["images"], serde_json::json!([source]));
    // Imported: recorded by digest, then deleted (RESCAN_DELETE).
    assert!(f.done_file().contains("bb.tar.gz"));
    assert!(!f.archive("bb.tar.gz").exists());

    // The local copy goes, so the pull below really comes from our registry.
    iohub_tests::docker::remove_image(&source);
    let (ok, _, err) = docker(&["pull", &pulled]);
    assert!(ok, "docker pull {pulled}: {err}");
    let (ok, out, err) = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &pulled,
        "echo",
        "hello from the registry",
    ]);
    assert!(ok, "docker run: {err}");
    assert_eq!(out.trim(), "hello from the registry");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_archives_fail_with_a_clear_error_and_are_kept_and_not_marked_done() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::start(true).await;
    let source = busybox_image("registry-corrupt");
    let _cleanup = DockerCleanup {
        projects: vec![],
        images: vec![source.clone()],
        networks: vec![],
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display();
    // A truncated archive (cut in the middle of the layer).
    sh(&format!(
        "docker save {source} | gzip -1 > {w}/full.tar.gz && head -c 500000 {w}/full.tar.gz > {w}/truncated.tar.gz"
    ));
    // An archive whose layer does not match its config's diff_id: the layer is replaced by
    // another valid tar.
    sh(&format!(
        "mkdir {w}/x && tar -C {w}/x -xzf {w}/full.tar.gz && \
         for l in {w}/x/*/layer.tar; do tar -C /etc -cf \"$l\" hostname; done && \
         tar -C {w}/x -cf - . | gzip -1 > {w}/mismatch.tar.gz"
    ));
    let mut events = f.progress().await;
    for name in ["truncated.tar.gz", "mismatch.tar.gz"] {
        sh(&format!(
            "cp {w}/{name} {w}/.{name} && mv {w}/.{name} '{}'",
            f.archive(name).display()
        ));
        let v = outcome(&mut events, name).await;
        assert_eq!(v["phase"], "failed", "{v}");
        let message = v["errors"][0]["message"].as_str().unwrap().to_string();
        match name {
            "truncated.tar.gz" => assert!(
                message.contains("reading the archive") || message.contains("eof"),
                "{message}"
            ),
            _ => assert!(message.contains("digest mismatch"), "{message}"),
        }
        assert!(message.contains(name), "{message}");
        assert!(f.archive(name).exists(), "a failed archive must be kept");
        assert!(!f.done_file().contains(name));
    }
    let state = f
        .wait_state(|s| {
            s.last_error
                .as_ref()
                .is_some_and(|e| e.message.contains("mismatch.tar.gz"))
        })
        .await;
    assert_eq!(state.phase, bus_schema::Phase::Degraded);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_archive_is_skipped_on_rescan() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::start(false).await;
    let source = busybox_image("registry-rescan");
    let _cleanup = DockerCleanup {
        projects: vec![],
        images: vec![source.clone()],
        networks: vec![],
    };
    let mut events = f.progress().await;
    save_archive(&source, &f.archive("keep.tar.gz"));
    let v = outcome(&mut events, "keep.tar.gz").await;
    assert_eq!(v["phase"], "imported", "{v}");
    assert!(
        f.archive("keep.tar.gz").exists(),
        "RESCAN_DELETE=false keeps it"
    );

    let reply = f
        .bus()
        .request(
            ServiceName::Registry,
            Verb::Reload,
            serde_json::json!({}),
            DEADLINE,
        )
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");
    let v = outcome(&mut events, "keep.tar.gz").await;
    assert_eq!(v["phase"], "already_imported", "{v}");
    let state = f.state().await;
    let last = state.facts["recent"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["outcome"], "already_imported");
    assert_eq!(last["layers_uploaded"], 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_process_is_restarted_when_killed() {
    if !prerequisites() {
        return;
    }
    let f = Fixture::start(true).await;
    let before = registry_pids(&f.roots.root);
    assert_eq!(before.len(), 1, "{before:?}");
    sh(&format!("kill -9 {}", before[0]));
    let state = f
        .wait_state(|s| s.facts["process"]["starts"] == 2 && s.facts["process"]["ready"] == true)
        .await;
    assert!(
        state.facts["process"]["last_exit"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{}",
        state.facts
    );
    let after = registry_pids(&f.roots.root);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before);
    let root = f.roots.root.clone();
    f.stop().await;
    assert!(registry_pids(&root).is_empty(), "stopped with the daemon");
}

/// The registry state of the iohubd serving `root`, once `ok` holds (bounded).
async fn wait_registry_state(root: &Path, ok: impl Fn(&serde_json::Value) -> bool) {
    let until = Instant::now() + DEADLINE;
    loop {
        let mut ctl = iohubctl::Ctl::connect(root, DEADLINE).await.unwrap();
        let tree = ctl
            .snapshot("iohub/state/registry", DEADLINE)
            .await
            .unwrap();
        let state = tree
            .get("iohub/state/registry")
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok());
        if state.as_ref().is_some_and(&ok) {
            return;
        }
        assert!(Instant::now() < until, "registry state: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_left_running_by_a_killed_iohubd_is_replaced_at_the_next_start() {
    if !prerequisites() {
        return;
    }
    let roots = Roots::example("standalone");
    let port = free_port();
    let envvars = roots.root.join("envvars");
    let text = std::fs::read_to_string(&envvars).unwrap().replace(
        "IOHUBOS_DOCKER_REGISTRY_PORT='5000'",
        &format!("IOHUBOS_DOCKER_REGISTRY_PORT='{port}'"),
    );
    std::fs::write(&envvars, text).unwrap();
    let args = ["--apply", "--only", "config,watcher,registry"];
    let ready = |s: &serde_json::Value| s["facts"]["process"]["ready"] == true;
    let d = iohub_tests::Iohubd::start(&roots.root, &roots.system, &args);
    wait_registry_state(&roots.root, ready).await;
    let before = registry_pids(&roots.root);
    assert_eq!(before.len(), 1, "{before:?}");
    // SIGKILL: no shutdown runs, the registry is reparented and keeps the port.
    sh(&format!("kill -9 {}", d.pid()));
    drop(d);
    assert_eq!(
        registry_pids(&roots.root),
        before,
        "the orphan survives iohubd"
    );
    let d = iohub_tests::Iohubd::start(&roots.root, &roots.system, &args);
    wait_registry_state(&roots.root, ready).await;
    let after = registry_pids(&roots.root);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "the orphan was replaced");
    let (status, _) = d.stop();
    assert!(status.success());
    assert!(registry_pids(&roots.root).is_empty());
}
