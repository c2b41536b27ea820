//! Wiring of `iohubd`: the broker, the control listener and its credentials, the supervisor and
//! the services. `main` only parses arguments and calls [`Daemon::start`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, BrokerError, ControlCredentials, ListenerConfig, RouterLimits};
use bus_schema::control::ControlFile;
use bus_schema::{BusError, ErrorCode, Phase, ServiceName, ServiceState, Topic};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::ctx::{now_ms, Backend, Paths, ServiceCtx};
use crate::settings::Endpoints;
use crate::supervisor::{ServiceSpec, Supervisor};

/// Options of one daemon run.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub paths: Paths,
    pub backend: Backend,
    /// Control listener address; loopback only. `127.0.0.1:0` picks a free port.
    pub control_addr: SocketAddr,
    /// The endpoints services open ([`Endpoints::ephemeral`] for free loopback ports).
    pub endpoints: Endpoints,
}

/// Credentials are generated at first start and kept across restarts; the address is rewritten
/// at every start.
fn control_credentials(root: &Path) -> Result<ControlCredentials, BusError> {
    let path = ControlFile::path(root);
    let existing = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| ControlFile::parse(&text, &path).ok());
    if let Some(existing) = existing {
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

/// How long iohubd retries a control address still held by a previous iohubd (after a kill -9
/// the old process may still be dying, or its socket lingering).
const BIND_RETRY: Duration = Duration::from_secs(10);

/// Open the control listener, retrying an address in use for at most [`BIND_RETRY`].
async fn listen_control(
    broker: &Broker,
    addr: SocketAddr,
    credentials: &ControlCredentials,
) -> Result<SocketAddr, BusError> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    let mut logged = false;
    loop {
        match broker
            .listen(ListenerConfig::control(addr, credentials.clone()))
            .await
        {
            Ok(bound) => return Ok(bound),
            Err(BrokerError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                if !logged {
                    tracing::warn!(%addr, "control address in use; retrying for {BIND_RETRY:?}");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(io_err(e)),
        }
    }
}

/// Where iohubd writes files atomically in the data root: the variable files (the root and
/// `envvars.d/`) and its runtime state (`runtime/` and each directory in it, e.g. `runtime/dhcp`,
/// `runtime/uploads`). A kill -9 between a temporary file's creation and its rename leaves it
/// behind, so each start removes ours (`sys::fs::remove_stale_temps`; never another program's).
async fn remove_stale_temps(paths: &Paths) {
    let (root, runtime) = (paths.root.clone(), paths.runtime());
    let removed = tokio::task::spawn_blocking(move || {
        let runtime_dirs = std::fs::read_dir(&runtime)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path());
        let dirs = [root.clone(), root.join("envvars.d"), runtime.clone()]
            .into_iter()
            .chain(runtime_dirs);
        let mut removed = Vec::new();
        for dir in dirs {
            match sys::fs::remove_stale_temps(&dir) {
                Ok(r) => removed.extend(r),
                Err(e) => tracing::warn!(error = %e, "temporary files not cleaned"),
            }
        }
        removed
    })
    .await
    .unwrap_or_default();
    for path in removed {
        tracing::info!(path = %path.display(), "removed a temporary file left by an interrupted write");
    }
}

/// Every service of this build, in no particular order (dependencies are data on the bus).
pub fn services() -> Vec<ServiceSpec> {
    vec![
        ServiceSpec::new(ServiceName::Config, crate::config::run),
        ServiceSpec::new(ServiceName::GlobalMqtt, crate::global_mqtt::run),
        ServiceSpec::new(ServiceName::Watcher, crate::watcher::run),
        crate::lifecycle::spec(),
        crate::apps::spec(),
        crate::deployer::spec(),
        ServiceSpec::new(ServiceName::Wifi, crate::wifi::run),
        ServiceSpec::new(ServiceName::Ssh, crate::ssh::run),
        ServiceSpec::new(ServiceName::Wireguard, crate::wireguard::run),
        ServiceSpec::new(ServiceName::System, crate::system::run),
        crate::registry::spec(),
        crate::firmware::spec(),
        ServiceSpec::new(ServiceName::AdminApi, crate::admin_api::run),
        ServiceSpec::new(ServiceName::Firewall, crate::firewall::run),
        ServiceSpec::new(ServiceName::Network, crate::network::run),
        ServiceSpec::new(ServiceName::Routes, crate::routes::run),
        ServiceSpec::new(ServiceName::Dhcp, crate::dhcp::run),
        ServiceSpec::new(ServiceName::Bridge, crate::bridge::run),
    ]
}

/// A running daemon.
pub struct Daemon {
    broker: Broker,
    supervisor: Supervisor,
    control: ControlFile,
    shutdown: CancellationToken,
    /// Cancelled when a command asked the daemon to stop (`iohub/cmd/iohubd/reboot`).
    stop_requested: CancellationToken,
    reboot: Arc<AtomicBool>,
    commands: tokio::task::JoinHandle<()>,
}

/// Body of `iohub/cmd/iohubd/reboot` (the admin API's `/reboot`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebootBody {
    #[serde(default = "default_reboot_delay")]
    delay_secs: u32,
}

