//! The simulated substrate: N timely workers, one OS thread each, stepped one at a time in a
//! seeded order.
//!
//! # How stepping works
//!
//! Timely's process allocator is built by a blocking all-to-all handshake
//! (`ProcessBuilder::build`), so every worker is built on its own thread, all at once. After that
//! each worker thread only ever runs when the coordinator (the thread that called
//! [`Simulation::run`]) sends it a command and waits for its answer: a baton. Exactly one worker
//! thread runs at any moment, so the shared queues of the process allocator see their pushes and
//! pulls in an order the seed alone decides, and the channel hand-offs between coordinator and
//! worker give every step a happens-before edge to the next. No unsafe code is needed.
//!
//! Workers are built with `now: None`, so timely reads no wall clock: no logging, and
//! `activate_after(delay)` activates at once (on the next step of that worker) instead of after
//! `delay` of wall time. A worker is stepped with `Worker::step`, which never parks.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};

use timely::WorkerConfig;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{Allocator, Hooks};
use timely::worker::Worker;

use crate::clock::VirtualClock;
use crate::network::{Network, NetworkConfig};
use crate::trace::{Trace, TraceEvent, TraceRecorder};
use crate::{SimRng, StepOrder, derive_seed};

/// Stream identifiers for [`derive_seed`]: each kind of choice draws from its own stream.
pub(crate) const STREAM_STEPS: u64 = 1;
const STREAM_STALLS: u64 = 2;
const STREAM_TICKS: u64 = 3;
pub(crate) const STREAM_NETWORK: u64 = 4;

/// How to run a simulation.
///
/// Defaults (`SimConfig::default()`): 2 workers, seed 0, virtual time starting at 0 ms and
/// advancing by exactly 1 ms per step (`tick_ms: 1`, `tick_jitter_ms: 0`), at most 1 000 000
/// steps, no stalls (`stall_probability: 0.0`; a stall, when enabled, lasts 1..=50 steps), a
/// network without delays ([`NetworkConfig::default`]), and a trace that keeps only its hash
/// (`keep_trace: false`).
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Number of timely workers (the job's parallelism). At least 1.
    pub workers: usize,
    /// The seed: every choice of the run is drawn from it.
    pub seed: u64,
    /// Virtual time at the first step, in milliseconds.
    pub start_ms: i64,
    /// Virtual milliseconds that pass after every step.
    pub tick_ms: i64,
    /// A seeded extra `0..=tick_jitter_ms` milliseconds after every step.
    pub tick_jitter_ms: i64,
    /// The run fails with [`SimError::StepLimit`] if its workers still have dataflows after this
    /// many steps: a livelock guard.
    pub steps_max: u64,
    /// Before every step, the probability that a (seeded) worker is stalled: not chosen again for
    /// `1..=stall_steps_max` steps.
    pub stall_probability: f64,
    /// The longest stall, in steps.
    pub stall_steps_max: u64,
    /// The simulated network used by pacts wrapped with [`Network::delayed`].
    pub network: NetworkConfig,
    /// Keep every trace event in [`SimReport::trace`], not only the hash (costs memory).
    pub keep_trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            workers: 2,
            seed: 0,
            start_ms: 0,
            tick_ms: 1,
            tick_jitter_ms: 0,
            steps_max: 1_000_000,
            stall_probability: 0.0,
            stall_steps_max: 50,
            network: NetworkConfig::default(),
            keep_trace: false,
        }
    }
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed of the run.
    pub seed: u64,
    /// Number of workers.
    pub workers: usize,
    /// Steps taken, over all workers.
    pub steps: u64,
    /// Steps taken by each worker.
    pub steps_per_worker: Vec<u64>,
    /// Stalls begun.
    pub stalls: u64,
    /// Virtual time when the run ended.
    pub end_ms: i64,
    /// Whether the run stopped because its halt condition ([`Simulation::halt_when`]) held,
    /// rather than because every worker finished.
    pub halted: bool,
    /// The trace; [`Trace::hash`] identifies the run.
    pub trace: Trace,
}

impl SimReport {
    /// The trace hash: two runs with the same seed and job must have the same one.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }
}

/// The workers' results (what each build closure returned, in worker order) and the report.
#[derive(Debug)]
pub struct SimOutcome<R> {
    /// What the build closure returned on each worker, indexed by worker.
    pub results: Vec<R>,
    /// What the run did.
    pub report: SimReport,
}

