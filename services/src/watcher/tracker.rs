//! The per-path completeness state machine (rules 1-3 of the module doc). Pure: it is told what
//! inotify saw, what scans found and what `stat` says, and decides when a path fires. No I/O, no
//! runtime; time is passed in.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::classify::Area;

/// What identifies one version of a file: size, mtime and inode (a file renamed over another
/// has a new inode even when size and mtime match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
}

/// What `stat` says about a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    Missing,
    File(Fp),
    /// A directory, FIFO, socket or device: never reported, and counts as gone.
    NotFile,
}

/// What inotify saw happen to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// `IN_CREATE`: a new name; an `open(O_CREAT)` writer or a hard link.
    Created,
    /// `IN_MODIFY`: a writer has the file open.
    Written,
    /// `IN_CLOSE_WRITE`: a writer closed it.
    Closed,
    /// `IN_MOVED_TO`: renamed into place (editor save, `mv`).
    MovedIn,
    /// `IN_DELETE`, `IN_MOVED_FROM`: the name went away (it may come back within the quiet period).
    Gone,
}

/// A decision to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fire {
    pub rel: String,
    pub area: Area,
    pub size_bytes: Option<u64>,
    pub removed: bool,
    pub at_start: bool,
}

#[derive(Debug)]
struct Entry {
    area: Area,
    /// The live timer (matches a heap item); `None` while waiting for a close.
    timer: Option<u64>,
    /// Quiet period, or the longer settle time for files whose writes were not observed.
    window: Duration,
    /// `stat` when the window started; `None` until the caller took it.
    baseline: Option<Stat>,
    /// A write was seen and no close since: never fire (rule 1).
    writing: bool,
    /// There is evidence the file is complete (closed, renamed in, or found by a scan).
    closed: bool,
    at_start: bool,
}

impl Entry {
    fn new(area: Area, window: Duration) -> Entry {
        Entry {
            area,
            timer: None,
            window,
            baseline: None,
            writing: false,
            closed: false,
            at_start: false,
        }
    }
}

/// Pending paths, their timers, and what was reported (`known`).
#[derive(Debug)]
pub(crate) struct Tracker {
    quiet: Duration,
    settle: Duration,
    pending: HashMap<String, Entry>,
    /// Path -> the version last reported (or seen at start for config and live files). Scans
    /// compare against it so that a rescan never reports a file twice.
    known: BTreeMap<String, Fp>,
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    /// Path -> when it last fired; a path re-written within the quiet period of its last event
    /// waits the quiet period instead of firing at once (rule 2).
    recent: HashMap<String, Instant>,
}

/// What "at once" waits: long enough for the `IN_MODIFY` of a writer that re-opens the file
/// right after the close to arrive (it then waits for that writer's close), short enough to
/// stay far under the 10 ms drop-to-event target. Without it, a file truncated again right
/// after its close could be reported while empty.
pub(crate) const AT_ONCE_GRACE: Duration = Duration::from_millis(3);

/// Above this many entries, `recent` forgets paths that fired longer than a quiet period ago.
const RECENT_PRUNE: usize = 4096;

impl Tracker {
    pub(crate) fn new(quiet: Duration, settle: Duration) -> Tracker {
        Tracker {
            quiet,
            settle,
            pending: HashMap::new(),
            known: BTreeMap::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            recent: HashMap::new(),
        }
    }

    /// Whether a complete candidate at `rel` fires at once (rule 1): in areas where only
    /// specific names count, unless the path fired within the quiet period.
    fn at_once(&self, rel: &str, area: Area, renamed: bool, now: Instant) -> bool {
        area.fires_at_once(rel, renamed)
            && self
                .recent
                .get(rel)
                .is_none_or(|t| now.saturating_duration_since(*t) >= self.quiet)
    }

    fn fired(&mut self, rel: &str, now: Instant) {
        if self.recent.len() >= RECENT_PRUNE {
            let quiet = self.quiet;
            self.recent
                .retain(|_, t| now.saturating_duration_since(*t) < quiet);
        }
        self.recent.insert(rel.to_owned(), now);
    }

    fn arm(
        timers: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
        seq: &mut u64,
        rel: &str,
        e: &mut Entry,
        now: Instant,
    ) {
        *seq += 1;
        e.timer = Some(*seq);
        timers.push(Reverse((now + e.window, *seq, rel.to_owned())));
    }

