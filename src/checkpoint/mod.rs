//! Checkpoints: consistent snapshots of a running job, and recovery from them.
//!
//! (The essay on barriers-as-epochs is written with the coordinator.)

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
