//! The bridge service under `iohubd --apply`, in a network namespace of the test's own, against a
//! real remote broker (Debian's mosquitto on the namespace's loopback): what apps publish on the
//! configured topics reaches the remote; while the remote is down it is kept in the disk queue,
//! through a kill -9 of iohubd, and delivered once the remote is back. Nothing is lost.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // the test runs mosquitto and edits files

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_schema::{Phase, ServiceState};
use iohub_tests::netns::{in_netns, Netns};
use iohub_tests::{require_program, until, until_state, Iohubd, Roots};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// A bound on every wait (the test fails rather than hangs).
const T: Duration = Duration::from_secs(120);
/// The remote broker's port, on the namespace's loopback.
const REMOTE_PORT: u16 = 18830;
/// The apps' broker of iohubd (`global_mqtt_listen` of the live backend).
const APPS_PORT: u16 = 1883;
/// Messages published while the remote is reachable, then while it is down.
const ONLINE: u32 = 100;
const OFFLINE: u32 = 200;

/// Run `scenario` on a runtime inside a fresh namespace (iohubd, mosquitto and every client are
/// in it), then remove the namespace and what runs in it.
fn in_own_netns<F: std::future::Future<Output = ()> + 'static>(name: &str, scenario: fn() -> F) {
    for p in ["mosquitto", "ip"] {
        if !require_program(p) {
            return;
        }
    }
    let ns = Netns::new(name);
    in_netns(&ns.0.clone(), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(scenario());
    });
    drop(ns);
}

#[test]
fn apps_topics_reach_the_remote_and_an_outage_with_a_kill_9_loses_nothing() {
    in_own_netns("brs", outage_scenario);
}

#[test]
fn fleet_commands_run_when_allowed_and_the_state_is_mirrored_retained() {
    in_own_netns("brf", fleet_scenario);
}

/// mosquitto with persistence, so that the remote subscriber's session (and what it has not
/// received yet) survives the remote's restart.
struct Remote {
    conf: PathBuf,
    child: Option<Child>,
}

impl Remote {
    fn start(dir: &Path) -> Remote {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {REMOTE_PORT} 127.0.0.1\nallow_anonymous true\nuser root\n\
                 persistence true\npersistence_location {}/\nmax_queued_messages 0\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut r = Remote { conf, child: None };
        r.resume();
        r
    }

