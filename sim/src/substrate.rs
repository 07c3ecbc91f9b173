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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
const STREAM_CRASHES: u64 = 5;
pub(crate) const STREAM_NETWORK: u64 = 4;

/// How to run a simulation.
///
/// Defaults (`SimConfig::default()`): 2 workers, seed 0, virtual time starting at 0 ms and
/// advancing by exactly 1 ms per step (`tick_ms: 1`, `tick_jitter_ms: 0`), at most 1 000 000
/// steps, no stalls (`stall_probability: 0.0`; a stall, when enabled, lasts 1..=50 steps), a
/// network without delays ([`NetworkConfig::default`]), a trace that keeps only its hash
/// (`keep_trace: false`), and no crashes (`crash_probability: 0.0`, `crashes_max: 0`).
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
    /// After every step, the probability that every worker crashes (see [`Simulation::run`]).
    pub crash_probability: f64,
    /// The most crashes in one run, so that a run with crashes still ends.
    pub crashes_max: u32,
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
            crash_probability: 0.0,
            crashes_max: 0,
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
    /// Crashes (each drops every worker).
    pub crashes: u64,
    /// Incarnations run: 1 plus the restarts.
    pub incarnations: u64,
    /// Whether the run ended because the crash hook said [`AfterCrash::Stop`].
    pub gave_up: bool,
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

/// The crash hook: decides what follows a crash.
type CrashHook = Box<dyn FnMut(&CrashInfo) -> AfterCrash + Send>;

/// What the crash hook is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashInfo {
    /// How many crashes so far in this run, this one included.
    pub crash: u64,
    /// The incarnation that crashed (the first is 0).
    pub incarnation: u64,
    /// Steps taken so far.
    pub step: u64,
    /// Virtual time of the crash.
    pub now_ms: i64,
}

/// What follows a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCrash {
    /// Rebuild every worker after `after_ms` of virtual time.
    Restart {
        /// Virtual milliseconds before the restart.
        after_ms: i64,
    },
    /// End the run ([`SimReport::gave_up`]).
    Stop,
}

/// Which incarnation of the workers is running: 0 until the first crash, then 1, 2, … Clones
/// share the counter.
#[derive(Clone, Debug, Default)]
pub struct Incarnation(Arc<AtomicU64>);

impl Incarnation {
    /// The current incarnation.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A deterministic run of N timely workers. See the [crate documentation](crate) for an example.
///
/// Create it with [`Simulation::new`], take what the job needs from it ([`clock`](Self::clock),
/// [`network`](Self::network), [`recorder`](Self::recorder)), then [`run`](Self::run) it with a
/// closure that builds the dataflows on each worker.
pub struct Simulation {
    config: SimConfig,
    clock: VirtualClock,
    recorder: TraceRecorder,
    incarnation: Incarnation,
    halt: Option<Halt>,
    on_crash: Option<CrashHook>,
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
        Simulation {
            config,
            clock,
            recorder: TraceRecorder::default(),
            incarnation: Incarnation::default(),
            halt: None,
            on_crash: None,
        }
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

    /// Which incarnation is running: the build closure reads it to tell a first start (0) from a
    /// restart after a crash (1, 2, …).
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation.clone()
    }

    /// The simulated network: wrap a pact with [`Network::delayed`] to delay its messages.
    pub fn network(&self) -> Network {
        Network::new(
            self.config.network.clone(),
            self.config.seed,
            self.clock.clone(),
            self.recorder.clone(),
            self.incarnation.clone(),
        )
    }

    /// Stops the run (successfully, with [`SimReport::halted`] set) as soon as `halt` returns
    /// `true` after a step, for example when the job has recorded a failure. Workers' unfinished
    /// dataflows are dropped.
    pub fn halt_when(mut self, halt: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.halt = Some(Box::new(halt));
        self
    }

    /// Decides what happens after each crash (the job's restart strategy). Without it, every crash
    /// is followed by a restart at once.
    pub fn on_crash(mut self, decide: impl FnMut(&CrashInfo) -> AfterCrash + Send + 'static) -> Self {
        self.on_crash = Some(Box::new(decide));
        self
    }

