//! Loading the layered variable files, exactly in the order of SPEC.md §1.1, then the renames of
//! §1.3 and the defaults. Pure: file contents come from a reader closure, so the same code loads
//! the disk, and the disk with a pending `set` applied (a dry run of the edit).
//!
//! Order (later assignments win):
//! 1. the firmware version file (`IOHUBOS_VERSION=x.y.z`; missing -> an error and `0.0.0`);
//! 2. `sysvars`; 3. `envvars`;
//! 4. `envvars.d/*-envvars` chosen by [`envvars::select_layers`] for the running version;
//! 5. pre-1.0 names: `IOHUBOS_ENGINE_*` feeds `IOHUBOS_DOCKER_*` when the new name is unset;
//! 6. `setDefaults`: `IOHUBOS_DOCKER_REGISTRY_PORT=5000` when unset or empty;
//! 7. the defaults of [`sections::VARIABLES`] for every variable still unset, evaluated like a
//!    file: `IOHUBOS_WIREGUARD_X` defaults to `${IOHUBOS_VPN_X:-...}`, which is the VPN ->
//!    WireGuard inheritance for roots without `1.1.1-envvars` (that file does it itself).
//!
//! `. /iohub/<path>` lines are resolved under the root only; nothing is ever executed.

use std::collections::{BTreeMap, BTreeSet};

use bus_schema::envvars::{self, Vars};
use bus_schema::files::{self, Forward, Proto, Route};
use bus_schema::{sections, BusError, ErrorCode, LineError};

/// Label of the firmware version file in errors and in the list of loaded files.
pub const VERSION_FILE: &str = "/usr/lib/iohub/version";
pub const SYSVARS: &str = "sysvars";
pub const ENVVARS: &str = "envvars";
pub const LAYER_DIR: &str = "envvars.d";
pub const FORWARDS_TCP: &str = "forwards-tcp";
pub const FORWARDS_UDP: &str = "forwards-udp";
pub const ROUTES: &str = "routes";

/// The variable the firmware version file defines.
pub const VERSION_VAR: &str = "IOHUBOS_VERSION";
/// Version assumed when the firmware version file is missing or unreadable.
pub const UNKNOWN_VERSION: &str = "0.0.0";

/// How the original files name the data root in `. /iohub/...` lines.
const ROOT_PREFIX: &str = "/iohub/";

const REGISTRY_PORT: &str = "IOHUBOS_DOCKER_REGISTRY_PORT";
const REGISTRY_PORT_DEFAULT: &str = "5000";
/// Label of the registry defaults in (impossible) evaluation errors.
const DEFAULTS: &str = "<defaults>";

/// The result of one load: merged variables plus everything the state reports.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The running firmware version (`0.0.0` when unknown).
    pub version: String,
    /// Every variable after layering, renames and defaults (including unknown ones).
    pub vars: Vars,
    /// Files read, relative to the root, in first-read order (the version file by its label).
    pub files: Vec<String>,
    /// Files of `envvars.d` that the version filter left out.
    pub skipped_layers: Vec<String>,
    /// Evaluation order of the variable files (an included file comes before the file that
    /// includes it, as the shipped files include at their top); decides which file owns a
    /// variable.
    pub order: Vec<String>,
    /// Text of every variable file read.
    pub texts: BTreeMap<String, String>,
    /// Lines of variable files that were refused (and skipped); `eval` redacts secret values.
    pub line_errors: Vec<LineError>,
    /// Unknown or deprecated variables, ignored includes.
    pub warnings: Vec<BusError>,
    /// Problems not tied to a variable: missing version file, unreadable files.
    pub errors: Vec<BusError>,
    pub forwards_tcp: Vec<Forward>,
    pub forwards_udp: Vec<Forward>,
    pub routes: Vec<Route>,
    /// Refused lines of `forwards-*` and `routes` (the good lines still apply).
    pub rejected_lines: Vec<LineError>,
}

impl Loaded {
    /// The variable file whose assignment of `name` currently wins, if any file assigns it.
    pub fn owner(&self, name: &str) -> Option<&str> {
        self.order
            .iter()
            .rev()
            .find(|rel| self.assigns(rel, name))
            .map(String::as_str)
    }

