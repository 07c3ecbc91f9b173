//! Checkpoint stores: what is written comes back verified; incomplete and damaged checkpoints are
//! never restored, and `latest` falls back over them and says so; retention keeps what it must.
//! Every property runs against both stores through one harness.

use std::collections::BTreeMap;
use std::fs;

use flowlab::checkpoint::{
    CheckpointInfo, CheckpointMetadata, CheckpointStore, FileStore, MemoryStore, PartInfo, StoreError,
};
use flowlab::state::snapshot::{SnapshotKind, encode};
use proptest::prelude::*;
use tempfile::TempDir;

/// Ways to damage one checkpoint after it completed; indices and lengths are taken modulo the
/// number of parts or bytes.
#[derive(Clone, Debug)]
enum Damage {
    /// Flip a byte of a part.
    FlipPart { part: usize, byte: usize },
    /// Cut a part to a shorter length.
    TruncatePart { part: usize, len: usize },
    /// Delete a part.
    DeletePart { part: usize },
    /// Flip a byte of the metadata.
    FlipMetadata { byte: usize },
    /// Cut the metadata to a shorter length.
    TruncateMetadata { len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(part, byte)| Damage::FlipPart { part, byte }),
        (any::<usize>(), any::<usize>()).prop_map(|(part, len)| Damage::TruncatePart { part, len }),
        any::<usize>().prop_map(|part| Damage::DeletePart { part }),
        any::<usize>().prop_map(|byte| Damage::FlipMetadata { byte }),
        any::<usize>().prop_map(|len| Damage::TruncateMetadata { len }),
    ]
}

/// A store under test, with the raw access to damage it.
trait Harness {
    fn store(&self) -> &dyn CheckpointStore;
    /// The raw bytes of part `name` (or of the metadata if `None`) of checkpoint `id`.
    fn raw(&self, id: u64, name: Option<&str>) -> Vec<u8>;
    /// Replaces them (or deletes them, if `bytes` is `None`).
    fn set_raw(&self, id: u64, name: Option<&str>, bytes: Option<Vec<u8>>);
}

struct Files {
    _dir: TempDir,
    store: FileStore,
}

impl Files {
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("checkpoints")).unwrap();
        Files { _dir: dir, store }
    }

    fn path(&self, id: u64, name: Option<&str>) -> std::path::PathBuf {
        self.store.checkpoint_dir(id).join(name.unwrap_or(FileStore::METADATA_FILE))
    }
}

impl Harness for Files {
    fn store(&self) -> &dyn CheckpointStore {
        &self.store
    }
    fn raw(&self, id: u64, name: Option<&str>) -> Vec<u8> {
        fs::read(self.path(id, name)).unwrap()
    }
    fn set_raw(&self, id: u64, name: Option<&str>, bytes: Option<Vec<u8>>) {
        match bytes {
            Some(bytes) => fs::write(self.path(id, name), bytes).unwrap(),
            None => fs::remove_file(self.path(id, name)).unwrap(),
        }
    }
}

struct Memory(MemoryStore);

impl Harness for Memory {
    fn store(&self) -> &dyn CheckpointStore {
        &self.0
    }
    fn raw(&self, id: u64, name: Option<&str>) -> Vec<u8> {
        match name {
            Some(name) => self.0.read_part_unverified(id, name).unwrap().unwrap(),
            // The encoded metadata is not readable raw, but encoding is deterministic: encode the
            // verified metadata again (the harness reads it only before damaging it).
            None => encode(SnapshotKind::CheckpointMetadata, &self.0.load(id).unwrap().metadata),
        }
    }
    fn set_raw(&self, id: u64, name: Option<&str>, bytes: Option<Vec<u8>>) {
        let current = self.raw(id, name);
        match (name, bytes) {
            (Some(name), None) => assert!(self.0.remove_part(id, name)),
            (None, None) => panic!("the harness never deletes metadata"),
            (name, Some(bytes)) => {
                // Only the damage the store's helpers can do: one flipped byte, or a truncation.
                if bytes.len() < current.len() {
                    assert_eq!(bytes[..], current[..bytes.len()]);
                    assert!(match name {
                        Some(name) => self.0.truncate_part(id, name, bytes.len()),
                        None => self.0.truncate_metadata(id, bytes.len()),
                    });
                } else {
                    let at = (0..current.len()).find(|&i| bytes[i] != current[i]).unwrap();
                    assert_eq!(bytes[at], current[at] ^ 0xff);
                    assert!(match name {
                        Some(name) => self.0.corrupt_part(id, name, at),
                        None => self.0.corrupt_metadata(id, at),
                    });
                }
            }
        }
    }
}

