//! Model-based property test of the disk queue: random sequences of append, pop, ack, nack,
//! expire, sync, clean restart, crash (everything unsynced lost) and crash with the newest
//! segment truncated, checked after every step against an in-memory model of the queue.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // helpers of a test; it truncates a segment

use std::collections::BTreeMap;
use std::path::Path;

use bridge_queue::{record_len, Appended, DropReason, Drops, NewRecord, Options, Queue};
use proptest::prelude::*;

const OPTS: Options = Options {
    budget_bytes: 2_000,
    segment_bytes: 300,
};

#[derive(Debug, Clone)]
enum Op {
    Append {
        priority: u8,
        ttl_ms: Option<u64>,
        size: usize,
    },
    Pop {
        max: usize,
    },
    Ack {
        pick: usize,
    },
    Nack {
        pick: usize,
    },
    Expire,
    Advance {
        ms: u64,
    },
    Sync,
    Restart,
    Crash,
    CrashTruncate {
        cut: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, prop::option::of(1u64..60), 0usize..250)
            .prop_map(|(priority, ttl_ms, size)| Op::Append { priority, ttl_ms, size }),
        5 => (1usize..5).prop_map(|max| Op::Pop { max }),
        5 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Nack { pick }),
        1 => Just(Op::Expire),
        2 => (1u64..30).prop_map(|ms| Op::Advance { ms }),
        3 => Just(Op::Sync),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => (1u64..120).prop_map(|cut| Op::CrashTruncate { cut }),
    ]
}

#[derive(Debug, Clone)]
struct MRec {
    priority: u8,
    expires_ms: u64,
    len: u64,
    topic: String,
    payload: Vec<u8>,
    in_flight: bool,
    sent_before: bool,
}

/// What the queue should hold and have counted.
#[derive(Debug, Clone, Default)]
struct Model {
    recs: BTreeMap<u64, MRec>,
    drops: Drops,
    acked: u64,
    redelivered: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.recs.values().map(|r| r.len).sum()
    }

    /// Ready ids in the order the queue hands them out: highest priority, then oldest.
    fn ready(&self) -> Vec<u64> {
        let mut ids: Vec<_> = self.recs.iter().filter(|(_, r)| !r.in_flight).collect();
        ids.sort_by_key(|(id, r)| (std::cmp::Reverse(r.priority), **id));
        ids.into_iter().map(|(id, _)| *id).collect()
    }

    fn in_flight(&self) -> Vec<u64> {
        self.recs
            .iter()
            .filter(|(_, r)| r.in_flight)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The outcome of an append: `None` when it is dropped, evicting what it must.
    fn admit(&mut self, len: u64, priority: u8) -> bool {
        if len > OPTS.budget_bytes {
            self.drops.budget += 1;
            return false;
        }
        let need = (self.bytes() + len).saturating_sub(OPTS.budget_bytes);
        let mut victims: Vec<_> = self
            .recs
            .iter()
            .filter(|(_, r)| !r.in_flight && r.priority <= priority)
            .map(|(id, r)| (r.priority, *id, r.len))
            .collect();
        if victims.iter().map(|v| v.2).sum::<u64>() < need {
            self.drops.budget += 1;
            return false;
        }
        victims.sort();
        let mut freed = 0;
        for (_, id, len) in victims {
            if freed >= need {
                break;
            }
            self.recs.remove(&id);
            self.drops.budget += 1;
            freed += len;
        }
        true
    }

    fn reopened(mut self) -> Model {
        for r in self.recs.values_mut() {
            r.in_flight = false;
        }
        Model {
            recs: self.recs,
            ..Model::default()
        }
    }
}

struct Harness<'a> {
    dir: &'a Path,
    q: Option<Queue>,
    model: Model,
    durable: Model,
    now: u64,
    seq: u64,
}

