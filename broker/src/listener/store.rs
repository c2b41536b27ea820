//! Persistent sessions (MQTT 3.1.1 `clean_session = false`): what a client keeps while it is
//! away, on disk. See the parent module for the rules.
//!
//! A stored session is its client id, its filters (`session.json`, rewritten atomically on every
//! SUBSCRIBE/UNSUBSCRIBE) and a queue of records in the bridge's disk format (crate
//! `bridge-queue`: segment files with a CRC32 per record and a ledger of `Sent`/`Removed` marks),
//! in `<dir>/<sha256 of the client id>/`. A record is a message the client has not acknowledged
//! (QoS1/QoS2; a header byte with its QoS and retain flag and the packet id it was sent with,
//! then the payload), or the mark that a QoS2 message awaits PUBCOMP (priority 1: handed out
//! before any message, so PUBRELs are re-sent first, MQTT 3.1.1 §4.4).
//!
//! Who holds the session: while the client is connected its connection ([`Held`] behind an
//! async mutex: a newer connection with the same client id waits for the older one to let go);
//! while it is away, a keeper task that moves what its router subscription receives into the
//! disk queue (QoS0 messages are not kept, like mosquitto's `queue_qos0_messages false`), up to
//! `max_queued_messages` records and `max_queued_bytes` bytes; past either a message is dropped
//! and counted (`session_dropped`).
//!
//! Durability: every record and mark is written to its file (`write(2)`, no fsync) as soon as
//! the batch that made it is handled, so a kill -9 of iohubd loses nothing written; the files
//! are fsynced every `sync_interval` off the session's lock (a power cut loses at most that
//! interval). A store found damaged at start is set aside (`<name>.corrupt-<ms>`) with an error
//! and counted; the listener starts without it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bridge_queue::{Appended, NewRecord, Options, Queue, Record};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::session::{granted_qos, Granted};
use super::{ListenerStats, Shared};
use crate::router::QueueBounds;
use crate::{Message, Subscription};

/// Where and how much a listener keeps of its clients' persistent sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStoreConfig {
    /// The store's directory (iohubd: `<root>/runtime/broker/<listener>/`).
    pub dir: PathBuf,
    /// Persistent sessions kept (connected or not); a CONNECT that would make one more gets
    /// CONNACK 3 (server unavailable).
    pub max_sessions: usize,
    /// Records kept per session while its client is away (mosquitto's `max_queued_messages`).
    pub max_queued_messages: u64,
    /// Bytes of those records (topic, payload and 38 bytes of framing each; mosquitto's
    /// `max_queued_bytes`).
    pub max_queued_bytes: u64,
    /// How often written records are fsynced (what a power cut can lose).
    pub sync_interval: Duration,
}

impl SessionStoreConfig {
    /// Defaults for `dir`: 100 sessions of at most 1,000 messages and 2 MiB each, fsync every
    /// second.
    pub fn new(dir: PathBuf) -> SessionStoreConfig {
        SessionStoreConfig {
            dir,
            max_sessions: 100,
            max_queued_messages: 1000,
            max_queued_bytes: 2 << 20,
            sync_interval: Duration::from_secs(1),
        }
    }
}

const SESSION_FILE: &str = "session.json";
const FILE_MODE: u32 = 0o600;
/// Messages moved to disk per wake-up of a keeper before its records are written.
const KEEP_BATCH: usize = 256;

#[derive(Serialize, Deserialize)]
struct SessionFile {
    client_id: String,
    filters: Vec<FilterFile>,
}

#[derive(Serialize, Deserialize)]
struct FilterFile {
    filter: String,
    qos: u8,
    /// MQTT 5 "no local" (absent in files written before MQTT 5).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    no_local: bool,
}

/// What a connection takes over from its stored session while connected.
#[derive(Default)]
pub(super) struct Held {
    pub(super) sub: Option<Subscription>,
    pub(super) filters: Vec<Granted>,
    pub(super) filter_levels: usize,
    /// Incoming QoS2 packet ids awaiting PUBREL (kept across reconnects, not restarts).
    pub(super) incoming_qos2: HashSet<u16>,
}

