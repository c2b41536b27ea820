//! The lifecycle service: what IOhubOS's `iohub-bootstrap.sh` did at boot (SPEC §2.2, §3.2),
//! once per daemon start, in the same order:
//!
//! 1. hooks `postmount`, `presetup`;
//! 2. first-start setup when `<root>/setup.done` is missing (the `deploy/ firmware/ live/
//!    runtime/iohub-bootstrap/ runtime/iohub-registry/` dirs, `envvars` from the firmware,
//!    `setup.done`), then on every start `envvars.d` seeded with the firmware's layers up to the
//!    running version and the default `forwards-tcp`, `forwards-udp`, `routes` ([`setup`]);
//! 3. hook `postsetup`;
//! 4. unless `ask.noboot` (maintenance: the state is `degraded` and says why): hook
//!    `prelivesync`, live sync of `<root>/live/` over the system root unless `disable.livesync`
//!    ([`livesync`]), hooks `postlivesync`, `preliveactions`, the actions dir
//!    `/usr/bin/iohub-actions.d/*` unless `disable.actions`, hook `postliveactions`;
//! 5. hook `end`, always.
//!
//! Then it publishes its state (`applied`, with the facts: setup, live sync counts, a record per
//! hook and action) and its plan, and stays up: `iohub/cmd/lifecycle/reload` re-runs live sync,
//! `iohub/cmd/lifecycle/status` returns the facts.
//!
//! Hooks and actions each run as their own process with a timeout ([`LifecycleConfig`],
//! [`programs`]): a hanging one is killed, and since the service is its own task it never
//! stalls the daemon. Each emits `iohub/event/lifecycle/action_ran`.
//!
//! Backends: with `plan-only`, no hook or action runs and live sync writes nothing; the plan
//! lists what would be copied and run. First-start setup and seeding of the data root *do*
//! happen in both backends: they only touch the data root, and iohubd itself needs that tree
//! (the config service reads `envvars.d`, the watcher watches `deploy/`...). With `live`,
//! everything is done and the plan describes what was done.
//!
//! When the supervisor restarts this service after a failure, setup and live sync run again
//! (both are idempotent) but a hook or action that already ran in this daemon start is not run
//! twice: its earlier record is reused.

pub mod livesync;
pub mod programs;
pub mod setup;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Message;
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Reply, Request, ServiceName, ServiceState, Topic, Verb,
};

use crate::ctx::{now_ms, Backend, Paths, ServiceCtx};
use crate::shared::files::blocking;
use crate::supervisor::ServiceSpec;
use livesync::LiveSyncPlan;
use programs::{Hook, Kind, Program, Ran};
use state::{Facts, LiveSyncFacts, Markers, Plan, PlannedRun};

/// Marker: maintenance mode, skip live sync, actions and every hook but `end`.
pub const ASK_NOBOOT: &str = "ask.noboot";
/// Marker: skip live sync.
pub const DISABLE_LIVESYNC: &str = "disable.livesync";
/// Marker: skip the actions dir.
pub const DISABLE_ACTIONS: &str = "disable.actions";

/// How many entries of each live-sync list the published plan carries.
pub const PLAN_LIST_MAX: usize = 1000;

/// Settings of the lifecycle service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Each action is killed (with its process group) after this long.
    pub action_timeout: Duration,
    /// Each hook is killed (with its process group) after this long.
    pub hook_timeout: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> LifecycleConfig {
        LifecycleConfig {
            action_timeout: Duration::from_secs(120),
            hook_timeout: Duration::from_secs(120),
        }
    }
}

/// The lifecycle service with the default config.
pub fn spec() -> ServiceSpec {
    spec_with(LifecycleConfig::default())
}

/// The lifecycle service. Runs restarted by the supervisor share the memory of which hooks and
/// actions already ran.
pub fn spec_with(config: LifecycleConfig) -> ServiceSpec {
    let memory = Memory::default();
    ServiceSpec::new(ServiceName::Lifecycle, move |ctx| {
        run_with(ctx, config.clone(), memory.clone())
    })
}

