//! Effects of the network plan, through the system boundary: netlink ops ([`Netlink`]), files
//! (`sys::fs::atomic_write`, only when the content differs) and the kernel host name (only when
//! the system root is `/`). The DHCP client process is the event loop's (`mod.rs`).

use std::path::Path;

use super::plan::NetworkPlan;
use crate::shared::files::{write_planned, PlannedFile};
use sys::netlink::{NetOp, Netlink};

/// What one apply did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Ops carried out successfully.
    pub ops: usize,
    /// Files (re)written.
    pub files: usize,
    /// Every failure, as a sentence.
    pub errors: Vec<String>,
}

/// Carry out `ops` in order; a failed op is reported and the rest still run.
pub async fn ops(nl: &Netlink, ops: &[NetOp], done: &mut Applied) {
    for op in ops {
        match nl.execute(op).await {
            Ok(()) => done.ops += 1,
            Err(e) => done.errors.push(e.to_string()),
        }
    }
}

/// Write each file whose content differs from what is on disk.
pub async fn files(files: &[PlannedFile], done: &mut Applied) {
    for f in files {
        match write_planned(f).await {
            Ok(true) => done.files += 1,
            Ok(false) => {}
            Err(e) => done.errors.push(e.message),
        }
    }
}

/// Set the kernel host name when it differs.
pub fn kernel_hostname(name: &str, done: &mut Applied) {
    let current = nix::unistd::gethostname().ok();
    if current.as_deref().and_then(|c| c.to_str()) == Some(name) {
        return;
    }
    if let Err(e) = nix::unistd::sethostname(name) {
        done.errors.push(format!("set host name {name}: {e}"));
    }
}

/// The whole plan but the DHCP client.
pub async fn apply(nl: &Netlink, plan: &NetworkPlan, system_root: &Path) -> Applied {
    let mut done = Applied::default();
    ops(nl, &plan.ops, &mut done).await;
    files(&plan.files, &mut done).await;
    if let Some(name) = &plan.kernel_hostname {
        if system_root == Path::new("/") {
            kernel_hostname(name, &mut done);
        }
    }
    done
}
