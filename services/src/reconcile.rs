//! The input side shared by every reconciling service (DESIGN.md §4): one subscription to the
//! config sections and the other services' states a service depends on, plus its own commands,
//! turned into a closed [`Input`] enum with the latest of everything kept in [`Latest`].
//!
//! Bursts coalesce: every message already queued is absorbed before [`Inputs::next`] returns
//! [`Input::Changed`], so a service applies the latest config once, never each step of a burst.
//! A service's loop is then:
//!
//! ```text
//! let mut inputs = Inputs::subscribe(&ctx, &[ServiceName::Network]).await?;
//! while let Some(input) = inputs.next().await {
//!     match input {
//!         Input::Changed => { /* desired from inputs.latest -> plan -> apply -> state */ }
//!         Input::Command(verb, request) => { /* answer with reply_ok / reply_err */ }
//!     }
//! }
//! ```

use std::collections::BTreeMap;

use broker::{Message, Subscription};
use bus_schema::sections::{CheckRequest, SectionPayload};
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, Phase, Reply, Request, Section, ServiceName, ServiceState, Topic, Verb,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ctx::{now_ms, Backend, ServiceCtx};

/// One input of a reconciling service.
#[derive(Debug)]
pub enum Input {
    /// A watched config section or service state changed; read [`Inputs::latest`].
    Changed,
    /// A command addressed to this service.
    Command(Verb, Request),
}

/// The latest config sections and service states seen.
#[derive(Debug, Default, Clone)]
pub struct Latest {
    sections: BTreeMap<Section, SectionPayload>,
    states: BTreeMap<ServiceName, ServiceState>,
    /// Payloads that did not decode, by topic (the last one wins).
    pub bad_payloads: BTreeMap<String, BusError>,
}

impl Latest {
    /// The typed section with its generation, once it has been published.
    pub fn section<T: DeserializeOwned>(
        &self,
        section: Section,
    ) -> Option<Result<(u64, T), BusError>> {
        let payload = self.sections.get(&section)?;
        Some(
            serde_json::from_value(payload.config.clone())
                .map(|config| (payload.generation, config))
                .map_err(|e| {
                    BusError::new(
                        ErrorCode::BadPayload,
                        format!("config section {section}: {e}"),
                    )
                    .with_field(section.to_string())
                }),
        )
    }

    /// The raw payload of a section.
    pub fn payload(&self, section: Section) -> Option<&SectionPayload> {
        self.sections.get(&section)
    }

    /// The latest state of another service.
    pub fn state(&self, service: ServiceName) -> Option<&ServiceState> {
        self.states.get(&service)
    }

    /// The highest generation among the sections seen (what a service reports as the
    /// generation it applied).
    pub fn generation(&self) -> u64 {
        self.sections
            .values()
            .map(|p| p.generation)
            .max()
            .unwrap_or(0)
    }

    /// This view with `candidates` in place of the published sections: the inputs of a dry run.
    pub fn with_sections(&self, candidates: &BTreeMap<Section, SectionPayload>) -> Latest {
        let mut view = self.clone();
        view.sections
            .extend(candidates.iter().map(|(s, p)| (*s, p.clone())));
        view
    }

    /// Whether every one of `sections` has been published at least once.
    pub fn has_all(&self, sections: &[Section]) -> bool {
        sections.iter().all(|s| self.sections.contains_key(s))
    }

    fn absorb(&mut self, msg: &Message) -> Option<Input> {
        match msg.control_topic()? {
            Topic::Config(section) => match msg.json::<SectionPayload>() {
                Ok(p) => {
                    self.bad_payloads.remove(&msg.topic);
                    let changed = self.sections.get(&section) != Some(&p);
                    self.sections.insert(section, p);
                    changed.then_some(Input::Changed)
                }
                Err(e) => {
                    tracing::warn!(topic = %msg.topic, error = %e, "bad config payload ignored");
                    self.bad_payloads.insert(msg.topic.clone(), e);
                    None
                }
            },
            Topic::State(service, None) => match msg.json::<ServiceState>() {
                Ok(s) => {
                    self.bad_payloads.remove(&msg.topic);
                    let changed = self.states.get(&service) != Some(&s);
                    self.states.insert(service, s);
                    changed.then_some(Input::Changed)
                }
                Err(e) => {
                    tracing::warn!(topic = %msg.topic, error = %e, "bad state payload ignored");
                    self.bad_payloads.insert(msg.topic.clone(), e);
                    None
                }
            },
            _ => None,
        }
    }
}

