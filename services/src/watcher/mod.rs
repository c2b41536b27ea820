//! The watcher service: inotify on the data root (`/iohub`); complete file drops and config
//! edits go out as events on `iohub/event/watcher/<kind>` with a [`FileEvent`] payload whose
//! `path` is relative to the root and `/`-separated.
//!
//! | path | event |
//! |---|---|
//! | `deploy/*.zip` | `deploy_dropped` |
//! | `firmware/*.tgz` (`firmware.tgz`), `*.tar.gz`, `*.swu`, `firmware-pre`, `firmware-post` | `firmware_dropped` |
//! | `runtime/iohub-registry/*.tar.gz` | `registry_archive_dropped` |
//! | `envvars`, `envvars.d/*`, `sysvars`, `forwards-tcp`, `forwards-udp`, `routes` | `config_file_changed`, also on removal (`removed: true`) |
//! | anything under `live/` | `live_changed` (per path), also on removal |
//!
//! # Rules
//!
//! 1. **Completeness: a file still being written never fires.**
//!    - A path becomes a candidate on `IN_CLOSE_WRITE` (notify's
//!      `AccessKind::Close(AccessMode::Write)`: a writer closed it), on `IN_MOVED_TO`
//!      (`ModifyKind::Name(To)`: renamed into place by an editor save, `rsync`, or `mv` on the
//!      same file system), or on `IN_CREATE` of a file that already has content and sees no write
//!      (a hard link, `O_TMPFILE` + `linkat`). A created file that is still empty waits for its
//!      close.
//!    - `IN_MODIFY` means a writer has the file open: nothing fires until its `IN_CLOSE_WRITE`. A
//!      writer that keeps the file open and writes slowly produces no event until it closes.
//!    - A complete drop in `deploy/`, `firmware/` or `runtime/iohub-registry/`, and a config
//!      file at the top of the root renamed into place (an editor save, `sed -i`, our own atomic
//!      writes), is `stat`ed twice, 3 ms apart, and fires at once, unless the same path fired
//!      within the quiet period ([`WatcherConfig::quiet`], 50 ms): then it waits for it, so a
//!      burst of re-writes costs at most two events, the first at once and the latest after
//!      the burst. A config file written in place waits the quiet period (a script writing it
//!      twice in a row truncates it again right after the first close, and an event for that
//!      empty version would apply it), and so does every file in `envvars.d/` and `live/`,
//!      where any name counts, so that a temp file that an editor writes, closes and renames
//!      away within it is never reported. During a quiet period every event on the path
//!      restarts it; at its end the file is `stat`ed, and if its size, mtime or inode changed
//!      since the period started, the period starts again. Only then does it fire, with the
//!      size it has.
//!    - Names that are not the real file are ignored: `.*` (partial downloads, `.#locks`, our own
//!      atomic-write temps `.NAME.tmp-*`), `*~`, `*.swp`, `*.swx`, `*.part`, `*.tmp`. Under
//!      `live/` dotfiles are real files (`live/root/.profile`), so only the editor patterns are
//!      ignored there.
//!    - Files whose writes we could not watch (found by the start scan, by a rescan after an
//!      overflow, or in a directory that appeared before its watch) fire once unchanged for
//!      [`WatcherConfig::settle_unobserved`] (500 ms), unless inotify then shows a write, in which
//!      case they wait for the close like any other. Known limit: a writer that was already
//!      running at that moment and pauses longer than that without writing is reported early,
//!      and again when it closes.
//! 2. **One event per change.** Events are coalesced per path until it fires: an editor save
//!    (temp written, renamed over the file; or vim's rename-away, write, delete) is one event,
//!    repeated writes inside the quiet period are one event (after the
//!    first write of a burst, which fires at once where names are specific), a removal followed by a re-creation
//!    inside it is one change. A version of a file (size, mtime, inode) is reported at most
//!    once, so an open-for-write and close without a write reports nothing, and events that
//!    arrive after a rescan already reported their file add nothing.
//! 3. **Bursts lose nothing.** The watcher remembers what it reported (path -> size, mtime,
//!    inode; config and live files are remembered from the start scan). When events are lost,
//!    because the kernel queue overflowed (notify's `Flag::Rescan`) or our own queue was full
//!    ([`WatcherConfig::queue_capacity`]), or notify reports an error, every watched directory
//!    is rescanned: a file whose fingerprint differs from what was reported is handled as a new
//!    candidate, a remembered file that is gone is checked for removal, and every path that was
//!    waiting for a close settles on stability alone (its close may be among the lost events).
//!    The rescan starts only once every event queued before the loss has been handled, so no
//!    stale write can make a path wait again for a close that was dropped. A rescan never
//!    reports a file twice. Nothing is raised at the kernel level. A periodic rescan
//!    ([`WatcherConfig::rescan_every`]) is the safety net for what inotify cannot say.
//! 4. **At start**, files already in `deploy/`, `firmware/` and `runtime/iohub-registry/` are
//!    reported with `at_start: true` (they were dropped while iohubd was down; a file touched
//!    after the watch started is reported as a normal arrival). Config and live files are not:
//!    the config and lifecycle services load them at start anyway.
//! 5. **Directories come and go.** The root is watched one level deep, `runtime/`, `deploy/`,
//!    `firmware/`, `envvars.d/` and `runtime/iohub-registry/` one level deep, `live/` as a tree.
//!    Not the whole root recursively: `/iohub/docker` holds Docker's data root and app volumes.
//!    When one of those directories (or a directory under `live/`) appears, its watch is added
//!    and then it is listed, so files created before the watch existed are not missed; when it
//!    goes, the files remembered below it are checked for removal. Removing and recreating a
//!    directory keeps working. The root itself going away fails the service.
//! 6. **No blocking on a runtime worker.** notify's thread hands events to this task through a
//!    bounded queue with `try_send` (it never blocks, so a watch added while the queue is full
//!    cannot deadlock); a full queue counts as an overflow. Watches are added, directories
//!    listed and large batches `stat`ed on `spawn_blocking`; a handful of `stat`s runs inline.
//! 7. **State.** `iohub/state/watcher` is `applied` once the watches are in place, with facts
//!    `{watched, events, rescans, pending}` re-published when they change, at most every
//!    [`WatcherConfig::facts_every`] (`pending`: paths waiting to complete plus running scans;
//!    `0` means everything seen so far has been reported);
//!    `degraded` with the error while a watch could not be added; `failed` with a `not_found`
//!    error when the root is missing (the supervisor restarts the service with backoff).

