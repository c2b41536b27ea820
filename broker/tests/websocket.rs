//! MQTT over WebSocket against real clients: rumqttc's WebSocket transport, a raw tokio-tungstenite
//! client (for framing, text and oversized frames, close frames) and raw TCP sockets (for idle
//! and half-sent upgrades, refused upgrades). Every wait is bounded by `STEP`; nothing asserts on
//! elapsed time.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use broker::{Broker, ListenerConfig, ListenerStatsSnapshot, RouterLimits};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{Connect, LastWill, Subscribe};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, MqttOptions, Packet, Publish, QoS, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

mod common;

use common::{credentials, Client, STEP};

/// A broker with an anonymous apps listener on TCP (`apps`) and the same on WebSocket (`ws`).
struct Fixture {
    broker: Broker,
    tcp: SocketAddr,
    ws: SocketAddr,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(|_| {}).await
    }

    async fn with(edit: impl FnOnce(&mut ListenerConfig)) -> Fixture {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let broker = Broker::start(RouterLimits::default()).expect("broker");
        let tcp = broker
            .listen(ListenerConfig::apps(any, Vec::new()))
            .await
            .expect("listen");
        let mut ws = ListenerConfig::apps(any, Vec::new());
        ws.name = "ws".into();
        ws.websocket = true;
        edit(&mut ws);
        let ws = broker.listen(ws).await.expect("listen");
        Fixture { broker, tcp, ws }
    }

    fn tcp_options(&self, id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(id, "127.0.0.1", self.tcp.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        options
    }

    fn ws_options(&self, id: &str) -> MqttOptions {
        ws_options(self.ws, id)
    }

    fn ws_stats(&self) -> ListenerStatsSnapshot {
        self.broker.listener_stats("ws").expect("stats").snapshot()
    }
}

