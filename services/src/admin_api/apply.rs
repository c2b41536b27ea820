//! The listener: bind, serve the router, close. Closing (or dropping, when the service run ends
//! by an error) stops accepting, ends the event streams and waits a bounded time for requests in
//! flight.
//!
//! Bounds against a flood of slow or half-open clients (each holds a socket, and a box has a
//! limited number of open files shared with the MQTT listeners): at most [`MAX_CONNECTIONS`]
//! connections at once and [`MAX_CONNECTIONS_PER_ADDRESS`] from one client address (one more is
//! closed at accept, before a byte is read); request headers must arrive within
//! [`HEADER_TIMEOUT`] (also the longest an idle keep-alive connection is kept), and a request
//! body may pause at most [`BODY_IDLE_TIMEOUT`] between two reads; a failed accept (EMFILE)
//! backs off instead of spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::AcceptBackoff;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::http::Api;
use super::plan::BIND_ADDR;
use super::routes;

/// How long a closing listener waits for requests in flight.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections open at once from one client address.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 32;
/// Time a client has to send a request's headers (from the connection's start, or from the end
/// of its previous response).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause while a request body is read.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running HTTP listener.
pub struct Listener {
    pub port: u16,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Bind `0.0.0.0:port` and serve the API on it.
pub async fn bind(api: &Api, port: u16) -> std::io::Result<Listener> {
    let tcp = tokio::net::TcpListener::bind(SocketAddr::from((BIND_ADDR, port))).await?;
    let port = tcp.local_addr()?.port();
    let stop = CancellationToken::new();
    let mut api = api.clone();
    api.closing = stop.clone();
    let task = tokio::spawn(serve(tcp, api, stop.clone()));
    tracing::info!(port, "admin API listening");
    Ok(Listener {
        port,
        stop,
        task: Some(task),
    })
}

/// Connections open, in all and by client address.
#[derive(Default)]
struct Slots {
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One connection's place in [`Slots`], given back on drop.
struct Slot {
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Slots {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_ip) = &mut *open;
        let mine = by_ip.entry(ip).or_default();
        if *all >= MAX_CONNECTIONS || *mine >= MAX_CONNECTIONS_PER_ADDRESS {
            if *mine == 0 {
                by_ip.remove(&ip);
            }
            return None;
        }
        *all += 1;
        *mine += 1;
        Some(Slot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        let (all, by_ip) = &mut *open;
        *all -= 1;
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

async fn serve(tcp: tokio::net::TcpListener, api: Api, stop: CancellationToken) {
    let app = routes::router(api)
        .layer(RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
        .into_make_service_with_connect_info::<SocketAddr>();
    let slots = Arc::new(Slots::default());
    let connections = TaskTracker::new();
    let mut backoff = AcceptBackoff::default();
    let mut refused_warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = backoff.failed("admin_api", &e) => continue,
                }
            }
        };
        backoff.succeeded();
        let Some(slot) = slots.take(peer.ip()) else {
            let now = tokio::time::Instant::now();
            if refused_warned.is_none_or(|at| now >= at + Duration::from_secs(60)) {
                refused_warned = Some(now);
                tracing::warn!(%peer, max = MAX_CONNECTIONS, per_address = MAX_CONNECTIONS_PER_ADDRESS, "admin API connection limit reached; new connections are closed (warned once a minute)");
            }
            continue;
        };
        let service = {
            use tower::Service;
            let mut make = app.clone();
            match make.call(peer).await {
                Ok(s) => TowerToHyperService::new(s),
                Err(never) => match never {},
            }
        };
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
}

impl Listener {
    /// Stop accepting, end event streams, wait (bounded) for requests in flight.
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(CLOSE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        tracing::info!(port = self.port, "admin API closed");
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
