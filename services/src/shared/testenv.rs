//! Test helper shared by the services' tests: a validated config from
//! envvars text, the way the config service builds it (input as text, DESIGN.md §6).

use std::collections::BTreeMap;

use bus_schema::envvars;
use bus_schema::sections::Config;
use bus_schema::BusError;

/// The config of one `envvars` text (no other layer; registry defaults for the rest).
pub(crate) fn config_from_envvars(text: &str) -> Result<Config, Vec<BusError>> {
    let mut vars = BTreeMap::new();
    let errors = envvars::eval("envvars", text, &mut vars, &mut |_| None);
    assert!(errors.is_empty(), "envvars text has errors: {errors:?}");
    Config::from_vars(&vars, vec![], vec![], vec![], vec![])
}

/// One section of the config of an `envvars` text; panics with the errors when it is invalid.
pub(crate) fn section_from_envvars<T>(text: &str, pick: impl FnOnce(&Config) -> T) -> T {
    match config_from_envvars(text) {
        Ok(c) => pick(&c),
        Err(errors) => panic!("invalid envvars: {errors:?}"),
    }
}

/// Check for an external program (`tests/src/lib.rs`'s `require_program`): under `CI=true` its
/// absence fails the test, elsewhere the caller skips. Returns false when the caller should skip.
pub(crate) fn require_tool(name: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "{name} is required under CI=true (scripts/test.sh installs it)"
        );
        eprintln!("skipping: {name} not installed (scripts/test.sh installs it)");
    }
    found
}
