//! The sink operators: [`sink_operator`] hands batches to a
//! [`SinkWriter`](crate::connectors::SinkWriter) and finishes it when the input frontier is empty
//! (at-least-once after a crash); [`two_phase_sink_operator`] runs a
//! [`TwoPhaseCommitSink`](crate::connectors::TwoPhaseCommitSink) on checkpoints (exactly once).

use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::WorkerContext;
use super::align::Aligner;
use crate::api::Data;
use crate::checkpoint::Coordinator;
use crate::connectors::{Sink, SinkState, SinkWriter, TransactionWriter, TwoPhaseCommitSink};
use crate::error::{Error, Result};
use crate::metrics::OperatorMetrics;
use crate::state::snapshot::{SnapshotKind, decode, encode};
use crate::time::{Record, Time};

/// Builds the sink operator of one worker.
pub(crate) fn sink_operator<D, P, S>(
    stream: StreamVec<'_, Time, Record<D>>,
    pact: P,
    name: &str,
    sink: S,
    context: WorkerContext,
    metrics: Arc<OperatorMetrics>,
) where
    D: Data,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
    S: Sink<D>,
{
    let mut writer: Option<Box<dyn SinkWriter<D>>> = None;
    let mut finished = false;
    let mut last_watermark_ms = crate::time::WATERMARK_MIN;
    stream.sink(pact, name, move |(input, frontier)| {
        // Scheduled because the input moved: sources held back by back-pressure look again.
        context.source_wakers.wake();
        if finished {
            // Keep consuming, or progress tracking would wait for these records forever.
            input.for_each(|_time, data: &mut Vec<Record<D>>| data.clear());
            return;
        }
        if writer.is_none() {
            match sink.open(context.index, context.peers) {
                Ok(opened) => writer = Some(opened),
                Err(error) => {
                    context.failure.fail(error);
                    finished = true;
                    input.for_each(|_time, data: &mut Vec<Record<D>>| data.clear());
                    return;
                }
            }
        }
        let writer = writer.as_mut().expect("opened above");
        let mut result = Ok(());
        input.for_each(|_time, data: &mut Vec<Record<D>>| {
            OperatorMetrics::add(&metrics.records_in, data.len());
            if result.is_ok() {
                result = writer.write_owned(data);
            }
            data.clear();
        });
        let watermark_ms = crate::time::frontier_watermark(frontier.frontier());
        if result.is_ok() && watermark_ms != last_watermark_ms {
            last_watermark_ms = watermark_ms;
            metrics.set_watermark(watermark_ms);
            result = writer.on_watermark(watermark_ms);
        }
        if result.is_ok() && frontier.is_empty() {
            finished = true;
            result = writer.finish();
        }
        if let Err(error) = result {
            context.failure.fail(error);
            finished = true;
        }
    });
}

