//! The marketing job: wiring, and the ways to run it — on threads, and under the simulator with
//! crashes, checked against the fault-free run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowlab_sim::SimReport;

use super::coupons::{Coupon, CouponEngine};
use super::events::{EventsConfig, UserEvent, generate};
use super::rules::{RejectedRule, RuleLine, RuleUpdate, rule_lines, validate};
use crate::api::Env;
use crate::checkpoint::{CheckpointConfig, CheckpointRecord, CheckpointStatus, MemoryStore, RestartStrategy};
use crate::connectors::{CollectionSource, TransactionalCollectSink, TransactionalFileSink, TwoPhaseCommitSink};
use crate::error::{Error, Result};
use crate::jobs::sim::{FaultBounds, Faults, fixed_config, swarm_config};
use crate::metrics::MetricsRegistry;
use crate::runtime::{JobConfig, JobReport, execute, execute_simulated};
use crate::time::{Record, WatermarkStrategy};

/// What the job reads: users' events and the rules file's lines, each with its event time.
#[derive(Clone, Debug)]
pub struct MarketingInput {
    /// `(event time, event)` in arrival order.
    pub events: Arc<Vec<(i64, UserEvent)>>,
    /// `(at, line)`: each rule update with the event time it takes effect at.
    pub rules: Arc<Vec<(i64, RuleLine)>>,
    /// The events' bounded out-of-orderness: their watermark is `max time − disorder − 1`.
    pub disorder_ms: i64,
}

impl MarketingInput {
    /// Generated events and the rules in `rules_text` (one JSON update per line).
    pub fn generated(config: &EventsConfig, rules_text: &str) -> Result<Self> {
        config.validate()?;
        Ok(MarketingInput {
            events: Arc::new(generate(config)),
            rules: Arc::new(rule_lines(rules_text)),
            disorder_ms: config.disorder_ms,
        })
    }

    /// Rule lines as the rules source emits them. Each line is preceded by a tick at its time,
    /// which moves the rules' watermark to `at − 1` first: the update is then stamped `at − 1`,
    /// and applies to every event stamped at or after it (see [`crate::api::broadcast`]).
    fn rule_records(&self) -> Vec<(i64, Option<RuleLine>)> {
        self.rules.iter().flat_map(|(at, line)| [(*at, None), (*at, Some(line.clone()))]).collect()
    }
}

/// Builds the job in `env`: events → split late → key by user → connect broadcast rules →
/// [`CouponEngine`] → coupons; rejected rule lines and late events to their own sinks. Every
/// output is exactly once.
pub fn build(
    env: &Env<'_>,
    input: &MarketingInput,
    coupons: impl TwoPhaseCommitSink<Coupon>,
    rejected: impl TwoPhaseCommitSink<RejectedRule>,
    late: impl TwoPhaseCommitSink<UserEvent>,
) {
    let events = env
        .source(CollectionSource::shared(Arc::clone(&input.events)), WatermarkStrategy::bounded(input.disorder_ms))
        .name("user events");
    let (on_time, late_events) = events.split_late();
    late_events.sink_exactly_once(late);
    let validated = env
        .source(CollectionSource::new(input.rule_records()), WatermarkStrategy::monotonous())
        .name("rule updates")
        .flat_map(|line: Option<RuleLine>| line)
        .map(|line: RuleLine| validate(&line));
    let accepted = validated.clone().flat_map(|update: std::result::Result<RuleUpdate, RejectedRule>| update.ok());
    validated
        .flat_map(|update: std::result::Result<RuleUpdate, RejectedRule>| update.err())
        .sink_exactly_once(rejected);
    on_time
        .key_by(|event: &UserEvent| event.user.clone())
        .connect(accepted.broadcast())
        .process(CouponEngine::new())
        .name("coupon rules")
        .sink_exactly_once(coupons);
}

/// What the job committed, sorted: comparable across runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketingOutput {
    /// Coupons, by (user, rule, trigger time).
    pub coupons: Vec<Coupon>,
    /// Refused rule lines, by line.
    pub rejected: Vec<RejectedRule>,
    /// Events too late to be judged, as `(event time, event)`.
    pub late: Vec<(i64, UserEvent)>,
}

impl MarketingOutput {
    /// A stable digest of the whole output.
    pub fn digest(&self) -> u64 {
        let bytes = bincode::serialize(&(&self.coupons, &self.rejected, &self.late)).expect("records encode");
        flowlab_sim::stable_hash(&bytes)
    }

