//! The firewall's effects, all through `sys`: load the planned transaction with
//! [`crate::sys::nft::load`] and, when router-to-internet is switched off, cut the LAN-origin
//! flows already open (`conntrack -D -s <lan_cidr>` through [`crate::sys::cmd`]): conntrack
//! entries survive a ruleset replace, so without the cut a device keeps every connection it
//! opened while the switch was on.

use std::time::Duration;

use bus_schema::sections::Ipv4Cidr;

use super::state::ConntrackCut;
use crate::sys::cmd::{self, Cmd};
use crate::sys::nft::{self, NftError};

/// Load the transaction; returns how long `nft` took (ms).
pub async fn load(json: &str) -> Result<u64, NftError> {
    nft::load(json).await
}

/// Delete the conntrack entries of flows whose original source is in `lan`. Never fails the
/// reconcile: the outcome is reported in the facts.
pub async fn cut_lan_flows(lan: Ipv4Cidr) -> ConntrackCut {
    let source = format!("{}/{}", lan.network(), lan.prefix_len);
    let cmd = Cmd::new("conntrack")
        .args(["-D", "-s", source.as_str()])
        .timeout(Duration::from_secs(10));
    let result = match cmd::run(&cmd).await {
        // conntrack prints "N flow entries have been deleted." on stderr; exit 1 when N is 0.
        Ok(out) => {
            let msg = out
                .stderr_tail
                .trim()
                .lines()
                .last()
                .unwrap_or("")
                .to_string();
            if out.success() || msg.contains("have been deleted") {
                msg
            } else {
                format!("failed (exit {:?}): {msg}", out.code)
            }
        }
        Err(e) => format!("failed: {e}"),
    };
    if result.starts_with("failed") {
        tracing::warn!(%source, %result, "conntrack cut");
    }
    ConntrackCut { source, result }
}
