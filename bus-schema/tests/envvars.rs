//! The envvars reader, editor and layering (`bus_schema::envvars`), driven by text: each case is a
//! file (and the files it may include) and the variables and errors it yields.

use std::collections::BTreeMap;

use bus_schema::envvars::{
    assignments, eval, layer_version, parse_version, quote, select_layers, set, Vars,
};
use expect_test::{expect, Expect};
use proptest::prelude::*;

/// Evaluate `text` as `envvars` on top of `pre`, with `files` reachable by include; render the
/// variables it set or changed and the errors.
fn run(pre: &[(&str, &str)], text: &str, files: &[(&str, &str)]) -> String {
    let mut vars: Vars = pre
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let before = vars.clone();
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let errors = eval("envvars", text, &mut vars, &mut |p| files.get(p).cloned());
    let mut out = String::new();
    for (k, v) in &vars {
        if before.get(k) != Some(v) {
            out.push_str(&format!("{k}={v:?}\n"));
        }
    }
    for e in errors {
        out.push_str(&format!(
            "{}:{}: [{}] {} | {}\n",
            e.file, e.line, e.code, e.reason, e.text
        ));
    }
    out
}

fn check(text: &str, expect: Expect) {
    expect.assert_eq(&run(&[], text, &[]));
}

const ENVVARS_110: &str = "# VPN configuration (1.1.0) - deprecated, to be removed in 1.1.2
IOHUBOS_VPN_ENABLED='false'
IOHUBOS_VPN_SERVER_PUBLIC_KEY=''
IOHUBOS_VPN_BOX_NUMBER=''
IOHUBOS_VPN_NETWORK=''
IOHUBOS_VPN_SERVER_IP_ADDRESS=''
IOHUBOS_VPN_SERVER_IP_PORT=''
IOHUBOS_VPN_EXPOSE='auto'
IOHUBOS_VPN_ACCESS_HOST='false'
";

const ENVVARS_111: &str = "# Wireguard configuration (1.1.1)
[[ -f /iohub/envvars.d/1.1.0-envvars ]] && . /iohub/envvars.d/1.1.0-envvars
IOHUBOS_WIREGUARD_ENABLED=\"${IOHUBOS_VPN_ENABLED:-false}\"
IOHUBOS_WIREGUARD_EXPOSE=\"${IOHUBOS_VPN_EXPOSE:-auto}\"
IOHUBOS_ZEROTIER_ENABLED='false'
";

#[test]
fn the_shipped_1_1_1_file_inherits_from_the_1_1_0_file_it_includes() {
    let vpn = ENVVARS_110
        .replace("EXPOSE='auto'", "EXPOSE='10.0.0.0/8'")
        .replace("VPN_ENABLED='false'", "VPN_ENABLED='true'");
    let mut vars = Vars::new();
    let mut asked = Vec::new();
    let errors = eval(
        "envvars.d/1.1.1-envvars",
        ENVVARS_111,
        &mut vars,
        &mut |p| {
            asked.push(p.to_string());
            Some(vpn.clone())
        },
    );
    assert_eq!(errors, vec![]);
    assert_eq!(asked, vec!["/iohub/envvars.d/1.1.0-envvars"]);
    assert_eq!(vars["IOHUBOS_WIREGUARD_ENABLED"], "true");
    assert_eq!(vars["IOHUBOS_WIREGUARD_EXPOSE"], "10.0.0.0/8");
    assert_eq!(vars["IOHUBOS_ZEROTIER_ENABLED"], "false");
    assert_eq!(vars["IOHUBOS_VPN_SERVER_PUBLIC_KEY"], "");
}

