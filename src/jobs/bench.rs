//! `flowlab bench window`: a windowed count + sum per key over generated events, on flowlab or
//! on a plain single-threaded loop that marks the limit.
//!
//! Both engines read the same seeded events from [`generate_events`] in memory (no parsing), use
//! the same watermark (`max time − disorder − 1`, each event judged by the watermark before it)
//! and the same lateness rule (an element is late when every window it belongs to has fired), and
//! fold their results into the same order-independent digest — so a report can say both how fast
//! flowlab is and that it computed the same thing as the loop.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::sim::CountSum;
use super::window::WindowSpec;
use crate::api::Env;
use crate::connectors::{Event, GeneratorConfig, GeneratorSource, Sink, SinkWriter, generate_events};
use crate::error::{Error, Result};
use crate::runtime::{JobConfig, execute};
use crate::time::{Record, WATERMARK_MIN, WatermarkStrategy};
use crate::window::{SessionWindows, SlidingWindows, TimeDomain, TumblingWindows, WindowResult};

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
    /// The windows (tumbling or sliding; the baseline has no sessions or count windows).
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
    /// Events per second.
    pub events_per_second: f64,
    /// Events per second per worker.
    pub events_per_second_per_core: f64,
    /// The process's peak resident memory so far (`VmHWM`), if the platform tells.
    pub peak_memory_bytes: Option<u64>,
}

/// Runs the benchmark on `engine`; `progress` is called with the events read so far (from the
/// flowlab source's metrics, or the loop), at most every 65 536 events.
pub fn bench_window(bench: &WindowBench, engine: Engine, progress: &(dyn Fn(u64) + Sync)) -> Result<BenchReport> {
    bench.input.validate()?;
    let started = Instant::now();
    let (results, late, digest, parallelism) = match engine {
        Engine::Flowlab => {
            let (results, late, digest) = run_flowlab(bench, progress)?;
            (results, late, digest, bench.parallelism.max(1))
        }
        Engine::Baseline => {
            let (results, late, digest) = run_baseline(&bench.window, &bench.input, progress)?;
            (results, late, digest, 1)
        }
    };
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let events_per_second = bench.input.events as f64 / seconds;
    Ok(BenchReport {
        engine,
        parallelism,
        events: bench.input.events,
        results,
        late,
        digest,
        seconds,
        events_per_second,
        events_per_second_per_core: events_per_second / parallelism as f64,
        peak_memory_bytes: peak_memory_bytes(),
    })
}

/// An order-independent digest: the wrapping sum of a hash of every result and late event.
#[derive(Clone, Default)]
struct Digest {
    results: Arc<AtomicU64>,
    late: Arc<AtomicU64>,
    sum: Arc<AtomicU64>,
}

fn hash_result(key: &str, start: i64, end: i64, count: u64, sum: i64) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + 32);
    bytes.extend_from_slice(key.as_bytes());
    for number in [start as u64, end as u64, count, sum as u64] {
        bytes.extend_from_slice(&number.to_le_bytes());
    }
    flowlab_sim::stable_hash(&bytes)
}

fn hash_late(key: &str, time_ms: i64, value: i64) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + 17);
    bytes.push(b'L');
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&time_ms.to_le_bytes());
    bytes.extend_from_slice(&value.to_le_bytes());
    flowlab_sim::stable_hash(&bytes)
}

impl Digest {
    fn totals(&self) -> (u64, u64, u64) {
        (self.results.load(Ordering::Relaxed), self.late.load(Ordering::Relaxed), self.sum.load(Ordering::Relaxed))
    }
}

/// A sink that only folds what it gets into the digest: the benchmark measures the engine.
struct DigestSink<D> {
    digest: Digest,
    hash: fn(&Record<D>) -> u64,
    counter: fn(&Digest) -> &AtomicU64,
}

impl<D> Clone for DigestSink<D> {
    fn clone(&self) -> Self {
        DigestSink { digest: self.digest.clone(), hash: self.hash, counter: self.counter }
    }
}

impl<D: 'static> Sink<D> for DigestSink<D> {
    fn name(&self) -> String {
        "digest".to_string()
    }

    fn open(&self, _instance: usize, _instances: usize) -> Result<Box<dyn crate::connectors::SinkWriter<D>>> {
        Ok(Box::new(self.clone()))
    }
}

