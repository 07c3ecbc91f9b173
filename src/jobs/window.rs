//! The `flowlab window` job: one windowed aggregation over a CSV file, for comparing window
//! semantics without writing Rust.
//!
//! ```text
//! csv source [watermark] → key_by key → window [assigner, lateness] aggregate
//!                                                                   ├─ results → rows sorted by (end, key, start)
//!                                                                   └─ late → original lines, in input order
//! ```

pub mod baseline;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{CompactKey, Env, JobGraph, KeyedStream, WindowedStream};
use crate::connectors::{
    BadLinePolicy, CollectSink, CsvSource, FromEventFields, Sink, SinkWriter, StagedFile, TransactionWriter,
    TransactionalFileSink, TwoPhaseCommitSink, commit_file_transaction, recover_file,
};
use crate::error::{Error, Result};
use crate::runtime::{JobConfig, JobReport, execute, plan};
use crate::time::{Record, WatermarkStrategy, parse_duration_ms};
use crate::window::{AggregateFunction, SessionWindows, SlidingWindows, TimeDomain, TumblingWindows, WindowResult};

/// Which windows, as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// `tumbling:10s`
    Tumbling {
        /// Window size.
        size_ms: i64,
    },
    /// `sliding:10s,5s`
    Sliding {
        /// Window size.
        size_ms: i64,
        /// Slide.
        slide_ms: i64,
    },
    /// `session:3s`
    Session {
        /// Gap.
        gap_ms: i64,
    },
    /// `count:100` or `count:100,10`
    Count {
        /// Elements per window.
        size: i64,
        /// Fire every `slide` elements (a sliding count window), if given.
        slide: Option<i64>,
    },
}

impl WindowSpec {
    /// Parses `tumbling:10s`, `sliding:10s,5s`, `session:3s`, `count:100` or `count:100,10`.
    pub fn parse(text: &str) -> Result<Self> {
        let usage = || {
            Error::Usage(format!(
                "bad window {text:?}: write tumbling:<size>, sliding:<size>,<slide>, session:<gap>, count:<n> or count:<n>,<slide>"
            ))
        };
        let (kind, arguments) = text.split_once(':').ok_or_else(usage)?;
        let parts: Vec<&str> = arguments.split(',').map(str::trim).collect();
        let count = |part: &str| -> Result<i64> {
            match part.parse::<i64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(Error::Usage(format!(
                    "bad count {part:?} in window {text:?}: it must be a positive whole number"
                ))),
            }
        };
        match (kind, parts.as_slice()) {
            ("tumbling", [size]) => Ok(WindowSpec::Tumbling { size_ms: parse_duration_ms(size)? }),
            ("sliding", [size, slide]) => {
                Ok(WindowSpec::Sliding { size_ms: parse_duration_ms(size)?, slide_ms: parse_duration_ms(slide)? })
            }
            ("session", [gap]) => Ok(WindowSpec::Session { gap_ms: parse_duration_ms(gap)? }),
            ("count", [size]) => Ok(WindowSpec::Count { size: count(size)?, slide: None }),
            ("count", [size, slide]) => Ok(WindowSpec::Count { size: count(size)?, slide: Some(count(slide)?) }),
            _ => Err(usage()),
        }
    }
}

/// An aggregate the command can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Number of elements.
    Count,
    /// Sum of values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

impl Aggregate {
    /// Parses a comma-separated list such as `count,sum`.
    pub fn parse_list(text: &str) -> Result<Vec<Self>> {
        text.split(',')
            .map(|name| match name.trim() {
                "count" => Ok(Aggregate::Count),
                "sum" => Ok(Aggregate::Sum),
                "min" => Ok(Aggregate::Min),
                "max" => Ok(Aggregate::Max),
                other => Err(Error::Usage(format!("unknown aggregate {other:?}: choose from count, sum, min, max"))),
            })
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
        }
    }
}

/// Everything the `window` job needs.
#[derive(Clone, Debug)]
pub struct WindowJob {
    /// The CSV input.
    pub input: PathBuf,
    /// Which windows.
    pub window: WindowSpec,
    /// Watermark strategy of the source.
    pub strategy: WatermarkStrategy,
    /// Allowed lateness.
    pub lateness_ms: i64,
    /// Window offset (tumbling and sliding).
    pub offset_ms: i64,
    /// What happens to bad input lines.
    pub bad_lines: BadLinePolicy,
}

