//! The lifecycle service on a temporary data root and system root, with the real broker:
//! first-start setup and seeding, live sync semantics, hooks and actions, markers, plan-only.

// Helpers outside #[test] fns: a failed fixture step fails the test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::{Broker, RouterLimits, Subscription};
use bus_schema::{Phase, ServiceName, ServiceState, Topic, Verb};
use serde_json::{json, Value};
use services::lifecycle::{self, LifecycleConfig};
use services::supervisor::Supervisor;
use services::{Backend, Paths, ServiceCtx};
use sys::fs::{atomic_write, ensure_dir};
use tokio_util::sync::CancellationToken;

/// A data root and a system root with IOhubOS 1.1.3's firmware files.
struct Fixture {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    root: PathBuf,
    system: PathBuf,
    broker: Broker,
}

impl Fixture {
    fn new() -> Fixture {
        let (root_dir, system_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (root, system) = (
            root_dir.path().join("iohub"),
            system_dir.path().to_path_buf(),
        );
        let f = Fixture {
            _dirs: (root_dir, system_dir),
            root,
            system,
            broker: Broker::start(RouterLimits::default()).unwrap(),
        };
        // As the firmware writes it: printf, no trailing newline.
        f.write_sys("usr/lib/iohub/version", "IOHUBOS_VERSION=1.1.3", 0o644);
        f.write_sys(
            "usr/lib/iohub/envvars",
            "IOHUBOS_NETWORK_CONFIG='true'\n",
            0o644,
        );
        for layer in ["1.0.0", "1.1.0", "1.1.1", "1.1.3", "9.9.9"] {
            f.write_sys(
                &format!("usr/lib/iohub/envvars.d/{layer}-envvars"),
                &format!("# firmware {layer}\n"),
                0o644,
            );
        }
        f.write_sys("usr/lib/iohub/envvars.d/README", "not a layer\n", 0o644);
        ensure_dir(&f.system.join("usr/bin/iohub-actions.d")).unwrap();
        f
    }

    fn paths(&self) -> Paths {
        Paths::new(&self.root, &self.system)
    }

    fn write(path: &Path, content: &str, mode: u32) {
        ensure_dir(path.parent().unwrap()).unwrap();
        atomic_write(path, content.as_bytes(), mode).unwrap();
    }

    fn write_root(&self, rel: &str, content: &str, mode: u32) {
        Self::write(&self.root.join(rel), content, mode);
    }

    fn write_sys(&self, rel: &str, content: &str, mode: u32) {
        Self::write(&self.system.join(rel), content, mode);
    }

    /// An action script in `/usr/bin/iohub-actions.d`.
    fn action(&self, name: &str, script: &str, mode: u32) {
        self.write_sys(&format!("usr/bin/iohub-actions.d/{name}"), script, mode);
    }

    /// A hook in `runtime/iohub-bootstrap`.
    fn hook(&self, name: &str, script: &str) {
        self.write_root(&format!("runtime/iohub-bootstrap/{name}"), script, 0o644);
    }

    fn ctx(&self, backend: Backend) -> ServiceCtx {
        ServiceCtx {
            name: ServiceName::Lifecycle,
            bus: self.broker.bus(),
            paths: self.paths(),
            backend,
            endpoints: services::settings::Endpoints::ephemeral(),
            shutdown: CancellationToken::new(),
            restarts: 0,
        }
    }

    /// Start the service under a supervisor and wait for its final state of this start.
    async fn start(&self, backend: Backend, config: LifecycleConfig) -> Started {
        let mut sub = self
            .broker
            .bus()
            .subscribe(&["iohub/state/lifecycle", "iohub/event/lifecycle/+"])
            .await
            .unwrap();
        let sup = Supervisor::start(vec![lifecycle::spec_with(config)], self.ctx(backend));
        let mut events = Vec::new();
        loop {
            let msg = next(&mut sub).await;
            if msg.retain {
                // The state of an earlier start on this broker.
                continue;
            }
            if msg.topic == "iohub/event/lifecycle/action_ran" {
                events.push(msg.json().unwrap());
            } else if msg.topic == "iohub/state/lifecycle" {
                let state: ServiceState = msg.json().unwrap();
                if matches!(
                    state.phase,
                    Phase::Applied | Phase::Degraded | Phase::Failed
                ) {
                    return Started { sup, state, events };
                }
            }
        }
    }

    fn exists(&self, path: impl AsRef<Path>) -> bool {
        std::fs::symlink_metadata(path.as_ref()).is_ok()
    }
}

/// A started lifecycle: its supervisor, its final state, the `action_ran` events before it.
struct Started {
    sup: Supervisor,
    state: ServiceState,
    events: Vec<Value>,
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

fn mode(path: impl AsRef<Path>) -> u32 {
    std::fs::metadata(path.as_ref())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn short() -> LifecycleConfig {
    LifecycleConfig {
        action_timeout: Duration::from_secs(1),
        hook_timeout: Duration::from_secs(10),
    }
}

async fn next(sub: &mut Subscription) -> broker::Message {
    tokio::time::timeout(Duration::from_secs(30), sub.recv())
        .await
        .expect("no message within 30 s")
        .expect("bus closed")
}

async fn wait_state(sub: &mut Subscription, pred: impl Fn(&ServiceState) -> bool) -> ServiceState {
    loop {
        let msg = next(sub).await;
        if msg.topic == Topic::state(ServiceName::Lifecycle).to_string() {
            let state: ServiceState = msg.json().unwrap();
            if pred(&state) {
                return state;
            }
        }
    }
}

/// The retained plan (a fresh subscription gets it first).
async fn plan(f: &Fixture) -> Value {
    let mut sub = f
        .broker
        .bus()
        .subscribe(&["iohub/plan/lifecycle"])
        .await
        .unwrap();
    next(&mut sub).await.json().unwrap()
}

fn names(records: &Value) -> Vec<String> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

async fn stop(f: Fixture, sup: Supervisor) {
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());
    f.broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_the_tree_and_seeds_envvars_d_up_to_the_running_version() {
    let f = Fixture::new();
    // The user already has a 1.1.0 layer of their own: it is never overwritten.
    f.write_root(
        "envvars.d/1.1.0-envvars",
        "IOHUBOS_VPN_ENABLED='true' # mine\n",
        0o600,
    );

    // Plan-only: setup of the data root happens anyway.
    let Started { sup, state, .. } = f.start(Backend::PlanOnly, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    for dir in [
        "deploy",
        "firmware",
        "live",
        "runtime/iohub-bootstrap",
        "runtime/iohub-registry",
        "envvars.d",
    ] {
        assert!(f.root.join(dir).is_dir(), "{dir}");
    }
    assert_eq!(read(f.root.join("setup.done")), "");
    assert_eq!(
        read(f.root.join("envvars")),
        "IOHUBOS_NETWORK_CONFIG='true'\n"
    );
    assert_eq!(
        read(f.root.join("envvars.d/1.0.0-envvars")),
        "# firmware 1.0.0\n"
    );
    assert_eq!(
        read(f.root.join("envvars.d/1.1.3-envvars")),
        "# firmware 1.1.3\n"
    );
    assert_eq!(
        read(f.root.join("envvars.d/1.1.0-envvars")),
        "IOHUBOS_VPN_ENABLED='true' # mine\n"
    );
    assert!(
        !f.exists(f.root.join("envvars.d/9.9.9-envvars")),
        "a newer firmware layer was seeded"
    );
    assert!(!f.exists(f.root.join("envvars.d/README")));
    assert_eq!(
        read(f.root.join("forwards-tcp")),
        "# SRC_PORT=DST_IP:DST_PORT\n"
    );
    assert_eq!(
        read(f.root.join("forwards-udp")),
        "# SRC_PORT=DST_IP:DST_PORT\n"
    );
    assert_eq!(
        read(f.root.join("routes")),
        "# DESTINATION/NETMASK:GATEWAY\n# e.g. 192.168.152.0/24:10.11.12.100\n"
    );
    for file in ["forwards-tcp", "forwards-udp", "routes"] {
        assert_eq!(mode(f.root.join(file)), 0o644, "{file}");
    }
    let setup = &state.facts["setup"];
    assert_eq!(setup["first_start"], true);
    assert_eq!(setup["version"], "1.1.3");
    assert_eq!(
        setup["seeded"],
        json!(["1.0.0-envvars", "1.1.1-envvars", "1.1.3-envvars"])
    );
    assert_eq!(setup["newer_skipped"], json!(["9.9.9-envvars"]));
    assert_eq!(plan(&f).await["setup"], *setup);
    assert!(sup.shutdown(Duration::from_secs(5)).await.is_empty());

    // A later start: no first-start steps, user edits kept, a deleted default comes back.
    f.write_root("forwards-tcp", "8080=10.0.0.2:80\n", 0o644);
    sys::fs::remove_file(&f.root.join("routes")).unwrap();
    sys::fs::remove_file(&f.root.join("envvars")).unwrap();
    let Started { sup, state, .. } = f.start(Backend::PlanOnly, short()).await;
    assert_eq!(state.facts["setup"]["first_start"], false);
    assert_eq!(state.facts["setup"]["created"], json!(["routes"]));
    assert_eq!(read(f.root.join("forwards-tcp")), "8080=10.0.0.2:80\n");
    assert!(
        !f.exists(f.root.join("envvars")),
        "envvars is only copied on the first start"
    );
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sync_copies_files_and_dotfiles_skips_symlinks_and_keeps_existing_permissions() {
    let f = Fixture::new();
    f.write_root("live/etc/app.conf", "app\n", 0o640);
    f.write_root("live/etc/.hidden", "hidden\n", 0o600);
    f.write_root("live/.dotdir/inside", "dot\n", 0o644);
    f.write_root("live/usr/local/bin/tool", "#!/bin/sh\n", 0o755);
    f.write_root("live/etc/existing.conf", "new content\n", 0o755);
    f.write_root("live/opt/through-link", "via link\n", 0o644);
    sys::fs::replace_symlink(
        &f.root.join("live/etc/link-to-app"),
        std::path::Path::new("app.conf"),
    )
    .unwrap();
    sys::fs::replace_symlink(&f.root.join("live/dirlink"), std::path::Path::new("/etc")).unwrap();
    // On the system: a file with its own mode, a file live/ does not have, `opt` as a symlink.
    f.write_sys("etc/existing.conf", "old content\n", 0o600);
    f.write_sys("etc/untouched", "stays\n", 0o644);
    ensure_dir(&f.system.join("real-opt")).unwrap();
    sys::fs::replace_symlink(&f.system.join("opt"), std::path::Path::new("real-opt")).unwrap();

    let Started { sup, state, .. } = f.start(Backend::Live, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    let sys = &f.system;
    assert_eq!(read(sys.join("etc/app.conf")), "app\n");
    assert_eq!(mode(sys.join("etc/app.conf")), 0o640);
    assert_eq!(read(sys.join("etc/.hidden")), "hidden\n");
    assert_eq!(read(sys.join(".dotdir/inside")), "dot\n");
    assert_eq!(mode(sys.join("usr/local/bin/tool")), 0o755);
    assert_eq!(read(sys.join("etc/existing.conf")), "new content\n");
    assert_eq!(
        mode(sys.join("etc/existing.conf")),
        0o600,
        "an existing file keeps its permissions"
    );
    assert_eq!(
        read(sys.join("etc/untouched")),
        "stays\n",
        "nothing is deleted"
    );
    assert!(
        !f.exists(sys.join("etc/link-to-app")),
        "source symlinks are skipped"
    );
    assert!(!f.exists(sys.join("dirlink")));
    assert!(
        std::fs::symlink_metadata(sys.join("opt"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "-K: kept and followed"
    );
    assert_eq!(read(sys.join("real-opt/through-link")), "via link\n");
    let leftovers: Vec<_> = std::fs::read_dir(sys.join("etc"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.contains(".tmp-").then_some(name)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let livesync = &state.facts["livesync"];
    assert_eq!(livesync["files"], 6, "{livesync}");
    let skipped: Vec<&str> = livesync["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["path"].as_str().unwrap())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped
        .iter()
        .all(|p| p.ends_with("dirlink") || p.ends_with("link-to-app")));
    assert_eq!(plan(&f).await["applied"], true);

    // A reload with nothing new changes nothing; a new file is picked up.
    let bus = f.broker.bus();
    let reply = bus
        .request(
            ServiceName::Lifecycle,
            Verb::Reload,
            json!({}),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.result.as_ref().unwrap()["files"], 0);
    assert_eq!(reply.result.as_ref().unwrap()["unchanged"], 6);
    f.write_root("live/etc/later.conf", "later\n", 0o644);
    let reply = bus
        .request(
            ServiceName::Lifecycle,
            Verb::Reload,
            json!({}),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(reply.result.unwrap()["files"], 1);
    assert_eq!(read(sys.join("etc/later.conf")), "later\n");
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hanging_and_plain_actions_are_recorded_and_the_service_reaches_applied() {
    let f = Fixture::new();
    f.action("0010-ok", "#!/bin/sh\necho hello\n", 0o755);
    f.action("0020-exit3", "#!/bin/sh\necho bad >&2\nexit 3\n", 0o755);
    f.action("0030-hang", "#!/bin/sh\necho started\nsleep 1000\n", 0o755);
    f.action("0040-plain", "echo \"plain via $0 pid $$\"\n", 0o644);
    f.action(".hidden", "#!/bin/sh\nexit 9\n", 0o755);
    ensure_dir(&f.system.join("usr/bin/iohub-actions.d/0050-a-dir")).unwrap();

    let Started { sup, state, events } = f.start(Backend::Live, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    let actions = &state.facts["actions"];
    assert_eq!(
        names(actions),
        ["0010-ok", "0020-exit3", "0030-hang", "0040-plain"]
    );
    let [ok, exit3, hang, plain] = [&actions[0], &actions[1], &actions[2], &actions[3]];
    assert_eq!(
        (
            ok["code"].clone(),
            ok["stdout_tail"].clone(),
            ok["how"].clone()
        ),
        (json!(0), json!("hello\n"), json!("exec"))
    );
    assert_eq!(
        (
            exit3["code"].clone(),
            exit3["stderr_tail"].clone(),
            exit3["timed_out"].clone()
        ),
        (json!(3), json!("bad\n"), json!(false))
    );
    assert_eq!(
        (
            hang["code"].clone(),
            hang["timed_out"].clone(),
            hang["stdout_tail"].clone()
        ),
        (Value::Null, json!(true), json!("started\n"))
    );
    assert!(hang["duration_ms"].as_u64().unwrap() >= 1000);
    assert_eq!(plain["how"], "sh");
    assert_eq!(plain["code"], 0);
    let out = plain["stdout_tail"].as_str().unwrap();
    assert!(
        out.starts_with("plain via ") && out.contains("0040-plain"),
        "{out}"
    );
    assert!(
        !out.contains(&format!("pid {}\n", std::process::id())),
        "ran inside iohubd: {out}"
    );
    assert_eq!(state.facts["skipped"][0]["reason"], "not a regular file");

    // One event per program, published before the final state.
    let ran: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(ran, ["0010-ok", "0020-exit3", "0030-hang", "0040-plain"]);
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_and_actions_run_at_their_points_including_actions_added_by_live_sync() {
    let f = Fixture::new();
    let log = |name: &str| format!("echo {name} >> \"$IOHUB_ROOT/order.log\"\n");
    for hook in [
        "postmount",
        "presetup",
        "postsetup",
        "postlivesync",
        "preliveactions",
        "postliveactions",
        "end",
    ] {
        f.hook(hook, &log(hook));
    }
    // Whether live sync already ran, seen from the hook before it.
    f.hook("prelivesync", "if [ -e \"$IOHUB_SYSTEM_ROOT/etc/synced\" ]; then echo prelivesync-late; else echo prelivesync; fi >> \"$IOHUB_ROOT/order.log\"\n");
    f.write_root("live/etc/synced", "", 0o644);
    f.action("0010-first", &log("0010-first"), 0o755);
    f.write_root(
        "live/usr/bin/iohub-actions.d/0005-from-live",
        &format!("#!/bin/sh\n{}", log("0005-from-live")),
        0o755,
    );

    let Started { sup, state, .. } = f.start(Backend::Live, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    let order = read(f.root.join("order.log"));
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(
        order,
        [
            "postmount",
            "presetup",
            "postsetup",
            "prelivesync",
            "postlivesync",
            "preliveactions",
            "0005-from-live",
            "0010-first",
            "postliveactions",
            "end",
        ]
    );
    assert_eq!(names(&state.facts["hooks"]).len(), 8);
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_only_runs_nothing_and_its_plan_lists_what_would_run_and_be_copied() {
    let f = Fixture::new();
    f.action(
        "0010-marker",
        "#!/bin/sh\ntouch \"$IOHUB_ROOT/action.ran\"\n",
        0o755,
    );
    f.hook("end", "touch \"$IOHUB_ROOT/end.ran\"\n");
    f.write_root("live/etc/x.conf", "x\n", 0o644);
    f.write_root(
        "live/usr/bin/iohub-actions.d/0020-from-live",
        "touch \"$IOHUB_ROOT/live-action.ran\"\n",
        0o644,
    );

    let Started { sup, state, .. } = f.start(Backend::PlanOnly, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    for marker in ["action.ran", "end.ran", "live-action.ran"] {
        assert!(!f.exists(f.root.join(marker)), "{marker} ran in plan-only");
    }
    assert!(
        !f.exists(f.system.join("etc")),
        "live sync wrote in plan-only"
    );
    assert_eq!(state.facts["actions"], json!([]));
    assert_eq!(state.facts["hooks"], json!([]));
    assert_eq!(state.facts["livesync"]["files"], 0);
    assert_eq!(state.facts["livesync"]["planned_files"], 2);

    let plan = plan(&f).await;
    assert_eq!(plan["backend"], "plan-only");
    assert_eq!(plan["applied"], false);
    let run: Vec<(String, String, String)> = plan["run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().into(),
                r["name"].as_str().unwrap().into(),
                r["how"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("action", "0010-marker", "exec"),
        ("action", "0020-from-live", "sh"),
        ("hook", "end", "sh"),
    ];
    assert_eq!(
        run,
        expected.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );
    let to: Vec<&str> = plan["livesync"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["to"].as_str().unwrap())
        .collect();
    assert_eq!(to.len(), 2);
    assert!(
        to[0].ends_with("etc/x.conf") && to[1].ends_with("usr/bin/iohub-actions.d/0020-from-live"),
        "{to:?}"
    );
    assert_eq!(plan["livesync"]["files"][0]["mode"], "0644");
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_noboot_skips_live_sync_actions_and_every_hook_but_end() {
    let f = Fixture::new();
    f.write_root("ask.noboot", "", 0o644);
    f.action(
        "0010-marker",
        "#!/bin/sh\ntouch \"$IOHUB_ROOT/action.ran\"\n",
        0o755,
    );
    f.hook("prelivesync", "touch \"$IOHUB_ROOT/prelivesync.ran\"\n");
    f.hook(
        "postliveactions",
        "touch \"$IOHUB_ROOT/postliveactions.ran\"\n",
    );
    f.hook("end", "touch \"$IOHUB_ROOT/end.ran\"\n");
    f.write_root("live/etc/x.conf", "x\n", 0o644);

    let Started { sup, state, .. } = f.start(Backend::Live, short()).await;
    assert_eq!(state.phase, Phase::Degraded, "{state:?}");
    let error = state.last_error.unwrap();
    assert_eq!(error.field.as_deref(), Some("ask.noboot"));
    assert!(error.message.contains("maintenance mode"), "{error}");
    assert_eq!(state.facts["maintenance"], true);
    assert!(f.exists(f.root.join("end.ran")));
    for skipped in ["action.ran", "prelivesync.ran", "postliveactions.ran"] {
        assert!(!f.exists(f.root.join(skipped)), "{skipped}");
    }
    assert!(!f.exists(f.system.join("etc/x.conf")));
    assert_eq!(
        state.facts["setup"]["first_start"], true,
        "setup still happens"
    );
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_markers_skip_live_sync_and_actions_but_not_the_hooks() {
    let f = Fixture::new();
    f.write_root("disable.livesync", "", 0o644);
    f.write_root("disable.actions", "", 0o644);
    f.action(
        "0010-marker",
        "#!/bin/sh\ntouch \"$IOHUB_ROOT/action.ran\"\n",
        0o755,
    );
    f.hook(
        "postliveactions",
        "touch \"$IOHUB_ROOT/postliveactions.ran\"\n",
    );
    f.write_root("live/etc/x.conf", "x\n", 0o644);

    let Started { sup, state, .. } = f.start(Backend::Live, short()).await;
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    assert!(!f.exists(f.root.join("action.ran")));
    assert!(!f.exists(f.system.join("etc/x.conf")));
    assert!(f.exists(f.root.join("postliveactions.ran")));
    assert_eq!(state.facts["livesync"]["not_run"], "disable.livesync");
    assert_eq!(state.facts["actions_not_run"], "disable.actions");
    assert_eq!(
        state.facts["markers"],
        json!({ "ask_noboot": false, "disable_livesync": true, "disable_actions": true })
    );
    stop(f, sup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_hanging_action_returns_promptly_and_kills_it() {
    let f = Fixture::new();
    let pidfile = f.root.join("hang.pid");
    f.action(
        "0010-hang",
        "#!/bin/sh\nsleep 1000 &\necho $! > \"$IOHUB_ROOT/hang.pid\"\nwait\n",
        0o755,
    );
    let mut sub = f
        .broker
        .bus()
        .subscribe(&["iohub/state/lifecycle"])
        .await
        .unwrap();
    let config = LifecycleConfig {
        action_timeout: Duration::from_secs(3600),
        ..LifecycleConfig::default()
    };
    let sup = Supervisor::start(vec![lifecycle::spec_with(config)], f.ctx(Backend::Live));
    wait_state(&mut sub, |s| s.phase == Phase::Applying).await;
    while std::fs::read_to_string(&pidfile)
        .map(|s| !s.ends_with('\n'))
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: u32 = read(&pidfile).trim().parse().unwrap();

    assert!(
        sup.shutdown(Duration::from_secs(5)).await.is_empty(),
        "the lifecycle ignored shutdown"
    );
    let dead = |pid: u32| match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with(['Z', 'X'])),
    };
    for _ in 0..100 {
        if dead(pid) {
            f.broker.shutdown(Duration::from_secs(1)).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the hanging action's child survived shutdown");
}
