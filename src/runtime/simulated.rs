//! The simulated substrate: the job's workers run under `flowlab-sim`, one step at a time in a
//! seeded order, with the simulator's virtual clock as processing time.
//!
//! The same [`build_job`] builds the same operators as on threads; only who steps the workers, and
//! which clock they read, changes. A job failure (a bad input line, a panicking operator) ends the
//! run as it does on threads: the failure flag halts the simulation after the step that set it.

use std::sync::Arc;

pub use flowlab_sim::{NetworkConfig, SimConfig, SimReport};
use flowlab_sim::{SimError, Simulation, VirtualClock};

use super::{JobConfig, JobFailure, JobReport, Substrate, WorkerContext, build_job};
use crate::api::Env;
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
    let halt = failure.clone();
    let simulation = simulation.halt_when(move || halt.is_failed());
    let (name, metrics, max_parallelism) = (config.name.as_str(), &config.metrics, config.max_parallelism);
    let outcome = simulation.run(|worker| {
        let context = WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            clock: Arc::clone(&clock),
            metrics: metrics.clone(),
            failure: failure.clone(),
            max_parallelism,
            network: network.clone(),
        };
        build_job(worker, name, context, &job)
    });
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
    let graph = outcome.results.into_iter().next().expect("at least one worker");
    Ok(JobReport { graph, metrics: config.metrics.clone(), simulation: Some(outcome.report) })
}
