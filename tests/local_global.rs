//! Local-global aggregation (`aggregate_local_global`) gives the results of `aggregate`, and
//! windows on parallel sources fire alike whatever the workers and batches.
//!
//! Two sources with different bounds of disorder are merged, so the windows see a stream that is
//! not in source order, with records whose stamps trail their times by different amounts. The same
//! windows are then aggregated both ways, on 1–3 workers with random source batch sizes (which
//! decide what each worker folds together), and compared:
//!
//! * the late elements (dropped from every window) as multisets;
//! * with no allowed lateness, the results as multisets;
//! * with allowed lateness, each window's firings per key — how many, and with how many elements
//!   — and what its last firing holds. Which late elements an intermediate late firing holds
//!   depends on the order in which the two sources' late elements arrive, as in Flink; how many
//!   firings there are does not: a window fires on time without the elements its stamp makes
//!   late, and once more for each, however far the other source has got.
//! * session windows, whose merging depends on the order of the elements: every firing, as a
//!   multiset, with or without allowed lateness.

use std::collections::BTreeMap;

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, CollectionSource};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::WatermarkStrategy;
use flowlab::window::{
    AggregateFunction, ContinuousEventTimeTrigger, EventTimeTrigger, SessionWindows, SlidingWindows, TimeDomain,
    WindowResult,
};
use proptest::prelude::*;

/// `(key, value)`; its event time travels next to it.
type Ev = (u8, i64);
/// `(count, sum, min, max)` of the values.
type Stats = (u64, i64, i64, i64);
/// A result row: `(key, start, end, stats)`.
type Row = (u8, i64, i64, Stats);

struct StatsOf;

impl AggregateFunction<Ev> for StatsOf {
    type Accumulator = Stats;
    type Output = Stats;

    fn create_accumulator(&self) -> Stats {
        (0, 0, i64::MAX, i64::MIN)
    }

    fn add(&self, accumulator: &mut Stats, (_, value): &Ev) {
        self.merge(accumulator, (1, *value, *value, *value));
    }

    fn merge(&self, accumulator: &mut Stats, other: Stats) {
        *accumulator =
            (accumulator.0 + other.0, accumulator.1 + other.1, accumulator.2.min(other.2), accumulator.3.max(other.3));
    }

    fn result(&self, accumulator: &Stats) -> Stats {
        *accumulator
    }
}

#[derive(Clone, Debug)]
struct Case {
    /// The two sources' records, `(time, (key, value))`, each with its bound of disorder.
    sources: [(Vec<(i64, Ev)>, i64); 2],
    size_ms: i64,
    slide_ms: i64,
    offset_ms: i64,
    lateness_ms: i64,
    workers: usize,
    batch: usize,
    /// Whether to run the general window operator (an explicit trigger) instead of the sliced one.
    general: bool,
    /// Session windows with this gap instead of the sliding windows (on the general operator).
    session_gap_ms: Option<i64>,
    /// A continuous event-time trigger firing every this many milliseconds, if any.
    continuous_ms: Option<i64>,
}

