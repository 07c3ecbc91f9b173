//! The simulated substrate with plain timely jobs: determinism, variety, faults, limits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use flowlab_sim::{NetworkConfig, SimConfig, SimError, Simulation, TraceEvent};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::worker::Worker;

const ROUNDS: u64 = 8;
const PER_ROUND: u64 = 40;

/// `(receiver, round, values in arrival order)`, recorded when the receiver's frontier passes the
/// round, and then `(receiver, u64::MAX, every value in arrival order)` at the end.
type Seen = Arc<Mutex<Vec<(usize, u64, Vec<u64>)>>>;

fn value(round: u64, sender: usize, i: u64) -> u64 {
    (round << 32) | ((sender as u64) << 16) | i
}

fn route(value: &u64) -> u64 {
    value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7
}

fn sender_of(value: u64) -> usize {
    ((value >> 16) & 0xFFFF) as usize
}

/// Every worker emits `PER_ROUND` values per round, at timely time `round`; they are exchanged
/// (through the simulated network) and a checker records each round once its frontier passes it.
fn rounds_job(worker: &mut Worker, network: &flowlab_sim::Network, seen: &Seen) {
    let index = worker.index();
    let (network, seen) = (network.clone(), Arc::clone(seen));
    worker.dataflow::<u64, _, _>(move |scope| {
        let stream = source::<_, timely::container::CapacityContainerBuilder<Vec<u64>>, _, _>(
            scope,
            "rounds",
            move |capability, info| {
                let activator = scope.activator_for(info.address);
                let mut capability = Some(capability);
                let mut round = 0;
                move |output| {
                    let Some(held) = capability.as_mut() else { return };
                    if round == ROUNDS {
                        capability = None;
                        return;
                    }
                    let mut session = output.session(&*held);
                    for i in 0..PER_ROUND {
                        session.give(value(round, index, i));
                    }
                    drop(session);
                    round += 1;
                    held.downgrade(&round);
                    activator.activate();
                }
            },
        );
        let mut stash: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut arrivals = Vec::new();
        stream.sink(network.delayed(Exchange::new(route)), "check", move |(input, frontier)| {
            input.for_each(|time, data: &mut Vec<u64>| {
                arrivals.extend(data.iter().copied());
                stash.entry(*time.least().expect("a time")).or_default().append(data);
            });
            if frontier.is_empty() && !arrivals.is_empty() {
                seen.lock().unwrap().push((index, u64::MAX, std::mem::take(&mut arrivals)));
            }
            let done: Vec<u64> = stash.keys().copied().filter(|round| !frontier.less_equal(round)).collect();
            for round in done {
                let values = stash.remove(&round).expect("listed");
                seen.lock().unwrap().push((index, round, values));
            }
        });
    });
}

fn run(config: SimConfig) -> (flowlab_sim::SimReport, Vec<(usize, u64, Vec<u64>)>) {
    let seen: Seen = Arc::default();
    let simulation = Simulation::new(config);
    let network = simulation.network();
    let outcome = simulation.run(|worker| rounds_job(worker, &network, &seen)).expect("the run succeeds");
    let seen = seen.lock().unwrap().clone();
    (outcome.report, seen)
}

/// Checks what a correct run must show, whatever the seed: every round complete when its frontier
/// passed, each value at the worker it was routed to, and each sender's values in send order.
fn check(workers: usize, seed: u64, seen: &[(usize, u64, Vec<u64>)]) {
    let mut rounds_seen = BTreeSet::new();
    for (receiver, round, values) in seen {
        if *round == u64::MAX {
            for sender in 0..workers {
                let from: Vec<u64> = values.iter().copied().filter(|v| sender_of(*v) == sender).collect();
                assert!(from.windows(2).all(|w| w[0] < w[1]), "seed {seed}: link {sender}->{receiver} not FIFO");
            }
            continue;
        }
        let expected: Vec<u64> = (0..workers)
            .flat_map(|sender| (0..PER_ROUND).map(move |i| value(*round, sender, i)))
            .filter(|value| (route(value) % workers as u64) as usize == *receiver)
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        assert_eq!(
            sorted, expected,
            "seed {seed}: worker {receiver} round {round} incomplete when its frontier passed"
        );
        assert!(rounds_seen.insert((*receiver, *round)), "seed {seed}: round reported twice");
    }
    assert_eq!(rounds_seen.len(), workers * ROUNDS as usize, "seed {seed}: rounds missing");
}

fn config(seed: u64) -> SimConfig {
    SimConfig { workers: 3, seed, ..SimConfig::default() }
}

fn faulty(seed: u64) -> SimConfig {
    SimConfig {
        stall_probability: 0.05,
        stall_steps_max: 30,
        tick_jitter_ms: 3,
        network: NetworkConfig { delay_ms_max: 20, clog_probability: 0.05, clog_ms_max: 200, delay_local: true },
        ..config(seed)
    }
}

#[test]
fn the_same_seed_gives_the_same_trace_and_output_in_order() {
    for seed in 0..20 {
        for config in [config(seed), faulty(seed)] {
            let (first, first_seen) = run(config.clone());
            let (second, second_seen) = run(config);
            assert_eq!(first.trace_hash(), second.trace_hash(), "seed {seed}: trace hashes differ");
            assert_eq!(first.steps, second.steps, "seed {seed}");
            assert_eq!(first_seen, second_seen, "seed {seed}: outputs differ");
        }
    }
}

