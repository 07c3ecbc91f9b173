//! # flowlab-sim: a deterministic substrate for timely workers
//!
//! A stream processor's hardest bugs live in interleavings: a barrier that overtakes a record, a
//! watermark computed before a buffered record was counted, a crash between a checkpoint and a
//! commit. On real threads such an interleaving happens once in a million runs and never again
//! when you look. The simulator makes the interleaving a function of one number, the seed: it steps
//! N timely workers one at a time in an order a seeded RNG chooses, delays their messages, and
//! crashes them, so that a failing seed replays the failure bit for bit.
//!
//! The simulator knows timely and faults; it knows nothing of windows or state. The engine runs the
//! same operator code here, on threads and across processes: only the substrate changes (the idea
//! of turmoil and madsim).
//!
//! This crate is grown by flowlab's simulator issue. Today it holds the part every simulated run
//! stands on: [`SimRng`], the one source of randomness, and [`StepOrder`], which picks the next
//! worker to step.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The simulator's only source of randomness: ChaCha8 seeded with a `u64`.
///
/// Every random choice of a run — step order, message delays, crash points — is drawn from one
/// `SimRng` in the order the run makes them, so the seed alone determines the run.
#[derive(Clone, Debug)]
pub struct SimRng {
    seed: u64,
    rng: ChaCha8Rng,
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SimRng { seed, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The seed this generator started from (print it with every failure).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A uniform draw from `0..bound`. `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "cannot draw from an empty range");
        self.rng.random_range(0..bound)
    }

    /// `true` with probability `probability` (clamped to `[0, 1]`).
    pub fn chance(&mut self, probability: f64) -> bool {
        self.rng.random_bool(probability.clamp(0.0, 1.0))
    }
}

/// Chooses which worker steps next, uniformly among those that may step.
#[derive(Clone, Debug)]
pub struct StepOrder {
    rng: SimRng,
}

impl StepOrder {
    /// A step order drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        StepOrder { rng: SimRng::new(seed) }
    }

    /// The index (into `runnable`) of the worker to step next, or `None` if none may step.
    /// `runnable[i]` says whether worker `i` may step now (it is not stalled or crashed).
    pub fn next(&mut self, runnable: &[bool]) -> Option<usize> {
        let candidates = runnable.iter().filter(|&&may| may).count() as u64;
        if candidates == 0 {
            return None;
        }
        let chosen = self.rng.below(candidates) as usize;
        runnable.iter().enumerate().filter(|(_, may)| **may).map(|(index, _)| index).nth(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_order_and_only_runnable_workers_step() {
        let runnable = [true, false, true, true];
        let order = |seed| {
            let mut steps = StepOrder::new(seed);
            (0..200).map(|_| steps.next(&runnable).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(order(9), order(9));
        assert_ne!(order(9), order(10));
        let seen: std::collections::BTreeSet<usize> = order(9).into_iter().collect();
        assert_eq!(seen, [0, 2, 3].into_iter().collect());
        assert_eq!(StepOrder::new(1).next(&[false, false]), None);
    }
}
