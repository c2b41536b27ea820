//! The admin API service: an HTTP API compatible with the IOhubOS admin API (SPEC.md §7.6), plus
//! config, states, events, uploads and an OpenAPI document ([`routes`], [`openapi`]).
//!
//! - Inputs: `iohub/config/admin_api` (enabled, port, compose policy; the token is a secret and
//!   not on the bus),
//!   `iohub/event/watcher/config_file_changed` (the token may change without the section
//!   changing: one strong token for another), `iohub/state/#` (kept in memory for the state
//!   routes and to tell a missing service at once), and `iohub/cmd/admin_api/status`.
//! - The token is read from the root's files with the config service's loader, read-only
//!   ([`config::load_token`]), whenever the section's generation changes or a variable file is
//!   edited; only its SHA-256 and its weakness are kept ([`auth::TokenRule`]).
//! - The listener binds `0.0.0.0:<IOHUBOS_ADMIN_API_SERVER_PORT>` like the original (exposure is
//!   the firewall's job), in both backends: it is the daemon's own interface, like the control
//!   listener; what it asks for is applied or only planned by the owning services.
//! - Handlers ([`v1`], [`v2`]) parse a request into a typed command, send it to the owning service
//!   and map the reply; they hold no state and cause no effects ([`http`]).
//! - Publishes `iohub/plan/admin_api` ([`plan`]) and `iohub/state/admin_api` ([`state`]).

pub mod apply;
pub mod auth;
pub mod compose;
pub mod config;
pub mod http;
pub mod openapi;
pub mod plan;
pub mod routes;
pub mod state;
pub mod uploads;
pub mod v1;
pub mod v2;

use std::sync::atomic::Ordering;

use broker::Message;
use bus_schema::sections::AdminApi;
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, EventKind, Request, Section, ServiceName, ServiceState, Topic, Verb,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::ctx::{now_ms, ServiceCtx};
use crate::reconcile::{reply_err, reply_ok, Input, Inputs};
use apply::Listener;
use auth::TokenRule;
use config::Settings;
use http::{write, Api};
use plan::ListenerStep;

