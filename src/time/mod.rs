//! Event time, watermarks and processing time.
//!
//! # A watermark is a timely frontier
//!
//! Flink's watermark `W` is a promise: "no more elements with timestamp `≤ W`" (a promise that late
//! elements break, which is why lateness exists). Timely's frontier is a promise too: "no more
//! messages at a timely time earlier than the frontier". flowlab makes the two one thing.
//!
//! Every message travels at a timely time [`Time`] = `Product<epoch, event>`. The epoch coordinate
//! belongs to checkpoints; the event coordinate is a watermark plus one. A source whose watermark is
//! `W` holds a capability at event coordinate `W + 1` and emits at it, so downstream operators see a
//! frontier whose least event coordinate is `min over sources (W_s + 1)`: their watermark is
//! [`frontier_watermark`], and Flink's "minimum over input channels" comes for free from progress
//! tracking.
//!
//! # Per-record semantics
//!
//! Timely may see a source's capability advance once per batch; results must not depend on that.
//! So every [`Record`] also carries, as data, the watermark its source had emitted *before* it —
//! exactly the watermark a Flink operator would have seen when the record arrived, with the
//! watermark emitted after every record (Flink's punctuated emission). Lateness is judged against
//! that stamp, never against the (batch-dependent) frontier, and a record's timely time is never
//! later than `stamp + 1`. Hence the invariant every window and timer relies on: once an operator's
//! frontier watermark reaches `W`, every record whose stamp is `< W` has already arrived.
//!
//! # Processing time
//!
//! Only a [`Clock`] reads time: [`SystemClock`] on threads and in cluster mode, [`ManualClock`] in
//! tests, the simulator's virtual clock in simulation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use timely::order::Product;
use timely::progress::frontier::AntichainRef;

use crate::error::Error;

pub(crate) mod source;

pub use source::SOURCE_BATCH_RECORDS;

/// Checkpoint epoch: the first coordinate of every timely time.
pub type Epoch = u64;

/// The timely timestamp of every flowlab message: `(epoch, watermark + 1)`, ordered as a product.
pub type Time = Product<Epoch, i64>;

/// The smallest watermark: nothing has been promised yet (Flink's `Long.MIN_VALUE`).
pub const WATERMARK_MIN: i64 = i64::MIN;
/// The final watermark, emitted at end of input: every pending time window fires.
pub const WATERMARK_MAX: i64 = i64::MAX;

/// One element of a stream: its event time, the watermark it is judged against, and its value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record<D> {
    /// Event time in milliseconds since the Unix epoch (may be negative).
    pub time_ms: i64,
    /// The watermark the record's source had emitted before this record. An operator decides
    /// whether the record is late by this stamp, so the answer never depends on batching.
    pub watermark_ms: i64,
    /// The payload.
    pub value: D,
}

impl<D> Record<D> {
    /// A record with event time `time_ms` judged against watermark `watermark_ms`.
    pub fn new(time_ms: i64, watermark_ms: i64, value: D) -> Self {
        Record { time_ms, watermark_ms, value }
    }

    /// Flink's definition of a late element for a process function: its timestamp is not after
    /// the watermark it arrived behind.
    pub fn is_late(&self) -> bool {
        self.time_ms <= self.watermark_ms
    }

    /// The same time and stamp with another value.
    pub fn with_value<E>(&self, value: E) -> Record<E> {
        Record { time_ms: self.time_ms, watermark_ms: self.watermark_ms, value }
    }
}

/// The timely event coordinate at which a source with watermark `watermark_ms` holds its capability.
pub fn event_coordinate(watermark_ms: i64) -> i64 {
    watermark_ms.saturating_add(1)
}

/// The watermark an operator has reached, given its input frontier: one less than the least event
/// coordinate in the frontier, or [`WATERMARK_MAX`] once the frontier is empty (input finished).
pub fn frontier_watermark(frontier: AntichainRef<'_, Time>) -> i64 {
    frontier.iter().map(|time| time.inner.saturating_sub(1)).min().unwrap_or(WATERMARK_MAX)
}

/// Writes a watermark for people: `-inf` and `+inf` for the two ends.
pub fn format_watermark(watermark_ms: i64) -> String {
    match watermark_ms {
        WATERMARK_MIN => "-inf".to_string(),
        WATERMARK_MAX => "+inf".to_string(),
        ms => ms.to_string(),
    }
}

/// Parses a duration written `500ms`, `10s`, `2m`, `1h` or `1d` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, Error> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad = |why: &str| Error::Duration { text: text.to_string(), reason: why.to_string() };
    if digits.is_empty() {
        return Err(bad("it must start with a whole number, as in 500ms, 10s, 2m or 1h"));
    }
    let amount: i64 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(bad("a unit is missing: write ms, s, m, h or d")),
        _ => return Err(bad("the unit must be ms, s, m, h or d")),
    };
    amount.checked_mul(unit_ms).ok_or_else(|| bad("the duration is too large"))
}

