//! Timers per key (Flink's `InternalTimerService`): event-time timers fire when the watermark
//! reaches them, processing-time timers when the clock passes them; one timer per `(key, time)`;
//! timers are state, snapshotted per key group.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::key_group::key_group;
use super::snapshot::{SnapshotError, SnapshotKind, decode, encode};
use crate::window::TimeDomain;

/// The event- and processing-time timers of one operator instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimerService<K: Ord> {
    /// Event-time timers by `(may fire from, time, key)`.
    event: BTreeSet<(i64, i64, K)>,
    /// `(key, time)` → may fire from: finds a timer by key and time.
    event_index: BTreeMap<(K, i64), i64>,
    /// Processing-time timers by `(time, key)`.
    processing: BTreeSet<(i64, K)>,
}

impl<K: Ord> Default for TimerService<K> {
    fn default() -> Self {
        TimerService { event: BTreeSet::new(), event_index: BTreeMap::new(), processing: BTreeSet::new() }
    }
}

impl<K: Ord + Clone + Hash + Serialize + DeserializeOwned> TimerService<K> {
    /// No timers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an event-time timer for `key` at `time_ms`; a duplicate is a no-op. Registered
    /// at or below the current `watermark_ms` while not firing, it fires at the next (strictly
    /// higher) watermark, as in Flink.
    pub fn register_event_time(&mut self, key: K, time_ms: i64, watermark_ms: i64, firing: bool) {
        if self.event_index.contains_key(&(key.clone(), time_ms)) {
            return;
        }
        let from = if firing { time_ms } else { time_ms.max(watermark_ms.saturating_add(1)) };
        self.event_index.insert((key.clone(), time_ms), from);
        self.event.insert((from, time_ms, key));
    }

    /// Withdraws an event-time timer.
    pub fn delete_event_time(&mut self, key: &K, time_ms: i64) {
        if let Some(from) = self.event_index.remove(&(key.clone(), time_ms)) {
            self.event.remove(&(from, time_ms, key.clone()));
        }
    }

    /// Registers a processing-time timer; a duplicate is a no-op.
    pub fn register_processing_time(&mut self, key: K, time_ms: i64) {
        self.processing.insert((time_ms, key));
    }

    /// Withdraws a processing-time timer.
    pub fn delete_processing_time(&mut self, key: &K, time_ms: i64) {
        self.processing.remove(&(time_ms, key.clone()));
    }

    /// Removes and returns the next event-time timer due at `watermark_ms`, in time order.
    pub fn pop_event_time(&mut self, watermark_ms: i64) -> Option<(i64, K)> {
        let first = self.event.first()?;
        if first.0 > watermark_ms {
            return None;
        }
        let (_, time, key) = self.event.pop_first().expect("present");
        self.event_index.remove(&(key.clone(), time));
        assert!(time <= watermark_ms, "timer {time} would fire early at watermark {watermark_ms}");
        Some((time, key))
    }

    /// Removes and returns the next processing-time timer before `now_ms`.
    pub fn pop_processing_time(&mut self, now_ms: i64) -> Option<(i64, K)> {
        if self.processing.first()?.0 >= now_ms {
            return None;
        }
        self.processing.pop_first()
    }

    /// The earliest processing-time timer.
    pub fn next_processing_time(&self) -> Option<i64> {
        self.processing.first().map(|(time, _)| *time)
    }

    /// How many timers are pending.
    pub fn len(&self) -> usize {
        self.event.len() + self.processing.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every pending timer as `(domain, time, key)`, in order.
    pub fn pending(&self) -> Vec<(TimeDomain, i64, K)> {
        let event = self.event.iter().map(|(_, time, key)| (TimeDomain::EventTime, *time, key.clone()));
        let processing = self.processing.iter().map(|(time, key)| (TimeDomain::ProcessingTime, *time, key.clone()));
        event.chain(processing).collect()
    }

    /// Snapshots the timers (as state of their keys' key groups).
    pub fn snapshot(&self) -> Vec<u8> {
        encode(SnapshotKind::KeyedState, self)
    }

    /// Restores the timers of keys in `key_groups` from every old worker's snapshot.
    pub fn restore(
        &mut self,
        snapshots: &[Vec<u8>],
        key_groups: std::ops::Range<u32>,
        max_parallelism: u32,
    ) -> Result<(), SnapshotError> {
        let mut fresh = TimerService::default();
        for bytes in snapshots {
            let old: TimerService<K> = decode(SnapshotKind::KeyedState, bytes)?;
            let mine = |key: &K| key_groups.contains(&key_group(key, max_parallelism));
            for (from, time, key) in old.event.into_iter().filter(|(_, _, key)| mine(key)) {
                fresh.event_index.insert((key.clone(), time), from);
                fresh.event.insert((from, time, key));
            }
            fresh.processing.extend(old.processing.into_iter().filter(|(_, key)| mine(key)));
        }
        *self = fresh;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_coalesce_and_timers_fire_in_time_order_never_early() {
        let (a, b, c, d) = (1u32, 2u32, 3u32, 4u32);
        let mut timers = TimerService::new();
        timers.register_event_time(b, 30, i64::MIN, false);
        timers.register_event_time(a, 10, i64::MIN, false);
        timers.register_event_time(a, 10, i64::MIN, false);
        timers.register_event_time(c, 20, i64::MIN, false);
        assert_eq!(timers.len(), 3);
        assert_eq!(timers.pop_event_time(9), None);
        assert_eq!(timers.pop_event_time(25), Some((10, a)));
        assert_eq!(timers.pop_event_time(25), Some((20, c)));
        assert_eq!(timers.pop_event_time(25), None);
        // Registered in the past, outside a firing: waits for the next watermark above 25.
        timers.register_event_time(d, 5, 25, false);
        assert_eq!(timers.pop_event_time(25), None);
        assert_eq!(timers.pop_event_time(26), Some((5, d)));
    }
}
