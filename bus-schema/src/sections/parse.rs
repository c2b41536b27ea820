//! The value parsers: one per kind of value, each returning the value or why the text is not
//! one. Error messages never contain secret values.

use std::net::{IpAddr, Ipv4Addr};

use super::values::{
    BrokerUrl, ComposePolicy, Eth0Mode, IpCidr, Ipv4Cidr, NetworkMode, WifiDevice, WifiMode,
    WireguardExpose,
};

/// Subtrees of the control plane that may be mirrored to apps (read-only): never commands,
/// replies or anything else.
pub const MIRRORABLE: [&str; 4] = ["state", "plan", "config", "event"];

/// Comma-separated mirror filters, each inside one mirrorable subtree
/// (`iohub/<state|plan|config|event>/...`).
pub(super) fn parse_mirror(s: &str) -> Result<Vec<String>, String> {
    let filters = parse_topics(s)?;
    for filter in &filters {
        let levels: Vec<&str> = filter.split('/').collect();
        let ok = levels.first() == Some(&crate::topic::ROOT)
            && levels.get(1).is_some_and(|l| MIRRORABLE.contains(l));
        if !ok {
            return Err(format!(
                "mirror filter `{filter}` must be a filter under {}/{{{}}}/",
                crate::topic::ROOT,
                MIRRORABLE.join(",")
            ));
        }
    }
    Ok(filters)
}

pub(super) fn parse_max_queued(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=1_000_000).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => Err(format!("`{s}` is not a queue length (1-1000000)")),
    }
}

/// Network + box number, with the proper arithmetic the original lacks (SPEC.md §9.1, §11.3 #23):
/// neither the network address, the server (host 1) nor the broadcast address.
pub fn tunnel_address(network: Ipv4Cidr, box_number: u32) -> Result<Ipv4Cidr, String> {
    let host_bits = 32 - u32::from(network.prefix_len.min(32));
    let hosts: u64 = 1u64 << host_bits;
    if box_number < 2 || u64::from(box_number) >= hosts.saturating_sub(1) {
        let last = hosts.saturating_sub(2);
        return Err(if last < 2 {
            format!("the network {network} has no room for boxes (host 1 is the server)")
        } else {
            format!(
                "box number {box_number} does not fit {network}: use 2..={last} (1 is the server)"
            )
        });
    }
    let addr = Ipv4Addr::from(u32::from(network.network()) + box_number);
    Ok(Ipv4Cidr {
        addr,
        prefix_len: network.prefix_len,
    })
}

/// The address IOhubOS 1.1.x gives a box (SPEC.md §9.1 step 3), to tell a box whose address the
/// corrected [`tunnel_address`] moves: the network's last octet is replaced by `box % 256`, the
/// third octet becomes `(third + box / 256) % 256`, and the carries into the second and first
/// octets are computed from the already-reduced third octet, so they are always zero.
pub fn original_tunnel_address(network: Ipv4Cidr, box_number: u32) -> Ipv4Cidr {
    let [a, b, c, _] = network.addr.octets();
    let third = (u32::from(c) + box_number / 256) % 256;
    Ipv4Cidr {
        addr: Ipv4Addr::new(a, b, third as u8, (box_number % 256) as u8),
        prefix_len: network.prefix_len,
    }
}

/// `true/yes/on/1` or `false/no/off/0`, any case; empty is false (SPEC.md §11.3 #24).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" | "" => Ok(false),
        _ => Err(format!(
            "`{}` is not a boolean (true/false, yes/no, on/off, 1/0)",
            s.trim()
        )),
    }
}

/// Why an admin API token is too weak (SPEC.md §7.6), or `None` when it is strong: at least 32
/// characters (UTF-16 units, as the original counts) with a lowercase letter, an uppercase
/// letter, a digit and a symbol.
pub fn token_weakness(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("no token is set".to_string());
    }
    let mut problems = Vec::new();
    if token.encode_utf16().count() < 32 {
        problems.push("shorter than 32 characters");
    }
    // The library's symbols are the ASCII punctuation characters.
    let lacks = |class: fn(&char) -> bool| !token.chars().any(|c| class(&c));
    for (problem, missing) in [
        ("no lowercase letter", lacks(char::is_ascii_lowercase)),
        ("no uppercase letter", lacks(char::is_ascii_uppercase)),
        ("no digit", lacks(char::is_ascii_digit)),
        ("no symbol", lacks(char::is_ascii_punctuation)),
    ] {
        if missing {
            problems.push(problem);
        }
    }
    (!problems.is_empty()).then(|| format!("the token is too weak: {}", problems.join(", ")))
}

/// The health deadline of a trial boot: 30 s to a day.
pub(super) fn parse_health_secs(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (30..=86_400).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of seconds from 30 to 86400")),
    }
}

