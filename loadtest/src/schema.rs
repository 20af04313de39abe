//! `schema`: what one send costs in SQLite under candidate log layouts, measured on the SQL
//! alone (no broker, one thread, group commits of `--batch` sends). It chose the direction of
//! the store rewrite (issue 15, item 4): each variant removes one more cost from today's layout.
//!
//! - `current`: today's tables and indexes (0001–0006): a `messages` row with `AUTOINCREMENT`,
//!   its client-id index and `messages_ts`; two `events` rows with `events_ts` and
//!   `events_mid`; two `persons` seq bumps; foreign keys on.
//! - `lean`: no index that only background jobs read (`events_ts`, `messages_ts`,
//!   `events_mid`), no `AUTOINCREMENT`, no foreign-key checks on the hot path.
//! - `memseq`: `lean`, with each person's last seq kept in memory by the writer (recoverable at
//!   open as the log's highest seq) instead of an `UPDATE persons` per log.
//! - `onerow`: `memseq`, and the sender's log read from `messages` through an index on
//!   `(sender_person, sender_seq)`: one `events` row per send (the recipient's).
//! - `upsert`: `onerow`, with the client-id check folded into the insert
//!   (`ON CONFLICT (sender_person, client_id) DO NOTHING`) instead of a `SELECT` before it.
//! - `nodedup`: `onerow` without the client-id index (not viable: it shows that index's cost).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use rusqlite::{Connection, params};
use serde::Serialize;

/// Flags of the `schema` subcommand.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Layouts to measure, in order.
    #[arg(long, value_delimiter = ',', default_values_t = ["current", "lean", "memseq", "onerow", "upsert", "nodedup"].map(String::from))]
    pub variants: Vec<String>,
    /// Sends per variant.
    #[arg(long, default_value_t = 200_000)]
    pub sends: u64,
    /// Sends per transaction (the writer's group commit).
    #[arg(long, default_value_t = 64)]
    pub batch: u64,
    /// Bytes of message body.
    #[arg(long, default_value_t = 100)]
    pub body: usize,
}

/// One variant's cost.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The layout.
    pub variant: String,
    /// Wall time per send, µs.
    pub wall_us: f64,
    /// CPU time of this thread per send, µs.
    pub cpu_us: f64,
    /// Database and WAL bytes per send.
    pub bytes: f64,
}

const PERSONS: i64 = 1000;

/// Runs every variant and prints a table.
pub fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let body = format!("{{\"x\":\"{}\"}}", "x".repeat(args.body.saturating_sub(8)));
    let mut rows = Vec::new();
    println!(
        "{:<8} {:>12} {:>12} {:>12}",
        "variant", "µs/send", "CPU µs/send", "B/send"
    );
    for variant in &args.variants {
        let layout = Layout::parse(variant)?;
        let path = dir.path().join(format!("{variant}.db"));
        let conn = layout.open(&path)?;
        let mut seqs: HashMap<i64, i64> = HashMap::new();
        let (wall, cpu) = (Instant::now(), thread_cpu());
        let mut n = 0;
        while n < args.sends {
            exec(&conn, "BEGIN IMMEDIATE")?;
            for _ in 0..args.batch {
                n += 1;
                layout.send(&conn, &mut seqs, n, &body)?;
            }
            exec(&conn, "COMMIT")?;
        }
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), thread_cpu() - cpu);
        let size =
            |suffix: &str| std::fs::metadata(path.with_extension(suffix)).map_or(0, |m| m.len());
        let row = Row {
            variant: variant.clone(),
            wall_us: wall * 1e6 / n as f64,
            cpu_us: cpu * 1e6 / n as f64,
            bytes: (size("db") + size("db-wal")) as f64 / n as f64,
        };
        println!(
            "{:<8} {:>12.1} {:>12.1} {:>12.0}",
            row.variant, row.wall_us, row.cpu_us, row.bytes
        );
        rows.push(row);
    }
    Ok(rows)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Current,
    Lean,
    MemSeq,
    OneRow,
    Upsert,
    NoDedup,
}

impl Layout {
    fn parse(name: &str) -> anyhow::Result<Layout> {
        Ok(match name {
            "current" => Layout::Current,
            "lean" => Layout::Lean,
            "memseq" => Layout::MemSeq,
            "onerow" => Layout::OneRow,
            "upsert" => Layout::Upsert,
            "nodedup" => Layout::NoDedup,
            other => anyhow::bail!(
                "unknown variant {other}; use current, lean, memseq, onerow, upsert or nodedup"
            ),
        })
    }

