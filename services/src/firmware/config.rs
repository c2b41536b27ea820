//! The firmware service's validated input: the `upgrader` section.

use bus_schema::sections::Upgrader;
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
            },
        )
    }))
}