impl WindowJob {
    /// Whether the job uses count windows (their rows are bounded by their elements' times).
    pub fn is_count_window(&self) -> bool {
        matches!(self.window, WindowSpec::Count { .. })
    }
}

/// An element as the window sees it, built by the CSV reader straight from a line's fields: the
/// key inline (no allocation per record), the event time beside the value (the count windows'
/// bounds need it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Element {
    key: CompactKey,
    time_ms: i64,
    value: i64,
    line: u64,
}

impl FromEventFields for Element {
    fn from_event_fields(key: &str, time_ms: i64, value: i64, line: u64) -> Self {
        Element { key: CompactKey::new(key), time_ms, value, line }
    }
}

/// A firing as the job carries it, before the key becomes a `String` in [`WindowOutcome`].
type Firing = WindowResult<CompactKey, Stats>;

/// count, sum, min, max of values, and the span of event times (the bounds of count windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stats {
    /// Elements.
    pub count: i64,
    /// Sum of values.
    pub sum: i64,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Earliest event time.
    pub first_ms: i64,
    /// Latest event time.
    pub last_ms: i64,
}

impl Stats {
    /// The statistics of no element.
    const EMPTY: Stats =
        Stats { count: 0, sum: 0, min: i64::MAX, max: i64::MIN, first_ms: i64::MAX, last_ms: i64::MIN };

    /// Adds an element with `value` at `time_ms`.
    fn add(&mut self, time_ms: i64, value: i64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.first_ms = self.first_ms.min(time_ms);
        self.last_ms = self.last_ms.max(time_ms);
    }
}

struct StatsAggregate;

impl AggregateFunction<Element> for StatsAggregate {
    type Accumulator = Stats;
    type Output = Stats;

    fn create_accumulator(&self) -> Stats {
        Stats::EMPTY
    }

    fn add(&self, stats: &mut Stats, element: &Element) {
        stats.add(element.time_ms, element.value);
    }

    fn merge(&self, stats: &mut Stats, other: Stats) {
        stats.count += other.count;
        stats.sum = stats.sum.wrapping_add(other.sum);
        stats.min = stats.min.min(other.min);
        stats.max = stats.max.max(other.max);
        stats.first_ms = stats.first_ms.min(other.first_ms);
        stats.last_ms = stats.last_ms.max(other.last_ms);
    }

    fn result(&self, stats: &Stats) -> Stats {
        *stats
    }
}

/// One output row: a window firing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowRow<'a> {
    /// The key.
    pub key: &'a str,
    /// Window start (count windows: earliest event time).
    pub start: i64,
    /// Window end, exclusive (count windows: latest event time + 1).
    pub end: i64,
    /// The aggregates.
    pub stats: Stats,
}

/// What the job produced.
#[derive(Debug)]
pub struct WindowOutcome {
    /// Every firing, sorted by `(window_end, key, window_start)`, then firing order.
    pub results: Vec<WindowResult<String, Stats>>,
    /// Elements too late for every window, as input lines, in input order.
    pub late_lines: Vec<String>,
    /// Graph and counters.
    pub report: JobReport,
}

impl WindowOutcome {
    /// The rows of the output file.
    pub fn rows(&self, count_windows: bool) -> Vec<WindowRow<'_>> {
        self.results.iter().map(|result| row_of(result, count_windows)).collect()
    }
}

/// The header line: `key,window_start,window_end,` then the aggregates.
fn header(aggregates: &[Aggregate]) -> String {
    let mut out = String::from("key,window_start,window_end");
    for aggregate in aggregates {
        out.push(',');
        out.push_str(aggregate.name());
    }
    out.push('\n');
    out
}

fn render_row(out: &mut String, row: &WindowRow<'_>, aggregates: &[Aggregate]) {
    let _ = write!(out, "{},{},{}", row.key, row.start, row.end);
    for aggregate in aggregates {
        let _ = write!(out, ",{}", aggregate_value(row.stats, *aggregate));
    }
    out.push('\n');
}

fn aggregate_value(stats: Stats, aggregate: Aggregate) -> i64 {
    match aggregate {
        Aggregate::Count => stats.count,
        Aggregate::Sum => stats.sum,
        Aggregate::Min => stats.min,
        Aggregate::Max => stats.max,
    }
}

