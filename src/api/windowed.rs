//! `WindowedStream`: a keyed stream cut into windows (Flink's `WindowedStream`), and the timely
//! operator that runs a [`WindowCore`] per worker.

use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator as _;

use super::{Data, Key, KeyedStream, OperatorKind, Partitioning, Stream};
use crate::metrics::OperatorMetrics;
use crate::runtime::keyed_operator;
use crate::time::Record;
use crate::window::{
    AggregateFunction, Aggregating, CountEvictor, CountTrigger, Evictor, GlobalWindows, LocalFold, MergePartials,
    Partial, ProcessWindowFunction, Processing, PurgingTrigger, ReduceAggregate, SlicedCore, Trigger, WindowAssigner,
    WindowCore, WindowLogic, WindowResult, WindowSettings,
};

/// What a window operator produces: its results, and the elements too late for every window.
pub struct WindowOutput<'scope, K, R, D> {
    /// One record per firing, at event time `window.max_timestamp()`.
    pub results: Stream<'scope, WindowResult<K, R>>,
    /// Elements dropped from every window they belong to (Flink's `sideOutputLateData`).
    pub late: Stream<'scope, D>,
}

/// A keyed stream with a window assigner, and optionally a trigger, evictor and allowed lateness.
pub struct WindowedStream<'scope, K, D> {
    keyed: KeyedStream<'scope, K, D>,
    assigner: Arc<dyn WindowAssigner<D>>,
    trigger: Option<Arc<dyn Trigger<D>>>,
    evictor: Option<Arc<dyn Evictor<D>>>,
    allowed_lateness_ms: i64,
}

impl<'scope, K: Key, D: Data> KeyedStream<'scope, K, D> {
    /// Cuts the stream into windows (Flink's `window`).
    pub fn window(self, assigner: impl WindowAssigner<D>) -> WindowedStream<'scope, K, D> {
        WindowedStream {
            keyed: self,
            assigner: Arc::new(assigner),
            trigger: None,
            evictor: None,
            allowed_lateness_ms: 0,
        }
    }

    /// Windows of `size` elements per key, fired and purged when full (Flink's `countWindow(size)`:
    /// global windows with a purging count trigger). Incomplete windows never fire.
    pub fn count_window(self, size: i64) -> WindowedStream<'scope, K, D> {
        self.window(GlobalWindows).trigger(PurgingTrigger::of(Arc::new(CountTrigger::of(size))))
    }

    /// The last `size` elements per key, every `slide` elements (Flink's `countWindow(size, slide)`:
    /// global windows, a count evictor and a count trigger).
    pub fn count_window_sliding(self, size: i64, slide: i64) -> WindowedStream<'scope, K, D> {
        let keep = usize::try_from(size).expect("a count window size must be positive");
        self.window(GlobalWindows).trigger(CountTrigger::of(slide)).evictor(CountEvictor::of(keep))
    }
}

impl<'scope, K: Key, D: Data> WindowedStream<'scope, K, D> {
    /// Replaces the assigner's default trigger.
    pub fn trigger(mut self, trigger: impl Trigger<D>) -> Self {
        self.trigger = Some(Arc::new(trigger));
        self
    }

    /// Removes elements around each firing; the window then keeps all its elements.
    pub fn evictor(mut self, evictor: impl Evictor<D>) -> Self {
        self.evictor = Some(Arc::new(evictor));
        self
    }

    /// Keeps windows for `lateness_ms` after their end: late elements within it are added and fire
    /// the window again (Flink's `allowedLateness`). Default 0.
    pub fn allowed_lateness(mut self, lateness_ms: i64) -> Self {
        assert!(lateness_ms >= 0, "allowed lateness cannot be negative");
        self.allowed_lateness_ms = lateness_ms;
        self
    }

