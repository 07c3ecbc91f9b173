//! `Stream`: a handle on one operator's output, with the stateless transformations.

use std::rc::Rc;
use std::sync::Arc;

use petgraph::graph::NodeIndex;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::{Concat, Filter, Map, Probe};
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::{Data, Env, Key, KeyedStream, OperatorKind, Partitioning};
use crate::connectors::Sink;
use crate::metrics::OperatorMetrics;
use crate::time::{Record, Time};

/// A stream of [`Record`]s of `D` on one worker, and the job-graph node that produces it.
pub struct Stream<'scope, D> {
    pub(crate) env: Env<'scope>,
    pub(crate) stream: StreamVec<'scope, Time, Record<D>>,
    pub(crate) node: NodeIndex,
    /// Whether every record comes from one source instance and, after at most one exchange,
    /// arrives in that source's order (see `window::operator`).
    pub(crate) in_source_order: bool,
}

impl<D: Data> Clone for Stream<'_, D> {
    fn clone(&self) -> Self {
        Stream {
            env: self.env.clone(),
            stream: self.stream.clone(),
            node: self.node,
            in_source_order: self.in_source_order,
        }
    }
}

impl<'scope, D: Data> Stream<'scope, D> {
    pub(crate) fn new(
        env: Env<'scope>,
        stream: StreamVec<'scope, Time, Record<D>>,
        node: NodeIndex,
        in_source_order: bool,
    ) -> Self {
        Stream { env, stream, node, in_source_order }
    }

    fn then<E>(&self, stream: StreamVec<'scope, Time, Record<E>>, name: &str, kind: OperatorKind) -> Stream<'scope, E> {
        let node = self.env.add_node(name, kind, &[(self.node, Partitioning::Forward)]);
        Stream { env: self.env.clone(), stream, node, in_source_order: self.in_source_order }
    }

    /// The job-graph node that produces this stream.
    pub fn node(&self) -> NodeIndex {
        self.node
    }

    /// The underlying timely stream, for operators flowlab does not have yet.
    pub fn timely(&self) -> &StreamVec<'scope, Time, Record<D>> {
        &self.stream
    }

    /// Renames the operator that produces this stream (Flink's `.name(…)`).
    pub fn name(self, name: &str) -> Self {
        self.env.rename_node(self.node, name);
        self
    }

