//! `KeyedStream`: a stream partitioned by key, and the keyed operators on it.
//!
//! The exchange itself happens in the keyed operator: records travel to the worker that owns their
//! key's key group (see [`crate::state`]), so all records of one key meet on one worker, in the
//! order their (single) source produced them — timely keeps each sender-to-receiver channel FIFO.

use std::collections::BTreeMap;
use std::rc::Rc;

use std::collections::btree_map::Entry;
use std::ops::Range;

use timely::dataflow::channels::pact::Exchange;

use super::{Data, Key, OperatorKind, Stream};
use crate::error::Result;
use crate::runtime::{Emit, KeyedEngine, keyed_operator};
use crate::state::snapshot::{SnapshotError, SnapshotKind, decode_key_groups, encode};
use crate::state::{key_group, worker_for_key};
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
    /// far, at the record's event time and watermark stamp. Its state is checkpointed.
    pub fn reduce(self, reduce: impl Fn(&D, &D) -> D + 'static) -> Stream<'scope, D> {
        let core = RollingReduce { reduce: Box::new(reduce), state: BTreeMap::new() };
        let (exchange, key) = (self.exchange(), self.key_fn());
        keyed_operator(self.stream, exchange, "reduce", OperatorKind::Keyed, key, core).results
    }
}

/// A reduce function.
type ReduceFn<D> = Box<dyn Fn(&D, &D) -> D>;

/// The state of a rolling reduce: the reduction of every key so far.
struct RollingReduce<K, D> {
    reduce: ReduceFn<D>,
    state: BTreeMap<K, D>,
}

impl<K: Key, D: Data> KeyedEngine<K, D> for RollingReduce<K, D> {
    type Output = D;
    const EMITS_LATE: bool = false;

    fn on_element(&mut self, key: K, record: Record<D>, _now_ms: i64, emit: &mut Emit<'_, D, D>) -> Result<()> {
        let reduced = match self.state.entry(key) {
            Entry::Occupied(mut current) => {
                let next = (self.reduce)(current.get(), &record.value);
                current.insert(next.clone());
                next
            }
            Entry::Vacant(slot) => slot.insert(record.value.clone()).clone(),
        };
        emit.results.push(record.with_value(reduced));
        Ok(())
    }

    fn advance_watermark(&mut self, _watermark_ms: i64, _now_ms: i64, _emit: &mut Emit<'_, D, D>) {}

    fn advance_processing_time(&mut self, _now_ms: i64, _emit: &mut Emit<'_, D, D>) {}

    fn next_processing_timer(&self) -> Option<i64> {
        None
    }

    fn watermark_ms(&self) -> i64 {
        crate::time::WATERMARK_MIN
    }

    fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        let mut groups: BTreeMap<u32, Vec<(&K, &D)>> = BTreeMap::new();
        for (key, value) in &self.state {
            groups.entry(key_group(key, max_parallelism)).or_default().push((key, value));
        }
        encode(SnapshotKind::KeyedState, &groups)
    }

    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: Range<u32>) -> Result<(), SnapshotError> {
        let restored: Vec<(K, D)> = decode_key_groups(snapshots, key_groups)?;
        self.state = restored.into_iter().collect();
        Ok(())
    }
}
