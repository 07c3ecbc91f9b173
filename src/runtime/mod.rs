//! The runtime: runs a job on a substrate.
//!
//! A job is a function that builds a dataflow from an [`Env`]. The runtime gives each worker a
//! [`WorkerContext`], builds the job inside a timely scope whose timestamps are
//! [`Time`] = `Product<epoch, event>` (in a nested scope, because
//! `Product<u64, i64>` does not refine `()`), and steps the worker until the dataflow is done.
//!
//! Which workers, and who steps them, is the *substrate*: [`Substrate::Threads`] runs timely's own
//! threads (`timely::execute`); [`Substrate::Simulated`] runs them under the deterministic
//! simulator (`flowlab-sim`, see [`execute_simulated`]). Timely's multi-process cluster mode is a
//! further substrate. They all call [`build_job`], so the operator code is the same.

mod align;
mod keyed;
mod simulated;
mod sink;

pub(crate) use keyed::keyed_operator_at;
pub use keyed::{
    Emit, KeyedEngine, KeyedOutput, LOOKAHEAD_FAR, LOOKAHEAD_NEAR, LOOKAHEAD_NEXT, keyed_operator, prefetch_memory,
};
pub use simulated::{NetworkConfig, SimConfig, SimReport, SimulatedClock, execute_simulated};
pub(crate) use sink::{sink_operator, two_phase_sink_operator};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use timely::worker::Worker;

use crate::api::{Env, JobGraph};
use crate::checkpoint::{
    CheckpointConfig, CheckpointRecord, Coordinator, RestartDecision, RestartStrategy, RestartTracker, RestoreFrom,
};
use crate::error::{Error, Result};
use crate::metrics::MetricsRegistry;
use crate::state::MAX_PARALLELISM_DEFAULT;
use crate::time::{Clock, Epoch, SystemClock, Time};

/// The first failure of a job. Sources stop reading once it is set, so the job drains and ends,
/// and [`execute`] returns the error.
#[derive(Clone, Debug, Default)]
pub struct JobFailure {
    failed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<Error>>>,
}

