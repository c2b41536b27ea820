//! MQTT over WebSocket (MQTT 3.1.1 §6): the server side of the HTTP upgrade, and the WebSocket
//! connection as a [`Conn`] byte stream for the session, which stays transport-agnostic.
//!
//! - [`accept`] runs in the connection's own task, under the deadline that also covers the
//!   CONNECT. A request that does not offer the `mqtt` subprotocol gets `400 Bad Request` and is
//!   not upgraded; otherwise the response selects `mqtt`. Any request path is accepted.
//! - Incoming binary messages are appended to the session's input buffer as they come: an MQTT
//!   packet may span messages and one message may hold several packets. A text message is a
//!   protocol error (close code 1003). A frame or message larger than the listener's largest
//!   packet (`max_packet_bytes` plus the 5 bytes of a fixed header) is refused by tungstenite
//!   (close code 1009). Pings are answered by tungstenite while the connection is read; pongs
//!   are ignored; a close frame reads as the end of the stream (a TCP close for the session).
//! - Outgoing bytes go out as binary messages of at most [`MAX_OUT_MESSAGE`] bytes, each flushed
//!   before the next is taken, so the session's bounded output buffer stays the only buffer.
//! - The stream is shared by the read and write halves through a mutex that is locked only inside
//!   a `poll` (never across an await), so reading and writing run concurrently in one task.

use std::future::poll_fn;
use std::io;
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::session::{quickack, Conn, ConnRead, ConnWrite};

/// The only WebSocket subprotocol spoken (MQTT 3.1.1 §6).
const SUBPROTOCOL: &str = "mqtt";

/// Largest binary message sent; larger output goes out in several (MQTT allows a packet to span
/// messages).
pub(super) const MAX_OUT_MESSAGE: usize = 64 * 1024;

/// tungstenite's input buffer, allocated for the life of the connection.
const READ_BUFFER: usize = 4 * 1024;

/// Bytes of an MQTT fixed header at most (type byte and a 4-byte remaining length).
const FIXED_HEADER_MAX: usize = 5;

/// An upgraded WebSocket connection.
pub(super) struct WsConn {
    inner: Mutex<Inner>,
    /// Bytes of the caller's buffer already sent as a message whose flush has not completed
    /// (a cancelled [`ConnWrite::write`]); reported by the next write.
    pending: usize,
}

struct Inner {
    ws: WebSocketStream<TcpStream>,
    /// Sent in the close frame when the connection is closed.
    close: CloseCode,
}

/// Perform the server side of the WebSocket handshake on `stream`. The caller bounds the time.
pub(super) async fn accept(stream: TcpStream, max_packet_bytes: usize) -> Result<WsConn, String> {
    let max = max_packet_bytes.saturating_add(FIXED_HEADER_MAX);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every message is written at once; the session flushes each before the next.
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, select_mqtt, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(response) => format!("upgrade refused: HTTP {}", response.status()),
            other => format!("WebSocket handshake: {other}"),
        })?;
    Ok(WsConn {
        inner: Mutex::new(Inner {
            ws,
            close: CloseCode::Normal,
        }),
        pending: 0,
    })
}

/// The upgrade goes through only with the `mqtt` subprotocol, which the response selects.
#[allow(clippy::result_large_err)] // the signature tungstenite's callback requires
fn select_mqtt(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        let mut refusal = ErrorResponse::new(Some(
            "MQTT over WebSocket needs the subprotocol `mqtt` (Sec-WebSocket-Protocol: mqtt)\n"
                .into(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// tungstenite's error as an I/O error (its own I/O errors unchanged).
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::ConnectionAborted, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

pub(super) struct WsReader<'a>(&'a Mutex<Inner>);

pub(super) struct WsWriter<'a> {
    inner: &'a Mutex<Inner>,
    pending: &'a mut usize,
}

impl Conn for WsConn {
    type Reader<'a> = WsReader<'a>;
    type Writer<'a> = WsWriter<'a>;

    fn halves(&mut self) -> (WsReader<'_>, WsWriter<'_>) {
        (
            WsReader(&self.inner),
            WsWriter {
                inner: &self.inner,
                pending: &mut self.pending,
            },
        )
    }

    async fn close(&mut self, linger: std::time::Duration) {
        let (_, mut wr) = self.halves();
        let _ = tokio::time::timeout(linger, wr.shutdown()).await;
    }
}

impl ConnRead for WsReader<'_> {
    async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        super::session::release_if_empty(buf);
        loop {
            let next = poll_fn(|cx| lock(self.0).ws.poll_next_unpin(cx)).await;
            let data = match next {
                Some(Ok(Message::Binary(data))) => data,
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Text(_))) => {
                    lock(self.0).close = CloseCode::Unsupported;
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text frame (MQTT travels in binary frames)",
                    ));
                }
                // Pings are answered by tungstenite (on this read or the next write).
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) => {
                    let code = match &e {
                        WsError::Capacity(_) => CloseCode::Size,
                        WsError::Protocol(_) | WsError::Utf8 => CloseCode::Protocol,
                        _ => CloseCode::Normal,
                    };
                    lock(self.0).close = code;
                    return Err(io_error(e));
                }
            };
            if data.is_empty() {
                continue;
            }
            quickack(lock(self.0).ws.get_ref());
            buf.extend_from_slice(&data);
            return Ok(data.len());
        }
    }
}

impl ConnWrite for WsWriter<'_> {
    /// Sends up to [`MAX_OUT_MESSAGE`] bytes of `buf` as one binary message and returns once it
    /// is flushed. Cancel-safe provided that the caller passes the same bytes again (the session
    /// only appends to its output buffer until a write returns).
    async fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if *self.pending == 0 {
            poll_fn(|cx| lock(self.inner).ws.poll_ready_unpin(cx))
                .await
                .map_err(io_error)?;
            let n = buf.len().min(MAX_OUT_MESSAGE);
            let message = Message::Binary(Bytes::copy_from_slice(&buf[..n]));
            lock(self.inner)
                .ws
                .start_send_unpin(message)
                .map_err(io_error)?;
            *self.pending = n;
        }
        poll_fn(|cx| lock(self.inner).ws.poll_flush_unpin(cx))
            .await
            .map_err(io_error)?;
        Ok(std::mem::take(self.pending))
    }

    /// Sends a close frame (with the code of the error that ended the connection, if any).
    async fn shutdown(&mut self) -> io::Result<()> {
        {
            let mut inner = lock(self.inner);
            let frame = CloseFrame {
                code: inner.close,
                reason: "".into(),
            };
            // Fails when the connection is already closing; the flush below still completes a
            // close started by the peer.
            let _ = inner.ws.start_send_unpin(Message::Close(Some(frame)));
        }
        poll_fn(|cx| lock(self.inner).ws.poll_close_unpin(cx))
            .await
            .map_err(io_error)
    }
}
