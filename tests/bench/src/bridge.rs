//! The `bridge` group: the disk queue alone (append + pop + ack through the group-commit
//! writer), then the bridge towards Debian's mosquitto as the remote broker on loopback:
//! throughput with the link up, and the replay of a backlog queued while the remote was down.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bridge::queue::{Options, Writer};
use bridge::{Backoff, Direction, Link, MapSpec, Maps, Remote};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(600);

struct Mosquitto(Child);

impl Mosquitto {
    fn start(dir: &Path, port: u16) -> Mosquitto {
        let conf = dir.join("mosquitto-remote.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 0\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto)");
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Mosquitto(child)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn link(port: u16, queue: Writer) -> Link {
    let remote = Remote {
        name: "bench".into(),
        addresses: vec![("127.0.0.1".into(), port)],
        tls: None,
        username: None,
        password: None,
        client_id: "iohub-bench-box".into(),
        keep_alive_secs: 30,
        max_inflight: 1_000,
        backoff: Backoff {
            min_ms: 20,
            max_ms: 200,
        },
    };
    let spec = MapSpec {
        direction: Direction::Out,
        filter: "data/#".into(),
        template: "fleet/{box}/data/#".into(),
        priority: 0,
        ttl_ms: None,
    };
    Link::new(remote, Maps::new(&[spec], "b1").unwrap(), queue, None)
}

/// A subscriber on the remote counting what it receives; returns once subscribed.
async fn subscriber(port: u16) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let (c, mut el) = AsyncClient::new(MqttOptions::new("bench-sub", "127.0.0.1", port), 10_000);
    c.subscribe("fleet/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        match tokio::time::timeout(LIMIT, el.poll()).await.unwrap() {
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("bench subscriber: {e}"),
        }
    }
    tokio::spawn(async move {
        let _c = c;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    count
}

async fn wait_count(count: &AtomicU64, n: u64) {
    let polls = LIMIT.as_millis() / 5;
    for _ in 0..polls {
        if count.load(Ordering::Relaxed) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the remote received {} of {n}",
        count.load(Ordering::Relaxed)
    );
}

async fn offer_all(link: &Link, n: u64, size: usize) {
    let payload = vec![b'x'; size];
    for start in (0..n).step_by(500) {
        let batch = (start..(start + 500).min(n))
            .map(|_| ("data/stream".to_string(), payload.clone()))
            .collect();
        link.offer(batch).await.unwrap();
    }
}

fn queue_alone() -> String {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("bridge-queue-tool");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(exe)
        .args([
            "bench",
            dir.path().to_str().unwrap(),
            "500000",
            "100",
            "1000",
        ])
        .output()
        .expect("bridge-queue-tool (scripts/bench.sh builds it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) async fn run() -> String {
    let mut out = format!("{}\n\n", queue_alone());
    out.push_str("| bridge -> mosquitto (loopback, QoS1, 100 B payloads) | result |\n|---|---|\n");

    // The link up: every message queued durably, sent, PUBACKed and removed.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _remote = Mosquitto::start(dir.path(), port);
    let count = subscriber(port).await;
    let (queue, _t) = Writer::open(&dir.path().join("q1"), Options::with_budget(1 << 30)).unwrap();
    let l = link(port, queue.clone());
    let cancel = CancellationToken::new();
    let runner = tokio::spawn({
        let (l, c) = (l.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    let n = 200_000;
    let t0 = Instant::now();
    offer_all(&l, n, 100).await;
    wait_count(&count, n).await;
    let secs = t0.elapsed().as_secs_f64();
    out.push_str(&format!(
        "| link up: {n} messages offered, queued, sent and received | {:.0} msg/s |\n",
        n as f64 / secs
    ));
    cancel.cancel();
    runner.await.unwrap();
    drop(_remote);

    // A backlog queued while the remote is down, replayed when it comes back.
    let port = free_port();
    let (queue, _t) = Writer::open(&dir.path().join("q2"), Options::with_budget(1 << 30)).unwrap();
    let l = link(port, queue.clone());
    let n = 1_000_000;
    let size = 150;
    offer_all(&l, n, size).await;
    let backlog_mb = queue.stats().unwrap().queued_bytes as f64 / 1e6;
    let _remote = Mosquitto::start(dir.path(), port);
    let count = subscriber(port).await;
    let cancel = CancellationToken::new();
    let t0 = Instant::now();
    let runner = tokio::spawn({
        let (l, c) = (l.clone(), cancel.clone());
        async move { l.run(c).await }
    });
    wait_count(&count, n).await;
    let secs = t0.elapsed().as_secs_f64();
    out.push_str(&format!(
        "| replay of a backlog of {n} messages ({backlog_mb:.0} MB in the queue) | {secs:.1} s, {:.0} msg/s |\n",
        n as f64 / secs
    ));
    cancel.cancel();
    runner.await.unwrap();
    out
}
