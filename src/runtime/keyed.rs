//! The timely side of keyed operators: one generic operator that runs any [`KeyedEngine`].

use std::rc::Rc;
use std::time::Duration;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::api::{Data, Key, OperatorKind, Partitioning, Stream};
use crate::error::Result;
use crate::metrics::OperatorMetrics;
use crate::time::{Record, Time, frontier_watermark};

/// Where a keyed operator's results and late elements go.
pub struct Emit<'a, D, O> {
    /// Results, as records.
    pub results: &'a mut Vec<Record<O>>,
    /// Elements too late for every window.
    pub late: &'a mut Vec<Record<D>>,
}

/// The logic of a keyed operator, free of timely: it is driven by elements, watermarks and the
/// clock, and says what to emit. Windows ([`WindowCore`](crate::window::WindowCore), the sliced
/// operator) and process functions implement it; [`keyed_operator`] runs any of them in timely.
pub trait KeyedEngine<K, D>: 'static {
    /// What it emits.
    type Output: Data;
    /// Processes one element of `key` arriving at processing time `now_ms`.
    fn on_element(
        &mut self,
        key: K,
        record: Record<D>,
        now_ms: i64,
        emit: &mut Emit<'_, D, Self::Output>,
    ) -> Result<()>;
    /// Advances the watermark (a lower one is ignored).
    fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut Emit<'_, D, Self::Output>);
    /// Fires processing-time timers due before `now_ms`.
    fn advance_processing_time(&mut self, now_ms: i64, emit: &mut Emit<'_, D, Self::Output>);
    /// The earliest pending processing-time timer.
    fn next_processing_timer(&self) -> Option<i64>;
    /// The operator's watermark.
    fn watermark_ms(&self) -> i64;
}

/// What a keyed operator produces: its results and the elements it found too late.
pub struct KeyedOutput<'scope, O, D> {
    /// The results.
    pub results: Stream<'scope, O>,
    /// Elements too late for the operator (windows); empty for others.
    pub late: Stream<'scope, D>,
}

/// Runs `core` as a timely operator on every worker: exchanges `input` by key (through the
/// simulated network when the simulator has one), feeds the core elements, the frontier watermark
/// and the clock, and emits what it says at capabilities held at the input frontier.
pub fn keyed_operator<'scope, K, D, E, P>(
    input: Stream<'scope, D>,
    pact: P,
    name: &str,
    kind: OperatorKind,
    key: Rc<dyn Fn(&D) -> K>,
    core: E,
) -> KeyedOutput<'scope, E::Output, D>
where
    K: Key,
    D: Data,
    E: KeyedEngine<K, D>,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
{
    match input.env.context().network.clone() {
        Some(network) => keyed_operator_on(input, network.delayed(pact), name, kind, key, core),
        None => keyed_operator_on(input, pact, name, kind, key, core),
    }
}

fn keyed_operator_on<'scope, K, D, E, P>(
    input: Stream<'scope, D>,
    pact: P,
    name: &str,
    kind: OperatorKind,
    key: Rc<dyn Fn(&D) -> K>,
    mut core: E,
) -> KeyedOutput<'scope, E::Output, D>
where
    K: Key,
    D: Data,
    E: KeyedEngine<K, D>,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
{
    let env = input.env.clone();
    let node = env.add_node(name, kind, &[(input.node, Partitioning::Hash)]);
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
        let mut results: Vec<Record<E::Output>> = Vec::new();
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

    KeyedOutput {
        results: Stream::new(env.clone(), results_stream, node, false),
        late: Stream::new(env, late_stream, late_node, false),
    }
}
