//! Broadcast state and the keyed broadcast process function: rules meet events in stamp order,
//! the same on every worker and for every parallelism.

use flowlab::api::{BroadcastContext, BroadcastState, Env, KeyedBroadcastProcessFunction, ProcessContext};
use std::sync::Arc;

use flowlab::checkpoint::{CheckpointConfig, MemoryStore, RestartStrategy, RestoreFrom};
use flowlab::connectors::{CollectSink, CollectionSource, TransactionalCollectSink};
use flowlab::runtime::{JobConfig, SimConfig, execute, execute_simulated};
use flowlab::state::{KeyedStateBackend, MapStateDescriptor, ValueStateDescriptor};
use flowlab::time::WatermarkStrategy;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Rule {
    /// Alert when a user's value is at least this.
    Threshold(i64),
    /// Forget every user's count.
    Reset,
}

/// Counts each user's events and emits `(user, value, count)` for values at or above the rule's
/// threshold (none before the first rule).
struct Alerts {
    threshold: MapStateDescriptor<String, i64>,
    count: ValueStateDescriptor<u64>,
}

impl KeyedBroadcastProcessFunction<String, (String, i64), Rule> for Alerts {
    type Output = (String, i64, u64);

    fn open(&mut self, state: &mut KeyedStateBackend<String>) {
        state.register_value(&self.count);
    }

    fn process_element(
        &mut self,
        (user, value): (String, i64),
        rules: &BroadcastState,
        ctx: &mut ProcessContext<'_, String, Self::Output>,
    ) {
        let count = ctx.state.value(&self.count).unwrap_or(0) + 1;
        ctx.state.update(&self.count, count);
        if let Some(threshold) = rules.get(&self.threshold, &"threshold".to_string())
            && value >= *threshold
        {
            ctx.collect((user, value, count));
        }
    }

    fn process_broadcast_element(&mut self, rule: Rule, ctx: &mut BroadcastContext<'_, String, Self::Output>) {
        match rule {
            Rule::Threshold(threshold) => ctx.broadcast.put(&self.threshold, "threshold".to_string(), threshold),
            Rule::Reset => {
                let count = &self.count;
                ctx.apply_to_keyed_state(count, |_, state| state.clear(count));
            }
        }
    }
}

fn run(parallelism: usize) -> Vec<(String, i64, u64)> {
    // Monotonous watermarks. Rule stamps: -inf, 999, 2999. Event stamps: -inf, 499, 1499, 2499, 3499, 4499.
    let rules = vec![(1_000, Rule::Threshold(10)), (3_000, Rule::Threshold(50)), (4_000, Rule::Reset)];
    let events: Vec<(i64, (String, i64))> = vec![
        (500, ("ann".to_string(), 20)),
        (1_500, ("bob".to_string(), 5)),
        (2_500, ("ann".to_string(), 30)),
        (3_500, ("bob".to_string(), 60)),
        (4_500, ("ann".to_string(), 70)),
        (5_000, ("bob".to_string(), 80)),
    ];
    let out = CollectSink::new();
    let sink = out.clone();
    execute(&JobConfig::threads("broadcast", parallelism), move |env: &Env| {
        let rules = env.source(CollectionSource::new(rules.clone()), WatermarkStrategy::monotonous()).broadcast();
        env.source(CollectionSource::new(events.clone()), WatermarkStrategy::monotonous())
            .key_by(|(user, _): &(String, i64)| user.clone())
            .connect(rules)
            .process(Alerts { threshold: MapStateDescriptor::new("rules"), count: ValueStateDescriptor::new("count") })
            .sink(sink.clone());
    })
    .unwrap();
    out.sorted_values()
}

#[test]
fn rules_apply_by_stamp_and_reset_reaches_every_key() {
    // In stamp order: rule 10 (-inf) before event ann@500 (-inf, rules first at equal stamps);
    // bob@1500 (499) sees 10; rule 50 (999) comes before ann@2500 (1499) and bob@3500 (2499);
    // Reset (2999) comes before ann@4500 (3499) and bob@5000 (4499), so their counts restart.
    //   ann 20 >= 10 -> (ann, 20, 1)    bob 5 < 10      ann 30 < 50     bob 60 >= 50 -> (bob, 60, 2)
    //   reset                           ann 70 >= 50 -> (ann, 70, 1)    bob 80 >= 50 -> (bob, 80, 1)
    let expected = vec![
        ("ann".to_string(), 20, 1),
        ("ann".to_string(), 70, 1),
        ("bob".to_string(), 60, 2),
        ("bob".to_string(), 80, 1),
    ];
    for parallelism in [1, 2, 3] {
        assert_eq!(run(parallelism), expected, "parallelism {parallelism}");
    }
}

