//! The CSV file source: lines `key,event_time_ms,value`, header optional, replayable by byte offset.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Event, FinishedReader, ReadStatus, Source, SourceReader};
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

/// Reads `key,event_time_ms,value` lines from one file, in file order, with one reader.
#[derive(Clone, Debug)]
pub struct CsvSource {
    path: PathBuf,
    policy: BadLinePolicy,
    start_offset: u64,
    start_line: u64,
}

impl CsvSource {
    /// Reads `path` from its start; a bad line fails the job.
    pub fn new(path: impl AsRef<Path>) -> Self {
        CsvSource { path: path.as_ref().to_path_buf(), policy: BadLinePolicy::Fail, start_offset: 0, start_line: 0 }
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

impl Source<Event> for CsvSource {
    fn is_single_stream(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("csv {}", self.path.display())
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn SourceReader<Event>>> {
        self.open_at(instance, self.start_offset, self.start_line, false)
    }

    fn reopen(&self, instance: usize, _instances: usize, offset: u64) -> Result<Box<dyn SourceReader<Event>>> {
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

impl CsvSource {
    fn open_at(
        &self,
        instance: usize,
        start_offset: u64,
        start_line: u64,
        resumed: bool,
    ) -> Result<Box<dyn SourceReader<Event>>> {
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
            file_name: self.path.display().to_string(),
            input: BufReader::with_capacity(1 << 16, file),
            offset: start_offset,
            line: start_line,
            buffer: Vec::with_capacity(128),
            dead_letter,
            bad_records: 0,
        }))
    }
}

struct CsvReader {
    file_name: String,
    input: BufReader<File>,
    offset: u64,
    line: u64,
    buffer: Vec<u8>,
    dead_letter: Option<(BufWriter<File>, PathBuf)>,
    bad_records: u64,
}

impl CsvReader {
    fn skip_or_fail(&mut self, reason: String) -> Result<()> {
        let Some((out, path)) = self.dead_letter.as_mut() else {
            return Err(Error::BadLine { file: self.file_name.clone(), line: self.line, reason });
        };
        let line = trim_line_end(&self.buffer);
        out.write_all(line)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| Error::io("cannot write dead-letter file", path.as_path(), e))?;
        self.bad_records += 1;
        Ok(())
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl SourceReader<Event> for CsvReader {
    fn read(&mut self, out: &mut Vec<(i64, Event)>, max_records: usize) -> Result<ReadStatus> {
        let mut produced = 0;
        while produced < max_records {
            self.buffer.clear();
            let read = self
                .input
                .read_until(b'\n', &mut self.buffer)
                .map_err(|e| Error::io("cannot read input", &self.file_name, e))?;
            if read == 0 {
                if let Some((out, path)) = self.dead_letter.as_mut() {
                    out.flush().map_err(|e| Error::io("cannot write dead-letter file", path.as_path(), e))?;
                }
                return Ok(ReadStatus::Finished);
            }
            self.offset += read as u64;
            self.line += 1;
            let parsed = std::str::from_utf8(trim_line_end(&self.buffer))
                .map_err(|_| "the line is not UTF-8".to_string())
                .and_then(|text| parse_event_line(text, self.line));
            match parsed {
                Ok(Some((time_ms, event))) => {
                    out.push((time_ms, event));
                    produced += 1;
                }
                Ok(None) => {} // the header
                Err(reason) => self.skip_or_fail(reason)?,
            }
        }
        Ok(ReadStatus::More)
    }

    fn offset(&self) -> u64 {
        self.offset
    }

    fn bad_records(&self) -> u64 {
        self.bad_records
    }
}

/// Parses one line `key,event_time_ms,value` (numbered `line`, from 1).
///
/// Returns `Ok(None)` for a header: line 1 whose time and value fields are both not integers.
/// Otherwise a reason people can act on.
pub fn parse_event_line(text: &str, line: u64) -> std::result::Result<Option<(i64, Event)>, String> {
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
    Ok(Some((time_ms, Event { key: key.to_string(), value: amount, line })))
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
}
