//! The `flowlab watermarks` job: where did the watermark go, and which events fell behind it?
//!
//! ```text
//! source [watermark strategy] → split late ─┬─ on time → map (key, 1) → key_by → reduce (count per key) → trace watermarks
//!                                           └─ late → late side output (collected; optionally a CSV file)
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::api::Env;
use crate::connectors::{
    BadLinePolicy, CollectSink, CsvSink, CsvSource, Event, GeneratorConfig, GeneratorSource, Sink, SinkWriter,
    SocketSource,
};
use crate::error::Result;
use crate::runtime::{JobConfig, JobReport, execute};
use crate::time::{Record, WatermarkStrategy, WatermarkTrace};
use crate::viz::WatermarkPoint;

/// Where the events come from.
#[derive(Clone, Debug)]
pub enum Input {
    /// A CSV file of `key,event_time_ms,value` lines.
    Csv(PathBuf),
    /// A TCP server sending such lines.
    Socket(String),
    /// Generated events.
    Generated(GeneratorConfig),
}

/// Everything the `watermarks` job needs.
#[derive(Clone, Debug)]
pub struct WatermarksJob {
    /// Where the events come from.
    pub input: Input,
    /// How watermarks are assigned.
    pub strategy: WatermarkStrategy,
    /// What happens to lines that do not parse.
    pub bad_lines: BadLinePolicy,
    /// Where late events are written as CSV (besides being counted), if anywhere.
    pub late_output: Option<PathBuf>,
    /// Whether to keep every event's time and stamp, for the SVG picture.
    pub keep_points: bool,
}

/// What the job found.
#[derive(Debug)]
pub struct WatermarksOutcome {
    /// Graph and counters.
    pub report: JobReport,
    /// How each worker's watermark advanced.
    pub trace: WatermarkTrace,
    /// The late events, sorted by input position.
    pub late: Vec<Record<Event>>,
    /// Events per key that were on time, in key order.
    pub on_time_per_key: BTreeMap<String, u64>,
    /// Every event's time and stamp in input order (only with `keep_points`).
    pub points: Vec<WatermarkPoint>,
}

impl WatermarksOutcome {
    /// Events that were on time.
    pub fn on_time_total(&self) -> u64 {
        self.on_time_per_key.values().sum()
    }
}

/// Keeps the largest running count seen per key: the final count of a rolling reduce.
#[derive(Clone, Default)]
struct FinalCounts(Arc<Mutex<BTreeMap<String, u64>>>);

impl Sink<(String, u64)> for FinalCounts {
    fn name(&self) -> String {
        "count per key".to_string()
    }

    fn open(&self, _instance: usize, _instances: usize) -> Result<Box<dyn SinkWriter<(String, u64)>>> {
        Ok(Box::new(self.clone()))
    }
}

impl SinkWriter<(String, u64)> for FinalCounts {
    fn write(&mut self, records: &[Record<(String, u64)>]) -> Result<()> {
        let mut counts = self.0.lock().expect("counts poisoned");
        for record in records {
            let (key, count) = &record.value;
            let entry = counts.entry(key.clone()).or_default();
            *entry = (*entry).max(*count);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

struct Outputs {
    trace: WatermarkTrace,
    late: CollectSink<Event>,
    counts: FinalCounts,
    points: Option<CollectSink<Event>>,
}

impl Outputs {
    fn new(keep_points: bool) -> Self {
        Outputs {
            trace: WatermarkTrace::new(),
            late: CollectSink::new(),
            counts: FinalCounts::default(),
            points: keep_points.then(CollectSink::new),
        }
    }
}

fn build(env: &Env<'_>, job: &WatermarksJob, outputs: &Outputs) {
    let events = match &job.input {
        Input::Csv(path) => env.source(CsvSource::new(path).on_bad_line(job.bad_lines.clone()), job.strategy.clone()),
        Input::Socket(address) => env.source(SocketSource::new(address), job.strategy.clone()),
        Input::Generated(config) => env.source(GeneratorSource::new(config.clone()), job.strategy.clone()),
    };
    if let Some(points) = &outputs.points {
        events.clone().sink(points.clone());
    }
    let (on_time, late) = events.split_late();
    if let Some(path) = &job.late_output {
        late.clone().sink(CsvSink::new(path, None, Event::to_csv_line));
    }
    late.sink(outputs.late.clone());
    on_time
        .map(|event| (event.key, 1u64))
        .key_by(|(key, _)| key.clone())
        .reduce(|(key, a), (_, b)| (key.clone(), a + b))
        .name("count per key")
        .trace_watermarks(&outputs.trace)
        .sink(outputs.counts.clone());
}

/// The job's graph, without running it.
pub fn plan_watermarks(job: &WatermarksJob, parallelism: usize) -> crate::api::JobGraph {
    let outputs = Outputs::new(job.keep_points);
    crate::runtime::plan("watermarks", parallelism, |env| build(env, job, &outputs))
}

/// Runs the job.
pub fn run_watermarks(job: &WatermarksJob, config: &JobConfig) -> Result<WatermarksOutcome> {
    let outputs = Outputs::new(job.keep_points);
    let (shared_job, shared_outputs) = (job.clone(), Arc::new(outputs));
    let for_workers = Arc::clone(&shared_outputs);
    let report = execute(config, move |env| build(env, &shared_job, &for_workers))?;
    let mut late = shared_outputs.late.records();
    late.sort_by_key(|record| record.value.line);
    let on_time_per_key = shared_outputs.counts.0.lock().expect("counts poisoned").clone();
    let mut points: Vec<WatermarkPoint> = shared_outputs
        .points
        .as_ref()
        .map(|sink| {
            sink.records()
                .iter()
                .map(|record| WatermarkPoint {
                    position: record.value.line,
                    time_ms: record.time_ms,
                    watermark_ms: record.watermark_ms,
                    late: record.is_late(),
                })
                .collect()
        })
        .unwrap_or_default();
    points.sort_by_key(|point| point.position);
    Ok(WatermarksOutcome { report, trace: shared_outputs.trace.clone(), late, on_time_per_key, points })
}
