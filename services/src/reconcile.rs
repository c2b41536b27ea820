//! The input side shared by every reconciling service (DESIGN.md §4): one subscription to the
//! config sections and the other services' states a service depends on, plus its own commands,
//! turned into a closed [`Input`] enum with the latest of everything kept in [`Latest`].
//!
//! Bursts coalesce: every message already queued is absorbed before [`Inputs::next`] returns
//! [`Input::Changed`], so a service applies the latest config once, never each step of a burst.
//! A service's loop is then:
//!
//! ```text
//! let mut inputs = Inputs::subscribe(&ctx, &[Section::Firewall], &[ServiceName::Network]).await?;
//! while let Some(input) = inputs.next().await {
//!     match input {
//!         Input::Changed => { /* desired from inputs.latest -> plan -> apply -> state */ }
//!         Input::Command(verb, request) => { /* answer with reply_ok / reply_err */ }
//!     }
//! }
//! ```

use std::collections::BTreeMap;

use broker::{Message, Subscription};
use bus_schema::sections::SectionPayload;
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, Reply, Request, Section, ServiceName, ServiceState, Topic, Verb,
};
use serde::de::DeserializeOwned;

use crate::ctx::ServiceCtx;

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
}

impl Inputs {
    /// Subscribe to `sections`, to the states of `states`, and to this service's commands.
    /// Retained payloads arrive first, so the first [`Input::Changed`] carries everything
    /// already published.
    pub async fn subscribe(
        ctx: &ServiceCtx,
        sections: &[Section],
        states: &[ServiceName],
    ) -> Result<Inputs, BusError> {
        let mut filters: Vec<String> = sections
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
        })
    }

    /// The next input; `None` at shutdown or when the bus is gone.
    pub async fn next(&mut self) -> Option<Input> {
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
