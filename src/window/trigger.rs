//! Triggers: when a window emits (Flink's `Trigger`).
//!
//! A trigger is asked on every element, on every event-time timer and on every processing-time
//! timer of its window, and answers with a [`TriggerResult`]. It keeps what it needs to remember
//! in a few `i64` state slots per window (a count, the next firing time), which the operator merges
//! when session windows merge and clears when the window is cleaned up.

use std::sync::Arc;

use super::Window;

/// What a trigger wants done with its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing.
    Continue,
    /// Emit the window's contents; keep them.
    Fire,
    /// Drop the window's contents without emitting.
    Purge,
    /// Emit, then drop the contents.
    FireAndPurge,
}

impl TriggerResult {
    /// Whether the window emits.
    pub fn is_fire(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }

    /// Whether the window's contents are dropped.
    pub fn is_purge(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// How many `i64` state slots a trigger has per window.
pub const TRIGGER_STATE_SLOTS: usize = 2;

/// A trigger's state for one window.
pub type TriggerState = [Option<i64>; TRIGGER_STATE_SLOTS];

/// A timer a trigger asks for or withdraws, for its current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerRequest {
    /// Call `on_event_time` once the watermark reaches this time.
    RegisterEvent(i64),
    /// Withdraw an event-time timer.
    DeleteEvent(i64),
    /// Call `on_processing_time` once the clock reaches this time.
    RegisterProcessing(i64),
    /// Withdraw a processing-time timer.
    DeleteProcessing(i64),
}

/// What a trigger may see and do (Flink's `Trigger.TriggerContext` / `OnMergeContext`).
pub struct TriggerContext<'a> {
    /// The operator's watermark for this call.
    pub watermark_ms: i64,
    /// The current processing time.
    pub processing_time_ms: i64,
    pub(crate) state: &'a mut TriggerState,
    pub(crate) merged: &'a [TriggerState],
    pub(crate) timers: &'a mut Vec<TimerRequest>,
}

impl<'a> TriggerContext<'a> {
    /// A context over `state`; timers the trigger asks for are appended to `timers`.
    pub fn new(
        watermark_ms: i64,
        processing_time_ms: i64,
        state: &'a mut TriggerState,
        merged: &'a [TriggerState],
        timers: &'a mut Vec<TimerRequest>,
    ) -> Self {
        TriggerContext { watermark_ms, processing_time_ms, state, merged, timers }
    }

    /// Fires `on_event_time(time_ms)` once the watermark reaches `time_ms`; duplicates coalesce.
    pub fn register_event_time_timer(&mut self, time_ms: i64) {
        self.timers.push(TimerRequest::RegisterEvent(time_ms));
    }

    /// Withdraws an event-time timer.
    pub fn delete_event_time_timer(&mut self, time_ms: i64) {
        self.timers.push(TimerRequest::DeleteEvent(time_ms));
    }

    /// Fires `on_processing_time(time_ms)` once the clock reaches `time_ms`.
    pub fn register_processing_time_timer(&mut self, time_ms: i64) {
        self.timers.push(TimerRequest::RegisterProcessing(time_ms));
    }

    /// Withdraws a processing-time timer.
    pub fn delete_processing_time_timer(&mut self, time_ms: i64) {
        self.timers.push(TimerRequest::DeleteProcessing(time_ms));
    }

    /// The value in state slot `slot`, if any.
    pub fn state(&self, slot: usize) -> Option<i64> {
        self.state[slot]
    }

    /// Sets state slot `slot`.
    pub fn set_state(&mut self, slot: usize, value: i64) {
        self.state[slot] = Some(value);
    }

    /// Empties state slot `slot`.
    pub fn clear_state(&mut self, slot: usize) {
        self.state[slot] = None;
    }

    /// In `on_merge`: folds slot `slot` of every merged window into this window's slot with
    /// `combine` (Flink's `mergePartitionedState` for a reducing state).
    pub fn merge_state(&mut self, slot: usize, combine: impl Fn(i64, i64) -> i64) {
        let mut merged: Option<i64> = None;
        for state in self.merged {
            if let Some(value) = state[slot] {
                merged = Some(merged.map_or(value, |acc| combine(acc, value)));
            }
        }
        self.state[slot] = merged;
    }
}

