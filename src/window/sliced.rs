//! The sliced window operator: tumbling and sliding event-time windows with an incremental
//! aggregate and the default trigger, without copying elements into every window.
//!
//! A sliding window of `size` every `slide` cuts time into *slices* of `gcd(size, slide)`; every
//! window is a run of `size / gcd` consecutive slices (the pane / slice sharing of Flink SQL's
//! slicing operator and the Scotty papers). An element is folded into exactly one slice
//! accumulator; a window's result merges the accumulators of its non-empty slices when it fires.
//! The general operator instead folds every element into `size / slide` window accumulators and
//! keeps a timer per window.
//!
//! Semantics are those of [`WindowCore`](super::WindowCore) with [`EventTimeTrigger`]
//! (super::EventTimeTrigger): a window fires once when the watermark reaches its end, and again for
//! each late element within the allowed lateness; an element is dropped from each window whose
//! `max_timestamp + allowed_lateness <= watermark`, and goes to the late output when that is every
//! window. Slices are kept until the last window containing them is past its cleanup time, which
//! is also why a window can never be recomputed from slices after it was cleaned up.
//!
//! The accumulators live in their slices, so that the time-ordered work reads memory in order.
//! A slice holds one *entry* per key with an element in it (the key and its accumulator), in the
//! order the keys entered it. The watermark walks the windows in order of end; a window walks the
//! entries of its slices front to back, merging each key's into that key's result so far (a list
//! of the keys met, in the order met), and then emits the list; a slice is dropped whole. An
//! element needs its key's entry in one slice: the key knows where its newest entry is, and each
//! entry where the key's next older one is. An element of its key's newest slice, or of a newer
//! one (nearly all of them: elements come nearly in order), touches the key and one entry; an
//! out-of-order one walks back a few entries. No key needs a timer of its own. (Keeping the
//! accumulators beside the key instead made every firing chase one heap block per key: a sliding
//! key holds more slices than fit inline.)

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::assigner::window_start_with_offset;
use super::function::AggregateFunction;
use super::key_index::{IdleKeys, KeyId, KeyIndex, hash_key};
use super::operator::{WindowCounts, WindowEmit};
use super::{Window, WindowResult};
use crate::state::key_group;
use crate::state::snapshot::{SnapshotError, SnapshotKind, decode_key_groups, encode};
use crate::time::{Record, WATERMARK_MIN};

/// Which windows a sliced operator computes: windows of `size_ms` starting every `slide_ms` at
/// `offset_ms` (tumbling: `slide_ms == size_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceSpec {
    /// Window size.
    pub size_ms: i64,
    /// Distance between window starts.
    pub slide_ms: i64,
    /// Window offset.
    pub offset_ms: i64,
}

impl SliceSpec {
    /// The length of the slices: `gcd(size, slide)`, so that every element of a slice is in the
    /// same windows.
    pub fn slice_ms(&self) -> i64 {
        gcd(self.size_ms, self.slide_ms)
    }

    /// The start of the earliest window containing `time_ms`, or `None` if no window does (a
    /// gap between windows shorter than their slide) or it would start before `i64::MIN`.
    pub fn first_window_start(&self, time_ms: i64) -> Option<i64> {
        let last = window_start_with_offset(time_ms, self.offset_ms, self.slide_ms);
        if last > time_ms || time_ms >= last.saturating_add(self.size_ms) {
            return None;
        }
        self.earliest_start(last, time_ms)
    }

