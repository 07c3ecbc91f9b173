//! A seeded generator of `key,event_time_ms,value` events with bounded disorder and stragglers.
//!
//! Event `i` is due at `start_ms + i * 1000 / events_per_second` of event time. Its timestamp is
//! drawn up to `disorder_ms` earlier than that, so a `bounded:<disorder>` watermark never makes an
//! ordinary event late. A fraction `late_fraction` of events are stragglers, a further
//! `1..=straggler_ms_max` milliseconds behind, which a watermark with that bound can make late.
//!
//! Everything is drawn from one ChaCha8 stream seeded with `seed`, in event order, so the same
//! configuration always gives the same events — the same bytes from `flowlab gen`.

use std::io::Write;
use std::marker::PhantomData;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Event, FinishedReader, FromEventFields, ReadStatus, Source, SourceReader};
use crate::error::{Error, Result};

/// What to generate. Defaults: 100 keys, 1 000 000 events, 1 000 events/s, 2 s disorder,
/// no stragglers (15 s at most when enabled), seed 0, starting at event time 0.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Number of distinct keys, named `k0`, `k1`, ….
    pub keys: u64,
    /// Number of events.
    pub events: u64,
    /// Event-time rate: how many events per second of event time.
    pub events_per_second: u64,
    /// Ordinary events are at most this far behind their due time.
    pub disorder_ms: i64,
    /// Fraction of events, in `[0, 1]`, that are stragglers.
    pub late_fraction: f64,
    /// A straggler is up to this much further behind than the disorder bound.
    pub straggler_ms_max: i64,
    /// The RNG seed (ChaCha8).
    pub seed: u64,
    /// The due time of the first event.
    pub start_ms: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            keys: 100,
            events: 1_000_000,
            events_per_second: 1_000,
            disorder_ms: 2_000,
            late_fraction: 0.0,
            straggler_ms_max: 15_000,
            seed: 0,
            start_ms: 0,
        }
    }
}

impl GeneratorConfig {
    /// Checks that the configuration makes sense.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: &str| Err(Error::Usage(format!("generator: {why}")));
        if self.keys == 0 {
            return bad("--keys must be at least 1");
        }
        if self.events_per_second == 0 {
            return bad("the event rate must be at least 1 event per second");
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return bad("--late-fraction must be between 0 and 1");
        }
        if self.disorder_ms < 0 || self.straggler_ms_max < 1 {
            return bad("disorder must be >= 0 and the straggler bound >= 1ms");
        }
        Ok(())
    }
}

/// The generated events, in arrival order, as `(event_time_ms, event)`; `event.line` is the
/// 1-based line the event has in `flowlab gen`'s output.
pub fn generate_events(config: &GeneratorConfig) -> impl Iterator<Item = (i64, Event)> + use<> {
    generate_raw(config).map(|(time_ms, key, value, line)| (time_ms, Event { key: format!("k{key}"), value, line }))
}

/// The generated events as `(event_time_ms, key number, value, line)`: what [`generate_events`]
/// gives, before the key is named `k<number>`.
fn generate_raw(config: &GeneratorConfig) -> impl Iterator<Item = (i64, u64, i64, u64)> + use<> {
    let config = config.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    (0..config.events).map(move |index| {
        let due_ms = config.start_ms + (index as i128 * 1_000 / config.events_per_second as i128) as i64;
        let key = rng.random_range(0..config.keys);
        let value = rng.random_range(0..100i64);
        let mut time_ms = due_ms - rng.random_range(0..=config.disorder_ms);
        if config.late_fraction > 0.0 && rng.random_bool(config.late_fraction) {
            time_ms -= rng.random_range(1..=config.straggler_ms_max);
        }
        (time_ms, key, value, index + 1)
    })
}

/// Writes `k<number>` into `buffer` and returns it as text, without an allocation.
fn key_name(number: u64, buffer: &mut [u8; 21]) -> &str {
    let mut at = buffer.len();
    let mut rest = number;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    at -= 1;
    buffer[at] = b'k';
    std::str::from_utf8(&buffer[at..]).expect("ASCII digits")
}

