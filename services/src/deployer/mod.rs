//! The deployer service: app zips (SPEC §3.15, §4.4), validated before anything is written and
//! installed atomically (§11.1 item 2).
//!
//! Inputs: the `deployer` config section; `iohub/event/watcher/deploy_dropped` (a complete
//! `deploy/*.zip`); at start (and when the section turns `enabled` on) every zip already in
//! `deploy/`; `iohub/cmd/deployer/deploy` with `{"path": "<file under deploy/ or runtime/>"}`
//! (the admin API's upload); `iohub/cmd/deployer/status`.
//!
//! One zip: [`plan::validate`] on its central directory; refused -> moved to
//! `deploy/rejected/<zip>` with `<zip>.reason.txt` (atomic) and a `BusError` on
//! `iohub/event/deployer/deploy_rejected`; accepted -> [`apply::install`] (staging, swap), the
//! zip removed, then each installed app that is not disabled is (re)started by a request to the
//! apps service (`iohub/cmd/apps/restart`), and `iohub/event/deployer/deployed` says what
//! happened. Zips are handled one at a time, in name order at start. A zip already gone (the
//! watcher's start-up event and our own scan race for it) is skipped.
//!
//! Backends: plan-only validates and publishes the plan; nothing is installed or moved.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use std::path::{Path, PathBuf};

use bus_schema::events::FileEvent;
use bus_schema::sections::Deployer as DeployerSection;
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Request, Section, ServiceName, ServiceState, Topic, Verb,
};
use serde::Deserialize;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use crate::shared::files::blocking;
use crate::supervisor::ServiceSpec;
use config::DeployerConfig;
use state::{Facts, Outcome, Plan, HISTORY};

/// The longest report text kept in the retained plan.
const PLAN_REPORT_MAX: usize = 64 << 10;

/// The deployer service.
pub fn spec() -> ServiceSpec {
    ServiceSpec::new(ServiceName::Deployer, run)
}

/// Body of `iohub/cmd/deployer/deploy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    /// A zip under the root's `deploy/` or `runtime/` (relative to the root, or absolute).
    path: String,
}

/// One run of the deployer.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut drops = ctx
        .bus
        .subscribe(&[&Topic::Event(ServiceName::Watcher, EventKind::DeployDropped).to_string()])
        .await?;
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;
    let root = ctx.paths.root.clone();
    let recovered = if ctx.backend == Backend::Live {
        blocking(move || apply::recover(&root)).await?
    } else {
        Vec::new()
    };
    let mut d = Deployer {
        config: None,
        facts: Facts {
            enabled: false,
            limits: DeployerConfig::default().limits,
            recovered,
            installed_count: 0,
            rejected_count: 0,
            history: Vec::new(),
        },
        ctx: ctx.clone(),
        generation: 0,
    };
    d.publish().await;
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => return Ok(()),
                Some(Input::Changed) => {
                    let was = d.config.as_ref().is_some_and(|c| c.enabled);
                    d.generation = inputs.latest.generation();
                    match inputs.latest.section::<DeployerSection>(Section::Deployer) {
                        Some(Ok((_, section))) => d.config = Some(DeployerConfig::from_section(&section)),
                        Some(Err(e)) => tracing::warn!(error = %e, "deployer section ignored"),
                        None => {}
                    }
                    d.publish().await;
                    if !was && d.enabled() {
                        d.scan().await?;
                    }
                }
                Some(Input::Command(verb, request)) => d.command(verb, request).await?,
            },
            msg = drops.recv() => {
                let Some(msg) = msg else {
                    ctx.shutdown.cancelled().await;
                    return Ok(());
                };
                match msg.json::<FileEvent>() {
                    Ok(ev) if !ev.removed && d.enabled() => {
                        let path = ctx.paths.root(&ev.path);
                        d.deploy(&path).await?;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "bad deploy_dropped payload"),
                }
            }
        }
    }
}

struct Deployer {
    ctx: ServiceCtx,
    config: Option<DeployerConfig>,
    facts: Facts,
    generation: u64,
}

impl Deployer {
    fn enabled(&self) -> bool {
        self.config.as_ref().is_some_and(|c| c.enabled)
    }

    fn config(&self) -> DeployerConfig {
        self.config.clone().unwrap_or_default()
    }

