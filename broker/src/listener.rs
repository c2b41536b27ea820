//! MQTT front end (being written).
use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

use crate::{BrokerError, Bus};

/// Username/password of the control listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlCredentials {
    pub username: String,
    pub password: String,
}

/// One TCP listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    pub credentials: ControlCredentials,
}

pub(crate) async fn spawn(
    _tasks: &tokio_util::task::TaskTracker,
    _bus: Bus,
    config: ListenerConfig,
    _cancel: CancellationToken,
) -> Result<SocketAddr, BrokerError> {
    Ok(config.addr)
}
