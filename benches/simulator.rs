//! Seeds per second of the simulator: the built-in window-count job (4 workers, 10 000 events)
//! under `flowlab sim`'s check, without faults and with every fault; and the same job on threads,
//! for the simulated-to-real time ratio. Run with `cargo bench --bench simulator`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlab::jobs::sim::{Check, Faults};

fn seeds_per_second(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    for faults in [Faults::None, Faults::All] {
        let mut check = Check::window_count(10_000, 100, 4);
        check.faults = faults;
        let mut seed = 0;
        group.bench_function(format!("window-count, 4 workers, 10 000 events, faults {faults} (one seed)"), |b| {
            b.iter(|| {
                seed += 1;
                check.run(seed).expect("the seed runs")
            })
        });
    }
    let check = Check::window_count(10_000, 100, 4);
    group.bench_function("window-count, 4 workers, 10 000 events, on threads without checkpoints", |b| {
        b.iter(|| check.expected().expect("the job runs"))
    });
    group.finish();
}

criterion_group!(benches, seeds_per_second);
criterion_main!(benches);
