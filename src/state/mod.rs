//! State: what operators remember, scoped to keys, snapshotted and restored.
//!
//! Flink's operators keep their memory in *state*: keyed state, scoped to the key of the record
//! being processed (value, list, map, reducing and aggregating state, each named by a
//! descriptor); operator state, per operator instance; broadcast state, the same on every
//! instance. Timers are state too. Everything here can be written to bytes and read back
//! ([`snapshot`]), which is what checkpoints are made of.
//!
//! Keyed state is partitioned into *key groups* ([`key_group`]): a snapshot records each
//! key group separately, so a job checkpointed with N workers restores on M — each new worker
//! reads the key groups of its new range from every old snapshot.
//!
//! The backend keeps tables in hash maps with a stable, seed-free hasher, and never lets their
//! iteration order reach a result or a snapshot: snapshots sort entries by key.

mod backend;
mod key_group;
mod operator_state;
pub mod snapshot;
mod timers;

pub use backend::{
    AggregatingStateDescriptor, KeyedStateBackend, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    StateData, StateDescriptor, StateTtl, TtlTime, ValueStateDescriptor,
};
pub use key_group::{
    LookupHasher, MAX_PARALLELISM_DEFAULT, StableHasher, key_group, key_group_range, stable_hash, worker_for_key,
    worker_for_key_group,
};
pub use operator_state::{Redistribution, redistribute};
pub use timers::TimerService;
