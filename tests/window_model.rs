//! flowlab's window operator against an independent, deliberately naive model of Flink's window
//! rules, on random inputs.
//!
//! The model below was written from the specification (`notes/flink-window-semantics.md`, the
//! window chapter of the book, and Flink's `WindowOperator` / `EvictingWindowOperator` rules as
//! summarised there), not from flowlab's operator. It is a single-threaded loop over the input
//! that keeps, per key, a plain `Vec` of panes `(window, elements, trigger state)` and a plain
//! `Vec` of event-time timers `(time, window)`, and does everything the slow, obvious way:
//!
//! * the watermark before record `i` is `max(ts[0..i]) - delay - 1` (`i64::MIN` before the first
//!   record); when it grows, every timer at or below it fires in timestamp order (timers that the
//!   firing registers at or below it fire in the same advance), and only then is the record
//!   processed; at the end of the input the watermark becomes `i64::MAX`;
//! * per element and per assigned window: drop the element from the window if
//!   `max_ts + lateness <= W`, else add it, ask the trigger, emit if it fires and the window is not
//!   empty, purge if asked, and (event time only) make sure the cleanup timer at
//!   `max_ts + lateness` exists;
//! * an element that no window took goes to `late` (flowlab's rule, which also covers an element
//!   in a gap of a sliding window with `size < slide`);
//! * sessions merge by a fixpoint over "touches the running cover" (inclusive intersection);
//! * a timer fires the trigger, emits, purges, and at the cleanup time drops the pane;
//! * global windows (count windows) are never late, have no cleanup timer, and never fire at the
//!   end of the input.
//!
//! Every firing becomes a row `(key, start, end, event time, count, sum, min, max)`. The engine's
//! rows and late elements are compared with the model's as sorted multisets (Flink leaves the
//! order of windows firing at the same watermark unspecified), at parallelism 1 and 3.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CollectionSource};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;
use flowlab::window::{
    AggregateFunction, ContinuousEventTimeTrigger, CountEvictor, CountTrigger, EventTimeTrigger, PurgingTrigger,
    SessionWindows, SlidingWindows, TimeDomain, TimeEvictor, Trigger, TriggerContext, TriggerResult, TumblingWindows,
    Window, WindowResult,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ------------------------------------------------------------------------------------------------
// The configuration of one case
// ------------------------------------------------------------------------------------------------

/// An input element: `(key, value)`; its event time travels next to it.
type Ev = (u32, i64);
/// What every firing computes: `(count, sum, min, max)` of the values.
type Stats = (i64, i64, i64, i64);
/// A late element: `(event time, key, value)`.
type Late = (i64, u32, i64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Assigner {
    Tumbling {
        size: i64,
        offset: i64,
    },
    Sliding {
        size: i64,
        slide: i64,
        offset: i64,
    },
    Session {
        gap: i64,
    },
    /// `count_window(size)`.
    Count {
        size: i64,
    },
    /// `count_window_sliding(size, slide)`.
    CountSliding {
        size: i64,
        slide: i64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TriggerSpec {
    /// The assigner's own trigger (event time for time windows; the count windows' built-in one).
    Default,
    /// `.trigger(inner)`.
    Plain(Inner),
    /// `.trigger(PurgingTrigger::of(Arc::new(inner)))`.
    Purging(Inner),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    EventTime,
    Continuous(i64),
    Count(i64),
}

fn engine_trigger(inner: Inner) -> Arc<dyn Trigger<Ev>> {
    match inner {
        Inner::EventTime => Arc::new(EventTimeTrigger),
        Inner::Continuous(interval) => Arc::new(ContinuousEventTimeTrigger::of(interval)),
        Inner::Count(n) => Arc::new(CountTrigger::of(n)),
    }
}

/// Lets `WindowedStream::trigger` take a shared trigger.
struct Shared(Arc<dyn Trigger<Ev>>);

impl Trigger<Ev> for Shared {
    fn on_element(&self, value: &Ev, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        self.0.on_element(value, time_ms, window, ctx)
    }

    fn on_event_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        self.0.on_event_time(time_ms, window, ctx)
    }

    fn on_processing_time(&self, time_ms: i64, window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
        self.0.on_processing_time(time_ms, window, ctx)
    }

    fn can_merge(&self) -> bool {
        self.0.can_merge()
    }

    fn on_merge(&self, window: &Window, ctx: &mut TriggerContext) {
        self.0.on_merge(window, ctx)
    }

    fn clear(&self, window: &Window, ctx: &mut TriggerContext) {
        self.0.clear(window, ctx)
    }

    fn name(&self) -> String {
        self.0.name()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EvictorSpec {
    None,
    Count { keep: usize, after: bool },
    Time { span: i64, after: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `aggregate` with [`StatsAggregate`] (the sliced operator for plain tumbling/sliding).
    Aggregate,
    /// `process` with a closure over all elements.
    Process,
}

#[derive(Clone)]
struct Case {
    assigner: Assigner,
    trigger: TriggerSpec,
    evictor: EvictorSpec,
    api: Api,
    delay_ms: i64,
    lateness_ms: i64,
    /// `(event_time_ms, (key, value))` in arrival order.
    events: Vec<(i64, Ev)>,
}

impl fmt::Debug for Case {
    // One line of configuration, then the input as a pasteable Rust literal, eight events a line
    // (proptest prints failing cases with `{:?}`; a derived Debug would be unreadable).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Case {{ assigner: {:?}, trigger: {:?}, evictor: {:?}, api: {:?}, delay_ms: {}, lateness_ms: {}, events: vec![  // {} events, (ts, (key, value))",
            self.assigner,
            self.trigger,
            self.evictor,
            self.api,
            self.delay_ms,
            self.lateness_ms,
            self.events.len()
        )?;
        for chunk in self.events.chunks(8) {
            let line: Vec<String> =
                chunk.iter().map(|(ts, (key, value))| format!("({ts}, ({key}, {value})),")).collect();
            writeln!(f, "    {}", line.join(" "))?;
        }
        write!(f, "] }}")
    }
}

/// One firing: the window (global: `[i64::MIN, i64::MAX)`), the result's event time, the stats.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    key: u32,
    start: i64,
    end: i64,
    time: i64,
    count: i64,
    sum: i64,
    min: i64,
    max: i64,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = if (self.start, self.end) == (i64::MIN, i64::MAX) {
            "global".to_string()
        } else {
            format!("[{}, {})", self.start, self.end)
        };
        let time = if self.time == i64::MAX { "MAX".to_string() } else { self.time.to_string() };
        write!(
            f,
            "key {} {window} @{time}: count {} sum {} min {} max {}",
            self.key, self.count, self.sum, self.min, self.max
        )
    }
}

fn stats(values: impl IntoIterator<Item = i64>) -> Stats {
    values.into_iter().fold((0, 0, i64::MAX, i64::MIN), |(count, sum, min, max), value| {
        (count + 1, sum + value, min.min(value), max.max(value))
    })
}

fn row(key: u32, start: i64, end: i64, time: i64, (count, sum, min, max): Stats) -> Row {
    Row { key, start, end, time, count, sum, min, max }
}

/// The engine-side aggregate: `(count, sum, min, max)`.
struct StatsAggregate;

impl AggregateFunction<Ev> for StatsAggregate {
    type Accumulator = Stats;
    type Output = Stats;

    fn create_accumulator(&self) -> Stats {
        stats([])
    }

    fn add(&self, accumulator: &mut Stats, value: &Ev) {
        let (count, sum, min, max) = *accumulator;
        *accumulator = (count + 1, sum + value.1, min.min(value.1), max.max(value.1));
    }

    fn merge(&self, accumulator: &mut Stats, other: Stats) {
        let (count, sum, min, max) = *accumulator;
        *accumulator = (count + other.0, sum + other.1, min.min(other.2), max.max(other.3));
    }

    fn result(&self, accumulator: &Stats) -> Stats {
        *accumulator
    }
}

// ------------------------------------------------------------------------------------------------
// The engine
// ------------------------------------------------------------------------------------------------

/// Runs the case on flowlab with `workers` workers: sorted rows and sorted late elements.
fn run_engine(case: &Case, workers: usize) -> Result<(Vec<Row>, Vec<Late>), String> {
    let results: CollectSink<WindowResult<u32, Stats>> = CollectSink::new();
    let late: CollectSink<Ev> = CollectSink::new();
    let (results_sink, late_sink) = (results.clone(), late.clone());
    let job_case = case.clone();
    execute(&JobConfig::threads("model", workers), move |env: &Env| {
        let case = &job_case;
        let keyed = env
            .source(CollectionSource::new(case.events.clone()), WatermarkStrategy::bounded(case.delay_ms))
            .key_by(|event: &Ev| event.0);
        let event_time = TimeDomain::EventTime;
        let mut windowed = match case.assigner {
            Assigner::Tumbling { size, offset } => {
                keyed.window(TumblingWindows::new(size, offset, event_time).expect("valid tumbling windows"))
            }
            Assigner::Sliding { size, slide, offset } => {
                keyed.window(SlidingWindows::new(size, slide, offset, event_time).expect("valid sliding windows"))
            }
            Assigner::Session { gap } => {
                keyed.window(SessionWindows::with_gap(gap, event_time).expect("valid session windows"))
            }
            Assigner::Count { size } => keyed.count_window(size),
            Assigner::CountSliding { size, slide } => keyed.count_window_sliding(size, slide),
        };
        windowed = match case.trigger {
            TriggerSpec::Default => windowed,
            TriggerSpec::Plain(inner) => windowed.trigger(Shared(engine_trigger(inner))),
            TriggerSpec::Purging(inner) => windowed.trigger(PurgingTrigger::of(engine_trigger(inner))),
        };
        windowed = match case.evictor {
            EvictorSpec::None => windowed,
            EvictorSpec::Count { keep, after: false } => windowed.evictor(CountEvictor::of(keep)),
            EvictorSpec::Count { keep, after: true } => windowed.evictor(CountEvictor::after(keep)),
            EvictorSpec::Time { span, after: false } => windowed.evictor(TimeEvictor::of(span)),
            EvictorSpec::Time { span, after: true } => windowed.evictor(TimeEvictor::after(span)),
        };
        windowed = windowed.allowed_lateness(case.lateness_ms);
        let output = match case.api {
            Api::Aggregate => windowed.aggregate(StatsAggregate),
            Api::Process => windowed.process(|_key: &u32, _window: &Window, elements: &[(i64, Ev)]| {
                stats(elements.iter().map(|(_, (_, value))| *value))
            }),
        };
        output.results.sink(results_sink.clone());
        output.late.sink(late_sink.clone());
    })
    .map_err(|error| error.to_string())?;
    let mut rows: Vec<Row> = results
        .records()
        .into_iter()
        .map(|record| {
            let result = record.value;
            row(result.key, result.window.start, result.window.end, record.time_ms, result.value)
        })
        .collect();
    rows.sort();
    let mut late: Vec<Late> =
        late.records().into_iter().map(|record| (record.time_ms, record.value.0, record.value.1)).collect();
    late.sort();
    Ok((rows, late))
}

// ------------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------------

/// A window `[start, end)`; the global window is `[i64::MIN, i64::MAX)` with max timestamp MAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Win {
    start: i64,
    end: i64,
}

const GLOBAL: Win = Win { start: i64::MIN, end: i64::MAX };

impl Win {
    fn max_ts(self) -> i64 {
        if self == GLOBAL { i64::MAX } else { self.end - 1 }
    }

    /// Flink's `TimeWindow.intersects`: inclusive, touching windows intersect.
    fn touches(self, other: Win) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    fn cover(self, other: Win) -> Win {
        Win { start: self.start.min(other.start), end: self.end.max(other.end) }
    }
}

/// The trigger actually in force (count windows bring their own): `inner`, and whether it is
/// wrapped in a `PurgingTrigger` (every fire becomes fire-and-purge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ModelTrigger {
    inner: Inner,
    purging: bool,
}