/// Why a simulated run failed. Every variant names the seed, so a failure can be replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The configuration cannot run (for example zero workers).
    Config {
        /// What is wrong.
        reason: String,
    },
    /// Workers still had dataflows after `steps_max` steps: a livelock, or a limit set too low.
    StepLimit {
        /// The seed.
        seed: u64,
        /// The limit.
        steps_max: u64,
    },
    /// A worker panicked while building its dataflows (`step: None`) or in a step.
    WorkerPanicked {
        /// The seed.
        seed: u64,
        /// The worker.
        worker: usize,
        /// The step, if the panic was not while building.
        step: Option<u64>,
        /// The panic message.
        message: String,
    },
    /// A worker thread could not start, or died outside a step.
    Thread {
        /// The seed.
        seed: u64,
        /// What happened.
        message: String,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Config { reason } => write!(f, "bad simulation configuration: {reason}"),
            SimError::StepLimit { seed, steps_max } => {
                write!(f, "seed {seed}: workers still had work after {steps_max} steps (livelock, or raise steps_max)")
            }
            SimError::WorkerPanicked { seed, worker, step: Some(step), message } => {
                write!(f, "seed {seed}: worker {worker} panicked in step {step}: {message}")
            }
            SimError::WorkerPanicked { seed, worker, step: None, message } => {
                write!(f, "seed {seed}: worker {worker} panicked while building its dataflows: {message}")
            }
            SimError::Thread { seed, message } => write!(f, "seed {seed}: {message}"),
        }
    }
}

impl std::error::Error for SimError {}

/// A halt condition, checked after every step.
type Halt = Box<dyn Fn() -> bool + Send + Sync>;

/// A deterministic run of N timely workers. See the [crate documentation](crate) for an example.
///
/// Create it with [`Simulation::new`], take what the job needs from it ([`clock`](Self::clock),
/// [`network`](Self::network), [`recorder`](Self::recorder)), then [`run`](Self::run) it with a
/// closure that builds the dataflows on each worker.
pub struct Simulation {
    config: SimConfig,
    clock: VirtualClock,
    recorder: TraceRecorder,
    halt: Option<Halt>,
}

impl fmt::Debug for Simulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulation").field("config", &self.config).field("now_ms", &self.clock.now_ms()).finish()
    }
}

enum Command {
    Build,
    Step,
    Stop,
}

/// A worker's answer: whether it still has dataflows, or its panic message.
type Reply = Result<bool, String>;

