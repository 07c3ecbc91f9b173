//! Simulation checks of the built-in jobs: what `flowlab sim` runs, and what tests call.
//!
//! A check runs a job under the simulator with checkpoints, crashes, network faults, stalls and
//! disordered input, and compares its *committed* output with the output of the same job run on
//! threads without faults or checkpoints: equal means nothing was lost and nothing written twice.
//!
//! Swarm testing (TigerBeetle's VOPR): each seed draws its own fault mix within the configured
//! bounds — some seeds have no delays, some crash often, some stall — so that a range of seeds
//! covers many mixes rather than one.

use std::sync::Arc;

use flowlab_sim::{NetworkConfig, SimConfig, SimReport, SimRng, derive_seed, stable_hash};

use crate::api::Env;
use crate::checkpoint::{
    CheckpointConfig, CheckpointRecord, CheckpointStatus, MemoryStore, PlantedBugs, RestartStrategy,
};
use crate::connectors::{Event, GeneratorConfig, GeneratorSource, TransactionalCollectSink};
use crate::error::{Error, Result};
use crate::runtime::{JobConfig, execute, execute_simulated};
use crate::time::{Record, WatermarkStrategy};
use crate::window::{AggregateFunction, TumblingWindows, WindowResult};

/// Which faults a check injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    /// None: only the seeded step order varies.
    None,
    /// Delayed and clogged messages, stalled workers.
    Delay,
    /// Crashes at any step.
    Crash,
    /// Everything.
    All,
}

impl Faults {
    /// Parses `none`, `delay`, `crash` or `all`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "none" => Ok(Faults::None),
            "delay" => Ok(Faults::Delay),
            "crash" => Ok(Faults::Crash),
            "all" => Ok(Faults::All),
            other => Err(Error::Usage(format!("unknown faults {other:?}: write none, delay, crash or all"))),
        }
    }

    fn delays(self) -> bool {
        matches!(self, Faults::Delay | Faults::All)
    }

    fn crashes(self) -> bool {
        matches!(self, Faults::Crash | Faults::All)
    }
}

impl std::fmt::Display for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Faults::None => "none",
            Faults::Delay => "delay",
            Faults::Crash => "crash",
            Faults::All => "all",
        })
    }
}

/// The bounds each seed draws its fault rates from. Defaults: messages delayed up to 30 ms and
/// clogging with probability up to 0.05, workers stalling with probability up to 0.02 per step,
/// crashes with probability up to 0.003 per step and at most 4 per run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultBounds {
    /// The longest message delay a seed may draw, in virtual ms.
    pub delay_ms_max: i64,
    /// The highest clog probability a seed may draw.
    pub clog_probability_max: f64,
    /// The highest per-step stall probability a seed may draw.
    pub stall_probability_max: f64,
    /// The highest per-step crash probability a seed may draw.
    pub crash_probability_max: f64,
    /// The most crashes in one run.
    pub crashes_max: u32,
}

impl Default for FaultBounds {
    fn default() -> Self {
        FaultBounds {
            delay_ms_max: 30,
            clog_probability_max: 0.05,
            stall_probability_max: 0.02,
            crash_probability_max: 0.003,
            crashes_max: 4,
        }
    }
}

/// A built-in job and how to check it.
#[derive(Clone, Debug)]
pub struct Check {
    /// The job's input: generated events.
    pub input: GeneratorConfig,
    /// Workers.
    pub workers: usize,
    /// Which faults.
    pub faults: Faults,
    /// Their bounds.
    pub bounds: FaultBounds,
    /// Virtual time between checkpoints.
    pub checkpoint_interval_ms: i64,
    /// Deliberate bugs to enable (tests show the check catches them).
    pub bugs: PlantedBugs,
    /// Keep every trace event (for `--trace`).
    pub keep_trace: bool,
    /// Records a source reads per activation: small, so that checkpoints and crashes fall
    /// between its batches.
    pub source_batch_max: usize,
}

