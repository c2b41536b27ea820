//! The bridge against a real remote broker (Debian's mosquitto on a loopback port of its own):
//! a QoS1 stream carried across restarts of the remote, and TTL and budget drops counted.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // the test writes mosquitto's config and runs it; helpers of a test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::queue::{record_len, Appended, Options, Queue, Writer};
use bridge::{Backoff, Direction, Link, MapSpec, Maps, Remote};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

/// A bound on every wait of these tests (they fail rather than hang).
const LIMIT: Duration = Duration::from_secs(240);

struct Mosquitto {
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Configure (persistent, so the subscriber's session survives a restart) and start.
    fn start(dir: &Path, port: u16) -> Mosquitto {
        Mosquitto::with(dir, port, "")
    }

    /// [`Mosquitto::start`] with more configuration lines (another listener).
    fn with(dir: &Path, port: u16, more: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nuser root\n\
                 persistence true\npersistence_location {}/\nmax_queued_messages 0\n{more}",
                dir.display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            conf,
            port,
            child: None,
        };
        m.restart();
        m
    }

    fn restart(&mut self) {
        self.stop();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt install mosquitto)");
        self.child = Some(child);
        for _ in 0..1_000 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("mosquitto did not listen on {}", self.port);
    }

    /// SIGTERM (mosquitto saves its sessions and the messages it accepted) and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn remote(port: u16) -> Remote {
    Remote {
        name: "test".into(),
        addresses: vec![("127.0.0.1".into(), port)],
        tls: None,
        username: None,
        password: None,
        client_id: "iohub-box1".into(),
        keep_alive_secs: 5,
        max_inflight: 200,
        backoff: Backoff {
            min_ms: 20,
            max_ms: 300,
        },
    }
}

