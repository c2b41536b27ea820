//! `forwards-tcp`/`forwards-udp` and `routes` (`bus_schema::files`): the strict parsers with
//! per-line errors, and the printers they round-trip with.

use std::net::Ipv4Addr;

use bus_schema::files::{
    parse_forwards, parse_routes, print_forwards, print_routes, Forward, PortRange, Proto, Route,
};
use expect_test::{expect, Expect};
use proptest::prelude::*;

fn render_errors(out: &mut String, errors: Vec<bus_schema::LineError>) {
    for e in errors {
        out.push_str(&format!(
            "{}:{}: [{}] {} | {:?}\n",
            e.file, e.line, e.code, e.reason, e.text
        ));
    }
}

fn check_forwards(text: &str, expect: Expect) {
    let (fwds, errors) = parse_forwards("forwards-tcp", Proto::Tcp, text);
    let mut out = String::new();
    for f in &fwds {
        out.push_str(&format!(
            "line {}: {}-{} -> {}:{}\n",
            f.line, f.src.start, f.src.end, f.dst_ip, f.dst_port
        ));
    }
    render_errors(&mut out, errors);
    expect.assert_eq(&out);
}

fn check_routes(text: &str, expect: Expect) {
    let (routes, errors) = parse_routes("routes", text);
    let mut out = String::new();
    for r in &routes {
        out.push_str(&format!(
            "line {}: {}/{} via {}\n",
            r.line, r.dest, r.prefix_len, r.gateway
        ));
    }
    render_errors(&mut out, errors);
    expect.assert_eq(&out);
}

#[test]
fn the_default_files_parse_to_nothing() {
    // As 0013-firmware-setup.sh creates them (comment lines only).
    check_forwards(
        "# Port forwarding TCP\n# SRC_PORT=DST_IP:DST_PORT\n# e.g. 8080=192.168.190.10:80\n",
        expect![""],
    );
    check_routes(
        "# Routes\n# DESTINATION/PREFIX:GATEWAY\n# e.g. 192.168.152.0/24:10.11.12.100\n",
        expect![""],
    );
}

