//! The registry service (SPEC §3.14, §4.6, §7.4, §11 items 11, 18, 34): the local Docker
//! registry and the import of `docker save` archives into it, without a Docker daemon.
//!
//! Inputs: the `registry`, `docker` and `network` sections ([`config`]);
//! `iohub/event/watcher/registry_archive_dropped`; at start (and whenever the config changes)
//! the `*.tar.gz` already in `runtime/iohub-registry/` when `IOHUBOS_DOCKER_REGISTRY_RESCAN`;
//! `iohub/cmd/registry/reload` (rescan now, whatever `RESCAN` says; the admin API's button) and
//! `iohub/cmd/registry/status`.
//!
//! Process ([`apply::supervise`]): Debian's `docker-registry serve <root>/runtime/registry/
//! config.yml`, storage `<root>/docker/registry`, `http.addr :<port>`, restarted with backoff
//! when it dies, stopped when disabled, ready once `GET /v2/` answers. Exposure to ETH0/ETH1 is
//! the firewall's (it reads the same section).
//!
//! Imports ([`import`], [`archive`]): one archive at a time, each once the registry is ready;
//! verified completely before anything is pushed; pushed as `<name>:<tag>` (pulled by clients
//! as `<hostname>:<port>/<name>:<tag>`); recorded by content digest in
//! `runtime/registry-imports.json` (atomic) only on success, so an imported archive is skipped
//! on rescan and a failed one is retried on the next trigger. `RESCAN_DELETE` deletes an
//! archive only after a verified import (never after a failure, unlike the original). Progress
//! and outcome go to `iohub/event/registry/progress`; the last imports and the process are in
//! the state's facts; a failed import makes the state `degraded` with its error.
//!
//! Backends: plan-only publishes the plan (and the archives it would import); no process, no
//! import.

pub mod apply;
pub mod archive;
pub mod config;
pub mod import;
pub mod plan;
pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::events::FileEvent;
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Request, ServiceName, ServiceState, Topic, Verb,
};
use tokio::sync::{mpsc, watch};

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use crate::shared::files::remove_if_present;
use crate::supervisor::ServiceSpec;
pub use apply::RegistryOptions;
use config::RegistryConfig;
use plan::{Plan, ProcessPlan};
use state::{DoneArchive, DoneStore, Facts, ImportFacts, ProcessFacts, Progress, RECENT_MAX};
use sys::http::RegistryClient;

/// How often progress is reported while an archive is read.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The registry service with the default options.
pub fn spec() -> ServiceSpec {
    spec_with(RegistryOptions::default())
}

/// The registry service with `options` (the program).
pub fn spec_with(options: RegistryOptions) -> ServiceSpec {
    ServiceSpec::new(ServiceName::Registry, move |ctx| run(ctx, options.clone()))
}

/// One archive to import.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    /// Relative to the data root.
    rel: String,
    delete_after: bool,
}

