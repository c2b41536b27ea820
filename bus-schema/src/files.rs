//! `forwards-tcp`, `forwards-udp` and `routes` (SPEC.md §4.2, §4.3): typed lines, a strict parser
//! with per-line errors, and a printer (print/parse round-trips).
//!
//! Strict where the shell silently dropped or mis-parsed lines (SPEC §3.6, §11.3 item 26), lenient
//! where real files differ harmlessly: `#` comments (indented too), blank lines, whitespace around
//! a line and around `=`, `:`, `/`, CRLF line endings and a last line without a line ending are all
//! accepted. Everything else is an error naming the file, the line and what was wrong; an erroneous
//! line yields no entry and the other lines still do.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, LineError};

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

/// Parse a `forwards-tcp` / `forwards-udp` file: one `SRC_PORT=DST_IP:DST_PORT` (or
/// `FIRST:LAST=DST_IP:DST_PORT`) per line. A source port that overlaps an earlier line's is an
/// error ([`ErrorCode::Conflict`]) on the later line.
pub fn parse_forwards(file: &str, proto: Proto, text: &str) -> (Vec<Forward>, Vec<LineError>) {
    let mut fwds = Vec::new();
    let mut errors = Vec::new();
    // Accepted source ranges by start: (end, line). They never overlap each other.
    let mut taken: BTreeMap<u16, (u16, usize)> = BTreeMap::new();
    for (line, raw, rule) in rules(text) {
        let res = forward(rule).and_then(|(src, dst_ip, dst_port)| {
            let clash = taken
                .range(..=src.end)
                .next_back()
                .filter(|(_, &(end, _))| end >= src.start);
            match clash {
                Some((&start, &(end, other))) => Err((
                    ErrorCode::Conflict,
                    format!(
                        "source port {} overlaps {} already forwarded on line {other}",
                        range_text(src),
                        range_text(PortRange { start, end })
                    ),
                )),
                None => Ok((src, dst_ip, dst_port)),
            }
        });
        match res {
            Ok((src, dst_ip, dst_port)) => {
                taken.insert(src.start, (src.end, line));
                fwds.push(Forward {
                    proto,
                    line,
                    src,
                    dst_ip,
                    dst_port,
                });
            }
            Err((code, reason)) => errors.push(line_error(file, line, raw, code, reason)),
        }
    }
    (fwds, errors)
}

/// Parse a `routes` file: one `DESTINATION/PREFIX:GATEWAY` per line. The destination must be the
/// network address of its prefix; a destination defined twice is an error
/// ([`ErrorCode::Conflict`]) on the later line (`ip route add` would fail on it).
pub fn parse_routes(file: &str, text: &str) -> (Vec<Route>, Vec<LineError>) {
    let mut routes = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<(Ipv4Addr, u8), usize> = HashMap::new();
    for (line, raw, rule) in rules(text) {
        let res = route(rule).and_then(|(dest, prefix_len, gateway)| {
            match seen.get(&(dest, prefix_len)) {
                Some(other) => Err((
                    ErrorCode::Conflict,
                    format!("route to {dest}/{prefix_len} already defined on line {other}"),
                )),
                None => Ok((dest, prefix_len, gateway)),
            }
        });
        match res {
            Ok((dest, prefix_len, gateway)) => {
                seen.insert((dest, prefix_len), line);
                routes.push(Route {
                    line,
                    dest,
                    prefix_len,
                    gateway,
                });
            }
            Err((code, reason)) => errors.push(line_error(file, line, raw, code, reason)),
        }
    }
    (routes, errors)
}

/// One `SRC=IP:PORT` line per forward (`FIRST:LAST=IP:PORT` for a range), each ending in `\n`.
pub fn print_forwards(fwds: &[Forward]) -> String {
    fwds.iter()
        .map(|f| format!("{}={}:{}\n", range_text(f.src), f.dst_ip, f.dst_port))
        .collect()
}

/// One `DEST/PREFIX:GW` line per route, each ending in `\n`.
pub fn print_routes(routes: &[Route]) -> String {
    routes
        .iter()
        .map(|r| format!("{}/{}:{}\n", r.dest, r.prefix_len, r.gateway))
        .collect()
}

type Failure = (ErrorCode, String);

const FORWARD_SHAPE: &str = "expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT)";
const ROUTE_SHAPE: &str =
    "expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100)";
/// Longest piece of user text echoed in a reason.
const ECHO_MAX: usize = 40;

/// The lines that hold a rule: (1-based line, the line as written without its line ending, the
/// trimmed rule). Comments and blank lines are left out.
fn rules(text: &str) -> impl Iterator<Item = (usize, &str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n').enumerate().filter_map(|(i, l)| {
        let raw = l.strip_suffix('\r').unwrap_or(l);
        let rule = raw.trim();
        (!rule.is_empty() && !rule.starts_with('#')).then_some((i + 1, raw, rule))
    })
}

fn line_error(file: &str, line: usize, raw: &str, code: ErrorCode, reason: String) -> LineError {
    LineError {
        file: file.to_string(),
        line,
        text: raw.to_string(),
        reason,
        code,
    }
}

fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(ECHO_MAX).collect();
        format!("{cut}…")
    }
}

fn range_text(r: PortRange) -> String {
    if r.start == r.end {
        r.start.to_string()
    } else {
        format!("{}:{}", r.start, r.end)
    }
}

fn forward(rule: &str) -> Result<(PortRange, Ipv4Addr, u16), Failure> {
    let syntax = |what: &str| (ErrorCode::Syntax, format!("{what}{FORWARD_SHAPE}"));
    let Some((left, right)) = rule.split_once('=') else {
        return Err(syntax("missing `=`; "));
    };
    if right.contains('=') {
        return Err(syntax("more than one `=`; "));
    }
    let src = match left.split(':').count() {
        1 => {
            let p = port(left, "source port")?;
            PortRange { start: p, end: p }
        }
        2 => {
            let (a, b) = left.split_once(':').unwrap_or((left, left));
            let (start, end) = (port(a, "first source port")?, port(b, "last source port")?);
            if start > end {
                return Err((
                    ErrorCode::InvalidValue,
                    format!("source range {start}:{end} starts after it ends"),
                ));
            }
            PortRange { start, end }
        }
        _ => return Err(syntax("more than one `:` in the source port range; ")),
    };
    let (ip, dst_port) = match right.split(':').count() {
        1 => return Err(syntax("missing `:DST_PORT`; ")),
        2 => right.split_once(':').unwrap_or((right, "")),
        _ => {
            return Err(syntax(
                "more than one `:` in the destination (IPv6 is not supported); ",
            ))
        }
    };
    let dst_ip = ipv4(ip, "destination", false)?;
    let dst_port = port(dst_port, "destination port")?;
    Ok((src, dst_ip, dst_port))
}

fn route(rule: &str) -> Result<(Ipv4Addr, u8, Ipv4Addr), Failure> {
    let syntax = |what: &str| (ErrorCode::Syntax, format!("{what}{ROUTE_SHAPE}"));
    let (left, gw) = match rule.split(':').count() {
        1 => return Err(syntax("missing `:GATEWAY`; ")),
        2 => rule.split_once(':').unwrap_or((rule, "")),
        _ => return Err(syntax("more than one `:` (IPv6 is not supported); ")),
    };
    let (dest, prefix) = match left.split('/').count() {
        1 => return Err(syntax("missing `/PREFIX` (use /32 for a single host); ")),
        2 => left.split_once('/').unwrap_or((left, "")),
        _ => return Err(syntax("more than one `/`; ")),
    };
    let dest = ipv4(dest, "destination", true)?;
    let prefix = prefix.trim();
    if prefix.is_empty() {
        return Err(syntax("missing prefix length after `/`; "));
    }
    let prefix_len = match number(prefix).and_then(|n| u8::try_from(n).ok()) {
        Some(n) if n <= 32 => n,
        Some(_) => {
            return Err((
                ErrorCode::InvalidValue,
                format!("prefix length {} out of range 0-32", echo(prefix)),
            ))
        }
        None => {
            return Err((
                ErrorCode::InvalidValue,
                format!("`{}` is not a prefix length (0-32)", echo(prefix)),
            ))
        }
    };
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let net = Ipv4Addr::from(u32::from(dest) & mask);
    if net != dest {
        return Err((
            ErrorCode::InvalidValue,
            format!(
                "{dest}/{prefix_len} has host bits set: the destination must be the network address {net}/{prefix_len}"
            ),
        ));
    }
    let gateway = ipv4(gw, "gateway", false)?;
    Ok((dest, prefix_len, gateway))
}

/// Decimal digits only; saturates instead of overflowing.
fn number(s: &str) -> Option<u64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| {
        s.bytes().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
    })
}

fn port(s: &str, what: &str) -> Result<u16, Failure> {
    let s = s.trim();
    if s.is_empty() {
        return Err((ErrorCode::Syntax, format!("missing {what}")));
    }
    let Some(n) = number(s) else {
        return Err((
            ErrorCode::InvalidValue,
            format!("{what} `{}` is not a port number", echo(s)),
        ));
    };
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err((
            ErrorCode::InvalidValue,
            format!("{what} {} out of range 1-65535", echo(s)),
        )),
    }
}

/// An IPv4 address; 0.0.0.0 only where `zero_ok` (a default route's destination).
fn ipv4(s: &str, what: &str, zero_ok: bool) -> Result<Ipv4Addr, Failure> {
    let s = s.trim();
    if s.is_empty() {
        return Err((ErrorCode::Syntax, format!("missing {what} address")));
    }
    match s.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_unspecified() && !zero_ok => Err((
            ErrorCode::InvalidValue,
            format!("{what} 0.0.0.0 is not a usable address"),
        )),
        Ok(ip) => Ok(ip),
        Err(_) => Err((
            ErrorCode::InvalidValue,
            format!("{what} `{}` is not an IPv4 address", echo(s)),
        )),
    }
}
