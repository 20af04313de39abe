//! What the dashboard shows: a ring of per-second [`Point`]s filled by one sampler task, and
//! the snapshot built from the live counters (rates, latency percentiles from histogram
//! buckets, the most frequent error codes). The routes and the feed are in the parent module.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use prometheus::core::{Collector, Metric};
use serde::Serialize;

use super::{HISTORY, LATENCY_WINDOW, TICK, TOP_ERRORS};
use crate::protocol::Millis;
use crate::state::{ServerState, now_millis};

/// One second of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// When it was sampled (Unix milliseconds).
    pub t: Millis,
    /// WebSocket connections open (logged in or not).
    pub connections: i64,
    /// Logged-in devices (connections in the router's table).
    pub devices: usize,
    /// Persons with at least one logged-in device.
    pub persons: usize,
    /// Messages stored per second since the previous point.
    pub messages_per_s: f64,
    /// Message frames handed to device queues per second since the previous point.
    pub deliveries_per_s: f64,
    /// Errors sent to clients per second since the previous point.
    pub errors_per_s: f64,
}

/// The first event on the feed: every point in the ring, oldest first.
#[derive(Debug, Serialize)]
pub(super) struct History {
    interval_ms: u64,
    capacity: usize,
    points: Vec<Point>,
}

/// The event the feed sends every second.
#[derive(Debug, Serialize)]
pub(super) struct Snapshot {
    t: Millis,
    connections: i64,
    devices: usize,
    persons: usize,
    messages_total: u64,
    deliveries_total: u64,
    errors_total: u64,
    /// The newest point in the ring, for the chart (none before the first sample).
    point: Option<Point>,
    latency: Latency,
    top_errors: Vec<ErrorCount>,
}

/// Send→deliver latency percentiles over the last `window_s` seconds, from histogram buckets.
#[derive(Debug, Serialize)]
struct Latency {
    window_s: usize,
    /// Sends observed in the window.
    count: u64,
    p50: Option<BucketBound>,
    p99: Option<BucketBound>,
}

/// A percentile as the bucket that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct BucketBound {
    /// The bucket's upper bound in milliseconds; with `over`, the largest finite bound.
    le_ms: f64,
    /// The percentile lies above every finite bucket (in `+Inf`).
    over: bool,
}

#[derive(Debug, Serialize)]
struct ErrorCount {
    code: String,
    count: u64,
}

/// The monotonic counters behind one point, kept so rates and latency windows can be diffed.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counters {
    messages: u64,
    deliveries: u64,
    errors: u64,
    /// Cumulative counts per latency bucket, `+Inf` (the sample count) last.
    latency: Vec<u64>,
}

struct Sample {
    point: Point,
    counters: Counters,
}

struct Ring {
    samples: VecDeque<Sample>,
    /// When the newest sample was taken (for the rate's divisor).
    last_at: Option<Instant>,
}

impl Ring {
    /// Appends the newest sample, dropping the oldest beyond [`HISTORY`].
    fn push(&mut self, sample: Sample, at: Instant) {
        if self.samples.len() >= HISTORY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.last_at = Some(at);
    }
}

pub(super) struct Dashboard {
    pub(super) state: Arc<ServerState>,
    /// Never held across an await.
    ring: Mutex<Ring>,
    /// The latency histogram's finite upper bounds, in seconds.
    bounds: Vec<f64>,
}

