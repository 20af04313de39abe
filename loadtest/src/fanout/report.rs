//! What a fanout run reports: per phase and for the whole run (serialized as the `--json`
//! report that `compare.sh` reads).

use serde::Serialize;

use crate::accounting::{Latency, Totals};

/// One phase's results.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// Target sends per second.
    pub rate: u32,
    /// Sends actually made in the measured window.
    pub sends: u64,
    /// Deliveries owed for this phase's measured sends that arrived (whenever: until the run's
    /// end), per measured second. The latency percentiles are theirs.
    pub deliveries_per_sec: f64,
    /// Deliveries that arrived during the measured window (whichever send they were for: the
    /// work the broker did in it), per second. Below `deliveries_per_sec` when the broker falls
    /// behind and delivers this phase's sends after it.
    pub window_deliveries_per_sec: f64,
    /// Latency percentiles (µs).
    #[serde(flatten)]
    pub latency: Latency,
    /// From a measured send's scheduled time to its acknowledgement (octet's `sent`; for
    /// JetStream the later of its two PubAcks), µs; `None` for a broker that sends none.
    pub ack_latency: Option<Latency>,
    /// Broker CPU seconds during the measured window.
    pub server_cpu_seconds: Option<f64>,
    /// Deliveries per broker CPU second, both over the measured window (the deliveries of
    /// `window_deliveries_per_sec`: a broker that falls behind spends the CPU for this phase's
    /// sends after the window).
    pub deliveries_per_cpu_second: Option<f64>,
    /// Broker RSS at the end of the phase.
    pub server_rss_bytes: Option<u64>,
    /// The generator's own CPU seconds over the same window (near the measured seconds × its
    /// cores, it is the bottleneck, not the broker).
    pub generator_cpu_seconds: Option<f64>,
    /// How late the generator made its latest measured send against the schedule (µs): a
    /// generator short of CPU shows here first, and so does a broker that stops reading its
    /// senders' sockets (a send waits for room). Latency still counts from the schedule.
    pub send_lag_max_us: u64,
    /// Deliveries owed for this phase's sends (warm-up included) that never arrived.
    pub lost: u64,
    /// Deliveries of this phase's sends that arrived again (a duplicate).
    pub duplicated: u64,
    /// Deliveries of this phase's sends that arrived after a later one of the same sender.
    pub out_of_order: u64,
    /// Deliveries owed for the measured sends (the schedule: rate × measured s × deliveries per
    /// send).
    pub scheduled: u64,
    /// Of those, how many arrived before the phase's measured window ended.
    pub delivered_in_phase: u64,
    /// `delivered_in_phase / scheduled`.
    pub delivered_share: f64,
    /// At least [`KEPT_UP_SHARE`] delivered within the phase and nothing lost.
    pub kept_up: bool,
}

/// Acknowledgements of sends over the whole run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Acks {
    /// Owed: sends × acknowledgements per send.
    pub owed: u64,
    /// Stored (octet `sent`, JetStream PubAck).
    pub stored: u64,
    /// Refused (an `error` for a send, a JetStream error or no responders).
    pub refused: u64,
    /// Owed and never answered.
    pub missing: u64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The broker: octet, nats or jetstream.
    pub target: &'static str,
    /// Devices connected.
    pub connections: u64,
    /// Every phase.
    pub phases: Vec<Phase>,
    /// Accounting over the whole run (warm-ups included).
    pub totals: Totals,
    /// The highest rate whose phase had p99 ≤ 10 ms and lost nothing.
    pub headline_rate: Option<u32>,
    /// Deliveries/s at the headline rate.
    pub headline_deliveries_per_sec: Option<f64>,
    /// The highest rate whose phase kept up (see the module's doc).
    pub ceiling_rate: Option<u32>,
    /// p99 at the ceiling rate (µs).
    pub ceiling_p99_us: Option<u64>,
    /// Deliveries/s at the ceiling rate.
    pub ceiling_deliveries_per_sec: Option<f64>,
    /// Acknowledgements of sends; `None` for a broker that sends none (NATS core).
    pub acks: Option<Acks>,
}
