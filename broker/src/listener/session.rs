//! One client connection: the handshake (CONNECT, authentication, limits), then the session loop
//! that moves packets between the socket and the bus. See the parent module for the rules.
//!
//! The session is generic over its transport ([`Conn`]): a plain [`TcpStream`] (split into
//! borrowed halves, read on readiness so that an idle connection holds no read buffer), or an
//! upgraded WebSocket ([`super::ws::WsConn`]). Both are monomorphised: the TCP path has no
//! indirection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bus_schema::secret;
use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes as mqttbytes4;
use rumqttc::v5::mqttbytes::v5::{
    self as p5, ConnAck, ConnAckProperties, Connect, ConnectReturnCode, Disconnect,
    DisconnectReasonCode, LastWill, Login, Packet, PubAck, PubAckReason, PubComp, PubRec,
    PubRecReason, PubRel, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe,
};
use rumqttc::v5::mqttbytes::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::codec::{self, Proto, ReadError, WriteError};
use super::store::{self, Attached, Held, Item, NotAttached, Store, Stored};
use super::{ListenerStats, Shared};
use crate::filter::{matches, valid_filter, valid_topic};
use crate::router::Queue;
use crate::{Acl, BusClientError, Message, MessageProperties, Subscription};

mod handshake;

use handshake::{handshake, HandshakeGuard, Negotiated, Registration};

/// Bytes reserved in the input buffer before each socket read.
const READ_CHUNK: usize = 8 * 1024;
/// Spare room below which a read first reserves [`READ_CHUNK`].
const READ_SPARE_MIN: usize = 512;
/// The CONNECT is read into a buffer of this size (grown only for a larger CONNECT): every
/// connection makes one, so it stays small.
const CONNECT_BUF: usize = 1024;
/// Messages encoded per wake-up of a connection before its socket is written again.
const RECV_BATCH: usize = 64;

/// Largest MQTT remaining length (MQTT 3.1.1 §2.2.3).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// [`Session::process_input`], unless the broker shuts down first.
async fn process_or_shutdown(
    session: &mut Session,
    shared: &Shared,
    inbuf: &mut BytesMut,
) -> Option<End> {
    tokio::select! {
        biased;
        _ = shared.cancel.cancelled() => Some(End::Shutdown),
        end = session.process_input(inbuf) => end,
    }
}

