//! The fleet topics of a remote (`IOHUBOS_BRIDGE_FLEET_PREFIX`, `_BOX_ID`, `_FLEET_COMMANDS`):
//!
//! - **commands**: a request (`{"id", "body"}`, the bus's [`Request`]) on
//!   `<prefix>/<box>/cmd/<service>/<verb>` or `<prefix>/all/cmd/<service>/<verb>` comes in through
//!   the link's in maps as `iohub/cmd/<service>/<verb>`; an allowed one is published on the bus
//!   with its reply addressed to `iohub/reply/bridge-fleet/<id>`, a refused one is answered there
//!   at once (`forbidden`). That reply topic is an out map to `<prefix>/<box>/reply/<id>`, so
//!   replies go through the disk queue like any bridged message.
//! - **state**: every `iohub/state/...` is mirrored, latest value only and retained, on
//!   `<prefix>/<box>/state/...` ([`Link::mirror`]).
//!
//! A request whose payload is not a request, or whose id is not one topic level, cannot be
//! answered: it is logged and dropped.

use ::bridge::{Inbound, Link};
use bus_schema::topic::filter;
use bus_schema::{BusError, ErrorCode, Reply, Request, ServiceName, Topic, Verb};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{Fleet, FLEET_CLIENT};
use crate::ctx::ServiceCtx;

/// Put the fleet's requests on the bus (or refuse them), until `cancel`.
pub async fn commands(
    ctx: ServiceCtx,
    fleet: Fleet,
    mut inbound: mpsc::Receiver<Inbound>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = inbound.recv() => m,
            () = cancel.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        // The in maps bring `iohub/cmd/<service>/<verb>` only.
        let Some((service, verb)) = msg
            .topic
            .rsplit_once('/')
            .and_then(|(head, verb)| Some((head.rsplit_once('/')?.1, verb)))
        else {
            continue;
        };
        let request: Request = match serde_json::from_slice(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(topic = %msg.topic, error = %e, "bridge: a fleet request that is not a request; dropped");
                continue;
            }
        };
        let Some(reply_to) = Topic::reply(FLEET_CLIENT, &request.id) else {
            tracing::warn!(topic = %msg.topic, id = %request.id, "bridge: a fleet request whose id is not one topic level; dropped");
            continue;
        };
        let request = Request {
            reply_to: Some(reply_to.to_string()),
            ..request
        };
        let target = match (service.parse::<ServiceName>(), verb.parse::<Verb>()) {
            (Ok(s), Ok(v)) if fleet.allows(service, verb) => Ok(Topic::Cmd(s, v)),
            _ => Err(BusError::new(
                ErrorCode::Forbidden,
                format!(
                    "the fleet may not run `{service}/{verb}` on this box (IOHUBOS_BRIDGE_FLEET_COMMANDS: {})",
                    fleet.commands.join(",")
                ),
            )),
        };
        let sent = match target {
            Ok(topic) => {
                tracing::info!(%topic, id = %request.id, "bridge: a fleet command");
                ctx.bus.publish_json(&topic, &request).await
            }
            Err(e) => {
                tracing::warn!(id = %request.id, error = %e.message, "bridge: a fleet command refused");
                ctx.bus
                    .reply(&request, &Reply::err(request.id.clone(), vec![e]))
                    .await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(id = %request.id, error = %e, "bridge: a fleet request not passed on");
        }
    }
}

/// Mirror every `iohub/state/...` on `<prefix>/<box_id>/state/...`, until `cancel`.
pub async fn mirror_states(
    ctx: ServiceCtx,
    link: Link,
    prefix: String,
    box_id: String,
    cancel: CancellationToken,
) {
    let mut sub = match ctx.bus.subscribe(&[filter::STATE]).await {
        Ok(sub) => sub,
        Err(e) => {
            tracing::error!(error = %e, "bridge: the state subscription failed");
            return;
        }
    };
    loop {
        let m = tokio::select! {
            m = sub.recv() => m,
            () = cancel.cancelled() => return,
        };
        let Some(m) = m else { return };
        if let Ok(Topic::State(service, item)) = m.topic.parse::<Topic>() {
            let item = item.map(|i| format!("/{i}")).unwrap_or_default();
            link.mirror(
                format!("{prefix}/{box_id}/state/{service}{item}"),
                m.payload.to_vec(),
            );
        }
    }
}
