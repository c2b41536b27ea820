//! The wireguard service (SPEC §9.1, §1.3, issue 15): the box joins its WireGuard VPN by
//! itself, on the host (not in a container), reconfigured live.
//!
//! Loop: `iohub/config/wireguard` -> [`plan::plan`] (pure, published on `iohub/plan/wireguard`)
//! -> in `Backend::Live`: the keys ([`keys`]: `/iohub/vpn` migrated, `private.key` generated once,
//! 0600, never logged or published), `wireguard-go -f <interface>` as a [`Supervised`] child,
//! the UAPI `set=1` of [`apply::request`] (the whole device when its process is new, only the
//! changed peer fields otherwise: a changed endpoint reconnects without restarting anything),
//! then the interface's address and link through netlink -> `iohub/state/wireguard`
//! ([`state::WgFacts`]). A restarted `wireguard-go` (crash) is configured again as soon as its
//! status changes. Every [`POLL_EVERY`] the server peer's handshake and byte counters are read
//! with UAPI `get=1`; the state is republished when a handshake happened or, at most every
//! [`BYTES_EVERY`], when the counters moved.
//!
//! The interface name is the daemon's setting `wireguard_interface` (the firewall reads the same
//! one). The kernel's own WireGuard is not used (this kernel has none; see README).
//! Bad values are refused by the config service, which withholds the section: the tunnel of the
//! last good one stays. Commands: `status`, `check`.

pub mod apply;
pub mod keys;
pub mod plan;
pub mod state;

use std::time::Duration;

use bus_schema::sections::Wireguard;
use bus_schema::{BusError, ErrorCode, Section};
use tokio::sync::mpsc;

use crate::ctx::{now_ms, Backend, ServiceCtx};
use crate::reconcile::{
    answer, publish_state, reconcile, reply_unsupported, Input, Inputs, Latest, Progress,
    Reconciler,
};
use apply::Configured;
use plan::{WgLayout, WgPlan};
use state::{PeerStats, WgFacts};
use sys::child::Supervised;
use sys::wg::Uapi;

/// How often the tunnel's counters are read.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Counters alone republish the state at most this often.
pub const BYTES_EVERY: Duration = Duration::from_secs(30);

/// Run the wireguard service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?.answering_checks();
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut svc = Service::new(ctx.clone(), changed_tx);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => reconcile(&mut svc, &inputs.latest).await,
                Some(Input::Command(verb, request)) => {
                    if let Some((verb, request)) = answer(&svc, &inputs.latest, verb, request).await {
                        reply_unsupported(&svc.ctx, &request, verb, "status, check").await;
                    }
                }
            },
            Some(()) = changed_rx.recv() => {
                svc.resync().await;
                publish_state(&mut svc).await;
            }
            _ = poll.tick() => {
                if svc.progress.last_error.is_some() {
                    // A failed apply (the server's name did not resolve, the device did not
                    // come up) is retried; the error is logged once.
                    reconcile(&mut svc, &inputs.latest).await;
                } else if svc.poll().await {
                    publish_state(&mut svc).await;
                }
            }
        }
    }
    if let Some(child) = svc.child.take() {
        child.stop().await;
    }
    Ok(())
}

struct Service {
    ctx: ServiceCtx,
    layout: WgLayout,
    changed: mpsc::UnboundedSender<()>,
    child: Option<Supervised>,
    applied: Option<WgPlan>,
    progress: Progress,
    /// What the device was last configured with.
    configured: Option<Configured>,
    public_key: Option<String>,
    key_generated: bool,
    migrated_from: Option<std::path::PathBuf>,
    /// The original address already logged (once per distinct pair).
    warned: Option<(
        bus_schema::sections::Ipv4Cidr,
        bus_schema::sections::Ipv4Cidr,
    )>,
    stats: Option<PeerStats>,
    stats_published_ms: u64,
}

impl Service {
    fn new(ctx: ServiceCtx, changed: mpsc::UnboundedSender<()>) -> Service {
        Service {
            layout: WgLayout::new(&ctx.paths),
            ctx,
            changed,
            child: None,
            applied: None,
            progress: Progress::default(),
            configured: None,
            public_key: None,
            key_generated: false,
            migrated_from: None,
            warned: None,
            stats: None,
            stats_published_ms: 0,
        }
    }

    fn interface(&self) -> &str {
        &self.ctx.endpoints.wireguard_interface
    }

    /// A restarted `wireguard-go` holds a new, empty device: configure it again.
    async fn resync(&mut self) {
        let Some(plan) = self.applied.clone().filter(|p| p.enabled) else {
            return;
        };
        let pid = self.child.as_ref().and_then(Supervised::pid);
        let running = self.child.as_ref().is_some_and(|c| c.status().running);
        if running && pid.is_some() && self.configured.as_ref().map(|c| c.pid) != pid {
            if let Err(e) = self.apply(&plan).await {
                self.progress.failed(self.ctx.name, e);
            }
        }
    }