pub(super) fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p != 0 && !s.starts_with('+') => Ok(p),
        _ => Err(format!("`{s}` is not a port (1-65535)")),
    }
}

pub(super) fn parse_ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an IPv4 address"))
}

/// A contiguous netmask, dotted or as a prefix length (1-32).
pub(super) fn parse_netmask(s: &str) -> Result<Ipv4Addr, String> {
    let mask = if !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()) {
        let len: u32 = s.parse().map_err(|_| format!("`{s}` is not a netmask"))?;
        if !(1..=32).contains(&len) {
            return Err(format!("prefix length `{s}` is not in 1-32"));
        }
        u32::MAX << (32 - len)
    } else {
        let ip: Ipv4Addr = s
            .parse()
            .map_err(|_| format!("`{s}` is not a netmask (e.g. 255.255.255.0)"))?;
        u32::from(ip)
    };
    if mask == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(format!("`{s}` is not a contiguous netmask"));
    }
    Ok(Ipv4Addr::from(mask))
}

/// IPv4 addresses separated by spaces and/or commas.
pub(super) fn parse_ipv4_list(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
    {
        match item.parse() {
            Ok(ip) => good.push(ip),
            Err(_) => bad.push(format!("`{item}`")),
        }
    }
    if bad.is_empty() {
        Ok(good)
    } else {
        Err(format!("not IPv4 addresses: {}", bad.join(", ")))
    }
}

/// Why an address cannot be a host of `net`: the network or the broadcast address.
pub(super) fn host_problem(ip: Ipv4Addr, net: Ipv4Cidr) -> Option<String> {
    if net.prefix_len > 30 {
        return None;
    }
    let (network, broadcast) = (net.network(), net.broadcast());
    if ip == network {
        Some(format!(
            "{ip} is the network address of {network}/{}",
            net.prefix_len
        ))
    } else if ip == broadcast {
        Some(format!(
            "{ip} is the broadcast address of {network}/{}",
            net.prefix_len
        ))
    } else {
        None
    }
}

pub(super) fn parse_network_mode(s: &str) -> Result<NetworkMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "standalone" => Ok(NetworkMode::Standalone),
        "router" => Ok(NetworkMode::Router),
        _ => Err(format!(
            "`{s}` is not a network mode (standalone or router)"
        )),
    }
}

pub(super) fn parse_eth0_mode(s: &str) -> Result<Eth0Mode, String> {
    match s.to_ascii_lowercase().as_str() {
        "dhcp" => Ok(Eth0Mode::Dhcp),
        "static" => Ok(Eth0Mode::Static),
        _ => Err(format!("`{s}` is not an ETH0 mode (dhcp or static)")),
    }
}

pub(super) fn parse_wifi_mode(s: &str) -> Result<WifiMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "off" => Ok(WifiMode::Off),
        "client" => Ok(WifiMode::Client),
        "ap" => Ok(WifiMode::Ap),
        _ => Err(format!(
            "`{s}` is not a WiFi mode (empty or off, client, ap)"
        )),
    }
}

pub(super) fn parse_compose_policy(s: &str) -> Result<ComposePolicy, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "any" => Ok(ComposePolicy::Any),
        "restricted" => Ok(ComposePolicy::Restricted),
        _ => Err(format!(
            "`{s}` is not a compose policy (empty or any, restricted)"
        )),
    }
}

pub(super) fn parse_wifi_device(s: &str) -> Result<WifiDevice, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(WifiDevice::Auto);
    }
    parse_iface(s).map(WifiDevice::Name)
}

/// A Linux interface name (the kernel's `dev_valid_name`, printable ASCII only).
pub(super) fn parse_iface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not an interface name (1-15 printable characters, no `/`, `:` or spaces)"
        ))
    }
}

/// One RFC 1123 label: 1-63 letters, digits and `-`, not starting or ending with `-`.
pub(super) fn parse_hostname(s: &str) -> Result<String, String> {
    if is_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a host name (1-63 letters, digits and `-`, not starting or ending with `-`)"
        ))
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// An IPv4 address or a DNS name.
pub(super) fn parse_host(s: &str) -> Result<String, String> {
    let dns = s.len() <= 253 && s.split('.').all(is_label);
    if s.parse::<Ipv4Addr>().is_ok() || dns {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is neither an IPv4 address nor a DNS name"))
    }
}

/// The shape of a tz database name (`Area/City`, `UTC`, `Etc/GMT+3`); the config service checks
/// that it exists on disk.
pub fn parse_timezone(s: &str) -> Result<String, String> {
    let ok = s.len() <= 128
        && s.split('/').all(|part| {
            !part.is_empty()
                && !part.starts_with('-')
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a timezone name (like `Europe/Rome` or `UTC`)"
        ))
    }
}

