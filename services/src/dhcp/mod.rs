//! The dhcp service (SPEC §3.7, §5.4): in router mode with `IOHUBOS_DHCP_SERVER_ENABLED`, a
//! dnsmasq DHCP server (DNS off: `--port=0`) on the LAN bridge, supervised (restarted with
//! backoff when it dies, restarted when its config changes, stopped on disable and at shutdown).
//! Inputs: sections `dhcp` and `network`, and the network service's state (dnsmasq waits until
//! `br1` carries the LAN address). Its config and lease file live under `<root>/runtime/dhcp/`;
//! the leases are published in the state facts ([`state::DhcpFacts`]) whenever the file changes.

pub mod plan;
pub mod state;

use bus_schema::facts::NetworkFacts;
use bus_schema::sections::{Dhcp, Network};
use bus_schema::{BusError, ErrorCode, Phase, Section, ServiceName, ServiceState, Verb};
use tokio::sync::mpsc;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use crate::shared::files::watch_dir;
use crate::shared::process::Supervised;
use plan::DhcpPlan;

fn io(e: impl std::fmt::Display) -> BusError {
    BusError::new(ErrorCode::Io, e.to_string())
}

/// One run of the dhcp service.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[ServiceName::Network]).await?;
    let dir = plan::dir(&ctx.paths);
    let d = dir.clone();
    let (_watcher, mut lease_events) = tokio::task::spawn_blocking(move || watch_dir(&d))
        .await
        .map_err(io)??;
    let (exited_tx, mut exited) = mpsc::unbounded_channel();
    let mut svc = Service {
        ctx: ctx.clone(),
        server: None,
        exited_tx,
        plan: None,
        error: None,
        generation: 0,
    };
    ctx.publish_state(&ServiceState::new(Phase::Applying, 0, now_ms()))
        .await
        .map_err(io)?;
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => svc.reconcile(&inputs).await,
                Some(Input::Command(Verb::Status | Verb::Get, request)) => {
                    reply_ok(&ctx, &request, serde_json::to_value(svc.facts()).unwrap_or_default()).await;
                }
                Some(Input::Command(Verb::Reload | Verb::Restart, request)) => {
                    if let Some((s, _)) = svc.server.take() {
                        s.stop().await;
                    }
                    svc.reconcile(&inputs).await;
                    reply_ok(&ctx, &request, serde_json::to_value(svc.facts()).unwrap_or_default()).await;
                }
                Some(Input::Command(other, request)) => {
                    let e = BusError::new(ErrorCode::Unavailable, format!("dhcp does not support `{other}`"));
                    reply_err(&ctx, &request, vec![e]).await;
                }
            },
            Some(()) = lease_events.recv() => {
                while lease_events.try_recv().is_ok() {}
                svc.publish().await;
            }
            Some(()) = exited.recv() => svc.publish().await,
        }
    }
    if let Some((s, _)) = svc.server.take() {
        s.stop().await;
    }
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    server: Option<(Supervised, String)>,
    exited_tx: mpsc::UnboundedSender<()>,
    plan: Option<DhcpPlan>,
    error: Option<BusError>,
    generation: u64,
}

impl Service {
    async fn reconcile(&mut self, inputs: &Inputs) {
        self.generation = inputs.latest.generation();
        let dhcp = match inputs.latest.section::<Dhcp>(Section::Dhcp) {
            None => return,
            Some(Err(e)) => {
                self.error = Some(e);
                self.publish().await;
                return;
            }
            Some(Ok((_, d))) => d,
        };
        let network = inputs
            .latest
            .section::<Network>(Section::Network)
            .and_then(Result::ok)
            .map(|(_, n)| n);
        let facts: Option<NetworkFacts> = inputs
            .latest
            .state(ServiceName::Network)
            .and_then(|s| serde_json::from_value(s.facts.clone()).ok());
        let plan = plan::plan(&dhcp, network.as_ref(), facts.as_ref(), &self.ctx.paths);
        self.error = None;
        if self.ctx.backend == Backend::Live {
            self.apply(&plan).await;
        }
        if let Err(e) = self.ctx.publish_plan(&plan).await {
            tracing::warn!(error = %e, "dhcp plan not published");
        }
        self.plan = Some(plan);
        self.publish().await;
    }

    async fn apply(&mut self, plan: &DhcpPlan) {
        let wanted = plan.process.clone().map(|p| (p, plan.conf.clone()));
        let current = self
            .server
            .as_ref()
            .map(|(s, conf)| (s.spec.clone(), conf.clone()));
        if wanted == current {
            return;
        }
        if let Some((s, _)) = self.server.take() {
            s.stop().await;
        }
        let Some((spec, conf)) = wanted else { return };
        let path = plan.conf_path.clone();
        let bytes = conf.clone().into_bytes();
        let written = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                sys::fs::ensure_dir(dir)?;
            }
            sys::fs::atomic_write(&path, &bytes, 0o644)
        })
        .await
        .map_err(io)
        .and_then(|r| r.map_err(io));
        if let Err(e) = written {
            self.error = Some(e);
            return;
        }
        self.server = Some((Supervised::start(spec, self.exited_tx.clone()), conf));
    }

    fn facts(&self) -> state::DhcpFacts {
        state::facts(
            self.plan.as_ref(),
            self.server.as_ref().map(|(s, _)| s.status()),
        )
    }

    async fn publish(&self) {
        let facts = self.facts();
        let st = state::state(&facts, self.generation, self.error.clone());
        if let Err(e) = self.ctx.publish_state(&st).await {
            tracing::warn!(error = %e, "dhcp state not published");
        }
    }
}
