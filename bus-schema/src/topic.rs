//! The topic tree (DESIGN.md §3). This module is the only place in the workspace where topic
//! strings are spelled out; everything else builds a [`Topic`] and formats it.
//!
//! ```text
//! iohub/config/<section>          retained, config service only
//! iohub/state/<service>           retained, the owning service
//! iohub/state/<service>/<item>    retained, per-item state (e.g. one app)
//! iohub/plan/<service>            retained, the owning service
//! iohub/cmd/<service>/<verb>      requests
//! iohub/reply/<client>/<id>       replies for MQTT 3.1.1 clients
//! iohub/event/<source>/<kind>     events, not retained
//! ```

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Root level of every control topic.
pub const ROOT: &str = "iohub";

macro_rules! name_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The topic level / wire spelling.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(TopicError::UnknownLevel {
                        kind: stringify!($name),
                        level: other.to_string(),
                    }),
                }
            }
        }
    };
}

name_enum! {
    /// A section of the desired configuration, published on `iohub/config/<section>`.
    Section {
        Network = "network",
        Firewall = "firewall",
        Forwards = "forwards",
        Routes = "routes",
        Dhcp = "dhcp",
        Wifi = "wifi",
        Ssh = "ssh",
        System = "system",
        Docker = "docker",
        Registry = "registry",
        Deployer = "deployer",
        Upgrader = "upgrader",
        AdminApi = "admin_api",
        Wireguard = "wireguard",
        Zerotier = "zerotier",
        GlobalMqtt = "global_mqtt",
        Bridge = "bridge",
    }
}

name_enum! {
    /// A service (or daemon component) that owns `iohub/state/<service>` and `iohub/plan/<service>`.
    ServiceName {
        Config = "config",
        Watcher = "watcher",
        Lifecycle = "lifecycle",
        Broker = "broker",
        Network = "network",
        Firewall = "firewall",
        Routes = "routes",
        Dhcp = "dhcp",
        Wifi = "wifi",
        Ssh = "ssh",
        System = "system",
        Apps = "apps",
        Deployer = "deployer",
        Registry = "registry",
        Firmware = "firmware",
        AdminApi = "admin_api",
        Wireguard = "wireguard",
        Zerotier = "zerotier",
        GlobalMqtt = "global_mqtt",
        Bridge = "bridge",
        Iohubd = "iohubd",
    }
}

impl ServiceName {
    /// The config sections this service follows (`iohub/config/<section>`): its inputs, and so
    /// the services that a change of a section concerns ([`Section::followers`]).
    pub const fn sections(self) -> &'static [Section] {
        use Section as S;
        match self {
            ServiceName::Network => &[S::Network, S::Wifi],
            ServiceName::Firewall => &[
                S::Firewall,
                S::Forwards,
                S::Ssh,
                S::AdminApi,
                S::Registry,
                S::GlobalMqtt,
                S::Dhcp,
                S::Network,
                S::Wireguard,
            ],
            ServiceName::Routes => &[S::Routes],
            ServiceName::Dhcp => &[S::Dhcp, S::Network],
            ServiceName::Wifi => &[S::Wifi],
            ServiceName::Ssh => &[S::Ssh],
            ServiceName::System => &[S::System, S::Network],
            ServiceName::Apps => &[S::Docker, S::GlobalMqtt],
            ServiceName::Deployer => &[S::Deployer],
            ServiceName::Registry => &[S::Registry, S::Docker, S::Network],
            ServiceName::AdminApi => &[S::AdminApi],
            ServiceName::GlobalMqtt => &[S::GlobalMqtt, S::Docker],
            ServiceName::Bridge => &[S::Bridge],
            ServiceName::Wireguard => &[S::Wireguard],
            ServiceName::Firmware => &[S::Upgrader],
            ServiceName::Config
            | ServiceName::Watcher
            | ServiceName::Lifecycle
            | ServiceName::Broker
            | ServiceName::Zerotier
            | ServiceName::Iohubd => &[],
        }
    }
}

impl Section {
    /// The services that follow this section ([`ServiceName::sections`]).
    pub fn followers(self) -> Vec<ServiceName> {
        ServiceName::ALL
            .iter()
            .copied()
            .filter(|s| s.sections().contains(&self))
            .collect()
    }
}

