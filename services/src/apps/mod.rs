//! The apps service: the `docker/apps/<app>/start.sh` contract (SPEC §3.18, §4.5, §7.2, §11 items
//! 19, 30, 34, 36).
//!
//! - **Start-up**: once dockerd answers and the `docker` section says enabled, every app whose
//!   `start.sh` is executable runs it, in name order, one after the other, with the app dir as
//!   working directory and a timeout ([`config::AppsConfig`]); the exit code and output tail are
//!   recorded in the app's state. Only with the live backend: plan-only publishes the plan.
//! - **State**: `iohub/state/apps/<app>` (retained) lists the app's containers — matched by the
//!   compose project label (= app dir name) or, for plain `docker run --name` apps, by name
//!   prefix ([`plan::app_of`]) — with state, health, restart count and published ports, and the
//!   last start. It follows Docker's container event stream (coalesced for
//!   `refresh_delay`). A removed app's topic is cleared.
//! - **Commands** on `iohub/cmd/apps/<verb>` with `{"app": "<name>"}`: `start` (run start.sh;
//!   if it fails, stopped containers of the app are started), `stop`, `restart` (stop, then
//!   start.sh: compose recreates what changed), `remove` (containers only, never volumes),
//!   `enable`/`disable` (`chmod 755`/`644 start.sh`), `logs` (`tail`, `follow`: the tail is in
//!   the reply; with `follow`, new lines go out as `iohub/event/apps/log`, bounded by
//!   `max_lines` and `max_secs`). Operations on one app are serialized; different apps run in
//!   parallel. A disabled app is not started by `start`/`restart`.
//! - **Shutdown**: apps are stopped in reverse name order, each container with a short
//!   timeout, within a total budget.
//! - **Garbage collection** (instead of IOhubOS's `docker system prune -a --volumes`): every
//!   `gc_interval` (6 h), only when Docker's data disk is at least `gc_disk_percent` (80 %) used,
//!   images that no container (of any app or not, running or not) uses and that no app's
//!   compose file names are removed, unforced. Volumes and containers are never collected.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::sections::{Docker as DockerSection, GlobalMqtt};
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Request, Section, ServiceName, ServiceState, Topic, Verb,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use crate::shared::apps::{valid_app_name, GLOBAL_VOLUME_DIR};
use crate::shared::files::{blocking, io_error};
use crate::supervisor::ServiceSpec;
use config::AppsConfig;
use plan::AppDir;
use state::{AppFacts, AppSummary, ContainerFacts, Facts, GcReport, LogEvent, StartRecord};
use sys::docker::{Container, ContainerEvent, Docker};

/// How long the start-up run waits for the global broker's Docker side.
const GLOBAL_BROKER_WAIT: Duration = Duration::from_secs(30);

/// The apps service with the default settings.
pub fn spec() -> ServiceSpec {
    spec_with(AppsConfig::default())
}

/// The apps service. Start records survive a supervisor restart of the service.
pub fn spec_with(config: AppsConfig) -> ServiceSpec {
    let shared = Shared::default();
    ServiceSpec::new(ServiceName::Apps, move |ctx| {
        run(ctx, config.clone(), shared.clone())
    })
}

/// Body of every `iohub/cmd/apps/<verb>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppBody {
    app: String,
    /// `logs`: lines per container (default 100).
    #[serde(default)]
    tail: Option<usize>,
    /// `logs`: stream new lines as events.
    #[serde(default)]
    follow: bool,
    /// `logs` with `follow`: stop after this many lines ...
    #[serde(default)]
    max_lines: Option<usize>,
    /// ... or this many seconds.
    #[serde(default)]
    max_secs: Option<u64>,
}

/// What outlives one run of the service: start records, per-app locks, whether start-up ran.
#[derive(Debug, Clone, Default)]
struct Shared {
    records: Arc<Mutex<BTreeMap<String, StartRecord>>>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    booted: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    fn lock_of(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    fn record(&self, app: &str, r: StartRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_string(), r);
    }

