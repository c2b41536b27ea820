//! The queue itself: single-threaded, explicit about time (every call takes `now_ms`) and about
//! durability (appends and ledger marks are buffered until [`Queue::sync`]).
//!
//! Segments are `seg-<first id>.log` files of records (see [`crate::record`]); the ledger
//! `ledger.log` holds `Sent` and `Removed` marks. Records are never rewritten: a record leaves
//! the queue by a `Removed` mark, and a segment file is deleted once every record in it left.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{self, BodyRef, Mark};
use crate::{Appended, DropReason, Drops, Error, NewRecord, Options, Record, Stats};

/// Permission bits of the queue's files (the payloads are the user's data).
const FILE_MODE: u32 = 0o600;
/// The ledger is compacted when it grows past this many bytes (and twice its last compacted size).
const LEDGER_COMPACT_BYTES: u64 = 4 << 20;

/// What the queue knows of one live record (its bytes stay on disk or in the write buffer).
#[derive(Debug, Clone)]
struct Meta {
    segment: u64,
    offset: u64,
    len: u32,
    priority: u8,
    enqueued_ms: u64,
    expires_ms: u64,
    sent_before: bool,
    in_flight: bool,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    reader: Option<File>,
    /// Bytes written to the file (the unsynced buffer of the head segment not included).
    written: u64,
    last_id: u64,
    live: u64,
}

/// The segment that takes appends.
#[derive(Debug)]
struct Head {
    first_id: u64,
    file: File,
    /// Records appended since the last sync, not yet written.
    buf: Vec<u8>,
}

/// The disk queue. See the crate documentation for the format and the guarantees.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    opts: Options,
    live: BTreeMap<u64, Meta>,
    /// Records ready to be handed out, by priority, oldest id first, with their bytes.
    ready: BTreeMap<u8, (BTreeSet<u64>, u64)>,
    expiry: BTreeSet<(u64, u64)>,
    segments: BTreeMap<u64, Segment>,
    head: Option<Head>,
    ledger: File,
    ledger_buf: Vec<u8>,
    ledger_len: u64,
    /// How much of the ledger is known to be on disk (fsynced).
    ledger_synced: u64,
    ledger_compacted: u64,
    next_id: u64,
    live_bytes: u64,
    stats: Counters,
    /// The head segment holds bytes written by [`Queue::flush`] and not fsynced.
    head_dirty: bool,
    /// The ledger holds marks written by [`Queue::flush`] and not fsynced.
    ledger_dirty: bool,
    /// Rolled segments written by [`Queue::flush`] and not fsynced.
    unsynced: Vec<File>,
}

#[derive(Debug, Default, Clone)]
struct Counters {
    appended: u64,
    sent: u64,
    acked: u64,
    redelivered: u64,
    drops: Drops,
    corrupt_bytes: u64,
    recovered: u64,
}

fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("seg-{first_id:020}.log"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Queue {
    /// Open (or create) the queue in `dir`, recovering what a previous run left: see the crate
    /// documentation (§ Recovery).
    pub fn open(dir: &Path, opts: Options) -> Result<Queue, Error> {
        sys::fs::ensure_dir(dir).map_err(io_err(dir))?;
        let mut q = Queue {
            dir: dir.to_path_buf(),
            opts,
            live: BTreeMap::new(),
            ready: BTreeMap::new(),
            expiry: BTreeSet::new(),
            segments: BTreeMap::new(),
            head: None,
            ledger: File::open(dir).map_err(io_err(dir))?,
            ledger_buf: Vec::new(),
            ledger_len: 0,
            ledger_synced: 0,
            ledger_compacted: 0,
            next_id: 0,
            live_bytes: 0,
            stats: Counters::default(),
            head_dirty: false,
            ledger_dirty: false,
            unsynced: Vec::new(),
        };
        let mut max_id = None;
        for (first_id, path) in list_segments(dir)? {
            let last = q.load_segment(first_id, &path)?;
            max_id = max_id.max(last);
        }
        let ledger_path = dir.join("ledger.log");
        let ledger = match std::fs::read(&ledger_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&ledger_path)(e)),
        };
        let (marks, _) = record::decode_marks(&ledger);
        for (mark, id) in marks {
            max_id = max_id.max(Some(id));
            match mark {
                Mark::Sent => {
                    if let Some(m) = q.live.get_mut(&id) {
                        m.sent_before = true;
                    }
                }
                Mark::Removed => {
                    if let Some(m) = q.live.remove(&id) {
                        if let Some(s) = q.segments.get_mut(&m.segment) {
                            s.live -= 1;
                        }
                    }
                }
            }
        }
        q.next_id = max_id.map_or(0, |m| m + 1);
        for (&id, m) in &q.live {
            let r = q.ready.entry(m.priority).or_default();
            r.0.insert(id);
            r.1 += u64::from(m.len);
            q.live_bytes += u64::from(m.len);
            if m.expires_ms != 0 {
                q.expiry.insert((m.expires_ms, id));
            }
        }
        q.stats.recovered = q.live.len() as u64;
        q.remove_dead_segments()?;
        q.compact_ledger()?;
        Ok(q)
    }

    /// Read one segment at open: index its records, set aside what follows a corruption.
    /// Returns the last id it holds.
    fn load_segment(&mut self, first_id: u64, path: &Path) -> Result<Option<u64>, Error> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let mut at = 0;
        let mut last_id = None;
        let mut bad = false;
        while at < bytes.len() {
            match record::decode(&bytes[at..]) {
                Ok((body, used)) if body.id >= first_id && Some(body.id) > last_id => {
                    self.live.insert(
                        body.id,
                        Meta {
                            segment: first_id,
                            offset: at as u64,
                            len: used as u32,
                            priority: body.priority,
                            enqueued_ms: body.enqueued_ms,
                            expires_ms: body.expires_ms,
                            sent_before: false,
                            in_flight: false,
                        },
                    );
                    last_id = Some(body.id);
                    at += used;
                }
                _ => {
                    bad = true;
                    break;
                }
            }
        }
        if bad {
            self.set_aside(path, &bytes, at)?;
        }
        let live = self.live.range(first_id..).count() as u64;
        self.segments.insert(
            first_id,
            Segment {
                path: path.to_path_buf(),
                reader: if at > 0 {
                    Some(File::open(path).map_err(io_err(path))?)
                } else {
                    None
                },
                written: at as u64,
                last_id: last_id.unwrap_or(first_id),
                live,
            },
        );
        Ok(last_id)
    }

    /// Keep `bytes[..good]` as the segment and move the whole original file aside as
    /// `<name>.corrupt-<n>`, counting one corrupt drop and the bytes set aside.
    fn set_aside(&mut self, path: &Path, bytes: &[u8], good: usize) -> Result<(), Error> {
        let mut n = 0;
        let aside = loop {
            let mut name = path.as_os_str().to_os_string();
            name.push(format!(".corrupt-{n}"));
            let aside = PathBuf::from(name);
            if !aside.exists() {
                break aside;
            }
            n += 1;
        };
        tracing::warn!(
            segment = %path.display(),
            kept_bytes = good,
            set_aside_bytes = bytes.len() - good,
            aside = %aside.display(),
            "corrupt or truncated queue segment: the records before the damage are kept"
        );
        sys::fs::rename(path, &aside).map_err(io_err(path))?;
        if good > 0 {
            sys::fs::atomic_write(path, &bytes[..good], FILE_MODE).map_err(io_err(path))?;
        }
        self.stats.drops.corrupt += 1;
        self.stats.corrupt_bytes += (bytes.len() - good) as u64;
        Ok(())
    }

    /// Queue a record. It is durable after the next [`Queue::sync`].
    pub fn append(&mut self, rec: &NewRecord, now_ms: u64) -> Result<Appended, Error> {
        let len = record::record_len(rec.topic.len(), rec.payload.len());
        if rec.topic.len() > usize::from(u16::MAX)
            || len > self.opts.budget_bytes
            || !self.make_room(len, rec.priority)
        {
            self.stats.drops.budget += 1;
            return Ok(Appended::Dropped(DropReason::Budget));
        }
        let expires_ms = rec
            .ttl_ms
            .map_or(0, |ttl| now_ms.saturating_add(ttl).max(1));
        let id = self.next_id;
        self.ensure_head(id)?;
        let head = self.head.as_mut().expect("made by ensure_head");
        let offset =
            self.segments.get(&head.first_id).map_or(0, |s| s.written) + head.buf.len() as u64;
        record::encode(
            &mut head.buf,
            &BodyRef {
                id,
                enqueued_ms: now_ms,
                expires_ms,
                priority: rec.priority,
                topic: &rec.topic,
                payload: &rec.payload,
            },
        );
        let first_id = head.first_id;
        let seg = self
            .segments
            .get_mut(&first_id)
            .expect("the head segment is in the segment map");
        seg.last_id = id;
        seg.live += 1;
        self.next_id += 1;
        self.live.insert(
            id,
            Meta {
                segment: first_id,
                offset,
                len: len as u32,
                priority: rec.priority,
                enqueued_ms: now_ms,
                expires_ms,
                sent_before: false,
                in_flight: false,
            },
        );
        let r = self.ready.entry(rec.priority).or_default();
        r.0.insert(id);
        r.1 += len;
        if expires_ms != 0 {
            self.expiry.insert((expires_ms, id));
        }
        self.live_bytes += len;
        self.stats.appended += 1;
        Ok(Appended::Queued(id))
    }

    /// Evict the oldest ready records of the lowest priorities (never above `priority`) until
    /// `len` more bytes fit the budget. Returns false, evicting nothing, when they cannot fit.
    fn make_room(&mut self, len: u64, priority: u8) -> bool {
        let need = (self.live_bytes + len).saturating_sub(self.opts.budget_bytes);
        if need == 0 {
            return true;
        }
        let evictable: u64 = self.ready.range(..=priority).map(|(_, r)| r.1).sum();
        if evictable < need {
            return false;
        }
        let mut freed = 0;
        while freed < need {
            let Some((_, (ids, _))) = self.ready.first_key_value() else {
                break;
            };
            let Some(&id) = ids.first() else { break };
            freed += self.drop_record(id);
            self.stats.drops.budget += 1;
        }
        true
    }

    /// Make the head segment when there is none (its first record will be `id`).
    fn ensure_head(&mut self, id: u64) -> Result<(), Error> {
        if self.head.is_none() {
            let path = segment_path(&self.dir, id);
            let file = sys::fs::open_append_log(&path, FILE_MODE).map_err(io_err(&path))?;
            self.segments.insert(
                id,
                Segment {
                    path,
                    reader: None,
                    written: 0,
                    last_id: id,
                    live: 0,
                },
            );
            self.head = Some(Head {
                first_id: id,
                file,
                buf: Vec::new(),
            });
        }
        Ok(())
    }

    /// Hand out up to `max` records, highest priority first, oldest first within a priority.
    /// Expired records met on the way are dropped. A handed-out record stays in the queue,
    /// in flight, until [`Queue::ack`] or [`Queue::nack`].
    pub fn pop(&mut self, max: usize, now_ms: u64) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((_, (ids, _))) = self.ready.last_key_value() else {
                break;
            };
            let id = *ids.first().expect("empty priorities are removed");
            if let Some(rec) = self.hand_out(id, now_ms)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Hand out the ready record `id`, wherever it stands in the order (`None`: not ready, or
    /// expired or damaged and dropped).
    pub fn pop_id(&mut self, id: u64, now_ms: u64) -> Result<Option<Record>, Error> {
        match self.live.get(&id) {
            Some(m) if !m.in_flight => self.hand_out(id, now_ms),
            _ => Ok(None),
        }
    }

    /// Hand out the ready record `id`: see [`Queue::pop`].
    fn hand_out(&mut self, id: u64, now_ms: u64) -> Result<Option<Record>, Error> {
        let meta = self.live.get(&id).expect("ready records are live").clone();
        if meta.expires_ms != 0 && meta.expires_ms <= now_ms {
            self.drop_record(id);
            self.stats.drops.ttl += 1;
            return Ok(None);
        }
        let body = match self.read(&meta) {
            Ok(body) if body.id == id => body,
            Ok(_) | Err(Error::Corrupt { .. }) => {
                self.drop_record(id);
                self.stats.drops.corrupt += 1;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.unready(id, &meta);
        let m = self.live.get_mut(&id).expect("live");
        m.in_flight = true;
        let redelivery = m.sent_before;
        if redelivery {
            self.stats.redelivered += 1;
        } else {
            m.sent_before = true;
            record::encode_mark(&mut self.ledger_buf, Mark::Sent, id);
        }
        self.stats.sent += 1;
        Ok(Some(Record {
            id,
            topic: body.topic,
            payload: body.payload,
            priority: body.priority,
            enqueued_ms: body.enqueued_ms,
            expires_ms: (body.expires_ms != 0).then_some(body.expires_ms),
            redelivery,
        }))
    }

    fn read(&mut self, meta: &Meta) -> Result<record::Body, Error> {
        let seg = self
            .segments
            .get_mut(&meta.segment)
            .expect("a live record's segment exists");
        let mut bytes = vec![0; meta.len as usize];
        if meta.offset >= seg.written {
            let head = self
                .head
                .as_ref()
                .expect("unwritten records are in the head");
            let at = (meta.offset - seg.written) as usize;
            bytes.copy_from_slice(&head.buf[at..at + meta.len as usize]);
        } else {
            if seg.reader.is_none() {
                seg.reader = Some(File::open(&seg.path).map_err(io_err(&seg.path))?);
            }
            let reader = seg.reader.as_ref().expect("opened above");
            reader
                .read_exact_at(&mut bytes, meta.offset)
                .map_err(io_err(&seg.path))?;
        }
        record::decode(&bytes)
            .map(|(body, _)| body)
            .map_err(|_| Error::Corrupt {
                path: seg.path.clone(),
                offset: meta.offset,
            })
    }

    /// The remote acknowledged record `id`: it leaves the queue. Returns whether it was queued.
    pub fn ack(&mut self, id: u64) -> bool {
        if !self.live.contains_key(&id) {
            return false;
        }
        self.drop_record(id);
        self.stats.acked += 1;
        true
    }

    /// Record `id` was not delivered: it is ready again, in its old place.
    pub fn nack(&mut self, id: u64) -> bool {
        let Some(m) = self.live.get_mut(&id).filter(|m| m.in_flight) else {
            return false;
        };
        m.in_flight = false;
        let r = self.ready.entry(m.priority).or_default();
        r.0.insert(id);
        r.1 += u64::from(m.len);
        true
    }

    /// Drop every record whose TTL ran out by `now_ms` and that is not in flight.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let due: Vec<u64> = self
            .expiry
            .range(..=(now_ms, u64::MAX))
            .map(|&(_, id)| id)
            .filter(|id| self.live.get(id).is_some_and(|m| !m.in_flight))
            .collect();
        for &id in &due {
            self.drop_record(id);
            self.stats.drops.ttl += 1;
        }
        due.len() as u64
    }

    fn unready(&mut self, id: u64, meta: &Meta) {
        if let Some(r) = self.ready.get_mut(&meta.priority) {
            if r.0.remove(&id) {
                r.1 -= u64::from(meta.len);
            }
            if r.0.is_empty() {
                self.ready.remove(&meta.priority);
            }
        }
    }

    /// Remove a live record and log its removal. Returns its bytes.
    fn drop_record(&mut self, id: u64) -> u64 {
        let Some(meta) = self.live.remove(&id) else {
            return 0;
        };
        self.unready(id, &meta);
        self.expiry.remove(&(meta.expires_ms, id));
        if let Some(s) = self.segments.get_mut(&meta.segment) {
            s.live -= 1;
        }
        self.live_bytes -= u64::from(meta.len);
        record::encode_mark(&mut self.ledger_buf, Mark::Removed, id);
        u64::from(meta.len)
    }

    /// Make every append and mark so far durable: write and fsync the head segment, then the
    /// ledger (segments first, so a `Removed` mark never outlives an unwritten record), roll the
    /// head segment when it is full and delete the segments no record is left in.
    pub fn sync(&mut self) -> Result<(), Error> {
        if let Some(head) = self.head.as_mut() {
            let seg = self
                .segments
                .get_mut(&head.first_id)
                .expect("the head segment is in the segment map");
            if !head.buf.is_empty() || self.head_dirty {
                head.file.write_all(&head.buf).map_err(io_err(&seg.path))?;
                head.file.sync_data().map_err(io_err(&seg.path))?;
                seg.written += head.buf.len() as u64;
                head.buf.clear();
                self.head_dirty = false;
            }
            if seg.written >= self.opts.segment_bytes {
                self.head = None;
            }
        }
        for rolled in self.unsynced.drain(..) {
            rolled.sync_data().map_err(io_err(&self.dir))?;
        }
        if !self.ledger_buf.is_empty() || self.ledger_len > self.ledger_synced {
            let path = self.dir.join("ledger.log");
            self.ledger
                .write_all(&self.ledger_buf)
                .map_err(io_err(&path))?;
            self.ledger.sync_data().map_err(io_err(&path))?;
            self.ledger_len += self.ledger_buf.len() as u64;
            self.ledger_synced = self.ledger_len;
            self.ledger_buf.clear();
            self.ledger_dirty = false;
        }
        self.remove_dead_segments()?;
        if self.ledger_len > LEDGER_COMPACT_BYTES.max(2 * self.ledger_compacted) {
            self.compact_ledger()?;
        }
        Ok(())
    }

    /// Write the ledger marks buffered so far, without an fsync: they survive a crash of the
    /// process (kill -9), and reach the disk with the next [`Queue::sync`]. Appends are not
    /// written: they wait for [`Queue::sync`].
    pub fn write_marks(&mut self) -> Result<(), Error> {
        if self.head.as_ref().is_some_and(|h| !h.buf.is_empty()) {
            // A mark may name a record still in the buffer: segments go to disk first.
            return self.sync();
        }
        if !self.ledger_buf.is_empty() {
            let path = self.dir.join("ledger.log");
            self.ledger
                .write_all(&self.ledger_buf)
                .map_err(io_err(&path))?;
            self.ledger_len += self.ledger_buf.len() as u64;
            self.ledger_buf.clear();
        }
        Ok(())
    }

    /// Write every append and mark so far to the files without an fsync: they survive a crash
    /// of the process (kill -9) at once, and a power cut once the handles from
    /// [`Queue::take_unsynced`] are fsynced (or after the next [`Queue::sync`]). Segments are
    /// written before the ledger, as in [`Queue::sync`]. For a caller that fsyncs on a timer,
    /// off its own lock (the broker's persistent sessions).
    pub fn flush(&mut self) -> Result<(), Error> {
        if let Some(head) = self.head.as_mut() {
            let seg = self
                .segments
                .get_mut(&head.first_id)
                .expect("the head segment is in the segment map");
            if !head.buf.is_empty() {
                head.file.write_all(&head.buf).map_err(io_err(&seg.path))?;
                seg.written += head.buf.len() as u64;
                head.buf.clear();
                self.head_dirty = true;
            }
            if seg.written >= self.opts.segment_bytes {
                if self.head_dirty {
                    let file = head.file.try_clone().map_err(io_err(&seg.path))?;
                    self.unsynced.push(file);
                    self.head_dirty = false;
                }
                self.head = None;
            }
        }
        if !self.ledger_buf.is_empty() {
            let path = self.dir.join("ledger.log");
            self.ledger
                .write_all(&self.ledger_buf)
                .map_err(io_err(&path))?;
            self.ledger_len += self.ledger_buf.len() as u64;
            self.ledger_buf.clear();
            self.ledger_dirty = true;
        }
        self.remove_dead_segments()?;
        if self.ledger_len > LEDGER_COMPACT_BYTES.max(2 * self.ledger_compacted) {
            self.compact_ledger()?;
        }
        Ok(())
    }

    /// Handles of the files [`Queue::flush`] wrote since the last call, segments first: fsync
    /// them in this order (on any thread) to make those writes durable.
    pub fn take_unsynced(&mut self) -> Result<Vec<File>, Error> {
        let mut out = std::mem::take(&mut self.unsynced);
        if self.head_dirty {
            if let Some(head) = &self.head {
                out.push(head.file.try_clone().map_err(io_err(&self.dir))?);
            }
            self.head_dirty = false;
        }
        if self.ledger_dirty {
            let path = self.dir.join("ledger.log");
            out.push(self.ledger.try_clone().map_err(io_err(&path))?);
            self.ledger_dirty = false;
        }
        Ok(out)
    }

    /// Records queued (in flight included) and their bytes, as the budget counts them.
    pub fn len(&self) -> (u64, u64) {
        (self.live.len() as u64, self.live_bytes)
    }

    /// No record is queued.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Delete the segment files (but the head) that no live record is in.
    fn remove_dead_segments(&mut self) -> Result<(), Error> {
        let head = self.head.as_ref().map(|h| h.first_id);
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&first, s)| s.live == 0 && Some(first) != head)
            .map(|(&first, _)| first)
            .collect();
        for first in dead {
            let seg = self.segments.remove(&first).expect("listed above");
            sys::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        Ok(())
    }

    /// Rewrite the ledger with only the marks the remaining segments need, atomically.
    fn compact_ledger(&mut self) -> Result<(), Error> {
        let mut out = Vec::new();
        for (&first, seg) in &self.segments {
            for id in first..=seg.last_id {
                match self.live.get(&id) {
                    None => record::encode_mark(&mut out, Mark::Removed, id),
                    Some(m) if m.sent_before => record::encode_mark(&mut out, Mark::Sent, id),
                    Some(_) => {}
                }
            }
        }
        // Marks of records whose segment is gone are dropped; `next_id` keeps ids from being
        // reused while this process runs, and `open` starts past the largest id it finds.
        if self.next_id > 0 && !self.live.contains_key(&(self.next_id - 1)) {
            record::encode_mark(&mut out, Mark::Removed, self.next_id - 1);
        }
        out.extend_from_slice(&self.ledger_buf);
        let path = self.dir.join("ledger.log");
        sys::fs::atomic_write(&path, &out, FILE_MODE).map_err(io_err(&path))?;
        self.ledger = sys::fs::open_append_log(&path, FILE_MODE).map_err(io_err(&path))?;
        self.ledger_buf.clear();
        self.ledger_len = out.len() as u64;
        self.ledger_synced = self.ledger_len;
        self.ledger_compacted = self.ledger_len;
        self.ledger_dirty = false;
        Ok(())
    }

    /// Sync and close.
    pub fn close(mut self) -> Result<(), Error> {
        self.sync()
    }

    /// Lose everything not synced, as a crash would (for tests of recovery).
    #[doc(hidden)]
    pub fn crash(self) {}

    /// The counters and sizes of the queue.
    pub fn stats(&self) -> Stats {
        let c = &self.stats;
        Stats {
            queued_records: self.live.len() as u64,
            queued_bytes: self.live_bytes,
            in_flight: self.live.values().filter(|m| m.in_flight).count() as u64,
            oldest_enqueued_ms: self.live.values().next().map(|m| m.enqueued_ms),
            appended: c.appended,
            sent: c.sent,
            acked: c.acked,
            redelivered: c.redelivered,
            recovered: c.recovered,
            dropped: c.drops.clone(),
            corrupt_bytes: c.corrupt_bytes,
            segments: self.segments.len() as u64,
            disk_bytes: self.segments.values().map(|s| s.written).sum::<u64>() + self.ledger_len,
        }
    }

    /// The ids and end offsets of the records in the newest segment file, with its path (for
    /// tests that damage it).
    #[doc(hidden)]
    pub fn newest_segment(&self) -> Option<(PathBuf, Vec<(u64, u64)>)> {
        let (_, seg) = self.segments.last_key_value()?;
        let bytes = std::fs::read(&seg.path).ok()?;
        let mut at = 0;
        let mut out = Vec::new();
        while let Ok((body, used)) = record::decode(&bytes[at..]) {
            at += used;
            out.push((body.id, at as u64));
        }
        Some((seg.path.clone(), out))
    }
}

/// The segment files of `dir`, by first id.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort();
    Ok(out)
}
