//! Results of event-time pipelines do not depend on the number of workers.

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CollectionSource, GeneratorConfig};
use flowlab::jobs::watermarks::{Input, WatermarksJob, run_watermarks};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;
use proptest::prelude::*;

/// Running sums per key and late records: what [`pipeline`] returns.
type Outcome = (Vec<(u8, i64, i64)>, Vec<(u8, i64)>);

/// A pipeline with every stateless operator, a keyed exchange and a keyed reduce.
fn pipeline(input: Vec<(i64, (u8, i64))>, parallelism: usize) -> Outcome {
    pipeline_with(input, JobConfig::threads("parallelism", parallelism))
}

fn pipeline_with(input: Vec<(i64, (u8, i64))>, config: JobConfig) -> Outcome {
    let sums = CollectSink::new();
    let late = CollectSink::new();
    let (sums_out, late_out) = (sums.clone(), late.clone());
    execute(&config, move |env: &Env| {
        let (on_time, late_stream) =
            env.source(CollectionSource::new(input.clone()), WatermarkStrategy::bounded(1_000)).split_late();
        late_stream.sink(late_out.clone());
        on_time
            .filter(|(_, value)| value % 5 != 0)
            .flat_map(|(key, value)| vec![(key, value), (key.wrapping_add(100), value * 2)])
            .map(|(key, value)| (key, value, 1i64))
            .key_by(|(key, _, _)| *key)
            .reduce(|(key, sum, count), (_, value, one)| (*key, sum + value, count + one))
            .sink(sums_out.clone());
    })
    .expect("job runs");
    (sums.sorted_values(), late.sorted_values())
}

fn input_strategy() -> impl Strategy<Value = Vec<(i64, (u8, i64))>> {
    prop::collection::vec((0i64..60_000, (0u8..20, -1_000i64..1_000)), 0..400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_result_multiset_is_the_same_for_1_2_and_4_workers(input in input_strategy()) {
        let one = pipeline(input.clone(), 1);
        prop_assert_eq!(&pipeline(input.clone(), 2), &one);
        prop_assert_eq!(&pipeline(input, 4), &one);
    }

    /// Back-pressure and batch size change when records travel, never what comes out.
    #[test]
    fn back_pressure_and_batching_do_not_change_the_result(
        input in input_strategy(),
        workers in 1usize..=3,
        batch in 1usize..40,
        in_flight in proptest::option::of(1usize..4),
    ) {
        let mut config = JobConfig::threads("back-pressure", workers);
        config.source_batch_max = batch;
        config.in_flight_batches_max = in_flight;
        prop_assert_eq!(pipeline_with(input.clone(), config), pipeline(input, 1), "batch {}, in flight {:?}", batch, in_flight);
    }
}

#[test]
fn the_watermarks_job_gives_the_same_answer_for_1_2_and_4_workers() {
    let job = WatermarksJob {
        input: Input::Generated(GeneratorConfig {
            keys: 50,
            events: 30_000,
            late_fraction: 0.02,
            seed: 7,
            ..GeneratorConfig::default()
        }),
        strategy: WatermarkStrategy::bounded(1_500),
        bad_lines: flowlab::connectors::BadLinePolicy::Fail,
        late_output: None,
        keep_points: false,
    };
    let results: Vec<_> = [1, 2, 4]
        .iter()
        .map(|&parallelism| {
            let outcome = run_watermarks(&job, &JobConfig::threads("watermarks", parallelism)).expect("runs");
            (outcome.late, outcome.on_time_per_key)
        })
        .collect();
    assert!(!results[0].0.is_empty(), "the input should have late events");
    assert_eq!(results[0].1.values().sum::<u64>() + results[0].0.len() as u64, 30_000);
    assert_eq!(results[1], results[0]);
    assert_eq!(results[2], results[0]);
}
