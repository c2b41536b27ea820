//! The system service's retained state payload: the `facts` of `iohub/state/system`.

use std::path::PathBuf;

use serde::Serialize;

use crate::ctx::Backend;

/// `facts` of `iohub/state/system`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SystemFacts {
    pub backend: Backend,
    /// The timezone in effect (none: left alone).
    pub timezone: Option<String>,
    /// The tz database names were checked against.
    pub zoneinfo: PathBuf,
    /// Paths changed by the last apply (empty when nothing had to change).
    pub changed: Vec<PathBuf>,
    /// The host name from the `network` section (written by the network service).
    pub hostname: Option<String>,
    /// Who writes the host name.
    pub hostname_owner: &'static str,
    /// Firmware version.
    pub version: String,
}
