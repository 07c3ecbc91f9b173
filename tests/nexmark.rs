//! Nexmark: the generator keeps the reference model's promises, and every query's rows equal a
//! brute-force computation written here from the query's SQL — no window operator, no slicing,
//! no shared code with `flowlab::nexmark::queries` or its loops: for each window, scan every
//! event. Lateness follows the reference DDL (watermark = largest event time of the event's source
//! split so far − 4 s; an event is out of a window whose last millisecond is not after it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use flowlab::api::Env;
use flowlab::connectors::{CollectSink, ReadStatus, Source, SourceReader};
use flowlab::jobs::bench::{Engine, NexmarkBench, bench_nexmark};
use flowlab::nexmark::queries::{self, BidderCount, HighestBid, HotItem, NewUser, Query};
use flowlab::nexmark::{Bid, Event, NexmarkConfig, NexmarkSource, nexmark_watermarks};
use flowlab::runtime::{JobConfig, execute};
use flowlab::time::Clock;
use proptest::prelude::*;

const SIZE_MS: i64 = 10_000;
const SLIDE_MS: i64 = 2_000;
const BOUND_MS: i64 = 4_000;

/// Every event with its index, event time and the watermark of its split before it.
struct Arrived {
    time_ms: i64,
    stamp_ms: i64,
    event: Event,
}

fn arrivals(config: &NexmarkConfig, splits: usize) -> Vec<Arrived> {
    let mut max_by_split: Vec<Option<i64>> = vec![None; splits];
    (0..config.events)
        .map(|number| {
            let (time_ms, event) = config.event(number);
            let split = number as usize % splits;
            let stamp_ms = max_by_split[split].map_or(i64::MIN, |max| max - BOUND_MS);
            max_by_split[split] = Some(max_by_split[split].map_or(time_ms, |max| max.max(time_ms)));
            Arrived { time_ms, stamp_ms, event }
        })
        .collect()
}

/// Whether window `[start, start + size)` takes the event.
fn takes(start_ms: i64, size_ms: i64, arrived: &Arrived) -> bool {
    (start_ms..start_ms + size_ms).contains(&arrived.time_ms) && start_ms + size_ms - 1 > arrived.stamp_ms
}

/// The window starts (every `slide`) that contain any of `times`.
fn window_starts(times: impl Iterator<Item = i64>, size_ms: i64, slide_ms: i64) -> BTreeSet<i64> {
    let mut starts = BTreeSet::new();
    for time_ms in times {
        let mut start = time_ms.div_euclid(slide_ms) * slide_ms;
        while start > time_ms - size_ms {
            starts.insert(start);
            start -= slide_ms;
        }
    }
    starts
}

fn bids(all: &[Arrived]) -> impl Iterator<Item = (&Arrived, &Bid)> {
    all.iter().filter_map(|arrived| match &arrived.event {
        Event::Bid(bid) => Some((arrived, bid)),
        _ => None,
    })
}

fn model_q5(all: &[Arrived]) -> (Vec<HotItem>, usize) {
    let mut rows = Vec::new();
    for start in window_starts(bids(all).map(|(a, _)| a.time_ms), SIZE_MS, SLIDE_MS) {
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        for (arrived, bid) in bids(all) {
            if takes(start, SIZE_MS, arrived) {
                *counts.entry(bid.auction).or_default() += 1;
            }
        }
        let Some(&max) = counts.values().max() else { continue };
        for (auction, count) in counts {
            if count == max {
                rows.push(HotItem { auction, count, start_ms: start, end_ms: start + SIZE_MS });
            }
        }
    }
    let late = bids(all)
        .filter(|(arrived, _)| {
            window_starts([arrived.time_ms].into_iter(), SIZE_MS, SLIDE_MS)
                .into_iter()
                .all(|start| !takes(start, SIZE_MS, arrived))
        })
        .count();
    rows.sort();
    (rows, late)
}

fn model_q7(all: &[Arrived]) -> (Vec<HighestBid>, usize) {
    let mut rows = Vec::new();
    for start in window_starts(bids(all).map(|(a, _)| a.time_ms), SIZE_MS, SIZE_MS) {
        let taken: Vec<&Bid> = bids(all).filter(|(a, _)| takes(start, SIZE_MS, a)).map(|(_, bid)| bid).collect();
        let Some(max) = taken.iter().map(|bid| bid.price).max() else { continue };
        for bid in taken.into_iter().filter(|bid| bid.price == max) {
            rows.push(HighestBid {
                auction: bid.auction,
                price: bid.price,
                bidder: bid.bidder,
                date_time_ms: bid.date_time_ms,
                window_end_ms: start + SIZE_MS,
            });
        }
    }
    let late = bids(all).filter(|(a, _)| !takes(a.time_ms.div_euclid(SIZE_MS) * SIZE_MS, SIZE_MS, a)).count();
    rows.sort();
    (rows, late)
}

