//! `store`: append messages straight into a fresh SQLite store from many tasks at once and
//! count what the single writer commits per second, once per group-commit batch size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use octet::store::sqlite::{MAX_BATCH, SqliteStore, StoreOptions};
use octet::store::{Identity, NewMessage, NewUser, Store, TokenRequest};
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
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
pub struct Row {
    pub max_batch: usize,
    pub senders: usize,
    pub seconds: f64,
    pub sends: u64,
    pub sends_per_sec: f64,
}

/// Runs the comparison and prints a table.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &max_batch in &args.batches {
        let dir = tempfile::tempdir()?;
        let options = StoreOptions {
            max_batch,
            full_sync: args.full_sync,
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
                token_expires: i64::MAX,
            });
        }
        let count = Arc::new(AtomicU64::new(0));
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
        for task in tasks {
            task.await?;
        }
        let seconds = started.elapsed().as_secs_f64();
        let sends = count.load(Ordering::Relaxed);
        rows.push(Row {
            max_batch,
            senders: n_senders,
            seconds,
            sends,
            sends_per_sec: sends as f64 / seconds,
        });
    }
    println!(
        "{:>10} {:>8} {:>10} {:>12}",
        "max_batch", "senders", "sends", "sends/s"
    );
    for row in &rows {
        println!(
            "{:>10} {:>8} {:>10} {:>12.0}",
            row.max_batch, row.senders, row.sends, row.sends_per_sec
        );
    }
    if let Some(path) = args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    }
    Ok(())
}