/// One run of the registry service.
pub async fn run(ctx: ServiceCtx, options: RegistryOptions) -> Result<(), BusError> {
    let mut drops = ctx
        .bus
        .subscribe(&[
            &Topic::Event(ServiceName::Watcher, EventKind::RegistryArchiveDropped).to_string(),
        ])
        .await?;
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;

    let (plan_tx, plan_rx) = watch::channel(None::<ProcessPlan>);
    let (process_tx, mut process_rx) = watch::channel(ProcessFacts::default());
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
    let (results_tx, mut results_rx) = mpsc::unbounded_channel::<ImportFacts>();
    let mut tasks = tokio::task::JoinSet::new();
    if ctx.backend == Backend::Live {
        tasks.spawn(apply::supervise(
            plan_rx,
            process_tx,
            ctx.shutdown.child_token(),
        ));
        tasks.spawn(worker(ctx.clone(), jobs_rx, process_rx.clone(), results_tx));
    }

    let mut s = Service {
        ctx: ctx.clone(),
        options,
        config: None,
        generation: 0,
        plan: None,
        facts: Facts::default(),
        queued: BTreeSet::new(),
        jobs: jobs_tx,
        plan_tx,
        last_error: None,
        import_failed: false,
    };
    s.publish().await;
    loop {
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
                    Ok(ev) if !ev.removed => s.dropped(&ev.path),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "registry: bad drop event ignored"),
                }
                s.publish().await;
            }
            r = process_rx.changed() => {
                if r.is_err() { break }
                s.facts.process = process_rx.borrow_and_update().clone();
                s.publish().await;
            }
            Some(result) = results_rx.recv() => {
                s.queued.remove(&result.archive);
                if result.outcome == "gone" {
                    // A duplicate trigger for an archive already imported and deleted.
                    s.publish().await;
                    continue;
                }
                s.import_failed = result.outcome == "failed";
                s.last_error = result.errors.first().cloned();
                let event = Progress {
                    version: bus_schema::PAYLOAD_VERSION,
                    archive: result.archive.clone(),
                    phase: result.outcome,
                    bytes_done: result.archive_bytes,
                    bytes_total: result.archive_bytes,
                    images: result.images.clone(),
                    errors: result.errors.clone(),
                };
                s.facts.recent.push(result);
                let excess = s.facts.recent.len().saturating_sub(RECENT_MAX);
                s.facts.recent.drain(..excess);
                // State first, then the outcome: a client that sees the outcome finds the
                // archive out of the queue (a `reload` right after re-queues it).
                s.publish().await;
                if let Err(e) = ctx.event(EventKind::Progress, &event).await {
                    tracing::warn!(error = %e, "registry: outcome event not published");
                }
            }
        }
    }
    // Aborting the tasks drops the `Supervised` process, which kills its process group.
    tasks.shutdown().await;
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    options: RegistryOptions,
    config: Option<RegistryConfig>,
    generation: u64,
    plan: Option<Plan>,
    facts: Facts,
    /// Archives queued or being imported (relative paths).
    queued: BTreeSet<String>,
    jobs: mpsc::UnboundedSender<Job>,
    plan_tx: watch::Sender<Option<ProcessPlan>>,
    /// A refused config or the last failed import.
    last_error: Option<BusError>,
    import_failed: bool,
}

impl Service {
    async fn changed(&mut self, latest: &crate::reconcile::Latest) {
        match config::desired(latest) {
            None => return,
            Some(Err(errors)) => {
                tracing::warn!(
                    ?errors,
                    "registry: config refused; keeping the last good one"
                );
                self.last_error = errors.into_iter().next();
            }
            Some(Ok((generation, config))) => {
                self.generation = generation;
                if !self.import_failed {
                    self.last_error = None;
                }
                let plan = plan::plan(
                    &config,
                    &self.ctx.paths,
                    self.ctx.backend,
                    &self.options.program,
                );
                self.plan_tx.send_if_modified(|current| {
                    if *current != plan.process {
                        current.clone_from(&plan.process);
                        true
                    } else {
                        false
                    }
                });
                self.facts.image_prefix = plan.image_prefix.clone();
                if let Err(e) = self.ctx.publish_plan(&plan).await {
                    tracing::warn!(error = %e, "registry: plan not published");
                }
                self.config = Some(config);
                self.plan = Some(plan);
                if self.automatic() {
                    self.scan().await;
                }
            }
        }
        self.publish().await;
    }

