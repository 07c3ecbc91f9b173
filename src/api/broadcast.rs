//! Broadcast state and the keyed broadcast process function: Flink's pattern for dynamic rules.
//!
//! A slow stream of rules is *broadcast*: every worker receives every rule and keeps it in
//! broadcast state, the same on every worker. A fast keyed stream of events is processed against
//! the rules, with keyed state and timers. `events.key_by(…).connect(rules.broadcast()).process(f)`.
//!
//! # Which comes first, a rule or an event?
//!
//! On real threads a rule and an event race; in Flink the outcome depends on timing. flowlab
//! decides by time instead, so that a run is a function of its input: both inputs are buffered,
//! and an element is processed only once no element with a smaller watermark stamp can arrive on
//! either input (the frontiers of both inputs have passed it). Buffered elements are then
//! processed in order of their stamps; at equal stamps rules come before events, and each input
//! keeps its arrival order. A rule therefore applies to every event whose stamp is not below the
//! rule's. The price is latency: events wait while the rule stream's watermark lags, so a rule
//! source that can fall silent should be marked idle (`WatermarkStrategy::with_idleness`).
//!
//! # Checkpoints
//!
//! Both inputs become one stream (events routed by key, rules on every worker) into one aligned
//! keyed operator, so the operator takes part in checkpoints like a window: its part holds the
//! broadcast state, the elements still waiting for the watermark, and the keyed state and timers
//! by key group. Restoring on another parallelism takes the broadcast side from the old instance
//! that was furthest behind (its rules are a prefix of the others') and replays its pending rules;
//! a key group whose old instance had already applied some of them skips those in
//! [`BroadcastContext::apply_to_keyed_state`], so no key sees a rule twice.

use std::any::Any;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::core::{Concat, Map};
use timely::dataflow::operators::generic::Operator as _;
use timely::dataflow::operators::vec::Broadcast as _;

use super::process::ProcessContext;
use super::{Data, Key, KeyedStream, OperatorKind, Partitioning, Stream};
use crate::error::Result;
use crate::runtime::{Emit, KeyedEngine, keyed_operator_at};
use crate::state::snapshot::{SnapshotError, SnapshotKind, decode, encode};
use crate::state::{
    KeyedStateBackend, MapStateDescriptor, StateData, StateDescriptor, TimerService, key_group, key_group_range,
};
use crate::time::{Record, Time, WATERMARK_MAX, WATERMARK_MIN};
use crate::window::TimeDomain;

/// A stream every worker receives in full.
pub struct BroadcastStream<'scope, B> {
    stream: Stream<'scope, B>,
}

impl<'scope, B: Data> Stream<'scope, B> {
    /// Sends every record to every worker (Flink's `broadcast`), for use with
    /// [`KeyedStream::connect`].
    pub fn broadcast(self) -> BroadcastStream<'scope, B> {
        let stream = self.stream.clone().broadcast();
        let node = self.env.add_node("broadcast", OperatorKind::Map, &[(self.node, Partitioning::Broadcast)]);
        BroadcastStream { stream: Stream::new(self.env.clone(), stream, node, false) }
    }
}

/// State every worker holds the same copy of: maps named by descriptors (Flink's
/// `BroadcastState`). Only the broadcast side may change it.
///
/// Maps are kept type-erased so that the operator can snapshot them; a restored map stays encoded
/// until the function first reads it through its descriptor, which gives it back its types.
#[derive(Default)]
pub struct BroadcastState {
    maps: BTreeMap<String, BroadcastMap>,
}

/// One named map: typed once used, or the encoded bytes a restore brought back.
struct BroadcastMap {
    typed: OnceCell<Box<dyn ErasedMap>>,
    encoded: Vec<u8>,
}

