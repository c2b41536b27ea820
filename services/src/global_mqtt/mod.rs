//! The `global_mqtt` service: the IOhub-compatible broker for apps (SPEC §3.16, §7.5), served
//! by iohubd's own broker instead of a mosquitto container.
//!
//! - `config` — the `global_mqtt` section plus iohubd's endpoints (its settings).
//! - `plan` — pure: the apps listener and the Docker steps that keep `ezvpn-global-mqtt:1883` on
//!   `ezvpn-global-mqtt-net` working for old apps.
//! - `apply` — opens/replaces/closes the apps listener; persists and restores the apps' retained
//!   messages under `<root>/runtime/`.
//! - `docker` — the Docker side (live backend, `IOHUBOS_DOCKER_ENABLED`): the network, the
//!   placeholder container and the apps listener bound in its network namespace.
//! - `state` — `iohub/state/broker` (published every [`TICK`]) and the Prometheus text.
//! - `metrics` — the Prometheus endpoint (loopback by default).
//!
//! Two apps listeners serve the same ACL and limits: `apps` on the host
//! (the `global_mqtt_listen` setting) and `apps-docker` inside the placeholder's namespace. The state's
//! `docker` fact says where the Docker side is: `none` (plan-only, or the broker off), `disabled`
//! (`IOHUBOS_DOCKER_ENABLED=false`), `failed` (retried every [`TICK`]; `last_error` says why) or
//! `ready`.

pub mod apply;
pub mod config;
pub mod docker;
pub mod metrics;
pub mod plan;
pub mod state;

use std::time::Duration;

use broker::ListenerHandle;
use bus_schema::facts::{DockerSide as DockerSideStatus, GlobalMqttFacts};
use bus_schema::sections::{Docker as DockerSection, GlobalMqtt};
use bus_schema::{
    BusError, ErrorCode, Phase, Secret, Section, ServiceName, ServiceState, Topic, Verb,
};
use futures::StreamExt;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};

use self::apply::AppsListener;
use self::config::{Desired, Options};
use self::plan::{ListenerPlan, APPS_PORT, RETAINED_FILE};
use sys::docker::Docker;

/// Period of `iohub/state/broker` and of the retained snapshot (written only when it changed).
pub const TICK: Duration = Duration::from_secs(2);

fn internal(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Internal, e.to_string())
}

struct Running {
    plan: ListenerPlan,
    credentials: Option<broker::ControlCredentials>,
    handle: ListenerHandle,
    websocket: Option<ListenerHandle>,
}

/// Messages from the Docker event follower.
enum DockerMsg {
    /// The placeholder container started, died or was removed.
    Changed,
    /// The event stream ended (dockerd went away).
    Ended(String),
}

/// The Docker side while it runs: the engine, and the listener bound in the placeholder's
/// namespace with the PID it was bound for.
#[derive(Default)]
struct DockerSide {
    docker: Option<Docker>,
    bound: Option<(u32, ListenerHandle)>,
    status: DockerSideStatus,
    events: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DockerSide {
    fn drop(&mut self) {
        if let Some(t) = self.events.take() {
            t.abort();
        }
    }
}

pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let options = Options::new(ctx.backend, ctx.endpoints.clone());
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
    let metrics_addr =
        metrics::serve(ctx.bus.clone(), options.metrics, ctx.shutdown.clone()).await?;
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;
    let mut running: Option<Running> = None;
    let mut side = DockerSide::default();
    let (docker_tx, mut docker_rx) = tokio::sync::mpsc::channel::<DockerMsg>(16);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said at once: the first reconcile may wait on dockerd (a slow boot) before it has a state.
    let starting = ServiceState::new(Phase::Applying, 0, now_ms());
    ctx.publish_state(&starting).await.map_err(internal)?;
    let mut last_state: Option<ServiceState> = None;
    let mut sys_topics = state::SysTopics::default();
    loop {
        let mut again = false;
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => again = true,
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
            msg = docker_rx.recv() => {
                if let Some(DockerMsg::Ended(why)) = msg {
                    tracing::warn!(error = %why, "docker event stream ended");
                    side.docker = None;
                }
                again = true;
            }
            _ = tick.tick() => {
                publish_broker_state(&ctx, &mut sys_topics).await?;
                match apply::save_retained(&ctx.bus, &retained_path, saved).await {
                    Ok(g) => saved = g,
                    Err(e) => tracing::warn!(error = %e, "apps' retained messages not saved"),
                }
                // Retry the Docker side while it is not ready (dockerd not up yet, gone).
                again = side.status == DockerSideStatus::Failed;
            }
        }
        if again {
            let state = reconcile(
                &ctx,
                &inputs,
                &options,
                &mut running,
                &mut side,
                &docker_tx,
                (&problems, restored, metrics_addr),
            )
            .await;
            let key = |s: &ServiceState| {
                (
                    s.phase,
                    s.generation,
                    s.applied,
                    s.last_error.clone(),
                    s.facts.clone(),
                )
            };
            if last_state.as_ref().map(key) != Some(key(&state)) {
                ctx.publish_state(&state).await.map_err(internal)?;
                publish_broker_state(&ctx, &mut sys_topics).await?;
            }
            last_state = Some(state);
        }
    }
    // Close the apps' connections first, so that the snapshot is the last word.
    drop(running);
    drop(side);
    if let Err(e) = apply::save_retained(&ctx.bus, &retained_path, saved).await {
        tracing::warn!(error = %e, "apps' retained messages not saved at shutdown");
    }
    Ok(())
}