impl Dashboard {
    pub(super) fn new(state: Arc<ServerState>) -> Dashboard {
        let bounds = latency_buckets(&state)
            .iter()
            .map(|&(le, _)| le)
            .filter(|le| le.is_finite())
            .collect();
        Dashboard {
            state,
            ring: Mutex::new(Ring {
                samples: VecDeque::with_capacity(HISTORY),
                last_at: None,
            }),
            bounds,
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads every counter now.
    fn counters(&self) -> Counters {
        let metrics = &self.state.metrics;
        Counters {
            messages: metrics.messages.get(),
            deliveries: metrics.deliveries.get(),
            errors: error_counts(&self.state).iter().map(|(_, n)| n).sum(),
            latency: latency_buckets(&self.state)
                .iter()
                .map(|&(_, n)| n)
                .collect(),
        }
    }

    /// Takes one sample into the ring.
    fn sample(&self) {
        let counters = self.counters();
        let (connections, devices, persons) = self.gauges();
        let now = Instant::now();
        let mut ring = self.ring();
        let (prev, secs) = match (ring.samples.back(), ring.last_at) {
            (Some(prev), Some(at)) => (Some(&prev.counters), now.duration_since(at).as_secs_f64()),
            _ => (None, 0.0),
        };
        // Counters only grow; the first sample has no rate.
        let rate = |pick: fn(&Counters) -> u64| match prev {
            Some(prev) if secs > 0.0 => pick(&counters).saturating_sub(pick(prev)) as f64 / secs,
            _ => 0.0,
        };
        let point = Point {
            t: now_millis(),
            connections,
            devices,
            persons,
            messages_per_s: rate(|c| c.messages),
            deliveries_per_s: rate(|c| c.deliveries),
            errors_per_s: rate(|c| c.errors),
        };
        ring.push(Sample { point, counters }, now);
    }

    /// Open connections, logged-in devices, persons online.
    fn gauges(&self) -> (i64, usize, usize) {
        let router = &self.state.router;
        (
            self.state.metrics.connections.get(),
            router.connection_count(),
            router.person_count(),
        )
    }

    pub(super) fn history(&self) -> History {
        History {
            interval_ms: TICK.as_millis() as u64,
            capacity: HISTORY,
            points: self.ring().samples.iter().map(|s| s.point).collect(),
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let counters = self.counters();
        let (connections, devices, persons) = self.gauges();
        let (point, window_start) = {
            let ring = self.ring();
            let start = ring.samples.len().saturating_sub(LATENCY_WINDOW + 1);
            (
                ring.samples.back().map(|s| s.point),
                ring.samples.get(start).map(|s| s.counters.latency.clone()),
            )
        };
        let window = diff(&counters.latency, window_start.as_deref());
        let mut errors = error_counts(&self.state);
        errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Snapshot {
            t: now_millis(),
            connections,
            devices,
            persons,
            messages_total: counters.messages,
            deliveries_total: counters.deliveries,
            errors_total: counters.errors,
            point,
            latency: Latency {
                window_s: LATENCY_WINDOW,
                count: window.last().copied().unwrap_or(0),
                p50: percentile(&self.bounds, &window, 0.50),
                p99: percentile(&self.bounds, &window, 0.99),
            },
            top_errors: errors
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .take(TOP_ERRORS)
                .map(|(code, count)| ErrorCount { code, count })
                .collect(),
        }
    }
}

/// Samples once a second while the dashboard's routes exist.
pub(super) async fn sample_forever(dashboard: Weak<Dashboard>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(dashboard) = dashboard.upgrade() else {
            return;
        };
        dashboard.sample();
    }
}

/// `(upper bound in seconds, cumulative count)` per bucket of the send→deliver histogram,
/// ending with `(+Inf, sample count)`.
fn latency_buckets(state: &ServerState) -> Vec<(f64, u64)> {
    let metric = state.metrics.send_to_deliver.metric();
    let histogram = metric.get_histogram();
    let mut buckets: Vec<(f64, u64)> = histogram
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    buckets.push((f64::INFINITY, histogram.get_sample_count()));
    buckets
}

/// `(code, count)` for every error code sent so far.
fn error_counts(state: &ServerState) -> Vec<(String, u64)> {
    let mut counts = Vec::new();
    for family in state.metrics.errors.collect() {
        for metric in family.get_metric() {
            let code = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "code")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            counts.push((code, metric.get_counter().get_value() as u64));
        }
    }
    counts
}

/// Cumulative bucket counts now minus those at the window's start (none: since startup).
fn diff(now: &[u64], start: Option<&[u64]>) -> Vec<u64> {
    match start {
        Some(start) if start.len() == now.len() => now
            .iter()
            .zip(start)
            .map(|(n, s)| n.saturating_sub(*s))
            .collect(),
        _ => now.to_vec(),
    }
}

/// The `q` percentile of cumulative bucket counts `cumulative` (finite buckets' `bounds` in
/// seconds, then `+Inf`): the upper bound of the first bucket holding at least `q` of the
/// samples. `None` when there are no samples.
fn percentile(bounds: &[f64], cumulative: &[u64], q: f64) -> Option<BucketBound> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let index = cumulative.iter().position(|&n| n >= rank)?;
    Some(match bounds.get(index) {
        Some(&le) => BucketBound {
            le_ms: le * 1000.0,
            over: false,
        },
        None => BucketBound {
            le_ms: bounds.last().copied().unwrap_or(0.0) * 1000.0,
            over: true,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.001, 0.01, 0.1];

    #[test]
    fn percentile_is_the_bucket_holding_the_rank() {
        // 10 samples: 5 ≤ 1 ms, 4 more ≤ 10 ms, 1 more ≤ 100 ms, none above.
        let cumulative = [5, 9, 10, 10];
        let p50 = percentile(&BOUNDS, &cumulative, 0.50).unwrap();
        assert_eq!(p50.le_ms, 1.0);
        assert!(!p50.over);
        let p99 = percentile(&BOUNDS, &cumulative, 0.99).unwrap();
        assert_eq!(p99.le_ms, 100.0);
        assert!(!p99.over);
    }

    #[test]
    fn percentile_above_every_bucket_says_so() {
        let p99 = percentile(&BOUNDS, &[0, 0, 1, 3], 0.99).unwrap();
        assert!(p99.over);
        assert_eq!(p99.le_ms, 100.0);
    }

    #[test]
    fn percentile_of_nothing_is_none() {
        assert_eq!(percentile(&BOUNDS, &[0, 0, 0, 0], 0.5), None);
        assert_eq!(percentile(&BOUNDS, &[], 0.5), None);
    }

    #[test]
    fn ring_keeps_only_the_last_history_points() {
        let mut ring = Ring {
            samples: VecDeque::new(),
            last_at: None,
        };
        for t in 0..(HISTORY as Millis + 5) {
            let point = Point {
                t,
                connections: 0,
                devices: 0,
                persons: 0,
                messages_per_s: 0.0,
                deliveries_per_s: 0.0,
                errors_per_s: 0.0,
            };
            let counters = Counters::default();
            ring.push(Sample { point, counters }, Instant::now());
        }
        assert_eq!(ring.samples.len(), HISTORY);
        assert_eq!(ring.samples.front().unwrap().point.t, 5);
        assert_eq!(ring.samples.back().unwrap().point.t, HISTORY as Millis + 4);
    }

    #[test]
    fn window_is_the_difference_of_cumulative_counts() {
        assert_eq!(diff(&[5, 9, 10], Some(&[1, 2, 3])), vec![4, 7, 7]);
        assert_eq!(diff(&[5, 9, 10], None), vec![5, 9, 10]);
    }
}