/// Writes milliseconds back in the shortest exact unit (`2000` → `2s`).
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Decides the watermark after each record: Flink's `WatermarkGenerator`, evaluated per record.
///
/// This is a lab seam: a student implements it, and the engine runs the student's generator inside
/// real jobs. The contract: [`current_watermark`](Self::current_watermark) never decreases.
pub trait WatermarkGenerator: Send {
    /// Observes one record's event time.
    fn on_event(&mut self, time_ms: i64);
    /// The watermark after every record observed so far.
    fn current_watermark(&self) -> i64;
    /// The generator's state, for a checkpoint: restoring it (with [`restore`](Self::restore))
    /// and replaying the records after the checkpoint must give the same watermarks as a run
    /// without the interruption. The default, for stateless generators, is empty.
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    /// Restores what [`snapshot`](Self::snapshot) returned, or says why it cannot.
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() { Ok(()) } else { Err("this watermark generator keeps no state".to_string()) }
    }
}

/// Flink's `forBoundedOutOfOrderness(delay)`: `max_ts_seen - delay - 1`, starting at the minimum.
#[derive(Clone, Debug)]
pub struct BoundedOutOfOrderness {
    delay_ms: i64,
    max_time_ms: Option<i64>,
}

impl BoundedOutOfOrderness {
    /// A generator that trusts events to be at most `delay_ms` out of order.
    pub fn new(delay_ms: i64) -> Self {
        assert!(delay_ms >= 0, "an out-of-orderness bound cannot be negative");
        BoundedOutOfOrderness { delay_ms, max_time_ms: None }
    }
}

impl WatermarkGenerator for BoundedOutOfOrderness {
    fn on_event(&mut self, time_ms: i64) {
        self.max_time_ms = Some(self.max_time_ms.map_or(time_ms, |max| max.max(time_ms)));
    }

    fn current_watermark(&self) -> i64 {
        match self.max_time_ms {
            None => WATERMARK_MIN,
            Some(max) => max.saturating_sub(self.delay_ms).saturating_sub(1),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.max_time_ms.map(|max| max.to_le_bytes().to_vec()).unwrap_or_default()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.max_time_ms = match state.len() {
            0 => None,
            8 => Some(i64::from_le_bytes(state.try_into().expect("eight bytes"))),
            n => return Err(format!("bounded-out-of-orderness state is 8 bytes, not {n}")),
        };
        Ok(())
    }
}

/// Builds one [`WatermarkGenerator`] per source instance.
pub type GeneratorFactory = Arc<dyn Fn() -> Box<dyn WatermarkGenerator> + Send + Sync>;

/// Which watermark generator a source uses, and when it counts as idle (Flink's `WatermarkStrategy`).
#[derive(Clone)]
pub struct WatermarkStrategy {
    factory: GeneratorFactory,
    description: String,
    /// Flink's `withIdleness`: a source instance with no record for this long (processing time)
    /// stops holding back the watermark. `None` (the default): never idle.
    pub idle_timeout_ms: Option<i64>,
}

impl WatermarkStrategy {
    /// Flink's `forMonotonousTimestamps()`: watermark = `max_ts_seen - 1`.
    pub fn monotonous() -> Self {
        let mut strategy = Self::bounded(0);
        strategy.description = "monotonous".to_string();
        strategy
    }

    /// Flink's `forBoundedOutOfOrderness(delay)`: watermark = `max_ts_seen - delay - 1`.
    pub fn bounded(out_of_orderness_ms: i64) -> Self {
        assert!(out_of_orderness_ms >= 0, "an out-of-orderness bound cannot be negative");
        WatermarkStrategy {
            factory: Arc::new(move || Box::new(BoundedOutOfOrderness::new(out_of_orderness_ms))),
            description: format!("bounded:{}", format_duration_ms(out_of_orderness_ms)),
            idle_timeout_ms: None,
        }
    }

    /// A strategy around a generator of your own (Flink's `forGenerator`), named `description`.
    pub fn custom(
        description: &str,
        factory: impl Fn() -> Box<dyn WatermarkGenerator> + Send + Sync + 'static,
    ) -> Self {
        WatermarkStrategy { factory: Arc::new(factory), description: description.to_string(), idle_timeout_ms: None }
    }

    /// Flink's `withIdleness(timeout)`.
    pub fn with_idleness(mut self, idle_timeout_ms: i64) -> Self {
        assert!(idle_timeout_ms > 0, "an idle timeout must be positive");
        self.idle_timeout_ms = Some(idle_timeout_ms);
        self
    }

