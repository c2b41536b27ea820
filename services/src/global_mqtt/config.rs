//! Validated desired state of the global MQTT broker for apps: the `global_mqtt` config section
//! (`IOHUBOS_GLOBAL_MQTT*`: names, login, mirror, queue bound, WebSocket port; checked by
//! bus-schema) plus two daemon-side addresses from iohubd's environment, which are about where
//! iohubd runs rather than about the box's configuration:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `IOHUBD_GLOBAL_MQTT_LISTEN` | `127.0.0.1:0` (plan-only), `127.0.0.1:1883` (live) | apps listener on the host (local tools; apps in Docker use the one in the placeholder's namespace) |
//! | `IOHUBD_METRICS_LISTEN` | `127.0.0.1:0` (plan-only), `127.0.0.1:9883` (live) | Prometheus endpoint |
//!
//! The password is a secret: the section only says whether it is set, and the service reads
//! the clear value from the files when it opens a listener ([`crate::secrets::read`]).

use std::net::SocketAddr;

use broker::ControlCredentials;
use bus_schema::sections::GlobalMqtt;
use bus_schema::{BusError, ErrorCode, Secret};
use serde::Serialize;

use crate::ctx::Backend;

/// Daemon-side addresses of the host apps listener and the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Options {
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    /// Whether listeners meant for the network may bind every interface (live backend); in
    /// plan-only mode they stay on loopback.
    pub public: bool,
}

/// Everything the service needs to reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub enabled: bool,
    pub image: String,
    pub container_name: String,
    pub network_name: String,
    pub anonymous: bool,
    #[serde(skip)]
    pub credentials: Option<ControlCredentials>,
    pub mirror: Vec<String>,
    pub max_queued_messages: usize,
    pub websocket_port: Option<u16>,
    pub options: Options,
}

fn bad(field: &str, message: String) -> BusError {
    BusError::new(ErrorCode::InvalidValue, message).with_field(field.to_string())
}

impl Options {
    /// Read the options from `get` (the environment in iohubd); every problem is reported.
    pub fn from_env(
        backend: Backend,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Options, Vec<BusError>> {
        let mut errors = Vec::new();
        let live = backend == Backend::Live;
        let mut addr = |name: &str, live_default: &str| -> SocketAddr {
            let default = if live { live_default } else { "127.0.0.1:0" };
            let text = get(name).unwrap_or_else(|| default.to_string());
            text.trim().parse().unwrap_or_else(|_| {
                errors.push(bad(
                    name,
                    format!("{name}: {text:?} is not an address:port"),
                ));
                SocketAddr::from(([127, 0, 0, 1], 0))
            })
        };
        let listen = addr("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:1883");
        let metrics = addr("IOHUBD_METRICS_LISTEN", "127.0.0.1:9883");
        if errors.is_empty() {
            Ok(Options {
                listen,
                metrics,
                public: live,
            })
        } else {
            Err(errors)
        }
    }
}

impl Desired {
    /// `password` is the clear value of `IOHUBOS_GLOBAL_MQTT_PASSWORD` (read by the caller).
    pub fn new(section: &GlobalMqtt, password: &Secret, options: Options) -> Desired {
        let credentials = match (&section.username, password.is_set()) {
            (Some(username), true) => Some(ControlCredentials {
                username: username.clone(),
                password: password.expose().to_string(),
            }),
            _ => None,
        };
        Desired {
            enabled: section.enabled,
            image: section.image.clone(),
            container_name: section.container_name.clone(),
            network_name: section.network_name.clone(),
            anonymous: section.anonymous,
            credentials,
            mirror: section.mirror.clone(),
            max_queued_messages: section.max_queued_messages as usize,
            websocket_port: section.websocket_port,
            options,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_depend_on_the_backend() {
        let o = Options::from_env(Backend::PlanOnly, env(&[])).unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:0");
        let o = Options::from_env(Backend::Live, env(&[])).unwrap();
        assert_eq!(o.listen.to_string(), "127.0.0.1:1883");
        assert_eq!(o.metrics.to_string(), "127.0.0.1:9883");
    }

    #[test]
    fn every_bad_address_is_reported() {
        let e = Options::from_env(
            Backend::PlanOnly,
            env(&[
                ("IOHUBD_GLOBAL_MQTT_LISTEN", "nowhere"),
                ("IOHUBD_METRICS_LISTEN", "127.0.0.1"),
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = e
            .iter()
            .map(|e| e.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            ["IOHUBD_GLOBAL_MQTT_LISTEN", "IOHUBD_METRICS_LISTEN"]
        );
    }
}