    /// Every zip already in `deploy/`, in name order.
    async fn scan(&mut self) -> Result<(), BusError> {
        let dir = self.ctx.paths.root("deploy");
        let zips = blocking(move || {
            let mut zips: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.is_file()
                                && p.extension().is_some_and(|x| x == "zip")
                                && !p
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                        })
                        .collect()
                })
                .unwrap_or_default();
            zips.sort();
            zips
        })
        .await?;
        for zip in zips {
            self.deploy(&zip).await?;
        }
        Ok(())
    }

    async fn command(&mut self, verb: Verb, request: Request) -> Result<(), BusError> {
        match verb {
            Verb::Deploy => {
                let body: DeployBody = match serde_json::from_value(request.body.clone()) {
                    Ok(b) => b,
                    Err(e) => {
                        let err = BusError::new(ErrorCode::BadPayload, format!("deploy: {e}"));
                        reply_err(&self.ctx, &request, vec![err]).await;
                        return Ok(());
                    }
                };
                let path = match self.upload_path(&body.path) {
                    Ok(p) => p,
                    Err(e) => {
                        reply_err(&self.ctx, &request, vec![e]).await;
                        return Ok(());
                    }
                };
                if !path.is_file() {
                    let err =
                        BusError::new(ErrorCode::NotFound, format!("{}: no such file", body.path))
                            .with_field("path");
                    reply_err(&self.ctx, &request, vec![err]).await;
                    return Ok(());
                }
                match self.deploy(&path).await? {
                    Some(o) if o.result != "rejected" => {
                        reply_ok(&self.ctx, &request, json(&o)).await;
                    }
                    Some(o) => {
                        let errors = if o.problems.is_empty() {
                            vec![BusError::new(
                                ErrorCode::InvalidValue,
                                "the zip was refused",
                            )]
                        } else {
                            o.problems
                                .iter()
                                .map(|p| {
                                    let e = BusError::new(p.code, p.message.clone());
                                    match &p.entry {
                                        Some(entry) => e.with_field(entry.clone()),
                                        None => e,
                                    }
                                })
                                .collect()
                        };
                        reply_err(&self.ctx, &request, errors).await;
                    }
                    None => {
                        let err =
                            BusError::new(ErrorCode::NotFound, format!("{}: gone", body.path));
                        reply_err(&self.ctx, &request, vec![err]).await;
                    }
                }
            }
            Verb::Status | Verb::Get => {
                reply_ok(&self.ctx, &request, json(&self.facts)).await;
            }
            other => {
                let err = BusError::new(
                    ErrorCode::BadTopic,
                    format!("the deployer has no `{other}` command (deploy, status)"),
                );
                reply_err(&self.ctx, &request, vec![err]).await;
            }
        }
        Ok(())
    }

    /// An upload path must be a file under `deploy/` or `runtime/` of the root.
    fn upload_path(&self, path: &str) -> Result<PathBuf, BusError> {
        let root = &self.ctx.paths.root;
        let p = Path::new(path);
        let rel = if p.is_absolute() {
            p.strip_prefix(root).map(Path::to_path_buf).ok()
        } else {
            Some(p.to_path_buf())
        };
        let ok = rel.as_ref().is_some_and(|rel| {
            let parts: Vec<_> = rel.components().collect();
            parts.len() >= 2
                && parts.iter().all(|c| matches!(c, std::path::Component::Normal(_)))
                && matches!(parts[0], std::path::Component::Normal(n) if n == "deploy" || n == "runtime")
        });
        match rel {
            Some(rel) if ok => Ok(root.join(rel)),
            _ => Err(BusError::new(
                ErrorCode::Forbidden,
                format!("{path}: uploads must be files under deploy/ or runtime/ of the root"),
            )
            .with_field("path")),
        }
    }

    /// Validate and install one zip; `None` when it is gone already.
    async fn deploy(&mut self, zip: &Path) -> Result<Option<Outcome>, BusError> {
        let rel = zip
            .strip_prefix(&self.ctx.paths.root)
            .unwrap_or(zip)
            .to_string_lossy()
            .into_owned();
        if !zip.is_file() {
            tracing::debug!(zip = %rel, "zip already handled");
            return Ok(None);
        }
        let config = self.config();
        let limits = config.limits;
        let z = zip.to_path_buf();
        let checked = blocking(move || {
            apply::read_entries(&z).map(|entries| plan::validate(&entries, &limits))
        })
        .await?;
        let outcome = match checked {
            Err(e) => self.reject(zip, &rel, vec![unreadable(e)]).await?,
            Ok(Err(problems)) => self.reject(zip, &rel, problems).await?,
            Ok(Ok(manifest)) => {
                let report = plan::render(&Ok(manifest.clone()));
                self.publish_plan(&rel, report).await;
                if self.ctx.backend == Backend::PlanOnly {
                    Outcome {
                        zip: rel.clone(),
                        at_ms: now_ms(),
                        result: "planned",
                        installed: Vec::new(),
                        restarts: Vec::new(),
                        rejected_to: None,
                        problems: Vec::new(),
                    }
                } else {
                    let (root, z) = (self.ctx.paths.root.clone(), zip.to_path_buf());
                    let m = manifest.clone();
                    let installed =
                        blocking(move || apply::install(&root, &z, &m, &limits)).await?;
                    match installed {
                        Err(e) => self.reject(zip, &rel, vec![unreadable(e)]).await?,
                        Ok(installed) => {
                            let z = zip.to_path_buf();
                            if let Err(e) = blocking(move || apply::remove_zip(&z)).await? {
                                tracing::warn!(zip = %rel, error = %e, "installed zip not removed");
                            }
                            self.facts.installed_count += 1;
                            let restarts = self.restart(&installed, config.restart_timeout).await;
                            Outcome {
                                zip: rel.clone(),
                                at_ms: now_ms(),
                                result: "installed",
                                installed,
                                restarts,
                                rejected_to: None,
                                problems: Vec::new(),
                            }
                        }
                    }
                }
            }
        };
        if outcome.result == "installed" {
            tracing::info!(zip = %rel, apps = ?outcome.installed.iter().map(|i| &i.app).collect::<Vec<_>>(), "deployed");
            if let Err(e) = self.ctx.event(EventKind::Deployed, &outcome).await {
                tracing::warn!(error = %e, "deployed event not sent");
            }
        }
        self.facts.history.push(outcome.clone());
        if self.facts.history.len() > HISTORY {
            self.facts.history.remove(0);
        }
        self.publish().await;
        Ok(Some(outcome))
    }

    /// Ask the apps service to (re)start each installed app that is not disabled.
    async fn restart(
        &self,
        installed: &[apply::Installed],
        timeout: std::time::Duration,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for app in installed {
            if app.disabled {
                out.push((app.app.clone(), "disabled: not started".to_string()));
                continue;
            }
            let body = serde_json::json!({ "app": app.app });
            let answer = match self
                .ctx
                .bus
                .request(ServiceName::Apps, Verb::Restart, body, timeout)
                .await
            {
                Ok(reply) if reply.ok => "ok".to_string(),
                Ok(reply) => reply
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
                Err(e) => format!("no answer from the apps service: {e}"),
            };
            out.push((app.app.clone(), answer));
        }
        out
    }

    async fn reject(
        &mut self,
        zip: &Path,
        rel: &str,
        problems: Vec<plan::Problem>,
    ) -> Result<Outcome, BusError> {
        let report = plan::render(&Err(problems.clone()));
        self.publish_plan(rel, report.clone()).await;
        let summary = problems
            .iter()
            .take(5)
            .map(|p| match &p.entry {
                Some(e) => format!("`{e}` {}", p.message),
                None => p.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let err = BusError::new(
            problems.first().map_or(ErrorCode::InvalidValue, |p| p.code),
            format!("deploy zip {rel} refused: {summary}"),
        )
        .with_field(rel.to_string());
        tracing::warn!(zip = %rel, error = %err, "deploy zip refused");
        let mut rejected_to = None;
        if self.ctx.backend == Backend::Live {
            let (root, z) = (self.ctx.paths.root.clone(), zip.to_path_buf());
            let text = format!("{rel} was refused by iohubd's deployer.\n\n{report}");
            match blocking(move || apply::reject(&root, &z, &text)).await? {
                Ok(to) => rejected_to = Some(to),
                Err(e) => tracing::error!(zip = %rel, error = %e, "refused zip not moved"),
            }
            self.facts.rejected_count += 1;
        }
        if let Err(e) = self.ctx.event(EventKind::DeployRejected, &err).await {
            tracing::warn!(error = %e, "deploy_rejected event not sent");
        }
        Ok(Outcome {
            zip: rel.to_string(),
            at_ms: now_ms(),
            result: "rejected",
            installed: Vec::new(),
            restarts: Vec::new(),
            rejected_to,
            problems,
        })
    }

    async fn publish_plan(&self, zip: &str, mut report: String) {
        if report.len() > PLAN_REPORT_MAX {
            let mut cut = PLAN_REPORT_MAX;
            while !report.is_char_boundary(cut) {
                cut -= 1;
            }
            report.truncate(cut);
            report.push_str("\n...\n");
        }
        let plan = Plan {
            zip: zip.to_string(),
            report,
            manifest: None,
        };
        if let Err(e) = self.ctx.publish_plan(&plan).await {
            tracing::warn!(error = %e, "deployer plan not published");
        }
    }

    async fn publish(&mut self) {
        self.facts.enabled = self.enabled();
        let phase = match &self.config {
            None => Phase::Applying,
            Some(c) if !c.enabled => Phase::Disabled,
            Some(_) => {
                if self
                    .facts
                    .history
                    .last()
                    .is_some_and(|o| o.result == "rejected")
                {
                    Phase::Degraded
                } else {
                    Phase::Applied
                }
            }
        };
        let mut st = ServiceState::new(phase, self.generation, now_ms());
        st.applied = Some(self.generation);
        if let Some(o) = self.facts.history.last().filter(|o| o.result == "rejected") {
            st.last_error = Some(
                BusError::new(
                    ErrorCode::InvalidValue,
                    format!("deploy zip {} refused", o.zip),
                )
                .with_field(o.zip.clone()),
            );
        }
        st.facts = json(&self.facts);
        if let Err(e) = self.ctx.publish_state(&st).await {
            tracing::warn!(error = %e, "deployer state not published");
        }
    }
}

/// A zip that could not be read or installed, as the reason to reject it.
fn unreadable(e: apply::InstallError) -> plan::Problem {
    plan::Problem {
        code: ErrorCode::InvalidValue,
        entry: None,
        message: e.to_string(),
    }
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests;
