//! `CompactKey`: a string key that keeps short keys inline, so that keying, hashing, comparing and
//! cloning them never touches the heap.
//!
//! Most keys are short ids (`user-42`, `k7090`). As a `String` every record carries a heap
//! allocation that each clone (the key function, the window result, the sink) copies again, and
//! every hash-map probe follows a pointer to compare it. A `CompactKey` of at most
//! [`CompactKey::INLINE_MAX`] bytes is a plain 24-byte value; a longer one shares one heap copy.
//!
//! It behaves as the `str` it holds wherever results can see it: it orders, compares, hashes and
//! serialises exactly like a `String` with the same text. So routing (the key group of
//! [`stable_hash`](crate::state::stable_hash)), snapshot bytes and sorted output are the same
//! whichever of the two a job uses.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string key stored inline when short (see the module docs).
#[derive(Clone)]
pub struct CompactKey(Repr);

#[derive(Clone)]
enum Repr {
    /// Invariant: every text of at most `INLINE_MAX` bytes is inline, so two keys are equal
    /// exactly when their bytes are.
    Inline(InlineText),
    Heap(Arc<str>),
}

/// A short key: `bytes[..len]` is its UTF-8 text, the rest zeros. Sixteen bytes on an 8-byte
/// boundary, so that copying a key (every record's key function, every window result) is two
/// word moves: 22 bytes at an odd offset were copied in overlapping pieces through the stack,
/// and the CPU stalled reading them back.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
struct InlineText {
    bytes: [u8; CompactKey::INLINE_MAX],
    len: u8,
}

impl CompactKey {
    /// The longest key kept inline, in bytes.
    pub const INLINE_MAX: usize = 15;

    /// The key `text`.
    pub fn new(text: &str) -> Self {
        let source = text.as_bytes();
        if source.len() <= Self::INLINE_MAX {
            let (low, high) = padded_words(source);
            let mut bytes = [0u8; Self::INLINE_MAX];
            bytes[..8].copy_from_slice(&low.to_le_bytes());
            bytes[8..].copy_from_slice(&high.to_le_bytes()[..Self::INLINE_MAX - 8]);
            CompactKey(Repr::Inline(InlineText { bytes, len: source.len() as u8 }))
        } else {
            CompactKey(Repr::Heap(Arc::from(text)))
        }
    }

    /// The key's UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline(inline) => &inline.bytes[..usize::from(inline.len)],
            Repr::Heap(text) => text.as_bytes(),
        }
    }

    /// The key's bytes followed by zeros, when the key is inline (at most
    /// [`INLINE_MAX`](Self::INLINE_MAX) bytes): fixed-size reads of a short key, with no copy.
    pub fn inline_bytes(&self) -> Option<&[u8; Self::INLINE_MAX]> {
        match &self.0 {
            Repr::Inline(inline) => Some(&inline.bytes),
            Repr::Heap(_) => None,
        }
    }

    /// [`inline_bytes`](Self::inline_bytes) zero-padded to 16 bytes, as two little-endian words:
    /// a short key's bytes read whole, without a per-byte loop.
    pub fn inline_words(&self) -> Option<(u64, u64)> {
        let bytes = self.inline_bytes()?;
        let low = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let mut high = [0u8; 8];
        high[..Self::INLINE_MAX - 8].copy_from_slice(&bytes[8..]);
        Some((low, u64::from_le_bytes(high)))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from a `&str` (see `new`), so this cannot fail.
            Repr::Inline(inline) => {
                std::str::from_utf8(&inline.bytes[..usize::from(inline.len)]).expect("inline key is UTF-8")
            }
            Repr::Heap(text) => text,
        }
    }

    /// The length of the key in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the key is the empty string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The at most 15 bytes of `source`, zero-padded to 16, as two little-endian words. Read with a