mod classify;
mod config;
mod scan;
mod tracker;

pub use config::WatcherConfig;

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bus_schema::events::FileEvent;
use bus_schema::{BusError, ErrorCode, Phase, ServiceState};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind as NotifyKind, RecommendedWatcher, Watcher as _};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::ctx::{now_ms, ServiceCtx};
use classify::{classify, is_dir_of_interest};
use scan::{Job, Report};
use tracker::{Fire, Seen, Stat, Tracker};

/// Events taken from the queue per wake-up, so that expiries are not starved by a storm.
const BATCH: usize = 1024;
/// Up to this many `stat`s run inline; more go to `spawn_blocking`.
const INLINE_STATS: usize = 64;

/// Run the watcher with the default tunables until `ctx.shutdown`.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    run_with(ctx, WatcherConfig::default()).await
}

/// Run the watcher until `ctx.shutdown`. Returns an error (after publishing `failed`) when the
/// root is missing or goes away, or when the bus is gone.
pub async fn run_with(ctx: ServiceCtx, cfg: WatcherConfig) -> Result<(), BusError> {
    let since_ms = now_ms();
    let root = ctx.paths.root.clone();
    match tokio::fs::metadata(&root).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return fail(&ctx, since_ms, root_error(&root, "is not a directory")).await,
        Err(e) => return fail(&ctx, since_ms, root_error(&root, &e.to_string())).await,
    }

    let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
    let lost = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let forward = Forward {
        tx,
        lost: lost.clone(),
        wake: wake.clone(),
    };
    let watcher = match RecommendedWatcher::new(
        forward,
        notify::Config::default().with_follow_symlinks(false),
    ) {
        Ok(w) => Arc::new(Mutex::new(w)),
        Err(e) => {
            let err = BusError::new(ErrorCode::Io, format!("watcher: inotify: {e}"));
            return fail(&ctx, since_ms, err).await;
        }
    };

    let mut service = Service {
        tracker: Tracker::new(cfg.quiet, cfg.settle_unobserved),
        root: root.clone(),
        rx,
        wake,
        lost,
        watcher,
        jobs: JoinSet::new(),
        full_running: false,
        full_queued: None,
        rescan_after: None,
        events: 0,
        rescans: 0,
        published: None,
        degraded: None,
        phase: Phase::Applied,
        since_ms,
        cfg,
        ctx,
    };
    let start = Job::Full {
        start: true,
        events_lost: false,
    };
    let (w, r) = (service.watcher.clone(), root.clone());
    let report = tokio::task::spawn_blocking(move || scan::run(&r, &w, start)).await;
    let result = match report {
        Ok(report) => service.merge(report).await,
        Err(e) => Err(join_error(e)),
    };
    if let Err(err) = result {
        return fail(&service.ctx, service.since_ms, err).await;
    }
    service.update_phase();
    service.publish_state().await?;
    tracing::info!(root = %root.display(), "watcher: watching");

    match service.run().await {
        Ok(()) => Ok(()),
        Err(err) => fail(&service.ctx, service.since_ms, err).await,
    }
}

