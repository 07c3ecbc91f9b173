//! `flowlab bench window`: a windowed count + sum per key over generated events, on flowlab or
//! on a plain single-threaded loop that marks the limit.
//!
//! Both engines read the same seeded events from the generator in memory (no parsing, keys
//! inline), use the same watermark (`max time − disorder − 1`, each event judged by the watermark
//! before it) and the same lateness rule (an element is late when every window it belongs to has
//! fired), and fold their results into the same order-independent digest — so a report can say
//! both how fast flowlab is and that it computed the same thing as the loop. Tumbling, sliding and
//! session windows; the report gives wall time, CPU time (`getrusage`) and peak memory.
//!
//! `flowlab bench nexmark`: a Nexmark query ([`crate::nexmark`]) on flowlab or on its plain loop
//! ([`crate::nexmark::baseline`]), compared by the same kind of digest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::window::WindowSpec;
use crate::api::{CompactKey, Env};
use crate::connectors::{FromEventFields, GeneratorConfig, GeneratorSource, ReadStatus, Sink, SinkWriter, Source};
use crate::error::{Error, Result};
use crate::nexmark::queries::{self, BidderCount, HighestBid, HotItem, NewUser, Query};
use crate::nexmark::{self, Bid, Event as NexmarkEvent, NexmarkConfig, NexmarkSource, nexmark_watermarks};
use crate::runtime::{JobConfig, execute};
use crate::state::LookupHasher;
use crate::time::{Record, WATERMARK_MIN, WatermarkStrategy};
use crate::window::{AggregateFunction, SessionWindows, SlidingWindows, TimeDomain, TumblingWindows, WindowResult};

/// Which engine runs the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// flowlab, on threads.
    Flowlab,
    /// The plain loop: no dataflow, one thread.
    Baseline,
}

impl Engine {
    /// Parses `flowlab` or `baseline`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "flowlab" => Ok(Engine::Flowlab),
            "baseline" => Ok(Engine::Baseline),
            other => Err(Error::Usage(format!("unknown engine {other:?}: write flowlab or baseline"))),
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct WindowBench {
    /// The windows: tumbling, sliding or session (no count windows).
    pub window: WindowSpec,
    /// The generated events: keys, count, disorder, seed.
    pub input: GeneratorConfig,
    /// flowlab's workers.
    pub parallelism: usize,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Which engine.
    pub engine: Engine,
    /// Workers (1 for the baseline).
    pub parallelism: usize,
    /// Events read.
    pub events: u64,
    /// Window results emitted.
    pub results: u64,
    /// Events too late for every window.
    pub late: u64,
    /// An order-independent digest of the results and late events: equal digests, equal output.
    pub digest: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// CPU seconds (user + system, `getrusage`) of the whole process during the run: every
    /// worker's, and the loop's. On a busy machine the steadier measure.
    pub cpu_seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Events per second per worker.
    pub events_per_second_per_core: f64,
    /// Events per CPU second: what one fully used core gets through.
    pub events_per_cpu_second: f64,
    /// The process's peak resident memory so far (`VmHWM`), if the platform tells.
    pub peak_memory_bytes: Option<u64>,
}

/// Runs the benchmark on `engine`; `progress` is called with the events read so far (from the
/// flowlab source's metrics, or the loop), at most every 65 536 events.
pub fn bench_window(bench: &WindowBench, engine: Engine, progress: &(dyn Fn(u64) + Sync)) -> Result<BenchReport> {
    bench.input.validate()?;
    let parallelism = if engine == Engine::Flowlab { bench.parallelism.max(1) } else { 1 };
    measure(engine, bench.input.events, parallelism, || match engine {
        Engine::Flowlab => run_flowlab(bench, progress),
        Engine::Baseline => run_baseline(&bench.window, &bench.input, progress),
    })
}

/// Times `run`, which returns `(results, late, digest)`, and makes the report.
fn measure(
    engine: Engine,
    events: u64,
    parallelism: usize,
    run: impl FnOnce() -> Result<(u64, u64, u64)>,
) -> Result<BenchReport> {
    let started = Instant::now();
    let cpu_started = cpu_seconds();
    let (results, late, digest) = run()?;
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let cpu_seconds = (cpu_seconds() - cpu_started).max(1e-9);
    let events_per_second = events as f64 / seconds;
    Ok(BenchReport {
        engine,
        parallelism,
        events,
        results,
        late,
        digest,
        seconds,
        cpu_seconds,
        events_per_second,
        events_per_second_per_core: events_per_second / parallelism as f64,
        events_per_cpu_second: events as f64 / cpu_seconds,
        peak_memory_bytes: peak_memory_bytes(),
    })
}

/// Runs the job `build` on `config`, telling `progress` every 100 ms how many records the
/// sources have read.
fn execute_with_progress(
    config: &JobConfig,
    progress: &(dyn Fn(u64) + Sync),
    build: impl Fn(&Env<'_>) + Send + Sync + 'static,
) -> Result<()> {
    let metrics = config.metrics.clone();
    std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(std::time::Duration::from_millis(100))
            {
                progress(metrics.total("source:", |m| m.records_out));
            }
        });
        let result = execute(config, build);
        drop(done);
        result.map(|_| ())
    })
}

