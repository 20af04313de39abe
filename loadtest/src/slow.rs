//! `slow`: like `fanout` at one rate, but 1% of the devices stop reading. Reports the other
//! devices' latency and loss (a stalled device must not slow or starve anyone else), the
//! broker's memory while the stalled devices' buffers fill, and how each stalled device was
//! closed: once the load stops it reads again and finds a close code (octet: 4008, slow
//! consumer: reconnect and resync), a bare end of stream, or nothing (still open).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::accounting::{Latency, Totals, Tracker};
use crate::fanout::{XorShift, await_deliveries, new_hist, progress};
use crate::procstat;
use crate::target::{Creds, Stamp, Target, Ws};

/// Receive buffer of a stalled device's socket: small, so the broker's side fills soon.
const STALLED_RCVBUF: u32 = 4096;
/// How long a stalled device, reading again, waits for its close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Persons.
    pub persons: u32,
    /// Devices per person (at least 2: a sender's device never stalls).
    pub devices: u32,
    /// Sending devices (device 0 of the first `senders` persons).
    pub senders: u32,
    /// Aggregate sends per second.
    pub rate: u32,
    /// Unmeasured time at the start (latency is not recorded).
    pub warmup: Duration,
    /// Measured time after the warm-up.
    pub measure: Duration,
    /// Percent of all devices that stop reading.
    pub stall_percent: f64,
    /// Filler bytes per message body, so the stalled devices' buffers fill within the run.
    pub pad: usize,
    /// Logins in flight while connecting.
    pub inflight: usize,
    /// Source addresses for client sockets.
    pub sources: u8,
    /// The broker's pid, for memory and CPU.
    pub server_pid: Option<u32>,
    /// Show progress bars.
    pub progress: bool,
}

/// How one stalled device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stalled {
    /// A close frame with this code.
    Closed(u16),
    /// A close frame without a code.
    ClosedNoCode,
    /// The stream ended (or reset) without a close frame.
    Dropped,
    /// Still open when it read again (nothing closed it).
    Open,
}

/// What `slow` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Devices connected.
    pub connections: u64,
    /// Devices that stopped reading.
    pub stalled: u64,
    /// Sends made in the measured window.
    pub sends: u64,
    /// Deliveries to the reading devices in the measured window, per second.
    pub deliveries_per_sec: f64,
    /// The reading devices' latency percentiles (µs).
    #[serde(flatten)]
    pub latency: Latency,
    /// Accounting over the reading devices only (the stalled ones owe nothing).
    pub totals: Totals,
    /// Broker RSS once every device was connected.
    pub rss_start_bytes: Option<u64>,
    /// Highest broker RSS seen during the run.
    pub rss_peak_bytes: Option<u64>,
    /// Broker RSS at the end.
    pub rss_end_bytes: Option<u64>,
    /// Broker CPU seconds in the measured window.
    pub server_cpu_seconds: Option<f64>,
    /// How the stalled devices ended, and how many ended so.
    pub stalled_outcomes: BTreeMap<String, u64>,
    /// Stalled devices closed with the slow-consumer code (4008).
    pub stalled_closed_4008: u64,
}

impl Stalled {
    fn label(self) -> String {
        match self {
            Stalled::Closed(code) => format!("close {code}"),
            Stalled::ClosedNoCode => "close without code".into(),
            Stalled::Dropped => "dropped without close frame".into(),
            Stalled::Open => "still open".into(),
        }
    }
}

/// The stalled devices: `stall_percent` of all, spread over the persons, never device 0 (the
/// senders' devices keep sending).
pub fn stalled_devices(persons: u32, devices: u32, stall_percent: f64) -> Vec<(u32, u32)> {
    let total = f64::from(persons * devices);
    let count = ((total * stall_percent / 100.0).round() as u32).clamp(1, persons);
    (0..count)
        .map(|k| {
            let person = (u64::from(k) * u64::from(persons) / u64::from(count)) as u32;
            (person, 1 + k % (devices - 1))
        })
        .collect()
}

