//! The config service's payloads besides the sections: the facts of `iohub/state/config` and
//! the `config_changed` / `config_rejected` events. Pure.
//!
//! (`bus_schema::sections::ConfigFacts` predates this service and lacks the version, the
//! warnings, the withheld sections and the generations; these types belong in `bus-schema` once
//! it adopts them.)

use std::collections::BTreeMap;

use bus_schema::sections;
use bus_schema::{BusError, Section};
use serde::{Deserialize, Serialize};

use crate::vars::layers::Loaded;

/// `iohub/event/config/config_changed`: sections that got a new generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigChanged {
    pub version: u32,
    pub sections: Vec<Section>,
    /// Every section's current generation.
    pub generations: BTreeMap<Section, u64>,
}

/// What a rejection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectSource {
    /// The files on disk (an edit, or the state at start).
    Files,
    /// A `set` request; nothing was written.
    Set,
}

/// `iohub/event/config/config_rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigRejected {
    pub version: u32,
    pub source: RejectSource,
    pub errors: Vec<BusError>,
    /// Sections that keep their last good value (files only).
    #[serde(default)]
    pub withheld: Vec<Section>,
}

/// `facts` of `iohub/state/config`: the contract type, so its JSON Schema documents the bus.
pub use bus_schema::sections::ConfigFacts;

/// The facts of one load.
pub fn facts(
    loaded: &Loaded,
    startup_warnings: &[BusError],
    errors: &[BusError],
    withheld: &[Section],
    generations: BTreeMap<Section, u64>,
) -> ConfigFacts {
    let assigned = |name: &&String| loaded.owner(name).is_some();
    ConfigFacts {
        version: loaded.version.clone(),
        files: loaded.files.clone(),
        skipped_layers: loaded.skipped_layers.clone(),
        warnings: startup_warnings
            .iter()
            .chain(&loaded.warnings)
            .cloned()
            .collect(),
        unknown_variables: loaded
            .vars
            .keys()
            .filter(|n| n.starts_with("IOHUBOS_") && sections::spec(n).is_none())
            .filter(|n| sections::renamed_to(n).is_none())
            .cloned()
            .collect(),
        deprecated_variables: loaded
            .vars
            .keys()
            .filter(|n| sections::renamed_to(n).is_some() || n.starts_with("IOHUBOS_VPN_"))
            .filter(assigned)
            .cloned()
            .collect(),
        rejected_lines: loaded
            .line_errors
            .iter()
            .chain(&loaded.rejected_lines)
            .cloned()
            .collect(),
        errors: errors.to_vec(),
        withheld: withheld.to_vec(),
        generations,
        pending_confirm: None,
        last_revert: None,
    }
}
