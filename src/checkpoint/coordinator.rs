//! The checkpoint coordinator: Flink's `CheckpointCoordinator`, shared by every worker of a job.
//!
//! It triggers checkpoint `e` when the interval has passed (in processing time, so virtual time in
//! the simulator), counts the parts that participants — source, keyed-operator and sink instances
//! — write for it, and completes it once every registered participant's part is in the store: only
//! then is the metadata written, and only then may sinks commit. A checkpoint that is not complete
//! after `timeout_ms` fails and the next one may start.
//!
//! Participants that have finished (a source at the end of its input, an operator whose input is
//! done) leave their last part with the coordinator, which adds it to every later checkpoint. When
//! every participant has finished, the coordinator takes the *final* checkpoint, and the sinks
//! commit the last of the output.
//!
//! The coordinator's own state is volatile: a crash loses it, and a new incarnation starts from
//! what the store holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::store::{CheckpointMetadata, CheckpointStore, PartInfo, RestoredCheckpoint};
use crate::error::{Error, Result};
use crate::time::Clock;

/// Which checkpoint a job starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreFrom {
    /// Nothing: a fresh start. New checkpoints get ids above any already in the store.
    Nothing,
    /// The newest complete checkpoint of the newest run that verifies (falling back over damaged
    /// ones), or a fresh start if that run has none. A fresh start records in the store where
    /// its run begins ([`CheckpointStore::begin_run`]), so that a run killed before its first
    /// checkpoint is never restored from the checkpoints of an earlier run.
    Latest,
    /// This checkpoint (or savepoint); an error if it is missing or damaged.
    Checkpoint(u64),
    /// The newest complete checkpoint with an id of at least this, or a fresh start: how a job
    /// restarts after a failure, never going back to checkpoints of an earlier run.
    LatestSince(u64),
}

/// Deliberate bugs, for tests that show the simulator catches them. Never enable them otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Keyed operators apply records of the next epoch at once instead of buffering them until
    /// their snapshot of the current epoch is written.
    pub skip_alignment: bool,
    /// Sinks commit a transaction as soon as they pre-commit it, before the checkpoint completes.
    pub commit_before_complete: bool,
    /// A restored job does not commit the transactions its checkpoint holds as pending.
    pub skip_recommit_on_restore: bool,
    /// Sources restore their offsets from the newest checkpoint that has their part, complete or
    /// not, instead of from the checkpoint everything else restores from.
    pub restore_sources_from_newest: bool,
}

/// How a job checkpoints. Defaults (`CheckpointConfig::new(store)`): every 1 000 ms of processing
/// time, a timeout of 60 000 ms, one checkpoint at a time, the newest 3 kept, a fresh start.
#[derive(Clone)]
pub struct CheckpointConfig {
    /// Where checkpoints are written.
    pub store: Arc<dyn CheckpointStore>,
    /// Processing time between the triggers of two checkpoints.
    pub interval_ms: i64,
    /// A checkpoint not complete this long after its trigger fails.
    pub timeout_ms: i64,
    /// Checkpoints in flight at once; at least 1. One keeps sources at most one epoch ahead of the
    /// last snapshot, which bounds what operators buffer for alignment.
    pub concurrent_max: usize,
    /// Complete checkpoints kept in the store.
    pub retain: usize,
    /// What to start from.
    pub restore: RestoreFrom,
    /// Test-only switches that break exactly-once on purpose.
    pub bugs: PlantedBugs,
    /// Flink's stop-with-savepoint: this long (processing time) after the start, take a savepoint
    /// instead of the next checkpoint, commit its output, and stop the job without draining it
    /// (windows still open stay in the savepoint). `None` (the default): run to the end.
    pub stop_with_savepoint_after_ms: Option<i64>,
}

impl CheckpointConfig {
    /// Checkpoints into `store` with the defaults above.
    pub fn new(store: Arc<dyn CheckpointStore>) -> Self {
        CheckpointConfig {
            store,
            interval_ms: 1_000,
            timeout_ms: 60_000,
            concurrent_max: 1,
            retain: 3,
            restore: RestoreFrom::Nothing,
            bugs: PlantedBugs::default(),
            stop_with_savepoint_after_ms: None,
        }
    }
}

