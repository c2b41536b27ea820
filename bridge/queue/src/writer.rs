//! [`Writer`]: a queue on its own thread, with group commit.
//!
//! Requests from any number of handles (blocking or async) go through one channel; the thread
//! takes every request waiting, applies them in order, syncs once, then answers. An append is
//! answered only after the sync that made it durable, so the fsync cost is shared by a burst.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Appended, Error, NewRecord, Options, Queue, Record, Stats};

/// The longest ledger marks wait for an fsync when no append forces one.
const MARKS_SYNC: Duration = Duration::from_secs(1);

type Reply<T> = flume::Sender<Result<T, Error>>;

enum Cmd {
    Append(Vec<NewRecord>, Reply<Vec<Appended>>),
    Pop(usize, Reply<Vec<Record>>),
    Ack(Vec<u64>),
    Nack(Vec<u64>),
    Expire,
    Stats(Reply<Stats>),
    Close(Reply<()>),
}

/// A clonable handle on a queue run by its own thread. The thread stops (after a last sync)
/// when [`Writer::close`] is called or every handle is dropped.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: flume::Sender<Cmd>,
    wake: flume::Receiver<()>,
}

/// Milliseconds since the Unix epoch, the queue's clock for TTLs and ages.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    /// The most requests applied between two syncs.
    pub const MAX_BATCH: usize = 4096;

    /// Open the queue in `dir` and start its thread, on the system clock.
    pub fn open(dir: &Path, opts: Options) -> Result<(Writer, JoinHandle<()>), Error> {
        let queue = Queue::open(dir, opts)?;
        Ok(Writer::spawn(queue, Box::new(now_ms)))
    }

    /// Run `queue` on a thread of its own, with `clock` giving the time in milliseconds.
    pub fn spawn(queue: Queue, clock: Box<dyn FnMut() -> u64 + Send>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = flume::unbounded();
        let (wake_tx, wake) = flume::bounded(1);
        let thread = std::thread::Builder::new()
            .name("bridge-queue".into())
            .spawn(move || run(queue, clock, &rx, &wake_tx))
            .expect("spawning the queue thread (out of threads?)");
        (Writer { tx, wake }, thread)
    }

    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Error> {
        let (reply, rx) = flume::bounded(1);
        self.tx.send(make(reply)).map_err(|_| Error::Closed)?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    async fn call_async<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Error> {
        let (reply, rx) = flume::bounded(1);
        self.tx
            .send_async(make(reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.recv_async().await.map_err(|_| Error::Closed)?
    }

    /// Queue records; returns once they are durable (or dropped).
    pub fn append(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>, Error> {
        self.call(|r| Cmd::Append(records, r))
    }

    /// [`Writer::append`] for async callers (it does not block the runtime).
    pub async fn append_async(&self, records: Vec<NewRecord>) -> Result<Vec<Appended>, Error> {
        self.call_async(|r| Cmd::Append(records, r)).await
    }

    /// Hand out up to `max` records (see [`Queue::pop`]).
    pub fn pop(&self, max: usize) -> Result<Vec<Record>, Error> {
        self.call(|r| Cmd::Pop(max, r))
    }

    /// [`Writer::pop`] for async callers.
    pub async fn pop_async(&self, max: usize) -> Result<Vec<Record>, Error> {
        self.call_async(|r| Cmd::Pop(max, r)).await
    }

    /// Wait until records may have been appended or put back since the last wait.
    pub async fn appended(&self) {
        let _ = self.wake.recv_async().await;
    }

    /// The remote acknowledged these records.
    pub fn ack(&self, ids: Vec<u64>) -> Result<(), Error> {
        self.tx.send(Cmd::Ack(ids)).map_err(|_| Error::Closed)
    }

    /// These records were not delivered: ready again.
    pub fn nack(&self, ids: Vec<u64>) -> Result<(), Error> {
        self.tx.send(Cmd::Nack(ids)).map_err(|_| Error::Closed)
    }

    /// Drop the records whose TTL ran out.
    pub fn expire(&self) -> Result<(), Error> {
        self.tx.send(Cmd::Expire).map_err(|_| Error::Closed)
    }

    /// The queue's counters.
    pub fn stats(&self) -> Result<Stats, Error> {
        self.call(Cmd::Stats)
    }

    /// [`Writer::stats`] for async callers.
    pub async fn stats_async(&self) -> Result<Stats, Error> {
        self.call_async(Cmd::Stats).await
    }

    /// Sync and stop the thread (other handles then get [`Error::Closed`]).
    pub fn close(&self) -> Result<(), Error> {
        self.call(Cmd::Close)
    }
}

/// An error for one more waiter (the original goes to the log).
fn copy(e: &Error) -> Error {
    match e {
        Error::Io { path, source } => Error::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Corrupt { path, offset } => Error::Corrupt {
            path: path.clone(),
            offset: *offset,
        },
        Error::Closed => Error::Closed,
    }
}

fn run(
    mut q: Queue,
    mut clock: Box<dyn FnMut() -> u64 + Send>,
    rx: &flume::Receiver<Cmd>,
    wake: &flume::Sender<()>,
) {
    let mut last_sync = Instant::now();
    loop {
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < Writer::MAX_BATCH {
            let Ok(cmd) = rx.try_recv() else { break };
            batch.push(cmd);
        }
        let now = clock();
        let mut appends = Vec::new();
        let mut close = None;
        let mut woke = false;
        for cmd in batch {
            match cmd {
                Cmd::Append(records, reply) => {
                    let got: Result<Vec<_>, _> = records.iter().map(|r| q.append(r, now)).collect();
                    appends.push((reply, got));
                    woke = true;
                }
                Cmd::Pop(max, reply) => {
                    let _ = reply.send(q.pop(max, now));
                }
                Cmd::Ack(ids) => {
                    for id in ids {
                        q.ack(id);
                    }
                }
                Cmd::Nack(ids) => {
                    for id in ids {
                        woke |= q.nack(id);
                    }
                }
                Cmd::Expire => {
                    q.expire(now);
                }
                Cmd::Stats(reply) => {
                    let _ = reply.send(Ok(q.stats()));
                }
                Cmd::Close(reply) => close = Some(reply),
            }
        }
        // Appends are answered only once durable: a batch with appends (or a close) syncs.
        // Marks alone (pops, acks, drops) are written for a crash of the process and fsynced
        // at the next sync, at most MARKS_SYNC later: a power cut may lose the marks of that
        // last second (acked records come back as duplicates), never a queued record.
        let synced = if !appends.is_empty() || close.is_some() || last_sync.elapsed() >= MARKS_SYNC
        {
            last_sync = Instant::now();
            q.sync()
        } else {
            q.write_marks()
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "bridge queue sync failed: appends of this batch are refused");
        }
        for (reply, got) in appends {
            let _ = reply.send(match (&synced, got) {
                (Ok(()), got) => got,
                (Err(e), _) => Err(copy(e)),
            });
        }
        if woke {
            let _ = wake.try_send(());
        }
        if let Some(reply) = close {
            let _ = reply.send(synced);
            return;
        }
    }
    if let Err(e) = q.sync() {
        tracing::error!(error = %e, "bridge queue: last sync failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> NewRecord {
        NewRecord {
            topic: "t".into(),
            payload: vec![n],
            priority: 0,
            ttl_ms: None,
        }
    }

    #[test]
    fn a_nacked_window_is_handed_out_again_whole_and_acks_empty_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (w, thread) = Writer::open(dir.path(), Options::with_budget(1 << 20)).unwrap();
        w.append((0..5).map(rec).collect()).unwrap();
        let first = w.pop(10).unwrap();
        assert_eq!(first.len(), 5);
        w.nack(first.iter().map(|r| r.id).collect()).unwrap();
        let again = w.pop(10).unwrap();
        assert_eq!(again.len(), 5, "every nacked record is ready again");
        assert!(again.iter().all(|r| r.redelivery));
        w.ack(again.iter().map(|r| r.id).collect()).unwrap();
        let stats = w.stats().unwrap();
        assert_eq!(
            (stats.queued_records, stats.acked, stats.redelivered),
            (0, 5, 5)
        );
        w.close().unwrap();
        thread.join().unwrap();
    }
}
