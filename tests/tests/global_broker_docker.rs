//! The global IOhub broker through the real dockerd: `iohubd --apply --only
//! config,watcher,global_mqtt,apps` creates the broker's network and placeholder container and
//! binds its apps listener in the container's namespace; an old IOhub app (the composition of
//! `reference/legacy-iohub-app.md` switched to the global broker, on an offline busybox image)
//! is started by the apps service and works unchanged: its sensor container publishes with raw
//! MQTT over `nc` to `<name>:1883`, its InfluxDB-like consumer receives. From inside Docker the
//! control plane is out of reach, and a restarted placeholder is bound again.
//!
//! Names are unique to the test (`IOHUBOS_GLOBAL_MQTT_NAME`/`_NET`), so it never meets a real
//! `ezvpn-global-mqtt`. No port is published; the only host change is Docker's own bridge for
//! the test network, removed at the end. Every loop in the containers and here is bounded.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use iohub_tests::docker::{busybox_image, docker, docker_available, DockerCleanup};
use iohub_tests::{until, until_state, Iohubd, Roots};

const T: Duration = Duration::from_secs(60);

/// `printf` argument (octal escapes only: busybox's and POSIX's printf) writing `bytes`.
fn printf(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// An MQTT 3.1.1 packet: fixed header byte, remaining length (< 128 here), body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut p = vec![first, body.len() as u8];
    p.extend_from_slice(body);
    p
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

/// CONNECT, clean session, keep-alive 60 s, anonymous.
fn connect(client_id: &str) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    body.extend(string(client_id));
    packet(0x10, &body)
}

fn publish(topic: &str, payload: &str) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(payload.as_bytes());
    packet(0x30, &body)
}

/// SUBSCRIBE (packet id 1) to each filter at QoS0.
fn subscribe(filters: &[&str]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for f in filters {
        body.extend(string(f));
        body.push(0);
    }
    packet(0x82, &body)
}

const DISCONNECT: [u8; 2] = [0xe0, 0];
const PINGREQ: [u8; 2] = [0xc0, 0];
/// SUBACK for packet id 1: `plant/#` granted QoS0, `iohub/#` refused (0x80).
const SUBACK_PLANT_OK_IOHUB_REFUSED: [u8; 6] = [0x90, 4, 0, 1, 0, 0x80];
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 2, 0, 0];

