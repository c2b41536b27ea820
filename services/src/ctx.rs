//! The context handed to every service run: the bus, the paths, the backend, shutdown, clock.
//! A service never reaches for globals; everything it may touch comes through here.

use std::path::{Path, PathBuf};

use broker::{Bus, BusClientError};
use bus_schema::{EventKind, ServiceName, ServiceState, Topic};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Whether services change the system or only publish what they would do (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Default: nothing on the system changes; plans are published on `iohub/plan/<service>`.
    PlanOnly,
    /// `iohubd --apply`: plans are applied.
    Live,
}

/// Where things live. `root` is the writable data partition (`/iohub`); `system_root` is where
/// effects outside it land (`/` on a box; a scratch directory in demos and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub root: PathBuf,
    pub system_root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>, system_root: impl Into<PathBuf>) -> Paths {
        Paths {
            root: root.into(),
            system_root: system_root.into(),
        }
    }

    /// A path under the data root, e.g. `root("envvars")`.
    pub fn root(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A path under the system root; `abs` may be absolute (`/etc/hosts`).
    pub fn system(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.system_root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    /// `<root>/runtime`, home of generated credentials and daemon runtime files.
    pub fn runtime(&self) -> PathBuf {
        self.root("runtime")
    }

    /// The firmware's files: `/usr/lib/iohub` under the system root (version, default envvars,
    /// default envvars.d, actions).
    pub fn firmware_lib(&self) -> PathBuf {
        self.system("/usr/lib/iohub")
    }
}

pub use sys::clock::now_ms;

use crate::settings::Endpoints;

/// Everything one run of one service gets.
#[derive(Clone)]
pub struct ServiceCtx {
    pub name: ServiceName,
    pub bus: Bus,
    pub paths: Paths,
    pub backend: Backend,
    /// The daemon's own endpoints that services open (its settings).
    pub endpoints: Endpoints,
    /// Cancelled at daemon shutdown; a service returns promptly when it fires.
    pub shutdown: CancellationToken,
    /// How many times the supervisor restarted this service before this run.
    pub restarts: u32,
}

impl ServiceCtx {
    /// Publish this service's retained state (the supervisor's restart count is filled in).
    pub async fn publish_state(&self, state: &ServiceState) -> Result<(), BusClientError> {
        let mut state = state.clone();
        state.restarts = self.restarts;
        self.bus
            .publish_json(&Topic::state(self.name), &state)
            .await
    }

    /// Publish this service's retained plan.
    pub async fn publish_plan<T: Serialize>(&self, plan: &T) -> Result<(), BusClientError> {
        self.bus.publish_json(&Topic::Plan(self.name), plan).await
    }

    /// Publish an event from this service.
    pub async fn event<T: Serialize>(
        &self,
        kind: EventKind,
        payload: &T,
    ) -> Result<(), BusClientError> {
        self.bus
            .publish_json(&Topic::Event(self.name, kind), payload)
            .await
    }
}
