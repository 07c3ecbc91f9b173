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

use std::any::Any;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast as _;

use super::process::ProcessContext;
use super::{Data, Key, KeyedStream, OperatorKind, Partitioning, Stream};
use crate::metrics::OperatorMetrics;
use crate::state::{KeyedStateBackend, MapStateDescriptor, StateData, StateDescriptor, TimerService};
use crate::time::{Record, WATERMARK_MAX, WATERMARK_MIN};
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
#[derive(Default)]
pub struct BroadcastState {
    maps: BTreeMap<String, Box<dyn Any>>,
}

impl BroadcastState {
    fn map<UK: StateData + Ord, UV: StateData>(
        &self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> Option<&BTreeMap<UK, UV>> {
        self.maps.get(descriptor.name()).map(|map| {
            map.downcast_ref::<BTreeMap<UK, UV>>()
                .unwrap_or_else(|| panic!("broadcast state {:?} is used with two types", descriptor.name()))
        })
    }

    fn map_mut<UK: StateData + Ord, UV: StateData>(
        &mut self,
        descriptor: &MapStateDescriptor<UK, UV>,
    ) -> &mut BTreeMap<UK, UV> {
        self.maps
            .entry(descriptor.name().to_string())
            .or_insert_with(|| Box::new(BTreeMap::<UK, UV>::new()))
            .downcast_mut::<BTreeMap<UK, UV>>()
            .unwrap_or_else(|| panic!("broadcast state {:?} is used with two types", descriptor.name()))
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

enum Pending<K, D, B> {
    Rule(Record<B>),
    Event(K, Record<D>),
}

impl<'scope, K: Key, D: Data, B: Data> ConnectedStreams<'scope, K, D, B> {
    /// Runs `function` over both streams; see the module docs for the order of rules and events.
    pub fn process<F: KeyedBroadcastProcessFunction<K, D, B>>(self, mut function: F) -> Stream<'scope, F::Output> {
        let input = self.keyed.stream().clone();
        let env = input.env.clone();
        let node = env.add_node(
            "broadcast process",
            OperatorKind::Keyed,
            &[(input.node, Partitioning::Hash), (self.broadcast.stream.node, Partitioning::Forward)],
        );
        let metrics = env.metrics(node, "broadcast process");
        let context = env.context().clone();
        if context.checkpoints.is_some() {
            // Refused rather than run without its state in the checkpoints: a restore would lose
            // the rules and every key's state, silently.
            context.failure.fail(crate::Error::Usage(
                "the broadcast process operator does not take part in checkpoints yet; run this job without checkpoints"
                    .to_string(),
            ));
        }
        let key: Rc<dyn Fn(&D) -> K> = self.keyed.key_fn();
        let mut builder = OperatorBuilder::new("broadcast process".to_string(), env.scope());
        let activator = env.scope().activator_for(builder.operator_info().address);
        let mut events_input = builder.new_input(input.stream.clone(), self.keyed.exchange());
        let mut rules_input = builder.new_input(self.broadcast.stream.stream.clone(), Pipeline);
        let (output, stream) = builder.new_output();
        let mut output = OutputBuilder::from(output);

        builder.build(move |mut capabilities| {
            let mut held = CapabilitySet::from_elem(capabilities.pop().expect("one output"));
            let mut state = KeyedStateBackend::new(context.max_parallelism);
            function.open(&mut state);
            let mut timers: TimerService<K> = TimerService::new();
            let mut rules = BroadcastState::default();
            let mut watermark_ms = WATERMARK_MIN;
            // `(stamp, rules before events, arrival)` → element.
            let mut pending: BTreeMap<(i64, u8, u64), Pending<K, D, B>> = BTreeMap::new();
            let mut arrivals: u64 = 0;
            let mut results: Vec<Record<F::Output>> = Vec::new();

            move |frontiers| {
                let now_ms = context.clock.now_ms();
                rules_input.for_each(|_time, data: &mut Vec<Record<B>>| {
                    for record in data.drain(..) {
                        arrivals += 1;
                        pending.insert((record.watermark_ms, 0, arrivals), Pending::Rule(record));
                    }
                });
                events_input.for_each(|_time, data: &mut Vec<Record<D>>| {
                    OperatorMetrics::add(&metrics.records_in, data.len());
                    for record in data.drain(..) {
                        arrivals += 1;
                        pending.insert((record.watermark_ms, 1, arrivals), Pending::Event(key(&record.value), record));
                    }
                });
                // Nothing with a stamp below `safe` can still arrive on either input.
                let safe = frontiers
                    .iter()
                    .flat_map(|frontier| frontier.frontier().iter().map(|time| time.inner).collect::<Vec<_>>())
                    .min()
                    .map_or(WATERMARK_MAX, |coordinate| coordinate.saturating_sub(1));
                let fire = |function: &mut F,
                            state: &mut KeyedStateBackend<K>,
                            timers: &mut TimerService<K>,
                            rules: &BroadcastState,
                            watermark_ms: &mut i64,
                            to_ms: i64,
                            results: &mut Vec<Record<F::Output>>| {
                    if to_ms <= *watermark_ms {
                        return;
                    }
                    let previous = *watermark_ms;
                    *watermark_ms = to_ms;
                    while let Some((time_ms, key)) = timers.pop_event_time(to_ms) {
                        let mut ctx =
                            ProcessContext::new(&key, time_ms, to_ms, now_ms, previous, true, state, timers, results);
                        function.on_timer(time_ms, TimeDomain::EventTime, rules, &mut ctx);
                    }
                };
                while let Some(entry) = pending.first_entry() {
                    if entry.key().0 >= safe && safe != WATERMARK_MAX {
                        break;
                    }
                    let ((stamp, ..), element) = entry.remove_entry();
                    match element {
                        Pending::Rule(record) => {
                            let mut ctx = BroadcastContext {
                                broadcast: &mut rules,
                                state: &mut state,
                                timestamp_ms: record.time_ms,
                                watermark_ms,
                                out: &mut results,
                            };
                            function.process_broadcast_element(record.value, &mut ctx);
                        }
                        Pending::Event(key, record) => {
                            fire(
                                &mut function,
                                &mut state,
                                &mut timers,
                                &rules,
                                &mut watermark_ms,
                                stamp,
                                &mut results,
                            );
                            let mut ctx = ProcessContext::new(
                                &key,
                                record.time_ms,
                                watermark_ms,
                                now_ms,
                                watermark_ms,
                                false,
                                &mut state,
                                &mut timers,
                                &mut results,
                            );
                            function.process_element(record.value, &rules, &mut ctx);
                        }
                    }
                }
                fire(&mut function, &mut state, &mut timers, &rules, &mut watermark_ms, safe, &mut results);
                while let Some((time_ms, key)) = timers.pop_processing_time(now_ms) {
                    let mut ctx = ProcessContext::new(
                        &key,
                        time_ms,
                        watermark_ms,
                        now_ms,
                        watermark_ms,
                        true,
                        &mut state,
                        &mut timers,
                        &mut results,
                    );
                    function.on_timer(time_ms, TimeDomain::ProcessingTime, &rules, &mut ctx);
                }
                metrics.set_watermark(watermark_ms);
                if !results.is_empty() {
                    OperatorMetrics::add(&metrics.records_out, results.len());
                    output.activate().session(&held).give_iterator(results.drain(..));
                }
                let mut frontier = timely::progress::Antichain::new();
                for input in frontiers {
                    for time in input.frontier().iter() {
                        frontier.insert(*time);
                    }
                }
                held.downgrade(frontier.iter());
                if !frontier.is_empty()
                    && let Some(next_ms) = timers.next_processing_time()
                {
                    activator
                        .activate_after(Duration::from_millis((next_ms + 1 - context.clock.now_ms()).max(0) as u64));
                }
            }
        });
        Stream::new(env, stream, node, false)
    }
}
