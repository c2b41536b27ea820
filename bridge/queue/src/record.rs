//! The on-disk encoding of a queued record and of a ledger entry, each with a CRC32.
//!
//! A record is `body_len: u32 | crc32(body): u32 | body`, all little-endian, where the body is
//! `id: u64 | enqueued_ms: u64 | expires_ms: u64 (0: never) | priority: u8 | topic_len: u16 |
//! topic | payload`. A ledger entry is `kind: u8 | id: u64 | crc32(kind, id): u32`.

/// Bytes before the body: its length and its checksum.
pub(crate) const HEADER: usize = 8;
/// Bytes of the body before the topic.
const FIXED: usize = 8 + 8 + 8 + 1 + 2;
/// The largest body accepted when reading (a larger length is corruption).
pub(crate) const MAX_BODY: usize = 64 << 20;
/// Bytes of one ledger entry.
pub(crate) const LEDGER_ENTRY: usize = 13;

/// The bytes a record of this topic and payload takes on disk (what the byte budget counts).
pub fn record_len(topic_len: usize, payload_len: usize) -> u64 {
    (HEADER + FIXED + topic_len + payload_len) as u64
}

/// The decoded body of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Body {
    pub(crate) id: u64,
    pub(crate) enqueued_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) priority: u8,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// Append the encoding of a record to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, body: &BodyRef<'_>) {
    let body_len = FIXED + body.topic.len() + body.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body.id.to_le_bytes());
    out.extend_from_slice(&body.enqueued_ms.to_le_bytes());
    out.extend_from_slice(&body.expires_ms.to_le_bytes());
    out.push(body.priority);
    out.extend_from_slice(&(body.topic.len() as u16).to_le_bytes());
    out.extend_from_slice(body.topic.as_bytes());
    out.extend_from_slice(body.payload);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record to encode, borrowed.
pub(crate) struct BodyRef<'a> {
    pub(crate) id: u64,
    pub(crate) enqueued_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) priority: u8,
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
}

/// Why bytes do not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The bytes end before the record does (a torn write).
    Truncated,
    /// The length is impossible, the checksum differs or the topic is not UTF-8.
    Corrupt,
}

/// Decode the record at the start of `bytes`: the body and the bytes it took.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Body, usize), Bad> {
    let header = bytes.get(..HEADER).ok_or(Bad::Truncated)?;
    let body_len = u32::from_le_bytes(header[..4].try_into().map_err(|_| Bad::Corrupt)?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().map_err(|_| Bad::Corrupt)?);
    if !(FIXED..=MAX_BODY).contains(&body_len) {
        return Err(Bad::Corrupt);
    }
    let body = bytes.get(HEADER..HEADER + body_len).ok_or(Bad::Truncated)?;
    if crc32fast::hash(body) != crc {
        return Err(Bad::Corrupt);
    }
    let u64_at = |at: usize| -> u64 {
        let mut b = [0; 8];
        b.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let topic_len = u16::from_le_bytes([body[25], body[26]]) as usize;
    let topic = body.get(FIXED..FIXED + topic_len).ok_or(Bad::Corrupt)?;
    let topic = std::str::from_utf8(topic).map_err(|_| Bad::Corrupt)?;
    Ok((
        Body {
            id: u64_at(0),
            enqueued_ms: u64_at(8),
            expires_ms: u64_at(16),
            priority: body[24],
            topic: topic.to_string(),
            payload: body[FIXED + topic_len..].to_vec(),
        },
        HEADER + body_len,
    ))
}

/// What a ledger entry says about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// The record was handed out for sending: after a restart it may be a duplicate.
    Sent = 1,
    /// The record left the queue (acked or dropped).
    Removed = 2,
}

/// Append the encoding of a ledger entry to `out`.
pub(crate) fn encode_mark(out: &mut Vec<u8>, mark: Mark, id: u64) {
    let start = out.len();
    out.push(mark as u8);
    out.extend_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decode the ledger entries of `bytes` up to the first one that does not check (a torn tail).
/// Returns the entries and the length of the valid prefix.
pub(crate) fn decode_marks(bytes: &[u8]) -> (Vec<(Mark, u64)>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(entry) = bytes.get(at..at + LEDGER_ENTRY) {
        let crc = u32::from_le_bytes([entry[9], entry[10], entry[11], entry[12]]);
        if crc32fast::hash(&entry[..9]) != crc {
            break;
        }
        let mark = match entry[0] {
            1 => Mark::Sent,
            2 => Mark::Removed,
            _ => break,
        };
        let mut id = [0; 8];
        id.copy_from_slice(&entry[1..9]);
        out.push((mark, u64::from_le_bytes(id)));
        at += LEDGER_ENTRY;
    }
    (out, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        let body = BodyRef {
            id: 7,
            enqueued_ms: 1000,
            expires_ms: 2000,
            priority: 3,
            topic: "a/b",
            payload: b"hello",
        };
        encode(&mut out, &body);
        assert_eq!(out.len() as u64, record_len(3, 5));
        let (got, used) = decode(&out).unwrap();
        assert_eq!(used, out.len());
        assert_eq!((got.id, got.priority, got.topic.as_str()), (7, 3, "a/b"));
        assert_eq!(got.payload, b"hello");
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad).is_err(), "bit {bit} flipped went unnoticed");
        }
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err());
        }
    }

    #[test]
    fn ledger_entries_stop_at_a_torn_tail() {
        let mut out = Vec::new();
        encode_mark(&mut out, Mark::Sent, 1);
        encode_mark(&mut out, Mark::Removed, 2);
        let (marks, len) = decode_marks(&out[..out.len() - 1]);
        assert_eq!(marks, vec![(Mark::Sent, 1)]);
        assert_eq!(len, LEDGER_ENTRY);
    }
}
