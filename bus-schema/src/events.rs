//! Payloads of `iohub/event/<source>/<kind>`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A file event from the watcher: a complete drop, or an edit of a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEvent {
    pub version: u32,
    /// Path relative to the root, `/`-separated (e.g. `deploy/app.zip`, `envvars`).
    pub path: String,
    /// Size when the event fired; absent for a removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether the file was removed rather than created or changed.
    #[serde(default)]
    pub removed: bool,
    /// True for files found at daemon start rather than seen arriving.
    #[serde(default)]
    pub at_start: bool,
}