    /// Folds each window incrementally with `function` (Flink's `aggregate`). With an evictor the
    /// elements are kept and folded when the window fires, as Flink's evicting operator does.
    ///
    /// Event-time tumbling and sliding windows with the default trigger and no evictor run on the
    /// sliced operator ([`SlicedCore`]): same results, each element folded once.
    pub fn aggregate<A: AggregateFunction<D>>(self, function: A) -> WindowOutput<'scope, K, A::Output, D> {
        self.aggregate_evicted(function, true)
    }

    /// `aggregate`; with an evictor that empties a window, `fold_empty` says whether the window
    /// still emits the result of an empty accumulator (Flink's `AggregateApplyWindowFunction`
    /// does) or nothing (a reduce has no value to give).
    fn aggregate_evicted<A: AggregateFunction<D>>(
        self,
        function: A,
        fold_empty: bool,
    ) -> WindowOutput<'scope, K, A::Output, D> {
        if let (None, None, Some(spec)) = (&self.trigger, &self.evictor, self.assigner.slicing()) {
            let per_record = self.keyed.stream().in_source_order;
            let core = SlicedCore::new(spec, self.allowed_lateness_ms, per_record, Arc::new(function));
            let name = format!("window {} [event time] aggregate (sliced)", self.assigner.name());
            let (exchange, key) = (self.keyed.exchange(), self.keyed.key_fn());
            let output = keyed_operator(self.keyed.stream().clone(), exchange, &name, OperatorKind::Window, key, core);
            return WindowOutput { results: output.results, late: output.late };
        }
        match self.evictor.clone() {
            None => self.build(Aggregating(Arc::new(function)), "aggregate"),
            Some(evictor) => {
                let function = Arc::new(FoldAtFire { function, fold_empty });
                self.build(Processing { function, evictor: Some(evictor) }, "aggregate (evicting)")
            }
        }
    }

    /// [`aggregate`](Self::aggregate), with each worker folding its elements per key and slice
    /// before the key exchange, and the window operator merging what it receives (Flink SQL's
    /// local-global, or two-phase, aggregation: [`crate::window::LocalFold`] explains why the
    /// results are the same). It spreads the work on a hot key over the workers that read it,
    /// and far fewer records cross the exchange.
    ///
    /// It applies where the sliced operator does (event-time tumbling and sliding windows, the
    /// default trigger, no evictor) on a stream that is not in source order (parallel source
    /// instances, or a union). Anywhere else it is `aggregate`. `function`'s `merge` must agree
    /// with its `add`, as for any sliced window.
    pub fn aggregate_local_global<A>(self, function: A) -> WindowOutput<'scope, K, A::Output, D>
    where
        A: AggregateFunction<D>,
        A::Accumulator: Data,
    {
        let spec = match (&self.trigger, &self.evictor, self.assigner.slicing()) {
            (None, None, Some(spec)) if !self.keyed.stream().in_source_order => spec,
            _ => return self.aggregate(function),
        };
        let function = Arc::new(function);
        let key = self.keyed.key_fn();
        let partials = fold_locally(self.keyed.stream(), LocalFold::new(spec, Arc::clone(&function)), Rc::clone(&key));
        let keyed = partials.key_by(move |partial: &Partial<K, D, A::Accumulator>| match partial {
            Partial::Element(element) => key(element),
            Partial::Folded { key, .. } => key.clone(),
        });
        let core = SlicedCore::new(spec, self.allowed_lateness_ms, false, Arc::new(MergePartials(function)));
        let name = format!("window {} [event time] aggregate (sliced, global)", self.assigner.name());
        let (exchange, key) = (keyed.exchange(), keyed.key_fn());
        let output = keyed_operator(keyed.stream().clone(), exchange, &name, OperatorKind::Window, key, core);
        let late = output.late.map(|partial| match partial {
            Partial::Element(element) => element,
            Partial::Folded { .. } => unreachable!("a folded partial is on time for all its windows (see LocalFold)"),
        });
        WindowOutput { results: output.results, late: late.name("late elements") }
    }

    /// Reduces each window with `reduce` (Flink's `reduce`).
    pub fn reduce(self, reduce: impl Fn(&D, &D) -> D + Send + Sync + 'static) -> WindowOutput<'scope, K, D, D> {
        self.aggregate_evicted(ReduceAggregate::new(reduce), false)
    }

    /// Runs `function` over all elements of each firing window (Flink's `process`).
    pub fn process<P: ProcessWindowFunction<K, D>>(self, function: P) -> WindowOutput<'scope, K, P::Output, D> {
        let evictor = self.evictor.clone();
        self.build(Processing { function: Arc::new(function), evictor }, "process")
    }

    fn build<L>(self, logic: L, what: &str) -> WindowOutput<'scope, K, L::Output, D>
    where
        L: WindowLogic<K, D>,
    {
        let trigger = self.trigger.clone().unwrap_or_else(|| self.assigner.default_trigger());
        if self.assigner.is_merging() && !trigger.can_merge() {
            // Flink rejects this when the job is built; flowlab fails the job with the reason.
            self.keyed.stream().env.context().failure.fail(crate::error::Error::Usage(format!(
                "trigger {:?} cannot merge windows, so it cannot be used with merging (session) windows",
                trigger.name()
            )));
        }
        let settings = WindowSettings {
            assigner: Arc::clone(&self.assigner),
            trigger: Arc::clone(&trigger),
            allowed_lateness_ms: self.allowed_lateness_ms,
            per_record_watermarks: self.keyed.stream().in_source_order,
        };
        let name = format!("window {} [{}] {what}", self.assigner.name(), trigger.name());
        let exchange = self.keyed.exchange();
        let key = self.keyed.key_fn();
        let core = WindowCore::new(settings, logic);
        let output = keyed_operator(self.keyed.stream().clone(), exchange, &name, OperatorKind::Window, key, core);
        WindowOutput { results: output.results, late: output.late }
    }
}