    /// Every variable file that assigns `name`, in evaluation order, without repeats.
    pub fn definers(&self, name: &str) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        self.order
            .iter()
            .filter(|rel| self.assigns(rel, name) && seen.insert(rel.as_str()))
            .map(String::as_str)
            .collect()
    }

    fn assigns(&self, rel: &str, name: &str) -> bool {
        self.texts
            .get(rel)
            .is_some_and(|text| envvars::assignments(text).iter().any(|a| a.name == name))
    }

    /// Line errors of variable files and refused forward/route lines, as bus errors.
    pub fn line_bus_errors(&self) -> impl Iterator<Item = BusError> + '_ {
        self.line_errors
            .iter()
            .chain(&self.rejected_lines)
            .cloned()
            .map(BusError::from)
    }
}

/// Load everything. `version_text` is the firmware version file (`None` when missing),
/// `layer_names` the entries of `envvars.d` (`None` when it is not a directory), and `read`
/// returns the text of a file under the root by its `/`-separated relative path.
pub fn load(
    version_text: Option<&str>,
    layer_names: Option<&[String]>,
    read: &mut dyn FnMut(&str) -> Option<String>,
) -> Loaded {
    let mut loader = Loader {
        read: &mut *read,
        out: Loaded::default(),
        refused: BTreeSet::new(),
    };
    let mut vars = Vars::new();

    // 1. The firmware version: read-only, never taken from the user's files.
    let (version, running) = firmware_version(version_text, &mut loader.out);
    vars.insert(VERSION_VAR.to_string(), version.clone());

    // 2.-4. sysvars, envvars, then the layers the running version selects.
    loader.source(SYSVARS, &mut vars);
    loader.source(ENVVARS, &mut vars);
    if let Some(names) = layer_names {
        let selected = envvars::select_layers(names, running);
        for name in names {
            if !selected.contains(name) {
                loader
                    .out
                    .skipped_layers
                    .push(format!("{LAYER_DIR}/{name}"));
            }
        }
        for name in &selected {
            loader.source(&format!("{LAYER_DIR}/{name}"), &mut vars);
        }
    }
    let mut out = loader.finish_vars(vars, &version);

    // Forwards and routes: good lines apply, bad lines are listed.
    let (tcp, mut rejected) =
        read_forwards(read_recorded(&mut out, read, FORWARDS_TCP), Proto::Tcp);
    let (udp, udp_rejected) =
        read_forwards(read_recorded(&mut out, read, FORWARDS_UDP), Proto::Udp);
    rejected.extend(udp_rejected);
    if let Some((_, text)) = read_recorded(&mut out, read, ROUTES) {
        let (routes, bad) = files::parse_routes(ROUTES, &text);
        out.routes = routes;
        rejected.extend(bad);
    }
    out.forwards_tcp = tcp;
    out.forwards_udp = udp;
    out.rejected_lines = rejected;
    out.version = version;
    out
}

fn read_recorded(
    out: &mut Loaded,
    read: &mut dyn FnMut(&str) -> Option<String>,
    rel: &'static str,
) -> Option<(&'static str, String)> {
    let text = read(rel)?;
    out.files.push(rel.to_string());
    Some((rel, text))
}

fn read_forwards(file: Option<(&str, String)>, proto: Proto) -> (Vec<Forward>, Vec<LineError>) {
    match file {
        Some((rel, text)) => files::parse_forwards(rel, proto, &text),
        None => (Vec::new(), Vec::new()),
    }
}

/// The version string and its numeric form; a missing or malformed file is an error in the state
/// and the version `0.0.0` (so only version-less defaults apply).
fn firmware_version(text: Option<&str>, out: &mut Loaded) -> (String, [u64; 4]) {
    let unknown = || (UNKNOWN_VERSION.to_string(), [0; 4]);
    let Some(text) = text else {
        out.errors.push(
            BusError::new(
                ErrorCode::Missing,
                format!(
                    "firmware version file {VERSION_FILE} is missing; running as {UNKNOWN_VERSION}"
                ),
            )
            .with_field(VERSION_FILE),
        );
        return unknown();
    };
    out.files.push(VERSION_FILE.to_string());
    let mut scratch = Vars::new();
    let problems = envvars::eval(VERSION_FILE, text, &mut scratch, &mut |_| None);
    let value = scratch
        .get(VERSION_VAR)
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    match envvars::parse_version(&value) {
        Some(parsed) if problems.is_empty() => (value, parsed),
        _ => {
            out.errors.push(
                BusError::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "firmware version file {VERSION_FILE} has no valid `{VERSION_VAR}=x.y.z` \
                         line; running as {UNKNOWN_VERSION}"
                    ),
                )
                .with_field(VERSION_FILE),
            );
            unknown()
        }
    }
}

