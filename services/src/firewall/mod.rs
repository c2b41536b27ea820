//! The firewall service (SPEC §3.6, §6, §11.1 items 5-6): the whole nftables ruleset of the box
//! in one table iohub owns (`inet iohub`), replaced in one atomic transaction on every change of
//! its inputs: the `firewall`, `forwards`, `ssh`, `admin_api`, `registry`, `global_mqtt`,
//! `dhcp` and `network` config sections, and the network service's facts (the real interface
//! names).
//!
//! Loop: inputs -> [`config::Desired`] -> [`plan::plan`] (pure) -> publish the plan -> load it
//! ([`apply`], live backend only) -> publish the state. Invariants:
//! - one transaction per change; a refused transaction changes nothing in the kernel (the
//!   previous ruleset stays byte-identical) and the state says why (`degraded`, `last_error`);
//! - an unchanged ruleset (same SHA-256 as the one loaded last) is not loaded again, unless
//!   `iohub/cmd/firewall/reload` asks for it;
//! - only `inet iohub` is touched: Docker's tables and anyone else's survive every load;
//! - switching router-to-internet off also deletes the conntrack entries of LAN-origin flows;
//! - with Docker in the same namespace, every reconcile re-checks iohub's jump in Docker's
//!   `DOCKER-USER` (added once, only when that chain exists; see [`apply::hook_docker`]), so
//!   Docker's `FORWARD DROP` policy does not override our forward accepts; Docker's own chains
//!   are never changed.
//!
//! Commands: `reload` (force a load), `status`/`get` (the facts).

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use bus_schema::{BusError, ErrorCode, Phase, Request, ServiceName, ServiceState, Verb};

use crate::ctx::{Backend, ServiceCtx};
use crate::reconcile::{join_errors, reply_ok, reply_unsupported, Input, Inputs, Latest, Progress};
use config::{Desired, NotReady};
use state::{Facts, PlanPayload};

/// Debug builds only: a forward whose source port equals this variable's value makes the
/// transaction carry an element nft refuses. It exists to prove, with the real binary, that a
/// refused load leaves the previous ruleset untouched.
pub const TEST_FAULT_ENV: &str = "IOHUB_FIREWALL_TEST_REFUSE_PORT";

/// One run of the firewall service.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[ServiceName::Network]).await?;
    let mut fw = Firewall {
        ctx: ctx.clone(),
        applied_sha256: None,
        applied_router_to_internet: None,
        loads: 0,
        last_load_ms: None,
        conntrack_cut: None,
        docker_user: None,
        facts: None,
        progress: Progress::default(),
    };
    let starting = fw.progress.state(None, true, &serde_json::Value::Null);
    fw.publish(&starting).await?;
    while let Some(input) = inputs.next().await {
        match input {
            Input::Changed => fw.reconcile(&inputs.latest, false).await?,
            Input::Command(Verb::Reload, req) => {
                fw.reconcile(&inputs.latest, true).await?;
                fw.answer(&req).await;
            }
            Input::Command(Verb::Status | Verb::Get, req) => fw.answer(&req).await,
            Input::Command(verb, req) => {
                reply_unsupported(&ctx, &req, verb, "reload, status, get").await
            }
        }
    }
    Ok(())
}

struct Firewall {
    ctx: ServiceCtx,
    /// SHA-256 of the transaction last loaded successfully.
    applied_sha256: Option<String>,
    /// router-to-internet in the ruleset last loaded.
    applied_router_to_internet: Option<bool>,
    loads: u64,
    last_load_ms: Option<u64>,
    conntrack_cut: Option<state::ConntrackCut>,
    /// What the last DOCKER-USER hook did.
    docker_user: Option<String>,
    facts: Option<Facts>,
    progress: Progress,
}

impl Firewall {
    async fn publish(&mut self, state: &ServiceState) -> Result<(), BusError> {
        self.ctx.publish_state(state).await.map_err(BusError::from)
    }