/// The inputs of one service run.
pub struct Inputs {
    ctx: ServiceCtx,
    sub: Subscription,
    pub latest: Latest,
    /// Commands that arrived while a burst of config was being absorbed.
    queued: std::collections::VecDeque<(Verb, Request)>,
    /// Whether the service answers `check` itself.
    checks: bool,
}

impl Inputs {
    /// Subscribe to the sections this service follows (`ServiceName::sections`, the one list
    /// in bus-schema), to the states of `states`, and to this service's commands. Retained
    /// payloads arrive first, so the first [`Input::Changed`] carries everything already
    /// published.
    pub async fn subscribe(ctx: &ServiceCtx, states: &[ServiceName]) -> Result<Inputs, BusError> {
        let mut filters: Vec<String> = ctx
            .name
            .sections()
            .iter()
            .map(|s| Topic::Config(*s).to_string())
            .collect();
        filters.extend(states.iter().map(|s| Topic::state(*s).to_string()));
        filters.push(filter::cmds(ctx.name));
        let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let sub =
            ctx.bus.subscribe(&refs).await.map_err(|e| {
                BusError::new(ErrorCode::Internal, format!("subscribe {refs:?}: {e}"))
            })?;
        Ok(Inputs {
            ctx: ctx.clone(),
            sub,
            latest: Latest::default(),
            queued: Default::default(),
            checks: false,
        })
    }

    /// The next input; `None` at shutdown or when the bus is gone.
    pub async fn next(&mut self) -> Option<Input> {
        loop {
            match self.next_input().await? {
                Input::Command(Verb::Check, request) if !self.checks => {
                    let e = BusError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the {} service does not check candidate configs (it validates them when it applies)",
                            self.ctx.name
                        ),
                    );
                    reply_err(&self.ctx, &request, vec![e]).await;
                }
                input => return Some(input),
            }
        }
    }

    /// This service answers `check` itself ([`check`]); without it, [`Inputs::next`] says the
    /// service does not check candidates.
    pub(crate) fn answering_checks(mut self) -> Inputs {
        self.checks = true;
        self
    }

    async fn next_input(&mut self) -> Option<Input> {
        if let Some((verb, request)) = self.queued.pop_front() {
            return Some(Input::Command(verb, request));
        }
        loop {
            let msg = tokio::select! {
                () = self.ctx.shutdown.cancelled() => return None,
                msg = self.sub.recv() => msg?,
            };
            if let Some(cmd) = self.command(&msg) {
                return Some(cmd);
            }
            if self.latest.absorb(&msg).is_some() {
                self.drain_ready();
                return Some(Input::Changed);
            }
        }
    }

    /// Absorb every message already queued (coalescing a burst into one change).
    fn drain_ready(&mut self) {
        loop {
            let ready = futures::FutureExt::now_or_never(self.sub.recv());
            let Some(Some(msg)) = ready else { return };
            if let Some(Input::Command(verb, request)) = self.command(&msg) {
                self.queued.push_back((verb, request));
            } else {
                self.latest.absorb(&msg);
            }
        }
    }

    fn command(&self, msg: &Message) -> Option<Input> {
        let Some(Topic::Cmd(service, verb)) = msg.control_topic() else {
            return None;
        };
        if service != self.ctx.name {
            return None;
        }
        match msg.json::<Request>() {
            Ok(request) => Some(Input::Command(verb, request)),
            Err(e) => {
                tracing::warn!(topic = %msg.topic, error = %e, "malformed request ignored");
                None
            }
        }
    }
}