fn ws_options(addr: SocketAddr, id: &str) -> MqttOptions {
    let url = format!("ws://127.0.0.1:{}/mqtt", addr.port());
    let mut options = MqttOptions::new(id, url, addr.port());
    options
        .set_transport(Transport::Ws)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// The CONNACK refusal a client with these options gets.
async fn refusal(options: MqttOptions) -> ConnectReturnCode {
    let (_client, mut events) = AsyncClient::new(options, 10);
    match tokio::time::timeout(STEP, events.poll())
        .await
        .expect("no CONNACK in time")
    {
        Err(ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A raw WebSocket client (subprotocol `mqtt`) with its undecoded MQTT input.
struct RawWs {
    ws: WebSocketStream<TcpStream>,
    input: BytesMut,
}

impl RawWs {
    async fn connect(addr: SocketAddr) -> RawWs {
        let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (ws, response) =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(request, tcp))
                .await
                .expect("no upgrade in time")
                .expect("upgrade");
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol"),
            Some(&HeaderValue::from_static("mqtt"))
        );
        RawWs {
            ws,
            input: BytesMut::new(),
        }
    }

    async fn send(&mut self, message: Message) {
        tokio::time::timeout(STEP, self.ws.send(message))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// The next MQTT packet from the broker (pongs are skipped).
    async fn packet(&mut self) -> Packet {
        loop {
            match Packet::read(&mut self.input, 1 << 20) {
                Ok(p) => return p,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from the broker: {e}"),
            }
            match self.message().await {
                Some(Message::Binary(data)) => self.input.extend_from_slice(&data),
                Some(Message::Pong(_)) => {}
                other => panic!("expected MQTT bytes, got {other:?}"),
            }
        }
    }

    /// The next WebSocket message; `None` once the connection is gone.
    async fn message(&mut self) -> Option<Message> {
        match tokio::time::timeout(STEP, self.ws.next())
            .await
            .expect("no message in time")
        {
            Some(Ok(m)) => Some(m),
            Some(Err(_)) | None => None,
        }
    }

    /// Read until the broker ends the connection; the close code it sent, if any.
    async fn ended(&mut self) -> Option<CloseCode> {
        let mut code = None;
        while let Some(m) = self.message().await {
            if let Message::Close(frame) = m {
                code = frame.map(|f| f.code);
            }
        }
        code
    }

    /// CONNECT as `id` (with `will`) and expect CONNACK 0.
    async fn handshake(&mut self, id: &str, will: Option<LastWill>) {
        let mut connect = Connect::new(id);
        connect.keep_alive = 30;
        connect.last_will = will;
        self.send(Message::Binary(encode(&[Packet::Connect(connect)])))
            .await;
        match self.packet().await {
            Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

fn encode(packets: &[Packet]) -> Bytes {
    let mut buf = BytesMut::new();
    for p in packets {
        p.write(&mut buf, usize::MAX).unwrap();
    }
    buf.freeze()
}

/// Whether the broker closes `stream` (EOF or reset) within `STEP`.
async fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout(STEP, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Send a raw HTTP upgrade request with these extra header lines; the response head.
async fn upgrade_response(addr: SocketAddr, extra: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(STEP, tcp.read(&mut buf))
            .await
            .expect("no response in time")
            .unwrap_or(0);
        response.extend_from_slice(&buf[..n]);
        if n == 0 || response.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_and_a_tcp_client_exchange_messages_both_ways_at_qos0_and_qos1() {
    let fx = Fixture::new().await;
    let mut ws = Client::connect(fx.ws_options("browser")).await;
    let mut tcp = Client::connect(fx.tcp_options("device")).await;
    ws.subscribe(&[("to-ws/#", QoS::AtLeastOnce)]).await;
    tcp.subscribe(&[("to-tcp/#", QoS::AtLeastOnce)]).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let n = qos as u8;
        tcp.publish_acked(
            &format!("to-ws/{n}"),
            qos,
            false,
            format!("tcp {n}").as_bytes(),
        )
        .await;
        let p = ws.publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            (
                format!("to-ws/{n}").as_str(),
                format!("tcp {n}").as_bytes(),
                qos
            )
        );
        ws.publish_acked(
            &format!("to-tcp/{n}"),
            qos,
            false,
            format!("ws {n}").as_bytes(),
        )
        .await;
        let p = tcp.publish().await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            (
                format!("to-tcp/{n}").as_str(),
                format!("ws {n}").as_bytes(),
                qos
            )
        );
    }
    // A payload larger than one outgoing WebSocket message (64 KiB) arrives whole.
    let big = vec![7u8; 200 * 1024];
    tcp.publish_acked("to-ws/big", QoS::AtLeastOnce, false, &big)
        .await;
    let p = ws.publish().await;
    assert_eq!(
        (p.topic.as_str(), p.payload.len()),
        ("to-ws/big", big.len())
    );
    assert_eq!(fx.ws_stats().connections, 1);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_upgraded_connections_neither_delay_a_websocket_client_nor_outlive_the_connect_timeout(
) {
    let fx = Fixture::with(|c| c.limits.connect_timeout = Duration::from_millis(300)).await;
    let mut idle = TcpStream::connect(fx.ws).await.unwrap();
    let mut half = TcpStream::connect(fx.ws).await.unwrap();
    half.write_all(b"GET /mqtt HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    // An upgraded connection that never sends its CONNECT.
    let mut silent = RawWs::connect(fx.ws).await;
    // A real client connects and works meanwhile.
    let mut ws = Client::connect(fx.ws_options("browser")).await;
    ws.subscribe(&[("a/#", QoS::AtLeastOnce)]).await;
    let mut tcp = Client::connect(fx.tcp_options("device")).await;
    tcp.publish_acked("a/b", QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(ws.publish().await.topic, "a/b");
    // Each of the three is closed once the connect timeout is over.
    assert!(closed_by_broker(&mut idle).await, "the idle connection");
    assert!(closed_by_broker(&mut half).await, "the half-sent upgrade");
    silent.ended().await;
    assert_eq!(fx.ws_stats().connections, 1);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_the_mqtt_subprotocol_is_refused_with_an_http_error() {
    let fx = Fixture::new().await;
    for extra in [
        "",
        "Sec-WebSocket-Protocol: chat\r\n",
        "Sec-WebSocket-Protocol: mqttv3.1\r\n",
    ] {
        let response = upgrade_response(fx.ws, extra).await;
        assert!(status(&response) >= 400, "{extra:?}: {response}");
        assert!(
            !response.to_ascii_lowercase().contains("upgrade: websocket"),
            "{response}"
        );
    }
    // `mqtt` among others is selected.
    let response = upgrade_response(fx.ws, "Sec-WebSocket-Protocol: chat, mqtt\r\n").await;
    assert_eq!(status(&response), 101, "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("sec-websocket-protocol: mqtt\r\n"),
        "{response}"
    );
    // A plain MQTT client gets no CONNACK from a WebSocket listener.
    let mut tcp = TcpStream::connect(fx.ws).await.unwrap();
    tcp.write_all(&encode(&[Packet::Connect(Connect::new("plain"))]))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(STEP, tcp.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(&[0x20, 2]), "a CONNACK: {buf:?}");
    assert_eq!(fx.ws_stats().connections_total, 0);
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_may_span_websocket_messages_and_one_message_may_hold_several() {
    let fx = Fixture::new().await;
    let mut ws = RawWs::connect(fx.ws).await;
    // The CONNECT in three messages, the last holding the start of a SUBSCRIBE.
    let mut connect = Connect::new("raw");
    connect.keep_alive = 30;
    let bytes = encode(&[
        Packet::Connect(connect),
        Packet::Subscribe(Subscribe::new("raw/#", QoS::AtLeastOnce)),
        Packet::PingReq,
        Packet::Publish(Publish::new("raw/x", QoS::AtMostOnce, "self")),
    ]);
    let cuts = [3, 9, 20, bytes.len()];
    let mut at = 0;
    for cut in cuts {
        ws.send(Message::Binary(bytes.slice(at..cut))).await;
        at = cut;
    }
    assert!(matches!(ws.packet().await, Packet::ConnAck(_)));
    assert!(matches!(ws.packet().await, Packet::SubAck(_)));
    assert!(matches!(ws.packet().await, Packet::PingResp));
    match ws.packet().await {
        Packet::Publish(p) => {
            assert_eq!((p.topic.as_str(), &p.payload[..]), ("raw/x", &b"self"[..]))
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // WebSocket pings are answered.
    ws.send(Message::Ping(Bytes::from_static(b"hello"))).await;
    loop {
        match ws.message().await {
            Some(Message::Pong(data)) => {
                assert_eq!(&data[..], b"hello");
                break;
            }
            Some(Message::Binary(_)) => {}
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    // An empty binary message is no end of stream.
    ws.send(Message::Binary(Bytes::new())).await;
    ws.send(Message::Binary(encode(&[Packet::PingReq]))).await;
    assert!(matches!(ws.packet().await, Packet::PingResp));
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_ends_the_connection_with_close_code_1003() {
    let fx = Fixture::new().await;
    let mut ws = RawWs::connect(fx.ws).await;
    ws.handshake("texter", None).await;
    ws.send(Message::Text("PINGREQ".into())).await;
    assert_eq!(ws.ended().await, Some(CloseCode::Unsupported));
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_or_packet_larger_than_the_largest_packet_ends_the_connection() {
    let fx = Fixture::with(|c| c.limits.max_packet_bytes = 1024).await;
    // One frame past the limit.
    let mut ws = RawWs::connect(fx.ws).await;
    ws.handshake("big-frame", None).await;
    ws.send(Message::Binary(Bytes::from(vec![0u8; 4096]))).await;
    assert_eq!(ws.ended().await, Some(CloseCode::Size));
    // A packet past the limit, in small frames.
    let mut ws = RawWs::connect(fx.ws).await;
    ws.handshake("big-packet", None).await;
    let publish = encode(&[Packet::Publish(Publish::new(
        "a/b",
        QoS::AtMostOnce,
        vec![1u8; 4096],
    ))]);
    for chunk in publish.chunks(512) {
        if ws
            .ws
            .send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .await
            .is_err()
        {
            break;
        }
    }
    ws.ended().await;
    // A frame just under the limit is fine.
    let mut ws = RawWs::connect(fx.ws).await;
    ws.handshake("fits", None).await;
    let mut frame = encode(&[Packet::Publish(Publish::new(
        "a/b",
        QoS::AtMostOnce,
        vec![1u8; 1000],
    ))])
    .to_vec();
    frame.extend_from_slice(&encode(&[Packet::PingReq]));
    ws.send(Message::Binary(frame.into())).await;
    assert!(matches!(ws.packet().await, Packet::PingResp));
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_frame_without_disconnect_publishes_the_will_and_disconnect_does_not() {
    let fx = Fixture::new().await;
    let mut tcp = Client::connect(fx.tcp_options("watcher")).await;
    tcp.subscribe(&[("wills/#", QoS::AtLeastOnce)]).await;
    // DISCONNECT then close: no will.
    let mut polite = RawWs::connect(fx.ws).await;
    polite
        .handshake(
            "polite",
            Some(LastWill::new(
                "wills/polite",
                "gone",
                QoS::AtLeastOnce,
                false,
            )),
        )
        .await;
    polite
        .send(Message::Binary(encode(&[Packet::Disconnect])))
        .await;
    polite.ended().await;
    // A close frame alone: the will.
    let mut abrupt = RawWs::connect(fx.ws).await;
    abrupt
        .handshake(
            "abrupt",
            Some(LastWill::new(
                "wills/abrupt",
                "gone",
                QoS::AtLeastOnce,
                false,
            )),
        )
        .await;
    abrupt.ws.close(None).await.unwrap();
    let will = tcp.publish().await;
    assert_eq!(
        (will.topic.as_str(), &will.payload[..]),
        ("wills/abrupt", &b"gone"[..])
    );
    fx.broker.shutdown(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_refusal_codes_arrive_over_websocket() {
    let broker = Broker::start(RouterLimits::default()).expect("broker");
    let mut config = ListenerConfig::control("127.0.0.1:0".parse().unwrap(), credentials());
    config.websocket = true;
    config.limits.max_connections = 1;
    let addr = broker.listen(config).await.expect("listen");
    let c = credentials();
    let mut wrong = ws_options(addr, "wrong");
    wrong.set_credentials(c.username.clone(), "battery staple");
    assert_eq!(refusal(wrong).await, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(
        refusal(ws_options(addr, "anonymous")).await,
        ConnectReturnCode::NotAuthorized
    );
    let mut first = ws_options(addr, "first");
    first.set_credentials(c.username.clone(), c.password.clone());
    let _first = Client::connect(first).await;
    let mut second = ws_options(addr, "second");
    second.set_credentials(c.username, c.password);
    assert_eq!(refusal(second).await, ConnectReturnCode::ServiceUnavailable);
    // MQTT 3.1 over WebSocket: unacceptable protocol version.
    let mut ws = RawWs::connect(addr).await;
    let v31 = [
        0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
    ];
    ws.send(Message::Binary(Bytes::copy_from_slice(&v31))).await;
    match ws.packet().await {
        Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::RefusedProtocolVersion),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    ws.ended().await;
    let stats = broker.listener_stats("control").expect("stats").snapshot();
    assert_eq!((stats.refused_auth, stats.refused_limit), (2, 1));
    broker.shutdown(STEP).await;
}