/// Decides when a window emits. A lab seam: implement it for custom firing policies.
pub trait Trigger<D>: Send + Sync + 'static {
    /// An element with event time `time_ms` was added to `window`.
    fn on_element(&self, value: &D, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult;
    /// An event-time timer of `window` fired at `time_ms`.
    fn on_event_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult;
    /// A processing-time timer of `window` fired at `time_ms`.
    fn on_processing_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult;
    /// Whether the trigger supports merging windows (sessions).
    fn can_merge(&self) -> bool {
        false
    }
    /// Windows were merged into `window`; `ctx` can fold their state.
    fn on_merge(&self, _window: &Window, _ctx: &mut TriggerContext) {}
    /// `window` is being removed: withdraw timers and clear state.
    fn clear(&self, window: &Window, ctx: &mut TriggerContext);
    /// A name for the job graph.
    fn name(&self) -> String;
    /// Whether the trigger acts only at the window's end: it fires when the watermark passes
    /// the window's last millisecond, and for each late element after that, with no timer of
    /// its own before. Then the order in which session elements of parallel sources arrive
    /// matters only in a few cases the window operator can tell; for any other trigger (the
    /// default: `false`) the operator takes every session element of a parallel source in stamp
    /// order, holding it until the watermark has passed its stamp.
    fn acts_only_at_window_end(&self) -> bool {
        false
    }
}

/// Fires once the watermark passes the window's end, and for every late element within the
/// allowed lateness (Flink's `EventTimeTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventTimeTrigger;

impl<D> Trigger<D> for EventTimeTrigger {
    fn on_element(&self, _value: &D, _time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        if window.max_timestamp() <= ctx.watermark_ms {
            // The watermark is past the window: a late element within the allowed lateness.
            TriggerResult::Fire
        } else {
            ctx.register_event_time_timer(window.max_timestamp());
            TriggerResult::Continue
        }
    }

    fn on_event_time(&self, time_ms: i64, window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        if time_ms == window.max_timestamp() { TriggerResult::Fire } else { TriggerResult::Continue }
    }

    fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&self, window: &Window, ctx: &mut TriggerContext) {
        // Only register a timer if the watermark is not yet past the end of the merged window,
        // as Flink does: a late merged window must not fire again by a timer.
        if window.max_timestamp() > ctx.watermark_ms {
            ctx.register_event_time_timer(window.max_timestamp());
        }
    }

    fn clear(&self, window: &Window, ctx: &mut TriggerContext) {
        ctx.delete_event_time_timer(window.max_timestamp());
    }

    fn name(&self) -> String {
        "event time".to_string()
    }

    fn acts_only_at_window_end(&self) -> bool {
        true
    }
}

/// Fires when the clock passes the window's end (Flink's `ProcessingTimeTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessingTimeTrigger;

impl<D> Trigger<D> for ProcessingTimeTrigger {
    fn on_element(&self, _value: &D, _time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        ctx.register_processing_time_timer(window.max_timestamp());
        TriggerResult::Continue
    }

    fn on_event_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Fire
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&self, window: &Window, ctx: &mut TriggerContext) {
        if window.max_timestamp() > ctx.processing_time_ms {
            ctx.register_processing_time_timer(window.max_timestamp());
        }
    }

    fn clear(&self, window: &Window, ctx: &mut TriggerContext) {
        ctx.delete_processing_time_timer(window.max_timestamp());
    }

    fn name(&self) -> String {
        "processing time".to_string()
    }
}

/// Fires every `count` elements, then starts counting again (Flink's `CountTrigger`).
#[derive(Clone, Copy, Debug)]
pub struct CountTrigger {
    count: i64,
}

impl CountTrigger {
    /// Fires when `count` elements have arrived since the last firing (with `count <= 1`, on
    /// every element, as in Flink).
    pub fn of(count: i64) -> Self {
        CountTrigger { count }
    }
}

const COUNT_SLOT: usize = 0;

impl<D> Trigger<D> for CountTrigger {
    fn on_element(&self, _value: &D, _time_ms: i64, _window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        let seen = ctx.state(COUNT_SLOT).unwrap_or(0) + 1;
        if seen >= self.count {
            ctx.clear_state(COUNT_SLOT);
            TriggerResult::Fire
        } else {
            ctx.set_state(COUNT_SLOT, seen);
            TriggerResult::Continue
        }
    }

    fn on_event_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&self, _window: &Window, ctx: &mut TriggerContext) {
        ctx.merge_state(COUNT_SLOT, |a, b| a + b);
    }

    fn clear(&self, _window: &Window, ctx: &mut TriggerContext) {
        ctx.clear_state(COUNT_SLOT);
    }

    fn name(&self) -> String {
        format!("count {}", self.count)
    }
}

/// Turns every FIRE of `inner` into FIRE_AND_PURGE (Flink's `PurgingTrigger`).
#[derive(Clone)]
pub struct PurgingTrigger<D> {
    inner: Arc<dyn Trigger<D>>,
}

impl<D> PurgingTrigger<D> {
    /// Wraps `inner`.
    pub fn of(inner: Arc<dyn Trigger<D>>) -> Self {
        PurgingTrigger { inner }
    }
}