#[test]
fn the_shipped_1_1_1_file_without_the_1_1_0_file_uses_its_defaults() {
    expect![[r#"
        IOHUBOS_WIREGUARD_ENABLED="false"
        IOHUBOS_WIREGUARD_EXPOSE="auto"
        IOHUBOS_ZEROTIER_ENABLED="false"
    "#]]
    .assert_eq(&run(&[], ENVVARS_111, &[]));
    // With the shipped 1.1.0 file the result is the same.
    let with = run(
        &[],
        ENVVARS_111,
        &[("/iohub/envvars.d/1.1.0-envvars", ENVVARS_110)],
    );
    assert!(with.contains("IOHUBOS_WIREGUARD_EXPOSE=\"auto\""), "{with}");
    assert!(!with.contains('['), "{with}");
}

const SYSVARS: &str = "# IOhubOS system variables, written by the installer
IOHUBOS_DEVICE=\"/dev/sda\"
IOHUBOS_ETH0_DEVICE=\"enp1s0\"
IOHUBOS_HOSTNAME=\"iohub-525400aabbcc\"

";

#[test]
fn interpolation_is_positional_like_bash_sourcing() {
    let mut vars = Vars::new();
    let errors = eval("sysvars", SYSVARS, &mut vars, &mut |_| None);
    assert_eq!(errors, vec![]);
    let text = "IOHUBOS_DOCKER_REGISTRY_PORT=5000
IOHUBOS_GLOBAL_MQTT_IMG=\"${IOHUBOS_HOSTNAME}:${IOHUBOS_DOCKER_REGISTRY_PORT}/iohubos/iohubos-mqtt\"
LATE=\"${DEFINED_LATER}x\"
DEFINED_LATER=1
";
    assert_eq!(eval("envvars", text, &mut vars, &mut |_| None), vec![]);
    assert_eq!(
        vars["IOHUBOS_GLOBAL_MQTT_IMG"],
        "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt"
    );
    assert_eq!(vars["LATE"], "x");
    assert_eq!(vars["IOHUBOS_ETH0_DEVICE"], "enp1s0");
}

#[test]
fn a_missing_registry_port_line_gives_the_broken_reference_bash_gives() {
    let out = run(
        &[("IOHUBOS_HOSTNAME", "iohub-525400aabbcc")],
        "IOHUBOS_GLOBAL_MQTT_IMG=\"${IOHUBOS_HOSTNAME}:${IOHUBOS_DOCKER_REGISTRY_PORT}/iohubos/iohubos-mqtt\"\n",
        &[],
    );
    expect![[r#"
        IOHUBOS_GLOBAL_MQTT_IMG="iohub-525400aabbcc:/iohubos/iohubos-mqtt"
    "#]]
    .assert_eq(&out);
}

#[test]
fn quoting_styles_and_concatenations() {
    check(
        r#"PLAIN=value
SINGLE='a $B ${C} "q" \n'
DOUBLE="x ${PLAIN} $PLAIN y"
CONCAT="x"'y'z$PLAIN
EMPTY=
EMPTY2=''
DOLLARS="\$PLAIN \"quoted\" back\\slash \n $ end$"
UNQ=a\ b\$c
LITERAL_DOLLAR=cost$/x$
BRACES=a{b,c}*?[x]
HASH=a#b
URL=http://host:5000/x?y=1&z
"#,
        expect![[r#"
            BRACES="a{b,c}*?[x]"
            CONCAT="xyzvalue"
            DOLLARS="$PLAIN \"quoted\" back\\slash \\n $ end$"
            DOUBLE="x value value y"
            EMPTY=""
            EMPTY2=""
            HASH="a#b"
            LITERAL_DOLLAR="cost$/x$"
            PLAIN="value"
            SINGLE="a $B ${C} \"q\" \\n"
            UNQ="a b$c"
            envvars:12: [forbidden] running in the background with `&` is not allowed; nothing was executed | URL=http://host:5000/x?y=1&z
        "#]],
    );
}

#[test]
fn default_expansions_follow_bash() {
    check(
        r#"SET=v
EMPTY=''
A="${UNSET:-d}" B="${EMPTY:-d}" 
A1="${UNSET:-d}"
B1="${EMPTY:-d}"
C1="${EMPTY-d}"
D1="${UNSET-d}"
E1="${SET:-d}"
F1="${UNSET:-}"
G1="${UNSET:-${EMPTY:-${SET}}}"
H1=${UNSET:-"in dq" 'kept' $SET}
I1=${UNSET:-'x y' "$SET" z}
J1="${UNSET:-a\}b}"
K1=${UNSET:-\$SET}
"#,
        expect![[r#"
            A1="d"
            B1="d"
            C1=""
            D1="d"
            E1="v"
            EMPTY=""
            F1=""
            G1="v"
            H1="in dq kept v"
            I1="x y v z"
            J1="a}b"
            K1="$SET"
            SET="v"
            envvars:3: [syntax] only one assignment per line is supported | A="${UNSET:-d}" B="${EMPTY:-d}" 
        "#]],
    );
}

#[test]
fn bash_corner_cases_match_bash_or_are_refused() {
    // Every accepted value here was checked with bash 5.2.
    check(
        r#"B="${U-${U-''}}"
D="${U-${U-x}y}"
J="${U-a\}b}"
K="${U-\a}"
L=${U-"\a"}
M="${U-$U x}"
N=${U-"${U-\a}"}
O="${U-'}'}"
P="${U-$U"b"}"
Q=${U-$U"b"}
"#,
        expect![[r#"
            D="xy"
            J="a}b"
            K="\\a"
            L="\\a"
            M=" x"
            N="\\a"
            Q="b"
            envvars:1: [syntax] single quotes inside a double-quoted `${VAR:-...}` are kept literally by bash; remove them (the default is already quoted) or write ${VAR:-'...'} outside double quotes | B="${U-${U-''}}"
            envvars:8: [syntax] single quotes inside a double-quoted `${VAR:-...}` are kept literally by bash; remove them (the default is already quoted) or write ${VAR:-'...'} outside double quotes | O="${U-'}'}"
            envvars:9: [syntax] double quotes inside a double-quoted `${VAR:-...}` are not supported (bash handles them inconsistently); remove them, the default is already quoted | P="${U-$U"b"}"
        "#]],
    );
}

#[test]
fn export_whitespace_comments_and_blank_lines() {
    check(
        "  # indented comment\n\n\t\nexport A=1\n   B='2'   # trailing comment\nexport  C=\"3\"#not-a-comment\nD=4 #c 'unbalanced\n#E=5\n",
        expect![[r#"
            A="1"
            B="2"
            C="3#not-a-comment"
            D="4"
        "#]],
    );
}

#[test]
fn crlf_line_endings_and_a_last_line_without_newline() {
    check(
        "# comment\r\nA='x'\r\nB=\"y ${A}\"  # c\r\nC=plain\r\nD=\"multi\r\nline\"\r\nE=last",
        expect![[r#"
            A="x"
            B="y x"
            C="plain"
            D="multi\nline"
            E="last"
        "#]],
    );
}

#[test]
fn a_quoted_value_may_span_lines() {
    check(
        "IOHUBOS_SSH_PUBLIC_KEY=\"ssh-ed25519 AAAA1 me@a\nssh-ed25519 AAAA2 me@b\"\nNEXT='a\n# not a comment\nb'\nAFTER=continued\\\nline\n",
        expect![[r#"
            AFTER="continuedline"
            IOHUBOS_SSH_PUBLIC_KEY="ssh-ed25519 AAAA1 me@a\nssh-ed25519 AAAA2 me@b"
            NEXT="a\n# not a comment\nb"
        "#]],
    );
}

#[test]
fn anything_that_would_execute_is_forbidden_and_not_applied() {
    check(
        r#"OK=1
A=$(id)
B=`id`
C="x $(rm -rf /) y"
D=1; rm -rf /
E=1 && reboot
F=1 || reboot
G=1 | tee /x
H=1 > /etc/passwd
I=1 &
rm -rf /
if true; then X=1; fi
for i in 1 2; do :; done
f() { :; }
function g { :; }
. /etc/profile
source /etc/profile
[[ -n "$A" ]] && X=1
( X=1 )
J= reboot
K =1
L=1 reboot
M="${UNSET:-$(id)}"
"$CMD" arg
OK2=2
"#,
        expect![[r#"
            OK="1"
            OK2="2"
            envvars:2: [forbidden] command substitution $(...) is not allowed; nothing was executed | A=$(id)
            envvars:3: [forbidden] command substitution `...` is not allowed; nothing was executed | B=`id`
            envvars:4: [forbidden] command substitution $(...) is not allowed; nothing was executed | C="x $(rm -rf /) y"
            envvars:5: [forbidden] `;` followed by a command is not allowed; nothing was executed | D=1; rm -rf /
            envvars:6: [forbidden] `&&` followed by a command is not allowed; nothing was executed | E=1 && reboot
            envvars:7: [forbidden] `||` followed by a command is not allowed; nothing was executed | F=1 || reboot
            envvars:8: [forbidden] pipes `|` are not allowed; nothing was executed | G=1 | tee /x
            envvars:9: [forbidden] redirections are not allowed; nothing was executed | H=1 > /etc/passwd
            envvars:10: [forbidden] running in the background with `&` is not allowed; nothing was executed | I=1 &
            envvars:11: [forbidden] command `rm` is not allowed; nothing was executed | rm -rf /
            envvars:12: [forbidden] `if` statements are not allowed; nothing was executed | if true; then X=1; fi
            envvars:13: [forbidden] `for` statements are not allowed; nothing was executed | for i in 1 2; do :; done
            envvars:14: [forbidden] function definitions are not allowed; nothing was executed | f() { :; }
            envvars:15: [forbidden] `function` is not allowed; nothing was executed | function g { :; }
            envvars:16: [forbidden] sourcing a file is only allowed in the form `[[ -f PATH ]] && . PATH`; nothing was executed | . /etc/profile
            envvars:17: [forbidden] sourcing a file is only allowed in the form `[[ -f PATH ]] && . PATH`; nothing was executed | source /etc/profile
            envvars:18: [forbidden] the only conditional allowed is the include form `[[ -f PATH ]] && . PATH`; nothing was executed | [[ -n "$A" ]] && X=1
            envvars:19: [forbidden] subshells `( ... )` and arithmetic commands `(( ... ))` are not allowed; nothing was executed | ( X=1 )
            envvars:20: [forbidden] `reboot` after the value would run as a command (no spaces are allowed after `=`; quote a value with spaces); nothing was executed | J= reboot
            envvars:21: [forbidden] `K =` would run `K` as a command: no spaces are allowed around `=` in an assignment; nothing was executed | K =1
            envvars:22: [forbidden] `reboot` after the value would run as a command (quote a value with spaces); nothing was executed | L=1 reboot
            envvars:23: [forbidden] command substitution $(...) is not allowed; nothing was executed | M="${UNSET:-$(id)}"
            envvars:24: [forbidden] a command is not allowed; nothing was executed | "$CMD" arg
        "#]],
    );
}

#[test]
fn unsupported_syntax_is_reported_and_not_applied() {
    check(
        r#"A=$((1+2))
B=${X:=x}
C=${X/a/b}
D=${#X}
E=${!X}
F=${X:+y}
G=${X:?}
H=${X:1}
1BAD=x
BAD-NAME=x
I+=x
J[0]=x
K=(a b)
L=$1
M=$'a\tb'
N=~/x
O="${X"
P="unterminated
Q='also unterminated
R=${X
export
S=1;
T=1 U=2
AFTER=ok
"#,
        expect![[r#"
            AFTER="ok"
            envvars:1: [syntax] arithmetic expansion $((...)) is not supported | A=$((1+2))
            envvars:2: [syntax] `${X:=...}` assigns a variable, which is not supported; use `${X:-default}` | B=${X:=x}
            envvars:3: [syntax] pattern expansion `${X/...}` is not supported | C=${X/a/b}
            envvars:4: [syntax] length expansion `${#VAR}` is not supported | D=${#X}
            envvars:5: [syntax] indirect expansion `${!VAR}` is not supported | E=${!X}
            envvars:6: [syntax] `${X:+...}` (alternative value) is not supported; use `${X:-default}` | F=${X:+y}
            envvars:7: [syntax] `${X:?...}` aborts on an unset variable, which is not supported; use `${X:-default}` | G=${X:?}
            envvars:8: [syntax] substring expansion `${X:...}` is not supported | H=${X:1}
            envvars:9: [syntax] `1BAD` is not a valid variable name (letters, digits and `_`, not starting with a digit) | 1BAD=x
            envvars:10: [syntax] `BAD-NAME` is not a valid variable name (letters, digits and `_`, not starting with a digit) | BAD-NAME=x
            envvars:11: [syntax] appending with `+=` is not supported; write NAME="${NAME}more" | I+=x
            envvars:12: [syntax] array elements `NAME[...]=` are not supported | J[0]=x
            envvars:13: [syntax] array assignments `NAME=(...)` are not supported | K=(a b)
            envvars:14: [syntax] special parameter `$1` is not supported | L=$1
            envvars:15: [syntax] ANSI-C quoting $'...' is not supported | M=$'a\tb'
            envvars:16: [syntax] tilde expansion `~` is not supported; write the full path or quote it | N=~/x
            envvars:17: [syntax] bad substitution in `${X...}`: supported are `${VAR}`, `${VAR:-default}`, `${VAR-default}` | O="${X"
            envvars:18: [syntax] unterminated double quote | P="unterminated
            envvars:19: [syntax] unterminated single quote | Q='also unterminated
            envvars:20: [syntax] missing `}` to close `${` | R=${X
            envvars:21: [forbidden] command `export` is not allowed; nothing was executed | export
            envvars:22: [syntax] a trailing `;` is not supported | S=1;
            envvars:23: [syntax] only one assignment per line is supported | T=1 U=2
        "#]],
    );
}

#[test]
fn errors_point_at_the_physical_line_of_a_multi_line_statement() {
    check(
        "A=1\nB=\"first\nsecond $(id)\"\nC=3\n",
        expect![[r#"
            A="1"
            C="3"
            envvars:3: [forbidden] command substitution $(...) is not allowed; nothing was executed | second $(id)"
        "#]],
    );
}

#[test]
fn secrets_are_never_echoed_in_errors() {
    check(
        "IOHUBOS_WIFI_CLIENT_PASS=hunter2 secret\nIOHUBOS_ADMIN_API_AUTH_TOKEN=$(cat /t)\nIOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY=abc def\nPRIVATE_KEY = abc\nOK=1\nrm x\nIOHUBOS_WIFI_AP_PASS=\"unterminated\nREST_OF_IT\nMORE\n\nAFTER_BLANK=1\nrm y\nexport MY_SECRET='x\n",
        expect![[r#"
            AFTER_BLANK="1"
            OK="1"
            envvars:1: [forbidden] the next word after the value would run as a command (quote a value with spaces); nothing was executed | IOHUBOS_WIFI_CLIENT_PASS=<redacted>
            envvars:2: [forbidden] command substitution $(...) is not allowed; nothing was executed | IOHUBOS_ADMIN_API_AUTH_TOKEN=<redacted>
            envvars:3: [forbidden] `def` after the value would run as a command (quote a value with spaces); nothing was executed | IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY=abc def
            envvars:4: [forbidden] `PRIVATE_KEY =` would run `PRIVATE_KEY` as a command: no spaces are allowed around `=` in an assignment; nothing was executed | PRIVATE_KEY=<redacted>
            envvars:6: [forbidden] command `rm` is not allowed; nothing was executed | rm x
            envvars:7: [syntax] unterminated double quote | IOHUBOS_WIFI_AP_PASS=<redacted>
            envvars:8: [forbidden] a command is not allowed; nothing was executed | <redacted: may continue a secret value>
            envvars:9: [forbidden] a command is not allowed; nothing was executed | <redacted: may continue a secret value>
            envvars:12: [forbidden] command `rm` is not allowed; nothing was executed | rm y
            envvars:13: [syntax] unterminated single quote | MY_SECRET=<redacted>
        "#]],
    );
}

#[test]
fn includes_nest_report_cycles_and_name_their_file_in_errors() {
    let files = [
        ("/a", "A=1\n[[ -f /b ]] && . /b\n"),
        ("/b", "B=\"$A\"\nbad line\n[ -f /c ] && source /c\n"),
        ("/c", "[[ -f /a ]] && . /a\n"),
        ("/d1", "[[ -f /d2 ]] && . /d2\n"),
        ("/d2", "[[ -f /d3 ]] && . /d3\n"),
        ("/d3", "[[ -f /d4 ]] && . /d4\n"),
        ("/d4", "[[ -f /d5 ]] && . /d5\nD4=reached\n"),
        ("/d5", "D5=too_deep\n"),
    ];
    let out = run(
        &[],
        "[[ -f /a ]] && . /a\n[[ -f /absent ]] && . /absent\n[[ -f /a ]] && . /b\n[[ -f /d1 ]] && . /d1  # deep\n[[ -f \"/${DIR:-d1}\" ]] && . '/d1'\n[[ -f /envvars ]] && . /envvars\n",
        &files,
    );
    expect![[r#"
        A="1"
        B="1"
        D4="reached"
        /b:2: [forbidden] command `bad` is not allowed; nothing was executed | bad line
        /c:1: [syntax] include cycle: envvars -> /a -> /b -> /c -> /a | [[ -f /a ]] && . /a
        envvars:3: [syntax] the tested path `/a` differs from the sourced path `/b` | [[ -f /a ]] && . /b
        /d4:1: [syntax] includes nested deeper than 4 levels | [[ -f /d5 ]] && . /d5
        /d4:1: [syntax] includes nested deeper than 4 levels | [[ -f /d5 ]] && . /d5
        envvars:6: [syntax] include cycle: envvars -> /envvars | [[ -f /envvars ]] && . /envvars
    "#]]
    .assert_eq(&out);
}

#[test]
fn oversized_values_are_refused_not_allocated() {
    let mut text = String::from("A=0123456789abcdef\n");
    for _ in 0..40 {
        text.push_str("A=\"$A$A\"\n");
    }
    let mut vars = Vars::new();
    let errors = eval("envvars", &text, &mut vars, &mut |_| None);
    assert!(vars["A"].len() <= bus_schema::envvars::MAX_VALUE_LEN);
    assert!(!errors.is_empty());
    assert!(errors
        .iter()
        .all(|e| e.code == bus_schema::ErrorCode::InvalidValue));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let text = format!("A={}x{}\n", "${U:-".repeat(100_000), "}".repeat(100_000));
    let out = run(&[], &text, &[]);
    assert!(out.contains("nested deeper than 32"), "{out}");
}

#[test]
fn many_unterminated_quotes_stop_reading_instead_of_scanning_forever() {
    let text = "A=${\n".repeat(50_000);
    let mut vars = Vars::new();
    let errors = eval("envvars", &text, &mut vars, &mut |_| None);
    assert_eq!(errors.len(), 33);
    let last = errors.last().map(|e| (e.line, e.reason.as_str()));
    assert_eq!(
        last,
        Some((
            33,
            "more than 32 unterminated quotes above; the rest of the file was not read"
        ))
    );
    // The editor fixes the last line it read and leaves the unread rest alone.
    let edited = set(&text, &[upd("A", Some("v"))]);
    let rest = &text["A=${\n".len() * 32..];
    assert_eq!(
        edited.strip_suffix(rest).map(|e| e.ends_with("\nA='v'\n")),
        Some(true)
    );
}

#[test]
fn assignments_lists_raw_values_in_order() {
    let text = "# c\nA='x'\r\nexport B=\"${A:-y}\" # c\nbad line\nC=\"multi\r\nline\"\nA=2\nD=\n";
    let got: Vec<String> = assignments(text)
        .into_iter()
        .map(|a| format!("{}:{}={}", a.line, a.name, a.raw))
        .collect();
    expect![[r#"
        [
            "2:A='x'",
            "3:B=\"${A:-y}\"",
            "5:C=\"multi\nline\"",
            "7:A=2",
            "8:D=",
        ]
    "#]]
    .assert_debug_eq(&got);
}

fn upd(name: &str, value: Option<&str>) -> (String, Option<String>) {
    (name.to_string(), value.map(str::to_string))
}

#[test]
fn set_replaces_the_last_assignment_in_place() {
    let text = "# head\nA=1 # first\nexport A=\"2\"   # keep me\nB=x\n";
    expect![[r#"
        # head
        A=1 # first
        export A='new '\''v'\'''   # keep me
        B=x
    "#]]
    .assert_eq(&set(text, &[upd("A", Some("new 'v'"))]));
}

#[test]
fn set_appends_keeping_line_endings() {
    assert_eq!(set("", &[upd("A", Some("1"))]), "A='1'\n");
    assert_eq!(set("X=1", &[upd("A", Some("1"))]), "X=1\nA='1'\n");
    assert_eq!(
        set("X=1\r\nY=2", &[upd("A", Some("1"))]),
        "X=1\r\nY=2\r\nA='1'\r\n"
    );
    assert_eq!(set("X=1\r\n", &[upd("X", Some("2"))]), "X='2'\r\n");
}

#[test]
fn set_removes_every_assignment_and_fixes_broken_ones() {
    let text = "A=1\n# keep\n  A=\"multi\nline\" # gone\nB=2\nA=$(id) # broken\n";
    assert_eq!(set(text, &[upd("A", None)]), "# keep\nB=2\n");
    assert_eq!(
        set(text, &[upd("A", Some("v"))]),
        "A=1\n# keep\n  A=\"multi\nline\" # gone\nB=2\nA='v'\n"
    );
    // Invalid names are ignored; updates apply in order.
    assert_eq!(
        set(
            "B=2\n",
            &[upd("1X", Some("v")), upd("C", Some("3")), upd("B", None)]
        ),
        "C='3'\n"
    );
}

#[test]
fn quote_writes_single_quotes() {
    assert_eq!(quote(""), "''");
    assert_eq!(quote("it's $x"), "'it'\\''s $x'");
}

#[test]
fn layer_versions_follow_get_version() {
    assert_eq!(layer_version("1.1.0-envvars"), Some([1, 1, 0, 0]));
    assert_eq!(
        layer_version("/iohub/envvars.d/1.1.3-envvars"),
        Some([1, 1, 3, 0])
    );
    assert_eq!(layer_version("1.2.3.4-envvars"), Some([1, 2, 3, 4]));
    assert_eq!(layer_version("3.a.x3-envvars"), Some([3, 0, 0, 0]));
    assert_eq!(layer_version("1.1-envvars"), None);
    assert_eq!(layer_version("1.1.1-envvars.bak"), None);
    assert_eq!(layer_version(".1.1.1-envvars"), None);
    assert_eq!(layer_version("1.1.1-envars"), None);
    assert_eq!(parse_version("1.1.3"), Some([1, 1, 3, 0]));
    assert_eq!(parse_version(" 1.1.3\n"), Some([1, 1, 3, 0]));
    assert_eq!(parse_version("2"), Some([2, 0, 0, 0]));
    assert_eq!(parse_version(""), None);
    assert_eq!(parse_version("v1"), None);
}

#[test]
fn select_layers_sorts_like_sort_v_and_drops_newer_and_foreign_files() {
    let names: Vec<String> = [
        "1.1.10-envvars",
        "9.9.9-envvars",
        "1.1.2-envvars",
        "README",
        "1.0.0-envvars",
        "1.1.1-envvars",
        "1.1.3-envvars",
        "1.1.1-envvars~",
        "01.1.1-envvars",
        "1.1.0a-envvars",
        "1.1.0-envvars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Reference: `printf '%s\n' ... | sort -V` with GNU coreutils 9.1, minus dropped names.
    expect![[r#"
        [
            "1.0.0-envvars",
            "1.1.0a-envvars",
            "1.1.0-envvars",
            "01.1.1-envvars",
            "1.1.1-envvars",
            "1.1.2-envvars",
            "1.1.3-envvars",
        ]
    "#]]
    .assert_debug_eq(&select_layers(&names, [1, 1, 3, 0]));
}

proptest! {
    #[test]
    fn eval_never_panics_on_arbitrary_text(text in any::<String>()) {
        let mut vars = Vars::new();
        let body = text.clone();
        let _ = eval("envvars", &text, &mut vars, &mut |_| Some(body.clone()));
        let _ = assignments(&text);
        let _ = set(&text, &[upd("A", Some("v")), upd("B", None)]);
    }

    #[test]
    fn eval_never_panics_on_shell_like_text(
        text in r#"([A-Za-z_0-9 \t=$"'`\\{}()\[\]:;&|<>#~.\-/+!?*@\r\n]|export |\[\[ -f /x \]\] && \. /x\n){0,120}"#
    ) {
        let mut vars = Vars::new();
        let _ = eval("envvars", &text, &mut vars, &mut |p| Some(format!("X=1\n[[ -f {p} ]] && . {p}\n")));
        let _ = assignments(&text);
        let _ = set(&text, &[upd("A", Some("v")), upd("A", None)]);
    }

    #[test]
    fn a_value_set_reads_back_literally(value in any::<String>().prop_filter("CR LF is a line ending", |v| !v.contains("\r\n"))) {
        let text = set("", &[upd("N", Some(&value))]);
        let mut vars = Vars::new();
        let errors = eval("envvars", &text, &mut vars, &mut |_| None);
        prop_assert_eq!(errors, vec![]);
        prop_assert_eq!(vars.get("N"), Some(&value));
        // Also over an existing assignment and among other lines.
        let text = set("# c\nN=old # keep\nM=1\n", &[upd("N", Some(&value))]);
        let mut vars = Vars::new();
        let errors = eval("envvars", &text, &mut vars, &mut |_| None);
        prop_assert_eq!(errors, vec![]);
        prop_assert_eq!(vars.get("N"), Some(&value));
        prop_assert!(text.ends_with(" # keep\nM=1\n"));
    }

    #[test]
    fn set_keeps_every_other_line(
        lines in prop::collection::vec(
            prop_oneof![
                Just("# comment 'with quote".to_string()),
                Just(String::new()),
                Just("  \t".to_string()),
                Just("rm -rf /".to_string()),
                Just("bad-name=1".to_string()),
                Just("N =1".to_string()),
                "(N|M|NN|export N|export M)=([a-z0-9]{0,5}|'[a-z $]{0,5}'|\"[a-z ]{0,5}\")( # c)?",
            ],
            0..12,
        ),
        crlf in any::<bool>(),
        value in prop::option::of("[ -~]{0,10}"),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|l| format!("{l}{nl}")).collect();
        let is_n = |l: &&str| l.trim_start_matches("export ").starts_with("N=");
        let out = set(&text, &[upd("N", value.as_deref())]);
        let others = |t: &str| -> Vec<String> {
            t.split_inclusive('\n').filter(|l| !is_n(l)).map(str::to_string).collect()
        };
        prop_assert_eq!(others(&text), others(&out));
        let n_before: Vec<&str> = text.split_inclusive('\n').filter(is_n).collect();
        let n_after: Vec<&str> = out.split_inclusive('\n').filter(is_n).collect();
        match &value {
            None => prop_assert!(n_after.is_empty()),
            Some(v) if n_before.is_empty() => {
                let end = if text.is_empty() { "\n" } else { nl };
                let line = format!("N={}{end}", quote(v));
                prop_assert_eq!(out.strip_prefix(text.as_str()), Some(line.as_str()));
            }
            Some(v) => {
                // Only the last one changed, and its comment and line ending stayed.
                let k = n_before.len() - 1;
                prop_assert_eq!(&n_before[..k], &n_after[..k]);
                let assigned = format!("N={}", quote(v));
                prop_assert!(n_after[k].contains(&assigned), "{:?}", n_after[k]);
                prop_assert_eq!(n_before[k].ends_with(&format!(" # c{nl}")), n_after[k].ends_with(&format!(" # c{nl}")));
            }
        }
    }

    #[test]
    fn select_layers_matches_a_reference_sort(
        versions in prop::collection::vec((0u64..30, 0u64..30, 0u64..30), 0..20),
        running in (0u64..30, 0u64..30, 0u64..30),
        junk in prop::collection::vec("[a-z0-9.\\-]{0,12}", 0..5),
    ) {
        let mut names: Vec<String> = versions.iter().map(|(a, b, c)| format!("{a}.{b}.{c}-envvars")).collect();
        names.sort();
        names.dedup();
        let mut input = names.clone();
        input.extend(junk.iter().filter(|j| layer_version(j).is_none()).cloned());
        input.reverse();
        let running = [running.0, running.1, running.2, 0];
        let mut reference: Vec<(Vec<u64>, String)> = names
            .iter()
            .map(|n| {
                let v: Vec<u64> = n.trim_end_matches("-envvars").split('.').map(|f| f.parse().unwrap()).collect();
                (v, n.clone())
            })
            .filter(|(v, _)| [v[0], v[1], v[2], 0] <= running)
            .collect();
        reference.sort();
        let reference: Vec<String> = reference.into_iter().map(|(_, n)| n).collect();
        prop_assert_eq!(select_layers(&input, running), reference);
    }
}

#[test]
fn a_value_that_uses_a_refused_variable_is_refused_too_and_keeps_its_last_value() {
    // Issue 16: `KEYS="$(...)"` was refused, then `IOHUBOS_SSH_PUBLIC_KEY="${KEYS}"` quietly
    // became empty (an SSH lockout on a live box).
    expect_test::expect![[r#"
        KEYS="fine"
        LATER="fine"
        OTHER="x-fine"
        envvars:1: [forbidden] command substitution $(...) is not allowed; nothing was executed | KEYS=<redacted>
        envvars:2: [invalid_value] its value uses `KEYS`, whose assignment was refused; the last good value stays | IOHUBOS_SSH_PUBLIC_KEY="${KEYS}"
        envvars:3: [invalid_value] its value uses `KEYS`, whose assignment was refused; the last good value stays | TZ2="${UNSET:-$KEYS}"
    "#]]
    .assert_eq(&run(
        &[("IOHUBOS_SSH_PUBLIC_KEY", "ssh-ed25519 AAAA old")],
        r#"KEYS="$(cat /root/keys)"
IOHUBOS_SSH_PUBLIC_KEY="${KEYS}"
TZ2="${UNSET:-$KEYS}"
KEYS=fine
LATER="$KEYS"
OTHER="x-${KEYS}"
"#,
        &[],
    ));
}
