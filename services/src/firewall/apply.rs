//! The firewall's effects, all through `sys`: load the planned transaction with
//! [`sys::nft::load`], hook iohub's policy into Docker's iptables `DOCKER-USER` chain
//! ([`hook_docker`]) and, when router-to-internet is switched off, cut the LAN-origin
//! flows already open (`conntrack -D -s <lan_cidr>` through [`sys::cmd`]): conntrack
//! entries survive a ruleset replace, so without the cut a device keeps every connection it
//! opened while the switch was on.

use std::time::Duration;

use bus_schema::sections::Ipv4Cidr;

use super::state::ConntrackCut;
use sys::cmd::{self, Cmd};
use sys::nft::{self, NftError};

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

/// The iptables chain iohub owns in Docker's `filter` table, jumped to from `DOCKER-USER`.
pub const DOCKER_HOOK_CHAIN: &str = "IOHUB-FORWARD";
/// Docker's chain for user rules (Docker creates it, jumps to it first from `FORWARD`, and never
/// flushes it).
pub const DOCKER_USER: &str = "DOCKER-USER";
/// The iptables program Docker itself uses (`iptables-nft` on the box).
pub const IPTABLES: &str = "iptables";
/// Its restore program.
pub const IPTABLES_RESTORE: &str = "iptables-restore";

/// The `iptables-restore --noflush` input that (re)writes [`DOCKER_HOOK_CHAIN`] and, when
/// `jump` is true, inserts the jump to it at the top of `DOCKER-USER`. Declaring the chain
/// flushes it, so the result is the same however often it is applied (one transaction).
///
/// Why: dockerd sets `iptables -P FORWARD DROP` in `ip filter`, a base chain on the same
/// forward hook as `inet iohub`; a drop in any base chain is final, so without this every
/// forward our table accepts (router-to-internet, port forwards to LAN devices and their
/// replies) dies there. The hook accepts, in Docker's table, every forwarded packet that touches
/// no container bridge: for those `inet iohub` (policy drop) is the only judge. Traffic to or
/// from a container bridge returns to Docker's own chains (isolation, published ports), and our
/// table still applies its own policy to it (`uplink_to_containers`).
pub fn docker_hook_restore(jump: bool) -> String {
    let mut out = format!("*filter\n:{DOCKER_HOOK_CHAIN} - [0:0]\n");
    for bridge in super::plan::CONTAINER_BRIDGES {
        // iptables spells the interface wildcard `+`.
        let name = bridge.replace('*', "+");
        for dir in ["-i", "-o"] {
            out.push_str(&format!("-A {DOCKER_HOOK_CHAIN} {dir} {name} -j RETURN\n"));
        }
    }
    out.push_str(&format!("-A {DOCKER_HOOK_CHAIN} -j ACCEPT\n"));
    if jump {
        out.push_str(&format!("-I {DOCKER_USER} 1 -j {DOCKER_HOOK_CHAIN}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

const IPTABLES_TIMEOUT: Duration = Duration::from_secs(10);

async fn iptables(args: &[&str]) -> Result<String, String> {
    let cmd = Cmd::new(IPTABLES)
        .args(args.iter().copied())
        .timeout(IPTABLES_TIMEOUT);
    match cmd::run(&cmd).await {
        Ok(out) if out.success() => Ok(out.stdout_tail),
        Ok(out) => Err(format!("exit {:?}: {}", out.code, out.stderr_tail.trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// Keep iohub's hook in Docker's `DOCKER-USER` chain as `managed` says, only when that chain
/// exists and `FORWARD` jumps to it, as Docker sets it up (no Docker, no change). Idempotent: the jump is inserted only when missing, our chain
/// is rewritten whole. With an unmanaged firewall the hook is removed. Returns what it did (for
/// the facts); never fails the reconcile.
pub async fn hook_docker(managed: bool) -> String {
    let listing = match iptables(&["-w", "-S", DOCKER_USER]).await {
        Ok(l) => l,
        Err(_) => return format!("no {DOCKER_USER} chain: nothing to hook"),
    };
    let jump_line = format!("-A {DOCKER_USER} -j {DOCKER_HOOK_CHAIN}");
    let jumps = listing.lines().filter(|l| l.trim() == jump_line).count();
    let result = if managed {
        // Docker jumps to DOCKER-USER first from FORWARD; without that jump a hook does nothing
        // (and a chain of that name is someone else's).
        let forward = iptables(&["-w", "-S", "FORWARD"]).await.unwrap_or_default();
        let docker_jump = format!("-A FORWARD -j {DOCKER_USER}");
        if !forward.lines().any(|l| l.trim() == docker_jump) {
            return format!("FORWARD does not jump to {DOCKER_USER}: nothing to hook");
        }
        let cmd = Cmd::new(IPTABLES_RESTORE)
            .args(["-w", "--noflush"])
            .stdin(docker_hook_restore(jumps == 0).into_bytes())
            .timeout(IPTABLES_TIMEOUT);
        match cmd::run(&cmd).await {
            Ok(out) if out.success() => format!("hooked: {DOCKER_USER} -> {DOCKER_HOOK_CHAIN}"),
            Ok(out) => format!("failed (exit {:?}): {}", out.code, out.stderr_tail.trim()),
            Err(e) => format!("failed: {e}"),
        }
    } else {
        let mut errors = Vec::new();
        for _ in 0..jumps {
            if let Err(e) = iptables(&["-w", "-D", DOCKER_USER, "-j", DOCKER_HOOK_CHAIN]).await {
                errors.push(e);
            }
        }
        // The chain may not exist (never hooked): only the jump's removal can fail for real.
        let _ = iptables(&["-w", "-F", DOCKER_HOOK_CHAIN]).await;
        let _ = iptables(&["-w", "-X", DOCKER_HOOK_CHAIN]).await;
        match errors.first() {
            None => format!("unhooked: {DOCKER_USER} no longer jumps to {DOCKER_HOOK_CHAIN}"),
            Some(e) => format!("failed: {e}"),
        }
    };
    if result.starts_with("failed") {
        tracing::warn!(%result, "DOCKER-USER hook");
    }
    result
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn the_docker_hook_returns_bridge_traffic_to_docker_and_accepts_the_rest() {
        expect![[r#"
            *filter
            :IOHUB-FORWARD - [0:0]
            -A IOHUB-FORWARD -i docker0 -j RETURN
            -A IOHUB-FORWARD -o docker0 -j RETURN
            -A IOHUB-FORWARD -i br-+ -j RETURN
            -A IOHUB-FORWARD -o br-+ -j RETURN
            -A IOHUB-FORWARD -j ACCEPT
            -I DOCKER-USER 1 -j IOHUB-FORWARD
            COMMIT
        "#]]
        .assert_eq(&docker_hook_restore(true));
        assert!(!docker_hook_restore(false).contains("-I DOCKER-USER"));
    }
}
