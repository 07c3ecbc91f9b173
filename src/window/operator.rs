//! The window operator's logic, free of timely: [`WindowCore`].
//!
//! The timely operator (in `api::windowed`) feeds it elements, frontier watermarks and the clock;
//! `WindowCore` does what Flink's `WindowOperator` does, in the same order, and returns what to
//! emit. Keeping it free of timely lets tests and labs drive it step by step.
//!
//! # Two ways to know the watermark
//!
//! *Per record* (when the input arrives in the order of one source instance, as after a single
//! `key_by` from a file): the operator's watermark advances to each record's stamp before the
//! record is processed — Flink's operator receiving the source's watermark, then the record. Every
//! firing is then exactly Flink's, independent of batching and parallelism.
//!
//! *By frontier* (several sources, or records already reordered by an earlier exchange): the
//! operator's watermark is timely's frontier, the minimum over all inputs, as in Flink. Firing is
//! still never early. An element is judged by its own stamp, which may be ahead of the operator's
//! watermark; one that its stamp makes fire a window late that the operator has not fired yet is
//! held back until the watermark has passed the stamp, so that the window fires on time without
//! it and then late with it, however far the other sources have got. Which sessions merge depends
//! on the order of the elements, so session windows also hold back every element whose order
//! could matter, and take them in stamp order (see `order_matters_for_session`). (In Flink, which
//! elements count as late on several inputs depends on timing, and so do sessions.)

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::Hash;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::assigner::WindowAssigner;
use super::function::WindowLogic;
use super::key_index::{IdleKeys, KeyId, KeyIndex, hash_key};
use super::trigger::{TimerRequest, Trigger, TriggerContext, TriggerResult, TriggerState};
use super::{Window, WindowResult};
use crate::error::Result;
use crate::runtime::{Emit, KeyedEngine};
use crate::state::key_group;
use crate::state::snapshot::{SnapshotError, SnapshotKind, decode_key_groups, encode};
use crate::time::{Record, WATERMARK_MAX, WATERMARK_MIN};

/// How a window operator is configured.
pub struct WindowSettings<D> {
    /// Which windows an element belongs to.
    pub assigner: Arc<dyn WindowAssigner<D>>,
    /// When windows fire.
    pub trigger: Arc<dyn Trigger<D>>,
    /// How long after a window's end late elements are still added (and fire it again).
    pub allowed_lateness_ms: i64,
    /// Whether the watermark advances with each record's stamp (see the module docs).
    pub per_record_watermarks: bool,
}

impl<D> Clone for WindowSettings<D> {
    fn clone(&self) -> Self {
        WindowSettings {
            assigner: Arc::clone(&self.assigner),
            trigger: Arc::clone(&self.trigger),
            allowed_lateness_ms: self.allowed_lateness_ms,
            per_record_watermarks: self.per_record_watermarks,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Domain {
    Event,
    Processing,
}

#[derive(Serialize, Deserialize)]
struct Entry<C> {
    window: Window,
    contents: Option<C>,
    trigger_state: TriggerState,
}

/// A timer of one key: domain, time, window, and the watermark from which it may fire.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Timer {
    domain: Domain,
    time_ms: i64,
    window: Window,
    from_ms: i64,
}

impl Timer {
    /// Whether this is the timer at `time_ms` of `window` in `domain`: a key has at most one.
    fn is(&self, domain: Domain, time_ms: i64, window: &Window) -> bool {
        self.domain == domain && self.time_ms == time_ms && self.window == *window
    }

    /// This event-time timer of `key` as an entry of the event queue.
    fn queued(&self, key: KeyId) -> Reverse<EventTimer> {
        Reverse((self.from_ms, self.time_ms, key, self.window))
    }
}

/// The windows and timers of one key. A key has few of each (one tumbling window, `size / slide`
/// sliding windows), so small vectors beat ordered maps here.
struct KeyState<C> {
    windows: Vec<Entry<C>>,
    timers: Vec<Timer>,
}

impl<C> Default for KeyState<C> {
    fn default() -> Self {
        KeyState { windows: Vec::new(), timers: Vec::new() }
    }
}

impl<C> KeyState<C> {
    fn entry(&mut self, window: &Window) -> Option<&mut Entry<C>> {
        self.windows.iter_mut().find(|entry| entry.window == *window)
    }

    fn remove(&mut self, window: &Window) -> Option<Entry<C>> {
        let index = self.windows.iter().position(|entry| entry.window == *window)?;
        Some(self.windows.swap_remove(index))
    }
}

/// Counts kept by the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Elements received.
    pub elements: u64,
    /// Elements dropped from every window they belong to (all went to the late output).
    pub late: u64,
    /// Results emitted.
    pub fired: u64,
}

/// One worker's window operator state and logic.
pub struct WindowCore<K, D, L: WindowLogic<K, D>> {
    settings: WindowSettings<D>,
    logic: L,
    /// Key → id (keys are interned: the operator's ordered structures hold a small integer,
    /// never the key); looked up, never iterated.
    key_ids: KeyIndex,
    /// Id → key, and id → state.
    key_values: Vec<K>,
    keys: Vec<KeyState<L::Contents>>,
    /// Keys without a window, released (their ids reused) now and then, once they have no
    /// timer either.
    idle: IdleKeys,
    /// Ids of released keys, reused by new ones.
    free_ids: Vec<KeyId>,
    /// Event-time timers by `(may fire from, time, key, window)`, smallest first: the firing
    /// order. A deleted timer stays in the heap until it comes up, and is skipped then if its key
    /// no longer has it (the keys' `timers` are the truth): a session that grows moves its timer
    /// with every element, and a heap push is far cheaper than an ordered set's insert and remove.
    event_queue: BinaryHeap<Reverse<EventTimer>>,
    /// Event-time timers the keys have: when the heap holds many more entries than this, it is
    /// rebuilt from the keys.
    event_timers_live: usize,
    /// Processing-time timers by `(time, key, window)`.
    processing_queue: BTreeSet<(i64, KeyId, Window)>,
    watermark_ms: i64,
    counts: WindowCounts,
    assigned: Vec<Window>,
    requests: Vec<TimerRequest>,
    emitted: Vec<L::Output>,
    /// Scratch for session merging: every window of the key and the new one, then the windows
    /// the new one merges with (no allocation per element).
    session_windows: Vec<Window>,
    session_merged: Vec<Window>,
    /// Elements of a parallel source held back until the watermark has passed their stamp (see
    /// [`held_back`](Self::held_back)), in arrival order; sorted by [`Held`] when some are let
    /// go. (Each source's elements come in stamp order, so the vector is nearly sorted.)
    pending: Vec<(Held, K, Record<D>)>,
    /// The least stamp in `pending` (`i64::MAX` when it is empty): a watermark up to it lets
    /// nothing go.
    pending_stamp_min: i64,
    /// Scratch for the elements let go.
    letting_go: Vec<(Held, K, Record<D>)>,
    /// Elements held back so far: the order of equal keys at equal times and stamps.
    pending_count: u64,
}

/// Where a held-back element waits: `(stamp, time, key hash, arrival)`. Elements go in in this
/// order, so that elements of several sources with the same stamp go in in the same order
/// whatever order they arrived in; only equal keys at equal times and stamps keep their arrival
/// order.
type Held = (i64, i64, u64, u64);

/// An event-time timer in the queue: `(may fire from, time, key, window)`.
type EventTimer = (i64, i64, KeyId, Window);

/// Where a window operator's results and late elements go.
pub type WindowEmit<'a, K, D, O> = Emit<'a, D, WindowResult<K, O>>;

impl<K: Hash + Eq + Clone, D: 'static, L: WindowLogic<K, D>> WindowCore<K, D, L> {
    /// An empty operator.
    pub fn new(settings: WindowSettings<D>, logic: L) -> Self {
        assert!(settings.allowed_lateness_ms >= 0, "allowed lateness cannot be negative");
        WindowCore {
            settings,
            logic,
            key_ids: KeyIndex::default(),
            key_values: Vec::new(),
            keys: Vec::new(),
            idle: IdleKeys::default(),
            free_ids: Vec::new(),
            event_queue: BinaryHeap::new(),
            event_timers_live: 0,
            processing_queue: BTreeSet::new(),
            watermark_ms: WATERMARK_MIN,
            counts: WindowCounts::default(),
            assigned: Vec::new(),
            requests: Vec::new(),
            emitted: Vec::new(),
            session_windows: Vec::new(),
            session_merged: Vec::new(),
            pending: Vec::new(),
            pending_stamp_min: i64::MAX,
            letting_go: Vec::new(),
            pending_count: 0,
        }
    }

