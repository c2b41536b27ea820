//! The watcher's tunables. Not user config: `iohubd` uses the defaults; tests shorten or shrink
//! them to reach rare paths (a tiny queue forces the overflow rescan).

use std::time::Duration;

/// Tunables of [`super::run_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherConfig {
    /// Quiet period: how long a path must see no new event (and keep its size, mtime and inode)
    /// after a close or rename before it fires. A new event restarts it. Default 50 ms; keep it
    /// above the kernel's timestamp granularity (a jiffy, up to 10 ms), since a version of a file
    /// is told apart from the one reported before by its mtime.
    pub quiet: Duration,
    /// Settle time for files whose writes inotify did not show us (found by the start scan, by a
    /// rescan after a queue overflow, or in a directory that just appeared): they fire once
    /// unchanged for this long. Default 500 ms.
    pub settle_unobserved: Duration,
    /// Capacity of the queue from notify's thread to the watcher task, in events. When it is
    /// full, events are dropped and a full rescan runs (like the kernel's own queue overflow).
    /// Default 16,384 (the kernel's default `max_queued_events`), a few MiB at most.
    pub queue_capacity: usize,
    /// Period of a full rescan that catches anything inotify could not tell (a directory
    /// replaced between two events); `None` disables it. Default 60 s.
    pub rescan_every: Option<Duration>,
    /// The retained state's facts (`events`, `rescans`) are re-published at most this often.
    /// Default 1 s.
    pub facts_every: Duration,
}

impl Default for WatcherConfig {
    fn default() -> WatcherConfig {
        WatcherConfig {
            quiet: Duration::from_millis(50),
            settle_unobserved: Duration::from_millis(500),
            queue_capacity: 16_384,
            rescan_every: Some(Duration::from_secs(60)),
            facts_every: Duration::from_secs(1),
        }
    }
}