/// Drop the allocation of an empty input buffer: most clients are silent most of the time, and
/// an idle connection then holds no input buffer (a kept 8 KiB chunk per connection would be
/// most of an idle connection's cost).
pub(super) fn release_if_empty(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Longest a WebSocket close handshake is given at the end of a session.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// A client connection's transport, as the session uses it.
pub(super) trait Conn: Send {
    type Reader<'a>: ConnRead
    where
        Self: 'a;
    type Writer<'a>: ConnWrite
    where
        Self: 'a;

    /// Read and write halves usable concurrently (in one `select!`).
    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// End the connection politely (at most `linger`) before it is dropped.
    fn close(&mut self, linger: Duration) -> impl Future<Output = ()> + Send;
}

pub(super) trait ConnRead: Send {
    /// Wait for input and append it to `buf`. An empty `buf` is released before waiting and
    /// room is reserved only once input is there, so that an idle connection holds no input
    /// buffer (see [`release_if_empty`]). `Ok(0)`: the peer closed. Cancel-safe: nothing is lost
    /// when the future is dropped.
    fn read(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

pub(super) trait ConnWrite: Send {
    /// Write a prefix of `buf`; the number of bytes written. Cancel-safe provided that the next
    /// call passes the same bytes again (it may pass more after them).
    fn write(&mut self, buf: &[u8]) -> impl Future<Output = io::Result<usize>> + Send;

    /// Close the sending direction (TCP FIN, WebSocket close frame).
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Conn for TcpStream {
    type Reader<'a> = ReadHalf<'a>;
    type Writer<'a> = WriteHalf<'a>;

    fn halves(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        TcpStream::split(self)
    }

    /// Dropping the socket closes it.
    async fn close(&mut self, _linger: Duration) {}
}

impl ConnRead for ReadHalf<'_> {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // Wait for readability first and only then reserve the read buffer. Readiness may
            // be stale (`try_read_buf` leaves it set after a successful read), so a reserved
            // buffer that a `WouldBlock` left empty is released here too.
            release_if_empty(buf);
            self.readable().await?;
            if buf.capacity() - buf.len() < READ_SPARE_MIN {
                buf.reserve(READ_CHUNK);
            }
            match self.try_read_buf(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Ok(0) => return Ok(0),
                Ok(n) => {
                    quickack(self.as_ref());
                    return Ok(n);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl ConnWrite for WriteHalf<'_> {
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        AsyncWriteExt::write(self, buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        AsyncWriteExt::shutdown(self).await
    }
}

pub(super) async fn run(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let span = tracing::debug_span!(
        "mqtt",
        listener = %shared.config.name,
        %peer,
        client = tracing::field::Empty
    );
    async move {
        let handshaking = HandshakeGuard(&shared, peer.ip());
        // One deadline for the WebSocket upgrade and the CONNECT together.
        let deadline = Instant::now() + shared.config.limits.connect_timeout;
        if !shared.config.websocket {
            return connection(&shared, stream, handshaking, deadline).await;
        }
        // Boxed: inline, the WebSocket states would size every TCP connection's task.
        Box::pin(websocket(&shared, stream, handshaking, deadline)).await
    }
    .instrument(span)
    .await
}

/// The WebSocket upgrade (by `deadline`), then [`connection`] over it.
async fn websocket(
    shared: &Arc<Shared>,
    stream: TcpStream,
    handshaking: HandshakeGuard<'_>,
    deadline: Instant,
) {
    let upgraded = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        upgraded = tokio::time::timeout_at(
            deadline,
            super::ws::accept(stream, shared.config.limits.max_packet_bytes),
        ) => upgraded,
    };
    match upgraded {
        Ok(Ok(ws)) => connection(shared, ws, handshaking, deadline).await,
        Ok(Err(reason)) => tracing::debug!(%reason, "no WebSocket"),
        Err(_) => tracing::debug!(
            timeout = ?shared.config.limits.connect_timeout,
            "no WebSocket upgrade in time"
        ),
    }
}

/// The CONNECT (by `deadline`), then the session, on an established transport.
async fn connection<C: Conn>(
    shared: &Arc<Shared>,
    mut conn: C,
    handshaking: HandshakeGuard<'_>,
    deadline: Instant,
) {
    let admitted = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        admitted = handshake(shared, &mut conn, deadline) => admitted,
    };
    drop(handshaking);
    let Some((mut session, inbuf)) = admitted else {
        return;
    };
    tracing::Span::current().record("client", session.client_id.as_str());
    tracing::debug!("connected");
    match session.serve(&mut conn, inbuf).await {
        End::Shutdown => tracing::debug!("closed by shutdown"),
        End::Disconnect => tracing::debug!("client disconnected"),
        End::Abrupt(reason) => {
            tracing::debug!(%reason, "connection lost");
            session.publish_will().await;
        }
        End::Error(code, reason) => {
            tracing::info!(?code, %reason, "connection closed by the broker");
            session.farewell(&mut conn, code, &reason).await;
            session.publish_will().await;
        }
    }
    // An MQTT 5 session whose expiry the client set to 0 on DISCONNECT ends now.
    let discard = session.persist.is_some()
        && session.proto == Proto::V5
        && session.negotiated.session_expiry == 0;
    let client_id = discard.then(|| session.client_id.clone());
    session.park();
    // The slot and the client id are free from here on.
    drop(session);
    if let (Some(store), Some(client_id)) = (&shared.store, client_id) {
        let deadline = Instant::now() + shared.config.limits.connect_timeout;
        let unused = CancellationToken::new();
        let _ = store.discard(shared, &client_id, &unused, deadline).await;
    }
    // The connection closes only now: a client that sees the close knows the will, if any, is
    // on the bus.
    if !shared.cancel.is_cancelled() {
        conn.close(CLOSE_LINGER).await;
    }
    drop(conn);
}

/// How a session ended.
enum End {
    /// The broker is shutting down: close, publish nothing.
    Shutdown,
    /// The client sent DISCONNECT: its will is discarded.
    Disconnect,
    /// Anything else (lost connection, keepalive, protocol error, takeover): the will is
    /// published.
    Abrupt(String),
    /// Like `Abrupt`, but the broker tells an MQTT 5 client why with a DISCONNECT first
    /// (MQTT 5.0 §3.14; 3.1.1 clients are only closed).
    Error(DisconnectReasonCode, String),
}

/// A filter the client subscribed to.
pub(super) struct Granted {
    pub(super) filter: String,
    /// Granted QoS (0, 1 or 2).
    pub(super) qos: u8,
    /// Deliveries through this filter are checked with `Acl::may_receive`.
    pub(super) checked: bool,
    /// MQTT 5 "no local": the client's own messages are not delivered through this filter
    /// [MQTT-3.8.3-3].
    pub(super) no_local: bool,
}

/// The highest QoS granted among `filters` matching `topic` that may deliver it, if any.
pub(super) fn granted_qos(filters: &[Granted], acl: &Acl, topic: &str) -> Option<u8> {
    granted_qos_from(filters, acl, topic, false)
}

/// [`granted_qos`] of a message the client published itself when `own` (its "no local"
/// filters do not count).
fn granted_qos_from(filters: &[Granted], acl: &Acl, topic: &str, own: bool) -> Option<u8> {
    let mut receivable = None;
    let mut granted: Option<u8> = None;
    for g in filters {
        if own && g.no_local || !matches(&g.filter, topic) {
            continue;
        }
        if g.checked && !*receivable.get_or_insert_with(|| acl.may_receive(topic)) {
            continue;
        }
        granted = Some(granted.map_or(g.qos, |q| q.max(g.qos)));
    }
    granted
}

/// An outgoing QoS1/QoS2 message awaiting its acknowledgement.
struct Out {
    /// Its record in the session's disk queue (persistent sessions).
    record: Option<u64>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS1 PUBLISH sent, awaiting PUBACK.
    Ack,
    /// QoS2 PUBLISH sent, awaiting PUBREC.
    Rec,
    /// PUBREL sent, awaiting PUBCOMP.
    Comp,
}

/// The persistent session a connection holds.
struct Persist {
    stored: Arc<Stored>,
    /// Held until the connection ends; its content is in [`Session::held`] meanwhile.
    guard: tokio::sync::OwnedMutexGuard<Held>,
}

struct Session {
    shared: Arc<Shared>,
    client_id: String,
    proto: Proto,
    negotiated: Negotiated,
    /// Topic aliases the client set (MQTT 5.0 §3.3.2.3.4), at most `negotiated.alias_max`.
    aliases: HashMap<u16, String>,
    /// Boxed: MQTT 5 wills are large and most clients have none.
    will: Option<Box<LastWill>>,
    keepalive: Duration,
    /// Cancelled when a newer connection takes the client id over.
    takeover: CancellationToken,
    /// The client's router link (created at its first SUBSCRIBE), filters and incoming QoS2
    /// state: what a persistent session keeps across connections.
    held: Held,
    /// The persistent session, if the client asked for one and the listener keeps them.
    persist: Option<Persist>,
    /// Records of the persistent session may be waiting on disk: they go before the router
    /// queue is read again.
    stored_pending: bool,
    /// Outgoing QoS1/QoS2 publishes awaiting acknowledgement, by packet id.
    inflight: HashMap<u16, Out>,
    next_pkid: u16,
    /// Subscriber queues this client's QoS1 publishes filled: its socket is not read until they
    /// drain (or `max_publish_wait` passes).
    congested: Vec<Arc<Queue>>,
    /// When the client stops waiting for `congested`.
    congested_until: Instant,
    /// Encoded packets waiting for the socket.
    out: BytesMut,
    /// A message that may not be dropped, waiting for room in `out`.
    stash: Option<Message>,
    last_packet: Instant,
    _registration: Registration,
}

impl Session {
    async fn serve<C: Conn>(&mut self, conn: &mut C, mut inbuf: BytesMut) -> End {
        let shared = self.shared.clone();
        let limits = &shared.config.limits;
        let (mut rd, mut wr) = conn.halves();
        let idle_limit = self.keepalive.mul_f64(1.5);
        let keepalive = tokio::time::sleep(idle_limit);
        tokio::pin!(keepalive);
        // A client may send packets right behind its CONNECT.
        if let Some(end) = self.process_input(&mut inbuf).await {
            return end;
        }
        keepalive.as_mut().reset(self.last_packet + idle_limit);
        loop {
            if let Some(m) = self.stash.take() {
                self.deliver(m);
            }
            self.deliver_stored();
            if let Some(p) = &self.persist {
                // What this round queued or acknowledged is written before the socket is.
                p.stored.flush(&shared.stats);
            }
            let can_read = self.out.len() < limits.max_queued_bytes && self.congested.is_empty();
            // While the output buffer is full the queue is not read: it fills, and its bound
            // (backpressure on publishers, then counted drops) applies.
            let can_recv = self.held.sub.is_some()
                && self.stash.is_none()
                && !self.stored_pending
                && self.out.len() < limits.max_queued_bytes
                && self.inflight.len() < self.window();
            tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => return End::Shutdown,
                _ = self.takeover.cancelled() => {
                    // [MQTT-3.1.4-3]; DISCONNECT 0x8E for MQTT 5.
                    return End::Error(DisconnectReasonCode::SessionTakenOver, "taken over by a new connection with the same client id".into());
                }
                read = rd.read(&mut inbuf), if can_read => match read {
                    Ok(0) => return End::Abrupt("closed by the client without DISCONNECT".into()),
                    Err(e) => return End::Abrupt(format!("read: {e}")),
                    Ok(n) => {
                        shared.stats.counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        if let Some(end) = process_or_shutdown(self, &shared, &mut inbuf).await {
                            return end;
                        }
                        keepalive.as_mut().reset(self.last_packet + idle_limit);
                    }
                },
                written = wr.write(&self.out), if !self.out.is_empty() => match written {
                    Ok(0) => return End::Abrupt("socket closed".into()),
                    Ok(n) => {
                        shared.stats.counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                        self.out.advance(n);
                    }
                    Err(e) => return End::Abrupt(format!("write: {e}")),
                },
                message = next_message(self.held.sub.as_mut()), if can_recv => match message {
                    Some(m) => {
                        self.deliver(m);
                        // Encode what else is already queued, so that one write carries many
                        // packets (a fan-in subscriber would otherwise cost a syscall each).
                        self.deliver_queued(RECV_BATCH);
                    }
                    None => return End::Shutdown,
                },
                expired = wait_drained(&mut self.congested, self.congested_until), if !self.congested.is_empty() => {
                    if expired {
                        ListenerStats::bump(&shared.stats.counters.publish_wait_expired);
                        tracing::debug!(wait = ?limits.max_publish_wait, "a subscriber stayed congested; reading the publisher again");
                        for q in self.congested.drain(..) {
                            q.mark_stalled();
                        }
                    }
                    // Go on with what was already read.
                    if let Some(end) = process_or_shutdown(self, &shared, &mut inbuf).await {
                        return end;
                    }
                    keepalive.as_mut().reset(self.last_packet + idle_limit);
                },
                _ = &mut keepalive => {
                    // [MQTT-3.1.2-22]; DISCONNECT 0x8D for MQTT 5.
                    return End::Error(DisconnectReasonCode::KeepAliveTimeout, format!("no packet for {idle_limit:?} (keepalive)"));
                }
            }
        }
    }

    /// Handle the complete packets in `inbuf`, stopping early (the rest stays buffered) as soon
    /// as a publish congested a subscriber: a publisher overshoots a queue by one message at most.
    async fn process_input(&mut self, inbuf: &mut BytesMut) -> Option<End> {
        let max = self.shared.config.limits.max_packet_bytes;
        loop {
            if !self.congested.is_empty() {
                return None;
            }
            match codec::read(inbuf, self.proto, max) {
                Ok(packet) => {
                    self.last_packet = Instant::now();
                    // Only (UN)SUBSCRIBE waits: the rest is handled without holding a packet
                    // in the connection's future (MQTT 5 packets are large; an idle
                    // connection's task is sized by its largest state).
                    let end = match packet {
                        Packet::Subscribe(s) => Box::pin(self.on_subscribe(s)).await,
                        Packet::Unsubscribe(u) => Box::pin(self.on_unsubscribe(u)).await,
                        other => self.handle(other),
                    };
                    if end.is_some() {
                        return end;
                    }
                }
                Err(ReadError::Incomplete) => return None,
                // [MQTT-3.2.2-15] / §4.13: DISCONNECT 0x95 packet too large.
                Err(ReadError::TooLarge(n)) => {
                    return Some(End::Error(
                        DisconnectReasonCode::PacketTooLarge,
                        format!("packet of {n} bytes over max_packet_bytes ({max})"),
                    ))
                }
                // [MQTT-4.13.1-1]: DISCONNECT 0x81 malformed packet.
                Err(ReadError::Malformed(e)) => {
                    return Some(End::Error(
                        DisconnectReasonCode::MalformedPacket,
                        format!("bad packet: {e}"),
                    ))
                }
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish),
            Packet::PubAck(ack) => {
                if self
                    .inflight
                    .get(&ack.pkid)
                    .is_some_and(|o| o.stage == Stage::Ack)
                {
                    self.acknowledged(ack.pkid);
                }
                None
            }
            Packet::PubRel(rel) => {
                self.held.incoming_qos2.remove(&rel.pkid);
                self.write(Packet::PubComp(PubComp::new(rel.pkid, None)));
                None
            }
            Packet::PubRec(rec) => {
                if matches!(
                    rec.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                ) {
                    self.on_pubrec(rec.pkid);
                } else {
                    // A PUBREC with a reason code of 0x80 or more ends the exchange
                    // [MQTT-4.3.3-4]: no PUBREL, the packet id is free.
                    self.acknowledged(rec.pkid);
                }
                None
            }
            Packet::PubComp(comp) => {
                if self
                    .inflight
                    .get(&comp.pkid)
                    .is_some_and(|o| o.stage == Stage::Comp)
                {
                    self.acknowledged(comp.pkid);
                }
                None
            }
            Packet::PingReq(_) => {
                self.write(Packet::PingResp(p5::PingResp));
                None
            }
            Packet::Disconnect(d) => {
                // MQTT 5.0 §3.14.2.2.2: a session expiry interval of 0 in the DISCONNECT ends
                // a kept session with the connection.
                let expiry = d
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval);
                if expiry == Some(0) && self.persist.is_some() {
                    self.negotiated.session_expiry = 0;
                }
                match d.reason_code {
                    // [MQTT-3.14.4-3]: the will is discarded on a normal DISCONNECT only.
                    DisconnectReasonCode::NormalDisconnection => Some(End::Disconnect),
                    code => Some(End::Abrupt(format!("client DISCONNECT {code:?}"))),
                }
            }
            // [MQTT-3.1.0-2]: a second CONNECT is a protocol error.
            Packet::Connect(..) => Some(End::Error(
                DisconnectReasonCode::ProtocolError,
                "second CONNECT".into(),
            )),
            other => Some(End::Error(
                DisconnectReasonCode::ProtocolError,
                format!("unexpected packet from a client: {other:?}"),
            )),
        }
    }

    fn on_publish(&mut self, mut publish: Publish) -> Option<End> {
        let stats = &self.shared.stats.counters;
        ListenerStats::bump(&stats.messages_in);
        let mut properties = publish.properties.take();
        if let Some(alias) = properties.as_mut().and_then(|p| p.topic_alias.take()) {
            // [MQTT-3.3.2-8], [MQTT-3.3.2-9]: an alias of 0 or over the maximum the broker
            // sent is a protocol error, DISCONNECT 0x94.
            if alias == 0 || alias > self.negotiated.alias_max {
                return Some(End::Error(
                    DisconnectReasonCode::TopicAliasInvalid,
                    format!(
                        "topic alias {alias} out of range 1..={}",
                        self.negotiated.alias_max
                    ),
                ));
            }
            if publish.topic.is_empty() {
                match self.aliases.get(&alias) {
                    Some(topic) => publish.topic = Bytes::from(topic.clone()),
                    None => {
                        // [MQTT-3.3.4-?]: an alias never set is a protocol error.
                        return Some(End::Error(
                            DisconnectReasonCode::ProtocolError,
                            format!("topic alias {alias} used before it was set"),
                        ));
                    }
                }
            } else if let Ok(topic) = std::str::from_utf8(&publish.topic) {
                self.aliases.insert(alias, topic.to_string());
            }
        }
        let topic = std::str::from_utf8(&publish.topic).unwrap_or("");
        if !valid_topic(topic) {
            // MQTT 3.1.1 §3.3.2.1 and [MQTT-3.3.2-2]: a protocol violation; 0x90.
            return Some(End::Error(
                DisconnectReasonCode::TopicNameInvalid,
                format!("invalid topic name {:?}", publish.topic),
            ));
        }
        let allowed = self.shared.config.acl.may_publish(topic);
        if !allowed {
            ListenerStats::bump(&stats.publish_denied);
            if self.shared.denied_log.due() {
                tracing::warn!(topic, denied_total = stats.publish_denied.load(std::sync::atomic::Ordering::Relaxed), "publish refused by the ACL (at most one warning a minute per listener; the rest at debug)");
            } else {
                tracing::debug!(topic, "publish refused by the ACL");
            }
        }
        let pkid = publish.pkid;
        let carried = properties.and_then(message_properties);
        match publish.qos {
            QoS::AtMostOnce => {
                if allowed {
                    return self.publish(publish, carried);
                }
            }
            QoS::AtLeastOnce => {
                // MQTT 3.1.1 has no negative PUBACK: a refused publish is acknowledged and
                // dropped. MQTT 5 gets 0x87 not authorized [MQTT-3.4.2-1].
                if allowed {
                    if let Some(end) = self.publish(publish, carried) {
                        return Some(end);
                    }
                }
                let mut ack = PubAck::new(pkid, None);
                if !allowed {
                    ack.reason = PubAckReason::NotAuthorized;
                }
                self.write(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                let mut rec = PubRec::new(pkid, None);
                if !allowed {
                    // MQTT 5: PUBREC 0x87 ends the exchange; 3.1.1: acknowledged and dropped.
                    if self.proto == Proto::V5 {
                        rec.reason = PubRecReason::NotAuthorized;
                    } else {
                        self.held.incoming_qos2.insert(pkid);
                    }
                    self.write(Packet::PubRec(rec));
                    return None;
                }
                if !self.held.incoming_qos2.contains(&pkid)
                    && self.proto == Proto::V5
                    && self.held.incoming_qos2.len()
                        >= usize::from(self.shared.config.limits.max_inflight)
                {
                    // [MQTT-3.3.4-7], [MQTT-3.3.4-8]: more unacknowledged QoS2 messages than
                    // the receive maximum the broker sent: DISCONNECT 0x93.
                    return Some(End::Error(
                        DisconnectReasonCode::ReceiveMaximumExceeded,
                        "more QoS2 messages awaiting PUBREL than the receive maximum".into(),
                    ));
                }
                // Published on the first PUBLISH with this packet id, never again until PUBREL.
                if self.held.incoming_qos2.insert(pkid) {
                    if let Some(end) = self.publish(publish, carried) {
                        return Some(end);
                    }
                }
                self.write(Packet::PubRec(rec));
            }
        }
        None
    }

    fn publish(&mut self, p: Publish, properties: Option<Arc<MessageProperties>>) -> Option<End> {
        let own = self.held.sub.as_ref().map(Subscription::id);
        let topic = std::str::from_utf8(&p.topic).unwrap_or("");
        match self
            .shared
            .bus
            .publish_from(topic, p.payload, p.qos as u8, p.retain, own, properties)
        {
            Ok(congested) => {
                if self.congested.is_empty() && !congested.is_empty() {
                    ListenerStats::bump(&self.shared.stats.counters.backpressure_waits);
                    self.congested_until =
                        Instant::now() + self.shared.config.limits.max_publish_wait;
                }
                for q in congested {
                    if !self.congested.iter().any(|c| Arc::ptr_eq(c, &q)) {
                        self.congested.push(q);
                    }
                }
                None
            }
            Err(e) => Some(bus_end(e)),
        }
    }

    async fn on_subscribe(&mut self, subscribe: Subscribe) -> Option<End> {
        if subscribe
            .properties
            .as_ref()
            .is_some_and(|p| p.id.is_some())
        {
            // The CONNACK said subscription identifiers are not available [MQTT-3.2.2-?]:
            // DISCONNECT 0xA1.
            return Some(End::Error(
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
                "SUBSCRIBE with a subscription identifier".into(),
            ));
        }
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for requested in subscribe.filters {
            let filter = requested.path;
            let qos = requested.qos as u8;
            // Retain handling (MQTT 5.0 §3.8.3.1): 0 replays the retained messages on every
            // SUBSCRIBE, 1 only for a new filter [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11].
            let replay = match requested.retain_forward_rule {
                RetainForwardRule::OnEverySubscribe => Replay::Always,
                RetainForwardRule::OnNewSubscribe => Replay::IfNew,
                RetainForwardRule::Never => Replay::Never,
            };
            let granted = grant(
                &self.shared,
                &mut self.held,
                &filter,
                qos,
                replay,
                requested.nolocal,
            );
            let code = match granted {
                Ok(()) => SubscribeReasonCode::Success(requested.qos),
                Err(Refused::Shared) => {
                    ListenerStats::bump(&self.shared.stats.counters.subscribe_denied);
                    tracing::info!(%filter, "shared subscription refused (not supported)");
                    SubscribeReasonCode::SharedSubscriptionsNotSupported
                }
                Err(Refused::Invalid) => {
                    ListenerStats::bump(&self.shared.stats.counters.subscribe_denied);
                    tracing::info!(%filter, "invalid topic filter refused");
                    // [MQTT-3.8.3-?] 0x8F topic filter invalid (3.1.1: 0x80).
                    SubscribeReasonCode::TopicFilterInvalid
                }
                Err(Refused::Denied) => {
                    ListenerStats::bump(&self.shared.stats.counters.subscribe_denied);
                    tracing::debug!(%filter, "subscription refused");
                    SubscribeReasonCode::NotAuthorized
                }
                Err(Refused::Limit(why)) => {
                    ListenerStats::bump(&self.shared.stats.counters.subscribe_refused_limit);
                    if self.shared.bound_log.due() {
                        tracing::warn!(listener = %self.shared.config.name, client = %self.client_id, %filter, why, "subscription refused by a bound (warned once a minute; counted in iohub/state/broker)");
                    }
                    SubscribeReasonCode::QuotaExceeded
                }
                Err(Refused::Bus(e)) => return Some(bus_end(e)),
            };
            codes.push(code);
        }
        self.save_filters().await;
        self.write(Packet::SubAck(SubAck {
            pkid: subscribe.pkid,
            return_codes: codes,
            properties: None,
        }));
        None
    }

    /// A persistent session's filters are on disk before the SUBACK/UNSUBACK.
    async fn save_filters(&self) {
        if let Some(p) = &self.persist {
            p.stored.save(&self.client_id, &self.held.filters).await;
        }
    }

    async fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Option<End> {
        let held = &mut self.held;
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let Some(at) = held.filters.iter().position(|g| &g.filter == filter) else {
                // Unknown filter: nothing to do, but still acknowledged below (MQTT 5: 0x11).
                reasons.push(UnsubAckReason::NoSubscriptionExisted);
                continue;
            };
            reasons.push(UnsubAckReason::Success);
            let gone = held.filters.remove(at);
            held.filter_levels -= levels(&gone.filter);
            if let Some(sub) = &mut held.sub {
                if let Err(e) = sub.remove(filter).await {
                    return Some(bus_end(e));
                }
            }
        }
        self.save_filters().await;
        self.write(Packet::UnsubAck(UnsubAck {
            pkid: unsubscribe.pkid,
            reasons,
            properties: None,
        }));
        None
    }

    /// The inflight window and the output buffer have room for one more message.
    fn has_room(&self) -> bool {
        let limits = &self.shared.config.limits;
        self.stash.is_none()
            && self.out.len() < limits.max_queued_bytes
            && self.inflight.len() < self.window()
    }

    /// Outgoing QoS1/QoS2 messages that may be unacknowledged at once: the listener's window,
    /// and at most the client's receive maximum [MQTT-3.3.4-9].
    fn window(&self) -> usize {
        let limits = &self.shared.config.limits;
        usize::from(limits.max_inflight.min(self.negotiated.receive_max))
    }

    /// Deliver up to `max` messages already waiting in the subscription queue, while the
    /// output buffer and the inflight window have room.
    fn deliver_queued(&mut self, max: usize) {
        for _ in 0..max {
            if !self.has_room() {
                return;
            }
            match self.held.sub.as_mut().and_then(Subscription::try_recv) {
                Some(m) => self.deliver(m),
                None => return,
            }
        }
    }

    /// Send what the persistent session holds on disk (PUBRELs first, then messages, oldest
    /// first; those sent before again with DUP and, when it is free, their packet id), while the
    /// window has room; clears `stored_pending` once the disk has nothing more ready.
    fn deliver_stored(&mut self) {
        while self.stored_pending && self.has_room() {
            let Some(p) = &self.persist else {
                self.stored_pending = false;
                return;
            };
            let room = self.window() - self.inflight.len();
            let popped = p.stored.disk().pop(room.min(RECV_BATCH));
            if popped.is_empty() {
                self.stored_pending = false;
                return;
            }
            for r in popped {
                self.send_stored(r);
            }
        }
    }

    fn send_stored(&mut self, r: store::Popped) {
        let Some(item) = r.item else {
            if let Some(p) = &self.persist {
                p.stored.disk().ack(r.id);
            }
            return;
        };
        match item {
            Item::PubRel { pkid } => {
                self.inflight.insert(
                    pkid,
                    Out {
                        record: Some(r.id),
                        stage: Stage::Comp,
                    },
                );
                self.write(Packet::PubRel(PubRel::new(pkid, None)));
            }
            Item::Publish {
                topic,
                payload,
                qos,
                retain,
                pkid: stored_pkid,
            } => {
                let reuse =
                    r.redelivery && stored_pkid != 0 && !self.inflight.contains_key(&stored_pkid);
                let pkid = if reuse {
                    stored_pkid
                } else {
                    self.alloc_pkid()
                };
                let mut record = r.id;
                if qos == 2 && pkid != stored_pkid {
                    // A QoS2 message keeps one packet id until PUBREC: the record is rewritten
                    // with the one it is sent with.
                    let item = Item::Publish {
                        topic: topic.clone(),
                        payload: payload.clone(),
                        qos,
                        retain,
                        pkid,
                    };
                    if let Some(p) = &self.persist {
                        let mut disk = p.stored.disk();
                        disk.ack(r.id);
                        record = disk.append_popped(&item).unwrap_or(r.id);
                    }
                }
                let stage = if qos == 2 { Stage::Rec } else { Stage::Ack };
                self.inflight.insert(
                    pkid,
                    Out {
                        record: Some(record),
                        stage,
                    },
                );
                let publish = Publish {
                    dup: r.redelivery,
                    qos: qos_of(qos),
                    retain,
                    topic: Bytes::from(topic),
                    pkid,
                    payload,
                    properties: None,
                };
                if self.write(Packet::Publish(publish)) {
                    ListenerStats::bump(&self.shared.stats.counters.messages_out);
                } else {
                    // Too large for the client: never sendable, acknowledged in its place.
                    self.acknowledged(pkid);
                }
            }
        }
    }

    /// Queue a message from the bus for the client (or drop it; see the module docs).
    fn deliver(&mut self, msg: Message) {
        // No (longer a) matching filter: a message in flight across an UNSUBSCRIBE.
        let own = msg.publisher.is_some()
            && msg.publisher == self.held.sub.as_ref().map(Subscription::id);
        let Some(granted) =
            granted_qos_from(&self.held.filters, &self.shared.config.acl, &msg.topic, own)
        else {
            return;
        };
        if msg.topic.len() + msg.payload.len() + 4 > MAX_REMAINING_LENGTH {
            tracing::warn!(topic = %msg.topic, "message too large for MQTT, not delivered");
            return;
        }
        // [MQTT-3.3.2-5]: an expired message is not delivered; the rest carry the time left
        // [MQTT-3.3.2-6].
        let mut properties = None;
        if let Some(p) = &msg.properties {
            let left = match p.expires_at {
                Some(at) => {
                    let now = Instant::now();
                    if at <= now {
                        ListenerStats::bump(&self.shared.stats.counters.expired);
                        return;
                    }
                    Some(u32::try_from((at - now).as_secs().max(1)).unwrap_or(u32::MAX))
                }
                None => None,
            };
            if self.proto == Proto::V5 {
                properties = Some(publish_properties(p, left));
            }
        }
        let qos = msg.qos.min(granted);
        if self.out.len() >= self.shared.config.limits.max_queued_bytes {
            if qos == 0 && !msg.retain {
                ListenerStats::bump(&self.shared.stats.counters.dropped);
            } else {
                self.stash = Some(msg);
            }
            return;
        }
        let mut publish = Publish {
            dup: false,
            qos: qos_of(qos),
            retain: msg.retain,
            topic: Bytes::from(msg.topic),
            pkid: 0,
            payload: msg.payload,
            properties,
        };
        if let Some(max) = self.negotiated.max_packet {
            // [MQTT-3.1.2-25]: a packet larger than the client's maximum packet size is not
            // sent; it is dropped as if sent and counted.
            if publish.size() + 2 > max as usize {
                ListenerStats::bump(&self.shared.stats.counters.too_large);
                tracing::debug!(
                    size = publish.size(),
                    max,
                    "message over the client's maximum packet size dropped"
                );
                return;
            }
        }
        if qos > 0 {
            let pkid = self.alloc_pkid();
            publish.pkid = pkid;
            // A persistent session's message is on disk (written before the socket is) until
            // the client acknowledges it.
            let record = self.persist.as_ref().and_then(|p| {
                p.stored.disk().append_popped(&Item::Publish {
                    topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                    payload: publish.payload.clone(),
                    qos,
                    retain: publish.retain,
                    pkid,
                })
            });
            let stage = if qos == 2 { Stage::Rec } else { Stage::Ack };
            self.inflight.insert(pkid, Out { record, stage });
        }
        self.write(Packet::Publish(publish));
        ListenerStats::bump(&self.shared.stats.counters.messages_out);
    }

    /// The client acknowledged the message (or PUBREL) in flight under `pkid`: PUBACK of QoS1,
    /// PUBCOMP of QoS2.
    fn acknowledged(&mut self, pkid: u16) {
        let Some(out) = self.inflight.remove(&pkid) else {
            return;
        };
        if let (Some(p), Some(id)) = (&self.persist, out.record) {
            p.stored.disk().ack(id);
        }
    }

    /// PUBREC of an outgoing QoS2 message: from here the message is the client's; a persistent
    /// session keeps the PUBREL instead of the message. A PUBREC for a packet id awaiting
    /// PUBCOMP (a resent PUBREC) or unknown gets its PUBREL again.
    fn on_pubrec(&mut self, pkid: u16) {
        if let Some(out) = self.inflight.get_mut(&pkid) {
            if out.stage == Stage::Rec {
                if let Some(p) = &self.persist {
                    let mut disk = p.stored.disk();
                    let mark = disk.append_popped(&Item::PubRel { pkid });
                    if let Some(id) = out.record {
                        disk.ack(id);
                    }
                    out.record = mark;
                }
                out.stage = Stage::Comp;
            }
        }
        self.write(Packet::PubRel(PubRel::new(pkid, None)));
    }

    /// A packet id not in flight (the window is far smaller than the id space).
    fn alloc_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.inflight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// The connection ended: a persistent session gets back what it holds, its messages in
    /// flight ready again (sent again with DUP on reconnect), and a keeper while the client is
    /// away (see [`Store::park`]).
    fn park(&mut self) {
        let Some(Persist { stored, mut guard }) = self.persist.take() else {
            return;
        };
        {
            let mut disk = stored.disk();
            for (_, out) in self.inflight.drain() {
                if let Some(id) = out.record {
                    disk.nack(id);
                }
            }
        }
        *guard = std::mem::take(&mut self.held);
        if let Some(m) = self.stash.take() {
            stored.keep(&guard, &self.shared, m);
        }
        Store::park(
            &self.shared,
            &self.client_id,
            self._registration.id,
            stored,
            guard,
        );
    }

    /// Encode `packet` for the client; `false` when it was not (too large for the client's
    /// maximum packet size, or not encodable).
    fn write(&mut self, packet: Packet) -> bool {
        match codec::write(
            &packet,
            self.proto,
            &mut self.out,
            self.negotiated.max_packet,
        ) {
            Ok(()) => true,
            Err(WriteError::TooLarge) => {
                ListenerStats::bump(&self.shared.stats.counters.too_large);
                false
            }
            Err(WriteError::Codec(e)) => {
                tracing::warn!(error = %e, "could not encode a packet");
                false
            }
        }
    }

    /// Tell an MQTT 5 client why the broker closes its connection (a DISCONNECT with `code`),
    /// after what is already encoded for it, within [`CLOSE_LINGER`].
    async fn farewell<C: Conn>(&mut self, conn: &mut C, code: DisconnectReasonCode, why: &str) {
        if self.proto != Proto::V5 || self.shared.cancel.is_cancelled() {
            return;
        }
        if self.out.len() > self.shared.config.limits.max_queued_bytes {
            self.out.clear();
        }
        // Always with a reason string: rumqttc's codec writes a DISCONNECT without properties
        // with a remaining length one short (see `codec`).
        let mut reason: String = why.chars().take(100).collect();
        if reason.is_empty() {
            reason.push('-');
        }
        self.write(Packet::Disconnect(Disconnect {
            reason_code: code,
            properties: Some(p5::DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some(reason),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        }));
        let (_, mut wr) = conn.halves();
        let out = &mut self.out;
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while !out.is_empty() {
                match wr.write(out).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => out.advance(n),
                }
            }
        })
        .await;
    }

    async fn publish_will(&mut self) {
        let Some(will) = self.will.take() else { return };
        if self.shared.cancel.is_cancelled() {
            return;
        }
        let will = *will;
        let topic = String::from_utf8_lossy(&will.topic).into_owned();
        tracing::debug!(%topic, "publishing the will");
        let properties = will.properties.and_then(|p| {
            message_properties(PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: None,
                response_topic: p.response_topic,
                correlation_data: p.correlation_data,
                user_properties: p.user_properties,
                subscription_identifiers: Vec::new(),
                content_type: p.content_type,
            })
        });
        let bus = &self.shared.bus;
        if let Err(e) = bus.publish_from(
            &topic,
            will.message,
            will.qos as u8,
            will.retain,
            None,
            properties,
        ) {
            tracing::debug!(error = %e, "will not published");
        }
    }
}