fn default_reboot_delay() -> u32 {
    3
}

/// Longest accepted reboot delay.
const MAX_REBOOT_DELAY_SECS: u32 = 3600;

/// Serve `iohub/cmd/iohubd/*`: `reboot {"delay_secs"}` is a clean shutdown of every service
/// (apps stopped in order, files synced) followed by the init system's reboot; in plan-only
/// mode it only answers what it would do.
async fn serve_commands(
    ctx: ServiceCtx,
    stop: CancellationToken,
    reboot: Arc<AtomicBool>,
    mut sub: broker::Subscription,
) {
    use crate::reconcile::{reply_err, reply_ok};
    loop {
        let msg = tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            msg = sub.recv() => match msg { Some(m) => m, None => return },
        };
        let Some(Topic::Cmd(_, verb)) = msg.control_topic() else {
            continue;
        };
        let Ok(req) = msg.json::<bus_schema::Request>() else {
            tracing::warn!(topic = %msg.topic, "malformed iohubd command ignored");
            continue;
        };
        match verb {
            bus_schema::Verb::Reboot => {
                let body = if req.body.is_null() {
                    Ok(RebootBody {
                        delay_secs: default_reboot_delay(),
                    })
                } else {
                    serde_json::from_value::<RebootBody>(req.body.clone())
                };
                let body = match body {
                    Ok(b) if b.delay_secs <= MAX_REBOOT_DELAY_SECS => b,
                    Ok(b) => {
                        let e = BusError::new(
                            ErrorCode::InvalidValue,
                            format!(
                                "delay_secs {}: at most {MAX_REBOOT_DELAY_SECS}",
                                b.delay_secs
                            ),
                        )
                        .with_field("delay_secs");
                        reply_err(&ctx, &req, vec![e]).await;
                        continue;
                    }
                    Err(e) => {
                        let e = BusError::new(ErrorCode::BadPayload, format!("reboot body: {e}"))
                            .with_field("body");
                        reply_err(&ctx, &req, vec![e]).await;
                        continue;
                    }
                };
                let live = ctx.backend == Backend::Live;
                reply_ok(
                    &ctx,
                    &req,
                    serde_json::json!({
                        "rebooting": live,
                        "delay_secs": body.delay_secs,
                        "how": "clean shutdown of every service, then the init system's reboot",
                    }),
                )
                .await;
                if !live {
                    tracing::info!("reboot requested: plan-only, nothing happens");
                    continue;
                }
                tracing::warn!(delay_secs = body.delay_secs, "reboot requested");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(body.delay_secs.into())) => {}
                }
                reboot.store(true, Ordering::SeqCst);
                stop.cancel();
                return;
            }
            other => {
                let e = BusError::new(
                    ErrorCode::BadTopic,
                    format!("iohubd has no `{other}` command (it has `reboot`)"),
                );
                reply_err(&ctx, &req, vec![e]).await;
            }
        }
    }
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
        remove_stale_temps(&opts.paths).await;

        let broker = Broker::start(RouterLimits::default()).map_err(io_err)?;
        let credentials = control_credentials(&opts.paths.root)?;
        let addr = listen_control(&broker, opts.control_addr, &credentials).await?;
        let control = ControlFile {
            host: addr.ip().to_string(),
            port: addr.port(),
            username: credentials.username,
            password: credentials.password,
        };
        let bytes = control.to_json().into_bytes();
        sys::fs::atomic_write_async(ControlFile::path(&opts.paths.root), bytes, 0o600)
            .await
            .map_err(io_err)?;

        let shutdown = CancellationToken::new();
        let base = ServiceCtx {
            name: ServiceName::Iohubd,
            bus: broker.bus(),
            paths: opts.paths.clone(),
            backend: opts.backend,
            endpoints: opts.endpoints,
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
        let stop_requested = CancellationToken::new();
        let reboot = Arc::new(AtomicBool::new(false));
        let cmds = base
            .bus
            .subscribe(&[&bus_schema::topic::filter::cmds(ServiceName::Iohubd)])
            .await
            .map_err(io_err)?;
        let commands = tokio::spawn(serve_commands(
            base.clone(),
            stop_requested.clone(),
            reboot.clone(),
            cmds,
        ));
        tokio::spawn(return_freed_memory(shutdown.clone()));
        let supervisor = Supervisor::start(specs, base);
        tracing::info!(control = %addr, backend = ?opts.backend, root = %opts.paths.root.display(), "iohubd started");
        Ok(Daemon {
            broker,
            supervisor,
            control,
            shutdown,
            stop_requested,
            reboot,
            commands,
        })
    }

    pub fn bus(&self) -> broker::Bus {
        self.broker.bus()
    }

    pub fn control(&self) -> &ControlFile {
        &self.control
    }

    /// Resolves when a command asked the daemon to stop (a reboot request).
    pub async fn stop_requested(&self) {
        self.stop_requested.cancelled().await
    }

    /// Whether the stop was a reboot request: after [`Daemon::shutdown`] the caller reboots.
    pub fn reboot_requested(&self) -> bool {
        self.reboot.load(Ordering::SeqCst)
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
        self.commands.abort();
        let aborted = self.supervisor.shutdown(within).await;
        if !aborted.is_empty() {
            tracing::warn!(?aborted, "services aborted at shutdown");
        }
        self.broker.shutdown(within).await;
    }
}

