//! How keys find their worker: key groups and the stable hash.
//!
//! # Key groups
//!
//! Flink does not send a key straight to a worker: it hashes the key into one of
//! `max_parallelism` *key groups*, and gives each worker a contiguous range of key groups. State is
//! snapshotted per key group, so a job checkpointed with N workers restores on M: each new worker
//! takes the key groups of its new range. flowlab does the same, with the same formulas
//! (`KeyGroupRangeAssignment` in Flink):
//!
//! - key group = `stable_hash(key) % max_parallelism`
//! - worker    = `key_group * parallelism / max_parallelism`
//!
//! The hash must be *stable*: the same key must land in the same key group in every process, every
//! run and every build, or a restored snapshot would put state on the wrong worker. Rust's
//! `RandomState` is seeded per process, so flowlab never uses it for routing; [`stable_hash`] is
//! FNV-1a over the key's `Hash` stream, with a final avalanche step.
//!
//! A limit to know: the standard library does not promise that the `Hash` byte stream of a type
//! stays the same across Rust versions or platforms (integers are written in native byte order).
//! A test pins the hash of a string and an integer key, so a change is caught before it can put
//! restored state on the wrong worker; a key type with its own byte encoding can come with the
//! checkpoint format.

use std::hash::{Hash, Hasher};

/// Flink's default `maxParallelism` for small jobs: the number of key groups.
pub const MAX_PARALLELISM_DEFAULT: u32 = 128;

/// FNV-1a, 64 bit: a hasher with no per-process seed.
#[derive(Clone, Copy, Debug)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        // FNV's low bits mix poorly for short keys; a final avalanche (from SplitMix64) fixes that,
        // so that `% max_parallelism` spreads keys evenly.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A hasher for in-memory lookup tables (interned keys, state maps): it takes eight bytes per
/// multiply where [`StableHasher`] takes one, and has no per-process seed either, so a run's memory
/// layout is the same every time. Never for routing or anything persisted: its values are free to
/// change between versions. Iteration order of a table must never reach results anyway.
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupHasher(u64);

impl LookupHasher {
    const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for LookupHasher {
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak; hash tables index by them.
        let z = self.0;
        (z ^ (z >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (z >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("eight bytes")));
        }
        // The length keeps "a" and "a\0" apart.
        self.add(tail_word(words.remainder()) ^ ((bytes.len() as u64) << 56));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
}

/// The bytes of `tail` (fewer than eight) as a little-endian word, zero-padded. Read with a few
/// fixed-size loads (overlapping where the length needs) rather than copied into a padded array:
/// reading back the array from a variable-length copy stalls the CPU on every key hashed.
fn tail_word(tail: &[u8]) -> u64 {
    let n = tail.len();
    debug_assert!(n < 8);
    if n >= 4 {
        let low = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("four bytes")));
        let high = u64::from(u32::from_le_bytes(tail[n - 4..].try_into().expect("four bytes")));
        low | (high << ((n - 4) * 8))
    } else if n > 0 {
        let (first, middle, last) = (u64::from(tail[0]), u64::from(tail[n / 2]), u64::from(tail[n - 1]));
        first | (middle << (n / 2 * 8)) | (last << ((n - 1) * 8))
    } else {
        0
    }
}

/// The hash of `key` that every process and run agrees on.
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = StableHasher::default();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The key group of `key`, in `0..max_parallelism`.
pub fn key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    assert!(max_parallelism > 0, "max_parallelism must be positive");
    (stable_hash(key) % u64::from(max_parallelism)) as u32
}

/// The worker, in `0..parallelism`, that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
pub fn worker_for_key_group(key_group: u32, max_parallelism: u32, parallelism: usize) -> usize {
    assert!(key_group < max_parallelism, "key group {key_group} out of range 0..{max_parallelism}");
    assert!(parallelism > 0 && parallelism <= max_parallelism as usize, "parallelism must be in 1..=max_parallelism");
    key_group as usize * parallelism / max_parallelism as usize
}

/// The key groups owned by `worker` of `parallelism` (Flink's `computeKeyGroupRangeForOperatorIndex`):
/// exactly those for which [`worker_for_key_group`] answers `worker`.
pub fn key_group_range(worker: usize, max_parallelism: u32, parallelism: usize) -> std::ops::Range<u32> {
    assert!(worker < parallelism, "worker {worker} out of range 0..{parallelism}");
    let max = max_parallelism as usize;
    let start = (worker * max).div_ceil(parallelism);
    let end = ((worker + 1) * max).div_ceil(parallelism);
    start as u32..end as u32
}

/// The worker, in `0..parallelism`, that owns `key`.
pub fn worker_for_key<K: Hash + ?Sized>(key: &K, max_parallelism: u32, parallelism: usize) -> usize {
    worker_for_key_group(key_group(key, max_parallelism), max_parallelism, parallelism)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn tail_words_are_the_padded_little_endian_bytes() {
        let bytes: Vec<u8> = (1..=7).collect();
        for n in 0..8 {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(tail_word(&bytes[..n]), u64::from_le_bytes(padded), "{n} bytes");
        }
    }
    use proptest::prelude::*;

    #[test]
    fn the_hash_is_pinned() {
        // Routing must not change between builds: these values are part of the snapshot format.
        // If this fails, a compiler or dependency changed the `Hash` byte stream of these types.
        assert_eq!(stable_hash("user-1"), 9_937_253_131_524_686_792);
        assert_eq!(stable_hash(&42u64), 16_239_707_572_940_805_204);
        assert_eq!(key_group("user-1", 128), 72);
        assert_eq!(key_group(&42u64, 128), 84);
        assert_eq!(stable_hash("user-1"), stable_hash(&"user-1".to_string()));
        let groups: std::collections::BTreeSet<u32> = (0..1000).map(|i| key_group(&format!("k{i}"), 128)).collect();
        assert!(groups.len() > 120, "1000 keys should touch nearly every key group, touched {}", groups.len());
    }

    proptest! {
        #[test]
        fn every_key_group_has_exactly_one_worker_and_ranges_are_contiguous(max_parallelism in 1u32..300, parallelism_seed in 0usize..300) {
            let parallelism = 1 + parallelism_seed % max_parallelism as usize;
            let owners: Vec<usize> = (0..max_parallelism)
                .map(|group| worker_for_key_group(group, max_parallelism, parallelism))
                .collect();
            prop_assert!(owners.windows(2).all(|pair| pair[0] <= pair[1]));
            prop_assert!(owners.iter().all(|&worker| worker < parallelism));
            for worker in 0..parallelism {
                let range = key_group_range(worker, max_parallelism, parallelism);
                let owned: Vec<u32> = (0..max_parallelism).filter(|&g| owners[g as usize] == worker).collect();
                prop_assert_eq!(owned, range.collect::<Vec<u32>>());
            }
            let used: std::collections::BTreeSet<usize> = owners.into_iter().collect();
            prop_assert_eq!(used.len(), parallelism);
        }
    }
}