impl Check {
    /// The window-count job over `events` events of `keys` keys on `workers` workers, with every
    /// fault and the default bounds.
    pub fn window_count(events: u64, keys: u64, workers: usize) -> Self {
        Check {
            input: GeneratorConfig {
                keys,
                events,
                events_per_second: 1_000,
                disorder_ms: 500,
                late_fraction: 0.02,
                straggler_ms_max: 3_000,
                seed: 0,
                start_ms: 0,
            },
            workers,
            faults: Faults::All,
            bounds: FaultBounds::default(),
            checkpoint_interval_ms: 50,
            bugs: PlantedBugs::default(),
            keep_trace: false,
            source_batch_max: 16,
        }
    }

    /// What one seed simulates: its own draw of fault rates within the bounds.
    pub fn sim_config(&self, seed: u64) -> SimConfig {
        swarm_config(seed, self.workers, self.faults, &self.bounds, self.keep_trace)
    }

    /// The committed output of the job run on threads, without faults or checkpoints.
    pub fn expected(&self) -> Result<Committed> {
        let sinks = Sinks::default();
        let job = sinks.job(self.input.clone());
        execute(&JobConfig::threads("window-count", self.workers), job)?;
        Ok(sinks.committed())
    }

    /// Runs seed `seed` with checkpoints and this check's faults.
    pub fn run(&self, seed: u64) -> Result<SeedRun> {
        let sinks = Sinks::default();
        let mut checkpoint = CheckpointConfig::new(Arc::new(MemoryStore::default()));
        checkpoint.interval_ms = self.checkpoint_interval_ms;
        checkpoint.bugs = self.bugs;
        let mut config = JobConfig::simulated("window-count", self.workers, seed)
            .with_checkpoints(checkpoint, RestartStrategy::FixedDelay { attempts: u32::MAX, delay_ms: 10 });
        config.source_batch_max = self.source_batch_max;
        let report = execute_simulated(&config, self.sim_config(seed), sinks.job(self.input.clone()))?;
        let retracted = sinks.windows.retracted() + sinks.late.retracted();
        if retracted > 0 {
            // Readers may have seen them: the final output being right is not enough.
            return Err(Error::Runtime(format!("seed {seed}: a restore took back {retracted} committed records")));
        }
        Ok(SeedRun {
            committed: sinks.committed(),
            simulation: report.simulation.expect("a simulated run reports its simulation"),
            checkpoints: report.checkpoints,
            restarts: report.restarts,
        })
    }
}

/// What seed `seed` simulates on `workers` workers: its own draw of fault rates within `bounds`
/// (swarm testing; a quarter of the draws are 0).
pub fn swarm_config(seed: u64, workers: usize, faults: Faults, bounds: &FaultBounds, keep_trace: bool) -> SimConfig {
    let mut swarm = SimRng::new(derive_seed(seed, &[SWARM_STREAM]));
    let draw = |max: f64| if swarm.chance(0.25) { 0.0 } else { max * swarm.below(1_001) as f64 / 1_000.0 };
    fault_config(SimConfig { workers, seed, keep_trace, ..SimConfig::default() }, faults, bounds, draw)
}

/// What seed `seed` simulates on `workers` workers with the fault rates of `bounds` themselves,
/// without drawing: every seed gets the full mix (the demo uses it to be sure to crash).
pub fn fixed_config(seed: u64, workers: usize, faults: Faults, bounds: &FaultBounds, keep_trace: bool) -> SimConfig {
    fault_config(SimConfig { workers, seed, keep_trace, ..SimConfig::default() }, faults, bounds, |max| max)
}

/// `config` with the faults of `faults`, each rate `rate(its bound)`.
fn fault_config(
    mut config: SimConfig,
    faults: Faults,
    bounds: &FaultBounds,
    mut rate: impl FnMut(f64) -> f64,
) -> SimConfig {
    if faults.delays() {
        config.network = NetworkConfig {
            delay_ms_max: rate(bounds.delay_ms_max as f64) as i64,
            clog_probability: rate(bounds.clog_probability_max),
            ..NetworkConfig::default()
        };
        config.stall_probability = rate(bounds.stall_probability_max);
    }
    if faults.crashes() {
        config.crash_probability = rate(bounds.crash_probability_max);
        config.crashes_max = bounds.crashes_max;
    }
    config
}

