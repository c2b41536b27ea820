//! The apps service's settings: the `docker` config section plus fixed timeouts and limits.

use std::time::Duration;

/// Settings of one apps run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsConfig {
    /// A `start.sh` is killed (with its process group) after this long.
    pub start_timeout: Duration,
    /// SIGKILL after this long when a command stops a container.
    pub stop_timeout: Duration,
    /// SIGKILL after this long when the daemon shuts down and stops an app's containers.
    pub shutdown_stop_timeout: Duration,
    /// Apps still running after this long at shutdown are left running (the supervisor's own
    /// bound is 10 s by default).
    pub shutdown_budget: Duration,
    /// How often unused images are collected ...
    pub gc_interval: Duration,
    /// ... when Docker's data disk is at least this full (percent).
    pub gc_disk_percent: u8,
    /// Container docker events are coalesced for this long before the states are refreshed.
    pub refresh_delay: Duration,
    /// Reconnect to dockerd this often while it does not answer.
    pub reconnect_every: Duration,
    /// Largest `tail` of a logs command (per container).
    pub logs_tail_max: usize,
    /// Largest number of lines and duration of a followed log.
    pub follow_max_lines: usize,
    pub follow_max: Duration,
}

impl Default for AppsConfig {
    fn default() -> AppsConfig {
        AppsConfig {
            start_timeout: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(10),
            shutdown_stop_timeout: Duration::from_secs(3),
            shutdown_budget: Duration::from_secs(8),
            gc_interval: Duration::from_secs(6 * 3600),
            gc_disk_percent: 80,
            refresh_delay: Duration::from_millis(100),
            reconnect_every: Duration::from_secs(5),
            logs_tail_max: 10_000,
            follow_max_lines: 10_000,
            follow_max: Duration::from_secs(600),
        }
    }
}
