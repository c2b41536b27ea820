//! A [`sys::child`] program remembered with the [`ProcessSpec`] it was started from (a plan
//! restarts a program when its command line changes): the network service's DHCP client and the
//! dhcp service's dnsmasq.

use serde::Serialize;
use tokio::sync::mpsc;

use sys::child;
use sys::cmd::Cmd;

pub use child::ChildStatus as ProcStatus;

/// A supervised long-running program, as a plan shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessSpec {
    pub program: String,
    pub args: Vec<String>,
}

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
