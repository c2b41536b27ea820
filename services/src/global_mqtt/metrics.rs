//! The Prometheus endpoint: `GET /metrics` (and `GET /`) answered by an axum router with
//! [`super::state::prometheus`]. Connections are served one task each through hyper, with a
//! deadline per connection and at most [`MAX_CLIENTS`] at once (one more is closed at accept),
//! so an idle or slow client can never block the accept loop or another client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use broker::Bus;
use bus_schema::{BusError, ErrorCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const MAX_CLIENTS: usize = 16;
/// How long one connection may take, request and answer.
const DEADLINE: Duration = Duration::from_secs(5);

async fn metrics(State(bus): State<Bus>) -> impl IntoResponse {
    let body = super::state::prometheus(&super::state::broker_facts(&bus));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

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
        .with_field("metrics_listen")
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| BusError::new(ErrorCode::Io, e.to_string()))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(metrics))
        .with_state(bus);
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
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(DEADLINE, conn).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}
