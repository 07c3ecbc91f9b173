//! `KeyIndex`: how a window operator finds a key's small integer id from the key's hash.
//!
//! Window operators intern their keys: ordered structures and per-slice lists hold a 4-byte id,
//! never the key, and a key's state sits at its id in a vector. The index from key to id is on
//! every record's path, so it is built for the cache rather than for generality: it holds no
//! keys at all, only the high half of each key's hash beside its id. Both the sliced operator
//! and the general one ([`WindowCore`](super::WindowCore)) use it, and both announce a record's
//! key a few records ahead, so that its slot, then its state, are in cache when the record comes.

use std::hash::{BuildHasher, BuildHasherDefault, Hash};

use crate::state::LookupHasher;

/// A key's id in its operator.
pub(super) type KeyId = u32;

/// The hash a [`KeyIndex`] files `key` under: flowlab's lookup hasher, never persisted.
pub(super) fn hash_key<K: Hash + ?Sized>(key: &K) -> u64 {
    BuildHasherDefault::<LookupHasher>::default().hash_one(key)
}

/// Key ids by hash: an open-addressing table of 8-byte slots, probed linearly. A `HashMap<K, KeyId>`
/// keeps a copy of every key in its entries, a table of ten thousand keys as large as the cache
/// and a miss per record; these slots stay cached, and the one key compared is the key's own
/// state, which the record needs next anyway.
#[derive(Default)]
pub(super) struct KeyIndex {
    /// `0` is empty; otherwise the high 32 bits of the key's hash, then `id + 1`. The position is
    /// taken from the same 32 bits, so growing needs no key.
    slots: Vec<u64>,
    len: usize,
}

impl KeyIndex {
    fn tag(hash: u64) -> u64 {
        hash >> 32
    }