fn root_error(root: &Path, why: &str) -> BusError {
    BusError::new(
        ErrorCode::NotFound,
        format!("watcher root {}: {why}", root.display()),
    )
    .with_field("root")
}

fn join_error(e: JoinError) -> BusError {
    BusError::new(ErrorCode::Internal, format!("watcher: blocking task: {e}"))
}

/// Publish `failed` with the error (best effort: the bus may be the thing that failed).
async fn fail(ctx: &ServiceCtx, since_ms: u64, err: BusError) -> Result<(), BusError> {
    tracing::error!(error = %err, "watcher failed");
    let mut state = ServiceState::new(Phase::Failed, 0, since_ms.max(now_ms()));
    state.last_error = Some(err.clone());
    if let Err(e) = ctx.publish_state(&state).await {
        tracing::warn!(error = %e, "watcher: could not publish its failed state");
    }
    Err(err)
}

/// notify's event handler: runs on notify's own thread, never blocks.
struct Forward {
    tx: mpsc::Sender<notify::Result<Event>>,
    lost: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl notify::EventHandler for Forward {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        if let Ok(ev) = &event {
            if !wanted(ev) {
                return;
            }
        }
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                // Dropped: the task rescans (rule 3). The nudge makes sure it looks at the flag
                // even if it drained the queue just before we set it.
                self.lost.store(true, Ordering::Release);
                self.wake.notify_one();
            }
        }
    }
}

/// Events worth queueing: opens, reads, attribute changes and the redundant rename pair are not.
fn wanted(ev: &Event) -> bool {
    if ev.need_rescan() {
        return true;
    }
    match ev.kind {
        NotifyKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        NotifyKind::Access(_) | NotifyKind::Any | NotifyKind::Other => false,
        // inotify reports a rename as `From` and `To` too; `Both` would only repeat them.
        NotifyKind::Modify(ModifyKind::Metadata(_) | ModifyKind::Name(RenameMode::Both)) => false,
        NotifyKind::Create(_) | NotifyKind::Modify(_) | NotifyKind::Remove(_) => true,
    }
}

/// `path` relative to `root`, `/`-separated; `None` outside the root or not UTF-8.
fn relative(root: &Path, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for c in rest.components() {
        let Component::Normal(part) = c else {
            return None;
        };
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(part.to_str()?);
    }
    Some(out)
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Events,
    QueueClosed,
    Job(Result<Report, JoinError>),
    Timer,
    Facts,
    Rescan,
}

