//! The deployer's payloads: the `facts` of `iohub/state/deployer`, the `deployed` event and
//! the plan on `iohub/plan/deployer`.

use serde::Serialize;

use super::apply::Installed;
use super::plan::{Limits, Manifest, Problem};

/// How many outcomes the retained state keeps.
pub const HISTORY: usize = 20;

/// The outcome of one zip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The zip, relative to the root.
    pub zip: String,
    pub at_ms: u64,
    /// `installed`, `rejected`, `planned` (plan-only backend).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub installed: Vec<Installed>,
    /// Per app: the apps service's answer to the restart (`ok`, or the error).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<(String, String)>,
    /// Where the refused zip went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_to: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

/// `facts` of `iohub/state/deployer`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    pub enabled: bool,
    pub limits: Limits,
    /// Leftovers of an interrupted install repaired at start.
    pub recovered: Vec<String>,
    pub installed_count: u64,
    pub rejected_count: u64,
    /// The last [`HISTORY`] outcomes, newest last.
    pub history: Vec<Outcome>,
}

/// `iohub/plan/deployer`: what the last zip held (or would install in plan-only).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub zip: String,
    /// The validator's text ([`super::plan::render`]).
    pub report: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}