impl JobFailure {
    /// Records `error`, unless an earlier error is already recorded.
    pub fn fail(&self, error: Error) {
        let mut slot = self.error.lock().expect("failure slot poisoned");
        if slot.is_none() {
            *slot = Some(error);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Whether the job has failed.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn take(&self) -> Option<Error> {
        self.error.lock().expect("failure slot poisoned").take()
    }
}

/// What every operator of one worker may use.
#[derive(Clone)]
pub struct WorkerContext {
    /// This worker's index.
    pub index: usize,
    /// The number of workers.
    pub peers: usize,
    /// The only source of processing time.
    pub clock: Arc<dyn Clock>,
    /// Where operators report counters.
    pub metrics: MetricsRegistry,
    /// The job's failure flag.
    pub failure: JobFailure,
    /// The number of key groups (Flink's `maxParallelism`).
    pub max_parallelism: u32,
    /// In simulation with network faults: the simulated network keyed exchanges go through.
    pub network: Option<flowlab_sim::Network>,
    /// With checkpointing: the job's checkpoint coordinator, shared by every worker.
    pub checkpoints: Option<Arc<Coordinator>>,
    /// The most records a source reads per activation.
    pub source_batch_max: usize,
    /// Back-pressure: the most batches a source instance keeps in flight (read, not yet past
    /// every sink); `None`: sources read as fast as they can.
    pub in_flight_batches_max: Option<usize>,
    /// The frontier at this worker's sinks: how far the job has got, for back-pressure.
    pub(crate) sinks_probe: timely::dataflow::ProbeHandle<Time>,
    /// The sources of this worker held back by back-pressure, for the sinks to wake.
    pub(crate) source_wakers: SourceWakers,
}

/// The sources of one worker that wait for its sinks (back-pressure), and the sinks' way to wake
/// them.
///
/// A source whose in-flight batches are all still short of the sinks cannot read, and nothing but
/// a move of the sinks' frontier changes that. Were it to re-activate itself at once, its worker
/// would spin at full speed while it waits for another worker — taking the CPU that worker, or
/// anything else on a machine with no core to spare, needs to catch up. So it leaves its
/// activator here, and every sink wakes the waiting sources whenever it is scheduled (which its
/// frontier moving does); in between, the worker can park.
#[derive(Clone, Default)]
pub(crate) struct SourceWakers {
    /// The queued sources, by job-graph node, each with its activator.
    waiting: std::rc::Rc<std::cell::RefCell<Vec<(usize, timely::scheduling::Activator)>>>,
}

impl SourceWakers {
    /// Queues the source of job-graph node `node` for the next [`wake`](Self::wake), unless it is
    /// queued already.
    pub(crate) fn wait(&self, node: usize, activator: &timely::scheduling::Activator) {
        let mut waiting = self.waiting.borrow_mut();
        if !waiting.iter().any(|(queued, _)| *queued == node) {
            waiting.push((node, activator.clone()));
        }
    }

    /// Activates every queued source, which then looks at the sinks' frontier again.
    pub(crate) fn wake(&self) {
        // Take the queue first: a woken source that still cannot read queues itself again.
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for (_, activator) in waiting {
            activator.activate();
        }
    }
}

/// Who runs the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Substrate {
    /// `workers` timely worker threads in this process (`timely::execute`).
    Threads {
        /// Number of worker threads: the job's parallelism.
        workers: usize,
    },
    /// `workers` timely workers stepped one at a time in an order drawn from `seed`, with the
    /// simulator's virtual clock as processing time (the other settings: [`SimConfig::default`];
    /// [`execute_simulated`] takes them all).
    Simulated {
        /// Number of workers: the job's parallelism.
        workers: usize,
        /// The seed every choice of the run is drawn from.
        seed: u64,
    },
}

/// Batches a source keeps in flight by default on threads ([`JobConfig::in_flight_batches_max`]).
pub const IN_FLIGHT_BATCHES_DEFAULT: usize = 8;

/// How to run a job. Defaults: the system clock, 128 key groups, a fresh metrics registry.
#[derive(Clone)]
pub struct JobConfig {
    /// The job's name, for the graph and reports.
    pub name: String,
    /// Who runs the workers.
    pub substrate: Substrate,
    /// The processing-time clock.
    pub clock: Arc<dyn Clock>,
    /// The number of key groups; must be at least the parallelism.
    pub max_parallelism: u32,
    /// Where operators report counters; clone it before the run to watch the job live.
    pub metrics: MetricsRegistry,
    /// In simulation: how the simulated network delays keyed exchanges (default: no delay).
    pub network: NetworkConfig,
    /// Checkpointing; `None` (the default): no checkpoints, and a failure fails the job.
    pub checkpoint: Option<CheckpointConfig>,
    /// What to do when a checkpointing job fails (on threads) or crashes (in simulation).
    /// Default: [`RestartStrategy::None`], so a failing job reports its error at once; Flink's
    /// default with checkpoints is exponential-delay ([`RestartStrategy::default`]).
    pub restart: RestartStrategy,
    /// The most records a source reads per activation (default
    /// [`SOURCE_BATCH_RECORDS`](crate::time::source::SOURCE_BATCH_RECORDS)). Results never depend
    /// on it; small batches let the simulator interleave checkpoints and crashes between them.
    pub source_batch_max: usize,
    /// Back-pressure, as Flink's bounded network buffers give it: a source instance reads a new
    /// batch only while fewer than this many of its batches are still on their way to the sinks.
    /// It keeps memory bounded and spreads a fast source's input over many checkpoint epochs, so
    /// that a restore does not replay everything. Results never depend on it. Default `Some(8)`
    /// on threads; `None` (read as fast as possible) in the simulator, whose small batches
    /// already interleave checkpoints with the input.
    pub in_flight_batches_max: Option<usize>,
}

impl JobConfig {
    /// Runs `name` on `workers` threads with the system clock.
    pub fn threads(name: &str, workers: usize) -> Self {
        JobConfig {
            name: name.to_string(),
            substrate: Substrate::Threads { workers },
            clock: Arc::new(SystemClock),
            max_parallelism: MAX_PARALLELISM_DEFAULT,
            metrics: MetricsRegistry::default(),
            network: NetworkConfig::default(),
            checkpoint: None,
            restart: RestartStrategy::None,
            source_batch_max: crate::time::source::SOURCE_BATCH_RECORDS,
            in_flight_batches_max: Some(IN_FLIGHT_BATCHES_DEFAULT),
        }
    }