    async fn answer(&self, req: &Request) {
        let facts = serde_json::to_value(&self.facts).unwrap_or_default();
        reply_ok(&self.ctx, req, facts).await;
    }

    async fn reconcile(&mut self, latest: &Latest, force: bool) -> Result<(), BusError> {
        self.progress.generation = latest.generation();
        let desired = match Desired::from_latest(latest, &self.ctx.endpoints.wireguard_interface) {
            Ok(d) => d,
            Err(NotReady::Waiting(missing)) => {
                let facts = serde_json::json!({ "waiting_for": missing });
                let st = self.progress.state_as(Phase::Applying, None, &facts);
                return self.publish(&st).await;
            }
            Err(NotReady::Bad(errors)) => {
                self.progress.failed(self.ctx.name, join_errors(errors));
                let st = self.progress.state(None, true, &self.facts);
                return self.publish(&st).await;
            }
        };
        let mut plan = plan::plan(&desired);
        test_fault(&mut plan, &desired);
        self.ctx
            .publish_plan(&PlanPayload::new(self.ctx.backend, &desired, &plan))
            .await?;

        let mut facts = Facts::new(self.ctx.backend, &desired, &plan);
        let mut error = None;
        if self.ctx.backend == Backend::Live {
            let unchanged = self.applied_sha256.as_deref() == Some(&plan.summary.sha256);
            if force || !unchanged {
                match apply::load(&plan.json).await {
                    Ok(ms) => {
                        self.loads += 1;
                        self.last_load_ms = Some(ms);
                        self.applied_sha256 = Some(plan.summary.sha256.clone());
                        let was_on = self.applied_router_to_internet == Some(true);
                        self.applied_router_to_internet =
                            Some(desired.managed && desired.router_to_internet);
                        if was_on && desired.managed && !desired.router_to_internet {
                            if let Some(cidr) = desired.lan_cidr {
                                self.conntrack_cut = Some(apply::cut_lan_flows(cidr).await);
                            }
                        }
                        tracing::info!(ms, sha256 = %plan.summary.sha256, rules = plan.summary.rules, "firewall ruleset loaded");
                    }
                    Err(e) => {
                        error = Some(
                            BusError::new(ErrorCode::Io, e.to_string()).with_field("firewall"),
                        );
                    }
                }
            }
        }
        if self.ctx.backend == Backend::Live && (error.is_none() || !desired.managed) {
            self.docker_user = Some(apply::hook_docker(desired.managed).await);
        }
        facts.docker_user = self.docker_user.clone();
        facts.applied_sha256 = self.applied_sha256.clone();
        facts.loads = self.loads;
        facts.last_load_ms = self.last_load_ms;
        facts.conntrack_cut = self.conntrack_cut.clone();
        match error {
            // The ruleset loaded before stays; so does the generation it was applied for.
            Some(e) => self.progress.failed(self.ctx.name, e),
            // Loaded, without the forwards or lines it refused (degraded with the first one).
            None => {
                let refused = plan.refused.first().cloned().map(BusError::from);
                let partly =
                    refused.or_else(|| desired.rejected_lines.first().cloned().map(BusError::from));
                self.progress.applied_with(self.ctx.name, partly);
            }
        }
        let st = self.progress.state(None, desired.managed, &facts);
        self.facts = Some(facts);
        self.publish(&st).await
    }
}

/// See [`TEST_FAULT_ENV`]. Compiled out of release builds.
fn test_fault(plan: &mut plan::Plan, desired: &Desired) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(port) = std::env::var(TEST_FAULT_ENV)
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    else {
        return;
    };
    if !desired.forwards.iter().any(|f| f.src.start == port) {
        return;
    }
    // `tcp dport 99999`: nft refuses the value (out of range), so the whole transaction fails.
    let bad = serde_json::json!({"add": {"rule": {"family": "inet", "table": plan::TABLE, "chain": "input",
        "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 99999}}, {"accept": null}]}}});
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&plan.json) {
        if let Some(list) = v["nftables"].as_array_mut() {
            list.push(bad);
        }
        plan.json = v.to_string();
    }
}
