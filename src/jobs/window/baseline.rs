//! The plain loop that marks the limit: `flowlab window --engine baseline`.
//!
//! The issue that set flowlab's performance budget asks every report to show flowlab's throughput
//! as a fraction of "the same aggregation written as a plain single-threaded Rust loop", so that a
//! number says how much the dataflow costs rather than how fast the machine is. `flowlab bench`
//! has such a loop for generated events; this is the one for the window job on a CSV file, the job
//! the comparison with Apache Flink is made on.
//!
//! It runs the same job with no dataflow at all: one thread reads the whole file, parses each line
//! with the job's own line parser, keeps one table of counters per open tumbling window (dense,
//! indexed by a key number, recycled once fired), moves the job's own watermark generator after
//! every record and, whenever the watermark passes a window's last millisecond, sorts that
//! window's keys and writes its rows with the job's own row renderer. Sharing the parser, the
//! watermark generator and the renderer makes the difference between the two engines exactly what
//! the dataflow adds: operators, timely's progress tracking, the window operator's state and the
//! sorted sink.
//!
//! It is a measuring stick, not a second engine: tumbling windows only, no allowed lateness, no
//! idleness, one thread, no checkpoints, failing on the first bad line. Anything else is refused
//! with a message. Its output is the engine's byte for byte (tested below on random inputs).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::io::Write;

use super::{Aggregate, RowBounds, Stats, WindowJob, WindowSpec, header, render_row_in_window};
use crate::connectors::BadLinePolicy;
use crate::connectors::csv::{parse_line_fields, trim_line_end};
use crate::error::{Error, Result};
use crate::state::LookupHasher;
use crate::window::window_start_with_offset;

/// What a baseline run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaselineOutcome {
    /// Rows written (window firings).
    pub rows: u64,
    /// Elements too late for every window, as input lines, in input order.
    pub late_lines: Vec<String>,
}

/// One open tumbling window: a row of counters per key number, and the keys it has seen.
struct OpenWindow {
    start: i64,
    stats: Vec<Stats>,
    keys: Vec<u32>,
}

/// The window size of `job`, or why it cannot run on the baseline loop.
fn tumbling_size_ms(job: &WindowJob) -> Result<i64> {
    let reason = match job.window {
        WindowSpec::Tumbling { size_ms } if size_ms <= 0 => {
            return Err(Error::Usage(format!("window size must be positive, not {size_ms} ms")));
        }
        WindowSpec::Tumbling { .. } if job.lateness_ms != 0 => "no allowed lateness",
        WindowSpec::Tumbling { .. } if job.strategy.idle_timeout_ms.is_some() => "no idleness",
        WindowSpec::Tumbling { .. } if !matches!(job.bad_lines, BadLinePolicy::Fail) => "--on-bad-line fail only",
        WindowSpec::Tumbling { size_ms } => return Ok(size_ms),
        _ => "tumbling windows only",
    };
    Err(Error::Usage(format!(
        "--engine baseline runs {reason}: it is the plain loop flowlab is measured against (tumbling windows, no lateness, no idleness, one thread, no checkpoints, failing on bad lines), not a second engine"
    )))
}