/// Runs the plan.
pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    anyhow::ensure!(
        plan.devices >= 2,
        "slow needs at least 2 devices per person"
    );
    anyhow::ensure!(plan.persons >= 2, "slow needs at least 2 persons");
    let creds = target.prepare(plan.persons, plan.devices, 32).await?;
    let stalled = stalled_devices(plan.persons, plan.devices, plan.stall_percent);
    let is_stalled = |c: &Creds| stalled.contains(&(c.person, c.device));
    let total = creds.len() as u64;
    let bar = progress(plan.progress, total, "connecting");
    let conns = target
        .open_all(creds, plan.inflight, plan.sources, &bar, |c| {
            is_stalled(c).then_some(STALLED_RCVBUF)
        })
        .await?;
    bar.finish_and_clear();

    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let deliveries = Arc::new(AtomicU64::new(0));
    let devices = plan.devices as usize;
    // Deliveries owed to each device (stalled ones are not counted).
    let expected: Arc<Vec<AtomicU64>> =
        Arc::new((0..conns.len()).map(|_| AtomicU64::new(0)).collect());
    let stalled_flags: Arc<Vec<bool>> =
        Arc::new(conns.iter().map(|(c, _, _)| is_stalled(c)).collect());
    let mut readers = Vec::new();
    let mut held = Vec::new();
    let mut sinks = Vec::new();
    for (idx, (c, ws, _)) in conns.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        if c.device == 0 && c.person < plan.senders {
            sinks.push((c.person, sink));
        }
        if stalled_flags[idx] {
            // Never read until the load is over.
            held.push(stream);
        } else {
            readers.push((
                idx,
                tokio::spawn(read_device(
                    target.clone(),
                    stream,
                    epoch,
                    stop_rx.clone(),
                    deliveries.clone(),
                )),
            ));
        }
    }

    let rss_start = procstat::maybe(plan.server_pid).map(|s| s.rss_bytes);
    let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let sampler = {
        let rss_peak = rss_peak.clone();
        let pid = plan.server_pid;
        tokio::spawn(async move {
            loop {
                if let Some(s) = procstat::maybe(pid) {
                    rss_peak.fetch_max(s.rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.measure;
    let interval = Duration::from_secs_f64(sinks.len().max(1) as f64 / f64::from(plan.rate.max(1)));
    let senders = sinks.len().max(1) as f64;
    let mut tasks = Vec::new();
    for (idx, (person, mut sink)) in sinks.into_iter().enumerate() {
        let target = target.clone();
        let persons = plan.persons;
        let expected = expected.clone();
        let stalled_flags = stalled_flags.clone();
        let pad = plan.pad;
        let offset = interval.mul_f64(idx as f64 / senders);
        tasks.push(tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) << 17));
            let mut counter = 0u32;
            let mut sends = 0u64;
            let mut next = start + offset;
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let warm = next < measure_from;
                counter += 1;
                let to = {
                    let r = (rng.next() % (u64::from(persons) - 1)) as u32;
                    if r >= person { r + 1 } else { r }
                };
                let stamp = Stamp {
                    s: idx as u32,
                    n: counter,
                    t: next.duration_since(epoch).as_nanos() as u64,
                    p: 0,
                    w: warm as u8,
                };
                for d in 0..devices {
                    let recipient = to as usize * devices + d;
                    if !stalled_flags[recipient] {
                        expected[recipient].fetch_add(1, Ordering::Relaxed);
                    }
                    let own = person as usize * devices + d;
                    if d != 0 && !stalled_flags[own] {
                        expected[own].fetch_add(1, Ordering::Relaxed);
                    }
                }
                if sink
                    .send(target.send_frame_padded(person, to, &stamp, pad))
                    .await
                    .is_err()
                {
                    break;
                }
                if !warm {
                    sends += 1;
                }
                next += interval;
            }
            (sink, sends)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = procstat::maybe(plan.server_pid);
    let mut sends = 0;
    let mut sinks = Vec::new();
    for task in tasks {
        let (sink, n) = task.await?;
        sinks.push(sink);
        sends += n;
    }
    let cpu_after = procstat::maybe(plan.server_pid);

    // Let the reading devices' last deliveries arrive.
    await_deliveries(&deliveries, &expected).await;
    sampler.abort();
    let rss_end = procstat::maybe(plan.server_pid).map(|s| s.rss_bytes);
    let _ = stop_tx.send(true);

    // The stalled devices read again and report how they were closed.
    let mut outcomes = Vec::new();
    for stream in held {
        outcomes.push(tokio::spawn(await_close(stream)));
    }
    let mut stalled_outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut closed_4008 = 0;
    for outcome in outcomes {
        let outcome = outcome.await?;
        if outcome == Stalled::Closed(4008) {
            closed_4008 += 1;
        }
        *stalled_outcomes.entry(outcome.label()).or_default() += 1;
    }

    let mut totals = Totals::default();
    let mut hist = new_hist();
    let mut measured = 0u64;
    for (idx, reader) in readers {
        let (tracker, h, count) = reader.await?;
        totals.add(&tracker, expected[idx].load(Ordering::Relaxed));
        hist.add(&h).ok();
        measured += count;
    }
    drop(sinks);
    let rss_peak = rss_peak.load(Ordering::Relaxed);
    Ok(Report {
        connections: total,
        stalled: stalled.len() as u64,
        sends,
        deliveries_per_sec: measured as f64 / plan.measure.as_secs_f64(),
        latency: Latency::of(&hist),
        totals,
        rss_start_bytes: rss_start,
        rss_peak_bytes: rss_start.map(|_| rss_peak),
        rss_end_bytes: rss_end,
        server_cpu_seconds: match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
            _ => None,
        },
        stalled_outcomes,
        stalled_closed_4008: closed_4008,
    })
}

/// A reading device: every delivery accounted for, latency recorded outside the warm-up.
async fn read_device(
    target: Target,
    mut stream: SplitStream<Ws>,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
    deliveries: Arc<AtomicU64>,
) -> (Tracker, Histogram<u64>, u64) {
    let mut tracker = Tracker::default();
    let mut hist = new_hist();
    let mut count = 0;
    let mut stamps = Vec::new();
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            next = stream.next() => next,
        };
        let Some(Ok(message)) = next else { break };
        stamps.clear();
        target.deliveries(&message, &mut stamps);
        let now = epoch.elapsed().as_nanos() as u64;
        for stamp in stamps.drain(..) {
            tracker.observe(stamp.s, stamp.n);
            deliveries.fetch_add(1, Ordering::Relaxed);
            if stamp.w == 0 {
                hist.saturating_record(now.saturating_sub(stamp.t).max(1));
                count += 1;
            }
        }
    }
    (tracker, hist, count)
}

/// Reads a stalled device's backlog until its close frame or the end of its stream.
async fn await_close(mut stream: SplitStream<Ws>) -> Stalled {
    let deadline = tokio::time::Instant::now() + CLOSE_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Stalled::Open,
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Stalled::Closed(frame.code.into()),
            Ok(Some(Ok(Message::Close(None)))) => return Stalled::ClosedNoCode,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => return Stalled::Dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_percent_spread_over_persons_never_a_sender() {
        let s = super::stalled_devices(50, 8, 1.0);
        assert_eq!(s.len(), 4);
        assert!(s.iter().all(|&(p, d)| p < 50 && (1..8).contains(&d)));
        let tiny = super::stalled_devices(4, 3, 1.0);
        assert_eq!(tiny.len(), 1);
    }
}
