//! Durable checkpoint stores: where the parts of a checkpoint are written, and how a complete,
//! undamaged checkpoint is found again after a crash.
//!
//! A checkpoint is a set of *parts*, one per participant (a source, keyed-operator or sink
//! instance), each the snapshot bytes that participant wrote, plus one *metadata* record that
//! lists every part with its length and CRC-32. On disk ([`FileStore`]) a store is a directory
//! with one subdirectory per checkpoint:
//!
//! ```text
//! checkpoints/                 the store's root
//! ├── chk-6/                   a complete checkpoint
//! │   ├── n0-w0                one file per part, named by the part
//! │   ├── n0-w1
//! │   ├── n3-w0
//! │   ├── n3-w1
//! │   └── _metadata            written last: this file is what makes chk-6 complete
//! ├── chk-7/                   a savepoint: kept however many newer checkpoints there are
//! │   └── …
//! └── chk-8/                   in progress, or left over by a crash: no _metadata
//!     ├── n0-w0
//!     └── n3-w1.tmp            a part being written
//! ```
//!
//! Part names are made of `A-Z a-z 0-9 _ . -`, do not start with `.` or `_` (the store's own
//! files start with `_`) and do not end in `.tmp` (the store's scratch files do), so no part can
//! name a file outside its checkpoint or collide with the store's own files.
//!
//! **The metadata is written last, and atomically.** Every file is written the same way: to
//! `<name>.tmp`, flushed to the disk (`fsync`), then renamed over `<name>`, so a file either has
//! its old content or its whole new content, never half of it. [`CheckpointStore::complete`]
//! first reads every part back and checks it against the metadata, and only then writes
//! `_metadata` that way and `fsync`s the directory so the rename itself is durable. A crash at
//! any moment therefore leaves either a checkpoint without `_metadata` (incomplete, never
//! restored) or a complete one whose parts were all on the disk before its metadata was.
//!
//! **Damaged checkpoints are refused, and fallen back over.** Disks and people still damage
//! files after the fact. The metadata itself is a checksummed snapshot
//! ([`crate::state::snapshot`]: magic bytes, format version, length, CRC-32), and
//! [`CheckpointStore::load`] checks every part's length and CRC-32 against it before returning
//! anything; any mismatch refuses the whole checkpoint with a reason naming the part ("part n3-w1
//! is 120 bytes, metadata says 128", "part n3-w1 fails its checksum", "part n3-w1 is missing").
//! [`CheckpointStore::latest`] walks the checkpoints newest first and returns the first that
//! verifies, listing the newer ones it refused, and why, in [`RestoredCheckpoint::refused`], so
//! a restore can say that it did not use the newest checkpoint.
//!
//! [`MemoryStore`] has the same semantics in memory (the metadata is kept as the same encoded,
//! checksummed bytes, and verified the same way); it is what the simulator uses, and it has
//! helpers to damage checkpoints on purpose. Both stores share one implementation of everything
//! but the raw reads and writes.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::state::snapshot::{self, SnapshotKind};

/// One part of a checkpoint: the snapshot of one participant (an operator instance, a source
/// instance, a sink instance), named like `"n3-w1"` (graph node 3, worker 1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part's name, unique within its checkpoint.
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE) of its bytes.
    pub crc32: u32,
}

/// What a complete checkpoint consists of; written last, and only when every part exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// The checkpoint id: the epoch it closes.
    pub id: u64,
    /// The job's name.
    pub job: String,
    /// The parallelism the job ran with when it took the checkpoint.
    pub parallelism: u32,
    /// The number of key groups.
    pub max_parallelism: u32,
    /// Processing time when the checkpoint was triggered, in ms.
    pub trigger_ms: i64,
    /// Processing time when its last part arrived, in ms.
    pub complete_ms: i64,
    /// Whether this is a savepoint (taken on request, kept until deleted by hand).
    pub savepoint: bool,
    /// Whether the job had read all its input when it took it (the final checkpoint).
    pub finished: bool,
    /// Every part, sorted by name.
    pub parts: Vec<PartInfo>,
}

