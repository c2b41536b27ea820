//! The firmware service (SPEC §3.1, §4.7, §8; issue 13): signed A/B updates of the IOhubOS image
//! (distro/README.md defines the slots, grubenv and bundle format it works with).
//!
//! Inputs: the `upgrader` section ([`config`]); `iohub/event/watcher/firmware_dropped` and, at
//! start, the bundles already in `<root>/firmware/` (`*.tgz`, `*.tar.gz`); the states of every
//! service (the health gate); commands `iohub/cmd/firmware/{install,status,commit,rollback,
//! set,reboot}`; with `IOHUBOS_UPGRADER_URL`, the signed release manifest of an HTTPS source
//! ([`release`], [`poll`]: polled at start and every `IOHUBOS_UPGRADER_POLL_SECS`; the newest
//! newer bundle whose rollout share covers this box is downloaded resumably, then installed like
//! a drop). `install {url}` fetches with the same TLS settings.
//!
//! An install ([`bundle`], [`slot`]) verifies the whole bundle before it writes anything, writes
//! the slot not booted, reads it back, then arms one trial boot of it in grubenv ([`grubenv`]:
//! `iohub_trial=<slot> iohub_trial_left=3`) and records the trial in `runtime/firmware/
//! trial.json`. It reboots (through `iohub/cmd/iohubd/reboot`: a clean shutdown, then the init
//! system's reboot when the system root is `/`) when the command asked for it or, for a dropped
//! bundle, when `IOHUBOS_UPGRADER_REBOOT` is true. A refused bundle is moved to
//! `<root>/firmware/refused/` with `<name>.reason`; both slots are left as they were. A dropped
//! bundle is removed only once installed, so one interrupted by a power cut is retried at the
//! next start. `firmware-pre`/`firmware-post` hooks are not run (config is data, never
//! executed); they are reported and left in place.
//!
//! With `IOHUBOS_UPGRADER_WINDOW` the reboot into an armed trial waits for the maintenance
//! window (local time; `facts.reboot_waits_for`).
//!
//! After the reboot ([`Service::start`]): booted from the slot armed, the service waits until
//! every service iohubd runs is `applied` or `disabled` (its own state excepted) and, with
//! `IOHUBOS_UPGRADER_REQUIRE_BRIDGE`, every bridge remote is connected, and commits
//! (`iohub_default=<slot>`, trial cleared); if `IOHUBOS_UPGRADER_HEALTH_SECS` pass first, it sets
//! the last good slot back as the only choice and reboots into it, publishing why. Booted from
//! another slot than the one armed, GRUB used up the tries (a kernel or initramfs that never
//! came up): the rollback is published. A trial slot whose iohubd never starts is covered by
//! GRUB's tries only when something reboots the box (a hardware watchdog; not set up here).
//!
//! Layout ([`Layout`]): every path is under the daemon's system root (`/` on a box, a scratch
//! directory in tests): `/proc/cmdline`, the slots `/dev/disk/by-partlabel/iohubboot{1,2}`,
//! grubenv `/boot/efi/boot/grub/grubenv` (the ESP, mounted by the image's fstab), the keys
//! `/usr/lib/iohub/firmware-keys/`, the console `/dev/console`.
//!
//! Backends: plan-only verifies a bundle and publishes what it would do; it writes nothing.

pub mod bundle;
pub mod config;
pub mod grubenv;
pub mod poll;
pub mod publish;
pub mod release;
pub mod slot;
pub mod state;
pub mod testkit;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::events::FileEvent;
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Request, ServiceName, ServiceState, Topic, Verb,
};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::ctx::{now_ms, Backend, Paths, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs, Latest};
use bundle::{BundleError, Policy, Trust, Verified};
use config::UpgraderConfig;
use grubenv::{Boot, GrubEnv, Slot};
use state::{Event, Facts, TrialFacts, TrialRecord};

/// Where the firmware service finds what it works on (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cmdline: PathBuf,
    pub grubenv: PathBuf,
    pub keys: PathBuf,
    pub version_file: PathBuf,
    pub slots: [PathBuf; 2],
    pub console: PathBuf,
    pub drops: PathBuf,
    pub refused: PathBuf,
    pub staging: PathBuf,
    pub record: PathBuf,
}

impl Layout {
    pub fn new(paths: &Paths) -> Layout {
        Layout {
            cmdline: paths.system("/proc/cmdline"),
            grubenv: paths.system("/boot/efi/boot/grub/grubenv"),
            keys: paths.firmware_lib().join("firmware-keys"),
            version_file: paths.firmware_lib().join("version"),
            slots: [
                paths.system("/dev/disk/by-partlabel/iohubboot1"),
                paths.system("/dev/disk/by-partlabel/iohubboot2"),
            ],
            console: paths.system("/dev/console"),
            drops: paths.root("firmware"),
            refused: paths.root("firmware/refused"),
            staging: paths.root("runtime/firmware/staging"),
            record: paths.root("runtime/firmware/trial.json"),
        }
    }

    pub fn device(&self, slot: Slot) -> &Path {
        &self.slots[usize::from(slot.number() - 1)]
    }

