//! Criterion benches of the foundation's hot paths: parsing, key routing, and a whole job.
//! Run with `cargo bench --bench pipeline`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::api::Env;
use flowlab::connectors::{CollectSink, GeneratorConfig, GeneratorSource, parse_event_line};
use flowlab::runtime::{JobConfig, execute};
use flowlab::state::worker_for_key;
use flowlab::time::WatermarkStrategy;

fn parsing(c: &mut Criterion) {
    let lines: Vec<String> = (0..10_000).map(|i| format!("k{},{},{}", i % 997, i * 7, i % 100)).collect();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("event lines", |b| {
        b.iter(|| {
            for (index, line) in lines.iter().enumerate() {
                black_box(parse_event_line(line, index as u64 + 2).unwrap());
            }
        })
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("key to worker via key group", |b| {
        b.iter(|| keys.iter().map(|key| worker_for_key(key, 128, 4)).sum::<usize>())
    });
    group.finish();
}

fn whole_job(c: &mut Criterion) {
    const EVENTS: u64 = 200_000;
    let mut group = c.benchmark_group("job");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    for workers in [1, 2] {
        group.bench_function(format!("source, split late, keyed count; {workers} worker(s)"), |b| {
            b.iter(|| {
                let config =
                    GeneratorConfig { keys: 10_000, events: EVENTS, late_fraction: 0.01, ..Default::default() };
                execute(&JobConfig::threads("bench", workers), move |env: &Env| {
                    let (on_time, late) = env
                        .source(GeneratorSource::new(config.clone()), WatermarkStrategy::bounded(2_000))
                        .split_late();
                    late.sink(CollectSink::new());
                    on_time
                        .map(|event| (event.key, 1u64))
                        .key_by(|(key, _)| key.clone())
                        .reduce(|(key, a), (_, b)| (key.clone(), a + b));
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parsing, routing, whole_job);
criterion_main!(benches);
