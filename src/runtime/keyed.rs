//! The timely side of keyed operators: one generic operator that runs any [`KeyedEngine`].

use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::Antichain;

use petgraph::graph::NodeIndex;
use timely::dataflow::StreamVec;

use crate::api::{Data, Env, Key, OperatorKind, Partitioning, Stream};
use crate::error::{Error, Result};
use crate::metrics::OperatorMetrics;
use crate::runtime::align::Aligner;
use crate::state::key_group_range;
use crate::state::snapshot::SnapshotError;
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
    /// Whether it can find elements too late (windows); the job graph shows a late side output
    /// only for those.
    const EMITS_LATE: bool = true;
    /// Processes one element of `key` arriving at processing time `now_ms`.
    fn on_element(
        &mut self,
        key: K,
        record: Record<D>,
        now_ms: i64,
        emit: &mut Emit<'_, D, Self::Output>,
    ) -> Result<()>;
    /// [`on_element`](Self::on_element) for a key announced with [`prefetch_far`](Self::prefetch_far),
    /// with the token that returned: an engine whose token is work it would otherwise do again
    /// (the key's hash) takes it from here. Default: `on_element`.
    fn on_element_announced(
        &mut self,
        key: K,
        _token: u64,
        record: Record<D>,
        now_ms: i64,
        emit: &mut Emit<'_, D, Self::Output>,
    ) -> Result<()> {
        self.on_element(key, record, now_ms, emit)
    }
    /// Advances the watermark (a lower one is ignored).
    fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut Emit<'_, D, Self::Output>);
    /// Fires processing-time timers due before `now_ms`.
    fn advance_processing_time(&mut self, now_ms: i64, emit: &mut Emit<'_, D, Self::Output>);
    /// The earliest pending processing-time timer.
    fn next_processing_timer(&self) -> Option<i64>;
    /// The operator's watermark.
    fn watermark_ms(&self) -> i64;
    /// A hint, never needed for correctness: an element of `key` arrives [`LOOKAHEAD_FAR`]
    /// elements from now. An engine whose per-key state is scattered over memory can start
    /// loading what finds it (an index); the token it returns comes back to `prefetch_near`.
    /// Default: nothing.
    fn prefetch_far(&self, _key: &K) -> u64 {
        0
    }
    /// The second hint for the same key, [`LOOKAHEAD_NEAR`] elements ahead: the index is in cache
    /// by now, so the engine can start loading the key's state itself. Default: nothing.
    fn prefetch_near(&self, _token: u64) {}
    /// The third hint for the same key, [`LOOKAHEAD_NEXT`] elements ahead: the key's state is in
    /// cache by now, so the engine can start loading what the state points to. Default: nothing.
    fn prefetch_next(&self, _token: u64) {}
    /// Snapshots the operator's state (by key group, see [`crate::state`]) for a checkpoint.
    fn snapshot(&self, max_parallelism: u32) -> Vec<u8>;
    /// Restores the key groups in `key_groups` from the snapshots of every old instance
    /// (restoring on another parallelism works); on error the operator is unchanged.
    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: Range<u32>) -> Result<(), SnapshotError>;
}

/// How many elements ahead a keyed operator announces a key first ([`KeyedEngine::prefetch_far`]).
pub const LOOKAHEAD_FAR: usize = 8;
/// How many elements ahead it announces the key again ([`KeyedEngine::prefetch_near`]).
pub const LOOKAHEAD_NEAR: usize = 3;
/// How many elements ahead it announces the key a third time ([`KeyedEngine::prefetch_next`]).
pub const LOOKAHEAD_NEXT: usize = 1;

/// Asks the CPU to bring the cache lines of `value` (its first 256 bytes at most) closer, without
/// waiting for them: what an engine's [`KeyedEngine::prefetch_near`] may do.
pub fn prefetch_memory<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = (value as *const T).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>().clamp(1, 256)).step_by(64) {
            // SAFETY: `_mm_prefetch` is only a hint: it reads nothing into the program, cannot
            // fault (not even on a bad address; these are inside a live reference), and needs SSE,
            // which every x86_64 CPU has. `wrapping_add` keeps the address arithmetic safe.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
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
    core: E,
) -> KeyedOutput<'scope, E::Output, D>
where
    K: Key,
    D: Data,
    E: KeyedEngine<K, D>,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
{
    let env = input.env.clone();
    let node = env.add_node(name, kind, &[(input.node, Partitioning::Hash)]);
    keyed_operator_at(&env, input.stream.clone(), pact, node, name, key, core)
}