struct Service {
    ctx: ServiceCtx,
    cfg: WatcherConfig,
    root: PathBuf,
    tracker: Tracker,
    rx: mpsc::Receiver<notify::Result<Event>>,
    wake: Arc<Notify>,
    lost: Arc<AtomicBool>,
    watcher: Arc<Mutex<RecommendedWatcher>>,
    jobs: JoinSet<Report>,
    /// A full rescan is running; `full_queued` holds the next one (`true`: events were lost).
    full_running: bool,
    full_queued: Option<bool>,
    /// Our queue dropped events: rescan once this many more queued events are handled.
    rescan_after: Option<usize>,
    events: u64,
    rescans: u64,
    /// The state last published, to publish only what changed.
    published: Option<ServiceState>,
    /// Why the watcher is degraded (a watch could not be added).
    degraded: Option<BusError>,
    phase: Phase,
    since_ms: u64,
}

impl Service {
    async fn run(&mut self) -> Result<(), BusError> {
        let mut facts = interval(self.cfg.facts_every);
        let mut periodic = self.cfg.rescan_every.map(interval);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let due = self.tracker.next_due();
            let woke = tokio::select! {
                _ = self.ctx.shutdown.cancelled() => Wake::Shutdown,
                n = self.rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 { Wake::QueueClosed } else { Wake::Events }
                }
                Some(joined) = self.jobs.join_next() => Wake::Job(joined),
                _ = sleep_until(due) => Wake::Timer,
                _ = self.wake.notified() => Wake::Timer,
                _ = facts.tick() => Wake::Facts,
                _ = tick(&mut periodic) => Wake::Rescan,
            };
            match woke {
                Wake::Shutdown => return Ok(()),
                Wake::QueueClosed => {
                    return Err(BusError::new(
                        ErrorCode::Internal,
                        "watcher: notify's thread stopped",
                    ));
                }
                Wake::Events => {
                    let events = std::mem::take(&mut batch);
                    let handled = events.len();
                    self.handle_events(events).await?;
                    self.handled(handled);
                }
                Wake::Job(Ok(report)) => self.merge(report).await?,
                Wake::Job(Err(e)) => return Err(join_error(e)),
                Wake::Timer => {}
                Wake::Facts => self.publish_state().await?,
                Wake::Rescan => self.request_full(false),
            }
            if self.lost.swap(false, Ordering::AcqRel) {
                self.queue_overflowed();
            }
            self.expire().await?;
        }
    }

    fn state(&self) -> ServiceState {
        let mut state = ServiceState::new(self.phase, 0, self.since_ms);
        state.last_error = self.degraded.clone();
        state.facts = serde_json::json!({
            "watched": self.root.display().to_string(),
            "events": self.events,
            "rescans": self.rescans,
            "pending": self.tracker.pending_len() + self.jobs.len(),
        });
        state
    }

    /// Publish the state if it changed since last time (called at most every `facts_every`).
    async fn publish_state(&mut self) -> Result<(), BusError> {
        let state = self.state();
        if self.published.as_ref() != Some(&state) {
            self.ctx.publish_state(&state).await?;
            self.published = Some(state);
        }
        Ok(())
    }

    fn update_phase(&mut self) {
        let phase = if self.degraded.is_some() {
            Phase::Degraded
        } else {
            Phase::Applied
        };
        if phase != self.phase {
            self.phase = phase;
            self.since_ms = now_ms();
        }
    }

    /// Our queue was full and dropped events. The rescan must come after every event queued
    /// before the loss has been handled: a write handled after the rescan would wait for a close
    /// that was dropped. Everything queued now was queued before the loss was noticed.
    fn queue_overflowed(&mut self) {
        let queued = self.rx.len();
        tracing::warn!(
            queued,
            "watcher: event queue full; rescanning after the queued events"
        );
        self.rescan_after = Some(self.rescan_after.unwrap_or(0).max(queued));
        self.handled(0);
    }

    fn handled(&mut self, n: usize) {
        if let Some(left) = self.rescan_after {
            if left <= n {
                self.rescan_after = None;
                self.request_full(true);
            } else {
                self.rescan_after = Some(left - n);
            }
        }
    }

    fn request_full(&mut self, events_lost: bool) {
        if self.full_running {
            self.full_queued = Some(self.full_queued.unwrap_or(false) || events_lost);
            return;
        }
        self.full_running = true;
        self.rescans += 1;
        self.spawn_job(Job::Full {
            start: false,
            events_lost,
        });
    }

    fn spawn_job(&mut self, job: Job) {
        let (root, watcher) = (self.root.clone(), self.watcher.clone());
        self.jobs
            .spawn_blocking(move || scan::run(&root, &watcher, job));
    }

    async fn handle_events(&mut self, events: Vec<notify::Result<Event>>) -> Result<(), BusError> {
        let now = Instant::now();
        let mut armed = Vec::new();
        for event in events {
            match event {
                Ok(ev) => self.on_event(&ev, now, &mut armed)?,
                Err(e) => {
                    tracing::warn!(error = %e, "watcher: notify error; rescanning");
                    self.request_full(true);
                }
            }
        }
        self.take_baselines(armed).await
    }

    fn on_event(
        &mut self,
        ev: &Event,
        now: Instant,
        armed: &mut Vec<String>,
    ) -> Result<(), BusError> {
        if ev.need_rescan() {
            tracing::warn!("watcher: inotify queue overflow; rescanning");
            self.request_full(true);
            return Ok(());
        }
        for path in &ev.paths {
            let Some(rel) = relative(&self.root, path) else {
                continue;
            };
            match ev.kind {
                NotifyKind::Create(CreateKind::Folder) => self.dir_appeared(&rel),
                NotifyKind::Create(_) => self.observe(&rel, Seen::Created, now, armed),
                NotifyKind::Access(AccessKind::Close(AccessMode::Write)) => {
                    self.observe(&rel, Seen::Closed, now, armed)
                }
                NotifyKind::Modify(ModifyKind::Name(RenameMode::From)) | NotifyKind::Remove(_) => {
                    if rel.is_empty() {
                        return Err(root_error(&self.root, "was removed or moved away"));
                    }
                    self.gone(&rel, now, armed);
                }
                NotifyKind::Modify(ModifyKind::Name(_)) => {
                    self.observe(&rel, Seen::MovedIn, now, armed);
                    if is_dir_of_interest(&rel) && scan::is_dir(path) {
                        self.dir_appeared(&rel);
                    }
                }
                NotifyKind::Modify(_) => self.observe(&rel, Seen::Written, now, armed),
                NotifyKind::Access(_) | NotifyKind::Any | NotifyKind::Other => {}
            }
        }
        Ok(())
    }

    fn observe(&mut self, rel: &str, seen: Seen, now: Instant, armed: &mut Vec<String>) {
        if let Some(area) = classify(rel) {
            if self.tracker.observe(rel, area, seen, now) {
                armed.push(rel.to_owned());
            }
        }
    }

    /// `rel` went away: check it, and everything remembered below it if it was a directory.
    fn gone(&mut self, rel: &str, now: Instant, armed: &mut Vec<String>) {
        self.observe(rel, Seen::Gone, now, armed);
        for below in self.tracker.known_under(rel) {
            self.observe(&below, Seen::Gone, now, armed);
        }
    }

    /// A directory appeared: watch it if it is one of ours, then list it (rule 5).
    fn dir_appeared(&mut self, rel: &str) {
        if is_dir_of_interest(rel) {
            self.spawn_job(Job::Dir(rel.to_owned()));
        }
    }

    /// `stat` the paths whose quiet period just (re)started.
    async fn take_baselines(&mut self, mut armed: Vec<String>) -> Result<(), BusError> {
        if armed.is_empty() {
            return Ok(());
        }
        armed.sort_unstable();
        armed.dedup();
        let (rels, stats) = self.stat_all(armed).await?;
        for (rel, stat) in rels.iter().zip(stats) {
            self.tracker.set_baseline(rel, stat);
        }
        Ok(())
    }

    async fn stat_all(&self, rels: Vec<String>) -> Result<(Vec<String>, Vec<Stat>), BusError> {
        if rels.len() <= INLINE_STATS {
            let stats = scan::stat_all(&self.root, &rels);
            return Ok((rels, stats));
        }
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let stats = scan::stat_all(&root, &rels);
            (rels, stats)
        })
        .await
        .map_err(join_error)
    }

    /// Settle the paths whose quiet period ran out, and publish what fires.
    async fn expire(&mut self) -> Result<(), BusError> {
        let due = self.tracker.expired(Instant::now());
        if due.is_empty() {
            return Ok(());
        }
        let (rels, stats) = self.stat_all(due).await?;
        let now = Instant::now();
        let fires: Vec<Fire> = rels
            .iter()
            .zip(stats)
            .filter_map(|(rel, stat)| self.tracker.settle(rel, stat, now))
            .collect();
        for fire in fires {
            self.publish(fire).await?;
        }
        Ok(())
    }

    async fn publish(&mut self, fire: Fire) -> Result<(), BusError> {
        tracing::debug!(path = %fire.rel, kind = %fire.area.event_kind(), removed = fire.removed, "watcher: event");
        let payload = FileEvent {
            version: bus_schema::PAYLOAD_VERSION,
            path: fire.rel,
            size_bytes: fire.size_bytes,
            removed: fire.removed,
            at_start: fire.at_start,
        };
        self.ctx.event(fire.area.event_kind(), &payload).await?;
        self.events += 1;
        Ok(())
    }

    /// Fold a scan job's result into the tracker.
    async fn merge(&mut self, report: Report) -> Result<(), BusError> {
        if let Some(why) = &report.root_error {
            return Err(root_error(&self.root, why));
        }
        let now = Instant::now();
        if !report.errors.is_empty() {
            let message = report.errors.join("; ");
            tracing::warn!(%message, "watcher: degraded");
            self.degraded = Some(BusError::new(ErrorCode::Io, message));
        }
        match report.job {
            Job::Full { start, events_lost } => {
                if events_lost {
                    self.tracker.events_lost(now);
                }
                for (rel, fp) in &report.files {
                    let Some(area) = classify(rel) else { continue };
                    if start && !area.is_drop() {
                        self.tracker.remember(rel, *fp);
                    } else {
                        self.tracker.found(rel, area, *fp, now, start);
                    }
                }
                if !start {
                    // Remembered files the scan did not find: check whether they are gone.
                    let found: HashSet<&str> =
                        report.files.iter().map(|(r, _)| r.as_str()).collect();
                    let vanished: Vec<String> = self
                        .tracker
                        .known_idle()
                        .filter(|rel| !found.contains(rel))
                        .map(str::to_owned)
                        .collect();
                    let mut armed = Vec::new();
                    for rel in vanished {
                        self.observe(&rel, Seen::Gone, now, &mut armed);
                    }
                    self.take_baselines(armed).await?;
                    self.full_running = false;
                    if report.errors.is_empty() {
                        self.degraded = None;
                    }
                    if let Some(events_lost) = self.full_queued.take() {
                        self.request_full(events_lost);
                    }
                }
            }
            Job::Dir(_) => {
                for (rel, fp) in &report.files {
                    if let Some(area) = classify(rel) {
                        self.tracker.found(rel, area, *fp, now, false);
                    }
                }
            }
        }
        self.update_phase();
        tracing::trace!(
            pending = self.tracker.pending_len(),
            "watcher: merged a scan"
        );
        Ok(())
    }
}

fn interval(period: std::time::Duration) -> Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_slash_separated_and_stay_inside_the_root() {
        let root = Path::new("/iohub");
        assert_eq!(
            relative(root, Path::new("/iohub/deploy/a.zip")).as_deref(),
            Some("deploy/a.zip")
        );
        assert_eq!(relative(root, Path::new("/iohub")).as_deref(), Some(""));
        assert_eq!(relative(root, Path::new("/other/a")), None);
        assert_eq!(relative(root, Path::new("/iohub/../etc/passwd")), None);
    }
}