/// The local stage of [`WindowedStream::aggregate_local_global`]: `fold` applied to each batch of
/// `stream` on its own worker, the results at the batch's time.
fn fold_locally<'scope, K: Key, D: Data, A>(
    stream: &Stream<'scope, D>,
    mut fold: LocalFold<K, D, A>,
    key: Rc<dyn Fn(&D) -> K>,
) -> Stream<'scope, Partial<K, D, A::Accumulator>>
where
    A: AggregateFunction<D>,
    A::Accumulator: Data,
{
    let name = "window pre-aggregate (local)";
    let node = stream.env.add_node(name, OperatorKind::Window, &[(stream.node, Partitioning::Forward)]);
    let metrics = stream.env.metrics(node, name);
    let timely = stream.stream.clone().unary(Pipeline, name, move |_capability, _info| {
        move |input, output| {
            input.for_each(|time, batch: &mut Vec<Record<D>>| {
                OperatorMetrics::add(&metrics.records_in, batch.len());
                let mut partials = Vec::with_capacity(batch.len());
                fold.fold_batch(batch, &*key, &mut partials);
                OperatorMetrics::add(&metrics.records_out, partials.len());
                output.session(&time).give_container(&mut partials);
            });
        }
    });
    Stream::new(stream.env.clone(), timely, node, false)
}

/// An aggregate over the elements left after eviction, computed when the window fires.
struct FoldAtFire<A> {
    function: A,
    fold_empty: bool,
}

impl<K, D: Data, A: AggregateFunction<D>> ProcessWindowFunction<K, D> for FoldAtFire<A> {
    type Output = A::Output;

    fn process(
        &self,
        _key: &K,
        _window: &crate::window::Window,
        _watermark_ms: i64,
        elements: &[(i64, D)],
        out: &mut Vec<A::Output>,
    ) {
        if elements.is_empty() && !self.fold_empty {
            return;
        }
        let mut accumulator = self.function.create_accumulator();
        for (_, value) in elements {
            self.function.add(&mut accumulator, value);
        }
        out.push(self.function.result(&accumulator));
    }
}