#[test]
fn different_seeds_interleave_differently_and_agree_on_the_result() {
    let mut hashes = BTreeSet::new();
    let mut orders = BTreeSet::new();
    for seed in 0..20 {
        for config in [config(seed), faulty(seed)] {
            let (report, seen) = run(config);
            check(3, seed, &seen);
            hashes.insert(report.trace_hash());
            orders.insert(seen);
        }
    }
    assert_eq!(hashes.len(), 40, "every seed and fault mix gives its own trace");
    assert!(orders.len() > 20, "arrival orders vary with the seed: {} distinct of 40", orders.len());
}

#[test]
fn delays_and_clogs_hold_messages_yet_the_frontier_waits_for_them() {
    let seed = 11;
    let (report, seen) = run(SimConfig { keep_trace: true, ..faulty(seed) });
    check(3, seed, &seen);
    let events = report.trace.events().expect("kept");
    let mut now_ms = 0;
    let mut held = 0;
    let mut sends = 0;
    let mut delivers = 0;
    for event in events {
        match *event {
            TraceEvent::Step { now_ms: at, .. } => now_ms = at,
            // Events of a step are recorded during it and appear right after its Step event.
            TraceEvent::Send { deliver_at_ms, .. } => {
                sends += 1;
                if deliver_at_ms > now_ms + 1 {
                    held += 1;
                }
            }
            TraceEvent::Deliver { .. } => delivers += 1,
            _ => {}
        }
    }
    assert_eq!(sends, delivers, "seed {seed}: every message is delivered exactly once");
    assert!(held > 0, "seed {seed}: some messages were delayed");
    assert!(report.stalls > 0, "seed {seed}: some workers were stalled");
}

#[test]
fn a_livelock_hits_the_step_limit() {
    let simulation = Simulation::new(SimConfig { steps_max: 500, seed: 3, ..SimConfig::default() });
    let error = simulation
        .run(|worker| {
            worker.dataflow::<u64, _, _>(|scope| {
                source::<_, timely::container::CapacityContainerBuilder<Vec<u64>>, _, _>(
                    scope,
                    "forever",
                    move |capability, info| {
                        let activator = scope.activator_for(info.address);
                        let held = capability;
                        move |_output| {
                            let _still_held = &held;
                            activator.activate();
                        }
                    },
                );
            });
        })
        .unwrap_err();
    assert_eq!(error, SimError::StepLimit { seed: 3, steps_max: 500 });
    assert!(error.to_string().contains("seed 3"));
}

#[test]
fn panics_are_reported_with_seed_worker_and_step() {
    let error = Simulation::new(SimConfig { workers: 3, seed: 5, ..SimConfig::default() })
        .run(|worker| {
            if worker.index() == 1 {
                panic!("cannot build");
            }
        })
        .unwrap_err();
    assert!(
        matches!(&error, SimError::WorkerPanicked { seed: 5, worker: 1, step: None, message } if message == "cannot build"),
        "{error:?}"
    );

    let error = Simulation::new(SimConfig { workers: 2, seed: 6, ..SimConfig::default() })
        .run(|worker| {
            let index = worker.index();
            worker.dataflow::<u64, _, _>(|scope| {
                source::<_, timely::container::CapacityContainerBuilder<Vec<u64>>, _, _>(
                    scope,
                    "boom",
                    move |capability, info| {
                        let activator = scope.activator_for(info.address);
                        let held = capability;
                        let mut steps = 0;
                        move |_output| {
                            let _still_held = &held;
                            steps += 1;
                            assert!(index != 1 || steps < 4, "worker 1 breaks");
                            activator.activate();
                        }
                    },
                );
            });
        })
        .unwrap_err();
    assert!(matches!(&error, SimError::WorkerPanicked { seed: 6, worker: 1, step: Some(_), .. }), "{error:?}");
}

#[test]
fn workers_without_dataflows_end_at_once_and_zero_workers_is_an_error() {
    let outcome =
        Simulation::new(SimConfig { workers: 4, ..SimConfig::default() }).run(|worker| worker.index()).unwrap();
    assert_eq!(outcome.results, vec![0, 1, 2, 3]);
    assert_eq!(outcome.report.steps, 0);
    let error = Simulation::new(SimConfig { workers: 0, ..SimConfig::default() }).run(|_| ()).unwrap_err();
    assert!(matches!(error, SimError::Config { .. }));
}

#[test]
fn the_virtual_clock_advances_one_tick_per_step() {
    let simulation = Simulation::new(SimConfig { start_ms: 1_000, tick_ms: 10, seed: 9, ..config(9) });
    let clock = simulation.clock();
    let network = simulation.network();
    let seen: Seen = Arc::default();
    let report = simulation.run(|worker| rounds_job(worker, &network, &seen)).unwrap().report;
    assert_eq!(report.end_ms, 1_000 + 10 * report.steps as i64);
    assert_eq!(clock.now_ms(), report.end_ms);
    assert_eq!(report.steps_per_worker.iter().sum::<u64>(), report.steps);
}

#[test]
fn halting_stops_the_run_early() {
    let simulation = Simulation::new(config(2));
    let clock = simulation.clock();
    let network = simulation.network();
    let seen: Seen = Arc::default();
    let report = simulation
        .halt_when(move || clock.now_ms() >= 5)
        .run(|worker| rounds_job(worker, &network, &seen))
        .unwrap()
        .report;
    assert!(report.halted);
    assert_eq!(report.steps, 5);
}
