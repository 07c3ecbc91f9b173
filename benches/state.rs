//! Criterion benches of the heap keyed-state backend: `ValueState` updates over 1 000 000 keys,
//! and snapshot / restore of a backend holding 1 000 000 keys.
//! Run with `cargo bench --bench state`; updates are reported in elements per second, snapshot
//! and restore in bytes per second of snapshot.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::state::{KeyedStateBackend, MAX_PARALLELISM_DEFAULT, ValueStateDescriptor};

const KEYS: u64 = 1_000_000;

fn descriptor() -> ValueStateDescriptor<u64> {
    ValueStateDescriptor::new("count")
}

fn backend() -> KeyedStateBackend<u64> {
    let mut backend = KeyedStateBackend::new(MAX_PARALLELISM_DEFAULT);
    backend.register_value(&descriptor());
    backend
}

/// A backend where every key of `0..KEYS` holds a value.
fn full_backend() -> KeyedStateBackend<u64> {
    let mut backend = backend();
    let count = descriptor();
    for key in 0..KEYS {
        backend.set_current_key(key);
        backend.update(&count, key);
    }
    backend
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("value_state");
    group.sample_size(10);
    group.throughput(Throughput::Elements(KEYS));
    let count = descriptor();
    // Every key already present: the steady state of a running job (one read-modify-write per
    // record would add a `value` call; this measures `set_current_key` + `update`).
    let mut warm = full_backend();
    let mut round = 0u64;
    group.bench_function("update 1M existing keys", |b| {
        b.iter(|| {
            round += 1;
            for key in 0..KEYS {
                warm.set_current_key(key);
                warm.update(&count, key ^ round);
            }
        })
    });
    group.bench_function("read-modify-write 1M existing keys", |b| {
        b.iter(|| {
            for key in 0..KEYS {
                warm.set_current_key(key);
                let value = warm.value(&count).unwrap_or(0);
                warm.update(&count, value + 1);
            }
        })
    });
    group.finish();
}

fn snapshot_and_restore(c: &mut Criterion) {
    let full = full_backend();
    let bytes = full.snapshot();
    let mut group = c.benchmark_group("snapshot");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function(format!("snapshot 1M keys ({} MB)", bytes.len() / 1_000_000), |b| {
        b.iter(|| black_box(full.snapshot()))
    });
    let snapshots = vec![bytes];
    group.bench_function("restore 1M keys", |b| {
        b.iter(|| {
            let mut restored = backend();
            restored.restore(&snapshots, 0..MAX_PARALLELISM_DEFAULT).expect("a fresh snapshot restores");
            black_box(restored)
        })
    });
    group.finish();
}

criterion_group!(benches, updates, snapshot_and_restore);
criterion_main!(benches);
