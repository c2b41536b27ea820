//! A driver of the disk queue for the kill -9 test and the benchmark.
//!
//! - `bridge-queue-tool write <dir> <tag>`: four threads append records through a [`Writer`]
//!   and print `a <payload>` once each append returned (durable); a fifth pops and acks and
//!   prints `k <payload>` for what it acked. Runs until killed (or 1,000,000 appends).
//! - `bridge-queue-tool bench <dir> <messages> <payload bytes> <batch>`: a producer appends
//!   batches while a consumer pops and acks; prints messages per second through
//!   append + pop + ack.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use bridge_queue::{Appended, NewRecord, Options, Writer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["write", dir, tag] => write(dir.into(), tag),
        ["bench", dir, n, size, batch] => bench(dir.into(), n.parse()?, size.parse()?, batch.parse()?),
        _ => Err("usage: bridge-queue-tool write <dir> <tag> | bench <dir> <messages> <payload bytes> <batch>".into()),
    }
}

fn write(dir: PathBuf, tag: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (writer, _thread) = Writer::open(&dir, Options::with_budget(256 << 20))?;
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut threads = Vec::new();
    for t in 0..4 {
        let (writer, out, tag) = (writer.clone(), out.clone(), tag.to_string());
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            for n in 0..250_000u64 {
                let payload = format!("{tag}-{t}-{n}");
                let rec = NewRecord {
                    topic: format!("kill/{t}"),
                    payload: payload.clone().into_bytes(),
                    priority: 0,
                    ttl_ms: None,
                };
                let got = writer.append(vec![rec]).map_err(|e| e.to_string())?;
                if matches!(got[..], [Appended::Queued(_)]) {
                    let mut out = out.lock().map_err(|e| e.to_string())?;
                    writeln!(out, "a {payload}").map_err(|e| e.to_string())?;
                    out.flush().map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        }));
    }
    loop {
        let got = writer.pop(64)?;
        if got.is_empty() {
            if threads.iter().all(std::thread::JoinHandle::is_finished) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            continue;
        }
        writer.ack(got.iter().map(|r| r.id).collect())?;
        let mut out = out.lock().map_err(|e| e.to_string())?;
        for r in got {
            writeln!(out, "k {}", String::from_utf8_lossy(&r.payload))?;
        }
        out.flush()?;
    }
    writer.close()?;
    Ok(())
}

fn bench(
    dir: PathBuf,
    n: u64,
    size: usize,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let (writer, thread) = Writer::open(&dir, Options::with_budget(1 << 30))?;
    let start = Instant::now();
    let producer = {
        let writer = writer.clone();
        std::thread::spawn(move || -> Result<(), bridge_queue::Error> {
            let mut sent = 0;
            while sent < n {
                let k = (n - sent).min(batch as u64);
                let records = (0..k)
                    .map(|i| NewRecord {
                        topic: "bench/topic".into(),
                        payload: vec![(sent + i) as u8; size],
                        priority: 0,
                        ttl_ms: None,
                    })
                    .collect();
                writer.append(records)?;
                sent += k;
            }
            Ok(())
        })
    };
    let mut acked = 0;
    let mut pops = 0u64;
    while acked < n {
        let got = writer.pop(1024)?;
        pops += 1;
        if got.is_empty() {
            std::thread::yield_now();
            continue;
        }
        acked += got.len() as u64;
        writer.ack(got.into_iter().map(|r| r.id).collect())?;
        if pops > 100 * n {
            return Err("the consumer gave up (the producer stalled)".into());
        }
    }
    producer.join().map_err(|_| "producer panicked")??;
    let stats = writer.stats()?;
    writer.close()?;
    thread.join().map_err(|_| "queue thread panicked")?;
    let secs = start.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "queue: {n} messages of {size} B, batches of {batch}: {:.0} msg/s, {:.1} MB/s through append+pop+ack ({secs:.2} s; {} left, disk {} B)",
        n as f64 / secs,
        (n as f64 * size as f64) / secs / 1e6,
        stats.queued_records,
        stats.disk_bytes,
    )?;
    Ok(())
}
