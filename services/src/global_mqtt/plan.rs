//! The plan of the global MQTT broker: pure and deterministic (snapshot-tested).
//!
//! What old IOhub apps rely on is a *name*: they join the Docker network `ezvpn-global-mqtt-net`
//! and connect to `ezvpn-global-mqtt:1883`, which Docker's embedded DNS resolves to the address
//! of the container with that name on that network. The plan keeps that contract without a
//! broker in a container: a placeholder container of that name holds a network namespace on the
//! network, and iohubd binds the apps listener *inside that namespace* (`setns` on a helper
//! thread, bind, return: a socket keeps the namespace it was created in). Apps then reach
//! iohubd's own front end directly, with no relay process and no copy of the traffic.

use std::net::SocketAddr;

use serde::Serialize;

use super::config::Desired;

/// The port apps use (mosquitto's default; the original image's `listener 1883`).
pub const APPS_PORT: u16 = 1883;

/// File under `<root>/runtime/` holding the apps' retained messages across restarts.
pub const RETAINED_FILE: &str = "global-mqtt-retained.bin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerPlan {
    pub addr: SocketAddr,
    pub anonymous: bool,
    pub login: bool,
    /// Control filters apps may read.
    pub mirror: Vec<String>,
    pub max_queued_messages: usize,
    /// MQTT over WebSocket (`IOHUBOS_GLOBAL_MQTT_WEBSOCKET_PORT`): on every interface (loopback
    /// only in plan-only mode).
    pub websocket: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum DockerStep {
    /// `docker network create --driver bridge <name>` unless a network of exactly that name
    /// exists.
    EnsureNetwork { name: String },
    /// A placeholder container named like the original broker, on that network, doing nothing
    /// but holding its network namespace (`--restart unless-stopped`).
    RunPlaceholder {
        container: String,
        network: String,
        image: String,
    },
    /// Bind the apps listener on `0.0.0.0:<port>` inside the placeholder's network namespace.
    BindInContainer { container: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub enabled: bool,
    /// The apps listener on the host (tests, plan-only, or until the Docker steps run).
    pub listener: Option<ListenerPlan>,
    pub docker: Vec<DockerStep>,
    pub retained_file: String,
    pub metrics: SocketAddr,
}

pub fn plan(d: &Desired) -> Plan {
    let listener = d.enabled.then(|| ListenerPlan {
        addr: d.options.listen,
        anonymous: d.anonymous,
        login: d.credentials.is_some(),
        mirror: d.mirror.clone(),
        max_queued_messages: d.max_queued_messages,
        websocket: d.websocket_port.map(|port| {
            let ip = if d.options.public {
                std::net::Ipv4Addr::UNSPECIFIED
            } else {
                std::net::Ipv4Addr::LOCALHOST
            };
            SocketAddr::from((ip, port))
        }),
    });
    let docker = if d.enabled {
        vec![
            DockerStep::EnsureNetwork {
                name: d.network_name.clone(),
            },
            DockerStep::RunPlaceholder {
                container: d.container_name.clone(),
                network: d.network_name.clone(),
                image: super::docker::placeholder_image(),
            },
            DockerStep::BindInContainer {
                container: d.container_name.clone(),
                port: APPS_PORT,
            },
        ]
    } else {
        Vec::new()
    };
    Plan {
        enabled: d.enabled,
        listener,
        docker,
        retained_file: format!("runtime/{RETAINED_FILE}"),
        metrics: d.options.metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctx::Backend;
    use crate::global_mqtt::config::Options;
    use crate::settings::Endpoints;

    fn desired(enabled: bool, global_mqtt: &str) -> Desired {
        let endpoints = Endpoints {
            global_mqtt: global_mqtt.parse().unwrap(),
            ..Endpoints::ephemeral()
        };
        let options = Options::new(Backend::PlanOnly, endpoints);
        Desired {
            enabled,
            image: "box:5000/iohubos/iohubos-mqtt".into(),
            container_name: "ezvpn-global-mqtt".into(),
            network_name: "ezvpn-global-mqtt-net".into(),
            anonymous: true,
            credentials: None,
            mirror: Vec::new(),
            max_queued_messages: 1000,
            websocket_port: None,
            options,
        }
    }

    #[test]
    fn an_enabled_broker_plans_the_listener_and_the_docker_name() {
        let p = plan(&desired(true, "127.0.0.1:1883"));
        expect_test::expect![[r#"
            {
              "enabled": true,
              "listener": {
                "addr": "127.0.0.1:1883",
                "anonymous": true,
                "login": false,
                "mirror": [],
                "max_queued_messages": 1000,
                "websocket": null
              },
              "docker": [
                {
                  "step": "ensure_network",
                  "name": "ezvpn-global-mqtt-net"
                },
                {
                  "step": "run_placeholder",
                  "container": "ezvpn-global-mqtt",
                  "network": "ezvpn-global-mqtt-net",
                  "image": "iohub-netns-holder:1"
                },
                {
                  "step": "bind_in_container",
                  "container": "ezvpn-global-mqtt",
                  "port": 1883
                }
              ],
              "retained_file": "runtime/global-mqtt-retained.bin",
              "metrics": "127.0.0.1:0"
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&p).unwrap());
    }

    #[test]
    fn a_disabled_broker_plans_nothing_but_metrics() {
        let p = plan(&desired(false, "127.0.0.1:0"));
        assert!(p.listener.is_none() && p.docker.is_empty());
        assert_eq!(p, plan(&desired(false, "127.0.0.1:0")));
    }
}
