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
//! # What is here
//!
//! - [`Simulation`] runs N timely workers, each on its own OS thread with timely's process
//!   allocator, and passes a baton so that exactly one of them steps at a time, in the order a
//!   seeded [`StepOrder`] chooses. It owns a [`VirtualClock`] that advances by ticks, can stall
//!   workers ([`SimConfig::stall_probability`]), and records a [`Trace`] whose hash identifies the
//!   run. A step limit turns a livelock into an error.
//! - [`Network`] delays exchanged *data* messages: [`Network::delayed`] wraps any timely
//!   parallelization contract so that each message waits a seeded delay (and links may clog)
//!   before the receiving operator sees it, keeping per-link FIFO order. Progress messages are not
//!   delayed (timely's allocator trait is crate-private, so they cannot be intercepted without a
//!   patched timely).
//! - [`SimRng`] is the one source of randomness, ChaCha8 seeded with a `u64`.
//!
//! - Crashes ([`SimConfig::crash_probability`]): after any step every worker may crash; the
//!   simulator drops them all (dataflows, threads, allocators, messages in flight) and builds fresh
//!   ones, with a higher [`Incarnation`]. What survives is whatever the job keeps outside its
//!   workers — flowlab's checkpoint store and the committed output of its transactional sinks.
//!
//! ```
//! use flowlab_sim::{SimConfig, Simulation};
//! use timely::dataflow::operators::{Exchange, Inspect, ToStream};
//!
//! let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! let report = Simulation::new(SimConfig { workers: 3, seed: 7, ..SimConfig::default() })
//!     .run(move |worker| {
//!         let sink = sink.clone();
//!         let index = worker.index();
//!         worker.dataflow::<u64, _, _>(|scope| {
//!             (0..10u64)
//!                 .filter(move |x| x % 3 == index as u64)
//!                 .to_stream(scope)
//!                 .container::<Vec<_>>()
//!                 .exchange(|x| *x)
//!                 .inspect(move |x| sink.lock().unwrap().push(*x));
//!         });
//!     })
//!     .unwrap()
//!     .report;
//! let mut seen = seen.lock().unwrap().clone();
//! seen.sort();
//! assert_eq!(seen, (0..10).collect::<Vec<u64>>());
//! assert!(report.steps > 0);
//! ```

#![warn(missing_docs)]

mod clock;
mod network;
mod substrate;
mod trace;

pub use clock::VirtualClock;
pub use network::{Delayed, DelayedPuller, Network, NetworkConfig};
pub use substrate::{AfterCrash, CrashInfo, Incarnation, SimConfig, SimError, SimOutcome, SimReport, Simulation};
pub use trace::{Trace, TraceEvent, TraceRecorder, stable_hash};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Derives an independent seed from `seed` and a list of words (splitmix64 over each word), so
/// that separate random streams of one run — step order, stalls, each network link — do not
/// disturb each other when one of them draws more or less.
pub fn derive_seed(seed: u64, words: &[u64]) -> u64 {
    let mut state = seed;
    for &word in words {
        state = splitmix64(state ^ splitmix64(word));
    }
    splitmix64(state)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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
