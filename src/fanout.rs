//! Fan-out of committed events: the store's [`CommitSink`]. Each event is serialized once per
//! person into the frame it is delivered as and handed to the router for every live device of
//! that person; then the writer's callers are answered.
//!
//! The store's writer thread only commits and hands each transaction's outcomes to
//! [`Fanout::publish`], which splits them by person onto a few shard tasks (one per CPU the
//! process may use). A person always maps to the same shard and a shard takes its work in
//! commit order, so every device sees its person's events in `seq` order, while different
//! persons' deliveries run in parallel and off the writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::protocol::{
    CallRecordFrame, DeviceChange, DevicesChanged, Message as MessageFrame, Origin, ProfileFrame,
    ReadMarker, Receipt, ServerFrame, Uid,
};
use crate::router::{Batch, Frame, Router};
use crate::store::{
    Answer, CommitSink, Committed, CommittedMessage, EventKind, LogEvent, Marker, NO_DEVICE,
    Outcome, PersonId,
};

/// One shard's share of a transaction.
enum Work {
    /// A message to the recipient person's devices.
    Incoming(Arc<Tallied>),
    /// A message to the sender person's other devices (`out`).
    Own(Arc<Tallied>),
    /// An event in one person's log, to every device of that person.
    Marker(Marker),
    /// A caller waiting for its write, answered after the deliveries before it in this shard.
    Answer(Answer),
}

/// A message whose halves may run on two shards; the second to finish records the metrics.
struct Tallied {
    message: CommittedMessage,
    halves_left: AtomicUsize,
    width: AtomicUsize,
}

/// The fan-out: shard tasks fed by the store's writer thread.
pub struct Fanout {
    shards: Vec<mpsc::UnboundedSender<Vec<Work>>>,
    /// Spreads answers that concern no person over the shards.
    next: AtomicUsize,
}

impl Fanout {
    /// Starts `shards` shard tasks (at least one) on the current runtime. They end when the
    /// store drops its sink.
    pub fn start(router: Arc<Router>, metrics: Arc<Metrics>, shards: usize) -> Fanout {
        let shards = (0..shards.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(run_shard(rx, router.clone(), metrics.clone()));
                tx
            })
            .collect();
        Fanout {
            shards,
            next: AtomicUsize::new(0),
        }
    }

    /// One shard per CPU this process may run on (its affinity mask counts: a broker pinned
    /// to one core gets one shard).
    pub fn default_shards() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    fn shard_of(&self, person: PersonId) -> usize {
        // Fibonacci hashing: consecutive person ids spread evenly.
        ((person.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % self.shards.len() as u64) as usize
    }
}

impl CommitSink for Fanout {
    fn publish(&self, outcomes: Vec<Outcome>) {
        let mut work: Vec<Vec<Work>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        // Answers go first: a caller (a device waiting for its `sent` before it reads its next
        // frame) must not wait behind the deliveries of everything committed with it. They
        // reach other connections than those deliveries (a sender's own copies skip the
        // sending device), so no device sees anything out of order.
        let mut answers: Vec<Vec<Work>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for Outcome { committed, answer } in outcomes {
            let answer_shard = match committed {
                None => self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len(),
                Some(Committed::Message(message)) => {
                    let (sender, recipient) = (message.sender, message.appended.recipient);
                    let halves = if recipient == sender { 1 } else { 2 };
                    let tallied = Arc::new(Tallied {
                        message,
                        halves_left: AtomicUsize::new(halves),
                        width: AtomicUsize::new(0),
                    });
                    if recipient != sender {
                        work[self.shard_of(recipient)].push(Work::Incoming(tallied.clone()));
                    }
                    let own = self.shard_of(sender);
                    work[own].push(Work::Own(tallied));
                    own
                }
                Some(other) => {
                    let markers = match other {
                        Committed::Receipts(m)
                        | Committed::Read(m)
                        | Committed::CallRecord(m)
                        | Committed::Profile(m)
                        | Committed::Devices(m) => m,
                        Committed::Message(_) => unreachable!("matched above"),
                    };
                    let first = markers.first().map(|m| self.shard_of(m.person));
                    for marker in markers {
                        work[self.shard_of(marker.person)].push(Work::Marker(marker));
                    }
                    first.unwrap_or_else(|| {
                        self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()
                    })
                }
            };
            answers[answer_shard].push(Work::Answer(answer));
        }
        for (answers, deliveries) in answers.iter_mut().zip(work) {
            answers.extend(deliveries);
        }
        for (shard, items) in self.shards.iter().zip(answers) {
            if items.is_empty() {
                continue;
            }
            // Only fails once the runtime is gone (shutdown): answer in place then.
            if let Err(mpsc::error::SendError(items)) = shard.send(items) {
                for item in items {
                    if let Work::Answer(answer) = item {
                        answer.send();
                    }
                }
            }
        }
    }
}

