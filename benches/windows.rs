//! Criterion benches of the window operator's core (no timely): every assigner with a count
//! aggregate over 10 000 keys, fed with per-record watermarks as a source would.
//! Run with `cargo bench --bench windows`; throughput is reported in elements per second.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::connectors::{GeneratorConfig, generate_events};
use flowlab::runtime::{Emit, KeyedEngine};
use flowlab::time::{BoundedOutOfOrderness, Record, WATERMARK_MAX, WatermarkGenerator};
use flowlab::window::{
    AggregateFunction, Aggregating, SessionWindows, SlicedCore, SlidingWindows, TimeDomain, TumblingWindows,
    WindowAssigner, WindowCore, WindowResult, WindowSettings,
};

const EVENTS: u64 = 200_000;

struct Count;

impl AggregateFunction<u32> for Count {
    type Accumulator = u64;
    type Output = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, count: &mut u64, _value: &u32) {
        *count += 1;
    }
    fn merge(&self, count: &mut u64, other: u64) {
        *count += other;
    }
    fn result(&self, count: &u64) -> u64 {
        *count
    }
}

/// `(key, record)` pairs with the stamps a `bounded:2s` source assigns.
fn input() -> Vec<(u32, Record<u32>)> {
    let config = GeneratorConfig { keys: 10_000, events: EVENTS, events_per_second: 10_000, ..Default::default() };
    let mut generator = BoundedOutOfOrderness::new(2_000);
    generate_events(&config)
        .map(|(time_ms, event)| {
            let stamp = generator.current_watermark();
            generator.on_event(time_ms);
            let key: u32 = event.key[1..].parse().unwrap();
            (key, Record::new(time_ms, stamp, key))
        })
        .collect()
}

/// Runs the general operator, or with `sliced` the sliced one where the assigner allows it.
fn run(assigner: Arc<dyn WindowAssigner<u32>>, sliced: bool, input: &[(u32, Record<u32>)]) -> usize {
    match (sliced, assigner.slicing()) {
        (true, Some(spec)) => drive(SlicedCore::new(spec, 0, true, Arc::new(Count)), input),
        _ => {
            let trigger = assigner.default_trigger();
            let settings = WindowSettings { assigner, trigger, allowed_lateness_ms: 0, per_record_watermarks: true };
            drive(WindowCore::new(settings, Aggregating(Arc::new(Count))), input)
        }
    }
}

fn drive(mut core: impl KeyedEngine<u32, u32, Output = WindowResult<u32, u64>>, input: &[(u32, Record<u32>)]) -> usize {
    let (mut results, mut late) = (Vec::new(), Vec::new());
    let mut fired = 0;
    for (key, record) in input {
        let mut emit = Emit { results: &mut results, late: &mut late };
        core.on_element(*key, record.clone(), 0, &mut emit).unwrap();
        fired += results.len();
        results.clear();
    }
    core.advance_watermark(WATERMARK_MAX, 0, &mut Emit { results: &mut results, late: &mut late });
    fired + results.len()
}

fn windows(c: &mut Criterion) {
    let input = input();
    let mut group = c.benchmark_group("window count, 10000 keys");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    let cases: Vec<(&str, Arc<dyn WindowAssigner<u32>>)> = vec![
        ("tumbling 10s", Arc::new(TumblingWindows::event_time(10_000).unwrap())),
        (
            "sliding 10s/2s (size/slide 5)",
            Arc::new(SlidingWindows::new(10_000, 2_000, 0, TimeDomain::EventTime).unwrap()),
        ),
        (
            "sliding 10s/200ms (size/slide 50)",
            Arc::new(SlidingWindows::new(10_000, 200, 0, TimeDomain::EventTime).unwrap()),
        ),
    ];
    for (name, assigner) in &cases {
        group.bench_function(format!("{name}, sliced"), |b| {
            b.iter(|| black_box(run(Arc::clone(assigner), true, &input)))
        });
    }
    // The general operator, for comparison (size/slide 50 takes seconds per run there).
    for (name, assigner) in cases.iter().take(2) {
        group.bench_function(format!("{name}, general"), |b| {
            b.iter(|| black_box(run(Arc::clone(assigner), false, &input)))
        });
    }
    let session: Arc<dyn WindowAssigner<u32>> =
        Arc::new(SessionWindows::with_gap(3_000, TimeDomain::EventTime).unwrap());
    group.bench_function("session 3s, general", |b| b.iter(|| black_box(run(Arc::clone(&session), false, &input))));
    group.finish();
}

criterion_group!(benches, windows);
criterion_main!(benches);
