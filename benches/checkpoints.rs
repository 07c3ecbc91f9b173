//! What checkpoints cost: the same windowed job without checkpoints, and with checkpoints into a
//! directory every 1 s and every 100 ms; and a recovery (restore + replay) from a checkpoint.
//! Run with `cargo bench --bench checkpoints`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::api::Env;
use flowlab::checkpoint::{CheckpointConfig, FileStore, RestartStrategy, RestoreFrom};
use flowlab::connectors::{Event, GeneratorConfig, GeneratorSource, TransactionalCollectSink};
use flowlab::runtime::{JobConfig, JobReport, execute};
use flowlab::time::WatermarkStrategy;
use flowlab::window::{ReduceAggregate, TumblingWindows};

const EVENTS: u64 = 1_000_000;

fn input() -> GeneratorConfig {
    GeneratorConfig { keys: 10_000, events: EVENTS, late_fraction: 0.01, ..GeneratorConfig::default() }
}

/// generator → key_by → tumbling 10 s sum → exactly-once in-memory sink.
fn run(config: &JobConfig) -> JobReport {
    let sink = TransactionalCollectSink::new();
    let job_sink = sink.clone();
    execute(config, move |env: &Env| {
        env.source(GeneratorSource::new(input()), WatermarkStrategy::bounded(2_000))
            .map(|event: Event| (event.key, event.value))
            .key_by(|(key, _): &(String, i64)| key.clone())
            .window(TumblingWindows::event_time(10_000).expect("a valid size"))
            .aggregate(ReduceAggregate::new(|a: &(String, i64), b: &(String, i64)| (a.0.clone(), a.1 + b.1)))
            .results
            .sink_exactly_once(job_sink.clone());
    })
    .expect("the job runs")
}

fn checkpointed(dir: &std::path::Path, interval_ms: i64, restore: RestoreFrom) -> JobConfig {
    let mut checkpoint = CheckpointConfig::new(Arc::new(FileStore::new(dir).expect("a checkpoint directory")));
    checkpoint.interval_ms = interval_ms;
    checkpoint.restore = restore;
    JobConfig::threads("bench", 2).with_checkpoints(checkpoint, RestartStrategy::None)
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoints");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group
        .bench_function("tumbling 10s, 2 workers, no checkpoints", |b| b.iter(|| run(&JobConfig::threads("bench", 2))));
    for interval_ms in [1_000, 100] {
        group.bench_function(format!("tumbling 10s, 2 workers, checkpoints every {interval_ms} ms"), |b| {
            b.iter(|| {
                let dir = tempfile::tempdir().expect("a temporary directory");
                run(&checkpointed(dir.path(), interval_ms, RestoreFrom::Nothing))
            })
        });
    }
    group.finish();

    // Size and duration of the checkpoints one run takes, printed once for the note.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = run(&checkpointed(dir.path(), 100, RestoreFrom::Nothing));
    for record in &report.checkpoints {
        println!(
            "checkpoint {:>3}: {:>9} bytes, {:>4} ms from trigger to complete, alignment {:>3} ms, {} records buffered{}",
            record.id,
            record.bytes,
            record.end_ms - record.trigger_ms,
            record.alignment_ms_max,
            record.buffered_records,
            if record.last { " (final)" } else { "" }
        );
    }
}

fn recovery(c: &mut Criterion) {
    // A run that checkpoints, then the newest mid-run checkpoint is what a restore starts from.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = run(&checkpointed(dir.path(), 100, RestoreFrom::Nothing));
    let middle = report.checkpoints.iter().filter(|record| !record.last).map(|record| record.id).max();
    let Some(middle) = middle else {
        println!("no mid-run checkpoint completed; no recovery bench");
        return;
    };
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.bench_function(format!("restore checkpoint {middle} and replay to the end"), |b| {
        b.iter(|| {
            let copy = tempfile::tempdir().expect("a temporary directory");
            let from = dir.path().join(format!("chk-{middle}"));
            let to = copy.path().join(format!("chk-{middle}"));
            std::fs::create_dir_all(&to).expect("a checkpoint copy");
            for entry in std::fs::read_dir(&from).expect("the checkpoint") {
                let entry = entry.expect("an entry");
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("a copied part");
            }
            run(&checkpointed(copy.path(), 100_000, RestoreFrom::Checkpoint(middle)))
        })
    });
    group.finish();
}

criterion_group!(benches, overhead, recovery);
criterion_main!(benches);