async fn run_shard(
    mut rx: mpsc::UnboundedReceiver<Vec<Work>>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
) {
    // Frames for one connection within a run of work leave in one write: they wait in the
    // connections' live queues (in order, as if queued) until the run's end. An answer may go
    // before: the caller's reply goes to its own device, which the writer serves its own
    // replies first anyway.
    let mut batch = Batch::default();
    while let Some(items) = rx.recv().await {
        for item in items {
            match item {
                Work::Incoming(tallied) => {
                    deliver_half(&router, &metrics, &mut batch, &tallied, false)
                }
                Work::Own(tallied) => deliver_half(&router, &metrics, &mut batch, &tallied, true),
                Work::Marker(marker) => {
                    let frame: Frame = event_frame(&marker.event).into();
                    let seq = Some(marker.event.seq);
                    let skip = gone_device(&marker.event);
                    router.deliver_in(&mut batch, marker.person, &frame, seq, skip);
                }
                Work::Answer(answer) => answer.send(),
            }
        }
        batch.flush(&metrics);
    }
}

/// The device a `devices_changed` event says was revoked or removed: its connections are
/// being closed, so it is not told (whether the frame would beat the close is a race).
fn gone_device(event: &LogEvent) -> Option<Uid> {
    match &event.kind {
        EventKind::Devices {
            change: DeviceChange::Revoked | DeviceChange::Removed,
            uid,
            ..
        } => Some(*uid),
        _ => None,
    }
}

/// Delivers one half of a message: to the recipient person's devices, or (`own`) to the sender
/// person's devices other than the sending one, marked `out`.
fn deliver_half(
    router: &Router,
    metrics: &Metrics,
    batch: &mut Batch,
    tallied: &Tallied,
    own: bool,
) {
    let message = &tallied.message;
    let appended = &message.appended;
    let (person, seq, skip) = if own {
        (
            message.sender,
            appended.sender_seq,
            Some(message.sender_uid),
        )
    } else {
        (appended.recipient, appended.recipient_seq, None)
    };
    let frame: Frame = ServerFrame::Message(MessageFrame {
        pv: appended.pv,
        mid: appended.mid,
        seq,
        from: appended.from.clone(),
        to: appended.to.clone(),
        ts: appended.ts,
        out: own,
        body: message.body.clone(),
        files: appended.files.clone(),
        origin: (own && message.sender_uid != NO_DEVICE).then(|| Origin {
            uid: message.sender_uid,
            device: message.sender_device.clone(),
        }),
    })
    .to_text()
    .into();
    let width = router.deliver_in(batch, person, &frame, Some(seq), skip);
    metrics.deliveries.inc_by(width as u64);
    tallied.width.fetch_add(width, Ordering::Relaxed);
    // AcqRel: the last half sees the other half's width.
    if tallied.halves_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        metrics.messages.inc();
        metrics
            .fanout_width
            .observe(tallied.width.load(Ordering::Relaxed) as f64);
        metrics
            .send_to_deliver
            .observe(message.accepted.elapsed().as_secs_f64());
    }
}

/// A logged event as the frame it was delivered live as.
pub fn event_frame(event: &LogEvent) -> String {
    match &event.kind {
        EventKind::Message {
            mid,
            from,
            to,
            out,
            body,
            pv,
            files,
            origin,
        } => ServerFrame::Message(MessageFrame {
            pv: *pv,
            mid: *mid,
            seq: event.seq,
            from: from.clone(),
            to: to.clone(),
            ts: event.ts,
            out: *out,
            body: body.clone(),
            files: files.clone(),
            origin: origin.clone(),
        })
        .to_text(),
        EventKind::Receipt { mid, peer, status } => ServerFrame::Receipt(Receipt {
            seq: event.seq,
            mid: *mid,
            status: status.clone(),
            peer: peer.clone(),
            ts: event.ts,
        })
        .to_text(),
        EventKind::Call {
            call,
            peer,
            out,
            status,
            duration_ms,
        } => ServerFrame::CallRecord(CallRecordFrame {
            seq: event.seq,
            call: call.clone(),
            peer: peer.clone(),
            out: *out,
            status: status.clone(),
            duration_ms: *duration_ms,
            ts: event.ts,
        })
        .to_text(),
        EventKind::Profile {
            address,
            profile,
            version,
        } => ServerFrame::Profile(ProfileFrame {
            id: None,
            seq: Some(event.seq),
            address: address.clone(),
            profile: profile.clone(),
            version: *version,
            ts: Some(event.ts),
        })
        .to_text(),
        EventKind::Read { upto, peer } => ServerFrame::Read(ReadMarker {
            seq: event.seq,
            peer: peer.clone(),
            upto: *upto,
            ts: event.ts,
        })
        .to_text(),
        EventKind::Devices {
            change,
            uid,
            devices,
        } => ServerFrame::DevicesChanged(DevicesChanged {
            seq: event.seq,
            ts: event.ts,
            change: *change,
            uid: *uid,
            devices: devices.clone(),
        })
        .to_text(),
    }
}