/// A `BTreeMap<UK, UV>` behind a type-erased face that can encode itself.
trait ErasedMap: Any {
    fn encode(&self) -> Vec<u8>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<UK: StateData + Ord, UV: StateData> ErasedMap for BTreeMap<UK, UV> {
    fn encode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("state values serialise")
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl BroadcastMap {
    /// The map as `BTreeMap<UK, UV>`, decoding restored bytes on first use.
    fn typed<UK: StateData + Ord, UV: StateData>(&self, name: &str) -> &BTreeMap<UK, UV> {
        self.typed
            .get_or_init(|| decode_map::<UK, UV>(name, &self.encoded))
            .as_any()
            .downcast_ref::<BTreeMap<UK, UV>>()
            .unwrap_or_else(|| panic!("broadcast state {name:?} is used with two types"))
    }

    fn typed_mut<UK: StateData + Ord, UV: StateData>(&mut self, name: &str) -> &mut BTreeMap<UK, UV> {
        if self.typed.get().is_none() {
            let _ = self.typed.set(decode_map::<UK, UV>(name, &self.encoded));
        }
        self.typed
            .get_mut()
            .expect("set above")
            .as_any_mut()
            .downcast_mut::<BTreeMap<UK, UV>>()
            .unwrap_or_else(|| panic!("broadcast state {name:?} is used with two types"))
    }

    fn encode(&self) -> Vec<u8> {
        self.typed.get().map_or_else(|| self.encoded.clone(), |map| map.encode())
    }
}

fn decode_map<UK: StateData + Ord, UV: StateData>(name: &str, encoded: &[u8]) -> Box<dyn ErasedMap> {
    if encoded.is_empty() {
        return Box::new(BTreeMap::<UK, UV>::new());
    }
    // The bytes passed the checkpoint's checksums: failing here means the function reads the map
    // with other types than it wrote it with, a programming error like a wrong downcast.
    let map: BTreeMap<UK, UV> = bincode::deserialize(encoded)
        .unwrap_or_else(|error| panic!("restored broadcast state {name:?} does not decode as these types: {error}"));
    Box::new(map)
}

impl BroadcastState {
    fn map<UK: StateData + Ord, UV: StateData>(
        &self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Option<&BTreeMap<UK, UV>> {
        self.maps.get(descriptor.name()).map(|map| map.typed(descriptor.name()))
    }

    fn map_mut<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> &mut BTreeMap<UK, UV> {
        self.maps
            .entry(descriptor.name().to_string())
            .or_insert_with(|| BroadcastMap { typed: OnceCell::new(), encoded: Vec::new() })
            .typed_mut(descriptor.name())
    }

    /// Every map, encoded, by name: what a snapshot keeps.
    fn encode(&self) -> Vec<(String, Vec<u8>)> {
        self.maps.iter().map(|(name, map)| (name.clone(), map.encode())).collect()
    }

    /// The state `encode` described; maps decode when first used.
    fn decode(maps: Vec<(String, Vec<u8>)>) -> Self {
        let maps =
            maps.into_iter().map(|(name, encoded)| (name, BroadcastMap { typed: OnceCell::new(), encoded })).collect();
        BroadcastState { maps }
    }

    /// The value for `key`.
    pub fn get<UK: StateData + Ord, UV: StateData>(
        &self,
        descriptor: &MapStateDescriptor<UK, UV>,
        key: &UK,
    ) -> Option<&UV> {
        self.map(descriptor)?.get(key)
    }

    /// Every entry, in key order.
    pub fn entries<UK: StateData + Ord, UV: StateData>(
        &self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Vec<(UK, UV)> {
        self.map(descriptor).map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }

    /// Sets the value for `key` (broadcast side only).
    pub fn put<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
        key: UK,
        value: UV,
    ) {
        self.map_mut(descriptor).insert(key, value);
    }

    /// Removes `key` (broadcast side only).
    pub fn remove<UK: StateData + Ord, UV: StateData>(&mut self, descriptor: &MapStateDescriptor<UK, UV>, key: &UK) {
        self.map_mut(descriptor).remove(key);
    }
}

/// What the broadcast side of the function may do (Flink's broadcast `Context`).
pub struct BroadcastContext<'a, K, O> {
    /// The broadcast state, writable here.
    pub broadcast: &'a mut BroadcastState,
    state: &'a mut KeyedStateBackend<K>,
    timestamp_ms: i64,
    watermark_ms: i64,
    /// The rule's watermark stamp: its place in the order of elements.
    stamp_ms: i64,
    /// Key groups restored from a worker that had already applied rules stamped below the value.
    applied_below: &'a BTreeMap<u32, i64>,
    max_parallelism: u32,
    out: &'a mut Vec<Record<O>>,
}

impl<K: Key, O> BroadcastContext<'_, K, O> {
    /// The rule's event time.
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// Calls `visit` with every key that has an entry in `descriptor`'s state, in key order, the
    /// backend scoped to that key (Flink's `applyToKeyedState`).
    pub fn apply_to_keyed_state(
        &mut self,
        descriptor: &impl StateDescriptor,
        mut visit: impl FnMut(&K, &mut KeyedStateBackend<K>),
    ) {
        for key in self.state.keys(descriptor) {
            // After a restore on another parallelism, some keys come from a worker that had
            // already applied this rule: applying it twice would not be exactly once.
            let group = key_group(&key, self.max_parallelism);
            if self.applied_below.get(&group).is_some_and(|&below| self.stamp_ms < below) {
                continue;
            }
            self.state.set_current_key(key.clone());
            visit(&key, self.state);
        }
    }

    /// Emits `value` at the rule's timestamp.
    pub fn collect(&mut self, value: O) {
        self.out.push(Record { time_ms: self.timestamp_ms, watermark_ms: self.watermark_ms, value });
    }
}

/// Processes a keyed stream against broadcast rules (Flink's `KeyedBroadcastProcessFunction`).
pub trait KeyedBroadcastProcessFunction<K: Ord, D, B>: 'static {
    /// What it emits.
    type Output: Data;
    /// Declares its keyed state.
    fn open(&mut self, _state: &mut KeyedStateBackend<K>) {}
    /// Handles one keyed element, reading (not writing) the broadcast state.
    fn process_element(&mut self, value: D, broadcast: &BroadcastState, ctx: &mut ProcessContext<'_, K, Self::Output>);
    /// Handles one broadcast element; runs on every worker with the same input.
    fn process_broadcast_element(&mut self, value: B, ctx: &mut BroadcastContext<'_, K, Self::Output>);
    /// A timer of the context's key fired.
    fn on_timer(
        &mut self,
        _time_ms: i64,
        _domain: TimeDomain,
        _broadcast: &BroadcastState,
        _ctx: &mut ProcessContext<'_, K, Self::Output>,
    ) {
    }
}

/// A keyed stream connected to a broadcast stream.
pub struct ConnectedStreams<'scope, K, D, B> {
    keyed: KeyedStream<'scope, K, D>,
    broadcast: BroadcastStream<'scope, B>,
}

impl<'scope, K: Key, D: Data> KeyedStream<'scope, K, D> {
    /// Connects this keyed stream to broadcast rules (Flink's `connect`).
    pub fn connect<B: Data>(self, broadcast: BroadcastStream<'scope, B>) -> ConnectedStreams<'scope, K, D, B> {
        ConnectedStreams { keyed: self, broadcast }
    }
}

/// Both inputs as one stream, so that one aligned keyed operator runs them: events arrive
/// exchanged by key, rules on every worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Connected<D, B> {
    Event(D),
    Rule(B),
}

/// An element waiting for both inputs to pass its stamp.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Pending<K, D, B> {
    Rule(Record<B>),
    Event(K, Record<D>),
}

