//! The retained state of the dhcp service: whether dnsmasq runs, on which interface, and the
//! leases it handed out (read from its lease file).

use bus_schema::{BusError, ErrorCode, Phase, ServiceState};
use serde::Serialize;

use super::plan::{parse_leases, DhcpPlan, Lease};
use crate::ctx::now_ms;
use crate::shared::process::ProcStatus;

/// The `facts` of `iohub/state/dhcp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DhcpFacts {
    pub enabled: bool,
    pub interface: Option<String>,
    pub waiting_for: Option<String>,
    pub server: Option<ProcStatus>,
    pub leases: Vec<Lease>,
}

pub fn facts(plan: Option<&DhcpPlan>, server: Option<ProcStatus>) -> DhcpFacts {
    let leases = plan
        .filter(|p| p.enabled)
        .and_then(|p| std::fs::read_to_string(&p.lease_file).ok())
        .map(|t| parse_leases(&t))
        .unwrap_or_default();
    DhcpFacts {
        enabled: plan.is_some_and(|p| p.enabled),
        interface: plan.and_then(|p| p.interface.clone()),
        waiting_for: plan.and_then(|p| p.waiting_for.clone()),
        server,
        leases,
    }
}

pub fn state(f: &DhcpFacts, generation: u64, error: Option<BusError>) -> ServiceState {
    let down = f.server.as_ref().is_some_and(|s| !s.running);
    let phase = if error.is_some() || down {
        Phase::Degraded
    } else if !f.enabled {
        Phase::Disabled
    } else if f.waiting_for.is_some() {
        Phase::Applying
    } else {
        Phase::Applied
    };
    let mut st = ServiceState::new(phase, generation, now_ms());
    st.applied = Some(generation);
    st.last_error = error.or_else(|| {
        f.server
            .as_ref()
            .filter(|s| !s.running)
            .and_then(|s| {
                s.spawn_error
                    .clone()
                    .or_else(|| s.last_exit.as_ref().map(ToString::to_string))
            })
            .map(|m| BusError::new(ErrorCode::Io, format!("dnsmasq: {m}")))
    });
    st.facts = serde_json::to_value(f).unwrap_or_default();
    st
}