/// A trigger's per-window state: `CountTrigger`'s count, `ContinuousEventTimeTrigger`'s next fire.
#[derive(Clone, Copy, Debug, Default)]
struct TriggerState {
    count: Option<i64>,
    fire_at: Option<i64>,
}

type Timers = Vec<(i64, Win)>;

/// Timers are a set per (time, window): registering twice is one timer.
fn register(timers: &mut Timers, time: i64, window: Win) {
    if !timers.contains(&(time, window)) {
        timers.push((time, window));
    }
}

fn delete(timers: &mut Timers, time: i64, window: Win) {
    timers.retain(|timer| *timer != (time, window));
}

/// `CountTrigger.onElement`: count, and fire (resetting) when the count reaches `n`.
fn count_up(n: i64, state: &mut TriggerState) -> bool {
    let count = state.count.unwrap_or(0) + 1;
    if count >= n {
        state.count = None;
        true
    } else {
        state.count = Some(count);
        false
    }
}

/// `ContinuousEventTimeTrigger.registerNextFireTimestamp`: min(time + interval, maxTs), kept in a
/// reducing state with Min.
fn next_fire(interval: i64, time: i64, window: Win, state: &mut TriggerState, timers: &mut Timers) {
    let next = (time + interval).min(window.max_ts());
    state.fire_at = Some(state.fire_at.map_or(next, |current| current.min(next)));
    register(timers, next, window);
}

