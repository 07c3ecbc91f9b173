//! The CSV file source: lines `key,event_time_ms,value`, header optional, replayable by byte offset.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use super::{Event, FinishedReader, FromEventFields, ReadStatus, Source, SourceReader};
use crate::error::{Error, Result};

/// What to do with a line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadLinePolicy {
    /// Stop the job with an error naming the file, line and reason (the default).
    Fail,
    /// Write the line, unchanged, to this dead-letter file, count it, and go on.
    Skip {
        /// The dead-letter file (created or truncated when the source opens).
        dead_letter: PathBuf,
    },
}

/// Reads `key,event_time_ms,value` lines from one file, in file order, with one reader, into rows
/// of `R` (an [`Event`] by default; any [`FromEventFields`] type with [`CsvSource::of_rows`]).
pub struct CsvSource<R = Event> {
    path: PathBuf,
    policy: BadLinePolicy,
    start_offset: u64,
    start_line: u64,
    rows: PhantomData<fn() -> R>,
}

impl<R> Clone for CsvSource<R> {
    fn clone(&self) -> Self {
        CsvSource {
            path: self.path.clone(),
            policy: self.policy.clone(),
            start_offset: self.start_offset,
            start_line: self.start_line,
            rows: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for CsvSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("path", &self.path)
            .field("policy", &self.policy)
            .field("start_offset", &self.start_offset)
            .field("start_line", &self.start_line)
            .finish()
    }
}

impl CsvSource {
    /// Reads `path` from its start into [`Event`]s; a bad line fails the job.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self::of_rows(path)
    }
}

impl<R: FromEventFields> CsvSource<R> {
    /// Reads `path` from its start into rows of `R`, built straight from each line's fields; a bad
    /// line fails the job.
    pub fn of_rows(path: impl AsRef<Path>) -> Self {
        CsvSource {
            path: path.as_ref().to_path_buf(),
            policy: BadLinePolicy::Fail,
            start_offset: 0,
            start_line: 0,
            rows: PhantomData,
        }
    }