/// Runs `job` as one plain loop and writes the rows, sorted as the engine's file sink sorts
/// them, with a header, to `out`.
pub fn run_window_baseline(job: &WindowJob, aggregates: &[Aggregate], out: &mut dyn Write) -> Result<BaselineOutcome> {
    let size_ms = tumbling_size_ms(job)?;
    let data = std::fs::read(&job.input).map_err(|e| Error::io("cannot read input", &job.input, e))?;
    let file_name = job.input.display().to_string();
    let write_error = |e| Error::io("cannot write output", "the baseline's output", e);
    out.write_all(header(aggregates).as_bytes()).map_err(write_error)?;

    let mut key_ids: HashMap<&str, u32, BuildHasherDefault<LookupHasher>> = HashMap::default();
    let mut names: Vec<&str> = Vec::new();
    // Oldest first; elements come nearly in order, so a new window is almost always the last.
    let mut open: VecDeque<OpenWindow> = VecDeque::new();
    let mut recycled: Vec<OpenWindow> = Vec::new();
    let mut generator = job.strategy.generator();
    let mut watermark_ms = generator.current_watermark();
    let mut outcome = BaselineOutcome { rows: 0, late_lines: Vec::new() };
    let mut text: Vec<u8> = Vec::with_capacity(1 << 16);
    // The last millisecond of the window starting at `start`: it fires when the watermark gets there.
    let max_timestamp = |start: i64| start.saturating_add(size_ms) - 1;

    let mut lines = data.split(|&byte| byte == b'\n').peekable();
    let mut line_number = 0u64;
    while let Some(raw) = lines.next() {
        if raw.is_empty() && lines.peek().is_none() {
            // The file's last line end, not a line.
            break;
        }
        line_number += 1;
        let line = trim_line_end(raw);
        let Some((key, time_ms, value)) = parse_line_fields(line, line_number).map_err(|reason| Error::BadLine {
            file: file_name.clone(),
            line: line_number,
            reason,
        })?
        else {
            continue; // the header
        };
        let start = window_start_with_offset(time_ms, job.offset_ms, size_ms);
        if max_timestamp(start) <= watermark_ms {
            // Too late for its only window: the record carries the watermark before it. Its line
            // as the engine gives it back (read again by lines, every trailing `\r` trimmed).
            outcome.late_lines.push(String::from_utf8_lossy(line).trim_end_matches('\r').to_string());
        } else {
            let next_id = u32::try_from(names.len()).expect("fewer than 2^32 keys");
            let id = *key_ids.entry(key).or_insert_with(|| {
                names.push(key);
                next_id
            });
            let at = match open.iter().rposition(|window| window.start <= start) {
                Some(at) if open[at].start == start => at,
                before => {
                    let mut window =
                        recycled.pop().unwrap_or(OpenWindow { start, stats: Vec::new(), keys: Vec::new() });
                    window.start = start;
                    let at = before.map_or(0, |at| at + 1);
                    open.insert(at, window);
                    at
                }
            };
            let window = &mut open[at];
            if window.stats.len() <= id as usize {
                window.stats.resize(names.len(), Stats::EMPTY);
            }
            let stats = &mut window.stats[id as usize];
            if stats.count == 0 {
                window.keys.push(id);
            }
            stats.add(time_ms, value);
        }
        generator.on_event(time_ms);
        let next_ms = generator.current_watermark();
        assert!(next_ms >= watermark_ms, "watermarks never regress");
        watermark_ms = next_ms;
        while open.front().is_some_and(|window| max_timestamp(window.start) <= watermark_ms) {
            let window = open.pop_front().expect("looked at");
            recycled.push(fire(window, size_ms, &names, aggregates, &mut text, &mut outcome.rows));
            out.write_all(&text).map_err(write_error)?;
            text.clear();
        }
    }
    // The end of the input is the final watermark: every window still open fires.
    while let Some(window) = open.pop_front() {
        fire(window, size_ms, &names, aggregates, &mut text, &mut outcome.rows);
        out.write_all(&text).map_err(write_error)?;
        text.clear();
    }
    out.flush().map_err(write_error)?;
    Ok(outcome)
}

