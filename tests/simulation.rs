//! Jobs on the simulated substrate: the same seed replays the same run, and no seed changes an
//! event-time result.

use std::collections::BTreeSet;

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CsvSource, Event, GeneratorConfig, GeneratorSource};
use flowlab::runtime::{JobConfig, SimConfig, execute, execute_simulated};
use flowlab::time::{Record, WatermarkStrategy};
use flowlab::window::{AggregateFunction, SessionWindows, TimeDomain, TumblingWindows, WindowResult};
use proptest::prelude::*;

/// Count and sum of a window's values.
struct CountSum;

impl AggregateFunction<(String, i64)> for CountSum {
    type Accumulator = (i64, i64);
    type Output = (i64, i64);

    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }

    fn add(&self, accumulator: &mut (i64, i64), value: &(String, i64)) {
        accumulator.0 += 1;
        accumulator.1 += value.1;
    }

    fn merge(&self, accumulator: &mut (i64, i64), other: (i64, i64)) {
        accumulator.0 += other.0;
        accumulator.1 += other.1;
    }

    fn result(&self, accumulator: &(i64, i64)) -> (i64, i64) {
        *accumulator
    }
}

type Tumbling = Record<WindowResult<String, (i64, i64)>>;
type Sessions = Record<WindowResult<String, (String, i64)>>;
type Late = Record<(String, i64)>;

/// What a run of [`windowed_job`] produced, each sink's records in arrival order.
#[derive(Clone, Debug, PartialEq)]
struct Outputs {
    tumbling: Vec<Tumbling>,
    sessions: Vec<Sessions>,
    late: Vec<Late>,
}

impl Outputs {
    /// The result multiset: what must not depend on the substrate or the seed.
    fn sorted(&self) -> Outputs {
        let mut sorted = self.clone();
        sorted.tumbling.sort();
        sorted.sessions.sort();
        sorted.late.sort();
        sorted
    }
}

fn generator(events: u64) -> GeneratorConfig {
    GeneratorConfig {
        keys: 12,
        events,
        events_per_second: 500,
        disorder_ms: 300,
        late_fraction: 0.03,
        straggler_ms_max: 3_000,
        seed: 42,
        start_ms: 0,
    }
}

/// generator → key_by → tumbling 1 s aggregate (count, sum) and 700 ms sessions (reduce), with
/// the elements too late for the tumbling windows; run on `config`, or simulated with `sim`.
fn windowed_job(events: u64, config: &JobConfig, sim: Option<SimConfig>) -> (Outputs, Option<u64>) {
    let (tumbling, sessions, late) = (CollectSink::new(), CollectSink::new(), CollectSink::new());
    let (tumbling_in, sessions_in, late_in) = (tumbling.clone(), sessions.clone(), late.clone());
    let job = move |env: &Env| {
        let keyed = env
            .source(GeneratorSource::new(generator(events)), WatermarkStrategy::bounded(300))
            .map(|event: Event| (event.key, event.value))
            .key_by(|(key, _): &(String, i64)| key.clone());
        let windows = keyed.window(TumblingWindows::event_time(1_000).expect("valid size")).aggregate(CountSum);
        windows.results.sink(tumbling_in.clone());
        windows.late.sink(late_in.clone());
        let keyed = env
            .source(GeneratorSource::new(generator(events)), WatermarkStrategy::bounded(300))
            .map(|event: Event| (event.key, event.value))
            .key_by(|(key, _): &(String, i64)| key.clone());
        keyed
            .window(SessionWindows::with_gap(700, TimeDomain::EventTime).expect("valid gap"))
            .reduce(|a, b| (a.0.clone(), a.1 + b.1))
            .results
            .sink(sessions_in.clone());
    };
    let report = match sim {
        Some(sim) => execute_simulated(config, sim, job),
        None => execute(config, job),
    }
    .expect("the job runs");
    let outputs = Outputs { tumbling: tumbling.records(), sessions: sessions.records(), late: late.records() };
    (outputs, report.simulation.map(|simulation| simulation.trace_hash()))
}

fn simulated(events: u64, workers: usize, seed: u64) -> (Outputs, u64) {
    let (outputs, hash) = windowed_job(events, &JobConfig::simulated("simulated", workers, seed), None);
    (outputs, hash.expect("a simulated run reports its trace"))
}

