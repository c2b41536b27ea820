//! Wiring of `iohubd`: the broker, the control listener and its credentials, the supervisor and
//! the services. `main` only parses arguments and calls [`Daemon::start`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::{Broker, ControlCredentials, ListenerConfig, RouterLimits};
use bus_schema::{BusError, ErrorCode, Phase, ServiceName, ServiceState, Topic};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ctx::{now_ms, Backend, Paths, ServiceCtx};
use crate::supervisor::{ServiceSpec, Supervisor};
use crate::sys;

/// Options of one daemon run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub paths: Paths,
    pub backend: Backend,
    /// Control listener address; loopback only. `127.0.0.1:0` picks a free port.
    pub control_addr: SocketAddr,
}

/// The control-listener discovery file, `<root>/runtime/control.json` (mode 0600): where the
/// control listener is and how to log in. `iohubctl --root DIR` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl ControlFile {
    pub fn path(root: &Path) -> PathBuf {
        root.join("runtime").join("control.json")
    }

    /// Read the discovery file of a root.
    pub fn read(root: &Path) -> Result<ControlFile, String> {
        let path = ControlFile::path(root);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read {}: {e} (is iohubd running with --root {}?)",
                path.display(),
                root.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Credentials are generated at first start and kept across restarts; the address is rewritten
/// at every start.
fn control_credentials(root: &Path) -> Result<ControlCredentials, BusError> {
    if let Ok(existing) = ControlFile::read(root) {
        return Ok(ControlCredentials {
            username: existing.username,
            password: existing.password,
        });
    }
    let password: String = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..32)
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect()
    };
    Ok(ControlCredentials {
        username: "iohub".into(),
        password,
    })
}

fn io_err(what: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, what.to_string())
}

/// Every service of this build, in no particular order (dependencies are data on the bus).
pub fn services() -> Vec<ServiceSpec> {
    vec![
        ServiceSpec::new(ServiceName::Config, crate::config::run),
        ServiceSpec::new(ServiceName::Watcher, crate::watcher::run),
        crate::lifecycle::spec(),
    ]
}

/// A running daemon.
pub struct Daemon {
    broker: Broker,
    supervisor: Supervisor,
    control: ControlFile,
    shutdown: CancellationToken,
}

impl Daemon {
    /// Start the broker, the control listener and every service.
    pub async fn start(opts: DaemonOptions, specs: Vec<ServiceSpec>) -> Result<Daemon, BusError> {
        let runtime = opts.paths.runtime();
        let dir = runtime.clone();
        tokio::task::spawn_blocking(move || sys::fs::ensure_dir(&dir))
            .await
            .map_err(io_err)?
            .map_err(|e| io_err(format!("{}: {e}", runtime.display())))?;

        let broker = Broker::start(RouterLimits::default()).map_err(io_err)?;
        let credentials = control_credentials(&opts.paths.root)?;
        let addr = broker
            .listen(ListenerConfig::control(
                opts.control_addr,
                credentials.clone(),
            ))
            .await
            .map_err(io_err)?;
        let control = ControlFile {
            host: addr.ip().to_string(),
            port: addr.port(),
            username: credentials.username,
            password: credentials.password,
        };
        let bytes = serde_json::to_vec_pretty(&control).map_err(io_err)?;
        sys::fs::atomic_write_async(ControlFile::path(&opts.paths.root), bytes, 0o600)
            .await
            .map_err(io_err)?;

        let shutdown = CancellationToken::new();
        let base = ServiceCtx {
            name: ServiceName::Iohubd,
            bus: broker.bus(),
            paths: opts.paths.clone(),
            backend: opts.backend,
            shutdown: shutdown.clone(),
            restarts: 0,
        };
        let mut state = ServiceState::new(Phase::Applied, 0, now_ms());
        state.facts = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "backend": opts.backend,
            "root": opts.paths.root,
            "system_root": opts.paths.system_root,
            "control": addr.to_string(),
            "services": specs.iter().map(|s| s.name).collect::<Vec<_>>(),
        });
        base.publish_state(&state).await.map_err(io_err)?;
        let supervisor = Supervisor::start(specs, base);
        tracing::info!(control = %addr, backend = ?opts.backend, root = %opts.paths.root.display(), "iohubd started");
        Ok(Daemon {
            broker,
            supervisor,
            control,
            shutdown,
        })
    }

    pub fn bus(&self) -> broker::Bus {
        self.broker.bus()
    }

    pub fn control(&self) -> &ControlFile {
        &self.control
    }

    /// Stop the services, then the broker, each within `within`.
    pub async fn shutdown(self, within: Duration) {
        self.shutdown.cancel();
        let mut state = ServiceState::new(Phase::Disabled, 0, now_ms());
        state.facts = serde_json::json!({ "stopping": true });
        let _ = self
            .broker
            .bus()
            .publish_json(&Topic::state(ServiceName::Iohubd), &state)
            .await;
        let aborted = self.supervisor.shutdown(within).await;
        if !aborted.is_empty() {
            tracing::warn!(?aborted, "services aborted at shutdown");
        }
        self.broker.shutdown(within).await;
    }
}
