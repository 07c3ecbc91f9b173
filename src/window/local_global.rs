//! Local-global aggregation: each worker folds the elements of an input batch per key and slice
//! *before* the key exchange, and the window operator merges the partial accumulators it receives
//! (Flink SQL's two-phase aggregation, `LocalSlicingWindowAggregate` followed by
//! `GlobalSlicingWindowAggregate`).
//!
//! Why: a hot key sends every one of its elements to one worker, which then does that key's work
//! alone, and every element crosses the exchange. Folded first, a batch of a thousand bids, half
//! of them for one hot auction, crosses as one partial for that auction and one for each other
//! auction, and the work on the hot key is spread over the workers that read it.
//!
//! # When folding cannot change a result
//!
//! The sliced operator ([`SlicedCore`](super::SlicedCore)) puts an element into one slice, and a
//! window's result merges the accumulators of its slices. Every element of one slice belongs to
//! the same windows, so merging a partial of several elements of a slice gives the slice the same
//! accumulator as adding them one by one — if each of them would have been added, and to every
//! window of the slice. That is what the local stage checks, per element, by its own stamp (the
//! watermark its source had emitted before it, which is what the window operator judges it by):
//!
//! * it folds an element only if the stamp is before the end of the element's *earliest* window
//!   (`stamp < max_timestamp`): then no window of the element has fired or is past its cleanup
//!   time, and none fires late for it;
//! * every other element (late for some window, in a gap between windows, or without a
//!   timestamp) crosses the exchange as it is, and the window operator judges it as always.
//!
//! A partial carries the least stamp of its elements, travels at the timely time of the batch it
//! came from (never later than any of its elements' stamps plus one, the invariant every window
//! relies on), and so reaches the window operator before the watermark can pass any of its
//! windows: its windows take it whole, exactly as they would have taken its elements.
//!
//! Two conditions remain, and the API checks the first:
//!
//! * The stream must not be in source order. A window operator fed by one source instance
//!   advances its watermark with each record's stamp, so a record behind a partial could fire a
//!   window before the partial holding earlier elements is merged; such streams are aggregated
//!   as usual.
//! * The function's `merge` must agree with `add` (merging the accumulators of two parts gives the
//!   accumulator of the whole), as for any sliced window and any parallel source.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::assigner::window_start_with_offset;
use super::function::AggregateFunction;
use super::sliced::SliceSpec;
use crate::state::LookupHasher;
use crate::time::Record;

/// What crosses the exchange when a window aggregates local-global: an element as it is, or the
/// accumulator of several elements of one key and slice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partial<K, D, A> {
    /// An element the local stage did not fold (late for some window, or alone): the window
    /// operator judges it as any element.
    Element(D),
    /// Elements of `key` in one slice, folded into `accumulator`; on time for all their windows.
    Folded {
        /// Their key.
        key: K,
        /// Their accumulator.
        accumulator: A,
    },
}

/// The local stage of one worker: folds a batch's foldable elements per key and slice.
pub struct LocalFold<K, D, A: AggregateFunction<D>> {
    spec: SliceSpec,
    slice_ms: i64,
    function: Arc<A>,
    /// `(key, slice start) → place of its partial in the batch's output`. Only looked up, never
    /// iterated, and emptied after each batch.
    partials: HashMap<(K, i64), usize, BuildHasherDefault<LookupHasher>>,
    /// The last slice an element fell in: `(start, end, its earliest window's max timestamp)`.
    /// Elements come nearly in time order, so most fall in it and need no division.
    recent_slice: Option<(i64, i64, i64)>,
    marker: std::marker::PhantomData<fn(D)>,
}

impl<K: Hash + Eq + Clone, D, A: AggregateFunction<D>> LocalFold<K, D, A> {
    /// A local stage for windows `spec` aggregated by `function`.
    pub fn new(spec: SliceSpec, function: Arc<A>) -> Self {
        LocalFold {
            spec,
            slice_ms: spec.slice_ms(),
            function,
            partials: HashMap::default(),
            recent_slice: None,
            marker: Default::default(),
        }
    }

    /// The start of the slice of an element at `time_ms`, if the element is on time for every
    /// window it is in by its stamp `stamp_ms`, so that no window can fire before it is added:
    /// the end of its earliest window is after the stamp.
    fn foldable_slice(&mut self, time_ms: i64, stamp_ms: i64) -> Option<i64> {
        if time_ms == i64::MIN {
            // Flink's "no timestamp": the window operator reports it.
            return None;
        }
        let (start, _, max_timestamp) = match self.recent_slice {
            Some(slice @ (start, end, _)) if start <= time_ms && time_ms < end => slice,
            _ => {
                let first_window = self.spec.first_window_start(time_ms)?;
                let start = window_start_with_offset(time_ms, self.spec.offset_ms, self.slice_ms);
                let end = start.checked_add(self.slice_ms)?;
                let slice = (start, end, first_window.saturating_add(self.spec.size_ms).saturating_sub(1));
                // Every time of a slice is in the same windows: it can stand for all of them.
                if start <= time_ms {
                    self.recent_slice = Some(slice);
                }
                slice
            }
        };
        (stamp_ms < max_timestamp).then_some(start)
    }