impl Harness<'_> {
    fn q(&mut self) -> &mut Queue {
        self.q.as_mut().expect("open")
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Append {
                priority,
                ttl_ms,
                size,
            } => self.append(priority, ttl_ms, size),
            Op::Pop { max } => self.pop(max),
            Op::Ack { pick } => {
                let flying = self.model.in_flight();
                if let Some(&id) = flying.get(pick % flying.len().max(1)) {
                    assert!(self.q().ack(id));
                    self.model.recs.remove(&id);
                    self.model.acked += 1;
                }
            }
            Op::Nack { pick } => {
                let flying = self.model.in_flight();
                if let Some(&id) = flying.get(pick % flying.len().max(1)) {
                    assert!(self.q().nack(id));
                    self.model.recs.get_mut(&id).unwrap().in_flight = false;
                }
            }
            Op::Expire => {
                let now = self.now;
                let due: Vec<u64> = self
                    .model
                    .recs
                    .iter()
                    .filter(|(_, r)| !r.in_flight && r.expires_ms != 0 && r.expires_ms <= now)
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(self.q().expire(now), due.len() as u64);
                for id in due {
                    self.model.recs.remove(&id);
                    self.model.drops.ttl += 1;
                }
            }
            Op::Advance { ms } => self.now += ms,
            Op::Sync => {
                self.q().sync().unwrap();
                self.durable = self.model.clone();
            }
            Op::Restart => {
                self.q.take().unwrap().close().unwrap();
                self.model = self.model.clone().reopened();
                self.reopen();
            }
            Op::Crash => {
                self.q.take().unwrap().crash();
                self.model = self.durable.clone().reopened();
                self.reopen();
            }
            Op::CrashTruncate { cut } => self.crash_truncate(cut),
        }
        self.check();
    }

    fn append(&mut self, priority: u8, ttl_ms: Option<u64>, size: usize) {
        self.seq += 1;
        let topic = format!("t/{}", self.seq % 7);
        let payload: Vec<u8> = (0..size).map(|i| (i as u64 + self.seq) as u8).collect();
        let len = record_len(topic.len(), payload.len());
        let rec = NewRecord {
            topic: topic.clone(),
            payload: payload.clone(),
            priority,
            ttl_ms,
        };
        let now = self.now;
        let got = self.q().append(&rec, now).unwrap();
        if self.model.admit(len, priority) {
            let Appended::Queued(id) = got else {
                panic!("the model queues it, the queue says {got:?}");
            };
            assert!(!self.model.recs.contains_key(&id), "id {id} reused");
            let expires_ms = ttl_ms.map_or(0, |t| now + t);
            self.model.recs.insert(
                id,
                MRec {
                    priority,
                    expires_ms,
                    len,
                    topic,
                    payload,
                    in_flight: false,
                    sent_before: false,
                },
            );
        } else {
            assert_eq!(got, Appended::Dropped(DropReason::Budget));
        }
    }

    fn pop(&mut self, max: usize) {
        let now = self.now;
        let mut want = Vec::new();
        for id in self.model.ready() {
            if want.len() == max {
                break;
            }
            let r = self.model.recs.get_mut(&id).unwrap();
            if r.expires_ms != 0 && r.expires_ms <= now {
                self.model.recs.remove(&id);
                self.model.drops.ttl += 1;
                continue;
            }
            r.in_flight = true;
            if r.sent_before {
                self.model.redelivered += 1;
            }
            want.push((id, r.topic.clone(), r.payload.clone(), r.sent_before));
            r.sent_before = true;
        }
        let got: Vec<_> = self
            .q()
            .pop(max, now)
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.topic, r.payload, r.redelivery))
            .collect();
        assert_eq!(got, want);
    }

    fn crash_truncate(&mut self, cut: u64) {
        let newest = self.q().newest_segment();
        self.q.take().unwrap().crash();
        self.model = self.durable.clone().reopened();
        if let Some((path, records)) = newest {
            let len = records.last().map_or(0, |r| r.1);
            if len > 0 {
                let keep = len.saturating_sub(cut);
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(keep).unwrap();
                let mut on_boundary = keep == 0;
                for (id, end) in records {
                    on_boundary |= end == keep;
                    if end > keep {
                        self.model.recs.remove(&id);
                    }
                }
                if !on_boundary {
                    self.model.drops.corrupt += 1;
                }
            }
        }
        self.reopen();
    }

    fn reopen(&mut self) {
        self.q = Some(Queue::open(self.dir, OPTS).unwrap());
        // What open found (and set aside) is on disk now.
        self.durable = self.model.clone();
    }

    fn check(&mut self) {
        let s = self.q.as_ref().unwrap().stats();
        let m = &self.model;
        assert_eq!(s.queued_records, m.recs.len() as u64, "queued records");
        assert_eq!(s.queued_bytes, m.bytes(), "queued bytes");
        assert!(s.queued_bytes <= OPTS.budget_bytes);
        assert_eq!(s.in_flight, m.in_flight().len() as u64, "in flight");
        assert_eq!(s.dropped, m.drops, "drops");
        assert_eq!(s.acked, m.acked, "acked");
        assert_eq!(s.redelivered, m.redelivered, "redelivered");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_behaves_like_its_model(ops in prop::collection::vec(op(), 1..90)) {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Harness {
            dir: dir.path(),
            q: Some(Queue::open(dir.path(), OPTS).unwrap()),
            model: Model::default(),
            durable: Model::default(),
            now: 1_000,
            seq: 0,
        };
        for op in &ops {
            h.step(op);
        }
        // Whatever happened, a clean restart finds exactly what the model holds.
        h.step(&Op::Restart);
        let mut ids = Vec::new();
        let q = h.q();
        loop {
            let got = q.pop(16, 0).unwrap();
            if got.is_empty() { break; }
            ids.extend(got.into_iter().map(|r| r.id));
        }
        ids.sort_unstable();
        let want: Vec<u64> = h.model.recs.keys().copied().collect();
        prop_assert_eq!(ids, want);
    }
}

/// `flush` writes without an fsync: a crash of the process (the queue dropped without `sync`)
/// loses nothing flushed, pops and acks included; `take_unsynced` hands out each written file
/// once, and `pop_id` hands out one record out of order.
#[test]
fn flushed_records_and_marks_survive_a_crash_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let new = |topic: &str| NewRecord {
        topic: topic.into(),
        payload: b"p".to_vec(),
        priority: 0,
        ttl_ms: None,
    };
    let mut q = Queue::open(dir.path(), OPTS).unwrap();
    let ids: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|t| match q.append(&new(t), 0).unwrap() {
            Appended::Queued(id) => id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(q.pop_id(ids[1], 0).unwrap().unwrap().topic, "b");
    assert!(q.pop_id(ids[1], 0).unwrap().is_none(), "already in flight");
    assert!(q.ack(ids[1]));
    assert_eq!(q.pop(1, 0).unwrap()[0].topic, "a");
    q.flush().unwrap();
    // The head segment and the ledger, once.
    assert_eq!(q.take_unsynced().unwrap().len(), 2);
    assert!(q.take_unsynced().unwrap().is_empty());
    assert_eq!(q.len().0, 2);
    q.crash();

    let mut q = Queue::open(dir.path(), OPTS).unwrap();
    let back = q.pop(10, 0).unwrap();
    let topics: Vec<(&str, bool)> = back
        .iter()
        .map(|r| (r.topic.as_str(), r.redelivery))
        .collect();
    assert_eq!(topics, [("a", true), ("c", false)]);
}