/// Runs the case, aggregating local-global or not: its rows, its late elements, and how many
/// records entered the window operator.
fn run(case: &Case, local_global: bool) -> (Vec<Row>, Vec<(i64, Ev)>, u64) {
    let rows = CollectSink::new();
    let late = CollectSink::new();
    let (rows_out, late_out) = (rows.clone(), late.clone());
    let mut config = JobConfig::threads("local-global", case.workers);
    config.source_batch_max = case.batch;
    let metrics = config.metrics.clone();
    let case_in = case.clone();
    execute(&config, move |env: &Env| {
        let [(first, first_bound), (second, second_bound)] = case_in.sources.clone();
        let merged = env
            .source(CollectionSource::new(first), WatermarkStrategy::bounded(first_bound))
            .union(env.source(CollectionSource::new(second), WatermarkStrategy::bounded(second_bound)));
        let keyed = merged.key_by(|(key, _): &Ev| *key);
        let windowed = match case_in.session_gap_ms {
            Some(gap_ms) => keyed.window(SessionWindows::with_gap(gap_ms, TimeDomain::EventTime).expect("valid gap")),
            None => keyed.window(
                SlidingWindows::new(case_in.size_ms, case_in.slide_ms, case_in.offset_ms, TimeDomain::EventTime)
                    .expect("valid windows"),
            ),
        };
        let mut windowed = windowed.allowed_lateness(case_in.lateness_ms);
        if case_in.general {
            windowed = windowed.trigger(EventTimeTrigger);
        }
        if let Some(interval_ms) = case_in.continuous_ms {
            windowed = windowed.trigger(ContinuousEventTimeTrigger::of(interval_ms));
        }
        let output = if local_global { windowed.aggregate_local_global(StatsOf) } else { windowed.aggregate(StatsOf) };
        output
            .results
            .map(|result: WindowResult<u8, Stats>| (result.key, result.window.start, result.window.end, result.value))
            .sink(rows_out.clone());
        output.late.map_with_time(|time_ms, event| (time_ms, event)).sink(late_out.clone());
    })
    .expect("job runs");
    let window_input = ["window sliding", "window session"]
        .iter()
        .map(|name| metrics.total(name, |counters| counters.records_in))
        .sum();
    (rows.sorted_values(), late.sorted_values(), window_input)
}

/// Each firing's key, window and number of elements.
fn firing_sizes(rows: &[Row]) -> Vec<(u8, i64, i64, u64)> {
    rows.iter().map(|&(key, start, end, (count, ..))| (key, start, end, count)).collect()
}

/// Each `(key, window)`'s last firing: the one with the most elements (a firing never has fewer
/// than the one before it).
fn last_firings(rows: &[Row]) -> BTreeMap<(u8, i64, i64), Stats> {
    let mut last = BTreeMap::new();
    for &(key, start, end, stats) in rows {
        let entry = last.entry((key, start, end)).or_insert(stats);
        if stats.0 > entry.0 {
            *entry = stats;
        }
    }
    last
}

