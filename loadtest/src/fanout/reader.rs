//! One device's reader in a `fanout` run: times each arrival against its scheduled send,
//! counts duplicates and gaps per phase, and times the acknowledgements of its own sends.

use super::*;

/// Reads one device's stream until `stop`, counting into its own result and `seen`.
pub(super) async fn read_device(
    target: Target,
    mut stream: SplitStream<Ws>,
    epoch: Instant,
    phases: usize,
    mut stop: watch::Receiver<bool>,
    seen: Arc<Seen>,
) -> DeviceResult {
    let acks_per_send = target.acks_per_send();
    let mut result = DeviceResult {
        tracker: Tracker::default(),
        hists: (0..phases).map(|_| new_hist()).collect(),
        counts: vec![0; phases],
        unique: vec![0; phases],
        duplicated: vec![0; phases],
        out_of_order: vec![0; phases],
        in_phase: vec![0; phases],
        in_window: vec![0; phases],
        acks: (0, 0),
        ack_hists: (0..phases).map(|_| new_hist()).collect(),
    };
    let mut stamps = Vec::new();
    let mut acks = Vec::new();
    loop {
        let next = tokio::select! {
            _ = stop.changed() => break,
            next = stream.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            None | Some(Err(_)) => break,
        };
        stamps.clear();
        acks.clear();
        target.receive(&message, &mut stamps, &mut acks);
        let now = epoch.elapsed().as_nanos() as u64;
        if !stamps.is_empty()
            && let Some(w) = (0..phases).find(|&w| {
                seen.window_starts[w].load(Ordering::Acquire) <= now
                    && now <= seen.window_ends[w].load(Ordering::Acquire)
            })
        {
            result.in_window[w] += stamps.len() as u64;
        }
        for stamp in stamps.drain(..) {
            let arrival = result.tracker.arrive(stamp.s, stamp.n);
            seen.deliveries.fetch_add(1, Ordering::Relaxed);
            let p = stamp.p as usize;
            if p >= phases {
                continue;
            }
            match arrival {
                Arrival::New => result.unique[p] += 1,
                Arrival::Duplicate => result.duplicated[p] += 1,
                Arrival::OutOfOrder => result.out_of_order[p] += 1,
            }
            if stamp.w == 0 {
                let latency = now.saturating_sub(stamp.t).max(1);
                result.hists[p].saturating_record(latency);
                result.counts[p] += 1;
                if arrival == Arrival::New && now <= seen.window_ends[p].load(Ordering::Acquire) {
                    result.in_phase[p] += 1;
                }
            }
        }
        for ack in acks.drain(..) {
            seen.acks.fetch_add(1, Ordering::Relaxed);
            if ack.stored {
                result.acks.0 += 1;
            } else {
                result.acks.1 += 1;
            }
            let Some((s, n)) = ack.send else { continue };
            let Some(log) = seen.sends.get(s as usize) else {
                continue;
            };
            let record = {
                let mut log = log.lock().expect("send log");
                let Some(record) = log.get_mut((n as usize).wrapping_sub(1)) else {
                    continue;
                };
                record.acks += 1;
                *record
            };
            if ack.stored
                && !record.warm
                && u64::from(record.acks) == acks_per_send
                && (record.p as usize) < phases
            {
                result.ack_hists[record.p as usize]
                    .saturating_record(now.saturating_sub(record.t).max(1));
            }
        }
    }
    result
}
