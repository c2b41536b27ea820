//! The supervisor: one tokio task per service, restarts with backoff, bounded shutdown.
//!
//! A service run is an async function that is meant to run until `ctx.shutdown` fires. When a
//! run panics, returns an error, or returns `Ok(())` before shutdown, the supervisor
//! - logs it with the service name,
//! - publishes the service's retained state `iohub/state/<name>` with `phase: failed`, the error
//!   (`code: panic` and the panic message for a panic) and the restart count,
//! - waits (100 ms, doubling up to 30 s; back to 100 ms after a run that stayed up 60 s),
//! - publishes `iohub/event/<name>/service_restarted` and starts a new run with
//!   `ctx.restarts` incremented.
//!
//! The other services are not affected. Waiting uses tokio's clock, so tests drive it with a
//! paused clock. [`Supervisor::shutdown`] cancels `ctx.shutdown`, waits a bounded time and aborts
//! the services that did not return.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::{BusError, ErrorCode, EventKind, Phase, ServiceName, ServiceState, Topic};
use futures::FutureExt;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ctx::{now_ms, ServiceCtx};

/// One run of a service.
pub type ServiceFuture = futures::future::BoxFuture<'static, Result<(), BusError>>;

/// The first delay before a restart.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// The longest delay before a restart.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run that stayed up this long was healthy: the next restart starts over at
/// [`BACKOFF_INITIAL`].
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A service the supervisor runs: its name and how to start one run of it.
#[derive(Clone)]
pub struct ServiceSpec {
    pub name: ServiceName,
    pub run: Arc<dyn Fn(ServiceCtx) -> ServiceFuture + Send + Sync>,
}

impl ServiceSpec {
    /// `ServiceSpec::new(name, |ctx| async move { ... })`.
    pub fn new<F, Fut>(name: ServiceName, run: F) -> ServiceSpec
    where
        F: Fn(ServiceCtx) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), BusError>> + Send + 'static,
    {
        ServiceSpec {
            name,
            run: Arc::new(move |ctx| run(ctx).boxed()),
        }
    }
}

impl std::fmt::Debug for ServiceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Payload of `iohub/event/<name>/service_restarted`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestartEvent {
    pub service: ServiceName,
    /// Restarts so far, this one included (the new run's `ctx.restarts`).
    pub restarts: u32,
    /// How long the supervisor waited before this restart.
    pub backoff_ms: u64,
    /// Why the previous run ended.
    pub last_error: BusError,
}

/// The running services.
pub struct Supervisor {
    shutdown: tokio_util::sync::CancellationToken,
    tasks: Vec<(ServiceName, JoinHandle<()>)>,
}

impl Supervisor {
    /// Start every service as its own task. `base` provides the bus, paths, backend and the
    /// shutdown token; its `name` and `restarts` are replaced per service.
    pub fn start(specs: Vec<ServiceSpec>, base: ServiceCtx) -> Supervisor {
        let shutdown = base.shutdown.clone();
        let tasks = specs
            .into_iter()
            .map(|spec| {
                let name = spec.name;
                (name, tokio::spawn(supervise(spec, base.clone())))
            })
            .collect();
        Supervisor { shutdown, tasks }
    }

    /// The supervised services, in start order.
    pub fn services(&self) -> Vec<ServiceName> {
        self.tasks.iter().map(|(n, _)| *n).collect()
    }

    /// Cancel `ctx.shutdown`, wait at most `within` for every service to return, then abort the
    /// ones that did not. Returns those stragglers (also logged).
    pub async fn shutdown(self, within: Duration) -> Vec<ServiceName> {
        self.shutdown.cancel();
        let mut tasks = self.tasks;
        let all_done = async {
            for (_, task) in tasks.iter_mut() {
                // A supervise task never panics (runs are caught); an abort is not possible yet.
                let _ = task.await;
            }
        };
        if tokio::time::timeout(within, all_done).await.is_ok() {
            return Vec::new();
        }
        let stragglers: Vec<ServiceName> = tasks
            .iter()
            .filter(|(_, task)| !task.is_finished())
            .map(|(name, task)| {
                task.abort();
                *name
            })
            .collect();
        tracing::warn!(?within, ?stragglers, "services ignored shutdown; aborted");
        stragglers
    }
}

/// The backoff sequence: `next` gives the delay before the coming restart.
#[derive(Debug, Clone)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    /// The delay after a run that lasted `ran`; the following one doubles.
    fn after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_AFTER {
            self.next = BACKOFF_INITIAL;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        delay
    }
}

async fn supervise(spec: ServiceSpec, base: ServiceCtx) {
    let name = spec.name;
    let mut backoff = Backoff::new();
    let mut restarts = 0u32;
    loop {
        let ctx = ServiceCtx {
            name,
            restarts,
            ..base.clone()
        };
        let started = Instant::now();
        let outcome = run_once(&spec, ctx).await;
        let ran = started.elapsed();
        if base.shutdown.is_cancelled() {
            if let Err(e) = outcome {
                tracing::warn!(service = %name, error = %e, "service failed while shutting down");
            }
            return;
        }
        let error = outcome.err().unwrap_or_else(|| {
            BusError::new(ErrorCode::Internal, "the service returned before shutdown")
        });
        let delay = backoff.after(ran);
        tracing::error!(service = %name, error = %error, restarts, ?delay, "service stopped; restarting");

        let mut state = ServiceState::new(Phase::Failed, 0, now_ms());
        state.last_error = Some(error.clone());
        state.restarts = restarts;
        state.facts = serde_json::json!({ "restart_in_ms": millis(delay) });
        if let Err(e) = base.bus.publish_json(&Topic::state(name), &state).await {
            tracing::warn!(service = %name, error = %e, "cannot publish the failed state");
        }

        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = base.shutdown.cancelled() => return,
        }
        restarts = restarts.saturating_add(1);
        let event = RestartEvent {
            service: name,
            restarts,
            backoff_ms: millis(delay),
            last_error: error,
        };
        if let Err(e) = base
            .bus
            .publish_json(&Topic::Event(name, EventKind::ServiceRestarted), &event)
            .await
        {
            tracing::warn!(service = %name, error = %e, "cannot publish the restart event");
        }
    }
}

/// One run, with panics (in the call that builds the future, or while polling it) turned into
/// a `code: panic` error.
async fn run_once(spec: &ServiceSpec, ctx: ServiceCtx) -> Result<(), BusError> {
    let future = std::panic::catch_unwind(AssertUnwindSafe(|| (spec.run)(ctx)))
        .map_err(|p| panic_error(p.as_ref()))?;
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|p| panic_error(p.as_ref()))?
}

fn panic_error(payload: &(dyn Any + Send)) -> BusError {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    BusError::new(ErrorCode::Panic, format!("panicked: {message}"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new();
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..12).map(|_| millis(b.after(short))).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        assert_eq!(b.after(HEALTHY_AFTER), BACKOFF_INITIAL);
        assert_eq!(b.after(short), Duration::from_millis(200));
    }

    #[test]
    fn panic_messages_are_kept() {
        let e = panic_error(&"boom");
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::Panic, "panicked: boom")
        );
        let e = panic_error(&String::from("formatted 7"));
        assert_eq!(e.message, "panicked: formatted 7");
    }
}