/// The random stream each seed draws its fault mix from ("SWARM" in ASCII).
const SWARM_STREAM: u64 = 0x0053_5741_524d;

/// A window-count result: key, window, (count, sum).
pub type CountSumResult = WindowResult<String, (u64, i64)>;

/// What a job committed, as sorted `(event time, value)` pairs: window results and late
/// elements. (A record's watermark stamp says when it was emitted, which batching changes; it is
/// not part of the result.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Window results (key, window, count and sum).
    pub windows: Vec<(i64, CountSumResult)>,
    /// Elements too late for every window.
    pub late: Vec<(i64, (String, i64))>,
}

impl Committed {
    /// A stable digest of the output.
    pub fn digest(&self) -> u64 {
        let bytes = bincode::serialize(&(&self.windows, &self.late)).expect("records encode");
        stable_hash(&bytes)
    }
}

/// One seed's run.
#[derive(Clone, Debug)]
pub struct SeedRun {
    /// What it committed.
    pub committed: Committed,
    /// The simulation: trace hash, steps, crashes.
    pub simulation: SimReport,
    /// Its checkpoints.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Restarts after crashes.
    pub restarts: u32,
}

impl SeedRun {
    /// Checkpoints that completed.
    pub fn checkpoints_completed(&self) -> usize {
        self.checkpoints.iter().filter(|record| record.status == CheckpointStatus::Completed).count()
    }

    /// Checkpoints that failed (timed out, or lost to a crash before completing are not counted:
    /// a crash drops the coordinator that would have recorded them).
    pub fn checkpoints_failed(&self) -> usize {
        self.checkpoints.len() - self.checkpoints_completed()
    }
}

/// Count and sum of a window's values: the aggregate of the window-count job.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountSum;

impl AggregateFunction<(String, i64)> for CountSum {
    type Accumulator = (u64, i64);
    type Output = (u64, i64);

    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }

    fn add(&self, accumulator: &mut (u64, i64), value: &(String, i64)) {
        accumulator.0 += 1;
        accumulator.1 += value.1;
    }

    fn merge(&self, accumulator: &mut (u64, i64), other: (u64, i64)) {
        accumulator.0 += other.0;
        accumulator.1 += other.1;
    }

    fn result(&self, accumulator: &(u64, i64)) -> (u64, i64) {
        *accumulator
    }
}

/// The exactly-once sinks of one run; they outlive the run's crashes.
#[derive(Clone, Default)]
struct Sinks {
    windows: TransactionalCollectSink<WindowResult<String, (u64, i64)>>,
    late: TransactionalCollectSink<(String, i64)>,
}

impl Sinks {
    /// generator → key_by → tumbling 1 s window (count, sum), late elements on the side.
    fn job(&self, input: GeneratorConfig) -> impl Fn(&Env<'_>) + Send + Sync + 'static {
        let sinks = self.clone();
        move |env: &Env<'_>| {
            let windows = env
                .source(GeneratorSource::new(input.clone()), WatermarkStrategy::bounded(input.disorder_ms))
                .map(|event: Event| (event.key, event.value))
                .key_by(|(key, _): &(String, i64)| key.clone())
                .window(TumblingWindows::event_time(1_000).expect("a valid size"))
                .aggregate(CountSum);
            windows.results.sink_exactly_once(sinks.windows.clone());
            windows.late.sink_exactly_once(sinks.late.clone());
        }
    }

    fn committed(&self) -> Committed {
        Committed { windows: timed(self.windows.records()), late: timed(self.late.records()) }
    }
}

fn timed<D: Ord>(records: Vec<Record<D>>) -> Vec<(i64, D)> {
    let mut timed: Vec<(i64, D)> = records.into_iter().map(|record| (record.time_ms, record.value)).collect();
    timed.sort();
    timed
}