/// `(fire, purge)`.
type Decision = (bool, bool);

impl ModelTrigger {
    fn on_element(
        self,
        ts: i64,
        window: Win,
        watermark: i64,
        state: &mut TriggerState,
        timers: &mut Timers,
    ) -> Decision {
        let fire = self.inner.on_element(ts, window, watermark, state, timers);
        (fire, fire && self.purging)
    }

    fn on_event_time(self, time: i64, window: Win, state: &mut TriggerState, timers: &mut Timers) -> Decision {
        let fire = self.inner.on_event_time(time, window, state, timers);
        (fire, fire && self.purging)
    }

    fn on_merge(self, merged: Win, watermark: i64, old: &[TriggerState], timers: &mut Timers) -> TriggerState {
        self.inner.on_merge(merged, watermark, old, timers)
    }

    fn clear(self, window: Win, state: &mut TriggerState, timers: &mut Timers) {
        self.inner.clear(window, state, timers)
    }
}

/// The plain triggers; each answers whether it fires.
impl Inner {
    fn on_element(self, ts: i64, window: Win, watermark: i64, state: &mut TriggerState, timers: &mut Timers) -> bool {
        match self {
            Inner::EventTime => {
                if window.max_ts() <= watermark {
                    true
                } else {
                    register(timers, window.max_ts(), window);
                    false
                }
            }
            Inner::Count(n) => count_up(n, state),
            Inner::Continuous(interval) => {
                if window.max_ts() <= watermark {
                    return true;
                }
                register(timers, window.max_ts(), window);
                if state.fire_at.is_none() {
                    // Java's `%`: truncates toward zero (so negative times round up).
                    let aligned = ts - ts % interval;
                    next_fire(interval, aligned, window, state, timers);
                }
                false
            }
        }
    }

