//! The config service on a temporary root, against the real broker: layering, interpolation,
//! refused input, live reloads, `set`/`get`, generations across a restart.

// Helpers outside #[test] fns: a failed fixture step fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::{Broker, Bus, RouterLimits};
use bus_schema::events::FileEvent;
use bus_schema::{EventKind, Phase, Reply, Section, ServiceName, ServiceState, Topic, Verb};
use futures::FutureExt;
use serde_json::{json, Value};
use services::config::{ConfigChanged, ConfigFacts, ConfigRejected, RejectSource};
use services::{Backend, Paths, ServiceCtx};
use sys::fs::atomic_write;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// sysvars as the installer writes it (SPEC.md §4.1).
const SYSVARS: &str = "# IOhubOS system variables, written by the installer\n\
IOHUBOS_DEVICE=\"/dev/sda\"\n\
IOHUBOS_ETH0_DEVICE=\"enp1s0\"\n\
IOHUBOS_HOSTNAME=\"iohub-525400aabbcc\"\n\n";

/// A user envvars in the style of the shipped one: comments, both quoting styles,
/// interpolation of sysvars.
const ENVVARS: &str = "# IOhubOS configuration\n\
\n\
# timezone (tz database name)\n\
IOHUBOS_TIMEZONE='Europe/Rome'\n\
IOHUBOS_OPENSSH_ENABLED='true'   # ssh on\n\
\n\
# network\n\
IOHUBOS_NETWORK_CONFIG='true'\n\
IOHUBOS_NETWORK_MODE='standalone'\n\
IOHUBOS_ETH0_MODE='dhcp'\n\
IOHUBOS_ETH0_DNS=''\n\
\n\
# zerotier here has no effect: envvars.d/1.1.1-envvars comes later\n\
IOHUBOS_ZEROTIER_ENABLED='true'\n\
\n\
# registry\n\
IOHUBOS_DOCKER_REGISTRY_PORT='5000'\n\
IOHUBOS_GLOBAL_MQTT_IMG=\"${IOHUBOS_HOSTNAME}:${IOHUBOS_DOCKER_REGISTRY_PORT}/iohubos/iohubos-mqtt\"\n";

/// `envvars.d/1.1.0-envvars` as shipped (deprecated VPN names).
const LAYER_110: &str = "# WireGuard client (deprecated names, see 1.1.1-envvars)\n\
IOHUBOS_VPN_ENABLED='false'\n\
IOHUBOS_VPN_SERVER_PUBLIC_KEY=''\n\
IOHUBOS_VPN_BOX_NUMBER=''\n\
IOHUBOS_VPN_NETWORK=''\n\
IOHUBOS_VPN_SERVER_IP_ADDRESS=''\n\
IOHUBOS_VPN_SERVER_IP_PORT=''\n\
IOHUBOS_VPN_EXPOSE='auto'\n\
IOHUBOS_VPN_ACCESS_HOST='false'\n";

/// `envvars.d/1.1.1-envvars` as shipped: re-sources 1.1.0 and inherits from it.
const LAYER_111: &str = "# WireGuard\n\
[[ -f /iohub/envvars.d/1.1.0-envvars ]] && . /iohub/envvars.d/1.1.0-envvars\n\
IOHUBOS_WIREGUARD_ENABLED=\"${IOHUBOS_VPN_ENABLED:-false}\"\n\
IOHUBOS_WIREGUARD_SERVER_PUBLIC_KEY=\"${IOHUBOS_VPN_SERVER_PUBLIC_KEY:-}\"\n\
IOHUBOS_WIREGUARD_BOX_NUMBER=\"${IOHUBOS_VPN_BOX_NUMBER:-}\"\n\
IOHUBOS_WIREGUARD_NETWORK=\"${IOHUBOS_VPN_NETWORK:-}\"\n\
IOHUBOS_WIREGUARD_SERVER_IP_ADDRESS=\"${IOHUBOS_VPN_SERVER_IP_ADDRESS:-}\"\n\
IOHUBOS_WIREGUARD_SERVER_IP_PORT=\"${IOHUBOS_VPN_SERVER_IP_PORT:-}\"\n\
IOHUBOS_WIREGUARD_EXPOSE=\"${IOHUBOS_VPN_EXPOSE:-auto}\"\n\
IOHUBOS_WIREGUARD_ACCESS_HOST=\"${IOHUBOS_VPN_ACCESS_HOST:-false}\"\n\
\n\
# ZeroTier\n\
IOHUBOS_ZEROTIER_ENABLED='false'\n\
IOHUBOS_ZEROTIER_NETWORK=''\n\
IOHUBOS_ZEROTIER_ACCESS_HOST='false'\n";

const FORWARDS_COMMENT: &str = "# SRC_PORT=DST_IP:DST_PORT\n";
const ROUTES_COMMENT: &str = "# DESTINATION/NETMASK:GATEWAY\n# 192.168.152.0/24:10.11.12.100\n";

