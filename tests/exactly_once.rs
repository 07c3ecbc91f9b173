//! The exactly-once check: a job with checkpoints, run by the simulator with crashes at any step,
//! network delays and disordered input, commits exactly the output of the same job run on threads
//! without faults — nothing lost, nothing twice — and every seed replays bit for bit.

use std::sync::Arc;

use flowlab::api::Env;
use flowlab::checkpoint::{CheckpointConfig, CheckpointStatus, MemoryStore, PlantedBugs, RestartStrategy, RestoreFrom};
use flowlab::connectors::{Event, GeneratorConfig, GeneratorSource, TransactionalCollectSink};
use flowlab::jobs::sim::{Check, CountSum};
use flowlab::runtime::{JobConfig, JobReport, NetworkConfig, SimConfig, execute, execute_simulated};
use flowlab::time::{Record, WatermarkStrategy};
use flowlab::window::{SessionWindows, TimeDomain, TumblingWindows, WindowResult};

/// The committed output of one run, as sorted `(event time, value)` pairs: what must not depend
/// on faults. (A record's watermark stamp says when it was emitted, which batching changes.)
#[derive(Clone, Debug, PartialEq)]
struct Committed {
    tumbling: Vec<(i64, Tumbling)>,
    sessions: Vec<(i64, Session)>,
    late: Vec<(i64, (String, i64))>,
}

type Tumbling = WindowResult<String, (u64, i64)>;
type Session = WindowResult<String, (String, i64)>;

fn timed<D: Ord>(records: Vec<Record<D>>) -> Vec<(i64, D)> {
    let mut timed: Vec<(i64, D)> = records.into_iter().map(|record| (record.time_ms, record.value)).collect();
    timed.sort();
    timed
}

const EVENTS: u64 = 1_500;

fn generator() -> GeneratorConfig {
    GeneratorConfig {
        keys: 6,
        events: EVENTS,
        events_per_second: 200,
        disorder_ms: 400,
        late_fraction: 0.05,
        straggler_ms_max: 2_000,
        seed: 11,
        start_ms: 0,
    }
}

/// generator → key_by → tumbling 1 s (count, sum) with its late elements, and 600 ms sessions;
/// every output through an exactly-once sink.
fn run(config: &JobConfig, sim: Option<SimConfig>) -> (Committed, JobReport) {
    run_into(config, sim, &Sinks::default())
}

/// The exactly-once sinks of [`run`]: tumbling results, sessions, late elements.
type Sinks =
    (TransactionalCollectSink<Tumbling>, TransactionalCollectSink<Session>, TransactionalCollectSink<(String, i64)>);

/// [`run`] into given sinks, which keep what earlier runs committed.
fn run_into(config: &JobConfig, sim: Option<SimConfig>, sinks: &Sinks) -> (Committed, JobReport) {
    let (tumbling, sessions, late) = sinks.clone();
    let sinks = sinks.clone();
    let job = move |env: &Env| {
        let events = env
            .source(GeneratorSource::new(generator()), WatermarkStrategy::bounded(400))
            .map(|event: Event| (event.key, event.value));
        let keyed = events.clone().key_by(|(key, _): &(String, i64)| key.clone());
        let windows = keyed.window(TumblingWindows::event_time(1_000).expect("valid size")).aggregate(CountSum);
        windows.results.sink_exactly_once(sinks.0.clone());
        windows.late.sink_exactly_once(sinks.2.clone());
        events
            .key_by(|(key, _): &(String, i64)| key.clone())
            .window(SessionWindows::with_gap(600, TimeDomain::EventTime).expect("valid gap"))
            .reduce(|a, b| (a.0.clone(), a.1 + b.1))
            .results
            .sink_exactly_once(sinks.1.clone());
    };
    let report = match sim {
        Some(sim) => execute_simulated(config, sim, job),
        None => execute(config, job),
    }
    .expect("the job runs");
    // Committed output is final: readers may have seen it.
    assert_eq!(
        tumbling.retracted() + sessions.retracted() + late.retracted(),
        0,
        "a restore took back committed output"
    );
    let committed = Committed {
        tumbling: timed(tumbling.records()),
        sessions: timed(sessions.records()),
        late: timed(late.records()),
    };
    (committed, report)
}

