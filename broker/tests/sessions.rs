//! Persistent sessions (MQTT 3.1.1 §3.1.2.4, §4.4) and QoS2 end to end (§4.3.3), driven by a
//! real client (rumqttc) against a listener with a session store in a temporary directory.
//! The power cut (kill -9 of iohubd) is in tests/tests/mqtt_sessions.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use broker::{Broker, ListenerConfig, ListenerStatsSnapshot, RouterLimits, SessionStoreConfig};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, Publish, QoS};

mod common;

use common::{credentials, Client, STEP};

const TOPIC: &str = "iohub/event/sessions";

struct Fixture {
    broker: Broker,
    addr: SocketAddr,
}

impl Fixture {
    async fn new(dir: &Path, edit: impl FnOnce(&mut SessionStoreConfig)) -> Fixture {
        let broker = Broker::start(RouterLimits::default()).expect("broker");
        let mut config =
            ListenerConfig::control("127.0.0.1:0".parse().expect("address"), credentials());
        let mut sessions = SessionStoreConfig::new(dir.to_path_buf());
        edit(&mut sessions);
        config.sessions = Some(sessions);
        let addr = broker.listen(config).await.expect("listen");
        Fixture { broker, addr }
    }

    fn options(&self, id: &str, clean: bool) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.addr.port());
        let c = credentials();
        options
            .set_credentials(c.username, c.password)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(clean);
        options
    }

    /// Connect; the CONNACK's session present flag.
    async fn connect(&self, options: MqttOptions) -> (Client, bool) {
        let (client, events) = AsyncClient::new(options, 100);
        let mut c = Client { client, events };
        match c.next().await {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, ConnectReturnCode::Success);
                (c, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn persistent(&self, id: &str) -> (Client, bool) {
        self.connect(self.options(id, false)).await
    }

    /// A client that does not acknowledge what it receives.
    async fn silent(&self, id: &str) -> (Client, bool) {
        let mut options = self.options(id, false);
        options.set_manual_acks(true);
        self.connect(options).await
    }

    async fn publish(&self, qos: QoS, payloads: impl IntoIterator<Item = String>) {
        let (mut p, _) = self.connect(self.options("publisher", true)).await;
        for payload in payloads {
            p.publish_acked(TOPIC, qos, false, payload.as_bytes()).await;
        }
        disconnect(p).await;
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.broker
            .listener_stats("control")
            .expect("listener")
            .snapshot()
    }

    async fn stop(self) {
        self.broker.shutdown(STEP).await;
    }
}

/// DISCONNECT, sent before the client is dropped.
async fn disconnect(mut c: Client) {
    c.client.disconnect().await.expect("disconnect");
    loop {
        let event = tokio::time::timeout(STEP, c.events.poll())
            .await
            .expect("no event in time");
        match event {
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Wait until the broker counts `n` records in the session store (the keeper wrote them).
async fn records(fx: &Fixture, n: u64) {
    for _ in 0..500 {
        if fx.stats().session_records == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "session records: {} (expected {n})",
        fx.stats().session_records
    );
}

/// [`records`] while `c`'s event loop runs (rumqttc answers PUBRELs only when polled).
async fn settle(fx: &Fixture, c: &mut Client, n: u64) {
    for _ in 0..500 {
        if fx.stats().session_records == n {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(10), c.events.poll()).await;
    }
    panic!(
        "session records: {} (expected {n})",
        fx.stats().session_records
    );
}

/// The next `n` publishes, in order.
async fn received(c: &mut Client, n: usize) -> Vec<Publish> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(c.publish().await);
    }
    out
}

fn payloads(ps: &[Publish]) -> Vec<String> {
    ps.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Nothing more arrives within a short wait (a marker published after proves the order).
async fn then_marker(fx: &Fixture, c: &mut Client) {
    fx.publish(QoS::AtLeastOnce, ["marker".to_string()]).await;
    let p = c.publish().await;
    assert_eq!(&p.payload[..], b"marker", "unexpected message {p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_its_filters_and_the_qos1_messages_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut c, present) = fx.persistent("away").await;
    assert!(!present, "a new session is not present");
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;

    // QoS0 messages are not kept for an absent client (mosquitto's default). Published first:
    // once the keeper has the QoS1 ones on disk, it has passed over these.
    fx.publish(QoS::AtMostOnce, numbered("q0-", 2)).await;
    fx.publish(QoS::AtLeastOnce, numbered("m", 5)).await;
    records(&fx, 5).await;

    let (mut c, present) = fx.persistent("away").await;
    assert!(present, "CONNACK session present");
    let got = received(&mut c, 5).await;
    assert_eq!(payloads(&got), numbered("m", 5));
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    // The subscription is still there without a new SUBSCRIBE.
    then_marker(&fx, &mut c).await;
    settle(&fx, &mut c, 0).await;
    assert_eq!(fx.stats().sessions, 1);
    disconnect(c).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_clients_queue_is_bounded_and_its_loss_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |s| s.max_queued_messages = 3).await;
    let (mut c, _) = fx.persistent("bounded").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    fx.publish(QoS::AtLeastOnce, numbered("m", 5)).await;
    records(&fx, 3).await;
    assert_eq!(fx.stats().session_dropped, 2);
    let (mut c, _) = fx.persistent("bounded").await;
    // The oldest are kept, the newest dropped (mosquitto's max_queued_messages).
    assert_eq!(payloads(&received(&mut c, 3).await), numbered("m", 3));
    then_marker(&fx, &mut c).await;
    disconnect(c).await;
    fx.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |s| s.max_queued_bytes = 200).await;
    let (mut c, _) = fx.persistent("bytes").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    fx.publish(
        QoS::AtLeastOnce,
        (0..5).map(|i| format!("{i}{}", "x".repeat(60))),
    )
    .await;
    // 35 bytes of framing, the 20-byte topic, 3 header bytes and 61 of payload: 119 each.
    records(&fx, 1).await;
    assert_eq!(fx.stats().session_dropped, 4);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_session_connect_discards_the_stored_session() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut c, _) = fx.persistent("fickle").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    fx.publish(QoS::AtLeastOnce, numbered("m", 2)).await;
    records(&fx, 2).await;

    let (c, present) = fx.connect(fx.options("fickle", true)).await;
    assert!(!present, "a clean session is never present");
    disconnect(c).await;
    assert_eq!((fx.stats().sessions, fx.stats().session_records), (0, 0));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    fx.publish(QoS::AtLeastOnce, numbered("n", 2)).await;
    let (mut c, present) = fx.persistent("fickle").await;
    assert!(!present);
    // Nothing kept, nothing subscribed: a marker on a new subscription is the first message.
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    then_marker(&fx, &mut c).await;
    disconnect(c).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_come_again_with_dup_and_their_packet_id() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut c, _) = fx.silent("silent").await;
    c.subscribe(&[(TOPIC, QoS::ExactlyOnce)]).await;
    fx.publish(QoS::AtLeastOnce, ["one".to_string()]).await;
    fx.publish(QoS::ExactlyOnce, ["two".to_string()]).await;
    let first = received(&mut c, 2).await;
    assert_eq!(payloads(&first), ["one", "two"]);
    assert!(first.iter().all(|p| !p.dup));
    assert_eq!(first[1].qos, QoS::ExactlyOnce);
    // Gone without acknowledging either (no PUBACK, no PUBREC).
    drop(c);
    records(&fx, 2).await;

    let (mut c, present) = fx.persistent("silent").await;
    assert!(present);
    let again = received(&mut c, 2).await;
    assert_eq!(payloads(&again), ["one", "two"]);
    assert!(
        again.iter().all(|p| p.dup),
        "redeliveries carry DUP: {again:?}"
    );
    // QoS2 keeps its packet id (the client may have it already, §4.3.3).
    assert_eq!(again[1].pkid, first[1].pkid);
    // This client acknowledges (rumqttc: PUBACK, PUBREC then PUBCOMP on PUBREL).
    then_marker(&fx, &mut c).await;
    settle(&fx, &mut c, 0).await;
    disconnect(c).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_goes_end_to_end_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut clean, _) = fx.connect(fx.options("clean2", true)).await;
    let ack = clean.subscribe(&[(TOPIC, QoS::ExactlyOnce)]).await;
    assert_eq!(
        ack.return_codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::ExactlyOnce)]
    );
    let (mut kept, _) = fx.persistent("kept2").await;
    kept.subscribe(&[(TOPIC, QoS::ExactlyOnce)]).await;
    fx.publish(QoS::ExactlyOnce, numbered("e", 20)).await;
    for c in [&mut clean, &mut kept] {
        let got = received(c, 20).await;
        assert_eq!(payloads(&got), numbered("e", 20));
        assert!(got.iter().all(|p| p.qos == QoS::ExactlyOnce && !p.dup));
        then_marker(&fx, c).await;
    }
    // Every PUBREL was completed: nothing left on disk.
    settle(&fx, &mut kept, 0).await;
    disconnect(clean).await;
    disconnect(kept).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_survives_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut c, _) = fx.persistent("durable").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    fx.publish(QoS::AtLeastOnce, numbered("before", 3)).await;
    records(&fx, 3).await;
    fx.stop().await;

    let fx = Fixture::new(dir.path(), |_| {}).await;
    assert_eq!((fx.stats().sessions, fx.stats().session_records), (1, 3));
    // The restored session is subscribed again while its client is still away.
    fx.publish(QoS::AtLeastOnce, numbered("after", 2)).await;
    records(&fx, 5).await;
    let (mut c, present) = fx.persistent("durable").await;
    assert!(present);
    let mut expected = numbered("before", 3);
    expected.extend(numbered("after", 2));
    assert_eq!(payloads(&received(&mut c, 5).await), expected);
    disconnect(c).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_session_is_set_aside_and_the_listener_starts() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut c, _) = fx.persistent("damaged").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    let (mut c, _) = fx.persistent("intact").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    fx.stop().await;

    let mut damaged = None;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let file = std::fs::read_to_string(path.join("session.json")).unwrap();
        if file.contains("\"damaged\"") {
            damaged = Some(path);
        }
    }
    let damaged = damaged.expect("the session's directory");
    #[allow(clippy::disallowed_methods)] // the test damages the store
    std::fs::write(damaged.join("session.json"), b"{\"client_id\": tru").unwrap();

    let fx = Fixture::new(dir.path(), |_| {}).await;
    let stats = fx.stats();
    assert_eq!((stats.sessions, stats.sessions_corrupt), (1, 1));
    assert!(!damaged.exists());
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().contains(".corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    let (mut c, present) = fx.persistent("intact").await;
    assert!(present);
    then_marker(&fx, &mut c).await;
    let (_c, present) = fx.persistent("damaged").await;
    assert!(!present);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_hands_the_session_to_the_newer_connection() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |_| {}).await;
    let (mut old, _) = fx.persistent("twice").await;
    old.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    let (mut new, present) = fx.persistent("twice").await;
    assert!(present);
    old.closed().await;
    then_marker(&fx, &mut new).await;
    // A storm of takeovers ends with one holder and the session intact.
    let mut last = None;
    drop(new);
    for _ in 0..20 {
        let (c, present) = fx.persistent("twice").await;
        assert!(present);
        last = Some(c);
    }
    let mut last = last.unwrap();
    then_marker(&fx, &mut last).await;
    assert_eq!(fx.stats().sessions, 1);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_sessions_a_persistent_connect_gets_server_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path(), |s| s.max_sessions = 1).await;
    let (c, _) = fx.persistent("first").await;
    disconnect(c).await;
    let (client, events) = AsyncClient::new(fx.options("second", false), 10);
    let mut c = Client { client, events };
    let refused = tokio::time::timeout(STEP, c.events.poll())
        .await
        .expect("an answer in time");
    assert!(
        matches!(
            refused,
            Err(rumqttc::ConnectionError::ConnectionRefused(
                ConnectReturnCode::ServiceUnavailable
            ))
        ),
        "{refused:?}"
    );
    // A clean session still connects.
    let (c, _) = fx.connect(fx.options("second", true)).await;
    disconnect(c).await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_reopened_on_its_store_gets_the_sessions_back() {
    // A configuration change closes a listener and opens it again at once: the new one waits
    // for the old one's keepers to let the files go, then restores the sessions.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(RouterLimits::default()).expect("broker");
    let config = || {
        let mut c = ListenerConfig::control("127.0.0.1:0".parse().expect("address"), credentials());
        c.name = "reopened".into();
        c.sessions = Some(SessionStoreConfig::new(dir.path().to_path_buf()));
        c
    };
    let first = broker::listener::listen(&broker.bus(), config())
        .await
        .unwrap();
    let fx = Fixture {
        addr: first.addr,
        broker: Broker::start(RouterLimits::default()).expect("unused"),
    };
    let (mut c, _) = fx.persistent("moving").await;
    c.subscribe(&[(TOPIC, QoS::AtLeastOnce)]).await;
    disconnect(c).await;
    let (mut p, _) = fx.connect(fx.options("publisher", true)).await;
    for i in 0..3 {
        p.publish_acked(TOPIC, QoS::AtLeastOnce, false, format!("m{i}").as_bytes())
            .await;
    }
    disconnect(p).await;
    first.close();
    let second = broker::listener::listen(&broker.bus(), config())
        .await
        .unwrap();
    let stats = second.stats.snapshot();
    assert_eq!((stats.sessions, stats.session_records), (1, 3));
    let fx = Fixture {
        addr: second.addr,
        broker: fx.broker,
    };
    let (mut c, present) = fx.persistent("moving").await;
    assert!(present);
    assert_eq!(payloads(&received(&mut c, 3).await), numbered("m", 3));
    drop(second);
    broker.shutdown(STEP).await;
}