    /// Record an inotify observation. Returns true when the path's quiet period (re)started:
    /// the caller then takes its baseline `stat` ([`Tracker::set_baseline`]).
    pub(crate) fn observe(&mut self, rel: &str, area: Area, seen: Seen, now: Instant) -> bool {
        let quiet = self.quiet;
        let at_once = matches!(seen, Seen::Closed | Seen::MovedIn)
            && self.at_once(rel, area, seen == Seen::MovedIn, now);
        let e = self
            .pending
            .entry(rel.to_owned())
            .or_insert_with(|| Entry::new(area, quiet));
        e.window = quiet;
        e.at_start = false;
        match seen {
            Seen::Written => {
                e.writing = true;
                e.timer = None;
                return false;
            }
            Seen::Created => {
                e.writing = false;
                e.closed = false;
            }
            Seen::Closed => {
                e.writing = false;
                e.closed = true;
            }
            Seen::MovedIn => {
                e.writing = false;
                e.closed = true;
            }
            Seen::Gone => {
                e.writing = false;
                e.closed = false;
            }
        }
        if at_once {
            e.window = AT_ONCE_GRACE;
        }
        e.baseline = None;
        Self::arm(&mut self.timers, &mut self.seq, rel, e, now);
        true
    }

    /// The `stat` at the start of the quiet period just armed by [`Tracker::observe`].
    pub(crate) fn set_baseline(&mut self, rel: &str, stat: Stat) {
        if let Some(e) = self.pending.get_mut(rel) {
            e.baseline = Some(stat);
        }
    }

    /// A scan found `rel` as `fp`; `at_start` for the first scan (drops found then were dropped
    /// while iohubd was down).
    pub(crate) fn found(&mut self, rel: &str, area: Area, fp: Fp, now: Instant, at_start: bool) {
        if self.pending.contains_key(rel) || self.known.get(rel) == Some(&fp) {
            // inotify is already following it, or this version was reported.
            return;
        }
        let mut e = Entry::new(area, self.settle);
        e.closed = true;
        e.at_start = at_start;
        e.baseline = Some(Stat::File(fp));
        Self::arm(&mut self.timers, &mut self.seq, rel, &mut e, now);
        self.pending.insert(rel.to_owned(), e);
    }

    /// Events were lost (queue overflow): a close or removal we wait for may never come. Every
    /// pending path that waits for one settles on stability alone, over the settle time.
    pub(crate) fn events_lost(&mut self, now: Instant) {
        for (rel, e) in &mut self.pending {
            if e.closed && !e.writing && e.timer.is_some() {
                // Complete and already counting down: nothing is awaited.
                continue;
            }
            e.writing = false;
            e.closed = true;
            e.window = e.window.max(self.settle);
            e.baseline = None;
            Self::arm(&mut self.timers, &mut self.seq, rel, e, now);
        }
    }

    /// Remember `rel` as already known without reporting it (config and live files at start).
    pub(crate) fn remember(&mut self, rel: &str, fp: Fp) {
        self.known.insert(rel.to_owned(), fp);
    }

