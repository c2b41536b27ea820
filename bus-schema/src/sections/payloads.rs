//! The config service's own payloads: the retained [`SectionPayload`] of
//! `iohub/config/<section>` (built by [`Config::section_payload`]), the [`ConfigFacts`] of its state,
//! a [`PendingConfirm`] and a [`ConfigRevert`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;
use crate::error::{BusError, LineError};
use crate::topic::Section;

/// The retained payload of `iohub/config/<section>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionPayload {
    /// Payload version ([`crate::PAYLOAD_VERSION`]).
    pub version: u32,
    pub section: Section,
    /// Generation of the config, bumped by the config service on every accepted change.
    pub generation: u64,
    /// The section, as its typed struct (`Network`, `Firewall`, ...) serializes.
    pub config: serde_json::Value,
}

/// The `facts` of the config service's `iohub/state/config` (the same fields as the config
/// service's own struct, so that it can use this one and the schema documents it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFacts {
    /// Running firmware version (`0.0.0` when the version file is missing).
    pub version: String,
    /// Files read, relative to the root, in load order.
    pub files: Vec<String>,
    /// `envvars.d` files left out by the version filter.
    pub skipped_layers: Vec<String>,
    /// Unknown, internal and pre-1.0 variables, ignored includes.
    pub warnings: Vec<BusError>,
    /// `IOHUBOS_*` names no section knows (ignored).
    pub unknown_variables: Vec<String>,
    /// Deprecated or pre-1.0 names assigned by a file (`IOHUBOS_VPN_*`, `IOHUBOS_ENGINE_*`).
    pub deprecated_variables: Vec<String>,
    /// Refused lines of every file (the valid lines still apply).
    pub rejected_lines: Vec<LineError>,
    /// Every problem of the newest input (refused lines included); empty when applied.
    pub errors: Vec<BusError>,
    /// Sections that keep their last good value (or are not published yet) because of `errors`.
    pub withheld: Vec<Section>,
    /// Every section's current generation.
    pub generations: BTreeMap<Section, u64>,
    /// A `set` with a confirm timeout that is still waiting for `iohub/cmd/config/confirm`.
    #[serde(default)]
    pub pending_confirm: Option<PendingConfirm>,
    /// The last automatic revert of an unconfirmed `set`, in this daemon run or an earlier one.
    #[serde(default)]
    pub last_revert: Option<ConfigRevert>,
}

/// A commit-confirm `set` waiting for its confirmation (`iohubctl set --confirm 60s ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingConfirm {
    /// What `iohub/cmd/config/confirm` must carry (`{"token": ...}`).
    pub token: String,
    /// The variables the `set` changed.
    pub vars: Vec<String>,
    /// The files it rewrote (relative to the root); the revert restores them.
    pub files: Vec<String>,
    pub timeout_secs: u32,
    /// Wall clock (ms since the Unix epoch) after which the change is reverted; the deadline
    /// survives a daemon restart.
    pub deadline_ms: u64,
}

/// `iohub/event/config/config_reverted`, also kept in the config facts: an unconfirmed change
/// was undone, the files restored to what they were before it, every section re-published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRevert {
    pub version: u32,
    pub token: String,
    pub vars: Vec<String>,
    pub files: Vec<String>,
    /// Why: no confirmation within the timeout (possibly across a restart).
    pub reason: String,
    pub at_ms: u64,
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("section types have string keys and serialize to JSON")
}

impl Config {
    /// One section, serialized as published in [`SectionPayload::config`].
    pub fn section_value(&self, s: Section) -> serde_json::Value {
        match s {
            Section::Network => to_json(&self.network),
            Section::Firewall => to_json(&self.firewall),
            Section::Forwards => to_json(&self.forwards),
            Section::Routes => to_json(&self.routes),
            Section::Dhcp => to_json(&self.dhcp),
            Section::Wifi => to_json(&self.wifi),
            Section::Ssh => to_json(&self.ssh),
            Section::System => to_json(&self.system),
            Section::Docker => to_json(&self.docker),
            Section::Registry => to_json(&self.registry),
            Section::Deployer => to_json(&self.deployer),
            Section::Upgrader => to_json(&self.upgrader),
            Section::AdminApi => to_json(&self.admin_api),
            Section::Wireguard => to_json(&self.wireguard),
            Section::Zerotier => to_json(&self.zerotier),
            Section::GlobalMqtt => to_json(&self.global_mqtt),
            Section::Bridge => to_json(&self.bridge),
        }
    }

    /// The retained payload of `iohub/config/<s>` at this generation.
    pub fn section_payload(&self, s: Section, generation: u64) -> SectionPayload {
        SectionPayload {
            version: crate::PAYLOAD_VERSION,
            section: s,
            generation,
            config: self.section_value(s),
        }
    }
}

/// `iohub/cmd/<service>/check`: sections of a configuration not written yet (a `set` being
/// checked, or its `--dry-run`). The service answers with the plan it would make of them
/// (`{"plan": ...}`) or with every reason it would refuse them, and changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub sections: BTreeMap<Section, SectionPayload>,
}