struct Loader<'r> {
    read: &'r mut dyn FnMut(&str) -> Option<String>,
    out: Loaded,
    /// Names whose last assignment was refused, across the files of this load.
    refused: BTreeSet<String>,
}

impl Loader<'_> {
    /// Read a variable file under the root and remember its text.
    fn fetch(&mut self, rel: &str) -> Option<String> {
        let text = (self.read)(rel)?;
        if !self.out.texts.contains_key(rel) {
            self.out.files.push(rel.to_string());
        }
        self.out.texts.insert(rel.to_string(), text.clone());
        Some(text)
    }

    /// Evaluate one top-level variable file (absent files are skipped, as `[[ -f ]]` would).
    fn source(&mut self, rel: &str, vars: &mut Vars) {
        let Some(text) = self.fetch(rel) else { return };
        let mut refused = std::mem::take(&mut self.refused);
        let problems = envvars::eval_tainted(
            rel,
            &text,
            vars,
            &mut |path| self.include(path),
            &mut refused,
        );
        self.refused = refused;
        self.out.order.push(rel.to_string());
        self.out.line_errors.extend(problems);
    }

    /// Resolve a `. /iohub/<path>` line under the root only (`eval` bounds depth and count and
    /// reports cycles).
    fn include(&mut self, path: &str) -> Option<String> {
        let Some(rel) = include_rel(path) else {
            self.out.warnings.push(
                BusError::new(
                    ErrorCode::Forbidden,
                    format!("`. {path}` ignored: only files under {ROOT_PREFIX} can be included"),
                )
                .with_field(path),
            );
            return None;
        };
        let text = self.fetch(&rel)?;
        self.out.order.push(rel);
        Some(text)
    }

    /// Steps 5-7 (renames and defaults) and the warnings about variables.
    fn finish_vars(mut self, mut vars: Vars, version: &str) -> Loaded {
        if vars.get(VERSION_VAR).map(String::as_str) != Some(version) {
            let owner = self.out.owner(VERSION_VAR).unwrap_or(ENVVARS).to_string();
            self.out.warnings.push(
                BusError::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "{VERSION_VAR} is set by the firmware; the assignment in {owner} is \
                         ignored"
                    ),
                )
                .with_field(VERSION_VAR),
            );
            vars.insert(VERSION_VAR.to_string(), version.to_string());
        }
        self.out.warnings.extend(apply_renames(&mut vars));
        apply_defaults(&mut vars);
        for name in vars
            .keys()
            .filter(|n| n.starts_with("IOHUBOS_") && sections::spec(n).is_none())
        {
            if sections::renamed_to(name).is_some() {
                continue; // warned about by `apply_renames`
            }
            let place = self.out.owner(name).unwrap_or(ENVVARS);
            let why = if sections::INTERNAL_VARIABLES.contains(&name.as_str()) {
                "is internal to the original scripts and has no effect"
            } else {
                "is unknown and ignored"
            };
            self.out.warnings.push(
                BusError::new(
                    ErrorCode::UnknownVariable,
                    format!("{name} in {place} {why}"),
                )
                .with_field(name.clone()),
            );
        }
        self.out.vars = vars;
        self.out
    }
}

/// `/iohub/envvars.d/1.1.0-envvars` -> `envvars.d/1.1.0-envvars`; `None` for anything that is
/// not a plain path under the root (other roots, relative paths, `..`, `.`, empty levels).
pub fn include_rel(path: &str) -> Option<String> {
    let rel = path.strip_prefix(ROOT_PREFIX)?;
    let plain = !rel.is_empty()
        && rel
            .split('/')
            .all(|level| !level.is_empty() && level != "." && level != "..");
    plain.then(|| rel.to_string())
}

/// SPEC.md §1.3: a pre-1.0 name (`IOHUBOS_ENGINE_*`) feeds its successor when the successor is
/// unset. Returns a warning per pre-1.0 name in use.
pub fn apply_renames(vars: &mut Vars) -> Vec<BusError> {
    let renames: Vec<(String, &str)> = vars
        .keys()
        .filter_map(|old| sections::renamed_to(old).map(|new| (old.clone(), new)))
        .collect();
    renames
        .into_iter()
        .map(|(old, new)| {
            let message = if vars.contains_key(new) {
                format!("pre-1.0 name {old} is ignored: {new} is set")
            } else {
                let value = vars.get(&old).cloned().unwrap_or_default();
                vars.insert(new.to_string(), value);
                format!("pre-1.0 name {old} is used as {new}; rename it")
            };
            BusError::new(ErrorCode::UnknownVariable, message).with_field(old)
        })
        .collect()
}