    /// Known paths strictly below the directory `rel`.
    pub(crate) fn known_under(&self, rel: &str) -> Vec<String> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.known
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Known paths that no pending entry follows (a full rescan checks those it did not find).
    pub(crate) fn known_idle(&self) -> impl Iterator<Item = &str> {
        self.known
            .keys()
            .filter(|k| !self.pending.contains_key(*k))
            .map(String::as_str)
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// When the earliest timer runs out (possibly a stale one; [`Tracker::expired`] skips those).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Paths whose quiet period ran out by `now`; the caller `stat`s each and calls
    /// [`Tracker::settle`].
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, seq, rel))) = self.timers.pop() else {
                break;
            };
            if let Some(e) = self.pending.get_mut(&rel) {
                if e.timer == Some(seq) {
                    e.timer = None;
                    out.push(rel);
                }
            }
        }
        out
    }

    /// Decide what an expired path does, given its `stat` now.
    pub(crate) fn settle(&mut self, rel: &str, stat: Stat, now: Instant) -> Option<Fire> {
        let e = self.pending.get_mut(rel)?;
        let fp = match stat {
            Stat::File(fp) => fp,
            Stat::Missing | Stat::NotFile => {
                let area = e.area;
                self.pending.remove(rel);
                let was_known = self.known.remove(rel).is_some();
                return (was_known && area.reports_removal()).then(|| Fire {
                    rel: rel.to_owned(),
                    area,
                    size_bytes: None,
                    removed: true,
                    at_start: false,
                });
            }
        };
        if e.writing {
            // A writer still has it open: the close restarts the quiet period.
            return None;
        }
        if e.baseline != Some(stat) {
            // Changed during the quiet period (or no baseline yet): start it again, a full
            // quiet period this time.
            e.baseline = Some(stat);
            e.window = e.window.max(self.quiet);
            Self::arm(&mut self.timers, &mut self.seq, rel, e, now);
            return None;
        }
        if self.known.get(rel) == Some(&fp) {
            // This version was reported already (a version is reported once): opened for
            // writing and closed without a write, or events that lagged behind a rescan.
            self.pending.remove(rel);
            return None;
        }
        if !e.closed && fp.size == 0 {
            // Created and still empty: a writer that has not written yet. Wait for its close.
            return None;
        }
        let e = self.pending.remove(rel)?;
        self.known.insert(rel.to_owned(), fp);
        self.fired(rel, now);
        Some(Fire {
            rel: rel.to_owned(),
            area: e.area,
            size_bytes: Some(fp.size),
            removed: false,
            at_start: e.at_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_millis(50);
    const SETTLE: Duration = Duration::from_millis(500);

    fn fp(size: u64, mtime_ns: i128, ino: u64) -> Fp {
        Fp {
            size,
            mtime_ns,
            ino,
        }
    }

    /// A tracker driven by a fake clock and a fake file system.
    struct Sim {
        t: Tracker,
        now: Instant,
        files: HashMap<String, Fp>,
        fired: Vec<Fire>,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                t: Tracker::new(QUIET, SETTLE),
                now: Instant::now(),
                files: HashMap::new(),
                fired: Vec::new(),
            }
        }
        fn stat(&self, rel: &str) -> Stat {
            self.files
                .get(rel)
                .map_or(Stat::Missing, |f| Stat::File(*f))
        }
        fn write(&mut self, rel: &str, f: Fp) {
            self.files.insert(rel.into(), f);
        }
        fn see(&mut self, rel: &str, area: Area, seen: Seen) {
            if self.t.observe(rel, area, seen, self.now) {
                let s = self.stat(rel);
                self.t.set_baseline(rel, s);
            }
        }
        fn advance(&mut self, d: Duration) {
            self.now += d;
            for rel in self.t.expired(self.now) {
                let s = self.stat(&rel);
                self.fired.extend(self.t.settle(&rel, s, self.now));
            }
        }
        /// Let every timer run out.
        fn idle(&mut self) {
            for _ in 0..10 {
                self.advance(SETTLE);
            }
        }
        fn take(&mut self) -> Vec<Fire> {
            std::mem::take(&mut self.fired)
        }
    }

    fn fire(rel: &str, area: Area, size: Option<u64>, removed: bool, at_start: bool) -> Fire {
        Fire {
            rel: rel.into(),
            area,
            size_bytes: size,
            removed,
            at_start,
        }
    }

    #[test]
    fn a_slow_writer_fires_once_after_its_close_with_the_full_size() {
        let mut s = Sim::new();
        let p = "deploy/slow.zip";
        s.write(p, fp(0, 1, 7));
        s.see(p, Area::Deploy, Seen::Created);
        for i in 1..=10 {
            s.write(p, fp(i * 100, i as i128, 7));
            s.see(p, Area::Deploy, Seen::Written);
            s.advance(QUIET * 3);
            assert!(s.take().is_empty(), "fired before the close, chunk {i}");
        }
        s.see(p, Area::Deploy, Seen::Closed);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire(p, Area::Deploy, Some(1000), false, false)]
        );
    }

    #[test]
    fn a_closed_drop_and_a_renamed_config_file_fire_at_once() {
        let mut s = Sim::new();
        s.write("deploy/app.zip", fp(0, 1, 3));
        s.see("deploy/app.zip", Area::Deploy, Seen::Created);
        s.write("deploy/app.zip", fp(500, 2, 3));
        s.see("deploy/app.zip", Area::Deploy, Seen::Written);
        s.see("deploy/app.zip", Area::Deploy, Seen::Closed);
        s.write("envvars", fp(80, 2, 4));
        s.see("envvars", Area::Config, Seen::MovedIn);
        s.advance(AT_ONCE_GRACE);
        assert_eq!(
            s.take(),
            vec![
                fire("deploy/app.zip", Area::Deploy, Some(500), false, false),
                fire("envvars", Area::Config, Some(80), false, false),
            ]
        );
    }

    #[test]
    fn a_file_rewritten_right_after_it_fired_waits_the_quiet_period() {
        let mut s = Sim::new();
        s.write("envvars", fp(10, 1, 1));
        s.see("envvars", Area::Config, Seen::MovedIn);
        s.advance(AT_ONCE_GRACE);
        assert_eq!(s.take().len(), 1);
        for i in 2..5 {
            s.write("envvars", fp(10 * i, i as i128, 1));
            s.see("envvars", Area::Config, Seen::MovedIn);
            s.advance(QUIET / 10);
        }
        assert!(
            s.take().is_empty(),
            "re-writes inside the quiet period coalesce"
        );
        s.advance(QUIET);
        assert_eq!(
            s.take(),
            vec![fire("envvars", Area::Config, Some(40), false, false)]
        );
        s.advance(QUIET * 2);
        // Written in place rather than renamed: it waits the quiet period.
        s.write("envvars", fp(45, 8, 1));
        s.see("envvars", Area::Config, Seen::Closed);
        s.advance(AT_ONCE_GRACE);
        assert!(s.take().is_empty(), "an in-place write waits");
        s.advance(QUIET);
        assert_eq!(s.take().len(), 1);
        s.advance(QUIET * 2);
        s.write("envvars", fp(50, 9, 1));
        s.see("envvars", Area::Config, Seen::MovedIn);
        s.advance(AT_ONCE_GRACE);
        assert_eq!(s.take().len(), 1, "a later edit fires at once again");
    }

    #[test]
    fn a_temp_file_in_envvars_d_renamed_away_within_the_quiet_period_is_never_reported() {
        let mut s = Sim::new();
        let tmp = "envvars.d/sedAb12Cd";
        s.write(tmp, fp(30, 1, 5));
        s.see(tmp, Area::Config, Seen::Created);
        s.see(tmp, Area::Config, Seen::Closed);
        s.advance(AT_ONCE_GRACE);
        s.files.remove(tmp);
        s.see(tmp, Area::Config, Seen::Gone);
        s.write("envvars.d/1.1.1-envvars", fp(30, 1, 5));
        s.see("envvars.d/1.1.1-envvars", Area::Config, Seen::MovedIn);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire(
                "envvars.d/1.1.1-envvars",
                Area::Config,
                Some(30),
                false,
                false
            )]
        );
    }

    #[test]
    fn a_created_empty_file_waits_for_its_close_but_a_hard_link_fires() {
        let mut s = Sim::new();
        s.write("deploy/a.zip", fp(0, 1, 1));
        s.see("deploy/a.zip", Area::Deploy, Seen::Created);
        s.idle();
        assert!(s.take().is_empty());
        s.see("deploy/a.zip", Area::Deploy, Seen::Closed);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("deploy/a.zip", Area::Deploy, Some(0), false, false)]
        );

        s.write("deploy/b.zip", fp(42, 1, 2));
        s.see("deploy/b.zip", Area::Deploy, Seen::Created);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("deploy/b.zip", Area::Deploy, Some(42), false, false)]
        );
    }

    #[test]
    fn a_file_that_changes_during_the_quiet_period_waits_until_it_is_stable() {
        let mut s = Sim::new();
        s.write("routes", fp(10, 1, 1));
        s.see("routes", Area::Config, Seen::MovedIn);
        s.write("routes", fp(20, 2, 1)); // changed behind inotify's back (mmap, lost event)
        s.advance(QUIET);
        assert!(s.take().is_empty());
        s.advance(QUIET);
        assert_eq!(
            s.take(),
            vec![fire("routes", Area::Config, Some(20), false, false)]
        );
    }

    #[test]
    fn a_vim_style_save_is_one_change_not_a_removal() {
        let mut s = Sim::new();
        s.write("envvars", fp(10, 1, 1));
        s.t.remember("envvars", fp(10, 1, 1));
        // rename envvars -> envvars~, write a new envvars, delete envvars~.
        s.files.remove("envvars");
        s.see("envvars", Area::Config, Seen::Gone);
        s.write("envvars", fp(0, 2, 2));
        s.see("envvars", Area::Config, Seen::Created);
        s.write("envvars", fp(11, 3, 2));
        s.see("envvars", Area::Config, Seen::Written);
        s.see("envvars", Area::Config, Seen::Closed);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("envvars", Area::Config, Some(11), false, false)]
        );
    }

    #[test]
    fn removal_is_reported_for_known_config_and_live_files_only() {
        let mut s = Sim::new();
        for (rel, area) in [
            ("routes", Area::Config),
            ("live/etc/x", Area::Live),
            ("deploy/a.zip", Area::Deploy),
        ] {
            s.t.remember(rel, fp(1, 1, 1));
            s.see(rel, area, Seen::Gone);
        }
        s.see("forwards-tcp", Area::Config, Seen::Gone); // never known
        s.idle();
        let mut got = s.take();
        got.sort_by(|a, b| a.rel.cmp(&b.rel));
        assert_eq!(
            got,
            vec![
                fire("live/etc/x", Area::Live, None, true, false),
                fire("routes", Area::Config, None, true, false),
            ]
        );
    }

    #[test]
    fn an_open_and_close_without_a_write_reports_nothing_new() {
        let mut s = Sim::new();
        s.write("routes", fp(5, 1, 1));
        s.t.remember("routes", fp(5, 1, 1));
        s.see("routes", Area::Config, Seen::Closed);
        s.idle();
        assert!(s.take().is_empty());
    }

    #[test]
    fn scans_report_unreported_files_once_and_at_start_only_from_the_start_scan() {
        let mut s = Sim::new();
        let (start, rescan) = (true, false);
        s.write("deploy/a.zip", fp(3, 1, 1));
        s.t.found("deploy/a.zip", Area::Deploy, fp(3, 1, 1), s.now, start);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("deploy/a.zip", Area::Deploy, Some(3), false, true)]
        );
        // A later rescan finds it unchanged, and a new file.
        s.write("deploy/b.zip", fp(4, 1, 2));
        s.t.found("deploy/a.zip", Area::Deploy, fp(3, 1, 1), s.now, rescan);
        s.t.found("deploy/b.zip", Area::Deploy, fp(4, 1, 2), s.now, rescan);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("deploy/b.zip", Area::Deploy, Some(4), false, false)]
        );
    }

    #[test]
    fn a_scan_does_not_hurry_a_writer_unless_events_were_lost() {
        let mut s = Sim::new();
        let p = "deploy/w.zip";
        s.write(p, fp(10, 1, 1));
        s.see(p, Area::Deploy, Seen::Written);
        s.t.found(p, Area::Deploy, fp(10, 1, 1), s.now, false);
        s.idle();
        assert!(
            s.take().is_empty(),
            "a plain rescan must not fire an open file"
        );
        // The queue overflowed: its close may be lost, so it settles on stability alone.
        s.t.events_lost(s.now);
        s.advance(QUIET);
        assert!(
            s.take().is_empty(),
            "settles over the settle time, not the quiet period"
        );
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire(p, Area::Deploy, Some(10), false, false)]
        );
    }

    #[test]
    fn events_lagging_behind_a_rescan_do_not_report_a_version_twice() {
        let mut s = Sim::new();
        let p = "deploy/x.zip";
        s.write(p, fp(2, 5, 9));
        s.t.found(p, Area::Deploy, fp(2, 5, 9), s.now, false);
        s.idle();
        assert_eq!(s.take(), vec![fire(p, Area::Deploy, Some(2), false, false)]);
        // Its create, write and close were still queued behind the rescan.
        s.see(p, Area::Deploy, Seen::Created);
        s.see(p, Area::Deploy, Seen::Written);
        s.see(p, Area::Deploy, Seen::Closed);
        s.idle();
        assert!(s.take().is_empty());
    }

    #[test]
    fn a_lost_removal_of_an_open_file_does_not_stay_pending_forever() {
        let mut s = Sim::new();
        s.t.remember("live/a", fp(1, 1, 1));
        s.write("live/a", fp(2, 2, 1));
        s.see("live/a", Area::Live, Seen::Written);
        s.files.remove("live/a"); // its close and delete were lost
        s.t.events_lost(s.now);
        s.idle();
        assert_eq!(
            s.take(),
            vec![fire("live/a", Area::Live, None, true, false)]
        );
        assert_eq!(s.t.pending_len(), 0);
    }

    #[test]
    fn known_under_lists_only_paths_below_the_directory() {
        let mut s = Sim::new();
        for rel in [
            "envvars",
            "envvars.d/a",
            "envvars.d/b",
            "envvars.dx",
            "live/etc/x",
        ] {
            s.t.remember(rel, fp(1, 1, 1));
        }
        assert_eq!(
            s.t.known_under("envvars.d"),
            vec!["envvars.d/a".to_string(), "envvars.d/b".to_string()]
        );
        assert_eq!(s.t.known_under("live"), vec!["live/etc/x".to_string()]);
    }
}