    /// Runs `name` on `workers` simulated workers with seed `seed` (see [`Substrate::Simulated`]).
    pub fn simulated(name: &str, workers: usize, seed: u64) -> Self {
        JobConfig {
            substrate: Substrate::Simulated { workers, seed },
            in_flight_batches_max: None,
            ..Self::threads(name, workers)
        }
    }

    /// Checkpoints as `checkpoint` says, and restarts from checkpoints as `restart` says.
    pub fn with_checkpoints(mut self, checkpoint: CheckpointConfig, restart: RestartStrategy) -> Self {
        self.checkpoint = Some(checkpoint);
        self.restart = restart;
        self
    }

    /// Uses `clock` for processing time.
    pub fn with_clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The job's parallelism.
    pub fn parallelism(&self) -> usize {
        match self.substrate {
            Substrate::Threads { workers } => workers,
            Substrate::Simulated { workers, .. } => workers,
        }
    }

    fn validate(&self) -> Result<()> {
        let parallelism = self.parallelism();
        if parallelism == 0 {
            return Err(Error::Usage("parallelism must be at least 1".to_string()));
        }
        if parallelism > self.max_parallelism as usize {
            return Err(Error::Usage(format!(
                "parallelism {parallelism} exceeds the number of key groups ({})",
                self.max_parallelism
            )));
        }
        Ok(())
    }
}

/// The longest a worker sleeps without activity before it looks at the failure flag again.
const PARK_MAX: std::time::Duration = std::time::Duration::from_millis(5);

/// What a finished job leaves behind.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The logical job graph (worker 0's; every worker builds the same).
    pub graph: JobGraph,
    /// Every operator instance's counters.
    pub metrics: MetricsRegistry,
    /// On the simulated substrate: seed, steps, trace hash. `None` on threads.
    pub simulation: Option<SimReport>,
    /// Every checkpoint of every attempt, in order (empty without checkpointing).
    pub checkpoints: Vec<CheckpointRecord>,
    /// Restarts after failures or crashes.
    pub restarts: u32,
    /// The savepoint the job stopped at ([`CheckpointConfig::stop_with_savepoint_after_ms`]);
    /// `None` if it ran to the end of its input.
    pub savepoint: Option<u64>,
    /// What the runtime wants people to know: checkpoints restored, damaged ones refused,
    /// failures and restarts.
    pub notes: Vec<String>,
}

/// The checkpoint side of one run: a coordinator per attempt (or incarnation), and what earlier
/// attempts left in their history.
#[derive(Default)]
pub(crate) struct Recovery {
    history: Vec<CheckpointRecord>,
    notes: Vec<String>,
    /// The id of the first checkpoint the first attempt would take: restarts never restore an
    /// older one (it belongs to an earlier run).
    first_id: Option<u64>,
}

