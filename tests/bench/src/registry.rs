//! The registry benchmark (group `registry`): import of one `docker save | gzip` archive into a
//! fresh local registry by the registry service (in-process daemon, live backend: archive
//! dropped -> `imported` event), against the original's path in the same run: `docker load` +
//! `docker tag` + `docker push` to a fresh `docker-registry` of the same build. The image is
//! made offline (`docker import` of busybox, 16 MiB of random bytes and 16 MiB of text), so the
//! archive mixes compressible and incompressible data. Three rounds each, medians; every wait
//! is bounded.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bus_schema::{EventKind, ServiceName, Topic};
use services::daemon::{Daemon, DaemonOptions};
use services::supervisor::ServiceSpec;
use services::{Backend, Paths};

use iohub_tests::docker::{docker, docker_available, remove_image};
use iohub_tests::{require_program, Roots};

const IMAGE: &str = "iohub-bench/registry:1";
const ROUNDS: usize = 3;
const LIMIT: Duration = Duration::from_secs(300);

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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The image and its archive; returns the archive's size in bytes.
fn make_archive(dir: &Path) -> (std::path::PathBuf, u64, u64) {
    let d = dir.display();
    sh(&format!(
        "mkdir -p {d}/rootfs/bin {d}/rootfs/data && cp /bin/busybox {d}/rootfs/bin/ && \
         ln -s busybox {d}/rootfs/bin/sh && \
         head -c 16777216 /dev/urandom > {d}/rootfs/data/random.bin && \
         seq 1 2000000 | head -c 16777216 > {d}/rootfs/data/text.txt && \
         tar -C {d}/rootfs -cf {d}/rootfs.tar . && \
         docker import -c 'CMD [\"/bin/sh\"]' {d}/rootfs.tar {IMAGE} >/dev/null && \
         docker save {IMAGE} | gzip -1 > {d}/image.tar.gz"
    ));
    let archive = dir.join("image.tar.gz");
    let size = std::fs::metadata(&archive).unwrap().len();
    let raw = std::fs::metadata(dir.join("rootfs.tar")).unwrap().len();
    remove_image(IMAGE);
    (archive, size, raw)
}

/// One import by the registry service: drop -> `imported`.
async fn ours(archive: &Path) -> Duration {
    let roots = Roots::example("standalone");
    let port = free_port();
    let envvars = roots.root.join("envvars");
    let text = std::fs::read_to_string(&envvars).unwrap().replace(
        "IOHUBOS_DOCKER_REGISTRY_PORT='5000'",
        &format!("IOHUBOS_DOCKER_REGISTRY_PORT='{port}'"),
    );
    std::fs::write(&envvars, text).unwrap();
    let drop_dir = roots.root.join("runtime/iohub-registry");
    std::fs::create_dir_all(&drop_dir).unwrap();
    let daemon = Daemon::start(
        DaemonOptions {
            paths: Paths::new(&roots.root, &roots.system),
            backend: Backend::Live,
            control_addr: "127.0.0.1:0".parse().unwrap(),
            endpoints: services::settings::Endpoints::ephemeral(),
        },
        vec![
            ServiceSpec::new(ServiceName::Config, services::config::run),
            ServiceSpec::new(ServiceName::Watcher, services::watcher::run),
            services::registry::spec(),
        ],
    )
    .await
    .unwrap();
    let bus = daemon.bus();
    let mut state = bus
        .subscribe(&[&Topic::state(ServiceName::Registry).to_string()])
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, async {
        loop {
            let v: serde_json::Value = state.recv().await.unwrap().json().unwrap();
            if v["facts"]["process"]["ready"] == true {
                break;
            }
        }
    })
    .await
    .expect("registry ready");
    let mut events = bus
        .subscribe(&[&Topic::Event(ServiceName::Registry, EventKind::Progress).to_string()])
        .await
        .unwrap();
    // Copied next to the drop directory first, so only the rename is timed.
    let staged = roots.root.join("runtime/.bench.tar.gz");
    std::fs::copy(archive, &staged).unwrap();
    let t0 = Instant::now();
    std::fs::rename(&staged, drop_dir.join("bench.tar.gz")).unwrap();
    let took = tokio::time::timeout(LIMIT, async {
        loop {
            let v: serde_json::Value = events.recv().await.unwrap().json().unwrap();
            match v["phase"].as_str().unwrap_or_default() {
                "imported" => return t0.elapsed(),
                "failed" | "already_imported" => panic!("bench import: {v}"),
                _ => {}
            }
        }
    })
    .await
    .expect("import within the limit");
    daemon.shutdown(Duration::from_secs(10)).await;
    took
}

/// The process and its scratch directory (removed with it).
struct Registry(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh `docker-registry` on `port`, ready.
async fn plain_registry(port: u16) -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = Registry(child, dir);
    sys::http::install_crypto_provider();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let until = Instant::now() + LIMIT;
    while !matches!(http.get(&url).send().await, Ok(r) if r.status().is_success()) {
        assert!(Instant::now() < until, "docker-registry not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r
}

/// The original's path: load + tag + push.
async fn docker_path(archive: &Path) -> Duration {
    let port = free_port();
    let _registry = plain_registry(port).await;
    let target = format!("127.0.0.1:{port}/{IMAGE}");
    let t0 = Instant::now();
    let (ok, _, err) = docker(&["load", "-q", "-i", &archive.display().to_string()]);
    assert!(ok, "docker load: {err}");
    let (ok, _, err) = docker(&["tag", IMAGE, &target]);
    assert!(ok, "docker tag: {err}");
    let (ok, _, err) = docker(&["push", &target]);
    assert!(ok, "docker push: {err}");
    let took = t0.elapsed();
    remove_image(&target);
    remove_image(IMAGE);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Run the group; returns the markdown lines for docs/benchmarks.md.
pub(crate) async fn run() -> String {
    if !docker_available() || !require_program("docker-registry") {
        return "registry: skipped (dockerd or docker-registry missing)".to_string();
    }
    let dir = tempfile::tempdir().unwrap();
    let (archive, size, raw) = make_archive(dir.path());
    let mut ours_t = Vec::new();
    let mut docker_t = Vec::new();
    for _ in 0..ROUNDS {
        docker_t.push(docker_path(&archive).await);
        ours_t.push(ours(&archive).await);
    }
    let (o, d) = (median(ours_t.clone()), median(docker_t.clone()));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "## Registry import (archive {:.1} MiB gzip, image {:.1} MiB uncompressed, one layer)\n\n\
         | path | median of {ROUNDS} | rounds | throughput (archive MiB/s) |\n|---|---|---|---|\n\
         | registry service: drop -> `imported` (verify, gzip, push) | {:.0} ms | {:?} | {:.1} |\n\
         | original: `docker load` + `docker tag` + `docker push` | {:.0} ms | {:?} | {:.1} |\n\n\
         Ratio: the registry service is **{:.2}x** as fast as the original's path.\n",
        mib(size),
        mib(raw),
        o.as_secs_f64() * 1000.0,
        ours_t.iter().map(|t| t.as_millis()).collect::<Vec<_>>(),
        mib(size) / o.as_secs_f64(),
        d.as_secs_f64() * 1000.0,
        docker_t.iter().map(|t| t.as_millis()).collect::<Vec<_>>(),
        mib(size) / d.as_secs_f64(),
        d.as_secs_f64() / o.as_secs_f64(),
    )
}