/// The timely operator of a keyed operator whose job-graph node `node` the caller has added:
/// `input` goes through `pact` into `core`, with alignment, snapshots and restore. Operators that
/// merge several inputs into one (the broadcast process function) use it directly.
pub(crate) fn keyed_operator_at<'scope, K, D, E, P>(
    env: &Env<'scope>,
    input: StreamVec<'scope, Time, Record<D>>,
    pact: P,
    node: NodeIndex,
    name: &str,
    key: Rc<dyn Fn(&D) -> K>,
    mut core: E,
) -> KeyedOutput<'scope, E::Output, D>
where
    K: Key,
    D: Data,
    E: KeyedEngine<K, D>,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
{
    let env = env.clone();
    let late_node = if E::EMITS_LATE {
        env.add_node("late elements", OperatorKind::Inspect, &[(node, Partitioning::SideOutput("late"))])
    } else {
        node
    };
    let metrics = env.metrics(node, name);
    let context = env.context().clone();
    let mut aligner = Aligner::new(&context, node.index());
    if let Some(coordinator) = &context.checkpoints {
        let parts = coordinator.restored_parts(node.index());
        if coordinator.restored().is_some() {
            let key_groups = key_group_range(context.index, context.max_parallelism, context.peers);
            if let Err(error) = core.restore(&parts, key_groups) {
                context.failure.fail(Error::Runtime(format!("cannot restore operator {name:?}: {error}")));
            }
        }
    }
    let mut builder = OperatorBuilder::new(name.to_string(), env.scope());
    let activator = env.scope().activator_for(builder.operator_info().address);
    let mut input_handle = builder.new_input(input, pact);
    let (results_output, results_stream) = builder.new_output();
    let (late_output, late_stream) = builder.new_output();
    let mut results_output = OutputBuilder::from(results_output);
    let mut late_output = OutputBuilder::from(late_output);

    builder.build(move |mut capabilities| {
        let mut late_capabilities = CapabilitySet::from_elem(capabilities.pop().expect("two outputs"));
        let mut results_capabilities = CapabilitySet::from_elem(capabilities.pop().expect("two outputs"));
        let mut results: Vec<Record<E::Output>> = Vec::new();
        let mut late: Vec<Record<D>> = Vec::new();
        let mut finished = false;
        let mut last_watermark_ms = crate::time::WATERMARK_MIN;
        let name = name.to_string();
        // Downgrades both capability sets to `hold` and emits what is pending at the open epoch's
        // capability; with an empty `hold` (the instance is done) it emits first, then lets go.
        macro_rules! flush {
            ($hold:expr) => {{
                let hold: Antichain<Time> = $hold;
                if !hold.is_empty() {
                    results_capabilities.downgrade(hold.iter());
                    late_capabilities.downgrade(hold.iter());
                }
                if !results.is_empty() {
                    OperatorMetrics::add(&metrics.records_out, results.len());
                    let capability = aligner.emitting(&results_capabilities);
                    // One message, not a copy of each result into timely's buffers. Timely takes
                    // the vector and may leave anything in it. No new one is reserved here: a
                    // firing of a million keys would hold two vectors of its size at once, and
                    // the sliced operator reserves what a firing needs when it fires.
                    results_output.activate().session(capability).give_container(&mut results);
                    results.clear();
                }
                if !late.is_empty() {
                    OperatorMetrics::add(&metrics.records_late, late.len());
                    let capability = aligner.emitting(&late_capabilities);
                    late_output.activate().session(capability).give_iterator(late.drain(..));
                }
                if hold.is_empty() {
                    results_capabilities.downgrade(Vec::<Time>::new());
                    late_capabilities.downgrade(Vec::<Time>::new());
                }
            }};
        }
        move |frontiers| {
            if finished {
                // Done: the capabilities are gone, and processing-time windows still open at the
                // end of input are dropped, as in Flink's streaming mode.
                input_handle.for_each(|_capability, data: &mut Vec<Record<D>>| data.clear());
                return;
            }
            let input_frontier = frontiers[0].frontier();
            let frontier = aligner.frontier(input_frontier, finished);
            let frontier = frontier.borrow();
            let now_ms = context.clock.now_ms();
            let apply = |core: &mut E, data: &mut Vec<Record<D>>, emit: &mut Emit<'_, D, E::Output>| {
                // The next `LOOKAHEAD_FAR` records' keys are announced to the core ahead of their
                // records (see `KeyedEngine::prefetch_far`); the keys and their tokens wait here,
                // so that each key is computed once.
                let mut announced: VecDeque<(K, u64)> = VecDeque::with_capacity(LOOKAHEAD_FAR + 1);
                let announce = |announced: &mut VecDeque<(K, u64)>, core: &E, value: &D| {
                    let key = key(value);
                    let token = core.prefetch_far(&key);
                    announced.push_back((key, token));
                };
                let mut records = data.drain(..);
                for ahead in records.as_slice().iter().take(LOOKAHEAD_FAR) {
                    announce(&mut announced, core, &ahead.value);
                }
                while let Some(record) = records.next() {
                    if let Some(ahead) = records.as_slice().get(LOOKAHEAD_FAR - 1) {
                        announce(&mut announced, core, &ahead.value);
                    }
                    if let Some((_, token)) = announced.get(LOOKAHEAD_NEAR) {
                        core.prefetch_near(*token);
                    }
                    if let Some((_, token)) = announced.get(LOOKAHEAD_NEXT) {
                        core.prefetch_next(*token);
                    }
                    let (key, token) = announced.pop_front().expect("every record is announced before its turn");
                    if context.failure.is_failed() {
                        continue;
                    }
                    if let Err(error) = core.on_element_announced(key, token, record, now_ms, emit) {
                        context.failure.fail(error);
                    }
                }
            };
            input_handle.for_each(|capability, data: &mut Vec<Record<D>>| {
                OperatorMetrics::add(&metrics.records_in, data.len());
                if !aligner.hold(capability.stamp().iter(), data, now_ms) {
                    apply(&mut core, data, &mut Emit { results: &mut results, late: &mut late });
                }
            });
            loop {
                // Fire what the watermark allows. Buffered records of the next epoch hold it back:
                // they are not applied yet, and a window must not fire before they are.
                let hold = aligner.hold_frontier(frontier);
                let watermark_ms = frontier_watermark(hold.borrow());
                // Progress tracking and alignment together must never move a watermark back.
                assert!(
                    watermark_ms >= last_watermark_ms,
                    "{name}: watermark regressed from {last_watermark_ms} to {watermark_ms}"
                );
                last_watermark_ms = watermark_ms;
                let mut emit = Emit { results: &mut results, late: &mut late };
                core.advance_watermark(watermark_ms, now_ms, &mut emit);
                core.advance_processing_time(now_ms, &mut emit);
                flush!(hold);
                // The barrier: once the input has passed the open epoch, every record of it has
                // been applied; snapshot, open the next epoch, and apply what waited for it.
                if !aligner.epoch_passed(frontier) {
                    break;
                }
                aligner.snapshot(|| core.snapshot(context.max_parallelism));
                let mut released = aligner.release();
                apply(&mut core, &mut released, &mut Emit { results: &mut results, late: &mut late });
            }
            if input_frontier.is_empty() && !finished {
                // Every triggered epoch is closed: fire the rest, leave the last part, let go.
                finished = true;
                let mut emit = Emit { results: &mut results, late: &mut late };
                core.advance_watermark(crate::time::WATERMARK_MAX, now_ms, &mut emit);
                flush!(Antichain::<Time>::new());
                aligner.finish(|| core.snapshot(context.max_parallelism));
            }
            metrics.set_watermark(core.watermark_ms());
            // Processing-time windows still open at the end of input are dropped, as in Flink's
            // streaming mode; until then, wake up for the next processing-time timer.
            if !input_frontier.is_empty()
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
