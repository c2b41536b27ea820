//! `iohubd [--root DIR] [--system-root DIR] [--apply] [--config FILE] ...`: the iohub daemon.
//! Every flag is also a key of `/etc/iohub/iohubd.toml` and an `IOHUBD_*` variable
//! ([`services::settings`]); flags win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bus_schema::ServiceName;
use clap::Parser;
use services::daemon::{services, Daemon, DaemonOptions};
use services::settings::{LogFormat, Overrides, Settings};

/// The iohub control-plane daemon: embedded MQTT bus, config, watcher and lifecycle services.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Settings file (TOML; keys as below, snake_case). Default: /etc/iohub/iohubd.toml when it
    /// exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The writable data root (the original's /iohub). Default /iohub.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Where effects outside the root land (/etc, /usr/lib/iohub, ...). Use a scratch directory
    /// to try the daemon without touching this machine. Default /.
    #[arg(long)]
    system_root: Option<PathBuf>,
    /// Apply plans to the system. Without it nothing on the system changes: every service only
    /// publishes what it would do on iohub/plan/<service>.
    #[arg(long, conflicts_with = "plan_only")]
    apply: bool,
    /// Apply nothing, even if the settings file says `apply = true`.
    #[arg(long)]
    plan_only: bool,
    /// Control listener (loopback only; credentials in <root>/runtime/control.json). Default
    /// 127.0.0.1:1884.
    #[arg(long, alias = "control-listen", value_name = "ADDR")]
    control_addr: Option<SocketAddr>,
    /// The apps' broker listener on the host. Default 127.0.0.1:1883 (--apply), else a free
    /// loopback port.
    #[arg(long, value_name = "ADDR")]
    global_mqtt_listen: Option<SocketAddr>,
    /// Prometheus endpoint. Default 127.0.0.1:9883 (--apply), else a free loopback port.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Log format: auto (text; plain under journald), text or json. The filter is `IOHUB_LOG`
    /// (default `info`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
    /// Run only these services (comma-separated names, e.g. `config,watcher,apps`); the
    /// default runs every service of this build.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Option<Vec<ServiceName>>,
    /// Run every service but these (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    without: Option<Vec<ServiceName>>,
    /// Upper bound on a clean shutdown. Default 10.
    #[arg(long, value_name = "SECS")]
    shutdown_timeout: Option<u64>,
    /// The WireGuard tunnel's interface. Default wg0.
    #[arg(long, value_name = "NAME")]
    wireguard_interface: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Auto,
    Text,
    Json,
}

impl Args {
    fn overrides(self) -> Overrides {
        Overrides {
            file: self.config,
            root: self.root,
            system_root: self.system_root,
            apply: if self.apply {
                Some(true)
            } else if self.plan_only {
                Some(false)
            } else {
                None
            },
            control_listen: self.control_addr,
            global_mqtt_listen: self.global_mqtt_listen,
            metrics_listen: self.metrics_listen,
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Auto => LogFormat::Auto,
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            only: self.only,
            without: self.without,
            shutdown_timeout_secs: self.shutdown_timeout,
            wireguard_interface: self.wireguard_interface,
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("IOHUB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Under systemd (JOURNAL_STREAM is set) journald adds timestamps and colours are noise.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Auto if journald => builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .init(),
        LogFormat::Auto | LogFormat::Text => builder.init(),
    }
}

#[allow(clippy::print_stderr)] // before tracing is set up, stderr is the only voice
fn main() -> ExitCode {
    let settings = match Settings::load(&Args::parse().overrides(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iohubd: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> ExitCode {
    match sys::limits::raise_open_files() {
        Ok((soft, hard)) => tracing::debug!(soft, hard, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let opts = DaemonOptions {
        paths: settings.paths(),
        backend: settings.backend(),
        control_addr: settings.control_listen,
        endpoints: settings.endpoints(),
    };
    let specs: Vec<_> = services()
        .into_iter()
        .filter(|s| settings.only.is_empty() || settings.only.contains(&s.name))
        .filter(|s| !settings.without.contains(&s.name))
        .collect();
    let daemon = match Daemon::start(opts, specs).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "iohubd failed to start");
            return ExitCode::FAILURE;
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog();
    tokio::select! {
        () = wait_for_signal() => {}
        () = daemon.stop_requested() => {}
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down");
    let reboot = daemon.reboot_requested();
    daemon
        .shutdown(Duration::from_secs(settings.shutdown_timeout_secs))
        .await;
    tracing::info!("stopped");
    if reboot {
        return services::daemon::reboot_machine(&settings.system_root).await;
    }
    ExitCode::SUCCESS
}

/// Under a unit with `WatchdogSec=` (the image's iohubd.service), pings systemd's watchdog at
/// half its period from a runtime task: a runtime that no longer schedules tasks stops the pings,
/// and systemd restarts iohubd.
fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec) / 2;
    tracing::info!(
        period_ms = period.as_millis(),
        "pinging the systemd watchdog"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
