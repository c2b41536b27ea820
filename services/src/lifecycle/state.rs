//! The lifecycle's payloads: the `facts` of `iohub/state/lifecycle` and the plan on
//! `iohub/plan/lifecycle`.

use std::path::PathBuf;

use serde::Serialize;

use super::livesync::{LiveSyncPlan, LiveSyncReport, Skipped};
use super::programs::{How, Kind, Ran};
use super::setup::SetupReport;
use crate::ctx::Backend;

/// The marker files found under the data root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Markers {
    /// `ask.noboot`: maintenance mode.
    pub ask_noboot: bool,
    /// `disable.livesync`.
    pub disable_livesync: bool,
    /// `disable.actions`.
    pub disable_actions: bool,
}

/// The live-sync part of the facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LiveSyncFacts {
    /// Why live sync did not run (a marker, maintenance, no `live/` dir, plan-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_run: Option<String>,
    /// Files written (0 in plan-only: see `planned_files`).
    pub files: usize,
    pub dirs: usize,
    pub unchanged: usize,
    /// Files a plan-only run would write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_files: Option<usize>,
    /// The first [`LISTED_MAX`] skipped entries and errors (see `skipped_count`, `error_count`).
    pub skipped: Vec<Skipped>,
    pub skipped_count: usize,
    pub errors: Vec<String>,
    pub error_count: usize,
}

/// How many skipped entries and errors the retained state lists (it stays small whatever the
/// size of `live/`).
pub const LISTED_MAX: usize = 50;

fn first<T: Clone>(items: &[T]) -> Vec<T> {
    items.iter().take(LISTED_MAX).cloned().collect()
}

impl LiveSyncFacts {
    pub fn not_run(reason: impl Into<String>) -> LiveSyncFacts {
        LiveSyncFacts {
            not_run: Some(reason.into()),
            ..LiveSyncFacts::default()
        }
    }

    pub fn from_report(report: LiveSyncReport) -> LiveSyncFacts {
        LiveSyncFacts {
            not_run: None,
            files: report.files,
            dirs: report.dirs,
            unchanged: report.unchanged,
            planned_files: None,
            skipped: first(&report.skipped),
            skipped_count: report.skipped.len(),
            errors: first(&report.errors),
            error_count: report.errors.len(),
        }
    }

    pub fn from_plan(plan: &LiveSyncPlan) -> LiveSyncFacts {
        LiveSyncFacts {
            not_run: Some("plan-only backend".to_string()),
            unchanged: plan.unchanged,
            planned_files: Some(plan.files.len()),
            skipped: first(&plan.skipped),
            skipped_count: plan.skipped.len(),
            ..LiveSyncFacts::default()
        }
    }
}

/// `facts` of the lifecycle state:
/// `{"setup": {...}, "livesync": {"files": n, ...}, "hooks": [...], "actions": [...], ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub backend: Backend,
    /// `ask.noboot` was present: only setup and the `end` hook ran.
    pub maintenance: bool,
    pub markers: Markers,
    pub setup: SetupReport,
    pub livesync: LiveSyncFacts,
    pub hooks: Vec<Ran>,
    pub actions: Vec<Ran>,
    /// Why the actions did not run, when they did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions_not_run: Option<String>,
    /// Entries of the actions dir that are not programs (directories, dangling links).
    pub skipped: Vec<Skipped>,
    /// Hooks and actions ran in an earlier run of this service in this daemon (which then
    /// failed and was restarted): they are not run twice; their records are from that run.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub programs_from_earlier_run: bool,
}

/// A hook or action in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRun {
    pub kind: Kind,
    pub name: String,
    pub path: PathBuf,
    pub how: How,
    pub timeout_ms: u64,
}

/// `iohub/plan/lifecycle`: what the start would do (plan-only) or did (live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub version: u32,
    pub backend: Backend,
    /// True when this describes what was done (live backend).
    pub applied: bool,
    pub maintenance: bool,
    /// First-start setup and seeding: done in both backends (they only touch the data root).
    pub setup: SetupReport,
    /// `None` when live sync does not run (see the state's `livesync.not_run`).
    pub livesync: Option<LiveSyncPlan>,
    /// Hooks and actions, in order.
    pub run: Vec<PlannedRun>,
}
