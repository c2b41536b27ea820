//! The config service: loads the layered variable files and the forward/route lists, validates
//! them, publishes one retained `iohub/config/<section>` per section with its own generation,
//! reloads on file edits, and writes `set` requests back into the owning files.
//!
//! - Publishes: every section (a [`SectionPayload`]), then `iohub/event/config/config_changed`
//!   (sections with a new generation) and `config_rejected` (new errors), then
//!   `iohub/state/config` last (`applied`, or `degraded` with every error; facts:
//!   [`ConfigFacts`]). Whoever sees a new state has seen the reload's events.
//! - Reloads on `iohub/event/watcher/config_file_changed` at once, unless the last reload was
//!   less than [`RELOAD_DEBOUNCE`] ago: then once, that long after it (a burst costs at most two
//!   reloads), and on `iohub/cmd/config/reload`; reloads never overlap.
//! - Commands (`iohub/cmd/config/<verb>`, a `Request`; the reply lists every problem):
//!   - `set` `{"vars": {"IOHUBOS_X": "value" | null}}`: every name and value is checked, then the
//!     edit is dry-run through a full load and validation; any problem refuses it and nothing
//!     is written. Otherwise the owning files ([`set`]) are rewritten atomically, the service
//!     reloads and answers `{"written": [files], "generations": {section: n}}`;
//!   - `get` `{"var": "IOHUBOS_X"}` -> `{"var", "value", "source"}` (a secret's value is
//!     `{"set": bool}`; `source` is the file whose assignment wins, or `default`), or
//!     `{"section": "network"}` -> the section's published payload;
//!   - `reload` -> `{"generations"}`, or the errors when the files have problems;
//!   - `set` with `"confirm_secs": N` is commit-confirm ([`confirm`]): applied at once, and
//!     undone after N seconds unless `confirm` `{"token"}` (the token is in the `set` reply and
//!     in the state's `pending_confirm`) arrives first; the undo is published as
//!     `iohub/event/config/config_reverted` and kept in the facts' `last_revert`.
//!
//!   A payload that is not a request, or a body of the wrong shape, gets a `bad_payload` error
//!   (when it says where to reply) and a log line.
//!
//! This file is the event loop and the command handlers; the pure parts are
//! [`crate::vars::layers`] (layering, renames, defaults, shared with the readers of the files),
//! [`build`] (validation, which sections keep their last good value), [`generations`]
//! (per-section counters, what to publish), [`set`] (request checks, owning file) and [`state`]
//! (state and event payloads); [`check`] asks the services a `set` concerns, [`disk`] does the
//! service's own writes.

pub mod build;
pub mod check;
pub mod confirm;
pub mod disk;
pub mod generations;

pub mod set;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use broker::Message;
use bus_schema::envvars::Vars;
use bus_schema::sections::{self, SectionPayload};
use bus_schema::topic::filter;
use bus_schema::{
    BusError, ErrorCode, EventKind, Phase, Reply, Request, Section, ServiceName, ServiceState,
    Topic, Verb, PAYLOAD_VERSION,
};
use serde::Deserialize;
use serde_json::json;

use crate::ctx::{now_ms, ServiceCtx};
use crate::vars::layers::Loaded;
use generations::Generations;
use set::SetBody;
pub use state::{ConfigChanged, ConfigFacts, ConfigRejected, RejectSource};

/// File events arriving within this window after a reload are served by one more reload at its
/// end.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(50);

/// Body of `get`: exactly one of `var` and `section`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBody {
    #[serde(default)]
    var: Option<String>,
    #[serde(default)]
    section: Option<Section>,
}

