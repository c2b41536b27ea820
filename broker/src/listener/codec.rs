//! The wire format of one connection, chosen by its CONNECT: MQTT 3.1.1 (protocol level 4) with
//! rumqttc's `mqttbytes::v4` codec or MQTT 5.0 (level 5) with rumqttc's `v5::mqttbytes` codec.
//! The session works with the MQTT 5 packet types only: a 3.1.1 client's packets are turned
//! into them as they are read (no properties, every reason a success) and the session's packets
//! back into 3.1.1 ones as they are written (properties and negative reason codes dropped, as
//! 3.1.1 has none; a failed SUBSCRIBE filter is 0x80; the server sends no DISCONNECT).
//!
//! Codec defects worked around here (rumqttc 0.25.1, `v5::mqttbytes`), see ARCHITECTURE.md:
//! - `Packet::read` refuses every packet of remaining length 0 but PINGREQ/PINGRESP, while a
//!   DISCONNECT of remaining length 0 is the normal one (MQTT 5.0 §3.14.2.1): it is read here.
//! - `Disconnect::write` without properties writes the reason code and a property length of 0
//!   under a remaining length of 1 (one byte short), and with empty properties writes a normal
//!   DISCONNECT whatever the reason code: the broker's DISCONNECTs always carry a reason string
//!   (`session::Session::farewell`).

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::mqttbytes::{self as mqttbytes4, v4};
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, DisconnectReasonCode, Filter, LastWill, Login,
    Packet, PingReq, PubAck, PubComp, PubRec, PubRel, Publish, RetainForwardRule, Subscribe,
    SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::v5::mqttbytes::{self, QoS};

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.0.
    V5,
}

/// Why no packet could be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// More bytes are needed.
    Incomplete,
    /// The packet is larger than the broker's maximum packet size.
    TooLarge(usize),
    /// Not a valid packet (malformed, bad properties, a server-only packet).
    Malformed(String),
}

/// Read the next complete packet of `buf` (removed from it), at most `max` bytes of remaining
/// length.
pub(super) fn read(buf: &mut BytesMut, proto: Proto, max: usize) -> Result<Packet, ReadError> {
    match proto {
        Proto::V5 => read_v5(buf, max),
        Proto::V4 => read_v4(buf, max),
    }
}

fn read_v5(buf: &mut BytesMut, max: usize) -> Result<Packet, ReadError> {
    let max32 = u32::try_from(max).unwrap_or(u32::MAX);
    match mqttbytes::v5::check(buf.iter(), Some(max32)) {
        Ok(header) => {
            // A DISCONNECT of remaining length 0 (see the module docs).
            if header.frame_length() == 2 && buf[0] == 0xE0 {
                buf.advance(2);
                return Ok(Packet::Disconnect(Disconnect::new(
                    DisconnectReasonCode::NormalDisconnection,
                )));
            }
        }
        Err(mqttbytes::Error::InsufficientBytes(_)) => return Err(ReadError::Incomplete),
        Err(mqttbytes::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
            return Err(ReadError::TooLarge(pkt_size))
        }
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    }
    match Packet::read(buf, Some(max32)) {
        Ok(p) => Ok(p),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Err(ReadError::Incomplete),
        Err(e) => Err(ReadError::Malformed(e.to_string())),
    }
}

fn read_v4(buf: &mut BytesMut, max: usize) -> Result<Packet, ReadError> {
    let packet = match v4::Packet::read(buf, max) {
        Ok(p) => p,
        Err(mqttbytes4::Error::InsufficientBytes(_)) => return Err(ReadError::Incomplete),
        Err(mqttbytes4::Error::PayloadSizeLimitExceeded(n)) => return Err(ReadError::TooLarge(n)),
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    };
    Ok(match packet {
        v4::Packet::Connect(c) => {
            let (connect, will, login) = from_v4_connect(c);
            Packet::Connect(connect, will, login)
        }
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos5(p.qos),
            retain: p.retain,
            topic: Bytes::from(p.topic),
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid, None)),
        v4::Packet::PubRec(a) => Packet::PubRec(PubRec::new(a.pkid, None)),
        v4::Packet::PubRel(a) => Packet::PubRel(PubRel::new(a.pkid, None)),
        v4::Packet::PubComp(a) => Packet::PubComp(PubComp::new(a.pkid, None)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    path: f.path,
                    qos: qos5(f.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(PingReq),
        v4::Packet::Disconnect => {
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
        }
        other => {
            return Err(ReadError::Malformed(format!(
                "unexpected packet from a client: {other:?}"
            )))
        }
    })
}

/// A 3.1.1 CONNECT in MQTT 5 terms: `clean_session` is `clean_start` and, without a session
/// expiry interval, the session store maps `clean_session = false` onto a session that never
/// expires (see `session::handshake`).
pub(super) fn from_v4_connect(c: v4::Connect) -> (Connect, Option<LastWill>, Option<Login>) {
    let will = c.last_will.map(|w| LastWill {
        topic: Bytes::from(w.topic),
        message: w.message,
        qos: qos5(w.qos),
        retain: w.retain,
        properties: None,
    });
    let login = c.login.map(|l| Login {
        username: l.username,
        password: l.password,
    });
    let connect = Connect {
        keep_alive: c.keep_alive,
        client_id: c.client_id,
        clean_start: c.clean_session,
        properties: None,
    };
    (connect, will, login)
}