/// Answer a request with a result.
pub async fn reply_ok(ctx: &ServiceCtx, request: &Request, result: serde_json::Value) {
    send(ctx, request, Reply::ok(request.id.clone(), result)).await;
}

/// Answer a request with every problem found.
pub async fn reply_err(ctx: &ServiceCtx, request: &Request, errors: Vec<BusError>) {
    send(ctx, request, Reply::err(request.id.clone(), errors)).await;
}

async fn send(ctx: &ServiceCtx, request: &Request, reply: Reply) {
    if let Err(e) = ctx.bus.reply(request, &reply).await {
        tracing::warn!(id = %request.id, error = %e, "reply not sent");
    }
}

/// What a reconciling service's state carries besides its facts, kept alike by every service:
/// the config generation last seen and the one last applied, the last error, and since when the
/// phase holds (`since_ms` moves only when the phase changes).
#[derive(Debug)]
pub struct Progress {
    /// The generation of the inputs last seen.
    pub generation: u64,
    /// The generation last applied (planned, in plan-only); `None` before the first.
    pub applied: Option<u64>,
    /// Why the last config was refused or its apply failed; the last good state stays applied.
    pub last_error: Option<BusError>,
    phase: Phase,
    since_ms: u64,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            generation: 0,
            applied: None,
            last_error: None,
            phase: Phase::Applying,
            since_ms: now_ms(),
        }
    }
}

impl Progress {
    /// `generation` is applied.
    pub fn applied(&mut self) {
        self.applied = Some(self.generation);
        self.last_error = None;
    }

    /// `generation` is applied, but only in part when there is a `problem` (the state then stays
    /// `Degraded` with it).
    pub fn applied_with(&mut self, service: ServiceName, problem: Option<BusError>) {
        self.applied = Some(self.generation);
        match problem {
            Some(e) => self.set_error(service, e, "applied in part"),
            None => self.last_error = None,
        }
    }

    /// `generation` was refused or failed to apply (logged once per distinct error, so a
    /// condition retried on a timer does not flood the log).
    pub fn failed(&mut self, service: ServiceName, e: BusError) {
        self.set_error(service, e, "not applied; the last good state stays");
    }

    fn set_error(&mut self, service: ServiceName, e: BusError, what: &str) {
        if self.last_error.as_ref() != Some(&e) {
            tracing::warn!(%service, error = %e, "{what}");
        }
        self.last_error = Some(e);
    }

    /// The state to publish. The phase: `Degraded` with the last error, else with `down` (a
    /// process of the service that is not running), else `Applying` before the first apply,
    /// else `Disabled` or `Applied`.
    pub fn state(
        &mut self,
        down: Option<BusError>,
        enabled: bool,
        facts: &impl Serialize,
    ) -> ServiceState {
        let (phase, error) = match (&self.last_error, down) {
            (Some(e), _) => (Phase::Degraded, Some(e.clone())),
            (None, Some(e)) => (Phase::Degraded, Some(e)),
            (None, None) if self.applied.is_none() => (Phase::Applying, None),
            (None, None) if !enabled => (Phase::Disabled, None),
            (None, None) => (Phase::Applied, None),
        };
        self.state_as(phase, error, facts)
    }

    /// The state to publish in a phase the service decides itself (e.g. `Applying` while it
    /// waits for another service).
    pub fn state_as(
        &mut self,
        phase: Phase,
        error: Option<BusError>,
        facts: &impl Serialize,
    ) -> ServiceState {
        if phase != self.phase {
            self.phase = phase;
            self.since_ms = now_ms();
        }
        let mut state = ServiceState::new(phase, self.generation, self.since_ms);
        state.applied = self.applied;
        state.last_error = error;
        state.facts = serde_json::to_value(facts).unwrap_or_default();
        state
    }
}

