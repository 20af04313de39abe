//! Per-device accounting of what arrived: lost, duplicated and out-of-order messages.
//!
//! Every message body carries its sender's index and a per-sender counter that starts at 1.
//! A broker delivers one sender's messages to one device in order, so for each (device,
//! sender) only the last counter seen is kept: a higher one is new, an equal one a duplicate,
//! a lower one out of order. Lost = expected − new.

use std::collections::HashMap;

/// Send→deliver latency percentiles in microseconds, from a histogram of nanoseconds. Flattened
/// into the reports, so the JSON keeps `p50_us`, `p99_us`, `p999_us` and `max_us` at their top.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    /// The percentiles of `nanos`.
    pub fn of(nanos: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            p50_us: nanos.value_at_quantile(0.5) / 1000,
            p99_us: nanos.value_at_quantile(0.99) / 1000,
            p999_us: nanos.value_at_quantile(0.999) / 1000,
            max_us: nanos.max() / 1000,
        }
    }
}

/// What one arrival was, against what the device saw of its sender before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A counter higher than any before: new.
    New,
    /// The last counter again.
    Duplicate,
    /// A counter below the last one.
    OutOfOrder,
}

/// One device's view.
#[derive(Debug, Default)]
pub struct Tracker {
    last: HashMap<u32, u32>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
}

impl Tracker {
    /// Records one arrival; true when it was new.
    pub fn observe(&mut self, sender: u32, counter: u32) -> bool {
        self.arrive(sender, counter) == Arrival::New
    }

    /// Records one arrival and says what it was.
    pub fn arrive(&mut self, sender: u32, counter: u32) -> Arrival {
        match self.last.get_mut(&sender) {
            None => {
                self.last.insert(sender, counter);
                self.unique += 1;
                Arrival::New
            }
            Some(last) if counter > *last => {
                *last = counter;
                self.unique += 1;
                Arrival::New
            }
            Some(last) if counter == *last => {
                self.duplicates += 1;
                Arrival::Duplicate
            }
            Some(_) => {
                self.out_of_order += 1;
                Arrival::OutOfOrder
            }
        }
    }

    /// Arrivals that were new.
    pub fn unique(&self) -> u64 {
        self.unique
    }
}

/// The sum over every device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    /// Deliveries the broker owed.
    pub expected: u64,
    /// New arrivals.
    pub received: u64,
    /// Owed but never arrived.
    pub lost: u64,
    /// Arrived twice.
    pub duplicated: u64,
    /// Arrived after a later message of the same sender.
    pub out_of_order: u64,
}

impl Totals {
    /// Adds one device's tracker, which was owed `expected` deliveries.
    pub fn add(&mut self, tracker: &Tracker, expected: u64) {
        self.expected += expected;
        self.received += tracker.unique;
        self.lost += expected.saturating_sub(tracker.unique);
        self.duplicated += tracker.duplicates;
        self.out_of_order += tracker.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_in_microseconds_under_the_report_keys() {
        let mut nanos = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for us in 1..=1000u64 {
            nanos.record(us * 1000).unwrap();
        }
        let latency = Latency::of(&nanos);
        assert_eq!((latency.p50_us, latency.max_us), (500, 1000));
        assert!(latency.p99_us >= 989 && latency.p99_us <= latency.p999_us);
        let json = serde_json::to_value(latency).unwrap();
        for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
            assert!(json.get(key).is_some(), "{json}");
        }
    }

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let mut t = Tracker::default();
        for (s, n) in [(1, 1), (1, 2), (2, 1), (1, 2), (1, 4), (1, 3), (2, 2)] {
            t.observe(s, n);
        }
        let mut totals = Totals::default();
        totals.add(&t, 6); // sender 1: 1..=4, sender 2: 1..=2
        assert_eq!(
            totals,
            Totals {
                expected: 6,
                received: 5,
                lost: 1,
                duplicated: 1,
                out_of_order: 1
            }
        );
    }

    #[test]
    fn a_clean_run_has_nothing_to_report() {
        let mut t = Tracker::default();
        for n in 1..=100 {
            t.observe(7, n);
        }
        let mut totals = Totals::default();
        totals.add(&t, 100);
        assert_eq!(
            (totals.lost, totals.duplicated, totals.out_of_order),
            (0, 0, 0)
        );
    }
}
