//! Per-person upload limits, checked before a byte of the body is read: how many uploads a
//! person may start per minute (a token bucket shared by all of its devices and connections)
//! and have in progress at once, and a fair turn at the image decoder.
//!
//! Decoding is memory-hungry, so the broker decodes few images at once (the global pool). A
//! person waits for its own turn (one decode per person) before it joins the pool's queue, so
//! the queue holds at most one upload per person and a person with many images delays another
//! person by at most one decode, not by all of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::FileError;
use crate::store::PersonId;

/// Persons remembered before idle entries are forgotten.
const FORGET_ABOVE: usize = 10_000;

/// The limits, shared by every upload.
#[derive(Debug)]
pub struct UploadGate {
    persons: Arc<Mutex<HashMap<PersonId, PersonUploads>>>,
    /// Uploads per minute, and the burst.
    per_minute: u32,
    /// Uploads of one person in progress at once.
    concurrency: usize,
    /// The global decoder pool.
    decoders: Arc<Semaphore>,
    /// The size past which the next new person sweeps idle entries: doubled after each sweep,
    /// so a map of busy persons is not rescanned on every admit (each sweep is paid for by as
    /// many new entries as it scanned).
    sweep_at: std::sync::atomic::AtomicUsize,
}

#[derive(Debug)]
struct PersonUploads {
    /// Uploads the person may still start now.
    tokens: f64,
    last: Instant,
    /// Uploads in progress.
    active: usize,
    /// The person's own turn at the decoder.
    decode: Arc<Semaphore>,
}

impl PersonUploads {
    fn refill(&mut self, per_minute: u32, now: Instant) {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.last = now;
    }

    /// Nothing in progress and nothing to remember: the entry can go.
    fn idle(&self, per_minute: u32) -> bool {
        self.active == 0
            && self.tokens >= f64::from(per_minute)
            && Arc::strong_count(&self.decode) == 1
    }
}

/// One admitted upload; dropping it ends the upload for the concurrency limit.
#[derive(Debug)]
pub struct UploadSlot {
    persons: Arc<Mutex<HashMap<PersonId, PersonUploads>>>,
    person: PersonId,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut persons = self.persons.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = persons.get_mut(&self.person) {
            entry.active = entry.active.saturating_sub(1);
        }
    }
}

/// A turn at the decoder: the person's and the pool's. Held for the whole decode.
#[derive(Debug)]
pub struct DecodeTurn {
    _person: OwnedSemaphorePermit,
    _pool: OwnedSemaphorePermit,
}

impl UploadGate {
    /// `per_minute` uploads a minute per person (and as many in a burst), `concurrency` in
    /// progress per person, `decoders` images decoded at once in all.
    pub fn new(per_minute: u32, concurrency: usize, decoders: usize) -> UploadGate {
        UploadGate {
            persons: Arc::default(),
            per_minute: per_minute.max(1),
            concurrency: concurrency.max(1),
            decoders: Arc::new(Semaphore::new(decoders.max(1))),
            sweep_at: std::sync::atomic::AtomicUsize::new(FORGET_ABOVE),
        }
    }