    fn records(&self) -> BTreeMap<String, StartRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Messages from the tasks of the service to its loop.
enum Msg {
    /// Something changed: refresh the states soon.
    Refresh,
    /// The start-up run is over.
    Booted,
    /// The docker event stream ended (dockerd went away).
    EventsEnded(String),
}

async fn run(ctx: ServiceCtx, config: AppsConfig, shared: Shared) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;
    let (tx, mut rx) = mpsc::channel::<Msg>(256);
    let mut svc = Apps {
        ctx: ctx.clone(),
        config: config.clone(),
        shared,
        tx,
        docker_enabled: None,
        global_net: None,
        generation: 0,
        docker: None,
        docker_error: None,
        published: BTreeMap::new(),
        last_gc: None,
        last_state: None,
    };
    let mut refresh_at: Option<tokio::time::Instant> = None;
    let mut reconnect = tokio::time::interval(config.reconnect_every);
    reconnect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc = tokio::time::interval_at(
        tokio::time::Instant::now() + config.gc_interval,
        config.gc_interval,
    );
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let refresh = async {
            match refresh_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = inputs.next() => match input {
                None => {
                    svc.shutdown().await;
                    return Ok(());
                }
                Some(Input::Changed) => {
                    svc.generation = inputs.latest.generation();
                    match inputs.latest.section::<DockerSection>(Section::Docker) {
                        Some(Ok((_, d))) => svc.docker_enabled = Some(d.enabled),
                        Some(Err(e)) => tracing::warn!(error = %e, "docker section ignored"),
                        None => {}
                    }
                    if let Some(Ok((_, g))) = inputs.latest.section::<GlobalMqtt>(Section::GlobalMqtt) {
                        svc.global_net = g.enabled.then_some(g.network_name);
                    }
                    svc.connect().await;
                    svc.refresh().await;
                }
                Some(Input::Command(verb, request)) => svc.command(verb, request).await,
            },
            msg = rx.recv() => match msg {
                Some(Msg::Refresh) => {
                    refresh_at.get_or_insert_with(|| tokio::time::Instant::now() + config.refresh_delay);
                }
                Some(Msg::Booted) => svc.refresh().await,
                Some(Msg::EventsEnded(why)) => {
                    tracing::warn!(error = %why, "docker event stream ended");
                    svc.docker = None;
                    svc.docker_error = Some(why);
                    svc.refresh().await;
                }
                None => {}
            },
            () = refresh => {
                refresh_at = None;
                svc.refresh().await;
            }
            _ = reconnect.tick() => {
                if svc.docker.is_none() && svc.docker_enabled == Some(true) {
                    svc.connect().await;
                    if svc.docker.is_some() {
                        svc.refresh().await;
                    }
                }
            }
            _ = gc.tick() => svc.gc().await,
        }
    }
}

struct Apps {
    ctx: ServiceCtx,
    config: AppsConfig,
    shared: Shared,
    tx: mpsc::Sender<Msg>,
    docker_enabled: Option<bool>,
    /// The global broker's Docker network while the broker is on.
    global_net: Option<String>,
    generation: u64,
    docker: Option<Docker>,
    docker_error: Option<String>,
    /// The facts last published per app topic.
    published: BTreeMap<String, (Phase, u64, serde_json::Value)>,
    last_gc: Option<GcReport>,
    last_state: Option<(Phase, serde_json::Value)>,
}

impl Apps {
    fn live(&self) -> bool {
        self.ctx.backend == Backend::Live
    }

    async fn scan(&self) -> Vec<AppDir> {
        let root = self.ctx.paths.root.clone();
        tokio::task::spawn_blocking(move || apply::scan(&root))
            .await
            .unwrap_or_default()
    }

