//! Small helpers several components share.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Lower-case hex of `bytes` (ids, digests), two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// An error and its sources, `outer: inner: innermost` — HTTP clients hide the useful
/// part (connection refused, certificate unknown) in the sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Hash maps and sets keyed by a value that is already a good 64-bit hash (a series
/// key): the key is its own hash, so lookups hash nothing.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;
pub type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// Hash maps for short keys hashed on hot paths (strings, names): a fast non-cryptographic
/// hash with a per-process seed.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The identity "hash" of [`KeyMap`].
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Only for keys other than `u64` (none in this crate): mixes the bytes in.
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast hash of a series identity: a fixed seed, so the same series gets the same
/// key in every batch and every process.
pub fn series_hasher() -> foldhash::fast::FoldHasher<'static> {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x005e_ed5e_41e5).build_hasher()
}
