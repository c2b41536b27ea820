//! The retained state payload every service publishes on `iohub/state/<service>`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::BusError;

/// Where a service is in its reconcile loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The service is switched off by config.
    Disabled,
    /// Starting, or a new config is being applied.
    Applying,
    /// The desired config is in effect.
    Applied,
    /// Running on the last good config; the newest input was refused or partly applied.
    Degraded,
    /// The service failed and is restarting with backoff.
    Failed,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Disabled => "disabled",
            Phase::Applying => "applying",
            Phase::Applied => "applied",
            Phase::Degraded => "degraded",
            Phase::Failed => "failed",
        })
    }
}

/// `{generation, phase, since, applied, last_error, facts}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceState {
    /// Payload version ([`crate::PAYLOAD_VERSION`]).
    pub version: u32,
    /// Generation of the config this state refers to (0 before any config).
    pub generation: u64,
    pub phase: Phase,
    /// Unix time in milliseconds when `phase` was entered.
    pub since_ms: u64,
    /// Generation actually in effect (may lag `generation` when degraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<BusError>,
    /// How many times the supervisor restarted this service.
    #[serde(default)]
    pub restarts: u32,
    /// Service-specific facts (lease, rules count, action results, ...).
    #[serde(default)]
    pub facts: serde_json::Value,
}

impl ServiceState {
    pub fn new(phase: Phase, generation: u64, since_ms: u64) -> ServiceState {
        ServiceState {
            version: crate::PAYLOAD_VERSION,
            generation,
            phase,
            since_ms,
            applied: None,
            last_error: None,
            restarts: 0,
            facts: serde_json::Value::Null,
        }
    }
}