    /// Connect to dockerd when Docker is enabled; start the event stream and, the first time,
    /// the start-up run.
    async fn connect(&mut self) {
        if self.docker_enabled != Some(true) {
            self.docker = None;
            return;
        }
        let global_vol = self.ctx.paths.root(GLOBAL_VOLUME_DIR);
        match blocking(move || sys::fs::ensure_dir(&global_vol)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the apps' global-vol is missing"),
            Err(e) => tracing::warn!(error = %e, "the apps' global-vol is missing"),
        }
        if self.docker.is_some() {
            return;
        }
        match Docker::connect().await {
            Ok(d) => {
                self.docker_error = None;
                let events = d.container_events();
                let tx = self.tx.clone();
                let shutdown = self.ctx.shutdown.clone();
                tokio::spawn(forward_events(events, tx, shutdown));
                self.docker = Some(d);
                self.boot().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "dockerd does not answer");
                self.docker_error = Some(e.to_string());
            }
        }
    }

    /// The start-up run (once per daemon start).
    async fn boot(&mut self) {
        let apps = self.scan().await;
        let plan = plan::start_plan(self.docker_enabled == Some(true), self.live(), &apps);
        let p = state::Plan {
            start: plan.clone(),
            gc_interval_secs: self.config.gc_interval.as_secs(),
            gc_disk_percent: self.config.gc_disk_percent,
        };
        if let Err(e) = self.ctx.publish_plan(&p).await {
            tracing::warn!(error = %e, "apps plan not published");
        }
        if self
            .shared
            .booted
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        if !self.live() {
            let _ = self.tx.send(Msg::Booted).await;
            return;
        }
        let (root, shared, tx, timeout) = (
            self.ctx.paths.root.clone(),
            self.shared.clone(),
            self.tx.clone(),
            self.config.start_timeout,
        );
        let shutdown = self.ctx.shutdown.clone();
        let bus = self.ctx.bus.clone();
        let global_net = self.global_net.clone();
        tokio::spawn(async move {
            // The global broker first (SPEC §3.18): an app that names its network waits (bounded)
            // until the network and the broker's container are there.
            if let Some(net) = global_net {
                let starting: Vec<&str> = plan
                    .iter()
                    .filter(|p| p.action == "start")
                    .map(|p| p.app.as_str())
                    .collect();
                if apply::any_app_mentions(&root, &starting, &net).await {
                    apply::wait_global_broker(&bus, GLOBAL_BROKER_WAIT).await;
                }
            }
            for p in plan.iter().filter(|p| p.action == "start") {
                if shutdown.is_cancelled() {
                    break;
                }
                let lock = shared.lock_of(&p.app);
                let _guard = lock.lock().await;
                tracing::info!(app = %p.app, "starting app");
                let r = apply::run_start(&root, &p.app, timeout).await;
                if !r.ok() {
                    tracing::warn!(app = %p.app, code = ?r.exit_code, error = ?r.error, "start.sh failed");
                }
                shared.record(&p.app, r);
                let _ = tx.send(Msg::Refresh).await;
            }
            let _ = tx.send(Msg::Booted).await;
        });
    }

    /// Re-read the app dirs and containers; publish what changed.
    async fn refresh(&mut self) {
        let dirs = self.scan().await;
        let names: BTreeSet<String> = dirs
            .iter()
            .filter(|d| valid_app_name(&d.name))
            .map(|d| d.name.clone())
            .collect();
        let mut containers = Vec::new();
        let mut details = HashMap::new();
        if let Some(d) = &self.docker {
            match d.containers().await {
                Ok(cs) => {
                    containers = cs;
                    let grouped = plan::group(&containers, &names);
                    for c in grouped.values().flatten() {
                        if let Ok(det) = d.inspect(&c.id).await {
                            details.insert(c.id.clone(), det);
                        }
                    }
                }
                Err(e) => {
                    self.docker_error = Some(e.to_string());
                }
            }
        }
        let grouped = plan::group(&containers, &names);
        let records = self.shared.records();
        let mut summaries = Vec::new();
        for (app, cs) in &grouped {
            let dir = dirs.iter().find(|d| &d.name == app);
            let facts = AppFacts {
                app: app.clone(),
                enabled: dir.is_some_and(|d| d.enabled),
                installed: dir.is_some(),
                running: cs.iter().filter(|c| c.running()).count(),
                total: cs.len(),
                containers: cs
                    .iter()
                    .map(|c| {
                        let det = details.get(&c.id).cloned().unwrap_or_default();
                        ContainerFacts {
                            name: c.name.clone(),
                            id: c.id.chars().take(12).collect(),
                            service: c.service().map(str::to_string),
                            image: c.image.clone(),
                            state: c.state.clone(),
                            status: c.status.clone(),
                            health: det.health,
                            restarts: det.restart_count,
                            ports: c.ports.clone(),
                        }
                    })
                    .collect(),
                last_start: records.get(app).cloned(),
            };
            let unhealthy = facts
                .containers
                .iter()
                .filter(|c| c.health.as_deref() == Some("unhealthy"))
                .count();
            let start_failed = facts.last_start.as_ref().is_some_and(|r| !r.ok());
            let phase = plan::app_phase(
                facts.enabled,
                facts.running,
                facts.total,
                unhealthy,
                start_failed,
            );
            summaries.push(AppSummary {
                app: app.clone(),
                phase,
                running: facts.running,
                total: facts.total,
            });
            self.publish_app(app, phase, &facts, start_failed).await;
        }
        // Apps gone: clear their retained topics.
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|a| !grouped.contains_key(*a))
            .cloned()
            .collect();
        for app in gone {
            self.published.remove(&app);
            let topic = Topic::State(ServiceName::Apps, Some(app.clone()));
            if let Err(e) = self.ctx.bus.publish(&topic, bytes::Bytes::new()).await {
                tracing::warn!(app = %app, error = %e, "app state not cleared");
            }
        }
        self.publish_service(summaries).await;
    }

    async fn publish_app(&mut self, app: &str, phase: Phase, facts: &AppFacts, start_failed: bool) {
        let value = serde_json::to_value(facts).unwrap_or_default();
        let since = match self.published.get(app) {
            Some((p, since, v)) if *p == phase => {
                if *v == value {
                    return;
                }
                *since
            }
            _ => now_ms(),
        };
        let mut st = ServiceState::new(phase, self.generation, since);
        st.applied = Some(self.generation);
        if start_failed {
            if let Some(r) = &facts.last_start {
                st.last_error = Some(r.failure(app, r.output_tail.lines().last().unwrap_or("")));
            }
        }
        st.facts = value.clone();
        let topic = Topic::State(ServiceName::Apps, Some(app.to_string()));
        match self.ctx.bus.publish_json(&topic, &st).await {
            Ok(()) => {
                self.published
                    .insert(app.to_string(), (phase, since, value));
            }
            Err(e) => tracing::warn!(app = %app, error = %e, "app state not published"),
        }
    }

    async fn publish_service(&mut self, apps: Vec<AppSummary>) {
        let enabled = self.docker_enabled == Some(true);
        let facts = Facts {
            docker_enabled: enabled,
            docker_connected: self.docker.is_some(),
            docker_error: self.docker_error.clone(),
            started: self.shared.booted.load(std::sync::atomic::Ordering::SeqCst),
            apps,
            last_gc: self.last_gc.clone(),
        };
        let phase = match self.docker_enabled {
            None => Phase::Applying,
            Some(false) => Phase::Disabled,
            Some(true) if self.docker.is_none() => Phase::Degraded,
            Some(true) => Phase::Applied,
        };
        let value = serde_json::to_value(&facts).unwrap_or_default();
        if self.last_state.as_ref() == Some(&(phase, value.clone())) {
            return;
        }
        let mut st = ServiceState::new(phase, self.generation, now_ms());
        st.applied = Some(self.generation);
        if phase == Phase::Degraded {
            st.last_error = Some(BusError::new(
                ErrorCode::Unavailable,
                format!(
                    "dockerd: {}",
                    self.docker_error.as_deref().unwrap_or("not connected")
                ),
            ));
        }
        st.facts = value.clone();
        if let Err(e) = self.ctx.publish_state(&st).await {
            tracing::warn!(error = %e, "apps state not published");
        } else {
            self.last_state = Some((phase, value));
        }
    }

    async fn command(&mut self, verb: Verb, request: Request) {
        let body: AppBody = match serde_json::from_value(request.body.clone()) {
            Ok(b) => b,
            Err(e) => {
                let err = BusError::new(ErrorCode::BadPayload, format!("apps {verb}: {e}"));
                reply_err(&self.ctx, &request, vec![err]).await;
                return;
            }
        };
        if let Err(e) = self.check(verb, &body).await {
            reply_err(&self.ctx, &request, vec![e]).await;
            return;
        }
        let Some(docker) = self.docker.clone() else {
            let err = BusError::new(
                ErrorCode::Unavailable,
                format!(
                    "dockerd is not available: {}",
                    self.docker_error.as_deref().unwrap_or("Docker is disabled")
                ),
            );
            reply_err(&self.ctx, &request, vec![err]).await;
            return;
        };
        let op = Op {
            ctx: self.ctx.clone(),
            config: self.config.clone(),
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            docker,
        };
        tokio::spawn(op.run(verb, body, request));
    }

    /// Refuse what cannot be done before spawning anything.
    async fn check(&self, verb: Verb, body: &AppBody) -> Result<(), BusError> {
        if !valid_app_name(&body.app) {
            return Err(BusError::new(
                ErrorCode::InvalidValue,
                format!("`{}` is not a valid app name", body.app),
            )
            .with_field("app"));
        }
        let known = [
            Verb::Start,
            Verb::Stop,
            Verb::Restart,
            Verb::Remove,
            Verb::Undeploy,
            Verb::Logs,
            Verb::Enable,
            Verb::Disable,
        ];
        if !known.contains(&verb) {
            return Err(BusError::new(
                ErrorCode::BadTopic,
                format!("apps has no `{verb}` command (start, stop, restart, remove, undeploy, logs, enable, disable)"),
            ));
        }
        let dirs = self.scan().await;
        let dir = dirs.iter().find(|d| d.name == body.app);
        let needs_dir = matches!(
            verb,
            Verb::Start | Verb::Restart | Verb::Enable | Verb::Disable
        );
        if verb == Verb::Undeploy && dir.is_none() {
            return Err(BusError::new(
                ErrorCode::NotFound,
                format!("no app `{}` (docker/apps/{})", body.app, body.app),
            )
            .with_field("app"));
        }
        if needs_dir && dir.is_none_or(|d| !d.has_start) {
            return Err(BusError::new(
                ErrorCode::NotFound,
                format!("no app `{}` (docker/apps/{}/start.sh)", body.app, body.app),
            )
            .with_field("app"));
        }
        if matches!(verb, Verb::Start | Verb::Restart) && dir.is_some_and(|d| !d.enabled) {
            return Err(BusError::new(
                ErrorCode::Conflict,
                format!(
                    "app `{}` is disabled (start.sh is not executable)",
                    body.app
                ),
            )
            .with_field("app"));
        }
        let changes = !matches!(verb, Verb::Logs);
        if changes && !self.live() {
            return Err(BusError::new(
                ErrorCode::Unavailable,
                "the plan-only backend changes nothing (run iohubd --apply)",
            ));
        }
        Ok(())
    }

    /// Stop every app's containers, in reverse name order, within the budget.
    async fn shutdown(&mut self) {
        let Some(docker) = self.docker.clone() else {
            return;
        };
        if !self.live() || self.docker_enabled != Some(true) {
            return;
        }
        let dirs = self.scan().await;
        let names: BTreeSet<String> = dirs.iter().map(|d| d.name.clone()).collect();
        let timeout = self.config.shutdown_stop_timeout;
        let work = async {
            let Ok(containers) = docker.containers().await else {
                return;
            };
            let grouped = plan::group(&containers, &names);
            for (app, cs) in grouped.iter().rev() {
                let cs: Vec<Container> = cs.iter().map(|c| (*c).clone()).collect();
                let (stopped, errors) = apply::stop_all(&docker, &cs, timeout).await;
                if !stopped.is_empty() {
                    tracing::info!(app = %app, ?stopped, "app stopped at shutdown");
                }
                for e in errors {
                    tracing::warn!(app = %app, error = %e, "container not stopped at shutdown");
                }
            }
        };
        if tokio::time::timeout(self.config.shutdown_budget, work)
            .await
            .is_err()
        {
            tracing::warn!(budget = ?self.config.shutdown_budget, "apps still running at shutdown");
        }
    }

    /// Collect unused images when Docker's data disk is full enough.
    async fn gc(&mut self) {
        let Some(docker) = self.docker.clone() else {
            return;
        };
        if !self.live() {
            return;
        }
        let Ok(data_root) = docker.data_root().await else {
            return;
        };
        let percent = tokio::task::spawn_blocking(move || {
            sys::docker::disk_used_percent(std::path::Path::new(&data_root))
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
        let mut report = GcReport {
            at_ms: now_ms(),
            disk_used_percent: percent,
            threshold_percent: self.config.gc_disk_percent,
            removed: Vec::new(),
            errors: Vec::new(),
        };
        if percent >= self.config.gc_disk_percent {
            let root = self.ctx.paths.root.clone();
            let refs: BTreeSet<String> =
                tokio::task::spawn_blocking(move || apply::compose_refs(&root))
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
            if let (Ok(images), Ok(containers)) = (docker.images().await, docker.containers().await)
            {
                for image in plan::gc_candidates(&images, &containers, &refs) {
                    match docker.remove_image(&image.id).await {
                        Ok(()) => report.removed.push(
                            image
                                .tags
                                .first()
                                .cloned()
                                .unwrap_or_else(|| image.id.clone()),
                        ),
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
            }
            tracing::info!(percent, removed = ?report.removed, "image garbage collection");
        }
        self.last_gc = Some(report);
        self.refresh().await;
    }
}

/// One command on one app, run as its own task.
struct Op {
    ctx: ServiceCtx,
    config: AppsConfig,
    shared: Shared,
    tx: mpsc::Sender<Msg>,
    docker: Docker,
}

impl Op {
    async fn containers(&self, app: &str) -> Result<Vec<Container>, BusError> {
        let all = self.docker.containers().await.map_err(docker_error)?;
        let names: BTreeSet<String> = {
            let root = self.ctx.paths.root.clone();
            let mut n: BTreeSet<String> = tokio::task::spawn_blocking(move || apply::scan(&root))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.name)
                .collect();
            n.insert(app.to_string());
            n
        };
        Ok(plan::group(&all, &names)
            .remove(app)
            .unwrap_or_default()
            .into_iter()
            .cloned()
            .collect())
    }

    async fn run(self, verb: Verb, body: AppBody, request: Request) {
        let result = if verb == Verb::Logs {
            self.logs(&body).await
        } else {
            let lock = self.shared.lock_of(&body.app);
            let _guard = lock.lock().await;
            let r = match verb {
                Verb::Start => self.start(&body.app, false).await,
                Verb::Restart => self.start(&body.app, true).await,
                Verb::Stop => self.stop(&body.app).await,
                Verb::Remove => self.remove(&body.app).await,
                Verb::Undeploy => self.undeploy(&body.app).await,
                Verb::Enable | Verb::Disable => self.enable(&body.app, verb == Verb::Enable).await,
                _ => Err(BusError::new(
                    ErrorCode::BadTopic,
                    format!("no `{verb}` command"),
                )),
            };
            let _ = self.tx.send(Msg::Refresh).await;
            r
        };
        match result {
            Ok(v) => reply_ok(&self.ctx, &request, v).await,
            Err(e) => reply_err(&self.ctx, &request, vec![e]).await,
        }
    }

    async fn start(&self, app: &str, restart: bool) -> Result<serde_json::Value, BusError> {
        let mut stopped = Vec::new();
        if restart {
            let cs = self.containers(app).await?;
            let (s, errors) = apply::stop_all(&self.docker, &cs, self.config.stop_timeout).await;
            stopped = s;
            if let Some(e) = errors.into_iter().next() {
                return Err(docker_error(e));
            }
        }
        let r = apply::run_start(&self.ctx.paths.root, app, self.config.start_timeout).await;
        self.shared.record(app, r.clone());
        let mut started = Vec::new();
        if !r.ok() {
            // start.sh failed (e.g. `docker run --name` of an existing container): start the
            // containers the app already has.
            for c in self.containers(app).await? {
                if !c.running() && self.docker.start(&c.id).await.is_ok() {
                    started.push(c.name);
                }
            }
            if started.is_empty() {
                return Err(r.failure(app, r.output_tail.trim_end()));
            }
        }
        Ok(serde_json::json!({
            "app": app,
            "stopped": stopped,
            "start": r,
            "started_existing": started,
        }))
    }

    async fn stop(&self, app: &str) -> Result<serde_json::Value, BusError> {
        let cs = self.containers(app).await?;
        let (stopped, errors) = apply::stop_all(&self.docker, &cs, self.config.stop_timeout).await;
        if let Some(e) = errors.into_iter().next() {
            return Err(docker_error(e));
        }
        Ok(serde_json::json!({ "app": app, "stopped": stopped }))
    }

    async fn remove(&self, app: &str) -> Result<serde_json::Value, BusError> {
        let removed = self.remove_containers(app).await?;
        Ok(serde_json::json!({ "app": app, "removed": removed }))
    }

    /// Stop and remove every container of `app`; returns their names.
    async fn remove_containers(&self, app: &str) -> Result<Vec<String>, BusError> {
        let cs = self.containers(app).await?;
        let (removed, errors) = apply::remove_all(&self.docker, &cs).await;
        match errors.into_iter().next() {
            Some(e) => Err(docker_error(e)),
            None => Ok(removed),
        }
    }

    /// Stop and remove the app's containers, then delete its folder, volume data included (the
    /// original's undeploy deleted the folder and left the containers running).
    async fn undeploy(&self, app: &str) -> Result<serde_json::Value, BusError> {
        let removed = self.remove_containers(app).await?;
        let dir = apply::apps_dir(&self.ctx.paths.root).join(app);
        blocking(move || sys::fs::remove_dir_all(&dir))
            .await?
            .map_err(|e| io_error("undeploy", e))?;
        Ok(serde_json::json!({ "app": app, "removed": removed, "deleted": true }))
    }

    async fn enable(&self, app: &str, enabled: bool) -> Result<serde_json::Value, BusError> {
        let (root, a) = (self.ctx.paths.root.clone(), app.to_string());
        tokio::task::spawn_blocking(move || apply::set_enabled(&root, &a, enabled))
            .await
            .map_err(|e| BusError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?;
        Ok(serde_json::json!({ "app": app, "enabled": enabled }))
    }

    async fn logs(&self, body: &AppBody) -> Result<serde_json::Value, BusError> {
        let tail = body.tail.unwrap_or(100).min(self.config.logs_tail_max);
        let cs = self.containers(&body.app).await?;
        let mut out = serde_json::Map::new();
        for c in &cs {
            let mut lines = Vec::new();
            let mut stream = self.docker.logs(&c.id, tail, false);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(l) => lines.push(serde_json::json!({"stream": l.stream, "line": l.line})),
                    Err(e) => return Err(docker_error(e)),
                }
                if lines.len() >= tail.max(1) * 2 {
                    break;
                }
            }
            let skip = lines.len().saturating_sub(tail);
            out.insert(
                c.name.clone(),
                serde_json::Value::Array(lines.split_off(skip)),
            );
        }
        let mut follow = serde_json::Value::Null;
        if body.follow {
            let max_lines = body
                .max_lines
                .unwrap_or(1000)
                .min(self.config.follow_max_lines);
            let max = body
                .max_secs
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(60))
                .min(self.config.follow_max);
            follow = serde_json::json!({ "max_lines": max_lines, "max_secs": max.as_secs() });
            let streams: Vec<_> = cs
                .iter()
                .map(|c| {
                    let name = c.name.clone();
                    self.docker
                        .logs(&c.id, 0, true)
                        .map(move |l| (name.clone(), l))
                })
                .collect();
            let ctx = self.ctx.clone();
            let app = body.app.clone();
            tokio::spawn(async move {
                let mut all = futures::stream::select_all(streams);
                let deadline = tokio::time::sleep(max);
                tokio::pin!(deadline);
                let mut sent = 0usize;
                while sent < max_lines {
                    let item = tokio::select! {
                        () = &mut deadline => break,
                        () = ctx.shutdown.cancelled() => break,
                        item = all.next() => item,
                    };
                    let Some((container, Ok(l))) = item else {
                        break;
                    };
                    let ev = LogEvent {
                        app: app.clone(),
                        container,
                        stream: l.stream,
                        line: l.line,
                    };
                    if ctx.event(EventKind::Log, &ev).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            });
        }
        Ok(serde_json::json!({ "app": body.app, "tail": out, "follow": follow }))
    }
}

async fn forward_events(
    mut events: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ContainerEvent, sys::docker::DockerError>> + Send>,
    >,
    tx: mpsc::Sender<Msg>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return,
            item = events.next() => item,
        };
        match item {
            Some(Ok(_ev)) => {
                if tx.send(Msg::Refresh).await.is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Msg::EventsEnded(e.to_string())).await;
                return;
            }
            None => {
                let _ = tx.send(Msg::EventsEnded("the stream ended".into())).await;
                return;
            }
        }
    }
}

fn docker_error(e: sys::docker::DockerError) -> BusError {
    let code = if e.is_not_found() {
        ErrorCode::NotFound
    } else {
        ErrorCode::Unavailable
    };
    BusError::new(code, e.to_string())
}
