//! `/readyz` answers 503 while the store cannot be written or read, and 200 again once it can:
//! a load balancer takes the broker out of rotation instead of sending it devices it cannot
//! serve.

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use crate::harness::TestServer;

/// `/readyz`'s status, body and how long it took; the client gives up well after the broker's
/// own 2 s bound, so a hanging probe fails the test instead of passing late.
async fn readyz(server: &TestServer) -> (u16, String, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(server.http_url("/readyz"))
        .timeout(Duration::from_secs(4))
        .send()
        .await
        .expect("/readyz answers within 4 s");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap(), started.elapsed())
}

/// A connection of "another process" holding the database's write lock.
fn lock_writes(server: &TestServer) -> rusqlite::Connection {
    let lock = rusqlite::Connection::open(server.state.config.data_dir.join("octet.db")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    lock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_another_process_locks_the_database() {
    let server = TestServer::start().await;
    assert_eq!(readyz(&server).await.0, 200);

    let lock = lock_writes(&server);
    let (status, body, took) = readyz(&server).await;
    assert_eq!((status, body.as_str()), (503, "store not writable"));
    assert!(took < Duration::from_millis(3500), "took {took:?}");

    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let (status, body, _) = readyz(&server).await;
    assert_eq!((status, body.as_str()), (200, "ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_store_cannot_be_read() {
    let server = TestServer::start().await;
    assert_eq!(readyz(&server).await.0, 200);

    // WAL readers never wait for a writer, so reads are broken the way a damaged shared-memory
    // index breaks them: its header zeroed (the index is rebuilt from the WAL by whoever next
    // holds the write lock) while another connection holds that lock. Every read then retries
    // until SQLite gives up with SQLITE_PROTOCOL, about 10 s later.
    let lock = lock_writes(&server);
    let shm = server.state.config.data_dir.join("octet.db-shm");
    let mut file = std::fs::OpenOptions::new().write(true).open(&shm).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&[0u8; 136]).unwrap();
    drop(file);
    let (status, body, took) = readyz(&server).await;
    assert_eq!((status, body.as_str()), (503, "store unreadable"));
    assert!(took < Duration::from_millis(3500), "took {took:?}");

    // Released: the next reader rebuilds the index and the broker is ready again, data intact.
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, _) = readyz(&server).await;
        if status == 200 {
            assert_eq!(body, "ready");
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = server.device("alice@example.com", "a").await;
    alice
        .send_msg("after", "alice@example.com", serde_json::json!(1))
        .await;
}