/// The same job on threads, without checkpoints or faults.
fn reference() -> Committed {
    run(&JobConfig::threads("reference", 2), None).0
}

fn checkpointed(seed: u64, workers: usize, bugs: PlantedBugs) -> JobConfig {
    let mut checkpoint = CheckpointConfig::new(Arc::new(MemoryStore::default()));
    checkpoint.interval_ms = 40;
    checkpoint.bugs = bugs;
    let mut config = JobConfig::simulated("exactly-once", workers, seed)
        .with_checkpoints(checkpoint, RestartStrategy::FixedDelay { attempts: 100, delay_ms: 10 });
    // Small source batches: checkpoints and crashes fall between them.
    config.source_batch_max = 16;
    config
}

fn faults(seed: u64, workers: usize) -> SimConfig {
    SimConfig {
        workers,
        seed,
        crash_probability: 0.01,
        crashes_max: 5,
        network: NetworkConfig { delay_ms_max: 20, clog_probability: 0.02, ..NetworkConfig::default() },
        ..SimConfig::default()
    }
}

#[test]
fn crashes_delays_and_disorder_commit_exactly_the_fault_free_output() {
    let expected = reference();
    assert!(!expected.tumbling.is_empty() && !expected.sessions.is_empty() && !expected.late.is_empty());
    let mut crashes = 0;
    let mut completed = 0;
    for seed in 0..40 {
        let workers = 1 + (seed as usize % 3);
        let config = || checkpointed(seed, workers, PlantedBugs::default());
        let (committed, report) = run(&config(), Some(faults(seed, workers)));
        let simulation = report.simulation.as_ref().expect("simulated");
        assert_eq!(committed, expected, "seed {seed} ({workers} workers, {} crashes)", simulation.crashes);
        let (again, replay) = run(&config(), Some(faults(seed, workers)));
        assert_eq!(
            replay.simulation.as_ref().expect("simulated").trace_hash(),
            simulation.trace_hash(),
            "seed {seed} does not replay"
        );
        assert_eq!(again, committed);
        crashes += simulation.crashes;
        completed += report.checkpoints.iter().filter(|c| c.status == CheckpointStatus::Completed).count();
    }
    eprintln!("40 seeds: {crashes} crashes, {completed} checkpoints completed");
    assert!(crashes >= 40, "the seeds crashed only {crashes} times");
    assert!(completed >= 40, "only {completed} checkpoints completed");
}

/// How many seeds of the window-count check it takes to catch `bugs` (a run whose committed
/// output differs from the fault-free one, or that fails), within `budget` seeds.
fn seeds_to_catch(bugs: PlantedBugs, budget: u64) -> Option<u64> {
    let mut check = Check::window_count(1_500, 6, 3);
    check.bounds.crash_probability_max = 0.02;
    let expected = check.expected().expect("the fault-free run").digest();
    check.bugs = bugs;
    (0..budget)
        .find(|&seed| check.run(seed).map_or(true, |run| run.committed.digest() != expected))
        .map(|seed| seed + 1)
}

#[test]
fn the_simulator_catches_every_planted_checkpoint_bug() {
    let budget = 200;
    let bugs = [
        ("skip alignment buffering", PlantedBugs { skip_alignment: true, ..PlantedBugs::default() }),
        (
            "commit before the checkpoint completes",
            PlantedBugs { commit_before_complete: true, ..PlantedBugs::default() },
        ),
        (
            "forget to re-commit pending transactions",
            PlantedBugs { skip_recommit_on_restore: true, ..PlantedBugs::default() },
        ),
        (
            "restore sources from the newest checkpoint",
            PlantedBugs { restore_sources_from_newest: true, ..PlantedBugs::default() },
        ),
    ];
    for (name, bug) in bugs {
        let seeds = seeds_to_catch(bug, budget);
        eprintln!("{name}: caught after {seeds:?} seeds");
        assert!(seeds.is_some(), "{name}: not caught in {budget} seeds");
    }
    assert_eq!(seeds_to_catch(PlantedBugs::default(), 30), None, "the correct engine fails a seed");
}