fn maps(ttl_ms: Option<u64>) -> Maps {
    Maps::new(
        &[MapSpec {
            direction: Direction::Out,
            filter: "data/#".into(),
            template: "fleet/{box}/data/#".into(),
            priority: 1,
            ttl_ms,
        }],
        "box1",
    )
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

type Received = Arc<Mutex<BTreeMap<u64, u32>>>;

/// A subscriber on the remote with a persistent session: counts every payload it receives.
/// Returns once its subscription is acknowledged.
async fn subscriber(port: u16, cancel: CancellationToken) -> Received {
    let got = Arc::new(Mutex::new(BTreeMap::new()));
    let seen = got.clone();
    let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let suback = subscribed.clone();
    let mut o = MqttOptions::new("remote-sub", "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(o, 100);
    tokio::spawn(async move {
        let mut subscribed = false;
        while !cancel.is_cancelled() {
            let ev = tokio::select! {
                ev = el.poll() => ev,
                () = cancel.cancelled() => break,
            };
            match ev {
                Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                    // The session (and its subscription) must survive restarts of the broker:
                    // a subscription lost at the remote would lose messages the bridge delivered.
                    assert!(
                        !subscribed || a.session_present,
                        "the remote lost the subscriber's session"
                    );
                    if !subscribed {
                        client
                            .subscribe("fleet/box1/data/#", QoS::AtLeastOnce)
                            .await
                            .unwrap();
                        subscribed = true;
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => suback.store(true, Ordering::SeqCst),
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    assert_eq!(p.topic, "fleet/box1/data/stream");
                    let n: u64 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                    *seen.lock().unwrap().entry(n).or_insert(0) += 1;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    wait_until("the subscription", || subscribed.load(Ordering::SeqCst)).await;
    got
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let polls = LIMIT.as_millis() / 10;
    for _ in 0..polls {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_stream_crosses_remote_restarts_with_nothing_lost() {
    const N: u64 = 50_000;
    const RESTARTS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("remote").tap_mkdir(), free_port());
    let cancel = CancellationToken::new();
    let got = subscriber(broker.port, cancel.clone()).await;

    let (queue, queue_thread) =
        Writer::open(&dir.path().join("queue"), Options::with_budget(64 << 20)).unwrap();
    let link = Link::new(remote(broker.port), maps(None), queue.clone(), None);
    let runner = tokio::spawn({
        let (link, cancel) = (link.clone(), cancel.clone());
        async move { link.run(cancel).await }
    });
    let producer = tokio::spawn({
        let link = link.clone();
        async move {
            for start in (0..N).step_by(100) {
                let batch = (start..start + 100)
                    .map(|n| ("data/stream".to_string(), n.to_string().into_bytes()))
                    .collect();
                let out = link.offer(batch).await.unwrap();
                assert!(out.iter().all(|a| matches!(a, Some(Appended::Queued(_)))));
            }
        }
    });
    let distinct = || got.lock().unwrap().len() as u64;
    for k in 1..=RESTARTS {
        wait_until("progress before a restart", || {
            distinct() >= k * N / (RESTARTS + 2)
        })
        .await;
        let b = &mut broker;
        tokio::task::block_in_place(|| b.restart());
    }
    producer.await.unwrap();
    wait_until("every message at the remote", || distinct() == N).await;
    wait_until("every PUBACK", || {
        queue.stats().unwrap().queued_records == 0
    })
    .await;
    cancel.cancel();
    runner.await.unwrap();

    let stats = queue.stats().unwrap();
    let state = link.state().borrow().clone();
    let received: u64 = got.lock().unwrap().values().map(|&c| u64::from(c)).sum();
    let duplicates = received - N;
    eprintln!(
        "{N} messages, {RESTARTS} remote restarts: 0 lost, {duplicates} duplicates at the subscriber, \
         {} redelivered by the bridge, {} connects, {} failures",
        stats.redelivered, state.connects, state.failures
    );
    assert_eq!(stats.queued_records, 0, "everything acked leaves the queue");
    assert!(
        state.connects > RESTARTS,
        "the link reconnected after each restart"
    );
    // What the bridge sent twice is bounded by its window at each loss of the remote.
    assert!(
        stats.redelivered <= (RESTARTS + 1) * 200,
        "{}",
        stats.redelivered
    );
    queue.close().unwrap();
    queue_thread.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_and_the_byte_budget_drop_what_they_should_and_count_it() {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = dir.path().join("remote").tap_mkdir();
    // The remote is not reached while the queue fills (the link is not running yet).
    let port = free_port();
    let clock = Arc::new(AtomicU64::new(1_000_000));
    let now = clock.clone();
    let each = record_len("fleet/box1/data/stream".len(), 5);
    let budget = 300 * each;
    let q = Queue::open(
        &dir.path().join("queue"),
        Options {
            budget_bytes: budget,
            segment_bytes: 4096,
        },
    )
    .unwrap();
    let (queue, thread) = Writer::spawn(q, Box::new(move || now.load(Ordering::SeqCst)));
    let short = Link::new(remote(port), maps(Some(1_000)), queue.clone(), None);
    let long = Link::new(remote(port), maps(None), queue.clone(), None);
    let msgs = |from: u64, n: u64| -> Vec<(String, Vec<u8>)> {
        (from..from + n)
            .map(|i| ("data/stream".to_string(), i.to_string().into_bytes()))
            .collect()
    };
    // 100 messages with a TTL of 1 s, then 2 s pass.
    short.offer(msgs(10_000, 100)).await.unwrap();
    clock.fetch_add(2_000, Ordering::SeqCst);
    queue.expire().unwrap();
    // 500 without a TTL into a budget of 300: the oldest 200 are evicted.
    long.offer(msgs(10_100, 500)).await.unwrap();
    let stats = queue.stats().unwrap();
    assert_eq!(stats.dropped.ttl, 100);
    assert_eq!(stats.dropped.budget, 200);
    assert_eq!(stats.queued_records, 300);
    assert_eq!(stats.queued_bytes, budget);

    // The remote comes up: it receives exactly the 300 newest.
    let _broker = Mosquitto::start(&remote_dir, port);
    let cancel = CancellationToken::new();
    let got = subscriber(port, cancel.clone()).await;
    let runner = tokio::spawn({
        let (link, cancel) = (long.clone(), cancel.clone());
        async move { link.run(cancel).await }
    });
    wait_until("the 300 survivors at the remote", || {
        got.lock().unwrap().len() == 300
    })
    .await;
    wait_until("their acks", || queue.stats().unwrap().queued_records == 0).await;
    let want: Vec<u64> = (10_300..10_600).collect();
    assert_eq!(
        got.lock().unwrap().keys().copied().collect::<Vec<_>>(),
        want
    );
    cancel.cancel();
    runner.await.unwrap();
    queue.close().unwrap();
    thread.join().unwrap();
}

/// `openssl` with these arguments in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it.
fn pki(dir: &Path, ca: &str) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN={ca}"),
            ][..],
            &days,
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        openssl(
            dir,
            &[
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{who}.pem"),
                    "-extfile",
                    "san.ext",
                ][..],
                &days,
            ]
            .concat(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_pinned_ca_and_a_client_certificate_carries_messages_and_a_foreign_ca_is_refused(
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pki(d, "ca");
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            "other.pem",
            "-subj",
            "/CN=other",
            "-days",
            "2",
        ],
    );
    let (plain, tls_port) = (free_port(), free_port());
    // The subscriber uses a plain listener; the bridge the TLS one, which demands a client
    // certificate from the CA.
    let _broker = Mosquitto::with(
        &d.join("remote").tap_mkdir(),
        plain,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\n",
            d.display()
        ),
    );
    let cancel = CancellationToken::new();
    let got = subscriber(plain, cancel.clone()).await;
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let tls = |ca: &str| bridge::Tls {
        ca_pem: read(ca),
        client: Some((read("client.pem"), read("client.key"))),
    };

    // A foreign CA: the server is not trusted, nothing connects.
    let (queue, _t) = Writer::open(&d.join("q-foreign"), Options::with_budget(1 << 20)).unwrap();
    let foreign = Link::new(
        Remote {
            tls: Some(tls("other.pem")),
            ..remote(tls_port)
        },
        maps(None),
        queue.clone(),
        None,
    );
    foreign
        .offer(vec![("data/stream".into(), b"1".to_vec())])
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let runner = tokio::spawn({
        let (link, stop) = (foreign.clone(), stop.clone());
        async move { link.run(stop).await }
    });
    let state = foreign.state();
    wait_until("a refused TLS handshake", || state.borrow().failures >= 2).await;
    assert_eq!(state.borrow().connects, 0);
    assert_eq!(
        queue.stats().unwrap().queued_records,
        1,
        "the message waits in the queue"
    );
    stop.cancel();
    runner.await.unwrap();

    // The pinned CA and the client certificate: the messages arrive.
    let (queue, _t) = Writer::open(&d.join("q-tls"), Options::with_budget(1 << 20)).unwrap();
    let link = Link::new(
        Remote {
            tls: Some(tls("ca.pem")),
            client_id: "iohub-tls".into(),
            ..remote(tls_port)
        },
        maps(None),
        queue.clone(),
        None,
    );
    let runner = tokio::spawn({
        let (link, cancel) = (link.clone(), cancel.clone());
        async move { link.run(cancel).await }
    });
    let msgs = (0..100)
        .map(|i| ("data/stream".to_string(), i.to_string().into_bytes()))
        .collect();
    link.offer(msgs).await.unwrap();
    wait_until("100 messages over TLS", || got.lock().unwrap().len() == 100).await;
    cancel.cancel();
    runner.await.unwrap();
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