    /// Transforms every value; event time and watermark stamp are kept.
    pub fn map<E: Data>(self, logic: impl Fn(D) -> E + 'static) -> Stream<'scope, E> {
        let stream = self.stream.clone().map(move |record: Record<D>| Record {
            time_ms: record.time_ms,
            watermark_ms: record.watermark_ms,
            value: logic(record.value),
        });
        self.then(stream, "map", OperatorKind::Map)
    }

    /// Transforms every value, seeing its event time too; event time and stamp are kept.
    pub fn map_with_time<E: Data>(self, logic: impl Fn(i64, D) -> E + 'static) -> Stream<'scope, E> {
        let stream = self.stream.clone().map(move |record: Record<D>| Record {
            time_ms: record.time_ms,
            watermark_ms: record.watermark_ms,
            value: logic(record.time_ms, record.value),
        });
        self.then(stream, "map", OperatorKind::Map)
    }

    /// Keeps the values for which `predicate` holds.
    pub fn filter(self, predicate: impl Fn(&D) -> bool + 'static) -> Stream<'scope, D> {
        let stream = self.stream.clone().filter(move |record: &Record<D>| predicate(&record.value));
        self.then(stream, "filter", OperatorKind::Filter)
    }

    /// Replaces every value with any number of values, all at the same event time.
    pub fn flat_map<E: Data, I: IntoIterator<Item = E>>(self, logic: impl Fn(D) -> I + 'static) -> Stream<'scope, E> {
        let stream = self.stream.clone().flat_map(move |record: Record<D>| {
            let (time_ms, watermark_ms) = (record.time_ms, record.watermark_ms);
            logic(record.value).into_iter().map(move |value| Record { time_ms, watermark_ms, value })
        });
        self.then(stream, "flat_map", OperatorKind::FlatMap)
    }

    /// Merges this stream with `other` (Flink's `union`). The watermark is the minimum of both.
    pub fn union(self, other: Stream<'scope, D>) -> Stream<'scope, D> {
        let stream = self.stream.clone().concat(other.stream.clone());
        let node = self.env.add_node(
            "union",
            OperatorKind::Union,
            &[(self.node, Partitioning::Forward), (other.node, Partitioning::Forward)],
        );
        Stream { env: self.env.clone(), stream, node, in_source_order: false }
    }

    /// Partitions the stream by `key`: each key's records go to the worker that owns its key group
    /// (Flink's `keyBy`). The exchange happens in the keyed operator that follows.
    pub fn key_by<K: Key>(self, key: impl Fn(&D) -> K + 'static) -> KeyedStream<'scope, K, D> {
        KeyedStream::new(self, Rc::new(key))
    }

    /// Splits off the records that are late — event time not after the watermark they arrived
    /// behind (Flink's definition) — onto a second stream, and counts them. Nothing is dropped:
    /// returns `(on_time, late)`.
    pub fn split_late(self) -> (Stream<'scope, D>, Stream<'scope, D>) {
        let node = self.env.add_node("split late", OperatorKind::LateSplit, &[(self.node, Partitioning::Forward)]);
        let metrics = self.env.metrics(node, "split late");
        let mut builder = OperatorBuilder::new("split late".to_string(), self.env.scope());
        let mut input = builder.new_input(self.stream.clone(), Pipeline);
        let (on_time_output, on_time_stream) = builder.new_output();
        let (late_output, late_stream) = builder.new_output();
        let mut on_time_output = OutputBuilder::from(on_time_output);
        let mut late_output = OutputBuilder::from(late_output);
        builder.build(move |_capabilities| {
            move |frontiers| {
                metrics.set_watermark(crate::time::frontier_watermark(frontiers[0].frontier()));
                let mut on_time = on_time_output.activate();
                let mut late = late_output.activate();
                input.for_each(|time, data: &mut Vec<Record<D>>| {
                    let mut on_time = on_time.session(&time);
                    let mut late = late.session(&time);
                    let (mut late_count, mut on_time_count) = (0, 0);
                    for record in data.drain(..) {
                        if record.is_late() {
                            late_count += 1;
                            late.give(record);
                        } else {
                            on_time_count += 1;
                            on_time.give(record);
                        }
                    }
                    OperatorMetrics::add(&metrics.records_in, late_count + on_time_count);
                    OperatorMetrics::add(&metrics.records_out, on_time_count);
                    OperatorMetrics::add(&metrics.records_late, late_count);
                });
            }
        });
        let late_node =
            self.env.add_node("late records", OperatorKind::Inspect, &[(node, Partitioning::SideOutput("late"))]);
        (
            Stream { env: self.env.clone(), stream: on_time_stream, node, in_source_order: self.in_source_order },
            Stream {
                env: self.env.clone(),
                stream: late_stream,
                node: late_node,
                in_source_order: self.in_source_order,
            },
        )
    }

    /// Passes every record through unchanged and records, on this worker, each advance of the
    /// operator's watermark together with how many records it had seen by then.
    pub fn trace_watermarks(self, trace: &crate::time::WatermarkTrace) -> Stream<'scope, D> {
        let node = self.env.add_node("trace watermarks", OperatorKind::Inspect, &[(self.node, Partitioning::Forward)]);
        let metrics = self.env.metrics(node, "trace watermarks");
        let trace = trace.clone();
        let worker = self.env.index();
        let stream = self.stream.clone().unary_frontier(Pipeline, "trace watermarks", move |_, _| {
            let mut seen: u64 = 0;
            let mut last = None;
            move |(input, frontier), output| {
                input.for_each(|time, data: &mut Vec<Record<D>>| {
                    seen += data.len() as u64;
                    OperatorMetrics::add(&metrics.records_in, data.len());
                    OperatorMetrics::add(&metrics.records_out, data.len());
                    output.session(&time).give_container(data);
                });
                let watermark_ms = crate::time::frontier_watermark(frontier.frontier());
                if last != Some(watermark_ms) {
                    last = Some(watermark_ms);
                    metrics.set_watermark(watermark_ms);
                    trace.push(worker, seen, watermark_ms);
                }
            }
        });
        Stream { env: self.env.clone(), stream, node, in_source_order: self.in_source_order }
    }

    /// Writes every record to `sink` (Flink's `sinkTo`).
    pub fn sink(self, sink: impl Sink<D>) {
        let name = format!("sink: {}", sink.name());
        let partitioning = sink.partitioning();
        let node = self.env.add_node(&name, OperatorKind::Sink, &[(self.node, partitioning)]);
        let metrics = self.env.metrics(node, &name);
        let context = self.env.context().clone();
        // Back-pressure watches how far the sinks' inputs have got.
        let stream = self.stream.probe_with(&context.sinks_probe);
        match partitioning {
            Partitioning::Gather => {
                crate::runtime::sink_operator(stream, Exchange::new(|_: &Record<D>| 0), &name, sink, context, metrics)
            }
            _ => crate::runtime::sink_operator(stream, Pipeline, &name, sink, context, metrics),
        }
    }

    /// Writes the stream to `sink` exactly once: with checkpoints, each epoch's records are
    /// committed only when the checkpoint that covers them is complete, and re-committed after a
    /// crash (see [`TwoPhaseCommitSink`](crate::connectors::TwoPhaseCommitSink)); without, the
    /// output is committed once, at the end of input.
    pub fn sink_exactly_once(self, sink: impl crate::connectors::TwoPhaseCommitSink<D>) {
        let name = format!("sink: {}", sink.name());
        let partitioning = sink.partitioning();
        let node = self.env.add_node(&name, OperatorKind::Sink, &[(self.node, partitioning)]);
        let metrics = self.env.metrics(node, &name);
        let context = self.env.context().clone();
        let sink = Arc::new(sink);
        let stream = self.stream.probe_with(&context.sinks_probe);
        match partitioning {
            Partitioning::Gather => {
                let pact = Exchange::new(|_: &Record<D>| 0);
                match context.network.clone() {
                    Some(network) => crate::runtime::two_phase_sink_operator(
                        stream,
                        network.delayed(pact),
                        node.index(),
                        &name,
                        sink,
                        context,
                        metrics,
                    ),
                    None => crate::runtime::two_phase_sink_operator(
                        stream,
                        pact,
                        node.index(),
                        &name,
                        sink,
                        context,
                        metrics,
                    ),
                }
            }
            _ => crate::runtime::two_phase_sink_operator(stream, Pipeline, node.index(), &name, sink, context, metrics),
        }
    }
}
