//! The retained state of the routes service: what is installed, what is not and why.

use bus_schema::error::LineError;
use bus_schema::{BusError, ErrorCode, Phase, ServiceState};
use serde::Serialize;

use super::plan::{NotApplied, PlannedRoute, RoutesPlan};
use crate::ctx::now_ms;

/// The `facts` of `iohub/state/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutesFacts {
    pub installed: Vec<PlannedRoute>,
    pub unreachable: Vec<NotApplied>,
    pub conflicts: Vec<NotApplied>,
    /// Refused lines of `routes` (file, line, text, reason).
    pub rejected: Vec<LineError>,
    /// Netlink failures other than unreachable gateways.
    pub errors: Vec<String>,
}

pub fn facts(plan: &RoutesPlan, errors: Vec<String>) -> RoutesFacts {
    RoutesFacts {
        installed: plan.installed.clone(),
        unreachable: plan.unreachable.clone(),
        conflicts: plan.conflicts.clone(),
        rejected: plan.rejected.clone(),
        errors,
    }
}

/// `applied` when every line is in the kernel, else `degraded` with the first problem.
pub fn state(f: &RoutesFacts, generation: u64) -> ServiceState {
    let first: Option<BusError> = f
        .rejected
        .first()
        .map(|l| BusError::from(l.clone()))
        .or_else(|| {
            f.unreachable.first().map(|u| {
                BusError::new(ErrorCode::Unavailable, u.reason.clone())
                    .with_field(format!("routes:{}", u.line))
            })
        })
        .or_else(|| {
            f.conflicts.first().map(|u| {
                BusError::new(ErrorCode::Conflict, u.reason.clone())
                    .with_field(format!("routes:{}", u.line))
            })
        })
        .or_else(|| {
            f.errors
                .first()
                .map(|e| BusError::new(ErrorCode::Io, e.clone()))
        });
    let phase = if first.is_some() {
        Phase::Degraded
    } else {
        Phase::Applied
    };
    let mut st = ServiceState::new(phase, generation, now_ms());
    st.applied = Some(generation);
    st.last_error = first;
    st.facts = serde_json::to_value(f).unwrap_or_default();
    st
}
