//! The firmware service's validated input: the `upgrader` section.

use bus_schema::sections::{MaintenanceWindow, Upgrader};
use bus_schema::{BusError, Section};

use crate::reconcile::Latest;

/// What the firmware service is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgraderConfig {
    /// `IOHUBOS_UPGRADER_ENABLED`: install dropped bundles (commands work either way).
    pub enabled: bool,
    /// `IOHUBOS_UPGRADER_REBOOT`: reboot into the trial once a dropped bundle is installed.
    pub reboot: bool,
    /// `IOHUBOS_UPGRADER_HEALTH_SECS`: the health deadline of a trial boot.
    pub health_secs: u32,
    /// `IOHUBOS_UPGRADER_URL`: the release manifest polled (none: no polling).
    pub url: Option<String>,
    /// `IOHUBOS_UPGRADER_CA`, `_CERT`, `_KEY`: the HTTPS source's TLS files.
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `IOHUBOS_UPGRADER_POLL_SECS`.
    pub poll_secs: u32,
    /// `IOHUBOS_UPGRADER_WINDOW`: when an armed trial may reboot.
    pub window: Option<MaintenanceWindow>,
    /// `IOHUBOS_UPGRADER_REQUIRE_BRIDGE`: the health gate waits for the bridge's remote too.
    pub require_bridge: bool,
}

impl Default for UpgraderConfig {
    fn default() -> UpgraderConfig {
        UpgraderConfig {
            enabled: true,
            reboot: true,
            health_secs: 300,
            url: None,
            ca: None,
            cert: None,
            key: None,
            poll_secs: 3600,
            window: None,
            require_bridge: false,
        }
    }
}

/// The desired config with its generation, once `upgrader` is published.
pub fn desired(latest: &Latest) -> Option<Result<(u64, UpgraderConfig), BusError>> {
    let section = latest.section::<Upgrader>(Section::Upgrader)?;
    Some(section.map(|(generation, u)| {
        (
            generation,
            UpgraderConfig {
                enabled: u.enabled,
                reboot: u.reboot,
                health_secs: u.health_secs,
                url: u.url,
                ca: u.ca,
                cert: u.cert,
                key: u.key,
                poll_secs: u.poll_secs,
                window: u.window,
                require_bridge: u.require_bridge,
            },
        )
    }))
}

/// Whether a reboot into an armed trial may happen at `minute` (minutes after midnight in the
/// box's time zone): always without a window, else inside it.
pub fn reboot_allowed(window: Option<MaintenanceWindow>, minute: u16) -> bool {
    window.is_none_or(|w| w.contains(minute))
}

/// The minute of the day at `now_ms` in the box's time zone (the system's, which the system
/// service sets from `IOHUBOS_TIMEZONE`; UTC when it cannot be read).
pub fn local_minute(now_ms: u64) -> u16 {
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(now_ms).unwrap_or(0))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = ts.to_zoned(tz);
    (dt.hour() as u16) * 60 + dt.minute() as u16
}

/// Whether the bridge's state says every remote is connected (and there is one).
pub fn bridge_connected(facts: &serde_json::Value) -> bool {
    facts["remotes"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["connected"] == true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: u16, e: u16) -> Option<MaintenanceWindow> {
        Some(MaintenanceWindow {
            start_minute: s,
            end_minute: e,
        })
    }

    #[test]
    fn an_armed_trial_reboots_only_inside_the_window() {
        // 02:00-04:00.
        let win = w(120, 240);
        assert!(!reboot_allowed(win, 119));
        assert!(reboot_allowed(win, 120));
        assert!(reboot_allowed(win, 239));
        assert!(!reboot_allowed(win, 240));
        // Spanning midnight: 23:00-01:00.
        let night = w(23 * 60, 60);
        assert!(reboot_allowed(night, 23 * 60 + 30));
        assert!(reboot_allowed(night, 10));
        assert!(!reboot_allowed(night, 12 * 60));
        // No window: at once.
        assert!(reboot_allowed(None, 12 * 60));
    }

    #[test]
    fn the_clock_is_read_in_minutes_of_the_day() {
        // The same instant one day later is the same minute; 90 minutes later is 90 more
        // (modulo the day), whatever the time zone.
        let t = 1_765_000_000_000u64;
        assert_eq!(local_minute(t), local_minute(t + 86_400_000));
        let later = local_minute(t + 90 * 60_000);
        assert_eq!(later, (local_minute(t) + 90) % 1440);
        assert!(local_minute(t) < 1440);
    }

    #[test]
    fn the_bridge_counts_as_connected_only_with_every_remote_connected() {
        use serde_json::json;
        assert!(bridge_connected(
            &json!({"remotes": [{"name": "a", "connected": true}]})
        ));
        assert!(!bridge_connected(
            &json!({"remotes": [{"name": "a", "connected": false}]})
        ));
        assert!(!bridge_connected(&json!({"remotes": []})));
        assert!(!bridge_connected(&json!({})));
    }
}