/// Many users, a threshold rule and a reset every 40 s, events one per 100 ms with disorder.
/// Timed rules and timed `(user, value)` events.
type Input = (Vec<(i64, Rule)>, Vec<(i64, (String, i64))>);

fn checkpointed_input() -> Input {
    let mut rules = vec![(0, Rule::Threshold(30))];
    for at in (40_000..200_000).step_by(40_000) {
        rules.push((at, Rule::Reset));
        rules.push((at + 20_000, Rule::Threshold(30 + at / 4_000)));
    }
    let events = (0..2_000i64)
        .map(|i| {
            let time = i * 100 - (i * 7_919 % 13) * 50;
            (time, (format!("user{}", i * 31 % 23), i * 37 % 100))
        })
        .collect();
    (rules, events)
}

fn alerts_job(sink: TransactionalCollectSink<(String, i64, u64)>) -> impl Fn(&Env<'_>) + Send + Sync + 'static {
    let (rules, events) = checkpointed_input();
    move |env: &Env<'_>| {
        let rules = env.source(CollectionSource::new(rules.clone()), WatermarkStrategy::monotonous()).broadcast();
        env.source(CollectionSource::new(events.clone()), WatermarkStrategy::bounded(1_000))
            .key_by(|(user, _): &(String, i64)| user.clone())
            .connect(rules)
            .process(Alerts { threshold: MapStateDescriptor::new("rules"), count: ValueStateDescriptor::new("count") })
            .sink_exactly_once(sink.clone());
    }
}

fn committed(sink: &TransactionalCollectSink<(String, i64, u64)>) -> Vec<(String, i64, u64)> {
    sink.sorted_values()
}

#[test]
fn rules_and_keyed_state_survive_crashes_and_rescaling() {
    let reference = TransactionalCollectSink::new();
    execute(&JobConfig::threads("alerts", 2), alerts_job(reference.clone())).unwrap();
    let expected = committed(&reference);
    assert!(expected.len() > 100, "only {} alerts", expected.len());

    // Crashes: every seed commits the reference.
    for seed in 0..20 {
        let sink = TransactionalCollectSink::new();
        let mut checkpoint = CheckpointConfig::new(Arc::new(MemoryStore::default()));
        checkpoint.interval_ms = 15;
        let mut config = JobConfig::simulated("alerts", 3, seed)
            .with_checkpoints(checkpoint, RestartStrategy::FixedDelay { attempts: u32::MAX, delay_ms: 5 });
        config.source_batch_max = 16;
        let mut sim = SimConfig { workers: 3, seed, crash_probability: 0.01, crashes_max: 4, ..SimConfig::default() };
        sim.network.delay_ms_max = 20;
        execute_simulated(&config, sim, alerts_job(sink.clone())).unwrap();
        assert_eq!(committed(&sink), expected, "seed {seed}");
        assert_eq!(sink.retracted(), 0, "seed {seed} took back committed alerts");
    }

    // Savepoints on one parallelism, resumed on another: a reset applied on one old worker and
    // still pending on another must reach every key exactly once.
    for (seed, before, after, stop_ms) in [(1, 3, 2, 20), (2, 2, 3, 35), (3, 3, 1, 50), (4, 1, 3, 25)] {
        let sink = TransactionalCollectSink::new();
        let store = Arc::new(MemoryStore::default());
        let mut checkpoint = CheckpointConfig::new(store.clone());
        checkpoint.interval_ms = 10;
        checkpoint.stop_with_savepoint_after_ms = Some(stop_ms);
        let mut config =
            JobConfig::simulated("alerts", before, seed).with_checkpoints(checkpoint, RestartStrategy::None);
        config.source_batch_max = 16;
        let mut sim = SimConfig { workers: before, seed, ..SimConfig::default() };
        sim.network.delay_ms_max = 20;
        let report = execute_simulated(&config, sim, alerts_job(sink.clone())).unwrap();
        let savepoint = report.savepoint.expect("stopped at a savepoint");
        assert!(committed(&sink).len() < expected.len(), "seed {seed}: stopped after the end");
        let mut resume = CheckpointConfig::new(store);
        resume.restore = RestoreFrom::Checkpoint(savepoint);
        let config = JobConfig::threads("alerts", after).with_checkpoints(resume, RestartStrategy::None);
        execute(&config, alerts_job(sink.clone())).unwrap();
        assert_eq!(committed(&sink), expected, "seed {seed}: savepoint on {before} workers resumed on {after}");
    }
}