/// Run the admin API service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let api = Api::new(ctx.bus.clone(), ctx.paths.clone(), CancellationToken::new());
    let cache = tokio::spawn(state_cache(
        api.clone(),
        ctx.bus.subscribe(&[filter::STATE]).await?,
        ctx.shutdown.child_token(),
    ));
    let _cache = AbortOnDrop(cache);
    let file_events = Topic::Event(ServiceName::Watcher, EventKind::ConfigFileChanged).to_string();
    let mut file_events = ctx.bus.subscribe(&[&file_events]).await?;
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?;
    let mut svc = Service {
        api,
        listener: None,
        settings: None,
        token_generation: None,
        error: None,
        state: None,
    };
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => {
                    let section = inputs.latest.section::<AdminApi>(Section::AdminApi);
                    svc.reconcile(&ctx, section).await?;
                }
                Some(Input::Command(verb, request)) => svc.command(&ctx, verb, &request).await,
            },
            msg = file_events.recv() => {
                if msg.is_none() {
                    break;
                }
                svc.reload_token(&ctx).await;
                svc.publish_state(&ctx).await?;
            }
        }
    }
    if let Some(listener) = svc.listener.take() {
        listener.close().await;
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keep [`Api::states`] equal to the retained `iohub/state/#` tree.
async fn state_cache(api: Api, mut sub: broker::Subscription, stop: CancellationToken) {
    loop {
        let msg: Message = tokio::select! {
            () = stop.cancelled() => return,
            msg = sub.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
        };
        let Some(Topic::State(service, item)) = msg.control_topic() else {
            continue;
        };
        let key = Api::state_key(service, item.as_deref());
        if msg.payload.is_empty() {
            write(&api.states).remove(&key);
            continue;
        }
        match serde_json::from_slice(&msg.payload) {
            Ok(value) => {
                write(&api.states).insert(key, value);
            }
            Err(e) => tracing::debug!(topic = %msg.topic, error = %e, "state payload not JSON"),
        }
    }
}

/// What one run of the service remembers.
struct Service {
    api: Api,
    listener: Option<Listener>,
    settings: Option<Settings>,
    /// Generation of the section the token was last loaded for.
    token_generation: Option<u64>,
    error: Option<BusError>,
    state: Option<ServiceState>,
}

impl Service {
    /// Load the token from the files; on failure the previous rule stays.
    async fn reload_token(&mut self, ctx: &ServiceCtx) {
        match config::load_token(&ctx.paths).await {
            Ok(token) => {
                let rule = TokenRule::new(&token);
                *write(&self.api.token) = rule;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin API: cannot read the token; keeping the last one");
                self.error = Some(e);
            }
        }
    }

    async fn reconcile(
        &mut self,
        ctx: &ServiceCtx,
        section: Option<Result<(u64, AdminApi), BusError>>,
    ) -> Result<(), BusError> {
        let settings = match section {
            None => return Ok(()),
            Some(Ok((generation, section))) => Settings::from_section(generation, &section),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin API: bad config section; keeping the last one");
                self.error = Some(e);
                return self.publish_state(ctx).await;
            }
        };
        self.error = None;
        *write(&self.api.compose_policy) = settings.compose_policy;
        if self.token_generation != Some(settings.generation) {
            self.reload_token(ctx).await;
            self.token_generation = Some(settings.generation);
        }
        let weakness = http::read(&self.api.token).weakness.clone();
        let running = self.listener.as_ref().map(|l| l.port);
        let plan = plan::plan(running, &settings, weakness.as_deref());
        if let Err(e) = ctx.publish_plan(&plan).await {
            tracing::warn!(error = %e, "admin API: plan not published");
        }
        match plan.listener {
            ListenerStep::Off | ListenerStep::Keep { .. } => {}
            ListenerStep::Close { .. } => {
                if let Some(l) = self.listener.take() {
                    l.close().await;
                }
            }
            ListenerStep::Bind { port } | ListenerStep::Rebind { to: port, .. } => {
                // The new port first: if it cannot be bound the old listener keeps serving.
                match apply::bind(&self.api, port).await {
                    Ok(new) => {
                        if let Some(old) = self.listener.replace(new) {
                            old.close().await;
                        }
                    }
                    Err(e) => {
                        let e = BusError::new(
                            ErrorCode::Io,
                            format!("cannot listen on 0.0.0.0:{port}: {e}"),
                        )
                        .with_field("IOHUBOS_ADMIN_API_SERVER_PORT");
                        tracing::warn!(error = %e, "admin API");
                        self.error = Some(e);
                    }
                }
            }
        }
        self.settings = Some(settings);
        self.publish_state(ctx).await
    }

    fn facts(&self) -> state::Facts {
        let rule = http::read(&self.api.token);
        state::Facts {
            listening: self.listener.as_ref().map(|l| l.port),
            token_ok: rule.weakness.is_none(),
            token_reason: rule.weakness.clone(),
            compose_policy: *http::read(&self.api.compose_policy),
        }
    }

    async fn publish_state(&mut self, ctx: &ServiceCtx) -> Result<(), BusError> {
        let Some(settings) = &self.settings else {
            return Ok(());
        };
        let facts = self.facts();
        let applied = self.error.is_none().then_some(settings.generation);
        let mut next = state::state(
            settings.enabled,
            settings.generation,
            applied,
            &facts,
            self.error.as_ref(),
            now_ms(),
        );
        if let Some(prev) = &self.state {
            if prev.phase == next.phase {
                next.since_ms = prev.since_ms;
            }
        }
        if self.state.as_ref() != Some(&next) {
            ctx.publish_state(&next).await?;
            self.state = Some(next);
        }
        Ok(())
    }

    async fn command(&mut self, ctx: &ServiceCtx, verb: Verb, request: &Request) {
        match verb {
            Verb::Status => {
                let stats = &self.api.stats;
                let backoff_clients = self.api.backoff.lock().map(|b| b.len()).unwrap_or_default();
                let result = json!({
                    "facts": self.facts(),
                    "requests": stats.requests.load(Ordering::Relaxed),
                    "unauthorized": stats.unauthorized.load(Ordering::Relaxed),
                    "throttled": stats.throttled.load(Ordering::Relaxed),
                    "weak_token_refusals": stats.weak_token_refusals.load(Ordering::Relaxed),
                    "backoff_clients": backoff_clients,
                    "event_streams": http::MAX_EVENT_STREAMS - self.api.event_streams.available_permits(),
                });
                reply_ok(ctx, request, result).await;
            }
            other => {
                let e = BusError::new(
                    ErrorCode::BadTopic,
                    format!("the admin_api service answers `status`, not `{other}`"),
                );
                reply_err(ctx, request, vec![e]).await;
            }
        }
    }
}