impl std::fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("store", &self.store.location())
            .field("interval_ms", &self.interval_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("concurrent_max", &self.concurrent_max)
            .field("retain", &self.retain)
            .field("restore", &self.restore)
            .field("bugs", &self.bugs)
            .finish()
    }
}

/// How a checkpoint ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointStatus {
    /// Every part and the metadata were written.
    Completed,
    /// It timed out or a part could not be written.
    Failed(String),
}

/// One line of the checkpoint history (Flink's checkpoint statistics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// The checkpoint id (the epoch it closes).
    pub id: u64,
    /// Processing time of the trigger.
    pub trigger_ms: i64,
    /// Processing time when it completed or failed.
    pub end_ms: i64,
    /// Bytes of all its parts.
    pub bytes: u64,
    /// Parts written.
    pub parts: usize,
    /// The longest time an operator instance buffered the next epoch's records (alignment).
    pub alignment_ms_max: i64,
    /// Records buffered for alignment, over all operator instances.
    pub buffered_records: u64,
    /// Approximate bytes buffered for alignment (records × their in-memory size).
    pub buffered_bytes: u64,
    /// Whether this is the final checkpoint, taken when every participant had finished.
    pub last: bool,
    /// How it ended.
    pub status: CheckpointStatus,
}

/// What a participant measured while aligning for a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlignmentStats {
    /// From the first buffered record of the next epoch to the snapshot.
    pub alignment_ms: i64,
    /// Records buffered.
    pub buffered_records: u64,
    /// Approximate bytes buffered.
    pub buffered_bytes: u64,
}

/// The name of the part that worker `worker`'s instance of graph node `node` writes.
pub fn part_name(node: usize, worker: usize) -> String {
    format!("n{node}-w{worker}")
}

/// The coordinator of one run (one incarnation) of a job. See the module documentation.
pub struct Coordinator {
    config: CheckpointConfig,
    job: String,
    peers: usize,
    max_parallelism: u32,
    clock: Arc<dyn Clock>,
    restored: Option<RestoredCheckpoint>,
    newest_parts: BTreeMap<String, Vec<u8>>,
    start_epoch: u64,
    state: Mutex<CoordinatorState>,
}

struct PendingCheckpoint {
    savepoint: bool,
    trigger_ms: i64,
    parts: BTreeMap<String, PartInfo>,
    alignment: AlignmentStats,
}

#[derive(Default)]
struct CoordinatorState {
    participants: BTreeSet<String>,
    workers_built: usize,
    triggered: u64,
    last_trigger_ms: i64,
    pending: BTreeMap<u64, PendingCheckpoint>,
    latest_complete: u64,
    finished_parts: BTreeMap<String, Vec<u8>>,
    job_finished: bool,
    history: Vec<CheckpointRecord>,
    recovered_nodes: BTreeSet<usize>,
    notes: Vec<String>,
    started_ms: i64,
    /// The savepoint triggered to stop the job, and whether it is complete.
    savepoint: Option<(u64, bool)>,
    /// Every sink participant, with the newest epoch it has committed.
    sinks: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("job", &self.job).field("start_epoch", &self.start_epoch).finish()
    }
}

