//! Effects of the registry service: the supervised `docker-registry` process.
//!
//! [`supervise`] keeps the process of the latest [`ProcessPlan`] running: it writes
//! `config.yml` atomically, creates the storage directory, runs `docker-registry serve
//! config.yml` through `sys::cmd` (its own process group; dropping the run kills the group),
//! polls `GET /v2/` until it answers (`ready`), and when the process dies restarts it after a
//! backoff (doubling from [`RegistryOptions::backoff_min`] to `backoff_max`, back to the
//! minimum once a process has lived [`STABLE_AFTER`]). A new plan restarts it at once; no plan
//! (disabled) stops it. Every change is sent on a `watch` channel as [`ProcessFacts`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::plan::ProcessPlan;
use super::state::ProcessFacts;
use crate::sys::cmd::{self, Cmd};
use crate::sys::http::RegistryClient;

/// A process that lived this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How often readiness is polled until the registry answers.
const READY_POLL: Duration = Duration::from_millis(50);
/// "Forever" for the process run (a registry is never timed out).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Settings of the registry service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// The distribution binary (`docker-registry` on Debian).
    pub program: PathBuf,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            program: PathBuf::from("docker-registry"),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Write the config and make the storage directory.
async fn prepare(plan: &ProcessPlan) -> Result<(), String> {
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        crate::sys::fs::ensure_dir(&plan.storage)?;
        if let Some(dir) = plan.config_path.parent() {
            crate::sys::fs::ensure_dir(dir)?;
        }
        let current = std::fs::read(&plan.config_path).ok();
        if current.as_deref() != Some(plan.config_yml.as_bytes()) {
            crate::sys::fs::atomic_write(&plan.config_path, plan.config_yml.as_bytes(), 0o644)?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Keep the planned process running until `shutdown`.
pub async fn supervise(
    mut plans: watch::Receiver<Option<ProcessPlan>>,
    facts: watch::Sender<ProcessFacts>,
    options: RegistryOptions,
    shutdown: CancellationToken,
) {
    let mut backoff = options.backoff_min;
    loop {
        let plan = plans.borrow_and_update().clone();
        let Some(plan) = plan else {
            facts.send_modify(|f| {
                f.running = false;
                f.ready = false;
                f.port = None;
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = plans.changed() => if r.is_err() { return },
            }
            continue;
        };
        let client = RegistryClient::new("127.0.0.1", plan.port).ok();
        let started = tokio::time::Instant::now();
        let why_stopped = match prepare(&plan).await {
            Err(e) => {
                tracing::warn!(error = %e, "registry: cannot prepare");
                facts.send_modify(|f| f.last_error = Some(e));
                None
            }
            Ok(()) => {
                let command = Cmd::new(&plan.program).args(&plan.args).timeout(FOREVER);
                let run = cmd::run(&command);
                tokio::pin!(run);
                facts.send_modify(|f| {
                    f.running = true;
                    f.ready = false;
                    f.port = Some(plan.port);
                    f.starts += 1;
                    f.last_error = None;
                });
                tracing::info!(port = plan.port, "registry: started");
                let mut ready = false;
                let mut poll = tokio::time::interval(READY_POLL);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        r = plans.changed() => {
                            if r.is_err() { return }
                            break Some("config changed".to_string());
                        }
                        out = &mut run => {
                            let text = match out {
                                Ok(o) => {
                                    let tail: Vec<&str> = o.stderr_tail.lines().rev().take(3).collect();
                                    let how = match (o.code, o.signal) {
                                        (Some(c), _) => format!("exited with code {c}"),
                                        (None, Some(s)) => format!("killed by signal {s}"),
                                        _ => "ended".to_string(),
                                    };
                                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                                    format!("{how}: {}", tail.join(" | "))
                                }
                                Err(e) => e.to_string(),
                            };
                            tracing::warn!(exit = %text, "registry: process ended");
                            facts.send_modify(|f| {
                                f.running = false;
                                f.ready = false;
                                f.last_exit = Some(text.clone());
                            });
                            break None;
                        }
                        _ = poll.tick(), if !ready => {
                            if let Some(c) = &client {
                                if c.ping().await {
                                    ready = true;
                                    tracing::info!(port = plan.port, "registry: ready");
                                    facts.send_modify(|f| f.ready = true);
                                }
                            }
                        }
                    }
                }
            }
        };
        if why_stopped.is_some() {
            // A new plan: restart at once.
            backoff = options.backoff_min;
            continue;
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = options.backoff_min;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
            r = plans.changed() => if r.is_err() { return },
        }
        backoff = (backoff * 2).min(options.backoff_max);
    }
}