/// Why a packet was not written.
#[derive(Debug)]
pub(super) enum WriteError {
    /// Larger than the client's maximum packet size (MQTT 5): not sent.
    TooLarge,
    Codec(String),
}

/// Encode `packet` at the end of `out` for a client of `proto` whose maximum packet size is
/// `client_max` (MQTT 5). Nothing is written on error. A packet 3.1.1 has no equivalent for (a
/// server DISCONNECT, AUTH) writes nothing.
pub(super) fn write(
    packet: &Packet,
    proto: Proto,
    out: &mut BytesMut,
    client_max: Option<u32>,
) -> Result<(), WriteError> {
    match proto {
        Proto::V5 => match packet.write(out, client_max) {
            Ok(_) => Ok(()),
            Err(mqttbytes::Error::OutgoingPacketTooLarge { .. }) => Err(WriteError::TooLarge),
            Err(e) => Err(WriteError::Codec(e.to_string())),
        },
        Proto::V4 => {
            let Some(p) = to_v4(packet) else {
                return Ok(());
            };
            p.write(out, usize::MAX)
                .map(|_| ())
                .map_err(|e| WriteError::Codec(e.to_string()))
        }
    }
}

fn to_v4(packet: &Packet) -> Option<v4::Packet> {
    Some(match packet {
        Packet::ConnAck(ConnAck {
            session_present,
            code,
            ..
        }) => v4::Packet::ConnAck(v4::ConnAck::new(connack_code_v4(*code), *session_present)),
        Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: qos4(p.qos),
            retain: p.retain,
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck::new(a.pkid)),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec::new(a.pkid)),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel::new(a.pkid)),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp::new(a.pkid)),
        Packet::SubAck(a) => v4::Packet::SubAck(v4::SubAck::new(
            a.pkid,
            a.return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => v4::SubscribeReasonCode::Success(qos4(*q)),
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        )),
        Packet::UnsubAck(UnsubAck { pkid, .. }) => v4::Packet::UnsubAck(v4::UnsubAck::new(*pkid)),
        Packet::PingResp(_) => v4::Packet::PingResp,
        _ => return None,
    })
}

/// The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 reason code (MQTT 5.0 §3.2.2.2 and
/// 3.1.1 §3.2.2.3).
fn connack_code_v4(code: ConnectReturnCode) -> v4::ConnectReturnCode {
    use ConnectReturnCode as C;
    match code {
        C::Success => v4::ConnectReturnCode::Success,
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
            v4::ConnectReturnCode::RefusedProtocolVersion
        }
        C::BadClientId | C::ClientIdentifierNotValid => v4::ConnectReturnCode::BadClientId,
        C::BadUserNamePassword => v4::ConnectReturnCode::BadUserNamePassword,
        C::NotAuthorized | C::Banned | C::TopicNameInvalid => v4::ConnectReturnCode::NotAuthorized,
        _ => v4::ConnectReturnCode::ServiceUnavailable,
    }
}

pub(super) fn qos5(q: mqttbytes4::QoS) -> QoS {
    match q {
        mqttbytes4::QoS::AtMostOnce => QoS::AtMostOnce,
        mqttbytes4::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mqttbytes4::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos4(q: QoS) -> mqttbytes4::QoS {
    match q {
        QoS::AtMostOnce => mqttbytes4::QoS::AtMostOnce,
        QoS::AtLeastOnce => mqttbytes4::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mqttbytes4::QoS::ExactlyOnce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v5_disconnect_without_reason_code_is_read() {
        let mut buf = BytesMut::from(&[0xE0u8, 0x00, 0xC0, 0x00][..]);
        assert!(matches!(
            read(&mut buf, Proto::V5, 1024),
            Ok(Packet::Disconnect(d)) if d.reason_code == DisconnectReasonCode::NormalDisconnection
        ));
        assert!(matches!(
            read(&mut buf, Proto::V5, 1024),
            Ok(Packet::PingReq(_))
        ));
        assert!(matches!(
            read(&mut buf, Proto::V5, 1024),
            Err(ReadError::Incomplete)
        ));
    }

    #[test]
    fn a_packet_over_the_maximum_is_too_large_in_both_versions() {
        for proto in [Proto::V4, Proto::V5] {
            let mut buf = BytesMut::from(&[0x30u8, 0x7F][..]);
            assert!(matches!(
                read(&mut buf, proto, 100),
                Err(ReadError::TooLarge(127))
            ));
        }
    }

    #[test]
    fn v4_packets_come_back_as_v4() {
        let mut out = BytesMut::new();
        let mut publish = Publish::new("a/b", QoS::AtLeastOnce, "x", None);
        publish.pkid = 7;
        write(&Packet::Publish(publish), Proto::V4, &mut out, None).unwrap();
        let back = v4::Packet::read(&mut out, 1024).unwrap();
        assert!(
            matches!(back, v4::Packet::Publish(p) if p.topic == "a/b" && &p.payload[..] == b"x")
        );
        // A server DISCONNECT does not exist in 3.1.1.
        let d = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::ProtocolError));
        write(&d, Proto::V4, &mut out, None).unwrap();
        assert!(out.is_empty());
    }
}