fn model_q8(all: &[Arrived]) -> (Vec<NewUser>, usize) {
    let mut rows = BTreeSet::new();
    for person in all.iter().filter(|a| matches!(a.event, Event::Person(_))) {
        let Event::Person(p) = &person.event else { unreachable!() };
        let start = person.time_ms.div_euclid(SIZE_MS) * SIZE_MS;
        if !takes(start, SIZE_MS, person) {
            continue;
        }
        let sold = all.iter().any(|a| match &a.event {
            Event::Auction(auction) => auction.seller == p.id && takes(start, SIZE_MS, a),
            _ => false,
        });
        if sold {
            rows.insert(NewUser { id: p.id, name: p.name.clone(), start_ms: start });
        }
    }
    let late = all
        .iter()
        .filter(|a| !matches!(a.event, Event::Bid(_)))
        .filter(|a| !takes(a.time_ms.div_euclid(SIZE_MS) * SIZE_MS, SIZE_MS, a))
        .count();
    (rows.into_iter().collect(), late)
}

/// Sessions without late events: each bidder's bids by time; a bid more than a gap after the
/// session's last bid (`t > last + gap`: windows `[t, t + gap)` touching ends included) starts
/// a new session `[first, last + gap)`.
fn model_q11(all: &[Arrived]) -> Vec<BidderCount> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for (arrived, bid) in bids(all) {
        times.entry(bid.bidder).or_default().push(arrived.time_ms);
    }
    let mut rows = Vec::new();
    for (bidder, mut times) in times {
        times.sort();
        let mut session: Option<(i64, i64, u64)> = None;
        for time_ms in times {
            session = match session {
                Some((first, last, count)) if time_ms <= last + SIZE_MS => Some((first, time_ms, count + 1)),
                Some((first, last, count)) => {
                    rows.push(BidderCount { bidder, count, start_ms: first, end_ms: last + SIZE_MS });
                    Some((time_ms, time_ms, 1))
                }
                None => Some((time_ms, time_ms, 1)),
            };
        }
        if let Some((first, last, count)) = session {
            rows.push(BidderCount { bidder, count, start_ms: first, end_ms: last + SIZE_MS });
        }
    }
    rows.sort();
    rows
}

