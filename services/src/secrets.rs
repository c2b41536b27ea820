//! Clear values of secret variables, for the services that render them into a file.
//!
//! Secrets never travel on the bus: a section carries `{"set": true}` in their place
//! (`bus_schema::Secret`). A service that must write one into a config file (the WiFi
//! passphrases into `wpa_supplicant.conf` / `hostapd.conf`) calls [`read`] at render time: it
//! loads the merged variables from the root exactly as the config service does
//! ([`crate::vars::load`]: the same layering, includes, renames and defaults; read-only)
//! and returns the named variable's value after the same form check the config service applies
//! ([`bus_schema::sections::Config::validate_one`]).
//!
//! The files may have changed since the section was published; the value returned is then the
//! newer one. That is safe because a newer value is checked here before it is used, and the
//! config service publishes the newer section right after, which makes the service render
//! again. An invalid newer value is refused (the caller keeps its last good file), so a
//! half-typed password never reaches a config file. Errors name the variable, never the value.

use std::collections::BTreeMap;

use bus_schema::sections::{self, Config};
use bus_schema::{BusError, ErrorCode, Secret};

use crate::ctx::Paths;
use crate::vars::layers;

/// The clear value of the secret variable `name` as the files under the root set it now (empty
/// when unset). Refuses names that are not secret variables: everything else is on the bus.
pub async fn read(paths: &Paths, name: &str) -> Result<Secret, BusError> {
    let spec = sections::spec(name).ok_or_else(|| {
        BusError::new(
            ErrorCode::UnknownVariable,
            format!("`{name}` is not a known variable"),
        )
        .with_field(name)
    })?;
    if !spec.secret {
        return Err(BusError::new(
            ErrorCode::InvalidValue,
            format!("`{name}` is not a secret variable: read it from its config section"),
        )
        .with_field(name));
    }
    let loaded = crate::vars::load(paths, BTreeMap::new()).await?;
    // A variable file that did not read (not a missing one: that is just unset) leaves the
    // value unknown; the version file and the list files do not matter here.
    let unread = loaded.errors.iter().find(|e| {
        !matches!(
            e.field.as_deref(),
            Some(
                layers::VERSION_FILE | layers::FORWARDS_TCP | layers::FORWARDS_UDP | layers::ROUTES
            )
        )
    });
    // A refused line that assigns the variable (e.g. `$(...)`) leaves an older value in place.
    let refused = loaded
        .line_errors
        .iter()
        .find(|e| layers::assigned_name(&e.text).as_deref() == Some(name));
    if let Some(why) = unread
        .map(|e| e.message.clone())
        .or(refused.map(|e| format!("{}:{} assigns it on a refused line", e.file, e.line)))
    {
        return Err(BusError::new(
            ErrorCode::InvalidValue,
            format!("{name} cannot be used now: {why}"),
        )
        .with_field(name));
    }
    let value = loaded.vars.get(name).cloned().unwrap_or_default();
    Config::validate_one(name, &value)?;
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sys::fs::atomic_write;

    fn write(path: std::path::PathBuf, text: &str) {
        atomic_write(&path, text.as_bytes(), 0o644).unwrap();
    }

    fn root_with(envvars: &str) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("root"), dir.path().join("system"));
        std::fs::create_dir_all(&paths.root).unwrap();
        std::fs::create_dir_all(paths.firmware_lib()).unwrap();
        write(
            paths.firmware_lib().join("version"),
            "IOHUBOS_VERSION=1.1.3\n",
        );
        write(paths.root("envvars"), envvars);
        (dir, paths)
    }

    #[tokio::test]
    async fn a_secret_is_read_from_the_merged_files_and_checked() {
        let (_d, paths) = root_with("IOHUBOS_WIFI_AP_PASS='p\"a ss#word'\n");
        let s = read(&paths, "IOHUBOS_WIFI_AP_PASS").await.unwrap();
        assert_eq!(s.expose(), "p\"a ss#word");
        // envvars.d layers win over envvars, as in the config service.
        std::fs::create_dir_all(paths.root("envvars.d")).unwrap();
        write(
            paths.root("envvars.d/1.1.1-envvars"),
            "IOHUBOS_WIFI_AP_PASS=from-the-layer
",
        );
        let s = read(&paths, "IOHUBOS_WIFI_AP_PASS").await.unwrap();
        assert_eq!(s.expose(), "from-the-layer");
        // Unset: empty.
        let s = read(&paths, "IOHUBOS_WIFI_CLIENT_PASS").await.unwrap();
        assert!(!s.is_set());
    }

    #[tokio::test]
    async fn an_invalid_secret_or_a_public_variable_is_refused_without_echoing_the_value() {
        let (_d, paths) = root_with("IOHUBOS_WIFI_CLIENT_PASS=tiny-pw\n");
        let e = read(&paths, "IOHUBOS_WIFI_CLIENT_PASS").await.unwrap_err();
        assert_eq!(e.field.as_deref(), Some("IOHUBOS_WIFI_CLIENT_PASS"));
        assert!(!e.message.contains("tiny-pw"), "{e}");
        let e = read(&paths, "IOHUBOS_WIFI_AP_SSID").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidValue);
        let e = read(&paths, "IOHUBOS_NOPE").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownVariable);
    }
}
