//! Checkpoints: consistent snapshots of a running job, and recovery from them.
//!
//! # Barriers are epochs
//!
//! Flink takes a consistent snapshot of a running job (Chandy–Lamport, with aligned barriers): the
//! sources inject a barrier into their output, every operator snapshots its state once the barrier
//! has arrived on all its inputs — holding back the inputs where it arrived early — and forwards
//! it. flowlab has no barriers in the data: a record's timely timestamp is
//! `Product<epoch, event time>`, and timely's progress tracking already tells every operator which
//! timestamps can still arrive. So a barrier is a capability moving from epoch `e` to `e + 1`:
//!
//! - a source, when the [`Coordinator`] has triggered checkpoint `e`, writes its part (reader
//!   offset, watermark, watermark-generator state) and moves its capability to epoch `e + 1`
//!   (`src/time/source.rs`);
//! - a stateful operator applies records of epochs up to its open epoch `e` and buffers later ones;
//!   when its input frontier has passed every `(e, _)` it writes its part of checkpoint `e`, opens
//!   `e + 1` and applies the buffer (`src/runtime/align.rs`); it emits only at its open epoch, and
//!   fires windows with the least of the frontier and the buffered records;
//! - an exactly-once sink does the same, and its part holds the transactions it has pre-committed
//!   ([`crate::connectors::TwoPhaseCommitSink`]); it commits them once the checkpoint is complete.
//!
//! Checkpoint `e` is complete when every participant's part is in the [`CheckpointStore`] and the
//! metadata listing them (with lengths and CRC-32s) has been written, last and atomically. After a
//! crash, every participant restores from the newest complete checkpoint that verifies, sources
//! replay from their offsets, and sinks commit the restored pending transactions again — so the
//! committed output is that of a run without the crash. The simulator checks exactly that
//! ([`crate::jobs::sim`]).
//!
//! Why epochs and not a lexicographic time or an epoch derived from event time: with worker A at
//! `(3, 100)` and B at `(4, 50)`, a lexicographic frontier `(3, 100)` would let windows up to 100
//! fire while B can still send `(4, 50)`; and event-time epochs would stall checkpoints whenever
//! event time stalls. The product order keeps both coordinates honest.

mod coordinator;
pub mod restart;
pub mod store;

pub use coordinator::{
    AlignmentStats, CheckpointConfig, CheckpointRecord, CheckpointStatus, Coordinator, PlantedBugs, RestoreFrom,
    part_name,
};

pub use restart::{RestartDecision, RestartStrategy, RestartTracker};
pub use store::{
    CheckpointInfo, CheckpointMetadata, CheckpointStore, FileStore, MemoryStore, PartInfo, RestoredCheckpoint,
    StoreError,
};