/// `iohub/state/broker`, and the `$SYS/broker/...` topics that changed.
async fn publish_broker_state(
    ctx: &ServiceCtx,
    sys_topics: &mut state::SysTopics,
) -> Result<(), BusError> {
    let facts = state::broker_facts(&ctx.bus);
    for (topic, value) in sys_topics.changed(&facts) {
        ctx.bus
            .publish_raw_qos(topic, value.into(), 0, true)
            .await
            .map_err(internal)?;
    }
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
    options: &Options,
    running: &mut Option<Running>,
    side: &mut DockerSide,
    docker_tx: &tokio::sync::mpsc::Sender<DockerMsg>,
    (problems, restored, metrics_addr): (&[BusError], usize, std::net::SocketAddr),
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
    let docker_enabled = match inputs.latest.section::<DockerSection>(Section::Docker) {
        Some(Ok((_, d))) => d.enabled,
        // Unknown yet or refused: the Docker side waits.
        _ => false,
    };
    let password = if section.enabled && section.password.is_set() {
        match crate::secrets::read(&ctx.paths, "IOHUBOS_GLOBAL_MQTT_PASSWORD").await {
            Ok(p) => p,
            Err(e) => {
                errors.push(e);
                Secret::default()
            }
        }
    } else {
        Secret::default()
    };
    let desired = Desired::new(&section, &password, options.clone());
    let plan = plan::plan(&desired);
    let runtime = ctx.paths.runtime();
    if let Err(e) = ctx.publish_plan(&plan).await {
        errors.push(internal(e));
    }
    // The listener: unchanged, replaced, opened or closed.
    let current = running.as_ref().map(|r| (&r.plan, &r.credentials));
    if current != plan.listener.as_ref().map(|p| (p, &desired.credentials)) {
        *running = None;
        side.bound = None;
        if let Some(lp) = &plan.listener {
            let creds = || desired.credentials.clone();
            match apply::open_listener(&ctx.bus, lp, creds(), AppsListener::Host, &runtime).await {
                Ok(handle) => {
                    tracing::info!(addr = %handle.addr, "apps listener up");
                    let websocket = match lp.websocket {
                        None => None,
                        Some(addr) => {
                            let which = AppsListener::WebSocket(addr);
                            match apply::open_listener(&ctx.bus, lp, creds(), which, &runtime).await
                            {
                                Ok(h) => {
                                    tracing::info!(addr = %h.addr, "apps WebSocket listener up");
                                    Some(h)
                                }
                                Err(e) => {
                                    errors.push(e);
                                    None
                                }
                            }
                        }
                    };
                    *running = Some(Running {
                        plan: lp.clone(),
                        credentials: desired.credentials.clone(),
                        handle,
                        websocket,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if let Err(e) = docker_side(ctx, &desired, &plan, docker_enabled, side, docker_tx).await {
        tracing::warn!(error = %e, "global broker's Docker side");
        errors.push(e);
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
    let facts = GlobalMqttFacts {
        listen: running.as_ref().map(|r| r.handle.addr.to_string()),
        websocket: running
            .as_ref()
            .and_then(|r| r.websocket.as_ref())
            .map(|h| h.addr.to_string()),
        metrics: Some(metrics_addr.to_string()),
        anonymous: desired.anonymous,
        mirror: desired.mirror.clone(),
        container_name: desired.container_name.clone(),
        network_name: desired.network_name.clone(),
        restored_retained: restored,
        docker: side.status,
        container_pid: side.bound.as_ref().map(|(pid, _)| *pid),
    };
    s.facts = serde_json::to_value(&facts).unwrap_or_default();
    s
}

/// The Docker steps of the plan (live backend only): ensure the network and the placeholder,
/// bind the apps listener in its namespace (again when its PID changed), follow its events.
/// With the broker or Docker off, our placeholder is removed.
async fn docker_side(
    ctx: &ServiceCtx,
    desired: &Desired,
    plan: &plan::Plan,
    docker_enabled: bool,
    side: &mut DockerSide,
    docker_tx: &tokio::sync::mpsc::Sender<DockerMsg>,
) -> Result<(), BusError> {
    if ctx.backend != Backend::Live {
        side.status = DockerSideStatus::None;
        return Ok(());
    }
    if plan.docker.is_empty() || !docker_enabled {
        side.bound = None;
        side.status = if docker_enabled {
            DockerSideStatus::None
        } else {
            DockerSideStatus::Disabled
        };
        // The broker was switched off: our placeholder goes (a failure is only logged, the
        // broker being off is what matters).
        if docker_enabled {
            let removed = match connect(side, desired, docker_tx).await {
                Ok(docker) => docker::remove(&docker, &desired.container_name).await,
                Err(e) => Err(e),
            };
            match removed {
                Ok(true) => {
                    tracing::info!(container = %desired.container_name, "placeholder removed")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "placeholder not removed"),
            }
        }
        return Ok(());
    }
    side.status = DockerSideStatus::Failed;
    let docker = connect(side, desired, docker_tx).await?;
    let placeholder =
        docker::ensure(&docker, &desired.container_name, &desired.network_name).await?;
    if side.bound.as_ref().map(|(pid, _)| *pid) != Some(placeholder.pid) {
        side.bound = None;
        let pid = placeholder.pid;
        let socket = tokio::task::spawn_blocking(move || docker::bind_in_netns(pid, APPS_PORT))
            .await
            .map_err(internal)?
            .map_err(|e| {
                BusError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "bind :{APPS_PORT} in {}'s network namespace: {e}",
                        desired.container_name
                    ),
                )
            })?;
        let lp = plan
            .listener
            .as_ref()
            .ok_or_else(|| internal("an enabled broker without a listener plan"))?;
        let handle = apply::open_listener(
            &ctx.bus,
            lp,
            desired.credentials.clone(),
            AppsListener::Docker(socket),
            &ctx.paths.runtime(),
        )
        .await?;
        tracing::info!(container = %desired.container_name, pid, "apps listener up in the container's namespace");
        side.bound = Some((pid, handle));
    }
    side.status = DockerSideStatus::Ready;
    Ok(())
}

/// The engine, connected once (and again after its event stream ended), with the follower of
/// the placeholder's events.
async fn connect(
    side: &mut DockerSide,
    desired: &Desired,
    docker_tx: &tokio::sync::mpsc::Sender<DockerMsg>,
) -> Result<Docker, BusError> {
    if let Some(d) = &side.docker {
        return Ok(d.clone());
    }
    let d = Docker::connect()
        .await
        .map_err(|e| BusError::new(ErrorCode::Unavailable, e.to_string()))?;
    if let Some(t) = side.events.take() {
        t.abort();
    }
    side.events = Some(tokio::spawn(follow_events(
        d.clone(),
        desired.container_name.clone(),
        docker_tx.clone(),
    )));
    side.docker = Some(d.clone());
    Ok(d)
}

/// Forward the events of the container named `name` until the stream ends.
async fn follow_events(docker: Docker, name: String, tx: tokio::sync::mpsc::Sender<DockerMsg>) {
    let mut events = docker.container_events();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) if ev.name.as_deref() == Some(name.as_str()) => {
                if matches!(ev.action.as_str(), "start" | "die" | "destroy")
                    && tx.send(DockerMsg::Changed).await.is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(DockerMsg::Ended(e.to_string())).await;
                return;
            }
        }
    }
    let _ = tx
        .send(DockerMsg::Ended("dockerd closed the event stream".into()))
        .await;
}
