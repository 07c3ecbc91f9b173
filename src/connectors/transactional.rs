//! Exactly-once sinks: two-phase commit on checkpoints (Flink's `TwoPhaseCommittingSink`).
//!
//! A sink instance writes each epoch's records into that epoch's *transaction*. When its input has
//! passed the epoch, it **pre-commits** the transaction — makes it durable but invisible — and
//! puts the handle [`TransactionWriter::pre_commit`] returns into its part of the checkpoint. Only
//! when the checkpoint is complete does it **commit**: the output becomes visible. A crash before
//! completion loses the transaction with the rest of the epoch, and the replay writes it again; a
//! crash after completion but before the commit is repaired on restore, which commits every
//! transaction the checkpoint holds as pending once more — so commits must be idempotent.
//!
//! A restore may fall back to an older checkpoint (the newest was damaged); output committed after
//! that checkpoint would then be written twice, so [`TwoPhaseCommitSink::recover`] cuts the
//! visible output back to what the restored checkpoint had committed.
//!
//! Without checkpoints a job runs in one epoch, and the sink commits once, at the end of input.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::sinks::LineFormat;
use crate::api::Partitioning;
use crate::error::{Error, Result};
use crate::time::Record;

/// A sink with exactly-once output, shared by all workers. Its commit and recovery are methods of
/// the shared sink, not of an instance's writer: after a crash, whoever restores commits.
pub trait TwoPhaseCommitSink<D>: Send + Sync + 'static {
    /// A name for the job graph.
    fn name(&self) -> String;
    /// Forward: every worker writes its own records; Gather: worker 0 writes them all.
    fn partitioning(&self) -> Partitioning {
        Partitioning::Forward
    }
    /// Opens the writer of instance `instance` of `instances`. Called after any recovery.
    fn open(&self, instance: usize, instances: usize) -> Result<Box<dyn TransactionWriter<D>>>;
    /// Makes a pre-committed transaction visible. It may be called again for a transaction that
    /// is already committed (after a crash): it must then change nothing.
    fn commit(&self, transaction: &[u8]) -> Result<()>;
    /// After a restore, once the pending transactions are committed again: instance `instance`
    /// of the old run had committed up to `last` (its newest committed transaction, `None` if
    /// none); drop any of its visible output beyond that.
    fn recover(&self, instance: usize, last: Option<&[u8]>) -> Result<()>;
    /// A fresh start (no checkpoint restored): discards whatever earlier runs committed, so that
    /// the output holds this run's transactions only. The default cuts instance 0's output back to
    /// nothing, which is all a sink whose output instance 0 alone writes needs.
    fn reset(&self) -> Result<()> {
        self.recover(0, None)
    }
}

/// One instance's writer: it fills one transaction per epoch.
pub trait TransactionWriter<D> {
    /// Writes records into the transaction of `epoch` (epochs only grow).
    fn write(&mut self, epoch: u64, records: &[Record<D>]) -> Result<()>;
    /// The sink's watermark has reached `watermark_ms`. The default does nothing.
    fn on_watermark(&mut self, _watermark_ms: i64) -> Result<()> {
        Ok(())
    }
    /// Makes the transaction of `epoch` durable but not visible, and returns the handle that
    /// [`TwoPhaseCommitSink::commit`] needs. Called once per epoch, in order, even when empty.
    fn pre_commit(&mut self, epoch: u64) -> Result<Vec<u8>>;
    /// State the writer holds outside any transaction (records it keeps back to write them in
    /// order, say), for the checkpoint; taken right after a pre-commit. The default: none.
    fn snapshot(&mut self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    /// Takes back what [`snapshot`](Self::snapshot) returned, from every old instance whose
    /// state this instance inherits. The default accepts only empty states.
    fn restore(&mut self, states: Vec<Vec<u8>>) -> Result<()> {
        if states.iter().any(|state| !state.is_empty()) {
            return Err(Error::Runtime("this sink writer cannot restore state".to_string()));
        }
        Ok(())
    }
}

/// What a sink instance keeps in a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SinkState {
    /// Pre-committed transactions not yet known to be committed, oldest first.
    pub(crate) pending: Vec<(u64, Vec<u8>)>,
    /// The newest committed transaction.
    pub(crate) last_committed: Option<Vec<u8>>,
    /// The writer's own state ([`TransactionWriter::snapshot`]).
    pub(crate) writer: Vec<u8>,
}