    /// Moves the records of `batch` into `out`: foldable elements as one [`Partial::Folded`] per
    /// key and slice (where the first of them was, at its time, with the least stamp of them),
    /// the others as [`Partial::Element`]s, in their order.
    pub fn fold_batch(
        &mut self,
        batch: &mut Vec<Record<D>>,
        key: &dyn Fn(&D) -> K,
        out: &mut Vec<Record<Partial<K, D, A::Accumulator>>>,
    ) {
        for record in batch.drain(..) {
            let Some(slice) = self.foldable_slice(record.time_ms, record.watermark_ms) else {
                out.push(Record::new(record.time_ms, record.watermark_ms, Partial::Element(record.value)));
                continue;
            };
            let record_key = key(&record.value);
            match self.partials.entry((record_key, slice)) {
                Entry::Occupied(at) => {
                    let partial = &mut out[*at.get()];
                    partial.watermark_ms = partial.watermark_ms.min(record.watermark_ms);
                    let Partial::Folded { accumulator, .. } = &mut partial.value else {
                        unreachable!("the table points at folded partials only")
                    };
                    self.function.add(accumulator, &record.value);
                }
                Entry::Vacant(entry) => {
                    let mut accumulator = self.function.create_accumulator();
                    self.function.add(&mut accumulator, &record.value);
                    let key = entry.key().0.clone();
                    entry.insert(out.len());
                    out.push(Record::new(record.time_ms, record.watermark_ms, Partial::Folded { key, accumulator }));
                }
            }
        }
        self.partials.clear();
    }
}

/// The global stage's aggregate: adds elements with `A`, and merges partials into the slice.
pub struct MergePartials<A>(pub Arc<A>);

impl<K, D, A> AggregateFunction<Partial<K, D, A::Accumulator>> for MergePartials<A>
where
    K: 'static,
    D: 'static,
    A: AggregateFunction<D>,
{
    type Accumulator = A::Accumulator;
    type Output = A::Output;

    fn create_accumulator(&self) -> Self::Accumulator {
        self.0.create_accumulator()
    }

    fn add(&self, accumulator: &mut Self::Accumulator, value: &Partial<K, D, A::Accumulator>) {
        match value {
            Partial::Element(element) => self.0.add(accumulator, element),
            Partial::Folded { accumulator: partial, .. } => self.0.merge(accumulator, partial.clone()),
        }
    }

    fn merge(&self, accumulator: &mut Self::Accumulator, other: Self::Accumulator) {
        self.0.merge(accumulator, other)
    }

    fn result(&self, accumulator: &Self::Accumulator) -> Self::Output {
        self.0.result(accumulator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::test_functions::Sum;
    use crate::window::{SlidingWindows, TimeDomain, Window, WindowAssigner};

    /// Windows of 10 ms every 4 ms (slices of 2 ms), offset 1.
    const SPEC: SliceSpec = SliceSpec { size_ms: 10, slide_ms: 4, offset_ms: 1 };

    #[test]
    fn first_window_start_is_the_assigners_earliest_window() {
        let assigner = SlidingWindows::new(SPEC.size_ms, SPEC.slide_ms, SPEC.offset_ms, TimeDomain::EventTime).unwrap();
        for time_ms in -50..50 {
            let mut windows: Vec<Window> = Vec::new();
            WindowAssigner::<i64>::assign(&assigner, &0, time_ms, 0, &mut windows).unwrap();
            let earliest = windows.iter().map(|window| window.start).min();
            assert_eq!(SPEC.first_window_start(time_ms), earliest, "time {time_ms}");
        }
        // Windows shorter than the slide leave gaps that no window covers.
        let gaps = SliceSpec { size_ms: 3, slide_ms: 5, offset_ms: 0 };
        assert_eq!(gaps.first_window_start(7), Some(5));
        assert_eq!(gaps.first_window_start(8), None);
    }

    #[test]
    fn folds_on_time_elements_per_key_and_slice_and_passes_the_rest() {
        let mut fold = LocalFold::new(SPEC, Arc::new(Sum));
        // (time, stamp, key*100 + value). Time 5 is in slice [5, 7) and its earliest window is
        // [-3, 7), whose max timestamp is 6.
        let mut batch = vec![
            Record::new(5, 0, 101),  // key 1, slice 5: folded
            Record::new(6, 2, 202),  // key 2, slice 5: folded
            Record::new(5, 1, 103),  // key 1, slice 5: into the first partial; the least stamp stays 0
            Record::new(7, 3, 104),  // key 1, slice 7: a new partial
            Record::new(5, 6, 105),  // stamp 6 is the earliest window's end: passed as it is
            Record::new(6, -9, 106), // key 1, slice 5 again, with a smaller stamp
        ];
        let mut out = Vec::new();
        fold.fold_batch(&mut batch, &|value: &i64| value / 100, &mut out);
        assert!(batch.is_empty());
        let folded =
            |time_ms, stamp, key, accumulator| Record::new(time_ms, stamp, Partial::Folded { key, accumulator });
        assert_eq!(
            out,
            vec![
                folded(5, -9, 1, (3, 1 + 3 + 6 + 300)),
                folded(6, 2, 2, (1, 202)),
                folded(7, 3, 1, (1, 104)),
                Record::new(5, 6, Partial::Element(105)),
            ]
        );
        // The table is per batch: the next batch starts new partials.
        let mut batch = vec![Record::new(5, 0, 107)];
        let mut next = Vec::new();
        fold.fold_batch(&mut batch, &|value: &i64| value / 100, &mut next);
        assert_eq!(next, vec![folded(5, 0, 1, (1, 107))]);
    }

    #[test]
    fn merging_partials_is_adding_their_elements() {
        type Input = Partial<u8, i64, (i64, i64)>;
        let merge = MergePartials(Arc::new(Sum));
        let mut accumulator = AggregateFunction::<Input>::create_accumulator(&merge);
        merge.add(&mut accumulator, &Input::Element(5));
        merge.add(&mut accumulator, &Input::Folded { key: 1, accumulator: (2, 7) });
        assert_eq!(AggregateFunction::<Input>::result(&merge, &accumulator), (3, 12));
    }
}