impl Simulation {
    /// A simulation of `config`; its clock stands at `config.start_ms`.
    pub fn new(config: SimConfig) -> Self {
        let clock = VirtualClock::new(config.start_ms);
        Simulation { config, clock, recorder: TraceRecorder::default(), halt: None }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The virtual clock: give it to the job as its processing-time clock.
    pub fn clock(&self) -> VirtualClock {
        self.clock.clone()
    }

    /// The handle through which the job may add notes to the trace during steps.
    pub fn recorder(&self) -> TraceRecorder {
        self.recorder.clone()
    }

    /// The simulated network: wrap a pact with [`Network::delayed`] to delay its messages.
    pub fn network(&self) -> Network {
        Network::new(self.config.network.clone(), self.config.seed, self.clock.clone(), self.recorder.clone())
    }

    /// Stops the run (successfully, with [`SimReport::halted`] set) as soon as `halt` returns
    /// `true` after a step, for example when the job has recorded a failure. Workers' unfinished
    /// dataflows are dropped.
    pub fn halt_when(mut self, halt: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.halt = Some(Box::new(halt));
        self
    }

    /// Runs `build` once on every worker (in worker order, one at a time), then steps the workers
    /// one at a time in the seeded order until none has dataflows left.
    pub fn run<B, R>(self, build: B) -> Result<SimOutcome<R>, SimError>
    where
        B: Fn(&mut Worker) -> R + Sync,
        R: Send,
    {
        let workers = self.config.workers;
        if workers == 0 {
            return Err(SimError::Config { reason: "a simulation needs at least one worker".to_string() });
        }
        if self.config.tick_ms < 0 || self.config.tick_jitter_ms < 0 {
            return Err(SimError::Config { reason: "ticks cannot be negative".to_string() });
        }
        self.config.network.validate().map_err(|reason| SimError::Config { reason })?;
        let seed = self.config.seed;
        let build = &build;
        std::thread::scope(|scope| {
            let builders = ProcessBuilder::new_typed_vector(workers, Hooks::default().refill, None);
            let mut commands = Vec::with_capacity(workers);
            let mut replies = Vec::with_capacity(workers);
            let mut handles = Vec::with_capacity(workers);
            let mut spawn_error = None;
            for (index, builder) in builders.into_iter().enumerate() {
                let (command_tx, command_rx) = channel();
                let (reply_tx, reply_rx) = channel();
                let spawned = std::thread::Builder::new()
                    .name(format!("sim-worker-{index}"))
                    .spawn_scoped(scope, move || worker_thread(builder, command_rx, reply_tx, build));
                match spawned {
                    Ok(handle) => {
                        handles.push(handle);
                        commands.push(command_tx);
                        replies.push(reply_rx);
                    }
                    Err(error) => {
                        spawn_error = Some(format!("cannot start worker {index}: {error}"));
                        break;
                    }
                }
            }
            if let Some(message) = spawn_error {
                // The builders not handed to a thread are dropped by now, so the started threads'
                // handshake fails and they end (with a panic, which joining absorbs).
                drop(commands);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(SimError::Thread { seed, message });
            }
            let mut coordinator = Coordinator::new(&self, commands, replies);
            let outcome = coordinator.run();
            coordinator.stop();
            let mut results = Vec::with_capacity(workers);
            let mut lost = None;
            for (index, handle) in handles.into_iter().enumerate() {
                match handle.join() {
                    Ok(Some(result)) => results.push(result),
                    Ok(None) => lost = lost.or(Some(format!("worker {index} ended without building"))),
                    Err(payload) => {
                        lost = lost.or(Some(format!("worker {index} thread panicked: {}", panic_message(&*payload))))
                    }
                }
            }
            let report = outcome?;
            if let Some(message) = lost {
                return Err(SimError::Thread { seed, message });
            }
            Ok(SimOutcome { results, report })
        })
    }
}

/// The body of one worker thread: build the allocator (all threads at once), then obey commands.
fn worker_thread<B, R>(
    builder: ProcessBuilder,
    commands: Receiver<Command>,
    replies: Sender<Reply>,
    build: &B,
) -> Option<R>
where
    B: Fn(&mut Worker) -> R,
{
    let allocator = Allocator::Process(builder.build());
    // `now: None`: no wall clock inside timely (no logging, `activate_after` activates at once).
    let mut worker = Worker::new(WorkerConfig::default(), allocator, None);
    let mut result = None;
    for command in commands {
        let reply = match command {
            Command::Build => catch_unwind(AssertUnwindSafe(|| build(&mut worker))).map(|built| {
                result = Some(built);
                worker.has_dataflows()
            }),
            Command::Step => catch_unwind(AssertUnwindSafe(|| worker.step())),
            Command::Stop => break,
        };
        if replies.send(reply.map_err(|payload| panic_message(&*payload))).is_err() {
            break;
        }
    }
    result
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Passes the baton: sends one command, waits for its reply, records what happened.
struct Coordinator<'a> {
    simulation: &'a Simulation,
    commands: Vec<Sender<Command>>,
    replies: Vec<Receiver<Reply>>,
    order: StepOrder,
    stall_rng: SimRng,
    tick_rng: SimRng,
    alive: Vec<bool>,
    stalled_until: Vec<u64>,
    steps_per_worker: Vec<u64>,
    stalls: u64,
    trace: Trace,
}

impl<'a> Coordinator<'a> {
    fn new(simulation: &'a Simulation, commands: Vec<Sender<Command>>, replies: Vec<Receiver<Reply>>) -> Self {
        let config = &simulation.config;
        let workers = config.workers;
        Coordinator {
            simulation,
            commands,
            replies,
            order: StepOrder::new(derive_seed(config.seed, &[STREAM_STEPS])),
            stall_rng: SimRng::new(derive_seed(config.seed, &[STREAM_STALLS])),
            tick_rng: SimRng::new(derive_seed(config.seed, &[STREAM_TICKS])),
            alive: vec![false; workers],
            stalled_until: vec![0; workers],
            steps_per_worker: vec![0; workers],
            stalls: 0,
            trace: Trace::new(config.keep_trace),
        }
    }

