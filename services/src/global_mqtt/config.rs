//! Validated desired state of the global MQTT broker for apps: the `global_mqtt` config section
//! (`IOHUBOS_GLOBAL_MQTT*`: names, login, mirror, queue bound, WebSocket port; checked by
//! bus-schema) plus two of the daemon's own endpoints ([`crate::settings::Endpoints`]: the apps
//! listener on the host and the Prometheus endpoint), which are about where iohubd runs rather
//! than about the box's configuration.
//!
//! The password is a secret: the section only says whether it is set, and the service reads
//! the clear value from the files when it opens a listener ([`crate::secrets::read`]).

use std::net::SocketAddr;

use broker::ControlCredentials;
use bus_schema::sections::GlobalMqtt;
use bus_schema::Secret;
use serde::Serialize;

use crate::ctx::Backend;
use crate::settings::Endpoints;

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

impl Options {
    pub fn new(backend: Backend, endpoints: Endpoints) -> Options {
        Options {
            listen: endpoints.global_mqtt,
            metrics: endpoints.metrics,
            public: backend == Backend::Live,
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
