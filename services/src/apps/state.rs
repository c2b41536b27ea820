//! The apps service's payloads: `iohub/state/apps/<app>` facts, the service's own facts, the
//! log event and the start-up plan.

use bus_schema::{BusError, ErrorCode};
use serde::Serialize;

use super::plan::PlannedStart;
use sys::docker::PortMap;

/// The outcome of one `start.sh` run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartRecord {
    pub at_ms: u64,
    /// Exit code; `None` when killed (see `timed_out`) or when it could not be run.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last lines of stdout and stderr together.
    pub output_tail: String,
    /// Why it could not be run at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StartRecord {
    pub fn ok(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }

    /// The failed run of `app`'s start.sh as an error, ending with `output` (its last line for a
    /// state, the whole tail for a command's reply).
    pub fn failure(&self, app: &str, output: &str) -> BusError {
        let code = if self.timed_out {
            ErrorCode::Timeout
        } else {
            ErrorCode::Internal
        };
        let why = self
            .error
            .as_deref()
            .map(|e| format!(", {e}"))
            .unwrap_or_default();
        BusError::new(
            code,
            format!(
                "start.sh of {app} failed (exit {:?}{why}): {output}",
                self.exit_code
            ),
        )
    }
}

/// One container of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerFacts {
    pub name: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub image: String,
    /// `running`, `exited`, ...
    pub state: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    pub restarts: i64,
    pub ports: Vec<PortMap>,
}

/// `facts` of `iohub/state/apps/<app>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppFacts {
    pub app: String,
    /// `start.sh` is executable.
    pub enabled: bool,
    /// The app dir still exists.
    pub installed: bool,
    pub running: usize,
    pub total: usize,
    pub containers: Vec<ContainerFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_start: Option<StartRecord>,
}

/// One garbage collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub at_ms: u64,
    pub disk_used_percent: u8,
    pub threshold_percent: u8,
    pub removed: Vec<String>,
    pub errors: Vec<String>,
}

/// `facts` of `iohub/state/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub docker_enabled: bool,
    pub docker_connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_error: Option<String>,
    /// The start-up run of every enabled app is done.
    pub started: bool,
    pub apps: Vec<AppSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_gc: Option<GcReport>,
}

/// One line per app in the service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSummary {
    pub app: String,
    pub phase: bus_schema::Phase,
    pub running: usize,
    pub total: usize,
}

/// `iohub/plan/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub start: Vec<PlannedStart>,
    pub gc_interval_secs: u64,
    pub gc_disk_percent: u8,
}

/// `iohub/event/apps/log`: one line of a followed log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    pub app: String,
    pub container: String,
    pub stream: &'static str,
    pub line: String,
}