/// A complete checkpoint read back and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredCheckpoint {
    /// Its metadata.
    pub metadata: CheckpointMetadata,
    /// Every part's bytes, by name; each matched its length and CRC-32.
    pub parts: BTreeMap<String, Vec<u8>>,
    /// Newer checkpoints that were refused on the way, with the reason, newest first
    /// (e.g. `"chk-7: part n3-w1 fails its checksum"`).
    pub refused: Vec<String>,
}

/// A line of `list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The checkpoint id.
    pub id: u64,
    /// Whether its metadata exists (it may still fail verification).
    pub complete: bool,
    /// Total bytes of its parts.
    pub bytes: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error, with the path.
    #[error("checkpoint store: {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that does not verify.
    #[error("checkpoint {id} refused: {reason}")]
    Damaged {
        /// The checkpoint.
        id: u64,
        /// Why.
        reason: String,
    },
    /// No such checkpoint.
    #[error("no checkpoint {id} in {location}")]
    Missing {
        /// The checkpoint.
        id: u64,
        /// The store's location.
        location: String,
    },
}

/// Where checkpoints live. Both implementations have the same semantics; the simulator uses the
/// in-memory one, which survives simulated crashes because the simulator never drops it.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Writes one part of checkpoint `id` durably, replacing a part of the same name.
    fn write_part(&self, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Completes checkpoint `id`: writes `metadata` last and atomically. Refuses (`Damaged`) if a
    /// part the metadata lists is missing or does not match its length and checksum.
    fn complete(&self, metadata: &CheckpointMetadata) -> Result<(), StoreError>;
    /// The newest complete checkpoint that verifies, falling back over damaged ones (listed in
    /// [`RestoredCheckpoint::refused`]); `None` if no checkpoint is complete, and a `Damaged`
    /// error if some are but none verifies.
    fn latest(&self) -> Result<Option<RestoredCheckpoint>, StoreError>;
    /// Like [`latest`](Self::latest), among checkpoints with an id of at least `first` only:
    /// older ones are never looked at (they belong to an earlier run).
    fn latest_since(&self, first: u64) -> Result<Option<RestoredCheckpoint>, StoreError>;
    /// Durably records that the run starting now takes checkpoints with ids of at least
    /// `first_id`, so that a later `latest` restore never mistakes an earlier run's checkpoint
    /// for one of this run (which would restore state that does not match this run's output).
    fn begin_run(&self, first_id: u64) -> Result<(), StoreError>;
    /// What the newest [`begin_run`](Self::begin_run) recorded; `None` if nothing was.
    fn run_start(&self) -> Result<Option<u64>, StoreError>;
    /// Checkpoint `id`, verified.
    fn load(&self, id: u64) -> Result<RestoredCheckpoint, StoreError>;
    /// Deletes every checkpoint with an id above `id` (leftovers of a crashed run).
    fn discard_after(&self, id: u64) -> Result<(), StoreError>;
    /// Keeps the newest `retain` complete checkpoints (and every savepoint); deletes older ones.
    fn retain(&self, retain: usize) -> Result<(), StoreError>;
    /// Every checkpoint present, oldest first.
    fn list(&self) -> Result<Vec<CheckpointInfo>, StoreError>;
    /// Where it is, for messages (a directory, or `"memory"`).
    fn location(&self) -> String;
    /// The bytes of part `name` of checkpoint `id`, complete or not, without any verification
    /// (`None` if absent). Only the planted bug `restore_sources_from_newest` reads this way.
    fn read_part_unverified(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

// ---------------------------------------------------------------------------------------------
// What both stores share: name rules, verification, and every operation written once over the
// raw reads and writes of `Storage`.

/// The raw operations a store is made of; everything else is written once, over these.
trait Storage {
    /// Where it is, for messages.
    fn where_(&self) -> String;
    /// The ids of every checkpoint present, ascending.
    fn ids(&self) -> Result<Vec<u64>, StoreError>;
    /// Whether checkpoint `id` exists at all.
    fn exists(&self, id: u64) -> Result<bool, StoreError>;
    /// Writes part `name` (already validated) of checkpoint `id` durably.
    fn put_part(&self, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Reads part `name` (already validated) of checkpoint `id`; `None` if absent.
    fn get_part(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes the encoded metadata of checkpoint `id` durably and atomically.
    fn put_metadata(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError>;
    /// Whether checkpoint `id` has metadata (without reading it).
    fn has_metadata(&self, id: u64) -> Result<bool, StoreError>;
    /// Reads the encoded metadata of checkpoint `id`; `None` if absent.
    fn get_metadata(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Total bytes of the parts of checkpoint `id`.
    fn part_bytes(&self, id: u64) -> Result<u64, StoreError>;
    /// Deletes checkpoint `id` entirely.
    fn remove(&self, id: u64) -> Result<(), StoreError>;
    /// Writes the run marker (see [`CheckpointStore::begin_run`]) durably and atomically.
    fn put_run_start(&self, first_id: u64) -> Result<(), StoreError>;
    /// Reads the run marker; `None` if absent.
    fn get_run_start(&self) -> Result<Option<u64>, StoreError>;
}

/// Why `name` cannot be a part name, if it cannot.
fn part_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        Some("only A-Z, a-z, 0-9, '_', '.' and '-' are allowed")
    } else if name.starts_with('.') || name.starts_with('_') {
        Some("it must not start with '.' or '_'")
    } else if name.ends_with(".tmp") {
        Some("it must not end in \".tmp\"")
    } else {
        None
    }
}

/// Refuses `name` (as `Damaged` for checkpoint `id`) unless it is a valid part name.
fn check_part_name(id: u64, name: &str) -> Result<(), StoreError> {
    match part_name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(damaged(id, format!("part name {name:?} is not allowed: {problem}"))),
    }
}

fn damaged(id: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Damaged { id, reason: reason.into() }
}

/// The one place parts are checked against metadata, for `complete` and `load` of both stores:
/// part names valid and strictly sorted, then every part present with its length and CRC-32.
/// Returns the parts' bytes.
fn verify_parts(
    id: u64,
    metadata: &CheckpointMetadata,
    read: impl Fn(&str) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    for part in &metadata.parts {
        check_part_name(id, &part.name)?;
    }
    if let Some(pair) = metadata.parts.windows(2).find(|pair| pair[0].name >= pair[1].name) {
        return Err(damaged(
            id,
            format!("metadata lists parts out of order or twice ({:?} before {:?})", pair[0].name, pair[1].name),
        ));
    }
    let mut parts = BTreeMap::new();
    for part in &metadata.parts {
        let Some(bytes) = read(&part.name)? else {
            return Err(damaged(id, format!("part {} is missing", part.name)));
        };
        if bytes.len() as u64 != part.len {
            return Err(damaged(
                id,
                format!("part {} is {} bytes, metadata says {}", part.name, bytes.len(), part.len),
            ));
        }
        if crc32fast::hash(&bytes) != part.crc32 {
            return Err(damaged(id, format!("part {} fails its checksum", part.name)));
        }
        parts.insert(part.name.clone(), bytes);
    }
    Ok(parts)
}

const INCOMPLETE: &str = "incomplete (no _metadata)";

fn write_part(store: &impl Storage, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    check_part_name(id, name)?;
    store.put_part(id, name, bytes)
}

fn complete(store: &impl Storage, metadata: &CheckpointMetadata) -> Result<(), StoreError> {
    let id = metadata.id;
    verify_parts(id, metadata, |name| store.get_part(id, name))?;
    store.put_metadata(id, &snapshot::encode(SnapshotKind::CheckpointMetadata, metadata))
}

fn load(store: &impl Storage, id: u64) -> Result<RestoredCheckpoint, StoreError> {
    let Some(bytes) = store.get_metadata(id)? else {
        return Err(if store.exists(id)? {
            damaged(id, INCOMPLETE)
        } else {
            StoreError::Missing { id, location: store.where_() }
        });
    };
    let metadata: CheckpointMetadata = snapshot::decode(SnapshotKind::CheckpointMetadata, &bytes)
        .map_err(|error| damaged(id, format!("metadata refused: {error}")))?;
    if metadata.id != id {
        return Err(damaged(id, format!("its metadata is that of checkpoint {}", metadata.id)));
    }
    let parts = verify_parts(id, &metadata, |name| store.get_part(id, name))?;
    Ok(RestoredCheckpoint { metadata, parts, refused: Vec::new() })
}

fn latest(store: &impl Storage, first: u64) -> Result<Option<RestoredCheckpoint>, StoreError> {
    let mut ids = store.ids()?;
    ids.retain(|&id| id >= first);
    let mut refused = Vec::new();
    let mut any_complete = false;
    for &id in ids.iter().rev() {
        if !store.has_metadata(id)? {
            refused.push(format!("chk-{id}: {INCOMPLETE}"));
            continue;
        }
        any_complete = true;
        match load(store, id) {
            Ok(mut checkpoint) => {
                checkpoint.refused = refused;
                return Ok(Some(checkpoint));
            }
            Err(StoreError::Damaged { reason, .. }) => refused.push(format!("chk-{id}: {reason}")),
            // Deleted while we looked: as if it had never been there.
            Err(StoreError::Missing { .. }) => {}
            Err(error @ StoreError::Io { .. }) => return Err(error),
        }
    }
    match ids.last() {
        Some(&newest) if any_complete => {
            Err(damaged(newest, format!("no checkpoint verifies: {}", refused.join("; "))))
        }
        _ => Ok(None),
    }
}

fn discard_after(store: &impl Storage, after: u64) -> Result<(), StoreError> {
    for id in store.ids()?.into_iter().filter(|&id| id > after) {
        store.remove(id)?;
    }
    Ok(())
}

fn is_savepoint(store: &impl Storage, id: u64) -> Result<bool, StoreError> {
    Ok(store.get_metadata(id)?.is_some_and(|bytes| {
        snapshot::decode::<CheckpointMetadata>(SnapshotKind::CheckpointMetadata, &bytes)
            .is_ok_and(|metadata| metadata.savepoint)
    }))
}

fn retain(store: &impl Storage, retain: usize) -> Result<(), StoreError> {
    let retain = retain.max(1);
    let ids = store.ids()?;
    let mut complete = Vec::new();
    for &id in &ids {
        if store.has_metadata(id)? {
            complete.push(id);
        }
    }
    let Some(&newest_complete) = complete.last() else {
        return Ok(());
    };
    let kept = &complete[complete.len().saturating_sub(retain)..];
    for id in ids {
        if id > newest_complete || kept.contains(&id) || is_savepoint(store, id)? {
            continue;
        }
        store.remove(id)?;
    }
    Ok(())
}

fn list(store: &impl Storage) -> Result<Vec<CheckpointInfo>, StoreError> {
    let mut infos = Vec::new();
    for id in store.ids()? {
        infos.push(CheckpointInfo { id, complete: store.has_metadata(id)?, bytes: store.part_bytes(id)? });
    }
    Ok(infos)
}

fn read_part_unverified(store: &impl Storage, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
    check_part_name(id, name)?;
    store.get_part(id, name)
}

/// Implements [`CheckpointStore`] for a [`Storage`] by calling the shared functions above.
macro_rules! checkpoint_store_over_storage {
    ($store:ty) => {
        impl CheckpointStore for $store {
            fn write_part(&self, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
                write_part(self, id, name, bytes)
            }
            fn complete(&self, metadata: &CheckpointMetadata) -> Result<(), StoreError> {
                complete(self, metadata)
            }
            /// The newest complete checkpoint that verifies. Every newer checkpoint it passes
            /// over is listed in [`RestoredCheckpoint::refused`], newest first: damaged ones
            /// with the reason, incomplete ones (no metadata: leftovers of a crash) as
            /// `"chk-<id>: incomplete (no _metadata)"`.
            ///
            /// `Ok(None)` if no checkpoint has metadata (a fresh store, or one whose first
            /// checkpoint never completed). If there are complete checkpoints but none
            /// verifies, this is an error, `Damaged` with the newest id and every reason,
            /// rather than `None`: silently starting over would lose the job's state.
            /// I/O errors other than a missing file are returned as they are.
            fn latest(&self) -> Result<Option<RestoredCheckpoint>, StoreError> {
                latest(self, 0)
            }
            fn latest_since(&self, first: u64) -> Result<Option<RestoredCheckpoint>, StoreError> {
                latest(self, first)
            }
            fn begin_run(&self, first_id: u64) -> Result<(), StoreError> {
                self.put_run_start(first_id)
            }
            fn run_start(&self) -> Result<Option<u64>, StoreError> {
                self.get_run_start()
            }
            fn load(&self, id: u64) -> Result<RestoredCheckpoint, StoreError> {
                load(self, id)
            }
            fn discard_after(&self, id: u64) -> Result<(), StoreError> {
                discard_after(self, id)
            }
            /// Keeps the newest `retain` complete checkpoints (0 counts as 1), every savepoint
            /// (a checkpoint whose metadata does not decode is not one), and every checkpoint
            /// newer than the newest complete one (it may be in progress); deletes the rest,
            /// including incomplete leftovers older than the newest complete checkpoint.
            fn retain(&self, keep: usize) -> Result<(), StoreError> {
                retain(self, keep)
            }
            fn list(&self) -> Result<Vec<CheckpointInfo>, StoreError> {
                list(self)
            }
            fn location(&self) -> String {
                self.where_()
            }
            fn read_part_unverified(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
                read_part_unverified(self, id, name)
            }
        }
    };
}

checkpoint_store_over_storage!(FileStore);
checkpoint_store_over_storage!(MemoryStore);

// ---------------------------------------------------------------------------------------------
// FileStore

/// A checkpoint store in a directory: `chk-<id>/` per checkpoint, one file per part and
/// `_metadata` written last (see the [module documentation](self)).
///
/// Only directories named exactly `chk-<id>` (the id in decimal, without leading zeros) are
/// checkpoints; anything else in the root is ignored. Cloning gives another handle on the same
/// directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// The name of the metadata file in each checkpoint directory.
    pub const METADATA_FILE: &'static str = "_metadata";
    /// The file in the root that holds the first checkpoint id of the newest run
    /// ([`CheckpointStore::begin_run`]).
    pub const RUN_FILE: &'static str = "_run";

    /// A store in directory `root`, created (with its parents) if need be.
    pub fn new(root: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io_error(format!("creating {}", root.display())))?;
        Ok(FileStore { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of checkpoint `id` (which may not exist).
    pub fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("chk-{id}"))
    }

    /// Writes `bytes` to `dir/name` atomically: to `name.tmp`, fsync, rename.
    fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let target = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).map_err(io_error(format!("creating {}", tmp.display())))?;
        file.write_all(bytes).map_err(io_error(format!("writing {}", tmp.display())))?;
        file.sync_all().map_err(io_error(format!("flushing {}", tmp.display())))?;
        drop(file);
        fs::rename(&tmp, &target).map_err(io_error(format!("renaming {} to {name}", tmp.display())))
    }

    fn create_checkpoint_dir(&self, id: u64) -> Result<PathBuf, StoreError> {
        let dir = self.checkpoint_dir(id);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
            sync_dir(&self.root);
        }
        Ok(dir)
    }
}

