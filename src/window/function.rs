//! Window functions: what a firing window emits.
//!
//! [`AggregateFunction`] folds elements into an accumulator as they arrive (Flink's
//! `AggregateFunction`; `reduce` is a special case) and keeps nothing else. A
//! [`ProcessWindowFunction`] sees every element of the window when it fires, together with the
//! window; it is the one that can be combined with an evictor. Both become a [`WindowLogic`],
//! which is what the operator stores per window.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::{Evictor, Window};
use crate::api::Data;

/// An incremental aggregation (Flink's `AggregateFunction`).
pub trait AggregateFunction<D>: Send + Sync + 'static {
    /// The accumulator.
    /// Accumulators are state: they are snapshotted with the window.
    type Accumulator: Clone + Serialize + DeserializeOwned + 'static;
    /// The result.
    type Output: Data;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Accumulator;
    /// Folds one element in.
    fn add(&self, accumulator: &mut Self::Accumulator, value: &D);
    /// Folds another accumulator in (session windows merge).
    fn merge(&self, accumulator: &mut Self::Accumulator, other: Self::Accumulator);
    /// The result of an accumulator.
    fn result(&self, accumulator: &Self::Accumulator) -> Self::Output;
}

/// `reduce` as an aggregation: the accumulator is the reduced value so far.
pub struct ReduceAggregate<D, F> {
    reduce: F,
    marker: PhantomData<fn(D) -> D>,
}

impl<D, F: Fn(&D, &D) -> D> ReduceAggregate<D, F> {
    /// Reduces with `reduce`.
    pub fn new(reduce: F) -> Self {
        ReduceAggregate { reduce, marker: PhantomData }
    }
}

impl<D: Data, F: Fn(&D, &D) -> D + Send + Sync + 'static> AggregateFunction<D> for ReduceAggregate<D, F> {
    type Accumulator = Option<D>;
    type Output = D;

    fn create_accumulator(&self) -> Option<D> {
        None
    }

    fn add(&self, accumulator: &mut Option<D>, value: &D) {
        *accumulator = Some(match accumulator.take() {
            None => value.clone(),
            Some(current) => (self.reduce)(&current, value),
        });
    }

    fn merge(&self, accumulator: &mut Option<D>, other: Option<D>) {
        if let Some(other) = other {
            self.add(accumulator, &other);
        }
    }

    fn result(&self, accumulator: &Option<D>) -> D {
        accumulator.clone().expect("a window that fires has at least one element")
    }
}

/// A function over all elements of a firing window (Flink's `ProcessWindowFunction`).
pub trait ProcessWindowFunction<K, D>: Send + Sync + 'static {
    /// What it emits.
    type Output: Data;
    /// Emits results for `window` of `key`, whose elements are `(event_time_ms, value)` in arrival
    /// order; `watermark_ms` is the operator's watermark.
    fn process(&self, key: &K, window: &Window, watermark_ms: i64, elements: &[(i64, D)], out: &mut Vec<Self::Output>);
}

impl<K, D, O, F> ProcessWindowFunction<K, D> for F
where
    O: Data,
    F: Fn(&K, &Window, &[(i64, D)]) -> O + Send + Sync + 'static,
{
    type Output = O;

    fn process(&self, key: &K, window: &Window, _watermark_ms: i64, elements: &[(i64, D)], out: &mut Vec<O>) {
        out.push(self(key, window, elements));
    }
}

/// What the window operator stores per window and how it emits. Built from an aggregate or a
/// process function; not usually implemented by hand.
pub trait WindowLogic<K, D>: 'static {
    /// Per-window contents.
    type Contents: Clone + Serialize + DeserializeOwned + 'static;
    /// What a firing emits.
    type Output: Data;
    /// Empty contents.
    fn empty(&self) -> Self::Contents;
    /// Adds one element.
    fn add(&self, contents: &mut Self::Contents, time_ms: i64, value: &D);
    /// Merges `other` into `contents` (session windows).
    fn merge(&self, contents: &mut Self::Contents, other: Self::Contents);
    /// Emits a firing; may change `contents` (evictors).
    fn emit(
        &self,
        key: &K,
        window: &Window,
        watermark_ms: i64,
        contents: &mut Self::Contents,
        out: &mut Vec<Self::Output>,
    );
    /// Whether `contents` hold nothing any more (an evictor removed every element); the window
    /// then has no contents, as Flink's evicting operator writes back an empty list state.
    fn is_empty(&self, _contents: &Self::Contents) -> bool {
        false
    }
}

/// Incremental aggregation: one accumulator per window.
pub struct Aggregating<A>(pub Arc<A>);

impl<K, D, A: AggregateFunction<D>> WindowLogic<K, D> for Aggregating<A> {
    type Contents = A::Accumulator;
    type Output = A::Output;

    fn empty(&self) -> A::Accumulator {
        self.0.create_accumulator()
    }

    fn add(&self, contents: &mut A::Accumulator, _time_ms: i64, value: &D) {
        self.0.add(contents, value);
    }

    fn merge(&self, contents: &mut A::Accumulator, other: A::Accumulator) {
        self.0.merge(contents, other);
    }

    fn emit(
        &self,
        _key: &K,
        _window: &Window,
        _watermark_ms: i64,
        contents: &mut A::Accumulator,
        out: &mut Vec<A::Output>,
    ) {
        out.push(self.0.result(contents));
    }
}

/// Full-window processing: every element is kept, in arrival order, with an optional evictor.
pub struct Processing<D, P> {
    /// The function.
    pub function: Arc<P>,
    /// The evictor, if any.
    pub evictor: Option<Arc<dyn Evictor<D>>>,
}

impl<K, D: Data, P: ProcessWindowFunction<K, D>> WindowLogic<K, D> for Processing<D, P> {
    type Contents = Vec<(i64, D)>;
    type Output = P::Output;

    fn empty(&self) -> Vec<(i64, D)> {
        Vec::new()
    }

    fn add(&self, contents: &mut Vec<(i64, D)>, time_ms: i64, value: &D) {
        contents.push((time_ms, value.clone()));
    }

    fn merge(&self, contents: &mut Vec<(i64, D)>, other: Vec<(i64, D)>) {
        contents.extend(other);
    }

    fn emit(
        &self,
        key: &K,
        window: &Window,
        watermark_ms: i64,
        contents: &mut Vec<(i64, D)>,
        out: &mut Vec<P::Output>,
    ) {
        if let Some(evictor) = &self.evictor {
            evictor.evict_before(contents, window);
        }
        self.function.process(key, window, watermark_ms, contents, out);
        if let Some(evictor) = &self.evictor {
            evictor.evict_after(contents, window);
        }
    }

    fn is_empty(&self, contents: &Vec<(i64, D)>) -> bool {
        contents.is_empty()
    }
}