/// Writes the generated events as CSV lines `key,event_time_ms,value`, without a header.
pub fn write_events_csv(config: &GeneratorConfig, out: &mut dyn Write) -> std::io::Result<()> {
    for (time_ms, event) in generate_events(config) {
        writeln!(out, "{},{},{}", event.key, time_ms, event.value)?;
    }
    out.flush()
}

/// The generator as a source: one logical stream, read by instance 0, of [`Event`]s (or of any
/// [`FromEventFields`] rows, with [`GeneratorSource::of_rows`]).
pub struct GeneratorSource<R = Event> {
    config: GeneratorConfig,
    rows: PhantomData<fn() -> R>,
}

impl<R> Clone for GeneratorSource<R> {
    fn clone(&self) -> Self {
        GeneratorSource { config: self.config.clone(), rows: PhantomData }
    }
}

impl<R> std::fmt::Debug for GeneratorSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource").field("config", &self.config).finish()
    }
}

impl GeneratorSource {
    /// A source of `generate_events(config)`.
    pub fn new(config: GeneratorConfig) -> Self {
        Self::of_rows(config)
    }
}

impl<R: FromEventFields> GeneratorSource<R> {
    /// A source of the same events as rows of `R`, built from their fields (no [`Event`] and no
    /// `String` in between).
    pub fn of_rows(config: GeneratorConfig) -> Self {
        GeneratorSource { config, rows: PhantomData }
    }
}

impl<R: FromEventFields> Source<R> for GeneratorSource<R> {
    fn is_single_stream(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("generator seed={} events={}", self.config.seed, self.config.events)
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SourceReader<R>>> {
        self.config.validate()?;
        if instance != 0 {
            return Ok(Box::new(FinishedReader));
        }
        Ok(Box::new(GeneratorReader { events: Box::new(generate_raw(&self.config)), offset: 0, rows: PhantomData }))
    }

    fn reopen(&self, instance: usize, instances: usize, offset: u64) -> Result<Box<dyn SourceReader<R>>> {
        self.config.validate()?;
        if instance != 0 {
            return self.open(instance, instances);
        }
        // The sequence is a function of the seed: regenerate it and skip what was read.
        let events = generate_raw(&self.config).skip(offset as usize);
        Ok(Box::new(GeneratorReader { events: Box::new(events), offset, rows: PhantomData }))
    }
}

struct GeneratorReader<R> {
    events: Box<dyn Iterator<Item = (i64, u64, i64, u64)>>,
    offset: u64,
    rows: PhantomData<fn() -> R>,
}

impl<R: FromEventFields> SourceReader<R> for GeneratorReader<R> {
    fn read(&mut self, out: &mut Vec<(i64, R)>, max_records: usize) -> Result<ReadStatus> {
        let before = out.len();
        let mut name = [0u8; 21];
        out.extend(self.events.by_ref().take(max_records).map(|(time_ms, key, value, line)| {
            (time_ms, R::from_event_fields(key_name(key, &mut name), time_ms, value, line))
        }));
        let produced = out.len() - before;
        self.offset += produced as u64;
        Ok(if produced < max_records { ReadStatus::Finished } else { ReadStatus::More })
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events_and_disorder_is_bounded() {
        let config = GeneratorConfig { events: 2_000, late_fraction: 0.0, ..GeneratorConfig::default() };
        let first: Vec<_> = generate_events(&config).collect();
        assert_eq!(first, generate_events(&config).collect::<Vec<_>>());
        let other: Vec<_> = generate_events(&GeneratorConfig { seed: 1, ..config.clone() }).collect();
        assert_ne!(first, other);
        let mut name = [0u8; 21];
        for number in [0, 7, 10, 9_999, u64::MAX] {
            assert_eq!(key_name(number, &mut name), format!("k{number}"));
        }
        let mut max_seen = i64::MIN;
        for (time_ms, _) in &first {
            assert!(*time_ms >= max_seen.saturating_sub(config.disorder_ms), "disorder beyond the bound");
            max_seen = max_seen.max(*time_ms);
        }
    }
}
