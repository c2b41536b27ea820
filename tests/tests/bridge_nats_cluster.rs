//! The bridge against an existing clustered broker: Debian's `nats-server` as a 3-node cluster on
//! loopback with JetStream and MQTT enabled. The link is given the three nodes' MQTT addresses;
//! the node it is connected to is killed (SIGKILL) mid-stream, and the link moves on to the next
//! address: a subscriber on the third node receives every message (duplicates allowed, none
//! lost) and the queue ends empty (every record PUBACKed).
#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // the test writes nats-server's config and runs it

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::queue::{Options, Writer};
use bridge::{Backoff, Direction, Link, MapSpec, Maps, Remote};
use iohub_tests::require_program;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

/// A bound on every wait (the test fails rather than hangs).
const LIMIT: Duration = Duration::from_secs(120);
const N: u64 = 6_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node of the cluster.
struct Node {
    child: Option<Child>,
    mqtt: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Three nodes, routes between all of them, JetStream and MQTT on each.
fn cluster(dir: &Path) -> Vec<Node> {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c, _)| format!("\"nats://127.0.0.1:{c}\""))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, &(client, route, mqtt))| {
            let conf = dir.join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\n\
                     jetstream {{ store_dir: \"{}/js{i}\" }}\n\
                     mqtt {{ listen: \"127.0.0.1:{mqtt}\" }}\n\
                     cluster {{ name: iohub-test\n listen: \"127.0.0.1:{route}\"\n routes: [{}] }}\n",
                    dir.display(),
                    routes.join(", ")
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join(format!("n{i}.log"))).unwrap();
            let child = Command::new("nats-server")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            Node {
                child: Some(child),
                mqtt,
            }
        })
        .collect()
}

type Received = Arc<Mutex<BTreeMap<u64, u32>>>;

/// A subscriber of `fleet/#` on node `port`, connecting again until the cluster's JetStream
/// answers; returns once its subscription is acknowledged.
async fn subscriber(port: u16, cancel: CancellationToken) -> Received {
    let got: Received = Arc::default();
    let seen = got.clone();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut o = MqttOptions::new("remote-sub", "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 100);
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut asked = false;
        loop {
            let ev = tokio::select! {
                ev = el.poll() => ev,
                () = cancel.cancelled() => return,
            };
            match ev {
                Ok(Event::Incoming(Incoming::ConnAck(_))) if !asked => {
                    client.subscribe("fleet/#", QoS::AtLeastOnce).await.unwrap();
                    asked = true;
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let n: u64 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                    *seen.lock().unwrap().entry(n).or_insert(0) += 1;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    tokio::time::timeout(LIMIT, subscribed)
        .await
        .expect("the subscriber got no SUBACK from the cluster")
        .unwrap();
    got
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..LIMIT.as_millis() / 20 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_moves_the_link_to_the_next_address_with_nothing_lost() {
    if !require_program("nats-server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    let cancel = CancellationToken::new();
    let got = subscriber(nodes[2].mqtt, cancel.clone()).await;

    let remote = Remote {
        name: "nats".into(),
        addresses: nodes
            .iter()
            .map(|n| ("127.0.0.1".to_string(), n.mqtt))
            .collect(),
        tls: None,
        username: None,
        password: None,
        client_id: "iohub-box1".into(),
        keep_alive_secs: 5,
        max_inflight: 200,
        backoff: Backoff {
            min_ms: 50,
            max_ms: 500,
        },
    };
    let spec = MapSpec {
        direction: Direction::Out,
        filter: "data/#".into(),
        template: "fleet/{box}/data/#".into(),
        priority: 0,
        ttl_ms: None,
    };
    let (queue, queue_thread) =
        Writer::open(&dir.path().join("queue"), Options::with_budget(64 << 20)).unwrap();
    let link = Link::new(
        remote,
        Maps::new(&[spec], "box1").unwrap(),
        queue.clone(),
        None,
    );
    let mut state = link.state();
    let runner = tokio::spawn({
        let (link, cancel) = (link.clone(), cancel.clone());
        async move { link.run(cancel).await }
    });
    let first = nodes[0].mqtt;
    tokio::time::timeout(
        LIMIT,
        state.wait_for(|s| s.connected && s.address == Some(format!("127.0.0.1:{first}"))),
    )
    .await
    .expect("the link connects to the first address")
    .unwrap();

    let producer = tokio::spawn({
        let link = link.clone();
        async move {
            for start in (0..N).step_by(100) {
                let batch = (start..start + 100)
                    .map(|n| ("data/stream".to_string(), n.to_string().into_bytes()))
                    .collect();
                link.offer(batch).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let distinct = || got.lock().unwrap().len() as u64;
    wait_until("a third of the stream at the subscriber", || {
        distinct() >= N / 3
    })
    .await;
    nodes[0].kill();
    tokio::time::timeout(LIMIT, producer)
        .await
        .unwrap()
        .unwrap();
    wait_until("every message at the subscriber", || distinct() == N).await;
    wait_until("every PUBACK", || {
        queue.stats().unwrap().queued_records == 0
    })
    .await;
    let s = link.state().borrow().clone();
    let stats = queue.stats().unwrap();
    let received: u64 = got.lock().unwrap().values().map(|&c| u64::from(c)).sum();
    eprintln!(
        "{N} messages through a 3-node NATS cluster, node 1 killed: 0 lost, {} duplicates, \
         {} redelivered by the bridge, now on {:?} after {} connects",
        received - N,
        stats.redelivered,
        s.address,
        s.connects
    );
    assert!(s.connected);
    assert_ne!(
        s.address,
        Some(format!("127.0.0.1:{first}")),
        "the link moved off the killed node"
    );
    assert!(s.connects >= 2);
    cancel.cancel();
    runner.await.unwrap();
    queue.close().unwrap();
    queue_thread.join().unwrap();
}