/// A generated event as both engines read it: the key inline, so that neither engine spends its
/// time allocating key strings, and the comparison is of windowing, not of `malloc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct BenchEvent {
    key: CompactKey,
    value: i64,
}

impl FromEventFields for BenchEvent {
    fn from_event_fields(key: &str, _time_ms: i64, value: i64, _line: u64) -> Self {
        BenchEvent { key: CompactKey::new(key), value }
    }
}

/// Count and sum of values.
struct BenchCountSum;

impl AggregateFunction<BenchEvent> for BenchCountSum {
    type Accumulator = (u64, i64);
    type Output = (u64, i64);

    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }

    fn add(&self, accumulator: &mut (u64, i64), event: &BenchEvent) {
        accumulator.0 += 1;
        accumulator.1 = accumulator.1.wrapping_add(event.value);
    }

    fn merge(&self, accumulator: &mut (u64, i64), other: (u64, i64)) {
        accumulator.0 += other.0;
        accumulator.1 = accumulator.1.wrapping_add(other.1);
    }

    fn result(&self, accumulator: &(u64, i64)) -> (u64, i64) {
        *accumulator
    }
}

/// An order-independent digest: the wrapping sum of a hash of every result and late event.
#[derive(Clone, Default)]
struct Digest {
    results: Arc<AtomicU64>,
    late: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
}

fn hash_result(key: &CompactKey, start: i64, end: i64, count: u64, sum: i64) -> u64 {
    digest_key(key, &[start as u64, end as u64, count, sum as u64])
}

fn hash_late(key: &CompactKey, time_ms: i64, value: i64) -> u64 {
    digest_key(key, &[u64::from(b'L'), time_ms as u64, value as u64])
}

/// [`digest_words`] of a key's bytes: an inline key's (up to 15 bytes, zero-padded) are read as
/// two whole words instead of byte by byte, which is the same value for a fifth of the cost.
fn digest_key(key: &CompactKey, numbers: &[u64]) -> u64 {
    let Some((low, high)) = key.inline_words() else {
        return digest_words(key.as_bytes(), numbers);
    };
    let words = [low, high];
    let len = key.len();
    digest_parts(len, words[..len.div_ceil(8)].iter().copied(), numbers)
}

/// A fixed hash of a key and some numbers. Both engines hash every result — tens of millions
/// with sliding windows — so it must cost little next to the windowing it checks. Each word is
/// mixed on its own by a 64 × 64 → 128-bit multiply folded to 64 bits, with constants that depend
/// on its position, so the multiplies run side by side instead of one waiting for the other (as a
/// chain they were a fifth of a sliding benchmark's time). The words' mixes are summed and the sum
/// goes through splitmix64's finaliser once, which keeps the sum of hashes over all results from
/// being linear in the fields: two different outputs cannot balance out by swapping fields.
fn digest_words(bytes: &[u8], numbers: &[u64]) -> u64 {
    // A short chunk's word is put together from its bytes in registers: copied into a zeroed
    // array and loaded back whole, it stalled on store forwarding once per result.
    let words = bytes.chunks(8).map(|chunk| chunk.iter().rev().fold(0u64, |word, &byte| (word << 8) | u64::from(byte)));
    digest_parts(bytes.len(), words, numbers)
}