    /// Runs `build` once on every worker (in worker order, one at a time), then steps the workers
    /// one at a time in the seeded order until none has dataflows left.
    ///
    /// When [`SimConfig::crash_probability`] is positive, every worker may crash after any step:
    /// the simulator drops every worker (its dataflows, its thread, its allocator and every
    /// message in flight), asks the [`on_crash`](Self::on_crash) hook what to do, and, to restart,
    /// builds fresh workers with `build` again, with [`incarnation`](Self::incarnation) one
    /// higher. What the job wants to survive a crash must live outside the workers (a checkpoint
    /// store). The results are those of the last incarnation (none if the hook stopped the run).
    pub fn run<B, R>(mut self, build: B) -> Result<SimOutcome<R>, SimError>
    where
        B: Fn(&mut Worker) -> R + Sync,
        R: Send,
    {
        if self.config.workers == 0 {
            return Err(SimError::Config { reason: "a simulation needs at least one worker".to_string() });
        }
        if self.config.tick_ms < 0 || self.config.tick_jitter_ms < 0 {
            return Err(SimError::Config { reason: "ticks cannot be negative".to_string() });
        }
        if !(0.0..=1.0).contains(&self.config.crash_probability) {
            return Err(SimError::Config { reason: "the crash probability must be between 0 and 1".to_string() });
        }
        self.config.network.validate().map_err(|reason| SimError::Config { reason })?;
        let mut on_crash = self.on_crash.take();
        let mut coordinator = Coordinator::new(&self);
        loop {
            let incarnation = self.incarnation.get();
            if incarnation > 0 {
                coordinator.trace.push(TraceEvent::Restart { incarnation, now_ms: self.clock.now_ms() });
            }
            let (ended, results) = run_incarnation(&mut coordinator, &build)?;
            match ended {
                Ended::Finished | Ended::Halted => {
                    let report = coordinator.report(ended == Ended::Halted, false);
                    return Ok(SimOutcome { results, report });
                }
                Ended::Crashed => {
                    let info = CrashInfo {
                        crash: coordinator.crashes,
                        incarnation,
                        step: coordinator.step,
                        now_ms: self.clock.now_ms(),
                    };
                    let decision =
                        on_crash.as_mut().map_or(AfterCrash::Restart { after_ms: 0 }, |decide| decide(&info));
                    match decision {
                        AfterCrash::Restart { after_ms } => {
                            self.clock.advance_ms(after_ms.max(0));
                            self.incarnation.0.fetch_add(1, Ordering::SeqCst);
                        }
                        AfterCrash::Stop => {
                            let report = coordinator.report(false, true);
                            return Ok(SimOutcome { results: Vec::new(), report });
                        }
                    }
                }
            }
        }
    }
}

/// How one incarnation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Finished,
    Halted,
    Crashed,
}

/// Builds fresh workers (one thread each, all at once: timely's handshake needs it), steps them
/// until they finish, halt or crash, then stops and joins them.
fn run_incarnation<B, R>(coordinator: &mut Coordinator<'_>, build: &B) -> Result<(Ended, Vec<R>), SimError>
where
    B: Fn(&mut Worker) -> R + Sync,
    R: Send,
{
    let workers = coordinator.config().workers;
    let seed = coordinator.config().seed;
    std::thread::scope(|scope| {
        let builders = ProcessBuilder::new_typed_vector(workers, Hooks::default().refill, None);
        let mut links = Links { commands: Vec::with_capacity(workers), replies: Vec::with_capacity(workers) };
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
                    links.commands.push(command_tx);
                    links.replies.push(reply_rx);
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
            drop(links);
            for handle in handles {
                let _ = handle.join();
            }
            return Err(SimError::Thread { seed, message });
        }
        let ended = coordinator.run(&links);
        links.stop();
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
        let ended = ended?;
        if let Some(message) = lost {
            return Err(SimError::Thread { seed, message });
        }
        Ok((ended, results))
    })
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

/// The command and reply channels of one incarnation's workers.
struct Links {
    commands: Vec<Sender<Command>>,
    replies: Vec<Receiver<Reply>>,
}

impl Links {
    /// Tells every worker to stop; they drop their (possibly unfinished) dataflows and end.
    fn stop(&mut self) {
        for command in self.commands.drain(..) {
            let _ = command.send(Command::Stop);
        }
    }
}

/// Passes the baton: sends one command, waits for its reply, records what happened. It lives
/// across incarnations, so that every random stream continues after a crash.
struct Coordinator<'a> {
    simulation: &'a Simulation,
    order: StepOrder,
    stall_rng: SimRng,
    tick_rng: SimRng,
    crash_rng: SimRng,
    alive: Vec<bool>,
    stalled_until: Vec<u64>,
    steps_per_worker: Vec<u64>,
    stalls: u64,
    crashes: u64,
    step: u64,
    trace: Trace,
}