/// Runs `query` on flowlab: its rows sorted, and its late events.
fn run<R: flowlab::api::Data + Ord>(
    config: &NexmarkConfig,
    parallelism: usize,
    query: impl Fn(flowlab::api::Stream<'_, Event>) -> queries::QueryOutput<'_, R> + Send + Sync + 'static,
) -> (Vec<R>, usize) {
    let (rows, late) = (CollectSink::new(), CollectSink::new());
    let (rows_sink, late_sink, config) = (rows.clone(), late.clone(), config.clone());
    execute(&JobConfig::threads("nexmark-test", parallelism), move |env: &Env| {
        let output = query(env.source(NexmarkSource::new(config.clone()), nexmark_watermarks()));
        output.results.sink(rows_sink.clone());
        output.late.sink(late_sink.clone());
    })
    .expect("the query runs");
    (rows.sorted_values(), late.records().len())
}

fn input(events: u64, rate: u64, seed: u64, group: u64, delayed: f64, delay_ms_max: i64) -> NexmarkConfig {
    NexmarkConfig {
        events,
        rate_per_second: rate,
        seed,
        out_of_order_group_size: group,
        delayed_fraction: delayed,
        delay_ms_max,
        ..NexmarkConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// q5, q7 and q8 equal the brute force, late events included, for 1–3 workers (each a
    /// split with its own watermark), events permuted in groups and delayed beyond the bound.
    #[test]
    fn window_queries_equal_the_brute_force(
        seed in 0u64..1_000,
        events in 2_000u64..6_000,
        rate in 100u64..400,
        group in 1u64..20,
        delayed in prop_oneof![Just(0.0), 0.01f64..0.1],
        delay_ms_max in 1i64..20_000,
        parallelism in 1usize..=3,
    ) {
        let config = input(events, rate, seed, group, delayed, delay_ms_max);
        let all = arrivals(&config, parallelism);
        let (rows, late) = run(&config, parallelism, queries::q5);
        prop_assert_eq!((rows, late), model_q5(&all), "q5 {:?} on {}", config, parallelism);
        let (rows, late) = run(&config, parallelism, queries::q7);
        prop_assert_eq!((rows, late), model_q7(&all), "q7 {:?} on {}", config, parallelism);
        let (rows, late) = run(&config, parallelism, queries::q8);
        prop_assert_eq!((rows, late), model_q8(&all), "q8 {:?} on {}", config, parallelism);
    }

    /// q11 equals the brute-force sessions when no event is behind the watermark (events
    /// permuted in small groups, delays within the bound), for 1–3 workers.
    #[test]
    fn sessions_equal_the_brute_force(
        seed in 0u64..1_000,
        events in 2_000u64..6_000,
        rate in 20u64..400,
        group in 1u64..8,
        delayed in prop_oneof![Just(0.0), 0.01f64..0.2],
        parallelism in 1usize..=3,
    ) {
        let config = input(events, rate, seed, group, delayed, 3_000);
        let all = arrivals(&config, parallelism);
        prop_assume!(all.iter().all(|a| a.time_ms > a.stamp_ms));
        let (rows, late) = run(&config, parallelism, queries::q11);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(rows, model_q11(&all), "q11 {:?} on {}", config, parallelism);
    }
}

#[test]
fn q0_passes_every_bid_through_in_split_order() {
    let config = input(3_000, 1_000, 4, 1, 0.0, 0);
    let expected: Vec<Bid> = config.events().filter_map(|(_, event)| event.into_bid()).collect();
    let out = CollectSink::new();
    let sink = out.clone();
    let source_config = config.clone();
    execute(&JobConfig::threads("q0", 1), move |env: &Env| {
        queries::q0(env.source(NexmarkSource::new(source_config.clone()), nexmark_watermarks())).sink(sink.clone());
    })
    .unwrap();
    let got: Vec<Bid> = out.records().into_iter().map(|record| record.value).collect();
    assert_eq!(got, expected);
}

#[test]
fn the_queries_find_rows_and_the_checks_are_not_vacuous() {
    // A run of the property's shape has rows of every kind, late events and ties: the
    // comparisons above compare something.
    let config = input(6_000, 200, 1, 5, 0.05, 20_000);
    let all = arrivals(&config, 2);
    let (hot, late5) = model_q5(&all);
    let (highest, late7) = model_q7(&all);
    let (users, _) = model_q8(&all);
    let shape = (hot.len(), late5, highest.len(), late7, users.len());
    assert!(shape.0 > 10 && shape.1 > 0 && shape.2 > 2 && shape.3 > 0 && shape.4 > 0, "{shape:?}");
    let windows: BTreeSet<i64> = hot.iter().map(|row| row.start_ms).collect();
    assert!(hot.len() > windows.len(), "some window has tied hot items");
    let sessions = model_q11(&arrivals(&input(6_000, 50, 1, 1, 0.0, 0), 1));
    assert!(sessions.iter().any(|row| row.count > 1) && sessions.len() > 100);
}

/// Processing time driven by the input: the clock reads `base + index · step` when the source
/// reads event `index`, and with one record per batch and one batch in flight, the window
/// operator sees each record at that time.
#[derive(Clone)]
struct InputClock(Arc<AtomicI64>);

impl Clock for InputClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const CLOCK_BASE_MS: i64 = 1_700_000_000_000;
const CLOCK_STEP_MS: i64 = 137;

#[derive(Clone)]
struct ClockedSource {
    inner: NexmarkSource,
    clock: InputClock,
}

struct ClockedReader {
    inner: Box<dyn SourceReader<Event>>,
    clock: InputClock,
}

impl Source<Event> for ClockedSource {
    fn name(&self) -> String {
        "clocked nexmark".to_string()
    }

    fn open(&self, instance: usize, instances: usize) -> flowlab::Result<Box<dyn SourceReader<Event>>> {
        Ok(Box::new(ClockedReader { inner: self.inner.open(instance, instances)?, clock: self.clock.clone() }))
    }
}

impl SourceReader<Event> for ClockedReader {
    fn read(&mut self, out: &mut Vec<(i64, Event)>, max_records: usize) -> flowlab::Result<ReadStatus> {
        assert_eq!(max_records, 1, "one record per batch keeps the clock in step");
        self.clock.0.store(CLOCK_BASE_MS + self.inner.offset() as i64 * CLOCK_STEP_MS, Ordering::SeqCst);
        self.inner.read(out, max_records)
    }

    fn offset(&self) -> u64 {
        self.inner.offset()
    }
}

#[test]
fn q12_counts_bids_per_bidder_in_windows_of_processing_time() {
    let config = input(4_000, 1_000, 9, 1, 0.0, 0);
    let clock = InputClock(Arc::new(AtomicI64::new(CLOCK_BASE_MS)));
    let mut job = JobConfig::threads("q12", 1);
    job.clock = Arc::new(clock.clone());
    job.source_batch_max = 1;
    job.in_flight_batches_max = Some(1);
    let out = CollectSink::new();
    let (sink, source) = (out.clone(), ClockedSource { inner: NexmarkSource::new(config.clone()), clock });
    execute(&job, move |env: &Env| {
        queries::q12(env.source(source.clone(), nexmark_watermarks())).sink(sink.clone());
    })
    .unwrap();
    // The model: event `i` at processing time base + i·step; a window fires once the clock has
    // reached its last millisecond, which the last event's time decides; later ones are dropped.
    let last_ms = CLOCK_BASE_MS + (config.events as i64 - 1) * CLOCK_STEP_MS;
    let mut counts: BTreeMap<(i64, u64), u64> = BTreeMap::new();
    for (index, (_, event)) in config.events().enumerate() {
        if let Event::Bid(bid) = event {
            let now_ms = CLOCK_BASE_MS + index as i64 * CLOCK_STEP_MS;
            *counts.entry((now_ms.div_euclid(SIZE_MS) * SIZE_MS, bid.bidder)).or_default() += 1;
        }
    }
    let mut expected: Vec<BidderCount> = counts
        .into_iter()
        .filter(|((start, _), _)| start + SIZE_MS - 1 <= last_ms)
        .map(|((start_ms, bidder), count)| BidderCount { bidder, count, start_ms, end_ms: start_ms + SIZE_MS })
        .collect();
    expected.sort();
    assert!(expected.len() > 100);
    assert_eq!(out.sorted_values(), expected);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// The reference model: 1 person, 3 auctions, 46 bids in every 50 event ids; ids count up
    /// from 1000 in order; bids go to auctions in flight (or up to 10 not yet open) and to
    /// active people; out-of-order groups only permute event times within a group; delays stay
    /// within their bound; the same configuration makes the same events.
    #[test]
    fn the_generator_keeps_the_reference_model(
        seed in 0u64..10_000,
        group in 1u64..30,
        delayed in prop_oneof![Just(0.0), 0.0f64..0.5],
        delay_ms_max in 1i64..20_000,
    ) {
        let config = input(5_000, 10_000, seed, group, delayed, delay_ms_max);
        let events: Vec<(i64, Event)> = config.events().collect();
        prop_assert_eq!(&events, &config.events().collect::<Vec<_>>());
        let mut ids = Vec::new();
        let (mut people, mut auctions) = (0u64, 0u64);
        for number in 0..config.events {
            let id = config.event_id(number);
            ids.push(id);
            let (time_ms, event) = &events[number as usize];
            let on_time_ms = config.timestamp_ms(id);
            prop_assert!(*time_ms <= on_time_ms && *time_ms >= on_time_ms - delay_ms_max, "{} at {}", number, time_ms);
            prop_assert_eq!(*time_ms, event.date_time_ms());
            match (id % 50, event) {
                (0, Event::Person(person)) => {
                    prop_assert_eq!(person.id, 1000 + id / 50);
                    people = people.max(person.id + 1 - 1000);
                }
                (1..=3, Event::Auction(auction)) => {
                    prop_assert_eq!(auction.id, 1000 + id / 50 * 3 + id % 50 - 1);
                    prop_assert!(auction.reserve > auction.initial_bid && auction.expires_ms > *time_ms);
                    prop_assert!((10..15).contains(&auction.category));
                    prop_assert!(auction.seller < 1000 + id / 50 + 1 + 10);
                    auctions = auctions.max(auction.id + 1 - 1000);
                }
                (4..=49, Event::Bid(bid)) => {
                    let newest_auction = id / 50 * 3 + 2;
                    prop_assert!(bid.auction >= 1000 + newest_auction.saturating_sub(100));
                    prop_assert!(bid.auction <= 1000 + newest_auction + 10);
                    let newest_person = id / 50;
                    prop_assert!(bid.bidder >= 1000 + newest_person.saturating_sub(1000));
                    prop_assert!(bid.bidder <= 1000 + newest_person + 10 + 1);
                    prop_assert!((100..=100_000_000).contains(&bid.price));
                }
                (rem, event) => prop_assert!(false, "event id {} (rem {}) made {:?}", id, rem, event),
            }
        }
        // Groups permute: each group of ids is the group of numbers.
        let mut sorted = ids.clone();
        for chunk in sorted.chunks_mut(group as usize) {
            chunk.sort();
        }
        let numbers: Vec<u64> = (0..config.events).collect();
        let complete = (config.events / group * group) as usize;
        prop_assert_eq!(&sorted[..complete], &numbers[..complete]);
        prop_assert!(people > 0 && auctions > 0);
    }
}

#[test]
fn hot_auctions_and_bidders_come_at_the_reference_rates() {
    // With hot ratio 2, a bid is on the newest multiple-of-100 auction with probability
    // 1/2 + (1/2)·P(drawn anyway); with ratio 4 for bidders, 3/4 + ….
    let config = NexmarkConfig { events: 200_000, ..NexmarkConfig::default() };
    let (mut bids, mut hot_auction, mut hot_bidder) = (0u64, 0u64, 0u64);
    for (number, (_, event)) in config.events().enumerate() {
        if let Event::Bid(bid) = event {
            let id = config.event_id(number as u64);
            bids += 1;
            hot_auction += u64::from(bid.auction == 1000 + (id / 50 * 3 + 2) / 100 * 100);
            hot_bidder += u64::from(bid.bidder == 1000 + (id / 50) / 100 * 100 + 1);
        }
    }
    let (auction_share, bidder_share) = (hot_auction as f64 / bids as f64, hot_bidder as f64 / bids as f64);
    assert!((0.49..0.52).contains(&auction_share), "hot auction share {auction_share}");
    assert!((0.74..0.76).contains(&bidder_share), "hot bidder share {bidder_share}");
}

#[test]
fn source_instances_split_the_events_and_a_reopen_resumes() {
    let config = input(1_000, 1_000, 2, 3, 0.0, 0);
    let all: Vec<(i64, Event)> = config.events().collect();
    let source = NexmarkSource::new(config.clone());
    for instances in 1..=3 {
        let mut union = Vec::new();
        for instance in 0..instances {
            let mut reader = source.open(instance, instances).unwrap();
            let mut got = Vec::new();
            while reader.read(&mut got, 7).unwrap() == ReadStatus::More {}
            let expected: Vec<_> = all.iter().skip(instance).step_by(instances).cloned().collect();
            assert_eq!(got, expected);
            let mut resumed = source.reopen(instance, instances, 5).unwrap();
            let mut rest = Vec::new();
            while resumed.read(&mut rest, 100).unwrap() == ReadStatus::More {}
            assert_eq!(rest, expected[5..]);
            union.extend(got);
        }
        assert_eq!(union.len(), all.len());
    }
}

#[test]
fn the_bench_compares_flowlab_with_the_loop_on_every_event_time_query() {
    for query in [Query::Q0, Query::Q5, Query::Q7, Query::Q8, Query::Q11] {
        for parallelism in [1, 2] {
            let bench = NexmarkBench { query, input: input(30_000, 2_000, 3, 4, 0.02, 6_000), parallelism };
            let baseline = bench_nexmark(&bench, Engine::Baseline, &|_| {}).unwrap();
            let flowlab = bench_nexmark(&bench, Engine::Flowlab, &|_| {}).unwrap();
            assert!(baseline.results > 0, "{query:?}");
            assert_eq!(
                (flowlab.results, flowlab.late, flowlab.digest),
                (baseline.results, baseline.late, baseline.digest),
                "{query:?} on {parallelism}"
            );
        }
    }
}

#[test]
fn bad_generator_settings_are_refused_with_a_reason() {
    for (config, words) in [
        (NexmarkConfig { rate_per_second: 0, ..NexmarkConfig::default() }, "rate"),
        (NexmarkConfig { out_of_order_group_size: 0, ..NexmarkConfig::default() }, "group"),
        (NexmarkConfig { delayed_fraction: 1.5, ..NexmarkConfig::default() }, "fraction"),
        (NexmarkConfig { delayed_fraction: 0.1, delay_ms_max: 0, ..NexmarkConfig::default() }, "delay"),
    ] {
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(words), "{error}");
    }
    assert!(Query::parse("q6").unwrap_err().to_string().contains("q0, q5"));
}