fn threads(events: u64, workers: usize) -> Outputs {
    windowed_job(events, &JobConfig::threads("threads", workers), None).0.sorted()
}

#[test]
fn the_same_seed_replays_the_same_trace_and_the_same_records_in_order() {
    for seed in 0..20 {
        let (first, first_hash) = simulated(1_500, 3, seed);
        let (second, second_hash) = simulated(1_500, 3, seed);
        assert_eq!(first_hash, second_hash, "seed {seed}: trace hashes differ; replay with this seed");
        assert_eq!(first, second, "seed {seed}: output records differ (in order); replay with this seed");
        assert!(!first.tumbling.is_empty() && !first.sessions.is_empty(), "seed {seed}: the job produced nothing");
    }
}

#[test]
fn different_seeds_step_differently_and_agree_with_threads() {
    let expected = threads(1_500, 3);
    assert!(!expected.late.is_empty(), "the input has late elements");
    let mut hashes = BTreeSet::new();
    let mut arrival_orders = BTreeSet::new();
    for seed in 0..20 {
        let (outputs, hash) = simulated(1_500, 3, seed);
        assert_eq!(outputs.sorted(), expected, "seed {seed}: the result differs from the threads substrate");
        hashes.insert(hash);
        arrival_orders.insert(format!("{:?}", outputs.tumbling));
    }
    assert_eq!(hashes.len(), 20, "20 seeds gave only {} distinct traces", hashes.len());
    assert!(arrival_orders.len() > 1, "the arrival order at the sinks never varied");
}

#[test]
fn stalls_and_jittered_ticks_change_the_run_but_not_the_result() {
    let expected = threads(800, 2);
    for seed in 0..6 {
        let sim = SimConfig {
            workers: 2,
            seed,
            stall_probability: 0.1,
            stall_steps_max: 20,
            tick_jitter_ms: 5,
            ..SimConfig::default()
        };
        let config = JobConfig::threads("stalls", 2);
        let (first, first_hash) = windowed_job(800, &config, Some(sim.clone()));
        let (second, second_hash) = windowed_job(800, &config, Some(sim));
        assert_eq!(first_hash, second_hash, "seed {seed}: trace hashes differ");
        assert_eq!(first, second, "seed {seed}: outputs differ");
        assert_eq!(first.sorted(), expected, "seed {seed}: the result differs from the threads substrate");
    }
}

#[test]
fn processing_time_is_the_virtual_clock() {
    // Processing-time windows depend on when records arrive: on threads that is the wall clock,
    // in simulation it is the seed's virtual clock, so the same seed gives the same windows.
    let run = |seed| {
        let out = CollectSink::new();
        let sink = out.clone();
        let report = execute(&JobConfig::simulated("processing time", 2, seed), move |env: &Env| {
            env.source(GeneratorSource::new(generator(5_000)), WatermarkStrategy::bounded(300))
                .map(|event: Event| (event.key, event.value))
                .key_by(|(key, _): &(String, i64)| key.clone())
                .window(TumblingWindows::new(2, 0, TimeDomain::ProcessingTime).expect("valid size"))
                .aggregate(CountSum)
                .results
                .sink(sink.clone());
        })
        .expect("the job runs");
        (out.records(), report.simulation.expect("simulated"))
    };
    let (first, report) = run(3);
    let (second, _) = run(3);
    assert_eq!(first, second, "seed 3: processing-time results differ between two runs");
    let windows: BTreeSet<_> = first.iter().map(|record| record.value.window).collect();
    assert!(windows.iter().all(|window| window.end <= report.end_ms), "seed 3: a window ends after the virtual clock");
    assert!(windows.len() > 1, "seed 3: records arrived over more than one 5 ms tick window");
}

#[test]
fn a_failing_job_fails_under_simulation_too() {
    let error = execute(&JobConfig::simulated("missing", 2, 1), |env: &Env| {
        env.source(CsvSource::new("/nonexistent/flowlab/input.csv"), WatermarkStrategy::monotonous())
            .sink(CollectSink::<Event>::new());
    })
    .unwrap_err();
    assert!(error.to_string().contains("input.csv"), "{error}");
}

