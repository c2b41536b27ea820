//! The system service (SPEC §3.8): the timezone, and the box's identity facts.
//!
//! Loop: `iohub/config/system` (+ `iohub/config/network` for the host name, which the network
//! service writes: this service only publishes it) -> [`config::SystemDesired`] (the timezone
//! checked against the tz database; a bad name is refused with `IOHUBOS_TIMEZONE` named and
//! the last good timezone stays) -> [`plan::plan`] (pure, on `iohub/plan/system`) -> in
//! `Backend::Live` [`apply`] (`<system root>/etc/localtime` link and `/etc/timezone`) ->
//! `iohub/state/system` ([`state::SystemFacts`]). Command: `status`.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use std::path::PathBuf;

use bus_schema::sections::{Network, System};
use bus_schema::{BusError, ErrorCode, Section};

use crate::ctx::ServiceCtx;
use crate::reconcile::{
    answer, reconcile, reply_unsupported, Input, Inputs, Latest, Progress, Reconciler,
};
use config::SystemDesired;
use plan::{SystemLayout, SystemPlan};
use state::SystemFacts;

/// Run the system service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?.answering_checks();
    let mut svc = Service {
        layout: SystemLayout::new(&ctx.paths),
        zoneinfo: config::zoneinfo_dir(&ctx.paths),
        ctx,
        applied: None,
        changed: Vec::new(),
        progress: Progress::default(),
    };
    while let Some(input) = inputs.next().await {
        match input {
            Input::Changed => reconcile(&mut svc, &inputs.latest).await,
            Input::Command(verb, request) => {
                if let Some((verb, request)) = answer(&svc, &inputs.latest, verb, request).await {
                    reply_unsupported(&svc.ctx, &request, verb, "status, check").await;
                }
            }
        }
    }
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    layout: SystemLayout,
    zoneinfo: PathBuf,
    applied: Option<SystemPlan>,
    changed: Vec<PathBuf>,
    progress: Progress,
}

impl Reconciler for Service {
    type Plan = SystemPlan;
    type Facts = SystemFacts;

    fn ctx(&self) -> &ServiceCtx {
        &self.ctx
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn facts(&self) -> SystemFacts {
        let plan = self.applied.as_ref();
        SystemFacts {
            backend: self.ctx.backend,
            timezone: plan.and_then(|p| p.timezone.as_ref().map(|t| t.name.clone())),
            zoneinfo: self.zoneinfo.clone(),
            changed: self.changed.clone(),
            hostname: plan.and_then(|p| p.hostname.clone()),
            hostname_owner: "network",
            version: plan.map(|p| p.version.clone()).unwrap_or_default(),
        }
    }

    fn health(_: &SystemFacts) -> (Option<BusError>, bool) {
        (None, true)
    }

    async fn plan(&self, latest: &Latest) -> Option<Result<SystemPlan, BusError>> {
        let system = latest.section::<System>(Section::System)?;
        let network = match latest.section::<Network>(Section::Network) {
            Some(Ok((_, n))) => Some(n),
            _ => None,
        };
        let zoneinfo = self.zoneinfo.clone();
        let desired = match system {
            Ok((_, system)) => tokio::task::spawn_blocking(move || {
                SystemDesired::from_sections(&system, network.as_ref(), &zoneinfo)
            })
            .await
            .unwrap_or_else(|e| Err(BusError::new(ErrorCode::Internal, e.to_string()))),
            Err(e) => Err(e),
        };
        Some(desired.map(|d| plan::plan(&d, &self.layout)))
    }

    async fn apply(&mut self, plan: &SystemPlan) -> Result<(), BusError> {
        self.changed = match &plan.timezone {
            Some(tz) => apply::apply_timezone(tz).await?,
            None => Vec::new(),
        };
        Ok(())
    }

    fn keep(&mut self, plan: SystemPlan) {
        self.applied = Some(plan);
    }
}
