//! The marketing job: events per second on threads (1 and 2 workers) and on real files with
//! checkpoints, and seeds per second of its simulated check with every fault. Run with
//! `cargo bench --bench marketing`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::checkpoint::{CheckpointConfig, FileStore, RestartStrategy};
use flowlab::marketing::events::EventsConfig;
use flowlab::marketing::job::{RealFiles, run_real};
use flowlab::marketing::{DEMO_RULES, MarketingCheck, MarketingInput, run_threads};
use flowlab::runtime::JobConfig;

fn throughput(c: &mut Criterion) {
    let events = 100_000;
    let config = EventsConfig { events, users: 2_000, events_per_second: 250, ..EventsConfig::default() };
    let input = MarketingInput::generated(&config, DEMO_RULES).expect("a valid input");
    let mut group = c.benchmark_group("marketing, 100 000 events, 2 000 users");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    for workers in [1, 2] {
        group.bench_function(format!("threads, {workers} worker(s), no checkpoints"), |b| {
            b.iter(|| run_threads(&input, workers).expect("the job runs"))
        });
    }
    group.bench_function("threads, 2 workers, real files, checkpoints every 100 ms", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = FileStore::new(dir.path().join("checkpoints")).expect("a store");
            let mut checkpoint = CheckpointConfig::new(std::sync::Arc::new(store));
            checkpoint.interval_ms = 100;
            let config = JobConfig::threads("marketing", 2).with_checkpoints(checkpoint, RestartStrategy::None);
            run_real(&input, &config, &RealFiles::in_dir(dir.path())).expect("the job runs")
        })
    });
    group.finish();

    let simulated = EventsConfig { events: 2_000, users: 100, events_per_second: 5, ..EventsConfig::default() };
    let check = MarketingCheck::new(MarketingInput::generated(&simulated, DEMO_RULES).expect("valid"), 3);
    let mut group = c.benchmark_group("marketing simulator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    let mut seed = 0;
    group.bench_function("2 000 events, 3 workers, every fault (one seed)", |b| {
        b.iter(|| {
            seed += 1;
            check.run(seed).expect("the seed runs")
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
