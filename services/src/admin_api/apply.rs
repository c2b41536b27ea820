//! The listener: bind, serve the router, close. Closing (or dropping, when the service run ends
//! by an error) stops accepting, ends the event streams and waits a bounded time for requests in
//! flight.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::http::Api;
use super::plan::BIND_ADDR;
use super::routes;

/// How long a closing listener waits for requests in flight.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

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
    let app = routes::router(api).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).with_graceful_shutdown(shutdown).await {
            tracing::warn!(error = %e, "admin API listener ended");
        }
    });
    tracing::info!(port, "admin API listening");
    Ok(Listener {
        port,
        stop,
        task: Some(task),
    })
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