/// Renders rows as CSV with a header: `key,window_start,window_end,` then the aggregates.
pub fn render_rows(rows: &[WindowRow<'_>], aggregates: &[Aggregate]) -> String {
    let mut out = header(aggregates);
    for row in rows {
        render_row(&mut out, row, aggregates);
    }
    out
}

/// `render_row` into bytes, without the formatting machinery: the file writer renders millions
/// of rows. Same text.
fn render_row_bytes(out: &mut Vec<u8>, key: &[u8], start: i64, end: i64, stats: Stats, aggregates: &[Aggregate]) {
    render_row_in_window(out, key, &RowBounds::new(start, end), stats, aggregates);
}

/// A row's `,start,end`, rendered once for all the rows of a window.
struct RowBounds {
    text: [u8; RowBounds::LENGTH_MAX],
    len: usize,
}

impl RowBounds {
    /// Two commas and two numbers of at most 20 bytes.
    const LENGTH_MAX: usize = 42;

    fn new(start: i64, end: i64) -> Self {
        let mut text = [0u8; Self::LENGTH_MAX];
        text[0] = b',';
        let at = put_integer(&mut text, 1, start);
        text[at] = b',';
        let len = put_integer(&mut text, at + 1, end);
        RowBounds { text, len }
    }
}

/// [`render_row_bytes`] with the window's bounds rendered already. The row is put together on
/// the stack and appended once, since appending each part on its own cost a `memmove` call per
/// part; the bounds are copied whole (a fixed size, no call) and the row goes on after their end.
fn render_row_in_window(out: &mut Vec<u8>, key: &[u8], bounds: &RowBounds, stats: Stats, aggregates: &[Aggregate]) {
    // Room for a short key, the bounds, four aggregates (a number is at most 20 bytes after its
    // comma) and the line end; more is written in parts.
    const KEY_INLINE_MAX: usize = 32;
    let mut row = [0u8; KEY_INLINE_MAX + RowBounds::LENGTH_MAX + 4 * 21 + 1];
    let mut at = 0;
    if key.len() <= KEY_INLINE_MAX {
        row[..key.len()].copy_from_slice(key);
        at = key.len();
    } else {
        out.extend_from_slice(key);
    }
    row[at..at + RowBounds::LENGTH_MAX].copy_from_slice(&bounds.text);
    at += bounds.len;
    for number in aggregates.iter().map(|aggregate| aggregate_value(stats, *aggregate)) {
        if at + 22 > row.len() {
            out.extend_from_slice(&row[..at]);
            at = 0;
        }
        row[at] = b',';
        at = put_integer(&mut row, at + 1, number);
    }
    row[at] = b'\n';
    out.extend_from_slice(&row[..=at]);
}

/// The decimal digits of `00` to `99`, two by two.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `number` in decimal, as `Display` writes it, into `row` at `at` (which leaves at least
/// 20 bytes); returns the position after it.
fn put_integer(row: &mut [u8], mut at: usize, number: i64) -> usize {
    if number < 0 {
        row[at] = b'-';
        at += 1;
    }
    let mut rest = number.unsigned_abs();
    let digits = decimal_digits(rest);
    let end = at + digits;
    let mut position = end;
    // Two digits per division: half the divisions of one at a time.
    while rest >= 100 {
        let pair = (rest % 100) as usize * 2;
        rest /= 100;
        position -= 2;
        row[position..position + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if rest >= 10 {
        let pair = rest as usize * 2;
        row[position - 2..position].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        row[position - 1] = b'0' + rest as u8;
    }
    end
}

/// How many decimal digits `number` has (at least one).
fn decimal_digits(number: u64) -> usize {
    number.checked_ilog10().map_or(1, |log| log as usize + 1)
}

fn row_of<K: AsRef<str>>(result: &WindowResult<K, Stats>, count_windows: bool) -> WindowRow<'_> {
    let (start, end) = row_bounds(result, count_windows);
    WindowRow { key: result.key.as_ref(), start, end, stats: result.value }
}

/// `(start, end)` of a firing's row: its window, or for count windows the span of its elements.
fn row_bounds<K>(result: &WindowResult<K, Stats>, count_windows: bool) -> (i64, i64) {
    if count_windows {
        (result.value.first_ms, result.value.last_ms + 1)
    } else {
        (result.window.start, result.window.end)
    }
}

/// Writes window results as sorted CSV rows while the job runs, at worker 0: rows whose window
/// can no longer fire (its end, plus the allowed lateness, is behind the watermark) are final,
/// so they are sorted and written, and memory holds only the windows still open.
#[derive(Clone)]
struct SortedRowsSink {
    path: PathBuf,
    aggregates: Vec<Aggregate>,
    lateness_ms: i64,
    count_windows: bool,
    rows: Arc<std::sync::atomic::AtomicU64>,
}

/// Rows received but not yet final, and how to render them: what both file writers share.
struct SortedRows {
    sink: SortedRowsSink,
    pending: Vec<Firing>,
    /// The smallest row end in `pending` (or `i64::MAX`), so that a watermark that finalises
    /// nothing costs one comparison, not a pass over every pending row.
    pending_end_min: i64,
    /// The sort order of the rows the current flush makes final (kept to reuse its memory).
    order: Vec<(i64, u128, usize, i64, usize)>,
    /// The same for a flush of one window (see `render_one_window`).
    packed: Vec<u128>,
    /// The same when every key of that window is short.
    packed_short: Vec<u64>,
    text: Vec<u8>,
}

impl SortedRows {
    fn new(sink: &SortedRowsSink) -> Self {
        SortedRows {
            sink: sink.clone(),
            pending: Vec::new(),
            pending_end_min: i64::MAX,
            order: Vec::new(),
            packed: Vec::new(),
            packed_short: Vec::new(),
            text: Vec::new(),
        }
    }

    fn add(&mut self, records: &[Record<Firing>]) {
        let count_windows = self.sink.count_windows;
        for record in records {
            self.pending_end_min = self.pending_end_min.min(row_bounds(&record.value, count_windows).1);
            self.pending.push(record.value.clone());
        }
    }

    /// `add`, moving the rows.
    fn take(&mut self, records: &mut Vec<Record<Firing>>) {
        let count_windows = self.sink.count_windows;
        for record in records.drain(..) {
            self.pending_end_min = self.pending_end_min.min(row_bounds(&record.value, count_windows).1);
            self.pending.push(record.value);
        }
    }

    /// Sorts and renders into `self.text` every pending row whose end is below `end_limit` (all
    /// rows with `None`); returns whether there is text.
    fn render_below(&mut self, end_limit: Option<i64>) -> bool {
        self.text.clear();
        if end_limit.is_some_and(|limit| self.pending_end_min >= limit) || self.pending.is_empty() {
            return false;
        }
        let count_windows = self.sink.count_windows;
        let is_final = |end: i64| end_limit.is_none_or(|limit| end < limit);
        let rendered = match self.render_one_window(end_limit) {
            Some(rendered) => rendered,
            None => self.render_sorted(end_limit),
        };
        if rendered == 0 {
            return false;
        }
        self.sink.rows.fetch_add(rendered as u64, std::sync::atomic::Ordering::Relaxed);
        if rendered == self.pending.len() {
            self.pending.clear();
        } else {
            self.pending.retain(|result| !is_final(row_bounds(result, count_windows).1));
        }
        self.pending_end_min =
            self.pending.iter().map(|result| row_bounds(result, count_windows).1).min().unwrap_or(i64::MAX);
        true
    }

    /// The common flush, faster: when every final row belongs to one window and every key of them
    /// is at most 11 bytes, the order is `(key, arrival)` and each row's place fits one `u128` —
    /// key bytes (zero-padded, so with the length after them they order as the keys do), length,
    /// arrival index — which sorts as a plain number. Renders into `self.text` and returns how
    /// many rows, or `None` (nothing rendered) when the rows are not of that kind.
    fn render_one_window(&mut self, end_limit: Option<i64>) -> Option<usize> {
        const KEY_MAX: usize = 11;
        let count_windows = self.sink.count_windows;
        let is_final = |end: i64| end_limit.is_none_or(|limit| end < limit);
        if self.pending.len() > u32::MAX as usize {
            return None;
        }
        self.packed.clear();
        let mut window = None;
        let mut longest = 0;
        for (index, result) in self.pending.iter().enumerate() {
            let bounds = row_bounds(result, count_windows);
            if !is_final(bounds.1) {
                continue;
            }
            let length = result.key.len();
            longest = longest.max(length);
            let bytes = result.key.inline_bytes().filter(|_| length <= KEY_MAX)?;
            if *window.get_or_insert(bounds) != bounds {
                return None;
            }
            // The place's 16 bytes, big-endian: key bytes 0..8, 8..11 and the length, the index.
            // Built from fixed-size reads of the zero-padded key: copying `length` bytes into an
            // array and reading it back as a number stalled the CPU on every row.
            let high = u64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"));
            let low = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], length as u8]);
            self.packed.push((u128::from(high) << 64) | (u128::from(low) << 32) | u128::from(index as u32));
        }
        let Some((start, end)) = window else { return Some(0) };
        let bounds = RowBounds::new(start, end);
        let render = |text: &mut Vec<u8>, index: usize| {
            let result = &self.pending[index];
            render_row_in_window(text, result.key.as_bytes(), &bounds, result.value, &self.sink.aggregates);
        };
        // Keys of at most 5 bytes (`k0` to `k99999`) and fewer than 2^20 rows: the same order in
        // a `u64` — key bytes 0..5, the length in 4 bits, the index in 20 — which sorts faster.
        const SHORT_KEY_MAX: usize = 5;
        const SHORT_INDEX_BITS: u32 = 20;
        if longest <= SHORT_KEY_MAX && self.pending.len() < 1 << SHORT_INDEX_BITS {
            self.packed_short.clear();
            self.packed_short.extend(self.packed.iter().map(|&place| {
                let (high, length, index) = ((place >> 64) as u64, (place >> 32) as u8, place as u32);
                ((high >> 24) << 24) | (u64::from(length) << SHORT_INDEX_BITS) | u64::from(index)
            }));
            self.packed_short.sort_unstable();
            for place in &self.packed_short {
                render(&mut self.text, (place & ((1 << SHORT_INDEX_BITS) - 1)) as usize);
            }
        } else {
            self.packed.sort_unstable();
            for place in &self.packed {
                // The low 32 bits are the arrival index.
                render(&mut self.text, *place as u32 as usize);
            }
        }
        Some(self.packed.len())
    }

    /// Sorts and renders the final rows in general; returns how many.
    fn render_sorted(&mut self, end_limit: Option<i64>) -> usize {
        let count_windows = self.sink.count_windows;
        let is_final = |end: i64| end_limit.is_none_or(|limit| end < limit);
        // Sort positions, not rows: `(end, key prefix, key length, start, arrival)`. The arrival
        // index keeps the firings of one window in firing order; the prefix (the first 16 key
        // bytes, big-endian, zero-padded) orders keys as their bytes do when no key is longer.
        self.order.clear();
        let mut short_keys = true;
        for (index, result) in self.pending.iter().enumerate() {
            let (start, end) = row_bounds(result, count_windows);
            if is_final(end) {
                let key = result.key.as_bytes();
                short_keys &= key.len() <= 16;
                let mut prefix = [0u8; 16];
                let shown = key.len().min(16);
                prefix[..shown].copy_from_slice(&key[..shown]);
                self.order.push((end, u128::from_be_bytes(prefix), key.len(), start, index));
            }
        }
        if short_keys {
            self.order.sort_unstable();
        } else {
            let pending = &self.pending;
            self.order.sort_unstable_by(|a, b| {
                (a.0.cmp(&b.0)).then_with(|| pending[a.4].key.cmp(&pending[b.4].key)).then((a.3, a.4).cmp(&(b.3, b.4)))
            });
        }
        for &(end, _, _, start, index) in &self.order {
            let result = &self.pending[index];
            render_row_bytes(&mut self.text, result.key.as_bytes(), start, end, result.value, &self.sink.aggregates);
        }
        self.order.len()
    }

    /// The limit below which rows are final at `watermark_ms`, if any rows can be.
    fn final_below(&self, watermark_ms: i64) -> Option<i64> {
        // Count windows are ordered by their elements' times, which no watermark bounds.
        if self.sink.count_windows || watermark_ms == i64::MAX {
            return None;
        }
        // A window fires again at most until its end - 1 + lateness is behind the watermark.
        Some(watermark_ms.saturating_add(1).saturating_sub(self.sink.lateness_ms))
    }
}