    /// A fresh generator for one source instance.
    pub fn generator(&self) -> Box<dyn WatermarkGenerator> {
        (self.factory)()
    }

    /// Parses `monotonous` or `bounded:2s`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text == "monotonous" {
            return Ok(Self::monotonous());
        }
        match text.strip_prefix("bounded:") {
            Some(delay) => Ok(Self::bounded(parse_duration_ms(delay)?)),
            None => Err(Error::Usage(format!(
                "unknown watermark strategy {text:?}: write `monotonous` or `bounded:<duration>`, as in bounded:2s"
            ))),
        }
    }
}

impl fmt::Display for WatermarkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.description)?;
        if let Some(idle) = self.idle_timeout_ms {
            write!(f, " idle:{}", format_duration_ms(idle))?;
        }
        Ok(())
    }
}

impl fmt::Debug for WatermarkStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WatermarkStrategy({self})")
    }
}

/// One advance of an operator instance's watermark, as [`WatermarkTrace`] records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkStep {
    /// The worker the operator instance runs on.
    pub worker: usize,
    /// How many records the instance had received when its watermark reached `watermark_ms`.
    pub records_seen: u64,
    /// The new watermark.
    pub watermark_ms: i64,
}

/// Where `Stream::trace_watermarks` records how each worker's watermark advanced.
///
/// The *values* a watermark passes through are fixed by the input; *when* timely reports them
/// (after how many records) depends on batching, so a trace is for looking at, not for results.
#[derive(Clone, Debug, Default)]
pub struct WatermarkTrace {
    steps: Arc<std::sync::Mutex<Vec<WatermarkStep>>>,
}

impl WatermarkTrace {
    /// An empty trace; clones share it.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn push(&self, worker: usize, records_seen: u64, watermark_ms: i64) {
        let mut steps = self.steps.lock().expect("watermark trace poisoned");
        if let Some(previous) = steps.iter().rev().find(|step| step.worker == worker) {
            assert!(
                watermark_ms >= previous.watermark_ms,
                "worker {worker}: watermark regressed from {} to {watermark_ms}",
                previous.watermark_ms
            );
        }
        steps.push(WatermarkStep { worker, records_seen, watermark_ms });
    }

    /// Every step of one worker, in order.
    pub fn steps_of(&self, worker: usize) -> Vec<WatermarkStep> {
        let steps = self.steps.lock().expect("watermark trace poisoned");
        steps.iter().filter(|step| step.worker == worker).copied().collect()
    }
}

/// The only reader of processing time.
pub trait Clock: Send + Sync {
    /// Processing time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The wall clock, in milliseconds since the Unix epoch. Used on threads and in cluster mode.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to: for tests (and the shape of the simulator's clock).
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now_ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        ManualClock { now_ms: Arc::new(AtomicI64::new(now_ms)) }
    }

    /// Moves the clock forward by `delta_ms` (never backwards).
    pub fn advance_ms(&self, delta_ms: i64) {
        assert!(delta_ms >= 0, "processing time never goes backwards");
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms("2m").unwrap(), 120_000);
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("3 days").is_err());
        assert_eq!(format_duration_ms(2_000), "2s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn bounded_generator_follows_flinks_formula() {
        let mut generator = BoundedOutOfOrderness::new(2_000);
        assert_eq!(generator.current_watermark(), WATERMARK_MIN);
        generator.on_event(10_000);
        assert_eq!(generator.current_watermark(), 7_999);
        generator.on_event(5_000);
        assert_eq!(generator.current_watermark(), 7_999);
        generator.on_event(-20_000);
        assert_eq!(generator.current_watermark(), 7_999);
    }

    /// A generator that keeps no state: its watermark is a fixed time.
    struct Fixed;

    impl WatermarkGenerator for Fixed {
        fn on_event(&mut self, _time_ms: i64) {}
        fn current_watermark(&self) -> i64 {
            1_000
        }
    }

    #[test]
    fn a_stateless_generator_checkpoints_and_restores_with_the_defaults() {
        // A checkpoint of a job with a user's stateless generator must restore: the default
        // snapshot is what the default restore accepts, and anything else is refused.
        let state = Fixed.snapshot();
        assert_eq!(Fixed.restore(&state), Ok(()));
        assert!(Fixed.restore(&[0]).is_err(), "a stateless generator has nothing to restore");
    }

    #[test]
    fn strategies_parse() {
        assert_eq!(WatermarkStrategy::parse("bounded:2s").unwrap().to_string(), "bounded:2s");
        assert_eq!(WatermarkStrategy::parse("monotonous").unwrap().to_string(), "monotonous");
        let mut monotonous = WatermarkStrategy::monotonous().generator();
        monotonous.on_event(100);
        assert_eq!(monotonous.current_watermark(), 99);
        assert!(WatermarkStrategy::parse("punctuated").is_err());
    }
}