fn purging(result: TriggerResult) -> TriggerResult {
    if result.is_fire() { TriggerResult::FireAndPurge } else { result }
}

impl<D: 'static> Trigger<D> for PurgingTrigger<D> {
    fn on_element(&self, value: &D, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        purging(self.inner.on_element(value, time_ms, window, ctx))
    }

    fn on_event_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        purging(self.inner.on_event_time(time_ms, window, ctx))
    }

    fn on_processing_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        purging(self.inner.on_processing_time(time_ms, window, ctx))
    }

    fn can_merge(&self) -> bool {
        self.inner.can_merge()
    }

    fn on_merge(&self, window: &Window, ctx: &mut TriggerContext) {
        self.inner.on_merge(window, ctx);
    }

    fn clear(&self, window: &Window, ctx: &mut TriggerContext) {
        self.inner.clear(window, ctx);
    }

    fn name(&self) -> String {
        format!("purging {}", self.inner.name())
    }
}

/// Fires every `interval` of event time inside the window (early firings), and at the window's
/// end (Flink's `ContinuousEventTimeTrigger`).
#[derive(Clone, Copy, Debug)]
pub struct ContinuousEventTimeTrigger {
    interval_ms: i64,
}

impl ContinuousEventTimeTrigger {
    /// Fires every `interval_ms` of event time.
    pub fn of(interval_ms: i64) -> Self {
        assert!(interval_ms > 0, "a continuous trigger needs a positive interval");
        ContinuousEventTimeTrigger { interval_ms }
    }

    fn register_next(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) {
        let next = time_ms.saturating_add(self.interval_ms).min(window.max_timestamp());
        // Flink keeps the minimum of the registered firing times (a reducing state with Min).
        let kept = ctx.state(FIRE_AT_SLOT).map_or(next, |current| current.min(next));
        ctx.set_state(FIRE_AT_SLOT, kept);
        ctx.register_event_time_timer(next);
    }
}

const FIRE_AT_SLOT: usize = 0;

impl<D> Trigger<D> for ContinuousEventTimeTrigger {
    fn on_element(&self, _value: &D, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        if window.max_timestamp() <= ctx.watermark_ms {
            return TriggerResult::Fire;
        }
        ctx.register_event_time_timer(window.max_timestamp());
        if ctx.state(FIRE_AT_SLOT).is_none() {
            // Java's `%` truncates toward zero, as Rust's does.
            self.register_next(time_ms - (time_ms % self.interval_ms), window, ctx);
        }
        TriggerResult::Continue
    }

    fn on_event_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        if time_ms == window.max_timestamp() {
            return TriggerResult::Fire;
        }
        if ctx.state(FIRE_AT_SLOT) == Some(time_ms) {
            ctx.clear_state(FIRE_AT_SLOT);
            self.register_next(time_ms, window, ctx);
            return TriggerResult::Fire;
        }
        TriggerResult::Continue
    }

    fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn can_merge(&self) -> bool {
        true
    }

    fn on_merge(&self, window: &Window, ctx: &mut TriggerContext) {
        ctx.merge_state(FIRE_AT_SLOT, i64::min);
        if let Some(next) = ctx.state(FIRE_AT_SLOT)
            && next <= window.max_timestamp()
        {
            ctx.register_event_time_timer(next);
        }
    }

    fn clear(&self, window: &Window, ctx: &mut TriggerContext) {
        if let Some(next) = ctx.state(FIRE_AT_SLOT) {
            ctx.delete_event_time_timer(next);
        }
        ctx.delete_event_time_timer(window.max_timestamp());
        ctx.clear_state(FIRE_AT_SLOT);
    }

    fn name(&self) -> String {
        format!("continuous event time every {}ms", self.interval_ms)
    }
}

/// Never fires: the default of [`GlobalWindows`](super::GlobalWindows).
#[derive(Clone, Copy, Debug, Default)]
pub struct NeverTrigger;

impl<D> Trigger<D> for NeverTrigger {
    fn on_element(&self, _value: &D, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_event_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
        TriggerResult::Continue
    }

    fn clear(&self, _window: &Window, _ctx: &mut TriggerContext) {}

    fn name(&self) -> String {
        "never".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purging_trigger_merges_windows_exactly_when_the_trigger_it_wraps_does() {
        // Session windows refuse a trigger that cannot merge (`WindowedStream::build`): wrapping
        // it in a purging trigger must not smuggle it in, nor keep out one that can.
        let never: Arc<dyn Trigger<u8>> = Arc::new(NeverTrigger);
        let event_time: Arc<dyn Trigger<u8>> = Arc::new(EventTimeTrigger);
        assert!(!Trigger::<u8>::can_merge(&PurgingTrigger::of(never)));
        assert!(Trigger::<u8>::can_merge(&PurgingTrigger::of(event_time)));
    }
}
