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
