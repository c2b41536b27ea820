//! The bridge service: carries local topics to a remote MQTT broker through the disk queue of
//! the `bridge` crate (issue 14).
//!
//! Loop: `iohub/config/bridge` -> [`config::plan`] (the remote, its maps and queue budget; every
//! problem at once) -> in `Backend::Live` the link is (re)started: its queue is opened under
//! `<root>/runtime/bridge/<remote>/`, a local subscription feeds [`Link::offer`], and
//! [`Link::run`] replays the queue to the remote -> `iohub/state/bridge`
//! ([`state::BridgeFacts`]: per remote connected/since, queued messages and bytes, oldest age,
//! sent, redelivered, dropped by reason, replay rate), refreshed every few seconds and on every
//! connection change. A config equal to the running one changes nothing. With fleet topics
//! ([`fleet`]), commands come in from the remote and the box's state is mirrored up to it.

pub mod config;
pub mod fleet;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::bridge::queue::{Options, Stats, Writer};
use ::bridge::{Link, LinkState};
use bus_schema::sections::Bridge;
use bus_schema::{BusError, ErrorCode, Section};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ctx::{now_ms, ServiceCtx};
use crate::reconcile::{
    answer, join_errors, publish_state, reconcile, reply_unsupported, Input, Inputs, Latest,
    Progress, Reconciler,
};
use config::{BridgePlan, RemotePlan};
use state::{BridgeFacts, DroppedFacts, RemoteFacts};

/// How often the queue is expired and the state refreshed.
const TICK: Duration = Duration::from_secs(5);
/// The most local messages queued with one durable write.
const BATCH: usize = 512;
/// The system's CA bundle, trusted for `mqtts://` remotes.
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Run the bridge service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?.answering_checks();
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut svc = Service {
        ctx: ctx.clone(),
        applied: None,
        progress: Progress::default(),
        running: None,
        changed: changed_tx,
        facts: Arc::new(Mutex::new(Vec::new())),
    };
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => reconcile(&mut svc, &inputs.latest).await,
                Some(Input::Command(verb, request)) => {
                    if let Some((verb, request)) = answer(&svc, &inputs.latest, verb, request).await {
                        reply_unsupported(&svc.ctx, &request, verb, "status, get, check").await;
                    }
                }
            },
            Some(()) = changed_rx.recv() => publish_state(&mut svc).await,
        }
    }
    svc.stop().await;
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    applied: Option<BridgePlan>,
    progress: Progress,
    running: Option<Running>,
    changed: mpsc::UnboundedSender<()>,
    facts: Arc<Mutex<Vec<RemoteFacts>>>,
}

/// A running remote: its link's tasks and its queue.
struct Running {
    plan: RemotePlan,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    queue: Writer,
    thread: std::thread::JoinHandle<()>,
}

fn unavailable(what: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Unavailable, what.to_string())
}

impl Service {
    async fn stop(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.cancel.cancel();
        for t in r.tasks {
            let _ = t.await;
        }
        let queue = r.queue;
        let closed = tokio::task::spawn_blocking(move || {
            let closed = queue.close();
            let _ = r.thread.join();
            closed
        })
        .await;
        if let Ok(Err(e)) = closed {
            tracing::warn!(error = %e, "bridge queue not closed cleanly");
        }
        self.facts.lock().expect("facts lock").clear();
    }

    async fn start(&mut self, plan: &RemotePlan) -> Result<(), BusError> {
        let dir = plan.queue_dir.clone();
        let opts = Options::with_budget(plan.budget_bytes);
        let (queue, thread) = tokio::task::spawn_blocking(move || Writer::open(&dir, opts))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        let ca = if plan.tls {
            let path = self.ctx.paths.system(SYSTEM_CA);
            Some(tokio::fs::read(&path).await.map_err(|e| {
                unavailable(format!("{}: {e} (the CA bundle for mqtts)", path.display()))
            })?)
        } else {
            None
        };
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "iohub".into());
        let box_id = plan
            .fleet
            .as_ref()
            .and_then(|f| f.box_id.clone())
            .unwrap_or_else(|| host.clone());
        let maps = plan.maps(&box_id).map_err(join_errors)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        let link = Link::new(
            plan.remote(&format!("iohub-{host}"), ca),
            maps,
            queue.clone(),
            plan.fleet.is_some().then_some(inbound_tx),
        );
        let cancel = self.ctx.shutdown.child_token();
        let mut tasks = vec![
            tokio::spawn({
                let (link, cancel) = (link.clone(), cancel.clone());
                async move { link.run(cancel).await }
            }),
            tokio::spawn(forward(
                self.ctx.clone(),
                link.clone(),
                self.facts.clone(),
                cancel.clone(),
            )),
            tokio::spawn(watch(
                link.clone(),
                plan.budget_bytes,
                self.facts.clone(),
                self.changed.clone(),
                cancel.clone(),
            )),
        ];
        if let Some(f) = &plan.fleet {
            let (ctx, f, cancel) = (self.ctx.clone(), f.clone(), cancel.clone());
            let prefix = f.prefix.clone();
            tasks.push(tokio::spawn(fleet::commands(
                ctx.clone(),
                f,
                inbound_rx,
                cancel.clone(),
            )));
            tasks.push(tokio::spawn(fleet::mirror_states(
                ctx,
                link.clone(),
                prefix,
                box_id,
                cancel,
            )));
        }
        self.running = Some(Running {
            plan: plan.clone(),
            cancel,
            tasks,
            queue,
            thread,
        });
        Ok(())
    }
}