/// The key of a connected element: the event's, none for a rule.
type ConnectedKey<K, D, B> = Rc<dyn Fn(&Connected<D, B>) -> Option<K>>;

/// Where a pending element goes in the order: `(stamp, rules before events, arrival)`.
type Place = (i64, u8, u64);

impl<'scope, K: Key, D: Data, B: Data> ConnectedStreams<'scope, K, D, B> {
    /// Runs `function` over both streams; see the module docs for the order of rules and events.
    pub fn process<F: KeyedBroadcastProcessFunction<K, D, B>>(self, function: F) -> Stream<'scope, F::Output> {
        let input = self.keyed.stream().clone();
        let env = input.env.clone();
        let node = env.add_node(
            "broadcast process",
            OperatorKind::Keyed,
            &[(input.node, Partitioning::Hash), (self.broadcast.stream.node, Partitioning::Forward)],
        );
        let events = match env.context().network.clone() {
            Some(network) => route_events(input.stream.clone(), network.delayed(self.keyed.exchange())),
            None => route_events(input.stream.clone(), self.keyed.exchange()),
        };
        let rules = self.broadcast.stream.stream.clone().map(|record: Record<B>| Record {
            time_ms: record.time_ms,
            watermark_ms: record.watermark_ms,
            value: Connected::Rule(record.value),
        });
        let key = self.keyed.key_fn();
        let connected_key: ConnectedKey<K, D, B> = Rc::new(move |value| match value {
            Connected::Event(event) => Some(key(event)),
            Connected::Rule(_) => None,
        });
        let context = env.context();
        let engine = BroadcastEngine::new(function, context.max_parallelism, context.index, context.peers);
        let output =
            keyed_operator_at(&env, events.concat(rules), Pipeline, node, "broadcast process", connected_key, engine);
        output.results
    }
}

