//! The `global_mqtt` service: the IOhub-compatible broker for apps (SPEC §3.16, §7.5), served
//! by iohubd's own broker instead of a mosquitto container.
//!
//! - `config` — the `global_mqtt` section plus iohubd's listener options (environment).
//! - `plan` — pure: the apps listener and the Docker steps that keep `ezvpn-global-mqtt:1883` on
//!   `ezvpn-global-mqtt-net` working for old apps.
//! - `apply` — opens/replaces/closes the apps listener; persists and restores the apps' retained
//!   messages under `<root>/runtime/`.
//! - `state` — `iohub/state/broker` (published every [`TICK`]) and the Prometheus text.
//! - `metrics` — the Prometheus endpoint (loopback by default).
//!
//! The Docker steps are planned, not yet applied: with `--apply` and the broker enabled the
//! service reports `degraded` with that reason (the host listener still runs).

pub mod apply;
pub mod config;
pub mod metrics;
pub mod plan;
pub mod state;

use std::time::Duration;

use broker::ListenerHandle;
use bus_schema::sections::GlobalMqtt;
use bus_schema::{BusError, ErrorCode, Phase, Section, ServiceName, ServiceState, Topic, Verb};

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};

use self::config::{Desired, Options};
use self::plan::{ListenerPlan, RETAINED_FILE};

/// Period of `iohub/state/broker` and of the retained snapshot (written only when it changed).
pub const TICK: Duration = Duration::from_secs(2);

fn internal(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Internal, e.to_string())
}

struct Running {
    plan: ListenerPlan,
    handle: ListenerHandle,
}

pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let options = Options::from_env(ctx.backend, |k| std::env::var(k).ok());
    let retained_path = ctx.paths.runtime().join(RETAINED_FILE);
    let mut problems: Vec<BusError> = Vec::new();
    let restored = match apply::restore_retained(&ctx.bus, &retained_path).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "apps' retained messages not restored");
            problems.push(e);
            0
        }
    };
    let mut saved = ctx.bus.retained_generation();
    let metrics_addr = match &options {
        Ok(o) => Some(metrics::serve(ctx.bus.clone(), o.metrics, ctx.shutdown.clone()).await?),
        Err(_) => None,
    };
    let mut inputs = Inputs::subscribe(&ctx, &[Section::GlobalMqtt], &[]).await?;
    let mut running: Option<Running> = None;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_state: Option<ServiceState> = None;
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => {
                    let state = reconcile(&ctx, &inputs, &options, &mut running, &problems, restored, metrics_addr).await;
                    ctx.publish_state(&state).await.map_err(internal)?;
                    last_state = Some(state);
                    publish_broker_state(&ctx).await?;
                }
                Some(Input::Command(verb, request)) => match verb {
                    Verb::Get | Verb::Status => {
                        let body = serde_json::json!({
                            "state": last_state,
                            "broker": state::broker_facts(&ctx.bus),
                        });
                        reply_ok(&ctx, &request, body).await;
                    }
                    other => {
                        let e = BusError::new(ErrorCode::InvalidValue, format!("global_mqtt has no command {other}"));
                        reply_err(&ctx, &request, vec![e]).await;
                    }
                },
            },
            _ = tick.tick() => {
                publish_broker_state(&ctx).await?;
                match apply::save_retained(&ctx.bus, &retained_path, saved).await {
                    Ok(g) => saved = g,
                    Err(e) => tracing::warn!(error = %e, "apps' retained messages not saved"),
                }
            }
        }
    }
    // Close the apps' connections first, so that the snapshot is the last word.
    drop(running);
    if let Err(e) = apply::save_retained(&ctx.bus, &retained_path, saved).await {
        tracing::warn!(error = %e, "apps' retained messages not saved at shutdown");
    }
    Ok(())
}

async fn publish_broker_state(ctx: &ServiceCtx) -> Result<(), BusError> {
    let facts = state::broker_facts(&ctx.bus);
    let mut s = ServiceState::new(Phase::Applied, 0, now_ms());
    s.facts = serde_json::to_value(&facts).map_err(internal)?;
    ctx.bus
        .publish_json(&Topic::state(ServiceName::Broker), &s)
        .await
        .map_err(internal)
}

async fn reconcile(
    ctx: &ServiceCtx,
    inputs: &Inputs,
    options: &Result<Options, Vec<BusError>>,
    running: &mut Option<Running>,
    problems: &[BusError],
    restored: usize,
    metrics_addr: Option<std::net::SocketAddr>,
) -> ServiceState {
    let mut errors: Vec<BusError> = problems.to_vec();
    let (generation, section) = match inputs.latest.section::<GlobalMqtt>(Section::GlobalMqtt) {
        None => {
            let mut s = ServiceState::new(Phase::Applying, 0, now_ms());
            s.facts = serde_json::json!({ "waiting_for": Section::GlobalMqtt });
            return s;
        }
        Some(Err(e)) => {
            let mut s = ServiceState::new(Phase::Degraded, inputs.latest.generation(), now_ms());
            s.last_error = Some(e);
            return s;
        }
        Some(Ok(v)) => v,
    };
    let options = match options {
        Ok(o) => o.clone(),
        Err(es) => {
            for e in es {
                tracing::warn!(error = %e, "global_mqtt option refused");
            }
            let mut s = ServiceState::new(Phase::Degraded, generation, now_ms());
            s.last_error = es.first().cloned();
            s.facts = serde_json::json!({ "errors": es });
            return s;
        }
    };
    let desired = Desired::new(&section, options.clone());
    let plan = plan::plan(&desired);
    if let Err(e) = ctx.publish_plan(&plan).await {
        errors.push(internal(e));
    }
    // The listener: unchanged, replaced, opened or closed.
    if running.as_ref().map(|r| &r.plan) != plan.listener.as_ref() {
        *running = None;
        if let Some(lp) = &plan.listener {
            match apply::open_listener(&ctx.bus, lp, options.credentials.clone()).await {
                Ok(handle) => {
                    tracing::info!(addr = %handle.addr, "apps listener up");
                    *running = Some(Running {
                        plan: lp.clone(),
                        handle,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if ctx.backend == Backend::Live && !plan.docker.is_empty() {
        errors.push(BusError::new(
            ErrorCode::Unavailable,
            "the Docker steps (network, placeholder container, listener in its namespace) are not implemented yet; apps cannot reach the broker by name",
        ));
    }
    let phase = match (errors.is_empty(), desired.enabled) {
        (false, _) => Phase::Degraded,
        (true, true) => Phase::Applied,
        (true, false) => Phase::Disabled,
    };
    let mut s = ServiceState::new(phase, generation, now_ms());
    if errors.is_empty() {
        s.applied = Some(generation);
    }
    s.last_error = errors.first().cloned();
    s.facts = serde_json::json!({
        "listen": running.as_ref().map(|r| r.handle.addr.to_string()),
        "metrics": metrics_addr.map(|a| a.to_string()),
        "anonymous": options.anonymous,
        "mirror": options.mirror,
        "container_name": desired.container_name,
        "network_name": desired.network_name,
        "restored_retained": restored,
        "docker": if plan.docker.is_empty() { "none" } else { "planned" },
    });
    s
}
