//! The network service (SPEC §3.4, §3.5, §5): ETH0 in DHCP or static mode (or the WiFi client
//! interface as the uplink), `br1` over ETH1 in router mode, IPv4 forwarding, host name,
//! resolv.conf. Input: config sections `network` and `wifi`, and the DHCP lease file that our
//! udhcpc hook writes under `<root>/runtime/network/`. Output: `iohub/plan/network`
//! ([`plan::NetworkPlan`]) and `iohub/state/network` with [`bus_schema::facts::NetworkFacts`],
//! which the firewall, routes and dhcp services follow.
//!
//! Every reconcile reads the kernel ([`Netlink::snapshot`]), plans the difference, applies it
//! (`Backend::Live`) and publishes; a second reconcile of the same input plans no op. Problems
//! (a missing device, a refused op) leave the service `degraded` and are retried every
//! [`RETRY`]. Commands: `reload` (reconcile now; replies with the ops applied), `status`.

pub mod apply;
pub mod config;
pub mod lease;
pub mod plan;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_schema::facts::DhcpLease;
use bus_schema::sections::{Network, Wifi};
use bus_schema::{BusError, ErrorCode, Section, Verb};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ctx::{Backend, ServiceCtx};
use crate::reconcile::{reply_ok, reply_unsupported, Input, Inputs, Progress};
use crate::shared::files::{remove_if_present, watch_dir};
use crate::shared::process::{ProcStatus, Supervised};
use plan::NetworkPlan;
use sys::netlink::{KernelView, Netlink};

/// How often a degraded network is retried (devices may appear later).
pub const RETRY: Duration = Duration::from_secs(5);

/// The plan as published, with what the apply did.
#[derive(Debug, Serialize)]
pub struct PublishedPlan<'a> {
    pub backend: Backend,
    #[serde(flatten)]
    pub plan: &'a NetworkPlan,
    /// Ops and files actually changed by this apply (0 and 0 when nothing differed).
    pub applied_ops: usize,
    pub written_files: usize,
    /// How long the apply took (netlink ops and files), in milliseconds.
    pub apply_ms: f64,
    pub dhcp_client_status: Option<ProcStatus>,
}

fn io(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, e.to_string())
}

/// One run of the network service.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;
    let nl = match ctx.backend {
        Backend::Live => Some(Netlink::connect().map_err(io)?),
        // Reading is harmless: a plan-only daemon shows the diff against this host's kernel.
        Backend::PlanOnly => Netlink::connect().ok(),
    };
    let lease_dir = ctx.paths.runtime().join("network");
    let dir = lease_dir.clone();
    let (_watcher, mut lease_events) = tokio::task::spawn_blocking(move || watch_dir(&dir))
        .await
        .map_err(io)??;
    let (exited_tx, mut exited) = mpsc::unbounded_channel();
    let mut svc = Service {
        ctx: ctx.clone(),
        nl,
        client: None,
        exited_tx,
        last: None,
        lease_dir,
        progress: Progress::default(),
    };
    let starting = svc.progress.state(None, true, &serde_json::Value::Null);
    ctx.publish_state(&starting).await.map_err(io)?;
    let mut retry: Option<tokio::time::Instant> = None;
    loop {
        let sleep_until =
            retry.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => {}
                Some(Input::Command(verb, request)) => {
                    match verb {
                        Verb::Reload => {
                            let r = svc.reconcile(&inputs).await;
                            retry = r.then(|| tokio::time::Instant::now() + RETRY);
                            let result = serde_json::json!({
                                "applied_ops": svc.last.as_ref().map(|l| l.1).unwrap_or(0),
                                "written_files": svc.last.as_ref().map(|l| l.2).unwrap_or(0),
                            });
                            reply_ok(&ctx, &request, result).await;
                        }
                        Verb::Status | Verb::Get => {
                            let facts = svc.last.as_ref().map(|l| serde_json::to_value(&l.0.facts).unwrap_or_default());
                            reply_ok(&ctx, &request, facts.unwrap_or_default()).await;
                        }
                        other => reply_unsupported(&ctx, &request, other, "status, reload").await,
                    }
                    continue;
                }
            },
            Some(()) = lease_events.recv() => {
                // Absorb a burst (the hook's temp file + rename).
                while lease_events.try_recv().is_ok() {}
            }
            Some(()) = exited.recv() => {}
            () = tokio::time::sleep_until(sleep_until), if retry.is_some() => {}
        }
        let degraded = svc.reconcile(&inputs).await;
        retry = degraded.then(|| tokio::time::Instant::now() + RETRY);
    }
    if let Some(c) = svc.client.take() {
        c.stop().await;
    }
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    nl: Option<Netlink>,
    client: Option<Supervised>,
    exited_tx: mpsc::UnboundedSender<()>,
    /// The last plan, with the ops applied and files written.
    last: Option<(NetworkPlan, usize, usize)>,
    lease_dir: PathBuf,
    progress: Progress,
}

