//! The DHCP client here and dnsmasq in the dhcp service, as [`crate::sys::child`] programs remembered
//! with the [`ProcessSpec`] they were started from (the plan restarts a program when its command
//! line changes).

use tokio::sync::mpsc;

use super::plan::ProcessSpec;
use crate::sys::child;
use crate::sys::cmd::Cmd;

pub use child::ChildStatus as ProcStatus;

/// A supervised program and the spec it runs.
pub struct Supervised {
    pub spec: ProcessSpec,
    inner: child::Supervised,
}

impl Supervised {
    /// Start `spec`; `changed` gets a message at every status change (to republish state).
    pub fn start(spec: ProcessSpec, changed: mpsc::UnboundedSender<()>) -> Supervised {
        let cmd = Cmd::new(&spec.program).args(spec.args.iter());
        Supervised {
            inner: child::Supervised::start(cmd, Vec::new(), changed),
            spec,
        }
    }

    pub fn status(&self) -> ProcStatus {
        self.inner.status()
    }

    /// SIGTERM, a grace period, then SIGKILL of its process group.
    pub async fn stop(self) {
        self.inner.stop().await
    }
}
