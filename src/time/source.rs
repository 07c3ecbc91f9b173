//! The source operator: reads records, stamps each with its watermark, and holds its capability at
//! the watermark.
//!
//! Per activation the operator reads one batch (at most `source_batch_max` records, by default
//! [`SOURCE_BATCH_RECORDS`]). Every record is
//! stamped with the watermark *before* it, then shown to the generator; the batch is emitted at the
//! capability the source held when the batch began (its event coordinate is the stamp of the
//! batch's first record plus one, never later than any record's stamp plus one), and afterwards the
//! capability moves to the new watermark plus one. Batch size therefore changes how often timely
//! sees progress, never which record is late.
//!
//! Idleness (Flink's `withIdleness`): when the reader has had nothing for `idle_timeout_ms` of
//! processing time, the source stops holding back the watermark by moving its capability to the
//! end of event time. A timely capability cannot move back, so should records arrive again they
//! travel at that capability while carrying their true stamps; operators judge them by the larger
//! of their stamp and their own watermark, which is Flink's rule that a resumed input does not pull
//! an already advanced watermark back.
//!
//! Back-pressure ([`JobConfig::in_flight_batches_max`](crate::runtime::JobConfig)): timely has
//! none, so a fast source would put its whole input into channels at once — memory without bound,
//! and every record in the first checkpoint epoch. The source remembers the times of its last
//! batches and reads a new one only while fewer than the bound are still short of the sinks'
//! probe (`ProbeHandle` on every sink's input); it never waits on a time it still holds itself.
//! While it waits it does not re-activate itself: the sinks wake it when their input moves (see
//! `SourceWakers`), so that a worker waiting for another parks rather than spins.
//!
//! Checkpoints (see [`crate::checkpoint`]): the capability's outer coordinate is the epoch. When
//! the coordinator has triggered checkpoint `e`, the source writes its part — reader offset,
//! watermark, generator state — and moves its capability from epoch `e` to `e + 1`: that move is
//! the barrier. Every record read before it travels in epoch `e` or earlier, every record after it
//! in a later epoch. A restored source reopens its reader at the offset and restores its
//! generator, so replayed records get the same watermark stamps as in a run without the crash.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use timely::dataflow::Scope;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::order::{PartialOrder, Product};

use super::{Record, Time, WATERMARK_MAX, WatermarkStrategy, event_coordinate};
use crate::api::Data;
use crate::checkpoint::{AlignmentStats, part_name};
use crate::connectors::{ReadStatus, Source, SourceReader};
use crate::error::Error;
use crate::metrics::OperatorMetrics;
use crate::runtime::WorkerContext;
use crate::state::snapshot::{SnapshotKind, decode, encode};

/// Records a source reads per activation before it lets other operators run.
pub const SOURCE_BATCH_RECORDS: usize = 1024;

/// How long a source with nothing to read waits before it looks again.
const SOURCE_POLL_INTERVAL_MS: u64 = 5;

/// A source instance's part of a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SourcePosition {
    /// Where the reader reopens.
    offset: u64,
    /// The watermark the next record is stamped with.
    watermark_ms: i64,
    /// The watermark generator's state.
    generator: Vec<u8>,
    /// Whether the reader had finished.
    finished: bool,
}

