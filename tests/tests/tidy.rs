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
    rel.starts_with("tests/") || rel.contains("/tests/") || rel.contains("/benches/")
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
fn only_the_broker_crate_names_rumqttd() {
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| {
            !rel.starts_with("broker/") && rel != "tests/tests/tidy.rs" && text.contains("rumqttd")
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(bad.is_empty(), "rumqttd named outside broker/: {bad:?}");
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
    // clippy.toml bans process spawning and direct file writes; the `allow` that lifts a ban may
    // appear only in the sys boundary.
    let allowed = ["services/src/sys/cmd.rs", "services/src/sys/fs.rs"];
    let bad: Vec<_> = all_rust()
        .into_iter()
        .filter(|(rel, text)| {
            text.contains("allow(clippy::disallowed_methods)")
                && !allowed.contains(&rel.as_str())
                && !is_test_file(rel)
        })
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        bad.is_empty(),
        "disallowed_methods lifted outside services::sys: {bad:?}"
    );
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
        "ctl",
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
