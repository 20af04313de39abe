//! `fanout`: P persons × D devices; S senders send to random other persons on a fixed schedule
//! of rates. Every send owes one delivery to each device of the recipient and of the sender's
//! other devices. Latency is measured from each message's *scheduled* time, so a stalled
//! broker cannot hide behind a slowed-down sender (coordinated omission).
//!
//! A phase *kept up* when, by the end of its measured window, at least [`KEPT_UP_SHARE`] of the
//! deliveries its measured sends owed had arrived, and nothing it owed was lost; the run's
//! *ceiling* is the highest rate that kept up. Acknowledgements (octet's `sent`, JetStream's
//! PubAcks) are counted too: every send must be acknowledged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::accounting::{Arrival, Latency, Totals, Tracker};
use crate::procstat::{self, ProcSample};
use crate::target::{Stamp, Target, Ws};

mod reader;
mod report;
use reader::read_device;
pub use report::{Acks, Phase, Report};

/// The share of a phase's owed deliveries that must arrive within the phase for it to count
/// as kept up.
pub const KEPT_UP_SHARE: f64 = 0.97;

/// The pause between connecting the devices and the first phase.
const SETTLE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Persons.
    pub persons: u32,
    /// Devices per person.
    pub devices: u32,
    /// Sending devices (one per person, the first `senders` persons).
    pub senders: u32,
    /// Aggregate send rates, one phase each.
    pub rates: Vec<u32>,
    /// Unmeasured time at the start of each phase.
    pub warmup: Duration,
    /// Measured time of each phase.
    pub measure: Duration,
    /// Logins in flight while connecting.
    pub inflight: usize,
    /// Source addresses for client sockets.
    pub sources: u8,
    /// The broker's pid, for CPU and memory.
    pub server_pid: Option<u32>,
    /// Show progress bars.
    pub progress: bool,
}

/// What the readers count together while the run goes on.
struct Seen {
    /// Deliveries (every arrival).
    deliveries: AtomicU64,
    /// Acknowledgements of sends.
    acks: AtomicU64,
    /// When each phase's measured window starts and ends, in ns since the run's start (set as
    /// the phase starts; `u64::MAX` before).
    window_starts: Vec<AtomicU64>,
    window_ends: Vec<AtomicU64>,
    /// Every send so far, per sender, in counter order (counter n at n − 1): what its
    /// acknowledgement is timed against.
    sends: Vec<Mutex<Vec<SendRecord>>>,
}

/// One send, as its acknowledgements find it.
#[derive(Debug, Clone, Copy)]
struct SendRecord {
    /// Scheduled time, ns since the run's start.
    t: u64,
    /// Its phase.
    p: u16,
    /// Sent during the warm-up.
    warm: bool,
    /// Acknowledgements seen so far.
    acks: u8,
}

/// What each device's reader hands back.
struct DeviceResult {
    tracker: Tracker,
    hists: Vec<Histogram<u64>>,
    /// Measured deliveries per phase.
    counts: Vec<u64>,
    /// New arrivals per phase, warm-up included.
    unique: Vec<u64>,
    /// Duplicates and out-of-order arrivals per phase.
    duplicated: Vec<u64>,
    out_of_order: Vec<u64>,
    /// Measured deliveries per phase that arrived before the phase's end.
    in_phase: Vec<u64>,
    /// Deliveries (of any send) that arrived during each phase's measured window.
    in_window: Vec<u64>,
    /// Acknowledgements: stored, refused.
    acks: (u64, u64),
    /// Per phase, scheduled send to its (last) acknowledgement, measured sends only.
    ack_hists: Vec<Histogram<u64>>,
}