/// Sends every event to the worker of its key, tagged as an event.
fn route_events<'scope, D: Data, B: Data>(
    events: StreamVec<'scope, Time, Record<D>>,
    pact: impl ParallelizationContract<Time, Vec<Record<D>>>,
) -> StreamVec<'scope, Time, Record<Connected<D, B>>> {
    events.unary(pact, "route events", |_capability, _info| {
        move |input, output| {
            input.for_each(|time, data| {
                output.session(&time).give_iterator(data.drain(..).map(|record: Record<D>| Record {
                    time_ms: record.time_ms,
                    watermark_ms: record.watermark_ms,
                    value: Connected::Event(record.value),
                }));
            });
        }
    })
}

/// The broadcast process function as a [`KeyedEngine`]: elements wait in stamp order until the
/// watermark — the least over both inputs — passes them.
struct BroadcastEngine<K: Ord, D, B, F> {
    function: F,
    state: KeyedStateBackend<K>,
    timers: TimerService<K>,
    rules: BroadcastState,
    /// Everything stamped below it has been processed, and every event-time timer at or below it
    /// has fired.
    watermark_ms: i64,
    pending: BTreeMap<Place, Pending<K, D, B>>,
    arrivals: u64,
    /// Key groups restored from a worker whose watermark was ahead of this instance's restored
    /// one: rules stamped below the value were already applied to their keyed state.
    applied_below: BTreeMap<u32, i64>,
    max_parallelism: u32,
    instance: usize,
    instances: usize,
}

/// One instance's part of a checkpoint.
#[derive(Serialize, Deserialize)]
struct BroadcastSnapshot<K, D, B> {
    instance: usize,
    instances: usize,
    watermark_ms: i64,
    arrivals: u64,
    maps: Vec<(String, Vec<u8>)>,
    rules: Vec<(Place, Record<B>)>,
    /// Pending events and `applied_below`, by key group.
    groups: BTreeMap<u32, GroupSnapshot<K, D>>,
    keyed_state: Vec<u8>,
    timers: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct GroupSnapshot<K, D> {
    applied_below: Option<i64>,
    events: Vec<(Place, K, Record<D>)>,
}

impl<K: Key, D: Data, B: Data, F: KeyedBroadcastProcessFunction<K, D, B>> BroadcastEngine<K, D, B, F> {
    /// Instance `instance` of `instances`, empty, the function opened.
    fn new(mut function: F, max_parallelism: u32, instance: usize, instances: usize) -> Self {
        let mut state = KeyedStateBackend::new(max_parallelism);
        function.open(&mut state);
        BroadcastEngine {
            function,
            state,
            timers: TimerService::new(),
            rules: BroadcastState::default(),
            watermark_ms: WATERMARK_MIN,
            pending: BTreeMap::new(),
            arrivals: 0,
            applied_below: BTreeMap::new(),
            max_parallelism,
            instance,
            instances,
        }
    }