/// `setDefaults` (registry port when unset or empty), then the registry default of every variable
/// still unset. Defaults are evaluated like a file, so `${...}` in them sees the variables.
pub fn apply_defaults(vars: &mut Vars) {
    if vars.get(REGISTRY_PORT).is_none_or(|v| v.is_empty()) {
        vars.insert(REGISTRY_PORT.to_string(), REGISTRY_PORT_DEFAULT.to_string());
    }
    let text: String = sections::VARIABLES
        .iter()
        .filter(|spec| !vars.contains_key(spec.name))
        .map(|spec| format!("{}=\"{}\"\n", spec.name, spec.default))
        .collect();
    let problems = envvars::eval(DEFAULTS, &text, vars, &mut |_| None);
    debug_assert!(
        problems.is_empty(),
        "registry defaults must evaluate: {problems:?}"
    );
}

/// The variable a (possibly refused) line assigns, if it looks like an assignment: the envvars
/// parser's answer, or for a line it refused, the `NAME` before the first `=`.
pub fn assigned_name(line: &str) -> Option<String> {
    if let Some(a) = envvars::assignments(line).into_iter().next() {
        return Some(a.name);
    }
    let line = line.trim_start();
    let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
    let (name, _) = line.split_once('=')?;
    envvars::valid_name(name).then(|| name.to_string())
}

