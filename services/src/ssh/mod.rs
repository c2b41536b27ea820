//! The ssh service (SPEC §3.9, §3.10, §11.7): `IOHUBOS_OPENSSH_ENABLED` starts and stops an
//! sshd that the service supervises; `IOHUBOS_SSH_PUBLIC_KEY` becomes an `authorized_keys`
//! file; each box generates its own host key at its first start and keeps it.
//!
//! Loop: `iohub/config/ssh` -> [`config::SshDesired`] (every bad key line refused, with the
//! variable named; the last good state stays) -> [`plan::plan`] (pure, published on
//! `iohub/plan/ssh`) -> in `Backend::Live` [`apply`] (dirs, files, host key, `sshd -t`, then the
//! sshd process through [`sys::child::Supervised`]) -> `iohub/state/ssh` ([`state::SshFacts`]).
//! sshd is restarted only when its config file or its host key changed (new keys are read by
//! sshd at each login); it is restarted with backoff when it dies and stopped when disabled or
//! at daemon shutdown. Commands: `status` (the facts), `restart` (restart sshd).
//!
//! [`sys::child`] (the supervised process) is also used by the `wifi`, `network` and `dhcp` services.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use bus_schema::sections::Ssh;
use bus_schema::{BusError, ErrorCode, Request, Section, Verb};
use tokio::sync::mpsc;

use crate::ctx::{Backend, ServiceCtx};
use crate::reconcile::{
    answer, join_errors, publish_state, reconcile, reply_err, reply_ok, reply_unsupported, Input,
    Inputs, Latest, Progress, Reconciler,
};
use config::SshDesired;
use plan::{SshLayout, SshPlan};
use state::SshFacts;
use sys::child::Supervised;

/// Run the ssh service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?.answering_checks();
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut svc = Service::new(ctx.clone(), changed_tx);
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => reconcile(&mut svc, &inputs.latest).await,
                Some(Input::Command(verb, request)) => {
                    if let Some((verb, request)) = answer(&svc, &inputs.latest, verb, request).await {
                        svc.command(verb, &request).await;
                    }
                }
            },
            Some(()) = changed_rx.recv() => publish_state(&mut svc).await,
        }
    }
    if let Some(child) = svc.child.take() {
        child.stop().await;
    }
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    layout: SshLayout,
    changed: mpsc::UnboundedSender<()>,
    child: Option<Supervised>,
    /// The last plan applied (or published, in plan-only).
    applied: Option<SshPlan>,
    progress: Progress,
    host_key_generated: bool,
}

impl Service {
    fn new(ctx: ServiceCtx, changed: mpsc::UnboundedSender<()>) -> Service {
        Service {
            layout: SshLayout::new(&ctx.paths),
            ctx,
            changed,
            child: None,
            applied: None,
            progress: Progress::default(),
            host_key_generated: false,
        }
    }

    async fn restart(&mut self, argv: &[String]) {
        if let Some(old) = self.child.take() {
            old.stop().await;
        }
        if let Some((program, args)) = argv.split_first() {
            let cmd = sys::cmd::Cmd::new(program).args(args);
            self.child = Some(Supervised::start(cmd, Vec::new(), self.changed.clone()));
        }
    }

    async fn command(&mut self, verb: Verb, request: &Request) {
        match verb {
            Verb::Restart if self.ctx.backend == Backend::Live => {
                let argv = self.applied.as_ref().and_then(|p| p.run.clone());
                match argv {
                    Some(argv) => {
                        self.restart(&argv).await;
                        reply_ok(&self.ctx, request, serde_json::json!({"restarted": true})).await;
                    }
                    None => {
                        let e = BusError::new(ErrorCode::Unavailable, "sshd is not enabled");
                        reply_err(&self.ctx, request, vec![e]).await;
                    }
                }
            }
            other => {
                reply_unsupported(
                    &self.ctx,
                    request,
                    other,
                    "status, check; restart with --apply",
                )
                .await
            }
        }
    }
}

impl Reconciler for Service {
    type Facts = SshFacts;
    type Plan = SshPlan;

    fn ctx(&self) -> &ServiceCtx {
        &self.ctx
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn facts(&self) -> SshFacts {
        let plan = self.applied.as_ref();
        SshFacts {
            backend: self.ctx.backend,
            enabled: plan.is_some_and(|p| p.enabled),
            port: config::SSH_PORT,
            authorized_keys: plan
                .and_then(|p| p.file(&self.layout.authorized_keys))
                .map(|f| f.content.lines().filter(|l| !l.starts_with('#')).count())
                .unwrap_or(0),
            config_file: self.layout.config.clone(),
            authorized_keys_file: self.layout.authorized_keys.clone(),
            host_key_file: self.layout.host_key.clone(),
            host_key_fingerprint: apply::fingerprint(&self.layout.host_key),
            host_key_generated: self.host_key_generated,
            sshd: self.child.as_ref().map(Supervised::status),
            pid: self.child.as_ref().and_then(Supervised::pid),
        }
    }

    fn health(facts: &SshFacts) -> (Option<BusError>, bool) {
        (facts.sshd.as_ref().and_then(|s| s.down()), facts.enabled)
    }

    async fn plan(&self, latest: &Latest) -> Option<Result<SshPlan, BusError>> {
        let section = latest.section::<Ssh>(Section::Ssh)?;
        Some(section.and_then(|(_, s)| {
            let desired = SshDesired::from_section(&s).map_err(join_errors)?;
            Ok(plan::plan(&desired, &self.layout))
        }))
    }

    async fn apply(&mut self, plan: &SshPlan) -> Result<(), BusError> {
        crate::shared::files::ensure_dirs(&plan.dirs).await?;
        let mut restart = false;
        if plan.enabled {
            let generated = apply::ensure_host_key(&plan.host_key).await?;
            self.host_key_generated |= generated;
            restart |= generated;
        }
        for f in &plan.files {
            let changed = crate::shared::files::write_planned(f).await?;
            restart |= changed && f.path == self.layout.config;
        }
        match &plan.run {
            Some(argv) => {
                let same = self
                    .child
                    .as_ref()
                    .is_some_and(|c| c.status().argv == *argv);
                if restart || !same {
                    apply::check(&plan.check, "the generated sshd_config").await?;
                    self.restart(argv).await;
                }
            }
            None => {
                if let Some(child) = self.child.take() {
                    child.stop().await;
                }
            }
        }
        Ok(())
    }

    fn keep(&mut self, plan: SshPlan) {
        self.applied = Some(plan);
    }
}
