//! `iohubd --root DIR [--system-root DIR] [--apply]`: the iohub daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bus_schema::ServiceName;
use clap::Parser;
use services::daemon::{services, Daemon, DaemonOptions};
use services::{Backend, Paths};

/// The iohub control-plane daemon: embedded MQTT bus, config, watcher and lifecycle services.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The writable data root (the original's /iohub).
    #[arg(long, default_value = "/iohub")]
    root: PathBuf,
    /// Where effects outside the root land (/etc, /usr/lib/iohub, ...). Use a scratch directory
    /// to try the daemon without touching this machine.
    #[arg(long, default_value = "/")]
    system_root: PathBuf,
    /// Apply plans to the system. Without it nothing on the system changes: every service only
    /// publishes what it would do on iohub/plan/<service>.
    #[arg(long)]
    apply: bool,
    /// Control listener (loopback only; credentials in <root>/runtime/control.json).
    #[arg(long, default_value = "127.0.0.1:1884")]
    control_addr: SocketAddr,
    /// Run only these services (comma-separated names, e.g. `config,watcher,apps`); the
    /// default runs every service of this build.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    only: Vec<ServiceName>,
    /// Run every service but these (comma-separated names).
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    without: Vec<ServiceName>,
    /// Upper bound on a clean shutdown.
    #[arg(long, default_value = "10", value_name = "SECS")]
    shutdown_timeout: u64,
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("IOHUB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd (JOURNAL_STREAM is set) journald adds timestamps and colours are noise.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if journald {
        builder
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    if !args.control_addr.ip().is_loopback() {
        tracing::error!(addr = %args.control_addr, "the control listener must be on loopback");
        return ExitCode::from(2);
    }
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
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let opts = DaemonOptions {
        paths: Paths::new(args.root, args.system_root.clone()),
        backend: if args.apply {
            Backend::Live
        } else {
            Backend::PlanOnly
        },
        control_addr: args.control_addr,
    };
    let specs: Vec<_> = services()
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.name))
        .filter(|s| !args.without.contains(&s.name))
        .collect();
    let system_root = args.system_root.clone();
    let daemon = match Daemon::start(opts, specs).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "iohubd failed to start");
            return ExitCode::FAILURE;
        }
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tokio::select! {
        () = wait_for_signal() => {}
        () = daemon.stop_requested() => {}
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down");
    let reboot = daemon.reboot_requested();
    daemon
        .shutdown(Duration::from_secs(args.shutdown_timeout))
        .await;
    tracing::info!("stopped");
    if reboot {
        return services::daemon::reboot_machine(&system_root).await;
    }
    ExitCode::SUCCESS
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