    fn resume(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM (mosquitto saves its sessions), then wait for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Topic -> (times received, last payload).
type Seen = Arc<Mutex<BTreeMap<String, (u32, Vec<u8>)>>>;

/// A client of `port` on loopback, polled on a task of its own; every received publish goes to
/// `seen`.
async fn client(
    id: &str,
    port: u16,
    clean: bool,
    subscribe: Option<&str>,
    seen: Seen,
) -> AsyncClient {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut ev) = AsyncClient::new(o, 1024);
    let filter = subscribe.map(str::to_string);
    let c2 = c.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    if let Some(f) = &filter {
                        c2.subscribe(f.as_str(), QoS::AtLeastOnce).await.unwrap();
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let mut seen = seen.lock().unwrap();
                    let e = seen.entry(p.topic.clone()).or_default();
                    e.0 += 1;
                    e.1 = p.payload.to_vec();
                }
                Ok(_) => {}
                // The remote is down on purpose for a while: keep trying.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    c
}

fn remote_facts(st: &ServiceState) -> &serde_json::Value {
    &st.facts["remotes"][0]
}

fn connected(st: &ServiceState) -> bool {
    st.phase == Phase::Applied && remote_facts(st)["connected"] == true
}

/// The router example with Docker off and the bridge to the remote carrying `plant/#`, plus
/// `more` variables; the remote started, then `iohubd --apply`, until the bridge is connected.
async fn started(more: &str) -> (Roots, Remote, tempfile::TempDir, Iohubd) {
    let roots = Roots::example("router");
    let envvars = roots.root.join("envvars");
    let mut text = std::fs::read_to_string(&envvars).unwrap();
    text.push_str(&format!(
        "\nIOHUBOS_DOCKER_ENABLED='false'\nIOHUBOS_BRIDGE_ENABLED='true'\n\
         IOHUBOS_BRIDGE_URL='mqtt://127.0.0.1:{REMOTE_PORT}'\nIOHUBOS_BRIDGE_TOPICS='plant/#'\n{more}"
    ));
    std::fs::write(&envvars, text).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = Remote::start(remote_dir.path());
    let d = Iohubd::start(&roots.root, &roots.system, &["--apply"]);
    until_state(&roots.root, "bridge", T, connected).await;
    (roots, remote, remote_dir, d)
}

async fn outage_scenario() {
    let (roots, mut remote, _remote_dir, mut d) = started("").await;

    let received = Arc::new(Mutex::new(BTreeMap::new()));
    let sub = client(
        "owner",
        REMOTE_PORT,
        false,
        Some("plant/#"),
        received.clone(),
    )
    .await;
    let unused = Arc::new(Mutex::new(BTreeMap::new()));
    let app = client("app", APPS_PORT, true, None, unused.clone()).await;
    let all_received = |n: u32| {
        let r = received.clone();
        move || (0..n).all(|i| r.lock().unwrap().contains_key(&format!("plant/m/{i}")))
    };
    // The subscriber's session is in place before anything is published.
    // (`until` polls every 20 ms: a bounded number of probes.)
    until("the owner's subscription", T, || {
        let _ = app.try_publish("plant/probe", QoS::AtLeastOnce, false, "p");
        received.lock().unwrap().contains_key("plant/probe")
    })
    .await;

    for i in 0..ONLINE {
        let t = format!("plant/m/{i}");
        app.publish(t, QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    until("the online messages at the remote", T, all_received(ONLINE)).await;

    // The remote goes away; what apps publish now waits in the disk queue.
    remote.stop();
    until_state(&roots.root, "bridge", T, |st| {
        remote_facts(st)["connected"] == false
    })
    .await;
    for i in ONLINE..ONLINE + OFFLINE {
        let t = format!("plant/m/{i}");
        app.publish(t, QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let queued = until_state(&roots.root, "bridge", T, |st| {
        remote_facts(st)["queued_messages"].as_u64() >= Some(u64::from(OFFLINE))
    })
    .await;
    assert_eq!(remote_facts(&queued)["dropped"]["local"], 0, "{queued:?}");

    // A power cut of iohubd with the backlog on disk; it starts again, then the remote returns.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(d.pid()).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_exit(T).expect("iohubd killed");
    drop(d);
    let d = Iohubd::start(&roots.root, &roots.system, &["--apply"]);
    let restarted = until_state(&roots.root, "bridge", T, |st| {
        remote_facts(st)["queued_messages"].as_u64() >= Some(u64::from(OFFLINE))
    })
    .await;
    assert_eq!(remote_facts(&restarted)["dropped"]["corrupt"], 0);
    remote.resume();
    until(
        "every message, online and queued across the kill, at the remote",
        T,
        all_received(ONLINE + OFFLINE),
    )
    .await;
    let drained = until_state(&roots.root, "bridge", T, |st| {
        connected(st) && remote_facts(st)["queued_messages"] == 0
    })
    .await;
    let dropped = &remote_facts(&drained)["dropped"];
    for reason in ["ttl", "budget", "corrupt", "local"] {
        assert_eq!(dropped[reason], 0, "dropped for {reason}: {drained:?}");
    }
    // At least once: a message sent but not acknowledged before the kill may come twice.
    let duplicates: u32 = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("plant/m/"))
        .map(|(_, (n, _))| n - 1)
        .sum();
    assert!(duplicates <= OFFLINE, "{duplicates} duplicates");
    drop(sub);
    drop(d);
}

async fn fleet_scenario() {
    let (roots, _remote, _remote_dir, d) = started(
        "IOHUBOS_BRIDGE_FLEET_PREFIX='acme/fleet'\nIOHUBOS_BRIDGE_BOX_ID='box7'\n\
         IOHUBOS_BRIDGE_FLEET_COMMANDS='status,ssh/get'\n",
    )
    .await;
    let seen: Seen = Arc::default();
    let ops = client("ops", REMOTE_PORT, true, Some("acme/fleet/#"), seen.clone()).await;
    let payload = |topic: &str| -> Option<serde_json::Value> {
        let seen = seen.lock().unwrap();
        seen.get(topic)
            .map(|(_, p)| serde_json::from_slice(p).unwrap())
    };

    // The box's state is on the remote, retained: a subscriber that comes later gets it.
    until("the mirrored config state", T, || {
        payload("acme/fleet/box7/state/config").is_some_and(|st| st["phase"] == "applied")
    })
    .await;

    let request = |topic: &str, id: &str, body: serde_json::Value| {
        let r = serde_json::json!({ "id": id, "body": body });
        ops.try_publish(topic, QoS::AtLeastOnce, false, r.to_string())
            .unwrap();
    };
    // Another box's command is not this box's business; an allowed one to this box and one to
    // every box are run and answered; one outside the allow-list is refused.
    request(
        "acme/fleet/box8/cmd/ssh/status",
        "other",
        serde_json::json!({}),
    );
    request(
        "acme/fleet/box7/cmd/ssh/status",
        "r1",
        serde_json::json!({}),
    );
    request("acme/fleet/all/cmd/ssh/get", "r2", serde_json::json!({}));
    request(
        "acme/fleet/all/cmd/config/set",
        "r3",
        serde_json::json!({ "variables": { "IOHUBOS_TIMEZONE": "Europe/Rome" } }),
    );
    until("the three replies", T, || {
        ["r1", "r2", "r3"]
            .iter()
            .all(|id| payload(&format!("acme/fleet/box7/reply/{id}")).is_some())
    })
    .await;
    let r1 = payload("acme/fleet/box7/reply/r1").unwrap();
    assert_eq!(r1["ok"], true, "{r1}");
    assert_eq!(r1["id"], "r1");
    let r2 = payload("acme/fleet/box7/reply/r2").unwrap();
    assert_eq!(r2["ok"], true, "{r2}");
    let r3 = payload("acme/fleet/box7/reply/r3").unwrap();
    assert_eq!(r3["ok"], false, "{r3}");
    assert_eq!(r3["errors"][0]["code"], "forbidden", "{r3}");
    assert!(payload("acme/fleet/box7/reply/other").is_none());
    assert!(payload("acme/fleet/box8/reply/other").is_none());
    // The refused set changed nothing.
    let text = std::fs::read_to_string(roots.root.join("envvars")).unwrap();
    assert!(!text.contains("Europe/Rome"), "{text}");
    drop(d);
}