/// Acknowledge the client's data at once instead of after the delayed-ACK timer (up to 40 ms on
/// Linux). A client without TCP_NODELAY (rumqttc's default, most small clients) holds its next
/// small packet until its previous one is acknowledged (Nagle), so a request/response exchange
/// would otherwise stall on every round trip. Linux resets the flag by itself, so it is set after
/// every read.
pub(super) fn quickack(stream: &TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_quickack(true) {
        tracing::trace!(error = %e, "TCP_QUICKACK");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

/// The next message of the client's link; never, while it has none.
async fn next_message(sub: Option<&mut Subscription>) -> Option<Message> {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

fn bus_end(e: BusClientError) -> End {
    match e {
        BusClientError::Closed => End::Shutdown,
        other => End::Abrupt(format!("bus: {other}")),
    }
}

/// Wait until every congested queue has drained to its low watermark; `true` when `deadline`
/// passed first. Cancel-safe (drained queues are removed as they drain).
async fn wait_drained(congested: &mut Vec<Arc<Queue>>, deadline: Instant) -> bool {
    let drain = async {
        while let Some(q) = congested.last() {
            q.wait_drained().await;
            congested.pop();
        }
    };
    tokio::time::timeout_at(deadline, drain).await.is_err()
}

/// The properties an MQTT 5 PUBLISH carries to subscribers, if it has any.
fn message_properties(p: PublishProperties) -> Option<Arc<MessageProperties>> {
    let carried = MessageProperties {
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
        expires_at: p
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    };
    (carried != MessageProperties::default()).then(|| Arc::new(carried))
}

/// The PUBLISH properties of a delivered message, `expiry` seconds left (MQTT 5.0 §3.3.2.3:
/// forwarded unaltered [MQTT-3.3.2-4], [MQTT-3.3.2-15], [MQTT-3.3.2-16], [MQTT-3.3.2-17],
/// [MQTT-3.3.2-18], [MQTT-3.3.2-20]).
fn publish_properties(p: &MessageProperties, expiry: Option<u32>) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: expiry,
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    }
}

/// The wire QoS of 0, 1 or 2.
fn qos_of(qos: u8) -> QoS {
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Grant `filter` at `qos` to the client holding `held` (a new filter or a re-grant), or say
/// why not. With `replay`, every matching retained message is queued (delivered with RETAIN=1)
/// ahead of live traffic, also on a re-subscribe; a restored session's filters come back
/// without.
fn grant(
    shared: &Shared,
    held: &mut Held,
    filter: &str,
    qos: u8,
    replay: Replay,
    no_local: bool,
) -> Result<(), Refused> {
    let acl = &shared.config.acl;
    let limits = &shared.config.limits;
    if let Some(rest) = filter.strip_prefix("$share/") {
        // [MQTT-4.8.2-1], [MQTT-4.8.2-2]: a share name of at least one character without
        // `+`, `#` or `/`, then `/` and a valid filter; else the filter is invalid (0x8F).
        let (group, shared) = rest.split_once('/').unwrap_or((rest, ""));
        if group.is_empty() || group.contains(['+', '#']) || !valid_filter(shared) {
            return Err(Refused::Invalid);
        }
        return Err(Refused::Shared);
    }
    if !valid_filter(filter) {
        return Err(Refused::Invalid);
    }
    // Of the `$` filters only `$SYS/...` is served (rumqttd dropped a link that subscribed to
    // any).
    let dollar = filter.starts_with('$') && !filter.starts_with("$SYS/");
    if dollar || !acl.may_subscribe(filter) {
        return Err(Refused::Denied);
    }
    if filter.len() > limits.max_filter_bytes {
        return Err(Refused::Limit("filter longer than max_filter_bytes"));
    }
    let known = held.filters.iter().position(|g| g.filter == filter);
    if known.is_none() && held.filters.len() >= limits.max_filters {
        return Err(Refused::Limit("connection holds max_filters filters"));
    }
    if known.is_none() && held.filter_levels + levels(filter) > limits.max_filter_levels {
        return Err(Refused::Limit("connection holds max_filter_levels levels"));
    }
    let checked = acl.needs_delivery_check(filter);
    let replay = match replay {
        Replay::Always => true,
        Replay::IfNew => known.is_none(),
        Replay::Never => false,
    };
    let sub = match &mut held.sub {
        Some(sub) => sub,
        None => {
            let drops = shared.stats.counters.queue_dropped.clone();
            let sub = shared
                .bus
                .open(
                    store::bounds(limits),
                    Some(shared.acl.clone()),
                    Some(drops),
                    true,
                )
                .map_err(Refused::Bus)?;
            held.sub.insert(sub)
        }
    };
    sub.add_granted(filter, qos, checked, replay)
        .map_err(|_| Refused::Limit("subscription tree full"))?;
    match known {
        Some(at) => {
            held.filters[at].qos = qos;
            held.filters[at].no_local = no_local;
        }
        None => {
            held.filter_levels += levels(filter);
            held.filters.push(Granted {
                filter: filter.to_string(),
                qos,
                checked,
                no_local,
            });
        }
    }
    Ok(())
}

/// Grant a restored persistent session's filter again (no retained replay).
pub(super) fn restore_filter(
    shared: &Shared,
    held: &mut Held,
    filter: &str,
    qos: u8,
    no_local: bool,
) -> Result<(), &'static str> {
    match grant(shared, held, filter, qos.min(2), Replay::Never, no_local) {
        Ok(()) => Ok(()),
        Err(Refused::Denied | Refused::Invalid | Refused::Shared) => {
            Err("refused by the ACL or invalid")
        }
        Err(Refused::Limit(why)) => Err(why),
        Err(Refused::Bus(_)) => Err("the broker is shutting down"),
    }
}

/// Levels of a filter (what it may add to the subscription tree).
fn levels(filter: &str) -> usize {
    filter.split('/').count()
}

/// When a SUBSCRIBE replays the retained messages its filter matches.
#[derive(Clone, Copy)]
enum Replay {
    Always,
    /// Only when the filter is new to the client.
    IfNew,
    Never,
}

/// Why a filter of a SUBSCRIBE was not granted.
enum Refused {
    /// Not a valid topic filter.
    Invalid,
    /// A shared subscription (`$share/...`), not offered.
    Shared,
    /// `$` (but `$SYS/`), or not allowed by the ACL.
    Denied,
    /// Past a bound (named).
    Limit(&'static str),
    Bus(BusClientError),
}

#[cfg(test)]
mod tests {
    use super::handshake::protocol_level;
    use super::*;

    #[test]
    fn protocol_level_is_read_from_any_connect() {
        let mut v4 = BytesMut::new();
        rumqttc::mqttbytes::v4::Packet::Connect(rumqttc::mqttbytes::v4::Connect::new("c"))
            .write(&mut v4, usize::MAX)
            .unwrap();
        assert_eq!(protocol_level(&v4), Some(4));
        // MQTT 3.1: "MQIsdp", level 3.
        let v31 = [
            0x10, 12, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
        ];
        assert_eq!(protocol_level(&v31), Some(3));
        // MQTT 5 with a two-byte remaining length.
        let mut v5 = vec![0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 5];
        v5.resize(3 + 128, 0);
        assert_eq!(protocol_level(&v5), Some(5));
        assert_eq!(protocol_level(&[0x10, 2, 0]), None);
    }
}