/// [`digest_words`] of `len` bytes given as their little-endian 8-byte words (the last one
/// zero-padded).
#[inline(always)]
fn digest_parts(len: usize, words: impl Iterator<Item = u64>, numbers: &[u64]) -> u64 {
    const SEED: u64 = 0x0123_4567_89ab_cdef;
    const STEP: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |position: u64, word: u64| {
        let salt = SEED.wrapping_add(position.wrapping_mul(STEP));
        let product = u128::from(word ^ salt) * u128::from(salt | 1);
        (product as u64) ^ ((product >> 64) as u64)
    };
    let mut sum = mix(0, len as u64);
    for (position, word) in (1..).zip(words) {
        sum = sum.wrapping_add(mix(position, word));
    }
    // Numbers from a fixed position on: a key's length decides how many words it takes, and its
    // length word already tells keys of different lengths apart.
    for (index, &number) in numbers.iter().enumerate() {
        sum = sum.wrapping_add(mix(64 + index as u64, number));
    }
    let mut z = sum;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Digest {
    fn totals(&self) -> (u64, u64, u64) {
        (self.results.load(Ordering::Relaxed), self.late.load(Ordering::Relaxed), self.sum.load(Ordering::Relaxed))
    }
}

/// A sink that only folds what it gets into the digest: the benchmark measures the engine. The
/// hash is a type parameter, not a function pointer, so that it is inlined into the loop over a
/// batch as it is into the plain loop's: an indirect call per result would be a cost only flowlab
/// paid.
#[derive(Clone)]
struct DigestSink<H> {
    digest: Digest,
    hash: H,
    counter: fn(&Digest) -> &AtomicU64,
}

impl<D: 'static, H: Fn(&Record<D>) -> u64 + Clone + Send + Sync + 'static> Sink<D> for DigestSink<H> {
    fn name(&self) -> String {
        "digest".to_string()
    }

    fn open(&self, _instance: usize, _instances: usize) -> Result<Box<dyn crate::connectors::SinkWriter<D>>> {
        Ok(Box::new(self.clone()))
    }
}

impl<D, H: Fn(&Record<D>) -> u64> SinkWriter<D> for DigestSink<H> {
    fn write(&mut self, records: &[Record<D>]) -> Result<()> {
        let sum = records.iter().fold(0u64, |sum, record| sum.wrapping_add((self.hash)(record)));
        self.digest.sum.fetch_add(sum, Ordering::Relaxed);
        (self.counter)(&self.digest).fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

fn run_flowlab(bench: &WindowBench, progress: &(dyn Fn(u64) + Sync)) -> Result<(u64, u64, u64)> {
    if matches!(bench.window, WindowSpec::Count { .. }) {
        return Err(Error::Usage("bench window measures time windows: tumbling, sliding or session".to_string()));
    }
    let digest = Digest::default();
    let config = JobConfig::threads("bench-window", bench.parallelism.max(1));
    let (input, window, sink_digest) = (bench.input.clone(), bench.window, digest.clone());
    // Building checks the window parameters once, before the workers start.
    window_assigner_check(&window)?;
    execute_with_progress(&config, progress, move |env: &Env<'_>| {
        let keyed = env
            .source(
                GeneratorSource::<BenchEvent>::of_rows(input.clone()),
                WatermarkStrategy::bounded(input.disorder_ms),
            )
            .key_by(|event: &BenchEvent| event.key.clone());
        let windowed = match window {
            WindowSpec::Tumbling { size_ms } => {
                keyed.window(TumblingWindows::event_time(size_ms).expect("checked before the run"))
            }
            WindowSpec::Sliding { size_ms, slide_ms } => keyed.window(
                SlidingWindows::new(size_ms, slide_ms, 0, TimeDomain::EventTime).expect("checked before the run"),
            ),
            WindowSpec::Session { gap_ms } => {
                keyed.window(SessionWindows::with_gap(gap_ms, TimeDomain::EventTime).expect("checked before the run"))
            }
            WindowSpec::Count { .. } => unreachable!("refused above"),
        };
        let output = windowed.aggregate(BenchCountSum);
        output.results.sink(DigestSink {
            digest: sink_digest.clone(),
            hash: |record: &Record<WindowResult<CompactKey, (u64, i64)>>| {
                let result = &record.value;
                hash_result(&result.key, result.window.start, result.window.end, result.value.0, result.value.1)
            },
            counter: |digest| &digest.results,
        });
        output.late.sink(DigestSink {
            digest: sink_digest.clone(),
            hash: |record: &Record<BenchEvent>| hash_late(&record.value.key, record.time_ms, record.value.value),
            counter: |digest| &digest.late,
        });
    })?;
    Ok(digest.totals())
}

fn window_assigner_check(window: &WindowSpec) -> Result<()> {
    match *window {
        WindowSpec::Tumbling { size_ms } => TumblingWindows::event_time(size_ms).map(|_| ()),
        WindowSpec::Sliding { size_ms, slide_ms } => {
            SlidingWindows::new(size_ms, slide_ms, 0, TimeDomain::EventTime).map(|_| ())
        }
        WindowSpec::Session { gap_ms } => {
            SessionWindows::<(String, i64)>::with_gap(gap_ms, TimeDomain::EventTime).map(|_| ())
        }
        WindowSpec::Count { .. } => Ok(()),
    }
}

/// What the plain loop has emitted so far.
#[derive(Default)]
struct LoopOutput {
    results: u64,
    late: u64,
    digest: u64,
}

impl LoopOutput {
    fn result(&mut self, key: &CompactKey, start: i64, end: i64, (count, sum): (u64, i64)) {
        self.results += 1;
        self.digest = self.digest.wrapping_add(hash_result(key, start, end, count, sum));
    }

    fn late(&mut self, key: &CompactKey, time_ms: i64, value: i64) {
        self.late += 1;
        self.digest = self.digest.wrapping_add(hash_late(key, time_ms, value));
    }
}

/// The loop's per-key maps, with flowlab's own lookup hasher: the limit should not be set by a
/// slower hash. Their order never reaches the digest, a sum.
type LoopMap<V> = HashMap<CompactKey, V, BuildHasherDefault<LookupHasher>>;

/// Events per read of the loop's generator, and so per progress report.
const LOOP_BATCH: usize = 65_536;

/// Feeds the generated events to `on_event(time, watermark before it, event)`, in order, with the
/// watermark of a bounded-out-of-orderness source: `max time − disorder − 1`.
fn for_each_event(
    input: &GeneratorConfig,
    progress: &dyn Fn(u64),
    mut on_event: impl FnMut(i64, i64, BenchEvent),
) -> Result<()> {
    let mut reader = GeneratorSource::<BenchEvent>::of_rows(input.clone()).open(0, 1)?;
    let mut batch = Vec::with_capacity(LOOP_BATCH);
    let mut max_time_ms: Option<i64> = None;
    loop {
        batch.clear();
        let status = reader.read(&mut batch, LOOP_BATCH)?;
        for (time_ms, event) in batch.drain(..) {
            let watermark_ms = max_time_ms.map_or(WATERMARK_MIN, |max| max - input.disorder_ms - 1);
            max_time_ms = Some(max_time_ms.map_or(time_ms, |max| max.max(time_ms)));
            on_event(time_ms, watermark_ms, event);
        }
        progress(reader.offset());
        if status == ReadStatus::Finished {
            return Ok(());
        }
    }
}

/// The plain loop: per event, fire every window the watermark before it has closed, then add the
/// event to its open windows or count it late.
fn run_baseline(window: &WindowSpec, input: &GeneratorConfig, progress: &dyn Fn(u64)) -> Result<(u64, u64, u64)> {
    window_assigner_check(window)?;
    let output = match *window {
        WindowSpec::Tumbling { size_ms } => baseline_sliding(size_ms, size_ms, input, progress)?,
        WindowSpec::Sliding { size_ms, slide_ms } => baseline_sliding(size_ms, slide_ms, input, progress)?,
        WindowSpec::Session { gap_ms } => baseline_sessions(gap_ms, input, progress)?,
        WindowSpec::Count { .. } => {
            return Err(Error::Usage("the baseline engine runs tumbling, sliding and session windows".to_string()));
        }
    };
    Ok((output.results, output.late, output.digest))
}

/// Tumbling and sliding windows: window end → key → (count, sum); firing takes the smallest
/// ends first.
fn baseline_sliding(
    size_ms: i64,
    slide_ms: i64,
    input: &GeneratorConfig,
    progress: &dyn Fn(u64),
) -> Result<LoopOutput> {
    let mut open: BTreeMap<i64, LoopMap<(u64, i64)>> = BTreeMap::new();
    let mut output = LoopOutput::default();
    for_each_event(input, progress, |time_ms, watermark_ms, event| {
        while let Some(entry) = open.first_entry() {
            if entry.key() - 1 > watermark_ms {
                break;
            }
            let (end, keys) = entry.remove_entry();
            for (key, aggregate) in &keys {
                output.result(key, end - size_ms, end, *aggregate);
            }
        }
        // The windows of `time_ms`: starts from the last one at or before it, back by the slide.
        let mut start = time_ms - time_ms.rem_euclid(slide_ms);
        let mut on_time = false;
        while start > time_ms - size_ms {
            let end = start + size_ms;
            if end - 1 > watermark_ms {
                on_time = true;
                let aggregate = open.entry(end).or_default().entry(event.key.clone()).or_insert((0, 0));
                aggregate.0 += 1;
                aggregate.1 = aggregate.1.wrapping_add(event.value);
            }
            start -= slide_ms;
        }
        if !on_time {
            output.late(&event.key, time_ms, event.value);
        }
    })?;
    for (end, keys) in open {
        for (key, aggregate) in &keys {
            output.result(key, end - size_ms, end, *aggregate);
        }
    }
    Ok(output)
}

/// Session windows: each key's open sessions `[start, end)` (an element opens `[t, t + gap)` and
/// merges every session it touches, ends included, as Flink's `TimeWindow.intersects`), fired
/// when the watermark reaches `end − 1`; an element whose own session would already be past is
/// late. A heap of `(end, key, start)` finds what to fire; entries of merged sessions go stale.
fn baseline_sessions(gap_ms: i64, input: &GeneratorConfig, progress: &dyn Fn(u64)) -> Result<LoopOutput> {
    type Session = (i64, i64, (u64, i64));
    let mut sessions: LoopMap<Vec<Session>> = HashMap::default();
    let mut due: BinaryHeap<Reverse<(i64, CompactKey, i64)>> = BinaryHeap::new();
    let mut output = LoopOutput::default();
    for_each_event(input, progress, |time_ms, watermark_ms, event| {
        while let Some(Reverse((end, _, _))) = due.peek() {
            if end - 1 > watermark_ms {
                break;
            }
            let Reverse((end, key, start)) = due.pop().expect("peeked");
            let Some(open) = sessions.get_mut(&key) else { continue };
            if let Some(index) = open.iter().position(|session| (session.0, session.1) == (start, end)) {
                let (start, end, aggregate) = open.swap_remove(index);
                output.result(&key, start, end, aggregate);
                if open.is_empty() {
                    sessions.remove(&key);
                }
            }
        }
        let (mut start, mut end) = (time_ms, time_ms + gap_ms);
        if end - 1 <= watermark_ms {
            output.late(&event.key, time_ms, event.value);
            return;
        }
        let open = sessions.entry(event.key.clone()).or_default();
        let mut aggregate = (1u64, event.value);
        open.retain(|&(other_start, other_end, other)| {
            let touches = start <= other_end && end >= other_start;
            if touches {
                (start, end) = (start.min(other_start), end.max(other_end));
                aggregate = (aggregate.0 + other.0, aggregate.1.wrapping_add(other.1));
            }
            !touches
        });
        open.push((start, end, aggregate));
        due.push(Reverse((end, event.key, start)));
    })?;
    for (key, open) in sessions {
        for (start, end, aggregate) in open {
            output.result(&key, start, end, aggregate);
        }
    }
    Ok(output)
}

/// What `flowlab bench nexmark` measures.
#[derive(Clone, Debug)]
pub struct NexmarkBench {
    /// The query.
    pub query: Query,
    /// The generated events.
    pub input: NexmarkConfig,
    /// flowlab's workers, and so source splits (the loop reads the same splits).
    pub parallelism: usize,
}

/// Runs a Nexmark query on `engine`; `progress` hears the events read so far.
///
/// Both engines generate the events as they go (as the reference's source does), so generation
/// is part of every number; q0 shows what it costs. q12 windows processing time, so its digest
/// is the clock's, not comparable between runs.
pub fn bench_nexmark(bench: &NexmarkBench, engine: Engine, progress: &(dyn Fn(u64) + Sync)) -> Result<BenchReport> {
    bench.input.validate()?;
    let parallelism = bench.parallelism.max(1);
    let engine_parallelism = if engine == Engine::Flowlab { parallelism } else { 1 };
    measure(engine, bench.input.events, engine_parallelism, || match engine {
        Engine::Flowlab => run_nexmark_flowlab(bench.query, &bench.input, parallelism, progress),
        Engine::Baseline => {
            let mut rows = DigestRows::default();
            nexmark::baseline::run(bench.query, &bench.input, parallelism, &mut rows, progress)?;
            Ok((rows.results, rows.late, rows.digest))
        }
    })
}

/// A row's share of the digest: a hash of every field (strings by their bytes).
trait RowDigest {
    fn row_digest(&self) -> u64;
}

impl RowDigest for Bid {
    fn row_digest(&self) -> u64 {
        digest_words(
            self.extra.as_bytes(),
            &[u64::from(b'B'), self.auction, self.bidder, self.price, self.date_time_ms as u64],
        )
    }
}

impl RowDigest for HotItem {
    fn row_digest(&self) -> u64 {
        digest_words(&[], &[u64::from(b'5'), self.auction, self.count, self.start_ms as u64, self.end_ms as u64])
    }
}

impl RowDigest for HighestBid {
    fn row_digest(&self) -> u64 {
        let words = [u64::from(b'7'), self.auction, self.price, self.bidder, self.date_time_ms as u64];
        digest_words(&[], &[&words[..], &[self.window_end_ms as u64]].concat())
    }
}

impl RowDigest for NewUser {
    fn row_digest(&self) -> u64 {
        digest_words(self.name.as_bytes(), &[u64::from(b'8'), self.id, self.start_ms as u64])
    }
}

impl RowDigest for BidderCount {
    fn row_digest(&self) -> u64 {
        digest_words(&[], &[u64::from(b'C'), self.bidder, self.count, self.start_ms as u64, self.end_ms as u64])
    }
}

impl RowDigest for NexmarkEvent {
    fn row_digest(&self) -> u64 {
        let (kind, id) = match self {
            NexmarkEvent::Person(person) => (b'P', person.id),
            NexmarkEvent::Auction(auction) => (b'A', auction.id ^ auction.seller.rotate_left(32)),
            NexmarkEvent::Bid(bid) => (b'B', bid.auction ^ bid.bidder.rotate_left(32) ^ bid.price.rotate_left(16)),
        };
        digest_words(&[], &[u64::from(b'L'), u64::from(kind), id, self.date_time_ms() as u64])
    }
}

/// The loop's rows, folded as the flowlab sinks fold theirs.
#[derive(Default)]
struct DigestRows {
    results: u64,
    late: u64,
    digest: u64,
}

impl DigestRows {
    fn result(&mut self, row: &impl RowDigest) {
        self.results += 1;
        self.digest = self.digest.wrapping_add(row.row_digest());
    }
}

impl nexmark::baseline::Rows for DigestRows {
    fn bid(&mut self, bid: &Bid) {
        self.result(bid);
    }

    fn hot_item(&mut self, row: &HotItem) {
        self.result(row);
    }

    fn highest_bid(&mut self, row: &HighestBid) {
        self.result(row);
    }

    fn new_user(&mut self, row: &NewUser) {
        self.result(row);
    }

    fn bidder_count(&mut self, row: &BidderCount) {
        self.result(row);
    }

    fn late(&mut self, event: &NexmarkEvent) {
        self.late += 1;
        self.digest = self.digest.wrapping_add(event.row_digest());
    }
}

fn digest_sink<R: RowDigest + 'static>(
    digest: &Digest,
) -> DigestSink<impl Fn(&Record<R>) -> u64 + Clone + Send + Sync + use<R>> {
    DigestSink {
        digest: digest.clone(),
        hash: |record: &Record<R>| record.value.row_digest(),
        counter: |digest| &digest.results,
    }
}

fn run_nexmark_flowlab(
    query: Query,
    input: &NexmarkConfig,
    parallelism: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(u64, u64, u64)> {
    let digest = Digest::default();
    let config = JobConfig::threads(&format!("nexmark-{}", query.name()), parallelism);
    let (input, sink_digest) = (input.clone(), digest.clone());
    execute_with_progress(&config, progress, move |env: &Env<'_>| {
        let events = env.source(NexmarkSource::new(input.clone()), nexmark_watermarks());
        let late = match query {
            Query::Q0 => {
                queries::q0(events).sink(digest_sink(&sink_digest));
                None
            }
            Query::Q5 => {
                let output = queries::q5(events);
                output.results.sink(digest_sink(&sink_digest));
                Some(output.late)
            }
            Query::Q7 => {
                let output = queries::q7(events);
                output.results.sink(digest_sink(&sink_digest));
                Some(output.late)
            }
            Query::Q8 => {
                let output = queries::q8(events);
                output.results.sink(digest_sink(&sink_digest));
                Some(output.late)
            }
            Query::Q11 => {
                let output = queries::q11(events);
                output.results.sink(digest_sink(&sink_digest));
                Some(output.late)
            }
            Query::Q12 => {
                queries::q12(events).sink(digest_sink(&sink_digest));
                None
            }
        };
        if let Some(late) = late {
            late.sink(DigestSink {
                digest: sink_digest.clone(),
                hash: |record: &Record<NexmarkEvent>| record.value.row_digest(),
                counter: |digest| &digest.late,
            });
        }
    })?;
    Ok(digest.totals())
}

/// CPU seconds (user + system) this process has used so far, if the platform tells.
fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes the `rusage` we hand it, which lives for the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `VmHWM` of this process, in bytes (Linux), else `None`.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Row = (String, i64, i64, u64, i64);

    fn row() -> impl Strategy<Value = Row> {
        ("[a-z0-9]{0,20}", -1_000i64..1_000, -1_000i64..1_000, 0u64..50, -1_000i64..1_000)
    }

    fn digest_of(rows: &[Row]) -> u64 {
        rows.iter().fold(0u64, |sum, (key, start, end, count, value)| {
            sum.wrapping_add(hash_result(&CompactKey::new(key), *start, *end, *count, *value))
        })
    }

    /// The field `field` (0 key … 4 sum) of `row`, replaced by the same field of `other`.
    fn with_field_of(row: &Row, other: &Row, field: usize) -> Row {
        let mut changed = row.clone();
        match field {
            0 => changed.0 = other.0.clone(),
            1 => changed.1 = other.1,
            2 => changed.2 = other.2,
            3 => changed.3 = other.3,
            _ => changed.4 = other.4,
        }
        changed
    }

    proptest! {
        /// Keys are digested word by word when inline and byte by byte otherwise: the same value.
        #[test]
        fn a_key_digests_as_its_bytes(key in "\\PC{0,20}", numbers in proptest::collection::vec(any::<u64>(), 0..5)) {
            prop_assert_eq!(digest_key(&CompactKey::new(&key), &numbers), digest_words(key.as_bytes(), &numbers));
        }

        /// The digest is what `bench` compares the two engines by, so it must see a change to any
        /// field of any row, and also two rows trading a field (which a hash linear in the fields
        /// would miss: the sum over both rows stays the same), and not see the order of rows.
        #[test]
        fn the_digest_sees_every_field_and_no_order(
            rows in proptest::collection::vec(row(), 2..40),
            other in row(),
            at in any::<proptest::sample::Index>(),
            field in 0usize..5,
        ) {
            let digest = digest_of(&rows);
            let mut reversed = rows.clone();
            reversed.reverse();
            prop_assert_eq!(digest_of(&reversed), digest);

            let index = at.index(rows.len());
            let changed_row = with_field_of(&rows[index], &other, field);
            if changed_row != rows[index] {
                let mut changed = rows.clone();
                changed[index] = changed_row;
                prop_assert_ne!(digest_of(&changed), digest, "row {} field {} changed", index, field);
            }

            let partner = (index + 1) % rows.len();
            let (traded_a, traded_b) =
                (with_field_of(&rows[index], &rows[partner], field), with_field_of(&rows[partner], &rows[index], field));
            let mut traded = rows.clone();
            traded[index] = traded_a;
            traded[partner] = traded_b;
            let mut sorted_traded = traded.clone();
            sorted_traded.sort();
            let mut sorted_rows = rows.clone();
            sorted_rows.sort();
            if sorted_traded != sorted_rows {
                prop_assert_ne!(digest_of(&traded), digest, "rows {} and {} traded field {}", index, partner, field);
            }
        }
    }
}