impl Recovery {
    /// A coordinator for attempt `attempt` (0: the first) of `config`'s job: the first restores
    /// what the configuration says, later ones the newest complete checkpoint.
    pub(crate) fn coordinator(
        &mut self,
        config: &JobConfig,
        attempt: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Arc<Coordinator>>> {
        let Some(checkpoint) = &config.checkpoint else {
            return Ok(None);
        };
        let mut checkpoint = checkpoint.clone();
        if attempt > 0 {
            checkpoint.restore = match (checkpoint.restore, self.first_id) {
                (RestoreFrom::Nothing, Some(first)) => RestoreFrom::LatestSince(first),
                _ => RestoreFrom::Latest,
            };
        }
        let coordinator =
            Coordinator::new(checkpoint, &config.name, config.parallelism(), config.max_parallelism, clock)?;
        self.first_id.get_or_insert(coordinator.start_epoch());
        Ok(Some(coordinator))
    }

    /// Keeps what `coordinator` recorded before it is dropped.
    pub(crate) fn retire(&mut self, coordinator: Option<Arc<Coordinator>>) {
        if let Some(coordinator) = coordinator {
            self.history.extend(coordinator.history());
            self.notes.extend(coordinator.notes());
        }
    }

    /// Adds a note.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub(crate) fn into_parts(self) -> (Vec<CheckpointRecord>, Vec<String>) {
        (self.history, self.notes)
    }
}

/// Builds `job` into `worker` as one dataflow; every substrate calls this.
pub fn build_job<F>(worker: &mut Worker, name: &str, context: WorkerContext, job: &F) -> JobGraph
where
    F: Fn(&Env<'_>) + ?Sized,
{
    worker.dataflow_named::<Epoch, _, _>(name, |outer| {
        outer.scoped::<Time, _, _>(name, |scope| {
            let env = Env::new(scope, name, context);
            job(&env);
            env.graph()
        })
    })
}

/// Runs `job` to completion and reports its graph and counters, or its first error.
pub fn execute<F>(config: &JobConfig, job: F) -> Result<JobReport>
where
    F: Fn(&Env<'_>) + Send + Sync + 'static,
{
    config.validate()?;
    let workers = match config.substrate {
        Substrate::Threads { workers } => workers,
        Substrate::Simulated { workers, seed } => {
            let sim = SimConfig { workers, seed, network: config.network.clone(), ..SimConfig::default() };
            return execute_simulated(config, sim, job);
        }
    };
    let job = Arc::new(job);
    let mut recovery = Recovery::default();
    let mut tracker = RestartTracker::new(config.restart, 0);
    let mut attempt = 0u64;
    loop {
        let coordinator = recovery.coordinator(config, attempt, Arc::clone(&config.clock))?;
        let outcome = execute_threads(config, workers, coordinator.clone(), Arc::clone(&job));
        let savepoint = coordinator.as_ref().and_then(|coordinator| coordinator.stopped_at());
        recovery.retire(coordinator);
        match outcome {
            Ok(graph) => {
                let (checkpoints, notes) = recovery.into_parts();
                let restarts = tracker.restarts();
                return Ok(JobReport {
                    graph,
                    metrics: config.metrics.clone(),
                    simulation: None,
                    checkpoints,
                    restarts,
                    savepoint,
                    notes,
                });
            }
            Err(error) if config.checkpoint.is_some() => match tracker.on_failure(config.clock.now_ms()) {
                RestartDecision::RestartAfterMs(delay_ms) => {
                    recovery.note(format!("attempt {attempt} failed ({error}); restarting in {delay_ms} ms"));
                    std::thread::sleep(std::time::Duration::from_millis(delay_ms.max(0) as u64));
                    attempt += 1;
                }
                RestartDecision::GiveUp if tracker.restarts() == 0 => return Err(error),
                RestartDecision::GiveUp => {
                    let cause = match error {
                        Error::Runtime(message) => message,
                        other => other.to_string(),
                    };
                    return Err(Error::Runtime(format!(
                        "{cause} (restart strategy {} gave up after {} restarts)",
                        config.restart,
                        tracker.restarts()
                    )));
                }
            },
            Err(error) => return Err(error),
        }
    }
}

/// One attempt on threads: builds the job on every worker and steps it to the end or the first
/// failure.
fn execute_threads<F>(
    config: &JobConfig,
    workers: usize,
    coordinator: Option<Arc<Coordinator>>,
    job: Arc<F>,
) -> Result<JobGraph>
where
    F: Fn(&Env<'_>) + Send + Sync + 'static,
{
    let metrics = config.metrics.clone();
    let failure = JobFailure::default();
    let (name, clock, max_parallelism) = (config.name.clone(), Arc::clone(&config.clock), config.max_parallelism);
    let source_batch_max = config.source_batch_max.max(1);
    let in_flight_batches_max = config.in_flight_batches_max.map(|max| max.max(1));
    let worker_metrics = metrics.clone();
    let worker_failure = failure.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let context = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            clock: Arc::clone(&clock),
            metrics: worker_metrics.clone(),
            failure: worker_failure.clone(),
            max_parallelism,
            network: None,
            checkpoints: coordinator.clone(),
            source_batch_max,
            in_flight_batches_max,
            sinks_probe: timely::dataflow::ProbeHandle::new(),
            source_wakers: SourceWakers::default(),
        };
        let index = worker.index();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let graph = build_job(worker, &name, context, &*job);
            if let Some(coordinator) = &coordinator {
                coordinator.worker_built();
            }
            // Every worker watches the failure flag, so that one worker's failure (or panic) ends
            // the job instead of leaving the others waiting for its progress forever.
            let stopped = || coordinator.as_ref().is_some_and(|coordinator| coordinator.stopped_at().is_some());
            while worker.has_dataflows() && !worker_failure.is_failed() && !stopped() {
                worker.step_or_park(Some(PARK_MAX));
            }
            if stopped() {
                // Stop-with-savepoint: the rest of the job lives in the savepoint.
                drop_dataflows(worker);
            }
            graph
        }));
        let graph = match run {
            Ok(graph) => Some(graph),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                worker_failure.fail(Error::Runtime(format!("worker {index} panicked: {message}")));
                None
            }
        };
        if worker_failure.is_failed() {
            // timely steps a worker until its dataflows finish; a failed job's never do.
            drop_dataflows(worker);
        }
        graph
    })
    .map_err(Error::Runtime)?;
    let mut graphs = Vec::new();
    for result in guards.join() {
        graphs.push(result.map_err(|panic| Error::Runtime(format!("a worker panicked: {panic}")))?);
    }
    if let Some(error) = failure.take() {
        return Err(error);
    }
    Ok(graphs.into_iter().next().flatten().expect("worker 0 finished without failing"))
}

