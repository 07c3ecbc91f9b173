//! Criterion benches of the Nexmark queries and of watermark propagation. Run with
//! `cargo bench --bench nexmark`; `flowlab bench nexmark` measures the same queries at scale,
//! next to the plain-loop baseline.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CollectionSource};
use flowlab::jobs::bench::{Engine, NexmarkBench, bench_nexmark};
use flowlab::nexmark::{NexmarkConfig, Query};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;

const EVENTS: u64 = 200_000;

fn generator(c: &mut Criterion) {
    let config = NexmarkConfig { events: EVENTS, ..NexmarkConfig::default() };
    let mut group = c.benchmark_group("nexmark generator");
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("make 200 000 events", |b| {
        b.iter(|| config.events().map(|(time, _)| time).fold(0i64, |sum, time| black_box(sum ^ time)))
    });
    group.finish();
}

fn queries(c: &mut Criterion) {
    let mut group = c.benchmark_group("nexmark, 200 000 events");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for query in [Query::Q0, Query::Q5, Query::Q7, Query::Q8, Query::Q11] {
        for (engine, workers) in [(Engine::Baseline, 1), (Engine::Flowlab, 1), (Engine::Flowlab, 2)] {
            let bench = NexmarkBench {
                query,
                input: NexmarkConfig { events: EVENTS, ..NexmarkConfig::default() },
                parallelism: workers,
            };
            group.bench_function(format!("{} {engine:?} {workers} worker(s)", query.name()), |b| {
                b.iter(|| bench_nexmark(&bench, engine, &|_| {}).unwrap().digest)
            });
        }
    }
    group.finish();
}

/// Watermark propagation: records one per event-time millisecond, one per source batch, through
/// a chain of operators, so that every record moves the frontier of every operator.
fn watermarks(c: &mut Criterion) {
    const RECORDS: i64 = 20_000;
    let mut group = c.benchmark_group("watermark propagation");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for operators in [1, 8] {
        group.bench_function(format!("{RECORDS} watermarks through {operators} operator(s)"), |b| {
            b.iter(|| {
                let mut config = JobConfig::threads("watermarks", 1);
                config.source_batch_max = 1;
                execute(&config, move |env: &Env| {
                    let records: Vec<(i64, i64)> = (0..RECORDS).map(|t| (t, t)).collect();
                    let mut stream = env.source(CollectionSource::new(records), WatermarkStrategy::monotonous());
                    for _ in 0..operators {
                        stream = stream.map(|value| value + 1);
                    }
                    stream.sink(CollectSink::new());
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generator, queries, watermarks);
criterion_main!(benches);
