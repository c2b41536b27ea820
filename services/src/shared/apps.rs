//! The app folder contract (SPEC §4.5), one copy for the services that read or write app
//! folders (apps, deployer, admin API): where apps live, which names are valid, and the one
//! "enabled" rule (SPEC §11 item 30: the original's runner and admin API disagreed).

use std::fs::Metadata;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where apps live, under the root.
pub const APPS_DIR: &str = "docker/apps";
/// The host folder behind the IOhub apps' shared `global-vol` volume (SPEC §3.16, §4.5):
/// compose files bind it with `device: /iohub/docker/global/volumes/global-vol`, so it must
/// exist whenever Docker is enabled.
pub const GLOBAL_VOLUME_DIR: &str = "docker/global/volumes/global-vol";
/// The script that starts an app; its execute bits are the app's enabled flag.
pub const START_SH: &str = "start.sh";
/// The mode of an enabled app's `start.sh` (`chmod 755`, like the original's enable).
pub const ENABLED_MODE: u32 = 0o755;
/// The mode of a disabled app's `start.sh` (`chmod 644`, like the original's disable).
pub const DISABLED_MODE: u32 = 0o644;

/// `<root>/docker/apps`.
pub fn apps_dir(root: &Path) -> PathBuf {
    root.join(APPS_DIR)
}

/// The original admin API's app name rule (SPEC §4.5: `^[a-z][a-z0-9-_]{0,63}$`), written with
/// the `-` last so that every regex dialect reads it alike (JavaScript, Python, Rust, the
/// OpenAPI `pattern` of the admin API's `{app}` parameter). [`valid_app_name`] is this rule
/// without a regex engine; a test checks that the two agree.
pub const APP_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";

/// Whether `name` matches [`APP_NAME_PATTERN`]: 1–64 characters, a lowercase letter first, then
/// lowercase letters, digits, `-` and `_`.
pub fn valid_app_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'))
}

/// Whether a `start.sh` with this metadata makes its app enabled: a regular file with an
/// execute bit (what the runner runs). The original admin API demanded all of `0755`, so a
/// `0700` script ran at boot but was reported disabled; iohub has one rule for both.
pub fn start_sh_enabled(meta: &Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// Whether the app in `app_dir` is enabled (its `start.sh` exists and is enabled).
pub fn app_enabled(app_dir: &Path) -> bool {
    std::fs::metadata(app_dir.join(START_SH)).is_ok_and(|m| start_sh_enabled(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_the_original_rule() {
        for ok in ["a", "web", "my-app_2", &"a".repeat(64)] {
            assert!(valid_app_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "9lives",
            "-a",
            ".hidden",
            "a b",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(!valid_app_name(bad), "{bad}");
        }
    }

    /// Every string of up to 3 characters over an alphabet holding each class's edges and its
    /// neighbours, and the lengths around the bound: the function and the pattern agree.
    #[test]
    fn the_app_name_function_and_its_pattern_agree() {
        let re = regex_automata::meta::Regex::new(APP_NAME_PATTERN).unwrap();
        let alphabet: Vec<char> = "az09AZ-_.`{/ \u{e9}\n".chars().collect();
        let mut words = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..3 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(next.iter().cloned());
            last = next;
        }
        for n in [62, 63, 64, 65, 66] {
            words.push("a".repeat(n));
            words.push(format!("a{}", "-".repeat(n - 1)));
            words.push(format!("{}\n", "a".repeat(n)));
        }
        assert!(words.len() > 2000);
        for w in &words {
            assert_eq!(valid_app_name(w), re.is_match(w.as_str()), "{w:?}");
        }
    }

    #[test]
    fn any_execute_bit_enables_an_app_and_a_directory_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("web");
        sys::fs::create_dir(&app, 0o755).unwrap();
        assert!(!app_enabled(&app), "no start.sh");
        let start = app.join(START_SH);
        for (mode, enabled) in [(0o755, true), (0o700, true), (0o644, false), (0o600, false)] {
            sys::fs::atomic_write(&start, b"#!/bin/sh\n", mode).unwrap();
            assert_eq!(app_enabled(&app), enabled, "{mode:o}");
        }
        sys::fs::remove_file(&start).unwrap();
        sys::fs::create_dir(&start, 0o755).unwrap();
        assert!(!app_enabled(&app));
    }
}
