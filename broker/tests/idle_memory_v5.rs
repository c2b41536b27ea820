//! The same bound as `idle_memory.rs` for idle MQTT 5 clients (whose packets, wills and
//! properties are larger).
//!
//! Heap held by the broker per idle connection on the apps listener, counted by dhat's
//! allocator (live bytes, not RSS: exact and independent of what glibc keeps cached). A guard
//! for the "RSS per idle connection" benchmark: an idle connection must not keep an input
//! buffer (an 8 KiB read buffer kept after the CONNECT once tripled its cost).
//!
//! The clients are blocking std sockets on a plain thread, which allocate nothing, so every
//! byte counted is the broker's. One test per file: dhat's testing mode is process-wide.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use broker::{Broker, ListenerConfig, RouterLimits};
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5::{Connect, Packet};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Connections measured (after as many for warm-up: slabs and maps grow in steps).
const N: usize = 500;

/// Bound per idle connection: the task (its future, about 2.7 KiB) and its socket registration.
const MAX_BYTES_PER_CONNECTION: usize = 4096;

/// Connect `ids` clients (CONNECT with a 600 s keepalive, CONNACK read), then stay silent.
fn open(addr: SocketAddr, ids: std::ops::Range<usize>, socks: &mut Vec<TcpStream>) {
    let mut connect = BytesMut::new();
    for i in ids {
        connect.clear();
        let c = Connect {
            keep_alive: 600,
            client_id: format!("idle-{i}"),
            clean_start: true,
            properties: None,
        };
        Packet::Connect(c, None, None)
            .write(&mut connect, None)
            .expect("encode CONNECT");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(&connect).expect("send CONNECT");
        // CONNACK: type, remaining length (< 128), session present 0, reason code 0, then
        // the broker's properties.
        let mut head = [0u8; 4];
        s.read_exact(&mut head).expect("CONNACK");
        assert_eq!(
            (head[0], head[2], head[3]),
            (0x20, 0, 0),
            "CONNACK accepted"
        );
        let mut rest = vec![0u8; usize::from(head[1]) - 2];
        s.read_exact(&mut rest).expect("CONNACK properties");
        socks.push(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_no_input_buffer() {
    let broker = Broker::start(RouterLimits::default()).expect("broker");
    let addr = broker
        .listen(ListenerConfig::apps(
            "127.0.0.1:0".parse().expect("addr"),
            vec![],
        ))
        .await
        .expect("listen");
    let clients = std::thread::spawn(move || {
        let mut socks = Vec::with_capacity(2 * N);
        open(addr, 0..N, &mut socks);
        std::thread::sleep(Duration::from_millis(300));
        let profiler = dhat::Profiler::builder().testing().build();
        open(addr, N..2 * N, &mut socks);
        // Let every session reach its idle wait.
        std::thread::sleep(Duration::from_millis(300));
        let stats = dhat::HeapStats::get();
        drop(profiler);
        (stats, socks)
    });
    let (stats, socks) = tokio::task::spawn_blocking(move || clients.join().expect("clients"))
        .await
        .expect("join");
    let per = stats.curr_bytes / N;
    eprintln!(
        "live heap per idle connection: {per} B ({} blocks for {N})",
        stats.curr_blocks
    );
    assert!(
        per < MAX_BYTES_PER_CONNECTION,
        "{per} B of heap per idle connection (bound {MAX_BYTES_PER_CONNECTION} B)"
    );
    drop(socks);
    drop(broker);
}