name_enum! {
    /// The verb of a command, `iohub/cmd/<service>/<verb>`.
    Verb {
        Get = "get",
        Set = "set",
        Confirm = "confirm",
        Reload = "reload",
        Status = "status",
        Start = "start",
        Stop = "stop",
        Restart = "restart",
        Remove = "remove",
        Undeploy = "undeploy",
        Check = "check",
        Logs = "logs",
        Panic = "panic",
        Enable = "enable",
        Disable = "disable",
        Deploy = "deploy",
        Reboot = "reboot",
        Install = "install",
        Commit = "commit",
        Rollback = "rollback",
    }
}

name_enum! {
    /// The kind of an event, `iohub/event/<source>/<kind>`.
    EventKind {
        /// A zip in `deploy/` is complete.
        DeployDropped = "deploy_dropped",
        /// A firmware file in `firmware/` is complete.
        FirmwareDropped = "firmware_dropped",
        /// A `*.tar.gz` in `runtime/iohub-registry/` is complete.
        RegistryArchiveDropped = "registry_archive_dropped",
        /// `envvars`, `envvars.d/*`, `sysvars`, `forwards-*` or `routes` changed.
        ConfigFileChanged = "config_file_changed",
        /// Something under `live/` changed.
        LiveChanged = "live_changed",
        /// A config section got a new generation.
        ConfigChanged = "config_changed",
        /// A config edit or request was refused.
        ConfigRejected = "config_rejected",
        /// A commit-confirm change was not confirmed in time and was undone.
        ConfigReverted = "config_reverted",
        /// A service changed phase or restarted.
        ServiceRestarted = "service_restarted",
        /// A bootstrap hook or action ran.
        ActionRan = "action_ran",
        /// Progress of long work.
        Progress = "progress",
        /// A line of log output.
        Log = "log",
        /// A deploy zip was installed.
        Deployed = "deployed",
        /// A deploy zip was refused (the payload is a `BusError`).
        DeployRejected = "deploy_rejected",
        /// A firmware bundle was written into the other slot.
        Installed = "installed",
        /// A firmware bundle was refused; both slots are as they were.
        Refused = "refused",
        /// A trial boot of a slot was armed.
        Trial = "trial",
        /// A trial slot became the default.
        Committed = "committed",
        /// The box returned to its last good slot.
        RolledBack = "rolled_back",
    }
}

/// A fully qualified control topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `iohub/config/<section>`
    Config(Section),
    /// `iohub/state/<service>` or `iohub/state/<service>/<item>`
    State(ServiceName, Option<String>),
    /// `iohub/plan/<service>`
    Plan(ServiceName),
    /// `iohub/cmd/<service>/<verb>`
    Cmd(ServiceName, Verb),
    /// `iohub/reply/<client>/<id>`
    Reply { client: String, id: String },
    /// `iohub/event/<source>/<kind>`
    Event(ServiceName, EventKind),
}

/// Why a string is not a valid control topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic does not start with `{ROOT}/`: {0}")]
    NotControl(String),
    #[error("unknown {kind} `{level}`")]
    UnknownLevel { kind: &'static str, level: String },
    #[error("wrong number of levels in `{0}`")]
    Shape(String),
    #[error("invalid topic level `{0}`: must be non-empty without `/`, `+`, `#` or NUL")]
    BadLevel(String),
}

/// A free-form topic level (reply client/id, state item) must be a single, literal level.
pub fn valid_level(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#', '\0'])
}

impl Topic {
    /// `iohub/state/<service>`
    pub fn state(service: ServiceName) -> Topic {
        Topic::State(service, None)
    }

    /// A reply topic for a 3.1.1 client; `None` when a level is not a valid literal level.
    pub fn reply(client: &str, id: &str) -> Option<Topic> {
        (valid_level(client) && valid_level(id)).then(|| Topic::Reply {
            client: client.to_string(),
            id: id.to_string(),
        })
    }

