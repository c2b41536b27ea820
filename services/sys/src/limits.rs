//! The process's own resource limits.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raise the soft limit of open files to the hard one (systemd's default soft limit is 1,024,
/// with a hard limit of 524,288; the unit may set both with `LimitNOFILE=`). Every MQTT client,
/// admin API connection and watched directory holds a descriptor; the listeners' own caps keep
/// a flood below the raised limit, so the control listener is never starved of descriptors.
/// Returns the (soft, hard) limits now in force.
pub fn raise_open_files() -> nix::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    getrlimit(Resource::RLIMIT_NOFILE)
}