fn harnesses() -> Vec<Box<dyn Harness>> {
    vec![Box::new(Files::new()), Box::new(Memory(MemoryStore::new()))]
}

fn metadata(id: u64, parts: &BTreeMap<String, Vec<u8>>) -> CheckpointMetadata {
    CheckpointMetadata {
        id,
        job: "test".to_string(),
        parallelism: 2,
        max_parallelism: 128,
        trigger_ms: 1000 * id as i64,
        complete_ms: 1000 * id as i64 + 5,
        savepoint: false,
        finished: false,
        parts: parts
            .iter()
            .map(|(name, bytes)| PartInfo {
                name: name.clone(),
                len: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            })
            .collect(),
    }
}

/// Writes `parts` as checkpoint `id` and completes it; returns its metadata.
fn checkpoint(store: &dyn CheckpointStore, id: u64, parts: &BTreeMap<String, Vec<u8>>) -> CheckpointMetadata {
    for (name, bytes) in parts {
        store.write_part(id, name, bytes).unwrap();
    }
    let metadata = metadata(id, parts);
    store.complete(&metadata).unwrap();
    metadata
}

fn sample_parts(salt: u8) -> BTreeMap<String, Vec<u8>> {
    (0..3).map(|n| (format!("n{n}-w0"), vec![salt.wrapping_add(n); 10 + n as usize])).collect()
}

fn apply(harness: &dyn Harness, id: u64, names: &[String], damage: &Damage) {
    let shorter = |bytes: &[u8], len: &usize| bytes[..len % bytes.len()].to_vec();
    match damage {
        Damage::FlipPart { part, byte } => {
            let name = Some(names[part % names.len()].as_str());
            let mut bytes = harness.raw(id, name);
            let at = byte % bytes.len();
            bytes[at] ^= 0xff;
            harness.set_raw(id, name, Some(bytes));
        }
        Damage::TruncatePart { part, len } => {
            let name = Some(names[part % names.len()].as_str());
            let bytes = harness.raw(id, name);
            harness.set_raw(id, name, Some(shorter(&bytes, len)));
        }
        Damage::DeletePart { part } => harness.set_raw(id, Some(names[part % names.len()].as_str()), None),
        Damage::FlipMetadata { byte } => {
            let mut bytes = harness.raw(id, None);
            let at = byte % bytes.len();
            bytes[at] ^= 0xff;
            harness.set_raw(id, None, Some(bytes));
        }
        Damage::TruncateMetadata { len } => {
            let bytes = harness.raw(id, None);
            harness.set_raw(id, None, Some(shorter(&bytes, len)));
        }
    }
}