    /// Moves the watermark to `to_ms` and fires the event-time timers up to it, in time order.
    fn fire(&mut self, to_ms: i64, now_ms: i64, results: &mut Vec<Record<F::Output>>) {
        if to_ms <= self.watermark_ms {
            return;
        }
        let previous = self.watermark_ms;
        self.watermark_ms = to_ms;
        while let Some((time_ms, key)) = self.timers.pop_event_time(to_ms) {
            let mut ctx = ProcessContext::new(
                &key,
                time_ms,
                to_ms,
                now_ms,
                previous,
                true,
                &mut self.state,
                &mut self.timers,
                results,
            );
            self.function.on_timer(time_ms, TimeDomain::EventTime, &self.rules, &mut ctx);
        }
    }

    /// Processes one element at its place: timers at or below its stamp fire first.
    fn process(&mut self, stamp: i64, element: Pending<K, D, B>, now_ms: i64, results: &mut Vec<Record<F::Output>>) {
        self.fire(stamp, now_ms, results);
        match element {
            Pending::Rule(record) => {
                let mut ctx = BroadcastContext {
                    broadcast: &mut self.rules,
                    state: &mut self.state,
                    timestamp_ms: record.time_ms,
                    watermark_ms: self.watermark_ms,
                    stamp_ms: stamp,
                    applied_below: &self.applied_below,
                    max_parallelism: self.max_parallelism,
                    out: results,
                };
                self.function.process_broadcast_element(record.value, &mut ctx);
            }
            Pending::Event(key, record) => {
                let watermark_ms = self.watermark_ms;
                let mut ctx = ProcessContext::new(
                    &key,
                    record.time_ms,
                    watermark_ms,
                    now_ms,
                    watermark_ms,
                    false,
                    &mut self.state,
                    &mut self.timers,
                    results,
                );
                self.function.process_element(record.value, &self.rules, &mut ctx);
            }
        }
    }
}

impl<K: Key, D: Data, B: Data, F: KeyedBroadcastProcessFunction<K, D, B>> KeyedEngine<Option<K>, Connected<D, B>>
    for BroadcastEngine<K, D, B, F>
{
    type Output = F::Output;
    const EMITS_LATE: bool = false;

    fn on_element(
        &mut self,
        key: Option<K>,
        record: Record<Connected<D, B>>,
        _now_ms: i64,
        _emit: &mut Emit<'_, Connected<D, B>, F::Output>,
    ) -> Result<()> {
        self.arrivals += 1;
        let Record { time_ms, watermark_ms, value } = record;
        let (rank, element) = match (value, key) {
            (Connected::Rule(rule), _) => (0, Pending::Rule(Record { time_ms, watermark_ms, value: rule })),
            (Connected::Event(event), Some(key)) => {
                (1, Pending::Event(key, Record { time_ms, watermark_ms, value: event }))
            }
            (Connected::Event(_), None) => unreachable!("every event has a key"),
        };
        self.pending.insert((watermark_ms, rank, self.arrivals), element);
        Ok(())
    }

    fn advance_watermark(&mut self, watermark_ms: i64, now_ms: i64, emit: &mut Emit<'_, Connected<D, B>, F::Output>) {
        // Nothing stamped below the watermark can still arrive on either input; at the end of
        // input (`WATERMARK_MAX`) everything is processed.
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 >= watermark_ms && watermark_ms != WATERMARK_MAX {
                break;
            }
            let ((stamp, ..), element) = entry.remove_entry();
            self.process(stamp, element, now_ms, emit.results);
        }
        self.fire(watermark_ms, now_ms, emit.results);
    }

