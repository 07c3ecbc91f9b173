//! The sink operator: hands batches to a [`SinkWriter`](crate::connectors::SinkWriter), and
//! finishes it when the input frontier is empty.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::Operator as _;

use super::WorkerContext;
use crate::api::Data;
use crate::connectors::{Sink, SinkWriter};
use crate::metrics::OperatorMetrics;
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
                result = writer.write(data);
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