/// After a clean shutdown for a reboot request: ask the init system to reboot, only when the
/// daemon owns the machine (system root `/`); otherwise (a demo or a test) say so and exit.
pub async fn reboot_machine(system_root: &Path) -> std::process::ExitCode {
    if system_root != Path::new("/") {
        tracing::warn!(system_root = %system_root.display(), "reboot requested: the system root is not /, so the machine is not rebooted");
        return std::process::ExitCode::SUCCESS;
    }
    let cmd = sys::cmd::Cmd::new("systemctl")
        .arg("reboot")
        .timeout(Duration::from_secs(30));
    match sys::cmd::run(&cmd).await {
        Ok(out) if out.success() => std::process::ExitCode::SUCCESS,
        result => {
            tracing::error!(?result, "systemctl reboot failed; trying reboot(8)");
            let cmd = sys::cmd::Cmd::new("reboot").timeout(Duration::from_secs(30));
            match sys::cmd::run(&cmd).await {
                Ok(out) if out.success() => std::process::ExitCode::SUCCESS,
                result => {
                    tracing::error!(?result, "reboot failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// How often freed heap is looked at, and how much of it the allocator may keep.
const TRIM_EVERY: Duration = Duration::from_secs(10);
const TRIM_ABOVE: usize = 8 << 20;

/// After a spike (a flood cut off by the broker's bounds, a large upload) the allocator keeps
/// the freed memory and RSS stays at the peak: hand it back (see [`sys::mem`]).
async fn return_freed_memory(shutdown: CancellationToken) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Ok(Some(free)) =
            tokio::task::spawn_blocking(|| sys::mem::trim_if_holding(TRIM_ABOVE)).await
        {
            tracing::debug!(free_bytes = free, "freed heap returned to the kernel");
        }
    }
}