/// Makes renames and new entries in `dir` durable, where the platform can (it cannot open a
/// directory everywhere; then this does nothing).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

fn io_error(context: String) -> impl FnOnce(io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

/// Reads `path`; `None` if it does not exist.
fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StoreError::Io { context: format!("reading {}", path.display()), source: error }),
    }
}

/// The id of a directory named `chk-<id>`, in canonical decimal.
fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    let id: u64 = digits.parse().ok()?;
    (digits.bytes().all(|b| b.is_ascii_digit()) && id.to_string() == digits).then_some(id)
}

impl Storage for FileStore {
    fn where_(&self) -> String {
        self.root.display().to_string()
    }

    fn ids(&self) -> Result<Vec<u64>, StoreError> {
        let context = || format!("listing {}", self.root.display());
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_error(context()))? {
            let entry = entry.map_err(io_error(context()))?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_checkpoint_dir)
                && entry.path().is_dir()
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn exists(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.checkpoint_dir(id).is_dir())
    }

    fn put_part(&self, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.create_checkpoint_dir(id)?;
        FileStore::write_atomically(&dir, name, bytes)
    }

    fn get_part(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read_if_present(&self.checkpoint_dir(id).join(name))
    }

    fn put_metadata(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let dir = self.create_checkpoint_dir(id)?;
        FileStore::write_atomically(&dir, FileStore::METADATA_FILE, bytes)?;
        sync_dir(&dir);
        Ok(())
    }

    fn has_metadata(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.checkpoint_dir(id).join(FileStore::METADATA_FILE).is_file())
    }

    fn get_metadata(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        read_if_present(&self.checkpoint_dir(id).join(FileStore::METADATA_FILE))
    }

    fn part_bytes(&self, id: u64) -> Result<u64, StoreError> {
        let dir = self.checkpoint_dir(id);
        let context = || format!("listing {}", dir.display());
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(StoreError::Io { context: context(), source: error }),
        };
        let mut bytes = 0;
        for entry in entries {
            let entry = entry.map_err(io_error(context()))?;
            let is_part = entry.file_name().to_str().is_some_and(|name| part_name_problem(name).is_none());
            let metadata = entry.metadata().map_err(io_error(context()))?;
            if is_part && metadata.is_file() {
                bytes += metadata.len();
            }
        }
        Ok(bytes)
    }

    fn put_run_start(&self, first_id: u64) -> Result<(), StoreError> {
        FileStore::write_atomically(&self.root, FileStore::RUN_FILE, first_id.to_string().as_bytes())?;
        sync_dir(&self.root);
        Ok(())
    }

    fn get_run_start(&self) -> Result<Option<u64>, StoreError> {
        let path = self.root.join(FileStore::RUN_FILE);
        let Some(bytes) = read_if_present(&path)? else {
            return Ok(None);
        };
        match std::str::from_utf8(&bytes).ok().and_then(|text| text.trim().parse().ok()) {
            Some(first_id) => Ok(Some(first_id)),
            None => Err(StoreError::Io {
                context: format!("reading {}", path.display()),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a checkpoint id: delete the file to start over",
                ),
            }),
        }
    }

    fn remove(&self, id: u64) -> Result<(), StoreError> {
        let dir = self.checkpoint_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StoreError::Io { context: format!("deleting {}", dir.display()), source: error }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MemoryStore

/// An in-memory checkpoint store with the same semantics as [`FileStore`]: parts by name and
/// the metadata as the same encoded, checksummed bytes, verified the same way.
///
/// Clones share the same storage: the simulator keeps one clone while it "crashes" and restarts
/// a job, which then finds its checkpoints again. The `corrupt_*`, `truncate_*` and
/// `remove_part` methods damage a checkpoint on purpose, for tests and fault injection.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    checkpoints: Arc<Mutex<BTreeMap<u64, MemCheckpoint>>>,
    run_start: Arc<Mutex<Option<u64>>>,
}

