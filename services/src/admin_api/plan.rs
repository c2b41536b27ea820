//! The admin API's plan: pure. From the listener that runs now and the desired settings, what
//! to do with the listener. The token is swapped in place (no listener change) and never appears
//! here; only whether it is usable does.

use serde::Serialize;

use super::config::Settings;

/// Address the listener binds, like the original container (`-p <port>:8080` on every
/// interface); exposure is the firewall's job.
pub const BIND_ADDR: [u8; 4] = [0, 0, 0, 0];

/// What to do with the listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum ListenerStep {
    /// Nothing runs and nothing should.
    Off,
    /// Keep the running listener.
    Keep { port: u16 },
    /// Start listening.
    Bind { port: u16 },
    /// Move to another port: bind the new one first, then close the old one.
    Rebind { from: u16, to: u16 },
    /// Stop listening.
    Close { port: u16 },
}

/// The published plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub generation: u64,
    pub listener: ListenerStep,
    /// Whether requests can be served (a strong token); otherwise every request gets 403.
    pub token_ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_reason: Option<String>,
}

/// Plan the listener from the running port and the desired settings.
pub fn plan(running: Option<u16>, desired: &Settings, token_weakness: Option<&str>) -> Plan {
    let listener = match (running, desired.enabled) {
        (None, false) => ListenerStep::Off,
        (Some(port), false) => ListenerStep::Close { port },
        (None, true) => ListenerStep::Bind { port: desired.port },
        (Some(port), true) if port == desired.port => ListenerStep::Keep { port },
        (Some(from), true) => ListenerStep::Rebind {
            from,
            to: desired.port,
        },
    };
    Plan {
        generation: desired.generation,
        listener,
        token_ok: token_weakness.is_none(),
        token_reason: token_weakness.map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(running: Option<u16>, enabled: bool, port: u16, weak: Option<&str>, want: Expect) {
        let desired = Settings {
            enabled,
            port,
            compose_policy: bus_schema::sections::ComposePolicy::Any,
            generation: 7,
        };
        let p = plan(running, &desired, weak);
        want.assert_eq(&serde_json::to_string(&p).unwrap_or_default());
    }

    #[test]
    fn the_listener_follows_enabled_and_port() {
        check(
            None,
            false,
            9999,
            None,
            expect![[r#"{"generation":7,"listener":{"action":"off"},"token_ok":true}"#]],
        );
        check(
            None,
            true,
            9999,
            None,
            expect![[
                r#"{"generation":7,"listener":{"action":"bind","port":9999},"token_ok":true}"#
            ]],
        );
        check(
            Some(9999),
            true,
            9999,
            None,
            expect![[
                r#"{"generation":7,"listener":{"action":"keep","port":9999},"token_ok":true}"#
            ]],
        );
        check(
            Some(9999),
            true,
            8080,
            None,
            expect![[
                r#"{"generation":7,"listener":{"action":"rebind","from":9999,"to":8080},"token_ok":true}"#
            ]],
        );
        check(
            Some(9999),
            false,
            9999,
            None,
            expect![[
                r#"{"generation":7,"listener":{"action":"close","port":9999},"token_ok":true}"#
            ]],
        );
    }

    #[test]
    fn a_weak_token_keeps_the_listener_and_says_why() {
        check(
            None,
            true,
            9999,
            Some("no token is set"),
            expect![[
                r#"{"generation":7,"listener":{"action":"bind","port":9999},"token_ok":false,"token_reason":"no token is set"}"#
            ]],
        );
    }
}