/// few loads that may overlap, never beyond `source`: every CSV line's key is made this way, and
/// zeroing an array and copying the key into it called `memcpy` and then stalled reading the
/// array back.
fn padded_words(source: &[u8]) -> (u64, u64) {
    let len = source.len();
    debug_assert!(len <= CompactKey::INLINE_MAX);
    let word = |at: usize| u64::from_le_bytes(source[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u64::from(u32::from_le_bytes(source[at..at + 4].try_into().expect("4 bytes")));
    match len {
        0 => (0, 0),
        // The last word ends at the last byte; shifted down, it holds bytes 8.. of the key.
        9.. => (word(0), word(len - 8) >> (8 * (16 - len))),
        8 => (word(0), 0),
        // Two halves overlapping in the middle, each byte in place.
        4..=7 => (half(0) | (half(len - 4) << (8 * (len - 4))), 0),
        // 1 to 3 bytes: the first, the middle and the last.
        _ => {
            let byte = |at: usize| u64::from(source[at]) << (8 * at);
            (byte(0) | byte(len / 2) | byte(len - 1), 0)
        }
    }
}

impl Default for CompactKey {
    fn default() -> Self {
        CompactKey::new("")
    }
}

impl From<&str> for CompactKey {
    fn from(text: &str) -> Self {
        CompactKey::new(text)
    }
}

impl From<String> for CompactKey {
    fn from(text: String) -> Self {
        CompactKey::new(&text)
    }
}

impl From<&CompactKey> for String {
    fn from(key: &CompactKey) -> Self {
        key.as_str().to_string()
    }
}

impl From<CompactKey> for String {
    fn from(key: CompactKey) -> Self {
        key.as_str().to_string()
    }
}

impl PartialEq for CompactKey {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            // Unused inline bytes are zero, so whole arrays compare: a few word compares, no
            // call to `memcmp` (this is the hash-map probe of every keyed record).
            (Repr::Inline(inline), Repr::Inline(other)) => inline == other,
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for CompactKey {}

impl PartialEq<str> for CompactKey {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for CompactKey {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialOrd for CompactKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CompactKey {
    /// `str`'s order, which is the order of the UTF-8 bytes.
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for CompactKey {
    /// The byte stream `str` feeds a hasher (its bytes, then `0xff`), so a `CompactKey` lands in
    /// the same key group as the `String` with the same text.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
        state.write_u8(0xff);
    }
}

impl fmt::Display for CompactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CompactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for CompactKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CompactKey {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CompactKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<CompactKey, E> {
                Ok(CompactKey::new(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::stable_hash;
    use proptest::prelude::*;

    proptest! {
        /// Order, equality, hash and bytes on the wire are those of the `String`.
        #[test]
        fn a_compact_key_behaves_as_its_string(a in ".{0,40}", b in ".{0,40}") {
            let (ka, kb) = (CompactKey::new(&a), CompactKey::new(&b));
            prop_assert_eq!(ka.as_str(), a.as_str());
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(stable_hash(&ka), stable_hash(&a));
            prop_assert_eq!(bincode::serialize(&ka).unwrap(), bincode::serialize(&a).unwrap());
            let back: CompactKey = bincode::deserialize(&bincode::serialize(&a).unwrap()).unwrap();
            prop_assert_eq!(back, ka);
        }
    }

    #[test]
    fn every_inline_length_keeps_each_byte_in_place_and_zeros_after() {
        // Distinct bytes, so that a byte read from the wrong place or shifted wrong shows.
        let text = "abcdefghijklmno";
        for len in 0..=CompactKey::INLINE_MAX {
            let bytes = CompactKey::new(&text[..len]).inline_bytes().copied().expect("inline");
            assert_eq!(&bytes[..len], &text.as_bytes()[..len], "{len} bytes");
            assert!(bytes[len..].iter().all(|byte| *byte == 0), "{len} bytes: {bytes:?}");
            assert_eq!(CompactKey::new(&text[..len]).inline_words(), Some(padded_words(&text.as_bytes()[..len])));
        }
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_shared() {
        assert!(matches!(CompactKey::new("k7090").0, Repr::Inline(_)));
        assert!(matches!(CompactKey::new(&"x".repeat(15)).0, Repr::Inline(_)));
        assert!(matches!(CompactKey::new(&"x".repeat(16)).0, Repr::Heap(_)));
        assert_eq!(std::mem::size_of::<CompactKey>(), 24);
        assert_eq!(CompactKey::new("user-1").to_string(), "user-1");
        let padded = CompactKey::new("k7").inline_bytes().copied();
        assert_eq!(padded.map(|bytes| bytes[..3].to_vec()), Some(b"k7\0".to_vec()));
        assert!(padded.is_some_and(|bytes| bytes[2..].iter().all(|byte| *byte == 0)));
        assert_eq!(CompactKey::new(&"x".repeat(16)).inline_bytes(), None);
    }
}