    /// Sets what happens to bad lines.
    pub fn on_bad_line(mut self, policy: BadLinePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Starts at `byte_offset`, which must be the start of a line, as a reader's
    /// [`offset`](SourceReader::offset) is; `lines_before` is how many lines precede it, so that
    /// errors still name the right line.
    pub fn resume_at(mut self, byte_offset: u64, lines_before: u64) -> Self {
        self.start_offset = byte_offset;
        self.start_line = lines_before;
        self
    }
}

impl<R: FromEventFields> Source<R> for CsvSource<R> {
    fn is_single_stream(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("csv {}", self.path.display())
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SourceReader<R>>> {
        self.open_at(instance, self.start_offset, self.start_line, false)
    }

    fn reopen(&self, instance: usize, _instances: usize, offset: u64) -> Result<Box<dyn SourceReader<R>>> {
        // Line numbers name bad lines and travel with events: count them up to the offset again
        // rather than trusting a second number in the checkpoint.
        let file = File::open(&self.path).map_err(|e| Error::io("cannot open input", &self.path, e))?;
        let mut lines = 0u64;
        let mut prefix = BufReader::new(file).take(offset);
        let mut chunk = [0u8; 1 << 16];
        loop {
            let n = prefix.read(&mut chunk).map_err(|e| Error::io("cannot read input", &self.path, e))?;
            if n == 0 {
                break;
            }
            lines += chunk[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.open_at(instance, offset, lines, true)
    }
}

impl<R: FromEventFields> CsvSource<R> {
    fn open_at(
        &self,
        instance: usize,
        start_offset: u64,
        start_line: u64,
        resumed: bool,
    ) -> Result<Box<dyn SourceReader<R>>> {
        if instance != 0 {
            return Ok(Box::new(FinishedReader));
        }
        let mut file = File::open(&self.path).map_err(|e| Error::io("cannot open input", &self.path, e))?;
        file.seek(SeekFrom::Start(start_offset)).map_err(|e| Error::io("cannot seek in input", &self.path, e))?;
        let dead_letter = match &self.policy {
            BadLinePolicy::Fail => None,
            BadLinePolicy::Skip { dead_letter } => {
                // A resumed reader keeps the lines an earlier run already set aside.
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(resumed)
                    .truncate(!resumed)
                    .open(dead_letter)
                    .map_err(|e| Error::io("cannot create dead-letter file", dead_letter, e))?;
                Some((BufWriter::new(out), dead_letter.clone()))
            }
        };
        Ok(Box::new(CsvReader {
            input: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            partial: Vec::with_capacity(128),
            lines: Lines {
                file_name: self.path.display().to_string(),
                offset: start_offset,
                line: start_line,
                dead_letter,
                bad_records: 0,
            },
            rows: PhantomData,
        }))
    }
}

/// How much of the file one read system call fetches.
const READ_BUFFER_BYTES: usize = 1 << 18;

struct CsvReader<R> {
    input: BufReader<File>,
    /// The start of a line that the read buffer cut off; completed by the next refill.
    partial: Vec<u8>,
    lines: Lines,
    rows: PhantomData<fn() -> R>,
}

/// Where the reader is, and what it does with each line.
struct Lines {
    file_name: String,
    offset: u64,
    line: u64,
    dead_letter: Option<(BufWriter<File>, PathBuf)>,
    bad_records: u64,
}

impl Lines {
    /// Takes one line (with its line end, if any): appends its row to `out`, or sets a bad line
    /// aside (or fails). Returns how many rows it appended.
    fn take<R: FromEventFields>(&mut self, raw: &[u8], out: &mut Vec<(i64, R)>) -> Result<usize> {
        self.offset += raw.len() as u64;
        self.line += 1;
        let line = trim_line_end(raw);
        match parse_line_fields(line, self.line) {
            Ok(Some((key, time_ms, value))) => {
                out.push((time_ms, R::from_event_fields(key, time_ms, value, self.line)));
                Ok(1)
            }
            Ok(None) => Ok(0), // the header
            Err(reason) => self.skip_or_fail(line, reason).map(|()| 0),
        }
    }

    fn skip_or_fail(&mut self, line: &[u8], reason: String) -> Result<()> {
        let Some((out, path)) = self.dead_letter.as_mut() else {
            return Err(Error::BadLine { file: self.file_name.clone(), line: self.line, reason });
        };
        out.write_all(line)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| Error::io("cannot write dead-letter file", path.as_path(), e))?;
        self.bad_records += 1;
        Ok(())
    }
}

/// `line` without its line end (`\n` or `\r\n`).
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The fast path of [`parse_event_line`]: a line `key,time,value` whose key is ASCII with nothing
/// to trim and whose numbers are plain (an optional sign and at most 18 digits). Anything else —
/// headers, spaces, other text, errors — is `None`, for `parse_event_line` to decide, so both paths
/// accept exactly the same lines with the same values.
fn parse_plain_line(line: &[u8]) -> Option<(&str, i64, i64)> {
    let first = line.iter().position(|&b| b == b',')?;
    let (key, rest) = (&line[..first], &line[first + 1..]);
    let second = rest.iter().position(|&b| b == b',')?;
    let (time, value) = (&rest[..second], &rest[second + 1..]);
    // Bytes up to the space are whitespace or control characters: let the slow path trim them.
    let plain = |b: &u8| *b > b' ' && b.is_ascii();
    if !key.first().is_some_and(plain) || !key.last().is_some_and(plain) || !key.is_ascii() {
        return None;
    }
    let time_ms = parse_plain_integer(time)?;
    let value = parse_plain_integer(value)?; // a third comma makes this fail too
    Some((std::str::from_utf8(key).ok()?, time_ms, value))
}

/// [`parse_plain_line`] of the line at the start of `bytes`, found and parsed in one pass over
/// its bytes: the fields and the line's length with its line end. `None` whenever
/// `parse_plain_line` would be (and more: a line without its line end in `bytes`, a key with
/// bytes beyond ASCII), for the general path to take the line.
// Inlined: returned through memory, its fields were read back before the stores had landed.
#[inline(always)]
fn parse_plain_line_at(bytes: &[u8]) -> Option<((&str, i64, i64), usize)> {
    let key_length = bytes.iter().take_while(|&&b| b != b',' && b != b'\n' && b.is_ascii()).count();
    let key = &bytes[..key_length];
    let plain = |b: &u8| *b > b' ';
    if bytes.get(key_length) != Some(&b',') || !key.first().is_some_and(plain) || !key.last().is_some_and(plain) {
        return None;
    }
    let (time_ms, after_time) = parse_plain_integer_at(bytes, key_length + 1)?;
    if bytes.get(after_time) != Some(&b',') {
        return None;
    }
    let (value, after_value) = parse_plain_integer_at(bytes, after_time + 1)?;
    let length = match bytes.get(after_value..after_value + 2) {
        Some([b'\n', _]) => after_value + 1,
        Some(b"\r\n") => after_value + 2,
        // A lone `\r`, other bytes, or a line end not in `bytes` yet.
        _ if bytes.get(after_value) == Some(&b'\n') => after_value + 1,
        _ => return None,
    };
    // ASCII, so this cannot fail.
    Some(((std::str::from_utf8(key).ok()?, time_ms, value), length))
}

/// [`parse_plain_integer`] of the digits at `bytes[start..]`, up to the first byte that is not a
/// digit: the number and where it ends.
fn parse_plain_integer_at(bytes: &[u8], start: usize) -> Option<(i64, usize)> {
    let (negative, first_digit) = match bytes.get(start)? {
        b'-' => (true, start + 1),
        b'+' => (false, start + 1),
        _ => (false, start),
    };
    let mut number: i64 = 0;
    let mut at = first_digit;
    while let Some(&digit) = bytes.get(at)
        && digit.is_ascii_digit()
    {
        // 18 digits cannot overflow an i64; longer numbers take the general path.
        if at - first_digit == 18 {
            return None;
        }
        number = number * 10 + i64::from(digit - b'0');
        at += 1;
    }
    if at == first_digit {
        return None;
    }
    Some((if negative { -number } else { number }, at))
}

fn parse_plain_integer(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // 18 digits cannot overflow an i64; longer numbers take the slow path.
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut number: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        number = number * 10 + i64::from(digit - b'0');
    }
    Some(if negative { -number } else { number })
}

impl<R: FromEventFields> SourceReader<R> for CsvReader<R> {
    fn read(&mut self, out: &mut Vec<(i64, R)>, max_records: usize) -> Result<ReadStatus> {
        let mut produced = 0;
        while produced < max_records {
            let buffer = self.input.fill_buf().map_err(|e| Error::io("cannot read input", &self.lines.file_name, e))?;
            if buffer.is_empty() {
                // The last line may have no line end.
                if !self.partial.is_empty() {
                    let last = std::mem::take(&mut self.partial);
                    self.lines.take(&last, out)?;
                }
                if let Some((out, path)) = self.lines.dead_letter.as_mut() {
                    out.flush().map_err(|e| Error::io("cannot write dead-letter file", path.as_path(), e))?;
                }
                return Ok(ReadStatus::Finished);
            }
            let mut consumed = 0;
            while produced < max_records {
                let rest = &buffer[consumed..];
                if self.partial.is_empty()
                    && let Some(((key, time_ms, value), length)) = parse_plain_line_at(rest)
                {
                    // What `Lines::take` does with a plain line, found and parsed in one pass.
                    self.lines.offset += length as u64;
                    self.lines.line += 1;
                    out.push((time_ms, R::from_event_fields(key, time_ms, value, self.lines.line)));
                    produced += 1;
                    consumed += length;
                    continue;
                }
                let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                    // A line cut off by the end of the buffer: keep its start for the next refill.
                    self.partial.extend_from_slice(rest);
                    consumed = buffer.len();
                    break;
                };
                if self.partial.is_empty() {
                    produced += self.lines.take(&rest[..=end], out)?;
                } else {
                    self.partial.extend_from_slice(&rest[..=end]);
                    produced += self.lines.take(&self.partial, out)?;
                    self.partial.clear();
                }
                consumed += end + 1;
            }
            self.input.consume(consumed);
        }
        Ok(ReadStatus::More)
    }

