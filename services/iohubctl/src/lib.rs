//! The client side of `iohubctl`: an MQTT client of the control listener, found from the root's
//! discovery file ([`ControlFile`]). Everything goes through the bus; `iohubctl` never writes
//! config files. This crate speaks only MQTT (bus-schema, rumqttc, tokio): it links none of the
//! daemon's system crates (`tests/tests/tidy.rs` checks its manifest).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bus_schema::{topic, Reply, Request, ServiceName, Topic, Verb};
use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use bus_schema::control::ControlFile;

/// Why a `iohubctl` operation failed; the message is shown to the user.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Discovery(String),
    #[error("cannot reach iohubd at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to iohubd lost: {0}")]
    Lost(String),
    #[error("no answer from the {0} service within {1:?} (is it running? see `iohubctl status`)")]
    Timeout(String, Duration),
    #[error("bad answer on {0}: {1}")]
    BadAnswer(String, String),
}

/// Read the discovery file of a root.
pub fn read_control_file(root: &Path) -> Result<ControlFile, String> {
    let path = ControlFile::path(root);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (is iohubd running with --root {}?)",
            path.display(),
            root.display()
        )
    })?;
    ControlFile::parse(&text, &path)
}

/// One message seen by the client.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// A connected control client.
pub struct Ctl {
    client: AsyncClient,
    incoming: mpsc::Receiver<Incoming>,
    client_id: String,
    addr: String,
    next_id: u64,
}

enum Incoming {
    Publish(Seen),
    SubAck,
    Error(String),
}

impl Ctl {
    /// Connect with the credentials of `<root>/runtime/control.json`.
    pub async fn connect(root: &Path, timeout: Duration) -> Result<Ctl, CtlError> {
        let file = read_control_file(root).map_err(CtlError::Discovery)?;
        let client_id = format!(
            "iohubctl-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let addr = format!("{}:{}", file.host, file.port);
        let mut opts = MqttOptions::new(client_id.clone(), file.host.clone(), file.port);
        opts.set_credentials(file.username, file.password);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            loop {
                let item = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => continue,
                    Ok(Event::Incoming(Packet::Publish(p))) => Incoming::Publish(Seen {
                        topic: p.topic.clone(),
                        payload: p.payload,
                        retain: p.retain,
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => Incoming::SubAck,
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Incoming::Error(e.to_string())).await;
                        return;
                    }
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        // Prove the connection (and the credentials) with a subscription to our reply topics.
        let mut ctl = Ctl {
            client,
            incoming: rx,
            client_id,
            addr: addr.clone(),
            next_id: 0,
        };
        let replies = topic::filter::replies(&ctl.client_id);
        ctl.subscribe(&replies, timeout)
            .await
            .map_err(|e| match e {
                CtlError::Lost(reason) | CtlError::BadAnswer(_, reason) => {
                    CtlError::Connect { addr, reason }
                }
                CtlError::Timeout(..) => CtlError::Connect {
                    addr,
                    reason: "timed out".into(),
                },
                other => other,
            })?;
        Ok(ctl)
    }

    async fn next(&mut self, timeout: Duration, what: &str) -> Result<Incoming, CtlError> {
        match tokio::time::timeout(timeout, self.incoming.recv()).await {
            Ok(Some(Incoming::Error(e))) => Err(CtlError::Lost(e)),
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(CtlError::Lost("closed".into())),
            Err(_) => Err(CtlError::Timeout(what.to_string(), timeout)),
        }
    }

    /// Subscribe and wait for the SUBACK; returns the messages that arrived meanwhile.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        timeout: Duration,
    ) -> Result<Vec<Seen>, CtlError> {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .map_err(|e| CtlError::Lost(e.to_string()))?;
        let mut early = Vec::new();
        loop {
            match self.next(timeout, "broker").await? {
                Incoming::SubAck => return Ok(early),
                Incoming::Publish(p) => early.push(p),
                Incoming::Error(e) => return Err(CtlError::Lost(e)),
            }
        }
    }

    fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}", self.next_id)
    }

    /// Every retained message matching `filter`, as of now.
    ///
    /// The broker serves a new subscription's retained messages before any live message, so a
    /// message we publish to our own reply topic after the SUBACK arrives after the last retained
    /// one: a barrier, no guessing with quiet periods.
    pub async fn snapshot(
        &mut self,
        filter: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Bytes>, CtlError> {
        let mut out = BTreeMap::new();
        for p in self.subscribe(filter, timeout).await? {
            if p.retain {
                out.insert(p.topic, p.payload);
            }
        }
        let id = format!("barrier-{}", self.fresh_id());
        let barrier = Topic::Reply {
            client: self.client_id.clone(),
            id,
        }
        .to_string();
        self.client
            .publish(barrier.clone(), QoS::AtLeastOnce, false, Bytes::new())
            .await
            .map_err(|e| CtlError::Lost(e.to_string()))?;
        loop {
            match self.next(timeout, "broker").await? {
                Incoming::Publish(p) if p.topic == barrier => break,
                Incoming::Publish(p) if p.retain => {
                    out.insert(p.topic, p.payload);
                }
                _ => {}
            }
        }
        let _ = self.client.unsubscribe(filter).await;
        Ok(out)
    }

    /// Send a command and wait for its reply.
    pub async fn request(
        &mut self,
        service: ServiceName,
        verb: Verb,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<Reply, CtlError> {
        let id = self.fresh_id();
        let reply_to = Topic::Reply {
            client: self.client_id.clone(),
            id: id.clone(),
        }
        .to_string();
        let request = Request {
            id: id.clone(),
            reply_to: Some(reply_to.clone()),
            body,
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|e| CtlError::BadAnswer(reply_to.clone(), e.to_string()))?;
        self.client
            .publish(
                Topic::Cmd(service, verb).to_string(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .map_err(|e| CtlError::Lost(e.to_string()))?;
        loop {
            match self.next(timeout, service.as_str()).await? {
                Incoming::Publish(p) if p.topic == reply_to => {
                    return serde_json::from_slice(&p.payload)
                        .map_err(|e| CtlError::BadAnswer(reply_to.clone(), e.to_string()));
                }
                _ => {}
            }
        }
    }

    /// Follow a filter: calls `each` for every message until it returns false or the connection
    /// ends.
    pub async fn follow(
        &mut self,
        filter: &str,
        mut each: impl FnMut(&Seen) -> bool,
    ) -> Result<(), CtlError> {
        for p in self.subscribe(filter, Duration::from_secs(10)).await? {
            if !each(&p) {
                return Ok(());
            }
        }
        loop {
            match self.incoming.recv().await {
                Some(Incoming::Publish(p)) => {
                    if !each(&p) {
                        return Ok(());
                    }
                }
                Some(Incoming::Error(e)) => return Err(CtlError::Lost(e)),
                Some(Incoming::SubAck) => {}
                None => return Err(CtlError::Lost("closed".into())),
            }
        }
    }

    /// The next message on any subscription.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Seen, CtlError> {
        loop {
            if let Incoming::Publish(p) = self.next(timeout, "broker").await? {
                return Ok(p);
            }
        }
    }

    pub fn address(&self) -> &str {
        &self.addr
    }
}