/// A data root and a system root on disk.
struct Roots {
    root: tempfile::TempDir,
    sys: tempfile::TempDir,
}

impl Roots {
    /// A root like a 1.1.3 box after its first boot.
    fn box_113() -> Roots {
        let roots = Roots::bare("IOHUBOS_VERSION=1.1.3");
        roots.write("sysvars", SYSVARS);
        roots.write("envvars", ENVVARS);
        for v in ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.1.2", "1.1.3"] {
            roots.write(&format!("envvars.d/{v}-envvars"), &format!("# {v}\n"));
        }
        roots.write("envvars.d/1.1.0-envvars", LAYER_110);
        roots.write("envvars.d/1.1.1-envvars", LAYER_111);
        roots.write("forwards-tcp", FORWARDS_COMMENT);
        roots.write("forwards-udp", FORWARDS_COMMENT);
        roots.write("routes", ROUTES_COMMENT);
        roots
    }

    /// Only the firmware version file (written with `printf`: no trailing newline).
    fn bare(version_line: &str) -> Roots {
        let roots = Roots {
            root: tempfile::tempdir().unwrap(),
            sys: tempfile::tempdir().unwrap(),
        };
        let lib = roots.sys.path().join("usr/lib/iohub");
        std::fs::create_dir_all(&lib).unwrap();
        atomic_write(&lib.join("version"), version_line.as_bytes(), 0o644).unwrap();
        roots
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        atomic_write(&path, text.as_bytes(), 0o644).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn paths(&self) -> Paths {
        Paths::new(self.root.path(), self.sys.path())
    }
}

/// A broker plus one run of the config service.
struct Running {
    broker: Broker,
    bus: Bus,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), bus_schema::BusError>>>,
}

impl Running {
    async fn start(roots: &Roots) -> Running {
        let broker = Broker::start(RouterLimits::default()).unwrap();
        let bus = broker.bus();
        let shutdown = CancellationToken::new();
        let ctx = ServiceCtx {
            name: ServiceName::Config,
            bus: bus.clone(),
            paths: roots.paths(),
            backend: Backend::PlanOnly,
            endpoints: services::settings::Endpoints::ephemeral(),
            shutdown: shutdown.clone(),
            restarts: 0,
        };
        let task = tokio::spawn(services::config::run(ctx));
        let running = Running {
            broker,
            bus,
            shutdown,
            tasks: vec![task],
        };
        running.wait_state(|_| true).await;
        running
    }

    /// Also run the real watcher on the root, and wait until its watches are in place.
    async fn with_watcher(mut self, roots: &Roots) -> Running {
        let ctx = ServiceCtx {
            name: ServiceName::Watcher,
            bus: self.bus.clone(),
            paths: roots.paths(),
            backend: Backend::PlanOnly,
            endpoints: services::settings::Endpoints::ephemeral(),
            shutdown: self.shutdown.clone(),
            restarts: 0,
        };
        let mut states = self.bus.subscribe(&["iohub/state/watcher"]).await.unwrap();
        self.tasks.push(tokio::spawn(services::watcher::run(ctx)));
        tokio::time::timeout(WAIT, async {
            loop {
                let state: ServiceState =
                    serde_json::from_slice(&states.recv().await.unwrap().payload).unwrap();
                if state.phase == Phase::Applied {
                    return;
                }
            }
        })
        .await
        .expect("the watcher never came up");
        self
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(WAIT, task)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        self.broker.shutdown(Duration::from_secs(1)).await;
    }

    /// What a fresh subscriber sees: every retained `iohub/...` message.
    async fn view_now(&self) -> View {
        let mut sub = self.bus.subscribe(&["iohub/#"]).await.unwrap();
        let mut view = View::default();
        // Retained messages are queued at subscribe time: they are ready without waiting.
        while let Some(Some(m)) = sub.recv().now_or_never() {
            if !m.retain {
                break;
            }
            view.topics
                .insert(m.topic.clone(), serde_json::from_slice(&m.payload).unwrap());
        }
        view
    }

