//! The feeder thread: owns every rumqttd `LinkTx` and performs the blocking calls
//! (`LinkBuilder::build`, link sends into the router's bounded channel) off the tokio workers.
//! Async code talks to it over a bounded flume channel with `send_async`, which gives
//! backpressure without blocking a worker.

use std::collections::HashMap;

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Disconnect, DisconnectReasonCode, Packet};
use rumqttd::Notification;
use tokio::sync::oneshot;

/// Opaque id of one in-process link.
pub(crate) type LinkKey = u64;

// `Packet` is the large, hot variant: boxing it would cost an allocation per publish.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Op {
    Connect {
        key: LinkKey,
        client_id: String,
        reply: oneshot::Sender<Result<LinkRx, String>>,
    },
    Packet {
        key: LinkKey,
        packet: Packet,
    },
    Drop {
        key: LinkKey,
    },
}

#[derive(Clone)]
pub(crate) struct Feeder {
    ops: flume::Sender<Op>,
}

/// Depth of the op queue; past it, publishers wait (backpressure).
const QUEUE: usize = 8192;

impl Feeder {
    /// `build` creates one link to the router; it captures the router's sender, whose event type
    /// rumqttd does not export.
    pub(crate) fn start<F>(build: F) -> std::io::Result<Feeder>
    where
        F: Fn(&str) -> Result<(LinkTx, LinkRx, Notification), String> + Send + 'static,
    {
        let (ops, rx) = flume::bounded::<Op>(QUEUE);
        std::thread::Builder::new()
            .name("iohub-feeder".into())
            .spawn(move || run(rx, build))?;
        Ok(Feeder { ops })
    }

    pub(crate) async fn send(&self, op: Op) -> Result<(), String> {
        self.ops
            .send_async(op)
            .await
            .map_err(|_| "broker is shut down".to_string())
    }

    /// For `Drop` impls: never blocks.
    pub(crate) fn try_send(&self, op: Op) {
        if let Err(flume::TrySendError::Full(op)) = self.ops.try_send(op) {
            // Rare: the queue is full. Hand the op to a thread that may block.
            let ops = self.ops.clone();
            let _ = std::thread::Builder::new()
                .name("iohub-feeder-drop".into())
                .spawn(move || {
                    let _ = ops.send(op);
                });
        }
    }
}

fn run<F>(rx: flume::Receiver<Op>, build: F)
where
    F: Fn(&str) -> Result<(LinkTx, LinkRx, Notification), String>,
{
    // LinkTx::send is an `async fn` that awaits nothing but a blocking channel send; a
    // current-thread runtime on this dedicated thread drives it.
    let rt = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "feeder runtime");
            return;
        }
    };
    let mut links: HashMap<LinkKey, LinkTx> = HashMap::new();
    while let Ok(op) = rx.recv() {
        match op {
            Op::Connect {
                key,
                client_id,
                reply,
            } => match build(&client_id) {
                Ok((tx, link_rx, _connack)) => {
                    links.insert(key, tx);
                    let _ = reply.send(Ok(link_rx));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Op::Packet { key, packet } => {
                if let Some(tx) = links.get_mut(&key) {
                    if let Err(e) = rt.block_on(tx.send(packet)) {
                        tracing::warn!(error = %e, "router refused a packet");
                    }
                }
            }
            Op::Drop { key } => {
                if let Some(mut tx) = links.remove(&key) {
                    // A local link is only released by the router on a DISCONNECT packet;
                    // dropping the handles alone would leak its subscriptions.
                    let disconnect = Disconnect {
                        reason_code: DisconnectReasonCode::NormalDisconnection,
                    };
                    let _ = rt.block_on(tx.send(Packet::Disconnect(disconnect, None)));
                }
            }
        }
    }
}