/// One record of a session's disk queue, decoded.
pub(super) enum Item {
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
        /// The packet id it was last sent with (0: never sent with one).
        pkid: u16,
    },
    /// A QoS2 message sent and PUBREC'd, awaiting PUBCOMP under `pkid`.
    PubRel { pkid: u16 },
}

const PUBREL: u8 = 0x80;

impl Item {
    fn record(&self) -> NewRecord {
        match self {
            Item::Publish {
                topic,
                payload,
                qos,
                retain,
                pkid,
            } => {
                let mut bytes = Vec::with_capacity(3 + payload.len());
                bytes.push(qos | (u8::from(*retain) << 2));
                bytes.extend_from_slice(&pkid.to_be_bytes());
                bytes.extend_from_slice(payload);
                NewRecord {
                    topic: topic.clone(),
                    payload: bytes,
                    priority: 0,
                    ttl_ms: None,
                }
            }
            Item::PubRel { pkid } => {
                let mut bytes = vec![PUBREL];
                bytes.extend_from_slice(&pkid.to_be_bytes());
                NewRecord {
                    topic: String::new(),
                    payload: bytes,
                    priority: 1,
                    ttl_ms: None,
                }
            }
        }
    }

    fn decode(rec: Record) -> Option<Item> {
        let (&flags, rest) = rec.payload.split_first()?;
        let pkid = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
        if flags == PUBREL {
            return Some(Item::PubRel { pkid });
        }
        Some(Item::Publish {
            topic: rec.topic,
            payload: Bytes::copy_from_slice(&rest[2..]),
            qos: (flags & 3).clamp(1, 2),
            retain: flags & 4 != 0,
            pkid,
        })
    }
}

/// A record handed out: its id in the disk queue, whether it was handed out before, and what
/// it is (`None`: undecodable, already dropped).
pub(super) struct Popped {
    pub(super) id: u64,
    pub(super) redelivery: bool,
    pub(super) item: Option<Item>,
}

/// A session's disk queue with the listener's gauge of records kept.
pub(super) struct Disk {
    queue: Queue,
    /// Records of this queue counted in the listener's `session_records`.
    counted: u64,
}

impl Disk {
    /// Queue `item` and hand it out at once (a message being sent, a PUBREL mark); its id.
    pub(super) fn append_popped(&mut self, item: &Item) -> Option<u64> {
        let id = match self.queue.append(&item.record(), 0) {
            Ok(Appended::Queued(id)) => id,
            Ok(Appended::Dropped(_)) => return None,
            Err(e) => {
                tracing::error!(error = %e, "session store: append failed");
                return None;
            }
        };
        match self.queue.pop_id(id, 0) {
            Ok(Some(_)) => Some(id),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "session store: pop failed");
                None
            }
        }
    }

    /// Hand out up to `max` records, oldest first (PUBREL marks before messages).
    pub(super) fn pop(&mut self, max: usize) -> Vec<Popped> {
        match self.queue.pop(max, 0) {
            Ok(records) => records
                .into_iter()
                .map(|r| Popped {
                    id: r.id,
                    redelivery: r.redelivery,
                    item: Item::decode(r),
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "session store: pop failed");
                Vec::new()
            }
        }
    }

    pub(super) fn ack(&mut self, id: u64) {
        self.queue.ack(id);
    }

    pub(super) fn nack(&mut self, id: u64) {
        self.queue.nack(id);
    }

    /// Write what the last operations buffered to the files, and update the gauge.
    fn flush(&mut self, stats: &ListenerStats) {
        if let Err(e) = self.queue.flush() {
            ListenerStats::bump(&stats.counters.session_store_errors);
            tracing::error!(error = %e, "session store: write failed");
        }
        let now = self.queue.len().0;
        let gauge = &stats.counters.session_records;
        if now >= self.counted {
            gauge.fetch_add(now - self.counted, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(self.counted - now, Ordering::Relaxed);
        }
        self.counted = now;
    }
}

