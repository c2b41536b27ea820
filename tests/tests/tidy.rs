//! Tidy checks: the architecture invariants of ARCHITECTURE.md, kept true by a test.

#![allow(clippy::unwrap_used)] // helpers of a test: a broken tree is a failure

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name != "target" && name != "fuzz" && !name.starts_with('.') {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn all_rust() -> Vec<(String, String)> {
    let root = workspace();
    let mut files = Vec::new();
    for krate in [
        "bus-schema",
        "broker",
        "services",
        "bridge",
        "tests",
        "distro",
        "examples",
    ] {
        rust_files(&root.join(krate), &mut files);
    }
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

fn is_test_file(rel: &str) -> bool {
    rel.starts_with("tests/")
        || rel.contains("/tests/")
        || rel.contains("/benches/")
        || rel.ends_with("/tests.rs")
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| rel)
        .collect();
    assert!(bad.is_empty(), "files without a `//!` doc: {bad:?}");
}

#[test]
fn topic_strings_are_spelled_only_in_bus_schema() {
    // Tests may spell topics to check them; production code builds `Topic`s.
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| {
            !rel.starts_with("bus-schema/") && !is_test_file(rel) && text.contains("\"iohub/")
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(bad.is_empty(), "topic literals outside bus-schema: {bad:?}");
}

#[test]
fn architecture_bans_are_lifted_only_at_the_named_places() {
    // clippy.toml bans process spawning and direct file-system effects; an `allow` that lifts a
    // ban (alone or among other lints) may appear only in the sys crate's two boundary files, in
    // test files, and in a `#[cfg(test)]` part of a source file.
    let allowed = ["services/sys/src/cmd.rs", "services/sys/src/fs.rs"];
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| {
            if allowed.contains(&rel.as_str()) || is_test_file(rel) {
                return false;
            }
            let first_test = text.find("#[cfg(test)]").unwrap_or(text.len());
            allows_of(text, "disallowed_methods").any(|at| at < first_test)
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        bad.is_empty(),
        "disallowed_methods lifted outside the sys crate's cmd.rs and fs.rs: {bad:?}"
    );
}

#[test]
fn unsafe_code_is_allowed_only_in_the_heap_trim() {
    // The workspace denies unsafe_code; the one FFI call (glibc's malloc_trim) lives in sys::mem.
    let allowed = ["services/sys/src/mem.rs"];
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| {
            !allowed.contains(&rel.as_str()) && allows_of(text, "unsafe_code").next().is_some()
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        bad.is_empty(),
        "unsafe_code allowed outside sys::mem: {bad:?}"
    );
}

/// Byte offsets of `allow(...)` attributes that name `lint`.
fn allows_of<'a>(text: &'a str, lint: &'a str) -> impl Iterator<Item = usize> + 'a {
    text.match_indices("allow(").filter_map(move |(at, _)| {
        let args = &text[at..];
        let end = args.find(')').unwrap_or(args.len());
        args[..end].contains(lint).then_some(at)
    })
}

/// The service modules: every directory of `services/src` but the shared ones.
fn service_modules() -> Vec<String> {
    let shared = ["shared", "vars", "bin"];
    let dir = workspace().join("services/src");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !shared.contains(&n.as_str()))
        .collect();
    out.sort();
    out
}

#[test]
fn no_service_imports_another_service() {
    let services = service_modules();
    assert!(services.len() >= 15, "services found: {services:?}");
    let mut bad = Vec::new();
    for (rel, text) in all_rust() {
        let Some(own) = rel
            .strip_prefix("services/src/")
            .and_then(|r| r.split_once('/'))
            .map(|(dir, _)| dir)
        else {
            continue;
        };
        if !services.iter().any(|s| s == own) {
            continue;
        }
        for other in services.iter().filter(|s| *s != own) {
            if text.contains(&format!("crate::{other}::"))
                || text.contains(&format!("crate::{other};"))
            {
                bad.push(format!("{rel} uses crate::{other}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a service reaches another only through the bus; shared helpers live in \
         services::shared: {bad:?}"
    );
}

/// The production crates (the tests crate is a harness: it may use reqwest as an HTTP client).
const PRODUCTION_MANIFESTS: &[&str] = &[
    "bus-schema/Cargo.toml",
    "broker/Cargo.toml",
    "services/Cargo.toml",
    "services/sys/Cargo.toml",
    "services/iohubctl/Cargo.toml",
];

/// Crates whose types and effects belong to the system boundary.
const SYSTEM_CRATES: &[&str] = &["bollard", "rtnetlink", "nftables", "reqwest"];

#[test]
fn only_the_sys_crate_depends_on_the_system_crates() {
    let mut bad = Vec::new();
    for manifest in PRODUCTION_MANIFESTS {
        if *manifest == "services/sys/Cargo.toml" {
            continue;
        }
        let text = std::fs::read_to_string(workspace().join(manifest)).unwrap();
        for krate in SYSTEM_CRATES {
            let named = text
                .lines()
                .any(|l| l.trim_start().starts_with(krate) && l.contains('='));
            if named {
                bad.push(format!("{manifest} depends on {krate}"));
            }
        }
    }
    for (rel, text) in all_rust() {
        if rel.starts_with("services/sys/") || rel.starts_with("tests/") || is_test_file(&rel) {
            continue;
        }
        for krate in SYSTEM_CRATES {
            if text.contains(&format!("{krate}::")) {
                bad.push(format!("{rel} names {krate}::"));
            }
        }
    }
    assert!(bad.is_empty(), "system crates outside sys: {bad:?}");
}

/// The packages `root` depends on, transitively, from Cargo.lock (every kind of dependency).
fn locked_closure(root: &str) -> std::collections::BTreeSet<String> {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).unwrap();
    let mut deps: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .map(|n| n.trim_end_matches('"').to_string())
            .unwrap();
        let list = block
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split_once(']').unwrap().0)
            .unwrap_or("");
        let names = list
            .split(',')
            .map(|d| d.trim().trim_matches('"'))
            .filter(|d| !d.is_empty())
            .map(|d| d.split(' ').next().unwrap().to_string());
        deps.entry(name).or_default().extend(names);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(deps.get(&p).cloned().unwrap_or_default());
        }
    }
    seen
}

#[test]
fn iohubctl_links_none_of_the_daemon_crates() {
    let closure = locked_closure("iohubctl");
    assert!(closure.contains("rumqttc") && closure.contains("bus-schema"));
    let bad: Vec<_> = [
        "bollard",
        "axum",
        "reqwest",
        "rtnetlink",
        "nftables",
        "services",
        "sys",
        "broker",
    ]
    .into_iter()
    .filter(|k| closure.contains(*k))
    .collect();
    assert!(bad.is_empty(), "iohubctl pulls in {bad:?}");
}

#[test]
fn no_source_file_is_over_1500_lines() {
    // Functions are bounded by clippy (too_many_lines, threshold 150, in clippy.toml).
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| !is_test_file(rel) && text.lines().count() > 1500)
        .map(|(rel, text)| format!("{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(bad.is_empty(), "source files over 1,500 lines: {bad:?}");
}

#[test]
fn architecture_md_names_every_crate_and_service_module() {
    let arch = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    for name in [
        "bus-schema",
        "broker",
        "services",
        "bridge",
        "tests",
        "distro",
        "examples",
        "supervisor",
        "sys",
        "config",
        "watcher",
        "lifecycle",
        "daemon",
        "iohubctl",
        "shared",
        "vars",
        "settings",
    ] {
        assert!(
            arch.contains(&format!("`{name}`")),
            "ARCHITECTURE.md does not mention `{name}`"
        );
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(workspace().join(".ci/run")).unwrap();
    assert!(
        readme.contains("scripts/test.sh"),
        "README lost its test command"
    );
    assert!(
        ci.lines().any(|l| l.trim() == "exec scripts/test.sh"),
        ".ci/run must exec scripts/test.sh"
    );
}

/// `line` without its string literals (a plain scan: `"` opens and closes one unless escaped).
fn without_strings(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        if in_string {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            in_string = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_broker_core_never_imports_its_mqtt_front_end() {
    // The core is every file of broker/src outside listener/; lib.rs may declare and re-export
    // the front end. Comments and string literals may name listeners, code may not.
    let front_end_lines = |line: &str| {
        let l = line.trim_start();
        l == "pub mod listener;" || l.starts_with("pub use listener::")
    };
    let mut bad = Vec::new();
    for (rel, text) in all_rust() {
        if !rel.starts_with("broker/src/") || rel.starts_with("broker/src/listener/") {
            continue;
        }
        let mut in_reexport = false;
        for (n, line) in text.lines().enumerate() {
            if rel == "broker/src/lib.rs" && (in_reexport || front_end_lines(line)) {
                // A re-export may span lines up to its `;`.
                in_reexport = !line.trim_end().ends_with(';');
                continue;
            }
            let code = without_strings(line);
            let code = code.split("//").next().unwrap_or("");
            if code.to_lowercase().contains("listener") {
                bad.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the broker's core names its MQTT front end (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}