    /// Given `last`, the start of the latest window containing `time_ms` (or, in a gap, the
    /// latest before it), the start of the earliest window ending after `time_ms`; `None` if it
    /// would start before `i64::MIN`.
    fn earliest_start(&self, last: i64, time_ms: i64) -> Option<i64> {
        // The windows start at `last`, `last - slide`, … down to the first start after
        // `time - size`.
        let steps = (last - time_ms + (self.size_ms - 1)) / self.slide_ms;
        last.checked_sub(steps.checked_mul(self.slide_ms)?)
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How many entries ahead a walk of a slice starts loading their keys' state: the entries are in
/// the order keys entered the slice, so each key's state is elsewhere in memory.
const STATE_AHEAD: usize = 8;

/// How many keys an operator needs before [`KeyedEngine::prefetch_next`] loads a record's entry
/// ahead: below it the slices' entries stay in cache.
///
/// [`KeyedEngine::prefetch_next`]: crate::runtime::KeyedEngine::prefetch_next
const PREFETCH_ENTRY_KEYS_MIN: usize = 100_000;

/// `older_position` of an entry that is its key's oldest.
const NO_OLDER: u32 = u32::MAX;

/// One key's accumulator in one slice.
struct SliceEntry<A> {
    /// The start of the key's next older slice (meaningless when `older_position == NO_OLDER`).
    /// It may have been dropped since: the walk back ends there.
    older_slice: i64,
    accumulator: A,
    key: KeyId,
    /// Where in `older_slice` the key's entry is, or [`NO_OLDER`].
    older_position: u32,
}

impl<A> SliceEntry<A> {
    /// Where the key's next older entry is, as `(slice start, position)`.
    fn older(&self) -> Option<(i64, u32)> {
        (self.older_position != NO_OLDER).then_some((self.older_slice, self.older_position))
    }
}

/// A slice and the entries of the keys with an element in it, in the order they entered it.
struct Slice<A> {
    start: i64,
    entries: Vec<SliceEntry<A>>,
}

/// What the operator knows of one key besides its accumulators.
#[repr(align(64))]
struct KeyState<K> {
    key: K,
    /// Windows starting before this have fired for this key (in order, or as late firings): a
    /// window whose slices all hold the key fires for it once, and after a restore (the watermark
    /// starts again from the minimum) windows fired before the snapshot do not fire again.
    next_start: i64,
    /// Where the key's newest entry is, `(slice start, position)`; meaningless while
    /// `slice_count == 0`.
    newest_slice: i64,
    newest_position: u32,
    /// How many live slices hold an entry of the key.
    slice_count: u32,
    /// Where the key's result for the window being fired is in `SlicedCore::firing`, or
    /// [`NOT_FIRING`]. Beside `next_start`, which a firing reads anyway: one load per entry.
    firing_at: u32,
}

impl<K> KeyState<K> {
    /// Where the key's newest entry is, as `(slice start, position)`, if it has one.
    fn newest(&self) -> Option<(i64, u32)> {
        (self.slice_count > 0).then_some((self.newest_slice, self.newest_position))
    }
}

/// `firing_at` of a key the firing has not met.
const NOT_FIRING: u32 = u32::MAX;

/// One worker's sliced window operator.
pub struct SlicedCore<K, D, A: AggregateFunction<D>> {
    spec: SliceSpec,
    slice_ms: i64,
    allowed_lateness_ms: i64,
    per_record_watermarks: bool,
    /// `size == slide`: an element is in one window, whose start is its slice's.
    tumbling: bool,
    function: Arc<A>,
    key_ids: KeyIndex,
    keys: Vec<KeyState<K>>,
    /// Keys without a slice, released (their ids reused) now and then.
    idle: IdleKeys,
    /// Ids of released keys.
    free_ids: Vec<KeyId>,
    /// The live slices, by start. A deque, not a map: a new slice nearly always comes last and the
    /// oldest goes first.
    slices: VecDeque<Slice<A::Accumulator>>,
    /// The keys a firing met, in the order it met them, each with its result merged so far
    /// (empty between firings; kept for its allocation).
    firing: Vec<(KeyId, A::Accumulator)>,
    /// Windows starting before this have been fired in order (every window before it ends at or
    /// before the watermark); the next in-order firing starts at or after it.
    cursor: i64,
    /// When the watermark next has something to do: the end of the next window to fire, or the
    /// time the oldest slice is dropped (`i64::MAX` if neither). A watermark below it does nothing.
    next_due: i64,
    watermark_ms: i64,
    /// `first_open_start(watermark_ms)`, kept with the watermark: every element needs it.
    open_start: i64,
    /// Elements whose stamp excludes them from, or fires late, windows the operator's watermark
    /// has not passed (a parallel source runs ahead of the others): `(stamp, arrival) → (key,
    /// time, the element folded alone)`, added to their slices once the watermark reaches the
    /// stamp. Slices cannot leave an element out of some of the windows they are part of, and a
    /// window must fire on time without an element its stamp makes late.
    pending: BTreeMap<(i64, u64), (KeyId, i64, A::Accumulator)>,
    /// Elements made pending so far: their order among equal stamps.
    pending_count: u64,
    counts: WindowCounts,
    /// `[start, start + slide)` of the last `last_start` computed (empty at first).
    recent_slide: std::cell::Cell<(i64, i64)>,
    marker: std::marker::PhantomData<fn(D)>,
}

impl<K: Hash + Eq + Clone, D, A: AggregateFunction<D>> SlicedCore<K, D, A> {
    /// An empty operator.
    pub fn new(spec: SliceSpec, allowed_lateness_ms: i64, per_record_watermarks: bool, function: Arc<A>) -> Self {
        assert!(spec.size_ms > 0 && spec.slide_ms > 0, "window size and slide must be positive");
        assert!(allowed_lateness_ms >= 0, "allowed lateness cannot be negative");
        SlicedCore {
            spec,
            slice_ms: spec.slice_ms(),
            allowed_lateness_ms,
            per_record_watermarks,
            tumbling: spec.size_ms == spec.slide_ms,
            function,
            key_ids: KeyIndex::default(),
            keys: Vec::new(),
            idle: IdleKeys::default(),
            free_ids: Vec::new(),
            slices: VecDeque::new(),
            firing: Vec::new(),
            cursor: i64::MIN,
            next_due: i64::MAX,
            watermark_ms: WATERMARK_MIN,
            open_start: i64::MIN,
            pending: BTreeMap::new(),
            pending_count: 0,
            counts: WindowCounts::default(),
            recent_slide: std::cell::Cell::new((0, 0)),
            marker: std::marker::PhantomData,
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

    /// Whether no slice is left.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.slices.is_empty()
    }

    /// The id of `key`, whose hash is `hash`, made if new.
    fn intern(&mut self, key: K, hash: u64) -> KeyId {
        let keys = &self.keys;
        if let Some(id) = self.key_ids.find(hash, |id| keys[id as usize].key == key) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                let state = &mut self.keys[id as usize];
                assert!(state.slice_count == 0 && state.firing_at == NOT_FIRING, "a released key is empty");
                state.key = key;
                state.next_start = i64::MIN;
                id
            }
            None => {
                let id = KeyId::try_from(self.keys.len()).expect("at most 2^32 - 1 keys per worker");
                self.keys.push(KeyState {
                    key,
                    next_start: i64::MIN,
                    newest_slice: i64::MIN,
                    newest_position: NO_OLDER,
                    slice_count: 0,
                    firing_at: NOT_FIRING,
                });
                id
            }
        };
        self.key_ids.insert(hash, id);
        self.idle.interned();
        id
    }

    /// After a slice drop: releases the keys without a slice or pending element, if
    /// [`IdleKeys::due`].
    fn release_idle_keys(&mut self) {
        if !self.idle.due() {
            return;
        }
        let mut pending = vec![false; self.keys.len()];
        for (id, ..) in self.pending.values() {
            pending[*id as usize] = true;
        }
        let keys = &self.keys;
        self.idle.release(&mut self.key_ids, &mut self.free_ids, keys.len(), |id| {
            let state = &keys[id as usize];
            (state.slice_count == 0 && !pending[id as usize]).then(|| hash_key(&state.key))
        });
    }

    fn window_at(&self, start: i64) -> Window {
        Window { start, end: start.saturating_add(self.spec.size_ms) }
    }

    fn cleanup_time(&self, window: &Window) -> i64 {
        window.max_timestamp().saturating_add(self.allowed_lateness_ms)
    }

    /// The start of the latest window containing `time_ms`.
    fn last_start(&self, time_ms: i64) -> i64 {
        // Elements come nearly in order, so most fall where the one before did: a comparison
        // instead of a division per element.
        let (recent_start, recent_end) = self.recent_slide.get();
        if recent_start <= time_ms && time_ms < recent_end {
            return recent_start;
        }
        let start = window_start_with_offset(time_ms, self.spec.offset_ms, self.spec.slide_ms);
        // Remembered only where no arithmetic wrapped, so that every time in the range has it.
        if time_ms.checked_sub(self.spec.offset_ms).is_some() && start <= time_ms {
            self.recent_slide.set((start, start.saturating_add(self.spec.slide_ms)));
        }
        start
    }

    /// The start of the last window containing the slice starting at `slice_start`.
    fn last_start_of_slice(&self, slice_start: i64) -> i64 {
        // A slice as long as the slide starts where a window does.
        if self.slice_ms == self.spec.slide_ms { slice_start } else { self.last_start(slice_start) }
    }

    /// The start of the earliest window containing `time_ms`.
    fn first_start(&self, time_ms: i64) -> i64 {
        self.spec.earliest_start(self.last_start(time_ms), time_ms).unwrap_or(i64::MIN)
    }

    /// The index of the live slice starting at `start`, if there is one.
    #[inline]
    fn slice_index(&self, start: i64) -> Option<usize> {
        // Most lookups are of the newest slice.
        if self.slices.back().is_some_and(|slice| slice.start == start) {
            return Some(self.slices.len() - 1);
        }
        let at = self.slices.partition_point(|slice| slice.start < start);
        (self.slices.get(at).is_some_and(|slice| slice.start == start)).then_some(at)
    }

    /// The index of the slice starting at `start`, made (empty) if new.
    fn slice_at(&mut self, start: i64) -> usize {
        if let Some(at) = self.slice_index(start) {
            return at;
        }
        let at = self.slices.partition_point(|slice| slice.start < start);
        self.slices.insert(at, Slice { start, entries: Vec::new() });
        self.refresh_due();
        at
    }

    /// `key`'s entry in the slice starting at `slice_start`, as `(slice index, position)`, made
    /// with a new accumulator if the key has none there yet.
    #[inline]
    fn entry_at(&mut self, key: KeyId, slice_start: i64) -> (usize, usize) {
        let state = &self.keys[key as usize];
        // Most elements go to their key's newest slice.
        if let Some((newest, position)) = state.newest()
            && newest == slice_start
        {
            let at = self.slice_index(slice_start).expect("a key's newest slice is live");
            return (at, position as usize);
        }
        self.new_or_older_entry(key, slice_start)
    }

    /// [`entry_at`](Self::entry_at) for an element that is not of its key's newest slice.
    // Out of line, so that the common case above stays small enough to inline into every element's
    // path.
    #[inline(never)]
    fn new_or_older_entry(&mut self, key: KeyId, slice_start: i64) -> (usize, usize) {
        let index = self.slice_at(slice_start);
        let state = &self.keys[key as usize];
        // Walk back from the key's newest entry to the first not newer than `slice_start`,
        // remembering the one after it, whose link a new entry goes between.
        let mut newer: Option<(usize, usize)> = None;
        let mut walk = state.newest();
        while let Some((slice, position)) = walk {
            if slice < slice_start {
                break;
            }
            // Slices are dropped oldest first, and one is dropped only when no element can enter
            // it any more: one at or after the slice this element enters is still there.
            let Some(at) = self.slice_index(slice) else {
                unreachable!("a key's entry at {slice} newer than {slice_start} was dropped");
            };
            let entry = &self.slices[at].entries[position as usize];
            assert_eq!(entry.key, key, "an entry links to its own key's entries only");
            if slice == slice_start {
                return (at, position as usize);
            }
            newer = Some((at, position as usize));
            walk = entry.older();
        }
        let (older_slice, older_position) = walk.unwrap_or((i64::MIN, NO_OLDER));
        let entries = &mut self.slices[index].entries;
        let position = entries.len();
        let position_u32 = u32::try_from(position).expect("at most 2^32 - 1 keys per slice");
        assert_ne!(position_u32, NO_OLDER, "at most 2^32 - 2 keys per slice");
        entries.push(SliceEntry { older_slice, accumulator: self.function.create_accumulator(), key, older_position });
        match newer {
            Some((at, newer_position)) => {
                let entry = &mut self.slices[at].entries[newer_position];
                entry.older_slice = slice_start;
                entry.older_position = position_u32;
            }
            None => {
                let state = &mut self.keys[key as usize];
                state.newest_slice = slice_start;
                state.newest_position = position_u32;
            }
        }
        let state = &mut self.keys[key as usize];
        state.slice_count += 1;
        if state.slice_count == 1 {
            self.idle.turned_busy();
        }
        (index, position)
    }

    /// `key`'s live entries, newest first, as `(slice index, position)`.
    fn entries_of(&self, key: KeyId) -> impl Iterator<Item = (usize, usize)> + '_ {
        let state = &self.keys[key as usize];
        let mut walk = state.newest();
        std::iter::from_fn(move || {
            let (slice, position) = walk?;
            let Some(at) = self.slice_index(slice) else {
                // Dropped, which ends the walk: slices are dropped oldest first, so every older one
                // is too.
                let oldest = self.slices.front().map(|slice| slice.start);
                assert!(oldest.is_none_or(|oldest| slice < oldest), "a key's entry at {slice} is in no slice");
                return None;
            };
            let entry = &self.slices[at].entries[position as usize];
            assert_eq!(entry.key, key, "an entry links to its own key's entries only");
            walk = entry.older();
            Some((at, position as usize))
        })
    }

