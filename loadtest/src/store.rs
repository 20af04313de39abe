//! `store`: append messages straight into a fresh SQLite store from many tasks at once and
//! count what the single writer commits per second, once per group-commit batch size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use octet::store::sqlite::{MAX_BATCH, SqliteStore, StoreOptions};
use octet::store::{Identity, NewMessage, NewUser, OutboxOptions, Store, TokenRequest};
use serde::Serialize;
use serde_json::value::RawValue;

/// Flags of `store`.
#[derive(clap::Args)]
pub struct Args {
    /// Concurrent senders (each waits for its commit before the next send, like a connection).
    #[arg(long, default_value_t = 256)]
    senders: usize,
    /// Seconds per batch size.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Batch sizes to compare (1 = no group commit).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, MAX_BATCH])]
    batches: Vec<usize>,
    /// fsync every commit (SQLite synchronous=FULL), as `octet serve --sync full`.
    #[arg(long)]
    full_sync: bool,
    /// Webhooks on: every send also writes its webhook event in its transaction, and a drain
    /// task deletes them 100 at a time as the delivery loop does after a receiver's 2xx (the
    /// outbox's whole cost to the writer, without the HTTP).
    #[arg(long)]
    webhooks: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
pub struct Row {
    pub max_batch: usize,
    /// Webhook events written (and drained) with every send.
    pub webhooks: bool,
    pub senders: usize,
    pub seconds: f64,
    pub sends: u64,
    pub sends_per_sec: f64,
    /// CPU time of the store's writer thread per send, in µs (what one thread serializes).
    pub writer_us_per_send: f64,
    /// CPU time of the whole process per send, in µs (the senders' tasks included).
    pub process_us_per_send: f64,
}

/// Nanoseconds on CPU of this process's threads whose name starts with `prefix` (all threads
/// if empty), from `/proc/self/task/*/schedstat`; 0 where it cannot be read.
fn thread_cpu_ns(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// CPU time of the whole process so far, in nanoseconds (threads that ended included).
fn process_cpu_ns() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (us(usage.ru_utime) + us(usage.ru_stime)) * 1_000
}

/// Runs the comparison and prints a table.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &max_batch in &args.batches {
        let dir = tempfile::tempdir()?;
        let options = StoreOptions {
            max_batch,
            full_sync: args.full_sync,
            outbox: args.webhooks.then(|| OutboxOptions {
                grace_ms: 0,
                wake: None,
            }),
            ..StoreOptions::default()
        };
        let store = Arc::new(SqliteStore::open_with(dir.path(), options)?);
        let mut senders = Vec::new();
        for n in 0..args.senders.max(2) {
            let address = format!("user-{n}@bench");
            let user = NewUser {
                address: address.clone(),
                name: None,
                token: TokenRequest::None,
            };
            let issued = store.useradd(user, 0).await?;
            senders.push(Identity {
                uid: issued.uid,
                address: address.clone(),
                person: issued.uid,
                primary_address: address,
                // The load test sends through the store directly; no connection to expire.
                device: None,
                token_expires: i64::MAX,
            });
        }
        let count = Arc::new(AtomicU64::new(0));
        // The writer thread's name as the kernel keeps it (15 bytes).
        let writer_before = thread_cpu_ns("octet-store-wri");
        let process_before = process_cpu_ns();
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        let n_senders = senders.len();
        for (idx, from) in senders.iter().cloned().enumerate() {
            let store = store.clone();
            let count = count.clone();
            let to = senders[(idx + 1) % n_senders].address.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let msg = NewMessage {
                        from: from.clone(),
                        client_id: format!("{n}"),
                        to: to.clone(),
                        body: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
                        files: Vec::new(),
                        ts: 0,
                        accepted: Instant::now(),
                    };
                    if store.append_message(msg).await.is_err() {
                        break;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let drain = args.webhooks.then(|| {
            let store = store.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let ids: Vec<i64> = match store.outbox_peek(100, false).await {
                        Ok(rows) => rows.iter().map(|row| row.id).collect(),
                        Err(_) => break,
                    };
                    if ids.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else if store.outbox_delete(ids).await.is_err() {
                        break;
                    }
                }
            })
        });
        for task in tasks {
            task.await?;
        }
        if let Some(drain) = drain {
            drain.await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let sends = count.load(Ordering::Relaxed);
        let per_send = |ns: u64| ns as f64 / 1_000.0 / sends.max(1) as f64;
        let writer_us_per_send = per_send(thread_cpu_ns("octet-store-wri") - writer_before);
        let process_us_per_send = per_send(process_cpu_ns() - process_before);
        rows.push(Row {
            max_batch,
            webhooks: args.webhooks,
            senders: n_senders,
            seconds,
            sends,
            sends_per_sec: sends as f64 / seconds,
            writer_us_per_send,
            process_us_per_send,
        });
    }
    println!(
        "{:>10} {:>8} {:>10} {:>12} {:>14} {:>15}",
        "max_batch", "senders", "sends", "sends/s", "writer µs/send", "process µs/send"
    );
    for row in &rows {
        println!(
            "{:>10} {:>8} {:>10} {:>12.0} {:>14.1} {:>15.1}",
            row.max_batch,
            row.senders,
            row.sends,
            row.sends_per_sec,
            row.writer_us_per_send,
            row.process_us_per_send
        );
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