    /// Whether the topic is published retained.
    pub fn is_retained(&self) -> bool {
        matches!(self, Topic::Config(_) | Topic::State(..) | Topic::Plan(_))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Config(s) => write!(f, "{ROOT}/config/{s}"),
            Topic::State(s, None) => write!(f, "{ROOT}/state/{s}"),
            Topic::State(s, Some(item)) => write!(f, "{ROOT}/state/{s}/{item}"),
            Topic::Plan(s) => write!(f, "{ROOT}/plan/{s}"),
            Topic::Cmd(s, v) => write!(f, "{ROOT}/cmd/{s}/{v}"),
            Topic::Reply { client, id } => write!(f, "{ROOT}/reply/{client}/{id}"),
            Topic::Event(s, k) => write!(f, "{ROOT}/event/{s}/{k}"),
        }
    }
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Topic, TopicError> {
        let rest = s
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| TopicError::NotControl(s.to_string()))?;
        let levels: Vec<&str> = rest.split('/').collect();
        for level in &levels {
            if !valid_level(level) {
                return Err(TopicError::BadLevel((*level).to_string()));
            }
        }
        let shape = || TopicError::Shape(s.to_string());
        match levels.as_slice() {
            ["config", sec] => Ok(Topic::Config(sec.parse()?)),
            ["state", svc] => Ok(Topic::State(svc.parse()?, None)),
            ["state", svc, item] => Ok(Topic::State(svc.parse()?, Some((*item).to_string()))),
            ["plan", svc] => Ok(Topic::Plan(svc.parse()?)),
            ["cmd", svc, verb] => Ok(Topic::Cmd(svc.parse()?, verb.parse()?)),
            ["reply", client, id] => Ok(Topic::Reply {
                client: (*client).to_string(),
                id: (*id).to_string(),
            }),
            ["event", src, kind] => Ok(Topic::Event(src.parse()?, kind.parse()?)),
            _ => Err(shape()),
        }
    }
}

/// Subscription filters used by the daemon and its tools.
pub mod filter {
    /// Every control topic.
    pub const ALL: &str = "iohub/#";
    /// Every config section.
    pub const CONFIG: &str = "iohub/config/+";
    /// Every service state, including per-item states.
    pub const STATE: &str = "iohub/state/#";
    /// Every service's top-level state (not per-item states).
    pub const SERVICE_STATES: &str = "iohub/state/+";
    /// Every plan.
    pub const PLAN: &str = "iohub/plan/+";
    /// Every event.
    pub const EVENT: &str = "iohub/event/#";
    /// Every command.
    pub const CMD: &str = "iohub/cmd/#";
    /// Every command, its service and verb as wildcard levels (a topic map's template).
    pub const CMD_LEVELS: &str = "iohub/cmd/+/+";

    /// Replies addressed to one client.
    pub fn replies(client: &str) -> String {
        format!("iohub/reply/{client}/+")
    }

    /// Commands addressed to one service.
    pub fn cmds(service: super::ServiceName) -> String {
        format!("iohub/cmd/{service}/+")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_topic() -> Vec<Topic> {
        let mut all = Vec::new();
        all.extend(Section::ALL.iter().map(|s| Topic::Config(*s)));
        for svc in ServiceName::ALL {
            all.push(Topic::state(*svc));
            all.push(Topic::State(*svc, Some("item-1".into())));
            all.push(Topic::Plan(*svc));
            all.extend(Verb::ALL.iter().map(|v| Topic::Cmd(*svc, *v)));
            all.extend(EventKind::ALL.iter().map(|k| Topic::Event(*svc, *k)));
        }
        all.push(Topic::Reply {
            client: "cli-1".into(),
            id: "42".into(),
        });
        all
    }

    #[test]
    fn every_topic_round_trips_through_its_string() {
        for t in every_topic() {
            assert_eq!(t.to_string().parse::<Topic>(), Ok(t.clone()), "{t}");
        }
    }

    #[test]
    fn foreign_and_malformed_topics_are_refused() {
        for bad in [
            "sensors/x",
            "iohub",
            "iohub/config",
            "iohub/config/nope",
            "iohub/state/+",
            "iohub/cmd/config",
            "iohub/event/watcher/#",
            "iohub/reply//1",
            "iohub/state/apps/a/b",
        ] {
            assert!(bad.parse::<Topic>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_string_never_panics_and_round_trips_when_accepted(s in "\\PC{0,60}") {
            if let Ok(t) = s.parse::<Topic>() {
                prop_assert_eq!(t.to_string(), s);
            }
        }
    }
}