    /// The id whose key `is_key` accepts, among those with this hash.
    pub(super) fn find(&self, hash: u64, is_key: impl Fn(KeyId) -> bool) -> Option<KeyId> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = Self::tag(hash);
        let mut at = tag as usize & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            // The low half is `id + 1`, at most `u32::MAX`.
            let id = (slot as u32).wrapping_sub(1);
            if slot >> 32 == tag && is_key(id) {
                return Some(id);
            }
            at = (at + 1) & mask;
        }
    }

    /// A record of `key` comes a few records from now: hashes the key and starts loading the
    /// slot where its search begins, so that neither waits when the record comes. Returns the
    /// hash, which the record then takes along (see `KeyedEngine::prefetch_far`).
    pub(super) fn announce<K: Hash + ?Sized>(&self, key: &K) -> u64 {
        let hash = hash_key(key);
        self.prefetch(hash);
        hash
    }

    /// Starts loading the slot where the search for `hash` begins.
    fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            crate::runtime::prefetch_memory(&self.slots[Self::tag(hash) as usize & (self.slots.len() - 1)]);
        }
    }

    /// The first id whose slot has the tag of `hash`: the key's id, if the key is in the table and
    /// no other key before it shares its tag.
    pub(super) fn candidate(&self, hash: u64) -> Option<KeyId> {
        self.find(hash, |_| true)
    }

    /// Adds `id` (not in the table) under `hash`.
    pub(super) fn insert(&mut self, hash: u64, id: KeyId) {
        // At most half full, so probes stay short.
        if (self.len + 1) * 2 > self.slots.len() {
            let size = (self.slots.len() * 2).max(64);
            let old = std::mem::replace(&mut self.slots, vec![0; size]);
            for slot in old.into_iter().filter(|slot| *slot != 0) {
                self.place(slot);
            }
        }
        let id_plus_one = u64::from(id.checked_add(1).expect("at most 2^32 - 1 keys per worker"));
        self.place((Self::tag(hash) << 32) | id_plus_one);
        self.len += 1;
    }

    /// Removes `id`, which is in the table under `hash`. Linear probing has no tombstones: the
    /// slots after the hole that may live in it move back (backward-shift deletion), so every
    /// probe still ends at its first empty slot.
    pub(super) fn remove(&mut self, hash: u64, id: KeyId) {
        let mask = self.slots.len() - 1;
        let target = (Self::tag(hash) << 32) | (u64::from(id) + 1);
        let mut hole = Self::tag(hash) as usize & mask;
        while self.slots[hole] != target {
            assert_ne!(self.slots[hole], 0, "key id {id} is not in the index");
            hole = (hole + 1) & mask;
        }
        let mut next = (hole + 1) & mask;
        while self.slots[next] != 0 {
            let home = (self.slots[next] >> 32) as usize & mask;
            // The slot at `next` may move to the hole if the hole lies on its probe path, from
            // its home up to where it is.
            if (hole.wrapping_sub(home) & mask) < (next.wrapping_sub(home) & mask) {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    fn place(&mut self, slot: u64) {
        let mask = self.slots.len() - 1;
        let mut at = (slot >> 32) as usize & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }
}

/// Idle keys are never released while there are at most this many.
pub(super) const IDLE_KEYS_MIN: usize = 16;

/// Counts an operator's *idle* keys, those interned but holding nothing (no slice, no window),
/// and says when to give their ids back.
///
/// A stream whose keys come and go (auctions, users' sessions) would otherwise keep every key it
/// ever saw. But a key released too early comes back, and is hashed, looked up and interned
/// again: over tumbling windows with about a record per key per window, a third of the keys
/// miss each window, and right after a window is dropped nearly every key is idle. So idle keys
/// are released all at once, in one walk over the ids, when they are more than twice the most
/// busy keys seen lately (and more than twice [`IDLE_KEYS_MIN`]). A steady set of keys is then
/// never released, a stream of passing keys keeps about three times its busy keys, and each
/// release costs about one step per key that went idle.
#[derive(Default)]
pub(super) struct IdleKeys {
    /// Keys interned and not released.
    interned: usize,
    idle: usize,
    /// Idle keys the last release kept (the operator still needed them).
    kept: usize,
    /// The most busy keys at once, lately: raised when a key turns busy, lowered by an eighth at
    /// every [`due`](Self::due).
    busy_peak: usize,
}

impl IdleKeys {
    /// A key was interned, holding nothing yet.
    pub(super) fn interned(&mut self) {
        self.interned += 1;
        self.idle += 1;
    }

    /// A busy key let go of its last state.
    pub(super) fn turned_idle(&mut self) {
        self.idle += 1;
    }

    /// An idle key got state.
    pub(super) fn turned_busy(&mut self) {
        assert!(self.idle > 0, "a key turned busy without an idle key");
        self.idle -= 1;
        self.busy_peak = self.busy_peak.max(self.interned - self.idle);
    }

    /// Whether to release the idle keys now; asked after each batch of state was dropped.
    pub(super) fn due(&mut self) -> bool {
        self.busy_peak -= self.busy_peak / 8;
        self.idle > self.kept + 2 * self.busy_peak.max(IDLE_KEYS_MIN)
    }

    /// Releases every id in `0..ids` that is not free already and whose key `idle_hash` finds
    /// releasable (it returns the key's hash): out of `index`, onto `free_ids`.
    pub(super) fn release(
        &mut self,
        index: &mut KeyIndex,
        free_ids: &mut Vec<KeyId>,
        ids: usize,
        mut idle_hash: impl FnMut(KeyId) -> Option<u64>,
    ) {
        let mut free = vec![false; ids];
        for &id in free_ids.iter() {
            free[id as usize] = true;
        }
        for id in (0..ids).filter(|&id| !free[id]) {
            let id = id as KeyId;
            if let Some(hash) = idle_hash(id) {
                index.remove(hash, id);
                free_ids.push(id);
                self.idle -= 1;
                self.interned -= 1;
            }
        }
        self.kept = self.idle;
    }
}

#[cfg(test)]
impl KeyIndex {
    /// How many ids the index holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The key index finds exactly the ids inserted and not removed, whatever the order and
        /// however many hashes collide (few distinct hashes force long probe runs).
        #[test]
        fn the_key_index_is_a_map(operations in proptest::collection::vec((0u64..24, any::<bool>()), 1..400)) {
            let mut index = KeyIndex::default();
            let mut model: std::collections::BTreeMap<u64, KeyId> = Default::default();
            for (number, (key, insert)) in operations.into_iter().enumerate() {
                // The tag is the hash's high half; a few distinct tags collide in the table.
                let hash = (key % 7) << 40 | key;
                let found = index.find(hash, |id| model.get(&key) == Some(&id));
                prop_assert_eq!(found, model.get(&key).copied());
                match (insert, model.get(&key).copied()) {
                    (true, None) => {
                        index.insert(hash, number as KeyId);
                        model.insert(key, number as KeyId);
                    }
                    (false, Some(id)) => {
                        index.remove(hash, id);
                        model.remove(&key);
                    }
                    _ => {}
                }
                prop_assert_eq!(index.len, model.len());
            }
            for (key, id) in model {
                let hash = (key % 7) << 40 | key;
                prop_assert_eq!(index.find(hash, |candidate| candidate == id), Some(id));
            }
        }
    }
}