/// The output side shared by the services that turn one plan into files and programs (ssh,
/// wifi, system): each supplies how it plans, applies and reports; [`reconcile`] and [`check`]
/// do the rest the same way for all of them.
pub(crate) trait Reconciler {
    type Plan: Serialize;
    type Facts: Serialize;

    fn ctx(&self) -> &ServiceCtx;
    fn progress(&mut self) -> &mut Progress;
    /// The facts of the state (and of the `status` reply).
    fn facts(&self) -> Self::Facts;
    /// What the state says besides the facts: a program of the service that is down, and
    /// whether the service is enabled at all.
    fn health(facts: &Self::Facts) -> (Option<BusError>, bool);
    /// The plan for these inputs, without effects (reads of the system, such as looking for a
    /// device, are fine); `None` while an input is missing.
    async fn plan(&self, latest: &Latest) -> Option<Result<Self::Plan, BusError>>;
    /// Apply a plan to the system (`Backend::Live` only).
    async fn apply(&mut self, plan: &Self::Plan) -> Result<(), BusError>;
    /// Keep the plan that was applied (planned, in plan-only), for the facts.
    fn keep(&mut self, plan: Self::Plan);
}

/// Publish the service's state: its progress, its health and its facts.
pub(crate) async fn publish_state<R: Reconciler>(svc: &mut R) {
    let facts = svc.facts();
    let (down, enabled) = R::health(&facts);
    let state = svc.progress().state(down, enabled, &facts);
    if let Err(e) = svc.ctx().publish_state(&state).await {
        tracing::warn!(service = %svc.ctx().name, error = %e, "state not published");
    }
}

/// Answer the commands every [`Reconciler`] answers alike: `status` and `get` (the facts) and
/// `check` ([`check`]). Any other verb is handed back.
pub(crate) async fn answer<R: Reconciler>(
    svc: &R,
    latest: &Latest,
    verb: Verb,
    request: Request,
) -> Option<(Verb, Request)> {
    match verb {
        Verb::Status | Verb::Get => {
            let facts = serde_json::to_value(svc.facts()).unwrap_or_default();
            reply_ok(svc.ctx(), &request, facts).await;
        }
        Verb::Check => check(svc, latest, &request).await,
        _ => return Some((verb, request)),
    }
    None
}

/// One reconcile: plan the latest inputs; a refused config fails the generation (the last good
/// plan stays applied); else the plan is published, applied in the live backend, kept when that
/// worked, and the state published in every case.
pub(crate) async fn reconcile<R: Reconciler>(svc: &mut R, latest: &Latest) {
    let Some(plan) = svc.plan(latest).await else {
        return;
    };
    let name = svc.ctx().name;
    svc.progress().generation = latest.generation();
    match plan {
        Err(e) => svc.progress().failed(name, e),
        Ok(plan) => {
            if let Err(e) = svc.ctx().publish_plan(&plan).await {
                tracing::warn!(service = %name, error = %e, "plan not published");
            }
            let result = match svc.ctx().backend {
                Backend::PlanOnly => Ok(()),
                Backend::Live => svc.apply(&plan).await,
            };
            match result {
                Ok(()) => {
                    svc.keep(plan);
                    svc.progress().applied();
                }
                Err(e) => svc.progress().failed(name, e),
            }
        }
    }
    publish_state(svc).await;
}

/// `check` (a [`CheckRequest`]): the plan this service would make of the candidate sections,
/// or why it would refuse them. Nothing is applied or published but the reply.
pub(crate) async fn check<R: Reconciler>(svc: &R, latest: &Latest, request: &Request) {
    let candidates: CheckRequest = match serde_json::from_value(request.body.clone()) {
        Ok(c) => c,
        Err(e) => {
            let e = BusError::new(ErrorCode::BadPayload, format!("check body: {e}"));
            return reply_err(svc.ctx(), request, vec![e]).await;
        }
    };
    match svc.plan(&latest.with_sections(&candidates.sections)).await {
        None => {
            let e = BusError::new(
                ErrorCode::Unavailable,
                format!(
                    "the {} service has not seen all its inputs yet",
                    svc.ctx().name
                ),
            );
            reply_err(svc.ctx(), request, vec![e]).await;
        }
        Some(Ok(plan)) => {
            let plan = serde_json::to_value(&plan).unwrap_or_default();
            reply_ok(svc.ctx(), request, serde_json::json!({ "plan": plan })).await;
        }
        Some(Err(e)) => reply_err(svc.ctx(), request, vec![e]).await,
    }
}