/// One persistent session.
pub(super) struct Stored {
    dir: PathBuf,
    disk: Mutex<Disk>,
    held: Arc<tokio::sync::Mutex<Held>>,
    /// Cancels the keeper task while the client is away.
    keeper: Mutex<Option<CancellationToken>>,
    /// Discarded (by a clean-session CONNECT): whoever waited for it looks it up again.
    gone: std::sync::atomic::AtomicBool,
}

impl Stored {
    pub(super) fn disk(&self) -> MutexGuard<'_, Disk> {
        // No code that can panic runs under this lock.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn flush(&self, stats: &ListenerStats) {
        self.disk().flush(stats);
    }

    /// Rewrite `session.json` with `filters` (atomically, on a blocking thread).
    pub(super) async fn save(&self, client_id: &str, filters: &[Granted]) {
        let file = SessionFile {
            client_id: client_id.to_string(),
            filters: filters
                .iter()
                .map(|g| FilterFile {
                    filter: g.filter.clone(),
                    qos: g.qos,
                    no_local: g.no_local,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).unwrap_or_default();
        let path = self.dir.join(SESSION_FILE);
        if let Err(e) = sys::fs::atomic_write_async(path, bytes, FILE_MODE).await {
            tracing::error!(error = %e, "session store: session.json not written");
        }
    }

    /// Keep a message for the client while it is away (see the module docs).
    pub(super) fn keep(&self, held: &Held, shared: &Shared, msg: Message) {
        let Some(granted) = granted_qos(&held.filters, &shared.config.acl, &msg.topic) else {
            return;
        };
        let qos = msg.qos.min(granted);
        if qos == 0 {
            return;
        }
        let store = shared.store.as_ref().map(|s| &s.config);
        let Some(config) = store else { return };
        let item = Item::Publish {
            topic: msg.topic,
            payload: msg.payload,
            qos,
            retain: msg.retain,
            pkid: 0,
        };
        let record = item.record();
        let mut disk = self.disk();
        let (records, bytes) = disk.queue.len();
        let len = bridge_queue::record_len(record.topic.len(), record.payload.len());
        let appended =
            if records >= config.max_queued_messages || bytes + len > config.max_queued_bytes {
                None
            } else {
                match disk.queue.append(&record, 0) {
                    Ok(Appended::Queued(id)) => Some(id),
                    Ok(Appended::Dropped(_)) => None,
                    Err(e) => {
                        tracing::error!(error = %e, "session store: append failed");
                        None
                    }
                }
            };
        drop(disk);
        if appended.is_none() {
            ListenerStats::bump(&shared.stats.counters.session_dropped);
            if shared.bound_log.due() {
                tracing::warn!(listener = %shared.config.name, "persistent session full: message dropped (warned once a minute; counted in iohub/state/broker)");
            }
        }
    }
}

/// The persistent sessions of one listener.
pub(super) struct Store {
    pub(super) config: SessionStoreConfig,
    sessions: Mutex<HashMap<String, Arc<Stored>>>,
    /// The directory is this store's until it is dropped.
    _claim: Claim,
}

/// Store directories open in this process: a listener reopened (a configuration change) waits
/// for the old one's connections and keepers to let its files go before it reads them.
static OPEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Longest a listener waits for its store directory.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

struct Claim(PathBuf);

impl Claim {
    async fn take(dir: &Path) -> Option<Claim> {
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            {
                let mut open = lock(&OPEN);
                if !open.iter().any(|d| d == dir) {
                    open.push(dir.to_path_buf());
                    return Some(Claim(dir.to_path_buf()));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&OPEN).retain(|d| d != &self.0);
    }
}

/// A session taken over by a connection.
pub(super) struct Attached {
    pub(super) stored: Arc<Stored>,
    pub(super) guard: OwnedMutexGuard<Held>,
    /// It existed before this CONNECT (CONNACK session present).
    pub(super) present: bool,
}

/// Why no session could be attached.
pub(super) enum NotAttached {
    /// `max_sessions` reached.
    Full,
    /// The store could not make it.
    Failed,
    /// Taken over by a newer connection, or no time left.
    Gone,
}

fn session_dir(root: &Path, client_id: &str) -> PathBuf {
    root.join(hex::encode(sha2::Sha256::digest(client_id.as_bytes())))
}

fn open_disk(dir: &Path) -> Result<Queue, bridge_queue::Error> {
    // The bounds are the store's (checked before each append); the budget only stops a record
    // larger than any message.
    Queue::open(dir, Options::with_budget(u64::MAX / 4))
}

impl Store {
    /// The store of `config.dir`, once no other listener of this process has it open; `None`
    /// (logged) when it stays open elsewhere for [`CLAIM_WAIT`].
    pub(super) async fn open(config: SessionStoreConfig) -> Option<Store> {
        let Some(claim) = Claim::take(&config.dir).await else {
            tracing::error!(dir = %config.dir.display(), "session store still open by another listener; persistent sessions are off");
            return None;
        };
        Some(Store {
            config,
            sessions: Mutex::new(HashMap::new()),
            _claim: claim,
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Stored>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take over the persistent session of `client_id` (made if new), waiting for its previous
    /// holder (an older connection, told to close by `admit`, or the keeper) to let go.
    pub(super) async fn attach(
        &self,
        shared: &Arc<Shared>,
        client_id: &str,
        takeover: &CancellationToken,
        deadline: Instant,
    ) -> Result<Attached, NotAttached> {
        loop {
            let found = self.sessions().get(client_id).cloned();
            let (stored, present) = match found {
                Some(s) => (s, true),
                None => (self.make(shared, client_id).await?, false),
            };
            if let Some(keeper) = lock(&stored.keeper).take() {
                keeper.cancel();
            }
            let guard = tokio::select! {
                _ = takeover.cancelled() => return Err(NotAttached::Gone),
                g = tokio::time::timeout_at(deadline, stored.held.clone().lock_owned()) => {
                    g.map_err(|_| NotAttached::Gone)?
                }
            };
            if stored.gone.load(Ordering::Acquire) {
                continue;
            }
            return Ok(Attached {
                stored,
                guard,
                present,
            });
        }
    }

    /// A new, empty session on disk and in the map.
    async fn make(
        &self,
        shared: &Arc<Shared>,
        client_id: &str,
    ) -> Result<Arc<Stored>, NotAttached> {
        if self.sessions().len() >= self.config.max_sessions {
            return Err(NotAttached::Full);
        }
        let dir = session_dir(&self.config.dir, client_id);
        let opened = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                // A directory left by a session discarded half-way is emptied first.
                sys::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
                open_disk(&dir).map_err(|e| e.to_string())
            })
            .await
        };
        let queue = match opened {
            Ok(Ok(q)) => q,
            Ok(Err(e)) => {
                ListenerStats::bump(&shared.stats.counters.session_store_errors);
                tracing::error!(error = %e, "session store: cannot make a session");
                return Err(NotAttached::Failed);
            }
            Err(_) => return Err(NotAttached::Failed),
        };
        let stored = Arc::new(Stored {
            dir,
            disk: Mutex::new(Disk { queue, counted: 0 }),
            held: Arc::new(tokio::sync::Mutex::new(Held::default())),
            keeper: Mutex::new(None),
            gone: false.into(),
        });
        stored.save(client_id, &[]).await;
        let mut sessions = self.sessions();
        if let Some(raced) = sessions.get(client_id) {
            return Ok(raced.clone());
        }
        if sessions.len() >= self.config.max_sessions {
            return Err(NotAttached::Full);
        }
        sessions.insert(client_id.to_string(), stored.clone());
        shared
            .stats
            .counters
            .sessions
            .store(sessions.len() as u64, Ordering::Relaxed);
        Ok(stored)
    }

    /// Discard the persistent session of `client_id`, if any (a clean-session CONNECT).
    /// A session is kept for `client_id`.
    pub(super) fn has(&self, client_id: &str) -> bool {
        self.sessions().contains_key(client_id)
    }

    pub(super) async fn discard(
        &self,
        shared: &Shared,
        client_id: &str,
        takeover: &CancellationToken,
        deadline: Instant,
    ) -> Result<(), NotAttached> {
        let Some(stored) = self.sessions().get(client_id).cloned() else {
            return Ok(());
        };
        if let Some(keeper) = lock(&stored.keeper).take() {
            keeper.cancel();
        }
        let mut guard = tokio::select! {
            _ = takeover.cancelled() => return Err(NotAttached::Gone),
            g = tokio::time::timeout_at(deadline, stored.held.clone().lock_owned()) => {
                g.map_err(|_| NotAttached::Gone)?
            }
        };
        stored.gone.store(true, Ordering::Release);
        {
            let mut sessions = self.sessions();
            if sessions
                .get(client_id)
                .is_some_and(|s| Arc::ptr_eq(s, &stored))
            {
                sessions.remove(client_id);
            }
            shared
                .stats
                .counters
                .sessions
                .store(sessions.len() as u64, Ordering::Relaxed);
        }
        *guard = Held::default();
        let counted = std::mem::take(&mut stored.disk().counted);
        shared
            .stats
            .counters
            .session_records
            .fetch_sub(counted, Ordering::Relaxed);
        let dir = stored.dir.clone();
        let removed = tokio::task::spawn_blocking(move || sys::fs::remove_dir_all(&dir)).await;
        if let Ok(Err(e)) = removed {
            ListenerStats::bump(&shared.stats.counters.session_store_errors);
            tracing::error!(error = %e, "session store: discarded session not removed");
        }
        Ok(())
    }

    /// The client of `stored` went away: unless a newer connection already took its client id,
    /// a keeper moves what its subscription receives to disk until the client is back.
    pub(super) fn park(
        shared: &Arc<Shared>,
        client_id: &str,
        registration: u64,
        stored: Arc<Stored>,
        guard: OwnedMutexGuard<Held>,
    ) {
        stored.flush(&shared.stats);
        let mut slot = lock(&stored.keeper);
        let newer = shared
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(client_id)
            .is_some_and(|(id, _)| *id != registration);
        if newer || stored.gone.load(Ordering::Acquire) || shared.cancel.is_cancelled() {
            return;
        }
        let token = CancellationToken::new();
        *slot = Some(token.clone());
        drop(slot);
        let shared2 = shared.clone();
        shared
            .bus
            .tasks()
            .spawn(keeper(shared2, stored.clone(), guard, token));
    }

    /// Load every session of the store's directory (at listener start): subscriptions back in
    /// the router (without retained replays: those came at SUBSCRIBE), a keeper for each.
    pub(super) async fn restore(&self, shared: &Arc<Shared>) {
        let root = self.config.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || load_all(&root)).await;
        let (loaded, corrupt) = match loaded {
            Ok(l) => l,
            Err(_) => return,
        };
        let counters = &shared.stats.counters;
        counters
            .sessions_corrupt
            .fetch_add(corrupt, Ordering::Relaxed);
        for (file, dir, queue) in loaded {
            if self.sessions().len() >= self.config.max_sessions {
                tracing::error!(client = %file.client_id, "session store: more sessions on disk than max_sessions; left on disk");
                continue;
            }
            let mut held = Held::default();
            for f in file.filters {
                if let Err(why) =
                    super::session::restore_filter(shared, &mut held, &f.filter, f.qos, f.no_local)
                {
                    tracing::warn!(client = %file.client_id, filter = %f.filter, why, "persistent session: filter not restored");
                }
            }
            let counted = queue.len().0;
            counters
                .session_records
                .fetch_add(counted, Ordering::Relaxed);
            let stored = Arc::new(Stored {
                dir,
                disk: Mutex::new(Disk { queue, counted }),
                held: Arc::new(tokio::sync::Mutex::new(held)),
                keeper: Mutex::new(None),
                gone: false.into(),
            });
            let guard = stored.held.clone().lock_owned().await;
            self.sessions()
                .insert(file.client_id.clone(), stored.clone());
            Store::park(shared, &file.client_id, u64::MAX, stored, guard);
        }
        let n = self.sessions().len() as u64;
        counters.sessions.store(n, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(listener = %shared.config.name, sessions = n, "persistent sessions restored");
        }
    }

    /// fsync what the sessions wrote, every `sync_interval`, until the listener closes.
    pub(super) async fn sync_loop(shared: Arc<Shared>) {
        let Some(store) = shared.store.as_ref() else {
            return;
        };
        let mut tick = tokio::time::interval(store.config.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = shared.cancel.cancelled() => true,
                _ = tick.tick() => false,
            };
            let all: Vec<Arc<Stored>> = store.sessions().values().cloned().collect();
            let mut files = Vec::new();
            for s in all {
                match s.disk().queue.take_unsynced() {
                    Ok(f) => files.extend(f),
                    Err(e) => tracing::error!(error = %e, "session store: no handle to sync"),
                }
            }
            if !files.is_empty() {
                let synced = tokio::task::spawn_blocking(move || {
                    files.iter().try_for_each(std::fs::File::sync_data)
                })
                .await;
                if !matches!(synced, Ok(Ok(()))) {
                    ListenerStats::bump(&shared.stats.counters.session_store_errors);
                    tracing::error!("session store: fsync failed");
                }
            }
            if stop {
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Move what the router queues for an absent client to disk until `token` (the client is back)
/// or the listener closes; what is already queued then goes to disk too.
async fn keeper(
    shared: Arc<Shared>,
    stored: Arc<Stored>,
    mut held: OwnedMutexGuard<Held>,
    token: CancellationToken,
) {
    loop {
        let next = async {
            match held.sub.as_mut() {
                Some(sub) => sub.recv().await,
                None => std::future::pending().await,
            }
        };
        let msg = tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = shared.cancel.cancelled() => break,
            m = next => m,
        };
        let Some(msg) = msg else { break };
        stored.keep(&held, &shared, msg);
        for _ in 0..KEEP_BATCH {
            let Some(m) = held.sub.as_mut().and_then(Subscription::try_recv) else {
                break;
            };
            stored.keep(&held, &shared, m);
        }
        stored.flush(&shared.stats);
    }
    while let Some(m) = held.sub.as_mut().and_then(Subscription::try_recv) {
        stored.keep(&held, &shared, m);
    }
    stored.flush(&shared.stats);
}

/// Read every session under `root`; a damaged one is set aside. Returns the sessions and the
/// number set aside.
fn load_all(root: &Path) -> (Vec<(SessionFile, PathBuf, Queue)>, u64) {
    let mut out = Vec::new();
    let mut corrupt = 0;
    if let Err(e) = sys::fs::ensure_dir(root) {
        tracing::error!(dir = %root.display(), error = %e, "session store: no directory; persistent sessions are not restored");
        return (out, 0);
    }
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(dir = %root.display(), error = %e, "session store unreadable");
            return (out, 0);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let dir = entry.path();
        match load_one(&dir, &name) {
            Ok((file, queue)) => out.push((file, dir, queue)),
            Err(why) => {
                corrupt += 1;
                let aside = root.join(format!("{name}.corrupt-{}", bridge_queue::now_ms()));
                tracing::error!(session = %dir.display(), aside = %aside.display(), %why, "persistent session store damaged: set aside, the broker starts without it");
                if let Err(e) = sys::fs::rename(&dir, &aside) {
                    tracing::error!(error = %e, "session store: damaged session not set aside");
                }
            }
        }
    }
    (out, corrupt)
}

fn load_one(dir: &Path, name: &str) -> Result<(SessionFile, Queue), String> {
    let bytes =
        std::fs::read(dir.join(SESSION_FILE)).map_err(|e| format!("{SESSION_FILE}: {e}"))?;
    let file: SessionFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{SESSION_FILE}: {e}"))?;
    if hex::encode(sha2::Sha256::digest(file.client_id.as_bytes())) != name {
        return Err(format!(
            "{SESSION_FILE}: the client id does not match the directory"
        ));
    }
    let queue = open_disk(dir).map_err(|e| e.to_string())?;
    Ok((file, queue))
}

/// The bounds of a persistent session's router queue (those of any client's).
pub(super) fn bounds(limits: &super::ListenerLimits) -> QueueBounds {
    QueueBounds {
        soft: limits.max_queued_messages,
        hard: limits.max_queued_messages_hard,
        soft_bytes: limits.max_subscription_bytes,
        hard_bytes: limits.max_subscription_bytes_hard,
    }
}