    /// Admits one upload of `person`, or says why not ([`FileError::TooManyUploads`],
    /// [`FileError::UploadRate`]). A refusal costs the person nothing.
    pub fn admit(&self, person: PersonId) -> Result<UploadSlot, FileError> {
        let now = Instant::now();
        let mut persons = self.persons.lock().unwrap_or_else(|p| p.into_inner());
        // Relaxed is enough: `sweep_at` is only read and written under the `persons` lock.
        let sweep_at = self.sweep_at.load(std::sync::atomic::Ordering::Relaxed);
        if persons.len() > sweep_at && !persons.contains_key(&person) {
            for entry in persons.values_mut() {
                entry.refill(self.per_minute, now);
            }
            persons.retain(|_, entry| !entry.idle(self.per_minute));
            let next = (2 * persons.len()).max(FORGET_ABOVE);
            self.sweep_at
                .store(next, std::sync::atomic::Ordering::Relaxed);
        }
        let entry = persons.entry(person).or_insert_with(|| PersonUploads {
            tokens: f64::from(self.per_minute),
            last: now,
            active: 0,
            decode: Arc::new(Semaphore::new(1)),
        });
        entry.refill(self.per_minute, now);
        if entry.active >= self.concurrency {
            return Err(FileError::TooManyUploads(self.concurrency));
        }
        if entry.tokens < 1.0 {
            let wait = (1.0 - entry.tokens) * 60.0 / f64::from(self.per_minute);
            return Err(FileError::UploadRate {
                per_minute: self.per_minute,
                retry_after: Duration::from_secs_f64(wait.ceil().max(1.0)),
            });
        }
        entry.tokens -= 1.0;
        entry.active += 1;
        Ok(UploadSlot {
            persons: self.persons.clone(),
            person,
        })
    }

    /// Waits (at most `wait` in all) for `person`'s turn at the decoder, then for a place in
    /// the pool; [`FileError::Busy`] when the time is up.
    pub async fn decode_turn(
        &self,
        person: PersonId,
        wait: Duration,
    ) -> Result<DecodeTurn, FileError> {
        let deadline = tokio::time::Instant::now() + wait;
        let own = {
            let mut persons = self.persons.lock().unwrap_or_else(|p| p.into_inner());
            let entry = persons.entry(person).or_insert_with(|| PersonUploads {
                tokens: f64::from(self.per_minute),
                last: Instant::now(),
                active: 0,
                decode: Arc::new(Semaphore::new(1)),
            });
            entry.decode.clone()
        };
        let person_permit = tokio::time::timeout_at(deadline, own.acquire_owned())
            .await
            .map_err(|_| FileError::Busy)?
            .map_err(|_| FileError::Busy)?;
        let pool = tokio::time::timeout_at(deadline, self.decoders.clone().acquire_owned())
            .await
            .map_err(|_| FileError::Busy)?
            .map_err(|_| FileError::Busy)?;
        Ok(DecodeTurn {
            _person: person_permit,
            _pool: pool,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    #[test]
    fn a_person_gets_its_burst_then_waits_and_its_concurrency() {
        let gate = UploadGate::new(3, 2, 1);
        let a = gate.admit(1).unwrap();
        let b = gate.admit(1).unwrap();
        // Two in progress: a third is refused, and costs nothing.
        assert!(matches!(gate.admit(1), Err(FileError::TooManyUploads(2))));
        drop(a);
        let c = gate.admit(1).unwrap();
        drop((b, c));
        // Three started this minute: the fourth waits for the bucket.
        match gate.admit(1) {
            Err(FileError::UploadRate { retry_after, .. }) => {
                assert!(retry_after >= Duration::from_secs(1))
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
        // Another person has its own allowance.
        assert!(gate.admit(2).is_ok());
    }

    /// A person with a decode running and another waiting does not get the pool before a
    /// second person who asked after it: the second person is decoded next.
    #[tokio::test]
    async fn the_decoder_takes_turns_between_persons() {
        let gate = UploadGate::new(60, 4, 1);
        let wait = Duration::from_secs(5);
        let first = gate.decode_turn(1, wait).await.unwrap();
        let mut again = pin!(gate.decode_turn(1, wait));
        let mut other = pin!(gate.decode_turn(2, wait));
        // Both queue up (person 1 first) while person 1's first decode runs.
        assert!(futures::poll!(again.as_mut()).is_pending());
        assert!(futures::poll!(other.as_mut()).is_pending());
        drop(first);
        // Person 2 is decoded next (its turn is held while person 1's second upload is polled).
        let Poll::Ready(Ok(_turn)) = futures::poll!(other.as_mut()) else {
            panic!("the second person waits behind the first person's second image");
        };
        assert!(futures::poll!(again.as_mut()).is_pending());
    }
}