    /// The operator's watermark.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// What the operator has counted.
    pub fn counts(&self) -> WindowCounts {
        self.counts
    }

    /// Whether no window, timer or held-back element is left.
    pub fn is_empty(&self) -> bool {
        // The keys' timers are the truth; every queued timer that is not deleted is among them.
        self.pending.is_empty() && self.keys.iter().all(|state| state.windows.is_empty() && state.timers.is_empty())
    }

    /// The earliest pending processing-time timer, if any.
    pub fn next_processing_timer(&self) -> Option<i64> {
        self.processing_queue.first().map(|(time, ..)| *time)
    }

    /// The id of `key`, whose hash is `hash`, made if new.
    fn intern(&mut self, key: K, hash: u64) -> KeyId {
        let key_values = &self.key_values;
        if let Some(id) = self.key_ids.find(hash, |id| key_values[id as usize] == key) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.key_values[id as usize] = key;
                self.keys[id as usize] = KeyState::default();
                id
            }
            None => {
                let id = KeyId::try_from(self.key_values.len()).expect("at most 2^32 keys per worker");
                self.key_values.push(key);
                self.keys.push(KeyState::default());
                id
            }
        };
        self.key_ids.insert(hash, id);
        self.idle.interned();
        id
    }

    /// After windows were cleared: releases the keys without a window or timer, if
    /// [`IdleKeys::due`].
    fn release_idle_keys(&mut self) {
        if !self.idle.due() {
            return;
        }
        let (keys, key_values) = (&self.keys, &self.key_values);
        self.idle.release(&mut self.key_ids, &mut self.free_ids, keys.len(), |id| {
            let state = &keys[id as usize];
            (state.windows.is_empty() && state.timers.is_empty()).then(|| hash_key(&key_values[id as usize]))
        });
    }

    fn cleanup_time(&self, window: &Window) -> i64 {
        if self.settings.assigner.is_event_time() {
            let cleanup = window.max_timestamp().wrapping_add(self.settings.allowed_lateness_ms);
            if cleanup >= window.max_timestamp() { cleanup } else { WATERMARK_MAX }
        } else {
            window.max_timestamp()
        }
    }

    fn is_window_late(&self, window: &Window, watermark_ms: i64) -> bool {
        self.settings.assigner.is_event_time() && self.cleanup_time(window) <= watermark_ms
    }

    /// Moves the watermark to `watermark_ms` and fires every event-time timer up to it, in
    /// timestamp order; the frontier calls this. A lower watermark than the current is ignored.
    /// Held-back elements are processed once the watermark has passed their stamps (until then
    /// more elements with the same stamp may come), each after the timers up to its stamp.
    pub fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut WindowEmit<'_, K, D, L::Output>) {
        if self.pending_stamp_min < watermark_ms {
            self.pending.sort_by_key(|(held, ..)| *held);
            let ready = self.pending.partition_point(|((stamp_ms, ..), ..)| *stamp_ms < watermark_ms);
            let mut letting_go = std::mem::take(&mut self.letting_go);
            letting_go.extend(self.pending.drain(..ready));
            self.pending_stamp_min = self.pending.first().map_or(i64::MAX, |((stamp_ms, ..), ..)| *stamp_ms);
            for ((stamp_ms, _, hash, _), key, record) in letting_go.drain(..) {
                self.fire_event_timers(stamp_ms, now_ms, emit);
                // Assigning it succeeded when it arrived, and event-time windows do not read the clock.
                self.process_element(key, hash, record, now_ms, false, emit)
                    .expect("a held-back element was assigned before");
            }
            self.letting_go = letting_go;
        }
        self.fire_event_timers(watermark_ms, now_ms, emit);
    }

    /// Moves the watermark to `watermark_ms`, firing every event-time timer up to it in
    /// timestamp order.
    fn fire_event_timers(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut WindowEmit<'_, K, D, L::Output>) {
        if watermark_ms <= self.watermark_ms {
            return;
        }
        let previous = self.watermark_ms;
        let mut fired = false;
        // Results of this advance reach downstream before the new watermark does, as in Flink:
        // they carry the previous watermark as their stamp.
        while let Some(&Reverse((from, time, key, window))) = self.event_queue.peek() {
            if from > watermark_ms {
                break;
            }
            self.event_queue.pop();
            let live = self.keys.get(key as usize).is_some_and(|state| {
                state.timers.iter().any(|timer| timer.is(Domain::Event, time, &window) && timer.from_ms == from)
            });
            if !live {
                continue;
            }
            assert!(time <= watermark_ms, "timer {time} fired early, at watermark {watermark_ms}");
            self.fire_timer(Domain::Event, time, key, window, watermark_ms, previous, now_ms, emit);
            fired = true;
        }
        self.watermark_ms = watermark_ms;
        if fired {
            self.release_idle_keys();
        }
    }

    /// Whether an element assigned the event-time windows `assigned`, judged by `judged_ms` (its
    /// stamp, or the operator's watermark if that is ahead), must wait until the watermark has
    /// passed it. Never in source order (per-record watermarks), where elements come in stamp
    /// order.
    ///
    /// - Windows that do not merge: when its stamp is ahead of the operator's watermark and one of
    ///   its windows ends between the two and still takes it within the allowed lateness. By its
    ///   stamp that window has fired on time before the element arrives, so the element fires it
    ///   again, late; processed now, it would be in the on-time firing instead, and the result
    ///   would depend on how far the other source instances had got. Other elements go in at
    ///   once: their windows are the same in whatever order they arrive.
    /// - Sessions: see [`order_matters_for_session`](Self::order_matters_for_session).
    fn held_back(&self, assigned: &[Window], judged_ms: i64) -> bool {
        if self.settings.per_record_watermarks || !self.settings.assigner.is_event_time() {
            return false;
        }
        if self.settings.assigner.is_merging() {
            return self.order_matters_for_session(assigned, judged_ms);
        }
        judged_ms > self.watermark_ms
            && assigned.iter().any(|window| {
                let end_ms = window.max_timestamp();
                self.watermark_ms < end_ms && end_ms <= judged_ms && self.cleanup_time(window) > judged_ms
            })
    }

    /// Whether a session element judged by `judged_ms` may do something else if elements of
    /// other sources with stamps up to its own, still to come, went in first, as they would have
    /// had the watermark reached its stamp.
    ///
    /// - With a trigger that does not [act only at the window's
    ///   end](Trigger::acts_only_at_window_end): always, for its firings may depend on the
    ///   order of the elements in any way.
    /// - With the default trigger: when its own session starts by its stamp. An element still
    ///   to come may then make or extend a session that touches it and ends by the stamp. Taken
    ///   first, that session would have fired (and closed, without allowed lateness) before this
    ///   element; taken after, they merge. This covers every session of the key that ends by the
    ///   stamp (fired or closed) and that this element touches. Otherwise every session it
    ///   touches ends after its stamp, and so does its own: elements with earlier stamps merge
    ///   with it, or not, the same in either order, and nothing fires in between. With event
    ///   times a few seconds ahead of the watermark (Nexmark's), nearly every element goes in
    ///   at once.
    fn order_matters_for_session(&self, assigned: &[Window], judged_ms: i64) -> bool {
        !self.settings.trigger.acts_only_at_window_end()
            || assigned.iter().any(|window| window.start <= judged_ms.saturating_add(1))
    }

    /// Holds back `record` of `key` (see [`held_back`](Self::held_back)).
    fn hold(&mut self, held: Held, key: K, record: Record<D>) {
        self.pending_stamp_min = self.pending_stamp_min.min(held.0);
        self.pending.push((held, key, record));
        self.pending_count += 1;
    }

    /// Fires every processing-time timer before `now_ms` (Flink fires a timer for `T` once the
    /// clock reaches `T + 1`).
    pub fn advance_processing_time(&mut self, now_ms: i64, emit: &mut WindowEmit<'_, K, D, L::Output>) {
        let mut fired = false;
        while let Some(&(time, key, window)) = self.processing_queue.first() {
            if time >= now_ms {
                break;
            }
            self.processing_queue.remove(&(time, key, window));
            let watermark_ms = self.watermark_ms;
            self.fire_timer(Domain::Processing, time, key, window, watermark_ms, watermark_ms, now_ms, emit);
            fired = true;
        }
        if fired {
            self.release_idle_keys();
        }
    }

    /// Processes one element of `key`. With per-record watermarks the watermark first advances to
    /// the record's stamp.
    pub fn on_element(
        &mut self,
        key: K,
        record: Record<D>,
        now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) -> Result<()> {
        let hash = hash_key(&key);
        self.on_hashed_element(key, hash, record, now_ms, emit)
    }

    /// [`on_element`](Self::on_element) with the key's hash.
    fn on_hashed_element(
        &mut self,
        key: K,
        hash: u64,
        record: Record<D>,
        now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) -> Result<()> {
        self.process_element(key, hash, record, now_ms, true, emit)
    }

    /// Processes an element that arrives (`may_hold`: it may be held back) or is let go.
    fn process_element(
        &mut self,
        key: K,
        hash: u64,
        record: Record<D>,
        now_ms: i64,
        may_hold: bool,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) -> Result<()> {
        if self.settings.per_record_watermarks {
            self.advance_watermark(record.watermark_ms, now_ms, emit);
        }
        let watermark_ms = self.watermark_ms;
        // Lateness is judged by the record's stamp when it is ahead of the operator (records of
        // a parallel source, whose watermark here is the slowest instance's): what the record's
        // own source had promised decides, never how far the other instances have got.
        let judged_ms = watermark_ms.max(record.watermark_ms);
        let mut assigned = std::mem::take(&mut self.assigned);
        assigned.clear();
        let assignment = self.settings.assigner.assign(&record.value, record.time_ms, now_ms, &mut assigned);
        if let Err(error) = assignment {
            self.assigned = assigned;
            self.counts.elements += 1;
            return Err(error);
        }
        if may_hold && self.held_back(&assigned, judged_ms) {
            self.assigned = assigned;
            self.hold((judged_ms, record.time_ms, hash, self.pending_count), key, record);
            return Ok(());
        }
        self.counts.elements += 1;
        let key = self.intern(key, hash);
        let mut accepted = false;
        for window in assigned.iter().copied() {
            let window = if self.settings.assigner.is_merging() {
                match self.merge_into_sessions(key, window, watermark_ms, judged_ms, now_ms) {
                    Some(actual) => actual,
                    None => continue,
                }
            } else {
                if self.is_window_late(&window, judged_ms) {
                    continue;
                }
                window
            };
            accepted = true;
            let state = &mut self.keys[key as usize];
            if state.entry(&window).is_none() {
                if state.windows.is_empty() {
                    self.idle.turned_busy();
                }
                state.windows.push(Entry { window, contents: None, trigger_state: Default::default() });
            }
            let entry = state.entry(&window).expect("inserted above");
            let contents = entry.contents.get_or_insert_with(|| self.logic.empty());
            self.logic.add(contents, record.time_ms, &record.value);
            self.requests.clear();
            let mut ctx = TriggerContext::new(watermark_ms, now_ms, &mut entry.trigger_state, &[], &mut self.requests);
            let result = self.settings.trigger.on_element(&record.value, record.time_ms, &window, &mut ctx);
            self.apply_requests(key, &window, watermark_ms, false);
            self.act(key, &window, result, watermark_ms, emit);
            self.register_cleanup_timer(key, &window, watermark_ms);
        }
        self.assigned = assigned;
        if !accepted {
            self.counts.late += 1;
            emit.late.push(record);
        }
        Ok(())
    }

    /// Session merging (Flink's `MergingWindowSet.addWindow` and the merge callback). Returns the
    /// window the element goes to, or `None` if that window is late. Sessions already past their
    /// cleanup time by `judged_ms` (the element's stamp, when it is ahead of the operator's
    /// watermark) do not take part: had the watermark reached the stamp, they would be gone, and
    /// the element's session must not depend on whether the operator has got there yet.
    fn merge_into_sessions(
        &mut self,
        key: KeyId,
        new_window: Window,
        watermark_ms: i64,
        judged_ms: i64,
        now_ms: i64,
    ) -> Option<Window> {
        let mut all = std::mem::take(&mut self.session_windows);
        all.clear();
        all.extend(
            self.keys[key as usize]
                .windows
                .iter()
                .map(|entry| entry.window)
                .filter(|window| !self.is_window_late(window, judged_ms)),
        );
        let new_is_existing = all.contains(&new_window);
        all.push(new_window);
        // Sort by start and sweep with the running cover, as `TimeWindow.mergeWindows` does;
        // keep the group that contains the new window.
        all.sort();
        let (mut group_start, mut group_end) = (0, all.len());
        let mut cover: Option<Window> = None;
        let mut found = false;
        for (index, window) in all.iter().enumerate() {
            match cover {
                Some(current) if current.intersects(window) => cover = Some(current.cover(window)),
                _ => {
                    if found {
                        group_end = index;
                        break;
                    }
                    cover = Some(*window);
                    group_start = index;
                }
            }
            if *window == new_window {
                found = true;
            }
        }
        let result = cover.expect("the new window is in some group");
        // The existing windows of the group: all of it but the new window, unless a window
        // equal to it was there already.
        let mut merged = std::mem::take(&mut self.session_merged);
        merged.clear();
        merged.extend(all[group_start..group_end].iter().copied().filter(|w| *w != new_window || new_is_existing));
        merged.dedup();
        self.session_windows = all;
        // Flink calls the merge callback only when an existing window changes.
        let real_merge = match merged.as_slice() {
            [] => false,
            [only] => *only != result,
            _ => true,
        };
        if real_merge {
            debug_assert!(
                !self.is_window_late(&result, judged_ms),
                "merging made a window late: Flink rejects this; it cannot happen with built-in assigners"
            );
            let mut merged_contents: Option<L::Contents> = None;
            // Usually one: the session the element extends.
            let mut merged_states: smallvec::SmallVec<[TriggerState; 2]> = smallvec::SmallVec::new();
            for window in &merged {
                let entry = self.keys[key as usize].remove(window).expect("listed above");
                merged_states.push(entry.trigger_state);
                if let Some(contents) = entry.contents {
                    match merged_contents.as_mut() {
                        None => merged_contents = Some(contents),
                        Some(into) => self.logic.merge(into, contents),
                    }
                }
            }
            let mut target = Entry { window: result, contents: merged_contents, trigger_state: Default::default() };
            self.requests.clear();
            let mut ctx = TriggerContext::new(
                watermark_ms,
                now_ms,
                &mut target.trigger_state,
                &merged_states,
                &mut self.requests,
            );
            self.settings.trigger.on_merge(&result, &mut ctx);
            self.keys[key as usize].windows.push(target);
            self.apply_requests(key, &result, watermark_ms, false);
            // The merged windows' timers (trigger and cleanup) go with them.
            for window in &merged {
                self.remove_timers(key, window);
            }
        }
        self.session_merged = merged;
        if self.is_window_late(&result, judged_ms) {
            debug_assert!(!real_merge);
            return None;
        }
        Some(result)
    }

    fn act(
        &mut self,
        key: KeyId,
        window: &Window,
        result: TriggerResult,
        stamp_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) {
        if result == TriggerResult::Continue {
            return;
        }
        let Some(entry) = self.keys[key as usize].entry(window) else { return };
        if result.is_fire()
            && let Some(contents) = entry.contents.as_mut()
        {
            let key_value = &self.key_values[key as usize];
            self.emitted.clear();
            self.logic.emit(key_value, window, stamp_ms, contents, &mut self.emitted);
            for value in self.emitted.drain(..) {
                self.counts.fired += 1;
                emit.results.push(Record {
                    time_ms: window.max_timestamp(),
                    watermark_ms: stamp_ms,
                    value: WindowResult { key: key_value.clone(), window: *window, value },
                });
            }
        }
        if result.is_purge() || entry.contents.as_ref().is_some_and(|contents| self.logic.is_empty(contents)) {
            entry.contents = None;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn fire_timer(
        &mut self,
        domain: Domain,
        time_ms: i64,
        key: KeyId,
        window: Window,
        watermark_ms: i64,
        stamp_ms: i64,
        now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) {
        // Already taken off its queue.
        self.take_timer(key, domain, time_ms, &window);
        let Some(entry) = self.keys[key as usize].entry(&window) else { return };
        self.requests.clear();
        let mut ctx = TriggerContext::new(watermark_ms, now_ms, &mut entry.trigger_state, &[], &mut self.requests);
        let result = match domain {
            Domain::Event => self.settings.trigger.on_event_time(time_ms, &window, &mut ctx),
            Domain::Processing => self.settings.trigger.on_processing_time(time_ms, &window, &mut ctx),
        };
        self.apply_requests(key, &window, watermark_ms, true);
        self.act(key, &window, result, stamp_ms, emit);
        let cleanup_domain = if self.settings.assigner.is_event_time() { Domain::Event } else { Domain::Processing };
        if domain == cleanup_domain && time_ms == self.cleanup_time(&window) {
            self.clear_window(key, &window, watermark_ms, now_ms);
        }
    }

    fn clear_window(&mut self, key: KeyId, window: &Window, watermark_ms: i64, now_ms: i64) {
        if let Some(mut entry) = self.keys[key as usize].remove(window) {
            self.requests.clear();
            let mut ctx = TriggerContext::new(watermark_ms, now_ms, &mut entry.trigger_state, &[], &mut self.requests);
            self.settings.trigger.clear(window, &mut ctx);
            if self.keys[key as usize].windows.is_empty() {
                self.idle.turned_idle();
            }
        }
        self.remove_timers(key, window);
    }

    fn remove_timers(&mut self, key: KeyId, window: &Window) {
        while let Some(timer) = self.keys[key as usize].timers.iter().find(|timer| timer.window == *window).copied() {
            self.delete_timer(key, window, timer.domain, timer.time_ms);
        }
    }

    fn register_cleanup_timer(&mut self, key: KeyId, window: &Window, watermark_ms: i64) {
        let cleanup = self.cleanup_time(window);
        if cleanup == WATERMARK_MAX {
            return;
        }
        let domain = if self.settings.assigner.is_event_time() { Domain::Event } else { Domain::Processing };
        self.register_timer(key, window, domain, cleanup, watermark_ms, false);
    }

    /// Registers a timer. A timer at or below the watermark registered outside a firing waits for
    /// the next, strictly higher watermark (as in Flink); registered while timers fire, it fires in
    /// the same advance.
    fn register_timer(
        &mut self,
        key: KeyId,
        window: &Window,
        domain: Domain,
        time_ms: i64,
        watermark_ms: i64,
        firing: bool,
    ) {
        let from_ms = match domain {
            Domain::Event if !firing => time_ms.max(watermark_ms.saturating_add(1)),
            _ => time_ms,
        };
        let state = &mut self.keys[key as usize];
        if state.timers.iter().any(|timer| timer.is(domain, time_ms, window)) {
            return;
        }
        let timer = Timer { domain, time_ms, window: *window, from_ms };
        state.timers.push(timer);
        self.enqueue(key, &timer);
        self.compact_event_queue();
    }

    /// Puts `key`'s `timer`, which its list holds, on the queue of its domain.
    fn enqueue(&mut self, key: KeyId, timer: &Timer) {
        match timer.domain {
            Domain::Event => {
                self.event_timers_live += 1;
                self.event_queue.push(timer.queued(key));
            }
            Domain::Processing => {
                self.processing_queue.insert((timer.time_ms, key, timer.window));
            }
        }
    }

    /// Takes the timer at `time_ms` of `window` in `domain` off `key`'s list, the truth about
    /// which timers exist; its queue entry is the caller's business.
    fn take_timer(&mut self, key: KeyId, domain: Domain, time_ms: i64, window: &Window) -> Option<Timer> {
        let timers = &mut self.keys[key as usize].timers;
        let index = timers.iter().position(|timer| timer.is(domain, time_ms, window))?;
        if domain == Domain::Event {
            self.event_timers_live -= 1;
        }
        Some(timers.swap_remove(index))
    }

    /// Rebuilds the event-time queue from the keys' timers once deleted ones outnumber the live
    /// ones by far: a trigger that moves its timers (deletes and registers) without the watermark
    /// passing them would otherwise grow the heap without limit.
    fn compact_event_queue(&mut self) {
        const STALE_MIN: usize = 1024;
        if self.event_queue.len() <= 2 * self.event_timers_live + STALE_MIN {
            return;
        }
        let mut live = Vec::with_capacity(self.event_timers_live);
        for (id, state) in self.keys.iter().enumerate() {
            for timer in state.timers.iter().filter(|timer| timer.domain == Domain::Event) {
                live.push(timer.queued(id as KeyId));
            }
        }
        debug_assert_eq!(live.len(), self.event_timers_live, "the live count is the keys' event timers");
        self.event_queue = BinaryHeap::from(live);
    }

    fn delete_timer(&mut self, key: KeyId, window: &Window, domain: Domain, time_ms: i64) {
        // An event timer's queue entry stays, and is skipped when it comes up (see `event_queue`).
        if self.take_timer(key, domain, time_ms, window).is_some() && domain == Domain::Processing {
            self.processing_queue.remove(&(time_ms, key, *window));
        }
    }

    fn apply_requests(&mut self, key: KeyId, window: &Window, watermark_ms: i64, firing: bool) {
        let requests = std::mem::take(&mut self.requests);
        for request in &requests {
            match *request {
                TimerRequest::RegisterEvent(time) => {
                    self.register_timer(key, window, Domain::Event, time, watermark_ms, firing)
                }
                TimerRequest::DeleteEvent(time) => self.delete_timer(key, window, Domain::Event, time),
                TimerRequest::RegisterProcessing(time) => {
                    self.register_timer(key, window, Domain::Processing, time, watermark_ms, firing)
                }
                TimerRequest::DeleteProcessing(time) => self.delete_timer(key, window, Domain::Processing, time),
            }
        }
        self.requests = requests;
    }
}

/// One key's windows, timers and held-back elements (`(stamp, element)`, in arrival order) in a
/// snapshot.
#[derive(Serialize, Deserialize)]
struct KeySnapshot<K, C, R> {
    key: K,
    windows: Vec<Entry<C>>,
    timers: Vec<Timer>,
    pending: Vec<(i64, R)>,
}

impl<K, D, L> WindowCore<K, D, L>
where
    K: Hash + Ord + Clone + Serialize + DeserializeOwned + 'static,
    D: Serialize + DeserializeOwned + 'static,
    L: WindowLogic<K, D>,
{
    /// Snapshots every window, timer and held-back element, grouped by key group (see
    /// [`crate::state`]), as versioned, checksummed bytes. Keys are in key order, so the bytes are
    /// a function of the state.
    pub fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        let mut pending: BTreeMap<&K, Vec<(i64, &Record<D>)>> = BTreeMap::new();
        let mut held: Vec<&(Held, K, Record<D>)> = self.pending.iter().collect();
        held.sort_by_key(|(held, ..)| *held);
        for ((stamp_ms, ..), key, record) in held {
            pending.entry(key).or_default().push((*stamp_ms, record));
        }
        // A released id still holds its last key, which may be live under another id.
        let mut released = vec![false; self.key_values.len()];
        for id in &self.free_ids {
            released[*id as usize] = true;
        }
        let mut order: Vec<usize> = (0..self.key_values.len()).filter(|id| !released[*id]).collect();
        order.sort_by(|a, b| self.key_values[*a].cmp(&self.key_values[*b]));
        type Snapshot<'a, K, C, D> = KeySnapshot<&'a K, &'a C, &'a Record<D>>;
        let mut groups: BTreeMap<u32, Vec<Snapshot<'_, K, L::Contents, D>>> = BTreeMap::new();
        for id in order {
            let state = &self.keys[id];
            let key = &self.key_values[id];
            let held = pending.remove(key).unwrap_or_default();
            if state.windows.is_empty() && state.timers.is_empty() && held.is_empty() {
                continue;
            }
            let mut windows: Vec<Entry<&L::Contents>> = state
                .windows
                .iter()
                .map(|e| Entry { window: e.window, contents: e.contents.as_ref(), trigger_state: e.trigger_state })
                .collect();
            windows.sort_by_key(|entry| entry.window);
            let mut timers = state.timers.clone();
            timers.sort_by_key(|t| (t.domain, t.time_ms, t.window));
            let snapshot = KeySnapshot { key, windows, timers, pending: held };
            groups.entry(key_group(key, max_parallelism)).or_default().push(snapshot);
        }
        // Keys with nothing but held-back elements.
        for (key, held) in pending {
            let snapshot = KeySnapshot { key, windows: Vec::new(), timers: Vec::new(), pending: held };
            groups.entry(key_group(key, max_parallelism)).or_default().push(snapshot);
        }
        for snapshots in groups.values_mut() {
            snapshots.sort_by(|a, b| a.key.cmp(b.key));
        }
        encode(SnapshotKind::KeyedState, &groups)
    }

    /// Restores the windows, timers and held-back elements of the key groups in `key_groups`
    /// from every old worker's snapshot (restoring on another parallelism works). Decodes
    /// everything first: on error the operator is unchanged. The watermark starts again from the
    /// minimum: sources replay.
    pub fn restore(
        &mut self,
        snapshots: &[Vec<u8>],
        key_groups: std::ops::Range<u32>,
    ) -> std::result::Result<(), SnapshotError> {
        let mut restored: Vec<KeySnapshot<K, L::Contents, Record<D>>> = decode_key_groups(snapshots, key_groups)?;
        restored.sort_by(|a, b| a.key.cmp(&b.key));
        self.key_ids = KeyIndex::default();
        self.key_values.clear();
        self.keys.clear();
        self.idle = IdleKeys::default();
        self.free_ids.clear();
        self.event_queue.clear();
        self.event_timers_live = 0;
        self.processing_queue.clear();
        self.pending.clear();
        self.pending_stamp_min = i64::MAX;
        self.pending_count = 0;
        self.watermark_ms = WATERMARK_MIN;
        for snapshot in restored {
            let hash = hash_key(&snapshot.key);
            for (stamp_ms, record) in snapshot.pending {
                self.hold((stamp_ms, record.time_ms, hash, self.pending_count), snapshot.key.clone(), record);
            }
            if snapshot.windows.is_empty() && snapshot.timers.is_empty() {
                continue;
            }
            let id = self.intern(snapshot.key, hash);
            for timer in &snapshot.timers {
                self.enqueue(id, timer);
            }
            if !snapshot.windows.is_empty() {
                self.idle.turned_busy();
            }
            self.keys[id as usize] = KeyState { windows: snapshot.windows, timers: snapshot.timers };
        }
        Ok(())
    }
}

