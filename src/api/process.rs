//! Process functions: per-record logic with keyed state and timers (Flink's
//! `KeyedProcessFunction`), and its broadcast twin for dynamic rules
//! (`KeyedBroadcastProcessFunction`).
//!
//! A process function sees one element at a time with its key's state, can set event-time and
//! processing-time timers for its key, and emits any number of results. Its timers fire in time
//! order once the watermark (or the clock) passes them, never earlier, one per `(key, time)`.
//! Like windows, the operator follows each record's watermark stamp when its input arrives in one
//! source's order, and the frontier otherwise.

use super::{Data, Key, KeyedStream, OperatorKind, Stream};
use crate::error::Result;
use crate::runtime::{Emit, KeyedEngine, keyed_operator};
use crate::state::snapshot::{SnapshotError, SnapshotKind, decode, encode};
use crate::state::{KeyedStateBackend, TimerService};
use crate::time::{Record, WATERMARK_MIN};
use crate::window::TimeDomain;

/// Per-record logic with keyed state and timers. A lab seam.
pub trait KeyedProcessFunction<K: Ord, D>: 'static {
    /// What it emits.
    type Output: Data;
    /// Declares its state (register every descriptor here, as Flink's `open`).
    fn open(&mut self, _state: &mut KeyedStateBackend<K>) {}
    /// Handles one element; the context is scoped to its key.
    fn process_element(&mut self, value: D, ctx: &mut ProcessContext<'_, K, Self::Output>);
    /// A timer of the context's key fired at `time_ms`.
    fn on_timer(&mut self, _time_ms: i64, _domain: TimeDomain, _ctx: &mut ProcessContext<'_, K, Self::Output>) {}
}

/// What a process function may see and do for the current key (Flink's `Context` and
/// `OnTimerContext`).
pub struct ProcessContext<'a, K: Ord, O> {
    key: &'a K,
    timestamp_ms: i64,
    watermark_ms: i64,
    processing_time_ms: i64,
    stamp_ms: i64,
    firing: bool,
    /// The keyed state, scoped to the current key.
    pub state: &'a mut KeyedStateBackend<K>,
    timers: &'a mut TimerService<K>,
    out: &'a mut Vec<Record<O>>,
}

impl<'a, K: Key, O> ProcessContext<'a, K, O> {
    /// A context for `key`, its state scoped to it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: &'a K,
        timestamp_ms: i64,
        watermark_ms: i64,
        processing_time_ms: i64,
        stamp_ms: i64,
        firing: bool,
        state: &'a mut KeyedStateBackend<K>,
        timers: &'a mut TimerService<K>,
        out: &'a mut Vec<Record<O>>,
    ) -> Self {
        state.set_current_key(key.clone());
        state.set_time(processing_time_ms, watermark_ms);
        state.set_timestamp(timestamp_ms);
        ProcessContext { key, timestamp_ms, watermark_ms, processing_time_ms, stamp_ms, firing, state, timers, out }
    }

    /// The current key.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The element's event time, or the firing timer's time.
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// The operator's watermark.
    pub fn current_watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// The processing time.
    pub fn current_processing_time_ms(&self) -> i64 {
        self.processing_time_ms
    }

    /// Calls `on_timer` once the watermark reaches `time_ms`; one timer per `(key, time)`.
    pub fn register_event_time_timer(&mut self, time_ms: i64) {
        self.timers.register_event_time(self.key.clone(), time_ms, self.watermark_ms, self.firing);
    }

    /// Withdraws an event-time timer of the current key.
    pub fn delete_event_time_timer(&mut self, time_ms: i64) {
        self.timers.delete_event_time(self.key, time_ms);
    }

    /// Calls `on_timer` once the clock passes `time_ms`.
    pub fn register_processing_time_timer(&mut self, time_ms: i64) {
        self.timers.register_processing_time(self.key.clone(), time_ms);
    }

    /// Withdraws a processing-time timer of the current key.
    pub fn delete_processing_time_timer(&mut self, time_ms: i64) {
        self.timers.delete_processing_time(self.key, time_ms);
    }

    /// Emits `value` at the context's timestamp.
    pub fn collect(&mut self, value: O) {
        let time_ms = self.timestamp_ms;
        self.collect_at(time_ms, value);
    }

    /// Emits `value` at event time `time_ms`.
    pub fn collect_at(&mut self, time_ms: i64, value: O) {
        self.out.push(Record { time_ms, watermark_ms: self.stamp_ms, value });
    }
}