    /// The earliest window starting at or after `cursor` (a window start, or `i64::MIN`) that
    /// holds a slice.
    fn next_window_from(&self, cursor: i64) -> Option<i64> {
        // A window starting at or after `cursor` holds no slice before it.
        let from = self.slices.partition_point(|slice| slice.start < cursor);
        for slice in self.slices.range(from..).map(|slice| slice.start) {
            let first = self.first_start(slice).max(cursor);
            // With `size < slide` a slice may lie between windows: then no later window holds it.
            if slice < first.saturating_add(self.spec.size_ms) {
                return Some(first);
            }
        }
        None
    }

    /// When the oldest slice starting at `slice` is dropped: its last window's cleanup time.
    fn drop_time(&self, slice: i64) -> i64 {
        self.cleanup_time(&self.window_at(self.last_start_of_slice(slice)))
    }

    /// Recomputes `next_due` from the slices.
    fn refresh_due(&mut self) {
        let window_due = self.next_window_from(self.cursor).map(|start| self.window_at(start).max_timestamp());
        let drop_due = self.slices.front().map(|slice| self.drop_time(slice.start));
        self.next_due = window_due.unwrap_or(i64::MAX).min(drop_due.unwrap_or(i64::MAX));
    }

    /// Fires the window starting at `start` for `key` alone (a late firing), if the key has an
    /// element in it.
    fn emit_window(&mut self, key: KeyId, start: i64, stamp_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        let window = self.window_at(start);
        let in_window: SmallVec<[(usize, usize); 8]> = self
            .entries_of(key)
            .skip_while(|&(at, _)| self.slices[at].start >= window.end)
            .take_while(|&(at, _)| self.slices[at].start >= window.start)
            .collect();
        // Merged oldest first, as an in-order firing does.
        let mut accumulator: Option<A::Accumulator> = None;
        for &(at, position) in in_window.iter().rev() {
            let slice = &self.slices[at].entries[position].accumulator;
            match accumulator.as_mut() {
                None => accumulator = Some(slice.clone()),
                Some(into) => self.function.merge(into, slice.clone()),
            }
        }
        let Some(accumulator) = accumulator else { return };
        self.emit_result(key, window, stamp_ms, &accumulator, emit);
    }

    /// Hands on `key`'s result for `window`, made from `accumulator`, stamped `stamp_ms`.
    // Inlined by hand: called per result, and as a call it cost the CSV job 1.6 % more instructions.
    #[inline(always)]
    fn emit_result(
        &mut self,
        key: KeyId,
        window: Window,
        stamp_ms: i64,
        accumulator: &A::Accumulator,
        emit: &mut WindowEmit<'_, K, D, A::Output>,
    ) {
        self.counts.fired += 1;
        emit.results.push(Record {
            time_ms: window.max_timestamp(),
            watermark_ms: stamp_ms,
            value: WindowResult {
                key: self.keys[key as usize].key.clone(),
                window,
                value: self.function.result(accumulator),
            },
        });
    }