impl<D> SinkWriter<D> for DigestSink<D> {
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
    let metrics = config.metrics.clone();
    let (input, window, sink_digest) = (bench.input.clone(), bench.window, digest.clone());
    // Building checks the window parameters once, before the workers start.
    window_assigner_check(&window)?;
    let result = std::thread::scope(|scope| {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        scope.spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                finished.recv_timeout(std::time::Duration::from_millis(100))
            {
                progress(metrics.total("source:", |m| m.records_out));
            }
        });
        let result = execute(&config, move |env: &Env<'_>| {
            let keyed = env
                .source(GeneratorSource::new(input.clone()), WatermarkStrategy::bounded(input.disorder_ms))
                .map(|event: Event| (event.key, event.value))
                .key_by(|(key, _): &(String, i64)| key.clone());
            let windowed = match window {
                WindowSpec::Tumbling { size_ms } => {
                    keyed.window(TumblingWindows::event_time(size_ms).expect("checked before the run"))
                }
                WindowSpec::Sliding { size_ms, slide_ms } => keyed.window(
                    SlidingWindows::new(size_ms, slide_ms, 0, TimeDomain::EventTime).expect("checked before the run"),
                ),
                WindowSpec::Session { gap_ms } => keyed
                    .window(SessionWindows::with_gap(gap_ms, TimeDomain::EventTime).expect("checked before the run")),
                WindowSpec::Count { .. } => unreachable!("refused above"),
            };
            let output = windowed.aggregate(CountSum);
            output.results.sink(DigestSink {
                digest: sink_digest.clone(),
                hash: |record: &Record<WindowResult<String, (u64, i64)>>| {
                    let result = &record.value;
                    hash_result(&result.key, result.window.start, result.window.end, result.value.0, result.value.1)
                },
                counter: |digest| &digest.results,
            });
            output.late.sink(DigestSink {
                digest: sink_digest.clone(),
                hash: |record: &Record<(String, i64)>| hash_late(&record.value.0, record.time_ms, record.value.1),
                counter: |digest| &digest.late,
            });
        });
        drop(done);
        result
    });
    result?;
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

/// The plain loop: per event, fire every window the watermark before it has closed (in end
/// order), then add the event to its open windows or count it late. Tumbling and sliding windows.
fn run_baseline(window: &WindowSpec, input: &GeneratorConfig, progress: &dyn Fn(u64)) -> Result<(u64, u64, u64)> {
    let (size_ms, slide_ms) = match *window {
        WindowSpec::Tumbling { size_ms } => (size_ms, size_ms),
        WindowSpec::Sliding { size_ms, slide_ms } => (size_ms, slide_ms),
        _ => return Err(Error::Usage("the baseline engine runs tumbling and sliding windows".to_string())),
    };
    window_assigner_check(window)?;
    // (window end, key) → (count, sum): firing takes the smallest ends first.
    let mut open: BTreeMap<(i64, String), (u64, i64)> = BTreeMap::new();
    let (mut results, mut late, mut digest) = (0u64, 0u64, 0u64);
    let mut max_time_ms: Option<i64> = None;
    for (index, (time_ms, event)) in generate_events(input).enumerate() {
        if index % 65_536 == 0 {
            progress(index as u64);
        }
        let watermark_ms = max_time_ms.map_or(WATERMARK_MIN, |max| max - input.disorder_ms - 1);
        max_time_ms = Some(max_time_ms.map_or(time_ms, |max| max.max(time_ms)));
        while let Some(entry) = open.first_entry() {
            if entry.key().0 - 1 > watermark_ms {
                break;
            }
            let ((end, key), (count, sum)) = entry.remove_entry();
            digest = digest.wrapping_add(hash_result(&key, end - size_ms, end, count, sum));
            results += 1;
        }
        // The windows of `time_ms`: starts from the last one at or before it, back by the slide.
        let last_start = time_ms - time_ms.rem_euclid(slide_ms);
        let mut on_time = false;
        let mut start = last_start;
        while start > time_ms - size_ms {
            let end = start + size_ms;
            if end - 1 > watermark_ms {
                on_time = true;
                match open.entry((end, event.key.clone())) {
                    Entry::Occupied(mut entry) => {
                        let (count, sum) = entry.get_mut();
                        *count += 1;
                        *sum += event.value;
                    }
                    Entry::Vacant(entry) => {
                        entry.insert((1, event.value));
                    }
                }
            }
            start -= slide_ms;
        }
        if !on_time {
            late += 1;
            digest = digest.wrapping_add(hash_late(&event.key, time_ms, event.value));
        }
    }
    for ((end, key), (count, sum)) in open {
        digest = digest.wrapping_add(hash_result(&key, end - size_ms, end, count, sum));
        results += 1;
    }
    progress(input.events);
    Ok((results, late, digest))
}

/// `VmHWM` of this process, in bytes (Linux), else `None`.
fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
