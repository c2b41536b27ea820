//! The wifi service (SPEC §3.5 steps 1, 5, 6; §5.5; §11.28): the WiFi client (wpa_supplicant,
//! WPA/WPA2-PSK) or access point (hostapd, WPA2-PSK, bridged into br1 in router mode).
//!
//! Loop: `iohub/config/wifi` -> [`config::WifiDesired`] (every problem at once, variables named)
//! -> wireless interfaces detected in sysfs (for `auto`) -> [`plan::plan`] (pure, published on
//! `iohub/plan/wifi` with the passphrase as a placeholder) -> in `Backend::Live` [`apply`] (the
//! passphrase read from the files through [`crate::secrets`], the 0600 config written) and the
//! program supervised through [`sys::child`]: restarted with backoff when it dies,
//! restarted when its config file or command line changes, stopped when WiFi is turned off and
//! at daemon shutdown -> `iohub/state/wifi` ([`state::WifiFacts`]).
//!
//! A refused config or a missing `auto` device keeps the last good setup running (`degraded`);
//! with `auto` and no adapter the detection is retried every [`DETECT_EVERY`]. The DHCP client
//! of a WiFi uplink is the network service's (its `wan` is the WiFi interface in client mode).
//! Missing WiFi never touches the wired network (the original's 0220 gave up on everything).
//!
//! This kernel has no WiFi (`reference/netns.md` §6): the generated files are proven by
//! snapshots and by the real binaries' own parsers (`tests/tests/wifi_ssh_system.rs`), not
//! against a radio.

pub mod apply;
pub mod config;
pub mod plan;
pub mod state;

use std::path::Path;
use std::time::Duration;

use bus_schema::sections::{Wifi, WifiDevice};
use bus_schema::{BusError, Section};
use tokio::sync::mpsc;

use crate::ctx::ServiceCtx;
use crate::reconcile::{
    answer, join_errors, publish_state, reconcile, reply_unsupported, Input, Inputs, Latest,
    Progress, Reconciler,
};
use config::{WifiDesired, SYS_CLASS_NET};
use plan::{WifiLayout, WifiPlan};
use state::WifiFacts;
use sys::child::Supervised;

/// How often `auto` looks again for an adapter while none is found.
pub const DETECT_EVERY: Duration = Duration::from_secs(10);

/// Run the wifi service until shutdown.
pub async fn run(ctx: ServiceCtx) -> Result<(), BusError> {
    let mut inputs = Inputs::subscribe(&ctx, &[]).await?.answering_checks();
    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut svc = Service::new(ctx.clone(), changed_tx);
    let mut detect = tokio::time::interval(DETECT_EVERY);
    detect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            input = inputs.next() => match input {
                None => break,
                Some(Input::Changed) => svc.reconcile(&inputs.latest).await,
                Some(Input::Command(verb, request)) => {
                    if let Some((verb, request)) = answer(&svc, &inputs.latest, verb, request).await {
                        reply_unsupported(&svc.ctx, &request, verb, "status, check").await;
                    }
                }
            },
            Some(()) = changed_rx.recv() => publish_state(&mut svc).await,
            _ = detect.tick() => {
                if svc.waiting_for_device {
                    svc.reconcile(&inputs.latest).await;
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
    layout: WifiLayout,
    changed: mpsc::UnboundedSender<()>,
    child: Option<Supervised>,
    applied: Option<WifiPlan>,
    progress: Progress,
    waiting_for_device: bool,
}

impl Service {
    fn new(ctx: ServiceCtx, changed: mpsc::UnboundedSender<()>) -> Service {
        Service {
            layout: WifiLayout::new(&ctx.paths),
            ctx,
            changed,
            child: None,
            applied: None,
            progress: Progress::default(),
            waiting_for_device: false,
        }
    }

    /// Reconcile, and remember whether `auto` waits for an adapter (looked for again every
    /// [`DETECT_EVERY`]).
    async fn reconcile(&mut self, latest: &Latest) {
        let auto = matches!(
            desired(latest),
            Some(Ok(WifiDesired::On {
                device: WifiDevice::Auto,
                ..
            }))
        );
        self.waiting_for_device = auto && wireless_interfaces().await.is_empty();
        reconcile(self, latest).await;
    }
}

impl Reconciler for Service {
    type Facts = WifiFacts;
    type Plan = WifiPlan;

    fn ctx(&self) -> &ServiceCtx {
        &self.ctx
    }

    fn progress(&mut self) -> &mut Progress {
        &mut self.progress
    }

    fn facts(&self) -> WifiFacts {
        let plan = self.applied.as_ref();
        WifiFacts {
            backend: self.ctx.backend,
            role: plan.and_then(|p| p.role),
            device: plan.and_then(|p| p.device.clone()),
            ssid: plan.and_then(|p| p.ssid.clone()),
            wireless_interfaces: config::wireless_interfaces(Path::new(SYS_CLASS_NET)),
            config_file: plan.and_then(|p| p.file.as_ref().map(|f| f.path.clone())),
            process: self.child.as_ref().map(Supervised::status),
            pid: self.child.as_ref().and_then(Supervised::pid),
        }
    }

    fn health(facts: &WifiFacts) -> (Option<BusError>, bool) {
        (
            facts.process.as_ref().and_then(|s| s.down()),
            facts.role.is_some(),
        )
    }

    async fn plan(&self, latest: &Latest) -> Option<Result<WifiPlan, BusError>> {
        let desired = desired(latest)?;
        let detected = wireless_interfaces().await;
        Some(desired.and_then(|d| plan::plan(&d, &self.layout, &detected)))
    }

    async fn apply(&mut self, plan: &WifiPlan) -> Result<(), BusError> {
        let Some(argv) = &plan.run else {
            if let Some(child) = self.child.take() {
                child.stop().await;
            }
            apply::apply(&self.ctx.paths, plan).await?;
            return Ok(());
        };
        let applied = apply::apply(&self.ctx.paths, plan).await?;
        let same = self
            .child
            .as_ref()
            .is_some_and(|c| c.status().argv == *argv);
        if applied.changed || !same {
            if let Some(old) = self.child.take() {
                old.stop().await;
            }
            if let Some((program, args)) = argv.split_first() {
                let cmd = sys::cmd::Cmd::new(program).args(args);
                self.child = Some(Supervised::start(
                    cmd,
                    applied.secrets,
                    self.changed.clone(),
                ));
            }
        }
        Ok(())
    }

    fn keep(&mut self, plan: WifiPlan) {
        self.applied = Some(plan);
    }
}

fn desired(latest: &Latest) -> Option<Result<WifiDesired, BusError>> {
    let section = latest.section::<Wifi>(Section::Wifi)?;
    Some(section.and_then(|(_, w)| WifiDesired::from_section(&w).map_err(join_errors)))
}

async fn wireless_interfaces() -> Vec<String> {
    tokio::task::spawn_blocking(|| config::wireless_interfaces(Path::new(SYS_CLASS_NET)))
        .await
        .unwrap_or_default()
}
