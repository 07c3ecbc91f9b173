//! `KeyedStream`: a stream partitioned by key, and the keyed operators on it.
//!
//! The exchange itself happens in the keyed operator: records travel to the worker that owns their
//! key's key group (see [`crate::state`]), so all records of one key meet on one worker, in the
//! order their (single) source produced them — timely keeps each sender-to-receiver channel FIFO.

use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator as _;

use super::{Data, Key, OperatorKind, Partitioning, Stream};
use crate::metrics::OperatorMetrics;
use crate::state::worker_for_key;
use crate::time::Record;

/// A stream whose records are partitioned by a key (Flink's `KeyedStream`).
pub struct KeyedStream<'scope, K, D> {
    stream: Stream<'scope, D>,
    key: Rc<dyn Fn(&D) -> K>,
}

impl<'scope, K: Key, D: Data> KeyedStream<'scope, K, D> {
    pub(crate) fn new(stream: Stream<'scope, D>, key: Rc<dyn Fn(&D) -> K>) -> Self {
        KeyedStream { stream, key }
    }

    /// The key of a value.
    pub fn key_of(&self, value: &D) -> K {
        (self.key)(value)
    }

    /// The key function.
    pub(crate) fn key_fn(&self) -> Rc<dyn Fn(&D) -> K> {
        Rc::clone(&self.key)
    }

    /// The exchange contract that sends every record to the worker owning its key group.
    pub fn exchange(&self) -> Exchange<Record<D>, impl FnMut(&Record<D>) -> u64 + 'static> {
        let key = Rc::clone(&self.key);
        let max_parallelism = self.stream.env.context().max_parallelism;
        let peers = self.stream.env.peers();
        Exchange::new(move |record: &Record<D>| worker_for_key(&key(&record.value), max_parallelism, peers) as u64)
    }

    /// The keyed stream's input, for keyed operators built elsewhere in flowlab.
    pub fn stream(&self) -> &Stream<'scope, D> {
        &self.stream
    }

    /// Flink's rolling `reduce`: for every record, emits the reduction of all values of its key so
    /// far, at the record's event time and watermark stamp.
    pub fn reduce(self, reduce: impl Fn(&D, &D) -> D + 'static) -> Stream<'scope, D> {
        let env = self.stream.env.clone();
        let node = env.add_node("reduce", OperatorKind::Keyed, &[(self.stream.node, Partitioning::Hash)]);
        let metrics = env.metrics(node, "reduce");
        let exchange = self.exchange();
        let key = Rc::clone(&self.key);
        let stream = self.stream.stream.clone().unary_frontier(exchange, "reduce", move |_, _| {
            let mut state: BTreeMap<K, D> = BTreeMap::new();
            move |(input, frontier), output| {
                metrics.set_watermark(crate::time::frontier_watermark(frontier.frontier()));
                input.for_each(|time, data: &mut Vec<Record<D>>| {
                    OperatorMetrics::add(&metrics.records_in, data.len());
                    OperatorMetrics::add(&metrics.records_out, data.len());
                    let mut session = output.session(&time);
                    for record in data.drain(..) {
                        let reduced = match state.entry(key(&record.value)) {
                            std::collections::btree_map::Entry::Occupied(mut current) => {
                                let next = reduce(current.get(), &record.value);
                                current.insert(next.clone());
                                next
                            }
                            std::collections::btree_map::Entry::Vacant(slot) => {
                                slot.insert(record.value.clone()).clone()
                            }
                        };
                        session.give(record.with_value(reduced));
                    }
                });
            }
        });
        Stream::new(env, stream, node, false)
    }
}