    /// Wait until the retained state of the config service satisfies `pred`.
    async fn wait_state(&self, pred: impl Fn(&ServiceState) -> bool) -> ServiceState {
        let mut sub = self.bus.subscribe(&["iohub/state/config"]).await.unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                let m = sub.recv().await.unwrap();
                let state: ServiceState = serde_json::from_slice(&m.payload).unwrap();
                if pred(&state) {
                    return state;
                }
            }
        })
        .await
        .expect("config state never matched")
    }

    async fn request(&self, verb: Verb, body: Value) -> Reply {
        self.bus
            .request(ServiceName::Config, verb, body, WAIT)
            .await
            .unwrap()
    }

    async fn get_var(&self, name: &str) -> Value {
        let reply = self.request(Verb::Get, json!({ "var": name })).await;
        assert!(reply.ok, "{reply:?}");
        reply.result.unwrap()
    }

    /// Tell the service a file changed (what the watcher does) and return the event that
    /// follows (`config_changed` or `config_rejected`), once the state that comes after it
    /// is published too.
    async fn file_changed(&self, rel: &str, expect: EventKind) -> Value {
        let topic = Topic::Event(ServiceName::Config, expect).to_string();
        let mut sub = self.bus.subscribe(&[&topic]).await.unwrap();
        let mut states = self.bus.subscribe(&["iohub/state/config"]).await.unwrap();
        let retained = states.recv().await.unwrap();
        assert!(retained.retain);
        let event = FileEvent {
            version: 1,
            path: rel.to_string(),
            size_bytes: None,
            removed: false,
            at_start: false,
        };
        // A burst: the service coalesces it into one reload.
        for _ in 0..3 {
            self.bus
                .publish_json(
                    &Topic::Event(ServiceName::Watcher, EventKind::ConfigFileChanged),
                    &event,
                )
                .await
                .unwrap();
        }
        let m = tokio::time::timeout(WAIT, sub.recv())
            .await
            .expect("no event")
            .unwrap();
        // The service publishes its state after the events of a reload.
        tokio::time::timeout(WAIT, states.recv())
            .await
            .expect("no new state")
            .unwrap();
        serde_json::from_slice(&m.payload).unwrap()
    }
}

#[derive(Default, Debug)]
struct View {
    topics: BTreeMap<String, Value>,
}

impl View {
    fn section(&self, s: Section) -> Option<&Value> {
        self.topics.get(&Topic::Config(s).to_string())
    }

    fn sections(&self) -> BTreeMap<String, &Value> {
        self.topics
            .iter()
            .filter(|(t, _)| t.starts_with("iohub/config/"))
            .map(|(t, v)| (t.trim_start_matches("iohub/config/").to_string(), v))
            .collect()
    }

    fn generations(&self) -> BTreeMap<String, u64> {
        self.sections()
            .into_iter()
            .map(|(s, v)| (s, v["generation"].as_u64().unwrap()))
            .collect()
    }

    fn state(&self) -> ServiceState {
        serde_json::from_value(self.topics["iohub/state/config"].clone()).unwrap()
    }

    fn facts(&self) -> ConfigFacts {
        serde_json::from_value(self.state().facts).unwrap()
    }
}

fn error_fields(errors: &[bus_schema::BusError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| e.field.clone().unwrap_or_default())
        .collect()
}

