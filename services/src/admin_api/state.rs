//! The admin API's retained state: where it listens, whether the token lets requests through,
//! and the last error (a port that cannot be bound, a token that cannot be read).

use bus_schema::sections::ComposePolicy;
use bus_schema::{BusError, Phase, ServiceState};
use serde::Serialize;

/// `facts` of `iohub/state/admin_api`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// Port listened on (all interfaces), if any.
    pub listening: Option<u16>,
    pub token_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_reason: Option<String>,
    /// `IOHUBOS_ADMIN_API_COMPOSE_POLICY` in force for deploys.
    pub compose_policy: ComposePolicy,
}

/// The state after an attempt: `disabled` when off, `applied` when listening with a strong
/// token, `degraded` when listening but refusing everything (weak token) or kept on the last good
/// port after an error, `failed` when it should listen and does not.
pub fn state(
    enabled: bool,
    generation: u64,
    applied: Option<u64>,
    facts: &Facts,
    error: Option<&BusError>,
    since_ms: u64,
) -> ServiceState {
    let phase = match (enabled, facts.listening, error) {
        (false, None, None) => Phase::Disabled,
        (true, None, _) => Phase::Failed,
        (_, _, Some(_)) => Phase::Degraded,
        (true, Some(_), None) if !facts.token_ok => Phase::Degraded,
        _ => Phase::Applied,
    };
    let mut s = ServiceState::new(phase, generation, since_ms);
    s.applied = applied;
    s.last_error = error.cloned().or_else(|| {
        (!facts.token_ok && enabled).then(|| {
            BusError::new(
                bus_schema::ErrorCode::Unauthorized,
                format!(
                    "every request is refused with 403: {}",
                    facts.token_reason.as_deref().unwrap_or("weak token")
                ),
            )
            .with_field("IOHUBOS_ADMIN_API_AUTH_TOKEN")
        })
    });
    s.facts = serde_json::to_value(facts).unwrap_or_default();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(listening: Option<u16>, token_ok: bool) -> Facts {
        Facts {
            listening,
            token_ok,
            token_reason: (!token_ok).then(|| "no token is set".to_string()),
            compose_policy: ComposePolicy::Any,
        }
    }

    #[test]
    fn the_phase_says_whether_requests_are_served() {
        let phase =
            |enabled, f: &Facts, e: Option<&BusError>| state(enabled, 1, Some(1), f, e, 0).phase;
        let err = BusError::new(bus_schema::ErrorCode::Io, "bind");
        assert_eq!(phase(false, &facts(None, true), None), Phase::Disabled);
        assert_eq!(phase(true, &facts(Some(1), true), None), Phase::Applied);
        assert_eq!(phase(true, &facts(Some(1), false), None), Phase::Degraded);
        assert_eq!(
            phase(true, &facts(Some(1), true), Some(&err)),
            Phase::Degraded
        );
        assert_eq!(phase(true, &facts(None, true), Some(&err)), Phase::Failed);
        let weak = state(true, 1, Some(1), &facts(Some(1), false), None, 0);
        assert!(weak.last_error.unwrap().message.contains("no token is set"));
    }
}