fn source() -> impl Strategy<Value = (Vec<(i64, Ev)>, i64)> {
    // Few keys and dense times, so that batches hold several elements of a key and slice. Times,
    // bounds, window sizes and offsets are often multiples of 50 ms, so that stamps often land
    // exactly on a window's last millisecond, where an element stops being foldable.
    let time = prop_oneof![(0i64..60).prop_map(|step| step * 50), 0i64..3_000];
    (prop::collection::vec((time, (0u8..4, -100i64..100)), 0..300), (0i64..16).prop_map(|step| step * 50)).prop_map(
        |(mut records, bound)| {
            // Mostly in order, as a bounded source is, with its own disorder on top.
            records.sort_by_key(|(time, _)| *time / 200);
            (records, bound)
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        [source(), source()],
        prop_oneof![Just((500i64, 500i64)), Just((600, 200)), Just((1_000, 300)), Just((200, 500))],
        prop_oneof![(0i64..6).prop_map(|step| step * 50), 0i64..300],
        prop_oneof![Just(0i64), 1i64..700],
        1usize..=3,
        1usize..64,
    )
        .prop_map(|(sources, (size_ms, slide_ms), offset_ms, lateness_ms, workers, batch)| Case {
            sources,
            size_ms,
            slide_ms,
            offset_ms: offset_ms % slide_ms,
            lateness_ms,
            workers,
            batch,
            general: false,
            session_gap_ms: None,
            continuous_ms: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn local_global_aggregation_gives_the_results_of_aggregate(case in case()) {
        let (rows, late, elements) = run(&case, false);
        let (folded_rows, folded_late, partials) = run(&case, true);
        prop_assert_eq!(&folded_late, &late, "late elements differ");
        if case.lateness_ms == 0 {
            prop_assert_eq!(&folded_rows, &rows, "results differ");
        } else {
            prop_assert_eq!(firing_sizes(&folded_rows), firing_sizes(&rows), "firings differ");
            prop_assert_eq!(last_firings(&folded_rows), last_firings(&rows), "last firings differ");
        }
        // Folding never adds records, and the window operator saw every element before.
        prop_assert!(partials <= elements, "{partials} partials for {elements} elements");
        let total: usize = case.sources.iter().map(|(records, _)| records.len()).sum();
        prop_assert_eq!(elements, total as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Without folding too, on a stream that is not in source order, the workers and batches
    /// decide neither how many times a window fires nor what it ends with, in the sliced window
    /// operator or the general one.
    #[test]
    fn windows_fire_alike_on_any_workers_and_batches(
        case in case(),
        workers in 1usize..=3,
        batch in 1usize..64,
        general in any::<bool>(),
    ) {
        let case = Case { general, ..case };
        let (rows, late, _) = run(&case, false);
        let (other_rows, other_late, _) = run(&Case { workers, batch, ..case.clone() }, false);
        prop_assert_eq!(other_late, late, "late elements differ");
        prop_assert_eq!(firing_sizes(&other_rows), firing_sizes(&rows), "firings differ");
        prop_assert_eq!(last_firings(&other_rows), last_firings(&rows), "last firings differ");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Session windows on a stream that is not in source order, with or without allowed
    /// lateness: the workers and batches decide nothing, neither the sessions, nor each firing
    /// and what it holds, nor the late elements. Which sessions an element merges with depends on
    /// the elements before it, so the operator takes those whose order matters in the order of
    /// their stamps (and times and keys, where stamps are equal), whatever order they arrive in.
    #[test]
    fn sessions_are_alike_on_any_workers_and_batches(
        case in case(),
        gap_ms in prop_oneof![(1i64..8).prop_map(|step| step * 50), 1i64..400],
        continuous_ms in prop::option::of(prop_oneof![(1i64..4).prop_map(|step| step * 50), 1i64..200]),
        workers in 1usize..=3,
        batch in 1usize..64,
    ) {
        let mut case = Case { session_gap_ms: Some(gap_ms), continuous_ms, ..case };
        // Elements of a key with the same time and stamp go in in the order they arrive: one
        // element per key and time, so that no two of them can have both the same.
        let mut seen = std::collections::BTreeSet::new();
        for (records, _) in &mut case.sources {
            records.retain(|(time, (key, _))| seen.insert((*key, *time)));
        }
        let (rows, late, elements) = run(&case, false);
        let (other_rows, other_late, _) = run(&Case { workers, batch, ..case.clone() }, false);
        prop_assert_eq!(other_late, late, "late elements differ");
        prop_assert_eq!(other_rows, rows, "firings differ");
        let total: usize = case.sources.iter().map(|(records, _)| records.len()).sum();
        prop_assert_eq!(elements, total as u64);
    }
}

/// The local stage folds: on one worker with large batches, many elements of a key and slice
/// cross as one partial, and the results are still those of `aggregate`.
#[test]
fn a_hot_key_crosses_the_exchange_as_few_partials() {
    let hot: Vec<(i64, Ev)> = (0..2_000).map(|i| (i, (7, i % 13))).collect();
    let cold: Vec<(i64, Ev)> = (0..2_000).map(|i| (i, ((i % 4) as u8, 1))).collect();
    let case = Case {
        sources: [(hot, 100), (cold, 100)],
        size_ms: 1_000,
        slide_ms: 250,
        offset_ms: 0,
        lateness_ms: 0,
        workers: 2,
        batch: 512,
        general: false,
        session_gap_ms: None,
        continuous_ms: None,
    };
    let (rows, late, elements) = run(&case, false);
    let (folded_rows, folded_late, partials) = run(&case, true);
    assert_eq!((folded_rows, folded_late), (rows, late));
    assert_eq!(elements, 4_000);
    assert!(partials * 10 < elements, "{partials} partials for {elements} elements");
}