    /// Moves the watermark to `watermark_ms`, firing every window whose end it reaches, and
    /// adding pending elements when it reaches their stamps.
    pub fn advance_watermark(&mut self, watermark_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        while let Some((&(stamp_ms, _), _)) = self.pending.first_key_value() {
            if stamp_ms > watermark_ms {
                break;
            }
            self.fire_until(stamp_ms, emit);
            let (_, (key, time_ms, accumulator)) = self.pending.pop_first().expect("looked at");
            let (start, last) = self.windows_taking(time_ms, stamp_ms).expect("a pending element has a window");
            self.add_to_slice(key, time_ms, start, last, |function, into| function.merge(into, accumulator), emit);
        }
        self.fire_until(watermark_ms, emit);
    }

    fn fire_until(&mut self, watermark_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        if watermark_ms <= self.watermark_ms {
            return;
        }
        let previous = self.watermark_ms;
        if self.next_due <= watermark_ms {
            while let Some(start) = self.next_window_from(self.cursor) {
                if self.window_at(start).max_timestamp() > watermark_ms {
                    break;
                }
                if self.tumbling
                    && self.drop_time(start) <= watermark_ms
                    && self.slices.front().is_some_and(|oldest| oldest.start == start)
                {
                    self.fire_and_drop_oldest(start, previous, emit);
                } else {
                    self.fire_window(start, previous, emit);
                }
                self.cursor = start.saturating_add(self.spec.slide_ms);
            }
            self.drop_slices(watermark_ms);
            self.refresh_due();
        }
        self.set_watermark(watermark_ms);
    }

    /// Fires the window starting at `start` for every key with an element in it that has not
    /// fired it yet, in the order its slices' entries first name them.
    fn fire_window(&mut self, start: i64, stamp_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        let window = self.window_at(start);
        let first = self.slices.partition_point(|slice| slice.start < start);
        let mut met = std::mem::take(&mut self.firing);
        let function = &*self.function;
        for slice in self.slices.range(first..).take_while(|slice| slice.start < window.end) {
            // Merged oldest slice first, as a late firing does.
            for (index, entry) in slice.entries.iter().enumerate() {
                if let Some(ahead) = slice.entries.get(index + STATE_AHEAD) {
                    crate::runtime::prefetch_memory(&self.keys[ahead.key as usize]);
                }
                let state = &mut self.keys[entry.key as usize];
                if state.firing_at != NOT_FIRING {
                    function.merge(&mut met[state.firing_at as usize].1, entry.accumulator.clone());
                } else if state.next_start <= start {
                    state.firing_at = met.len() as u32;
                    met.push((entry.key, entry.accumulator.clone()));
                }
            }
        }
        emit.results.reserve(met.len());
        for (index, (key, accumulator)) in met.iter().enumerate() {
            if let Some(&(ahead, _)) = met.get(index + STATE_AHEAD) {
                crate::runtime::prefetch_memory(&self.keys[ahead as usize]);
            }
            let state = &mut self.keys[*key as usize];
            state.firing_at = NOT_FIRING;
            state.next_start = start.saturating_add(self.spec.slide_ms);
            self.emit_result(*key, window, stamp_ms, accumulator, emit);
        }
        met.clear();
        self.firing = met;
    }

    /// `fire_window` and then `drop_slices` of a tumbling window whose one slice is the oldest
    /// and is dropped by the same watermark (no allowed lateness keeps it): one walk of its
    /// entries, and each accumulator moves into its result instead of being copied and then
    /// dropped. The results, their order and the keys left empty are those of the two walks.
    fn fire_and_drop_oldest(&mut self, start: i64, stamp_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        let window = self.window_at(start);
        let slice = self.slices.pop_front().expect("the oldest slice is this window's");
        assert_eq!(slice.start, start, "a tumbling window's one slice starts with it");
        emit.results.reserve(slice.entries.len());
        let mut entries = slice.entries.into_iter();
        while let Some(entry) = entries.next() {
            if let Some(ahead) = entries.as_slice().get(STATE_AHEAD - 1) {
                crate::runtime::prefetch_memory(&self.keys[ahead.key as usize]);
            }
            self.left_slice(entry.key);
            let state = &mut self.keys[entry.key as usize];
            if state.next_start <= start {
                state.next_start = window.end;
                self.emit_result(entry.key, window, stamp_ms, &entry.accumulator, emit);
            }
        }
        self.release_idle_keys();
    }

    /// Counts a dropped slice out of `key`'s, and the key idle if that was its last.
    // Inlined by hand, as `emit_result`: once per key and dropped slice.
    #[inline(always)]
    fn left_slice(&mut self, key: KeyId) {
        let state = &mut self.keys[key as usize];
        assert!(state.slice_count > 0, "a key's slices are counted");
        state.slice_count -= 1;
        if state.slice_count == 0 {
            self.idle.turned_idle();
        }
    }

    fn set_watermark(&mut self, watermark_ms: i64) {
        self.watermark_ms = watermark_ms;
        // The first open window moves only when the watermark reaches its end: most advances
        // (one per record) leave it where it is, and need no division.
        if watermark_ms == WATERMARK_MIN || watermark_ms >= self.open_start.saturating_add(self.spec.size_ms - 1) {
            self.open_start = self.first_open_start(watermark_ms);
        }
    }

    /// Drops every slice whose last window is past its cleanup time at `watermark_ms`, oldest
    /// first, and notes the keys it leaves with nothing.
    fn drop_slices(&mut self, watermark_ms: i64) {
        while let Some(slice) = self.slices.front() {
            if self.drop_time(slice.start) > watermark_ms {
                break;
            }
            let slice = self.slices.pop_front().expect("looked at");
            for (index, entry) in slice.entries.iter().enumerate() {
                if let Some(ahead) = slice.entries.get(index + STATE_AHEAD) {
                    crate::runtime::prefetch_memory(&self.keys[ahead.key as usize]);
                }
                self.left_slice(entry.key);
            }
            self.release_idle_keys();
        }
    }

    /// Processes one element of `key`.
    pub fn on_element(&mut self, key: K, record: Record<D>, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        let hash = hash_key(&key);
        self.on_hashed_element(key, hash, record, emit);
    }

    /// [`on_element`](Self::on_element) with the key's hash.
    fn on_hashed_element(&mut self, key: K, hash: u64, record: Record<D>, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        if self.per_record_watermarks {
            self.advance_watermark(record.watermark_ms, emit);
        }
        self.counts.elements += 1;
        let watermark_ms = self.watermark_ms;
        let time_ms = record.time_ms;
        // Judged by its stamp when that is ahead of the operator (a parallel source: see
        // `WindowCore::on_element`).
        let judged_ms = watermark_ms.max(record.watermark_ms);
        let Some((start, last)) = self.windows_taking(time_ms, judged_ms) else {
            // Between two windows (size < slide), or past every window: no window takes it.
            // Flink drops it without a trace; flowlab sends it to the late output.
            self.counts.late += 1;
            emit.late.push(record);
            return;
        };
        let key = self.intern(key, hash);
        if judged_ms > watermark_ms && self.fires_before_by_stamp(time_ms, start, last, judged_ms) {
            let mut accumulator = self.function.create_accumulator();
            self.function.add(&mut accumulator, &record.value);
            self.pending.insert((judged_ms, self.pending_count), (key, time_ms, accumulator));
            self.pending_count += 1;
            return;
        }
        self.add_to_slice(key, time_ms, start, last, |function, into| function.add(into, &record.value), emit);
    }

