//! The deployer's validated settings: the `deployer` config section plus fixed limits.

use std::time::Duration;

use bus_schema::sections::Deployer;

use super::plan::Limits;

/// Settings of one deployer run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployerConfig {
    /// `IOHUBOS_DEPLOYER_ENABLED`: zips are installed only when true (they wait otherwise).
    pub enabled: bool,
    pub limits: Limits,
    /// How long the apps service may take to restart one deployed app.
    pub restart_timeout: Duration,
}

impl DeployerConfig {
    pub fn from_section(section: &Deployer) -> DeployerConfig {
        DeployerConfig {
            enabled: section.enabled,
            ..DeployerConfig::default()
        }
    }
}

impl Default for DeployerConfig {
    fn default() -> DeployerConfig {
        DeployerConfig {
            enabled: true,
            limits: Limits::default(),
            restart_timeout: Duration::from_secs(600),
        }
    }
}