    /// The running version (`IOHUBOS_VERSION=<v>` in `/usr/lib/iohub/version`).
    pub fn running_version(&self) -> String {
        std::fs::read_to_string(&self.version_file)
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("IOHUBOS_VERSION=")
                        .map(|v| v.trim().to_string())
                })
            })
            .unwrap_or_else(|| "0.0.0".into())
    }

    pub fn booted(&self) -> Option<Slot> {
        std::fs::read_to_string(&self.cmdline)
            .ok()
            .and_then(|t| slot::booted(&t))
    }
}

/// The firmware service.
pub fn spec() -> crate::supervisor::ServiceSpec {
    crate::supervisor::ServiceSpec::new(ServiceName::Firmware, run)
}

/// Body of `iohub/cmd/firmware/install`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// A bundle on the box: absolute, or relative to the data root.
    #[serde(default)]
    pub path: Option<String>,
    /// An `https://` URL, fetched with the HTTPS source's TLS settings (`IOHUBOS_UPGRADER_CA`,
    /// `_CERT`, `_KEY`); the bundle's own signature vouches for it.
    #[serde(default)]
    pub url: Option<String>,
    /// Accept an older version than the running one.
    #[serde(default)]
    pub downgrade: bool,
    /// Reboot into the trial once installed.
    #[serde(default)]
    pub reboot: bool,
}

/// Body of `rollback`, `set` and `reboot`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotRequest {
    /// `A`/`B`, or the original's `1`/`2`.
    #[serde(default)]
    slot: Option<String>,
    #[serde(default)]
    reboot: bool,
}

/// One install to run.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    /// The name shown in events (relative to the root for a drop).
    name: String,
    dropped: bool,
    /// Fetched by the poll or a URL: removed once installed or refused.
    downloaded: bool,
    downgrade: bool,
    reboot: bool,
}

/// What an install task reports.
enum Done {
    Installed(Job, Verified, Slot),
    /// Verified only (plan-only backend).
    Planned(Job, Verified, Slot),
    Refused(Job, BundleError),
    Failed(Job, BusError),
    /// A poll of the HTTPS source ended (with a bundle to install, or not).
    Polled(poll::Polled),
    /// The bundle of `install {url}` was fetched (or not).
    Fetched(Result<Job, BusError>),
}

/// One run of the firmware service.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut drops = ctx
        .bus
        .subscribe(&[&Topic::Event(ServiceName::Watcher, EventKind::FirmwareDropped).to_string()])
        .await?;
    let others: Vec<ServiceName> = ServiceName::ALL
        .iter()
        .copied()
        .filter(|s| *s != ServiceName::Firmware)
        .collect();
    let mut inputs = Inputs::subscribe(&ctx, &others).await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut s = Service::new(ctx.clone(), done_tx);
    s.start().await;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    loop {
        let poll_at = s.next_poll;
        tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => s.changed(&inputs.latest).await,
                Some(Input::Command(verb, request)) => s.command(verb, request).await,
            },
            msg = drops.recv() => {
                let Some(msg) = msg else { break };
                match msg.json::<FileEvent>() {
                    Ok(ev) if !ev.removed => s.dropped(&ev.path).await,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "firmware: bad drop event ignored"),
                }
            }
            Some(done) = done_rx.recv() => s.finished(done).await,
            _ = health.tick(), if s.facts.trial.is_some() || s.facts.reboot_waits_for.is_some() => {
                s.gate(&inputs.latest).await;
                s.window_reboot().await;
            }
            () = sleep_until(poll_at), if poll_at.is_some() => s.start_poll().await,
        }
    }
    Ok(())
}

/// Sleep until `at` (never when `None`; the `select!` guard keeps that branch off).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Service {
    ctx: ServiceCtx,
    /// When the HTTPS source is polled next (none: no URL, or a poll is running).
    next_poll: Option<tokio::time::Instant>,
    /// SHA-256 of polled bundles refused by verification (not fetched again by this run).
    refused_sha: Vec<String>,
    /// SHA-256 of the polled bundle being installed.
    pending_sha: Option<String>,
    layout: Layout,
    config: Option<UpgraderConfig>,
    generation: u64,
    facts: Facts,
    last_error: Option<BusError>,
    done: mpsc::UnboundedSender<Done>,
    /// Drops waiting for the running install.
    queue: std::collections::VecDeque<Job>,
}

impl Service {
    fn new(ctx: ServiceCtx, done: mpsc::UnboundedSender<Done>) -> Service {
        let layout = Layout::new(&ctx.paths);
        Service {
            ctx,
            next_poll: None,
            refused_sha: Vec::new(),
            pending_sha: None,
            layout,
            config: None,
            generation: 0,
            facts: Facts::default(),
            last_error: None,
            done,
            queue: Default::default(),
        }
    }

