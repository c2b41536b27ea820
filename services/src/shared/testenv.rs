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