    fn automatic(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.import.automatic)
    }

    /// Queue every archive in the import directory; returns the ones newly queued.
    async fn scan(&mut self) -> Vec<String> {
        let dir = self.ctx.paths.root(plan::IMPORT_DIR);
        let names = tokio::task::spawn_blocking(move || archives_in(&dir))
            .await
            .unwrap_or_default();
        let mut queued = Vec::new();
        for name in names {
            let rel = format!("{}/{name}", plan::IMPORT_DIR);
            if self.enqueue(&rel) {
                queued.push(rel);
            }
        }
        queued
    }

    fn dropped(&mut self, rel: &str) {
        let in_dir = rel
            .strip_prefix(plan::IMPORT_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && name.ends_with(".tar.gz"));
        if in_dir && self.automatic() {
            self.enqueue(rel);
        }
    }

    fn enqueue(&mut self, rel: &str) -> bool {
        let Some(plan) = &self.plan else {
            return false;
        };
        if !plan.enabled || !self.queued.insert(rel.to_string()) {
            return false;
        }
        if self.ctx.backend == Backend::Live {
            let _ = self.jobs.send(Job {
                path: self.ctx.paths.root(rel),
                rel: rel.to_string(),
                delete_after: plan.import.delete_after,
            });
        }
        true
    }

    async fn command(&mut self, verb: Verb, request: Request) {
        match verb {
            Verb::Reload => {
                let enabled = self.plan.as_ref().is_some_and(|p| p.enabled);
                if !enabled {
                    let e = BusError::new(ErrorCode::Unavailable, "the registry is disabled");
                    reply_err(&self.ctx, &request, vec![e]).await;
                    return;
                }
                let queued = self.scan().await;
                self.publish().await;
                reply_ok(&self.ctx, &request, serde_json::json!({"queued": queued})).await;
            }
            Verb::Status | Verb::Get => {
                let facts = serde_json::to_value(self.current_facts()).unwrap_or_default();
                reply_ok(&self.ctx, &request, facts).await;
            }
            other => {
                let e = BusError::new(
                    ErrorCode::BadTopic,
                    format!("the registry service has no `{other}` command (reload, status)"),
                );
                reply_err(&self.ctx, &request, vec![e]).await;
            }
        }
    }

    fn current_facts(&self) -> Facts {
        let mut facts = self.facts.clone();
        facts.queued = self.queued.iter().cloned().collect();
        facts
    }

    async fn publish(&mut self) {
        let enabled = self.plan.as_ref().map(|p| p.enabled);
        let phase = match enabled {
            None => Phase::Applying,
            Some(false) => Phase::Disabled,
            Some(true) if self.ctx.backend == Backend::PlanOnly => Phase::Applied,
            Some(true) if self.import_failed => Phase::Degraded,
            Some(true) if self.facts.process.ready => Phase::Applied,
            Some(true) if self.facts.process.starts > 1 => Phase::Degraded,
            Some(true) => Phase::Applying,
        };
        let mut state = ServiceState::new(phase, self.generation, now_ms());
        state.applied = enabled.map(|_| self.generation);
        state.last_error = self.last_error.clone();
        state.facts = serde_json::to_value(self.current_facts()).unwrap_or_default();
        if let Err(e) = self.ctx.publish_state(&state).await {
            tracing::warn!(error = %e, "registry: state not published");
        }
    }
}

/// `*.tar.gz` regular files of `dir`, not hidden, in name order (the original's glob order).
fn archives_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".tar.gz") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Identity of a file version, to skip re-reading an archive verified in this run.
type FileKey = (PathBuf, u64, i64, i64, u64);

fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((
        path.to_path_buf(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
    ))
}