/// One run of the lifecycle service (without memory of earlier runs).
pub async fn run(ctx: ServiceCtx, config: LifecycleConfig) -> Result<(), BusError> {
    run_with(ctx, config, Memory::default()).await
}

/// Records of the hooks and actions run in this daemon start, across service restarts.
#[derive(Debug, Clone, Default)]
struct Memory(Arc<Mutex<Vec<Ran>>>);

impl Memory {
    fn find(&self, kind: Kind, name: &str) -> Option<Ran> {
        let ran = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ran.iter()
            .find(|r| r.kind == kind && r.name == name)
            .cloned()
    }

    fn push(&self, ran: Ran) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(ran);
    }
}

async fn run_with(
    ctx: ServiceCtx,
    config: LifecycleConfig,
    memory: Memory,
) -> Result<(), BusError> {
    // Subscribe before anything is published, so a client that sees `applied` can send a
    // command.
    let mut cmds = ctx
        .bus
        .subscribe(&[&filter::cmds(ServiceName::Lifecycle)])
        .await?;
    ctx.publish_state(&ServiceState::new(Phase::Applying, 0, now_ms()))
        .await?;

    let mut boot = Boot::new(&ctx, &config, memory);
    tokio::select! {
        result = boot.run() => result?,
        () = ctx.shutdown.cancelled() => return Ok(()),
    }
    boot.publish().await?;

    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            msg = cmds.recv() => match msg {
                Some(msg) => boot.command(msg).await?,
                // The broker is gone: nothing to serve until shutdown.
                None => {
                    ctx.shutdown.cancelled().await;
                    return Ok(());
                }
            },
        }
    }
}

/// The state of one run: what was found, done and planned.
struct Boot<'a> {
    ctx: &'a ServiceCtx,
    config: &'a LifecycleConfig,
    memory: Memory,
    facts: Facts,
    livesync_plan: Option<LiveSyncPlan>,
    runs: Vec<PlannedRun>,
    since_ms: u64,
}

