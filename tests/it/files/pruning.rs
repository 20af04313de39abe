//! Pruning: unreferenced files go, referenced ones stay, files go with the events that carried them.

use super::*;

#[tokio::test]
async fn pruning_removes_unreferenced_files_only() {
    let server = TestServer::start_with(|c| {
        c.retention = None;
        c.upload_grace = Duration::from_millis(300);
        c.prune_every = Duration::from_millis(100);
    })
    .await;
    let mut alice = server.device("alice@example.com", "a").await;
    let bob = server.device("bob@example.com", "b").await;
    let sent = upload_ok(&server, &alice.token, b"kept".to_vec(), "kept.txt").await;
    let unsent = upload_ok(&server, &alice.token, b"dropped".to_vec(), "dropped.txt").await;
    send_files(&mut alice, "m1", "bob@example.com", &[&sent], None).await;
    alice.expect("sent").await;

    until("the unsent upload was never pruned", || {
        count(&server, "files") <= 1
    })
    .await;
    let url = |f: &Value| f["url"].as_str().unwrap().to_string();
    assert_eq!(
        get(&server, &url(&unsent), Some(&alice.token))
            .await
            .status(),
        404
    );
    assert_eq!(
        stored(&server).len(),
        1,
        "the pruned bytes are gone from disk"
    );

    // Deleting the sender leaves the file in the recipient's log, and readable there.
    let removed = server
        .backend(json!({"op":"userdel","user":{"address":"alice@example.com"}}))
        .await;
    assert_eq!(removed["result"], true, "{removed}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let kept = get(&server, &url(&sent), Some(&bob.token)).await;
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.bytes().await.unwrap().as_ref(), b"kept");
    assert_eq!(stored(&server).len(), 1);
}

#[tokio::test]
async fn files_go_with_the_events_that_carried_them() {
    let server = TestServer::start_with(|c| {
        c.retention = Some(Duration::from_millis(1));
        c.upload_grace = Duration::from_secs(3600);
        c.prune_every = Duration::from_millis(100);
    })
    .await;
    let mut alice = server.device("alice@example.com", "a").await;
    server.device_token("bob@example.com", "b").await;
    let sent = upload_ok(&server, &alice.token, b"old news".to_vec(), "old.txt").await;
    send_files(&mut alice, "m1", "bob@example.com", &[&sent], None).await;
    alice.expect("sent").await;
    // Uploaded after the send: young, never sent, kept for its grace period.
    let fresh = upload_ok(&server, &alice.token, b"draft".to_vec(), "draft.txt").await;

    until("the expired file was never pruned", || {
        count(&server, "blobs") <= 1
    })
    .await;
    let status = |f: &Value| {
        let url = f["url"].as_str().unwrap().to_string();
        let token = alice.token.clone();
        let server = &server;
        async move { get(server, &url, Some(&token)).await.status() }
    };
    assert_eq!(status(&sent).await, 404);
    assert_eq!(status(&fresh).await, 200);
    assert_eq!(stored(&server).len(), 1);
}