/// Imports archives one at a time, each once the registry is ready.
async fn worker(
    ctx: ServiceCtx,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut process: watch::Receiver<ProcessFacts>,
    results: mpsc::UnboundedSender<ImportFacts>,
) {
    let done_file = ctx.paths.root(plan::DONE_FILE);
    let mut store = {
        let f = done_file.clone();
        tokio::task::spawn_blocking(move || DoneStore::load(&f))
            .await
            .unwrap_or_default()
    };
    let mut verified: HashMap<FileKey, String> = HashMap::new();
    while let Some(job) = jobs.recv().await {
        let port = match process.wait_for(|f| f.ready && f.port.is_some()).await {
            Ok(f) => f.port.unwrap_or_default(),
            Err(_) => return,
        };
        let started = tokio::time::Instant::now();
        let mut facts = ImportFacts {
            archive: job.rel.clone(),
            outcome: "failed",
            digest: None,
            images: Vec::new(),
            skipped: Vec::new(),
            layers_uploaded: 0,
            layers_present: 0,
            bytes_uploaded: 0,
            duration_ms: 0,
            deleted: false,
            archive_bytes: 0,
            errors: Vec::new(),
        };
        let key = {
            let p = job.path.clone();
            tokio::task::spawn_blocking(move || file_key(&p))
                .await
                .ok()
                .flatten()
        };
        let Some(key) = key else {
            // Gone already (imported and deleted after a duplicate trigger, or removed).
            tracing::debug!(archive = %job.rel, "registry: archive gone; nothing to import");
            let _ = results.send(ImportFacts {
                outcome: "gone",
                ..facts
            });
            continue;
        };
        let size = key.1;
        let result = match verified
            .get(&key)
            .filter(|d| store.archives.contains_key(*d))
        {
            Some(digest) => Ok(import::Report {
                digest: digest.clone(),
                already_imported: true,
                images: store.archives[digest].images.clone(),
                ..Default::default()
            }),
            None => import_one(&ctx, port, &job, &mut store).await,
        };
        match result {
            Ok(report) => {
                verified.insert(key, report.digest.clone());
                facts.outcome = if report.already_imported {
                    "already_imported"
                } else {
                    "imported"
                };
                if !report.already_imported {
                    store.archives.insert(
                        report.digest.clone(),
                        DoneArchive {
                            file: job.rel.rsplit('/').next().unwrap_or_default().to_string(),
                            images: report.images.clone(),
                            imported_ms: now_ms(),
                        },
                    );
                }
                let saved = store.save(&done_file).await;
                match saved {
                    Err(e) => {
                        facts.outcome = "failed";
                        facts.errors.push(BusError::new(
                            ErrorCode::Io,
                            format!("{}: {e}", done_file.display()),
                        ));
                    }
                    Ok(()) if job.delete_after => {
                        let p = job.path.clone();
                        match remove_if_present(p).await {
                            Ok(_) => facts.deleted = true,
                            Err(e) => {
                                tracing::warn!(archive = %job.rel, error = %e, "registry: archive not deleted")
                            }
                        }
                    }
                    Ok(()) => {}
                }
                facts.digest = Some(report.digest);
                facts.images = report.images;
                facts.skipped = report.skipped;
                facts.layers_uploaded = report.layers_uploaded;
                facts.layers_present = report.layers_present;
                facts.bytes_uploaded = report.bytes_uploaded;
            }
            Err(import::ImportError(errors)) => {
                let errors: Vec<BusError> = errors
                    .into_iter()
                    .map(|mut e| {
                        e.message = format!("{}: {}", job.rel, e.message);
                        e.field.get_or_insert_with(|| job.rel.clone());
                        e
                    })
                    .collect();
                tracing::warn!(archive = %job.rel, ?errors, "registry: import failed; the archive is kept");
                facts.errors = errors;
            }
        }
        facts.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        facts.archive_bytes = size;
        tracing::info!(archive = %facts.archive, outcome = facts.outcome, ms = facts.duration_ms, "registry: import");
        let _ = results.send(facts);
    }
}

/// Verify then push one archive, reporting progress while it is read.
async fn import_one(
    ctx: &ServiceCtx,
    port: u16,
    job: &Job,
    store: &mut DoneStore,
) -> Result<import::Report, import::ImportError> {
    let client = RegistryClient::new("127.0.0.1", port)?;
    let meter = Arc::new(import::Meter::default());
    let total = std::fs::metadata(&job.path).map(|m| m.len()).unwrap_or(0);
    let reporter = {
        let ctx = ctx.clone();
        let meter = meter.clone();
        let archive = job.rel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            loop {
                tick.tick().await;
                let phase = if meter.phase.load(Ordering::Relaxed) == 0 {
                    "verifying"
                } else {
                    "pushing"
                };
                let _ = ctx
                    .event(
                        EventKind::Progress,
                        &Progress {
                            version: bus_schema::PAYLOAD_VERSION,
                            archive: archive.clone(),
                            phase,
                            bytes_done: meter.bytes.load(Ordering::Relaxed),
                            bytes_total: total,
                            images: Vec::new(),
                            errors: Vec::new(),
                        },
                    )
                    .await;
            }
        })
    };
    let result = async {
        let (digest, index) = {
            let path = job.path.clone();
            let meter = meter.clone();
            tokio::task::spawn_blocking(move || import::verify(&path, &meter))
                .await
                .map_err(|e| {
                    import::ImportError(vec![BusError::new(ErrorCode::Internal, e.to_string())])
                })??
        };
        import::push(&client, &job.path, digest, index, store, meter.clone()).await
    }
    .await;
    reporter.abort();
    result
}
