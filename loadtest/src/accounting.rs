//! Per-device accounting of what arrived: lost, duplicated and out-of-order messages.
//!
//! Every message body carries its sender's index and a per-sender counter that starts at 1.
//! A broker delivers one sender's messages to one device in order, so for each (device,
//! sender) only the last counter seen is kept: a higher one is new, an equal one a duplicate,
//! a lower one out of order. Lost = expected − new.

use std::collections::HashMap;

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
        match self.last.get_mut(&sender) {
            None => {
                self.last.insert(sender, counter);
                self.unique += 1;
                true
            }
            Some(last) if counter > *last => {
                *last = counter;
                self.unique += 1;
                true
            }
            Some(last) if counter == *last => {
                self.duplicates += 1;
                false
            }
            Some(_) => {
                self.out_of_order += 1;
                false
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