    fn config(&self) -> &SimConfig {
        &self.simulation.config
    }

    /// Sends `command` to `worker` and waits for its reply: the only moment that worker runs.
    fn ask(&self, worker: usize, command: Command, step: Option<u64>) -> Result<bool, SimError> {
        let seed = self.config().seed;
        let died = || SimError::Thread { seed, message: format!("worker {worker} thread ended unexpectedly") };
        self.commands[worker].send(command).map_err(|_| died())?;
        match self.replies[worker].recv().map_err(|_| died())? {
            Ok(has_dataflows) => Ok(has_dataflows),
            Err(message) => Err(SimError::WorkerPanicked { seed, worker, step, message }),
        }
    }

    fn run(&mut self) -> Result<SimReport, SimError> {
        let workers = self.config().workers;
        let recorder = self.simulation.recorder.clone();
        for worker in 0..workers {
            let has_dataflows = self.ask(worker, Command::Build, None)?;
            self.alive[worker] = has_dataflows;
            self.trace.push(TraceEvent::Built { worker, has_dataflows });
            recorder.drain_into(&mut self.trace);
        }
        let mut step = 0u64;
        let mut halted = false;
        while self.alive.iter().any(|&alive| alive) {
            if step >= self.config().steps_max {
                return Err(SimError::StepLimit { seed: self.config().seed, steps_max: self.config().steps_max });
            }
            self.maybe_stall(step);
            let runnable: Vec<bool> = (0..workers).map(|w| self.alive[w] && self.stalled_until[w] <= step).collect();
            let runnable = if runnable.contains(&true) { runnable } else { self.release_one(step) };
            let worker = self.order.next(&runnable).expect("at least one worker is runnable");
            let now_ms = self.simulation.clock.now_ms();
            let has_dataflows = self.ask(worker, Command::Step, Some(step))?;
            self.alive[worker] = has_dataflows;
            self.steps_per_worker[worker] += 1;
            self.trace.push(TraceEvent::Step { step, worker, now_ms, has_dataflows });
            recorder.drain_into(&mut self.trace);
            let jitter = self.config().tick_jitter_ms;
            let tick =
                self.config().tick_ms + if jitter > 0 { self.tick_rng.below(jitter as u64 + 1) as i64 } else { 0 };
            self.simulation.clock.advance_ms(tick);
            step += 1;
            if let Some(halt) = &self.simulation.halt
                && halt()
            {
                self.trace.push(TraceEvent::Halt { step: step - 1 });
                halted = true;
                break;
            }
        }
        Ok(SimReport {
            seed: self.config().seed,
            workers,
            steps: step,
            steps_per_worker: self.steps_per_worker.clone(),
            stalls: self.stalls,
            end_ms: self.simulation.clock.now_ms(),
            halted,
            trace: self.trace.clone(),
        })
    }

    /// Before step `step`, perhaps stalls a seeded worker for a seeded number of steps.
    fn maybe_stall(&mut self, step: u64) {
        let probability = self.config().stall_probability;
        if probability <= 0.0 || !self.stall_rng.chance(probability) {
            return;
        }
        let worker = self.stall_rng.below(self.config().workers as u64) as usize;
        let until_step = step + 1 + self.stall_rng.below(self.config().stall_steps_max.max(1));
        if self.alive[worker] && self.stalled_until[worker] <= step {
            self.stalled_until[worker] = until_step;
            self.stalls += 1;
            self.trace.push(TraceEvent::Stall { step, worker, until_step });
        }
    }

    /// Every live worker is stalled: releases the one whose stall ends first (lowest index on a tie).
    fn release_one(&mut self, step: u64) -> Vec<bool> {
        let worker = (0..self.config().workers)
            .filter(|&w| self.alive[w])
            .min_by_key(|&w| (self.stalled_until[w], w))
            .expect("some worker is alive");
        self.stalled_until[worker] = step;
        self.trace.push(TraceEvent::Unstall { step, worker });
        (0..self.config().workers).map(|w| w == worker).collect()
    }

    /// Tells every worker to stop; they drop their (possibly unfinished) dataflows and end.
    fn stop(&mut self) {
        for command in self.commands.drain(..) {
            let _ = command.send(Command::Stop);
        }
    }
}