/// One checkpoint of a [`MemoryStore`].
#[derive(Clone, Debug, Default)]
struct MemCheckpoint {
    parts: BTreeMap<String, Vec<u8>>,
    /// The encoded metadata, once complete.
    metadata: Option<Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, MemCheckpoint>> {
        // Every update leaves the map consistent, so a panic elsewhere does not spoil it.
        self.checkpoints.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `damage` to the bytes of part `name` of checkpoint `id` (or to its metadata if
    /// `name` is `None`); `false` if there are no such bytes or `damage` declined.
    fn damage(&self, id: u64, name: Option<&str>, damage: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let mut checkpoints = self.lock();
        let Some(checkpoint) = checkpoints.get_mut(&id) else {
            return false;
        };
        let bytes = match name {
            Some(name) => checkpoint.parts.get_mut(name),
            None => checkpoint.metadata.as_mut(),
        };
        bytes.is_some_and(damage)
    }

    /// Flips every bit of byte `byte_index` of part `name` of checkpoint `id` (for tests and
    /// fault injection); `false`, changing nothing, if there is no such part or byte.
    pub fn corrupt_part(&self, id: u64, name: &str, byte_index: usize) -> bool {
        self.damage(id, Some(name), |bytes| flip(bytes, byte_index))
    }

    /// Cuts part `name` of checkpoint `id` down to its first `len` bytes (for tests and fault
    /// injection); `false`, changing nothing, if there is no such part or it is not longer.
    pub fn truncate_part(&self, id: u64, name: &str, len: usize) -> bool {
        self.damage(id, Some(name), |bytes| cut(bytes, len))
    }

    /// Deletes part `name` of checkpoint `id`, leaving its metadata (for tests and fault
    /// injection); `false` if there is no such part.
    pub fn remove_part(&self, id: u64, name: &str) -> bool {
        self.lock().get_mut(&id).is_some_and(|checkpoint| checkpoint.parts.remove(name).is_some())
    }

    /// Flips every bit of byte `byte_index` of the encoded metadata of checkpoint `id` (for
    /// tests and fault injection); `false`, changing nothing, if it has no metadata or no such
    /// byte.
    pub fn corrupt_metadata(&self, id: u64, byte_index: usize) -> bool {
        self.damage(id, None, |bytes| flip(bytes, byte_index))
    }

    /// Cuts the encoded metadata of checkpoint `id` down to its first `len` bytes (for tests
    /// and fault injection); `false`, changing nothing, if it has no metadata or it is not
    /// longer.
    pub fn truncate_metadata(&self, id: u64, len: usize) -> bool {
        self.damage(id, None, |bytes| cut(bytes, len))
    }
}

fn flip(bytes: &mut [u8], index: usize) -> bool {
    bytes.get_mut(index).map(|byte| *byte ^= 0xff).is_some()
}

fn cut(bytes: &mut Vec<u8>, len: usize) -> bool {
    let shorter = len < bytes.len();
    bytes.truncate(len);
    shorter
}

impl Storage for MemoryStore {
    fn where_(&self) -> String {
        "memory".to_string()
    }

    fn ids(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.lock().keys().copied().collect())
    }

    fn exists(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.lock().contains_key(&id))
    }

    fn put_part(&self, id: u64, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().entry(id).or_default().parts.insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    fn get_part(&self, id: u64, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&id).and_then(|checkpoint| checkpoint.parts.get(name).cloned()))
    }

    fn put_metadata(&self, id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().entry(id).or_default().metadata = Some(bytes.to_vec());
        Ok(())
    }

    fn has_metadata(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.lock().get(&id).is_some_and(|checkpoint| checkpoint.metadata.is_some()))
    }

    fn get_metadata(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&id).and_then(|checkpoint| checkpoint.metadata.clone()))
    }

    fn part_bytes(&self, id: u64) -> Result<u64, StoreError> {
        Ok(self.lock().get(&id).map_or(0, |checkpoint| checkpoint.parts.values().map(|b| b.len() as u64).sum()))
    }

    fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.lock().remove(&id);
        Ok(())
    }

    fn put_run_start(&self, first_id: u64) -> Result<(), StoreError> {
        *self.run_start.lock().unwrap_or_else(PoisonError::into_inner) = Some(first_id);
        Ok(())
    }

    fn get_run_start(&self) -> Result<Option<u64>, StoreError> {
        Ok(*self.run_start.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