/// Part names and two versions of their bytes (checkpoints 1 and 2); never empty.
fn two_versions() -> impl Strategy<Value = BTreeMap<String, (Vec<u8>, Vec<u8>)>> {
    let bytes = || prop::collection::vec(any::<u8>(), 1..64);
    prop::collection::btree_map("[a-z0-9][a-z0-9_-]{0,8}", (bytes(), bytes()), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the damage to checkpoint 2, `latest` restores checkpoint 1, exactly, and says it
    /// refused checkpoint 2; undamaged, it restores checkpoint 2.
    #[test]
    fn latest_falls_back_over_any_damage(versions in two_versions(), damage in damage(), damaged in any::<bool>()) {
        let first: BTreeMap<_, _> = versions.iter().map(|(name, (one, _))| (name.clone(), one.clone())).collect();
        let second: BTreeMap<_, _> = versions.iter().map(|(name, (_, two))| (name.clone(), two.clone())).collect();
        let names: Vec<String> = versions.keys().cloned().collect();
        for harness in harnesses() {
            let store = harness.store();
            let one = checkpoint(store, 1, &first);
            let two = checkpoint(store, 2, &second);
            let restored = if damaged {
                apply(harness.as_ref(), 2, &names, &damage);
                prop_assert!(store.load(2).is_err(), "{}: damaged checkpoint 2 loads", store.location());
                (one, &first)
            } else {
                (two, &second)
            };
            let latest = store.latest().unwrap().unwrap();
            prop_assert_eq!(&latest.metadata, &restored.0, "{}", store.location());
            prop_assert_eq!(&latest.parts, restored.1, "{}", store.location());
            if damaged {
                prop_assert_eq!(latest.refused.len(), 1, "{}: {:?}", store.location(), latest.refused);
                prop_assert!(latest.refused[0].starts_with("chk-2: "), "{:?}", latest.refused);
            } else {
                prop_assert!(latest.refused.is_empty(), "{:?}", latest.refused);
            }
        }
    }
}

#[test]
fn round_trip() {
    for harness in harnesses() {
        let store = harness.store();
        assert!(store.latest().unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
        let parts = sample_parts(7);
        let metadata = checkpoint(store, 3, &parts);
        let loaded = store.load(3).unwrap();
        assert_eq!(loaded.metadata, metadata);
        assert_eq!(loaded.parts, parts);
        assert!(loaded.refused.is_empty());
        assert_eq!(store.latest().unwrap().unwrap(), loaded);
        let bytes = parts.values().map(|b| b.len() as u64).sum();
        assert_eq!(store.list().unwrap(), vec![CheckpointInfo { id: 3, complete: true, bytes }]);
        assert_eq!(store.read_part_unverified(3, "n1-w0").unwrap(), Some(parts["n1-w0"].clone()));
        assert_eq!(store.read_part_unverified(3, "n9-w0").unwrap(), None);
        assert!(matches!(store.load(4), Err(StoreError::Missing { id: 4, .. })));
        // A part written again is replaced.
        store.write_part(4, "a", b"old").unwrap();
        store.write_part(4, "a", b"new").unwrap();
        assert_eq!(store.read_part_unverified(4, "a").unwrap(), Some(b"new".to_vec()));
    }
}

#[test]
fn locations() {
    let files = Files::new();
    assert_eq!(files.store.location(), files.store.root().display().to_string());
    assert_eq!(MemoryStore::new().location(), "memory");
}

#[test]
fn memory_store_clones_share_storage() {
    let store = MemoryStore::new();
    let survivor = store.clone();
    checkpoint(&store, 1, &sample_parts(1));
    drop(store);
    assert_eq!(survivor.latest().unwrap().unwrap().metadata.id, 1);
}

#[test]
fn file_store_reopens_and_ignores_scratch_files() {
    let files = Files::new();
    let parts = sample_parts(3);
    checkpoint(&files.store, 1, &parts);
    fs::write(files.store.checkpoint_dir(1).join("n0-w0.tmp"), b"half written").unwrap();
    fs::create_dir(files.store.root().join("chk-007")).unwrap();
    fs::create_dir(files.store.root().join("not-a-checkpoint")).unwrap();
    let reopened = FileStore::new(files.store.root()).unwrap();
    let bytes = parts.values().map(|b| b.len() as u64).sum();
    assert_eq!(reopened.list().unwrap(), vec![CheckpointInfo { id: 1, complete: true, bytes }]);
    assert_eq!(reopened.latest().unwrap().unwrap().parts, parts);
}

#[test]
fn an_incomplete_checkpoint_is_never_restored() {
    for harness in harnesses() {
        let store = harness.store();
        store.write_part(1, "n0-w0", b"crashed before its metadata").unwrap();
        assert!(store.latest().unwrap().is_none(), "{}", store.location());
        assert!(matches!(store.load(1), Err(StoreError::Damaged { id: 1, reason }) if reason.contains("incomplete")));
        store.discard_after(0).unwrap();
        let parts = sample_parts(1);
        checkpoint(store, 1, &parts);
        store.write_part(2, "n0-w0", b"crashed before its metadata").unwrap();
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest.metadata.id, 1);
        assert_eq!(latest.parts, parts);
        assert_eq!(latest.refused, vec!["chk-2: incomplete (no _metadata)".to_string()]);
        assert_eq!(
            store.list().unwrap().iter().map(|info| (info.id, info.complete)).collect::<Vec<_>>(),
            [(1, true), (2, false)]
        );
    }
}

#[test]
fn refusals_name_the_part_and_the_damage() {
    for harness in harnesses() {
        let store = harness.store();
        let parts = sample_parts(1);
        let names: Vec<String> = parts.keys().cloned().collect();
        for id in 1..=4 {
            checkpoint(store, id, &parts);
        }
        apply(harness.as_ref(), 4, &names, &Damage::FlipPart { part: 1, byte: 3 });
        apply(harness.as_ref(), 3, &names, &Damage::TruncatePart { part: 2, len: 0 });
        apply(harness.as_ref(), 2, &names, &Damage::DeletePart { part: 0 });
        let latest = store.latest().unwrap().unwrap();
        assert_eq!(latest.metadata.id, 1);
        assert_eq!(
            latest.refused,
            vec![
                "chk-4: part n1-w0 fails its checksum".to_string(),
                "chk-3: part n2-w0 is 0 bytes, metadata says 12".to_string(),
                "chk-2: part n0-w0 is missing".to_string(),
            ]
        );
        // With nothing left that verifies, `latest` says so instead of starting over.
        apply(harness.as_ref(), 1, &names, &Damage::TruncateMetadata { len: 0 });
        match store.latest() {
            Err(StoreError::Damaged { id: 4, reason }) => {
                assert!(reason.starts_with("no checkpoint verifies: chk-4: "), "{reason}");
                assert!(reason.contains("chk-1: metadata refused: snapshot truncated"), "{reason}");
            }
            other => panic!("{}: {other:?}", store.location()),
        }
    }
}

#[test]
fn metadata_of_another_checkpoint_is_refused() {
    let files = Files::new();
    checkpoint(&files.store, 1, &sample_parts(1));
    checkpoint(&files.store, 2, &sample_parts(1));
    fs::copy(files.path(1, None), files.path(2, None)).unwrap();
    match files.store.load(2) {
        Err(StoreError::Damaged { id: 2, reason }) => assert!(reason.contains("checkpoint 1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(files.store.latest().unwrap().unwrap().metadata.id, 1);
}

#[test]
fn complete_refuses_missing_or_mismatched_parts() {
    for harness in harnesses() {
        let store = harness.store();
        let parts = sample_parts(1);
        for (name, bytes) in parts.iter().skip(1) {
            store.write_part(1, name, bytes).unwrap();
        }
        let good = metadata(1, &parts);
        match store.complete(&good) {
            Err(StoreError::Damaged { id: 1, reason }) => assert_eq!(reason, "part n0-w0 is missing"),
            other => panic!("{other:?}"),
        }
        store.write_part(1, "n0-w0", b"something else").unwrap();
        assert!(
            matches!(store.complete(&good), Err(StoreError::Damaged { reason, .. }) if reason.contains("n0-w0 is 14"))
        );
        let mut wrong_crc = good.clone();
        wrong_crc.parts[0].len = 14;
        assert!(
            matches!(store.complete(&wrong_crc), Err(StoreError::Damaged { reason, .. }) if reason == "part n0-w0 fails its checksum")
        );
        let mut unsorted = good.clone();
        unsorted.parts.reverse();
        assert!(store.complete(&unsorted).is_err());
        assert!(!store.list().unwrap()[0].complete, "{}: a refused completion wrote metadata", store.location());
        assert!(store.latest().unwrap().is_none());
        store.write_part(1, "n0-w0", &parts["n0-w0"]).unwrap();
        store.complete(&good).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().parts, parts);
    }
}

#[test]
fn bad_part_names_are_refused() {
    for harness in harnesses() {
        let store = harness.store();
        for name in ["", ".hidden", "_metadata", "../escape", "a/b", "x.tmp", "sp ace", "ünï"] {
            assert!(
                matches!(store.write_part(1, name, b"x"), Err(StoreError::Damaged { reason, .. }) if reason.contains("not allowed")),
                "{name:?}"
            );
            assert!(store.read_part_unverified(1, name).is_err(), "{name:?}");
        }
        assert!(store.list().unwrap().is_empty());
        store.write_part(1, "n3-w1.v2_A", b"x").unwrap();
    }
}

#[test]
fn retain_keeps_the_newest_savepoints_and_in_progress() {
    for harness in harnesses() {
        let store = harness.store();
        let parts = sample_parts(1);
        store.write_part(1, "n0-w0", b"an old leftover").unwrap();
        for id in 2..=7 {
            for (name, bytes) in &parts {
                store.write_part(id, name, bytes).unwrap();
            }
            let mut metadata = metadata(id, &parts);
            metadata.savepoint = id == 3;
            store.complete(&metadata).unwrap();
        }
        store.write_part(8, "n0-w0", b"in progress").unwrap();
        let ids = |store: &dyn CheckpointStore| store.list().unwrap().iter().map(|info| info.id).collect::<Vec<_>>();
        store.retain(2).unwrap();
        assert_eq!(ids(store), [3, 6, 7, 8], "{}", store.location());
        store.retain(0).unwrap();
        assert_eq!(ids(store), [3, 7, 8], "{}", store.location());
        assert_eq!(store.latest().unwrap().unwrap().metadata.id, 7);
        assert!(store.load(3).unwrap().metadata.savepoint);
    }
}

#[test]
fn discard_after_deletes_newer_checkpoints() {
    for harness in harnesses() {
        let store = harness.store();
        for id in 1..=3 {
            checkpoint(store, id, &sample_parts(id as u8));
        }
        store.write_part(4, "n0-w0", b"leftover").unwrap();
        store.discard_after(2).unwrap();
        assert_eq!(store.list().unwrap().iter().map(|info| info.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(store.latest().unwrap().unwrap().metadata.id, 2);
    }
}
