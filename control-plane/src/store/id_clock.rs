//! Ids for a store that several replicas write at once (etcd): no shared counter key, so
//! transactions that take ids do not all conflict on one key.
//!
//! An id is `tick << 8 | slot`: `tick` is a hybrid clock in sixteenths of a millisecond
//! since the epoch (the wall clock, or one more than the last tick this replica gave when
//! that is later), `slot` is the replica's number (0..=255, given out by the store when it
//! connects). Ids of one replica rise strictly; two replicas never give the same id. Ids
//! have gaps, and those of different replicas interleave by their clocks, not by commit
//! order: where order matters (one tenant's audit trail), the caller asks for an id above
//! the last one it read in the same transaction ([`IdClock::next_after`]). Ids stay below
//! 2^53, so JavaScript reads them exactly.

use crate::error::{Error, Result};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ticks per millisecond.
const TICKS_PER_MS: u64 = 16;
/// Bits of the replica's slot.
const SLOT_BITS: u32 = 8;
/// How many replicas get distinct slots.
pub(super) const SLOTS: u64 = 1 << SLOT_BITS;

/// One replica's source of ids.
#[derive(Debug)]
pub(super) struct IdClock {
    slot: u64,
    last_tick: Mutex<u64>,
}

impl IdClock {
    /// The clock of the replica holding `slot` (taken modulo [`SLOTS`]).
    pub(super) fn new(slot: u64) -> Self {
        IdClock {
            slot: slot % SLOTS,
            last_tick: Mutex::new(0),
        }
    }

    fn now_tick() -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / TICKS_PER_MS))
            .unwrap_or(0);
        ms.saturating_mul(TICKS_PER_MS)
    }

    /// A fresh id greater than `floor` and than every id this clock gave before.
    pub(super) fn next_after(&self, floor: u64) -> Result<u64> {
        let mut last = self
            .last_tick
            .lock()
            .map_err(|_| Error::Storage("the id clock's lock is poisoned".into()))?;
        let tick = Self::now_tick()
            .max(last.saturating_add(1))
            .max((floor >> SLOT_BITS).saturating_add(1));
        *last = tick;
        Ok(tick << SLOT_BITS | self.slot)
    }

    /// An id no greater than any this clock gives from now on.
    pub(super) fn peek(&self) -> Result<u64> {
        let last = *self
            .last_tick
            .lock()
            .map_err(|_| Error::Storage("the id clock's lock is poisoned".into()))?;
        Ok(Self::now_tick().max(last.saturating_add(1)) << SLOT_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_stay_distinct_across_replicas_and_fit_in_a_double() {
        let (a, b) = (IdClock::new(1), IdClock::new(2));
        let mut seen = std::collections::BTreeSet::new();
        let mut last = 0;
        for _ in 0..10_000 {
            let id = a.next_after(0).unwrap();
            assert!(id > last, "{id} after {last}");
            last = id;
            assert!(seen.insert(id));
            assert!(seen.insert(b.next_after(0).unwrap()));
        }
        assert!(last < 1 << 53, "{last}");
        assert!(a.peek().unwrap() > last - (1 << SLOT_BITS));
    }

    #[test]
    fn an_id_asked_above_a_floor_from_a_clock_ahead_is_above_it() {
        let (behind, ahead) = (IdClock::new(3), IdClock::new(4));
        // A replica whose clock runs a minute ahead wrote the floor.
        *ahead.last_tick.lock().unwrap() = IdClock::now_tick() + 60_000 * TICKS_PER_MS;
        let floor = ahead.next_after(0).unwrap();
        let id = behind.next_after(floor).unwrap();
        assert!(id > floor);
        assert!(behind.next_after(0).unwrap() > id);
    }
}