/// Whether `name` holds a secret (the registry says so).
pub fn is_secret(name: &str) -> bool {
    sections::spec(name).is_some_and(|s| s.secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A root in memory; records every path asked for.
    struct Files {
        files: BTreeMap<String, String>,
        asked: Vec<String>,
    }

    impl Files {
        fn new(files: &[(&str, &str)]) -> Files {
            let files = files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Files {
                files,
                asked: Vec::new(),
            }
        }

        fn load(&mut self, version: Option<&str>) -> Loaded {
            let layers: Vec<String> = self
                .files
                .keys()
                .filter_map(|k| k.strip_prefix("envvars.d/"))
                .map(String::from)
                .collect();
            let (files, asked) = (&self.files, &mut self.asked);
            load(version, Some(&layers), &mut |rel| {
                asked.push(rel.to_string());
                files.get(rel).cloned()
            })
        }
    }

    const L110: &str = "IOHUBOS_VPN_ENABLED='false'\nIOHUBOS_VPN_EXPOSE='auto'\n";
    const L111: &str =
        "[[ -f /iohub/envvars.d/1.1.0-envvars ]] && . /iohub/envvars.d/1.1.0-envvars\n\
        IOHUBOS_WIREGUARD_ENABLED=\"${IOHUBOS_VPN_ENABLED:-false}\"\n\
        IOHUBOS_WIREGUARD_EXPOSE=\"${IOHUBOS_VPN_EXPOSE:-auto}\"\n\
        IOHUBOS_ZEROTIER_ENABLED='false'\n";

    #[test]
    fn layers_load_in_version_order_up_to_the_running_version_and_later_files_win() {
        let mut root = Files::new(&[
            ("sysvars", "IOHUBOS_HOSTNAME=\"iohub-0011\"\n"),
            ("envvars", "IOHUBOS_ZEROTIER_ENABLED='true'\nIOHUBOS_GLOBAL_MQTT_NAME=\"x-${IOHUBOS_HOSTNAME}\"\n"),
            ("envvars.d/1.1.0-envvars", L110),
            ("envvars.d/1.1.1-envvars", L111),
            ("envvars.d/1.1.10-envvars", "IOHUBOS_TIMEZONE='Asia/Tokyo'\n"),
            ("envvars.d/1.1.2-envvars", "IOHUBOS_TIMEZONE='Europe/Rome'\n"),
            ("envvars.d/notes.txt", "IOHUBOS_TIMEZONE='UTC'\n"),
        ]);
        let loaded = root.load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.version, "1.1.3");
        assert!(
            loaded.errors.is_empty() && loaded.line_errors.is_empty(),
            "{loaded:?}"
        );
        assert_eq!(loaded.vars["IOHUBOS_ZEROTIER_ENABLED"], "false");
        assert_eq!(loaded.vars["IOHUBOS_TIMEZONE"], "Europe/Rome");
        assert_eq!(loaded.vars["IOHUBOS_GLOBAL_MQTT_NAME"], "x-iohub-0011");
        assert_eq!(loaded.vars["IOHUBOS_WIREGUARD_EXPOSE"], "auto");
        assert_eq!(loaded.vars["IOHUBOS_VERSION"], "1.1.3");
        assert_eq!(
            loaded.files,
            [
                VERSION_FILE,
                "sysvars",
                "envvars",
                "envvars.d/1.1.0-envvars",
                "envvars.d/1.1.1-envvars",
                "envvars.d/1.1.2-envvars",
            ]
        );
        assert_eq!(
            loaded.skipped_layers,
            ["envvars.d/1.1.10-envvars", "envvars.d/notes.txt"]
        );
        assert_eq!(
            loaded.owner("IOHUBOS_ZEROTIER_ENABLED"),
            Some("envvars.d/1.1.1-envvars")
        );
        assert_eq!(
            loaded.owner("IOHUBOS_VPN_ENABLED"),
            Some("envvars.d/1.1.0-envvars")
        );
        assert_eq!(loaded.owner("IOHUBOS_HOSTNAME"), Some("sysvars"));
        assert_eq!(loaded.owner("IOHUBOS_SSH_PUBLIC_KEY"), None);
        assert_eq!(
            loaded.definers("IOHUBOS_ZEROTIER_ENABLED"),
            ["envvars", "envvars.d/1.1.1-envvars"]
        );
        assert!(!root
            .asked
            .iter()
            .any(|p| p.contains("1.1.10") || p.contains("notes")));
    }

    #[test]
    fn every_documented_variable_gets_a_value_even_from_an_empty_root() {
        let loaded = Files::new(&[]).load(Some("IOHUBOS_VERSION=1.1.3"));
        for spec in sections::VARIABLES {
            let value = &loaded.vars[spec.name];
            assert!(!value.contains('$'), "{}={value}", spec.name);
        }
        assert_eq!(
            loaded.vars["IOHUBOS_GLOBAL_MQTT_IMG"],
            ":5000/iohubos/iohubos-mqtt"
        );
        assert_eq!(loaded.vars[REGISTRY_PORT], "5000");
        assert!(loaded.files == [VERSION_FILE], "{:?}", loaded.files);
    }

    #[test]
    fn an_empty_registry_port_gets_5000_but_other_empty_values_stay_empty() {
        let loaded = Files::new(&[(
            "envvars",
            "IOHUBOS_DOCKER_REGISTRY_PORT=''\nIOHUBOS_TIMEZONE=''\n",
        )])
        .load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.vars[REGISTRY_PORT], "5000");
        assert_eq!(loaded.vars["IOHUBOS_TIMEZONE"], "");
    }

    #[test]
    fn a_missing_version_file_is_an_error_and_only_version_less_defaults_apply() {
        let loaded =
            Files::new(&[("envvars.d/1.0.0-envvars", "IOHUBOS_TIMEZONE='UTC'\n")]).load(None);
        assert_eq!(loaded.version, UNKNOWN_VERSION);
        assert_eq!(loaded.vars[VERSION_VAR], UNKNOWN_VERSION);
        assert_eq!(loaded.errors.len(), 1);
        assert_eq!(loaded.errors[0].field.as_deref(), Some(VERSION_FILE));
        assert_eq!(loaded.skipped_layers, ["envvars.d/1.0.0-envvars"]);
    }

    #[test]
    fn the_firmware_version_cannot_be_overridden_by_a_user_file() {
        let loaded = Files::new(&[("envvars", "IOHUBOS_VERSION='9.9.9'\n")])
            .load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.vars[VERSION_VAR], "1.1.3");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    }

    #[test]
    fn deprecated_names_feed_their_successors_only_when_those_are_unset() {
        let mut root = Files::new(&[
            ("envvars", "IOHUBOS_ENGINE_ENABLED='false'\nIOHUBOS_ENGINE_REGISTRY_PORT='6000'\nIOHUBOS_DOCKER_REGISTRY_PORT='7000'\n"),
            ("envvars.d/1.1.0-envvars", "IOHUBOS_VPN_NETWORK='100.90.56.0/24'\nIOHUBOS_VPN_EXPOSE=''\n"),
        ]);
        let loaded = root.load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.vars["IOHUBOS_DOCKER_ENABLED"], "false");
        assert_eq!(loaded.vars[REGISTRY_PORT], "7000");
        assert_eq!(loaded.vars["IOHUBOS_WIREGUARD_NETWORK"], "100.90.56.0/24");
        // An empty deprecated value does not count (`${IOHUBOS_VPN_EXPOSE:-auto}`).
        assert_eq!(loaded.vars["IOHUBOS_WIREGUARD_EXPOSE"], "auto");
        assert_eq!(loaded.vars["IOHUBOS_WIREGUARD_ENABLED"], "false");
        let warned: Vec<_> = loaded
            .warnings
            .iter()
            .filter_map(|w| w.field.clone())
            .collect();
        assert_eq!(
            warned,
            ["IOHUBOS_ENGINE_ENABLED", "IOHUBOS_ENGINE_REGISTRY_PORT"]
        );
    }

    #[test]
    fn unknown_variables_warn_and_are_named_with_their_file() {
        let loaded = Files::new(&[("envvars", "IOHUBOS_TYPO_ENABLED='true'\nMY_HELPER=1\n")])
            .load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert_eq!(loaded.warnings[0].code, ErrorCode::UnknownVariable);
        assert!(loaded.warnings[0].message.contains("envvars"));
    }

    #[test]
    fn includes_resolve_under_the_root_only() {
        assert_eq!(
            include_rel("/iohub/envvars.d/1.1.0-envvars").as_deref(),
            Some("envvars.d/1.1.0-envvars")
        );
        for bad in [
            "/etc/passwd",
            "envvars",
            "/iohub/../etc/passwd",
            "/iohub/",
            "/iohub//x",
            "/iohub/./x",
        ] {
            assert_eq!(include_rel(bad), None, "{bad}");
        }
        let mut root = Files::new(&[
            (
                "envvars",
                "[[ -f /etc/shadow ]] && . /etc/shadow\n[[ -f /iohub/extra ]] && . /iohub/extra\n",
            ),
            ("extra", "IOHUBOS_TIMEZONE='UTC'\n"),
        ]);
        let loaded = root.load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.vars["IOHUBOS_TIMEZONE"], "UTC");
        assert_eq!(loaded.owner("IOHUBOS_TIMEZONE"), Some("extra"));
        assert!(
            !root.asked.iter().any(|p| p.contains("shadow")),
            "{:?}",
            root.asked
        );
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.field.as_deref() == Some("/etc/shadow")));
    }

    #[test]
    fn refused_lines_are_listed_and_skipped_and_secret_values_never_echoed() {
        let loaded = Files::new(&[(
            "envvars",
            "IOHUBOS_TIMEZONE='UTC'\nIOHUBOS_TIMEZONE=$(reboot)\nIOHUBOS_WIFI_CLIENT_PASS=\"$(cat /x)hunter2\"\n",
        )])
        .load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.vars["IOHUBOS_TIMEZONE"], "UTC");
        let lines: Vec<_> = loaded
            .line_errors
            .iter()
            .map(|e| (e.file.as_str(), e.line, e.code))
            .collect();
        assert_eq!(
            lines,
            [
                ("envvars", 2, ErrorCode::Forbidden),
                ("envvars", 3, ErrorCode::Forbidden)
            ]
        );
        assert!(!format!("{:?}", loaded.line_errors).contains("hunter2"));
    }

    #[test]
    fn forwards_and_routes_keep_their_good_lines() {
        let loaded = Files::new(&[
            ("forwards-tcp", "# c\n8080=192.168.1.10:80\nbogus\n"),
            ("forwards-udp", "5000=192.168.1.10:5000\n"),
            ("routes", "192.168.152.0/24:10.11.12.100\n"),
        ])
        .load(Some("IOHUBOS_VERSION=1.1.3"));
        assert_eq!(loaded.forwards_tcp.len(), 1);
        assert_eq!(loaded.forwards_udp.len(), 1);
        assert_eq!(loaded.routes.len(), 1);
        let bad: Vec<_> = loaded
            .rejected_lines
            .iter()
            .map(|e| (e.file.as_str(), e.line))
            .collect();
        assert_eq!(bad, [("forwards-tcp", 3)]);
    }
}