/// Builds the exactly-once sink operator of one worker (`node` in the job graph).
///
/// Per epoch it writes the epoch's records into the epoch's transaction; records of a later epoch
/// wait (alignment). When the input passes the open epoch it pre-commits, and puts the pending
/// transactions into its part of the checkpoint; it commits them once the coordinator reports a
/// complete checkpoint that covers them. It holds a capability on an unused output until its last
/// transaction is committed, so the job does not end before its output is visible.
pub(crate) fn two_phase_sink_operator<'scope, D, P, S>(
    stream: StreamVec<'scope, Time, Record<D>>,
    pact: P,
    node: usize,
    name: &str,
    sink: Arc<S>,
    context: WorkerContext,
    metrics: Arc<OperatorMetrics>,
) where
    D: Data,
    P: ParallelizationContract<Time, Vec<Record<D>>>,
    S: TwoPhaseCommitSink<D>,
{
    let mut aligner: Aligner<D> = Aligner::new(&context, node);
    let part = crate::checkpoint::part_name(node, context.index);
    if let Some(coordinator) = &context.checkpoints {
        coordinator.register_sink(&part);
    }
    let bugs = context.checkpoints.as_ref().map(|coordinator| coordinator.config().bugs).unwrap_or_default();
    // Worker 0 recovers, while it builds: its instance is the one that reads the output's length
    // when it opens, and no commit of this run can happen before its first snapshot.
    if let Some(coordinator) = &context.checkpoints
        && context.index == 0
        && coordinator.claim_recovery(node)
    {
        let recovered = match coordinator.restored() {
            Some(_) => recover(&*sink, coordinator, node, bugs.skip_recommit_on_restore),
            None => sink.reset(),
        };
        if let Err(error) = recovered {
            context.failure.fail(error);
        }
    }
    let scope = stream.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut input = builder.new_input(stream, pact);
    let (_unused, _never_read) = builder.new_output::<Vec<()>>();
    builder.build(move |mut capabilities| {
        let mut held = capabilities.pop();
        let mut writer: Option<Box<dyn TransactionWriter<D>>> = None;
        let mut state = SinkState::default();
        let mut input_done = false;
        let mut last_watermark_ms = crate::time::WATERMARK_MIN;
        move |frontiers| {
            // Scheduled because the input moved: sources held back by back-pressure look again.
            context.source_wakers.wake();
            let failed = |error| {
                context.failure.fail(error);
            };
            if held.is_none() || context.failure.is_failed() {
                input.for_each(|_capability, data: &mut Vec<Record<D>>| data.clear());
                held = None;
                return;
            }
            if writer.is_none() {
                let opened = sink.open(context.index, context.peers).and_then(|mut opened| {
                    opened.restore(inherited_writer_states(aligner.coordinator(), node, &context)?)?;
                    Ok(opened)
                });
                match opened {
                    Ok(opened) => writer = Some(opened),
                    Err(error) => return failed(error),
                }
            }
            let writer = writer.as_mut().expect("opened above");
            let now_ms = context.clock.now_ms();
            let mut result = Ok(());
            input.for_each(|capability, data: &mut Vec<Record<D>>| {
                OperatorMetrics::add(&metrics.records_in, data.len());
                if result.is_ok() && !aligner.hold(capability.stamp().iter(), data, now_ms) {
                    result = writer.write(aligner.epoch(), data);
                }
                data.clear();
            });
            let input_frontier = frontiers[0].frontier();
            let frontier = aligner.frontier(input_frontier, input_done);
            let frontier = frontier.borrow();
            loop {
                let watermark_ms = crate::time::frontier_watermark(aligner.hold_frontier(frontier).borrow());
                if result.is_ok() && watermark_ms != last_watermark_ms && !input_frontier.is_empty() {
                    last_watermark_ms = watermark_ms;
                    metrics.set_watermark(watermark_ms);
                    result = writer.on_watermark(watermark_ms);
                }
                if result.is_err() || !aligner.epoch_passed(frontier) {
                    break;
                }
                let epoch = aligner.epoch();
                result = writer.pre_commit(epoch).map(|transaction| state.pending.push((epoch, transaction)));
                if bugs.commit_before_complete {
                    result = result.and_then(|_| commit_pending(&*sink, &mut state, u64::MAX));
                }
                match writer.snapshot() {
                    Ok(bytes) => state.writer = bytes,
                    Err(error) => result = Err(error),
                }
                aligner.snapshot(|| encode(SnapshotKind::SinkState, &state));
                let released = aligner.release();
                if result.is_ok() && !released.is_empty() {
                    result = writer.write(aligner.epoch(), &released);
                }
            }
            if result.is_ok() && input_frontier.is_empty() && !input_done {
                input_done = true;
                metrics.set_watermark(crate::time::WATERMARK_MAX);
                let epoch = aligner.epoch();
                result = writer
                    .on_watermark(crate::time::WATERMARK_MAX)
                    .and_then(|_| writer.pre_commit(epoch))
                    .map(|transaction| state.pending.push((epoch, transaction)))
                    .and_then(|_| writer.snapshot())
                    .map(|bytes| state.writer = bytes);
                aligner.finish(|| encode(SnapshotKind::SinkState, &state));
            }
            // Commit what complete checkpoints cover; at the end, what the final one covers.
            let complete = match aligner.coordinator() {
                None if input_done => u64::MAX,
                None => 0,
                Some(coordinator) if input_done && coordinator.job_finished() => u64::MAX,
                Some(coordinator) => coordinator.latest_complete(),
            };
            if result.is_ok() {
                result = commit_pending(&*sink, &mut state, complete);
                if let (Some(coordinator), Some((next, _))) = (aligner.coordinator(), state.pending.first()) {
                    coordinator.sink_committed(&part, next.saturating_sub(1));
                } else if let Some(coordinator) = aligner.coordinator() {
                    // A finished sink with nothing pending has committed all it will ever write:
                    // a stop-with-savepoint must not wait for it.
                    let committed = if input_done { u64::MAX } else { aligner.epoch().saturating_sub(1) };
                    coordinator.sink_committed(&part, committed);
                }
            }
            if let Err(error) = result {
                return failed(error);
            }
            if input_done && state.pending.is_empty() {
                held = None;
            } else if !state.pending.is_empty() {
                // Look again soon: the checkpoint that covers them may complete without this
                // operator hearing of it otherwise.
                activator.activate_after(Duration::from_millis(COMMIT_POLL_INTERVAL_MS));
            }
        }
    });
}