impl<'a> Boot<'a> {
    fn new(ctx: &'a ServiceCtx, config: &'a LifecycleConfig, memory: Memory) -> Boot<'a> {
        Boot {
            ctx,
            config,
            memory,
            facts: Facts {
                backend: ctx.backend,
                maintenance: false,
                markers: Markers::default(),
                setup: setup::SetupReport::default(),
                livesync: LiveSyncFacts::default(),
                hooks: Vec::new(),
                actions: Vec::new(),
                actions_not_run: None,
                skipped: Vec::new(),
                programs_from_earlier_run: false,
            },
            livesync_plan: None,
            runs: Vec::new(),
            since_ms: now_ms(),
        }
    }

    fn paths(&self) -> &Paths {
        &self.ctx.paths
    }

    fn marker(&self, name: &str) -> bool {
        std::fs::symlink_metadata(self.paths().root(name)).is_ok()
    }

    /// SPEC §2.2 steps 2-13.
    async fn run(&mut self) -> Result<(), BusError> {
        self.hook(Hook::PostMount).await;
        self.hook(Hook::PreSetup).await;
        let paths = self.paths().clone();
        self.facts.setup = blocking(move || setup::run(&paths))
            .await?
            .map_err(|e| BusError::new(ErrorCode::Io, format!("first-start setup: {e}")))?;
        self.hook(Hook::PostSetup).await;

        self.facts.markers.ask_noboot = self.marker(ASK_NOBOOT);
        if self.facts.markers.ask_noboot {
            tracing::warn!("maintenance mode ({ASK_NOBOOT}): no live sync, no actions");
            self.facts.maintenance = true;
            self.facts.livesync =
                LiveSyncFacts::not_run(format!("maintenance mode ({ASK_NOBOOT})"));
            self.facts.actions_not_run = Some(format!("maintenance mode ({ASK_NOBOOT})"));
        } else {
            self.hook(Hook::PreLiveSync).await;
            self.livesync().await?;
            self.hook(Hook::PostLiveSync).await;
            self.hook(Hook::PreLiveActions).await;
            self.actions().await?;
            self.hook(Hook::PostLiveActions).await;
        }
        self.hook(Hook::End).await;
        Ok(())
    }

    async fn livesync(&mut self) -> Result<(), BusError> {
        self.facts.markers.disable_livesync = self.marker(DISABLE_LIVESYNC);
        let live = self.paths().root("live");
        self.livesync_plan = None;
        if self.facts.markers.disable_livesync {
            self.facts.livesync = LiveSyncFacts::not_run(DISABLE_LIVESYNC);
            return Ok(());
        }
        if !live.is_dir() {
            self.facts.livesync = LiveSyncFacts::not_run("no live/ directory");
            return Ok(());
        }
        let dest = self.paths().system_root.clone();
        let plan = match blocking(move || livesync::plan(&live, &dest)).await? {
            Ok(plan) => plan,
            Err(e) => {
                let mut facts = LiveSyncFacts::not_run("the live/ directory cannot be read");
                facts.errors.push(e.to_string());
                facts.error_count = 1;
                self.facts.livesync = facts;
                return Ok(());
            }
        };
        self.facts.livesync = match self.ctx.backend {
            Backend::PlanOnly => LiveSyncFacts::from_plan(&plan),
            Backend::Live => {
                let to_apply = plan.clone();
                let report = blocking(move || livesync::apply(&to_apply)).await?;
                tracing::info!(
                    files = report.files,
                    dirs = report.dirs,
                    errors = report.errors.len(),
                    "live sync"
                );
                LiveSyncFacts::from_report(report)
            }
        };
        self.livesync_plan = Some(plan);
        Ok(())
    }

    async fn actions(&mut self) -> Result<(), BusError> {
        self.facts.markers.disable_actions = self.marker(DISABLE_ACTIONS);
        if self.facts.markers.disable_actions {
            self.facts.actions_not_run = Some(DISABLE_ACTIONS.to_string());
            return Ok(());
        }
        let dir = self.paths().system(programs::ACTIONS_DIR);
        // In a plan, the actions live sync would add belong to the list too.
        let planned: Vec<_> = match (&self.livesync_plan, self.ctx.backend) {
            (Some(plan), Backend::PlanOnly) => {
                plan.files.iter().map(|f| (f.to.clone(), f.mode)).collect()
            }
            _ => Vec::new(),
        };
        let listing = {
            let dir = dir.clone();
            blocking(move || programs::actions(&dir, &planned)).await?
        };
        let (actions, skipped) = match listing {
            Ok(found) => found,
            Err(e) => {
                self.facts.actions_not_run = Some(format!("{}: {e}", dir.display()));
                return Ok(());
            }
        };
        self.facts.skipped = skipped;
        for action in actions {
            let timeout = self.config.action_timeout;
            self.program(action, timeout).await;
        }
        Ok(())
    }

    async fn hook(&mut self, hook: Hook) {
        let paths = self.paths().clone();
        let found = blocking(move || programs::hook(&paths, hook))
            .await
            .ok()
            .flatten();
        if let Some(program) = found {
            let timeout = self.config.hook_timeout;
            self.program(program, timeout).await;
        }
    }

    /// Plan one program and, with the live backend, run it (once per daemon start).
    async fn program(&mut self, program: Program, timeout: Duration) {
        self.runs.push(PlannedRun {
            kind: program.kind,
            name: program.name.clone(),
            path: program.path.clone(),
            how: program.how,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        if self.ctx.backend == Backend::PlanOnly {
            return;
        }
        let ran = match self.memory.find(program.kind, &program.name) {
            Some(earlier) => {
                self.facts.programs_from_earlier_run = true;
                earlier
            }
            None => {
                let ran = programs::run(self.paths(), &program, timeout).await;
                log_ran(&ran);
                if let Err(e) = self.ctx.event(EventKind::ActionRan, &ran).await {
                    tracing::warn!(error = %e, "cannot publish action_ran");
                }
                self.memory.push(ran.clone());
                ran
            }
        };
        match ran.kind {
            Kind::Hook => self.facts.hooks.push(ran),
            Kind::Action => self.facts.actions.push(ran),
        }
    }

    fn state(&self) -> ServiceState {
        let mut state = ServiceState::new(Phase::Applied, 0, self.since_ms);
        if self.facts.maintenance {
            state.phase = Phase::Degraded;
            state.last_error = Some(
                BusError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "maintenance mode: {} exists; live sync, actions and every hook but `end` \
                         were skipped (remove the file and restart iohubd to boot normally)",
                        self.paths().root(ASK_NOBOOT).display()
                    ),
                )
                .with_field(ASK_NOBOOT),
            );
        } else if let Some(first) = self.facts.livesync.errors.first() {
            let count = self.facts.livesync.error_count;
            state.phase = Phase::Degraded;
            state.last_error = Some(
                BusError::new(
                    ErrorCode::Io,
                    format!("live sync: {count} error(s), first: {first}"),
                )
                .with_field("live"),
            );
        }
        state.facts = serde_json::to_value(&self.facts).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("facts not serializable: {e}") }),
        );
        state
    }

    fn plan(&self) -> Plan {
        Plan {
            version: bus_schema::PAYLOAD_VERSION,
            backend: self.ctx.backend,
            applied: self.ctx.backend == Backend::Live,
            maintenance: self.facts.maintenance,
            setup: self.facts.setup.clone(),
            livesync: self
                .livesync_plan
                .as_ref()
                .map(|p| p.summary(PLAN_LIST_MAX)),
            run: self.runs.clone(),
        }
    }

    async fn publish(&mut self) -> Result<(), BusError> {
        self.ctx.publish_plan(&self.plan()).await?;
        let state = self.state();
        tracing::info!(phase = %state.phase, "lifecycle done");
        self.ctx.publish_state(&state).await.map_err(BusError::from)
    }

    /// Serve one command. Only bus failures are errors; a bad request gets an error reply.
    async fn command(&mut self, msg: Message) -> Result<(), BusError> {
        let request: Request = match msg.json() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed request");
                return Ok(());
            }
        };
        let result = match msg.control_topic() {
            Some(Topic::Cmd(ServiceName::Lifecycle, Verb::Reload)) => self.reload().await?,
            Some(Topic::Cmd(ServiceName::Lifecycle, Verb::Status)) => {
                let state = self.state();
                Ok(serde_json::json!({ "phase": state.phase, "facts": state.facts }))
            }
            _ => Err(BusError::new(
                ErrorCode::Unavailable,
                "lifecycle answers `reload` and `status`",
            )
            .with_field(msg.topic.clone())),
        };
        let reply = match result {
            Ok(value) => Reply::ok(&request.id, value),
            Err(e) => Reply::err(&request.id, vec![e]),
        };
        self.ctx
            .bus
            .reply(&request, &reply)
            .await
            .map_err(BusError::from)
    }

    /// `reload`: run live sync again (markers re-read), republish, reply with the sync facts.
    async fn reload(&mut self) -> Result<Result<serde_json::Value, BusError>, BusError> {
        if self.marker(ASK_NOBOOT) {
            return Ok(Err(BusError::new(
                ErrorCode::Unavailable,
                "maintenance mode: no live sync",
            )
            .with_field(ASK_NOBOOT)));
        }
        self.livesync().await?;
        self.since_ms = now_ms();
        self.publish().await?;
        Ok(serde_json::to_value(&self.facts.livesync)
            .map_err(|e| BusError::new(ErrorCode::Internal, e.to_string())))
    }
}

fn log_ran(ran: &Ran) {
    if ran.code == Some(0) {
        tracing::info!(kind = ?ran.kind, name = %ran.name, duration_ms = ran.duration_ms, "ran");
    } else {
        tracing::warn!(
            kind = ?ran.kind, name = %ran.name, code = ?ran.code, signal = ?ran.signal,
            timed_out = ran.timed_out, error = ?ran.error, stderr = %ran.stderr_tail,
            "ran and failed"
        );
    }
}
