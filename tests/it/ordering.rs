//! Per-person order with the fan-out off the store's writer thread: many persons send to one
//! person at once, that person's devices ack meanwhile (receipts land in the senders' logs)
//! and one of its devices reconnects with `since` in the middle. Every device must see its
//! person's log as seq 1, 2, 3, … with nothing missing and nothing twice. The broker runs more
//! fan-out shards than this machine has cores, so the two halves of a message (the recipient's
//! and the sender's own devices) and the receipts run on different shards.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Device, TestServer};

const SENDERS: usize = 6;
const PER_SENDER: u64 = 60;

/// Reads frames until none arrives for `quiet`, checking the person's log is contiguous from
/// `last + 1`. Stops early once `until` messages in (or out, with `out`) have been seen.
async fn read_log(
    dev: &mut Device,
    last: &mut u64,
    seen: &mut BTreeSet<u64>,
    until: Option<usize>,
) {
    let quiet = Duration::from_millis(700);
    loop {
        if until.is_some_and(|n| seen.len() >= n) {
            return;
        }
        let frame: Value = match tokio::time::timeout(quiet, dev.next()).await {
            Ok(frame) => frame,
            Err(_) if until.is_none() => return,
            Err(_) => panic!("stalled at seq {last} with {} messages seen", seen.len()),
        };
        match frame["op"].as_str() {
            Some("welcome") | Some("synced") => continue,
            Some("message") | Some("receipt") | Some("read") | Some("devices_changed") => {
                let seq = frame["seq"].as_u64().expect("logged events carry a seq");
                assert_eq!(seq, *last + 1, "gap or reorder after seq {last}: {frame}");
                *last = seq;
                if frame["op"] == "message" {
                    assert!(
                        seen.insert(frame["mid"].as_u64().unwrap()),
                        "twice: {frame}"
                    );
                }
            }
            _ => panic!("unexpected {frame}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_senders_to_one_person_stay_in_seq_order_on_every_device_across_a_reconnect() {
    let server = TestServer::start_with(|c| {
        c.fanout_shards = 5;
        c.send_rate = 100_000;
        c.send_burst = 100_000;
    })
    .await;
    let rita = "rita@example.com";
    let mut r1 = server.device(rita, "r1").await;
    let mut r2 = server.device(rita, "r2").await;
    let r3_token = server.device_token(rita, "r3").await["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut r3 = server.login(&r3_token).await;
    r3.expect("welcome").await;

    let mut senders = Vec::new();
    let mut watchers = Vec::new();
    for s in 0..SENDERS {
        let address = format!("sender{s}@example.com");
        senders.push(server.device(&address, "phone").await);
        watchers.push(server.device(&address, "laptop").await);
    }
    let total = SENDERS * PER_SENDER as usize;
    let sending: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, mut dev)| {
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let id = format!("s{s}-{n}");
                    dev.send_json(json!({"op":"send","id":id,"to":"rita@example.com","body":n}))
                        .await;
                    // The sending device gets its person's receipts too; skip to the `sent`.
                    loop {
                        let frame = dev.next().await;
                        match frame["op"].as_str() {
                            Some("sent") => {
                                assert_eq!(frame["id"], json!(id));
                                break;
                            }
                            Some("receipt") | Some("devices_changed") => continue,
                            _ => panic!("unexpected {frame}"),
                        }
                    }
                }
                dev
            })
        })
        .collect();

    // r1 acks as it reads, so receipts go into the senders' logs while they send.
    // Rita's seqs 1 and 2 are the `devices_changed` of r2's and r3's links: r1 was live for
    // both, r2 logged in after the first, r3 after both.
    const LINKS: u64 = 2;
    let r1_task = tokio::spawn(async move {
        let (mut last, mut seen) = (0, BTreeSet::new());
        while seen.len() < total {
            let next_ack = (seen.len() + 37).min(total);
            read_log(&mut r1, &mut last, &mut seen, Some(next_ack)).await;
            r1.send_json(json!({"op":"ack","seq":last})).await;
        }
        (r1, last)
    });
    // r3 reads a third, disconnects, and comes back with `since`.
    let (mut r3_last, mut r3_seen) = (LINKS, BTreeSet::new());
    read_log(&mut r3, &mut r3_last, &mut r3_seen, Some(total / 3)).await;
    drop(r3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut r3 = server.login_since(&r3_token, Some(r3_last), None).await;
    read_log(&mut r3, &mut r3_last, &mut r3_seen, Some(total)).await;

    let (mut r2_last, mut r2_seen) = (1, BTreeSet::new());
    read_log(&mut r2, &mut r2_last, &mut r2_seen, Some(total)).await;
    for task in sending {
        task.await.unwrap();
    }
    let (_r1, r1_last) = r1_task.await.unwrap();
    assert_eq!(
        r1_last,
        LINKS + total as u64,
        "r1 saw every message once, in order"
    );
    assert_eq!(r2_last, LINKS + total as u64);
    assert_eq!(r3_last, LINKS + total as u64);

    // Each sender's other device saw its person's log whole: the copies of the messages it
    // sent (`out`) and the `delivered` receipts r1's acks added, in seq order.
    // Their seq 1 is their own link, before they logged in.
    for mut watcher in watchers {
        let (mut last, mut seen) = (1, BTreeSet::new());
        read_log(&mut watcher, &mut last, &mut seen, None).await;
        assert_eq!(seen.len() as u64, PER_SENDER, "every out copy once");
        assert!(
            last > PER_SENDER + 1,
            "receipts were logged too (last seq {last})"
        );
    }
}

/// Frames written straight from the fan-out, cut short by a full socket and finished by the
/// writer, arrive whole and in order: a device stops reading while large messages pile up in
/// its socket, then reads them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_cut_short_by_a_full_socket_arrive_whole_and_in_order() {
    let server = TestServer::start_with(|c| {
        c.send_rate = 100_000;
        c.send_burst = 100_000;
        // Room to queue more than the socket buffers hold, so writes are cut short.
        c.queue_bytes = 64 << 20;
    })
    .await;
    let mut reader = server.device("rita@example.com", "r1").await;
    let mut sender = server.device("sam@example.com", "s1").await;
    let big = |n: usize| format!("{n:04}{}", "x".repeat(50_000 + (n % 100) * 97));
    const COUNT: usize = 200;
    for n in 0..COUNT {
        sender
            .send_msg(&format!("big{n}"), "rita@example.com", json!(big(n)))
            .await;
    }
    // The reader has not read anything yet: most of it waited in the socket or the queue.
    for n in 0..COUNT {
        let frame = reader.expect("message").await;
        assert_eq!(frame["seq"], json!(n as u64 + 1));
        assert_eq!(
            frame["body"],
            json!(big(n)),
            "message {n} arrived cut or mixed"
        );
    }
    reader.expect_silence().await;
}
