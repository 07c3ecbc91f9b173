//! `flowlab bench window`: flowlab and the plain-loop baseline compute the same windows over the
//! same generated events — the same results, the same late events — for any window, disorder,
//! stragglers and parallelism; so the benchmark compares like with like.

use flowlab::connectors::GeneratorConfig;
use flowlab::jobs::bench::{Engine, WindowBench, bench_window};
use flowlab::jobs::window::WindowSpec;
use proptest::prelude::*;

fn bench(window: WindowSpec, input: GeneratorConfig, parallelism: usize) -> WindowBench {
    WindowBench { window, input, parallelism }
}

fn input(events: u64, keys: u64, disorder_ms: i64, late_fraction: f64, seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        keys,
        events,
        disorder_ms,
        late_fraction,
        straggler_ms_max: 8_000,
        seed,
        ..GeneratorConfig::default()
    }
}

#[test]
fn flowlab_and_the_loop_agree_on_tumbling_and_sliding_windows_with_late_events() {
    for window in [WindowSpec::Tumbling { size_ms: 2_000 }, WindowSpec::Sliding { size_ms: 3_000, slide_ms: 1_000 }] {
        let baseline = bench_window(&bench(window, input(20_000, 50, 1_500, 0.03, 1), 1), Engine::Baseline, &|_| {})
            .expect("the loop runs");
        assert!(baseline.late > 0 && baseline.results > 0, "{baseline:?}");
        for parallelism in [1, 2] {
            let flowlab =
                bench_window(&bench(window, input(20_000, 50, 1_500, 0.03, 1), parallelism), Engine::Flowlab, &|_| {})
                    .expect("flowlab runs");
            assert_eq!(
                (flowlab.results, flowlab.late, flowlab.digest),
                (baseline.results, baseline.late, baseline.digest),
                "{window:?} on {parallelism} worker(s)"
            );
            assert_eq!(flowlab.parallelism, parallelism);
        }
    }
}

#[test]
fn flowlab_and_the_loop_agree_on_session_windows() {
    for (disorder_ms, late_fraction) in [(0, 0.0), (1_500, 0.03)] {
        let window = WindowSpec::Session { gap_ms: 40 };
        let input = input(20_000, 200, disorder_ms, late_fraction, 3);
        let baseline =
            bench_window(&bench(window, input.clone(), 1), Engine::Baseline, &|_| {}).expect("the loop runs");
        assert!(baseline.results > 1_000, "{baseline:?}");
        assert_eq!(baseline.late > 0, late_fraction > 0.0, "{baseline:?}");
        for parallelism in [1, 2] {
            let flowlab = bench_window(&bench(window, input.clone(), parallelism), Engine::Flowlab, &|_| {})
                .expect("flowlab runs");
            assert_eq!(
                (flowlab.results, flowlab.late, flowlab.digest),
                (baseline.results, baseline.late, baseline.digest),
                "sessions, disorder {disorder_ms} ms, on {parallelism} worker(s)"
            );
        }
    }
}

#[test]
fn the_engines_refuse_count_windows_and_report_what_they_used() {
    let error = bench_window(
        &bench(WindowSpec::Count { size: 10, slide: None }, input(10, 2, 0, 0.0, 0), 1),
        Engine::Baseline,
        &|_| {},
    )
    .expect_err("no count windows in the loop");
    assert!(error.to_string().contains("tumbling, sliding and session"), "{error}");
    let seen = std::sync::Mutex::new(Vec::new());
    let report = bench_window(
        &bench(WindowSpec::Tumbling { size_ms: 1_000 }, input(200_000, 100, 0, 0.0, 0), 1),
        Engine::Baseline,
        &|done| seen.lock().unwrap().push(done),
    )
    .expect("the loop runs");
    assert!(report.cpu_seconds > 0.0 && report.events_per_cpu_second > 0.0, "{report:?}");
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() >= 3 && seen.windows(2).all(|pair| pair[0] <= pair[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&200_000));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any window shape, disorder, straggler share and seed: one output.
    #[test]
    fn the_benchmark_engines_compute_the_same_output(
        size_ms in 1i64..5_000,
        slides in 1i64..5,
        disorder_ms in 0i64..3_000,
        late_per_mille in 0u32..100,
        seed in 0u64..1_000,
        parallelism in 1usize..=2,
    ) {
        let slide_ms = (size_ms / slides).max(1);
        let window = if slides == 1 { WindowSpec::Tumbling { size_ms } } else { WindowSpec::Sliding { size_ms, slide_ms } };
        let input = input(3_000, 20, disorder_ms, f64::from(late_per_mille) / 1_000.0, seed);
        let baseline = bench_window(&bench(window, input.clone(), 1), Engine::Baseline, &|_| {}).unwrap();
        let flowlab = bench_window(&bench(window, input, parallelism), Engine::Flowlab, &|_| {}).unwrap();
        prop_assert_eq!(
            (flowlab.results, flowlab.late, flowlab.digest),
            (baseline.results, baseline.late, baseline.digest),
            "{:?}, disorder {} ms, stragglers {}‰, seed {}, {} worker(s)", window, disorder_ms, late_per_mille, seed, parallelism
        );
    }
}