/// Runs the plan against the broker `target`.
pub async fn run(target: &Target, plan: &Plan) -> anyhow::Result<Report> {
    let creds = target.prepare(plan.persons, plan.devices, 32).await?;
    let total = creds.len() as u64;
    let bar = progress(plan.progress, total, "connecting");
    let conns = target
        .open_all(creds, plan.inflight, plan.sources, &bar, |_| None)
        .await?;
    bar.finish_and_clear();

    let epoch = Instant::now();
    let phases = plan.rates.len();
    let (stop_tx, stop_rx) = watch::channel(false);
    let seen = Arc::new(Seen {
        deliveries: AtomicU64::new(0),
        acks: AtomicU64::new(0),
        window_starts: (0..phases).map(|_| AtomicU64::new(u64::MAX)).collect(),
        window_ends: (0..phases).map(|_| AtomicU64::new(u64::MAX)).collect(),
        sends: (0..plan.senders.min(plan.persons))
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    });
    // Expected deliveries per device and per phase, filled in by the senders.
    let expected: Arc<Vec<AtomicU64>> =
        Arc::new((0..conns.len()).map(|_| AtomicU64::new(0)).collect());
    let expected_by_phase: Arc<Vec<AtomicU64>> =
        Arc::new((0..phases).map(|_| AtomicU64::new(0)).collect());
    // Deliveries owed by each phase's measured sends.
    let scheduled_by_phase: Arc<Vec<AtomicU64>> =
        Arc::new((0..phases).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    let mut sinks: Vec<(u32, SplitSink<Ws, Message>)> = Vec::new();
    for (c, ws, _) in conns {
        let (sink, stream) = ws.split();
        if c.device == 0 && c.person < plan.senders {
            sinks.push((c.person, sink));
        } else {
            // The read half keeps the socket open; listeners never write.
            drop(sink);
        }
        readers.push(tokio::spawn(read_device(
            target.clone(),
            stream,
            epoch,
            phases,
            stop_rx.clone(),
            seen.clone(),
        )));
    }

    // Right after connecting every device the generator is still busy with the logins'
    // aftermath (welcomes, reader tasks starting): the first phase's sends ran up to 2.5 s late
    // on one core with no pause, 73-255 ms late after 2 s, and about 1-6 ms (as in later
    // phases) after 5 s. Let both sides settle before anything counts.
    tokio::time::sleep(SETTLE).await;
    let mut phase_results = Vec::new();
    let mut total_sends = 0u64;
    let mut counters = vec![0u32; sinks.len()];
    let mut sinks: Vec<_> = sinks.into_iter().map(Some).collect();
    for (p, &rate) in plan.rates.iter().enumerate() {
        let bar = progress(
            plan.progress,
            (plan.warmup + plan.measure).as_secs(),
            &format!("{rate}/s"),
        );
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    bar.inc(1);
                }
            })
        };
        let phase_start = Instant::now();
        let measure_from = phase_start + plan.warmup;
        let phase_end = measure_from + plan.measure;
        seen.window_starts[p].store(
            measure_from.duration_since(epoch).as_nanos() as u64,
            Ordering::Release,
        );
        seen.window_ends[p].store(
            phase_end.duration_since(epoch).as_nanos() as u64,
            Ordering::Release,
        );
        let mut before: Option<ProcSample> = None;
        let sender_rate = rate as f64 / sinks.len().max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / sender_rate.max(0.001));
        let mut tasks = Vec::new();
        for (idx, slot) in sinks.iter_mut().enumerate() {
            let (person, mut sink) = slot.take().expect("sink returned by the last phase");
            let target = target.clone();
            let persons = plan.persons;
            let devices = plan.devices as usize;
            let expected = expected.clone();
            let expected_by_phase = expected_by_phase.clone();
            let scheduled_by_phase = scheduled_by_phase.clone();
            let seen = seen.clone();
            let mut counter = counters[idx];
            // Stagger senders across one interval so sends do not come in bursts.
            let offset = interval.mul_f64(idx as f64 / sinks_len(plan));
            tasks.push(tokio::spawn(async move {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((idx as u64 + 1) << 17));
                let mut sends = 0u64;
                let mut next = phase_start + offset;
                let mut lag = Duration::ZERO;
                while next < phase_end {
                    tokio::time::sleep_until(next.into()).await;
                    if next >= measure_from {
                        lag = lag.max(Instant::now().saturating_duration_since(next));
                    }
                    let warm = next < measure_from;
                    counter += 1;
                    let to = {
                        let r = (rng.next() % (persons as u64 - 1)) as u32;
                        if r >= person { r + 1 } else { r }
                    };
                    let stamp = Stamp {
                        s: idx as u32,
                        n: counter,
                        t: next.duration_since(epoch).as_nanos() as u64,
                        p: p as u16,
                        w: warm as u8,
                    };
                    // The recipient's devices and the sender's other devices.
                    for d in 0..devices {
                        expected[to as usize * devices + d].fetch_add(1, Ordering::Relaxed);
                        if d != 0 {
                            expected[person as usize * devices + d].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    expected_by_phase[p].fetch_add(2 * devices as u64 - 1, Ordering::Relaxed);
                    if !warm {
                        scheduled_by_phase[p].fetch_add(2 * devices as u64 - 1, Ordering::Relaxed);
                    }
                    if let Some(log) = seen.sends.get(idx) {
                        log.lock().expect("send log").push(SendRecord {
                            t: stamp.t,
                            p: stamp.p,
                            warm,
                            acks: 0,
                        });
                    }
                    if sink
                        .send(target.send_frame(person, to, &stamp))
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
                (person, sink, counter, sends, lag)
            }));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        if before.is_none() {
            before = procstat::maybe(plan.server_pid);
        }
        let generator_before = procstat::maybe(Some(std::process::id()));
        // CPU over exactly the window whose arrivals are counted.
        tokio::time::sleep_until(phase_end.into()).await;
        let after = procstat::maybe(plan.server_pid);
        let generator = match (generator_before, procstat::maybe(Some(std::process::id()))) {
            (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
            _ => None,
        };
        let mut lag = Duration::ZERO;
        let mut sends = 0;
        for (idx, task) in tasks.into_iter().enumerate() {
            let (person, sink, counter, n, late) = task.await?;
            lag = lag.max(late);
            sinks[idx] = Some((person, sink));
            total_sends += u64::from(counter - counters[idx]);
            counters[idx] = counter;
            sends += n;
        }
        ticker.abort();
        bar.finish_and_clear();
        phase_results.push((rate, sends, before, after, generator, lag));
    }

    // Let the last deliveries arrive, then stop the readers.
    await_deliveries(&seen.deliveries, &expected).await;
    let acks_owed = total_sends * target.acks_per_send();
    let until = Instant::now() + Duration::from_secs(3);
    while seen.acks.load(Ordering::Relaxed) < acks_owed && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut totals = Totals::default();
    let mut hists: Vec<Histogram<u64>> = (0..phases).map(|_| new_hist()).collect();
    let mut ack_hists: Vec<Histogram<u64>> = (0..phases).map(|_| new_hist()).collect();
    let mut counts = vec![0u64; phases];
    let mut unique = vec![0u64; phases];
    let mut duplicated = vec![0u64; phases];
    let mut out_of_order = vec![0u64; phases];
    let mut in_phase = vec![0u64; phases];
    let mut in_window = vec![0u64; phases];
    let (mut stored, mut refused) = (0u64, 0u64);
    for (idx, reader) in readers.into_iter().enumerate() {
        let result = reader.await?;
        totals.add(&result.tracker, expected[idx].load(Ordering::Relaxed));
        for p in 0..phases {
            hists[p].add(&result.hists[p]).ok();
            ack_hists[p].add(&result.ack_hists[p]).ok();
            counts[p] += result.counts[p];
            unique[p] += result.unique[p];
            duplicated[p] += result.duplicated[p];
            out_of_order[p] += result.out_of_order[p];
            in_phase[p] += result.in_phase[p];
            in_window[p] += result.in_window[p];
        }
        stored += result.acks.0;
        refused += result.acks.1;
    }
    let measure = plan.measure.as_secs_f64();
    let mut report_phases = Vec::new();
    for (p, (rate, sends, before, after, generator, lag)) in phase_results.into_iter().enumerate() {
        let h = &hists[p];
        let cpu = match (before, after) {
            (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
            _ => None,
        };
        let lost = expected_by_phase[p]
            .load(Ordering::Relaxed)
            .saturating_sub(unique[p]);
        let scheduled = scheduled_by_phase[p].load(Ordering::Relaxed);
        let delivered_share = if scheduled == 0 {
            0.0
        } else {
            in_phase[p] as f64 / scheduled as f64
        };
        report_phases.push(Phase {
            rate,
            sends,
            deliveries_per_sec: counts[p] as f64 / measure,
            window_deliveries_per_sec: in_window[p] as f64 / measure,
            latency: Latency::of(h),
            ack_latency: (target.acks_per_send() > 0).then(|| Latency::of(&ack_hists[p])),
            server_cpu_seconds: cpu,
            deliveries_per_cpu_second: cpu.filter(|c| *c > 0.0).map(|c| in_window[p] as f64 / c),
            server_rss_bytes: after.map(|a| a.rss_bytes),
            generator_cpu_seconds: generator,
            send_lag_max_us: lag.as_micros() as u64,
            lost,
            duplicated: duplicated[p],
            out_of_order: out_of_order[p],
            scheduled,
            delivered_in_phase: in_phase[p],
            delivered_share,
            kept_up: scheduled > 0 && lost == 0 && delivered_share >= KEPT_UP_SHARE,
        });
    }
    let headline = report_phases
        .iter()
        .filter(|p| p.latency.p99_us <= 10_000 && p.lost == 0)
        .max_by_key(|p| p.rate);
    let ceiling = report_phases
        .iter()
        .filter(|p| p.kept_up)
        .max_by_key(|p| p.rate);
    let acks = (acks_owed > 0).then(|| Acks {
        owed: acks_owed,
        stored,
        refused,
        missing: acks_owed.saturating_sub(stored + refused),
    });
    Ok(Report {
        target: target.name(),
        ceiling_rate: ceiling.map(|p| p.rate),
        ceiling_p99_us: ceiling.map(|p| p.latency.p99_us),
        ceiling_deliveries_per_sec: ceiling.map(|p| p.deliveries_per_sec),
        acks,
        connections: total,
        headline_rate: headline.map(|p| p.rate),
        headline_deliveries_per_sec: headline.map(|p| p.deliveries_per_sec),
        phases: report_phases,
        totals,
    })
}

fn sinks_len(plan: &Plan) -> f64 {
    plan.senders.min(plan.persons).max(1) as f64
}

/// Waits until the readers counted every delivery owed (the sum of `expected`), for at most
/// 3 s: what is still missing then is reported as lost.
pub(crate) async fn await_deliveries(deliveries: &AtomicU64, expected: &[AtomicU64]) {
    let owed: u64 = expected.iter().map(|e| e.load(Ordering::Relaxed)).sum();
    let until = Instant::now() + Duration::from_secs(3);
    while deliveries.load(Ordering::Relaxed) < owed && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn new_hist() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits, in nanoseconds.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

pub(crate) fn progress(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// A tiny xorshift generator: recipients need to be random, not secure.
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