    fn advance_processing_time(&mut self, now_ms: i64, emit: &mut Emit<'_, Connected<D, B>, F::Output>) {
        let watermark_ms = self.watermark_ms;
        while let Some((time_ms, key)) = self.timers.pop_processing_time(now_ms) {
            let mut ctx = ProcessContext::new(
                &key,
                time_ms,
                watermark_ms,
                now_ms,
                watermark_ms,
                true,
                &mut self.state,
                &mut self.timers,
                emit.results,
            );
            self.function.on_timer(time_ms, TimeDomain::ProcessingTime, &self.rules, &mut ctx);
        }
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing_time()
    }

    fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    fn snapshot(&self, max_parallelism: u32) -> Vec<u8> {
        let mut groups: BTreeMap<u32, GroupSnapshot<K, D>> = BTreeMap::new();
        for (&group, &below) in &self.applied_below {
            if below > self.watermark_ms {
                groups.entry(group).or_insert_with(GroupSnapshot::empty).applied_below = Some(below);
            }
        }
        let mut rules = Vec::new();
        for (&place, element) in &self.pending {
            match element {
                Pending::Rule(record) => rules.push((place, record.clone())),
                Pending::Event(key, record) => groups
                    .entry(key_group(key, max_parallelism))
                    .or_insert_with(GroupSnapshot::empty)
                    .events
                    .push((place, key.clone(), record.clone())),
            }
        }
        let snapshot = BroadcastSnapshot {
            instance: self.instance,
            instances: self.instances,
            watermark_ms: self.watermark_ms,
            arrivals: self.arrivals,
            maps: self.rules.encode(),
            rules,
            groups,
            keyed_state: self.state.snapshot(),
            timers: self.timers.snapshot(),
        };
        encode(SnapshotKind::BroadcastState, &snapshot)
    }

    fn restore(&mut self, snapshots: &[Vec<u8>], key_groups: Range<u32>) -> Result<(), SnapshotError> {
        let mut decoded: Vec<BroadcastSnapshot<K, D, B>> = Vec::with_capacity(snapshots.len());
        for bytes in snapshots {
            decoded.push(decode(SnapshotKind::BroadcastState, bytes)?);
        }
        // The broadcast side restores from the instance that had processed the least: every
        // instance saw the same rules in the same order, so its rules are a prefix of the others'.
        let Some(behind) = decoded.iter().min_by_key(|snapshot| snapshot.watermark_ms) else {
            return Ok(());
        };
        let watermark_ms = behind.watermark_ms;
        let mut pending: BTreeMap<Place, Pending<K, D, B>> =
            behind.rules.iter().map(|(place, rule)| (*place, Pending::Rule(rule.clone()))).collect();
        let rules = BroadcastState::decode(behind.maps.clone());
        let mut arrivals = decoded.iter().map(|snapshot| snapshot.arrivals).max().unwrap_or(0);
        let mut applied_below = BTreeMap::new();
        for snapshot in &decoded {
            let owned = key_group_range(snapshot.instance, self.max_parallelism, snapshot.instances);
            for group in key_groups.clone().filter(|group| owned.contains(group)) {
                let entry = snapshot.groups.get(&group);
                let below = entry.and_then(|entry| entry.applied_below).unwrap_or(snapshot.watermark_ms);
                if below > watermark_ms {
                    applied_below.insert(group, below);
                }
                // Fresh arrival numbers: two old instances numbered theirs independently.
                for ((stamp, rank, _), key, record) in entry.map_or(&[][..], |entry| &entry.events[..]) {
                    arrivals += 1;
                    pending.insert((*stamp, *rank, arrivals), Pending::Event(key.clone(), record.clone()));
                }
            }
        }
        let keyed_state: Vec<Vec<u8>> = decoded.iter().map(|snapshot| snapshot.keyed_state.clone()).collect();
        let timers: Vec<Vec<u8>> = decoded.iter().map(|snapshot| snapshot.timers.clone()).collect();
        let mut restored_timers = TimerService::default();
        restored_timers.restore(&timers, key_groups.clone(), self.max_parallelism)?;
        self.state.restore(&keyed_state, key_groups)?;
        self.timers = restored_timers;
        self.rules = rules;
        self.watermark_ms = watermark_ms;
        self.pending = pending;
        self.arrivals = arrivals;
        self.applied_below = applied_below;
        Ok(())
    }
}