/// One worker's process-function operator, free of timely (see [`KeyedEngine`]).
pub struct KeyedProcessCore<K: Ord, D, F> {
    function: F,
    state: KeyedStateBackend<K>,
    timers: TimerService<K>,
    watermark_ms: i64,
    per_record_watermarks: bool,
    marker: std::marker::PhantomData<fn(D)>,
}

impl<K: Key, D: 'static, F: KeyedProcessFunction<K, D>> KeyedProcessCore<K, D, F> {
    /// An operator running `function`; `open` is called here.
    pub fn new(mut function: F, max_parallelism: u32, per_record_watermarks: bool) -> Self {
        let mut state = KeyedStateBackend::new(max_parallelism);
        function.open(&mut state);
        KeyedProcessCore {
            function,
            state,
            timers: TimerService::new(),
            watermark_ms: WATERMARK_MIN,
            per_record_watermarks,
            marker: std::marker::PhantomData,
        }
    }

    /// The keyed state (for snapshots and tests).
    pub fn state(&mut self) -> &mut KeyedStateBackend<K> {
        &mut self.state
    }

    /// The timers (for snapshots and tests).
    pub fn timers(&mut self) -> &mut TimerService<K> {
        &mut self.timers
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        key: &K,
        timestamp_ms: i64,
        stamp_ms: i64,
        now_ms: i64,
        firing: bool,
        out: &mut Vec<Record<F::Output>>,
        body: impl FnOnce(&mut F, &mut ProcessContext<'_, K, F::Output>),
    ) {
        let mut ctx = ProcessContext::new(
            key,
            timestamp_ms,
            self.watermark_ms,
            now_ms,
            stamp_ms,
            firing,
            &mut self.state,
            &mut self.timers,
            out,
        );
        body(&mut self.function, &mut ctx);
    }
}

impl<K: Key, D: 'static, F: KeyedProcessFunction<K, D>> KeyedEngine<K, D> for KeyedProcessCore<K, D, F> {
    type Output = F::Output;

    fn snapshot(&self, _max_parallelism: u32) -> Vec<u8> {
        encode(SnapshotKind::OperatorState, &(self.state.snapshot(), self.timers.snapshot()))
    }

    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: std::ops::Range<u32>) -> Result<(), SnapshotError> {
        let mut states = Vec::with_capacity(snapshots.len());
        let mut timers = Vec::with_capacity(snapshots.len());
        for bytes in snapshots {
            let (state, timer): (Vec<u8>, Vec<u8>) = decode(SnapshotKind::OperatorState, bytes)?;
            states.push(state);
            timers.push(timer);
        }
        let max_parallelism = self.state.max_parallelism();
        let mut restored_timers = TimerService::default();
        restored_timers.restore(&timers, key_groups.clone(), max_parallelism)?;
        self.state.restore(&states, key_groups)?;
        self.timers = restored_timers;
        self.watermark_ms = crate::time::WATERMARK_MIN;
        Ok(())
    }

    fn on_element(&mut self, key: K, record: Record<D>, now_ms: i64, emit: &mut Emit<'_, D, F::Output>) -> Result<()> {
        if self.per_record_watermarks {
            self.advance_watermark(record.watermark_ms, now_ms, emit);
        }
        let stamp = self.watermark_ms;
        let Record { time_ms, value, .. } = record;
        self.call(&key, time_ms, stamp, now_ms, false, emit.results, |function, ctx| {
            function.process_element(value, ctx)
        });
        Ok(())
    }

    fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut Emit<'_, D, F::Output>) {
        if watermark_ms <= self.watermark_ms {
            return;
        }
        let previous = self.watermark_ms;
        // Timers see the new watermark (Flink advances it before firing); their results carry
        // the previous one, as they reach downstream before the new watermark does.
        self.watermark_ms = watermark_ms;
        while let Some((time_ms, key)) = self.timers.pop_event_time(watermark_ms) {
            self.call(&key, time_ms, previous, now_ms, true, emit.results, |function, ctx| {
                function.on_timer(time_ms, TimeDomain::EventTime, ctx)
            });
        }
    }

    fn advance_processing_time(&mut self, now_ms: i64, emit: &mut Emit<'_, D, F::Output>) {
        while let Some((time_ms, key)) = self.timers.pop_processing_time(now_ms) {
            let stamp = self.watermark_ms;
            self.call(&key, time_ms, stamp, now_ms, true, emit.results, |function, ctx| {
                function.on_timer(time_ms, TimeDomain::ProcessingTime, ctx)
            });
        }
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing_time()
    }

    fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }
}