/// The section a variable belongs to, as the schema says.
fn section_of(var: &str) -> Section {
    bus_schema::sections::spec(var).unwrap().section
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_section_and_the_state_are_retained_for_a_fresh_subscriber() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let view = svc.view_now().await;
    let sections: Vec<String> = view.sections().into_keys().collect();
    let mut all: Vec<String> = Section::ALL.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(sections, all);
    assert_eq!(sections.len(), 17);
    for (name, payload) in view.sections() {
        assert_eq!(payload["generation"], 1, "{name}");
        assert_eq!(payload["section"], name.as_str());
    }
    let state = view.state();
    assert_eq!(state.phase, Phase::Applied, "{state:?}");
    let facts = view.facts();
    assert_eq!(facts.version, "1.1.3");
    assert!(facts.errors.is_empty(), "{:?}", facts.errors);
    assert_eq!(
        facts.files[..4],
        [
            "/usr/lib/iohub/version",
            "sysvars",
            "envvars",
            "envvars.d/1.0.0-envvars"
        ]
    );
    assert!(facts.files.contains(&"envvars.d/1.1.1-envvars".to_string()));
    assert!(facts.files.ends_with(&[
        "forwards-tcp".into(),
        "forwards-udp".into(),
        "routes".into()
    ]));
    assert_eq!(facts.generations.len(), 17);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_with_an_empty_envvars_publishes_nothing_and_says_why() {
    // Issue 16: "every variable at its default" is never what an empty file means on a box (the
    // lifecycle service copies the firmware's defaults in when the file is missing at first
    // start); with no last good value, no section is published until the file is fixed.
    let roots = Roots::bare("IOHUBOS_VERSION=1.1.3\n");
    roots.write("sysvars", SYSVARS);
    roots.write("envvars", "");
    let svc = Running::start(&roots).await;
    let view = svc.view_now().await;
    assert_eq!(view.sections().len(), 0);
    let state = view.state();
    assert_ne!(state.phase, Phase::Applied, "{state:?}");
    let error = state.last_error.unwrap();
    assert_eq!(error.field.as_deref(), Some("envvars"), "{error:?}");
    // Fixed, it loads: the variables it does not assign take their defaults.
    roots.write("envvars", "IOHUBOS_HOSTNAME='box'\n");
    svc.file_changed("envvars", EventKind::ConfigChanged).await;
    assert_eq!(svc.view_now().await.sections().len(), 17);
    assert_eq!(
        svc.get_var("IOHUBOS_NETWORK_MODE").await["source"],
        "default"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_version_file_is_an_error_and_the_version_is_0_0_0() {
    let roots = Roots::box_113();
    sys::fs::remove_file(&roots.sys.path().join("usr/lib/iohub/version")).unwrap();
    let svc = Running::start(&roots).await;
    let view = svc.view_now().await;
    let facts = view.facts();
    assert_eq!(facts.version, "0.0.0");
    assert_eq!(view.state().phase, Phase::Degraded);
    assert!(
        facts.errors.iter().any(|e| e.message.contains("version")),
        "{:?}",
        facts.errors
    );
    // No layer is older than 0.0.0: every envvars.d file is skipped...
    assert!(facts
        .skipped_layers
        .contains(&"envvars.d/1.1.1-envvars".to_string()));
    // ...so envvars' IOHUBOS_ZEROTIER_ENABLED='true' is no longer reset, and ZeroTier without a
    // network id is refused: that section alone is withheld.
    assert_eq!(facts.withheld, [Section::Zerotier]);
    assert_eq!(view.sections().len(), 16);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envvars_d_overrides_envvars_and_a_newer_layer_is_ignored() {
    let roots = Roots::box_113();
    roots.write("envvars.d/9.9.9-envvars", "IOHUBOS_TIMEZONE='Asia/Tokyo'\n");
    roots.write("envvars.d/README", "IOHUBOS_TIMEZONE='Asia/Tokyo'\n");
    let svc = Running::start(&roots).await;
    let zt = svc.get_var("IOHUBOS_ZEROTIER_ENABLED").await;
    assert_eq!(zt["value"], "false");
    assert_eq!(zt["source"], "envvars.d/1.1.1-envvars");
    assert_eq!(
        svc.get_var("IOHUBOS_TIMEZONE").await["value"],
        "Europe/Rome"
    );
    // VPN_* feed WIREGUARD_* through 1.1.1-envvars.
    assert_eq!(
        svc.get_var("IOHUBOS_WIREGUARD_EXPOSE").await["value"],
        "auto"
    );
    let facts = svc.view_now().await.facts();
    assert!(
        facts
            .skipped_layers
            .contains(&"envvars.d/9.9.9-envvars".to_string()),
        "{facts:?}"
    );
    assert!(
        !facts.files.iter().any(|f| f.contains("9.9.9")),
        "{facts:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deprecated_vpn_variables_feed_wireguard_when_the_1_1_1_layer_is_missing() {
    let roots = Roots::box_113();
    sys::fs::remove_file(&roots.path("envvars.d/1.1.1-envvars")).unwrap();
    roots.write(
        "envvars.d/1.1.0-envvars",
        &LAYER_110.replace(
            "IOHUBOS_VPN_NETWORK=''",
            "IOHUBOS_VPN_NETWORK='100.90.56.0/24'",
        ),
    );
    let envvars = ENVVARS.replace("IOHUBOS_ZEROTIER_ENABLED='true'", "");
    roots.write(
        "envvars",
        &format!("{envvars}IOHUBOS_ENGINE_REGISTRY_RESCAN='false'\nIOHUBOS_NOT_A_THING='1'\n"),
    );
    let svc = Running::start(&roots).await;
    assert_eq!(
        svc.get_var("IOHUBOS_WIREGUARD_NETWORK").await["value"],
        "100.90.56.0/24"
    );
    assert_eq!(
        svc.get_var("IOHUBOS_DOCKER_REGISTRY_RESCAN").await["value"],
        "false"
    );
    let view = svc.view_now().await;
    let facts = view.facts();
    // Unknown and deprecated names warn; they do not degrade the config.
    assert_eq!(view.state().phase, Phase::Applied, "{facts:?}");
    let warned = error_fields(&facts.warnings);
    assert!(
        warned.contains(&"IOHUBOS_NOT_A_THING".to_string()),
        "{warned:?}"
    );
    assert!(
        warned.contains(&"IOHUBOS_ENGINE_REGISTRY_RESCAN".to_string()),
        "{warned:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostname_from_sysvars_is_interpolated_in_envvars() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let img = svc.get_var("IOHUBOS_GLOBAL_MQTT_IMG").await;
    assert_eq!(img["value"], "iohub-525400aabbcc:5000/iohubos/iohubos-mqtt");
    let hostname = svc.get_var("IOHUBOS_HOSTNAME").await;
    assert_eq!(hostname["source"], "sysvars");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_substitution_is_refused_naming_its_line_and_never_runs() {
    let roots = Roots::box_113();
    let witness = roots.path("pwned");
    let envvars = ENVVARS.replace(
        "IOHUBOS_TIMEZONE='Europe/Rome'",
        &format!("IOHUBOS_TIMEZONE=\"$(touch {})\"", witness.display()),
    );
    roots.write("envvars", &envvars);
    let line = envvars.lines().position(|l| l.contains("$(touch")).unwrap() + 1;
    let svc = Running::start(&roots).await;
    let view = svc.view_now().await;
    assert!(!witness.exists(), "a command ran");
    assert_eq!(view.state().phase, Phase::Degraded);
    let facts = view.facts();
    let refused = facts
        .errors
        .iter()
        .find(|e| e.field.as_deref() == Some(&format!("envvars:{line}")))
        .unwrap();
    assert_eq!(
        refused.code,
        bus_schema::ErrorCode::Forbidden,
        "{refused:?}"
    );
    // First start: the section of the refused variable has no good value yet and is withheld;
    // every other section is published.
    let withheld = section_of("IOHUBOS_TIMEZONE");
    assert_eq!(facts.withheld, [withheld]);
    assert!(view.section(withheld).is_none());
    assert_eq!(view.sections().len(), 16);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envvars_edit_bumps_the_generation_of_exactly_the_changed_section() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;

    roots.write(
        "envvars",
        &ENVVARS.replace("'Europe/Rome'", "'Europe/Vienna'"),
    );
    let event: ConfigChanged =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigChanged).await)
            .unwrap();
    let changed = section_of("IOHUBOS_TIMEZONE");
    assert_eq!(event.sections, [changed]);

    let after = svc.view_now().await;
    let (mut expected, actual) = (before.generations(), after.generations());
    *expected.get_mut(changed.as_str()).unwrap() += 1;
    assert_eq!(actual, expected);
    for s in Section::ALL.iter().filter(|s| **s != changed) {
        assert_eq!(before.section(*s), after.section(*s), "{s} changed");
    }
    assert_eq!(after.facts().generations[&changed], 2);

    // The same content again (a touch) changes nothing: the next config event is the one a
    // refused `set` makes afterwards (events keep their order on the bus).
    let mut sub = svc.bus.subscribe(&["iohub/event/config/+"]).await.unwrap();
    assert!(svc.request(Verb::Reload, json!({})).await.ok);
    assert_eq!(svc.view_now().await.generations(), actual);
    assert!(
        !svc.request(Verb::Set, json!({ "vars": { "IOHUBOS_NOPE": "1" } }))
            .await
            .ok
    );
    let next = tokio::time::timeout(WAIT, sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.topic, "iohub/event/config/config_rejected");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_round_trips_and_keeps_the_rest_of_the_file_byte_for_byte() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let gen_before = svc.view_now().await.generations();

    let reply = svc
        .request(
            Verb::Set,
            json!({ "vars": { "IOHUBOS_TIMEZONE": "America/New_York" } }),
        )
        .await;
    assert!(reply.ok, "{reply:?}");
    let result = reply.result.unwrap();
    assert_eq!(result["written"], json!(["envvars"]));
    let text = roots.read("envvars");
    let expected_lines: Vec<&str> = ENVVARS.lines().collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected_lines.len(), "{text}");
    for (got, want) in lines.iter().zip(&expected_lines) {
        if want.starts_with("IOHUBOS_TIMEZONE=") {
            assert!(
                got.starts_with("IOHUBOS_TIMEZONE=") && got.contains("America/New_York"),
                "{got}"
            );
        } else {
            assert_eq!(got, want);
        }
    }
    assert!(text.ends_with('\n'));
    assert_eq!(
        svc.get_var("IOHUBOS_TIMEZONE").await["value"],
        "America/New_York"
    );

    let section = section_of("IOHUBOS_TIMEZONE");
    let gen_after = svc.view_now().await.generations();
    assert_eq!(
        gen_after[section.as_str()],
        gen_before[section.as_str()] + 1
    );
    assert_eq!(
        result["generations"][section.as_str()],
        gen_after[section.as_str()]
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_writes_into_the_file_whose_assignment_wins() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let envvars_before = roots.read("envvars");
    let reply = svc
        .request(Verb::Set, json!({ "vars": { "IOHUBOS_ZEROTIER_NETWORK": "8056c2e21c000001", "IOHUBOS_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0 me@host" } }))
        .await;
    assert!(reply.ok, "{reply:?}");
    let mut written: Vec<String> =
        serde_json::from_value(reply.result.unwrap()["written"].clone()).unwrap();
    written.sort();
    assert_eq!(written, ["envvars", "envvars.d/1.1.1-envvars"]);
    assert!(roots
        .read("envvars.d/1.1.1-envvars")
        .contains("8056c2e21c000001"));
    // Not defined anywhere before: it goes into envvars, appended.
    let envvars = roots.read("envvars");
    assert!(envvars.starts_with(&envvars_before), "{envvars}");
    assert!(envvars.contains("IOHUBOS_SSH_PUBLIC_KEY="));
    assert_eq!(
        svc.get_var("IOHUBOS_ZEROTIER_NETWORK").await["value"],
        "8056c2e21c000001"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_set_is_refused_listing_every_problem_and_writes_nothing() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let mut rejected = svc
        .bus
        .subscribe(&["iohub/event/config/config_rejected"])
        .await
        .unwrap();
    let before: Vec<Vec<u8>> = ["envvars", "envvars.d/1.1.1-envvars", "sysvars"]
        .iter()
        .map(|f| std::fs::read(roots.path(f)).unwrap())
        .collect();

    let reply = svc
        .request(
            Verb::Set,
            json!({ "vars": {
                "IOHUBOS_ETH0_IP": "300.1.2.3",
                "IOHUBOS_DOCKER_REGISTRY_PORT": "99999",
                "IOHUBOS_NO_SUCH_THING": "1",
            } }),
        )
        .await;
    assert!(!reply.ok);
    let mut fields = error_fields(&reply.errors);
    fields.sort();
    assert_eq!(
        fields,
        [
            "IOHUBOS_DOCKER_REGISTRY_PORT",
            "IOHUBOS_ETH0_IP",
            "IOHUBOS_NO_SUCH_THING"
        ],
        "{reply:?}"
    );
    let unknown = reply
        .errors
        .iter()
        .find(|e| e.field.as_deref() == Some("IOHUBOS_NO_SUCH_THING"))
        .unwrap();
    assert_eq!(unknown.code, bus_schema::ErrorCode::UnknownVariable);

    let after: Vec<Vec<u8>> = ["envvars", "envvars.d/1.1.1-envvars", "sysvars"]
        .iter()
        .map(|f| std::fs::read(roots.path(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    let m = tokio::time::timeout(WAIT, rejected.recv())
        .await
        .unwrap()
        .unwrap();
    let event: ConfigRejected = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(event.source, RejectSource::Set);
    assert_eq!(event.errors.len(), 3);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_payloads_get_a_bad_payload_reply_and_the_service_keeps_running() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    for body in [
        json!({ "vars": "IOHUBOS_TIMEZONE" }),
        json!({ "nope": 1 }),
        json!([1, 2]),
    ] {
        let reply = svc.request(Verb::Set, body.clone()).await;
        assert!(!reply.ok);
        assert_eq!(
            reply.errors[0].code,
            bus_schema::ErrorCode::BadPayload,
            "{body}: {reply:?}"
        );
    }
    let reply = svc
        .request(
            Verb::Get,
            json!({ "var": "IOHUBOS_TIMEZONE", "section": "network" }),
        )
        .await;
    assert_eq!(reply.errors[0].code, bus_schema::ErrorCode::BadPayload);
    // Not even a request: no reply possible, but the service survives.
    svc.bus
        .publish_raw(
            "iohub/cmd/config/set",
            bytes::Bytes::from_static(b"\xff not json"),
            false,
        )
        .await
        .unwrap();
    let reply = svc
        .request(Verb::Get, json!({ "section": "network" }))
        .await;
    assert!(reply.ok, "{reply:?}");
    assert_eq!(reply.result.unwrap()["section"], "network");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_edit_keeps_the_last_good_section_and_degrades_the_state() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;
    let network = section_of("IOHUBOS_ETH0_IP");

    // One bad value (static mode with a broken address) and one good change elsewhere.
    let edited = ENVVARS
        .replace("IOHUBOS_ETH0_MODE='dhcp'", "IOHUBOS_ETH0_MODE='static'\nIOHUBOS_ETH0_IP='10.0.0.300'\nIOHUBOS_ETH0_NETMASK='255.255.255.0'")
        .replace("IOHUBOS_OPENSSH_ENABLED='true'", "IOHUBOS_OPENSSH_ENABLED='false'");
    roots.write("envvars", &edited);
    let event: ConfigRejected =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigRejected).await)
            .unwrap();
    assert_eq!(event.source, RejectSource::Files);
    assert!(
        error_fields(&event.errors).contains(&"IOHUBOS_ETH0_IP".to_string()),
        "{event:?}"
    );
    assert!(event.withheld.contains(&network));

    let after = svc.view_now().await;
    assert_eq!(after.state().phase, Phase::Degraded);
    assert_eq!(
        after.state().last_error.unwrap().field.as_deref(),
        Some("IOHUBOS_ETH0_IP")
    );
    assert_eq!(error_fields(&after.facts().errors), ["IOHUBOS_ETH0_IP"]);
    assert_eq!(after.facts().withheld, [network]);
    assert_eq!(
        after.section(network),
        before.section(network),
        "the last good network stays"
    );
    let ssh = section_of("IOHUBOS_OPENSSH_ENABLED");
    assert_ne!(ssh, network);
    assert_eq!(
        after.generations()[ssh.as_str()],
        before.generations()[ssh.as_str()] + 1
    );

    // Fixing the file brings the network section and the state back.
    roots.write("envvars", &edited.replace("10.0.0.300", "10.0.0.30"));
    let event: ConfigChanged =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigChanged).await)
            .unwrap();
    assert!(event.sections.contains(&network), "{event:?}");
    let fixed = svc.view_now().await;
    assert_eq!(fixed.state().phase, Phase::Applied, "{:?}", fixed.facts());
    assert_eq!(fixed.generations()[network.as_str()], 2);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_a_bad_line_publish_the_good_lines_and_list_the_bad_one() {
    let roots = Roots::box_113();
    roots.write(
        "forwards-tcp",
        &format!("{FORWARDS_COMMENT}8080=192.168.190.10:80\n8081=not-an-ip:80\n"),
    );
    let svc = Running::start(&roots).await;
    let view = svc.view_now().await;
    let forwards = view
        .section(Section::Forwards)
        .expect("forwards published")
        .clone();
    let text = forwards["config"].to_string();
    assert!(text.contains("192.168.190.10"), "{text}");
    assert!(!text.contains("\"dst_ip\":\"not-an-ip\""), "{text}");
    assert!(
        text.contains("not-an-ip"),
        "the refused line is listed: {text}"
    );
    assert_eq!(view.state().phase, Phase::Degraded);
    let facts = view.facts();
    assert_eq!(error_fields(&facts.errors), ["forwards-tcp:3"]);
    assert!(facts.withheld.is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_service_and_their_file_becomes_private() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let secret = "Str0ng-Secret-Token-For-The-Admin-Api-42!";
    let reply = svc
        .request(
            Verb::Set,
            json!({ "vars": { "IOHUBOS_ADMIN_API_AUTH_TOKEN": secret } }),
        )
        .await;
    assert!(reply.ok, "{reply:?}");
    assert!(!serde_json::to_string(&reply).unwrap().contains(secret));
    assert_eq!(mode(&roots.path("envvars")), 0o600);
    assert_eq!(
        svc.get_var("IOHUBOS_ADMIN_API_AUTH_TOKEN").await["value"],
        json!({ "set": true })
    );
    let view = svc.view_now().await;
    assert!(!serde_json::to_string(&view.topics)
        .unwrap()
        .contains(secret));

    // A refused secret is not echoed either.
    let reply = svc
        .request(
            Verb::Set,
            json!({ "vars": { "IOHUBOS_WIFI_CLIENT_PASS": "short7!" } }),
        )
        .await;
    assert!(!reply.ok);
    assert_eq!(error_fields(&reply.errors), ["IOHUBOS_WIFI_CLIENT_PASS"]);
    assert!(
        !serde_json::to_string(&reply).unwrap().contains("short7!"),
        "{reply:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_republishes_the_same_sections_with_the_same_generations() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    roots.write("envvars", &ENVVARS.replace("Europe/Rome", "Europe/Paris"));
    svc.file_changed("envvars", EventKind::ConfigChanged).await;
    let before = svc.view_now().await;
    assert!(before.generations().values().any(|g| *g == 2));
    svc.stop().await;

    let svc = Running::start(&roots).await;
    let after = svc.view_now().await;
    assert_eq!(after.sections(), before.sections());
    // A change after the restart continues the numbering.
    roots.write("envvars", &ENVVARS.replace("Europe/Rome", "Europe/Berlin"));
    svc.file_changed("envvars", EventKind::ConfigChanged).await;
    let section = section_of("IOHUBOS_TIMEZONE");
    assert_eq!(svc.view_now().await.generations()[section.as_str()], 3);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_seen_by_the_real_watcher_publishes_a_new_generation() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await.with_watcher(&roots).await;
    let before = svc.view_now().await.generations();
    let mut changed = svc
        .bus
        .subscribe(&["iohub/event/config/config_changed"])
        .await
        .unwrap();

    // Saved like an editor does: a temporary file renamed over the layer (`atomic_write`).
    roots.write(
        "envvars.d/1.1.1-envvars",
        &LAYER_111.replace(
            "IOHUBOS_ZEROTIER_ACCESS_HOST='false'",
            "IOHUBOS_ZEROTIER_ACCESS_HOST='true'",
        ),
    );

    let m = tokio::time::timeout(WAIT, changed.recv())
        .await
        .expect("no config_changed")
        .unwrap();
    let event: ConfigChanged = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(event.sections, [Section::Zerotier]);
    assert_eq!(
        event.generations[&Section::Zerotier],
        before["zerotier"] + 1
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_deleted_envvars_keeps_every_section_and_says_why() {
    // Issue 16: `: > envvars` or `rm envvars` re-published every section with defaults (admin
    // API off, network back to standalone DHCP) and the state stayed `applied`.
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;
    let good = std::fs::read(roots.path("envvars")).unwrap();
    // (Each step's error differs from the one before: a repeated error is not a new event.)
    for (what, text) in [
        ("empty", Some("")),
        ("deleted", None),
        ("only comments", Some("# IOHUBOS_TIMEZONE='UTC'\n\n")),
    ] {
        match text {
            Some(t) => atomic_write(&roots.path("envvars"), t.as_bytes(), 0o644).unwrap(),
            None => assert!(sys::fs::remove_file(&roots.path("envvars")).unwrap()),
        }
        let event: ConfigRejected =
            serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigRejected).await)
                .unwrap();
        assert_eq!(error_fields(&event.errors), ["envvars"], "{what}");
        assert_eq!(event.withheld.len(), 17, "{what}");
        let after = svc.view_now().await;
        assert_eq!(after.sections(), before.sections(), "{what}");
        let state = after.state();
        assert_eq!(state.phase, Phase::Degraded, "{what}");
        assert!(
            state
                .last_error
                .as_ref()
                .unwrap()
                .message
                .contains("last good"),
            "{what}: {state:?}"
        );
        // A set would write a file of one variable and put the rest at defaults: refused.
        let reply = svc
            .request(Verb::Set, json!({ "vars": { "IOHUBOS_TIMEZONE": "UTC" } }))
            .await;
        assert!(!reply.ok, "{what}");
        assert_eq!(error_fields(&reply.errors), ["envvars"], "{what}");
    }
    // Putting the file back is a clean reload: the same sections (no new generation), applied.
    atomic_write(&roots.path("envvars"), &good, 0o644).unwrap();
    let event = FileEvent {
        version: 1,
        path: "envvars".into(),
        size_bytes: None,
        removed: false,
        at_start: false,
    };
    svc.bus
        .publish_json(
            &Topic::Event(ServiceName::Watcher, EventKind::ConfigFileChanged),
            &event,
        )
        .await
        .unwrap();
    svc.wait_state(|s| s.phase == Phase::Applied).await;
    assert_eq!(svc.view_now().await.sections(), before.sections());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_built_from_a_refused_line_withholds_its_section() {
    // Issue 16: the ssh section was re-published with no keys (a lockout on a live box).
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;
    let text = format!(
        "{}\nKEYS=\"$(cat /root/keys)\"\nIOHUBOS_SSH_PUBLIC_KEY=\"${{KEYS}}\"\n",
        roots.read("envvars")
    );
    atomic_write(&roots.path("envvars"), text.as_bytes(), 0o644).unwrap();
    let event: ConfigRejected =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigRejected).await)
            .unwrap();
    assert!(event.withheld.contains(&Section::Ssh), "{event:?}");
    assert!(
        event
            .errors
            .iter()
            .any(|e| e.message.contains("uses `KEYS`")),
        "{event:?}"
    );
    let after = svc.view_now().await;
    assert_eq!(after.section(Section::Ssh), before.section(Section::Ssh));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envvars_over_the_size_cap_is_refused_before_it_is_read() {
    // Issue 16: 50 MB of assignments cost 2.7 GB of RSS and a 182 MB log.
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;
    let line = "IOHUBOS_NOT_A_VARIABLE='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'\n";
    let big = line.repeat((5 << 20) / line.len());
    atomic_write(&roots.path("envvars"), big.as_bytes(), 0o644).unwrap();
    let event: ConfigRejected =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigRejected).await)
            .unwrap();
    assert_eq!(error_fields(&event.errors), ["envvars"]);
    assert!(
        event.errors[0].message.contains("larger than 4 MiB"),
        "{:?}",
        event.errors
    );
    assert_eq!(svc.view_now().await.sections(), before.sections());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_variable_file_keeps_every_section_and_refuses_set() {
    let roots = Roots::box_113();
    let svc = Running::start(&roots).await;
    let before = svc.view_now().await;
    let tz_before = svc.get_var("IOHUBOS_TIMEZONE").await;

    // `envvars` becomes something that cannot be read as a file.
    sys::fs::remove_file(&roots.path("envvars")).unwrap();
    std::fs::create_dir(roots.path("envvars")).unwrap();
    let event: ConfigRejected =
        serde_json::from_value(svc.file_changed("envvars", EventKind::ConfigRejected).await)
            .unwrap();
    assert_eq!(error_fields(&event.errors), ["envvars"]);
    assert_eq!(event.withheld.len(), 17);
    let after = svc.view_now().await;
    assert_eq!(after.sections(), before.sections());
    assert_eq!(after.state().phase, Phase::Degraded);
    // `get` says what the bus says (issue 16: it answered the defaults of the refused files).
    let tz = svc.get_var("IOHUBOS_TIMEZONE").await;
    assert_eq!(tz["value"], tz_before["value"]);
    assert_eq!(tz["source"], "last_good");

    let reply = svc
        .request(Verb::Set, json!({ "vars": { "IOHUBOS_TIMEZONE": "UTC" } }))
        .await;
    assert!(!reply.ok);
    assert_eq!(error_fields(&reply.errors), ["envvars"]);
    assert!(roots.path("envvars").is_dir(), "nothing was written");
    svc.stop().await;
}