    /// Read the layout; decide what this boot is (a trial, a rollback by GRUB, a normal boot).
    async fn start(&mut self) {
        self.refresh().await;
        let Some(booted) = self.facts.booted else {
            self.publish().await;
            return;
        };
        if let Some(record) = TrialRecord::load(&self.layout.record) {
            if record.slot == booted {
                let deadline = now_ms() + 1000 * u64::from(self.health_secs());
                self.facts.trial = Some(TrialFacts {
                    slot: booted,
                    deadline_ms: deadline,
                    waiting_for: Vec::new(),
                });
                let mut ev = Event::new("trial-boot");
                ev.slot = Some(booted);
                ev.firmware_version = Some(self.facts.version.clone());
                self.emit(EventKind::Trial, ev).await;
            } else {
                let mut ev = Event::new("rolled-back");
                ev.slot = Some(booted);
                ev.firmware_version = Some(record.version.clone());
                ev.error = Some(BusError::new(
                    ErrorCode::Timeout,
                    format!(
                        "slot {} (version {}) did not come up within GRUB's {} tries; back on slot {booted}",
                        record.slot,
                        record.version,
                        grubenv::TRIES
                    ),
                ));
                self.forget_trial();
                self.emit(EventKind::RolledBack, ev).await;
            }
        }
        self.publish().await;
    }