    fn offset(&self) -> u64 {
        // Between reads no line is cut off: a read returns only after a whole line.
        self.lines.offset
    }

    fn bad_records(&self) -> u64 {
        self.lines.bad_records
    }
}

/// Parses one line `key,event_time_ms,value` (numbered `line`, from 1).
///
/// Returns `Ok(None)` for a header: line 1 whose time and value fields are both not integers.
/// Otherwise a reason people can act on.
pub fn parse_event_line(text: &str, line: u64) -> std::result::Result<Option<(i64, Event)>, String> {
    Ok(parse_text_fields(text, line)?
        .map(|(key, time_ms, value)| (time_ms, Event { key: key.to_string(), value, line })))
}

/// One line without its line end, numbered `number` (from 1): its fields `(key, time, value)`,
/// `None` for a header, or why it is not a line of events — what [`parse_event_line`] says, without
/// an allocation for the common line.
pub(crate) fn parse_line_fields(line: &[u8], number: u64) -> std::result::Result<Option<(&str, i64, i64)>, String> {
    // The common line needs no UTF-8 check, no trimming and no `String` per field.
    if let Some(fields) = parse_plain_line(line) {
        return Ok(Some(fields));
    }
    let text = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8".to_string())?;
    parse_text_fields(text, number)
}

/// The general path of [`parse_line_fields`]: the fields of a line of text, trimmed.
fn parse_text_fields(text: &str, line: u64) -> std::result::Result<Option<(&str, i64, i64)>, String> {
    let mut fields = text.split(',');
    let (Some(key), Some(time), Some(value), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        let count = text.split(',').count();
        return Err(format!("expected 3 comma-separated fields `key,event_time_ms,value`, found {count}"));
    };
    let time_ms = time.trim().parse::<i64>();
    let amount = value.trim().parse::<i64>();
    if line == 1 && time_ms.is_err() && amount.is_err() {
        return Ok(None);
    }
    let key = key.trim();
    if key.is_empty() {
        return Err("the key (field 1) is empty".to_string());
    }
    let time_ms =
        time_ms.map_err(|_| format!("event_time_ms (field 2) {time:?} is not an integer number of milliseconds"))?;
    let amount = amount.map_err(|_| format!("value (field 3) {value:?} is not an integer"))?;
    Ok(Some((key, time_ms, amount)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_headers_are_recognised() {
        assert_eq!(parse_event_line("key,event_time_ms,value", 1), Ok(None));
        assert_eq!(parse_event_line("k1,-5,7", 3), Ok(Some((-5, Event { key: "k1".to_string(), value: 7, line: 3 }))));
        assert!(parse_event_line("key,event_time_ms,value", 2).unwrap_err().contains("field 2"));
        assert!(parse_event_line("k1,5", 2).unwrap_err().contains("found 2"));
        assert!(parse_event_line("k1,5,x", 1).unwrap_err().contains("field 3"));
        assert!(parse_event_line(",5,1", 2).unwrap_err().contains("empty"));
    }

    /// The fast path takes a line only when `parse_event_line` would, with the same values.
    /// Lines at the edges of the plain fast paths: signs, spaces, non-ASCII keys, missing and
    /// extra fields, the largest numbers, a header.
    const EDGE_LINES: [&str; 14] = [
        "k1,-5,7",
        "k1,+5,7",
        "k1, 5,7",
        " k1,5,7",
        "k1 ,5,7",
        "ké,5,7",
        "k1,5,7,8",
        "k1,5,",
        "k1,,7",
        ",5,7",
        "k1,-,7",
        "k1,9223372036854775807,1",
        "k1,123456789012345678,-123456789012345678",
        "key,event_time_ms,value",
    ];

    #[test]
    fn the_fast_path_agrees_with_the_full_parser() {
        for line in EDGE_LINES.into_iter().chain(["k\u{b}1\u{b},5,7", "\u{b}k1,5,7"]) {
            let full = parse_event_line(line, 2).ok().flatten();
            if let Some((key, time_ms, value)) = parse_plain_line(line.as_bytes()) {
                let event = Event { key: key.to_string(), value, line: 2 };
                assert_eq!(Some((time_ms, event)), full, "{line:?}");
            }
        }
        assert!(parse_plain_line(b"k1,-5,7").is_some());
    }

    /// The one-pass parser takes a line only when `parse_plain_line` takes it without its line
    /// end, with the same fields, and says how long the line is.
    #[test]
    fn the_one_pass_parser_agrees_with_the_plain_one() {
        let more = ["k1,1234567890123456789,1", "k1,5,7\r", "k1,5,7\r\r", "k\n1,5,7", "k1,5\n,7"];
        for line in EDGE_LINES.into_iter().chain(more) {
            for end in ["\n", "\r\n", "", "\nk2,1,2\n"] {
                let text = format!("{line}{end}");
                let Some((fields, length)) = parse_plain_line_at(text.as_bytes()) else { continue };
                let taken = &text.as_bytes()[..length];
                assert!(taken.ends_with(b"\n"), "{text:?}");
                assert_eq!(Some(fields), parse_plain_line(trim_line_end(taken)), "{text:?}");
            }
        }
        assert_eq!(parse_plain_line_at(b"k1,-5,7\r\nk2"), Some((("k1", -5, 7), 9)));
        assert_eq!(parse_plain_line_at(b"k1,-5,7"), None);
    }
}