#[test]
fn five_hundred_seeds_of_window_count_with_every_fault_are_exactly_once_and_replay() {
    let mut check = Check::window_count(600, 5, 3);
    check.bounds.crash_probability_max = 0.01;
    let expected = check.expected().expect("the fault-free run");
    let (mut crashes, mut completed, mut hashes) = (0, 0, std::collections::BTreeSet::new());
    for seed in 0..500 {
        let run = check.run(seed).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        let replay = format!("replay: flowlab sim --seed {seed} --events 600 --keys 5 --workers 3 --crash-max 0.01");
        assert_eq!(run.committed, expected, "seed {seed} committed another output; {replay}");
        let again = check.run(seed).unwrap_or_else(|error| panic!("seed {seed}, second run: {error}"));
        assert_eq!(again.simulation.trace_hash(), run.simulation.trace_hash(), "seed {seed} does not replay; {replay}");
        crashes += run.simulation.crashes;
        completed += run.checkpoints_completed();
        hashes.insert(run.simulation.trace_hash());
    }
    eprintln!("500 seeds: {crashes} crashes, {completed} checkpoints completed, {} distinct traces", hashes.len());
    assert!(crashes >= 300, "only {crashes} crashes in 500 seeds");
    assert_eq!(hashes.len(), 500, "two seeds ran the same interleaving");
}

#[test]
fn a_job_stopped_with_a_savepoint_resumes_on_another_parallelism() {
    let expected = reference();
    let store = Arc::new(MemoryStore::default());
    let sinks = Sinks::default();
    let mut checkpoint = CheckpointConfig::new(store.clone());
    checkpoint.interval_ms = 40;
    checkpoint.stop_with_savepoint_after_ms = Some(150);
    let mut first = JobConfig::simulated("savepoint", 2, 3).with_checkpoints(checkpoint, RestartStrategy::None);
    first.source_batch_max = 16;
    let (stopped, report) = run_into(&first, Some(SimConfig { workers: 2, seed: 3, ..SimConfig::default() }), &sinks);
    let savepoint = report.savepoint.expect("the job stopped at a savepoint");
    assert!(stopped.tumbling.len() < expected.tumbling.len(), "the job stopped before its end");
    assert!(stopped.tumbling.iter().all(|row| expected.tumbling.contains(row)));

    let mut resume = CheckpointConfig::new(store);
    resume.restore = RestoreFrom::Checkpoint(savepoint);
    let second = JobConfig::threads("savepoint", 3).with_checkpoints(resume, RestartStrategy::None);
    let (committed, report) = run_into(&second, None, &sinks);
    assert_eq!(report.savepoint, None);
    assert_eq!(committed, expected);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..proptest::prelude::ProptestConfig::default() })]

    /// proptest picks the seed and the fault bounds; a failure shrinks to a small case and its
    /// message is the command that replays it.
    #[test]
    fn any_seed_and_fault_bounds_commit_the_fault_free_output(
        seed in 0u64..1_000_000,
        workers in 1usize..=3,
        delay_ms_max in 0i64..=40,
        crash_per_mille in 0u32..=20,
    ) {
        let mut check = Check::window_count(400, 4, workers);
        check.bounds.delay_ms_max = delay_ms_max;
        check.bounds.crash_probability_max = f64::from(crash_per_mille) / 1_000.0;
        let expected = check.expected().expect("the fault-free run");
        let run = check.run(seed).expect("the seed runs");
        proptest::prop_assert_eq!(
            run.committed,
            expected,
            "replay: flowlab sim --seed {} --events 400 --keys 4 --workers {} --delay-max {}ms --crash-max {}",
            seed,
            workers,
            delay_ms_max,
            check.bounds.crash_probability_max
        );
    }
}