impl<'a> Coordinator<'a> {
    fn new(simulation: &'a Simulation) -> Self {
        let config = &simulation.config;
        let workers = config.workers;
        Coordinator {
            simulation,
            order: StepOrder::new(derive_seed(config.seed, &[STREAM_STEPS])),
            stall_rng: SimRng::new(derive_seed(config.seed, &[STREAM_STALLS])),
            tick_rng: SimRng::new(derive_seed(config.seed, &[STREAM_TICKS])),
            crash_rng: SimRng::new(derive_seed(config.seed, &[STREAM_CRASHES])),
            alive: vec![false; workers],
            stalled_until: vec![0; workers],
            steps_per_worker: vec![0; workers],
            stalls: 0,
            crashes: 0,
            step: 0,
            trace: Trace::new(config.keep_trace),
        }
    }

    fn config(&self) -> &SimConfig {
        &self.simulation.config
    }

    /// Sends `command` to `worker` and waits for its reply: the only moment that worker runs.
    fn ask(&self, links: &Links, worker: usize, command: Command, step: Option<u64>) -> Result<bool, SimError> {
        let seed = self.config().seed;
        let died = || SimError::Thread { seed, message: format!("worker {worker} thread ended unexpectedly") };
        links.commands[worker].send(command).map_err(|_| died())?;
        match links.replies[worker].recv().map_err(|_| died())? {
            Ok(has_dataflows) => Ok(has_dataflows),
            Err(message) => Err(SimError::WorkerPanicked { seed, worker, step, message }),
        }
    }

    /// Builds and steps one incarnation's workers until they finish, halt or crash.
    fn run(&mut self, links: &Links) -> Result<Ended, SimError> {
        let workers = self.config().workers;
        let recorder = self.simulation.recorder.clone();
        self.stalled_until = vec![0; workers];
        for worker in 0..workers {
            let has_dataflows = self.ask(links, worker, Command::Build, None)?;
            self.alive[worker] = has_dataflows;
            self.trace.push(TraceEvent::Built { worker, has_dataflows });
            recorder.drain_into(&mut self.trace);
        }
        while self.alive.iter().any(|&alive| alive) {
            let step = self.step;
            if step >= self.config().steps_max {
                return Err(SimError::StepLimit { seed: self.config().seed, steps_max: self.config().steps_max });
            }
            self.maybe_stall(step);
            let runnable: Vec<bool> = (0..workers).map(|w| self.alive[w] && self.stalled_until[w] <= step).collect();
            let runnable = if runnable.contains(&true) { runnable } else { self.release_one(step) };
            let worker = self.order.next(&runnable).expect("at least one worker is runnable");
            let now_ms = self.simulation.clock.now_ms();
            let has_dataflows = self.ask(links, worker, Command::Step, Some(step))?;
            self.alive[worker] = has_dataflows;
            self.steps_per_worker[worker] += 1;
            self.trace.push(TraceEvent::Step { step, worker, now_ms, has_dataflows });
            recorder.drain_into(&mut self.trace);
            let jitter = self.config().tick_jitter_ms;
            let tick =
                self.config().tick_ms + if jitter > 0 { self.tick_rng.below(jitter as u64 + 1) as i64 } else { 0 };
            self.simulation.clock.advance_ms(tick);
            self.step += 1;
            if let Some(halt) = &self.simulation.halt
                && halt()
            {
                self.trace.push(TraceEvent::Halt { step });
                return Ok(Ended::Halted);
            }
            if self.alive.iter().any(|&alive| alive) && self.maybe_crash() {
                self.trace.push(TraceEvent::Crash { step, incarnation: self.simulation.incarnation.get() });
                recorder.drain_into(&mut self.trace);
                return Ok(Ended::Crashed);
            }
        }
        Ok(Ended::Finished)
    }

    /// After a step: whether every worker crashes now (seeded, at most `crashes_max` per run).
    fn maybe_crash(&mut self) -> bool {
        let config = self.config();
        if config.crash_probability <= 0.0 || self.crashes >= u64::from(config.crashes_max) {
            return false;
        }
        let probability = config.crash_probability;
        if self.crash_rng.chance(probability) {
            self.crashes += 1;
            return true;
        }
        false
    }

    fn report(&self, halted: bool, gave_up: bool) -> SimReport {
        SimReport {
            seed: self.config().seed,
            workers: self.config().workers,
            steps: self.step,
            steps_per_worker: self.steps_per_worker.clone(),
            stalls: self.stalls,
            crashes: self.crashes,
            incarnations: self.simulation.incarnation.get() + 1,
            gave_up,
            end_ms: self.simulation.clock.now_ms(),
            halted,
            trace: self.trace.clone(),
        }
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
}
