//! The Prometheus endpoint: a minimal HTTP/1.1 server answering `GET /metrics` with
//! [`super::state::prometheus`]. Each connection is its own task with a read deadline and a
//! request size cap, and at most [`MAX_CLIENTS`] are served at once, so an idle or slow client
//! can never block the accept loop or another client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::Bus;
use bus_schema::{BusError, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const MAX_CLIENTS: usize = 16;
const DEADLINE: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;

/// Bind `addr` and serve until `stop`; returns the bound address.
pub async fn serve(
    bus: Bus,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<SocketAddr, BusError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        BusError::new(
            ErrorCode::Unavailable,
            format!("metrics endpoint {addr}: {e}"),
        )
        .with_field("IOHUBD_METRICS_LISTEN")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let bus = bus.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(DEADLINE, answer(stream, &bus)).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

async fn answer(mut stream: TcpStream, bus: &Bus) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let ok = line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ");
    let (status, body) = if ok {
        (
            "200 OK",
            super::state::prometheus(&super::state::broker_facts(bus)),
        )
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