/// Committed records by `(instance, epoch)`: a transaction commits at most once.
type CommittedByTransaction<D> = BTreeMap<(usize, u64), Vec<Record<D>>>;

/// Collects committed records in memory: the exactly-once counterpart of
/// [`CollectSink`](super::CollectSink), for tests and the simulator. Clones share the committed
/// output, which therefore survives a simulated crash; uncommitted transactions do not.
#[derive(Debug)]
pub struct TransactionalCollectSink<D> {
    committed: Arc<Mutex<CommittedByTransaction<D>>>,
    retracted: Arc<std::sync::atomic::AtomicU64>,
}

impl<D> Clone for TransactionalCollectSink<D> {
    fn clone(&self) -> Self {
        TransactionalCollectSink { committed: Arc::clone(&self.committed), retracted: Arc::clone(&self.retracted) }
    }
}

impl<D> Default for TransactionalCollectSink<D> {
    fn default() -> Self {
        TransactionalCollectSink { committed: Arc::default(), retracted: Arc::default() }
    }
}

impl<D: Clone> TransactionalCollectSink<D> {
    /// An empty sink. Clones share the committed output.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every committed record, by instance, then epoch, then arrival.
    pub fn records(&self) -> Vec<Record<D>> {
        self.committed.lock().expect("collect sink poisoned").values().flatten().cloned().collect()
    }

    /// The committed values, sorted: the result multiset, comparable across runs.
    pub fn sorted_values(&self) -> Vec<D>
    where
        D: Ord,
    {
        let mut values: Vec<D> = self.records().into_iter().map(|record| record.value).collect();
        values.sort();
        values
    }