struct SortedRowsWriter {
    rows: SortedRows,
    out: Option<std::io::BufWriter<std::fs::File>>,
}

impl Sink<Firing> for SortedRowsSink {
    fn name(&self) -> String {
        format!("sorted csv {}", self.path.display())
    }

    fn partitioning(&self) -> crate::api::Partitioning {
        crate::api::Partitioning::Gather
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SinkWriter<Firing>>> {
        let out = if instance == 0 {
            let file =
                std::fs::File::create(&self.path).map_err(|e| Error::io("cannot create output", &self.path, e))?;
            let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
            std::io::Write::write_all(&mut out, header(&self.aggregates).as_bytes())
                .map_err(|e| Error::io("cannot write", &self.path, e))?;
            Some(out)
        } else {
            None
        };
        Ok(Box::new(SortedRowsWriter { rows: SortedRows::new(self), out }))
    }
}

impl SortedRowsWriter {
    fn flush_below(&mut self, end_limit: Option<i64>) -> Result<()> {
        if !self.rows.render_below(end_limit) {
            return Ok(());
        }
        let out = self.out.as_mut().expect("only worker 0 receives rows");
        std::io::Write::write_all(out, &self.rows.text).map_err(|e| Error::io("cannot write", &self.rows.sink.path, e))
    }
}

impl SinkWriter<Firing> for SortedRowsWriter {
    fn write(&mut self, records: &[Record<Firing>]) -> Result<()> {
        self.rows.add(records);
        Ok(())
    }
    fn write_owned(&mut self, records: &mut Vec<Record<Firing>>) -> Result<()> {
        self.rows.take(records);
        Ok(())
    }
    fn on_watermark(&mut self, watermark_ms: i64) -> Result<()> {
        match self.rows.final_below(watermark_ms) {
            Some(limit) if self.out.is_some() => self.flush_below(Some(limit)),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        self.flush_below(None)?;
        let out = self.out.as_mut().expect("worker 0");
        std::io::Write::flush(out).map_err(|e| Error::io("cannot write", &self.rows.sink.path, e))
    }
}

/// With checkpoints, the same sorted file, exactly once: final rows go into the epoch's
/// transaction, and rows not yet final are part of the sink's checkpoint state, so the committed
/// file is the one an uninterrupted run writes, byte for byte.
struct SortedRowsTransaction {
    rows: SortedRows,
    staged: StagedFile,
}

impl TwoPhaseCommitSink<Firing> for SortedRowsSink {
    fn name(&self) -> String {
        format!("sorted csv {} (exactly once)", self.path.display())
    }