/// Builds the source operator of one worker; `node` is its node in the job graph.
pub(crate) fn watermarked_source<'scope, D: Data>(
    scope: Scope<'scope, Time>,
    node: usize,
    name: &str,
    source: Arc<dyn Source<D>>,
    strategy: WatermarkStrategy,
    context: WorkerContext,
    metrics: Arc<OperatorMetrics>,
) -> StreamVec<'scope, Time, Record<D>> {
    let name = name.to_string();
    let part = part_name(node, context.index);
    let checkpoints = context.checkpoints.clone();
    let mut restored = SourcePosition { watermark_ms: super::WATERMARK_MIN, ..SourcePosition::default() };
    let mut restore_error = None;
    if let Some(coordinator) = &checkpoints {
        coordinator.register(&part);
        if let Some(bytes) = coordinator.restored_source_part(node, context.index) {
            match decode::<SourcePosition>(SnapshotKind::SourceState, &bytes) {
                Ok(position) => restored = position,
                Err(error) => restore_error = Some(format!("source {name:?}: {error}")),
            }
        } else if coordinator.restored().is_some() && context.index > 0 && !source.is_single_stream() {
            restore_error = Some(format!(
                "source {name:?} has no part for instance {} in the checkpoint: a split source cannot change its parallelism",
                context.index
            ));
        }
    }
    timely_source(scope, &name.clone(), move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut epoch = checkpoints.as_ref().map_or(0, |coordinator| coordinator.start_epoch());
        let mut capability = Some(capability);
        if let Some(held) = capability.as_mut() {
            held.downgrade(&Product::new(epoch, event_coordinate(restored.watermark_ms)));
        }
        let mut reader: Option<Box<dyn SourceReader<D>>> = None;
        let mut generator = strategy.generator();
        let mut watermark_ms = generator.current_watermark();
        if checkpoints.as_ref().is_some_and(|coordinator| coordinator.restored().is_some()) {
            if let Err(reason) = generator.restore(&restored.generator) {
                restore_error
                    .get_or_insert(format!("source {name:?}: cannot restore its watermark generator: {reason}"));
            }
            watermark_ms = restored.watermark_ms;
        }
        let mut batch: Vec<(i64, D)> = Vec::with_capacity(context.source_batch_max);
        // The batch's records, stamped with their watermarks.
        let mut stamped: Vec<Record<D>> = Vec::with_capacity(context.source_batch_max);
        // The watermark before each record of the batch.
        let mut stamps: Vec<i64> = Vec::with_capacity(context.source_batch_max);
        // The capability times of the batches still on their way to the sinks, oldest first.
        let mut in_flight: VecDeque<Time> = VecDeque::new();
        let mut last_record_at_ms = context.clock.now_ms();
        let mut idle = false;
        let mut finished_part: Option<Vec<u8>> = None;

        move |output| {
            let Some(held) = capability.as_mut() else {
                return;
            };
            if let Some(reason) = restore_error.take() {
                context.failure.fail(Error::Runtime(reason));
            }
            if context.failure.is_failed() {
                capability = None;
                return;
            }
            if let Some(coordinator) = &checkpoints {
                // The barrier: every checkpoint triggered since the last activation closes the
                // current epoch at this point of the input.
                let triggered = coordinator.poll();
                while epoch <= triggered {
                    let offset = reader.as_ref().map_or(restored.offset, |reader| reader.offset());
                    let position =
                        SourcePosition { offset, watermark_ms, generator: generator.snapshot(), finished: false };
                    coordinator.acknowledge(
                        epoch,
                        &part,
                        &encode(SnapshotKind::SourceState, &position),
                        AlignmentStats::default(),
                    );
                    epoch += 1;
                    held.downgrade(&Product::new(epoch, held.time().inner));
                }
                if restored.finished {
                    finished_part = Some(encode(SnapshotKind::SourceState, &restored));
                }
            }
            if let Some(part_bytes) = finished_part.take() {
                if let Some(coordinator) = &checkpoints {
                    coordinator.finish(&part, &part_bytes);
                }
                metrics.set_watermark(WATERMARK_MAX);
                capability = None;
                return;
            }
            if reader.is_none() {
                let opened = if restored.offset > 0 {
                    source.reopen(context.index, context.peers, restored.offset)
                } else {
                    source.open(context.index, context.peers)
                };
                match opened {
                    Ok(opened) => reader = Some(opened),
                    Err(error) => {
                        context.failure.fail(error);
                        capability = None;
                        return;
                    }
                }
            }
            if let Some(in_flight_max) = context.in_flight_batches_max {
                while in_flight.front().is_some_and(|time| !context.sinks_probe.less_equal(time)) {
                    in_flight.pop_front();
                }
                // Wait only on a time the source has left behind: the sinks can pass it.
                if in_flight.len() >= in_flight_max
                    && in_flight.front().is_some_and(|oldest| oldest.less_than(held.time()))
                {
                    // Only the sinks moving on can unblock the source: they wake it (see
                    // `SourceWakers`), so that the worker parks instead of spinning. The timer is
                    // a safety net, and lets a blocked source still see checkpoint triggers.
                    context.source_wakers.wait(node, &activator);
                    activator.activate_after(Duration::from_millis(SOURCE_POLL_INTERVAL_MS));
                    return;
                }
            }
            let reader = reader.as_mut().expect("opened above");
            batch.clear();
            let status = match reader.read(&mut batch, context.source_batch_max) {
                Ok(status) => status,
                Err(error) => {
                    context.failure.fail(error);
                    capability = None;
                    return;
                }
            };
            metrics.records_bad.store(reader.bad_records(), std::sync::atomic::Ordering::Relaxed);

            if !batch.is_empty() {
                OperatorMetrics::add(&metrics.records_out, batch.len());
                if context.in_flight_batches_max.is_some() && in_flight.back() != Some(held.time()) {
                    in_flight.push_back(*held.time());
                }
                let mut regressed = None;
                // The stamps first, then the records in one `extend`: pushed one by one, each
                // record was put together aside and read back before its stores had landed.
                stamps.clear();
                for &(time_ms, _) in batch.iter() {
                    stamps.push(watermark_ms);
                    generator.on_event(time_ms);
                    let next_ms = generator.current_watermark();
                    if next_ms < watermark_ms {
                        regressed = Some((time_ms, next_ms));
                        break;
                    }
                    watermark_ms = next_ms;
                }
                let taken = stamps.len();
                stamped.extend(
                    batch.drain(..).take(taken).zip(stamps.iter()).map(|((time_ms, value), &watermark_ms)| Record {
                        time_ms,
                        watermark_ms,
                        value,
                    }),
                );
                // The batch goes as one message: handing timely record by record copied each
                // into its own buffers. Timely takes the vector and may leave anything in it.
                output.session(&*held).give_container(&mut stamped);
                stamped.clear();
                stamped.reserve(context.source_batch_max);
                if let Some((time_ms, next_ms)) = regressed {
                    // A generator that breaks its contract is a bug to report, not a reason to hang
                    // the other workers with a panic.
                    context.failure.fail(Error::Usage(format!(
                        "watermark generator of {name:?} regressed from {watermark_ms} to {next_ms} after an event at {time_ms}: watermarks must never decrease"
                    )));
                    capability = None;
                    return;
                }
                last_record_at_ms = context.clock.now_ms();
                idle = false;
            }

            match status {
                ReadStatus::Finished => {
                    // Dropping the capability is the final watermark: every pending time window fires.
                    if let Some(coordinator) = &checkpoints {
                        let position = SourcePosition {
                            offset: reader.offset(),
                            watermark_ms,
                            generator: generator.snapshot(),
                            finished: true,
                        };
                        coordinator.finish(&part, &encode(SnapshotKind::SourceState, &position));
                    }
                    metrics.set_watermark(WATERMARK_MAX);
                    capability = None;
                    return;
                }
                ReadStatus::More => activator.activate(),
                ReadStatus::Pending => {
                    if let Some(timeout_ms) = strategy.idle_timeout_ms
                        && !idle
                        && context.clock.now_ms() - last_record_at_ms >= timeout_ms
                    {
                        idle = true;
                        held.downgrade(&Product::new(held.time().outer, WATERMARK_MAX));
                    }
                    activator.activate_after(Duration::from_millis(SOURCE_POLL_INTERVAL_MS));
                }
            }
            let target = Product::new(held.time().outer, event_coordinate(watermark_ms));
            if held.time().inner < target.inner {
                held.downgrade(&target);
            }
            metrics.set_watermark(watermark_ms);
        }
    })
}
