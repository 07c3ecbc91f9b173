//! `WindowedStream`: a keyed stream cut into windows (Flink's `WindowedStream`), and the timely
//! operator that runs a [`WindowCore`] per worker.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{Data, Key, KeyedStream, OperatorKind, Partitioning, Stream};
use crate::metrics::OperatorMetrics;
use crate::time::{Record, Time, frontier_watermark};
use crate::window::{
    AggregateFunction, Aggregating, CountEvictor, CountTrigger, Emit, Evictor, GlobalWindows, ProcessWindowFunction,
    Processing, PurgingTrigger, ReduceAggregate, SlicedCore, Trigger, WindowAssigner, WindowCore, WindowEngine,
    WindowLogic, WindowResult, WindowSettings,
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
        if let (None, None, Some(spec)) = (&self.trigger, &self.evictor, self.assigner.slicing()) {
            let per_record = self.keyed.stream().in_source_order;
            let core = SlicedCore::new(spec, self.allowed_lateness_ms, per_record, Arc::new(function));
            let name = format!("window {} [event time] aggregate (sliced)", self.assigner.name());
            let (exchange, key) = (self.keyed.exchange(), self.keyed.key_fn());
            return window_operator(self.keyed.stream().clone(), exchange, &name, key, core);
        }
        match self.evictor.clone() {
            None => self.build(Aggregating(Arc::new(function)), "aggregate"),
            Some(evictor) => {
                let function = Arc::new(FoldAtFire(function));
                self.build(Processing { function, evictor: Some(evictor) }, "aggregate (evicting)")
            }
        }
    }

    /// Reduces each window with `reduce` (Flink's `reduce`).
    pub fn reduce(self, reduce: impl Fn(&D, &D) -> D + Send + Sync + 'static) -> WindowOutput<'scope, K, D, D> {
        self.aggregate(ReduceAggregate::new(reduce))
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
        let settings = WindowSettings {
            assigner: Arc::clone(&self.assigner),
            trigger: Arc::clone(&trigger),
            allowed_lateness_ms: self.allowed_lateness_ms,
            per_record_watermarks: self.keyed.stream().in_source_order,
        };
        let name = format!("window {} [{}] {what}", self.assigner.name(), trigger.name());
        let exchange = self.keyed.exchange();
        let key = self.keyed.key_fn();
        window_operator(self.keyed.stream().clone(), exchange, &name, key, WindowCore::new(settings, logic))
    }
}

/// An aggregate over the elements left after eviction, computed when the window fires.
struct FoldAtFire<A>(A);

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
        let mut accumulator = self.0.create_accumulator();
        for (_, value) in elements {
            self.0.add(&mut accumulator, value);
        }
        out.push(self.0.result(&accumulator));
    }
}

fn window_operator<'scope, K, D, E, P>(
    input: Stream<'scope, D>,
    pact: P,
    name: &str,
    key: Rc<dyn Fn(&D) -> K>,
    mut core: E,
) -> WindowOutput<'scope, K, E::Output, D>
where
    K: Key,
    D: Data,
    E: WindowEngine<K, D>,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
{
    let env = input.env.clone();
    let node = env.add_node(name, OperatorKind::Window, &[(input.node, Partitioning::Hash)]);
    let late_node = env.add_node("late elements", OperatorKind::Inspect, &[(node, Partitioning::SideOutput("late"))]);
    let metrics = env.metrics(node, name);
    let context = env.context().clone();
    let mut builder = OperatorBuilder::new(name.to_string(), env.scope());
    let activator = env.scope().activator_for(builder.operator_info().address);
    let mut input_handle = builder.new_input(input.stream.clone(), pact);
    let (results_output, results_stream) = builder.new_output();
    let (late_output, late_stream) = builder.new_output();
    let mut results_output = OutputBuilder::from(results_output);
    let mut late_output = OutputBuilder::from(late_output);

    builder.build(move |mut capabilities| {
        let mut late_capabilities = CapabilitySet::from_elem(capabilities.pop().expect("two outputs"));
        let mut results_capabilities = CapabilitySet::from_elem(capabilities.pop().expect("two outputs"));
        let mut results: Vec<Record<WindowResult<K, E::Output>>> = Vec::new();
        let mut late: Vec<Record<D>> = Vec::new();
        move |frontiers| {
            let frontier = frontiers[0].frontier();
            let now_ms = context.clock.now_ms();
            let mut emit = Emit { results: &mut results, late: &mut late };
            input_handle.for_each(|_time, data: &mut Vec<Record<D>>| {
                OperatorMetrics::add(&metrics.records_in, data.len());
                for record in data.drain(..) {
                    if context.failure.is_failed() {
                        continue;
                    }
                    let key = key(&record.value);
                    if let Err(error) = core.on_element(key, record, now_ms, &mut emit) {
                        context.failure.fail(error);
                    }
                }
            });
            core.advance_watermark(frontier_watermark(frontier), now_ms, &mut emit);
            core.advance_processing_time(now_ms, &mut emit);
            metrics.set_watermark(core.watermark_ms());

            if !results.is_empty() {
                OperatorMetrics::add(&metrics.records_out, results.len());
                results_output.activate().session(&results_capabilities).give_iterator(results.drain(..));
            }
            if !late.is_empty() {
                OperatorMetrics::add(&metrics.records_late, late.len());
                late_output.activate().session(&late_capabilities).give_iterator(late.drain(..));
            }
            results_capabilities.downgrade(frontier.iter());
            late_capabilities.downgrade(frontier.iter());
            // Processing-time windows still open at the end of input are dropped, as in Flink's
            // streaming mode; until then, wake up for the next processing-time timer.
            if !frontier.is_empty()
                && let Some(next_ms) = core.next_processing_timer()
            {
                let delay_ms = (next_ms + 1 - context.clock.now_ms()).max(0) as u64;
                activator.activate_after(Duration::from_millis(delay_ms));
            }
        }
    });

    WindowOutput {
        results: Stream::new(env.clone(), results_stream, node, false),
        late: Stream::new(env, late_stream, late_node, false),
    }
}