/// The legacy composition, switched to the global broker: the sensor publishes readings (one
/// connection per reading, like the original's scripts) and also tries a control command; the
/// consumer (`ezvpn-mqtt-influxdb`) subscribes to `plant/#` and to `iohub/#` and writes what it
/// receives into the InfluxDB volume; `ezvpn-influxdb` serves that volume on 8086 inside the
/// app's own network.
fn compose(image: &str, app: &str, broker: &str, net: &str) -> String {
    let reading = printf(
        &[
            connect("sensor"),
            publish("plant/line1/temp", "temp=21.5"),
            publish("iohub/cmd/config/set", r#"{"id":"x","body":{}}"#),
            DISCONNECT.to_vec(),
        ]
        .concat(),
    );
    let consume = printf(&[connect("influx"), subscribe(&["plant/#", "iohub/#"])].concat());
    let ping = printf(&PINGREQ);
    format!(
        r#"version: "3.8"
services:
  ezvpn-influxdb:
    image: {image}
    command: ["httpd", "-f", "-p", "8086", "-h", "/var/lib/influxdb"]
    stop_grace_period: 1s
    expose:
      - 8086
    volumes:
      - ezvpn-influxdb-vol-1:/var/lib/influxdb
    networks:
      - {app}-net
  ezvpn-mqtt-influxdb:
    image: {image}
    restart: "no"
    stop_grace_period: 1s
    environment:
      MQTT_HOST: "{broker}"
      INFLUXDB_HOST: "ezvpn-influxdb"
    depends_on:
      - ezvpn-influxdb
    volumes:
      - ezvpn-influxdb-vol-1:/var/lib/influxdb
    networks:
      - {app}-net
      - {net}
    command:
      - sh
      - -c
      - |
        {{ printf '{consume}'; i=0; while [ $$i -lt 10 ]; do sleep 20; printf '{ping}'; i=$$((i+1)); done; }} | nc $$MQTT_HOST 1883 > /var/lib/influxdb/mqtt.raw
  ezvpn-sensor:
    image: {image}
    restart: "no"
    stop_grace_period: 1s
    environment:
      MQTT_HOST: "{broker}"
    depends_on:
      - ezvpn-mqtt-influxdb
    networks:
      - {net}
    command:
      - sh
      - -c
      - |
        i=0
        while [ $$i -lt 120 ]; do printf '{reading}' | nc $$MQTT_HOST 1883 > /dev/null; sleep 1; i=$$((i+1)); done
volumes:
  ezvpn-influxdb-vol-1:
    driver: local
    driver_opts:
      type: none
      device: {{root}}/docker/apps/{app}/volumes/ezvpn-influxdb-vol-1
      o: bind
networks:
  {app}-net:
  {net}:
    external: true
"#
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A one-shot client container on `net`: CONNECT, then the broker's answer in hex.
fn probe(image: &str, net: &str, broker: &str) -> Vec<u8> {
    let script = format!(
        "{{ printf '{}'; sleep 1; }} | nc {broker} 1883 | od -An -tx1",
        printf(&connect("probe"))
    );
    let (ok, out, err) = docker(&["run", "--rm", "--network", net, image, "sh", "-c", &script]);
    assert!(ok, "probe container failed: {err}");
    out.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_iohub_app_reaches_the_embedded_broker_by_its_docker_name() {
    if !docker_available() {
        return;
    }
    let tag = format!("g{}", std::process::id());
    let image = busybox_image(&tag);
    let (app, broker, net) = (
        format!("{tag}-legacy"),
        format!("{tag}-gmqtt"),
        format!("{tag}-gmqtt-net"),
    );
    let _cleanup = DockerCleanup {
        projects: vec![app.clone(), format!("{tag}-")],
        images: vec![image.clone()],
        networks: vec![net.clone()],
    };

    let roots = Roots::example("standalone");
    let envvars = roots.root.join("envvars");
    let text = std::fs::read_to_string(&envvars).unwrap();
    let text: String = text
        .lines()
        .map(|l| match l.split('=').next() {
            Some("IOHUBOS_GLOBAL_MQTT_NAME") => format!("IOHUBOS_GLOBAL_MQTT_NAME='{broker}'"),
            Some("IOHUBOS_GLOBAL_MQTT_NET") => format!("IOHUBOS_GLOBAL_MQTT_NET='{net}'"),
            _ => l.to_string(),
        })
        .map(|l| l + "\n")
        .collect();
    assert!(text.contains(&broker) && text.contains(&net));
    std::fs::write(&envvars, text).unwrap();
    let dir = roots.root.join("docker/apps").join(&app);
    std::fs::create_dir_all(dir.join("volumes/ezvpn-influxdb-vol-1")).unwrap();
    let root = roots.root.display().to_string();
    std::fs::write(
        dir.join("docker-compose.yml"),
        compose(&image, &app, &broker, &net).replace("{root}", &root),
    )
    .unwrap();
    let start = dir.join("start.sh");
    std::fs::write(
        &start,
        format!("#!/bin/sh\ndocker-compose -f {root}/docker/apps/{app}/docker-compose.yml up -d\n"),
    )
    .unwrap();
    std::fs::set_permissions(&start, std::fs::Permissions::from_mode(0o755)).unwrap();

    // nextest runs every test in its own process: the environment is this test's alone.
    std::env::set_var("IOHUBD_GLOBAL_MQTT_LISTEN", "127.0.0.1:0");
    std::env::set_var("IOHUBD_METRICS_LISTEN", "127.0.0.1:0");
    let d = Iohubd::start(
        &roots.root,
        &roots.system,
        &["--apply", "--only", "config,watcher,global_mqtt,apps"],
    );

    let st = until_state(&roots.root, "global_mqtt", T, |s| {
        s.facts["docker"] == "ready"
    })
    .await;
    let pid = st.facts["container_pid"].as_u64().unwrap();
    let (_, labels, _) = docker(&["inspect", "-f", "{{json .Config.Labels}}", &broker]);
    assert!(
        labels.contains(r#""io.iohub.role":"global-mqtt""#),
        "{labels}"
    );

    // The app was started after the broker (start.sh waited), and its consumer receives.
    let raw = dir.join("volumes/ezvpn-influxdb-vol-1/mqtt.raw");
    until("the consumer receives the sensor's readings", T, || {
        std::fs::read(&raw).is_ok_and(|b| contains(&b, b"plant/line1/temptemp=21.5"))
    })
    .await;
    let got = std::fs::read(&raw).unwrap();
    assert!(contains(&got, &CONNACK_ACCEPTED), "no CONNACK in {got:?}");
    assert!(
        contains(&got, &SUBACK_PLANT_OK_IOHUB_REFUSED),
        "iohub/# must be refused to an app: {got:?}"
    );
    assert!(
        !contains(&got, b"iohub/"),
        "a control topic reached an app: {got:?}"
    );
    let apps = until_state(&roots.root, &format!("apps/{app}"), T, |s| {
        s.facts["running"] == 3
    })
    .await;
    assert_eq!(apps.facts["total"], 3);

    // The sensor's command never reached the control plane: the broker counted it denied.
    let denied = until_state(&roots.root, "broker", T, |s| {
        s.facts["listeners"]["apps-docker"]["publish_denied"].as_u64() > Some(0)
    })
    .await;
    assert!(denied.facts["listeners"]["apps-docker"]["connections"].as_u64() >= Some(1));

    // A restarted placeholder has a new namespace: bound again, and new clients get in.
    let (ok, _, err) = docker(&["restart", &broker]);
    assert!(ok, "{err}");
    until_state(&roots.root, "global_mqtt", T, |s| {
        s.facts["docker"] == "ready" && s.facts["container_pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    let answer = probe(&image, &net, &broker);
    assert!(
        contains(&answer, &CONNACK_ACCEPTED),
        "no CONNACK after the restart: {answer:?}"
    );

    // Off: the placeholder goes, the network stays (apps may still be attached).
    let text = std::fs::read_to_string(&envvars)
        .unwrap()
        .replace("IOHUBOS_GLOBAL_MQTT='true'", "IOHUBOS_GLOBAL_MQTT='false'");
    std::fs::write(&envvars, text).unwrap();
    until_state(&roots.root, "global_mqtt", T, |s| {
        s.facts["docker"] == "none"
    })
    .await;
    let (exists, _, _) = docker(&["inspect", &broker]);
    assert!(
        !exists,
        "the placeholder must be removed when the broker is off"
    );
    let (net_exists, _, _) = docker(&["network", "inspect", &net]);
    assert!(net_exists);
    d.stop();
}
