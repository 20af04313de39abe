//! What a test compares to prove nothing changed: every table and every stored file.

use std::time::Duration;

use rusqlite::types::ValueRef;

use super::{TestServer, WAIT};

impl TestServer {
    /// Every row of every table (whatever tables the schema has) and every file under
    /// `files/` with its size, read straight from the data dir: compare two snapshots to prove
    /// a refused request changed nothing. A session that ends records its device's last-seen
    /// time: after a disconnect, call [`TestServer::sessions_settled`] first.
    pub fn snapshot(&self) -> Vec<String> {
        let data_dir = &self.state.config.data_dir;
        let conn = rusqlite::Connection::open(data_dir.join("octet.db")).unwrap();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            tables.iter().any(|t| t == "messages"),
            "no schema in the snapshot: {tables:?}"
        );
        let mut rows = Vec::new();
        for table in &tables {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
            let n = stmt.column_count();
            // Last-seen times reach the table up to a second late; the state is the table's
            // with the pending ones merged in (what `devices` reports), whenever it is taken.
            let last_seen = (table == "users")
                .then(|| stmt.column_index("last_seen").unwrap())
                .zip(stmt.column_index("uid").ok());
            let mut q = stmt.query([]).unwrap();
            let mut table_rows = Vec::new();
            while let Some(row) = q.next().unwrap() {
                let cols: Vec<String> = (0..n)
                    .map(|i| match last_seen {
                        Some((col, uid)) if col == i => {
                            let stored = row.get::<_, Option<i64>>(i).unwrap();
                            let uid = row.get(uid).unwrap();
                            let seen = self.state.last_seen.merged(uid, stored);
                            format!("{:?}", seen.map_or(ValueRef::Null, ValueRef::Integer))
                        }
                        _ => match row.get_ref(i).unwrap() {
                            ValueRef::Text(text) => {
                                format!("{:?}", String::from_utf8_lossy(text))
                            }
                            value => format!("{value:?}"),
                        },
                    })
                    .collect();
                table_rows.push(format!("{table}: {}", cols.join(" | ")));
            }
            // Composite keys: sorting the rendered rows orders every table fully.
            table_rows.sort();
            rows.extend(table_rows);
        }
        let files = data_dir.join("files");
        let mut listing = Vec::new();
        list_files(&files, &files, &mut listing);
        listing.sort();
        rows.extend(listing);
        rows
    }

    /// Waits until every WebSocket session has ended (the `connections` gauge falls only after
    /// a session recorded its last-seen time and ended its calls), so a snapshot taken next
    /// does not race a disconnect.
    pub async fn sessions_settled(&self) {
        self.sessions_down_to(0).await;
    }

    /// Waits until only `open` WebSocket sessions remain (the ones the test still holds):
    /// every other one has recorded its last-seen time and ended.
    pub async fn sessions_down_to(&self, open: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.state.metrics.connections.get();
            if now <= open {
                assert_eq!(now, open, "a session the test holds has ended");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{now} sessions still open after {WAIT:?}, {open} expected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Every file under `dir` as `files/<path relative to root> <size>`.
fn list_files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            list_files(root, &entry.path(), out);
        } else {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push(format!("files/{rel} {}", meta.len()));
        }
    }
}
