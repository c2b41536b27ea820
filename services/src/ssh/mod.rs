//! The ssh service (SPEC §3.9, §3.10, §11.7): `IOHUBOS_OPENSSH_ENABLED` starts and stops an
//! sshd that the service supervises; `IOHUBOS_SSH_PUBLIC_KEY` becomes an `authorized_keys`
//! file; each box generates its own host key at its first start and keeps it.
//!
//! Loop: `iohub/config/ssh` -> [`config::SshDesired`] (every bad key line refused, with the
//! variable named; the last good state stays) -> [`plan::plan`] (pure, published on
//! `iohub/plan/ssh`) -> in `Backend::Live` [`apply`] (dirs, files, host key, `sshd -t`, then the
//! sshd process through [`crate::sys::child::Supervised`]) -> `iohub/state/ssh` ([`state::SshFacts`]).
//! sshd is restarted only when its config file or its host key changed (new keys are read by
//! sshd at each login); it is restarted with backoff when it dies and stopped when disabled or
//! at daemon shutdown. Commands: `status` (the facts), `restart` (restart sshd).
//!
//! [`crate::sys::child`] (the supervised process) is also used by the `wifi`, `network` and `dhcp` services.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;
#[cfg(test)]
pub(crate) mod testenv;

use bus_schema::sections::Ssh;
use bus_schema::{BusError, ErrorCode, Phase, Request, Section, ServiceState, Verb};
use tokio::sync::mpsc;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use crate::sys::child::Supervised;
use config::SshDesired;
use plan::{SshLayout, SshPlan};
use state::SshFacts;

/// Run the ssh service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[Section::Ssh], &[]).await?;
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut svc = Service::new(ctx.clone(), changed_tx);
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => svc.reconcile(inputs.latest.section::<Ssh>(Section::Ssh)).await,
                Some(Input::Command(verb, request)) => svc.command(verb, &request).await,
            },
            Some(()) = changed_rx.recv() => svc.publish_state().await,
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
    generation: u64,
    applied_generation: Option<u64>,
    last_error: Option<BusError>,
    host_key_generated: bool,
    phase: Phase,
    since_ms: u64,
}

impl Service {
    fn new(ctx: ServiceCtx, changed: mpsc::UnboundedSender<()>) -> Service {
        Service {
            layout: SshLayout::new(&ctx.paths),
            ctx,
            changed,
            child: None,
            applied: None,
            generation: 0,
            applied_generation: None,
            last_error: None,
            host_key_generated: false,
            phase: Phase::Applying,
            since_ms: now_ms(),
        }
    }

    async fn reconcile(&mut self, section: Option<Result<(u64, Ssh), BusError>>) {
        let Some(section) = section else { return };
        let desired = section.and_then(|(generation, s)| {
            self.generation = generation;
            SshDesired::from_section(&s).map_err(|mut errors| {
                let first = errors.remove(0);
                if errors.is_empty() {
                    first
                } else {
                    let more: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                    BusError::new(
                        first.code,
                        format!("{}; {}", first.message, more.join("; ")),
                    )
                    .with_field(config::KEYS_VAR)
                }
            })
        });
        let desired = match desired {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "ssh config refused; keeping the last good one");
                self.last_error = Some(e);
                return self.publish_state().await;
            }
        };
        let plan = plan::plan(&desired, &self.layout);
        if let Err(e) = self.ctx.publish_plan(&plan).await {
            tracing::warn!(error = %e, "ssh plan not published");
        }
        let result = match self.ctx.backend {
            Backend::PlanOnly => Ok(()),
            Backend::Live => self.apply(&plan).await,
        };
        match result {
            Ok(()) => {
                self.applied = Some(plan);
                self.applied_generation = Some(self.generation);
                self.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ssh apply failed");
                self.last_error = Some(e);
            }
        }
        self.publish_state().await;
    }

    async fn apply(&mut self, plan: &SshPlan) -> Result<(), BusError> {
        apply::ensure_dirs(&plan.dirs).await?;
        let mut restart = false;
        if plan.enabled {
            let generated = apply::ensure_host_key(&plan.host_key).await?;
            self.host_key_generated |= generated;
            restart |= generated;
        }
        for f in &plan.files {
            let changed = apply::write_planned(f).await?;
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

    async fn restart(&mut self, argv: &[String]) {
        if let Some(old) = self.child.take() {
            old.stop().await;
        }
        if let Some((program, args)) = argv.split_first() {
            let cmd = crate::sys::cmd::Cmd::new(program).args(args);
            self.child = Some(Supervised::start(cmd, Vec::new(), self.changed.clone()));
        }
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

    async fn publish_state(&mut self) {
        let facts = self.facts();
        let sshd_down = facts.sshd.as_ref().is_some_and(|s| !s.running);
        let (phase, error) = if let Some(e) = &self.last_error {
            (Phase::Degraded, Some(e.clone()))
        } else if sshd_down {
            let s = facts.sshd.as_ref();
            let exit = s.and_then(|s| s.last_exit.as_ref());
            let message = match (s.and_then(|s| s.spawn_error.clone()), exit) {
                (Some(e), _) => e,
                (None, Some(x)) => format!(
                    "sshd exited (code {:?}, signal {:?}); restarting: {}",
                    x.code,
                    x.signal,
                    x.output_tail.trim()
                ),
                (None, None) => "sshd is not running".into(),
            };
            (
                Phase::Degraded,
                Some(BusError::new(ErrorCode::Unavailable, message)),
            )
        } else if self.applied.is_none() {
            (Phase::Applying, None)
        } else if !facts.enabled {
            (Phase::Disabled, None)
        } else {
            (Phase::Applied, None)
        };
        if phase != self.phase {
            self.phase = phase;
            self.since_ms = now_ms();
        }
        let mut state = ServiceState::new(phase, self.generation, self.since_ms);
        state.applied = self.applied_generation;
        state.last_error = error;
        state.facts = serde_json::to_value(&facts).unwrap_or_default();
        if let Err(e) = self.ctx.publish_state(&state).await {
            tracing::warn!(error = %e, "ssh state not published");
        }
    }

    async fn command(&mut self, verb: Verb, request: &Request) {
        match verb {
            Verb::Status | Verb::Get => {
                let facts = serde_json::to_value(self.facts()).unwrap_or_default();
                reply_ok(&self.ctx, request, facts).await;
            }
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
                let e = BusError::new(
                    ErrorCode::Unavailable,
                    format!("the ssh service does not do `{other}` (status; restart with --apply)"),
                );
                reply_err(&self.ctx, request, vec![e]).await;
            }
        }
    }
}
