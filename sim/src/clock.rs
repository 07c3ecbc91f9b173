//! The simulator's clock: virtual milliseconds that move only when the simulator says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Virtual processing time, in milliseconds, shared by the simulator and every worker.
///
/// The [`Simulation`](crate::Simulation) advances it after every step (by
/// [`SimConfig::tick_ms`](crate::SimConfig::tick_ms), plus seeded jitter if configured); nothing
/// else moves it, so processing time in a simulated run is a function of the seed. Clones share
/// the same time. Because only one worker runs at a time, every reader sees the same value during
/// one step.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    now_ms: Arc<AtomicI64>,
}

impl VirtualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        VirtualClock { now_ms: Arc::new(AtomicI64::new(start_ms)) }
    }

    /// The current virtual time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }

    /// Moves the clock forward by `delta_ms` (never backwards; saturates at `i64::MAX`).
    pub fn advance_ms(&self, delta_ms: i64) {
        assert!(delta_ms >= 0, "virtual time never goes backwards");
        let _ = self.now_ms.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| Some(now.saturating_add(delta_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_time_and_time_only_moves_forward() {
        let clock = VirtualClock::new(100);
        let other = clock.clone();
        clock.advance_ms(5);
        assert_eq!(other.now_ms(), 105);
        clock.advance_ms(i64::MAX);
        assert_eq!(other.now_ms(), i64::MAX);
    }
}