    /// Coupons per rule id.
    pub fn coupons_per_rule(&self) -> BTreeMap<String, usize> {
        let mut per_rule = BTreeMap::new();
        for coupon in &self.coupons {
            *per_rule.entry(coupon.rule.clone()).or_insert(0) += 1;
        }
        per_rule
    }
}

/// The exactly-once in-memory sinks of one run; they outlive simulated crashes.
#[derive(Clone, Default)]
struct MemorySinks {
    coupons: TransactionalCollectSink<Coupon>,
    rejected: TransactionalCollectSink<RejectedRule>,
    late: TransactionalCollectSink<UserEvent>,
}

impl MemorySinks {
    fn job(&self, input: &MarketingInput) -> impl Fn(&Env<'_>) + Send + Sync + 'static {
        let (sinks, input) = (self.clone(), input.clone());
        move |env: &Env<'_>| build(env, &input, sinks.coupons.clone(), sinks.rejected.clone(), sinks.late.clone())
    }

    fn output(&self) -> MarketingOutput {
        let values = |records: Vec<Record<Coupon>>| records.into_iter().map(|record| record.value).collect::<Vec<_>>();
        let mut coupons = values(self.coupons.records());
        coupons.sort();
        let mut late: Vec<(i64, UserEvent)> =
            self.late.records().into_iter().map(|record| (record.time_ms, record.value)).collect();
        late.sort();
        MarketingOutput { coupons, rejected: self.rejected.sorted_values(), late }
    }

    fn retracted(&self) -> u64 {
        self.coupons.retracted() + self.rejected.retracted() + self.late.retracted()
    }
}

/// Runs the job on `workers` threads without faults or checkpoints: the reference output.
pub fn run_threads(input: &MarketingInput, workers: usize) -> Result<(MarketingOutput, JobReport)> {
    let sinks = MemorySinks::default();
    let report = execute(&JobConfig::threads("marketing", workers), sinks.job(input))?;
    Ok((sinks.output(), report))
}

/// The marketing job under the simulator, and how to check it.
#[derive(Clone, Debug)]
pub struct MarketingCheck {
    /// The input.
    pub input: MarketingInput,
    /// Workers.
    pub workers: usize,
    /// Which faults.
    pub faults: Faults,
    /// Their bounds; each seed draws its own rates within them.
    pub bounds: FaultBounds,
    /// Virtual time between checkpoints.
    pub checkpoint_interval_ms: i64,
    /// Records a source reads per activation: small, so that checkpoints and crashes fall
    /// between its batches.
    pub source_batch_max: usize,
    /// Keep every trace event (for the report's time line).
    pub keep_trace: bool,
    /// Swarm testing: each seed draws its fault rates within the bounds (`true`, the default),
    /// or every seed runs with the bounds themselves (what the demo does, to show crashes).
    pub swarm: bool,
    /// Where the run's operator metrics go (progress bars read them).
    pub metrics: MetricsRegistry,
}

impl MarketingCheck {
    /// The check of `input` on `workers` workers with every fault within the default bounds,
    /// checkpoints every 50 virtual ms and sources reading 16 records at a time.
    pub fn new(input: MarketingInput, workers: usize) -> Self {
        MarketingCheck {
            input,
            workers,
            faults: Faults::All,
            bounds: FaultBounds::default(),
            checkpoint_interval_ms: 50,
            source_batch_max: 16,
            keep_trace: false,
            swarm: true,
            metrics: MetricsRegistry::default(),
        }
    }