impl Service {
    /// Plan, apply, publish. Returns whether the result is degraded (to retry).
    async fn reconcile(&mut self, inputs: &Inputs) -> bool {
        self.progress.generation = inputs.latest.generation();
        let network = match inputs.latest.section::<Network>(Section::Network) {
            None => return false,
            Some(Err(e)) => {
                self.publish_error(e).await;
                return false;
            }
            Some(Ok((_, n))) => n,
        };
        let wifi = inputs
            .latest
            .section::<Wifi>(Section::Wifi)
            .and_then(Result::ok)
            .map(|(_, w)| w);
        let desired = config::desired(&network, wifi.as_ref());
        let kernel = match &self.nl {
            Some(nl) => match nl.snapshot().await {
                Ok(k) => k,
                Err(e) => {
                    self.publish_error(io(e)).await;
                    return true;
                }
            },
            None => KernelView::default(),
        };
        let paths = self.ctx.paths.clone();
        let slash = paths.system_root == Path::new("/");
        // First find the uplink, then read its lease.
        let first = plan::plan(&desired, None, &kernel, &paths, slash);
        let lease: Option<DhcpLease> = first.wan.as_ref().and_then(|wan| {
            match lease::read(&self.lease_dir.join(format!("lease-{wan}.json")), wan)? {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the DHCP lease file");
                    None
                }
            }
        });
        let plan = plan::plan(&desired, lease.as_ref(), &kernel, &paths, slash);

        let mut errors: Vec<String> = plan.problems.clone();
        let (mut ops, mut files) = (0, 0);
        let t0 = std::time::Instant::now();
        if self.ctx.backend == Backend::Live {
            if let Some(nl) = &self.nl {
                let done = apply::apply(nl, &plan, &paths.system_root).await;
                ops = done.ops;
                files = done.files;
                errors.extend(done.errors);
            }
            // The DHCP client follows the plan: restarted when its command line changes.
            if self.client.as_ref().map(|c| &c.spec) != plan.dhcp_client.as_ref() {
                if let Some(old) = self.client.take() {
                    old.stop().await;
                    if let Some(wan) = &self.last.as_ref().and_then(|l| l.0.wan.clone()) {
                        let lease = self.lease_dir.join(format!("lease-{wan}.json"));
                        let _ = remove_if_present(lease).await;
                    }
                }
                if let Some(spec) = plan.dhcp_client.clone() {
                    self.client = Some(Supervised::start(spec, self.exited_tx.clone()));
                }
            }
        }
        let client_status = self.client.as_ref().map(Supervised::status);
        let published = PublishedPlan {
            backend: self.ctx.backend,
            plan: &plan,
            applied_ops: ops,
            written_files: files,
            apply_ms: t0.elapsed().as_secs_f64() * 1e3,
            dhcp_client_status: client_status,
        };
        if let Err(e) = self.ctx.publish_plan(&published).await {
            tracing::warn!(error = %e, "network plan not published");
        }
        let degraded = !errors.is_empty();
        let problem = degraded.then(|| BusError::new(ErrorCode::Io, errors.join("; ")));
        self.progress.applied_with(self.ctx.name, problem);
        let state = self.progress.state(None, true, &plan.facts);
        if let Err(e) = self.ctx.publish_state(&state).await {
            tracing::warn!(error = %e, "network state not published");
        }
        self.last = Some((plan, ops, files));
        degraded
    }

    async fn publish_error(&mut self, e: BusError) {
        self.progress.failed(self.ctx.name, e);
        let facts = self.last.as_ref().map(|l| &l.0.facts);
        let state = self.progress.state(None, true, &facts);
        if let Err(e) = self.ctx.publish_state(&state).await {
            tracing::warn!(error = %e, "network state not published");
        }
    }
}
