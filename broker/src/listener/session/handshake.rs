//! The handshake of a connection: the CONNECT (MQTT 3.1.1 or 5.0) read under the deadline,
//! checked (credentials, client id, will, limits, MQTT 5 properties), the persistent session
//! attached or discarded, and the CONNACK.

use super::*;

/// Ends the handshake's count (the listener's and its address's) however the handshake ends.
pub(super) struct HandshakeGuard<'a>(pub(super) &'a Shared, pub(super) IpAddr);

impl Drop for HandshakeGuard<'_> {
    fn drop(&mut self) {
        self.0.end_handshake(self.1);
    }
}

/// Holds a connection slot and the client id registration while a session lives.
pub(super) struct Registration {
    shared: Arc<Shared>,
    client_id: String,
    pub(super) id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut clients = self
            .shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if clients
            .get(&self.client_id)
            .is_some_and(|(id, _)| *id == self.id)
        {
            clients.remove(&self.client_id);
        }
        drop(clients);
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .stats
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the first packet turned out to be.
enum First {
    Connect(Box<Hello>),
    /// A CONNECT with a protocol level other than 4 (MQTT 3.1.1) or 5 (MQTT 5.0).
    Version(u8),
    /// An MQTT 5 CONNECT that could not be decoded (e.g. malformed properties).
    Malformed(String),
}

/// A decoded CONNECT, in MQTT 5 terms whatever the client's version.
struct Hello {
    proto: Proto,
    connect: Connect,
    will: Option<LastWill>,
    login: Option<Login>,
}

/// The bounds a connection negotiated (MQTT 5; a 3.1.1 client gets the defaults).
#[derive(Clone, Copy)]
pub(super) struct Negotiated {
    /// The client's receive maximum: at most this many outgoing QoS>0 messages unacknowledged.
    pub(super) receive_max: u16,
    /// The client's maximum packet size.
    pub(super) max_packet: Option<u32>,
    /// Topic aliases the broker accepts from the client (1..=this).
    pub(super) alias_max: u16,
    /// The session expiry interval in force (seconds; MQTT 5).
    pub(super) session_expiry: u32,
}

impl Negotiated {
    fn new(props: Option<&p5::ConnectProperties>, proto: Proto, session_expiry: u32) -> Self {
        Negotiated {
            receive_max: props
                .and_then(|p| p.receive_maximum)
                .unwrap_or(u16::MAX)
                .max(1),
            max_packet: props.and_then(|p| p.max_packet_size),
            alias_max: if proto == Proto::V5 {
                TOPIC_ALIAS_MAX
            } else {
                0
            },
            session_expiry,
        }
    }
}

/// Topic aliases the broker accepts from an MQTT 5 client (MQTT 5.0 §3.2.2.3.8).
const TOPIC_ALIAS_MAX: u16 = 64;

/// Read the CONNECT, check it and answer with a CONNACK. `None` when the connection is refused
/// or lost.
pub(super) async fn handshake<C: Conn>(
    shared: &Arc<Shared>,
    conn: &mut C,
    deadline: Instant,
) -> Option<(Session, BytesMut)> {
    let limits = &shared.config.limits;
    let (mut rd, mut wr) = conn.halves();
    let mut inbuf = BytesMut::with_capacity(CONNECT_BUF);
    let first = tokio::time::timeout_at(
        deadline,
        read_connect(&mut rd, &mut inbuf, limits.max_packet_bytes),
    )
    .await;
    let hello = match first {
        Err(_) => {
            tracing::debug!(timeout = ?limits.connect_timeout, "no CONNECT in time");
            return None;
        }
        Ok(Err(reason)) => {
            tracing::debug!(%reason, "bad handshake");
            return None;
        }
        Ok(Ok(First::Version(level))) => {
            tracing::debug!(level, "unsupported protocol level");
            // [MQTT-3.1.2-2] (3.1.1 return code 1; a v5 client reads it as 0x01 too).
            let code = ConnectReturnCode::RefusedProtocolVersion;
            refuse(&mut rd, &mut wr, Proto::V4, code, limits.connect_timeout).await;
            return None;
        }
        Ok(Ok(First::Malformed(reason))) => {
            // [MQTT-4.13.1-1]: CONNACK 0x81, then close.
            tracing::info!(%reason, "malformed MQTT 5 CONNECT refused");
            let code = ConnectReturnCode::MalformedPacket;
            refuse(&mut rd, &mut wr, Proto::V5, code, limits.connect_timeout).await;
            return None;
        }
        // Kept boxed: the handshake's state is part of every connection's task.
        Ok(Ok(First::Connect(hello))) => hello,
    };
    let proto = hello.proto;
    let connect = &hello.connect;
    let props = connect.properties.as_ref();
    if let Err(code) = check_connect_properties(connect) {
        refuse(&mut rd, &mut wr, proto, code, limits.connect_timeout).await;
        return None;
    }
    let (client_id, registration, takeover) = match admit(
        shared,
        proto,
        connect,
        hello.will.as_ref(),
        hello.login.as_ref(),
    ) {
        Ok(admitted) => admitted,
        Err(code) => {
            refuse(&mut rd, &mut wr, proto, code, limits.connect_timeout).await;
            return None;
        }
    };
    let max = limits.keepalive_max;
    let asked = Duration::from_secs(u64::from(connect.keep_alive));
    let capped = asked.is_zero() || asked > max;
    let keepalive = if capped { max } else { asked };
    // MQTT 3.1.1: `clean_session = false` keeps the session for ever (until `max_sessions`
    // refuses more); MQTT 5: a session expiry interval > 0 keeps it (see the module docs for
    // what is not honoured), `clean_start` discards what was kept first [MQTT-3.1.2-4].
    let asked_expiry = props.and_then(|p| p.session_expiry_interval).unwrap_or(0);
    // A kept session is resumed by a clean start of 0 whatever the new interval, which applies
    // from this connection's end (MQTT 5.0 §3.1.2.11.2; 0: the session ends with it).
    let resumed = !connect.clean_start
        && shared
            .store
            .as_ref()
            .is_some_and(|s| s.has(&connect.client_id));
    let (keep, clean) = match proto {
        Proto::V4 => (!connect.clean_start, connect.clean_start),
        Proto::V5 => (asked_expiry > 0 || resumed, connect.clean_start),
    };
    // A persistent session is taken over (or discarded by a clean one) once the older
    // connection with this client id, told to close by `admit`, has let it go.
    let attached = match &shared.store {
        Some(store) if keep => {
            if clean {
                store
                    .discard(shared, &client_id, &takeover, deadline)
                    .await
                    .ok()?;
            }
            match store.attach(shared, &client_id, &takeover, deadline).await {
                Ok(a) => Some(a),
                Err(NotAttached::Gone) => return None,
                Err(NotAttached::Full | NotAttached::Failed) => {
                    ListenerStats::bump(&shared.stats.counters.refused_limit);
                    // 0x97 quota exceeded (3.1.1: 3 server unavailable).
                    let code = ConnectReturnCode::QuotaExceeded;
                    refuse(&mut rd, &mut wr, proto, code, limits.connect_timeout).await;
                    return None;
                }
            }
        }
        Some(store) => {
            store
                .discard(shared, &client_id, &takeover, deadline)
                .await
                .ok()?;
            None
        }
        None => None,
    };
    let present = attached.as_ref().is_some_and(|a| a.present);
    let expiry = if attached.is_some() { asked_expiry } else { 0 };
    let negotiated = Negotiated::new(props, proto, expiry);
    let mut session = Session {
        shared: shared.clone(),
        client_id,
        proto,
        negotiated,
        aliases: HashMap::new(),
        will: hello.will.clone().map(Box::new),
        keepalive,
        takeover,
        held: Held::default(),
        persist: None,
        stored_pending: false,
        inflight: HashMap::new(),
        next_pkid: 0,
        congested: Vec::new(),
        congested_until: Instant::now(),
        out: BytesMut::new(),
        stash: None,
        last_packet: Instant::now(),
        _registration: registration,
    };
    if let Some(Attached {
        stored, mut guard, ..
    }) = attached
    {
        session.held = std::mem::take(&mut *guard);
        session.stored_pending = true;
        session.persist = Some(Persist { stored, guard });
    }
    let properties = (proto == Proto::V5).then(|| {
        let mut p = connack_properties(limits);
        // [MQTT-3.2.2-16]: the identifier the broker assigned to an empty one.
        if connect.client_id.is_empty() {
            p.assigned_client_identifier = Some(session.client_id.clone());
        }
        // [MQTT-3.2.2-21]: the keep alive the client must use instead of its own.
        if capped {
            p.server_keep_alive = Some(u16::try_from(max.as_secs()).unwrap_or(u16::MAX));
        }
        // Without a store, or when refusing one, the session ends with the connection.
        if asked_expiry != session.negotiated.session_expiry {
            p.session_expiry_interval = Some(session.negotiated.session_expiry);
        }
        p
    });
    session.write(Packet::ConnAck(ConnAck {
        session_present: present,
        code: ConnectReturnCode::Success,
        properties,
    }));
    Some((session, inbuf))
}

/// MQTT 5 CONNECT properties the broker refuses.
fn check_connect_properties(connect: &Connect) -> Result<(), ConnectReturnCode> {
    let Some(p) = &connect.properties else {
        return Ok(());
    };
    if p.authentication_method.is_some() {
        // No enhanced authentication (MQTT 5.0 §4.12): [MQTT-4.12.0-1] 0x8C.
        tracing::info!(client = %connect.client_id, "CONNECT with an authentication method refused");
        return Err(ConnectReturnCode::BadAuthenticationMethod);
    }
    if p.receive_maximum == Some(0) || p.max_packet_size == Some(0) {
        // MQTT 5.0 §3.1.2.11.3 and §3.1.2.11.4: a value of 0 is a protocol error (0x82).
        tracing::info!(client = %connect.client_id, "CONNECT with receive maximum or maximum packet size 0 refused");
        return Err(ConnectReturnCode::ProtocolError);
    }
    Ok(())
}

/// What the broker tells an MQTT 5 client in every CONNACK (MQTT 5.0 §3.2.2.3).
fn connack_properties(limits: &crate::listener::ListenerLimits) -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: None,
        // Incoming QoS2 messages awaiting PUBREL (QoS1 is acknowledged as it is read).
        receive_max: Some(limits.max_inflight),
        max_qos: None,
        retain_available: None,
        max_packet_size: Some(u32::try_from(limits.max_packet_bytes).unwrap_or(u32::MAX)),
        assigned_client_identifier: None,
        topic_alias_max: Some(TOPIC_ALIAS_MAX),
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

async fn read_connect(
    rd: &mut impl ConnRead,
    buf: &mut BytesMut,
    max_packet_bytes: usize,
) -> Result<First, String> {
    loop {
        match mqttbytes4::check(buf.iter(), max_packet_bytes) {
            Ok(_) => break,
            Err(mqttbytes4::Error::InsufficientBytes(_)) => {
                if rd.read(buf).await.map_err(|e| format!("read: {e}"))? == 0 {
                    return Err("closed before CONNECT".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    if buf[0] >> 4 != 1 {
        return Err("the first packet is not a CONNECT".into());
    }
    let proto = match protocol_level(buf) {
        Some(4) => Proto::V4,
        Some(5) => Proto::V5,
        Some(level) => return Ok(First::Version(level)),
        None => return Err("malformed CONNECT".into()),
    };
    match codec::read(buf, proto, max_packet_bytes) {
        Ok(Packet::Connect(connect, will, login)) => Ok(First::Connect(Box::new(Hello {
            proto,
            connect,
            will,
            login,
        }))),
        Ok(other) => Err(format!("unexpected first packet {other:?}")),
        Err(ReadError::Malformed(e)) if proto == Proto::V5 => Ok(First::Malformed(e)),
        Err(e) => Err(format!("CONNECT: {e:?}")),
    }
}

/// The protocol level byte of a complete CONNECT frame: after the fixed header and the protocol
/// name. rumqttc's decoder would misread an MQTT 5 CONNECT (properties) instead of refusing it.
pub(super) fn protocol_level(frame: &[u8]) -> Option<u8> {
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let name_len = usize::from(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]));
    frame.get(i + 2 + name_len).copied()
}

/// Decide on a CONNECT: credentials, client id, will topic, connection limit. On success the
/// client holds a connection slot and owns its client id (an older connection with the same id
/// is told to close).
fn admit(
    shared: &Arc<Shared>,
    proto: Proto,
    connect: &Connect,
    will: Option<&LastWill>,
    login: Option<&Login>,
) -> Result<(String, Registration, CancellationToken), ConnectReturnCode> {
    let stats = &shared.stats.counters;
    let auth = &shared.config.auth;
    match (login, &auth.credentials) {
        (None, _) if auth.anonymous => {}
        (None, _) => {
            ListenerStats::bump(&stats.refused_auth);
            tracing::info!(client = %connect.client_id, "CONNECT without credentials refused");
            return Err(ConnectReturnCode::NotAuthorized);
        }
        // No password file: any login is accepted.
        (Some(_), None) => {}
        (Some(login), Some(credentials)) => {
            // Both compared, always: no early exit on the username.
            let user = secret::matches(credentials.username.as_bytes(), login.username.as_bytes());
            let pass = secret::matches(credentials.password.as_bytes(), login.password.as_bytes());
            if !(user & pass) {
                ListenerStats::bump(&stats.refused_auth);
                tracing::info!(client = %connect.client_id, "CONNECT with bad credentials refused");
                return Err(ConnectReturnCode::BadUserNamePassword);
            }
        }
    }
    if connect.client_id.is_empty() && !connect.clean_start && proto == Proto::V4 {
        // MQTT 3.1.1 §3.1.3.1: an empty client id needs a clean session [MQTT-3.1.3-8]. MQTT 5
        // assigns one whatever the clean start [MQTT-3.1.3-6].
        return Err(ConnectReturnCode::BadClientId);
    }
    if let Some(will) = will {
        let topic = std::str::from_utf8(&will.topic).unwrap_or("");
        if !valid_topic(topic) {
            tracing::info!(client = %connect.client_id, ?topic, "invalid will topic refused");
            // [MQTT-3.1.3-11] (3.1.1: 5 not authorized).
            return Err(ConnectReturnCode::TopicNameInvalid);
        }
        if !shared.config.acl.may_publish(topic) {
            ListenerStats::bump(&stats.refused_auth);
            tracing::info!(client = %connect.client_id, topic, "will topic refused");
            return Err(ConnectReturnCode::NotAuthorized);
        }
    }
    let client_id = if connect.client_id.is_empty() {
        format!("iohub-{:016x}", rand::random::<u64>())
    } else {
        connect.client_id.clone()
    };
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let takeover = CancellationToken::new();
    let max = shared.config.limits.max_connections;
    {
        let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        // A client reconnecting while its old (maybe half-open) connection still counts is
        // not refused by the limit: the old one is closed below.
        let reconnect = clients.contains_key(&client_id);
        let slot = shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max || reconnect).then_some(n + 1)
            });
        if slot.is_err() {
            ListenerStats::bump(&stats.refused_limit);
            tracing::warn!(max, "connection limit reached");
            // 0x97 quota exceeded (3.1.1: 3 server unavailable).
            return Err(ConnectReturnCode::QuotaExceeded);
        }
        if let Some((_, previous)) = clients.insert(client_id.clone(), (id, takeover.clone())) {
            // MQTT 3.1.1 §3.1.4: the older connection with this client id is closed.
            previous.cancel();
        }
    }
    ListenerStats::bump(&stats.connections);
    ListenerStats::bump(&stats.connections_total);
    let registration = Registration {
        shared: shared.clone(),
        client_id: client_id.clone(),
        id,
    };
    Ok((client_id, registration, takeover))
}

/// Answer a refused CONNECT and close. The socket is half-closed after the CONNACK and drained
/// until the client closes (at most `linger`), so that unread input does not turn the close into
/// a reset that could discard the CONNACK before the client reads it.
async fn refuse(
    rd: &mut impl ConnRead,
    wr: &mut impl ConnWrite,
    proto: Proto,
    code: ConnectReturnCode,
    linger: Duration,
) {
    let mut buf = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: None,
    });
    if codec::write(&connack, proto, &mut buf, None).is_err() {
        return;
    }
    let _ = tokio::time::timeout(linger, async {
        while !buf.is_empty() {
            match wr.write(&buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf.advance(n),
            }
        }
        wr.shutdown().await?;
        let mut sink = BytesMut::new();
        while rd.read(&mut sink).await? > 0 {
            sink.clear();
        }
        Ok::<(), io::Error>(())
    })
    .await;
}