    /// Whether an element at `time_ms`, taken by the windows `start..=last` under its stamp
    /// `judged_ms` (ahead of the operator's watermark), must wait until the watermark reaches the
    /// stamp: some window of it ends between the two watermarks. Under the stamp that window has
    /// fired (or been cleaned up) before the element arrives, so the element is left out of it,
    /// or fires it again late; added now, it would be in its on-time firing instead, and the
    /// result would depend on how far the other source instances had got.
    fn fires_before_by_stamp(&self, time_ms: i64, start: i64, last: i64, judged_ms: i64) -> bool {
        if self.windows_taking(time_ms, self.watermark_ms).map(|(first, _)| first) != Some(start) {
            // A window cleaned up under the stamp but not yet under the watermark.
            return true;
        }
        // The earliest window of the element the watermark has not reached.
        let open = start.max(self.open_start);
        open <= last && self.window_at(open).max_timestamp() <= judged_ms
    }

    /// The windows that take an element at `time_ms` under `watermark_ms`, as `(first start,
    /// last start)`: those past their cleanup time do not; `None` if no window does.
    fn windows_taking(&self, time_ms: i64, watermark_ms: i64) -> Option<(i64, i64)> {
        let last = self.last_start(time_ms);
        let first = if self.tumbling { last } else { self.first_start(time_ms) };
        if time_ms >= last + self.spec.size_ms {
            return None;
        }
        let mut start = first;
        while start <= last && self.cleanup_time(&self.window_at(start)) <= watermark_ms {
            start += self.spec.slide_ms;
        }
        (start <= last).then_some((start, last))
    }

    /// Folds an element of `key` at `time_ms`, taken by the windows `start..=last`, into its
    /// slice with `fold`, and fires again the windows among them the watermark has passed.
    fn add_to_slice(
        &mut self,
        key: KeyId,
        time_ms: i64,
        start: i64,
        last: i64,
        fold: impl FnOnce(&A, &mut A::Accumulator),
        emit: &mut WindowEmit<'_, K, D, A::Output>,
    ) {
        let watermark_ms = self.watermark_ms;
        let slice_start = if self.slice_ms == self.spec.slide_ms {
            last
        } else {
            window_start_with_offset(time_ms, self.spec.offset_ms, self.slice_ms)
        };
        let (at, position) = self.entry_at(key, slice_start);
        fold(&self.function, &mut self.slices[at].entries[position].accumulator);
        // Windows the watermark has already passed fire again at once (late firings), latest
        // first, as Flink's assigner order; they count as fired for the in-order sequence. The
        // window at `start` ends first: if the watermark has not reached it, none fires.
        if self.window_at(start).max_timestamp() <= watermark_ms {
            let mut late_firing = last;
            while late_firing >= start {
                if self.window_at(late_firing).max_timestamp() <= watermark_ms {
                    self.emit_window(key, late_firing, watermark_ms, emit);
                }
                late_firing -= self.spec.slide_ms;
            }
        }
        let state = &mut self.keys[key as usize];
        state.next_start = state.next_start.max(self.open_start);
    }

    /// The earliest window start whose window the watermark has not reached: the smallest
    /// aligned `start` with `start + size - 1 > watermark`.
    fn first_open_start(&self, watermark_ms: i64) -> i64 {
        if watermark_ms == WATERMARK_MIN {
            return i64::MIN;
        }
        self.last_start(watermark_ms.saturating_add(1).saturating_sub(self.spec.size_ms))
            .saturating_add(self.spec.slide_ms)
    }
}

/// One key's slices in a snapshot.
#[derive(Serialize, Deserialize)]
struct KeySlices<K, A> {
    key: K,
    slices: Vec<(i64, A)>,
    next_start: i64,
    /// Pending elements, `(stamp, time, accumulator)`, in the order they are added.
    pending: Vec<(i64, i64, A)>,
}

impl<K, D, A> SlicedCore<K, D, A>
where
    K: Hash + Ord + Clone + Serialize + DeserializeOwned + 'static,
    A: AggregateFunction<D>,
{
    /// Snapshots every key's slices, grouped by key group, in key order.
    pub fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_by(|a, b| self.keys[*a].key.cmp(&self.keys[*b].key));
        let mut groups: std::collections::BTreeMap<u32, Vec<KeySlices<&K, &A::Accumulator>>> = Default::default();
        let mut pending: Vec<Vec<(i64, i64, &A::Accumulator)>> = vec![Vec::new(); self.keys.len()];
        for ((stamp_ms, _), (key, time_ms, accumulator)) in &self.pending {
            pending[*key as usize].push((*stamp_ms, *time_ms, accumulator));
        }
        // Each key's slices by start, oldest first.
        let mut slices: Vec<Vec<(i64, &A::Accumulator)>> = vec![Vec::new(); self.keys.len()];
        for slice in &self.slices {
            for entry in &slice.entries {
                slices[entry.key as usize].push((slice.start, &entry.accumulator));
            }
        }
        for id in order {
            let state = &self.keys[id];
            if slices[id].is_empty() && pending[id].is_empty() {
                continue;
            }
            let key = &state.key;
            groups.entry(key_group(key, max_parallelism)).or_default().push(KeySlices {
                key,
                slices: std::mem::take(&mut slices[id]),
                next_start: state.next_start,
                pending: std::mem::take(&mut pending[id]),
            });
        }
        encode(SnapshotKind::KeyedState, &groups)
    }

    /// Restores the keys of `key_groups` from every old worker's snapshot; on error the operator
    /// is unchanged. The watermark starts again from the minimum: sources replay.
    pub fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: std::ops::Range<u32>) -> Result<(), SnapshotError> {
        let mut restored: Vec<KeySlices<K, A::Accumulator>> = decode_key_groups(snapshots, key_groups)?;
        restored.sort_by(|a, b| a.key.cmp(&b.key));
        self.key_ids = KeyIndex::default();
        self.keys.clear();
        self.slices.clear();
        self.cursor = i64::MIN;
        self.idle = IdleKeys::default();
        self.free_ids.clear();
        self.pending.clear();
        self.next_due = i64::MAX;
        self.set_watermark(WATERMARK_MIN);
        for snapshot in restored {
            let hash = hash_key(&snapshot.key);
            let id = self.intern(snapshot.key, hash);
            for (start, accumulator) in snapshot.slices {
                let (at, position) = self.entry_at(id, start);
                self.slices[at].entries[position].accumulator = accumulator;
            }
            self.keys[id as usize].next_start = snapshot.next_start;
            for (stamp_ms, time_ms, accumulator) in snapshot.pending {
                self.pending.insert((stamp_ms, self.pending_count), (id, time_ms, accumulator));
                self.pending_count += 1;
            }
        }
        self.refresh_due();
        Ok(())
    }
}

