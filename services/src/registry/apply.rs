//! Effects of the registry service: the `docker-registry` process.
//!
//! [`supervise`] keeps the process of the latest [`ProcessPlan`] running: it writes
//! `config.yml` atomically, creates the storage directory, and runs the plan's program as a
//! [`Supervised`] child ([`sys::child`]: started through `sys::cmd`, restarted with
//! backoff when it dies, SIGTERM then SIGKILL on stop). What stays here is registry-specific:
//! the readiness poll of `GET /v2/` (`ready`), re-polled after every (re)start of the process,
//! and the [`ProcessFacts`] sent on a `watch` channel at every change. A new plan stops the
//! process and starts it again at once; no plan (disabled) and shutdown stop it. A failed
//! `prepare` is retried after [`child::RESTART_MAX`] or at the next plan.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::plan::ProcessPlan;
use super::state::ProcessFacts;
use sys::child::{self, ChildStatus, Supervised};
use sys::cmd::Cmd;
use sys::http::RegistryClient;

/// How often readiness is polled until the registry answers.
const READY_POLL: Duration = Duration::from_millis(50);

/// Settings of the registry service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// The distribution binary (`docker-registry` on Debian).
    pub program: PathBuf,
}

impl Default for RegistryOptions {
    fn default() -> RegistryOptions {
        RegistryOptions {
            program: PathBuf::from("docker-registry"),
        }
    }
}

/// Write the config and make the storage directory.
async fn prepare(plan: &ProcessPlan) -> Result<(), String> {
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        sys::fs::ensure_dir(&plan.storage)?;
        if let Some(dir) = plan.config_path.parent() {
            sys::fs::ensure_dir(dir)?;
        }
        let current = std::fs::read(&plan.config_path).ok();
        if current.as_deref() != Some(plan.config_yml.as_bytes()) {
            sys::fs::atomic_write(&plan.config_path, plan.config_yml.as_bytes(), 0o644)?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Copy a [`ChildStatus`] into the facts. `earlier` are the starts of the processes of
/// earlier plans; the last exit of an earlier process stays until this one has its own.
fn publish(facts: &watch::Sender<ProcessFacts>, s: &ChildStatus, earlier: u32, ready: bool) {
    facts.send_modify(|f| {
        f.running = s.running;
        f.ready = ready && s.running;
        f.starts = earlier.saturating_add(s.starts);
        if let Some(exit) = &s.last_exit {
            f.last_exit = Some(exit.to_string());
        }
        f.last_error.clone_from(&s.spawn_error);
    });
}

/// Keep the planned process running until `shutdown` (the program is the plan's, which has
/// it from [`RegistryOptions`]).
pub async fn supervise(
    mut plans: watch::Receiver<Option<ProcessPlan>>,
    facts: watch::Sender<ProcessFacts>,
    shutdown: CancellationToken,
) {
    let (changed_tx, mut changed) = mpsc::unbounded_channel();
    // Starts of the processes of earlier plans.
    let mut earlier = 0u32;
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
        if let Err(e) = prepare(&plan).await {
            tracing::warn!(error = %e, "registry: cannot prepare");
            facts.send_modify(|f| {
                f.running = false;
                f.ready = false;
                f.last_error = Some(e);
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(child::RESTART_MAX) => {}
                r = plans.changed() => if r.is_err() { return },
            }
            continue;
        }
        let process = Supervised::start(
            Cmd::new(&plan.program).args(&plan.args),
            Vec::new(),
            changed_tx.clone(),
        );
        facts.send_modify(|f| f.port = Some(plan.port));
        tracing::info!(port = plan.port, "registry: started");
        let client = RegistryClient::new("127.0.0.1", plan.port).ok();
        let mut ready = false;
        let mut seen_starts = 0u32;
        let mut poll = tokio::time::interval(READY_POLL);
        let ended = loop {
            let status = process.status();
            if status.starts != seen_starts || !status.running {
                // A new process (or none): not ready until it answers.
                seen_starts = status.starts;
                ready = false;
            }
            publish(&facts, &status, earlier, ready);
            tokio::select! {
                () = shutdown.cancelled() => break true,
                r = plans.changed() => break r.is_err(),
                m = changed.recv() => if m.is_none() { break true },
                _ = poll.tick(), if status.running && !ready => {
                    if let Some(c) = &client {
                        if c.ping().await {
                            ready = true;
                            tracing::info!(port = plan.port, "registry: ready");
                        }
                    }
                }
            }
        };
        earlier = earlier.saturating_add(process.status().starts);
        process.stop().await;
        facts.send_modify(|f| {
            f.running = false;
            f.ready = false;
        });
        if ended {
            return;
        }
    }
}