    /// Re-read the slots, grubenv, keys and version.
    async fn refresh(&mut self) {
        let layout = self.layout.clone();
        let facts = tokio::task::spawn_blocking(move || {
            let booted = layout.booted();
            let (trust, problems) = Trust::load(&layout.keys);
            let slots = [Slot::A, Slot::B]
                .into_iter()
                .map(|s| (s, slot::inspect(layout.device(s), s)))
                .collect();
            let (boot, grub_problem) = match GrubEnv::read(&layout.grubenv) {
                Ok(env) => (Some(env.boot()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let mut problems = problems;
            problems.extend(grub_problem);
            if booted.is_none() {
                problems.push(format!(
                    "{}: no iohub.slot=A|B (not booted from an A/B slot): nothing can be installed",
                    layout.cmdline.display()
                ));
            }
            (
                booted,
                layout.running_version(),
                slots,
                boot,
                trust,
                problems,
            )
        })
        .await;
        let Ok((booted, version, slots, boot, trust, problems)) = facts else {
            return;
        };
        self.facts.booted = booted;
        self.facts.version = version;
        self.facts.slots = slots;
        self.facts.boot = boot;
        self.facts.keys = trust.keys.iter().map(|k| k.id.clone()).collect();
        self.facts.revoked = trust.revoked.into_iter().collect();
        self.facts.problems = problems;
    }

    fn health_secs(&self) -> u32 {
        self.config.as_ref().map_or(300, |c| c.health_secs)
    }

    async fn changed(&mut self, latest: &Latest) {
        match config::desired(latest) {
            None => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "firmware: config refused; keeping the last good one");
                self.last_error = Some(e);
            }
            Some(Ok((generation, config))) => {
                let first = self.config.is_none();
                let enabled = config.enabled;
                self.generation = generation;
                if let Some(t) = &mut self.facts.trial {
                    // The deadline counts from the start of the boot's service run.
                    if first {
                        t.deadline_ms = now_ms() + 1000 * u64::from(config.health_secs);
                    }
                }
                let url_changed = self
                    .config
                    .as_ref()
                    .map(|c| (&c.url, &c.ca, &c.cert, &c.key, c.poll_secs))
                    != Some((
                        &config.url,
                        &config.ca,
                        &config.cert,
                        &config.key,
                        config.poll_secs,
                    ));
                self.config = Some(config);
                if first && enabled {
                    self.scan().await;
                }
                if url_changed {
                    self.schedule_poll(true);
                }
            }
        }
        if self.facts.trial.is_some() {
            self.gate(latest).await;
        }
        self.publish().await;
    }

    /// Queue the bundles already in the drop directory.
    async fn scan(&mut self) {
        let dir = self.layout.drops.clone();
        let names = tokio::task::spawn_blocking(move || bundles_in(&dir))
            .await
            .unwrap_or_default();
        for name in names {
            self.dropped(&format!("firmware/{name}")).await;
        }
    }

    async fn dropped(&mut self, rel: &str) {
        let Some(name) = rel.strip_prefix("firmware/") else {
            return;
        };
        if matches!(name, "firmware-pre" | "firmware-post") {
            let e = BusError::new(
                ErrorCode::Forbidden,
                format!("{rel}: firmware hooks are not run (config is data, never executed); left in place"),
            );
            tracing::warn!("{}", e.message);
            self.last_error = Some(e);
            self.publish().await;
            return;
        }
        if !self.config.as_ref().is_some_and(|c| c.enabled) || !is_bundle(name) {
            return;
        }
        let job = Job {
            path: self.ctx.paths.root(rel),
            name: rel.to_string(),
            dropped: true,
            downloaded: false,
            downgrade: false,
            reboot: self.config.as_ref().is_some_and(|c| c.reboot),
        };
        if self.facts.busy.as_deref() == Some(&format!("installing {rel}"))
            || self.queue.iter().any(|j| j.name == job.name)
        {
            return;
        }
        self.submit(job).await;
    }

    async fn submit(&mut self, job: Job) {
        // During a trial boot the other slot is the last good one: nothing is written to it
        // until the trial is committed (a drop waits; a command is refused in `cmd_install`).
        if self.facts.busy.is_some() || self.facts.trial.is_some() {
            self.queue.push_back(job);
            return;
        }
        let Some(booted) = self.facts.booted else {
            let e = BusError::new(ErrorCode::Unavailable, self.facts.problems.join("; "));
            let mut ev = Event::new("refused");
            ev.bundle = Some(job.name.clone());
            ev.error = Some(e.clone());
            self.last_error = Some(e);
            self.emit(EventKind::Refused, ev).await;
            self.publish().await;
            return;
        };
        self.facts.busy = Some(format!("installing {}", job.name));
        let target = booted.other();
        let mut ev = Event::new("installing");
        ev.bundle = Some(job.name.clone());
        ev.slot = Some(target);
        self.emit(EventKind::Progress, ev).await;
        let ctx = self.ctx.clone();
        let layout = self.layout.clone();
        let version = self.facts.version.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let result = install(&ctx, &layout, &version, job, target).await;
            let _ = done.send(result);
        });
        self.publish().await;
    }

    async fn finished(&mut self, done: Done) {
        self.facts.busy = None;
        let mut reboot = false;
        match done {
            Done::Polled(polled) => return self.polled(polled).await,
            Done::Fetched(Ok(job)) => return self.submit(job).await,
            Done::Fetched(Err(e)) => {
                tracing::warn!(error = %e.message, "firmware: bundle not fetched");
                let mut ev = Event::new("failed");
                ev.error = Some(e.clone());
                self.last_error = Some(e);
                self.emit(EventKind::Refused, ev).await;
            }
            Done::Installed(job, v, slot) => {
                self.last_error = None;
                self.pending_sha = None;
                if job.dropped || job.downloaded {
                    if let Err(e) = sys::fs::remove_file(&job.path) {
                        tracing::warn!(error = %e, "firmware: installed drop not removed");
                    }
                }
                let mut ev = Event::new("installed");
                ev.bundle = Some(job.name.clone());
                ev.slot = Some(slot);
                ev.firmware_version = Some(v.manifest.version.clone());
                self.emit(EventKind::Installed, ev).await;
                match self.arm(slot, &v.manifest.version).await {
                    Ok(()) => reboot = job.reboot,
                    Err(e) => self.last_error = Some(e),
                }
                let window = self.config.as_ref().and_then(|c| c.window);
                if reboot && !config::reboot_allowed(window, config::local_minute(now_ms())) {
                    // The reboot waits for the maintenance window (`window_reboot`).
                    reboot = false;
                    self.facts.reboot_waits_for = window.map(|w| w.to_string());
                }
            }
            Done::Planned(job, v, slot) => {
                let plan = serde_json::json!({
                    "would_install": job.name, "slot": slot, "version": v.manifest.version,
                    "then": "arm one trial boot in grubenv",
                });
                if let Err(e) = self.ctx.publish_plan(&plan).await {
                    tracing::warn!(error = %e, "firmware: plan not published");
                }
            }
            Done::Refused(job, err) => {
                let e = err.to_bus();
                tracing::warn!(bundle = %job.name, error = %e.message, "firmware: bundle refused");
                if job.dropped && self.ctx.backend == Backend::Live {
                    self.move_aside(&job, &err).await;
                }
                if job.downloaded {
                    self.forget_download(&job).await;
                }
                let mut ev = Event::new("refused");
                ev.bundle = Some(job.name.clone());
                ev.error = Some(e.clone());
                self.last_error = Some(e);
                self.emit(EventKind::Refused, ev).await;
            }
            Done::Failed(job, e) => {
                tracing::error!(bundle = %job.name, error = %e.message, "firmware: install failed; the slot stays invalid");
                let mut ev = Event::new("failed");
                ev.bundle = Some(job.name.clone());
                ev.error = Some(e.clone());
                self.last_error = Some(e);
                self.emit(EventKind::Refused, ev).await;
            }
        }
        self.refresh().await;
        self.publish().await;
        if reboot {
            self.reboot().await;
        } else if let Some(next) = self.queue.pop_front() {
            self.submit(next).await;
        } else {
            self.schedule_poll(false);
        }
    }

    /// Plan the next poll: at once (`soon`: start, a changed source) or after the poll interval.
    fn schedule_poll(&mut self, soon: bool) {
        let Some(c) = self.config.as_ref().filter(|c| c.url.is_some()) else {
            self.next_poll = None;
            return;
        };
        let wait = if soon { 0 } else { u64::from(c.poll_secs) };
        self.next_poll = Some(tokio::time::Instant::now() + Duration::from_secs(wait));
    }

    /// Poll the HTTPS source in a task (module `poll`); an operation in progress or a trial
    /// boot puts it off by one interval.
    async fn start_poll(&mut self) {
        self.next_poll = None;
        let Some(config) = self.config.clone().filter(|c| c.url.is_some()) else {
            return;
        };
        if self.facts.busy.is_some() || self.facts.trial.is_some() || self.facts.booted.is_none() {
            self.schedule_poll(false);
            return;
        }
        let other = self.facts.booted.map(Slot::other);
        let other_version = other
            .and_then(|s| self.facts.slots.get(&s))
            .filter(|i| i.valid)
            .and_then(|i| i.version.clone());
        self.facts.busy = Some(format!("polling {}", config.url.as_deref().unwrap_or("")));
        self.publish().await;
        let (ctx, layout, running) = (
            self.ctx.clone(),
            self.layout.clone(),
            self.facts.version.clone(),
        );
        let (refused, done) = (self.refused_sha.clone(), self.done.clone());
        tokio::spawn(async move {
            let reporter = ctx.clone();
            let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64, u64)>();
            let report = tokio::spawn(async move {
                while let Some((file, done, total)) = rx.recv().await {
                    let mut ev = Event::new("downloading");
                    ev.bundle = Some(file);
                    ev.bytes_done = Some(done);
                    ev.bytes_total = Some(total);
                    let _ = reporter.event(EventKind::Progress, &ev).await;
                }
            });
            let polled = poll::poll(
                &ctx.paths,
                &layout,
                &config,
                &running,
                other_version,
                &refused,
                ctx.backend == Backend::PlanOnly,
                move |b, n| {
                    let _ = tx.send((b.file.clone(), n, b.size));
                },
            )
            .await;
            let _ = report.await;
            let _ = done.send(Done::Polled(polled));
        });
    }

    async fn polled(&mut self, polled: poll::Polled) {
        self.facts.busy = None;
        let facts = polled.facts;
        match &facts.error {
            Some(e) => {
                tracing::warn!(url = %facts.url, error = %e.message, "firmware: poll of the HTTPS source failed");
                self.last_error = Some(e.clone());
            }
            None => {
                tracing::info!(url = %facts.url, result = %facts.result, newest = ?facts.newest, rollout_bp = ?facts.rollout_bp, bucket = facts.bucket, "firmware: polled the HTTPS source");
                if self.last_error.as_ref().is_some_and(|e| {
                    e.message.starts_with("release manifest") || e.code == ErrorCode::Unavailable
                }) {
                    self.last_error = None;
                }
            }
        }
        self.facts.upgrader = Some(facts);
        self.publish().await;
        match polled.bundle {
            Some((path, b)) => {
                let reboot = self.config.as_ref().is_some_and(|c| c.reboot);
                self.pending_sha = Some(b.sha256.clone());
                self.submit(Job {
                    name: path.display().to_string(),
                    path,
                    dropped: false,
                    downloaded: true,
                    downgrade: false,
                    reboot,
                })
                .await;
            }
            None => match self.queue.pop_front() {
                Some(next) => self.submit(next).await,
                None => self.schedule_poll(false),
            },
        }
    }

    /// A downloaded bundle that was refused: removed, and its hash remembered so that the
    /// poll does not fetch it again.
    async fn forget_download(&mut self, job: &Job) {
        if let Some(sha) = self.pending_sha.take() {
            self.refused_sha.push(sha);
        }
        let path = job.path.clone();
        let _ = tokio::task::spawn_blocking(move || sys::fs::remove_file(&path)).await;
    }

    /// An armed trial waiting for the maintenance window reboots once it is open.
    async fn window_reboot(&mut self) {
        if self.facts.reboot_waits_for.is_none() {
            return;
        }
        let window = self.config.as_ref().and_then(|c| c.window);
        if config::reboot_allowed(window, config::local_minute(now_ms())) {
            self.facts.reboot_waits_for = None;
            self.publish().await;
            self.reboot().await;
        }
    }

    async fn move_aside(&mut self, job: &Job, err: &BundleError) {
        let (path, dir) = (job.path.clone(), self.layout.refused.clone());
        let reason = format!("{}: {err}\n", err.reason());
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let name = path
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            sys::fs::ensure_dir(&dir)?;
            let mut reason_name = name.clone();
            reason_name.push(".reason");
            sys::fs::atomic_write(&dir.join(reason_name), reason.as_bytes(), 0o644)?;
            sys::fs::rename(&path, &dir.join(name))
        })
        .await;
        if let Ok(Err(e)) | Err(e) = moved.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "firmware: refused bundle not moved aside");
        }
    }

    /// Arm one trial boot of `slot` and record it.
    async fn arm(&mut self, slot: Slot, version: &str) -> Result<(), BusError> {
        let from = self.facts.booted.unwrap_or(slot.other());
        let record = TrialRecord {
            slot,
            version: version.to_string(),
            from,
        };
        self.write_boot(move |b| b.arm(slot), Some(record)).await?;
        let mut ev = Event::new("trial");
        ev.slot = Some(slot);
        ev.firmware_version = Some(version.to_string());
        self.emit(EventKind::Trial, ev).await;
        Ok(())
    }

    /// Change GRUB's A/B variables (and the trial record: saved before grubenv is armed, so a
    /// power cut in between leaves a record of a trial that was never armed, which reads as a
    /// rollback at the next boot, never the reverse).
    async fn write_boot(
        &mut self,
        change: impl FnOnce(Boot) -> Boot + Send + 'static,
        record: Option<TrialRecord>,
    ) -> Result<(), BusError> {
        if self.ctx.backend == Backend::PlanOnly {
            return Err(BusError::new(
                ErrorCode::Unavailable,
                "plan-only: grubenv is not changed (iohubd --apply changes it)",
            ));
        }
        let layout = self.layout.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Boot, String> {
            let mut env = GrubEnv::read(&layout.grubenv).map_err(|e| e.to_string())?;
            let boot = change(env.boot());
            match &record {
                Some(r) => r.save(&layout.record).map_err(|e| e.to_string())?,
                None => TrialRecord::clear(&layout.record).map_err(|e| e.to_string())?,
            }
            env.set_boot(&boot).map_err(|e| e.to_string())?;
            env.write(&layout.grubenv).map_err(|e| e.to_string())?;
            Ok(boot)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match result {
            Ok(boot) => {
                self.facts.boot = Some(boot);
                Ok(())
            }
            Err(e) => Err(BusError::new(ErrorCode::Io, format!("grubenv: {e}"))),
        }
    }

    fn forget_trial(&mut self) {
        if let Err(e) = TrialRecord::clear(&self.layout.record) {
            tracing::warn!(error = %e, "firmware: trial record not removed");
        }
    }

    /// The health gate of a trial boot (module docs).
    async fn gate(&mut self, latest: &Latest) {
        let Some(trial) = self.facts.trial.clone() else {
            return;
        };
        let mut waiting = unhealthy(latest);
        let require_bridge = self.config.as_ref().is_some_and(|c| c.require_bridge);
        if require_bridge
            && !latest
                .state(ServiceName::Bridge)
                .is_some_and(|st| config::bridge_connected(&st.facts))
        {
            waiting.push("bridge (its remote is not connected)".into());
        }
        if waiting.is_empty() {
            self.commit(trial.slot).await;
        } else if now_ms() >= trial.deadline_ms {
            let why = format!(
                "not healthy within {} s: {}",
                self.health_secs(),
                waiting.join(", ")
            );
            self.roll_back(&why).await;
        } else if waiting != trial.waiting_for {
            if let Some(t) = &mut self.facts.trial {
                t.waiting_for = waiting;
            }
            self.publish().await;
        }
    }

    async fn commit(&mut self, slot: Slot) {
        match self.write_boot(move |_| Boot::settle(slot), None).await {
            Ok(()) => {
                self.facts.trial = None;
                let mut ev = Event::new("committed");
                ev.slot = Some(slot);
                ev.firmware_version = Some(self.facts.version.clone());
                self.last_error = None;
                self.emit(EventKind::Committed, ev).await;
            }
            Err(e) => self.last_error = Some(e),
        }
        self.refresh().await;
        self.publish().await;
        if self.facts.trial.is_none() {
            if let Some(next) = self.queue.pop_front() {
                self.submit(next).await;
            }
        }
    }

    /// Leave a trial boot: the last good slot becomes the only choice, then reboot into it.
    async fn roll_back(&mut self, why: &str) {
        let Some(trial) = self.facts.trial.take() else {
            return;
        };
        let good = trial.slot.other();
        let e = BusError::new(
            ErrorCode::Timeout,
            format!("slot {}: {why}; rebooting into slot {good}", trial.slot),
        );
        match self.write_boot(move |_| Boot::settle(good), None).await {
            Ok(()) => {
                let mut ev = Event::new("rolled-back");
                ev.slot = Some(good);
                ev.firmware_version = Some(self.facts.version.clone());
                ev.error = Some(e.clone());
                self.last_error = Some(e);
                self.emit(EventKind::RolledBack, ev).await;
                self.publish().await;
                self.reboot().await;
            }
            Err(e) => {
                self.last_error = Some(e);
                self.publish().await;
            }
        }
    }

    async fn reboot(&mut self) {
        if self.ctx.backend == Backend::PlanOnly {
            return;
        }
        let request =
            serde_json::json!({"id": format!("firmware-{}", now_ms()), "body": {"delay_secs": 0}});
        let topic = Topic::Cmd(ServiceName::Iohubd, Verb::Reboot);
        if let Err(e) = self.ctx.bus.publish_json(&topic, &request).await {
            tracing::error!(error = %e, "firmware: reboot not requested");
        }
    }

    async fn command(&mut self, verb: Verb, request: Request) {
        let result = match verb {
            Verb::Status | Verb::Get => {
                self.refresh().await;
                Ok(serde_json::to_value(&self.facts).unwrap_or_default())
            }
            Verb::Install => self.cmd_install(&request).await,
            Verb::Commit => match self.facts.trial.clone() {
                Some(t) => {
                    self.commit(t.slot).await;
                    Ok(serde_json::json!({"committed": t.slot}))
                }
                None => Err(BusError::new(ErrorCode::Unavailable, "no trial boot in progress: nothing to commit")),
            },
            Verb::Rollback => self.cmd_rollback(&request).await,
            Verb::Set => self.cmd_set_default(&request).await,
            Verb::Reboot => self.cmd_reboot().await,
            other => Err(BusError::new(
                ErrorCode::BadTopic,
                format!("the firmware service has no `{other}` command (install, status, commit, rollback, set, reboot)"),
            )),
        };
        match result {
            Ok(v) => reply_ok(&self.ctx, &request, v).await,
            Err(e) => reply_err(&self.ctx, &request, vec![e]).await,
        }
    }

    async fn cmd_install(&mut self, request: &Request) -> Result<serde_json::Value, BusError> {
        let body: InstallRequest = serde_json::from_value(request.body.clone())
            .map_err(|e| BusError::new(ErrorCode::BadPayload, format!("install body: {e}")))?;
        let path = match (&body.path, &body.url) {
            (Some(p), None) => self.ctx.paths.root(p),
            (None, Some(u)) => {
                self.idle()?;
                self.not_a_trial()?;
                return self.fetch_url(u.clone(), &body).await;
            }
            _ => {
                return Err(BusError::new(
                    ErrorCode::Missing,
                    "give exactly one of `path` and `url`",
                )
                .with_field("path"))
            }
        };
        self.idle()?;
        self.not_a_trial()?;
        let name = path.display().to_string();
        self.submit(Job {
            path,
            name: name.clone(),
            dropped: false,
            downloaded: false,
            downgrade: body.downgrade,
            reboot: body.reboot,
        })
        .await;
        Ok(serde_json::json!({"installing": name}))
    }

    fn not_a_trial(&self) -> Result<(), BusError> {
        match &self.facts.trial {
            Some(t) => Err(BusError::new(
                ErrorCode::Unavailable,
                format!(
                    "this boot is a trial of slot {}: its other slot is the last good one; commit or roll back first",
                    t.slot
                ),
            )),
            None => Ok(()),
        }
    }

    /// `install {url}`: fetch it in a task with the source's TLS settings, then install it.
    async fn fetch_url(
        &mut self,
        url: String,
        body: &InstallRequest,
    ) -> Result<serde_json::Value, BusError> {
        let config = self.config.clone().unwrap_or_default();
        self.facts.busy = Some(format!("downloading {url}"));
        self.publish().await;
        let (ctx, done) = (self.ctx.clone(), self.done.clone());
        let (downgrade, reboot) = (body.downgrade, body.reboot);
        let u = url.clone();
        tokio::spawn(async move {
            let reporter = ctx.clone();
            let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
            let name = u.clone();
            let report = tokio::spawn(async move {
                while let Some(n) = rx.recv().await {
                    let mut ev = Event::new("downloading");
                    ev.bundle = Some(name.clone());
                    ev.bytes_done = Some(n);
                    let _ = reporter.event(EventKind::Progress, &ev).await;
                }
            });
            let fetched = poll::download_url(&ctx.paths, &config, &u, move |n| {
                let _ = tx.send(n);
            })
            .await
            .map(|path| Job {
                path,
                name: u.clone(),
                dropped: false,
                downloaded: true,
                downgrade,
                reboot,
            })
            .map_err(|e| {
                let message = format!("{u}: {}", e.message);
                BusError { message, ..e }
            });
            let _ = report.await;
            let _ = done.send(Done::Fetched(fetched));
        });
        Ok(serde_json::json!({"downloading": url}))
    }

    async fn cmd_rollback(&mut self, request: &Request) -> Result<serde_json::Value, BusError> {
        let body: SlotRequest = serde_json::from_value(request.body.clone()).unwrap_or_default();
        self.idle()?;
        if self.facts.trial.is_some() {
            self.roll_back("rolled back by command").await;
            return Ok(serde_json::json!({"rolled_back": true}));
        }
        let booted = self.booted()?;
        let other = booted.other();
        let info = self.facts.slots.get(&other).cloned().unwrap_or_default();
        if !info.valid {
            return Err(BusError::new(
                ErrorCode::Unavailable,
                format!(
                    "slot {other} holds no valid firmware ({})",
                    info.problem.unwrap_or_default()
                ),
            ));
        }
        let version = info.version.unwrap_or_default();
        self.arm(other, &version).await?;
        self.publish().await;
        if body.reboot {
            self.reboot().await;
        }
        Ok(serde_json::json!({"trial": other, "version": version, "rebooting": body.reboot}))
    }

    /// `iohub-set-boot-default <1|2>`: make a valid slot the default (trial cleared).
    async fn cmd_set_default(&mut self, request: &Request) -> Result<serde_json::Value, BusError> {
        let body: SlotRequest = serde_json::from_value(request.body.clone())
            .map_err(|e| BusError::new(ErrorCode::BadPayload, format!("set body: {e}")))?;
        self.idle()?;
        let text = body.slot.unwrap_or_default();
        let slot = Slot::parse(&text)
            .or_else(|| Slot::from_number(&text))
            .ok_or_else(|| {
                BusError::new(
                    ErrorCode::InvalidValue,
                    format!("slot {text:?}: 1, 2, A or B"),
                )
                .with_field("slot")
            })?;
        let valid =
            self.facts.slots.get(&slot).is_some_and(|i| i.valid) || Some(slot) == self.facts.booted;
        if !valid {
            return Err(BusError::new(
                ErrorCode::Unavailable,
                format!("slot {slot} holds no valid firmware"),
            ));
        }
        self.facts.trial = None;
        self.write_boot(move |_| Boot::settle(slot), None).await?;
        self.publish().await;
        Ok(serde_json::json!({"default": slot}))
    }

    async fn cmd_reboot(&mut self) -> Result<serde_json::Value, BusError> {
        self.idle()?;
        self.reboot().await;
        Ok(serde_json::json!({"rebooting": self.ctx.backend == Backend::Live}))
    }

    fn idle(&self) -> Result<(), BusError> {
        match &self.facts.busy {
            Some(b) => Err(BusError::new(
                ErrorCode::Unavailable,
                format!("{b}: try again once it is done"),
            )),
            None => Ok(()),
        }
    }

    fn booted(&self) -> Result<Slot, BusError> {
        self.facts
            .booted
            .ok_or_else(|| BusError::new(ErrorCode::Unavailable, self.facts.problems.join("; ")))
    }

    /// Publish an event and its console line.
    async fn emit(&mut self, kind: EventKind, ev: Event) {
        let line = ev.console_line();
        tracing::info!("{line}");
        let console = self.layout.console.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            if let Ok(mut f) = sys::fs::open_append_log(&console, 0o600) {
                let _ = writeln!(f, "\n{line}");
            }
        })
        .await;
        if let Err(e) = self.ctx.event(kind, &ev).await {
            tracing::warn!(error = %e, "firmware: event not published");
        }
        if kind != EventKind::Progress {
            self.facts.last = Some(ev);
        }
    }

    async fn publish(&mut self) {
        let phase = match (&self.config, self.facts.booted) {
            (None, _) => Phase::Applying,
            (Some(_), None) => Phase::Disabled,
            (Some(_), Some(_)) if self.facts.busy.is_some() || self.facts.trial.is_some() => {
                Phase::Applying
            }
            (Some(_), Some(_)) if self.last_error.is_some() => Phase::Degraded,
            _ => Phase::Applied,
        };
        let mut state = ServiceState::new(phase, self.generation, now_ms());
        state.applied = self.config.as_ref().map(|_| self.generation);
        state.last_error = self.last_error.clone();
        state.facts = serde_json::to_value(&self.facts).unwrap_or_default();
        if let Err(e) = self.ctx.publish_state(&state).await {
            tracing::warn!(error = %e, "firmware: state not published");
        }
    }
}