    fn open(self, path: &std::path::Path) -> anyhow::Result<Connection> {
        let conn = Connection::open(path).context("open")?;
        conn.pragma_update(None, "page_size", 1024)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        let current = self == Layout::Current;
        conn.pragma_update(None, "foreign_keys", if current { "ON" } else { "OFF" })?;
        let autoincrement = if current { "AUTOINCREMENT" } else { "" };
        let dedup = if self == Layout::NoDedup {
            ""
        } else {
            ", UNIQUE (sender_person, client_id)"
        };
        conn.execute_batch(&format!(
            "CREATE TABLE users (uid INTEGER PRIMARY KEY AUTOINCREMENT, address TEXT NOT NULL UNIQUE);
             CREATE TABLE persons (person INTEGER PRIMARY KEY REFERENCES users(uid) ON DELETE CASCADE,
                 last_seq INTEGER NOT NULL DEFAULT 0, profile_version INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE messages (mid INTEGER PRIMARY KEY {autoincrement},
                 sender_person INTEGER NOT NULL, client_id TEXT NOT NULL, from_address TEXT NOT NULL,
                 to_address TEXT NOT NULL, recipient_person INTEGER NOT NULL,
                 sender_seq INTEGER NOT NULL, recipient_seq INTEGER NOT NULL, ts INTEGER NOT NULL,
                 body TEXT NOT NULL, pv INTEGER NOT NULL DEFAULT 0, files TEXT{dedup});
             CREATE TABLE events (person INTEGER NOT NULL REFERENCES persons(person) ON DELETE CASCADE,
                 seq INTEGER NOT NULL, kind TEXT NOT NULL, mid INTEGER REFERENCES messages(mid),
                 out INTEGER NOT NULL DEFAULT 0, ts INTEGER NOT NULL, PRIMARY KEY (person, seq))
                 WITHOUT ROWID;"
        ))?;
        match self {
            Layout::Current => conn.execute_batch(
                "CREATE INDEX events_ts ON events(ts); CREATE INDEX messages_ts ON messages(ts);
                 CREATE INDEX events_mid ON events(mid);",
            )?,
            Layout::OneRow | Layout::Upsert | Layout::NoDedup => conn.execute_batch(
                "CREATE INDEX messages_sender ON messages(sender_person, sender_seq);",
            )?,
            Layout::Lean | Layout::MemSeq => {}
        }
        for p in 1..=PERSONS {
            conn.execute(
                "INSERT INTO users (uid, address) VALUES (?1, ?2)",
                params![p, format!("u{p}@bench")],
            )?;
            conn.execute("INSERT INTO persons (person) VALUES (?1)", [p])?;
        }
        Ok(conn)
    }

    /// One send, as its own savepoint (as the store's writer runs each job).
    fn send(
        self,
        conn: &Connection,
        seqs: &mut HashMap<i64, i64>,
        n: u64,
        body: &str,
    ) -> anyhow::Result<()> {
        let sender = (n as i64 % PERSONS) + 1;
        let recipient = ((n as i64 * 7 + 3) % PERSONS) + 1;
        let client_id = n.to_string();
        let ts = 1_700_000_000_000i64 + n as i64;
        exec(conn, "SAVEPOINT job")?;
        if !matches!(self, Layout::NoDedup | Layout::Upsert) {
            let dup = conn
                .prepare_cached(
                    "SELECT count(*) FROM messages WHERE sender_person = ?1 AND client_id = ?2",
                )?
                .query_row(params![sender, client_id], |r| r.get::<_, i64>(0))?;
            anyhow::ensure!(dup == 0, "client ids are unique here");
        }
        let (sender_seq, recipient_seq) = if matches!(self, Layout::Current | Layout::Lean) {
            let mut bump = conn.prepare_cached(
                "UPDATE persons SET last_seq = last_seq + 1 WHERE person = ?1 RETURNING last_seq",
            )?;
            let s: i64 = bump.query_row([sender], |r| r.get(0))?;
            let r: i64 = bump.query_row([recipient], |r| r.get(0))?;
            (s, r)
        } else {
            let mut next = |p| {
                let seq = seqs.entry(p).or_insert(0);
                *seq += 1;
                *seq
            };
            (next(sender), next(recipient))
        };
        let conflict = if self == Layout::Upsert {
            "ON CONFLICT (sender_person, client_id) DO NOTHING"
        } else {
            ""
        };
        let inserted = conn
            .prepare_cached(&format!(
                "INSERT INTO messages (sender_person, client_id, from_address, to_address,
                     recipient_person, sender_seq, recipient_seq, ts, body)
                 VALUES (?1, ?2, 'from@bench', 'to@bench', ?3, ?4, ?5, ?6, ?7) {conflict}"
            ))?
            .execute(params![
                sender,
                client_id,
                recipient,
                sender_seq,
                recipient_seq,
                ts,
                body
            ])?;
        anyhow::ensure!(inserted == 1, "client ids are unique here");
        let mid = conn.last_insert_rowid();
        let mut event = conn.prepare_cached(
            "INSERT INTO events (person, seq, kind, mid, out, ts) VALUES (?1, ?2, 'message', ?3, ?4, ?5)",
        )?;
        if matches!(self, Layout::Current | Layout::Lean | Layout::MemSeq) {
            event.execute(params![sender, sender_seq, mid, true, ts])?;
        }
        event.execute(params![recipient, recipient_seq, mid, false, ts])?;
        exec(conn, "RELEASE job")?;
        Ok(())
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// This thread's CPU time in seconds.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime writes only into the timespec it is given.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_runs_and_writes_something() {
        let args = Args {
            variants: ["current", "lean", "memseq", "onerow", "upsert", "nodedup"]
                .map(String::from)
                .to_vec(),
            sends: 300,
            batch: 64,
            body: 100,
        };
        let rows = run(&args).unwrap();
        assert_eq!(rows.len(), 6);
        assert!(
            rows.iter().all(|r| r.cpu_us > 0.0 && r.bytes > 100.0),
            "{rows:?}"
        );
    }
}