#[test]
fn forwards_accept_real_world_formatting() {
    check_forwards(
        "8080=192.168.190.10:80\r\n  # indented comment\n\n \t \n 2222 = 192.168.190.11 : 22 \n8000:8010=192.168.190.12:8000\n8011 : 8011=10.0.0.1:1\n65535=10.0.0.2:65535",
        expect![[r#"
            line 1: 8080-8080 -> 192.168.190.10:80
            line 5: 2222-2222 -> 192.168.190.11:22
            line 6: 8000-8010 -> 192.168.190.12:8000
            line 7: 8011-8011 -> 10.0.0.1:1
            line 8: 65535-65535 -> 10.0.0.2:65535
        "#]],
    );
}

#[test]
fn forwards_report_every_bad_line_and_keep_the_good_ones() {
    check_forwards(
        "70000=10.0.0.1:80
0=10.0.0.1:80
80=10.0.0.1:99999999999999999999999
80
80=10.0.0.1
80=10.0.0.1:80=1
80=fe80::1:80
80=[::1]:80
80=10.0.0.256:80
80=010.0.0.1:80
80=0.0.0.0:80
80=host.lan:80
http=10.0.0.1:80
8010:8000=10.0.0.1:80
1:2:3=10.0.0.1:80
=10.0.0.1:80
80=:80
80=10.0.0.1:
-1=10.0.0.1:80
8080=10.0.0.1:80 # trailing comment
443=10.0.0.1:443
",
        expect![[r#"
            line 21: 443-443 -> 10.0.0.1:443
            forwards-tcp:1: [invalid_value] source port 70000 out of range 1-65535 | "70000=10.0.0.1:80"
            forwards-tcp:2: [invalid_value] source port 0 out of range 1-65535 | "0=10.0.0.1:80"
            forwards-tcp:3: [invalid_value] destination port 99999999999999999999999 out of range 1-65535 | "80=10.0.0.1:99999999999999999999999"
            forwards-tcp:4: [syntax] missing `=`; expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "80"
            forwards-tcp:5: [syntax] missing `:DST_PORT`; expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "80=10.0.0.1"
            forwards-tcp:6: [syntax] more than one `=`; expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "80=10.0.0.1:80=1"
            forwards-tcp:7: [syntax] more than one `:` in the destination (IPv6 is not supported); expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "80=fe80::1:80"
            forwards-tcp:8: [syntax] more than one `:` in the destination (IPv6 is not supported); expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "80=[::1]:80"
            forwards-tcp:9: [invalid_value] destination `10.0.0.256` is not an IPv4 address | "80=10.0.0.256:80"
            forwards-tcp:10: [invalid_value] destination `010.0.0.1` is not an IPv4 address | "80=010.0.0.1:80"
            forwards-tcp:11: [invalid_value] destination 0.0.0.0 is not a usable address | "80=0.0.0.0:80"
            forwards-tcp:12: [invalid_value] destination `host.lan` is not an IPv4 address | "80=host.lan:80"
            forwards-tcp:13: [invalid_value] source port `http` is not a port number | "http=10.0.0.1:80"
            forwards-tcp:14: [invalid_value] source range 8010:8000 starts after it ends | "8010:8000=10.0.0.1:80"
            forwards-tcp:15: [syntax] more than one `:` in the source port range; expected SRC_PORT=DST_IP:DST_PORT (or FIRST:LAST=DST_IP:DST_PORT) | "1:2:3=10.0.0.1:80"
            forwards-tcp:16: [syntax] missing source port | "=10.0.0.1:80"
            forwards-tcp:17: [syntax] missing destination address | "80=:80"
            forwards-tcp:18: [syntax] missing destination port | "80=10.0.0.1:"
            forwards-tcp:19: [invalid_value] source port `-1` is not a port number | "-1=10.0.0.1:80"
            forwards-tcp:20: [invalid_value] destination port `80 # trailing comment` is not a port number | "8080=10.0.0.1:80 # trailing comment"
        "#]],
    );
}

#[test]
fn overlapping_source_ports_are_an_error_on_the_later_line() {
    check_forwards(
        "8000:8010=10.0.0.1:80\n8010=10.0.0.2:80\n7990:8000=10.0.0.3:80\n7000:9000=10.0.0.4:80\n8011=10.0.0.5:80\n8011=10.0.0.6:80\n7999=10.0.0.7:80\n",
        expect![[r#"
            line 1: 8000-8010 -> 10.0.0.1:80
            line 5: 8011-8011 -> 10.0.0.5:80
            line 7: 7999-7999 -> 10.0.0.7:80
            forwards-tcp:2: [conflict] source port 8010 overlaps 8000:8010 already forwarded on line 1 | "8010=10.0.0.2:80"
            forwards-tcp:3: [conflict] source port 7990:8000 overlaps 8000:8010 already forwarded on line 1 | "7990:8000=10.0.0.3:80"
            forwards-tcp:4: [conflict] source port 7000:9000 overlaps 8000:8010 already forwarded on line 1 | "7000:9000=10.0.0.4:80"
            forwards-tcp:6: [conflict] source port 8011 overlaps 8011 already forwarded on line 5 | "8011=10.0.0.6:80"
        "#]],
    );
}

#[test]
fn udp_forwards_carry_their_protocol() {
    let (fwds, errors) = parse_forwards("forwards-udp", Proto::Udp, "5353=10.0.0.1:53\n");
    assert!(errors.is_empty());
    assert_eq!(fwds[0].proto, Proto::Udp);
}

#[test]
fn routes_accept_real_world_formatting() {
    check_routes(
        "192.168.152.0/24:10.11.12.100\r\n  # indented comment\n\n 10.0.0.0 / 8 : 192.168.1.1 \n0.0.0.0/0:192.168.1.254\n10.1.2.3/32:10.0.0.1",
        expect![[r#"
            line 1: 192.168.152.0/24 via 10.11.12.100
            line 4: 10.0.0.0/8 via 192.168.1.1
            line 5: 0.0.0.0/0 via 192.168.1.254
            line 6: 10.1.2.3/32 via 10.0.0.1
        "#]],
    );
}

#[test]
fn routes_report_every_bad_line() {
    check_routes(
        "192.168.152.5/24:10.11.12.100
10.0.0.0/33:10.0.0.1
10.0.0.0/x:10.0.0.1
10.0.0.0/:10.0.0.1
10.0.0.1:10.0.0.254
10.0.0.0/8
10.0.0.0/8:10.0.0.1:1
fd00::/8:fe80::1
10.0.0.0/8/8:10.0.0.1
10.0.0/8:10.0.0.1
10.0.0.0/8:gateway
10.0.0.0/8:0.0.0.0
10.0.0.0/8:
172.16.0.0/12:10.0.0.1
172.16.0.0/12:10.0.0.2
",
        expect![[r#"
            line 14: 172.16.0.0/12 via 10.0.0.1
            routes:1: [invalid_value] 192.168.152.5/24 has host bits set: the destination must be the network address 192.168.152.0/24 | "192.168.152.5/24:10.11.12.100"
            routes:2: [invalid_value] prefix length 33 out of range 0-32 | "10.0.0.0/33:10.0.0.1"
            routes:3: [invalid_value] `x` is not a prefix length (0-32) | "10.0.0.0/x:10.0.0.1"
            routes:4: [syntax] missing prefix length after `/`; expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "10.0.0.0/:10.0.0.1"
            routes:5: [syntax] missing `/PREFIX` (use /32 for a single host); expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "10.0.0.1:10.0.0.254"
            routes:6: [syntax] missing `:GATEWAY`; expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "10.0.0.0/8"
            routes:7: [syntax] more than one `:` (IPv6 is not supported); expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "10.0.0.0/8:10.0.0.1:1"
            routes:8: [syntax] more than one `:` (IPv6 is not supported); expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "fd00::/8:fe80::1"
            routes:9: [syntax] more than one `/`; expected DESTINATION/PREFIX:GATEWAY (e.g. 192.168.152.0/24:10.11.12.100) | "10.0.0.0/8/8:10.0.0.1"
            routes:10: [invalid_value] destination `10.0.0` is not an IPv4 address | "10.0.0/8:10.0.0.1"
            routes:11: [invalid_value] gateway `gateway` is not an IPv4 address | "10.0.0.0/8:gateway"
            routes:12: [invalid_value] gateway 0.0.0.0 is not a usable address | "10.0.0.0/8:0.0.0.0"
            routes:13: [syntax] missing gateway address | "10.0.0.0/8:"
            routes:15: [conflict] route to 172.16.0.0/12 already defined on line 14 | "172.16.0.0/12:10.0.0.2"
        "#]],
    );
}

#[test]
fn printers_write_the_documented_forms() {
    let fwds = [
        Forward {
            proto: Proto::Tcp,
            line: 1,
            src: PortRange {
                start: 8080,
                end: 8080,
            },
            dst_ip: Ipv4Addr::new(192, 168, 190, 10),
            dst_port: 80,
        },
        Forward {
            proto: Proto::Tcp,
            line: 2,
            src: PortRange {
                start: 8000,
                end: 8010,
            },
            dst_ip: Ipv4Addr::new(192, 168, 190, 12),
            dst_port: 8000,
        },
    ];
    assert_eq!(
        print_forwards(&fwds),
        "8080=192.168.190.10:80\n8000:8010=192.168.190.12:8000\n"
    );
    let routes = [Route {
        line: 1,
        dest: Ipv4Addr::new(192, 168, 152, 0),
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 11, 12, 100),
    }];
    assert_eq!(print_routes(&routes), "192.168.152.0/24:10.11.12.100\n");
    assert_eq!(print_forwards(&[]), "");
}

fn usable_ip() -> impl Strategy<Value = Ipv4Addr> {
    (1u32..).prop_map(Ipv4Addr::from)
}

/// Forwards with disjoint source ranges, numbered as the printer lays them out.
fn forward_list(proto: Proto) -> impl Strategy<Value = Vec<Forward>> {
    prop::collection::vec((1u16.., 0u16..40, usable_ip(), 1u16..), 0..30).prop_map(move |raw| {
        let mut out: Vec<Forward> = Vec::new();
        for (start, width, dst_ip, dst_port) in raw {
            let end = start.saturating_add(width);
            if out.iter().any(|f| f.src.start <= end && start <= f.src.end) {
                continue;
            }
            out.push(Forward {
                proto,
                line: out.len() + 1,
                src: PortRange { start, end },
                dst_ip,
                dst_port,
            });
        }
        out
    })
}

fn route_list() -> impl Strategy<Value = Vec<Route>> {
    prop::collection::vec((any::<u32>(), 0u8..=32, usable_ip()), 0..30).prop_map(|raw| {
        let mut out: Vec<Route> = Vec::new();
        for (addr, prefix_len, gateway) in raw {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            let dest = Ipv4Addr::from(addr & mask);
            if out
                .iter()
                .any(|r| r.dest == dest && r.prefix_len == prefix_len)
            {
                continue;
            }
            out.push(Route {
                line: out.len() + 1,
                dest,
                prefix_len,
                gateway,
            });
        }
        out
    })
}

proptest! {
    #[test]
    fn forwards_round_trip(proto in prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)], fwds in forward_list(Proto::Tcp)) {
        let fwds: Vec<Forward> = fwds.into_iter().map(|f| Forward { proto, ..f }).collect();
        let (back, errors) = parse_forwards("forwards", proto, &print_forwards(&fwds));
        prop_assert_eq!(errors, vec![]);
        prop_assert_eq!(back, fwds);
    }

    #[test]
    fn routes_round_trip(routes in route_list()) {
        let (back, errors) = parse_routes("routes", &print_routes(&routes));
        prop_assert_eq!(errors, vec![]);
        prop_assert_eq!(back, routes);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_text(text in any::<String>()) {
        let _ = parse_forwards("f", Proto::Tcp, &text);
        let _ = parse_routes("r", &text);
    }

    #[test]
    fn parsers_never_panic_on_near_miss_text(text in "[0-9.:=/# \t\r\n\u{feff}a-f-]{0,200}") {
        let (fwds, errors) = parse_forwards("f", Proto::Udp, &text);
        // Every line that holds a rule yields either an entry or an error.
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let rules = body.split('\n').filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        }).count();
        prop_assert_eq!(fwds.len() + errors.len(), rules);
        let _ = parse_routes("r", &text);
    }
}