/// Several problems as one error (the first one's code and field; every message), for a state's
/// `last_error`. `errors` must not be empty.
pub fn join_errors(mut errors: Vec<BusError>) -> BusError {
    let mut first = errors.remove(0);
    for e in errors {
        first.message.push_str("; ");
        first.message.push_str(&e.message);
    }
    first
}

/// Answer a verb the service does not offer; `offered` lists what it does.
pub async fn reply_unsupported(ctx: &ServiceCtx, request: &Request, verb: Verb, offered: &str) {
    let e = BusError::new(
        ErrorCode::Unavailable,
        format!("the {} service does not do `{verb}` ({offered})", ctx.name),
    );
    reply_err(ctx, request, vec![e]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(message: &str) -> BusError {
        BusError::new(ErrorCode::InvalidValue, message)
    }

    #[test]
    fn progress_phases_follow_applies_and_errors_and_since_moves_only_with_the_phase() {
        let mut p = Progress::default();
        let facts = serde_json::json!({"x": 1});
        let s = p.state(None, true, &facts);
        assert_eq!(
            (s.phase, s.applied, s.facts.clone()),
            (Phase::Applying, None, facts.clone())
        );
        let since = s.since_ms;

        p.generation = 3;
        p.applied();
        let s = p.state(None, true, &facts);
        assert_eq!(
            (s.phase, s.generation, s.applied),
            (Phase::Applied, 3, Some(3))
        );
        let applied_since = s.since_ms;
        assert!(applied_since >= since);

        // A refused generation: degraded with its error; the applied one stays 3.
        p.generation = 4;
        p.failed(ServiceName::Ssh, err("bad key"));
        let s = p.state(None, true, &facts);
        assert_eq!(
            (s.phase, s.generation, s.applied),
            (Phase::Degraded, 4, Some(3))
        );
        assert_eq!(s.last_error, Some(err("bad key")));
        let degraded_since = s.since_ms;
        // Published again in the same phase: `since_ms` does not move.
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert_eq!(p.state(None, true, &facts).since_ms, degraded_since);

        // Applied in part: applied moves, the state stays degraded with the problem.
        p.generation = 5;
        p.applied_with(ServiceName::Network, Some(err("port missing")));
        let s = p.state(None, true, &facts);
        assert_eq!((s.phase, s.applied), (Phase::Degraded, Some(5)));
        assert_eq!(s.last_error, Some(err("port missing")));

        // Fully applied, but a process of the service is down; then disabled.
        p.applied_with(ServiceName::Network, None);
        let down = err("sshd exited with code 1");
        let s = p.state(Some(down.clone()), true, &facts);
        assert_eq!((s.phase, s.last_error), (Phase::Degraded, Some(down)));
        assert_eq!(p.state(None, false, &facts).phase, Phase::Disabled);
    }

    #[test]
    fn joined_errors_keep_the_first_code_and_field_and_every_message() {
        let e = join_errors(vec![
            err("key 1: bad").with_field("IOHUBOS_SSH_PUBLIC_KEY"),
            BusError::new(ErrorCode::Io, "key 3: worse"),
        ]);
        assert_eq!(e.code, ErrorCode::InvalidValue);
        assert_eq!(e.field.as_deref(), Some("IOHUBOS_SSH_PUBLIC_KEY"));
        assert_eq!(e.message, "key 1: bad; key 3: worse");
    }
}
