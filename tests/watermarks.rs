//! Watermark semantics, checked against a naive model written here, separately from the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CollectionSource, ReadStatus, Source, SourceReader};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::{ManualClock, WATERMARK_MAX, WATERMARK_MIN, WatermarkStrategy, WatermarkTrace};
use proptest::prelude::*;

/// The naive model: Flink's bounded out-of-orderness watermark, evaluated after every record.
/// Returns, for each event in arrival order, the watermark it arrived behind.
fn model_stamps(times: &[i64], delay_ms: i64) -> Vec<i64> {
    let mut stamps = Vec::with_capacity(times.len());
    let mut max_seen: Option<i64> = None;
    for &time in times {
        stamps.push(match max_seen {
            None => i64::MIN,
            Some(max) => max - delay_ms - 1,
        });
        max_seen = Some(max_seen.map_or(time, |max| max.max(time)));
    }
    stamps
}

/// Runs source → split_late on `times` (values are arrival indices) with `parallelism` workers and
/// returns (all records sorted by arrival index, late arrival indices sorted).
fn run(times: &[i64], delay_ms: i64, parallelism: usize) -> (Vec<flowlab::time::Record<usize>>, Vec<usize>) {
    let input: Vec<(i64, usize)> = times.iter().copied().enumerate().map(|(index, time)| (time, index)).collect();
    let all = CollectSink::new();
    let late = CollectSink::new();
    let (all_out, late_out) = (all.clone(), late.clone());
    execute(&JobConfig::threads("watermark property", parallelism), move |env: &Env| {
        let events = env.source(CollectionSource::new(input.clone()), WatermarkStrategy::bounded(delay_ms));
        events.clone().sink(all_out.clone());
        let (on_time, late_stream) = events.key_by(|index| *index % 7).reduce(|_, latest| *latest).split_late();
        drop(on_time);
        late_stream.sink(late_out.clone());
    })
    .expect("job runs");
    let mut records = all.records();
    records.sort_by_key(|record| record.value);
    (records, late.sorted_values())
}

fn times_strategy() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(-50_000i64..50_000, 0..300)
}

/// Events whose disorder is at most `bound`: each is at most `bound` behind the maximum before it.
fn bounded_disorder(steps: Vec<(i64, i64)>, bound: i64) -> Vec<i64> {
    let mut max_seen = -20_000i64;
    steps
        .into_iter()
        .map(|(advance, behind)| {
            let time = max_seen + advance - behind.min(bound + advance);
            max_seen = max_seen.max(time);
            time
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The stamps a source assigns are the model's, so they never regress along the input.
    #[test]
    fn stamps_follow_flinks_formula_and_never_regress(times in times_strategy(), delay_ms in 0i64..5_000) {
        let (records, _) = run(&times, delay_ms, 1);
        let stamps: Vec<i64> = records.iter().map(|record| record.watermark_ms).collect();
        prop_assert_eq!(&stamps, &model_stamps(&times, delay_ms));
        prop_assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]), "a watermark regressed: {:?}", stamps);
    }

    /// With disorder at most d and `bounded:d`, no element is late.
    #[test]
    fn no_element_is_late_within_the_bound(steps in prop::collection::vec((0i64..3_000, 0i64..10_000), 0..300), bound in 0i64..4_000) {
        let times = bounded_disorder(steps, bound);
        let (_, late) = run(&times, bound, 2);
        prop_assert!(late.is_empty(), "late with bound {}: {:?}", bound, late);
    }

    /// With a smaller bound, the late elements are exactly those the naive model calls late.
    #[test]
    fn late_elements_are_exactly_the_models(times in times_strategy(), delay_ms in 0i64..3_000, parallelism in 1usize..4) {
        let stamps = model_stamps(&times, delay_ms);
        let expected: Vec<usize> = (0..times.len()).filter(|&i| times[i] <= stamps[i]).collect();
        let (_, late) = run(&times, delay_ms, parallelism);
        prop_assert_eq!(late, expected);
    }
}

#[test]
fn a_hand_computed_example() {
    // bounded:2s. Watermarks before each event: -inf, 7999 (after 10000), 7999, 10999 (after 13000).
    let times = [10_000, 9_000, 7_999, 13_000, 11_000, 10_999];
    let (records, late) = run(&times, 2_000, 1);
    let stamps: Vec<i64> = records.iter().map(|record| record.watermark_ms).collect();
    assert_eq!(stamps, vec![WATERMARK_MIN, 7_999, 7_999, 7_999, 10_999, 10_999]);
    // 7999 <= 7999 is late (Flink: ts <= watermark); 10999 <= 10999 too; 11000 is not.
    assert_eq!(late, vec![2, 5]);
}