/// Run the config service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut svc = Service::start(&ctx).await;
    // Subscribe before the first load: an edit made while loading is not missed.
    let file_events = Topic::Event(ServiceName::Watcher, EventKind::ConfigFileChanged).to_string();
    let cmds = filter::cmds(ServiceName::Config);
    let mut sub = ctx.bus.subscribe(&[&cmds, &file_events]).await?;
    svc.reload(&ctx).await?;

    // The first file event reloads at once; events within RELOAD_DEBOUNCE of a reload are served
    // by one reload at the window's end. Reloads never overlap (this loop is the only caller).
    let mut reload_at: Option<tokio::time::Instant> = None;
    let mut last_reload = tokio::time::Instant::now();
    loop {
        let revert_at = svc.pending.as_ref().map(|p| {
            let left = p.confirm.deadline_ms.saturating_sub(now_ms());
            tokio::time::Instant::now() + Duration::from_millis(left)
        });
        let msg = tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = sleep_until(revert_at) => {
                svc.revert(&ctx).await?;
                continue;
            }
            _ = sleep_until(reload_at) => {
                reload_at = None;
                last_reload = tokio::time::Instant::now();
                svc.reload(&ctx).await?;
                continue;
            }
            msg = sub.recv() => msg,
        };
        let Some(msg) = msg else { return Ok(()) };
        match msg.control_topic() {
            Some(Topic::Event(..)) => {
                let earliest = last_reload + RELOAD_DEBOUNCE;
                reload_at.get_or_insert_with(|| earliest.max(tokio::time::Instant::now()));
            }
            Some(Topic::Cmd(_, verb)) => svc.command(&ctx, verb, &msg).await?,
            _ => {}
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How many problems of one reload are logged one by one.
const MAX_LOGGED_ERRORS: usize = 20;

/// What one run of the service remembers.
struct Service {
    generations: Generations,
    /// Sections published in this run (the retained store starts empty with the broker).
    published: BTreeMap<Section, SectionPayload>,
    /// Variables of the last good build: the values withheld sections fall back to.
    last_good: Option<Vars>,
    /// The last load, for `get`.
    loaded: Loaded,
    /// Sections the last load withheld: `get` answers their variables from `last_good`.
    withheld: BTreeSet<Section>,
    /// Errors of the last reload (a new rejection event only when they change).
    errors: Vec<BusError>,
    /// Problems found at start (an unreadable ledger), reported as warnings.
    startup_warnings: Vec<BusError>,
    state: Option<ServiceState>,
    /// A commit-confirm `set` waiting for its confirmation.
    pending: Option<confirm::Pending>,
    last_revert: Option<sections::ConfigRevert>,
}

impl Service {
    async fn start(ctx: &ServiceCtx) -> Service {
        let mut startup_warnings = Vec::new();
        let ledger = disk::read_ledger(&ctx.paths).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "config generations ledger unreadable; starting from 1");
            startup_warnings.push(e);
            generations::Ledger::default()
        });
        let pending = confirm::load(&ctx.paths).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "pending config confirm unreadable; ignored");
            startup_warnings.push(e);
            None
        });
        if let Some(p) = &pending {
            tracing::warn!(token = %p.confirm.token, "a config change from an earlier run awaits its confirmation");
        }
        Service {
            pending,
            last_revert: None,
            generations: Generations::new(ledger),
            published: BTreeMap::new(),
            last_good: None,
            loaded: Loaded::default(),
            withheld: BTreeSet::new(),
            errors: Vec::new(),
            startup_warnings,
            state: None,
        }
    }

    /// Load the files and publish what changed; returns the errors found.
    async fn reload(&mut self, ctx: &ServiceCtx) -> Result<Vec<BusError>, BusError> {
        let loaded = crate::vars::load(&ctx.paths, BTreeMap::new()).await?;
        let built = build::build(&loaded, self.last_good.as_ref());
        let mut errors = built.errors.clone();

        let (payloads, changed) = self.generations.plan(&built, &self.published);
        if !changed.is_empty() {
            // Persist before publishing: a number once seen on the bus is never reused.
            if let Err(e) = disk::write_ledger(&ctx.paths, self.generations.ledger()).await {
                tracing::warn!(error = %e, "cannot persist config generations");
                errors.push(e);
            }
        }
        for payload in payloads {
            ctx.bus
                .publish_json(&Topic::Config(payload.section), &payload)
                .await?;
            self.published.insert(payload.section, payload);
        }
        if built.config.is_some() {
            self.last_good = Some(built.good_vars.clone());
        }
        // Events first, the state last: whoever sees the new state has seen this reload's events.
        let withheld: Vec<Section> = built.withheld.iter().copied().collect();
        if !changed.is_empty() {
            let event = ConfigChanged {
                version: PAYLOAD_VERSION,
                sections: changed,
                generations: self.generations.current(),
            };
            ctx.event(EventKind::ConfigChanged, &event).await?;
        }
        if !errors.is_empty() && errors != self.errors {
            // One line per problem up to a bound, then one summary: a file of many bad lines must
            // not flood the log (the whole list is in the event and the state).
            for e in errors.iter().take(MAX_LOGGED_ERRORS) {
                tracing::warn!(error = %e, "config input refused");
            }
            if errors.len() > MAX_LOGGED_ERRORS {
                let more = errors.len() - MAX_LOGGED_ERRORS;
                tracing::warn!(
                    more,
                    "config input refused: {more} more problems (see iohub/state/config)"
                );
            }
            let event = ConfigRejected {
                version: PAYLOAD_VERSION,
                source: RejectSource::Files,
                errors: errors.clone(),
                withheld: withheld.clone(),
            };
            ctx.event(EventKind::ConfigRejected, &event).await?;
        }
        self.publish_state(ctx, &loaded, &errors, &withheld).await?;
        self.withheld = withheld.iter().copied().collect();
        self.loaded = loaded;
        self.errors = errors.clone();
        Ok(errors)
    }

    async fn publish_state(
        &mut self,
        ctx: &ServiceCtx,
        loaded: &Loaded,
        errors: &[BusError],
        withheld: &[Section],
    ) -> Result<(), BusError> {
        let generations = self.generations.current();
        let generation = generations.values().sum();
        let phase = if errors.is_empty() {
            Phase::Applied
        } else {
            Phase::Degraded
        };
        let since = match &self.state {
            Some(prev) if prev.phase == phase => prev.since_ms,
            _ => now_ms(),
        };
        let mut facts = state::facts(
            loaded,
            &self.startup_warnings,
            errors,
            withheld,
            generations,
        );
        facts.pending_confirm = self.pending.as_ref().map(|p| p.confirm.clone());
        facts.last_revert = self.last_revert.clone();
        let mut state = ServiceState::new(phase, generation, since);
        state.applied = Some(generation);
        state.last_error = errors.first().cloned();
        state.restarts = ctx.restarts;
        state.facts = serde_json::to_value(&facts)
            .map_err(|e| BusError::new(ErrorCode::Internal, format!("config facts: {e}")))?;
        if self.state.as_ref() != Some(&state) {
            ctx.publish_state(&state).await?;
            self.state = Some(state);
        }
        Ok(())
    }

    async fn command(
        &mut self,
        ctx: &ServiceCtx,
        verb: Verb,
        msg: &Message,
    ) -> Result<(), BusError> {
        let req: Request = match msg.json() {
            Ok(req) => req,
            Err(e) => {
                tracing::warn!(topic = %msg.topic, error = %e, "bad config command payload");
                // Answer anyway when the payload says where to.
                let salvaged = serde_json::from_slice::<serde_json::Value>(&msg.payload).ok();
                let field = |name: &str| {
                    salvaged
                        .as_ref()
                        .and_then(|v| v.get(name))
                        .and_then(|v| v.as_str())
                        .map(String::from)
                };
                let req = Request {
                    id: field("id").unwrap_or_default(),
                    reply_to: field("reply_to"),
                    body: json!(null),
                };
                let reply = Reply::err(req.id.clone(), vec![e]);
                return ctx.bus.reply(&req, &reply).await.map_err(BusError::from);
            }
        };
        let reply = match verb {
            Verb::Set => self.set(ctx, &req).await?,
            Verb::Confirm => self.confirm(ctx, &req).await?,
            Verb::Get => self.get(&req),
            Verb::Reload => {
                let errors = self.reload(ctx).await?;
                if errors.is_empty() {
                    Reply::ok(
                        req.id.clone(),
                        json!({ "generations": self.generations.current() }),
                    )
                } else {
                    Reply::err(req.id.clone(), errors)
                }
            }
            other => Reply::err(
                req.id.clone(),
                vec![BusError::new(
                    ErrorCode::BadTopic,
                    format!("the config service has no `{other}` command"),
                )],
            ),
        };
        ctx.bus.reply(&req, &reply).await.map_err(BusError::from)
    }

    /// `set`: check every variable, dry-run the edit through a full load and validation, then
    /// write the owning files and reload. Nothing is written when anything is wrong.
    async fn set(&mut self, ctx: &ServiceCtx, req: &Request) -> Result<Reply, BusError> {
        let body: SetBody = match serde_json::from_value(req.body.clone()) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "bad config set body");
                return Ok(bad_payload(
                    req,
                    format!(
                        "set body: {e}; expected {{\"vars\": {{\"IOHUBOS_X\": \"value\" | null}}}}"
                    ),
                ));
            }
        };
        let mut errors = set::check(&body);
        if let Some(secs) = body.confirm_secs {
            if let Err(e) = confirm::check_timeout(secs) {
                errors.push(e);
            }
        }
        if let Some(p) = &self.pending {
            errors.push(
                BusError::new(
                    ErrorCode::Conflict,
                    format!(
                        "a change awaits its confirmation (token {}, vars {:?}): confirm it or let it revert first",
                        p.confirm.token, p.confirm.vars
                    ),
                )
                .with_field("confirm"),
            );
        }
        let mut edits = Vec::new();
        let mut checked = check::Checked::default();
        if errors.is_empty() {
            let current = crate::vars::load(&ctx.paths, BTreeMap::new()).await?;
            edits = set::plan(&current, &body);
            let overrides = edits
                .iter()
                .map(|e| (e.rel.clone(), e.text.clone()))
                .collect();
            let dry_run = crate::vars::load(&ctx.paths, overrides).await?;
            let built = build::build(&dry_run, self.last_good.as_ref());
            errors.extend(set::blocking(built.errors));
            errors.extend(set::not_effective(&dry_run, &body));
            // A set on a missing or empty envvars would write a file of the set variables alone
            // and put every other at its default: refused, like the reload that found it so.
            for e in set::broken_envvars(&current) {
                if !errors.contains(&e) {
                    errors.push(e);
                }
            }
            if let (true, Some(config)) = (errors.is_empty(), &built.config) {
                let candidates = check::candidates(config, &self.published);
                checked = check::with_followers(&ctx.bus, candidates).await;
                errors.append(&mut checked.refused);
            }
        }
        if !errors.is_empty() {
            let event = ConfigRejected {
                version: PAYLOAD_VERSION,
                source: RejectSource::Set,
                errors: errors.clone(),
                withheld: Vec::new(),
            };
            ctx.event(EventKind::ConfigRejected, &event).await?;
            return Ok(Reply::err(req.id.clone(), errors));
        }

        if body.dry_run {
            let files: Vec<&str> = edits.iter().map(|e| e.rel.as_str()).collect();
            let result = json!({ "dry_run": true, "files": files, "checked": checked });
            return Ok(Reply::ok(req.id.clone(), result));
        }
        if let Some(secs) = body.confirm_secs {
            let rels: Vec<String> = edits.iter().map(|e| e.rel.clone()).collect();
            let pending = confirm::Pending {
                confirm: sections::PendingConfirm {
                    token: confirm::token(),
                    vars: body.vars.keys().cloned().collect(),
                    files: rels.clone(),
                    timeout_secs: secs,
                    deadline_ms: now_ms() + u64::from(secs) * 1000,
                },
                snapshots: confirm::snapshot(&ctx.paths, &rels).await?,
            };
            // Persisted before anything is written: a crash in between still reverts.
            confirm::save(&ctx.paths, &pending).await?;
            self.pending = Some(pending);
        }
        let mut written = Vec::new();
        let mut failed = None;
        for edit in &edits {
            match disk::write_var_file(&ctx.paths.root, &edit.rel, &edit.text, edit.secret).await {
                Ok(()) => written.push(edit.rel.clone()),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.reload(ctx).await?;
        Ok(match failed {
            None => {
                let mut result =
                    json!({ "written": written, "generations": self.generations.current() });
                if body.confirm_secs.is_some() {
                    result["confirm"] = json!(self.pending.as_ref().map(|p| &p.confirm));
                }
                Reply::ok(req.id.clone(), result)
            }
            Some(e) => {
                let mut e = e;
                e.message = format!("{} (written before the failure: {written:?})", e.message);
                Reply::err(req.id.clone(), vec![e])
            }
        })
    }

    /// `confirm` `{"token"}`: keep the pending change.
    async fn confirm(&mut self, ctx: &ServiceCtx, req: &Request) -> Result<Reply, BusError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfirmBody {
            token: String,
        }
        let body: ConfirmBody = match serde_json::from_value(req.body.clone()) {
            Ok(body) => body,
            Err(e) => {
                return Ok(bad_payload(
                    req,
                    format!("confirm body: {e}; expected {{\"token\": \"...\"}}"),
                ))
            }
        };
        match &self.pending {
            Some(p) if p.confirm.token == body.token => {
                confirm::clear(&ctx.paths).await?;
                let confirmed = self.pending.take().map(|p| p.confirm);
                tracing::info!(token = %body.token, "config change confirmed");
                self.reload(ctx).await?;
                Ok(Reply::ok(req.id.clone(), json!({ "confirmed": confirmed })))
            }
            other => {
                let message = match other {
                    Some(p) => format!(
                        "token {} does not match the pending change ({})",
                        body.token, p.confirm.token
                    ),
                    None => format!(
                        "no change awaits confirmation (token {}): it was confirmed or reverted",
                        body.token
                    ),
                };
                let e = BusError::new(ErrorCode::NotFound, message).with_field("token");
                Ok(Reply::err(req.id.clone(), vec![e]))
            }
        }
    }

    /// The pending change was not confirmed in time: restore its files and reload.
    async fn revert(&mut self, ctx: &ServiceCtx) -> Result<(), BusError> {
        let Some(pending) = self.pending.clone() else {
            return Ok(());
        };
        let reason = format!(
            "not confirmed within {} s (deadline {} ms): restored {:?}",
            pending.confirm.timeout_secs, pending.confirm.deadline_ms, pending.confirm.files
        );
        tracing::warn!(token = %pending.confirm.token, %reason, "reverting an unconfirmed config change");
        if let Err(e) = confirm::restore(&ctx.paths, &pending).await {
            // Keep it pending: the timer fires again on the next loop and retries.
            tracing::error!(error = %e, "config revert failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        confirm::clear(&ctx.paths).await?;
        self.pending = None;
        let revert = pending.revert(reason, now_ms());
        self.last_revert = Some(revert.clone());
        ctx.event(EventKind::ConfigReverted, &revert).await?;
        self.reload(ctx).await?;
        Ok(())
    }

    /// `get`: a variable's value (secrets only say whether they are set) or a section payload.
    fn get(&self, req: &Request) -> Reply {
        let body: GetBody = match serde_json::from_value(req.body.clone()) {
            Ok(body) => body,
            Err(e) => return bad_payload(req, format!("get body: {e}")),
        };
        match (body.var, body.section) {
            (Some(name), None) => {
                let Some(spec) = sections::spec(&name) else {
                    let e = BusError::new(ErrorCode::UnknownVariable, format!("unknown {name}"));
                    return Reply::err(req.id.clone(), vec![e.with_field(name)]);
                };
                // A withheld section is published with its last good value: `get` says the same
                // as the bus, not what the refused files would give.
                let (value, source) = if self.withheld.contains(&spec.section) {
                    let last = self.last_good.as_ref().and_then(|v| v.get(&name));
                    (last.cloned().unwrap_or_default(), "last_good")
                } else {
                    // The file whose assignment wins, or "default".
                    let value = self.loaded.vars.get(&name).cloned().unwrap_or_default();
                    (value, self.loaded.owner(&name).unwrap_or("default"))
                };
                let value = match spec.secret {
                    true => json!({ "set": !value.is_empty() }),
                    false => json!(value),
                };
                let result = json!({ "var": name, "value": value, "source": source });
                Reply::ok(req.id.clone(), result)
            }
            (None, Some(section)) => match self.published.get(&section) {
                Some(payload) => Reply::ok(req.id.clone(), json!(payload)),
                None => {
                    let message = format!("section {section} has no valid value yet");
                    let e =
                        BusError::new(ErrorCode::NotFound, message).with_field(section.as_str());
                    Reply::err(req.id.clone(), vec![e])
                }
            },
            _ => bad_payload(
                req,
                "get body: give exactly one of `var` and `section`".into(),
            ),
        }
    }
}

fn bad_payload(req: &Request, message: String) -> Reply {
    Reply::err(
        req.id.clone(),
        vec![BusError::new(ErrorCode::BadPayload, message).with_field("body")],
    )
}
