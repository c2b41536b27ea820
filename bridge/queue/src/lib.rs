//! The bridge's disk queue: messages on their way to a remote broker, kept on disk until the
//! remote acknowledged them.
//!
//! # Format
//! A queue is a directory of segment files `seg-<first id>.log` and one ledger `ledger.log`.
//! A segment is a sequence of records, each `len | crc32 | id, enqueued_ms, expires_ms,
//! priority, topic, payload` ([`record_len`] gives its size); records are appended, never
//! rewritten. The ledger holds 13-byte marks, each with its own CRC32: `Sent` (handed out for
//! sending once) and `Removed` (acked or dropped). A segment file is deleted once every record in
//! it is removed; the ledger is rewritten atomically (compacted) when it grows.
//!
//! # Durability (fsync policy)
//! [`Queue::append`] buffers in memory; [`Queue::sync`] writes the buffered records to the head
//! segment and `fdatasync`s it, then writes and `fdatasync`s the ledger. [`Writer`] runs a
//! queue on its own thread and does group commit: it takes every request already waiting (up
//! to [`Writer::MAX_BATCH`]), applies them, syncs once, and only then answers the appends, so
//! an append returns after its record is durable and a burst of appends shares one fsync.
//! A batch without appends (pops, acks) only writes its ledger marks, which then survive a
//! crash of the process; they are fsynced with the next append batch or within a second. A
//! power cut can thus lose the marks of the last second: acked records come back (duplicates,
//! possibly not flagged as redeliveries), never a queued record lost.
//!
//! [`Queue::flush`] is the other policy (the broker's persistent sessions): it writes buffered
//! records and marks without an fsync (a crash of the process loses none of them) and
//! [`Queue::take_unsynced`] hands out the written files' handles, segments before the ledger,
//! for the caller to fsync later on any thread (a power cut loses what was not fsynced yet).
//!
//! # Bounds
//! - The byte budget ([`Options::budget_bytes`]) bounds the bytes of the records queued (as
//!   [`record_len`] counts them). A record that does not fit evicts the oldest ready records of
//!   the lowest priority, never of a priority above its own; when that cannot make room the new
//!   record is dropped instead. Records in flight are never evicted.
//! - The disk holds the queued records, plus the removed records that share a segment with a
//!   queued one (segments are [`Options::segment_bytes`] long), plus the ledger.
//! - Memory holds about 100 bytes per queued record (its index), not its payload.
//! - Every drop is counted by reason ([`Drops`]): `ttl`, `budget`, `corrupt`.
//!
//! # Delivery
//! [`Queue::pop`] hands out records (highest priority first, oldest first within a priority)
//! and keeps them in flight; a record leaves only on [`Queue::ack`] (the remote's PUBACK);
//! [`Queue::nack`] puts it back. After a restart every record not acked is ready again; a
//! record that had been handed out before is handed out with `redelivery: true` and counted in
//! [`Stats::redelivered`]: the duplicates a remote may see are those records, no more.
//!
//! # Recovery
//! [`Queue::open`] reads every segment. At the first record that is truncated or fails its
//! checksum, the records before it are kept (the segment is rewritten atomically with them) and
//! the whole original file is set aside as `seg-<first id>.log.corrupt-<n>`, counted as one
//! `corrupt` drop with its bytes in [`Stats::corrupt_bytes`]. A torn ledger tail loses only the
//! marks in it (acked records come back as counted redeliveries, never lost). New appends go to
//! a new segment.

mod queue;
mod record;
mod writer;

use std::path::PathBuf;

pub use queue::Queue;
pub use record::record_len;
pub use writer::{now_ms, Writer};

/// Sizes of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most bytes of queued records.
    pub budget_bytes: u64,
    /// A segment takes appends until it holds at least this many bytes.
    pub segment_bytes: u64,
}

impl Options {
    /// A budget, with segments of a sixteenth of it (between 64 KiB and 64 MiB).
    pub fn with_budget(budget_bytes: u64) -> Options {
        Options {
            budget_bytes,
            segment_bytes: (budget_bytes / 16).clamp(64 << 10, 64 << 20),
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Higher is handed out first and evicted last.
    pub priority: u8,
    /// Dropped when it has waited this long.
    pub ttl_ms: Option<u64>,
}

/// A queued message handed out for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub priority: u8,
    pub enqueued_ms: u64,
    pub expires_ms: Option<u64>,
    /// It was handed out before (before a restart or a nack): the remote may have it already.
    pub redelivery: bool,
}

/// What became of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Queued(u64),
    Dropped(DropReason),
}

/// Why a record left the queue without being acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Ttl,
    Budget,
    Corrupt,
}

/// Records dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops {
    /// Their TTL ran out.
    pub ttl: u64,
    /// Evicted, or refused, to keep the byte budget.
    pub budget: u64,
    /// Damaged on disk: a record that failed its checksum when read, or a segment tail set
    /// aside at open (one per tail, whatever it held).
    pub corrupt: u64,
}

/// Counters (since the queue was opened) and sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub queued_records: u64,
    pub queued_bytes: u64,
    pub in_flight: u64,
    pub oldest_enqueued_ms: Option<u64>,
    pub appended: u64,
    /// Records handed out (redeliveries included).
    pub sent: u64,
    pub acked: u64,
    /// Records handed out again after a restart or a nack: possible duplicates at the remote.
    pub redelivered: u64,
    /// Records found at open.
    pub recovered: u64,
    pub dropped: Drops,
    pub corrupt_bytes: u64,
    pub segments: u64,
    pub disk_bytes: u64,
}

/// A failure of the queue's storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("queue file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("queue file {path}: the record at offset {offset} fails its checksum")]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("the queue's writer thread has stopped")]
    Closed,
}