impl<K: crate::api::Key, D: Serialize + DeserializeOwned + 'static, L: WindowLogic<K, D>> KeyedEngine<K, D>
    for WindowCore<K, D, L>
{
    type Output = WindowResult<K, L::Output>;

    fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        WindowCore::snapshot(self, max_parallelism)
    }

    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: std::ops::Range<u32>) -> Result<(), SnapshotError> {
        WindowCore::restore(self, snapshots, key_groups)
    }

    fn on_element(
        &mut self,
        key: K,
        record: Record<D>,
        now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) -> Result<()> {
        WindowCore::on_element(self, key, record, now_ms, emit)
    }

    fn on_element_announced(
        &mut self,
        key: K,
        hash: u64,
        record: Record<D>,
        now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, L::Output>,
    ) -> Result<()> {
        // The token of `prefetch_far` is the key's hash.
        self.on_hashed_element(key, hash, record, now_ms, emit)
    }

    fn prefetch_far(&self, key: &K) -> u64 {
        // As in the sliced operator: the index slot now, the key's state a few records later.
        self.key_ids.announce(key)
    }

    fn prefetch_near(&self, hash: u64) {
        if let Some(id) = self.key_ids.candidate(hash) {
            crate::runtime::prefetch_memory(&self.keys[id as usize]);
            crate::runtime::prefetch_memory(&self.key_values[id as usize]);
        }
    }

    fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut WindowEmit<'_, K, D, L::Output>) {
        WindowCore::advance_watermark(self, watermark_ms, now_ms, emit);
    }

    fn advance_processing_time(&mut self, now_ms: i64, emit: &mut WindowEmit<'_, K, D, L::Output>) {
        WindowCore::advance_processing_time(self, now_ms, emit);
    }

    fn next_processing_timer(&self) -> Option<i64> {
        WindowCore::next_processing_timer(self)
    }

    fn watermark_ms(&self) -> i64 {
        WindowCore::watermark_ms(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Emit;
    use crate::state::MAX_PARALLELISM_DEFAULT;
    use crate::window::{
        AggregateFunction, Aggregating, ContinuousEventTimeTrigger, CountTrigger, GlobalWindows, PurgingTrigger,
        SessionWindows, SlidingWindows, TimeDomain, TumblingWindows,
    };

    struct Count;

    impl AggregateFunction<u8> for Count {
        type Accumulator = i64;
        type Output = i64;
        fn create_accumulator(&self) -> i64 {
            0
        }
        fn add(&self, count: &mut i64, _value: &u8) {
            *count += 1;
        }
        fn merge(&self, count: &mut i64, other: i64) {
            *count += other;
        }
        fn result(&self, count: &i64) -> i64 {
            *count
        }
    }

    type Row = (i64, i64, i64);

    /// Each result's `(start, end, count)`, in the order fired.
    fn rows<K>(results: &[Record<WindowResult<K, i64>>]) -> Vec<Row> {
        results.iter().map(|r| (r.value.window.start, r.value.window.end, r.value.value)).collect()
    }

    type Counter = WindowCore<u64, u8, Aggregating<Count>>;

    /// A fresh operator from `new_core`, restored from a snapshot of `core`.
    fn through_snapshot(core: &Counter, new_core: impl Fn() -> Counter) -> Counter {
        let snapshot = core.snapshot(MAX_PARALLELISM_DEFAULT);
        let mut restored = new_core();
        restored.restore(&[snapshot], 0..MAX_PARALLELISM_DEFAULT).unwrap();
        restored
    }

    /// Counts per window of `assigner`, with its default trigger.
    fn counter(
        assigner: Arc<dyn WindowAssigner<u8>>,
        allowed_lateness_ms: i64,
        per_record_watermarks: bool,
    ) -> Counter {
        let trigger = assigner.default_trigger();
        counter_with(assigner, trigger, allowed_lateness_ms, per_record_watermarks)
    }

    /// Counts per window of `assigner` and key `K`, fired by `trigger`.
    fn counter_with<K: Hash + Eq + Clone>(
        assigner: Arc<dyn WindowAssigner<u8>>,
        trigger: Arc<dyn Trigger<u8>>,
        allowed_lateness_ms: i64,
        per_record_watermarks: bool,
    ) -> WindowCore<K, u8, Aggregating<Count>> {
        let settings = WindowSettings { assigner, trigger, allowed_lateness_ms, per_record_watermarks };
        WindowCore::new(settings, Aggregating(Arc::new(Count)))
    }

    /// Counts per event-time session of `gap_ms`, the watermark advancing with each record.
    fn session_counter(gap_ms: i64) -> Counter {
        counter(Arc::new(SessionWindows::with_gap(gap_ms, TimeDomain::EventTime).expect("valid gap")), 0, true)
    }

    #[test]
    fn keys_whose_sessions_are_over_release_their_ids() {
        let mut core = session_counter(100);
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        // A new key every 10 ms, each with one session of two elements: ~10 live at a time.
        for step in 0..1_000i64 {
            let stamp = step * 10 - 1;
            core.on_element(step as u64, Record::new(step * 10, stamp, 0u8), 0, &mut emit).unwrap();
            core.on_element(step as u64, Record::new(step * 10 + 5, stamp, 0u8), 0, &mut emit).unwrap();
        }
        core.advance_watermark(WATERMARK_MAX, 0, &mut emit);
        assert_eq!(results.len(), 1_000);
        assert!(results.iter().all(|result| result.value.value == 2));
        // At most 11 keys have a session at once, and at most twice `max(busy, IDLE_KEYS_MIN)`
        // are idle before they are released.
        let bound = 11 + 2 * crate::window::key_index::IDLE_KEYS_MIN.max(11) + 1;
        assert!(core.key_values.len() <= bound, "{} key ids for ~11 live keys", core.key_values.len());
        assert!(core.is_empty() && core.key_ids.len() <= bound);
    }

    #[test]
    fn timers_moved_without_the_watermark_passing_them_keep_the_queue_bounded() {
        let mut core = session_counter(10_000);
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        // Every element extends the keys' sessions and moves their timers; the watermark stays
        // below them all, so no deleted timer comes up to be skipped. Then key 2 goes on alone:
        // the queue is rebuilt many times while key 1's timer waits in it.
        for time_ms in 0..8_000i64 {
            let keys: &[u64] = if time_ms < 5_000 { &[1, 2] } else { &[2] };
            for &key in keys {
                core.on_element(key, Record::new(time_ms, 0, 0u8), 0, &mut emit).unwrap();
            }
            assert_eq!(core.event_timers_live, 2);
            // Compaction looks at registration, when the merged session's old timer is still
            // live: three live timers, and the new entry.
            assert!(core.event_queue.len() <= 2 * 3 + 1024 + 1, "{} queued timers", core.event_queue.len());
        }
        core.advance_watermark(WATERMARK_MAX, 0, &mut emit);
        let rows: Vec<(u64, Row)> =
            results.iter().map(|r| (r.value.key, (r.value.window.start, r.value.window.end, r.value.value))).collect();
        assert_eq!(rows, vec![(1, (0, 14_999, 5_000)), (2, (0, 17_999, 8_000))]);
        assert!(core.is_empty() && core.event_timers_live == 0);
    }

    /// Fires a window once no element has come for a second: every element deletes the timer of
    /// the one before and registers its own, a second after the element's time — an event-time
    /// timer, or with `on_the_clock` a processing-time timer.
    struct QuietFor1s {
        on_the_clock: bool,
    }

    impl QuietFor1s {
        fn delete(&self, time_ms: i64, ctx: &mut TriggerContext) {
            match self.on_the_clock {
                true => ctx.delete_processing_time_timer(time_ms),
                false => ctx.delete_event_time_timer(time_ms),
            }
        }

        fn result(&self, fired_on_the_clock: bool) -> TriggerResult {
            if fired_on_the_clock == self.on_the_clock { TriggerResult::FireAndPurge } else { TriggerResult::Continue }
        }
    }

    impl Trigger<u8> for QuietFor1s {
        fn on_element(&self, _value: &u8, time_ms: i64, _window: &Window, ctx: &mut TriggerContext) -> TriggerResult {
            if let Some(previous) = ctx.state(0) {
                self.delete(previous, ctx);
            }
            ctx.set_state(0, time_ms + 1_000);
            match self.on_the_clock {
                true => ctx.register_processing_time_timer(time_ms + 1_000),
                false => ctx.register_event_time_timer(time_ms + 1_000),
            }
            TriggerResult::Continue
        }
        fn on_event_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
            self.result(false)
        }
        fn on_processing_time(&self, _time_ms: i64, _window: &Window, _ctx: &mut TriggerContext) -> TriggerResult {
            self.result(true)
        }
        fn clear(&self, _window: &Window, ctx: &mut TriggerContext) {
            if let Some(previous) = ctx.state(0) {
                self.delete(previous, ctx);
            }
            ctx.clear_state(0);
        }
        fn name(&self) -> String {
            "quiet for 1 s".to_string()
        }
    }

    #[test]
    fn a_deleted_processing_time_timer_neither_fires_nor_wakes_the_operator() {
        let mut core = counter_with(Arc::new(GlobalWindows), Arc::new(QuietFor1s { on_the_clock: true }), 0, true);
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        core.on_element("k", Record::new(0, WATERMARK_MIN, 0u8), 0, &mut emit).unwrap();
        assert_eq!(core.next_processing_timer(), Some(1_000));
        // The second element moves the timer: the runtime must not be woken for the old one.
        core.on_element("k", Record::new(100, WATERMARK_MIN, 0u8), 50, &mut emit).unwrap();
        assert_eq!(core.next_processing_timer(), Some(1_100));
        core.advance_processing_time(1_100, &mut emit);
        assert!(emit.results.is_empty(), "the deleted timer for 1000 fired");
        core.advance_processing_time(1_101, &mut emit);
        assert_eq!(rows(emit.results), vec![(i64::MIN, i64::MAX, 2)]);
        assert_eq!(core.next_processing_timer(), None);
    }

    #[test]
    fn a_deleted_timer_never_fires_though_its_window_stays() {
        let global: Arc<dyn WindowAssigner<u8>> = Arc::new(GlobalWindows);
        // Timers at 1000 and 1100 are deleted by the next elements, and the watermark passes
        // them (1150) before the live one (1200): nothing fires. 5000 moves the timer to 6000,
        // which watermark 6500 fires with all four elements; 5100 comes after it, alone, and
        // fires at the end of the input.
        let input = [(0, WATERMARK_MIN), (100, WATERMARK_MIN), (200, WATERMARK_MIN), (5_000, 1_150), (5_100, 6_500)];
        let (rows, late) = run(global, Some(Arc::new(QuietFor1s { on_the_clock: false })), 0, &input);
        let window = (i64::MIN, i64::MAX);
        assert_eq!(rows, vec![(window.0, window.1, 4), (window.0, window.1, 1)]);
        assert!(late.is_empty());
    }

    /// Feeds `(time, stamp, now)` elements of one key, then ends the input; returns the firings
    /// as `(start, end, count)` in emission order and the times of the late elements.
    fn run(
        assigner: Arc<dyn WindowAssigner<u8>>,
        trigger: Option<Arc<dyn Trigger<u8>>>,
        lateness_ms: i64,
        input: &[(i64, i64)],
    ) -> (Vec<Row>, Vec<i64>) {
        let trigger = trigger.unwrap_or_else(|| assigner.default_trigger());
        let mut core = counter_with(assigner, trigger, lateness_ms, true);
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        for &(time_ms, stamp_ms) in input {
            core.on_element("k", Record::new(time_ms, stamp_ms, 0u8), 0, &mut emit).unwrap();
        }
        core.advance_watermark(WATERMARK_MAX, 0, &mut emit);
        assert!(core.is_empty() || !core.settings.assigner.is_event_time());
        (rows(&results), late.iter().map(|r| r.time_ms).collect())
    }

    #[test]
    fn allowed_lateness_refires_the_window_then_cleans_it_up() {
        let tumbling = Arc::new(TumblingWindows::event_time(10_000).unwrap());
        // 1000 opens [0,10000); watermark 9999 fires it (1); 3000 at watermark 11000 is within the
        // 5 s lateness: added, fired again (2); watermark 15000 passes the cleanup time 14999, so
        // 4000 is too late for its only window and goes to the late output.
        let (rows, late) =
            run(tumbling, None, 5_000, &[(1_000, WATERMARK_MIN), (12_000, 9_999), (3_000, 11_000), (4_000, 15_000)]);
        assert_eq!(rows, vec![(0, 10_000, 1), (0, 10_000, 2), (10_000, 20_000, 1)]);
        assert_eq!(late, vec![4_000]);
    }

    /// An element of a parallel source whose stamp (11 000) is past the end of its window
    /// [0, 10 000) but within the lateness, arriving while the operator's watermark (5 000) is
    /// behind: it waits, the window fires on time without it and then late with it — also when
    /// the operator is snapshotted and restored while the element waits.
    #[test]
    fn an_element_ahead_of_the_watermark_fires_its_window_late_as_its_stamp_says() {
        let tumbling: Arc<dyn WindowAssigner<u8>> = Arc::new(TumblingWindows::event_time(10_000).unwrap());
        let new_core = || counter(Arc::clone(&tumbling), 5_000, false);
        for restore in [false, true] {
            let mut core = new_core();
            let (mut results, mut late) = (Vec::new(), Vec::new());
            let mut emit = Emit { results: &mut results, late: &mut late };
            core.on_element(7u64, Record::new(1_000, WATERMARK_MIN, 0u8), 0, &mut emit).unwrap();
            core.advance_watermark(5_000, 0, &mut emit);
            core.on_element(7u64, Record::new(2_000, 11_000, 0u8), 0, &mut emit).unwrap();
            assert!(emit.results.is_empty(), "the held-back element fires nothing yet");
            if restore {
                core = through_snapshot(&core, new_core);
            }
            core.advance_watermark(WATERMARK_MAX, 0, &mut emit);
            assert_eq!(rows(&results), vec![(0, 10_000, 1), (0, 10_000, 2)], "restored: {restore}");
            assert!(late.is_empty() && core.is_empty());
        }
    }

    #[test]
    fn a_session_element_ahead_of_the_watermark_stays_out_of_the_session_its_stamp_closed() {
        // Gap 100 ms. `early` (time 20, stamp 10) makes [20, 120), which the watermark closes at
        // 119; `ahead` (time 100, stamp 130) comes from a source that is further on. By the
        // stamps, [20, 120) fired and closed before `ahead` came, so `ahead` is a session of its
        // own, [100, 200), in whichever order the two arrive; taken at once on arrival, `ahead`
        // first, the two would have merged into [20, 200).
        let sessions: Arc<dyn WindowAssigner<u8>> =
            Arc::new(SessionWindows::with_gap(100, TimeDomain::EventTime).unwrap());
        let new_core = || counter(Arc::clone(&sessions), 0, false);
        let early = Record::new(20, 10, 0u8);
        let ahead = Record::new(100, 130, 0u8);
        for (first, second) in [(&ahead, &early), (&early, &ahead)] {
            for restore in [false, true] {
                let mut core = new_core();
                let (mut results, mut late) = (Vec::new(), Vec::new());
                let mut emit = Emit { results: &mut results, late: &mut late };
                core.advance_watermark(0, 0, &mut emit);
                core.on_element(7u64, first.clone(), 0, &mut emit).unwrap();
                core.on_element(7u64, second.clone(), 0, &mut emit).unwrap();
                if restore {
                    core = through_snapshot(&core, new_core);
                    core.advance_watermark(0, 0, &mut emit);
                }
                core.advance_watermark(WATERMARK_MAX, 0, &mut emit);
                assert_eq!(rows(&results), vec![(20, 120, 1), (100, 200, 1)], "restored: {restore}");
                assert!(late.is_empty() && core.is_empty());
            }
        }
    }

    #[test]
    fn lateness_is_per_element_and_window() {
        let sliding = Arc::new(SlidingWindows::new(10_000, 5_000, 0, TimeDomain::EventTime).unwrap());
        // 30001 arrives at watermark 35000: too late for [25000,35000) (max 34999 <= 35000), on time
        // for [30000,40000); it is not a late element because one window took it.
        let (rows, late) = run(sliding, None, 0, &[(37_002, WATERMARK_MIN), (30_001, 35_000)]);
        assert_eq!(rows, vec![(30_000, 40_000, 2), (35_000, 45_000, 1)]);
        assert!(late.is_empty());
    }

    #[test]
    fn a_bridging_element_merges_two_sessions_and_touching_sessions_merge() {
        let sessions = Arc::new(SessionWindows::with_gap(3_000, TimeDomain::EventTime).unwrap());
        let (rows, _) = run(sessions.clone(), None, 0, &[(1_000, WATERMARK_MIN), (7_000, 0), (4_000, 0)]);
        assert_eq!(rows, vec![(1_000, 10_000, 3)]);
        let (rows, _) = run(sessions, None, 0, &[(1_000, WATERMARK_MIN), (4_000, 0), (8_000, 0)]);
        assert_eq!(rows, vec![(1_000, 7_000, 2), (8_000, 11_000, 1)], "exactly one gap apart is one session");
    }

    #[test]
    fn a_late_element_joins_an_open_session_and_moves_its_start() {
        let sessions = Arc::new(SessionWindows::with_gap(3_000, TimeDomain::EventTime).unwrap());
        // [10000,13000) is open at watermark 11000; 8000 is late by itself ([8000,11000) ends at
        // or before the watermark) but touches the open session, so it is absorbed.
        let (rows, late) = run(sessions, None, 0, &[(10_000, WATERMARK_MIN), (8_000, 11_000), (1_000, 11_000)]);
        assert_eq!(rows, vec![(8_000, 13_000, 2)]);
        assert_eq!(late, vec![1_000]);
    }

    #[test]
    fn count_windows_fire_every_n_and_never_fire_leftovers() {
        let purging: Arc<dyn Trigger<u8>> = Arc::new(PurgingTrigger::of(Arc::new(CountTrigger::of(2))));
        let input: Vec<(i64, i64)> = (0..5).map(|i| (i, WATERMARK_MIN)).collect();
        let (rows, _) = run(Arc::new(GlobalWindows), Some(purging), 0, &input);
        assert_eq!(rows, vec![(i64::MIN, i64::MAX, 2), (i64::MIN, i64::MAX, 2)]);
        let (rows, _) = run(Arc::new(GlobalWindows), Some(Arc::new(CountTrigger::of(2))), 0, &input);
        assert_eq!(rows, vec![(i64::MIN, i64::MAX, 2), (i64::MIN, i64::MAX, 4)], "without purging, contents stay");
    }

    #[test]
    fn continuous_trigger_fires_every_interval_even_in_one_big_watermark_jump() {
        let tumbling = Arc::new(TumblingWindows::event_time(10_000).unwrap());
        let continuous: Arc<dyn Trigger<u8>> = Arc::new(ContinuousEventTimeTrigger::of(2_000));
        // First fire at 1000 - 1000 % 2000 + 2000 = 2000; watermark 2500 fires it (1). Watermark
        // 9000 fires 4000, 6000 and 8000 (2 each: the element at 5000 came after 2500). End: 9999.
        let (rows, _) = run(tumbling, Some(continuous), 0, &[(1_000, WATERMARK_MIN), (5_000, 2_500), (9_000, 9_000)]);
        let counts: Vec<i64> = rows.iter().map(|row| row.2).collect();
        assert_eq!(counts, vec![1, 2, 2, 2, 3]);
    }

    #[test]
    fn processing_time_windows_fire_on_the_clock() {
        let assigner = Arc::new(TumblingWindows::new(1_000, 0, TimeDomain::ProcessingTime).unwrap());
        let mut core = counter_with(assigner, Arc::new(crate::window::ProcessingTimeTrigger), 0, true);
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        core.on_element("k", Record::new(50_000, WATERMARK_MIN, 0u8), 100, &mut emit).unwrap();
        core.on_element("k", Record::new(-7, WATERMARK_MIN, 0u8), 900, &mut emit).unwrap();
        assert_eq!(core.next_processing_timer(), Some(999));
        core.advance_processing_time(999, &mut emit);
        assert!(emit.results.is_empty(), "a timer for 999 fires once the clock reaches 1000");
        core.advance_processing_time(1_000, &mut emit);
        assert_eq!(emit.results.len(), 1);
        assert_eq!((emit.results[0].value.window, emit.results[0].value.value), (Window::new(0, 1_000), 2));
        assert!(core.is_empty());
    }
}
