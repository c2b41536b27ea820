//! `forwards-tcp`, `forwards-udp` and `routes` (SPEC.md §4.2, §4.3): typed lines, a strict parser
//! with per-line errors, and a printer (print/parse round-trips).
//!
//! Types below are the contract; the parser is being written.

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

/// An inclusive port range; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// One `SRC_PORT=DST_IP:DST_PORT` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    pub proto: Proto,
    /// 1-based line in its file.
    pub line: usize,
    pub src: PortRange,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
}

/// One `DESTINATION/PREFIX:GATEWAY` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub line: usize,
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
}
