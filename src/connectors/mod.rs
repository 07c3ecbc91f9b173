//! Sources and sinks: where records enter and leave a job.
//!
//! A [`Source`] is a description, shared by all workers; each worker opens one [`SourceReader`]
//! from it when the job first runs (never while the job is being planned, so `flowlab graph` does no
//! I/O). A reader hands out `(event_time_ms, value)` pairs; the engine, not the reader, assigns
//! watermarks, so every source gets the same per-record watermark semantics.
//!
//! Every reader can say where it is ([`SourceReader::offset`]) and be reopened at such a position:
//! the checkpoint issue stores these offsets and replays from them after a crash.
//!
//! Single-stream sources (a file, a socket, a generated sequence, a collection) are read by
//! instance 0 only, as Flink reads one file split with one reader; the other instances finish at
//! once and so never hold back the watermark. The stream is then spread by `key_by`. That keeps the
//! watermark sequence the input's own, whatever the parallelism.

mod collection;
pub(crate) mod csv;
mod generator;
mod sinks;
mod socket;
mod transactional;

pub use collection::CollectionSource;
pub use csv::{BadLinePolicy, CsvSource, parse_event_line};
pub use generator::{GeneratorConfig, GeneratorSource, generate_events, write_events_csv};
pub use sinks::{CollectSink, CsvSink, StdoutSink};
pub use socket::SocketSource;
pub(crate) use transactional::SinkState;
pub use transactional::{
    StagedFile, TransactionWriter, TransactionalCollectSink, TransactionalFileSink, TwoPhaseCommitSink,
    commit_file_transaction, recover_file,
};

use serde::{Deserialize, Serialize};

use crate::api::{Data, Partitioning};
use crate::error::Result;
use crate::time::Record;

/// The row of flowlab's CSV format: `key,event_time_ms,value`, with the line it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// The key (user id, sensor id, …).
    pub key: String,
    /// An integer payload.
    pub value: i64,
    /// 1-based line number in the input (0 when the event did not come from a file).
    pub line: u64,
}

/// A value that a source of `key,event_time_ms,value` rows (the CSV file, the generator) can build
/// straight from the fields of a row, without an [`Event`] in between: a job that wants its own
/// element type (a compact key, the event time inside the value) gets it with no copy per record.
pub trait FromEventFields: Data {
    /// The value of the row `key,time_ms,value` found on 1-based `line` (0 when not from a file).
    fn from_event_fields(key: &str, time_ms: i64, value: i64, line: u64) -> Self;
}

impl FromEventFields for Event {
    fn from_event_fields(key: &str, _time_ms: i64, value: i64, line: u64) -> Self {
        Event { key: key.to_string(), value, line }
    }
}

impl Event {
    /// Writes the record back as an input line, `key,event_time_ms,value`.
    pub fn to_csv_line(record: &Record<Event>) -> String {
        format!("{},{},{}", record.value.key, record.time_ms, record.value.value)
    }
}

/// What a reader found when asked for records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// It returned records, or may have more at once: ask again.
    More,
    /// Nothing now, but more may come (a quiet socket): ask again later.
    Pending,
    /// No more records, ever.
    Finished,
}

/// A replayable source of timestamped records (Flink's `Source`), shared by all workers.
pub trait Source<D>: Send + Sync + 'static {
    /// A name for the job graph.
    fn name(&self) -> String;
    /// Opens the reader of instance `instance` of `instances`.
    fn open(&self, instance: usize, instances: usize) -> Result<Box<dyn SourceReader<D>>>;
    /// Reopens instance `instance` at `offset` (what [`SourceReader::offset`] said), to replay
    /// from a checkpoint. The default replays only from the start: a source that cannot rewind
    /// (a socket) cannot give exactly-once results after a crash, and says so.
    fn reopen(&self, instance: usize, instances: usize, offset: u64) -> Result<Box<dyn SourceReader<D>>> {
        if offset == 0 {
            return self.open(instance, instances);
        }
        Err(crate::Error::Usage(format!("source {} cannot replay from offset {offset}", self.name())))
    }
    /// Whether only instance 0 produces records (one file, one socket, one sequence). Then
    /// downstream operators see the records in the source's own order and can follow its
    /// watermark record by record. The default, `false`, is always safe.
    fn is_single_stream(&self) -> bool {
        false
    }
}

/// One instance's reader.
pub trait SourceReader<D> {
    /// Appends at most `max_records` `(event_time_ms, value)` pairs to `out`, in input order.
    fn read(&mut self, out: &mut Vec<(i64, D)>, max_records: usize) -> Result<ReadStatus>;
    /// Where the next read starts (a byte offset for files, an index for sequences): reopening at
    /// this offset replays exactly the records not yet returned.
    fn offset(&self) -> u64;
    /// How many bad input lines were skipped (and written to a dead-letter file) so far.
    fn bad_records(&self) -> u64 {
        0
    }
}

/// A reader that has nothing: the instances of a single-stream source other than instance 0.
pub(crate) struct FinishedReader;

impl<D> SourceReader<D> for FinishedReader {
    fn read(&mut self, _out: &mut Vec<(i64, D)>, _max_records: usize) -> Result<ReadStatus> {
        Ok(ReadStatus::Finished)
    }

    fn offset(&self) -> u64 {
        0
    }
}

/// Where records leave the job (Flink's `Sink`), shared by all workers.
pub trait Sink<D>: Send + Sync + 'static {
    /// A name for the job graph.
    fn name(&self) -> String;
    /// Forward: every worker writes its own records; Gather: worker 0 writes them all.
    fn partitioning(&self) -> Partitioning {
        Partitioning::Forward
    }
    /// Opens the writer of instance `instance` of `instances`.
    fn open(&self, instance: usize, instances: usize) -> Result<Box<dyn SinkWriter<D>>>;
}

/// One instance's writer.
pub trait SinkWriter<D> {
    /// Writes a batch of records.
    fn write(&mut self, records: &[Record<D>]) -> Result<()>;
    /// Writes a batch of records the writer may take, leaving `records` empty: a writer that
    /// keeps records (to sort them, say) moves them instead of cloning each. The default writes
    /// them with [`write`](Self::write).
    fn write_owned(&mut self, records: &mut Vec<Record<D>>) -> Result<()> {
        let result = self.write(records);
        records.clear();
        result
    }
    /// The sink's watermark has reached `watermark_ms` (Flink's `SinkWriter.writeWatermark`):
    /// no record with a timely time at or below it will come. Called before `finish` with
    /// `i64::MAX`. The default does nothing.
    fn on_watermark(&mut self, _watermark_ms: i64) -> Result<()> {
        Ok(())
    }
    /// Called once, when no more records will come.
    fn finish(&mut self) -> Result<()>;
}
