//! The wifi service's validated desired config, from the `wifi` section, and the detection of
//! wireless interfaces for `IOHUBOS_WIFI_DEVICE=auto`.
//!
//! Detection source: `/sys/class/net/<if>/phy80211` (a cfg80211/nl80211 device) or
//! `/sys/class/net/<if>/wireless` (wireless extensions). rtnetlink's link messages do not say
//! whether a link is wireless (that is nl80211's, a generic-netlink family), so sysfs is the
//! source. The first name in byte order wins (deterministic, unlike the original's `iw dev`
//! order).
//!
//! The passphrases are not in the section (`{"set": true}` only): they are read at apply time
//! through [`crate::secrets`] and checked again by [`check_passphrase`].

use std::path::Path;

use bus_schema::sections::{Wifi, WifiDevice, WifiMode};
use bus_schema::{BusError, ErrorCode};

pub const DEVICE_VAR: &str = "IOHUBOS_WIFI_DEVICE";
pub const CLIENT_SSID_VAR: &str = "IOHUBOS_WIFI_CLIENT_SSID";
pub const CLIENT_PASS_VAR: &str = "IOHUBOS_WIFI_CLIENT_PASS";
pub const AP_SSID_VAR: &str = "IOHUBOS_WIFI_AP_SSID";
pub const AP_PASS_VAR: &str = "IOHUBOS_WIFI_AP_PASS";
/// Where the kernel lists network interfaces.
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// Client or access point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Ap,
}

impl Role {
    pub fn pass_var(self) -> &'static str {
        match self {
            Role::Client => CLIENT_PASS_VAR,
            Role::Ap => AP_PASS_VAR,
        }
    }
}

/// What the wifi service must make true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WifiDesired {
    Off,
    On {
        role: Role,
        device: WifiDevice,
        ssid: String,
    },
}

fn invalid(field: &str, message: impl Into<String>) -> BusError {
    BusError::new(ErrorCode::InvalidValue, message).with_field(field)
}

fn missing(field: &str, when: &str) -> BusError {
    BusError::new(ErrorCode::Missing, format!("required when {when}")).with_field(field)
}

/// An SSID: 1-32 bytes (IEEE 802.11), no control characters.
pub fn check_ssid(field: &str, ssid: &str) -> Result<(), BusError> {
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(invalid(
            field,
            format!("an SSID has 1-32 bytes, this one has {}", ssid.len()),
        ));
    }
    if ssid.chars().any(char::is_control) {
        return Err(invalid(field, "an SSID cannot contain control characters"));
    }
    Ok(())
}

/// A WPA passphrase: 8-63 printable ASCII characters. Errors never show it.
pub fn check_passphrase(field: &str, pass: &str) -> Result<(), BusError> {
    if pass.is_empty() {
        return Err(missing(field, "WiFi is used"));
    }
    if pass.len() < 8 || pass.len() > 63 {
        return Err(invalid(
            field,
            format!(
                "a WPA passphrase has 8-63 characters, this one has {}",
                pass.len()
            ),
        ));
    }
    if !pass.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(invalid(
            field,
            "a WPA passphrase has only printable ASCII characters",
        ));
    }
    Ok(())
}

impl WifiDesired {
    /// Check the section; every problem at once.
    pub fn from_section(w: &Wifi) -> Result<WifiDesired, Vec<BusError>> {
        let (role, ssid, ssid_var, pass_set) = match w.mode {
            WifiMode::Off => return Ok(WifiDesired::Off),
            WifiMode::Client => (
                Role::Client,
                &w.client_ssid,
                CLIENT_SSID_VAR,
                w.client_pass.is_set(),
            ),
            WifiMode::Ap => (Role::Ap, &w.ap_ssid, AP_SSID_VAR, w.ap_pass.is_set()),
        };
        let when = match role {
            Role::Client => "IOHUBOS_WIFI_MODE is client",
            Role::Ap => "IOHUBOS_WIFI_MODE is ap",
        };
        let mut errors = Vec::new();
        if w.device.is_none() {
            errors.push(missing(DEVICE_VAR, "IOHUBOS_WIFI_MODE is client or ap"));
        }
        match ssid {
            None => errors.push(missing(ssid_var, when)),
            Some(s) => errors.extend(check_ssid(ssid_var, s).err()),
        }
        if !pass_set {
            errors.push(missing(role.pass_var(), when));
        }
        match (errors.is_empty(), &w.device, ssid) {
            (true, Some(device), Some(ssid)) => Ok(WifiDesired::On {
                role,
                device: device.clone(),
                ssid: ssid.clone(),
            }),
            _ => Err(errors),
        }
    }
}

/// Wireless interfaces under `sys_class_net`, sorted by name.
pub fn wireless_interfaces(sys_class_net: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let p = e.path();
            p.join("phy80211").exists() || p.join("wireless").exists()
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::shared::testenv::config_from_envvars;

    #[test]
    fn bad_ssids_and_passphrases_are_refused_with_the_variable_named() {
        let errors = config_from_envvars(
            "IOHUBOS_WIFI_MODE=client\nIOHUBOS_WIFI_DEVICE=wlan0\n\
             IOHUBOS_WIFI_CLIENT_SSID=abcdefghijklmnopqrstuvwxyz0123456\n\
             IOHUBOS_WIFI_CLIENT_PASS=short\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        expect_test::expect![[r#"
            [
                "invalid_value: an SSID has 1-32 bytes, `abcdefghijklmnopqrstuvwxyz0123456` has 33 (IOHUBOS_WIFI_CLIENT_SSID)",
                "invalid_value: a WPA passphrase has 8-63 characters (IOHUBOS_WIFI_CLIENT_PASS)",
            ]
        "#]]
        .assert_debug_eq(&text);
        // The service checks again what it renders (the secret is read at apply time).
        let e = check_passphrase(AP_PASS_VAR, &"x".repeat(64)).unwrap_err();
        assert_eq!(e.to_string(), "invalid_value: a WPA passphrase has 8-63 characters, this one has 64 (IOHUBOS_WIFI_AP_PASS)");
        let e = check_passphrase(CLIENT_PASS_VAR, "1234567").unwrap_err();
        assert_eq!(e.field.as_deref(), Some(CLIENT_PASS_VAR));
        assert!(check_passphrase(CLIENT_PASS_VAR, "caf\u{e9} au lait").is_err());
        let e = check_ssid(AP_SSID_VAR, &"\u{e9}".repeat(17)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid_value: an SSID has 1-32 bytes, this one has 34 (IOHUBOS_WIFI_AP_SSID)"
        );
        assert_eq!(check_ssid(AP_SSID_VAR, &"\u{e9}".repeat(16)), Ok(()));
    }

    #[test]
    fn auto_detection_lists_wireless_interfaces_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for (name, marker) in [
            ("wlp3s0", Some("phy80211")),
            ("eth0", None),
            ("wlan1", Some("wireless")),
            ("br1", None),
        ] {
            let d = dir.path().join(name);
            sys::fs::ensure_dir(&d).unwrap();
            if let Some(m) = marker {
                sys::fs::ensure_dir(&d.join(m)).unwrap();
            }
        }
        assert_eq!(wireless_interfaces(dir.path()), ["wlan1", "wlp3s0"]);
        assert!(wireless_interfaces(&dir.path().join("none")).is_empty());
    }
}