impl<K: crate::api::Key, D: 'static, A: AggregateFunction<D>> crate::runtime::KeyedEngine<K, D>
    for SlicedCore<K, D, A>
{
    type Output = WindowResult<K, A::Output>;

    fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        SlicedCore::snapshot(self, max_parallelism)
    }

    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: std::ops::Range<u32>) -> Result<(), SnapshotError> {
        SlicedCore::restore(self, snapshots, key_groups)
    }

    fn on_element(
        &mut self,
        key: K,
        record: Record<D>,
        _now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, A::Output>,
    ) -> crate::error::Result<()> {
        SlicedCore::on_element(self, key, record, emit);
        Ok(())
    }

    fn on_element_announced(
        &mut self,
        key: K,
        hash: u64,
        record: Record<D>,
        _now_ms: i64,
        emit: &mut WindowEmit<'_, K, D, A::Output>,
    ) -> crate::error::Result<()> {
        // The token of `prefetch_far` is the key's hash.
        self.on_hashed_element(key, hash, record, emit);
        Ok(())
    }

    fn advance_watermark(&mut self, watermark_ms: i64, _now_ms: i64, emit: &mut WindowEmit<'_, K, D, A::Output>) {
        SlicedCore::advance_watermark(self, watermark_ms, emit);
    }

    fn advance_processing_time(&mut self, _now_ms: i64, _emit: &mut WindowEmit<'_, K, D, A::Output>) {}

    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    fn watermark_ms(&self) -> i64 {
        SlicedCore::watermark_ms(self)
    }

    fn prefetch_far(&self, key: &K) -> u64 {
        // With thousands of keys, the index slot and the key's state are each a cache miss that
        // the record would otherwise wait for: load the slot now, the state (which the slot's tag
        // points to) a few records later. A tag shared by two keys only loads the wrong state.
        self.key_ids.announce(key)
    }

    fn prefetch_near(&self, hash: u64) {
        if let Some(id) = self.key_ids.candidate(hash) {
            crate::runtime::prefetch_memory(&self.keys[id as usize]);
        }
    }

    fn prefetch_next(&self, hash: u64) {
        // The key's state is in cache: load the entry of its newest slice, which an element nearly
        // always goes to. Only with many keys: with few, the entries stay in cache anyway and the
        // lookup costs more than it saves (10 000 keys: 10 % more CPU; a million: 25 % less).
        if self.keys.len() < PREFETCH_ENTRY_KEYS_MIN {
            return;
        }
        let Some(id) = self.key_ids.candidate(hash) else { return };
        if let Some((newest_slice, position)) = self.keys[id as usize].newest()
            && let Some(newest) = self.slices.back()
            && newest.start == newest_slice
            && let Some(entry) = newest.entries.get(position as usize)
        {
            crate::runtime::prefetch_memory(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Emit, KeyedEngine};
    use crate::window::test_functions::Sum;
    use crate::window::{Aggregating, SlidingWindows, TimeDomain, WindowAssigner, WindowCore, WindowSettings};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    type Rows = Vec<(u8, i64, i64, (i64, i64))>;

    fn run<E: KeyedEngine<u8, i64, Output = WindowResult<u8, (i64, i64)>>>(
        mut engine: E,
        input: &[(u8, i64, i64)],
    ) -> (Rows, Vec<i64>) {
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        let mut watermark_ms = i64::MIN;
        for &(key, time_ms, stamp_ms) in input {
            engine.on_element(key, Record::new(time_ms, stamp_ms, time_ms), 0, &mut emit).unwrap();
            // Both operators follow the records' watermarks, which never go back.
            watermark_ms = watermark_ms.max(stamp_ms);
            assert_eq!(engine.watermark_ms(), watermark_ms, "the operator's watermark after stamp {stamp_ms}");
        }
        engine.advance_watermark(i64::MAX, 0, &mut emit);
        assert_eq!(engine.watermark_ms(), i64::MAX);
        let mut rows: Rows =
            results.iter().map(|r| (r.value.key, r.value.window.start, r.value.window.end, r.value.value)).collect();
        rows.sort();
        let mut late: Vec<i64> = late.iter().map(|r| r.time_ms).collect();
        late.sort();
        (rows, late)
    }

    #[test]
    fn keys_that_come_and_go_release_their_ids() {
        // A new key every 10 ms for 10 000 ms of windows of 100 ms: a few keys are live at once,
        // and the operator's tables hold only those (ids are reused). Sliding windows drop their
        // slices apart from firing; tumbling ones fire and drop a slice in one walk.
        for (slide_ms, windows_per_element) in [(50, 2), (100, 1)] {
            let spec = SliceSpec { size_ms: 100, slide_ms, offset_ms: 0 };
            let mut core: SlicedCore<u64, i64, Sum> = SlicedCore::new(spec, 0, true, Arc::new(Sum));
            let (mut results, mut late) = (Vec::new(), Vec::new());
            let mut emit = Emit { results: &mut results, late: &mut late };
            for step in 0..1_000i64 {
                core.on_element(step as u64, Record::new(step * 10, step * 10 - 1, 1), &mut emit);
            }
            core.advance_watermark(i64::MAX, &mut emit);
            assert_eq!(results.len(), 1_000 * windows_per_element, "each key's element in each of its windows");
            // A key's slice lives until its last window is dropped: at most 16 keys are live at
            // once, and at most twice `max(live, IDLE_KEYS_MIN)` are idle before they are released.
            let bound = 16 + 2 * crate::window::key_index::IDLE_KEYS_MIN.max(16) + 1;
            assert!(core.keys.len() <= bound, "slide {slide_ms}: {} key ids for at most 16 live keys", core.keys.len());
            assert!(core.is_empty() && core.key_ids.len() <= bound);
        }
    }

    #[test]
    fn a_steady_set_of_keys_is_never_released() {
        // 1 000 keys, each with one element per tumbling window of 1 000 ms at a time of its own:
        // right after a window is dropped nearly every key is idle, and a third of them miss
        // each window, yet they come back. No key is released, so none is interned again.
        let spec = SliceSpec { size_ms: 1_000, slide_ms: 1_000, offset_ms: 0 };
        let mut core: SlicedCore<u64, i64, Sum> = SlicedCore::new(spec, 0, true, Arc::new(Sum));
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        let mut elements = 0;
        for window in 0..50i64 {
            for key in 0..1_000u64 {
                // Key `k` misses every third window after its first (k % 3 decides which).
                if window > 0 && (window + key as i64) % 3 == 0 {
                    continue;
                }
                let time_ms = window * 1_000 + (key as i64 * 7) % 1_000;
                core.on_element(key, Record::new(time_ms, window * 1_000 - 1, 1), &mut emit);
                elements += 1;
            }
        }
        core.advance_watermark(i64::MAX, &mut emit);
        assert_eq!(results.len(), elements, "one element per key and window");
        assert_eq!(core.keys.len(), 1_000, "one id per key");
        assert!(core.free_ids.is_empty(), "{} keys were released", core.free_ids.len());
    }

    /// `(key, time, stamp)` with non-decreasing stamps, as one source produces them.
    fn input() -> impl Strategy<Value = Vec<(u8, i64, i64)>> {
        prop::collection::vec((0u8..3, -3_000i64..6_000, 0i64..400), 0..80).prop_map(|raw| {
            let mut stamp = i64::MIN;
            raw.into_iter()
                .map(|(key, time, advance)| {
                    let row = (key, time, stamp);
                    stamp = if stamp == i64::MIN { time - 1_000 } else { stamp.max(time - 1_000) + advance % 3 };
                    row
                })
                .collect()
        })
    }

    /// What the sliced operator and the general one with the default trigger give for `input`
    /// over the windows of `assigner`.
    fn sliced_and_general(
        assigner: SlidingWindows,
        lateness: i64,
        input: &[(u8, i64, i64)],
    ) -> ((Rows, Vec<i64>), (Rows, Vec<i64>)) {
        let spec = WindowAssigner::<i64>::slicing(&assigner).unwrap();
        let sliced = run(SlicedCore::new(spec, lateness, true, Arc::new(Sum)), input);
        let settings = WindowSettings {
            trigger: WindowAssigner::<i64>::default_trigger(&assigner),
            assigner: Arc::new(assigner) as Arc<dyn WindowAssigner<i64>>,
            allowed_lateness_ms: lateness,
            per_record_watermarks: true,
        };
        let general = run(WindowCore::new(settings, Aggregating(Arc::new(Sum))), input);
        (sliced, general)
    }

    /// `(key, time, stamp)` of up to 120 keys over time that moves on (about 40 ms per element,
    /// up to a second out of order): keys come, go idle and come back, so both operators release
    /// idle keys and intern them again.
    fn flowing_input() -> impl Strategy<Value = Vec<(u8, i64, i64)>> {
        prop::collection::vec((0u8..120, 0i64..2_000, 0i64..80), 0..600).prop_map(|raw| {
            let (mut stamp, mut now) = (i64::MIN, 0);
            raw.into_iter()
                .map(|(key, jitter, step)| {
                    now += step;
                    let time = now + jitter - 1_000;
                    let row = (key, time, stamp);
                    stamp = stamp.max(time - 1_000);
                    row
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Many keys that come and go, so that idle keys are released and their ids reused: the
        /// sliced operator still gives exactly the general operator's firings and late elements.
        #[test]
        fn releasing_idle_keys_changes_no_result(
            input in flowing_input(),
            size in 1i64..6,
            slide in 1i64..6,
            lateness in prop::sample::select(vec![0i64, 300]),
        ) {
            let assigner = SlidingWindows::new(size * 100, slide * 100, 0, TimeDomain::EventTime).unwrap();
            let (sliced, general) = sliced_and_general(assigner, lateness, &input);
            prop_assert_eq!(sliced, general);
        }

        /// The sliced operator gives exactly the general operator's firings and late elements,
        /// for every size/slide ratio (also size < slide, with gaps), offset and lateness.
        #[test]
        fn sliced_equals_general(
            input in input(),
            size in 1i64..12,
            slide in 1i64..12,
            tumbling in any::<bool>(),
            offset_steps in 0i64..12,
            lateness in prop::sample::select(vec![0i64, 100, 400, 1_500]),
        ) {
            // Half the cases tumbling: those fire and drop a slice in one walk.
            let slide = if tumbling { size } else { slide };
            let (size_ms, slide_ms) = (size * 100, slide * 100);
            let offset_ms = (offset_steps * 100) % slide_ms;
            let assigner = SlidingWindows::new(size_ms, slide_ms, offset_ms, TimeDomain::EventTime).unwrap();
            let (sliced, general) = sliced_and_general(assigner, lateness, &input);
            prop_assert_eq!(sliced, general);
        }

        /// A result merges its window's slices oldest first, in on-time and late firings alike, so
        /// that a merge that is not commutative (here: appending lists) sees them in time order.
        #[test]
        fn results_merge_their_slices_oldest_first(
            input in input(),
            size in 1i64..8,
            slide in 1i64..8,
            lateness in prop::sample::select(vec![0i64, 400, 1_500]),
        ) {
            let spec = SliceSpec { size_ms: size * 100, slide_ms: slide * 100, offset_ms: 0 };
            let mut core: SlicedCore<u8, i64, Times> = SlicedCore::new(spec, lateness, true, Arc::new(Times));
            let (mut results, mut late) = (Vec::new(), Vec::new());
            let mut emit = Emit { results: &mut results, late: &mut late };
            for &(key, time_ms, stamp_ms) in &input {
                core.on_element(key, Record::new(time_ms, stamp_ms, time_ms), &mut emit);
            }
            core.advance_watermark(i64::MAX, &mut emit);
            for result in &results {
                let slices: Vec<i64> = result.value.value.iter().map(|time| time.div_euclid(spec.slice_ms())).collect();
                prop_assert!(
                    slices.is_sorted(),
                    "key {} window {:?} merged slices in the order {:?}",
                    result.value.key,
                    result.value.window,
                    slices
                );
            }
        }

        /// Slicing's promise, counted rather than timed: each element the windows take is added
        /// once, to one slice, however many windows it is in (`size / slide`), and a result
        /// merges at most the slices of one window. The per-element work does not grow with the
        /// windows; only the firing does, with the results.
        #[test]
        fn each_element_is_added_once_whatever_its_number_of_windows(
            input in input(),
            size in 1i64..12,
            slide in 1i64..12,
            offset_steps in 0i64..12,
            lateness in prop::sample::select(vec![0i64, 400, 1_500]),
        ) {
            let (size_ms, slide_ms) = (size * 100, slide * 100);
            let spec = SliceSpec { size_ms, slide_ms, offset_ms: (offset_steps * 100) % slide_ms };
            let function = Arc::new(Counted::default());
            let (rows, late) = run(SlicedCore::new(spec, lateness, true, Arc::clone(&function)), &input);
            let calls = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            prop_assert_eq!(calls(&function.adds), (input.len() - late.len()) as u64, "adds per element taken");
            prop_assert!(calls(&function.creates) <= calls(&function.adds), "a slice is made by an element");
            let slices_per_window = (size_ms / spec.slice_ms()) as u64;
            prop_assert!(
                calls(&function.merges) <= rows.len() as u64 * (slices_per_window - 1),
                "{} merges for {} results of {} slices", calls(&function.merges), rows.len(), slices_per_window
            );
        }
    }

    /// The values of a result's elements, in the order its accumulator took them.
    struct Times;

    impl AggregateFunction<i64> for Times {
        type Accumulator = Vec<i64>;
        type Output = Vec<i64>;
        fn create_accumulator(&self) -> Vec<i64> {
            Vec::new()
        }
        fn add(&self, accumulator: &mut Vec<i64>, value: &i64) {
            accumulator.push(*value);
        }
        fn merge(&self, accumulator: &mut Vec<i64>, other: Vec<i64>) {
            accumulator.extend(other);
        }
        fn result(&self, accumulator: &Vec<i64>) -> Vec<i64> {
            accumulator.clone()
        }
    }

    /// [`Sum`], counting the calls.
    #[derive(Default)]
    struct Counted {
        creates: AtomicU64,
        adds: AtomicU64,
        merges: AtomicU64,
    }

    impl AggregateFunction<i64> for Counted {
        type Accumulator = (i64, i64);
        type Output = (i64, i64);
        fn create_accumulator(&self) -> (i64, i64) {
            self.creates.fetch_add(1, Ordering::Relaxed);
            Sum.create_accumulator()
        }
        fn add(&self, acc: &mut (i64, i64), value: &i64) {
            self.adds.fetch_add(1, Ordering::Relaxed);
            Sum.add(acc, value);
        }
        fn merge(&self, acc: &mut (i64, i64), other: (i64, i64)) {
            self.merges.fetch_add(1, Ordering::Relaxed);
            Sum.merge(acc, other);
        }
        fn result(&self, acc: &(i64, i64)) -> (i64, i64) {
            Sum.result(acc)
        }
    }

    /// Feeds `input` with a snapshot after `cut` elements: the snapshot is restored on
    /// `parallelism` new operators (each taking its key groups), which get the rest of the input
    /// by key group. Returns all firings and late elements, sorted.
    fn run_restored<E: KeyedEngine<u8, i64, Output = WindowResult<u8, (i64, i64)>>>(
        make: impl Fn() -> E,
        snapshot: impl Fn(&E) -> Vec<u8>,
        restore: impl Fn(&mut E, &[Vec<u8>], std::ops::Range<u32>),
        input: &[(u8, i64, i64)],
        cut: usize,
        parallelism: usize,
    ) -> (Rows, Vec<i64>) {
        use crate::state::{key_group_range, worker_for_key};
        let (mut results, mut late) = (Vec::new(), Vec::new());
        let mut emit = Emit { results: &mut results, late: &mut late };
        let mut first = make();
        for &(key, time_ms, stamp_ms) in &input[..cut] {
            first.on_element(key, Record::new(time_ms, stamp_ms, time_ms), 0, &mut emit).unwrap();
        }
        let bytes = vec![snapshot(&first)];
        drop(first);
        let mut restored: Vec<E> = (0..parallelism)
            .map(|worker| {
                let mut engine = make();
                restore(&mut engine, &bytes, key_group_range(worker, 128, parallelism));
                engine
            })
            .collect();
        for &(key, time_ms, stamp_ms) in &input[cut..] {
            let worker = worker_for_key(&key, 128, parallelism);
            restored[worker].on_element(key, Record::new(time_ms, stamp_ms, time_ms), 0, &mut emit).unwrap();
        }
        for engine in &mut restored {
            engine.advance_watermark(i64::MAX, 0, &mut emit);
        }
        let mut rows: Rows =
            results.iter().map(|r| (r.value.key, r.value.window.start, r.value.window.end, r.value.value)).collect();
        rows.sort();
        let mut late: Vec<i64> = late.iter().map(|r| r.time_ms).collect();
        late.sort();
        (rows, late)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Snapshot mid-run, restore on 1, 2 or 3 operators, go on: the same firings as a run
        /// without the interruption, for the sliced and the general operator (sessions too).
        #[test]
        fn a_restored_window_operator_goes_on_as_if_never_stopped(
            input in input(),
            cut_fraction in 0.0f64..1.0,
            parallelism in 1usize..4,
            lateness in prop::sample::select(vec![0i64, 400]),
            sessions in any::<bool>(),
            tumbling in any::<bool>(),
        ) {
            let cut = (input.len() as f64 * cut_fraction) as usize;
            let slide_ms = if tumbling { 500 } else { 200 };
            let assigner = SlidingWindows::new(500, slide_ms, 0, TimeDomain::EventTime).unwrap();
            let spec = WindowAssigner::<i64>::slicing(&assigner).unwrap();
            let make_sliced = || SlicedCore::new(spec, lateness, true, Arc::new(Sum));
            let expected = run(make_sliced(), &input);
            let restored = run_restored(
                make_sliced,
                |core| core.snapshot(128),
                |core, bytes, groups| core.restore(bytes, groups).unwrap(),
                &input,
                cut,
                parallelism,
            );
            prop_assert_eq!(restored, expected);

            let general_assigner: Arc<dyn WindowAssigner<i64>> = if sessions {
                Arc::new(crate::window::SessionWindows::with_gap(300, TimeDomain::EventTime).unwrap())
            } else {
                Arc::new(assigner)
            };
            let make_general = || {
                let settings = WindowSettings {
                    trigger: general_assigner.default_trigger(),
                    assigner: Arc::clone(&general_assigner),
                    allowed_lateness_ms: lateness,
                    per_record_watermarks: true,
                };
                WindowCore::new(settings, Aggregating(Arc::new(Sum)))
            };
            let expected = run(make_general(), &input);
            let restored = run_restored(
                make_general,
                |core| core.snapshot(128),
                |core, bytes, groups| core.restore(bytes, groups).unwrap(),
                &input,
                cut,
                parallelism,
            );
            prop_assert_eq!(restored, expected);
        }
    }

    #[test]
    fn a_window_late_fired_in_a_gap_configuration_fires_once() {
        // size 100 < slide 300: 1000 and 1050 fall between windows; 650 arrives at watermark 699,
        // late for [600, 700) but within the 400 ms lateness: one late firing, never a second.
        let assigner = SlidingWindows::new(100, 300, 0, TimeDomain::EventTime).unwrap();
        let spec = WindowAssigner::<i64>::slicing(&assigner).unwrap();
        let (rows, late) = run(
            SlicedCore::new(spec, 400, true, Arc::new(Sum)),
            &[(0, 1_000, i64::MIN), (0, 650, 699), (0, 1_050, 699)],
        );
        assert_eq!(rows, vec![(0, 600, 700, (1, 650))]);
        assert_eq!(late, vec![1_000, 1_050]);
    }
}
