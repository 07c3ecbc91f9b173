//! The source operator: reads records, stamps each with its watermark, and holds its capability at
//! the watermark.
//!
//! Per activation the operator reads one batch (at most [`SOURCE_BATCH_RECORDS`]). Every record is
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

use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::Scope;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::generic::operator::source as timely_source;
use timely::order::Product;

use super::{Record, Time, WATERMARK_MAX, WatermarkStrategy, event_coordinate};
use crate::api::Data;
use crate::connectors::{ReadStatus, Source, SourceReader};
use crate::error::Error;
use crate::metrics::OperatorMetrics;
use crate::runtime::WorkerContext;

/// Records a source reads per activation before it lets other operators run.
pub const SOURCE_BATCH_RECORDS: usize = 1024;

/// How long a source with nothing to read waits before it looks again.
const SOURCE_POLL_INTERVAL_MS: u64 = 5;

/// Builds the source operator of one worker.
pub(crate) fn watermarked_source<'scope, D: Data>(
    scope: Scope<'scope, Time>,
    name: &str,
    source: Arc<dyn Source<D>>,
    strategy: WatermarkStrategy,
    context: WorkerContext,
    metrics: Arc<OperatorMetrics>,
) -> StreamVec<'scope, Time, Record<D>> {
    let name = name.to_string();
    timely_source(scope, &name.clone(), move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut capability = Some(capability);
        let mut reader: Option<Box<dyn SourceReader<D>>> = None;
        let mut generator = strategy.generator();
        let mut watermark_ms = generator.current_watermark();
        let mut batch: Vec<(i64, D)> = Vec::with_capacity(SOURCE_BATCH_RECORDS);
        let mut last_record_at_ms = context.clock.now_ms();
        let mut idle = false;

        move |output| {
            let Some(held) = capability.as_mut() else {
                return;
            };
            if context.failure.is_failed() {
                capability = None;
                return;
            }
            if reader.is_none() {
                match source.open(context.index, context.peers) {
                    Ok(opened) => reader = Some(opened),
                    Err(error) => {
                        context.failure.fail(error);
                        capability = None;
                        return;
                    }
                }
            }
            let reader = reader.as_mut().expect("opened above");
            batch.clear();
            let status = match reader.read(&mut batch, SOURCE_BATCH_RECORDS) {
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
                let mut session = output.session(&*held);
                let mut regressed = None;
                for (time_ms, value) in batch.drain(..) {
                    session.give(Record { time_ms, watermark_ms, value });
                    generator.on_event(time_ms);
                    let next_ms = generator.current_watermark();
                    if next_ms < watermark_ms {
                        regressed = Some((time_ms, next_ms));
                        break;
                    }
                    watermark_ms = next_ms;
                }
                drop(session);
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