/// The services iohubd runs (its own state lists them) that are neither applied nor disabled;
/// the firmware service itself is not counted. Before iohubd's state is seen, nothing is known:
/// every service is waited for.
fn unhealthy(latest: &Latest) -> Vec<String> {
    let Some(list) = latest
        .state(ServiceName::Iohubd)
        .and_then(|s| s.facts.get("services").cloned())
        .and_then(|v| serde_json::from_value::<Vec<ServiceName>>(v).ok())
    else {
        return vec!["iohubd".into()];
    };
    list.into_iter()
        .filter(|s| *s != ServiceName::Firmware)
        .filter(|s| {
            !latest
                .state(*s)
                .is_some_and(|st| matches!(st.phase, Phase::Applied | Phase::Disabled))
        })
        .map(|s| s.to_string())
        .collect()
}

fn is_bundle(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".tgz") || name.ends_with(".tar.gz"))
}

/// Bundles in the drop directory, in name order.
fn bundles_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_bundle(n))
        .collect();
    names.sort();
    names
}

/// Verify, then (live) write `job` into `target`, publishing progress.
async fn install(ctx: &ServiceCtx, layout: &Layout, running: &str, job: Job, target: Slot) -> Done {
    let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<(&'static str, u64)>();
    let total = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
    let reporter = {
        let ctx = ctx.clone();
        let name = job.name.clone();
        tokio::spawn(async move {
            while let Some((phase, done)) = progress_rx.recv().await {
                let mut ev = Event::new(phase);
                ev.bundle = Some(name.clone());
                ev.slot = Some(target);
                ev.bytes_done = Some(done);
                ev.bytes_total = Some(total);
                let _ = ctx.event(EventKind::Progress, &ev).await;
            }
        })
    };
    let result = verify_and_write(ctx.backend, layout, running, &job, target, progress_tx).await;
    let _ = reporter.await;
    match result {
        Ok(v) if ctx.backend == Backend::PlanOnly => Done::Planned(job, v, target),
        Ok(v) => Done::Installed(job, v, target),
        Err(slot::InstallError::Bundle(e)) => Done::Refused(job, e),
        Err(slot::InstallError::Slot(e)) => Done::Failed(job, BusError::new(ErrorCode::Io, e)),
    }
}

async fn verify_and_write(
    backend: Backend,
    layout: &Layout,
    running: &str,
    job: &Job,
    target: Slot,
    progress: mpsc::UnboundedSender<(&'static str, u64)>,
) -> Result<Verified, slot::InstallError> {
    let (keys, path, downgrade) = (layout.keys.clone(), job.path.clone(), job.downgrade);
    let running: bundle::Version = running.parse().unwrap_or(bundle::Version([0; 4]));
    let p = progress.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let (trust, _) = Trust::load(&keys);
        let policy = Policy {
            running,
            arch: bundle::this_arch().to_string(),
            allow_downgrade: downgrade,
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| BundleError::Io(format!("{}: {e}", path.display())))?;
        let _ = p.send(("verifying", 0));
        bundle::verify(
            std::io::BufReader::with_capacity(1 << 20, file),
            &trust,
            &policy,
            Box::new(move |n| {
                let _ = p.send(("verifying", n));
            }),
        )
    })
    .await
    .map_err(|e| slot::InstallError::Slot(format!("verify task: {e}")))??;
    if backend == Backend::PlanOnly {
        return Ok(verified);
    }
    let target = slot::Target {
        slot: target,
        device: layout.device(target).to_path_buf(),
        staging: layout.staging.clone(),
    };
    slot::install(&job.path, &verified, &target, move |step, n| {
        let phase = match step {
            slot::Step::Extracting => "installing",
            slot::Step::Writing => "writing",
            slot::Step::ReadingBack => "reading-back",
        };
        let _ = progress.send((phase, n));
    })
    .await?;
    Ok(verified)
}

#[cfg(test)]
mod tests;