/// A source that stays quiet for `quiet_reads` reads, moving a manual clock 10 ms per read, then ends.
struct QuietSource {
    clock: ManualClock,
    quiet_reads: usize,
    reads: Arc<AtomicUsize>,
}

impl Source<usize> for QuietSource {
    fn name(&self) -> String {
        "quiet".to_string()
    }

    fn open(&self, _instance: usize, _instances: usize) -> flowlab::Result<Box<dyn SourceReader<usize>>> {
        Ok(Box::new(QuietReader { clock: self.clock.clone(), left: self.quiet_reads, reads: Arc::clone(&self.reads) }))
    }
}

struct QuietReader {
    clock: ManualClock,
    left: usize,
    reads: Arc<AtomicUsize>,
}

impl SourceReader<usize> for QuietReader {
    fn read(&mut self, _out: &mut Vec<(i64, usize)>, _max: usize) -> flowlab::Result<ReadStatus> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.clock.advance_ms(10);
        if self.left == 0 {
            return Ok(ReadStatus::Finished);
        }
        self.left -= 1;
        Ok(ReadStatus::Pending)
    }

    fn offset(&self) -> u64 {
        0
    }
}

fn idle_run(strategy: WatermarkStrategy) -> Vec<i64> {
    let clock = ManualClock::new(0);
    let trace = WatermarkTrace::new();
    let (source_clock, job_trace) = (clock.clone(), trace.clone());
    execute(&JobConfig::threads("idle", 1).with_clock(clock), move |env: &Env| {
        let busy = env.source(CollectionSource::new(vec![(1_000, 1usize), (5_000, 2)]), WatermarkStrategy::bounded(0));
        let quiet = env.source(
            QuietSource { clock: source_clock.clone(), quiet_reads: 30, reads: Arc::new(AtomicUsize::new(0)) },
            strategy.clone(),
        );
        busy.union(quiet).trace_watermarks(&job_trace);
    })
    .expect("job runs");
    trace.steps_of(0).iter().map(|step| step.watermark_ms).collect()
}

#[test]
fn an_idle_source_stops_holding_back_the_watermark() {
    // Without idleness the quiet source holds the watermark at -inf until it finishes.
    let held = idle_run(WatermarkStrategy::bounded(0));
    assert_eq!(held.first(), Some(&WATERMARK_MIN));
    assert_eq!(held.last(), Some(&WATERMARK_MAX));
    assert!(held.iter().all(|&w| w == WATERMARK_MIN || w == WATERMARK_MAX), "{held:?}");
    // With a 50 ms idle timeout (5 quiet reads) it lets go before it finishes.
    let released = idle_run(WatermarkStrategy::bounded(0).with_idleness(50));
    assert!(
        released.iter().any(|&w| w != WATERMARK_MIN && w != WATERMARK_MAX),
        "the watermark never advanced while the quiet source was idle: {released:?}"
    );
}

/// A generator that breaks the contract: its watermark goes back after the second event.
struct Regressing(u32);

impl flowlab::time::WatermarkGenerator for Regressing {
    fn on_event(&mut self, _time_ms: i64) {
        self.0 += 1;
    }

    fn current_watermark(&self) -> i64 {
        if self.0 >= 2 { 0 } else { 100 }
    }
}

#[test]
fn a_regressing_watermark_generator_fails_the_job_with_a_clear_error_on_any_parallelism() {
    for parallelism in [1, 2] {
        let strategy = WatermarkStrategy::custom("regressing", || Box::new(Regressing(0)));
        let result = execute(&JobConfig::threads("regress", parallelism), move |env: &Env| {
            env.source(CollectionSource::new(vec![(1, 1u8), (2, 2), (3, 3)]), strategy.clone())
                .key_by(|value| *value)
                .reduce(|a, _| *a)
                .sink(CollectSink::new());
        });
        let message = result.expect_err("the job must fail").to_string();
        assert!(message.contains("regressed from 100 to 0"), "{message}");
    }
}

#[test]
fn a_panicking_operator_ends_the_job_with_its_message_instead_of_hanging() {
    let result = execute(&JobConfig::threads("panic", 2), move |env: &Env| {
        env.source(CollectionSource::new((0..100).map(|i| (i, i)).collect()), WatermarkStrategy::bounded(0))
            .key_by(|value| *value % 2)
            .reduce(|a, b| if *b == 57 { panic!("planted bug at 57") } else { a + b })
            .sink(CollectSink::new());
    });
    let message = result.expect_err("the job must fail").to_string();
    assert!(message.contains("planted bug at 57"), "{message}");
}