    /// How many committed records a recovery took back. Committed output is visible to readers
    /// (a sent coupon cannot be unsent), so exactly-once also means this stays 0; only a restore
    /// that falls back over a damaged checkpoint has to retract.
    pub fn retracted(&self) -> u64 {
        self.retracted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many records each epoch committed, by epoch: when output became visible.
    pub fn records_by_epoch(&self) -> BTreeMap<u64, usize> {
        let mut by_epoch = BTreeMap::new();
        for ((_, epoch), records) in self.committed.lock().expect("collect sink poisoned").iter() {
            *by_epoch.entry(*epoch).or_insert(0) += records.len();
        }
        by_epoch
    }

    /// How many transactions are committed.
    pub fn transactions(&self) -> usize {
        self.committed.lock().expect("collect sink poisoned").len()
    }
}

/// An in-memory transaction: the records travel inside the checkpoint.
#[derive(Serialize, Deserialize)]
struct MemoryTransaction<D> {
    instance: usize,
    epoch: u64,
    records: Vec<Record<D>>,
}

impl<D: crate::api::Data> TwoPhaseCommitSink<D> for TransactionalCollectSink<D> {
    fn name(&self) -> String {
        "collect (exactly once)".to_string()
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn TransactionWriter<D>>> {
        Ok(Box::new(MemoryWriter { instance, open: Vec::new() }))
    }

    fn commit(&self, transaction: &[u8]) -> Result<()> {
        let transaction: MemoryTransaction<D> = bincode::deserialize(transaction)
            .map_err(|e| Error::Runtime(format!("a collect-sink transaction does not decode: {e}")))?;
        let mut committed = self.committed.lock().expect("collect sink poisoned");
        committed.entry((transaction.instance, transaction.epoch)).or_insert(transaction.records);
        Ok(())
    }

    fn recover(&self, instance: usize, last: Option<&[u8]>) -> Result<()> {
        let last_epoch = match last {
            Some(bytes) => Some(
                bincode::deserialize::<MemoryTransaction<D>>(bytes)
                    .map_err(|e| Error::Runtime(format!("a collect-sink transaction does not decode: {e}")))?
                    .epoch,
            ),
            None => None,
        };
        let mut committed = self.committed.lock().expect("collect sink poisoned");
        let mut retracted = 0;
        committed.retain(|(owner, epoch), records| {
            let keep = *owner != instance || last_epoch.is_some_and(|last| *epoch <= last);
            retracted += if keep { 0 } else { records.len() as u64 };
            keep
        });
        self.retracted.fetch_add(retracted, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn reset(&self) -> Result<()> {
        let mut committed = self.committed.lock().expect("collect sink poisoned");
        let retracted: u64 = committed.values().map(|records| records.len() as u64).sum();
        self.retracted.fetch_add(retracted, std::sync::atomic::Ordering::Relaxed);
        committed.clear();
        Ok(())
    }
}

struct MemoryWriter<D> {
    instance: usize,
    open: Vec<Record<D>>,
}

impl<D: crate::api::Data> TransactionWriter<D> for MemoryWriter<D> {
    fn write(&mut self, _epoch: u64, records: &[Record<D>]) -> Result<()> {
        self.open.extend_from_slice(records);
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<Vec<u8>> {
        let transaction = MemoryTransaction { instance: self.instance, epoch, records: std::mem::take(&mut self.open) };
        bincode::serialize(&transaction).map_err(|e| Error::Runtime(format!("cannot encode a transaction: {e}")))
    }
}

/// Writes lines to one file, exactly once: each epoch's lines go to a staging file
/// (`<output>.staging/epoch-<e>-<instance>`), which pre-commit syncs; commit appends it to the
/// output.
///
/// One writer (worker 0, [`Partitioning::Gather`]) owns the file, so transactions commit in
/// epoch order and each knows the output length before and after it: a commit that finds the
/// output already that long has nothing to do; one that finds it shorter (a crash in the middle
/// of an append) cuts back and appends again. Recovery cuts the output back to the end of the
/// newest committed transaction.
pub struct TransactionalFileSink<D> {
    path: PathBuf,
    format: LineFormat<D>,
}

impl<D> Clone for TransactionalFileSink<D> {
    fn clone(&self) -> Self {
        TransactionalFileSink { path: self.path.clone(), format: Arc::clone(&self.format) }
    }
}

impl<D> TransactionalFileSink<D> {
    /// Writes `format(record)` lines to `path`. A fresh job should start from an empty or missing
    /// file; a restored one continues the file its checkpoint describes.
    pub fn new(path: impl AsRef<Path>, format: impl Fn(&Record<D>) -> String + Send + Sync + 'static) -> Self {
        TransactionalFileSink { path: path.as_ref().to_path_buf(), format: Arc::new(format) }
    }
}

/// A file transaction: where its staged bytes are, and where they go in the output.
#[derive(Serialize, Deserialize)]
struct FileTransaction {
    epoch: u64,
    staging: PathBuf,
    start: u64,
    len: u64,
}

fn decode_file_transaction(bytes: &[u8]) -> Result<FileTransaction> {
    bincode::deserialize(bytes).map_err(|e| Error::Runtime(format!("a file-sink transaction does not decode: {e}")))
}

fn open_output(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("cannot open output", path, e))
}

impl<D: 'static> TwoPhaseCommitSink<D> for TransactionalFileSink<D> {
    fn name(&self) -> String {
        format!("file {} (exactly once)", self.path.display())
    }

    fn partitioning(&self) -> Partitioning {
        Partitioning::Gather
    }

    fn open(&self, instance: usize, _instances: usize) -> Result<Box<dyn TransactionWriter<D>>> {
        Ok(Box::new(FileWriter { staged: StagedFile::open(&self.path, instance)?, format: Arc::clone(&self.format) }))
    }

    fn commit(&self, transaction: &[u8]) -> Result<()> {
        commit_file_transaction(&self.path, transaction)
    }

    fn recover(&self, instance: usize, last: Option<&[u8]>) -> Result<()> {
        recover_file(&self.path, instance, last)
    }
}

/// Commits a [`StagedFile`] transaction to `path`: appends its staged bytes where they belong,
/// unless they are there already. The commit of every file sink.
pub fn commit_file_transaction(path: &Path, transaction: &[u8]) -> Result<()> {
    let transaction = decode_file_transaction(transaction)?;
    let end = transaction.start + transaction.len;
    let mut output = open_output(path)?;
    let len = output.metadata().map_err(|e| Error::io("cannot read", path, e))?.len();
    if len >= end {
        // Committed before (this is a retry after a crash).
        let _ = std::fs::remove_file(&transaction.staging);
        return Ok(());
    }
    if len < transaction.start {
        return Err(Error::Runtime(format!(
            "{}: cannot commit epoch {} at byte {}: the file has only {len} bytes (an earlier transaction is missing)",
            path.display(),
            transaction.epoch,
            transaction.start
        )));
    }
    let mut staged = Vec::with_capacity(transaction.len as usize);
    File::open(&transaction.staging)
        .and_then(|mut file| file.read_to_end(&mut staged))
        .map_err(|e| Error::io("cannot read staged transaction", &transaction.staging, e))?;
    if staged.len() as u64 != transaction.len {
        return Err(Error::Runtime(format!(
            "{}: staged transaction of epoch {} has {} bytes, expected {}",
            transaction.staging.display(),
            transaction.epoch,
            staged.len(),
            transaction.len
        )));
    }
    output.set_len(transaction.start).map_err(|e| Error::io("cannot truncate", path, e))?;
    output.seek(SeekFrom::Start(transaction.start)).map_err(|e| Error::io("cannot seek in", path, e))?;
    output.write_all(&staged).and_then(|_| output.sync_all()).map_err(|e| Error::io("cannot write", path, e))?;
    let _ = std::fs::remove_file(&transaction.staging);
    Ok(())
}

/// Cuts `path` back to the end of `last`, the newest transaction instance 0 committed (to empty
/// with `None`). The recovery of every file sink.
pub fn recover_file(path: &Path, instance: usize, last: Option<&[u8]>) -> Result<()> {
    if instance != 0 {
        return Ok(());
    }
    let end = match last {
        Some(bytes) => {
            let transaction = decode_file_transaction(bytes)?;
            transaction.start + transaction.len
        }
        None => 0,
    };
    let output = open_output(path)?;
    let len = output.metadata().map_err(|e| Error::io("cannot read", path, e))?.len();
    if len > end {
        output.set_len(end).and_then(|_| output.sync_all()).map_err(|e| Error::io("cannot truncate", path, e))?;
    }
    Ok(())
}

struct FileWriter<D> {
    staged: StagedFile,
    format: LineFormat<D>,
}

impl<D> TransactionWriter<D> for FileWriter<D> {
    fn write(&mut self, _epoch: u64, records: &[Record<D>]) -> Result<()> {
        for record in records {
            self.staged.append((self.format)(record).as_bytes());
            self.staged.append(b"\n");
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<Vec<u8>> {
        self.staged.pre_commit(epoch)
    }
}

/// The open transaction of a file sink's writer: bytes that go to the output file when their
/// epoch commits ([`commit_file_transaction`]), staged at `<output>.staging/epoch-<e>-<instance>`.
pub struct StagedFile {
    staging: PathBuf,
    instance: usize,
    open: Vec<u8>,
    next_start: u64,
}

impl StagedFile {
    /// The staging of instance `instance` of a sink writing `path`. Only instance 0 writes the
    /// file; its transactions start where the file (as recovery left it) ends.
    pub fn open(path: &Path, instance: usize) -> Result<Self> {
        let mut name = path.file_name().map(|name| name.to_os_string()).unwrap_or_default();
        name.push(".staging");
        let staging = path.with_file_name(name);
        std::fs::create_dir_all(&staging).map_err(|e| Error::io("cannot create", &staging, e))?;
        let next_start = if instance == 0 {
            open_output(path)?.metadata().map_err(|e| Error::io("cannot read", path, e))?.len()
        } else {
            0
        };
        Ok(StagedFile { staging, instance, open: Vec::new(), next_start })
    }

    /// Whether nothing was ever committed or staged: the file is empty.
    pub fn is_fresh(&self) -> bool {
        self.next_start == 0 && self.open.is_empty()
    }

    /// Adds bytes to the open transaction.
    pub fn append(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
    }

    /// Writes the open transaction to its staging file and syncs it; returns its handle.
    pub fn pre_commit(&mut self, epoch: u64) -> Result<Vec<u8>> {
        // Every instance stages its own file; only instance 0's ever holds bytes.
        let staging = self.staging.join(format!("epoch-{epoch}-{}", self.instance));
        let mut file = File::create(&staging).map_err(|e| Error::io("cannot create", &staging, e))?;
        file.write_all(&self.open).and_then(|_| file.sync_all()).map_err(|e| Error::io("cannot write", &staging, e))?;
        let transaction = FileTransaction { epoch, staging, start: self.next_start, len: self.open.len() as u64 };
        self.next_start += transaction.len;
        self.open.clear();
        bincode::serialize(&transaction).map_err(|e| Error::Runtime(format!("cannot encode a transaction: {e}")))
    }
}
