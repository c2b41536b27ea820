//! Effects of the apps service: scanning the app dirs, running `start.sh` (through `sys::cmd`),
//! and the container operations (through `sys::docker`).

use std::path::Path;
use std::time::Duration;

use bus_schema::facts::{DockerSide, GlobalMqttFacts};

use super::plan::AppDir;
use super::state::StartRecord;
use crate::ctx::now_ms;
use crate::shared::apps::{start_sh_enabled, DISABLED_MODE, ENABLED_MODE, START_SH};
use sys::cmd::{self, Cmd};
use sys::docker::{Container, Docker, DockerError};

/// How much of a start.sh's output the state keeps.
pub const OUTPUT_TAIL: usize = 2048;

pub use crate::shared::apps::apps_dir;

/// Every directory (or symlink to one) under the apps dir whose name does not start with `.`.
pub fn scan(root: &Path) -> Vec<AppDir> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(apps_dir(root)) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !e.path().is_dir() {
            continue;
        }
        let meta = std::fs::metadata(e.path().join(START_SH)).ok();
        let has_start = meta.as_ref().is_some_and(|m| m.is_file());
        let enabled = meta.as_ref().is_some_and(start_sh_enabled);
        out.push(AppDir {
            name,
            has_start,
            enabled,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Image references named by the compose files of every app.
pub fn compose_refs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for app in scan(root) {
        for f in [
            "docker-compose.yml",
            "docker-compose.yaml",
            "compose.yml",
            "compose.yaml",
        ] {
            if let Ok(text) = std::fs::read_to_string(apps_dir(root).join(&app.name).join(f)) {
                out.extend(super::plan::compose_images(&text));
            }
        }
    }
    out
}

/// Enable (`chmod 755 start.sh`) or disable (`chmod 644`) an app.
pub fn set_enabled(root: &Path, app: &str, enabled: bool) -> std::io::Result<()> {
    let path = apps_dir(root).join(app).join(START_SH);
    let meta = std::fs::symlink_metadata(&path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    let mode = if enabled { ENABLED_MODE } else { DISABLED_MODE };
    sys::fs::set_mode(&path, mode).map(|_| ())
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

/// Run `<app dir>/start.sh` with the app dir as working directory (like the runner: an
/// executable file; one without `#!` runs with `/bin/sh`).
pub async fn run_start(root: &Path, app: &str, timeout: Duration) -> StartRecord {
    let dir = apps_dir(root).join(app);
    let at_ms = now_ms();
    let c = Cmd::new(dir.join("start.sh")).cwd(&dir).timeout(timeout);
    match cmd::run_file(&c).await {
        Ok(out) => {
            let mut text = out.stdout_tail.clone();
            if !out.stderr_tail.is_empty() {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&out.stderr_tail);
            }
            StartRecord {
                at_ms,
                exit_code: out.code,
                timed_out: out.timed_out,
                duration_ms: out.duration_ms,
                output_tail: tail(&text, OUTPUT_TAIL),
                error: None,
            }
        }
        Err(e) => StartRecord {
            at_ms,
            exit_code: None,
            timed_out: false,
            duration_ms: 0,
            output_tail: String::new(),
            error: Some(e.to_string()),
        },
    }
}

/// Stop containers one after the other (newest first); returns the names stopped and errors.
pub async fn stop_all(
    docker: &Docker,
    containers: &[Container],
    timeout: Duration,
) -> (Vec<String>, Vec<DockerError>) {
    let mut cs: Vec<&Container> = containers.iter().collect();
    cs.sort_by(|a, b| b.created.cmp(&a.created).then(b.name.cmp(&a.name)));
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for c in cs {
        if !c.running() && c.state != "restarting" && c.state != "paused" {
            continue;
        }
        match docker.stop(&c.id, timeout).await {
            Ok(()) => done.push(c.name.clone()),
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}

/// Remove containers (forcefully); returns the names removed and errors.
pub async fn remove_all(
    docker: &Docker,
    containers: &[Container],
) -> (Vec<String>, Vec<DockerError>) {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for c in containers {
        match docker.remove(&c.id).await {
            Ok(()) => done.push(c.name.clone()),
            Err(e) if e.is_not_found() => {}
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}

/// Whether the `start.sh` or `docker-compose.yml` of any of `apps` names `word` (the global
/// broker's network: such an app cannot start before it exists).
pub async fn any_app_mentions(root: &Path, apps: &[&str], word: &str) -> bool {
    for app in apps {
        for file in ["docker-compose.yml", "docker-compose.yaml", "start.sh"] {
            let path = apps_dir(root).join(app).join(file);
            if let Ok(text) = tokio::fs::read_to_string(&path).await {
                if text.contains(word) {
                    return true;
                }
            }
        }
    }
    false
}

/// Wait until `iohub/state/global_mqtt` says its Docker side is `ready`, at most `within`
/// (then the apps start anyway, and the one that needed the network reports its failure).
pub async fn wait_global_broker(bus: &broker::Bus, within: Duration) {
    let topic = bus_schema::Topic::state(bus_schema::ServiceName::GlobalMqtt).to_string();
    let Ok(mut sub) = bus.subscribe(&[topic.as_str()]).await else {
        return;
    };
    let ready = async {
        while let Some(m) = sub.recv().await {
            let facts = serde_json::from_slice::<bus_schema::ServiceState>(&m.payload)
                .ok()
                .and_then(|s| serde_json::from_value::<GlobalMqttFacts>(s.facts).ok());
            if facts.is_some_and(|f| f.docker == DockerSide::Ready) {
                return;
            }
        }
    };
    if tokio::time::timeout(within, ready).await.is_err() {
        tracing::warn!(
            ?within,
            "the global broker's Docker side is not ready: starting apps anyway"
        );
    }
}
