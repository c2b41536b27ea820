//! kill -9 of a process appending with durable acks: every append it reported is found after
//! the restart (or was acked before), over several rounds on the same queue.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // the test runs the driver binary; helpers of a test

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bridge_queue::{Options, Queue};

#[test]
fn every_durable_append_survives_kill_9_of_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut appended = BTreeSet::new();
    let mut acked = BTreeSet::new();
    for round in 0..4 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bridge-queue-tool"))
            .args(["write", dir.path().to_str().unwrap(), &format!("r{round}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        // Kill it mid-stream, after a number of appends that differs per round.
        while seen < 1_500 + 700 * round {
            let line = lines.next().expect("the writer stopped early").unwrap();
            seen += usize::from(line.starts_with("a "));
            record(&line, &mut appended, &mut acked);
        }
        child.kill().unwrap();
        // Lines already in the pipe were printed after their append was durable.
        for line in lines {
            record(&line.unwrap(), &mut appended, &mut acked);
        }
        child.wait().unwrap();

        let mut q = Queue::open(dir.path(), Options::with_budget(256 << 20)).unwrap();
        let mut present = BTreeSet::new();
        let mut duplicates = 0;
        for _ in 0..1_000_000 {
            let got = q.pop(1024, 0).unwrap();
            if got.is_empty() {
                break;
            }
            for r in got {
                let p = String::from_utf8(r.payload).unwrap();
                duplicates += usize::from(acked.contains(&p));
                assert!(present.insert(p), "a record is queued twice");
            }
        }
        let lost: Vec<_> = appended
            .difference(&acked)
            .filter(|p| !present.contains(*p))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} durable appends lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        // Acked records may come back (their removal was not synced yet), bounded by what
        // the consumer handled in its last moments: one batch of marks per thread.
        assert!(
            duplicates <= 4 * bridge_queue::Writer::MAX_BATCH,
            "{duplicates} acked records came back"
        );
        // Leave the queue as the writer left it (the pops above are not recorded).
        q.crash();
    }
    assert!(
        appended.len() >= 4 * 1_500,
        "the writer appended too little to prove anything"
    );
}

fn record(line: &str, appended: &mut BTreeSet<String>, acked: &mut BTreeSet<String>) {
    if let Some(p) = line.strip_prefix("a ") {
        appended.insert(p.to_string());
    } else if let Some(p) = line.strip_prefix("k ") {
        acked.insert(p.to_string());
    }
}