    fn on_event_time(self, time: i64, window: Win, state: &mut TriggerState, timers: &mut Timers) -> bool {
        match self {
            Inner::EventTime => time == window.max_ts(),
            Inner::Count(_) => false,
            Inner::Continuous(interval) => {
                if time == window.max_ts() {
                    true
                } else if state.fire_at == Some(time) {
                    state.fire_at = None;
                    next_fire(interval, time, window, state, timers);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// `onMerge` for the merged window, given the (moved-out) states of the merged windows.
    fn on_merge(self, merged: Win, watermark: i64, old: &[TriggerState], timers: &mut Timers) -> TriggerState {
        let mut state = TriggerState::default();
        match self {
            Inner::EventTime => {
                if merged.max_ts() > watermark {
                    register(timers, merged.max_ts(), merged);
                }
            }
            Inner::Count(_) => {
                for old_state in old {
                    if let Some(count) = old_state.count {
                        state.count = Some(state.count.unwrap_or(0) + count);
                    }
                }
            }
            Inner::Continuous(_) => {
                for old_state in old {
                    if let Some(at) = old_state.fire_at {
                        state.fire_at = Some(state.fire_at.map_or(at, |current| current.min(at)));
                    }
                }
                if let Some(at) = state.fire_at {
                    register(timers, at, merged);
                }
            }
        }
        state
    }

    fn clear(self, window: Win, state: &mut TriggerState, timers: &mut Timers) {
        match self {
            Inner::EventTime => delete(timers, window.max_ts(), window),
            Inner::Count(_) => state.count = None,
            Inner::Continuous(_) => {
                if let Some(at) = state.fire_at.take() {
                    delete(timers, at, window);
                }
            }
        }
    }
}

/// One window of one key: its elements `(ts, value)` in arrival order, and its trigger state.
struct Pane {
    window: Win,
    elements: Vec<(i64, i64)>,
    state: TriggerState,
}

#[derive(Default)]
struct KeyState {
    panes: Vec<Pane>,
    timers: Timers,
}

fn evict(evictor: EvictorSpec, elements: &mut Vec<(i64, i64)>) {
    match evictor {
        EvictorSpec::None => {}
        EvictorSpec::Count { keep, .. } => {
            while elements.len() > keep {
                elements.remove(0);
            }
        }
        EvictorSpec::Time { span, .. } => {
            if let Some(newest) = elements.iter().map(|(ts, _)| *ts).max() {
                elements.retain(|(ts, _)| *ts > newest - span);
            }
        }
    }
}

/// A firing: nothing if the window is empty (Flink's `contents == null`), else evict before, run
/// the function over what is left, evict after; eviction is permanent.
fn emit(key: u32, pane: &mut Pane, evictor: EvictorSpec, rows: &mut Vec<Row>) {
    if pane.elements.is_empty() {
        return;
    }
    let after = matches!(evictor, EvictorSpec::Count { after: true, .. } | EvictorSpec::Time { after: true, .. });
    if !after {
        evict(evictor, &mut pane.elements);
    }
    let result = stats(pane.elements.iter().map(|(_, value)| *value));
    rows.push(row(key, pane.window.start, pane.window.end, pane.window.max_ts(), result));
    if after {
        evict(evictor, &mut pane.elements);
    }
}

struct Model {
    assigner: Assigner,
    trigger: ModelTrigger,
    evictor: EvictorSpec,
    lateness: i64,
    event_time: bool,
    watermark: i64,
    keys: BTreeMap<u32, KeyState>,
    rows: Vec<Row>,
    late: Vec<Late>,
}

impl Model {
    fn new(case: &Case) -> Self {
        let trigger = match (case.assigner, case.trigger) {
            (Assigner::Count { size }, _) => ModelTrigger { inner: Inner::Count(size), purging: true },
            (Assigner::CountSliding { slide, .. }, _) => ModelTrigger { inner: Inner::Count(slide), purging: false },
            (_, TriggerSpec::Default) => ModelTrigger { inner: Inner::EventTime, purging: false },
            (_, TriggerSpec::Plain(inner)) => ModelTrigger { inner, purging: false },
            (_, TriggerSpec::Purging(inner)) => ModelTrigger { inner, purging: true },
        };
        let evictor = match case.assigner {
            Assigner::CountSliding { size, .. } => EvictorSpec::Count { keep: size as usize, after: false },
            _ => case.evictor,
        };
        let event_time = !matches!(case.assigner, Assigner::Count { .. } | Assigner::CountSliding { .. });
        Model {
            assigner: case.assigner,
            trigger,
            evictor,
            lateness: case.lateness_ms,
            event_time,
            watermark: i64::MIN,
            keys: BTreeMap::new(),
            rows: Vec::new(),
            late: Vec::new(),
        }
    }

    /// The windows of an element at `ts`, in no particular order.
    fn assign(&self, ts: i64) -> Vec<Win> {
        match self.assigner {
            Assigner::Tumbling { size, offset } => {
                let start = offset + (ts - offset).div_euclid(size) * size;
                vec![Win { start, end: start + size }]
            }
            Assigner::Sliding { size, slide, offset } => {
                // Every start `offset + k * slide` with `start <= ts < start + size`.
                let mut windows = Vec::new();
                let mut k = (ts - offset).div_euclid(slide);
                while offset + k * slide + size > ts {
                    let start = offset + k * slide;
                    windows.push(Win { start, end: start + size });
                    k -= 1;
                }
                windows
            }
            Assigner::Session { gap } => vec![Win { start: ts, end: ts + gap }],
            Assigner::Count { .. } | Assigner::CountSliding { .. } => vec![GLOBAL],
        }
    }

    /// Too late for the window: `max_ts + lateness <= W` (event time only).
    fn is_late(&self, window: Win) -> bool {
        self.event_time && window.max_ts() + self.lateness <= self.watermark
    }

    /// The watermark moves to `watermark` (strictly up): fire every timer at or below it.
    fn advance(&mut self, watermark: i64) {
        assert!(watermark > self.watermark);
        self.watermark = watermark;
        for (&key, state) in self.keys.iter_mut() {
            let KeyState { panes, timers } = state;
            // The earliest due timer, again and again: timers that firing registers at or below
            // the watermark fire in this same advance.
            while let Some(&(time, window)) = timers.iter().filter(|(time, _)| *time <= watermark).min() {
                delete(timers, time, window);
                // A timer of a window that no longer exists does nothing.
                let Some(index) = panes.iter().position(|pane| pane.window == window) else { continue };
                let pane = &mut panes[index];
                let (fire, purge) = self.trigger.on_event_time(time, window, &mut pane.state, timers);
                if fire {
                    emit(key, pane, self.evictor, &mut self.rows);
                }
                if purge {
                    pane.elements.clear();
                }
                if self.event_time && time == window.max_ts() + self.lateness {
                    self.trigger.clear(window, &mut pane.state, timers);
                    panes.remove(index);
                }
            }
        }
    }

    fn element(&mut self, ts: i64, key: u32, value: i64) {
        let taken = if matches!(self.assigner, Assigner::Session { .. }) {
            self.session_element(ts, key, value)
        } else {
            let mut taken = false;
            for window in self.assign(ts) {
                if self.is_late(window) {
                    continue;
                }
                taken = true;
                let KeyState { panes, timers } = self.keys.entry(key).or_default();
                let index = match panes.iter().position(|pane| pane.window == window) {
                    Some(index) => index,
                    None => {
                        panes.push(Pane { window, elements: Vec::new(), state: TriggerState::default() });
                        panes.len() - 1
                    }
                };
                let pane = &mut panes[index];
                pane.elements.push((ts, value));
                let (fire, purge) = self.trigger.on_element(ts, window, self.watermark, &mut pane.state, timers);
                if fire {
                    emit(key, pane, self.evictor, &mut self.rows);
                }
                if purge {
                    pane.elements.clear();
                }
                if self.event_time {
                    register(timers, window.max_ts() + self.lateness, window);
                }
            }
            taken
        };
        if !taken {
            self.late.push((ts, key, value));
        }
    }

    /// An element of a session window: merge, then as any other window. Returns whether taken.
    fn session_element(&mut self, ts: i64, key: u32, value: i64) -> bool {
        let proposal = self.assign(ts)[0];
        let watermark = self.watermark;
        let (trigger, lateness) = (self.trigger, self.lateness);
        let late_proposal = self.is_late(proposal);
        let KeyState { panes, timers } = self.keys.entry(key).or_default();
        // The key's sessions that end up merged with the proposal: grow the cover until no other
        // session touches it.
        let mut cover = proposal;
        let mut group: Vec<usize> = Vec::new();
        loop {
            let mut grew = false;
            for (index, pane) in panes.iter().enumerate() {
                if !group.contains(&index) && pane.window.touches(cover) {
                    group.push(index);
                    cover = cover.cover(pane.window);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let index = if group.is_empty() {
            // A new session; if it is already late it is never created.
            if late_proposal {
                return false;
            }
            panes.push(Pane { window: proposal, elements: Vec::new(), state: TriggerState::default() });
            panes.len() - 1
        } else if group.len() == 1 && panes[group[0]].window == cover {
            // Inside an existing session: nothing merges.
            group[0]
        } else {
            group.sort_unstable();
            let mut old: Vec<Pane> = Vec::new();
            for &index in group.iter().rev() {
                old.push(panes.remove(index));
            }
            let old_states: Vec<TriggerState> = old.iter_mut().map(|pane| std::mem::take(&mut pane.state)).collect();
            let state = trigger.on_merge(cover, watermark, &old_states, timers);
            let mut elements = Vec::new();
            for pane in &mut old {
                trigger.clear(pane.window, &mut pane.state, timers);
                delete(timers, pane.window.max_ts() + lateness, pane.window);
                elements.append(&mut pane.elements);
            }
            panes.push(Pane { window: cover, elements, state });
            panes.len() - 1
        };
        let window = panes[index].window;
        if window.max_ts() + lateness <= watermark {
            // Cannot happen (live sessions are never late), but Flink retires such a window.
            panes.remove(index);
            return false;
        }
        let pane = &mut panes[index];
        pane.elements.push((ts, value));
        let (fire, purge) = trigger.on_element(ts, window, watermark, &mut pane.state, timers);
        if fire {
            emit(key, pane, self.evictor, &mut self.rows);
        }
        if purge {
            pane.elements.clear();
        }
        register(timers, window.max_ts() + lateness, window);
        true
    }
}

/// The model's sorted rows and sorted late elements.
fn model(case: &Case) -> (Vec<Row>, Vec<Late>) {
    let mut model = Model::new(case);
    let mut max_seen: Option<i64> = None;
    for &(ts, (key, value)) in &case.events {
        // The watermark produced by the records before this one.
        let watermark = max_seen.map_or(i64::MIN, |max| max - case.delay_ms - 1);
        if watermark > model.watermark {
            model.advance(watermark);
        }
        model.element(ts, key, value);
        max_seen = Some(max_seen.map_or(ts, |max| max.max(ts)));
    }
    model.advance(i64::MAX);
    let (mut rows, mut late) = (model.rows, model.late);
    rows.sort();
    late.sort();
    (rows, late)
}

// ------------------------------------------------------------------------------------------------
// Comparing
// ------------------------------------------------------------------------------------------------

/// The elements of `a` missing from `b`, as multisets.
fn minus<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut rest = b.to_vec();
    let mut missing = Vec::new();
    for item in a {
        match rest.iter().position(|other| other == item) {
            Some(index) => {
                rest.remove(index);
            }
            None => missing.push(*item),
        }
    }
    missing
}

fn lines<T: fmt::Debug>(items: &[T]) -> String {
    items.iter().map(|item| format!("\n      {item:?}")).collect()
}

/// Runs the engine at parallelism 1 and 3 and requires both to equal `want`.
fn compare_engine(case: &Case, want: &(Vec<Row>, Vec<Late>)) -> Result<(), String> {
    for workers in [1, 3] {
        let got =
            run_engine(case, workers).map_err(|error| format!("parallelism {workers}: the job failed: {error}"))?;
        if got != *want {
            return Err(format!(
                "parallelism {workers}: the engine differs from the model\n  \
                 rows only in the engine:{}\n  rows only in the model:{}\n  \
                 late only in the engine (ts, key, value):{}\n  late only in the model:{}\n  \
                 all model rows:{}\n  all model late:{}",
                lines(&minus(&got.0, &want.0)),
                lines(&minus(&want.0, &got.0)),
                lines(&minus(&got.1, &want.1)),
                lines(&minus(&want.1, &got.1)),
                lines(&want.0),
                lines(&want.1),
            ));
        }
    }
    Ok(())
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    compare_engine(case, &model(case)).map_err(TestCaseError::fail)
}

// ------------------------------------------------------------------------------------------------
// Random cases
// ------------------------------------------------------------------------------------------------

/// Sizes, sometimes round (so that boundaries, gaps and timestamps coincide more often).
fn duration(low: i64, high: i64) -> BoxedStrategy<i64> {
    prop_oneof![low..=high, ((low + 499) / 500..=high / 500).prop_map(|k| k * 500)].boxed()
}

/// An offset with `|offset| < bound`, often 0 (no `prop_flat_map`, so that cases shrink well).
fn offset_below(bound: i64, raw: Option<i64>) -> i64 {
    raw.map_or(0, |raw| raw % bound)
}

fn raw_offset() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![Just(None), (-20_000i64..20_000).prop_map(Some)]
}

fn tumbling() -> BoxedStrategy<Assigner> {
    (duration(1_000, 10_000), raw_offset())
        .prop_map(|(size, raw)| Assigner::Tumbling { size, offset: offset_below(size, raw) })
        .boxed()
}

fn sliding() -> BoxedStrategy<Assigner> {
    (duration(1_000, 10_000), duration(500, 12_000), raw_offset())
        .prop_map(|(size, slide, raw)| Assigner::Sliding { size, slide, offset: offset_below(slide, raw) })
        .boxed()
}

fn session() -> BoxedStrategy<Assigner> {
    duration(500, 5_000).prop_map(|gap| Assigner::Session { gap }).boxed()
}

fn count_windows() -> BoxedStrategy<Assigner> {
    prop_oneof![
        (1i64..=6).prop_map(|size| Assigner::Count { size }),
        (1i64..=6, 1i64..=6).prop_map(|(size, slide)| Assigner::CountSliding { size, slide }),
    ]
    .boxed()
}

/// Continuous, Count, or Purging(EventTime | Continuous | Count); plain EventTime is the default.
fn custom_trigger() -> BoxedStrategy<TriggerSpec> {
    let continuous = || duration(300, 5_000).prop_map(Inner::Continuous);
    let count = || (1i64..=6).prop_map(Inner::Count);
    prop_oneof![
        3 => continuous().prop_map(TriggerSpec::Plain),
        3 => count().prop_map(TriggerSpec::Plain),
        3 => count().prop_map(TriggerSpec::Purging),
        1 => Just(TriggerSpec::Purging(Inner::EventTime)),
        2 => continuous().prop_map(TriggerSpec::Purging),
    ]
    .boxed()
}

/// Count and time evictors, before or after the function; `CountEvictor` of 0 and `TimeEvictor`
/// of 0 empty the window (Flink's `TimeEvictor` removes `ts <= max_ts - size`, so size 0 removes
/// everything), and the function still runs.
fn evictor(max_span: i64) -> BoxedStrategy<EvictorSpec> {
    let span = prop_oneof![Just(0), 0..max_span, (0..=max_span / 500).prop_map(|k| k * 500)];
    prop_oneof![
        (0usize..=5, any::<bool>()).prop_map(|(keep, after)| EvictorSpec::Count { keep, after }),
        (span, any::<bool>()).prop_map(|(span, after)| EvictorSpec::Time { span, after }),
    ]
    .boxed()
}

/// How far an event strays from the running clock: mostly a little, sometimes far back (late),
/// sometimes ahead (pushing the watermark past its neighbours).
fn jitter() -> BoxedStrategy<i64> {
    prop_oneof![8 => -300i64..300, 1 => -12_000i64..0, 1 => 0i64..4_000].boxed()
}

/// Up to 150 events of 1–4 keys, timestamps in -20 000..=60 000 on a grain of 1, 100 or 500 ms.
fn events() -> BoxedStrategy<Vec<(i64, Ev)>> {
    let grain = prop_oneof![Just(1i64), Just(100), Just(500)];
    let raw = prop::collection::vec((0i64..500, jitter(), 0u32..4, -50i64..=50), 0..=150);
    (1u32..=4, -20_000i64..=0, grain, raw)
        .prop_map(|(keys, origin, grain, raw)| {
            let mut clock = origin;
            raw.into_iter()
                .map(|(step, jitter, key, value)| {
                    clock += step;
                    let ts = (clock + jitter).clamp(-20_000, 60_000).div_euclid(grain) * grain;
                    (ts, (key % keys + 1, value))
                })
                .collect()
        })
        .boxed()
}

fn cases(
    assigner: BoxedStrategy<Assigner>,
    trigger: BoxedStrategy<TriggerSpec>,
    evictor: BoxedStrategy<EvictorSpec>,
) -> impl Strategy<Value = Case> {
    let api = prop_oneof![Just(Api::Aggregate), Just(Api::Process)];
    let delay = prop_oneof![1 => Just(0i64), 2 => 0i64..3_000, 1 => (1i64..=6).prop_map(|k| k * 500)];
    let lateness = prop_oneof![2 => Just(0i64), 1 => (1i64..=10).prop_map(|k| k * 500), 2 => 1i64..5_000];
    (assigner, trigger, evictor, api, delay, lateness, events()).prop_map(
        |(assigner, trigger, evictor, api, delay_ms, lateness_ms, events)| Case {
            assigner,
            trigger,
            evictor,
            api,
            delay_ms,
            lateness_ms,
            events,
        },
    )
}

fn config() -> ProptestConfig {
    // No regression files: this test writes nothing next to itself. Shrinking runs the engine, so
    // keep it bounded.
    ProptestConfig { cases: 64, failure_persistence: None, max_shrink_iters: 2_000, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Tumbling, sliding (any size/slide ratio, offsets) and session windows with the default
    /// event-time trigger and allowed lateness (late firings, cleanup, late side output).
    #[test]
    fn time_windows_with_the_event_time_trigger_match_the_model(
        case in cases(prop_oneof![tumbling(), sliding(), session()].boxed(), Just(TriggerSpec::Default).boxed(), Just(EvictorSpec::None).boxed())
    ) {
        check(&case)?;
    }

    /// Tumbling and sliding windows with ContinuousEventTimeTrigger, CountTrigger and
    /// PurgingTrigger of EventTimeTrigger, ContinuousEventTimeTrigger or CountTrigger (purged
    /// windows that a timer fires again emit nothing).
    #[test]
    fn tumbling_and_sliding_windows_with_other_triggers_match_the_model(
        case in cases(prop_oneof![tumbling(), sliding()].boxed(), custom_trigger(), Just(EvictorSpec::None).boxed())
    ) {
        check(&case)?;
    }

    /// count_window(n) and count_window_sliding(n, slide): never late, leftovers never fire.
    #[test]
    fn count_windows_match_the_model(
        case in cases(count_windows(), Just(TriggerSpec::Default).boxed(), Just(EvictorSpec::None).boxed())
    ) {
        check(&case)?;
    }

    /// CountEvictor / TimeEvictor (before and after the function) on tumbling and sliding windows,
    /// mostly with the default trigger; eviction is permanent across late firings.
    #[test]
    fn evictors_match_the_model(
        case in cases(
            prop_oneof![3 => tumbling(), 1 => sliding()].boxed(),
            prop_oneof![3 => Just(TriggerSpec::Default), 1 => custom_trigger()].boxed(),
            evictor(6_000),
        )
    ) {
        check(&case)?;
    }

    /// Sessions with triggers whose state merges: CountTrigger (counts add),
    /// ContinuousEventTimeTrigger (min), and PurgingTrigger of any (a purged session stays open
    /// and can still merge).
    #[test]
    fn sessions_with_other_triggers_match_the_model(
        case in cases(session(), custom_trigger(), Just(EvictorSpec::None).boxed())
    ) {
        check(&case)?;
    }
}

// ------------------------------------------------------------------------------------------------
// Hand-worked cases: the expected rows are derived by hand in the comments, and both the model
// and the engine must produce them.
// ------------------------------------------------------------------------------------------------

fn expect(case: Case, rows: &[Row], late: &[Late]) {
    let mut want = (rows.to_vec(), late.to_vec());
    want.0.sort();
    want.1.sort();
    let got = model(&case);
    assert_eq!(got, want, "the model disagrees with the hand-worked answer for {case:?}");
    if let Err(message) = compare_engine(&case, &want) {
        panic!("{message}\nfor {case:?}");
    }
}

fn hand_case(assigner: Assigner, trigger: TriggerSpec, delay_ms: i64, lateness_ms: i64, events: &[(i64, Ev)]) -> Case {
    Case {
        assigner,
        trigger,
        evictor: EvictorSpec::None,
        api: Api::Aggregate,
        delay_ms,
        lateness_ms,
        events: events.to_vec(),
    }
}

#[test]
fn a_late_element_within_the_allowed_lateness_fires_the_whole_window_again() {
    // Tumbling 10 s, delay 0, allowed lateness 2 s, one key.
    // 1. ts 1 000 (v 1), W = -inf: [0, 10 000) gets 1; timers 9 999 (fire) and 11 999 (cleanup).
    // 2. ts 11 000 (v 2), W = 999: [10 000, 20 000) gets 2.
    // 3. ts 5 000 (v 4), W = 10 999: first the timer at 9 999 fires [0, 10 000) = {1}.
    //    Then 5 000: cleanup 11 999 > 10 999, so it is added; max_ts 9 999 <= W, so the trigger
    //    fires at once: a late firing with {1, 4}.
    // 4. ts 12 500 (v 8), W = 10 999 (no advance): [10 000, 20 000) gets 8.
    // 5. ts 3 000 (v 16), W = 12 499: the cleanup timer 11 999 drops [0, 10 000); 3 000's only
    //    window is late (11 999 <= 12 499): it goes to `late`.
    // End: W = +inf fires [10 000, 20 000) = {2, 8}.
    let case = hand_case(
        Assigner::Tumbling { size: 10_000, offset: 0 },
        TriggerSpec::Default,
        0,
        2_000,
        &[(1_000, (1, 1)), (11_000, (1, 2)), (5_000, (1, 4)), (12_500, (1, 8)), (3_000, (1, 16))],
    );
    for api in [Api::Aggregate, Api::Process] {
        expect(
            Case { api, ..case.clone() },
            &[
                row(1, 0, 10_000, 9_999, (1, 1, 1, 1)),
                row(1, 0, 10_000, 9_999, (2, 5, 1, 4)),
                row(1, 10_000, 20_000, 19_999, (2, 10, 2, 8)),
            ],
            &[(3_000, 1, 16)],
        );
    }
}

#[test]
fn an_element_late_for_its_first_sliding_window_still_counts_in_the_second() {
    // Sliding size 10 s, slide 5 s, delay 0, no lateness, one key.
    // 1. ts 12 000 (v 1), W = -inf: windows [10 000, 20 000) and [5 000, 15 000).
    // 2. ts 7 000 (v 2), W = 11 999 (no timer <= 11 999): [5 000, 15 000) (max 14 999 > W) takes
    //    it; [0, 10 000) (max 9 999 <= W) is late and skipped. Taken by one window: not late.
    // 3. ts 16 000 (v 4), W = 11 999: [15 000, 25 000) and [10 000, 20 000).
    // 4. ts 2 000 (v 8), W = 15 999: the timer 14 999 fires [5 000, 15 000) = {1, 2}. 2 000's
    //    windows [0, 10 000) and [-5 000, 5 000) are both late: it goes to `late`.
    // End: [10 000, 20 000) = {1, 4}, [15 000, 25 000) = {4}.
    let case = hand_case(
        Assigner::Sliding { size: 10_000, slide: 5_000, offset: 0 },
        TriggerSpec::Default,
        0,
        0,
        &[(12_000, (1, 1)), (7_000, (1, 2)), (16_000, (1, 4)), (2_000, (1, 8))],
    );
    for api in [Api::Aggregate, Api::Process] {
        expect(
            Case { api, ..case.clone() },
            &[
                row(1, 5_000, 15_000, 14_999, (2, 3, 1, 2)),
                row(1, 10_000, 20_000, 19_999, (2, 5, 1, 4)),
                row(1, 15_000, 25_000, 24_999, (1, 4, 4, 4)),
            ],
            &[(2_000, 1, 8)],
        );
    }
}

#[test]
fn an_element_bridging_two_sessions_merges_them_and_a_late_one_is_absorbed() {
    // Sessions, gap 3 s, delay 5 s, no lateness, one key.
    // 1. ts 1 000 (v 1): session [1 000, 4 000).
    // 2. ts 7 000 (v 2), W = -4 001: [7 000, 10 000) does not touch [1 000, 4 000).
    // 3. ts 4 000 (v 4), W = 1 999: [4 000, 7 000) touches both (inclusive at both ends): one
    //    session [1 000, 10 000) = {1, 2, 4}.
    // 4. ts 20 000 (v 8), W = 1 999: session [20 000, 23 000).
    // 5. ts 13 500 (v 16), W = 14 999: first [1 000, 10 000) fires at 9 999 and is dropped.
    //    [13 500, 16 500) is not late (16 499 > 14 999) and touches nothing: a new session.
    // 6. ts 11 000 (v 32), W = 14 999: its own [11 000, 14 000) is late (13 999 <= W), but it
    //    touches [13 500, 16 500): merged into [11 000, 16 500), which is not late: absorbed.
    // 7. ts 2 000 (v 64), W = 14 999: [2 000, 5 000) is late and touches no open session: `late`.
    // End: [11 000, 16 500) = {16, 32}, [20 000, 23 000) = {8}.
    let case = hand_case(
        Assigner::Session { gap: 3_000 },
        TriggerSpec::Default,
        5_000,
        0,
        &[
            (1_000, (1, 1)),
            (7_000, (1, 2)),
            (4_000, (1, 4)),
            (20_000, (1, 8)),
            (13_500, (1, 16)),
            (11_000, (1, 32)),
            (2_000, (1, 64)),
        ],
    );
    for api in [Api::Aggregate, Api::Process] {
        expect(
            Case { api, ..case.clone() },
            &[
                row(1, 1_000, 10_000, 9_999, (3, 7, 1, 4)),
                row(1, 11_000, 16_500, 16_499, (2, 48, 16, 32)),
                row(1, 20_000, 23_000, 22_999, (1, 8, 8, 8)),
            ],
            &[(2_000, 1, 64)],
        );
    }
}

#[test]
fn a_continuous_trigger_fires_once_per_interval_crossed_by_a_watermark_jump() {
    // Tumbling 10 s, ContinuousEventTimeTrigger every 2 s, delay 0, no lateness, one key.
    // 1. ts 1 500 (v 1): [0, 10 000); timers 9 999 and the first fire 1 500 - 1 500 % 2 000
    //    + 2 000 = 2 000.
    // 2. ts 8 000 (v 2), W = 1 499: nothing fires; {1, 2}.
    // 3. ts 30 000 (v 4), W = 7 999: 2 000 fires {1, 2} and registers 4 000, which fires in the same
    //    advance, then 6 000; 8 000 > W waits. [30 000, 40 000) opens; first fire 32 000.
    // 4. ts -1 000 (v 8), W = 29 999: 8 000 fires, then min(10 000, 9 999) = 9 999 fires (also the
    //    window's end and cleanup time); [-10 000, 0) is late: `late`.
    // End: [30 000, 40 000) fires at 32 000, 34 000, 36 000, 38 000 and 39 999, each with {4}.
    let case = hand_case(
        Assigner::Tumbling { size: 10_000, offset: 0 },
        TriggerSpec::Plain(Inner::Continuous(2_000)),
        0,
        0,
        &[(1_500, (1, 1)), (8_000, (1, 2)), (30_000, (1, 4)), (-1_000, (1, 8))],
    );
    let mut rows = vec![row(1, 0, 10_000, 9_999, (2, 3, 1, 2)); 5];
    rows.extend(vec![row(1, 30_000, 40_000, 39_999, (1, 4, 4, 4)); 5]);
    for api in [Api::Aggregate, Api::Process] {
        expect(Case { api, ..case.clone() }, &rows, &[(-1_000, 1, 8)]);
    }
}

#[test]
fn sliding_count_windows_fire_every_slide_with_the_last_n_and_drop_leftovers() {
    // count_window_sliding(3, 2), delay 0, allowed lateness 1 s (ignored: global windows are never
    // late). Key 1 gets 1, 2, 4, 8, 16, 32 (16 arrives 90 s behind the watermark: still counted);
    // key 2 gets only 100.
    // Key 1 fires at its 2nd element with {1, 2}, at its 4th with the last three of {1, 2, 4, 8}
    // = {2, 4, 8}, at its 6th with the last three of {2, 4, 8, 16, 32} = {8, 16, 32}.
    // Key 2 never reaches 2 elements, and the end of the input does not fire it.
    let case = hand_case(
        Assigner::CountSliding { size: 3, slide: 2 },
        TriggerSpec::Default,
        0,
        1_000,
        &[
            (100, (1, 1)),
            (200, (1, 2)),
            (400, (2, 100)),
            (300, (1, 4)),
            (50_000, (1, 8)),
            (-40_000, (1, 16)),
            (60_000, (1, 32)),
        ],
    );
    let global = |stats: Stats| row(1, i64::MIN, i64::MAX, i64::MAX, stats);
    for api in [Api::Aggregate, Api::Process] {
        expect(
            Case { api, ..case.clone() },
            &[global((2, 3, 1, 2)), global((3, 14, 2, 8)), global((3, 56, 8, 32))],
            &[],
        );
    }
}

#[test]
fn an_aggregate_runs_even_when_the_evictor_emptied_the_window() {
    // Tumbling 1 s, delay 0, no lateness, one element ts 100 (v 5) in [0, 1 000).
    // At the end of the input the window fires. `TimeEvictor::of(0)` evicts before the function
    // every element with ts <= max_ts - 0 = 100, i.e. all of them; `CountEvictor::of(0)` keeps the
    // last 0. Flink's EvictingWindowOperator still calls the function with the empty iterable
    // (no emptiness check after evictBefore), and `aggregate` with an evictor is
    // `AggregateApplyWindowFunction`, which folds the (no) elements into a fresh accumulator and
    // always emits `getResult(acc)`: one row (0, 0, i64::MAX, i64::MIN). `process` likewise runs
    // once over nothing.
    for evictor in [EvictorSpec::Time { span: 0, after: false }, EvictorSpec::Count { keep: 0, after: false }] {
        for api in [Api::Process, Api::Aggregate] {
            let case = Case {
                evictor,
                api,
                ..hand_case(Assigner::Tumbling { size: 1_000, offset: 0 }, TriggerSpec::Default, 0, 0, &[(100, (1, 5))])
            };
            expect(case, &[row(1, 0, 1_000, 999, stats([]))], &[]);
        }
    }
}