impl<'scope, K: Key, D: Data> KeyedStream<'scope, K, D> {
    /// Runs `function` on every record with its key's state and timers (Flink's `process`).
    pub fn process<F: KeyedProcessFunction<K, D>>(self, function: F) -> Stream<'scope, F::Output> {
        let per_record = self.stream().in_source_order;
        let max_parallelism = self.stream().env.context().max_parallelism.max(1);
        let core = KeyedProcessCore::new(function, max_parallelism, per_record);
        let (exchange, key) = (self.exchange(), self.key_fn());
        keyed_operator(self.stream().clone(), exchange, "process", OperatorKind::Keyed, key, core).results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::WATERMARK_MAX;

    /// Registers a timer of each time domain 100 ms after each element's time (so that a restore
    /// must bring back both queues) and reports each firing as `(key, time, is event time)`.
    struct RemindLater;

    impl KeyedProcessFunction<u32, i64> for RemindLater {
        type Output = (u32, i64, bool);

        fn process_element(&mut self, time_ms: i64, ctx: &mut ProcessContext<'_, u32, Self::Output>) {
            ctx.register_event_time_timer(time_ms + 100);
            ctx.register_processing_time_timer(time_ms + 100);
        }

        fn on_timer(&mut self, time_ms: i64, domain: TimeDomain, ctx: &mut ProcessContext<'_, u32, Self::Output>) {
            let key = *ctx.key();
            ctx.collect((key, time_ms, domain == TimeDomain::EventTime));
        }
    }

    const MAX_PARALLELISM: u32 = 16;

    fn core() -> KeyedProcessCore<u32, i64, RemindLater> {
        KeyedProcessCore::new(RemindLater, MAX_PARALLELISM, true)
    }

    /// Feeds `(key, time)` elements, each stamped with the watermark `time − 200`.
    fn feed(core: &mut KeyedProcessCore<u32, i64, RemindLater>, input: &[(u32, i64)], out: &mut Vec<(u32, i64, bool)>) {
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        for &(key, time_ms) in input {
            core.on_element(key, Record::new(time_ms, time_ms - 200, time_ms), time_ms, &mut emit).unwrap();
        }
        out.extend(results.into_iter().map(|record| record.value));
    }

    /// Ends the input: every timer of both domains fires.
    fn finish(core: &mut KeyedProcessCore<u32, i64, RemindLater>, out: &mut Vec<(u32, i64, bool)>) {
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        core.advance_watermark(WATERMARK_MAX, i64::MAX, &mut emit);
        core.advance_processing_time(i64::MAX, &mut emit);
        out.extend(results.into_iter().map(|record| record.value));
    }

    #[test]
    fn pending_timers_survive_a_restore_on_other_parallelism() {
        let input: Vec<(u32, i64)> = (0..60).map(|i| (i % 7, 50 * i64::from(i))).collect();
        let (before, after) = input.split_at(30);
        let mut uninterrupted = Vec::new();
        let mut whole = core();
        feed(&mut whole, &input, &mut uninterrupted);
        finish(&mut whole, &mut uninterrupted);

        let mut restored_run = Vec::new();
        let mut first = core();
        feed(&mut first, before, &mut restored_run);
        let snapshot = first.snapshot(MAX_PARALLELISM);
        // Two instances now, each with half of the key groups and the timers of its keys.
        for key_groups in [0..MAX_PARALLELISM / 2, MAX_PARALLELISM / 2..MAX_PARALLELISM] {
            let mut instance = core();
            instance.restore(std::slice::from_ref(&snapshot), key_groups.clone()).unwrap();
            let mine: Vec<(u32, i64)> = after
                .iter()
                .copied()
                .filter(|(key, _)| key_groups.contains(&crate::state::key_group(key, MAX_PARALLELISM)))
                .collect();
            feed(&mut instance, &mine, &mut restored_run);
            finish(&mut instance, &mut restored_run);
        }
        // The timers pending at the snapshot are there (the test is about them).
        assert!(restored_run.len() == uninterrupted.len() && uninterrupted.len() == 2 * input.len());
        uninterrupted.sort();
        restored_run.sort();
        assert_eq!(restored_run, uninterrupted);
    }
}