impl Coordinator {
    /// A coordinator for `job` on `peers` workers: finds the checkpoint to restore (saying in
    /// [`notes`](Self::notes) which damaged ones it refused), and discards leftovers of a crashed
    /// run newer than it.
    pub fn new(
        config: CheckpointConfig,
        job: &str,
        peers: usize,
        max_parallelism: u32,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>> {
        if config.interval_ms <= 0 || config.timeout_ms <= 0 || config.concurrent_max == 0 {
            return Err(Error::Usage(
                "checkpoint interval and timeout must be positive, and at least one checkpoint may run".to_string(),
            ));
        }
        let store = &config.store;
        let mut notes = Vec::new();
        // Checkpoints older than the newest run's first belong to an earlier run: its output was
        // emptied when this run started fresh, so their state no longer matches it.
        let run_start = store.run_start().map_err(store_error)?.unwrap_or(0);
        let latest_since = |first: u64| store.latest_since(first.max(run_start)).map_err(store_error);
        let restored = match config.restore {
            RestoreFrom::Nothing => None,
            RestoreFrom::Latest => latest_since(0)?,
            RestoreFrom::LatestSince(first) => latest_since(first)?,
            RestoreFrom::Checkpoint(id) => Some(store.load(id).map_err(store_error)?),
        };
        let newest_id = store.list().map_err(store_error)?.iter().map(|info| info.id).max().unwrap_or(0);
        match &restored {
            None => {
                if config.restore != RestoreFrom::Nothing {
                    notes.push(format!("no complete checkpoint of this run in {}: starting fresh", store.location()));
                }
                // Written before any sink empties its output for the fresh start.
                store.begin_run(newest_id + 1).map_err(store_error)?;
            }
            Some(checkpoint) if checkpoint.metadata.id < run_start => {
                // An explicit restore of an older checkpoint or savepoint continues from there.
                store.begin_run(checkpoint.metadata.id).map_err(store_error)?;
            }
            Some(_) => {}
        }
        let start_epoch = match &restored {
            Some(checkpoint) => {
                for refused in &checkpoint.refused {
                    notes.push(format!("refused {refused}"));
                }
                notes.push(format!(
                    "restoring checkpoint {} from {} (taken with parallelism {})",
                    checkpoint.metadata.id,
                    store.location(),
                    checkpoint.metadata.parallelism
                ));
                if checkpoint.metadata.max_parallelism != max_parallelism {
                    return Err(Error::Usage(format!(
                        "checkpoint {} has {} key groups, the job {}: key groups cannot change",
                        checkpoint.metadata.id, checkpoint.metadata.max_parallelism, max_parallelism
                    )));
                }
                checkpoint.metadata.id + 1
            }
            None => newest_id + 1,
        };
        let mut newest_parts = BTreeMap::new();
        if config.bugs.restore_sources_from_newest
            && let Some(checkpoint) = &restored
        {
            // The planted bug: read whatever the newest attempt wrote, complete or not.
            for id in (checkpoint.metadata.id..=newest_id).rev() {
                for name in checkpoint.parts.keys() {
                    if !newest_parts.contains_key(name)
                        && let Ok(Some(bytes)) = store.read_part_unverified(id, name)
                    {
                        newest_parts.insert(name.clone(), bytes);
                    }
                }
            }
        }
        if let Some(checkpoint) = &restored {
            store.discard_after(checkpoint.metadata.id).map_err(store_error)?;
        }
        let now_ms = clock.now_ms();
        let state =
            CoordinatorState { last_trigger_ms: now_ms, started_ms: now_ms, notes, ..CoordinatorState::default() };
        Ok(Arc::new(Coordinator {
            job: job.to_string(),
            peers,
            max_parallelism,
            clock,
            restored,
            newest_parts,
            start_epoch,
            state: Mutex::new(state),
            config,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, CoordinatorState> {
        self.state.lock().expect("checkpoint coordinator poisoned")
    }

    /// The configuration.
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// The first epoch of this run: one past the restored checkpoint. Sources start their
    /// capability there, and it is the id of this run's first checkpoint.
    pub fn start_epoch(&self) -> u64 {
        self.start_epoch
    }

    /// The checkpoint this run restored, if any.
    pub fn restored(&self) -> Option<&RestoredCheckpoint> {
        self.restored.as_ref()
    }

    /// Every part the restored checkpoint holds for graph node `node`, in worker order: what its
    /// instances restore from (each keeps the key groups it now owns).
    pub fn restored_parts(&self, node: usize) -> Vec<Vec<u8>> {
        self.restored_parts_by_worker(node).into_iter().map(|(_, bytes)| bytes).collect()
    }

    /// Like [`restored_parts`](Self::restored_parts), with the old worker of each part.
    pub fn restored_parts_by_worker(&self, node: usize) -> Vec<(usize, Vec<u8>)> {
        let Some(checkpoint) = &self.restored else {
            return Vec::new();
        };
        let prefix = format!("n{node}-w");
        let mut parts: Vec<(usize, &Vec<u8>)> = checkpoint
            .parts
            .iter()
            .filter_map(|(name, bytes)| name.strip_prefix(&prefix)?.parse().ok().map(|worker| (worker, bytes)))
            .collect();
        parts.sort_by_key(|(worker, _)| *worker);
        parts.into_iter().map(|(worker, bytes)| (worker, bytes.clone())).collect()
    }

    /// The part worker `worker`'s instance of source node `node` restores its position from.
    pub fn restored_source_part(&self, node: usize, worker: usize) -> Option<Vec<u8>> {
        let name = part_name(node, worker);
        if let Some(bytes) = self.newest_parts.get(&name) {
            return Some(bytes.clone());
        }
        self.restored.as_ref()?.parts.get(&name).cloned()
    }

    /// Registers a participant (a part name) while the job is built; every checkpoint waits for
    /// a part from each.
    pub fn register(&self, name: &str) {
        let mut state = self.lock();
        assert!(state.triggered < self.start_epoch, "participant {name} registered after the first trigger");
        state.participants.insert(name.to_string());
    }

    /// Worker `index` has built the job: no checkpoint is triggered before every worker has.
    pub fn worker_built(&self) {
        let mut state = self.lock();
        state.workers_built += 1;
        assert!(state.workers_built <= self.peers, "more workers built than the job has");
    }

    /// Whether the first registering instance of sink node `node` should commit the transactions
    /// the restored checkpoint holds for it (exactly once per run).
    pub fn claim_recovery(&self, node: usize) -> bool {
        self.lock().recovered_nodes.insert(node)
    }

    /// Triggers the next checkpoint if the interval has passed, fewer than `concurrent_max` are in
    /// flight, and every worker has built; fails checkpoints that have timed out. Returns the
    /// highest checkpoint triggered so far (0: none).
    pub fn poll(&self) -> u64 {
        let now_ms = self.clock.now_ms();
        let mut state = self.lock();
        let timed_out: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, pending)| now_ms - pending.trigger_ms >= self.config.timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in timed_out {
            self.fail(&mut state, id, now_ms, format!("not complete after {} ms", self.config.timeout_ms));
        }
        let savepoint_due = state.savepoint.is_none()
            && self.config.stop_with_savepoint_after_ms.is_some_and(|after_ms| now_ms - state.started_ms >= after_ms);
        if state.workers_built == self.peers
            && !state.job_finished
            && state.savepoint.is_none()
            && state.pending.len() < self.config.concurrent_max
            && (savepoint_due || now_ms - state.last_trigger_ms >= self.config.interval_ms)
        {
            let id = self.trigger(&mut state, now_ms, savepoint_due);
            if savepoint_due {
                state.savepoint = Some((id, false));
            }
            state.last_trigger_ms = now_ms;
        }
        state.triggered
    }

    /// The highest checkpoint triggered so far (0: none), without triggering.
    pub fn triggered(&self) -> u64 {
        self.lock().triggered
    }

    /// The newest complete checkpoint (0: none yet in this run).
    pub fn latest_complete(&self) -> u64 {
        self.lock().latest_complete
    }

    /// Participant `name` wrote its part of checkpoint `id`. The last part completes the
    /// checkpoint. A part for a checkpoint that has already failed is dropped.
    pub fn acknowledge(&self, id: u64, name: &str, bytes: &[u8], alignment: AlignmentStats) {
        let mut state = self.lock();
        self.add_part(&mut state, id, name, bytes, alignment);
    }

    /// Participant `name` has finished; `bytes` is its part for this and every later checkpoint.
    /// When every participant has finished, the final checkpoint is taken.
    pub fn finish(&self, name: &str, bytes: &[u8]) {
        let mut state = self.lock();
        assert!(state.participants.contains(name), "unregistered participant {name} finished");
        state.finished_parts.insert(name.to_string(), bytes.to_vec());
        let pending: Vec<u64> = state.pending.keys().copied().collect();
        for id in pending {
            if state.pending.get(&id).is_some_and(|p| !p.parts.contains_key(name)) {
                self.add_part(&mut state, id, name, bytes, AlignmentStats::default());
            }
        }
        if state.finished_parts.len() == state.participants.len() && !state.job_finished {
            state.job_finished = true;
            self.trigger(&mut state, self.clock.now_ms(), false);
        }
    }

    /// Starts the next checkpoint (a savepoint if `savepoint`), with the last parts of every
    /// finished participant already in; returns its id.
    fn trigger(&self, state: &mut CoordinatorState, now_ms: i64, savepoint: bool) -> u64 {
        let id = state.triggered.max(self.start_epoch - 1) + 1;
        state.triggered = id;
        let pending = PendingCheckpoint {
            savepoint,
            trigger_ms: now_ms,
            parts: BTreeMap::new(),
            alignment: AlignmentStats::default(),
        };
        state.pending.insert(id, pending);
        let finished: Vec<(String, Vec<u8>)> =
            state.finished_parts.iter().map(|(name, bytes)| (name.clone(), bytes.clone())).collect();
        for (name, bytes) in finished {
            self.add_part(state, id, &name, &bytes, AlignmentStats::default());
        }
        id
    }

    /// Whether the final checkpoint is complete: every participant finished and its last part
    /// is durable, so the sinks may commit the rest of the output.
    pub fn job_finished(&self) -> bool {
        let state = self.lock();
        state.job_finished && state.pending.is_empty() && state.latest_complete == state.triggered
    }

    /// Registers sink participant `name`: a stop-with-savepoint waits until every sink has
    /// committed the savepoint's output.
    pub fn register_sink(&self, name: &str) {
        self.lock().sinks.insert(name.to_string(), 0);
    }

    /// Sink `name` has committed every transaction up to epoch `epoch`.
    pub fn sink_committed(&self, name: &str, epoch: u64) {
        if let Some(committed) = self.lock().sinks.get_mut(name) {
            *committed = (*committed).max(epoch);
        }
    }

    /// The savepoint the job stops at, once it is complete and every sink has committed its
    /// output: then the job may stop. `None` while it runs on.
    pub fn stopped_at(&self) -> Option<u64> {
        let state = self.lock();
        match state.savepoint {
            Some((id, true)) if state.sinks.values().all(|&committed| committed >= id) => Some(id),
            _ => None,
        }
    }

    /// Every checkpoint of this run, in trigger order.
    pub fn history(&self) -> Vec<CheckpointRecord> {
        self.lock().history.clone()
    }

    /// What the coordinator wants people to know (restored checkpoint, refused damaged ones,
    /// failed checkpoints), in order.
    pub fn notes(&self) -> Vec<String> {
        self.lock().notes.clone()
    }

    fn add_part(&self, state: &mut CoordinatorState, id: u64, name: &str, bytes: &[u8], alignment: AlignmentStats) {
        if !state.pending.contains_key(&id) {
            return;
        }
        assert!(state.participants.contains(name), "unregistered participant {name} acknowledged checkpoint {id}");
        let now_ms = self.clock.now_ms();
        if let Err(error) = self.config.store.write_part(id, name, bytes) {
            self.fail(state, id, now_ms, format!("cannot write part {name}: {error}"));
            return;
        }
        let pending = state.pending.get_mut(&id).expect("checked above");
        let info = PartInfo { name: name.to_string(), len: bytes.len() as u64, crc32: crc32fast::hash(bytes) };
        let first = pending.parts.insert(name.to_string(), info).is_none();
        assert!(first, "participant {name} acknowledged checkpoint {id} twice");
        pending.alignment.alignment_ms = pending.alignment.alignment_ms.max(alignment.alignment_ms);
        pending.alignment.buffered_records += alignment.buffered_records;
        pending.alignment.buffered_bytes += alignment.buffered_bytes;
        if pending.parts.len() == state.participants.len() {
            self.complete(state, id, now_ms);
        }
    }

    fn complete(&self, state: &mut CoordinatorState, id: u64, now_ms: i64) {
        let pending = state.pending.remove(&id).expect("completing a pending checkpoint");
        // A checkpoint completes only after every participant's snapshot exists.
        assert!(
            state.participants.iter().all(|name| pending.parts.contains_key(name)),
            "checkpoint {id} completing without every part"
        );
        let last = state.job_finished && state.pending.is_empty();
        let metadata = CheckpointMetadata {
            id,
            job: self.job.clone(),
            parallelism: self.peers as u32,
            max_parallelism: self.max_parallelism,
            trigger_ms: pending.trigger_ms,
            complete_ms: now_ms,
            savepoint: pending.savepoint,
            finished: last,
            parts: pending.parts.values().cloned().collect(),
        };
        let bytes = metadata.parts.iter().map(|part| part.len).sum();
        let record = |status| CheckpointRecord {
            id,
            trigger_ms: pending.trigger_ms,
            end_ms: now_ms,
            bytes,
            parts: metadata.parts.len(),
            alignment_ms_max: pending.alignment.alignment_ms,
            buffered_records: pending.alignment.buffered_records,
            buffered_bytes: pending.alignment.buffered_bytes,
            last,
            status,
        };
        match self.config.store.complete(&metadata) {
            Ok(()) => {
                assert!(id > state.latest_complete, "checkpoint {id} completes after {}", state.latest_complete);
                state.latest_complete = id;
                state.history.push(record(CheckpointStatus::Completed));
                if pending.savepoint {
                    state.savepoint = Some((id, true));
                    state.notes.push(format!("savepoint {id} complete in {}", self.config.store.location()));
                }
                if let Err(error) = self.config.store.retain(self.config.retain) {
                    state.notes.push(format!("cannot delete old checkpoints: {error}"));
                }
            }
            Err(error) => {
                let reason = format!("cannot write its metadata: {error}");
                state.notes.push(format!("checkpoint {id} failed: {reason}"));
                state.history.push(record(CheckpointStatus::Failed(reason)));
            }
        }
    }

    fn fail(&self, state: &mut CoordinatorState, id: u64, now_ms: i64, reason: String) {
        let Some(pending) = state.pending.remove(&id) else {
            return;
        };
        if pending.savepoint {
            // Try again with the next trigger.
            state.savepoint = None;
        }
        state.notes.push(format!("checkpoint {id} failed: {reason}"));
        state.history.push(CheckpointRecord {
            id,
            trigger_ms: pending.trigger_ms,
            end_ms: now_ms,
            bytes: pending.parts.values().map(|part| part.len).sum(),
            parts: pending.parts.len(),
            alignment_ms_max: pending.alignment.alignment_ms,
            buffered_records: pending.alignment.buffered_records,
            buffered_bytes: pending.alignment.buffered_bytes,
            last: false,
            status: CheckpointStatus::Failed(reason),
        });
    }
}

fn store_error(error: super::store::StoreError) -> Error {
    Error::Runtime(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryStore;
    use crate::time::ManualClock;

    #[test]
    fn a_checkpoint_reports_its_parts_and_alignment_over_every_participant() {
        let clock = Arc::new(ManualClock::new(0));
        let config = CheckpointConfig::new(Arc::new(MemoryStore::new()));
        let coordinator = Coordinator::new(config, "job", 1, 8, clock.clone()).unwrap();
        for name in ["a", "b"] {
            coordinator.register(name);
        }
        coordinator.worker_built();
        clock.advance_ms(1_000);
        let id = coordinator.poll();
        assert_eq!(id, coordinator.start_epoch(), "the interval has passed: the first checkpoint starts");
        let stats = |alignment_ms, buffered_records, buffered_bytes| AlignmentStats {
            alignment_ms,
            buffered_records,
            buffered_bytes,
        };
        coordinator.acknowledge(id, "a", &[1, 2, 3], stats(7, 2, 20));
        assert_eq!(coordinator.latest_complete(), 0, "one part of two is not a checkpoint");
        clock.advance_ms(5);
        coordinator.acknowledge(id, "b", &[4; 5], stats(3, 3, 30));
        assert_eq!(coordinator.latest_complete(), id);
        let record = coordinator.history().pop().expect("the checkpoint is in the history");
        assert_eq!(record.status, CheckpointStatus::Completed);
        assert_eq!((record.trigger_ms, record.end_ms), (1_000, 1_005));
        assert_eq!((record.parts, record.bytes), (2, 8));
        // The longest alignment; records and bytes buffered by all participants together.
        assert_eq!((record.alignment_ms_max, record.buffered_records, record.buffered_bytes), (7, 5, 50));
    }
}