/// authorized_keys lines: `[options] <type> <base64> [comment]`, one per line.
pub(super) fn parse_ssh_keys(s: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (i, line) in s.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_type = |f: &str| {
            ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
                .iter()
                .any(|p| f.starts_with(p))
        };
        let is_b64 = |f: &str| {
            f.len() >= 16
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        };
        let ok = fields.windows(2).any(|w| is_type(w[0]) && is_b64(w[1]))
            && !line.chars().any(|c| c.is_control() && c != '\t');
        if !ok {
            return Err(format!(
                "line {} is not an authorized_keys entry (`<type> <base64 key> [comment]`)",
                i + 1
            ));
        }
        keys.push(line.to_string());
    }
    Ok(keys)
}

/// `x.y.z`, optionally with a `-suffix`.
pub(super) fn parse_version(s: &str) -> Result<String, String> {
    let (numbers, suffix) = match s.split_once(['-', '+']) {
        Some((n, sfx)) => (n, Some(sfx)),
        None => (s, None),
    };
    let ok = numbers
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && suffix.is_none_or(|x| {
            !x.is_empty()
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b))
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not a version (x.y.z)"))
    }
}

/// 1-32 bytes, no control characters.
pub(super) fn parse_ssid(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 32 {
        Err(format!("an SSID has 1-32 bytes, `{s}` has {}", s.len()))
    } else if s.chars().any(char::is_control) {
        Err("an SSID cannot contain control characters".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// A WPA passphrase: 8-63 printable ASCII characters. The message never shows the value.
pub(super) fn check_passphrase(s: &str) -> Result<(), String> {
    if s.len() < 8 || s.len() > 63 {
        Err("a WPA passphrase has 8-63 characters".to_string())
    } else if !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        Err("a WPA passphrase has only printable ASCII characters".to_string())
    } else {
        Ok(())
    }
}

/// A WireGuard key: 32 bytes in base64 (44 characters ending in `=`).
pub(super) fn parse_wg_key(s: &str) -> Result<String, String> {
    let ok = s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a WireGuard key (44 base64 characters ending in `=`)"
        ))
    }
}

pub(super) fn parse_box_number(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 2 && !s.starts_with('+') => Ok(n),
        Ok(_) => Err(format!(
            "box number `{s}` must be greater than 1 (1 is the server)"
        )),
        Err(_) => Err(format!("`{s}` is not a box number")),
    }
}

/// `a.b.c.d/len`; the host bits are cleared.
pub(super) fn parse_ipv4_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!("`{s}` has no prefix length (e.g. 100.90.56.0/24)"));
    };
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{s}` is not an IPv4 network"))?;
    let prefix_len = match len.parse::<u8>() {
        Ok(l) if l <= 32 && !len.starts_with('+') => l,
        _ => return Err(format!("`{s}` has an invalid prefix length")),
    };
    let cidr = Ipv4Cidr { addr, prefix_len };
    Ok(Ipv4Cidr {
        addr: cidr.network(),
        prefix_len,
    })
}

/// `auto`, or comma-separated IPv4/IPv6 networks (a bare address is a host route).
pub(super) fn parse_expose(s: &str) -> Result<WireguardExpose, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(WireguardExpose::Auto);
    }
    let mut cidrs = Vec::new();
    let mut bad = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (addr, len) = match item.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (item, None),
        };
        let parsed = addr.parse::<IpAddr>().ok().and_then(|addr| {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix_len = match len {
                None => max,
                Some(l) if !l.starts_with('+') => l.parse::<u8>().ok().filter(|l| *l <= max)?,
                Some(_) => return None,
            };
            Some(IpCidr { addr, prefix_len })
        });
        match parsed {
            Some(c) => cidrs.push(c),
            None => bad.push(format!("`{item}`")),
        }
    }
    if !bad.is_empty() {
        return Err(format!(
            "not networks (like 10.0.0.0/24): {}",
            bad.join(", ")
        ));
    }
    if cidrs.is_empty() {
        return Err("expected `auto` or comma-separated networks".to_string());
    }
    Ok(WireguardExpose::Cidrs(cidrs))
}

/// 16 hex digits, returned in lowercase.
pub(super) fn parse_zerotier_id(s: &str) -> Result<String, String> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{s}` is not a ZeroTier network id (16 hex digits)"
        ))
    }
}

/// A Docker container or network name.
pub(super) fn parse_docker_name(s: &str) -> Result<String, String> {
    let ok = s.len() >= 2
        && s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a container or network name (letters, digits, `_.-`, at least 2)"
        ))
    }
}

