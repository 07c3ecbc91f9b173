//! The simulated substrate: the job's workers run under `flowlab-sim`, one step at a time in a
//! seeded order, with the simulator's virtual clock as processing time.
//!
//! The same [`build_job`] builds the same operators as on threads; only who steps the workers, and
//! which clock they read, changes. A job failure (a bad input line, a panicking operator) ends the
//! run as it does on threads: the failure flag halts the simulation after the step that set it.

use std::sync::{Arc, Mutex};

use flowlab_sim::{AfterCrash, SimError, Simulation, VirtualClock};
pub use flowlab_sim::{NetworkConfig, SimConfig, SimReport};

use super::{JobConfig, JobFailure, JobReport, Recovery, Substrate, WorkerContext, build_job};
use crate::api::Env;
use crate::checkpoint::{Coordinator, RestartDecision, RestartTracker};
use crate::error::{Error, Result};
use crate::time::Clock;

/// flowlab's [`Clock`] on the simulator's [`VirtualClock`]: processing time that moves only when
/// the simulator advances it (one tick per step), so timers and idleness are functions of the seed.
#[derive(Clone, Debug)]
pub struct SimulatedClock {
    clock: VirtualClock,
}

impl SimulatedClock {
    /// Reads `clock`.
    pub fn new(clock: VirtualClock) -> Self {
        SimulatedClock { clock }
    }

    /// The simulator's clock underneath.
    pub fn virtual_clock(&self) -> &VirtualClock {
        &self.clock
    }
}

impl Clock for SimulatedClock {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// The incarnation whose coordinator was made last, and that coordinator (`None` without
/// checkpointing).
type CurrentCoordinator = Option<(u64, Option<Arc<Coordinator>>)>;

/// Runs `job` under the simulator configured by `sim` and reports its graph, counters and the
/// simulation (seed, steps, trace hash in [`JobReport::simulation`]), or its first error.
///
/// `sim.workers` is the job's parallelism and `config.substrate` is not consulted;
/// `config.clock` is replaced by the simulator's virtual clock. [`execute`](super::execute) with
/// [`Substrate::Simulated`] calls this with the default [`SimConfig`] for its workers and seed.
///
/// Errors name the seed where it matters: a step-limit overrun (livelock) or a panic is reported
/// as `Error::Runtime` with the seed, worker and step.
pub fn execute_simulated<F>(config: &JobConfig, sim: SimConfig, job: F) -> Result<JobReport>
where
    F: Fn(&Env<'_>) + Sync,
{
    let mut checked = config.clone();
    checked.substrate = Substrate::Simulated { workers: sim.workers, seed: sim.seed };
    checked.validate()?;

    let faulty_network = sim.network.delay_ms_max > 0 || sim.network.clog_probability > 0.0;
    let simulation = Simulation::new(sim);
    let network = faulty_network.then(|| simulation.network());
    let clock: Arc<dyn Clock> = Arc::new(SimulatedClock::new(simulation.clock()));
    let failure = JobFailure::default();
    // The coordinator of the running incarnation: volatile, so a crash loses it.
    let current: Arc<Mutex<CurrentCoordinator>> = Arc::default();
    let (halt, halt_current) = (failure.clone(), Arc::clone(&current));
    let simulation = simulation.halt_when(move || {
        let stopped = || {
            let current = halt_current.lock().expect("coordinator slot poisoned");
            current.as_ref().and_then(|(_, coordinator)| coordinator.as_ref()).is_some_and(|c| c.stopped_at().is_some())
        };
        halt.is_failed() || stopped()
    });
    // A crash is followed by what the restart strategy says, in virtual time.
    let tracker = Arc::new(Mutex::new(RestartTracker::new(config.restart, simulation.config().seed)));
    let hook_tracker = Arc::clone(&tracker);
    let simulation = simulation.on_crash(move |crash| {
        match hook_tracker.lock().expect("restart tracker poisoned").on_failure(crash.now_ms) {
            RestartDecision::RestartAfterMs(after_ms) => AfterCrash::Restart { after_ms },
            RestartDecision::GiveUp => AfterCrash::Stop,
        }
    });
    let incarnation = simulation.incarnation();
    let recovery = Mutex::new(Recovery::default());
    let (name, metrics, max_parallelism) = (config.name.as_str(), &config.metrics, config.max_parallelism);
    let outcome = simulation.run(|worker| {
        let coordinator = {
            let mut current = current.lock().expect("coordinator slot poisoned");
            let attempt = incarnation.get();
            if current.as_ref().is_none_or(|(of, _)| *of != attempt) {
                let mut recovery = recovery.lock().expect("recovery poisoned");
                if let Some((_, old)) = current.take() {
                    recovery.retire(old);
                }
                let coordinator = recovery.coordinator(config, attempt, Arc::clone(&clock)).unwrap_or_else(|error| {
                    failure.fail(error);
                    None
                });
                *current = Some((attempt, coordinator));
            }
            current.as_ref().and_then(|(_, coordinator)| coordinator.clone())
        };
        let context = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            clock: Arc::clone(&clock),
            metrics: metrics.clone(),
            failure: failure.clone(),
            max_parallelism,
            network: network.clone(),
            checkpoints: coordinator.clone(),
            source_batch_max: config.source_batch_max.max(1),
            in_flight_batches_max: config.in_flight_batches_max.map(|max| max.max(1)),
            sinks_probe: timely::dataflow::ProbeHandle::new(),
            source_wakers: crate::runtime::SourceWakers::default(),
        };
        let graph = build_job(worker, name, context, &job);
        if let Some(coordinator) = coordinator {
            coordinator.worker_built();
        }
        graph
    });
    let mut recovery = recovery.into_inner().expect("recovery poisoned");
    let mut savepoint = None;
    if let Some((_, coordinator)) = current.lock().expect("coordinator slot poisoned").take() {
        savepoint = coordinator.as_ref().and_then(|coordinator| coordinator.stopped_at());
        recovery.retire(coordinator);
    }
    if let Some(error) = failure.take() {
        return Err(error);
    }
    let outcome = outcome.map_err(|error| match error {
        SimError::WorkerPanicked { seed, worker, step, message } => {
            let when = step.map_or("while building".to_string(), |step| format!("in step {step}"));
            Error::Runtime(format!("worker {worker} panicked {when} (seed {seed}): {message}"))
        }
        other => Error::Runtime(other.to_string()),
    })?;
    let restarts = tracker.lock().expect("restart tracker poisoned").restarts();
    if outcome.report.gave_up {
        return Err(Error::Runtime(format!(
            "seed {}: restart strategy {} gave up after {} crashes",
            outcome.report.seed, config.restart, outcome.report.crashes
        )));
    }
    let (checkpoints, notes) = recovery.into_parts();
    let graph = outcome.results.into_iter().next().expect("at least one worker");
    Ok(JobReport {
        graph,
        metrics: config.metrics.clone(),
        simulation: Some(outcome.report),
        checkpoints,
        restarts,
        savepoint,
        notes,
    })
}