    /// Read the server peer's counters; whether the state should be republished.
    async fn poll(&mut self) -> bool {
        if self.ctx.backend != Backend::Live || self.configured.is_none() {
            return false;
        }
        let Ok(dev) = Uapi::new(self.interface()).get().await else {
            return false;
        };
        let stats = dev.peers.first().map(|p| PeerStats {
            last_handshake_ms: p.last_handshake_ms,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            endpoint: p.endpoint.clone(),
        });
        let before = self.stats.replace(stats.clone().unwrap_or_default());
        let before = before.unwrap_or_default();
        let now = stats.unwrap_or_default();
        let handshake =
            before.last_handshake_ms != now.last_handshake_ms || before.endpoint != now.endpoint;
        let bytes = (before.rx_bytes, before.tx_bytes) != (now.rx_bytes, now.tx_bytes)
            && now_ms().saturating_sub(self.stats_published_ms) >= BYTES_EVERY.as_millis() as u64;
        if handshake || bytes {
            self.stats_published_ms = now_ms();
            return true;
        }
        false
    }

    /// The pid of our running userspace WireGuard (bounded wait).
    async fn wait_pid(&self) -> Result<u32, BusError> {
        let deadline = tokio::time::Instant::now() + apply::READY_WITHIN;
        loop {
            let status = self.child.as_ref().map(Supervised::status);
            if let Some(pid) = status.as_ref().and_then(|s| s.pid) {
                return Ok(pid);
            }
            if tokio::time::Instant::now() >= deadline {
                let why = status.and_then(|s| s.down()).map(|e| e.message);
                return Err(BusError::new(
                    ErrorCode::Unavailable,
                    why.unwrap_or_else(|| "wireguard-go did not start".to_string()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop_child(&mut self) {
        if let Some(child) = self.child.take() {
            child.stop().await;
        }
        self.configured = None;
        self.stats = None;
    }
}

impl Reconciler for Service {
    type Facts = WgFacts;
    type Plan = WgPlan;

    fn ctx(&self) -> &ServiceCtx {
        &self.ctx
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn facts(&self) -> WgFacts {
        let tunnel = self.applied.as_ref().and_then(|p| p.tunnel.as_ref());
        WgFacts {
            backend: self.ctx.backend,
            enabled: tunnel.is_some(),
            interface: tunnel.map(|t| t.interface.clone()),
            address: tunnel.map(|t| t.address),
            original_address: tunnel.and_then(|t| t.original_address),
            public_key: self.public_key.clone(),
            private_key_file: self.layout.private_key.clone(),
            private_key_mode: keys::mode_of(&self.layout.private_key),
            key_generated: self.key_generated,
            migrated_from: self.migrated_from.clone(),
            server: tunnel.map(|t| format!("{}:{}", t.peer.host, t.peer.port)),
            allowed_ips: tunnel
                .map(|t| t.peer.allowed_ips.clone())
                .unwrap_or_default(),
            peer: self.stats.clone(),
            wireguard_go: self.child.as_ref().map(Supervised::status),
        }
    }

    fn health(facts: &WgFacts) -> (Option<BusError>, bool) {
        (
            facts.wireguard_go.as_ref().and_then(|s| s.down()),
            facts.enabled,
        )
    }

    async fn plan(&self, latest: &Latest) -> Option<Result<WgPlan, BusError>> {
        let section = latest.section::<Wireguard>(Section::Wireguard)?;
        Some(section.and_then(|(_, s)| {
            plan::plan(&s, &self.layout, self.interface()).map_err(|problems| {
                BusError::new(ErrorCode::InvalidValue, problems.join("; "))
                    .with_field("IOHUBOS_WIREGUARD_ENABLED")
            })
        }))
    }

    async fn apply(&mut self, plan: &WgPlan) -> Result<(), BusError> {
        let Some(t) = &plan.tunnel else {
            self.stop_child().await;
            return Ok(());
        };
        let keys = keys::ensure(&plan.layout).await?;
        self.key_generated |= keys.generated;
        if keys.migrated.is_some() {
            self.migrated_from = keys.migrated.clone();
        }
        self.public_key = Some(keys.public.clone());
        let endpoint = apply::resolve(&t.peer.host, t.peer.port).await?;
        let same = self
            .child
            .as_ref()
            .is_some_and(|c| c.status().argv == t.run);
        if !same {
            self.stop_child().await;
            if let Some((program, args)) = t.run.split_first() {
                let cmd = sys::cmd::Cmd::new(program).args(args);
                self.child = Some(Supervised::start(cmd, Vec::new(), self.changed.clone()));
            }
        }
        // The pid appears once copies left by a killed iohubd are stopped and ours runs: only
        // then is the socket ours.
        let pid = self.wait_pid().await?;
        let uapi = Uapi::new(&t.interface);
        apply::wait_ready(&uapi).await?;
        let request = apply::request(
            self.configured.as_ref(),
            pid,
            &keys.private,
            &t.peer,
            endpoint,
        )?;
        if let Some(set) = request {
            let full = set.private_key.is_some();
            uapi.set(&set)
                .await
                .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?;
            tracing::info!(interface = %t.interface, %endpoint, full, "WireGuard device configured");
        }
        apply::address(&t.interface, t.address).await?;
        self.configured = Some(Configured {
            pid,
            peer: t.peer.clone(),
            endpoint,
        });
        if let Some(original) = t.original_address {
            if self.warned != Some((original, t.address)) {
                tracing::warn!(
                    address = %t.address,
                    original = %original,
                    "this box's tunnel address differs from IOhubOS 1.1.x's (its carry bug is fixed): update the server's peer entry"
                );
                self.warned = Some((original, t.address));
            }
        }
        Ok(())
    }

    fn keep(&mut self, plan: WgPlan) {
        if self.ctx.backend == Backend::PlanOnly {
            self.public_key = keys::read_public(&plan.layout);
        }
        self.applied = Some(plan);
    }
}