/// An image reference: no whitespace or control characters.
pub(super) fn parse_image(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("`{s}` is not an image reference"))
    } else {
        Ok(s.to_string())
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`; credentials belong in their own variables.
pub(super) fn parse_broker_url(s: &str) -> Result<BrokerUrl, String> {
    let lower = s.to_ascii_lowercase();
    let (tls, rest) = if lower.starts_with("mqtt://") {
        (false, &s[7..])
    } else if lower.starts_with("mqtts://") {
        (true, &s[8..])
    } else {
        return Err(format!("`{s}` does not start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(
            "put the credentials in IOHUBOS_BRIDGE_USERNAME and IOHUBOS_BRIDGE_PASSWORD, not in the URL"
                .to_string(),
        );
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("`{s}` has a path; expected mqtt://host[:port]"));
    }
    let bad = || format!("`{s}` is not mqtt://host[:port]");
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if !host.contains(':') {
        parse_host(host).map_err(|_| bad())?;
    }
    let port = match port {
        Some(p) => parse_port(p)?,
        None if tls => 8883,
        None => 1883,
    };
    Ok(BrokerUrl {
        tls,
        host: host.to_string(),
        port,
    })
}

/// Comma-separated MQTT topic filters.
pub(super) fn parse_topics(s: &str) -> Result<Vec<String>, String> {
    let mut topics = Vec::new();
    for filter in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let levels: Vec<&str> = filter.split('/').collect();
        let ok = !filter.contains('\0')
            && levels.iter().enumerate().all(|(i, l)| {
                (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
                    && (!l.contains('+') || *l == "+")
            });
        if !ok {
            return Err(format!(
                "`{filter}` is not an MQTT topic filter (`+` and `#` must be whole levels, `#` last)"
            ));
        }
        topics.push(filter.to_string());
    }
    if topics.is_empty() {
        return Err("expected at least one topic filter".to_string());
    }
    Ok(topics)
}

/// A topic name of one or more levels with no wildcard, no empty level: `fleet`, `acme/fleet`.
pub(super) fn parse_fleet_prefix(s: &str) -> Result<String, String> {
    if s.split('/')
        .all(|l| !l.is_empty() && !l.contains(['+', '#', '\0']))
    {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a topic prefix (levels without `+`, `#` or empty levels)"
        ))
    }
}

/// One topic level, not `all` (which addresses every box).
pub(super) fn parse_box_id(s: &str) -> Result<String, String> {
    if s == "all" {
        return Err("`all` addresses every box: it cannot be a box's name".to_string());
    }
    if s.contains(['/', '+', '#', '\0']) {
        return Err(format!("`{s}` is not one topic level (no `/`, `+`, `#`)"));
    }
    Ok(s.to_string())
}

/// `<verb>` or `<service>/<verb>` entries, each naming a known verb (and service).
pub(super) fn parse_fleet_commands(s: &str) -> Result<Vec<String>, String> {
    use crate::topic::{ServiceName, Verb};
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let (service, verb) = match entry.split_once('/') {
                Some((service, verb)) => (Some(service), verb),
                None => (None, entry),
            };
            let known_service = service.is_none_or(|sv| sv.parse::<ServiceName>().is_ok());
            if known_service && verb.parse::<Verb>().is_ok() {
                Ok(entry.to_string())
            } else {
                Err(format!(
                    "`{entry}` is not `<verb>` or `<service>/<verb>` of a known service and verb"
                ))
            }
        })
        .collect()
}

pub(super) fn parse_queue_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=65_536).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => Err(format!("`{s}` is not a queue size in MiB (1-65536)")),
    }
}

pub(super) fn parse_upgrader_url(s: &str) -> Result<String, String> {
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(format!("`{s}` does not start with https://"));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{s}` names no host"));
    }
    if host.contains('@') {
        return Err("credentials do not belong in the URL: use IOHUBOS_UPGRADER_CERT and IOHUBOS_UPGRADER_KEY".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{s}` contains spaces or control characters"));
    }
    Ok(s.to_string())
}

/// A file the box reads: absolute, or relative to the data root (`/iohub`); no `..`.
pub(super) fn parse_file_path(s: &str) -> Result<String, String> {
    if s.split('/').any(|c| c == "..") {
        return Err(format!("`{s}` contains `..`"));
    }
    if s.ends_with('/') || s.chars().any(char::is_control) {
        return Err(format!("`{s}` is not a file path"));
    }
    Ok(s.to_string())
}

pub(super) fn parse_poll_secs(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (10..=604_800).contains(&n) && !s.starts_with('+') => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of seconds from 10 to 604800"
        )),
    }
}

/// `HH:MM-HH:MM`, 24-hour clock; start and end differ.
pub(super) fn parse_window(s: &str) -> Result<super::values::MaintenanceWindow, String> {
    fn minute(t: &str) -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    }
    let bad = || format!("`{s}` is not a window HH:MM-HH:MM (e.g. 02:00-04:00)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (start_minute, end_minute) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
    if start_minute == end_minute {
        return Err(format!("`{s}` is an empty window"));
    }
    Ok(super::values::MaintenanceWindow {
        start_minute,
        end_minute,
    })
}
