//! Windows with Flink's semantics.
//!
//! A window operator answers four questions for every element, and flowlab answers each exactly as
//! Flink's `WindowOperator` does:
//!
//! 1. **Which windows?** The [`WindowAssigner`] says: one tumbling window, `size / slide` sliding
//!    windows, a session `[t, t + gap)` that merges with the key's open sessions when they touch,
//!    or the one global window. Time windows are aligned to the epoch (plus an offset), also for
//!    negative timestamps: `start = t - floor_mod(t - offset, size)`.
//! 2. **Too late?** A window is late once `window.max_timestamp() + allowed_lateness <= watermark`
//!    (event time only). The element is dropped from that window only; an element dropped from
//!    *every* window goes to the late side output, counted — never silently lost.
//! 3. **When to emit?** The [`Trigger`] decides, on each element, event-time timer and
//!    processing-time timer: continue, fire, purge, or fire and purge. The default event-time
//!    trigger fires when the watermark reaches `max_timestamp()`, and again for every late element
//!    within the allowed lateness (a *late firing* re-emits the updated window).
//! 4. **What to emit?** An incremental [`AggregateFunction`] (or reduce) folds elements as they
//!    come; a [`ProcessWindowFunction`] sees all elements, after an optional [`Evictor`].
//!
//! # Which watermark?
//!
//! When the operator's input arrives in the order of one source instance (a file read by one
//! reader, spread by one `key_by`), its watermark follows the records: before each record, the
//! operator advances to the watermark stamp the record carries (the watermark its source had
//! emitted before it) and fires every timer up to it — exactly what Flink's operator does when
//! that watermark arrives ahead of the record. Otherwise (several sources, or records already
//! reordered by an earlier exchange) the operator's watermark is timely's frontier, the minimum
//! over its inputs. Either way the frontier advances too, and because every record whose stamp is
//! below `W` has arrived by the time the frontier reaches `W`, no window fires before all of its
//! on-time elements are in.
//!
//! The state lives per key in ordered maps; nothing iterates a hash map, so the order of results
//! is a function of the input.

mod assigner;
mod evictor;
mod function;
mod key_index;
mod local_global;
mod operator;
mod sliced;
mod trigger;

pub use assigner::{
    GlobalWindows, SessionWindows, SlidingWindows, TimeDomain, TumblingWindows, WindowAssigner,
    window_start_with_offset,
};
pub use evictor::{CountEvictor, Evictor, TimeEvictor};
pub use function::{AggregateFunction, Aggregating, ProcessWindowFunction, Processing, ReduceAggregate, WindowLogic};
pub use local_global::{LocalFold, MergePartials, Partial};
pub use operator::{WindowCore, WindowCounts, WindowEmit, WindowSettings};
pub use sliced::{SliceSpec, SlicedCore};
pub use trigger::{
    ContinuousEventTimeTrigger, CountTrigger, EventTimeTrigger, NeverTrigger, ProcessingTimeTrigger, PurgingTrigger,
    TRIGGER_STATE_SLOTS, Trigger, TriggerContext, TriggerResult,
};

use serde::{Deserialize, Serialize};

/// A window: the half-open interval `[start, end)` of event (or processing) time.
///
/// The global window is `[i64::MIN, i64::MAX)` with [`max_timestamp`](Self::max_timestamp)
/// `i64::MAX`, as Flink's `GlobalWindow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl Window {
    /// The global window, holding everything.
    pub const GLOBAL: Window = Window { start: i64::MIN, end: i64::MAX };

    /// The window `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        debug_assert!(start < end, "empty window [{start}, {end})");
        Window { start, end }
    }

    /// The largest timestamp in the window, `end - 1` (Flink's `maxTimestamp`); results of the
    /// window carry this event time.
    pub fn max_timestamp(&self) -> i64 {
        if *self == Window::GLOBAL { i64::MAX } else { self.end - 1 }
    }

    /// Flink's `TimeWindow.intersects`: inclusive at both ends, so `[0, 3)` and `[3, 6)` intersect
    /// and sessions exactly one gap apart merge.
    pub fn intersects(&self, other: &Window) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// One firing of a window: the key, the window, and the function's result.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowResult<K, R> {
    /// The key.
    pub key: K,
    /// The window that fired.
    pub window: Window,
    /// What the window function produced.
    pub value: R,
}

/// What the window operators' unit tests aggregate with.
#[cfg(test)]
pub(crate) mod test_functions {
    use super::AggregateFunction;

    /// `(count, sum)` of `i64` values.
    pub(crate) struct Sum;

    impl AggregateFunction<i64> for Sum {
        type Accumulator = (i64, i64);
        type Output = (i64, i64);
        fn create_accumulator(&self) -> (i64, i64) {
            (0, 0)
        }
        fn add(&self, acc: &mut (i64, i64), value: &i64) {
            *acc = (acc.0 + 1, acc.1 + value);
        }
        fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
            *acc = (acc.0 + other.0, acc.1 + other.1);
        }
        fn result(&self, acc: &(i64, i64)) -> (i64, i64) {
            *acc
        }
    }
}