/// The writer states of the old instances this instance inherits (old instance `j` goes to new
/// instance `j % peers`): what a restored writer starts from.
fn inherited_writer_states(
    coordinator: Option<&Arc<Coordinator>>,
    node: usize,
    context: &WorkerContext,
) -> Result<Vec<Vec<u8>>> {
    let Some(coordinator) = coordinator else {
        return Ok(Vec::new());
    };
    let mut states = Vec::new();
    for (old, bytes) in coordinator.restored_parts_by_worker(node) {
        if old % context.peers == context.index {
            let state: SinkState = decode(SnapshotKind::SinkState, &bytes)
                .map_err(|error| Error::Runtime(format!("cannot restore sink part {old}: {error}")))?;
            states.push(state.writer);
        }
    }
    Ok(states)
}

/// How often a sink with pending transactions looks for the checkpoint that covers them.
const COMMIT_POLL_INTERVAL_MS: u64 = 1;

/// Commits the pending transactions of epochs up to `complete`, oldest first.
fn commit_pending<D, S: TwoPhaseCommitSink<D> + ?Sized>(sink: &S, state: &mut SinkState, complete: u64) -> Result<()> {
    while let Some((epoch, _)) = state.pending.first()
        && *epoch <= complete
    {
        let (_, transaction) = state.pending.remove(0);
        sink.commit(&transaction)?;
        state.last_committed = Some(transaction);
    }
    Ok(())
}

/// After a restore: commits every transaction the checkpoint holds as pending for sink `node`
/// (again, perhaps), then cuts each old instance's output back to its newest committed one.
fn recover<D, S: TwoPhaseCommitSink<D> + ?Sized>(
    sink: &S,
    coordinator: &Coordinator,
    node: usize,
    skip_recommit: bool,
) -> Result<()> {
    for (instance, bytes) in coordinator.restored_parts_by_worker(node) {
        let state: SinkState = decode(SnapshotKind::SinkState, &bytes)
            .map_err(|error| Error::Runtime(format!("cannot restore sink part {instance}: {error}")))?;
        let mut last = state.last_committed.clone();
        if !skip_recommit {
            for (_, transaction) in &state.pending {
                sink.commit(transaction)?;
                last = Some(transaction.clone());
            }
        }
        sink.recover(instance, last.as_deref())?;
    }
    Ok(())
}
