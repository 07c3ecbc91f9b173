//! The snapshot format: versioned, checksummed bytes, refused whole when anything is wrong.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  "FLOWLAB\0"
//! 8       4     format version (little endian), currently 1
//! 12      4     kind: what the payload is (keyed state, operator state, …)
//! 16      8     payload length in bytes
//! 24      4     CRC-32 (IEEE) of the payload
//! 28      n     payload (bincode)
//! ```
//!
//! A reader checks every field before it decodes anything, and decoding happens into fresh values
//! that replace the live state only once all of it decoded: a corrupt snapshot is never
//! half-restored.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The first eight bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"FLOWLAB\0";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 28;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SnapshotKind {
    /// Keyed state of one operator, by key group.
    KeyedState = 1,
    /// Operator (non-keyed) list state of one operator instance.
    OperatorState = 2,
    /// Broadcast state.
    BroadcastState = 3,
    /// A checkpoint's metadata: its id and the parts it consists of.
    CheckpointMetadata = 4,
    /// A source instance's position and watermark generator state.
    SourceState = 5,
    /// A two-phase-commit sink's pending transactions.
    SinkState = 6,
}

/// Why a snapshot was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the header, or than the header promises.
    #[error("snapshot truncated: {got} bytes, expected {expected}")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes the header (or the header itself) needs.
        expected: usize,
    },
    /// Not a flowlab snapshot.
    #[error("not a flowlab snapshot (bad magic bytes)")]
    BadMagic,
    /// Written by another format version.
    #[error("snapshot format version {found} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    Version {
        /// The version in the header.
        found: u32,
    },
    /// A snapshot of another kind.
    #[error("snapshot holds kind {found}, expected {expected:?}")]
    Kind {
        /// The kind in the header.
        found: u32,
        /// The kind asked for.
        expected: SnapshotKind,
    },
    /// The payload does not match its checksum.
    #[error("snapshot checksum mismatch: header says {expected:#010x}, payload has {actual:#010x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// Bytes after the payload.
    #[error("snapshot has {extra} unexpected bytes after its payload")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The payload passed the checksum but does not decode (a bug, or another state type).
    #[error("snapshot payload does not decode: {0}")]
    Decode(String),
}

/// Encodes `value` as a snapshot of `kind`.
pub fn encode<T: Serialize>(kind: SnapshotKind, value: &T) -> Vec<u8> {
    let payload = bincode::serialize(value).expect("state values serialise");
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(kind as u32).to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Decodes a snapshot of `kind`, checking magic, version, kind, length and checksum first.
pub fn decode<T: DeserializeOwned>(kind: SnapshotKind, bytes: &[u8]) -> Result<T, SnapshotError> {
    if bytes.len() < HEADER_BYTES {
        return Err(SnapshotError::Truncated { got: bytes.len(), expected: HEADER_BYTES });
    }
    if &bytes[0..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    let version = word(8);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version { found: version });
    }
    if word(12) != kind as u32 {
        return Err(SnapshotError::Kind { found: word(12), expected: kind });
    }
    let length = u64::from_le_bytes(bytes[16..24].try_into().expect("eight bytes"));
    let expected_total = usize::try_from(length).ok().and_then(|n| n.checked_add(HEADER_BYTES)).unwrap_or(usize::MAX);
    if bytes.len() < expected_total {
        return Err(SnapshotError::Truncated { got: bytes.len(), expected: expected_total });
    }
    if bytes.len() > expected_total {
        return Err(SnapshotError::TrailingBytes { extra: bytes.len() - expected_total });
    }
    let payload = &bytes[HEADER_BYTES..];
    let (expected, actual) = (word(24), crc32fast::hash(payload));
    if expected != actual {
        return Err(SnapshotError::Checksum { expected, actual });
    }
    bincode::deserialize(payload).map_err(|e| SnapshotError::Decode(e.to_string()))
}

/// Decodes keyed snapshots laid out as `key group → entries` and keeps the entries of the key
/// groups in `key_groups`, from every snapshot (every old worker's): how operators restore on
/// another parallelism.
pub fn decode_key_groups<T: DeserializeOwned>(
    snapshots: &[Vec<u8>],
    key_groups: std::ops::Range<u32>,
) -> Result<Vec<T>, SnapshotError> {
    let mut entries = Vec::new();
    for bytes in snapshots {
        let groups: std::collections::BTreeMap<u32, Vec<T>> = decode(SnapshotKind::KeyedState, bytes)?;
        for (_, group) in groups.into_iter().filter(|(group, _)| key_groups.contains(group)) {
            entries.extend(group);
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_damage_is_named() {
        let bytes = encode(SnapshotKind::OperatorState, &vec![1u64, 2, 3]);
        assert_eq!(decode::<Vec<u64>>(SnapshotKind::OperatorState, &bytes), Ok(vec![1, 2, 3]));
        assert!(matches!(
            decode::<Vec<u64>>(SnapshotKind::OperatorState, &bytes[..10]),
            Err(SnapshotError::Truncated { .. })
        ));
        assert!(matches!(
            decode::<Vec<u64>>(SnapshotKind::OperatorState, &bytes[..bytes.len() - 1]),
            Err(SnapshotError::Truncated { .. })
        ));
        assert_eq!(
            decode::<Vec<u64>>(SnapshotKind::KeyedState, &bytes),
            Err(SnapshotError::Kind { found: 2, expected: SnapshotKind::KeyedState })
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode::<Vec<u64>>(SnapshotKind::OperatorState, &flipped),
            Err(SnapshotError::Checksum { .. })
        ));
        let mut version = bytes.clone();
        version[8] = 9;
        assert_eq!(decode::<Vec<u64>>(SnapshotKind::OperatorState, &version), Err(SnapshotError::Version { found: 9 }));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode::<Vec<u64>>(SnapshotKind::OperatorState, &magic), Err(SnapshotError::BadMagic));
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(
            decode::<Vec<u64>>(SnapshotKind::OperatorState, &longer),
            Err(SnapshotError::TrailingBytes { extra: 1 })
        );
    }
}