/// Feed the local messages of the out maps into the link's queue, a batch per durable write.
async fn forward(
    ctx: ServiceCtx,
    link: Link,
    facts: Arc<Mutex<Vec<RemoteFacts>>>,
    cancel: CancellationToken,
) {
    let filters = link.local_filters();
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut sub = match ctx.bus.subscribe(&filters).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "bridge: local subscription failed");
            return;
        }
    };
    let mut refused = 0u64;
    loop {
        let first = tokio::select! {
            m = sub.recv() => m,
            () = cancel.cancelled() => return,
        };
        let Some(first) = first else { return };
        let mut batch = vec![(first.topic, first.payload.to_vec())];
        while batch.len() < BATCH {
            let Some(m) = sub.try_recv() else { break };
            batch.push((m.topic, m.payload.to_vec()));
        }
        let n = batch.len() as u64;
        if let Err(e) = link.offer(batch).await {
            refused += n;
            tracing::error!(error = %e, messages = n, "bridge: the queue refused local messages");
        }
        let local = sub.dropped() + refused;
        if let Some(f) = facts.lock().expect("facts lock").first_mut() {
            f.dropped.local = local;
        }
    }
}

/// Expire the queue and refresh the facts every [`TICK`] and on every connection change.
async fn watch(
    link: Link,
    budget_bytes: u64,
    facts: Arc<Mutex<Vec<RemoteFacts>>>,
    changed: mpsc::UnboundedSender<()>,
    cancel: CancellationToken,
) {
    let mut states = link.state();
    let mut tick = tokio::time::interval(TICK);
    let mut last: Option<(u64, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = states.changed() => if r.is_err() { return },
            () = cancel.cancelled() => return,
        }
        let _ = link.queue().expire();
        let Ok(stats) = link.queue().stats_async().await else {
            return;
        };
        let state = states.borrow().clone();
        let now = now_ms();
        let rate = match last {
            Some((at, sent)) if now > at => (state.published - sent) * 1000 / (now - at),
            _ => 0,
        };
        last = Some((now, state.published));
        let fresh = remote_facts(&state, &stats, budget_bytes, rate, now);
        let mut all = facts.lock().expect("facts lock");
        let local = all.first().map_or(0, |f| f.dropped.local);
        let fresh = RemoteFacts {
            dropped: DroppedFacts {
                local,
                ..fresh.dropped
            },
            ..fresh
        };
        if all.first() != Some(&fresh) {
            *all = vec![fresh];
            let _ = changed.send(());
        }
    }
}

fn remote_facts(
    state: &LinkState,
    stats: &Stats,
    budget_bytes: u64,
    rate: u64,
    now: u64,
) -> RemoteFacts {
    RemoteFacts {
        name: config::DEFAULT_REMOTE.to_string(),
        connected: state.connected,
        since_ms: state.since_ms,
        address: state.address.clone(),
        connects: state.connects,
        connect_failures: state.failures,
        last_error: state.last_error.clone(),
        queued_messages: stats.queued_records,
        queued_bytes: stats.queued_bytes,
        budget_bytes,
        oldest_age_ms: stats.oldest_enqueued_ms.map(|t| now.saturating_sub(t)),
        in_flight: stats.in_flight,
        sent: state.published,
        redelivered: stats.redelivered,
        sent_per_sec: rate,
        dropped: DroppedFacts {
            ttl: stats.dropped.ttl,
            budget: stats.dropped.budget,
            corrupt: stats.dropped.corrupt,
            local: 0,
        },
        disk_bytes: stats.disk_bytes,
    }
}

impl Reconciler for Service {
    type Facts = BridgeFacts;
    type Plan = BridgePlan;

    fn ctx(&self) -> &ServiceCtx {
        &self.ctx
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn facts(&self) -> BridgeFacts {
        BridgeFacts {
            backend: self.ctx.backend,
            enabled: self.applied.as_ref().is_some_and(|p| p.enabled),
            remotes: self.facts.lock().expect("facts lock").clone(),
        }
    }

    fn health(facts: &BridgeFacts) -> (Option<BusError>, bool) {
        let down = facts.remotes.iter().find(|r| !r.connected).map(|r| {
            unavailable(format!(
                "remote {} is not connected{}",
                r.name,
                r.last_error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ))
        });
        (down, facts.enabled)
    }

    async fn plan(&self, latest: &Latest) -> Option<Result<BridgePlan, BusError>> {
        let section = latest.section::<Bridge>(Section::Bridge)?;
        Some(
            section.and_then(|(_, s)| {
                config::plan(&s, &self.ctx.paths.runtime()).map_err(join_errors)
            }),
        )
    }

    async fn apply(&mut self, plan: &BridgePlan) -> Result<(), BusError> {
        if self.running.as_ref().map(|r| &r.plan) == plan.remote.as_ref() {
            return Ok(());
        }
        self.stop().await;
        if let Some(remote) = &plan.remote {
            self.start(remote).await?;
        }
        Ok(())
    }

    fn keep(&mut self, plan: BridgePlan) {
        self.applied = Some(plan);
    }
}