#[test]
fn a_panicking_operator_names_the_seed() {
    let error = execute(&JobConfig::simulated("panics", 2, 77), |env: &Env| {
        env.source(GeneratorSource::new(generator(100)), WatermarkStrategy::monotonous())
            .map(|event: Event| -> Event { panic!("operator bug at line {}", event.line) })
            .sink(CollectSink::new());
    })
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("seed 77") && message.contains("operator bug"), "{message}");
}

#[test]
fn a_result_that_depends_on_the_step_order_is_caught() {
    // A deliberately broken job: it writes processing time (the virtual clock, which advances one
    // tick per step) into its output. The same seed still replays it exactly, but other seeds
    // step differently and so produce other results: what comparing seeds is for.
    let run = |seed| {
        let out = CollectSink::new();
        let sink = out.clone();
        execute(&JobConfig::simulated("broken", 3, seed), move |env: &Env| {
            let clock = std::sync::Arc::clone(&env.context().clock);
            env.source(GeneratorSource::new(generator(3_000)), WatermarkStrategy::monotonous())
                .key_by(|event: &Event| event.key.clone())
                .reduce(|a, b| Event { key: a.key.clone(), value: a.value + b.value, line: b.line })
                .map(move |event| (event.key, event.value, clock.now_ms()))
                .sink(sink.clone());
        })
        .expect("the job runs");
        out.sorted_values()
    };
    let first = run(0);
    assert_eq!(first, run(0), "seed 0: the broken job is still deterministic per seed");
    let differing: Vec<u64> = (1..20).filter(|&seed| run(seed) != first).collect();
    assert!(!differing.is_empty(), "no seed of 1..20 exposed the step-order dependency");
}

#[test]
fn the_sim_command_checks_seeds_and_replays_identically_across_processes() {
    let flowlab = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flowlab")).args(args).output().expect("flowlab runs")
    };
    let args = ["sim", "--seeds", "4..7", "--workers", "3", "--events", "1500", "--check-determinism"];
    let first = flowlab(&args);
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    let seed_lines: Vec<&str> = stdout.lines().filter(|line| line.starts_with("seed")).collect();
    assert_eq!(seed_lines.len(), 3, "{stdout}");
    assert!(seed_lines.iter().all(|line| line.ends_with("ok")), "{stdout}");
    assert!(stdout.contains("3 seeds, 3 ok, 0 failed"), "{stdout}");
    // Trace hashes are a function of the seed alone: another process prints the same lines.
    let second = flowlab(&args);
    let second_stdout = String::from_utf8_lossy(&second.stdout).into_owned();
    let second_lines: Vec<&str> = second_stdout.lines().filter(|line| line.starts_with("seed")).collect();
    assert_eq!(seed_lines, second_lines);

    let bad = flowlab(&["sim", "--seeds", "5..5"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--seeds"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any seed, any parallelism: the event-time result is the threads substrate's.
    #[test]
    fn any_seed_gives_the_threads_result(seed in any::<u64>(), workers in 1usize..=4) {
        let (outputs, _) = simulated(600, workers, seed);
        prop_assert_eq!(
            outputs.sorted(),
            threads(600, workers),
            "seed {} workers {}: replay with JobConfig::simulated(_, {}, {})",
            seed, workers, workers, seed
        );
    }
}

#[test]
fn delayed_and_clogged_exchanges_replay_by_seed_and_keep_the_result() {
    let expected = threads(1_500, 3);
    for seed in 0..12 {
        let mut config = JobConfig::simulated("network", 3, seed);
        config.network.delay_ms_max = 40;
        config.network.clog_probability = 0.05;
        let (first, first_hash) = windowed_job(1_500, &config, None);
        let (second, second_hash) = windowed_job(1_500, &config, None);
        assert_eq!(first_hash, second_hash, "seed {seed}: trace hashes differ with network delays");
        assert_eq!(first, second, "seed {seed}: outputs differ (in order) with network delays");
        assert_eq!(first.sorted(), expected, "seed {seed}: delays changed the result");
        let (_, quiet_hash) = simulated(1_500, 3, seed);
        assert_ne!(first_hash, Some(quiet_hash), "seed {seed}: the delays left no trace");
    }
}