    /// Runs seed `seed`: crashes, delays and stalls as the seed draws them, checkpoints into a
    /// memory store that survives the crashes, restarts after each. Fails if a restore took back
    /// committed output (readers may have seen it: a sent coupon cannot be unsent).
    pub fn run(&self, seed: u64) -> Result<MarketingRun> {
        let sinks = MemorySinks::default();
        let mut checkpoint = CheckpointConfig::new(Arc::new(MemoryStore::default()));
        checkpoint.interval_ms = self.checkpoint_interval_ms;
        let mut config = JobConfig::simulated("marketing", self.workers, seed)
            .with_checkpoints(checkpoint, RestartStrategy::FixedDelay { attempts: u32::MAX, delay_ms: 10 });
        config.source_batch_max = self.source_batch_max;
        config.metrics = self.metrics.clone();
        let sim = if self.swarm {
            swarm_config(seed, self.workers, self.faults, &self.bounds, self.keep_trace)
        } else {
            fixed_config(seed, self.workers, self.faults, &self.bounds, self.keep_trace)
        };
        let report = execute_simulated(&config, sim, sinks.job(&self.input))?;
        let retracted = sinks.retracted();
        if retracted > 0 {
            return Err(Error::Runtime(format!("seed {seed}: a restore took back {retracted} committed records")));
        }
        Ok(MarketingRun {
            output: sinks.output(),
            coupons_by_epoch: sinks.coupons.records_by_epoch(),
            simulation: report.simulation.expect("a simulated run reports its simulation"),
            checkpoints: report.checkpoints,
            restarts: report.restarts,
        })
    }
}

/// One simulated run of the marketing job.
#[derive(Clone, Debug)]
pub struct MarketingRun {
    /// What it committed.
    pub output: MarketingOutput,
    /// Coupons committed with each checkpoint (epoch): when they became visible.
    pub coupons_by_epoch: BTreeMap<u64, usize>,
    /// The simulation: trace hash, steps, crashes.
    pub simulation: SimReport,
    /// Its checkpoints, over every incarnation.
    pub checkpoints: Vec<CheckpointRecord>,
    /// Restarts after crashes.
    pub restarts: u32,
}

impl MarketingRun {
    /// Checkpoints that completed.
    pub fn checkpoints_completed(&self) -> usize {
        self.checkpoints.iter().filter(|record| record.status == CheckpointStatus::Completed).count()
    }
}

/// The files `flowlab demo --real` writes in its output directory.
#[derive(Clone, Debug)]
pub struct RealFiles {
    /// Committed coupons, CSV `user,rule,coupon,trigger_ms`, in commit order.
    pub coupons: PathBuf,
    /// Refused rule lines: `line<TAB>reason`.
    pub rejected: PathBuf,
    /// Late events: `user,kind,category,item,price_cents,time_ms`.
    pub late: PathBuf,
}

impl RealFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        RealFiles {
            coupons: dir.join("coupons.csv"),
            rejected: dir.join("rejected-rules.txt"),
            late: dir.join("late-events.csv"),
        }
    }

    /// Reads back what the files hold, sorted as [`MarketingOutput`] is.
    pub fn read(&self) -> Result<MarketingOutput> {
        let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e));
        let bad = |path: &Path, line: &str| Error::Runtime(format!("{}: unexpected line {line:?}", path.display()));
        let mut output = MarketingOutput::default();
        for line in read(&self.coupons)?.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let [user, rule, coupon, trigger] = fields[..] else { return Err(bad(&self.coupons, line)) };
            let trigger_ms = trigger.parse().map_err(|_| bad(&self.coupons, line))?;
            output.coupons.push(Coupon { user: user.into(), rule: rule.into(), coupon: coupon.into(), trigger_ms });
        }
        for line in read(&self.rejected)?.lines() {
            let (number, reason) = line.split_once('\t').ok_or_else(|| bad(&self.rejected, line))?;
            let line_number = number.parse().map_err(|_| bad(&self.rejected, line))?;
            output.rejected.push(RejectedRule { line: line_number, reason: reason.to_string() });
        }
        let late_text = read(&self.late)?;
        let late = super::events::parse_csv(&late_text)
            .map_err(|why| Error::Runtime(format!("{}: {why}", self.late.display())))?;
        output.late = late;
        output.coupons.sort();
        output.rejected.sort();
        output.late.sort();
        Ok(output)
    }
}

/// Runs the job on threads with `config` (checkpoints included, if it has them), writing its
/// outputs exactly once to `files`; returns what the files then hold.
pub fn run_real(input: &MarketingInput, config: &JobConfig, files: &RealFiles) -> Result<(MarketingOutput, JobReport)> {
    let coupons = TransactionalFileSink::new(&files.coupons, |record: &Record<Coupon>| {
        let coupon = &record.value;
        format!("{},{},{},{}", coupon.user, coupon.rule, coupon.coupon, coupon.trigger_ms)
    });
    let rejected = TransactionalFileSink::new(&files.rejected, |record: &Record<RejectedRule>| {
        format!("{}\t{}", record.value.line, record.value.reason.replace(['\n', '\t'], " "))
    });
    let late = TransactionalFileSink::new(&files.late, |record: &Record<UserEvent>| {
        super::events::csv_line(record.time_ms, &record.value)
    });
    let input = input.clone();
    let report =
        execute(config, move |env: &Env<'_>| build(env, &input, coupons.clone(), rejected.clone(), late.clone()))?;
    Ok((files.read()?, report))
}