/// Drops every dataflow of `worker`, in a fixed order.
fn drop_dataflows(worker: &mut Worker) {
    let mut dataflows = worker.installed_dataflows();
    dataflows.sort_unstable();
    for dataflow in dataflows {
        worker.drop_dataflow(dataflow);
    }
}

/// Builds `job` for `parallelism` workers without running it, and returns its graph: what
/// `flowlab graph` prints. Sources open nothing until they run, so planning does no I/O.
pub fn plan<F>(name: &str, parallelism: usize, job: F) -> JobGraph
where
    F: Fn(&Env<'_>),
{
    let allocator = timely::communication::Allocator::Thread(timely::communication::allocator::Thread::default());
    let parallelism = parallelism.max(1);
    let mut worker = Worker::new(timely::WorkerConfig::default(), allocator, None);
    let context = WorkerContext {
        index: 0,
        peers: parallelism,
        clock: Arc::new(SystemClock),
        metrics: MetricsRegistry::default(),
        failure: JobFailure::default(),
        max_parallelism: MAX_PARALLELISM_DEFAULT,
        network: None,
        checkpoints: None,
        source_batch_max: crate::time::source::SOURCE_BATCH_RECORDS,
        in_flight_batches_max: None,
        sinks_probe: timely::dataflow::ProbeHandle::new(),
        source_wakers: SourceWakers::default(),
    };
    let mut graph = build_job(&mut worker, name, context, &job);
    graph.parallelism = parallelism;
    graph
}