impl<K, D> GroupSnapshot<K, D> {
    fn empty() -> Self {
        GroupSnapshot { applied_below: None, events: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ValueStateDescriptor, worker_for_key};

    /// Counts each key's events; the rule `n` adds `n` to every key's count (not idempotent, so
    /// applying a rule twice to a key shows).
    struct Bonus {
        count: ValueStateDescriptor<i64>,
    }

    impl KeyedBroadcastProcessFunction<String, (), i64> for Bonus {
        type Output = (String, i64);

        fn open(&mut self, state: &mut KeyedStateBackend<String>) {
            state.register_value(&self.count);
        }

        fn process_element(&mut self, _: (), _: &BroadcastState, ctx: &mut ProcessContext<'_, String, (String, i64)>) {
            let count = ctx.state.value(&self.count).unwrap_or(0) + 1;
            ctx.state.update(&self.count, count);
            let key = ctx.key().clone();
            ctx.collect((key, count));
        }

        fn process_broadcast_element(&mut self, bonus: i64, ctx: &mut BroadcastContext<'_, String, (String, i64)>) {
            let count = &self.count;
            ctx.apply_to_keyed_state(count, |_, state| {
                let value = state.value(count).unwrap_or(0);
                state.update(count, value + bonus);
            });
        }
    }

    type Engine = BroadcastEngine<String, (), i64, Bonus>;

    fn engine(instance: usize, instances: usize) -> Engine {
        BroadcastEngine::new(Bonus { count: ValueStateDescriptor::new("count") }, 128, instance, instances)
    }

    fn feed(
        engine: &mut Engine,
        key: Option<&str>,
        stamp: i64,
        value: Connected<(), i64>,
        out: &mut Vec<Record<(String, i64)>>,
    ) {
        let record = Record { time_ms: stamp + 1, watermark_ms: stamp, value };
        let mut late = Vec::new();
        engine.on_element(key.map(str::to_string), record, 0, &mut Emit { results: out, late: &mut late }).unwrap();
    }

    fn advance(engine: &mut Engine, watermark_ms: i64, out: &mut Vec<Record<(String, i64)>>) {
        let mut late = Vec::new();
        engine.advance_watermark(watermark_ms, 0, &mut Emit { results: out, late: &mut late });
    }

    #[test]
    fn a_rule_one_old_worker_applied_and_another_had_pending_reaches_each_key_once() {
        let key_of = |worker: usize| {
            (0..).map(|i| format!("k{i}")).find(|key| worker_for_key(key, 128, 2) == worker).expect("a key")
        };
        let (a, b) = (key_of(0), key_of(1));
        let mut out = Vec::new();
        // Both old workers see: an event of their key (stamp 10), the rule +10 (20), another event (30).
        let mut old = [engine(0, 2), engine(1, 2)];
        for (engine, key) in old.iter_mut().zip([&a, &b]) {
            feed(engine, Some(key), 10, Connected::Event(()), &mut out);
            feed(engine, None, 20, Connected::Rule(10), &mut out);
            feed(engine, Some(key), 30, Connected::Event(()), &mut out);
        }
        // Worker 0 got past the rule before the checkpoint; worker 1 had not.
        advance(&mut old[0], 25, &mut out);
        advance(&mut old[1], 15, &mut out);
        let snapshots = [old[0].snapshot(128), old[1].snapshot(128)];

        // Restored on one worker: the rule reaches b (still pending for it), not a again.
        let mut restored = engine(0, 1);
        restored.restore(&snapshots, 0..128).unwrap();
        out.clear();
        advance(&mut restored, WATERMARK_MAX, &mut out);
        let mut results: Vec<(String, i64)> = out.into_iter().map(|record| record.value).collect();
        results.sort();
        let mut expected = vec![(a, 12), (b, 12)];
        expected.sort();
        assert_eq!(results, expected);
    }
}
