//! The control-listener discovery file, `<root>/runtime/control.json` (mode 0600): where the
//! daemon's control listener is and how to log in. `iohubd` writes it at every start (the
//! credentials are generated once and kept); `iohubctl --root DIR` and tests read it. The format
//! lives here so the two sides share one definition (this crate does no I/O: callers read and
//! write the file).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlFile {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

impl ControlFile {
    /// `<root>/runtime/control.json`.
    pub fn path(root: &Path) -> PathBuf {
        root.join("runtime").join("control.json")
    }

    /// Parse the file's text; `path` names it in the error.
    pub fn parse(text: &str, path: &Path) -> Result<ControlFile, String> {
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