    fn partitioning(&self) -> crate::api::Partitioning {
        crate::api::Partitioning::Gather
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn TransactionWriter<Firing>>> {
        let mut staged = StagedFile::open(&self.path, instance)?;
        if instance == 0 && staged.is_fresh() {
            staged.append(header(&self.aggregates).as_bytes());
        }
        Ok(Box::new(SortedRowsTransaction { rows: SortedRows::new(self), staged }))
    }

    fn commit(&self, transaction: &[u8]) -> Result<()> {
        commit_file_transaction(&self.path, transaction)
    }

    fn recover(&self, instance: usize, last: Option<&[u8]>) -> Result<()> {
        recover_file(&self.path, instance, last)
    }
}

impl SortedRowsTransaction {
    fn stage_below(&mut self, end_limit: Option<i64>) {
        if self.rows.render_below(end_limit) {
            self.staged.append(&self.rows.text);
        }
    }
}

impl TransactionWriter<Firing> for SortedRowsTransaction {
    fn write(&mut self, _epoch: u64, records: &[Record<Firing>]) -> Result<()> {
        self.rows.add(records);
        Ok(())
    }

    fn on_watermark(&mut self, watermark_ms: i64) -> Result<()> {
        if watermark_ms == i64::MAX {
            self.stage_below(None);
        } else if let Some(limit) = self.rows.final_below(watermark_ms) {
            self.stage_below(Some(limit));
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<Vec<u8>> {
        self.staged.pre_commit(epoch)
    }

    fn snapshot(&mut self) -> Result<Vec<u8>> {
        bincode::serialize(&self.rows.pending).map_err(|e| Error::Runtime(format!("cannot encode pending rows: {e}")))
    }

    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<()> {
        for state in states.iter().filter(|state| !state.is_empty()) {
            // A `CompactKey` is encoded as its `String` would be: checkpoints of either read back.
            let rows: Vec<Firing> =
                bincode::deserialize(state).map_err(|e| Error::Runtime(format!("pending rows do not decode: {e}")))?;
            for row in rows {
                self.rows.pending_end_min =
                    self.rows.pending_end_min.min(row_bounds(&row, self.rows.sink.count_windows).1);
                self.rows.pending.push(row);
            }
        }
        Ok(())
    }
}

fn windowed<'scope>(
    job: &WindowJob,
    keyed: KeyedStream<'scope, CompactKey, Element>,
) -> Result<WindowedStream<'scope, CompactKey, Element>> {
    Ok(match job.window {
        WindowSpec::Tumbling { size_ms } => {
            keyed.window(TumblingWindows::new(size_ms, job.offset_ms, TimeDomain::EventTime)?)
        }
        WindowSpec::Sliding { size_ms, slide_ms } => {
            keyed.window(SlidingWindows::new(size_ms, slide_ms, job.offset_ms, TimeDomain::EventTime)?)
        }
        WindowSpec::Session { gap_ms } => keyed.window(SessionWindows::with_gap(gap_ms, TimeDomain::EventTime)?),
        WindowSpec::Count { size, slide: None } => keyed.count_window(size),
        WindowSpec::Count { size, slide: Some(slide) } => keyed.count_window_sliding(size, slide),
    }
    .allowed_lateness(job.lateness_ms))
}

struct Outputs {
    results: CollectSink<Firing>,
    late: CollectSink<Element>,
    file: Option<SortedRowsSink>,
    /// With checkpoints: where the line numbers of late elements are committed, exactly once.
    late_lines: Option<PathBuf>,
}

fn build(env: &Env<'_>, job: &WindowJob, outputs: &Outputs) -> Result<()> {
    let keyed = env
        .source(CsvSource::<Element>::of_rows(&job.input).on_bad_line(job.bad_lines.clone()), job.strategy.clone())
        .key_by(|element: &Element| element.key.clone());
    let output = windowed(job, keyed)?.aggregate(StatsAggregate);
    match &outputs.file {
        Some(file) if env.context().checkpoints.is_some() => output.results.sink_exactly_once(file.clone()),
        Some(file) => output.results.sink(file.clone()),
        None => output.results.sink(outputs.results.clone()),
    }
    match &outputs.late_lines {
        Some(path) if env.context().checkpoints.is_some() => {
            output.late.sink_exactly_once(TransactionalFileSink::new(path, |record: &Record<Element>| {
                record.value.line.to_string()
            }))
        }
        _ => output.late.sink(outputs.late.clone()),
    }
    Ok(())
}

fn check(job: &WindowJob) -> Result<()> {
    // Building validates the window parameters; do it once here so that workers never fail on them.
    let outputs = Outputs { results: CollectSink::new(), late: CollectSink::new(), file: None, late_lines: None };
    let result = std::cell::RefCell::new(Ok(()));
    plan("window", 1, |env| *result.borrow_mut() = build(env, job, &outputs));
    result.into_inner()
}

/// The job's graph, without running it.
pub fn plan_window(job: &WindowJob, parallelism: usize) -> Result<JobGraph> {
    check(job)?;
    let outputs = Outputs { results: CollectSink::new(), late: CollectSink::new(), file: None, late_lines: None };
    Ok(plan("window", parallelism, |env| {
        let _ = build(env, job, &outputs);
    }))
}

/// Runs the job and writes its rows, sorted, to `path` while it runs (what `flowlab window`
/// does). Returns the number of rows and the late lines in input order.
pub fn run_window_to_file(
    job: &WindowJob,
    config: &JobConfig,
    path: &std::path::Path,
    aggregates: &[Aggregate],
) -> Result<(u64, Vec<String>, JobReport)> {
    check(job)?;
    let file = SortedRowsSink {
        path: path.to_path_buf(),
        aggregates: aggregates.to_vec(),
        lateness_ms: job.lateness_ms,
        count_windows: job.is_count_window(),
        rows: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    let rows = Arc::clone(&file.rows);
    let late_path = late_lines_path(path);
    let outputs = Arc::new(Outputs {
        results: CollectSink::new(),
        late: CollectSink::new(),
        file: Some(file),
        late_lines: config.checkpoint.is_some().then(|| late_path.clone()),
    });
    let (for_workers, shared_job) = (Arc::clone(&outputs), job.clone());
    let report = execute(config, move |env| {
        build(env, &shared_job, &for_workers).expect("checked before the run");
    })?;
    let late_numbers = match &outputs.late_lines {
        Some(late_path) => {
            let text = std::fs::read_to_string(late_path).map_err(|e| Error::io("cannot read", late_path, e))?;
            text.lines()
                .map(|line| line.parse::<u64>().map_err(|e| Error::Runtime(format!("{}: {e}", late_path.display()))))
                .collect::<Result<Vec<u64>>>()?
        }
        None => outputs.late.records().iter().map(|record| record.value.line).collect(),
    };
    Ok((rows.load(std::sync::atomic::Ordering::Relaxed), late_lines(&job.input, late_numbers)?, report))
}

/// With checkpoints, where `flowlab window --output <path>` commits the line numbers of late
/// elements: `<path>.late-lines`.
pub fn late_lines_path(output: &std::path::Path) -> PathBuf {
    let mut name = output.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".late-lines");
    output.with_file_name(name)
}

/// The input lines, verbatim, of the elements too late for every window, in input order: the
/// file is read once more for exactly those line numbers.
fn late_lines(input: &std::path::Path, mut wanted: Vec<u64>) -> Result<Vec<String>> {
    use std::io::BufRead;
    wanted.sort_unstable();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let file = std::fs::File::open(input).map_err(|e| Error::io("cannot reopen input", input, e))?;
    let mut lines = Vec::with_capacity(wanted.len());
    let mut next = wanted.iter().peekable();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|e| Error::io("cannot read input", input, e))?;
        while next.peek() == Some(&&number) {
            lines.push(line.trim_end_matches('\r').to_string());
            next.next();
        }
        if next.peek().is_none() {
            break;
        }
    }
    Ok(lines)
}

/// Runs the job: results sorted by `(window_end, key, window_start)`, late lines in input order.
pub fn run_window(job: &WindowJob, config: &JobConfig) -> Result<WindowOutcome> {
    check(job)?;
    let outputs =
        Arc::new(Outputs { results: CollectSink::new(), late: CollectSink::new(), file: None, late_lines: None });
    let (for_workers, shared_job) = (Arc::clone(&outputs), job.clone());
    let report = execute(config, move |env| {
        build(env, &shared_job, &for_workers).expect("checked before the run");
    })?;
    // Each key lives on one worker, and a worker's results arrive in firing order, so a stable
    // sort keeps the late firings of one window in the order they happened.
    let mut results: Vec<Record<Firing>> = outputs.results.records();
    results.sort_by(|a, b| {
        (a.value.window.end, &a.value.key, a.value.window.start).cmp(&(
            b.value.window.end,
            &b.value.key,
            b.value.window.start,
        ))
    });
    let mut results: Vec<WindowResult<String, Stats>> = results
        .into_iter()
        .map(|record| WindowResult {
            key: record.value.key.into(),
            window: record.value.window,
            value: record.value.value,
        })
        .collect();
    if matches!(job.window, WindowSpec::Count { .. }) {
        // Count windows are reported by the span of their elements.
        results.sort_by(|a, b| {
            (a.value.last_ms, &a.key, a.value.first_ms).cmp(&(b.value.last_ms, &b.key, b.value.first_ms))
        });
    }
    let late_numbers = outputs.late.records().iter().map(|record| record.value.line).collect();
    Ok(WindowOutcome { results, late_lines: late_lines(&job.input, late_numbers)?, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte renderer of the file writer writes what `Display` does, for every size of number.
    #[test]
    fn rows_render_as_display_writes_them() {
        let mut numbers = vec![0, 1, -1, 9, 10, 99, 100, -100, 12_345, i64::MAX, i64::MIN, i64::MIN + 1];
        let mut power = 1i64;
        while let Some(next) = power.checked_mul(10) {
            numbers.extend([power - 1, power, power + 1, -power, -(power - 1), next / 3]);
            power = next;
        }
        let aggregates = [Aggregate::Count, Aggregate::Sum, Aggregate::Min, Aggregate::Max, Aggregate::Sum];
        let long_key = "k".repeat(40);
        for (index, &number) in numbers.iter().enumerate() {
            let other = numbers[(index * 7 + 3) % numbers.len()];
            let stats = Stats { count: number, sum: other, min: i64::MIN, max: i64::MAX, first_ms: 0, last_ms: 0 };
            for key in ["k1", long_key.as_str(), ""] {
                for aggregates in [&aggregates[..], &aggregates[..1], &[]] {
                    let row = WindowRow { key, start: other, end: number, stats };
                    let mut expected = String::new();
                    render_row(&mut expected, &row, aggregates);
                    let mut bytes = Vec::new();
                    render_row_bytes(&mut bytes, key.as_bytes(), other, number, stats, aggregates);
                    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
                }
            }
        }
    }
}