/// Renders the rows of `window` into `text`, sorted by key, and returns it emptied for reuse.
fn fire(
    mut window: OpenWindow,
    size_ms: i64,
    names: &[&str],
    aggregates: &[Aggregate],
    text: &mut Vec<u8>,
    rows: &mut u64,
) -> OpenWindow {
    // Sorted by a key's first 16 bytes as one number, then in full where those are equal: the
    // byte order of the keys, with integer compares for most pairs.
    let prefix = |id: u32| {
        let mut bytes = [0u8; 16];
        let key = names[id as usize].as_bytes();
        let length = key.len().min(16);
        bytes[..length].copy_from_slice(&key[..length]);
        u128::from_be_bytes(bytes)
    };
    let mut order: Vec<(u128, u32)> = window.keys.iter().map(|&id| (prefix(id), id)).collect();
    order.sort_unstable();
    // Keys longer than 16 bytes may share their prefix: such runs go in full key order.
    let mut at = 0;
    while at < order.len() {
        let run = order[at..].iter().take_while(|(prefix, _)| *prefix == order[at].0).count();
        if run > 1 {
            order[at..at + run].sort_unstable_by(|a, b| names[a.1 as usize].cmp(names[b.1 as usize]));
        }
        at += run;
    }
    let bounds = RowBounds::new(window.start, window.start.saturating_add(size_ms));
    for (_, id) in order {
        let stats = std::mem::replace(&mut window.stats[id as usize], Stats::EMPTY);
        render_row_in_window(text, names[id as usize].as_bytes(), &bounds, stats, aggregates);
        *rows += 1;
    }
    window.keys.clear();
    window
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::window::run_window_to_file;
    use crate::runtime::JobConfig;
    use crate::time::WatermarkStrategy;
    use proptest::prelude::*;

    fn job(input: &std::path::Path, size_ms: i64, offset_ms: i64, strategy: WatermarkStrategy) -> WindowJob {
        WindowJob {
            input: input.to_path_buf(),
            window: WindowSpec::Tumbling { size_ms },
            strategy,
            lateness_ms: 0,
            offset_ms,
            bad_lines: BadLinePolicy::Fail,
        }
    }

    /// Lines `key,time,value` with times that drift up with disorder (some far behind: late),
    /// negative times, keys that share long prefixes, an optional header and CRLF line ends.
    fn csv_input() -> impl Strategy<Value = String> {
        let line = (0usize..6, -400i64..600, -50i64..50, 0u8..10);
        (proptest::collection::vec(line, 0..120), any::<bool>(), any::<bool>()).prop_map(|(lines, header, crlf)| {
            let keys = ["a", "b", "k1", "k10", "prefix-shared-by-many-keys-1", "prefix-shared-by-many-keys-2"];
            let end = if crlf { "\r\n" } else { "\n" };
            let mut text = if header { format!("key,event_time_ms,value{end}") } else { String::new() };
            for (index, (key, jitter, value, straggler)) in lines.into_iter().enumerate() {
                // Mostly ascending with jitter; one in ten far behind.
                let behind = if straggler == 0 { 700 } else { 0 };
                let time = index as i64 * 20 + jitter - behind;
                text.push_str(&format!("{},{time},{value}{end}", keys[key]));
            }
            text
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// The baseline writes the engine's file byte for byte, and finds the same late lines,
        /// for any tumbling size, offset, watermark and choice of aggregates.
        #[test]
        fn the_baseline_writes_what_the_engine_writes(
            input in csv_input(),
            size_ms in 1i64..400,
            offset_ms in -300i64..300,
            bound_ms in prop::option::of(0i64..300),
            aggregates in prop::sample::subsequence(vec![Aggregate::Count, Aggregate::Sum, Aggregate::Min, Aggregate::Max], 1..=4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let input_path = dir.path().join("in.csv");
            std::fs::write(&input_path, &input).unwrap();
            let strategy = bound_ms.map_or_else(WatermarkStrategy::monotonous, WatermarkStrategy::bounded);
            let job = job(&input_path, size_ms, offset_ms % size_ms, strategy);
            let engine_path = dir.path().join("engine.csv");
            let (engine_rows, engine_late, _) =
                run_window_to_file(&job, &JobConfig::threads("engine", 1), &engine_path, &aggregates).unwrap();
            let mut baseline_bytes = Vec::new();
            let outcome = run_window_baseline(&job, &aggregates, &mut baseline_bytes).unwrap();
            prop_assert_eq!(String::from_utf8(baseline_bytes).unwrap(), std::fs::read_to_string(&engine_path).unwrap());
            prop_assert_eq!(outcome.rows, engine_rows);
            prop_assert_eq!(outcome.late_lines, engine_late);
        }
    }

    #[test]
    fn what_the_baseline_does_not_run_is_refused_with_a_reason() {
        let path = std::path::Path::new("unused.csv");
        let mut sliding = job(path, 10, 0, WatermarkStrategy::bounded(0));
        sliding.window = WindowSpec::Sliding { size_ms: 10, slide_ms: 5 };
        let mut late = job(path, 10, 0, WatermarkStrategy::bounded(0));
        late.lateness_ms = 5;
        let mut skipping = job(path, 10, 0, WatermarkStrategy::bounded(0));
        skipping.bad_lines = BadLinePolicy::Skip { dead_letter: "dead.csv".into() };
        for (job, reason) in [(sliding, "tumbling"), (late, "lateness"), (skipping, "bad-line")] {
            let error = run_window_baseline(&job, &[Aggregate::Count], &mut Vec::new()).unwrap_err().to_string();
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn a_bad_line_fails_the_run_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        std::fs::write(&input, "a,1,1\nb,two,2\n").unwrap();
        let error = run_window_baseline(
            &job(&input, 10, 0, WatermarkStrategy::bounded(0)),
            &[Aggregate::Count],
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(matches!(error, Error::BadLine { line: 2, .. }), "{error}");
    }
}
