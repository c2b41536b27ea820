//! The watcher on a temporary root against the real bus: every drop kind, editor saves, a slow
//! writer, a burst of 10,000 files (with and without queue overflow), files present at start,
//! removals and recreated directories.
//!
//! No sleeps for readiness: a run starts once the watcher publishes `applied`. "Nothing else
//! fired" is checked against the watcher's own facts: each step ends on a published state with
//! `pending: 0` (nothing waiting to complete, no scan running) after the expected events.
//! Timeouts are generous and only turn a hang into a failure.

// Helpers outside #[test] fns: a failed fixture step fails the test. The test plays the user who
// drops files, so it writes them directly rather than through `sys::fs::atomic_write`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, RouterLimits, Subscription};
use bus_schema::events::FileEvent;
use bus_schema::{BusError, ErrorCode, EventKind, Phase, ServiceName, ServiceState, Topic};
use services::watcher::{self, WatcherConfig};
use services::{Backend, Paths, ServiceCtx};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long one message may take before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(30);

/// Write a whole file the way a user drops one (open, write, close).
fn put(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

type Ev = (EventKind, FileEvent);

/// The default tunables, with the state re-published every 50 ms instead of every second: each
/// step of a test ends on a published state.
fn cfg() -> WatcherConfig {
    WatcherConfig {
        facts_every: Duration::from_millis(50),
        ..WatcherConfig::default()
    }
}

fn ev(kind: EventKind, path: &str, size: Option<u64>, removed: bool, at_start: bool) -> Ev {
    let event = FileEvent {
        version: bus_schema::PAYLOAD_VERSION,
        path: path.into(),
        size_bytes: size,
        removed,
        at_start,
    };
    (kind, event)
}

fn dropped(path: &str, size: u64) -> Ev {
    ev(EventKind::DeployDropped, path, Some(size), false, false)
}

struct Run {
    _dir: TempDir,
    root: PathBuf,
    broker: Broker,
    sub: Subscription,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BusError>>,
    /// Events received while waiting for something else.
    queued: VecDeque<Ev>,
    /// Events taken off the subscription so far.
    received: u64,
    last_state: Option<ServiceState>,
}

/// Start a watcher on a fresh root prepared by `setup`, and wait until it is watching.
async fn start(cfg: WatcherConfig, setup: impl FnOnce(&Path)) -> Run {
    let mut run = spawn(cfg, true, setup).await;
    let state = run.wait_state(|_| true).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    assert_eq!(state.facts["watched"], run.root.display().to_string());
    run
}

async fn spawn(cfg: WatcherConfig, make_root: bool, setup: impl FnOnce(&Path)) -> Run {
    // `RUST_LOG=services::watcher=debug` shows what the watcher decided.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("iohub");
    if make_root {
        fs::create_dir(&root).unwrap();
        setup(&root);
    }
    let broker = Broker::start(RouterLimits::default()).unwrap();
    let bus = broker.bus();
    let state_topic = Topic::state(ServiceName::Watcher).to_string();
    let sub = bus
        .subscribe(&["iohub/event/watcher/#", &state_topic])
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let ctx = ServiceCtx {
        name: ServiceName::Watcher,
        bus,
        paths: Paths::new(&root, dir.path().join("sysroot")),
        backend: Backend::PlanOnly,
        endpoints: services::settings::Endpoints::ephemeral(),
        shutdown: shutdown.clone(),
        restarts: 0,
    };
    let task = tokio::spawn(watcher::run_with(ctx, cfg));
    Run {
        _dir: dir,
        root,
        broker,
        sub,
        shutdown,
        task,
        queued: VecDeque::new(),
        received: 0,
        last_state: None,
    }
}

enum Msg {
    Event(Ev),
    State(ServiceState),
}

impl Run {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    async fn recv(&mut self) -> Msg {
        let Ok(m) = tokio::time::timeout(LIMIT, self.sub.recv()).await else {
            panic!(
                "no message from the watcher in {LIMIT:?}; {} events so far, last state {:?}",
                self.received, self.last_state
            );
        };
        let m = m.expect("bus closed");
        match m.control_topic() {
            Some(Topic::Event(ServiceName::Watcher, kind)) => {
                self.received += 1;
                Msg::Event((kind, m.json().unwrap()))
            }
            Some(Topic::State(ServiceName::Watcher, None)) => {
                let state: ServiceState = m.json().unwrap();
                self.last_state = Some(state.clone());
                Msg::State(state)
            }
            other => panic!("unexpected message on {other:?}"),
        }
    }

    async fn next_event(&mut self) -> Ev {
        if let Some(e) = self.queued.pop_front() {
            return e;
        }
        loop {
            if let Msg::Event(e) = self.recv().await {
                return e;
            }
        }
    }

    /// The next published state matching `pred`; events meanwhile are kept for `next_event`.
    async fn wait_state(&mut self, pred: impl Fn(&ServiceState) -> bool) -> ServiceState {
        loop {
            match self.recv().await {
                Msg::State(s) if pred(&s) => return s,
                Msg::State(_) => {}
                Msg::Event(e) => self.queued.push_back(e),
            }
        }
    }

    /// Wait until the watcher has published at least `n` more events and has nothing left
    /// pending (facts `pending: 0`); return every event received meanwhile, and that state.
    /// Anything that fired besides what the test expects is in the list.
    async fn quiesce(&mut self, n: u64) -> (Vec<Ev>, ServiceState) {
        let target = self.received + n;
        let mut events: Vec<Ev> = self.queued.drain(..).collect();
        let done = |s: &ServiceState, received: u64| {
            let published = s.facts["events"].as_u64().expect("events fact");
            // Events and states go out in order on one link: a state counts what came before it.
            s.facts["pending"] == 0 && published >= target && published == received
        };
        // The state that closes this step may have come while waiting for an event.
        if let Some(s) = self.last_state.clone().filter(|s| done(s, self.received)) {
            return (events, s);
        }
        loop {
            match self.recv().await {
                Msg::Event(e) => events.push(e),
                Msg::State(s) if done(&s, self.received) => return (events, s),
                Msg::State(_) => {}
            }
        }
    }

    /// The events of the next `n` reports, once nothing is pending any more.
    async fn events(&mut self, n: u64) -> Vec<Ev> {
        sorted(self.quiesce(n).await.0)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(LIMIT, self.task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, Ok(()));
        self.broker.shutdown(Duration::from_secs(1)).await;
    }
}

fn sorted(mut v: Vec<Ev>) -> Vec<Ev> {
    v.sort_by(|a, b| a.1.path.cmp(&b.1.path));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drop_kind_and_config_file_produces_its_event_and_temps_do_not() {
    let mut run = start(cfg(), |_| {}).await;
    // Every directory is created after the watcher started (rule 5).
    let files: &[(&str, &[u8])] = &[
        ("deploy/app.zip", b"zip"),
        ("firmware/firmware.tgz", b"tgz!"),
        ("firmware/firmware-pre", b"#!/bin/sh\n"),
        ("runtime/iohub-registry/mysql.tar.gz", b"images"),
        ("envvars", b"IOHUBOS_HOSTNAME=a\n"),
        ("envvars.d/1.1.1-envvars", b"X=1\n"),
        ("sysvars", b"S=1\n"),
        ("forwards-tcp", b"8080=192.168.1.2:80\n"),
        ("forwards-udp", b""),
        ("routes", b"10.0.0.0/8:192.168.1.1\n"),
        ("live/etc/hosts", b"127.0.0.1 localhost\n"),
        ("live/root/.profile", b"umask 022\n"),
        // Not reported: wrong place, wrong name, hidden, partial, editor temps, app dirs.
        ("deploy/readme.txt", b"no"),
        ("deploy/.hidden.zip", b"no"),
        ("deploy/next.zip.part", b"no"),
        ("deploy/sub/nested.zip", b"no"),
        ("firmware/notes.txt", b"no"),
        ("runtime/iohub-registry/image.tar", b"no"),
        (".envvars.swp", b"no"),
        ("envvars.d/1.1.1-envvars~", b"no"),
        ("live/etc/.hosts.swp", b"no"),
        ("docker/apps/a/start.sh", b"no"),
        ("setup.done", b""),
    ];
    for (rel, bytes) in files {
        put(&run.path(rel), bytes);
    }
    let got = run.events(12).await;
    let config = |p: &str, n: u64| ev(EventKind::ConfigFileChanged, p, Some(n), false, false);
    let want = sorted(vec![
        dropped("deploy/app.zip", 3),
        ev(
            EventKind::FirmwareDropped,
            "firmware/firmware.tgz",
            Some(4),
            false,
            false,
        ),
        ev(
            EventKind::FirmwareDropped,
            "firmware/firmware-pre",
            Some(10),
            false,
            false,
        ),
        ev(
            EventKind::RegistryArchiveDropped,
            "runtime/iohub-registry/mysql.tar.gz",
            Some(6),
            false,
            false,
        ),
        config("envvars", 19),
        config("envvars.d/1.1.1-envvars", 4),
        config("sysvars", 4),
        config("forwards-tcp", 20),
        config("forwards-udp", 0),
        config("routes", 23),
        ev(
            EventKind::LiveChanged,
            "live/etc/hosts",
            Some(20),
            false,
            false,
        ),
        ev(
            EventKind::LiveChanged,
            "live/root/.profile",
            Some(10),
            false,
            false,
        ),
    ]);
    assert_eq!(got, want);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_save_through_a_temp_and_a_rename_gives_exactly_one_event() {
    let mut run = start(cfg(), |root| put(&root.join("envvars"), b"A=1\n")).await;
    let swap = run.path(".envvars.swp");
    put(&swap, b"vim swap");
    let temp = run.path(".envvars.tmp-4242");
    put(&temp, b"A=1\nB=2\n");
    fs::rename(&temp, run.path("envvars")).unwrap();
    fs::remove_file(&swap).unwrap();
    let got = run.events(1).await;
    assert_eq!(
        got,
        vec![ev(
            EventKind::ConfigFileChanged,
            "envvars",
            Some(8),
            false,
            false
        )]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_a_vim_style_save_inside_the_quiet_period_coalesce_into_one_event() {
    // A quiet period far longer than the few microseconds the writes below take.
    let long_quiet = WatcherConfig {
        quiet: Duration::from_secs(2),
        ..cfg()
    };
    let mut run = start(long_quiet, |root| put(&root.join("envvars"), b"A=1\n")).await;
    for i in 0..5 {
        put(
            &run.path("routes"),
            format!("10.{i}.0.0/16:192.168.1.1\n").as_bytes(),
        );
    }
    // vim: rename the file to a backup, write a new one, delete the backup.
    fs::rename(run.path("envvars"), run.path("envvars~")).unwrap();
    put(&run.path("envvars"), b"A=2\n");
    fs::remove_file(run.path("envvars~")).unwrap();
    let got = run.events(2).await;
    assert_eq!(
        got,
        vec![
            ev(
                EventKind::ConfigFileChanged,
                "envvars",
                Some(4),
                false,
                false
            ),
            ev(
                EventKind::ConfigFileChanged,
                "routes",
                Some(24),
                false,
                false
            ),
        ]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_writer_fires_once_after_it_closes_with_the_full_size() {
    let mut run = start(cfg(), |root| fs::create_dir(root.join("deploy")).unwrap()).await;
    let closed = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, closed) = (run.path("deploy/slow.zip"), closed.clone());
        std::thread::spawn(move || {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .unwrap();
            for _ in 0..10 {
                f.write_all(&[7u8; 1000]).unwrap();
                // The pauses are the behaviour under test (each longer than the quiet period).
                std::thread::sleep(Duration::from_millis(50));
            }
            // Set just before the close: the watcher fires on the close, at once, possibly
            // before this thread runs again.
            closed.store(true, Ordering::SeqCst);
            drop(f);
        })
    };
    let first = run.next_event().await;
    assert!(
        closed.load(Ordering::SeqCst),
        "fired before the writer closed: {first:?}"
    );
    assert_eq!(first, dropped("deploy/slow.zip", 10_000));
    writer.join().unwrap();
    assert_eq!(run.events(0).await, vec![]);
    run.stop().await;
}

/// Drop `n` zips into `deploy/` as fast as possible and return their paths.
async fn burst(root: &Path, n: usize) -> BTreeSet<String> {
    let deploy = root.join("deploy");
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| {
                let rel = format!("deploy/burst-{i:05}.zip");
                put(&deploy.join(format!("burst-{i:05}.zip")), b"PK");
                rel
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Collect the burst's events (bounded by 60 s): each path exactly once, and nothing after.
async fn collect_burst(run: &mut Run, want: &BTreeSet<String>) -> ServiceState {
    let all = async {
        let mut seen = BTreeSet::new();
        while seen.len() < want.len() {
            let e = run.next_event().await;
            assert_eq!(e, dropped(&e.1.path, 2));
            assert!(want.contains(&e.1.path), "unexpected {e:?}");
            assert!(
                seen.insert(e.1.path.clone()),
                "reported twice: {}",
                e.1.path
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("burst events within 60 s");
    let (after, state) = run.quiesce(0).await;
    assert_eq!(after, vec![], "events after the burst");
    assert_eq!(state.facts["events"], 10_000);
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_files_dropped_in_a_burst_give_ten_thousand_distinct_events() {
    let mut run = start(cfg(), |root| fs::create_dir(root.join("deploy")).unwrap()).await;
    let want = burst(&run.root, 10_000).await;
    let state = collect_burst(&mut run, &want).await;
    assert_eq!(state.phase, Phase::Applied);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_overflow_rescans_and_still_reports_each_of_ten_thousand_files_once() {
    // A queue of 16 events overflows at once in a burst: the rescan path must do all the work.
    let tiny_queue = WatcherConfig {
        queue_capacity: 16,
        settle_unobserved: Duration::from_millis(200),
        ..cfg()
    };
    let mut run = start(tiny_queue, |root| {
        fs::create_dir(root.join("deploy")).unwrap()
    })
    .await;
    let want = burst(&run.root, 10_000).await;
    let state = collect_burst(&mut run, &want).await;
    assert!(state.facts["rescans"].as_u64().unwrap() > 0, "{state:?}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_present_before_start_are_reported_at_start_and_config_files_are_not() {
    let mut run = start(cfg(), |root| {
        put(&root.join("deploy/old.zip"), b"zip");
        put(&root.join("deploy/.partial.zip"), b"no");
        put(&root.join("firmware/firmware.tgz"), b"tgz");
        put(&root.join("runtime/iohub-registry/img.tar.gz"), b"img!");
        put(&root.join("envvars"), b"A=1\n");
        put(&root.join("envvars.d/1.1.1-envvars"), b"B=1\n");
        put(&root.join("live/etc/hosts"), b"h");
        // A symlink is never a drop, wherever it points (issue 16: it was opened and measured).
        std::os::unix::fs::symlink("/etc/passwd", root.join("deploy/passwd.zip")).unwrap();
        std::os::unix::fs::symlink("old.zip", root.join("deploy/again.zip")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("firmware/firmware-pre")).unwrap();
    })
    .await;
    let got = run.events(3).await;
    assert_eq!(
        got,
        vec![
            ev(
                EventKind::DeployDropped,
                "deploy/old.zip",
                Some(3),
                false,
                true
            ),
            ev(
                EventKind::FirmwareDropped,
                "firmware/firmware.tgz",
                Some(3),
                false,
                true
            ),
            ev(
                EventKind::RegistryArchiveDropped,
                "runtime/iohub-registry/img.tar.gz",
                Some(4),
                false,
                true
            ),
        ]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_routes_reports_removed_and_a_consumed_drop_does_not() {
    let mut run = start(cfg(), |root| {
        put(&root.join("routes"), b"10.0.0.0/8:192.168.1.1\n");
        fs::create_dir(root.join("deploy")).unwrap();
    })
    .await;
    put(&run.path("deploy/app.zip"), b"zip");
    assert_eq!(run.next_event().await, dropped("deploy/app.zip", 3));
    fs::remove_file(run.path("deploy/app.zip")).unwrap();
    fs::remove_file(run.path("routes")).unwrap();
    let got = run.events(1).await;
    assert_eq!(
        got,
        vec![ev(
            EventKind::ConfigFileChanged,
            "routes",
            None,
            true,
            false
        )]
    );
    // The same name dropped again is a new drop.
    put(&run.path("deploy/app.zip"), b"zip2");
    assert_eq!(run.next_event().await, dropped("deploy/app.zip", 4));
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_and_recreated_directory_is_still_watched() {
    let mut run = start(cfg(), |root| {
        put(&root.join("envvars.d/1.1.1-envvars"), b"A=1\n");
    })
    .await;
    fs::remove_dir_all(run.path("envvars.d")).unwrap();
    let got = run.events(1).await;
    assert_eq!(
        got,
        vec![ev(
            EventKind::ConfigFileChanged,
            "envvars.d/1.1.1-envvars",
            None,
            true,
            false
        )]
    );

    let changed = ev(
        EventKind::ConfigFileChanged,
        "envvars.d/1.2.0-envvars",
        Some(4),
        false,
        false,
    );
    let removed = ev(
        EventKind::ConfigFileChanged,
        "envvars.d/1.2.0-envvars",
        None,
        true,
        false,
    );
    for round in 0..3 {
        // Also proves that the previous round's write into the moved-away directory was not
        // reported under its old name.
        fs::create_dir(run.path("envvars.d")).unwrap();
        put(&run.path("envvars.d/1.2.0-envvars"), b"B=1\n");
        assert_eq!(run.events(1).await, vec![changed.clone()], "round {round}");
        // Moved away as a whole: the files below it are gone too.
        fs::rename(run.path("envvars.d"), run.path("envvars.d.old")).unwrap();
        assert_eq!(run.events(1).await, vec![removed.clone()], "round {round}");
        put(&run.path("envvars.d.old/stale"), b"old\n");
        fs::remove_dir_all(run.path("envvars.d.old")).unwrap();
    }
    fs::create_dir(run.path("envvars.d")).unwrap();
    put(&run.path("envvars.d/1.2.0-envvars"), b"B=1\n");
    assert_eq!(run.events(1).await, vec![changed]);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_root_fails_with_not_found() {
    let mut run = spawn(cfg(), false, |_| {}).await;
    let state = run.wait_state(|_| true).await;
    assert_eq!(state.phase, Phase::Failed);
    let err = state.last_error.expect("an error");
    assert_eq!(
        (err.code, err.field.as_deref()),
        (ErrorCode::NotFound, Some("root"))
    );
    let result = tokio::time::timeout(LIMIT, &mut run.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.map_err(|e| e.code), Err(ErrorCode::NotFound));
    run.broker.shutdown(Duration::from_secs(1)).await;
}
